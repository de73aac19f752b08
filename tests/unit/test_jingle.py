"""Jingle model <-> XML and the compact JSON sources (docs/jitsi-protocol.md 5.4-5.5), on recorded Jitsi
stanzas.

The stanzas in tests/data/jingle/ are written in the shape Jicofo and lib-jitsi-meet (Chrome) send them:
session-initiate with BUNDLE, the bridge's transport, bridge-session and json-message; session-accept with
simulcast sources (SIM + FID groups) and an SCTP data content; source-add/remove; trickle transport-info;
session-terminate asking for a restart.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colibri2.xml import to_string
from signaling.jingle import (
    BridgeSession,
    Content,
    Description,
    EndpointSources,
    Group,
    IceTransport,
    Jingle,
    JingleError,
    Reason,
    SctpMap,
    Source,
    SsrcGroup,
    StartMuted,
    build_jingle,
    parse_jingle,
)
from signaling.jingle import sources as json_sources
from signaling.jingle.model import ACTIONS, Candidate, Fingerprint, Parameter, PayloadType, RtcpFb, RtpHdrExt
from signaling.jingle.xml import REASONS

DATA = Path(__file__).resolve().parents[1] / "data" / "jingle"
RECORDED = sorted(p.name for p in DATA.glob("*.xml"))


def recorded(name: str) -> ET.Element:
    return ET.fromstring((DATA / name).read_bytes())


def reparse(j: Jingle) -> Jingle:
    """model -> XML text (with default namespaces, as XMPP peers write it) -> model."""
    return parse_jingle(ET.fromstring(to_string(build_jingle(j))))


# ---- recorded stanzas


def test_session_initiate_from_jicofo() -> None:
    j = parse_jingle(recorded("session-initiate.xml"))
    assert (j.action, j.sid, j.initiator) == (
        "session-initiate",
        "4hbc2kq0oqv1t",
        "focus@auth.example.org/focus",
    )
    assert [c.name for c in j.contents] == ["audio", "video", "data"]
    assert j.groups == (Group("BUNDLE", ("audio", "video", "data")),)
    assert j.bridge_session == BridgeSession(id="3c5b8e3e-8f0a-4d0c-9b7f-2f1a6e1d9c44", region="us-east-1")

    audio = j.content("audio")
    assert audio is not None and audio.description is not None
    assert audio.description.maxptime == 60 and audio.description.rtcp_mux
    opus = audio.description.payload_types[0]
    assert (opus.id, opus.name, opus.clockrate, opus.channels) == (111, "opus", 48000, 2)
    assert opus.parameters == (Parameter("minptime", "10"), Parameter("useinbandfec", "1"))
    assert opus.rtcp_fbs == (RtcpFb("transport-cc"),)
    assert next((e.id, e.uri) for e in audio.description.rtp_hdrexts) == (
        1,
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    )
    assert audio.description.extmap_allow_mixed

    transport = j.transport()
    assert transport is not None
    assert (transport.ufrag, transport.pwd, transport.rtcp_mux) == (
        "26ant1ghmepk0a",
        "9q8uhs7dpfm7ph1kuqe8s32r4f",
        True,
    )
    assert [f.setup for f in transport.fingerprints] == ["actpass"]
    assert [(c.type, c.ip, c.port) for c in transport.candidates] == [
        ("host", "198.51.100.7", 10000),
        ("srflx", "203.0.113.20", 10000),
    ]
    assert transport.candidates[1].rel_addr == "198.51.100.7"
    assert transport.web_sockets[0].startswith("wss://meet.example.org/colibri-ws/")
    data = j.content("data")
    assert data is not None and data.transport is not None
    assert data.transport.sctpmap == SctpMap(5000, "webrtc-datachannel", 1024)

    assert j.json_sources is not None
    owners = dict(j.json_sources)
    assert list(owners) == ["jvb", "efgh5678"]
    assert [(s.ssrc, s.name, s.msid) for s in owners["jvb"].video] == [
        (1863439907, "jvb-v0", "mixedmslabel mixedlabelvideo0")
    ]
    remote = owners["efgh5678"]
    assert len(remote.video) == 6 and len(remote.audio) == 1
    assert remote.video_groups[0] == SsrcGroup("SIM", (2227365017, 1012453811, 4003718253))
    assert [g.semantics for g in remote.video_groups] == ["SIM", "FID", "FID", "FID"]
    assert {s.owner for s in remote.video + remote.audio} == {"efgh5678"}


def test_session_accept_from_chrome_via_lib_jitsi_meet() -> None:
    j = parse_jingle(recorded("session-accept.xml"))
    assert j.action == "session-accept" and j.responder is not None and j.responder.endswith("/hY3jQ9mK")
    sources = j.sources(owner="abcd1234")
    assert [s.ssrc for s in sources.audio] == [2876543210]
    assert len(sources.video) == 6 and {s.name for s in sources.video} == {"abcd1234-v0"}
    assert {s.video_type for s in sources.video} == {"camera"}
    assert {s.owner for s in sources.video} == {"abcd1234"}
    assert sources.video[0].msid == (
        "b7e3f5a1-2c4d-4e6f-8a9b-0c1d2e3f4a5b 5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f"
    )
    assert [g.semantics for g in sources.video_groups] == ["SIM", "FID", "FID", "FID"]
    transport = j.transport()
    assert transport is not None and transport.ufrag == "N4iQ"
    assert transport.fingerprints[0].setup == "active"
    assert [c.port for c in transport.candidates] == [53127]


def test_source_add_and_remove_carry_the_same_desktop_source() -> None:
    add = parse_jingle(recorded("source-add.xml"))
    remove = parse_jingle(recorded("source-remove.xml"))
    assert (add.action, remove.action) == ("source-add", "source-remove")
    added = add.sources("abcd1234")
    assert added == remove.sources("abcd1234")
    assert [(s.ssrc, s.video_type) for s in added.video] == [(3912877315, "desktop"), (1488263390, "desktop")]
    assert added.video_groups == (SsrcGroup("FID", (3912877315, 1488263390)),)
    assert not added.audio


def test_transport_info_trickles_one_candidate() -> None:
    j = parse_jingle(recorded("transport-info.xml"))
    transport = j.transport()
    assert j.action == "transport-info" and transport is not None
    (candidate,) = transport.candidates
    assert (candidate.type, candidate.ip, candidate.port, candidate.rel_port) == (
        "srflx",
        "203.0.113.99",
        61522,
        53127,
    )
    assert all(c.description is None for c in j.contents)


def test_session_terminate_asking_for_restart() -> None:
    j = parse_jingle(recorded("session-terminate-restart.xml"))
    assert j.reason == Reason("success", "ICE FAILED")
    assert j.bridge_session is not None and j.bridge_session.restart is True


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_stanzas_are_stable_through_build(name: str) -> None:
    """XML -> model -> XML -> model is stable, and the built XML is what was recorded, element for element."""
    original = recorded(name)
    first = parse_jingle(original)
    assert reparse(first) == first
    built = build_jingle(first)
    jingle_el = original.find("{urn:xmpp:jingle:1}jingle")
    assert jingle_el is not None
    assert _shape(built) == _shape(jingle_el)


def _shape(el: ET.Element) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every element's tag and attributes in document order, ignoring legacy attributes we drop."""
    dropped = {("{urn:xmpp:jingle:apps:rtp:1}description", "ssrc")}
    return [
        (e.tag, tuple(sorted((k, v) for k, v in e.attrib.items() if (e.tag, k) not in dropped)))
        for e in sorted(el.iter(), key=lambda e: e.tag)
    ]


