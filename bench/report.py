"""Writes a bench result: the JSON, PNG plots, and a Markdown table for the README."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server

import matplotlib.pyplot as plt


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def _series(step: dict[str, Any], target: str, key: str) -> tuple[list[float], list[float]]:
    points = [(s["t"], s[key]) for s in step["series"][target] if s.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Over time (of the last step): egress pps, CPU, loss and p99 latency; the latency histogram; and for
    a ramp, egress and CPU per step. Returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = result["scenario"]["name"]
    steps = result["steps"]
    if not steps:
        return []
    written: list[Path] = []
    step = (
        steps[-1]
        if result.get("knee") is None
        else next((s for s in steps if s["conferences"] == result["knee"]["conferences"]), steps[-1])
    )

    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    for ax, key, label in zip(
        axes,
        ("egress_pps", "cpu_cores", "loss_pct", "latency_p99_us"),
        ("egress packets/s", "CPU (cores)", "loss (%)", "latency p99 (µs, cumulative)"),
        strict=True,
    ):
        peers = [(name, ":") for name in step["series"] if name not in ("bridge", "raw_relay")]
        for target, style in (("bridge", "-"), ("raw_relay", "--"), *peers):
            xs, ys = _series(step, target, key)
            if xs:
                ax.plot(xs, ys, style, label=target.replace("_", " "))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"{name}: {step['conferences']} conferences")
    fig.tight_layout()
    path = out_dir / f"{name}-timeline.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)

    histogram = step.get("latency_histogram_ns") or []
    if histogram:
        fig, ax = plt.subplots(figsize=(8, 4))
        uppers = [h[0] / 1000 for h in histogram]
        counts = [h[1] for h in histogram]
        ax.bar(range(len(counts)), counts)
        ticks = list(range(0, len(uppers), max(1, len(uppers) // 10)))
        ax.set_xticks(ticks, [f"{uppers[i]:.0f}" for i in ticks], rotation=45)
        ax.set_xlabel("added latency, bucket upper bound (µs)")
        ax.set_ylabel("packets")
        ax.set_yscale("log")
        ax.set_title(f"{name}: latency through the bridge")
        fig.tight_layout()
        path = out_dir / f"{name}-latency.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    if len(steps) > 1:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
        offered = [s["bridge"]["offered_egress_pps"] for s in steps]
        for target, style in (("bridge", "o-"), ("raw_relay", "s--")):
            rows = [s.get(target) for s in steps]
            if all(r is not None for r in rows):
                ax1.plot(offered, [r["egress_pps"] for r in rows], style, label=target.replace("_", " "))
                ax2.plot(offered, [r["cpu_cores"] for r in rows], style, label=target.replace("_", " "))
        ax1.set_ylabel("egress packets/s")
        ax2.set_ylabel("CPU (cores)")
        ax2.set_xlabel("offered egress packets/s")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{name}: ramp")
        fig.tight_layout()
        path = out_dir / f"{name}-ramp.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    if isinstance(value, int | float):
        return f"{value:,.0f}"
    return str(value)


def _feedback(fb: dict[str, Any] | None) -> str:
    """Receivers' transport-cc feedback packets, sequence numbers NACKed and recovered; senders' resends."""
    if not fb or not fb.get("enabled"):
        return "off"
    return (
        f"{_fmt(fb['transport_cc_sent'])} / {_fmt(fb['nack_seqs_sent'])} / {_fmt(fb['recovered'])} "
        f"/ {_fmt(fb['retransmits_sent'])}"
    )


def markdown(result: dict[str, Any]) -> str:
    """One row per step: the figures an operator sizes hardware with."""
    head = (
        "| scenario | conf | pub | sub | egress pps | payload MB/s | CPU cores | loadgen / other cores "
        "| µs/pkt | raw µs/pkt | ratio | loss % | p50 µs | p99 µs | p99.9 µs | raw p99 µs "
        "| p99 at socket µs | raw p99 at socket µs | UDP drops | seam/pkt | pkts/sendmmsg | pkts/recvmmsg "
        "| twcc fb / NACKed / recovered / resent "
        "| seq gaps / switches / freezes | filtered pps | videos / receiver |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for step in result["steps"]:
        b, r = step["bridge"], step.get("raw_relay") or {}
        drops = b["kernel_udp_drops"]
        rx = b.get("receive") or {}
        rows.append(
            f"| {result['scenario']['name']} | {b['conferences']} | {b['publishers']} | {b['subscribers']} "
            f"| {_fmt(b['egress_pps'])} | {_fmt(b['payload_bytes_per_s'] / 1e6, 2)} "
            f"| {_fmt(b['cpu_cores'], 2)} "
            f"| {_fmt(b['loadgen_cpu_cores'], 2)} / {_fmt(b.get('other_cpu_cores'), 2)} "
            f"| {_fmt(b['cpu_us_per_egress_packet'], 2)} | {_fmt(r.get('cpu_us_per_egress_packet'), 2)} "
            f"| {_fmt(step.get('cpu_per_packet_ratio'), 2)} | {_fmt(b['loss_pct'], 3)} "
            f"| {_fmt(b['latency_us']['p50'], 1)} | {_fmt(b['latency_us']['p99'], 1)} "
            f"| {_fmt(b['latency_us']['p999'], 1)} | {_fmt((r.get('latency_us') or {}).get('p99'), 1)} "
            f"| {_fmt((b.get('latency_at_socket_us') or {}).get('p99'), 1)} "
            f"| {_fmt((r.get('latency_at_socket_us') or {}).get('p99'), 1)} "
            f"| {drops['rcvbuf_errors'] + drops['sndbuf_errors']} "
            f"| {_fmt(b['seam_crossings_per_packet'], 5)} | {_fmt(b['packets_per_sendmmsg'], 1)} "
            f"| {_fmt(b['packets_per_recvmmsg'], 1)} "
            f"| {_feedback(b.get('feedback'))} "
            f"| {_fmt(rx.get('rtp_seq_gaps'))} / {_fmt(rx.get('layer_switches'))} "
            f"/ {_fmt(rx.get('freezes'))} | {_fmt(rx.get('filtered_pps'))} "
            f"| {_fmt(rx.get('video_streams_per_receiver'), 1)} |"
        )
    return head + "\n".join(rows) + "\n" + _turn_table(result) + side_by_side_table(result)


def side_by_side_table(result: dict[str, Any]) -> str:
    """With other SFUs (`--target`): every target per step by egress packets per CPU-second of its own
    process, with its loss and latency under the same load."""
    steps = [s for s in result["steps"] if s.get("side_by_side") or s.get("peers_skipped")]
    if not steps:
        return ""
    head = (
        "\n| scenario | conf | target | egress pps | CPU cores | egress pkts / CPU-s | Sluice x | loss % "
        "| p50 µs | p99 µs |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for step in steps:
        for name, t in (step.get("side_by_side") or {}).items():
            rows.append(
                f"| {result['scenario']['name']} | {step['conferences']} | {name} | {_fmt(t['egress_pps'])} "
                f"| {_fmt(t['cpu_cores'], 2)} | {_fmt(t['egress_packets_per_cpu_second'])} "
                f"| {_fmt(t.get('sluice_advantage'), 2)} | {_fmt(t['loss_pct'], 3)} "
                f"| {_fmt(t['latency_p50_us'], 1)} | {_fmt(t['latency_p99_us'], 1)} |"
            )
        for name, why in (step.get("peers_skipped") or {}).items():
            rows.append(
                f"| {result['scenario']['name']} | {step['conferences']} | {name} | not run: {why} |||||||"
            )
    return head + "\n".join(rows) + "\n"


def _turn_table(result: dict[str, Any]) -> str:
    """For a `[turn]` scenario: CPU per packet the load generator moved (µs), direct and through TURN."""
    steps = [step for step in result["steps"] if step.get("turn")]
    if not steps:
        return ""
    head = (
        "\n| through TURN | conf | relayed endpoints | loss % | p50 µs | p99 µs "
        "| µs/pkt loadgen | bridge | coturn | machine "
        "| direct: loadgen | bridge | machine | machine ratio |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for step in steps:
        t = step["turn"]
        r, d, rel = t["relayed"], t["cpu_us_per_packet"]["direct"], t["cpu_us_per_packet"]["relayed"]
        rows.append(
            f"| {result['scenario']['name']} | {r['conferences']} | {t['relayed_endpoints']} "
            f"| {_fmt(r['loss_pct'], 3)} | {_fmt(r['latency_us']['p50'], 1)} "
            f"| {_fmt(r['latency_us']['p99'], 1)} "
            f"| {_fmt(rel['loadgen'], 1)} | {_fmt(rel['target'], 1)} | {_fmt(rel['turn_server'], 1)} "
            f"| {_fmt(rel['machine'], 1)} | {_fmt(d['loadgen'], 1)} | {_fmt(d['target'], 1)} "
            f"| {_fmt(d['machine'], 1)} | {_fmt(t['machine_cpu_ratio'], 2)} |"
        )
    return head + "\n".join(rows) + "\n"
