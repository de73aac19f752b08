"""The focus's decisions, sans-IO with a fake clock: stanzas in, stanzas out (docs/jitsi-protocol.md
1.3-2.3, 5).

`Net` plays everyone around the focus: the MUC service (joins, owner config, disco#info with a meetingId),
clients (presence, Jingle), and bridges (brewery presence, health checks, Colibri2 answers built with
colibri2's codec and checked against 2.3's rules: one create per conference, endpoints known).
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from bridge import _native
from bridge.colibri2_handler import Colibri2Handler
from colibri2 import model as c2
from colibri2 import xml as c2xml
from signaling.focus import FocusConfig, FocusCore, media
from signaling.focus.bridges import BridgeInfo, select_bridge
from signaling.focus.media import FORBIDDEN_EXTENSIONS
from signaling.jingle import EndpointSources, Jingle, Source, SsrcGroup, build_jingle, parse_jingle
from signaling.jingle.model import BridgeSession, Content, Description, IceTransport, Parameter, Reason
from signaling.jingle.model import Candidate as JCandidate
from signaling.jingle.model import Fingerprint as JFingerprint
from tests.helpers.fake_native import fake_bridge

DOMAIN = "meet.test"
ROOM = f"room1@conference.{DOMAIN}"
BREWERY = f"jvbbrewery@internal.auth.{DOMAIN}"
FOCUS_FULL = f"focus@auth.{DOMAIN}/focus"
CLIENT = "jabber:client"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MUC_USER = "http://jabber.org/protocol/muc#user"
C2 = "jitsi:colibri2"
JINGLE = "urn:xmpp:jingle:1"
MEETING_ID = "5f1d0b2e-3c4a-4e6f-9a8b-7c6d5e4f3a2b"


def x(text: str) -> ET.Element:
    return ET.fromstring(text)


@dataclass
class FakeBridge:
    """Answers Colibri2 like our bridge: one conference per meeting-id, endpoints by id, feedback sources."""

    jid: str
    #: The bridge's account, where the focus sends its requests (the occupant JID is only its name).
    real: str
    conferences: dict[str, set[str]] = field(default_factory=dict)
    requests: list[c2.ConferenceModify] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    answer: bool = True
    #: Refuse every conference-modify with this Colibri2 error reason.
    refuse: c2.Reason | None = None
    #: ICE restarts per endpoint; with `ice_restarts_allowed` False the bridge answers without a transport.
    ice_restarts: dict[str, int] = field(default_factory=dict)
    ice_restarts_allowed: bool = True

    def handle(self, iq: ET.Element) -> ET.Element | None:
        req = c2xml.parse_conference_modify(iq)
        self.requests.append(req)
        if not self.answer:
            return None
        if self.refuse is not None:
            return _error(iq, "bad-request", self.refuse)
        if req.create:
            assert req.meeting_id not in self.conferences, "conference created twice"
            self.conferences[req.meeting_id] = set()
        if req.meeting_id not in self.conferences:
            return _error(iq, "item-not-found", c2.Reason.CONFERENCE_NOT_FOUND)
        if req.expire:
            del self.conferences[req.meeting_id]
            return _result(iq, c2xml.build_conference_modified(c2.ConferenceModified()))
        endpoints = self.conferences[req.meeting_id]
        out = []
        created = False
        for ep in req.endpoints:
            if ep.expire:
                endpoints.discard(ep.id)
                self.expired.append(ep.id)
                continue
            if ep.create:
                assert "source-names" in ep.capabilities
                endpoints.add(ep.id)
                created = True
                ice = _bridge_ice(f"{self.jid[-1]}-{ep.id}", "p", "actpass")
                ice = replace(ice, web_sockets=(f"ws://127.0.0.1/colibri-ws/x/{ep.id}",))
                out.append(c2.Endpoint(id=ep.id, transport=c2.Transport(ice=ice)))
            elif ep.id not in endpoints:
                return _error(iq, "item-not-found", c2.Reason.UNKNOWN_ENDPOINT, ep.id)
            elif ep.transport is not None and ep.transport.ice_restart:
                if not self.ice_restarts_allowed:
                    out.append(c2.Endpoint(id=ep.id))  # section 2.3 item 5: no transport, refused
                    continue
                generation = self.ice_restarts[ep.id] = self.ice_restarts.get(ep.id, 0) + 1
                ice = _bridge_ice(f"{self.jid[-1]}-{ep.id}-g{generation}", "r", "active")
                ice = replace(ice, ice_generation=generation)
                out.append(c2.Endpoint(id=ep.id, transport=c2.Transport(ice=ice)))
        feedback = (
            (
                c2.MediaSource("audio", "jvb-a0", sources=(c2.SourceDesc(ssrc=1111, name="jvb-a0"),)),
                c2.MediaSource("video", "jvb-v0", sources=(c2.SourceDesc(ssrc=2222, name="jvb-v0"),)),
            )
            if created
            else None
        )
        return _result(
            iq, c2xml.build_conference_modified(c2.ConferenceModified(tuple(out), sources=feedback))
        )


def _bridge_ice(ufrag: str, pwd_char: str, setup: str) -> c2.IceUdpTransport:
    """An endpoint's transport as our bridge answers it: one host candidate, a fingerprint."""
    return c2.IceUdpTransport(
        ufrag=ufrag,
        pwd=pwd_char * 24,
        candidates=(c2.Candidate(1, "1", 0, "c1", "127.0.0.1", 0, 10000, 2130706431, "udp", "host"),),
        rtcp_mux=True,
        fingerprints=(c2.Fingerprint("sha-256", "AA:BB", setup),),
    )


def _result(iq: ET.Element, payload: ET.Element | None = None) -> ET.Element:
    el = ET.Element(f"{{{CLIENT}}}iq", {"type": "result", "id": iq.get("id", ""), "from": iq.get("to", "")})
    if payload is not None:
        el.append(payload)
    return el


def _error(
    iq: ET.Element, condition: str, reason: c2.Reason | None = None, endpoint: str | None = None
) -> ET.Element:
    el = ET.Element(f"{{{CLIENT}}}iq", {"type": "error", "id": iq.get("id", ""), "from": iq.get("to", "")})
    el.append(c2xml.build_error(c2.Colibri2Error(condition, "refused", reason, endpoint)))
    return el


