"""The web client sends VP8 simulcast, opens the bridge channel and asks for what its layout shows, against
the real `sluice serve` with headless Chromium and its fake camera (as tests/e2e/test_serve.py).

- Three pages, the third joining late: each signals three layers (SIM of 3 + FID per layer in its
  session-accept) and encodes those someone wants (SenderSourceConstraints): 180p alone while everyone
  shows a grid, 180p/360p/720p once someone puts it on stage; the late joiner is told each other
  participant's video as primary + RTX only (no SIM), accepts, and decodes everyone; the bridge channel
  (colibri-ws on the web port) opens with ServerHello, and ForwardedSources names the others'
  `<endpoint>-v0`; the dominant speaker the bridge names is outlined and put on stage (at 720p), a pin
  beats it.
- A receiver's layout drives the layer it gets: 180p in the grid, 720p within 3 s of pinning the sender on
  stage, without a freeze (needs the sender to turn its 720p encoding back on when the bridge says 720p is
  wanted, and the bridge's Allocator to turn ReceiverVideoConstraints into layers).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from signaling.jingle import Jingle, parse_jingle
from tests.helpers.call import wait_until
from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.serve import ServeProcess, running_serve
from tests.helpers.webpage import await_for, open_browser, open_pages

pytestmark = pytest.mark.e2e

ROOM = "simulcast"
#: The layers the client sends (webclient/js/conference.js SIMULCAST_LAYERS) from the fake 720p camera.
LAYER_HEIGHTS = [180, 360, 720]
GRID = {
    "colibriClass": "ReceiverVideoConstraints",
    "onStageSources": [],
    "selectedSources": [],
    "defaultConstraints": {"maxHeight": 180},
    "constraints": {},
}


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    async with running_serve(tmp_path) as served:
        yield served


async def join(
    serve: ServeProcess, tmp_path: Path, name: str, query: str = ""
) -> tuple[ChromiumBrowser, str]:
    url = f"{serve.url}/{ROOM}" + (f"?{query}" if query else "")
    browser = await asyncio.to_thread(open_browser, tmp_path, name, url)
    await await_for(browser, "pre-join", lambda s: s["view"] == "prejoin")
    await asyncio.to_thread(browser.call, "join", name)
    state = await await_for(browser, f"{name} in the room", lambda s: s["joined"])
    nick = str(state["nick"])
    assert re.fullmatch(r"[0-9a-f]{8}", nick), state
    return browser, nick


async def jingle(browser: ChromiumBrowser, direction: str, action: str) -> Jingle:
    """The last Jingle `action` the page received (`in`) or sent (`out`), parsed by signaling.jingle (waits
    up to 20 s for one)."""
    log = await await_for(
        browser,
        f"{direction} {action}",
        lambda entries: any(e["dir"] == direction and e["action"] == action for e in entries),
        "jingleLog",
        20,
    )
    xml = [e["xml"] for e in log if e["dir"] == direction and e["action"] == action]
    return parse_jingle(ET.fromstring(xml[-1]))


def assert_sends_simulcast(accept: Jingle, nick: str) -> None:
    """Its video: 3 primaries in one SIM group, each with its RTX in a FID group, one msid, `<nick>-v0`."""
    video = accept.sources().video
    groups = accept.sources().video_groups
    sims = [g for g in groups if g.semantics == "SIM"]
    fids = [g for g in groups if g.semantics == "FID"]
    assert len(sims) == 1 and len(sims[0].ssrcs) == 3, groups
    assert sorted(f.ssrcs[0] for f in fids) == sorted(sims[0].ssrcs), groups
    assert {s.ssrc for s in video} == {x for f in fids for x in f.ssrcs} and len(video) == 6, video
    assert {s.name for s in video} == {f"{nick}-v0"}
    assert len({p.value for s in video for p in s.parameters if p.name == "msid"}) == 1, video


def on_stage(nick: str) -> dict[str, Any]:
    """What the client asks with `nick` large on stage."""
    return {
        "colibriClass": "ReceiverVideoConstraints",
        "onStageSources": [f"{nick}-v0"],
        "selectedSources": [],
        "defaultConstraints": {"maxHeight": 180},
        "constraints": {f"{nick}-v0": {"maxHeight": 720}},
    }


async def tile_classes(page: ChromiumBrowser) -> dict[str, set[str]]:
    """Each tile's layout classes (dominant, on-stage, pinned) by participant id."""
    found = await asyncio.to_thread(
        page.driver.execute_script,
        "return [...document.querySelectorAll('.tile')].map((t) => [t.dataset.id, [...t.classList]])",
    )
    return {tid: set(classes) & {"dominant", "on-stage", "pinned"} for tid, classes in found}


