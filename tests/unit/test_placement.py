"""Placement of conferences over shards by measured load; the registry over several shards (fake seams)."""

from __future__ import annotations

import asyncio

import pytest

from bridge import Bridge, BridgeError, _native
from bridge.bridge import merge_snapshots
from bridge.placement import WARMUP, Placement
from tests.helpers.fake_native import FakeNative


def _place(placement: Placement, now: float, held: list[int], count: int) -> list[int]:
    """`count` new conferences at `now`, each added to `held` where it went."""
    chosen = []
    for _ in range(count):
        chosen.append(placement.choose(now, held))
        held[chosen[-1]] += 1
    return chosen


def _measured(first: float, second: float) -> Placement:
    """Two shards whose threads used `first` and `second` cores over the last second."""
    placement = Placement(2)
    for shard in (0, 1):
        placement.observe(shard, 0.0, 0.0)
    placement.observe(0, 1.0, first)
    placement.observe(1, 1.0, second)
    return placement


def test_idle_shards_take_new_conferences_in_turn() -> None:
    assert _place(Placement(3), 0.0, [0, 0, 0], 7) == [0, 1, 2, 0, 1, 2, 0]


def test_the_least_loaded_shard_by_measured_cpu_wins() -> None:
    # Shard 0's thread used 0.6 of a core over the second, shard 1's 0.2, with more conferences.
    placement = _measured(0.6, 0.2)
    assert placement.estimates(1.0, [4, 6]) == pytest.approx([0.6, 0.2])
    assert placement.choose(1.0, [4, 6]) == 1


def test_shards_measured_about_equal_keep_equal_counts_and_a_dearer_one_gets_fewer() -> None:
    # Equal meetings: 0.24 against 0.25 cores is noise; the counts decide, whichever shard measured less.
    placement = _measured(0.25, 0.24)
    assert placement.choose(1.0, [7, 6]) == 1
    assert placement.choose(1.0, [6, 7]) == 0
    # A shard carrying a large meeting (0.6 against 0.2 cores) gets the next ones though it has fewer.
    placement.observe(0, 2.0, 0.85)
    placement.observe(1, 2.0, 0.44)
    assert placement.choose(2.0, [3, 9]) == 1


def test_a_burst_of_new_conferences_is_spread_before_any_of_them_shows_its_cost() -> None:
    """Each newly placed conference counts as the average measured cost of a conference until WARMUP."""
    placement = _measured(0.40, 0.20)  # 0.15 cores per conference on average
    held = [2, 2]
    chosen = _place(placement, 1.0, held, 6)
    # Measured alone, shard 1 would stay the lighter for all six; counting each new one at the average
    # cost, shard 0 gets its share once shard 1's newcomers catch up with it.
    assert chosen[:2] == [1, 1] and 2 <= chosen.count(0) < chosen.count(1), chosen
    # Past WARMUP the new conferences count as what their shard measures.
    assert placement.estimates(1.0 + WARMUP + 0.1, held) == pytest.approx([0.40, 0.20])


def test_a_cpu_counter_that_goes_back_or_comes_too_soon_does_not_make_up_a_rate() -> None:
    placement = Placement(1)
    placement.observe(0, 0.0, 5.0)
    placement.observe(0, 0.05, 9.0)  # under MIN_INTERVAL: no rate from it
    assert placement.shards[0].cpu == 0.0
    placement.observe(0, 1.0, 5.5)
    assert placement.shards[0].cpu == pytest.approx(0.5)
    placement.observe(0, 2.0, 0.1)  # a restarted shard
    assert placement.shards[0].cpu == 0.0
    with pytest.raises(ValueError):
        Placement(0)


def _two_shards() -> tuple[Bridge, list[FakeNative]]:
    natives = [FakeNative([("127.0.0.1", 10000)]), FakeNative([("127.0.0.1", 10001)])]
    return Bridge(native=natives), natives


def test_each_conference_lives_on_one_shard_with_that_shards_port_and_commands() -> None:
    bridge, natives = _two_shards()
    one, two = bridge.create_conference("m1"), bridge.create_conference("m2")
    assert (one.shard.index, two.shard.index) == (0, 1)
    a = one.create_endpoint("a")
    b = two.create_endpoint("b")
    assert {c.port for c in a.local_description().candidates} == {10000}
    assert {c.port for c in b.local_description().candidates} == {10001}
    b.set_force_mute(True, False)
    assert [m for m, _ in natives[0].commands] == ["create_router", "create_transport"]
    assert [m for m, _ in natives[1].commands] == ["create_router", "create_transport", "set_force_mute"]
    assert {p for _, p in bridge.local_addresses()} == {10000, 10001}
    two.close()
    assert bridge.conferences_per_shard() == [1, 0]
    # The freed shard takes the next one.
    assert bridge.create_conference("m3").shard.index == 1


def test_shards_with_different_certificates_are_refused() -> None:
    class OtherCert(FakeNative):
        def fingerprint(self) -> tuple[_native.HashFunction, bytes]:
            return _native.HashFunction.SHA_256, bytes(32)

    with pytest.raises(BridgeError, match="one DTLS certificate"):
        Bridge(native=[FakeNative(), OtherCert()])


async def test_stats_come_from_every_shard_merged_and_events_reach_their_owner() -> None:
    bridge, natives = _two_shards()
    ep = bridge.create_conference("m2").create_endpoint("x")  # shard 0
    ep2 = bridge.create_conference("m3").create_endpoint("y")  # shard 1
    natives[1].push_event(_native.TransportStateEvent(ep2.transport_id, _native.TransportState.CONNECTED, ""))
    bridge._drain_events(bridge.shards[1])
    assert (ep.state, ep2.state) == ("new", "connected")

    stats = asyncio.ensure_future(bridge.get_stats(timeout=1.0))
    await asyncio.sleep(0)
    for i, native in enumerate(natives):
        ((request_id,),) = native.named("get_stats")
        assert isinstance(request_id, int)
        native.push_event(
            _native.StatsEvent(
                request_id,
                {
                    "total": {"packets_in": 10 * (i + 1), "packets_out": 100, "drops": {"filtered": i}},
                    "failures": {"ice": 1},
                    "io": {"send_calls": 5, "tcp": {"open": i}},
                    "routers": 1,
                    "cpu_seconds": 0.5,
                    "transports": {[ep, ep2][i].transport_id: {"packets_in": 1}},
                    "layers": [{"router": i}],
                    "waiting": [],
                },
            )
        )
        assert not stats.done()
        bridge._drain_events(bridge.shards[i])
    merged = await stats
    assert merged["total"] == {"packets_in": 30, "packets_out": 200, "drops": {"filtered": 1}}
    assert merged["failures"] == {"ice": 2} and merged["io"] == {"send_calls": 10, "tcp": {"open": 1}}
    assert merged["routers"] == 2 and merged["cpu_seconds"] == 1.0
    transports = merged["transports"]
    assert isinstance(transports, dict) and set(transports) == {ep.transport_id, ep2.transport_id}
    assert merged["layers"] == [{"router": 0}, {"router": 1}]
    assert [s["packets_in"] for s in merged["shards"]] == [10, 20]  # type: ignore[attr-defined]
    assert merge_snapshots([]) == {"shards": []}
