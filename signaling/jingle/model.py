"""Typed, sans-IO values for Jingle as Jitsi speaks it (docs/jitsi-protocol.md 5.4-5.5).

XEP-0166 (Jingle), 0167 (RTP description), 0176 (ICE-UDP transport), 0320 (DTLS fingerprint), 0338
(grouping, BUNDLE), 0339 (source-specific media attributes), 0293 (rtcp-fb), 0294 (rtp-hdrext), plus Jitsi's
`bridge-session`, `json-message` compact sources, `ssrc-info owner`, `sctpmap` and `web-socket`.

The payload-type, rtcp-fb, header-extension, candidate and fingerprint values are Colibri2's (both protocols
carry the same Jingle elements), so the focus copies them between the two without conversion. Absent
optional attributes are `None`, so parse -> build -> parse is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from colibri2.model import (
    Candidate,
    Fingerprint,
    Parameter,
    PayloadType,
    RtcpFb,
    RtpHdrExt,
    SsrcGroupDesc,
)

__all__ = [
    "ACTIONS",
    "BridgeSession",
    "Candidate",
    "Content",
    "Description",
    "EndpointSources",
    "Fingerprint",
    "Group",
    "IceTransport",
    "Jingle",
    "JingleError",
    "Parameter",
    "PayloadType",
    "Reason",
    "RtcpFb",
    "RtpHdrExt",
    "SctpMap",
    "Source",
    "SsrcGroup",
    "StartMuted",
]

#: The owner of the bridge's own (feedback) sources in `json-message` and `ssrc-info` (5.4).
JVB_OWNER = "jvb"

SsrcGroup = SsrcGroupDesc
"""`<ssrc-group semantics>` (XEP-0339): SIM, FID, FEC-FR with the SSRCs in order."""

Action = Literal[
    "content-accept",
    "content-add",
    "content-modify",
    "content-reject",
    "content-remove",
    "description-info",
    "security-info",
    "session-accept",
    "session-info",
    "session-initiate",
    "session-terminate",
    "transport-accept",
    "transport-info",
    "transport-reject",
    "transport-replace",
    "source-add",
    "source-remove",
]
"""XEP-0166 7.2 actions plus Jitsi's source-add / source-remove."""

ACTIONS: frozenset[str] = frozenset(get_args(Action))


class JingleError(ValueError):
    """Jingle input that cannot be understood; `condition` is the XMPP error to answer with."""

    def __init__(self, text: str, condition: str = "bad-request") -> None:
        super().__init__(text)
        self.text = text
        self.condition = condition


@dataclass(frozen=True, slots=True)
class Source:
    """`<source ssrc name videoType>` (XEP-0339) with its parameters (msid) and Jitsi's `ssrc-info owner`."""

    ssrc: int
    name: str | None = None
    video_type: str | None = None
    parameters: tuple[Parameter, ...] = ()
    owner: str | None = None

    @property
    def msid(self) -> str | None:
        return next((p.value for p in self.parameters if p.name == "msid"), None)


@dataclass(frozen=True, slots=True)
class Description:
    """`<description xmlns="urn:xmpp:jingle:apps:rtp:1" media>` (XEP-0167)."""

    media: str
    maxptime: int | None = None
    payload_types: tuple[PayloadType, ...] = ()
    rtp_hdrexts: tuple[RtpHdrExt, ...] = ()
    extmap_allow_mixed: bool = False
    rtcp_mux: bool = False
    sources: tuple[Source, ...] = ()
    ssrc_groups: tuple[SsrcGroup, ...] = ()


@dataclass(frozen=True, slots=True)
class SctpMap:
    """`<sctpmap xmlns="urn:xmpp:jingle:transports:dtls-sctp:1" number protocol streams>`: data channel."""

    number: int
    protocol: str
    streams: int | None = None


@dataclass(frozen=True, slots=True)
class IceTransport:
    """`<transport xmlns="urn:xmpp:jingle:transports:ice-udp:1">` (XEP-0176) with DTLS (XEP-0320)."""

    ufrag: str | None = None
    pwd: str | None = None
    candidates: tuple[Candidate, ...] = ()
    rtcp_mux: bool = False
    fingerprints: tuple[Fingerprint, ...] = ()
    web_sockets: tuple[str, ...] = ()  # `<web-socket xmlns="http://jitsi.org/protocol/colibri" url>`
    sctpmap: SctpMap | None = None
    #: `ice-generation` (docs/jitsi-protocol.md 5.5): the transport of an in-place ICE restart.
    ice_generation: int | None = None


