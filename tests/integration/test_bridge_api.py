"""The Python API over the native core: lifecycle, descriptions, errors, stats (real native core)."""

from __future__ import annotations

import asyncio
import ipaddress
import re

import pytest

from bridge import Bridge, BridgeConfig, BridgeError, Candidate, Fingerprint, Source, TransportDescription
from bridge.bridge import host_priority

pytestmark = pytest.mark.integration

LOOPBACK = ipaddress.ip_address("127.0.0.1")
FINGERPRINT = re.compile(r"^([0-9A-F]{2}:){31}[0-9A-F]{2}$")


async def test_local_description_names_the_shared_port_and_a_sha256_fingerprint(bridge: Bridge) -> None:
    conf = bridge.create_conference(meeting_id="m")
    a, b = conf.create_endpoint("a"), conf.create_endpoint("b")
    da, db = a.local_description(), b.local_description()
    assert da.ufrag != db.ufrag and da.pwd != db.pwd
    assert len(da.ufrag) >= 4 and len(da.pwd) >= 22
    (port,) = {c.port for c in da.candidates + db.candidates}
    assert port == bridge.local_addresses()[0][1]
    assert da.candidates[0].priority == host_priority(65535)
    (fp,) = da.fingerprints
    assert fp.hash == "sha-256" and fp.setup == "actpass" and FINGERPRINT.match(fp.value)
    assert da.fingerprints == db.fingerprints, "one certificate per bridge"


async def test_with_ice_tcp_every_endpoint_also_gets_a_passive_tcp_candidate() -> None:
    async with Bridge(BridgeConfig(udp_port=0, bind_addresses=["127.0.0.1"], ice_tcp_port=0)) as bridge:
        tcp = bridge.shards[0].native.tcp_local_address()
        assert tcp is not None and tcp[0] == "127.0.0.1" and tcp[1] != bridge.local_addresses()[0][1]
        d = bridge.create_conference(meeting_id="m").create_endpoint("a").local_description()
        udp_c, tcp_c = d.candidates
        assert (udp_c.protocol, udp_c.tcptype, udp_c.priority) == ("udp", None, host_priority(65535))
        assert (tcp_c.ip, tcp_c.port, tcp_c.protocol, tcp_c.tcptype) == (LOOPBACK, tcp[1], "tcp", "passive")
        assert tcp_c.priority == host_priority((4 << 13) | 0x1FFF) < udp_c.priority
        assert tcp_c.foundation != udp_c.foundation
        stats = await bridge.get_stats()
        assert stats["io"]["tcp"]["open"] == 0  # type: ignore[index]
    async with Bridge(
        BridgeConfig(udp_port=0, bind_addresses=["127.0.0.1"], ice_tcp_port=0, ice_tcp_mapped_port=443)
    ) as bridge:
        (_, tcp_c) = (
            bridge.create_conference(meeting_id="m").create_endpoint("a").local_description().candidates
        )
        assert tcp_c.port == 443
    async with Bridge(BridgeConfig(udp_port=0, bind_addresses=["127.0.0.1"])) as bridge:
        assert bridge.shards[0].native.tcp_local_address() is None
        (only,) = bridge.create_conference(meeting_id="m").create_endpoint("a").local_description().candidates
        assert only.protocol == "udp"


async def test_lifecycle_errors_are_clear(bridge: Bridge) -> None:
    conf = bridge.create_conference(meeting_id="m", conference_id="c1")
    with pytest.raises(BridgeError, match="already exists"):
        bridge.create_conference(meeting_id="m", conference_id="c1")
    ep = conf.create_endpoint("a")
    with pytest.raises(BridgeError, match="already exists"):
        conf.create_endpoint("a")
    with pytest.raises(BridgeError, match="fingerprint"):
        ep.set_remote_description(TransportDescription("uf", "p" * 22, fingerprints=()))
    ep.close()
    assert ep.state == "closed"
    assert conf.get_endpoint("a") is None
    with pytest.raises(BridgeError, match="expired"):
        ep.set_sources([Source("audio", (1,))])
    conf.close()
    assert bridge.get_conference("c1") is None
    with pytest.raises(BridgeError, match="expired"):
        conf.create_endpoint("b")


