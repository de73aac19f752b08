"""Bridges as the focus knows them from brewery presence and health checks, the choice among them, failover.

Follows Jicofo's BridgeSelector (docs/jitsi-protocol.md 1.3, 1.5): a bridge counts once its presence carries
`<stats xmlns="http://jitsi.org/protocol/colibri">` and its real JID is a bridge account; `drain` is true
until a presence says otherwise; `shutting_down` and failed bridges are never chosen; the least stressed
remaining bridge wins, its stress corrected by the endpoints recently put on it (their load does not show in
its stats yet). A bridge that leaves, fails its health checks or stops being usable loses its rooms to
others (Jicofo's RestartJingle re-invite); Colibri2 errors restart one room's conference.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from signaling.focus.logids import log_ids
from signaling.focus.stanzas import NS_HEALTHCHECK, NS_MUC_USER, q, same_jid
from signaling.jingle.model import EndpointSources

if TYPE_CHECKING:
    from signaling.focus.colibri import Colibri
    from signaling.focus.model import Room, Shared

log = logging.getLogger(__name__)

NS_COLIBRI = "http://jitsi.org/protocol/colibri"


@dataclass(slots=True)
class BridgeInfo:
    """One bridge, identified by its brewery occupant JID."""

    jid: str
    #: The account behind the occupant (from its presence): Colibri2 and health checks go here, and only
    #: replies from here count.
    real_jid: str = ""
    stress: float = 0.0
    average_participant_stress: float | None = None
    healthy: bool = True
    drain: bool = True
    graceful_shutdown: bool = False
    shutting_down: bool = False
    version: str | None = None
    region: str | None = None
    #: False after a failed health check or Colibri2 request, until `failure_reset` has passed.
    operational: bool = True
    failed_at: float | None = None
    health_timeouts: int = 0
    next_health: float = 0.0
    health_pending: bool = False
    #: When endpoints were last allocated here (for the corrected stress).
    recent: deque[float] = field(default_factory=deque)

    def update(self, stats: dict[str, str]) -> None:
        """Applies one presence's stats; graceful_shutdown and shutting_down are sticky (as in Jicofo)."""

        def flag(name: str, default: bool) -> bool:
            value = stats.get(name)
            return default if value is None else value.strip().lower() == "true"

        # A bad number keeps the last good one.
        with contextlib.suppress(ValueError):
            self.stress = max(0.0, float(stats.get("stress_level", self.stress)))
        with contextlib.suppress(ValueError):
            if "average_participant_stress" in stats:
                self.average_participant_stress = float(stats["average_participant_stress"])
        self.healthy = flag("healthy", self.healthy)
        self.drain = flag("drain", self.drain)
        self.graceful_shutdown = self.graceful_shutdown or flag("graceful_shutdown", False)
        self.shutting_down = self.shutting_down or flag("shutting_down", False)
        self.version = stats.get("version", self.version)
        self.region = stats.get("region", self.region)

    def corrected_stress(self, now: float, rampup: float, default_participant_stress: float) -> float:
        while self.recent and self.recent[0] <= now - rampup:
            self.recent.popleft()
        per = self.average_participant_stress
        return self.stress + len(self.recent) * (per if per is not None else default_participant_stress)

    @property
    def usable(self) -> bool:
        """Fit to keep the conferences it has."""
        return self.operational and self.healthy and not self.shutting_down

    @property
    def selectable(self) -> bool:
        """Fit to take a new conference."""
        return self.usable and not self.drain and not self.graceful_shutdown


def parse_stats(presence: ET.Element) -> dict[str, str] | None:
    """The colibri `<stats>` of a brewery presence as name -> value, or None without it."""
    stats = presence.find(f"{{{NS_COLIBRI}}}stats")
    if stats is None:
        return None
    return {s.get("name", ""): s.get("value", "") for s in stats.iterfind(f"{{{NS_COLIBRI}}}stat")}


