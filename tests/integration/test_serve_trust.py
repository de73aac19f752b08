"""The trust-boundaries issue's attacks, as an anonymous visitor of a real `sluice serve` would try them.

One `sluice serve` subprocess (embedded XMPP server, focus, bridge) hosts a call of two real participants
(tests/helpers/jingle_peer.py: slixmpp + aiortc, real ICE/DTLS-SRTP) for the whole module. Each test is one
attack from an anonymous login on the server's c2s port (or an HTTP client on the private API): it must be
refused with its error, counted on the private `/metrics`, and the call must keep decoding media throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator

import aiohttp
import aioice.ice
import pytest
import pytest_asyncio
import slixmpp

from tests.helpers.call import wait_until_async
from tests.helpers.jingle_peer import JinglePeer, keeps_decoding
from tests.helpers.serve import ServeProcess, running_serve
from tests.helpers.spoof import kernel_drops, spoof_every_kind
from tests.helpers.xmppd import (
    CLIENT,
    RawWebSocket,
    SlixClient,
    bridge_stats_presence,
    error_condition,
    status_codes,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

DOMAIN = "meet.test"
ROOM = "standup"
ROOM_JID = f"{ROOM}@conference.{DOMAIN}"
BREWERY = f"jvbbrewery@internal.auth.{DOMAIN}"
NS_COLIBRI2 = "jitsi:colibri2"
NS_FOCUS = "http://jitsi.org/protocol/focus"
NS_MUC = "http://jabber.org/protocol/muc"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
ROOM_JOIN_TIMEOUT = 4.0
CREATIONS_PER_MINUTE = 10
#: Bytes waiting for one client before it counts as not reading (small here, so kernel buffers don't
#: hide the backlog for long); what one flush may add past it before the check.
SEND_QUEUE_BOUND = 256 * 1024
ONE_FLUSH = 96 * 1024


def event(metrics: dict[str, float], component: str, name: str) -> float:
    return metrics.get(f'sluice_{component}_events_total{{event="{name}"}}', 0.0)


@pytest.fixture(scope="module")
def loopback_only() -> Iterator[None]:
    """aioice leaves 127.0.0.1 out when gathering; these peers need exactly that (module-wide)."""
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    yield
    aioice.ice.get_host_addresses = original


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServeProcess]:
    settings = (
        f"[signaling.focus]\nroom-join-timeout = {ROOM_JOIN_TIMEOUT}\n"
        f"[signaling.xmpp.limits]\nroom-creations-per-minute-per-address = {CREATIONS_PER_MINUTE}\n"
        f"max-send-queue-bytes = {SEND_QUEUE_BOUND}\n"
    )
    async with running_serve(tmp_path_factory.mktemp("serve"), settings, domain=DOMAIN) as served:
        yield served


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def call(served: ServeProcess, loopback_only: None) -> AsyncIterator[list[JinglePeer]]:
    """Two participants decoding each other's media for the whole module."""
    peers = [JinglePeer(served, ROOM) for _ in range(2)]
    try:
        for peer in peers:
            await peer.join()
        await keeps_decoding(peers, within=40.0)
        yield peers
    finally:
        for peer in peers:
            await peer.leave()


@pytest_asyncio.fixture(loop_scope="module")
async def visitor(served: ServeProcess) -> AsyncIterator[SlixClient]:
    """An anonymous login, as any visitor of the web page gets."""
    client = SlixClient(DOMAIN)
    await client.connect(served.c2s_port)
    try:
        yield client
    finally:
        await client.disconnect()


async def test_attack_1_and_3_a_visitor_cannot_enter_the_brewery_nor_pose_as_a_bridge(
    served: ServeProcess, call: list[JinglePeer], visitor: SlixClient
) -> None:
    before = await served.metrics()
    # Join the brewery (to read the bridge's real JID) with bridge-shaped stats (to attract rooms).
    visitor.xmpp.send_raw(ET.tostring(bridge_stats_presence(f"{BREWERY}/jvb-evil"), encoding="unicode"))
    refused = await visitor.wait_for(lambda p: p.get("from") == f"{BREWERY}/jvb-evil")
    assert refused.get("type") == "error" and error_condition(refused) == "forbidden"
    assert not [p for p in visitor.presences if p.get("type") != "error"], "a bridge's presence leaked"
    # Nor can it list or query the brewery.
    reply = await visitor.iq(BREWERY, ET.Element(f"{{{NS_DISCO_INFO}}}query"))
    assert error_condition(reply) == "forbidden"
    after = await served.metrics()
    assert event(after, "xmpp", "muc_outsiders_refused") >= event(before, "xmpp", "muc_outsiders_refused") + 2
    assert after["sluice_focus_bridges"] == 1 and event(after, "focus", "bridges_failed") == 0
    await keeps_decoding(call)


