"""bench._native.LoadGen against a real Bridge, allocated through the Colibri2 HTTP API (as `sluice bench`).

Two conferences of three emulated endpoints: ICE, DTLS-SRTP, audio and video for two seconds, then every
endpoint must have received every other member's streams, and the numbers must add up. The statistics
cross as dicts whose keys must be the ones bench/_native.pyi declares.
"""

from __future__ import annotations

import ast
import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench import _native
from bench.procstat import UdpCounters
from bench.report import markdown
from bench.run import BridgeTarget, Counters, RunResult, allocate_bridge
from bench.scenario import parse_scenario
from bridge import Bridge
from bridge.colibri2_handler import Colibri2Handler
from bridge.http import create_private_app
from bridge.lifecycle import Lifecycle, LifecycleConfig
from bridge.load import LoadSampler
from bridge.xmpp_core import BridgeState

if TYPE_CHECKING:
    from bench._native import LoadGenEndpoint

pytestmark = pytest.mark.integration

CONFERENCES = 2
PER_CONFERENCE = 3
STUB = Path(_native.__file__).with_name("_native.pyi")


def stub_keys(name: str) -> set[str]:
    """The fields of TypedDict `name` in bench/_native.pyi."""
    tree = ast.parse(STUB.read_text())
    (cls,) = (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    return {a.target.id for a in cls.body if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)}


def assert_keys(value: Mapping[str, object], name: str) -> None:
    # A plain dict built by the extension, not parsed text, with exactly the stub's keys.
    assert type(value) is dict
    assert set(value) == stub_keys(name), name


@pytest.fixture
async def client(bridge: Bridge) -> AsyncIterator[TestClient[Any, Any]]:
    state = BridgeState()
    handler = Colibri2Handler(bridge, shutdown=state)
    lifecycle = Lifecycle(bridge, state, LifecycleConfig())
    app = create_private_app(bridge, handler, lifecycle, LoadSampler(), version="test")
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c
    await lifecycle.stop()


def endpoint_id(ep: LoadGenEndpoint) -> str:
    return f"lg{ep['index']}"


def update(ep: LoadGenEndpoint) -> dict[str, Any]:
    """The endpoint's transport and sources, as Jicofo passes a client's session-accept on."""
    audio, video = _native.LoadGen.default_sources(ep["index"], 1)
    assert audio is not None
    name = endpoint_id(ep)
    return {
        "id": name,
        "transport": {
            "transport": {
                "ufrag": ep["ufrag"],
                "pwd": ep["pwd"],
                "rtcp-mux": True,
                "candidates": [
                    {
                        "component": 1,
                        "foundation": c["foundation"],
                        "ip": c["ip"],
                        "port": c["port"],
                        "priority": c["priority"],
                        "protocol": "udp",
                        "type": c["type"],
                    }
                    for c in ep["candidates"]
                ],
                "fingerprints": [
                    {"hash": ep["fingerprint_hash"], "fingerprint": ep["fingerprint"], "setup": ep["setup"]}
                ],
            }
        },
        "sources": [
            {"type": "audio", "id": f"{name}-a0", "sources": [{"ssrc": audio, "name": f"{name}-a0"}]},
            {
                "type": "video",
                "id": f"{name}-v0",
                "sources": [{"ssrc": s, "name": f"{name}-v0"} for s in video],
            },
        ],
    }


async def allocate(client: TestClient[Any, Any], lg: _native.LoadGen, meeting: str, group: int) -> list[str]:
    """Allocates each endpoint (one per request, as JVB requires), then connects it to its bridge side."""
    eps = lg.create_endpoints(PER_CONFERENCE, group)
    answer: dict[str, dict[str, Any]] = {}
    for i, ep in enumerate(eps):
        allocation = {
            "id": endpoint_id(ep),
            "create": True,
            "capabilities": ["source-names"],
            "transport": {"ice-controlling": True},
        }
        if i == 0:
            body = {"meeting-id": meeting, "create": True, "endpoints": [allocation]}
            resp = await client.post("/colibri/v2/conferences", json=body)
        else:
            resp = await client.patch(f"/colibri/v2/conferences/{meeting}", json={"endpoints": [allocation]})
        assert resp.status == 200, await resp.text()
        (created,) = (await resp.json())["endpoints"]
        answer[created["id"]] = created["transport"]["transport"]
    for ep in eps:
        resp = await client.patch(f"/colibri/v2/conferences/{meeting}", json={"endpoints": [update(ep)]})
        assert resp.status == 200, await resp.text()
    for ep in eps:
        ice = answer[endpoint_id(ep)]
        audio, video = _native.LoadGen.default_sources(ep["index"], 1)
        lg.set_sources(ep["index"], audio, video)
        lg.connect(
            ep["index"],
            ice["ufrag"],
            ice["pwd"],
            [(c["ip"], c["port"], c["priority"], c["type"]) for c in ice["candidates"]],
            [(f["hash"], f["fingerprint"]) for f in ice["fingerprints"]],
            ice["fingerprints"][0]["setup"],
        )
    return [endpoint_id(ep) for ep in eps]