class Net:
    """Everything around one FocusCore, with a clock that only moves when told."""

    def __init__(self, **config: object) -> None:
        ids = itertools.count(1)
        self.core = FocusCore(
            FocusConfig(domain=DOMAIN, **config),  # type: ignore[arg-type]
            new_id=lambda: f"id{next(ids):04d}",
        )
        self.now = 0.0
        self.sent: list[ET.Element] = []
        self.bridges: dict[str, FakeBridge] = {}
        self.client_iqs: list[ET.Element] = []  # IQs to participants, unanswered
        self.auto_answer_clients = True
        #: Bare JIDs the MUC refuses to make owner (as ours does for a token's holder).
        self.refuse_owner: set[str] = set()
        self.core.start(self.now)
        self.pump()

    # ---- driving

    def feed(self, el: ET.Element) -> None:
        self.core.handle_stanza(self.now, el)
        self.pump()

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while True:
            wake = self.core.poll_timeout()
            if wake is None or wake > target:
                break
            self.now = max(self.now, wake)
            self.core.handle_timeout(self.now)
            self.pump()
        self.now = target
        self.core.handle_timeout(self.now)
        self.pump()

    def pump(self) -> None:
        """Delivers what the focus sent; bridges and the MUC service answer at once."""
        while (el := self.core.poll_transmit()) is not None:
            self.sent.append(el)
            to = el.get("to", "")
            if el.tag != f"{{{CLIENT}}}iq" or el.get("type") not in ("get", "set"):
                continue
            payload = el[0]
            by_real = {b.real: b for b in self.bridges.values()}
            if to in by_real:
                if payload.tag == "{http://jitsi.org/protocol/healthcheck}healthcheck":
                    if by_real[to].answer:
                        self.core.handle_stanza(self.now, _result(el))
                    continue
                reply = by_real[to].handle(el)
                if reply is not None:
                    self.core.handle_stanza(self.now, reply)
            elif to == ROOM or ("/" not in to and to.endswith(f"conference.{DOMAIN}")):
                self.core.handle_stanza(self.now, self._muc_service(el))
            elif "/" in to and to.split("/")[0].endswith(f"conference.{DOMAIN}"):
                self.client_iqs.append(el)
                if self.auto_answer_clients and payload.tag != "{http://jabber.org/protocol/disco#info}query":
                    self.core.handle_stanza(self.now, _result(el))

    def _muc_service(self, iq: ET.Element) -> ET.Element:
        payload = iq[0]
        item = payload.find("{http://jabber.org/protocol/muc#admin}item")
        if item is not None and item.get("jid") in self.refuse_owner:
            return _error(iq, "not-allowed")
        if payload.tag == "{http://jabber.org/protocol/disco#info}query":
            return _result(
                iq,
                x(
                    '<query xmlns="http://jabber.org/protocol/disco#info">'
                    '<x xmlns="jabber:x:data" type="result">'
                    '<field var="FORM_TYPE"><value>http://jabber.org/protocol/muc#roominfo</value></field>'
                    f'<field var="muc#roominfo_meetingId"><value>{MEETING_ID}</value></field></x></query>'
                ),
            )
        return _result(iq)

    # ---- what was sent

    def take(self, where: Callable[[ET.Element], bool]) -> list[ET.Element]:
        found = [el for el in self.sent if where(el)]
        self.sent = [el for el in self.sent if not where(el)]
        return found

    def jingles(self, nick: str, action: str | None = None) -> list[Jingle]:
        def match(el: ET.Element) -> bool:
            j = el.find(f"{{{JINGLE}}}jingle")
            return (
                el.get("to") == f"{ROOM}/{nick}"
                and j is not None
                and (action is None or j.get("action") == action)
            )

        return [parse_jingle(el) for el in self.take(match)]

    def replies_to(self, iq_id: str) -> list[ET.Element]:
        return self.take(lambda el: el.get("id") == iq_id and el.get("type") in ("result", "error"))

    # ---- the world

    def add_bridge(self, nick: str, real: str | None = None, **stats: str) -> FakeBridge:
        """Brewery presence with stats from `nick`, whose account is `real` (default: a bridge account)."""
        jid = f"{BREWERY}/{nick}"
        real = real if real is not None else f"jvb@auth.{DOMAIN}/{nick}"
        bridge = self.bridges.setdefault(jid, FakeBridge(jid, real))
        self.feed(bridge_presence(jid, real, **stats))
        return bridge

    def remove_bridge(self, nick: str) -> None:
        self.feed(x(f'<presence xmlns="{CLIENT}" from="{BREWERY}/{nick}" type="unavailable"/>'))

    def conference_iq(
        self, room: str = ROOM, iq_id: str = "conf1", requester: str = f"focus.{DOMAIN}"
    ) -> None:
        self.feed(
            x(
                f'<iq xmlns="{CLIENT}" type="set" id="{iq_id}" from="{requester}" to="{FOCUS_FULL}">'
                f'<conference xmlns="http://jitsi.org/protocol/focus" room="{room}" machine-uid="m1">'
                '<property name="visitors-version" value="1"/></conference></iq>'
            )
        )

    def focus_joined(self, room: str = ROOM) -> None:
        self.feed(
            x(
                f'<presence xmlns="{CLIENT}" from="{room}/focus"><x xmlns="{MUC_USER}">'
                f'<item affiliation="owner" role="moderator" jid="{FOCUS_FULL}"/>'
                '<status code="110"/><status code="201"/></x></presence>'
            )
        )

    def open_room(self) -> None:
        self.conference_iq()
        self.focus_joined()

    def join(
        self, nick: str, *, caps: bool = False, affiliation: str = "none", role: str = "participant"
    ) -> None:
        c = (
            '<c xmlns="http://jabber.org/protocol/caps" hash="sha-1" node="https://jitsi.org/jitsi-meet"'
            ' ver="v1"/>'
        )
        self.feed(
            x(
                f'<presence xmlns="{CLIENT}" from="{ROOM}/{nick}"><x xmlns="{MUC_USER}">'
                f'<item affiliation="{affiliation}" role="{role}" jid="{nick}-user@{DOMAIN}/res"/></x>'
                f'{c if caps else ""}<nick xmlns="http://jabber.org/protocol/nick">{nick.title()}</nick></presence>'
            )
        )

    def leave(self, nick: str) -> None:
        self.feed(
            x(
                f'<presence xmlns="{CLIENT}" from="{ROOM}/{nick}" type="unavailable"><x xmlns="{MUC_USER}">'
                '<item affiliation="none" role="none"/></x></presence>'
            )
        )

    def send_jingle(self, nick: str, j: Jingle, iq_id: str = "j1") -> list[ET.Element]:
        iq = ET.Element(
            f"{{{CLIENT}}}iq", {"type": "set", "id": iq_id, "from": f"{ROOM}/{nick}", "to": FOCUS_FULL}
        )
        iq.append(build_jingle(j))
        self.feed(iq)
        return self.replies_to(iq_id)

    def accept(self, nick: str, sid: str, ssrcs: tuple[int, int]) -> list[ET.Element]:
        return self.send_jingle(nick, session_accept(nick, sid, ssrcs), iq_id=f"acc-{nick}")

    def colibri(self, bridge: str) -> list[c2.ConferenceModify]:
        reqs = self.bridges[f"{BREWERY}/{bridge}"].requests
        out, reqs[:] = list(reqs), []
        return out


def bridge_presence(occupant: str, real: str, **stats: str) -> ET.Element:
    values = {"stress_level": "0.0", "drain": "false", "healthy": "true", **stats}
    stat_xml = "".join(f'<stat name="{k}" value="{v}"/>' for k, v in values.items())
    item = f'<item affiliation="none" role="participant" jid="{real}"/>' if real else "<item/>"
    return x(
        f'<presence xmlns="{CLIENT}" from="{occupant}"><x xmlns="{MUC_USER}">{item}</x>'
        f'<stats xmlns="http://jitsi.org/protocol/colibri">{stat_xml}</stats></presence>'
    )


