"""asyncio adapters for the sans-IO core: c2s over TCP (with STARTTLS) and over WebSocket (RFC 7395, aiohttp).

The adapters own sockets and the clock; after each call into the core they flush every connection that has
output. What waits for each peer (our queue plus the transport's buffers) is watched by a `SendMonitor`: a
peer with more than `max_send_queue_bytes` waiting, or one that takes nothing for `send_stall_timeout` while
output waits, is a slow reader. Its transport is aborted at once (no close handshake, no drain), its session
ends in the core right away (it leaves its rooms as if it had left) and what was queued for it is dropped, so
one client that stops reading cannot grow the server's memory past that bound.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from signaling.xmpp.config import XmppServerConfig
from signaling.xmpp.core import Close, Connection, Framing, Output, StartTls, XmppCore
from signaling.xmpp.sendqueue import SendMonitor, SlowReader
from signaling.xmpp.users import UserStore, UserStoreError

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
TLS_HANDSHAKE_TIMEOUT = 10.0
#: Slow readers are looked for this often, as a fraction of `send_stall_timeout` (so a stall is seen
#: between 1 and 1.25 timeouts after the peer last took a byte).
SWEEPS_PER_STALL_TIMEOUT = 4


class _Link(abc.ABC):
    """One peer's way out: the raw transport (its buffer counts; it is what gets aborted) and a monitor."""

    def __init__(self, cid: int, transport: asyncio.WriteTransport, monitor: SendMonitor) -> None:
        self.id = cid
        self.transport = transport
        self.monitor = monitor
        #: Bytes handed to the transport or queued for it since the link opened.
        self.written = 0
        #: A Close was pushed (or the link was aborted): nothing more is accepted.
        self.closing = False
        self.aborted = False

    @abc.abstractmethod
    def push(self, items: list[Output]) -> None: ...

    @abc.abstractmethod
    def queued(self) -> int:
        """Bytes waiting for the peer in our queue and the transports' buffers."""

    def abort(self) -> None:
        """Drops the connection now: RST, no close handshake, the transport's buffer freed."""
        self.aborted = self.closing = True
        self.transport.abort()


class _TcpLink(_Link):
    def __init__(self, cid: int, writer: asyncio.StreamWriter, monitor: SendMonitor) -> None:
        super().__init__(cid, writer.transport, monitor)
        self.writer = writer
        self.starttls = False
        #: Output after StartTls waits here until the handshake is done.
        self.held: list[Output] = []
        self.held_bytes = 0

    def push(self, items: list[Output]) -> None:
        for item in items:
            if self.closing or self.writer.transport.is_closing():  # gone: asyncio would drop it anyway
                return
            if self.starttls:
                self.held.append(item)
                if isinstance(item, str):
                    self.held_bytes += len(item.encode())
            elif isinstance(item, str):
                data = item.encode()
                self.written += len(data)
                self.writer.write(data)
            elif isinstance(item, StartTls):
                self.starttls = True
            elif isinstance(item, Close):
                self.closing = True
                self.writer.close()

    def tls_ready(self) -> None:
        """The handshake is done: what waited for it goes out, in order."""
        held, self.held, self.held_bytes = self.held, [], 0
        self.starttls = False
        self.push(held)

    def queued(self) -> int:
        if self.aborted:
            return 0
        size = self.held_bytes + self.transport.get_write_buffer_size()
        if self.writer.transport is not self.transport:  # after STARTTLS the TLS layer buffers too
            size += self.writer.transport.get_write_buffer_size()
        return size


