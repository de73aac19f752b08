"""Load measurement: packet and bit rates from successive native stats snapshots, and the stress level.

Sans-IO: the caller passes each snapshot (`Bridge.get_stats()`) with the time it was taken. Stress follows
jvb's packet-rate load measurement: stress_level = packets per second (in + out) / capacity, where the
capacity defaults to jvb reference.conf's `load-management.load-measurements.packet-rate.load-threshold`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: jvb reference.conf: packet-rate load-threshold (packets per second, both directions).
DEFAULT_CAPACITY_PPS = 50_000.0


@dataclass(frozen=True, slots=True)
class LoadSample:
    """Rates over the interval between two snapshots; `download` is what the bridge receives."""

    packet_rate_download: float
    packet_rate_upload: float
    #: kbit/s, as jvb reports `bit_rate_download` / `bit_rate_upload`.
    bit_rate_download: float
    bit_rate_upload: float
    stress_level: float

    @property
    def packet_rate(self) -> float:
        return self.packet_rate_download + self.packet_rate_upload


IDLE = LoadSample(0.0, 0.0, 0.0, 0.0, 0.0)


def _counter(totals: Mapping[str, object], key: str) -> int:
    value = totals.get(key, 0)
    return value if isinstance(value, int) else 0


class LoadSampler:
    """Turns cumulative counters into rates; the first snapshot only sets the baseline."""

    def __init__(self, capacity_pps: float = DEFAULT_CAPACITY_PPS) -> None:
        if capacity_pps <= 0:
            raise ValueError("capacity_pps must be positive")
        self.capacity_pps = capacity_pps
        self._last: tuple[float, int, int, int, int] | None = None
        self.current = IDLE

    def update(self, now: float, stats: Mapping[str, object]) -> LoadSample:
        """Feeds the snapshot taken at `now` (seconds, monotonic); returns the rates since the last one."""
        totals = stats.get("total")
        if not isinstance(totals, Mapping):
            raise ValueError("stats snapshot has no 'total' section")
        counters = (
            _counter(totals, "packets_in"),
            _counter(totals, "packets_out"),
            _counter(totals, "bytes_in"),
            _counter(totals, "bytes_out"),
        )
        last, self._last = self._last, (now, *counters)
        if last is None:
            return self.current
        elapsed = now - last[0]
        if elapsed <= 0:
            return self.current
        # A counter that went backwards means the core restarted: count from zero again.
        deltas = [cur - prev if cur >= prev else cur for cur, prev in zip(counters, last[1:], strict=True)]
        pin, pout, bin_, bout = (d / elapsed for d in deltas)
        self.current = LoadSample(
            packet_rate_download=pin,
            packet_rate_upload=pout,
            bit_rate_download=bin_ * 8 / 1000,
            bit_rate_upload=bout * 8 / 1000,
            stress_level=(pin + pout) / self.capacity_pps,
        )
        return self.current
