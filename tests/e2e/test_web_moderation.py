"""The lobby and moderator powers with real browsers on `sluice serve` (issue 15's lobby and moderation "Show"
items).

- Lobby: the first comer (the focus makes it owner) turns the lobby on from its page; a newcomer waits on the
  lobby screen with its name, the moderator's page lists the knock; Admit → the newcomer joins and decodes
  the moderator's video; a second newcomer is rejected → its page says so and the bridge never had an
  endpoint for it. The server's counters show the knocks, the admission and the rejection.
- Moderation: a non-moderator's mute, kick, lobby and end-meeting attempts are refused and counted (the
  focus's and the XMPP server's counters); the moderator's "Mute all" reaches both others, whose pages show
  that a moderator muted them, and the bridge counts media dropped by force-mute; the moderator's menu (in the
  participant list) removes one participant, whom the others see leave; "End" ends the meeting for the last.
  The moderator also stops everyone's video (the participant list) and makes another participant moderator.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.serve import ServeProcess, running_serve
from tests.helpers.webpage import await_for, joining, open_pages

pytestmark = pytest.mark.e2e


def event(metrics: dict[str, float], component: str, name: str) -> float:
    return metrics.get(f'sluice_{component}_events_total{{event="{name}"}}', 0.0)


def force_muted_drops(metrics: dict[str, float]) -> float:
    return metrics.get('sluice_packets_dropped_total{reason="force_muted"}', 0.0)


async def call(browser: ChromiumBrowser, fn: str, *args: Any) -> Any:
    return await asyncio.to_thread(browser.call, fn, *args)


async def host_and_ann(
    tmp_path: Path, serve: ServeProcess, room: str, browsers: dict[str, ChromiumBrowser]
) -> tuple[ChromiumBrowser, ChromiumBrowser]:
    """The room's first page (Hana Host, its moderator) and a second (Ann), kept in `browsers`."""
    browsers["host"] = host = await joining(tmp_path, serve.url, "host", "Hana Host", room)
    await await_for(host, "host is moderator", lambda s: s["joined"] and s["moderator"])
    browsers["ann"] = ann = await joining(tmp_path, serve.url, "ann", "Ann", room)
    return host, ann


AUDIO_IN = "audioPacketsReceived"


async def heard(browser: ChromiumBrowser, nick: str) -> int:
    """Audio packets `browser` has received from `nick` (its page's inbound-rtp stats)."""
    stats = await call(browser, "getStats")
    return int(stats.get(nick, {}).get(AUDIO_IN, 0))


def decoding(nick: str) -> Any:
    return lambda stats: stats.get(nick, {}).get("framesDecoded", 0) > 10


async def test_lobby_knock_admit_and_reject(tmp_path: Path, artifact_dir: Path) -> None:
    room = "waiting-room"
    async with running_serve(tmp_path) as serve, open_pages(tmp_path) as browsers:
        host = await joining(tmp_path, serve.url, "host", "Hana Host", room)
        browsers["host"] = host
        hosted = await await_for(host, "host is moderator", lambda s: s["joined"] and s["moderator"])
        await call(host, "clickLobbyToggle")
        await await_for(host, "lobby on", lambda lobby: lobby["on"], "lobby")

        ann = await joining(tmp_path, serve.url, "ann", "Ann Newcomer", room)
        browsers["ann"] = ann
        waiting = await await_for(ann, "Ann waits in the lobby", lambda s: s["view"] == "lobby")
        assert not waiting["joined"]
        shown = await asyncio.to_thread(
            ann.driver.execute_script, "return document.getElementById('lobby-name').textContent"
        )
        assert shown == "Ann Newcomer"
        await ann.ascreenshot(artifact_dir / "lobby-waiting.png")
        ann_nick = waiting["nick"]
        lobby = await await_for(host, "the knock on the host's page", lambda lb: lb["knockers"], "lobby")
        assert lobby["knockers"] == [{"nick": ann_nick, "name": "Ann Newcomer"}], lobby
        await host.ascreenshot(artifact_dir / "lobby-knock-moderator.png")
        assert ann_nick not in await asyncio.to_thread(serve.endpoint_ids)

        await call(host, "clickAdmit", ann_nick)
        await await_for(ann, "Ann admitted", lambda s: s["view"] == "call" and s["joined"])
        await await_for(ann, "Ann decodes the host's video", decoding(hosted["nick"]), "getStats", 40)
        await await_for(host, "no more knocks", lambda lb: not lb["knockers"], "lobby")

        bob = await joining(tmp_path, serve.url, "bob", "Bob Stranger", room)
        browsers["bob"] = bob
        bob_nick = (await await_for(bob, "Bob waits", lambda s: s["view"] == "lobby"))["nick"]
        await await_for(
            host, "Bob's knock", lambda lb: [k["nick"] for k in lb["knockers"]] == [bob_nick], "lobby"
        )
        await call(host, "clickReject", bob_nick)
        await await_for(bob, "Bob turned away", lambda s: s["view"] == "ended")
        told = await call(bob, "endedReason")
        assert "did not let you in" in told, told
        await bob.ascreenshot(artifact_dir / "lobby-rejected.png")
        endpoints = await asyncio.to_thread(serve.endpoint_ids)
        assert ann_nick in endpoints and bob_nick not in endpoints, endpoints
        metrics = await serve.metrics()
        for name, count in (("lobby_enabled", 1), ("lobby_knocks", 2), ("lobby_admitted", 1),
                            ("lobby_rejected", 1)):  # fmt: skip
            assert event(metrics, "xmpp", name) == count, name


