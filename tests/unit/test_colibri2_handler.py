"""Colibri2Handler, sans-IO: the Jicofo flow of 2.3 and every error of 2.5, over the real registry.

The Bridge runs over a FakeNative (no native core): these tests read the registry's facts and the exact typed
Commands that would have crossed the seam. tests/integration/test_colibri2_handler.py shows the same handler
against the real native core.
"""

from __future__ import annotations

import ipaddress
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import cast
from urllib.parse import quote

import pytest

from bridge import Bridge, _native
from bridge.changes import CreateConference, CreateEndpoint, ExpireEndpoint, UpdateEndpoint
from bridge.colibri2_handler import Colibri2Handler, Colibri2Limits
from bridge.description import Source, SsrcGroup
from bridge.xmpp_core import BridgeState
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
    SsrcGroupDesc,
    Transport,
)
from tests.helpers.fake_native import DIGEST, FakeNative, fake_bridge

DATA = Path(__file__).resolve().parent.parent / "data" / "colibri2"
MEETING = "8f1c2a4e-5d6b-4c3a-9e8f-0a1b2c3d4e5f"
C2 = "jitsi:colibri2"
ICE = "urn:xmpp:jingle:transports:ice-udp:1"
DTLS = "urn:xmpp:jingle:apps:dtls:0"
FP_256 = ":".join(["0A"] * 32)


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


def transport_update(endpoint_id: str, transport: str, meeting: str = MEETING) -> ConferenceModify:
    """A conference-modify carrying one endpoint's `<transport>` (ICE-UDP XML inside)."""
    return cxml.parse_conference_modify(
        f'<conference-modify xmlns="{C2}" meeting-id="{meeting}"><endpoint id="{endpoint_id}">'
        f'<transport><transport xmlns="{ICE}" {transport}</transport></transport></endpoint>'
        "</conference-modify>"
    )


@pytest.fixture
def registry() -> tuple[Bridge, FakeNative]:
    return fake_bridge()


