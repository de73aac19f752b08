"""The bridge in a real Prosody's brewery MUC, seen by a client playing Jicofo (docs/jitsi-protocol.md
1.2-1.5)."""

from __future__ import annotations

import asyncio
import socket
import xml.etree.ElementTree as ET

from bridge.xmpp import BridgeXmppClient
from bridge.xmpp_core import NS_COLIBRI, NS_COLIBRI2, NS_HEALTHCHECK, NS_VERSION
from tests.helpers.prosody import BREWERY_JID, MucObserver, Prosody
from tests.integration.conftest import EchoColibri2

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

REQUIRED_STATS = {
    "stress_level",
    "average_participant_stress",
    "healthy",
    "drain",
    "graceful_shutdown",
    "shutting_down",
    "version",
    "region",
    "relay_id",
    "conferences",
    "endpoints",
    "bit_rate_download",
    "bit_rate_upload",
    "packet_rate_download",
    "packet_rate_upload",
}


def stats_of(presence: ET.Element) -> dict[str, str]:
    stats = presence.find(f"{{{NS_COLIBRI}}}stats")
    if stats is None:
        return {}
    return {s.get("name", ""): s.get("value", "") for s in stats.iterfind(f"{{{NS_COLIBRI}}}stat")}


def has_stats(presence: ET.Element) -> bool:
    return bool(stats_of(presence))


def occupant(client: BridgeXmppClient) -> str:
    return client.occupant_jid(BREWERY_JID.lower())


async def test_presence_carries_stats(bridge_xmpp: BridgeXmppClient, jicofo: MucObserver) -> None:
    nick = bridge_xmpp.config.muc_nickname
    conference = bridge_xmpp.bridge.create_conference("meeting-1")
    conference.create_endpoint("ep-1")
    pres = await jicofo.wait_presence(nick, where=lambda p: stats_of(p).get("endpoints") == "1")
    stats = stats_of(pres)
    assert stats.keys() >= REQUIRED_STATS
    assert stats["drain"] == "false"
    assert stats["healthy"] == "true"
    assert stats["graceful_shutdown"] == "false"
    assert stats["shutting_down"] == "false"
    assert stats["region"] == "test-region"
    assert stats["relay_id"] == "jvb-test"
    assert stats["conferences"] == "1"
    assert float(stats["stress_level"]) == 0.0  # no packets flow, so no load
    assert stats["version"] == bridge_xmpp.config.version


async def test_stress_follows_packet_rate(bridge_xmpp: BridgeXmppClient, jicofo: MucObserver) -> None:
    """Packets the core receives (here: junk it drops) raise packet rates and stress = rate / capacity."""
    nick = bridge_xmpp.config.muc_nickname
    await jicofo.wait_presence(nick, where=has_stats)
    target = bridge_xmpp.bridge.local_addresses()[0]

    async def send_junk() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while True:
                for _ in range(100):
                    sock.sendto(b"\x80" + bytes(99), target)
                await asyncio.sleep(0.01)

    sender = asyncio.create_task(send_junk())
    try:
        pres = await jicofo.wait_presence(
            nick, timeout=5, where=lambda p: float(stats_of(p).get("packet_rate_download", "0")) > 0
        )
    finally:
        sender.cancel()
    stats = stats_of(pres)
    rate = float(stats["packet_rate_download"]) + float(stats["packet_rate_upload"])
    assert float(stats["bit_rate_download"]) > 0
    assert abs(float(stats["stress_level"]) - rate / 50_000) < 0.001

    # Once the traffic stops, the next intervals report no load again.
    await jicofo.wait_presence(nick, timeout=5, where=lambda p: float(stats_of(p)["stress_level"]) == 0.0)


async def test_healthcheck_and_version(bridge_xmpp: BridgeXmppClient, jicofo: MucObserver) -> None:
    await jicofo.wait_presence(bridge_xmpp.config.muc_nickname, where=has_stats)
    reply = await jicofo.iq(occupant(bridge_xmpp), ET.Element(f"{{{NS_HEALTHCHECK}}}healthcheck"))
    assert reply.get("type") == "result"
    assert len(reply) == 0

    reply = await jicofo.iq(occupant(bridge_xmpp), ET.Element(f"{{{NS_VERSION}}}query"))
    assert reply.get("type") == "result"
    query = reply.find(f"{{{NS_VERSION}}}query")
    assert query is not None
    assert query.findtext(f"{{{NS_VERSION}}}name") == "Sluice"
    assert query.findtext(f"{{{NS_VERSION}}}version") == bridge_xmpp.config.version
    assert query.findtext(f"{{{NS_VERSION}}}os")


