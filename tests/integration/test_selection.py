"""Selective forwarding end to end on a real BridgeApp: emulated endpoints (real ICE, DTLS-SRTP, VP8
simulcast) allocated through the Colibri2 JSON API, receivers asking through the bridge channel (colibri
websockets), the Allocator choosing, the packet path projecting one layer onto each Source's primary SSRC.

- A receiver without a bridge channel gets jvb's default, 180p: the lowest layer.
- A receiver asking 720p gets the top layer, switched at a keyframe, gapless; lastN 0 stops its video.
- ForwardedSources follows, and the flight recorder says why per source.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bench import _native
from bench.run import BridgeTarget, allocate_bridge
from bench.scenario import parse_scenario
from bridge.app import BridgeApp
from bridge.channel import colibri_ws_url
from bridge.settings import parse_settings

pytestmark = pytest.mark.integration

TOML = """
[videobridge.ice.udp]
port = 0
bind-addresses = ["127.0.0.1"]

[videobridge.http-servers.private]
host = "127.0.0.1"
port = 0

[videobridge.http-servers.public]
host = "127.0.0.1"
port = 0

[videobridge.websockets]
enabled = true

[videobridge.cc]
allocation-interval = "300ms"
"""

SENDER, TALL, DEFAULT = 0, 1, 2


@dataclass
class Call:
    app: BridgeApp
    lg: _native.LoadGen
    http: aiohttp.ClientSession
    base: str
    meeting: str

    def video_stream(self, receiver: int) -> dict[str, Any] | None:
        """What `receiver` gets of the sender's video (its one received video stream)."""
        streams = self.lg.stats(detail=True)["receive_streams"]
        mine = [s for s in streams if s["receiver"] == receiver and s["kind"] == "video"]
        assert len(mine) <= 1, mine
        return dict(mine[0]) if mine else None

    async def until(self, what: str, predicate: Callable[[], bool], within: float = 5.0) -> float:
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > within:
                raise AssertionError(f"{what}: not within {within} s")
            await asyncio.sleep(0.1)
        return time.monotonic() - start


@contextlib.asynccontextmanager
async def open_call(count: int, layers: int, *, all_send: bool) -> AsyncIterator[Call]:
    """A BridgeApp and `count` emulated endpoints in one conference, allocated as the bench does: endpoint
    0 sends audio and `layers` simulcast video layers (every endpoint does when `all_send`), the others
    receive."""
    app = BridgeApp(parse_settings(TOML))
    await app.start()
    senders = count if all_send else 1
    scenario = parse_scenario(
        f"[load]\nsenders = {senders}\nreceivers = {count - senders}\n"
        f"[media]\nvideo-kbps = 900\nsimulcast = {'true' if layers > 1 else 'false'}\n"
    )
    # Feedback as the allocation announces it (transport-cc, NACK, RTX), like a browser.
    lg = _native.LoadGen(video_bitrate_bps=900_000, fps=30, feedback=scenario.media.feedback)
    assert scenario.media.video_ssrcs == layers
    try:
        assert app.http_port is not None
        base = f"http://127.0.0.1:{app.http_port}"
        async with aiohttp.ClientSession() as http:
            (meeting,), _ = await allocate_bridge(BridgeTarget(base, http, None), lg, scenario, None)
            assert await asyncio.to_thread(lg.wait_connected, 20.0), lg.failed()
            lg.start()
            yield Call(app, lg, http, base, meeting)
    finally:
        lg.shutdown()
        await app.stop()


@pytest.fixture
async def call() -> AsyncIterator[Call]:
    async with open_call(3, 3, all_send=False) as c:
        yield c


async def channel(call: Call, index: int) -> aiohttp.ClientWebSocketResponse:
    conference = call.app.bridge.conference_by_meeting(call.meeting)
    assert conference is not None
    ep = conference.endpoints[f"lg{index}"]
    (base,) = call.app.colibri2.web_socket_bases
    return await call.http.ws_connect(colibri_ws_url(base, conference.id, ep.id, ep.pwd))


async def sender_constraints(ws: aiohttp.ClientWebSocketResponse, within: float = 5.0) -> dict[str, Any]:
    """The next SenderSourceConstraints the bridge sends on `ws`."""
    async with asyncio.timeout(within):
        while True:
            msg = json.loads((await ws.receive()).data)
            if msg.get("colibriClass") == "SenderSourceConstraints":
                return dict(msg)


async def forwarded_sources(ws: aiohttp.ClientWebSocketResponse, within: float = 5.0) -> list[str]:
    """The next ForwardedSources the bridge sends on `ws`."""
    async with asyncio.timeout(within):
        while True:
            msg = json.loads((await ws.receive()).data)
            if msg.get("colibriClass") == "ForwardedSources":
                return list(msg["forwardedSources"])