def test_jicofo_flow_create_update_sources_expire(registry: tuple[Bridge, FakeNative]) -> None:
    bridge, native = registry
    handler = Colibri2Handler(bridge)
    first = handler.handle(recorded("create-conference.request.xml"))
    conference = bridge.conference_by_meeting(MEETING)
    assert conference is not None and conference.name == "room1@conference.example.org"
    ep = conference.endpoints["abcd1234"]

    # The response transport is exactly the endpoint's local description.
    (ep_answer,) = first.endpoints
    assert ep_answer.id == "abcd1234" and ep_answer.transport is not None
    ice = ep_answer.transport.ice
    assert ice is not None
    assert (ice.ufrag, ice.pwd, ice.rtcp_mux) == (ep.ufrag, ep.pwd, True)
    assert [(c.ip, c.port, c.type, c.protocol, c.component) for c in ice.candidates] == [
        ("127.0.0.1", 10000, "host", "udp", 1)
    ]
    (fp,) = ice.fingerprints
    assert (fp.hash, fp.setup, fp.value) == ("sha-256", "actpass", DIGEST.hex(":").upper())
    assert ep_answer.transport.sctp is None
    assert first.sources is not None
    assert [(ms.type, ms.id, ms.sources[0].ssrc) for ms in first.sources] == [
        ("audio", "jvb-a0", conference.feedback_audio_ssrc),
        ("video", "jvb-v0", conference.feedback_video_ssrc),
    ]
    assert cxml.parse_conference_modified(cxml.to_string(cxml.build_conference_modified(first))) == first
    # What Colibri2 said is stored once, on the registry's endpoint.
    assert (ep.force_mute_audio, ep.force_mute_video) == (True, False)
    assert ep.stats_id == "Alice-x1y" and len(ep.medias) == 2 and "source-names" in ep.capabilities
    # The create's force-mute reached the seam before anything else about the transport.
    (router, _audio, _video) = native.named("create_router")[0]
    assert [m for m, _ in native.commands] == [
        "create_router",
        "create_transport",
        "set_payload_types",
        "set_header_extensions",
        "set_force_mute",
        "set_sources",
    ]
    # Audio levels come in the extension id the create's audio media names (dominant speaker detection).
    assert [ids[0] for _, ids in native.named("set_header_extensions")] == [1]  # type: ignore[index]
    assert native.sources == [(ep.transport_id, [])], "the create's empty <sources/>"
    # The packet path learns which video payload types it can read, and what RTX retransmits; the audio
    # ones as audio (RED is told apart: tests/unit/test_focus_red.py).
    ((tid, types),) = native.named("set_payload_types")
    assert tid == ep.transport_id
    assert [(t.pt, t.codec, t.apt) for t in cast(list[_native.PayloadType], types)] == [
        (111, _native.VideoCodec.AUDIO, None),
        (126, _native.VideoCodec.AUDIO, None),
        (100, _native.VideoCodec.VP8, None),
        (96, _native.VideoCodec.RTX, 100),
        (107, _native.VideoCodec.H264, None),
    ]
    assert native.named("create_transport") == [(router, ep.transport_id, ep.ufrag, ep.pwd, True)]
    assert native.named("set_force_mute") == [(ep.transport_id, True, False)]

    # A second endpoint: no conference-level create; same feedback sources.
    second = handler.handle(ConferenceModify(MEETING, endpoints=(create_endpoint("efgh5678"),)))
    assert second.sources == first.sources
    assert set(conference.endpoints) == {"abcd1234", "efgh5678"}

    # session-accept: the client's transport and sources reach the Bridge, typed.
    native.clear()
    update = handler.handle(recorded("update-endpoint.request.xml"))
    assert update.endpoints == (Endpoint("abcd1234"),) and update.sources is None
    assert ep.remote is not None and ep.remote.ufrag == "Kq3z"
    assert ep.remote.fingerprints[0].setup == "active"
    assert [(str(c.ip), c.port) for c in ep.remote.candidates] == [("192.0.2.44", 54321)]
    assert [(s.kind, s.name, s.ssrcs) for s in ep.sources] == [
        ("audio", "abcd1234-a0", (1111,)),
        ("video", "abcd1234-v0", (2001, 2002, 2003, 2101, 2102, 2103)),
    ]
    assert [g.semantics for g in ep.sources[1].groups] == ["SIM", "FID", "FID", "FID"]
    assert ep.last_n == 5
    [(tid, ufrag, pwd, [native_fp])] = native.connected
    assert (tid, ufrag, pwd) == (ep.transport_id, "Kq3z", "hG4kLmN8pQ2rS6tU0vW3xY7z")
    assert native_fp.hash == _native.HashFunction.SHA_256 and native_fp.setup == _native.DtlsSetup.ACTIVE
    assert native_fp.digest == bytes.fromhex("0A1B2C3D4E5F60718293A4B5C6D7E8F9" * 2)
    [(_, [candidate])] = native.candidates
    assert (candidate.ip, candidate.port, candidate.priority, candidate.type) == (
        ipaddress.ip_address("192.0.2.44"),
        54321,
        2122260223,
        _native.CandidateType.HOST,
    )
    # SIM and FID groups cross the seam intact.
    [(_, [audio, video])] = native.sources
    assert (audio.kind, audio.ssrcs, audio.groups, audio.name) == (
        _native.MediaKind.AUDIO,
        [1111],
        [],
        "abcd1234-a0",
    )
    assert video.kind == _native.MediaKind.VIDEO and video.ssrcs == [2001, 2002, 2003, 2101, 2102, 2103]
    assert [(g.semantics, g.ssrcs) for g in video.groups] == [
        (_native.SsrcGroupSemantics.SIM, [2001, 2002, 2003]),
        (_native.SsrcGroupSemantics.FID, [2001, 2101]),
        (_native.SsrcGroupSemantics.FID, [2002, 2102]),
        (_native.SsrcGroupSemantics.FID, [2003, 2103]),
    ]

    # The full set replaces: an update without video clears the video source.
    audio_only = recorded("update-endpoint.request.xml").endpoints[0]
    assert audio_only.sources is not None
    handler.handle(
        ConferenceModify(MEETING, endpoints=(Endpoint("abcd1234", sources=audio_only.sources[:1]),))
    )
    assert [s.name for s in ep.sources] == ["abcd1234-a0"]

    # force-mute batch for two endpoints.
    handler.handle(recorded("force-mute.request.xml"))
    other = conference.endpoints["efgh5678"]
    assert (other.force_mute_audio, other.force_mute_video) == (False, True)
    assert native.named("set_force_mute")[-1] == (other.transport_id, False, True)

    # Expire one endpoint: its transport closes, the conference lives on.
    handler.handle(ConferenceModify(MEETING, endpoints=(Endpoint("efgh5678", expire=True),)))
    assert other.closed and other.state == "closed" and "efgh5678" not in conference.endpoints
    assert native.named("close_transport")[-1] == (other.transport_id,)
    assert bridge.conference_by_meeting(MEETING) is conference

    # Expire the conference.
    handler.handle(recorded("expire-conference.request.xml"))
    assert conference.closed and ep.closed and bridge.conference_by_meeting(MEETING) is None
    assert bridge.get_conference(conference.id) is None
    assert native.named("close_router") == [(router,)]


