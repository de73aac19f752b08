"""webclient/js/bridge-channel.js in headless Chromium against a scripted colibri-ws server.

What the real bridge cannot be made to do on cue is scripted here (test_web_simulcast.py has the channel
against `sluice serve`): dropping the socket, refusing a reconnect, and frames that are not messages, next to
ServerHello, ForwardedSources and DominantSpeakerEndpointChangeEvent. Checked: ClientHello
on every open, ServerHello / ForwardedSources / dominant speaker taken in, bad frames counted and ignored,
the layout's constraints re-sent on reconnect, reconnects after 1 s doubling (2 s) and back to 1 s once a
socket opened, nothing after close(). SenderSourceConstraints: well-formed ones become "sender-constraints"
events, malformed ones are counted as errors and dropped; and conference.js's encodingsWanted, which maps
one to the encodings kept on (test_web_sender_constraints.py has the client acting on the real bridge's).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.webpage import WebServer, wait_for

pytestmark = pytest.mark.e2e

CONSTRAINTS = {
    "onStageSources": ["abcd1234-v0"],
    "selectedSources": [],
    "defaultConstraints": {"maxHeight": 180},
    "constraints": {"abcd1234-v0": {"maxHeight": 720}},
}


@dataclass
class Script:
    """The scripted bridge: what each connection attempt gets, and what it saw (on the server's thread)."""

    attempts: list[float] = field(default_factory=list)
    received: list[list[dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        with self.lock:
            self.attempts.append(time.monotonic())
            n = len(self.attempts)
            frames: list[dict[str, Any]] = []
            self.received.append(frames)
        if n == 2:
            # The second attempt is refused before the upgrade: the page must back off further.
            return web.Response(status=503, text="not now")
        ws = web.WebSocketResponse()
        await ws.prepare(request)

        async def expect(colibri_class: str) -> None:
            async with asyncio.timeout(5):
                while True:
                    msg = await ws.receive()
                    assert msg.type is WSMsgType.TEXT, msg
                    frames.append(json.loads(msg.data))
                    if frames[-1].get("colibriClass") == colibri_class:
                        return

        await expect("ClientHello")
        await ws.send_str('{"colibriClass":"ServerHello","version":"scripted"}')
        await expect("ReceiverVideoConstraints")
        if n == 1:
            await ws.send_str('{"colibriClass":"ForwardedSources","forwardedSources":["abcd1234-v0"]}')
            await ws.send_str(
                '{"colibriClass":"DominantSpeakerEndpointChangeEvent","dominantSpeakerEndpoint":"abcd1234",'
                '"previousSpeakers":["ef012345"],"silence":false}'
            )
            await ws.send_str("not json")
            await ws.send_str('{"colibriClass": 5}')
            await ws.send_str('{"colibriClass":"ConnectionStats","estimatedDownlinkBandwidth":1000000}')
        await asyncio.sleep(0.3)
        await ws.close(code=1001, message=b"scripted drop")
        return ws


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def page(script: Script, tmp_path: Path) -> Iterator[tuple[ChromiumBrowser, WebServer]]:
    with WebServer(routes=lambda r: r.add_get("/scripted-ws", script.handle)) as server:
        browser = ChromiumBrowser.start(tmp_path / "profile", server.url + "/__harness/channel")
        try:
            yield browser, server
        finally:
            browser.save_console_log(tmp_path / "console.log")
            browser.stop()


def test_messages_reconnect_backoff_and_close(
    page: tuple[ChromiumBrowser, WebServer], script: Script
) -> None:
    browser, server = page
    url = server.url.replace("http://", "ws://") + "/scripted-ws"
    assert browser.call("open", url) is True
    browser.call("setConstraints", CONSTRAINTS)

    # Attempt 1 (taken in, then dropped), 2 (refused) 1 s later, 3 (opens) 2 s after that, 4 (after the
    # third socket dropped) 1 s later again: the backoff starts over once a socket opened.
    snap = wait_for(
        browser, "four attempts", lambda s: len(s["reconnects"]) >= 3 and s["opens"] >= 2, "snapshot", 15
    )
    deadline = time.monotonic() + 5
    while len(script.attempts) < 4:
        assert time.monotonic() < deadline, script.attempts
        time.sleep(0.05)
    gaps = [b - a for a, b in itertools.pairwise(script.attempts)]
    # Each gap is the 0.3 s the script holds the socket (attempts 1 and 3) plus the backoff.
    assert 1.2 <= gaps[0] < 1.9, gaps
    assert 1.9 <= gaps[1] < 2.6, gaps
    assert 1.2 <= gaps[2] < 1.9, gaps
    assert snap["reconnects"][:3] == [1000, 2000, 1000], snap

    first, third = script.received[0], script.received[2]
    assert [f["colibriClass"] for f in first] == ["ClientHello", "ReceiverVideoConstraints"], first
    assert first[1] == {"colibriClass": "ReceiverVideoConstraints", **CONSTRAINTS}
    # The reopened socket says hello again and repeats the layout's constraints unasked.
    assert third == first, third

    snap = browser.call("snapshot")
    assert snap["serverHello"] >= 2 and snap["serverVersion"] == "scripted", snap
    assert snap["forwardedSources"] == ["abcd1234-v0"], snap
    assert snap["dominantSpeaker"] == "abcd1234" and snap["previousSpeakers"] == ["ef012345"], snap
    assert snap["received"]["ConnectionStats"] == 1 and snap["errors"] >= 2, snap
    events = browser.call("events")
    speaker = [e["detail"] for e in events if e["type"] == "dominant-speaker"]
    assert speaker == [{"id": "abcd1234", "previous": ["ef012345"], "silence": False}], events

    # Unchanged constraints are not sent again (once per open only); changed ones are.
    browser.call("setConstraints", CONSTRAINTS)
    snap = browser.call("snapshot")
    assert snap["sent"]["ReceiverVideoConstraints"] == snap["opens"], snap
    grid = {**CONSTRAINTS, "onStageSources": [], "constraints": {}}
    browser.call("setConstraints", grid)
    wait_for(
        browser,
        "grid sent",
        lambda s: s["constraintsSent"] == {"colibriClass": "ReceiverVideoConstraints", **grid},
        "snapshot",
        5,
    )

    # close() stops for good: no more attempts.
    browser.call("close")
    attempts = len(script.attempts)
    time.sleep(2.5)
    assert len(script.attempts) == attempts, script.attempts
    assert browser.call("snapshot")["closed"] is True


#: What the scripted bridge sends after ServerHello: (frame, taken). Taken ones become events, in order.
SENDER_CONSTRAINTS = [
    ('{"colibriClass":"SenderSourceConstraints","sourceName":"abcd1234-v0","maxHeight":360}', True),
    ('{"colibriClass":"SenderSourceConstraints","sourceName":"abcd1234-v0","maxHeight":"720"}', False),
    ('{"colibriClass":"SenderSourceConstraints","sourceName":"abcd1234-v0","maxHeight":-2}', False),
    ('{"colibriClass":"SenderSourceConstraints","sourceName":"abcd1234-v0","maxHeight":1e999}', False),
    ('{"colibriClass":"SenderSourceConstraints","sourceName":"abcd1234-v0"}', False),
    ('{"colibriClass":"SenderSourceConstraints","sourceName":5,"maxHeight":180}', False),
    ('{"colibriClass":"SenderSourceConstraints","sourceName":"","maxHeight":180}', False),
    (
        json.dumps({"colibriClass": "SenderSourceConstraints", "sourceName": "v" * 257, "maxHeight": 180}),
        False,
    ),
    ('{"colibriClass":"SenderSourceConstraints","sourceName":"ef012345-v0","maxHeight":-1}', True),
    ('{"colibriClass":"SenderSourceConstraints","sourceName":"abcd1234-v0","maxHeight":0}', True),
]


async def sender_constraints_bridge(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT and json.loads(msg.data).get("colibriClass") == "ClientHello":
            break
    await ws.send_str('{"colibriClass":"ServerHello"}')
    for frame, _taken in SENDER_CONSTRAINTS:
        await ws.send_str(frame)
    # The last frame: once it is taken in, so are all before it.
    await ws.send_str('{"colibriClass":"ForwardedSources","forwardedSources":["done"]}')
    async for _msg in ws:
        pass
    return ws


def test_sender_source_constraints_are_checked(tmp_path: Path) -> None:
    with WebServer(routes=lambda r: r.add_get("/ssc-ws", sender_constraints_bridge)) as server:
        browser = ChromiumBrowser.start(tmp_path / "profile", server.url + "/__harness/channel")
        try:
            assert browser.call("open", server.url.replace("http://", "ws://") + "/ssc-ws") is True
            snap = wait_for(
                browser, "all frames", lambda s: s["forwardedSources"] == ["done"], "snapshot", 10
            )
            events = [e["detail"] for e in browser.call("events") if e["type"] == "sender-constraints"]
            taken = [json.loads(f) for f, ok in SENDER_CONSTRAINTS if ok]
            assert events == [{"sourceName": t["sourceName"], "maxHeight": t["maxHeight"]} for t in taken]
            malformed = sum(not ok for _f, ok in SENDER_CONSTRAINTS)
            assert snap["errors"] == malformed, snap
            assert snap["received"]["SenderSourceConstraints"] == len(SENDER_CONSTRAINTS), snap
            # Not handed on as an unhandled message.
            assert not [e for e in browser.call("events") if e["type"] == "message"]
            browser.call("close")
        finally:
            browser.save_console_log(tmp_path / "console.log")
            browser.stop()


@pytest.mark.parametrize(
    ("max_height", "track_height", "scales", "wanted"),
    [
        # Our layers from a 720p camera: 180, 360, 720.
        (None, 720, [4, 2, 1], [True, True, True]),  # the bridge said nothing yet
        (-1, 720, [4, 2, 1], [True, True, True]),  # no limit
        (0, 720, [4, 2, 1], [False, False, False]),  # nobody wants it
        (2160, 720, [4, 2, 1], [True, True, True]),
        (720, 720, [4, 2, 1], [True, True, True]),
        (719, 720, [4, 2, 1], [True, True, False]),
        (360, 720, [4, 2, 1], [True, True, False]),
        (359, 720, [4, 2, 1], [True, False, False]),
        (180, 720, [4, 2, 1], [True, False, False]),
        (90, 720, [4, 2, 1], [True, False, False]),  # less than the smallest: the smallest stays on
        (540, 1080, [4, 2, 1], [True, True, False]),  # 270, 540, 1080
        (360, 720, [1, 2, 4], [False, True, True]),  # any order: the smallest is the one with most scaling
        (100, 720, [1, 2, 4], [False, False, True]),
        (180, 720, [1], [True]),  # no simulcast: on while anyone wants it
        (0, 720, [1], [False]),
        (180, 0, [4, 2, 1], [True, True, True]),  # the track's size is unknown: all on ...
        (0, 0, [4, 2, 1], [False, False, False]),  # ... unless nobody wants any
    ],
)
def test_encodings_wanted(
    channel_harness: ChromiumBrowser,
    max_height: int | None,
    track_height: int,
    scales: list[float],
    wanted: list[bool],
) -> None:
    assert channel_harness.call("encodingsWanted", max_height, track_height, scales) == wanted


@pytest.fixture(scope="module")
def channel_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromiumBrowser]:
    """One harness page for the pure-function cases."""
    tmp = tmp_path_factory.mktemp("encodings")
    with WebServer() as server:
        browser = ChromiumBrowser.start(tmp / "profile", server.url + "/__harness/channel")
        try:
            yield browser
        finally:
            browser.save_console_log(tmp / "console.log")
            browser.stop()
