"""The web front door: the browser client's static files, its `/config.json`, and XMPP over WebSocket.

One aiohttp application on one HTTP port (what `sluice serve` prints):

- `/` and `/<room>` serve `webclient/index.html` (the client reads the room from its own path);
- `/css/<file>` and `/js/<file>` serve `webclient/css` and `webclient/js` (regular files only: no listing,
  no dotfiles, no symlinks, no subdirectories);
- from `webclient/node_modules` (installed by `npm ci` from webclient/package-lock.json) only the strophe.js
  build that index.html loads; its package metadata, sources and other builds stay private;
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

#: The client's files are package data of signaling, so an installed wheel serves its own copy (the wheel
#: carries only the files served below; pyproject.toml's [tool.maturin] include/exclude).
WEB_DIR = Path(__file__).resolve().parent / "webclient"
#: Room names the client accepts (webclient/js/app.js); anything else under / is a 404, not the page.
ROOM = re.compile(r"^[a-z0-9_-]{1,64}$")
#: First path segments taken by static files: a room cannot be called this.
RESERVED = ("css", "js", "node_modules", "config.json", "xmpp-websocket")
#: The one node_modules file the page loads (webclient/index.html; webclient/js/xmpp.js names it too). It
#: references no source map (no sourceMappingURL comment), so none is served.
STROPHE = "node_modules/strophe.js/dist/strophe.umd.min.js"
#: The directories whose files are served as they are; flat, as the client's are.
STATIC_DIRS = ("css", "js")
#: A served file name: no leading dot (dotfiles, "." and ".."), no slash.
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

WebSocketHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def client_config(
    domain: str,
    websocket: str = "/xmpp-websocket",
    *,
    login: bool = False,
    opus_red: bool = False,
    e2ee: bool = False,
    ice_restart: bool = False,
) -> dict[str, Any]:
    """What the page fetches as `/config.json`: Debian Jitsi's layout under one base domain. With `login`
    (a secure domain) `hosts.auth` names where users log in with a password to start a meeting; with
    `opus_red` (the focus offers redundant Opus) clients send it (Jitsi Meet's
    `audioQuality.enableOpusRed`: the server's one switch turns on both sides); with `e2ee` clients offer
    end-to-end encryption (`[signaling.web] e2ee`: off by default, for what its frame transforms cost); with
    `ice_restart` (the focus restarts ICE in place) clients ask for that before a new session (Jitsi Meet's
    `enableIceRestart`)."""
    layout = _Layout(domain)
    hosts = {"domain": domain, "muc": layout.muc_domain, "focus": layout.focus_domain}
    if login:
        hosts["auth"] = layout.auth_domain
    config: dict[str, Any] = {
        "hosts": hosts,
        "focusUserJid": f"focus@{layout.auth_domain}",
        "websocket": websocket,
    }
    if opus_red:
        config["audioQuality"] = {"enableOpusRed": True}
    if e2ee:
        config["e2ee"] = {"enabled": True}
    if ice_restart:
        config["enableIceRestart"] = True
    return config


@dataclass(frozen=True, slots=True)
class _Layout(JitsiDomains):
    domain: str


def add_client_files(router: web.UrlDispatcher, web_dir: Path = WEB_DIR) -> None:
    """Routes for the files the page loads: `/css/<file>`, `/js/<file>` and strophe.js, nothing else."""
    strophe = web_dir / STROPHE

    async def strophe_js(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(strophe)

    def files_of(directory: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            path = directory / name
            # A symlink could lead out of webclient/; the client has none.
            if not _FILE_NAME.fullmatch(name) or path.is_symlink() or not path.is_file():
                raise web.HTTPNotFound()
            return web.FileResponse(path)

        return serve

    router.add_get(f"/{STROPHE}", strophe_js)
    for sub in STATIC_DIRS:
        router.add_get(f"/{sub}/{{name}}", files_of(web_dir / sub))


def create_web_app(
    domain: str,
    websocket: WebSocketHandler,
    web_dir: Path = WEB_DIR,
    *,
    login: bool = False,
    opus_red: bool = False,
    e2ee: bool = False,
    ice_restart: bool = False,
) -> web.Application:
    """The application; raises FileNotFoundError when the client or its npm dependency is missing."""
    index = web_dir / "index.html"
    strophe = web_dir / STROPHE
    for needed in (index, strophe):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing (run scripts/bootstrap.sh)")
    config = client_config(domain, login=login, opus_red=opus_red, e2ee=e2ee, ice_restart=ice_restart)

    async def config_json(_request: web.Request) -> web.Response:
        return web.json_response(config, headers={"Cache-Control": "no-store"})

    async def page(request: web.Request) -> web.StreamResponse:
        room = request.match_info.get("room")
        if room is not None and (room in RESERVED or not ROOM.fullmatch(room)):
            raise web.HTTPNotFound(text=f"no such room name: {room!r} (letters, digits, '-' and '_')")
        # The URL may carry a token (?jwt=): no Referer takes it anywhere.
        headers = {"Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"}
        return web.FileResponse(index, headers=headers)

    app = web.Application()
    app.router.add_get("/config.json", config_json)
    app.router.add_get("/xmpp-websocket", websocket)
    add_client_files(app.router, web_dir)
    app.router.add_get("/", page)
    app.router.add_get("/{room}", page)
    return app
