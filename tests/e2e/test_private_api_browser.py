"""A web page in headless Chromium cannot drive the bridge's private HTTP API (bridge/http.py `_guard`).

The bridge is the real `sluice bridge` process with its private API on 127.0.0.1. The page is served from
another origin (the `page_server` fixture, another port) and does what any site open in a browser on the
bridge's host could: `fetch(..., {mode: 'no-cors'})` POSTs with a JSON text body (sent as text/plain, no
CORS preflight), HTML form POSTs (text/plain and form-encoded, the classic JSON-in-a-form trick), and a
CORS fetch with `application/json` (preflighted). Afterwards the bridge is still running, not draining,
hosts no conference, and counted each refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.jicofo import start_sluice

pytestmark = pytest.mark.e2e

CONFIG = """
[videobridge.ice.udp]
port = 0
bind-addresses = ["127.0.0.1"]

[videobridge.http-servers.private]
host = "127.0.0.1"
port = 0
"""

CONFERENCE = {
    "meeting-id": "from-a-web-page",
    "create": True,
    "endpoints": [
        {
            "id": "abcd1234",
            "create": True,
            "capabilities": ["source-names"],
            "transport": {"ice-controlling": True},
        }
    ],
}

# Runs in the page (another origin). Each entry resolves to what the page could observe.
ATTACK = """
const [api, conference, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const noCors = (path, body) => fetch(api + path, { method: 'POST', mode: 'no-cors', body })
  .then((r) => `no-cors ${path}: ${r.type}`, (e) => `no-cors ${path}: ${e}`);
const form = (path, enctype, fields) => new Promise((resolve) => {
  const sink = document.createElement('iframe');
  sink.name = `sink-${Math.random().toString(36).slice(2)}`;
  document.body.append(sink);  // about:blank has loaded by now; the next load is the form's answer
  const f = Object.assign(document.createElement('form'),
                          { method: 'POST', action: api + path, enctype, target: sink.name });
  for (const [name, value] of Object.entries(fields)) {
    f.append(Object.assign(document.createElement('input'), { type: 'hidden', name, value }));
  }
  document.body.append(f);
  sink.addEventListener('load', () => resolve(`form ${enctype} ${path}: loaded`), { once: true });
  setTimeout(() => resolve(`form ${enctype} ${path}: no answer`), 10000);
  f.submit();
});
// text/plain form: name + "=" + value is the body, so this posts {"graceful-shutdown": false, "x": "="}.
const jsonForm = (extra) => ({ [JSON.stringify(extra).slice(0, -1) + ', "x": "']: '"}' });
Promise.all([
  noCors('/colibri/shutdown', JSON.stringify({ 'graceful-shutdown': false })),
  noCors('/colibri/drain/enable', ''),
  noCors('/colibri/v2/conferences', JSON.stringify(conference)),
  fetch(api + '/colibri/drain/enable', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
  }).then((r) => `cors: status ${r.status}`, (e) => `cors: ${e}`),
  form('/colibri/shutdown', 'text/plain', jsonForm({ 'graceful-shutdown': false })),
  form('/colibri/drain/enable', 'application/x-www-form-urlencoded', { drain: 'true' }),
  form('/colibri/v2/conferences', 'text/plain', jsonForm(conference)),
]).then(done, (e) => done([`error: ${e}`]));
"""


async def _bridge_output(proc: asyncio.subprocess.Process, output: list[str]) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        output.append(line.decode(errors="replace"))


@pytest.fixture
async def private_api(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`sluice bridge` as a process; yields it and its private API's base URL."""
    config = tmp_path / "bridge.toml"
    config.write_text(CONFIG)
    proc = await start_sluice("bridge", "--config", str(config))
    assert proc.stdout is not None
    output: list[str] = []
    pump: asyncio.Task[None] | None = None
    try:
        port = None
        async with asyncio.timeout(20):
            while port is None:
                line = (await proc.stdout.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("sluice bridge exited:\n" + "".join(output))
                output.append(line)
                if m := re.search(r"private HTTP API on port (\d+)", line):
                    port = int(m.group(1))
        pump = asyncio.create_task(_bridge_output(proc, output))
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        (tmp_path / "bridge.log").write_text("".join(output))


async def test_a_cross_origin_page_cannot_shut_down_drain_or_allocate(
    private_api: tuple[asyncio.subprocess.Process, str], chromium: ChromiumBrowser, page_server: str
) -> None:
    proc, base = private_api
    assert not base.startswith(page_server), "the page must be on another origin"
    seen = await asyncio.to_thread(chromium.driver.execute_async_script, ATTACK, base, CONFERENCE)
    assert isinstance(seen, list) and len(seen) == 7, seen

    await asyncio.sleep(0.5)  # a forced shutdown would have ended the process by now
    assert proc.returncode is None, "the page shut the bridge down"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/about/health") as r:
            assert r.status == 200
        async with http.get(f"{base}/colibri/drain") as r:
            assert await r.json() == {"drain": False}
        async with http.get(f"{base}/colibri/v2/conferences") as r:
            assert await r.json() == {"conferences": []}
        async with http.get(f"{base}/colibri/stats") as r:
            stats = await r.json()
        assert (stats["graceful_shutdown"], stats["shutting_down"], stats["conferences"]) == (False, False, 0)
        async with http.get(f"{base}/metrics") as r:
            families = text_string_to_metric_families(await r.text())
    refused = {
        s.labels["reason"]: s.value
        for f in families
        if f.name == "sluice_private_http_refused"
        for s in f.samples
        if s.name.endswith("_total")
    }
    # The page learns nothing: opaque no-cors answers, a failed CORS fetch, forms loading an error page.
    assert all(s.endswith("opaque") for s in seen[:3]), seen
    assert "TypeError" in seen[3], seen
    assert all(s.endswith("loaded") for s in seen[4:]), seen
    # Six POSTs and the CORS preflight (OPTIONS, with Origin) were refused for their Origin.
    assert refused["cross_origin"] >= 7, refused
    assert stats["total_private_http_refused"] >= 7, stats

    # The same request from a local JSON client works: only the page was kept out.
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/colibri/v2/conferences", json=CONFERENCE) as r:
            assert r.status == 200, await r.text()
        async with http.get(f"{base}/colibri/v2/conferences") as r:
            listing = await r.json()
    assert [c["meeting-id"] for c in listing["conferences"]] == ["from-a-web-page"]
