"""bench/qoe.py's scorecard on synthetic samples, its views' parsing, the SVG and the table; and
bench/qoe_run.py's scenario files."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bench.qoe import (
    BridgeSample,
    Criteria,
    LinkSample,
    PageSample,
    QoeSampler,
    Sample,
    markdown_table,
    rate_kbps,
    score,
    svg_plot,
)
from bench.qoe_run import is_impair_scenario, load_impair_scenario, parse_impair_scenario
from bench.scenario import ScenarioError

SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"


def run(
    seconds: float,
    *,
    every: float = 0.2,
    height: Any = lambda t: 720,
    decoding: Any = lambda t: True,
    capacity: Any = lambda t: 500.0,
    allocated_kbps: Any = lambda t: 400.0,
    send_kbps: Any = lambda t: 400.0,
    audio_lost: Any = lambda t: 0,
) -> list[Sample]:
    """A synthetic run: functions of time give each view's figures; counters integrate them."""
    out: list[Sample] = []
    frames = sent = delivered = 0
    freezes, freeze_s = 0, 0.0
    stalled_since: float | None = None
    n = round(seconds / every)
    for i in range(n + 1):
        t = round(i * every, 3)
        if decoding(t):
            frames += 6
            if stalled_since is not None and t - stalled_since > 0.15:
                freezes += 1
                freeze_s += t - stalled_since
            stalled_since = None
        elif stalled_since is None:
            stalled_since = t
        if i:
            sent += round(send_kbps(t) * 1000 / 8 * every)
            delivered += round(min(send_kbps(t), capacity(t) or 1e9) * 1000 / 8 * every)
        page = PageSample(
            frame_height=height(t),
            frames_decoded=frames,
            freeze_count=freezes,
            total_freezes_duration=freeze_s,
            video_packets_received=100 * i,
            video_packets_lost=i // 10,
            audio_packets_received=10 * i,
            audio_packets_lost=audio_lost(t),
            total_samples_received=9600 * i,
            concealed_samples=480 * audio_lost(t),
            nack_count=i // 5,
            # Chromium counts a packet RTX repaired as lost and as retransmitted: about half are here.
            # Payload bytes of those (a video payload here is 1000 bytes, and 2), plus padding packets
            # that probes sent on the RTX SSRC: counted as retransmitted packets, with no payload bytes.
            retransmitted_packets_received=i // 20 + i // 3,
            retransmitted_bytes_received=1002 * (i // 20),
            video_bytes_received=100_000 * i,
            pli_count=i // 75,
        )
        bridge = BridgeSample(
            estimate_bps=int(allocated_kbps(t) * 1250),
            bandwidth_bps=int(allocated_kbps(t) * 1250),
            allocated_bps=int(allocated_kbps(t) * 1000),
            allocated_height=height(t),
            bytes_out=sent,
        )
        link = LinkSample(capacity_kbps=capacity(t), bytes_out=delivered)
        out.append(Sample(t, page, bridge, link))
    return out


def test_a_clean_run_scores_clean() -> None:
    card = score(
        run(30), criteria=Criteria(max_longest_stall_s=0.5, max_switches_per_min=4, max_overshoot_pct=10)
    )
    assert card.time_to_720p_s == 0.0
    assert (
        card.freezes == 0 and card.freeze_s == 0 and card.longest_stall_s == 0 and card.longest_freeze_s == 0
    )
    assert card.layer_switches == 0 and card.switches_per_min == 0
    assert card.allocated_over_capacity_pct == 0
    assert card.send_overshoot_pct == pytest.approx(-20, abs=1)
    assert card.mean_capacity_kbps == 500 and card.mean_allocated_kbps == 400
    assert card.mean_delivered_kbps == pytest.approx(400, rel=0.01)
    assert card.audio_loss_pct == 0 and card.audio_concealed_pct == 0
    # 15 lost as Chromium counts them, 7 of those repaired by RTX.
    assert card.video_loss_before_rtx_pct == pytest.approx(100 * 15 / (15000 + 15), abs=1e-3)
    assert card.video_loss_pct == pytest.approx(100 * (15 - 7) / (15000 + 15), abs=1e-3)
    assert card.nacks == 30 and card.retransmitted_received == 7 + 50 and card.keyframe_requests == 2
    assert card.passed == {"longest_stall": True, "switches_per_min": True, "overshoot": True}


def test_the_reactions_to_capacity_steps_are_not_counted_as_switches() -> None:
    # 3 Mbit/s, 300 kbit/s from 20 s, 3 Mbit/s from 40 s. The receiver goes 720p -> 360p -> 180p within
    # 2 s of the fall, and 180p -> 360p -> 720p within 6 s of the rise: 4 reactions. One flap at 30 s
    # (180p -> 360p -> 180p) is steady-state switching.
    def height(t: float) -> int:
        if t < 20 or t >= 46:
            return 720
        if t < 21 or 30 <= t < 31 or 43 <= t < 46:
            return 360
        return 180

    def capacity(t: float) -> float:
        return 300.0 if 20 <= t < 40 else 3000.0

    card = score(run(60, height=height, capacity=capacity))
    assert card.reaction_switches == 4
    assert card.layer_switches == 2
    # Steady time: 10-60 s less the 3 s after the fall and the 6 s until 720p was back.
    assert card.switches_per_min == pytest.approx(2 * 60 / (50 - 3 - 6), rel=0.02)


def test_time_to_720p_and_switches_count_only_steady_state() -> None:
    # 180p until 3 s, 720p; then in steady state (after 10 s) 360p for 1 s twice: 4 switches in 20 s.
    def height(t: float) -> int:
        if t < 3:
            return 180
        if 12 <= t < 13 or 20 <= t < 21:
            return 360
        return 720

    card = score(run(30, height=height), criteria=Criteria(max_switches_per_min=4, max_time_to_720p_s=2))
    assert card.time_to_720p_s == 3.0
    assert card.layer_switches == 4
    assert card.switches_per_min == pytest.approx(12, rel=0.01)
    assert card.passed == {"time_to_720p": False, "switches_per_min": False}


def test_never_720p_fails_that_criterion() -> None:
    card = score(run(5, height=lambda t: 360), criteria=Criteria(max_time_to_720p_s=10))
    assert card.time_to_720p_s is None
    assert card.passed == {"time_to_720p": False}


def test_a_stall_is_measured_and_counted_as_a_freeze() -> None:
    card = score(run(20, decoding=lambda t: not 5 <= t < 6.2), criteria=Criteria(max_longest_stall_s=0.5))
    assert card.longest_stall_s == pytest.approx(1.2)  # the count seen at 4.8 is seen until 6.0
    assert (
        card.freezes == 1
        and card.freeze_s == pytest.approx(1.2)
        and card.longest_freeze_s == pytest.approx(1.2)
    )
    assert card.passed == {"longest_stall": False}
    # A stall to the end of the run counts too, as does one from its start, and one all along.
    assert score(run(10, decoding=lambda t: t < 7)).longest_stall_s == pytest.approx(3.2)
    assert score(run(10, decoding=lambda t: t > 4)).longest_stall_s == pytest.approx(4.0)
    never = score(run(10, decoding=lambda t: t == 0))
    assert never.longest_stall_s == pytest.approx(10) and never.freezes == 0


def test_a_late_sample_is_no_stall_and_chromiums_freeze_is_the_longest_one() -> None:
    frames = [(0.0, 0), (0.2, 6), (0.4, 12), (2.4, 72), (2.6, 78)]  # one sample 2 s late, frames all along
    samples = [Sample(t, PageSample(frame_height=720, frames_decoded=n)) for t, n in frames]
    assert score(samples).longest_stall_s == 0
    # Two freezes Chromium timed: 0.3 s, then 0.9 s; the count rose once in each interval.
    pages = [
        PageSample(frames_decoded=i, freeze_count=c, total_freezes_duration=d)
        for i, c, d in [(1, 0, 0.0), (2, 1, 0.3), (3, 1, 0.3), (4, 2, 1.2)]
    ]
    card = score(
        [Sample(i * 0.2, p) for i, p in enumerate(pages)], criteria=Criteria(max_longest_stall_s=0.5)
    )
    assert card.longest_freeze_s == pytest.approx(0.9) and card.longest_stall_s == 0
    assert card.passed == {"longest_stall": False}


def test_overshoot_above_a_stepped_capacity() -> None:
    # Capacity drops to 300 at 10 s; the bridge keeps sending 600 for 5 s, allocating 900 until 12 s. The
    # first 3 s after the fall are its reaction (not judged as overshoot); the 2 s after are.
    samples = run(
        20,
        capacity=lambda t: 3000.0 if t < 10 else 300.0,
        allocated_kbps=lambda t: 900.0 if t < 12 else 250.0,
        send_kbps=lambda t: 600.0 if t < 15 else 250.0,
    )
    card = score(samples, criteria=Criteria(max_overshoot_pct=10))
    assert card.send_overshoot_pct == pytest.approx(100, abs=2)  # 600 against 300
    # Samples at 10.0 .. 11.8 allocated 900 over 300: 10 of 101.
    assert card.allocated_over_capacity_pct == pytest.approx(100 * 10 / 101, rel=0.01)
    assert card.passed == {"overshoot": False}
    # Moving down within the reaction's 3 s: no overshoot judged.
    samples = run(
        20,
        capacity=lambda t: 3000.0 if t < 10 else 300.0,
        send_kbps=lambda t: 600.0 if t < 12.5 else 250.0,
    )
    card = score(samples, criteria=Criteria(max_overshoot_pct=10))
    assert card.passed == {"overshoot": True}, card.send_overshoot_pct


def test_audio_loss_is_concealment_and_lost_packets() -> None:
    card = score(run(10, audio_lost=lambda t: 5 if t >= 5 else 0), criteria=Criteria(max_audio_loss_pct=0))
    assert card.audio_loss_pct == pytest.approx(100 * 5 / 505, rel=1e-3)
    assert card.audio_concealed_pct == pytest.approx(100 * 5 * 480 / (9600 * 50), rel=1e-3)
    assert card.passed == {"audio_loss": False}
    # Concealment without loss (a busy host's playout) is reported, not judged as loss.
    samples = [
        Sample(
            i * 0.2,
            PageSample(audio_packets_received=10 * i, total_samples_received=9600 * i, concealed_samples=i),
        )
        for i in range(10)
    ]
    card = score(samples, criteria=Criteria(max_audio_loss_pct=0))
    assert card.audio_concealed_pct is not None and card.audio_concealed_pct > 0
    assert card.passed == {"audio_loss": True}


def test_audio_lost_as_a_link_falls_is_reported_but_not_judged() -> None:
    """What was in flight when the capacity fell tenfold is lost whatever the bridge does: the criterion
    judges the loss outside the REACT_DOWN_S after a fall; loss later, or at a rise, counts."""

    def falling(lost: Any) -> list[Sample]:
        return run(20, capacity=lambda t: 3000.0 if t < 10 or t >= 15 else 300.0, audio_lost=lost)

    card = score(falling(lambda t: 5 if t >= 10.4 else 0), criteria=Criteria(max_audio_loss_pct=0))
    assert card.audio_loss_pct is not None and card.audio_loss_pct > 0
    assert card.audio_loss_off_falls_pct == 0 and card.passed == {"audio_loss": True}
    for later in (13.4, 15.2):
        lost_later = falling(lambda t, at=later: 5 if t >= at else 0)
        card = score(lost_later, criteria=Criteria(max_audio_loss_pct=0))
        assert card.audio_loss_off_falls_pct is not None and card.audio_loss_off_falls_pct > 0, later
        assert card.passed == {"audio_loss": False}, later


def test_missing_figures_fail_what_needs_them() -> None:
    samples = [Sample(t * 0.2, PageSample(frame_height=720, frames_decoded=t)) for t in range(20)]
    card = score(samples, criteria=Criteria(max_overshoot_pct=10, max_longest_stall_s=1))
    assert card.send_overshoot_pct is None and card.mean_capacity_kbps is None
    assert card.passed == {"overshoot": False, "longest_stall": True}
    with pytest.raises(ValueError):
        score([])


def test_rate_over_trailing_windows() -> None:
    points = [(t * 0.2, int(t * 0.2 * 125_000)) for t in range(21)]  # 1 Mbit/s
    rates = rate_kbps(points)
    assert rates[0][0] == pytest.approx(1.0)
    assert all(r == pytest.approx(1000, rel=1e-3) for _, r in rates)
    assert rate_kbps(points[:3]) == []


def test_views_parse_what_the_page_bridge_and_relay_give() -> None:
    page = PageSample.from_stats(
        {
            "frameHeight": 360,
            "framesDecoded": 90,
            "nackCount": 4,
            "pliCount": 2,
            "concealedSamples": 960,
            "freezeCount": None,
        }
    )
    assert (page.frame_height, page.frames_decoded, page.nack_count, page.concealed_samples) == (
        360,
        90,
        4,
        960,
    )
    assert page.freeze_count == 0 and page.pli_count == 2
    view = {
        "estimate_bps": 480_000,
        "bandwidth_bps": 480_000,
        "allocated_bps": 350_000,
        "sources": [
            {"source": "aaaa-v0", "height": 360, "ideal_height": 720},
            {"source": "bbbb-v0", "height": None},
        ],
        "counters": {
            "bytes_out": 1000,
            "packets_out": 10,
            "retransmitted_packets": 3,
            "retransmitted_bytes": 99,
            "probe_clusters": 2,
            "padding_bytes": 500,
        },
    }
    bridge = BridgeSample.from_view(view, "aaaa-v0")
    assert bridge == BridgeSample(480_000, 480_000, 350_000, 360, 720, 1000, 10, 3, 2, 500)
    assert BridgeSample.from_view({"estimate_bps": None, "counters": None}).retransmitted is None
    stats = {
        "directions": {
            "a-to-b": {
                "bytes_out": 5000,
                "packets_out": 7,
                "dropped": {"queue_full": 2, "random_loss": 1},
                "step": 1,
                "impairment": {"rate-kbps": 300.0},
            }
        }
    }
    assert LinkSample.from_stats(stats) == LinkSample(300.0, 5000, 7, 3, 1)
    # Dated by the relay's clock when the run's start is known: its file may be read an interval late.
    dated = LinkSample.from_stats({**stats, "now_monotonic": 105.25}, started=100.0)
    assert dated.t == 5.25


def test_delivered_rate_uses_the_relays_own_times() -> None:
    # The file, written every 0.5 s at 1 Mbit/s, read every 0.2 s: repeated figures, read late.
    samples = []
    for i in range(30):
        t = i * 0.2
        written = int(t / 0.5) * 0.5
        link = LinkSample(capacity_kbps=2000.0, bytes_out=int(written * 125_000), t=written)
        samples.append(Sample(t, PageSample(frames_decoded=i), None, link))
    card = score(samples)
    assert card.mean_delivered_kbps == pytest.approx(1000, rel=1e-3)


def test_sampler_survives_a_failing_view() -> None:
    calls = {"page": 0}

    async def page() -> dict[str, Any]:
        calls["page"] += 1
        if calls["page"] == 2:
            raise RuntimeError("page busy")
        return {"ada": {"frameHeight": 720, "framesDecoded": calls["page"]}}

    async def bridge() -> dict[str, Any]:
        return {"grace": {"estimate_bps": 1_000_000, "allocated_bps": 800_000, "counters": {"bytes_out": 1}}}

    def link() -> dict[str, Any]:
        return {"directions": {"a-to-b": {"bytes_out": 1, "impairment": {"rate-kbps": None}}}}

    sampler = QoeSampler(page, bridge, link, remote="ada", receiver="grace", every_s=0.01)
    samples = asyncio.run(sampler.run(0.1))
    assert len(samples) >= 3
    assert samples[1].page is None and samples[1].bridge is not None
    assert samples[0].page is not None and samples[0].page.frame_height == 720
    assert samples[0].link == LinkSample(None, 1)
    assert sampler.errors == {"page": 1}


def test_svg_and_table() -> None:
    samples = run(12, height=lambda t: 180 if t < 2 else 720, capacity=lambda t: 500.0)
    svg = svg_plot(samples, "cap <500k>")
    root = ET.fromstring(svg)  # well-formed, the title escaped
    assert root.tag.endswith("svg")
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 5
    card = score(samples, criteria=Criteria(max_time_to_720p_s=1, max_longest_stall_s=1))
    table = markdown_table([("impair-cap-500k", card)])
    lines = table.splitlines()
    assert len(lines) == 3 and lines[2].startswith("| impair-cap-500k | 2 s ✗ |")
    assert lines[2].endswith("| fail: time_to_720p |")
    assert lines[0].count("|") == lines[2].count("|")


def test_the_bench_scenarios_parse() -> None:
    names = sorted(p.stem for p in SCENARIOS.glob("impair-*.toml"))
    assert names == [
        "impair-baseline",
        "impair-burst-5",
        "impair-cap-500k",
        "impair-loss-2",
        "impair-rtt-200",
        "impair-step",
    ]
    for name in names:
        assert is_impair_scenario(SCENARIOS / f"{name}.toml")
        scenario = load_impair_scenario(SCENARIOS / f"{name}.toml")
        assert scenario.name == name and scenario.senders == 3 and scenario.duration >= 60
    assert not is_impair_scenario(SCENARIOS / "meeting.toml")
    step = load_impair_scenario(SCENARIOS / "impair-step.toml")
    assert [s["rate-kbps"] for s in step.impair["a-to-b"]["steps"]] == [300, 3000]
    assert step.criteria.max_switches_per_min == 4


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("name = 'x'", "impair: expected a table"),
        ("[impair.a-to-b]\nrate-kbps = -1", "impair: a-to-b.rate-kbps"),
        ("senders = 9\n[impair]", "senders: 1..5"),
        ("duration = '1s'\n[impair]", "duration: 5 s"),
        ("[impair]\n[criteria]\nfreezes = 1", "unknown key criteria.freezes"),
        ("[impair]\n[criteria]\nswitches-per-min = -1", "criteria.switches-per-min"),
        ("[impair]\n[criteria]\nlongest-stall = 'soon'", "criteria.longest-stall"),
        ("[impair]\n[load]\nsenders = 1", "unknown key load"),
    ],
)
def test_scenario_errors_name_the_key(text: str, error: str) -> None:
    with pytest.raises(ScenarioError, match=error.replace(".", r"\.")):
        parse_impair_scenario(text)