def select_bridge(
    bridges: Iterable[BridgeInfo],
    now: float,
    *,
    rampup: float = 20.0,
    participant_stress: float = 0.01,
    stress_threshold: float = 0.8,
    exclude: Container[str] = (),
) -> BridgeInfo | None:
    """The least stressed selectable bridge not in `exclude`, preferring ones below the stress threshold;
    ties by JID."""
    candidates = [b for b in bridges if b.selectable and b.jid not in exclude]
    if not candidates:
        return None

    def key(b: BridgeInfo) -> tuple[bool, float, str]:
        stress = b.corrected_stress(now, rampup, participant_stress)
        return (stress >= stress_threshold, stress, b.jid)

    return min(candidates, key=key)


class BridgeEvents(Protocol):
    """What the rest of the focus does when bridges come and go."""

    def room_moved(self, now: float, room: Room) -> None:
        """The room lost its bridge: its participants need new sessions, on another one."""

    def bridge_available(self, now: float) -> None:
        """A bridge became selectable: rooms waiting for one may go there."""


class Bridges:
    """The brewery's bridges: who is trusted as one, their health checks, the choice for a room, failover."""

    def __init__(self, shared: Shared, colibri: Colibri, events: BridgeEvents) -> None:
        self._shared = shared
        self._config = shared.config
        self._stats = shared.stats
        self._bridges = shared.bridges
        self._colibri = colibri
        self._events = events
        self._pattern = shared.config.bridge_jid_pattern()
        #: Brewery occupants with stats that are not bridges (logged once each while present).
        self._untrusted: set[str] = set()

    def reset(self) -> None:
        self._bridges.clear()
        self._untrusted.clear()

    # ---- brewery presence (1.3)

    def handle_presence(self, now: float, nick: str, el: ET.Element) -> None:
        if not nick or nick == self._config.nickname:
            return
        jid = f"{self._config.brewery_jid}/{nick}"
        if el.get("type") == "unavailable":
            self._untrusted.discard(jid)
            if self._bridges.pop(jid, None) is not None:
                self._stats["bridges_left"] += 1
                log.warning("focus: bridge %s left the brewery", jid)
                self._gone(now, jid)
            return
        if el.get("type") == "error":
            return
        values = parse_stats(el)
        if values is None:
            return  # only members that publish stats are bridges
        item = el.find(f"{q(NS_MUC_USER, 'x')}/{q(NS_MUC_USER, 'item')}")
        real = item.get("jid", "") if item is not None else ""
        bridge = self._bridges.get(jid)
        if not self._pattern.fullmatch(real):
            # Stats presence from an account that is not a bridge's (or with its real JID hidden from us).
            self._stats["brewery_untrusted_presences"] += 1
            if jid not in self._untrusted:
                self._untrusted.add(jid)
                log.warning("focus: %s (%s) publishes stats but is not a bridge account", jid, real or "?")
            if bridge is not None:
                del self._bridges[jid]
                self._gone(now, jid)
            return
        if bridge is not None and not same_jid(bridge.real_jid, real):
            # Another session took this nickname: the bridge we knew is gone.
            del self._bridges[jid]
            self._gone(now, jid)
            bridge = None
        if bridge is None:
            bridge = BridgeInfo(jid, real_jid=real, next_health=now)
            self._bridges[jid] = bridge
            log.info("focus: bridge %s (%s) joined the brewery", jid, real)
        was = (bridge.selectable, bridge.usable)
        bridge.update(values)
        if was[1] and not bridge.usable:
            log.warning("focus: bridge %s is no longer usable (shutting down or unhealthy)", jid)
            self._gone(now, jid)
        if bridge.selectable and not was[0]:
            self._events.bridge_available(now)

    # ---- health checks (1.5)

    def next_deadline(self) -> float | None:
        return min((b.next_health for b in self._bridges.values() if not b.health_pending), default=None)

    def handle_timeout(self, now: float) -> None:
        for bridge in list(self._bridges.values()):
            if not bridge.health_pending and bridge.next_health <= now and bridge.jid in self._bridges:
                self._health_check(now, bridge)

    def _health_check(self, now: float, bridge: BridgeInfo) -> None:
        bridge.health_pending = True
        self._shared.out.request(
            now,
            "get",
            bridge.real_jid,
            ET.Element(q(NS_HEALTHCHECK, "healthcheck")),
            on_result=lambda now, _reply: self._healthy(now, bridge),
            on_error=lambda now, err: self._unhealthy(now, bridge, err),
            timeout=self._config.health_timeout,
        )

    def _healthy(self, now: float, bridge: BridgeInfo) -> None:
        bridge.health_pending = False
        bridge.health_timeouts = 0
        bridge.next_health = now + self._config.health_interval
        if not bridge.operational and (
            bridge.failed_at is None or now - bridge.failed_at >= self._config.failure_reset
        ):
            bridge.operational = True
            log.info("focus: bridge %s is operational again", bridge.jid)
            self._events.bridge_available(now)

    def _unhealthy(self, now: float, bridge: BridgeInfo, err: ET.Element | None) -> None:
        bridge.health_pending = False
        if err is None:
            bridge.health_timeouts += 1
            self._stats["health_timeouts"] += 1
            if bridge.health_timeouts < 2:  # one retry after half an interval (JvbDoctor)
                bridge.next_health = now + self._config.health_interval / 2
                return
        bridge.next_health = now + self._config.health_interval
        self._stats["health_failures"] += 1
        self.fail(now, bridge.jid, "health check failed" if err is not None else "health check timeout")

    # ---- failover

    def fail(self, now: float, jid: str, why: str) -> None:
        bridge = self._bridges.get(jid)
        if bridge is None:
            return
        log.warning("focus: bridge %s failed (%s)", jid, why)
        self._stats["bridges_failed"] += 1
        bridge.operational = False
        bridge.failed_at = now
        self._gone(now, jid)

    def _gone(self, now: float, jid: str) -> None:
        """Moves every room on `jid` elsewhere (Jicofo's RestartJingle re-invite)."""
        for room in list(self._shared.rooms.values()):
            if room.bridge == jid:
                self.move_room(now, room)

    def move_room(self, now: float, room: Room) -> None:
        old = room.bridge
        if old is not None:
            self._stats["bridge_failovers"] += 1
        bridge = self._bridges.get(old) if old is not None else None
        if bridge is not None and bridge.jid in self._bridges and not bridge.shutting_down:
            self._colibri.expire_conference(now, room)
        room.bridge = None
        room.epoch += 1
        room.conference_created = False
        room.colibri.clear()
        room.feedback = EndpointSources()
        self._events.room_moved(now, room)

    def restart_conference(self, now: float, room: Room, why: str) -> None:
        """Re-creates the room's conference and re-invites everyone (Jicofo's restart of one conference).

        Bounded: after `max_conference_restarts` within a minute the room keeps away from that bridge for
        `failure_reset`, so a bridge that keeps refusing one conference cannot loop it."""
        while room.restarts and room.restarts[0] <= now - 60.0:
            room.restarts.popleft()
        room.restarts.append(now)
        self._stats["conference_restarts"] += 1
        log.warning(
            "focus: restarting the conference of %s on %s: %s",
            room.jid,
            room.bridge,
            why,
            extra=log_ids(room),
        )
        if room.bridge is not None and len(room.restarts) > self._config.max_conference_restarts:
            self._stats["conference_bridges_avoided"] += 1
            room.avoid[room.bridge] = now + self._config.failure_reset
            room.restarts.clear()
        self.move_room(now, room)

    # ---- choice

    def choose(self, now: float, room: Room) -> str | None:
        """The room's bridge, choosing one (single-bridge strategy) when it has none."""
        if room.bridge is not None:
            return room.bridge
        cfg = self._config
        hosted = Counter(r.bridge for r in self._shared.rooms.values() if r.bridge is not None)
        full = {b for b, n in hosted.items() if n >= cfg.max_conferences_per_bridge}
        avoid = {b for b, until in room.avoid.items() if until > now}
        chosen = select_bridge(
            self._bridges.values(),
            now,
            rampup=cfg.participant_rampup,
            participant_stress=cfg.average_participant_stress,
            stress_threshold=cfg.stress_threshold,
            exclude=full | avoid,
        )
        if chosen is None:
            if any(b.selectable for b in self._bridges.values() if b.jid in full):
                self._stats["bridges_full"] += 1
            return None
        self._stats["bridge_selections"] += 1
        room.bridge = chosen.jid
        room.epoch += 1
        room.bridge_session = str(uuid.uuid4())
        room.conference_created = False
        log.info("focus: %s goes to bridge %s", room.jid, chosen.jid, extra=log_ids(room))
        return chosen.jid
