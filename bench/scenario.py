"""Scenario files for `sluice bench`: TOML describing conferences, who sends, media, duration and ramp.

```toml
name = "meeting"
duration = "20s"          # per run (per step when ramping)
loss-limit = 0.1          # percent; the run fails above it
median-latency-limit = "10ms"  # optional: a run whose median one-way latency is above it fails too (a
                          # standing queue: the target is saturated though its buffers lose nothing)
[load]
conferences = 2
senders = 4               # per conference; each sends and receives everyone else
receivers = 0             # per conference; receive-only endpoints
[media]
video-kbps = 500          # per sender; 0 = no video
video-fps = 30
video-packet-bytes = 1200
simulcast = false         # three SSRCs per sender: 320x180, 640x360, 1280x720 at 2/15, 1/3 and all of
                          # video-kbps (Jitsi's ratios); the bridge forwards one per receiver
audio = true              # 50 packets/s of ~100 bytes
audio-senders = 3         # optional: only the first 3 senders of a conference are unmuted (send audio)
feedback = true           # like browsers (the default): transport-cc feedback every 100 ms and NACKs from
                          # receivers, RTX from senders answering NACKs; false: no RTCP feedback at all
[receive]                 # optional: what receivers ask over the bridge channel (colibri websockets)
last-n = 25               # ReceiverVideoConstraints lastN
max-height = 180          # defaultConstraints.maxHeight (the grid)
screen-share = true       # the second sender's video is a screen share (SourceVideoTypeMessage desktop),
on-stage-height = 720     # on stage for everyone at this height
[ramp]                    # optional: step the number of conferences to find the knee
start = 1
step = 1
max = 20
```
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from bridge.settings import parse_duration

T = TypeVar("T")

AUDIO_PPS = 50
AUDIO_BYTES = 100


class ScenarioError(ValueError):
    """A scenario file that cannot be run, with the key at fault."""


@dataclass(frozen=True, slots=True)
class Media:
    video_kbps: float = 500.0
    video_fps: float = 30.0
    video_packet_bytes: int = 1200
    simulcast: bool = False
    audio: bool = True
    #: Senders per conference that send audio (the first ones; the others are muted); None: all.
    audio_senders: int | None = None
    #: Endpoints behave like browsers about feedback (transport-cc, NACK, RTX); see native/loadgen repair.rs.
    feedback: bool = True

    @property
    def video_ssrcs(self) -> int:
        return 0 if self.video_kbps == 0 else (3 if self.simulcast else 1)

    def layer_kbps(self) -> list[float]:
        """Each video SSRC's bitrate, lowest layer first (the load generator's: native/loadgen vp8.rs)."""
        if self.video_kbps == 0:
            return []
        if not self.simulcast:
            return [self.video_kbps]
        return [self.video_kbps * 2 / 15, self.video_kbps / 3, self.video_kbps]

    def video_pps(self) -> float:
        """Packets per second of all video SSRCs, nominal: a mean frame's packets, at least one, every frame
        (keyframes and the temporal layers' frame sizes move the real rate by some percent)."""
        frame_bytes = (kbps * 1000 / 8 / self.video_fps for kbps in self.layer_kbps())
        return sum(max(1, math.ceil(b / self.video_packet_bytes)) for b in frame_bytes) * self.video_fps

    def sender_pps(self) -> float:
        return self.video_pps() + (AUDIO_PPS if self.audio else 0)


@dataclass(frozen=True, slots=True)
class Receive:
    """What every receiver asks of the bridge over its bridge channel."""

    last_n: int | None = None
    max_height: int | None = None
    screen_share: bool = False
    on_stage_height: int = 720

    def constraints(self, stage: str | None) -> dict[str, Any]:
        """The ReceiverVideoConstraints message, with `stage` (a source name) on stage."""
        msg: dict[str, Any] = {"colibriClass": "ReceiverVideoConstraints"}
        if self.last_n is not None:
            msg["lastN"] = self.last_n
        if self.max_height is not None:
            msg["defaultConstraints"] = {"maxHeight": self.max_height}
        if stage is not None:
            msg["onStageSources"] = [stage]
            msg["constraints"] = {stage: {"maxHeight": self.on_stage_height}}
        return msg


@dataclass(frozen=True, slots=True)
class Turn:
    """`[turn]`: run the scenario twice, directly and with endpoints reaching the bridge through a TURN
    server (`sluice bench` starts a coturn), to report what relaying costs."""

    #: Endpoints per conference that go through TURN, the first ones (None: all).
    endpoints: int | None = None

    def relayed(self, position: int) -> bool:
        """Whether the endpoint at `position` (0-based within its conference) goes through TURN."""
        return self.endpoints is None or position < self.endpoints


@dataclass(frozen=True, slots=True)
class Ramp:
    start: int
    step: int
    max: int

    def steps(self) -> list[int]:
        return list(range(self.start, self.max + 1, self.step))


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    conferences: int
    senders: int
    receivers: int = 0
    duration: float = 20.0
    loss_limit_pct: float = 0.1
    #: None: latency does not decide whether a run passes.
    median_latency_limit_s: float | None = None
    media: Media = Media()
    ramp: Ramp | None = None
    description: str = ""
    #: None: receivers open no bridge channel (the bridge's defaults apply).
    receive: Receive | None = None
    #: None: no TURN run.
    turn: Turn | None = None

    def passes(self, loss_pct: float | None, latency_p50_us: float | None) -> bool:
        """Whether a run with this loss and median latency is within the scenario's limits."""
        if loss_pct is None or loss_pct > self.loss_limit_pct:
            return False
        limit = self.median_latency_limit_s
        return limit is None or (latency_p50_us is not None and latency_p50_us <= limit * 1e6)

    def sends_audio(self, sender: int) -> bool:
        """Whether sender `sender` (0-based within its conference) is unmuted."""
        m = self.media
        return m.audio and (m.audio_senders is None or sender < m.audio_senders)

    @property
    def endpoints_per_conference(self) -> int:
        return self.senders + self.receivers

    @property
    def publishers(self) -> int:
        return self.conferences * self.senders

    @property
    def subscribers(self) -> int:
        """Endpoints that receive something: everyone, when there are at least two per conference."""
        return self.conferences * self.endpoints_per_conference if self.endpoints_per_conference > 1 else 0

    def audio_senders(self) -> int:
        """Unmuted senders per conference."""
        return sum(1 for i in range(self.senders) if self.sends_audio(i))

    def expected_egress_pps(self) -> float:
        """What a bridge forwarding everything sends: every sender's packets to every other endpoint (an
        upper bound once simulcast layers, lastN or constraints select)."""
        fan_out = self.endpoints_per_conference - 1
        return fan_out * self.expected_ingress_pps()

    def expected_ingress_pps(self) -> float:
        per_conference = self.senders * self.media.video_pps() + self.audio_senders() * AUDIO_PPS
        return self.conferences * per_conference

    def at(self, conferences: int) -> Scenario:
        """This scenario with `conferences` conferences (one ramp step)."""
        return replace(self, conferences=conferences, ramp=None)


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) and kind is not bool:
        raise ScenarioError(f"{where}{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ScenarioError(f"{where}{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ScenarioError(f"unknown key {where}{unknown[0]}")


def parse_scenario(text: str, default_name: str = "scenario") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not TOML: {exc}") from None
    _check_keys(
        data,
        {
            "name",
            "description",
            "duration",
            "loss-limit",
            "median-latency-limit",
            "load",
            "media",
            "ramp",
            "receive",
            "turn",
        },
        "",
    )
    load = _get(data, "load", dict, "", {})
    media_t = _get(data, "media", dict, "", {})
    ramp_t = _get(data, "ramp", dict, "", None)
    _check_keys(load, {"conferences", "senders", "receivers"}, "load.")
    receive_t = _get(data, "receive", dict, "", None)
    _check_keys(
        media_t,
        {"video-kbps", "video-fps", "video-packet-bytes", "simulcast", "audio", "audio-senders", "feedback"},
        "media.",
    )

    try:
        duration = parse_duration(data.get("duration", 20))
    except ValueError as exc:
        raise ScenarioError(f"duration: {exc}") from None
    latency_limit: float | None = None
    if "median-latency-limit" in data:
        try:
            latency_limit = parse_duration(data["median-latency-limit"])
        except ValueError as exc:
            raise ScenarioError(f"median-latency-limit: {exc}") from None
        if latency_limit <= 0:
            raise ScenarioError("median-latency-limit: must be above 0")
    defaults = Media()
    media = Media(
        video_kbps=float(_get(media_t, "video-kbps", (int, float), "media.", defaults.video_kbps)),
        video_fps=float(_get(media_t, "video-fps", (int, float), "media.", defaults.video_fps)),
        video_packet_bytes=_get(media_t, "video-packet-bytes", int, "media.", defaults.video_packet_bytes),
        simulcast=_get(media_t, "simulcast", bool, "media.", defaults.simulcast),
        audio=_get(media_t, "audio", bool, "media.", defaults.audio),
        audio_senders=_get(media_t, "audio-senders", int, "media.", None),
        feedback=_get(media_t, "feedback", bool, "media.", defaults.feedback),
    )
    if media.video_kbps < 0 or (media.video_kbps > 0 and media.video_fps <= 0):
        raise ScenarioError("media: video-kbps must be >= 0 and video-fps > 0")
    if not 200 <= media.video_packet_bytes <= 1400:
        raise ScenarioError("media.video-packet-bytes: 200..1400 (one RTP packet within the MTU)")
    if media.sender_pps() == 0:
        raise ScenarioError("media: nothing to send (no video and no audio)")

    ramp = None
    if ramp_t is not None:
        _check_keys(ramp_t, {"start", "step", "max"}, "ramp.")
        ramp = Ramp(
            start=_get(ramp_t, "start", int, "ramp.", 1),
            step=_get(ramp_t, "step", int, "ramp.", 1),
            max=_get(ramp_t, "max", int, "ramp.", 0),
        )
        if not (1 <= ramp.start <= ramp.max and ramp.step >= 1):
            raise ScenarioError("ramp: need 1 <= start <= max and step >= 1")

    receive = None
    if receive_t is not None:
        _check_keys(receive_t, {"last-n", "max-height", "screen-share", "on-stage-height"}, "receive.")
        receive = Receive(
            last_n=_get(receive_t, "last-n", int, "receive.", None),
            max_height=_get(receive_t, "max-height", int, "receive.", None),
            screen_share=_get(receive_t, "screen-share", bool, "receive.", False),
            on_stage_height=_get(receive_t, "on-stage-height", int, "receive.", 720),
        )
        if (receive.last_n is not None and receive.last_n < -1) or receive.on_stage_height < 1:
            raise ScenarioError("receive: last-n >= -1 and on-stage-height >= 1")
    turn = None
    turn_t = _get(data, "turn", dict, "", None)
    if turn_t is not None:
        _check_keys(turn_t, {"endpoints"}, "turn.")
        turn = Turn(endpoints=_get(turn_t, "endpoints", int, "turn.", None))
        if turn.endpoints is not None and turn.endpoints < 1:
            raise ScenarioError("turn.endpoints: at least 1 (leave it out for all)")
    scenario = Scenario(
        name=_get(data, "name", str, "", default_name),
        description=_get(data, "description", str, "", ""),
        conferences=_get(load, "conferences", int, "load.", ramp.start if ramp else 1),
        senders=_get(load, "senders", int, "load.", 2),
        receivers=_get(load, "receivers", int, "load.", 0),
        duration=duration,
        loss_limit_pct=float(_get(data, "loss-limit", (int, float), "", 0.1)),
        median_latency_limit_s=latency_limit,
        media=media,
        ramp=ramp,
        receive=receive,
        turn=turn,
    )
    if scenario.conferences < 1 or scenario.senders < 1 or scenario.receivers < 0:
        raise ScenarioError("load: need conferences >= 1, senders >= 1, receivers >= 0")
    if scenario.endpoints_per_conference < 2:
        raise ScenarioError("load: a conference needs at least two endpoints for anything to be forwarded")
    if media.audio_senders is not None and media.audio_senders < 0:
        raise ScenarioError("media.audio-senders: >= 0")
    if receive is not None and receive.screen_share and scenario.senders < 2:
        raise ScenarioError("receive.screen-share: needs at least two senders (the second shares)")
    if not 0 <= scenario.loss_limit_pct <= 100:
        raise ScenarioError("loss-limit: a percentage, 0..100")
    return scenario


def load_file(path: str | Path, parse: Callable[[str, str], T]) -> T:
    """`parse(text, default name)` of a scenario file; errors name the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read {p}: {exc.strerror}") from None
    try:
        return parse(text, p.stem)
    except ScenarioError as exc:
        raise ScenarioError(f"{p}: {exc}") from None


def load_scenario(path: str | Path) -> Scenario:
    return load_file(path, parse_scenario)
