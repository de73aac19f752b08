"""Sans-IO Colibri2 handler: a conference-modify in, the changes it asks for and conference-modified out.

`plan(request)` checks a request against the Bridge's registry and returns the typed changes it asks for
(bridge/changes.py), or raises `Colibri2Error` with JVB's exact condition, reason and text
(docs/jitsi-protocol.md 2.3 restrictions, 2.5 table); a refused request changes nothing. `handle(request)`
plans, has the registry apply the plan (`Colibri2Registry.apply`, the one way this handler changes anything)
and answers from the registry. No XMPP, HTTP, clock or native object here: the caller parses (colibri2.xml /
colibri2.json) and sends the result. The request's transport and sources become description values here,
checked once (candidate types and addresses, fingerprints, SSRC groups); nothing downstream checks them again.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, cast

from bridge import description as desc
from bridge.bridge import BridgeError, remote_refusal
from bridge.changes import (
    Change,
    CreateConference,
    CreateEndpoint,
    ExpireConference,
    ExpireEndpoint,
    UpdateEndpoint,
)
from bridge.channel import colibri_ws_url
from colibri2.model import (
    Candidate,
    Colibri2Error,
    ConferenceModified,
    ConferenceModify,
    Endpoint,
    Fingerprint,
    IceUdpTransport,
    MediaSource,
    Reason,
    Sctp,
    SourceDesc,
    Transport,
    bad_request,
    check_endpoint_id,
    check_meeting_id,
    check_stats_id,
)

if TYPE_CHECKING:
    from bridge.bridge import Conference
    from bridge.bridge import Endpoint as BridgeEndpoint

SCTP_PORT = 5000  # the only SCTP port JVB accepts
_BARE_JID = re.compile(r"^(?:[^@/\s]+@)?[^@/\s]+$")


#: The limits `Colibri2Handler.refused` counts refusals at.
COLIBRI2_LIMITS = ("conferences", "endpoints_per_conference", "ssrcs_per_endpoint")


@dataclass(frozen=True, slots=True)
class Colibri2Limits:
    """What a focus can make this bridge allocate; beyond it, Colibri2 `resource-constraint`.

    Safety nets above what a focus asks for: ours puts at most 100 endpoints in a conference, Jicofo 80 on a
    bridge by default (`max-bridge-participants`)."""

    max_conferences: int = 1000
    max_endpoints_per_conference: int = 500
    #: SSRCs one endpoint may signal (simulcast with RTX is 6 per video source; Jicofo allows 20).
    max_ssrcs_per_endpoint: int = 64


class Colibri2Registry(Protocol):
    """What the handler reads and changes: the Bridge."""

    @property
    def conferences(self) -> dict[str, Conference]: ...
    def conference_by_meeting(self, meeting_id: str) -> Conference | None: ...
    def apply(self, changes: Iterable[Change]) -> None: ...


class ShutdownFlags(Protocol):
    """The bridge's drain state (bridge.xmpp_core.BridgeState): while shutting down, no new conferences."""

    graceful_shutdown: bool
    shutting_down: bool


@dataclass(slots=True)
class _Running:
    graceful_shutdown: bool = False
    shutting_down: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """How the response names one requested endpoint."""

    endpoint_id: str
    how: Literal["created", "updated", "restarted", "expired"]
    sctp: bool = False


@dataclass(frozen=True, slots=True)
class Colibri2Plan:
    """A checked request: the changes to apply in order, and what the answer will say."""

    meeting_id: str
    changes: tuple[Change, ...]
    answers: tuple[Answer, ...]
    #: Whether the answer signals the conference's feedback sources (a conference or endpoint was created).
    feedback: bool


class _Conference:
    """The conference a request works on, as the changes planned so far leave it."""

    def __init__(self, meeting_id: str, conference: Conference | None) -> None:
        self.meeting_id = meeting_id
        #: Its endpoints: the registry's, or None for one this request creates.
        self.endpoints: dict[str, BridgeEndpoint | None] = dict(conference.endpoints) if conference else {}
        #: Force-mute as earlier endpoints of this request left it.
        self.force_mute: dict[str, tuple[bool, bool]] = {}
        self.changes: list[Change] = []


