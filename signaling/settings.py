"""The `[signaling.*]` tables of a settings file: the focus's policy and the embedded XMPP server's limits.

`sluice serve --config FILE` and `sluice focus --config FILE` read them next to the bridge's `videobridge.*`
tree (the bridge ignores them). Keys are the dataclass fields in kebab-case; every key is optional and
defaults to the dataclass default. An unknown key or a value of the wrong type raises `SignalingSettingsError`
naming the key::

    [signaling.focus]
    max-rooms = 200
    rooms-per-minute-per-requester = 10
    bridge-jid-regexp = "jvb-[0-9]+@auth\\.meet\\.example/.*"
    strip-simulcast = true          # receivers see each SIM group's primary SSRC and its RTX only
    enable-opus-red = false         # offer RFC 2198 redundant Opus (red/48000/2); clients opt in
    session-accept-timeout = 15     # seconds; then one retry, then the session is given up (logged, counted)

    [signaling.xmpp.limits]
    room-creations-per-minute-per-address = 20
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from signaling.focus.config import FocusConfig
from signaling.xmpp.config import XmppLimits

#: FocusConfig fields a file may set: policy, never the connection or the password (those are the command
#: line's and the environment's).
FOCUS_KEYS = (
    "min_participants",
    "health_interval",
    "health_timeout",
    "failure_reset",
    "colibri_timeout",
    "iq_timeout",
    "participant_rampup",
    "average_participant_stress",
    "stress_threshold",
    "restart_min_interval",
    "restart_max_per_minute",
    "max_ssrcs_per_user",
    "use_json_sources",
    "strip_simulcast",
    "enable_opus_red",
    "session_accept_timeout",
    "bridge_jid_regexp",
    "max_rooms",
    "rooms_per_minute",
    "rooms_per_minute_per_requester",
    "max_endpoints_per_conference",
    "max_conferences_per_bridge",
    "room_join_timeout",
    "max_conference_restarts",
)

T = TypeVar("T")


class SignalingSettingsError(ValueError):
    """A `[signaling.*]` table the focus or server cannot run with; the message names the key."""


@dataclasses.dataclass(frozen=True, slots=True)
class SignalingSettings:
    """Overrides from a file; apply them with `focus_config()` / `xmpp_limits()`."""

    focus: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    xmpp_limits: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def focus_config(self, base: FocusConfig) -> FocusConfig:
        return dataclasses.replace(base, **self.focus)

    def xmpp_limits_config(self, base: XmppLimits | None = None) -> XmppLimits:
        return dataclasses.replace(base or XmppLimits(), **self.xmpp_limits)


def _value(key: str, annotation: str, value: object) -> object:
    """Checks one value against its field's annotation (the few types these dataclasses use)."""
    if annotation == "bool":
        ok = isinstance(value, bool)
    elif annotation == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif annotation == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        value = float(value) if ok else value  # type: ignore[arg-type]
    elif annotation in ("str", "str | None"):
        ok = isinstance(value, str) and bool(value.strip())
    else:
        raise SignalingSettingsError(f"{key} cannot be set from a file")
    if not ok:
        kind = {"float": "a non-negative number", "int": "a non-negative integer"}.get(annotation, annotation)
        raise SignalingSettingsError(f"bad value for {key}: {value!r}: expected {kind}")
    return value


def _table(cls: type[T], table: object, prefix: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise SignalingSettingsError(f"{prefix} must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    for raw_key, value in table.items():
        name = str(raw_key).replace("-", "_")
        key = f"{prefix}.{raw_key}"
        if name not in fields or (allowed is not None and name not in allowed):
            raise SignalingSettingsError(f"unknown key {key}")
        out[name] = _value(key, str(fields[name].type), value)
    return out


def signaling_settings(doc: Mapping[str, object]) -> SignalingSettings:
    """The `signaling` table of a parsed TOML document (absent: all defaults)."""
    section = doc.get("signaling", {})
    if not isinstance(section, Mapping):
        raise SignalingSettingsError("signaling must be a table")
    focus: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for name, table in section.items():
        if name == "focus":
            focus = _table(FocusConfig, table, "signaling.focus", FOCUS_KEYS)
        elif name == "xmpp":
            if not isinstance(table, Mapping) or set(table) - {"limits"}:
                raise SignalingSettingsError("signaling.xmpp holds only a [signaling.xmpp.limits] table")
            limits = _table(XmppLimits, table.get("limits", {}), "signaling.xmpp.limits", None)
        else:
            raise SignalingSettingsError(f"unknown key signaling.{name}")
    if focus.get("session_accept_timeout", 1.0) <= 0:
        raise SignalingSettingsError(
            "bad value for signaling.focus.session-accept-timeout: expected a positive number"
        )
    if "bridge_jid_regexp" in focus:
        try:
            re.compile(focus["bridge_jid_regexp"])
        except re.error as exc:
            raise SignalingSettingsError(f"bad value for signaling.focus.bridge-jid-regexp: {exc}") from None
    return SignalingSettings(focus=focus, xmpp_limits=limits)