class _WsLink(_Link):
    """Frames wait in a deque for one sender task that exists only while there are frames.

    aiohttp writes WebSocket frames only through coroutines, so a task does the writing; the deque is bounded
    by the send monitor (its bytes count with the transport's), and one task keeps the frames in order.
    """

    def __init__(
        self, cid: int, ws: web.WebSocketResponse, transport: asyncio.WriteTransport, monitor: SendMonitor
    ) -> None:
        super().__init__(cid, transport, monitor)
        self.ws = ws
        self.frames: deque[bytes | Close] = deque()
        self.frame_bytes = 0
        self.sender: asyncio.Task[None] | None = None

    def push(self, items: list[Output]) -> None:
        for item in items:
            if self.closing:
                break
            if isinstance(item, str):
                data = item.encode()
                self.frames.append(data)
                self.frame_bytes += len(data)
                self.written += len(data)
            elif isinstance(item, Close):
                self.closing = True
                self.frames.append(item)
            # StartTls never comes: TLS for WebSocket belongs to the HTTP server.
        if self.frames and self.sender is None:
            self.sender = asyncio.create_task(self._send(), name=f"xmpp-ws-send-{self.id}")

    async def _send(self) -> None:
        try:
            while self.frames:
                item = self.frames.popleft()
                if isinstance(item, bytes):
                    self.frame_bytes -= len(item)
                    await self.ws.send_frame(item, WSMsgType.TEXT)
                else:
                    await self.ws.close()
        except ConnectionError:
            self.discard()  # the transport is closing or gone: nothing left can reach the peer
        except Exception:
            log.exception("xmpp: websocket %d: sending failed", self.id)
            self.abort()
        finally:
            self.sender = None

    def discard(self) -> None:
        """Drops every queued frame and stops the sender."""
        self.frames.clear()
        self.frame_bytes = 0
        sender, self.sender = self.sender, None
        if sender is not None and sender is not asyncio.current_task():
            sender.cancel()

    def abort(self) -> None:
        super().abort()
        self.discard()

    def queued(self) -> int:
        if self.aborted:
            return 0
        # Behind a TLS-terminating aiohttp the raw socket's buffer is not visible here; ours is plain HTTP.
        return self.frame_bytes + self.transport.get_write_buffer_size()


