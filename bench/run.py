"""`sluice bench`: runs a scenario against the bridge and against the raw relay, in one invocation.

For each target (and each ramp step) the same emulated endpoints (native/loadgen, on their own threads)
are allocated, connected, made to send for the scenario's duration, and measured: the load generator
counts what arrived (loss, latency), /proc gives the target's CPU and the kernel's UDP drops, and for the
bridge its /metrics gives egress packets, syscall batches and seam crossings.

The load generator is bench._native (native/benchpy), which scripts/bootstrap.sh builds in a checkout;
the bridge's wheel does not carry it, so it is imported only when a bench starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench import janus, livekit
from bench.colibri import ColibriClient, LocalTransport, SourceSet
from bench.procstat import (
    CpuTimes,
    UdpCounters,
    hardware,
    machine_busy_seconds,
    process_cpu,
    udp_counters,
    udp_socket_drops,
)
from bench.scenario import Scenario
from bridge.bridge import process_threads

if TYPE_CHECKING:
    from bench._native import LoadGen, LoadGenStats
    from bench.peerlab import PeerLab
    from tests.helpers.netns import Netns

REPO = Path(__file__).resolve().parents[1]
RAW_RELAY = REPO / "native" / "target" / "release" / "raw_relay"
#: How often the raw relay prints its counters.
RAW_STATS_MS = 100


class BenchError(RuntimeError):
    """The bench could not run (a target did not start, endpoints did not connect)."""


class PeerUnsupported(BenchError):
    """Another SFU cannot take the scenario in the same form as Sluice: the step records why and goes on."""


@dataclass(frozen=True)
class Placement:
    """The CPUs the target's packet thread and the load generator run on (None: the kernel chooses).

    On one host the load generator reads what the target sends, and the kernel places a reader woken by a
    loopback send on the sender's CPU: unpinned, the generator preempts the target's packet thread in the
    middle of its batch, the other core idles, and the latency measured is that ping-pong. Each target
    (the bridge's shard, the raw relay) gets the last CPU; the generator the others. The bridge's other
    threads, which keep off its shard's CPU, run as SCHED_IDLE there (`_lower_control_plane`).
    """

    target_cpu: int | None = None
    loadgen_cpus: frozenset[int] | None = None

    @classmethod
    def split(cls) -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls()
        return cls(target_cpu=cpus[-1], loadgen_cpus=frozenset(cpus[:-1]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_cpu": self.target_cpu,
            "loadgen_cpus": None if self.loadgen_cpus is None else sorted(self.loadgen_cpus),
        }


def _set_process_affinity(cpus: set[int] | frozenset[int]) -> None:
    """Every thread of this process (threads started later inherit it from theirs)."""
    for tid, _ in process_threads():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cpus)


@contextlib.contextmanager
def _pinned(cpus: frozenset[int] | None) -> Any:
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    _set_process_affinity(cpus)
    try:
        yield
    finally:
        _set_process_affinity(before)


def _passes(scenario: Scenario, step: dict[str, Any]) -> bool:
    """Whether the bridge's run of a step is within the scenario's loss and median-latency limits."""
    bridge = step["bridge"]
    return scenario.passes(bridge["loss_pct"], (bridge.get("latency_us") or {}).get("p50"))


def _loadgen_class() -> type[LoadGen]:
    try:
        from bench import _native  # noqa: PLC0415
    except ImportError as exc:
        raise BenchError(
            f"the load generator (bench._native) is missing: {exc}; run scripts/bootstrap.sh in a checkout"
        ) from exc
    return _native.LoadGen


# ---- targets: what the load goes through


@dataclass
class Sample:
    """One second of a run."""

    t: float
    cpu_cores: float
    egress_pps: float
    received_pps: float
    loss_pct: float
    latency_p99_us: float | None


@dataclass
class Counters:
    """Cumulative counters of a target at one instant (None where the target does not have them)."""

    at: float
    cpu: CpuTimes | None
    udp: UdpCounters
    packets_out: int | None = None
    packets_in: int | None = None
    seam: int | None = None
    recv_calls: int | None = None
    recv_packets: int | None = None
    send_calls: int | None = None
    send_packets: int | None = None
    #: Messages the bridge sent as one UDP GSO send of several datagrams.
    gso_sends: int | None = None
    #: Packets the bridge did not forward to a receiver by its allocation (another layer, lastN, ...).
    filtered: int | None = None
    #: Per bridge shard (by index): its thread's CPU seconds, packets sent, conferences held.
    shards: dict[str, ShardCounters] | None = None
    #: Packets the bridge dropped, by reason (`filtered` among them).
    drops: dict[str, int] | None = None
    #: Datagrams the kernel dropped at the target's own UDP sockets, and at this process's (the load
    #: generator's): where the namespace-wide `udp` drops happened.
    target_socket_drops: int | None = None
    own_socket_drops: int = 0


@dataclass(frozen=True, slots=True)
class ShardCounters:
    cpu_s: float
    packets_out: int
    conferences: int


class Target:
    name = "target"
    pid: int | None = None
    #: Where the load generator's endpoints bind (each its own socket unless on loopback).
    loadgen_bind_ip = "127.0.0.1"

    async def counters(self) -> Counters:
        cpu = None
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                cpu = process_cpu(self.pid)
        if self.pid is None:
            (own,), target = udp_socket_drops(os.getpid()), None
        else:
            own, target = udp_socket_drops(os.getpid(), self.pid)
        return Counters(
            at=time.monotonic(),
            cpu=cpu,
            udp=udp_counters(),
            target_socket_drops=target,
            own_socket_drops=own,
        )


class BridgeTarget(Target):
    """A bridge reached through its private HTTP API: started here (`sluice bridge`) or given by URL."""

    name = "bridge"

    def __init__(self, url: str, session: aiohttp.ClientSession, pid: int | None) -> None:
        self.url = url.rstrip("/")
        self.session = session
        self.pid = pid
        self.colibri = ColibriClient(self.url, session)

    async def counters(self) -> Counters:
        base = await super().counters()
        async with self.session.get(f"{self.url}/metrics") as resp:
            text = await resp.text()
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                values[(s.name, tuple(sorted(s.labels.items())))] = s.value

        def get(name: str, **labels: str) -> int | None:
            v = values.get((name, tuple(sorted(labels.items()))))
            return int(v) if v is not None else None

        base.packets_out = get("sluice_packets_sent_total")
        base.packets_in = get("sluice_packets_received_total")
        commands, events = get("sluice_seam_commands_total"), get("sluice_seam_events_total")
        base.seam = commands + events if commands is not None and events is not None else None
        base.recv_calls = get("sluice_io_syscalls_total", op="recvmmsg")
        base.recv_packets = get("sluice_io_packets_total", op="recvmmsg")
        base.send_calls = get("sluice_io_syscalls_total", op="sendmmsg")
        base.send_packets = get("sluice_io_packets_total", op="sendmmsg")
        base.gso_sends = get("sluice_io_gso_total", event="sends")
        base.drops = {
            dict(labels).get("reason", ""): int(value)
            for (name, labels), value in values.items()
            if name == "sluice_packets_dropped_total"
        }
        base.filtered = base.drops.get("filtered", 0)
        base.shards = {
            labels[0][1]: ShardCounters(
                cpu_s=value,
                packets_out=get("sluice_shard_packets_total", shard=labels[0][1], direction="out") or 0,
                conferences=get("sluice_shard_conferences", shard=labels[0][1]) or 0,
            )
            for (name, labels), value in values.items()
            if name == "sluice_shard_cpu_seconds_total"
        }
        return base


class RawRelayTarget(Target):
    """native/loadgen's raw_relay: recvmmsg -> fan-out -> sendmmsg, no crypto, no parsing."""

    name = "raw-relay"

    def __init__(self, process: subprocess.Popen[str], address: tuple[str, int]) -> None:
        self.process = process
        self.pid = process.pid
        self.address = address
        # A fresh relay has relayed nothing until its first stats line says otherwise.
        self.last: dict[str, Any] = {
            "packets_out": 0,
            "packets_in": 0,
            "recv_calls": 0,
            "recv_packets": 0,
            "send_calls": 0,
            "send_packets": 0,
        }

    def _read_stats(self) -> None:
        # The relay prints a JSON line per --stats-ms; keep the newest without blocking.
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        while True:
            line = self.process.stdout.readline()
            if not line:
                break
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and "packets_out" in data:
                    self.last = data

    async def counters(self) -> Counters:
        # Stats lines come every STATS_MS: wait for one that postdates this call.
        await asyncio.sleep(RAW_STATS_MS * 1.5 / 1000)
        base = await super().counters()
        self._read_stats()
        if self.last:
            base.packets_out = int(self.last.get("packets_out", 0))
            base.packets_in = int(self.last.get("packets_in", 0))
            for key in ("recv_calls", "recv_packets", "send_calls", "send_packets"):
                if key in self.last:
                    setattr(base, key, int(self.last[key]))
        return base


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PeerTarget(Target):
    """Another SFU in its own network namespace (bench/peerlab.py); the load generator's sockets live in a
    second namespace, across a veth. Its egress is what the kernel counts leaving its namespace over UDP."""

    def __init__(self, url: str, http: aiohttp.ClientSession, pid: int, lg_ns: Netns, bind_ip: str) -> None:
        self.url = url
        self.http = http
        self.pid = pid
        self.lg_ns = lg_ns
        self.loadgen_bind_ip = bind_ip

    def create_endpoints(self, lg: LoadGen) -> Callable[..., list[Any]]:
        """`LoadGen.create_endpoints` with the sockets made in the load generator's namespace."""
        lg_ns = self.lg_ns

        def create(count: int, group: int, **role: Any) -> list[Any]:
            # Sockets made on a thread inside the namespace stay there.
            return lg_ns.call(lambda: lg.create_endpoints(count, group, **role))

        return create

    async def counters(self) -> Counters:
        assert self.pid is not None
        net = Path(f"/proc/{self.pid}/net")
        own_net = Path("/proc/thread-self/net")
        cpu = None
        with contextlib.suppress(ProcessLookupError):
            cpu = process_cpu(self.pid)
        theirs = udp_counters(net / "snmp")
        ours, (own_drops,) = self.lg_ns.call(
            lambda: (udp_counters(own_net / "snmp"), udp_socket_drops(os.getpid(), net=own_net))
        )
        (target_drops,) = udp_socket_drops(self.pid, net=net)
        return Counters(
            at=time.monotonic(),
            cpu=cpu,
            udp=theirs + ours,
            packets_out=theirs.out_datagrams,
            packets_in=theirs.in_datagrams,
            target_socket_drops=target_drops,
            own_socket_drops=own_drops,
        )


class JanusTarget(PeerTarget):
    name = "janus"

    def __init__(
        self, url: str, http: aiohttp.ClientSession, server: janus.JanusServer, lab: PeerLab
    ) -> None:
        super().__init__(url, http, server.pid, lab.loadgen, lab.loadgen_ip)
        self.server = server


class LiveKitTarget(PeerTarget):
    name = "livekit"

    def __init__(self, url: str, http: aiohttp.ClientSession, server: livekit.LiveKitServer, lab: PeerLab):
        super().__init__(url, http, server.pid, lab.loadgen, lab.loadgen_ip)
        self.server = server


@contextlib.asynccontextmanager
async def started_janus_target(http: aiohttp.ClientSession, cpu: int | None) -> AsyncIterator[JanusTarget]:
    try:
        async with janus.started_janus(http, cpu) as (url, server, lab):
            yield JanusTarget(url, http, server, lab)
    except janus.JanusError as exc:
        raise BenchError(f"janus: {exc}") from exc


@contextlib.asynccontextmanager
async def started_livekit_target(
    http: aiohttp.ClientSession, cpu: int | None
) -> AsyncIterator[LiveKitTarget]:
    try:
        async with livekit.started_livekit(http, cpu) as (url, server, lab):
            yield LiveKitTarget(url, http, server, lab)
    except livekit.LiveKitError as exc:
        raise BenchError(f"livekit: {exc}") from exc


#: What a snapshot's `receive` holds that is a count of streams now, not of events: kept as it is.
_GAUGES = frozenset({"streams", "video_streams"})
#: Loadgen snapshot counts that a window (`window`) takes as differences.
_WINDOWED = ("expected", "received", "unexpected", "lost", "lost_gap", "duplicates", "reordered", "late")


def window(final: LoadGenStats, base: LoadGenStats) -> LoadGenStats:
    """The load generator's counts between two snapshots, for a run whose measurement starts after the
    endpoints started sending (LiveKit: see bench/livekit.py). Latency comes from `final` (reset when the
    window opened). Packets in flight when it opened arrive inside it: loss can read low by those (about
    one packet per stream at this latency), never high."""
    out: dict[str, Any] = dict(final)
    for key in _WINDOWED:
        out[key] = final[key] - base[key]  # type: ignore[literal-required]
    out["lost"] = max(0, out["lost"])
    for part in ("totals", "receive"):
        now: dict[str, Any] = dict(final[part])
        before: dict[str, Any] = dict(base[part])
        out[part] = {
            k: v - before.get(k, 0) if isinstance(v, int | float) and k not in _GAUGES else v
            for k, v in now.items()
        }
    out["loss_ratio"] = out["lost"] / out["expected"] if out["expected"] else 0.0
    return out  # type: ignore[return-value]


@contextlib.asynccontextmanager
async def started_bridge(
    session: aiohttp.ClientSession, shard_cpu: int | None, gso: bool = True, shards: int = 1
) -> AsyncIterator[BridgeTarget]:
    """`sluice bridge` on loopback with its private API on a free port and `shards` shards (a pinned one on
    `shard_cpu`); stopped by PID afterwards."""
    if shard_cpu is not None and shards != 1:
        raise BenchError("only a single shard is pinned")
    port = _free_tcp_port()
    shard = f"[videobridge.shard]\ncount = {shards}\n" + (
        f"cpu = {shard_cpu}\n" if shard_cpu is not None else ""
    )
    shard += f"gso = {'true' if gso else 'false'}\n"
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        config = Path(tmp) / "bridge.toml"
        config.write_text(
            '[videobridge.ice.udp]\nport = 0\nbind-addresses = ["127.0.0.1"]\n'
            f'[videobridge.http-servers.private]\nhost = "127.0.0.1"\nport = {port}\n'
            '[videobridge.stats]\ninterval = "1s"\n'
            # A bench outlives the default idle timeout only if nobody stops sending; keep it long.
            '[videobridge.entity-expiration]\ntimeout = "10min"\n'
            # The emulated receivers sit on loopback: the allocation gives them whatever their constraints
            # ask for (by default 180p, the lowest simulcast layer). With feedback on, the bridge estimates
            # each from its transport-cc feedback all the same; trust-bwe is off (on by default), so the
            # estimate is not what it allocates by and nothing is paced: the bench measures forwarding.
            '[videobridge.cc]\nreceiver-bandwidth = "10 Gbps"\ntrust-bwe = false\n'
            # The bridge channel, for scenarios whose receivers ask something.
            f'[videobridge.http-servers.public]\nhost = "127.0.0.1"\nport = {_free_tcp_port()}\n'
            "[videobridge.websockets]\nenabled = true\n" + shard
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        log_path = Path(tmp) / "bridge.log"
        log_fd = _log_file(log_path)
        try:
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "sluice.cli", "bridge", "--config", str(config)),
                cwd=REPO,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_fd,
            )
        finally:
            os.close(log_fd)  # the child has its own copy
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                if proc.returncode is not None:
                    raise BenchError(
                        f"the bridge exited with {proc.returncode}: {log_path.read_text()[-2000:]}"
                    )
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/about/health") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise BenchError("the bridge did not become healthy within 20 s")
                await asyncio.sleep(0.1)
            if shard_cpu is not None:
                _lower_control_plane(proc.pid)
            yield BridgeTarget(url, session, proc.pid)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


