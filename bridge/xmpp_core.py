"""The bridge's XMPP side, sans-IO (docs/jitsi-protocol.md section 1, "MUC mode"): what it says and answers.

The bridge is an ordinary c2s client (`jvb@auth.<domain>`). It joins the brewery MUC under a unique nickname;
Jicofo sees it as that occupant JID and sends Colibri2 and health-check IQs there. `BridgeXmppCore` decides
which presence goes to which brewery with which stats, tracks its own joins and the real JIDs of the other
occupants, judges whether an IQ's sender is an authorized source, and answers each IQ, or says which
asynchronous work (`RunColibri2`, `RunHealthCheck`) the adapter must run before it can. It reads no clock
and touches no socket: `bridge.xmpp.BridgeXmppClient` is the asyncio adapter around it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import re
import uuid
import xml.etree.ElementTree as ET
from collections import Counter, deque
from dataclasses import dataclass, field

from bridge.channel import ChannelStats
from bridge.load import DEFAULT_CAPACITY_PPS, LoadSample

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
NS_ROSTER = "jabber:iq:roster"

#: Section 1.4: what jvb advertises in disco#info.
DISCO_FEATURES = (
    NS_HEALTHCHECK,
    "urn:xmpp:jingle:apps:dtls:0",
    "urn:xmpp:jingle:transports:ice-udp:1",
    NS_VERSION,
)


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


def stanza_error(condition: str, text: str | None = None, error_type: str = "cancel") -> ET.Element:
    err = ET.Element(f"{{{NS_CLIENT}}}error", {"type": error_type})
    ET.SubElement(err, f"{{{NS_STANZAS}}}{condition}")
    if text:
        ET.SubElement(err, f"{{{NS_STANZAS}}}text").text = text
    return err


def _error_condition(stanza: ET.Element) -> str | None:
    err = stanza.find(f"{{{NS_CLIENT}}}error")
    prefix = f"{{{NS_STANZAS}}}"
    if err is None:
        return None
    return next(
        (c.tag[len(prefix) :] for c in err if c.tag.startswith(prefix) and c.tag != f"{prefix}text"), None
    )


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


@dataclass(frozen=True, slots=True)
class RunColibri2:
    """Run the Colibri2 handler on `payload`, then hand its answer to `handle_colibri2_answer`."""

    iq: ET.Element
    payload: ET.Element


@dataclass(frozen=True, slots=True)
class RunHealthCheck:
    """Run the health check, then hand its outcome to `handle_health_result`."""

    iq: ET.Element


Work = RunColibri2 | RunHealthCheck


def _jid_parts(jid: str) -> tuple[str, str]:
    bare, _, rest = jid.partition("/")
    return bare, rest


class BridgeXmppCore:
    """One XMPP server's breweries as the bridge sees them; see the module docstring.

    `now` is wall-clock seconds (Unix time): presence carries it as `current_timestamp`.
    """

    def __init__(self, config: XmppClientConfig, state: BridgeState) -> None:
        self.config = config
        self.state = state
        self._authorized = config.authorized_source_pattern()
        #: Rooms whose self-presence (status 110) we saw since the last connect.
        self.joined: set[str] = set()
        #: The last health check's verdict, published as `healthy`.
        self.healthy = True
        #: Real JIDs of the other brewery occupants, by room (lower case) and nickname, when shown to us.
        self._occupants: dict[str, dict[str, str]] = {}
        self._out: deque[ET.Element] = deque()

    def poll_transmit(self) -> ET.Element | None:
        return self._out.popleft() if self._out else None

    def occupant_jid(self, room: str) -> str:
        return f"{room}/{self.config.muc_nickname}"

    def _room(self, jid: str) -> str | None:
        """The configured brewery `jid` names (as configured), if any."""
        return next((r for r in self.config.muc_jids if r.lower() == jid.lower()), None)

    # ---- presence (section 1.3)

    def publish(self, now: float, load: LoadSample, *, conferences: int, endpoints: int, join: bool) -> None:
        """Presence with stats to every brewery; `<x xmlns=muc>` on a join and for rooms not joined yet
        (after a nickname conflict, say), which makes it a fresh join attempt."""
        stats = build_stats(
            self.config,
            self.state,
            load,
            healthy=self.healthy,
            conferences=conferences,
            endpoints=endpoints,
            now_ms=int(now * 1000),
        )
        for room in self.config.muc_jids:
            pres = ET.Element(f"{{{NS_CLIENT}}}presence", {"to": self.occupant_jid(room)})
            if join or room not in self.joined:
                pres.append(ET.Element(f"{{{NS_MUC}}}x"))
            pres.append(stats)
            self._out.append(pres)

    def leave(self) -> None:
        """Unavailable presence to every brewery joined (the bridge is stopping)."""
        for room in sorted(self.joined):
            self._out.append(
                ET.Element(f"{{{NS_CLIENT}}}presence", {"to": self.occupant_jid(room), "type": "unavailable"})
            )

    def reset(self) -> bool:
        """The connection is gone, and every join with it; True if `joined` changed."""
        self._occupants.clear()
        changed = bool(self.joined)
        self.joined.clear()
        return changed

    def handle_presence(self, now: float, el: ET.Element) -> bool:
        """A presence from the server; True if `joined` changed."""
        bare, nick = _jid_parts(el.get("from", ""))
        room = self._room(bare)
        if room is None:
            return False
        if nick != self.config.muc_nickname:
            self._track_occupant(room, nick, el)
            return False
        ptype = el.get("type")
        if ptype == "error":
            log.error("xmpp: cannot join %s as %s: %s", bare, nick, _error_condition(el))
            return False
        if ptype == "unavailable":
            left = room in self.joined
            self.joined.discard(room)
            return left
        codes = {s.get("code") for s in el.iterfind(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}status")}
        joined = "110" in codes and room not in self.joined
        if joined:
            log.info("xmpp: joined %s as %s", room, nick)
            self.joined.add(room)
        return joined

    def _track_occupant(self, room: str, nick: str, el: ET.Element) -> None:
        occupants = self._occupants.setdefault(room.lower(), {})
        item = el.find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}item")
        real = item.get("jid") if item is not None else None
        if el.get("type") in ("unavailable", "error") or not real:
            occupants.pop(nick, None)
        else:
            occupants[nick] = real

    # ---- who may drive the bridge

    def sender_real_jid(self, sender: str) -> str | None:
        """The account behind `sender`: itself, or for a brewery occupant the real JID its presence showed."""
        bare, nick = _jid_parts(sender)
        room = self._room(bare)
        if room is None:
            return sender
        return self._occupants.get(room.lower(), {}).get(nick)

    def is_authorized(self, sender: str) -> bool:
        real = self.sender_real_jid(sender)
        return real is not None and self._authorized.fullmatch(real) is not None

    # ---- IQs (section 1.4)

    def handle_iq(self, now: float, iq: ET.Element) -> Work | None:
        """Answers `iq` (see `poll_transmit`), or returns the work whose outcome makes the answer."""
        iq_type = iq.get("type")
        payload = next(iter(iq), None)
        tag = payload.tag if payload is not None else ""
        # Replies to our own requests and roster pushes are the XMPP library's business.
        if iq_type not in ("get", "set") or tag == f"{{{NS_ROSTER}}}query":
            return None
        if tag == f"{{{NS_PING}}}ping":
            self._reply(iq, None)  # XEP-0199: anyone may learn we are alive
            return None
        sender = iq.get("from", "")
        if not self.is_authorized(sender):
            # Only the focus drives the bridge: anyone else could end or take over calls.
            self.state.xmpp_iqs_refused += 1
            what = tag.rpartition("}")[2] or "empty"
            log.info("xmpp: refused %s IQ from %s (not an authorized source)", what, sender)
            self._reply(iq, stanza_error("forbidden", "Not an authorized source", "auth"))
            return None
        if payload is not None and tag == f"{{{NS_COLIBRI2}}}conference-modify":
            return RunColibri2(iq, payload)
        if tag == f"{{{NS_HEALTHCHECK}}}healthcheck" and iq_type == "get":
            return RunHealthCheck(iq)
        self._reply(iq, self._immediate_answer(tag, iq_type))
        return None

    def _immediate_answer(self, tag: str, iq_type: str | None) -> ET.Element:
        if tag == f"{{{NS_VERSION}}}query" and iq_type == "get":
            return self._version()
        if tag == f"{{{NS_DISCO_INFO}}}query" and iq_type == "get":
            return self._disco_info()
        return stanza_error("service-unavailable", "Unsupported IQ request")

    def handle_colibri2_answer(self, work: RunColibri2, answer: ET.Element) -> None:
        """The handler's `<conference-modified>`, or the error element it chose."""
        self._reply(work.iq, answer)

    def handle_health_result(self, work: RunHealthCheck, failure: str | None) -> None:
        """The health check passed (`failure` None) or failed, and why; presence says so from now on."""
        self.healthy = failure is None
        if failure is None:
            self._reply(work.iq, None)
        else:
            self._reply(work.iq, stanza_error("internal-server-error", f"health check failed: {failure}"))

    def handle_failure(self, work: Work, text: str) -> None:
        """The work raised: the sender gets internal-server-error with `text`."""
        self._reply(work.iq, stanza_error("internal-server-error", text))

    def _reply(self, iq: ET.Element, answer: ET.Element | None) -> None:
        reply = ET.Element(f"{{{NS_CLIENT}}}iq", {"type": "result", "id": iq.get("id", "")})
        if iq.get("from"):
            reply.set("to", iq.get("from", ""))
        if answer is not None and answer.tag in (f"{{{NS_CLIENT}}}error", "error"):
            reply.set("type", "error")
            answer.tag = f"{{{NS_CLIENT}}}error"
        if answer is not None:
            reply.append(answer)
        self._out.append(reply)

    def _version(self) -> ET.Element:
        query = ET.Element(f"{{{NS_VERSION}}}query")
        ET.SubElement(query, f"{{{NS_VERSION}}}name").text = "Sluice"
        ET.SubElement(query, f"{{{NS_VERSION}}}version").text = self.config.version
        ET.SubElement(query, f"{{{NS_VERSION}}}os").text = platform.system()
        return query

    @staticmethod
    def _disco_info() -> ET.Element:
        query = ET.Element(f"{{{NS_DISCO_INFO}}}query")
        ET.SubElement(
            query,
            f"{{{NS_DISCO_INFO}}}identity",
            {"category": "component", "type": "bridge", "name": "Sluice"},
        )
        for feature in DISCO_FEATURES:
            ET.SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": feature})
        return query
