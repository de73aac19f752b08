"""The send monitor on a fake clock: the byte bound, the stall timeout, and what counts as progress."""

from __future__ import annotations

import pytest

from signaling.xmpp.sendqueue import SendMonitor, SlowReader
from tests.helpers.xmppd import FakeClock

LIMIT = 1000
STALL = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_over_the_byte_bound_is_a_slow_reader_at_once(clock: FakeClock) -> None:
    m = SendMonitor(LIMIT, STALL)
    assert m.check(clock.now, LIMIT, LIMIT) is None  # the bound itself is allowed
    assert m.check(clock.now, LIMIT + 1, LIMIT + 1) is SlowReader.OVER_LIMIT


def test_an_idle_peer_never_stalls(clock: FakeClock) -> None:
    m = SendMonitor(LIMIT, STALL)
    for _ in range(10):
        clock.advance(STALL)
        assert m.check(clock.now, 0, 500) is None
        assert m.deadline is None


def test_output_that_waits_with_nothing_taken_stalls_after_the_timeout(clock: FakeClock) -> None:
    m = SendMonitor(LIMIT, STALL)
    assert m.check(clock.now, 0, 0) is None
    clock.advance(100.0)  # idle for long: the clock starts when output starts to wait, not before
    assert m.check(clock.now, 300, 300) is None
    assert m.deadline == clock.now + STALL
    clock.advance(STALL - 0.001)
    assert m.check(clock.now, 400, 400) is None  # more written, none taken
    clock.advance(0.001)
    assert m.check(clock.now, 400, 400) is SlowReader.STALLED


def test_any_byte_taken_restarts_the_stall_clock(clock: FakeClock) -> None:
    m = SendMonitor(LIMIT, STALL)
    written, queued = 900, 900
    assert m.check(clock.now, queued, written) is None
    for _ in range(20):  # a slow but live peer: one byte per 9.9 s
        clock.advance(STALL - 0.1)
        queued -= 1
        assert m.check(clock.now, queued, written) is None
    clock.advance(STALL)
    assert m.check(clock.now, queued, written) is SlowReader.STALLED


def test_drained_then_waiting_again_starts_a_new_clock(clock: FakeClock) -> None:
    m = SendMonitor(LIMIT, STALL)
    assert m.check(clock.now, 100, 100) is None
    clock.advance(STALL - 1)
    assert m.check(clock.now, 0, 100) is None  # all taken
    assert m.check(clock.now, 50, 150) is None
    clock.advance(STALL - 1)
    assert m.check(clock.now, 50, 150) is None
    clock.advance(1)
    assert m.check(clock.now, 50, 150) is SlowReader.STALLED


def test_a_shrinking_estimate_is_not_progress(clock: FakeClock) -> None:
    """Framing or TLS overhead makes `written - queued` fall while nothing is taken: still a stall."""
    m = SendMonitor(LIMIT, STALL)
    assert m.check(clock.now, 100, 100) is None
    clock.advance(STALL / 2)
    assert m.check(clock.now, 130, 110) is None  # 10 more written, 30 more waiting (record headers)
    clock.advance(STALL / 2)
    assert m.check(clock.now, 130, 110) is SlowReader.STALLED


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        SendMonitor(0, STALL)
    with pytest.raises(ValueError, match="stall_timeout"):
        SendMonitor(LIMIT, 0.0)