async def test_stats_snapshot_has_totals_drops_failures_io_and_transports(bridge: Bridge) -> None:
    conf = bridge.create_conference(meeting_id="m")
    ep = conf.create_endpoint("a")
    ep.set_remote_description(
        TransportDescription(
            "peer",
            "p" * 24,
            fingerprints=(Fingerprint("sha-256", bytes([0xAB] * 32), "active"),),
            candidates=(Candidate(LOOPBACK, 9, 1, "host"),),
        )
    )
    ep.set_sources([Source("audio", (1111,)), Source("video", (2222, 3333))])
    stats = await bridge.get_stats()
    assert set(stats) >= {"total", "failures", "io", "routers", "transports", "seam_commands", "seam_events"}
    total = stats["total"]
    assert isinstance(total, dict)
    assert {"packets_in", "packets_out", "bytes_in", "bytes_out", "drops"} <= set(total)
    transports = stats["transports"]
    assert isinstance(transports, dict) and ep.transport_id in transports
    assert stats["routers"] == 1
    seam_commands = stats["seam_commands"]
    assert isinstance(seam_commands, int) and seam_commands >= 5


async def test_a_peer_that_never_answers_fails_ice(bridge: Bridge) -> None:
    """Checks to an address where nobody listens: the transport fails instead of hanging."""
    conf = bridge.create_conference(meeting_id="m")
    ep = conf.create_endpoint("ghost")
    ep.set_remote_description(
        TransportDescription(
            "ghost",
            "g" * 24,
            fingerprints=(Fingerprint("sha-256", bytes([0xCD] * 32), "active"),),
            candidates=(Candidate(LOOPBACK, 9, 2130706431, "host"),),
        )
    )
    state = await ep.wait_state("connected", timeout=20)
    assert state == "failed" and ep.detail.startswith("ice"), (state, ep.detail)
    stats = await bridge.get_stats()
    failures = stats["failures"]
    assert isinstance(failures, dict) and failures["ice"] == 1


async def test_bridge_binds_ipv4_and_ipv6_on_one_port() -> None:
    try:
        b = Bridge(BridgeConfig(udp_port=0, bind_addresses=["127.0.0.1", "::1"]))
        await b.start()
    except OSError as e:
        pytest.skip(f"no IPv6 loopback here: {e}")
    try:
        addrs = b.local_addresses()
        assert {ip for ip, _ in addrs} == {"127.0.0.1", "::1"}
        assert len({port for _, port in addrs}) == 1
    finally:
        await b.stop()


async def test_stop_releases_the_port() -> None:
    b = Bridge(BridgeConfig(udp_port=0, bind_addresses=["127.0.0.1"]))
    await b.start()
    port = b.local_addresses()[0][1]
    await b.stop()
    again = Bridge(BridgeConfig(udp_port=port, bind_addresses=["127.0.0.1"]))
    await again.start()
    await again.stop()
    with pytest.raises(BridgeError, match="not started"):
        again.create_conference(meeting_id="m")
    await asyncio.sleep(0)


async def test_an_ssrc_owned_by_another_endpoint_is_refused_with_a_warning(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    conf = bridge.create_conference(meeting_id="m")
    a, b = conf.create_endpoint("a"), conf.create_endpoint("b")
    a.set_sources([Source("video", (4242,))])
    with caplog.at_level("WARNING", logger="bridge.bridge"):
        b.set_sources([Source("video", (4242,))])
        for _ in range(100):
            if "owned by another endpoint" in caplog.text:
                break
            await asyncio.sleep(0.02)
    assert "endpoint b" in caplog.text and "4242" in caplog.text, caplog.text
