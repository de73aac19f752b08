"""The private HTTP API against a real Bridge, served by aiohttp on 127.0.0.1 (protocol 2.7, 3.2-3.4)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bridge import Bridge
from bridge.colibri2_handler import Colibri2Handler
from bridge.http import LOOPBACK_HOSTS, create_private_app, private_host_names
from bridge.lifecycle import Lifecycle, LifecycleConfig
from bridge.load import LoadSampler
from bridge.xmpp_core import BridgeState
from colibri2 import xml as cxml
from colibri2.json import conference_modify_to_json

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent.parent / "data" / "colibri2"
MEETING = "8f1c2a4e-5d6b-4c3a-9e8f-0a1b2c3d4e5f"
JSON = {"Content-Type": "application/json"}
TOKEN = "Zm9vYmFyYmF6cXV4cXV1eA-_"

#: jvb's default stats-filter whitelist (section 1.3), minus the optional region/relay_id/release.
PRESENCE_KEYS = {
    "average_participant_stress",
    "current_timestamp",
    "drain",
    "graceful_shutdown",
    "healthy",
    "shutting_down",
    "stress_level",
    "version",
}


@dataclass
class Api:
    client: TestClient[Any, Any]
    bridge: Bridge
    handler: Colibri2Handler
    state: BridgeState
    sampler: LoadSampler
    lifecycle: Lifecycle


@pytest.fixture
async def api(bridge: Bridge) -> AsyncIterator[Api]:
    state = BridgeState()
    handler = Colibri2Handler(bridge, shutdown=state)
    lifecycle = Lifecycle(bridge, state, LifecycleConfig(shutting_down_delay=0.1))
    sampler = LoadSampler()
    app = create_private_app(bridge, handler, lifecycle, sampler, version="1.2.3")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Api(client, bridge, handler, lifecycle.state, sampler, lifecycle)
    await lifecycle.stop()


def recorded_json(name: str) -> dict[str, Any]:
    return conference_modify_to_json(cxml.parse_conference_modify((DATA / name).read_bytes()))


def create_request(meeting_id: str, endpoint_id: str = "ep1") -> dict[str, Any]:
    return {
        "meeting-id": meeting_id,
        "create": True,
        "endpoints": [
            {
                "id": endpoint_id,
                "create": True,
                "capabilities": ["source-names"],
                "transport": {"ice-controlling": True},
            }
        ],
    }


async def test_health_and_version(api: Api) -> None:
    resp = await api.client.get("/about/health")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.read() == b""

    resp = await api.client.get("/about/version")
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "Sluice" and body["version"] == "1.2.3" and body["os"]


async def test_health_is_500_with_a_reason_when_the_core_does_not_answer() -> None:
    stopped = Bridge()  # never started: the native core cannot answer get_stats
    state = BridgeState()
    handler = Colibri2Handler(stopped, shutdown=state)
    lifecycle = Lifecycle(stopped, state, LifecycleConfig())
    app = create_private_app(stopped, handler, lifecycle, LoadSampler(), version="x")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/about/health")
        assert resp.status == 500
        body = await resp.json()
        assert body["healthy"] is False and "not started" in body["reason"]
        stats = await (await client.get("/colibri/stats")).json()
        assert stats["healthy"] is False
        metrics = await (await client.get("/metrics")).text()
        assert "sluice_healthy 0.0" in metrics


Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


async def _metrics(api: Api) -> Samples:
    resp = await api.client.get("/metrics")
    assert resp.status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_metrics_parse_and_follow_real_traffic(api: Api) -> None:
    resp = await api.client.post("/colibri/v2/conferences", json=create_request("m-metrics"))
    assert resp.status == 200
    # Stray datagrams from an address the bridge does not know: each one is a typed drop.
    host, port = api.bridge.local_addresses()[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(5):
            sock.sendto(b"\x80" + b"\x00" * 20, (host, port))
    api.sampler.update(time.monotonic() - 1.0, {"total": {"packets_in": 0}})
    api.sampler.update(time.monotonic(), await api.bridge.get_stats())

    deadline = time.monotonic() + 5.0
    while True:
        m = await _metrics(api)
        if m["sluice_packets_received_total"][()] >= 5 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert m["sluice_packets_received_total"][()] >= 5
    assert sum(m["sluice_packets_dropped_total"].values()) >= 5
    assert all(labels[0][0] == "reason" for labels in m["sluice_packets_dropped_total"])
    assert m["sluice_conferences"][()] == 1 and m["sluice_endpoints"][()] == 1
    assert m["sluice_stress_level"][()] == pytest.approx(api.sampler.current.stress_level)
    assert m["sluice_healthy"][()] == 1
    assert {"ice", "consent"} <= {dict(k)["cause"] for k in m["sluice_transport_failures_total"]}
    for name in ("sluice_bytes_sent_total", "sluice_seam_commands_total", "sluice_drain"):
        assert name in m
    # The five datagrams came in through recvmmsg: at least one call, and the packets counted.
    assert m["sluice_io_syscalls_total"][(("op", "recvmmsg"),)] >= 1
    assert m["sluice_io_packets_total"][(("op", "recvmmsg"),)] >= 5

    resp = await api.client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.content_type == "application/openmetrics-text"
    assert (await resp.text()).rstrip().endswith("# EOF")


async def test_colibri_stats_has_the_presence_keys(api: Api) -> None:
    await api.client.post("/colibri/v2/conferences", json=create_request("m-stats", "a"))
    resp = await api.client.patch(
        "/colibri/v2/conferences/m-stats", json=create_request("ignored", "b") | {"create": False}
    )
    assert resp.status == 200
    stats = await (await api.client.get("/colibri/stats")).json()
    assert stats.keys() >= PRESENCE_KEYS
    assert stats["healthy"] is True and stats["version"] == "1.2.3"
    assert (stats["conferences"], stats["endpoints"], stats["largest_conference"]) == (1, 2, 2)
    assert (stats["drain"], stats["graceful_shutdown"], stats["shutting_down"]) == (False, False, False)
    assert isinstance(stats["total_packets_received"], int)
    assert abs(stats["current_timestamp"] - time.time() * 1000) < 60_000


async def test_colibri2_json_flow_create_update_get_expire(api: Api) -> None:
    resp = await api.client.post(
        "/colibri/v2/conferences", json=recorded_json("create-conference.request.xml")
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    (endpoint,) = body["endpoints"]
    ice = endpoint["transport"]["transport"]
    local = api.bridge.conferences.popitem()[1].endpoints["abcd1234"].local_description()
    assert (ice["ufrag"], ice["pwd"]) == (local.ufrag, local.pwd)
    assert ice["fingerprints"][0]["setup"] == "actpass"
    assert [c["port"] for c in ice["candidates"]] == [c.port for c in local.candidates]
    assert {s["id"] for s in body["sources"]} == {"jvb-a0", "jvb-v0"}

    # The path's meeting-id wins; the body's is ignored.
    update = recorded_json("update-endpoint.request.xml") | {"meeting-id": "elsewhere"}
    resp = await api.client.patch(f"/colibri/v2/conferences/{MEETING}", json=update)
    assert resp.status == 200, await resp.text()
    conference = api.bridge.conference_by_meeting(MEETING)
    assert conference is not None and conference.endpoints["abcd1234"].remote is not None

    listing = await (await api.client.get("/colibri/v2/conferences")).json()
    assert [c["meeting-id"] for c in listing["conferences"]] == [MEETING]
    one = await (await api.client.get(f"/colibri/v2/conferences/{MEETING}")).json()
    (ep,) = one["endpoints"]
    assert (ep["id"], ep["stats-id"]) == ("abcd1234", "Alice-x1y")
    assert ep["transport-state"] in ("new", "checking")  # ICE has nobody to talk to here

    resp = await api.client.patch(f"/colibri/v2/conferences/{MEETING}", json={"expire": True})
    assert resp.status == 200
    assert api.bridge.conference_by_meeting(MEETING) is None
    resp = await api.client.get(f"/colibri/v2/conferences/{MEETING}")
    assert resp.status == 404
    assert (await resp.json())["reason"] == "conference_not_found"


async def test_colibri2_errors_are_400_json_like_jvb(api: Api) -> None:
    assert (await api.client.post("/colibri/v2/conferences", json=create_request("m1"))).status == 200

    resp = await api.client.post("/colibri/v2/conferences", json=create_request("m1"))
    assert resp.status == 400
    body = await resp.json()
    assert body["condition"] == "conflict" and body["reason"] == "conference_already_exists"
    assert body["error"] == "Failed to create conference: Conference already exists for ID: m1"

    resp = await api.client.patch("/colibri/v2/conferences/m1", json={"endpoints": [{"id": "ghost"}]})
    assert resp.status == 400
    body = await resp.json()
    assert (body["reason"], body["endpoint"]) == ("unknown_endpoint", "ghost")

    resp = await api.client.patch("/colibri/v2/conferences/nope", json={"endpoints": []})
    assert resp.status == 404
    assert (await resp.json())["condition"] == "item-not-found"

    # A create without source-names is refused and leaves nothing behind.
    bad = create_request("m2")
    bad["endpoints"][0]["capabilities"] = []
    resp = await api.client.post("/colibri/v2/conferences", json=bad)
    assert resp.status == 400
    assert (await resp.json())["condition"] == "bad-request"
    assert api.bridge.conference_by_meeting("m2") is None


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        ("/colibri/v2/conferences", "POST", b"{not json"),
        ("/colibri/v2/conferences", "POST", b"[1, 2]"),
        ("/colibri/v2/conferences", "POST", b"\xff\xfe\x00"),
        ("/colibri/v2/conferences", "POST", b'{"create": true}'),
        ("/colibri/v2/conferences", "POST", b'{"meeting-id": "x", "endpoints": "nope"}'),
        ("/colibri/v2/conferences", "POST", b'{"meeting-id": "x", "endpoints": [{"id": 5}]}'),
        ("/colibri/v2/conferences", "POST", b"[" * 100_000),
        ("/colibri/v2/conferences/live", "PATCH", b"{truncated"),
        ("/colibri/v2/conferences/live", "PATCH", b'{"endpoints": [{"id": "ep1", "initial-last-n": 7}]}'),
        ("/colibri/shutdown", "POST", b"{}"),
        ("/colibri/shutdown", "POST", b'{"graceful-shutdown": "yes"}'),
    ],
)
async def test_malformed_requests_get_400_json_and_others_keep_working(
    api: Api, path: str, method: str, body: bytes
) -> None:
    assert (await api.client.post("/colibri/v2/conferences", json=create_request("live"))).status == 200
    resp = await api.client.request(method, path, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert resp.content_type == "application/json"
    assert (await resp.json())["error"]
    assert not api.state.graceful_shutdown
    # The server and the existing conference are unharmed.
    resp = await api.client.patch(
        "/colibri/v2/conferences/live",
        json={"endpoints": [{"id": "ep1", "force-mute": {"audio": True}}]},
    )
    assert resp.status == 200, await resp.text()
    assert (await api.client.get("/about/health")).status == 200


async def test_http_level_errors_are_json(api: Api) -> None:
    resp = await api.client.get("/no/such/path")
    assert resp.status == 404 and resp.content_type == "application/json"
    assert (await resp.json())["error"]

    resp = await api.client.get("/colibri/shutdown")
    assert resp.status == 405 and resp.content_type == "application/json"
    assert "POST" in resp.headers["Allow"]

    resp = await api.client.post("/colibri/v2/conferences", data=b" " * (600 * 1024), headers=JSON)
    assert resp.status == 413 and resp.content_type == "application/json"
    assert (await resp.json())["error"]


async def test_drain_is_advertised_and_keeps_accepting(api: Api) -> None:
    assert await (await api.client.get("/colibri/drain")).json() == {"drain": False}
    assert (await api.client.post("/colibri/drain/enable", headers=JSON)).status == 200
    assert await (await api.client.get("/colibri/drain")).json() == {"drain": True}
    stats = await (await api.client.get("/colibri/stats")).json()
    assert stats["drain"] is True
    # Section 3.4: drain only changes what Jicofo prefers; the bridge still takes a conference it is sent.
    assert (await api.client.post("/colibri/v2/conferences", json=create_request("d1"))).status == 200
    assert (await api.client.post("/colibri/drain/disable", headers=JSON)).status == 200
    assert (await (await api.client.get("/colibri/stats")).json())["drain"] is False


async def test_graceful_shutdown_refuses_new_conferences_and_keeps_existing(api: Api) -> None:
    assert (await api.client.post("/colibri/v2/conferences", json=create_request("old"))).status == 200

    resp = await api.client.post("/colibri/shutdown", json={"graceful-shutdown": True})
    assert resp.status == 200
    assert api.state.graceful_shutdown and not api.state.shutting_down
    stats = await (await api.client.get("/colibri/stats")).json()
    assert (stats["graceful_shutdown"], stats["shutting_down"]) == (True, False)

    resp = await api.client.post("/colibri/v2/conferences", json=create_request("new"))
    assert resp.status == 400
    body = await resp.json()
    assert (body["condition"], body["reason"]) == ("service-unavailable", "graceful_shutdown")
    assert api.bridge.conference_by_meeting("new") is None

    # The existing conference keeps working: a new endpoint joins it, an update applies.
    resp = await api.client.patch(
        "/colibri/v2/conferences/old", json=create_request("old", "late") | {"create": False}
    )
    assert resp.status == 200, await resp.text()
    conference = api.bridge.conference_by_meeting("old")
    assert conference is not None and set(conference.endpoints) == {"ep1", "late"}

    resp = await api.client.post("/colibri/shutdown", json={"graceful-shutdown": False})
    assert resp.status == 200
    stats = await (await api.client.get("/colibri/stats")).json()
    assert (stats["graceful_shutdown"], stats["shutting_down"]) == (True, True)
    metrics = await _metrics(api)
    assert metrics["sluice_shutting_down"][()] == 1


async def test_graceful_shutdown_set_elsewhere_is_honoured(api: Api) -> None:
    """The XMPP side or an operator may raise the shared flag; HTTP creates are refused then too."""
    api.state.graceful_shutdown = True
    resp = await api.client.post("/colibri/v2/conferences", json=create_request("x"))
    assert resp.status == 400
    assert (await resp.json())["reason"] == "graceful_shutdown"


# ---- keeping web pages out (bridge/http.py `_guard`)

#: What a page can send cross-origin without a CORS preflight (fetch no-cors, <form>): never JSON.
BROWSER_BODIES = [
    ("text/plain;charset=UTF-8", b'{"graceful-shutdown": false}'),
    ("application/x-www-form-urlencoded", b"graceful-shutdown=false"),
    (
        "multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n',
    ),
    (None, b'{"graceful-shutdown": false}'),
]


async def refused(api: Api) -> dict[str, float]:
    return {
        dict(k)["reason"]: v for k, v in (await _metrics(api))["sluice_private_http_refused_total"].items()
    }


@pytest.mark.parametrize(("content_type", "body"), BROWSER_BODIES)
async def test_posts_that_are_not_json_are_415_and_change_nothing(
    api: Api, content_type: str | None, body: bytes
) -> None:
    assert (await api.client.post("/colibri/v2/conferences", json=create_request("live"))).status == 200
    assert await refused(api) == dict.fromkeys(
        ("misdirected_host", "cross_origin", "unauthorized", "unsupported_content_type"), 0
    )
    headers = {"Content-Type": content_type} if content_type else {}
    conference_body = json.dumps(create_request("new")).encode()
    attempts = [
        ("POST", "/colibri/shutdown", body),
        ("POST", "/colibri/drain/enable", body),
        ("POST", "/colibri/drain/enable", b""),
        ("POST", "/colibri/v2/conferences", conference_body),
        ("PATCH", "/colibri/v2/conferences/live", b'{"expire": true}'),
    ]
    for method, path, data in attempts:
        # skip_auto_headers keeps aiohttp from adding its own application/octet-stream.
        resp = await api.client.request(
            method, path, data=data, headers=headers, skip_auto_headers=["Content-Type"]
        )
        assert resp.status == 415, (method, path, await resp.text())
        assert resp.content_type == "application/json"
        answer = await resp.json()
        assert answer["reason"] == "unsupported_content_type" and "application/json" in answer["error"]
    assert not (api.state.drain or api.state.graceful_shutdown or api.state.shutting_down)
    assert (
        api.bridge.conference_by_meeting("new") is None
        and api.bridge.conference_by_meeting("live") is not None
    )
    assert (await refused(api))["unsupported_content_type"] == len(attempts)
    stats = await (await api.client.get("/colibri/stats")).json()
    assert stats["total_private_http_refused"] == len(attempts)
    # JSON with parameters is still JSON.
    resp = await api.client.post(
        "/colibri/drain/enable", headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert resp.status == 200 and api.state.drain


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",
        "http://127.0.0.1:1",  # another port on this host is another origin (a page served there)
        "http://localhost:{port}",  # same port, other name: still another origin
        "https://127.0.0.1:{port}",
        "garbage",
    ],
)
async def test_a_foreign_origin_is_403_even_with_json(api: Api, origin: str) -> None:
    headers = {"Origin": origin.format(port=api.client.port)}
    attempts: list[tuple[str, str, object]] = [
        ("POST", "/colibri/shutdown", {"graceful-shutdown": False}),
        ("POST", "/colibri/drain/enable", None),
        ("POST", "/colibri/v2/conferences", create_request("x")),
        ("GET", "/colibri/stats", None),
    ]
    for method, path, body in attempts:
        resp = await api.client.request(method, path, headers=headers | JSON, json=body)
        assert resp.status == 403, (method, path, await resp.text())
        assert (await resp.json())["reason"] == "cross_origin"
    assert (
        not (api.state.drain or api.state.graceful_shutdown) and api.bridge.conference_by_meeting("x") is None
    )
    assert (await refused(api))["cross_origin"] == 4
    # The API's own origin is not cross-origin.
    resp = await api.client.post(
        "/colibri/drain/enable", headers=JSON | {"Origin": f"http://127.0.0.1:{api.client.port}"}
    )
    assert resp.status == 200


@pytest.mark.parametrize("host", ["evil.example:8080", "evil.example", "127.0.0.2:{port}", "a b", "[::1", ""])
async def test_a_host_that_is_not_ours_is_421(api: Api, host: str) -> None:
    """DNS rebinding: the attacker's own name resolves to 127.0.0.1; the Host header still carries it."""
    headers = {"Host": host.format(port=api.client.port)}
    resp = await api.client.get("/colibri/stats", headers=headers)
    assert resp.status == 421, await resp.text()
    assert (await resp.json())["reason"] == "misdirected_host"
    resp = await api.client.post("/colibri/drain/enable", headers=headers | JSON)
    assert resp.status == 421 and not api.state.drain
    assert (await refused(api))["misdirected_host"] == 2


