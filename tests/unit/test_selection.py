"""bridge.selection over a registry with a fake packet path: the sublayer figures become the Allocator's
layers, and a receiver's transport-cc estimate becomes its bandwidth (`trust-bwe`)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bridge.allocation import UP_HEADROOM
from bridge.bridge import Bridge, Conference, Endpoint
from bridge.changes import CreateConference, CreateEndpoint, UpdateEndpoint
from bridge.channel import ReceiverVideoConstraints, VideoConstraints
from bridge.description import Source, SsrcGroup
from bridge.seam import TRANSPORT_CC_URI
from bridge.selection import (
    ALL_TEMPORAL,
    BITRATE_SMOOTHING,
    Selection,
    Sublayer,
    allocation_layers,
    video_type_of,
)
from colibri2.model import Media, RtpHdrExt
from tests.helpers.fake_native import FakeNative, fake_bridge


def _figures(router: int, transport: int) -> list[dict[str, object]]:
    """A 3-layer simulcast source with 3 temporal layers each, as the packet path reports it."""
    out: list[dict[str, object]] = []
    for layer, (height, bps) in enumerate(((180, 150_000), (360, 500_000), (720, 1_500_000))):
        for t, (share, fps) in enumerate(((0.5, 7.5), (0.2, 7.5), (0.3, 15.0))):
            out.append(
                {
                    "router": router,
                    "transport": transport,
                    "source": "a-v0",
                    "layer": layer,
                    "spatial": 0,
                    "temporal": t,
                    "bitrate_bps": int(bps * share),
                    "frame_rate": fps,
                    "height": height,
                }
            )
    return out


def test_sublayers_become_layers_that_cost_what_they_need() -> None:
    simulcast = [
        Sublayer(layer, 0, t, 100 * (layer + 1), 10.0, 180 << layer) for layer in range(2) for t in range(2)
    ]
    layers = allocation_layers(simulcast)
    assert [(la.spatial, la.temporal, la.height, la.frame_rate, la.bitrate_bps) for la in layers] == [
        (0, 0, 180, 10.0, 100),
        (0, 1, 180, 20.0, 200),
        (1, 0, 360, 10.0, 200),
        (1, 1, 360, 20.0, 400),
    ]
    # One SSRC with SVC: a spatial layer needs the ones below it; its frame rate is its own frames'.
    svc = [Sublayer(0, s, t, 100, 15.0, 180 << s) for s in range(2) for t in range(2)]
    layers = allocation_layers(svc)
    assert [(la.spatial, la.temporal, la.bitrate_bps, la.frame_rate) for la in layers] == [
        (0, 0, 100, 15.0),
        (0, 1, 200, 30.0),
        (1, 0, 200, 15.0),
        (1, 1, 400, 30.0),
    ]
    # A layer whose own packets stopped is not received, whatever the layers below bring.
    stopped = [Sublayer(0, 0, 0, 100, 15.0, 180), Sublayer(0, 0, 1, 0, 0.0, 180)]
    assert [la.bitrate_bps for la in allocation_layers(stopped)] == [100, 0]
    # A layer is ramping while any sublayer it needs is (a 360p switched on above a steady 180p).
    rising = [*simulcast[:2], *(f._replace(ramping=True) for f in simulcast[2:])]
    assert [la.ramping for la in allocation_layers(rising)] == [False, False, True, True]
    svc_rising = [svc[0]._replace(ramping=True), *svc[1:]]
    assert [la.ramping for la in allocation_layers(svc_rising)] == [True, True, True, True]


def test_a_source_with_no_whole_rate_window_yet_has_no_layers_to_choose_from() -> None:
    """In the first ~50 ms of a camera only its base temporal layer has a bitrate; choosing it would leave
    the others out until a keyframe. Until one of its layers was measured over a whole window the source
    has no layers; once one was, the others count as they come."""
    young = [
        Sublayer(0, 0, 0, 90_000, 0.0, 180, settled=False),
        Sublayer(0, 0, 2, 0, 0.0, 180, settled=False),
    ]
    assert allocation_layers(young) == ()
    one_settled = [young[0]._replace(frame_rate=7.5, settled=True), young[1]]
    assert [(la.temporal, la.bitrate_bps) for la in allocation_layers(one_settled)] == [(0, 90_000), (2, 0)]


def test_a_camera_that_has_just_started_is_forwarded_whole_until_its_layers_are_measured() -> None:
    bridge, native, conference, a, b = _a_sends_b_wants_720p()
    selection = Selection(bridge, bandwidth_bps=10_000_000)
    started = _figures(conference.router_id, a.transport_id)
    for f in started:
        f["settled"] = False
        f["frame_rate"] = 0.0
        if f["temporal"] != 0:
            f["bitrate_bps"] = 0  # seen, but for less than a tenth of a window
    selection.on_stats(1.0, {"layers": started, "transports": {}})
    (last,) = selection.history(conference.id, "b")[-1:]
    assert [(s["reason"], s["layer"]) for s in last["sources"]] == [("layer-missing", None)]
    assert native.named("set_allocation")[-1] == (b.transport_id, [("a-v0", (0, ALL_TEMPORAL))])
    selection.on_stats(1.5, {"layers": _figures(conference.router_id, a.transport_id), "transports": {}})
    (last,) = selection.history(conference.id, "b")[-1:]
    (source,) = last["sources"]
    assert (source["layer"]["spatial"], source["layer"]["temporal"]) == (2, 2), last
    assert native.named("set_allocation")[-1] == (b.transport_id, [("a-v0", (2, 2))])


def _a_sends_b_wants_720p() -> tuple[Bridge, FakeNative, Conference, Endpoint, Endpoint]:
    """A conference where a sends a 3-layer simulcast source and b asks 720p of everyone (so only the
    bandwidth can hold it lower)."""
    bridge, native = fake_bridge()
    sources = (Source("video", (1, 2, 3), "a-v0", (SsrcGroup("SIM", (1, 2, 3)),)),)
    bridge.apply([CreateConference("m"), CreateEndpoint("m", "a"), CreateEndpoint("m", "b")])
    bridge.apply([UpdateEndpoint("m", "a", sources=sources)])
    conference = bridge.conference_by_meeting("m")
    assert conference is not None
    a, b = conference.endpoints["a"], conference.endpoints["b"]
    b.video_constraints = ReceiverVideoConstraints(default_constraints=VideoConstraints(720))
    return bridge, native, conference, a, b


def _b_estimated(trust_bwe: bool, estimate: int) -> tuple[Selection, Conference, Endpoint, dict[str, object]]:
    """A stats snapshot taken: a's layers, receiver b's transport-cc estimate `estimate`."""
    bridge, _native, conference, a, b = _a_sends_b_wants_720p()
    selection = Selection(bridge, bandwidth_bps=10_000_000, trust_bwe=trust_bwe)
    snapshot: dict[str, object] = {
        "layers": _figures(conference.router_id, a.transport_id),
        "transports": {b.transport_id: {"bandwidth_estimate_bps": estimate}, a.transport_id: {}},
    }
    selection.on_stats(1.0, snapshot)
    return selection, conference, b, snapshot


def _call(trust_bwe: bool) -> tuple[Selection, dict[str, Any]]:
    selection, conference, _b, _snapshot = _b_estimated(trust_bwe, 400_000)
    (last,) = selection.history(conference.id, "b")[-1:]
    return selection, last


def test_a_receivers_estimate_is_its_bandwidth_with_trust_bwe() -> None:
    _, last = _call(trust_bwe=True)
    assert last["bandwidth_bps"] == 400_000
    (source,) = last["sources"]
    # 400 kbit/s: 180p at 30 frames/s; 360p would need 30 frames/s too for a camera (500 kbit/s).
    assert (source["layer"]["height"], source["layer"]["frame_rate"]) == (180, 30.0), last
    assert last["total_bps"] <= 400_000


def test_an_estimate_of_nothing_sends_no_video_rather_than_the_configured_bandwidth() -> None:
    """The packet path says 0 when what media costs beyond plain RTP takes the whole estimate: the receiver
    then has no room for video, not the configured 10 Mbit/s of a receiver without an estimate."""
    selection, conference, _b, _snapshot = _b_estimated(True, 0)
    (last,) = selection.history(conference.id, "b")[-1:]
    assert last["bandwidth_bps"] == 0, last
    assert last["total_bps"] == 0, last
    (source,) = last["sources"]
    assert source["layer"] is None, last


def test_before_its_first_estimate_a_receiver_with_transport_cc_is_sized_by_the_initial_estimate() -> None:
    """Where the packet path's estimate starts (a receiver behind a small link is not sent 720p before any
    feedback); a receiver without transport-cc never gets an estimate and keeps the configured bandwidth."""
    bridge, _native, conference, a, b = _a_sends_b_wants_720p()
    selection = Selection(bridge, bandwidth_bps=10_000_000, trust_bwe=True, initial_estimate_bps=300_000)
    selection.on_stats(1.0, {"layers": _figures(conference.router_id, a.transport_id), "transports": {}})
    assert selection.bandwidth_of(b) == 10_000_000
    tcc = Media("video", rtp_hdrexts=(RtpHdrExt(5, TRANSPORT_CC_URI),))
    bridge.apply([UpdateEndpoint("m", "b", medias=(tcc,))])
    assert b.transport_cc
    assert selection.bandwidth_of(b) == 300_000
    assert selection.bandwidth_of(b, audio_bps=50_000) == 250_000
    selection.run(1.5, conference)
    (last,) = selection.history(conference.id, "b")[-1:]
    assert last["bandwidth_bps"] == 300_000 and last["total_bps"] <= 300_000, last
    # Without trust-bwe the estimate sizes nothing.
    off = Selection(bridge, bandwidth_bps=10_000_000, initial_estimate_bps=300_000)
    assert off.bandwidth_of(b) == 10_000_000


def test_a_receiver_that_announced_transport_cc_and_sends_no_feedback_gets_the_configured_bandwidth() -> None:
    """Held at the initial estimate while feedback may still come; after FEEDBACK_GRACE of being sent RTP
    without any, sized as a receiver without transport-cc (counted); feedback later still counts."""
    bridge, _native, conference, a, b = _a_sends_b_wants_720p()
    tcc = Media("video", rtp_hdrexts=(RtpHdrExt(5, TRANSPORT_CC_URI),))
    bridge.apply([UpdateEndpoint("m", "b", medias=(tcc,))])
    selection = Selection(bridge, bandwidth_bps=10_000_000, trust_bwe=True, initial_estimate_bps=300_000)
    layers = _figures(conference.router_id, a.transport_id)

    def snapshot(now: float, b_stats: dict[str, object]) -> None:
        selection.on_stats(
            now, {"layers": layers, "transports": {b.transport_id: b_stats, a.transport_id: {}}}
        )

    cc = {"probe": {"raises": 0}}
    snapshot(1.0, {**cc, "rtp_out": 0})
    snapshot(5.0, {**cc, "rtp_out": 0})
    assert selection.bandwidth_of(b) == 300_000, "sent nothing yet: no feedback to expect"
    snapshot(6.0, {**cc, "rtp_out": 50})
    snapshot(8.9, {**cc, "rtp_out": 400})
    assert selection.bandwidth_of(b) == 300_000
    assert selection.stats.no_feedback == 0
    snapshot(9.0, {**cc, "rtp_out": 420})
    assert selection.bandwidth_of(b) == 10_000_000
    assert selection.stats.no_feedback == 1
    (last,) = selection.history(conference.id, "b")[-1:]
    assert last["bandwidth_bps"] == 10_000_000, last
    snapshot(10.0, {**cc, "rtp_out": 500, "bandwidth_estimate_bps": 700_000})
    assert selection.bandwidth_of(b) == 700_000
    assert selection.stats.no_feedback == 1


@pytest.mark.parametrize("trust_bwe", [True, False])
def test_a_probe_raise_reported_between_snapshots_counts_at_once_if_it_is_a_new_peak(trust_bwe: bool) -> None:
    """The packet path's EstimateRose: with trust-bwe an estimate above every one the receiver had sizes it at
    once (the caller then reallocates) instead of at the next snapshot; a raise back under an earlier peak
    holds like any rise; without trust-bwe nothing changes. It is worth reallocating for at once only when it
    reaches what switching up needs."""
    selection, conference, b, snapshot = _b_estimated(trust_bwe, 400_000)
    # Short of 720p's 1.5 Mbit/s with UP_HEADROOM: b is sized by it, and the next cluster may reach that.
    assert selection.on_estimate_rose(b.transport_id, 900_000) is False
    selection.run(1.1, conference)
    (last,) = selection.history(conference.id, "b")[-1:]
    assert last["bandwidth_bps"] == (900_000 if trust_bwe else 10_000_000)
    # The next snapshot's slightly lower estimate is held as any.
    transports = snapshot["transports"]
    assert isinstance(transports, dict)
    transports[b.transport_id] = {"bandwidth_estimate_bps": 880_000, "probe": {"raises": 1}}
    selection.on_stats(2.0, snapshot)
    assert selection.bandwidth_of(b) == (880_000 if trust_bwe else 10_000_000)
    # After a fall, a probe back up, below the peak, holds.
    assert selection.on_estimate_fell(b.transport_id, 300_000) is trust_bwe
    assert selection.on_estimate_rose(b.transport_id, 600_000) is False
    assert selection.bandwidth_of(b) == (300_000 if trust_bwe else 10_000_000)
    # A new peak that affords 720p is.
    assert selection.on_estimate_rose(b.transport_id, 1_700_000) is trust_bwe
    assert selection.bandwidth_of(b) == (1_700_000 if trust_bwe else 10_000_000)


@pytest.mark.parametrize("trust_bwe", [True, False])
def test_a_fall_reported_between_snapshots_counts_at_once(trust_bwe: bool) -> None:
    """The packet path's EstimateFell: with trust-bwe the receiver is sized by it at once (the caller then
    reallocates), a rise still holds; without, it changes nothing."""
    selection, conference, b, snapshot = _b_estimated(trust_bwe, 3_000_000)
    assert selection.on_estimate_fell(b.transport_id, 400_000) is trust_bwe
    selection.run(1.1, conference)
    (last,) = selection.history(conference.id, "b")[-1:]
    assert last["bandwidth_bps"] == (400_000 if trust_bwe else 10_000_000)
    # A report no lower than the least held is no news; the next snapshot's rise still holds.
    assert selection.on_estimate_fell(b.transport_id, 500_000) is False
    selection.on_stats(2.0, snapshot)
    (last,) = selection.history(conference.id, "b")[-1:]
    assert last["bandwidth_bps"] == (400_000 if trust_bwe else 10_000_000)


@pytest.mark.parametrize("trust_bwe", [True, False])
def test_a_receiver_held_below_its_ideal_is_probed_towards_it_until_it_gets_it(trust_bwe: bool) -> None:
    bridge, native, conference, a, b = _a_sends_b_wants_720p()
    selection = Selection(bridge, bandwidth_bps=10_000_000, trust_bwe=trust_bwe)

    def probes(estimate: int) -> list[Any]:
        native.commands.clear()
        selection.on_stats(
            1.0,
            {
                "layers": _figures(conference.router_id, a.transport_id),
                "transports": {
                    b.transport_id: {"bandwidth_estimate_bps": estimate},
                    a.transport_id: {"audio_in_bps": 40_000},
                },
            },
        )
        return [args for name, args in native.commands if name == "set_probe_target"]

    if not trust_bwe:
        assert probes(400_000) == [], "the estimate is not used, so not probed either"
        return
    # 400 kbit/s holds b at 180p; its ideal is the 720p layer, which has just started: probe towards what
    # 720p settles at (EXPECTED_BITRATES) with the headroom a switch up needs, and the 40 kbit/s of a's audio
    # it is sent too, once.
    assert probes(400_000) == [(b.transport_id, math.ceil(2_500_000 / (1 - UP_HEADROOM)) + 40_000)]
    assert probes(420_000) == []
    # Once measured for BITRATE_SMOOTHING snapshots, towards what it costs (1.5 Mbit/s).
    for _ in range(BITRATE_SMOOTHING - 3):
        assert probes(400_000) == []
    assert probes(400_000) == [(b.transport_id, math.ceil(1_500_000 / (1 - UP_HEADROOM)) + 40_000)]
    # a receives nothing (b sends nothing): it is never probed.
    assert a.probe_target_bps == 0
    # Once the estimate allows 720p (and a's audio) and held for ESTIMATE_HOLD snapshots, probing stops.
    assert probes(2_000_000) == []
    assert probes(2_000_000) == []
    assert probes(2_000_000) == [(b.transport_id, 0)]
    assert probes(2_000_000) == []


def test_with_trust_bwe_a_rise_counts_once_it_held_and_the_others_audio_is_kept_room_for() -> None:
    bridge, _native = fake_bridge()
    bridge.apply([CreateConference("m"), CreateEndpoint("m", "a"), CreateEndpoint("m", "b")])
    conference = bridge.conference_by_meeting("m")
    assert conference is not None
    a, b = conference.endpoints["a"], conference.endpoints["b"]
    selection = Selection(bridge, bandwidth_bps=10_000_000, trust_bwe=True)

    def snapshot(estimate: int, audio: int) -> int:
        selection.on_stats(
            1.0,
            {
                "layers": [],
                "transports": {
                    b.transport_id: {"bandwidth_estimate_bps": estimate},
                    a.transport_id: {"audio_in_bps": audio},
                },
            },
        )
        return bandwidth(b)

    def bandwidth(ep: Endpoint) -> int:
        # What the Allocator sizes `ep` by, as the bridge reports it.
        value: int = selection.bandwidth_view(conference)[ep.id]["bandwidth_bps"]
        return value

    assert bandwidth(b) == 10_000_000, "no estimate yet: the configured figure"
    # b is sent a's 40 kbit/s of audio: its video gets the rest.
    assert snapshot(1_000_000, 40_000) == 960_000
    # A rise counts once it held for three snapshots; a fall at once.
    assert snapshot(2_000_000, 40_000) == 960_000
    assert snapshot(2_000_000, 40_000) == 960_000
    assert snapshot(2_000_000, 40_000) == 1_960_000
    assert snapshot(500_000, 40_000) == 460_000
    # a's own audio is not taken from a's bandwidth.
    assert bandwidth(a) == 10_000_000


def test_a_probe_taking_the_estimate_to_a_new_high_counts_at_once() -> None:
    bridge, _native = fake_bridge()
    bridge.apply([CreateConference("m"), CreateEndpoint("m", "a"), CreateEndpoint("m", "b")])
    conference = bridge.conference_by_meeting("m")
    assert conference is not None
    b = conference.endpoints["b"]
    selection = Selection(bridge, bandwidth_bps=10_000_000, trust_bwe=True)

    def snapshot(estimate: int, raises: int) -> int:
        transport = {"bandwidth_estimate_bps": estimate, "probe": {"raises": raises}}
        selection.on_stats(1.0, {"layers": [], "transports": {b.transport_id: transport}})
        value: int = selection.bandwidth_view(conference)[b.id]["bandwidth_bps"]
        return value

    # From a low start, each probe that finds more than the link was ever seen to carry counts at once.
    assert snapshot(300_000, 0) == 300_000
    assert snapshot(900_000, 1) == 900_000
    assert snapshot(2_000_000, 2) == 2_000_000
    # A fall at once; a probe back up to where it was before is a rise like any other: it must hold.
    assert snapshot(800_000, 2) == 800_000
    assert snapshot(1_900_000, 3) == 800_000
    assert snapshot(1_900_000, 3) == 800_000
    assert snapshot(1_900_000, 3) == 1_900_000
    # A new high the estimator reached by itself (no probe) holds too.
    assert snapshot(2_400_000, 3) == 1_900_000


def test_a_receiver_sent_no_video_for_want_of_bandwidth_takes_a_rise_at_once() -> None:
    bridge, _native, conference, a, b = _a_sends_b_wants_720p()
    selection = Selection(bridge, bandwidth_bps=10_000_000, trust_bwe=True)

    def snapshot(estimate: int) -> tuple[int, int | None]:
        transports = {b.transport_id: {"bandwidth_estimate_bps": estimate}, a.transport_id: {}}
        figures = _figures(conference.router_id, a.transport_id)
        selection.on_stats(1.0, {"layers": figures, "transports": transports})
        view = selection.bandwidth_view(conference)[b.id]
        (source,) = view["sources"]
        return view["bandwidth_bps"], source["height"]

    assert snapshot(2_000_000) == (2_000_000, 720)
    # The link collapsed under 180p's cheapest layer (75 kbit/s): no video at all.
    assert snapshot(60_000) == (60_000, None)
    # The next rise counts at once, not after ESTIMATE_HOLD snapshots.
    assert snapshot(400_000)[0] == 400_000
    # With video again, a rise holds as before.
    assert snapshot(300_000)[0] == 300_000
    assert snapshot(900_000)[0] == 300_000


def test_a_layers_bitrate_is_its_recent_mean_and_zero_once_it_stops() -> None:
    bridge, _native, conference, a, _b = _a_sends_b_wants_720p()
    selection = Selection(bridge, bandwidth_bps=10_000_000)

    def top_layer_cost(scale: float) -> int:
        figures = _figures(conference.router_id, a.transport_id)
        for f in figures:
            if f["layer"] == 2:
                f["bitrate_bps"] = int(int(f["bitrate_bps"]) * scale)  # type: ignore[call-overload]
        selection.on_stats(1.0, {"layers": figures, "transports": {}})
        (source,) = selection.bandwidth_view(conference)["b"]["sources"]
        cost: int = source["bitrate_bps"] if source["height"] == 720 else 0
        return cost

    # 720p's three temporal layers cost 1.5 Mbit/s together; its figures swing by a fifth either way.
    assert top_layer_cost(1.0) == 1_500_000
    assert top_layer_cost(1.2) == pytest.approx(1_650_000, abs=3)
    assert top_layer_cost(0.8) == pytest.approx(1_500_000, abs=3)
    # Only the last BITRATE_SMOOTHING figures count; a stopped layer is not received at once.
    for _ in range(BITRATE_SMOOTHING):
        cost = top_layer_cost(1.1)
    assert cost == pytest.approx(1_650_000, abs=3)
    assert top_layer_cost(0.0) == 0


def test_without_trust_bwe_the_configured_bandwidth_stays() -> None:
    _, last = _call(trust_bwe=False)
    assert last["bandwidth_bps"] == 10_000_000
    (source,) = last["sources"]
    assert source["layer"]["height"] == 720, "the estimate was ignored"


def test_a_sources_video_type_channel_first_then_signalled_then_endpoint() -> None:
    """The allocator's video type of a source: the bridge channel's SourceVideoTypeMessage for it, else its
    Colibri2 videoType, else the endpoint's VideoTypeMessage, else camera."""
    bridge, _native = fake_bridge()
    bridge.apply([CreateConference("m"), CreateEndpoint("m", "a")])
    conference = bridge.conference_by_meeting("m")
    assert conference is not None
    a = conference.endpoints["a"]
    camera = Source("video", (1,), "a-v0")
    screen = Source("video", (2,), "a-v1", video_type="desktop")
    assert video_type_of(a, camera) == "camera"
    assert video_type_of(a, screen) == "desktop"
    a.video_type = "disabled"
    assert (video_type_of(a, camera), video_type_of(a, screen)) == ("disabled", "desktop")
    a.video_types["a-v1"] = "camera"
    a.video_types["a-v0"] = "desktop_high_fps"
    assert (video_type_of(a, camera), video_type_of(a, screen)) == ("desktop_high_fps", "camera")