def _lower_control_plane(pid: int) -> None:
    """Gives the bridge's threads but its shard the lowest priority (SCHED_IDLE).

    With its shard pinned the bridge keeps its other threads off the shard's CPU, which leaves them on the
    load generator's: there its stats and scrapes must not delay the instrument that measures it. The shard
    keeps its priority; threads the bridge starts later inherit the policy. Not nice 19: a running nice-19
    thread still finishes its slice before a woken generator thread runs (EEVDF), and in the ramp the
    bridge's p99 was 1.3-1.8x the raw relay's at 18-24 meetings of 8 where with SCHED_IDLE it was 1.15-1.3
    (once 1.59).
    """
    for tid, shard in process_threads(pid):
        if not shard:
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))


def _log_file(path: Path) -> int:
    """A write-only descriptor for a child's stderr."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


@contextlib.contextmanager
def started_raw_relay(cpu: int | None) -> Any:
    if not RAW_RELAY.exists():
        raise BenchError(f"{RAW_RELAY} is missing: run scripts/bootstrap.sh (it builds the raw relay)")
    proc = subprocess.Popen(
        [str(RAW_RELAY), "--bind", "127.0.0.1:0", "--stats-ms", str(RAW_STATS_MS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if cpu is not None:
            os.sched_setaffinity(proc.pid, {cpu})  # one thread: as the bridge's shard
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        host, _, port = str(first["listening"]).rpartition(":")
        yield RawRelayTarget(proc, (host, int(port)))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- one run


@dataclass(frozen=True, slots=True)
class TurnServer:
    """A TURN server the scenario's `[turn]` endpoints relay through (`sluice bench` starts a coturn), with
    credentials for it; `pid` (when known) for its CPU time."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    pid: int | None = None

    def credentials(self) -> tuple[str, int, str, str]:
        return (self.host, self.port, self.username, self.password)