async def bridge_connected(client: TestClient[Any, Any], meetings: list[str]) -> bool:
    for m in meetings:
        body = await (await client.get(f"/colibri/v2/conferences/{m}")).json()
        if any(e["transport-state"] != "connected" for e in body["endpoints"]):
            return False
    return True


async def run_connected(client: TestClient[Any, Any], lg: _native.LoadGen, meetings: list[str]) -> Any:
    """Waits for both ends of every transport to connect, runs the load for 2 s, and returns its stats."""
    assert await asyncio.to_thread(lg.wait_connected, 15.0), lg.stats(detail=True)["endpoint_list"]
    deadline = time.monotonic() + 10
    while not await bridge_connected(client, meetings):
        assert time.monotonic() < deadline, "bridge transports did not connect"
        await asyncio.sleep(0.02)
    lg.start()
    await asyncio.sleep(2.0)
    await asyncio.to_thread(lg.stop, 0.4)
    return lg.stats(detail=True)


async def test_loadgen_through_the_colibri2_http_api(client: TestClient[Any, Any]) -> None:
    lg = _native.LoadGen(threads=1, video_bitrate_bps=300_000)
    try:
        meetings = [f"bench-{g}" for g in range(CONFERENCES)]
        for g, m in enumerate(meetings):
            await allocate(client, lg, m, g)
        total = CONFERENCES * PER_CONFERENCE
        stats = await run_connected(client, lg, meetings)
    finally:
        lg.shutdown()

    assert_keys(stats, "LoadGenStats")
    for typed, name in (
        (stats["totals"], "Totals"),
        (stats["latency"], "Latency"),
        (stats["latency_video"], "Latency"),
        (stats["series"][0], "Second"),
        (stats["streams"][0], "Stream"),
        (stats["receive"], "ReceiveTotals"),
        (stats["receive_streams"][0], "ReceiveStream"),
        (stats["endpoint_list"][0], "EndpointSummary"),
    ):
        assert_keys(typed, name)
    assert (stats["endpoints"], stats["connected"], stats["failed"]) == (total, total, 0)
    assert (stats["mode"], stats["stopped"]) == ("secure", True)
    totals = stats["totals"]
    for counter in ("decrypt_failures", "integrity_failures", "misrouted", "send_failed", "vp8_invalid"):
        assert totals[counter] == 0, (counter, totals)
    streams = stats["streams"]
    # Each endpoint gets audio and video from each of the other two members of its conference.
    assert len(streams) == total * (PER_CONFERENCE - 1) * 2
    assert {s["kind"] for s in streams} == {"audio", "video"}
    for s in streams:
        assert s["received"] > 0 and s["sent"] == s["received"] + s["lost"], s
    expected, received, lost = stats["expected"], stats["received"], stats["lost"]
    assert expected == received + lost and expected > 0
    assert lost <= expected // 1000, f"loss {lost} of {expected}"
    assert stats["loss_ratio"] == pytest.approx(lost / expected)
    latency = stats["latency"]
    assert latency["count"] == received
    p50, p99, p999, top = latency["p50_ns"], latency["p99_ns"], latency["p999_ns"], latency["max_ns"]
    assert p50 is not None and p99 is not None and p999 is not None and top is not None
    assert 0 < p50 <= p99 <= p999 <= top
    # The kernel stamped every arrival on the loopback sockets: each packet's time to its socket is
    # at most its time to our read, so every percentile is too.
    at_socket = stats["latency_socket"]
    assert at_socket["count"] == received
    assert at_socket["p50_ns"] is not None and at_socket["p99_ns"] is not None
    assert 0 < at_socket["p50_ns"] <= p50 and at_socket["p99_ns"] <= p99
    assert sum(count for _, count in stats["histogram"]) == received
    assert {e["state"] for e in stats["endpoint_list"]} == {"connected"}
    # Per received ssrc: the bridge forwards every stream unchanged, so one received stream per sent
    # one, gapless where nothing was lost, on one layer, each video stream starting with a keyframe.
    receive = stats["receive"]
    assert receive["streams"] == len(stats["receive_streams"]) == len(streams)
    assert receive["video_streams"] == total * (PER_CONFERENCE - 1)
    assert receive["packets"] == received + stats["duplicates"]
    if stats["reordered"] == 0:
        assert receive["seq_gaps"] == stats["lost_gap"]
    assert (receive["layer_switches"], receive["switches_off_keyframe"], receive["freezes"]) == (0, 0, 0)
    for r in stats["receive_streams"]:
        if r["kind"] == "video":
            assert r["keyframes"] >= 1 and r["frames"] > 50, r
    # One keyframe per sender at start, at least; the bridge asked the first ones for more on joins.
    assert totals["keyframes_sent"] >= total
    assert totals["pli_received"] > 0
    # Once shut down, the workers are gone: stats are empty and control calls fail clearly.
    after = lg.stats()
    assert (after["endpoints"], after["latency"]["p50_ns"], after["streams"]) == (0, None, [])
    with pytest.raises(OSError, match="shut down"):
        lg.create_endpoints(1, 0)


