"""The bridge channel over colibri websockets, end to end on a real BridgeApp (sections 2.4, 3.2, 4).

Conferences and endpoints are made through the Colibri2 JSON API on the private port; the sockets connect to
the URLs the bridge advertised in its answers, exactly as a client would.
"""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bridge import Bridge
from bridge.app import BridgeApp
from bridge.channel import BridgeChannels, Send
from bridge.public_http import ColibriWebSockets, create_public_app
from bridge.settings import parse_settings
from bridge.xmpp_core import NS_COLIBRI, NS_COLIBRI2
from colibri2.json import conference_modified_from_json, conference_modify_to_json
from colibri2.model import ConferenceModify, Endpoint, MediaSource, SourceDesc, Transport

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent.parent / "data" / "colibri2"
MEETING = "4b1e0c6a-ws-test"
TOML = """
[videobridge.ice.udp]
port = 0
bind-addresses = ["127.0.0.1"]

[videobridge.http-servers.private]
host = "127.0.0.1"
port = 0

[videobridge.http-servers.public]
host = "127.0.0.1"
port = 0

[videobridge.websockets]
enabled = true
server-id = "jvb-7"
keepalive-ping-interval = "1 second"
"""

WS = aiohttp.ClientWebSocketResponse


@dataclass
class Setup:
    app: BridgeApp
    http: aiohttp.ClientSession
    base: str

    async def modify(self, request: ConferenceModify, *, patch: bool = False) -> dict[str, Any]:
        body = conference_modify_to_json(request)
        if patch:
            url = f"{self.base}/colibri/v2/conferences/{request.meeting_id}"
            response = await self.http.patch(url, json=body)
        else:
            response = await self.http.post(f"{self.base}/colibri/v2/conferences", json=body)
        async with response:
            answer: dict[str, Any] = await response.json()
            assert response.status == 200, answer
            return answer

    async def web_sockets(self, endpoint_id: str, *, conference: bool = False) -> tuple[str, ...]:
        """Creates the endpoint (and the conference when asked); returns its advertised web-socket URLs."""
        ep = Endpoint(
            endpoint_id,
            create=True,
            capabilities=("source-names",),
            transport=Transport(ice_controlling=True),
        )
        answer = await self.modify(
            ConferenceModify(MEETING, create=conference, endpoints=(ep,)), patch=not conference
        )
        (ep_answer,) = conference_modified_from_json(answer).endpoints
        assert ep_answer.transport is not None and ep_answer.transport.ice is not None
        return ep_answer.transport.ice.web_sockets

    async def create_endpoint(self, endpoint_id: str, *, conference: bool = False) -> str:
        (url,) = await self.web_sockets(endpoint_id, conference=conference)
        return url

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.base}/colibri/stats") as r:
            body: dict[str, Any] = await r.json()
            return body


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    async with BridgeApp(parse_settings(TOML, environ={})) as app, aiohttp.ClientSession() as http:
        yield Setup(app, http, f"http://127.0.0.1:{app.http_port}")


