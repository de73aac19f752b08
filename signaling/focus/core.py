"""The focus, sans-IO: every decision of docs/jitsi-protocol.md section 5, driven by stanzas and a clock
passed in.

`FocusCore` takes incoming stanzas (`handle_stanza(now, el)`) and the time (`handle_timeout(now)`), and hands
out stanzas to send (`poll_transmit()`) and when to be woken (`poll_timeout()`). It never reads a clock or
touches a socket; `signaling.focus.service.Focus` is the asyncio adapter around it.

What it does, in the order a call goes, and where:
- `rooms`: answers the conference IQ sent to `focus.<domain>` once its own join of `room@conference.<domain>`
  (nick `focus`, owner config whois=anyone, meetingId read from disco#info) succeeded; tracks occupants from
  MUC presence and grants owner to the first participant;
- `sessions`: once `min_participants` are in, allocates each on a bridge with Colibri2 and sends a
  session-initiate through the MUC; keeps bridge and participants in step on session-accept,
  transport-info, source-add/remove, session-terminate (with Jicofo's restart rate limits) and leaves,
  telling receivers simulcast-stripped sources; retries once, then reports, a session never accepted;
- `mute`: mute requests, self-unmutes seen in presence (`<SourceInfo>` or the legacy elements) and the
  bridge's force-mute;
- `bridges`: watches the brewery (stats presence, trust, health-check IQs), chooses a room's bridge, and
  moves the conferences of a failed bridge;
- `colibri`: each room's Colibri2 requests, one at a time, and what their answers mean.

This class only routes stanzas and timers to those parts, owns the outbox they share (stanzas to send and IQ
requests waiting for replies), and passes on what one part tells another.
"""

from __future__ import annotations

import logging
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable

from colibri2 import model as c2
from signaling.focus import stanzas
from signaling.focus.bridges import BridgeInfo, Bridges
from signaling.focus.colibri import Colibri
from signaling.focus.config import FocusConfig
from signaling.focus.model import Participant, Room, Shared
from signaling.focus.mute import AV_MODERATION_TAG, MUTE_TAGS, Mute
from signaling.focus.outbox import Outbox
from signaling.focus.rooms import Rooms
from signaling.focus.sessions import Sessions
from signaling.focus.stanzas import (
    NS_DISCO_INFO,
    NS_FOCUS,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_PING,
    bare,
    muc_join,
    q,
    resource,
)
from signaling.jingle.xml import NS_JINGLE

log = logging.getLogger(__name__)


