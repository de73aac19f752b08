"""The bridge's public HTTP server (docs/jitsi-protocol.md 3.1, 3.2): colibri websockets, the bridge channel.

Route:
  GET /colibri-ws/{server-id}/{conf-id}/{endpoint-id}?pwd=<ICE pwd>     WebSocket upgrade

conf-id is the bridge's own conference id (`Conference.id`, not the meeting-id); pwd is the endpoint's ICE
pwd, which the endpoint learnt from the Colibri2 answer's `<web-socket url>`. Refused before the upgrade,
with a JSON reason and a counter: another server-id, an unknown conference or endpoint -> 404, a wrong or
missing pwd -> 403, a plain HTTP request -> 400. A second socket for the same endpoint replaces the first.
The socket closes when the endpoint expires or its conference closes.

This module only moves frames; bridge/channel.py decides what they mean and where they go.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import WSMsgType, web

from bridge.bridge import Bridge
from bridge.channel import (
    ASKING,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    Action,
    BridgeChannels,
    ChannelStats,
    Send,
)

log = logging.getLogger(__name__)

#: Messages waiting for one slow receiver before more are dropped (jvb's transport send queue-size).
QUEUE_SIZE = 1024
#: Frames larger than this close the socket (1009); smaller ones above channel.MAX_MESSAGE_CHARS are
#: refused one by one while the socket stays open.
MAX_FRAME_BYTES = 1024 * 1024


class _Connection:
    """One open socket: a bounded outbox drained by its own writer, so no sender waits on a slow peer."""

    def __init__(self, ws: web.WebSocketResponse, stats: ChannelStats, limit: int) -> None:
        self.ws = ws
        self._stats = stats
        self._limit = limit
        self._outbox: deque[str] = deque()
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        #: Set when the request handler that owns this socket has returned.
        self.finished = asyncio.Event()

    def send(self, text: str) -> None:
        if self._close is not None:
            self._stats.dropped["send_failed"] += 1
        elif len(self._outbox) >= self._limit:
            self._stats.dropped["queue_full"] += 1
        else:
            self._outbox.append(text)
            self._wake.set()

    @property
    def closing(self) -> bool:
        return self._close is not None

    @property
    def close_reason(self) -> str:
        return self._close[1] if self._close is not None else ""

    def close(self, code: int, reason: str) -> None:
        """Closes after what is already queued has been sent."""
        if self._close is None:
            self._close = (code, reason)
            self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    await self.ws.send_str(self._outbox[0])
                    self._outbox.popleft()
                    self._stats.messages_sent += 1
                if self._close is not None:
                    code, reason = self._close
                    await self.ws.close(code=code, message=reason.encode())
                    return
        except ConnectionError:
            # The peer went away; what was still queued is lost.
            self._stats.dropped["send_failed"] += len(self._outbox)
            self._outbox.clear()


def _refuse(stats: ChannelStats, status: int, reason: str, text: str) -> web.Response:
    stats.refused[reason] += 1
    return web.json_response({"error": text, "reason": reason}, status=status)


class ColibriWebSockets:
    """Accepts colibri websockets for one Bridge and carries out what its BridgeChannels decide."""

    def __init__(
        self,
        bridge: Bridge,
        channels: BridgeChannels,
        *,
        server_id: str = "default-id",
        heartbeat: float | None = 15.0,
        compress: bool = True,
        close_timeout: float = 5.0,
        queue_size: int = QUEUE_SIZE,
        on_asked: Callable[[str], None] | None = None,
    ) -> None:
        """`on_asked(conference_id)`: a receiver changed what it asks for (constraints, lastN, video type)."""
        self.bridge = bridge
        self.channels = channels
        self.on_asked = on_asked
        self.server_id = server_id
        self.heartbeat = heartbeat
        self.compress = compress
        self.close_timeout = close_timeout
        self.queue_size = queue_size
        self._connections: dict[tuple[str, str], _Connection] = {}

    @property
    def stats(self) -> ChannelStats:
        return self.channels.stats

    def connected(self, conference_id: str, endpoint_id: str) -> bool:
        return (conference_id, endpoint_id) in self._connections

    def apply(self, conference_id: str, actions: Iterable[Action]) -> None:
        """Queues the sends and closes of one conference's hub; never waits."""
        for action in actions:
            conn = self._connections.get((conference_id, action.endpoint_id))
            if conn is None:
                if isinstance(action, Send):
                    self.stats.dropped["no_socket"] += 1
            elif isinstance(action, Send):
                conn.send(action.text)
            else:
                conn.close(action.code, action.reason)

    async def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "bridge shutting down") -> None:
        """Closes every socket and waits (bounded) for their handlers to return."""
        conns = list(self._connections.values())
        for conn in conns:
            conn.close(code, reason)
        if conns:
            waits = [asyncio.ensure_future(c.finished.wait()) for c in conns]
            _done, pending = await asyncio.wait(waits, timeout=self.close_timeout + 1.0)
            for w in pending:
                w.cancel()

    def _refusal(self, server_id: str, conference_id: str, endpoint_id: str, pwd: str) -> web.Response | None:
        """Why this upgrade request is refused, or None to accept it."""
        if server_id != self.server_id:
            return _refuse(self.stats, 404, "unknown_server_id", f"unknown server-id {server_id!r}")
        conference = self.bridge.get_conference(conference_id)
        if conference is None or conference.closed:
            return _refuse(self.stats, 404, "unknown_conference", f"conference {conference_id} not found")
        endpoint = conference.get_endpoint(endpoint_id)
        if endpoint is None:
            return _refuse(self.stats, 404, "unknown_endpoint", f"endpoint {endpoint_id} not found")
        if not hmac.compare_digest(pwd.encode(), endpoint.channel_pwd.encode()):
            return _refuse(self.stats, 403, "bad_pwd", "wrong or missing pwd")
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        conference_id = request.match_info["conference_id"]
        endpoint_id = request.match_info["endpoint_id"]
        refusal = self._refusal(
            request.match_info["server_id"], conference_id, endpoint_id, request.query.get("pwd", "")
        )
        if refusal is not None:
            return refusal
        ws = web.WebSocketResponse(
            heartbeat=self.heartbeat,
            compress=self.compress,
            timeout=self.close_timeout,
            max_msg_size=MAX_FRAME_BYTES,
        )
        if not ws.can_prepare(request).ok:
            return _refuse(self.stats, 400, "not_websocket", "expected a WebSocket upgrade")
        await ws.prepare(request)
        connected = self.channels.connect(conference_id, endpoint_id)
        if connected is None:
            # Expired while the upgrade was under way.
            await ws.close(code=CLOSE_GOING_AWAY, message=b"endpoint expired")
            return ws
        generation, greeting = connected
        key = (conference_id, endpoint_id)
        old = self._connections.get(key)
        if old is not None:
            old.close(CLOSE_NORMAL, "replaced by a newer connection")
            self.stats.replaced += 1
        conn = _Connection(ws, self.stats, self.queue_size)
        self._connections[key] = conn
        writer = asyncio.create_task(conn.run(), name=f"colibri-ws-{endpoint_id}")
        log.info("colibri-ws: %s/%s connected from %s", conference_id, endpoint_id, request.remote)
        self.apply(conference_id, greeting)
        if self.on_asked is not None:
            # A sender that just connected is told (again) what is wanted of its sources.
            conference = self.bridge.get_conference(conference_id)
            ep = conference.endpoints.get(endpoint_id) if conference is not None else None
            if ep is not None:
                ep.sender_max_heights.clear()
            self.on_asked(conference_id)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    result = self.channels.receive(conference_id, endpoint_id, msg.data)
                    if result.error is not None:
                        log.debug("colibri-ws: %s refused a frame: %s", endpoint_id, result.error)
                    self.apply(conference_id, result.actions)
                    if result.error is None and isinstance(result.message, ASKING) and self.on_asked:
                        self.on_asked(conference_id)
                elif msg.type is WSMsgType.BINARY:
                    self.channels.reject("binary", "the bridge channel carries text frames only")
        finally:
            self.channels.disconnect(conference_id, endpoint_id, generation)
            if self._connections.get(key) is conn:
                del self._connections[key]
            if conn.closing:
                # Our close frame is out; let the writer finish the closing handshake.
                await asyncio.wait({writer}, timeout=self.close_timeout)
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("colibri-ws: writer of %s failed", endpoint_id)
            conn.finished.set()
            how = f"by the bridge: {conn.close_reason}" if conn.closing else f"(code {ws.close_code})"
            log.info("colibri-ws: %s/%s closed %s", conference_id, endpoint_id, how)
        return ws


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _json_refusals(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """aiohttp's own 404/405 become JSON like every other refusal here."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status)


#: The one route of the colibri websockets (section 3.2).
ROUTE = "/colibri-ws/{server_id}/{conference_id}/{endpoint_id}"


def add_colibri_ws(app: web.Application, sockets: ColibriWebSockets) -> None:
    """Routes the colibri websockets on `app` and closes them when it shuts down: the bridge's own public
    server, or another application's port (`sluice serve` carries them on its web port)."""
    app.add_routes([web.get(ROUTE, sockets.handle)])

    async def on_shutdown(_app: web.Application) -> None:
        await sockets.close_all()

    app.on_shutdown.append(on_shutdown)


def create_public_app(sockets: ColibriWebSockets) -> web.Application:
    """The public server (JVB's 9090): only the colibri websockets."""
    app = web.Application(middlewares=[_json_refusals])
    add_colibri_ws(app, sockets)
    return app
