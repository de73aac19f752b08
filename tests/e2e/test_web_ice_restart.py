"""A participant whose media path to the bridge breaks mid-call gets a new session and its media back without
leaving the room (issue 14's ICE restart Show, as far as it goes without XMPP stream resumption), on the real
`sluice serve` with the coturn it manages, in the namespaces of test_web_turn.py.

The participant behind the NAT first reaches the bridge directly. Then the router starts dropping its UDP to
the bridge's media port (a firewall or NAT change: its signalling, over TCP, goes on). Its ICE goes
'disconnected'; two seconds later its page ends the session asking for a restart (session-terminate with
`<bridge-session restart="true">`, as Jitsi Meet does on ICE failure), the focus invites it again, and the new
PeerConnection, gathering where it is now, reaches the bridge through TURN. Both sides decode each other
again, and the other participant never sees it leave.

Not covered: a change of the participant's own address. That breaks its XMPP connection too, and without
XEP-0198 stream resumption (the embedded server has none) the page leaves the room.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.e2e.test_web_turn import decodes, direct_and_nat, frames, nat_lab
from tests.helpers.netns import Netlab
from tests.helpers.webpage import await_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

#: From the moment the path breaks: Chromium's ICE says 'disconnected' after about 2.5 s without consent
#: responses, the page waits 2 s more, then a new session's ICE through TURN and its first frames.
RECOVERY_S = 15.0


async def test_a_broken_media_path_gets_a_new_session_through_turn_without_leaving(
    netlab: Netlab, tmp_path: Path
) -> None:
    async with nat_lab(netlab, tmp_path, block_media=False) as lab:
        # TURN out of reach at first, so the first session goes direct (with both, the bridge may nominate
        # the relayed pair first, and there would be nothing to break); then the path changes: UDP to the
        # bridge closes, TURN opens.
        turn = [
            ("-p", proto, "-d", lab.uplink.a_addr, "--dport", "3478", "-j", "DROP")
            for proto in ("udp", "tcp")
        ]
        for rule in turn:
            lab.rtr.run("iptables", "-A", "FORWARD", *rule)
        async with direct_and_nat(lab) as (direct, direct_nick, nat, nat_nick):
            await await_for(nat, "Nat decodes Direct", decodes(direct_nick), "getStats", 45)
            await await_for(direct, "Direct decodes Nat", decodes(nat_nick), "getStats", 30)
            pair = await nat.acall("transportStats")
            assert pair["localType"] != "relay", pair

            lab.block_media()
            for rule in turn:
                lab.rtr.run("iptables", "-D", "FORWARD", *rule)
            broke = time.monotonic()
            seen = [await frames(nat, direct_nick), await frames(direct, nat_nick)]
            stayed = True
            recovered_at = None
            while time.monotonic() - broke < RECOVERY_S:
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
            assert state["counters"]["restartsAsked"] == 1, state["counters"]
            assert any("asks for a restart" in line for line in lab.serve.output)
            # And the media keeps coming through the relay, both ways.
            await await_for(nat, "Nat decodes Direct again", decodes(direct_nick), "getStats", 10)
            await await_for(direct, "Direct decodes Nat again", decodes(nat_nick), "getStats", 10)
            assert lab.dropped() > 0