@dataclass(frozen=True, slots=True)
class Content:
    """`<content creator name senders>` with an RTP description and an ICE-UDP transport."""

    name: str
    creator: str | None = None
    senders: str | None = None
    description: Description | None = None
    transport: IceTransport | None = None


@dataclass(frozen=True, slots=True)
class Group:
    """`<group xmlns="urn:xmpp:jingle:apps:grouping:0" semantics>` (XEP-0338): BUNDLE of content names."""

    semantics: str
    contents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BridgeSession:
    """Jitsi's `<bridge-session xmlns="http://jitsi.org/protocol/focus" id region restart ice-restart>`."""

    id: str | None = None
    region: str | None = None
    restart: bool | None = None
    ice_restart: bool | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    """XEP-0166 `<reason>`: one condition element (success, general-error, ...) and an optional text."""

    condition: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class StartMuted:
    """`<startmuted xmlns="http://jitsi.org/jitmeet/start-muted" audio video>`."""

    audio: bool | None = None
    video: bool | None = None


@dataclass(frozen=True, slots=True)
class EndpointSources:
    """One owner's sources by kind, as the compact JSON of 5.4 and the focus's bookkeeping hold them."""

    audio: tuple[Source, ...] = ()
    audio_groups: tuple[SsrcGroup, ...] = ()
    video: tuple[Source, ...] = ()
    video_groups: tuple[SsrcGroup, ...] = ()

    def of(self, media: str) -> tuple[tuple[Source, ...], tuple[SsrcGroup, ...]]:
        if media == "audio":
            return self.audio, self.audio_groups
        if media == "video":
            return self.video, self.video_groups
        return (), ()

    @property
    def ssrcs(self) -> frozenset[int]:
        return frozenset(s.ssrc for s in (*self.audio, *self.video))

    def __bool__(self) -> bool:
        return bool(self.audio or self.video or self.audio_groups or self.video_groups)


#: `json-message` sources: (owner, sources) pairs in document order (owners are unique).
SourcesMap = tuple[tuple[str, EndpointSources], ...]


@dataclass(frozen=True, slots=True)
class Jingle:
    """`<jingle xmlns="urn:xmpp:jingle:1" action sid initiator responder>` and what Jitsi puts in it."""

    action: Action
    sid: str
    initiator: str | None = None
    responder: str | None = None
    contents: tuple[Content, ...] = ()
    groups: tuple[Group, ...] = ()
    bridge_session: BridgeSession | None = None
    json_sources: SourcesMap | None = None  # `<json-message xmlns="http://jitsi.org/jitmeet">`
    reason: Reason | None = None
    start_muted: StartMuted | None = None
    extra: tuple[str, ...] = field(default=(), compare=False)  # names of ignored children, for logs

    def content(self, name: str) -> Content | None:
        return next((c for c in self.contents if c.name == name), None)

    def sources(self, owner: str | None = None) -> EndpointSources:
        """The inline sources of the audio and video descriptions (`owner` fills in a missing ssrc-info)."""
        by_media: dict[str, tuple[tuple[Source, ...], tuple[SsrcGroup, ...]]] = {}
        for c in self.contents:
            d = c.description
            if d is None or d.media not in ("audio", "video"):
                continue
            srcs, groups = by_media.get(d.media, ((), ()))
            own = tuple(
                s if s.owner is not None or owner is None else _with_owner(s, owner) for s in d.sources
            )
            by_media[d.media] = (srcs + own, groups + d.ssrc_groups)
        audio, audio_groups = by_media.get("audio", ((), ()))
        video, video_groups = by_media.get("video", ((), ()))
        return EndpointSources(audio, audio_groups, video, video_groups)

    def transport(self) -> IceTransport | None:
        """The BUNDLE transport: the first content's that carries one."""
        return next((c.transport for c in self.contents if c.transport is not None), None)


def _with_owner(source: Source, owner: str) -> Source:
    return Source(source.ssrc, source.name, source.video_type, source.parameters, owner)
