"""The impairment relay's sans-IO core (bench/impair.py `Direction`) on a fake clock, and its configuration.

The relay itself, through real namespaces, is tests/integration/test_impair.py.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import socket
from pathlib import Path
from typing import Any

import pytest

from bench.impair import (
    SO_TIMESTAMPNS,
    TIMESPEC,
    BurstLoss,
    ConfigError,
    Direction,
    Histogram,
    Impairment,
    Plan,
    arrival_time,
    load_config,
    parse_config,
)


def _direction(table: dict[str, Any], seed: int = 7) -> Direction:
    return Direction("a-to-b", parse_config({"a-to-b": table}).a_to_b, 0.0, random.Random(seed))


def _run(d: Direction, pushes: list[tuple[float, bytes, int]], until: float) -> list[tuple[float, bytes]]:
    """Push at the given times and poll at every wakeup the direction asks for, as the relay does;
    returns (time, frame) of what left."""
    out: list[tuple[float, bytes]] = []
    pending = sorted(pushes, key=lambda p: p[0])
    now = 0.0
    while True:
        wake = d.next_wakeup()
        next_push = pending[0][0] if pending else math.inf
        now = min(wake if wake is not None else math.inf, next_push)
        if now > until:
            return out
        while pending and pending[0][0] <= now:
            t, frame, size = pending.pop(0)
            d.push(t, frame, size)
        out.extend((now, f) for f in d.poll(now))


def _frames(n: int, spacing: float, size: int = 1000) -> list[tuple[float, bytes, int]]:
    return [(i * spacing, i.to_bytes(4, "big"), size) for i in range(n)]


def test_no_impairment_passes_at_once() -> None:
    d = _direction({})
    d.push(1.0, b"x", 100)
    assert d.poll(1.0) == [b"x"]
    assert d.next_wakeup() is None
    c = d.counters
    assert (c.packets_in, c.packets_out, c.bytes_in, c.bytes_out) == (1, 1, 100, 100)


def test_rate_cap_spaces_departures_exactly() -> None:
    # 80 kbit/s = 10,000 bytes/s: a 1000-byte frame every 0.1 s once the one-frame bucket is spent.
    d = _direction({"rate-kbps": 80, "burst-bytes": 1000, "queue-ms": 10_000})
    out = _run(d, _frames(10, 0.0), until=5.0)
    assert [f for _, f in out] == [i.to_bytes(4, "big") for i in range(10)]
    assert [t for t, _ in out] == pytest.approx([i * 0.1 for i in range(10)])
    assert d.queue_delay.max == pytest.approx(0.9)


def test_rate_is_exact_when_polled_late() -> None:
    # A relay that wakes late still sends at the rate: departures are computed in virtual time.
    d = _direction({"rate-kbps": 80, "burst-bytes": 1000, "queue-ms": 10_000})
    for t, frame, size in _frames(20, 0.0):
        d.push(t, frame, size)
    assert len(d.poll(0.95)) == 10  # departures at 0, 0.1, ..., 0.9
    assert len(d.poll(1.951)) == 10


def test_queue_is_bounded_in_time_and_drops_at_the_tail() -> None:
    # 80 kbit/s with 100 ms of queue: 1000 bytes wait at most; the bucket holds one 500-byte frame.
    d = _direction({"rate-kbps": 80, "burst-bytes": 500, "queue-ms": 100})
    for i in range(5):
        d.push(0.0, bytes([i]), 500)
    # The first leaves at once, two wait (1000 bytes), the last two do not fit.
    assert d.counters.dropped["queue_full"] == 2
    out = _run(d, [], until=1.0)
    assert out == [(0.0, b"\x00"), (pytest.approx(0.05), b"\x01"), (pytest.approx(0.1), b"\x02")]


def test_delay_and_jitter_keep_order_unless_asked() -> None:
    pushes = _frames(500, 0.001, 100)
    d = _direction({"delay-ms": 50, "jitter-ms": 20})
    out = _run(d, pushes, until=10.0)
    assert [f for _, f in out] == [f for _, f, _ in pushes]
    for (t, _), (sent, _, _) in zip(out, pushes, strict=True):
        assert sent + 0.05 <= t <= sent + 0.07 + 1e-9

    d = _direction({"delay-ms": 50, "jitter-ms": 20, "reorder": True})
    out = _run(d, pushes, until=10.0)
    order = [int.from_bytes(f, "big") for _, f in out]
    assert sorted(order) == list(range(500)) and order != list(range(500))
    delays = [t - order_i * 0.001 for (t, _), order_i in zip(out, order, strict=True)]
    assert min(delays) >= 0.05 - 1e-9 and max(delays) <= 0.07 + 1e-9
    assert 0.055 < sum(delays) / len(delays) < 0.065  # uniform over [50, 70] ms


def test_random_loss_rate() -> None:
    d = _direction({"loss-pct": 2})
    for i in range(100_000):
        d.push(i * 1e-4, b"x", 100)
    lost = d.counters.dropped["random_loss"]
    assert 1700 <= lost <= 2300
    assert len(d.poll(20.0)) == 100_000 - lost


def test_burst_loss_comes_in_bursts() -> None:
    ge = {"p": 0.02, "r": 0.25}  # stationary loss 0.02 / 0.27 = 7.4 %, bursts of 4 on average
    d = _direction({"burst-loss": ge})
    survivors: list[int] = []
    n = 200_000
    for i in range(n):
        d.push(float(i), i.to_bytes(4, "big"), 100)
        survivors.extend(int.from_bytes(f, "big") for f in d.poll(float(i)))
    lost = d.counters.dropped["burst_loss"]
    assert lost / n == pytest.approx(BurstLoss(0.02, 0.25).mean_loss(), rel=0.1)
    # Runs of consecutive losses: as many as the gaps between survivors, averaging 1/r.
    runs = [b - a - 1 for a, b in itertools.pairwise(survivors) if b - a > 1]
    assert sum(runs) / len(runs) == pytest.approx(4.0, rel=0.1)


def test_steps_apply_at_their_time_in_virtual_time() -> None:
    # 80 kbit/s, then 800 kbit/s from 1 s: frames queued across the step leave 10x faster after it,
    # even though nothing polls between 0 and 2 s.
    steps = [{"at-s": 1, "rate-kbps": 800}]
    d = _direction({"rate-kbps": 80, "burst-bytes": 1000, "queue-ms": 10_000, "steps": steps})
    for t, frame, size in _frames(30, 0.0):
        d.push(t, frame, size)
    assert len(d.poll(0.95)) == 10  # 0 .. 0.9
    assert len(d.poll(1.0 + 0.01 * 9 + 1e-9)) == 10  # at 1.0 and every 10 ms after
    assert d.step == 1
    assert d.impairment.rate_kbps == 800


def test_step_to_unlimited_flushes_the_queue() -> None:
    steps = [{"at-s": 0.5, "rate-kbps": "unlimited"}]
    d = _direction({"rate-kbps": 8, "burst-bytes": 1000, "queue-ms": 10_000, "steps": steps})
    for t, frame, size in _frames(3, 0.0):
        d.push(t, frame, size)
    assert len(d.poll(0.4)) == 1
    assert len(d.poll(0.5)) == 2
    d.push(0.6, b"y", 1000)
    assert d.poll(0.6) == [b"y"]


def test_restart_schedule() -> None:
    d = _direction({"delay-ms": 10, "steps": [{"at-s": 1, "delay-ms": 100}]})
    d.poll(5.0)
    assert d.impairment.delay_ms == 100
    d.restart_schedule(5.0)
    assert d.impairment.delay_ms == 10 and d.epoch == 5.0 and d.step == 0
    assert d.next_wakeup() == 6.0


def test_plan_and_steps_accumulate() -> None:
    config = parse_config(
        {
            "seed": 3,
            "a-to-b": {
                "rate-kbps": 3000,
                "delay-ms": 40,
                "steps": [{"at-s": 10, "rate-kbps": 300}, {"at-s": 20, "loss-pct": 1}],
            },
        }
    )
    plan = config.a_to_b
    assert plan.at(0) == Impairment(rate_kbps=3000, delay_ms=40)
    assert plan.at(10) == Impairment(rate_kbps=300, delay_ms=40)
    assert plan.at(25) == Impairment(rate_kbps=300, delay_ms=40, loss_pct=1)
    assert config.b_to_a == Plan() and config.seed == 3


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"a-to-c": {}}, "unknown keys ['a-to-c']"),
        ({"a-to-b": {"rate": 3}}, "a-to-b: unknown keys ['rate']"),
        ({"a-to-b": {"rate-kbps": 0}}, "a-to-b.rate-kbps: 0 is outside"),
        ({"a-to-b": {"rate-kbps": "fast"}}, "expected a number"),
        ({"a-to-b": {"loss-pct": 101}}, "a-to-b.loss-pct: 101 is outside"),
        ({"a-to-b": {"delay-ms": True}}, "expected a number"),
        ({"a-to-b": {"reorder": 1}}, "expected true or false"),
        ({"a-to-b": {"burst-loss": {"p": 0.1}}}, "a-to-b.burst-loss: r is required"),
        ({"a-to-b": {"burst-loss": {"p": 2, "r": 0.1}}}, "a-to-b.burst-loss.p: 2 is outside"),
        ({"a-to-b": {"steps": [{"rate-kbps": 1}]}}, "a-to-b.steps[0]: at-s is required"),
        ({"a-to-b": {"steps": [{"at-s": 2}, {"at-s": 1}]}}, "a-to-b.steps[1].at-s: steps must be in"),
        ({"a-to-b": {"steps": [{"at-s": 1, "seed": 1}]}}, "a-to-b.steps[0]: unknown keys ['seed']"),
        ({"b-to-a": []}, "b-to-a: expected a table"),
        ({"seed": 1.5}, "seed: expected an integer"),
    ],
)
def test_config_errors_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_config(doc)
    assert message in str(excinfo.value)


def test_config_files(tmp_path: Path) -> None:
    toml = tmp_path / "impair.toml"
    toml.write_text("[b-to-a]\njitter-ms = 5\n[[b-to-a.steps]]\nat-s = 1\nrate-kbps = 300\n")
    assert load_config(toml).b_to_a.at(2) == Impairment(jitter_ms=5, rate_kbps=300)
    js = tmp_path / "impair.json"
    js.write_text(json.dumps({"a-to-b": {"burst-loss": {"p": 0.1, "r": 0.5, "bad-loss": 0.5}}}))
    assert load_config(js).a_to_b.initial.burst_loss == BurstLoss(0.1, 0.5, 0.5)
    (tmp_path / "bad.toml").write_text("[a-to-b\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="missing"):
        load_config(tmp_path / "missing.toml")


def test_histogram_quantiles_within_a_bucket() -> None:
    h = Histogram()
    for i in range(1, 1001):
        h.record(i / 1000)  # 1 ms .. 1 s
    assert h.quantile(0.5) == pytest.approx(0.5, rel=0.011)
    assert h.quantile(0.99) == pytest.approx(0.99, rel=0.011)
    assert h.quantile(1.0) == 1.0 == h.max
    summary = h.summary_ms()
    assert summary["count"] == 1000 and summary["mean"] == pytest.approx(500.5)
    assert Histogram().quantile(0.5) == 0.0


def _stamp(unix: float) -> list[tuple[int, int, bytes]]:
    return [(socket.SOL_SOCKET, SO_TIMESTAMPNS, TIMESPEC.pack(int(unix), round((unix % 1) * 1e9)))]


def test_arrival_is_the_kernels_receive_time_on_the_relays_clock() -> None:
    """A frame the loop read 150 ms late (a stall) arrived when the kernel took it, not at the read."""
    now, unix = 100.0, 1_800_000_000.0
    assert arrival_time(now, unix, _stamp(unix - 0.150), 0.0) == pytest.approx(99.85, abs=1e-6)
    # Never before what the Direction was already told, never after now, and now without a stamp.
    assert arrival_time(now, unix, _stamp(unix - 0.150), 99.9) == 99.9
    assert arrival_time(now, unix, _stamp(unix + 1.0), 0.0) == now
    assert arrival_time(now, unix, [], 0.0) == now
    assert arrival_time(now, unix, [(socket.SOL_SOCKET, SO_TIMESTAMPNS, b"short")], 0.0) == now


def test_a_stall_of_the_loop_costs_no_capacity() -> None:
    """Frames the kernel took 1 ms apart but the loop read together after a 40 ms stall go through a
    1 Mbit/s bottleneck as if read in time when their arrivals come from `arrival_time` (the floor passed
    along as the relay does); taken as arriving at the read, the queue drops some."""
    unix0, read_at = 1_800_000_000.0, 0.040
    frames = [(0.001 * i, b"x" * 125, 125) for i in range(40)]  # exactly the link's rate

    def read_together(stamped: bool) -> tuple[Direction, int]:
        d = _direction({"rate-kbps": 1000, "queue-ms": 20})
        floor, pushes = -math.inf, []
        for t, frame, size in frames:
            anc = _stamp(unix0 + t) if stamped else []
            floor = arrival_time(read_at, unix0 + read_at, anc, floor)
            pushes.append((floor, frame, size))
        return d, len(_run(d, pushes, until=1.0))

    d, left = read_together(stamped=True)
    assert left == 40 and d.counters.dropped["queue_full"] == 0
    d, _ = read_together(stamped=False)
    assert d.counters.dropped["queue_full"] > 0, "all taken at the read"