# ---- malformed input: a JingleError naming what is wrong


def _jingle(body: str = "", **attrs: str) -> ET.Element:
    defaults = {"action": "session-accept", "sid": "s1"}
    defaults.update(attrs)
    attr_text = " ".join(f'{k}="{v}"' for k, v in defaults.items() if v != "-")
    return ET.fromstring(f'<jingle xmlns="urn:xmpp:jingle:1" {attr_text}>{body}</jingle>')


RTP = 'xmlns="urn:xmpp:jingle:apps:rtp:1"'
ICE = 'xmlns="urn:xmpp:jingle:transports:ice-udp:1"'


@pytest.mark.parametrize(
    ("element", "message"),
    [
        (_jingle(sid="-"), "lacks the 'sid'"),
        (_jingle(action="-"), "lacks the 'action'"),
        (_jingle(action="session-dance"), "unknown action 'session-dance'"),
        (_jingle(sid=""), "empty sid"),
        (_jingle("<content/>"), "<content> lacks the 'name'"),
        (_jingle('<content name="a"/><content name="a"/>'), "duplicate content names"),
        (
            _jingle(
                f'<content name="audio"><description {RTP} media="audio"><payload-type id="300"/>'
                "</description></content>"
            ),
            "<payload-type id> is out of range: 300",
        ),
        (
            _jingle(
                f'<content name="audio"><description {RTP} media="audio"><payload-type id="x1"/>'
                "</description></content>"
            ),
            "<payload-type id> is not an integer",
        ),
        (_jingle(f'<content name="audio"><description {RTP}/></content>'), "<description> lacks the 'media'"),
        (
            _jingle(
                f'<content name="audio"><description {RTP} media="audio">'
                '<source xmlns="urn:xmpp:jingle:apps:rtp:ssma:0" ssrc="4294967296"/></description></content>'
            ),
            "<source ssrc> is out of range",
        ),
        (
            _jingle(
                f'<content name="audio"><description {RTP} media="audio">'
                '<ssrc-group xmlns="urn:xmpp:jingle:apps:rtp:ssma:0" semantics="FID"/>'
                "</description></content>"
            ),
            "has no <source>",
        ),
        (
            _jingle(
                f'<content name="audio"><transport {ICE}><candidate component="1" foundation="1" ip="1.2.3.4"'
                ' priority="1" protocol="udp" type="host"/></transport></content>'
            ),
            "<candidate> lacks the 'port'",
        ),
        (
            _jingle(
                f'<content name="audio"><transport {ICE}>'
                '<fingerprint xmlns="urn:xmpp:jingle:apps:dtls:0" hash="sha-256"> </fingerprint>'
                "</transport></content>"
            ),
            "<fingerprint> is empty",
        ),
        (
            _jingle('<content name="a"><transport xmlns="urn:xmpp:jingle:transports:raw-udp:1"/></content>'),
            "unsupported transport",
        ),
        (_jingle("<reason><text>why</text></reason>"), "<reason> has no condition"),
        (_jingle("<reason><because/></reason>"), "unknown condition <because>"),
        (
            _jingle('<bridge-session xmlns="http://jitsi.org/protocol/focus" restart="yes"/>'),
            "<bridge-session restart> is not a boolean",
        ),
        (
            _jingle('<json-message xmlns="http://jitsi.org/jitmeet">{"sources": 3</json-message>'),
            "is not JSON",
        ),
        (_jingle('<json-message xmlns="http://jitsi.org/jitmeet">{"x": {}}</json-message>'), "no 'sources'"),
        (
            ET.fromstring('<iq xmlns="jabber:client" type="set"><ping xmlns="urn:xmpp:ping"/></iq>'),
            "no <jingle",
        ),
    ],
)
def test_malformed_jingle_is_a_clear_error(element: ET.Element, message: str) -> None:
    with pytest.raises(JingleError) as info:
        parse_jingle(element)
    assert message in info.value.text
    assert info.value.condition == "bad-request"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"sources": {"a": [[], []]}}', "2 parts, not 3 or 4"),
        ('{"sources": {"a": [[{"s": -1}], [], []]}}', "is not a 32-bit unsigned integer"),
        ('{"sources": {"a": [[{"s": true}], [], []]}}', "is not a 32-bit unsigned integer"),
        ('{"sources": {"a": [[{"s": 1, "n": 5}], [], []]}}', "'n' is not a string"),
        ('{"sources": {"a": [[{"s": 1, "v": "x"}], [], []]}}', "unknown video type"),
        ('{"sources": {"a": [[], [["q", 1, 2]], []]}}', "unknown group semantics 'q'"),
        ('{"sources": {"a": [[], [[]], []]}}', "not a non-empty array"),
        ('{"sources": {"a": {}}}', "is not an array"),
        ('{"sources": {"a": [[1], [], []]}}', "a source is not an object"),
        ("[" * 100_000, "is not JSON"),
    ],
)
def test_malformed_json_sources(text: str, message: str) -> None:
    with pytest.raises(JingleError) as info:
        json_sources.decode(text)
    assert message in info.value.text


