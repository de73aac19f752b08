"""The operator's view of `sluice serve` while a real call runs (issue 15's observability "Show" items).

Three Chromium pages in one room on `sluice serve`, started with a private API token and JSON logs:
- `/metrics` scraped twice with prometheus-client's text parser: the bridge's, the focus's and the XMPP
  server's families are all there (one registry in the all-in-one process) and move with the call
  (participants, sessions, packets, stanzas), and the per-endpoint link figures are there as aggregates;
- the admin page in a fourth Chromium: first the login (a wrong token refused), then the live room with its
  three participants, their figures and the bridge's stress; a display name with markup shows as text;
  a screenshot; Kick from the page removes one participant (its page says so, the bridge drops its
  endpoint), End meeting ends it for the other two (the bridge empties);
- every log line is a JSON object, and the lines about the conference carry its meeting-id and endpoint.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.serve import ServeProcess, running_serve
from tests.helpers.webpage import await_for, joining, open_browser, open_pages

pytestmark = pytest.mark.e2e

ROOM = "operators"
#: A display name with markup: the admin page must show it as text.
MARKUP_NAME = '<b>Bob</b><img src="x">'


def value(metrics: dict[str, float], name: str) -> float:
    assert name in metrics, f"{name} missing from /metrics"
    return metrics[name]


async def scrape_families(serve: ServeProcess) -> set[str]:
    """The family names of one scrape, as prometheus-client's parser reads them."""
    async with aiohttp.ClientSession() as http, http.get(f"{serve.private}/metrics", headers=serve.auth) as r:
        assert r.status == 200
        return {f.name for f in text_string_to_metric_families(await r.text())}


