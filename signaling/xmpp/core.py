"""The XMPP server core, sans-IO: c2s stream negotiation, sessions, the router and server-handled IQs.

The asyncio adapters (server.py) own the sockets and the clock. They call into `XmppCore`/`Connection` with
bytes (TCP) or text messages (WebSocket) and the current time, then drain `take_dirty()`: every connection
with output gets its `take_output()` list of text to write and actions (`StartTls`, `Close`) to perform in
order. `poll_timeout()`/`handle_timer(now)` drive the unauthenticated-connection timeout and the expiry of
unanswered lobby knocks.

Stream negotiation (RFC 6120): stream header -> [STARTTLS, required when the server has a certificate] ->
SASL (ANONYMOUS on the login domain, SCRAM/PLAIN on the accounts domain) -> stream restart -> resource
binding (§7) -> the legacy session IQ (RFC 3921 §3; slixmpp and strophe.js still send it) -> stanzas.
Bad input is answered with the RFC's stream or stanza error, counted, and only ever closes its own stream.

Access control (docs/security.md): ANONYMOUS verifies the JWT a WebSocket URL carried when tokens are on
(token.py; refused with `not-authorized` and `<reason>: <text>`); the accounts domain also takes the users
of the users file (users.py); conference IQs are checked against a token's room claim and, on a secure
domain, refused to guests for rooms that do not exist yet.
"""

from __future__ import annotations

import base64
import binascii
import enum
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from signaling import turn
from signaling.quota import RateLimit
from signaling.xmpp import extdisco, sasl
from signaling.xmpp.config import XmppServerConfig
from signaling.xmpp.jid import Jid, JidError
from signaling.xmpp.muc import MucError, MucService
from signaling.xmpp.parser import Event, ParseError, Stanza, StreamClose, StreamOpen, StreamParser
from signaling.xmpp.token import REASONS, TokenClaims, TokenError, TokenVerifier
from signaling.xmpp.users import UserStore
from signaling.xmpp.xmlutil import (
    IQ,
    MESSAGE,
    NS_BIND,
    NS_CLIENT,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_FRAMING,
    NS_PING,
    NS_ROSTER,
    NS_SASL,
    NS_SESSION,
    NS_STREAMS,
    NS_TLS,
    NS_VERSION,
    PRESENCE,
    STANZA_TAGS,
    error_reply,
    escape_attr,
    features_text,
    iq_result,
    serialize,
    stream_error_text,
)

SERVER_NAME = "Sluice"
#: The focus's namespace: the conference IQ a client sends to `focus.<domain>` (docs/jitsi-protocol.md 5.2).
NS_FOCUS = "http://jitsi.org/protocol/focus"
#: What a session that is not a component may ask of `focus.<domain>`.
_FOCUS_REQUESTS = (f"{{{NS_FOCUS}}}conference", f"{{{NS_DISCO_INFO}}}query", f"{{{NS_PING}}}ping")
#: A room asked for but not created within this long no longer counts against its requester's address.
_PENDING_ROOM_GRACE = 30.0
#: Requests to `focus.<domain>` remembered (to make the focus's answer come from there), and for how long.
_MAX_PROXIED = 10_000
_PROXIED_TTL = 60.0
#: Longest `?room=` taken from a WebSocket URL (room names are at most 64 characters; longer is ignored).
_MAX_ROOM_HINT = 64


class Framing(enum.Enum):
    TCP = "tcp"
    WEBSOCKET = "websocket"


@dataclass(frozen=True, slots=True)
class StartTls:
    """Upgrade the transport to TLS now (after writing everything before it); then `tls_established()`."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the transport after writing everything before it."""


Output = str | StartTls | Close


class _Phase(enum.Enum):
    TLS = "tls"  # STARTTLS required first
    AUTH = "auth"
    BIND = "bind"
    ACTIVE = "active"
    CLOSED = "closed"