@dataclass
class RunResult:
    target: str
    scenario: Scenario
    duration_s: float
    loadgen: LoadGenStats
    before: Counters
    after: Counters
    loadgen_cpu_cores: float
    #: All cores' busy time over the run, in cores: the target, the load generator and everything else.
    machine_cpu_cores: float | None = None
    series: list[Sample] = field(default_factory=list)
    #: Endpoints that reached the bridge through TURN, and the TURN server's CPU over the run, in cores.
    relayed_endpoints: int = 0
    relay_cpu_cores: float | None = None

    def cpu_us_per_loadgen_packet(self) -> dict[str, float | None]:
        """CPU per packet the load generator sent or received (µs): its own, the target's, the TURN
        server's, and the whole machine's."""
        totals = self.loadgen["totals"]
        packets = totals["sent_packets"] + self.loadgen["received"]
        elapsed = self.after.at - self.before.at
        target = self._target_cpu_seconds()

        def us(cores: float | None, seconds: float) -> float | None:
            return round(cores * seconds * 1e6 / packets, 3) if cores is not None and packets else None

        return {
            "loadgen": us(self.loadgen_cpu_cores, self.duration_s),
            "target": us(target / elapsed if target is not None else None, elapsed),
            "turn_server": us(self.relay_cpu_cores, self.duration_s),
            "machine": us(self.machine_cpu_cores, elapsed),
        }

    def _target_cpu_seconds(self) -> float | None:
        """The target process's CPU seconds over the run (None where it has no PID to read)."""
        if self.after.cpu is None or self.before.cpu is None:
            return None
        return self.after.cpu.total - self.before.cpu.total

    def _shards(self) -> list[dict[str, Any]] | None:
        """Each bridge shard over the run: its cores, egress packets per second, conferences at the end."""
        before, after = self.before.shards, self.after.shards
        if not before or not after:
            return None
        elapsed = self.after.at - self.before.at
        out = []
        for index in sorted(after, key=int):
            a, b = after[index], before.get(index, ShardCounters(0.0, 0, 0))
            out.append(
                {
                    "shard": int(index),
                    "cpu_cores": round((a.cpu_s - b.cpu_s) / elapsed, 3),
                    "egress_pps": round((a.packets_out - b.packets_out) / self.duration_s),
                    "conferences": a.conferences,
                }
            )
        return out

    def _drops(self) -> dict[str, int] | None:
        """What the bridge dropped over the run, by reason (only reasons that rose; None: not a bridge)."""
        before, after = self.before.drops, self.after.drops
        if before is None or after is None:
            return None
        rose = {reason: count - before.get(reason, 0) for reason, count in after.items()}
        return {reason: n for reason, n in sorted(rose.items()) if n > 0}

    def _delta(self, name: str) -> int | None:
        a, b = getattr(self.after, name), getattr(self.before, name)
        return a - b if a is not None and b is not None else None

    def summary(self) -> dict[str, Any]:
        s, lg = self.scenario, self.loadgen
        rx, totals = lg["receive"], lg["totals"]
        elapsed = self.after.at - self.before.at
        egress = self._delta("packets_out")
        cpu_s = self._target_cpu_seconds()
        latency, at_socket = lg["latency"], lg["latency_socket"]
        expected, lost = lg["expected"], lg["lost"]
        seam = self._delta("seam")
        filtered = self._delta("filtered")
        send_calls, send_packets = self._delta("send_calls"), self._delta("send_packets")
        gso_sends = self._delta("gso_sends")
        recv_calls, recv_packets = self._delta("recv_calls"), self._delta("recv_packets")
        udp = self.after.udp - self.before.udp

        def us(ns: int | None) -> float | None:
            return round(ns / 1000, 1) if ns is not None and latency["count"] else None

        def socket_us(ns: int | None) -> float | None:
            return round(ns / 1000, 1) if ns is not None and at_socket["count"] else None

        return {
            "target": self.target,
            "publishers": s.publishers,
            "subscribers": s.subscribers,
            "conferences": s.conferences,
            "endpoints": s.conferences * s.endpoints_per_conference,
            "duration_s": round(elapsed, 2),
            "offered_egress_pps": round(s.expected_egress_pps()),
            "egress_pps": round(egress / self.duration_s) if egress is not None else None,
            "received_pps": round(lg["received"] / max(self.duration_s, 1e-9)),
            "payload_bytes_per_s": round(totals["recv_bytes"] / max(self.duration_s, 1e-9)),
            "cpu_cores": round(cpu_s / elapsed, 3) if cpu_s is not None else None,
            "cpu_us_per_egress_packet": round(cpu_s * 1e6 / egress, 3)
            if cpu_s is not None and egress
            else None,
            "loadgen_cpu_cores": round(self.loadgen_cpu_cores, 3),
            # What neither the target nor the load generator used: other jobs competing for the cores.
            "other_cpu_cores": round(self.machine_cpu_cores - self.loadgen_cpu_cores - cpu_s / elapsed, 3)
            if self.machine_cpu_cores is not None and cpu_s is not None
            else None,
            "expected_packets": expected,
            "received_packets": lg["received"],
            "lost_packets": lost,
            "loss_pct": round(100 * lost / expected, 4) if expected else None,
            "duplicates": lg["duplicates"],
            "reordered": lg["reordered"],
            # Per received ssrc, what a browser would see: gaps in RTP sequence numbers, simulcast layer
            # switches (and those not at a keyframe), video freezes; keyframes sent and asked for.
            "receive": {
                # Selection: copies not forwarded (per packet and receiver), and video streams per receiver.
                "filtered_pps": round(filtered / self.duration_s) if filtered is not None else None,
                "video_streams_per_receiver": round(rx["video_streams"] / max(s.subscribers, 1), 2),
                "rtp_seq_gaps": rx["seq_gaps"],
                "layer_switches": rx["layer_switches"],
                "switches_off_keyframe": rx["switches_off_keyframe"],
                "freezes": rx["freezes"],
                "freeze_s": round(rx["freeze_ns"] / 1e9, 3),
                "keyframes_sent": totals["keyframes_sent"],
                "keyframe_requests": totals["pli_received"] + totals["fir_received"],
                "vp8_invalid": totals["vp8_invalid"],
            },
            "latency_us": {
                "p50": us(latency["p50_ns"]),
                "p99": us(latency["p99_ns"]),
                "p999": us(latency["p999_ns"]),
                "max": us(latency["max_ns"]),
            },
            # Up to the kernel's queueing on the receiving socket: without the load generator's own
            # delay in reading what arrived, which a busy single-threaded generator adds to both targets.
            "latency_at_socket_us": {
                "p50": socket_us(at_socket["p50_ns"]),
                "p99": socket_us(at_socket["p99_ns"]),
                "p999": socket_us(at_socket["p999_ns"]),
            },
            "kernel_udp_drops": {
                "rcvbuf_errors": udp.rcvbuf_errors,
                "sndbuf_errors": udp.sndbuf_errors,
                "in_errors": udp.in_errors,
                # Receive-buffer drops at the target's sockets and at the load generator's.
                "at_target": self._delta("target_socket_drops"),
                "at_loadgen": self._delta("own_socket_drops"),
            },
            "seam_crossings_per_packet": round(seam / egress, 6) if seam is not None and egress else None,
            "shards": self._shards(),
            "bridge_drops": self._drops(),
            "packets_per_sendmmsg": round(send_packets / send_calls, 2)
            if send_calls and send_packets
            else None,
            # UDP GSO: messages that carried several datagrams, per second.
            "gso_sends_per_s": round(gso_sends / self.duration_s) if gso_sends is not None else None,
            "packets_per_recvmmsg": round(recv_packets / recv_calls, 2)
            if recv_calls and recv_packets
            else None,
            # What the endpoints did about feedback (all zero with it off, and against the raw relay):
            # receivers' transport-cc feedback and NACKs, what came back of what they asked for; senders'
            # answers to the bridge's NACKs (which pass receivers' NACKs on, and add its own).
            "feedback": {
                "enabled": s.media.feedback and self.target != "raw-relay",
                "transport_cc_sent": totals["feedback_sent"],
                "transport_cc_received": totals["feedback_received"],
                "nacks_sent": totals["nacks_sent"],
                "nack_seqs_sent": totals["nack_seqs_sent"],
                "recovered": totals["recovered"],
                "rtx_received": totals["rtx_received"],
                "nacks_received": totals["nacks_received"],
                "nack_seqs_received": totals["nack_seqs_received"],
                "retransmits_sent": totals["retransmits_sent"],
                "retransmits_unknown": totals["retransmits_unknown"],
                "retransmits_limited": totals["retransmits_limited"],
                # Retransmissions forwarded to receivers that had the packet (refused as SRTP replays).
                "srtp_replays": totals["srtp_replays"],
            },
            "relayed_endpoints": self.relayed_endpoints,
            "turn_server_cpu_cores": round(self.relay_cpu_cores, 3)
            if self.relay_cpu_cores is not None
            else None,
            "loadgen_packets_per_send_call": lg["packets_per_send_call"],
            "loadgen_packets_per_recv_call": lg["packets_per_recv_call"],
            "failed_endpoints": lg["failed"],
        }