async def test_loadgen_feedback_reaches_the_bridge_and_nacks_repair_loss(
    client: TestClient[Any, Any], bridge: Bridge
) -> None:
    """Allocated by the bench's own control plane with feedback on (transport-cc in extension 5, RTX 96 and
    FID groups, as the focus offers browsers): the bridge estimates every receiver from its feedback; with
    every 20th media datagram dropped on arrival (a test knob), receivers NACK and senders' RTX repair it."""
    scenario = parse_scenario("[load]\nsenders = 3\n[media]\nvideo-kbps = 300\nsimulcast = true\n")
    assert scenario.media.feedback, "on by default, like browsers"
    target = BridgeTarget(str(client.make_url("")), client.session, None)
    lg = _native.LoadGen(threads=1, video_bitrate_bps=300_000, feedback=True, drop_every_n=20)
    try:
        meetings, _ = await allocate_bridge(target, lg, scenario, None)
        stats = await run_connected(client, lg, meetings)
        transports = (await bridge.get_stats())["transports"]
    finally:
        lg.shutdown()
    totals = stats["totals"]
    for counter in ("decrypt_failures", "integrity_failures", "misrouted", "vp8_invalid", "rtx_unmatched"):
        assert totals[counter] == 0, (counter, totals)
    # Every endpoint receives the two others: each sent feedback about every 100 ms, and the bridge took
    # it (an estimate exists only once feedback acknowledged what it sent).
    assert totals["feedback_sent"] >= 3 * 10, totals
    assert isinstance(transports, dict) and len(transports) == 3
    for t in transports.values():
        assert t["bandwidth_estimate_bps"], t
    # The bridge reported on the numbers our senders stamped, too.
    assert totals["feedback_received"] > 0, totals
    # Loss on the receiving links was asked for and came back: the bridge answered from its RTX cache (RTX
    # on the Source's RTX SSRC), and the bridge's transports counted what they resent.
    assert totals["link_dropped"] > 0 and totals["nack_seqs_sent"] > 0, totals
    assert totals["rtx_received"] > 0 and totals["recovered"] > 0, totals
    assert sum(t["retransmitted"] for t in transports.values()) >= totals["rtx_received"], transports
    video_lost = sum(s["lost"] for s in stats["streams"] if s["kind"] == "video")
    assert video_lost * 10 <= totals["recovered"], (video_lost, totals)
    # What the bench reports of it.
    idle = Counters(at=0.0, cpu=None, udp=UdpCounters())
    run = RunResult("bridge", scenario, 2.0, stats, idle, replace(idle, at=2.0), loadgen_cpu_cores=0.1)
    feedback = run.summary()["feedback"]
    assert feedback["enabled"] is True
    assert feedback["transport_cc_sent"] == totals["feedback_sent"]
    assert feedback["recovered"] == totals["recovered"]
    row = markdown({"scenario": {"name": "fb"}, "steps": [{"bridge": run.summary()}]}).splitlines()[-1]
    assert f"| {totals['feedback_sent']:,} / {totals['nack_seqs_sent']:,} / {totals['recovered']:,} /" in row


