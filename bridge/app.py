"""The bridge process: the native Bridge, one Colibri2 handler, one XMPP client per configured server, the
private HTTP API, and the public HTTP server with the colibri websockets.

`BridgeApp` only wires the parts together; each part keeps its own rules (bridge/colibri2_handler.py for
Colibri2, bridge/xmpp.py for the brewery, bridge/http.py for HTTP, bridge/channel.py for the bridge channel
and bridge/public_http.py for its sockets). Colibri2 arrives as XML over XMPP or JSON over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client.metrics_core import Metric

from bridge.admin import Operator
from bridge.bridge import Bridge, Conference, Endpoint
from bridge.channel import BridgeChannels, dominant_speaker_changed, sender_source_constraints
from bridge.colibri2_handler import Colibri2Handler
from bridge.http import create_private_app, private_host_names
from bridge.lifecycle import Lifecycle, LifecycleConfig
from bridge.load import LoadSampler
from bridge.public_http import ColibriWebSockets, add_colibri_ws, create_public_app
from bridge.quality import QualityTracker
from bridge.selection import Selection
from bridge.settings import Settings
from bridge.speakers import Speakers
from bridge.xmpp import BridgeXmppClient
from bridge.xmpp_core import BridgeState, package_version
from colibri2.model import Colibri2Error
from colibri2.xml import build_conference_modified, build_error, parse_conference_modify

log = logging.getLogger(__name__)

#: How long bridge-channel asks of one conference are gathered before it is reallocated once.
CHANNEL_COALESCE = 0.05


class BridgeApp:
    """`await start()` binds the media port and starts logging in; `await stop()` undoes all of it."""

    def __init__(
        self,
        settings: Settings,
        *,
        extra_metrics: Callable[[], Iterable[Metric]] | None = None,
        operator: Operator | None = None,
    ) -> None:
        """`extra_metrics`: more families for `/metrics` from whoever hosts this bridge (`sluice serve`);
        `operator`: the rooms and actions of its admin page (bridge/admin.py), likewise."""
        self.settings = settings
        self.extra_metrics = extra_metrics
        self.operator = operator
        #: Each endpoint's RTT, jitter, loss and bitrates from the allocation loop's snapshots.
        self.quality = QualityTracker()
        #: The registry of conferences and endpoints, over the native core.
        self.bridge = Bridge(settings.bridge_config())
        self.bridge.on_change = self._conference_changed
        #: The bridge channel of every conference (sans-IO); its sockets live in `self.web_sockets`.
        self.channels = BridgeChannels(
            self.bridge, version=package_version() if settings.version_announce else None
        )
        #: Shared by every XMPP client, so drain/shutdown shows in every brewery at once.
        self.state = BridgeState(drain=settings.initial_drain_mode, channel_stats=self.channels.stats)
        self.colibri2 = Colibri2Handler(self.bridge, shutdown=self.state, limits=settings.colibri2_limits())
        self.xmpp: list[BridgeXmppClient] = []
        #: Dominant speaker detection from the packet path's audio levels (bridge/speakers.py).
        self.speakers = Speakers(settings.speech_activity())
        self.bridge.on_audio_levels = self._audio_levels
        self.bridge.on_estimate_fell = self._estimate_fell
        self.bridge.on_estimate_rose = self._estimate_rose
        #: Which layer of each video every receiver gets (bridge/allocation.py), on changes and on a tick.
        self.selection = Selection(
            self.bridge,
            settings.allocation_settings(),
            bandwidth_bps=settings.cc_receiver_bandwidth_bps,
            trust_bwe=settings.cc_trust_bwe,
            speakers=self.speakers,
            # With trust-bwe a receiver is sized by its estimate, which starts at the initial estimate: the
            # allocation made at its join, before any feedback, starts there too.
            initial_estimate_bps=settings.cc_initial_estimate_bps,
        )
        #: Drain, graceful shutdown and idle expiry; `lifecycle.finished` says when to exit.
        self.lifecycle = Lifecycle(
            self.bridge,
            self.state,
            LifecycleConfig(
                graceful_shutdown_max_duration=settings.graceful_shutdown_max_duration,
                graceful_shutdown_min_participants=settings.graceful_shutdown_min_participants,
                shutting_down_delay=settings.shutting_down_delay,
                entity_expiration_timeout=settings.entity_expiration_timeout,
                entity_expiration_check_interval=settings.entity_expiration_check_interval,
            ),
            on_change=self._publish_now,
        )
        #: One load view for presence, /colibri/stats and /metrics.
        self.sampler = LoadSampler(settings.load_threshold_pps)
        #: The private HTTP API's bound port (None while stopped or disabled).
        self.http_port: int | None = None
        self._http: web.AppRunner | None = None
        #: The public server's bound port and its websockets (None while stopped or disabled).
        self.public_http_port: int | None = None
        self.web_sockets: ColibriWebSockets | None = None
        self._public: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._allocating: asyncio.Task[None] | None = None
        self._pending_reallocations: set[str] = set()
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.bridge.start()
        try:
            await self._start_http()
            await self._start_public_http()
            for config in self.settings.xmpp_client_configs():
                client = BridgeXmppClient(
                    self.bridge, config, self.handle_colibri2, state=self.state, sampler=self.sampler
                )
                self.xmpp.append(client)
                await client.start()
            self.lifecycle.start()
            self._allocating = asyncio.create_task(self._allocate(), name="allocation")
            if not self.xmpp:
                # Presence ticks the sampler; without any XMPP client, HTTP stats need their own tick.
                self._ticker = asyncio.create_task(self._tick(), name="load-sampler")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Leaves the breweries first, so Jicofo stops sending work before the media port closes."""
        if not self._started:
            return
        self._started = False
        await self.lifecycle.stop()
        for client in self.xmpp:
            try:
                await client.stop()
            except Exception:
                log.exception("xmpp: stopping the client for %s failed", client.config.hostname)
        self.xmpp.clear()
        for task in (self._ticker, self._allocating):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._ticker = self._allocating = None
        if self._public is not None:
            # Closes every colibri websocket (on_shutdown) before the conferences go.
            await self._public.cleanup()
            self._public = None
            self.public_http_port = None
        # Hosted websockets (host_web_sockets) close with their host's application.
        self.web_sockets = None
        self.colibri2.web_socket_bases = ()
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
            self.http_port = None
        await self.bridge.stop()

    async def __aenter__(self) -> BridgeApp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_joined(self, timeout: float = 10.0) -> None:
        """Until every XMPP client sits in all its brewery rooms."""
        for client in self.xmpp:
            await client.wait_joined(timeout)

    async def _start_public_http(self) -> None:
        """The colibri websockets, when enabled (jvb serves nothing else on the public server)."""
        settings = self.settings
        if settings.public_http_port == -1 or not settings.websockets_enabled:
            return
        sockets = self._colibri_web_sockets()
        runner = web.AppRunner(create_public_app(sockets), access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        self._public = runner
        site = web.TCPSite(runner, settings.public_http_host, settings.public_http_port)
        await site.start()
        self.public_http_port = bound_port(site, settings.public_http_port)
        self._advertise(sockets, f"{url_host(settings.public_http_host)}:{self.public_http_port}")
        log.info(
            "colibri websockets on %s:%s, advertised as %s",
            settings.public_http_host,
            self.public_http_port,
            ", ".join(self.colibri2.web_socket_bases),
        )

    def host_web_sockets(self, app: web.Application, domain: str) -> ColibriWebSockets:
        """The colibri websockets on someone else's HTTP application (`sluice serve`'s web port), instead of
        the bridge's own public server. `domain` (host:port of that server) goes in the advertised URLs
        unless `websockets.domains` names others. Call before `app` starts and before the first endpoint
        is allocated (its answer carries the URL)."""
        if self.web_sockets is not None:
            raise RuntimeError("the colibri websockets are already served")
        sockets = self._colibri_web_sockets()
        add_colibri_ws(app, sockets)
        self._advertise(sockets, domain)
        log.info("colibri websockets hosted, advertised as %s", ", ".join(self.colibri2.web_socket_bases))
        return sockets

    def _colibri_web_sockets(self) -> ColibriWebSockets:
        settings = self.settings
        return ColibriWebSockets(
            self.bridge,
            self.channels,
            server_id=settings.websockets_server_id,
            heartbeat=settings.websockets_keepalive_interval if settings.websockets_keepalive_pings else None,
            compress=settings.websockets_compression,
            on_asked=self.channel_changed,
        )

    def _advertise(self, sockets: ColibriWebSockets, own_domain: str) -> None:
        """Endpoint-create answers carry `<web-socket url>` from now on: one per websockets domain."""
        settings = self.settings
        self.web_sockets = sockets
        scheme = "wss" if settings.websockets_tls else "ws"
        self.colibri2.web_socket_bases = tuple(
            f"{scheme}://{domain}/colibri-ws/{settings.websockets_server_id}"
            for domain in settings.websockets_domains or (own_domain,)
        )

    def _conference_changed(self, conference: Conference) -> None:
        """A conference changed in the registry: its allocation is made again, and the bridge channel follows
        (ForwardedSources, closes)."""
        if conference.closed:
            self.speakers.forget(conference.id)
        try:
            self.selection.run(time.monotonic(), conference)
        except Exception:
            # The Colibri2 answer must not fail because of the allocation; the next tick tries again.
            log.exception("allocation: conference %s failed", conference.id)
        self._sync_channel(conference)

    def _sync_channel(self, conference: Conference) -> None:
        if self.web_sockets is None:
            return
        try:
            actions = self.channels.sync(conference.id)
            if not conference.closed:
                sockets = self.web_sockets

                def reachable(endpoint_id: str) -> bool:
                    return sockets.connected(conference.id, endpoint_id)

                told = self.selection.sender_constraints(conference, reachable)
                for name, (owner, height) in told.items():
                    actions += self.channels.send_to(
                        conference.id, owner, sender_source_constraints(name, height)
                    )
            self.web_sockets.apply(conference.id, actions)
        except Exception:
            # The Colibri2 answer must not fail because of the channel.
            log.exception("colibri-ws: following conference %s failed", conference.id)

    def _audio_levels(self, conference: Conference, levels: dict[str, tuple[int, bool]]) -> None:
        """A tick of audio levels: a new dominant speaker is announced on the bridge channel and moves up in
        every receiver's allocation."""
        change = self.speakers.conference(conference.id).update(
            time.monotonic(), levels, conference.endpoints
        )
        if change is None:
            return
        if self.web_sockets is not None:
            text = dominant_speaker_changed(change.dominant, change.previous, change.silence)
            self.web_sockets.apply(conference.id, self.channels.broadcast(conference.id, text))
        self._conference_changed(conference)

    def _estimate_fell(self, ep: Endpoint, bps: int) -> None:
        """The packet path reported a fall of a receiver's estimate: with trust-bwe its conference is
        reallocated now (`_reallocate_soon`), not at the next snapshot up to an allocation interval later,
        while the old layers overflow its link."""
        if self.selection.on_estimate_fell(ep.transport_id, bps):
            self._reallocate_soon(ep.conference.id)

    def _estimate_rose(self, ep: Endpoint, bps: int) -> None:
        """A probe raised a receiver's estimate: with trust-bwe, once it reaches what switching the receiver
        up needs (`Selection.on_estimate_rose`), its conference is reallocated now, not at the next snapshot
        up to an allocation interval later."""
        if self.selection.on_estimate_rose(ep.transport_id, bps):
            self._reallocate_soon(ep.conference.id)

    def channel_changed(self, conference_id: str) -> None:
        """A bridge-channel message changed what a receiver asks for (constraints, lastN, video types), or a
        channel opened: the conference is reallocated (`_reallocate_soon`)."""
        self._reallocate_soon(conference_id)

    def _reallocate_soon(self, conference_id: str) -> None:
        """Reallocates the conference once within `CHANNEL_COALESCE` however many calls come: a client
        sending many channel messages, or many receivers' estimates falling at once, cannot make the bridge
        reallocate per message."""
        if conference_id in self._pending_reallocations:
            return
        self._pending_reallocations.add(conference_id)

        def run() -> None:
            self._pending_reallocations.discard(conference_id)
            conference = self.bridge.get_conference(conference_id)
            if conference is not None:
                self._conference_changed(conference)

        asyncio.get_running_loop().call_later(CHANNEL_COALESCE, run)

    async def _allocate(self) -> None:
        """Every allocation interval: the layers' measured bitrates from the packet path, then every
        conference's allocation again (a stats timeout skips one round)."""
        while True:
            await asyncio.sleep(self.settings.cc_allocation_interval)
            try:
                stats = await self.bridge.get_stats()
            except TimeoutError:
                continue
            self.quality.update(time.monotonic(), stats)
            try:
                changed = self.selection.on_stats(time.monotonic(), stats)
            except Exception:
                log.exception("allocation: a round failed")
                continue
            for conference in changed:
                self._sync_channel(conference)

    async def _start_http(self) -> None:
        port = self.settings.private_http_port
        if port == -1:
            return
        app = create_private_app(
            self.bridge,
            self.colibri2,
            self.lifecycle,
            self.sampler,
            version=package_version(),
            average_participant_stress=self.settings.average_participant_stress,
            allowed_hosts=private_host_names(
                self.settings.private_http_allowed_hosts, self.settings.private_http_host
            ),
            token=self.settings.private_http_token,
            extra_metrics=self.extra_metrics,
            selection=self.selection,
            speakers=self.speakers,
            quality=self.quality,
            operator=self.operator,
            name=self._name(),
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.private_http_host, port)
        await site.start()
        self._http = runner
        self.http_port = bound_port(site, port)
        log.info("private HTTP API on %s:%s", self.settings.private_http_host, self.http_port)

    def _name(self) -> str:
        """How the admin page names this bridge: its brewery nickname (what the focus knows it by)."""
        configs = self.settings.xmpp_client_configs()
        return configs[0].muc_nickname if configs else "this bridge"

    def _publish_now(self) -> None:
        for client in self.xmpp:
            client.publish_now()

    async def _tick(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                self.sampler.update(time.monotonic(), await self.bridge.get_stats())
            await asyncio.sleep(self.settings.stats_interval)

    async def handle_colibri2(self, request: ET.Element) -> ET.Element:
        """`<conference-modify>` -> `<conference-modified>`, or the stanza `<error>` of section 2.5."""
        try:
            response = self.colibri2.handle(parse_conference_modify(request))
        except Colibri2Error as exc:
            # %.130s: the id is the sender's and unchecked when it is what was refused.
            log.info("colibri2: %.130s refused: %s (%s)", request.get("meeting-id"), exc.condition, exc.text)
            return build_error(exc)
        return build_conference_modified(response)


def bound_port(site: web.TCPSite, configured: int) -> int:
    """The port the site listens on (differs from the configured one when that is 0)."""
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    port: int = sockets[0].getsockname()[1] if sockets else configured
    return port


def url_host(host: str) -> str:
    """`host` as it goes in a URL; a wildcard bind address becomes loopback (right only on one machine)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        address = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
    return f"[{address}]" if address.version == 6 else str(address)
