"""Bandwidth allocation: which layer of each video source one receiver gets (docs/allocation.md).

`allocate()` is a pure function (no clock, no I/O) from one receiver's constraints, the speaker order, the
conference's video sources with their layers, and the receiver's bandwidth to an `Allocation`: per source,
the chosen layer or none, and a `Reason`. It follows Jitsi Videobridge's documented algorithm (prioritize,
apply lastN, allocate greedily) with one deliberate difference: the greedy part takes the longest affordable
prefix of a fixed schedule of steps, which is what makes the result monotone in bandwidth.

`Allocator` holds one conference's receivers: their last Allocation, the bandwidth last used (a change
below `bwe-change-threshold` does not reallocate), a bounded flight recorder of decisions, and the shared
counters by reason (`AllocationStats`, exported by bridge/metrics.py).
"""

from __future__ import annotations

import enum
import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.channel import ReceiverVideoConstraints, VideoConstraints, VideoType

#: Decisions kept per receiver by the flight recorder.
HISTORY = 32
#: Speakers named in a recorded input summary (the rest are counted).
RECORDED_SPEAKERS = 8
#: Heights assumed for the spatial layers of a source whose sender did not say, from the bottom; above the
#: last, each doubles.
ASSUMED_HEIGHTS = (180, 360, 720)
#: What a camera layer settles at with bandwidth to spare, by the least listed height at or above its own
#: (libwebrtc's simulcast targets; taller layers get EXPECTED_BITRATE_ABOVE): the probe target counts a
#: `ramping` layer at this, so the link is probed ahead of a layer just switched on that is still rising.
EXPECTED_BITRATES = ((180, 150_000), (270, 350_000), (360, 500_000), (540, 1_200_000), (720, 2_500_000))
EXPECTED_BITRATE_ABOVE = 4_000_000


class Reason(enum.StrEnum):
    """Why a source got the layer it got (or none). Bounded: these are the only label values."""

    #: The best layer the constraints allow (the "ideal" layer) is forwarded.
    FORWARDED = "forwarded"
    #: In lastN, but bandwidth allowed only a lower layer than the ideal one, or none.
    BANDWIDTH_LIMITED = "bandwidth-limited"
    #: The receiver's constraints for the source are 0 (maxHeight or maxFrameRate): no video wanted.
    CONSTRAINT_LIMITED = "constraint-limited"
    #: Outside the receiver's effective lastN.
    LAST_N = "last-n"
    #: In lastN, but none of its layers is being received now (bitrate 0).
    LAYER_MISSING = "layer-missing"
    #: The sender is not sending it: muted, video type "disabled", or no layers signalled.
    SUSPENDED = "suspended"
    #: Reserved for the native side (forwarding waits for a keyframe); the allocator never sets it.
    WAITING_FOR_KEYFRAME = "waiting-for-keyframe"


# ---- inputs


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer of a source as the bridge receives it.

    `bitrate_bps` is what forwarding this layer costs (with the lower temporal layers it depends on); 0 means
    it is not being received now. `height` 0 is unknown (inferred, see `ASSUMED_HEIGHTS`); `frame_rate` 0 is
    unknown and treated as meeting any frame-rate limit. `ramping`: it (re)started lately, so its bitrate
    may still be rising towards `expected_bitrate`.
    """

    spatial: int
    temporal: int
    height: int
    frame_rate: float
    bitrate_bps: int
    ramping: bool = False


def expected_bitrate(layer: Layer) -> int:
    """What `layer` is expected to cost: a ramping layer at least its height's EXPECTED_BITRATES figure, any
    other its bitrate."""
    if not layer.ramping:
        return layer.bitrate_bps
    nominal = next((bps for h, bps in EXPECTED_BITRATES if layer.height <= h), EXPECTED_BITRATE_ABOVE)
    return max(layer.bitrate_bps, nominal)


@dataclass(frozen=True, slots=True)
class VideoSource:
    """A video source of another endpoint: `owner` is its endpoint id; `muted` means it is not being sent."""

    name: str
    owner: str
    video_type: VideoType = "camera"
    muted: bool = False
    layers: tuple[Layer, ...] = ()


@dataclass(frozen=True, slots=True)
class AllocationSettings:
    """jvb.conf `videobridge.cc.*` (bridge/settings.py reads them); the defaults are JVB's."""

    default_max_height_px: int = 180
    onstage_preferred_height_px: int = 360
    onstage_preferred_framerate: float = 30.0
    allow_oversend_onstage: bool = True
    max_oversend_bitrate_bps: int = 500_000
    #: The receiver's lastN until it says otherwise (-1: unlimited).
    initial_last_n: int = -1
    #: A bridge-wide cap on every receiver's lastN (-1: none).
    jvb_last_n: int = -1
    bwe_change_threshold: float = 0.15
    #: When set, a receiver's `assumedBandwidthBps` replaces the estimate, capped at this; None: ignored.
    assumed_bandwidth_limit_bps: int | None = None


