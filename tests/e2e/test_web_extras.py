"""The web client's chat, raised hands, screen sharing, device switching, connection quality, settings and
phone layout, in headless Chromium on the real `sluice serve` (issue 16). Screenshots of each new screen go
to test-artifacts/web-extras-*.png.

- Chat between three pages: a room message with markup and a link arrives as text (the markup never
  becomes elements; the link is an <a> to an http(s) URL), a private message reaches only its addressee,
  a message over the limit is refused with a clear error and sent to nobody, the unread badge counts.
- Raised hands (presence, `<jitsi_participant_raisedHand>` with the time raised) are seen by the others in
  the order they were raised; the moderator lowers one (a non-moderator's request is refused and counted).
  Reactions reach the others' tiles. Keyboard shortcuts m, h and c.
- A page shares its screen (Chromium's fake capture through getDisplayMedia): a second video source,
  `<nick>-v1`, desktop; the other page puts it on stage by itself and decodes it at a greater height than
  the camera tiles; stopping returns that page to the grid.
- Switching camera mid-call (two fake cameras, `device-count=2`): the other page keeps decoding new frames
  and no new Jingle session is made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.serve import ServeProcess, running_serve
from tests.helpers.webpage import await_for, console_errors, open_browser, open_pages

pytestmark = pytest.mark.e2e

#: Two fake cameras (Chromium's fake capture makes one unless told).
TWO_CAMERAS = ("--use-fake-device-for-media-stream=device-count=2",)


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    async with running_serve(tmp_path) as served:
        yield served


async def join(
    serve: ServeProcess, tmp_path: Path, room: str, name: str, flags: tuple[str, ...] = ()
) -> tuple[ChromiumBrowser, str]:
    browser = await asyncio.to_thread(open_browser, tmp_path, name, f"{serve.url}/{room}", flags)
    await await_for(browser, "pre-join", lambda s: s["view"] == "prejoin")
    await browser.acall("join", name)
    state = await await_for(browser, f"{name} in the room", lambda s: s["joined"])
    return browser, str(state["nick"])


async def shot(browser: ChromiumBrowser, artifact_dir: Path, name: str) -> None:
    await asyncio.sleep(0.5)  # CSS transitions and a few video frames
    path = await asyncio.to_thread(browser.screenshot, artifact_dir / f"web-extras-{name}.png")
    assert path.stat().st_size > 5000


def no_console_errors(browser: ChromiumBrowser) -> None:
    entries = browser.driver.get_log("browser")  # type: ignore[no-untyped-call]
    assert console_errors(entries) == []


async def test_chat_private_messages_limits_and_raised_hands(
    serve: ServeProcess, tmp_path: Path, artifact_dir: Path
) -> None:
    async with open_pages(tmp_path) as p:
        nick: dict[str, str] = {}
        for name in ("Ada", "Grace", "Linus"):
            p[name], nick[name] = await join(serve, tmp_path, "chat-room", name)
        for name in p:
            await await_for(p[name], f"{name} sees 3", lambda ps: len(ps) == 3, "participants")

        # A room message with markup and a link: shown as the very text, the link the only element.
        text = 'hello <b>all</b> <img src=x onerror="window.pwned=1"> see https://example.test/a?b=1&c=2.'
        assert await p["Ada"].acall("typeChat", text) == ""
        for name in ("Grace", "Linus"):
            chat = await await_for(p[name], f"{name} gets it", lambda c: len(c["messages"]) == 1, "chat")
            (msg,) = chat["messages"]
            assert msg == {
                "from": nick["Ada"],
                "name": "Ada",
                "text": text,
                "private": False,
                "mine": False,
                "to": None,
            }
            (shown,) = chat["rendered"]
            assert shown["text"] == text
            assert shown["elements"] == ["a"] and shown["links"] == ["https://example.test/a?b=1&c=2"]
            assert chat["badge"] == "1" and not chat["open"]
            assert p[name].driver.execute_script("return window.pwned === undefined") is True
        # The room echoes it to its sender, who sees it as their own.
        ada_chat = await await_for(p["Ada"], "echo", lambda c: len(c["messages"]) == 1, "chat")
        assert ada_chat["messages"][0]["mine"] is True and ada_chat["open"]

        # A private message reaches its addressee only.
        assert await p["Grace"].acall("typeChat", "just for you, Linus", nick["Linus"]) == ""
        linus = await await_for(p["Linus"], "private", lambda c: len(c["messages"]) == 2, "chat")
        assert linus["messages"][1] == {
            "from": nick["Grace"], "name": "Grace", "text": "just for you, Linus", "private": True,
            "mine": False, "to": None,
        }  # fmt: skip
        grace = await p["Grace"].acall("chat")
        assert grace["messages"][1]["private"] and grace["messages"][1]["to"] == nick["Linus"]

        # Over the limit: a clear error, nothing sent. Empty: refused too.
        error = await p["Ada"].acall("typeChat", "x" * 4001)
        assert "too long" in error and "4001" in error and "4000" in error
        assert "Type a message" in await p["Ada"].acall("sendChat", "   ")
        await p["Ada"].acall("typeChat", "last one")
        for name in ("Grace", "Linus"):
            chat = await await_for(p[name], "last", lambda c: c["messages"][-1]["text"] == "last one", "chat")
            assert all(len(m["text"]) <= 4000 for m in chat["messages"])
        ada = await p["Ada"].acall("chat")
        assert [m["text"] for m in ada["messages"]] == [text, "last one"]  # not Grace's private one
        await shot(p["Linus"], artifact_dir, "chat-closed-unread")
        await p["Linus"].acall("key", "c")  # opens the chat, read
        linus = await await_for(p["Linus"], "read", lambda c: c["open"] and c["badge"] is None, "chat")
        await shot(p["Linus"], artifact_dir, "chat-open")

        # Hands: Linus, then Ada (keyboard h); Grace sees them in that order, on tiles and in the list.
        await p["Linus"].acall("key", "h")
        await await_for(p["Grace"], "Linus's hand", lambda h: h["queue"] == [nick["Linus"]], "hands")
        await asyncio.sleep(0.05)
        await p["Ada"].acall("key", "h")
        hands = await await_for(
            p["Grace"], "two hands", lambda h: h["queue"] == [nick["Linus"], nick["Ada"]], "hands"
        )
        assert hands["list"] == ["Linus", "Ada"] and hands["mine"] is None
        badges = p["Grace"].driver.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('.tile')]"
            ".map((t) => [t.dataset.id, t.dataset.hand]))"
        )
        assert badges[nick["Linus"]] == "1" and badges[nick["Ada"]] == "2" and badges[nick["Grace"]] == ""
        await asyncio.to_thread(
            p["Grace"].driver.execute_script, "document.getElementById('toggle-people').click()"
        )
        await shot(p["Grace"], artifact_dir, "raised-hands")
        # Only a moderator lowers someone else's hand (Jitsi Meet's "lower-hand-message" through the bridge).
        assert (await p["Ada"].acall("state"))["role"] == "moderator"
        assert (await p["Grace"].acall("state"))["role"] != "moderator"
        assert await p["Grace"].acall("forceLowerHand", nick["Ada"]) is True
        await await_for(p["Ada"], "refused", lambda s: s["counters"]["lowerHandRefused"] == 1)
        assert (await p["Ada"].acall("hands"))["mine"] is not None
        await asyncio.to_thread(
            p["Ada"].driver.execute_script, "document.getElementById('toggle-people').click()"
        )
        await shot(p["Ada"], artifact_dir, "raised-hands-moderator")
        assert await p["Ada"].acall("lowerHandOf", nick["Linus"]) is True
        await await_for(p["Grace"], "Linus lowered", lambda h: h["queue"] == [nick["Ada"]], "hands")
        linus_hands = await await_for(
            p["Linus"], "Linus's own", lambda h: h["queue"] == [nick["Ada"]], "hands"
        )
        assert linus_hands["mine"] is None
        assert (await p["Linus"].acall("state"))["counters"]["handsLowered"] == 1
        await p["Ada"].acall("key", "h")  # and her own, herself
        await await_for(p["Grace"], "no hands", lambda h: h["queue"] == [], "hands")

        # A reaction goes through the bridge to the others' tile of its sender.
        await p["Ada"].acall("react", "clap")
        burst = (
            "const t = document.querySelector(`.tile[data-id='${arguments[0]}'] .reaction-burst`);"
            "return t ? t.textContent : null"
        )
        for name in ("Grace", "Linus"):
            deadline = time.monotonic() + 10
            while p[name].driver.execute_script(burst, nick["Ada"]) != "👏":
                assert time.monotonic() < deadline, f"{name} saw no reaction"
                await asyncio.sleep(0.1)

        # m mutes the microphone; typing m in the chat box does not.
        await p["Grace"].acall("key", "m")
        await await_for(
            p["Ada"], "Grace muted",
            lambda ps: any(x["id"] == nick["Grace"] and x["audioMuted"] for x in ps), "participants",
        )  # fmt: skip
        for name in p:
            no_console_errors(p[name])


def camera_frames(stats: dict[str, Any], nick: str) -> int:
    return int(stats.get(nick, {}).get("framesDecoded", 0))


async def decoding(browser: ChromiumBrowser, owner: str, more: int = 15, within: float = 20) -> None:
    """Waits until `browser` decodes `more` new frames of `owner`'s camera."""
    before = camera_frames(await browser.acall("getStats"), owner)
    await await_for(
        browser, f"frames of {owner}", lambda s: camera_frames(s, owner) > before + more, "getStats", within
    )