def channel_forwarding(names: list[str]) -> Callable[[Any], bool]:
    """The page's bridge channel is open, had its ServerHello, and is told exactly `names` are forwarded."""
    return lambda c: c is not None and c["open"] and c["serverHello"] >= 1 and c["forwardedSources"] == names


async def decodes(browser: ChromiumBrowser, nicks: set[str], within: float = 30.0) -> dict[str, Any]:
    stats: dict[str, Any] = await await_for(
        browser,
        f"video from {nicks}",
        lambda s: all(s.get(n, {}).get("framesDecoded", 0) > 10 for n in nicks),
        "getStats",
        within,
    )
    return stats


async def test_three_simulcast_senders_and_a_late_joiner(serve: ServeProcess, tmp_path: Path) -> None:
    async with open_pages(tmp_path) as pages:
        nicks: dict[str, str] = {}
        for name in ("Ada", "Grace"):
            pages[name], nicks[name] = await join(serve, tmp_path, name)
        await decodes(pages["Ada"], {nicks["Grace"]})
        pages["Linus"], nicks["Linus"] = await join(serve, tmp_path, "Linus")

        # The late joiner is told the others' video without simulcast: primary + RTX, FID, no SIM.
        initiate = await jingle(pages["Linus"], "in", "session-initiate")
        assert initiate.json_sources is not None
        told = dict(initiate.json_sources)
        for name in ("Ada", "Grace"):
            sources = told[nicks[name]]
            (fid,) = sources.video_groups
            assert fid.semantics == "FID" and len(fid.ssrcs) == 2, sources
            assert {s.ssrc for s in sources.video} == set(fid.ssrcs)
            assert {s.name for s in sources.video} == {f"{nicks[name]}-v0"}
        # ... which it accepted: the focus logs the session-accept with its 6 video SSRCs and 1 audio.
        # (The page applied the initiate before it sent its accept: wait for the focus's line.)
        accepted = f"focus: {nicks['Linus']} accepted"
        await wait_until(
            lambda: any(accepted in line and "7 SSRCs" in line for line in serve.output),
            within=15,
            describe=lambda: accepted,
        )

        # Everyone decodes everyone, and keeps decoding.
        first = {}
        for name, page in pages.items():
            first[name] = await decodes(page, {n for o, n in nicks.items() if o != name})
        await asyncio.sleep(1.5)
        for name, page in pages.items():
            later = await page.acall("getStats")
            for other, n in nicks.items():
                if other != name:
                    assert later[n]["framesDecoded"] > first[name][n]["framesDecoded"], (name, other, later)

        # Every sender signals three layers, on the SSRCs its encodings use, also after the renegotiation
        # Linus's arrival caused in Ada's and Grace's pages. Everyone shows a grid (180p), so the bridge tells
        # each sender that 180p is the most anyone wants of it, and only its lowest encoding is on.
        for name, page in pages.items():
            accept = await jingle(page, "out", "session-accept")
            assert_sends_simulcast(accept, nicks[name])
            sent = await await_for(
                page,
                f"{name} encodes its 180p layer only",
                lambda layers: (
                    [x["active"] for x in layers] == [True, False, False]
                    and layers[0]["frameHeight"] == 180
                    and layers[0]["framesEncoded"] > 0
                ),
                "sentVideo",
            )
            (sim,) = (g for g in accept.sources().video_groups if g.semantics == "SIM")
            assert [x["ssrc"] for x in sent] == list(sim.ssrcs), (sent, sim)
            # With three temporal layers (7.5, 15, 30 fps), as the bridge needs to send a poor link the
            # smallest layer at a quarter of its frame rate (the stats tell it of encodings in use only).
            assert sent[0]["scalabilityMode"] == "L1T3", sent
            if name != "Linus":
                assert (await page.acall("state"))["counters"]["renegotiations"] >= 1

        # The bridge parses those temporal layers: what each grid tile is sent is the 180p layer's top one.
        ((meeting, _),) = (await serve.endpoints()).items()
        recorded = (await serve.debug_json(f"/debug/conferences/{meeting}/allocation"))["receivers"]
        layers = [s["layer"] for r in recorded.values() for s in r[-1]["sources"] if s["layer"]]
        assert len(layers) == 6 and all((la["height"], la["temporal"]) == (180, 2) for la in layers), recorded

        # The bridge channel opened on the web port: ServerHello, ForwardedSources naming the others'
        # video sources, and the grid's constraints sent.
        for name, page in pages.items():
            others = sorted(f"{n}-v0" for o, n in nicks.items() if o != name)
            channel = await await_for(page, f"{name}'s bridge channel", channel_forwarding(others), "channel")
            assert channel["url"].startswith(f"ws://{serve.web}/colibri-ws/default-id/"), channel
            assert channel["url"].split("?")[0].endswith(f"/{nicks[name]}"), channel
            assert channel["sent"]["ClientHello"] == 1 and channel["reconnects"] == [], channel
            assert channel["constraintsSent"] == GRID, channel

        # The bridge names the dominant speaker (the fake microphone only beeps, so one page at a time sends
        # a steady tone, the others muted): the speaker's tile is outlined; the stage shows the speaker at
        # 720p, follows a new one, and a pin beats it; each layout change goes to the bridge.
        ada, grace, linus = (nicks[n] for n in ("Ada", "Grace", "Linus"))
        page = pages["Ada"]
        for each in pages.values():
            assert await each.acall("toggleAudio") is True

        async def speaks(nick: str) -> None:
            await await_for(page, f"{nick} dominant", lambda layout: layout["dominant"] == nick, "layout", 10)

        async def sent() -> Any:
            return (await page.acall("channel"))["constraintsSent"]

        await pages["Grace"].acall("tone", True)
        await speaks(grace)
        assert await tile_classes(page) == {ada: set(), grace: {"dominant"}, linus: set()}
        assert await sent() == GRID
        await page.acall("toggleLayout")
        assert (await page.acall("layout"))["stage"] == grace
        assert await sent() == on_stage(grace)
        assert await tile_classes(page) == {ada: set(), grace: {"dominant", "on-stage"}, linus: set()}
        await pages["Grace"].acall("tone", False)
        await pages["Linus"].acall("tone", True)
        await speaks(linus)
        assert await sent() == on_stage(linus)
        # Linus, whom Ada wants at 720p, turns on all three layers (the fake camera gives 720p); his
        # top layer waits on his own send-side estimate (its figures are in the message if it times out).
        await await_for(
            pages["Linus"],
            "Linus encodes three layers",
            lambda layers: (
                [x["frameHeight"] for x in layers] == LAYER_HEIGHTS
                and all(x["active"] and x["framesEncoded"] > 0 for x in layers)
            ),
            "sentVideo",
            15,
        )
        await await_for(page, "Linus at 720p", lambda s: s[linus]["frameHeight"] == 720, "getStats", 10)
        # Grace still shows a grid: the bridge sends her Linus's 180p layer only, so what she receives of
        # him is a fraction of what Ada, who shows him on stage, receives.
        await egress_is_one_layer(pages["Grace"], page, linus)
        await page.acall("clickTile", grace)
        assert await sent() == on_stage(grace)
        assert await tile_classes(page) == {ada: set(), grace: {"on-stage", "pinned"}, linus: {"dominant"}}
        await page.acall("toggleLayout")
        assert (await page.acall("layout"))["pinned"] is None
        assert await sent() == GRID


