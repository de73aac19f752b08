"""A call with one receiver behind an impaired link: `sluice serve` and the senders' Chromium pages in one
network namespace (`srv`), the receiver's page in another (`rcv`), the two joined through the impairment
relay (tests/helpers/netns.py, bench/impair.py). Used by tests/e2e/test_impaired.py and `sluice bench`'s
impairment scenarios (bench/qoe_run.py).

```
 srv namespace                                      rcv namespace
 sluice serve (web, XMPP-over-WebSocket, bridge)     receiver Chromium + chromedriver
 sender Chromiums + chromedrivers     ── vK ── relay (mid namespace) ── vK ──
      ▲ lo                                                 ▲ lo
      └─ TcpForwarder (test process) ─ chromedriver, private API ─┘
```

The receiver's namespace has one interface besides `lo`, through the relay, and one route: everything its
page does (the page load, XMPP over WebSocket, the bridge channel, ICE, DTLS, media both ways) crosses the
relay, as on a real access link where signalling shares the bottleneck. Only the test's control traffic
(Selenium to chromedriver) reaches it another way: over the namespace's loopback through a `TcpForwarder`,
never over an interface. Direction `a-to-b` of the relay is the receiver's downlink (bridge → receiver),
`b-to-a` its uplink.

The senders reach the bridge inside `srv` (its address is local there), unimpaired. Pages load
`http://<srv address>:<port>/`, which Chromium is told to treat as a secure origin (getUserMedia).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.qoe import QoeSampler
from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.netns import Link, Netlab, Netns
from tests.helpers.serve import ServeProcess, running_serve
from tests.helpers.webpage import WINDOW, await_for

ROOM = "impaired"
#: trust-bwe on: the receiver's transport-cc estimate is what the Allocator sizes its video by. Lines in
#: SLUICE_TEST_CC are added to that section (a measuring aid: `trace-dir = "/tmp/t"`, `pacing = false`).
TRUST_BWE = "[videobridge.cc]\ntrust-bwe = true\n" + os.environ.get("SLUICE_TEST_CC", "")


@dataclass
class Page:
    name: str
    browser: ChromiumBrowser
    nick: str
    netns: Netns


@dataclass
class ImpairedCall:
    tmp: Path
    server_ns: Netns
    receiver_ns: Netns
    link: Link
    serve: ServeProcess
    pages: dict[str, Page] = field(default_factory=dict)

    def _open(self, name: str, ns: Netns) -> ChromiumBrowser:
        browser = ChromiumBrowser.start(
            self.tmp / f"{name}-profile",
            f"{self.serve.url}/{ROOM}",
            netns=ns,
            secure_origins=(self.serve.url,),
        )
        browser.driver.set_window_size(*WINDOW)
        return browser

    async def join(self, name: str, *, receiver: bool = False, within: float = 30.0) -> Page:
        """A page named `name` joins the room: behind the relay when `receiver`, else beside the server."""
        ns = self.receiver_ns if receiver else self.server_ns
        browser = await asyncio.to_thread(self._open, name, ns)
        page = Page(name, browser, "", ns)
        self.pages[name] = page
        await await_for(browser, "pre-join", lambda s: s["view"] == "prejoin", within=within)
        await asyncio.to_thread(browser.call, "join", name)
        state = await await_for(browser, f"{name} in the room", lambda s: s["joined"], within=within)
        page.nick = str(state["nick"])
        if not re.fullmatch(r"[0-9a-f]{8}", page.nick):
            raise AssertionError(f"unexpected nick: {state}")
        return page

    async def close_pages(self) -> None:
        for name, page in list(self.pages.items()):
            with contextlib.suppress(Exception):
                page.browser.save_console_log(self.tmp / f"{name}-console.log")
            await asyncio.to_thread(page.browser.stop)
        self.pages.clear()

    async def _debug_view(self, view: str, key: str) -> dict[str, Any]:
        """`key` of the private API's `/debug/conferences/<meeting>/<view>` for the room's one conference; {}
        before it exists."""
        meetings = await self.serve.endpoints()
        if not meetings:
            return {}
        (meeting,) = meetings
        found: dict[str, Any] = (await self.serve.debug_json(f"/debug/conferences/{meeting}/{view}"))[key]
        return found

    async def allocation(self) -> dict[str, Any]:
        """The bridge's per-receiver view (`bandwidth`) of the room's one conference: {endpoint id: {...}}."""
        return await self._debug_view("bandwidth", "endpoints")

    async def decisions(self) -> dict[str, Any]:
        """The Allocator's flight recorder (`allocation`: each receiver's recent decisions with their inputs
        and layers) of the room's one conference."""
        return await self._debug_view("allocation", "receivers")


@contextlib.asynccontextmanager
async def impaired_call(
    netlab: Netlab,
    tmp: Path,
    impair: Mapping[str, Any],
    settings: str = TRUST_BWE,
) -> AsyncIterator[ImpairedCall]:
    """The namespaces, the relay with `impair` (bench/impair.py's configuration), `sluice serve` with
    `settings`; every page opened by `join` is stopped (by PID) at the end, then the server, then the
    Netlab's owner removes the namespaces."""
    server_ns, receiver_ns = netlab.namespace("srv"), netlab.namespace("rcv")
    link = netlab.link(server_ns, receiver_ns, impair)
    async with running_serve(tmp, settings, netns=server_ns, host=link.a_addr) as serve:
        call = ImpairedCall(tmp, server_ns, receiver_ns, link, serve)
        try:
            yield call
        finally:
            await call.close_pages()


@dataclass
class Stage:
    """A receiver behind the relay with one sender on its stage (the others in its grid)."""

    receiver: Page
    on_stage: Page
    senders: list[Page]


async def stage(call: ImpairedCall, senders: int = 3, *, within: float = 40.0) -> Stage:
    """`senders` pages join beside the server, then the receiver behind the relay; once the receiver decodes
    the first sender, it clicks that sender's tile (pinned on stage: 720p wanted)."""
    pages = [await call.join(f"S{i + 1}") for i in range(senders)]
    receiver = await call.join("R", receiver=True)
    first = pages[0]
    await await_for(
        receiver.browser,
        f"the receiver decodes {first.name}",
        lambda s: s.get(first.nick, {}).get("framesDecoded", 0) > 0,
        "getStats",
        within,
    )
    await asyncio.to_thread(receiver.browser.call, "clickTile", first.nick)
    return Stage(receiver, first, pages)


def sampler(call: ImpairedCall, staged: Stage, every_s: float = 0.2) -> QoeSampler:
    """A QoE sampler (bench/qoe.py) of the receiver, the sender on its stage, the bridge and the relay."""
    return QoeSampler(
        page=lambda: staged.receiver.browser.acall("getStats"),
        bridge=call.allocation,
        link=call.link.stats,
        remote=staged.on_stage.nick,
        receiver=staged.receiver.nick,
        source=f"{staged.on_stage.nick}-v0",
        every_s=every_s,
    )
