"""STUN and TURN services for clients, with TURN credentials that expire (sans-IO).

The credentials are the "TURN REST" scheme (draft-uberti-behave-turn-rest) that coturn verifies with
`use-auth-secret` and `static-auth-secret`: the username is `<expiry as Unix time>:<user>`, the password
`base64(HMAC-SHA1(secret, username))`. coturn recomputes the password from the secret and refuses a username
whose expiry has passed, so the XMPP server hands them out without telling coturn anything, and a client
cannot forge or extend one. An allocation made before the expiry lives on (coturn keeps the session's key);
only new allocations need fresh credentials.

`services(config, user, now)` lists what a client is told (XEP-0215 `<service/>` elements are built from it
in signaling/xmpp/extdisco.py): STUN on each host, TURN over UDP and TCP, and TURNS (TLS over TCP) when
configured. `now` is wall-clock Unix time: the expiry is absolute, as coturn reads it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

#: Prosody's mod_external_services and Jitsi's default: a day outlasts any call, so a client's ICE restart
#: late in a long call still gets a relay; the managed relay reaches only the bridge, so a leaked credential
#: gives nothing but a path to the bridge's media port (docs/security.md).
DEFAULT_TTL = 86400.0
MIN_TTL = 60.0
MAX_TTL = 7 * 86400.0
#: A host clients are told: a DNS name or an IP address literal.
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
#: What may follow the expiry in a username: coturn splits on ':' and the name travels in STUN attributes.
_USER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

ServiceType = Literal["stun", "turn", "turns"]
Transport = Literal["udp", "tcp"]
_TURN_TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp")


class TurnConfigError(ValueError):
    """A TURN configuration that cannot work; the message says which value."""


def check_host(host: str) -> str:
    """`host` if it is a DNS name or an IP address; raises TurnConfigError otherwise."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOST.match(host) or ".." in host:
        raise TurnConfigError(f"bad TURN host {host!r}: a DNS name or an IP address")
    return host


@dataclass(frozen=True, slots=True)
class TurnConfig:
    """Where clients find STUN and TURN, and the secret their TURN credentials are signed with."""

    secret: str
    #: Names or addresses clients are told (one service set per host).
    hosts: tuple[str, ...]
    #: coturn's listening port: STUN and TURN over UDP and over TCP.
    port: int = 3478
    #: TURN over TLS (`turns`), offered only with `turns`.
    tls_port: int = 5349
    turns: bool = False
    #: Also tell clients the hosts as STUN servers (coturn answers Binding requests on `port`).
    stun: bool = True
    #: Seconds a credential may start allocations after it is issued.
    ttl: float = DEFAULT_TTL

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise TurnConfigError("the TURN secret must be at least 16 characters")
        if not self.hosts:
            raise TurnConfigError("TURN needs at least one host")
        for host in self.hosts:
            check_host(host)
        for name, port in (("port", self.port), ("tls-port", self.tls_port)):
            if not 1 <= port <= 65535:
                raise TurnConfigError(f"bad TURN {name} {port}: 1..65535")
        if not MIN_TTL <= self.ttl <= MAX_TTL:
            raise TurnConfigError(f"bad TURN ttl {self.ttl:g}: {MIN_TTL:g}..{MAX_TTL:g} seconds")


@dataclass(frozen=True, slots=True)
class Service:
    """One external service as XEP-0215 describes it."""

    type: ServiceType
    host: str
    port: int
    transport: Transport
    username: str | None = None
    password: str | None = None
    #: Unix time after which the credentials start nothing (None: no credentials).
    expires: float | None = None

    @property
    def restricted(self) -> bool:
        """Needs credentials (XEP-0215 `restricted="1"`)."""
        return self.password is not None


def rest_credentials(secret: str, user: str, expires: int) -> tuple[str, str]:
    """The TURN REST username and password for `user` valid until `expires` (Unix seconds)."""
    if not _USER.match(user):
        raise ValueError(f"bad TURN user {user!r}")
    username = f"{expires}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def turn_user(name: str) -> str:
    """A TURN user name for an XMPP local part (or any name): itself when it is short and plain, else a
    digest of it, so no ':' or odd character reaches coturn's username."""
    if _USER.match(name):
        return name
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def services(config: TurnConfig, user: str, now: float) -> list[Service]:
    """What a client is told at Unix time `now`: STUN, TURN/UDP, TURN/TCP (and TURNS) on every host; the
    TURN ones with credentials for `user` that expire `config.ttl` seconds from now."""
    expires = int(now + config.ttl)
    username, password = rest_credentials(config.secret, user, expires)
    out: list[Service] = []
    for host in config.hosts:
        if config.stun:
            out.append(Service("stun", host, config.port, "udp"))
        for transport in _TURN_TRANSPORTS:
            out.append(Service("turn", host, config.port, transport, username, password, float(expires)))
        if config.turns:
            out.append(Service("turns", host, config.tls_port, "tcp", username, password, float(expires)))
    return out


def xep0082(when: float) -> str:
    """A Unix time as an XEP-0082 DateTime in UTC (`2026-12-06T04:00:00Z`)."""
    return datetime.fromtimestamp(int(when), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def peer_range(text: str) -> tuple[str, str]:
    """An address, a CIDR block or `first-last`, as the (first, last) range coturn's peer rules take."""
    try:
        if "-" in text:
            first, last = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
            if first.version != last.version or int(first) > int(last):
                raise ValueError
            return str(first), str(last)
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise TurnConfigError(f"bad TURN peer {text!r}: an address, a CIDR block or first-last") from None
    return str(net.network_address), str(net.broadcast_address)


@dataclass(frozen=True, slots=True)
class ManagedTurn:
    """How `sluice serve` runs coturn itself (sluice/coturn.py) when `managed = true`."""

    #: Addresses coturn listens and relays on; default: the hosts that are IP addresses.
    listen: tuple[str, ...] = ()
    #: The relay ports (one per allocation); coturn's own default range.
    min_port: int = 49152
    max_port: int = 65535
    #: Peers it may relay to besides the bridge's media addresses (addresses, CIDR blocks, first-last).
    allowed_peers: tuple[str, ...] = ()
    #: Allocations alive at once in total (coturn's total-quota).
    max_allocations: int = 1000
    #: Certificate and key files for TURNS (coturn's cert and pkey), needed with `turns`.
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        for address in self.listen:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise TurnConfigError(f"bad TURN listen address {address!r}: an IP address") from None
        if not 1024 <= self.min_port <= self.max_port <= 65535:
            raise TurnConfigError(
                f"bad TURN relay ports {self.min_port}..{self.max_port}: 1024..65535, min <= max"
            )
        for peer in self.allowed_peers:
            peer_range(peer)
        if self.max_allocations < 1:
            raise TurnConfigError("max-allocations must be at least 1")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise TurnConfigError("tls-cert and tls-key go together")