def test_json_sources_encode_like_jicofo() -> None:
    es = EndpointSources(
        audio=(Source(11, "e1-a0", parameters=(Parameter("msid", "s a"),), owner="e1"),),
        video=(
            Source(21, "e1-v0", video_type="desktop", owner="e1"),
            Source(22, "e1-v0", video_type="desktop", owner="e1"),
        ),
        video_groups=(SsrcGroup("FID", (21, 22)),),
    )
    text = json_sources.encode([("e1", es)])
    assert text == (
        '{"sources":{"e1":[[{"s":21,"n":"e1-v0","v":"d"},{"s":22,"n":"e1-v0","v":"d"}],[["f",21,22]],'
        '[{"s":11,"n":"e1-a0","m":"s a"}]]}}'
    )
    assert json_sources.decode(text) == (("e1", es),)
    with pytest.raises(ValueError, match="FEC-FR"):
        json_sources.encode([("e1", EndpointSources(video_groups=(SsrcGroup("FEC-FR", (1, 2)),)))])


# ---- hypothesis round trips

_word = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/+", min_size=1, max_size=12
)
_opt_word = st.none() | _word
_u32 = st.integers(0, 0xFFFF_FFFF)
_u16 = st.integers(0, 0xFFFF)
_opt_bool = st.none() | st.booleans()