Progress = Callable[[str], None]


def _progress_line(target: str, elapsed: float, duration: float, sample: Sample | None) -> str:
    width = 24
    done = min(width, int(width * elapsed / duration)) if duration else width
    bar = "#" * done + "-" * (width - done)
    live = ""
    if sample is not None:
        live = (
            f"  egress {sample.egress_pps:>9,.0f} pps  cpu {sample.cpu_cores:4.2f}"
            f"  loss {sample.loss_pct:6.3f}%"
        )
    return f"\r{target:>9} [{bar}] {elapsed:5.1f}/{duration:.0f} s{live}"


def _sources(scenario: Scenario, lg: LoadGen, index: int, position: int) -> tuple[int | None, list[int]]:
    """The SSRCs endpoint `index` (the `position`th of its conference) sends: none for a receive-only one,
    else what the media asks for (audio only when it is unmuted)."""
    if position >= scenario.senders:
        return None, []
    m = scenario.media
    audio, video = lg.default_sources(index, m.video_ssrcs)
    return (audio if scenario.sends_audio(position) else None), (video if m.video_ssrcs else [])


def latency_warm_up(duration: float) -> float:
    """Seconds at the start of a run whose latency is not counted: 2 s, or a quarter of a short run."""
    return min(2.0, duration / 4)


