"""`sluice` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import getpass
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import uvloop
from aiohttp import web

from bridge.app import BridgeApp, bound_port, url_host
from bridge.http import LOOPBACK_HOSTS, create_metrics_app, private_host_names
from bridge.settings import (
    ENVIRONMENT,
    MAX_SHARDS,
    MIN_TOKEN_LENGTH,
    Settings,
    SettingsError,
    load_settings,
    read_toml,
)
from signaling.focus import Focus, FocusConfig
from signaling.metrics import focus_families
from signaling.settings import SignalingSettings, SignalingSettingsError, signaling_settings
from signaling.turn import ManagedTurn, TurnConfig, TurnConfigError, rest_credentials
from signaling.xmpp.users import UserStore, UserStoreError, check_name
from sluice.coturn import Coturn, CoturnError
from sluice.logs import FORMATS, TEXT_FORMAT, log_format, setup_logging
from sluice.serve import ServeConfig, Served

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from bench.run import TurnServer

#: A bench scenario (a dataclass with a duration).
S = TypeVar("S", bound="DataclassInstance")

log = logging.getLogger("sluice")


async def _run_bridge(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with BridgeApp(settings) as app:
        bridge = app.bridge
        fingerprint = bridge.fingerprint
        print(f"sluice bridge: media on UDP {bridge.local_addresses()}", flush=True)
        print(f"sluice bridge: DTLS fingerprint {fingerprint.hash} {fingerprint.value}", flush=True)
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


def _scenario(args: argparse.Namespace, load: Callable[[str], S]) -> S | None:
    """The scenario file `load` reads, with --duration applied; None (the error said) if either is bad."""
    from bench.scenario import ScenarioError  # noqa: PLC0415

    try:
        scenario = load(args.scenario)
    except ScenarioError as exc:
        print(f"sluice bench: {exc}", file=sys.stderr)
        return None
    if args.duration is None:
        return scenario
    if not args.duration > 0:
        print("sluice bench: --duration must be positive", file=sys.stderr)
        return None
    return dataclasses.replace(scenario, duration=args.duration)


def _shard_count(text: str) -> int:
    count = int(text)
    if not 1 <= count <= MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"1..{MAX_SHARDS}")
    return count


def _bench(args: argparse.Namespace) -> int:
    # Imported here: the bench pulls in matplotlib, which `sluice bridge` does not need.
    from bench.report import markdown, plot, write_json  # noqa: PLC0415
    from bench.run import BenchError, run_bench  # noqa: PLC0415
    from bench.scenario import load_scenario  # noqa: PLC0415

    scenario = _scenario(args, load_scenario)
    if scenario is None:
        return 2
    if args.threads < 1:
        print("sluice bench: --threads must be at least 1", file=sys.stderr)
        return 2

    def progress(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    async def run() -> dict[str, object]:
        async with contextlib.AsyncExitStack() as stack:
            turn = None
            if scenario.turn is not None:
                turn = await stack.enter_async_context(_bench_coturn(args.url))
            return await run_bench(
                scenario,
                url=args.url,
                pid=args.pid,
                raw=not args.no_raw,
                threads=args.threads,
                pin=not args.no_pin,
                progress=progress,
                turn=turn,
                gso=not args.no_gso,
                shards=args.shards,
                peers=args.target,
            )

    try:
        result = uvloop.run(run())
    except (CoturnError, TurnConfigError) as exc:
        print(f"sluice bench: {exc}", file=sys.stderr)
        return 2
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


@contextlib.asynccontextmanager
async def _bench_coturn(url: str | None) -> AsyncIterator[TurnServer]:
    """A coturn for a scenario's `[turn]` endpoints, on loopback, relaying only to the bridge (the one the
    bench starts on loopback, or the host of `url`), with TURN REST credentials for the load generator;
    stopped by PID afterwards."""
    from bench.run import TurnServer  # noqa: PLC0415

    host = "127.0.0.1"
    peer = host if url is None else (urllib.parse.urlsplit(url).hostname or host)
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    secret = secrets.token_urlsafe(24)
    coturn = Coturn(
        TurnConfig(secret=secret, hosts=(host,), port=port),
        ManagedTurn(listen=(host,)),
        realm="sluice-bench",
        peers=(peer,),
    )
    await coturn.start()
    try:
        username, password = rest_credentials(secret, "loadgen", int(time.time()) + 3600)
        yield TurnServer(host, port, username, password, coturn.pid)
    finally:
        await coturn.stop()


def _bench_impaired(args: argparse.Namespace) -> int:
    """An impairment scenario (an `[impair]` table): Chromium receivers behind the relay, a QoE scorecard."""
    from bench.qoe_run import load_impair_scenario, run_impaired, write_results  # noqa: PLC0415
    from bench.run import BenchError  # noqa: PLC0415

    scenario = _scenario(args, load_impair_scenario)
    if scenario is None:
        return 2

    def progress(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    try:
        result, samples, card = uvloop.run(run_impaired(scenario, progress=progress))
    except BenchError as exc:
        print(f"sluice bench: {exc}", file=sys.stderr)
        return 2
    paths = write_results(result, samples, card, Path(args.out))
    print(paths[2].read_text())
    print(f"results: {', '.join(str(p) for p in paths)}")
    if not result["passed"]:
        failed = ", ".join(k for k, ok in card.passed.items() if not ok)
        print(f"sluice bench: {scenario.name} failed its criteria: {failed}", file=sys.stderr)
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
    _log_flag(b)
    bench = sub.add_parser(
        "bench",
        help="run a load scenario against a bridge and the raw relay baseline",
        description="Run a scenario file (bench/scenarios/*.toml) with emulated endpoints speaking ICE, "
        "DTLS-SRTP and RTP, against a bridge started here (or --url) and against the raw relay. Writes "
        "<out>/<name>.json, PNG plots and a Markdown table; exits 1 if the bridge lost more than the "
        "scenario's loss-limit (or its median latency was above median-latency-limit). A scenario with an "
        "[impair] table (bench/scenarios/impair-*.toml, needs root "
        "and Chromium) instead runs `sluice serve` with Chromium senders and a Chromium receiver behind the "
        "impairment relay and writes its QoE scorecard (docs/bench.md); exits 1 if a criterion failed.",
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
    bench.add_argument(
        "--no-pin",
        action="store_true",
        help="let the kernel place every thread (default: a bridge started here and the raw relay run on the "
        "last CPU, the load generator on the others)",
    )
    bench.add_argument(
        "--shards",
        type=_shard_count,
        default=1,
        help="shards of the bridge started here (default 1, pinned; more are placed by the kernel)",
    )
    bench.add_argument(
        "--target",
        action="append",
        default=[],
        choices=("janus", "livekit"),
        help="also run every step through this SFU, side by side with Sluice (repeatable, needs root: each "
        "runs in a network namespace; janus: Debian's Janus VideoRoom; livekit: LiveKit server "
        "v1.13.5, built with `go install` on first use)",
    )
    bench.add_argument(
        "--no-gso",
        action="store_true",
        help="start the bridge with [videobridge.shard] gso = false, to compare with UDP GSO",
    )
    serve = sub.add_parser(
        "serve",
        help="the whole system in one process: XMPP server, focus, bridge and web client",
        description="Run the embedded XMPP server, the focus, a bridge and the web client in one process "
        "and print the URL to open. The bridge's settings come from --config like `sluice bridge`.",
    )
    serve.add_argument("--config", metavar="FILE", default=None, help="bridge TOML settings file")
    serve.add_argument("--host", default="0.0.0.0", help="web HTTP address (default 0.0.0.0)")
    serve.add_argument("--http-port", type=int, default=8000, help="web HTTP port (default 8000)")
    serve.add_argument("--port", type=int, default=None, help="UDP media port (default 10000)")
    serve.add_argument("--domain", default="meet.sluice", help="XMPP base domain (default meet.sluice)")
    serve.add_argument(
        "--xmpp-port", type=int, default=5222, help="c2s port of the embedded XMPP server on 127.0.0.1"
    )
    serve.add_argument(
        "--no-colibri-ws",
        dest="colibri_ws",
        action="store_false",
        help="no bridge channel (colibri-ws) on the web port: clients then send no layout to the bridge",
    )
    _log_flag(serve)
    focus = sub.add_parser(
        "focus",
        help="run the focus alone against an XMPP server (Prosody in production)",
        description="Log in as focus@auth.<domain>/focus, answer conference requests on focus.<domain>, "
        "and allocate conferences on the bridges of the brewery. The password comes from "
        "SLUICE_FOCUS_PASSWORD.",
    )
    focus.add_argument("--xmpp-host", default="127.0.0.1")
    focus.add_argument("--xmpp-port", type=int, default=5222)
    focus.add_argument("--domain", required=True, help="XMPP base domain, e.g. meet.example.org")
    focus.add_argument("--username", default="focus")
    focus.add_argument("--brewery", default=None, help="default: jvbbrewery@internal.auth.<domain>")
    focus.add_argument("--no-tls", action="store_true", help="plain c2s (loopback only)")
    focus.add_argument("--insecure", action="store_true", help="do not verify the XMPP server's certificate")
    focus.add_argument(
        "--config", metavar="FILE", default=None, help="settings file; its [signaling.focus] table is read"
    )
    focus.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics of the focus on this port (default: none); a bearer token from "
        "SLUICE_FOCUS_METRICS_TOKEN is then required when set",
    )
    focus.add_argument("--metrics-host", default="127.0.0.1", help="address of /metrics (default 127.0.0.1)")
    _log_flag(focus)
    user = sub.add_parser(
        "user",
        help="manage user accounts on auth.<domain> (who may start meetings on a secure domain)",
        description="Add, remove or list the user accounts of the users file (JSON, mode 0600, SCRAM "
        "credentials only: the password is never stored). The file is [signaling.auth] users-file of "
        "--config, or --file. A running `sluice serve` re-reads it on the next login.",
    )
    user.add_argument("action", choices=("add", "remove", "list"))
    user.add_argument(
        "name", nargs="?", help="user name (add, remove): the local part of <name>@auth.<domain>"
    )
    where = user.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="FILE", help="settings file naming [signaling.auth] users-file")
    where.add_argument("--file", metavar="PATH", help="the users file itself")
    user.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin (add)"
    )
    args = parser.parse_args(argv)
    if args.command == "user":
        return _user(args, parser)
    if not _setup_logging(args):
        return 2
    if args.command == "bridge":
        return _bridge(args, parser)
    if args.command == "bench":
        from bench.qoe_run import is_impair_scenario  # noqa: PLC0415

        return _bench_impaired(args) if is_impair_scenario(args.scenario) else _bench(args)
    if args.command == "focus":
        return _focus(args)
    return _serve(args, parser)


def _bridge(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
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


def _setup_logging(args: argparse.Namespace) -> bool:
    """Text lines for the bench; the flag's or the file's format for the rest. False: the error was said."""
    if args.command == "bench":
        logging.basicConfig(level=logging.INFO, format=TEXT_FORMAT)
        return True
    try:
        doc = read_toml(args.config) if args.config is not None else {}
        setup_logging(log_format(doc, args.log_format))
    except (SettingsError, ValueError) as exc:
        print(f"sluice {args.command}: {exc}", file=sys.stderr)
        return False
    return True


def _log_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help="text lines, or one JSON object per line with conference and endpoint ids "
        "(default: [logging] format of --config, else text)",
    )


def _signaling(path: str | None) -> SignalingSettings:
    """The file's `[signaling.*]` tables (none: defaults); raises SettingsError or SignalingSettingsError."""
    if path is None:
        return SignalingSettings()
    return signaling_settings(read_toml(path), Path(path).resolve().parent)


