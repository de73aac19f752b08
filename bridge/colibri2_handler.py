"""Sans-IO Colibri2 handler: applies a conference-modify to the real Bridge, returns conference-modified.

No XMPP and no HTTP here: the caller parses (colibri2.xml / colibri2.json), calls `handle`, and sends the
result or the raised `Colibri2Error` back. Errors follow JVB exactly (docs/jitsi-protocol.md 2.3
restrictions, 2.5 table).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from bridge import description as desc
from bridge.bridge import Bridge, BridgeError, Conference
from bridge.bridge import Endpoint as BridgeEndpoint
from bridge.channel import colibri_ws_url
from colibri2.model import (
    Candidate,
    Colibri2Error,
    ConferenceModified,
    ConferenceModify,
    Endpoint,
    Fingerprint,
    IceUdpTransport,
    Media,
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

SCTP_PORT = 5000  # the only SCTP port JVB accepts
_CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
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


@dataclass(slots=True)
class EndpointState:
    """What Colibri2 told us about an endpoint (policy input); force-mute is also applied to its Endpoint."""

    stats_id: str | None = None
    muc_role: str | None = None
    capabilities: tuple[str, ...] = ()
    medias: tuple[Media, ...] = ()
    force_mute_audio: bool = False
    force_mute_video: bool = False
    initial_last_n: int | None = None
    #: Idle expiry: when `packets_in` of the transport last changed (None: not observed yet).
    last_activity: float | None = None
    last_packets_in: int = -1


@dataclass(slots=True)
class ConferenceState:
    conference: Conference
    name: str | None
    endpoints: dict[str, EndpointState] = field(default_factory=dict)
    #: Idle expiry: the last check that saw an endpoint here (None: not observed yet).
    last_activity: float | None = None


class Colibri2Handler:
    """Colibri2 for one Bridge. `handle()` either returns the response or raises Colibri2Error."""

    def __init__(
        self,
        bridge: Bridge,
        *,
        graceful_shutdown: bool = False,
        sctp_enabled: bool = False,
        web_socket_bases: tuple[str, ...] = (),
        on_change: Callable[[Conference], None] | None = None,
        limits: Colibri2Limits | None = None,
    ) -> None:
        self.bridge = bridge
        self.limits = limits or Colibri2Limits()
        #: Requests refused at a limit, by limit (`/colibri/stats`, `/metrics`).
        self.refused: Counter[str] = Counter()
        #: While true, conference creation is refused (JVB `graceful_shutdown`).
        self.graceful_shutdown = graceful_shutdown
        #: The native core has no SCTP data channel yet; when false, <sctp> requests are refused like JVB's
        #: `videobridge.sctp.enabled=false`.
        self.sctp_enabled = sctp_enabled
        #: `ws[s]://<domain>/colibri-ws/<server-id>`, one per websockets domain; empty: no <web-socket>.
        self.web_socket_bases = web_socket_bases
        #: Called after every request that reached a conference (endpoints or sources may have changed, or
        #: the conference closed), so the bridge channel can follow. Keeps this handler free of I/O.
        self.on_change = on_change
        self._conferences: dict[str, ConferenceState] = {}

    # -- queries ----------------------------------------------------------------------------------------

    def conference(self, meeting_id: str) -> Conference | None:
        state = self._live(meeting_id)
        return state.conference if state is not None else None

    def endpoint_state(self, meeting_id: str, endpoint_id: str) -> EndpointState | None:
        state = self._live(meeting_id)
        return state.endpoints.get(endpoint_id) if state is not None else None

    def _live(self, meeting_id: str) -> ConferenceState | None:
        state = self._conferences.get(meeting_id)
        if state is not None and state.conference.closed:
            # Closed behind our back (Bridge.stop, an operator): forget it.
            del self._conferences[meeting_id]
            return None
        return state

    # -- idle expiry -------------------------------------------------------------------------------------

    def expire_idle(
        self, now: float, packets_in: Mapping[int, int], timeout: float
    ) -> list[tuple[str, str | None]]:
        """Expires what has been idle for `timeout` seconds (jvb `entity-expiration.timeout`).

        An endpoint is idle while its transport's `packets_in` (native per-transport counter; any STUN, DTLS
        or media counts) does not change; a conference is idle while it has no endpoint. Call this
        periodically; the first call that sees an entity starts its clock. Returns (meeting-id, endpoint-id)
        for each expired endpoint and (meeting-id, None) for each expired conference.
        """
        expired: list[tuple[str, str | None]] = []
        for meeting_id in list(self._conferences):
            state = self._live(meeting_id)
            if state is None:
                continue
            before = len(expired)
            for ep in list(state.conference.endpoints.values()):
                info = state.endpoints.setdefault(ep.id, EndpointState())
                count = packets_in.get(ep.transport_id, 0)
                if info.last_activity is None or count != info.last_packets_in:
                    info.last_activity = now
                    info.last_packets_in = count
                elif now - info.last_activity >= timeout:
                    ep.close()
                    state.endpoints.pop(ep.id, None)
                    expired.append((meeting_id, ep.id))
            if state.conference.endpoints or state.last_activity is None:
                state.last_activity = now
            elif now - state.last_activity >= timeout:
                self._close(meeting_id, state)
                expired.append((meeting_id, None))
            if len(expired) > before and self.on_change is not None:
                self.on_change(state.conference)
        return expired

    # -- the request --------------------------------------------------------------------------------------

    def handle(self, request: ConferenceModify) -> ConferenceModified:
        self._validate(request)
        state, created = self._conference_for(request)
        try:
            return self._apply(request, state, created)
        except (Colibri2Error, BridgeError) as exc:
            if created and not state.conference.endpoints:
                # A create refused half-way must not leave an empty conference behind.
                self._close(request.meeting_id, state)
            if isinstance(exc, BridgeError):
                # The Bridge refused what the request asked for (bad description, closed object).
                raise bad_request(str(exc)) from None
            raise
        finally:
            # Also after an error: a refused request may have applied its first endpoints already.
            if self.on_change is not None:
                self.on_change(state.conference)

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

    def _conference_for(self, request: ConferenceModify) -> tuple[ConferenceState, bool]:
        existing = self._live(request.meeting_id)
        if not request.create:
            if existing is None:
                raise Colibri2Error(
                    "item-not-found",
                    f"Conference not found for ID: {request.meeting_id}",
                    Reason.CONFERENCE_NOT_FOUND,
                )
            return existing, False
        if self.graceful_shutdown:
            raise Colibri2Error("service-unavailable", "In graceful shutdown", Reason.GRACEFUL_SHUTDOWN)
        if existing is not None:
            raise Colibri2Error(
                "conflict",
                f"Conference already exists for ID: {request.meeting_id}",
                Reason.CONFERENCE_ALREADY_EXISTS,
            )
        # Check the endpoints before creating anything, so a refused create leaves nothing behind.
        for ep in request.endpoints:
            if ep.create:
                self._check_create(ep)
        live = sum(1 for m in list(self._conferences) if self._live(m) is not None)
        if live >= self.limits.max_conferences:
            raise self._at_limit("conferences", f"This bridge hosts {live} conferences (the maximum)")
        state = ConferenceState(
            conference=self.bridge.create_conference(meeting_id=request.meeting_id),
            name=request.name,
        )
        self._conferences[request.meeting_id] = state
        return state, True

    def _apply(self, request: ConferenceModify, state: ConferenceState, created: bool) -> ConferenceModified:
        endpoints: list[Endpoint] = []
        feedback = False
        for ep in request.endpoints:
            answer, was_created = self._endpoint(state, ep)
            feedback = feedback or was_created
            if answer is not None:
                endpoints.append(answer)
        if request.expire:
            self._close(request.meeting_id, state)
        elif not request.create and not state.conference.endpoints:
            # JVB expires a conference that a non-create request leaves without endpoints or relays.
            self._close(request.meeting_id, state)
        sources = self._feedback_sources(state) if (created or feedback) and not request.expire else None
        return ConferenceModified(endpoints=tuple(endpoints), sources=sources)

    def _close(self, meeting_id: str, state: ConferenceState) -> None:
        state.conference.close()
        self._conferences.pop(meeting_id, None)

    # -- one endpoint -------------------------------------------------------------------------------------

    def _endpoint(self, state: ConferenceState, request: Endpoint) -> tuple[Endpoint | None, bool]:
        conference = state.conference
        existing = conference.get_endpoint(request.id)
        if request.create:
            if existing is not None:
                raise Colibri2Error("conflict", f"Endpoint with ID {request.id} already exists")
            self._check_create(request)
            if len(conference.endpoints) >= self.limits.max_endpoints_per_conference:
                raise self._at_limit(
                    "endpoints_per_conference",
                    f"Conference {state.conference.meeting_id} has "
                    f"{self.limits.max_endpoints_per_conference} endpoints",
                )
            ep = conference.create_endpoint(request.id)
            info = EndpointState(
                stats_id=request.stats_id,
                muc_role=request.muc_role,
                capabilities=request.capabilities,
                medias=request.medias,
            )
            state.endpoints[request.id] = info
            self._update(ep, info, request)
            return Endpoint(id=request.id, transport=self._local_transport(ep, request.transport)), True
        if existing is None:
            if _is_expire_or_force_mute_only(request):
                return None, False  # JVB ignores these for endpoints it does not know
            raise Colibri2Error(
                "item-not-found",
                f"Endpoint not found for ID: {request.id}",
                Reason.UNKNOWN_ENDPOINT,
                endpoint_id=request.id,
            )
        if request.expire:
            existing.close()
            state.endpoints.pop(request.id, None)
            return Endpoint(id=request.id, expire=True), False
        info = state.endpoints.setdefault(request.id, EndpointState())
        if request.stats_id is not None:
            info.stats_id = request.stats_id
        if request.medias:
            info.medias = request.medias
        self._update(existing, info, request)
        return Endpoint(id=request.id), False

    def _at_limit(self, limit: str, text: str) -> Colibri2Error:
        self.refused[limit] += 1
        return Colibri2Error("resource-constraint", text)

    def _check_create(self, request: Endpoint) -> None:
        if request.transport is None:
            raise bad_request(f"Attempt to create endpoint {request.id} with no <transport>")
        if "source-names" not in request.capabilities:
            raise bad_request(f"Endpoint {request.id} does not support source names")
        self._check_sctp(request)
        self._check_visitor(request)

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

    def _check_visitor(self, request: Endpoint) -> None:
        if request.muc_role == "visitor" and request.sources:
            raise bad_request(f"Visitor endpoint {request.id} may not send sources")

    def _update(self, ep: BridgeEndpoint, info: EndpointState, request: Endpoint) -> None:
        if not request.create:
            self._check_sctp(request)
            if info.muc_role == "visitor" and request.sources:
                raise bad_request(f"Visitor endpoint {request.id} may not send sources")
        if request.force_mute is not None:
            if request.force_mute.audio is not None:
                info.force_mute_audio = request.force_mute.audio
            if request.force_mute.video is not None:
                info.force_mute_video = request.force_mute.video
            # First, so the shard mutes before it learns this request's sources; it holds whether or not
            # sources or a connection exist yet.
            ep.set_force_mute(info.force_mute_audio, info.force_mute_video)
        if request.transport is not None and request.transport.ice is not None:
            remote = _remote_description(request.transport.ice)
            if remote is not None:
                ep.set_remote_description(remote)
        if request.sources is not None:
            ssrcs = {s.ssrc for ms in request.sources for s in ms.sources if s.ssrc is not None}
            if len(ssrcs) > self.limits.max_ssrcs_per_endpoint:
                raise self._at_limit(
                    "ssrcs_per_endpoint",
                    f"Endpoint {request.id} signals {len(ssrcs)} SSRCs "
                    f"(at most {self.limits.max_ssrcs_per_endpoint})",
                )
            ep.set_sources(_bridge_sources(request.id, request.sources))
        if request.initial_last_n is not None:
            info.initial_last_n = request.initial_last_n

    def _local_transport(self, ep: BridgeEndpoint, requested: Transport | None) -> Transport:
        local = ep.local_description()
        ice = IceUdpTransport(
            ufrag=local.ufrag,
            pwd=local.pwd,
            candidates=tuple(
                Candidate(
                    component=c.component,
                    foundation=c.foundation,
                    generation=c.generation,
                    id=f"{ep.id}-{i}",
                    ip=c.ip,
                    network=0,
                    port=c.port,
                    priority=c.priority,
                    protocol=c.protocol,
                    type=c.type,
                )
                for i, c in enumerate(local.candidates)
            ),
            rtcp_mux=local.rtcp_mux,
            fingerprints=tuple(Fingerprint(fp.hash, fp.value, fp.setup) for fp in local.fingerprints),
            web_sockets=tuple(
                colibri_ws_url(base, ep.conference.id, ep.id, ep.pwd) for base in self.web_socket_bases
            ),
        )
        sctp = requested.sctp if requested is not None else None
        return Transport(
            ice=ice,
            sctp=Sctp(port=SCTP_PORT, role="server") if sctp is not None else None,
        )

    def _feedback_sources(self, state: ConferenceState) -> tuple[MediaSource, ...]:
        # The Conference owns these SSRCs (the native Router sends its RTCP from them); we only signal them.
        conf = state.conference
        return (
            MediaSource("audio", "jvb-a0", sources=(SourceDesc(conf.feedback_audio_ssrc, "jvb-a0"),)),
            MediaSource("video", "jvb-v0", sources=(SourceDesc(conf.feedback_video_ssrc, "jvb-v0"),)),
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


def _remote_description(ice: IceUdpTransport) -> desc.TransportDescription | None:
    """The client's ICE transport as the Bridge takes it; None without credentials (trickle only)."""
    if ice.ufrag is None or ice.pwd is None:
        if ice.fingerprints:
            raise bad_request("transport has fingerprints but no ICE ufrag/pwd")
        return None
    fingerprints = []
    for fp in ice.fingerprints:
        setup = fp.setup or "active"
        if setup not in ("actpass", "active", "passive"):
            raise bad_request(f"unknown DTLS setup {fp.setup!r}")
        fingerprints.append(desc.Fingerprint(fp.hash, fp.value, cast(desc.Setup, setup)))
    candidates = []
    for c in ice.candidates:
        if c.type not in _CANDIDATE_TYPES:
            raise bad_request(f"unknown candidate type {c.type!r}")
        try:
            ipaddress.ip_address(c.ip)
        except ValueError:
            continue  # mDNS (.local) or a host name: unusable, as in JVB without resolve-remote-candidates
        candidates.append(
            desc.Candidate(
                ip=c.ip,
                port=c.port,
                priority=c.priority,
                type=cast(desc.CandidateType, c.type),
                foundation=c.foundation,
                component=c.component,
                protocol=c.protocol,
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


def _bridge_sources(endpoint_id: str, sources: tuple[MediaSource, ...]) -> list[desc.Source]:
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
        out.append(desc.Source(kind=cast(desc.MediaKind, ms.type), ssrcs=ssrcs, name=ms.id, groups=groups))
    return out
