"""A real coturn, configured and started as `sluice serve` does it (sluice/coturn.py), against aioice's TURN
client: fresh credentials from signaling/turn.py allocate and relay to the bridge's address; an expired
username and a forged password get 401 from coturn; a peer other than the bridge gets 403. Then `sluice
serve` with `managed = true`: the credentials its XMPP server hands out (XEP-0215) allocate at the coturn it
started, and the coturn is gone (by PID) when it stops. All on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from signaling.turn import ManagedTurn, TurnConfig, rest_credentials, services
from signaling.xmpp.extdisco import NS_EXTDISCO
from sluice.coturn import Coturn
from tests.helpers.prosody import free_tcp_port
from tests.helpers.serve import running_serve
from tests.helpers.xmppd import RawTcp

SECRET = "integration-secret-of-some-length"
REALM = "meet.sluice"
BRIDGE = "127.0.0.1"  # the "bridge": the only peer coturn may relay to
OTHER = "127.0.0.2"  # anything else on the TURN host


class Echo(asyncio.DatagramProtocol):
    """A UDP peer that answers every datagram with the same bytes, and remembers them."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        assert self.transport is not None
        self.transport.sendto(data, addr)


class Client(asyncio.DatagramProtocol):
    """The application side of a TURN allocation: what the relay delivers, and send errors."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.errors: list[Exception] = []
        self.failed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)
        self.failed.set()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (/proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.asynccontextmanager
async def echo_on(host: str) -> AsyncIterator[tuple[Echo, tuple[str, int]]]:
    loop = asyncio.get_running_loop()
    transport, echo = await loop.create_datagram_endpoint(Echo, local_addr=(host, 0))
    try:
        yield echo, transport.get_extra_info("sockname")[:2]
    finally:
        transport.close()


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[Coturn]:
    turn = TurnConfig(secret=SECRET, hosts=("127.0.0.1",), port=free_tcp_port(), ttl=600)
    managed = ManagedTurn(listen=("127.0.0.1",), min_port=42000, max_port=42100)
    server = Coturn(turn, managed, realm=REALM, peers=(BRIDGE,), directory=tmp_path / "coturn")
    (tmp_path / "coturn").mkdir()
    await server.start()
    pid = server.pid
    assert pid is not None
    try:
        yield server
    finally:
        await server.stop()
        assert not alive(pid)


def credentials(expires: float, user: str = "alice", secret: str = SECRET) -> tuple[str, str]:
    return rest_credentials(secret, user, int(expires))


async def allocate(
    server: Coturn, username: str, password: str, transport: str = "udp"
) -> tuple[object, Client]:
    return await create_turn_endpoint(
        Client, ("127.0.0.1", server.turn.port), username, password, transport=transport
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_fresh_credentials_allocate_and_relay_to_the_bridge(coturn: Coturn, transport: str) -> None:
    (turn_udp,) = [
        s for s in services(coturn.turn, "alice", time.time()) if s.type == "turn" and s.transport == "udp"
    ]
    assert turn_udp.username is not None and turn_udp.password is not None
    relay, client = await allocate(coturn, turn_udp.username, turn_udp.password, transport)
    try:
        relayed = relay.get_extra_info("sockname")  # type: ignore[attr-defined]
        assert relayed[0] == "127.0.0.1" and 42000 <= relayed[1] <= 42100, relayed
        async with echo_on(BRIDGE) as (echo, address):
            relay.sendto(b"hello bridge", address)  # type: ignore[attr-defined]
            data, source = await asyncio.wait_for(client.received.get(), 5)
        assert (data, source) == (b"hello bridge", address)
        assert echo.received == [b"hello bridge"]
    finally:
        relay.close()  # type: ignore[attr-defined]


async def test_an_expired_username_is_refused_with_401(coturn: Coturn) -> None:
    username, password = credentials(time.time() - 5)
    with pytest.raises(stun.TransactionFailed) as info:
        await allocate(coturn, username, password)
    assert info.value.response.attributes["ERROR-CODE"][0] == 401


async def test_a_forged_password_is_refused_with_401(coturn: Coturn) -> None:
    username, _ = credentials(time.time() + 600)
    _, other_secret = credentials(time.time() + 600, secret="not-the-shared-secret-at-all")
    for password in (other_secret, "guessed"):
        with pytest.raises(stun.TransactionFailed) as info:
            await allocate(coturn, username, password)
        assert info.value.response.attributes["ERROR-CODE"][0] == 401
    # A later expiry with the password of another one is forged too (the expiry is signed).
    _, old_password = credentials(time.time() + 60)
    with pytest.raises(stun.TransactionFailed) as info:
        await allocate(coturn, username, old_password)
    assert info.value.response.attributes["ERROR-CODE"][0] == 401


async def test_a_peer_other_than_the_bridge_is_refused_with_403(coturn: Coturn) -> None:
    relay, client = await allocate(coturn, *credentials(time.time() + 600))
    try:
        async with echo_on(OTHER) as (echo, address):
            relay.sendto(b"into the LAN", address)  # type: ignore[attr-defined]
            await asyncio.wait_for(client.failed.wait(), 5)
            await asyncio.sleep(0.3)
        (error,) = client.errors
        assert isinstance(error, stun.TransactionFailed), error
        assert error.response.attributes["ERROR-CODE"][0] == 403
        assert echo.received == []
    finally:
        relay.close()  # type: ignore[attr-defined]


def test_the_generated_configuration_denies_every_peer_but_the_bridge(coturn: Coturn) -> None:
    assert coturn.directory is not None
    conf = (coturn.directory / "turnserver.conf").read_text().splitlines()
    assert "denied-peer-ip=0.0.0.0-255.255.255.255" in conf
    assert "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" in conf
    assert [line for line in conf if line.startswith("allowed-peer-ip")] == ["allowed-peer-ip=127.0.0.1"]
    assert {"no-tcp-relay", "no-cli", "no-multicast-peers", "use-auth-secret", "no-rfc5780"} <= set(conf)
    assert os.stat(coturn.directory / "turnserver.conf").st_mode & 0o077 == 0


async def test_serve_runs_coturn_and_its_xmpp_credentials_work_there(tmp_path: Path) -> None:
    port = free_tcp_port()
    settings = f"[signaling.turn]\nmanaged = true\nport = {port}\nmin-port = 42200\nmax-port = 42300\n"
    async with running_serve(tmp_path, settings) as serve:
        line = next(line for line in serve.output if "managed coturn PID" in line)
        pid = int(line.split("managed coturn PID ", 1)[1].split()[0])
        assert alive(pid)
        assert "relaying only to 127.0.0.1" in line, line
        c2s = await RawTcp.connect(serve.c2s_port)
        try:
            await c2s.login_anonymous("meet.sluice")
            c2s.write(f"<iq type='get' id='s' to='meet.sluice'><services xmlns='{NS_EXTDISCO}'/></iq>")
            reply = await c2s.read_until(lambda e: e.get("id") == "s")
        finally:
            await c2s.close()
        listed = reply.find(f"{{{NS_EXTDISCO}}}services")
        assert listed is not None, reply
        turn_udp = next(s for s in listed if s.get("type") == "turn" and s.get("transport") == "udp")
        assert (turn_udp.get("host"), turn_udp.get("port")) == ("127.0.0.1", str(port))
        relay, _ = await create_turn_endpoint(
            Client, ("127.0.0.1", port), turn_udp.get("username"), turn_udp.get("password")
        )
        assert 42200 <= relay.get_extra_info("sockname")[1] <= 42300
        relay.close()
        metrics = await serve.metrics()
        assert metrics['sluice_xmpp_events_total{event="turn_credentials_issued"}'] == 1, metrics
    for _ in range(50):
        if not alive(pid):
            break
        await asyncio.sleep(0.1)
    assert not alive(pid), "coturn outlived sluice serve"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


async def test_turns_over_tls_with_the_managed_certificate(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    turn = TurnConfig(
        secret=SECRET, hosts=("127.0.0.1",), port=free_tcp_port(), tls_port=free_tcp_port(), turns=True
    )
    managed = ManagedTurn(
        listen=("127.0.0.1",), min_port=42600, max_port=42700, tls_cert=str(cert), tls_key=str(key)
    )
    (tmp_path / "coturn").mkdir()
    server = Coturn(turn, managed, realm=REALM, peers=(BRIDGE,), directory=tmp_path / "coturn")
    await server.start()
    try:
        (turns,) = [s for s in services(turn, "alice", time.time()) if s.type == "turns"]
        assert (turns.port, turns.transport) == (turn.tls_port, "tcp")
        context = ssl.create_default_context(cafile=str(cert))
        relay, client = await create_turn_endpoint(
            Client, ("127.0.0.1", turns.port), turns.username, turns.password, transport="tcp", ssl=context
        )
        try:
            async with echo_on(BRIDGE) as (_, address):
                relay.sendto(b"over tls", address)
                data, _ = await asyncio.wait_for(client.received.get(), 5)
            assert data == b"over tls"
        finally:
            relay.close()
    finally:
        await server.stop()
