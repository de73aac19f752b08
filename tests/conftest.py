"""Shared fixtures: the bridge on an ephemeral loopback port, aiortc peers, headless Chromium, artifacts.

Every fixture that starts something stops it in its teardown, which pytest runs even when the test fails;
external processes (chromedriver, Chromium) are stopped by PID.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aioice.ice
import pytest

from bridge import Bridge, BridgeConfig, _native
from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.netns import Netlab
from tests.helpers.peers import AiortcPeer, PeerFactory

REPO_ROOT = Path(__file__).resolve().parent.parent
STATIC_DIR = Path(__file__).resolve().parent / "e2e" / "static"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: uses the real native core and real peers")


@pytest.fixture(scope="session")
def artifact_dir() -> Path:
    """`test-artifacts/` at the repository root (screenshots, dumps); created on demand."""
    path = REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice leaves 127.0.0.1 out when gathering; loopback tests need exactly that address."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def _require_native_core() -> None:
    missing = [name for name in ("NativeBridge",) if not hasattr(_native, name)]
    if missing:
        pytest.fail(
            f"bridge._native lacks {', '.join(missing)}: the native core is not built yet "
            f"(exports {sorted(n for n in dir(_native) if not n.startswith('_'))}); run scripts/bootstrap.sh",
            pytrace=False,
        )


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    """A started bridge bound to 127.0.0.1 on an ephemeral UDP port; stopped after the test."""
    _require_native_core()
    async with Bridge(BridgeConfig(udp_port=0, bind_addresses=["127.0.0.1"])) as b:
        yield b


@pytest.fixture
async def aiortc_peers(loopback_ice: None) -> AsyncIterator[PeerFactory]:
    """Factory for aiortc peers (`make(name, cls=AiortcPeer)`); every peer is closed at teardown."""
    created: list[AiortcPeer] = []

    def make(
        name: str, cls: type[AiortcPeer] = AiortcPeer, *, send_audio: bool = True, send_video: bool = True
    ) -> AiortcPeer:
        peer = cls(name, send_audio=send_audio, send_video=send_video)
        created.append(peer)
        return peer

    yield make
    for peer in created:
        await peer.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def netlab(tmp_path: Path) -> Iterator[Netlab]:
    """Network namespaces, links and impairment relays for one test (tests/helpers/netns.py); all
    removed at teardown, relays stopped by PID."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    lab = Netlab(tmp_path / "netlab")
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def page_server() -> Iterator[str]:
    """tests/e2e/static over http://127.0.0.1:<port>/ (a secure context for getUserMedia)."""
    handler = functools.partial(_QuietHandler, directory=str(STATIC_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="page-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def chromium(tmp_path: Path, page_server: str) -> Iterator[ChromiumBrowser]:
    """Headless Debian Chromium via Selenium and /usr/bin/chromedriver, on the peer page; stopped by PID."""
    browser = ChromiumBrowser.start(tmp_path / "chromium-profile", page_server + "/peer.html")
    try:
        yield browser
    finally:
        with contextlib.suppress(Exception):
            browser.save_console_log(tmp_path / "console.log")
        browser.stop()
