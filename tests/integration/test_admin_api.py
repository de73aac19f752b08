"""The admin page's authority on the private API (bridge/admin.py), over a real Bridge served by aiohttp.

With a token: the page's files and the login are open, everything else needs the bearer token or the
login's session cookie; a wrong token is refused and counted; the cookie does not help a cross-origin
request or a form post; logout ends the session. Without a token (loopback-only API) the state is open as
the rest of the API. A bridge without a focus lists its own conferences and has no actions (501). The
page's files carry a CSP without inline script and forbid framing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge import Bridge
from bridge.admin import (
    COOKIE,
    MAX_NAME,
    MAX_PARTICIPANTS,
    MAX_ROOMS,
    MAX_SESSIONS,
    SESSION_TTL,
    AdminBridge,
    AdminParticipant,
    AdminRoom,
    AdminSessions,
    Operator,
)
from bridge.colibri2_handler import Colibri2Handler
from bridge.http import create_private_app
from bridge.lifecycle import Lifecycle, LifecycleConfig
from bridge.load import LoadSampler
from bridge.quality import QualityTracker
from bridge.xmpp_core import BridgeState

pytestmark = pytest.mark.integration

TOKEN = "YWRtaW4tdG9rZW4tZm9yLXRlc3Rz"
JSON = {"Content-Type": "application/json"}


async def _client(
    bridge: Bridge, token: str | None, operator: Operator | None = None
) -> AsyncIterator[TestClient[Any, Any]]:
    state = BridgeState()
    lifecycle = Lifecycle(bridge, state, LifecycleConfig(shutting_down_delay=0.1))
    app = create_private_app(
        bridge, Colibri2Handler(bridge, shutdown=state), lifecycle, LoadSampler(), version="t",
        token=token, quality=QualityTracker(), name="jvb-test", operator=operator,
    )  # fmt: skip
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client
    await lifecycle.stop()


@pytest.fixture
async def guarded(bridge: Bridge) -> AsyncIterator[TestClient[Any, Any]]:
    async for client in _client(bridge, TOKEN):
        yield client


@pytest.fixture
async def open_api(bridge: Bridge) -> AsyncIterator[TestClient[Any, Any]]:
    async for client in _client(bridge, None):
        yield client


async def admin_events(client: TestClient[Any, Any]) -> str:
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    return await resp.text()


async def test_the_page_is_open_and_everything_else_needs_the_token_or_a_session(
    guarded: TestClient[Any, Any], bridge: Bridge
) -> None:
    client = guarded
    for path in ("/admin", "/admin/admin.js", "/admin/admin.css"):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert "script-src" not in resp.headers["Content-Security-Policy"]  # default-src 'self': no inline
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert (await client.get("/admin/state")).status == 401
    assert (await client.post("/admin/end", json={"room": "r"})).status == 401
    assert (await client.post("/admin/kick", json={"room": "r", "nick": "n"})).status == 401

    resp = await client.post("/admin/login", json={"token": "wrong"})
    assert resp.status == 401 and COOKIE not in resp.cookies
    assert (await client.post("/admin/login", json={"token": 7})).status == 401
    assert 'sluice_admin_events_total{event="admin_login_failures"} 2.0' in await admin_events(client)

    resp = await client.post("/admin/login", json={"token": TOKEN})
    assert resp.status == 200
    cookie = resp.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/admin"
    # The test client keeps the cookie: the state and the actions are open now.
    bridge.create_conference("meeting-1", name="room@conference.example")
    state = await (await client.get("/admin/state")).json()
    assert state["rooms"][0]["room"] == "meeting-1" and state["bridges"][0]["name"] == "jvb-test"
    assert not state["actions"]
    resp = await client.post("/admin/end", json={"room": "meeting-1"})
    assert resp.status == 501  # no focus here
    assert (await client.post("/admin/kick", json={"room": "r"})).status == 400
    # The cookie does not lift the Origin and content-type checks: no cross-site or form-post riding.
    resp = await client.post("/admin/end", json={"room": "meeting-1"}, headers={"Origin": "http://evil.test"})
    assert resp.status == 403
    resp = await client.post("/admin/end", data="room=meeting-1")
    assert resp.status == 415
    # Nor does it open the rest of the API, even sent there by hand: it stands for the token on /admin/ only.
    assert (await client.get("/colibri/stats", headers={"Cookie": f"{COOKIE}={cookie.value}"})).status == 401

    assert (await client.post("/admin/logout", json={})).status == 200
    assert (await client.get("/admin/state")).status == 401


async def test_a_forged_session_cookie_is_refused(guarded: TestClient[Any, Any]) -> None:
    guarded.session.cookie_jar.update_cookies({COOKIE: "made-up"})
    assert (await guarded.get("/admin/state")).status == 401


async def test_without_a_token_the_state_is_open_like_the_rest(open_api: TestClient[Any, Any]) -> None:
    assert (await open_api.get("/admin/state")).status == 200
    resp = await open_api.post("/admin/login", json={"token": "anything"})
    assert (await resp.json()) == {"login": "not needed"}


def test_sessions_are_bounded_and_expire() -> None:
    now = [0.0]
    sessions = AdminSessions(clock=lambda: now[0])
    ids = [sessions.new() for _ in range(MAX_SESSIONS + 5)]
    assert len(sessions) == MAX_SESSIONS
    assert not sessions.valid(ids[0]) and sessions.valid(ids[-1])
    now[0] = SESSION_TTL + 1
    assert not sessions.valid(ids[-1]) and len(sessions) == 0
    assert not sessions.valid("") and not sessions.valid(None)


class ManyRooms:
    """More rooms and people than the page lists, as a focus would report them (the page's input); actions
    are recorded and succeed only for a room and nick it has."""

    def __init__(self) -> None:
        self.acted: list[tuple[str, ...]] = []

    def rooms(self) -> list[AdminRoom]:
        return [
            AdminRoom(
                room=f"room{i}@conference.example",
                meeting_id=None,
                bridge="jvb-test",
                participants=tuple(
                    AdminParticipant(f"n{i}-{j}", "x" * 500, None, False, None, None) for j in range(i)
                ),
            )
            for i in range(MAX_ROOMS + 50)
        ]

    def bridges(self) -> list[AdminBridge]:
        return [AdminBridge("jvb-test", 0.5, True, False, "1.0")]

    def end_meeting(self, room: str) -> bool:
        self.acted.append(("end", room))
        return room == "room3@conference.example"

    def kick(self, room: str, nick: str) -> bool:
        self.acted.append(("kick", room, nick))
        return room == "room3@conference.example" and nick == "n3-1"


async def test_the_state_is_bounded_and_actions_reach_the_operator(bridge: Bridge) -> None:
    operator = ManyRooms()
    async for client in _client(bridge, None, operator):
        state = await (await client.get("/admin/state")).json()
        rooms = state["rooms"]
        assert len(rooms) == MAX_ROOMS and state["room_count"] == MAX_ROOMS + 50
        assert rooms[0]["room"] == f"room{MAX_ROOMS + 49}@conference.example"  # the largest first
        assert rooms[0]["participant_count"] == MAX_ROOMS + 49
        assert len(rooms[0]["participants"]) == MAX_PARTICIPANTS
        assert all(len(p["name"]) == MAX_NAME for p in rooms[0]["participants"])
        assert state["actions"] and state["bridges"][0]["stress"] == 0.5
        assert (
            await client.post("/admin/kick", json={"room": "room3@conference.example", "nick": "n3-1"})
        ).status == 202
        assert (
            await client.post("/admin/kick", json={"room": "room3@conference.example", "nick": "zz"})
        ).status == 404
        assert (await client.post("/admin/end", json={"room": "room3@conference.example"})).status == 202
        assert (await client.post("/admin/end", json={"room": ["not", "a", "string"]})).status == 400
        assert (await client.post("/admin/end", data=b"{not json", headers=JSON)).status == 400
        assert operator.acted == [
            ("kick", "room3@conference.example", "n3-1"),
            ("kick", "room3@conference.example", "zz"),
            ("end", "room3@conference.example"),
        ]
        metrics = await (await client.get("/metrics")).text()
        assert 'sluice_admin_events_total{event="admin_actions"} 2.0' in metrics
        assert 'sluice_admin_events_total{event="admin_actions_unknown"} 1.0' in metrics