def test_plan_returns_typed_changes_and_changes_nothing(registry: tuple[Bridge, FakeNative]) -> None:
    bridge, native = registry
    handler = Colibri2Handler(bridge)
    plan = handler.plan(recorded("create-conference.request.xml"))
    assert native.commands == [] and bridge.conference_by_meeting(MEETING) is None
    create_conference, create_ep, update = plan.changes
    assert create_conference == CreateConference(MEETING, "room1@conference.example.org")
    assert isinstance(create_ep, CreateEndpoint) and create_ep.stats_id == "Alice-x1y"
    assert isinstance(update, UpdateEndpoint) and update.force_mute == (True, False)
    assert plan.feedback

    handler.handle(ConferenceModify("m", create=True, endpoints=(create_endpoint("a"),)))
    plan = handler.plan(
        ConferenceModify(
            "m",
            endpoints=(
                Endpoint("a", force_mute=ForceMute(audio=True)),
                Endpoint("a", force_mute=ForceMute(video=True)),
                Endpoint("ghost", expire=True),
            ),
        )
    )
    # The second force-mute of the same endpoint starts from what the first one planned.
    assert [c.force_mute for c in plan.changes if isinstance(c, UpdateEndpoint)] == [
        (True, False),
        (True, True),
    ]
    plan = handler.plan(ConferenceModify("m", endpoints=(Endpoint("a", expire=True),)))
    assert plan.changes[0] == ExpireEndpoint("m", "a") and len(plan.changes) == 2  # and the conference


def test_a_refused_request_changes_nothing(registry: tuple[Bridge, FakeNative]) -> None:
    bridge, native = registry
    handler = Colibri2Handler(bridge, limits=Colibri2Limits(max_ssrcs_per_endpoint=2))
    handler.handle(ConferenceModify("m", create=True, endpoints=(create_endpoint("a"),)))
    ep = bridge.conference_by_meeting("m").endpoints["a"]  # type: ignore[union-attr]
    before = list(native.commands)
    three = tuple(MediaSource("video", f"a-v{i}", sources=(SourceDesc(10 + i, f"a-v{i}"),)) for i in range(3))
    # The force-mute is fine, the sources are not: neither is applied.
    err = expect(
        handler, ConferenceModify("m", endpoints=(Endpoint("a", sources=three, force_mute=ForceMute(True)),))
    )
    assert err.condition == "resource-constraint"
    assert native.commands == before and not ep.force_mute_audio and ep.sources == ()
    # A create refused after the conference would have been made leaves no conference.
    err = expect(
        handler,
        ConferenceModify("n", create=True, endpoints=(create_endpoint("b", sources=three),)),
    )
    assert err.condition == "resource-constraint" and bridge.conference_by_meeting("n") is None
    assert native.commands == before


def test_expiring_the_last_endpoint_expires_the_conference(registry: tuple[Bridge, FakeNative]) -> None:
    bridge, _ = registry
    handler = Colibri2Handler(bridge)
    handler.handle(ConferenceModify("m", create=True, endpoints=(create_endpoint("a"),)))
    conference = bridge.conference_by_meeting("m")
    assert conference is not None
    handler.handle(ConferenceModify("m", endpoints=(Endpoint("a", expire=True), Endpoint("zz", expire=True))))
    assert conference.closed and bridge.conference_by_meeting("m") is None


def test_unknown_endpoints_are_ignored_for_expire_and_force_mute(registry: tuple[Bridge, FakeNative]) -> None:
    bridge, _ = registry
    handler = Colibri2Handler(bridge)
    handler.handle(ConferenceModify("m", create=True, endpoints=(create_endpoint("a"),)))
    response = handler.handle(
        ConferenceModify("m", endpoints=(Endpoint("ghost", force_mute=ForceMute(audio=True)),))
    )
    assert response.endpoints == ()