async def test_metrics_admin_page_and_json_logs_during_a_call(tmp_path: Path, artifact_dir: Path) -> None:
    token = secrets.token_urlsafe(24)
    async with (
        running_serve(tmp_path, "", "--log-format", "json", private_token=token) as serve,
        open_pages(tmp_path) as browsers,
    ):
        # Without the token the private API refuses (the admin page's login is below).
        async with aiohttp.ClientSession() as http, http.get(f"{serve.private}/metrics") as r:
            assert r.status == 401
        before = await serve.metrics()

        browsers["host"] = host = await joining(tmp_path, serve.url, "host", "Hana Host", ROOM)
        host_nick = (await await_for(host, "host joined", lambda s: s["joined"]))["nick"]
        browsers["ann"] = await joining(tmp_path, serve.url, "ann", "Ann", ROOM)
        browsers["bob"] = bob = await joining(tmp_path, serve.url, "bob", MARKUP_NAME, ROOM)
        nicks = {}
        for who in ("host", "ann", "bob"):
            state = await await_for(
                browsers[who], f"{who}: media", lambda s: s["ice"] in ("connected", "completed")
            )
            nicks[who] = state["nick"]
        assert nicks["host"] == host_nick
        for who in ("host", "ann"):
            await await_for(
                browsers[who],
                f"{who} decodes bob",
                lambda st: st.get(nicks["bob"], {}).get("framesDecoded", 0) > 10,
                "getStats",
                40,
            )

        # ---- /metrics: all three components, moving with the call.
        await asyncio.sleep(3)  # a whole quality window (bridge/quality.py) with media
        first = await serve.metrics()
        await asyncio.sleep(3)
        second = await serve.metrics()
        families = await scrape_families(serve)
        for family in (
            # the bridge
            "sluice_packets_received", "sluice_endpoints", "sluice_stress_level",
            "sluice_endpoint_rtt_seconds", "sluice_endpoint_jitter_seconds", "sluice_endpoint_loss_ratio",
            "sluice_endpoint_bitrate_bps",
            # the focus
            "sluice_focus_rooms", "sluice_focus_participants", "sluice_focus_conference_requests",
            "sluice_focus_jingle", "sluice_focus_colibri_failures", "sluice_focus_bridge_selections",
            "sluice_focus_bridge_failovers", "sluice_focus_events",
            # the XMPP server
            "sluice_xmpp_sessions", "sluice_xmpp_stanzas", "sluice_xmpp_logins", "sluice_xmpp_refused",
            "sluice_xmpp_events",
        ):  # fmt: skip
            assert family in families, f"{family} not in /metrics: {sorted(families)}"
        assert value(second, "sluice_endpoints") == 3
        assert value(second, "sluice_focus_rooms") == 1
        assert value(second, "sluice_focus_participants") == 3
        assert value(second, 'sluice_focus_jingle_total{outcome="accepted"}') >= 3
        assert value(second, "sluice_focus_bridge_selections_total") >= 1
        assert value(second, "sluice_focus_conference_requests_total") >= 3
        assert value(second, "sluice_xmpp_sessions") >= 5  # three pages, the focus, the bridge
        assert value(second, 'sluice_xmpp_logins_total{kind="anonymous"}') >= 3
        assert value(second, "sluice_packets_received_total") > value(first, "sluice_packets_received_total")
        assert value(second, 'sluice_xmpp_stanzas_total{direction="in"}') > value(
            before, 'sluice_xmpp_stanzas_total{direction="in"}'
        )
        # Every endpoint sends and receives media: each counts in the up and down bit rate aggregates.
        for direction in ("up", "down"):
            assert (
                value(second, f'sluice_endpoint_bitrate_bps_bucket{{direction="{direction}",le="+Inf"}}') == 3
            )
            assert value(second, f'sluice_endpoint_bitrate_bps_gsum{{direction="{direction}"}}') > 100e3
        assert value(second, 'sluice_endpoint_loss_ratio_bucket{le="+Inf"}') == 3
        assert value(second, 'sluice_endpoint_jitter_seconds_bucket{le="+Inf"}') == 3
        rtts = value(second, 'sluice_endpoint_rtt_seconds_bucket{le="+Inf"}')
        rtt_sum = value(second, "sluice_endpoint_rtt_seconds_gsum")
        print(f"endpoints with an RTT figure: {rtts:g}; their RTTs' sum {rtt_sum:.4f} s")

        # ---- the admin page, behind its login.
        browsers["admin"] = admin = await asyncio.to_thread(
            open_browser, tmp_path, "admin", f"{serve.private}/admin"
        )
        await await_for(admin, "the login form", lambda s: s["needsLogin"])
        assert await admin.acall("login", "not-the-token") is False
        assert (await admin.acall("state"))["needsLogin"]
        assert await admin.acall("login", token) is True
        shown = await await_for(
            admin,
            "the room with three participants and their figures",
            lambda s: len(people := _people(s)) == 3 and all(p["up_bps"] for p in people),
        )
        state = shown["state"]
        room = _room(state)
        assert room is not None and room["bridge"], room
        people = {p["nick"]: p for p in room["participants"]}
        assert set(people) == set(nicks.values())
        assert people[nicks["bob"]]["name"] == MARKUP_NAME
        assert people[nicks["host"]]["moderator"]
        for p in people.values():
            assert p["endpoint"] == p["nick"] and p["down_bps"] > 0 and p["loss"] is not None, p
            # Loopback: a few ms of RTT and audio jitter, not seconds.
            assert p["rtt_ms"] is not None and 0 < p["rtt_ms"] < 500 and 0 <= p["jitter_ms"] < 200, p
        assert state["bridges"] and state["bridges"][0]["stress"] > 0, state["bridges"]
        assert state["actions"]
        text = await admin.acall("roomsText")
        assert MARKUP_NAME in text and await admin.acall("injectedElements") == 0
        await admin.ascreenshot(artifact_dir / "admin-page.png")

        # Kick Bob from the page: his page is told, the bridge drops him, the page lists two.
        await admin.acall("click", "kick", room["room"], nicks["bob"])
        await await_for(bob, "Bob removed", lambda s: s["view"] == "ended")
        await await_for(
            admin,
            "two participants left",
            lambda s: len(_people(s)) == 2,
        )
        await _until_endpoints(serve, lambda ids: nicks["bob"] not in ids and len(ids) == 2)

        # End the meeting from the page: both pages end, the bridge empties, the page shows no room.
        await admin.acall("click", "end", room["room"])
        for who in ("host", "ann"):
            await await_for(browsers[who], f"{who}'s meeting ended", lambda s: s["view"] == "ended")
        await _until_endpoints(serve, lambda ids: not ids)
        await await_for(admin, "no rooms", lambda s: s["state"] is not None and not s["state"]["rooms"])
        await admin.ascreenshot(artifact_dir / "admin-page-ended.png")
        after = await serve.metrics()
        assert value(after, 'sluice_focus_events_total{event="operator_kicks"}') == 1
        assert value(after, 'sluice_focus_events_total{event="operator_meetings_ended"}') == 1
        assert value(after, 'sluice_admin_events_total{event="admin_login_failures"}') == 1
        assert value(after, 'sluice_admin_events_total{event="admin_actions"}') == 2

    # ---- JSON logs: every log line parses; the call's lines carry its ids.
    lines = [line for line in serve.output if not line.startswith("sluice serve:")]
    records = [json.loads(line) for line in lines]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    meeting = {r["conference"] for r in records if r.get("message", "").startswith("conference created")}
    assert len(meeting) == 1, meeting
    (meeting_id,) = meeting
    about = [r for r in records if r.get("conference") == meeting_id]
    created = {r["endpoint"] for r in about if r["message"] == "endpoint created"}
    assert created >= set(nicks.values()), created
    joined = {
        r["endpoint"] for r in about if r["logger"].startswith("signaling.focus") and "joined" in r["message"]
    }
    assert joined >= set(nicks.values()), joined
    assert any(r.get("room", "").startswith(f"{ROOM}@") for r in about)


def _people(page: dict[str, Any]) -> list[dict[str, Any]]:
    """The participants of our room in the admin page's state (none before it has one)."""
    room = _room(page["state"]) if page["state"] is not None else None
    return list(room["participants"]) if room is not None else []


def _room(state: dict[str, Any]) -> dict[str, Any] | None:
    rooms = [r for r in state["rooms"] if r["room"].startswith(f"{ROOM}@")]
    return rooms[0] if rooms else None


async def _until_endpoints(serve: ServeProcess, check: Any, within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check(await asyncio.to_thread(serve.endpoint_ids)):
        assert asyncio.get_running_loop().time() < deadline, await asyncio.to_thread(serve.endpoint_ids)
        await asyncio.sleep(0.3)
