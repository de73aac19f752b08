"""Drain, graceful shutdown and idle expiry for a bridge process (docs/jitsi-protocol.md 2.3 item 4 and 3.4).

States: running -> graceful shutdown (new conferences refused with `graceful_shutdown`, existing kept,
presence `graceful_shutdown=true`) -> shutting down (presence `shutting_down=true`, once participants are at
or below the minimum or the maximum duration passed) -> `finished` after the shutting-down delay, when the
owner exits. A forced shutdown goes straight to `finished`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.bridge import Bridge, BridgeError, log_ids
from bridge.changes import ExpireConference, ExpireEndpoint
from bridge.xmpp_core import BridgeState

log = logging.getLogger(__name__)

#: How often a graceful shutdown looks at the participant count.
SHUTDOWN_CHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    graceful_shutdown_max_duration: float = 24 * 3600.0
    graceful_shutdown_min_participants: int = 0
    shutting_down_delay: float = 60.0
    entity_expiration_timeout: float = 60.0
    entity_expiration_check_interval: float = 60.0


def idle_expiry(
    bridge: Bridge, now: float, packets_in: Mapping[int, int], timeout: float
) -> list[ExpireEndpoint | ExpireConference]:
    """What has been idle for `timeout` seconds (jvb `entity-expiration.timeout`), to expire.

    An endpoint is idle while its transport's `packets_in` (the native per-transport counter; any STUN, DTLS
    or media counts) does not change; a conference is idle while it has no endpoint. Call this periodically;
    the first call that sees an entity starts its clock. Updates the idle clocks on the registry's objects
    and returns the expiries for `Bridge.apply`.
    """
    expired: list[ExpireEndpoint | ExpireConference] = []
    for conference in bridge.conferences.values():
        staying = 0
        for ep in conference.endpoints.values():
            count = packets_in.get(ep.transport_id, 0)
            if ep.last_activity is None or count != ep.last_packets_in:
                ep.last_activity = now
                ep.last_packets_in = count
            elif now - ep.last_activity >= timeout:
                expired.append(ExpireEndpoint(conference.meeting_id, ep.id))
                continue
            staying += 1
        if staying or conference.last_activity is None:
            conference.last_activity = now
        elif now - conference.last_activity >= timeout:
            expired.append(ExpireConference(conference.meeting_id))
    return expired


class Lifecycle:
    """Owns the drain and shutdown flags of `state`; `on_change` runs after each change (presence now)."""

    def __init__(
        self,
        bridge: Bridge,
        state: BridgeState,
        config: LifecycleConfig,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.bridge = bridge
        self.state = state
        self.config = config
        self.on_change = on_change
        #: Set when the process should exit.
        self.finished = asyncio.Event()
        self._shutdown: asyncio.Task[None] | None = None
        self._expiry: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._expiry is None:
            self._expiry = asyncio.create_task(self._expire_idle(), name="idle-expiry")

    async def stop(self) -> None:
        for task in (self._shutdown, self._expiry):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._shutdown = self._expiry = None

    def participants(self) -> int:
        return sum(len(c.endpoints) for c in self.bridge.conferences.values())

    # ---- drain and shutdown

    def set_drain(self, enabled: bool) -> None:
        if self.state.drain != enabled:
            self.state.drain = enabled
            log.warning("drain %s", "enabled" if enabled else "disabled")
            self.on_change()

    def begin_shutdown(self, graceful: bool) -> None:
        if not graceful:
            log.warning("shutdown: forced, exiting now")
            self.state.graceful_shutdown = self.state.shutting_down = True
            self.on_change()
            self.finished.set()
            return
        if self.state.graceful_shutdown:
            return  # already under way; the first request's clock keeps running
        log.warning("shutdown: graceful, %d participants", self.participants())
        self.state.graceful_shutdown = True
        self.on_change()
        self._shutdown = asyncio.create_task(self._graceful(time.monotonic()), name="graceful-shutdown")

    async def _graceful(self, started: float) -> None:
        cfg = self.config
        while True:
            left = self.participants()
            if left <= cfg.graceful_shutdown_min_participants:
                log.warning("shutdown: %d participants left, shutting down", left)
                break
            if time.monotonic() - started >= cfg.graceful_shutdown_max_duration:
                log.warning("shutdown: maximum duration reached with %d participants, shutting down", left)
                break
            await asyncio.sleep(min(SHUTDOWN_CHECK_S, cfg.graceful_shutdown_max_duration))
        self.state.shutting_down = True
        self.on_change()
        await asyncio.sleep(cfg.shutting_down_delay)
        self.finished.set()

    # ---- idle expiry

    async def _expire_idle(self) -> None:
        cfg = self.config
        while True:
            try:
                stats = await self.bridge.get_stats()
            except (TimeoutError, BridgeError) as exc:
                log.warning("idle expiry skipped: %s", exc)
            else:
                transports = stats.get("transports")
                packets: dict[int, int] = {}
                if isinstance(transports, dict):
                    for tid, t in transports.items():
                        if isinstance(t, dict) and isinstance(t.get("packets_in"), int):
                            packets[int(tid)] = t["packets_in"]
                changes = idle_expiry(self.bridge, time.monotonic(), packets, cfg.entity_expiration_timeout)
                try:
                    self.bridge.apply(changes)
                except BridgeError as exc:
                    log.warning("idle expiry stopped: %s", exc)
                for change in changes:
                    if isinstance(change, ExpireEndpoint):
                        log.info(
                            "expired idle endpoint %s of %s",
                            change.endpoint_id,
                            change.meeting_id,
                            extra=log_ids(change.meeting_id, change.endpoint_id),
                        )
                    else:
                        log.info(
                            "expired idle conference %s", change.meeting_id, extra=log_ids(change.meeting_id)
                        )
            await asyncio.sleep(cfg.entity_expiration_check_interval)
