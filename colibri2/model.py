"""Typed values for Colibri2 `conference-modify` / `conference-modified` (docs/jitsi-protocol.md 2.2-2.4).

Plain frozen dataclasses: the XML codec (`xml.py`), the JSON codec (`json.py`) and the handler share them.
Absent optional attributes are `None` so that parse -> build -> parse is exact; boolean flags whose absence
means "false" on the wire (`create`, `expire`, `rtcp-mux`) are plain bools.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Reason(enum.Enum):
    """The `reason` of `<error xmlns="jitsi:colibri2">`, serialized lower-case."""

    CONFERENCE_NOT_FOUND = "conference_not_found"
    CONFERENCE_ALREADY_EXISTS = "conference_already_exists"
    FEATURE_NOT_IMPLEMENTED = "feature_not_implemented"
    GRACEFUL_SHUTDOWN = "graceful_shutdown"
    UNKNOWN_ENDPOINT = "unknown_endpoint"
    UNSPECIFIED = "unspecified"


# RFC 6120 8.3.2: the error type that goes with each condition we use.
ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "item-not-found": "cancel",
    "service-unavailable": "cancel",
    "internal-server-error": "wait",
    "resource-constraint": "wait",
}


class Colibri2Error(Exception):
    """A request that gets an IQ error: XMPP condition, text, optional colibri2 reason and endpoint id."""

    def __init__(
        self,
        condition: str,
        text: str,
        reason: Reason | None = None,
        endpoint_id: str | None = None,
    ) -> None:
        super().__init__(f"{condition}: {text}")
        self.condition = condition
        self.text = text
        self.reason = reason
        self.endpoint_id = endpoint_id

    @property
    def type(self) -> str:
        return ERROR_TYPES.get(self.condition, "cancel")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Colibri2Error):
            return NotImplemented
        return (self.condition, self.text, self.reason, self.endpoint_id) == (
            other.condition,
            other.text,
            other.reason,
            other.endpoint_id,
        )

    def __hash__(self) -> int:
        return hash((self.condition, self.text, self.reason, self.endpoint_id))


def bad_request(text: str) -> Colibri2Error:
    return Colibri2Error("bad-request", text)


# ---- id bounds, shared with the focus (signaling/focus), which checks before it asks a bridge.
#
# Both ids end up in URL paths (/colibri/v2/conferences/<meeting-id>, /colibri-ws/<server>/<meeting-id>/
# <endpoint-id>), in source names (<endpoint-id>-v0), in logs and metric labels, so they are limited to
# RFC 3986's unreserved characters and never start with "." (no "." or ".." path segment, no dotfile).
# Endpoint ids are MUC nicknames: lib-jitsi-meet and webclient/js/conference.js send 8 hex digits, jigasi and
# jibri short words, the load generator `lg<n>`; 64 leaves room for all of them. Meeting ids are UUIDs
# (Prosody's mod_muc_meeting_id, our MUC, the focus's fallback) or an operator's string over HTTP such as
# bench's `bench-<uuid>`; "@" and ":" are allowed too (legal in a path segment) for JID-like names.

#: An endpoint id: 1..64 unreserved URL characters, not starting with ".".
ENDPOINT_ID = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,63}")
#: A meeting id: 1..128 unreserved URL characters or "@" and ":", not starting with ".".
MEETING_ID = re.compile(r"[A-Za-z0-9_~@:-][A-Za-z0-9._~@:-]{0,127}")
#: `stats-id` is free text (Jicofo and our focus put the display name there); only its length is bounded.
MAX_STATS_ID_LENGTH = 256


def _shown(value: str, limit: int = 80) -> str:
    """`value` quoted for an error text, cut so a huge id does not make a huge reply."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def check_meeting_id(meeting_id: str) -> None:
    """Raises `bad-request` naming the id unless it matches `MEETING_ID`."""
    if not MEETING_ID.fullmatch(meeting_id):
        raise bad_request(
            f"Invalid meeting-id {_shown(meeting_id)}: "
            "1 to 128 of A-Z a-z 0-9 . _ ~ - @ :, not starting with ."
        )


def check_endpoint_id(endpoint_id: str) -> None:
    """Raises `bad-request` naming the id unless it matches `ENDPOINT_ID`."""
    if not ENDPOINT_ID.fullmatch(endpoint_id):
        raise bad_request(
            f"Invalid endpoint id {_shown(endpoint_id)}: 1 to 64 of A-Z a-z 0-9 . _ ~ -, not starting with ."
        )


def check_stats_id(endpoint_id: str, stats_id: str) -> None:
    """Raises `bad-request` naming the endpoint if its stats-id is longer than `MAX_STATS_ID_LENGTH`."""
    if len(stats_id) > MAX_STATS_ID_LENGTH:
        raise bad_request(
            f"stats-id of endpoint {_shown(endpoint_id)} is {len(stats_id)} characters long "
            f"(at most {MAX_STATS_ID_LENGTH})"
        )


@dataclass(frozen=True, slots=True)
class Parameter:
    """`<parameter name value>` (urn:xmpp:jingle:apps:rtp:1): fmtp of a payload type, msid of a source."""

    name: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class RtcpFb:
    """`<rtcp-fb type subtype>` (urn:xmpp:jingle:apps:rtp:rtcp-fb:0)."""

    type: str
    subtype: str | None = None