def test_every_section_2_5_error(registry: tuple[Bridge, FakeNative]) -> None:
    bridge, _ = registry
    state = BridgeState()
    handler = Colibri2Handler(bridge, shutdown=state)
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
    assert bridge.conference_by_meeting("s") is None, "a refused create leaves no conference behind"
    ok = sctp_handler.handle(
        ConferenceModify(
            "s", create=True, endpoints=(create_endpoint("b", transport=Transport(sctp=Sctp())),)
        )
    )
    assert ok.endpoints[0].transport is not None and ok.endpoints[0].transport.sctp == Sctp(5000, "server")

    # The bridge's drain state refuses new conferences, either flag.
    for flag in ("graceful_shutdown", "shutting_down"):
        setattr(state, flag, True)
        err = expect(handler, ConferenceModify("new", create=True, endpoints=(create_endpoint("x"),)))
        assert (err.condition, err.reason, err.text) == (
            "service-unavailable",
            Reason.GRACEFUL_SHUTDOWN,
            "In graceful shutdown",
        )
        assert bridge.conference_by_meeting("new") is None
        setattr(state, flag, False)
    state.graceful_shutdown = True
    # Existing conferences still work while draining.
    handler.handle(ConferenceModify("m", endpoints=(Endpoint("a", force_mute=ForceMute(video=True)),)))


def test_transport_descriptions_are_checked_once_at_this_edge(registry: tuple[Bridge, FakeNative]) -> None:
    bridge, native = registry
    handler = Colibri2Handler(bridge)
    handler.handle(ConferenceModify("m", create=True, endpoints=(create_endpoint("a"),)))
    ep = bridge.conference_by_meeting("m").endpoints["a"]  # type: ignore[union-attr]
    fingerprint = f'<fingerprint xmlns="{DTLS}" hash="sha-256" setup="active">{FP_256}</fingerprint>'

    def candidate(ip: str, typ: str = "host", protocol: str = "udp", component: int = 1) -> str:
        return (
            f'<candidate component="{component}" foundation="1" generation="0" id="c" ip="{ip}" '
            f'network="0" port="5000" priority="100" protocol="{protocol}" type="{typ}"/>'
        )

    # Not a bridge refusal but a bad description: unknown setup, unknown candidate type, fingerprints without
    # credentials, no usable fingerprint, no fingerprint on new credentials.
    for transport, text in (
        (f'ufrag="u" pwd="{"p" * 22}">{fingerprint.replace("active", "holdconn")}', "setup"),
        (f'ufrag="u" pwd="{"p" * 22}">{fingerprint}{candidate("192.0.2.1", "bogus")}', "candidate type"),
        (f">{fingerprint}", "ufrag"),
        (f'ufrag="u" pwd="{"p" * 22}"><fingerprint xmlns="{DTLS}" hash="md5">AB:CD</fingerprint>', "usable"),
        (f'ufrag="u" pwd="{"p" * 22}">', "fingerprint"),
    ):
        err = expect(handler, transport_update("a", transport, "m"))
        assert err.condition == "bad-request" and text in err.text, (transport, err.text)
    assert native.connected == [] and ep.remote is None

    # Unusable candidates are dropped here (mDNS names, TCP, RTCP's component), so the seam gets only good
    # ones; an unsupported fingerprint next to a good one is skipped (any supported one may match).
    handler.handle(
        transport_update(
            "a",
            f'ufrag="u" pwd="{"p" * 22}"><fingerprint xmlns="{DTLS}" hash="md5">AB:CD</fingerprint>'
            f"{fingerprint}{candidate('abc.local')}{candidate('192.0.2.2', protocol='tcp')}"
            f"{candidate('192.0.2.3', component=2)}{candidate('2001:db8::7', 'srflx')}",
            "m",
        )
    )
    assert ep.remote is not None and [fp.hash for fp in ep.remote.fingerprints] == ["sha-256"]
    [(_, candidates)] = native.candidates
    assert [(c.ip, c.type) for c in candidates] == [
        (ipaddress.ip_address("2001:db8::7"), _native.CandidateType.SRFLX)
    ]


