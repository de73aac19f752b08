"""The impairment relay: a bump in the wire between two veths that caps rate, delays, jitters and loses
packets, per direction, on a schedule.

Why a bump in the wire. ICE needs the bridge and the receiver to see each other's real addresses: a UDP
proxy rewrites them, and every candidate would have to name it. So the relay runs in a middle network
namespace holding one end of each of two veth pairs (`a` and `b`), with no addresses of its own, IPv6
off and forwarding off, and copies Ethernet frames from one veth to the other with AF_PACKET sockets.
The namespaces on either side share one subnet and one link as far as they can tell (ARP passes too):
addresses, ports and ICE candidates are untouched, and any flow (UDP media, TCP signalling) passes.
The kernel's own tools could not do it alone on this machine: `netem` (delay, jitter, loss patterns) is
not built; `tbf` (a rate cap) is, and can still be put on the middle veths by the harness.

Why PACKET_VNET_HDR. Between namespaces the kernel leaves checksums to be filled in later (veth offers
checksum offload) and hands TCP's segmentation to the receiver (GSO). A frame read from a packet socket
and written out as plain bytes would arrive with a wrong UDP checksum and be dropped, and a 64 KB TCP
frame would not fit the veth's MTU. The virtio-net header that PACKET_VNET_HDR adds to each frame carries
what the kernel needs to finish both; the relay passes it through unchanged.

Per direction (`a-to-b`, `b-to-a`), in the order a packet meets them:

1. loss: Gilbert-Elliott burst loss (good and bad states; `p` good→bad, `r` bad→good per packet; loss
   probability in each state), then independent random loss;
2. the bottleneck: a token bucket (`rate-kbps`, bucket `burst-bytes`) in front of a FIFO bounded in time
   at the current rate (`queue-ms`; a packet that does not fit is dropped at the tail); departures are
   computed in virtual time, so the rate is exact whatever the timer's granularity;
3. the delay line: `delay-ms` plus a uniform random extra in [0, `jitter-ms`]; a packet never leaves
   before the one ahead of it unless `reorder = true`.

Only IPv4 and IPv6 frames are impaired: ARP and anything else is passed at once (and counted), so that a
loss pattern never decides whether neighbours resolve. Rates count Ethernet frames (14-byte header
included), as `tbf` does.

Configuration, TOML (or JSON with the same keys):

```toml
seed = 1                      # optional: the random generator's seed (reproducible loss and jitter)
[a-to-b]                      # everything optional; absent means no impairment
rate-kbps = 3000              # the bottleneck; absent or "unlimited": none
queue-ms = 100                # the bottleneck's FIFO, in time at the current rate
burst-bytes = 1600            # the token bucket's depth (at least one frame passes whole)
delay-ms = 40
jitter-ms = 10
reorder = false
loss-pct = 1.0                # independent random loss
burst-loss = { p = 0.01, r = 0.3, bad-loss = 1.0, good-loss = 0.0 }
[[a-to-b.steps]]              # the schedule: from at-s on (seconds from the schedule's start), these
at-s = 10                     # keys replace the ones before; steps in increasing time
rate-kbps = 300
[[a-to-b.steps]]
at-s = 20
rate-kbps = 3000
[b-to-a]
delay-ms = 40
```

The schedule starts when the relay is ready, and again at SIGUSR1 (for a bench that starts the clock when
media flows). Statistics go to a JSON file (`--stats`), replaced atomically every `--stats-interval` and
at exit (SIGTERM, SIGINT): per direction packets and bytes in and out, drops by reason (random_loss,
burst_loss, queue_full, send_failed, malformed; socket_drops are the kernel's, before the relay read
them), the queue now, queue-delay and time-in-relay percentiles, the impairment in force and the step;
plus the relay's CPU seconds. The file is written first when the sockets are bound: its presence means
ready. A file rather than an HTTP endpoint because the relay's loopback is in the middle namespace,
which nothing else can reach.

    python -m bench.impair --a m0 --b m1 --config impair.toml --stats stats.json

Needs root (CAP_NET_RAW) in the namespace it runs in. Throughput: see docs/architecture.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import math
import os
import random
import resource
import signal
import socket
import struct
import sys
import time
import tomllib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import uvloop

DIRECTIONS = ("a-to-b", "b-to-a")

# Linux packet socket constants (linux/if_packet.h, linux/if_ether.h); Python's socket module lacks them.
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
ETH_P_ALL = 0x0003
# asm-generic/socket.h: receive timestamps (CLOCK_REALTIME, struct timespec) as ancillary data.
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("qq")
VNET_HDR_LEN = 10  # struct virtio_net_hdr
ETH_HDR_LEN = 14
IMPAIRED_ETHERTYPES = (b"\x08\x00", b"\x86\xdd")  # IPv4, IPv6
# A GSO frame (TCP between namespaces) can be 64 KB; BIG TCP could make it larger, which we refuse.
MAX_FRAME = VNET_HDR_LEN + 65536 + ETH_HDR_LEN
ANC_SIZE = socket.CMSG_SPACE(TIMESPEC.size)
RECV_BATCH = 256  # frames read per readiness callback before the loop looks at timers again


class ConfigError(ValueError):
    """A configuration the relay cannot run, with the key at fault."""


# --- configuration -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BurstLoss:
    """Gilbert-Elliott: per packet, the state's loss probability, then a state transition."""

    p: float  # good -> bad
    r: float  # bad -> good; the mean burst lasts 1/r packets
    bad_loss: float = 1.0
    good_loss: float = 0.0

    def mean_loss(self) -> float:
        """The stationary loss probability."""
        if self.p + self.r == 0:
            return self.good_loss
        bad = self.p / (self.p + self.r)
        return bad * self.bad_loss + (1 - bad) * self.good_loss


