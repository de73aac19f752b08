"""What the focus offers every participant and every bridge endpoint (issue 5 contract, "Media facts").

Our bridge rewrites neither payload types nor header extension ids, so everyone gets the same offer:
opus 111, VP8 100 with rtx 96; ssrc-audio-level 1, abs-send-time 3, transport-cc 5. No sdes:mid or rid
extension: a sender's MID would be wrong at the receiver.
"""

from __future__ import annotations

from colibri2.model import Media, Parameter, PayloadType, RtcpFb, RtpHdrExt
from signaling.jingle.model import Description

OPUS_PT = 111
VP8_PT = 100
RTX_PT = 96
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
FORBIDDEN_EXTENSIONS = (
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
)

_VIDEO_FB = (
    RtcpFb("nack"),
    RtcpFb("nack", "pli"),
    RtcpFb("ccm", "fir"),
    RtcpFb("transport-cc"),
    RtcpFb("goog-remb"),
)

AUDIO_PAYLOAD_TYPES = (
    PayloadType(
        OPUS_PT,
        "opus",
        48000,
        2,
        (Parameter("minptime", "10"), Parameter("useinbandfec", "1")),
        (RtcpFb("transport-cc"),),
    ),
)
VIDEO_PAYLOAD_TYPES = (
    PayloadType(VP8_PT, "VP8", 90000, None, (), _VIDEO_FB),
    PayloadType(RTX_PT, "rtx", 90000, None, (Parameter("apt", str(VP8_PT)),), ()),
)
AUDIO_EXTENSIONS = (RtpHdrExt(1, AUDIO_LEVEL), RtpHdrExt(3, ABS_SEND_TIME), RtpHdrExt(5, TRANSPORT_CC))
VIDEO_EXTENSIONS = (RtpHdrExt(3, ABS_SEND_TIME), RtpHdrExt(5, TRANSPORT_CC))


def colibri_medias() -> tuple[Media, ...]:
    """The `<media>` of an endpoint create: the same offer the participant gets."""
    return (
        Media("audio", AUDIO_PAYLOAD_TYPES, AUDIO_EXTENSIONS, extmap_allow_mixed=True),
        Media("video", VIDEO_PAYLOAD_TYPES, VIDEO_EXTENSIONS, extmap_allow_mixed=True),
    )


def description(media: str) -> Description:
    """The RTP description of the audio or video content of a session-initiate (without sources)."""
    if media == "audio":
        return Description(
            "audio",
            maxptime=60,
            payload_types=AUDIO_PAYLOAD_TYPES,
            rtp_hdrexts=AUDIO_EXTENSIONS,
            extmap_allow_mixed=True,
            rtcp_mux=True,
        )
    return Description(
        "video",
        payload_types=VIDEO_PAYLOAD_TYPES,
        rtp_hdrexts=VIDEO_EXTENSIONS,
        extmap_allow_mixed=True,
        rtcp_mux=True,
    )