@dataclass(frozen=True, slots=True)
class Receiver:
    """One receiving endpoint for `Allocator.update`.

    `constraints.last_n` is its lastN (None: `initial-last-n`); the registry keeps lastN apart, so pass
    `replace(endpoint.video_constraints, last_n=endpoint.last_n)`. `bandwidth_bps` is its available bandwidth
    (a configured figure now, a congestion-control estimate later).
    """

    id: str
    bandwidth_bps: int
    constraints: ReceiverVideoConstraints = field(default_factory=ReceiverVideoConstraints)


# ---- outputs


@dataclass(frozen=True, slots=True)
class SourceAllocation:
    """The decision for one source. `layer` is the chosen one (None: not forwarded), `ideal` the one
    unlimited bandwidth would give (None unless the source is in lastN and has a received layer). Layers whose
    height the sender did not give carry the inferred height."""

    source: str
    owner: str
    reason: Reason
    layer: Layer | None = None
    ideal: Layer | None = None
    on_stage: bool = False
    selected: bool = False

    @property
    def decision(self) -> tuple[str, int, int, Reason]:
        """What the native side acts on: source, spatial and temporal index (-1: none), reason."""
        if self.layer is None:
            return (self.source, -1, -1, self.reason)
        return (self.source, self.layer.spatial, self.layer.temporal, self.reason)


@dataclass(frozen=True, slots=True)
class Allocation:
    """One receiver's allocation: every source but its own, in priority order."""

    receiver: str
    sources: tuple[SourceAllocation, ...]
    #: The budget allocated against: the estimate (or the receiver's assumed bandwidth, when allowed).
    bandwidth_bps: int
    #: The effective lastN (-1: unlimited).
    last_n: int
    #: Sum of the chosen layers' bitrates.
    total_bps: int
    #: total_bps > bandwidth_bps: an on-stage screen share's lowest layer was oversent.
    oversending: bool

    def forwarded(self) -> dict[str, Layer]:
        return {s.source: s.layer for s in self.sources if s.layer is not None}

    @property
    def ideal_bps(self) -> int:
        """Sum of the ideal layers' bitrates: what unlimited bandwidth would send."""
        return sum(s.ideal.bitrate_bps for s in self.sources if s.ideal is not None)

    @property
    def bandwidth_limited(self) -> bool:
        """Whether bandwidth held some source below its ideal layer."""
        return any(s.reason == Reason.BANDWIDTH_LIMITED for s in self.sources)

    @property
    def up_target_bps(self) -> int:
        """What switching up to the ideal layers needs now: while `bandwidth_limited`, their total with
        UP_HEADROOM to spare, else 0."""
        return math.ceil(self.ideal_bps / (1 - UP_HEADROOM)) if self.bandwidth_limited else 0

    @property
    def probe_target_bps(self) -> int:
        """What to probe the receiver's link towards: the ideal layers at their `expected_bitrate` with
        UP_HEADROOM to spare, while bandwidth holds one back or one is ramping past what it costs now (a layer
        just switched on that fits at its first figures outgrows the estimate as it rises, and falls back
        unless the link was probed ahead of it); else 0 (one at its settled constraints is not probed)."""
        expected = sum(expected_bitrate(s.ideal) for s in self.sources if s.ideal is not None)
        if self.bandwidth_limited or expected > self.ideal_bps:
            return math.ceil(expected / (1 - UP_HEADROOM))
        return 0

    def decisions(self) -> tuple[tuple[str, int, int, Reason], ...]:
        """The part that changing bitrates alone do not change; two allocations with equal decisions are the
        same allocation."""
        return tuple(s.decision for s in self.sources)

    def get(self, source: str) -> SourceAllocation | None:
        return next((s for s in self.sources if s.source == source), None)


