"""`sluice serve`: the whole system in one process, on its embedded defaults.

The embedded XMPP server (signaling.xmpp), the focus (signaling.focus), one bridge (BridgeApp) and the web
client (signaling.web) share one event loop, but still talk to each other as separate deployments do: focus
and bridge log in to the XMPP server over c2s on loopback with accounts made up at start, the bridge joins
the brewery, and the focus allocates on it with Colibri2. Browsers reach the web page and XMPP over
WebSocket on one HTTP port; media goes to the bridge's UDP port.

Only the sluice package imports both halves: signaling never imports bridge, nor bridge signaling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridge.app import BridgeApp
from bridge.settings import Settings, XmppSettings
from signaling.focus import Focus, FocusConfig
from signaling.settings import SignalingSettings
from signaling.web import create_web_app
from signaling.xmpp import XmppServer, XmppServerConfig

log = logging.getLogger("sluice.serve")

BRIDGE_USER = "jvb"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    domain: str = "meet.sluice"
    http_host: str = "0.0.0.0"
    #: 0: an ephemeral port (tests); read back as `Served.http_port`.
    http_port: int = 8000
    #: c2s for focus and bridge (and any other XMPP client); loopback unless asked otherwise.
    xmpp_host: str = "127.0.0.1"
    xmpp_port: int = 5222
    #: The bridge's own settings (UDP port, addresses, private API, expiry ...); XMPP is filled in here.
    bridge: Settings = dataclasses.field(default_factory=Settings)
    #: The focus's policy and the XMPP server's limits (quotas), from the file's `[signaling.*]` tables.
    signaling: SignalingSettings = dataclasses.field(default_factory=SignalingSettings)


class Served:
    """Everything `sluice serve` runs; `async with Served(config) as s:` starts and stops it in order."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        focus_password = secrets.token_urlsafe(24)
        bridge_password = secrets.token_urlsafe(24)
        self.xmpp_config = XmppServerConfig(
            domain=config.domain,
            accounts={
                f"focus@auth.{config.domain}": focus_password,
                f"{BRIDGE_USER}@auth.{config.domain}": bridge_password,
            },
            components=(f"{BRIDGE_USER}@auth.{config.domain}",),
            tcp_host=config.xmpp_host,
            tcp_port=config.xmpp_port,
            limits=config.signaling.xmpp_limits_config(),
        )
        self.xmpp = XmppServer(self.xmpp_config)
        self._focus_password = focus_password
        self._bridge_password = bridge_password
        self.focus: Focus | None = None
        self.bridge: BridgeApp | None = None
        self.http_port: int | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = self.config.http_host
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        return f"http://{host}:{self.http_port}/"

    async def start(self) -> None:
        cfg = self.config
        try:
            await self.xmpp.start()
            xmpp_host = "127.0.0.1" if cfg.xmpp_host in ("0.0.0.0", "") else cfg.xmpp_host
            bridge_settings = dataclasses.replace(
                cfg.bridge,
                advertised_addresses=cfg.bridge.advertised_addresses or default_advertised(cfg.bridge),
                xmpp=(
                    XmppSettings(
                        name="embedded",
                        hostname=xmpp_host,
                        port=self.xmpp.tcp_port,
                        domain=self.xmpp_config.auth_domain,
                        username=BRIDGE_USER,
                        password=self._bridge_password,
                        muc_jids=(self.xmpp_config.brewery_jid,),
                        use_tls=False,
                    ),
                ),
            )
            self.bridge = BridgeApp(bridge_settings, extra_metrics=self.signaling_metrics)
            await self.bridge.start()
            await self.bridge.wait_joined()
            self.focus = Focus(
                cfg.signaling.focus_config(
                    FocusConfig(
                        xmpp_host=xmpp_host,
                        xmpp_port=self.xmpp.tcp_port,
                        domain=cfg.domain,
                        password=self._focus_password,
                        use_tls=False,
                    )
                )
            )
            await self.focus.start()
            await self.focus.wait_ready()
            app = create_web_app(cfg.domain, self.xmpp.websocket_handler)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            # Bound here rather than by TCPSite, so the real port is known when 0 was asked for.
            sock = socket.create_server((cfg.http_host, cfg.http_port), reuse_port=False)
            self.http_port = int(sock.getsockname()[1])
            await web.SockSite(self._runner, sock).start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Web first (no new joins), then the focus (clients see it leave), the bridge, the server."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.focus is not None:
            with contextlib.suppress(Exception):
                await self.focus.stop()
            self.focus = None
        if self.bridge is not None:
            await self.bridge.stop()
            self.bridge = None
        await self.xmpp.stop()

    def signaling_metrics(self) -> Iterator[Metric]:
        """The XMPP server's and the focus's counters and gauges, for the bridge's private `/metrics`."""
        xmpp = self.xmpp.stats()
        yield from _families("xmpp", xmpp, XMPP_GAUGES)
        if self.focus is not None:
            focus: dict[str, int] = dict(self.focus.core.stats)
            focus["rooms"] = len(self.focus.core.rooms)
            focus["bridges"] = len(self.focus.core.bridges)
            yield from _families("focus", focus, ("rooms", "bridges"))

    async def __aenter__(self) -> Served:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


#: XmppServer.stats() keys that are current values, not counts since start.
XMPP_GAUGES = ("connections", "sessions", "rooms", "occupants", "send_queue_bytes", "send_queue_peak_bytes")


def _families(component: str, stats: Mapping[str, int], gauges: tuple[str, ...]) -> Iterator[Metric]:
    """`sluice_<component>_<gauge>` for each gauge and `sluice_<component>_events_total{event}` for the rest
    (refusals, quotas, joins ...: the names docs/security.md lists)."""
    for name in gauges:
        yield GaugeMetricFamily(
            f"sluice_{component}_{name}", f"{component}: {name} now", value=stats.get(name, 0)
        )
    events = CounterMetricFamily(
        f"sluice_{component}_events", f"{component}: events since start, by name", labels=["event"]
    )
    for name, value in sorted(stats.items()):
        if name not in gauges:
            events.add_metric([name], value)
    yield events


def default_advertised(settings: Settings) -> tuple[str, ...]:
    """Candidates other machines on the network can reach, not just loopback, when the media port is bound to
    the wildcard and nothing was configured: this host's primary IPv4 address (the source address of its
    default route) and loopback. An explicit `advertised-addresses` always wins."""
    if "0.0.0.0" not in settings.bind_addresses:
        return ()
    out = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: connect() only picks a route, nothing is sent
        primary = str(probe.getsockname()[0])
        if primary != "0.0.0.0" and not primary.startswith("127."):
            out.append(primary)
    out.append("127.0.0.1")
    return tuple(out)
