"""signaling/metrics.py over the real XMPP core's and focus's counters, parsed as Prometheus text."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics import render_families
from signaling.focus import FocusConfig
from signaling.focus.core import FocusCore
from signaling.metrics import focus_families, is_xmpp_refusal, xmpp_families
from sluice.cli import main


def samples(families: object) -> dict[str, float]:
    body, _ = render_families(families, None)  # type: ignore[arg-type]
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_xmpp_families_name_stanzas_logins_and_refusals() -> None:
    stats = {
        "connections": 3, "sessions": 2, "rooms": 1, "occupants": 2, "stanzas_in": 40, "stanzas_out": 55,
        "anonymous_logins": 2, "token_logins": 1, "token_refused": 2, "token_refused_expired": 2,
        "room_creations_refused": 1, "room_creations_refused_guest": 1, "auth_failure": 1,
        "muc_moderation_refused": 3, "sessions_bound": 3,
    }  # fmt: skip
    got = samples(xmpp_families(stats))
    assert got["sluice_xmpp_sessions"] == 2 and got["sluice_xmpp_send_queue_bytes"] == 0
    assert got['sluice_xmpp_stanzas_total{direction="in"}'] == 40
    assert got['sluice_xmpp_logins_total{kind="token"}'] == 1
    assert got['sluice_xmpp_logins_total{kind="user"}'] == 0
    refused = {k for k in got if k.startswith("sluice_xmpp_refused_total")}
    # The totals of finer counters are left out (no double counting); the finer ones are there.
    assert refused == {
        'sluice_xmpp_refused_total{reason="token_refused_expired"}',
        'sluice_xmpp_refused_total{reason="room_creations_refused_guest"}',
        'sluice_xmpp_refused_total{reason="auth_failure"}',
        'sluice_xmpp_refused_total{reason="muc_moderation_refused"}',
    }
    assert got['sluice_xmpp_events_total{event="sessions_bound"}'] == 3
    assert 'sluice_xmpp_events_total{event="sessions"}' not in got  # a gauge, not an event
    assert not is_xmpp_refusal("token_refused") and is_xmpp_refusal("connections_refused_per_address")


def test_focus_families_from_a_real_core() -> None:
    core = FocusCore(FocusConfig(password="x", domain="meet.test"))
    core.stats.update({"conference_requests": 4, "sessions_accepted": 3, "colibri_timeouts": 1,
                       "bridge_selections": 2, "bridge_failovers": 1})  # fmt: skip
    got = samples(focus_families(core.stats, core.gauges()))
    assert got["sluice_focus_rooms"] == 0 and got["sluice_focus_bridges_operational"] == 0
    assert got["sluice_focus_conference_requests_total"] == 4
    assert got['sluice_focus_jingle_total{outcome="accepted"}'] == 3
    assert got['sluice_focus_jingle_total{outcome="never_accepted"}'] == 0
    assert got['sluice_focus_colibri_failures_total{kind="timeout"}'] == 1
    assert got["sluice_focus_bridge_selections_total"] == 2
    assert got["sluice_focus_bridge_failovers_total"] == 1
    assert got['sluice_focus_events_total{event="conference_requests"}'] == 4


def test_operator_actions_need_a_known_room_and_participant() -> None:
    core = FocusCore(FocusConfig(password="x", domain="meet.test"))
    assert not core.end_meeting(0.0, "nowhere@conference.meet.test", "r")
    assert not core.kick(0.0, "nowhere@conference.meet.test", "nick", "r")
    assert core.poll_transmit() is None
    assert core.stats["operator_kicks"] == 0


def test_sluice_focus_refuses_a_short_metrics_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLUICE_FOCUS_PASSWORD", "secret")
    monkeypatch.setenv("SLUICE_FOCUS_METRICS_TOKEN", "short")
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        assert main(["focus", "--domain", "meet.test", "--metrics-port", "0"]) == 2
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
    assert "SLUICE_FOCUS_METRICS_TOKEN" in capsys.readouterr().err