class Channels:
    """The bridge channels (colibri websockets) of the bench's endpoints: each asks what the scenario's
    `[receive]` says, the screen sharer says its video is a desktop share; every message the bridge sends is
    read (and counted) so its queue never fills."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.received: Counter[str] = Counter()
        self._sockets: list[aiohttp.ClientWebSocketResponse] = []
        self._readers: list[asyncio.Task[None]] = []
        #: Per socket, how many sources the bridge last said it forwards (None: not said yet).
        self._forwarded: list[int | None] = []
        self._told = asyncio.Event()

    async def open(self, url: str, messages: list[dict[str, Any]]) -> None:
        ws = await self.session.ws_connect(url, heartbeat=None)
        self._sockets.append(ws)
        self._forwarded.append(None)
        self._readers.append(asyncio.create_task(self._read(ws, len(self._sockets) - 1)))
        for message in messages:
            await ws.send_str(json.dumps(message))

    async def settled(self, most: int, timeout: float = 20.0) -> None:
        """Until every receiver was told it gets at most `most` sources: its lastN took effect, so the
        run measures the allocation asked for, not the moment before it."""
        async with asyncio.timeout(timeout):
            while not all(n is not None and n <= most for n in self._forwarded):
                self._told.clear()
                await self._told.wait()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, index: int) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    body = json.loads(msg.data)
                    kind = str(body.get("colibriClass"))
                    self.received[kind] += 1
                    if kind == "ForwardedSources":
                        self._forwarded[index] = len(body["forwardedSources"])
                        self._told.set()

    async def close(self) -> None:
        for ws in self._sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


async def allocate_bridge(
    target: BridgeTarget,
    lg: LoadGen,
    scenario: Scenario,
    channels: Channels | None,
    turn: TurnServer | None = None,
) -> tuple[list[str], int]:
    """Allocates the scenario's conferences on the bridge through Colibri2 as Jicofo would (endpoint `lg<i>`
    for the load generator's endpoint i, its sources, its transport) and connects the endpoints; with
    `channels`, opens their bridge channels and asks what `[receive]` says. With `turn`, the endpoints
    `[turn]` names signal no candidate and reach the bridge through that TURN server (the bridge learns
    their relayed address from their first check). Returns the meeting ids and how many were relayed."""
    meetings = []
    relayed = 0
    for conf in range(scenario.conferences):
        meeting = f"bench-{uuid.uuid4()}"
        meetings.append(meeting)
        eps = lg.create_endpoints(scenario.endpoints_per_conference, conf)
        answers = {}
        feedback = scenario.media.feedback
        for i, ep in enumerate(eps):
            answers[ep["index"]] = await target.colibri.create_endpoint(
                meeting, f"lg{ep['index']}", first=i == 0, feedback=feedback
            )
        for i, ep in enumerate(eps):
            index = ep["index"]
            audio, video = _sources(scenario, lg, index, i)
            # With feedback each video layer has an RTX SSRC (an FID group), as browsers send.
            rtx = lg.default_rtx_sources(index, len(video)) if feedback and video else []
            lg.set_sources(index, audio, video, rtx)
            via_turn = turn is not None and scenario.turn is not None and scenario.turn.relayed(i)
            relayed += via_turn
            local = LocalTransport(
                ufrag=ep["ufrag"],
                pwd=ep["pwd"],
                fingerprint_hash=ep["fingerprint_hash"],
                fingerprint=ep["fingerprint"],
                candidates=() if via_turn else tuple((c["ip"], c["port"]) for c in ep["candidates"]),
                setup=ep["setup"],
            )
            await target.colibri.connect_endpoint(
                meeting, f"lg{index}", local, SourceSet(f"lg{index}", audio, tuple(video), tuple(rtx))
            )
            bt = answers[index]
            lg.connect(
                index,
                bt.ufrag,
                bt.pwd,
                [(ip, port, 2130706431, "host") for ip, port in bt.candidates],
                [(bt.fingerprint_hash, bt.fingerprint)],
                "actpass",
                turn.credentials() if via_turn and turn is not None else None,
            )
        receive = scenario.receive
        if receive is not None and channels is not None:
            sharer = eps[1]["index"] if receive.screen_share else None
            stage = f"lg{sharer}-v0" if sharer is not None else None
            for ep in eps:
                urls = answers[ep["index"]].web_sockets
                if not urls:
                    raise BenchError("the bridge advertised no colibri websocket for the bridge channel")
                messages = [receive.constraints(stage if ep["index"] != sharer else None)]
                if ep["index"] == sharer:
                    messages.append(
                        {
                            "colibriClass": "SourceVideoTypeMessage",
                            "sourceName": stage,
                            "videoType": "desktop",
                        }
                    )
                await channels.open(urls[0], messages)
    return meetings, relayed


def _allocate_raw(target: RawRelayTarget, lg: LoadGen, scenario: Scenario) -> None:
    host, port = target.address
    for conf in range(scenario.conferences):
        eps = lg.create_endpoints(scenario.endpoints_per_conference, conf)
        for i, ep in enumerate(eps):
            index = ep["index"]
            audio, video = _sources(scenario, lg, index, i)
            lg.set_sources(index, audio, video)
            lg.connect_raw(index, host, port)


async def run_once(
    target: Target,
    scenario: Scenario,
    *,
    threads: int,
    progress: Progress | None = None,
    turn: TurnServer | None = None,
) -> RunResult:
    m = scenario.media
    mode = "raw" if isinstance(target, RawRelayTarget) else "secure"
    lg = _loadgen_class()(
        threads=threads,
        bind_ip=target.loadgen_bind_ip,
        mode=mode,
        audio=m.audio,
        video=m.video_ssrcs > 0,
        video_bitrate_bps=int(m.video_kbps * 1000) or 1,
        fps=max(1, round(m.video_fps)),
        video_packet_size=m.video_packet_bytes,
        # The raw relay carries no RTCP: feedback is the bridge's alone (the load generator turns it off
        # in raw mode anyway).
        feedback=m.feedback and mode == "secure",
    )
    meetings: list[str] = []
    relayed = 0
    channels: Channels | None = None
    janus_api: janus.JanusApi | None = None
    participants: list[livekit.Participant] = []
    signalling: aiohttp.ClientSession | None = None
    sending_early = False
    try:
        if isinstance(target, JanusTarget):
            janus_api = janus.JanusApi(target.url, target.http)
            await janus_api.open()
            try:
                await janus.allocate_janus(
                    janus_api,
                    lg,
                    scenario,
                    target.create_endpoints(lg),
                    lambda index, position: _sources(scenario, lg, index, position),
                )
            except janus.Unsupported as exc:
                raise PeerUnsupported(str(exc)) from exc
            except janus.JanusError as exc:
                raise BenchError(f"janus: {exc}\n{target.server.log_tail()}") from exc
        elif isinstance(target, LiveKitTarget):
            # A WebSocket per participant: more than aiohttp's default 100 connections per session.
            signalling = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            try:
                await livekit.allocate_livekit(
                    url=target.url,
                    http=signalling,
                    server=target.server,
                    lg=lg,
                    scenario=scenario,
                    create=target.create_endpoints(lg),
                    sources=lambda index, position: _sources(scenario, lg, index, position),
                    participants=participants,
                )
            except livekit.Unsupported as exc:
                raise PeerUnsupported(str(exc)) from exc
            except (livekit.LiveKitError, TimeoutError, aiohttp.ClientError) as exc:
                raise BenchError(f"livekit: {exc!r}\n{target.server.log_tail()}") from exc
            # It made the tracks on their first packets: the load generator is already sending.
            sending_early = True
        elif isinstance(target, BridgeTarget):
            channels = Channels(target.session) if scenario.receive is not None else None
            meetings, relayed = await allocate_bridge(target, lg, scenario, channels, turn)
        elif isinstance(target, RawRelayTarget):
            _allocate_raw(target, lg, scenario)
        if not await asyncio.to_thread(lg.wait_connected, 30.0):
            raise BenchError(f"{lg.failed()} endpoints failed, {lg.connected()}/{lg.endpoints()} connected")
        if relayed:
            # What the load generator knows: an endpoint is relayed once its channel is bound.
            got = sum(1 for ep in lg.stats(detail=True)["endpoint_list"] if ep["relayed"] is not None)
            if got != relayed:
                raise BenchError(f"{relayed} endpoints should go through TURN, {got} do")
        receive = scenario.receive
        if (
            channels is not None
            and receive is not None
            and receive.last_n is not None
            and receive.last_n >= 0
        ):
            # lastN sources, plus the one on stage.
            try:
                await channels.settled(receive.last_n + (1 if receive.screen_share else 0))
            except TimeoutError:
                raise BenchError("the bridge did not apply every receiver's lastN within 20 s") from None
        own_cpu0 = process_cpu(os.getpid())
        relay_pid = turn.pid if turn is not None and relayed else None
        relay_cpu0 = process_cpu(relay_pid) if relay_pid is not None else None
        machine0 = machine_busy_seconds()
        base = lg.stats() if sending_early else None
        before = await target.counters()
        if base is None:
            lg.start()
        started = time.monotonic()
        series: list[Sample] = []
        last = before
        last_received, last_gaps = (base["received"], base["lost_gap"]) if base is not None else (0, 0)
        warm_up: float | None = latency_warm_up(scenario.duration)
        while (elapsed := time.monotonic() - started) < scenario.duration:
            if warm_up is not None and elapsed >= warm_up:
                # Every emulated encoder starts with a keyframe in the same frame interval, a burst no
                # call has; latency is measured after it (loss and CPU over the whole run).
                lg.reset_latency()
                warm_up = None
            next_stop = scenario.duration if warm_up is None else warm_up
            await asyncio.sleep(min(1.0, next_stop - elapsed))
            now = await target.counters()
            stats = lg.stats()
            dt = max(now.at - last.at, 1e-6)
            cpu = now.cpu.total - last.cpu.total if now.cpu and last.cpu else 0.0
            egress = (now.packets_out or 0) - (last.packets_out or 0)
            received = stats["received"] - last_received
            gaps = stats["lost_gap"] - last_gaps
            p99 = stats["latency"]["p99_ns"]
            sample = Sample(
                t=round(now.at - started, 2),
                cpu_cores=round(cpu / dt, 3),
                egress_pps=round(egress / dt) if now.packets_out is not None else round(received / dt),
                received_pps=round(received / dt),
                loss_pct=round(100 * gaps / max(received + gaps, 1), 4),
                latency_p99_us=round(p99 / 1000, 1) if p99 is not None else None,
            )
            series.append(sample)
            last, last_received, last_gaps = now, stats["received"], stats["lost_gap"]
            if progress is not None:
                progress(_progress_line(target.name, now.at - started, scenario.duration, sample))
        # Rates are over the sending time; the drain after it only lets packets in flight arrive.
        ran = time.monotonic() - started
        await asyncio.to_thread(lg.stop, 0.5)
        after = await target.counters()
        own_cpu1 = process_cpu(os.getpid())
        relay_cpu1 = process_cpu(relay_pid) if relay_pid is not None else None
        machine1 = machine_busy_seconds()
        final = lg.stats()
        if base is not None:
            final = window(final, base)
        return RunResult(
            target=target.name,
            scenario=scenario,
            duration_s=ran,
            loadgen=final,
            before=before,
            after=after,
            loadgen_cpu_cores=(own_cpu1.total - own_cpu0.total) / max(ran, 1e-6),
            machine_cpu_cores=(machine1 - machine0) / max(after.at - before.at, 1e-6),
            series=series,
            relayed_endpoints=relayed,
            relay_cpu_cores=(relay_cpu1.total - relay_cpu0.total) / max(ran, 1e-6)
            if relay_cpu0 is not None and relay_cpu1 is not None
            else None,
        )
    finally:
        if channels is not None:
            await channels.close()
        if janus_api is not None:
            await janus_api.close()
        for participant in participants:
            await participant.close()
        if signalling is not None:
            await signalling.close()
        lg.shutdown()
        if isinstance(target, BridgeTarget):
            for meeting in meetings:
                with contextlib.suppress(Exception):
                    await target.colibri.expire_conference(meeting)
        if progress is not None:
            progress("\n")


# ---- the whole bench


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=False
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _turn_step(direct: RunResult, relayed: RunResult) -> dict[str, Any]:
    """The same step through TURN against direct UDP: the relayed run's figures, and CPU per packet the load
    generator moved (µs) on each side: its own, the bridge's, the TURN server's and the whole machine's."""
    d, r = direct.cpu_us_per_loadgen_packet(), relayed.cpu_us_per_loadgen_packet()
    extra = r["machine"] - d["machine"] if r["machine"] is not None and d["machine"] is not None else None
    return {
        "relayed": relayed.summary(),
        "relayed_endpoints": relayed.relayed_endpoints,
        "cpu_us_per_packet": {"direct": d, "relayed": r},
        "extra_machine_us_per_packet": round(extra, 3) if extra is not None else None,
        "machine_cpu_ratio": round(r["machine"] / d["machine"], 3) if r["machine"] and d["machine"] else None,
    }


