"""Clients that stop reading, against the real XmppServer on loopback (TCP c2s and RFC 7395 WebSocket).

The focus floods a room with numbered groupchat messages while one participant never reads its socket (a
small SO_RCVBUF keeps the kernel from hiding the backlog). The server must cut that participant off at the
byte bound or after the stall timeout, end its session at once (the others see it leave), drop what was
queued for it, and keep serving the fast clients, who get every message in order.

Each test runs twice, on its own event loop: asyncio with aiohttp's test server (which cancels a handler
whose connection is lost), and uvloop with an AppRunner, as `sluice serve` runs (transports differ there).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import slixmpp
import uvloop
from aiohttp import web

from signaling.xmpp import XmppLimits, XmppServer, XmppServerConfig
from tests.helpers.xmppd import (
    CLIENT,
    FRAMING,
    MUC,
    RawTcp,
    RawWebSocket,
    SlixClient,
    make_self_signed,
    status_codes,
)

DOMAIN = "meet.sluice"
ROOM = f"room1@conference.{DOMAIN}"
ROOM_JID = slixmpp.JID(ROOM)
FOCUS_PASSWORD = "focus-secret"
ACCOUNTS = {f"focus@auth.{DOMAIN}": FOCUS_PASSWORD}
#: The byte bound in these tests; small, so that the kernel's buffers (~MBs on loopback) are not the bulk.
BOUND = 256 * 1024
#: What one flush can add past the bound before the check after it: one read of the flooder's input.
ONE_FLUSH = 96 * 1024
#: Bytes waiting that cannot be the frames of the last few flushes on their way out: a real backlog.
BACKLOG = 128 * 1024
STALL = 1.0
SLOW_RCVBUF = 4096
BODY = 8 * 1024
#: 200 messages/s of 8 KiB: 1.6 MB/s to each occupant, which the fast clients take in their stride.
PER_TICK, TICK = 10, 0.05
SLOW = "slow0001"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"


@dataclass
class Xmppd:
    server: XmppServer
    ws_url: str
    tls: bool
    #: SlixClients to disconnect at the end.
    clients: list[SlixClient]

    @property
    def port(self) -> int:
        return self.server.tcp_port


LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop-as-serve": uvloop.run,
}


@pytest.fixture(params=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    return LOOPS[request.param]


@contextlib.asynccontextmanager
async def serve(limits: XmppLimits, certs: tuple[str, str] | None = None) -> AsyncIterator[Xmppd]:
    """With `certs`, c2s requires STARTTLS. On uvloop, the web app runs as `sluice serve` runs it."""
    cert, key = certs or (None, None)
    config = XmppServerConfig(
        domain=DOMAIN, accounts=ACCOUNTS, tcp_port=0, limits=limits, tls_cert=cert, tls_key=key
    )
    server = XmppServer(config)
    await server.start()
    app = web.Application()
    app.router.add_get("/xmpp-websocket", server.websocket_handler)
    as_serve = isinstance(asyncio.get_running_loop(), uvloop.Loop)
    # aiohttp's TestServer cancels the handler of a lost connection; `sluice serve`'s AppRunner does not.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=not as_serve)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    clients: list[SlixClient] = []
    try:
        yield Xmppd(server, f"ws://127.0.0.1:{port}/xmpp-websocket", certs is not None, clients)
    finally:
        for client in clients:
            if client.xmpp.transport is not None:
                try:
                    await client.disconnect()
                except (TimeoutError, ConnectionError):
                    client.xmpp.abort()
        await server.stop()
        await runner.cleanup()


async def focus_in_room(xmppd: Xmppd) -> SlixClient:
    """The focus creates the room (only it may) and is the flooder: accounts are not rate limited."""
    focus = SlixClient(f"focus@auth.{DOMAIN}/focus", FOCUS_PASSWORD, tls=xmppd.tls)
    xmppd.clients.append(focus)
    await focus.connect(xmppd.port)
    await focus.join(ROOM, "focus")
    return focus


async def fast_tcp(xmppd: Xmppd) -> SlixClient:
    client = SlixClient(DOMAIN, tls=xmppd.tls)
    xmppd.clients.append(client)
    await client.connect(xmppd.port)
    await client.join(ROOM, "fast0001")
    return client


def numbered(body: str | None) -> int | None:
    return int(body[:6]) if body and body[:6].isdigit() else None


class FastWebSocket:
    """A WebSocket participant that reads everything as it comes and keeps the flood's sequence numbers."""

    def __init__(self, ws: RawWebSocket) -> None:
        self.ws = ws
        self.seen: list[int] = []
        self.closed_by_server = False
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def join(cls, xmppd: Xmppd) -> FastWebSocket:
        ws = await RawWebSocket.connect(xmppd.ws_url)
        await ws.login_anonymous(DOMAIN)
        await ws.send(f'<presence xmlns="{CLIENT}" to="{ROOM}/fast0002"><x xmlns="{MUC}"/></presence>')
        await ws.recv_until(lambda e: e.get("from") == f"{ROOM}/fast0002" and "110" in status_codes(e))
        return cls(ws)

    async def _read(self) -> None:
        while True:
            msg = await self.ws.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                self.closed_by_server = True
                return
            elem = ET.fromstring(msg.data)
            n = numbered(elem.findtext(f"{{{CLIENT}}}body"))
            if n is not None:
                self.seen.append(n)
                self._changed.set()

    async def wait_for(self, n: int) -> None:
        while not self.seen or self.seen[-1] < n:
            self._changed.clear()
            await self._changed.wait()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.ws.close()


