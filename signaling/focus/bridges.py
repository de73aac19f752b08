"""Bridges as the focus knows them from brewery presence and health checks, and the choice among them.

Follows Jicofo's BridgeSelector (jitsi-protocol.md 1.3, 1.5): a bridge counts once its presence carries
`<stats xmlns="http://jitsi.org/protocol/colibri">`; `drain` is true until a presence says otherwise;
`shutting_down` and failed bridges are never chosen; the least stressed remaining bridge wins, its stress
corrected by the endpoints recently put on it (their load does not show in its stats yet).
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Container, Iterable
from dataclasses import dataclass, field

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