def _step(bridge: RunResult, raw: RunResult | None) -> dict[str, Any]:
    b = bridge.summary()
    step: dict[str, Any] = {"conferences": bridge.scenario.conferences, "bridge": b}
    if raw is not None:
        r = raw.summary()
        step["raw_relay"] = r
        bu, ru = b["cpu_us_per_egress_packet"], r["cpu_us_per_egress_packet"]
        step["cpu_per_packet_ratio"] = round(bu / ru, 3) if bu and ru else None
    step["series"] = {
        "bridge": [vars(s) for s in bridge.series],
        "raw_relay": [vars(s) for s in raw.series] if raw is not None else [],
    }
    step["latency_histogram_ns"] = bridge.loadgen["histogram"]
    return step


def _add_peers(step: dict[str, Any], runs: Sequence[RunResult], skipped: dict[str, str]) -> None:
    """The other SFUs' runs of a step, and every target side by side: egress packets per CPU-second (the
    target's own egress count over its process's CPU time), loss and latency; `skipped`: the peers that
    could not take the scenario, and why."""
    step["peers"] = {run.target: run.summary() for run in runs}
    step["peers_skipped"] = skipped
    for run in runs:
        step["series"][run.target] = [vars(s) for s in run.series]
    rows = {"sluice": step["bridge"], **({"raw-relay": step["raw_relay"]} if "raw_relay" in step else {})}
    rows |= step["peers"]
    table = {}
    for name, summary in rows.items():
        egress, cores = summary["egress_pps"], summary["cpu_cores"]
        table[name] = {
            "egress_pps": egress,
            "cpu_cores": cores,
            "egress_packets_per_cpu_second": round(egress / cores) if egress and cores else None,
            "loss_pct": summary["loss_pct"],
            "latency_p50_us": summary["latency_us"]["p50"],
            "latency_p99_us": summary["latency_us"]["p99"],
        }
    ours = table["sluice"]["egress_packets_per_cpu_second"]
    for name in step["peers"]:
        theirs = table[name]["egress_packets_per_cpu_second"]
        table[name]["sluice_advantage"] = round(ours / theirs, 2) if ours and theirs else None
    step["side_by_side"] = table