class Connection:
    """One client connection (TCP or WebSocket) and, once bound, its session."""

    def __init__(
        self,
        core: XmppCore,
        cid: int,
        framing: Framing,
        now: float,
        *,
        secure: bool,
        address: str,
        token: str | None = None,
        room: str | None = None,
    ) -> None:
        limits = core.config.limits
        self.core = core
        self.id = cid
        self.framing = framing
        self.secure = secure
        #: The peer's IP address (quotas per source address); "" when the adapter does not know it.
        self.address = address
        self.parser = StreamParser(
            max_stanza_bytes=limits.max_stanza_bytes,
            max_depth=limits.max_depth,
            framed=framing is Framing.WEBSOCKET,
        )
        self.outbox: list[Output] = []
        self.phase = _Phase.TLS if self._tls_required() else _Phase.AUTH
        self.stream_open = False
        self.header_sent = False
        self.host: str | None = None
        self.user: Jid | None = None  # authenticated bare JID
        self.account = False  # authenticated with a configured account (focus, bridges)
        self.registered = False  # authenticated as a user of the users file (`sluice user`)
        #: The JWT the WebSocket URL carried (`?token=`), verified at SASL ANONYMOUS; then its claims.
        self.token = token
        #: The room the WebSocket URL named (`?room=`, as Jitsi's clients send it): with a token, its room
        #: claim is checked at login already. Only a hint: every conference IQ and join is checked again.
        self.room_hint = room.lower() if room and len(room) <= _MAX_ROOM_HINT else None
        self.claims: TokenClaims | None = None
        self.jid: Jid | None = None  # bound full JID
        self.sasl: sasl.Exchange | None = None
        self._mechanism = ""
        self.auth_failures = 0
        self.deadline: float | None = now + limits.unauthenticated_timeout
        self.tokens = limits.stanza_burst
        self.tokens_at = now
        #: Why this connection is refused at its stream header ("" while it is not).
        self.over_limit = ""
        self._restarted = False

    # ---- input from the adapter

    def receive_data(self, now: float, data: bytes) -> None:
        """Bytes from a TCP stream."""
        if self.phase is not _Phase.CLOSED:
            self._handle_events(now, self.parser.feed(data))

    def receive_frame(self, now: float, message: str | bytes) -> None:
        """One WebSocket message (RFC 7395: one `<open/>`, `<close/>` or stanza per message)."""
        if self.phase is not _Phase.CLOSED:
            self._handle_events(now, self.parser.feed_frame(message))

    def tls_established(self, now: float) -> None:
        """The adapter finished the TLS handshake that `StartTls` asked for; the stream restarts."""
        self.secure = True
        self.parser.restart()
        self.stream_open = False
        self.header_sent = False
        if self.phase is _Phase.TLS:
            self.phase = _Phase.AUTH

    def connection_lost(self, now: float) -> None:
        """The transport is gone (peer closed, error, or our Close done)."""
        if self.phase is not _Phase.CLOSED:
            self.phase = _Phase.CLOSED
        self.core._connection_gone(self)

    def take_output(self) -> list[Output]:
        out, self.outbox = self.outbox, []
        return out

    @property
    def closed(self) -> bool:
        return self.phase is _Phase.CLOSED

    @property
    def authenticated(self) -> bool:
        """Not a guest: a configured account, a user account, or a verified token (secure domain)."""
        return self.account or self.registered or self.claims is not None

    @property
    def component(self) -> bool:
        """Authenticated as the focus or a configured component account (see `XmppServerConfig`)."""
        return self.account and self.user is not None and self.core.config.is_component(str(self.user))

    # ---- output

    def _write(self, text: str) -> None:
        self.outbox.append(text)
        self.core._mark_dirty(self)

    def send_stanza(self, stanza: ET.Element) -> None:
        if self.phase is _Phase.CLOSED:
            return
        default_ns = NS_CLIENT if self.framing is Framing.TCP else None
        self._write(serialize(stanza, default_ns))
        self.core.counters["stanzas_out"] += 1

    def _send_element(self, elem: ET.Element) -> None:
        """A non-stanza element (SASL, TLS, features) with its own namespace declared."""
        self._write(serialize(elem, None))

    def _send_header(self) -> None:
        host = self.host or self.core.config.domain
        stream_id = secrets.token_hex(8)
        if self.framing is Framing.TCP:
            self._write(
                f"<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'"
                f" id='{stream_id}' from='{escape_attr(host)}' version='1.0' xml:lang='en'>"
            )
        else:
            self._write(
                f'<open xmlns="{NS_FRAMING}" id="{stream_id}" from="{escape_attr(host)}"'
                ' version="1.0" xml:lang="en"/>'
            )
        self.header_sent = True

    def stream_error(self, condition: str, text: str | None = None) -> None:
        """RFC 6120 §4.9: error, close the stream, end the session. Touches nothing else."""
        if self.phase is _Phase.CLOSED:
            return
        self.core.counters["stream_errors"] += 1
        self.core.counters[f"stream_error_{condition.replace('-', '_')}"] += 1
        if not self.header_sent:
            self._send_header()
        self._write(stream_error_text(condition, text))
        self._close_stream()

    def _close_stream(self) -> None:
        if self.framing is Framing.TCP:
            self._write("</stream:stream>")
        else:
            self._write(f'<close xmlns="{NS_FRAMING}"/>')
        self.outbox.append(Close())
        self.phase = _Phase.CLOSED
        self.core._session_ended(self)

    # ---- events

    def _tls_required(self) -> bool:
        return self.framing is Framing.TCP and self.core.config.tls_enabled and not self.secure

    def _handle_events(self, now: float, events: list[Event]) -> None:
        self._restarted = False
        for event in events:
            if self.phase is _Phase.CLOSED or self._restarted:
                return  # bytes after a stream restart belong to the old document; clients do not pipeline
            if isinstance(event, StreamOpen):
                self._on_open(event.attrs)
            elif isinstance(event, Stanza):
                self._on_element(now, event.element)
            elif isinstance(event, StreamClose):
                self._close_stream()
            elif isinstance(event, ParseError):
                counter = {
                    "not-well-formed": "malformed_xml",
                    "restricted-xml": "restricted_xml",
                    "policy-violation": "stanza_too_large",
                }.get(event.condition, "malformed_xml")
                self.core.counters[counter] += 1
                self.stream_error(event.condition, event.text)

    def _on_open(self, attrs: dict[str, str]) -> None:
        cfg = self.core.config
        if self.stream_open:
            self.stream_error("bad-format", "the stream is already open")
            return
        to = attrs.get("to", "").lower()
        if self.over_limit:
            self.host = cfg.domain
            self.stream_error("resource-constraint", self.over_limit)
            return
        if to not in (cfg.domain, cfg.auth_domain) or (self.host is not None and to != self.host):
            self.stream_error("host-unknown", f"This server does not serve {to or 'an empty host'}")
            return
        self.host = to
        self.stream_open = True
        self._send_header()
        if not attrs.get("version", "").startswith("1."):
            self.stream_error("unsupported-version", "XMPP 1.0 is required")
            return
        self._write(features_text(self._features()))

    def _features(self) -> list[ET.Element]:
        features: list[ET.Element] = []
        if self.phase is _Phase.TLS:
            tls = ET.Element(f"{{{NS_TLS}}}starttls")
            ET.SubElement(tls, f"{{{NS_TLS}}}required")
            features.append(tls)
        elif self.phase is _Phase.AUTH:
            mechanisms = ET.Element(f"{{{NS_SASL}}}mechanisms")
            for name in self._mechanisms():
                ET.SubElement(mechanisms, f"{{{NS_SASL}}}mechanism").text = name
            features.append(mechanisms)
        elif self.phase is _Phase.BIND:
            features.append(ET.Element(f"{{{NS_BIND}}}bind"))
            session = ET.Element(f"{{{NS_SESSION}}}session")
            ET.SubElement(session, f"{{{NS_SESSION}}}optional")
            features.append(session)
        return features

    def _mechanisms(self) -> tuple[str, ...]:
        cfg = self.core.config
        return sasl.mechanisms_for(self.host or "", anonymous_host=cfg.domain, accounts_host=cfg.auth_domain)

    def _on_element(self, now: float, elem: ET.Element) -> None:
        self.core.counters["stanzas_in"] += 1
        if not self.stream_open:
            self.stream_error("bad-format", "stanza before the stream header")
        elif self.phase is _Phase.TLS:
            self._on_tls_phase(elem)
        elif elem.tag.startswith(f"{{{NS_SASL}}}"):
            self._on_sasl(elem)
        elif elem.tag == f"{{{NS_TLS}}}starttls":
            self._send_element(ET.Element(f"{{{NS_TLS}}}failure"))  # RFC 6120 §5.4.2.2
            self._close_stream()
        elif elem.tag not in STANZA_TAGS:
            self.stream_error("unsupported-stanza-type", f"unexpected element {elem.tag}")
        elif self.phase is _Phase.AUTH:
            self.stream_error("not-authorized", "authenticate first")
        elif not self._take_token(now):
            self.core.counters["rate_limited"] += 1
            rate = self.core.config.limits.stanza_rate
            self._bounce(elem, "policy-violation", "wait", f"Stanza rate limit exceeded ({rate:g}/s)")
        elif elem.tag == IQ and self._session_iq(elem):
            pass
        elif self.phase is _Phase.BIND:
            self.stream_error("not-authorized", "bind a resource first")
        else:
            self.core._route_from(now, self, elem)

    def _on_tls_phase(self, elem: ET.Element) -> None:
        if elem.tag == f"{{{NS_TLS}}}starttls":
            self._send_element(ET.Element(f"{{{NS_TLS}}}proceed"))
            self.outbox.append(StartTls())
            self._restarted = True
        else:
            self.stream_error("policy-violation", "STARTTLS is required")

    def _take_token(self, now: float) -> bool:
        limits = self.core.config.limits
        if self.account and not limits.rate_limit_accounts:
            return True
        elapsed = max(now - self.tokens_at, 0.0)
        self.tokens = min(limits.stanza_burst, self.tokens + elapsed * limits.stanza_rate)
        self.tokens_at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def _bounce(self, stanza: ET.Element, condition: str, error_type: str, text: str | None = None) -> None:
        """A stanza error back to this session (RFC 6120 §8.3), never in reply to an error."""
        reply = error_reply(stanza, condition, error_type, text)
        if reply is None:
            return
        reply.set("from", stanza.get("to") or (self.host or self.core.config.domain))
        if self.jid is not None:
            reply.set("to", str(self.jid))
        else:
            reply.attrib.pop("to", None)
        self.core.counters["stanza_errors_sent"] += 1
        self.send_stanza(reply)

    # ---- SASL (RFC 6120 §6)

    def _on_sasl(self, elem: ET.Element) -> None:
        local = elem.tag.rpartition("}")[2]
        if self.phase is not _Phase.AUTH:
            self.stream_error("policy-violation", "already authenticated")
            return
        if local == "abort":
            self.sasl = None
            self._sasl_failure("aborted")
            return
        try:
            data = _b64(elem.text)
        except binascii.Error:
            self.sasl = None
            self._sasl_failure("incorrect-encoding")
            return
        if local == "auth":
            mechanism = elem.get("mechanism", "")
            if mechanism not in self._mechanisms():
                self._sasl_failure("invalid-mechanism")
                return
            self._mechanism = mechanism
            self.sasl, step = sasl.start(mechanism, data, host=self.host or "", accounts=self.core.accounts)
        elif local == "response" and self.sasl is not None:
            step = self.sasl.step(data or b"")
        else:
            self.stream_error("unsupported-stanza-type", f"unexpected SASL element {local}")
            return
        if isinstance(step, sasl.Challenge):
            challenge = ET.Element(f"{{{NS_SASL}}}challenge")
            challenge.text = base64.b64encode(step.data).decode() if step.data else "="
            self._send_element(challenge)
        elif isinstance(step, sasl.Success):
            self.sasl = None
            if self._mechanism == "ANONYMOUS" and not self._anonymous_allowed():
                return
            self.user = step.jid
            self.account = self._mechanism != "ANONYMOUS" and self.core.accounts.configured(step.jid)
            self.registered = self._mechanism != "ANONYMOUS" and not self.account
            if self._mechanism == "ANONYMOUS" and self.claims is None:
                self.core.counters["anonymous_logins"] += 1
            elif self.registered:
                self.core.counters["user_logins"] += 1
                # By mechanism (a bounded set: what the accounts domain offers).
                self.core.counters[f"user_logins_{self._mechanism.lower().replace('-', '_')}"] += 1
            success = ET.Element(f"{{{NS_SASL}}}success")
            if step.data:
                success.text = base64.b64encode(step.data).decode()
            self._send_element(success)
            self.core.counters["auth_success"] += 1
            self.phase = _Phase.BIND
            self.stream_open = False
            self.header_sent = False
            self.parser.restart()
            self._restarted = True
        else:
            self.sasl = None
            self._sasl_failure(step.condition, step.text)

    def _anonymous_allowed(self) -> bool:
        """SASL ANONYMOUS on the login domain: verifies the token when tokens are on and one came, refuses a
        session without one on a token-only server. False: refused (answered and counted)."""
        core = self.core
        verifier = core.token_verifier
        if verifier is None and not core.config.allow_anonymous:
            core.counters["anonymous_refused"] += 1
            self._sasl_failure(
                "not-authorized", "anonymous logins are not allowed here: log in with an account"
            )
            return False
        if verifier is None or (self.token is None and core.config.allow_anonymous):
            return True
        try:
            claims = verifier.verify(self.token)
            if self.room_hint is not None and not claims.allows_room(self.room_hint):
                raise TokenError(
                    "wrong_room", f"the token is for room {claims.room!r}, not {self.room_hint!r}"
                )
            self.claims = claims
        except TokenError as exc:
            core.count_token_refusal(exc.reason)
            self._sasl_failure("not-authorized", f"{exc.reason}: {exc.text}")
            return False
        core.counters["token_logins"] += 1
        return True

    def _sasl_failure(self, condition: str, text: str = "") -> None:
        failure = ET.Element(f"{{{NS_SASL}}}failure")
        ET.SubElement(failure, f"{{{NS_SASL}}}{condition}")
        if text:
            ET.SubElement(failure, f"{{{NS_SASL}}}text").text = text
        self._send_element(failure)
        if condition == "aborted":
            return
        self.core.counters["auth_failure"] += 1
        self.auth_failures += 1
        if self.auth_failures >= self.core.config.limits.max_auth_failures:
            self.stream_error("policy-violation", "Too many failed authentication attempts")

    # ---- resource binding (RFC 6120 §7) and the legacy session IQ

    def _session_iq(self, iq: ET.Element) -> bool:
        """Handles bind and session IQs; False for every other IQ."""
        bind = iq.find(f"{{{NS_BIND}}}bind")
        session = iq.find(f"{{{NS_SESSION}}}session")
        if bind is None and session is None:
            return False
        well_formed = iq.get("type") == "set" and len(iq) == 1 and iq.get("to") in (None, self.host)
        if not well_formed:
            if self.phase is not _Phase.BIND:
                return False  # routed like any other IQ
            self._bounce(iq, "bad-request", "modify")
        elif session is not None:
            self.send_stanza(iq_result(_without_to(iq)))
        elif self.phase is not _Phase.BIND:
            self._bounce(iq, "not-allowed", "cancel", "A resource is already bound")
        else:
            assert bind is not None
            self._bind(iq, bind)
        return True

    def _bind(self, iq: ET.Element, bind: ET.Element) -> None:
        resource = (bind.findtext(f"{{{NS_BIND}}}resource") or "").strip()
        assert self.user is not None, "the BIND phase follows SASL success"
        if not resource:
            resource = uuid.uuid4().hex[:12]  # RFC 6120 §7.6.1: the server generates one
        try:
            full = Jid.parse(f"{self.user}/{resource}")
        except JidError as exc:
            self._bounce(iq, "bad-request", "modify", f"bad resource: {exc}")
            return
        self.core._bind(self, full)
        result = ET.Element(f"{{{NS_BIND}}}bind")
        ET.SubElement(result, f"{{{NS_BIND}}}jid").text = str(full)
        reply = iq_result(_without_to(iq), result)
        reply.set("to", str(full))
        self.send_stanza(reply)