async def test_receivers_get_the_layer_their_constraints_ask_for_and_last_n_stops_video(call: Call) -> None:
    sender = await channel(call, SENDER)
    # Nobody has asked more than the default yet: the sender is told 180 is the most anyone wants.
    assert await sender_constraints(sender) == {
        "colibriClass": "SenderSourceConstraints",
        "sourceName": "lg0-v0",
        "maxHeight": 180,
    }
    tall = await channel(call, TALL)
    assert await forwarded_sources(tall) == ["lg0-v0"]

    # No channel and no constraints: 180p, the lowest layer, for both receivers to begin with.
    await call.until(
        "both on layer 0",
        lambda: all(
            (s := call.video_stream(r)) and s["frames"] >= 15 and s["layer"] == 0 for r in (TALL, DEFAULT)
        ),
    )

    # 720p asked: the top layer within 3 s (the allocation, a PLI, the sender's keyframe), switched at it.
    await tall.send_str(
        json.dumps({"colibriClass": "ReceiverVideoConstraints", "defaultConstraints": {"maxHeight": 720}})
    )
    assert (await sender_constraints(sender))["maxHeight"] == 720, "the sender is told someone wants 720p"
    took = await call.until(
        "720p reaches the tall receiver",
        lambda: (s := call.video_stream(TALL)) is not None and s["layer"] == 2,
        within=3.0,
    )
    await asyncio.sleep(1.0)
    tall_stream, other = call.video_stream(TALL), call.video_stream(DEFAULT)
    assert tall_stream is not None and other is not None
    assert tall_stream["layer"] == 2 and other["layer"] == 0, (tall_stream, other)
    # One stream on the primary SSRC, gapless across the switch, which came at a keyframe; no freeze.
    assert tall_stream["ssrc"] == other["ssrc"] == _native.LoadGen.default_sources(SENDER, 3)[1][0]
    assert tall_stream["seq_gaps"] == 0 and other["seq_gaps"] == 0, (tall_stream, other)
    assert tall_stream["layer_switches"] == 1 and tall_stream["switches_off_keyframe"] == 0, tall_stream
    assert tall_stream["freezes"] == 0 and other["layer_switches"] == 0, (tall_stream, other)
    assert took < 3.0

    # The flight recorder: the tall receiver's last decision forwards the top layer ("forwarded").
    async with call.http.get(f"{call.base}/debug/conferences/{call.meeting}/allocation") as resp:
        assert resp.status == 200
        recorder = await resp.json()
    (last,) = recorder["receivers"]["lg1"][-1:]
    assert [(s["source"], s["reason"]) for s in last["sources"]] == [("lg0-v0", "forwarded")], last

    # The bandwidth view: what each endpoint is allocated now, and what its transport was sent.
    async def bandwidth() -> dict[str, Any]:
        async with call.http.get(f"{call.base}/debug/conferences/{call.meeting}/bandwidth") as resp:
            assert resp.status == 200
            view: dict[str, Any] = (await resp.json())["endpoints"]
            return view

    first = await bandwidth()
    await asyncio.sleep(0.5)
    view = await bandwidth()
    tall_view = view["lg1"]
    (source,) = tall_view["sources"]
    assert (source["source"], source["spatial"], source["height"]) == ("lg0-v0", 2, 720), tall_view
    assert tall_view["allocated_bps"] == source["bitrate_bps"] > 0, tall_view
    assert tall_view["bandwidth_bps"] > tall_view["allocated_bps"] and tall_view["trust_bwe"] is True
    # The emulated endpoints send transport-cc feedback: with trust-bwe (the default) the receiver's estimate,
    # less the audio it is sent, is its budget.
    assert tall_view["estimate_bps"] is not None, tall_view
    assert tall_view["bandwidth_bps"] <= tall_view["estimate_bps"], tall_view
    assert tall_view["counters"]["bytes_out"] > first["lg1"]["counters"]["bytes_out"] > 0, (first, view)
    assert view["lg0"]["sources"] == [], view["lg0"]  # the sender receives no other video
    async with call.http.get(f"{call.base}/debug/conferences/nope/bandwidth") as resp:
        assert resp.status == 404

    # lastN 0: no video at all, and ForwardedSources says so.
    await tall.send_str(json.dumps({"colibriClass": "ReceiverVideoConstraints", "lastN": 0}))
    assert await forwarded_sources(tall) == []
    await asyncio.sleep(0.5)
    stopped = call.video_stream(TALL)
    await asyncio.sleep(1.0)
    assert call.video_stream(TALL) == stopped, "video still reaches a receiver with lastN 0"
    other_later = call.video_stream(DEFAULT)
    assert other_later is not None and other_later["packets"] > other["packets"], "the other receiver stopped"
    await tall.close()
    await sender.close()


async def frame_rate(call: Call, receiver: int, over: float = 2.0) -> float:
    """Frames a second `receiver` gets of the sender's video, measured over `over` seconds."""
    before = call.video_stream(receiver)
    await asyncio.sleep(over)
    after = call.video_stream(receiver)
    assert before is not None and after is not None
    return float(after["frames"] - before["frames"]) / over


