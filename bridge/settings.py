"""Bridge settings loaded from TOML, with jvb.conf's names where jvb has one (docs/jitsi-protocol.md
section 6).

A file holds the same tree as jvb.conf, written as TOML tables::

    [videobridge.ice.udp]
    port = 10000

    [videobridge.apis.xmpp-client.configs.prosody]
    hostname = "127.0.0.1"
    domain = "auth.meet.example"
    ...

Every key with its default is in `docs/bridge.example.toml`. Key spelling follows jvb: `muc-jids` and
`muc_jids` are the same key (jvb documents both). Keys marked "sluice" below have no jvb counterpart.
An unknown key or a bad value raises `SettingsError` naming the key (and the value).

Environment variables override the file (`ENVIRONMENT` lists them). The `SLUICE_XMPP_*` ones apply to every
XMPP config; with no config in the file, they define one named `env`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.allocation import AllocationSettings
from bridge.colibri2_handler import Colibri2Limits
from bridge.config import BridgeConfig
from bridge.load import DEFAULT_CAPACITY_PPS
from bridge.speakers import SpeechActivityConfig
from bridge.xmpp_core import XmppClientConfig


class SettingsError(ValueError):
    """A settings file or environment variable the bridge cannot run with; the message names the key."""


# ---- value types: each parses a TOML value, or the text of an environment variable


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")
_UNITS = {
    "": 1.0,
    "s": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 1e-3,
    "milli": 1e-3,
    "millis": 1e-3,
    "millisecond": 1e-3,
    "milliseconds": 1e-3,
    "us": 1e-6,
    "micros": 1e-6,
    "microsecond": 1e-6,
    "microseconds": 1e-6,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}


def parse_duration(value: object) -> float:
    """Seconds from a jvb (HOCON) duration string like "5 seconds", "500ms", "1min", or a plain number."""
    if isinstance(value, bool):
        raise ValueError('expected a duration such as 5 or "5 seconds"')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match is None or match.group(2) not in _UNITS:
            raise ValueError('expected a duration such as 5 or "5 seconds" (units: ms, s, min, h, d)')
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError('expected a duration such as 5 or "5 seconds"')
    if not seconds > 0:
        raise ValueError("a duration must be positive")
    return seconds


def _string(value: object, text: bool) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _nonblank(value: object, text: bool) -> str:
    s = _string(value, text)
    if not s.strip():
        raise ValueError("must not be blank")
    return s


def _int(value: object, text: bool) -> int:
    if text and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError("expected an integer") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


def _port(value: object, text: bool) -> int:
    port = _int(value, text)
    if not 0 <= port <= 65535:
        raise ValueError("a port is 0..65535 (0: any free port)")
    return port


def _cpus(value: object, text: bool) -> tuple[int, ...] | None:
    """One CPU (a single shard) or a list, one per shard ("0,1" in the environment); -1: not pinned."""
    if text and isinstance(value, str) and "," in value:
        items: list[object] = [v for v in value.split(",")]
    elif isinstance(value, list):
        items = list(value)
    else:
        items = [value]
    cpus = tuple(_int(v, text) for v in items)
    if cpus == (-1,):
        return None
    usable = sorted(os.sched_getaffinity(0))
    for cpu in cpus:
        if cpu not in usable:
            usable_list = ", ".join(str(c) for c in usable)
            raise ValueError(f"CPU {cpu} is not one this process may run on ({usable_list}); -1: not pinned")
    if len(set(cpus)) != len(cpus):
        raise ValueError("each shard needs a CPU of its own")
    return cpus


#: More shards than this gain nothing on any machine we know of and each costs a thread and ports.
MAX_SHARDS = 64


def _shard_count(value: object, text: bool) -> int:
    count = _int(value, text)
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"a bridge has 1..{MAX_SHARDS} shards")
    return count


def _port_or_disabled(value: object, text: bool) -> int:
    port = _int(value, text)
    if port != -1 and not 0 <= port <= 65535:
        raise ValueError("a port is 0..65535, or -1 for disabled")
    return port


def _tcp_port(value: object, text: bool) -> int:
    port = _int(value, text)
    if not 1 <= port <= 65535:
        raise ValueError("a TCP port to connect to is 1..65535")
    return port


def _positive(value: object, text: bool) -> float:
    if text and isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError("expected a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    if not value > 0:
        raise ValueError("must be positive")
    return float(value)


def _bool(value: object, text: bool) -> bool:
    if text and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _strings(value: object, text: bool) -> tuple[str, ...]:
    # docker's jvb writes lists as one comma-separated string; accept that form everywhere.
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",")]
    elif isinstance(value, list):
        items = value
    else:
        raise ValueError("expected a list of strings")
    if not all(isinstance(s, str) and s.strip() for s in items):
        raise ValueError("expected a list of non-blank strings")
    return tuple(items)


def _addresses(value: object, text: bool) -> tuple[str, ...]:
    items = _strings(value, text)
    for item in items:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address") from None
    return items


def _stun_servers(value: object, text: bool) -> tuple[tuple[str, int], ...]:
    # "host:port" or "[v6]:port", as ice4j's harvest.mapping.stun.addresses names them.
    out = []
    for item in _strings(value, text):
        host, sep, port = item.rpartition(":")
        bare = _host(host) if sep else None
        if bare is None:
            raise ValueError(f"{item!r} is not host:port")
        number = _port(port, True)
        if number == 0:
            raise ValueError(f"{item!r}: a STUN server's port is 1..65535")
        out.append((bare, number))
    return tuple(out)


def _host(text: str) -> str | None:
    """A host name, an IPv4 address or an IPv6 one (bracketed or not), without the brackets; None if not."""
    bracketed = text.startswith("[") and text.endswith("]")
    bare = text[1:-1] if bracketed else text
    if ":" in bare or bracketed:
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            return None
        return bare
    return bare if _HOST_NAME.fullmatch(bare) else None


def _bind_addresses(value: object, text: bool) -> tuple[str, ...]:
    items = _addresses(value, text)
    if not items:
        raise ValueError("the UDP port needs at least one address to bind on")
    return items


def _duration(value: object, text: bool) -> float:
    return parse_duration(value)


def _count(value: object, text: bool) -> int:
    n = _int(value, text)
    if n < 0:
        raise ValueError("must not be negative")
    return n


def _last_n(value: object, text: bool) -> int:
    n = _int(value, text)
    if n < -1:
        raise ValueError("a last-n is a count of videos, or -1 for no limit")
    return n


def _non_negative(value: object, text: bool) -> float:
    if text and isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError("expected a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    if not 0 <= value < float("inf"):
        raise ValueError("must be a number, 0 or more")
    return float(value)


_BITRATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")
_BITRATE_UNITS = {"": 1, "bps": 1, "kbps": 1000, "mbps": 1000**2, "gbps": 1000**3}


def parse_bitrate(value: object) -> int:
    """Bits per second from a jvb bitrate like "500 kbps" or "10 Mbps" (units are powers of 1000, any case),
    or a plain number of bps."""
    if isinstance(value, bool):
        raise ValueError('expected a bitrate such as "500 kbps"')
    if isinstance(value, int | float):
        bps = float(value)
    elif isinstance(value, str):
        match = _BITRATE.match(value.lower())
        if match is None or match.group(2) not in _BITRATE_UNITS:
            raise ValueError('expected a bitrate such as "500 kbps" (units: bps, kbps, Mbps, Gbps)')
        bps = float(match.group(1)) * _BITRATE_UNITS[match.group(2)]
    else:
        raise ValueError('expected a bitrate such as "500 kbps"')
    if not 0 <= bps <= 2**63 - 1:
        raise ValueError("a bitrate is 0 or more")
    return round(bps)


def _bitrate(value: object, text: bool) -> int:
    return parse_bitrate(value)


def _path_segment(value: object, text: bool) -> str:
    s = _nonblank(value, text)
    if "/" in s or "?" in s or "#" in s or any(c.isspace() for c in s):
        raise ValueError("must be one URL path segment (no /, ?, # or spaces)")
    return s


def _regexp(value: object, text: bool) -> str:
    s = _nonblank(value, text)
    try:
        re.compile(s)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return s


def _domains(value: object, text: bool) -> tuple[str, ...]:
    # An empty environment variable clears the list (the public server's own host:port is used then).
    if text and isinstance(value, str) and not value.strip():
        return ()
    items = _strings(value, text)
    for item in items:
        if "/" in item or "?" in item or any(c.isspace() for c in item):
            raise ValueError(f"{item!r} is not a host[:port] (no scheme, no path)")
    return items


_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


def _host_names(value: object, text: bool) -> tuple[str, ...]:
    # Names the Host header may carry (any port); an empty environment variable clears the list.
    if text and isinstance(value, str) and not value.strip():
        return ()
    items = _strings(value, text)
    for item in items:
        if _host(item) is None:
            raise ValueError(f"{item!r} is not a host name or address (no port, no scheme)")
    return items


#: RFC 6750 2.1 b64token: what a client can put after "Bearer " unchanged.
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
MIN_TOKEN_LENGTH = 16


def _token(value: object, text: bool) -> str | None:
    # An empty environment variable means no token (docker-style configs set every variable).
    if text and isinstance(value, str) and not value.strip():
        return None
    token = _string(value, text).strip() if text else _string(value, text)
    if not _TOKEN.fullmatch(token):
        raise ValueError("a bearer token is letters, digits and - . _ ~ + / (RFC 6750), without spaces")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"a bearer token needs at least {MIN_TOKEN_LENGTH} characters")
    return token


Parse = Callable[[object, bool], Any]

#: Every key a file may hold (dotted, as jvb names it) and how its value is read.
_KEYS: dict[str, Parse] = {
    "videobridge.region": _nonblank,
    "videobridge.ice.udp.port": _port,
    "videobridge.ice.udp.bind-addresses": _bind_addresses,  # sluice
    "videobridge.ice.udp.advertised-addresses": _addresses,  # sluice
    "videobridge.ice.tcp.enabled": _bool,
    "videobridge.ice.tcp.port": _tcp_port,
    "videobridge.ice.tcp.mapped-port": _tcp_port,
    "videobridge.ice.tcp.max-connections": _count,  # sluice
    "ice4j.harvest.mapping.stun.addresses": _stun_servers,
    "videobridge.shard.cpu": _cpus,  # sluice
    "videobridge.shard.count": _shard_count,  # sluice
    "videobridge.shard.gso": _bool,  # sluice
    "videobridge.http-servers.private.host": _nonblank,
    "videobridge.http-servers.private.port": _port_or_disabled,
    "videobridge.http-servers.private.allowed-hosts": _host_names,  # sluice
    "videobridge.http-servers.private.token": _token,  # sluice
    "videobridge.http-servers.public.host": _nonblank,
    "videobridge.http-servers.public.port": _port_or_disabled,
    "videobridge.stats.interval": _duration,
    "videobridge.entity-expiration.timeout": _duration,
    "videobridge.entity-expiration.check-interval": _duration,
    "videobridge.shutdown.graceful-shutdown-max-duration": _duration,
    "videobridge.shutdown.graceful-shutdown-min-participants": _count,
    "videobridge.shutdown.shutting-down-delay": _duration,
    "videobridge.initial-drain-mode": _bool,
    "videobridge.websockets.enabled": _bool,
    "videobridge.websockets.server-id": _path_segment,
    "videobridge.websockets.domains": _domains,
    "videobridge.websockets.tls": _bool,
    "videobridge.websockets.enable-compression": _bool,
    "videobridge.websockets.send-keepalive-pings": _bool,
    "videobridge.websockets.keepalive-ping-interval": _duration,
    "videobridge.version.announce": _bool,
    "videobridge.relay.enabled": _bool,
    "videobridge.relay.region": _nonblank,
    "videobridge.relay.relay-id": _nonblank,
    "videobridge.load-management.average-participant-stress": _positive,
    "videobridge.limits.max-conferences": _count,  # sluice
    "videobridge.limits.max-endpoints-per-conference": _count,  # sluice
    "videobridge.limits.max-ssrcs-per-endpoint": _count,  # sluice
    "videobridge.load-management.load-measurements.packet-rate.load-threshold": _positive,
    "videobridge.cc.bwe-change-threshold": _non_negative,
    "videobridge.cc.default-max-height-px": _count,
    "videobridge.cc.onstage-preferred-height-px": _count,
    "videobridge.cc.onstage-preferred-framerate": _positive,
    "videobridge.cc.allow-oversend-onstage": _bool,
    "videobridge.cc.max-oversend-bitrate": _bitrate,
    "videobridge.cc.jvb-last-n": _last_n,
    "videobridge.cc.initial-last-n": _last_n,
    "videobridge.cc.assumed-bandwidth-limit": _bitrate,
    "videobridge.cc.receiver-bandwidth": _bitrate,  # sluice
    "videobridge.cc.trust-bwe": _bool,
    "videobridge.cc.trace-dir": _string,  # sluice
    "videobridge.cc.initial-estimate": _bitrate,  # sluice
    "videobridge.cc.pacing": _bool,  # sluice
    "videobridge.speech-activity.recent-speakers-count": _count,
    "videobridge.speech-activity.enable-silence-detection": _bool,
    "videobridge.speech-activity.silence-detection-timeout": _duration,
    "videobridge.cc.allocation-interval": _duration,  # sluice
}
_XMPP_PREFIX = "videobridge.apis.xmpp-client.configs"
#: Keys of one `[videobridge.apis.xmpp-client.configs.<name>]` table.
_XMPP_KEYS: dict[str, Parse] = {
    "hostname": _nonblank,
    "port": _tcp_port,
    "domain": _nonblank,
    "username": _nonblank,
    "password": _string,
    "muc-jids": _strings,
    "muc-nickname": _nonblank,
    "disable-certificate-verification": _bool,
    "use-tls": _bool,  # sluice: false only for a loopback server without TLS (tests)
    "authorized-source-regexp": _regexp,  # jvb's old AUTHORIZED_SOURCE_REGEXP; default: focus@<domain>
}
_XMPP_REQUIRED = ("hostname", "domain", "username", "password", "muc-jids")

#: Environment variable -> the key it overrides. `xmpp.<key>` applies to every XMPP config.
ENVIRONMENT: dict[str, str] = {
    "SLUICE_UDP_PORT": "videobridge.ice.udp.port",
    "SLUICE_BIND_ADDRESSES": "videobridge.ice.udp.bind-addresses",
    "SLUICE_ADVERTISED_ADDRESSES": "videobridge.ice.udp.advertised-addresses",
    "SLUICE_ICE_TCP_ENABLED": "videobridge.ice.tcp.enabled",
    "SLUICE_ICE_TCP_PORT": "videobridge.ice.tcp.port",
    "SLUICE_ICE_TCP_MAPPED_PORT": "videobridge.ice.tcp.mapped-port",
    "SLUICE_STUN_MAPPING_ADDRESSES": "ice4j.harvest.mapping.stun.addresses",
    "SLUICE_SHARD_CPU": "videobridge.shard.cpu",
    "SLUICE_SHARD_GSO": "videobridge.shard.gso",
    "SLUICE_SHARD_COUNT": "videobridge.shard.count",
    "SLUICE_PRIVATE_HTTP_HOST": "videobridge.http-servers.private.host",
    "SLUICE_PRIVATE_HTTP_PORT": "videobridge.http-servers.private.port",
    "SLUICE_PRIVATE_HTTP_ALLOWED_HOSTS": "videobridge.http-servers.private.allowed-hosts",
    "SLUICE_PRIVATE_HTTP_TOKEN": "videobridge.http-servers.private.token",
    "SLUICE_PUBLIC_HTTP_PORT": "videobridge.http-servers.public.port",
    "SLUICE_WEBSOCKETS_ENABLED": "videobridge.websockets.enabled",
    "SLUICE_WEBSOCKETS_DOMAINS": "videobridge.websockets.domains",
    "SLUICE_STATS_INTERVAL": "videobridge.stats.interval",
    "SLUICE_INITIAL_DRAIN_MODE": "videobridge.initial-drain-mode",
    "SLUICE_REGION": "videobridge.region",
    "SLUICE_RELAY_ID": "videobridge.relay.relay-id",
    "SLUICE_LOAD_THRESHOLD": "videobridge.load-management.load-measurements.packet-rate.load-threshold",
    "SLUICE_XMPP_HOST": "xmpp.hostname",
    "SLUICE_XMPP_PORT": "xmpp.port",
    "SLUICE_XMPP_DOMAIN": "xmpp.domain",
    "SLUICE_XMPP_USERNAME": "xmpp.username",
    "SLUICE_XMPP_PASSWORD": "xmpp.password",
    "SLUICE_XMPP_MUC_JIDS": "xmpp.muc-jids",
    "SLUICE_XMPP_MUC_NICKNAME": "xmpp.muc-nickname",
    "SLUICE_XMPP_DISABLE_CERTIFICATE_VERIFICATION": "xmpp.disable-certificate-verification",
    "SLUICE_XMPP_USE_TLS": "xmpp.use-tls",
    "SLUICE_XMPP_AUTHORIZED_SOURCE_REGEXP": "xmpp.authorized-source-regexp",
}

#: Tables a file may contain (so `[videobridge.ice]` alone is fine, `[videobridge.foo]` is not).
_TABLES = {key.rsplit(".", i)[0] for key in _KEYS for i in range(1, key.count(".") + 1)} | {
    "videobridge.apis",
    "videobridge.apis.xmpp-client",
    _XMPP_PREFIX,
}


# ---- the settings

_LIMITS = Colibri2Limits()
_CC = AllocationSettings()


@dataclass(frozen=True, slots=True)
class XmppSettings:
    """One `[videobridge.apis.xmpp-client.configs.<name>]` table."""

    name: str
    hostname: str
    domain: str
    username: str
    password: str = field(repr=False)
    muc_jids: tuple[str, ...] = ()
    port: int = 5222
    #: Must be unique per bridge (Jicofo identifies a bridge by it); a random UUID per start by default.
    muc_nickname: str = field(default_factory=lambda: str(uuid.uuid4()))
    disable_certificate_verification: bool = False
    use_tls: bool = True
    #: Who may send Colibri2 and health checks (a regular expression on the sender's real JID); None: the
    #: focus account `focus@<domain>`.
    authorized_source_regexp: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `sluice bridge` needs; the defaults are jvb's."""

    udp_port: int = 10000
    bind_addresses: tuple[str, ...] = ("0.0.0.0",)
    advertised_addresses: tuple[str, ...] = ()
    #: ICE-TCP passive candidates (RFC 6544) for clients whose UDP is blocked and who have no TURN; off by
    #: default as in jvb (TURN over TCP/TLS is the better fallback: it survives proxies).
    ice_tcp_enabled: bool = False
    #: jvb's default is 443 with ssltcp; ours 4443 (plain RFC 4571 framing, and no privileged port).
    ice_tcp_port: int = 4443
    ice_tcp_mapped_port: int | None = None
    ice_tcp_max_connections: int = 1024
    #: STUN servers (host, port) asked at start for the public address of each bound one (a 1:1 NAT), which
    #: is then advertised too (ice4j `harvest.mapping.stun.addresses`).
    stun_mapping_servers: tuple[tuple[str, int], ...] = ()
    #: Media (shard) threads, each with its own UDP port (udp_port + its index) and conferences: by default
    #: one per CPU this process may use, or one per CPU of `shard_cpus`.
    shard_count: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    #: The CPU each shard is pinned to (the control plane then keeps off them); None: not pinned.
    shard_cpus: tuple[int, ...] | None = None
    #: Send a receiver's run of equal-size packets as one UDP GSO message (off again by itself where the
    #: kernel refuses).
    shard_gso: bool = True
    private_http_host: str = "127.0.0.1"
    private_http_port: int = 8080
    #: Host header names (any port) the private API answers; its own concrete host is always added.
    private_http_allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    #: When set, every private API request needs `Authorization: Bearer <token>`.
    private_http_token: str | None = field(default=None, repr=False)
    public_http_host: str = "0.0.0.0"
    #: -1: disabled (jvb's default; the public server only carries colibri websockets).
    public_http_port: int = -1
    #: Colibri websockets (the bridge channel) on the public server; needs `public_http_port` != -1.
    websockets_enabled: bool = False
    #: The first path segment after /colibri-ws/; tells bridges apart behind one reverse proxy.
    websockets_server_id: str = "default-id"
    #: host[:port] put in the advertised URLs; empty: the public server's own address.
    websockets_domains: tuple[str, ...] = ()
    #: wss:// (behind a TLS-terminating proxy) rather than ws:// in the advertised URLs.
    websockets_tls: bool = False
    websockets_compression: bool = True
    websockets_keepalive_pings: bool = True
    websockets_keepalive_interval: float = 15.0
    #: Put the version in ServerHello (jvb `videobridge.version.announce`).
    version_announce: bool = False
    #: Seconds between stats samples and brewery presences.
    stats_interval: float = 5.0
    #: An endpoint with no packet in (nor a conference with no endpoint) for this long is expired.
    entity_expiration_timeout: float = 60.0
    entity_expiration_check_interval: float = 60.0
    #: Section 3.4: how long a graceful shutdown may wait for conferences to end.
    graceful_shutdown_max_duration: float = 24 * 3600.0
    #: The graceful shutdown moves on to shutting down at or below this many participants.
    graceful_shutdown_min_participants: int = 0
    #: Between shutting_down=true in presence and the exit (Jicofo moves endpoints away meanwhile).
    shutting_down_delay: float = 60.0
    initial_drain_mode: bool = False
    region: str | None = None
    relay_enabled: bool = False
    relay_id: str | None = None
    average_participant_stress: float = 0.01
    #: Packets per second (in + out) at which stress_level reaches 1.0.
    load_threshold_pps: float = DEFAULT_CAPACITY_PPS
    #: What Colibri2 may allocate here; beyond it, `resource-constraint` (a net under the focus's quotas).
    max_conferences: int = _LIMITS.max_conferences
    max_endpoints_per_conference: int = _LIMITS.max_endpoints_per_conference
    max_ssrcs_per_endpoint: int = _LIMITS.max_ssrcs_per_endpoint
    #: Bandwidth allocation, `[videobridge.cc]` (bridge/allocation.py, docs/allocation.md).
    cc_bwe_change_threshold: float = _CC.bwe_change_threshold
    cc_default_max_height_px: int = _CC.default_max_height_px
    cc_onstage_preferred_height_px: int = _CC.onstage_preferred_height_px
    cc_onstage_preferred_framerate: float = _CC.onstage_preferred_framerate
    cc_allow_oversend_onstage: bool = _CC.allow_oversend_onstage
    cc_max_oversend_bitrate_bps: int = _CC.max_oversend_bitrate_bps
    cc_jvb_last_n: int = _CC.jvb_last_n
    cc_initial_last_n: int = _CC.initial_last_n
    #: None: a receiver's assumedBandwidthBps is ignored.
    cc_assumed_bandwidth_limit_bps: int | None = _CC.assumed_bandwidth_limit_bps
    #: Every receiver's available bandwidth until congestion control estimates it (jvb's initial estimate).
    cc_receiver_bandwidth_bps: int = 2_500_000
    #: Allocate within a receiver's transport-cc estimate once it has one, probing its link before switching
    #: it up (jvb's `trust-bwe`, on there too). Off, a receiver gets what `receiver-bandwidth` allows whatever
    #: its link carries: one behind a small link loses packets and freezes.
    cc_trust_bwe: bool = True
    #: How often layer bitrates are read from the packet path and every conference reallocated.
    cc_allocation_interval: float = 1.0
    #: A directory each transport's congestion-control trace is written to (a line per packet: for
    #: debugging and for recording the estimator's test traces; None: no traces).
    cc_trace_dir: str | None = None
    #: A receiver's send-side estimate before its first transport-cc feedback, where its allocation starts
    #: (None: 2.5 Mbit/s, as jvb starts). libwebrtc's 300 kbit/s, probed up at once at 3x and 6x, spares a
    #: receiver behind a small link the first second's overflow (2.5 Mbit/s sends it 720p before any
    #: feedback, audio lost with it) (README, the impairment scorecard).
    cc_initial_estimate_bps: int | None = 300_000
    #: Pace each receiver's video to 1.5x its estimate (None: when trust-bwe is on, the only time the
    #: estimate sizes what is sent).
    cc_pacing: bool | None = None
    #: Dominant speaker detection, `[videobridge.speech-activity]` (bridge/speakers.py).
    recent_speakers_count: int = 10
    enable_silence_detection: bool = False
    silence_detection_timeout: float = 3.0
    xmpp: tuple[XmppSettings, ...] = ()

    def bridge_config(self) -> BridgeConfig:
        return BridgeConfig(
            udp_port=self.udp_port,
            bind_addresses=list(self.bind_addresses),
            advertised_addresses=list(self.advertised_addresses),
            ice_tcp_port=self.ice_tcp_port if self.ice_tcp_enabled else None,
            ice_tcp_mapped_port=self.ice_tcp_mapped_port,
            ice_tcp_max_connections=self.ice_tcp_max_connections,
            stun_mapping_servers=list(self.stun_mapping_servers),
            shards=self.shard_count,
            shard_cpus=None if self.shard_cpus is None else list(self.shard_cpus),
            gso=self.shard_gso,
            cc_trace_dir=self.cc_trace_dir,
            cc_initial_estimate_bps=self.cc_initial_estimate_bps,
            cc_pacing=self.cc_trust_bwe if self.cc_pacing is None else self.cc_pacing,
        )

    def colibri2_limits(self) -> Colibri2Limits:
        return Colibri2Limits(
            max_conferences=self.max_conferences,
            max_endpoints_per_conference=self.max_endpoints_per_conference,
            max_ssrcs_per_endpoint=self.max_ssrcs_per_endpoint,
        )

    def allocation_settings(self) -> AllocationSettings:
        return AllocationSettings(
            default_max_height_px=self.cc_default_max_height_px,
            onstage_preferred_height_px=self.cc_onstage_preferred_height_px,
            onstage_preferred_framerate=self.cc_onstage_preferred_framerate,
            allow_oversend_onstage=self.cc_allow_oversend_onstage,
            max_oversend_bitrate_bps=self.cc_max_oversend_bitrate_bps,
            initial_last_n=self.cc_initial_last_n,
            jvb_last_n=self.cc_jvb_last_n,
            bwe_change_threshold=self.cc_bwe_change_threshold,
            assumed_bandwidth_limit_bps=self.cc_assumed_bandwidth_limit_bps,
        )

    def speech_activity(self) -> SpeechActivityConfig:
        return SpeechActivityConfig(
            recent_speakers_count=self.recent_speakers_count,
            enable_silence_detection=self.enable_silence_detection,
            silence_detection_timeout=self.silence_detection_timeout,
        )

    def xmpp_client_configs(self) -> list[XmppClientConfig]:
        return [
            XmppClientConfig(
                hostname=x.hostname,
                port=x.port,
                domain=x.domain,
                username=x.username,
                password=x.password,
                muc_jids=list(x.muc_jids),
                muc_nickname=x.muc_nickname,
                use_tls=x.use_tls,
                disable_certificate_verification=x.disable_certificate_verification,
                authorized_source_regexp=x.authorized_source_regexp,
                presence_interval=self.stats_interval,
                region=self.region,
                # Section 8.7: advertise relay_id only when relays work.
                relay_id=self.relay_id if self.relay_enabled else None,
                average_participant_stress=self.average_participant_stress,
                capacity_pps=self.load_threshold_pps,
            )
            for x in self.xmpp
        ]


