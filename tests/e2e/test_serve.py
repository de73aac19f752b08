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
import json
import os
import re
import signal
import socket
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.jicofo import start_sluice
from tests.helpers.prosody import free_tcp_port
from tests.helpers.webpage import await_for, open_browser

pytestmark = pytest.mark.e2e

ROOM = "standup"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Serve:
    process: asyncio.subprocess.Process
    url: str
    private_api: str
    output: list[str]

    def endpoint_ids(self) -> set[str]:
        """Every endpoint the bridge hosts now (its private API's conference listing)."""
        with urllib.request.urlopen(f"{self.private_api}/colibri/v2/conferences", timeout=5) as resp:
            body = json.loads(resp.read())
        return {ep["id"] for conf in body["conferences"] for ep in conf["endpoints"]}


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    private = free_tcp_port()
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'[videobridge.ice.udp]\nport = {free_udp_port()}\nbind-addresses = ["127.0.0.1"]\n'
        f'[videobridge.http-servers.private]\nhost = "127.0.0.1"\nport = {private}\n'
    )
    proc = await start_sluice(
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--xmpp-port",
        "0",
    )
    assert proc.stdout is not None
    output: list[str] = []
    url = None
    try:
        async with asyncio.timeout(30):
            while url is None:
                line = (await proc.stdout.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("sluice serve exited:\n" + "".join(output))
                output.append(line)
                if m := re.search(r"open (http://\S+)", line):
                    url = m.group(1).rstrip("/")

        async def drain() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                output.append(line.decode(errors="replace"))

        pump = asyncio.create_task(drain())
        yield Serve(proc, url, f"http://127.0.0.1:{private}", output)
        pump.cancel()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        (tmp_path / "serve.log").write_text("".join(output))


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


async def test_three_browsers_in_one_room(serve: Serve, tmp_path: Path, artifact_dir: Path) -> None:
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
