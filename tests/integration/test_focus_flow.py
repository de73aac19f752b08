"""The focus with real components: Prosody (Jitsi's layout), `sluice bridge` processes in the brewery, and
participants that speak Jingle and real ICE/DTLS/SRTP (tests/helpers/jingle_peer.py, aiortc).

Covers issue 5's focus items: the conference IQ, invitations through the MUC, media between participants,
a leaving participant's endpoint expiring on its bridge, conferences spread across bridges by stress, a
stopped bridge's participants moved to the other one with media resuming, and the Jingle errors; and a
participant that acks its session-initiate but never accepts it being retried once, then reported.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from signaling.focus import Focus, FocusConfig
from signaling.jingle import Jingle, build_jingle
from tests.helpers.bridges import BridgeProcess, start_bridge
from tests.helpers.call import wait_until, wait_until_async
from tests.helpers.jingle_peer import JinglePeer
from tests.helpers.prosody import DOMAIN, Prosody

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("loopback_ice")]

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def focus_config(prosody: Prosody, **overrides: float) -> FocusConfig:
    return FocusConfig(
        xmpp_port=prosody.c2s_port,
        domain=DOMAIN,
        password=prosody.focus_password,
        use_tls=False,
        health_interval=2.0,
        health_timeout=3.0,
        colibri_timeout=5.0,
        participant_rampup=1.0,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
async def focus(prosody: Prosody) -> AsyncIterator[Focus]:
    f = Focus(focus_config(prosody))
    await f.start()
    try:
        await f.wait_ready(timeout=15)
        yield f
    finally:
        await f.stop()


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def wait_bridges(focus: Focus, *bridges: BridgeProcess, timeout: float = 20.0) -> None:
    await wait_until(
        lambda: all(b.jid in focus.core.bridges and focus.core.bridges[b.jid].selectable for b in bridges),
        within=timeout,
        describe=lambda: f"bridges known to the focus: {sorted(focus.core.bridges)}",
    )


async def joined(
    stack: AsyncExitStack, prosody: Prosody, room: str, count: int, *, json_sources: bool = True
) -> list[JinglePeer]:
    peers = [JinglePeer(prosody, room, json_sources=json_sources) for _ in range(count)]
    for peer in peers:
        stack.push_async_callback(peer.leave)
        await peer.join()
    return peers


def summary(*peers: JinglePeer) -> str:
    return "; ".join(p.summary() + (f" errors={p.errors}" if p.errors else "") for p in peers)


async def media_flows(peers: list[JinglePeer], frames: int = 20, within: float = 40.0) -> float:
    """Waits until every peer decoded `frames` video frames from every other; returns the time it took."""

    def all_flow() -> bool:
        return all(p.frames_from(o.nick) >= frames for p in peers for o in peers if o is not p)

    return await wait_until(
        all_flow, within=within, describe=lambda: summary(*peers) + "\n" + "\n".join(p.trace() for p in peers)
    )


async def test_three_participants_exchange_media_and_a_leaver_expires(
    prosody: Prosody, focus: Focus, tmp_path: Path, stack: AsyncExitStack
) -> None:
    bridge = await start_bridge(prosody, tmp_path, "jvb-solo", load_threshold=1_000_000)
    stack.push_async_callback(bridge.stop)
    await wait_bridges(focus, bridge)

    # Two inline-source clients (no json-encoded-sources in their caps) and one JSON client.
    peers = await joined(stack, prosody, "alpha", 2, json_sources=False)
    peers += await joined(stack, prosody, "alpha", 1)
    took = await media_flows(peers)
    print(f"3 participants decode each other after {took:.1f} s: {summary(*peers)}")
    assert all(p.initiates[0].json_sources is None for p in peers[:2])
    assert peers[2].initiates[0].json_sources is not None
    for p in peers:
        for o in peers:
            if o is not p:
                assert p.audio_frames_from(o.nick) > 0, summary(*peers)

    room = focus.core.rooms["alpha@conference.meet.test"]
    assert room.bridge == bridge.jid and room.meeting_id is not None
    assert await bridge.endpoints(room.meeting_id) == {p.nick for p in peers}

    leaver, stay = peers[2], peers[:2]
    await leaver.leave()

    async def expired() -> bool:
        assert room.meeting_id is not None
        return await bridge.endpoints(room.meeting_id) == {p.nick for p in stay}

    deadline = asyncio.get_running_loop().time() + 10
    while not await expired():
        assert asyncio.get_running_loop().time() < deadline, "the leaver's endpoint did not expire"
        await asyncio.sleep(0.2)
    for p in stay:
        await p.wait_for(
            lambda p=p: any(j.action == "source-remove" for j in p.jingles),  # type: ignore[misc]
            timeout=10,
        )
    # The two that stay still receive each other.
    before = [p.frames_from(o.nick) for p in stay for o in stay if o is not p]
    await wait_until(
        lambda: all(
            p.frames_from(o.nick) >= b + 15
            for (p, o), b in zip(((p, o) for p in stay for o in stay if o is not p), before, strict=True)
        ),
        within=15,
        describe=lambda: summary(*stay),
    )
    assert not any(p.errors for p in peers), summary(*peers)


async def test_conferences_spread_by_stress_and_move_when_a_bridge_stops(
    prosody: Prosody, focus: Focus, tmp_path: Path, stack: AsyncExitStack
) -> None:
    a = await start_bridge(prosody, tmp_path, "jvb-a")
    b = await start_bridge(prosody, tmp_path, "jvb-b")
    stack.push_async_callback(a.stop)
    stack.push_async_callback(b.stop)
    await wait_bridges(focus, a, b)

    first = await joined(stack, prosody, "one", 2)
    await media_flows(first)
    room1 = focus.core.rooms["one@conference.meet.test"]
    busy = next(x for x in (a, b) if x.jid == room1.bridge)
    idle = b if busy is a else a
    # The call's packets show up as the busy bridge's stress in its presence.
    await wait_until(
        lambda: focus.core.bridges[busy.jid].stress > focus.core.bridges[idle.jid].stress + 0.1,
        within=15,
        describe=lambda: f"stress: { {j: br.stress for j, br in focus.core.bridges.items()} }",
    )
    stress = {j.rsplit("/", 1)[1]: round(br.stress, 2) for j, br in focus.core.bridges.items()}
    second = await joined(stack, prosody, "two", 2)
    await media_flows(second)
    room2 = focus.core.rooms["two@conference.meet.test"]
    assert room2.bridge == idle.jid, f"the second conference went to the busier bridge (stress {stress})"
    print(f"'one' on {busy.nick}; stress when 'two' was placed: {stress}; 'two' on {idle.nick}")

    # Stop the bridge of "two": its participants are re-invited on the other bridge and media resumes.
    sessions = [p.sid for p in second]
    await idle.stop()
    await wait_until(
        lambda: (
            room2.bridge == busy.jid
            and all(p.sid not in (None, s) for p, s in zip(second, sessions, strict=True))
        ),
        within=20,
        describe=lambda: f"room two on {room2.bridge}; {summary(*second)}",
    )
    took = await media_flows(second)
    print(f"media resumed {took:.1f} s after moving 'two' to {busy.nick}: {summary(*second)}")
    assert all(any(j.action == "session-terminate" for j in p.jingles) for p in second)
    assert room1.bridge == busy.jid, "the conference on the surviving bridge stayed"
    assert focus.core.stats["participants_reinvited"] >= 2
    assert room2.meeting_id is not None
    assert await busy.endpoints(room2.meeting_id) == {p.nick for p in second}
    assert not any(p.errors for p in first + second), summary(*first, *second)


async def test_unknown_session_and_malformed_jingle_get_xmpp_errors(
    prosody: Prosody, focus: Focus, stack: AsyncExitStack
) -> None:
    """No bridge is needed: the focus answers from its own state, and tells the room no bridge is there."""
    (peer,) = await joined(stack, prosody, "errors", 1)
    bogus = Jingle(action="transport-info", sid="no-such-session")
    reply = await peer.send_iq(build_jingle(bogus))
    assert error_parts(reply) >= {f"{{{STANZAS}}}item-not-found", "{urn:xmpp:jingle:errors:1}unknown-session"}

    malformed = ET.fromstring(
        '<jingle xmlns="urn:xmpp:jingle:1" action="session-accept" sid="x">'
        '<content name="audio"><description xmlns="urn:xmpp:jingle:apps:rtp:1" media="audio">'
        '<payload-type id="twelve"/></description></content></jingle>'
    )
    reply = await peer.send_iq(malformed)
    assert f"{{{STANZAS}}}bad-request" in error_parts(reply)
    text = reply.find(f"{{jabber:client}}error/{{{STANZAS}}}text")
    assert text is not None and "payload-type id" in (text.text or "")

    # The focus still serves: a second participant joins; with no bridge, the focus says so in its presence.
    await joined(stack, prosody, "errors", 1)
    await peer.wait_for(
        lambda: (
            peer.focus_presence is not None
            and peer.focus_presence.find("{jabber:client}bridgeNotAvailable") is not None
        ),
        timeout=10,
    )
    assert focus.core.stats["errors_unknown_session"] == 1 and focus.core.stats["errors_bad_request"] == 1


class SilentPeer(JinglePeer):
    """Acks every Jingle IQ, as lib-jitsi-meet does, but never answers a session-initiate: the client whose
    browser refused the offer (docs/jitsi-protocol.md 9)."""

    async def _on_initiate(self, j: Jingle) -> None:
        self.initiates.append(j)
        self.sid = j.sid


async def test_a_participant_that_never_accepts_is_retried_once_then_reported(
    prosody: Prosody, tmp_path: Path, stack: AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="signaling.focus")
    focus = Focus(focus_config(prosody, session_accept_timeout=1.5))
    await focus.start()
    stack.push_async_callback(focus.stop)
    await focus.wait_ready(timeout=15)
    bridge = await start_bridge(prosody, tmp_path, "jvb-silent")
    stack.push_async_callback(bridge.stop)
    await wait_bridges(focus, bridge)

    (talker,) = await joined(stack, prosody, "quiet", 1)
    silent = SilentPeer(prosody, "quiet")
    stack.push_async_callback(silent.leave)
    await silent.join()

    def terminated() -> list[Jingle]:
        return [j for j in silent.jingles if j.action == "session-terminate"]

    await wait_until(
        lambda: focus.core.stats["sessions_never_accepted"] == 1 and len(terminated()) == 2,
        within=30,
        describe=lambda: f"{dict(focus.core.stats)}; silent got {[j.action for j in silent.jingles]}",
    )
    # Over real XMPP: initiate, terminate, a fresh initiate (new sid), terminate with reason timeout.
    assert [j.action for j in silent.jingles] == [
        "session-initiate",
        "session-terminate",
        "session-initiate",
        "session-terminate",
    ]
    first, retry = silent.initiates
    assert first.sid != retry.sid and [j.sid for j in terminated()] == [first.sid, retry.sid]
    reason = terminated()[1].reason
    assert reason is not None and reason.condition == "timeout"
    assert focus.core.stats["session_accept_timeouts"] == 2 and focus.core.stats["sessions_retried"] == 1
    reports = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("quiet@conference.meet.test" in m and silent.nick in m for m in reports), reports
    # The bridge keeps only the participant that accepted; its session was never disturbed.
    room = focus.core.rooms["quiet@conference.meet.test"]
    assert room.meeting_id is not None
    await wait_until_async(
        lambda: _endpoints_are(bridge, room.meeting_id or "", {talker.nick}),
        within=10,
    )
    assert len(talker.initiates) == 1 and talker.sid == talker.initiates[0].sid
    assert not talker.errors and not silent.errors


async def _endpoints_are(bridge: BridgeProcess, meeting_id: str, nicks: set[str]) -> bool:
    return await bridge.endpoints(meeting_id) == nicks


def error_parts(reply: ET.Element) -> set[str]:
    assert reply.get("type") == "error", ET.tostring(reply, encoding="unicode")
    err = reply.find("{jabber:client}error")
    assert err is not None
    return {c.tag for c in err}
