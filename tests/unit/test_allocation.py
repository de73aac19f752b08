"""bridge.allocation: JVB's documented allocation behaviour by example, its properties by Hypothesis, the
Allocator's change reporting, threshold and flight recorder, the settings and the metrics."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bridge.allocation import (
    EXPECTED_BITRATE_ABOVE,
    STAY_FALL,
    UP_HEADROOM,
    Allocation,
    AllocationSettings,
    AllocationStats,
    Allocator,
    Layer,
    Reason,
    Receiver,
    VideoSource,
    allocate,
    budget,
    effective_last_n,
    expected_bitrate,
    infer_heights,
    layer_quality,
)
from bridge.channel import ReceiverVideoConstraints, VideoConstraints, VideoType
from bridge.settings import SettingsError, parse_bitrate, parse_settings
from tests.helpers.metrics import exposition

HEIGHTS = (180, 360, 720)
RATES = (7.5, 15.0, 30.0)
#: Chrome-like simulcast: bitrate of each encoding's full frame rate; lower temporal layers cost less.
BASE_BPS = (150_000, 500_000, 1_500_000)
TEMPORAL_SHARE = (0.4, 0.7, 1.0)


def simulcast(
    name: str,
    owner: str,
    *,
    video_type: VideoType = "camera",
    muted: bool = False,
    heights: Sequence[int] = HEIGHTS,
    scale: float = 1.0,
) -> VideoSource:
    layers = tuple(
        Layer(s, t, h, RATES[t], int(BASE_BPS[s] * TEMPORAL_SHARE[t] * scale))
        for s, h in enumerate(heights)
        for t in range(3)
    )
    return VideoSource(name, owner, video_type, muted, layers)


def single(name: str, owner: str, height: int, bps: int, video_type: VideoType = "camera") -> VideoSource:
    return VideoSource(name, owner, video_type, layers=(Layer(0, 0, height, 30.0, bps),))


rvc = ReceiverVideoConstraints


def reason(allocation: Allocation, source: str) -> Reason | None:
    found = allocation.get(source)
    return None if found is None else found.reason


def hf(layer: Layer | None) -> tuple[int, float] | None:
    return None if layer is None else (layer.height, layer.frame_rate)


UNLIMITED = 10**9
ABC = [simulcast("a-v0", "a"), simulcast("b-v0", "b"), simulcast("c-v0", "c")]
STAGE_A = rvc(
    on_stage_sources=("a-v0",),
    constraints={n: VideoConstraints(720) for n in ("a-v0", "b-v0", "c-v0")},
)


# ---- examples: JVB's documented behaviour


def test_enough_bandwidth_gives_every_source_its_constraint() -> None:
    a = allocate(
        "r", rvc(on_stage_sources=("a-v0",), constraints={"a-v0": VideoConstraints(720)}), [], ABC, UNLIMITED
    )
    assert {s.source: hf(s.layer) for s in a.sources} == {
        "a-v0": (720, 30.0),
        # No defaultConstraints from the receiver: default-max-height-px (180).
        "b-v0": (180, 30.0),
        "c-v0": (180, 30.0),
    }
    assert all(s.reason is Reason.FORWARDED and s.layer == s.ideal for s in a.sources)
    assert not a.oversending and a.total_bps == 1_500_000 + 2 * 150_000


def test_on_stage_gets_360p30_before_others_go_above_180p() -> None:
    seen_stage_first = False
    for bw in range(0, 4_000_000, 25_000):
        a = allocate("r", STAGE_A, ["c", "b", "a"], ABC, bw)
        stage, *others = a.sources
        assert stage.source == "a-v0" and stage.on_stage
        if any(o.layer is not None and o.layer.height > 180 for o in others):
            assert stage.layer is not None and (stage.layer.height, stage.layer.frame_rate) >= (360, 30.0), bw
        if hf(stage.layer) == (360, 30.0) and all(hf(o.layer) == (180, 7.5) for o in others):
            seen_stage_first = True
        # Everyone in lastN gets its lowest layer before the on-stage source goes above its own.
        if stage.layer is not None and hf(stage.layer) != (180, 7.5):
            assert all(hf(o.layer) == (180, 7.5) or (o.layer and o.layer.height >= 180) for o in others)
            assert all(o.layer is not None for o in others), bw
    assert seen_stage_first


def test_thumbnails_improve_one_step_per_round() -> None:
    # Tile view at 360p: all sources reach 180p@30 before any goes to 360p, in priority order within a tier.
    tile = rvc(default_constraints=VideoConstraints(360))
    a = allocate("r", tile, ["b", "c", "a"], ABC, 3 * 150_000 + 350_000)
    assert [(s.source, hf(s.layer)) for s in a.sources] == [
        ("b-v0", (360, 30.0)),
        ("c-v0", (180, 30.0)),
        ("a-v0", (180, 30.0)),
    ]
    assert [s.reason for s in a.sources] == [
        Reason.FORWARDED,
        Reason.BANDWIDTH_LIMITED,
        Reason.BANDWIDTH_LIMITED,
    ]


def test_priority_is_on_stage_then_selected_then_speakers_and_silent_senders_last() -> None:
    sources = [
        simulcast("a-v0", "a"),
        simulcast("b-v0", "b"),
        simulcast("c-v0", "c"),
        simulcast("d-v0", "d", muted=True),
        simulcast("e-v0", "e"),
        simulcast("f-v0", "f"),
    ]
    c = rvc(on_stage_sources=("f-v0", "nobody-v0"), selected_sources=("d-v0", "c-v0", "f-v0"))
    a = allocate("r", c, ["a", "e", "b", "d"], sources, UNLIMITED)
    # f on stage; c selected (d is selected but muted: last); then speakers a, e, b; then d.
    assert [s.source for s in a.sources] == ["f-v0", "c-v0", "a-v0", "e-v0", "b-v0", "d-v0"]
    assert reason(a, "d-v0") is Reason.SUSPENDED
    assert [s.on_stage for s in a.sources] == [True, False, False, False, False, False]
    assert [s.selected for s in a.sources] == [True, True, False, False, False, True]


def test_last_n_keeps_the_first_sources_and_skips_unwanted_ones() -> None:
    sources = [simulcast(f"{ep}-v0", ep) for ep in "abcd"]
    speakers = ["d", "c", "b", "a"]
    a = allocate("r", rvc(last_n=2), speakers, sources, UNLIMITED)
    assert [(s.source, s.reason) for s in a.sources] == [
        ("d-v0", Reason.FORWARDED),
        ("c-v0", Reason.FORWARDED),
        ("b-v0", Reason.LAST_N),
        ("a-v0", Reason.LAST_N),
    ]
    assert a.last_n == 2
    # A source the receiver set to 0 or that is muted takes no slot: the next one does.
    off = rvc(last_n=2, constraints={"c-v0": VideoConstraints(0)})
    assert set(allocate("r", off, speakers, sources, UNLIMITED).forwarded()) == {"d-v0", "b-v0"}
    rate_off = rvc(last_n=2, constraints={"c-v0": VideoConstraints(-1, 0.0)})
    assert reason(allocate("r", rate_off, speakers, sources, UNLIMITED), "c-v0") is Reason.CONSTRAINT_LIMITED
    muted = [*sources[:2], replace(sources[2], muted=True), sources[3]]
    assert set(allocate("r", rvc(last_n=2), speakers, muted, UNLIMITED).forwarded()) == {"d-v0", "b-v0"}
    # A source in lastN that has no layer received now keeps its slot (so its sender is not told to stop).
    idle = [
        *sources[:2],
        replace(sources[2], layers=tuple(replace(la, bitrate_bps=0) for la in sources[2].layers)),
    ]
    result = allocate("r", rvc(last_n=2), speakers, [*idle, sources[3]], UNLIMITED)
    assert [s.reason for s in result.sources] == [
        Reason.FORWARDED,
        Reason.LAYER_MISSING,
        Reason.LAST_N,
        Reason.LAST_N,
    ]
    # 0: no video at all; jvb-last-n caps every receiver; initial-last-n until the receiver says.
    assert allocate("r", rvc(last_n=0), speakers, sources, UNLIMITED).forwarded() == {}
    capped = AllocationSettings(jvb_last_n=1)
    assert list(allocate("r", rvc(last_n=3), speakers, sources, UNLIMITED, settings=capped).forwarded()) == [
        "d-v0"
    ]
    initial = AllocationSettings(initial_last_n=3)
    assert len(allocate("r", rvc(), speakers, sources, UNLIMITED, settings=initial).forwarded()) == 3
    assert len(allocate("r", rvc(last_n=-1), speakers, sources, UNLIMITED, settings=initial).forwarded()) == 4


def test_effective_last_n_is_the_smallest_limit() -> None:
    s = AllocationSettings
    assert effective_last_n(None, s()) == -1
    assert effective_last_n(None, s(initial_last_n=5)) == 5
    assert effective_last_n(3, s(initial_last_n=5, jvb_last_n=4)) == 3
    assert effective_last_n(-1, s(jvb_last_n=4)) == 4
    assert effective_last_n(7, s(jvb_last_n=4)) == 4
    assert effective_last_n(0, s(jvb_last_n=4)) == 0


def test_own_sources_are_never_allocated() -> None:
    a = allocate("a", rvc(on_stage_sources=("a-v0",)), ["a"], ABC, UNLIMITED)
    assert [s.source for s in a.sources] == ["b-v0", "c-v0"]


def test_constraints_cap_height_and_frame_rate() -> None:
    c = rvc(default_constraints=VideoConstraints(360, 15.0))
    a = allocate("r", c, [], ABC, UNLIMITED)
    assert {hf(s.layer) for s in a.sources} == {(360, 15.0)}


def test_camera_layers_at_the_preferred_height_need_the_preferred_frame_rate() -> None:
    # 360p@7.5 and 360p@15 are skipped: 180p@30 goes straight to 360p@30 (JVB 3.1 C).
    c = rvc(default_constraints=VideoConstraints(720))
    source = simulcast("a-v0", "a")
    climbs = {hf(allocate("r", c, [], [source], bw).sources[0].layer) for bw in range(0, 2_000_000, 10_000)}
    assert climbs == {None, (180, 7.5), (180, 15.0), (180, 30.0), (360, 30.0), (720, 30.0)}
    # A screen share keeps them: resolution over frame rate.
    screen = replace(source, video_type="desktop")
    climbs = {hf(allocate("r", c, [], [screen], bw).sources[0].layer) for bw in range(0, 2_000_000, 10_000)}
    assert (360, 7.5) in climbs and (720, 15.0) in climbs


def test_measured_frame_rates_of_one_camera_may_differ_between_its_spatial_layers() -> None:
    # A busy sender's 720p ran at 15.4 fps while its 360p ran at 19.4 in the same second (a QoE run): 720p
    # is still the full-rate layer, not a lower temporal one, so a receiver with the bandwidth gets it. Its
    # 720p@7.5-equivalent (the bottom temporal layer) stays skipped.
    rates = {0: {0: 5.0, 1: 9.9, 2: 19.8}, 1: {0: 4.9, 1: 9.7, 2: 19.4}, 2: {0: 3.9, 1: 7.7, 2: 15.4}}
    layers = tuple(
        Layer(sp, t, h, rates[sp][t], int(BASE_BPS[sp] * TEMPORAL_SHARE[t]))
        for sp, h in enumerate(HEIGHTS)
        for t in range(3)
    )
    source = VideoSource("a-v0", "a", "camera", False, layers)
    c = rvc(default_constraints=VideoConstraints(720))
    assert hf(allocate("r", c, [], [source], UNLIMITED).sources[0].layer) == (720, 15.4)
    climbs = {hf(allocate("r", c, [], [source], bw).sources[0].layer) for bw in range(0, 2_000_000, 10_000)}
    assert (720, 3.9) not in climbs and (720, 7.7) not in climbs and (360, 9.7) not in climbs


def test_a_source_above_every_constraint_still_shows_its_lowest_layer() -> None:
    # JVB's soft constraint: a sender without simulcast is forwarded even when above the receiver's maxHeight.
    big = single("a-v0", "a", 720, 1_000_000)
    a = allocate("r", rvc(), [], [big], UNLIMITED)
    assert hf(a.sources[0].layer) == (720, 30.0) and a.sources[0].reason is Reason.FORWARDED
    # ...given bandwidth,
    assert allocate("r", rvc(), [], [big], 900_000).sources[0].reason is Reason.BANDWIDTH_LIMITED
    # ...but never when the receiver said 0.
    off = allocate("r", rvc(default_constraints=VideoConstraints(0)), [], [big], UNLIMITED)
    assert off.sources[0].layer is None and off.sources[0].reason is Reason.CONSTRAINT_LIMITED


def test_a_camera_above_every_height_constraint_keeps_its_frame_rate() -> None:
    # A 720p camera without simulcast, three temporal layers, in a 180p tile: the height gives, the
    # frame rate does not (JVB would forward its base layer, 7.5 frames/s).
    layers = tuple(Layer(0, t, 720, RATES[t], int(1_000_000 * TEMPORAL_SHARE[t])) for t in range(3))
    cam = VideoSource("a-v0", "a", "camera", False, layers)
    assert hf(allocate("r", rvc(), [], [cam], UNLIMITED).sources[0].layer) == (720, 30.0)
    # ...within a frame-rate limit,
    slow = rvc(default_constraints=VideoConstraints(180, 15.0))
    assert hf(allocate("r", slow, [], [cam], UNLIMITED).sources[0].layer) == (720, 15.0)
    # ...and the bandwidth.
    assert hf(allocate("r", rvc(), [], [cam], 500_000).sources[0].layer) == (720, 7.5)


def test_unreceived_layers_are_never_chosen() -> None:
    source = simulcast("a-v0", "a")
    # The 180p encoding stopped (say the sender's bandwidth dropped it); 360p is still received.
    layers = tuple(replace(la, bitrate_bps=0) if la.spatial == 0 else la for la in source.layers)
    a = allocate(
        "r", rvc(default_constraints=VideoConstraints(720)), [], [replace(source, layers=layers)], 400_000
    )
    # 360p is now the lowest height, so its lower frame rates count too (the camera rule spares the lowest).
    assert hf(a.sources[0].layer) == (360, 15.0) and a.sources[0].reason is Reason.BANDWIDTH_LIMITED
    assert (
        allocate(
            "r", rvc(default_constraints=VideoConstraints(720)), [], [replace(source, layers=layers)], 150_000
        ).forwarded()
        == {}
    )


def test_a_better_layer_that_costs_less_replaces_the_worse_one() -> None:
    layers = (Layer(0, 0, 180, 30.0, 300_000), Layer(1, 0, 360, 30.0, 250_000))
    a = allocate(
        "r",
        rvc(default_constraints=VideoConstraints(720)),
        [],
        [VideoSource("a-v0", "a", layers=layers)],
        280_000,
    )
    assert hf(a.sources[0].layer) == (360, 30.0) and a.sources[0].reason is Reason.FORWARDED


def test_only_an_on_stage_screen_share_oversends_and_only_its_lowest_layer() -> None:
    screen = single("a-v0", "a", 1080, 1_200_000, "desktop")
    stage = rvc(on_stage_sources=("a-v0",), constraints={"a-v0": VideoConstraints(1080)})
    a = allocate("r", stage, [], [screen, simulcast("b-v0", "b")], 1_000_000)
    assert hf(a.sources[0].layer) == (1080, 30.0) and a.oversending and a.total_bps == 1_200_000
    # Everything after an oversent source waits: b gets nothing.
    assert a.sources[1].layer is None and a.sources[1].reason is Reason.BANDWIDTH_LIMITED
    # Not more than max-oversend-bitrate above the bandwidth,
    assert allocate("r", stage, [], [screen], 650_000).sources[0].layer is None
    # not when disabled,
    no = AllocationSettings(allow_oversend_onstage=False)
    assert allocate("r", stage, [], [screen], 1_000_000, settings=no).sources[0].layer is None
    # not for a camera (JVB: only when screensharing),
    camera = replace(screen, video_type="camera")
    assert allocate("r", stage, [], [camera], 1_000_000).sources[0].layer is None
    # not off stage, and never to climb above the lowest layer.
    assert allocate("r", rvc(constraints=stage.constraints), [], [screen], 1_000_000).sources[0].layer is None
    two = VideoSource(
        "a-v0", "a", "desktop", layers=(Layer(0, 0, 540, 5.0, 400_000), Layer(1, 0, 1080, 5.0, 1_200_000))
    )
    a = allocate("r", stage, [], [two], 1_000_000)
    assert hf(a.sources[0].layer) == (540, 5.0) and not a.oversending


def test_a_blocked_step_stops_everything_after_it() -> None:
    # The price of monotonicity: b's lowest layer does not fit, so c (cheaper, lower priority) waits too,
    # as JVB's thumbnails wait for the on-stage source.
    sources = [single("b-v0", "b", 180, 900_000), single("c-v0", "c", 180, 100_000)]
    a = allocate("r", rvc(), ["b", "c"], sources, 500_000)
    assert a.forwarded() == {} and {s.reason for s in a.sources} == {Reason.BANDWIDTH_LIMITED}


def test_unknown_heights_are_inferred_from_the_bottom() -> None:
    def heights(spatials: Sequence[int], given: Sequence[int] = ()) -> list[int]:
        given = list(given) or [0] * len(spatials)
        return [
            la.height
            for la in infer_heights([Layer(s, 0, h, 0.0, 1) for s, h in zip(spatials, given, strict=True)])
        ]

    assert heights([0]) == [180]
    assert heights([0, 1]) == [180, 360]
    assert heights([0, 1, 2]) == [180, 360, 720]
    assert heights([0, 1, 2, 3]) == [180, 360, 720, 1440]
    # Ranks, not indices: a source that signals spatial 2 and 5 has two layers.
    assert heights([5, 2]) == [360, 180]
    # A spatial index takes a height another of its layers gives.
    assert (
        infer_heights([Layer(1, 0, 0, 0, 1), Layer(1, 1, 540, 0, 1), Layer(0, 0, 0, 0, 1)])[0].height == 540
    )
    # Inference uses every signalled layer, received or not: 180p stopping does not make 360p "180p".
    unknown = simulcast("a-v0", "a", heights=(0, 0, 0))
    no_low = replace(
        unknown, layers=tuple(replace(la, bitrate_bps=0) if la.spatial == 0 else la for la in unknown.layers)
    )
    a = allocate("r", rvc(default_constraints=VideoConstraints(360)), [], [no_low], UNLIMITED)
    assert a.sources[0].layer is not None and (a.sources[0].layer.spatial, a.sources[0].layer.height) == (
        1,
        360,
    )
    # The default 180p constraint picks the bottom encoding of an unknown-height simulcast.
    a = allocate("r", rvc(), [], [unknown], UNLIMITED)
    assert a.sources[0].layer is not None and a.sources[0].layer.spatial == 0


def test_endpoint_ids_in_the_older_spelling() -> None:
    c = rvc(on_stage_endpoints=("b",), selected_endpoints=("c",), constraints={"b": VideoConstraints(720)})
    a = allocate("r", c, ["a"], ABC, UNLIMITED)
    assert [s.source for s in a.sources] == ["b-v0", "c-v0", "a-v0"]
    assert hf(a.sources[0].layer) == (720, 30.0) and a.sources[0].on_stage


def test_assumed_bandwidth_only_when_the_bridge_allows_it() -> None:
    c = rvc(assumed_bandwidth_bps=5_000_000)
    assert budget(1_000_000, c, AllocationSettings()) == 1_000_000
    limited = AllocationSettings(assumed_bandwidth_limit_bps=2_000_000)
    assert budget(1_000_000, c, limited) == 2_000_000
    assert budget(1_000_000, rvc(assumed_bandwidth_bps=300_000), limited) == 300_000
    assert budget(1_000_000, rvc(), limited) == 1_000_000
    assert allocate("r", c, [], ABC, 1_000_000, settings=limited).bandwidth_bps == 2_000_000


# ---- properties


def layers_of(bitrates: st.SearchStrategy[int]) -> st.SearchStrategy[tuple[Layer, ...]]:
    return st.builds(
        lambda heights, rates, bps: tuple(
            Layer(s, t, h, rates[t], bps[(s * len(rates) + t) % len(bps)])
            for s, h in enumerate(heights)
            for t in range(len(rates))
        ),
        st.one_of(
            st.lists(st.sampled_from([90, 180, 270, 360, 540, 720, 1080]), min_size=0, max_size=3).map(
                sorted
            ),
            st.integers(0, 3).map(lambda n: [0] * n),
        ),
        st.lists(st.sampled_from([0.0, 5.0, 7.5, 15.0, 30.0]), min_size=1, max_size=3).map(sorted),
        st.lists(bitrates, min_size=1, max_size=9),
    )


#: Any bitrate, with round figures often (ties and near-misses between sums of layers).
ANY_BPS = st.one_of(
    st.sampled_from([0, 50_000, 100_000, 150_000, 300_000, 500_000, 1_200_000]), st.integers(1, 3_000_000)
)
#: Multiples of STEP only: every threshold of the allocation is then a multiple of STEP too.
STEP = 50_000
ROUND_BPS = st.integers(0, 12).map(lambda k: k * STEP)
VIDEO_TYPES: list[VideoType] = ["camera", "camera", "camera", "desktop", "desktop_high_fps", "disabled"]
video_types = st.sampled_from(VIDEO_TYPES)
OWNERS = "abcder"
Conf = tuple[ReceiverVideoConstraints, list[str], list[VideoSource], AllocationSettings]


@st.composite
def conferences(draw: st.DrawFn, bitrates: st.SearchStrategy[int] = ANY_BPS, most: int = 7) -> Conf:
    sources = []
    for i in range(draw(st.integers(0, most))):
        owner = draw(st.sampled_from(OWNERS))
        muted = draw(st.integers(0, 9)) == 0
        sources.append(
            VideoSource(f"{owner}-v{i}", owner, draw(video_types), muted, draw(layers_of(bitrates)))
        )
    names = [s.name for s in sources] + ["ghost-v0"]
    heights = st.sampled_from([-1, -1, 0, 180, 360, 720])
    rates = st.sampled_from([-1.0, -1.0, 0.0, 7.5, 15.0, 30.0])
    constraint = st.builds(VideoConstraints, heights, rates)
    # Mostly unlimited lastN and no zero defaults: otherwise few sources reach the allocation loop.
    last_n = st.sampled_from([-1, -1, -1, 0, 1, 2, 3])
    c = ReceiverVideoConstraints(
        last_n=draw(st.one_of(st.none(), last_n)),
        on_stage_sources=tuple(draw(st.lists(st.sampled_from(names), max_size=2))),
        selected_sources=tuple(draw(st.lists(st.sampled_from(names), max_size=3))),
        on_stage_endpoints=tuple(draw(st.lists(st.sampled_from(OWNERS), max_size=1))),
        default_constraints=draw(st.one_of(st.none(), st.none(), constraint)),
        constraints=draw(st.dictionaries(st.sampled_from(names + list(OWNERS)), constraint, max_size=3)),
        assumed_bandwidth_bps=draw(st.one_of(st.none(), st.none(), st.integers(0, 5_000_000))),
    )
    speakers = draw(st.lists(st.sampled_from(OWNERS), max_size=6))
    s = AllocationSettings(
        default_max_height_px=draw(st.sampled_from([0, 180, 180, 360, 720])),
        onstage_preferred_height_px=draw(st.sampled_from([180, 360, 720])),
        onstage_preferred_framerate=draw(st.sampled_from([15.0, 30.0])),
        allow_oversend_onstage=draw(st.booleans()),
        max_oversend_bitrate_bps=draw(st.sampled_from([0, 100_000, 500_000])),
        initial_last_n=draw(last_n),
        jvb_last_n=draw(last_n),
        assumed_bandwidth_limit_bps=draw(st.one_of(st.none(), st.integers(0, 4_000_000))),
    )
    return c, speakers, sources, s


bandwidths = st.one_of(st.integers(0, 80).map(lambda k: k * 50_000), st.integers(0, 12_000_000))


def _effective(source: VideoSource, c: ReceiverVideoConstraints, s: AllocationSettings) -> VideoConstraints:
    per = c.constraints or {}
    return (
        per.get(source.name)
        or per.get(source.owner)
        or c.default_constraints
        or VideoConstraints(s.default_max_height_px)
    )


def _quality(layer: Layer | None) -> tuple[int, float, int]:
    return (-1, -1.0, -1) if layer is None else (layer.height, layer.frame_rate, layer.bitrate_bps)


@given(conferences(), bandwidths)
@settings(max_examples=200, deadline=None)
def test_every_source_once_with_a_consistent_reason(conf: Conf, bw: int) -> None:
    c, speakers, sources, s = conf
    a = allocate("r", c, speakers, sources, bw, settings=s)
    others = [src for src in sources if src.owner != "r"]
    assert sorted(x.source for x in a.sources) == sorted(src.name for src in others)
    by_name = {src.name: src for src in others}
    sending_done = False
    for x in a.sources:
        src = by_name[x.source]
        assert x.reason is not Reason.WAITING_FOR_KEYFRAME
        if x.layer is not None:
            assert x.reason in (Reason.FORWARDED, Reason.BANDWIDTH_LIMITED)
        if x.reason is Reason.FORWARDED:
            assert x.layer is not None and x.layer == x.ideal
        if x.reason is Reason.BANDWIDTH_LIMITED:
            assert x.ideal is not None and x.layer != x.ideal
        sending = not src.muted and src.video_type != "disabled" and bool(src.layers)
        assert (x.reason is Reason.SUSPENDED) == (not sending)
        # Sources that are not sent come last.
        if not sending:
            sending_done = True
        else:
            assert not sending_done, "a sent source after one that is not"
    assert a.total_bps == sum(x.layer.bitrate_bps for x in a.sources if x.layer is not None)


@given(conferences(), bandwidths)
@settings(max_examples=200, deadline=None)
def test_never_more_than_last_n_videos(conf: Conf, bw: int) -> None:
    c, speakers, sources, s = conf
    a = allocate("r", c, speakers, sources, bw, settings=s)
    n = effective_last_n(c.last_n, s)
    assert a.last_n == n
    if n >= 0:
        assert len(a.forwarded()) <= n
        taken = [
            x
            for x in a.sources
            if x.reason in (Reason.FORWARDED, Reason.BANDWIDTH_LIMITED, Reason.LAYER_MISSING)
        ]
        assert len(taken) <= n


@given(conferences(), bandwidths)
@settings(max_examples=200, deadline=None)
def test_bandwidth_is_never_exceeded_but_by_the_on_stage_oversend(conf: Conf, bw: int) -> None:
    c, speakers, sources, s = conf
    a = allocate("r", c, speakers, sources, bw, settings=s)
    assert a.bandwidth_bps == budget(bw, c, s)
    assert a.oversending == (a.total_bps > a.bandwidth_bps)
    strict = allocate("r", c, speakers, sources, bw, settings=replace(s, allow_oversend_onstage=False))
    if a.oversending:
        assert s.allow_oversend_onstage
        assert a.total_bps <= a.bandwidth_bps + s.max_oversend_bitrate_bps
        types = {src.name: src.video_type for src in sources}
        forwarded = [x for x in a.sources if x.layer is not None]
        assert forwarded[-1].on_stage and types[forwarded[-1].source] in ("desktop", "desktop_high_fps")
        # Oversend only added on-stage screen shares (at their lowest layer: nothing climbed after them).
        extra = a.forwarded().keys() - strict.forwarded().keys()
        assert extra and all(types[name] in ("desktop", "desktop_high_fps") for name in extra)
        assert extra <= {x.source for x in a.sources if x.on_stage}
        assert strict.forwarded().items() <= a.forwarded().items()
    else:
        assert strict == a
    assert strict.total_bps <= strict.bandwidth_bps and not strict.oversending


def _monotone(conf: Conf, bws: Sequence[int]) -> None:
    c, speakers, sources, s = conf
    results = [allocate("r", c, speakers, sources, bw, settings=s) for bw in sorted(bws)]
    for low, high in itertools.pairwise(results):
        assert [x.source for x in low.sources] == [x.source for x in high.sources]
        for x, y in zip(low.sources, high.sources, strict=True):
            # Height and frame rate, and bitrate: each at least as high.
            assert _quality(x.layer)[:2] <= _quality(y.layer)[:2], (x, y)
            assert _quality(x.layer)[2] <= _quality(y.layer)[2], (x, y)
        assert set(low.forwarded()) <= set(high.forwarded())
        assert low.total_bps <= high.total_bps


@given(conferences(ROUND_BPS, most=5))
@settings(max_examples=250, deadline=None)
def test_more_bandwidth_never_lowers_any_source(conf: Conf) -> None:
    # Round bitrates, every bandwidth step from 0 to past everything: no threshold is missed.
    everything = sum(la.bitrate_bps for src in conf[2] for la in src.layers)
    _monotone(conf, range(0, everything + 2 * STEP, STEP))


@given(conferences(), st.lists(bandwidths, min_size=2, max_size=12))
@settings(max_examples=200, deadline=None)
def test_more_bandwidth_never_lowers_any_source_at_any_bitrates(conf: Conf, bws: list[int]) -> None:
    _monotone(conf, bws)


@given(conferences(), bandwidths)
@settings(max_examples=200, deadline=None)
def test_same_inputs_same_allocation_and_no_reported_change(conf: Conf, bw: int) -> None:
    c, speakers, sources, s = conf
    assert allocate("r", c, speakers, sources, bw, settings=s) == allocate(
        "r", c, speakers, sources, bw, settings=s
    )
    allocator = Allocator(s)
    receivers = [Receiver("r", bw, c), Receiver("a", bw, c)]
    first = allocator.update(1.0, receivers, speakers, sources)
    assert set(first) == {"r", "a"}
    assert allocator.update(2.0, receivers, speakers, sources) == {}
    assert allocator.allocation("r") == first["r"]


@given(conferences(), bandwidths)
@settings(max_examples=200, deadline=None)
def test_constraints_are_respected(conf: Conf, bw: int) -> None:
    c, speakers, sources, s = conf
    a = allocate("r", c, speakers, sources, bw, settings=s)
    by_name = {src.name: src for src in sources}
    for x in a.sources:
        if x.layer is None:
            continue
        src = by_name[x.source]
        eff = _effective(src, c, s)
        assert eff.max_height != 0 and eff.max_frame_rate != 0
        received = [la for la in infer_heights(src.layers) if la.bitrate_bps > 0]

        def fits(la: Layer, eff: VideoConstraints = eff) -> bool:
            height_ok = eff.max_height < 0 or la.height <= eff.max_height
            rate_ok = eff.max_frame_rate < 0 or la.frame_rate <= 0 or la.frame_rate <= eff.max_frame_rate
            return height_ok and rate_ok

        if any(fits(la) for la in received):
            assert fits(x.layer), (x.layer, eff)
        else:
            # JVB's exception: nothing fits, so the lowest height may exceed the constraints; of it, a
            # temporal layer within the frame-rate limit, or failing that the lowest layer.
            assert x.layer.height == min(la.height for la in received), (x.layer, received)
            rate_ok = eff.max_frame_rate < 0 or x.layer.frame_rate <= eff.max_frame_rate * 1.15
            assert rate_ok or _quality(x.layer)[:2] == min(_quality(la)[:2] for la in received)


@given(conferences(), bandwidths)
@settings(max_examples=200, deadline=None)
def test_a_layer_not_received_is_never_chosen(conf: Conf, bw: int) -> None:
    c, speakers, sources, s = conf
    a = allocate("r", c, speakers, sources, bw, settings=s)
    by_name = {src.name: src for src in sources}
    for x in a.sources:
        if x.layer is not None:
            assert x.layer.bitrate_bps > 0
            signalled = {(la.spatial, la.temporal, la.bitrate_bps) for la in by_name[x.source].layers}
            assert (x.layer.spatial, x.layer.temporal, x.layer.bitrate_bps) in signalled
        if x.reason is Reason.LAYER_MISSING:
            assert all(la.bitrate_bps <= 0 for la in by_name[x.source].layers)


@given(conferences(), bandwidths, st.floats(-0.15, 0.15))
@settings(max_examples=200, deadline=None)
def test_small_bandwidth_changes_do_not_reallocate(conf: Conf, bw: int, change: float) -> None:
    """Within the threshold nothing is reallocated, except that a receiver held below its ideal takes up a
    rise at once: then it only goes up (no source loses a layer it had)."""
    c, speakers, sources, s = conf
    allocator = Allocator(s)
    first = allocator.update(0.0, [Receiver("r", bw, c)], speakers, sources)["r"]
    moved = int(bw * (1 + change))
    assume(abs(moved - bw) <= bw * s.bwe_change_threshold)
    changed = allocator.update(1.0, [Receiver("r", moved, c)], speakers, sources)
    a = allocator.allocation("r")
    assert a is not None
    if moved > bw and first.bandwidth_limited:
        assert a.bandwidth_bps == budget(moved, c, s)
        for before, after in zip(first.sources, a.sources, strict=True):
            assert before.source == after.source
            if before.layer is not None:
                assert after.layer is not None and layer_quality(after.layer) >= layer_quality(before.layer)
        return
    assert changed == {}
    assert a == allocate("r", c, speakers, sources, bw, settings=s)


# ---- the Allocator


def test_a_receiver_keeps_its_layers_while_their_cost_wanders_a_little_over_an_unfallen_bandwidth() -> None:
    """STAY_TOLERANCE: 720p that just fitted stays when its measured bitrate grows up to a tenth past the
    budget, and goes when it grows more, or when the bandwidth itself falls by more than STAY_FALL."""
    allocator = Allocator()
    budget = 2_500_000  # Just 720p on stage (1.5 Mbit/s) and the others' 360p (2 x 500 kbit/s).
    stage = Receiver("r", budget, STAGE_A)

    def costing(scale: float) -> list[VideoSource]:
        return [
            replace(s, layers=tuple(replace(la, bitrate_bps=int(la.bitrate_bps * scale)) for la in s.layers))
            if s.name == "a-v0"
            else s
            for s in ABC
        ]

    first = allocator.update(0.0, [stage], ["a"], ABC)
    assert hf(first["r"].sources[0].layer) == (720, 30.0), first
    assert allocator.update(1.0, [stage], ["a"], costing(1.1)) == {}, "wandered less than a tenth over"
    kept = allocator.allocation("r")
    assert kept is not None and kept.bandwidth_bps == budget and hf(kept.sources[0].layer) == (720, 30.0)
    moved = allocator.update(2.0, [stage], ["a"], costing(1.2))
    assert hf(moved["r"].sources[0].layer) != (720, 30.0), "more than a tenth over"
    # Back up once it fits with UP_HEADROOM to spare. The bandwidth reading a little lower is still "not
    # fallen" (an estimate that holds wanders) ...
    assert hf(allocator.update(3.0, [stage], ["a"], costing(0.8))["r"].sources[0].layer) == (720, 30.0)
    wandered = int(budget * (1 - STAY_FALL)) + 1
    assert allocator.update(4.0, [replace(stage, bandwidth_bps=wandered)], ["a"], costing(1.05)) == {}
    # ... but falling further (still less than the threshold, so the allocation is by the same bandwidth)
    # gets no tolerance.
    fallen = int(budget * (1 - STAY_FALL)) - 1
    fell = allocator.update(5.0, [replace(stage, bandwidth_bps=fallen)], ["a"], costing(1.05))
    assert hf(fell["r"].sources[0].layer) != (720, 30.0)
    assert fell["r"].bandwidth_bps == budget


def test_a_step_up_needs_headroom_for_its_keyframe_and_staying_does_not() -> None:
    """UP_HEADROOM: a receiver at 360p whose bandwidth now fits 720p on stage only exactly stays at 360p,
    while a new receiver with the same bandwidth gets 720p; the others keep the layers they had; once its
    bandwidth rises to leave a tenth spare (a rise within the threshold counts, as it is held), it goes up."""
    allocator = Allocator()
    before = allocator.update(0.0, [Receiver("r", 1_500_000, STAGE_A)], ["a"], ABC)["r"]
    assert [hf(s.layer) for s in before.sources] == [(360, 30.0)] * 3
    exact = 2_500_000  # 720p on stage (1.5 Mbit/s) and the others' 360p (2 x 500 kbit/s)
    assert hf(allocate("r", STAGE_A, ["a"], ABC, exact).sources[0].layer) == (720, 30.0)
    up = allocator.update(1.0, [Receiver("r", exact, STAGE_A), Receiver("n", exact, STAGE_A)], ["a"], ABC)
    assert list(up) == ["n"], "r has no room for 720p's keyframe: nothing changed"
    assert [hf(s.layer) for s in up["n"].sources] == [(720, 30.0), (360, 30.0), (360, 30.0)], up["n"]
    held = allocator.allocation("r")
    assert (
        held is not None
        and held.bandwidth_bps == exact
        and [hf(s.layer) for s in held.sources] == [(360, 30.0)] * 3
    )
    assert reason(held, "a-v0") == Reason.BANDWIDTH_LIMITED and held.probe_target_bps > exact
    # A rise within bwe-change-threshold counts at once for a receiver held below its ideal.
    roomy = int(exact * 1.12)
    assert (
        roomy * (1 - UP_HEADROOM) >= exact
        and roomy - exact < exact * AllocationSettings().bwe_change_threshold
    )
    more = allocator.update(2.0, [Receiver("r", roomy, STAGE_A)], ["a"], ABC)["r"]
    assert [hf(s.layer) for s in more.sources] == [(720, 30.0), (360, 30.0), (360, 30.0)], more


def test_a_layer_switched_on_is_probed_ahead_of_while_it_ramps() -> None:
    """A 720p layer just switched on fits at its first figures; the probe target counts it at what 720p
    settles at (EXPECTED_BITRATES), so the link is probed before the layer outgrows the estimate; switching
    up needs only what it costs now. Once it has settled, a receiver at its constraints is not probed."""
    assert expected_bitrate(Layer(2, 2, 720, 30.0, 400_000, ramping=True)) == 2_500_000
    assert expected_bitrate(Layer(2, 2, 720, 30.0, 3_000_000, ramping=True)) == 3_000_000
    assert expected_bitrate(Layer(0, 0, 200, 30.0, 90_000, ramping=True)) == 350_000
    assert expected_bitrate(Layer(0, 0, 1080, 30.0, 90_000, ramping=True)) == EXPECTED_BITRATE_ABOVE
    assert expected_bitrate(Layer(2, 2, 720, 30.0, 400_000)) == 400_000
    rising = VideoSource(
        "a-v0", "a", layers=(Layer(0, 0, 180, 30.0, 150_000), Layer(1, 0, 720, 30.0, 400_000, ramping=True))
    )
    fits = allocate("r", STAGE_A, ["a"], [rising], 1_000_000)
    assert hf(fits.sources[0].layer) == (720, 30.0) and not fits.bandwidth_limited
    assert fits.up_target_bps == 0
    assert fits.probe_target_bps == -(-2_500_000 * 10 // 9)
    settled = replace(rising, layers=(rising.layers[0], replace(rising.layers[1], ramping=False)))
    assert allocate("r", STAGE_A, ["a"], [settled], 1_000_000).probe_target_bps == 0
    held = allocate("r", STAGE_A, ["a"], [rising], 300_000)
    assert held.bandwidth_limited and held.up_target_bps == -(-400_000 * 10 // 9)
    assert held.probe_target_bps == fits.probe_target_bps


def test_allocator_reports_changes_and_takes_bandwidth_up_past_the_threshold() -> None:
    stats = AllocationStats()
    allocator = Allocator(stats=stats)
    stage = Receiver("r", 600_000, STAGE_A)
    first = allocator.update(0.0, [stage], ["a"], ABC)
    assert list(first) == ["r"] and stats.runs == 1 and stats.changes == 1
    # Measured bitrates move a little every tick: no change while the decisions stand.
    jitter = [
        replace(s, layers=tuple(replace(la, bitrate_bps=la.bitrate_bps + 1) for la in s.layers)) for s in ABC
    ]
    assert allocator.update(1.0, [stage], ["a"], jitter) == {}
    now = allocator.allocation("r")
    assert now is not None and now.sources[0].layer is not None and now.sources[0].layer.bitrate_bps % 10 == 1
    # -15 % is not more than the threshold: the allocation keeps using 600 kbps. (A rise as small is taken up
    # at once while bandwidth holds a source below its ideal, as here.)
    assert allocator.update(2.0, [replace(stage, bandwidth_bps=510_000)], ["a"], ABC) == {}
    kept = allocator.allocation("r")
    assert kept is not None and kept.bandwidth_bps == 600_000
    changed = allocator.update(3.0, [replace(stage, bandwidth_bps=4_000_000)], ["a"], ABC)
    assert changed["r"].bandwidth_bps == 4_000_000 and hf(changed["r"].sources[0].layer) == (720, 30.0)
    # Any other input reallocates at once, with the bandwidth last taken up.
    lower = replace(stage, constraints=replace(STAGE_A, constraints={"a-v0": VideoConstraints(360)}))
    changed = allocator.update(4.0, [replace(lower, bandwidth_bps=3_900_000)], ["a"], ABC)
    assert hf(changed["r"].sources[0].layer) == (360, 30.0) and changed["r"].bandwidth_bps == 4_000_000
    assert stats.runs == 5 and stats.changes == 3
    assert sum(stats.reasons.values()) == 3 * 3 and set(stats.reasons) <= {str(r) for r in Reason}
    # A receiver not given is forgotten.
    assert allocator.update(5.0, [], ["a"], ABC) == {} and allocator.allocation("r") is None
    assert allocator.history("r") == []


def test_flight_recorder_is_bounded_and_json() -> None:
    allocator = Allocator(history=4)
    for tick in range(10):
        # A lastN that alternates: every tick is a new decision.
        c = replace(STAGE_A, last_n=1 + tick % 2, selected_sources=("x" * 1000,) * 50)
        allocator.update(float(tick), [Receiver("r", 10_000_000, c)], [*"abc", *"defghijklmnop"], ABC)
    history = allocator.history("r")
    assert [d["time"] for d in history] == [6.0, 7.0, 8.0, 9.0]
    last = history[-1]
    json.dumps(last, allow_nan=False)
    assert last["inputs"]["last_n"] == 2 and last["last_n"] == 2
    assert last["inputs"]["speakers"] == list("abcdefgh") and last["inputs"]["speaker_count"] == 16
    # The client's lists are summarized by the sources that exist, not repeated.
    assert last["inputs"]["selected"] == [] and last["inputs"]["on_stage"] == ["a-v0"]
    assert [(s["source"], s["reason"]) for s in last["sources"]] == [
        ("a-v0", "forwarded"),
        ("b-v0", "forwarded"),
        ("c-v0", "last-n"),
    ]
    assert last["sources"][0]["layer"] == {
        "spatial": 2,
        "temporal": 2,
        "height": 720,
        "frame_rate": 30.0,
        "bitrate_bps": 1_500_000,
        "ramping": False,
    }
    assert allocator.dump() == {"r": history}


def test_allocation_counters_are_exported_by_reason_only() -> None:
    stats = AllocationStats()
    Allocator(stats=stats).update(0.0, [Receiver("r", 0, rvc(last_n=1))], [], ABC)
    text = exposition(None, conferences=1, endpoints=3, allocation=stats)
    assert "sluice_allocation_runs_total 1.0" in text and "sluice_allocation_changes_total 1.0" in text
    assert 'sluice_allocation_sources_total{reason="bandwidth-limited"} 1.0' in text
    assert 'sluice_allocation_sources_total{reason="last-n"} 2.0' in text
    assert 'sluice_allocation_sources_total{reason="waiting-for-keyframe"} 0.0' in text
    lines = [line for line in text.splitlines() if line.startswith("sluice_allocation_sources_total{")]
    assert len(lines) == len(Reason) and "-v0" not in text


# ---- settings


def test_cc_settings_default_to_jvb() -> None:
    assert parse_settings("").allocation_settings() == AllocationSettings()
    assert AllocationSettings() == AllocationSettings(
        default_max_height_px=180,
        onstage_preferred_height_px=360,
        onstage_preferred_framerate=30.0,
        allow_oversend_onstage=True,
        max_oversend_bitrate_bps=500_000,
        initial_last_n=-1,
        jvb_last_n=-1,
        bwe_change_threshold=0.15,
        assumed_bandwidth_limit_bps=None,
    )


def test_cc_settings_from_a_file() -> None:
    s = parse_settings(
        """
