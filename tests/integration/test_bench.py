"""`sluice bench` end to end, and a load-generator endpoint heard by an independent WebRTC peer (aiortc)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from bench import _native
from bench.livekit import binary_path
from bridge import Bridge, Candidate, Fingerprint, Source, TransportDescription
from tests.helpers.jicofo import start_sluice
from tests.helpers.peers import PeerFactory
from tests.helpers.sdp import OfferBuilder, RemoteParticipant, only_loopback, parse_answer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

SCENARIO = """
name = "small"
duration = "3s"
loss-limit = 1.0
[load]
conferences = 2
senders = 3
receivers = 1
[media]
video-kbps = 300
video-fps = 30
audio = true
"""


async def test_bench_runs_a_small_scenario_and_writes_a_consistent_result(tmp_path: Path) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "out"
    proc = await start_sluice("bench", str(scenario), "--out", str(out))
    output, _ = await asyncio.wait_for(proc.communicate(), 90)
    text = output.decode()
    assert proc.returncode == 0, text

    result: dict[str, Any] = json.loads((out / "small.json").read_text())
    assert result["passed"] is True
    assert result["commit"] and result["hardware"]["cpus"] >= 1
    (step,) = result["steps"]
    bridge, raw = step["bridge"], step["raw_relay"]
    for run in (bridge, raw):
        assert (run["conferences"], run["publishers"], run["subscribers"]) == (2, 6, 8)
        assert run["failed_endpoints"] == 0
        # What was expected either arrived or is counted lost: nothing unaccounted for.
        assert run["expected_packets"] == run["received_packets"] + run["lost_packets"] > 0
        assert run["loss_pct"] is not None and run["loss_pct"] <= 1.0
        latency = run["latency_us"]
        assert 0 < latency["p50"] <= latency["p99"] <= latency["p999"] <= latency["max"]
        at_socket = run["latency_at_socket_us"]
        assert 0 < at_socket["p50"] <= at_socket["p99"] <= latency["p99"]
        assert run["egress_pps"] > 0 and run["cpu_cores"] > 0 and run["cpu_us_per_egress_packet"] > 0
        assert isinstance(run["other_cpu_cores"], float)
    # 6 senders, each heard by the 3 others: 300 kbit/s at 30 fps is 1250 B a frame, 2 packets; + 50 audio.
    assert bridge["offered_egress_pps"] == 2 * 3 * 3 * (60 + 50)
    assert bridge["packets_per_sendmmsg"] >= 1 and bridge["packets_per_recvmmsg"] >= 1
    assert bridge["seam_crossings_per_packet"] is not None and bridge["seam_crossings_per_packet"] < 0.01
    assert step["cpu_per_packet_ratio"] > 0
    # What the bridge dropped, by reason (the relay has no such counters); a healthy run drops no media.
    assert raw["bridge_drops"] is None
    for run in (bridge, raw):
        drops = run["kernel_udp_drops"]
        assert drops["at_target"] >= 0 and drops["at_loadgen"] >= 0, drops
    assert not set(bridge["bridge_drops"]) & {"srtp_auth", "unknown_ssrc", "send_failed", "panic"}, bridge
    # Feedback is on by default for the bridge, as browsers have it, and off against the raw relay.
    fb, raw_fb = bridge["feedback"], raw["feedback"]
    assert fb["enabled"] is True and fb["transport_cc_sent"] > 0 and fb["transport_cc_received"] > 0, fb
    assert raw_fb["enabled"] is False and raw_fb["transport_cc_sent"] == raw_fb["nacks_sent"] == 0, raw_fb
    assert result["scenario"]["media"]["feedback"] is True
    assert len(step["series"]["bridge"]) >= 2 and step["latency_histogram_ns"]
    for name in ("small-timeline.png", "small-latency.png", "small.md"):
        assert (out / name).stat().st_size > 0, name
    assert "| small | 2 | 6 | 8 |" in (out / "small.md").read_text()


async def test_bench_with_two_shards_reports_each_shards_conferences_cpu_and_egress(tmp_path: Path) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "out"
    proc = await start_sluice("bench", str(scenario), "--out", str(out), "--shards", "2", "--no-raw")
    output, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, output.decode()

    result: dict[str, Any] = json.loads((out / "small.json").read_text())
    assert result["passed"] is True and result["shards"] == 2
    # Two shards are placed by the kernel, not pinned.
    assert result["placement"] == {"target_cpu": None, "loadgen_cpus": None}
    (step,) = result["steps"]
    shards = step["bridge"]["shards"]
    assert [s["shard"] for s in shards] == [0, 1], shards
    # One conference on each idle shard, and each forwards its own.
    assert [s["conferences"] for s in shards] == [1, 1], shards
    assert all(s["egress_pps"] > 0 and s["cpu_cores"] > 0 for s in shards), shards
    assert sum(s["egress_pps"] for s in shards) == pytest.approx(step["bridge"]["egress_pps"], rel=0.02)


PEER_SCENARIO = """
name = "peer-small"
duration = "4s"
loss-limit = 1.0
[load]
conferences = 2
senders = 2
receivers = 1
[media]
video-kbps = 600
video-fps = 30
simulcast = true
audio = true
"""


async def _bench_step_beside(target: str, tmp_path: Path, timeout: float) -> tuple[dict[str, Any], str]:
    """`sluice bench PEER_SCENARIO --no-raw --target <target>`: its one step and its Markdown table."""
    scenario = tmp_path / "peer.toml"
    scenario.write_text(PEER_SCENARIO)
    out = tmp_path / "out"
    proc = await start_sluice("bench", str(scenario), "--out", str(out), "--no-raw", "--target", target)
    output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, output.decode()
    result: dict[str, Any] = json.loads((out / "peer-small.json").read_text())
    (step,) = result["steps"]
    assert step["peers_skipped"] == {} and set(step["side_by_side"]) == {"sluice", target}
    peer, sluice = step["peers"][target], step["bridge"]
    assert peer["target"] == target and peer["failed_endpoints"] == 0
    assert peer["expected_packets"] > 0 and peer["received_packets"] > 0
    assert peer["loss_pct"] is not None and peer["loss_pct"] <= 1.0, peer
    # One simulcast layer of each other sender per receiver, as from Sluice, and at its rate: the same load.
    for run in (sluice, peer):
        assert run["receive"]["video_streams_per_receiver"] == pytest.approx(4 / 3, abs=0.01), run["receive"]
        assert run["receive"]["switches_off_keyframe"] == 0
    assert peer["received_pps"] == pytest.approx(sluice["received_pps"], rel=0.15)
    # Its CPU is the peer process's, its egress what left its namespace over UDP.
    assert peer["cpu_cores"] > 0 and peer["egress_pps"] >= peer["received_pps"] * 0.9
    assert step["side_by_side"][target]["egress_packets_per_cpu_second"] > 0
    assert step["side_by_side"][target]["sluice_advantage"] > 0
    assert step["series"][target]
    return step, (out / "peer-small.md").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="Janus runs in a network namespace (needs root)")
async def test_bench_runs_janus_videoroom_beside_sluice_on_the_same_load(tmp_path: Path) -> None:
    """`--target janus`: Debian's Janus in its own namespace takes the same conferences (publishers with an
    SSRC simulcast group, multistream subscribers, the layer Sluice gives), and the step puts both side by
    side."""
    step, table = await _bench_step_beside("janus", tmp_path, 120)
    janus = step["peers"]["janus"]
    # Measured from the start, like Sluice: what was expected arrived or is counted lost.
    assert janus["expected_packets"] == janus["received_packets"] + janus["lost_packets"]
    assert "| peer-small | 2 | janus |" in table
    # Janus and its namespaces went with the bench.
    assert not _processes_named("janus")


@pytest.mark.skipif(os.geteuid() != 0, reason="LiveKit runs in a network namespace (needs root)")
async def test_bench_runs_livekit_beside_sluice_on_the_same_load(tmp_path: Path) -> None:
    """`--target livekit`: LiveKit server (built by scripts/bootstrap.sh) in its own namespace takes the same
    conferences over its WebSocket signalling (a publisher PeerConnection with RID simulcast and a
    subscriber one per participant), measured over the window after every subscriber has every track."""
    _, table = await _bench_step_beside("livekit", tmp_path, 240)
    assert "| peer-small | 2 | livekit |" in table
    assert not _processes_of(binary_path())


def _processes_of(exe: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(proc / "exe")) == exe:
                    found.append(int(proc.name))
    return found


def _processes_named(name: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == name:
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


TURN_SCENARIO = """
name = "turn-small"
duration = "3s"
loss-limit = 1.0
[load]
conferences = 2
senders = 2
[media]
video-kbps = 300
video-fps = 30
audio = true
[turn]
endpoints = 1
"""


async def test_bench_runs_a_turn_scenario_through_a_real_coturn_and_compares_it_with_direct_udp(
    tmp_path: Path,
) -> None:
    """Issue 14: load-generator endpoints through TURN (the coturn `sluice bench` starts: Allocate with
    long-term credentials, ChannelBind, ChannelData both ways), with CPU per packet against direct UDP."""
    scenario = tmp_path / "turn-small.toml"
    scenario.write_text(TURN_SCENARIO)
    out = tmp_path / "out"
    proc = await start_sluice("bench", str(scenario), "--out", str(out), "--no-raw")
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = output.decode()
    assert proc.returncode == 0, text
    assert "managed coturn PID" in text, text
    result: dict[str, Any] = json.loads((out / "turn-small.json").read_text())
    (step,) = result["steps"]
    turn = step["turn"]
    relayed, direct = turn["relayed"], step["bridge"]
    # The first endpoint of each conference got a relay (the load generator saw its relayed address) and
    # signalled no candidate of its own, so the bridge could reach it only there.
    assert turn["relayed_endpoints"] == relayed["relayed_endpoints"] == 2
    for run in (direct, relayed):
        assert run["failed_endpoints"] == 0
        assert run["expected_packets"] == run["received_packets"] + run["lost_packets"] > 0
        assert run["loss_pct"] is not None and run["loss_pct"] <= 1.0
    assert relayed["received_packets"] > 0.8 * direct["received_packets"]
    # coturn worked for it, and each side's CPU per packet is reported.
    assert relayed["turn_server_cpu_cores"] > 0
    cost = turn["cpu_us_per_packet"]
    assert cost["relayed"]["turn_server"] > 0 and cost["direct"]["turn_server"] is None
    for side in ("direct", "relayed"):
        assert cost[side]["loadgen"] > 0 and cost[side]["target"] > 0 and cost[side]["machine"] > 0
    assert turn["machine_cpu_ratio"] > 0
    assert "| through TURN |" in (out / "turn-small.md").read_text()


async def test_an_aiortc_peer_receives_a_loadgen_endpoints_media_through_the_bridge(
    bridge: Bridge, aiortc_peers: PeerFactory
) -> None:
    conference = bridge.create_conference(meeting_id="interop")
    lg = _native.LoadGen(threads=1, video_bitrate_bps=300_000)
    try:
        (gen,) = lg.create_endpoints(1, 0)
        audio_ssrc, video_ssrcs = _native.LoadGen.default_sources(gen["index"], 1)
        assert audio_ssrc is not None
        lg.set_sources(gen["index"], audio_ssrc, video_ssrcs)
        generator = conference.create_endpoint("loadgen")
        generator.set_remote_description(
            TransportDescription(
                ufrag=gen["ufrag"],
                pwd=gen["pwd"],
                fingerprints=(Fingerprint.parse(gen["fingerprint_hash"], gen["fingerprint"], "active"),),
                candidates=tuple(
                    Candidate(ip_address(c["ip"]), c["port"], c["priority"], "host", foundation="1")
                    for c in gen["candidates"]
                ),
            )
        )
        sources = (
            Source(kind="audio", ssrcs=(audio_ssrc,), name="loadgen-a0"),
            Source(kind="video", ssrcs=tuple(video_ssrcs), name="loadgen-v0"),
        )
        generator.set_sources(sources)
        local = generator.local_description()
        lg.connect(
            gen["index"],
            local.ufrag,
            local.pwd,
            [(str(c.ip), c.port, c.priority, c.type) for c in local.candidates],
            [(fp.hash, fp.value) for fp in local.fingerprints],
            "actpass",
        )

        # The aiortc peer is offered the generator's streams, as a focus would offer them.
        peer = aiortc_peers("alice", send_audio=True, send_video=True)
        alice = conference.create_endpoint("alice")
        offer = OfferBuilder(alice.local_description())
        offer.add(RemoteParticipant("loadgen", sources))
        answer = parse_answer(await peer.answer(offer.offer()), "alice", candidate_filter=only_loopback)
        alice.set_remote_description(peer.describe_for_bridge(answer))
        alice.set_sources(answer.sources)
        assert await alice.wait_state("connected", timeout=10) == "connected"
        assert await asyncio.to_thread(lg.wait_connected, 10.0), lg.stats(detail=True)
        lg.start()

        async def inbound() -> dict[int, int]:
            report = await peer.pc.getStats()
            return {
                s.ssrc: s.packetsReceived for s in report.values() if getattr(s, "type", "") == "inbound-rtp"
            }

        received: dict[int, int] = {}

        async def poll() -> bool:
            received.update(await inbound())
            return all(received.get(ssrc, 0) >= 20 for ssrc in (audio_ssrc, *video_ssrcs))

        # aiortc counts a packet only after SRTP authenticated and decrypted it.
        deadline = asyncio.get_running_loop().time() + 10
        while not await poll():
            assert asyncio.get_running_loop().time() < deadline, f"aiortc received {received}"
            await asyncio.sleep(0.2)
    finally:
        lg.shutdown()
