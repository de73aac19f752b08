"""The web client in headless Chromium: the screens render without console errors (screenshots kept under
test-artifacts/web-*.png), and the XMPP side of a call works against a real Prosody over WebSocket:
anonymous login, the conference request, MUC join with name and mute flags seen by the others, the owner's
room password through the owner config form, the password prompt, leaving.

The focus is ours (signaling.focus, in this process) logged in to Prosody; no bridge is in its brewery, so
this call has no media (tests/e2e/test_serve.py and test_prosody_call.py have it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from signaling.focus import Focus, FocusConfig
from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.prosody import DOMAIN, Prosody
from tests.helpers.webpage import (
    WebServer,
    await_for,
    client_config,
    console_errors,
    open_browser,
    wait_for,
)

pytestmark = pytest.mark.e2e

FOCUS_NS = "http://jitsi.org/protocol/focus"


def shot(browser: ChromiumBrowser, artifact_dir: Path, name: str) -> Path:
    time.sleep(0.4)  # let CSS transitions and the first video frames settle
    path = browser.screenshot(artifact_dir / f"web-{name}.png")
    assert path.stat().st_size > 5000
    return path


def assert_no_console_errors(browser: ChromiumBrowser, allowed: tuple[str, ...] = ()) -> None:
    entries = browser.driver.get_log("browser")  # type: ignore[no-untyped-call]
    errors = [e for e in console_errors(entries) if not any(a in e for a in allowed)]
    assert errors == [], errors


# ------------------------------------------------------------------------------------ static screens


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebServer]:
    with WebServer() as server:
        yield server
        assert server.missing == [], f"the page asked for missing files: {server.missing}"


def test_landing_and_prejoin_screens(web: WebServer, tmp_path: Path, artifact_dir: Path) -> None:
    browser = open_browser(tmp_path, "solo", web.url + "/")
    try:
        d = browser.driver
        assert browser.call("view") == "landing"
        suggestion = d.execute_script("return document.getElementById('room-name').value")
        assert isinstance(suggestion, str) and len(suggestion) > 3
        shot(browser, artifact_dir, "landing")
        # Typing a name with spaces and capitals goes to its normalised room URL.
        d.execute_script("const i = document.getElementById('room-name'); i.value = 'Team Sync 42';")
        d.execute_script("document.getElementById('join-room').click()")
        deadline = time.monotonic() + 10
        while not d.current_url.endswith("/team-sync-42"):
            assert time.monotonic() < deadline, d.current_url
            time.sleep(0.05)
        browser.wait_ready()
        wait_for(browser, "pre-join", lambda s: s["view"] == "prejoin")
        # Camera preview is live (fake device) before joining.
        deadline = time.monotonic() + 10
        while not d.execute_script(
            "const v = document.querySelector('.preview video'); return v && v.videoWidth > 0"
        ):
            assert time.monotonic() < deadline, "preview video never played"
            time.sleep(0.1)
        d.execute_script(
            "const i = document.getElementById('display-name'); i.value = 'Ada Lovelace';"
            "i.dispatchEvent(new Event('input'))"
        )
        shot(browser, artifact_dir, "prejoin")
        # Camera off in the pre-join shows the avatar instead of the preview.
        d.execute_script("document.getElementById('pre-cam').click()")
        assert d.execute_script("return document.querySelector('.preview').classList.contains('video-off')")
        shot(browser, artifact_dir, "prejoin-camera-off")
        # Back on the landing page, a name with nothing usable in it is refused with a message.
        d.get(web.url + "/")
        browser.wait_ready()
        d.execute_script(
            "document.getElementById('room-name').value = '!!!';document.getElementById('join-room').click()"
        )
        assert browser.call("view") == "landing"
        hint = d.execute_script(
            "const h = document.querySelector('.hint'); return [h.className, h.textContent]"
        )
        assert "error" in hint[0] and "room name" in hint[1]
        assert_no_console_errors(browser)
    finally:
        browser.stop()


# ---------------------------------------------------------------- Prosody over WebSocket, no focus


@pytest.fixture
async def prosody_web(tmp_path: Path) -> AsyncIterator[WebServer]:
    """Prosody (Jitsi's layout, mod_websocket), our focus logged in to it, and the web client proxying XMPP
    to it."""
    prosody = Prosody.create(tmp_path / "prosody", websocket=True)
    await asyncio.to_thread(prosody.start)
    focus = Focus(
        FocusConfig(xmpp_port=prosody.c2s_port, domain=DOMAIN, password=prosody.focus_password, use_tls=False)
    )
    try:
        await focus.start()
        await focus.wait_ready(timeout=15)
        with WebServer(client_config("/xmpp-websocket"), websocket_upstream=prosody.websocket_url) as server:
            yield server
    finally:
        await focus.stop()
        await asyncio.to_thread(prosody.stop)


def participants(browser: ChromiumBrowser) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in browser.call("participants")}


async def test_room_presence_mute_password_and_leave_over_prosody(
    prosody_web: WebServer, tmp_path: Path, artifact_dir: Path
) -> None:
    web = prosody_web
    room = "design-review"
    alice = await asyncio.to_thread(open_browser, tmp_path, "alice", f"{web.url}/{room}")
    bob: ChromiumBrowser | None = None
    try:
        await alice.acall("join", "Alice Liddell")
        a_state = await await_for(alice, "alice joined", lambda s: s["joined"])
        assert a_state["xmpp"] == "connected" and a_state["view"] == "call"
        assert len(a_state["nick"]) == 8 and int(a_state["nick"], 16) >= 0
        # The focus grants owner to the first participant.
        await await_for(alice, "alice owner", lambda s: s["affiliation"] == "owner")
        await asyncio.to_thread(shot, alice, artifact_dir, "call-alone")

        bob = await asyncio.to_thread(open_browser, tmp_path, "bob", f"{web.url}/{room}")
        await bob.acall("join", "Bob")
        await await_for(bob, "bob joined", lambda s: s["joined"])
        await await_for(alice, "alice sees bob", lambda ps: "Bob" in {p["name"] for p in ps}, "participants")
        seen_by_bob = await await_for(bob, "bob sees alice", lambda ps: len(ps) == 2, "participants")
        assert {(p["name"], p["local"]) for p in seen_by_bob} == {("Alice Liddell", False), ("Bob", True)}
        assert all(not p["audioMuted"] and not p["videoMuted"] for p in seen_by_bob)

        # Mute flags travel in presence and show in the other page (state and the tile's icon).
        assert await bob.acall("toggleAudio") is True
        assert await bob.acall("toggleVideo") is True
        bob_seen = await await_for(
            alice,
            "bob muted",
            lambda ps: any(p["name"] == "Bob" and p["audioMuted"] and p["videoMuted"] for p in ps),
            "participants",
        )
        bob_id = next(p["id"] for p in bob_seen if p["name"] == "Bob")
        tile_muted = alice.driver.execute_script(
            "const t = document.querySelector(`.tile[data-id='${arguments[0]}']`);"
            "return t && [t.dataset.audioMuted, t.querySelector('.tile-mic').hidden,"
            " t.classList.contains('no-video')]",
            bob_id,
        )
        assert tile_muted == ["true", False, True]
        alice.driver.execute_script("document.getElementById('toggle-people').click()")
        await asyncio.to_thread(shot, alice, artifact_dir, "call-two-participants")
        assert await bob.acall("toggleAudio") is False
        await await_for(
            alice,
            "bob unmuted",
            lambda ps: any(p["name"] == "Bob" and not p["audioMuted"] for p in ps),
            "participants",
        )

        # Non-owners cannot set a password; the owner can, through the owner config form.
        lock_hidden = bob.driver.execute_script("return document.getElementById('room-password').hidden")
        assert lock_hidden is True
        await alice.acall("setPassword", "s3cret")
        assert (await alice.acall("state"))["locked"] is True

        # Bob leaves: he disappears from Alice's grid and list.
        await bob.acall("leave")
        await await_for(bob, "bob's end screen", lambda s: s["view"] == "ended")
        await await_for(
            alice, "bob gone", lambda ps: [p["name"] for p in ps] == ["Alice Liddell"], "participants"
        )
        assert alice.driver.execute_script("return document.querySelectorAll('.tile').length") == 1
        await asyncio.to_thread(shot, bob, artifact_dir, "left")

        # Bob comes back: the room now wants a password; a wrong one is refused, the right one admits him.
        await asyncio.to_thread(bob.driver.get, f"{web.url}/{room}")
        await asyncio.to_thread(bob.wait_ready)
        await bob.acall("join", "Bob")
        await await_for(bob, "password prompt", lambda s: s["prompt"] == "password")
        await asyncio.to_thread(shot, bob, artifact_dir, "password-prompt")
        await bob.acall("submitPassword", "wrong")
        await asyncio.sleep(0.3)
        await await_for(bob, "prompt again", lambda s: s["prompt"] == "password" and not s["joined"])
        error = bob.driver.execute_script("return document.querySelector('.dialog .hint.error').textContent")
        assert "Wrong password" in error
        await asyncio.to_thread(shot, bob, artifact_dir, "password-wrong")
        await bob.acall("submitPassword", "s3cret")
        await await_for(bob, "bob admitted", lambda s: s["joined"])
        await await_for(alice, "bob back", lambda ps: "Bob" in {p["name"] for p in ps}, "participants")
        b_state = await bob.acall("state")
        assert b_state["locked"] is True  # read from the room's disco#info
        await asyncio.to_thread(shot, bob, artifact_dir, "call-locked")

        # The owner clears the password.
        await alice.acall("setPassword", "")
        assert (await alice.acall("state"))["locked"] is False

        assert_no_console_errors(alice)
        assert_no_console_errors(bob)
    finally:
        for name, b in (("alice", alice), ("bob", bob)):
            if b is not None:
                with contextlib.suppress(Exception):
                    b.save_console_log(tmp_path / f"{name}-console.log")
                await asyncio.to_thread(b.stop)
    assert web.missing == []