def test_loadgen_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        _native.LoadGen(mode="carrier-pigeon")
    with pytest.raises(ValueError):
        _native.LoadGen(bind_ip="not an address")
    with pytest.raises(ValueError, match="video_packet_size"):
        _native.LoadGen(video_packet_size=64)  # no room for the VP8 prefix and the trailer
    lg = _native.LoadGen(threads=1)
    try:
        with pytest.raises(ValueError, match="no endpoint"):
            lg.set_sources(5, 1, [2])
        (ep,) = lg.create_endpoints(1, 0)
        with pytest.raises(ValueError, match="raw mode"):
            lg.connect_raw(ep["index"], "127.0.0.1", 9)
        with pytest.raises(ValueError, match="fingerprint"):
            lg.connect(ep["index"], "u", "p", [("127.0.0.1", 9, 1, "host")], [("md5", "00")], "actpass")
        with pytest.raises(ValueError, match="candidate type"):
            lg.connect(ep["index"], "u", "p", [("127.0.0.1", 9, 1, "bogus")], [], "actpass")
    finally:
        lg.shutdown()


def test_raw_mode_through_the_raw_relay() -> None:
    relay = _native.RawRelay()
    relay.start()
    host, port = relay.local_address()
    lg = _native.LoadGen(threads=1, mode="raw", video_bitrate_bps=300_000)
    try:
        for group in range(CONFERENCES):
            for ep in lg.create_endpoints(PER_CONFERENCE, group):
                audio, video = _native.LoadGen.default_sources(ep["index"], 1)
                lg.set_sources(ep["index"], audio, video)
                lg.connect_raw(ep["index"], host, port)
        assert lg.wait_connected(5.0)
        deadline = time.monotonic() + 5
        while relay.stats()["members"] < CONFERENCES * PER_CONFERENCE:
            assert time.monotonic() < deadline, relay.stats()
            time.sleep(0.02)
        lg.start()
        time.sleep(1.0)
        lg.stop(0.3)
        stats = lg.stats(detail=True)
    finally:
        lg.shutdown()
        relay.stop()
    expected, received, lost = stats["expected"], stats["received"], stats["lost"]
    assert expected == received + lost and expected > 0 and lost <= expected // 1000
    streams = stats["streams"]
    assert len(streams) == CONFERENCES * PER_CONFERENCE * (PER_CONFERENCE - 1) * 2
    # The raw relay forwards the VP8 packets as they are: every one still parses.
    assert stats["totals"]["vp8_invalid"] == 0 and stats["receive"]["keyframes"] > 0
    # What the bench reports of it, per received ssrc.
    scenario = parse_scenario(f"[load]\nconferences = {CONFERENCES}\nsenders = {PER_CONFERENCE}\n")
    idle = Counters(at=0.0, cpu=None, udp=UdpCounters())
    run = RunResult("raw-relay", scenario, 1.0, stats, idle, replace(idle, at=1.0), loadgen_cpu_cores=0.1)
    summary = run.summary()
    assert summary["receive"] == {
        "filtered_pps": None,  # the relay filters nothing and has no such counter
        # Each of the 6 receivers gets the 2 other members' video.
        "video_streams_per_receiver": 2.0,
        "rtp_seq_gaps": stats["receive"]["seq_gaps"],
        "layer_switches": 0,
        "switches_off_keyframe": 0,
        "freezes": 0,
        "freeze_s": 0.0,
        "keyframes_sent": stats["totals"]["keyframes_sent"],
        "keyframe_requests": 0,  # nobody asks in raw mode
        "vp8_invalid": 0,
    }
    row = markdown({"scenario": {"name": "raw"}, "steps": [{"bridge": summary}]}).splitlines()[-1]
    assert row.endswith(f"| {stats['receive']['seq_gaps']} / 0 / 0 | — | 2.0 |"), row
    rs = relay.stats()
    assert_keys(rs, "RelayStats")
    totals = stats["totals"]
    # Every copy the relay sent arrived: media and the three registration hellos per endpoint.
    assert rs["packets_out"] == totals["recv_packets"] + totals["hello"]
    assert (rs["members"], rs["groups"], rs["untagged"]) == (6, 2, 0)
    assert rs["packets_per_send_call"] == rs["send_syscall_packets"] / rs["send_calls"] >= 1
