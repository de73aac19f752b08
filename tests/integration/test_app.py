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
