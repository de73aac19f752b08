"""Serving the web client for browser tests that bring their own XMPP server (Prosody).

`WebServer` is a small aiohttp app on its own thread and event loop (so blocking Selenium calls and async
tests both work): the client's static files, `/config.json`, `/<room>` → index.html, an optional
`/xmpp-websocket` proxy to an upstream XMPP WebSocket (same origin, as `sluice serve` offers its own), and a
test harness page for its jingle-sdp.js. `sluice serve` itself serves signaling/webclient/ with
signaling/web.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.client import ClientSession

from signaling.web import WEB_DIR, add_client_files
from signaling.web import client_config as signaling_client_config
from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.prosody import DOMAIN

ROOM_RE = re.compile(r"^[a-z0-9_-]{1,64}$")


def client_config(websocket: str = "/xmpp-websocket", domain: str = DOMAIN) -> dict[str, Any]:
    """The page's `/config.json`, as `sluice serve` gives it (signaling/web.py), for Prosody's domain."""
    return signaling_client_config(domain, websocket)


# The harness page: jingle-sdp.js and a real RTCPeerConnection with the fake camera and microphone.
# window.sluice.* are called by ChromiumBrowser.call (tests/helpers/chromium.py).
HARNESS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>jingle-sdp harness</title>
<link rel="icon" href="data:,"></head><body>
<script type="module">
import * as J from '/js/jingle-sdp.js';
const parse = (xml) => {
  const doc = new DOMParser().parseFromString(xml, 'text/xml');
  if (doc.querySelector('parsererror')) throw new Error('test XML does not parse');
  return doc.documentElement;
};
let remote = null, pc = null, stream = null;
const transceivers = () => pc.getTransceivers().map((t) => ({
  mid: t.mid, kind: t.receiver.track.kind, direction: t.direction, current: t.currentDirection,
  stopped: t.stopped, sending: Boolean(t.sender.track),
}));
const renegotiate = async () => {
  const offer = remote.toSdp();
  await pc.setRemoteDescription({ type: 'offer', sdp: offer });
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  return { offer, answer: pc.localDescription.sdp, transceivers: transceivers(),
           sources: remote.activeSources() };
};
window.J = J;
window.sluice = {
  parseJingle: (xml) => J.parseJingle(parse(xml)),
  jingleRoundTrip: (xml) => J.toXml(J.jingleXml(J.parseJingle(parse(xml)))),
  offer: (xml) => new J.RemoteSession(J.parseJingle(parse(xml))).toSdp(),
  sdpToContents: (sdp) => {
    const s = J.parseSdp(sdp);
    return s.media.map((m) => J.mediaToContent(m, s.session));
  },
  contentsXml: (contents) => contents.map((c) => J.toXml(J.contentXml(c))),
  // session-initiate → offer → real answer → session-accept XML
  initiate: async (xml, nick, media) => {
    if (pc) pc.close();
    remote = new J.RemoteSession(J.parseJingle(parse(xml)));
    pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    // Remote audio is only decoded (totalSamplesReceived) when something plays it, as the client does.
    pc.ontrack = (e) => {
      if (e.track.kind !== 'audio') return;
      const a = document.createElement('audio');
      a.autoplay = true;
      a.srcObject = new MediaStream([e.track]);
      document.body.append(a);
    };
    if (media) {
      stream ??= await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      for (const t of stream.getTracks()) pc.addTrack(t, stream);
    }
    const offer = remote.toSdp();
    await pc.setRemoteDescription({ type: 'offer', sdp: offer });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      setTimeout(resolve, 3000);
    });
    const sdp = pc.localDescription.sdp;
    const accept = J.sessionAcceptXml(remote, sdp, { nick, responder: 'client@meet.test/r' });
    return { offer, answer: sdp, accept,
             transceivers: transceivers(), sources: remote.activeSources() };
  },
  apply: async (xml) => {
    const j = J.parseJingle(parse(xml));
    if (j.action === 'source-add') remote.addSources(j.sources);
    else if (j.action === 'source-remove') remote.removeSources(j.sources);
    else if (j.action === 'transport-info') {
      const cands = j.contents.flatMap((c) => c.transport ? c.transport.candidates : []);
      remote.addCandidates(cands);
      for (const c of cands) {
        await pc.addIceCandidate({ candidate: J.candidateToSdp(c), sdpMid: 'audio', sdpMLineIndex: 0 });
      }
      return { offer: remote.toSdp(), transceivers: transceivers() };
    } else throw new Error('harness: unsupported action ' + j.action);
    return renegotiate();
  },
  ownerOfSsrc: (ssrc) => remote.ownerOfSsrc(ssrc) ?? null,
  // inbound-rtp per remote owner (mid → owner from the Jingle sources), as the client's getStats() does
  inbound: async () => {
    const out = [];
    (await pc.getStats()).forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      out.push({ kind: r.kind, ssrc: r.ssrc, mid: r.mid, owner: remote.ownerOfMid(r.mid) ?? null,
                 framesDecoded: r.framesDecoded ?? 0, totalSamplesReceived: r.totalSamplesReceived ?? 0,
                 packetsReceived: r.packetsReceived ?? 0, payloadType: r.codecId ?? null });
    });
    return out;
  },
  iceState: () => pc.iceConnectionState,
  close: () => { if (pc) pc.close(); pc = null; },
};
</script></body></html>
"""