class Colibri2Handler:
    """Colibri2 for one Bridge. `handle()` either returns the response or raises Colibri2Error."""

    def __init__(
        self,
        bridge: Colibri2Registry,
        *,
        shutdown: ShutdownFlags | None = None,
        sctp_enabled: bool = False,
        web_socket_bases: tuple[str, ...] = (),
        limits: Colibri2Limits | None = None,
    ) -> None:
        self.bridge = bridge
        #: While it says shutting down, conference creation is refused (JVB `graceful_shutdown`).
        self.shutdown: ShutdownFlags = shutdown if shutdown is not None else _Running()
        self.limits = limits or Colibri2Limits()
        #: Requests refused at a limit, by limit (`/colibri/stats`, `/metrics`).
        self.refused: Counter[str] = Counter()
        #: The native core has no SCTP data channel yet; when false, <sctp> requests are refused like JVB's
        #: `videobridge.sctp.enabled=false`.
        self.sctp_enabled = sctp_enabled
        #: `ws[s]://<domain>/colibri-ws/<server-id>`, one per websockets domain; empty: no <web-socket>.
        self.web_socket_bases = web_socket_bases

    # -- the request --------------------------------------------------------------------------------------

    def handle(self, request: ConferenceModify) -> ConferenceModified:
        plan = self.plan(request)
        try:
            self.bridge.apply(plan.changes)
        except BridgeError as exc:
            # Planned changes fail only when the bridge itself cannot act (its core stopped).
            raise bad_request(str(exc)) from None
        return self.answer(plan)

    def plan(self, request: ConferenceModify) -> Colibri2Plan:
        """The changes `request` asks for, checked against the registry; raises Colibri2Error otherwise."""
        self._validate(request)
        existing = self.bridge.conference_by_meeting(request.meeting_id)
        if not request.create:
            if existing is None:
                raise Colibri2Error(
                    "item-not-found",
                    f"Conference not found for ID: {request.meeting_id}",
                    Reason.CONFERENCE_NOT_FOUND,
                )
        else:
            if self.shutdown.graceful_shutdown or self.shutdown.shutting_down:
                raise Colibri2Error("service-unavailable", "In graceful shutdown", Reason.GRACEFUL_SHUTDOWN)
            if existing is not None:
                raise Colibri2Error(
                    "conflict",
                    f"Conference already exists for ID: {request.meeting_id}",
                    Reason.CONFERENCE_ALREADY_EXISTS,
                )
            for ep in request.endpoints:
                if ep.create:
                    self._check_create(ep)
            live = len(self.bridge.conferences)
            if live >= self.limits.max_conferences:
                raise self._at_limit("conferences", f"This bridge hosts {live} conferences (the maximum)")
        conference = _Conference(request.meeting_id, existing)
        if request.create:
            conference.changes.append(CreateConference(request.meeting_id, request.name))
        answers = [a for ep in request.endpoints if (a := self._endpoint(conference, ep)) is not None]
        if request.expire or (not request.create and not conference.endpoints):
            # JVB also expires a conference that a non-create request leaves without endpoints or relays.
            conference.changes.append(ExpireConference(request.meeting_id))
        created = request.create or any(a.how == "created" for a in answers)
        return Colibri2Plan(
            request.meeting_id, tuple(conference.changes), tuple(answers), created and not request.expire
        )

    def answer(self, plan: Colibri2Plan) -> ConferenceModified:
        """The response to a plan the registry applied: new endpoints get their transport."""
        conference = self.bridge.conference_by_meeting(plan.meeting_id)
        endpoints = []
        for a in plan.answers:
            ep = conference.get_endpoint(a.endpoint_id) if conference is not None else None
            if a.how == "expired":
                endpoints.append(Endpoint(a.endpoint_id, expire=True))
            elif a.how == "created" and ep is not None:
                endpoints.append(Endpoint(a.endpoint_id, transport=self._local_transport(ep, a.sctp)))
            elif a.how == "restarted" and ep is not None:
                # Section 2.3: the new ICE transport, tagged with its generation.
                endpoints.append(Endpoint(a.endpoint_id, transport=self._local_transport(ep, False)))
            else:
                endpoints.append(Endpoint(a.endpoint_id))
        sources = _feedback_sources(conference) if plan.feedback and conference is not None else None
        return ConferenceModified(endpoints=tuple(endpoints), sources=sources)

    def _validate(self, request: ConferenceModify) -> None:
        check_meeting_id(request.meeting_id)
        for ep in request.endpoints:
            check_endpoint_id(ep.id)
            if ep.stats_id is not None:
                check_stats_id(ep.id, ep.stats_id)
        if request.endpoints and request.relays:
            raise Colibri2Error(
                "feature-not-implemented",
                "Mixing endpoints and relays in one request is not supported",
                Reason.FEATURE_NOT_IMPLEMENTED,
            )
        if request.relays:
            # Relays (Octo) need relay-id, SCTP or websockets: this bridge has them disabled.
            raise Colibri2Error(
                "feature-not-implemented",
                "Relays are not enabled on this bridge",
                Reason.FEATURE_NOT_IMPLEMENTED,
            )
        if len(request.endpoints) > 1 and not all(
            _is_expire_or_force_mute_only(ep) for ep in request.endpoints
        ):
            raise Colibri2Error(
                "feature-not-implemented",
                "More than one endpoint in a request is only supported for expire or force-mute",
                Reason.FEATURE_NOT_IMPLEMENTED,
            )
        if request.name is not None and not _BARE_JID.match(request.name):
            raise bad_request(f"Invalid conference name (not a JID): {request.name}")

    # -- one endpoint -------------------------------------------------------------------------------------

    def _endpoint(self, conference: _Conference, request: Endpoint) -> Answer | None:
        meeting_id = conference.meeting_id
        if request.create:
            if request.id in conference.endpoints:
                raise Colibri2Error("conflict", f"Endpoint with ID {request.id} already exists")
            self._check_create(request)
            if len(conference.endpoints) >= self.limits.max_endpoints_per_conference:
                raise self._at_limit(
                    "endpoints_per_conference",
                    f"Conference {meeting_id} has {self.limits.max_endpoints_per_conference} endpoints",
                )
            conference.endpoints[request.id] = None
            conference.changes.append(
                CreateEndpoint(
                    meeting_id,
                    request.id,
                    stats_id=request.stats_id,
                    muc_role=request.muc_role,
                    capabilities=request.capabilities,
                    medias=request.medias,
                )
            )
            conference.changes.append(self._update(conference, None, request))
            sctp = request.transport is not None and request.transport.sctp is not None
            return Answer(request.id, "created", sctp)
        if request.id not in conference.endpoints:
            if _is_expire_or_force_mute_only(request):
                return None  # JVB ignores these for endpoints it does not know
            raise Colibri2Error(
                "item-not-found",
                f"Endpoint not found for ID: {request.id}",
                Reason.UNKNOWN_ENDPOINT,
                endpoint_id=request.id,
            )
        if request.expire:
            del conference.endpoints[request.id]
            conference.changes.append(ExpireEndpoint(meeting_id, request.id))
            return Answer(request.id, "expired")
        self._check_sctp(request)
        current = conference.endpoints[request.id]
        if current is not None and current.muc_role == "visitor" and request.sources:
            raise bad_request(f"Visitor endpoint {request.id} may not send sources")
        update = self._update(conference, current, request)
        conference.changes.append(update)
        return Answer(request.id, "restarted" if update.ice_restart else "updated")

    def _update(
        self, conference: _Conference, current: BridgeEndpoint | None, request: Endpoint
    ) -> UpdateEndpoint:
        """What `request` changes of an endpoint (`current`: as the registry has it; None: created now)."""
        force_mute = None
        if request.force_mute is not None:
            now = (
                (current.force_mute_audio, current.force_mute_video)
                if current is not None
                else (False, False)
            )
            audio, video = conference.force_mute.get(request.id, now)
            if request.force_mute.audio is not None:
                audio = request.force_mute.audio
            if request.force_mute.video is not None:
                video = request.force_mute.video
            force_mute = conference.force_mute[request.id] = (audio, video)
        remote = None
        if request.transport is not None and request.transport.ice is not None:
            remote = _remote_description(request.transport.ice)
            if remote is not None:
                refusal = remote_refusal(current.remote if current is not None else None, remote)
                if refusal is not None:
                    raise bad_request(refusal)
        sources = None
        if request.sources is not None:
            ssrcs = {s.ssrc for ms in request.sources for s in ms.sources if s.ssrc is not None}
            if len(ssrcs) > self.limits.max_ssrcs_per_endpoint:
                raise self._at_limit(
                    "ssrcs_per_endpoint",
                    f"Endpoint {request.id} signals {len(ssrcs)} SSRCs "
                    f"(at most {self.limits.max_ssrcs_per_endpoint})",
                )
            sources = _bridge_sources(request.id, request.sources)
        return UpdateEndpoint(
            conference.meeting_id,
            request.id,
            force_mute=force_mute,
            # A create already carries these.
            stats_id=None if request.create else request.stats_id,
            medias=request.medias if request.medias and not request.create else None,
            ice_restart=bool(
                request.transport is not None and request.transport.ice_restart and not request.create
            ),
            remote=remote,
            sources=sources,
            last_n=request.initial_last_n,
        )

    def _at_limit(self, limit: str, text: str) -> Colibri2Error:
        self.refused[limit] += 1
        return Colibri2Error("resource-constraint", text)

    def _check_create(self, request: Endpoint) -> None:
        if request.transport is None:
            raise bad_request(f"Attempt to create endpoint {request.id} with no <transport>")
        if "source-names" not in request.capabilities:
            raise bad_request(f"Endpoint {request.id} does not support source names")
        self._check_sctp(request)
        if request.muc_role == "visitor" and request.sources:
            raise bad_request(f"Visitor endpoint {request.id} may not send sources")

    def _check_sctp(self, request: Endpoint) -> None:
        sctp = request.transport.sctp if request.transport is not None else None
        if sctp is None:
            return
        if not self.sctp_enabled:
            raise Colibri2Error(
                "feature-not-implemented", "SCTP support is not configured", Reason.FEATURE_NOT_IMPLEMENTED
            )
        if sctp.port is not None and sctp.port != SCTP_PORT:
            raise bad_request(f"Specific SCTP port requested, not supported: {sctp.port}")

    def _local_transport(self, ep: BridgeEndpoint, sctp: bool) -> Transport:
        local = ep.local_description()
        ice = IceUdpTransport(
            ufrag=local.ufrag,
            pwd=local.pwd,
            candidates=tuple(
                Candidate(
                    component=1,
                    foundation=c.foundation,
                    generation=c.generation,
                    id=f"{ep.id}-{i}",
                    ip=str(c.ip),
                    network=0,
                    port=c.port,
                    priority=c.priority,
                    protocol=c.protocol,
                    type=c.type,
                    tcptype=c.tcptype,
                )
                for i, c in enumerate(local.candidates)
            ),
            rtcp_mux=local.rtcp_mux,
            fingerprints=tuple(Fingerprint(fp.hash, fp.value, fp.setup) for fp in local.fingerprints),
            web_sockets=tuple(
                colibri_ws_url(base, ep.conference.id, ep.id, ep.channel_pwd)
                for base in self.web_socket_bases
            ),
            ice_generation=ep.ice_generation or None,
        )
        return Transport(ice=ice, sctp=Sctp(port=SCTP_PORT, role="server") if sctp else None)