async def egress_is_one_layer(viewer: ChromiumBrowser, stage: ChromiumBrowser, nick: str) -> None:
    """Over 3 s, `viewer` (showing `nick` at 180p) receives a fraction of what `stage` (showing it at 720p)
    receives of `nick`: the bridge sends it the 180p layer, not all three. (Against the sender's own
    per-layer bytesSent this cannot be checked: Chromium counts more there than it sends the bridge.)"""

    async def received() -> tuple[int, int]:
        small, large = (await viewer.acall("getStats"))[nick], (await stage.acall("getStats"))[nick]
        assert small["frameHeight"] <= 180 and large["frameHeight"] == 720, (small, large)
        return int(small["videoBytesReceived"]), int(large["videoBytesReceived"])

    before = await received()
    await asyncio.sleep(3.0)
    after = await received()
    small_bps, large_bps = ((a - b) * 8 / 3.0 for a, b in zip(after, before, strict=True))
    # 180p is about a sixth of 720p's bitrate (Chromium's targets: 150 of 1,500 + 500 + 150 kbit/s).
    assert 0 < small_bps < 0.3 * large_bps, {"180p viewer bit/s": small_bps, "720p viewer bit/s": large_bps}


async def sample(page: ChromiumBrowser, owner: str, ms: int, click_at: int | None = None) -> dict[str, Any]:
    """{clickedAt, samples}: `owner`'s video every 50 ms, its tile clicked at `click_at`."""
    result: dict[str, Any] = await page.acall("sampleVideo", owner, ms, 50, click_at)
    return result