# ---- loading


def _norm(key: str) -> str:
    return key.lower().replace("_", "-")


def _flatten(
    table: Mapping[str, object], prefix: str, flat: dict[str, object], xmpp: dict[str, dict[str, object]]
) -> None:
    for raw_key, value in table.items():
        dotted = f"{prefix}.{_norm(raw_key)}" if prefix else _norm(raw_key)
        if dotted in ("signaling", "logging"):
            continue  # the focus's and XMPP server's tables (signaling/settings.py), the log format (sluice)
        if prefix == _XMPP_PREFIX:
            # The config's name is the operator's, kept as written.
            if not isinstance(value, dict):
                raise SettingsError(f"{prefix}.{raw_key} must be a table of XMPP connection settings")
            entry = xmpp.setdefault(raw_key, {})
            for k, v in value.items():
                key = _norm(k)
                if key not in _XMPP_KEYS:
                    raise SettingsError(f"unknown key {prefix}.{raw_key}.{k}")
                entry[key] = v
        elif isinstance(value, dict):
            if dotted not in _TABLES:
                raise SettingsError(f"unknown key {prefix + '.' if prefix else ''}{raw_key}")
            _flatten(value, dotted, flat, xmpp)
        elif dotted in _KEYS:
            flat[dotted] = value
        else:
            raise SettingsError(f"unknown key {prefix + '.' if prefix else ''}{raw_key}")