@dataclass(frozen=True, slots=True)
class Impairment:
    """What one direction does to packets while it is in force. The defaults impair nothing."""

    rate_kbps: float | None = None
    queue_ms: float = 100.0
    burst_bytes: int = 1600
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: bool = False
    loss_pct: float = 0.0
    burst_loss: BurstLoss | None = None

    @property
    def rate_bytes_per_s(self) -> float | None:
        return None if self.rate_kbps is None else self.rate_kbps * 1000 / 8

    def queue_limit_bytes(self) -> float:
        """The FIFO's bound at the current rate (unbounded when there is no rate cap)."""
        rate = self.rate_bytes_per_s
        return math.inf if rate is None else rate * self.queue_ms / 1000


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float
    impairment: Impairment  # in force from at_s on (the step's keys over the one before)


@dataclass(frozen=True, slots=True)
class Plan:
    """One direction's impairment at the schedule's start and its steps."""

    initial: Impairment = Impairment()
    steps: tuple[Step, ...] = ()

    def at(self, t: float) -> Impairment:
        """The impairment in force `t` seconds into the schedule."""
        current = self.initial
        for step in self.steps:
            if step.at_s > t:
                break
            current = step.impairment
        return current


@dataclass(frozen=True, slots=True)
class RelayConfig:
    a_to_b: Plan = Plan()
    b_to_a: Plan = Plan()
    seed: int | None = None

    def plan(self, direction: str) -> Plan:
        return self.a_to_b if direction == "a-to-b" else self.b_to_a


_KEYS = {
    "rate-kbps": "rate_kbps",
    "queue-ms": "queue_ms",
    "burst-bytes": "burst_bytes",
    "delay-ms": "delay_ms",
    "jitter-ms": "jitter_ms",
    "reorder": "reorder",
    "loss-pct": "loss_pct",
    "burst-loss": "burst_loss",
}