def _feedback_sources(conference: Conference) -> tuple[MediaSource, ...]:
    # The Conference owns these SSRCs (the native Router sends its RTCP from them); we only signal them.
    return (
        MediaSource("audio", "jvb-a0", sources=(SourceDesc(conference.feedback_audio_ssrc, "jvb-a0"),)),
        MediaSource("video", "jvb-v0", sources=(SourceDesc(conference.feedback_video_ssrc, "jvb-v0"),)),
    )


def _is_expire_or_force_mute_only(ep: Endpoint) -> bool:
    if ep.expire:
        return not ep.create
    return (
        ep.force_mute is not None
        and not ep.create
        and ep.transport is None
        and ep.sources is None
        and not ep.medias
        and ep.initial_last_n is None
    )


# -- the request's descriptions, checked once ----------------------------------------------------------------


def _remote_description(ice: IceUdpTransport) -> desc.TransportDescription | None:
    """The client's ICE transport as the Bridge takes it; None without credentials (trickle only).

    Keeps what the native core can use: fingerprints of a supported hash (any of them may match, RFC 8122 5),
    UDP candidates for component 1 with an IP address.
    """
    if ice.ufrag is None or ice.pwd is None:
        if ice.fingerprints:
            raise bad_request("transport has fingerprints but no ICE ufrag/pwd")
        return None
    fingerprints = []
    for fp in ice.fingerprints:
        setup = fp.setup or "active"
        if setup not in desc.SETUPS:
            raise bad_request(f"unknown DTLS setup {fp.setup!r}")
        try:
            fingerprints.append(desc.Fingerprint.parse(fp.hash, fp.value, setup))
        except ValueError:
            continue
    if ice.fingerprints and not fingerprints:
        raise bad_request("no usable DTLS fingerprint (sha-1, sha-256, sha-384 or sha-512)")
    candidates = []
    for c in ice.candidates:
        if c.type not in desc.CANDIDATE_TYPES:
            raise bad_request(f"unknown candidate type {c.type!r}")
        if c.protocol.lower() != "udp" or c.component != 1:
            continue  # BUNDLE with rtcp-mux over UDP: nothing else can carry this transport
        try:
            ip = ipaddress.ip_address(c.ip)
        except ValueError:
            continue  # mDNS (.local) or a host name: unusable, as in JVB without resolve-remote-candidates
        candidates.append(
            desc.Candidate(
                ip=ip,
                port=c.port,
                priority=c.priority,
                type=c.type,
                foundation=c.foundation,
                generation=c.generation or 0,
            )
        )
    return desc.TransportDescription(
        ufrag=ice.ufrag,
        pwd=ice.pwd,
        fingerprints=tuple(fingerprints),
        candidates=tuple(candidates),
        rtcp_mux=ice.rtcp_mux,
    )


