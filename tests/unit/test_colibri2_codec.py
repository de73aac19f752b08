"""Colibri2 XML and JSON codecs: recorded examples, round trips, and malformed input (pure, no sockets)."""

from __future__ import annotations

import contextlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colibri2 import json as cjson
from colibri2 import xml as cxml
from colibri2.model import (
    MAX_STATS_ID_LENGTH,
    Candidate,
    Colibri2Error,
    ConferenceModified,
    ConferenceModify,
    Endpoint,
    Fingerprint,
    ForceMute,
    IceUdpTransport,
    Media,
    MediaSource,
    Parameter,
    PayloadType,
    Reason,
    Relay,
    RtcpFb,
    RtpHdrExt,
    Sctp,
    SourceDesc,
    SsrcGroupDesc,
    Transport,
    check_endpoint_id,
    check_meeting_id,
    check_stats_id,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "colibri2"
REQUESTS = sorted(DATA.glob("*.request.xml"))
RESPONSES = sorted(DATA.glob("*.response.xml"))


def canonical(el: ET.Element | str) -> str:
    text = cxml.to_string(el) if isinstance(el, ET.Element) else el
    return ET.canonicalize(text, strip_text=True)


def payload(path: Path) -> str:
    iq = ET.fromstring(path.read_bytes())
    (child,) = list(iq)
    return cxml.to_string(child)


def test_the_recorded_examples_exist() -> None:
    assert len(REQUESTS) >= 6 and len(RESPONSES) >= 2


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.name)
def test_recorded_request_round_trips_canonically(path: Path) -> None:
    parsed = cxml.parse_conference_modify(path.read_bytes())
    built = cxml.build_conference_modify(parsed)
    assert canonical(built) == canonical(payload(path))
    assert cxml.parse_conference_modify(cxml.to_string(built)) == parsed
    assert cjson.conference_modify_from_json(json.dumps(cjson.conference_modify_to_json(parsed))) == parsed


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.name)
def test_recorded_response_round_trips_canonically(path: Path) -> None:
    parsed = cxml.parse_conference_modified(path.read_bytes())
    built = cxml.build_conference_modified(parsed)
    assert canonical(built) == canonical(payload(path))
    assert cxml.parse_conference_modified(cxml.to_string(built)) == parsed
    assert (
        cjson.conference_modified_from_json(json.dumps(cjson.conference_modified_to_json(parsed))) == parsed
    )