def test_a_trickle_update_keeps_the_fingerprint(registry: tuple[Bridge, FakeNative]) -> None:
    """transport-info after session-accept: the same ufrag/pwd and a new candidate, no fingerprint."""
    bridge, native = registry
    handler = Colibri2Handler(bridge)
    handler.handle(recorded("create-conference.request.xml"))
    handler.handle(recorded("update-endpoint.request.xml"))
    conference = bridge.conference_by_meeting(MEETING)
    assert conference is not None
    ep = conference.endpoints["abcd1234"]
    assert ep.remote is not None
    fingerprints = ep.remote.fingerprints
    trickle = transport_update(
        "abcd1234",
        f'ufrag="{ep.remote.ufrag}" pwd="{ep.remote.pwd}"><candidate component="1" foundation="2" '
        'generation="0" id="c9" ip="192.0.2.45" network="0" port="50000" priority="1000" protocol="udp" '
        'type="host"/>',
    )
    handler.handle(trickle)
    assert ep.remote.fingerprints == fingerprints
    assert [(str(c.ip), c.port) for c in ep.remote.candidates] == [
        ("192.0.2.44", 54321),
        ("192.0.2.45", 50000),
    ]
    assert len(native.connected) == 1, "a trickle does not connect again"
    # Other credentials without a fingerprint are still refused: that is a new, unauthenticated transport.
    other = transport_update("abcd1234", f'ufrag="u" pwd="{"p" * 22}">')
    assert expect(handler, other).condition == "bad-request"


def test_ice_restart_answers_a_new_transport_and_keeps_dtls_and_the_channel(
    registry: tuple[Bridge, FakeNative],
) -> None:
    """Section 2.3 item 5: `<transport ice-restart="true"/>` on a known endpoint; the answer carries new ICE
    credentials tagged with `ice-generation`, the same fingerprint and bridge-channel URL; the client's new
    credentials (with its fingerprint) connect again, and its trickle under them is taken."""
    bridge, native = registry
    handler = Colibri2Handler(bridge)
    handler.web_socket_bases = ("wss://bridge.example/colibri-ws/jvb1",)
    handler.handle(recorded("create-conference.request.xml"))
    handler.handle(recorded("update-endpoint.request.xml"))
    conference = bridge.conference_by_meeting(MEETING)
    assert conference is not None
    ep = conference.endpoints["abcd1234"]
    before = ep.local_description()
    channel = f"?pwd={quote(ep.channel_pwd, safe='')}"

    restart = cxml.parse_conference_modify(
        f'<conference-modify xmlns="{C2}" meeting-id="{MEETING}"><endpoint id="abcd1234">'
        '<transport ice-restart="true"/></endpoint></conference-modify>'
    )
    answer = handler.handle(restart)
    (answered,) = answer.endpoints
    assert answered.transport is not None and answered.transport.ice is not None
    ice = answered.transport.ice
    assert ice.ice_generation == 1 and ep.ice_generation == 1
    assert (ice.ufrag, ice.pwd) == (ep.ufrag, ep.pwd) != (before.ufrag, before.pwd)
    assert [f.value for f in ice.fingerprints] == [f.value for f in before.fingerprints]
    assert ice.candidates and all(url.endswith(channel) for url in ice.web_sockets)
    assert native.commands[-1] == ("restart_ice", (ep.transport_id, ep.ufrag, ep.pwd))
    # The answer round-trips through the XML codec with its generation.
    xml = cxml.to_string(cxml.build_conference_modified(answer))
    assert 'ice-generation="1"' in xml

    # The client's new transport, then a trickle under its new credentials.
    connected = len(native.connected)
    handler.handle(
        transport_update(
            "abcd1234",
            f'ufrag="newufrag" pwd="{"n" * 22}"><fingerprint xmlns="{DTLS}" hash="sha-256" setup="active">'
            f"{FP_256}</fingerprint>",
        )
    )
    assert len(native.connected) == connected + 1 and native.connected[-1][1:3] == ("newufrag", "n" * 22)
    handler.handle(
        transport_update(
            "abcd1234",
            f'ufrag="newufrag" pwd="{"n" * 22}"><candidate component="1" foundation="2" generation="0" '
            'id="c9" ip="192.0.2.46" network="0" port="50002" priority="1000" protocol="udp" type="host"/>',
        )
    )
    assert ep.remote is not None and ("192.0.2.46", 50002) in [
        (str(c.ip), c.port) for c in ep.remote.candidates
    ]

    # A second restart is generation 2.
    answer = handler.handle(restart)
    assert answer.endpoints[0].transport is not None and answer.endpoints[0].transport.ice is not None
    assert answer.endpoints[0].transport.ice.ice_generation == 2


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
def test_ids_out_of_bounds_are_bad_request_from_xml_and_json(
    registry: tuple[Bridge, FakeNative], parse: Callable[[str, str, str, bool], ConferenceModify]
) -> None:
    bridge, _ = registry
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
    assert bridge.conference_by_meeting("fresh") is None and bridge.conference_by_meeting("m" * 129) is None
    conference = bridge.conference_by_meeting(MEETING)
    assert conference is not None and set(conference.endpoints) == {"abcd1234"}
    assert conference.endpoints["abcd1234"].stats_id == "Alice-x1y", "a refused update changed nothing"


