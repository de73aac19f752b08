"""One XMPP account kept connected over c2s with slixmpp: the asyncio adapter of the focus and of the bridge.

It logs in (STARTTLS, or plain TCP where SASL may use only SCRAM, so the password never crosses the wire),
tells its owner when the session is bound, hands every IQ and presence to the owner as an ElementTree
element, and sends what the owner serialized. When the connection drops, the login fails or (optionally)
takes too long, it reconnects after a backoff of its own, with jitter; whatever the owner knew about the
session is the owner's to forget (`on_lost`). slixmpp's own reconnect is never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

log = logging.getLogger(__name__)

NS_CLIENT = "jabber:client"


@dataclass(frozen=True, slots=True)
class Account:
    """Where and as whom to log in."""

    jid: str
    password: str
    host: str
    port: int = 5222
    #: STARTTLS; without it plain TCP (loopback setups), and SCRAM only.
    use_tls: bool = True
    disable_certificate_verification: bool = False


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Backoff between attempts (seconds): first delay, growth factor, ceiling; and the login deadline."""

    min: float = 0.5
    max: float = 30.0
    factor: float = 2.0
    #: From TCP connect to a bound session; past it the attempt counts as failed. None: no deadline.
    login_timeout: float | None = None


class Backoff:
    """The delay before each new attempt: `min`, growing by `factor` after each attempt up to `max`, and
    jittered by ±20% so that clients dropped together do not all come back at once."""

    def __init__(self, policy: Reconnect, jitter: Callable[[float, float], float] = random.uniform) -> None:
        self._policy = policy
        self._jitter = jitter
        self._delay = policy.min

    def reset(self) -> None:
        """A session was bound: the next failure starts from `min` again."""
        self._delay = self._policy.min

    def next(self) -> float:
        wait = self._delay * self._jitter(0.8, 1.2)
        self._delay = min(self._delay * self._policy.factor, self._policy.max)
        return wait


def make_slixmpp(account: Account) -> slixmpp.ClientXMPP:
    """A slixmpp client set up for `account` (TLS or plain with SCRAM), with no handlers of ours yet."""
    # Without TLS allow SCRAM (the password never crosses the wire), never PLAIN.
    mechanisms = {"unencrypted_scram": not account.use_tls}
    xmpp = slixmpp.ClientXMPP(account.jid, account.password, plugin_config={"feature_mechanisms": mechanisms})
    xmpp.enable_starttls = account.use_tls
    xmpp.enable_direct_tls = False
    xmpp.enable_plaintext = not account.use_tls
    if account.use_tls and account.disable_certificate_verification:
        xmpp.ssl_context.check_hostname = False
        xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    return xmpp


class ReconnectingClient:
    """Keeps `account` logged in until `stop()`; `label` prefixes its log lines.

    `on_session()` runs once each session is bound, `on_stanza(el)` for every IQ and presence received, and
    `on_lost()` after each attempt ends (the session was lost, or never came).
    """

    def __init__(
        self,
        account: Account,
        reconnect: Reconnect,
        *,
        label: str,
        on_session: Callable[[], None],
        on_stanza: Callable[[ET.Element], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.account = account
        self.reconnect = reconnect
        self.label = label
        self._on_session = on_session
        self._on_stanza = on_stanza
        self._on_lost = on_lost
        #: Sessions bound so far.
        self.connects = 0
        self._session = asyncio.Event()
        self._lost = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._xmpp = make_slixmpp(account)
        self._xmpp.add_event_handler("session_start", self._session_started)
        self._xmpp.add_event_handler("disconnected", self._connection_lost)
        self._xmpp.add_event_handler("connection_failed", self._connection_lost)
        self._xmpp.add_event_handler("failed_all_auth", self._auth_failed)
        for kind in ("iq", "presence"):
            matcher = MatchXPath(f"{{{NS_CLIENT}}}{kind}")
            self._xmpp.register_handler(Callback(f"{label} {kind}", matcher, self._stanza))

    # ---- lifecycle

    def start(self) -> None:
        """Starts connecting in the background (in the running event loop)."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"{self.label}-connection")

    async def stop(self) -> None:
        """Stops reconnecting and closes the stream; send any goodbye first (while `ready`)."""
        self._stopping = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        self._xmpp.cancel_connection_attempt()
        if self._xmpp.transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._xmpp.disconnect(wait=1.0), 2.0)
            self._xmpp.abort()
        self._session.clear()

    @property
    def ready(self) -> bool:
        """A session is bound and not known to be lost."""
        return self._session.is_set() and not self._lost.is_set()

    async def wait_session(self, timeout: float) -> None:
        await asyncio.wait_for(self._session.wait(), timeout)

    def send_raw(self, text: str) -> None:
        """Writes `text` on the stream; without a connection it is dropped (its session is gone anyway)."""
        if self._xmpp.transport is None:
            log.debug("%s: not connected, dropped %.80s", self.label, text)
            return
        self._xmpp.send_raw(text)

    # ---- the connection

    async def _run(self) -> None:
        backoff = Backoff(self.reconnect)
        host, port = self.account.host, self.account.port
        while not self._stopping:
            self._session.clear()
            self._lost.clear()
            log.info("%s: connecting to %s:%d", self.label, host, port)
            self._xmpp.connect(host, port)
            if await self._first_outcome():
                backoff.reset()
                await self._lost.wait()
                log.warning("%s: connection to %s lost", self.label, host)
            self._session.clear()
            # slixmpp would retry on its own schedule; the backoff here is ours.
            self._xmpp.cancel_connection_attempt()
            self._xmpp.abort()
            self._on_lost()
            if self._stopping:
                return
            wait = backoff.next()
            log.info("%s: reconnecting in %.1fs", self.label, wait)
            await asyncio.sleep(wait)

    async def _first_outcome(self) -> bool:
        """True once the session is bound; False if the attempt failed or the login deadline passed."""
        waits = {asyncio.ensure_future(self._session.wait()), asyncio.ensure_future(self._lost.wait())}
        try:
            await asyncio.wait(
                waits, timeout=self.reconnect.login_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waits:
                w.cancel()
        return self.ready

    def _session_started(self, _event: Any) -> None:
        log.info("%s: session started as %s", self.label, self._xmpp.boundjid)
        self.connects += 1
        self._on_session()
        self._session.set()

    def _connection_lost(self, _event: Any) -> None:
        self._lost.set()

    def _auth_failed(self, _event: Any) -> None:
        log.error("%s: authentication as %s failed", self.label, self.account.jid)
        self._xmpp.abort()
        self._lost.set()

    def _stanza(self, stanza: Any) -> None:
        self._on_stanza(stanza.xml)