async def test_moderator_mutes_everyone_removes_one_and_ends_the_meeting(
    tmp_path: Path, artifact_dir: Path
) -> None:
    room = "moderated"
    async with running_serve(tmp_path) as serve, open_pages(tmp_path) as browsers:
        host, ann = await host_and_ann(tmp_path, serve, room, browsers)
        browsers["bob"] = bob = await joining(tmp_path, serve.url, "bob", "Bob", room)
        nicks = {}
        for who, b in browsers.items():
            state = await await_for(b, f"{who}: media", lambda s: s["ice"] in ("connected", "completed"))
            nicks[who] = state["nick"]
        await await_for(
            host, "host sees both", lambda ps: len([p for p in ps if not p["local"]]) == 2, "participants"
        )

        # A non-moderator's attempts: refused by the focus (mute) and the MUC (kick, lobby, end), counted.
        before = await serve.metrics()
        for action, args in (("muteParticipant", (nicks["bob"], "audio")), ("kick", (nicks["host"],)),
                             ("setLobby", (True,)), ("endMeeting", ())):  # fmt: skip
            answer = await call(ann, "moderate", action, *args)
            assert answer != "ok" and ("not-allowed" in answer or "forbidden" in answer), (action, answer)
        after = await serve.metrics()
        assert event(after, "focus", "mute_not_allowed") - event(before, "focus", "mute_not_allowed") == 1
        refused = event(after, "xmpp", "muc_moderation_refused") - event(
            before, "xmpp", "muc_moderation_refused"
        )
        assert refused == 3
        assert (await call(ann, "state"))["counters"]["moderationRefused"] == 4
        assert not (await call(bob, "state"))["audioMuted"]
        assert len(await call(host, "participants")) == 3

        # The moderator's menu on a tile; a screenshot of it, then "Mute all" from the toolbar.
        items = await call(host, "openMenu", nicks["ann"], "tile")
        assert items == ["menu-mute", "menu-stop-video", "menu-grant", "menu-kick"], items
        await host.ascreenshot(artifact_dir / "moderation-menu.png")
        drops_before = force_muted_drops(await serve.metrics())
        await call(host, "clickMuteAll")
        for who in ("ann", "bob"):
            muted = await await_for(browsers[who], f"{who} muted", lambda s: s["mutedByModerator"]["audio"])
            assert muted["audioMuted"], muted
        await ann.ascreenshot(artifact_dir / "moderation-muted-by-moderator.png")
        await await_for(
            host,
            "host sees both muted",
            lambda ps: all(p["audioMuted"] for p in ps if not p["local"]),
            "participants",
        )
        deadline = asyncio.get_running_loop().time() + 15
        while force_muted_drops(await serve.metrics()) <= drops_before:
            assert asyncio.get_running_loop().time() < deadline, "the bridge dropped no force-muted media"
            await asyncio.sleep(0.5)
        assert event(await serve.metrics(), "focus", "mutes") >= 2
        # Everyone's camera too, from the participant list.
        await call(host, "clickStopAllVideo")
        for who in ("ann", "bob"):
            await await_for(
                browsers[who],
                f"{who}'s camera off",
                lambda s: s["videoMuted"] and s["mutedByModerator"]["video"],
            )
        # Make Ann a moderator (her tile's menu): her page and the MUC say so.
        await call(host, "openMenu", nicks["ann"], "tile")
        await call(host, "clickMenu", "menu-grant")
        await await_for(ann, "Ann is a moderator", lambda s: s["moderator"] and s["affiliation"] == "owner")

        # The participant list's menu removes Bob: his page says so, Ann sees him leave, the bridge too.
        await asyncio.to_thread(
            host.driver.execute_script, "document.getElementById('toggle-people').click()"
        )
        items = await call(host, "openMenu", nicks["bob"], "list")
        assert "menu-kick" in items, items
        await host.ascreenshot(artifact_dir / "moderation-list-menu.png")
        await call(host, "clickMenu", "menu-kick")
        await await_for(bob, "Bob removed", lambda s: s["view"] == "ended")
        assert "removed you" in await call(bob, "endedReason")
        await await_for(
            ann,
            "Ann sees Bob leave",
            lambda ps: nicks["bob"] not in [p["id"] for p in ps],
            "participants",
        )
        await await_for(
            host, "Bob off the bridge", lambda _s: nicks["bob"] not in serve.endpoint_ids(), "state"
        )

        # End the meeting for everyone: Ann's page ends, the bridge's conference goes.
        await call(host, "clickEndMeeting")
        await await_for(ann, "Ann's meeting ended", lambda s: s["view"] == "ended")
        assert "ended the meeting" in await call(ann, "endedReason")
        await ann.ascreenshot(artifact_dir / "moderation-meeting-ended.png")
        await await_for(host, "no conference on the bridge", lambda _s: not serve.endpoint_ids(), "state")
        assert event(await serve.metrics(), "focus", "rooms_ended_destroyed") == 1


