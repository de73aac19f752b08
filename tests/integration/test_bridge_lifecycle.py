"""Drain, graceful shutdown and idle expiry (docs/jitsi-protocol.md 2.3 item 4, 3.4), seen as Jicofo sees
them.

Presence is read by a slixmpp observer in a real Prosody's brewery; Colibri2 goes through Prosody to the
bridge's occupant JID; the process-level test runs `sluice bridge` itself and watches it exit.
"""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from bridge.app import BridgeApp
from bridge.settings import parse_settings
from tests.helpers.call import wait_until
from tests.helpers.jicofo import (
    C2,
    ROOM,
    answer_of,
    bridge_toml,
    conference_modify,
    create_endpoint,
    el,
    error_reason,
    result_payload,
    start_sluice,
    summary,
    transport_of,
    update_endpoint,
)
from tests.helpers.peers import PeerFactory
from tests.helpers.prosody import BREWERY_JID, MucObserver, Prosody, free_tcp_port
from tests.helpers.sdp import OfferBuilder, RemoteParticipant

pytestmark = pytest.mark.integration

COLIBRI = "{http://jitsi.org/protocol/colibri}"
JSON = {"Content-Type": "application/json"}


def stats_of(presence: ET.Element) -> dict[str, str]:
    stats = presence.find(f"{COLIBRI}stats")
    assert stats is not None
    return {s.get("name", ""): s.get("value", "") for s in stats.iterfind(f"{COLIBRI}stat")}


def flag(name: str, value: str = "true") -> Callable[[ET.Element], bool]:
    def where(p: ET.Element) -> bool:
        return p.find(f"{COLIBRI}stats") is not None and stats_of(p).get(name) == value

    return where


def create_request(meeting: str, endpoint_id: str, *, name: str | None = ROOM) -> ET.Element:
    request = conference_modify(meeting, create="true", **({"name": name} if name else {}))
    create_endpoint(request, endpoint_id)
    return request