def _bridge_sources(endpoint_id: str, sources: tuple[MediaSource, ...]) -> tuple[desc.Source, ...]:
    """Colibri2 media-sources -> Bridge Sources (the complete set; the Bridge replaces, never merges)."""
    out = []
    for ms in sources:
        if ms.type not in ("audio", "video"):
            raise bad_request(f"media-source {ms.id} of {endpoint_id} has unsupported type {ms.type!r}")
        ssrcs = tuple(dict.fromkeys(s.ssrc for s in ms.sources if s.ssrc is not None))
        groups = tuple(
            desc.SsrcGroup(cast(Literal["FID", "SIM"], g.semantics), g.ssrcs)
            for g in ms.ssrc_groups
            if g.semantics in ("FID", "SIM")  # FEC-FR: kept in the model, not used by the packet path
        )
        for g in groups:
            if not set(g.ssrcs) <= set(ssrcs):
                raise bad_request(f"ssrc-group {g.semantics} of {ms.id} names an SSRC that is not a source")
        # A screen share's desktop type comes with its sources (as Jicofo sends them), before the channel's.
        signalled = next((s.video_type for s in ms.sources if s.video_type), None)
        video_type = (
            SIGNALLED_VIDEO_TYPES.get(signalled.lower()) if signalled and ms.type == "video" else None
        )
        out.append(
            desc.Source(
                kind=cast(desc.MediaKind, ms.type),
                ssrcs=ssrcs,
                name=ms.id,
                groups=groups,
                video_type=video_type,
            )
        )
    return tuple(out)


#: Colibri2 `videoType` values we act on (case-insensitive, as JVB reads them); others are left unset.
SIGNALLED_VIDEO_TYPES: dict[str, str] = {
    "camera": "camera",
    "desktop": "desktop",
    "desktop_high_fps": "desktop_high_fps",
    "disabled": "disabled",
    "none": "disabled",
}
