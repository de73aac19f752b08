"""`sluice` command line."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import signal
import sys
from pathlib import Path

import uvloop

from bridge.app import BridgeApp
from bridge.settings import ENVIRONMENT, Settings, SettingsError, load_settings

log = logging.getLogger("sluice")


async def _run_bridge(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with BridgeApp(settings) as app:
        bridge = app.bridge
        hash_name, value = bridge.fingerprint
        print(f"sluice bridge: media on UDP {bridge.local_addresses()}", flush=True)
        print(f"sluice bridge: DTLS fingerprint {hash_name} {value}", flush=True)
        if app.http_port is not None:
            print(f"sluice bridge: private HTTP API on port {app.http_port}", flush=True)
        if app.public_http_port is not None:
            bases = ", ".join(app.colibri2.web_socket_bases)
            print(f"sluice bridge: colibri websockets on port {app.public_http_port} as {bases}", flush=True)
        for client in app.xmpp:
            rooms = ", ".join(client.occupant_jid(room) for room in client.config.muc_jids)
            print(f"sluice bridge: XMPP {client.config.hostname}:{client.config.port} as {rooms}", flush=True)
        # Startup objects (modules, settings, the app) live until exit: freezing them keeps every later
        # full collection from walking them again (it was ~5 % of the process's CPU under load in perf).
        gc.freeze()
        finished = app.lifecycle.finished
        while not (stop.is_set() or finished.is_set()):
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(finished.wait())]
            await asyncio.wait(waits, timeout=settings.stats_interval, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if not (stop.is_set() or finished.is_set()):
                stats = await bridge.get_stats()
                log.info("stats %s", json.dumps({k: stats[k] for k in ("total", "failures", "io")}))
        log.info("sluice bridge: stopping (%s)", "shutdown finished" if finished.is_set() else "signal")


def _bench(args: argparse.Namespace) -> int:
    # Imported here: the bench pulls in matplotlib, which `sluice bridge` does not need.
    from bench.report import markdown, plot, write_json  # noqa: PLC0415
    from bench.run import BenchError, run_bench  # noqa: PLC0415
    from bench.scenario import ScenarioError, load_scenario  # noqa: PLC0415

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"sluice bench: {exc}", file=sys.stderr)
        return 2
    if args.duration is not None:
        if not args.duration > 0:
            print("sluice bench: --duration must be positive", file=sys.stderr)
            return 2
        scenario = dataclasses.replace(scenario, duration=args.duration)
    if args.threads < 1:
        print("sluice bench: --threads must be at least 1", file=sys.stderr)
        return 2

    def progress(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    try:
        result = uvloop.run(
            run_bench(
                scenario,
                url=args.url,
                pid=args.pid,
                raw=not args.no_raw,
                threads=args.threads,
                progress=progress,
            )
        )
    except BenchError as exc:
        print(f"sluice bench: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    write_json(result, out / f"{scenario.name}.json")
    plots = plot(result, out)
    table = markdown(result)
    (out / f"{scenario.name}.md").write_text(table)
    print(table)
    print(f"results: {out / f'{scenario.name}.json'}; plots: {', '.join(str(p) for p in plots)}")
    if not result["passed"]:
        print(
            f"sluice bench: loss above the scenario's limit of {scenario.loss_limit_pct} %", file=sys.stderr
        )
        return 1
    return 0


def _environment_help() -> str:
    lines = ["environment variables (override the file; SLUICE_XMPP_* apply to every XMPP config):"]
    lines += [f"  {var:46} {key}" for var, key in ENVIRONMENT.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice video conferencing")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "bridge",
        help="run the media bridge (native packet path, Colibri2 over XMPP or HTTP, colibri websockets)",
        description="Run the media bridge. Settings come from --config (see docs/bridge.example.toml), "
        "then SLUICE_* environment variables, then the flags below.",
        epilog=_environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML settings file (jvb.conf key names); default: none",
    )
    b.add_argument(
        "--port", type=int, default=None, help="shared UDP media port; overrides videobridge.ice.udp.port"
    )
    b.add_argument(
        "--bind",
        action="append",
        default=None,
        metavar="ADDRESS",
        help="local address to bind the UDP port on (repeatable); overrides "
        "videobridge.ice.udp.bind-addresses",
    )
    b.add_argument(
        "--stats-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between stats logs and brewery presences; overrides videobridge.stats.interval",
    )
    bench = sub.add_parser(
        "bench",
        help="run a load scenario against a bridge and the raw relay baseline",
        description="Run a scenario file (bench/scenarios/*.toml) with emulated endpoints speaking ICE, "
        "DTLS-SRTP and RTP, against a bridge started here (or --url) and against the raw relay. Writes "
        "<out>/<name>.json, PNG plots and a Markdown table; exits 1 if the bridge lost more than the "
        "scenario's loss-limit.",
    )
    bench.add_argument("scenario", metavar="SCENARIO", help="scenario TOML file")
    bench.add_argument(
        "--url", default=None, help="private HTTP API of a running bridge (default: start one here)"
    )
    bench.add_argument("--pid", type=int, default=None, help="PID of the bridge at --url, for its CPU time")
    bench.add_argument("--out", default="bench/results", metavar="DIR", help="where results go")
    bench.add_argument("--no-raw", action="store_true", help="skip the raw relay baseline")
    bench.add_argument(
        "--threads", type=int, default=1, help="load generator threads (default 1, for a 2-core machine)"
    )
    bench.add_argument("--duration", type=float, default=None, help="override the scenario's duration (s)")
    sub.add_parser("serve", help="the all-in-one server (not built yet: see the README)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "bridge":
        try:
            settings = load_settings(args.config)
        except SettingsError as exc:
            print(f"sluice bridge: {exc}", file=sys.stderr)
            return 2
        overrides: dict[str, object] = {}
        if args.port is not None:
            if not 0 <= args.port <= 65535:
                parser.error(f"--port {args.port}: a port is 0..65535")
            overrides["udp_port"] = args.port
        if args.bind:
            overrides["bind_addresses"] = tuple(args.bind)
        if args.stats_interval is not None:
            if not args.stats_interval > 0:
                parser.error(f"--stats-interval {args.stats_interval}: must be positive")
            overrides["stats_interval"] = args.stats_interval
        settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
        uvloop.run(_run_bridge(settings))
        return 0
    if args.command == "bench":
        return _bench(args)
    print(
        "sluice serve: the embedded XMPP server, focus and web client are not built yet; "
        "`sluice bridge` runs the media bridge alone.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
