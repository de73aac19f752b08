"""Serving web/ for browser tests, and a Prosody laid out for the web client.

`WebServer` is a small aiohttp app on its own thread and event loop (so blocking Selenium calls and async
tests both work): web/'s static files, `/config.json`, `/<room>` → index.html, an optional
`/xmpp-websocket` proxy to an upstream XMPP WebSocket (same origin, as `sluice serve` will offer), and a
test harness page for web/js/jingle-sdp.js. The real server wiring (`sluice serve`) is the lead's; this only
serves the same files the same way.

`WebProsody` is a copy of tests/helpers/prosody.py's layout extended with what the browser needs:
mod_websocket, the conference MUC and an external component for `focus.<domain>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.client import ClientSession

from tests.helpers.prosody import DOMAIN, Prosody, free_tcp_port

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
ROOM_RE = re.compile(r"^[a-z0-9_-]{1,64}$")

MUC_DOMAIN = f"conference.{DOMAIN}"
FOCUS_DOMAIN = f"focus.{DOMAIN}"
FOCUS_USER_JID = f"focus@auth.{DOMAIN}"


def client_config(websocket: str = "/xmpp-websocket", domain: str = DOMAIN) -> dict[str, Any]:
    """The `/config.json` of the contract (i5-contract.md)."""
    return {
        "hosts": {"domain": domain, "muc": f"conference.{domain}", "focus": f"focus.{domain}"},
        "focusUserJid": f"focus@auth.{domain}",
        "websocket": websocket,
    }


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


class WebServer:
    """web/ over http://127.0.0.1:<port>/ on a private thread; `stop()` joins it."""

    def __init__(
        self, config: Mapping[str, Any] | None = None, websocket_upstream: str | None = None
    ) -> None:
        self.config = dict(config or client_config())
        self.websocket_upstream = websocket_upstream
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
            raise RuntimeError("web/node_modules is missing: run scripts/bootstrap.sh (npm ci --prefix web)")
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
        app.router.add_get("/xmpp-websocket", self._websocket)
        for sub in ("css", "js", "node_modules"):
            app.router.add_static(f"/{sub}/", WEB_DIR / sub, follow_symlinks=False)
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


_WEB_CONFIG = """\
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ info = "{dir}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
s2s_ports = {{ }}
legacy_ssl_ports = {{ }}
c2s_direct_tls_ports = {{ }}
certificates = "{dir}/certs"
http_ports = {{ {http_port} }}
http_interfaces = {{ "127.0.0.1" }}
https_ports = {{ }}
http_default_host = "{domain}"
component_ports = {{ {component_port} }}
component_interfaces = {{ "127.0.0.1" }}
modules_enabled = {{ "disco"; "saslauth"; "roster"; "ping"; "websocket" }}
modules_disabled = {{ "s2s"; "offline" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
consider_websocket_secure = true

VirtualHost "{domain}"
    authentication = "anonymous"

Component "{muc_domain}" "muc"
    storage = "memory"
    restrict_room_creation = false
    muc_room_locking = false
    muc_room_default_public_jids = true

Component "{focus_domain}"
    component_secret = "{component_secret}"
"""


class WebProsody(Prosody):
    """Prosody with WebSocket on `http_port`, the conference MUC and `focus.<domain>` as a component."""

    http_port: int = 0
    component_port: int = 0
    component_secret: str = "focus-component-secret"

    @classmethod
    def create_web(cls, directory: Path) -> WebProsody:
        if subprocess.run(["which", "prosody"], check=False, capture_output=True).returncode != 0:
            raise RuntimeError("prosody is not installed: run scripts/bootstrap.sh")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        (directory / "certs").mkdir(exist_ok=True)
        server = cls(directory, free_tcp_port(), "unused")
        server.http_port = free_tcp_port()
        server.component_port = free_tcp_port()
        server.config_file.write_text(
            _WEB_CONFIG.format(
                dir=directory,
                c2s_port=server.c2s_port,
                http_port=server.http_port,
                component_port=server.component_port,
                component_secret=server.component_secret,
                domain=DOMAIN,
                muc_domain=MUC_DOMAIN,
                focus_domain=FOCUS_DOMAIN,
            )
        )
        return server

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/xmpp-websocket"


def console_errors(entries: list[dict[str, Any]]) -> list[str]:
    """SEVERE browser console entries (Selenium's `get_log("browser")`), as text."""
    return [str(e.get("message")) for e in entries if e.get("level") == "SEVERE"]


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, default=str)[:4000]