def _number(where: str, value: object, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{where}: {value} is outside [{low}, {high}]")
    return float(value)


def _burst_loss(where: str, value: object) -> BurstLoss:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a table with p, r (and bad-loss, good-loss)")
    unknown = set(value) - {"p", "r", "bad-loss", "good-loss"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("p", "r"):
        if key not in value:
            raise ConfigError(f"{where}: {key} is required")
    return BurstLoss(
        p=_number(f"{where}.p", value["p"], 0, 1),
        r=_number(f"{where}.r", value["r"], 0, 1),
        bad_loss=_number(f"{where}.bad-loss", value.get("bad-loss", 1.0), 0, 1),
        good_loss=_number(f"{where}.good-loss", value.get("good-loss", 0.0), 0, 1),
    )


def _impairment(where: str, table: Mapping[str, object], base: Impairment) -> Impairment:
    """`base` with the keys of `table` replaced (the keys in _KEYS; the caller removes any others)."""
    changes: dict[str, Any] = {}
    for key, value in table.items():
        at = f"{where}.{key}"
        if key == "rate-kbps":
            changes["rate_kbps"] = None if value == "unlimited" else _number(at, value, 1)
        elif key == "queue-ms":
            changes["queue_ms"] = _number(at, value, 1, 60_000)
        elif key == "burst-bytes":
            changes["burst_bytes"] = int(_number(at, value, 64, 10_000_000))
        elif key == "delay-ms":
            changes["delay_ms"] = _number(at, value, 0, 60_000)
        elif key == "jitter-ms":
            changes["jitter_ms"] = _number(at, value, 0, 60_000)
        elif key == "reorder":
            if not isinstance(value, bool):
                raise ConfigError(f"{at}: expected true or false")
            changes["reorder"] = value
        elif key == "loss-pct":
            changes["loss_pct"] = _number(at, value, 0, 100)
        elif key == "burst-loss":
            changes["burst_loss"] = _burst_loss(at, value)
    return replace(base, **changes)


def _plan(where: str, table: object) -> Plan:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(table) - set(_KEYS) - {"steps"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)}, steps)")
    initial = _impairment(where, {k: v for k, v in table.items() if k != "steps"}, Impairment())
    raw_steps = table.get("steps", [])
    if not isinstance(raw_steps, list):
        raise ConfigError(f"{where}.steps: expected a list of tables")
    steps: list[Step] = []
    current = initial
    for i, raw in enumerate(raw_steps):
        at = f"{where}.steps[{i}]"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{at}: expected a table")
        unknown = set(raw) - set(_KEYS) - {"at-s"}
        if unknown:
            raise ConfigError(f"{at}: unknown keys {sorted(unknown)}")
        if "at-s" not in raw:
            raise ConfigError(f"{at}: at-s is required")
        at_s = _number(f"{at}.at-s", raw["at-s"], 0, 7 * 86400)
        if steps and at_s <= steps[-1].at_s:
            raise ConfigError(f"{at}.at-s: steps must be in increasing time ({at_s} after {steps[-1].at_s})")
        current = _impairment(at, {k: v for k, v in raw.items() if k != "at-s"}, current)
        steps.append(Step(at_s, current))
    return Plan(initial, tuple(steps))


def parse_config(data: Mapping[str, object]) -> RelayConfig:
    """The relay's configuration from a parsed TOML or JSON document (see the module docstring)."""
    unknown = set(data) - {*DIRECTIONS, "seed"}
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} (known: {', '.join(DIRECTIONS)}, seed)")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    return RelayConfig(
        a_to_b=_plan("a-to-b", data.get("a-to-b", {})),
        b_to_a=_plan("b-to-a", data.get("b-to-a", {})),
        seed=seed,
    )


def load_config(path: Path) -> RelayConfig:
    """TOML, or JSON when the name ends in .json."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table at the top")
    return parse_config(data)


# --- the sans-IO core ----------------------------------------------------------------------------------


class Histogram:
    """Durations in log buckets 1 % wide from 10 µs (what is below is the first bucket), and the exact
    count, sum and maximum."""

    _MIN_S = 1e-5
    _GROWTH = 1.01
    _BUCKETS = 2000  # up to 10 µs * 1.01**2000, over four hours

    def __init__(self) -> None:
        self.counts = [0] * self._BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def record(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if seconds < self._MIN_S:
            i = 0
        else:
            i = min(self._BUCKETS - 1, 1 + int(math.log(seconds / self._MIN_S, self._GROWTH)))
        self.counts[i] += 1
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    def _upper(self, i: int) -> float:
        return float(self._MIN_S * self._GROWTH**i)

    def quantile(self, q: float) -> float:
        """The upper edge of the bucket holding quantile `q` (at most the maximum); 0 when empty."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(self._upper(i), self.max)
        return self.max

    def summary_ms(self) -> dict[str, float]:
        ms = 1000.0
        mean = self.total / self.count if self.count else 0.0
        return {
            "count": self.count,
            "mean": round(mean * ms, 3),
            "p50": round(self.quantile(0.5) * ms, 3),
            "p90": round(self.quantile(0.9) * ms, 3),
            "p99": round(self.quantile(0.99) * ms, 3),
            "max": round(self.max * ms, 3),
        }