@dataclass(frozen=True, slots=True)
class PayloadType:
    """`<payload-type id name clockrate channels>` with fmtp parameters and rtcp-fb."""

    id: int
    name: str | None = None
    clockrate: int | None = None
    channels: int | None = None
    parameters: tuple[Parameter, ...] = ()
    rtcp_fbs: tuple[RtcpFb, ...] = ()


@dataclass(frozen=True, slots=True)
class RtpHdrExt:
    """`<rtp-hdrext id uri>` (urn:xmpp:jingle:apps:rtp:rtp-hdrext:0)."""

    id: int
    uri: str


@dataclass(frozen=True, slots=True)
class Media:
    """`<media type>`: the payload types and header extensions offered for one kind."""

    type: str
    payload_types: tuple[PayloadType, ...] = ()
    rtp_hdrexts: tuple[RtpHdrExt, ...] = ()
    extmap_allow_mixed: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    """An ICE-UDP `<candidate>` with every attribute Jitsi writes."""

    component: int
    foundation: str
    generation: int | None
    id: str | None
    ip: str
    network: int | None
    port: int
    priority: int
    protocol: str
    type: str
    rel_addr: str | None = None
    rel_port: int | None = None
    #: ICE-TCP (RFC 6544): "active", "passive" or "so"; None for UDP.
    tcptype: str | None = None


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """`<fingerprint hash setup [cryptex]>value</fingerprint>` (urn:xmpp:jingle:apps:dtls:0)."""

    hash: str
    value: str
    setup: str | None = None
    cryptex: bool | None = None


@dataclass(frozen=True, slots=True)
class IceUdpTransport:
    """`<transport xmlns="urn:xmpp:jingle:transports:ice-udp:1" ufrag pwd>`."""

    ufrag: str | None = None
    pwd: str | None = None
    candidates: tuple[Candidate, ...] = ()
    rtcp_mux: bool = False
    fingerprints: tuple[Fingerprint, ...] = ()
    web_sockets: tuple[str, ...] = ()  # `<web-socket url>` (http://jitsi.org/protocol/colibri)
    ice_generation: int | None = None  # newest JVB only (2.9)


@dataclass(frozen=True, slots=True)
class Sctp:
    """`<sctp port role>`: the data channel's association (JVB accepts only port 5000)."""

    port: int | None = None
    role: str | None = None


@dataclass(frozen=True, slots=True)
class Transport:
    """The colibri2 `<transport>` wrapper around the ICE transport and SCTP."""

    ice_controlling: bool | None = None
    use_unique_port: bool | None = None
    ice_restart: bool | None = None
    initiator: bool | None = None  # older name of ice-controlling
    ice: IceUdpTransport | None = None
    sctp: Sctp | None = None


@dataclass(frozen=True, slots=True)
class SourceDesc:
    """`<source ssrc name videoType rid>` (urn:xmpp:jingle:apps:rtp:ssma:0) with its parameters (msid)."""

    ssrc: int | None = None
    name: str | None = None
    video_type: str | None = None
    rid: str | None = None
    parameters: tuple[Parameter, ...] = ()


@dataclass(frozen=True, slots=True)
class SsrcGroupDesc:
    """`<ssrc-group semantics>` of `<source ssrc>` children: SIM, FID, FEC-FR."""

    semantics: str
    ssrcs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MediaSource:
    """`<media-source type id [synthetic]>`: one named source (`abcd1234-v0`) and its SSRCs."""

    type: str
    id: str
    synthetic: bool | None = None
    sources: tuple[SourceDesc, ...] = ()
    ssrc_groups: tuple[SsrcGroupDesc, ...] = ()


@dataclass(frozen=True, slots=True)
class ForceMute:
    """`<force-mute audio video>`: absent means unchanged."""

    audio: bool | None = None
    video: bool | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """`<endpoint id ...>` in a request or response (also nested in a relay's `<endpoints>`)."""

    id: str
    create: bool = False
    expire: bool = False
    stats_id: str | None = None
    muc_role: str | None = None
    medias: tuple[Media, ...] = ()
    transport: Transport | None = None
    sources: tuple[MediaSource, ...] | None = None  # None: no <sources>; () : empty <sources/>
    force_mute: ForceMute | None = None
    capabilities: tuple[str, ...] = ()
    initial_last_n: int | None = None


@dataclass(frozen=True, slots=True)
class Relay:
    """`<relay id mesh-id create expire>`: parsed and kept; this bridge does not run relays."""

    id: str
    mesh_id: str | None = None
    create: bool = False
    expire: bool = False
    medias: tuple[Media, ...] = ()
    transport: Transport | None = None
    endpoints: tuple[Endpoint, ...] | None = None


@dataclass(frozen=True, slots=True)
class ConferenceModify:
    """The request: `<conference-modify xmlns="jitsi:colibri2" meeting-id ...>`."""

    meeting_id: str
    name: str | None = None
    create: bool = False
    expire: bool = False
    rtcstats_enabled: bool | None = None
    endpoints: tuple[Endpoint, ...] = ()
    relays: tuple[Relay, ...] = ()


@dataclass(frozen=True, slots=True)
class ConferenceModified:
    """The response: `<conference-modified>` with endpoints, relays and the feedback sources."""

    endpoints: tuple[Endpoint, ...] = ()
    relays: tuple[Relay, ...] = ()
    sources: tuple[MediaSource, ...] | None = None