def client_transport(nick: str) -> IceTransport:
    return IceTransport(
        ufrag=f"u-{nick}",
        pwd="q" * 22,
        candidates=(JCandidate(1, "9", 0, None, "127.0.0.1", None, 50000, 2122260223, "udp", "host"),),
        fingerprints=(JFingerprint("sha-256", "CC:DD", "active"),),
    )


def session_accept(nick: str, sid: str, ssrcs: tuple[int, int]) -> Jingle:
    audio, video = ssrcs
    return Jingle(
        action="session-accept",
        sid=sid,
        responder=f"{nick}-user@{DOMAIN}/res",
        contents=(
            Content(
                "audio",
                description=Description(
                    "audio", sources=(Source(audio, f"{nick}-a0", parameters=(Parameter("msid", "s a"),)),)
                ),
                transport=client_transport(nick),
            ),
            Content(
                "video",
                description=Description(
                    "video",
                    sources=(Source(video, f"{nick}-v0"), Source(video + 1, f"{nick}-v0")),
                    ssrc_groups=(SsrcGroup("FID", (video, video + 1)),),
                ),
                transport=client_transport(nick),
            ),
        ),
    )


def in_call(net: Net, *nicks: str, caps: bool = False) -> dict[str, Jingle]:
    """Opens the room, joins `nicks`, returns each one's session-initiate."""
    net.open_room()
    for nick in nicks:
        net.join(nick, caps=caps)
    return {nick: single(net.jingles(nick, "session-initiate")) for nick in nicks}


def single(items: list[Jingle]) -> Jingle:
    assert len(items) == 1, items
    return items[0]


def owners(j: Jingle) -> dict[str, EndpointSources]:
    assert j.json_sources is not None
    return dict(j.json_sources)


def error_of(reply: ET.Element) -> tuple[str | None, list[str]]:
    assert reply.get("type") == "error", ET.tostring(reply, encoding="unicode")
    err = reply.find(f"{{{CLIENT}}}error")
    assert err is not None
    names = [c.tag for c in err]
    condition = next(
        (n.split("}")[1] for n in names if n.startswith(f"{{{STANZAS}}}") and not n.endswith("text")), None
    )
    return condition, names


# ---- conference request (5.2) and the room


def test_conference_iq_is_answered_after_join_config_and_meeting_id() -> None:
    net = Net()
    net.conference_iq()
    (join,) = net.take(lambda el: el.get("to") == f"{ROOM}/focus")
    assert join.find("{http://jabber.org/protocol/muc}x") is not None
    assert net.replies_to("conf1") == [], "ready before the focus is in the room"

    net.focus_joined()
    configs = net.take(lambda el: el.find("{http://jabber.org/protocol/muc#owner}query") is not None)
    (config,) = configs
    fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in config.iter("{jabber:x:data}field")}
    assert fields["muc#roomconfig_whois"] == "anyone"
    (reply,) = net.replies_to("conf1")
    conf = reply.find("{http://jitsi.org/protocol/focus}conference")
    assert conf is not None
    assert (conf.get("ready"), conf.get("focusjid"), conf.get("room")) == (
        "true",
        f"focus@auth.{DOMAIN}",
        ROOM,
    )
    assert net.core.rooms[ROOM].meeting_id == MEETING_ID

    # A second request for a ready room is answered at once.
    net.conference_iq(iq_id="conf2")
    assert len(net.replies_to("conf2")) == 1


@pytest.mark.parametrize("room", ["room1@muc.elsewhere", "no-at-sign", f"a@conference.{DOMAIN}/nick", ""])
def test_conference_iq_for_a_foreign_room_is_bad_request(room: str) -> None:
    net = Net()
    net.conference_iq(room=room)
    (reply,) = net.replies_to("conf1")
    assert error_of(reply)[0] == "bad-request"
    assert net.core.rooms == {} and net.core.stats["errors_bad_request"] == 1


def test_failed_join_is_reported_to_the_waiting_client() -> None:
    net = Net()
    net.conference_iq()
    net.feed(
        x(
            f'<presence xmlns="{CLIENT}" from="{ROOM}/focus" type="error"><error type="cancel">'
            f'<not-allowed xmlns="{STANZAS}"/></error></presence>'
        )
    )
    (reply,) = net.replies_to("conf1")
    assert error_of(reply)[0] == "not-allowed"
    assert ROOM not in net.core.rooms


def test_first_participant_is_made_owner() -> None:
    net = Net()
    net.add_bridge("jvb1")
    net.open_room()
    net.join("aaaa0001")
    grants = net.take(lambda el: el.find("{http://jabber.org/protocol/muc#admin}query") is not None)
    (grant,) = grants
    item = grant.find(
        "{http://jabber.org/protocol/muc#admin}query/{http://jabber.org/protocol/muc#admin}item"
    )
    assert item is not None and (item.get("affiliation"), item.get("jid")) == (
        "owner",
        f"aaaa0001-user@{DOMAIN}",
    )
    net.join("bbbb0002")
    assert not net.take(lambda el: el.find("{http://jabber.org/protocol/muc#admin}query") is not None)


def owner_grants(net: Net) -> list[str | None]:
    """The JIDs the focus asked the MUC to make owner since last asked."""
    admin = "{http://jabber.org/protocol/muc#admin}"
    items = [
        g.find(f"{admin}query/{admin}item") for g in net.take(lambda el: el.find(f"{admin}query") is not None)
    ]
    return [item.get("jid") if item is not None else None for item in items]


def test_a_refused_owner_grant_is_not_believed_and_the_next_participant_is_asked() -> None:
    """The MUC decides a token holder's affiliation: the focus's grant is refused, and it must not then take
    that participant for a moderator (mute rights) nor stop looking for an owner."""
    net = Net()
    net.add_bridge("jvb1")
    net.open_room()
    net.refuse_owner.add(f"aaaa0001-user@{DOMAIN}")
    net.join("aaaa0001")
    assert owner_grants(net) == [f"aaaa0001-user@{DOMAIN}"]
    first = net.core.rooms[ROOM].participants["aaaa0001"]
    assert not first.moderator and first.owner_refused
    assert net.core.stats["owner_grants_refused"] == 1
    net.join("bbbb0002")
    assert owner_grants(net) == [f"bbbb0002-user@{DOMAIN}"]
    assert net.core.rooms[ROOM].participants["bbbb0002"].moderator


def test_on_a_secure_domain_only_logged_in_participants_become_owner() -> None:
    net = Net(owner_needs_login=True)
    net.add_bridge("jvb1")
    net.conference_iq()
    net.focus_joined()
    (reply,) = net.replies_to("conf1")
    props = {p.get("name"): p.get("value") for p in reply.iter("{http://jitsi.org/protocol/focus}property")}
    assert props["authentication"] == "true"
    net.join("aaaa0001")  # a guest (anonymous, on the login domain)
    assert owner_grants(net) == []
    net.feed(
        x(
            f'<presence xmlns="{CLIENT}" from="{ROOM}/cccc0003"><x xmlns="{MUC_USER}">'
            f'<item affiliation="none" role="participant" jid="host@auth.{DOMAIN}/web"/></x></presence>'
        )
    )
    assert owner_grants(net) == [f"host@auth.{DOMAIN}"]


