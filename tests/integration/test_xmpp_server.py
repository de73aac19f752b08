"""The embedded XMPP server on loopback with real clients: slixmpp over TCP (plain and STARTTLS), RFC 7395
framing by hand over aiohttp's WebSocket client, and the bridge's own BridgeXmppClient in the brewery."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from bridge import Bridge
from bridge.xmpp import BridgeXmppClient
from bridge.xmpp_core import NS_COLIBRI, NS_HEALTHCHECK, XmppClientConfig
from signaling.xmpp import XmppLimits, XmppServer, XmppServerConfig
from tests.helpers.xmppd import (
    CLIENT,
    FRAMING,
    MUC,
    SASL,
    STREAMS,
    RawTcp,
    RawWebSocket,
    SlixClient,
    Xmppd,
    error_condition,
    make_self_signed,
    muc_item,
    serve_xmpp,
    status_codes,
)
from tests.integration.conftest import EchoColibri2

DOMAIN = "meet.sluice"
ROOM = f"room1@conference.{DOMAIN}"
ROOM_JID = slixmpp.JID(ROOM)
BREWERY = f"jvbbrewery@internal.auth.{DOMAIN}"
PASSWORDS = {"focus": "focus-secret", "jvb": "jvb-secret"}
ACCOUNTS = {f"{user}@auth.{DOMAIN}": pw for user, pw in PASSWORDS.items()}
COMPONENTS = (f"jvb@auth.{DOMAIN}",)
MAX_STANZA = 8192


@pytest.fixture
async def xmppd() -> AsyncIterator[Xmppd]:
    config = XmppServerConfig(
        domain=DOMAIN,
        accounts=ACCOUNTS,
        components=COMPONENTS,
        tcp_port=0,
        limits=XmppLimits(max_stanza_bytes=MAX_STANZA),
    )
    async for served in serve_xmpp(config):
        yield served


@pytest.fixture
async def clients() -> AsyncIterator[list[SlixClient]]:
    """Every SlixClient a test puts here is disconnected at teardown."""
    made: list[SlixClient] = []
    yield made
    for client in made:
        if client.xmpp.transport is not None:
            try:
                await client.disconnect()
            except (TimeoutError, ConnectionError):
                client.xmpp.abort()


async def focus_client(xmppd: Xmppd, clients: list[SlixClient], mechanism: str | None = None) -> SlixClient:
    focus = SlixClient(f"focus@auth.{DOMAIN}/focus", PASSWORDS["focus"], mechanism=mechanism)
    clients.append(focus)
    await focus.connect(xmppd.port)
    return focus


async def anonymous(xmppd: Xmppd, clients: list[SlixClient]) -> SlixClient:
    client = SlixClient(DOMAIN)
    clients.append(client)
    await client.connect(xmppd.port)
    return client


def item_attr(presence: ET.Element, name: str) -> str | None:
    item = muc_item(presence)
    return item.get(name) if item is not None else None


def from_nick(nick: str, *, unavailable: bool = False) -> Any:
    def match(pres: ET.Element) -> bool:
        return (
            pres.get("from", "").endswith(f"/{nick}") and (pres.get("type") == "unavailable") == unavailable
        )

    return match


def answer_jingle(client: SlixClient, seen: list[ET.Element]) -> None:
    """Registers a Jingle IQ handler that records the request and answers with a result."""

    def on_jingle(iq: Any) -> None:
        seen.append(iq.xml)
        iq.reply(clear=True).send()

    client.xmpp.register_handler(
        Callback("jingle", MatchXPath("{jabber:client}iq/{urn:xmpp:jingle:1}jingle"), on_jingle)
    )


async def test_slixmpp_clients_in_a_room(xmppd: Xmppd, clients: list[SlixClient]) -> None:
    focus = await focus_client(xmppd, clients, mechanism="PLAIN")
    assert focus.jid == f"focus@auth.{DOMAIN}/focus"
    self_presence, *_ = await focus.join(ROOM, "focus")
    assert {"110", "201"} <= status_codes(self_presence.xml)

    alice, bob = await anonymous(xmppd, clients), await anonymous(xmppd, clients)
    assert alice.jid != bob.jid
    assert alice.jid.partition("@")[2].startswith(f"{DOMAIN}/")  # anonymous logins live on the login domain
    await alice.join(ROOM, "aaaa0001")
    await bob.join(ROOM, "bbbb0002")

    # Everyone sees everyone's real JID (non-anonymous room).
    for observer in (focus, alice, bob):
        for nick, subject in (("focus", focus), ("aaaa0001", alice), ("bbbb0002", bob)):
            pres = await observer.wait_for(from_nick(nick))
            item = muc_item(pres)
            assert item is not None and item.get("jid") == subject.jid, (observer.jid, nick)

    alice.xmpp.send_message(mto=ROOM_JID, mbody="hello room", mtype="groupchat")
    for receiver in (focus, bob):
        msg = await receiver.wait_for(
            lambda m: m.findtext(f"{{{CLIENT}}}body") == "hello room", messages=True
        )
        assert msg.get("from") == f"{ROOM}/aaaa0001"

    # Jingle's path: focus -> room/nick -> the participant's real JID, and the result back.
    seen: list[ET.Element] = []
    answer_jingle(bob, seen)
    jingle = ET.Element("{urn:xmpp:jingle:1}jingle", {"action": "session-initiate", "sid": "s1"})
    reply = await focus.iq(f"{ROOM}/bbbb0002", jingle, iq_type="set")
    assert reply.get("type") == "result" and reply.get("from") == f"{ROOM}/bbbb0002"
    assert seen[0].get("from") == f"{ROOM}/focus"
    ping = await alice.iq(f"{ROOM}/focus", ET.Element("{urn:xmpp:ping}ping"))
    assert ping.get("type") == "result"

    bob.xmpp.plugin["xep_0045"].leave_muc(ROOM_JID, "bbbb0002")
    gone = await alice.wait_for(from_nick("bbbb0002", unavailable=True))
    assert item_attr(gone, "role") == "none"
    assert xmppd.server.stats()["occupants"] == 2

    for client, nick in ((alice, "aaaa0001"), (focus, "focus")):
        client.xmpp.plugin["xep_0045"].leave_muc(ROOM_JID, nick)
    await focus.wait_for(from_nick("focus", unavailable=True))
    assert xmppd.server.stats()["rooms"] == 0


async def test_restricted_room_creation_over_the_wire(xmppd: Xmppd, clients: list[SlixClient]) -> None:
    alice = await anonymous(xmppd, clients)
    from slixmpp.exceptions import PresenceError  # noqa: PLC0415

    with pytest.raises(PresenceError) as refused:
        await alice.join("notyet@conference." + DOMAIN, "aaaa0001")
    assert refused.value.condition == "not-allowed"


async def test_websocket_client_and_tcp_client_share_a_room(xmppd: Xmppd, clients: list[SlixClient]) -> None:
    focus = await focus_client(xmppd, clients)  # SCRAM over plain TCP, as our bridge logs in
    await focus.join(ROOM, "focus")
    ws = await RawWebSocket.connect(xmppd.ws_url)
    try:
        ws_jid = await ws.login_anonymous(DOMAIN)
        local, _, rest = ws_jid.partition("@")
        assert local and rest.startswith(f"{DOMAIN}/")
        await ws.send(
            f'<presence xmlns="{CLIENT}" to="{ROOM}/wwww0001"><x xmlns="{MUC}"/>'
            '<nick xmlns="http://jabber.org/protocol/nick">Web</nick></presence>'
        )
        focus_seen = await ws.recv_until(lambda e: e.get("from") == f"{ROOM}/focus")
        assert item_attr(focus_seen, "jid") == focus.jid
        own = await ws.recv_until(lambda e: e.get("from") == f"{ROOM}/wwww0001")
        assert "110" in status_codes(own)
        await ws.recv_until(lambda e: e.find(f"{{{CLIENT}}}subject") is not None)

        tcp = await anonymous(xmppd, clients)
        await tcp.join(ROOM, "tttt0002")
        web_pres = await tcp.wait_for(from_nick("wwww0001"))
        assert item_attr(web_pres, "jid") == ws_jid
        assert web_pres.findtext("{http://jabber.org/protocol/nick}nick") == "Web"
        tcp_pres = await ws.recv_until(lambda e: e.get("from") == f"{ROOM}/tttt0002")
        assert item_attr(tcp_pres, "jid") == tcp.jid

        await ws.send(
            f'<message xmlns="{CLIENT}" to="{ROOM}" type="groupchat"><body>from the web</body></message>'
        )
        msg = await tcp.wait_for(lambda m: m.findtext(f"{{{CLIENT}}}body") == "from the web", messages=True)
        assert msg.get("from") == f"{ROOM}/wwww0001"
        tcp.xmpp.send_message(mto=ROOM_JID, mbody="from tcp", mtype="groupchat")
        echoed = await ws.recv_until(lambda e: e.findtext(f"{{{CLIENT}}}body") == "from tcp")
        assert echoed.get("from") == f"{ROOM}/tttt0002"

        # An IQ from the focus through the room reaches the browser with from = room/focus.
        jingle_payload = ET.Element("{urn:xmpp:jingle:1}jingle", {"action": "session-initiate", "sid": "w1"})
        pending = asyncio.create_task(focus.iq(f"{ROOM}/wwww0001", jingle_payload, iq_type="set"))
        jingle = await ws.recv_until(lambda e: e.find("{urn:xmpp:jingle:1}jingle") is not None)
        assert jingle.get("from") == f"{ROOM}/focus" and jingle.get("to") == ws_jid
        await ws.send(f'<iq xmlns="{CLIENT}" to="{ROOM}/focus" type="result" id="{jingle.get("id")}"/>')
        answer = await pending
        assert answer.get("type") == "result" and answer.get("from") == f"{ROOM}/wwww0001"

        await ws.send(f'<close xmlns="{FRAMING}"/>')
        closed = await ws.recv_until(lambda e: e.tag == f"{{{FRAMING}}}close")
        assert closed is not None
        await tcp.wait_for(from_nick("wwww0001", unavailable=True))
    finally:
        await ws.close()


async def test_websocket_requires_xmpp_subprotocol(xmppd: Xmppd) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(xmppd.ws_url) as ws:
        msg = await ws.receive(5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 1002
    assert xmppd.server.stats()["websocket_without_xmpp_protocol"] == 1


async def test_bridge_joins_brewery_and_answers_health_checks(
    xmppd: Xmppd, clients: list[SlixClient], bridge: Bridge, colibri2_stand_in: EchoColibri2
) -> None:
    focus = await focus_client(xmppd, clients)
    await focus.join(BREWERY, "focus")
    config = XmppClientConfig(
        hostname="127.0.0.1",
        port=xmppd.port,
        domain=f"auth.{DOMAIN}",
        username="jvb",
        password=PASSWORDS["jvb"],
        muc_jids=[BREWERY],
        use_tls=False,
        presence_interval=0.3,
        region="test-region",
    )
    async with BridgeXmppClient(bridge, config, colibri2_stand_in) as jvb:
        await jvb.wait_joined(timeout=10)
        nick = config.muc_nickname

        def with_stats(pres: ET.Element) -> bool:
            return from_nick(nick)(pres) and pres.find(f"{{{NS_COLIBRI}}}stats") is not None

        pres = await focus.wait_for(with_stats)
        stats = {
            s.get("name"): s.get("value")
            for s in pres.iterfind(f"{{{NS_COLIBRI}}}stats/{{{NS_COLIBRI}}}stat")
        }
        assert stats["region"] == "test-region" and "stress_level" in stats
        item = muc_item(pres)
        real = item.get("jid") if item is not None else None
        assert real is not None and real.startswith(f"jvb@auth.{DOMAIN}/")
        # Our focus asks the bridge's account (the brewery shows real JIDs to the focus alone).
        reply = await focus.iq(real, ET.Element(f"{{{NS_HEALTHCHECK}}}healthcheck"))
        assert reply.get("type") == "result"
        # Through the occupant JID the bridge cannot see who asks (real JIDs are hidden from bridges
        # here), so it refuses: only a sender it can verify drives it.
        reply = await focus.iq(f"{BREWERY}/{nick}", ET.Element(f"{{{NS_HEALTHCHECK}}}healthcheck"))
        assert reply.get("type") == "error" and error_condition(reply) == "forbidden"
        assert jvb.state.xmpp_iqs_refused == 1
    await focus.wait_for(from_nick(nick, unavailable=True))


async def test_starttls_required_with_certificate(tmp_path: Path, clients: list[SlixClient]) -> None:
    cert, key = make_self_signed(tmp_path, DOMAIN)
    config = XmppServerConfig(
        domain=DOMAIN, accounts=ACCOUNTS, components=COMPONENTS, tcp_port=0, tls_cert=cert, tls_key=key
    )
    async for xmppd in serve_xmpp(config):
        jvb = SlixClient(f"jvb@auth.{DOMAIN}", PASSWORDS["jvb"], tls=True, mechanism="PLAIN")
        clients.append(jvb)
        await jvb.connect(xmppd.port)
        await jvb.join(BREWERY, "jvb-tls")
        assert xmppd.server.stats()["tls_established"] == 1

        raw = await RawTcp.connect(xmppd.port)
        (features,) = await raw.open(f"auth.{DOMAIN}")
        starttls = features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls")
        assert starttls is not None and starttls.find("{urn:ietf:params:xml:ns:xmpp-tls}required") is not None
        raw.write(f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGp2YgBqdmItc2VjcmV0</auth>")
        rest = await raw.read_to_eof()
        assert [error_condition(e) for e in rest if e.tag == f"{{{STREAMS}}}error"] == ["policy-violation"]
        await raw.close()


async def test_bad_input_on_one_connection_does_not_disturb_a_room(
    xmppd: Xmppd, clients: list[SlixClient]
) -> None:
    focus = await focus_client(xmppd, clients)
    await focus.join(ROOM, "focus")
    alice = await anonymous(xmppd, clients)
    await alice.join(ROOM, "aaaa0001")

    malformed = await RawTcp.connect(xmppd.port)
    await malformed.login_anonymous(DOMAIN)
    malformed.write("<message><body>broken</bod></message>")
    got = await malformed.read_to_eof()
    assert [error_condition(e) for e in got if e.tag == f"{{{STREAMS}}}error"] == ["not-well-formed"]

    oversized = await RawTcp.connect(xmppd.port)
    await oversized.login_anonymous(DOMAIN)
    oversized.write(f"<presence to='{ROOM}/zzzz'><x xmlns='{MUC}'/><status>{'x' * (2 * MAX_STANZA)}</status>")
    got = await oversized.read_to_eof()
    assert [error_condition(e) for e in got if e.tag == f"{{{STREAMS}}}error"] == ["policy-violation"]

    dtd = await RawTcp.connect(xmppd.port)
    dtd.write("<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY a 'aaaa'>]><stream:stream>")
    got = await dtd.read_to_eof()
    assert [error_condition(e) for e in got if e.tag == f"{{{STREAMS}}}error"] == ["restricted-xml"]

    ws = await RawWebSocket.connect(xmppd.ws_url)
    try:
        await ws.login_anonymous(DOMAIN)
        await ws.send(f'<message xmlns="{CLIENT}"><body>{"y" * (MAX_STANZA + 10)}</body></message>')
        err = await ws.recv_until(lambda e: e.tag == f"{{{STREAMS}}}error")
        assert error_condition(err) == "policy-violation"
        assert (await ws.recv()).tag == f"{{{FRAMING}}}close"
    finally:
        await ws.close()

    for raw in (malformed, oversized, dtd):
        await raw.close()
    focus.xmpp.send_message(mto=ROOM_JID, mbody="still working", mtype="groupchat")
    await alice.wait_for(lambda m: m.findtext(f"{{{CLIENT}}}body") == "still working", messages=True)
    assert alice.xmpp.transport is not None
    stats = xmppd.server.stats()
    assert stats["malformed_xml"] == 1
    assert stats["restricted_xml"] == 1
    assert stats["stanza_too_large"] == 2
    assert stats["occupants"] == 2  # the oversized join never reached the room


async def test_stop_ends_streams_with_system_shutdown(clients: list[SlixClient]) -> None:
    config = XmppServerConfig(domain=DOMAIN, accounts=ACCOUNTS, tcp_port=0)
    server = XmppServer(config)
    await server.start()
    raw = await RawTcp.connect(server.tcp_port)
    try:
        await raw.login_anonymous(DOMAIN)
        await server.stop()
        got = await raw.read_to_eof()
        assert [error_condition(e) for e in got if e.tag == f"{{{STREAMS}}}error"] == ["system-shutdown"]
    finally:
        await raw.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.tcp_port)