class Flood:
    """The focus sends PER_TICK numbered groupchat messages every TICK until stopped."""

    def __init__(self, focus: SlixClient) -> None:
        self.focus = focus
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        pad = "x" * BODY
        while True:
            for _ in range(PER_TICK):
                self.focus.xmpp.send_message(mto=ROOM_JID, mbody=f"{self.sent:06d} {pad}", mtype="groupchat")
                self.sent += 1
            await asyncio.sleep(TICK)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def received_all(fast: SlixClient, fast_ws: FastWebSocket, sent: int, timeout: float = 20.0) -> None:
    """Both fast clients got messages 0..sent-1, each once and in order."""
    await fast.wait_for(
        lambda m: numbered(m.findtext(f"{{{CLIENT}}}body")) == sent - 1, messages=True, timeout=timeout
    )
    await asyncio.wait_for(fast_ws.wait_for(sent - 1), timeout)
    tcp_seen = [n for m in fast.messages if (n := numbered(m.findtext(f"{{{CLIENT}}}body"))) is not None]
    assert tcp_seen == list(range(sent))
    assert fast_ws.seen == list(range(sent))


def label(framing: str = "") -> str:
    """For the measurements printed with `pytest -s`: the framing and the event loop."""
    loop = "uvloop" if isinstance(asyncio.get_running_loop(), uvloop.Loop) else "asyncio"
    return f"[{framing} on {loop}]" if framing else f"[{loop}]"


def left(nick: str) -> Callable[[ET.Element], bool]:
    return lambda p: p.get("from") == f"{ROOM}/{nick}" and p.get("type") == "unavailable"