_parameters = st.lists(st.builds(Parameter, _word, _opt_word), max_size=2).map(tuple)
_payload_types = st.builds(
    PayloadType,
    id=st.integers(0, 127),
    name=_opt_word,
    clockrate=st.none() | _u32,
    channels=st.none() | st.integers(0, 255),
    parameters=_parameters,
    rtcp_fbs=st.lists(st.builds(RtcpFb, _word, _opt_word), max_size=3).map(tuple),
)
_sources = st.builds(
    Source,
    ssrc=_u32,
    name=_opt_word,
    video_type=_opt_word,
    parameters=_parameters,
    owner=_opt_word,
)
_groups = st.builds(
    SsrcGroup, st.sampled_from(["SIM", "FID", "FEC-FR"]), st.lists(_u32, min_size=1, max_size=3).map(tuple)
)
_descriptions = st.builds(
    Description,
    media=st.sampled_from(["audio", "video", "application"]),
    maxptime=st.none() | _u32,
    payload_types=st.lists(_payload_types, max_size=3).map(tuple),
    rtp_hdrexts=st.lists(st.builds(RtpHdrExt, st.integers(0, 255), _word), max_size=3).map(tuple),
    extmap_allow_mixed=st.booleans(),
    rtcp_mux=st.booleans(),
    sources=st.lists(_sources, max_size=3).map(tuple),
    ssrc_groups=st.lists(_groups, max_size=2).map(tuple),
)
_candidates = st.builds(
    Candidate,
    component=st.integers(1, 256),
    foundation=_word,
    generation=st.none() | _u32,
    id=_opt_word,
    ip=st.sampled_from(["127.0.0.1", "198.51.100.7", "2001:db8::1"]),
    network=st.none() | _u32,
    port=_u16,
    priority=_u32,
    protocol=st.sampled_from(["udp", "tcp"]),
    type=st.sampled_from(["host", "srflx", "prflx", "relay"]),
    rel_addr=st.none() | st.just("10.0.0.1"),
    rel_port=st.none() | _u16,
)
_transports = st.builds(
    IceTransport,
    ufrag=_opt_word,
    pwd=_opt_word,
    candidates=st.lists(_candidates, max_size=3).map(tuple),
    rtcp_mux=st.booleans(),
    fingerprints=st.lists(
        st.builds(Fingerprint, st.sampled_from(["sha-256", "sha-1"]), _word, _opt_word, _opt_bool), max_size=2
    ).map(tuple),
    web_sockets=st.lists(_word, max_size=2).map(tuple),
    sctpmap=st.none() | st.builds(SctpMap, _u16, _word, st.none() | _u16),
)