DROP_REASONS = ("random_loss", "burst_loss", "queue_full", "send_failed", "malformed", "socket_drops")


@dataclass(slots=True)
class Counters:
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    bypassed: int = 0  # not IP: passed at once, unimpaired
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


@dataclass(slots=True)
class _Packet:
    arrival: float
    size: int  # the Ethernet frame's length
    frame: bytes  # what goes out: the virtio-net header and the frame, or whatever the caller gave


class Direction:
    """One direction's impairments, sans-IO: `push` packets as they arrive, `poll` for those due to leave,
    and wake up at `next_wakeup`. Times are seconds on one monotonic clock."""

    def __init__(self, name: str, plan: Plan, epoch: float, rng: random.Random) -> None:
        self.name = name
        self.counters = Counters()
        self.queue_delay = Histogram()  # arrival to leaving the bottleneck
        self.sojourn = Histogram()  # arrival to the poll that hands the packet out
        self._plan = plan
        self._rng = rng
        self._epoch = epoch
        self._next_step = 0
        self.impairment = plan.initial
        self._tokens = float(self.impairment.burst_bytes)
        self._tokens_at = epoch  # the time self._tokens is for
        self._queue: deque[_Packet] = deque()
        self._queued_bytes = 0
        self._line: list[tuple[float, int, _Packet]] = []  # (release, seq, packet), a heap
        self._seq = 0
        self._last_release = -math.inf
        self._bad = False  # the Gilbert-Elliott state

    @property
    def epoch(self) -> float:
        return self._epoch

    @property
    def step(self) -> int:
        """How many steps of the schedule have been applied."""
        return self._next_step

    @property
    def queued(self) -> tuple[int, int]:
        """Packets and bytes waiting at the bottleneck."""
        return len(self._queue), self._queued_bytes

    @property
    def in_flight(self) -> int:
        """Packets past the bottleneck, in the delay line."""
        return len(self._line)

    def restart_schedule(self, now: float) -> None:
        """Start the schedule again at `now`, from its initial impairment."""
        self._advance(now)
        self._refill(now)
        self._epoch = now
        self._next_step = 0
        self._set(self._plan.initial)

    def push(self, now: float, frame: bytes, size: int) -> None:
        """A packet of `size` Ethernet bytes arrived at `now` (not earlier than any earlier call's)."""
        self._advance(now)
        c = self.counters
        c.packets_in += 1
        c.bytes_in += size
        if self._lost():
            return
        packet = _Packet(now, size, frame)
        if self.impairment.rate_kbps is None and not self._queue:
            self._to_line(now, packet)
            return
        if self._queue and self._queued_bytes + size > self.impairment.queue_limit_bytes():
            c.dropped["queue_full"] += 1
            return
        self._queue.append(packet)
        self._queued_bytes += size
        self._advance(now)

    def poll(self, now: float) -> list[bytes]:
        """The frames due to leave by `now`, in the order they leave."""
        self._advance(now)
        out: list[bytes] = []
        line = self._line
        c = self.counters
        while line and line[0][0] <= now:
            _, _, packet = heapq.heappop(line)
            out.append(packet.frame)
            c.packets_out += 1
            c.bytes_out += packet.size
            self.sojourn.record(now - packet.arrival)
        return out

    def unsent(self, size: int) -> None:
        """A packet `poll` handed out (`size` Ethernet bytes) could not be sent after all."""
        c = self.counters
        c.packets_out -= 1
        c.bytes_out -= size
        c.dropped["send_failed"] += 1

    def next_wakeup(self) -> float | None:
        """When something is next due: a step, a departure from the bottleneck or a release."""
        t = min(self._step_time(), self._head_departure())
        if self._line:
            t = min(t, self._line[0][0])
        return None if t == math.inf else t

    # The bottleneck, in virtual time: steps and departures are taken in time order up to `now`.
    def _advance(self, now: float) -> None:
        while True:
            step_t = self._step_time()
            departure = self._head_departure()
            if min(step_t, departure) > now:
                return
            if step_t <= departure:
                self._refill(step_t)
                self._set(self._plan.steps[self._next_step].impairment)
                self._next_step += 1
            else:
                self._depart(departure)

    def _step_time(self) -> float:
        steps = self._plan.steps
        return self._epoch + steps[self._next_step].at_s if self._next_step < len(steps) else math.inf

    def _set(self, impairment: Impairment) -> None:
        self.impairment = impairment
        self._tokens = min(self._tokens, impairment.burst_bytes)

    def _tokens_by(self, t: float) -> float:
        rate = self.impairment.rate_bytes_per_s
        if rate is None:
            return float(self.impairment.burst_bytes)
        return min(float(self.impairment.burst_bytes), self._tokens + (t - self._tokens_at) * rate)

    def _refill(self, t: float) -> None:
        self._tokens = self._tokens_by(max(t, self._tokens_at))
        self._tokens_at = max(t, self._tokens_at)

    def _head_departure(self) -> float:
        if not self._queue:
            return math.inf
        head = self._queue[0]
        start = max(head.arrival, self._tokens_at)
        rate = self.impairment.rate_bytes_per_s
        if rate is None:
            return start
        # A frame larger than the bucket leaves when the bucket is full and leaves it in debt.
        need = min(head.size, self.impairment.burst_bytes)
        tokens = self._tokens_by(start)
        return start if tokens >= need else start + (need - tokens) / rate

    def _depart(self, t: float) -> None:
        packet = self._queue.popleft()
        self._queued_bytes -= packet.size
        self._tokens = self._tokens_by(t) - packet.size
        self._tokens_at = t
        self.queue_delay.record(t - packet.arrival)
        self._to_line(t, packet)

    def _to_line(self, t: float, packet: _Packet) -> None:
        imp = self.impairment
        release = t + imp.delay_ms / 1000
        if imp.jitter_ms:
            release += self._rng.uniform(0, imp.jitter_ms / 1000)
        if not imp.reorder:
            release = max(release, self._last_release)
        self._last_release = max(self._last_release, release)
        self._seq += 1
        heapq.heappush(self._line, (release, self._seq, packet))

    def _lost(self) -> bool:
        imp = self.impairment
        rng = self._rng
        ge = imp.burst_loss
        if ge is not None:
            lost = rng.random() < (ge.bad_loss if self._bad else ge.good_loss)
            self._bad = rng.random() >= ge.r if self._bad else rng.random() < ge.p
            if lost:
                self.counters.dropped["burst_loss"] += 1
                return True
        if imp.loss_pct and rng.random() * 100 < imp.loss_pct:
            self.counters.dropped["random_loss"] += 1
            return True
        return False

    def stats(self) -> dict[str, Any]:
        c = self.counters
        packets, nbytes = self.queued
        return {
            "packets_in": c.packets_in,
            "bytes_in": c.bytes_in,
            "packets_out": c.packets_out,
            "bytes_out": c.bytes_out,
            "bypassed": c.bypassed,
            "dropped": dict(c.dropped),
            "queue": {"packets": packets, "bytes": nbytes},
            "in_delay_line": self.in_flight,
            "queue_delay_ms": self.queue_delay.summary_ms(),
            "sojourn_ms": self.sojourn.summary_ms(),
            "step": self.step,
            "impairment": _describe(self.impairment),
        }


