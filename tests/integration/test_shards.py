"""Several shards: conferences placed on different shard threads, each with its own port, all with media
(real native core, real aiortc peers)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge import Bridge, BridgeConfig
from bridge.bridge import process_threads
from tests.conftest import _require_native_core
from tests.helpers.call import Call, wait_until
from tests.helpers.peers import AiortcPeer, PeerFactory

pytestmark = pytest.mark.integration


@pytest.fixture
async def two_shards() -> AsyncIterator[Bridge]:
    _require_native_core()
    async with Bridge(BridgeConfig(udp_port=0, bind_addresses=["127.0.0.1"], shards=2)) as b:
        yield b


def _shard_threads() -> list[str]:
    names = []
    for tid, shard in process_threads():
        if shard:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
    return sorted(names)


async def test_conferences_spread_over_two_shards_each_forwards_its_own_media(
    two_shards: Bridge, aiortc_peers: PeerFactory
) -> None:
    bridge = two_shards
    assert _shard_threads() == ["sluice-shard-0", "sluice-shard-1"]
    ports = [shard.native.local_addresses()[0][1] for shard in bridge.shards]
    assert ports[0] != ports[1], ports
    assert {p for _, p in bridge.local_addresses()} == set(ports)

    # Idle shards: placement alternates by conference count.
    first = Call(bridge.create_conference(meeting_id="on-one"))
    second = Call(bridge.create_conference(meeting_id="on-other"))
    assert {first.conference.shard.index, second.conference.shard.index} == {0, 1}

    calls = {"on-one": first, "on-other": second}
    peers: dict[str, list[AiortcPeer]] = {}
    for meeting, call in calls.items():
        a, b = aiortc_peers(f"{meeting}-a"), aiortc_peers(f"{meeting}-b")
        peers[meeting] = [a, b]
        await call.join(a)
        await call.join(b)
        shard_port = call.conference.shard.native.local_addresses()[0][1]
        # Every candidate the endpoint was given names its conference's shard's port, and one certificate.
        for member in call.members.values():
            local = member.endpoint.local_description()
            assert {c.port for c in local.candidates} == {shard_port}
            assert local.fingerprints == (bridge.fingerprint,)

    everyone = [p for pair in peers.values() for p in pair]
    await wait_until(
        lambda: all(a.frames_from(b.name) >= 20 and b.frames_from(a.name) >= 20 for a, b in peers.values()),
        within=20,
        describe=lambda: "; ".join(p.summary() for p in everyone),
    )
    # Nothing crosses between conferences, whichever shard they are on.
    for meeting, (a, b) in peers.items():
        for other_meeting, others in peers.items():
            if other_meeting != meeting:
                for o in others:
                    assert a.frames_from(o.name) == 0 and b.frames_from(o.name) == 0

    stats = await bridge.get_stats()
    shards = stats["shards"]
    assert isinstance(shards, list) and len(shards) == 2
    total = stats["total"]
    assert isinstance(total, dict)
    for entry in shards:
        assert entry["routers"] == 1 and entry["transports"] == 2, shards
        assert entry["packets_in"] > 0 and entry["packets_out"] > 0, shards
        assert entry["cpu_seconds"] > 0, shards
    # The merged snapshot is the sum of the shards', and holds every transport.
    assert total["packets_out"] == sum(e["packets_out"] for e in shards)
    transports = stats["transports"]
    assert isinstance(transports, dict)
    ids = {m.endpoint.transport_id for call in calls.values() for m in call.members.values()}
    assert ids <= set(transports)

    # One conference ending leaves the other shard's call untouched.
    second.conference.close()
    before = [peers["on-one"][0].frames_from("on-one-b"), peers["on-one"][1].frames_from("on-one-a")]
    await wait_until(
        lambda: (
            peers["on-one"][0].frames_from("on-one-b") >= before[0] + 20
            and peers["on-one"][1].frames_from("on-one-a") >= before[1] + 20
        ),
        within=10,
        describe=lambda: "; ".join(p.summary() for p in peers["on-one"]),
    )
    held = bridge.conferences_per_shard()
    assert (held[first.conference.shard.index], held[second.conference.shard.index]) == (1, 0)
