"""pytest-benchmark: one Allocator tick of a 100-endpoint conference (100 receivers x 99 other sources each).

Every endpoint sends a 3x3 simulcast camera and receives in stage view (the dominant speaker on stage at
720p, the rest at the default 180p) with 1-5 Mbps. Each bench checks what the tick returned.
Figures: `pytest tests/bench/test_allocation_bench.py --benchmark-only`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bridge.allocation import Allocation, Allocator, Layer, Receiver, VideoSource
from bridge.channel import ReceiverVideoConstraints, VideoConstraints

ENDPOINTS = 100
BASE_BPS = (150_000, 500_000, 1_500_000)

pytestmark = pytest.mark.benchmark(max_time=0.5, min_rounds=5, warmup=False)


def _camera(endpoint: str, jitter: int) -> VideoSource:
    layers = tuple(
        Layer(s, t, height, rate, int(BASE_BPS[s] * share) + jitter)
        for s, height in enumerate((180, 360, 720))
        for t, (rate, share) in enumerate(((7.5, 0.4), (15.0, 0.7), (30.0, 1.0)))
    )
    return VideoSource(f"{endpoint}-v0", endpoint, "camera", False, layers)


ENDPOINT_IDS = [f"ep{i:03d}" for i in range(ENDPOINTS)]
SPEAKERS = ENDPOINT_IDS[::-1]
#: Two snapshots of the same conference whose measured bitrates differ slightly, as between two ticks (by
#: less, summed over every source, than the receivers' bandwidths are from any sum of layers).
SOURCES = [[_camera(ep, jitter) for ep in ENDPOINT_IDS] for jitter in (0, 7)]


def _receivers() -> list[Receiver]:
    stage = SPEAKERS[0]
    out = []
    for i, ep in enumerate(ENDPOINT_IDS):
        # The dominant speaker watches the previous one.
        on_stage = SPEAKERS[1] if ep == stage else stage
        constraints = ReceiverVideoConstraints(
            on_stage_sources=(f"{on_stage}-v0",),
            constraints={f"{on_stage}-v0": VideoConstraints(720)},
        )
        out.append(Receiver(ep, 1_002_500 + 40_000 * i, constraints))
    return out


RECEIVERS = _receivers()


def _check(allocations: dict[str, Allocation]) -> None:
    for allocation in allocations.values():
        assert len(allocation.sources) == ENDPOINTS - 1
        assert allocation.total_bps <= allocation.bandwidth_bps
        assert allocation.sources[0].on_stage and allocation.sources[0].layer is not None


def test_first_tick(benchmark: BenchmarkFixture) -> None:
    """Every receiver is new: 100 allocations computed, recorded and reported."""
    changed = benchmark(lambda: Allocator().update(0.0, RECEIVERS, SPEAKERS, SOURCES[0]))
    assert len(changed) == ENDPOINTS
    _check(changed)


def test_steady_tick(benchmark: BenchmarkFixture) -> None:
    """Bitrates move, decisions do not: 100 allocations computed and compared, none reported."""
    allocator = Allocator()
    first = allocator.update(0.0, RECEIVERS, SPEAKERS, SOURCES[0])
    _check(first)
    ticks = iter(range(1, 10**9))

    def tick() -> dict[str, Allocation]:
        n = next(ticks)
        return allocator.update(float(n), RECEIVERS, SPEAKERS, SOURCES[n % 2])

    assert benchmark(tick) == {}
    assert allocator.stats.changes == ENDPOINTS
    # The allocations carry the latest bitrates even though none was reported.
    assert allocator.update(0.0, RECEIVERS, SPEAKERS, SOURCES[1]) == {}
    latest = allocator.allocations().values()
    assert {x.layer.bitrate_bps % 10 for a in latest for x in a.sources if x.layer is not None} == {7}


def test_a_speaker_change_tick(benchmark: BenchmarkFixture) -> None:
    """The dominant speaker changes: every receiver's on-stage source and order change."""
    allocator = Allocator()
    allocator.update(0.0, RECEIVERS, SPEAKERS, SOURCES[0])
    other = [
        replace(r, constraints=replace(r.constraints, on_stage_sources=(f"{SPEAKERS[2]}-v0",)))
        for r in RECEIVERS
    ]
    flip = iter(range(1, 10**9))

    def tick() -> dict[str, Allocation]:
        n = next(flip)
        receivers = other if n % 2 else RECEIVERS
        speakers = SPEAKERS[2:3] + SPEAKERS if n % 2 else SPEAKERS
        return allocator.update(float(n), receivers, speakers, SOURCES[0])

    changed = benchmark(tick)
    assert len(changed) >= ENDPOINTS - 2
