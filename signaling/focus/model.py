"""The focus's view of rooms, participants and Jingle sessions, and the state every part of it shares."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

from signaling.focus.bridges import BridgeInfo
from signaling.focus.colibri import ColibriQueue
from signaling.focus.config import FocusConfig
from signaling.focus.outbox import Outbox
from signaling.focus.stanzas import bare, resource
from signaling.jingle.model import EndpointSources


@dataclass(slots=True)
class Session:
    """One Jingle session with a participant (a new one after each re-invite)."""

    sid: str
    json: bool
    state: Literal["pending", "active"] = "pending"
    #: Remote sources the client was told about in this session, by owner (as receivers see them).
    sent: dict[str, EndpointSources] = field(default_factory=dict)
    #: While pending: when the session is given up if no session-accept came (set once the client acked the
    #: session-initiate or its IQ timed out).
    accept_deadline: float | None = None


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
    #: When it asked for in-place ICE restarts (the last minute's), rate-limited like `restarts`.
    ice_restarts: deque[float] = field(default_factory=deque)
    #: Sessions in a row that got no session-accept in time (0 again once one is accepted).
    unaccepted: int = 0
    audio_muted: bool | None = None
    video_muted: bool | None = None
    force_muted: dict[str, bool] = field(default_factory=lambda: {"audio": False, "video": False})
    display_name: str | None = None
    #: The MUC refused to make it owner (a token decides its affiliation): not asked again.
    owner_refused: bool = False

    @property
    def moderator(self) -> bool:
        return self.role == "moderator" or self.affiliation in ("owner", "admin")


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
    colibri: ColibriQueue = field(default_factory=ColibriQueue)
    feedback: EndpointSources = field(default_factory=EndpointSources)
    bridge_not_available: bool = False
    #: Until someone joins: when the room is given up (`room_join_timeout` after its request was answered).
    join_deadline: float | None = None
    #: When Colibri2 errors restarted this room's conference (the last minute's).
    restarts: deque[float] = field(default_factory=deque)
    #: Bridges this room stays away from, and until when (after repeated Colibri2 errors there).
    avoid: dict[str, float] = field(default_factory=dict)
    #: A moderated meeting, by kind: non-moderators are force-muted and stay so until a moderator allows.
    av_moderation: dict[str, bool] = field(default_factory=lambda: {"audio": False, "video": False})
    #: Who a moderator allowed to unmute, by kind (nicks), while that kind is moderated.
    av_allowed: dict[str, set[str]] = field(default_factory=lambda: {"audio": set(), "video": set()})

    def occupant(self, nick: str) -> str:
        return f"{self.jid}/{nick}"


@dataclass(frozen=True, slots=True)
class Shared:
    """What every part of the focus reads and writes: one set of rooms, bridges and counters, one outbox."""

    config: FocusConfig
    stats: Counter[str]
    out: Outbox
    rooms: dict[str, Room]
    bridges: dict[str, BridgeInfo]


def find_participant(rooms: dict[str, Room], sender: str) -> tuple[Room, Participant] | None:
    """The participant behind `sender`: its occupant JID, or (sent to our full JID directly) its real JID."""
    room = rooms.get(bare(sender))
    if room is not None:
        p = room.participants.get(resource(sender))
        return (room, p) if p is not None else None
    for room in rooms.values():
        for p in room.participants.values():
            if p.real_jid == sender:
                return room, p
    return None