# ---- bridge selection (1.3)


def bridge(jid: str, stress: float = 0.0, **flags: bool) -> BridgeInfo:
    b = BridgeInfo(jid, stress=stress, drain=False)
    for name, value in flags.items():
        setattr(b, name, value)
    return b


def test_selection_picks_the_least_stressed_usable_bridge() -> None:
    a, b, c = bridge("a", 0.5), bridge("b", 0.2), bridge("c", 0.3)
    assert select_bridge([a, b, c], 0.0) is b
    b.drain = True
    assert select_bridge([a, b, c], 0.0) is c
    c.healthy = False
    assert select_bridge([a, b, c], 0.0) is a
    a.shutting_down = True
    assert select_bridge([a, b, c], 0.0) is None
    assert select_bridge([bridge("g", graceful_shutdown=True), bridge("f", operational=False)], 0.0) is None


def test_selection_prefers_bridges_below_the_threshold_and_counts_recent_endpoints() -> None:
    hot, warm = bridge("hot", 0.85), bridge("warm", 0.79)
    assert select_bridge([hot, warm], 0.0) is warm
    busy, idle = bridge("busy", 0.10), bridge("idle", 0.12)
    busy.recent.extend([0.0, 1.0, 2.0])  # three endpoints just allocated: 0.10 + 3 * 0.01
    assert select_bridge([busy, idle], 3.0) is idle
    assert select_bridge([busy, idle], 25.0) is busy, "recent endpoints stop counting after the ramp-up"


def test_drain_is_assumed_until_a_presence_says_otherwise() -> None:
    net = Net()
    net.add_bridge("jvb1", drain="true")
    net.open_room()
    net.join("aaaa0001")
    net.join("bbbb0002")
    assert not net.jingles("aaaa0001"), "a draining bridge took a new conference"
    assert any(el.find(f"{{{CLIENT}}}bridgeNotAvailable") is not None for el in net.sent)
    net.add_bridge("jvb1", drain="false")
    assert single(net.jingles("aaaa0001", "session-initiate"))


# ---- inviting (5.3-5.4) and Colibri2 (2.3)


