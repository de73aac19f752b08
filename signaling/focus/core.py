"""The focus, sans-IO: every decision of jitsi-protocol.md section 5, driven by stanzas and a clock passed in.

`FocusCore` takes incoming stanzas (`handle_stanza(now, el)`) and the time (`handle_timeout(now)`), and hands
out stanzas to send (`poll_transmit()`) and when to be woken (`poll_timeout()`). It never reads a clock or
touches a socket; `signaling.focus.service.Focus` is the asyncio adapter around it.

What it does, in the order a call goes:
- answers the conference IQ sent to `focus.<domain>` once its own join of `room@conference.<domain>` (nick
  `focus`, owner config whois=anyone, meetingId read from disco#info) succeeded;
- tracks occupants from MUC presence, grants owner to the first participant, and once `min_participants`
  are in, allocates each on a bridge with Colibri2 and sends a session-initiate through the MUC;
- keeps bridge and participants in step on session-accept, transport-info, source-add/remove,
  session-terminate (with Jicofo's restart rate limits), leaves, and mute requests;
- watches the brewery (stats presence, health-check IQs) and moves the conferences of a failed bridge.

Colibri2 requests of one room go out one at a time (the first creates the conference; the bridge would
refuse a second endpoint for a conference it does not know yet).
"""

from __future__ import annotations

import logging
import uuid
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from colibri2 import model as c2
from colibri2 import xml as c2xml
from signaling.focus import media, stanzas
from signaling.focus.bridges import BridgeInfo, parse_stats, select_bridge
from signaling.focus.config import FocusConfig
from signaling.focus.stanzas import (
    NS_CAPS,
    NS_CLIENT,
    NS_DISCO_INFO,
    NS_FOCUS,
    NS_HEALTHCHECK,
    NS_JITMEET_AUDIO,
    NS_JITMEET_DESKTOP,
    NS_JITMEET_VIDEO,
    NS_MUC,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_MUC_USER,
    NS_NICK,
    NS_PING,
    bare,
    q,
    resource,
    same_jid,
)
from signaling.jingle.model import (
    JVB_OWNER,
    BridgeSession,
    Content,
    EndpointSources,
    Group,
    IceTransport,
    Jingle,
    JingleError,
    Parameter,
    Reason,
    Source,
    SourcesMap,
    SsrcGroup,
)
from signaling.jingle.xml import NS_JINGLE, build_jingle, parse_jingle, unknown_session_error
from signaling.quota import RateLimit

log = logging.getLogger(__name__)

FEATURE_JSON_SOURCES = "http://jitsi.org/json-encoded-sources"
FEEDBACK_MSID = {"audio": "mixedmslabel mixedlabelaudio0", "video": "mixedmslabel mixedlabelvideo0"}
MUTE_NAMESPACES = {NS_JITMEET_AUDIO: "audio", NS_JITMEET_VIDEO: "video", NS_JITMEET_DESKTOP: "video"}
#: Stanza errors a server returns for a recipient that is gone (RFC 6120 8.3.3): the bridge itself is
#: unreachable, unlike any error the bridge answers about one conference.
UNREACHABLE = frozenset(
    {"service-unavailable", "recipient-unavailable", "remote-server-not-found", "remote-server-timeout"}
)

OnReply = Callable[[float, ET.Element], None]
OnFailure = Callable[[float, ET.Element | None], None]  # None: timed out


@dataclass(slots=True)
class _PendingIq:
    #: Where the request went: a reply counts only from there.
    to: str
    deadline: float
    on_result: OnReply
    on_error: OnFailure


@dataclass(slots=True)
class Session:
    """One Jingle session with a participant (a new one after each re-invite)."""

    sid: str
    json: bool
    state: Literal["pending", "active"] = "pending"
    #: Remote sources the client was told about in this session, by owner.
    sent: dict[str, EndpointSources] = field(default_factory=dict)


@dataclass(slots=True)
class Participant:
    nick: str
    real_jid: str | None = None
    role: str | None = None
    affiliation: str | None = None
    features: frozenset[str] | None = None
    sources: EndpointSources = field(default_factory=EndpointSources)
    session: Session | None = None
    #: None: not on the bridge; "allocating": create sent; "allocated": the bridge has the endpoint.
    endpoint: Literal["allocating", "allocated"] | None = None
    #: The participant ended its session without asking for a restart: do not invite it again.
    declined: bool = False
    #: Its nickname cannot be a Colibri2 endpoint id (c2.ENDPOINT_ID): it is never put on a bridge.
    unallocatable: bool = False
    #: Waiting for a place on the bridge (the room is at `max_endpoints_per_conference`); counted once.
    over_quota: bool = False
    restarts: deque[float] = field(default_factory=deque)
    audio_muted: bool | None = None
    video_muted: bool | None = None
    force_muted: dict[str, bool] = field(default_factory=lambda: {"audio": False, "video": False})
    display_name: str | None = None

    @property
    def moderator(self) -> bool:
        return self.role == "moderator" or self.affiliation in ("owner", "admin")


@dataclass(frozen=True, slots=True)
class _JingleCtx:
    """Who a Jingle request is about: its room, participant, session, and the parsed payload."""

    room: Room
    p: Participant
    session: Session
    jingle: Jingle


@dataclass(slots=True)
class Room:
    jid: str
    state: Literal["joining", "configuring", "ready"] = "joining"
    meeting_id: str | None = None
    waiting: list[ET.Element] = field(default_factory=list)  # conference IQs to answer once ready
    participants: dict[str, Participant] = field(default_factory=dict)
    bridge: str | None = None
    #: Incremented whenever the room moves to another bridge: replies for an older epoch are stale.
    epoch: int = 0
    bridge_session: str = ""
    conference_created: bool = False
    colibri_queue: deque[Callable[[float], bool]] = field(default_factory=deque)
    colibri_busy: bool = False
    feedback: EndpointSources = field(default_factory=EndpointSources)
    bridge_not_available: bool = False
    #: Until someone joins: when the room is given up (`room_join_timeout` after its request was answered).
    join_deadline: float | None = None
    #: When Colibri2 errors restarted this room's conference (the last minute's).
    restarts: deque[float] = field(default_factory=deque)
    #: Bridges this room stays away from, and until when (after repeated Colibri2 errors there).
    avoid: dict[str, float] = field(default_factory=dict)

    def occupant(self, nick: str) -> str:
        return f"{self.jid}/{nick}"


