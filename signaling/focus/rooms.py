"""Rooms (docs/jitsi-protocol.md 5.2-5.3): conference requests, the focus's own MUC joins, and the occupants.

A conference request for `room@conference.<domain>` makes the focus join that room (within the room quotas),
configure it (whois=anyone) and read its meetingId; the request is answered once that is done. Occupants
come and go with MUC presence: the first participant is granted owner, each one's client features are learnt
(XEP-0115), and the room is left when the last one goes or when nobody joins in time.
"""

from __future__ import annotations

import logging
import uuid
import xml.etree.ElementTree as ET

from colibri2 import model as c2
from signaling.focus import stanzas
from signaling.focus.colibri import Colibri
from signaling.focus.logids import log_ids
from signaling.focus.model import Participant, Room, Shared
from signaling.focus.mute import Mute
from signaling.focus.sessions import Sessions
from signaling.focus.stanzas import (
    FEATURE_JSON_SOURCES,
    NS_CAPS,
    NS_DISCO_INFO,
    NS_FOCUS,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_MUC_USER,
    NS_NICK,
    bare,
    muc_join,
    q,
)
from signaling.quota import RateLimit

log = logging.getLogger(__name__)


class Rooms:
    """The rooms the focus was asked for, from the conference request until the last participant leaves."""

    def __init__(self, shared: Shared, sessions: Sessions, mute: Mute, colibri: Colibri) -> None:
        self._shared = shared
        self._config = shared.config
        self._stats = shared.stats
        self._out = shared.out
        self._rooms = shared.rooms
        self._sessions = sessions
        self._mute = mute
        self._colibri = colibri
        self._creations = RateLimit(shared.config.rooms_per_minute, 60.0)
        self._creations_by_requester = RateLimit(shared.config.rooms_per_minute_per_requester, 60.0)
        #: XEP-0115 node#ver -> features, as learnt from clients.
        self._caps: dict[str, frozenset[str]] = {}

    # ---- the conference request (5.2)

    def handle_conference_request(self, now: float, request: ET.Element, payload: ET.Element) -> None:
        self._stats["conference_requests"] += 1
        room_jid = (payload.get("room") or "").lower()
        node, _, domain = room_jid.partition("@")
        if not node or "/" in room_jid or domain != self._config.muc_domain.lower():
            self._stats["errors_bad_request"] += 1
            self._out.send(
                stanzas.error(request, "bad-request", f"room must be <name>@{self._config.muc_domain}")
            )
            return
        room = self._rooms.get(room_jid)
        if room is None:
            refusal = self._quota(now, request.get("from", ""))
            if refusal is not None:
                self._out.send(stanzas.error(request, "resource-constraint", refusal))
                return
            room = Room(room_jid, join_deadline=now + self._config.room_join_timeout)
            self._rooms[room_jid] = room
            self._stats["rooms_created"] += 1
            log.info("focus: creating %s", room_jid, extra=log_ids(room))
            self._out.send(stanzas.presence(room.occupant(self._config.nickname), None, muc_join()))
        if room.state == "ready":
            self._out.send(self._conference_reply(request, room_jid))
        else:
            room.waiting.append(request)

    def _quota(self, now: float, requester: str) -> str | None:
        """Why one more room cannot be created now (counted), or None."""
        cfg = self._config
        why = None
        if len(self._rooms) >= cfg.max_rooms:
            why, text = "concurrent", f"this server holds {cfg.max_rooms} rooms already"
        elif not self._creations_by_requester.allow(bare(requester) or requester, now):
            why, text = "requester", f"at most {cfg.rooms_per_minute_per_requester} new rooms a minute each"
        elif not self._creations.allow("", now):
            why, text = "total", f"at most {cfg.rooms_per_minute} new rooms a minute"
        if why is None:
            return None
        self._stats["rooms_refused"] += 1
        self._stats[f"rooms_refused_{why}"] += 1
        log.info("focus: no new room for %s: %s", requester, text)
        return f"No new room: {text}; try again later"

    def _conference_reply(self, request: ET.Element, room_jid: str) -> ET.Element:
        conf = ET.Element(
            q(NS_FOCUS, "conference"), {"room": room_jid, "ready": "true", "focusjid": self._config.focus_jid}
        )
        for name, value in (
            ("authentication", "true" if self._config.owner_needs_login else "false"),
            ("externalAuth", "false"),
            ("sipGatewayEnabled", "false"),
        ):
            ET.SubElement(conf, q(NS_FOCUS, "property"), {"name": name, "value": value})
        return stanzas.result(request, conf)

    # ---- the room's lifecycle

    def _joined(self, now: float, room: Room) -> None:
        """Our own presence came back: configure the room (whois=anyone), then read its meetingId."""
        room.state = "configuring"
        query = ET.Element(q(NS_MUC_OWNER, "query"))
        query.append(
            stanzas.data_form(
                "http://jabber.org/protocol/muc#roomconfig",
                {"muc#roomconfig_whois": "anyone", "muc#roomconfig_persistentroom": "0"},
            )
        )
        self._out.request(
            now,
            "set",
            room.jid,
            query,
            on_result=lambda now, _reply: self._configured(now, room),
            on_error=lambda now, _err: self._configured(now, room),
        )

    def _configured(self, now: float, room: Room) -> None:
        disco = ET.Element(q(NS_DISCO_INFO, "query"))
        self._out.request(
            now,
            "get",
            room.jid,
            disco,
            on_result=lambda now, reply: self._described(now, room, reply),
            on_error=lambda now, _err: self._described(now, room, None),
        )

    def _described(self, now: float, room: Room, reply: ET.Element | None) -> None:
        meeting_id = None
        if reply is not None:
            query = reply.find(q(NS_DISCO_INFO, "query"))
            if query is not None:
                meeting_id = stanzas.form_value(query, "muc#roominfo_meetingId")
        room.meeting_id = meeting_id or str(uuid.uuid4())
        self._ready(now, room)

    def _ready(self, now: float, room: Room) -> None:
        if self._rooms.get(room.jid) is not room:
            return
        room.state = "ready"
        for request in room.waiting:
            self._out.send(self._conference_reply(request, room.jid))
        room.waiting.clear()
        if not room.participants:
            room.join_deadline = now + self._config.room_join_timeout
        self._sessions.maybe_invite(now, room)

    def _leave(self, now: float, room: Room) -> None:
        self._colibri.expire_conference(now, room)
        self._out.send(stanzas.presence(room.occupant(self._config.nickname), "unavailable"))
        self._rooms.pop(room.jid, None)

    def _give_up(self, now: float, room: Room) -> None:
        """Nobody joined in time (or the MUC never let us in): leave it; the MUC destroys it when empty."""
        self._stats["rooms_expired_unjoined"] += 1
        log.info("focus: nobody joined %s in time, leaving it", room.jid, extra=log_ids(room))
        for request in room.waiting:
            self._out.send(stanzas.error(request, "remote-server-timeout", f"{room.jid} could not be set up"))
        self._leave(now, room)

    def leave_all(self, now: float) -> None:
        """Expires every conference on its bridge and leaves every room."""
        for room in list(self._rooms.values()):
            self._leave(now, room)
        self._rooms.clear()

    def next_deadline(self) -> float | None:
        deadlines: list[float] = []
        for room in self._rooms.values():
            if room.join_deadline is not None:
                deadlines.append(room.join_deadline)
            deadlines.extend(room.avoid.values())
        return min(deadlines, default=None)

    def handle_timeout(self, now: float) -> None:
        for room in list(self._rooms.values()):
            if room.join_deadline is not None and room.join_deadline <= now and not room.participants:
                self._give_up(now, room)
            elif room.avoid and min(room.avoid.values()) <= now:
                room.avoid = {b: until for b, until in room.avoid.items() if until > now}
                self._sessions.maybe_invite(now, room)

    # ---- occupants

    def handle_presence(self, now: float, room_jid: str, nick: str, el: ET.Element) -> None:
        room = self._rooms.get(room_jid)
        if room is None or not nick:
            return
        ptype = el.get("type")
        x = el.find(q(NS_MUC_USER, "x"))
        codes = {s.get("code") for s in x.iterfind(q(NS_MUC_USER, "status"))} if x is not None else set()
        if nick == self._config.nickname or "110" in codes:
            self._own_presence(now, room, ptype, el)
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
            self._stats["participants_joined"] += 1
            if p.unallocatable:
                # The nick becomes the endpoint id; a bridge refuses ids outside the rule, so do not try.
                self._stats["participants_unallocatable_nick"] += 1
                log.info(
                    "focus: %r in %s is not a usable endpoint id; no media for it",
                    nick,
                    room.jid,
                    extra=log_ids(room),
                )
            log.info("focus: %s joined %s", nick, room.jid, extra=log_ids(room, nick))
        if item is not None:
            p.real_jid = item.get("jid") or p.real_jid
            p.role = item.get("role") or p.role
            p.affiliation = item.get("affiliation") or p.affiliation
        name = el.find(q(NS_NICK, "nick"))
        if name is not None:
            p.display_name = name.text
        if joined:
            self._mute.joined(now, room, p)
        self._mute.handle_presence(now, room, p, el)
        if joined:
            self._learn_features(now, room, p, el.find(q(NS_CAPS, "c")))
            self._maybe_grant_owner(now, room)
        self._sessions.maybe_invite(now, room)

    def _own_presence(self, now: float, room: Room, ptype: str | None, el: ET.Element) -> None:
        if ptype == "error":
            condition = stanzas.error_condition(el) or "service-unavailable"
            log.warning("focus: cannot join %s: %s", room.jid, condition, extra=log_ids(room))
            self._rooms.pop(room.jid, None)
            for request in room.waiting:
                self._out.send(stanzas.error(request, condition, f"the focus cannot join {room.jid}"))
            return
        if ptype == "unavailable":
            # Kicked or the room was destroyed (a moderator ended the meeting): the conference is over.
            x = el.find(q(NS_MUC_USER, "x"))
            ended = x is not None and x.find(q(NS_MUC_USER, "destroy")) is not None
            self._stats["rooms_ended_destroyed" if ended else "rooms_ended_focus_removed"] += 1
            log.info(
                "focus: %s %s; expiring its conference",
                room.jid,
                "destroyed" if ended else "left us",
                extra=log_ids(room),
            )
            self._colibri.expire_conference(now, room)
            self._rooms.pop(room.jid, None)
            return
        if room.state == "joining":
            self._joined(now, room)

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
        self._out.request(
            now,
            "get",
            room.occupant(p.nick),
            query,
            on_result=lambda now, reply: self._features_learnt(now, room, p, node, reply),
            on_error=lambda now, _err: self._features_unknown(now, room, p),
        )

    def _features_learnt(self, now: float, room: Room, p: Participant, node: str, reply: ET.Element) -> None:
        result = reply.find(q(NS_DISCO_INFO, "query"))
        feats = frozenset(
            f.get("var", "")
            for f in (result.iterfind(q(NS_DISCO_INFO, "feature")) if result is not None else ())
        )
        self._caps[node] = feats
        p.features = feats
        self._sessions.maybe_invite(now, room)

    def _features_unknown(self, now: float, room: Room, p: Participant) -> None:
        p.features = frozenset()
        self._sessions.maybe_invite(now, room)

    def _maybe_grant_owner(self, now: float, room: Room) -> None:
        """enable-auto-owner: the first participant (by join order) owns the room while nobody else does."""
        if any(p.affiliation == "owner" for p in room.participants.values()):
            return
        # One the MUC refused (its affiliation comes from its token) is passed over.
        first = next((p for p in room.participants.values() if self._may_own(p)), None)
        if first is None or first.real_jid is None:
            return
        query = ET.Element(q(NS_MUC_ADMIN, "query"))
        ET.SubElement(query, q(NS_MUC_ADMIN, "item"), {"affiliation": "owner", "jid": bare(first.real_jid)})
        previous, first.affiliation = first.affiliation, "owner"  # optimistic: the MUC's presence confirms it

        def refused(now: float, error: ET.Element | None) -> None:
            if error is None or first.affiliation != "owner":
                return  # timed out (the presence may still come) or changed since
            self._stats["owner_grants_refused"] += 1
            first.affiliation, first.owner_refused = previous, True
            if room.participants.get(first.nick) is first:
                self._maybe_grant_owner(now, room)

        self._out.request(now, "set", room.jid, query, on_result=lambda _now, _reply: None, on_error=refused)

    def _may_own(self, p: Participant) -> bool:
        if p.owner_refused:
            return False
        if not self._config.owner_needs_login:
            return True
        domain = bare(p.real_jid or "").partition("@")[2].lower()
        return domain == self._config.auth_domain.lower()

    def _participant_left(self, now: float, room: Room, nick: str) -> None:
        p = room.participants.pop(nick, None)
        if p is None:
            return
        self._stats["participants_left"] += 1
        log.info("focus: %s left %s", nick, room.jid, extra=log_ids(room, nick))
        if p.endpoint is not None:
            self._colibri.expire_endpoints(now, room, [nick])
        self._sessions.sync_all(now, room)
        if not room.participants:
            self._leave(now, room)
            log.info("focus: %s is empty, left it", room.jid, extra=log_ids(room))
            return
        self._maybe_grant_owner(now, room)
        self._sessions.maybe_invite(now, room)  # someone waiting for an endpoint may fit now
