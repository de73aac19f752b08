"""`Focus`: the asyncio adapter that runs a `FocusCore` on a c2s connection (`xmppclient`).

It owns the clock (the event loop's monotonic time) and the timer; every decision is the core's. Stanzas go
in as ElementTree elements and come out as text on the stream. When the connection drops, the core forgets
its rooms and bridges (the server dropped our presence in them too) and the client reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from colibri2.xml import to_string
from signaling.focus.config import FocusConfig
from signaling.focus.core import FocusCore
from xmppclient import Account, Reconnect, ReconnectingClient


class Focus:
    """The focus process part: `await start()`, `await wait_ready()`, `await stop()`."""

    def __init__(self, config: FocusConfig) -> None:
        self.config = config
        self.core = FocusCore(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._client = ReconnectingClient(
            Account(
                config.focus_full_jid,
                config.password,
                config.xmpp_host,
                config.xmpp_port,
                use_tls=config.use_tls,
                disable_certificate_verification=config.disable_certificate_verification,
            ),
            Reconnect(min=config.reconnect_min, max=config.reconnect_max),
            label="focus",
            on_session=self._on_session,
            on_stanza=self._on_stanza,
            on_lost=self.core.reset,
        )

    @property
    def connects(self) -> int:
        """Sessions bound so far."""
        return self._client.connects

    # ---- lifecycle

    async def start(self) -> None:
        """Starts connecting in the background; see `wait_ready()`."""
        self._loop = asyncio.get_running_loop()
        self._client.start()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Waits until the c2s session is bound (the brewery join has been sent)."""
        await self._client.wait_session(timeout)

    async def stop(self) -> None:
        """Expires conferences, leaves rooms and the brewery, closes the stream."""
        self._stopping = True
        if self._client.ready:
            self.core.stop(self._now())
            self._flush()
        if self._timer is not None:
            self._timer.cancel()
        await self._client.stop()

    async def __aenter__(self) -> Focus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- the operator's actions (FocusCore.end_meeting, .kick)

    def end_meeting(self, room_jid: str, reason: str) -> bool:
        done = self.core.end_meeting(self._now(), room_jid, reason)
        self._flush()
        return done

    def kick(self, room_jid: str, nick: str, reason: str) -> bool:
        done = self.core.kick(self._now(), room_jid, nick, reason)
        self._flush()
        return done

    # ---- stanzas and time

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def _on_session(self) -> None:
        self.core.start(self._now())
        self._flush()

    def _on_stanza(self, el: ET.Element) -> None:
        self.core.handle_stanza(self._now(), el)
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timeout(self._now())
        self._flush()

    def _flush(self) -> None:
        """Sends what the core queued and re-arms the timer for its next deadline."""
        while (el := self.core.poll_transmit()) is not None:
            self._client.send_raw(to_string(el))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.core.poll_timeout()
        if deadline is not None and self._loop is not None and not self._stopping:
            self._timer = self._loop.call_at(max(deadline, self._now()), self._on_timer)
