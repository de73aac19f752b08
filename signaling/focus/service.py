"""`Focus`: the asyncio adapter that runs a `FocusCore` on a slixmpp c2s connection.

It owns the socket and the clock (the event loop's monotonic time); every decision is the core's. Stanzas go
in as ElementTree elements and come out as text on the stream. When the connection drops, the core forgets
its rooms and bridges (the server dropped our presence in them too) and the client reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from colibri2.xml import to_string
from signaling.focus.config import FocusConfig
from signaling.focus.core import FocusCore

log = logging.getLogger(__name__)

NS_CLIENT = "jabber:client"


class Focus:
    """The focus process part: `await start()`, `await wait_ready()`, `await stop()`."""

    def __init__(self, config: FocusConfig) -> None:
        self.config = config
        self.core = FocusCore(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._runner: asyncio.Task[None] | None = None
        self._session = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = False
        self.connects = 0
        self._xmpp = self._make_client()

    # ---- lifecycle

    async def start(self) -> None:
        """Starts connecting in the background; see `wait_ready()`."""
        if self._runner is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._runner = asyncio.create_task(self._run(), name="focus-xmpp")

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Waits until the c2s session is bound (the brewery join has been sent)."""
        await asyncio.wait_for(self._session.wait(), timeout)

    async def stop(self) -> None:
        """Expires conferences, leaves rooms and the brewery, closes the stream."""
        self._stopping = True
        if self._session.is_set() and not self._lost.is_set():
            self.core.stop(self._now())
            self._flush()
        if self._timer is not None:
            self._timer.cancel()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        self._xmpp.cancel_connection_attempt()
        if self._xmpp.transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._xmpp.disconnect(wait=1.0), 2.0)
            self._xmpp.abort()

    async def __aenter__(self) -> Focus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- connection

    def _make_client(self) -> slixmpp.ClientXMPP:
        cfg = self.config
        # Without TLS allow SCRAM (the password never crosses the wire), never PLAIN.
        mechanisms = {"unencrypted_scram": not cfg.use_tls}
        xmpp = slixmpp.ClientXMPP(
            cfg.focus_full_jid, cfg.password, plugin_config={"feature_mechanisms": mechanisms}
        )
        xmpp.enable_starttls = cfg.use_tls
        xmpp.enable_direct_tls = False
        xmpp.enable_plaintext = not cfg.use_tls
        if cfg.use_tls and cfg.disable_certificate_verification:
            xmpp.ssl_context.check_hostname = False
            xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        xmpp.add_event_handler("session_start", self._on_session_start)
        xmpp.add_event_handler("disconnected", self._on_lost)
        xmpp.add_event_handler("connection_failed", self._on_lost)
        xmpp.add_event_handler("failed_all_auth", self._on_auth_failed)
        xmpp.register_handler(Callback("focus iq", MatchXPath(f"{{{NS_CLIENT}}}iq"), self._on_stanza))
        xmpp.register_handler(
            Callback("focus presence", MatchXPath(f"{{{NS_CLIENT}}}presence"), self._on_stanza)
        )
        return xmpp

    async def _run(self) -> None:
        delay = self.config.reconnect_min
        while not self._stopping:
            self._session.clear()
            self._lost.clear()
            log.info("focus: connecting to %s:%d", self.config.xmpp_host, self.config.xmpp_port)
            self._xmpp.connect(self.config.xmpp_host, self.config.xmpp_port)
            await self._lost.wait()
            if self._session.is_set():
                delay = self.config.reconnect_min
                log.warning("focus: connection to %s lost", self.config.xmpp_host)
            self._session.clear()
            self.core.reset()
            self._xmpp.cancel_connection_attempt()
            self._xmpp.abort()
            if self._stopping:
                return
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.config.reconnect_max)

    def _on_session_start(self, _event: Any) -> None:
        log.info("focus: session started as %s", self._xmpp.boundjid)
        self.connects += 1
        self.core.start(self._now())
        self._flush()
        self._session.set()

    def _on_lost(self, _event: Any) -> None:
        self._lost.set()

    def _on_auth_failed(self, _event: Any) -> None:
        log.error("focus: authentication as %s failed", self.config.focus_jid)
        self._lost.set()

    # ---- stanzas and time

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def _on_stanza(self, stanza: Any) -> None:
        self.core.handle_stanza(self._now(), stanza.xml)
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timeout(self._now())
        self._flush()

    def _flush(self) -> None:
        """Sends what the core queued and re-arms the timer for its next deadline."""
        while (el := self.core.poll_transmit()) is not None:
            self._xmpp.send_raw(to_string(el))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.core.poll_timeout()
        if deadline is not None and self._loop is not None and not self._stopping:
            self._timer = self._loop.call_at(max(deadline, self._now()), self._on_timer)
