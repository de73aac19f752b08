"""The web client encodes only the simulcast layers someone wants: the bridge's SenderSourceConstraints turn
its encodings off and on, against the real `sluice serve` with headless Chromium and its fake 720p camera
(as tests/e2e/test_web_simulcast.py).

What goes on the wire is read from the sender's outbound-rtp stats (bytesSent per SIM SSRC, the SSRCs its
session-accept signalled, lowest layer first):

- Ada sends to Grace, whose grid asks 180p of everyone: only Ada's 180p encoding sends; Grace pins Ada on
  stage (720p): all three send again and Grace gets 720p; back to the grid: only 180p again.
- A SenderSourceConstraints naming another source, or malformed, changes nothing.
- Grace leaves: nobody wants Ada's video (maxHeight 0), and none of its encodings sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_web_simulcast import GRID, decodes, jingle, join, on_stage
from tests.helpers.chromium import ChromiumBrowser, PageError
from tests.helpers.serve import ServeProcess, running_serve
from tests.helpers.webpage import await_for, open_pages

pytestmark = pytest.mark.e2e

#: How long a layer's bytesSent must stand still (or grow) to count as stopped (or sending).
WINDOW = 1.0


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    async with running_serve(tmp_path) as served:
        yield served


async def bytes_sent(page: ChromiumBrowser, ssrcs: tuple[int, ...]) -> list[int]:
    """bytesSent of each of `ssrcs` (0 for one the stats do not list yet)."""
    sent: list[dict[str, Any]] = await page.acall("sentVideo")
    by_ssrc = {int(x["ssrc"]): int(x["bytesSent"]) for x in sent}
    return [by_ssrc.get(s, 0) for s in ssrcs]


async def sends_only(
    page: ChromiumBrowser, ssrcs: tuple[int, ...], want: list[bool], what: str, within: float
) -> None:
    """Waits until, over one WINDOW, exactly the layers `want` marks grew their bytesSent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    before = await bytes_sent(page, ssrcs)
    seen: list[list[bool]] = []
    while True:
        await asyncio.sleep(WINDOW)
        after = await bytes_sent(page, ssrcs)
        grew = [b > a for a, b in zip(before, after, strict=True)]
        if grew == want:
            return
        seen.append(grew)
        if loop.time() > deadline:
            try:
                sender = await page.acall("sender")
            except PageError as e:
                sender = str(e)
            raise AssertionError(f"{what}: layers sending per {WINDOW} s window {seen}; sender {sender}")
        before = after


async def test_the_sender_encodes_only_the_layers_receivers_want(serve: ServeProcess, tmp_path: Path) -> None:
    async with open_pages(tmp_path) as pages:
        pages["Ada"], ada = await join(serve, tmp_path, "Ada")
        pages["Grace"], grace = await join(serve, tmp_path, "Grace")
        sender, receiver = pages["Ada"], pages["Grace"]
        await decodes(receiver, {ada})
        (sim,) = (
            g
            for g in (await jingle(sender, "out", "session-accept")).sources().video_groups
            if g.semantics == "SIM"
        )
        ssrcs = tuple(sim.ssrcs)
        assert len(ssrcs) == 3, sim

        # Grace's grid asks 180p of Ada: the 360p and 720p encodings stop, 180p goes on, and Grace still
        # decodes Ada at 180p.
        await await_for(
            receiver, "the grid asked", lambda c: bool(c) and c["constraintsSent"] == GRID, "channel"
        )
        await sends_only(sender, ssrcs, [True, False, False], "only 180p while the grid asks 180p", within=6)
        await await_for(receiver, "Ada at 180p", lambda s: 0 < s[ada]["frameHeight"] <= 180, "getStats", 10)

        # Grace puts Ada on stage (720p): all three encodings send again, and Grace gets 720p.
        await receiver.acall("clickTile", ada)
        assert (await receiver.acall("channel"))["constraintsSent"] == on_stage(ada)
        await sends_only(sender, ssrcs, [True, True, True], "all layers once a receiver asks 720p", within=6)
        await await_for(receiver, "Ada at 720p", lambda s: s[ada]["frameHeight"] == 720, "getStats", 10)
        heights = {int(x["ssrc"]): x["frameHeight"] for x in await sender.acall("sentVideo")}
        assert [heights[s] for s in ssrcs] == [180, 360, 720], heights

        # Back to the grid: 180p only again.
        await receiver.acall("toggleLayout")
        assert (await receiver.acall("channel"))["constraintsSent"] == GRID
        await sends_only(sender, ssrcs, [True, False, False], "only 180p again in the grid", within=6)
        state = await sender.acall("sender")
        assert state["maxHeight"] == 180 and state["active"] == [True, False, False], state
        assert state["scales"] == [4, 2, 1] and state["trackSize"] == 720, state

        # Someone else's source, or a malformed message: ignored and counted; the encodings stay as they are.
        counters = (await sender.acall("state"))["counters"]
        errors = (await sender.acall("channel"))["errors"]
        for body in (
            {"sourceName": f"{grace}-v0", "maxHeight": 0},
            {"sourceName": f"{ada}-v0", "maxHeight": "720"},
            {"sourceName": f"{ada}-v0", "maxHeight": -5},
            {"sourceName": f"{ada}-v0"},
            {"sourceName": ["x"], "maxHeight": 720},
        ):
            await sender.acall("bridgeSays", json.dumps({"colibriClass": "SenderSourceConstraints", **body}))
        after = (await sender.acall("state"))["counters"]
        assert after["otherSenderConstraints"] == counters["otherSenderConstraints"] + 1, after
        assert after["senderConstraints"] == counters["senderConstraints"], after
        assert (await sender.acall("channel"))["errors"] == errors + 4
        assert (await sender.acall("sender"))["active"] == [True, False, False]
        await sends_only(
            sender, ssrcs, [True, False, False], "180p only after the ignored messages", within=3
        )

        # Grace leaves: nobody wants Ada's video, and Ada sends none.
        await receiver.acall("leave")
        await sends_only(sender, ssrcs, [False, False, False], "nothing once alone", within=6)
        state = await sender.acall("sender")
        assert state["maxHeight"] == 0 and state["active"] == [False, False, False], state
