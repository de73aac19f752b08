"""STUN mapping's wire format through the packet path's codec (RFC 5769 vectors), its settings, and its client
against a responder on loopback that answers with the RFC's sample response rewritten for the request.

tests/e2e/test_stun_mapping.py runs it against a real coturn behind a real 1:1 NAT.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge import _native
from bridge.settings import SettingsError, parse_settings
from bridge.stun_mapping import discover, probe_address, public_address

TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

#: RFC 5769 section 2.2: a Binding success response naming 192.0.2.1:32853.
IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
#: RFC 5769 section 2.3: the same for 2001:db8:1234:5678:11:2233:4455:6677 port 32853.
IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)


def test_rfc5769_responses_give_their_mapped_addresses() -> None:
    assert _native.stun_mapped_address(IPV4_RESPONSE, TID) == ("192.0.2.1", 32853)
    assert _native.stun_mapped_address(IPV6_RESPONSE, TID) == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


def test_anything_but_a_binding_success_for_our_transaction_gives_nothing() -> None:
    assert _native.stun_mapped_address(IPV4_RESPONSE, bytes(12)) is None, "another transaction"
    error = b"\x01\x11" + IPV4_RESPONSE[2:]  # a Binding error response
    assert _native.stun_mapped_address(error, TID) is None
    assert _native.stun_mapped_address(_native.stun_binding_request(TID), TID) is None, "a request"
    assert _native.stun_mapped_address(IPV4_RESPONSE[:30], TID) is None, "cut short"
    assert _native.stun_mapped_address(b"", TID) is None


@given(st.binary(max_size=600), st.binary(min_size=12, max_size=12))
def test_arbitrary_datagrams_never_raise(datagram: bytes, transaction: bytes) -> None:
    result = _native.stun_mapped_address(datagram, transaction)
    assert result is None or isinstance(result, tuple)


def test_the_request_is_a_binding_request_with_fingerprint_only() -> None:
    request = _native.stun_binding_request(TID)
    kind, length, cookie = struct.unpack("!HHI", request[:8])
    assert (kind, cookie, request[8:20]) == (0x0001, 0x2112A442, TID)
    assert length == len(request) - 20 == 8
    assert request[20:22] == b"\x80\x28", "FINGERPRINT, nothing else"
    with pytest.raises(ValueError, match="12 bytes"):
        _native.stun_binding_request(b"short")


def test_settings_take_ice4j_stun_addresses() -> None:
    s = parse_settings(
        '[ice4j.harvest.mapping.stun]\naddresses = ["stun.example.org:3478", "[2001:db8::1]:19302"]\n'
    )
    assert s.stun_mapping_servers == (("stun.example.org", 3478), ("2001:db8::1", 19302))
    assert s.bridge_config().stun_mapping_servers == [("stun.example.org", 3478), ("2001:db8::1", 19302)]
    env = parse_settings("", {"SLUICE_STUN_MAPPING_ADDRESSES": "203.0.113.9:3478"})
    assert env.stun_mapping_servers == (("203.0.113.9", 3478),)
    assert parse_settings("").stun_mapping_servers == ()
    for bad in ("stun.example.org", "stun.example.org:0", "bad host:3478", "[nope]:3478", ":3478"):
        with pytest.raises(SettingsError, match=r"ice4j\.harvest\.mapping\.stun\.addresses"):
            parse_settings(f'[ice4j.harvest.mapping.stun]\naddresses = ["{bad}"]\n')


def _response(transaction: bytes, mapped_xored: bytes = IPV4_RESPONSE[40:48]) -> bytes:
    """RFC 5769's sample response to `transaction`, without the integrity and fingerprint it no longer
    matches (the mapping reads neither): its SOFTWARE and the XOR-MAPPED-ADDRESS value `mapped_xored`."""
    body = IPV4_RESPONSE[20:36] + IPV4_RESPONSE[36:40] + mapped_xored
    return struct.pack("!HHI", 0x0101, len(body), 0x2112A442) + transaction + body


class _Responder(asyncio.DatagramProtocol):
    """Answers a Binding request with `_response` to its transaction, after `drop` requests unanswered."""

    def __init__(self, drop: int = 0, answer: Callable[[bytes], bytes] | None = None) -> None:
        self.drop = drop
        self.requests = 0
        self.answer = answer or _response
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.requests += 1
        if self.requests > self.drop and self.transport is not None:
            self.transport.sendto(self.answer(data[8:20]), addr)  # type: ignore[attr-defined]


async def _responder(drop: int = 0, answer: Callable[[bytes], bytes] | None = None) -> tuple[_Responder, int]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Responder(drop, answer), local_addr=("127.0.0.1", 0)
    )
    return proto, int(transport.get_extra_info("sockname")[1])


async def test_the_client_retransmits_and_takes_the_mapped_address() -> None:
    proto, port = await _responder(drop=2)
    assert await public_address("127.0.0.1", ("127.0.0.1", port), rto=0.05) == "192.0.2.1"
    assert proto.requests == 3


async def test_a_silent_or_foreign_answer_gives_none_after_the_retransmissions() -> None:
    proto, port = await _responder(drop=99)
    assert await public_address("127.0.0.1", ("127.0.0.1", port), rto=0.02, sends=3) is None
    assert proto.requests == 3
    # Answers naming another transaction are not taken.
    other, port = await _responder(answer=lambda _tid: IPV4_RESPONSE)
    assert await public_address("127.0.0.1", ("127.0.0.1", port), rto=0.02, sends=2) is None
    assert other.requests == 2


async def test_discover_keeps_only_addresses_seen_as_another_one() -> None:
    _proto, port = await _responder()
    # The first server does not answer; the second does.
    (m,) = await discover(["127.0.0.1"], [("127.0.0.1", 1), ("127.0.0.1", port)], rto=0.05)
    assert (m.local, m.public, m.server) == ("127.0.0.1", "192.0.2.1", ("127.0.0.1", port))
    # A server that sees the address as itself: no NAT, nothing to add.
    assert IPV4_RESPONSE[44:48] == bytes.fromhex("e112a643")  # XOR-MAPPED-ADDRESS's address (192.0.2.1)
    loopback = bytes(a ^ b for a, b in zip(bytes([127, 0, 0, 1]), bytes.fromhex("2112a442"), strict=True))
    _proto, port = await _responder(answer=lambda tid: _response(tid, IPV4_RESPONSE[40:44] + loopback))
    assert await discover(["127.0.0.1"], [("127.0.0.1", port)], rto=0.05) == []


def test_a_wildcard_is_asked_for_from_the_default_routes_source() -> None:
    assert probe_address("127.0.0.1") == "127.0.0.1"
    found = probe_address("0.0.0.0")
    assert found is None or found != "0.0.0.0"