async def stalled(browser: ChromiumBrowser, owner: str, seconds: float = 2) -> None:
    """No frame of `owner` decoded for `seconds`, after 1 s to let a change land."""
    await asyncio.sleep(1)
    before = camera_frames(await browser.acall("getStats"), owner)
    await asyncio.sleep(seconds)
    assert camera_frames(await browser.acall("getStats"), owner) == before, f"{owner} still decoded"


async def test_screen_share_on_stage_camera_switch_quality_settings_phone(
    serve: ServeProcess, tmp_path: Path, artifact_dir: Path
) -> None:
    async with open_pages(tmp_path) as p:
        # The pre-join screen's settings: devices with a preview, before joining.
        p["Ada"] = await asyncio.to_thread(
            open_browser, tmp_path, "Ada-pre", f"{serve.url}/share-room", TWO_CAMERAS
        )
        await await_for(p["Ada"], "pre-join", lambda s: s["view"] == "prejoin")
        p["Ada"].driver.execute_script("document.getElementById('pre-settings').click()")
        cameras = "return document.getElementById('settings-camera')?.options.length ?? 0"
        deadline = time.monotonic() + 10
        while p["Ada"].driver.execute_script(cameras) != 2:
            assert time.monotonic() < deadline, "the pre-join settings list no two cameras"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the preview
        await shot(p["Ada"], artifact_dir, "prejoin-settings")
        p["Ada"].driver.execute_script("document.getElementById('settings-cancel').click()")
        await asyncio.to_thread(p.pop("Ada").stop)
        p["Ada"], ada = await join(serve, tmp_path, "share-room", "Ada", TWO_CAMERAS)
        p["Grace"], _ = await join(serve, tmp_path, "share-room", "Grace", TWO_CAMERAS)
        await await_for(p["Grace"], "Ada's camera", lambda s: camera_frames(s, ada) > 10, "getStats")
        assert (await p["Grace"].acall("layout"))["mode"] == "grid"

        # Ada shares her screen: Grace's page goes to stage with it, asks for 1080p, decodes it taller than
        # the camera tiles.
        await p["Ada"].acall("shareScreen")
        screen = f"{ada}-v1"
        mine = await p["Ada"].acall("screen")
        assert mine["source"] and mine["track"]["height"] == 1080
        seen = await await_for(
            p["Grace"],
            "screen entry",
            lambda ps: any(x["id"] == screen and x["screen"] for x in ps),
            "participants",
        )
        assert next(x for x in seen if x["id"] == screen)["owner"] == ada
        layout = await await_for(p["Grace"], "stage", lambda lay: lay.get("stage") == screen, "layout")
        assert layout["mode"] == "stage"
        assert layout["constraints"]["onStageSources"] == [screen]
        assert layout["constraints"]["constraints"] == {screen: {"maxHeight": 1080}}
        stats = await await_for(
            p["Grace"], "screen decoded above camera size",
            lambda s: s.get(screen, {}).get("framesDecoded", 0) > 5
            and s[screen]["frameHeight"] > s.get(ada, {}).get("frameHeight", 0) > 0,
            "getStats", 40,
        )  # fmt: skip
        print(
            "screen",
            stats[screen]["frameWidth"],
            "x",
            stats[screen]["frameHeight"],
            "camera",
            stats[ada]["frameHeight"],
        )
        assert stats[screen]["frameHeight"] >= 720
        # The bridge was told the source is a desktop (SourceVideoTypeMessage) and Ada's session-accept
        # stays the only session: the screen came as source-add.
        sent = (await p["Ada"].acall("channel"))["sent"]
        assert sent.get("SourceVideoTypeMessage") == 1
        log = await p["Ada"].acall("jingleLog")
        adds = [e["xml"] for e in log if e["dir"] == "out" and e["action"] == "source-add"]
        assert len(adds) == 1 and 'videoType="desktop"' in adds[0] and f'name="{screen}"' in adds[0]
        # The bridge tells Ada what the most anyone wants of her screen is (Grace's stage: 1080p).
        told = await await_for(p["Ada"], "screen constraints", lambda x: x["maxHeight"] is not None, "screen")
        assert told["maxHeight"] == 1080, told
        await shot(p["Grace"], artifact_dir, "screenshare-stage")

        # Stopping (the browser's own control ends the track): Grace's page is back to the grid.
        await p["Ada"].acall("endScreenTrack")
        await await_for(
            p["Grace"], "screen gone", lambda ps: all(not x["screen"] for x in ps), "participants"
        )
        layout = await await_for(p["Grace"], "grid again", lambda lay: lay["mode"] == "grid", "layout")
        assert layout["constraints"]["onStageSources"] == []
        assert await p["Ada"].acall("screen") is None
        # The Share button starts a share again, and stops it.
        button = "document.getElementById('share-screen').click()"
        await asyncio.to_thread(p["Ada"].driver.execute_script, button)
        await await_for(p["Grace"], "shared again", lambda ps: any(x["screen"] for x in ps), "participants")
        await await_for(
            p["Ada"], "on its session", lambda x: x is not None and x["source"] is not None, "screen"
        )
        await asyncio.to_thread(p["Ada"].driver.execute_script, button)
        await await_for(p["Grace"], "stopped", lambda ps: not any(x["screen"] for x in ps), "participants")
        await await_for(p["Grace"], "grid once more", lambda lay: lay["mode"] == "grid", "layout")
        # Switching camera mid-call, through replaceTrack. Chromium gives two fake cameras here, but after
        # replaceTrack onto fake_device_1 its encoder takes no more frames (seen, cause not found), so the
        # switch is to a new track of the same fake camera with other constraints (640 wide).
        devices = await p["Ada"].acall("devices")
        assert len(devices["cameras"]) == 2, devices
        before = await p["Ada"].acall("camera")
        sessions = (await p["Ada"].acall("state"))["counters"]["sessions"]
        grace_sessions = (await p["Grace"].acall("state"))["counters"]["sessions"]
        frames_before = camera_frames(await p["Grace"].acall("getStats"), ada)
        await p["Ada"].acall("switchCamera", None, 640)
        after = await p["Ada"].acall("camera")
        assert after["id"] != before["id"] and after["width"] == 640 and before["width"] == 1280
        await await_for(
            p["Grace"],
            "frames after the switch",
            lambda s: camera_frames(s, ada) > frames_before + 30,
            "getStats",
        )
        assert (await p["Ada"].acall("state"))["counters"]["sessions"] == sessions
        assert (await p["Grace"].acall("state"))["counters"]["sessions"] == grace_sessions
        assert (await p["Ada"].acall("state"))["counters"]["trackSwitches"] == 1

        # Connection quality: Grace's indicator for Ada is measured; its popover shows the figures.
        quality = await await_for(
            p["Grace"], "quality measured",
            lambda q: q["remote"].get(ada, {}).get("level", "unknown") != "unknown", "quality",
        )  # fmt: skip
        assert quality["remote"][ada]["bitrateKbps"] > 0
        await p["Grace"].acall("openQuality", ada)
        pop = await p["Grace"].acall("popover")
        assert pop["for"] == ada and "Receiving" in pop["text"] and "kbps" in pop["text"]
        await shot(p["Grace"], artifact_dir, "quality-popover")
        # What Ada reports of her own uplink reaches Grace through the bridge (EndpointStats).
        await await_for(
            p["Grace"], "Ada's report", lambda q: q["remote"][ada].get("reported") is not None, "quality", 30
        )
        await p["Grace"].acall("key", "Escape")

        # Settings: devices and display name.
        await p["Ada"].acall("openSettings")
        await asyncio.sleep(1)
        options = p["Ada"].driver.execute_script(
            "return ['camera', 'microphone', 'speaker']"
            ".map((k) => document.getElementById(`settings-${k}`).options.length)"
        )
        assert options[0] == 2 and options[1] >= 1, options
        await shot(p["Ada"], artifact_dir, "settings")
        p["Ada"].driver.execute_script("document.getElementById('settings-cancel').click()")

        # Phone width.
        await asyncio.to_thread(p["Grace"].driver.set_window_size, 390, 844)
        await shot(p["Grace"], artifact_dir, "phone")
        width = p["Grace"].driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, width
        for name in p:
            no_console_errors(p[name])
