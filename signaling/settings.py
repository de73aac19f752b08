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
    enable-ice-restart = true       # clients' in-place ICE restarts (else they restart the whole session)
    owner-needs-login = false       # only users logged in on auth.<domain> made owner (secure domain: on)

    [signaling.xmpp.limits]
    room-creations-per-minute-per-address = 20
    external-service-requests-per-minute = 10

    [signaling.turn]                # STUN/TURN for clients (XEP-0215); absent: none
    secret-file = "/etc/sluice/turn-secret"   # or secret = "..."; coturn's static-auth-secret
    hosts = ["turn.meet.example"]   # what clients are told (managed: default the bridge's addresses)
    port = 3478                     # STUN and TURN over UDP and TCP
    tls-port = 5349
    turns = false                   # also TURN over TLS on tls-port
    ttl = 86400                     # seconds a credential may start allocations
    managed = false                 # true: `sluice serve` runs coturn itself (sluice/coturn.py)
    # managed only: listen = ["203.0.113.7"], min-port, max-port, allowed-peers, max-allocations,
    # tls-cert, tls-key

    [signaling.web]
    e2ee = false                    # the web client offers end-to-end encryption (its transforms cost CPU)

    [signaling.auth]
    allow-anonymous = true          # sessions without a token may log in (false + a token table: token-only)
    secure-domain = false           # only users (accounts, tokens) start meetings; guests join started ones
    users-file = "users.json"       # `sluice user`'s SCRAM accounts on auth.<domain> (relative: to this file)

    [signaling.auth.token]          # JWT tokens as Jitsi issues them (Prosody's token auth)
    app-id = "my-app"               # the issuer (iss) tokens must name
    app-secret = "..."              # HS256; or public-key-file = "issuer.pem" for RS256 (exactly one)
    accepted-audiences = ["my-app"] # aud values accepted (default: the app id)
    leeway = 10                     # seconds of clock skew allowed on exp/nbf/iat
    max-token-bytes = 4096
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from signaling.focus.config import FocusConfig
from signaling.turn import DEFAULT_TTL, ManagedTurn, TurnConfig, TurnConfigError
from signaling.xmpp.config import XmppLimits, XmppServerConfig
from signaling.xmpp.token import TokenConfig, TokenVerifier

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
    "enable_ice_restart",
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
    "owner_needs_login",
)

T = TypeVar("T")


class SignalingSettingsError(ValueError):
    """A `[signaling.*]` table the focus or server cannot run with; the message names the key."""