def _without_to(iq: ET.Element) -> ET.Element:
    copy = ET.Element(iq.tag, {k: v for k, v in iq.attrib.items() if k not in ("to", "from")})
    return copy


def _b64(text: str | None) -> bytes | None:
    """SASL payload: absent -> None, `=` -> empty (RFC 6120 §6.4.2), else strict base64."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text == "=":
        return b""
    return base64.b64decode(text, validate=True)


class XmppCore:
    """All connections, sessions, the router and the MUC services of one server."""

    def __init__(
        self,
        config: XmppServerConfig,
        users: UserStore | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        #: Unix time, for the absolute expiry of TURN credentials (the `now` the adapter passes is monotonic).
        self.wall_clock = wall_clock
        self.counters: Counter[str] = Counter()
        #: The users file's accounts on the auth domain; the adapter loads and refreshes it.
        self.users = users
        self.accounts = sasl.Accounts(config.accounts, users, config.auth_domain)
        self.token_verifier = TokenVerifier(config.token, config.domain) if config.token is not None else None
        # Every refusal reason shows in /metrics from the start (0), not only once it happened.
        if self.token_verifier is not None:
            for name in ("token_logins", "token_refused", *(f"token_refused_{r}" for r in REASONS)):
                self.counters[name] = 0
        if config.secure_domain:
            self.counters["room_creations_refused_guest"] = 0
        self.connections: dict[int, Connection] = {}
        self.sessions: dict[Jid, Connection] = {}
        self._next_id = 0
        self._dirty: dict[int, Connection] = {}
        limits = config.limits
        self._per_address: Counter[str] = Counter()
        self._room_creations = RateLimit(limits.room_creations_per_minute_per_address, 60.0)
        per_minute = limits.external_service_requests_per_minute
        #: None: 0 a minute, every XEP-0215 query refused.
        self._extdisco_requests = RateLimit(per_minute, 60.0) if per_minute > 0 else None
        #: Conference rooms asked for by a session that is not a component: room -> (address, when asked).
        self._room_requesters: dict[Jid, tuple[str, float]] = {}
        #: IQs forwarded to the focus through `focus.<domain>`: (requester, id) -> when, oldest first.
        self._proxied: OrderedDict[tuple[Jid, str], float] = OrderedDict()

        def is_admin(jid: Jid) -> bool:
            return config.is_admin(str(jid.bare))

        def is_component(jid: Jid) -> bool:
            return config.is_component(str(jid.bare))

        # Lobby rooms: created by the conference service alone (when a room turns members-only); anyone may
        # knock; moderators of the main room moderate its lobby (muc.py).
        lobby = MucService(
            config.lobby_muc_domain,
            restrict_creation=True,
            is_admin=lambda _jid: False,
            max_occupants=limits.max_lobby_occupants_per_room,
            counters=self.counters,
            name="Lobbies",
            max_rooms_per_occupant=limits.max_rooms_per_session,
            creator_is_owner=False,
            join_check=self._lobby_join_check,
            token_of=self._token_of,
            knock_timeout=limits.lobby_knock_timeout,
        )
        self.lobby = lobby
        self.mucs: dict[str, MucService] = {
            config.muc_domain: MucService(
                config.muc_domain,
                restrict_creation=True,
                is_admin=is_admin,
                max_occupants=limits.max_occupants_per_room,
                counters=self.counters,
                name="Conferences",
                max_rooms_per_occupant=limits.max_rooms_per_session,
                on_destroyed=self._room_destroyed,
                join_check=self._muc_join_check,
                token_of=self._token_of,
                lobby=lobby,
            ),
            config.lobby_muc_domain: lobby,
            # The brewery: components only; real JIDs for the focus (the only admin) alone.
            config.internal_muc_domain: MucService(
                config.internal_muc_domain,
                restrict_creation=False,
                is_admin=lambda jid: jid.bare == Jid.parse(config.focus_bare_jid),
                max_occupants=limits.max_occupants_per_room,
                counters=self.counters,
                name="Internal",
                admit=is_component,
                default_whois="moderators",
                creator_is_owner=False,
            ),
        }
        self._hosts = (config.domain, config.auth_domain)

    # ---- adapter interface

    def open_connection(
        self,
        now: float,
        framing: Framing,
        *,
        secure: bool = False,
        address: str = "",
        token: str | None = None,
        room: str | None = None,
    ) -> Connection:
        """A new transport; `address` is the peer's IP (per-address quotas) when the adapter knows it,
        `token` the JWT its WebSocket URL carried (`?token=`) and `room` the room it named (`?room=`)."""
        self._next_id += 1
        conn = Connection(
            self, self._next_id, framing, now, secure=secure, address=address, token=token, room=room
        )
        limits = self.config.limits
        if len(self.connections) >= limits.max_connections:
            conn.over_limit = "Too many connections"
            self.counters["connections_refused"] += 1
        elif address and self._per_address[address] >= limits.max_connections_per_address:
            conn.over_limit = "Too many connections from your address"
            self.counters["connections_refused"] += 1
            self.counters["connections_refused_per_address"] += 1
        self.connections[conn.id] = conn
        if address:
            self._per_address[address] += 1
        self.counters["connections_opened"] += 1
        return conn

    def take_dirty(self) -> list[Connection]:
        dirty = list(self._dirty.values())
        self._dirty.clear()
        return dirty

    def poll_timeout(self) -> float | None:
        deadlines = [c.deadline for c in self.connections.values() if c.deadline is not None and not c.closed]
        knock = self.lobby.next_knock_deadline()
        if knock is not None:
            deadlines.append(knock)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        for stanza in self.lobby.expire_knocks(now):
            self._deliver_generated(stanza)
        for conn in list(self.connections.values()):
            if conn.deadline is not None and conn.deadline <= now and not conn.closed:
                conn.deadline = None
                self.counters["unauthenticated_timeouts"] += 1
                conn.stream_error("connection-timeout", "No session was established in time")

    def stats(self) -> dict[str, int]:
        """Counters since start plus current gauges."""
        out = dict(sorted(self.counters.items()))
        out["connections"] = len(self.connections)
        out["sessions"] = len(self.sessions)
        out["rooms"] = sum(len(m.rooms) for m in self.mucs.values())
        out["occupants"] = sum(len(r.occupants) for m in self.mucs.values() for r in m.rooms.values())
        return out

    def _mark_dirty(self, conn: Connection) -> None:
        self._dirty[conn.id] = conn

    # ---- sessions

    def _bind(self, conn: Connection, full: Jid) -> None:
        old = self.sessions.get(full)
        if old is not None and old is not conn:
            # Prosody's default conflict resolution: the new session replaces the old one.
            self.counters["sessions_replaced"] += 1
            old.stream_error("conflict", "Replaced by a new connection")
        conn.jid = full
        conn.phase = _Phase.ACTIVE
        conn.deadline = None
        self.sessions[full] = conn
        self.counters["sessions_bound"] += 1

    def _session_ended(self, conn: Connection) -> None:
        jid = conn.jid
        if jid is None or self.sessions.get(jid) is not conn:
            return
        del self.sessions[jid]
        for muc in self.mucs.values():
            for stanza in muc.session_ended(jid):
                self._deliver_generated(stanza)

    def _connection_gone(self, conn: Connection) -> None:
        self._session_ended(conn)
        if self.connections.pop(conn.id, None) is not None:
            self.counters["connections_closed"] += 1
            if conn.address:
                self._per_address[conn.address] -= 1
                if self._per_address[conn.address] <= 0:
                    del self._per_address[conn.address]
        self._dirty.pop(conn.id, None)

    # ---- routing

    def _route_from(self, now: float, conn: Connection, stanza: ET.Element) -> None:
        to = self._destination(conn, stanza)
        if to is None:
            return
        sender = conn.jid
        assert sender is not None, "only bound sessions route"
        if (
            stanza.tag == IQ
            and stanza.get("type") in ("result", "error")
            and self._is_focus(conn)
            and self._proxied.pop((to, stanza.get("id", "")), None) is not None
        ):
            # client_proxy: the answer comes from where the client sent its request.
            stanza.set("from", self.config.focus_domain)
        if not conn.component and to.local and self._is_component_account(to):
            self._refuse_component_address(conn, stanza)
            return
        muc = self.mucs.get(to.domain)
        if muc is not None:
            for out in muc.handle(stanza, sender, to, now):
                self._deliver_generated(out)
        elif to.domain == self.config.focus_domain:
            self._to_focus(now, conn, stanza)
        elif to.domain not in self._hosts:
            if stanza.tag != PRESENCE:
                conn._bounce(stanza, "remote-server-not-found", "cancel", "This server does not federate")
        elif not to.local:
            self._to_server(now, conn, stanza, to)
        elif to.resource:
            self._to_full(now, conn, stanza, to)
        else:
            self._to_bare(now, conn, stanza, to)

    def _destination(self, conn: Connection, stanza: ET.Element) -> Jid | None:
        """The stanza's `to` after checks, or None when it was answered or needs no routing."""
        sender = conn.jid
        assert sender is not None, "only bound sessions route"
        if not self._stamp_and_check(conn, sender, stanza):
            return None
        to_text = stanza.get("to")
        if to_text is None:
            if stanza.tag == PRESENCE:
                self._broadcast_presence(conn, stanza)
                return None
            return sender.bare
        try:
            return Jid.parse(to_text)
        except JidError as exc:
            conn._bounce(stanza, "jid-malformed", "modify", str(exc))
            return None

    @staticmethod
    def _stamp_and_check(conn: Connection, sender: Jid, stanza: ET.Element) -> bool:
        """RFC 6120 §8.1.2.1: `from` is the session's JID; iqs need an id, a type and one payload."""
        claimed = stanza.get("from")
        if claimed is not None and claimed not in (str(sender), str(sender.bare)):
            try:
                ok = Jid.parse(claimed) in (sender, sender.bare)
            except JidError:
                ok = False
            if not ok:
                conn.stream_error("invalid-from", "from does not match the bound JID")
                return False
        stanza.set("from", str(sender))
        kind = stanza.get("type")
        if stanza.tag == IQ and (kind not in ("get", "set", "result", "error") or "id" not in stanza.attrib):
            conn._bounce(stanza, "bad-request", "modify", "an iq needs an id and a valid type")
            return False
        if stanza.tag == IQ and kind in ("get", "set") and len(stanza) != 1:
            conn._bounce(stanza, "bad-request", "modify", "an iq get/set carries exactly one payload")
            return False
        return True

    def _broadcast_presence(self, conn: Connection, stanza: ET.Element) -> None:
        """Presence without `to` goes to the (absent) roster; going offline also leaves every room."""
        if stanza.get("type") == "unavailable" and conn.jid is not None:
            for muc in self.mucs.values():
                for out in muc.session_ended(conn.jid):
                    self._deliver_generated(out)

    def _room_destroyed(self, room: Jid) -> None:
        self._room_requesters.pop(room, None)

    def _is_component_account(self, to: Jid) -> bool:
        return to.domain == self.config.auth_domain and self.config.is_component(str(to.bare))

    def _refuse_component_address(self, conn: Connection, stanza: ET.Element) -> None:
        """Sessions that are not components never reach the focus's or a bridge's account directly: they
        talk to the focus through `focus.<domain>` and their rooms. `service-unavailable` also hides
        whether the account exists (RFC 6121 §8.5.3.1)."""
        self.counters["component_stanzas_refused"] += 1
        if stanza.tag != PRESENCE:
            conn._bounce(stanza, "service-unavailable", "cancel")

    def _to_focus(self, now: float, conn: Connection, stanza: ET.Element) -> None:
        """Prosody's client_proxy: stanzas for focus.<domain> reach the focus session, `to` unchanged.

        A session that is not a component may send only what a client needs: the conference IQ (subject to
        the room-creation quotas of its address), disco#info and ping."""
        if not conn.component:
            payload = stanza[0] if stanza.tag == IQ and len(stanza) == 1 else None
            if (
                payload is None
                or stanza.get("type") not in ("get", "set")
                or payload.tag not in _FOCUS_REQUESTS
            ):
                self.counters["focus_requests_refused"] += 1
                if stanza.tag != PRESENCE:
                    conn._bounce(stanza, "service-unavailable", "cancel", "Only the conference request")
                return
            if payload.tag == f"{{{NS_FOCUS}}}conference" and not (
                self._room_access(conn, stanza, payload) and self._room_quota(now, conn, stanza, payload)
            ):
                return
        focus = self.sessions.get(Jid.parse(self.config.focus_jid))
        if focus is None:
            conn._bounce(stanza, "service-unavailable", "cancel", "The focus is not connected")
            return
        if stanza.tag == IQ and stanza.get("type") in ("get", "set") and conn.jid is not None:
            while self._proxied and (
                len(self._proxied) >= _MAX_PROXIED or next(iter(self._proxied.values())) < now - _PROXIED_TTL
            ):
                self._proxied.popitem(last=False)
            self._proxied[(conn.jid, stanza.get("id", ""))] = now
        focus.send_stanza(stanza)

    def _is_focus(self, conn: Connection) -> bool:
        return conn.jid is not None and conn.jid == Jid.parse(self.config.focus_jid)

    def _room_access(self, conn: Connection, stanza: ET.Element, payload: ET.Element) -> bool:
        """A token's room claim, and on a secure domain who may start a meeting. True: go on."""
        try:
            room = Jid.parse(payload.get("room", ""))
        except JidError:
            return True  # the focus answers bad-request
        refusal = self._token_room_refusal(conn, room)
        if refusal is not None:
            conn._bounce(stanza, "not-allowed", "cancel", refusal)
            return False
        muc = self.mucs[self.config.muc_domain]
        exists = room.bare in muc.rooms or room.bare in self._room_requesters
        if not self.config.secure_domain or conn.authenticated or exists or room.domain != muc.domain:
            return True
        # Jicofo's answer to a guest on a secure domain: not-authorized (the client offers a login).
        self.counters["room_creations_refused"] += 1
        self.counters["room_creations_refused_guest"] += 1
        text = "Only authenticated users may start a meeting: log in, or wait for the host"
        conn._bounce(stanza, "not-authorized", "auth", text)
        return False

    def _room_quota(self, now: float, conn: Connection, stanza: ET.Element, payload: ET.Element) -> bool:
        """Per source address: rooms created per minute and rooms alive at once. True: forward it."""
        try:
            room = Jid.parse(payload.get("room", ""))
        except JidError:
            return True  # the focus answers bad-request
        muc = self.mucs[self.config.muc_domain]
        if room.domain != muc.domain or room.bare in muc.rooms or room.bare in self._room_requesters:
            return True  # not a creation
        address = conn.address or f"session:{conn.id}"
        limits = self.config.limits
        for other, (_, asked) in list(self._room_requesters.items()):
            if other not in muc.rooms and now - asked > _PENDING_ROOM_GRACE:
                del self._room_requesters[other]  # asked for, never created
        alive = sum(1 for addr, _ in self._room_requesters.values() if addr == address)
        if alive >= limits.max_rooms_per_address:
            self.counters["room_creations_refused"] += 1
            self.counters["room_creations_refused_concurrent"] += 1
            conn._bounce(
                stanza,
                "resource-constraint",
                "wait",
                f"Too many rooms created from your address ({limits.max_rooms_per_address} at once)",
            )
            return False
        if not self._room_creations.allow(address, now):
            self.counters["room_creations_refused"] += 1
            self.counters["room_creations_refused_rate"] += 1
            conn._bounce(
                stanza,
                "resource-constraint",
                "wait",
                f"Too many rooms created from your address "
                f"({limits.room_creations_per_minute_per_address} per minute)",
            )
            return False
        self._room_requesters[room.bare] = (address, now)
        return True

    def _token_room_refusal(self, conn: Connection, room: Jid) -> str | None:
        """Why `conn`'s token does not let it into `room` (counted), or None."""
        claims = conn.claims
        if claims is None or room.domain != self.config.muc_domain or claims.allows_room(room.local):
            return None
        self.count_token_refusal("wrong_room")
        return f"wrong_room: the token is for room {claims.room!r}, not {room.local!r}"

    def count_token_refusal(self, reason: str) -> None:
        self.counters["token_refused"] += 1
        self.counters[f"token_refused_{reason}"] += 1

    def _muc_join_check(self, sender: Jid, room: Jid) -> MucError | None:
        """The conference MUC asks before a join: a token's room claim must allow the room."""
        conn = self.sessions.get(sender)
        if conn is None:
            return None
        refusal = self._token_room_refusal(conn, room)
        return None if refusal is None else MucError("not-allowed", "cancel", refusal)

    def _lobby_join_check(self, sender: Jid, room: Jid) -> MucError | None:
        """A knock is a join of the main room as far as a token's room claim goes."""
        if not room.local:
            return None
        return self._muc_join_check(sender, Jid.parse(f"{room.local}@{self.config.muc_domain}"))

    def _token_of(self, sender: Jid) -> TokenClaims | None:
        conn = self.sessions.get(sender)
        return None if conn is None else conn.claims

    def _to_full(self, now: float, conn: Connection, stanza: ET.Element, to: Jid) -> None:
        target = self.sessions.get(to)
        if target is not None:
            target.send_stanza(stanza)
            return
        if stanza.tag == MESSAGE and stanza.get("type", "normal") in ("normal", "chat"):
            self._to_bare(now, conn, stanza, to.bare)  # RFC 6121 §8.5.3.2.1: fall back to the bare JID
        elif stanza.tag != PRESENCE:
            conn._bounce(stanza, "service-unavailable", "cancel")

    def _resources(self, bare: Jid) -> list[Connection]:
        return [c for j, c in self.sessions.items() if j.bare == bare]

    def _to_bare(self, now: float, conn: Connection, stanza: ET.Element, to: Jid) -> None:
        if stanza.tag == IQ:
            self._to_server(now, conn, stanza, to)  # RFC 6120 §10.5.3.1: the server answers for the account
            return
        targets = self._resources(to)
        if stanza.tag == PRESENCE:
            if stanza.get("type") in (None, "unavailable"):
                for target in targets:
                    target.send_stanza(stanza)
            return
        kind = stanza.get("type", "normal")
        if targets and kind in ("normal", "chat", "headline"):
            for target in targets:
                target.send_stanza(stanza)
        elif kind in ("normal", "chat"):
            conn._bounce(stanza, "service-unavailable", "cancel", "The recipient is offline")

    def _to_server(self, now: float, conn: Connection, stanza: ET.Element, to: Jid) -> None:
        """Stanzas to a hosted domain or an account's bare JID, which the server answers itself."""
        if stanza.tag != IQ:
            if stanza.tag == MESSAGE:
                conn._bounce(stanza, "service-unavailable", "cancel")
            return
        kind = stanza.get("type")
        if kind not in ("get", "set"):
            return
        sender = conn.jid
        assert sender is not None
        payload = stanza[0]
        tag = payload.tag
        own = to == sender.bare
        known = not to.local or own or to in self.accounts or bool(self._resources(to))
        reply_payload: ET.Element | None
        if not known:
            conn._bounce(stanza, "service-unavailable", "cancel")
            return
        if kind == "get" and tag == f"{{{NS_PING}}}ping":
            reply_payload = None
        elif kind == "get" and tag == f"{{{NS_DISCO_INFO}}}query" and not payload.get("node"):
            reply_payload = self._disco_info(to)
        elif kind == "get" and tag == f"{{{NS_DISCO_ITEMS}}}query" and not payload.get("node"):
            reply_payload = self._disco_items(to, conn.component)
        elif kind == "get" and tag == f"{{{NS_VERSION}}}query" and not to.local:
            reply_payload = ET.Element(tag)
            ET.SubElement(reply_payload, f"{{{NS_VERSION}}}name").text = SERVER_NAME
            ET.SubElement(reply_payload, f"{{{NS_VERSION}}}version").text = "0.1.0"
        elif kind == "get" and extdisco.is_query(payload) and not to.local and self.config.turn is not None:
            reply_payload = self._external_services(now, conn, stanza, payload)
            if reply_payload is None:
                return
        elif tag == f"{{{NS_ROSTER}}}query" and own:
            if kind == "set":
                conn._bounce(stanza, "not-allowed", "cancel", "This server keeps no rosters")
                return
            reply_payload = ET.Element(tag)  # an empty roster, so clients do not stall
        else:
            conn._bounce(stanza, "service-unavailable", "cancel")
            return
        reply = iq_result(stanza, reply_payload)
        reply.set("from", str(to))
        conn.send_stanza(reply)

    def _external_services(
        self, now: float, conn: Connection, stanza: ET.Element, query: ET.Element
    ) -> ET.Element | None:
        """XEP-0215 for any session of our domains, anonymous guests included (they are the web client's
        users; docs/security.md): STUN/TURN with fresh credentials, at a bounded rate per session. None when
        the query was answered with an error."""
        config = self.config.turn
        assert config is not None and conn.jid is not None
        if self._extdisco_requests is None or not self._extdisco_requests.allow(conn.jid, now):
            self.counters["extdisco_rate_limited"] += 1
            rate = self.config.limits.external_service_requests_per_minute
            conn._bounce(
                stanza, "resource-constraint", "wait", f"Too many service requests ({rate} per minute)"
            )
            return None
        user = turn.turn_user(conn.jid.local or conn.jid.domain)
        try:
            payload = extdisco.answer(query, turn.services(config, user, self.wall_clock()))
        except extdisco.ExtDiscoError as exc:
            self.counters["extdisco_bad_requests"] += 1
            conn._bounce(stanza, exc.condition, exc.error_type, exc.text)
            return None
        if any(child.get("restricted") == "1" for child in payload):
            self.counters["turn_credentials_issued"] += 1
        return payload

    def _disco_info(self, to: Jid) -> ET.Element:
        query = ET.Element(f"{{{NS_DISCO_INFO}}}query")
        identity = f"{{{NS_DISCO_INFO}}}identity"
        features: tuple[str, ...]
        if to.local:
            ET.SubElement(query, identity, {"category": "account", "type": "registered"})
            features = (NS_DISCO_INFO, NS_PING)
        else:
            ET.SubElement(query, identity, {"category": "server", "type": "im", "name": SERVER_NAME})
            features = (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION, NS_ROSTER)
            if self.config.turn is not None:
                features += (extdisco.NS_EXTDISCO,)
        for feature in features:
            ET.SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": feature})
        return query

    def _disco_items(self, to: Jid, component: bool) -> ET.Element:
        query = ET.Element(f"{{{NS_DISCO_ITEMS}}}query")
        if to.local:
            return query
        cfg = self.config
        items: list[tuple[str, str]] = []
        if to.domain == cfg.domain:
            items = [
                (cfg.muc_domain, "Conferences"),
                (cfg.lobby_muc_domain, "Lobbies"),
                (cfg.focus_domain, "Focus"),
            ]
        elif component:
            items = [(cfg.internal_muc_domain, "Internal")]  # nothing there for anyone else
        for jid, name in items:
            ET.SubElement(query, f"{{{NS_DISCO_ITEMS}}}item", {"jid": jid, "name": name})
        return query

    def _deliver_generated(self, stanza: ET.Element) -> None:
        """Delivers a stanza the server made (MUC output) to the local full JID in its `to`."""
        try:
            to = Jid.parse(stanza.get("to", ""))
        except JidError:
            self.counters["undeliverable"] += 1
            return
        target = self.sessions.get(to)
        if target is None:
            self.counters["undeliverable"] += 1
            return
        target.send_stanza(stanza)


__all__ = ["Close", "Connection", "Framing", "Output", "StartTls", "XmppCore"]
