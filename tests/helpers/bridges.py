"""`sluice bridge` subprocesses in a Prosody brewery, each with its private HTTP API on a known port, and the
`sluice focus` subprocess that drives them."""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.helpers.jicofo import bridge_toml, start_sluice
from tests.helpers.prosody import BREWERY_JID, DOMAIN, Prosody, free_tcp_port


@dataclass
class BridgeProcess:
    nick: str
    http_port: int
    proc: asyncio.subprocess.Process

    @property
    def jid(self) -> str:
        return f"{BREWERY_JID.lower()}/{self.nick}"

    async def endpoints(self, meeting_id: str) -> set[str]:
        """The endpoint ids the bridge hosts for `meeting_id` (its private HTTP API)."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.http_port}/colibri/v2/conferences/{meeting_id}") as r,
        ):
            if r.status == 404:
                return set()
            body = await r.json()
        return {e["id"] for e in body.get("endpoints", [])}

    async def stop(self) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                os.kill(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()


async def start_bridge(
    prosody: Prosody, tmp_path: Path, nick: str, load_threshold: int = 100
) -> BridgeProcess:
    """`sluice bridge` in the brewery; a low packet-rate threshold so a running call shows as stress."""
    http_port = free_tcp_port()
    config = tmp_path / f"{nick}.toml"
    config.write_text(
        bridge_toml(prosody, nickname=nick).replace(
            '[videobridge.http-servers.private]\nhost = "127.0.0.1"\nport = 0',
            f'[videobridge.http-servers.private]\nhost = "127.0.0.1"\nport = {http_port}',
        )
        + "\n[videobridge.load-management.load-measurements.packet-rate]\n"
        + f"load-threshold = {load_threshold}\n"
    )
    proc = await start_sluice("bridge", "--config", str(config))
    return BridgeProcess(nick, http_port, proc)


async def start_focus(
    prosody: Prosody,
    tmp_path: Path,
    stack: AsyncExitStack,
    *,
    metrics_port: int | None = None,
    metrics_token: str | None = None,
) -> asyncio.subprocess.Process:
    """`sluice focus` logged in to `prosody` as the focus account; stopped (and its log saved as focus.log)
    when `stack` closes. With `metrics_port` it serves its /metrics there (wanting `metrics_token`)."""
    metrics = ("--metrics-port", str(metrics_port)) if metrics_port is not None else ()
    env = {"SLUICE_FOCUS_PASSWORD": prosody.focus_password}
    if metrics_token is not None:
        env["SLUICE_FOCUS_METRICS_TOKEN"] = metrics_token
    focus = await start_sluice(
        "focus", "--xmpp-port", str(prosody.c2s_port), "--domain", DOMAIN, "--no-tls", *metrics, env=env
    )

    async def stop() -> None:
        if focus.returncode is None:
            focus.terminate()
            await focus.wait()
        assert focus.stdout is not None
        (tmp_path / "focus.log").write_bytes(await focus.stdout.read())

    stack.push_async_callback(stop)
    return focus