async def next_json(ws: WS, timeout: float = 5.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    body: dict[str, Any] = json.loads(msg.data)
    return body


async def connect(http: aiohttp.ClientSession, url: str) -> tuple[WS, list[dict[str, Any]]]:
    """Opens the socket and reads the greeting: ServerHello, then ForwardedSources."""
    ws = await http.ws_connect(url)
    greeting = [await next_json(ws), await next_json(ws)]
    return ws, greeting


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def expect_closed(ws: WS, code: int) -> None:
    msg = await ws.receive(timeout=10)
    assert msg.type is aiohttp.WSMsgType.CLOSE, (msg.type, msg.data)
    assert msg.data == code, msg.extra
    assert ws.closed or (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSED


async def test_urls_point_at_the_public_server_with_conference_id_and_ice_pwd(setup: Setup) -> None:
    url = await setup.create_endpoint("a", conference=True)
    conference = setup.app.bridge.conference_by_meeting(MEETING)
    assert conference is not None
    pwd = conference.endpoints["a"].pwd
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("ws", f"127.0.0.1:{setup.app.public_http_port}")
    # conf-id is the bridge's own id, not the meeting-id.
    assert parts.path == f"/colibri-ws/jvb-7/{conference.id}/a" and conference.id != MEETING
    assert parse_qs(parts.query) == {"pwd": [pwd]}


async def test_xmpp_answer_carries_the_web_socket_element(setup: Setup) -> None:
    """The Jicofo path: <conference-modify> XML in, <web-socket url> inside the ICE transport out."""
    request = ET.fromstring((DATA / "create-conference.request.xml").read_bytes())
    modify = request.find(f"{{{NS_COLIBRI2}}}conference-modify")
    assert modify is not None
    answer = await setup.app.handle_colibri2(modify)
    (element,) = answer.iter(f"{{{NS_COLIBRI}}}web-socket")
    conference = setup.app.bridge.conference_by_meeting(modify.get("meeting-id", ""))
    assert conference is not None
    (endpoint,) = conference.endpoints.values()
    ws, greeting = await connect(setup.http, element.get("url", ""))
    assert greeting[0] == {"colibriClass": "ServerHello"}
    assert setup.app.web_sockets is not None and setup.app.web_sockets.connected(conference.id, endpoint.id)
    await ws.close()


async def test_two_endpoints_talk_over_the_bridge_channel(setup: Setup) -> None:
    url_a = await setup.create_endpoint("a", conference=True)
    url_b = await setup.create_endpoint("b")
    http = setup.http
    ws_a, greeting_a = await connect(http, url_a)
    ws_b, greeting_b = await connect(http, url_b)
    for greeting in (greeting_a, greeting_b):
        assert greeting == [
            {"colibriClass": "ServerHello"},  # no version: videobridge.version.announce is false
            {"colibriClass": "ForwardedSources", "forwardedSources": []},
        ]

    # ClientHello is answered with ServerHello.
    await ws_a.send_json({"colibriClass": "ClientHello"})
    assert await next_json(ws_a) == {"colibriClass": "ServerHello"}

    # Unicast a -> b, with `from` added and the other fields kept.
    await ws_a.send_json(
        {"colibriClass": "EndpointMessage", "to": "b", "msgPayload": {"type": "chat", "n": 1}, "x": [1]}
    )
    assert await next_json(ws_b) == {
        "colibriClass": "EndpointMessage",
        "to": "b",
        "msgPayload": {"type": "chat", "n": 1},
        "x": [1],
        "from": "a",
    }
    # Broadcast from b ("" and absent `to`) reaches a, not b itself.
    await ws_b.send_json({"colibriClass": "EndpointMessage", "to": "", "msgPayload": {"n": 2}})
    await ws_b.send_json({"colibriClass": "EndpointMessage", "msgPayload": {"n": 3}})
    got = [await next_json(ws_a), await next_json(ws_a)]
    assert [(m["from"], m["msgPayload"]["n"]) for m in got] == [("b", 2), ("b", 3)]
    # EndpointStats go to the others with `from`.
    await ws_a.send_json({"colibriClass": "EndpointStats", "bitrate": {"upload": 100}})
    assert await next_json(ws_b) == {"colibriClass": "EndpointStats", "bitrate": {"upload": 100}, "from": "a"}

    # Malformed JSON and an unknown class from a: counted, a's and b's sockets stay open.
    await ws_a.send_str("{this is not json")
    await ws_a.send_json({"colibriClass": "NoSuchClass"})
    await ws_a.send_json({"colibriClass": "EndpointMessage", "to": "b", "msgPayload": {"after": "errors"}})
    assert (await next_json(ws_b))["msgPayload"] == {"after": "errors"}
    await ws_b.send_json({"colibriClass": "EndpointMessage", "to": "a", "msgPayload": {"still": "here"}})
    assert (await next_json(ws_a))["msgPayload"] == {"still": "here"}
    stats = setup.app.channels.stats
    assert stats.errors == {"malformed_json": 1, "unknown_class": 1}

    # b starts sending video: a is told which sources it gets (video only: audio is not in the set).
    await setup.modify(
        ConferenceModify(
            MEETING,
            endpoints=(
                Endpoint(
                    "b",
                    sources=(
                        MediaSource("audio", "b-a0", sources=(SourceDesc(ssrc=1111, name="b-a0"),)),
                        MediaSource("video", "b-v0", sources=(SourceDesc(ssrc=2222, name="b-v0"),)),
                    ),
                ),
            ),
        ),
        patch=True,
    )
    assert await next_json(ws_a) == {"colibriClass": "ForwardedSources", "forwardedSources": ["b-v0"]}
    # ... and b how much of its video anyone wants: a asked for nothing, so jvb's default 180p.
    assert await next_json(ws_b) == {
        "colibriClass": "SenderSourceConstraints",
        "sourceName": "b-v0",
        "maxHeight": 180,
    }

    # Policy state the allocator reads is kept.
    await ws_a.send_json(
        {"colibriClass": "ReceiverVideoConstraints", "lastN": 1, "selectedSources": ["b-v0"]}
    )
    await ws_a.send_json({"colibriClass": "ClientHello"})
    assert await next_json(ws_a) == {"colibriClass": "ServerHello"}  # the constraints were handled before
    conference = setup.app.bridge.conference_by_meeting(MEETING)
    assert conference is not None
    # On the registry's endpoint, the one place they are kept.
    assert conference.endpoints["a"].last_n == 1
    assert conference.endpoints["a"].video_constraints.selected_sources == ("b-v0",)

    # Expiring b closes b's socket and a stops getting b's source.
    await setup.modify(ConferenceModify(MEETING, endpoints=(Endpoint("b", expire=True),)), patch=True)
    await expect_closed(ws_b, 1001)
    assert await next_json(ws_a) == {"colibriClass": "ForwardedSources", "forwardedSources": []}

    # Both counters are in /colibri/stats (and presence, from the same function) and in /metrics.
    # Received: 2 ClientHello, 5 EndpointMessage, 1 EndpointStats, 2 bad frames, 1 constraints.
    # Sent: 2 greetings of 2, 2 ServerHello, 5 EndpointMessage, 1 EndpointStats, 2 ForwardedSources,
    # 1 SenderSourceConstraints.
    body = await setup.stats()
    assert body["total_colibri_web_socket_messages_received"] == stats.messages_received == 11
    assert body["total_colibri_web_socket_messages_sent"] == stats.messages_sent == 15
    async with setup.http.get(f"{setup.base}/metrics") as r:
        families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    (sample,) = families["sluice_colibri_web_socket_messages_received"].samples
    assert sample.value == 11
    errors = {s.labels["reason"]: s.value for s in families["sluice_colibri_web_socket_errors"].samples}
    assert errors == {"malformed_json": 1, "unknown_class": 1}

    # Expiring the conference closes the last socket.
    await setup.modify(ConferenceModify(MEETING, expire=True), patch=True)
    await expect_closed(ws_a, 1001)
    assert setup.app.channels.conference(conference.id) is None


async def test_refusals_before_the_upgrade(setup: Setup) -> None:
    url = await setup.create_endpoint("a", conference=True)
    good = urlsplit(url)
    conference = setup.app.bridge.conference_by_meeting(MEETING)
    assert conference is not None
    origin = f"{good.scheme}://{good.netloc}"
    cases = [
        (f"{origin}/colibri-ws/jvb-7/{conference.id}/a?pwd=wrong", 403),
        (f"{origin}/colibri-ws/jvb-7/{conference.id}/a", 403),
        (f"{origin}/colibri-ws/jvb-7/{conference.id}/nobody?{good.query}", 404),
        (f"{origin}/colibri-ws/jvb-7/ffffffff/a?{good.query}", 404),
        (f"{origin}/colibri-ws/default-id/{conference.id}/a?{good.query}", 404),
    ]
    for bad, status in cases:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await setup.http.ws_connect(bad)
        assert info.value.status == status, bad
    # A plain GET of the right URL is not an upgrade.
    async with setup.http.get(url.replace("ws://", "http://", 1)) as r:
        assert r.status == 400 and (await r.json())["reason"] == "not_websocket"
    assert setup.app.channels.stats.refused == {
        "bad_pwd": 2,
        "unknown_endpoint": 1,
        "unknown_conference": 1,
        "unknown_server_id": 1,
        "not_websocket": 1,
    }
    # None of that disturbed the real endpoint.
    ws, greeting = await connect(setup.http, url)
    assert greeting[0] == {"colibriClass": "ServerHello"}
    await ws.close()


async def test_a_second_socket_replaces_the_first(setup: Setup) -> None:
    url_a = await setup.create_endpoint("a", conference=True)
    url_b = await setup.create_endpoint("b")
    first, _ = await connect(setup.http, url_a)
    second, _ = await connect(setup.http, url_a)
    await expect_closed(first, 1000)
    ws_b, _ = await connect(setup.http, url_b)
    await ws_b.send_json({"colibriClass": "EndpointMessage", "to": "a", "msgPayload": {}})
    assert (await next_json(second))["from"] == "b"
    assert setup.app.channels.stats.replaced == 1
    # b's socket closing is not a's business; a message to b now is dropped and counted.
    await ws_b.close()
    conference = setup.app.bridge.conference_by_meeting(MEETING)
    assert conference is not None and setup.app.web_sockets is not None
    await until(lambda: not setup.app.web_sockets.connected(conference.id, "b"))  # type: ignore[union-attr]
    await second.send_json({"colibriClass": "EndpointMessage", "to": "b", "msgPayload": {}})
    await second.send_json({"colibriClass": "ClientHello"})
    assert await next_json(second) == {"colibriClass": "ServerHello"}
    assert setup.app.channels.stats.dropped["no_socket"] == 1
    await second.close()


async def test_keepalive_pings_are_sent_and_an_answered_socket_stays_open(setup: Setup) -> None:
    url = await setup.create_endpoint("a", conference=True)
    ws = await setup.http.ws_connect(url, autoping=False)
    assert (await next_json(ws))["colibriClass"] == "ServerHello"
    assert (await next_json(ws))["colibriClass"] == "ForwardedSources"
    for _ in range(2):  # keepalive-ping-interval is 1 second in TOML
        msg = await ws.receive(timeout=3)
        assert msg.type is aiohttp.WSMsgType.PING
        await ws.pong(msg.data)
    await ws.send_json({"colibriClass": "ClientHello"})
    assert await next_json(ws) == {"colibriClass": "ServerHello"}
    await ws.close()

    # A peer that never answers a ping is closed by the bridge, and its endpoint counts as disconnected.
    silent = await setup.http.ws_connect(await setup.create_endpoint("b"), autoping=False)
    deadline = asyncio.get_running_loop().time() + 10
    while (msg := await silent.receive(timeout=10)).type not in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSED,
    ):
        assert asyncio.get_running_loop().time() < deadline
    conference = setup.app.bridge.conference_by_meeting(MEETING)
    assert conference is not None and setup.app.web_sockets is not None
    await until(lambda: not setup.app.web_sockets.connected(conference.id, "b"))  # type: ignore[union-attr]


async def test_stopping_the_app_closes_the_sockets() -> None:
    async with BridgeApp(parse_settings(TOML, environ={})) as app, aiohttp.ClientSession() as http:
        setup = Setup(app, http, f"http://127.0.0.1:{app.http_port}")
        ws, _ = await connect(http, await setup.create_endpoint("a", conference=True))
        await app.stop()
        await expect_closed(ws, 1001)
        assert app.public_http_port is None and app.colibri2.web_socket_bases == ()


async def test_websockets_disabled_means_no_public_server_and_no_urls() -> None:
    settings = parse_settings(TOML.replace("enabled = true", "enabled = false"), environ={})
    async with BridgeApp(settings) as app, aiohttp.ClientSession() as http:
        setup = Setup(app, http, f"http://127.0.0.1:{app.http_port}")
        assert await setup.web_sockets("a", conference=True) == ()
        assert app.public_http_port is None
        assert (await setup.stats())["total_colibri_web_socket_messages_received"] == 0


async def test_domains_and_tls_shape_the_advertised_urls() -> None:
    toml = TOML.replace(
        'server-id = "jvb-7"', 'server-id = "jvb-7"\ndomains = ["meet.example:443", "b.example"]\ntls = true'
    )
    async with BridgeApp(parse_settings(toml, environ={})) as app, aiohttp.ClientSession() as http:
        setup = Setup(app, http, f"http://127.0.0.1:{app.http_port}")
        urls = await setup.web_sockets("a", conference=True)
        conference = app.bridge.conference_by_meeting(MEETING)
        assert conference is not None
        prefixes = [u.split("?")[0] for u in urls]
        assert prefixes == [
            f"wss://meet.example:443/colibri-ws/jvb-7/{conference.id}/a",
            f"wss://b.example/colibri-ws/jvb-7/{conference.id}/a",
        ]


async def test_a_slow_receiver_loses_messages_beyond_its_queue_not_the_others(bridge: Bridge) -> None:
    """ColibriWebSockets alone over a Bridge driven through its Python API (no Colibri2 at all)."""
    channels = BridgeChannels(bridge)
    sockets = ColibriWebSockets(bridge, channels, server_id="s", queue_size=2)
    conference = bridge.create_conference(meeting_id="m")
    a = conference.create_endpoint("a")
    async with TestClient(TestServer(create_public_app(sockets), host="127.0.0.1")) as client:
        ws = await client.ws_connect(f"/colibri-ws/s/{conference.id}/a?pwd={quote(a.pwd, safe='')}")
        assert (await next_json(ws))["colibriClass"] == "ServerHello"
        assert await next_json(ws) == {"colibriClass": "ForwardedSources", "forwardedSources": []}
        # Three sends in one go (no chance for the writer to run between them): the third does not fit.
        sockets.apply(conference.id, [Send("a", f'{{"n":{i}}}') for i in range(3)])
        assert [await next_json(ws), await next_json(ws)] == [{"n": 0}, {"n": 1}]
        assert channels.stats.dropped == {"queue_full": 1}
        # An endpoint created later is picked up when its socket connects.
        b = conference.create_endpoint("b")
        ws_b = await client.ws_connect(f"/colibri-ws/s/{conference.id}/b?pwd={quote(b.pwd, safe='')}")
        assert (await next_json(ws_b))["colibriClass"] == "ServerHello"
        assert (await next_json(ws_b))["colibriClass"] == "ForwardedSources"
        await ws_b.send_json({"colibriClass": "EndpointMessage", "to": "a", "msgPayload": {}})
        assert (await next_json(ws))["from"] == "b"
        # Closing the conference in the registry: the next sync closes both sockets.
        conference.close()
        sockets.apply(conference.id, channels.sync(conference.id))
        await expect_closed(ws, 1001)
        await expect_closed(ws_b, 1001)
