"""What the focus offers every participant and every bridge endpoint (issue 5 contract, "Media facts").

Our bridge rewrites neither payload types nor header extension ids, so everyone gets the same offer, with
Jicofo's numbers (docs/jitsi-protocol.md 2.8): opus 111; VP8 100 (rtx 96), VP9 101 (rtx 97), AV1 41 (rtx
42), H264 107 (rtx 99), VP8 first so that a client taking the offer's first codec keeps sending VP8
simulcast; ssrc-audio-level 1, abs-send-time 3, transport-cc 5, and on video the AV1 dependency descriptor
11 (the bridge learns a sender's id from the Colibri2 media, `SetHeaderExtensions`). No sdes:mid or
rid extension: a sender's MID would be wrong at the receiver.

With `enable-opus-red` (Jicofo's `codec.audio.opus.red.enabled`, off by default as there) the audio also
offers RFC 2198 redundant Opus, `red/48000/2` at Jicofo's 112 with fmtp `111/111`, after Opus: a client that
leaves the offer as it is keeps sending plain Opus, one that opts in (the web client's `?red=1`) puts red
first. The bridge learns from each participant's answer whether it takes red (`answered_medias`) and strips
RED to its Opus primary for those that do not.
"""

from __future__ import annotations

from colibri2.model import Media, Parameter, PayloadType, RtcpFb, RtpHdrExt
from signaling.jingle.model import Description

OPUS_PT = 111
RED_PT = 112
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

#: RFC 2198 redundant Opus; the nameless fmtp parameter is the blocks' payload types (redundant/primary).
RED_PAYLOAD_TYPE = PayloadType(RED_PT, "red", 48000, 2, (Parameter("", f"{OPUS_PT}/{OPUS_PT}"),))


def audio_payload_types(red: bool) -> tuple[PayloadType, ...]:
    """The offer's audio payload types: Opus, then RED when `red` (`enable-opus-red`)."""
    return (*AUDIO_PAYLOAD_TYPES, RED_PAYLOAD_TYPE) if red else AUDIO_PAYLOAD_TYPES


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


def colibri_medias(red: bool = False, audio: tuple[PayloadType, ...] | None = None) -> tuple[Media, ...]:
    """The `<media>` of an endpoint: the same offer the participant gets (`red`: with RED), or with `audio`
    as the audio payload types (those of the participant's answer, `answered_medias`)."""
    return (
        Media(
            "audio",
            audio_payload_types(red) if audio is None else audio,
            AUDIO_EXTENSIONS,
            extmap_allow_mixed=True,
        ),
        Media("video", VIDEO_PAYLOAD_TYPES, VIDEO_EXTENSIONS, extmap_allow_mixed=True),
    )


def answered_medias(red: bool, answer: tuple[Description, ...]) -> tuple[Media, ...] | None:
    """The bridge's `<media>` for a participant whose session-accept carried these descriptions, when its
    audio answer left out something offered (RED, say): the offered audio payload types whose ids the answer
    lists (an answer cannot add any). None when it took the whole audio offer, or said nothing of audio."""
    offered = audio_payload_types(red)
    audio = next((d for d in answer if d.media == "audio"), None)
    if audio is None or not audio.payload_types:
        return None
    ids = {pt.id for pt in audio.payload_types}
    kept = tuple(pt for pt in offered if pt.id in ids)
    return None if kept == offered else colibri_medias(audio=kept)


def description(media: str, red: bool = False) -> Description:
    """The RTP description of the audio or video content of a session-initiate (without sources); `red`:
    the audio with RED."""
    if media == "audio":
        return Description(
            "audio",
            maxptime=60,
            payload_types=audio_payload_types(red),
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