def _describe(impairment: Impairment) -> dict[str, Any]:
    return {f.name.replace("_", "-"): _plain(getattr(impairment, f.name)) for f in fields(impairment)}


def _plain(value: object) -> object:
    if isinstance(value, BurstLoss):
        return {k.replace("_", "-"): v for k, v in asdict(value).items()}
    return value


def describe_config(config: RelayConfig) -> dict[str, Any]:
    """The configuration with every default filled in (what `--check` prints)."""
    out: dict[str, Any] = {"seed": config.seed}
    for name in DIRECTIONS:
        plan = config.plan(name)
        out[name] = {
            "initial": _describe(plan.initial),
            "steps": [{"at-s": s.at_s, **_describe(s.impairment)} for s in plan.steps],
        }
    return out


# --- the relay: packet sockets on asyncio ----------------------------------------------------------------


def open_packet_socket(ifname: str) -> socket.socket:
    """A raw packet socket on `ifname` that sees every frame arriving there (not those we send), each
    with its virtio-net header."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        # A frame's arrival is when the kernel took it, not when the loop got round to reading it.
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # Room for a few hundred milliseconds at tens of Mbit/s, should the loop stall.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
        sock.bind((ifname, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _socket_drops(sock: socket.socket) -> int:
    """Frames the kernel dropped on `sock` since the last call (reading the statistics resets them)."""
    try:
        _, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    except OSError:
        return 0
    return int(drops)


@dataclass(slots=True)
class _Side:
    """One direction as the relay runs it: read from `rx`, impair, write to `tx`."""

    direction: Direction
    rx: socket.socket
    tx: socket.socket
    timer: asyncio.TimerHandle | None = None
    timer_due: float = math.inf
    #: The latest time handed to its Direction: arrivals are never taken earlier.
    floor: float = -math.inf


def arrival_time(now: float, now_unix: float, ancdata: list[tuple[int, int, bytes]], floor: float) -> float:
    """A frame's arrival on the relay's clock: its kernel receive timestamp (`ancdata`, CLOCK_REALTIME)
    moved onto that clock by the current `now` / `now_unix` pair, within [floor, now]. A loop that stalls
    (a busy host) then delays frames as a real link's jitter would, instead of taking them all as arriving
    at once when it reads them, a burst the bottleneck's queue could drop."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(data)
            taken = float(sec) + float(nsec) / 1e9
            return min(now, max(floor, now - (now_unix - taken)))
    return max(floor, now)


