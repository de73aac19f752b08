"""RFC 6347 section 4.1.2.7 with real peers: spoofed DTLS from a participant's own address ends no call.

Three aiortc participants in one conference through the real bridge. An attacker who can send UDP with a
participant's exact source address and port (off-path spoofing; here a raw socket building the IPv4 and
UDP headers by hand on loopback) sends the bridge's media port 1,000 DTLS records of each kind, none with
the participant's keys. Every participant must keep receiving and decoding media, the bridge must count
the records as `dtls_invalid` drops on that participant's transport, and no transport may fail.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bridge import Bridge
from bridge.colibri2_handler import Colibri2Handler
from bridge.http import create_private_app
from bridge.lifecycle import Lifecycle, LifecycleConfig
from bridge.load import LoadSampler
from bridge.xmpp_core import BridgeState
from tests.helpers.call import Call, wait_until, wait_until_async
from tests.helpers.peers import AiortcPeer, PeerFactory
from tests.helpers.spoof import PER_KIND, SPOOFS, kernel_drops, spoof_every_kind

pytestmark = pytest.mark.integration


def address_of(stats: dict[str, object], transport_id: int) -> tuple[str, int]:
    """The participant's address as the bridge sees it (its transport's selected ICE pair)."""
    transports = stats["transports"]
    assert isinstance(transports, dict), stats
    remote = transports[transport_id]["selected_remote"]
    assert isinstance(remote, str), transports[transport_id]
    host, port = remote.rsplit(":", 1)
    assert ipaddress.ip_address(host).version == 4, remote
    return host, int(port)


def transport_drops(stats: dict[str, object], transport_id: int, reason: str) -> int:
    transports = stats["transports"]
    assert isinstance(transports, dict)
    drops = transports[transport_id]["drops"]
    assert isinstance(drops, dict)
    value = drops.get(reason, 0)
    assert isinstance(value, int)
    return value


def failures(stats: dict[str, object]) -> dict[str, int]:
    value = stats["failures"]
    assert isinstance(value, dict)
    return value


def all_frames(peers: list[AiortcPeer]) -> Iterator[tuple[str, str, int, int]]:
    for p in peers:
        for o in peers:
            if o is not p:
                yield p.name, o.name, p.frames_from(o.name), p.audio_frames_from(o.name)


async def test_rfc6347_4_1_2_7_spoofed_dtls_from_a_participants_address_ends_no_call(
    bridge: Bridge, aiortc_peers: PeerFactory
) -> None:
    call = Call(bridge.create_conference(meeting_id="spoofed-dtls"))
    alice, bob, carol = aiortc_peers("alice"), aiortc_peers("bob"), aiortc_peers("carol")
    peers = [alice, bob, carol]

    def summary() -> str:
        return "; ".join(p.summary() for p in peers)

    await call.join(alice)
    await call.join(bob)
    # As in test_aiortc_conference: alice latches bob's SSRCs by payload type before carol arrives.
    await wait_until(
        lambda: alice.frames_from("bob") > 0 and bob.frames_from("alice") > 0, within=10, describe=summary
    )
    await call.join(carol)
    await wait_until(
        lambda: all(video >= 10 for _, _, video, _ in all_frames(peers)), within=15, describe=summary
    )

    victim = call.members["alice"].endpoint
    stats = await bridge.get_stats()
    source = address_of(stats, victim.transport_id)
    bridge_addr = bridge.local_addresses()[0]
    invalid_before = transport_drops(stats, victim.transport_id, "dtls_invalid")
    drops_before = kernel_drops(bridge_addr[1])

    sent = await spoof_every_kind(source, bridge_addr)
    print(f"sent {PER_KIND} x each of {len(SPOOFS)} kinds")

    async def counted() -> int:
        return transport_drops(await bridge.get_stats(), victim.transport_id, "dtls_invalid") - invalid_before

    async def all_arrived() -> bool:
        return await counted() + kernel_drops(bridge_addr[1]) - drops_before >= sent

    await wait_until_async(all_arrived, within=10, interval=0.1)
    n = await counted()
    lost = kernel_drops(bridge_addr[1]) - drops_before
    print(f"records spoofed {sent}, counted as dtls_invalid {n}, dropped by the kernel {lost}")
    assert sent - lost <= n <= sent, (sent, n, lost)

    # Every participant keeps receiving and decoding media from every other for several seconds.
    before = {(r, s): (v, a) for r, s, v, a in all_frames(peers)}
    await asyncio.sleep(4)
    for receiver, sender, video, audio in all_frames(peers):
        v0, a0 = before[(receiver, sender)]
        assert video >= v0 + 30, (
            f"{receiver} stopped decoding video from {sender}: {v0} -> {video}; {summary()}"
        )
        assert audio >= a0 + 50, (
            f"{receiver} stopped decoding audio from {sender}: {a0} -> {audio}; {summary()}"
        )
    for p in peers:
        assert p.pc.connectionState == "connected", summary()

    stats = await bridge.get_stats()
    assert sum(failures(stats).values()) == 0, failures(stats)
    for member in call.members.values():
        assert member.endpoint.state == "connected", (member.endpoint.state, member.endpoint.detail)
    total = stats["total"]
    assert isinstance(total, dict) and total["drops"]["dtls_invalid"] >= n, total

    # The same figures through the private HTTP API: Colibri stats and the Prometheus export.
    state = BridgeState()
    handler = Colibri2Handler(bridge, shutdown=state)
    lifecycle = Lifecycle(bridge, state, LifecycleConfig(shutting_down_delay=0.1))
    app = create_private_app(bridge, handler, lifecycle, LoadSampler(), version="test")
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            colibri = await (await client.get("/colibri/stats")).json()
            metrics = await (await client.get("/metrics")).text()
    finally:
        await lifecycle.stop()
    assert colibri["dtls_failed_endpoints"] == 0 and colibri["total_ice_failed"] == 0, colibri
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert samples[("sluice_packets_dropped_total", (("reason", "dtls_invalid"),))] >= n
    causes = {
        dict(k)["cause"]: v for (name, k), v in samples.items() if name == "sluice_transport_failures_total"
    }
    assert causes.get("dtls_alert") == 0 and sum(causes.values()) == 0, causes
