"""`sluice serve`: the whole system in one process, on its embedded defaults.

The embedded XMPP server (signaling.xmpp), the focus (signaling.focus), one bridge (BridgeApp) and the web
client (signaling.web) share one event loop, but still talk to each other as separate deployments do: focus
and bridge log in to the XMPP server over c2s on loopback with accounts made up at start, the bridge joins
the brewery, and the focus allocates on it with Colibri2. Browsers reach the web page, XMPP over WebSocket
and the bridge channel (colibri-ws, on unless `colibri_ws` is off) on one HTTP port; media goes to the
bridge's UDP port. The bridge's own public HTTP server is not started: its one route rides on the web port.

Only the sluice package imports both halves: signaling never imports bridge, nor bridge signaling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.metrics_core import Metric

from bridge.admin import AdminBridge, AdminParticipant, AdminRoom
from bridge.app import BridgeApp, url_host
from bridge.settings import Settings, XmppSettings
from signaling.focus import Focus, FocusConfig
from signaling.focus.core import FocusCore
from signaling.focus.stanzas import resource
from signaling.metrics import focus_families, xmpp_families
from signaling.settings import SignalingSettings
from signaling.turn import TurnConfig
from signaling.web import create_web_app
from signaling.xmpp import XmppServer, XmppServerConfig
from sluice.coturn import Coturn, bridge_peers

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
    #: The bridge channel over colibri-ws on the web port (each session-initiate carries its
    #: `<web-socket url>`); the bridge's `[videobridge.websockets]` server-id, domains, tls, compression
    #: and keepalive apply. Off: clients get no bridge channel (no layouts, the bridge's default layers).
    colibri_ws: bool = True


class Served:
    """Everything `sluice serve` runs; `async with Served(config) as s:` starts and stops it in order."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        focus_password = secrets.token_urlsafe(24)
        bridge_password = secrets.token_urlsafe(24)
        #: The addresses browsers get for media (computed once: the bridge, TURN and coturn agree on them).
        self.media_addresses = config.bridge.advertised_addresses or default_advertised(config.bridge)
        media = self.media_addresses or tuple(
            a for a in config.bridge.bind_addresses if a not in ("0.0.0.0", "::")
        )
        self.turn: TurnConfig | None = None
        #: The coturn `sluice serve` runs (`[signaling.turn] managed = true`), started first, stopped last.
        self.coturn: Coturn | None = None
        turn = config.signaling.turn
        if turn is not None:
            self.turn = turn.turn_config(bridge_peers(media) or media)
            if turn.managed is not None:
                managed = turn.managed
                if not managed.listen:
                    managed = dataclasses.replace(managed, listen=bridge_peers(self.turn.hosts))
                self.coturn = Coturn(
                    self.turn, managed, realm=config.domain,
                    peers=bridge_peers((*media, *config.bridge.bind_addresses)),
                )  # fmt: skip
        self.xmpp_config = config.signaling.xmpp_auth(
            XmppServerConfig(
                domain=config.domain,
                accounts={
                    f"focus@auth.{config.domain}": focus_password,
                    f"{BRIDGE_USER}@auth.{config.domain}": bridge_password,
                },
                components=(f"{BRIDGE_USER}@auth.{config.domain}",),
                tcp_host=config.xmpp_host,
                tcp_port=config.xmpp_port,
                turn=self.turn,
                limits=config.signaling.xmpp_limits_config(),
            )
        )
        self.xmpp = XmppServer(self.xmpp_config)
        self._focus_password = focus_password
        self._bridge_password = bridge_password
        self.focus: Focus | None = None
        self.bridge: BridgeApp | None = None
        self.http_port: int | None = None
        #: The colibri-ws URL base endpoints are told (None while stopped or with colibri_ws off).
        self.colibri_ws: str | None = None
        self._runner: web.AppRunner | None = None
        self._listen: socket.socket | None = None

    @property
    def url(self) -> str:
        host = self.config.http_host
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        return f"http://{host}:{self.http_port}/"

    async def start(self) -> None:
        cfg = self.config
        try:
            if self.coturn is not None:
                await self.coturn.start()
            await self.xmpp.start()
            # Bound first, so the real port is known (0 asked for) before the bridge advertises the
            # colibri-ws URL on it; nothing is served until the site starts below.
            self._listen = socket.create_server((cfg.http_host, cfg.http_port), reuse_port=False)
            self.http_port = int(self._listen.getsockname()[1])
            focus_policy = cfg.signaling.focus_config(FocusConfig())
            app = create_web_app(
                cfg.domain,
                self.xmpp.websocket_handler,
                login=self.xmpp_config.secure_domain,
                opus_red=focus_policy.enable_opus_red,
                e2ee=cfg.signaling.web_e2ee,
                ice_restart=focus_policy.enable_ice_restart,
            )
            xmpp_host = "127.0.0.1" if cfg.xmpp_host in ("0.0.0.0", "") else cfg.xmpp_host
            bridge_settings = dataclasses.replace(
                cfg.bridge,
                # The web port carries the colibri websockets; the bridge opens no public server of its own.
                public_http_port=-1 if cfg.colibri_ws else cfg.bridge.public_http_port,
                advertised_addresses=self.media_addresses,
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
            self.bridge = BridgeApp(bridge_settings, extra_metrics=self.signaling_metrics, operator=self)
            if cfg.colibri_ws:
                domain = colibri_ws_domain(cfg.http_host, bridge_settings, self.http_port)
                self.bridge.host_web_sockets(app, domain)
                self.colibri_ws = self.bridge.colibri2.web_socket_bases[0]
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
                        owner_needs_login=self.xmpp_config.secure_domain,
                    )
                )
            )
            await self.focus.start()
            await self.focus.wait_ready()
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            sock, self._listen = self._listen, None
            await web.SockSite(self._runner, sock).start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Web first (no new joins; the colibri websockets close), then the focus (clients see it leave), the
        bridge, the server."""
        if self._listen is not None:
            self._listen.close()
            self._listen = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.colibri_ws = None
        if self.focus is not None:
            with contextlib.suppress(Exception):
                await self.focus.stop()
            self.focus = None
        if self.bridge is not None:
            await self.bridge.stop()
            self.bridge = None
        await self.xmpp.stop()
        if self.coturn is not None:
            await self.coturn.stop()

    def signaling_metrics(self) -> Iterator[Metric]:
        """The XMPP server's and the focus's families (signaling/metrics.py), for the bridge's private
        `/metrics`: one scrape has all three components."""
        yield from xmpp_families(self.xmpp.stats())
        if self.focus is not None:
            yield from focus_families(self.focus.core.stats, self.focus.core.gauges())

    # ---- the admin page's operator (bridge/admin.py `Operator`): the focus's rooms, bridges and actions

    def rooms(self) -> list[AdminRoom]:
        return admin_rooms(self.focus.core if self.focus is not None else None)

    def bridges(self) -> list[AdminBridge]:
        return admin_bridges(self.focus.core if self.focus is not None else None)

    def end_meeting(self, room: str) -> bool:
        return self.focus is not None and self.focus.end_meeting(room, "The meeting was ended by an operator")

    def kick(self, room: str, nick: str) -> bool:
        return self.focus is not None and self.focus.kick(room, nick, "Removed by an operator")

    async def __aenter__(self) -> Served:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def admin_rooms(core: FocusCore | None) -> list[AdminRoom]:
    """The focus's rooms as the admin page shows them (`sluice focus` has no page; `sluice serve` does)."""
    if core is None:
        return []
    return [
        AdminRoom(
            room=room.jid,
            meeting_id=room.meeting_id,
            bridge=resource(room.bridge) if room.bridge is not None else None,
            participants=tuple(
                AdminParticipant(
                    nick=p.nick,
                    name=p.display_name,
                    endpoint=p.nick if p.endpoint == "allocated" else None,
                    moderator=p.role == "moderator" or p.affiliation in ("owner", "admin"),
                    audio_muted=p.audio_muted,
                    video_muted=p.video_muted,
                )
                for p in room.participants.values()
            ),
        )
        for room in core.rooms.values()
    ]


def admin_bridges(core: FocusCore | None) -> list[AdminBridge]:
    if core is None:
        return []
    return [
        AdminBridge(name=resource(b.jid), stress=b.stress, operational=b.selectable, drain=b.drain,
                    version=b.version)
        for b in sorted(core.bridges.values(), key=lambda b: b.jid)
    ]  # fmt: skip


def colibri_ws_domain(http_host: str, bridge: Settings, port: int) -> str:
    """host:port of the web port as the colibri-ws URL names it: the web address when it is a specific one;
    else the first address the bridge gives browsers for media (they must reach it anyway), or loopback.
    `videobridge.websockets.domains` overrides it (a reverse proxy, a name)."""
    host = http_host
    if host in ("", "0.0.0.0", "::"):
        specific = [
            a for a in (*bridge.advertised_addresses, *bridge.bind_addresses) if a not in ("0.0.0.0", "::")
        ]
        host = specific[0] if specific else "127.0.0.1"
    return f"{url_host(host)}:{port}"


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
