"""Jingle with the participants (docs/jitsi-protocol.md 5.3-5.5): invites, their answers, and sources
kept in step.

Once `min_participants` are in a ready room, each participant gets an endpoint on the room's bridge and then
a session-initiate with the bridge's transport and everyone else's sources. session-accept, transport-info
and source-add/remove go on to the bridge, and every other active session hears of the change as
source-add/source-remove. session-terminate ends a session, or restarts it within Jicofo's rate limits.

Receivers are told a view of the others' sources (simulcast stripped by `sources.strip_simulcast` unless
the `strip_simulcast` setting is off), never the bridge's whole set; `Session.sent` holds those views, so a
source-remove takes back exactly what was added.

A session-initiate that gets no session-accept within `session_accept_timeout` (counted from the client's
ack, or from the IQ's timeout, which is also when it counts from if the IQ never went out) is retried once
with a new session on a new endpoint; if that one is not accepted either, the participant is given up:
logged with room and nick, counted (`session_accept_timeouts`, `sessions_never_accepted`), its session
terminated and its endpoint expired.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from colibri2 import model as c2
from signaling.focus import media, stanzas
from signaling.focus.bridges import Bridges
from signaling.focus.colibri import Colibri
from signaling.focus.logids import log_ids
from signaling.focus.model import Participant, Room, Session, Shared, find_participant
from signaling.focus.sources import (
    diff_sources,
    inline_sources,
    jingle_transport,
    merge_sources,
    named_sources,
    remove_ssrcs,
    strip_simulcast,
)
from signaling.focus.stanzas import FEATURE_JSON_SOURCES, NS_CLIENT, q
from signaling.jingle.model import (
    JVB_OWNER,
    BridgeSession,
    Content,
    EndpointSources,
    Group,
    Jingle,
    JingleError,
    Reason,
    SourcesMap,
)
from signaling.jingle.xml import build_jingle, parse_jingle, unknown_session_error

log = logging.getLogger(__name__)

#: New sessions offered to a participant whose session-initiate was not accepted in time, before giving up.
ACCEPT_RETRIES = 1


@dataclass(frozen=True, slots=True)
class _JingleCtx:
    """Who a Jingle request is about: its room, participant, session, and the parsed payload."""

    room: Room
    p: Participant
    session: Session
    jingle: Jingle


class Sessions:
    """Invites participants onto the room's bridge and speaks Jingle with them."""

    def __init__(self, shared: Shared, colibri: Colibri, bridges: Bridges) -> None:
        self._shared = shared
        self._config = shared.config
        self._stats = shared.stats
        self._out = shared.out
        self._colibri = colibri
        self._bridges = bridges
        #: Pending sessions with an accept deadline, by sid; an entry whose session is no longer pending
        #: (accepted, ended, its participant or room gone) is dropped when its deadline comes.
        self._awaiting: dict[str, tuple[Room, Participant, Session]] = {}

    # ---- inviting (5.3-5.4)

    def invite_all(self, now: float) -> None:
        for room in list(self._shared.rooms.values()):
            self.maybe_invite(now, room)

    def maybe_invite(self, now: float, room: Room) -> None:
        if room.state != "ready" or len(room.participants) < self._config.min_participants:
            return
        waiting = [
            p
            for p in room.participants.values()
            if p.session is None
            and p.endpoint is None
            and not p.declined
            and not p.unallocatable
            and p.features is not None
        ]
        room_left = self._config.max_endpoints_per_conference - sum(
            1 for p in room.participants.values() if p.endpoint is not None
        )
        if len(waiting) > room_left:
            # The rest wait until someone leaves (then the room tries again).
            for p in waiting[max(room_left, 0) :]:
                if not p.over_quota:
                    p.over_quota = True
                    self._stats["endpoints_over_quota"] += 1
            waiting = waiting[: max(room_left, 0)]
        if not waiting:
            return
        current = self._shared.bridges.get(room.bridge) if room.bridge is not None else None
        if room.bridge is not None and (current is None or not current.usable):
            self._bridges.move_room(now, room)  # its bridge became unusable without a failure being seen
            return
        bridge = self._bridges.choose(now, room)
        if bridge is None:
            self._stats["no_bridge"] += 1
            self._set_bridge_not_available(room, True)
            return
        self._set_bridge_not_available(room, False)
        for p in waiting:
            self._colibri.allocate(now, room, p)

    def _set_bridge_not_available(self, room: Room, value: bool) -> None:
        if room.bridge_not_available == value:
            return
        room.bridge_not_available = value
        children = [ET.Element(q(NS_CLIENT, "bridgeNotAvailable"))] if value else []
        self._out.send(stanzas.presence(room.occupant(self._config.nickname), None, *children))

    def reinvite_all(self, now: float, room: Room) -> None:
        """The room moved off its bridge: every participant starts over with a new session."""
        for p in room.participants.values():
            p.endpoint = None
            # A client answers a new session-initiate with a new PeerConnection (new SSRCs): its old sources
            # must not be announced to the others again; its session-accept brings the current ones.
            p.sources = EndpointSources()
            if p.session is not None:
                self._stats["participants_reinvited"] += 1
                self.terminate(room, p, "bridge failure: reinvite")
        self.maybe_invite(now, room)

    def reinvite_one(self, now: float, room: Room, nick: str) -> None:
        """The bridge lost one endpoint (unknown_endpoint): re-invite only that participant."""
        p = room.participants.get(nick)
        if p is None:
            return
        self._stats["participants_reinvited"] += 1
        p.endpoint = None
        self.terminate(room, p, "endpoint lost: reinvite")
        self.maybe_invite(now, room)

    def initiate(self, now: float, room: Room, p: Participant, ice: c2.IceUdpTransport) -> None:
        """The bridge has `p`'s endpoint: session-initiate with its transport and everyone else's sources."""
        json = self._config.use_json_sources and FEATURE_JSON_SOURCES in (p.features or frozenset())
        session = Session(sid=self._out.new_id()[:16], json=json)
        p.session = session
        p.declined = False
        # Watched from here, before anything can fail: should the initiate never go out (a bug, a source set
        # it cannot encode), the deadline still comes. The ack or the IQ's timeout sets the real one.
        session.accept_deadline = now + self._config.iq_timeout + self._config.session_accept_timeout
        self._awaiting[session.sid] = (room, p, session)
        remote = self._desired_sources(room, p)
        session.sent = dict(remote)
        transport = jingle_transport(ice)
        contents = []
        for kind in ("audio", "video"):
            description = media.description(kind, self._config.enable_opus_red)
            if not json:
                srcs, groups = inline_sources(remote.items(), kind)
                description = replace(description, sources=srcs, ssrc_groups=groups)
            contents.append(
                Content(
                    name=kind,
                    creator="initiator",
                    senders="both",
                    description=description,
                    transport=transport,
                )
            )
        jingle = Jingle(
            action="session-initiate",
            sid=session.sid,
            initiator=self._config.focus_full_jid,
            contents=tuple(contents),
            groups=(Group("BUNDLE", ("audio", "video")),),
            bridge_session=BridgeSession(id=room.bridge_session),
            json_sources=tuple(remote.items()) if json else None,
        )
        self._stats["sessions_initiated"] += 1
        log.info(
            "focus: session-initiate to %s/%s (sid %s)",
            room.jid,
            p.nick,
            session.sid,
            extra=log_ids(room, p.nick),
        )
        self._out.request(
            now,
            "set",
            room.occupant(p.nick),
            build_jingle(jingle),
            on_result=lambda now, _r: self._await_accept(now, room, p, session),
            on_error=lambda now, err: self._initiate_failed(now, room, p, session, err),
        )

    def _await_accept(self, now: float, room: Room, p: Participant, session: Session) -> None:
        """The session-initiate was acked (or its IQ timed out): the accept is due within the timeout."""
        if p.session is session and session.state == "pending":
            session.accept_deadline = now + self._config.session_accept_timeout
            self._awaiting[session.sid] = (room, p, session)

    def _initiate_failed(
        self, now: float, room: Room, p: Participant, session: Session, err: ET.Element | None
    ) -> None:
        if err is None:
            # Jicofo treats a session-initiate timeout as success: the accept may still come, but not forever.
            self._await_accept(now, room, p, session)
            return
        if p.session is not session:
            return
        log.warning(
            "focus: %s refused session-initiate: %s",
            p.nick,
            stanzas.error_condition(err),
            extra=log_ids(room, p.nick),
        )
        self._stats["sessions_refused"] += 1
        p.session = None
        p.declined = True
        self.drop_endpoint(now, room, p)

    def terminate(self, room: Room, p: Participant, text: str, condition: str = "success") -> None:
        session, p.session = p.session, None
        if session is None:
            return
        self._awaiting.pop(session.sid, None)
        jingle = Jingle(
            action="session-terminate",
            sid=session.sid,
            initiator=self._config.focus_full_jid,
            reason=Reason(condition, text),
            bridge_session=BridgeSession(id=room.bridge_session),
        )
        self._out.send(stanzas.iq("set", room.occupant(p.nick), self._out.new_id(), build_jingle(jingle)))

    def drop_endpoint(self, now: float, room: Room, p: Participant) -> None:
        """The participant's endpoint and sources go away (its session ended, or it left)."""
        if p.endpoint is not None:
            self._colibri.expire_endpoints(now, room, [p.nick])
        p.endpoint = None
        p.sources = EndpointSources()
        self.sync_all(now, room)

    # ---- sessions that are never accepted

    def reset(self) -> None:
        self._awaiting.clear()

    def next_deadline(self) -> float | None:
        return min(
            (s.accept_deadline for _, _, s in self._awaiting.values() if s.accept_deadline is not None),
            default=None,
        )

    def handle_timeout(self, now: float) -> None:
        for sid, (room, p, session) in list(self._awaiting.items()):
            if session.accept_deadline is None or session.accept_deadline > now:
                continue
            del self._awaiting[sid]
            live = (
                self._shared.rooms.get(room.jid) is room
                and room.participants.get(p.nick) is p
                and p.session is session
                and session.state == "pending"
            )
            if live:
                self._not_accepted(now, room, p, session)

    def _not_accepted(self, now: float, room: Room, p: Participant, session: Session) -> None:
        """No session-accept in time. The client acked, so it is there but could not apply the offer (a
        description its browser refused) or lost it. Once: start over with a new session on a new endpoint,
        as a restart request does. Then give up, loudly: a participant without media must not go unseen."""
        p.unaccepted += 1
        self._stats["session_accept_timeouts"] += 1
        timeout = self._config.session_accept_timeout
        if p.unaccepted <= ACCEPT_RETRIES:
            log.warning(
                "focus: %s in %s sent no session-accept within %g s (sid %s); retrying with a new session",
                p.nick,
                room.jid,
                timeout,
                session.sid,
                extra=log_ids(room, p.nick),
            )
            self._stats["sessions_retried"] += 1
            self.terminate(room, p, "no session-accept: retrying with a new session")
            self.drop_endpoint(now, room, p)
            self.maybe_invite(now, room)
            return
        log.error(
            "focus: %s in %s sent no session-accept within %g s (sid %s), after %d retry; giving up: it has "
            "no media",
            p.nick,
            room.jid,
            timeout,
            session.sid,
            ACCEPT_RETRIES,
            extra=log_ids(room, p.nick),
        )
        self._stats["sessions_never_accepted"] += 1
        p.unaccepted = 0
        self.terminate(room, p, "no session-accept", condition="timeout")
        p.declined = True
        self.drop_endpoint(now, room, p)

    # ---- sources kept in step

    def _desired_sources(self, room: Room, p: Participant) -> dict[str, EndpointSources]:
        """Everything `p` should know: every other participant's sources as receivers see them (simulcast
        stripped unless configured otherwise) and the bridge's feedback sources."""
        view = strip_simulcast if self._config.strip_simulcast else (lambda es: es)
        out = {o.nick: view(o.sources) for o in room.participants.values() if o is not p and o.sources}
        if room.feedback:
            out[JVB_OWNER] = room.feedback
        return out

    def sync_all(self, now: float, room: Room) -> None:
        for p in room.participants.values():
            self._sync(now, room, p)

    def _sync(self, now: float, room: Room, p: Participant) -> None:
        """source-remove / source-add so that an active session knows exactly the desired sources."""
        session = p.session
        if session is None or session.state != "active":
            return
        desired = self._desired_sources(room, p)
        removed: list[tuple[str, EndpointSources]] = []
        added: list[tuple[str, EndpointSources]] = []
        for owner in sorted(set(desired) | set(session.sent)):
            old, new = session.sent.get(owner, EndpointSources()), desired.get(owner, EndpointSources())
            gone, fresh = diff_sources(old, new), diff_sources(new, old)
            if gone:
                removed.append((owner, gone))
            if fresh:
                added.append((owner, fresh))
        session.sent = dict(desired)
        for action, changes in (("source-remove", removed), ("source-add", added)):
            if not changes:
                continue
            self._stats[action.replace("-", "_") + "_sent"] += 1
            self._send_sources(now, room, p, session=session, action=action, changes=tuple(changes))

    def _send_sources(
        self, now: float, room: Room, p: Participant, *, session: Session, action: str, changes: SourcesMap
    ) -> None:
        contents = []
        for kind in ("audio", "video"):
            srcs, groups = inline_sources(changes, kind)
            if srcs or groups or session.json:
                description = media.description(kind, self._config.enable_opus_red)
                description = replace(
                    description,
                    payload_types=(),
                    rtp_hdrexts=(),
                    extmap_allow_mixed=False,
                    rtcp_mux=False,
                    sources=() if session.json else srcs,
                    ssrc_groups=() if session.json else groups,
                )
                contents.append(Content(name=kind, creator="initiator", description=description))
        jingle = Jingle(
            action="source-add" if action == "source-add" else "source-remove",
            sid=session.sid,
            initiator=self._config.focus_full_jid,
            contents=tuple(contents),
            json_sources=changes if session.json else None,
        )
        self._out.fire(now, "set", room.occupant(p.nick), build_jingle(jingle))

    # ---- Jingle from clients (5.5)

    def handle_jingle(self, now: float, request: ET.Element) -> None:
        try:
            jingle = parse_jingle(request)
        except JingleError as exc:
            self._stats["errors_bad_request"] += 1
            log.info("focus: malformed Jingle from %s: %s", request.get("from"), exc.text)
            self._out.send(stanzas.error(request, exc.condition, exc.text))
            return
        found = find_participant(self._shared.rooms, request.get("from", ""))
        session = found[1].session if found is not None else None
        if found is None or session is None or session.sid != jingle.sid:
            self._stats["errors_unknown_session"] += 1
            reply = stanzas.iq("error", request.get("from", ""), request.get("id", ""))
            reply.append(unknown_session_error())
            self._out.send(reply)
            return
        room, p = found
        handlers: dict[str, Callable[[float, ET.Element, _JingleCtx], None]] = {
            "session-accept": self._on_session_accept,
            "transport-info": self._on_transport_info,
            "source-add": self._on_source_add,
            "source-remove": self._on_source_remove,
            "session-terminate": self._on_session_terminate,
            "session-info": self._on_session_info,
        }
        handler = handlers.get(jingle.action)
        if handler is None:
            self._stats["errors_bad_request"] += 1
            self._out.send(
                stanzas.error(request, "feature-not-implemented", f"unsupported action {jingle.action}")
            )
            return
        handler(now, request, _JingleCtx(room, p, session, jingle))

    def _checked_sources(self, room: Room, p: Participant, sources: EndpointSources) -> str | None:
        """Why `sources` (the participant's whole new set) cannot be accepted, or None."""
        if len(sources.ssrcs) > self._config.max_ssrcs_per_user:
            return f"more than {self._config.max_ssrcs_per_user} SSRCs"
        for other in room.participants.values():
            if other is not p and (clash := sources.ssrcs & other.sources.ssrcs):
                return f"SSRC {min(clash)} is already used by {other.nick}"
        if room.feedback and (clash := sources.ssrcs & room.feedback.ssrcs):
            return f"SSRC {min(clash)} is the bridge's"
        return None

    def _refuse(self, request: ET.Element, problem: str) -> None:
        self._stats["errors_bad_request"] += 1
        self._out.send(stanzas.error(request, "bad-request", problem))

    def _on_session_accept(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        room, p, session, jingle = ctx.room, ctx.p, ctx.session, ctx.jingle
        if session.state == "active":
            self._out.send(stanzas.error(request, "bad-request", "the session was already accepted"))
            return
        sources = named_sources(p.nick, jingle.sources(p.nick))
        problem = self._checked_sources(room, p, sources)
        if problem is not None:
            self._refuse(request, problem)
            return
        self._out.send(stanzas.result(request))
        session.state = "active"
        self._awaiting.pop(session.sid, None)
        p.unaccepted = 0
        p.sources = sources
        self._stats["sessions_accepted"] += 1
        log.info(
            "focus: %s accepted (sid %s), %d SSRCs",
            p.nick,
            session.sid,
            len(sources.ssrcs),
            extra=log_ids(room, p.nick),
        )
        descriptions = tuple(c.description for c in jingle.contents if c.description is not None)
        medias = media.answered_medias(self._config.enable_opus_red, descriptions)
        self._colibri.update(now, room, p, transport=jingle.transport(), sources=True, medias=medias)
        self.sync_all(now, room)

    def _on_session_info(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        asked = ctx.jingle.bridge_session
        if asked is None or not asked.ice_restart:
            self._out.send(stanzas.result(request))  # ICE state reports; restarts come as session-terminate
            return
        room, p, session = ctx.room, ctx.p, ctx.session
        # Refused, the client falls back to a session restart (session-terminate asking for one).
        if not self._config.enable_ice_restart:
            self._out.send(stanzas.error(request, "feature-not-implemented", "ICE restart is not enabled"))
            return
        if session.state != "active" or p.endpoint != "allocated":
            self._out.send(stanzas.error(request, "unexpected-request", "no active session to restart"))
            return
        if asked.id != room.bridge_session:
            self._out.send(stanzas.error(request, "item-not-found", "not the room's bridge session"))
            return
        if not self._within_restart_limits(now, p.ice_restarts):
            self._stats["ice_restarts_rate_limited"] += 1
            self._out.send(stanzas.error(request, "resource-constraint", "ICE restarts are rate limited"))
            return
        self._stats["ice_restarts"] += 1
        self._out.send(stanzas.result(request))
        log.info(
            "focus: %s asks for an ICE restart (sid %s)", p.nick, session.sid, extra=log_ids(room, p.nick)
        )
        self._colibri.ice_restart(now, room, p)

    def send_ice_restart(
        self, now: float, room: Room, p: Participant, ice: c2.IceUdpTransport | None
    ) -> None:
        """The bridge's new transport for `p`'s endpoint, to the client as a transport-info tagged with its
        `ice-generation` (docs/jitsi-protocol.md 5.5); the client answers with its own new credentials."""
        session = p.session
        if session is None or session.state != "active":
            return
        if ice is None or ice.ice_generation is None or not ice.ufrag or not ice.pwd:
            self._stats["ice_restarts_refused"] += 1
            log.warning("focus: the bridge did not restart %s's ICE", p.nick, extra=log_ids(room, p.nick))
            return
        transport = jingle_transport(ice)
        jingle = Jingle(
            action="transport-info",
            sid=session.sid,
            initiator=self._config.focus_full_jid,
            contents=tuple(
                Content(name=kind, creator="initiator", transport=transport) for kind in ("audio", "video")
            ),
        )
        self._out.send(stanzas.iq("set", room.occupant(p.nick), self._out.new_id(), build_jingle(jingle)))

    def _on_transport_info(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        transport = ctx.jingle.transport()
        if transport is None:
            self._out.send(stanzas.error(request, "bad-request", "transport-info without a transport"))
            return
        self._out.send(stanzas.result(request))
        self._colibri.update(now, ctx.room, ctx.p, transport=transport, sources=False)

    def _on_source_add(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        room, p, jingle = ctx.room, ctx.p, ctx.jingle
        add = named_sources(p.nick, jingle.sources(p.nick))
        merged = merge_sources(p.sources, add)
        problem = self._checked_sources(room, p, merged)
        if problem is None and add.ssrcs & p.sources.ssrcs:
            problem = f"SSRC {min(add.ssrcs & p.sources.ssrcs)} was already added"
        if problem is not None:
            self._refuse(request, problem)
            return
        self._out.send(stanzas.result(request))
        p.sources = merged
        self._colibri.update(now, room, p, transport=None, sources=True)
        self.sync_all(now, room)

    def _on_source_remove(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        room, p, jingle = ctx.room, ctx.p, ctx.jingle
        gone = jingle.sources(p.nick).ssrcs
        self._out.send(stanzas.result(request))
        p.sources = remove_ssrcs(p.sources, gone)
        self._colibri.update(now, room, p, transport=None, sources=True)
        self.sync_all(now, room)

    def _within_restart_limits(self, now: float, history: deque[float]) -> bool:
        """Jicofo's restart-request-rate-limits over `history` (when the last minute's requests came):
        records `now` and says yes when it is `restart_min_interval` after the last and under
        `restart_max_per_minute`."""
        while history and history[0] <= now - 60.0:
            history.popleft()
        too_soon = bool(history) and now - history[-1] < self._config.restart_min_interval
        if too_soon or len(history) >= self._config.restart_max_per_minute:
            return False
        history.append(now)
        return True

    def _on_session_terminate(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        room, p, jingle = ctx.room, ctx.p, ctx.jingle
        restart = jingle.bridge_session is not None and bool(jingle.bridge_session.restart)
        if restart:
            if not self._within_restart_limits(now, p.restarts):
                self._stats["restarts_rate_limited"] += 1
                self._out.send(
                    stanzas.error(request, "resource-constraint", "restart requests are rate limited")
                )
                return
            self._stats["restarts"] += 1
        self._out.send(stanzas.result(request))
        log.info(
            "focus: %s ended its session%s",
            p.nick,
            " and asks for a restart" if restart else "",
            extra=log_ids(room, p.nick),
        )
        p.session = None
        self._awaiting.pop(ctx.session.sid, None)
        p.declined = not restart
        self.drop_endpoint(now, room, p)
        if restart:
            self.maybe_invite(now, room)
