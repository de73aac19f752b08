"""Each endpoint's link quality from the native stats snapshots, and its aggregates for Prometheus.

Sans-IO: `QualityTracker.update(now, snapshot)` is fed the snapshots the allocation loop already takes. Per
transport the packet path reports (bridge._native `transports`): `rtt_ms` (transport-cc round trip, None
before feedback), `rtp_received`/`rtp_lost` (RFC 3550 receive statistics of what the endpoint sends,
summed over its SSRCs), `jitter_ms` (the largest interarrival jitter of its audio SSRCs: a paused
simulcast layer that starts again makes video jitter meaningless), `bytes_in`/`_out`.
Loss and bitrates are taken over a window of at least `window` seconds between two snapshots.

Prometheus never gets one series per endpoint: `families` exports gauge histograms (the distribution
across the endpoints now) with fixed buckets, so the number of series does not depend on the number of
endpoints. Per-endpoint figures are for the admin page (bridge/admin.py), which shows them per room.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.metrics_core import GaugeHistogramMetricFamily, Metric

#: Bucket bounds (le) of the aggregates; the last is +Inf.
RTT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8)
JITTER_BUCKETS_S = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)
LOSS_BUCKETS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
BITRATE_BUCKETS_BPS = (50e3, 200e3, 500e3, 1e6, 2e6, 4e6)


@dataclass(frozen=True, slots=True)
class Quality:
    """One endpoint's figures: None where the packet path has nothing yet."""

    rtt_s: float | None
    jitter_s: float
    #: Of what the endpoint sent us over the last window, the fraction lost (None: nothing expected).
    loss: float | None
    #: bit/s: what it sends us (up) and what we send it (down), over the last window.
    up_bps: float | None
    down_bps: float | None


@dataclass(frozen=True, slots=True)
class _Base:
    at: float
    received: int
    lost: int
    bytes_in: int
    bytes_out: int


def _int(t: Mapping[str, object], key: str) -> int:
    v = t.get(key, 0)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _float(t: Mapping[str, object], key: str) -> float | None:
    v = t.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


class QualityTracker:
    """Per transport id, the latest `Quality`; transports gone from the snapshot are forgotten."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self.current: dict[int, Quality] = {}
        self._base: dict[int, _Base] = {}

    def update(self, now: float, snapshot: Mapping[str, object]) -> None:
        transports = snapshot.get("transports")
        if not isinstance(transports, Mapping):
            return
        seen: set[int] = set()
        for tid, t in transports.items():
            if not isinstance(tid, int) or not isinstance(t, Mapping):
                continue
            seen.add(tid)
            sample = _Base(
                now, _int(t, "rtp_received"), _int(t, "rtp_lost"), _int(t, "bytes_in"), _int(t, "bytes_out")
            )
            rtt_ms, jitter_ms = _float(t, "rtt_ms"), _float(t, "jitter_ms")
            rtt = rtt_ms / 1000 if rtt_ms is not None else None
            jitter = jitter_ms / 1000 if jitter_ms is not None else 0.0
            base = self._base.get(tid)
            previous = self.current.get(tid)
            if base is None:
                self._base[tid] = sample
                self.current[tid] = Quality(rtt, jitter, None, None, None)
                continue
            span = now - base.at
            if span < self.window:
                # Not a whole window yet: RTT and jitter are current, the rates stay as last computed.
                keep = previous or Quality(None, 0.0, None, None, None)
                self.current[tid] = Quality(rtt, jitter, keep.loss, keep.up_bps, keep.down_bps)
                continue
            lost = max(0, sample.lost - base.lost)
            expected = max(0, sample.received - base.received) + lost
            self.current[tid] = Quality(
                rtt,
                jitter,
                min(1.0, lost / expected) if expected > 0 else None,
                max(0, sample.bytes_in - base.bytes_in) * 8 / span,
                max(0, sample.bytes_out - base.bytes_out) * 8 / span,
            )
            self._base[tid] = sample
        for tid in set(self.current) - seen:
            del self.current[tid]
            self._base.pop(tid, None)

    def get(self, transport_id: int) -> Quality | None:
        return self.current.get(transport_id)


def _histogram(bounds: tuple[float, ...], values: list[float]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets and the sum."""
    buckets = [(repr(float(b)), float(sum(1 for v in values if v <= b))) for b in bounds]
    buckets.append(("+Inf", float(len(values))))
    return buckets, float(sum(values))


def families(qualities: Iterable[Quality]) -> Iterator[Metric]:
    """Gauge histograms across the endpoints now: `sluice_endpoint_rtt_seconds`, `_jitter_seconds`,
    `_loss_ratio`, and `_bitrate_bps{direction}`; an endpoint without a figure is left out of that one."""
    qs = list(qualities)
    for name, doc, bounds, values in (
        ("rtt_seconds", "Endpoints by round trip (transport-cc).", RTT_BUCKETS_S,
         [q.rtt_s for q in qs if q.rtt_s is not None]),
        ("jitter_seconds", "Endpoints by interarrival jitter of what they send (RFC 3550).",
         JITTER_BUCKETS_S, [q.jitter_s for q in qs]),
        ("loss_ratio", "Endpoints by the fraction of what they sent that was lost (last window).",
         LOSS_BUCKETS, [q.loss for q in qs if q.loss is not None]),
    ):  # fmt: skip
        buckets, total = _histogram(bounds, values)
        yield GaugeHistogramMetricFamily(f"sluice_endpoint_{name}", doc, buckets=buckets, gsum_value=total)
    bitrate = GaugeHistogramMetricFamily(
        "sluice_endpoint_bitrate_bps",
        "Endpoints by bit rate, up (what they send the bridge) and down (what it sends them).",
        labels=["direction"],
    )
    for direction, values in (
        ("up", [q.up_bps for q in qs if q.up_bps is not None]),
        ("down", [q.down_bps for q in qs if q.down_bps is not None]),
    ):
        buckets, total = _histogram(BITRATE_BUCKETS_BPS, values)
        bitrate.add_metric([direction], buckets, total)
    yield bitrate