def test_two_participants_are_allocated_and_invited() -> None:
    net = Net()
    net.add_bridge("jvb1")
    net.open_room()
    net.join("aaaa0001")
    assert not net.colibri("jvb1") and not net.jingles("aaaa0001"), "a lone participant gets no session"
    net.join("bbbb0002")

    first, second = net.colibri("jvb1")
    assert (first.create, first.name, first.meeting_id) == (True, ROOM, MEETING_ID)
    assert (second.create, second.name) == (False, None)
    (ep,) = first.endpoints
    assert (ep.id, ep.create, ep.capabilities, ep.transport) == (
        "aaaa0001",
        True,
        ("source-names",),
        c2.Transport(ice_controlling=True),
    )
    assert [m.type for m in ep.medias] == ["audio", "video"]
    assert ep.medias == media.colibri_medias()

    j = single(net.jingles("aaaa0001", "session-initiate"))
    assert j.initiator == FOCUS_FULL and j.groups[0].semantics == "BUNDLE"
    assert j.groups[0].contents == ("audio", "video")
    assert j.bridge_session is not None and j.bridge_session.id == net.core.rooms[ROOM].bridge_session
    audio, video = j.contents
    assert audio.description is not None and video.description is not None
    assert [(p.id, p.name, p.clockrate) for p in audio.description.payload_types] == [(111, "opus", 48000)]
    # Jicofo's codecs and numbers (2.8), VP8 first: a client that takes the first codec sends VP8.
    vp = video.description.payload_types
    assert [(p.id, p.name, p.clockrate) for p in vp] == [
        (100, "VP8", 90000),
        (96, "rtx", 90000),
        (101, "VP9", 90000),
        (97, "rtx", 90000),
        (41, "AV1", 90000),
        (42, "rtx", 90000),
        (107, "H264", 90000),
        (99, "rtx", 90000),
    ]
    assert [[(q.name, q.value) for q in p.parameters] for p in vp if p.name == "rtx"] == [
        [("apt", "100")],
        [("apt", "101")],
        [("apt", "41")],
        [("apt", "107")],
    ]
    (h264,) = (p for p in vp if p.name == "H264")
    assert [(q.name, q.value) for q in h264.parameters] == [
        ("profile-level-id", "42e01f"),
        ("level-asymmetry-allowed", "1"),
        ("packetization-mode", "1"),
    ]
    fb = {("ccm", "fir"), ("nack", None), ("nack", "pli"), ("transport-cc", None), ("goog-remb", None)}
    for p in vp:
        fbs = {(f.type, f.subtype) for f in p.rtcp_fbs}
        assert fbs == (set() if p.name == "rtx" else fb), (p.name, fbs)
    assert {(e.id, e.uri.rsplit("/", 1)[-1]) for e in audio.description.rtp_hdrexts} == {
        (1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        (3, "abs-send-time"),
        (5, "draft-holmer-rmcat-transport-wide-cc-extensions-01"),
    }
    assert {(e.id, e.uri) for e in video.description.rtp_hdrexts} == {
        (3, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        (5, "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"),
        (11, "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"),
    }
    for content in j.contents:
        assert content.description is not None
        assert not {e.uri for e in content.description.rtp_hdrexts} & set(FORBIDDEN_EXTENSIONS)
        t = content.transport
        assert t is not None and t.ufrag == "1-aaaa0001" and t.rtcp_mux
        assert [f.setup for f in t.fingerprints] == ["actpass"]
        assert t.web_sockets == ("ws://127.0.0.1/colibri-ws/x/aaaa0001",)
    assert set(owners(j)) == {"jvb"}, "nobody else has sources yet; the bridge's feedback sources are there"
    jvb = owners(j)["jvb"]
    assert [(s.ssrc, s.msid) for s in jvb.audio] == [(1111, "mixedmslabel mixedlabelaudio0")]
    assert single(net.jingles("bbbb0002", "session-initiate")).contents[0].transport.ufrag == "1-bbbb0002"  # type: ignore[union-attr]


def test_the_bridge_learns_the_offers_codecs_and_dependency_descriptor_id() -> None:
    """The focus's endpoint create, handled by the bridge's own Colibri2 handler: the packet path gets every
    video payload type of the offer (so it reads VP9 and AV1 and unwraps their RTX) and the AV1 dependency
    descriptor's id, with which it reads a sender's SVC layers."""
    net = Net()
    net.add_bridge("jvb1")
    in_call(net, "aaaa0001", "bbbb0002")
    bridge, native = fake_bridge()
    handler = Colibri2Handler(bridge)
    for request in net.colibri("jvb1"):
        handler.handle(request)
    conference = bridge.conference_by_meeting(MEETING_ID)
    assert conference is not None
    for nick in ("aaaa0001", "bbbb0002"):
        transport = conference.endpoints[nick].transport_id
        # Audio levels, the AV1 dependency descriptor and transport-wide sequence numbers, at the offer's ids.
        assert (transport, (1, 11, 5)) in native.named("set_header_extensions")
        (types,) = (t for tid, t in native.named("set_payload_types") if tid == transport)
        codec = _native.VideoCodec
        assert [(t.pt, t.codec, t.apt) for t in types] == [  # type: ignore[attr-defined]
            (111, codec.AUDIO, None),
            (100, codec.VP8, None),
            (96, codec.RTX, 100),
            (101, codec.VP9, None),
            (97, codec.RTX, 101),
            (41, codec.AV1, None),
            (42, codec.RTX, 41),
            (107, codec.H264, None),
            (99, codec.RTX, 107),
        ]


def test_accept_updates_the_bridge_and_tells_everyone_else() -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    net.colibri("jvb1")

    (reply,) = net.accept("aaaa0001", inits["aaaa0001"].sid, (100, 200))
    assert reply.get("type") == "result"
    (update,) = net.colibri("jvb1")
    (ep,) = update.endpoints
    assert ep.id == "aaaa0001" and not ep.create
    assert ep.transport is not None and ep.transport.ice is not None
    assert ep.transport.ice.ufrag == "u-aaaa0001" and ep.transport.ice.fingerprints[0].setup == "active"
    assert ep.sources is not None
    assert [(ms.type, ms.id, [s.ssrc for s in ms.sources]) for ms in ep.sources] == [
        ("audio", "aaaa0001-a0", [100]),
        ("video", "aaaa0001-v0", [200, 201]),
    ]
    assert [g.ssrcs for g in ep.sources[1].ssrc_groups] == [(200, 201)]
    assert not net.jingles("bbbb0002"), "bbbb0002 has not accepted yet: its sources come when it does"

    net.accept("bbbb0002", inits["bbbb0002"].sid, (300, 400))
    add_b = single(net.jingles("bbbb0002", "source-add"))
    assert set(owners(add_b)) == {"aaaa0001"}
    assert [s.ssrc for s in owners(add_b)["aaaa0001"].video] == [200, 201]
    add_a = single(net.jingles("aaaa0001", "source-add"))
    assert [s.ssrc for s in owners(add_a)["bbbb0002"].audio] == [300]

    # A third participant's session-initiate carries both others' sources and the bridge's.
    net.join("cccc0003")
    init_c = single(net.jingles("cccc0003", "session-initiate"))
    assert set(owners(init_c)) == {"aaaa0001", "bbbb0002", "jvb"}


def test_inline_sources_for_a_client_without_json_support() -> None:
    net = Net()
    net.add_bridge("jvb1")
    net.open_room()
    net.join("aaaa0001")
    net.join("bbbb0002", caps=True)
    (disco,) = [el for el in net.client_iqs if el.get("to") == f"{ROOM}/bbbb0002"]
    query = disco.find("{http://jabber.org/protocol/disco#info}query")
    assert query is not None and query.get("node") == "https://jitsi.org/jitsi-meet#v1"
    net.feed(
        _result(
            disco,
            x(
                '<query xmlns="http://jabber.org/protocol/disco#info">'
                '<feature var="urn:xmpp:jingle:1"/><feature var="urn:xmpp:jingle:apps:rtp:video"/></query>'
            ),
        )
    )
    init_a = single(net.jingles("aaaa0001", "session-initiate"))
    init_b = single(net.jingles("bbbb0002", "session-initiate"))
    assert init_a.json_sources is not None
    assert init_b.json_sources is None
    net.accept("aaaa0001", init_a.sid, (100, 200))
    net.accept("bbbb0002", init_b.sid, (300, 400))
    add = single(net.jingles("bbbb0002", "source-add"))
    assert add.json_sources is None
    srcs = add.sources()
    assert {(s.ssrc, s.owner) for s in srcs.audio + srcs.video} == {
        (100, "aaaa0001"),
        (200, "aaaa0001"),
        (201, "aaaa0001"),
    }
    assert srcs.video_groups == (SsrcGroup("FID", (200, 201)),)


def test_source_add_and_remove_from_a_client_reach_the_bridge_and_the_others() -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    net.accept("aaaa0001", inits["aaaa0001"].sid, (100, 200))
    net.accept("bbbb0002", inits["bbbb0002"].sid, (300, 400))
    net.jingles("aaaa0001")
    net.jingles("bbbb0002")
    net.colibri("jvb1")

    desktop = Jingle(
        action="source-add",
        sid=inits["aaaa0001"].sid,
        contents=(
            Content("video", description=Description("video", sources=(Source(500, video_type="desktop"),))),
        ),
    )
    (ok,) = net.send_jingle("aaaa0001", desktop)
    assert ok.get("type") == "result"
    (update,) = net.colibri("jvb1")
    assert update.endpoints[0].sources is not None
    assert {ms.id for ms in update.endpoints[0].sources} == {"aaaa0001-a0", "aaaa0001-v0"}
    add = single(net.jingles("bbbb0002", "source-add"))
    assert [(s.ssrc, s.video_type) for s in owners(add)["aaaa0001"].video] == [(500, "desktop")]

    # An SSRC someone else already uses is refused, and nothing changes.
    clash = Jingle(
        action="source-add",
        sid=inits["aaaa0001"].sid,
        contents=(Content("video", description=Description("video", sources=(Source(300),))),),
    )
    (refused,) = net.send_jingle("aaaa0001", clash, iq_id="j2")
    assert error_of(refused)[0] == "bad-request"
    assert not net.colibri("jvb1") and not net.jingles("bbbb0002")

    remove = Jingle(
        action="source-remove",
        sid=inits["aaaa0001"].sid,
        contents=(Content("video", description=Description("video", sources=(Source(500),))),),
    )
    net.send_jingle("aaaa0001", remove, iq_id="j3")
    gone = single(net.jingles("bbbb0002", "source-remove"))
    assert [s.ssrc for s in owners(gone)["aaaa0001"].video] == [500]
    (update,) = net.colibri("jvb1")
    assert update.endpoints[0].sources is not None
    assert 500 not in {s.ssrc for ms in update.endpoints[0].sources for s in ms.sources}


def test_transport_info_is_forwarded_to_the_bridge() -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    net.accept("aaaa0001", inits["aaaa0001"].sid, (100, 200))
    net.colibri("jvb1")
    info = Jingle(
        action="transport-info",
        sid=inits["aaaa0001"].sid,
        contents=(Content("audio", transport=client_transport("aaaa0001")),),
    )
    (ok,) = net.send_jingle("aaaa0001", info)
    assert ok.get("type") == "result"
    (update,) = net.colibri("jvb1")
    ep = update.endpoints[0]
    assert ep.sources is None and ep.transport is not None and ep.transport.ice is not None
    assert ep.transport.ice.candidates[0].port == 50000


def test_unknown_session_and_malformed_jingle_get_errors() -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    (reply,) = net.accept("aaaa0001", "not-the-sid", (1, 2))
    condition, names = error_of(reply)
    assert condition == "item-not-found"
    assert "{urn:xmpp:jingle:errors:1}unknown-session" in names
    # From someone not in any room at all.
    stranger = ET.Element(
        f"{{{CLIENT}}}iq", {"type": "set", "id": "s1", "from": "x@meet.test/r", "to": FOCUS_FULL}
    )
    stranger.append(build_jingle(session_accept("x", inits["aaaa0001"].sid, (5, 6))))
    net.feed(stranger)
    assert error_of(single_el(net.replies_to("s1")))[0] == "item-not-found"

    bad = x(
        f'<iq xmlns="{CLIENT}" type="set" id="m1" from="{ROOM}/aaaa0001" to="{FOCUS_FULL}">'
        f'<jingle xmlns="{JINGLE}" action="session-accept" sid="{inits["aaaa0001"].sid}">'
        '<content name="audio"><description xmlns="urn:xmpp:jingle:apps:rtp:1" media="audio">'
        '<source xmlns="urn:xmpp:jingle:apps:rtp:ssma:0" ssrc="-4"/></description></content></jingle></iq>'
    )
    net.feed(bad)
    (reply,) = net.replies_to("m1")
    condition, _ = error_of(reply)
    assert condition == "bad-request"
    text = reply.find(f"{{{CLIENT}}}error/{{{STANZAS}}}text")
    assert text is not None and "ssrc" in (text.text or "")
    assert net.core.stats["errors_unknown_session"] == 2 and net.core.stats["errors_bad_request"] == 1
    # The session still works after the junk.
    (ok,) = net.accept("aaaa0001", inits["aaaa0001"].sid, (100, 200))
    assert ok.get("type") == "result"


def single_el(items: list[ET.Element]) -> ET.Element:
    assert len(items) == 1, items
    return items[0]


def test_leaving_expires_the_endpoint_and_removes_its_sources() -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002", "cccc0003")
    for i, nick in enumerate(inits):
        net.accept(nick, inits[nick].sid, (100 * (i + 1), 100 * (i + 1) + 10))
    for nick in inits:
        net.jingles(nick)
    net.colibri("jvb1")

    net.leave("cccc0003")
    (expire,) = net.colibri("jvb1")
    assert [(e.id, e.expire) for e in expire.endpoints] == [("cccc0003", True)]
    for nick in ("aaaa0001", "bbbb0002"):
        removed = single(net.jingles(nick, "source-remove"))
        assert [s.ssrc for s in owners(removed)["cccc0003"].audio] == [300]

    net.leave("bbbb0002")
    net.leave("aaaa0001")
    requests = net.colibri("jvb1")
    assert requests[-1].expire and requests[-1].meeting_id == MEETING_ID
    assert net.bridges[f"{BREWERY}/jvb1"].conferences == {}
    assert any(el.get("to") == f"{ROOM}/focus" and el.get("type") == "unavailable" for el in net.sent)
    assert ROOM not in net.core.rooms


# ---- bridge failure and restarts


def test_bridge_leaving_moves_its_conference_to_another_bridge() -> None:
    net = Net()
    net.add_bridge("jvb1", stress_level="0.1")
    net.add_bridge("jvb2", stress_level="0.5")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    assert net.core.rooms[ROOM].bridge == f"{BREWERY}/jvb1"
    net.accept("aaaa0001", inits["aaaa0001"].sid, (100, 200))
    net.accept("bbbb0002", inits["bbbb0002"].sid, (300, 400))
    for nick in inits:
        net.jingles(nick)
    old_session = net.core.rooms[ROOM].bridge_session

    net.remove_bridge("jvb1")
    assert net.core.rooms[ROOM].bridge == f"{BREWERY}/jvb2"
    for nick in inits:
        terminate = single(net.jingles(nick, "session-terminate"))
        assert terminate.sid == inits[nick].sid and terminate.reason is not None
        assert terminate.bridge_session == BridgeSession(id=old_session)
    creates = net.colibri("jvb2")
    assert [e.id for r in creates for e in r.endpoints] == ["aaaa0001", "bbbb0002"]
    assert creates[0].create and not creates[1].create
    # The old sessions' sources are not announced again: the new PeerConnections bring new ones.
    assert creates[1].endpoints[0].sources == ()
    init_a = single(net.jingles("aaaa0001", "session-initiate"))
    init_b = single(net.jingles("bbbb0002", "session-initiate"))
    assert init_b.contents[0].transport is not None and init_b.contents[0].transport.ufrag == "2-bbbb0002"
    assert set(owners(init_b)) == {"jvb"}
    assert net.core.stats["participants_reinvited"] == 2
    net.accept("aaaa0001", init_a.sid, (500, 600))
    net.accept("bbbb0002", init_b.sid, (700, 800))
    assert [s.ssrc for s in owners(single(net.jingles("bbbb0002", "source-add")))["aaaa0001"].audio] == [500]
    assert [s.ssrc for s in owners(single(net.jingles("aaaa0001", "source-add")))["bbbb0002"].audio] == [700]
    updates = net.colibri("jvb2")
    assert [e.id for r in updates for e in r.endpoints] == ["aaaa0001", "bbbb0002"]


def test_failed_health_check_moves_conferences_and_the_bridge_gets_a_second_chance() -> None:
    net = Net(health_interval=10.0, failure_reset=60.0)
    jvb1 = net.add_bridge("jvb1", stress_level="0.1")
    net.add_bridge("jvb2", stress_level="0.5")
    in_call(net, "aaaa0001", "bbbb0002")
    net.advance(10.0)
    assert net.core.rooms[ROOM].bridge == f"{BREWERY}/jvb1"

    # The next check is answered with an error: the conference moves at once.
    jvb1.answer = False
    net.sent.clear()
    net.advance(10.0)
    (check,) = [el for el in net.sent if el.get("to") == jvb1.real and el[0].tag.endswith("healthcheck")]
    net.feed(_error(check, "internal-server-error"))
    assert net.core.rooms[ROOM].bridge == f"{BREWERY}/jvb2"
    assert not net.core.bridges[jvb1.jid].operational
    assert single(net.jingles("aaaa0001", "session-initiate"))

    # Healthy again, but not chosen before the failure-reset threshold.
    jvb1.answer = True
    net.advance(30.0)
    assert not net.core.bridges[jvb1.jid].operational
    net.advance(40.0)
    assert net.core.bridges[jvb1.jid].operational


def test_two_health_check_timeouts_fail_the_bridge() -> None:
    net = Net(health_interval=10.0, health_timeout=3.0)
    jvb1 = net.add_bridge("jvb1", stress_level="0.1")
    net.add_bridge("jvb2", stress_level="0.5")
    in_call(net, "aaaa0001", "bbbb0002")
    net.advance(0.0)  # the first checks, answered
    jvb1.answer = False
    net.advance(13.5)  # the check at 10 s times out at 13 s; a retry follows after half an interval
    assert net.core.bridges[jvb1.jid].operational and net.core.stats["health_timeouts"] == 1
    net.advance(10.0)
    assert net.core.stats["health_timeouts"] == 2
    assert not net.core.bridges[jvb1.jid].operational
    assert net.core.rooms[ROOM].bridge == f"{BREWERY}/jvb2"


def test_colibri_timeout_checks_the_bridge_now_and_its_health_checks_fail_it() -> None:
    net = Net(colibri_timeout=5.0, health_interval=10.0, health_timeout=3.0)
    jvb1 = net.add_bridge("jvb1", stress_level="0.1")
    net.add_bridge("jvb2", stress_level="0.5")
    net.advance(1.0)
    jvb1.answer = False  # gone silent: neither Colibri2 nor health checks are answered
    net.open_room()
    for nick in ("aaaa0001", "bbbb0002"):
        net.join(nick)
    assert not net.jingles("aaaa0001")
    net.sent.clear()
    net.advance(5.0)
    # The timeout re-creates the conference (still on jvb1, not failed by one request) and checks it now.
    assert net.core.stats["colibri_timeouts"] == 1 and net.core.stats["conference_restarts"] == 1
    assert any(el.get("to") == jvb1.real and el[0].tag.endswith("healthcheck") for el in net.sent)
    assert net.core.bridges[jvb1.jid].operational
    net.advance(12.0)  # the check and its retry time out: now the bridge is failed and the room moves
    assert not net.core.bridges[jvb1.jid].operational
    assert net.core.stats["bridges_failed"] == 1 and net.core.stats["health_timeouts"] == 2
    assert net.core.rooms[ROOM].bridge == f"{BREWERY}/jvb2"
    assert net.jingles("aaaa0001", "session-initiate")


def test_unknown_endpoint_reinvites_only_that_participant() -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    bridge = net.bridges[f"{BREWERY}/jvb1"]
    bridge.conferences[MEETING_ID].discard("aaaa0001")  # the bridge lost it (say, it expired idle)
    net.accept("aaaa0001", inits["aaaa0001"].sid, (100, 200))
    assert single(net.jingles("aaaa0001", "session-terminate"))
    assert single(net.jingles("aaaa0001", "session-initiate"))
    assert not net.jingles("bbbb0002")
    assert net.core.rooms[ROOM].bridge == f"{BREWERY}/jvb1", "unknown_endpoint does not fail the bridge"


def restart(sid: str) -> Jingle:
    return Jingle(
        action="session-terminate",
        sid=sid,
        reason=Reason("connectivity-error", "ICE FAILED"),
        bridge_session=BridgeSession(id="x", restart=True),
    )


def test_restart_requests_reinvite_and_are_rate_limited() -> None:
    # The re-invites are never accepted here: no accept timeout may end them during the test.
    net = Net(health_interval=1000.0, session_accept_timeout=1000.0)
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    sid = inits["aaaa0001"].sid
    net.accept("aaaa0001", sid, (100, 200))
    net.accept("bbbb0002", inits["bbbb0002"].sid, (300, 400))
    net.jingles("aaaa0001")
    net.jingles("bbbb0002")
    net.colibri("jvb1")

    (ok,) = net.send_jingle("aaaa0001", restart(sid))
    assert ok.get("type") == "result"
    assert [e.expire for r in net.colibri("jvb1") for e in r.endpoints][:1] == [True]
    assert [s.ssrc for s in owners(single(net.jingles("bbbb0002", "source-remove")))["aaaa0001"].audio] == [
        100
    ]
    sid = single(net.jingles("aaaa0001", "session-initiate")).sid

    net.advance(2.0)  # too soon (5 s minimum)
    (refused,) = net.send_jingle("aaaa0001", restart(sid), iq_id="r2")
    assert error_of(refused)[0] == "resource-constraint"
    assert not net.jingles("aaaa0001")

    for _ in range(4):
        net.advance(5.0)
        (ok,) = net.send_jingle("aaaa0001", restart(sid), iq_id="r3")
        assert ok.get("type") == "result"
        sid = single(net.jingles("aaaa0001", "session-initiate")).sid
    net.advance(5.0)  # a sixth restart within the minute
    (refused,) = net.send_jingle("aaaa0001", restart(sid), iq_id="r4")
    assert error_of(refused)[0] == "resource-constraint"
    assert net.core.stats["restarts"] == 5 and net.core.stats["restarts_rate_limited"] == 2
    net.advance(40.0)
    (ok,) = net.send_jingle("aaaa0001", restart(sid), iq_id="r5")
    assert ok.get("type") == "result"


def test_plain_terminate_ends_the_session_without_reinvite() -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    net.send_jingle(
        "aaaa0001", Jingle(action="session-terminate", sid=inits["aaaa0001"].sid, reason=Reason("success"))
    )
    assert [(e.id, e.expire) for r in net.colibri("jvb1")[-1:] for e in r.endpoints] == [("aaaa0001", True)]
    net.join("cccc0003")
    assert not net.jingles("aaaa0001"), "a participant that hung up is not invited again"


# ---- no bridge


def test_no_bridge_then_one_appears() -> None:
    net = Net()
    net.open_room()
    net.join("aaaa0001")
    net.join("bbbb0002")
    (presence,) = [el for el in net.sent if el.find(f"{{{CLIENT}}}bridgeNotAvailable") is not None]
    assert presence.get("to") == f"{ROOM}/focus"
    net.add_bridge("jvb1")
    assert single(net.jingles("aaaa0001", "session-initiate"))
    cleared = [el for el in net.sent if el.get("to") == f"{ROOM}/focus" and el.get("type") is None]
    assert cleared and cleared[-1].find(f"{{{CLIENT}}}bridgeNotAvailable") is None


# ---- mute


def mute_iq(actor: str, target: str, value: str = "true", iq_id: str = "mute1") -> ET.Element:
    return x(
        f'<iq xmlns="{CLIENT}" type="set" id="{iq_id}" from="{ROOM}/{actor}" to="{FOCUS_FULL}">'
        f'<mute xmlns="http://jitsi.org/jitmeet/audio" jid="{ROOM}/{target}">{value}</mute></iq>'
    )


def test_a_moderator_mutes_another_participant() -> None:
    net = Net()
    net.add_bridge("jvb1")
    in_call(net, "aaaa0001", "bbbb0002")  # aaaa0001 was made owner
    net.colibri("jvb1")
    net.client_iqs.clear()

    net.feed(mute_iq("bbbb0002", "aaaa0001"))
    assert error_of(single_el(net.replies_to("mute1")))[0] == "not-allowed"
    assert not net.colibri("jvb1")

    net.feed(mute_iq("aaaa0001", "bbbb0002", iq_id="mute2"))
    assert single_el(net.replies_to("mute2")).get("type") == "result"
    (forwarded,) = [el for el in net.client_iqs if el.get("to") == f"{ROOM}/bbbb0002"]
    mute = forwarded.find("{http://jitsi.org/jitmeet/audio}mute")
    assert mute is not None and mute.text == "true" and mute.get("actor") == f"{ROOM}/aaaa0001"
    (force,) = net.colibri("jvb1")
    assert force.endpoints[0].id == "bbbb0002"
    assert force.endpoints[0].force_mute == c2.ForceMute(audio=True, video=False)

    # bbbb0002 mutes (presence true), later unmutes itself: the bridge lets its audio through again.
    for value in ("true", "false"):
        net.feed(
            x(
                f'<presence xmlns="{CLIENT}" from="{ROOM}/bbbb0002"><x xmlns="{MUC_USER}">'
                f'<item affiliation="none" role="participant" jid="bbbb0002-user@{DOMAIN}/res"/></x>'
                f'<audiomuted xmlns="http://jitsi.org/jitmeet/audio">{value}</audiomuted></presence>'
            )
        )
    (lift,) = net.colibri("jvb1")
    assert lift.endpoints[0].force_mute == c2.ForceMute(audio=False, video=False)


def test_junk_stanzas_do_not_break_the_focus() -> None:
    net = Net()
    net.add_bridge("jvb1")
    for junk in (
        f'<iq xmlns="{CLIENT}" type="set" id="k1" from="a@b/c"/>',
        f'<iq xmlns="{CLIENT}" type="banana" id="k2" from="a@b/c"><x xmlns="y"/></iq>',
        f'<iq xmlns="{CLIENT}" type="set" id="k3" from="{ROOM}/zz"><mute xmlns="http://jitsi.org/jitmeet/audio"/></iq>',
        f'<presence xmlns="{CLIENT}" from="{BREWERY}/jvb9"><stats xmlns="http://jitsi.org/protocol/colibri">'
        '<stat name="stress_level" value="NaNish"/></stats></presence>',
        f'<iq xmlns="{CLIENT}" type="result" id="never-sent"/>',
    ):
        net.feed(x(junk))
    replies = [el for el in net.sent if el.get("id") in ("k1", "k2", "k3")]
    assert [error_of(r)[0] for r in replies] == ["service-unavailable", "bad-request", "bad-request"]
    inits = in_call(net, "aaaa0001", "bbbb0002")
    assert set(inits) == {"aaaa0001", "bbbb0002"}


def ice_restart(sid: str, bridge_session: str | None) -> Jingle:
    return Jingle(
        action="session-info", sid=sid, bridge_session=BridgeSession(id=bridge_session, ice_restart=True)
    )


def test_an_ice_restart_request_restarts_the_endpoint_in_place_and_sends_its_new_transport() -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    init = inits["aaaa0001"]
    assert init.bridge_session is not None
    net.accept("aaaa0001", init.sid, (100, 200))
    net.accept("bbbb0002", inits["bbbb0002"].sid, (300, 400))
    net.jingles("aaaa0001")
    net.jingles("bbbb0002")
    net.colibri("jvb1")

    (ok,) = net.send_jingle("aaaa0001", ice_restart(init.sid, init.bridge_session.id))
    assert ok.get("type") == "result"
    (request,) = net.colibri("jvb1")
    (ep,) = request.endpoints
    assert ep.id == "aaaa0001" and ep.transport is not None and ep.transport.ice_restart
    assert ep.transport.ice is None and ep.sources is None
    # The bridge's new transport goes to the client as a transport-info of the same session, tagged.
    (info,) = net.jingles("aaaa0001")
    assert (info.action, info.sid) == ("transport-info", init.sid)
    transports = {c.name: c.transport for c in info.contents}
    assert set(transports) == {"audio", "video"}
    t = transports["audio"]
    assert t is not None and (t.ufrag, t.ice_generation) == ("1-aaaa0001-g1", 1)
    assert t.candidates and t.fingerprints
    assert not net.jingles("bbbb0002"), "the others hear nothing of it"
    assert net.core.stats["ice_restarts"] == 1

    # The client answers with its new credentials, tagged: they go to the bridge like any transport-info.
    answer = IceTransport(
        ufrag="u-new",
        pwd="n" * 22,
        fingerprints=(JFingerprint("sha-256", "CC:DD", "active"),),
        ice_generation=1,
    )
    info = Jingle(action="transport-info", sid=init.sid, contents=(Content("audio", transport=answer),))
    (ok,) = net.send_jingle("aaaa0001", info, iq_id="ti")
    assert ok.get("type") == "result"
    (update,) = net.colibri("jvb1")
    ice = update.endpoints[0].transport.ice if update.endpoints[0].transport else None
    assert ice is not None and (ice.ufrag, ice.pwd) == ("u-new", "n" * 22) and ice.fingerprints


def test_ice_restart_requests_are_refused_when_off_stale_early_or_too_many() -> None:
    net = Net(enable_ice_restart=False)
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    init = inits["aaaa0001"]
    assert init.bridge_session is not None
    (refused,) = net.send_jingle("aaaa0001", ice_restart(init.sid, init.bridge_session.id))
    assert error_of(refused)[0] == "feature-not-implemented"

    net = Net(health_interval=1000.0)
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    init = inits["aaaa0001"]
    assert init.bridge_session is not None
    bs = init.bridge_session.id
    (refused,) = net.send_jingle("aaaa0001", ice_restart(init.sid, bs), iq_id="early")
    assert error_of(refused)[0] == "unexpected-request", "not before session-accept"
    net.accept("aaaa0001", init.sid, (100, 200))
    net.colibri("jvb1")
    (refused,) = net.send_jingle("aaaa0001", ice_restart(init.sid, "another"), iq_id="stale")
    assert error_of(refused)[0] == "item-not-found"
    assert not net.colibri("jvb1")

    # Jicofo's restart limits: 5 s apart, 5 a minute.
    (ok,) = net.send_jingle("aaaa0001", ice_restart(init.sid, bs), iq_id="r1")
    assert ok.get("type") == "result"
    net.advance(2.0)
    (refused,) = net.send_jingle("aaaa0001", ice_restart(init.sid, bs), iq_id="r2")
    assert error_of(refused)[0] == "resource-constraint"
    for i in range(4):
        net.advance(5.0)
        (ok,) = net.send_jingle("aaaa0001", ice_restart(init.sid, bs), iq_id=f"r3{i}")
        assert ok.get("type") == "result"
    net.advance(5.0)
    (refused,) = net.send_jingle("aaaa0001", ice_restart(init.sid, bs), iq_id="r4")
    assert error_of(refused)[0] == "resource-constraint"
    assert net.core.stats["ice_restarts"] == 5 and net.core.stats["ice_restarts_rate_limited"] == 2
    generations = [
        c.transport.ice_generation
        for j in net.jingles("aaaa0001", "transport-info")
        for c in j.contents[:1]
        if c.transport is not None
    ]
    assert generations == [1, 2, 3, 4, 5]
    assert not net.jingles("aaaa0001", "session-terminate")


def test_a_bridge_that_does_not_restart_ice_sends_the_client_nothing() -> None:
    net = Net()
    bridge = net.add_bridge("jvb1")
    bridge.ice_restarts_allowed = False
    inits = in_call(net, "aaaa0001", "bbbb0002")
    init = inits["aaaa0001"]
    assert init.bridge_session is not None
    net.accept("aaaa0001", init.sid, (100, 200))
    net.jingles("aaaa0001")
    (ok,) = net.send_jingle("aaaa0001", ice_restart(init.sid, init.bridge_session.id))
    assert ok.get("type") == "result"
    assert not net.jingles("aaaa0001"), (
        "no transport-info: the client's own timer falls back to a new session"
    )
    assert net.core.stats["ice_restarts_refused"] == 1
    assert net.core.rooms[ROOM].bridge == f"{BREWERY}/jvb1", "not a bridge failure"
