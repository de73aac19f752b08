"""The bridge's registry (bridge.Bridge) and the typed seam under it, over a FakeNative (no native core).

One registry of conferences, by id and by meeting-id; each endpoint fact stored once on its Endpoint; the
description values it sends cross as the native module's typed values, SIM/FID groups intact; idle expiry is
lifecycle policy over the registry, driven here by a fake clock.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace

import pytest

from bridge import (
    Bridge,
    BridgeError,
    Candidate,
    Fingerprint,
    Source,
    SsrcGroup,
    TransportDescription,
    _native,
)
from bridge.changes import (
    CreateConference,
    CreateEndpoint,
    ExpireConference,
    ExpireEndpoint,
    UpdateEndpoint,
)
from bridge.colibri2_handler import Colibri2Handler
from bridge.lifecycle import Lifecycle, LifecycleConfig, idle_expiry
from bridge.seam import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    DEPENDENCY_DESCRIPTOR_URI,
    TRANSPORT_CC_URI,
    to_native_candidate,
    to_native_fingerprint,
    to_native_source,
)
from bridge.xmpp_core import BridgeState
from colibri2.model import (
    Colibri2Error,
    ConferenceModify,
    Endpoint,
    Media,
    Parameter,
    PayloadType,
    RtcpFb,
    RtpHdrExt,
    Transport,
)
from tests.helpers.fake_native import FakeNative, fake_bridge

FP = Fingerprint.parse("sha-256", ":".join(["AB"] * 32), "active")


def test_conferences_are_found_by_id_and_by_meeting_id_and_forgotten_in_both() -> None:
    bridge, native = fake_bridge()
    conference = bridge.create_conference("meeting-1", "c1", name="room@conference.example")
    assert bridge.get_conference("c1") is conference is bridge.conference_by_meeting("meeting-1")
    assert conference.name == "room@conference.example"
    with pytest.raises(BridgeError, match="already exists"):
        bridge.create_conference("meeting-1")
    with pytest.raises(BridgeError, match="already exists"):
        bridge.create_conference("meeting-2", "c1")
    conference.close()
    assert bridge.get_conference("c1") is None and bridge.conference_by_meeting("meeting-1") is None
    assert bridge.conferences == {}
    # The meeting can start again.
    assert bridge.create_conference("meeting-1").meeting_id == "meeting-1"
    assert [m for m, _ in native.commands] == ["create_router", "close_router", "create_router"]


def test_apply_makes_typed_changes_in_order_and_stores_each_fact_once() -> None:
    bridge, native = fake_bridge()
    changed: list[str] = []
    bridge.on_change = lambda conference: changed.append(conference.meeting_id)
    sources = (Source("video", (1, 2), "a-v0", (SsrcGroup("FID", (1, 2)),)),)
    remote = TransportDescription(
        "uf", "p" * 22, (FP,), (Candidate(ipaddress.ip_address("192.0.2.9"), 9, 1),)
    )
    bridge.apply(
        [
            CreateConference("m"),
            CreateEndpoint("m", "a", stats_id="s", muc_role="participant", capabilities=("source-names",)),
            UpdateEndpoint("m", "a", force_mute=(False, True), remote=remote, sources=sources, last_n=3),
        ]
    )
    assert changed == ["m"], "one on_change for the whole batch"
    conference = bridge.conference_by_meeting("m")
    assert conference is not None
    ep = conference.endpoints["a"]
    assert (ep.stats_id, ep.muc_role, ep.capabilities, ep.last_n) == (
        "s",
        "participant",
        ("source-names",),
        3,
    )
    assert (ep.force_mute_audio, ep.force_mute_video) == (False, True)
    assert ep.remote == remote and ep.sources == sources
    assert [m for m, _ in native.commands] == [
        "create_router",
        "create_transport",
        "set_force_mute",
        "connect_transport",
        "add_remote_candidates",
        "set_sources",
    ]
    # Updates leave what they do not carry.
    bridge.apply([UpdateEndpoint("m", "a", stats_id="t")])
    assert (ep.stats_id, ep.last_n, ep.sources) == ("t", 3, sources)
    bridge.apply([ExpireEndpoint("m", "a"), ExpireConference("m")])
    assert ep.closed and conference.closed and bridge.conference_by_meeting("m") is None
    with pytest.raises(BridgeError, match="no conference"):
        bridge.apply([ExpireConference("m")])


def test_description_values_cross_the_seam_typed() -> None:
    assert FP.value == ":".join(["AB"] * 32) and FP.digest == bytes([0xAB] * 32)
    native_fp = to_native_fingerprint(FP)
    assert (native_fp.hash, native_fp.digest, native_fp.setup) == (
        _native.HashFunction.SHA_256,
        bytes([0xAB] * 32),
        _native.DtlsSetup.ACTIVE,
    )
    for bad in (
        ("md5", "AB:CD"),
        ("sha-256", "AB:CD"),
        ("sha-256", "ABCD" * 16),
        ("sha-1", "zz:" * 19 + "zz"),
    ):
        with pytest.raises(ValueError):
            Fingerprint.parse(*bad)
    assert Fingerprint.parse(" SHA-1 ", "ab:" * 19 + "ab").hash == "sha-1"

    candidate = to_native_candidate(Candidate(ipaddress.ip_address("2001:db8::1"), 5000, 7, "relay"))
    assert (candidate.ip, candidate.port, candidate.priority, candidate.type) == (
        ipaddress.ip_address("2001:db8::1"),
        5000,
        7,
        _native.CandidateType.RELAY,
    )
    # An address crosses as an address object, never as text to parse on the other side.
    with pytest.raises(TypeError, match="ipaddress"):
        _native.Candidate("192.0.2.1", 1, 1, _native.CandidateType.HOST)  # type: ignore[arg-type]

    simulcast = Source(
        "video",
        (1, 11, 2, 12),
        "a-v0",
        (SsrcGroup("SIM", (1, 2)), SsrcGroup("FID", (1, 11)), SsrcGroup("FID", (2, 12))),
    )
    source = to_native_source(simulcast)
    assert (source.kind, source.ssrcs, source.name) == (_native.MediaKind.VIDEO, [1, 11, 2, 12], "a-v0")
    assert [(g.semantics, g.ssrcs) for g in source.groups] == [
        (_native.SsrcGroupSemantics.SIM, [1, 2]),
        (_native.SsrcGroupSemantics.FID, [1, 11]),
        (_native.SsrcGroupSemantics.FID, [2, 12]),
    ]


def test_a_remote_without_fingerprints_is_only_a_trickle_of_the_same_credentials() -> None:
    bridge, native = fake_bridge()
    ep = bridge.create_conference("m").create_endpoint("a")
    with pytest.raises(BridgeError, match="fingerprint"):
        ep.set_remote_description(TransportDescription("uf", "p" * 22, fingerprints=()))
    ep.set_remote_description(TransportDescription("uf", "p" * 22, (FP,)))
    more = (Candidate(ipaddress.ip_address("192.0.2.7"), 7, 1),)
    ep.set_remote_description(TransportDescription("uf", "p" * 22, (), more))
    assert ep.remote is not None and ep.remote.fingerprints == (FP,) and ep.remote.candidates == more
    assert len(native.connected) == 1 and len(native.candidates) == 1


# ---- idle expiry: lifecycle policy over the registry, on a fake clock


def test_idle_endpoints_then_the_empty_conference_expire() -> None:
    bridge, _ = fake_bridge()
    conference = bridge.create_conference("m")
    a, b = conference.create_endpoint("a"), conference.create_endpoint("b")
    t0, timeout = 1000.0, 60.0
    packets = {a.transport_id: 0, b.transport_id: 0}
    # The first check that sees an entity starts its clock.
    assert idle_expiry(bridge, t0, packets, timeout) == []
    assert (a.last_activity, b.last_activity, conference.last_activity) == (t0, t0, t0)
    packets[a.transport_id] = 5  # a's transport received something
    assert idle_expiry(bridge, t0 + 59, packets, timeout) == []
    assert a.last_activity == t0 + 59 and b.last_activity == t0
    expired = idle_expiry(bridge, t0 + 60, packets, timeout)
    assert expired == [ExpireEndpoint("m", "b")]
    bridge.apply(expired)
    assert b.closed and set(conference.endpoints) == {"a"}
    # a goes quiet: it expires a timeout after its last packet.
    assert idle_expiry(bridge, t0 + 118, packets, timeout) == []
    expired = idle_expiry(bridge, t0 + 119, packets, timeout)
    assert expired == [ExpireEndpoint("m", "a")]
    bridge.apply(expired)
    # The conference's clock runs from the last check that saw an endpoint stay (+118).
    assert idle_expiry(bridge, t0 + 177, packets, timeout) == []
    expired = idle_expiry(bridge, t0 + 178, packets, timeout)
    assert expired == [ExpireConference("m")]
    bridge.apply(expired)
    assert conference.closed and bridge.conferences == {}


async def test_the_lifecycle_and_the_handler_share_one_drain_state() -> None:
    native = FakeNative()
    bridge = Bridge(native=native)
    state = BridgeState()
    handler = Colibri2Handler(bridge, shutdown=state)
    lifecycle = Lifecycle(bridge, state, LifecycleConfig(graceful_shutdown_max_duration=60))
    create = ConferenceModify(
        "m",
        create=True,
        endpoints=(Endpoint("a", create=True, capabilities=("source-names",), transport=Transport()),),
    )
    handler.handle(create)
    lifecycle.begin_shutdown(graceful=True)
    with pytest.raises(Colibri2Error) as info:
        handler.handle(ConferenceModify("n", create=True))
    assert info.value.condition == "service-unavailable"
    assert lifecycle.participants() == 1
    await lifecycle.stop()


async def test_native_events_arrive_typed_and_reach_their_owner(caplog: pytest.LogCaptureFixture) -> None:
    bridge, native = fake_bridge()
    changes: list[tuple[str, str, str]] = []
    bridge.on_transport_state = lambda c: changes.append((c.endpoint_id, c.state, c.detail))
    ep = bridge.create_conference("m").create_endpoint("a")

    native.push_event(_native.TransportStateEvent(ep.transport_id, _native.TransportState.CONNECTED, ""))
    native.push_event(_native.TransportStateEvent(ep.transport_id + 100, _native.TransportState.FAILED, "x"))
    bridge._drain_events(bridge.shards[0])
    seen = [ep.state]
    assert changes == [("a", "connected", "")]

    # An estimate's fall reaches its endpoint's owner; one of an unknown transport nobody.
    fell: list[tuple[str, int]] = []
    bridge.on_estimate_fell = lambda e, bps: fell.append((e.id, bps))
    native.push_event(_native.EstimateFellEvent(ep.transport_id, 300_000))
    native.push_event(_native.EstimateFellEvent(ep.transport_id + 100, 200_000))
    bridge._drain_events(bridge.shards[0])
    assert fell == [("a", 300_000)]
    rose: list[tuple[str, int]] = []
    bridge.on_estimate_rose = lambda e, bps: rose.append((e.id, bps))
    native.push_event(_native.EstimateRoseEvent(ep.transport_id, 900_000))
    native.push_event(_native.EstimateRoseEvent(ep.transport_id + 100, 800_000))
    bridge._drain_events(bridge.shards[0])
    assert rose == [("a", 900_000)] and fell == [("a", 300_000)]

    native.push_event(_native.TransportStateEvent(ep.transport_id, _native.TransportState.FAILED, "consent"))
    native.push_event(_native.CommandFailedEvent(ep.transport_id, "unknown transport"))
    bridge._drain_events(bridge.shards[0])
    seen.append(ep.state)
    assert seen == ["connected", "failed"] and changes[-1] == ("a", "failed", "consent")
    assert "endpoint a: unknown transport" in caplog.text

    # A stats request is answered by the StatsEvent with its id; the native side is asked exactly once.
    stats = asyncio.ensure_future(bridge.get_stats(timeout=1.0))
    await asyncio.sleep(0)
    ((request_id,),) = native.named("get_stats")
    assert isinstance(request_id, int)
    native.push_event(_native.StatsEvent(request_id + 1, {"stale": True}))
    native.push_event(_native.StatsEvent(request_id, {"total": {}}))
    bridge._drain_events(bridge.shards[0])
    merged = await stats
    assert merged["total"] == {} and "stale" not in merged
    assert merged["shards"] == [
        {"index": 0, "cpu_seconds": 0.0, "routers": 0, "transports": 0, "packets_in": 0, "packets_out": 0}
    ]


def test_an_endpoints_medias_tell_the_packet_path_its_codecs_and_header_extensions() -> None:
    """Video payload types, the RFC 6464 audio-level id and the AV1 dependency-descriptor id reach the
    native core once, and again only when they change."""
    bridge, native = fake_bridge()
    av1 = Media(
        "video",
        payload_types=(
            PayloadType(41, "AV1", 90000),
            PayloadType(42, "rtx", 90000, None, (Parameter("apt", "41"),)),
        ),
        rtp_hdrexts=(RtpHdrExt(11, DEPENDENCY_DESCRIPTOR_URI),),
    )
    audio = Media("audio", rtp_hdrexts=(RtpHdrExt(1, AUDIO_LEVEL_URI),))
    bridge.apply([CreateConference("m"), CreateEndpoint("m", "a", medias=(audio, av1))])
    ep = bridge.conference_by_meeting("m").endpoints["a"]  # type: ignore[union-attr]
    assert native.named("set_header_extensions") == [(ep.transport_id, (1, 11, None))]
    ((_, types),) = native.named("set_payload_types")
    assert [(t.pt, t.codec, t.apt) for t in types] == [  # type: ignore[attr-defined]
        (41, _native.VideoCodec.AV1, None),
        (42, _native.VideoCodec.RTX, 41),
    ]
    # The same medias again: nothing new; without the extension: it is turned off.
    bridge.apply([UpdateEndpoint("m", "a", medias=(audio, av1))])
    assert len(native.named("set_header_extensions")) == 1
    bridge.apply([UpdateEndpoint("m", "a", medias=(audio, Media("video", payload_types=av1.payload_types)))])
    assert native.named("set_header_extensions")[-1] == (ep.transport_id, (1, None, None))
    # Transport-wide sequence numbers: one id per transport, from the video (else the audio) media.
    tcc = RtpHdrExt(5, TRANSPORT_CC_URI)
    bridge.apply(
        [UpdateEndpoint("m", "a", medias=(replace(audio, rtp_hdrexts=(*audio.rtp_hdrexts, tcc)), av1))]
    )
    assert native.named("set_header_extensions")[-1] == (ep.transport_id, (1, 11, 5))
    # REMB instead of transport-cc: abs-send-time is passed only while the video negotiated goog-remb and no
    # transport-cc (the packet path then estimates what it receives and answers with REMB).
    remb = tuple(replace(pt, rtcp_fbs=(RtcpFb("goog-remb"),)) for pt in av1.payload_types)
    abs_send_time = RtpHdrExt(3, ABS_SEND_TIME_URI)
    video = Media("video", payload_types=remb, rtp_hdrexts=(abs_send_time,))
    bridge.apply([UpdateEndpoint("m", "a", medias=(audio, video))])
    assert native.named("set_header_extensions")[-1] == (ep.transport_id, (1, None, None, 3))
    with_tcc = replace(video, rtp_hdrexts=(abs_send_time, tcc))
    bridge.apply([UpdateEndpoint("m", "a", medias=(audio, with_tcc))])
    assert native.named("set_header_extensions")[-1] == (ep.transport_id, (1, None, 5))
    no_remb = Media("video", payload_types=av1.payload_types, rtp_hdrexts=(abs_send_time,))
    bridge.apply([UpdateEndpoint("m", "a", medias=(audio, no_remb))])
    assert native.named("set_header_extensions")[-1] == (ep.transport_id, (1, None, None))
