"""Calls that survive a broken media path and a change of address (issue 14's ICE restart Show), on the real
`sluice serve`, in network namespaces these tests create.

In place first: a page whose ICE goes 'disconnected' asks the focus for an ICE restart (session-info with
`<bridge-session ice-restart="true">`), the focus has the bridge restart the endpoint's ICE (Colibri2
`<transport ice-restart="true"/>`: new ufrag and pwd, the same DTLS and SRTP), the page gets the bridge's new
transport as a transport-info tagged with its `ice-generation`, answers it (Chrome makes new credentials and
gathers where it is now) and sends its own back the same way. The session, its SSRCs and the other
participants' view of it stay as they were.

1. An address change: "Mobile" has two links to the server, one for its web page and XMPP (TCP) and one for
   media; the media link's address is replaced mid-call (`ip addr add` the new, `del` the old).
2. A broken path: the router in front of "Nat" starts dropping its UDP to the bridge while TURN opens: the
   restarted ICE finds the relay.
3. With the focus's `enable-ice-restart = false` the page falls back to a new session (session-terminate
   asking for a restart, as Jitsi Meet does), which gathers through TURN too.

Not covered: a change of the address the page's XMPP connection uses. That breaks its TCP connection too, and
without XEP-0198 stream resumption (the embedded server has none) the page leaves the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_web_turn import TURN, decodes, direct_and_nat, frames, join, nat_lab
from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.netns import Netlab
from tests.helpers.serve import running_serve
from tests.helpers.webpage import WINDOW, await_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

#: From the moment the path breaks: Chromium's ICE says 'disconnected' after about 2.5 s without consent
#: responses, the page waits 2 s more, then a new session's ICE through TURN and its first frames.
SESSION_RECOVERY_S = 15.0
#: The Show's bound for an in-place restart, from the change of address to media flowing both ways again.
ICE_RESTART_RECOVERY_S = 5.0
#: The same through TURN after the router blocks UDP (a relay allocation on the way), with room for a loaded
#: host.
ICE_RESTART_TURN_RECOVERY_S = 10.0

ROOM = "moving"
#: Frames decoded past the break, each way, that count as media flowing again (a keyframe and the next).
FRESH_FRAMES = 3


async def _flowing_again(
    mover: ChromiumBrowser,
    mover_nick: str,
    other: ChromiumBrowser,
    other_nick: str,
    *,
    since: float,
    limit: float,
) -> float | None:
    """Seconds from `since` until both sides decode new frames of the other again (FRESH_FRAMES past what
    they had when the path broke) with the mover's ICE connected; None after `limit`. Prints the way there."""
    seen = [await frames(mover, other_nick), await frames(other, mover_nick)]
    last = None
    while (elapsed := time.monotonic() - since) < limit:
        await asyncio.sleep(0.1)
        ice = (await mover.acall("state"))["ice"]
        fresh = [await frames(mover, other_nick) - seen[0], await frames(other, mover_nick) - seen[1]]
        if (ice, fresh[0] > 0, fresh[1] > 0) != last:
            last = (ice, fresh[0] > 0, fresh[1] > 0)
            print(f"{elapsed:.2f} s: the mover's ICE {ice}, new frames each way {fresh}")
        if ice in ("connected", "completed") and min(fresh) >= FRESH_FRAMES:
            return time.monotonic() - since
    return None


def _ip(pair: dict[str, Any]) -> str:
    """The address of our side of the selected candidate pair."""
    return str(pair.get("local") or ":").rsplit(":", 1)[0]


async def _others_saw_nothing(other: ChromiumBrowser, mover_nick: str, watch_s: float) -> None:
    """The other participant keeps the mover in its list throughout and its own session is never touched."""
    end = time.monotonic() + watch_s
    while time.monotonic() < end:
        people = {p["id"] for p in await other.acall("participants")}
        assert mover_nick in people, "the other participant saw the mover leave"
        await asyncio.sleep(0.25)
    counters = (await other.acall("state"))["counters"]
    assert counters["sessions"] == 1 and counters["restartsAsked"] == 0, counters