def _user(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`sluice user add|remove|list`: exit 0 done, 1 nothing to do (no such user), 2 refused."""
    try:
        path = _users_file(args)
    except (SettingsError, SignalingSettingsError) as exc:
        print(f"sluice user: {exc}", file=sys.stderr)
        return 2
    if args.action != "list" and not args.name:
        parser.error(f"sluice user {args.action} needs a user name")
    store = UserStore(path)
    try:
        store.load()
        if args.action == "list":
            for name in store.names():
                print(name)
            return 0
        if args.action == "remove":
            if not store.remove(args.name):
                print(f"sluice user: no user {args.name!r} in {path}", file=sys.stderr)
                return 1
            print(f"sluice user: removed {args.name}")
            return 0
        check_name(args.name)
        password = _read_password(args.password_stdin)
        new = store.add(args.name, password)
    except UserStoreError as exc:
        print(f"sluice user: {exc}", file=sys.stderr)
        return 2
    print(f"sluice user: {'added' if new else 'changed the password of'} {args.name} in {path}")
    return 0


def _users_file(args: argparse.Namespace) -> str:
    if args.config is None:
        return str(args.file)
    path = _signaling(args.config).auth.users_file
    if path is None:
        raise SignalingSettingsError(f"{args.config} has no [signaling.auth] users-file")
    return path


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise UserStoreError("the passwords differ")
    return first


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        bridge = load_settings(args.config)
        signaling = _signaling(args.config)
    except (SettingsError, SignalingSettingsError) as exc:
        print(f"sluice serve: {exc}", file=sys.stderr)
        return 2
    for flag, port in (
        ("--http-port", args.http_port),
        ("--xmpp-port", args.xmpp_port),
        ("--port", args.port),
    ):
        if port is not None and not 0 <= port <= 65535:
            parser.error(f"{flag} {port}: a port is 0..65535")
    if args.port is not None:
        bridge = dataclasses.replace(bridge, udp_port=args.port)
    config = ServeConfig(
        domain=args.domain,
        http_host=args.host,
        http_port=args.http_port,
        xmpp_port=args.xmpp_port,
        bridge=bridge,
        signaling=signaling,
        colibri_ws=args.colibri_ws,
    )
    try:
        uvloop.run(_run_served(config))
    except (OSError, FileNotFoundError, UserStoreError) as exc:
        print(f"sluice serve: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run_served(config: ServeConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Served(config) as served:
        assert served.bridge is not None
        print(f"sluice serve: media on UDP {served.bridge.bridge.local_addresses()}", flush=True)
        print(f"sluice serve: XMPP c2s on {config.xmpp_host}:{served.xmpp.tcp_port}", flush=True)
        if served.colibri_ws is not None:
            print(f"sluice serve: bridge channel at {served.colibri_ws}/...", flush=True)
        if served.turn is not None:
            hosts = ", ".join(served.turn.hosts)
            print(
                f"sluice serve: STUN/TURN for clients (XEP-0215) on {hosts} port {served.turn.port}",
                flush=True,
            )
        if served.coturn is not None:
            print(f"sluice serve: {served.coturn.describe()}", flush=True)
        print(f"sluice serve: open {served.url}", flush=True)
        gc.freeze()
        await stop.wait()
        log.info("sluice serve: stopping (signal)")


def _focus(args: argparse.Namespace) -> int:
    password = os.environ.get("SLUICE_FOCUS_PASSWORD", "")
    if not password:
        print("sluice focus: set SLUICE_FOCUS_PASSWORD to the focus account's password", file=sys.stderr)
        return 2
    try:
        signaling = _signaling(args.config)
    except (SettingsError, SignalingSettingsError) as exc:
        print(f"sluice focus: {exc}", file=sys.stderr)
        return 2
    config = signaling.focus_config(
        FocusConfig(
            xmpp_host=args.xmpp_host,
            xmpp_port=args.xmpp_port,
            domain=args.domain,
            username=args.username,
            password=password,
            brewery=args.brewery,
            use_tls=not args.no_tls,
            disable_certificate_verification=args.insecure,
        )
    )

    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        print(f"sluice focus: --metrics-port {args.metrics_port}: a port is 0..65535", file=sys.stderr)
        return 2
    metrics_token = os.environ.get("SLUICE_FOCUS_METRICS_TOKEN") or None
    if metrics_token is not None and len(metrics_token) < MIN_TOKEN_LENGTH:
        print(
            f"sluice focus: SLUICE_FOCUS_METRICS_TOKEN needs at least {MIN_TOKEN_LENGTH} characters",
            file=sys.stderr,
        )
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Focus(config) as focus:
            print(
                f"sluice focus: {config.focus_full_jid} on {config.xmpp_host}:{config.xmpp_port}", flush=True
            )
            runner = None
            if args.metrics_port is not None:
                runner, port = await _focus_metrics(
                    focus, args.metrics_host, args.metrics_port, metrics_token
                )
                print(
                    f"sluice focus: metrics on http://{url_host(args.metrics_host)}:{port}/metrics",
                    flush=True,
                )
            try:
                await stop.wait()
            finally:
                if runner is not None:
                    await runner.cleanup()

    uvloop.run(run())
    return 0


async def _focus_metrics(focus: Focus, host: str, port: int, token: str | None) -> tuple[web.AppRunner, int]:
    """The standalone focus's /metrics, behind the private API's guard (loopback names and the host)."""
    app = create_metrics_app(
        lambda: focus_families(focus.core.stats, focus.core.gauges()),
        allowed_hosts=private_host_names(LOOPBACK_HOSTS, host),
        token=token,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, bound_port(site, port)


if __name__ == "__main__":
    sys.exit(main())
