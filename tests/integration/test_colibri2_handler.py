"""Colibri2Handler against the real Bridge: the Jicofo flow of 2.3 and every error of 2.5."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bridge import Bridge
from bridge.colibri2_handler import Colibri2Handler, Colibri2Limits
from colibri2 import json as cjson
from colibri2 import xml as cxml
from colibri2.model import (
    MAX_STATS_ID_LENGTH,
    Colibri2Error,
    ConferenceModify,
    Endpoint,
    ForceMute,
    MediaSource,
    Reason,
    Sctp,
    SourceDesc,
    Transport,
)

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent.parent / "data" / "colibri2"
MEETING = "8f1c2a4e-5d6b-4c3a-9e8f-0a1b2c3d4e5f"
C2 = "jitsi:colibri2"


def recorded(name: str) -> ConferenceModify:
    return cxml.parse_conference_modify((DATA / name).read_bytes())


def create_endpoint(endpoint_id: str, **changes: object) -> Endpoint:
    ep = Endpoint(
        endpoint_id, create=True, capabilities=("source-names",), transport=Transport(ice_controlling=True)
    )
    return replace(ep, **changes)  # type: ignore[arg-type]


def expect(handler: Colibri2Handler, request: ConferenceModify) -> Colibri2Error:
    with pytest.raises(Colibri2Error) as info:
        handler.handle(request)
    # Every error must also serialize to a stanza error that parses back to itself.
    assert cxml.parse_error(cxml.to_string(cxml.build_error(info.value))) == info.value
    return info.value


async def native_force_mute(bridge: Bridge, transport_id: int) -> tuple[object, object]:
    """(audio, video) force-mute as the native core holds it for one transport."""
    transports = (await bridge.get_stats())["transports"]
    assert isinstance(transports, dict)
    t = transports[transport_id]
    assert isinstance(t, dict)
    return t["force_mute_audio"], t["force_mute_video"]


async def test_jicofo_flow_create_update_sources_expire(bridge: Bridge) -> None:
    handler = Colibri2Handler(bridge)
    first = handler.handle(recorded("create-conference.request.xml"))
    conference = handler.conference(MEETING)
    assert conference is not None and conference.meeting_id == MEETING

    # The response transport is exactly the endpoint's local description.
    (ep_answer,) = first.endpoints
    assert ep_answer.id == "abcd1234" and ep_answer.transport is not None
    ice = ep_answer.transport.ice
    assert ice is not None
    local = conference.endpoints["abcd1234"].local_description()
    assert (ice.ufrag, ice.pwd, ice.rtcp_mux) == (local.ufrag, local.pwd, True)
    assert [(c.ip, c.port, c.priority, c.type, c.protocol) for c in ice.candidates] == [
        (c.ip, c.port, c.priority, c.type, c.protocol) for c in local.candidates
    ]
    assert {c.port for c in ice.candidates} == {bridge.local_addresses()[0][1]}
    (fp,) = ice.fingerprints
    assert (fp.hash, fp.setup, fp.value) == ("sha-256", "actpass", bridge.fingerprint[1])
    assert ep_answer.transport.sctp is None
    assert first.sources is not None
    assert [(ms.type, ms.id, ms.sources[0].name) for ms in first.sources] == [
        ("audio", "jvb-a0", "jvb-a0"),
        ("video", "jvb-v0", "jvb-v0"),
    ]
    # The response serializes to a conference-modified that parses back equal.
    assert cxml.parse_conference_modified(cxml.to_string(cxml.build_conference_modified(first))) == first
    state = handler.endpoint_state(MEETING, "abcd1234")
    assert state is not None and state.force_mute_audio and not state.force_mute_video
    assert state.stats_id == "Alice-x1y" and len(state.medias) == 2
    # The force-mute of the create reached the native transport, before any source or connection.
    created_ep = conference.endpoints["abcd1234"]
    assert (created_ep.force_mute_audio, created_ep.force_mute_video) == (True, False)
    assert await native_force_mute(bridge, created_ep.transport_id) == (True, False)

    # A second endpoint: no conference-level create; same feedback sources.
    second = handler.handle(ConferenceModify(MEETING, endpoints=(create_endpoint("efgh5678"),)))
    assert second.sources == first.sources
    assert set(conference.endpoints) == {"abcd1234", "efgh5678"}

    # session-accept: the client's transport and sources reach the Bridge.
    update = handler.handle(recorded("update-endpoint.request.xml"))
    assert update.endpoints == (Endpoint("abcd1234"),) and update.sources is None
    ep = conference.endpoints["abcd1234"]
    assert ep.remote is not None and ep.remote.ufrag == "Kq3z"
    assert ep.remote.fingerprints[0].setup == "active"
    assert [(c.ip, c.port) for c in ep.remote.candidates] == [("192.0.2.44", 54321)]
    assert [(s.kind, s.name, s.ssrcs) for s in ep.sources] == [
        ("audio", "abcd1234-a0", (1111,)),
        ("video", "abcd1234-v0", (2001, 2002, 2003, 2101, 2102, 2103)),
    ]
    assert [g.semantics for g in ep.sources[1].groups] == ["SIM", "FID", "FID", "FID"]
    state = handler.endpoint_state(MEETING, "abcd1234")
    assert state is not None and state.initial_last_n == 5

    # The full set replaces: an update without video clears the video source.
    audio_only = recorded("update-endpoint.request.xml").endpoints[0]
    assert audio_only.sources is not None
    handler.handle(
        ConferenceModify(MEETING, endpoints=(Endpoint("abcd1234", sources=audio_only.sources[:1]),))
    )
    assert [s.name for s in ep.sources] == ["abcd1234-a0"]

    # force-mute batch for two endpoints.
    handler.handle(recorded("force-mute.request.xml"))
    other = handler.endpoint_state(MEETING, "efgh5678")
    assert other is not None and (other.force_mute_audio, other.force_mute_video) == (False, True)
    other_ep = conference.endpoints["efgh5678"]
    assert await native_force_mute(bridge, other_ep.transport_id) == (False, True)

    # Expire one endpoint: its transport closes, the conference lives on.
    gone = conference.endpoints["efgh5678"]
    handler.handle(ConferenceModify(MEETING, endpoints=(Endpoint("efgh5678", expire=True),)))
    assert gone.closed and gone.state == "closed" and "efgh5678" not in conference.endpoints
    assert handler.conference(MEETING) is conference

    # Expire the conference.
    handler.handle(recorded("expire-conference.request.xml"))
    assert conference.closed and ep.closed and handler.conference(MEETING) is None
    assert bridge.get_conference(conference.id) is None


async def test_expiring_the_last_endpoint_expires_the_conference(bridge: Bridge) -> None:
    handler = Colibri2Handler(bridge)
    handler.handle(ConferenceModify("m", create=True, endpoints=(create_endpoint("a"),)))
    conference = handler.conference("m")
    assert conference is not None
    handler.handle(ConferenceModify("m", endpoints=(Endpoint("a", expire=True), Endpoint("zz", expire=True))))
    assert conference.closed and handler.conference("m") is None


async def test_unknown_endpoints_are_ignored_for_expire_and_force_mute(bridge: Bridge) -> None:
    handler = Colibri2Handler(bridge)
    handler.handle(ConferenceModify("m", create=True, endpoints=(create_endpoint("a"),)))
    response = handler.handle(
        ConferenceModify("m", endpoints=(Endpoint("ghost", force_mute=ForceMute(audio=True)),))
    )
    assert response.endpoints == ()


async def test_every_section_2_5_error(bridge: Bridge) -> None:
    handler = Colibri2Handler(bridge)
    handler.handle(ConferenceModify("m", create=True, endpoints=(create_endpoint("a"),)))

    err = expect(handler, ConferenceModify("nope", endpoints=(Endpoint("a", force_mute=ForceMute(True)),)))
    assert (err.condition, err.reason, err.text) == (
        "item-not-found",
        Reason.CONFERENCE_NOT_FOUND,
        "Conference not found for ID: nope",
    )

    err = expect(handler, ConferenceModify("m", create=True))
    assert (err.condition, err.reason, err.text) == (
        "conflict",
        Reason.CONFERENCE_ALREADY_EXISTS,
        "Conference already exists for ID: m",
    )

    err = expect(handler, ConferenceModify("m", endpoints=(Endpoint("zz", initial_last_n=3),)))
    assert (err.condition, err.reason, err.endpoint_id, err.text) == (
        "item-not-found",
        Reason.UNKNOWN_ENDPOINT,
        "zz",
        "Endpoint not found for ID: zz",
    )

    err = expect(handler, ConferenceModify("m", endpoints=(create_endpoint("a"),)))
    assert (err.condition, err.reason) == ("conflict", None)

    for bad in (
        create_endpoint("b", transport=None),
        create_endpoint("b", capabilities=()),
        create_endpoint(
            "b", muc_role="visitor", sources=recorded("update-endpoint.request.xml").endpoints[0].sources
        ),
    ):
        err = expect(handler, ConferenceModify("m", endpoints=(bad,)))
        assert (err.condition, err.reason, err.type) == ("bad-request", None, "modify")
    err = expect(handler, ConferenceModify("m2", create=True, name="not a jid/@@", endpoints=()))
    assert err.condition == "bad-request"
    err = expect(handler, ConferenceModify(" ", create=True))
    assert err.condition == "bad-request"

    # Unsupported combinations, relays, SCTP while disabled.
    not_implemented = [
        ConferenceModify("m", endpoints=(create_endpoint("b"), create_endpoint("c"))),
        recorded("relay-create.request.xml"),
        ConferenceModify(
            "m", endpoints=(create_endpoint("b", transport=Transport(ice_controlling=True, sctp=Sctp())),)
        ),
    ]
    for request in not_implemented:
        err = expect(handler, replace(request, meeting_id="m"))
        assert (err.condition, err.reason) == ("feature-not-implemented", Reason.FEATURE_NOT_IMPLEMENTED)

    # A bad SCTP port once SCTP is on; the good one is answered with the server role.
    sctp_handler = Colibri2Handler(bridge, sctp_enabled=True)
    err = expect(
        sctp_handler,
        ConferenceModify(
            "s", create=True, endpoints=(create_endpoint("b", transport=Transport(sctp=Sctp(port=6000))),)
        ),
    )
    assert err.condition == "bad-request"
    assert sctp_handler.conference("s") is None, "a refused create leaves no conference behind"
    ok = sctp_handler.handle(
        ConferenceModify(
            "s", create=True, endpoints=(create_endpoint("b", transport=Transport(sctp=Sctp())),)
        )
    )
    assert ok.endpoints[0].transport is not None and ok.endpoints[0].transport.sctp == Sctp(5000, "server")

    handler.graceful_shutdown = True
    err = expect(handler, ConferenceModify("new", create=True, endpoints=(create_endpoint("x"),)))
    assert (err.condition, err.reason, err.text) == (
        "service-unavailable",
        Reason.GRACEFUL_SHUTDOWN,
        "In graceful shutdown",
    )
    assert handler.conference("new") is None
    # Existing conferences still work while draining.
    handler.handle(ConferenceModify("m", endpoints=(Endpoint("a", force_mute=ForceMute(video=True)),)))


async def test_a_bridge_refusal_becomes_bad_request(bridge: Bridge) -> None:
    handler = Colibri2Handler(bridge)
    handler.handle(ConferenceModify("m", create=True, endpoints=(create_endpoint("a"),)))
    no_fingerprint = cxml.parse_conference_modify(
        '<conference-modify xmlns="jitsi:colibri2" meeting-id="m"><endpoint id="a"><transport>'
        '<transport xmlns="urn:xmpp:jingle:transports:ice-udp:1" ufrag="u" pwd="pppppppppppppppppppppp"/>'
        "</transport></endpoint></conference-modify>"
    )
    err = expect(handler, no_fingerprint)
    assert err.condition == "bad-request" and "fingerprint" in err.text


async def test_a_trickle_update_keeps_the_fingerprint(bridge: Bridge) -> None:
    """transport-info after session-accept: the same ufrag/pwd and a new candidate, no fingerprint."""
    handler = Colibri2Handler(bridge)
    handler.handle(recorded("create-conference.request.xml"))
    handler.handle(recorded("update-endpoint.request.xml"))
    conference = handler.conference(MEETING)
    assert conference is not None
    ep = conference.endpoints["abcd1234"]
    assert ep.remote is not None
    fingerprints = ep.remote.fingerprints
    trickle = cxml.parse_conference_modify(
        f'<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="abcd1234">'
        f'<transport><transport xmlns="urn:xmpp:jingle:transports:ice-udp:1" ufrag="{ep.remote.ufrag}" '
        f'pwd="{ep.remote.pwd}"><candidate component="1" foundation="2" generation="0" id="c9" '
        'ip="192.0.2.45" network="0" port="50000" priority="1000" protocol="udp" type="host"/>'
        "</transport></transport></endpoint></conference-modify>"
    )
    handler.handle(trickle)
    assert ep.remote.fingerprints == fingerprints
    assert [(c.ip, c.port) for c in ep.remote.candidates] == [("192.0.2.44", 54321), ("192.0.2.45", 50000)]
    # Other credentials without a fingerprint are still refused: that is a new, unauthenticated transport.
    other = cxml.parse_conference_modify(
        f'<conference-modify xmlns="jitsi:colibri2" meeting-id="{MEETING}"><endpoint id="abcd1234">'
        '<transport><transport xmlns="urn:xmpp:jingle:transports:ice-udp:1" ufrag="u" '
        'pwd="pppppppppppppppppppppp"/></transport></endpoint></conference-modify>'
    )
    assert expect(handler, other).condition == "bad-request"


def _xml_request(meeting_id: str, endpoint_id: str, stats_id: str, create: bool) -> ConferenceModify:
    ep = ET.Element(f"{{{C2}}}endpoint", {"id": endpoint_id, "stats-id": stats_id})
    if create:
        ep.set("create", "true")
        ET.SubElement(ep, f"{{{C2}}}capability", {"name": "source-names"})
        ET.SubElement(ep, f"{{{C2}}}transport", {"ice-controlling": "true"})
    root = ET.Element(f"{{{C2}}}conference-modify", {"meeting-id": meeting_id})
    if create:
        root.set("create", "true")
    root.append(ep)
    return cxml.parse_conference_modify(cxml.to_string(root))


def _json_request(meeting_id: str, endpoint_id: str, stats_id: str, create: bool) -> ConferenceModify:
    ep: dict[str, object] = {"id": endpoint_id, "stats-id": stats_id}
    if create:
        ep |= {"create": True, "capabilities": ["source-names"], "transport": {"ice-controlling": True}}
    body = {"meeting-id": meeting_id, "create": create, "endpoints": [ep]}
    return cjson.conference_modify_from_json(json.dumps(body))


@pytest.mark.parametrize("parse", [_xml_request, _json_request], ids=["xml", "json"])
async def test_ids_out_of_bounds_are_bad_request_from_xml_and_json(
    bridge: Bridge, parse: Callable[[str, str, str, bool], ConferenceModify]
) -> None:
    handler = Colibri2Handler(bridge)
    handler.handle(parse(MEETING, "abcd1234", "Alice-x1y", True))
    long_stats = "Ada " * (MAX_STATS_ID_LENGTH // 4 + 1)
    cases = [
        # (meeting-id, endpoint id, stats-id, create): what the error must name
        (("m/../x", "ep1", "s", True), "'m/../x'"),
        (("m" * 129, "ep1", "s", True), "'mmmm"),
        (("fresh", "ep 1", "s", True), "'ep 1'"),
        (("fresh", "../ep", "s", True), "'../ep'"),
        (("fresh", "e" * 65, "s", True), "'eeee"),
        (("fresh", "ep1", long_stats, True), "'ep1'"),
        # on an existing conference: a new endpoint, and a stats-id update of an existing one
        ((MEETING, "bad\u00e9", "s", True), "'bad\u00e9'"),
        ((MEETING, "abcd1234", long_stats, False), "'abcd1234'"),
    ]
    for args, named in cases:
        err = expect(handler, parse(*args))
        assert (err.condition, err.reason, err.type) == ("bad-request", None, "modify"), args
        assert named in err.text, (args, err.text)
    assert handler.conference("fresh") is None and handler.conference("m" * 129) is None
    conference = handler.conference(MEETING)
    assert conference is not None and set(conference.endpoints) == {"abcd1234"}
    state = handler.endpoint_state(MEETING, "abcd1234")
    assert state is not None and state.stats_id == "Alice-x1y", "a refused update changed nothing"


async def test_limits_refuse_with_resource_constraint_and_count(bridge: Bridge) -> None:
    handler = Colibri2Handler(
        bridge,
        limits=Colibri2Limits(max_conferences=2, max_endpoints_per_conference=2, max_ssrcs_per_endpoint=3),
    )
    for n in range(2):
        handler.handle(ConferenceModify(f"m{n}", create=True, endpoints=(create_endpoint("a"),)))
    err = expect(handler, ConferenceModify("m2", create=True, endpoints=(create_endpoint("a"),)))
    assert err.condition == "resource-constraint" and err.reason is None
    assert handler.conference("m2") is None and len(bridge.conferences) == 2
    handler.handle(ConferenceModify("m0", endpoints=(create_endpoint("b"),)))
    err = expect(handler, ConferenceModify("m0", endpoints=(create_endpoint("c"),)))
    assert err.condition == "resource-constraint"
    conference = handler.conference("m0")
    assert conference is not None and set(conference.endpoints) == {"a", "b"}
    four = tuple(
        MediaSource("video", f"a-v{i}", sources=(SourceDesc(1000 + i, f"a-v{i}"),)) for i in range(4)
    )
    err = expect(handler, ConferenceModify("m0", endpoints=(Endpoint("a", sources=four),)))
    assert err.condition == "resource-constraint" and "4 SSRCs" in err.text
    handler.handle(ConferenceModify("m0", endpoints=(Endpoint("a", sources=four[:3]),)))
    assert handler.refused == {"conferences": 1, "endpoints_per_conference": 1, "ssrcs_per_endpoint": 1}
    # Closing one makes room again.
    handler.handle(ConferenceModify("m1", expire=True))
    handler.handle(ConferenceModify("m2", create=True, endpoints=(create_endpoint("a"),)))
