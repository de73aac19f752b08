"""What the focus offers every participant and every bridge endpoint (issue 5 contract, "Media facts").

Our bridge rewrites neither payload types nor header extension ids, so everyone gets the same offer, with
Jicofo's numbers (docs/jitsi-protocol.md 2.8): opus 111; VP8 100 (rtx 96), VP9 101 (rtx 97), AV1 41 (rtx
42), H264 107 (rtx 99), VP8 first so that a client taking the offer's first codec keeps sending VP8
simulcast; ssrc-audio-level 1, abs-send-time 3, transport-cc 5, and on video the AV1 dependency descriptor
11 (the bridge learns a sender's id from the Colibri2 media, `SetHeaderExtensions`). No sdes:mid or
rid extension: a sender's MID would be wrong at the receiver.
"""

from __future__ import annotations

from colibri2.model import Media, Parameter, PayloadType, RtcpFb, RtpHdrExt
from signaling.jingle.model import Description

OPUS_PT = 111
VP8_PT = 100
VP8_RTX_PT = 96
VP9_PT = 101
VP9_RTX_PT = 97
AV1_PT = 41
AV1_RTX_PT = 42
H264_PT = 107
H264_RTX_PT = 99
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
#: The AV1 RTP spec's URI (Appendix A), as libwebrtc and the bridge (bridge/seam.py) spell it.
DEPENDENCY_DESCRIPTOR = (
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"
)
DEPENDENCY_DESCRIPTOR_ID = 11
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

#: H.264 constrained baseline 3.1, packetization mode 1 (Jicofo's).
_H264_PARAMETERS = (
    Parameter("profile-level-id", "42e01f"),
    Parameter("level-asymmetry-allowed", "1"),
    Parameter("packetization-mode", "1"),
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


def _video(pt: int, name: str, rtx: int, parameters: tuple[Parameter, ...] = ()) -> tuple[PayloadType, ...]:
    return (
        PayloadType(pt, name, 90000, None, parameters, _VIDEO_FB),
        PayloadType(rtx, "rtx", 90000, None, (Parameter("apt", str(pt)),), ()),
    )


VIDEO_PAYLOAD_TYPES = (
    *_video(VP8_PT, "VP8", VP8_RTX_PT),
    *_video(VP9_PT, "VP9", VP9_RTX_PT),
    *_video(AV1_PT, "AV1", AV1_RTX_PT),
    *_video(H264_PT, "H264", H264_RTX_PT, _H264_PARAMETERS),
)
AUDIO_EXTENSIONS = (RtpHdrExt(1, AUDIO_LEVEL), RtpHdrExt(3, ABS_SEND_TIME), RtpHdrExt(5, TRANSPORT_CC))
VIDEO_EXTENSIONS = (
    RtpHdrExt(3, ABS_SEND_TIME),
    RtpHdrExt(5, TRANSPORT_CC),
    RtpHdrExt(DEPENDENCY_DESCRIPTOR_ID, DEPENDENCY_DESCRIPTOR),
)


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