#: Keys whose value an error message must not repeat (it ends up in logs).
_SECRET_KEYS = ("videobridge.http-servers.private.token", ".password")


def _convert(parse: Parse, key: str, value: object, origin: str | None) -> Any:
    try:
        return parse(value, origin is not None)
    except ValueError as exc:
        where = f" (from {origin})" if origin else ""
        shown = "(hidden)" if key.endswith(_SECRET_KEYS) else repr(value)
        raise SettingsError(f"bad value for {key}{where}: {shown}: {exc}") from None


def parse_settings(text: str, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from TOML text, then the SLUICE_* variables of `environ` (default: none)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"not valid TOML: {exc}") from None
    flat: dict[str, object] = {}
    xmpp: dict[str, dict[str, object]] = {}
    _flatten(doc, "", flat, xmpp)

    values: dict[str, Any] = {key: _convert(_KEYS[key], key, value, None) for key, value in flat.items()}
    xmpp_values: dict[str, dict[str, Any]] = {
        name: {k: _convert(_XMPP_KEYS[k], f"{_XMPP_PREFIX}.{name}.{k}", v, None) for k, v in entry.items()}
        for name, entry in xmpp.items()
    }

    for var, key in ENVIRONMENT.items():
        if environ is None or var not in environ:
            continue
        raw = environ[var]
        if key.startswith("xmpp."):
            sub = key.removeprefix("xmpp.")
            for name in xmpp_values or {"env": {}}:
                converted = _convert(_XMPP_KEYS[sub], f"{_XMPP_PREFIX}.{name}.{sub}", raw, var)
                xmpp_values.setdefault(name, {})[sub] = converted
        else:
            values[key] = _convert(_KEYS[key], key, raw, var)

    return _build(values, xmpp_values)


