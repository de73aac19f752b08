"""`sluice` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

import uvloop

from bridge.bridge import Bridge
from bridge.config import BridgeConfig

log = logging.getLogger("sluice")


async def _run_bridge(config: BridgeConfig, stats_interval: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Bridge(config) as bridge:
        hash_name, value = bridge.fingerprint
        print(f"sluice bridge: media on UDP {bridge.local_addresses()}", flush=True)
        print(f"sluice bridge: DTLS fingerprint {hash_name} {value}", flush=True)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), stats_interval)
            except TimeoutError:
                stats = await bridge.get_stats()
                log.info("stats %s", json.dumps({k: stats[k] for k in ("total", "failures", "io")}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice video conferencing")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bridge", help="run the media bridge (native packet path)")
    b.add_argument("--port", type=int, default=10000, help="shared UDP media port (default 10000)")
    b.add_argument(
        "--bind", action="append", default=None, help="local address to bind (repeatable; default 0.0.0.0)"
    )
    b.add_argument("--stats-interval", type=float, default=5.0, help="seconds between stats logs")
    sub.add_parser("serve", help="the all-in-one server (not built yet: see the README)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "bridge":
        config = BridgeConfig(udp_port=args.port, bind_addresses=args.bind or ["0.0.0.0"])
        uvloop.run(_run_bridge(config, args.stats_interval))
        return 0
    print(
        "sluice serve: the embedded XMPP server, focus and web client are not built yet; "
        "`sluice bridge` runs the media bridge alone.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
