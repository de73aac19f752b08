"""The web front door: the browser client's static files, its `/config.json`, and XMPP over WebSocket.

One aiohttp application on one HTTP port (what `sluice serve` prints):

- `/` and `/<room>` serve `web/index.html` (the client reads the room from its own path);
- `/css/`, `/js/` and `/node_modules/` serve `web/`'s files (node_modules holds strophe.js, installed by
  `npm ci` from web/package-lock.json);
- `/config.json` tells the client its XMPP hosts (issue 5 contract) and where the WebSocket is;
- `/xmpp-websocket` is the embedded server's RFC 7395 endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from signaling.domains import JitsiDomains

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
#: Room names the client accepts (web/js/app.js); anything else under / is a 404, not the page.
ROOM = re.compile(r"^[a-z0-9_-]{1,64}$")
#: First path segments taken by static files: a room cannot be called this.
RESERVED = ("css", "js", "node_modules", "config.json", "xmpp-websocket")

WebSocketHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def client_config(domain: str, websocket: str = "/xmpp-websocket") -> dict[str, Any]:
    """What the page fetches as `/config.json`: Debian Jitsi's layout under one base domain."""
    layout = _Layout(domain)
    return {
        "hosts": {"domain": domain, "muc": layout.muc_domain, "focus": layout.focus_domain},
        "focusUserJid": f"focus@{layout.auth_domain}",
        "websocket": websocket,
    }


@dataclass(frozen=True, slots=True)
class _Layout(JitsiDomains):
    domain: str


def create_web_app(domain: str, websocket: WebSocketHandler, web_dir: Path = WEB_DIR) -> web.Application:
    """The application; raises FileNotFoundError when the client or its npm dependency is missing."""
    index = web_dir / "index.html"
    strophe = web_dir / "node_modules" / "strophe.js" / "dist" / "strophe.umd.min.js"
    for needed in (index, strophe):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing (run scripts/bootstrap.sh)")
    config = client_config(domain)

    async def config_json(_request: web.Request) -> web.Response:
        return web.json_response(config, headers={"Cache-Control": "no-store"})

    async def page(request: web.Request) -> web.StreamResponse:
        room = request.match_info.get("room")
        if room is not None and (room in RESERVED or not ROOM.fullmatch(room)):
            raise web.HTTPNotFound(text=f"no such room name: {room!r} (letters, digits, '-' and '_')")
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    app = web.Application()
    app.router.add_get("/config.json", config_json)
    app.router.add_get("/xmpp-websocket", websocket)
    for sub in ("css", "js", "node_modules"):
        app.router.add_static(f"/{sub}/", web_dir / sub, follow_symlinks=False)
    app.router.add_get("/", page)
    app.router.add_get("/{room}", page)
    return app