class XmppServer:
    """The embedded XMPP server: `await start()`, then `tcp_port` and `websocket_handler` serve clients."""

    def __init__(self, config: XmppServerConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        #: The users file (`sluice user`), read at start and re-read when it changes.
        self.users = UserStore(config.users_file) if config.users_file else None
        self.core = XmppCore(config, self.users)
        self._clock = clock
        self._server: asyncio.Server | None = None
        #: Every link whose transport may still hold output for its peer, registered or closing.
        self._links: dict[int, _Link] = {}
        #: Connections the core still knows; a slow reader leaves here before its handler notices.
        self._connections: dict[int, Connection] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._timer_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ssl: ssl.SSLContext | None = None
        self._send_peak = 0
        self.tcp_port = 0

    # ---- lifecycle

    async def start(self) -> None:
        """Raises UserStoreError for a users file it must not trust (readable by others, not one)."""
        cfg = self.config
        if self.users is not None:
            self.users.load()
            log.info("xmpp: %d user account(s) from %s", len(self.users), self.users.path)
        if cfg.tls_enabled:
            assert cfg.tls_cert is not None and cfg.tls_key is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            self._ssl = context
        self._server = await asyncio.start_server(self._on_tcp, cfg.tcp_host, cfg.tcp_port)
        self.tcp_port = int(self._server.sockets[0].getsockname()[1])
        self._timer_task = asyncio.create_task(self._timer(), name="xmpp-timer")
        log.info("xmpp: c2s on %s:%d (%s)", cfg.tcp_host, self.tcp_port, "STARTTLS" if self._ssl else "plain")

    async def stop(self) -> None:
        """Ends every stream with `system-shutdown`, then closes the listener and the connections."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            conn.stream_error("system-shutdown", "The server is shutting down")
        self._flush()
        handlers = list(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=2.0)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for link in list(self._links.values()):  # peers that did not take their last bytes in time
            link.abort()
        self._links.clear()
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
            self._timer_task = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> XmppServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def stats(self) -> dict[str, int]:
        """The core's counters and gauges, plus the bytes waiting for peers now and the most one peer had."""
        out = self.core.stats()
        out["send_queue_bytes"] = sum(link.queued() for link in self._links.values())
        out["send_queue_peak_bytes"] = self._send_peak
        return out

    def queued_bytes(self, connection_id: int) -> int | None:
        """Bytes waiting for one connection's peer; None once its link is gone."""
        link = self._links.get(connection_id)
        return None if link is None else link.queued()

    # ---- plumbing

    def _now(self) -> float:
        return self._clock()

    def _count(self, name: str) -> None:
        self.core.counters[name] += 1

    def _monitor(self) -> SendMonitor:
        limits = self.config.limits
        return SendMonitor(limits.max_send_queue_bytes, limits.send_stall_timeout)

    def _refresh_users(self) -> None:
        """A changed users file is re-read as connections arrive (a bad one keeps the last good users)."""
        if self.users is None:
            return
        try:
            if self.users.refresh(self._now()):
                self._count("users_file_reloads")
                log.info("xmpp: users file re-read: %d user account(s)", len(self.users))
        except UserStoreError as exc:
            self._count("users_file_errors")
            log.warning("xmpp: users file not re-read: %s", exc)

    def _register(self, conn: Connection, link: _Link) -> None:
        self._links[conn.id] = link
        self._connections[conn.id] = conn
        self._wake.set()

    def _drop(self, conn: Connection) -> None:
        """Ends `conn` in the core once (its session leaves its rooms); the caller flushes what follows."""
        if self._connections.pop(conn.id, None) is not None:
            conn.connection_lost(self._now())

    def _release(self, link: _Link) -> None:
        """The handler is done: forget the link unless its transport still has output to watch."""
        if link.aborted or link.queued() == 0:
            self._links.pop(link.id, None)

    def _guarded(self, conn: Connection, receive: Callable[[float, Any], None], data: Any) -> None:
        """A bug in the core must cost one stream, never the server: log, count, end that stream."""
        try:
            receive(self._now(), data)
        except Exception:
            log.exception("xmpp: internal error on connection %d", conn.id)
            self._count("internal_errors")
            conn.stream_error("internal-server-error")

    def _flush(self) -> None:
        now = self._now()
        # A slow reader cut off here makes output for the rest of its rooms: loop until none is left.
        while dirty := self.core.take_dirty():
            for conn in dirty:
                items = conn.take_output()
                link = self._links.get(conn.id)
                if link is None or link.aborted:
                    continue
                link.push(items)
                self._check(link, now)

    def _check(self, link: _Link, now: float) -> None:
        queued = link.queued()
        self._send_peak = max(self._send_peak, queued)
        verdict = link.monitor.check(now, queued, link.written)
        if verdict is not None:
            self._cut_off(link, verdict, now)
        elif queued == 0 and link.id not in self._connections:
            self._links.pop(link.id, None)  # closed, and its last bytes have gone out

    def _cut_off(self, link: _Link, why: SlowReader, now: float) -> None:
        self._count("slow_consumers_disconnected")
        self._count(why.value)
        log.info("xmpp: connection %d is a slow reader (%s): aborted", link.id, why.name.lower())
        link.abort()
        self._links.pop(link.id, None)
        conn = self._connections.pop(link.id, None)
        if conn is not None:
            conn.connection_lost(now)

    def _sweep(self, now: float) -> None:
        """Finds peers that stalled while nothing new was written to them."""
        for link in list(self._links.values()):
            if not link.aborted:
                self._check(link, now)

    async def _timer(self) -> None:
        sweep_every = self.config.limits.send_stall_timeout / SWEEPS_PER_STALL_TIMEOUT
        next_sweep = self._now() + sweep_every
        while True:
            deadline = self.core.poll_timeout()
            deadline = next_sweep if deadline is None else min(deadline, next_sweep)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(deadline - self._now(), 0.0))
            now = self._now()
            self.core.handle_timer(now)
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + sweep_every
            self._flush()

    # ---- TCP (RFC 6120)

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        peer = writer.get_extra_info("peername")
        self._refresh_users()
        conn = self.core.open_connection(
            self._now(), Framing.TCP, address=str(peer[0]) if isinstance(peer, tuple) else ""
        )
        link = _TcpLink(conn.id, writer, self._monitor())
        self._register(conn, link)
        try:
            while not conn.closed and not link.closing:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                self._guarded(conn, conn.receive_data, data)
                self._flush()
                if link.starttls and not link.closing:
                    await self._upgrade(conn, link)
        except (ConnectionError, OSError, ssl.SSLError, TimeoutError) as exc:
            log.info("xmpp: tcp connection %d: %s", conn.id, exc)
        finally:
            self._drop(conn)
            self._flush()
            if not link.aborted and not writer.transport.is_closing():
                # What is queued still goes out; the sweep aborts a peer that stops taking it. (Closing a TLS
                # transport twice drops its protocol, after which it cannot even tell its buffer size.)
                writer.close()
            self._release(link)
            try:
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                self._links.pop(conn.id, None)
            finally:  # even when cancelled while waiting
                if task is not None:
                    self._handlers.discard(task)

    async def _upgrade(self, conn: Connection, link: _TcpLink) -> None:
        """STARTTLS (RFC 6120 §5.4.3.3): `<proceed/>` is written; the handshake follows on the same socket."""
        assert self._ssl is not None, "StartTls is only asked for when a certificate is configured"
        try:
            await link.writer.start_tls(self._ssl, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError):
            self._count("tls_handshake_failures")
            raise
        self._count("tls_established")
        conn.tls_established(self._now())
        link.tls_ready()
        self._flush()

    # ---- WebSocket (RFC 7395)

    async def websocket_handler(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for `/xmpp-websocket`: subprotocol `xmpp`, one XML document per text message."""
        limit = self.config.limits.max_stanza_bytes
        # Messages up to twice the limit reach the core, which answers policy-violation; bigger ones aiohttp
        # refuses by itself (close code 1009), and we count those too.
        ws = web.WebSocketResponse(protocols=("xmpp",), max_msg_size=2 * limit + 1024, autoping=True)
        await ws.prepare(request)
        if ws.ws_protocol != "xmpp":
            self._count("websocket_without_xmpp_protocol")
            await ws.close(code=1002, message=b"the xmpp subprotocol is required")
            return ws
        transport = request.transport  # (uvloop's transports are not asyncio.Transport subclasses)
        if transport is None:  # gone already
            return ws
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._refresh_users()
        # Jitsi's token auth: the JWT rides on the WebSocket URL; the core verifies it at SASL.
        conn = self.core.open_connection(
            self._now(),
            Framing.WEBSOCKET,
            secure=request.secure,
            address=request.remote or "",
            token=request.query.get("token") or None,
            room=request.query.get("room") or None,
        )
        link = _WsLink(conn.id, ws, transport, self._monitor())
        self._register(conn, link)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._guarded(conn, conn.receive_frame, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._count("websocket_binary_frames")
                    conn.stream_error("unsupported-encoding", "RFC 7395 streams use text frames")
                elif msg.type == WSMsgType.ERROR:
                    self._count("stanza_too_large")
                    break
                self._flush()
                if conn.closed or link.closing:
                    break
        finally:
            self._drop(conn)
            self._flush()
            try:
                if not link.closing:
                    # The peer left, or we are cancelled: nothing queued can reach it any more.
                    link.discard()
                    if not ws.closed:
                        link.abort()
                elif link.sender is not None:
                    # Our Close: the sender writes what is left and closes the WebSocket. Bounded, as the
                    # sweep aborts a peer that stops taking bytes (which cancels the sender).
                    await asyncio.wait({link.sender})
            finally:  # aiohttp cancels the handler when the connection is lost, maybe in that wait
                self._release(link)
                if task is not None:
                    self._handlers.discard(task)
        return ws
