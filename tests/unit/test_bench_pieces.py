"""bench/: scenario files and the /proc readers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bench.colibri import MEDIAS, MEDIAS_WITH_FEEDBACK, SourceSet
from bench.procstat import (
    _TICKS,
    UdpCounters,
    machine_busy_seconds,
    parse_snmp,
    parse_udp_socket_drops,
    process_cpu,
    udp_counters,
    udp_socket_drops,
)
from bench.qoe_run import is_impair_scenario
from bench.readme_report import BEGIN, END, PEERS_BEGIN, PEERS_END, ReportError, peers_table, rewrite, table
from bench.scenario import ScenarioError, load_scenario, parse_scenario
from bridge.seam import header_extension_ids, to_native_payload_types

SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"

SNMP = """Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 100
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 1000 3 7 900 5 2 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors
UdpLite: 0 0 0 0 0 0 0
"""


def test_snmp_udp_line_is_read_by_name() -> None:
    c = parse_snmp(SNMP)
    assert c == UdpCounters(
        in_datagrams=1000, out_datagrams=900, in_errors=7, rcvbuf_errors=5, sndbuf_errors=2, no_ports=3
    )
    assert c.drops == 9
    assert (c - UdpCounters(in_datagrams=10, in_errors=7)).in_datagrams == 990
    with pytest.raises(ValueError):
        parse_snmp("Ip: a\nIp: 1\n")
    assert udp_counters().in_datagrams >= 0  # this machine's own file parses


# /proc/net/udp as the kernel writes it (its runs of spaces shortened): the inode is field 10, drops the last.
UDP_TABLE = """\
sl local_address rem_address st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode ref pointer drops
123: 0100007F:BE61 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 9738771 2 0000000000000000 4290
124: 0100007F:9F9C 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 9738772 2 0000000000000000 0
"""


def test_udp_drops_are_read_per_socket_and_summed_per_process() -> None:
    assert parse_udp_socket_drops(UDP_TABLE) == {"9738771": 4290, "9738772": 0}
    # A real socket of this process whose small receive buffer overflows: its drops are this process's.
    import socket  # noqa: PLC0415

    (before,) = udp_socket_drops(os.getpid())
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rx.bind(("127.0.0.1", 0))
        for _ in range(200):
            tx.sendto(b"x" * 1000, rx.getsockname())
        assert udp_socket_drops(os.getpid())[0] > before
    assert udp_socket_drops(2**22 + 1) == [0]  # no such process


def test_machine_busy_time_leaves_out_idle_and_iowait(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    #                user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 5 40 9000 30 2 3 10 7 0\ncpu0 50 2 20 4500 15 1 1 5 3 0\n")
    assert machine_busy_seconds(stat) == pytest.approx(160 / _TICKS)
    stat.write_text("intr 1 2 3\n")
    with pytest.raises(ValueError):
        machine_busy_seconds(stat)
    assert machine_busy_seconds() > 0  # this machine's own file parses


def test_process_cpu_grows_and_vanished_process_is_reported() -> None:
    before = process_cpu(os.getpid())
    sum(i * i for i in range(300_000))
    after = process_cpu(os.getpid())
    assert after.total >= before.total >= 0
    with pytest.raises(ProcessLookupError):
        process_cpu(2**22 + 12345)


def test_scenario_defaults_and_derived_rates() -> None:
    s = parse_scenario(
        """