class FocusCore:
    """The focus's state machine; see the module docstring."""

    def __init__(self, config: FocusConfig, *, new_id: Callable[[], str] | None = None) -> None:
        self.config = config
        self.rooms: dict[str, Room] = {}
        self.bridges: dict[str, BridgeInfo] = {}
        self.stats: Counter[str] = Counter()
        self._out = Outbox(new_id or (lambda: uuid.uuid4().hex), self.stats, iq_timeout=config.iq_timeout)
        shared = Shared(config, self.stats, self._out, self.rooms, self.bridges)
        self._colibri = Colibri(shared, self)
        self._bridges = Bridges(shared, self._colibri, self)
        self._sessions = Sessions(shared, self._colibri, self._bridges)
        self._mute = Mute(shared, self._colibri)
        self._rooms = Rooms(shared, self._sessions, self._mute, self._colibri)
        self._started = False

    # ---- the sans-IO surface

    def start(self, now: float) -> None:
        """Called once the c2s session is bound: joins the brewery."""
        self._started = True
        self._out.send(stanzas.presence(self._brewery_occupant, None, muc_join()))

    def stop(self, now: float) -> None:
        """Expires every conference on its bridge and leaves every room and the brewery."""
        self._rooms.leave_all(now)
        if self._started:
            self._out.send(stanzas.presence(self._brewery_occupant, "unavailable"))
        self._started = False

    def reset(self) -> None:
        """The connection was lost: everything the focus knew about rooms and bridges is gone."""
        self.rooms.clear()
        self._bridges.reset()
        self._sessions.reset()
        self._out.clear()
        self._started = False

    # ---- the operator's view and actions (the admin page, through whoever hosts the focus)

    def gauges(self) -> dict[str, int]:
        """Current rooms, participants and bridges (the counters are `stats`)."""
        return {
            "rooms": len(self.rooms),
            "participants": sum(len(r.participants) for r in self.rooms.values()),
            "bridges": len(self.bridges),
            "bridges_operational": sum(1 for b in self.bridges.values() if b.selectable),
        }

    def end_meeting(self, now: float, room_jid: str, reason: str) -> bool:
        """Destroys the room as its owner (the focus owns every room): everyone is sent away with `reason`,
        and the focus's own presence going then expires the conference. False: no such room."""
        room = self.rooms.get(room_jid)
        if room is None:
            return False
        query = ET.Element(q(NS_MUC_OWNER, "query"))
        ET.SubElement(
            ET.SubElement(query, q(NS_MUC_OWNER, "destroy")), q(NS_MUC_OWNER, "reason")
        ).text = reason
        self.stats["operator_meetings_ended"] += 1
        self._out.fire(now, "set", room.jid, query)
        return True

    def kick(self, now: float, room_jid: str, nick: str, reason: str) -> bool:
        """Removes one participant (role none, XEP-0045 8.2). False: no such room or participant."""
        room = self.rooms.get(room_jid)
        if room is None or nick not in room.participants:
            return False
        query = ET.Element(q(NS_MUC_ADMIN, "query"))
        item = ET.SubElement(query, q(NS_MUC_ADMIN, "item"), {"nick": nick, "role": "none"})
        ET.SubElement(item, q(NS_MUC_ADMIN, "reason")).text = reason
        self.stats["operator_kicks"] += 1
        self._out.fire(now, "set", room.jid, query)
        return True

    def poll_transmit(self) -> ET.Element | None:
        return self._out.poll()

    def poll_timeout(self) -> float | None:
        deadlines = (
            self._out.next_deadline(),
            self._bridges.next_deadline(),
            self._rooms.next_deadline(),
            self._sessions.next_deadline(),
        )
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timeout(self, now: float) -> None:
        self._out.handle_timeout(now)
        self._bridges.handle_timeout(now)
        self._rooms.handle_timeout(now)
        self._sessions.handle_timeout(now)

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
                self._out.send(
                    stanzas.error(el, "internal-server-error", "the focus failed to handle this request")
                )

    @property
    def _brewery_occupant(self) -> str:
        return f"{self.config.brewery_jid}/{self.config.nickname}"

    # ---- routing

    def _on_iq(self, now: float, el: ET.Element) -> None:
        iq_type = el.get("type")
        if iq_type in ("result", "error"):
            self._out.handle_reply(now, el)
            return
        if iq_type not in ("get", "set"):
            self._out.send(stanzas.error(el, "bad-request", f"unknown IQ type {iq_type!r}"))
            return
        payload = next(iter(el), None)
        if payload is not None and iq_type == "set":
            if payload.tag == q(NS_FOCUS, "conference"):
                self._rooms.handle_conference_request(now, el, payload)
                return
            if payload.tag == q(NS_JINGLE, "jingle"):
                self._sessions.handle_jingle(now, el)
                return
            if payload.tag in MUTE_TAGS or payload.tag == AV_MODERATION_TAG:
                self._mute.handle(now, el, payload)
                return
        tag = payload.tag if payload is not None else ""
        if tag == q(NS_PING, "ping"):
            self._out.send(stanzas.result(el))
        elif tag == q(NS_DISCO_INFO, "query") and iq_type == "get":
            self._out.send(stanzas.result(el, self._disco_info()))
        elif tag == "{jabber:iq:roster}query":
            return  # roster pushes: the XMPP library's business
        else:
            self.stats["iq_unsupported"] += 1
            self._out.send(stanzas.error(el, "service-unavailable", "unsupported IQ request"))

    @staticmethod
    def _disco_info() -> ET.Element:
        query = ET.Element(q(NS_DISCO_INFO, "query"))
        ET.SubElement(query, q(NS_DISCO_INFO, "identity"), {"category": "component", "type": "focus"})
        for var in (NS_DISCO_INFO, NS_FOCUS, NS_PING, "urn:xmpp:jingle:1"):
            ET.SubElement(query, q(NS_DISCO_INFO, "feature"), {"var": var})
        return query

    def _on_presence(self, now: float, el: ET.Element) -> None:
        sender = el.get("from", "")
        room_jid, nick = bare(sender), resource(sender)
        if room_jid == self.config.brewery_jid:
            self._bridges.handle_presence(now, nick, el)
        else:
            self._rooms.handle_presence(now, room_jid, nick, el)

    # ---- what one part tells another (ColibriEvents, BridgeEvents)

    def endpoint_allocated(self, now: float, room: Room, p: Participant, ice: c2.IceUdpTransport) -> None:
        self._sessions.initiate(now, room, p, ice)

    def endpoint_lost(self, now: float, room: Room, nick: str) -> None:
        self._sessions.reinvite_one(now, room, nick)

    def ice_restarted(self, now: float, room: Room, p: Participant, ice: c2.IceUdpTransport | None) -> None:
        self._sessions.send_ice_restart(now, room, p, ice)

    def conference_failed(self, now: float, room: Room, why: str) -> None:
        self._bridges.restart_conference(now, room, why)

    def bridge_unreachable(self, now: float, jid: str, why: str) -> None:
        self._bridges.fail(now, jid, why)

    def room_moved(self, now: float, room: Room) -> None:
        self._sessions.reinvite_all(now, room)

    def bridge_available(self, now: float) -> None:
        self._sessions.invite_all(now)