@pytest.mark.parametrize("host", ["localhost:{port}", "LOCALHOST", "127.0.0.1", "[::1]:{port}", "localhost."])
async def test_loopback_names_with_any_port_are_ours(api: Api, host: str) -> None:
    resp = await api.client.get("/about/health", headers={"Host": host.format(port=api.client.port)})
    assert resp.status == 200


async def test_private_host_names_add_a_concrete_bind_host() -> None:
    assert private_host_names(LOOPBACK_HOSTS) == {"localhost", "127.0.0.1", "::1"}
    assert private_host_names(["[::1]", "Jvb1.Internal."], "10.0.0.7") == {"::1", "jvb1.internal", "10.0.0.7"}
    assert private_host_names([], "0.0.0.0") == set() and private_host_names([], "::") == set()
    assert private_host_names([], "0:0:0:0:0:0:0:1") == {"::1"}


@pytest.fixture
async def token_api(bridge: Bridge) -> AsyncIterator[Api]:
    state = BridgeState()
    handler = Colibri2Handler(bridge, shutdown=state)
    lifecycle = Lifecycle(bridge, state, LifecycleConfig(shutting_down_delay=0.1))
    app = create_private_app(bridge, handler, lifecycle, LoadSampler(), version="t", token=TOKEN)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Api(client, bridge, handler, lifecycle.state, LoadSampler(), lifecycle)
    await lifecycle.stop()


async def test_with_a_token_every_request_needs_it(token_api: Api) -> None:
    api = token_api
    for auth in (None, "Bearer wrong-token-wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"):
        headers = {"Authorization": auth} if auth else {}
        resp = await api.client.get("/about/health", headers=headers)
        assert resp.status == 401, auth
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await resp.json())["reason"] == "unauthorized"
        resp = await api.client.post("/colibri/drain/enable", headers=headers | JSON)
        assert resp.status == 401 and not api.state.drain
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert (await api.client.get("/about/health", headers=good)).status == 200
    assert (await api.client.post("/colibri/drain/enable", headers=good | JSON)).status == 200
    assert api.state.drain
    resp = await api.client.post("/colibri/v2/conferences", json=create_request("tok"), headers=good)
    assert resp.status == 200 and api.bridge.conference_by_meeting("tok") is not None
    metrics = await api.client.get("/metrics", headers=good)
    assert 'sluice_private_http_refused_total{reason="unauthorized"} 10.0' in await metrics.text()
    assert TOKEN not in await metrics.text()
