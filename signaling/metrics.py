"""Prometheus families of the embedded XMPP server and of the focus (no I/O).

`sluice serve` adds them to the bridge's private `/metrics` (one registry, one scrape); `sluice focus`
serves the focus's on its own `/metrics` (`--metrics-port`). Label values are names fixed in the code
(counter names, refusal reasons), never room names, JIDs or nicks, so the number of series is bounded.

| metric | type | labels | what |
| --- | --- | --- | --- |
| `sluice_xmpp_connections`, `_sessions`, `_rooms`, `_occupants` | gauge | | now |
| `sluice_xmpp_send_queue_bytes`, `_send_queue_peak_bytes` | gauge | | bytes waiting for slow peers |
| `sluice_xmpp_stanzas_total` | counter | `direction` (in, out) | stanzas routed |
| `sluice_xmpp_logins_total` | counter | `kind` (anonymous, user, token) | sessions authenticated |
| `sluice_xmpp_refused_total` | counter | `reason` | `*_refused*`, `auth_failure`, `rate_limited` ... |
| `sluice_xmpp_events_total` | counter | `event` | every counter of the server by name |
| `sluice_focus_rooms`, `_participants`, `_bridges`, `_bridges_operational` | gauge | | now |
| `sluice_focus_conference_requests_total` | counter | | conference IQs |
| `sluice_focus_jingle_total` | counter | `outcome` (initiated, accepted, accept_timeout, ...) | sessions |
| `sluice_focus_colibri_failures_total` | counter | `kind` (error, timeout) | Colibri2 requests that failed |
| `sluice_focus_bridge_selections_total` | counter | | a room given a bridge |
| `sluice_focus_bridge_failovers_total` | counter | | a room moved off its bridge (failure, restart) |
| `sluice_focus_events_total` | counter | `event` | every counter of the focus by name |
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

#: XmppServer.stats() keys that are current values, not counts since start.
XMPP_GAUGES = ("connections", "sessions", "rooms", "occupants", "send_queue_bytes", "send_queue_peak_bytes")
#: Refusal counters of the XMPP server that are totals of finer ones (`token_refused` = the sum of the
#: `token_refused_<reason>`): left out of `refused_total`, which would count them twice.
_XMPP_REFUSAL_TOTALS = ("room_creations_refused", "token_refused")


def _counter(component: str, name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"sluice_{component}_{name}", doc, value=value)


def _labelled(
    component: str, name: str, doc: str, label: str, values: Iterable[tuple[str, float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(f"sluice_{component}_{name}", doc, labels=[label])
    for key, value in values:
        family.add_metric([key], value)
    return family


def events(component: str, stats: Mapping[str, float], gauges: Iterable[str]) -> CounterMetricFamily:
    """`sluice_<component>_events_total{event}`: every counter by its name (docs/security.md lists them)."""
    skip = set(gauges)
    return _labelled(
        component,
        "events",
        f"{component}: events since start, by name",
        "event",
        ((k, v) for k, v in sorted(stats.items()) if k not in skip),
    )


def is_xmpp_refusal(name: str) -> bool:
    if name in _XMPP_REFUSAL_TOTALS:
        return False
    return "refused" in name or name in ("auth_failure", "rate_limited", "extdisco_rate_limited")


def xmpp_families(stats: Mapping[str, int]) -> Iterator[Metric]:
    """The XMPP server's families from `XmppServer.stats()`."""
    for name in XMPP_GAUGES:
        yield GaugeMetricFamily(f"sluice_xmpp_{name}", f"xmpp: {name} now", value=stats.get(name, 0))
    yield _labelled(
        "xmpp",
        "stanzas",
        "Stanzas the server took in from connections and sent to them.",
        "direction",
        (("in", stats.get("stanzas_in", 0)), ("out", stats.get("stanzas_out", 0))),
    )
    yield _labelled(
        "xmpp",
        "logins",
        "Sessions authenticated, by kind.",
        "kind",
        (
            ("anonymous", stats.get("anonymous_logins", 0)),
            ("user", stats.get("user_logins", 0)),
            ("token", stats.get("token_logins", 0)),
        ),
    )
    yield _labelled(
        "xmpp",
        "refused",
        "Refusals by reason (logins, tokens, room creations, rate limits, moderation, connections).",
        "reason",
        ((k, v) for k, v in sorted(stats.items()) if is_xmpp_refusal(k)),
    )
    yield events("xmpp", stats, XMPP_GAUGES)


def focus_families(stats: Mapping[str, float], gauges: Mapping[str, int]) -> Iterator[Metric]:
    """The focus's families from `FocusCore.stats` and `FocusCore.gauges()` (rooms and bridges now)."""
    for name, doc in (
        ("rooms", "Rooms the focus runs a conference for."),
        ("participants", "Participants in those rooms (the focus's view of the MUC)."),
        ("bridges", "Bridges in the brewery."),
        ("bridges_operational", "Bridges fit for new conferences (healthy, not draining)."),
    ):
        yield GaugeMetricFamily(f"sluice_focus_{name}", doc, value=gauges.get(name, 0))
    yield _counter(
        "focus", "conference_requests", "Conference IQs from clients.", stats.get("conference_requests", 0)
    )
    yield _labelled(
        "focus",
        "jingle",
        "Jingle sessions by outcome.",
        "outcome",
        (
            ("initiated", stats.get("sessions_initiated", 0)),
            ("accepted", stats.get("sessions_accepted", 0)),
            ("accept_timeout", stats.get("session_accept_timeouts", 0)),
            ("never_accepted", stats.get("sessions_never_accepted", 0)),
            ("refused", stats.get("sessions_refused", 0)),
        ),
    )
    yield _labelled(
        "focus",
        "colibri_failures",
        "Colibri2 requests to bridges that failed, by kind.",
        "kind",
        (("error", stats.get("colibri_errors", 0)), ("timeout", stats.get("colibri_timeouts", 0))),
    )
    yield _counter("focus", "bridge_selections", "Rooms given a bridge.", stats.get("bridge_selections", 0))
    yield _counter(
        "focus",
        "bridge_failovers",
        "Rooms moved off their bridge (it failed, left, or its conference was restarted).",
        stats.get("bridge_failovers", 0),
    )
    yield events("focus", stats, ())