# ---- the pure function


@dataclass(slots=True)
class _Prepared:
    """A source with its layers' heights inferred and its received layers sorted by quality."""

    source: VideoSource
    index: int
    sending: bool
    received: tuple[Layer, ...]


def layer_quality(layer: Layer) -> tuple[int, float, int, int]:
    """The order of layers by quality the allocator uses (height, then frame rate, then the indices)."""
    return (layer.height, layer.frame_rate, layer.spatial, layer.temporal)


def assumed_height(rank: int) -> int:
    """The height assumed for the `rank`-th spatial layer from the bottom (0-based) of a source whose sender
    gave none: 180, 360, 720, then doubling."""
    if rank < len(ASSUMED_HEIGHTS):
        return ASSUMED_HEIGHTS[rank]
    return ASSUMED_HEIGHTS[-1] << min(rank - len(ASSUMED_HEIGHTS) + 1, 8)


def infer_heights(layers: Sequence[Layer]) -> tuple[Layer, ...]:
    """The layers with every unknown height (0 or less) filled in.

    A spatial index takes the height another of its layers gives; failing that, the height assumed for its
    rank among all the source's spatial indices (received or not, so the guess does not move when a layer
    stops): an N-layer simulcast is 180/360/720 p from the bottom.
    """
    known: dict[int, int] = {}
    for layer in layers:
        if layer.height > 0:
            known[layer.spatial] = max(known.get(layer.spatial, 0), layer.height)
    if all(layer.height > 0 for layer in layers):
        return tuple(layers)
    ranks = {spatial: rank for rank, spatial in enumerate(sorted({layer.spatial for layer in layers}))}
    return tuple(
        layer
        if layer.height > 0
        else replace(layer, height=known.get(layer.spatial) or assumed_height(ranks[layer.spatial]))
        for layer in layers
    )


def _prepare(sources: Sequence[VideoSource]) -> list[_Prepared]:
    prepared = []
    for index, source in enumerate(sources):
        layers = infer_heights(source.layers) if source.layers else ()
        received = tuple(sorted((la for la in layers if la.bitrate_bps > 0), key=layer_quality))
        sending = not source.muted and source.video_type != "disabled" and bool(layers)
        prepared.append(_Prepared(source, index, sending, received))
    return prepared


def _is_screen(video_type: VideoType) -> bool:
    return video_type in ("desktop", "desktop_high_fps")


#: Measured frame rates wander around the encoder's (29.4 or 31.8 for 30 frames a second, over the packet
#: path's half-second windows): a frame-rate limit or preference counts as met within this fraction.
FRAME_RATE_TOLERANCE = 0.15
#: A camera's layer at or above the preferred height meets the preferred frame rate from this share of it on:
#: temporal layers below the top run at a half and a quarter of it, while the top layers of one camera's
#: spatial layers, measured over the same second, differ by up to a quarter on a busy sender (15.4 against
#: 19.4 fps in a QoE run, which switched 720p and 360p every second at the 0.85 of FRAME_RATE_TOLERANCE).
PREFERRED_RATE_SHARE = 0.6


def _disabled(c: VideoConstraints) -> bool:
    return c.max_height == 0 or c.max_frame_rate == 0