class FocusCore:
    """The focus's state machine; see the module docstring."""

    def __init__(self, config: FocusConfig, *, new_id: Callable[[], str] | None = None) -> None:
        self.config = config
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self.rooms: dict[str, Room] = {}
        self.bridges: dict[str, BridgeInfo] = {}
        self.stats: Counter[str] = Counter()
        self._out: deque[ET.Element] = deque()
        self._pending: dict[str, _PendingIq] = {}
        self._caps: dict[str, frozenset[str]] = {}
        self._started = False
        self._bridge_pattern = config.bridge_jid_pattern()
        #: Brewery occupants with stats that are not bridges (logged once each while present).
        self._untrusted: set[str] = set()
        self._creations = RateLimit(config.rooms_per_minute, 60.0)
        self._creations_by_requester = RateLimit(config.rooms_per_minute_per_requester, 60.0)

    # ---- the sans-IO surface

    def start(self, now: float) -> None:
        """Called once the c2s session is bound: joins the brewery."""
        self._started = True
        self._send(stanzas.presence(f"{self.config.brewery_jid}/{self.config.nickname}", None, _muc_x()))

    def stop(self, now: float) -> None:
        """Expires every conference on its bridge and leaves every room and the brewery."""
        for room in list(self.rooms.values()):
            self._expire_conference(now, room)
            self._send(stanzas.presence(room.occupant(self.config.nickname), "unavailable"))
        self.rooms.clear()
        if self._started:
            self._send(stanzas.presence(f"{self.config.brewery_jid}/{self.config.nickname}", "unavailable"))
        self._started = False

    def reset(self) -> None:
        """The connection was lost: everything the focus knew about rooms and bridges is gone."""
        self.rooms.clear()
        self.bridges.clear()
        self._untrusted.clear()
        self._pending.clear()
        self._out.clear()
        self._started = False

    def poll_transmit(self) -> ET.Element | None:
        return self._out.popleft() if self._out else None

    def poll_timeout(self) -> float | None:
        deadlines = [p.deadline for p in self._pending.values()]
        deadlines.extend(b.next_health for b in self.bridges.values() if not b.health_pending)
        for room in self.rooms.values():
            if room.join_deadline is not None:
                deadlines.append(room.join_deadline)
            deadlines.extend(room.avoid.values())
        return min(deadlines, default=None)

    def handle_timeout(self, now: float) -> None:
        for iq_id, pending in list(self._pending.items()):
            if pending.deadline <= now and self._pending.pop(iq_id, None) is not None:
                self.stats["iq_timeouts"] += 1
                pending.on_error(now, None)
        for bridge in list(self.bridges.values()):
            if not bridge.health_pending and bridge.next_health <= now and bridge.jid in self.bridges:
                self._health_check(now, bridge)
        for room in list(self.rooms.values()):
            if room.join_deadline is not None and room.join_deadline <= now and not room.participants:
                self._give_up_room(now, room)
            elif room.avoid and min(room.avoid.values()) <= now:
                room.avoid = {b: until for b, until in room.avoid.items() if until > now}
                self._maybe_invite(now, room)

    def handle_stanza(self, now: float, el: ET.Element) -> None:
        """One stanza from the server; bad input gets an error reply, never an exception."""
        kind = stanzas.local(el.tag)
        try:
            if kind == "iq":
                self._on_iq(now, el)
            elif kind == "presence":
                self._on_presence(now, el)
        except Exception:
            # A bug must cost one stanza, not the focus: log it, count it, answer it.
            log.exception("focus: failed to handle %s from %s", kind, el.get("from"))
            self.stats["internal_errors"] += 1
            if kind == "iq" and el.get("type") in ("get", "set"):
                self._send(
                    stanzas.error(el, "internal-server-error", "the focus failed to handle this request")
                )

    # ---- output helpers

    def _send(self, el: ET.Element) -> None:
        self._out.append(el)

    def _request(
        self,
        now: float,
        iq_type: str,
        to: str,
        payload: ET.Element,
        *,
        on_result: OnReply,
        on_error: OnFailure,
        timeout: float | None = None,
    ) -> str:
        iq_id = self._new_id()
        self._pending[iq_id] = _PendingIq(to, now + (timeout or self.config.iq_timeout), on_result, on_error)
        self._send(stanzas.iq(iq_type, to, iq_id, payload))
        return iq_id

    def _fire(self, now: float, iq_type: str, to: str, payload: ET.Element) -> None:
        """A request whose answer does not matter (a reply still clears it)."""
        self._request(now, iq_type, to, payload, on_result=lambda _n, _e: None, on_error=lambda _n, _e: None)

    # ---- IQs

    def _on_iq(self, now: float, el: ET.Element) -> None:
        iq_type = el.get("type")
        if iq_type in ("result", "error"):
            iq_id = el.get("id", "")
            pending = self._pending.get(iq_id)
            if pending is None:
                return
            if not same_jid(el.get("from", ""), pending.to):
                # Someone else answering our request (a guessed id): ignored; the real reply still counts.
                self.stats["iq_replies_from_elsewhere"] += 1
                return
            del self._pending[iq_id]
            if iq_type == "result":
                pending.on_result(now, el)
            else:
                pending.on_error(now, el)
            return
        if iq_type not in ("get", "set"):
            self._send(stanzas.error(el, "bad-request", f"unknown IQ type {iq_type!r}"))
            return
        payload = next(iter(el), None)
        tag = payload.tag if payload is not None else ""
        if tag == q(NS_FOCUS, "conference") and iq_type == "set":
            assert payload is not None
            self._on_conference_request(now, el, payload)
        elif tag == q(NS_JINGLE, "jingle") and iq_type == "set":
            self._on_jingle(now, el)
        elif tag in (q(ns, "mute") for ns in MUTE_NAMESPACES) and iq_type == "set":
            assert payload is not None
            self._on_mute(now, el, payload)
        elif tag == q(NS_PING, "ping"):
            self._send(stanzas.result(el))
        elif tag == q(NS_DISCO_INFO, "query") and iq_type == "get":
            query = ET.Element(q(NS_DISCO_INFO, "query"))
            ET.SubElement(query, q(NS_DISCO_INFO, "identity"), {"category": "component", "type": "focus"})
            for var in (NS_DISCO_INFO, NS_FOCUS, NS_PING, "urn:xmpp:jingle:1"):
                ET.SubElement(query, q(NS_DISCO_INFO, "feature"), {"var": var})
            self._send(stanzas.result(el, query))
        elif tag == "{jabber:iq:roster}query":
            return  # roster pushes: the XMPP library's business
        else:
            self.stats["iq_unsupported"] += 1
            self._send(stanzas.error(el, "service-unavailable", "unsupported IQ request"))

    # ---- conference request (5.2)

    def _on_conference_request(self, now: float, request: ET.Element, payload: ET.Element) -> None:
        self.stats["conference_requests"] += 1
        room_jid = (payload.get("room") or "").lower()
        node, _, domain = room_jid.partition("@")
        if not node or "/" in room_jid or domain != self.config.muc_domain.lower():
            self.stats["errors_bad_request"] += 1
            self._send(stanzas.error(request, "bad-request", f"room must be <name>@{self.config.muc_domain}"))
            return
        room = self.rooms.get(room_jid)
        if room is None:
            refusal = self._room_quota(now, request.get("from", ""))
            if refusal is not None:
                self._send(stanzas.error(request, "resource-constraint", refusal))
                return
            room = Room(room_jid, join_deadline=now + self.config.room_join_timeout)
            self.rooms[room_jid] = room
            self.stats["rooms_created"] += 1
            log.info("focus: creating %s", room_jid)
            self._send(stanzas.presence(room.occupant(self.config.nickname), None, _muc_x()))
        if room.state == "ready":
            self._send(self._conference_reply(request, room_jid))
        else:
            room.waiting.append(request)

    def _room_quota(self, now: float, requester: str) -> str | None:
        """Why one more room cannot be created now (counted), or None."""
        cfg = self.config
        why = None
        if len(self.rooms) >= cfg.max_rooms:
            why, text = "concurrent", f"this server holds {cfg.max_rooms} rooms already"
        elif not self._creations_by_requester.allow(bare(requester) or requester, now):
            why, text = "requester", f"at most {cfg.rooms_per_minute_per_requester} new rooms a minute each"
        elif not self._creations.allow("", now):
            why, text = "total", f"at most {cfg.rooms_per_minute} new rooms a minute"
        if why is None:
            return None
        self.stats["rooms_refused"] += 1
        self.stats[f"rooms_refused_{why}"] += 1
        log.info("focus: no new room for %s: %s", requester, text)
        return f"No new room: {text}; try again later"

    def _give_up_room(self, now: float, room: Room) -> None:
        """Nobody joined in time (or the MUC never let us in): leave it; the MUC destroys it when empty."""
        self.stats["rooms_expired_unjoined"] += 1
        log.info("focus: nobody joined %s in time, leaving it", room.jid)
        for request in room.waiting:
            self._send(stanzas.error(request, "remote-server-timeout", f"{room.jid} could not be set up"))
        self._expire_conference(now, room)
        self._send(stanzas.presence(room.occupant(self.config.nickname), "unavailable"))
        self.rooms.pop(room.jid, None)

    def _conference_reply(self, request: ET.Element, room_jid: str) -> ET.Element:
        conf = ET.Element(
            q(NS_FOCUS, "conference"), {"room": room_jid, "ready": "true", "focusjid": self.config.focus_jid}
        )
        for name, value in (
            ("authentication", "false"),
            ("externalAuth", "false"),
            ("sipGatewayEnabled", "false"),
        ):
            ET.SubElement(conf, q(NS_FOCUS, "property"), {"name": name, "value": value})
        return stanzas.result(request, conf)

    def _room_joined(self, now: float, room: Room) -> None:
        """Our own presence came back: configure the room (whois=anyone), then read its meetingId."""
        room.state = "configuring"
        query = ET.Element(q(NS_MUC_OWNER, "query"))
        query.append(
            stanzas.data_form(
                "http://jabber.org/protocol/muc#roomconfig",
                {"muc#roomconfig_whois": "anyone", "muc#roomconfig_persistentroom": "0"},
            )
        )

        def configured(now: float, _reply: ET.Element | None) -> None:
            disco = ET.Element(q(NS_DISCO_INFO, "query"))
            self._request(now, "get", room.jid, disco, on_result=info, on_error=lambda n, _e: info(n, None))

        def info(now: float, reply: ET.Element | None) -> None:
            meeting_id = None
            if reply is not None:
                query = reply.find(q(NS_DISCO_INFO, "query"))
                if query is not None:
                    meeting_id = stanzas.form_value(query, "muc#roominfo_meetingId")
            room.meeting_id = meeting_id or str(uuid.uuid4())
            self._room_ready(now, room)

        self._request(now, "set", room.jid, query, on_result=configured, on_error=configured)

    def _room_ready(self, now: float, room: Room) -> None:
        if self.rooms.get(room.jid) is not room:
            return
        room.state = "ready"
        for request in room.waiting:
            self._send(self._conference_reply(request, room.jid))
        room.waiting.clear()
        if not room.participants:
            room.join_deadline = now + self.config.room_join_timeout
        self._maybe_invite(now, room)

    # ---- presence

    def _on_presence(self, now: float, el: ET.Element) -> None:
        sender = el.get("from", "")
        room_jid, nick = bare(sender), resource(sender)
        if room_jid == self.config.brewery_jid:
            self._on_brewery_presence(now, nick, el)
            return
        room = self.rooms.get(room_jid)
        if room is None or not nick:
            return
        ptype = el.get("type")
        x = el.find(q(NS_MUC_USER, "x"))
        codes = {s.get("code") for s in x.iterfind(q(NS_MUC_USER, "status"))} if x is not None else set()
        if nick == self.config.nickname or "110" in codes:
            self._on_own_room_presence(now, room, ptype, el)
            return
        if ptype == "error":
            return
        if ptype == "unavailable":
            self._participant_left(now, room, nick)
            return
        item = x.find(q(NS_MUC_USER, "item")) if x is not None else None
        p = room.participants.get(nick)
        joined = p is None
        if p is None:
            p = Participant(nick, unallocatable=not c2.ENDPOINT_ID.fullmatch(nick))
            room.participants[nick] = p
            room.join_deadline = None
            self.stats["participants_joined"] += 1
            if p.unallocatable:
                # The nick becomes the endpoint id; a bridge refuses ids outside the rule, so do not try.
                self.stats["participants_unallocatable_nick"] += 1
                log.info("focus: %r in %s is not a usable endpoint id; no media for it", nick, room.jid)
            log.info("focus: %s joined %s", nick, room.jid)
        if item is not None:
            p.real_jid = item.get("jid") or p.real_jid
            p.role = item.get("role") or p.role
            p.affiliation = item.get("affiliation") or p.affiliation
        name = el.find(q(NS_NICK, "nick"))
        if name is not None:
            p.display_name = name.text
        self._on_mute_presence(now, room, p, el)
        if joined:
            self._learn_features(now, room, p, el.find(q(NS_CAPS, "c")))
            self._maybe_grant_owner(now, room)
        self._maybe_invite(now, room)

    def _on_own_room_presence(self, now: float, room: Room, ptype: str | None, el: ET.Element) -> None:
        if ptype == "error":
            condition = stanzas.error_condition(el) or "service-unavailable"
            log.warning("focus: cannot join %s: %s", room.jid, condition)
            self.rooms.pop(room.jid, None)
            for request in room.waiting:
                self._send(stanzas.error(request, condition, f"the focus cannot join {room.jid}"))
            return
        if ptype == "unavailable":
            # Kicked or the room was destroyed: the conference is over.
            self._expire_conference(now, room)
            self.rooms.pop(room.jid, None)
            return
        if room.state == "joining":
            self._room_joined(now, room)

    def _learn_features(self, now: float, room: Room, p: Participant, caps: ET.Element | None) -> None:
        """XEP-0115: known caps hash -> features; otherwise ask the client (disco#info node#ver)."""
        if caps is None or not caps.get("node") or not caps.get("ver"):
            p.features = frozenset({FEATURE_JSON_SOURCES})  # Jicofo-style default when nothing is said
            return
        node = f"{caps.get('node')}#{caps.get('ver')}"
        known = self._caps.get(node)
        if known is not None:
            p.features = known
            return
        query = ET.Element(q(NS_DISCO_INFO, "query"), {"node": node})

        def answered(now: float, reply: ET.Element) -> None:
            result = reply.find(q(NS_DISCO_INFO, "query"))
            feats = frozenset(
                f.get("var", "")
                for f in (result.iterfind(q(NS_DISCO_INFO, "feature")) if result is not None else ())
            )
            self._caps[node] = feats
            p.features = feats
            self._maybe_invite(now, room)

        def failed(now: float, _err: ET.Element | None) -> None:
            p.features = frozenset()
            self._maybe_invite(now, room)

        self._request(now, "get", room.occupant(p.nick), query, on_result=answered, on_error=failed)

    def _maybe_grant_owner(self, now: float, room: Room) -> None:
        """enable-auto-owner: the first participant (by join order) owns the room while nobody else does."""
        if any(p.affiliation == "owner" for p in room.participants.values()):
            return
        first = next(iter(room.participants.values()), None)
        if first is None or first.real_jid is None:
            return
        query = ET.Element(q(NS_MUC_ADMIN, "query"))
        ET.SubElement(query, q(NS_MUC_ADMIN, "item"), {"affiliation": "owner", "jid": bare(first.real_jid)})
        first.affiliation = "owner"  # optimistic: the MUC's presence confirms it
        self._fire(now, "set", room.jid, query)

    def _participant_left(self, now: float, room: Room, nick: str) -> None:
        p = room.participants.pop(nick, None)
        if p is None:
            return
        self.stats["participants_left"] += 1
        log.info("focus: %s left %s", nick, room.jid)
        if p.endpoint is not None:
            self._colibri_expire(now, room, [nick])
        self._sync_all(now, room)
        if not room.participants:
            self._expire_conference(now, room)
            self._send(stanzas.presence(room.occupant(self.config.nickname), "unavailable"))
            self.rooms.pop(room.jid, None)
            log.info("focus: %s is empty, left it", room.jid)
            return
        self._maybe_grant_owner(now, room)
        self._maybe_invite(now, room)  # someone waiting for an endpoint may fit now

    # ---- bridges (1.2-1.5)

    def _on_brewery_presence(self, now: float, nick: str, el: ET.Element) -> None:
        if not nick or nick == self.config.nickname:
            return
        jid = f"{self.config.brewery_jid}/{nick}"
        if el.get("type") == "unavailable":
            self._untrusted.discard(jid)
            if self.bridges.pop(jid, None) is not None:
                self.stats["bridges_left"] += 1
                log.warning("focus: bridge %s left the brewery", jid)
                self._bridge_gone(now, jid)
            return
        if el.get("type") == "error":
            return
        values = parse_stats(el)
        if values is None:
            return  # only members that publish stats are bridges
        item = el.find(f"{q(NS_MUC_USER, 'x')}/{q(NS_MUC_USER, 'item')}")
        real = item.get("jid", "") if item is not None else ""
        bridge = self.bridges.get(jid)
        if not self._bridge_pattern.fullmatch(real):
            # Stats presence from an account that is not a bridge's (or with its real JID hidden from us).
            self.stats["brewery_untrusted_presences"] += 1
            if jid not in self._untrusted:
                self._untrusted.add(jid)
                log.warning("focus: %s (%s) publishes stats but is not a bridge account", jid, real or "?")
            if bridge is not None:
                del self.bridges[jid]
                self._bridge_gone(now, jid)
            return
        if bridge is not None and not same_jid(bridge.real_jid, real):
            # Another session took this nickname: the bridge we knew is gone.
            del self.bridges[jid]
            self._bridge_gone(now, jid)
            bridge = None
        if bridge is None:
            bridge = BridgeInfo(jid, real_jid=real, next_health=now)
            self.bridges[jid] = bridge
            log.info("focus: bridge %s (%s) joined the brewery", jid, real)
        was = (bridge.selectable, bridge.usable)
        bridge.update(values)
        if was[1] and not bridge.usable:
            log.warning("focus: bridge %s is no longer usable (shutting down or unhealthy)", jid)
            self._bridge_gone(now, jid)
        if bridge.selectable and not was[0]:
            self._retry_waiting_rooms(now)

    def _health_check(self, now: float, bridge: BridgeInfo) -> None:
        bridge.health_pending = True

        def ok(now: float, _reply: ET.Element) -> None:
            bridge.health_pending = False
            bridge.health_timeouts = 0
            bridge.next_health = now + self.config.health_interval
            if not bridge.operational and (
                bridge.failed_at is None or now - bridge.failed_at >= self.config.failure_reset
            ):
                bridge.operational = True
                log.info("focus: bridge %s is operational again", bridge.jid)
                self._retry_waiting_rooms(now)

        def failed(now: float, err: ET.Element | None) -> None:
            bridge.health_pending = False
            if err is None:
                bridge.health_timeouts += 1
                self.stats["health_timeouts"] += 1
                if bridge.health_timeouts < 2:  # one retry after half an interval (JvbDoctor)
                    bridge.next_health = now + self.config.health_interval / 2
                    return
            bridge.next_health = now + self.config.health_interval
            self.stats["health_failures"] += 1
            self._fail_bridge(
                now, bridge.jid, "health check failed" if err is not None else "health check timeout"
            )

        self._request(
            now,
            "get",
            bridge.real_jid,
            ET.Element(q(NS_HEALTHCHECK, "healthcheck")),
            on_result=ok,
            on_error=failed,
            timeout=self.config.health_timeout,
        )

    def _fail_bridge(self, now: float, jid: str, why: str) -> None:
        bridge = self.bridges.get(jid)
        if bridge is None:
            return
        log.warning("focus: bridge %s failed (%s)", jid, why)
        self.stats["bridges_failed"] += 1
        bridge.operational = False
        bridge.failed_at = now
        self._bridge_gone(now, jid)

    def _bridge_gone(self, now: float, jid: str) -> None:
        """Moves every room on `jid` elsewhere (Jicofo's RestartJingle re-invite)."""
        for room in list(self.rooms.values()):
            if room.bridge == jid:
                self._move_room(now, room)

    def _move_room(self, now: float, room: Room) -> None:
        old = room.bridge
        bridge = self.bridges.get(old) if old is not None else None
        if bridge is not None and bridge.jid in self.bridges and not bridge.shutting_down:
            self._expire_conference(now, room)
        room.bridge = None
        room.epoch += 1
        room.conference_created = False
        room.colibri_queue.clear()
        room.colibri_busy = False
        room.feedback = EndpointSources()
        for p in room.participants.values():
            p.endpoint = None
            # A client answers a new session-initiate with a new PeerConnection (new SSRCs): its old sources
            # must not be announced to the others again; its session-accept brings the current ones.
            p.sources = EndpointSources()
            if p.session is not None:
                self.stats["participants_reinvited"] += 1
                self._terminate(room, p, "bridge failure: reinvite")
        self._maybe_invite(now, room)

    def _retry_waiting_rooms(self, now: float) -> None:
        for room in list(self.rooms.values()):
            self._maybe_invite(now, room)

    def _room_bridge(self, now: float, room: Room) -> str | None:
        """The room's bridge, choosing one (single-bridge strategy) when it has none."""
        if room.bridge is not None:
            return room.bridge
        hosted = Counter(r.bridge for r in self.rooms.values() if r.bridge is not None)
        full = {b for b, n in hosted.items() if n >= self.config.max_conferences_per_bridge}
        avoid = {b for b, until in room.avoid.items() if until > now}
        chosen = select_bridge(
            self.bridges.values(),
            now,
            rampup=self.config.participant_rampup,
            participant_stress=self.config.average_participant_stress,
            stress_threshold=self.config.stress_threshold,
            exclude=full | avoid,
        )
        if chosen is None:
            if any(b.selectable for b in self.bridges.values() if b.jid in full):
                self.stats["bridges_full"] += 1
            return None
        room.bridge = chosen.jid
        room.epoch += 1
        room.bridge_session = str(uuid.uuid4())
        room.conference_created = False
        log.info("focus: %s goes to bridge %s", room.jid, chosen.jid)
        return chosen.jid

    def _set_bridge_not_available(self, room: Room, value: bool) -> None:
        if room.bridge_not_available == value:
            return
        room.bridge_not_available = value
        children = [ET.Element(q(NS_CLIENT, "bridgeNotAvailable"))] if value else []
        self._send(stanzas.presence(room.occupant(self.config.nickname), None, *children))

    # ---- inviting (5.3-5.4)

    def _maybe_invite(self, now: float, room: Room) -> None:
        if room.state != "ready" or len(room.participants) < self.config.min_participants:
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
        room_left = self.config.max_endpoints_per_conference - sum(
            1 for p in room.participants.values() if p.endpoint is not None
        )
        if len(waiting) > room_left:
            # The rest wait until someone leaves (then _participant_left tries again).
            for p in waiting[max(room_left, 0) :]:
                if not p.over_quota:
                    p.over_quota = True
                    self.stats["endpoints_over_quota"] += 1
            waiting = waiting[: max(room_left, 0)]
        if not waiting:
            return
        current = self.bridges.get(room.bridge) if room.bridge is not None else None
        if room.bridge is not None and (current is None or not current.usable):
            self._move_room(now, room)  # its bridge became unusable without a failure being seen
            return
        bridge = self._room_bridge(now, room)
        if bridge is None:
            self.stats["no_bridge"] += 1
            self._set_bridge_not_available(room, True)
            return
        self._set_bridge_not_available(room, False)
        for p in waiting:
            self._allocate(now, room, p)

    def _allocate(self, now: float, room: Room, p: Participant) -> None:
        p.endpoint = "allocating"
        epoch = room.epoch

        def send(now: float) -> bool:
            if room.epoch != epoch or room.participants.get(p.nick) is not p:
                return False
            create = not room.conference_created
            request = c2.ConferenceModify(
                meeting_id=room.meeting_id or "",
                name=room.jid if create else None,
                create=create,
                endpoints=(
                    c2.Endpoint(
                        id=p.nick,
                        create=True,
                        stats_id=_stats_id(p),
                        medias=media.colibri_medias(),
                        transport=c2.Transport(ice_controlling=True),
                        sources=colibri_sources(p.nick, p.sources),
                        capabilities=("source-names",),
                    ),
                ),
            )
            bridge = self.bridges.get(room.bridge or "")
            if bridge is not None:
                bridge.recent.append(now)

            def done(now: float, reply: ET.Element) -> None:
                if room.epoch != epoch:
                    return
                room.conference_created = True
                try:
                    modified = c2xml.parse_conference_modified(reply)
                except c2.Colibri2Error as exc:
                    self._colibri_failed(now, room, epoch, f"bad conference-modified: {exc.text}")
                    return
                if modified.sources is not None:
                    room.feedback = feedback_sources(modified.sources)
                ep = next((e for e in modified.endpoints if e.id == p.nick), None)
                ice = ep.transport.ice if ep is not None and ep.transport is not None else None
                self._colibri_done(now, room, epoch)
                if ice is None:
                    self._colibri_failed(now, room, epoch, f"no transport for endpoint {p.nick}")
                    return
                if room.participants.get(p.nick) is not p:
                    self._colibri_expire(now, room, [p.nick])
                    return
                p.endpoint = "allocated"
                self._initiate(now, room, p, ice)

            return self._colibri_send(now, room, epoch, request, done)

        self._colibri_enqueue(now, room, send)

    def _initiate(self, now: float, room: Room, p: Participant, ice: c2.IceUdpTransport) -> None:
        json = self.config.use_json_sources and FEATURE_JSON_SOURCES in (p.features or frozenset())
        session = Session(sid=self._new_id()[:16], json=json)
        p.session = session
        p.declined = False
        remote = self._desired_sources(room, p)
        session.sent = dict(remote)
        transport = jingle_transport(ice)
        contents = []
        for kind in ("audio", "video"):
            description = media.description(kind)
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
            initiator=self.config.focus_full_jid,
            contents=tuple(contents),
            groups=(Group("BUNDLE", ("audio", "video")),),
            bridge_session=BridgeSession(id=room.bridge_session),
            json_sources=tuple(remote.items()) if json else None,
        )
        self.stats["sessions_initiated"] += 1
        log.info("focus: session-initiate to %s/%s (sid %s)", room.jid, p.nick, session.sid)

        def failed(now: float, err: ET.Element | None) -> None:
            if err is None or p.session is not session:
                return  # Jicofo treats a session-initiate timeout as success: the accept may still come
            log.warning("focus: %s refused session-initiate: %s", p.nick, stanzas.error_condition(err))
            self.stats["sessions_refused"] += 1
            p.session = None
            p.declined = True
            self._drop_endpoint(now, room, p)

        self._request(
            now,
            "set",
            room.occupant(p.nick),
            build_jingle(jingle),
            on_result=lambda _n, _r: None,
            on_error=failed,
        )

    def _terminate(self, room: Room, p: Participant, text: str) -> None:
        session, p.session = p.session, None
        if session is None:
            return
        jingle = Jingle(
            action="session-terminate",
            sid=session.sid,
            initiator=self.config.focus_full_jid,
            reason=Reason("success", text),
            bridge_session=BridgeSession(id=room.bridge_session),
        )
        self._send(stanzas.iq("set", room.occupant(p.nick), self._new_id(), build_jingle(jingle)))

    def _drop_endpoint(self, now: float, room: Room, p: Participant) -> None:
        """The participant's endpoint and sources go away (its session ended)."""
        if p.endpoint is not None:
            self._colibri_expire(now, room, [p.nick])
        p.endpoint = None
        p.sources = EndpointSources()
        self._sync_all(now, room)

    # ---- source bookkeeping

    def _desired_sources(self, room: Room, p: Participant) -> dict[str, EndpointSources]:
        """Everything `p` should know: every other participant's sources and the bridge's feedback sources."""
        out = {o.nick: o.sources for o in room.participants.values() if o is not p and o.sources}
        if room.feedback:
            out[JVB_OWNER] = room.feedback
        return out

    def _sync_all(self, now: float, room: Room) -> None:
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
            self.stats[action.replace("-", "_") + "_sent"] += 1
            self._send_sources(now, room, p, session=session, action=action, changes=tuple(changes))

    def _send_sources(
        self, now: float, room: Room, p: Participant, *, session: Session, action: str, changes: SourcesMap
    ) -> None:
        contents = []
        for kind in ("audio", "video"):
            srcs, groups = inline_sources(changes, kind)
            if srcs or groups or session.json:
                description = media.description(kind)
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
            initiator=self.config.focus_full_jid,
            contents=tuple(contents),
            json_sources=changes if session.json else None,
        )
        self._fire(now, "set", room.occupant(p.nick), build_jingle(jingle))

    # ---- Jingle from clients (5.5)

    def _find_participant(self, sender: str) -> tuple[Room, Participant] | None:
        room = self.rooms.get(bare(sender))
        if room is not None:
            p = room.participants.get(resource(sender))
            return (room, p) if p is not None else None
        for room in self.rooms.values():  # sent to our full JID directly
            for p in room.participants.values():
                if p.real_jid == sender:
                    return room, p
        return None

    def _on_jingle(self, now: float, request: ET.Element) -> None:
        try:
            jingle = parse_jingle(request)
        except JingleError as exc:
            self.stats["errors_bad_request"] += 1
            log.info("focus: malformed Jingle from %s: %s", request.get("from"), exc.text)
            self._send(stanzas.error(request, exc.condition, exc.text))
            return
        found = self._find_participant(request.get("from", ""))
        session = found[1].session if found is not None else None
        if found is None or session is None or session.sid != jingle.sid:
            self.stats["errors_unknown_session"] += 1
            reply = stanzas.iq("error", request.get("from", ""), request.get("id", ""))
            reply.append(unknown_session_error())
            self._send(reply)
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
            self.stats["errors_bad_request"] += 1
            self._send(
                stanzas.error(request, "feature-not-implemented", f"unsupported action {jingle.action}")
            )
            return
        handler(now, request, _JingleCtx(room, p, session, jingle))

    def _checked_sources(self, room: Room, p: Participant, sources: EndpointSources) -> str | None:
        """Why `sources` (the participant's whole new set) cannot be accepted, or None."""
        if len(sources.ssrcs) > self.config.max_ssrcs_per_user:
            return f"more than {self.config.max_ssrcs_per_user} SSRCs"
        for other in room.participants.values():
            if other is not p and (clash := sources.ssrcs & other.sources.ssrcs):
                return f"SSRC {min(clash)} is already used by {other.nick}"
        if room.feedback and (clash := sources.ssrcs & room.feedback.ssrcs):
            return f"SSRC {min(clash)} is the bridge's"
        return None

    def _on_session_accept(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        room, p, session, jingle = ctx.room, ctx.p, ctx.session, ctx.jingle
        if session.state == "active":
            self._send(stanzas.error(request, "bad-request", "the session was already accepted"))
            return
        sources = named_sources(p.nick, jingle.sources(p.nick))
        problem = self._checked_sources(room, p, sources)
        if problem is not None:
            self.stats["errors_bad_request"] += 1
            self._send(stanzas.error(request, "bad-request", problem))
            return
        self._send(stanzas.result(request))
        session.state = "active"
        p.sources = sources
        self.stats["sessions_accepted"] += 1
        log.info("focus: %s accepted (sid %s), %d SSRCs", p.nick, session.sid, len(sources.ssrcs))
        self._colibri_update(now, room, p, transport=jingle.transport(), sources=True)
        self._sync_all(now, room)

    def _on_session_info(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        self._send(stanzas.result(request))  # ICE state reports; restarts come as session-terminate

    def _on_transport_info(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        room, p, jingle = ctx.room, ctx.p, ctx.jingle
        transport = jingle.transport()
        if transport is None:
            self._send(stanzas.error(request, "bad-request", "transport-info without a transport"))
            return
        self._send(stanzas.result(request))
        self._colibri_update(now, room, p, transport=transport, sources=False)

    def _on_source_add(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        room, p, jingle = ctx.room, ctx.p, ctx.jingle
        add = named_sources(p.nick, jingle.sources(p.nick))
        merged = merge_sources(p.sources, add)
        problem = self._checked_sources(room, p, merged)
        if problem is None and add.ssrcs & p.sources.ssrcs:
            problem = f"SSRC {min(add.ssrcs & p.sources.ssrcs)} was already added"
        if problem is not None:
            self.stats["errors_bad_request"] += 1
            self._send(stanzas.error(request, "bad-request", problem))
            return
        self._send(stanzas.result(request))
        p.sources = merged
        self._colibri_update(now, room, p, transport=None, sources=True)
        self._sync_all(now, room)

    def _on_source_remove(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        room, p, jingle = ctx.room, ctx.p, ctx.jingle
        gone = jingle.sources(p.nick).ssrcs
        self._send(stanzas.result(request))
        p.sources = remove_ssrcs(p.sources, gone)
        self._colibri_update(now, room, p, transport=None, sources=True)
        self._sync_all(now, room)

    def _on_session_terminate(self, now: float, request: ET.Element, ctx: _JingleCtx) -> None:
        room, p, jingle = ctx.room, ctx.p, ctx.jingle
        restart = jingle.bridge_session is not None and bool(jingle.bridge_session.restart)
        if restart:
            while p.restarts and p.restarts[0] <= now - 60.0:
                p.restarts.popleft()
            too_soon = bool(p.restarts) and now - p.restarts[-1] < self.config.restart_min_interval
            if too_soon or len(p.restarts) >= self.config.restart_max_per_minute:
                self.stats["restarts_rate_limited"] += 1
                self._send(stanzas.error(request, "resource-constraint", "restart requests are rate limited"))
                return
            p.restarts.append(now)
            self.stats["restarts"] += 1
        self._send(stanzas.result(request))
        log.info("focus: %s ended its session%s", p.nick, " and asks for a restart" if restart else "")
        p.session = None
        p.declined = not restart
        self._drop_endpoint(now, room, p)
        if restart:
            self._maybe_invite(now, room)

    # ---- mute (5.5)

    def _on_mute(self, now: float, request: ET.Element, payload: ET.Element) -> None:
        kind = MUTE_NAMESPACES[payload.tag[1:].partition("}")[0]]
        found = self._find_participant(request.get("from", ""))
        target_jid = payload.get("jid", "")
        text = (payload.text or "").strip().lower()
        if text not in ("true", "false"):
            self._send(stanzas.error(request, "bad-request", "mute must be true or false"))
            return
        mute = text == "true"
        if found is None:
            self._send(stanzas.error(request, "not-allowed", "not a participant"))
            return
        room, actor = found
        target = room.participants.get(resource(target_jid)) if bare(target_jid) == room.jid else None
        if target is None:
            self._send(stanzas.error(request, "item-not-found", f"no participant {target_jid}"))
            return
        if (mute and not (actor.moderator or actor is target)) or (not mute and actor is not target):
            self.stats["mute_not_allowed"] += 1
            self._send(stanzas.error(request, "not-allowed", "only a moderator may mute others"))
            return
        self._send(stanzas.result(request))
        self.stats["mutes"] += 1
        if actor is not target:
            forward = ET.Element(
                payload.tag, {"jid": room.occupant(target.nick), "actor": room.occupant(actor.nick)}
            )
            forward.text = "true" if mute else "false"
            self._fire(now, "set", room.occupant(target.nick), forward)
        self._force_mute(now, room, target, kind, mute)

    def _on_mute_presence(self, now: float, room: Room, p: Participant, el: ET.Element) -> None:
        """A participant that unmutes itself (presence true -> false) is no longer force-muted."""
        for kind, tag in (
            ("audio", q(NS_JITMEET_AUDIO, "audiomuted")),
            ("video", q(NS_JITMEET_VIDEO, "videomuted")),
        ):
            found = el.find(tag)
            if found is None:
                found = el.find(q(NS_CLIENT, tag.rpartition("}")[2]))
            if found is None:
                continue
            muted = (found.text or "").strip().lower() == "true"
            before = p.audio_muted if kind == "audio" else p.video_muted
            if kind == "audio":
                p.audio_muted = muted
            else:
                p.video_muted = muted
            if before and not muted and p.force_muted[kind]:
                self._force_mute(now, room, p, kind, False)

    def _force_mute(self, now: float, room: Room, p: Participant, kind: str, value: bool) -> None:
        if p.force_muted[kind] == value:
            return
        p.force_muted[kind] = value
        if p.endpoint is None or room.bridge is None:
            return
        force = c2.ForceMute(audio=p.force_muted["audio"], video=p.force_muted["video"])
        request = c2.ConferenceModify(
            meeting_id=room.meeting_id or "", endpoints=(c2.Endpoint(id=p.nick, force_mute=force),)
        )
        self._colibri_enqueue_simple(now, room, request)

    # ---- Colibri2 (2.3)

    def _colibri_enqueue(self, now: float, room: Room, job: Callable[[float], bool]) -> None:
        """Queues one request of the room; a job returns False when it had nothing to send any more."""
        room.colibri_queue.append(job)
        if not room.colibri_busy:
            self._colibri_next(now, room)

    def _colibri_next(self, now: float, room: Room) -> None:
        while room.colibri_queue and not room.colibri_busy:
            room.colibri_busy = True
            if not room.colibri_queue.popleft()(now):
                room.colibri_busy = False

    def _colibri_done(self, now: float, room: Room, epoch: int) -> None:
        if room.epoch == epoch and room.colibri_busy:
            room.colibri_busy = False
            self._colibri_next(now, room)

    def _colibri_send(
        self,
        now: float,
        room: Room,
        epoch: int,
        request: c2.ConferenceModify,
        on_result: OnReply,
        *,
        endpoint: str | None = None,
        tolerate: bool = False,
    ) -> bool:
        """Sends one request of the room's queue.

        A Colibri2 error is about this room's conference: unknown_endpoint re-invites that participant,
        anything else re-creates the conference. A timeout also asks the bridge for a health check now. Only
        the server's word that the bridge is unreachable fails the bridge (jitsi-protocol.md 1.5 lets one
        error fail a bridge; anyone who can make a bridge answer an error could then empty it)."""
        bridge = self.bridges.get(room.bridge or "")
        if bridge is None:
            return False
        self.stats["colibri_requests"] += 1

        def failed(now: float, err: ET.Element | None) -> None:
            if room.epoch != epoch:
                return
            self._colibri_done(now, room, epoch)
            if tolerate:
                return
            if err is None:
                self.stats["colibri_timeouts"] += 1
                if bridge.jid in self.bridges and not bridge.health_pending:
                    bridge.next_health = now
                self._restart_conference(now, room, "colibri2 timeout")
                return
            try:
                reason: c2.Colibri2Error | None = c2xml.parse_error(err)
            except c2.Colibri2Error:
                reason = None
            if reason is not None and reason.reason == c2.Reason.UNKNOWN_ENDPOINT and endpoint is not None:
                self._reinvite_one(now, room, endpoint)
                return
            if reason is not None and reason.reason is None and reason.condition in UNREACHABLE:
                self._fail_bridge(now, bridge.jid, f"unreachable ({reason.condition})")
                return
            self.stats["colibri_errors"] += 1
            text = reason.text or reason.condition if reason is not None else "malformed error"
            self._restart_conference(now, room, f"colibri2 error: {text}")

        payload = c2xml.build_conference_modify(request)
        self._request(
            now,
            "get",
            bridge.real_jid,
            payload,
            on_result=on_result,
            on_error=failed,
            timeout=self.config.colibri_timeout,
        )
        return True

    def _colibri_failed(self, now: float, room: Room, epoch: int, why: str) -> None:
        """The bridge's answer for this room made no sense: re-create the room's conference."""
        if room.epoch == epoch and room.bridge is not None:
            self.stats["colibri_errors"] += 1
            self._restart_conference(now, room, why)

    def _restart_conference(self, now: float, room: Room, why: str) -> None:
        """Re-creates the room's conference and re-invites everyone (Jicofo's restart of one conference).

        Bounded: after `max_conference_restarts` within a minute the room keeps away from that bridge for
        `failure_reset`, so a bridge that keeps refusing one conference cannot loop it."""
        while room.restarts and room.restarts[0] <= now - 60.0:
            room.restarts.popleft()
        room.restarts.append(now)
        self.stats["conference_restarts"] += 1
        log.warning("focus: restarting the conference of %s on %s: %s", room.jid, room.bridge, why)
        if room.bridge is not None and len(room.restarts) > self.config.max_conference_restarts:
            self.stats["conference_bridges_avoided"] += 1
            room.avoid[room.bridge] = now + self.config.failure_reset
            room.restarts.clear()
        self._move_room(now, room)

    def _colibri_enqueue_simple(
        self, now: float, room: Room, request: c2.ConferenceModify, *, tolerate: bool = False
    ) -> None:
        epoch = room.epoch

        def send(now: float) -> bool:
            if room.epoch != epoch:
                return False
            endpoint = request.endpoints[0].id if len(request.endpoints) == 1 else None

            def done(now: float, _reply: ET.Element) -> None:
                self._colibri_done(now, room, epoch)

            return self._colibri_send(now, room, epoch, request, done, endpoint=endpoint, tolerate=tolerate)

        self._colibri_enqueue(now, room, send)

    def _colibri_update(
        self, now: float, room: Room, p: Participant, *, transport: IceTransport | None, sources: bool
    ) -> None:
        if p.endpoint is None or room.bridge is None:
            return
        c2_transport = c2.Transport(ice=colibri_ice(transport)) if transport is not None else None
        request = c2.ConferenceModify(
            meeting_id=room.meeting_id or "",
            endpoints=(
                c2.Endpoint(
                    id=p.nick,
                    stats_id=_stats_id(p),
                    transport=c2_transport,
                    sources=colibri_sources(p.nick, p.sources) if sources else None,
                ),
            ),
        )
        self._colibri_enqueue_simple(now, room, request)

    def _colibri_expire(self, now: float, room: Room, nicks: Iterable[str]) -> None:
        if room.bridge is None or not room.conference_created:
            return
        request = c2.ConferenceModify(
            meeting_id=room.meeting_id or "", endpoints=tuple(c2.Endpoint(id=n, expire=True) for n in nicks)
        )
        self._colibri_enqueue_simple(now, room, request, tolerate=True)

    def _expire_conference(self, now: float, room: Room) -> None:
        """Fire and forget: the conference is dropped whatever the bridge answers."""
        bridge = self.bridges.get(room.bridge or "")
        if bridge is None or not room.conference_created:
            return
        request = c2.ConferenceModify(meeting_id=room.meeting_id or "", expire=True)
        payload = c2xml.build_conference_modify(request)
        self._request(
            now,
            "get",
            bridge.real_jid,
            payload,
            on_result=lambda _n, _r: None,
            on_error=lambda _n, _e: None,
            timeout=self.config.colibri_timeout,
        )
        room.conference_created = False

    def _reinvite_one(self, now: float, room: Room, nick: str) -> None:
        """The bridge lost one endpoint (unknown_endpoint): re-invite only that participant."""
        p = room.participants.get(nick)
        if p is None:
            return
        self.stats["participants_reinvited"] += 1
        p.endpoint = None
        self._terminate(room, p, "endpoint lost: reinvite")
        self._maybe_invite(now, room)


# ---- conversions (pure)


def _stats_id(p: Participant) -> str:
    """The display name (free text from the client) cut to what a bridge accepts as `stats-id`."""
    return (p.display_name or p.nick)[: c2.MAX_STATS_ID_LENGTH]


def _muc_x() -> ET.Element:
    x = ET.Element(q(NS_MUC, "x"))
    ET.SubElement(x, q(NS_MUC, "history"), {"maxstanzas": "0"})
    return x


def jingle_transport(ice: c2.IceUdpTransport) -> IceTransport:
    """The bridge's ICE transport as Jingle carries it (candidates, rtcp-mux, fingerprints, web-socket)."""
    return IceTransport(
        ufrag=ice.ufrag,
        pwd=ice.pwd,
        candidates=ice.candidates,
        rtcp_mux=True,
        fingerprints=ice.fingerprints,
        web_sockets=ice.web_sockets,
    )


def colibri_ice(t: IceTransport) -> c2.IceUdpTransport:
    return c2.IceUdpTransport(
        ufrag=t.ufrag,
        pwd=t.pwd,
        candidates=t.candidates,
        rtcp_mux=True,
        fingerprints=t.fingerprints,
    )


def named_sources(owner: str, sources: EndpointSources) -> EndpointSources:
    """Sources owned by `owner` (whatever the client claimed), named `<owner>-a0`/`-v0` when unnamed."""

    def fix(srcs: tuple[Source, ...], letter: str) -> tuple[Source, ...]:
        return tuple(replace(s, owner=owner, name=s.name or f"{owner}-{letter}0") for s in srcs)

    return replace(sources, audio=fix(sources.audio, "a"), video=fix(sources.video, "v"))


def merge_sources(a: EndpointSources, b: EndpointSources) -> EndpointSources:
    return EndpointSources(
        audio=a.audio + tuple(s for s in b.audio if s.ssrc not in a.ssrcs),
        audio_groups=a.audio_groups + tuple(g for g in b.audio_groups if g not in a.audio_groups),
        video=a.video + tuple(s for s in b.video if s.ssrc not in a.ssrcs),
        video_groups=a.video_groups + tuple(g for g in b.video_groups if g not in a.video_groups),
    )


def remove_ssrcs(a: EndpointSources, ssrcs: frozenset[int]) -> EndpointSources:
    def keep_groups(groups: tuple[SsrcGroup, ...]) -> tuple[SsrcGroup, ...]:
        return tuple(g for g in groups if not set(g.ssrcs) & ssrcs)

    return EndpointSources(
        audio=tuple(s for s in a.audio if s.ssrc not in ssrcs),
        audio_groups=keep_groups(a.audio_groups),
        video=tuple(s for s in a.video if s.ssrc not in ssrcs),
        video_groups=keep_groups(a.video_groups),
    )


def diff_sources(a: EndpointSources, b: EndpointSources) -> EndpointSources:
    """What `a` has that `b` has not (sources by SSRC, groups by value)."""
    return EndpointSources(
        audio=tuple(s for s in a.audio if s.ssrc not in b.ssrcs),
        audio_groups=tuple(g for g in a.audio_groups if g not in b.audio_groups),
        video=tuple(s for s in a.video if s.ssrc not in b.ssrcs),
        video_groups=tuple(g for g in a.video_groups if g not in b.video_groups),
    )


def inline_sources(
    owned: Iterable[tuple[str, EndpointSources]], kind: str
) -> tuple[tuple[Source, ...], tuple[SsrcGroup, ...]]:
    """Inline `<source>`s (with `ssrc-info owner`) and groups of one media kind, for clients without JSON."""
    srcs: list[Source] = []
    groups: list[SsrcGroup] = []
    for owner, es in owned:
        s, g = es.of(kind)
        srcs.extend(replace(x, owner=owner) for x in s)
        groups.extend(g)
    return tuple(srcs), tuple(groups)


def colibri_sources(owner: str, es: EndpointSources) -> tuple[c2.MediaSource, ...]:
    """The participant's sources as Colibri2 media-sources, one per source name (2.2)."""
    out: list[c2.MediaSource] = []
    for kind in ("audio", "video"):
        srcs, groups = es.of(kind)
        names: dict[str, list[Source]] = {}
        for s in srcs:
            names.setdefault(s.name or f"{owner}-{kind[0]}0", []).append(s)
        for name, members in names.items():
            ssrcs = {s.ssrc for s in members}
            out.append(
                c2.MediaSource(
                    type=kind,
                    id=name,
                    sources=tuple(
                        c2.SourceDesc(
                            ssrc=s.ssrc, name=name, video_type=s.video_type, parameters=s.parameters
                        )
                        for s in members
                    ),
                    ssrc_groups=tuple(
                        c2.SsrcGroupDesc(g.semantics, g.ssrcs) for g in groups if set(g.ssrcs) <= ssrcs
                    ),
                )
            )
    return tuple(out)


def feedback_sources(media_sources: Iterable[c2.MediaSource]) -> EndpointSources:
    """The bridge's `jvb-a0`/`jvb-v0` sources with the msids Jicofo gives them (2.4)."""
    by_kind: dict[str, list[Source]] = {"audio": [], "video": []}
    for ms in media_sources:
        if ms.type not in by_kind:
            continue
        for s in ms.sources:
            if s.ssrc is None:
                continue
            by_kind[ms.type].append(
                Source(
                    ssrc=s.ssrc,
                    name=s.name or ms.id,
                    parameters=(Parameter("msid", FEEDBACK_MSID[ms.type]),),
                    owner=JVB_OWNER,
                )
            )
    return EndpointSources(audio=tuple(by_kind["audio"]), video=tuple(by_kind["video"]))