name = "m"
duration = "10s"
[load]
conferences = 2
senders = 3
receivers = 1
[media]
video-kbps = 500
video-fps = 30
"""
    )
    # 500 kbit/s at 30 fps in 1200-byte packets: 2 packets a frame, 60/s, plus 50/s of audio.
    assert s.media.video_pps() == 60 and s.media.sender_pps() == 110
    assert (s.publishers, s.subscribers, s.duration) == (6, 8, 10.0)
    assert s.expected_egress_pps() == 2 * 3 * 3 * 110
    assert s.at(5).conferences == 5


def test_a_run_passes_within_the_loss_limit_and_the_median_latency_limit() -> None:
    lossy_only = parse_scenario("loss-limit = 0.1\n")
    assert lossy_only.median_latency_limit_s is None
    assert lossy_only.passes(0.1, 500_000.0) and not lossy_only.passes(0.2, 100.0)
    assert not lossy_only.passes(None, 100.0)
    queued = parse_scenario('median-latency-limit = "10ms"\n')
    assert queued.median_latency_limit_s == pytest.approx(0.01)
    assert queued.passes(0.0, 10_000.0) and not queued.passes(0.0, 10_001.0)
    # A saturated step (the bridge at a full core, its queue standing) loses nothing with deep buffers.
    assert not queued.passes(0.0, 106_954.8) and not queued.passes(0.0, None)
    assert load_scenario(SCENARIOS / "ramp.toml").median_latency_limit_s == pytest.approx(0.01)


def test_simulcast_layers_have_jitsis_bitrate_ratios() -> None:
    s = parse_scenario("[media]\nvideo-kbps = 1500\nsimulcast = true\naudio = false\n")
    assert s.media.video_ssrcs == 3
    assert s.media.layer_kbps() == pytest.approx([200, 500, 1500])
    # Mean frames of 833, 2083 and 6250 bytes at 30 fps: 1, 2 and 6 packets of 1200 bytes.
    assert s.media.video_pps() == (1 + 2 + 6) * 30 == s.media.sender_pps()


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("[load]\nconferences = 0\n", "conferences"),
        ("[load]\nsenders = 1\n", "two endpoints"),
        ("[load]\nsenders = true\n", "load.senders"),
        ("[media]\nfeedback = 1\n", "media.feedback"),
        ("[media]\nvideo-kbps = 0\naudio = false\n", "nothing to send"),
        ("[media]\nvideo-packet-bytes = 9000\n", "video-packet-bytes"),
        ("[ramp]\nstart = 5\nmax = 2\n", "ramp"),
        ("[load]\nconference = 2\n", "unknown key load.conference"),
        ('duration = "soon"\n', "duration"),
        ("loss-limit = 200\n", "loss-limit"),
        ('median-latency-limit = "0s"\n', "median-latency-limit"),
        ('median-latency-limit = "soon"\n', "median-latency-limit"),
        ("not toml = = 1", "not TOML"),
        ("[turn]\nendpoints = 0\n", "turn.endpoints"),
        ("[turn]\nrelays = 1\n", "unknown key turn.relays"),
    ],
)
def test_bad_scenarios_name_the_key(text: str, fault: str) -> None:
    with pytest.raises(ScenarioError, match=fault):
        parse_scenario(text)


def test_shipped_scenarios_parse() -> None:
    # The impairment scenarios are bench/qoe_run.py's (tests/unit/test_qoe.py parses them).
    files = sorted(f for f in SCENARIOS.glob("*.toml") if not is_impair_scenario(f))
    assert {f.stem for f in files} >= {"meeting", "livestream", "audio-large", "ramp"}
    for f in files:
        s = load_scenario(f)
        assert s.expected_egress_pps() > 0, f.name
    assert load_scenario(SCENARIOS / "ramp.toml").ramp is not None
    turn = load_scenario(SCENARIOS / "turn.toml").turn
    assert turn is not None and turn.endpoints is None


def test_turn_names_which_endpoints_of_each_conference_are_relayed() -> None:
    assert parse_scenario("").turn is None
    every = parse_scenario("[turn]\n").turn
    assert every is not None and all(every.relayed(i) for i in range(5))
    first = parse_scenario("[turn]\nendpoints = 1\n").turn
    assert first is not None and [first.relayed(i) for i in range(3)] == [True, False, False]


def test_feedback_is_on_by_default_and_signalled_as_the_focus_signals_it() -> None:
    assert parse_scenario("").media.feedback is True
    assert parse_scenario("[media]\nfeedback = false\n").media.feedback is False
    # What the bridge reads from the medias: transport-cc in extension 5 (the focus's) and RTX 96 of VP8.
    assert header_extension_ids(MEDIAS_WITH_FEEDBACK).transport_cc == 5
    assert header_extension_ids(MEDIAS).transport_cc is None
    rtx = [(p.pt, p.apt) for p in to_native_payload_types(MEDIAS_WITH_FEEDBACK) if p.apt is not None]
    assert rtx == [(96, 100)]
    # Each layer's RTX SSRC in an FID group, after the SIM group of the layers.
    (_, video) = SourceSet("lg0", 1, (2, 3, 4), (12, 13, 14)).media_sources()
    assert [s.ssrc for s in video.sources] == [2, 3, 4, 12, 13, 14]
    assert [(g.semantics, g.ssrcs) for g in video.ssrc_groups] == [
        ("SIM", (2, 3, 4)),
        ("FID", (2, 12)),
        ("FID", (3, 13)),
        ("FID", (4, 14)),
    ]
    (_, plain) = SourceSet("lg0", 1, (2, 3, 4)).media_sources()
    assert [g.semantics for g in plain.ssrc_groups] == ["SIM"]


def test_readme_report_renders_a_row_per_scenario_and_rewrites_only_between_its_markers() -> None:
    def run(us: float) -> dict[str, Any]:
        return {
            "egress_pps": 9599, "cpu_cores": 0.113, "cpu_us_per_egress_packet": us, "loss_pct": 0.0,
            "latency_us": {"p50": 131.2, "p99": 451.0, "p999": 1737.3},
            "latency_at_socket_us": {"p99": 360.4}, "packets_per_sendmmsg": 11.1,
            "packets_per_recvmmsg": 2.8, "receive": {"video_streams_per_receiver": 4.0, "filtered_pps": 0},
        }  # fmt: skip

    result = {
        "commit": "abc1234",
        "hardware": {"cpus": 2, "cpu_model": "Test CPU"},
        "scenario": {"name": "meeting", "description": "4 x 5"},
        "steps": [{"bridge": run(11.77), "raw_relay": run(4.51), "cpu_per_packet_ratio": 2.61}],
    }
    block = table([result], "make bench-report")
    assert block.startswith("Generated by `make bench-report` at abc1234 on 2 CPUs (Test CPU)")
    assert (
        "| meeting (4 x 5) | 9,599 | 0.11 | 11.77 / 4.51 | 2.61 | 0.000 | 131 / 451 / 1,737 | 451 |" in block
    )
    readme = f"intro\n{BEGIN}\nold table\n{END}\nafter\n"
    new = rewrite(readme, block)
    assert new.startswith(f"intro\n{BEGIN}\nGenerated by") and new.endswith(f"{END}\nafter\n")
    assert "old table" not in new
    with pytest.raises(ReportError, match="block"):
        rewrite("no markers here", block)


def test_readme_report_puts_each_target_of_a_step_side_by_side_between_the_peers_markers() -> None:
    def row(pps: int, cores: float, advantage: float | None) -> dict[str, Any]:
        return {
            "egress_pps": pps, "cpu_cores": cores, "egress_packets_per_cpu_second": round(pps / cores),
            "loss_pct": 0.0, "latency_p50_us": 172.0, "latency_p99_us": 3276.8, "sluice_advantage": advantage,
        }  # fmt: skip

    result = {
        "commit": "abc1234",
        "scenario": {"name": "meeting"},
        "steps": [{"side_by_side": {"sluice": row(9806, 0.16, None), "janus": row(9610, 0.37, 2.36)}}],
    }
    block = peers_table([result], "make bench-report")
    assert block.startswith("Generated by `make bench-report` at abc1234")
    assert "| meeting | sluice | 9,806 | 0.16 | 61,288 | — | 0.000 | 172 / 3,277 |" in block
    assert "| meeting | janus | 9,610 | 0.37 | 25,973 | 2.36 |" in block
    readme = f"{BEGIN}\nmain\n{END}\n{PEERS_BEGIN}\nold\n{PEERS_END}\n"
    new = rewrite(readme, block, PEERS_BEGIN, PEERS_END)
    assert "main" in new and "old" not in new and "| meeting | janus |" in new


def test_a_window_takes_counts_as_differences_and_keeps_stream_counts() -> None:
    from bench.run import window  # noqa: PLC0415

    def snap(expected: int, received: int, lost: int, sent: int, streams: int) -> Any:
        return {
            "expected": expected, "received": received, "unexpected": 0, "lost": lost, "lost_gap": 0,
            "duplicates": 0, "reordered": 0, "late": 0, "loss_ratio": 0.0,
            "totals": {"sent_packets": sent, "recv_packets": received},
            "receive": {"streams": streams, "video_streams": streams // 2, "packets": received},
            "latency": {"count": 5},
        }  # fmt: skip

    base = snap(1000, 700, 300, 400, 4)  # before the window: 300 sent before a subscriber existed
    final = snap(3000, 2690, 310, 1200, 8)
    w = window(final, base)
    assert (w["expected"], w["received"], w["lost"]) == (2000, 1990, 10)
    assert w["loss_ratio"] == pytest.approx(10 / 2000)
    assert w["totals"] == {"sent_packets": 800, "recv_packets": 1990}
    assert w["receive"] == {"streams": 8, "video_streams": 4, "packets": 1990}
    assert w["latency"] == {"count": 5}
    # In flight when it opened: more arrived than was counted sent in it, never a negative loss.
    assert window(snap(3000, 2710, 300, 1200, 8), snap(1000, 700, 310, 400, 4))["lost"] == 0