def _candidates(p: _Prepared, c: VideoConstraints, settings: AllocationSettings) -> tuple[Layer, ...]:
    """The layers the allocator may choose for `p` under `c`, cheapest first, bitrates strictly rising."""
    received = p.received
    if not received:
        return ()

    def rate_fits(la: Layer) -> bool:
        return (
            c.max_frame_rate < 0
            or la.frame_rate <= 0
            or la.frame_rate <= c.max_frame_rate * (1 + FRAME_RATE_TOLERANCE)
        )

    fits = [la for la in received if (c.max_height < 0 or la.height <= c.max_height) and rate_fits(la)]
    if not fits:
        # JVB's soft constraint: when no layer satisfies them, the lowest layer exceeds them (a sender without
        # simulcast still shows). Only the height gives: the lowest height's temporal layers within the frame
        # rate stay candidates, so a 720p-only camera in a 180p tile is not cut to its base frame rate. A
        # constraint of 0 never gets here.
        lowest = min(la.height for la in received)
        fits = [la for la in received if la.height == lowest and rate_fits(la)] or [received[0]]
    if not _is_screen(p.source.video_type):
        # Cameras favour frame rate: at or above the preferred height only layers of at least the preferred
        # frame rate count (JVB 3.1 C), except at the lowest height. Screen shares favour resolution.
        lowest = fits[0].height
        top_rate = max(la.frame_rate for la in fits)
        rate = min(settings.onstage_preferred_framerate, top_rate) if top_rate > 0 else 0.0
        fits = [
            la
            for la in fits
            if la.height < settings.onstage_preferred_height_px
            or la.height == lowest
            or la.frame_rate <= 0
            or la.frame_rate >= rate * PREFERRED_RATE_SHARE
        ]
    # A better layer that costs no more makes a worse one pointless: keep only layers cheaper than every
    # better one, so that each step up costs more.
    kept: list[Layer] = []
    cheapest = None
    for la in reversed(fits):
        if cheapest is None or la.bitrate_bps < cheapest:
            kept.append(la)
            cheapest = la.bitrate_bps
    kept.reverse()
    return tuple(kept)


def _preferred(p: _Prepared, candidates: tuple[Layer, ...], settings: AllocationSettings) -> int:
    """The index an on-stage source climbs to before anyone else improves: the highest candidate at or below
    the preferred height for a camera, the best candidate for a screen share."""
    if _is_screen(p.source.video_type):
        return len(candidates) - 1
    ceiling = max(settings.onstage_preferred_height_px, candidates[0].height)
    return max(i for i, la in enumerate(candidates) if la.height <= ceiling)


def effective_last_n(last_n: int | None, settings: AllocationSettings) -> int:
    """The smallest of the receiver's lastN (or initial-last-n) and jvb-last-n that is not negative; -1 if
    none is."""
    values = [settings.initial_last_n if last_n is None else last_n, settings.jvb_last_n]
    limits = [v for v in values if v >= 0]
    return min(limits) if limits else -1


def budget(bandwidth_bps: int, constraints: ReceiverVideoConstraints, settings: AllocationSettings) -> int:
    """The bandwidth to allocate: the receiver's assumedBandwidthBps capped at assumed-bandwidth-limit when
    that is configured (JVB ignores it otherwise), else the estimate."""
    assumed = constraints.assumed_bandwidth_bps
    limit = settings.assumed_bandwidth_limit_bps
    if limit is not None and assumed is not None and assumed >= 0:
        return min(assumed, limit)
    return max(bandwidth_bps, 0)


def source_constraints(
    rc: ReceiverVideoConstraints, source: str, owner: str, settings: AllocationSettings
) -> VideoConstraints:
    """What a receiver asks of one source: its constraint for the source (by name, or by its owner's
    endpoint id, the older spelling), else its defaultConstraints, else `default-max-height-px`."""
    per_source = rc.constraints or {}
    return (
        per_source.get(source)
        or per_source.get(owner)
        or rc.default_constraints
        or VideoConstraints(max_height=settings.default_max_height_px)
    )


def _ranks(
    names: Sequence[str] | None, endpoints: Sequence[str] | None
) -> tuple[dict[str, int], dict[str, int]]:
    """Positions of listed source names, and of listed endpoint ids after them (the older spelling)."""
    by_name: dict[str, int] = {}
    for name in names or ():
        by_name.setdefault(name, len(by_name))
    by_owner: dict[str, int] = {}
    for owner in endpoints or ():
        by_owner.setdefault(owner, len(by_name) + len(by_owner))
    return by_name, by_owner