async def test_moderated_meeting_keeps_everyone_muted_until_a_moderator_allows(
    tmp_path: Path, artifact_dir: Path
) -> None:
    room = "moderated-meeting"
    async with running_serve(tmp_path) as serve, open_pages(tmp_path) as browsers:
        host, ann = await host_and_ann(tmp_path, serve, room, browsers)
        ann_state = await await_for(ann, "Ann's media", lambda s: s["ice"] in ("connected", "completed"))
        ann_nick = ann_state["nick"]
        assert not ann_state["audioMuted"]

        await call(host, "clickAvModeration")
        muted = await await_for(ann, "Ann muted by moderation", lambda s: s["mutedByModerator"]["audio"])
        assert muted["audioMuted"] and muted["avModeration"]["audio"] and not muted["avAllowed"]["audio"]
        # A newcomer starts muted ("everyone starts muted").
        browsers["bob"] = bob = await joining(tmp_path, serve.url, "bob", "Bob", room)
        bob_state = await await_for(bob, "Bob starts muted", lambda s: s["joined"] and s["audioMuted"])
        assert bob_state["avModeration"]["audio"], bob_state
        # Ann's page will not unmute; a client that unmutes anyway is muted again by the focus, and the
        # bridge keeps dropping its audio.
        await call(ann, "clickMic")
        state = await call(ann, "state")
        assert state["audioMuted"] and "moderator must allow" in state["banner"], state
        await ann.ascreenshot(artifact_dir / "moderation-moderated-meeting.png")
        before = await serve.metrics()
        assert await call(ann, "toggleAudio") is False  # unmuted locally, against the moderation
        await await_for(ann, "Ann muted again by the focus", lambda s: s["audioMuted"])
        after = await serve.metrics()
        refused = event(after, "focus", "unmute_refused_av_moderation")
        assert refused - event(before, "focus", "unmute_refused_av_moderation") == 1
        drops = force_muted_drops(after)
        deadline = asyncio.get_running_loop().time() + 15
        while force_muted_drops(await serve.metrics()) <= drops:
            assert asyncio.get_running_loop().time() < deadline, "Ann's audio is no longer dropped"
            await asyncio.sleep(0.5)

        # Nothing of Ann's audio reaches the host while she is held.
        held = await heard(host, ann_nick)
        await asyncio.sleep(1.5)
        assert await heard(host, ann_nick) == held

        # The moderator allows Ann (its menu); her page lets her unmute, the focus lifts the force-mute.
        items = await call(host, "openMenu", ann_nick, "tile")
        assert "menu-allow" in items, items
        await call(host, "clickMenu", "menu-allow")
        await await_for(ann, "Ann allowed", lambda s: s["avAllowed"]["audio"])
        await call(ann, "clickMic")
        await await_for(ann, "Ann unmuted", lambda s: not s["audioMuted"])
        await await_for(
            host,
            "host sees Ann unmuted",
            lambda ps: any(p["id"] == ann_nick and not p["audioMuted"] for p in ps),
            "participants",
        )
        await await_for(
            host,
            "the host hears Ann",
            lambda stats: stats.get(ann_nick, {}).get(AUDIO_IN, 0) > held,
            "getStats",
        )
        metrics = await serve.metrics()
        assert event(metrics, "focus", "av_moderation_allowed") == 2  # audio and video
        # Bob, not allowed, is still held.
        assert (await call(bob, "state"))["audioMuted"]
