"""BridgeApp serves the private HTTP API next to the media port, with stats ticked without XMPP."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bridge.app import BridgeApp
from bridge.settings import parse_settings

pytestmark = pytest.mark.integration

TOML = """
[videobridge.ice.udp]
port = 0
bind-addresses = ["127.0.0.1"]

[videobridge.stats]
interval = "200ms"

[videobridge.http-servers.private]
host = "127.0.0.1"
port = 0
"""


async def test_private_http_api_is_served_by_the_app() -> None:
    async with BridgeApp(parse_settings(TOML, environ={})) as app:
        assert app.http_port is not None and app.http_port > 0
        base = f"http://127.0.0.1:{app.http_port}"
        app.bridge.create_conference(meeting_id="m1").create_endpoint("a")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/about/health") as r:
                assert r.status == 200
            await asyncio.sleep(0.5)  # a few sampler ticks
            async with http.get(f"{base}/colibri/stats") as r:
                stats = await r.json()
            assert stats["conferences"] == 1 and stats["endpoints"] == 1, stats
            async with http.post(f"{base}/colibri/shutdown", json={"graceful-shutdown": True}) as r:
                assert r.status == 200
            assert app.state.graceful_shutdown
    assert app.http_port is None


async def test_private_api_guard_follows_the_settings() -> None:
    """allowed-hosts replaces the loopback default, the concrete bind host stays allowed, the token counts."""
    token = "s3cr3t-t0ken-0123456789"
    toml = TOML + f'allowed-hosts = ["jvb1.internal"]\ntoken = "{token}"\n'
    async with BridgeApp(parse_settings(toml, environ={})) as app:
        base = f"http://127.0.0.1:{app.http_port}"
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            for host, given, status in (
                (None, auth, 200),  # 127.0.0.1:<port>, the bind host
                (f"jvb1.internal:{app.http_port}", auth, 200),
                (f"localhost:{app.http_port}", auth, 421),  # not listed any more
                (None, {}, 401),
            ):
                headers = given | ({"Host": host} if host else {})
                async with http.get(f"{base}/about/health", headers=headers) as r:
                    assert r.status == status, (host, headers.keys(), await r.text())
            async with http.post(f"{base}/colibri/drain/enable", data="{}", headers=auth) as r:
                assert r.status == 415, "aiohttp's default text/plain"
            assert not app.state.drain
            assert dict(app.state.private_http_refused) == {
                "misdirected_host": 1,
                "unauthorized": 1,
                "unsupported_content_type": 1,
            }