@contextlib.asynccontextmanager
async def moving_lab(
    netlab: Netlab, tmp: Path
) -> AsyncIterator[tuple[Any, ChromiumBrowser, str, ChromiumBrowser, str, Any]]:
    """srv (sluice serve: web and XMPP on the signalling link, media on the media link; "Direct") and mob
    ("Mobile", on both links; its UDP from the signalling address dropped, so media takes the media link)."""
    srv, mob = netlab.namespace("srv"), netlab.namespace("mob")
    sig = netlab.link(srv, mob)
    media = netlab.link(srv, mob)
    mob.run("iptables", "-A", "OUTPUT", "-p", "udp", "-s", sig.b_addr, "-j", "DROP")
    # Replacing the address is an add and a delete in the same subnet: the new one must survive the old.
    mob.sysctl(f"net.ipv4.conf.{media.ifname}.promote_secondaries", 1)
    async with running_serve(tmp, netns=srv, host=sig.a_addr, media_host=media.a_addr) as serve:
        browsers: list[ChromiumBrowser] = []

        def open_page(name: str, ns: Any) -> ChromiumBrowser:
            browser = ChromiumBrowser.start(
                tmp / f"{name}-profile", f"{serve.url}/{ROOM}", netns=ns, secure_origins=(serve.url,)
            )
            browser.driver.set_window_size(*WINDOW)
            return browser

        try:
            direct = await asyncio.to_thread(open_page, "direct", srv)
            browsers.append(direct)
            mobile = await asyncio.to_thread(open_page, "mobile", mob)
            browsers.append(mobile)
            direct_nick, mobile_nick = await join(direct, "Direct"), await join(mobile, "Mobile")
            yield serve, direct, direct_nick, mobile, mobile_nick, (mob, media)
        finally:
            for i, browser in enumerate(browsers):
                with contextlib.suppress(Exception):
                    browser.save_console_log(tmp / f"browser{i}-console.log")
                await asyncio.to_thread(browser.stop)


async def test_a_participant_whose_address_changes_recovers_through_an_ice_restart_within_5_s(
    netlab: Netlab, tmp_path: Path
) -> None:
    async with moving_lab(netlab, tmp_path) as (
        serve,
        direct,
        direct_nick,
        mobile,
        mobile_nick,
        (mob, media),
    ):
        await await_for(mobile, "Mobile decodes Direct", decodes(direct_nick), "getStats", 45)
        await await_for(direct, "Direct decodes Mobile", decodes(mobile_nick), "getStats", 30)
        pair = await mobile.acall("transportStats")
        assert _ip(pair) == media.b_addr, pair

        moved_to = media.b_addr.rsplit(".", 1)[0] + ".3"
        mob.ip("addr", "add", f"{moved_to}/24", "dev", media.ifname)
        mob.ip("addr", "del", f"{media.b_addr}/24", "dev", media.ifname)
        moved = time.monotonic()
        recovered = await _flowing_again(mobile, mobile_nick, direct, direct_nick, since=moved, limit=20.0)
        state = await mobile.acall("state")
        pair = await mobile.acall("transportStats")
        print("recovered after", recovered, "s; Mobile:", state["counters"], pair)
        assert recovered is not None, (state, pair)
        assert _ip(pair) == moved_to, pair
        counters = state["counters"]
        assert counters["iceRestartsApplied"] == 1 and counters["restartsAsked"] == 0, counters
        assert counters["sessions"] == 1, "the same session throughout"
        assert any("asks for an ICE restart" in line for line in serve.output)
        assert recovered <= ICE_RESTART_RECOVERY_S, f"{recovered:.1f} s"
        await _others_saw_nothing(direct, mobile_nick, 3.0)
        await await_for(mobile, "Mobile decodes Direct still", decodes(direct_nick), "getStats", 10)


async def _break_media_and_open_turn(lab: Any) -> None:
    lab.block_media()
    for rule in _turn_rules(lab):
        lab.rtr.run("iptables", "-D", "FORWARD", *rule)