PEER_TARGETS: dict[
    str, Callable[[aiohttp.ClientSession, int | None], contextlib.AbstractAsyncContextManager[Target]]
] = {
    "janus": started_janus_target,
    "livekit": started_livekit_target,
}


async def run_bench(
    scenario: Scenario,
    *,
    url: str | None = None,
    pid: int | None = None,
    raw: bool = True,
    threads: int = 1,
    pin: bool = True,
    progress: Progress | None = None,
    turn: TurnServer | None = None,
    gso: bool = True,
    shards: int = 1,
    peers: Sequence[str] = (),
) -> dict[str, Any]:
    """Runs `scenario` (every ramp step) against the bridge and the raw relay; returns the JSON result.

    With `pin` and a bridge started here with one shard, each target's packet thread and the load generator
    get their own CPUs (`Placement`); a bridge at `url` is placed by whoever started it, and several shards
    by the kernel, so nothing is pinned then. A
    scenario with `[turn]` runs each step against the bridge a second time with those endpoints through
    `turn`, and reports what relaying cost against the direct run (`_turn_step`). Each of `peers` (another
    SFU: "janus") runs every step too, started here on the target's CPU, and the step's `side_by_side`
    compares them all by egress packets per CPU-second.
    """
    unknown = set(peers) - set(PEER_TARGETS)
    if unknown:
        raise BenchError(f"unknown target {sorted(unknown)}: the bench knows {', '.join(PEER_TARGETS)}")
    if scenario.turn is not None and turn is None:
        raise BenchError("the scenario has [turn]: give it a TURN server (`sluice bench` starts a coturn)")
    steps = [scenario.at(n) for n in scenario.ramp.steps()] if scenario.ramp else [scenario]
    _loadgen_class()  # before anything starts: a checkout without it fails here, clearly
    results: list[dict[str, Any]] = []
    place = Placement.split() if pin and url is None and shards == 1 else Placement()
    async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
        if url is None:
            target = await stack.enter_async_context(started_bridge(session, place.target_cpu, gso, shards))
        else:
            target = BridgeTarget(url, session, pid)
        peer_targets: list[Target] = []
        for name in peers:
            peer_targets.append(
                await stack.enter_async_context(PEER_TARGETS[name](session, place.target_cpu))
            )
        # After the targets started: a child inherits its parent's CPUs, and the bridge may use them all.
        stack.enter_context(_pinned(place.loadgen_cpus))
        for step in steps:
            bridge_run = await run_once(target, step, threads=threads, progress=progress)
            raw_run = None
            if raw:
                # A fresh relay per step: it learns members from their first datagram and never forgets
                # them, so a relay kept across steps would also fan out to the previous step's endpoints.
                with started_raw_relay(place.target_cpu) as relay:
                    raw_run = await run_once(relay, step, threads=threads, progress=progress)
            results.append(_step(bridge_run, raw_run))
            peer_runs, skipped = [], {}
            for peer in peer_targets:
                try:
                    peer_runs.append(await run_once(peer, step, threads=threads, progress=progress))
                except PeerUnsupported as exc:
                    skipped[peer.name] = str(exc)
            if peer_targets:
                _add_peers(results[-1], peer_runs, skipped)
            if scenario.turn is not None:
                relayed_run = await run_once(target, step, threads=threads, progress=progress, turn=turn)
                results[-1]["turn"] = _turn_step(bridge_run, relayed_run)
            if scenario.ramp and not _passes(scenario, results[-1]):
                break  # past the knee: more load only loses more (or queues more)
    passing = [r for r in results if _passes(scenario, r)]
    knee = max(passing, key=lambda r: r["bridge"]["egress_pps"] or 0, default=None)
    return {
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            "duration_s": scenario.duration,
            "loss_limit_pct": scenario.loss_limit_pct,
            "median_latency_limit_s": scenario.median_latency_limit_s,
            "senders_per_conference": scenario.senders,
            "receivers_per_conference": scenario.receivers,
            "media": dataclasses.asdict(scenario.media),
            "ramp": None if scenario.ramp is None else dataclasses.asdict(scenario.ramp),
        },
        "hardware": hardware(),
        "commit": _commit(),
        "loadgen_threads": threads,
        "placement": place.as_dict(),
        "shards": shards if url is None else None,
        "bridge_url": url,
        "steps": results,
        "knee": None
        if knee is None
        else {
            "conferences": knee["conferences"],
            "egress_pps": knee["bridge"]["egress_pps"],
            "loss_pct": knee["bridge"]["loss_pct"],
            "latency_p50_us": (knee["bridge"]["latency_us"] or {}).get("p50"),
            "cpu_per_packet_ratio": knee.get("cpu_per_packet_ratio"),
        },
        "passed": bool(passing) if scenario.ramp else bool(passing) and len(passing) == len(results),
    }
