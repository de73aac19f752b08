"""The whole bridge as Jicofo sees it: configured from TOML, in a real Prosody's brewery, driven by Colibri2.

A slixmpp client plays Jicofo and sends `conference-modify` IQs shaped as docs/jitsi-protocol.md 2.3 to the
bridge's occupant JID through Prosody. Two aiortc peers get offers built from the transports the bridge
returns, and their answers go back to the bridge as Colibri2 updates, as Jicofo does after session-accept.
The requests are written out element by element in tests/helpers/jicofo.py (not with colibri2's
builder), so the test checks the wire shape, not our codec against itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.app import BridgeApp
from bridge.settings import parse_settings
from tests.helpers.call import wait_until, wait_until_async
from tests.helpers.jicofo import (
    C2,
    ICE,
    NICK,
    ROOM,
    STANZAS,
    answer_of,
    bridge_toml,
    conference_modify,
    create_endpoint,
    el,
    result_payload,
    start_sluice,
    summary,
    transport_of,
    update_endpoint,
)
from tests.helpers.peers import PeerFactory
from tests.helpers.prosody import BREWERY_JID, MucObserver, Prosody
from tests.helpers.sdp import OfferBuilder, RemoteParticipant

pytestmark = pytest.mark.integration


@pytest.fixture
async def app(prosody: Prosody) -> AsyncIterator[BridgeApp]:
    app = BridgeApp(parse_settings(bridge_toml(prosody)))
    await app.start()
    try:
        await app.wait_joined(timeout=10)
        yield app
    finally:
        await app.stop()


async def force_mute(
    jicofo: MucObserver, bridge_jid: str, meeting: str, endpoint_id: str, *, audio: bool, video: bool
) -> None:
    """Jicofo's force-mute update for one endpoint (2.2, 2.3 item 3)."""
    request = conference_modify(meeting)
    ep = el(request, C2, "endpoint", id=endpoint_id)
    el(ep, C2, "force-mute", audio=str(audio).lower(), video=str(video).lower())
    result_payload(await jicofo.iq(bridge_jid, request))


async def force_muted_drops(app: BridgeApp, transport_id: int) -> int:
    """Packets of `transport_id` the native core dropped as force-muted."""
    transports = (await app.bridge.get_stats())["transports"]
    assert isinstance(transports, dict)
    counters = transports[transport_id]
    assert isinstance(counters, dict)
    drops = counters["drops"]
    assert isinstance(drops, dict)
    count = drops.get("force_muted", 0)
    assert isinstance(count, int)
    return count


