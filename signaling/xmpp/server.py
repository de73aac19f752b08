"""asyncio adapters for the sans-IO core: c2s over TCP (with STARTTLS) and over WebSocket (RFC 7395, aiohttp).

The adapters own sockets and the clock; after each call into the core they flush every connection that has
output. A peer that does not read its output is cut off once its write buffer passes a bound, so one slow
client cannot grow the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from signaling.xmpp.config import XmppServerConfig
from signaling.xmpp.core import Close, Connection, Framing, Output, StartTls, XmppCore

log = logging.getLogger(__name__)

#: Bytes queued to one peer before it counts as a slow consumer and is disconnected.
MAX_WRITE_BUFFER = 8 * 1024 * 1024
READ_CHUNK = 64 * 1024
TLS_HANDSHAKE_TIMEOUT = 10.0


class _TcpLink:
    def __init__(self, writer: asyncio.StreamWriter, counters: Callable[[str], None]) -> None:
        self.writer = writer
        self.count = counters
        self.starttls = False
        self.pending: list[Output] = []
        self.closing = False

    def push(self, items: list[Output]) -> None:
        for item in items:
            if self.closing:
                return
            if self.starttls:
                self.pending.append(item)
            elif isinstance(item, str):
                self.writer.write(item.encode())
            elif isinstance(item, StartTls):
                self.starttls = True
            elif isinstance(item, Close):
                self.closing = True
                self.writer.close()
        transport = self.writer.transport
        if not self.closing and transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.count("slow_consumers_disconnected")
            self.closing = True
            transport.abort()


class _WsLink:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[Output] = asyncio.Queue()
        self.queued_bytes = 0
        self.closing = False
        self.task = asyncio.create_task(self._send(), name="xmpp-ws-send")

    def push(self, items: list[Output]) -> bool:
        """False when the peer is too slow (the caller disconnects it)."""
        for item in items:
            if self.closing:
                break
            if isinstance(item, Close):
                self.closing = True
            elif isinstance(item, str):
                self.queued_bytes += len(item)
            self.queue.put_nowait(item)
        return self.queued_bytes <= MAX_WRITE_BUFFER

    async def _send(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, str):
                self.queued_bytes -= len(item)
                if self.ws.closed:
                    continue
                try:
                    await self.ws.send_str(item)
                except (ConnectionError, RuntimeError):
                    continue
            elif isinstance(item, Close):
                await self.ws.close()
                return


class XmppServer:
    """The embedded XMPP server: `await start()`, then `tcp_port` and `websocket_handler` serve clients."""

    def __init__(self, config: XmppServerConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.core = XmppCore(config)
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._links: dict[int, _TcpLink | _WsLink] = {}
        self._connections: dict[int, Connection] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._closers: set[asyncio.Future[bool]] = set()
        self._timer_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ssl: ssl.SSLContext | None = None
        self.tcp_port = 0

    # ---- lifecycle

    async def start(self) -> None:
        cfg = self.config
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
        ws_tasks = [link.task for link in self._links.values() if isinstance(link, _WsLink)]
        if ws_tasks:
            await asyncio.wait(ws_tasks, timeout=2.0)
        handlers = list(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=2.0)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
        return self.core.stats()

    # ---- plumbing

    def _now(self) -> float:
        return self._clock()

    def _count(self, name: str) -> None:
        self.core.counters[name] += 1

    def _register(self, conn: Connection, link: _TcpLink | _WsLink) -> None:
        self._links[conn.id] = link
        self._connections[conn.id] = conn
        self._wake.set()

    def _unregister(self, conn: Connection) -> None:
        conn.connection_lost(self._now())
        self._flush()
        self._links.pop(conn.id, None)
        self._connections.pop(conn.id, None)

    def _guarded(self, conn: Connection, receive: Callable[[float, Any], None], data: Any) -> None:
        """A bug in the core must cost one stream, never the server: log, count, end that stream."""
        try:
            receive(self._now(), data)
        except Exception:
            log.exception("xmpp: internal error on connection %d", conn.id)
            self._count("internal_errors")
            conn.stream_error("internal-server-error")

    def _flush(self) -> None:
        for conn in self.core.take_dirty():
            items = conn.take_output()
            link = self._links.get(conn.id)
            if link is None:
                continue
            if isinstance(link, _WsLink):
                if not link.push(items):
                    self._count("slow_consumers_disconnected")
                    link.closing = True
                    link.task.cancel()
                    self._closers.add(asyncio.ensure_future(link.ws.close()))
            else:
                link.push(items)

    async def _timer(self) -> None:
        while True:
            deadline = self.core.poll_timeout()
            self._wake.clear()
            timeout = None if deadline is None else max(deadline - self._now(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self.core.handle_timer(self._now())
            self._flush()

    # ---- TCP (RFC 6120)

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        peer = writer.get_extra_info("peername")
        conn = self.core.open_connection(
            self._now(), Framing.TCP, address=str(peer[0]) if isinstance(peer, tuple) else ""
        )
        link = _TcpLink(writer, self._count)
        self._register(conn, link)
        try:
            while not conn.closed and not link.closing:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                self._guarded(conn, conn.receive_data, data)
                self._flush()
                if link.starttls:
                    await self._upgrade(conn, link)
        except (ConnectionError, OSError, ssl.SSLError, TimeoutError) as exc:
            log.info("xmpp: tcp connection %d: %s", conn.id, exc)
        finally:
            self._unregister(conn)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
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
        link.starttls = False
        conn.tls_established(self._now())
        pending, link.pending = link.pending, []
        link.push(pending)
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
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        conn = self.core.open_connection(
            self._now(), Framing.WEBSOCKET, secure=request.secure, address=request.remote or ""
        )
        link = _WsLink(ws)
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
            self._unregister(conn)
            if not link.closing:
                link.push([Close()])
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(link.task, 2.0)
            if not ws.closed:
                await ws.close()
            if task is not None:
                self._handlers.discard(task)
        return ws
