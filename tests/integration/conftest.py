"""Fixtures for tests against a real Prosody: the server, the bridge's XMPP client, a Jicofo stand-in."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge import Bridge
from bridge.xmpp import BridgeXmppClient
from bridge.xmpp_core import NS_COLIBRI2, XmppClientConfig
from tests.helpers.prosody import AUTH_DOMAIN, BREWERY_JID, JVB_USER, MucObserver, Prosody


@pytest.fixture
def prosody(tmp_path: Path) -> Iterator[Prosody]:
    """A real Prosody on free loopback ports (see tests/helpers/prosody.py); stopped by PID at teardown."""
    server = Prosody.create(tmp_path / "prosody")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class EchoColibri2:
    """Stands in for the Colibri2 handler: records each request, answers `<conference-modified>`.

    A non-create request for meeting-id `unknown` gets the section 2.5 `conference_not_found` error instead.
    """

    def __init__(self) -> None:
        self.requests: list[ET.Element] = []

    async def __call__(self, request: ET.Element) -> ET.Element:
        self.requests.append(request)
        if request.get("meeting-id") == "unknown" and request.get("create") != "true":
            error = ET.Element("{jabber:client}error", {"type": "cancel"})
            ET.SubElement(error, "{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found")
            ET.SubElement(error, f"{{{NS_COLIBRI2}}}error", {"reason": "conference_not_found"})
            return error
        return ET.Element(
            f"{{{NS_COLIBRI2}}}conference-modified",
            {k: v for k, v in request.attrib.items() if k in ("meeting-id", "name")},
        )


@pytest.fixture
def colibri2_stand_in() -> EchoColibri2:
    return EchoColibri2()


@pytest.fixture
async def bridge_xmpp(
    bridge: Bridge, prosody: Prosody, colibri2_stand_in: EchoColibri2
) -> AsyncIterator[BridgeXmppClient]:
    """The bridge logged in as jvb@auth.meet.test and joined to the brewery; fast presence and backoff."""
    config = XmppClientConfig(
        hostname="127.0.0.1",
        port=prosody.c2s_port,
        domain=AUTH_DOMAIN,
        username=JVB_USER,
        password=prosody.jvb_password,
        muc_jids=[BREWERY_JID],
        use_tls=False,
        presence_interval=0.3,
        reconnect_min=0.2,
        reconnect_max=1.0,
        region="test-region",
        relay_id="jvb-test",
    )
    client = BridgeXmppClient(bridge, config, colibri2_stand_in)
    await client.start()
    try:
        await client.wait_joined(timeout=10)
        yield client
    finally:
        await client.stop()


@pytest.fixture
async def jicofo(prosody: Prosody) -> AsyncIterator[MucObserver]:
    """An anonymous client present in the brewery, as Jicofo is."""
    observer = MucObserver(prosody)
    await observer.start()
    try:
        yield observer
    finally:
        await observer.stop()