def test_limits_refuse_with_resource_constraint_and_count(registry: tuple[Bridge, FakeNative]) -> None:
    bridge, _ = registry
    handler = Colibri2Handler(
        bridge,
        limits=Colibri2Limits(max_conferences=2, max_endpoints_per_conference=2, max_ssrcs_per_endpoint=3),
    )
    for n in range(2):
        handler.handle(ConferenceModify(f"m{n}", create=True, endpoints=(create_endpoint("a"),)))
    err = expect(handler, ConferenceModify("m2", create=True, endpoints=(create_endpoint("a"),)))
    assert err.condition == "resource-constraint" and err.reason is None
    assert bridge.conference_by_meeting("m2") is None and len(bridge.conferences) == 2
    handler.handle(ConferenceModify("m0", endpoints=(create_endpoint("b"),)))
    err = expect(handler, ConferenceModify("m0", endpoints=(create_endpoint("c"),)))
    assert err.condition == "resource-constraint"
    conference = bridge.conference_by_meeting("m0")
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


def test_sources_keep_their_groups_and_bad_groups_are_refused(registry: tuple[Bridge, FakeNative]) -> None:
    bridge, _ = registry
    handler = Colibri2Handler(bridge)
    handler.handle(ConferenceModify("m", create=True, endpoints=(create_endpoint("a"),)))
    ep = bridge.conference_by_meeting("m").endpoints["a"]  # type: ignore[union-attr]
    fid = SsrcGroup("FID", (7, 8))
    video = MediaSource(
        "video",
        "a-v0",
        sources=(SourceDesc(7, "a-v0"), SourceDesc(8, "a-v0")),
        ssrc_groups=(SsrcGroupDesc("FID", (7, 8)), SsrcGroupDesc("FEC-FR", (7, 8))),
    )
    handler.handle(ConferenceModify("m", endpoints=(Endpoint("a", sources=(video,)),)))
    assert ep.sources == (Source("video", (7, 8), "a-v0", (fid,)),), "FEC-FR stays in the wire model"
    stray = replace(video, ssrc_groups=(SsrcGroupDesc("SIM", (7, 9)),))
    err = expect(handler, ConferenceModify("m", endpoints=(Endpoint("a", sources=(stray,)),)))
    assert err.condition == "bad-request" and "SIM" in err.text
    data = MediaSource("application", "a-d0", sources=(SourceDesc(5, "a-d0"),))
    err = expect(handler, ConferenceModify("m", endpoints=(Endpoint("a", sources=(data,)),)))
    assert err.condition == "bad-request" and "unsupported type" in err.text


def test_a_screen_shares_signalled_video_type_is_kept(registry: tuple[Bridge, FakeNative]) -> None:
    """A second video source signalled `videoType="desktop"` (a screen share, as Jicofo passes it on) is a
    desktop for the allocator from the start; an unknown type, or one on audio, is left unset."""
    bridge, _ = registry
    handler = Colibri2Handler(bridge)
    handler.handle(ConferenceModify("m", create=True, endpoints=(create_endpoint("a"),)))
    ep = bridge.conference_by_meeting("m").endpoints["a"]  # type: ignore[union-attr]
    camera = MediaSource("video", "a-v0", sources=(SourceDesc(7, "a-v0", video_type="camera"),))
    screen = MediaSource("video", "a-v1", sources=(SourceDesc(9, "a-v1", video_type="DESKTOP"),))
    odd = MediaSource("video", "a-v2", sources=(SourceDesc(11, "a-v2", video_type="hologram"),))
    audio = MediaSource("audio", "a-a0", sources=(SourceDesc(5, "a-a0", video_type="desktop"),))
    handler.handle(ConferenceModify("m", endpoints=(Endpoint("a", sources=(camera, screen, odd, audio)),)))
    assert {s.name: s.video_type for s in ep.sources} == {
        "a-v0": "camera", "a-v1": "desktop", "a-v2": None, "a-a0": None,
    }  # fmt: skip
