"""Multi-User Chat (XEP-0045), sans-IO: one service domain's rooms; stanzas in, stanzas out.

`MucService.handle(stanza, sender, to)` takes a stanza a local user sent to the service, its room or an
occupant JID, and returns the stanzas to deliver, each addressed (`to`) to a real full JID. The router
delivers them; nothing here touches a connection or a clock.

Behaviour follows the Jitsi Prosody setup: rooms are not locked on creation (`muc_room_locking = false`),
non-anonymous by default (`muc_room_default_public_jids = true`, whois=anyone), temporary (destroyed when
the last occupant leaves), and a service may restrict creation to admins (`restrict_room_creation`).
Each room gets a `muc#roominfo_meetingId` UUID on creation (Jitsi's mod_muc_meeting_id). A session with a
verified token (token.py) joins only rooms its `room` claim names, as owner with `moderator` and member
without (Jitsi's token moderation), and is shown by its token's name and `<identity>`.

The lobby is Jitsi's mod_muc_lobby_rooms: a conference service made with `lobby=` (a second service, on
`lobby.<domain>`) opens a lobby room for each room an owner turns members-only; a refused join names it
(`<lobbyroom>`), knockers wait there seen only by the moderators, a `member` affiliation on the room sends
them its invitation, a kick from the lobby turns them away, and knocks are bounded and expire
(`expire_knocks`). docs/security.md has the protocol and the counters.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from signaling.xmpp.jid import Jid, JidError
from signaling.xmpp.token import TokenClaims
from signaling.xmpp.xmlutil import (
    IQ,
    MESSAGE,
    NS_CLIENT,
    NS_DATA,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PING,
    PRESENCE,
    error_reply,
    iq_result,
)

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = f"{NS_MUC}#user"
NS_MUC_ADMIN = f"{NS_MUC}#admin"
NS_MUC_OWNER = f"{NS_MUC}#owner"
NS_ROOMCONFIG = f"{NS_MUC}#roomconfig"
NS_ROOMINFO = f"{NS_MUC}#roominfo"
NS_NICK = "http://jabber.org/protocol/nick"
NS_JITMEET = "http://jitsi.org/jitmeet"
NS_CONFERENCE = "jabber:x:conference"
#: The room-info field naming a room's lobby (Jitsi's mod_muc_lobby_rooms; clients read it from disco#info).
LOBBY_FIELD = "muc#roominfo_lobbyroom"
LOBBY_COUNTERS = (
    "lobby_enabled", "lobby_disabled", "lobby_knocks", "lobby_admitted", "lobby_rejected",
    "lobby_knocks_expired", "lobby_full", "lobby_bypassed_password", "lobby_bypassed_token", "lobby_refused",
    "muc_moderation_refused",
)  # fmt: skip

AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")
ROLES = ("moderator", "participant", "visitor", "none")

# XEP-0045 §15.6 status codes used here.
STATUS_NON_ANONYMOUS = "100"
STATUS_SELF = "110"
STATUS_CONFIG_CHANGED = "104"
STATUS_NOW_NON_ANONYMOUS = "172"
STATUS_NOW_SEMI_ANONYMOUS = "173"
STATUS_CREATED = "201"
STATUS_BANNED = "301"
STATUS_NICK_CHANGED = "303"
STATUS_KICKED = "307"


@dataclass(slots=True)
class RoomConfig:
    name: str = ""
    description: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password: str = ""
    #: "anyone" (non-anonymous: every occupant sees real JIDs) or "moderators" (semi-anonymous).
    whois: str = "anyone"
    change_subject: bool = False

    @property
    def password_protected(self) -> bool:
        return bool(self.password)


@dataclass(slots=True)
class Occupant:
    nick: str
    jid: Jid
    role: str
    #: The payload of the occupant's last available presence, without the MUC elements.
    payload: list[ET.Element] = field(default_factory=list)
    #: When it joined (the `now` of `MucService.handle`): a lobby knock expires from then.
    joined_at: float = 0.0


@dataclass(slots=True)
class Room:
    jid: Jid
    meeting_id: str
    config: RoomConfig = field(default_factory=RoomConfig)
    occupants: dict[str, Occupant] = field(default_factory=dict)
    affiliations: dict[Jid, str] = field(default_factory=dict)
    subject: str = ""
    #: The room's lobby room while the lobby is on (members-only with a lobby service), else None.
    lobby: Jid | None = None

    def affiliation(self, jid: Jid) -> str:
        return self.affiliations.get(jid.bare, "none")

    def occupant_of(self, real: Jid) -> Occupant | None:
        return next((o for o in self.occupants.values() if o.jid == real), None)

    def occupant_jid(self, nick: str) -> str:
        return f"{self.jid}/{nick}"


class MucError(Exception):
    """A request we refuse: becomes the error reply of the stanza."""

    def __init__(
        self,
        condition: str,
        error_type: str = "cancel",
        text: str | None = None,
        extra: Iterable[ET.Element] = (),
        counter: str | None = None,
    ) -> None:
        super().__init__(text or condition)
        self.condition = condition
        self.error_type = error_type
        self.text = text
        #: Children added to the error stanza (a refused join's `<lobbyroom>`).
        self.extra = list(extra)
        #: A counter to bump besides `muc_errors` (a refusal an operator wants to see by name).
        self.counter = counter


class _Silent(Exception):
    """A stanza dropped without an answer (an outsider's unavailable presence)."""


def _role_for(affiliation: str, config: RoomConfig) -> str:
    if affiliation in ("owner", "admin"):
        return "moderator"
    if config.moderated and affiliation == "none":
        return "visitor"
    return "participant"


def _bool(value: str) -> bool:
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise MucError("not-acceptable", "modify", f"not a boolean: {value!r}")


class MucService:
    """The rooms of one MUC domain (e.g. `conference.meet.sluice`)."""

    def __init__(
        self,
        domain: str,
        *,
        restrict_creation: bool,
        is_admin: Callable[[Jid], bool],
        max_occupants: int = 500,
        counters: Counter[str] | None = None,
        new_meeting_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        name: str = "Chatrooms",
        admit: Callable[[Jid], bool] | None = None,
        default_whois: str = "anyone",
        creator_is_owner: bool = True,
        max_rooms_per_occupant: int | None = None,
        on_destroyed: Callable[[Jid], None] | None = None,
        join_check: Callable[[Jid, Jid], MucError | None] | None = None,
        token_of: Callable[[Jid], TokenClaims | None] | None = None,
        lobby: MucService | None = None,
        knock_timeout: float = 300.0,
    ) -> None:
        self.domain = domain
        self.restrict_creation = restrict_creation
        self.is_admin = is_admin
        self.max_occupants = max_occupants
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.new_meeting_id = new_meeting_id
        self.name = name
        #: Who may use the service at all (bare JIDs); None: everyone. Others get `forbidden` on anything.
        self.admit = admit
        #: whois of new rooms: "moderators" keeps real JIDs from everyone but moderators (admins).
        self.default_whois = default_whois
        #: False: the creator of a room gets no owner affiliation (only admins own rooms here).
        self.creator_is_owner = creator_is_owner
        #: Rooms of this service one full JID may be in at once (None: unbounded).
        self.max_rooms_per_occupant = max_rooms_per_occupant
        #: Called with each destroyed room's JID (quota bookkeeping outside the service).
        self.on_destroyed = on_destroyed
        #: Asked before each join (sender, room): a refusal to send back, or None (a token's room claim).
        self.join_check = join_check
        #: A session's verified token (full JID -> claims): its affiliation and its name in presence come
        #: from it (Jitsi's token affiliation and presence identity), and nobody else may change either.
        self.token_of = token_of
        #: The lobby service (`lobby.<domain>`) of this one: members-only rooms get a lobby room there.
        self.lobby = lobby
        #: Set on a lobby service: its rooms' main rooms (lobby room -> main room), and that service.
        self.main: MucService | None = None
        #: A lobby service: how long a knock may wait unanswered before it is sent away (seconds).
        self.knock_timeout = knock_timeout
        self.rooms: dict[Jid, Room] = {}
        #: The time `handle` was called with (sans-IO: the caller owns the clock).
        self._now = 0.0
        if lobby is not None:
            lobby.main = self
            for event in LOBBY_COUNTERS:  # each shows in /metrics from the start (0)
                self.counters[event] = 0

    @property
    def is_lobby(self) -> bool:
        return self.main is not None

    # ---- entry points

    def handle(self, stanza: ET.Element, sender: Jid, to: Jid, now: float = 0.0) -> list[ET.Element]:
        """One stanza from the local full JID `sender` to `to` (the service, a room, or an occupant)."""
        out: list[ET.Element] = []
        self._now = now
        try:
            if self.admit is not None and not self.admit(sender.bare):
                self._refuse_outsider(stanza, sender, to)
            if not to.local:
                self._service_stanza(stanza, sender, out)
            elif stanza.tag == PRESENCE:
                self._presence(stanza, sender, to, out)
            elif stanza.tag == MESSAGE:
                self._message(stanza, sender, to, out)
            elif stanza.tag == IQ:
                self._iq(stanza, sender, to, out)
        except _Silent:
            pass
        except MucError as err:
            self.counters["muc_errors"] += 1
            if err.counter is not None:
                self.counters[err.counter] += 1
            reply = error_reply(stanza, err.condition, err.error_type, err.text)
            if reply is not None:
                reply.extend(err.extra)
                reply.set("to", str(sender))
                reply.set("from", str(to))
                error = reply.find(f"{{{NS_CLIENT}}}error")
                if error is not None:
                    error.set("by", str(to.bare))
                if stanza.tag == PRESENCE and error is not None:
                    # XEP-0045 §7.2.6: a refused join echoes <x xmlns=muc/>; clients match errors on it.
                    reply.insert(0, ET.Element(f"{{{NS_MUC}}}x"))
                out.append(reply)
        return out

    def _refuse_outsider(self, stanza: ET.Element, sender: Jid, to: Jid) -> None:
        """Raises `forbidden` for a sender the service does not admit; its presence leaves no trace."""
        self.counters["muc_outsiders_refused"] += 1
        if stanza.tag == PRESENCE and stanza.get("type") not in (None, "error"):
            raise _Silent
        raise MucError("forbidden", "auth", "This service is for the deployment's components only")

    def rooms_of(self, real: Jid) -> int:
        """How many rooms of this service `real` (a full JID) is in."""
        return sum(1 for room in self.rooms.values() if room.occupant_of(real) is not None)

    def session_ended(self, real: Jid) -> list[ET.Element]:
        """`real` (a full JID) went away: it leaves every room it was in, as if it sent unavailable."""
        out: list[ET.Element] = []
        for room in list(self.rooms.values()):
            occupant = room.occupant_of(real)
            if occupant is not None:
                self._leave(room, occupant, [], out)
        return out

    # ---- service domain

    def _service_stanza(self, stanza: ET.Element, sender: Jid, out: list[ET.Element]) -> None:
        if stanza.tag != IQ:
            if stanza.tag == MESSAGE and stanza.get("type") not in ("error", "groupchat"):
                raise MucError("service-unavailable")
            return
        kind = stanza.get("type")
        if kind not in ("get", "set"):
            return
        payload = stanza[0] if len(stanza) else None
        tag = payload.tag if payload is not None else ""
        if kind == "get" and tag == f"{{{NS_DISCO_INFO}}}query":
            query = ET.Element(tag)
            ET.SubElement(
                query,
                f"{{{NS_DISCO_INFO}}}identity",
                {"category": "conference", "type": "text", "name": self.name},
            )
            for feature in (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC, NS_PING):
                ET.SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": feature})
            out.append(self._result(stanza, sender, query))
        elif kind == "get" and tag == f"{{{NS_DISCO_ITEMS}}}query":
            query = ET.Element(tag)
            for room in self.rooms.values():
                if room.config.public:
                    name = room.config.name or room.jid.local
                    ET.SubElement(query, f"{{{NS_DISCO_ITEMS}}}item", {"jid": str(room.jid), "name": name})
            out.append(self._result(stanza, sender, query))
        elif kind == "get" and tag == f"{{{NS_PING}}}ping":
            out.append(self._result(stanza, sender, None))
        else:
            raise MucError("service-unavailable")

    @staticmethod
    def _result(request: ET.Element, sender: Jid, payload: ET.Element | None) -> ET.Element:
        reply = iq_result(request, payload)
        reply.set("to", str(sender))
        return reply

    # ---- presence: join, update, nick change, leave

    def _presence(self, stanza: ET.Element, sender: Jid, to: Jid, out: list[ET.Element]) -> None:
        kind = stanza.get("type")
        room = self.rooms.get(to.bare)
        occupant = room.occupant_of(sender) if room else None
        if kind in ("unavailable", "error"):
            if room is not None and occupant is not None:
                self._leave(room, occupant, _status_children(stanza) if kind == "unavailable" else [], out)
            return
        if kind is not None:
            return  # subscriptions and probes mean nothing to a room
        if not to.resource:
            raise MucError("jid-malformed", "modify", "join with room@service/nick")
        if room is not None and occupant is not None:
            if occupant.nick == to.resource:
                occupant.payload = self._own_payload(sender, stanza)
                self._broadcast_presence(room, occupant, out, stanza_id=stanza.get("id"))
            else:
                self._change_nick(room, occupant, to.resource, stanza, out)
            return
        self._join(room, stanza, sender, to, out)

    def _join(
        self, room: Room | None, stanza: ET.Element, sender: Jid, to: Jid, out: list[ET.Element]
    ) -> None:
        nick = to.resource
        muc_x = stanza.find(f"{{{NS_MUC}}}x")
        password = muc_x.findtext(f"{{{NS_MUC}}}password") if muc_x is not None else None
        created = room is None
        limit = self.max_rooms_per_occupant
        if limit is not None and not self.is_admin(sender.bare) and self.rooms_of(sender) >= limit:
            self.counters["muc_join_refused"] += 1
            self.counters["muc_rooms_per_occupant_refused"] += 1
            raise MucError("resource-constraint", "wait", f"You are in {limit} rooms already")
        refused = self.join_check(sender, to.bare) if self.join_check is not None else None
        if refused is not None:
            self.counters["muc_join_refused"] += 1
            raise refused
        if room is None:
            if self.restrict_creation and not self.is_admin(sender.bare):
                self.counters["muc_join_refused"] += 1
                raise MucError("not-allowed", "cancel", "Room creation is restricted")
            room = Room(to.bare, self.new_meeting_id(), config=RoomConfig(whois=self.default_whois))
            if self.creator_is_owner:
                room.affiliations[sender.bare] = "owner"
        else:
            affiliation = room.affiliation(sender)
            claims = self._claims(sender)
            refusal: MucError | None = None
            if affiliation == "outcast":
                refusal = MucError("forbidden", "auth", "You are banned from this room")
            elif room.config.members_only and affiliation == "none":
                refusal = self._members_only(room, sender, claims, password)
            elif (
                room.config.password_protected
                and affiliation not in ("owner", "admin")
                and password != room.config.password
            ):
                refusal = MucError("not-authorized", "auth", "A password is required to join this room")
            elif nick in room.occupants:
                refusal = MucError("conflict", "cancel", "That nickname is already in use")
            elif (
                not (self.is_lobby and affiliation in ("owner", "admin"))  # a full lobby's moderators get in
                and len(self._knockers(room) if self.is_lobby else room.occupants) >= self.max_occupants
            ):
                if self.is_lobby:
                    self.counters["lobby_full"] += 1
                    text = f"The lobby is full ({self.max_occupants} waiting): try again later"
                else:
                    text = "The room is full"
                refusal = MucError("service-unavailable", "wait", text)
            if refusal is not None:
                self.counters["muc_join_refused"] += 1
                raise refusal
        if created:
            self.rooms[room.jid] = room
            self.counters["muc_rooms_created"] += 1
        if self.is_admin(sender.bare) and room.affiliation(sender) != "owner":
            room.affiliations[sender.bare] = "owner"  # service admins own every room (as in Prosody)
        claims = self._claims(sender)
        if claims is not None:
            # Jitsi's token moderation: `moderator` makes an owner (so a moderator), else a member.
            room.affiliations[sender.bare] = "owner" if claims.moderator else "member"
        occupant = Occupant(
            nick,
            sender,
            _role_for(room.affiliation(sender), room.config),
            self._own_payload(sender, stanza),
            joined_at=self._now,
        )
        for other in room.occupants.values():
            if self._sees(occupant, other):
                out.append(self._presence_of(room, other, occupant))
        room.occupants[nick] = occupant
        self.counters["muc_joins"] += 1
        if self.is_lobby and occupant.role != "moderator":
            self.counters["lobby_knocks"] += 1
        extra = [STATUS_CREATED] if created else []
        self._broadcast_presence(room, occupant, out, self_codes=extra, stanza_id=stanza.get("id"))
        subject = ET.Element(MESSAGE, {"type": "groupchat", "from": str(room.jid), "to": str(sender)})
        ET.SubElement(subject, f"{{{NS_CLIENT}}}subject").text = room.subject or None
        out.append(subject)

    def _members_only(
        self, room: Room, sender: Jid, claims: TokenClaims | None, password: str | None
    ) -> MucError | None:
        """A join of a members-only room by a non-member: refused, unless the room has a lobby and the
        joiner bypasses it (the room's password, or a token with `moderator`, as in Jitsi)."""
        if room.lobby is None:
            return MucError("registration-required", "auth", "Members only")
        if claims is not None and claims.moderator:
            self.counters["lobby_bypassed_token"] += 1
            return None
        if room.config.password_protected and password == room.config.password:
            # Jitsi's lobby password bypass: the password makes a member (it comes back without the lobby).
            room.affiliations[sender.bare] = "member"
            self.counters["lobby_bypassed_password"] += 1
            return None
        lobbyroom = ET.Element(f"{{{NS_JITMEET}}}lobbyroom")
        lobbyroom.text = str(room.lobby)
        return MucError("registration-required", "auth", "The lobby is on: knock to join", [lobbyroom])

    def _leave(self, room: Room, occupant: Occupant, status: list[ET.Element], out: list[ET.Element]) -> None:
        del room.occupants[occupant.nick]
        occupant.role = "none"
        occupant.payload = status
        self._send_unavailable(room, occupant, out, codes=[])
        self.counters["muc_leaves"] += 1
        self._maybe_destroy(room, out)

    def _maybe_destroy(self, room: Room, out: list[ET.Element]) -> None:
        if not room.occupants and not room.config.persistent and self.rooms.get(room.jid) is room:
            self._forget(room, out)

    # ---- lobby (Jitsi's mod_muc_lobby_rooms)

    def _sees(self, recipient: Occupant, occupant: Occupant) -> bool:
        """In a lobby room knockers see only themselves (and are not shown to each other); moderators see
        everyone. Elsewhere every occupant sees every other."""
        return not self.is_lobby or recipient is occupant or recipient.role == "moderator"

    @staticmethod
    def _knockers(room: Room) -> list[Occupant]:
        return [o for o in room.occupants.values() if o.role != "moderator"]

    def _lobby_room_of(self, room: Room) -> Room | None:
        if self.lobby is None or room.lobby is None:
            return None
        return self.lobby.rooms.get(room.lobby)

    def _lobby_changed(self, room: Room, was_on: bool, out: list[ET.Element]) -> None:
        """members-only turned on (a lobby room opens, its owners the main room's) or off (it closes; who
        waited there is sent to the main room: `<destroy jid=main room>`)."""
        if self.lobby is None:
            return
        on = room.config.members_only
        if on and not was_on and room.lobby is None:
            lobby_jid = Jid.parse(f"{room.jid.local}@{self.lobby.domain}")
            old = self.lobby.rooms.get(lobby_jid)
            if old is not None:
                self.lobby._destroy_room(old, None, "The lobby was reset", out)
            opened = Room(lobby_jid, room.meeting_id, config=RoomConfig(persistent=True, whois="moderators"))
            opened.affiliations = {
                j: "owner" for j, a in room.affiliations.items() if a in ("owner", "admin")
            }
            self.lobby.rooms[lobby_jid] = opened
            room.lobby = lobby_jid
            self.counters["lobby_enabled"] += 1
        elif not on and was_on and room.lobby is not None:
            lobby = self._lobby_room_of(room)
            room.lobby = None
            if lobby is not None:
                self.lobby._destroy_room(lobby, room.jid, "The lobby was turned off: join the meeting", out)
            self.counters["lobby_disabled"] += 1

    def _mirror_to_lobby(
        self, room: Room, target: Jid, value: str, actor: Jid, out: list[ET.Element]
    ) -> None:
        """An affiliation change in a main room, seen from its lobby: owners and admins moderate the lobby
        too; a member is admitted (each of its knocks gets the room's invitation)."""
        lobby = self._lobby_room_of(room)
        if lobby is None or self.lobby is None:
            return
        if value in ("owner", "admin"):
            lobby.affiliations[target] = "owner"
        else:
            lobby.affiliations.pop(target, None)
        for occupant in [o for o in lobby.occupants.values() if o.jid.bare == target]:
            role = _role_for(lobby.affiliation(occupant.jid), lobby.config)
            if role != occupant.role:
                occupant.role = role
                self.lobby._broadcast_presence(lobby, occupant, out)
            if value == "member":
                out.append(self._invitation(room, occupant.jid, actor))
                self.counters["lobby_admitted"] += 1

    def _invitation(self, room: Room, to: Jid, actor: Jid) -> ET.Element:
        """XEP-0045 §7.8.2's mediated invitation from the main room, with its password if it has one."""
        message = ET.Element(MESSAGE, {"from": str(room.jid), "to": str(to)})
        x = ET.SubElement(message, f"{{{NS_MUC_USER}}}x")
        inviter = room.occupant_of(actor)
        ET.SubElement(
            x,
            f"{{{NS_MUC_USER}}}invite",
            {"from": room.occupant_jid(inviter.nick) if inviter else str(room.jid)},
        )
        if room.config.password:
            ET.SubElement(x, f"{{{NS_MUC_USER}}}password").text = room.config.password
        ET.SubElement(message, f"{{{NS_CONFERENCE}}}x", {"jid": str(room.jid)})
        return message

    def _destroy_room(self, room: Room, venue: Jid | None, reason: str, out: list[ET.Element]) -> None:
        destroy = ET.Element(f"{{{NS_MUC_OWNER}}}destroy", {"jid": str(venue)} if venue else {})
        ET.SubElement(destroy, f"{{{NS_MUC_OWNER}}}reason").text = reason
        self._destroy(room, destroy, out)

    def expire_knocks(self, now: float) -> list[ET.Element]:
        """A lobby service: knocks unanswered for `knock_timeout` are sent away (kicked, with the reason)."""
        out: list[ET.Element] = []
        for room in list(self.rooms.values()):
            for occupant in self._knockers(room):
                if occupant.joined_at + self.knock_timeout <= now:
                    reason = ET.Element(f"{{{NS_MUC_ADMIN}}}item")
                    minutes = f"{self.knock_timeout / 60:g}"
                    ET.SubElement(
                        reason, f"{{{NS_MUC_ADMIN}}}reason"
                    ).text = f"Nobody let you in within {minutes} minutes: try again later"
                    self._kick(room, occupant, STATUS_KICKED, reason, out, counter="lobby_knocks_expired")
        return out

    def next_knock_deadline(self) -> float | None:
        return min(
            (o.joined_at + self.knock_timeout for r in self.rooms.values() for o in self._knockers(r)),
            default=None,
        )

    def _change_nick(
        self, room: Room, occupant: Occupant, new_nick: str, stanza: ET.Element, out: list[ET.Element]
    ) -> None:
        if new_nick in room.occupants:
            raise MucError("conflict", "cancel", "That nickname is already in use")
        # XEP-0045 §7.6: unavailable with 303 and the new nick, then available under the new nick.
        self._send_unavailable(room, occupant, out, codes=[STATUS_NICK_CHANGED], new_nick=new_nick)
        del room.occupants[occupant.nick]
        occupant.nick = new_nick
        occupant.payload = self._own_payload(occupant.jid, stanza)
        room.occupants[new_nick] = occupant
        self._broadcast_presence(room, occupant, out)

    def _send_unavailable(
        self,
        room: Room,
        occupant: Occupant,
        out: list[ET.Element],
        *,
        codes: list[str],
        new_nick: str | None = None,
        extra: Iterable[ET.Element] = (),
        reason: str | None = None,
    ) -> None:
        recipients = [r for r in room.occupants.values() if self._sees(r, occupant)]
        if occupant not in recipients:
            recipients.append(occupant)
        extra = list(extra)
        for recipient in recipients:
            pres = self._presence_of(
                room, occupant, recipient, codes=codes, new_nick=new_nick, extra=extra, reason=reason
            )
            pres.set("type", "unavailable")
            out.append(pres)

    def _broadcast_presence(
        self,
        room: Room,
        occupant: Occupant,
        out: list[ET.Element],
        self_codes: Iterable[str] = (),
        stanza_id: str | None = None,
    ) -> None:
        for recipient in room.occupants.values():
            if not self._sees(recipient, occupant):
                continue
            codes = list(self_codes) if recipient is occupant else []
            pres = self._presence_of(room, occupant, recipient, codes=codes)
            if recipient is occupant and stanza_id:
                pres.set("id", stanza_id)  # XEP-0045 §7.2.3: the self-presence reflects the join's id
            out.append(pres)

    def _presence_of(
        self,
        room: Room,
        occupant: Occupant,
        recipient: Occupant,
        *,
        codes: Iterable[str] = (),
        new_nick: str | None = None,
        extra: Iterable[ET.Element] = (),
        reason: str | None = None,
    ) -> ET.Element:
        """`occupant`'s presence as `recipient` sees it (XEP-0045 §7.2.3: jid only where whois allows)."""
        pres = ET.Element(PRESENCE, {"from": room.occupant_jid(occupant.nick), "to": str(recipient.jid)})
        pres.extend(occupant.payload)
        x = ET.SubElement(pres, f"{{{NS_MUC_USER}}}x")
        item = ET.SubElement(
            x,
            f"{{{NS_MUC_USER}}}item",
            {"affiliation": room.affiliation(occupant.jid), "role": occupant.role},
        )
        if room.config.whois == "anyone" or recipient.role == "moderator":
            item.set("jid", str(occupant.jid))
        if new_nick is not None:
            item.set("nick", new_nick)
        if reason:
            ET.SubElement(item, f"{{{NS_MUC_USER}}}reason").text = reason
        x.extend(extra)
        all_codes = list(codes)
        if recipient is occupant:
            if room.config.whois == "anyone":
                all_codes.insert(0, STATUS_NON_ANONYMOUS)
            all_codes.insert(0, STATUS_SELF)
        for code in all_codes:
            ET.SubElement(x, f"{{{NS_MUC_USER}}}status", {"code": code})
        return pres

    # ---- messages

    def _message(self, stanza: ET.Element, sender: Jid, to: Jid, out: list[ET.Element]) -> None:
        kind = stanza.get("type", "normal")
        room = self.rooms.get(to.bare)
        if room is None:
            if kind != "error":
                raise MucError("item-not-found", "cancel", "No such room")
            return
        occupant = room.occupant_of(sender)
        if to.resource:
            self._private(room, occupant, stanza, to.resource, out)
            return
        if kind == "error":
            return
        if kind != "groupchat":
            raise MucError("bad-request", "modify", "Only groupchat messages may be sent to the room")
        if occupant is None:
            raise MucError("not-acceptable", "modify", "You are not in this room")
        self._knocker_quiet(occupant)
        if occupant.role == "visitor":
            raise MucError("forbidden", "auth", "Visitors may not speak")
        subject = stanza.find(f"{{{NS_CLIENT}}}subject")
        if subject is not None and stanza.find(f"{{{NS_CLIENT}}}body") is None:
            if occupant.role != "moderator" and not room.config.change_subject:
                raise MucError("forbidden", "auth", "You may not change the subject")
            room.subject = subject.text or ""
        for recipient in room.occupants.values():
            copy = ET.Element(MESSAGE, {**stanza.attrib, "from": room.occupant_jid(occupant.nick)})
            copy.set("to", str(recipient.jid))
            copy.extend(list(stanza))
            out.append(copy)
        self.counters["muc_groupchat_messages"] += 1

    def _private(
        self, room: Room, occupant: Occupant | None, stanza: ET.Element, nick: str, out: list[ET.Element]
    ) -> None:
        kind = stanza.get("type", "normal")
        if occupant is None:
            if kind != "error":
                raise MucError("not-acceptable", "modify", "You are not in this room")
            return
        if kind == "groupchat":
            raise MucError("bad-request", "modify", "Groupchat messages go to the room")
        self._knocker_quiet(occupant)
        target = room.occupants.get(nick)
        if target is None:
            if kind != "error":
                raise MucError("item-not-found", "cancel", "No such occupant")
            return
        copy = self._forward(room, occupant, target, stanza)
        if kind != "error" and copy.find(f"{{{NS_MUC_USER}}}x") is None:
            ET.SubElement(copy, f"{{{NS_MUC_USER}}}x")  # XEP-0045 §7.5: marks a private message
        out.append(copy)

    def _knocker_quiet(self, occupant: Occupant) -> None:
        """Who waits in a lobby only waits: no messages or IQs to the others there (a knock flood cannot
        become a message flood at the moderators)."""
        if self.is_lobby and occupant.role != "moderator":
            raise MucError("forbidden", "auth", "You are waiting in the lobby", counter="lobby_refused")

    @staticmethod
    def _forward(room: Room, sender: Occupant, target: Occupant, stanza: ET.Element) -> ET.Element:
        copy = ET.Element(stanza.tag, dict(stanza.attrib))
        copy.set("from", room.occupant_jid(sender.nick))
        copy.set("to", str(target.jid))
        copy.extend(list(stanza))
        return copy

    # ---- iqs

    def _iq(self, stanza: ET.Element, sender: Jid, to: Jid, out: list[ET.Element]) -> None:
        kind = stanza.get("type")
        request = kind in ("get", "set")
        room = self.rooms.get(to.bare)
        if room is None:
            if request:
                raise MucError("item-not-found", "cancel", "No such room")
            return
        if to.resource:
            # Occupant-to-occupant IQs (Jingle travels this way): relayed with the sender's occupant JID.
            occupant = room.occupant_of(sender)
            target = room.occupants.get(to.resource)
            if occupant is None:
                if request:
                    raise MucError("not-acceptable", "modify", "You are not in this room")
                return
            if target is None:
                if request:
                    raise MucError("item-not-found", "cancel", "No such occupant")
                return
            self._knocker_quiet(occupant)
            out.append(self._forward(room, occupant, target, stanza))
            self.counters["muc_iqs_relayed"] += 1
            return
        if not request:
            return
        payload = stanza[0] if len(stanza) else None
        tag = payload.tag if payload is not None else ""
        if payload is not None and kind == "get" and tag == f"{{{NS_DISCO_INFO}}}query":
            out.append(self._result(stanza, sender, self._room_info(room)))
        elif kind == "get" and tag == f"{{{NS_DISCO_ITEMS}}}query":
            out.append(self._result(stanza, sender, ET.Element(tag)))
        elif kind == "get" and tag == f"{{{NS_PING}}}ping":
            out.append(self._result(stanza, sender, None))
        elif payload is not None and tag == f"{{{NS_MUC_OWNER}}}query":
            self._owner(room, stanza, payload, sender, out)
        elif payload is not None and tag == f"{{{NS_MUC_ADMIN}}}query":
            self._admin(room, stanza, payload, sender, out)
        else:
            raise MucError("service-unavailable")

    def _room_info(self, room: Room) -> ET.Element:
        cfg = room.config
        query = ET.Element(f"{{{NS_DISCO_INFO}}}query")
        ET.SubElement(
            query,
            f"{{{NS_DISCO_INFO}}}identity",
            {"category": "conference", "type": "text", "name": cfg.name or room.jid.local},
        )
        features = [
            NS_MUC,
            NS_PING,
            "muc_public" if cfg.public else "muc_hidden",
            "muc_persistent" if cfg.persistent else "muc_temporary",
            "muc_membersonly" if cfg.members_only else "muc_open",
            "muc_moderated" if cfg.moderated else "muc_unmoderated",
            "muc_nonanonymous" if cfg.whois == "anyone" else "muc_semianonymous",
            "muc_passwordprotected" if cfg.password_protected else "muc_unsecured",
        ]
        for feature in features:
            ET.SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": feature})
        form = _form(
            "result",
            NS_ROOMINFO,
            [
                ("muc#roominfo_meetingId", "text-single", [room.meeting_id]),
                ("muc#roominfo_occupants", "text-single", [str(len(room.occupants))]),
                ("muc#roominfo_description", "text-single", [cfg.description]),
                ("muc#roomconfig_roomname", "text-single", [cfg.name]),
                ("muc#roominfo_subject", "text-single", [room.subject]),
                *([(LOBBY_FIELD, "text-single", [str(room.lobby)])] if room.lobby is not None else []),
            ],
        )
        query.append(form)
        return query

    # ---- owner: configuration (XEP-0045 §10.2) and destruction (§10.9)

    def _owner(
        self, room: Room, stanza: ET.Element, query: ET.Element, sender: Jid, out: list[ET.Element]
    ) -> None:
        if room.affiliation(sender) != "owner":
            raise MucError(
                "forbidden", "auth", "Only owners may configure the room", counter="muc_moderation_refused"
            )
        kind = stanza.get("type")
        if kind == "get":
            reply = ET.Element(f"{{{NS_MUC_OWNER}}}query")
            reply.append(self._config_form(room))
            out.append(self._result(stanza, sender, reply))
            return
        destroy = query.find(f"{{{NS_MUC_OWNER}}}destroy")
        if destroy is not None:
            self._destroy(room, destroy, out)
            out.append(self._result(stanza, sender, None))
            return
        form = query.find(f"{{{NS_DATA}}}x")
        if form is None:
            raise MucError("bad-request", "modify", "Expected a data form")
        if form.get("type") == "cancel":
            out.append(self._result(stanza, sender, None))
            return
        if form.get("type") != "submit":
            raise MucError("bad-request", "modify", "Expected a submitted form")
        old_whois = room.config.whois
        was_members_only = room.config.members_only
        meeting_id = self._apply_config(room, _form_values(form), sender)
        if meeting_id is not None:
            room.meeting_id = meeting_id
        out.append(self._result(stanza, sender, None))
        codes = [STATUS_CONFIG_CHANGED]
        if room.config.whois != old_whois:
            codes.append(
                STATUS_NOW_NON_ANONYMOUS if room.config.whois == "anyone" else STATUS_NOW_SEMI_ANONYMOUS
            )
        for recipient in room.occupants.values():
            note = ET.Element(MESSAGE, {"type": "groupchat", "from": str(room.jid), "to": str(recipient.jid)})
            x = ET.SubElement(note, f"{{{NS_MUC_USER}}}x")
            for code in codes:
                ET.SubElement(x, f"{{{NS_MUC_USER}}}status", {"code": code})
            out.append(note)
        self.counters["muc_config_changes"] += 1
        self._lobby_changed(room, was_members_only, out)

    def _apply_config(self, room: Room, values: dict[str, list[str]], sender: Jid) -> str | None:
        """Validates every field first, then applies all (a bad field changes nothing)."""
        cfg = RoomConfig(**{name: getattr(room.config, name) for name in RoomConfig.__dataclass_fields__})
        secret_given = False

        def one(var: str) -> str | None:
            vals = values.get(var)
            return (vals[0] if vals else "") if vals is not None else None

        for var, attr in (("muc#roomconfig_roomname", "name"), ("muc#roomconfig_roomdesc", "description")):
            text = one(var)
            if text is not None:
                setattr(cfg, attr, text)
        for var, attr in (
            ("muc#roomconfig_persistentroom", "persistent"),
            ("muc#roomconfig_publicroom", "public"),
            ("muc#roomconfig_membersonly", "members_only"),
            ("muc#roomconfig_moderatedroom", "moderated"),
            ("muc#roomconfig_changesubject", "change_subject"),
        ):
            text = one(var)
            if text is not None:
                setattr(cfg, attr, _bool(text))
        whois = one("muc#roomconfig_whois")
        if whois is not None:
            if whois not in ("anyone", "moderators"):
                raise MucError(
                    "not-acceptable", "modify", f"whois must be anyone or moderators, not {whois!r}"
                )
            cfg.whois = whois
        secret = one("muc#roomconfig_roomsecret")
        if secret is not None:
            cfg.password = secret
            secret_given = True
        protected = one("muc#roomconfig_passwordprotectedroom")
        if protected is not None:
            if not _bool(protected):
                cfg.password = ""
            elif not cfg.password:
                raise MucError("not-acceptable", "modify", "A password-protected room needs a roomsecret")
        elif secret_given and not cfg.password:
            cfg.password = ""
        meeting_id = one("muc#roominfo_meetingId")
        if meeting_id and meeting_id != room.meeting_id and not self.is_admin(sender.bare):
            raise MucError("forbidden", "auth", "Only admins may set the meeting id")
        room.config = cfg
        return meeting_id or None

    def _config_form(self, room: Room) -> ET.Element:
        cfg = room.config
        b = {True: "1", False: "0"}
        return _form(
            "form",
            NS_ROOMCONFIG,
            [
                ("muc#roomconfig_roomname", "text-single", [cfg.name]),
                ("muc#roomconfig_roomdesc", "text-single", [cfg.description]),
                ("muc#roomconfig_persistentroom", "boolean", [b[cfg.persistent]]),
                ("muc#roomconfig_publicroom", "boolean", [b[cfg.public]]),
                ("muc#roomconfig_membersonly", "boolean", [b[cfg.members_only]]),
                ("muc#roomconfig_moderatedroom", "boolean", [b[cfg.moderated]]),
                ("muc#roomconfig_changesubject", "boolean", [b[cfg.change_subject]]),
                ("muc#roomconfig_passwordprotectedroom", "boolean", [b[cfg.password_protected]]),
                ("muc#roomconfig_roomsecret", "text-private", [cfg.password]),
                ("muc#roomconfig_whois", "list-single", [cfg.whois], ("moderators", "anyone")),
                ("muc#roominfo_meetingId", "text-single", [room.meeting_id]),
            ],
        )

    def _destroy(self, room: Room, destroy: ET.Element, out: list[ET.Element]) -> None:
        marker = ET.Element(f"{{{NS_MUC_USER}}}destroy", dict(destroy.attrib))
        marker.extend(ET.Element(f"{{{NS_MUC_USER}}}{c.tag.rpartition('}')[2]}") for c in destroy)
        for child, src in zip(marker, destroy, strict=True):
            child.text = src.text
        occupants = list(room.occupants.values())
        for occupant in occupants:
            occupant.role = "none"
        room.affiliations.clear()
        for occupant in occupants:
            pres = self._presence_of(room, occupant, occupant, extra=[marker])
            pres.set("type", "unavailable")
            out.append(pres)
        room.occupants.clear()
        if self.rooms.get(room.jid) is room:
            self._forget(room, out)

    def _forget(self, room: Room, out: list[ET.Element]) -> None:
        del self.rooms[room.jid]
        self.counters["muc_rooms_destroyed"] += 1
        if self.on_destroyed is not None:
            self.on_destroyed(room.jid)
        lobby = self._lobby_room_of(room)
        room.lobby = None
        if lobby is not None and self.lobby is not None:
            self.lobby._destroy_room(lobby, None, "The meeting has ended", out)

    # ---- admin: affiliations and roles (XEP-0045 §9, §10)

    def _admin(
        self, room: Room, stanza: ET.Element, query: ET.Element, sender: Jid, out: list[ET.Element]
    ) -> None:
        actor_aff = room.affiliation(sender)
        actor = room.occupant_of(sender)
        items = query.findall(f"{{{NS_MUC_ADMIN}}}item")
        if not items:
            raise MucError("bad-request", "modify", "No items")
        if stanza.get("type") == "get":
            self._admin_list(room, stanza, items[0], sender, out)
            return
        affiliation_changes: list[tuple[Jid, str, ET.Element]] = []
        role_changes: list[tuple[Occupant, str, ET.Element]] = []
        for item in items:
            affiliation = item.get("affiliation")
            role = item.get("role")
            if affiliation is not None:
                if affiliation not in AFFILIATIONS:
                    raise MucError("bad-request", "modify", f"Unknown affiliation {affiliation!r}")
                target = self._item_jid(room, item)
                if self._token_fixed(room, target):
                    raise MucError(
                        "not-allowed", "cancel", "That occupant's affiliation comes from its token"
                    )
                current = room.affiliation(target)
                needs_owner = affiliation in ("owner", "admin") or current in ("owner", "admin")
                if actor_aff != "owner" and (needs_owner or actor_aff != "admin"):
                    raise MucError(
                        "not-allowed",
                        "cancel",
                        "You may not change that affiliation",
                        counter="muc_moderation_refused",
                    )
                affiliation_changes.append((target, affiliation, item))
            elif role is not None:
                if role not in ROLES:
                    raise MucError("bad-request", "modify", f"Unknown role {role!r}")
                occupant = room.occupants.get(item.get("nick", ""))
                if occupant is None:
                    raise MucError("item-not-found", "cancel", "No such occupant")
                if actor is None or actor.role != "moderator":
                    raise MucError(
                        "not-allowed",
                        "cancel",
                        "Only moderators may change roles",
                        counter="muc_moderation_refused",
                    )
                if room.affiliation(occupant.jid) in ("owner", "admin") and actor_aff != "owner":
                    raise MucError(
                        "not-allowed",
                        "cancel",
                        "You may not change that occupant's role",
                        counter="muc_moderation_refused",
                    )
                role_changes.append((occupant, role, item))
            else:
                raise MucError("bad-request", "modify", "An item needs an affiliation or a role")
        owners_after = {j for j, a in room.affiliations.items() if a == "owner"}
        for jid, value, _item in affiliation_changes:
            owners_after.discard(jid)
            if value == "owner":
                owners_after.add(jid)
        if not owners_after:
            raise MucError("conflict", "cancel", "The room must keep an owner")
        out.append(self._result(stanza, sender, None))
        for jid, value, item in affiliation_changes:
            self._set_affiliation(room, jid, value, item, out)
            self._mirror_to_lobby(room, jid, value, sender, out)
        for occupant, value, item in role_changes:
            if room.occupants.get(occupant.nick) is occupant:  # not banned by an affiliation change above
                self._set_role(room, occupant, value, item, out)
        self.counters["muc_admin_changes"] += 1

    def _claims(self, real: Jid) -> TokenClaims | None:
        return self.token_of(real) if self.token_of is not None else None

    def _token_fixed(self, room: Room, bare: Jid) -> bool:
        """An occupant with that bare JID holds a token (its affiliation is the token's to say)."""
        return any(o.jid.bare == bare and self._claims(o.jid) is not None for o in room.occupants.values())

    def _own_payload(self, sender: Jid, stanza: ET.Element) -> list[ET.Element]:
        """What `sender` broadcasts. `<identity>` is the server's to say (an occupant's own is dropped, so
        none can pass for a token's holder); a token's holder gets Jitsi's `<identity>` (user id, name,
        avatar; never the email) and, when the token names the user, that name as its `<nick>`."""
        payload = [c for c in _payload(stanza) if c.tag != f"{{{NS_CLIENT}}}identity"]
        claims = self._claims(sender)
        if claims is None:
            return payload
        if claims.name:
            payload = [c for c in payload if c.tag != f"{{{NS_NICK}}}nick"]
            nick = ET.Element(f"{{{NS_NICK}}}nick")
            nick.text = claims.name
            payload.append(nick)
        identity = ET.Element(f"{{{NS_CLIENT}}}identity")
        user = ET.SubElement(identity, f"{{{NS_CLIENT}}}user")
        for tag, value in (("id", claims.user_id), ("name", claims.name), ("avatar", claims.avatar)):
            if value:
                ET.SubElement(user, f"{{{NS_CLIENT}}}{tag}").text = value
        payload.append(identity)
        return payload

    def _item_jid(self, room: Room, item: ET.Element) -> Jid:
        text = item.get("jid")
        if text:
            try:
                return Jid.parse(text).bare
            except JidError as exc:
                raise MucError("jid-malformed", "modify", str(exc)) from None
        occupant = room.occupants.get(item.get("nick", ""))
        if occupant is None:
            raise MucError("item-not-found", "cancel", "No such occupant")
        return occupant.jid.bare

    def _set_affiliation(
        self, room: Room, target: Jid, value: str, item: ET.Element, out: list[ET.Element]
    ) -> None:
        if value == "none":
            room.affiliations.pop(target, None)
        else:
            room.affiliations[target] = value
        for occupant in [o for o in room.occupants.values() if o.jid.bare == target]:
            if value == "outcast":
                self._kick(room, occupant, STATUS_BANNED, item, out)
            else:
                occupant.role = _role_for(value, room.config)
                self._broadcast_presence(room, occupant, out)

    def _set_role(
        self, room: Room, occupant: Occupant, value: str, item: ET.Element, out: list[ET.Element]
    ) -> None:
        if value == "none":
            self._kick(
                room, occupant, STATUS_KICKED, item, out, counter="lobby_rejected" if self.is_lobby else None
            )
            return
        occupant.role = value
        self._broadcast_presence(room, occupant, out)

    def _kick(
        self,
        room: Room,
        occupant: Occupant,
        code: str,
        item: ET.Element,
        out: list[ET.Element],
        *,
        counter: str | None = None,
    ) -> None:
        occupant.role = "none"
        occupant.payload = []
        reason = item.findtext(f"{{{NS_MUC_ADMIN}}}reason")
        self._send_unavailable(room, occupant, out, codes=[code], reason=reason)
        del room.occupants[occupant.nick]
        self.counters["muc_kicks"] += 1
        if counter is not None:
            self.counters[counter] += 1
        self._maybe_destroy(room, out)

    def _admin_list(
        self,
        room: Room,
        stanza: ET.Element,
        item: ET.Element,
        sender: Jid,
        out: list[ET.Element],
    ) -> None:
        actor_aff = room.affiliation(sender)
        actor = room.occupant_of(sender)
        query = ET.Element(f"{{{NS_MUC_ADMIN}}}query")
        affiliation = item.get("affiliation")
        role = item.get("role")
        if affiliation is not None:
            if actor_aff not in ("owner", "admin"):
                raise MucError("forbidden", "auth", "Only owners and admins may list affiliations")
            for jid, aff in room.affiliations.items():
                if aff == affiliation:
                    ET.SubElement(query, f"{{{NS_MUC_ADMIN}}}item", {"affiliation": aff, "jid": str(jid)})
        elif role is not None:
            if actor is None or actor.role != "moderator":
                raise MucError("forbidden", "auth", "Only moderators may list roles")
            for occupant in room.occupants.values():
                if occupant.role == role:
                    ET.SubElement(
                        query,
                        f"{{{NS_MUC_ADMIN}}}item",
                        {"role": role, "nick": occupant.nick, "jid": str(occupant.jid)},
                    )
        else:
            raise MucError("bad-request", "modify", "Ask for an affiliation or a role")
        out.append(self._result(stanza, sender, query))


def _payload(stanza: ET.Element) -> list[ET.Element]:
    """Presence children an occupant broadcasts: all but the MUC join/user elements."""
    return [c for c in stanza if c.tag not in (f"{{{NS_MUC}}}x", f"{{{NS_MUC_USER}}}x")]


def _status_children(stanza: ET.Element) -> list[ET.Element]:
    return [c for c in stanza if c.tag == f"{{{NS_CLIENT}}}status"]


def _form(
    form_type: str,
    form_ns: str,
    fields: list[tuple[str, str, list[str]] | tuple[str, str, list[str], tuple[str, ...]]],
) -> ET.Element:
    """A XEP-0004 data form with FORM_TYPE `form_ns`."""
    x = ET.Element(f"{{{NS_DATA}}}x", {"type": form_type})
    hidden = ET.SubElement(x, f"{{{NS_DATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    ET.SubElement(hidden, f"{{{NS_DATA}}}value").text = form_ns
    for spec in fields:
        var, kind, values = spec[0], spec[1], spec[2]
        f = ET.SubElement(x, f"{{{NS_DATA}}}field", {"var": var, "type": kind})
        if len(spec) == 4:
            for option in spec[3]:
                opt = ET.SubElement(f, f"{{{NS_DATA}}}option")
                ET.SubElement(opt, f"{{{NS_DATA}}}value").text = option
        for value in values:
            ET.SubElement(f, f"{{{NS_DATA}}}value").text = value
    return x


def _form_values(form: ET.Element) -> dict[str, list[str]]:
    return {
        f.get("var", ""): [v.text or "" for v in f.findall(f"{{{NS_DATA}}}value")]
        for f in form.findall(f"{{{NS_DATA}}}field")
    }