def longest_stall(samples: list[dict[str, float]]) -> float:
    """The longest time (ms) between two samples that saw framesDecoded rise (from the first such)."""
    rises = [b["t"] for a, b in itertools.pairwise(samples) if b["framesDecoded"] > a["framesDecoded"]]
    return max((b - a for a, b in itertools.pairwise(rises)), default=float("inf"))


async def test_the_layout_picks_the_layer_180p_in_the_grid_720p_on_stage(
    serve: ServeProcess, tmp_path: Path
) -> None:
    async with open_pages(tmp_path) as pages:
        pages["Ada"], ada = await join(serve, tmp_path, "Ada")
        pages["Grace"], _grace = await join(serve, tmp_path, "Grace")
        grace = pages["Grace"]
        await decodes(grace, {ada})
        await await_for(
            pages["Ada"],
            "Ada encodes 180p",
            lambda layers: (
                bool(layers) and layers[0]["frameHeight"] == 180 and layers[0]["framesEncoded"] > 0
            ),
            "sentVideo",
        )

        # The grid asks for 180p: Grace gets Ada's lowest layer.
        channel = await await_for(
            grace, "grid constraints sent", lambda c: bool(c) and c["constraintsSent"] == GRID, "channel"
        )
        assert channel["open"], channel
        await await_for(
            grace, "Ada at 180p in the grid", lambda s: 0 < s[ada]["frameHeight"] <= 180, "getStats", 10
        )

        # Then Grace clicks Ada's tile: Ada on stage, at 720p within 3 s, frames never stopping for 500 ms,
        # no burst of loss across the switch.
        run = await sample(grace, ada, 6000, click_at=1500)
        clicked, samples = run["clickedAt"], run["samples"]
        before = [s for s in samples if s["t"] < clicked]
        after = [s for s in samples if s["t"] >= clicked]
        assert all(0 < s["frameHeight"] <= 180 for s in before), before
        at_720 = next((s["t"] for s in after if s["frameHeight"] == 720), None)
        assert at_720 is not None and at_720 - clicked <= 3000, after
        assert all(s["frameHeight"] == 720 for s in after if s["t"] >= at_720), after
        assert longest_stall(samples) < 500, samples
        assert samples[-1]["packetsLost"] - samples[0]["packetsLost"] <= 5, (samples[0], samples[-1])
        assert samples[-1]["totalFreezesDuration"] - samples[0]["totalFreezesDuration"] < 0.5, samples[-1]

        layout = await grace.acall("layout")
        assert layout["mode"] == "stage" and layout["stage"] == ada and layout["pinned"] == ada, layout
        assert (await grace.acall("channel"))["constraintsSent"] == on_stage(ada)
