"""Which shard a new conference goes to, by each shard's measured CPU load.

Sans-IO: the bridge feeds each shard's stats snapshot (its thread's CPU seconds) with the time it was taken,
and asks `choose()`, with the conferences each shard holds (the registry's count), when a conference is
created. A shard's load is the share of a
core its thread used between its last two snapshots. A conference placed in the last `WARMUP` seconds has
not shown its cost yet (its endpoints are still joining), so it counts as the average measured cost of a
conference; without any measured load, the shard with the fewest conferences wins, which spreads a burst of
new conferences evenly. Estimates within `TIE_CORES` or `TIE_SHARE` of the lowest count as equal, and then
the shard with the fewest conferences wins: equal shards keep equal counts despite the noise of measurement,
while a shard carrying a much dearer meeting gets fewer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Seconds a newly placed conference counts at the average cost instead of what its shard measures.
WARMUP = 10.0
#: Snapshots closer than this to the previous one keep the previous rate (too short to measure).
MIN_INTERVAL = 0.2
#: Estimates this close to the lowest (in cores, or as a share of it, whichever is larger) are a tie, which
#: the conference count breaks: measured CPU wanders by a few percent between equal shards.
TIE_CORES = 0.05
TIE_SHARE = 0.10


@dataclass(slots=True)
class ShardLoad:
    """What placement knows of one shard."""

    index: int
    #: Cores its thread used over the last measured interval (0 until two snapshots).
    cpu: float = 0.0
    _last: tuple[float, float] | None = None
    #: When each conference was placed here, within `WARMUP`.
    _recent: deque[float] = field(default_factory=deque)

    def recent(self, now: float) -> int:
        while self._recent and now - self._recent[0] > WARMUP:
            self._recent.popleft()
        return len(self._recent)


class Placement:
    """Chooses the least-loaded shard for each new conference."""

    def __init__(self, shards: int) -> None:
        if shards < 1:
            raise ValueError("a bridge has at least one shard")
        self.shards = [ShardLoad(i) for i in range(shards)]

    def observe(self, index: int, now: float, cpu_seconds: float) -> None:
        """Shard `index`'s snapshot at `now` (monotonic seconds): its thread's CPU seconds since start."""
        shard = self.shards[index]
        if shard._last is not None:
            then, before = shard._last
            if now - then < MIN_INTERVAL:
                return
            # A counter that went backwards is a restarted shard: its rate starts again.
            shard.cpu = max(0.0, cpu_seconds - before) / (now - then) if cpu_seconds >= before else 0.0
        shard._last = (now, cpu_seconds)

    def estimates(self, now: float, conferences: Sequence[int]) -> list[float]:
        """Each shard's load in cores: measured, plus its conferences still warming up at the average cost of
        a conference (`conferences`: how many each shard holds)."""
        total_cpu = sum(s.cpu for s in self.shards)
        total_conferences = sum(conferences)
        per_conference = total_cpu / total_conferences if total_conferences else 0.0
        return [s.cpu + s.recent(now) * per_conference for s in self.shards]

    def choose(self, now: float, conferences: Sequence[int]) -> int:
        """The shard for a new conference created at `now`: among those whose estimated load ties with the
        lowest, the one with the fewest conferences, then the lowest index. Counts the conference as warming
        up there."""
        estimates = self.estimates(now, conferences)
        lowest = min(estimates)
        tie = max(TIE_CORES, lowest * TIE_SHARE)
        close = [s for s in self.shards if estimates[s.index] <= lowest + tie]
        best = min(close, key=lambda s: (conferences[s.index], s.index))
        best._recent.append(now)
        return best.index
