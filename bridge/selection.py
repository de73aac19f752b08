"""Selective forwarding, applied: the Allocator (bridge/allocation.py) run for each conference over the
registry and the packet path's layer figures, its decisions sent to the native core as one SetAllocation per
receiver whose allocation changed, and what each receiver gets kept on its endpoint (the bridge channel's
ForwardedSources reads it). With `trust-bwe`, a receiver that bandwidth holds below its ideal layers, or whose
ideal layers are ramping, gets a probe target (their total, a ramping layer at what it settles at), so the
packet path probes its link before the Allocator may switch it up.

It runs on a tick, with each native stats snapshot (the measured bitrate, frame rate and frame size of every
spatial and temporal layer of every simulcast layer),
and on every change of a conference (joins, sources, constraints, video types). Sans-IO apart from the seam
calls the registry's endpoints make: the caller passes the time and the snapshot.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, NamedTuple, cast

from bridge.allocation import (
    Allocation,
    AllocationSettings,
    AllocationStats,
    Allocator,
    Layer,
    Reason,
    Receiver,
    SourceAllocation,
    VideoSource,
    source_constraints,
)
from bridge.bridge import Bridge, Conference, Endpoint
from bridge.channel import VideoType
from bridge.description import Source
from bridge.speakers import Speakers

log = logging.getLogger(__name__)

#: The height a sender is told when a receiver's constraint is unlimited: 4K, more than any camera layer.
UNLIMITED_HEIGHT = 2160

#: Every temporal layer, in a native target.
ALL_TEMPORAL = 255

#: A receiver's probe target is sent again when it fell more than this share (layer bitrates wobble), or
#: rose more than PROBE_TARGET_RISE: a stale lower target can sit just under the estimate, where the
#: packet path would never probe while the Allocator still holds a layer back.
PROBE_TARGET_CHANGE = 0.1
PROBE_TARGET_RISE = 0.01

#: With trust-bwe a receiver's bandwidth is the least of its last ESTIMATE_HOLD estimates (one per stats
#: snapshot): a fall counts at once, a rise only once it held, so the estimate's sawtooth and a probe's jump
#: that does not last do not switch layers back and forth. Two rises count at once: a probe's that takes
#: the estimate higher than it ever was (the link measured carrying more than it was ever asked to: the
#: climb from a low start), where holding would only delay the first good layer by ESTIMATE_HOLD seconds;
#: and any rise of a receiver its allocation sends no video for want of bandwidth (a receiver behind a
#: 500 kbit/s link whose first seconds' losses took the estimate to 160 kbit/s had no video for 5 s, the
#: probe back to 340 kbit/s held 3 of them).
ESTIMATE_HOLD = 3

#: A receiver whose RTP carries transport-cc but that sent no feedback this long (seconds of stats snapshots)
#: after the bridge began sending it RTP never will (a client that takes the extension and implements no
#: feedback): it is sized by receiver-bandwidth, as one without transport-cc (and as jvb, whose estimate then
#: stays at its start), not held at the initial estimate for good.
FEEDBACK_GRACE = 3.0

#: A layer's bitrate is the mean of its last BITRATE_SMOOTHING figures (one per stats snapshot, each over the
#: packet path's half-second windows) while it is received: a sender's 720p measured 634-910 kbit/s from one
#: second to the next, and a receiver whose budget fell between switched 720p and 360p every second at an
#: unchanged estimate. A layer that stops reads 0 at once.
BITRATE_SMOOTHING = 5


class Sublayer(NamedTuple):
    """The packet path's figures of one spatial and temporal layer of one simulcast layer (SSRC): its own
    packets only, without the layers it depends on. `settled`: a whole rate window was measured. `ramping`:
    received in fewer than BITRATE_SMOOTHING snapshots in a row (an encoder brings a layer it switches on up
    to its rate over seconds)."""

    layer: int
    spatial: int
    temporal: int
    bitrate_bps: int
    frame_rate: float
    height: int
    settled: bool = True
    ramping: bool = False


#: Native layer figures by (router, sender transport, source name).
LayerFigures = dict[tuple[int, int, str], list[Sublayer]]


def allocation_layers(figures: list[Sublayer]) -> tuple[Layer, ...]:
    """The Allocator's layers of one source from the packet path's figures.

    With simulcast (figures for more than one SSRC) a layer's `spatial` is the simulcast layer; with one SSRC
    it is the SVC spatial layer (0 without SVC). A layer costs its own bitrate plus that of the layers it
    needs: the lower temporal layers, and for SVC the lower spatial layers (forwarded with it). Its frame rate
    is that of its spatial layer's frames up to its temporal layer. A layer whose own packets stopped is not
    received (bitrate 0), whatever the layers below it bring.

    A source none of whose layers has a whole rate window behind it has just started: no layers yet (the
    Allocator says `layer-missing` and its lowest layer is forwarded with every temporal layer). Its other
    layers are still coming: within the first ~50 ms of a 30 frames/s camera only the base temporal layer
    has a bitrate, and choosing it would leave the others out until the next switching point (a keyframe).
    """
    if not any(f.settled for f in figures):
        return ()
    simulcast = any(f.layer > 0 for f in figures)

    def index(f: Sublayer) -> int:
        return f.layer if simulcast else f.spatial

    def needed(f: Sublayer, s: int, t: int) -> bool:
        if f.temporal > t:
            return False
        return f.layer == s if simulcast else f.spatial <= s

    heights: dict[int, int] = {}
    for f in figures:
        if f.height > 0 and (not simulcast or f.spatial == 0):
            heights.setdefault(index(f), f.height)
    out: list[Layer] = []
    for s, t in sorted({(index(f), f.temporal) for f in figures}):
        own = [f for f in figures if index(f) == s and f.temporal == t]
        received = any(f.bitrate_bps > 0 for f in own)
        cost = sum(f.bitrate_bps for f in figures if needed(f, s, t)) if received else 0
        ramping = received and any(f.ramping for f in figures if needed(f, s, t))
        rate = sum(
            f.frame_rate
            for f in figures
            if index(f) == s and f.temporal <= t and (not simulcast or f.spatial == 0)
        )
        out.append(
            Layer(
                spatial=s,
                temporal=t,
                height=heights.get(s, 0),
                frame_rate=rate,
                bitrate_bps=cost,
                ramping=ramping,
            )
        )
    return tuple(out)


def native_target(decision: SourceAllocation) -> tuple[int, int] | None:
    """What the packet path forwards for one source's decision, (spatial, temporal) (None: nothing).

    A source in lastN whose layers are not measured yet (`layer-missing`: it has just started, or its figures
    are a tick behind) gets all of its lowest layer, so its first keyframe is forwarded without waiting for a
    tick; the next allocation corrects it once bitrates are known.
    """
    if decision.layer is not None:
        return (int(decision.layer.spatial), int(decision.layer.temporal))
    if decision.reason == Reason.LAYER_MISSING:
        return (0, ALL_TEMPORAL)
    return None


class Selection:
    """The allocation of every conference of one registry."""

    def __init__(
        self,
        bridge: Bridge,
        settings: AllocationSettings | None = None,
        *,
        bandwidth_bps: int = 2_500_000,
        trust_bwe: bool = False,
        stats: AllocationStats | None = None,
        speakers: Speakers | None = None,
        initial_estimate_bps: int | None = None,
    ) -> None:
        """`bandwidth_bps`: the available bandwidth of a receiver congestion control does not estimate (jvb's
        receiver bandwidth). `initial_estimate_bps`: with `trust_bwe`, that of a receiver whose RTP carries
        transport-cc before its first estimate, where the packet path's estimate starts (None:
        `bandwidth_bps`)."""
        self.bridge = bridge
        self.settings = settings or AllocationSettings()
        self.bandwidth_bps = bandwidth_bps
        self.initial_estimate_bps = initial_estimate_bps
        #: Whether a receiver's own estimate replaces `bandwidth_bps` once the packet path has one.
        self.trust_bwe = trust_bwe
        self._estimates: dict[int, int] = {}
        #: Transports with transport-cc, sent RTP but no estimate yet: since when (FEEDBACK_GRACE).
        self._unanswered: dict[int, float] = {}
        #: Those past FEEDBACK_GRACE at the last snapshot.
        self._silent: set[int] = set()
        self._estimate_history: dict[int, deque[int]] = {}
        #: Per transport: the highest estimate it had, and its probe raises so far.
        self._estimate_peak: dict[int, tuple[int, int]] = {}
        #: Per transport: the estimate its allocation's switch up needs (`Allocation.up_target_bps`, with
        #: the audio it is sent), as of the last run.
        self._up_targets: dict[int, int] = {}
        #: The audio each transport sends (bit/s): every other member of its conference is sent it.
        self._audio_bps: dict[int, int] = {}
        self.stats = stats if stats is not None else AllocationStats()
        #: Speech activity, for the speaker order (None: join order).
        self.speakers = speakers
        self._allocators: dict[str, Allocator] = {}
        self._layers: LayerFigures = {}
        #: Recent bitrates of each received layer, by (router, transport, source, layer, spatial, temporal).
        self._bitrates: dict[tuple[int, int, str, int, int, int], deque[int]] = {}

    # -- inputs

    def on_stats(self, now: float, snapshot: Mapping[str, object]) -> list[Conference]:
        """A native stats snapshot: takes its layer figures and reallocates every conference. Returns the
        conferences where some receiver's forwarded set changed."""
        layers: LayerFigures = {}
        bitrates: dict[tuple[int, int, str, int, int, int], deque[int]] = {}
        raw = snapshot.get("layers")
        for entry in raw if isinstance(raw, list) else []:
            if not isinstance(entry, dict):
                continue
            key = (int(entry["router"]), int(entry["transport"]), str(entry["source"]))
            height = entry.get("height")
            figure = Sublayer(
                layer=int(entry["layer"]),
                spatial=int(entry.get("spatial", 0)),
                temporal=int(entry.get("temporal", 0)),
                bitrate_bps=int(entry["bitrate_bps"]),
                frame_rate=float(entry.get("frame_rate", 0.0)),
                height=int(height) if isinstance(height, int) else 0,
                settled=bool(entry.get("settled", True)),
            )
            rates = bitrates.setdefault(
                (*key, figure.layer, figure.spatial, figure.temporal),
                self._bitrates.get((*key, figure.layer, figure.spatial, figure.temporal))
                or deque(maxlen=BITRATE_SMOOTHING),
            )
            if figure.bitrate_bps > 0:
                rates.append(figure.bitrate_bps)
                figure = figure._replace(
                    bitrate_bps=sum(rates) // len(rates), ramping=len(rates) < BITRATE_SMOOTHING
                )
            else:
                rates.clear()
            layers.setdefault(key, []).append(figure)
        self._layers = layers
        # Only the layers of this snapshot are remembered: a source that went takes its history along.
        self._bitrates = bitrates
        estimates: dict[int, int] = {}
        unanswered: dict[int, float] = {}
        audio: dict[int, int] = {}
        starved = self._starved()
        transports = snapshot.get("transports")
        for tid, t in transports.items() if isinstance(transports, dict) else []:
            if not isinstance(t, dict):
                continue
            bps = t.get("bandwidth_estimate_bps")
            # 0 is an estimate (headers and tags take the whole link: no room for video), not its absence,
            # which would size the receiver by the configured bandwidth.
            if isinstance(bps, int) and bps >= 0:
                estimates[int(tid)] = bps
                history = self._estimate_history.setdefault(int(tid), deque(maxlen=ESTIMATE_HOLD))
                probe = t.get("probe")
                raises = probe.get("raises") if isinstance(probe, dict) else None
                raises = raises if isinstance(raises, int) else 0
                peak, raised = self._estimate_peak.get(int(tid), (0, 0))
                if history and (int(tid) in starved or (raises > raised and bps > peak)):
                    history.clear()
                history.append(bps)
                self._estimate_peak[int(tid)] = (max(peak, bps), raises)
            elif isinstance(t.get("probe"), dict):
                # Transport-cc, and no feedback yet: none while it was sent nothing, for a while after.
                rtp_out = t.get("rtp_out")
                if isinstance(rtp_out, int) and rtp_out > 0:
                    unanswered[int(tid)] = self._unanswered.get(int(tid), now)
            audio_bps = t.get("audio_in_bps")
            if isinstance(audio_bps, int) and audio_bps > 0:
                audio[int(tid)] = audio_bps
        for gone in self._estimate_history.keys() - estimates.keys():
            del self._estimate_history[gone]
            self._estimate_peak.pop(gone, None)
        open_transports = {int(tid) for tid in transports} if isinstance(transports, dict) else set()
        for gone in self._up_targets.keys() - open_transports:
            del self._up_targets[gone]
        self._estimates = estimates
        silent = {tid for tid, since in unanswered.items() if now - since >= FEEDBACK_GRACE}
        for tid in silent - self._silent:
            self.stats.no_feedback += 1
            log.info("transport %s sent no transport-cc feedback in %.0f s", tid, now - unanswered[tid])
        self._unanswered, self._silent = unanswered, silent
        self._audio_bps = audio
        return [c for c in list(self.bridge.conferences.values()) if self.run(now, c)]

    def on_estimate_fell(self, transport_id: int, bps: int) -> bool:
        """The packet path reported that a transport's estimate fell to `bps` between snapshots: with
        trust-bwe it counts at once, as a fall in a snapshot does. Returns whether it lowers what the receiver
        is sized by (then its conference is worth reallocating)."""
        if not self.trust_bwe:
            return False
        history = self._estimate_history.setdefault(transport_id, deque(maxlen=ESTIMATE_HOLD))
        lowers = not history or bps < min(history)
        history.append(bps)
        self._estimates[transport_id] = bps
        return lowers

    def on_estimate_rose(self, transport_id: int, bps: int) -> bool:
        """The packet path reported that a probe raised a transport's estimate to `bps` between snapshots:
        with trust-bwe, one above every estimate it had counts at once, as such a rise in a snapshot does (see
        ESTIMATE_HOLD). Returns whether it raises what the receiver is sized by to what its switch up needs
        (`Allocation.up_target_bps`): then its conference is worth reallocating now. A raise short of that
        waits for the next snapshot: the next cluster follows within 100 ms, and a switch to an intermediate
        layer would ask the sender for a keyframe that makes it refuse the next for 300 ms (libwebrtc)."""
        if not self.trust_bwe:
            return False
        history = self._estimate_history.setdefault(transport_id, deque(maxlen=ESTIMATE_HOLD))
        peak, raised = self._estimate_peak.get(transport_id, (0, 0))
        if bps <= peak:
            return False
        before = min(history) if history else None
        history.clear()
        history.append(bps)
        self._estimates[transport_id] = bps
        # The snapshot's raise count catches up with this one; one it missed still counts there.
        self._estimate_peak[transport_id] = (bps, raised + 1)
        return (before is None or bps > before) and bps >= self._up_targets.get(transport_id, 0)

    def bandwidth_of(self, ep: Endpoint, audio_bps: int = 0) -> int:
        """What `ep` can receive of video: with `trust-bwe`, once it has an estimate, the least of its last
        ESTIMATE_HOLD estimates less `audio_bps`, the audio it is sent (`_audio_to`), and before that the
        initial estimate if its RTP carries transport-cc (unless it sent no feedback for FEEDBACK_GRACE); else
        the configured figure."""
        if not self.trust_bwe:
            return self.bandwidth_bps
        history = self._estimate_history.get(ep.transport_id)
        if history:
            return max(min(history) - audio_bps, 0)
        if ep.transport_cc and self.initial_estimate_bps is not None and ep.transport_id not in self._silent:
            return max(self.initial_estimate_bps - audio_bps, 0)
        return self.bandwidth_bps

    def _starved(self) -> set[int]:
        """Transports of the receivers whose last allocation forwards them no video because bandwidth held
        every source back."""
        out: set[int] = set()
        for conference in list(self.bridge.conferences.values()):
            allocator = self._allocators.get(conference.id)
            if allocator is None:
                continue
            for receiver_id, allocation in allocator.allocations().items():
                ep = conference.endpoints.get(receiver_id)
                if ep is None or ep.closed or allocation.forwarded():
                    continue
                if any(s.reason == Reason.BANDWIDTH_LIMITED for s in allocation.sources):
                    out.add(ep.transport_id)
        return out

    def _audio_total(self, conference: Conference) -> int:
        """The audio the open members of `conference` send, bit/s."""
        members = conference.endpoints.values()
        return sum(self._audio_bps.get(o.transport_id, 0) for o in members if not o.closed)

    def _audio_to(self, ep: Endpoint, total: int) -> int:
        """The audio `ep` is sent: the conference's `total` but its own (every other member's)."""
        return total - (0 if ep.closed else self._audio_bps.get(ep.transport_id, 0))

    def run(self, now: float, conference: Conference) -> bool:
        """Reallocates one conference; sends each changed receiver's allocation across the seam. Returns
        whether a receiver's forwarded set changed."""
        if conference.closed:
            self.forget(conference.id)
            return False
        allocator = self._allocators.get(conference.id)
        if allocator is None:
            allocator = self._allocators[conference.id] = Allocator(self.settings, stats=self.stats)
        endpoints = list(conference.endpoints.values())
        audio = self._audio_total(conference)
        receivers = [
            Receiver(
                ep.id,
                self.bandwidth_of(ep, self._audio_to(ep, audio)),
                replace(ep.video_constraints, last_n=ep.last_n),
            )
            for ep in endpoints
            if not ep.closed
        ]
        changed = allocator.update(now, receivers, self.speaker_order(conference), self._sources(conference))
        forwarded_changed = False
        for receiver_id, allocation in changed.items():
            ep = conference.endpoints.get(receiver_id)
            if ep is None or ep.closed:
                continue
            forwarded_changed |= self._apply(ep, allocation)
        if self.trust_bwe:
            for receiver_id, allocation in allocator.allocations().items():
                ep = conference.endpoints.get(receiver_id)
                if ep is not None and not ep.closed:
                    # The estimate covers the audio it is sent too.
                    to = self._audio_to(ep, audio)
                    video = allocation.probe_target_bps
                    self._probe(ep, video + to if video else 0)
                    up = allocation.up_target_bps
                    self._up_targets[ep.transport_id] = up + to if up else 0
        return forwarded_changed

    def _probe(self, ep: Endpoint, target: int) -> None:
        """Tells the packet path what to probe `ep`'s link towards, when it started or stopped, fell by more
        than PROBE_TARGET_CHANGE or rose by more than PROBE_TARGET_RISE."""
        last = ep.probe_target_bps
        if (
            (target == 0) != (last == 0)
            or last - target > last * PROBE_TARGET_CHANGE
            or target - last > last * PROBE_TARGET_RISE
        ):
            ep.set_probe_target(target)

    def speaker_order(self, conference: Conference) -> list[str]:
        """Endpoints in speaker order: the dominant speaker, the recent ones, then join order."""
        state = self.speakers.get(conference.id) if self.speakers is not None else None
        if state is None:
            return list(conference.endpoints)
        return state.order(conference.endpoints)

    def sender_constraints(
        self, conference: Conference, reachable: Callable[[str], bool]
    ) -> dict[str, tuple[str, int]]:
        """SenderSourceConstraints to send: for each video source whose largest wanted height changed since
        last told, (owner endpoint, height). The height is the most any other endpoint's constraints ask of
        it (0: nobody wants it, so its sender can stop encoding it; unlimited asks are `UNLIMITED_HEIGHT`),
        so a sender keeps encoding only layers someone may receive. Only owners `reachable` (their bridge
        channel is open) are told, and recorded as told."""
        out: dict[str, tuple[str, int]] = {}
        receivers = [ep for ep in conference.endpoints.values() if not ep.closed]
        for owner in receivers:
            if not reachable(owner.id):
                continue
            for s in owner.sources:
                if s.kind != "video" or not s.name:
                    continue
                height = max(
                    (self._wanted_height(r, s.name, owner.id) for r in receivers if r is not owner), default=0
                )
                if owner.sender_max_heights.get(s.name) != height:
                    owner.sender_max_heights[s.name] = height
                    out[s.name] = (owner.id, height)
        return out

    def _wanted_height(self, receiver: Endpoint, source: str, owner: str) -> int:
        rc = receiver.video_constraints
        if receiver.last_n == 0:
            return 0
        c = source_constraints(rc, source, owner, self.settings)
        if c.max_frame_rate == 0:
            return 0
        return UNLIMITED_HEIGHT if c.max_height < 0 else min(c.max_height, UNLIMITED_HEIGHT)

    def forget(self, conference_id: str) -> None:
        self._allocators.pop(conference_id, None)

    # -- the private API's view

    def history(self, conference_id: str, endpoint_id: str) -> list[dict[str, Any]]:
        allocator = self._allocators.get(conference_id)
        return allocator.history(endpoint_id) if allocator is not None else []

    def dump(self, conference_id: str) -> dict[str, list[dict[str, Any]]]:
        allocator = self._allocators.get(conference_id)
        return allocator.dump() if allocator is not None else {}

    def bandwidth_view(self, conference: Conference) -> dict[str, dict[str, Any]]:
        """Per endpoint, now: the transport-cc estimate the last stats snapshot had (None: none yet), the
        bandwidth the Allocator sizes it by, and what its current allocation forwards (bitrates as measured
        at ingress), for QoE measurements (bench/qoe.py) and operators."""
        allocator = self._allocators.get(conference.id)
        audio = self._audio_total(conference)
        out: dict[str, dict[str, Any]] = {}
        for ep in conference.endpoints.values():
            allocation = allocator.allocation(ep.id) if allocator is not None else None
            out[ep.id] = {
                "transport": ep.transport_id,
                "estimate_bps": self._estimates.get(ep.transport_id),
                "trust_bwe": self.trust_bwe,
                "bandwidth_bps": self.bandwidth_of(ep, self._audio_to(ep, audio)),
                "allocated_bps": allocation.total_bps if allocation is not None else None,
                "allocation_bandwidth_bps": allocation.bandwidth_bps if allocation is not None else None,
                "oversending": allocation.oversending if allocation is not None else None,
                "sources": [
                    {
                        "source": s.source,
                        "owner": s.owner,
                        "reason": str(s.reason),
                        "spatial": s.layer.spatial if s.layer is not None else None,
                        "temporal": s.layer.temporal if s.layer is not None else None,
                        "height": s.layer.height if s.layer is not None else None,
                        "bitrate_bps": s.layer.bitrate_bps if s.layer is not None else None,
                        # What unlimited bandwidth would forward: the sender's own best, now.
                        "ideal_height": s.ideal.height if s.ideal is not None else None,
                    }
                    for s in (allocation.sources if allocation is not None else ())
                ],
            }
        return out

    # -- internals

    def _sources(self, conference: Conference) -> list[VideoSource]:
        out: list[VideoSource] = []
        for ep in conference.endpoints.values():
            if ep.closed:
                continue
            for s in ep.sources:
                if s.kind != "video" or not s.name:
                    continue
                figures = self._layers.get((conference.router_id, ep.transport_id, s.name), [])
                out.append(
                    VideoSource(
                        name=s.name,
                        owner=ep.id,
                        video_type=video_type_of(ep, s),
                        muted=ep.force_mute_video,
                        layers=allocation_layers(figures) or _unmeasured(s),
                    )
                )
        return out

    def _apply(self, ep: Endpoint, allocation: Allocation) -> bool:
        targets = [(s.source, native_target(s)) for s in allocation.sources]
        if ep.allocation == targets:
            return False
        before = ep.forwarded_sources
        ep.set_allocation(targets)
        return ep.forwarded_sources != before


def video_type_of(ep: Endpoint, source: Source) -> VideoType:
    """A source's video type: what its endpoint said of it over the bridge channel (SourceVideoTypeMessage),
    else what its Colibri2 source said, else the endpoint's own VideoTypeMessage, else camera."""
    said = ep.video_types.get(source.name)
    if said is not None:
        return said
    if source.video_type in ("camera", "desktop", "desktop_high_fps", "disabled"):
        return cast(VideoType, source.video_type)
    return ep.video_type or "camera"


def _unmeasured(source: Source) -> tuple[Layer, ...]:
    """The layers of a source no figures came for yet: signalled (its SIM group's SSRCs, else one), not
    received (bitrate 0)."""
    sim = next((g for g in source.groups if g.semantics == "SIM"), None)
    count = max(1, len(sim.ssrcs)) if sim is not None else 1
    return tuple(Layer(spatial=i, temporal=0, height=0, frame_rate=0.0, bitrate_bps=0) for i in range(count))