async def test_attack_2_a_visitor_cannot_send_colibri2_to_the_bridge_or_the_focus(
    served: ServeProcess, call: list[JinglePeer], visitor: SlixClient
) -> None:
    # The meeting-id is readable from the room's disco#info, as before.
    info = await visitor.iq(ROOM_JID, ET.Element(f"{{{NS_DISCO_INFO}}}query"))
    meeting_id = next(
        (f.findtext("{jabber:x:data}value") for f in info.iter("{jabber:x:data}field")
         if f.get("var") == "muc#roominfo_meetingId"),
        None,
    )  # fmt: skip
    assert meeting_id and meeting_id in await served.endpoints()
    before = await served.metrics()
    targets = (
        f"jvb@auth.{DOMAIN}",  # the bridge account (its resource is random, its bare JID is guessable)
        f"focus@auth.{DOMAIN}/focus",  # the focus's account (public: clients are told it)
        f"focus.{DOMAIN}",  # the focus's public address takes only the conference request
        f"{BREWERY}/jvb-1",  # a brewery occupant JID
    )
    for to in targets:
        for attack in ("expire", "mute"):
            modify = ET.Element(f"{{{NS_COLIBRI2}}}conference-modify", {"meeting-id": meeting_id})
            if attack == "expire":
                modify.set("expire", "true")
            else:
                for nick in (p.nick for p in call):
                    ep = ET.SubElement(modify, f"{{{NS_COLIBRI2}}}endpoint", {"id": nick})
                    ET.SubElement(ep, f"{{{NS_COLIBRI2}}}force-mute", {"audio": "true", "video": "true"})
            reply = await visitor.iq(to, modify, iq_type="set")
            assert reply.get("type") == "error", (to, ET.tostring(reply))
            assert error_condition(reply) in ("service-unavailable", "forbidden"), (to, ET.tostring(reply))
    after = await served.metrics()
    refused = sum(
        event(after, "xmpp", n) - event(before, "xmpp", n)
        for n in ("component_stanzas_refused", "focus_requests_refused", "muc_outsiders_refused")
    )
    assert refused == len(targets) * 2
    print(f"{refused:.0f} Colibri2 requests to {len(targets)} addresses refused")
    # The conference and both endpoints are untouched, nobody was muted, and media still flows.
    assert (await served.endpoints())[meeting_id] == {p.nick for p in call}
    assert after.get('sluice_packets_dropped_total{reason="force_muted"}', 0.0) == 0.0
    await keeps_decoding(call)


async def test_attack_4_rooms_are_bounded_and_rooms_nobody_joins_are_given_up(
    served: ServeProcess, call: list[JinglePeer], visitor: SlixClient
) -> None:
    before = await served.metrics()
    answers: list[ET.Element] = []
    for i in range(CREATIONS_PER_MINUTE + 5):
        conference = ET.Element(f"{{{NS_FOCUS}}}conference", {"room": f"flood{i}@conference.{DOMAIN}"})
        answers.append(await visitor.iq(f"focus.{DOMAIN}", conference, iq_type="set"))
    accepted = [a for a in answers if a.get("type") == "result"]
    refused = [a for a in answers if a.get("type") == "error"]
    # The call's own room used one creation of this address's budget.
    assert len(accepted) <= CREATIONS_PER_MINUTE - 1 and len(refused) >= 6
    assert {error_condition(a) for a in refused} == {"resource-constraint"}
    mid = await served.metrics()
    counted = event(mid, "xmpp", "room_creations_refused") - event(before, "xmpp", "room_creations_refused")
    assert counted == len(refused)
    # Nobody joins them: they are given up and no bridge conference was ever made for them.
    await asyncio.sleep(ROOM_JOIN_TIMEOUT + 1.5)
    after = await served.metrics()
    given_up = event(after, "focus", "rooms_expired_unjoined") - event(
        before, "focus", "rooms_expired_unjoined"
    )
    assert given_up == len(accepted)
    assert after["sluice_focus_rooms"] == 1
    assert after["sluice_xmpp_rooms"] == 2  # the call's room and the brewery
    assert list((await served.endpoints()).values()) == [{p.nick for p in call}]
    print(
        f"{len(answers)} room requests: {len(accepted)} answered, {len(refused)} refused"
        f" (resource-constraint); {given_up:.0f} given up unjoined after {ROOM_JOIN_TIMEOUT:g} s"
    )
    await keeps_decoding(call)


async def test_attack_5_spoofed_dtls_from_a_participants_address_ends_no_call(
    served: ServeProcess, call: list[JinglePeer]
) -> None:
    (conference,) = await served.conferences()
    endpoints = conference["endpoints"]
    assert isinstance(endpoints, list)
    victim = endpoints[0]
    host, port = str(victim["remote-address"]).rsplit(":", 1)
    before = await served.metrics()
    drops_before = kernel_drops(served.media[1])
    sent = await spoof_every_kind((host, int(port)), served.media)
    key = 'sluice_packets_dropped_total{reason="dtls_invalid"}'

    async def arrived() -> bool:
        m = await served.metrics()
        return m.get(key, 0.0) - before.get(key, 0.0) + kernel_drops(served.media[1]) - drops_before >= sent

    await wait_until_async(arrived, within=15, interval=0.2)
    after = await served.metrics()
    counted = after.get(key, 0.0) - before.get(key, 0.0)
    lost = kernel_drops(served.media[1]) - drops_before
    print(f"spoofed {sent} DTLS records from {host}:{port}: {counted:.0f} counted dtls_invalid, {lost} lost")
    assert sent - lost <= counted <= sent
    failures = {k: v for k, v in after.items() if k.startswith("sluice_transport_failures_total")}
    assert sum(failures.values()) == 0, failures
    (still,) = await served.conferences()
    assert {e["transport-state"] for e in still["endpoints"]} == {"connected"}  # type: ignore[attr-defined]
    await keeps_decoding(call, frames=40)