# The bridge channel harness: webclient/js/bridge-channel.js alone, against the WebSocket URL it is given,
# and conference.js's encodingsWanted (conference.js needs the Strophe global, as index.html loads it).
CHANNEL_HARNESS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>bridge channel harness</title>
<link rel="icon" href="data:,">
<script src="/node_modules/strophe.js/dist/strophe.umd.min.js"></script></head><body>
<script type="module">
import { BridgeChannel } from '/js/bridge-channel.js';
import { encodingsWanted } from '/js/conference.js';
let ch = null;
const events = [];
window.sluice = {
  encodingsWanted: (maxHeight, trackHeight, scales) => encodingsWanted(maxHeight, trackHeight, scales),
  open: (url) => {
    ch = new BridgeChannel(url);
    const types = ['open', 'close', 'server-hello', 'forwarded-sources', 'dominant-speaker',
                   'sender-constraints', 'message'];
    for (const type of types) ch.addEventListener(type, (e) => events.push({ type, detail: e.detail }));
    return true;
  },
  setConstraints: (c) => ch.setConstraints(c),
  snapshot: () => ch.snapshot(),
  events: () => events,
  close: () => ch.close(),
};
</script></body></html>
"""

Routes = Callable[[web.UrlDispatcher], object]


class WebServer:
    """The web client over http://127.0.0.1:<port>/ on a private thread; `stop()` joins it. `routes` adds a
    test's own routes (their handlers run on the server's thread)."""

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        websocket_upstream: str | None = None,
        routes: Routes | None = None,
    ) -> None:
        self.config = dict(config or client_config())
        self.websocket_upstream = websocket_upstream
        self.routes = routes
        self.port = 0
        self.requests: list[str] = []
        self.missing: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="web-server", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebServer:
        if not (WEB_DIR / "node_modules" / "strophe.js").is_dir():
            raise RuntimeError(f"{WEB_DIR / 'node_modules'} is missing: run scripts/bootstrap.sh")
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._runner = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._log])
        app.router.add_get("/config.json", self._config)
        app.router.add_get("/__harness/jingle", self._harness)
        app.router.add_get("/__harness/channel", self._channel_harness)
        if self.routes is not None:
            self.routes(app.router)
        app.router.add_get("/xmpp-websocket", self._websocket)
        # The same files `sluice serve` serves, so the browser tests also prove nothing else is needed.
        add_client_files(app.router, WEB_DIR)
        app.router.add_get("/", self._index)
        app.router.add_get("/{room}", self._room)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])

    @web.middleware
    async def _log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(request.path)
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPNotFound:
            self.missing.append(request.path)
            raise
        return response

    async def _config(self, _request: web.Request) -> web.Response:
        return web.json_response(self.config, headers={"Cache-Control": "no-store"})

    async def _harness(self, _request: web.Request) -> web.Response:
        return web.Response(text=HARNESS_HTML, content_type="text/html")

    async def _channel_harness(self, _request: web.Request) -> web.Response:
        return web.Response(text=CHANNEL_HARNESS_HTML, content_type="text/html")

    async def _index(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    async def _room(self, request: web.Request) -> web.StreamResponse:
        if not ROOM_RE.match(request.match_info["room"]):
            self.missing.append(request.path)
            raise web.HTTPNotFound()
        return web.FileResponse(WEB_DIR / "index.html")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        """Pipes RFC 7395 frames between the page and the upstream server, both ways, as text."""
        if self.websocket_upstream is None:
            raise web.HTTPNotFound()
        down = web.WebSocketResponse(protocols=("xmpp",))
        await down.prepare(request)
        async with (
            ClientSession() as session,
            session.ws_connect(self.websocket_upstream, protocols=("xmpp",)) as up,
        ):

            async def pump(src: Any, dst: Any) -> None:
                async for msg in src:
                    if msg.type == WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                        break
                await dst.close()

            tasks = [asyncio.create_task(pump(down, up)), asyncio.create_task(pump(up, down))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        return down


def console_errors(entries: list[dict[str, Any]]) -> list[str]:
    """SEVERE browser console entries (Selenium's `get_log("browser")`), as text."""
    return [str(e.get("message")) for e in entries if e.get("level") == "SEVERE"]


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, default=str)[:4000]


