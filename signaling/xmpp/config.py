"""Configuration of the embedded XMPP server (Debian Jitsi layout: one base domain, derived domains)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from signaling.domains import JitsiDomains
from signaling.turn import TurnConfig
from signaling.xmpp.token import TokenConfig


@dataclass(frozen=True, slots=True)
class XmppLimits:
    """Per-server limits; exceeding one gets a clear XMPP error and bumps a counter in `stats()`."""

    #: Largest stanza (bytes on the wire); larger is a `policy-violation` stream error (RFC 6120 §4.9.3.14).
    max_stanza_bytes: int = 256 * 1024
    #: Deepest element nesting inside a stanza.
    max_depth: int = 64
    #: Token bucket per session: sustained stanzas per second and burst size.
    stanza_rate: float = 100.0
    stanza_burst: float = 300.0
    #: Sessions authenticated with a configured account (focus, bridges) are not rate limited, like Jitsi's
    #: Prosody `unlimited_jids`.
    rate_limit_accounts: bool = False
    #: Bytes waiting for one peer (our queue plus the transport's buffer, above the kernel's socket buffer)
    #: before it is cut off as a slow reader. The biggest burst a healthy client gets is joining a full room:
    #: one presence per occupant, about 1 KiB each from Jitsi clients (~100 KB at 100 occupants), so 1 MiB
    #: leaves a tenfold margin while a client that stops reading costs at most this much.
    max_send_queue_bytes: int = 1024 * 1024
    #: Seconds output may wait with the peer taking no byte of it before the peer is cut off as stalled.
    #: TCP backs off retransmits exponentially, so a live peer can stall about twice as long as its network
    #: outage; 30 s rides out ~15 s outages, and the byte bound caps what a stalled peer holds meanwhile.
    send_stall_timeout: float = 30.0
    #: Open connections (authenticated or not); more get `resource-constraint`.
    max_connections: int = 10_000
    #: Seconds from connect until a bound resource; then `connection-timeout`.
    unauthenticated_timeout: float = 30.0
    #: Failed SASL attempts on one connection before it is closed.
    max_auth_failures: int = 3
    max_occupants_per_room: int = 100
    #: People waiting in one room's lobby at once; more get `service-unavailable` ("The lobby is full").
    max_lobby_occupants_per_room: int = 50
    #: Seconds a knock may wait in a lobby unanswered; then it is sent away with the reason.
    lobby_knock_timeout: float = 300.0
    #: Open connections from one source address; more get `resource-constraint`. Offices behind one NAT
    #: share an address, so this is generous.
    max_connections_per_address: int = 100
    #: Conference rooms one session may sit in at once (a visitor needs one; a tab per room is plenty).
    max_rooms_per_session: int = 5
    #: Conference IQs that would create a room (the room does not exist yet), per source address and minute.
    room_creations_per_minute_per_address: int = 20
    #: Rooms alive at once that were created at the request of one source address.
    max_rooms_per_address: int = 20
    #: XEP-0215 queries (each issues TURN credentials) one session may make per minute. A client asks once
    #: per join and again before an ICE restart; more is refused with `resource-constraint`.
    external_service_requests_per_minute: int = 10


@dataclass(frozen=True, slots=True)
class XmppServerConfig(JitsiDomains):
    domain: str = "meet.sluice"
    #: Bare JID (`focus@auth.<domain>`) -> password, for SASL PLAIN/SCRAM on the auth domain.
    accounts: Mapping[str, str] = field(default_factory=dict)
    #: Bare JIDs allowed to create rooms on the conference MUC (the focus is always one).
    admins: tuple[str, ...] = ()
    #: Bare JIDs of the deployment's other components (the bridge accounts). With the focus they are the
    #: only sessions admitted to the internal MUC (the brewery) and the only ones that may address each
    #: other's accounts directly; every other session, anonymous or not, is refused there.
    components: tuple[str, ...] = ()
    tcp_host: str = "127.0.0.1"
    #: 0 = an ephemeral port, readable as `XmppServer.tcp_port` after start.
    tcp_port: int = 5222
    #: With both set, c2s offers STARTTLS and requires it (RFC 6120 §5.3.1); without, streams are plain.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: STUN/TURN services and the TURN secret for XEP-0215; None: the server answers service-unavailable.
    turn: TurnConfig | None = None
    limits: XmppLimits = field(default_factory=XmppLimits)
    #: JWT tokens (Jitsi's token auth): verified at SASL ANONYMOUS on the login domain when the WebSocket URL
    #: carries `?token=`. None: tokens are ignored.
    token: TokenConfig | None = None
    #: Sessions without a token may log in anonymously on the login domain (Jitsi's allow_empty_token with
    #: tokens on). False with tokens on: a token-only server; accounts on the auth domain still log in.
    allow_anonymous: bool = True
    #: Only authenticated sessions (a user account on the auth domain, or a token) may start a meeting
    #: (make the focus create a room); guests may join one that exists (Jitsi's secure domain).
    secure_domain: bool = False
    #: The users file of `sluice user` (SCRAM credentials, mode 0600): user accounts on the auth domain.
    users_file: str | None = None

    @property
    def focus_bare_jid(self) -> str:
        return f"focus@{self.auth_domain}"

    @property
    def focus_jid(self) -> str:
        return f"{self.focus_bare_jid}/focus"

    @property
    def brewery_jid(self) -> str:
        return self.default_brewery_jid

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert and self.tls_key)

    def is_admin(self, bare_jid: str) -> bool:
        bare = bare_jid.lower()
        return bare == self.focus_bare_jid.lower() or any(bare == admin.lower() for admin in self.admins)

    def is_component(self, bare_jid: str) -> bool:
        """The focus or a configured component account (never an anonymous or ordinary session)."""
        bare = bare_jid.lower()
        return bare == self.focus_bare_jid.lower() or any(bare == c.lower() for c in self.components)
