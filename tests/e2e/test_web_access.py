"""Access control with real browsers on `sluice serve` (issue 15's token and secure-domain "Show" items).

- A token-only server: no token, a forged, an expired, a wrong-room and a wrong-audience token are each
  refused with their reason, which the page shows; the server's counters (the private /metrics) count each.
- Valid tokens (RS256, the issuer's public key in the settings): each browser joins with the name from its
  token's claims (others see that name, whatever was typed), and the `moderator` token's holder is the
  room's owner and moderator as the others' pages see it; the other token's holder is neither.
- A secure domain: a guest cannot start a meeting (the page offers the login prompt; the refusal is counted),
  a wrong password is refused at the prompt, the right one (an account made with the real `sluice user add`,
  stored as SCRAM; Chromium logs in with SCRAM) starts it, and another guest then joins it without a prompt.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.jicofo import REPO
from tests.helpers.serve import running_serve
from tests.helpers.tokens import APP_ID, SECRET, claims, hs256, rs256, rsa_key
from tests.helpers.webpage import await_for, open_browser

pytestmark = pytest.mark.e2e

TOKEN_SETTINGS = f"""
[signaling.auth]
allow-anonymous = false
[signaling.auth.token]
app-id = "{APP_ID}"
app-secret = "{SECRET}"
leeway = 10
"""


def xmpp_event(metrics: dict[str, float], name: str) -> float:
    return metrics.get(f'sluice_xmpp_events_total{{event="{name}"}}', 0.0)


async def open_room(tmp_path: Path, name: str, url: str) -> ChromiumBrowser:
    browser = await asyncio.to_thread(open_browser, tmp_path, name, url)
    await await_for(browser, "pre-join", lambda s: s["view"] == "prejoin")
    return browser


async def press_join(browser: ChromiumBrowser, typed_name: str) -> None:
    await asyncio.to_thread(browser.call, "join", typed_name)


async def test_token_only_server_refuses_each_bad_token_with_its_reason(
    tmp_path: Path, artifact_dir: Path
) -> None:
    now = int(time.time())
    cases: dict[str, str | None] = {
        "missing": None,
        "bad_signature": hs256(claims("room-a"), "forged-secret-forged-secret-forged-secret"),
        "expired": hs256(claims("room-a", exp=now - 600)),
        "wrong_room": hs256(claims("room-b")),
        "wrong_audience": hs256(claims("room-a", aud="another-app")),
    }
    async with running_serve(tmp_path, TOKEN_SETTINGS) as serve:
        browser = await open_room(tmp_path, "refused", f"{serve.url}/room-a")
        try:
            for reason, token in cases.items():
                url = f"{serve.url}/room-a" + (f"?jwt={token}" if token else "")
                await asyncio.to_thread(browser.driver.get, url)
                await asyncio.to_thread(browser.wait_ready)
                await await_for(browser, "pre-join", lambda s: s["view"] == "prejoin")
                await press_join(browser, "Mallory")
                state = await await_for(browser, f"{reason}: refused", lambda s: s["view"] == "ended")
                shown = await asyncio.to_thread(browser.call, "endedReason")
                assert reason in shown, (reason, shown, state)
                assert not state["joined"]
                if reason == "expired":
                    await browser.ascreenshot(artifact_dir / "access-token-expired.png")
            metrics = await serve.metrics()
            for reason in cases:
                assert xmpp_event(metrics, f"token_refused_{reason}") == 1, reason
            assert xmpp_event(metrics, "token_refused") == len(cases)
            # The page names its room on the WebSocket URL (?room=), so the wrong-room token is refused at
            # login already (the conference request and the join check it too: test_xmpp_access.py).
            assert xmpp_event(metrics, "token_logins") == 0
            assert xmpp_event(metrics, "anonymous_logins") == 0
            assert not await serve.conferences()
        finally:
            await asyncio.to_thread(browser.stop)


async def test_valid_tokens_give_their_name_and_moderator_rights(tmp_path: Path) -> None:
    key, pem = rsa_key()
    (tmp_path / "issuer.pem").write_text(pem)
    settings = (
        f'[signaling.auth]\nallow-anonymous = false\n[signaling.auth.token]\napp-id = "{APP_ID}"\n'
        'public-key-file = "issuer.pem"\n'
    )
    room = "board"
    # The non-moderator joins first: the focus's first-comer owner grant must not make it an owner.
    plain = rs256(claims(room, name="Bob Token", moderator=False), key)
    moderator = rs256(claims("*", name="Ada Moderator", moderator=True), key)
    async with running_serve(tmp_path, settings) as serve:
        browsers: dict[str, ChromiumBrowser] = {}
        try:
            browsers["bob"] = await open_room(tmp_path, "bob", f"{serve.url}/{room}?jwt={plain}")
            # The pre-join form shows the token's name; typing another changes nothing others see.
            await press_join(browsers["bob"], "Typed Name")
            await await_for(browsers["bob"], "Bob in the room", lambda s: s["joined"])
            browsers["ada"] = await open_room(tmp_path, "ada", f"{serve.url}/{room}?jwt={moderator}")
            await press_join(browsers["ada"], "Ada Moderator")
            ada = await await_for(browsers["ada"], "Ada in the room", lambda s: s["joined"])
            assert (ada["affiliation"], ada["role"]) == ("owner", "moderator"), ada

            def remote(name: str) -> Any:
                return lambda ps: next((p for p in ps if not p["local"] and p["name"] == name), None)

            def seen(browser: str, name: str) -> Any:
                return await_for(browsers[browser], f"{browser} sees {name}", remote(name), "participants")

            by_bob = remote("Ada Moderator")(await seen("bob", "Ada Moderator"))
            assert (by_bob["affiliation"], by_bob["role"]) == ("owner", "moderator"), by_bob
            by_ada = remote("Bob Token")(await seen("ada", "Bob Token"))
            assert (by_ada["affiliation"], by_ada["role"]) == ("member", "participant"), by_ada
            bob = await asyncio.to_thread(browsers["bob"].call, "state")
            assert (bob["affiliation"], bob["displayName"]) == ("member", "Bob Token"), bob
            names = await asyncio.to_thread(
                browsers["ada"].driver.execute_script,
                "return [...document.querySelectorAll('.tile-name')].map((t) => t.textContent)",
            )
            assert "Typed Name" not in " ".join(names) and "Bob Token" in names, names
            # The moderator's rights are the owner's: it locks the room (the MUC's owner form), Bob sees it.
            await browsers["ada"].acall("setPassword", "board-only")
            await await_for(browsers["bob"], "room locked for Bob", lambda s: s["locked"])
            metrics = await serve.metrics()
            assert xmpp_event(metrics, "token_logins") == 2
            assert xmpp_event(metrics, "token_refused") == 0
        finally:
            for b in browsers.values():
                await asyncio.to_thread(b.stop)


def sluice_user(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The real `sluice user` command of this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", "user", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=30,
        check=False,
    )


async def test_secure_domain_guest_logs_in_to_start_and_guests_join(
    tmp_path: Path, artifact_dir: Path
) -> None:
    settings = '[signaling.auth]\nsecure-domain = true\nusers-file = "users.json"\n'
    (tmp_path / "serve.toml").write_text(settings)  # running_serve rewrites it; sluice user reads it now
    added = sluice_user("add", "host", "--config", str(tmp_path / "serve.toml"), "--password-stdin",
                        stdin="host-password\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    users = tmp_path / "users.json"
    assert users.stat().st_mode & 0o777 == 0o600 and "host-password" not in users.read_text()
    room = "townhall"
    async with running_serve(tmp_path, settings) as serve:
        browsers: dict[str, ChromiumBrowser] = {}
        try:
            browsers["host"] = host = await open_room(tmp_path, "host", f"{serve.url}/{room}")
            await press_join(host, "Hostess")
            await await_for(host, "login prompt", lambda s: s["prompt"] == "login")
            state = await asyncio.to_thread(host.call, "state")
            assert not state["joined"] and "authenticated users" in (state["error"] or ""), state
            assert xmpp_event(await serve.metrics(), "room_creations_refused_guest") == 1
            assert not await serve.conferences()
            # A wrong password: refused, the prompt again with a message.
            await asyncio.to_thread(host.call, "submitLogin", "host", "wrong-password")
            await await_for(host, "login error", bool, "loginError")
            await host.ascreenshot(artifact_dir / "access-login-prompt.png")
            assert (await asyncio.to_thread(host.call, "state"))["prompt"] == "login"
            await asyncio.to_thread(host.call, "submitLogin", "host", "host-password")
            started = await await_for(host, "host in the room", lambda s: s["joined"])
            assert started["affiliation"] == "owner", started
            metrics = await serve.metrics()
            assert xmpp_event(metrics, "user_logins") == 1
            assert xmpp_event(metrics, "user_logins_scram_sha_256") == 1  # strophe.js's first choice
            assert xmpp_event(metrics, "auth_failure") >= 1
            # Another guest joins the started meeting without any prompt.
            browsers["guest"] = guest = await open_room(tmp_path, "guest", f"{serve.url}/{room}")
            await press_join(guest, "Guest")
            joined = await await_for(guest, "guest in the room", lambda s: s["joined"])
            assert joined["prompt"] is None and joined["affiliation"] == "none", joined
            await await_for(
                guest,
                "guest sees the host",
                lambda ps: any(p["name"] == "Hostess" and not p["local"] for p in ps),
                "participants",
            )
            assert xmpp_event(await serve.metrics(), "room_creations_refused_guest") == 1
        finally:
            for b in browsers.values():
                await asyncio.to_thread(b.stop)