class _Cache:
    """Candidates per (source, constraints) for one tick: receivers mostly share default constraints."""

    def __init__(self, settings: AllocationSettings) -> None:
        self.settings = settings
        self.entries: dict[tuple[int, int, float], tuple[tuple[Layer, ...], int]] = {}

    def get(self, p: _Prepared, c: VideoConstraints) -> tuple[tuple[Layer, ...], int]:
        key = (p.index, c.max_height, c.max_frame_rate)
        entry = self.entries.get(key)
        if entry is None:
            candidates = _candidates(p, c, self.settings)
            preferred = _preferred(p, candidates, self.settings) if candidates else -1
            entry = self.entries[key] = (candidates, preferred)
        return entry


def allocate(
    receiver: str,
    constraints: ReceiverVideoConstraints,
    speakers: Sequence[str],
    sources: Sequence[VideoSource],
    bandwidth_bps: int,
    *,
    settings: AllocationSettings | None = None,
) -> Allocation:
    """One receiver's allocation (docs/allocation.md). Pure: the same inputs give an equal Allocation.

    `speakers` is endpoint ids, the most recent dominant speaker first; `sources` is every video source of the
    conference (the receiver's own are left out here); `bandwidth_bps` is the receiver's available bandwidth.
    """
    settings = settings or AllocationSettings()
    return _allocate(
        receiver, constraints, speakers, _prepare(sources), bandwidth_bps, cache=_Cache(settings)
    )