async def test_attack_6_a_websocket_session_that_never_reads_is_cut_off_and_leaves_its_room(
    served: ServeProcess, call: list[JinglePeer], visitor: SlixClient
) -> None:
    slow_nick = "slow0001"
    slow = await RawWebSocket.connect(f"ws://{served.web}/xmpp-websocket", rcvbuf=4096)
    await slow.login_anonymous(DOMAIN)
    await slow.send(
        f'<presence xmlns="{CLIENT}" to="{ROOM_JID}/{slow_nick}"><x xmlns="{NS_MUC}"/></presence>'
    )
    await slow.recv_until(lambda e: e.get("from") == f"{ROOM_JID}/{slow_nick}" and "110" in status_codes(e))
    await visitor.join(ROOM_JID, "flood001")
    before, rss_before = await served.metrics(), served.rss()
    # From now on the slow session reads nothing; the visitor floods it with private messages (32 KiB,
    # as fast as the server's per-session stanza rate lets it).
    body = "x" * (32 * 1024)
    start = time.monotonic()

    async def flood() -> None:
        while True:
            visitor.xmpp.send_message(mto=slixmpp.JID(f"{ROOM_JID}/{slow_nick}"), mbody=body, mtype="chat")
            await asyncio.sleep(0.01)

    flooding = asyncio.create_task(flood())
    try:
        gone = await visitor.wait_for(
            lambda p: p.get("from") == f"{ROOM_JID}/{slow_nick}" and p.get("type") == "unavailable",
            timeout=30,
        )
    finally:
        flooding.cancel()
    took = time.monotonic() - start
    after, rss_after = await served.metrics(), served.rss()
    peak = after["sluice_xmpp_send_queue_peak_bytes"]
    print(
        f"non-reader cut off after {took:.2f} s of flooding, peak queued {peak:.0f} bytes "
        f"(bound {SEND_QUEUE_BOUND}), RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB"
    )
    assert gone is not None and took < 15
    cut = event(after, "xmpp", "slow_consumers_disconnected") - event(
        before, "xmpp", "slow_consumers_disconnected"
    )
    assert cut == 1
    assert peak <= SEND_QUEUE_BOUND + ONE_FLUSH
    assert rss_after - rss_before < 16 * 2**20
    # It is gone from the room for everyone; the participants' sessions and the call are untouched.
    assert after["sluice_xmpp_occupants"] == before["sluice_xmpp_occupants"] - 1
    assert list((await served.endpoints()).values()) == [{p.nick for p in call}]
    with contextlib.suppress(Exception):
        await slow.close()
    await keeps_decoding(call)


async def test_attack_7_cross_site_requests_to_the_private_api_change_nothing(
    served: ServeProcess, call: list[JinglePeer]
) -> None:
    before = await served.metrics()
    shutdown = '{"graceful-shutdown": false}'
    create = '{"meeting-id": "evil", "create": true}'
    async with aiohttp.ClientSession() as http:
        # What a page on any origin can send without a CORS preflight: text/plain and form bodies.
        for path, body in (
            ("/colibri/shutdown", shutdown),
            ("/colibri/drain/enable", ""),
            ("/colibri/v2/conferences", create),
        ):
            for content_type in ("text/plain", "application/x-www-form-urlencoded"):
                async with http.post(
                    served.private + path, data=body, headers={"Content-Type": content_type}
                ) as resp:
                    assert resp.status == 415, (path, content_type, await resp.text())
            headers = {"Content-Type": "application/json", "Origin": "http://evil.example"}
            async with http.post(served.private + path, data=body, headers=headers) as resp:
                assert resp.status == 403, (path, await resp.text())
            # DNS rebinding: the page's own host name pointed at 127.0.0.1.
            headers = {"Content-Type": "application/json", "Host": "evil.example:8080"}
            async with http.post(served.private + path, data=body, headers=headers) as resp:
                assert resp.status == 421, (path, await resp.text())
        async with http.get(served.private + "/colibri/drain") as resp:
            assert (await resp.json())["drain"] is False
    assert served.proc.returncode is None
    assert "evil" not in await served.endpoints()
    after = await served.metrics()
    for reason, n in (("unsupported_content_type", 6), ("cross_origin", 3), ("misdirected_host", 3)):
        key = f'sluice_private_http_refused_total{{reason="{reason}"}}'
        assert after[key] - before.get(key, 0.0) == n, (reason, after)
    await keeps_decoding(call)
