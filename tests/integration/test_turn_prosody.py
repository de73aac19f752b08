"""Prosody's mod_external_services configured as docs/operations.md says gives the same XEP-0215 answer as
the embedded server's `[signaling.turn]`, and its credentials allocate at a real coturn with the same
secret (started as `sluice serve` starts it, sluice/coturn.py). All on loopback."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from signaling.turn import ManagedTurn, TurnConfig, services
from signaling.xmpp.extdisco import NS_EXTDISCO, answer
from sluice.coturn import Coturn
from tests.helpers.prosody import DOMAIN, Prosody, free_tcp_port
from tests.helpers.xmppd import RawTcp

SECRET = "prosody-and-coturn-share-this-secret"

#: docs/operations.md, "TURN with Prosody", for a coturn on 127.0.0.1:{port}.
PROSODY_TURN = """\
external_service_secret = "{secret}"
external_service_host = "127.0.0.1"
external_service_port = {port}
external_services = {{
    {{ type = "stun", transport = "udp" }};
    {{ type = "turn", transport = "udp", secret = true, ttl = 86400 }};
    {{ type = "turn", transport = "tcp", secret = true, ttl = 86400 }};
}}
"""


@pytest.fixture
def turn_port() -> int:
    return free_tcp_port()


@pytest.fixture
def prosody(tmp_path: Path, turn_port: int) -> Iterator[Prosody]:
    server = Prosody.create(
        tmp_path / "prosody",
        modules=("external_services",),
        settings=PROSODY_TURN.format(secret=SECRET, port=turn_port),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def ask(prosody: Prosody, payload: str) -> ET.Element:
    c2s = await RawTcp.connect(prosody.c2s_port)
    try:
        await c2s.login_anonymous(DOMAIN)
        c2s.write(f"<iq type='get' id='q' to='{DOMAIN}'>{payload}</iq>")
        return await c2s.read_until(lambda e: e.get("id") == "q")
    finally:
        await c2s.close()


def shape(services_element: ET.Element) -> list[tuple[str | None, ...]]:
    """What a client reads of an answer, credentials aside: kind, where, and whether they are restricted."""
    return [
        (s.get("type"), s.get("host"), s.get("port"), s.get("transport"), s.get("restricted"),
         str(s.get("expires") is not None), str(s.get("password") is not None))
        for s in services_element
    ]  # fmt: skip


async def test_prosody_answers_like_the_embedded_server_and_coturn_takes_its_credentials(
    prosody: Prosody, turn_port: int, tmp_path: Path
) -> None:
    reply = await ask(prosody, f"<services xmlns='{NS_EXTDISCO}'/>")
    assert reply.get("type") == "result", ET.tostring(reply)
    theirs = reply.find(f"{{{NS_EXTDISCO}}}services")
    assert theirs is not None
    config = TurnConfig(secret=SECRET, hosts=("127.0.0.1",), port=turn_port)
    ours = answer(ET.Element(f"{{{NS_EXTDISCO}}}services"), services(config, "anyone", time.time()))
    assert shape(theirs) == shape(ours)
    turn_udp = next(s for s in theirs if s.get("type") == "turn" and s.get("transport") == "udp")
    username, password = turn_udp.get("username"), turn_udp.get("password")
    assert username is not None and password is not None
    # Prosody's username is the expiry alone (no user part): a day from now, as its ttl says.
    assert abs(int(username) - (time.time() + 86400)) < 60
    directory = tmp_path / "coturn"
    directory.mkdir()
    coturn = Coturn(
        config, ManagedTurn(listen=("127.0.0.1",), min_port=42400, max_port=42500), realm=DOMAIN,
        peers=("127.0.0.1",), directory=directory,
    )  # fmt: skip
    await coturn.start()
    try:
        relay, _ = await create_turn_endpoint(
            asyncio.DatagramProtocol, ("127.0.0.1", turn_port), username, password
        )
        assert 42400 <= relay.get_extra_info("sockname")[1] <= 42500
        relay.close()
        # A password Prosody did not sign is refused, as for the embedded server's credentials.
        with pytest.raises(stun.TransactionFailed) as info:
            await create_turn_endpoint(
                asyncio.DatagramProtocol, ("127.0.0.1", turn_port), username, "x" + password
            )
        assert info.value.response.attributes["ERROR-CODE"][0] == 401
    finally:
        await coturn.stop()
