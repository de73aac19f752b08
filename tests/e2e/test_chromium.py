"""Headless Chromium and two aiortc peers in one conference through the bridge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge import Bridge
from tests.helpers.call import Call, wait_until, wait_until_async
from tests.helpers.chromium import ChromiumBrowser, ChromiumPeer
from tests.helpers.peers import PeerFactory

pytestmark = pytest.mark.e2e


async def test_chromium_and_two_aiortc_peers(
    bridge: Bridge, aiortc_peers: PeerFactory, chromium: ChromiumBrowser, artifact_dir: Path
) -> None:
    call = Call(bridge.create_conference(meeting_id="chromium-aiortc"))
    alice, bob = aiortc_peers("alice"), aiortc_peers("bob")
    chrome = ChromiumPeer("chrome", chromium)

    async def chrome_counts() -> str:
        return f"chrome: {await chrome.frames_decoded()} inbound={await chrome.inbound()}"

    def aiortc_counts() -> str:
        return f"{alice.summary()}; {bob.summary()}"

    await call.join(alice)
    # Chromium joins second: its first offer carries alice, the re-offer for bob exercises renegotiation.
    await call.join(chrome, connect_within=15)
    await wait_until(lambda: alice.frames_from("chrome") > 0, within=15, describe=aiortc_counts)
    await call.join(bob)

    async def chrome_decodes_both() -> bool:
        frames = await chrome.frames_decoded()
        return frames.get("alice", 0) > 30 and frames.get("bob", 0) > 30

    await wait_until_async(chrome_decodes_both, within=20, describe=chrome_counts)
    await wait_until(
        lambda: alice.frames_from("chrome") >= 30 and bob.frames_from("chrome") >= 30,
        within=20,
        describe=aiortc_counts,
    )
    inbound = [s for s in await chrome.inbound() if s["kind"] == "video"]
    assert {(s["frameWidth"], s["frameHeight"]) for s in inbound if s["framesDecoded"]} == {(320, 240)}
    shot = await chromium.ascreenshot(artifact_dir / "chromium-conference.png")
    assert shot.stat().st_size > 1000
    (artifact_dir / "chromium-conference-stats.json").write_text(
        json.dumps({"bridge": await bridge.get_stats(), "chromium_inbound": inbound}, indent=2, default=str)
    )