class Relay:
    """The relay between interfaces `a` and `b` of this network namespace (see the module docstring)."""

    def __init__(
        self,
        config: RelayConfig,
        iface_a: str,
        iface_b: str,
        *,
        stats_path: Path | None = None,
        stats_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.ifaces = {"a": iface_a, "b": iface_b}
        self.stats_path = stats_path
        self.stats_interval = stats_interval
        self._clock = clock
        self._sides: list[_Side] = []
        self._buf = bytearray(MAX_FRAME + 1)
        self._view = memoryview(self._buf)
        self.started = 0.0
        self.started_unix = 0.0
        self.wakeups = 0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        a = open_packet_socket(self.ifaces["a"])
        try:
            b = open_packet_socket(self.ifaces["b"])
        except BaseException:
            a.close()
            raise
        rng = random.Random(self.config.seed)
        self.started = self._clock()
        self.started_unix = time.time()
        self._sides = [
            _Side(Direction("a-to-b", self.config.a_to_b, self.started, rng), a, b),
            _Side(Direction("b-to-a", self.config.b_to_a, self.started, rng), b, a),
        ]
        try:
            for side in self._sides:
                loop.add_reader(side.rx.fileno(), self._readable, side)
                self._arm(side)
            self.write_stats(final=False)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.stats_interval)
                self.write_stats(final=False)
        finally:
            for side in self._sides:
                loop.remove_reader(side.rx.fileno())
                if side.timer is not None:
                    side.timer.cancel()
            self.write_stats(final=True)
            a.close()
            b.close()

    def restart_schedule(self) -> None:
        now = self._clock()
        for side in self._sides:
            side.direction.restart_schedule(now)
            self._service(side, now)
        self.write_stats(final=False)  # the new epoch, at once

    def _readable(self, side: _Side) -> None:
        d = side.direction
        c = d.counters
        for _ in range(RECV_BATCH):
            try:
                n, ancdata, _, _ = side.rx.recvmsg_into([self._buf], ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                c.dropped["malformed"] += 1
                break
            now = side.floor = arrival_time(self._clock(), time.time(), ancdata, side.floor)
            size = n - VNET_HDR_LEN
            if size < ETH_HDR_LEN or n > MAX_FRAME:
                c.packets_in += 1
                c.dropped["malformed"] += 1
                continue
            frame = bytes(self._view[:n])
            if frame[VNET_HDR_LEN + 12 : VNET_HDR_LEN + 14] not in IMPAIRED_ETHERTYPES:
                c.bypassed += 1
                self._send(side, frame, bypass=True)
                continue
            d.push(now, frame, size)
        self._service(side, self._clock())

    def _send(self, side: _Side, frame: bytes, bypass: bool = False) -> None:
        try:
            side.tx.send(frame)
        except OSError:
            # A full qdisc (tbf under the relay) or socket buffer: the frame is lost, as on a real link.
            if bypass:
                side.direction.counters.dropped["send_failed"] += 1
            else:
                side.direction.unsent(len(frame) - VNET_HDR_LEN)

    def _service(self, side: _Side, now: float) -> None:
        side.floor = max(side.floor, now)
        for frame in side.direction.poll(now):
            self._send(side, frame)
        self._arm(side)

    def _arm(self, side: _Side) -> None:
        due = side.direction.next_wakeup()
        if due is None:
            if side.timer is not None:
                side.timer.cancel()
                side.timer, side.timer_due = None, math.inf
            return
        if side.timer is not None and side.timer_due <= due:
            return
        if side.timer is not None:
            side.timer.cancel()
        loop = asyncio.get_running_loop()
        # Timers have millisecond resolution: round up rather than wake early and spin.
        delay = math.ceil(max(0.0, due - self._clock()) * 1000) / 1000
        side.timer = loop.call_later(delay, self._fire, side)
        side.timer_due = due

    def _fire(self, side: _Side) -> None:
        self.wakeups += 1
        side.timer, side.timer_due = None, math.inf
        self._service(side, self._clock())

    def stats(self, final: bool) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now = self._clock()
        directions: dict[str, Any] = {}
        for side in self._sides:
            side.direction.counters.dropped["socket_drops"] += _socket_drops(side.rx)
            directions[side.direction.name] = side.direction.stats()
        epoch = self._sides[0].direction.epoch if self._sides else self.started
        return {
            "pid": os.getpid(),
            "interfaces": self.ifaces,
            "final": final,
            "started_monotonic": self.started,
            "started_unix": self.started_unix,
            "schedule_epoch_monotonic": epoch,
            "now_monotonic": now,
            "elapsed_s": round(now - self.started, 3),
            "cpu_s": {"user": usage.ru_utime, "system": usage.ru_stime},
            "timer_wakeups": self.wakeups,
            "directions": directions,
        }

    def write_stats(self, final: bool) -> None:
        """Replaces the stats file whole, so a reader never sees half of one."""
        if self.stats_path is None or not self._sides:
            return
        tmp = self.stats_path.with_name(self.stats_path.name + ".tmp")
        tmp.write_text(json.dumps(self.stats(final), indent=1))
        os.replace(tmp, self.stats_path)


async def serve(relay: Relay, watch_parent: bool = False) -> None:
    """Runs `relay` until SIGTERM or SIGINT (or, with `watch_parent`, until our parent process is gone);
    SIGUSR1 restarts the schedule."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, relay.restart_schedule)
    parent_fd: int | None = None
    if watch_parent:
        # A pidfd turns readable when the process exits; an orphaned relay stops on its own.
        parent_fd = os.pidfd_open(os.getppid())
        loop.add_reader(parent_fd, stop.set)
    try:
        await relay.run(stop)
    finally:
        if parent_fd is not None:
            loop.remove_reader(parent_fd)
            os.close(parent_fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.impair",
        description="Impairment relay: a bump in the wire between two interfaces (see the module docstring).",
    )
    parser.add_argument("--a", help="interface a (a-to-b is what arrives here and leaves at b)")
    parser.add_argument("--b", help="interface b")
    parser.add_argument("--config", type=Path, help="TOML, or JSON if the name ends in .json")
    parser.add_argument("--stats", type=Path, help="JSON statistics file, replaced while running")
    parser.add_argument("--stats-interval", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument("--seed", type=int, help="overrides the configuration's seed")
    parser.add_argument("--watch-parent", action="store_true", help="exit when the parent process exits")
    parser.add_argument("--check", action="store_true", help="print the configuration, defaults filled in")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else RelayConfig()
    except ConfigError as e:
        print(f"impair: {e}", file=sys.stderr)
        return 2
    if args.seed is not None:
        config = replace(config, seed=args.seed)
    if args.check:
        print(json.dumps(describe_config(config), indent=2))
        return 0
    if not args.a or not args.b:
        parser.error("--a and --b are required")
    if not 0.05 <= args.stats_interval <= 60:
        parser.error("--stats-interval must be within [0.05, 60] seconds")
    relay = Relay(config, args.a, args.b, stats_path=args.stats, stats_interval=args.stats_interval)
    try:
        uvloop.run(serve(relay, args.watch_parent))
    except OSError as e:
        print(f"impair: {e} (interfaces {args.a}, {args.b})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