async def test_jicofo_allocates_two_peers_through_prosody_then_expires_one(
    app: BridgeApp, jicofo: MucObserver, aiortc_peers: PeerFactory
) -> None:
    # Jicofo only considers brewery members whose presence carries stats (1.3).
    await jicofo.wait_presence(
        NICK, where=lambda p: p.find("{http://jitsi.org/protocol/colibri}stats") is not None
    )
    bridge_jid = f"{BREWERY_JID.lower()}/{NICK}"
    meeting = str(uuid.uuid4())

    # 1. Create the conference with alice's endpoint (2.3 step 1).
    request = conference_modify(meeting, name=ROOM, create="true")
    create_endpoint(request, "alice")
    created = result_payload(await jicofo.iq(bridge_jid, request))
    alice_transport = transport_of(created, "alice")
    # The port of the shard the conference was placed on.
    conference = app.bridge.conference_by_meeting(meeting)
    assert conference is not None
    (port,) = {p for _, p in conference.shard.native.local_addresses()}
    assert port in {p for _, p in app.bridge.local_addresses()}
    assert alice_transport.ufrag and alice_transport.pwd
    assert {(str(c.ip), c.port) for c in alice_transport.candidates} == {("127.0.0.1", port)}
    ((hash_name, value, setup),) = [(f.hash, f.value, f.setup) for f in alice_transport.fingerprints]
    assert (hash_name, value, setup) == ("sha-256", app.bridge.fingerprint.value, "actpass")
    feedback = [
        (ms.get("type"), ms.get("id")) for ms in created.iterfind(f"{{{C2}}}sources/{{{C2}}}media-source")
    ]
    assert feedback == [("audio", "jvb-a0"), ("video", "jvb-v0")]

    # 2. bob joins the same conference: no conference-level create or name.
    request = conference_modify(meeting)
    create_endpoint(request, "bob")
    bob_transport = transport_of(result_payload(await jicofo.iq(bridge_jid, request)), "bob")
    assert bob_transport.ufrag != alice_transport.ufrag

    # 3. Each client answers the offer built from its own transport; the answer goes back as an update.
    alice, bob = aiortc_peers("alice"), aiortc_peers("bob")
    alice_offers = OfferBuilder(alice_transport)
    alice_answer = await answer_of(alice, alice_offers)
    updated = result_payload(await jicofo.iq(bridge_jid, update_endpoint(meeting, "alice", alice_answer)))
    assert updated.find(f"{{{C2}}}sources") is None, "feedback sources only come with creates (2.4)"

    bob_offers = OfferBuilder(bob_transport)
    bob_offers.add(RemoteParticipant("alice", alice_answer.sources))
    bob_answer = await answer_of(bob, bob_offers)
    result_payload(await jicofo.iq(bridge_jid, update_endpoint(meeting, "bob", bob_answer)))

    # Jicofo's source-add to alice: a re-offer with bob's sources (same transport, so no update needed
    # unless her sources changed).
    alice_offers.add(RemoteParticipant("bob", bob_answer.sources))
    again = await answer_of(alice, alice_offers)
    assert again.transport.ufrag == alice_answer.transport.ufrag
    if again.sources != alice_answer.sources:
        result_payload(await jicofo.iq(bridge_jid, update_endpoint(meeting, "alice", again)))

    took = await wait_until(
        lambda: alice.frames_from("bob") >= 30 and bob.frames_from("alice") >= 30,
        within=20,
        describe=lambda: summary(alice, bob),
    )
    assert alice.frame_size_from("bob") == (320, 240) and bob.frame_size_from("alice") == (320, 240)
    assert alice.audio_frames_from("bob") > 0 and bob.audio_frames_from("alice") > 0
    print(f"both directions at >= 30 video frames after {took:.1f} s: {summary(alice, bob)}")

    # 3b. Jicofo restarts alice's ICE in place (2.3 item 5): the answer is a new transport tagged with its
    # ice-generation, the same fingerprint. aiortc cannot restart ICE and never sends new credentials: her
    # media goes on both ways on the path it had while the bridge waits for them (the kept path's consent is
    # tested in native/core/tests/ice_agent.rs, over longer than this test runs).
    request = conference_modify(meeting)
    el(el(request, C2, "endpoint", id="alice"), C2, "transport", ice_restart="true")
    restarted = result_payload(await jicofo.iq(bridge_jid, request))
    ice = restarted.find(f"{{{C2}}}endpoint[@id='alice']/{{{C2}}}transport/{{{ICE}}}transport")
    assert ice is not None and ice.get("ice-generation") == "1", ET.tostring(restarted, encoding="unicode")
    new_transport = transport_of(restarted, "alice")
    assert new_transport.ufrag != alice_transport.ufrag
    assert [f.value for f in new_transport.fingerprints] == [f.value for f in alice_transport.fingerprints]
    frames = (alice.frames_from("bob"), bob.frames_from("alice"))
    await wait_until(
        lambda: alice.frames_from("bob") >= frames[0] + 30 and bob.frames_from("alice") >= frames[1] + 30,
        within=10,
        describe=lambda: summary(alice, bob),
    )

    # 4. force-mute (2.3 step 3) stops what bob sends, kind by kind, and nothing else; the native core counts
    # the packets it drops. Each "stopped" check first waits until enough of bob's packets were dropped for
    # anything already in flight to be decoded, then until the other streams grew, and compares.
    conference = app.bridge.conference_by_meeting(meeting)
    assert conference is not None
    bob_endpoint = conference.endpoints["bob"]

    async def dropped() -> int:
        return await force_muted_drops(app, bob_endpoint.transport_id)

    async def describe() -> str:
        return f"{summary(alice, bob)}; bob's packets dropped as force_muted: {await dropped()}"

    def describe_now() -> str:
        return summary(alice, bob)

    async def wait_dropped(count: int) -> None:
        async def enough() -> bool:
            return await dropped() >= count

        await wait_until_async(enough, within=10, interval=0.1, describe=describe)

    async def muted_window(drops: int) -> tuple[int, int]:
        """Once half of `drops` more of bob's packets were dropped (what was in flight is decoded by then):
        alice's (audio, video) frame counts from bob. Returns after the other half, with alice's media still
        reaching bob meanwhile."""
        start = await dropped()
        await wait_dropped(start + drops // 2)
        from_bob = (alice.audio_frames_from("bob"), alice.frames_from("bob"))
        to_bob = (bob.audio_frames_from("alice"), bob.frames_from("alice"))
        await wait_dropped(start + drops)
        await wait_until(
            lambda: (
                bob.audio_frames_from("alice") >= to_bob[0] + 25
                and bob.frames_from("alice") >= to_bob[1] + 15
            ),
            within=10,
            describe=describe_now,
        )
        return from_bob

    # 4a. Audio only: bob's audio stops reaching alice, his video does not.
    await force_mute(jicofo, bridge_jid, meeting, "bob", audio=True, video=False)
    assert (bob_endpoint.force_mute_audio, bob_endpoint.force_mute_video) == (True, False)
    from_bob = await muted_window(50)
    await wait_until(lambda: alice.frames_from("bob") >= from_bob[1] + 15, within=10, describe=describe_now)
    assert alice.audio_frames_from("bob") == from_bob[0], (
        f"bob's muted audio reached alice: {await describe()}"
    )

    # 4b. Audio and video: nothing of bob's reaches alice; alice's media still reaches bob.
    await force_mute(jicofo, bridge_jid, meeting, "bob", audio=True, video=True)
    assert bob_endpoint.force_mute_audio and bob_endpoint.force_mute_video
    from_bob = await muted_window(100)
    assert (alice.audio_frames_from("bob"), alice.frames_from("bob")) == from_bob, (
        f"bob's muted media reached alice: {await describe()}"
    )

    # 4c. Unmuted: both kinds flow again (video after the keyframe the bridge asks bob for; aiortc's jitter
    # buffer first waits out the sequence gap the mute left), and nothing more is dropped.
    await force_mute(jicofo, bridge_jid, meeting, "bob", audio=False, video=False)
    took = await wait_until(
        lambda: (
            alice.audio_frames_from("bob") >= from_bob[0] + 25
            and alice.frames_from("bob") >= from_bob[1] + 15
        ),
        within=30,
        describe=describe_now,
    )
    print(f"bob's media reached alice again {took:.1f} s after the unmute: {await describe()}")
    after_unmute = await dropped()
    await wait_until(lambda: alice.frames_from("bob") >= from_bob[1] + 30, within=10, describe=describe_now)
    assert await dropped() == after_unmute

    # 5. Expire bob (2.3 step 4): nothing more is forwarded to or from him.
    request = conference_modify(meeting)
    el(request, C2, "endpoint", id="bob", expire="true")
    result_payload(await jicofo.iq(bridge_jid, request))
    conference = app.bridge.conference_by_meeting(meeting)
    assert conference is not None and set(conference.endpoints) == {"alice"}
    await asyncio.sleep(0.5)  # frames already in aiortc's jitter buffers drain
    before = (alice.frames_from("bob"), bob.frames_from("alice"))
    await asyncio.sleep(1.5)
    after = (alice.frames_from("bob"), bob.frames_from("alice"))
    assert after == before, f"media still flows after bob expired: {before} -> {after}"

    # An update for the expired endpoint gets unknown_endpoint with the endpoint child (2.5), via Prosody.
    reply = await jicofo.iq(bridge_jid, update_endpoint(meeting, "bob", bob_answer))
    assert reply.get("type") == "error", ET.tostring(reply, encoding="unicode")
    error = reply.find("{jabber:client}error")
    assert error is not None
    assert error.find(f"{{{STANZAS}}}item-not-found") is not None
    c2_error = error.find(f"{{{C2}}}error")
    assert c2_error is not None and c2_error.get("reason") == "unknown_endpoint"
    endpoint = error.find(f"{{{C2}}}endpoint")
    assert endpoint is not None and endpoint.get("id") == "bob"

    # 6. Expire the conference.
    result_payload(await jicofo.iq(bridge_jid, conference_modify(meeting, expire="true")))
    assert app.bridge.conference_by_meeting(meeting) is None and conference.closed


async def test_cli_runs_from_a_config_file_and_leaves_on_sigterm(
    prosody: Prosody, jicofo: MucObserver, tmp_path: Path
) -> None:
    """`sluice bridge --config FILE` joins the brewery; SIGTERM makes it leave and exit 0."""
    config = tmp_path / "bridge.toml"
    config.write_text(bridge_toml(prosody, nickname="sluice-cli"))
    proc = await start_sluice("bridge", "--config", str(config), "--stats-interval", "0.5")
    try:
        await jicofo.wait_presence(
            "sluice-cli",
            timeout=15,
            where=lambda p: p.find("{http://jitsi.org/protocol/colibri}stats") is not None,
        )
        os.kill(proc.pid, signal.SIGTERM)
        await jicofo.wait_gone("sluice-cli", timeout=10)
        assert proc.stdout is not None
        output = (await asyncio.wait_for(proc.stdout.read(), 10)).decode()
        code = await asyncio.wait_for(proc.wait(), 10)
        assert code == 0, output
        assert "sluice bridge: XMPP 127.0.0.1" in output, output
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
