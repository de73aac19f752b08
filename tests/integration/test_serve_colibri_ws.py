"""`sluice serve` carries the bridge channel (colibri-ws, docs/jitsi-protocol.md 3.2 and 4) on its web port.

The real command in a subprocess; two participants (tests/helpers/jingle_peer.py: slixmpp + aiortc) join a
room. Each session-initiate's transport carries `<web-socket url>` naming the web port (no public server of
the bridge's own); the socket opens there, greets with ServerHello, tells who is forwarded, and answers
ClientHello; a wrong pwd is refused. With `--no-colibri-ws` no `<web-socket>` is sent and the route is gone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aioice.ice
import pytest

from signaling.jingle import Jingle
from tests.helpers.call import wait_until_async
from tests.helpers.jingle_peer import JinglePeer
from tests.helpers.serve import running_serve

pytestmark = pytest.mark.integration

DOMAIN = "meet.test"
ROOM = "channel"


@pytest.fixture
def loopback_only() -> Iterator[None]:
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    yield
    aioice.ice.get_host_addresses = original


def web_sockets(initiate: Jingle) -> set[str]:
    return {url for c in initiate.contents if c.transport is not None for url in c.transport.web_sockets}


async def receive(ws: aiohttp.ClientWebSocketResponse, colibri_class: str) -> dict[str, Any]:
    """The next message of that class (others are skipped), within 10 s."""
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            body: dict[str, Any] = json.loads(msg.data)
            if body.get("colibriClass") == colibri_class:
                return body


async def test_the_session_initiate_names_the_web_port_and_the_channel_answers_there(
    tmp_path: Path, loopback_only: None
) -> None:
    async with running_serve(tmp_path, domain=DOMAIN) as served:
        peers = [JinglePeer(served, ROOM) for _ in range(2)]
        try:
            for peer in peers:
                await peer.join()

            async def initiated() -> bool:
                return all(p.initiates for p in peers)

            await wait_until_async(initiated, within=20)
            urls = {}
            for peer in peers:
                (url,) = web_sockets(peer.initiates[-1])
                parts = urlsplit(url)
                assert (parts.scheme, parts.netloc) == ("ws", served.web), url
                assert parts.path.startswith("/colibri-ws/default-id/"), url
                assert parts.path.endswith(f"/{peer.nick}"), url
                urls[peer.nick] = url
            assert any("sluice serve: bridge channel at ws://" in line for line in served.output)

            me, other = peers
            async with aiohttp.ClientSession() as http:
                # Someone else's endpoint with my pwd: refused before the upgrade.
                mine = urlsplit(urls[me.nick])
                theirs = urlsplit(urls[other.nick])
                forged = f"ws://{served.web}{theirs.path}?{mine.query}"
                async with http.get(forged.replace("ws://", "http://")) as resp:
                    assert resp.status == 403, await resp.text()

                async with http.ws_connect(urls[me.nick]) as ws:
                    await receive(ws, "ServerHello")
                    forwarded = await receive(ws, "ForwardedSources")
                    if not forwarded["forwardedSources"]:
                        # The other's session-accept (its sources) may come after we connected.
                        forwarded = await receive(ws, "ForwardedSources")
                    assert forwarded["forwardedSources"] == [f"{other.nick}-v0"], forwarded
                    await ws.send_str(json.dumps({"colibriClass": "ClientHello"}))
                    await receive(ws, "ServerHello")
                    # A layout the bridge stores for the allocator; a bad one is refused, the socket stays.
                    await ws.send_str('{"colibriClass": "ReceiverVideoConstraints", "lastN": "x"}')
                    await ws.send_str(json.dumps({"colibriClass": "ClientHello"}))
                    await receive(ws, "ServerHello")
        finally:
            for peer in peers:
                await peer.leave()


async def test_no_colibri_ws_sends_no_web_socket(tmp_path: Path, loopback_only: None) -> None:
    async with running_serve(tmp_path, "", "--no-colibri-ws", domain=DOMAIN) as served:
        peers = [JinglePeer(served, ROOM) for _ in range(2)]
        try:
            for peer in peers:
                await peer.join()

            async def initiated() -> bool:
                return all(p.initiates for p in peers)

            await wait_until_async(initiated, within=20)
            assert all(web_sockets(p.initiates[-1]) == set() for p in peers)
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{served.url}/colibri-ws/default-id/x/{peers[0].nick}?pwd=x") as resp,
            ):
                # Not a colibri-ws refusal (those are JSON with a reason): the route does not exist.
                assert resp.status == 404
                assert resp.content_type != "application/json"
        finally:
            for peer in peers:
                await peer.leave()
