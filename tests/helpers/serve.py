"""`sluice serve` as a subprocess (the real command), on free loopback ports, with its private API's views.

`running_serve(directory, settings)` starts it with a settings file (the bridge's media on loopback and its
private API on a known port are written first, `settings` is appended), waits for the URL it prints, keeps
reading its output, and stops it by PID (SIGTERM, then SIGKILL) at the end, saving the log as serve.log.
It runs this checkout's `sluice` unless given another `command` (tests/integration/test_wheel.py: the
installed one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.jicofo import REPO, SLUICE, start_sluice
from tests.helpers.netns import Netns, TcpForwarder
from tests.helpers.prosody import free_tcp_port


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProcess:
    proc: asyncio.subprocess.Process
    #: The web client's URL, without a trailing slash.
    url: str
    #: Where the embedded XMPP server takes c2s (tests/helpers/jingle_peer.py logs in here).
    c2s_port: int
    #: The bridge's private HTTP API.
    private: str
    #: The bridge's media address.
    media: tuple[str, int]
    output: list[str] = field(default_factory=list)
    #: The private API's bearer token, when the settings set one (`running_serve(private_token=...)`).
    token: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        """The headers the private API needs."""
        return {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}

    @property
    def web(self) -> str:
        """host:port of the web server (the XMPP WebSocket is ws://<web>/xmpp-websocket)."""
        return self.url.removeprefix("http://")

    def endpoint_ids(self) -> set[str]:
        """Every endpoint the bridge hosts now (blocking; for browser tests that poll)."""
        request = urllib.request.Request(f"{self.private}/colibri/v2/conferences", headers=self.auth)
        with urllib.request.urlopen(request, timeout=5) as resp:
            body = resp.read()
        return {ep["id"] for conf in _json(body)["conferences"] for ep in conf["endpoints"]}

    async def conferences(self) -> list[dict[str, object]]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.private}/colibri/v2/conferences", headers=self.auth) as resp,
        ):
            body = await resp.json()
        conferences: list[dict[str, object]] = body["conferences"]
        return conferences

    async def endpoints(self) -> dict[str, set[str]]:
        """meeting-id -> endpoint ids."""
        return {
            str(c["meeting-id"]): {e["id"] for e in c["endpoints"]}  # type: ignore[attr-defined]
            for c in await self.conferences()
        }

    async def metrics(self) -> dict[str, float]:
        """Every sample of the private /metrics as `name{label="value",...}` -> value."""
        return await scrape(f"{self.private}/metrics", self.auth)

    async def debug_json(self, path: str) -> dict[str, Any]:
        """A JSON view of the private API (`path` from the root, e.g. /debug/conferences/<id>/bandwidth)."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.private}{path}", headers=self.auth) as resp,
        ):
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
        return body

    def rss(self) -> int:
        """The process's resident memory in bytes (/proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


async def scrape(url: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    """Every sample of a Prometheus endpoint, read with prometheus-client's text parser, as
    `name{label="value",...}` -> value (labels sorted)."""
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as resp:
        resp.raise_for_status()
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def _json(body: bytes) -> dict[str, list[dict[str, list[dict[str, str]]]]]:
    value: dict[str, list[dict[str, list[dict[str, str]]]]] = json.loads(body)
    return value


@contextlib.asynccontextmanager
async def running_serve(
    directory: Path,
    settings: str = "",
    *args: str,
    domain: str = "meet.sluice",
    command: Sequence[str] = SLUICE,
    cwd: Path = REPO,
    netns: Netns | None = None,
    host: str = "127.0.0.1",
    private_token: str | None = None,
    media_host: str | None = None,
    http_port: int = 0,
) -> AsyncIterator[ServeProcess]:
    """With `netns`, the process runs in that network namespace (tests/helpers/netns.py) with its web port
    and media on `host` (an address of the namespace); its private API, on the namespace's loopback, is
    reached through a `TcpForwarder` (`ServeProcess.private` names the forwarder). With `private_token` the
    private API wants that bearer token, which `ServeProcess`'s views send. `media_host` puts the media on
    another address than the web port; `http_port` fixes the web port (0: any free one)."""
    media_host = media_host or host
    private, xmpp, udp = free_tcp_port(), free_tcp_port(), free_udp_port()
    config = directory / "serve.toml"
    config.write_text(
        f'[videobridge.ice.udp]\nport = {udp}\nbind-addresses = ["{media_host}"]\n'
        f'[videobridge.http-servers.private]\nhost = "127.0.0.1"\nport = {private}\n'
        + (f'token = "{private_token}"\n' if private_token is not None else "")
        + settings
    )
    if netns is not None:
        command = netns.exec_args(*command)
    proc = await start_sluice(
        "serve", "--config", str(config), "--domain", domain, "--host", host,
        "--http-port", str(http_port), "--xmpp-port", str(xmpp), *args, command=command, cwd=cwd,
    )  # fmt: skip
    forwarder = TcpForwarder(netns, private).start() if netns is not None else None
    assert proc.stdout is not None
    output: list[str] = []
    try:
        url = None
        async with asyncio.timeout(30):
            while url is None:
                line = (await proc.stdout.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("sluice serve exited:\n" + "".join(output))
                output.append(line)
                if m := re.search(r"open (http://\S+)", line):
                    url = m.group(1).rstrip("/")

        async def drain() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                output.append(line.decode(errors="replace"))

        pump = asyncio.create_task(drain())
        private_url = forwarder.url if forwarder is not None else f"http://127.0.0.1:{private}"
        yield ServeProcess(proc, url, xmpp, private_url, (media_host, udp), output, private_token)
        pump.cancel()
    finally:
        if forwarder is not None:
            forwarder.stop()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        (directory / "serve.log").write_text("".join(output))