def test_create_request_carries_what_jicofo_sends() -> None:
    req = cxml.parse_conference_modify((DATA / "create-conference.request.xml").read_bytes())
    assert req.create and req.name == "room1@conference.example.org"
    (ep,) = req.endpoints
    assert ep.create and ep.stats_id == "Alice-x1y" and "source-names" in ep.capabilities
    audio, video = ep.medias
    opus = audio.payload_types[0]
    assert (opus.id, opus.name, opus.clockrate, opus.channels) == (111, "opus", 48000, 2)
    assert Parameter("useinbandfec", "1") in opus.parameters and opus.rtcp_fbs == (RtcpFb("transport-cc"),)
    assert RtcpFb("nack", "pli") in video.payload_types[0].rtcp_fbs
    assert (
        audio.extmap_allow_mixed
        and RtpHdrExt(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level") in audio.rtp_hdrexts
    )
    assert ep.transport == Transport(ice_controlling=True)
    assert ep.sources == () and ep.force_mute == ForceMute(audio=True, video=False)


def test_response_carries_transport_and_feedback_sources() -> None:
    resp = cxml.parse_conference_modified((DATA / "create-conference.response.xml").read_bytes())
    (ep,) = resp.endpoints
    assert ep.transport is not None and ep.transport.ice is not None
    ice = ep.transport.ice
    assert ice.rtcp_mux and ice.fingerprints[0].setup == "actpass" and ice.fingerprints[0].hash == "sha-256"
    assert ice.candidates[1].rel_addr == "10.0.0.4" and ice.candidates[1].rel_port == 10000
    assert ice.web_sockets[0].startswith("wss://")
    assert resp.sources is not None
    assert [(ms.id, ms.sources[0].ssrc) for ms in resp.sources] == [
        ("jvb-a0", 3191927963),
        ("jvb-v0", 1863439907),
    ]


def test_sources_with_groups_and_msid() -> None:
    req = cxml.parse_conference_modify((DATA / "update-endpoint.request.xml").read_bytes())
    (ep,) = req.endpoints
    assert ep.sources is not None and ep.initial_last_n == 5
    audio, video = ep.sources
    assert audio.sources[0].parameters == (Parameter("msid", "stream-a track-a"),)
    assert video.ssrc_groups[0] == SsrcGroupDesc("SIM", (2001, 2002, 2003))
    assert [g.semantics for g in video.ssrc_groups] == ["SIM", "FID", "FID", "FID"]
    assert video.sources[0].video_type == "camera"


def test_relay_is_parsed_and_kept() -> None:
    req = cxml.parse_conference_modify((DATA / "relay-create.request.xml").read_bytes())
    (relay,) = req.relays
    assert relay.id == "jvb-b2" and relay.mesh_id == "0" and relay.create
    assert relay.transport == Transport(ice_controlling=True, use_unique_port=True, sctp=Sctp(5000, "client"))
    assert relay.endpoints is not None and relay.endpoints[0].id == "ijkl9012"


def test_error_round_trip_matches_the_recorded_unknown_endpoint_error() -> None:
    recorded = (DATA / "error-unknown-endpoint.xml").read_bytes()
    err = cxml.parse_error(recorded)
    assert err == Colibri2Error(
        "item-not-found", "Endpoint not found for ID: zzzz9999", Reason.UNKNOWN_ENDPOINT, "zzzz9999"
    )
    assert err.type == "cancel"
    assert canonical(cxml.build_error(err)) == canonical(payload(DATA / "error-unknown-endpoint.xml"))


def test_unknown_attributes_and_elements_are_ignored() -> None:
    text = (
        '<conference-modify xmlns="jitsi:colibri2" meeting-id="m" future="x">'
        '<endpoint id="a" diarize="true"><something-new/><force-mute audio="true"/></endpoint>'
        '<traceparent xmlns="urn:w3c"/></conference-modify>'
    )
    req = cxml.parse_conference_modify(text)
    assert req.endpoints == (Endpoint("a", force_mute=ForceMute(audio=True)),)


MALFORMED_XML = [
    b"",
    b"<conference-modify",
    b"not xml at all",
    b'<conference-modify meeting-id="m"/>',  # no namespace
    b'<conference-modified xmlns="jitsi:colibri2"/>',  # the wrong element
    b'<conference-modify xmlns="jitsi:colibri2"/>',  # no meeting-id
    b'<conference-modify xmlns="jitsi:colibri2" meeting-id="m" create="maybe"/>',
    b'<conference-modify xmlns="jitsi:colibri2" meeting-id="m"><endpoint/></conference-modify>',
    b'<conference-modify xmlns="jitsi:colibri2" meeting-id="m"><endpoint id=" "/></conference-modify>',
    b'<conference-modify xmlns="jitsi:colibri2" meeting-id="m"><endpoint id="a">'
    b'<initial-last-n value="lots"/></endpoint></conference-modify>',
    b'<conference-modify xmlns="jitsi:colibri2" meeting-id="m"><endpoint id="a"><media type="audio">'
    b'<payload-type xmlns="urn:xmpp:jingle:apps:rtp:1" id="300"/></media></endpoint></conference-modify>',
    b'<conference-modify xmlns="jitsi:colibri2" meeting-id="m"><endpoint id="a"><sources><media-source '
    b'type="audio" id="x"><source xmlns="urn:xmpp:jingle:apps:rtp:ssma:0" ssrc="4294967296"/></media-source>'
    b"</sources></endpoint></conference-modify>",
    b'<conference-modify xmlns="jitsi:colibri2" meeting-id="m"><endpoint id="a"><transport><transport '
    b'xmlns="urn:xmpp:jingle:transports:ice-udp:1"><candidate component="1" foundation="1" ip="1.2.3.4" '
    b'port="-1" priority="1" protocol="udp" type="host"/></transport></transport></endpoint>'
    b"</conference-modify>",
    b'<!DOCTYPE x [<!ENTITY a "aaaa">]><conference-modify xmlns="jitsi:colibri2" meeting-id="&a;"/>',
    b'<iq xmlns="jabber:client" type="get"><query xmlns="jabber:iq:version"/></iq>',
    b"\xff\xfe<",
    b"<a>" * 5000,
]


@pytest.mark.parametrize("data", MALFORMED_XML)
def test_malformed_xml_raises_bad_request(data: bytes) -> None:
    with pytest.raises(Colibri2Error) as info:
        cxml.parse_conference_modify(data)
    assert info.value.condition == "bad-request" and info.value.type == "modify"


def test_oversized_xml_is_refused() -> None:
    with pytest.raises(Colibri2Error, match="larger"):
        cxml.parse_conference_modify(b" " * (cxml.MAX_XML_BYTES + 1))


MALFORMED_JSON = [
    "",
    "{",
    "[]",
    "null",
    '{"meeting-id": 5}',
    "{}",
    '{"meeting-id": "m", "endpoints": {}}',
    '{"meeting-id": "m", "endpoints": [5]}',
    '{"meeting-id": "m", "endpoints": [{"id": "a", "create": "perhaps"}]}',
    '{"meeting-id": "m", "endpoints": [{"id": "a", "medias": [{"type": "audio", "payload-types": '
    '[{"id": true}]}]}]}',
    '{"meeting-id": "m", "endpoints": [{"id": "a", "sources": [{"type": "audio", "id": "s", "sources": '
    '[{"ssrc": "x"}]}]}]}',
    '{"meeting-id": "m", "endpoints": [{"id": "a", "transport": {"transport": {"candidates": [{}]}}}]}',
    '{"meeting-id": "m", "endpoints": [{"id": "a", "initial-last-n": 3}]}',
    '{"meeting-id": "m", "endpoints": [{"id": "a", "medias": [{"type": "video", "payload-types": '
    '[{"id": 100, "parameters": {"apt": 1}}]}]}]}',
    "[" * 100000 + "]" * 100000,
]


@pytest.mark.parametrize("data", MALFORMED_JSON)
def test_malformed_json_raises_bad_request(data: str) -> None:
    with pytest.raises(Colibri2Error) as info:
        cjson.conference_modify_from_json(data)
    assert info.value.condition == "bad-request"


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_only_ever_raise_colibri2_error(data: bytes) -> None:
    for parse in (cxml.parse_conference_modify, cjson.conference_modify_from_json):
        with contextlib.suppress(Colibri2Error):
            parse(data)


# -- id bounds (model.py; the handler applies them to XML and JSON requests alike) --------------------------

#: What real clients send: mod_muc_meeting_id UUIDs, bench's ids, operator strings.
GOOD_MEETING_IDS = [
    "8f1c2a4e-5d6b-4c3a-9e8f-0a1b2c3d4e5f",
    "bench-8f1c2a4e-5d6b-4c3a-9e8f-0a1b2c3d4e5f",
    "m1",
    "room@conference.meet.example",
    "urn:x:1",
    "a" * 128,
]
BAD_MEETING_IDS = ["", " ", "a b", "a/b", "..", ".hidden", "a" * 129, "caf\u00e9", "m\n", "<x>", "a?b", "a#b"]
#: lib-jitsi-meet and webclient/js/conference.js nicknames (8 hex), bench's lg<n>, jibri/jigasi-style words.
GOOD_ENDPOINT_IDS = ["abcd1234", "0f3e9a7c", "lg0", "lg1023", "jibri-5f2a", "jigasi_1", "a.b~c", "e" * 64]
BAD_ENDPOINT_IDS = ["", "a b", "a/b", ".", "..", "a@b", "a:b", "e" * 65, "\u00e9t\u00e9", "x\x00"]


@pytest.mark.parametrize("meeting_id", GOOD_MEETING_IDS)
def test_real_meeting_ids_are_accepted(meeting_id: str) -> None:
    check_meeting_id(meeting_id)


@pytest.mark.parametrize("meeting_id", BAD_MEETING_IDS)
def test_bad_meeting_ids_are_bad_request_naming_the_id(meeting_id: str) -> None:
    with pytest.raises(Colibri2Error) as info:
        check_meeting_id(meeting_id)
    assert info.value.condition == "bad-request" and "meeting-id" in info.value.text
    assert repr(meeting_id[:80]).rstrip("'") in info.value.text
    assert len(info.value.text) < 250, "a huge id must not make a huge error"


@pytest.mark.parametrize("endpoint_id", GOOD_ENDPOINT_IDS)
def test_real_endpoint_ids_are_accepted(endpoint_id: str) -> None:
    check_endpoint_id(endpoint_id)


@pytest.mark.parametrize("endpoint_id", BAD_ENDPOINT_IDS)
def test_bad_endpoint_ids_are_bad_request_naming_the_id(endpoint_id: str) -> None:
    with pytest.raises(Colibri2Error) as info:
        check_endpoint_id(endpoint_id)
    assert info.value.condition == "bad-request" and repr(endpoint_id) in info.value.text


def test_stats_id_is_free_text_of_bounded_length() -> None:
    check_stats_id("abcd1234", "Zoë O'Brien (she/her) 🎧")
    check_stats_id("abcd1234", "x" * MAX_STATS_ID_LENGTH)
    with pytest.raises(Colibri2Error) as info:
        check_stats_id("abcd1234", "x" * (MAX_STATS_ID_LENGTH + 1))
    assert info.value.condition == "bad-request" and "'abcd1234'" in info.value.text


# -- hypothesis round trips of the model ---------------------------------------------------------------------

# XML attribute values: printable text (XML 1.0 cannot carry most control characters).
text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), max_size=12)
ident = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
u32 = st.integers(0, 0xFFFF_FFFF)
opt_bool = st.none() | st.booleans()


