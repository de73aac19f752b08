"""Every Colibri2 error of docs/jitsi-protocol.md 2.5, and malformed requests, through a real Prosody.

A slixmpp client in the brewery plays Jicofo. Each request is one that should produce the error; the reply's
XMPP condition and colibri2 reason are checked as Jicofo reads them. Between the bad requests a live
conference keeps answering updates.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import pytest

from bridge.app import BridgeApp
from bridge.settings import parse_settings
from tests.helpers.jicofo import (
    C2,
    ICE,
    NICK,
    SSMA,
    bridge_toml,
    conference_modify,
    create_endpoint,
    el,
    error_reason,
    result_payload,
)
from tests.helpers.prosody import BREWERY_JID, MucObserver, Prosody

pytestmark = pytest.mark.integration

BRIDGE_JID = f"{BREWERY_JID.lower()}/{NICK}"


@pytest.fixture
async def app(prosody: Prosody, jicofo: MucObserver) -> AsyncIterator[BridgeApp]:
    app = BridgeApp(parse_settings(bridge_toml(prosody), environ={}))
    await app.start()
    try:
        await app.wait_joined(timeout=10)
        await jicofo.wait_presence(
            NICK, where=lambda p: p.find("{http://jitsi.org/protocol/colibri}stats") is not None
        )
        yield app
    finally:
        await app.stop()


def create(meeting: str, endpoint_id: str = "alice", **attrs: str) -> ET.Element:
    request = conference_modify(meeting, create="true", **attrs)
    create_endpoint(request, endpoint_id)
    return request


def join(meeting: str, endpoint_id: str) -> ET.Element:
    request = conference_modify(meeting)
    create_endpoint(request, endpoint_id)
    return request


def bare_endpoint_create(meeting: str, endpoint_id: str, **attrs: str) -> tuple[ET.Element, ET.Element]:
    """A create for `endpoint_id` with only what the caller adds (no capability, no transport)."""
    request = conference_modify(meeting)
    ep = el(request, C2, "endpoint", id=endpoint_id, create="true", **attrs)
    return request, ep


class Live:
    """A conference that must keep working whatever the other requests do."""

    def __init__(self, jicofo: MucObserver) -> None:
        self.jicofo = jicofo
        self.meeting = str(uuid.uuid4())
        self.updates = 0

    async def start(self) -> None:
        result_payload(await self.jicofo.iq(BRIDGE_JID, create(self.meeting, "steady")))

    async def check(self) -> None:
        self.updates += 1
        request = conference_modify(self.meeting)
        ep = el(request, C2, "endpoint", id="steady", stats_id="steady-stats")
        el(ep, C2, "initial-last-n", value=str(self.updates))
        result_payload(await self.jicofo.iq(BRIDGE_JID, request))


async def expect(
    jicofo: MucObserver, live: Live, request: ET.Element, condition: str, reason: str | None
) -> ET.Element:
    reply = await jicofo.iq(BRIDGE_JID, request)
    assert error_reason(reply) == (condition, reason), ET.tostring(request, encoding="unicode")
    await live.check()
    return reply


async def test_every_section_2_5_error_over_xmpp(app: BridgeApp, jicofo: MucObserver) -> None:
    live = Live(jicofo)
    await live.start()
    meeting = str(uuid.uuid4())

    # non-create request, meeting-id unknown
    await expect(jicofo, live, join(meeting, "bob"), "item-not-found", "conference_not_found")

    # create but meeting-id exists
    result_payload(await jicofo.iq(BRIDGE_JID, create(meeting, "alice", name="room1@conference.meet.test")))
    await expect(jicofo, live, create(meeting, "carol"), "conflict", "conference_already_exists")

    # endpoint id unknown (non-expire update): the reason and an <endpoint id> child
    request = conference_modify(meeting)
    ep = el(request, C2, "endpoint", id="nobody")
    el(ep, C2, "initial-last-n", value="3")
    reply = await expect(jicofo, live, request, "item-not-found", "unknown_endpoint")
    child = reply.find(f"{{jabber:client}}error/{{{C2}}}endpoint")
    assert child is not None and child.get("id") == "nobody"
    # ... while expire and force-mute for unknown endpoints are ignored, as JVB does
    request = conference_modify(meeting)
    el(request, C2, "endpoint", id="nobody", expire="true")
    result_payload(await jicofo.iq(BRIDGE_JID, request))

    # unsupported combination: two endpoints in one non-expire request
    request = conference_modify(meeting)
    create_endpoint(request, "d1")
    create_endpoint(request, "d2")
    await expect(jicofo, live, request, "feature-not-implemented", "feature_not_implemented")
    # relays are disabled on this bridge
    request = conference_modify(meeting)
    el(request, C2, "relay", id="jvb-2", create="true")
    await expect(jicofo, live, request, "feature-not-implemented", "feature_not_implemented")
    # endpoints and relays mixed
    request = join(meeting, "e1")
    el(request, C2, "relay", id="jvb-2", create="true")
    await expect(jicofo, live, request, "feature-not-implemented", "feature_not_implemented")
    # SCTP while SCTP is disabled
    request = join(meeting, "e2")
    transport = request.find(f"{{{C2}}}endpoint/{{{C2}}}transport")
    assert transport is not None
    el(transport, C2, "sctp", role="server", port="5000")
    await expect(jicofo, live, request, "feature-not-implemented", "feature_not_implemented")

    # create existing endpoint: conflict without a reason
    await expect(jicofo, live, join(meeting, "alice"), "conflict", None)

    # bad-request: create endpoint without transport
    request, ep = bare_endpoint_create(meeting, "f1")
    el(ep, C2, "capability", name="source-names")
    await expect(jicofo, live, request, "bad-request", None)
    # ... without the source-names capability
    request, ep = bare_endpoint_create(meeting, "f2")
    el(ep, C2, "transport", ice_controlling="true")
    await expect(jicofo, live, request, "bad-request", None)
    # ... sources for a visitor
    request, ep = bare_endpoint_create(meeting, "f3", muc_role="visitor")
    el(ep, C2, "capability", name="source-names")
    el(ep, C2, "transport", ice_controlling="true")
    ms = el(el(ep, C2, "sources"), C2, "media-source", type="audio", id="f3-a0")
    el(ms, SSMA, "source", ssrc="1234", name="f3-a0")
    await expect(jicofo, live, request, "bad-request", None)
    # ... a conference name that is not a JID
    await expect(jicofo, live, create(str(uuid.uuid4()), name="not a jid@@/"), "bad-request", None)
    # ... a bad SCTP port, on a bridge with SCTP enabled
    app.colibri2.sctp_enabled = True
    try:
        request = join(meeting, "e3")
        transport = request.find(f"{{{C2}}}endpoint/{{{C2}}}transport")
        assert transport is not None
        el(transport, C2, "sctp", role="server", port="5001")
        await expect(jicofo, live, request, "bad-request", None)
    finally:
        app.colibri2.sctp_enabled = False

    # None of the refused requests left anything behind.
    conference = app.bridge.conference_by_meeting(meeting)
    assert conference is not None and set(conference.endpoints) == {"alice"}

    # create while in graceful shutdown (last: it refuses every create from now on)
    app.lifecycle.begin_shutdown(graceful=True)
    await expect(jicofo, live, create(str(uuid.uuid4())), "service-unavailable", "graceful_shutdown")


def _malformed() -> list[tuple[str, ET.Element]]:
    cases: list[tuple[str, ET.Element]] = []
    cases.append(("no meeting-id", ET.Element(f"{{{C2}}}conference-modify", {"create": "true"})))
    cases.append(("blank meeting-id", conference_modify("  ", create="true")))
    cases.append(("create is not a boolean", conference_modify(str(uuid.uuid4()), create="maybe")))
    request = conference_modify(str(uuid.uuid4()), create="true")
    el(request, C2, "endpoint", create="true")
    cases.append(("endpoint without id", request))
    request = create(str(uuid.uuid4()))
    ep = request.find(f"{{{C2}}}endpoint")
    assert ep is not None
    el(ep, C2, "force-mute", audio="perhaps")
    cases.append(("force-mute not a boolean", request))
    request = create(str(uuid.uuid4()))
    ep = request.find(f"{{{C2}}}endpoint")
    assert ep is not None
    el(ep, C2, "initial-last-n", value="many")
    cases.append(("initial-last-n not a number", request))
    request = create(str(uuid.uuid4()))
    transport = request.find(f"{{{C2}}}endpoint/{{{C2}}}transport")
    assert transport is not None
    ice = el(transport, ICE, "transport", ufrag="u", pwd="p" * 22)
    el(ice, ICE, "candidate", component="1", foundation="1", generation="0", id="c", ip="127.0.0.1",
        network="0", port="not-a-port", priority="1", protocol="udp", type="host")  # fmt: skip
    cases.append(("candidate port not a number", request))
    request = create(str(uuid.uuid4()))
    sources = request.find(f"{{{C2}}}endpoint/{{{C2}}}sources")
    assert sources is not None
    ms = el(sources, C2, "media-source", type="audio", id="x-a0")
    el(ms, SSMA, "source", ssrc="-5", name="x-a0")
    cases.append(("negative ssrc", request))
    # Id bounds (colibri2/model.py): URL-safe, bounded meeting and endpoint ids, bounded stats-id.
    cases.append(("meeting-id with a path", create(f"{uuid.uuid4()}/../x")))
    cases.append(("endpoint id too long", create(str(uuid.uuid4()), "e" * 65)))
    request = create(str(uuid.uuid4()))
    ep = request.find(f"{{{C2}}}endpoint")
    assert ep is not None
    ep.set("stats-id", "Ada " * 100)
    cases.append(("stats-id too long", request))
    return cases


@pytest.mark.parametrize("case", range(len(_malformed())))
async def test_malformed_colibri2_gets_bad_request_and_others_keep_serving(
    app: BridgeApp, jicofo: MucObserver, case: int
) -> None:
    live = Live(jicofo)
    await live.start()
    what, request = _malformed()[case]
    reply = await jicofo.iq(BRIDGE_JID, request)
    condition, _reason = error_reason(reply)
    assert condition == "bad-request", what
    text = reply.findtext("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}text")
    assert text, f"{what}: the error says what was wrong"
    await live.check()
    assert len(app.bridge.conferences) == 1, f"{what} left a conference behind"