@st.composite
def _contents(draw: st.DrawFn) -> tuple[Content, ...]:
    names = draw(st.lists(_word, max_size=3, unique=True))
    return tuple(
        Content(
            name=n,
            creator=draw(_opt_word),
            senders=draw(st.none() | st.sampled_from(["both", "initiator", "responder", "none"])),
            description=draw(st.none() | _descriptions),
            transport=draw(st.none() | _transports),
        )
        for n in names
    )


def _json_source(kind: str, owner: str) -> st.SearchStrategy[Source]:
    return st.builds(
        Source,
        ssrc=_u32,
        name=_opt_word,
        video_type=st.none() | st.just("desktop"),
        parameters=st.none().map(lambda _: ()) | _word.map(lambda m: (Parameter("msid", m),)),
        owner=st.just(owner),
    )


@st.composite
def _endpoint_sources(draw: st.DrawFn, owner: str) -> EndpointSources:
    group = st.builds(SsrcGroup, st.sampled_from(["SIM", "FID"]), st.lists(_u32, max_size=3).map(tuple))
    return EndpointSources(
        audio=tuple(draw(st.lists(_json_source("audio", owner), max_size=2))),
        audio_groups=tuple(draw(st.lists(group, max_size=2))),
        video=tuple(draw(st.lists(_json_source("video", owner), max_size=3))),
        video_groups=tuple(draw(st.lists(group, max_size=2))),
    )


@st.composite
def _sources_maps(draw: st.DrawFn) -> tuple[tuple[str, EndpointSources], ...]:
    owners = draw(st.lists(_word, max_size=3, unique=True))
    return tuple((o, draw(_endpoint_sources(o))) for o in owners)


_jingles = st.builds(
    Jingle,
    action=st.sampled_from(sorted(ACTIONS)),
    sid=_word,
    initiator=_opt_word,
    responder=_opt_word,
    contents=_contents(),
    groups=st.lists(st.builds(Group, _word, st.lists(_word, max_size=3).map(tuple)), max_size=1).map(tuple),
    bridge_session=st.none() | st.builds(BridgeSession, _opt_word, _opt_word, _opt_bool, _opt_bool),
    json_sources=st.none() | _sources_maps(),
    reason=st.none() | st.builds(Reason, st.sampled_from(sorted(REASONS)), st.none() | _word),
    start_muted=st.none() | st.builds(StartMuted, _opt_bool, _opt_bool),
)


@settings(max_examples=200, deadline=None)
@given(_jingles)
def test_model_to_xml_to_model_is_identity(j: Jingle) -> None:
    assert reparse(j) == j
    # ElementTree's own serializer (prefixed namespaces) reads back the same.
    assert parse_jingle(ET.fromstring(ET.tostring(build_jingle(j)))) == j


@settings(max_examples=200, deadline=None)
@given(_sources_maps())
def test_json_sources_round_trip(sources: tuple[tuple[str, EndpointSources], ...]) -> None:
    assert json_sources.decode(json_sources.encode(sources)) == sources


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(RECORDED), st.data())
def test_xml_to_model_to_xml_is_stable_under_edits(name: str, data: st.DataObject) -> None:
    """Recorded stanzas with a generated sid and extra contents: XML -> model -> XML -> model is stable."""
    base = parse_jingle(recorded(name))
    extra = data.draw(_contents())
    names = {c.name for c in base.contents}
    edited = Jingle(
        action=base.action,
        sid=data.draw(_word),
        initiator=base.initiator,
        responder=base.responder,
        contents=base.contents + tuple(c for c in extra if c.name not in names),
        groups=base.groups,
        bridge_session=base.bridge_session,
        json_sources=base.json_sources,
        reason=base.reason,
        start_muted=base.start_muted,
    )
    once = reparse(edited)
    assert reparse(once) == once == edited