def _allocate(
    receiver: str,
    rc: ReceiverVideoConstraints,
    speakers: Sequence[str],
    prepared: Sequence[_Prepared],
    bandwidth_bps: int,
    *,
    cache: _Cache,
    previous: Allocation | None = None,
) -> Allocation:
    """`allocate`; with the receiver's `previous` allocation, a step above the layer a source had must fit
    UP_HEADROOM less (a step that fits only the whole budget is skipped, with the source's later steps)."""
    settings = cache.settings
    on_stage_names, on_stage_owners = _ranks(rc.on_stage_sources, rc.on_stage_endpoints)
    selected_names, selected_owners = _ranks(rc.selected_sources, rc.selected_endpoints)
    speaker_rank: dict[str, int] = {}
    for ep in speakers:
        speaker_rank.setdefault(ep, len(speaker_rank))
    unspoken = len(speaker_rank)

    # 1. Prioritize: on-stage (in the receiver's order), then selected, then by speaker order; sources that
    #    are not sent go last whatever their selection.
    keyed: list[tuple[tuple[int, int, int], _Prepared, bool, bool]] = []
    for p in prepared:
        s = p.source
        if s.owner == receiver:
            continue
        stage = on_stage_names.get(s.name, on_stage_owners.get(s.owner))
        pick = selected_names.get(s.name, selected_owners.get(s.owner))
        if not p.sending:
            key = (3, 0, p.index)
        elif stage is not None:
            key = (0, stage, p.index)
        elif pick is not None:
            key = (1, pick, p.index)
        else:
            key = (2, speaker_rank.get(s.owner, unspoken), p.index)
        keyed.append((key, p, stage is not None, pick is not None))
    keyed.sort(key=lambda k: k[0])

    # 2. Apply lastN: in priority order, sources that are sent and wanted take a slot while slots remain.
    last_n = effective_last_n(rc.last_n, settings)
    reasons: list[Reason] = []
    # Per admitted source: its position in `keyed`, candidates, preferred index, on-stage screen share.
    admitted: list[tuple[int, tuple[Layer, ...], int, bool, bool]] = []
    slots = 0
    for i, (_, p, stage, _pick) in enumerate(keyed):
        s = p.source
        c = source_constraints(rc, s.name, s.owner, settings)
        if not p.sending:
            reasons.append(Reason.SUSPENDED)
        elif _disabled(c):
            reasons.append(Reason.CONSTRAINT_LIMITED)
        elif 0 <= last_n <= slots:
            reasons.append(Reason.LAST_N)
        else:
            slots += 1
            candidates, preferred = cache.get(p, c)
            if not candidates:
                reasons.append(Reason.LAYER_MISSING)
            else:
                reasons.append(Reason.BANDWIDTH_LIMITED)  # until the allocation says otherwise
                admitted.append((i, candidates, preferred, stage, stage and _is_screen(s.video_type)))

    # 3. Allocate: the longest affordable prefix of one schedule of steps, fixed before looking at bandwidth.
    #    A: each admitted source's lowest layer, in priority order (an on-stage screen share may oversend).
    #    B: each on-stage source up to its preferred layer, in priority order.
    #    C: every other step, by the height and frame rate it reaches, then priority (one step per source per
    #       round, as JVB's allocation loop goes).
    limit = budget(bandwidth_bps, rc, settings)
    oversend = settings.max_oversend_bitrate_bps if settings.allow_oversend_onstage else 0
    chosen = [-1] * len(admitted)
    total = 0
    # The highest step of each admitted source that it had before (-1: none; all when there is no before).
    had = [len(candidates) for _, candidates, _, _, _ in admitted]
    if previous is not None:
        before = {s.source: s.layer for s in previous.sources}
        for a, (i, candidates, _, _, _) in enumerate(admitted):
            layer = before.get(keyed[i][1].source.name)
            if layer is None:
                had[a] = -1
                continue
            ceiling = layer_quality(layer)
            had[a] = max((j for j, la in enumerate(candidates) if layer_quality(la) <= ceiling), default=-1)
    up_limit = int(limit * (1 - UP_HEADROOM))
    held = [False] * len(admitted)

    def step(a: int, index: int, slack: int) -> bool:
        """Takes one step if it fits. False: the schedule ends here. A step up that fits the budget but not
        its headroom holds the source where it is and lets the schedule go on."""
        nonlocal total
        if held[a]:
            return True
        candidates = admitted[a][1]
        current = candidates[chosen[a]].bitrate_bps if chosen[a] >= 0 else 0
        after = total - current + candidates[index].bitrate_bps
        if after > limit + slack:
            return False
        if index > had[a] and after > up_limit + slack:
            held[a] = True
            return True
        total = after
        chosen[a] = index
        return True

    done = False
    for a, (_, _, _, _, screen) in enumerate(admitted):
        if not step(a, 0, oversend if screen else 0):
            done = True
            break
    if not done:
        for a, (_, _, preferred, stage, _) in enumerate(admitted):
            if stage and not all(step(a, index, 0) for index in range(1, preferred + 1)):
                done = True
                break
    if not done:
        rest = []
        for a, (_, candidates, preferred, stage, _) in enumerate(admitted):
            first = preferred + 1 if stage else 1
            for index in range(first, len(candidates)):
                la = candidates[index]
                rest.append((la.height, la.frame_rate, a, index))
        rest.sort()
        for _, _, a, index in rest:
            if not step(a, index, 0):
                break

    layers: list[Layer | None] = [None] * len(keyed)
    ideals: list[Layer | None] = [None] * len(keyed)
    for a, (i, candidates, _, _, _) in enumerate(admitted):
        ideals[i] = candidates[-1]
        if chosen[a] >= 0:
            layers[i] = candidates[chosen[a]]
            if chosen[a] == len(candidates) - 1:
                reasons[i] = Reason.FORWARDED

    out = tuple(
        SourceAllocation(p.source.name, p.source.owner, reasons[i], layers[i], ideals[i], stage, pick)
        for i, (_, p, stage, pick) in enumerate(keyed)
    )
    return Allocation(receiver, out, limit, last_n, total, total > limit)


# ---- one conference's receivers


