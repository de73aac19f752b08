"""The Python side of the seam: what `Bridge` needs of `_native.NativeBridge`, and the typed values it sends.

`NativeSeam` is the Command half of `NativeBridge` (bridge/_native.pyi); tests drive a `Bridge` over a fake
one. The `to_native_*` functions turn description values (checked once where they were built) into the
native module's pyclasses, field by field: enums for kinds, types, setups and hashes, an address object,
digest bytes, SSRC groups intact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol

from bridge import _native
from bridge.description import (
    Candidate,
    CandidateType,
    Fingerprint,
    HashName,
    MediaKind,
    Setup,
    Source,
)
from colibri2.model import Media

#: What `drain_events` returns: one class per kind of native Event.
NativeEvent = (
    _native.TransportStateEvent
    | _native.StatsEvent
    | _native.CommandFailedEvent
    | _native.AudioLevelsEvent
    | _native.EstimateFellEvent
    | _native.EstimateRoseEvent
)

#: The native state of a Transport, as the registry names it.
TRANSPORT_STATES: dict[_native.TransportState, Literal["checking", "connected", "failed", "closed"]] = {
    _native.TransportState.CHECKING: "checking",
    _native.TransportState.CONNECTED: "connected",
    _native.TransportState.FAILED: "failed",
    _native.TransportState.CLOSED: "closed",
}


class NativeSeam(Protocol):
    """The methods of `_native.NativeBridge` the Bridge uses; each sends one Command and returns at once."""

    def local_addresses(self) -> list[tuple[str, int]]: ...
    def tcp_local_address(self) -> tuple[str, int] | None: ...
    def fingerprint(self) -> tuple[_native.HashFunction, bytes]: ...
    def event_fd(self) -> int: ...
    def drain_events(self) -> list[NativeEvent]: ...
    def create_router(self, router_id: int, feedback_audio_ssrc: int, feedback_video_ssrc: int) -> None: ...
    def close_router(self, router_id: int) -> None: ...
    def create_transport(
        self, router_id: int, transport_id: int, ufrag: str, pwd: str, controlling: bool
    ) -> None: ...
    def connect_transport(
        self, transport_id: int, ufrag: str, pwd: str, fingerprints: Sequence[_native.Fingerprint]
    ) -> None: ...
    def restart_ice(self, transport_id: int, ufrag: str, pwd: str) -> None: ...
    def add_remote_candidates(self, transport_id: int, candidates: Sequence[_native.Candidate]) -> None: ...
    def set_sources(self, transport_id: int, sources: Sequence[_native.Source]) -> None: ...
    def set_payload_types(self, transport_id: int, types: Sequence[_native.PayloadType]) -> None: ...
    def set_allocation(
        self, transport_id: int, targets: Sequence[tuple[str, tuple[int, int] | None]]
    ) -> None: ...
    def set_probe_target(self, transport_id: int, bps: int) -> None: ...
    def set_header_extensions(
        self,
        transport_id: int,
        audio_level: int | None = None,
        dependency_descriptor: int | None = None,
        transport_cc: int | None = None,
        abs_send_time: int | None = None,
    ) -> None: ...
    def request_keyframe(self, transport_id: int, ssrc: int) -> None: ...
    def set_force_mute(self, transport_id: int, audio: bool, video: bool) -> None: ...
    def close_transport(self, transport_id: int) -> None: ...
    def get_stats(self, request_id: int) -> None: ...
    def shutdown(self) -> None: ...


_KINDS: dict[MediaKind, _native.MediaKind] = {
    "audio": _native.MediaKind.AUDIO,
    "video": _native.MediaKind.VIDEO,
}
_CANDIDATE_TYPES: dict[CandidateType, _native.CandidateType] = {
    "host": _native.CandidateType.HOST,
    "srflx": _native.CandidateType.SRFLX,
    "prflx": _native.CandidateType.PRFLX,
    "relay": _native.CandidateType.RELAY,
}
_SETUPS: dict[Setup, _native.DtlsSetup] = {
    "active": _native.DtlsSetup.ACTIVE,
    "passive": _native.DtlsSetup.PASSIVE,
    "actpass": _native.DtlsSetup.ACTPASS,
}
_HASHES: dict[HashName, _native.HashFunction] = {
    "sha-1": _native.HashFunction.SHA_1,
    "sha-256": _native.HashFunction.SHA_256,
    "sha-384": _native.HashFunction.SHA_384,
    "sha-512": _native.HashFunction.SHA_512,
}
_GROUPS = {"SIM": _native.SsrcGroupSemantics.SIM, "FID": _native.SsrcGroupSemantics.FID}


def to_native_fingerprint(fp: Fingerprint) -> _native.Fingerprint:
    return _native.Fingerprint(_HASHES[fp.hash], fp.digest, _SETUPS[fp.setup])


def to_native_candidate(c: Candidate) -> _native.Candidate:
    return _native.Candidate(c.ip, c.port, c.priority, _CANDIDATE_TYPES[c.type])


def to_native_source(s: Source) -> _native.Source:
    groups = [_native.SsrcGroup(_GROUPS[g.semantics], list(g.ssrcs)) for g in s.groups]
    return _native.Source(_KINDS[s.kind], list(s.ssrcs), groups, s.name)


_CODECS = {
    "vp8": _native.VideoCodec.VP8,
    "vp9": _native.VideoCodec.VP9,
    "h264": _native.VideoCodec.H264,
    "av1": _native.VideoCodec.AV1,
}


def to_native_payload_types(medias: Sequence[Media]) -> list[_native.PayloadType]:
    """The payload types of an endpoint's Colibri2 medias. Video: the codecs whose payload the packet path
    reads (by name, case-insensitive), RTX with its `apt`, anything else as OTHER. Audio: RED (RFC 2198),
    which the packet path strips to its primary for receivers without it, and every other audio codec as
    AUDIO (what such a primary may be). An entry outside 0..127, or an RTX whose apt is missing or out of
    range, is left out: it cannot name a packet on the wire."""
    out: list[_native.PayloadType] = []
    for media in medias:
        if media.type == "audio":
            for pt in media.payload_types:
                if 0 <= pt.id <= 127:
                    red = (pt.name or "").lower() == "red"
                    codec = _native.VideoCodec.RED if red else _native.VideoCodec.AUDIO
                    out.append(_native.PayloadType(pt.id, codec))
            continue
        if media.type != "video":
            continue
        for pt in media.payload_types:
            if not 0 <= pt.id <= 127:
                continue
            name = (pt.name or "").lower()
            if name == "rtx":
                apt = next((p.value for p in pt.parameters if p.name == "apt"), None)
                if apt is None or not apt.isdigit() or int(apt) > 127:
                    continue
                out.append(_native.PayloadType(pt.id, _native.VideoCodec.RTX, int(apt)))
            else:
                out.append(_native.PayloadType(pt.id, _CODECS.get(name, _native.VideoCodec.OTHER)))
    return out


#: RFC 6464 client-to-mixer audio levels as Jingle and Colibri2 name the header extension.
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


#: The AV1 RTP spec's dependency descriptor header extension (Appendix A).
DEPENDENCY_DESCRIPTOR_URI = (
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"
)


def extension_id(medias: Sequence[Media], kind: str, uri: str) -> int | None:
    """The header extension id (1..255) an endpoint's `kind` media carries `uri` in, if it says so."""
    for media in medias:
        if media.type != kind:
            continue
        for ext in media.rtp_hdrexts:
            if ext.uri == uri and 1 <= ext.id <= 255:
                return ext.id
    return None