@dataclasses.dataclass(frozen=True, slots=True)
class TurnSettings:
    """The `[signaling.turn]` table, checked; `turn_config()` makes the services clients are told."""

    secret: str
    #: Empty only when managed: then the bridge's media addresses (`sluice serve` knows them at start).
    hosts: tuple[str, ...] = ()
    port: int = 3478
    tls_port: int = 5349
    turns: bool = False
    stun: bool = True
    ttl: float = DEFAULT_TTL
    #: How `sluice serve` runs coturn; None: the operator runs it.
    managed: ManagedTurn | None = None

    def turn_config(self, default_hosts: Sequence[str] = ()) -> TurnConfig:
        hosts = self.hosts or tuple(default_hosts)
        return TurnConfig(
            secret=self.secret, hosts=hosts, port=self.port, tls_port=self.tls_port, turns=self.turns,
            stun=self.stun, ttl=self.ttl,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class AuthSettings:
    """Who may log in and who may start meetings (`[signaling.auth]`)."""

    allow_anonymous: bool = True
    secure_domain: bool = False
    #: Absolute path of the users file (resolved against the settings file's directory).
    users_file: str | None = None
    token: TokenConfig | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SignalingSettings:
    """Overrides from a file; apply them with `focus_config()` / `xmpp_limits()` / `xmpp_auth()`."""

    focus: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    xmpp_limits: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    turn: TurnSettings | None = None
    auth: AuthSettings = dataclasses.field(default_factory=AuthSettings)
    #: `[signaling.web] e2ee`: the web client offers end-to-end encryption (config.json's e2ee.enabled).
    web_e2ee: bool = False

    def xmpp_auth(self, base: XmppServerConfig) -> XmppServerConfig:
        a = self.auth
        return dataclasses.replace(
            base,
            token=a.token,
            allow_anonymous=a.allow_anonymous,
            secure_domain=a.secure_domain,
            users_file=a.users_file,
        )

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


_AUTH_KEYS = {"allow-anonymous": "bool", "secure-domain": "bool", "users-file": "str"}
_TOKEN_KEYS = {
    "app-id": "str",
    "app-secret": "str",
    "public-key-file": "str",
    "accepted-audiences": "list",
    "leeway": "float",
    "max-token-bytes": "int",
}


def _auth(table: object, base_dir: Path | None) -> AuthSettings:
    if not isinstance(table, Mapping):
        raise SignalingSettingsError("signaling.auth must be a table")
    values: dict[str, Any] = {}
    token: TokenConfig | None = None
    for key, value in table.items():
        if key == "token":
            token = _token(value, base_dir)
        elif key in _AUTH_KEYS:
            values[key] = _value(f"signaling.auth.{key}", _AUTH_KEYS[key], value)
        else:
            raise SignalingSettingsError(f"unknown key signaling.auth.{key}")
    users_file = values.get("users-file")
    if users_file is not None:
        users_file = str(_resolve(users_file, base_dir))
    return AuthSettings(
        allow_anonymous=values.get("allow-anonymous", True),
        secure_domain=values.get("secure-domain", False),
        users_file=users_file,
        token=token,
    )


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else base_dir / p


def _token(table: object, base_dir: Path | None) -> TokenConfig:
    prefix = "signaling.auth.token"
    if not isinstance(table, Mapping):
        raise SignalingSettingsError(f"{prefix} must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        kind = _TOKEN_KEYS.get(key)
        if kind is None:
            raise SignalingSettingsError(f"unknown key {prefix}.{key}")
        if kind == "list":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise SignalingSettingsError(
                    f"bad value for {prefix}.{key}: {value!r}: expected a list of strings"
                )
            values[key] = tuple(value)
        else:
            values[key] = _value(f"{prefix}.{key}", kind, value)
    if "app-id" not in values:
        raise SignalingSettingsError(f"{prefix}.app-id is required")
    if ("app-secret" in values) == ("public-key-file" in values):
        raise SignalingSettingsError(
            f"{prefix} needs exactly one of app-secret (HS256) and public-key-file (RS256)"
        )
    if values.get("max-token-bytes", 1) < 1:
        raise SignalingSettingsError(f"bad value for {prefix}.max-token-bytes: expected a positive integer")
    if "app-secret" in values and len(values["app-secret"].encode()) < 32:
        # RFC 7518 §3.2: an HS256 key at least as long as the hash (32 bytes); shorter is guessable.
        raise SignalingSettingsError(f"bad value for {prefix}.app-secret: at least 32 bytes are needed")
    public_key = None
    if "public-key-file" in values:
        path = _resolve(values["public-key-file"], base_dir)
        try:
            public_key = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SignalingSettingsError(
                f"bad value for {prefix}.public-key-file: cannot read {path}: {exc}"
            ) from None
    config = TokenConfig(
        app_id=values["app-id"],
        secret=values.get("app-secret"),
        public_key=public_key,
        audiences=values.get("accepted-audiences", ()),
        leeway=values.get("leeway", 10.0),
        max_bytes=values.get("max-token-bytes", 4096),
    )
    try:
        TokenVerifier(config, "")  # the key loads now, not at the first login
    except ValueError as exc:
        raise SignalingSettingsError(f"bad value for {prefix}.public-key-file: {exc}") from None
    return config


def signaling_settings(doc: Mapping[str, object], base_dir: Path | None = None) -> SignalingSettings:
    """The `signaling` table of a parsed TOML document (absent: all defaults). Relative paths in it are taken
    from `base_dir` (the settings file's directory)."""
    section = doc.get("signaling", {})
    if not isinstance(section, Mapping):
        raise SignalingSettingsError("signaling must be a table")
    focus: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    turn: TurnSettings | None = None
    auth = AuthSettings()
    web_e2ee = False
    for name, table in section.items():
        if name == "focus":
            focus = _table(FocusConfig, table, "signaling.focus", FOCUS_KEYS)
        elif name == "turn":
            turn = _turn(table)
        elif name == "xmpp":
            if not isinstance(table, Mapping) or set(table) - {"limits"}:
                raise SignalingSettingsError("signaling.xmpp holds only a [signaling.xmpp.limits] table")
            limits = _table(XmppLimits, table.get("limits", {}), "signaling.xmpp.limits", None)
        elif name == "auth":
            auth = _auth(table, base_dir)
        elif name == "web":
            if not isinstance(table, Mapping) or set(table) - {"e2ee"}:
                raise SignalingSettingsError("signaling.web holds only e2ee")
            if not isinstance(table.get("e2ee", False), bool):
                raise SignalingSettingsError("bad value for signaling.web.e2ee: expected true or false")
            web_e2ee = bool(table.get("e2ee", False))
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
    return SignalingSettings(focus=focus, xmpp_limits=limits, turn=turn, auth=auth, web_e2ee=web_e2ee)


#: `[signaling.turn]` keys (kebab-case) and their kinds; the second group only with `managed = true`.
_TURN_KEYS = {
    "secret": "str", "secret-file": "str", "hosts": "strs", "port": "port", "tls-port": "port",
    "turns": "bool", "stun": "bool", "ttl": "float", "managed": "bool",
}  # fmt: skip
_MANAGED_KEYS = {
    "listen": "strs", "min-port": "port", "max-port": "port", "allowed-peers": "strs",
    "max-allocations": "int", "tls-cert": "str", "tls-key": "str",
}  # fmt: skip


def _turn_value(key: str, kind: str, value: object) -> object:
    if kind == "strs":
        if not isinstance(value, list) or not value or len(value) > 32:
            raise SignalingSettingsError(f"bad value for {key}: expected a list of 1 to 32 strings")
        return tuple(_value(key, "str", v) for v in value)
    if kind == "port":
        checked = _value(key, "int", value)
        if not 1 <= checked <= 65535:  # type: ignore[operator]
            raise SignalingSettingsError(f"bad value for {key}: {value!r}: a port is 1..65535")
        return checked
    return _value(key, kind, value)


def _turn(table: object) -> TurnSettings:
    """`[signaling.turn]`: a secret (or a file holding it; managed without either: a random one), hosts
    (managed: optional), ports, TTL, and the managed coturn's own keys."""
    prefix = "signaling.turn"
    if not isinstance(table, Mapping):
        raise SignalingSettingsError(f"{prefix} must be a table")
    values: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = str(raw_key)
        kind = _TURN_KEYS.get(key) or _MANAGED_KEYS.get(key)
        if kind is None:
            raise SignalingSettingsError(f"unknown key {prefix}.{key}")
        values[key] = _turn_value(f"{prefix}.{key}", kind, value)
    managed = bool(values.get("managed", False))
    extra = sorted(set(values) & set(_MANAGED_KEYS))
    if extra and not managed:
        raise SignalingSettingsError(f"{prefix}.{extra[0]} applies only with managed = true")
    if "secret" in values and "secret-file" in values:
        raise SignalingSettingsError(f"{prefix}: secret or secret-file, not both")
    secret = values.get("secret")
    if "secret-file" in values:
        try:
            secret = Path(values["secret-file"]).read_text().strip()
        except OSError as exc:
            raise SignalingSettingsError(f"{prefix}.secret-file: {exc}") from None
    if secret is None:
        if not managed:
            raise SignalingSettingsError(
                f"{prefix}: secret or secret-file is needed for an operator's coturn"
            )
        secret = secrets.token_urlsafe(32)  # only this process and the coturn it starts know it
    hosts = values.get("hosts", ())
    if not hosts and not managed:
        raise SignalingSettingsError(f"{prefix}.hosts is needed for an operator's coturn")
    try:
        managed_turn = None
        if managed:
            listen = values.get("listen") or tuple(h for h in hosts if _is_address(h))
            given = {k.replace("-", "_"): v for k, v in values.items() if k in _MANAGED_KEYS}
            managed_turn = ManagedTurn(**{**given, "listen": listen})
            if values.get("turns") and managed_turn.tls_cert is None:
                raise TurnConfigError("turns with managed = true needs tls-cert and tls-key")
        settings = TurnSettings(
            secret=secret, hosts=hosts, port=values.get("port", 3478), tls_port=values.get("tls-port", 5349),
            turns=values.get("turns", False), stun=values.get("stun", True),
            ttl=values.get("ttl", DEFAULT_TTL), managed=managed_turn,
        )  # fmt: skip
        settings.turn_config(("127.0.0.1",))  # checks secret, hosts, ports and TTL now, not at start
    except TurnConfigError as exc:
        raise SignalingSettingsError(f"{prefix}: {exc}") from None
    return settings


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