[videobridge.cc]
bwe-change-threshold = 0.25
default-max-height-px = 360
onstage-preferred-height-px = 720
onstage-preferred-framerate = 15
allow_oversend_onstage = false
max-oversend-bitrate = "1 Mbps"
jvb-last-n = 10
initial-last-n = 4
assumed-bandwidth-limit = "10 Mbps"
"""
    ).allocation_settings()
    assert s == AllocationSettings(
        default_max_height_px=360,
        onstage_preferred_height_px=720,
        onstage_preferred_framerate=15.0,
        allow_oversend_onstage=False,
        max_oversend_bitrate_bps=1_000_000,
        initial_last_n=4,
        jvb_last_n=10,
        bwe_change_threshold=0.25,
        assumed_bandwidth_limit_bps=10_000_000,
    )


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("500 kbps", 500_000),
        ("500kbps", 500_000),
        ("10 Mbps", 10_000_000),
        ("10 KbPs", 10_000),
        ("7bps", 7),
        ("2.5 mbps", 2_500_000),
        ("1 Gbps", 10**9),
        (64000, 64_000),
        ("0 bps", 0),
    ],
)
def test_bitrates_in_jvb_spelling(text: object, bps: int) -> None:
    assert parse_bitrate(text) == bps


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max-oversend-bitrate = '500 kbits'", "videobridge.cc.max-oversend-bitrate: '500 kbits'"),
        ("max-oversend-bitrate = -1", "videobridge.cc.max-oversend-bitrate: -1"),
        ("assumed-bandwidth-limit = true", "videobridge.cc.assumed-bandwidth-limit: True"),
        ("jvb-last-n = -2", "videobridge.cc.jvb-last-n: -2"),
        ("initial-last-n = 'all'", "videobridge.cc.initial-last-n: 'all'"),
        ("bwe-change-threshold = -0.1", "videobridge.cc.bwe-change-threshold: -0.1"),
        ("default-max-height-px = -1", "videobridge.cc.default-max-height-px: -1"),
        ("onstage-preferred-framerate = 0", "videobridge.cc.onstage-preferred-framerate: 0"),
        ("allow-oversend-onstage = 'yes'", "videobridge.cc.allow-oversend-onstage: 'yes'"),
        ("trust-bwe = 'yes'", "videobridge.cc.trust-bwe: 'yes'"),
        ("use-vla-target-bitrate = true", "unknown key videobridge.cc.use-vla-target-bitrate"),
    ],
)
def test_bad_cc_settings_name_key_and_value(line: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(f"[videobridge.cc]\n{line}\n")
    assert message in str(info.value)
