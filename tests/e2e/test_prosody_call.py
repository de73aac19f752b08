"""The same call with Prosody as the XMPP server and two bridges in its brewery (issue 5's second "Show").

Real components throughout: Prosody (Jitsi's layout, mod_websocket for the browsers), `sluice focus` and two
`sluice bridge` processes, the web client in headless Chromium, and one aiortc participant
(tests/helpers/jingle_peer.py) so that the second room has two members without a fourth browser.

Room "one" (two browsers) goes to one bridge; its media shows as that bridge's stress in brewery presence,
so room "two" (a browser and the aiortc peer) goes to the other bridge. Stopping that bridge moves room
"two" to the surviving one, and the browser decodes the peer's video again. The focus's own /metrics
(`sluice focus --metrics-port`) counts the selections and the failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers.bridges import BridgeProcess, start_bridge, start_focus
from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.jingle_peer import JinglePeer
from tests.helpers.prosody import Prosody, free_tcp_port
from tests.helpers.serve import scrape
from tests.helpers.webpage import WebServer, client_config, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("loopback_ice")]


def hosted(bridge: BridgeProcess) -> set[str]:
    """Every endpoint id the bridge hosts now."""
    url = f"http://127.0.0.1:{bridge.http_port}/colibri/v2/conferences"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    return {ep["id"] for conf in body["conferences"] for ep in conf["endpoints"]}


def stress(bridge: BridgeProcess) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{bridge.http_port}/colibri/stats", timeout=5) as resp:
        return float(json.loads(resp.read())["stress_level"])


async def until(what: str, check: Callable[[], bool], within: float = 40.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)


def frames(browser: ChromiumBrowser, nick: str) -> int:
    stats = browser.call("getStats")
    return int(stats.get(nick, {}).get("framesDecoded", 0))


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def test_two_rooms_spread_over_two_bridges_and_move_when_one_stops(
    tmp_path: Path, stack: AsyncExitStack
) -> None:
    prosody = Prosody.create(tmp_path / "prosody", websocket=True)
    await asyncio.to_thread(prosody.start)
    stack.callback(prosody.stop)
    a = await start_bridge(prosody, tmp_path, "jvb-a")
    stack.push_async_callback(a.stop)
    b = await start_bridge(prosody, tmp_path, "jvb-b")
    stack.push_async_callback(b.stop)
    focus_metrics, metrics_token = free_tcp_port(), secrets.token_urlsafe(16)
    await start_focus(prosody, tmp_path, stack, metrics_port=focus_metrics, metrics_token=metrics_token)
    web = stack.enter_context(
        WebServer(client_config("/xmpp-websocket"), websocket_upstream=prosody.websocket_url)
    )

    browsers: dict[str, ChromiumBrowser] = {}

    def close_browsers() -> None:
        for name, browser in browsers.items():
            with contextlib.suppress(Exception):
                browser.save_console_log(tmp_path / f"{name}-console.log")
            browser.stop()

    stack.callback(close_browsers)

    async def join(name: str, room: str) -> str:
        browser = await asyncio.to_thread(
            ChromiumBrowser.start, tmp_path / f"{name}-profile", f"{web.url}/{room}"
        )
        browsers[name] = browser
        await asyncio.to_thread(wait_for, browser, "pre-join", lambda s: s["view"] == "prejoin")
        await asyncio.to_thread(browser.call, "join", name)
        state = await asyncio.to_thread(wait_for, browser, f"{name} joined", lambda s: s["joined"])
        return str(state["nick"])

    # Room one: two browsers, media both ways.
    ada, grace = await join("Ada", "one"), await join("Grace", "one")
    await asyncio.to_thread(
        wait_for, browsers["Ada"], "Ada decodes Grace", lambda s: frames_of(s, grace) > 10, "getStats"
    )
    await asyncio.to_thread(
        wait_for, browsers["Grace"], "Grace decodes Ada", lambda s: frames_of(s, ada) > 10, "getStats"
    )
    busy, idle = (a, b) if {ada, grace} <= hosted(a) else (b, a)
    assert {ada, grace} <= hosted(busy) and not hosted(idle) & {ada, grace}
    # Its packets show as the busy bridge's stress (presence carries the same figure as /colibri/stats).
    await until("stress on the busy bridge", lambda: stress(busy) > stress(idle) + 0.1)
    placed_at = {busy.nick: stress(busy), idle.nick: stress(idle)}

    # Room two goes to the idle bridge: a browser and an aiortc participant.
    linus = await join("Linus", "two")
    peer = JinglePeer(prosody, "two")
    stack.push_async_callback(peer.leave)
    await peer.join()
    await asyncio.to_thread(
        wait_for,
        browsers["Linus"],
        "Linus decodes the peer",
        lambda s: frames_of(s, peer.nick) > 10,
        "getStats",
    )
    await until("the peer decodes Linus", lambda: peer.frames_from(linus) > 10)
    assert {linus, peer.nick} <= hosted(idle), f"room two went to the busier bridge (stress {placed_at})"
    print(f"room one on {busy.nick}; stress when room two was placed: {placed_at}; room two on {idle.nick}")

    # Stop room two's bridge: both are re-invited on the other one and media resumes.
    before = await asyncio.to_thread(frames, browsers["Linus"], peer.nick)
    first_session = peer.peer
    stopped = time.monotonic()
    await idle.stop()
    await until("room two moved", lambda: {linus, peer.nick} <= hosted(busy), within=30)
    await asyncio.to_thread(
        wait_for,
        browsers["Linus"],
        "Linus decodes the peer again",
        lambda s: frames_of(s, peer.nick) > 10 and frames_of(s, peer.nick) != before,
        "getStats",
        40,
    )
    # A new session, counted from zero (the old count, however long it ran, says nothing of this one).
    await until(
        "the peer decodes Linus again",
        lambda: peer.peer is not first_session and peer.frames_from(linus) > 10,
    )
    print(f"room two resumed on {busy.nick} {time.monotonic() - stopped:.1f} s after {idle.nick} stopped")
    # Room one never noticed.
    assert {ada, grace} <= hosted(busy)
    later = await asyncio.to_thread(frames, browsers["Ada"], grace)
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(frames, browsers["Ada"], grace) > later

    # The focus, a process of its own, has its own /metrics (with its token): two rooms, four participants,
    # one bridge left, two bridge selections and room two's failover. The surviving bridge's /metrics has
    # the four endpoints' link figures as aggregates.
    focus_url = f"http://127.0.0.1:{focus_metrics}/metrics"
    with pytest.raises(aiohttp.ClientResponseError, match="401"):
        await scrape(focus_url)
    focus = await scrape(focus_url, {"Authorization": f"Bearer {metrics_token}"})
    assert focus["sluice_focus_rooms"] == 2 and focus["sluice_focus_participants"] == 4, focus
    assert focus["sluice_focus_bridges"] == 1
    assert focus["sluice_focus_bridge_selections_total"] >= 3  # one, two, and two again
    assert focus["sluice_focus_bridge_failovers_total"] >= 1
    assert focus['sluice_focus_jingle_total{outcome="accepted"}'] >= 6  # four, then room two's two again
    survivor = await scrape(f"http://127.0.0.1:{busy.http_port}/metrics")
    assert survivor["sluice_endpoints"] == 4
    # Each endpoint with a figure yet (over >= 2 s windows: one that just moved may have none), never more.
    assert 1 <= survivor['sluice_endpoint_bitrate_bps_bucket{direction="up",le="+Inf"}'] <= 4
    assert not any(k.startswith("sluice_focus_") for k in survivor)  # a bridge alone exports its own


def frames_of(stats: dict[str, Any], nick: str) -> int:
    return int(stats.get(nick, {}).get("framesDecoded", 0))