def _build(values: Mapping[str, Any], xmpp_values: Mapping[str, Mapping[str, Any]]) -> Settings:
    if values.get("videobridge.relay.enabled"):
        raise SettingsError(
            "bad value for videobridge.relay.enabled: True: relays (Octo) are not implemented yet; "
            "leave it false so Jicofo keeps each conference on one bridge"
        )
    configs = []
    for name, entry in xmpp_values.items():
        missing = [k for k in _XMPP_REQUIRED if k not in entry]
        if missing:
            raise SettingsError(f"{_XMPP_PREFIX}.{name} lacks {', '.join(missing)}")
        if not entry["muc-jids"]:
            raise SettingsError(f"bad value for {_XMPP_PREFIX}.{name}.muc-jids: []: name the brewery room")
        kwargs = {k.replace("-", "_"): v for k, v in entry.items()}
        configs.append(XmppSettings(name=name, **kwargs))
    defaults = Settings()
    get = values.get
    if get("videobridge.websockets.enabled") and get("videobridge.http-servers.public.port", -1) == -1:
        raise SettingsError(
            "videobridge.websockets.enabled is true but videobridge.http-servers.public.port is -1: "
            "colibri websockets are served on the public HTTP server, so give it a port"
        )
    cpus = get("videobridge.shard.cpu")
    shards = get("videobridge.shard.count", len(cpus) if cpus else len(os.sched_getaffinity(0)))
    if cpus is not None and len(cpus) != shards:
        raise SettingsError(
            f"videobridge.shard.cpu names {len(cpus)} CPUs for {shards} shards (videobridge.shard.count): "
            "pin each shard to a CPU of its own, or none"
        )
    udp_port = get("videobridge.ice.udp.port", defaults.udp_port)
    tcp_port = get("videobridge.ice.tcp.port", defaults.ice_tcp_port)
    for name, port in (("videobridge.ice.udp.port", udp_port), ("videobridge.ice.tcp.port", tcp_port)):
        if port and port + shards - 1 > 65535:
            raise SettingsError(f"{name} {port}: its {shards} shards need ports {port}..{port + shards - 1}")
    overlap = udp_port and tcp_port and abs(udp_port - tcp_port) < shards
    if get("videobridge.ice.tcp.enabled", False) and overlap:
        raise SettingsError(
            f"videobridge.ice.tcp.port is among the UDP ports ({udp_port}..{udp_port + shards - 1}, one per "
            "shard): ICE-TCP needs ports of its own (the packet path tells the two apart by local address)"
        )
    host = get("videobridge.http-servers.private.host", defaults.private_http_host)
    allowed_hosts = get("videobridge.http-servers.private.allowed-hosts", defaults.private_http_allowed_hosts)
    if not allowed_hosts and _is_wildcard(host):
        raise SettingsError(
            f"videobridge.http-servers.private.allowed-hosts is empty and host is {host!r}: "
            "every request to the private API would be refused; name the hosts it is reached by"
        )
    return Settings(
        udp_port=udp_port,
        bind_addresses=get("videobridge.ice.udp.bind-addresses", defaults.bind_addresses),
        advertised_addresses=get("videobridge.ice.udp.advertised-addresses", defaults.advertised_addresses),
        ice_tcp_enabled=get("videobridge.ice.tcp.enabled", defaults.ice_tcp_enabled),
        ice_tcp_port=tcp_port,
        ice_tcp_mapped_port=get("videobridge.ice.tcp.mapped-port", defaults.ice_tcp_mapped_port),
        ice_tcp_max_connections=get("videobridge.ice.tcp.max-connections", defaults.ice_tcp_max_connections),
        stun_mapping_servers=get("ice4j.harvest.mapping.stun.addresses", defaults.stun_mapping_servers),
        shard_count=shards,
        shard_cpus=cpus,
        shard_gso=get("videobridge.shard.gso", defaults.shard_gso),
        private_http_host=host,
        private_http_port=get("videobridge.http-servers.private.port", defaults.private_http_port),
        private_http_allowed_hosts=allowed_hosts,
        private_http_token=get("videobridge.http-servers.private.token", defaults.private_http_token),
        public_http_host=get("videobridge.http-servers.public.host", defaults.public_http_host),
        public_http_port=get("videobridge.http-servers.public.port", defaults.public_http_port),
        websockets_enabled=get("videobridge.websockets.enabled", defaults.websockets_enabled),
        websockets_server_id=get("videobridge.websockets.server-id", defaults.websockets_server_id),
        websockets_domains=get("videobridge.websockets.domains", defaults.websockets_domains),
        websockets_tls=get("videobridge.websockets.tls", defaults.websockets_tls),
        websockets_compression=get(
            "videobridge.websockets.enable-compression", defaults.websockets_compression
        ),
        websockets_keepalive_pings=get(
            "videobridge.websockets.send-keepalive-pings", defaults.websockets_keepalive_pings
        ),
        websockets_keepalive_interval=get(
            "videobridge.websockets.keepalive-ping-interval", defaults.websockets_keepalive_interval
        ),
        version_announce=get("videobridge.version.announce", defaults.version_announce),
        stats_interval=get("videobridge.stats.interval", defaults.stats_interval),
        entity_expiration_timeout=get(
            "videobridge.entity-expiration.timeout", defaults.entity_expiration_timeout
        ),
        entity_expiration_check_interval=get(
            "videobridge.entity-expiration.check-interval", defaults.entity_expiration_check_interval
        ),
        graceful_shutdown_max_duration=get(
            "videobridge.shutdown.graceful-shutdown-max-duration", defaults.graceful_shutdown_max_duration
        ),
        graceful_shutdown_min_participants=get(
            "videobridge.shutdown.graceful-shutdown-min-participants",
            defaults.graceful_shutdown_min_participants,
        ),
        shutting_down_delay=get("videobridge.shutdown.shutting-down-delay", defaults.shutting_down_delay),
        initial_drain_mode=get("videobridge.initial-drain-mode", defaults.initial_drain_mode),
        # jvb reads the region from the relay block; the top-level key is the older spelling.
        region=get("videobridge.relay.region", get("videobridge.region")),
        relay_enabled=False,
        relay_id=get("videobridge.relay.relay-id"),
        average_participant_stress=get(
            "videobridge.load-management.average-participant-stress", defaults.average_participant_stress
        ),
        load_threshold_pps=get(
            "videobridge.load-management.load-measurements.packet-rate.load-threshold",
            defaults.load_threshold_pps,
        ),
        max_conferences=get("videobridge.limits.max-conferences", defaults.max_conferences),
        max_endpoints_per_conference=get(
            "videobridge.limits.max-endpoints-per-conference", defaults.max_endpoints_per_conference
        ),
        max_ssrcs_per_endpoint=get(
            "videobridge.limits.max-ssrcs-per-endpoint", defaults.max_ssrcs_per_endpoint
        ),
        cc_bwe_change_threshold=get("videobridge.cc.bwe-change-threshold", defaults.cc_bwe_change_threshold),
        cc_default_max_height_px=get(
            "videobridge.cc.default-max-height-px", defaults.cc_default_max_height_px
        ),
        cc_onstage_preferred_height_px=get(
            "videobridge.cc.onstage-preferred-height-px", defaults.cc_onstage_preferred_height_px
        ),
        cc_onstage_preferred_framerate=get(
            "videobridge.cc.onstage-preferred-framerate", defaults.cc_onstage_preferred_framerate
        ),
        cc_allow_oversend_onstage=get(
            "videobridge.cc.allow-oversend-onstage", defaults.cc_allow_oversend_onstage
        ),
        cc_max_oversend_bitrate_bps=get(
            "videobridge.cc.max-oversend-bitrate", defaults.cc_max_oversend_bitrate_bps
        ),
        cc_jvb_last_n=get("videobridge.cc.jvb-last-n", defaults.cc_jvb_last_n),
        cc_initial_last_n=get("videobridge.cc.initial-last-n", defaults.cc_initial_last_n),
        cc_assumed_bandwidth_limit_bps=get(
            "videobridge.cc.assumed-bandwidth-limit", defaults.cc_assumed_bandwidth_limit_bps
        ),
        cc_receiver_bandwidth_bps=get(
            "videobridge.cc.receiver-bandwidth", defaults.cc_receiver_bandwidth_bps
        ),
        cc_allocation_interval=get("videobridge.cc.allocation-interval", defaults.cc_allocation_interval),
        cc_trust_bwe=get("videobridge.cc.trust-bwe", defaults.cc_trust_bwe),
        cc_trace_dir=get("videobridge.cc.trace-dir", defaults.cc_trace_dir),
        cc_initial_estimate_bps=get("videobridge.cc.initial-estimate", defaults.cc_initial_estimate_bps),
        cc_pacing=get("videobridge.cc.pacing", defaults.cc_pacing),
        recent_speakers_count=get(
            "videobridge.speech-activity.recent-speakers-count", defaults.recent_speakers_count
        ),
        enable_silence_detection=get(
            "videobridge.speech-activity.enable-silence-detection", defaults.enable_silence_detection
        ),
        silence_detection_timeout=get(
            "videobridge.speech-activity.silence-detection-timeout", defaults.silence_detection_timeout
        ),
        xmpp=tuple(configs),
    )


def read_toml(path: str | Path) -> dict[str, Any]:
    """A settings file as a TOML document (for the `[signaling.*]` tables `sluice serve` also reads)."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None


def _is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


def load_settings(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the file at `path` (None: defaults only) and the process environment by default."""
    env = os.environ if environ is None else environ
    if path is None:
        return parse_settings("", env)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_settings(text, env)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from None
