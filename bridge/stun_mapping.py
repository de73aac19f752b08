"""The bridge's public address behind a 1:1 NAT, from STUN servers (ice4j's mapping harvester,
`ice4j.harvest.mapping.stun.addresses`).

At start, for each address the media port is bound on (the wildcard: the source address of the default
route), a Binding request (RFC 8489, without credentials) goes from that address to each configured server in
turn until one answers. Its XOR-MAPPED-ADDRESS, when it is not the local address itself, is advertised too,
with the media port: a 1:1 NAT maps addresses and keeps ports, as JVB assumes as well. The request is made and
the response read by the packet path's own STUN codec (`_native.stun_binding_request`, `stun_mapped_address`),
which has the RFC 5769 vectors and a fuzz target.

Nothing authenticates a Binding response: it counts only when it comes from the server's address and names the
request's 96 random bits of transaction id, so only someone on the path to the server the operator chose can
forge one (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from bridge import _native

log = logging.getLogger(__name__)

#: RFC 8489 6.2.1: the first retransmission after 500 ms, each wait twice the last; three sends (3.5 s per
#: server that does not answer) rather than the RFC's seven, since the bridge waits for this at start.
RTO_S = 0.5
SENDS = 3


@dataclass(frozen=True, slots=True)
class Mapping:
    """A bound address and the public address a STUN server saw it as."""

    local: str
    public: str
    server: tuple[str, int]


class _Answer(asyncio.DatagramProtocol):
    """The first Binding success response from `server` naming `transaction`; anything else is counted."""

    def __init__(self, server: tuple[str, int], transaction: bytes) -> None:
        self.server = server
        self.transaction = transaction
        self.mapped: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self.ignored = 0

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        mapped = (
            _native.stun_mapped_address(data, self.transaction)
            if (str(addr[0]), int(addr[1])) == self.server
            else None
        )
        if mapped is None:
            self.ignored += 1
        elif not self.mapped.done():
            self.mapped.set_result(mapped)

    def error_received(self, exc: Exception) -> None:
        log.debug("STUN mapping: %s", exc)


async def public_address(
    local: str, server: tuple[str, int], *, rto: float = RTO_S, sends: int = SENDS
) -> str | None:
    """What `server` sees a socket on `local` as (its address only), or None without an answer."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ipaddress.ip_address(local).version == 6 else socket.AF_INET
    try:
        infos = await loop.getaddrinfo(server[0], server[1], family=family, type=socket.SOCK_DGRAM)
    except OSError as exc:
        log.warning("STUN mapping: cannot resolve %s: %s", server[0], exc)
        return None
    if not infos:
        return None
    target = infos[0][4]
    resolved = (str(target[0]), int(target[1]))
    transaction = secrets.token_bytes(12)
    request = _native.stun_binding_request(transaction)
    try:
        transport, answer = await loop.create_datagram_endpoint(
            lambda: _Answer(resolved, transaction), local_addr=(local, 0), family=family
        )
    except OSError as exc:
        log.warning("STUN mapping: cannot bind on %s: %s", local, exc)
        return None
    try:
        wait = rto
        for _ in range(sends):
            transport.sendto(request, resolved)
            with contextlib.suppress(TimeoutError):
                ip, _port = await asyncio.wait_for(asyncio.shield(answer.mapped), wait)
                return ip
            wait *= 2
        return None
    finally:
        transport.close()


def probe_address(bound: str) -> str | None:
    """The address to ask for: `bound` itself, or for a wildcard the source address of the default route."""
    addr = ipaddress.ip_address(bound)
    if not addr.is_unspecified:
        return bound
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    target = "2001:db8::1" if addr.version == 6 else "192.0.2.1"  # documentation ranges: nothing is sent
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((target, 9))
        return str(probe.getsockname()[0])
    return None


async def discover(
    bound: Sequence[str], servers: Sequence[tuple[str, int]], *, rto: float = RTO_S, sends: int = SENDS
) -> list[Mapping]:
    """The public address of each bound address that a server sees as another one; servers are tried in
    order until one answers."""
    out = []
    for address in dict.fromkeys(bound):
        local = probe_address(address)
        if local is None:
            continue
        for server in servers:
            public = await public_address(local, server, rto=rto, sends=sends)
            if public is None:
                log.warning("STUN mapping: no answer from %s:%d for %s", server[0], server[1], local)
                continue
            if ipaddress.ip_address(public) != ipaddress.ip_address(local):
                out.append(Mapping(local, public, server))
                log.info("STUN mapping: %s is %s to %s:%d", local, public, server[0], server[1])
            else:
                log.info("STUN mapping: %s is not behind a NAT (%s:%d)", local, server[0], server[1])
            break
    return out
