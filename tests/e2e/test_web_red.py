"""RFC 2198 redundant Opus (RED) through the real `sluice serve` with headless Chromium: the focus offers red
(`enable-opus-red`, so the server's config.json asks clients for it), Ada and Grace take it (Ada from the
config, Grace from `?red=1`: red first in their answers, so Chrome sends RED), Linus opts out (`?red=0`: no
red in his answer). While Ada plays a steady tone, Grace gets Ada's audio as RED and Linus as
plain Opus (the bridge strips it to the primary for him); both decode it: packets keep coming, the level is
above silence, and little is concealed. The bridge drops no RED as malformed or undeliverable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_web_simulcast import jingle, join
from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.serve import ServeProcess, running_serve
from tests.helpers.webpage import WebServer, await_for

pytestmark = pytest.mark.e2e


_CASES = """
const done = arguments[arguments.length - 1];
import('/js/codecs.js').then((m) => done({
  options: arguments[0].map(([config, search]) => m.redOption(config, search)),
  on: m.audioPayloadTypes(arguments[1], true).map((p) => p.name),
  off: m.audioPayloadTypes(arguments[1], false).map((p) => p.name),
  none: m.audioPayloadTypes(arguments[1].slice(0, 1), false).map((p) => p.name),
}), (e) => done(String(e)));
"""


def test_red_is_asked_by_the_query_then_the_config_and_ordered_or_left_out(tmp_path: Path) -> None:
    """codecs.js alone: `?red=` wins over `audioQuality.enableOpusRed`; red goes first, or goes."""
    cases: list[tuple[dict[str, Any], str, bool]] = [
        ({}, "", False),
        ({}, "?red=1", True),
        ({}, "?red=true", True),
        ({}, "?red=0", False),
        ({"audioQuality": {"enableOpusRed": True}}, "", True),
        ({"audioQuality": {"enableOpusRed": True}}, "?red=0", False),
        ({"audioQuality": {"enableOpusRed": "yes"}}, "", False),
    ]
    offer = [{"id": 111, "name": "opus"}, {"id": 112, "name": "red"}, {"id": 126, "name": "telephone-event"}]
    with WebServer() as server:
        browser = ChromiumBrowser.start(tmp_path / "profile", server.url + "/")
        try:
            got = browser.driver.execute_async_script(_CASES, [[c, q] for c, q, _ in cases], offer)
        finally:
            browser.stop()
    assert isinstance(got, dict), got
    assert got["options"] == [want for _, _, want in cases]
    assert got["on"] == ["red", "opus", "telephone-event"]
    assert got["off"] == ["opus", "telephone-event"]
    assert got["none"] == ["opus"]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    async with running_serve(tmp_path, "[signaling.focus]\nenable-opus-red = true\n") as served:
        yield served


def audio_codecs(accept: Any) -> list[str]:
    (d,) = (
        c.description for c in accept.contents if c.description is not None and c.description.media == "audio"
    )
    return [str(pt.name).lower() for pt in d.payload_types]


async def test_red_reaches_red_receivers_as_sent_and_the_others_as_opus(
    serve: ServeProcess, tmp_path: Path
) -> None:
    pages: dict[str, ChromiumBrowser] = {}
    try:
        joined = await asyncio.gather(
            join(serve, tmp_path, "Ada"),
            join(serve, tmp_path, "Grace", "red=1"),
            join(serve, tmp_path, "Linus", "red=0"),
            return_exceptions=True,
        )
        nicks: dict[str, str] = {}
        for name, result in zip(("Ada", "Grace", "Linus"), joined, strict=True):
            if not isinstance(result, BaseException):
                pages[name], nicks[name] = result
        for result in joined:
            if isinstance(result, BaseException):
                raise result

        # The answers: red first for those who opted in, none for Linus.
        assert audio_codecs(await jingle(pages["Ada"], "out", "session-accept"))[0] == "red"
        assert "red" not in audio_codecs(await jingle(pages["Linus"], "out", "session-accept"))

        await pages["Ada"].acall("tone", True)
        ada = nicks["Ada"]

        def hears_ada(s: dict[str, Any]) -> bool:
            return bool(s.get(ada, {}).get("audioPacketsReceived", 0) > 150 and s[ada]["audioLevel"] > 0.01)

        grace = (await await_for(pages["Grace"], "Grace hearing Ada", hears_ada, "getStats", 20))[ada]
        linus = (await await_for(pages["Linus"], "Linus hearing Ada", hears_ada, "getStats", 20))[ada]
        for who, stats in (("Grace", grace), ("Linus", linus)):
            # Decoded, not made up: concealment stays a small part of what was played.
            assert stats["concealedSamples"] < 0.2 * stats["totalSamplesReceived"], (who, stats)
        # Chrome's stats name Opus for RED too (the codec inside); the payload tells them apart: Grace's
        # packets carry the redundant copies of earlier frames besides the frame, Linus's the frame alone.
        # Measured over two seconds of the tone only: the counts since joining hold silence (tiny DTX
        # frames, with or without copies), which made the ratio swing from run to run.
        await asyncio.sleep(2.0)
        per_packet: dict[str, float] = {}
        for who, stats in (("Grace", grace), ("Linus", linus)):
            now = (await pages[who].acall("getStats"))[ada]
            packets = now["audioPacketsReceived"] - stats["audioPacketsReceived"]
            assert packets > 50, (who, stats, now)
            per_packet[who] = (now["audioBytesReceived"] - stats["audioBytesReceived"]) / packets
        print(f"audio bytes per packet over the tone: {per_packet}")
        assert per_packet["Grace"] > 1.6 * per_packet["Linus"], (per_packet, grace, linus)

        metrics = await serve.metrics()
        for reason in ("red_malformed", "not_negotiated"):
            assert metrics.get(f'sluice_packets_dropped_total{{reason="{reason}"}}', 0.0) == 0.0, reason
    finally:
        for name, page in pages.items():
            with contextlib.suppress(Exception):
                page.save_console_log(tmp_path / f"{name}-console.log")
            await asyncio.to_thread(page.stop)