#: Transport-wide sequence numbers for congestion control feedback.
TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


class HeaderExtensionIds(NamedTuple):
    """Where an endpoint's RTP carries the header extensions the packet path reads (None: not sent)."""

    audio_level: int | None
    dependency_descriptor: int | None
    transport_cc: int | None
    #: Only for an endpoint whose video negotiated REMB (goog-remb) and not transport-cc: the packet path then
    #: estimates what it receives from it and answers with REMB.
    abs_send_time: int | None = None


def header_extension_ids(medias: Sequence[Media]) -> HeaderExtensionIds:
    """The ids from an endpoint's Colibri2 medias: audio levels in its audio, the AV1 dependency descriptor in
    its video, transport-wide sequence numbers in either (one sequence per transport); abs-send-time in its
    video when that negotiated REMB and there is no transport-cc (JVB's choice of estimator, the same way)."""
    transport_cc = extension_id(medias, "video", TRANSPORT_CC_URI) or extension_id(
        medias, "audio", TRANSPORT_CC_URI
    )
    fbs = {fb.type for m in medias if m.type == "video" for pt in m.payload_types for fb in pt.rtcp_fbs}
    remb_only = "goog-remb" in fbs and transport_cc is None
    return HeaderExtensionIds(
        audio_level=extension_id(medias, "audio", AUDIO_LEVEL_URI),
        dependency_descriptor=extension_id(medias, "video", DEPENDENCY_DESCRIPTOR_URI),
        transport_cc=transport_cc,
        abs_send_time=extension_id(medias, "video", ABS_SEND_TIME_URI) if remb_only else None,
    )


def local_fingerprint(native: NativeSeam) -> Fingerprint:
    """The bridge certificate's fingerprint, offered with a=setup:actpass (the bridge lets the peer pick)."""
    hash_function, digest = native.fingerprint()
    (name,) = (n for n, h in _HASHES.items() if h == hash_function)
    return Fingerprint(name, digest, "actpass")
