"""`BridgeXmppClient`: the asyncio adapter that keeps the bridge in the breweries of one XMPP server.

It runs a `BridgeXmppCore` (bridge/xmpp_core.py, every decision) on a reconnecting c2s client (`xmppclient`),
owns the clocks (wall time for the stats' timestamp, monotonic time for the load sampler), re-publishes
presence with fresh stats every `presence_interval`, and runs the asynchronous work an IQ needs (the
Colibri2 handler, the health check) before the core answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable

from bridge.bridge import Bridge
from bridge.load import LoadSampler
from bridge.xmpp_core import BridgeState, BridgeXmppCore, RunColibri2, Work, XmppClientConfig
from colibri2.xml import to_string
from xmppclient import Account, Reconnect, ReconnectingClient

log = logging.getLogger(__name__)

Colibri2Handler = Callable[[ET.Element], Awaitable[ET.Element]]
HealthCheck = Callable[[], Awaitable[None]]


class BridgeXmppClient:
    """Keeps one bridge present in the brewery MUCs of one XMPP server and answers the IQs sent to it."""

    def __init__(
        self,
        bridge: Bridge,
        config: XmppClientConfig,
        handle_colibri2: Colibri2Handler,
        *,
        state: BridgeState | None = None,
        health_check: HealthCheck | None = None,
        sampler: LoadSampler | None = None,
    ) -> None:
        self.bridge = bridge
        self.config = config
        self.state = state or BridgeState()
        self.sampler = sampler or LoadSampler(config.capacity_pps)
        self.core = BridgeXmppCore(config, self.state)
        self._handle_colibri2 = handle_colibri2
        self._health_check = health_check or self._default_health_check
        self._joined_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._client = ReconnectingClient(
            Account(
                f"{config.username}@{config.domain}",
                config.password,
                config.hostname,
                config.port,
                use_tls=config.use_tls,
                disable_certificate_verification=config.disable_certificate_verification,
            ),
            Reconnect(
                min=config.reconnect_min,
                max=config.reconnect_max,
                factor=config.reconnect_factor,
                login_timeout=config.login_timeout,
            ),
            label="xmpp",
            on_session=self._on_session,
            on_stanza=self._on_stanza,
            on_lost=self._left,
        )

    @property
    def joined(self) -> set[str]:
        """Rooms whose self-presence (status 110) we saw since the last connect."""
        return self.core.joined

    @property
    def healthy(self) -> bool:
        return self.core.healthy

    @property
    def connects(self) -> int:
        """Sessions bound so far."""
        return self._client.connects

    def occupant_jid(self, room: str) -> str:
        return self.core.occupant_jid(room)

    # ---- lifecycle

    async def start(self) -> None:
        """Starts connecting in the background; see `wait_joined()`."""
        if self._ticker is not None:
            return
        self._client.start()
        self._ticker = asyncio.create_task(self._tick(), name="bridge-xmpp-presence")

    async def stop(self) -> None:
        """Leaves the rooms and closes the stream; cancels every task this client started."""
        tasks = [t for t in (self._ticker, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client.ready:
            self.core.leave()
            self._flush()
        await self._client.stop()
        self._left()

    async def __aenter__(self) -> BridgeXmppClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_joined(self, timeout: float = 10.0) -> None:
        """Waits until every configured brewery shows our self-presence."""

        async def joined_all() -> None:
            while not set(self.config.muc_jids) <= self.core.joined:
                self._joined_changed.clear()
                await self._joined_changed.wait()

        await asyncio.wait_for(joined_all(), timeout)

    async def wait_left(self, timeout: float = 10.0) -> None:
        """Waits until no brewery is joined (the connection went away or we left)."""

        async def left() -> None:
            while self.core.joined:
                self._joined_changed.clear()
                await self._joined_changed.wait()

        await asyncio.wait_for(left(), timeout)

    # ---- presence

    async def _tick(self) -> None:
        first = True
        while True:
            if not first:
                await asyncio.sleep(self.config.presence_interval)
            try:
                stats = await self.bridge.get_stats()
                self.sampler.update(time.monotonic(), stats)
            except Exception as exc:
                log.warning("xmpp: no stats from the bridge: %s", exc)
            if first:
                first = False  # the baseline snapshot; the join presence went out on session start
                continue
            self.publish_now()

    def publish_now(self) -> None:
        """Presence with the current stats at once (after a drain or shutdown change), if connected."""
        if self._client.ready:
            self._publish(join=False)

    def _publish(self, *, join: bool) -> None:
        conferences = self.bridge.conferences
        self.core.publish(
            time.time(),
            self.sampler.current,
            conferences=len(conferences),
            endpoints=sum(len(c.endpoints) for c in conferences.values()),
            join=join,
        )
        self._flush()

    # ---- the connection's events

    def _on_session(self) -> None:
        self._publish(join=True)

    def _left(self) -> None:
        if self.core.reset():
            self._joined_changed.set()

    def _on_stanza(self, el: ET.Element) -> None:
        kind = el.tag.rpartition("}")[2]
        if kind == "presence":
            if self.core.handle_presence(time.time(), el):
                self._joined_changed.set()
        elif kind == "iq" and (work := self.core.handle_iq(time.time(), el)) is not None:
            task = asyncio.create_task(self._run(work))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._flush()

    def _flush(self) -> None:
        while (el := self.core.poll_transmit()) is not None:
            self._client.send_raw(to_string(el))

    # ---- the work an IQ needs

    async def _run(self, work: Work) -> None:
        try:
            if isinstance(work, RunColibri2):
                self.core.handle_colibri2_answer(work, await self._handle_colibri2(work.payload))
            else:
                self.core.handle_health_result(work, await self._check_health())
        except Exception as exc:
            tag = work.payload.tag if isinstance(work, RunColibri2) else "healthcheck"
            log.exception("xmpp: %s IQ from %s failed", tag, work.iq.get("from"))
            self.core.handle_failure(work, str(exc) or type(exc).__name__)
        self._flush()

    async def _check_health(self) -> str | None:
        """None when healthy, or why not."""
        try:
            await self._health_check()
        except Exception as exc:
            return str(exc)
        return None

    async def _default_health_check(self) -> None:
        # The native core answers a stats request only if its shard loop is alive.
        await self.bridge.get_stats(timeout=3.0)