def _turn_rules(lab: Any) -> list[tuple[str, ...]]:
    return [
        ("-p", proto, "-d", lab.uplink.a_addr, "--dport", "3478", "-j", "DROP") for proto in ("udp", "tcp")
    ]


@contextlib.asynccontextmanager
async def _in_a_direct_call(lab: Any) -> AsyncIterator[tuple[ChromiumBrowser, str, ChromiumBrowser, str]]:
    """Direct and Nat in a call whose first path goes direct: TURN out of reach until the path breaks (with
    both from the start, the bridge may nominate the relayed pair first, and there would be nothing to
    break)."""
    for rule in _turn_rules(lab):
        lab.rtr.run("iptables", "-A", "FORWARD", *rule)
    async with direct_and_nat(lab) as (direct, direct_nick, nat, nat_nick):
        await await_for(nat, "Nat decodes Direct", decodes(direct_nick), "getStats", 45)
        await await_for(direct, "Direct decodes Nat", decodes(nat_nick), "getStats", 30)
        assert (await nat.acall("transportStats"))["localType"] != "relay"
        yield direct, direct_nick, nat, nat_nick


async def test_a_broken_media_path_is_restarted_in_place_through_turn(netlab: Netlab, tmp_path: Path) -> None:
    async with (
        nat_lab(netlab, tmp_path, block_media=False) as lab,
        _in_a_direct_call(lab) as (direct, direct_nick, nat, nat_nick),
    ):
        await _break_media_and_open_turn(lab)
        broke = time.monotonic()
        recovered = await _flowing_again(nat, nat_nick, direct, direct_nick, since=broke, limit=25.0)
        state = await nat.acall("state")
        pair = await nat.acall("transportStats")
        print("recovered after", recovered, "s; Nat:", state["counters"], pair)
        assert recovered is not None, (state, pair)
        assert pair.get("localType") == "relay", pair
        counters = state["counters"]
        assert counters["iceRestartsApplied"] >= 1 and counters["restartsAsked"] == 0, counters
        assert counters["sessions"] == 1
        assert recovered <= ICE_RESTART_TURN_RECOVERY_S, f"{recovered:.1f} s"
        await _others_saw_nothing(direct, nat_nick, 2.0)
        assert lab.dropped() > 0


async def test_without_in_place_restarts_a_broken_path_gets_a_new_session_through_turn(
    netlab: Netlab, tmp_path: Path
) -> None:
    settings = TURN + "[signaling.focus]\nenable-ice-restart = false\n"
    async with (
        nat_lab(netlab, tmp_path, settings, block_media=False) as lab,
        _in_a_direct_call(lab) as (direct, direct_nick, nat, nat_nick),
    ):
        await _break_media_and_open_turn(lab)
        broke = time.monotonic()
        seen = [await frames(nat, direct_nick), await frames(direct, nat_nick)]
        stayed = True
        recovered_at = None
        while time.monotonic() - broke < SESSION_RECOVERY_S:
            await asyncio.sleep(0.25)
            people = {p["id"] for p in await direct.acall("participants")}
            stayed = stayed and nat_nick in people
            now = [await frames(nat, direct_nick), await frames(direct, nat_nick)]
            # A new session's receivers count from 0: any rise past a fall is new media.
            fresh = [n > s + 10 or n < s for n, s in zip(now, seen, strict=True)]
            if all(fresh) and (await nat.acall("transportStats")).get("localType") == "relay":
                recovered_at = time.monotonic() - broke
                break
        state = await nat.acall("state")
        print("recovered after", recovered_at, "s; Nat's counters:", state["counters"])
        assert recovered_at is not None, (state, await nat.acall("transportStats"))
        assert stayed, "the other participant saw Nat leave"
        counters = state["counters"]
        assert counters["restartsAsked"] == 1 and counters["iceRestartsAsked"] == 0, counters
        assert any("asks for a restart" in line for line in lab.serve.output)
        await await_for(nat, "Nat decodes Direct again", decodes(direct_nick), "getStats", 10)
        await await_for(direct, "Direct decodes Nat again", decodes(nat_nick), "getStats", 10)
        assert lab.dropped() > 0