async def test_cli_drains_shuts_down_gracefully_and_exits_when_empty(
    prosody: Prosody, jicofo: MucObserver, tmp_path: Path
) -> None:
    """Section 3.4 end to end: presence follows drain and shutdown; the process exits once empty."""
    http_port = free_tcp_port()
    nick = "sluice-drain"
    config = tmp_path / "bridge.toml"
    config.write_text(
        bridge_toml(prosody, nickname=nick).replace(
            '[videobridge.http-servers.private]\nhost = "127.0.0.1"\nport = 0',
            f'[videobridge.http-servers.private]\nhost = "127.0.0.1"\nport = {http_port}',
        )
        + '\n[videobridge.shutdown]\nshutting-down-delay = "1s"\n'
    )
    proc = await start_sluice("bridge", "--config", str(config))
    base = f"http://127.0.0.1:{http_port}"
    bridge_jid = f"{BREWERY_JID.lower()}/{nick}"
    try:
        await jicofo.wait_presence(nick, timeout=15, where=flag("drain", "false"))
        async with aiohttp.ClientSession() as http:
            # Body-less, but the private API wants the JSON content type on every POST.
            async with http.post(f"{base}/colibri/drain/enable", headers=JSON) as r:
                assert r.status == 200
            await jicofo.wait_presence(nick, timeout=5, where=flag("drain"))
            # Drain only steers Jicofo's choice: the bridge still takes a conference it is sent.
            meeting = str(uuid.uuid4())
            result_payload(await jicofo.iq(bridge_jid, create_request(meeting, "alice")))

            async with http.post(f"{base}/colibri/shutdown", json={"graceful-shutdown": True}) as r:
                assert r.status == 200
            presence = await jicofo.wait_presence(nick, timeout=5, where=flag("graceful_shutdown"))
            assert stats_of(presence)["shutting_down"] == "false"
            # New conferences are refused; the existing one keeps working.
            refused = await jicofo.iq(bridge_jid, create_request(str(uuid.uuid4()), "bob"))
            assert error_reason(refused) == ("service-unavailable", "graceful_shutdown")
            request = conference_modify(meeting)
            create_endpoint(request, "bob")
            result_payload(await jicofo.iq(bridge_jid, request))
            await asyncio.sleep(1.5)
            assert proc.returncode is None, "exited with participants still present"

            # The last participants leave: shutting down, then exit after the delay.
            result_payload(await jicofo.iq(bridge_jid, conference_modify(meeting, expire="true")))
            await jicofo.wait_presence(nick, timeout=5, where=flag("shutting_down"))
        code = await asyncio.wait_for(proc.wait(), 10)
        assert proc.stdout is not None
        output = (await proc.stdout.read()).decode()
        assert code == 0, output
        assert "shutdown finished" in output, output
        await jicofo.wait_gone(nick, timeout=5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


TOML = """
[videobridge.ice.udp]
port = 0
bind-addresses = ["127.0.0.1"]

[videobridge.http-servers.private]
port = -1
"""


async def test_graceful_shutdown_gives_up_waiting_at_the_maximum_duration() -> None:
    settings = parse_settings(
        TOML
        + """
[videobridge.shutdown]
graceful-shutdown-max-duration = "1500ms"
shutting-down-delay = "200ms"
""",
        environ={},
    )
    async with BridgeApp(settings) as app:
        conference = app.bridge.create_conference(meeting_id="m")
        conference.create_endpoint("stays")
        app.lifecycle.begin_shutdown(graceful=True)
        assert app.state.graceful_shutdown and not app.state.shutting_down
        await asyncio.sleep(1.0)
        assert not app.state.shutting_down and not app.lifecycle.finished.is_set()
        await asyncio.wait_for(app.lifecycle.finished.wait(), 3)
        assert app.state.shutting_down
        assert set(conference.endpoints) == {"stays"}, "the shutdown itself does not expire anyone"


async def test_graceful_shutdown_proceeds_at_the_minimum_participants() -> None:
    settings = parse_settings(
        TOML
        + """
[videobridge.shutdown]
graceful-shutdown-min-participants = 1
shutting-down-delay = "200ms"
""",
        environ={},
    )
    async with BridgeApp(settings) as app:
        conference = app.bridge.create_conference(meeting_id="m")
        conference.create_endpoint("a")
        conference.create_endpoint("b")
        app.lifecycle.begin_shutdown(graceful=True)
        await asyncio.sleep(1.5)
        assert not app.state.shutting_down, "two participants are above the minimum of one"
        conference.get_endpoint("b").close()  # type: ignore[union-attr]
        await asyncio.wait_for(app.lifecycle.finished.wait(), 3)
        assert app.state.shutting_down


async def test_forced_shutdown_finishes_at_once() -> None:
    async with BridgeApp(parse_settings(TOML, environ={})) as app:
        app.bridge.create_conference(meeting_id="m").create_endpoint("a")
        app.lifecycle.begin_shutdown(graceful=False)
        assert app.lifecycle.finished.is_set()
        assert app.state.graceful_shutdown and app.state.shutting_down


# ---- idle expiry


@pytest.fixture
async def quick_expiry_app(prosody: Prosody) -> AsyncIterator[BridgeApp]:
    toml = (
        bridge_toml(prosody, nickname="sluice-idle")
        + '\n[videobridge.entity-expiration]\ntimeout = "2s"\ncheck-interval = "250ms"\n'
    )
    app = BridgeApp(parse_settings(toml, environ={}))
    await app.start()
    try:
        await app.wait_joined(timeout=10)
        yield app
    finally:
        await app.stop()


async def test_idle_endpoints_then_the_empty_conference_expire(
    quick_expiry_app: BridgeApp, jicofo: MucObserver, aiortc_peers: PeerFactory
) -> None:
    app = quick_expiry_app
    bridge_jid = f"{BREWERY_JID.lower()}/sluice-idle"
    await jicofo.wait_presence("sluice-idle", where=lambda p: p.find(f"{COLIBRI}stats") is not None)
    meeting = str(uuid.uuid4())

    created = result_payload(await jicofo.iq(bridge_jid, create_request(meeting, "alice")))
    alice_transport = transport_of(created, "alice")
    transports = {}
    for name in ("bob", "ghost"):  # ghost never connects
        request = conference_modify(meeting)
        create_endpoint(request, name)
        transports[name] = transport_of(result_payload(await jicofo.iq(bridge_jid, request)), name)

    alice, bob = aiortc_peers("alice"), aiortc_peers("bob")
    alice_offers = OfferBuilder(alice_transport)
    alice_answer = await answer_of(alice, alice_offers)
    result_payload(await jicofo.iq(bridge_jid, update_endpoint(meeting, "alice", alice_answer)))
    bob_offers = OfferBuilder(transports["bob"])
    bob_offers.add(RemoteParticipant("alice", alice_answer.sources))
    bob_answer = await answer_of(bob, bob_offers)
    result_payload(await jicofo.iq(bridge_jid, update_endpoint(meeting, "bob", bob_answer)))
    await wait_until(lambda: bob.frames_from("alice") > 0, within=15, describe=lambda: summary(alice, bob))

    conference = app.bridge.conference_by_meeting(meeting)
    assert conference is not None
    await wait_until(
        lambda: "ghost" not in conference.endpoints,
        within=5,
        describe=lambda: f"endpoints {sorted(conference.endpoints)}",
    )
    # alice and bob send media all along, so they outlive several timeouts.
    await asyncio.sleep(3)
    assert set(conference.endpoints) == {"alice", "bob"}

    # bob's client goes away without Jicofo expiring him: the bridge notices on its own.
    await bob.close()
    await wait_until(lambda: "bob" not in conference.endpoints, within=6)
    assert "alice" in conference.endpoints
    await alice.close()
    await wait_until(lambda: conference.closed, within=10, describe=lambda: f"{sorted(conference.endpoints)}")

    # Jicofo's next request for it finds no conference (2.5).
    request = conference_modify(meeting)
    el(request, C2, "endpoint", id="alice", stats_id="alice-stats")
    reply = await jicofo.iq(bridge_jid, request)
    assert error_reason(reply) == ("item-not-found", "conference_not_found")


# ---- more than one XMPP server


@pytest.fixture
def second_prosody(tmp_path: Path) -> Iterator[Prosody]:
    server = Prosody.create(tmp_path / "prosody-2", jvb_password="other-secret")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_one_bridge_in_two_breweries_serves_both(
    prosody: Prosody, second_prosody: Prosody, jicofo: MucObserver
) -> None:
    """Two xmpp-client configs: presence in both breweries, Colibri2 from either, drain shown in both."""
    first = bridge_toml(prosody, nickname="sluice-multi")
    second = bridge_toml(second_prosody, nickname="sluice-multi").split("[videobridge.apis")[1]
    toml = first + "\n[videobridge.apis" + second.replace("configs.test-prosody", "configs.second")
    other = MucObserver(second_prosody)
    await other.start()
    app = BridgeApp(parse_settings(toml, environ={}))
    await app.start()
    try:
        await app.wait_joined(timeout=10)
        assert len(app.xmpp) == 2
        for observer in (jicofo, other):
            await observer.wait_presence("sluice-multi", where=flag("drain", "false"))
        # Each focus allocates its own conference through its own server.
        meetings = []
        for observer in (jicofo, other):
            meeting = str(uuid.uuid4())
            meetings.append(meeting)
            reply = await observer.iq(f"{BREWERY_JID.lower()}/sluice-multi", create_request(meeting, "a"))
            result_payload(reply)
        assert all(app.bridge.conference_by_meeting(m) is not None for m in meetings)
        for observer in (jicofo, other):
            await observer.wait_presence("sluice-multi", where=flag("conferences", "2"))
        app.lifecycle.set_drain(True)
        for observer in (jicofo, other):
            await observer.wait_presence("sluice-multi", timeout=3, where=flag("drain"))
    finally:
        await app.stop()
        await other.stop()
