"""The bridge's XMPP side (jitsi-protocol.md section 1, "MUC mode"): brewery presence, IQs, reconnect.

The bridge is an ordinary c2s client (`jvb@auth.<domain>`). It joins the brewery MUC under a unique nickname;
Jicofo sees it as that occupant JID and sends Colibri2 and health-check IQs there. Presence carrying
`<stats xmlns="http://jitsi.org/protocol/colibri">` is re-published every stats interval. When the server
goes away the client reconnects with exponential backoff and joins again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import platform
import random
import re
import ssl
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from bridge.bridge import Bridge
from bridge.channel import ChannelStats
from bridge.load import DEFAULT_CAPACITY_PPS, LoadSample, LoadSampler

log = logging.getLogger(__name__)

NS_CLIENT = "jabber:client"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_COLIBRI = "http://jitsi.org/protocol/colibri"
NS_COLIBRI2 = "jitsi:colibri2"
NS_HEALTHCHECK = "http://jitsi.org/protocol/healthcheck"
NS_VERSION = "jabber:iq:version"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_PING = "urn:xmpp:ping"

#: Section 1.4: what jvb advertises in disco#info.
DISCO_FEATURES = (
    NS_HEALTHCHECK,
    "urn:xmpp:jingle:apps:dtls:0",
    "urn:xmpp:jingle:transports:ice-udp:1",
    NS_VERSION,
)

Colibri2Handler = Callable[[ET.Element], Awaitable[ET.Element]]
HealthCheck = Callable[[], Awaitable[None]]


def package_version() -> str:
    try:
        return importlib.metadata.version("sluice")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass(slots=True)
class XmppClientConfig:
    """One XMPP server to join (jvb.conf `videobridge.apis.xmpp-client.configs.<id>`)."""

    hostname: str
    domain: str
    username: str
    password: str
    port: int = 5222
    #: Brewery rooms to join (jvb.conf `muc_jids`).
    muc_jids: list[str] = field(default_factory=list)
    #: Must be unique per bridge; Jicofo identifies the bridge by room/nickname.
    muc_nickname: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: Plain TCP when false (loopback tests); STARTTLS otherwise.
    use_tls: bool = True
    disable_certificate_verification: bool = False
    #: jvb `presence-interval` (= `videobridge.stats.interval`).
    presence_interval: float = 5.0
    #: Reconnect backoff: first delay, growth factor, ceiling (seconds).
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    reconnect_factor: float = 2.0
    #: Seconds from TCP connect to a bound session before the attempt counts as failed.
    login_timeout: float = 15.0
    version: str = field(default_factory=package_version)
    release: str | None = None
    region: str | None = None
    relay_id: str | None = None
    #: jvb `load-management.average-participant-stress`.
    average_participant_stress: float = 0.01
    capacity_pps: float = DEFAULT_CAPACITY_PPS
    #: Who may send Colibri2 and health checks: a regular expression matched against the whole real JID
    #: of the sender (JVB's old AUTHORIZED_SOURCE_REGEXP). None: the focus account of this domain,
    #: `focus@<domain>` with any resource. A sender in the brewery is judged by the real JID its presence
    #: shows; an occupant whose real JID we cannot see is refused.
    authorized_source_regexp: str | None = None

    def authorized_source_pattern(self) -> re.Pattern[str]:
        pattern = self.authorized_source_regexp or re.escape(f"focus@{self.domain}") + "(?:/.*)?"
        return re.compile(pattern, re.IGNORECASE | re.DOTALL)


@dataclass(slots=True)
class BridgeState:
    """Shutdown/drain flags the bridge advertises (section 3.4)."""

    drain: bool = False
    graceful_shutdown: bool = False
    shutting_down: bool = False
    #: The bridge channel's counters, for the total_colibri_web_socket_messages_* stats.
    channel_stats: ChannelStats = field(default_factory=ChannelStats)
    #: IQs refused because their sender is not an authorized source (every XMPP connection counts here).
    xmpp_iqs_refused: int = 0
    #: Requests the private HTTP API refused before any route ran, by reason (bridge/http.py `_guard`).
    private_http_refused: Counter[str] = field(default_factory=Counter)


def _stanza_error(condition: str, text: str | None = None, error_type: str = "cancel") -> ET.Element:
    err = ET.Element(f"{{{NS_CLIENT}}}error", {"type": error_type})
    ET.SubElement(err, f"{{{NS_STANZAS}}}{condition}")
    if text:
        ET.SubElement(err, f"{{{NS_STANZAS}}}text").text = text
    return err


def _local(payload: ET.Element | None) -> str:
    return payload.tag.rpartition("}")[2] if payload is not None else "empty"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


StatValue = str | int | float | bool


def colibri_stats(
    *,
    load: LoadSample,
    state: BridgeState,
    version: str,
    average_participant_stress: float,
    healthy: bool,
    conferences: int,
    endpoints: int,
    now_ms: int,
    release: str | None = None,
    region: str | None = None,
    relay_id: str | None = None,
) -> dict[str, StatValue]:
    """The colibri stats of section 1.3, in presence order; `/colibri/stats` carries the same keys (3.3)."""
    values: dict[str, StatValue] = {
        "stress_level": load.stress_level,
        "average_participant_stress": average_participant_stress,
        "healthy": healthy,
        "drain": state.drain,
        "graceful_shutdown": state.graceful_shutdown,
        "shutting_down": state.shutting_down,
        "version": version,
    }
    for name, optional in (("release", release), ("region", region), ("relay_id", relay_id)):
        if optional is not None:
            values[name] = optional
    values.update(
        conferences=conferences,
        endpoints=endpoints,
        local_endpoints=endpoints,
        packet_rate_download=round(load.packet_rate_download),
        packet_rate_upload=round(load.packet_rate_upload),
        bit_rate_download=round(load.bit_rate_download),
        bit_rate_upload=round(load.bit_rate_upload),
        total_colibri_web_socket_messages_received=state.channel_stats.messages_received,
        total_colibri_web_socket_messages_sent=state.channel_stats.messages_sent,
        current_timestamp=now_ms,
    )
    return values


def _stat_text(value: StatValue) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return _fmt(value)
    return str(value)


def build_stats(
    config: XmppClientConfig,
    state: BridgeState,
    load: LoadSample,
    *,
    healthy: bool,
    conferences: int,
    endpoints: int,
    now_ms: int,
) -> ET.Element:
    """The colibri `<stats>` presence extension: one `<stat name value>` per field (section 1.3)."""
    values = colibri_stats(
        load=load,
        state=state,
        version=config.version,
        average_participant_stress=config.average_participant_stress,
        healthy=healthy,
        conferences=conferences,
        endpoints=endpoints,
        now_ms=now_ms,
        release=config.release,
        region=config.region,
        relay_id=config.relay_id,
    )
    stats = ET.Element(f"{{{NS_COLIBRI}}}stats")
    for name, value in values.items():
        ET.SubElement(stats, f"{{{NS_COLIBRI}}}stat", {"name": name, "value": _stat_text(value)})
    return stats


class BridgeXmppClient:
    """Keeps one bridge present in the brewery MUCs of one XMPP server and answers the IQs sent to it."""

    def __init__(
        self,
        bridge: Bridge,
        config: XmppClientConfig,
        handle_colibri2: Colibri2Handler,
        *,
        state: BridgeState | None = None,
        health_check: HealthCheck | None = None,
        sampler: LoadSampler | None = None,
    ) -> None:
        self.bridge = bridge
        self.config = config
        self.state = state or BridgeState()
        self.sampler = sampler or LoadSampler(config.capacity_pps)
        self._handle_colibri2 = handle_colibri2
        self._health_check = health_check or self._default_health_check
        self._authorized = config.authorized_source_pattern()
        #: Real JIDs of the other brewery occupants, by room (lower case) and nickname, when shown to us.
        self._occupants: dict[str, dict[str, str]] = {}
        self.healthy = True
        #: Rooms whose self-presence (status 110) we saw since the last connect.
        self.joined: set[str] = set()
        self.connects = 0
        self._joined_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._session = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = False
        self._xmpp = self._make_client()

    # ---- lifecycle

    async def start(self) -> None:
        """Starts connecting in the background; see `wait_joined()`."""
        if self._runner is not None:
            return
        self._runner = asyncio.create_task(self._run(), name="bridge-xmpp")
        self._ticker = asyncio.create_task(self._tick(), name="bridge-xmpp-presence")

    async def stop(self) -> None:
        """Leaves the rooms and closes the stream; cancels every task this client started."""
        self._stopping = True
        for task in (self._ticker, self._runner, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._ticker, self._runner, *self._tasks):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._xmpp.cancel_connection_attempt()
        if self._xmpp.transport is not None:
            for room in list(self.joined):
                self._xmpp.send_presence(pto=f"{room}/{self.config.muc_nickname}", ptype="unavailable")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._xmpp.disconnect(wait=1.0), 2.0)
            self._xmpp.abort()
        self.joined.clear()

    async def __aenter__(self) -> BridgeXmppClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_joined(self, timeout: float = 10.0) -> None:
        """Waits until every configured brewery shows our self-presence."""

        async def joined_all() -> None:
            while not set(self.config.muc_jids) <= self.joined:
                self._joined_changed.clear()
                await self._joined_changed.wait()

        await asyncio.wait_for(joined_all(), timeout)

    async def wait_left(self, timeout: float = 10.0) -> None:
        """Waits until no brewery is joined (the connection went away or we left)."""

        async def left() -> None:
            while self.joined:
                self._joined_changed.clear()
                await self._joined_changed.wait()

        await asyncio.wait_for(left(), timeout)

    def occupant_jid(self, room: str) -> str:
        return f"{room}/{self.config.muc_nickname}"

    # ---- connection and backoff

    def _make_client(self) -> slixmpp.ClientXMPP:
        cfg = self.config
        # Without TLS allow SCRAM (the password never crosses the wire), never PLAIN.
        mechanisms = {"unencrypted_scram": not cfg.use_tls}
        xmpp = slixmpp.ClientXMPP(
            f"{cfg.username}@{cfg.domain}", cfg.password, plugin_config={"feature_mechanisms": mechanisms}
        )
        if cfg.use_tls:
            xmpp.enable_starttls = True
            xmpp.enable_direct_tls = False
            xmpp.enable_plaintext = False
            if cfg.disable_certificate_verification:
                xmpp.ssl_context.check_hostname = False
                xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        else:
            xmpp.enable_starttls = False
            xmpp.enable_direct_tls = False
            xmpp.enable_plaintext = True
        xmpp.add_event_handler("session_start", self._on_session_start)
        xmpp.add_event_handler("disconnected", self._on_lost)
        xmpp.add_event_handler("connection_failed", self._on_lost)
        xmpp.add_event_handler("failed_all_auth", self._on_auth_failed)
        xmpp.add_event_handler("presence", self._on_presence)
        xmpp.register_handler(Callback("bridge iq", MatchXPath(f"{{{NS_CLIENT}}}iq"), self._on_iq))
        return xmpp

    async def _run(self) -> None:
        delay = self.config.reconnect_min
        while not self._stopping:
            self._session.clear()
            self._lost.clear()
            log.info("xmpp: connecting to %s:%d", self.config.hostname, self.config.port)
            self._xmpp.connect(self.config.hostname, self.config.port)
            if await self._first(self._session, self._lost, timeout=self.config.login_timeout):
                self.connects += 1
                delay = self.config.reconnect_min
                await self._lost.wait()
                log.warning("xmpp: connection to %s lost", self.config.hostname)
            # slixmpp would retry on its own schedule; the backoff here is ours.
            self._xmpp.cancel_connection_attempt()
            self._xmpp.abort()
            self._set_left()
            if self._stopping:
                return
            wait = delay * random.uniform(0.8, 1.2)
            log.info("xmpp: reconnecting in %.1fs", wait)
            await asyncio.sleep(wait)
            delay = min(delay * self.config.reconnect_factor, self.config.reconnect_max)

    @staticmethod
    async def _first(session: asyncio.Event, lost: asyncio.Event, timeout: float) -> bool:
        """True once the session is bound; False if the attempt failed or timed out."""
        waits = {asyncio.ensure_future(session.wait()), asyncio.ensure_future(lost.wait())}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return session.is_set() and not lost.is_set()

    def _on_session_start(self, _event: Any) -> None:
        log.info("xmpp: session started as %s", self._xmpp.boundjid)
        self._session.set()
        self._publish(join=True)

    def _on_lost(self, _event: Any) -> None:
        self._lost.set()

    def _on_auth_failed(self, _event: Any) -> None:
        log.error("xmpp: authentication as %s@%s failed", self.config.username, self.config.domain)
        self._xmpp.abort()
        self._lost.set()

    def _set_left(self) -> None:
        self._occupants.clear()
        if self.joined:
            self.joined.clear()
            self._joined_changed.set()

    # ---- presence

    async def _tick(self) -> None:
        first = True
        while True:
            if not first:
                await asyncio.sleep(self.config.presence_interval)
            try:
                stats = await self.bridge.get_stats()
                self.sampler.update(time.monotonic(), stats)
            except Exception as exc:
                log.warning("xmpp: no stats from the bridge: %s", exc)
            if first:
                first = False  # the baseline snapshot; the join presence went out on session start
                continue
            if self._session.is_set() and not self._lost.is_set():
                # Rooms not joined yet (say, after a nickname conflict) get a fresh join attempt.
                self._publish(join=False)

    def publish_now(self) -> None:
        """Presence with the current stats at once (after a drain or shutdown change), if connected."""
        if self._session.is_set() and not self._lost.is_set():
            self._publish(join=False)

    def _publish(self, *, join: bool) -> None:
        """Sends presence with stats to every brewery; `<x xmlns=muc>` only on a join."""
        conferences = self.bridge.conferences
        stats = build_stats(
            self.config,
            self.state,
            self.sampler.current,
            healthy=self.healthy,
            conferences=len(conferences),
            endpoints=sum(len(c.endpoints) for c in conferences.values()),
            now_ms=int(time.time() * 1000),
        )
        for room in self.config.muc_jids:
            pres = self._xmpp.make_presence(pto=self.occupant_jid(room))
            if join or room not in self.joined:
                pres.append(ET.Element(f"{{{NS_MUC}}}x"))
            pres.append(stats)
            pres.send()

    def _on_presence(self, pres: Any) -> None:
        sender = pres["from"]
        room = str(sender.bare)
        match = next((r for r in self.config.muc_jids if r.lower() == room.lower()), None)
        if match is None:
            return
        if sender.resource != self.config.muc_nickname:
            self._track_occupant(match, sender.resource, pres)
            return
        if pres["type"] == "error":
            condition = pres["error"]["condition"]
            log.error("xmpp: cannot join %s as %s: %s", room, self.config.muc_nickname, condition)
            return
        if pres["type"] == "unavailable":
            self.joined.discard(match)
            self._joined_changed.set()
            return
        codes = {s.get("code") for s in pres.xml.iterfind(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}status")}
        if "110" in codes and match not in self.joined:
            log.info("xmpp: joined %s as %s", match, self.config.muc_nickname)
            self.joined.add(match)
            self._joined_changed.set()

    def _track_occupant(self, room: str, nick: str, pres: Any) -> None:
        occupants = self._occupants.setdefault(room.lower(), {})
        item = pres.xml.find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}item")
        real = item.get("jid") if item is not None else None
        if pres["type"] in ("unavailable", "error") or not real:
            occupants.pop(nick, None)
        else:
            occupants[nick] = real

    def sender_real_jid(self, sender: str) -> str | None:
        """The account behind `sender`: itself, or for a brewery occupant the real JID its presence showed."""
        bare, _, nick = sender.partition("/")
        room = next((r for r in self.config.muc_jids if r.lower() == bare.lower()), None)
        if room is None:
            return sender
        return self._occupants.get(room.lower(), {}).get(nick)

    def is_authorized(self, sender: str) -> bool:
        real = self.sender_real_jid(sender)
        return real is not None and self._authorized.fullmatch(real) is not None

    # ---- IQs (section 1.4)

    def _on_iq(self, iq: Any) -> None:
        if iq["type"] not in ("get", "set"):
            return  # replies to our own requests are slixmpp's business
        payload = next(iter(iq.xml), None)
        if payload is not None and payload.tag == "{jabber:iq:roster}query":
            return  # roster pushes are answered by slixmpp itself
        if payload is not None and payload.tag == f"{{{NS_PING}}}ping":
            self._reply(iq, None)  # XEP-0199: anyone may learn we are alive
            return
        sender = str(iq["from"])
        if not self.is_authorized(sender):
            # Only the focus drives the bridge: anyone else could end or take over calls.
            self.state.xmpp_iqs_refused += 1
            log.info("xmpp: refused %s IQ from %s (not an authorized source)", _local(payload), sender)
            self._reply(iq, _stanza_error("forbidden", "Not an authorized source", "auth"))
            return
        task = asyncio.create_task(self._answer(iq, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, iq: Any, payload: ET.Element | None) -> None:
        tag = payload.tag if payload is not None else ""
        answer: ET.Element | None
        try:
            if payload is not None and tag == f"{{{NS_COLIBRI2}}}conference-modify":
                answer = await self._handle_colibri2(payload)
            elif tag == f"{{{NS_HEALTHCHECK}}}healthcheck" and iq["type"] == "get":
                answer = await self._healthcheck()
            elif tag == f"{{{NS_VERSION}}}query" and iq["type"] == "get":
                answer = self._version()
            elif tag == f"{{{NS_DISCO_INFO}}}query" and iq["type"] == "get":
                answer = self._disco_info()
            else:
                answer = _stanza_error("service-unavailable", "Unsupported IQ request")
        except Exception as exc:
            log.exception("xmpp: %s IQ from %s failed", tag, iq["from"])
            answer = _stanza_error("internal-server-error", str(exc) or type(exc).__name__)
        self._reply(iq, answer)

    def _reply(self, iq: Any, answer: ET.Element | None) -> None:
        reply = iq.reply(clear=True)
        if answer is not None and answer.tag in (f"{{{NS_CLIENT}}}error", "error"):
            reply["type"] = "error"
            answer.tag = f"{{{NS_CLIENT}}}error"
        if answer is not None:
            reply.append(answer)
        reply.send()

    async def _healthcheck(self) -> ET.Element | None:
        try:
            await self._health_check()
        except Exception as exc:
            self.healthy = False
            return _stanza_error("internal-server-error", f"health check failed: {exc}")
        self.healthy = True
        return None

    async def _default_health_check(self) -> None:
        # The native core answers a stats request only if its shard loop is alive.
        await self.bridge.get_stats(timeout=3.0)

    def _version(self) -> ET.Element:
        query = ET.Element(f"{{{NS_VERSION}}}query")
        ET.SubElement(query, f"{{{NS_VERSION}}}name").text = "Sluice"
        ET.SubElement(query, f"{{{NS_VERSION}}}version").text = self.config.version
        ET.SubElement(query, f"{{{NS_VERSION}}}os").text = platform.system()
        return query

    def _disco_info(self) -> ET.Element:
        query = ET.Element(f"{{{NS_DISCO_INFO}}}query")
        ET.SubElement(
            query,
            f"{{{NS_DISCO_INFO}}}identity",
            {"category": "component", "type": "bridge", "name": "Sluice"},
        )
        for feature in DISCO_FEATURES:
            ET.SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": feature})
        return query