async def until(condition: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Polls `condition`; returns the time.monotonic() at which it first held."""

    async def wait() -> float:
        # Server state has no event to wait on; sampling it often is the measurement.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(step)
        return time.monotonic()

    return await asyncio.wait_for(wait(), timeout)


@dataclass
class SlowClient:
    """A participant that joined, then never reads again; `conn_id` is its connection on the server."""

    jid: str
    conn_id: int
    send: Callable[[str], Awaitable[None]]
    read_to_end: Callable[[], Awaitable[Any]]
    close: Callable[[], Awaitable[None]]


async def join_slow(xmppd: Xmppd, framing: str) -> SlowClient:
    if framing == "ws":
        ws = await RawWebSocket.connect(xmppd.ws_url, rcvbuf=SLOW_RCVBUF)
        jid = await ws.login_anonymous(DOMAIN)
        await ws.send(f'<presence xmlns="{CLIENT}" to="{ROOM}/{SLOW}"><x xmlns="{MUC}"/></presence>')
        await ws.recv_until(lambda e: e.get("from") == f"{ROOM}/{SLOW}" and "110" in status_codes(e))

        async def ws_read_to_end() -> Any:
            while True:  # the backlog that sat in the client's buffers, then the end
                msg = await ws.ws.receive(10)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return msg.type

        send, read_to_end, close = ws.send, ws_read_to_end, ws.close
    else:
        raw = await RawTcp.connect(xmppd.port, rcvbuf=SLOW_RCVBUF)
        if framing == "tls":
            await raw.open(DOMAIN)
            raw.write(f"<starttls xmlns='{TLS}'/>")
            await raw.read_until(lambda e: e.tag == f"{{{TLS}}}proceed")
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            await raw.writer.start_tls(context)
            raw.parser.restart()
        jid = await raw.login_anonymous(DOMAIN)
        raw.write(f"<presence to='{ROOM}/{SLOW}'><x xmlns='{MUC}'/></presence>")
        await raw.read_until(lambda e: e.get("from") == f"{ROOM}/{SLOW}" and "110" in status_codes(e))

        async def tcp_send(xml: str) -> None:
            raw.write(xml)

        async def tcp_read_to_end() -> Any:
            try:
                while await raw.reader.read(65536):
                    pass
            except ConnectionError as exc:  # an abort is a reset
                return type(exc).__name__
            return "eof"

        send, read_to_end, close = tcp_send, tcp_read_to_end, raw.close
    conn_id = next(c.id for full, c in xmppd.server.core.sessions.items() if str(full) == jid)
    return SlowClient(jid, conn_id, send, read_to_end, close)


@pytest.mark.parametrize("framing", ["ws", "tcp", "tls"])
def test_reader_that_stops_is_cut_off_at_the_byte_bound(
    run: Callable[[Coroutine[Any, Any, None]], None], framing: str, tmp_path: Path
) -> None:
    """`tls`: c2s after STARTTLS, where the TLS layer and the socket under it both buffer."""
    run(reader_that_stops(framing, make_self_signed(tmp_path, DOMAIN) if framing == "tls" else None))


async def reader_that_stops(framing: str, certs: tuple[str, str] | None) -> None:
    # A long stall timeout: here only the byte bound may act.
    async with serve(XmppLimits(max_send_queue_bytes=BOUND, send_stall_timeout=60.0), certs) as xmppd:
        server = xmppd.server
        focus = await focus_in_room(xmppd)
        fast = await fast_tcp(xmppd)
        fast_ws = await FastWebSocket.join(xmppd)
        slow = await join_slow(xmppd, framing)
        handlers = len(server._handlers)  # the slow client's handler must end
        flood = Flood(focus)
        start = time.monotonic()
        flood.start()
        try:
            queued_at = await until(lambda: (server.queued_bytes(slow.conn_id) or 0) >= BACKLOG, 20)
            cut_at = await until(lambda: server.stats().get("slow_consumers_disconnected", 0) > 0, 20)
            await fast.wait_for(left(SLOW), timeout=5)
            seen_at = time.monotonic()
            # The others keep being served while the flood goes on.
            await asyncio.sleep(0.5)
        finally:
            await flood.stop()
        stats = server.stats()
        print(
            f"\n{label(framing)} {BACKLOG} bytes waiting at {queued_at - start:.2f}s,"
            f" cut off {cut_at - queued_at:.3f}s later, seen leaving {seen_at - cut_at:.3f}s after that;"
            f" peak queued {stats['send_queue_peak_bytes']} bytes (bound {BOUND}); {flood.sent} messages sent"
        )
        assert stats["slow_consumers_disconnected"] == 1
        assert stats["slow_consumers_over_limit"] == 1
        assert stats.get("slow_consumers_stalled", 0) == 0
        assert BOUND < stats["send_queue_peak_bytes"] <= BOUND + ONE_FLUSH
        assert server.queued_bytes(slow.conn_id) is None  # its link, queue and transport buffer are gone
        assert stats["occupants"] == 3 and stats["sessions"] == 3
        await until(lambda: len(server._handlers) == handlers - 1, 2)
        # The slow client finds its connection cut (no close handshake was waited for).
        assert await asyncio.wait_for(slow.read_to_end(), 10) is not None

        await received_all(fast, fast_ws, flood.sent)
        assert not fast_ws.closed_by_server and fast.xmpp.transport is not None
        fast.xmpp.send_message(mto=ROOM_JID, mbody="still here", mtype="groupchat")
        await focus.wait_for(lambda m: m.findtext(f"{{{CLIENT}}}body") == "still here", messages=True)
        assert server.stats()["send_queue_bytes"] < BOUND
        await slow.close()
        await fast_ws.close()


@pytest.mark.parametrize("framing", ["ws", "tcp"])
def test_stalled_reader_is_cut_off_after_the_stall_timeout(
    run: Callable[[Coroutine[Any, Any, None]], None], framing: str
) -> None:
    run(stalled_reader(framing))


async def stalled_reader(framing: str) -> None:
    # A big byte bound: the little that waits here is far below it, so only the stall timeout may act.
    async with serve(XmppLimits(max_send_queue_bytes=64 * BOUND, send_stall_timeout=STALL)) as xmppd:
        server = xmppd.server
        focus = await focus_in_room(xmppd)
        fast = await fast_tcp(xmppd)
        slow = await join_slow(xmppd, framing)
        flood = Flood(focus)
        flood.start()
        try:
            await until(lambda: (server.queued_bytes(slow.conn_id) or 0) >= BACKLOG, 20)
        finally:
            await flood.stop()
        waiting_at = time.monotonic()
        waiting = server.queued_bytes(slow.conn_id)
        assert waiting is not None and 0 < waiting < 64 * BOUND
        cut_at = await until(lambda: server.stats().get("slow_consumers_disconnected", 0) > 0, 10)
        await fast.wait_for(left(SLOW), timeout=5)
        stats = server.stats()
        print(
            f"\n{label(framing)} {waiting} bytes waiting;"
            f" cut off {cut_at - waiting_at:.3f}s later (stall {STALL}s)"
        )
        assert stats["slow_consumers_stalled"] == 1
        assert stats.get("slow_consumers_over_limit", 0) == 0
        # Not before the timeout; within it plus one sweep (a quarter of it) and some scheduling.
        assert STALL - 0.1 <= cut_at - waiting_at <= STALL * 1.25 + 0.5
        assert server.queued_bytes(slow.conn_id) is None
        assert stats["occupants"] == 2
        assert fast.xmpp.transport is not None
        await slow.close()


@pytest.mark.parametrize("framing", ["ws", "tcp"])
def test_reader_that_closes_its_stream_and_stops_reading_is_not_kept(
    run: Callable[[Coroutine[Any, Any, None]], None], framing: str
) -> None:
    """The server's answer to `</stream>` / `<close/>` waits behind a backlog the peer never takes: the
    session ends at once, and the connection is aborted after the stall timeout instead of lingering."""
    run(reader_that_closes_and_stops(framing))


async def reader_that_closes_and_stops(framing: str) -> None:
    async with serve(XmppLimits(max_send_queue_bytes=64 * BOUND, send_stall_timeout=STALL)) as xmppd:
        server = xmppd.server
        focus = await focus_in_room(xmppd)
        fast = await fast_tcp(xmppd)
        slow = await join_slow(xmppd, framing)
        handlers = len(server._handlers)
        flood = Flood(focus)
        flood.start()
        try:
            await until(lambda: (server.queued_bytes(slow.conn_id) or 0) >= BACKLOG, 20)
        finally:
            await flood.stop()
        await slow.send(f'<close xmlns="{FRAMING}"/>' if framing == "ws" else "</stream:stream>")
        await fast.wait_for(left(SLOW), timeout=5)  # the session ended with the stream, not with the socket
        assert server.stats()["occupants"] == 2
        closing_at = time.monotonic()
        gone_at = await until(lambda: server.queued_bytes(slow.conn_id) is None, 10)
        await until(lambda: len(server._handlers) == handlers - 1, 2)
        stats = server.stats()
        print(
            f"\n{label(framing)} the closed stream's connection was aborted"
            f" {gone_at - closing_at:.3f}s after the close"
        )
        assert stats["slow_consumers_stalled"] == 1
        assert gone_at - closing_at <= STALL * 1.25 + 0.5
        await slow.close()


def test_fast_readers_under_the_same_load_are_not_cut_off(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    run(fast_readers())


async def fast_readers() -> None:
    async with serve(XmppLimits(max_send_queue_bytes=BOUND, send_stall_timeout=STALL)) as xmppd:
        server = xmppd.server
        focus = await focus_in_room(xmppd)
        fast = await fast_tcp(xmppd)
        fast_ws = await FastWebSocket.join(xmppd)
        flood = Flood(focus)
        flood.start()
        try:
            await asyncio.sleep(4 * STALL)  # longer than the slow readers above lasted, and several sweeps
        finally:
            await flood.stop()
        await received_all(fast, fast_ws, flood.sent)
        stats = server.stats()
        print(
            f"\n{label()} {flood.sent} messages;"
            f" peak queued {stats['send_queue_peak_bytes']} bytes (bound {BOUND})"
        )
        assert flood.sent >= 500
        assert stats.get("slow_consumers_disconnected", 0) == 0
        assert stats["send_queue_peak_bytes"] < BOUND
        assert stats["occupants"] == 3
        assert not fast_ws.closed_by_server
        await fast_ws.close()