async def test_unknown_iq_is_service_unavailable(bridge_xmpp: BridgeXmppClient, jicofo: MucObserver) -> None:
    await jicofo.wait_presence(bridge_xmpp.config.muc_nickname, where=has_stats)
    for payload in (
        ET.Element("{urn:example:nothing}query"),
        ET.Element(f"{{{NS_COLIBRI}}}graceful-shutdown"),  # section 1.4: registered but unsupported
    ):
        reply = await jicofo.iq(occupant(bridge_xmpp), payload, iq_type="set")
        assert reply.get("type") == "error"
        error = reply.find("{jabber:client}error")
        assert error is not None
        assert error.find(f"{{{STANZAS}}}service-unavailable") is not None


async def test_conference_modify_reaches_handler(
    bridge_xmpp: BridgeXmppClient, jicofo: MucObserver, colibri2_stand_in: EchoColibri2
) -> None:
    await jicofo.wait_presence(bridge_xmpp.config.muc_nickname, where=has_stats)
    request = ET.Element(
        f"{{{NS_COLIBRI2}}}conference-modify", {"meeting-id": "m-42", "name": "room@x", "create": "true"}
    )
    ET.SubElement(request, f"{{{NS_COLIBRI2}}}endpoint", {"id": "abcd", "create": "true"})
    reply = await jicofo.iq(occupant(bridge_xmpp), request)  # Jicofo's default type is get (section 2.1)
    assert reply.get("type") == "result"
    modified = reply.find(f"{{{NS_COLIBRI2}}}conference-modified")
    assert modified is not None
    assert modified.get("meeting-id") == "m-42"
    assert len(colibri2_stand_in.requests) == 1
    seen = colibri2_stand_in.requests[0]
    assert seen.get("meeting-id") == "m-42"
    endpoint = seen.find(f"{{{NS_COLIBRI2}}}endpoint")
    assert endpoint is not None and endpoint.get("id") == "abcd"


async def test_conference_modify_error_goes_back_as_iq_error(
    bridge_xmpp: BridgeXmppClient, jicofo: MucObserver
) -> None:
    await jicofo.wait_presence(bridge_xmpp.config.muc_nickname, where=has_stats)
    request = ET.Element(f"{{{NS_COLIBRI2}}}conference-modify", {"meeting-id": "unknown"})
    reply = await jicofo.iq(occupant(bridge_xmpp), request, iq_type="set")
    assert reply.get("type") == "error"
    error = reply.find("{jabber:client}error")
    assert error is not None
    assert error.find(f"{{{STANZAS}}}item-not-found") is not None
    reason = error.find(f"{{{NS_COLIBRI2}}}error")
    assert reason is not None and reason.get("reason") == "conference_not_found"


async def test_reconnects_and_rejoins_after_server_restart(
    bridge_xmpp: BridgeXmppClient, jicofo: MucObserver, prosody: Prosody
) -> None:
    nick = bridge_xmpp.config.muc_nickname
    await jicofo.wait_presence(nick, where=has_stats)
    assert bridge_xmpp.connects == 1

    # Down long enough for several refused connects (backoff 0.2 s doubling to 1 s), then back on the
    # same ports with the same data; every session is gone.
    await asyncio.to_thread(prosody.stop)
    await jicofo.stop()
    await bridge_xmpp.wait_left(timeout=5)
    await asyncio.sleep(1.5)
    assert bridge_xmpp.connects == 1
    await asyncio.to_thread(prosody.start)
    observer = MucObserver(prosody, nickname="focus-2")
    await observer.start()
    try:
        pres = await observer.wait_presence(nick, timeout=10, where=has_stats)
        assert stats_of(pres)["healthy"] == "true"
        await bridge_xmpp.wait_joined(timeout=5)
        assert bridge_xmpp.connects == 2
        reply = await observer.iq(occupant(bridge_xmpp), ET.Element(f"{{{NS_HEALTHCHECK}}}healthcheck"))
        assert reply.get("type") == "result"
    finally:
        await observer.stop()