@dataclass(slots=True)
class AllocationStats:
    """Counters of every Allocator on this bridge (bridge/metrics.py exports them)."""

    #: Receiver allocations computed.
    runs: int = 0
    #: Of those, the ones whose decisions changed (each is a recorded decision).
    changes: int = 0
    #: Per source in each changed allocation, by its reason (the label set is `Reason`, never a name).
    reasons: Counter[str] = field(default_factory=Counter)
    #: Receivers with transport-cc that sent no feedback (`selection.FEEDBACK_GRACE`): sized by
    #: receiver-bandwidth instead of their estimate.
    no_feedback: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """One flight-recorder entry: when, with what inputs, and the result."""

    time: float
    estimate_bps: int
    constraints: ReceiverVideoConstraints
    speakers: tuple[str, ...]
    speaker_count: int
    allocation: Allocation

    def to_json(self) -> dict[str, Any]:
        a, rc = self.allocation, self.constraints
        listed = {s.source for s in a.sources}
        default = rc.default_constraints
        return {
            "time": self.time,
            "inputs": {
                "estimate_bps": self.estimate_bps,
                "assumed_bps": rc.assumed_bandwidth_bps,
                "last_n": rc.last_n,
                # Only names of sources that exist: the client's lists are bounded by the conference.
                "on_stage": [s.source for s in a.sources if s.on_stage],
                "selected": [s.source for s in a.sources if s.selected],
                "default_constraints": None if default is None else _constraints_json(default),
                "constraints": {
                    name: _constraints_json(c) for name, c in (rc.constraints or {}).items() if name in listed
                },
                "speakers": list(self.speakers),
                "speaker_count": self.speaker_count,
            },
            "bandwidth_bps": a.bandwidth_bps,
            "last_n": a.last_n,
            "total_bps": a.total_bps,
            "oversending": a.oversending,
            "sources": [
                {
                    "source": s.source,
                    "owner": s.owner,
                    "reason": str(s.reason),
                    "layer": None if s.layer is None else _layer_json(s.layer),
                    "ideal": None if s.ideal is None else _layer_json(s.ideal),
                }
                for s in a.sources
            ],
        }


def _constraints_json(c: VideoConstraints) -> dict[str, Any]:
    return {"maxHeight": c.max_height, "maxFrameRate": c.max_frame_rate}


def _layer_json(layer: Layer) -> dict[str, Any]:
    return {
        "spatial": layer.spatial,
        "temporal": layer.temporal,
        "height": layer.height,
        "frame_rate": layer.frame_rate,
        "bitrate_bps": layer.bitrate_bps,
        "ramping": layer.ramping,
    }


@dataclass(slots=True)
class _ReceiverState:
    bandwidth_bps: int
    allocation: Allocation
    history: deque[Decision]


#: A receiver whose bandwidth did not fall keeps its layers while they cost up to this share more than it: a
#: layer's measured bitrate wanders by a tenth or more from second to second, and with trust-bwe the estimate
#: sits about a tenth above what the receiver is sent, so a 720p that just fitted switched to 360p and back
#: every few seconds at an unchanged estimate (10.6 switches a minute in the step test).
STAY_TOLERANCE = 0.1
#: A receiver's step above the layer it had must fit this share less than its bandwidth: switching up costs
#: the new layer's keyframe on top of its mean rate, which the budget does not count (behind a 500 kbit/s cap
#: an upswitch to 360p at 319 of 329 kbit/s sent 574 kbit/s in the next second, and an over-use cut took it
#: back 0.7 s later). Staying needs no headroom. The prober's target (TARGET_HEADROOM, 1.2 x) lies above it.
UP_HEADROOM = 0.1
#: "Did not fall" allows this share: an estimate that holds still wanders by a little (a step-test run lost
#: its 720p for 4 s when the bandwidth read 1 kbit/s under the 1.224 Mbit/s it was allocated by), while a
#: reaction to congestion cuts by far more (0.85 x, or to what the link delivered).
STAY_FALL = 0.05


