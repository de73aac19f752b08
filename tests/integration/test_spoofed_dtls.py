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
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bridge import Bridge
from bridge.colibri2.handler import Colibri2Handler
from bridge.http import create_private_app
from bridge.lifecycle import Lifecycle, LifecycleConfig
from bridge.load import LoadSampler
from bridge.xmpp import BridgeState
from tests.helpers.call import Call, wait_until, wait_until_async
from tests.helpers.peers import AiortcPeer, PeerFactory

pytestmark = pytest.mark.integration

PER_KIND = 1000
# The bridge and aiortc (OpenSSL) settle on an AES-GCM suite: 8-byte nonce + 2-byte alert + 16-byte tag.
GCM_ALERT_LEN = 26
# ContentType values (RFC 5246 section 6.2.1).
CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23


def record(content_type: int, epoch: int, seq: int, fragment: bytes) -> bytes:
    """An RFC 6347 section 4.1 record header (DTLS 1.2) and its fragment."""
    return (
        struct.pack("!BHH", content_type, 0xFEFD, epoch)
        + seq.to_bytes(6, "big")
        + struct.pack("!H", len(fragment))
        + fragment
    )


def junk(seed: int, length: int) -> bytes:
    """Deterministic bytes (xorshift), so a failure reproduces."""
    x = (seed * 0x9E3779B97F4A7C15 | 1) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    for _ in range(length):
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        out.append(x & 0xFF)
    return bytes(out)


def _garbage_of_valid_framing(i: int) -> bytes:
    parts = []
    for k in range(3):
        b = junk(i * 3 + k, 4)
        parts.append(record(20 + b[0] % 4, b[1] % 3, i, junk(i + k, b[2] + 1)))
    return b"".join(parts)


# name -> (record number -> datagram, records per datagram)
SPOOFS: dict[str, tuple[Callable[[int], bytes], int]] = {
    "alert fatal epoch 1, 15 bytes": (lambda i: record(ALERT, 1, i, b"\x02\x28"), 1),
    "alert warning epoch 1, 15 bytes": (lambda i: record(ALERT, 1, i, b"\x01\x00"), 1),
    "alert fatal epoch 0": (lambda i: record(ALERT, 0, i, b"\x02\x28"), 1),
    "alert close_notify epoch 0": (lambda i: record(ALERT, 0, i, b"\x01\x00"), 1),
    "alert epoch 1, exact ciphertext length": (lambda i: record(ALERT, 1, i + 1, junk(i, GCM_ALERT_LEN)), 1),
    "alert epoch 1, long": (lambda i: record(ALERT, 1, i, junk(i, 64 + i % 900)), 1),
    "application data epoch 1": (lambda i: record(APPLICATION_DATA, 1, i, junk(i, i % 1200)), 1),
    "handshake epoch 1, short": (lambda i: record(HANDSHAKE, 1, i, junk(i, i % 24)), 1),
    "handshake epoch 1, plausible": (lambda i: record(HANDSHAKE, 1, i + 1, junk(i, 48 + (i % 16) * 16)), 1),
    "handshake epoch 0, ClientHello-like": (
        lambda i: record(HANDSHAKE, 0, i, b"\x01\x00\x00\x28" + junk(i, 40)),
        1,
    ),
    "change_cipher_spec epoch 0": (lambda i: record(CHANGE_CIPHER_SPEC, 0, i, b"\x01"), 1),
    "change_cipher_spec epoch 1": (lambda i: record(CHANGE_CIPHER_SPEC, 1, i, junk(i, 1 + i % 40)), 1),
    "epoch 2": (lambda i: record(ALERT, 2, i, junk(i, GCM_ALERT_LEN)), 1),
    "epoch 0xffff": (lambda i: record(HANDSHAKE, 0xFFFF, i, junk(i, 48)), 1),
    "shorter than the cipher minimum": (
        lambda i: record(
            (ALERT, HANDSHAKE, APPLICATION_DATA, CHANGE_CIPHER_SPEC)[i % 4], 1, i, junk(i, i % 24)
        ),
        1,
    ),
    "garbage of valid framing, three records per datagram": (_garbage_of_valid_framing, 3),
}


def _checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\x00"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def spoofed_datagram(source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 packet (RFC 791) carrying a UDP datagram (RFC 768) from `source`, built by hand."""
    src, dst = socket.inet_aton(source[0]), socket.inet_aton(destination[0])
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, udp_len)
    udp = struct.pack("!HHHH", source[1], destination[1], udp_len, 0) + payload
    udp_sum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, socket.IPPROTO_UDP, 0, src, dst
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def raw_socket() -> socket.socket:
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        pytest.skip("a raw socket needs root (CAP_NET_RAW)")


def kernel_drops(port: int) -> int:
    """Datagrams the kernel dropped on the UDP sockets bound to `port` (receive buffer full)."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            total += int(fields[-1])
    return total


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

    sent = 0
    with raw_socket() as raw:
        for name, (make, per_datagram) in SPOOFS.items():
            for i in range(PER_KIND):
                raw.sendto(spoofed_datagram(source, bridge_addr, make(i)), (bridge_addr[0], 0))
                sent += per_datagram
                if i % 100 == 99:
                    # Paced so the bridge's socket buffer never overflows (those would not be counted).
                    await asyncio.sleep(0.01)
            print(f"sent {PER_KIND} x {name}")

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
    handler = Colibri2Handler(bridge)
    lifecycle = Lifecycle(bridge, handler, BridgeState(), LifecycleConfig(shutting_down_delay=0.1))
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
