"""Stress and rates from successive stats snapshots (pure, fake clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.load import LoadSampler


def snap(pin: int, pout: int, bin_: int = 0, bout: int = 0) -> dict[str, object]:
    return {"total": {"packets_in": pin, "packets_out": pout, "bytes_in": bin_, "bytes_out": bout}}


def test_first_snapshot_is_only_a_baseline() -> None:
    s = LoadSampler(capacity_pps=1000)
    assert s.update(0.0, snap(5000, 5000)).stress_level == 0


def test_rates_and_stress_follow_the_counters() -> None:
    s = LoadSampler(capacity_pps=1000)
    s.update(10.0, snap(0, 0, 0, 0))
    sample = s.update(12.0, snap(400, 1200, 50_000, 150_000))
    assert sample.packet_rate_download == 200 and sample.packet_rate_upload == 600
    assert sample.packet_rate == 800
    assert sample.bit_rate_download == 200.0 and sample.bit_rate_upload == 600.0  # kbit/s
    assert sample.stress_level == pytest.approx(0.8)
    assert s.update(14.0, snap(400, 1200, 50_000, 150_000)).stress_level == 0


def test_a_restarted_core_counts_from_zero() -> None:
    s = LoadSampler(capacity_pps=100)
    s.update(0.0, snap(10_000, 10_000))
    assert s.update(1.0, snap(30, 20)).packet_rate == 50


def test_no_time_elapsed_keeps_the_last_sample() -> None:
    s = LoadSampler(capacity_pps=100)
    s.update(0.0, snap(0, 0))
    first = s.update(1.0, snap(50, 0))
    assert s.update(1.0, snap(500, 0)) == first


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        LoadSampler(capacity_pps=0)
    with pytest.raises(ValueError):
        LoadSampler().update(0.0, {})


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), min_size=2, max_size=20))
def test_stress_is_never_negative(steps: list[tuple[int, int]]) -> None:
    s = LoadSampler(capacity_pps=50_000)
    pin = pout = 0
    for t, (a, b) in enumerate(steps):
        pin, pout = pin + a, pout + b
        assert s.update(float(t), snap(pin, pout)).stress_level >= 0
