"""Spoofed DTLS for tests: records of every kind an off-path attacker might send, and a raw socket that sends
them from someone else's address (RFC 791 / RFC 768 headers built by hand; needs root, loopback only)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

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
        pytest.fail("spoofing a participant's address needs a raw socket: run the tests as root")


def kernel_drops(port: int) -> int:
    """Datagrams the kernel dropped on the UDP sockets bound to `port` (receive buffer full)."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            total += int(fields[-1])
    return total


async def spoof_every_kind(source: tuple[str, int], destination: tuple[str, int]) -> int:
    """Sends `PER_KIND` datagrams of every kind in `SPOOFS` from `source`; returns the records sent.

    Paced so the receiver's socket buffer does not overflow (those drops would not be counted as records)."""
    sent = 0
    with raw_socket() as raw:
        for make, per_datagram in SPOOFS.values():
            for i in range(PER_KIND):
                raw.sendto(spoofed_datagram(source, destination, make(i)), (destination[0], 0))
                sent += per_datagram
                if i % 100 == 99:
                    await asyncio.sleep(0.01)
    return sent
