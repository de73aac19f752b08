"""The embedded XMPP server's access control on loopback with real clients: the users file (refused when
others can read it, re-read while running: slixmpp logs in with SCRAM-SHA-1 and -256 and PLAIN to an account
added after start, and no longer to one removed), and tokens on the WebSocket URL (RFC 7395 by hand)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from signaling.xmpp import XmppServer, XmppServerConfig
from signaling.xmpp.token import TokenConfig
from signaling.xmpp.users import UserStore, UserStoreError
from tests.helpers.tokens import APP_ID, SECRET, claims, hs256
from tests.helpers.xmppd import FRAMING, SASL, RawWebSocket, SlixClient, serve_xmpp

DOMAIN = "meet.sluice"
ACCOUNTS = {f"focus@auth.{DOMAIN}": "focus-secret"}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[XmppServer, str]]:
    store = UserStore(tmp_path / "users.json")
    store.add("early", "early-secret")
    config = XmppServerConfig(
        domain=DOMAIN,
        accounts=ACCOUNTS,
        tcp_port=0,
        users_file=str(store.path),
        token=TokenConfig(app_id=APP_ID, secret=SECRET),
        allow_anonymous=False,
    )
    async for xmppd in serve_xmpp(config):
        yield xmppd.server, xmppd.ws_url


async def login(server: XmppServer, user: str, password: str, mechanism: str | None = None) -> bool:
    client = SlixClient(f"{user}@auth.{DOMAIN}", password, mechanism=mechanism)
    try:
        await client.connect(server.tcp_port)
    except ConnectionError:
        client.xmpp.abort()
        return False
    await client.disconnect()
    return True


async def test_users_file_is_reread_while_running(served: tuple[XmppServer, str], tmp_path: Path) -> None:
    server, _ = served
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"):
        assert await login(server, "early", "early-secret", mech), mech
    assert not await login(server, "early", "wrong")
    # `sluice user add` while the server runs: the next login after the file changed sees it.
    admin = UserStore(tmp_path / "users.json")
    admin.load()
    admin.add("late", "late-secret")
    await asyncio.sleep(1.1)  # the file is looked at most once a second
    assert await login(server, "late", "late-secret", "SCRAM-SHA-256")
    admin.remove("early")
    await asyncio.sleep(1.1)
    assert not await login(server, "early", "early-secret")
    stats = server.stats()
    assert stats["users_file_reloads"] == 2 and stats["user_logins"] == 4
    by_mechanism = [stats[f"user_logins_{m}"] for m in ("scram_sha_256", "scram_sha_1", "plain")]
    assert by_mechanism == [2, 1, 1]


async def test_a_users_file_others_can_read_stops_the_server_at_start(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add("someone", "secret")
    os.chmod(store.path, 0o644)
    server = XmppServer(XmppServerConfig(domain=DOMAIN, tcp_port=0, users_file=str(store.path)))
    with pytest.raises(UserStoreError, match="readable by others"):
        await server.start()
    await server.stop()


async def sasl_over_websocket(url: str) -> tuple[str, str]:
    """Opens an RFC 7395 stream at `url` and tries SASL ANONYMOUS: (the answer's name, its text)."""
    ws = await RawWebSocket.connect(url)
    try:
        await ws.send(f'<open xmlns="{FRAMING}" to="{DOMAIN}" version="1.0"/>')
        await ws.recv_until(lambda e: e.tag.endswith("features"))
        await ws.send(f'<auth xmlns="{SASL}" mechanism="ANONYMOUS"/>')
        answer = await ws.recv()
        return answer.tag.rpartition("}")[2], answer.findtext(f"{{{SASL}}}text") or ""
    finally:
        await ws.close()


async def test_tokens_on_the_websocket_url(served: tuple[XmppServer, str]) -> None:
    server, url = served
    assert await sasl_over_websocket(url) == ("failure", "missing: a token is required")
    expired = hs256(claims(exp=int(time.time()) - 600))
    name, text = await sasl_over_websocket(f"{url}?token={expired}")
    assert (name, text.split(":")[0]) == ("failure", "expired")
    assert (await sasl_over_websocket(f"{url}?token={hs256(claims())}"))[0] == "success"
    # An oversized query never reaches the core: aiohttp refuses the request line (8 KiB).
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientResponseError):
            async with http.ws_connect(f"{url}?token={'x' * 9000}", protocols=("xmpp",)):
                pass
    stats = server.stats()
    assert (stats["token_refused_missing"], stats["token_refused_expired"], stats["token_logins"]) == (
        1,
        1,
        1,
    )
