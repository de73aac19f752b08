"""signaling/web.py serves what the page loads and nothing else, over a real aiohttp server.

Against the real signaling/webclient/ (with its npm-installed node_modules): the page, its css/js and the one
strophe.js build answer; package metadata, other builds, listings and traversal are 404. Against a copy with
a dotfile, a symlink out of the tree and a subdirectory: none of them is served.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from signaling.web import STROPHE, WEB_DIR, create_web_app

pytestmark = pytest.mark.integration


async def no_websocket(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()  # not under test here: tests/e2e/test_serve.py drives the real one


async def client_for(web_dir: Path) -> TestClient[Any, Any]:
    return TestClient(TestServer(create_web_app("meet.test", no_websocket, web_dir), host="127.0.0.1"))


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    async with await client_for(WEB_DIR) as c:
        yield c


def test_the_page_loads_exactly_one_node_modules_file_and_no_source_map() -> None:
    """If the client starts loading another npm file, STROPHE (and this test) must follow."""
    sources = [WEB_DIR / "index.html", *sorted((WEB_DIR / "js").glob("*.js"))]
    named = {m for path in sources for m in re.findall(r"/node_modules/([^'\"\s)]+)", path.read_text())}
    assert named == {STROPHE.removeprefix("node_modules/")}
    assert "sourceMappingURL" not in (WEB_DIR / STROPHE).read_text()


async def test_what_the_page_loads_is_served(client: TestClient[Any, Any]) -> None:
    for path, content_type in (
        ("/", "text/html"),
        ("/standup", "text/html"),
        ("/config.json", "application/json"),
        ("/css/app.css", "text/css"),
        ("/js/app.js", "text/javascript"),
        ("/js/xmpp.js", "text/javascript"),
        (f"/{STROPHE}", "text/javascript"),
    ):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.content_type in (content_type, "application/javascript"), (path, resp.content_type)
    resp = await client.head("/js/app.js")
    assert resp.status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/node_modules/strophe.js/package.json",
        "/node_modules/abab/package.json",
        "/node_modules/.package-lock.json",
        "/node_modules/",
        "/node_modules/strophe.js/",
        "/node_modules/strophe.js/dist/",
        "/node_modules/strophe.js/dist/strophe.umd.js",
        "/node_modules/strophe.js/dist/strophe.esm.js",
        "/node_modules/strophe.js/dist/strophe.umd.min.js.map",
        "/node_modules/strophe.js/src/core.js",
        "/node_modules/strophe.js/dist/../package.json",
        "/node_modules/strophe.js/dist/%2e%2e/package.json",
        "/package.json",
        "/package-lock.json",
        "/index.html/",
        "/js/",
        "/css/",
        "/js/../package.json",
        "/js/%2e%2e/package.json",
        "/js/..%2fpackage.json",
        "/js/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/css/..%2f..%2fpyproject.toml",
    ],
)
async def test_nothing_else_is_served(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404, (path, resp.status, (await resp.read())[:200])


async def test_dotfiles_symlinks_and_subdirectories_are_not_served(tmp_path: Path) -> None:
    web_dir = tmp_path / "web"
    shutil.copytree(WEB_DIR, web_dir, ignore=shutil.ignore_patterns("node_modules"))
    (web_dir / STROPHE).parent.mkdir(parents=True)
    shutil.copy(WEB_DIR / STROPHE, web_dir / STROPHE)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    (web_dir / "js" / ".env").write_text("TOKEN=x")
    (web_dir / "js" / "leak.js").symlink_to(secret)
    (web_dir / "js" / "sub").mkdir()
    (web_dir / "js" / "sub" / "x.js").write_text("export {};")
    (web_dir / "js" / "extra.js").write_text("export const extra = 1;")
    async with await client_for(web_dir) as c:
        for path in ("/js/.env", "/js/leak.js", "/js/sub", "/js/sub/", "/js/sub/x.js", "/js/%2eenv"):
            resp = await c.get(path)
            assert resp.status == 404, path
        # A new client file in js/ is served without a code change.
        resp = await c.get("/js/extra.js")
        assert resp.status == 200 and "extra" in await resp.text()


async def test_config_names_the_login_host_only_on_a_secure_domain(client: TestClient[Any, Any]) -> None:
    config = await (await client.get("/config.json")).json()
    assert "auth" not in config["hosts"]
    assert "audioQuality" not in config, "redundant Opus only where the focus offers it"
    assert "e2ee" not in config, "end-to-end encryption only where the server offers it"
    # The page's URL may carry a token: it sends no Referer anywhere.
    page = await client.get("/standup?jwt=x.y.z")
    assert page.headers["Referrer-Policy"] == "no-referrer"
    app = create_web_app("meet.test", no_websocket, WEB_DIR, login=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as secure:
        hosts = (await (await secure.get("/config.json")).json())["hosts"]
        assert hosts == {
            "domain": "meet.test",
            "muc": "conference.meet.test",
            "focus": "focus.meet.test",
            "auth": "auth.meet.test",
        }


async def test_config_asks_for_redundant_opus_where_the_focus_offers_it() -> None:
    app = create_web_app("meet.test", no_websocket, WEB_DIR, opus_red=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as red:
        config = await (await red.get("/config.json")).json()
    assert config["audioQuality"] == {"enableOpusRed": True}


async def test_config_offers_end_to_end_encryption_only_where_the_server_does() -> None:
    app = create_web_app("meet.test", no_websocket, WEB_DIR, e2ee=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as offered:
        config = await (await offered.get("/config.json")).json()
    assert config["e2ee"] == {"enabled": True}