def unique_params() -> st.SearchStrategy[tuple[Parameter, ...]]:
    return st.dictionaries(ident, st.none() | text, max_size=3).map(
        lambda d: tuple(Parameter(k, v) for k, v in d.items())
    )


payload_types = st.builds(
    PayloadType,
    id=st.integers(0, 127),
    name=st.none() | ident,
    clockrate=st.none() | u32,
    channels=st.none() | st.integers(0, 255),
    parameters=unique_params(),
    rtcp_fbs=st.lists(st.builds(RtcpFb, type=ident, subtype=st.none() | ident), max_size=2).map(tuple),
)
medias = st.builds(
    Media,
    type=st.sampled_from(["audio", "video"]),
    payload_types=st.lists(payload_types, max_size=2).map(tuple),
    rtp_hdrexts=st.lists(st.builds(RtpHdrExt, id=st.integers(1, 255), uri=ident), max_size=2).map(tuple),
    extmap_allow_mixed=st.booleans(),
)
candidates = st.builds(
    Candidate,
    component=st.integers(1, 2),
    foundation=ident,
    generation=st.none() | u32,
    id=st.none() | ident,
    ip=st.ip_addresses().map(str),
    network=st.none() | u32,
    port=st.integers(0, 65535),
    priority=u32,
    protocol=st.sampled_from(["udp", "tcp"]),
    type=st.sampled_from(["host", "srflx", "relay"]),
    rel_addr=st.none() | st.ip_addresses().map(str),
    rel_port=st.none() | st.integers(0, 65535),
    tcptype=st.none() | st.sampled_from(["active", "passive", "so"]),
)
ices = st.builds(
    IceUdpTransport,
    ufrag=st.none() | ident,
    pwd=st.none() | ident,
    candidates=st.lists(candidates, max_size=2).map(tuple),
    rtcp_mux=st.booleans(),
    fingerprints=st.lists(
        st.builds(
            Fingerprint,
            hash=st.just("sha-256"),
            value=st.text("0123456789ABCDEF:", min_size=1, max_size=20),
            setup=st.none() | st.sampled_from(["actpass", "active", "passive"]),
            cryptex=opt_bool,
        ),
        max_size=2,
    ).map(tuple),
    web_sockets=st.lists(ident, max_size=1).map(tuple),
    ice_generation=st.none() | u32,
)
transports = st.builds(
    Transport,
    ice_controlling=opt_bool,
    use_unique_port=opt_bool,
    ice_restart=opt_bool,
    initiator=opt_bool,
    ice=st.none() | ices,
    sctp=st.none() | st.builds(Sctp, port=st.none() | st.integers(0, 65535), role=st.none() | ident),
)
media_sources = st.builds(
    MediaSource,
    type=st.sampled_from(["audio", "video"]),
    id=ident,
    synthetic=opt_bool,
    sources=st.lists(
        st.builds(
            SourceDesc,
            ssrc=st.none() | u32,
            name=st.none() | ident,
            video_type=st.none() | st.sampled_from(["camera", "desktop"]),
            rid=st.none() | ident,
            parameters=unique_params(),
        ),
        max_size=3,
    ).map(tuple),
    ssrc_groups=st.lists(
        st.builds(
            SsrcGroupDesc,
            semantics=st.sampled_from(["SIM", "FID", "FEC-FR"]),
            ssrcs=st.lists(u32, max_size=3).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
)
endpoints = st.builds(
    Endpoint,
    id=ident,
    create=st.booleans(),
    expire=st.booleans(),
    stats_id=st.none() | text,
    muc_role=st.none() | ident,
    medias=st.lists(medias, max_size=2).map(tuple),
    transport=st.none() | transports,
    sources=st.none() | st.lists(media_sources, max_size=2).map(tuple),
    force_mute=st.none() | st.builds(ForceMute, audio=opt_bool, video=opt_bool),
    capabilities=st.lists(ident, max_size=2).map(tuple),
    initial_last_n=st.none() | st.integers(-1, 100),
)
relays = st.builds(
    Relay,
    id=ident,
    mesh_id=st.none() | ident,
    create=st.booleans(),
    expire=st.booleans(),
    medias=st.lists(medias, max_size=1).map(tuple),
    transport=st.none() | transports,
    endpoints=st.none() | st.lists(endpoints, max_size=1).map(tuple),
)
requests = st.builds(
    ConferenceModify,
    meeting_id=ident,
    name=st.none() | text,
    create=st.booleans(),
    expire=st.booleans(),
    rtcstats_enabled=opt_bool,
    endpoints=st.lists(endpoints, max_size=2).map(tuple),
    relays=st.lists(relays, max_size=1).map(tuple),
)
responses = st.builds(
    ConferenceModified,
    endpoints=st.lists(endpoints, max_size=2).map(tuple),
    relays=st.lists(relays, max_size=1).map(tuple),
    sources=st.none() | st.lists(media_sources, max_size=2).map(tuple),
)


@given(requests)
@settings(max_examples=150, deadline=None)
def test_request_model_round_trips_through_xml_and_json(request: ConferenceModify) -> None:
    assert cxml.parse_conference_modify(cxml.to_string(cxml.build_conference_modify(request))) == request
    assert cxml.parse_conference_modify(cxml.build_conference_modify(request)) == request
    as_json = json.dumps(cjson.conference_modify_to_json(request))
    assert cjson.conference_modify_from_json(as_json) == request


@given(responses)
@settings(max_examples=100, deadline=None)
def test_response_model_round_trips_through_xml_and_json(response: ConferenceModified) -> None:
    assert (
        cxml.parse_conference_modified(cxml.to_string(cxml.build_conference_modified(response))) == response
    )
    as_json = json.dumps(cjson.conference_modified_to_json(response))
    assert cjson.conference_modified_from_json(as_json) == response


@given(
    st.sampled_from(
        ["bad-request", "conflict", "item-not-found", "feature-not-implemented", "service-unavailable"]
    ),
    text,
    st.none() | st.sampled_from(list(Reason)),
    st.none() | ident,
)
def test_error_round_trips(
    condition: str, message: str, reason: Reason | None, endpoint_id: str | None
) -> None:
    err = Colibri2Error(condition, message, reason, endpoint_id)
    assert cxml.parse_error(cxml.to_string(cxml.build_error(err))) == err