async def test_a_frame_rate_limit_leaves_out_temporal_layers_without_gaps(call: Call) -> None:
    """maxFrameRate 15 at 180p: the bridge forwards temporal layers 0 and 1 of the lowest layer only, so
    the receiver gets half the frames, with sequence numbers still gapless; lifted, the full rate comes
    back (at a switching-up point or the keyframe asked after a second without one)."""
    slow = await channel(call, TALL)
    await call.until("both receivers get video", lambda: all(call.video_stream(r) for r in (TALL, DEFAULT)))
    await slow.send_str(
        json.dumps(
            {
                "colibriClass": "ReceiverVideoConstraints",
                "defaultConstraints": {"maxHeight": 180, "maxFrameRate": 15},
            }
        )
    )
    await asyncio.sleep(1.0)
    # Both over the same window and judged against each other: on a loaded machine the sender itself
    # makes fewer than its nominal 30 frames a second (CI measured 26).
    slow_rate, full_rate = await asyncio.gather(frame_rate(call, TALL), frame_rate(call, DEFAULT))
    if full_rate < 22:
        async with call.http.get(f"{call.base}/debug/conferences/{call.meeting}/allocation") as resp:
            for e in (await resp.json())["receivers"][f"lg{DEFAULT}"][-6:]:
                print(e["time"], [(s["layer"], s["reason"]) for s in e["sources"]])
    assert 22 <= full_rate <= 34 and 0.4 <= slow_rate / full_rate <= 0.6, (slow_rate, full_rate)
    stream = call.video_stream(TALL)
    assert stream is not None and stream["layer"] == 0
    assert stream["seq_gaps"] == 0 and stream["freezes"] == 0, stream

    # The recorder shows the choice: 180p, temporal layer 1 (of 0-2).
    async with call.http.get(f"{call.base}/debug/conferences/{call.meeting}/allocation") as resp:
        (last,) = (await resp.json())["receivers"][f"lg{TALL}"][-1:]
    (chosen,) = [s["layer"] for s in last["sources"]]
    assert (chosen["spatial"], chosen["temporal"]) == (0, 1), last

    await slow.send_str(
        json.dumps({"colibriClass": "ReceiverVideoConstraints", "defaultConstraints": {"maxHeight": 180}})
    )
    await asyncio.sleep(2.5)
    lifted, full_rate = await asyncio.gather(frame_rate(call, TALL), frame_rate(call, DEFAULT))
    assert full_rate >= 22 and abs(lifted - full_rate) <= 2, (lifted, full_rate)
    stream = call.video_stream(TALL)
    assert stream is not None and stream["seq_gaps"] == 0, stream
    await slow.close()


def video_packets(call: Call, receiver: int) -> dict[int, int]:
    """Video packets `receiver` got so far, per sender."""
    streams = call.lg.stats(detail=True)["receive_streams"]
    return {s["sender"]: s["packets"] for s in streams if s["receiver"] == receiver and s["kind"] == "video"}


async def test_last_n_1_forwards_the_dominant_speakers_video_and_follows_the_next_speaker() -> None:
    """Four endpoints sending audio (with RFC 6464 levels) and video; endpoint 3 asks lastN 1."""
    async with open_call(4, 1, all_send=True) as call:
        quiet, loud = 110, 30  # -dBov
        for i in range(4):
            call.lg.set_audio_level(i, quiet)
        call.lg.set_audio_level(0, loud)
        ws = await channel(call, 3)
        await ws.send_str(json.dumps({"colibriClass": "ReceiverVideoConstraints", "lastN": 1}))

        async def speaker_event(within: float) -> dict[str, Any]:
            async with asyncio.timeout(within):
                while True:
                    msg = json.loads((await ws.receive()).data)
                    if msg.get("colibriClass") == "DominantSpeakerEndpointChangeEvent":
                        return dict(msg)

        first = await speaker_event(3.0)
        assert first["dominantSpeakerEndpoint"] == "lg0" and first["silence"] is False, first

        async def only_from(sender: int) -> None:
            before = video_packets(call, 3)
            await asyncio.sleep(1.0)
            after = video_packets(call, 3)
            grew = {s for s, n in after.items() if n > before.get(s, 0)}
            assert grew == {sender}, (before, after)

        await call.until("lg0's video only", lambda: video_packets(call, 3).get(0, 0) > 30)
        await only_from(0)

        # lg0 falls silent and lg2 speaks: within 2 s the dominant speaker, and the one video, are lg2's.
        call.lg.set_audio_level(0, quiet)
        call.lg.set_audio_level(2, loud)
        started = time.monotonic()
        change = await speaker_event(2.0)
        assert change["dominantSpeakerEndpoint"] == "lg2" and change["previousSpeakers"] == ["lg0"], change
        base = video_packets(call, 3).get(2, 0)
        await call.until("lg2's video", lambda: video_packets(call, 3).get(2, 0) > base + 10, within=2.0)
        assert time.monotonic() - started < 2.0 + 0.5
        await only_from(2)

        async with call.http.get(
            f"{call.base}/debug/conferences/{call.meeting}/dominant-speaker-identification"
        ) as r:
            view = await r.json()
        assert view["dominantSpeaker"] == "lg2" and view["recentSpeakers"] == ["lg2", "lg0"], view
        await ws.close()