# ---- driving the client's page (window.sluice, webclient/js/app.js)

WINDOW = (1280, 800)


@contextlib.asynccontextmanager
async def open_pages(tmp: Path) -> AsyncIterator[dict[str, ChromiumBrowser]]:
    """A dict the test puts its pages in, by name; at the end each page's console log is saved beside the
    test's files and its browser stopped."""
    opened: dict[str, ChromiumBrowser] = {}
    try:
        yield opened
    finally:
        for name, browser in opened.items():
            with contextlib.suppress(Exception):
                browser.save_console_log(tmp / f"{name}-console.log")
            await asyncio.to_thread(browser.stop)


def open_browser(tmp: Path, name: str, url: str, flags: tuple[str, ...] = ()) -> ChromiumBrowser:
    """A fresh headless Chromium profile under `tmp`, on `url`, at a laptop-sized window (`flags`: more
    Chromium flags)."""
    browser = ChromiumBrowser.start(tmp / f"{name}-profile", url, flags=flags)
    browser.driver.set_window_size(*WINDOW)
    return browser


def wait_for(
    browser: ChromiumBrowser, what: str, check: Callable[[Any], bool], fn: str = "state", within: float = 30.0
) -> Any:
    """Polls `window.sluice[fn]()` until `check` holds; the assertion shows the last value."""
    deadline = time.monotonic() + within
    while True:
        value = browser.call(fn)
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {fn}() = {json.dumps(value)[:3000]}")
        time.sleep(0.1)


async def await_for(
    browser: ChromiumBrowser, what: str, check: Callable[[Any], bool], fn: str = "state", within: float = 30.0
) -> Any:
    return await asyncio.to_thread(wait_for, browser, what, check, fn, within)


async def joining(tmp: Path, base_url: str, who: str, name: str, room: str) -> ChromiumBrowser:
    """A page on `base_url`/`room` (the web client) that pressed Join as `name` (not waiting for more)."""
    browser = await asyncio.to_thread(open_browser, tmp, who, f"{base_url}/{room}")
    await await_for(browser, f"{who}: pre-join", lambda s: s["view"] == "prejoin")
    await browser.acall("join", name)
    return browser
