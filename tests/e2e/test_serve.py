"""`sluice serve` with three headless Chromium browsers in one room (issue 5's first "Show").

The server is the real command in a subprocess (embedded XMPP server, focus, bridge and web client in one
process); the browsers open the room's URL, type a name and click Join, as a person would. Checked: each
decodes video from the other two and receives audio; a mute shows in the others' pages; a leaver vanishes
from the others' grids and its bridge endpoint expires; the owner's room password refuses a wrong one and
admits the right one. The three-person grid is saved as test-artifacts/serve-grid.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.serve import ServeProcess, running_serve
from tests.helpers.webpage import await_for, open_browser

pytestmark = pytest.mark.e2e

ROOM = "standup"


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    async with running_serve(tmp_path) as served:
        yield served


async def join(browser: ChromiumBrowser, name: str) -> str:
    await await_for(browser, "pre-join", lambda s: s["view"] == "prejoin")
    await asyncio.to_thread(browser.call, "join", name)
    state = await await_for(browser, f"{name} in the room", lambda s: s["joined"])
    nick = state["nick"]
    assert isinstance(nick, str) and re.fullmatch(r"[0-9a-f]{8}", nick), state
    return nick


async def decoding_from(browser: ChromiumBrowser, nicks: set[str], within: float = 45.0) -> dict[str, Any]:
    """Waits until `browser` decodes video frames and receives audio samples from every one of `nicks`."""

    def ok(stats: dict[str, Any]) -> bool:
        return all(
            stats.get(n, {}).get("framesDecoded", 0) > 10
            and stats.get(n, {}).get("totalSamplesReceived", 0) > 0
            for n in nicks
        )

    stats: dict[str, Any] = await await_for(browser, f"media from {nicks}", ok, "getStats", within)
    return stats


async def test_three_browsers_in_one_room(serve: ServeProcess, tmp_path: Path, artifact_dir: Path) -> None:
    browsers: dict[str, ChromiumBrowser] = {}
    try:
        nicks: dict[str, str] = {}
        for name in ("Ada", "Grace", "Linus"):
            browsers[name] = await asyncio.to_thread(open_browser, tmp_path, name, f"{serve.url}/{ROOM}")
            nicks[name] = await join(browsers[name], name)

        # Everyone decodes video from, and receives audio of, the two others; frames keep rising.
        first: dict[str, dict[str, Any]] = {}
        for name, browser in browsers.items():
            others = {nicks[o] for o in browsers if o != name}
            first[name] = await decoding_from(browser, others)
        await asyncio.sleep(2)
        for name, browser in browsers.items():
            later = await browser.acall("getStats")
            for other in browsers:
                if other == name:
                    continue
                n = nicks[other]
                assert later[n]["framesDecoded"] > first[name][n]["framesDecoded"], (name, other, later)
            state = await browser.acall("state")
            assert state["ice"] in ("connected", "completed"), state
        # The bridge has one endpoint per participant, named by their MUC nicks.
        assert serve.endpoint_ids() == set(nicks.values())
        await asyncio.sleep(1)  # let every tile show frames before the screenshot
        await browsers["Ada"].ascreenshot(artifact_dir / "serve-grid.png")
        assert (artifact_dir / "serve-grid.png").stat().st_size > 20_000

        # Grace mutes her microphone: Ada and Linus see it.
        assert await browsers["Grace"].acall("toggleAudio") is True
        for name in ("Ada", "Linus"):
            await await_for(
                browsers[name],
                f"{name} sees Grace muted",
                lambda ps: by_name_of(ps)["Grace"]["audioMuted"],
                "participants",
            )

        # Linus leaves: he disappears from the others' grids and his endpoint expires on the bridge.
        await browsers["Linus"].acall("leave")
        for name in ("Ada", "Grace"):
            await await_for(
                browsers[name],
                f"{name} no longer sees Linus",
                lambda ps: "Linus" not in by_name_of(ps),
                "participants",
            )
            gone = browsers[name].driver.execute_script(
                "return [...document.querySelectorAll('.tile')].map((t) => t.textContent).join('|')"
            )
            assert "Linus" not in gone, gone
        deadline = time.monotonic() + 20
        while nicks["Linus"] in serve.endpoint_ids():
            assert time.monotonic() < deadline, "Linus's endpoint did not expire on the bridge"
            await asyncio.sleep(0.3)
        # The two who stayed still get media from each other.
        still = await browsers["Ada"].acall("getStats")
        await asyncio.sleep(1.5)
        again = await browsers["Ada"].acall("getStats")
        assert again[nicks["Grace"]]["framesDecoded"] > still[nicks["Grace"]]["framesDecoded"]

        # Ada (the first in, so the owner) locks the room; a newcomer is refused with a wrong password and
        # admitted with the right one.
        state = await browsers["Ada"].acall("state")
        assert state["affiliation"] == "owner", state
        await browsers["Ada"].acall("setPassword", "correct horse")
        await await_for(browsers["Ada"], "room locked", lambda s: s["locked"])
        late = browsers.pop("Linus")
        await asyncio.to_thread(late.stop)
        browsers["Margaret"] = await asyncio.to_thread(
            open_browser, tmp_path, "Margaret", f"{serve.url}/{ROOM}"
        )
        m = browsers["Margaret"]
        await await_for(m, "pre-join", lambda s: s["view"] == "prejoin")
        await asyncio.to_thread(m.call, "join", "Margaret")
        await await_for(m, "password prompt", lambda s: s["prompt"] == "password")
        await asyncio.to_thread(m.call, "submitPassword", "wrong")
        await asyncio.sleep(1.5)
        refused = await m.acall("state")
        assert not refused["joined"] and refused["prompt"] == "password", refused
        assert "Margaret" not in by_name_of(browsers["Ada"].call("participants"))
        await asyncio.to_thread(m.call, "submitPassword", "correct horse")
        await await_for(m, "Margaret admitted", lambda s: s["joined"])
        await await_for(
            browsers["Ada"], "Ada sees Margaret", lambda ps: "Margaret" in by_name_of(ps), "participants"
        )
        await decoding_from(m, {nicks["Ada"], nicks["Grace"]})
    finally:
        for name, browser in browsers.items():
            with contextlib.suppress(Exception):
                browser.save_console_log(tmp_path / f"{name}-console.log")
            await asyncio.to_thread(browser.stop)
        if os.environ.get("SLUICE_KEEP_LOGS"):
            print("".join(serve.output))


def by_name_of(participants: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in participants}