class Allocator:
    """The allocations of one conference's receivers, and what changed since the last update.

    Sans-IO: the caller passes the time (only recorded) and the conference's whole state each time.
    """

    def __init__(
        self,
        settings: AllocationSettings | None = None,
        *,
        stats: AllocationStats | None = None,
        history: int = HISTORY,
    ) -> None:
        self.settings = settings or AllocationSettings()
        self.stats = stats if stats is not None else AllocationStats()
        self._history = history
        self._receivers: dict[str, _ReceiverState] = {}

    def update(
        self,
        now: float,
        receivers: Iterable[Receiver],
        speakers: Sequence[str],
        sources: Sequence[VideoSource],
    ) -> dict[str, Allocation]:
        """Reallocate every receiver; returns those whose decisions changed (a new receiver counts).

        Receivers not given are forgotten. A receiver's bandwidth is taken up only when it moved more than
        `bwe-change-threshold` from the one last used, or rose while bandwidth held a source of it below its
        ideal; until then the last one is used. A receiver whose bandwidth did not fall (by more than
        STAY_FALL) keeps its decisions while they fit STAY_TOLERANCE more of it.
        """
        prepared = _prepare(sources)
        cache = _Cache(self.settings)
        speakers = tuple(speakers)
        changed: dict[str, Allocation] = {}
        seen: set[str] = set()
        for r in receivers:
            seen.add(r.id)
            state = self._receivers.get(r.id)
            bandwidth = r.bandwidth_bps
            if (
                state is not None
                and not self._moved(state.bandwidth_bps, bandwidth)
                # A rise counts at once for a receiver that bandwidth holds below its ideal: else an estimate
                # that rose less than the threshold above the one last used stays unused, and one already
                # above the probe target gets no probe to move it further (a run sat at 360p for 30 s).
                and not (bandwidth > state.bandwidth_bps and state.allocation.bandwidth_limited)
            ):
                bandwidth = state.bandwidth_bps
            previous = state.allocation if state is not None else None
            allocation = _allocate(
                r.id, r.constraints, speakers, prepared, bandwidth, cache=cache, previous=previous
            )
            if (
                state is not None
                and r.bandwidth_bps >= state.bandwidth_bps * (1 - STAY_FALL)
                and allocation.decisions() != state.allocation.decisions()
            ):
                # What it had still fits a little more room: the costs moved, not the bandwidth.
                roomier = int(bandwidth * (1 + STAY_TOLERANCE))
                kept = _allocate(
                    r.id, r.constraints, speakers, prepared, roomier, cache=cache, previous=previous
                )
                if kept.decisions() == state.allocation.decisions():
                    allocation = replace(kept, bandwidth_bps=bandwidth)
            self.stats.runs += 1
            if state is None:
                state = self._receivers[r.id] = _ReceiverState(
                    bandwidth, allocation, deque(maxlen=self._history)
                )
            elif state.allocation.decisions() == allocation.decisions():
                state.bandwidth_bps, state.allocation = bandwidth, allocation
                continue
            state.bandwidth_bps, state.allocation = bandwidth, allocation
            changed[r.id] = allocation
            self.stats.changes += 1
            self.stats.reasons.update(str(s.reason) for s in allocation.sources)
            state.history.append(
                Decision(
                    now,
                    r.bandwidth_bps,
                    r.constraints,
                    speakers[:RECORDED_SPEAKERS],
                    len(speakers),
                    allocation,
                )
            )
        for gone in self._receivers.keys() - seen:
            del self._receivers[gone]
        return changed

    def _moved(self, used: int, estimate: int) -> bool:
        # JVB: a change of at most threshold x the last bandwidth used is ignored.
        return abs(estimate - used) > used * self.settings.bwe_change_threshold

    def allocation(self, receiver: str) -> Allocation | None:
        state = self._receivers.get(receiver)
        return state.allocation if state is not None else None

    def allocations(self) -> Mapping[str, Allocation]:
        return {rid: state.allocation for rid, state in self._receivers.items()}

    def history(self, receiver: str) -> list[dict[str, Any]]:
        """The receiver's recorded decisions, oldest first, as JSON-able dicts (for the private API)."""
        state = self._receivers.get(receiver)
        return [d.to_json() for d in state.history] if state is not None else []

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every receiver's flight recorder."""
        return {rid: self.history(rid) for rid in sorted(self._receivers)}
