"""Network namespaces joined by veth pairs, with the impairment relay (bench/impair.py) in the middle.

A `Netlab` makes namespaces and links between them and removes all of it in `close()` (the `netlab`
fixture calls it; an atexit hook too). A link between namespaces A and B is one /24 of 10.77.K.0
(A has .1, B .2, on an interface vK in each); impaired, it runs through a third namespace where the relay
forwards frames between two veths as a bump in the wire, so A and B see each other's real addresses
(ICE candidates hold) and the relay sees every frame; unimpaired, it is one veth pair. `tbf` can cap a
direction's rate in the kernel instead of (or under) the relay. `default_route` makes one namespace the
router of another, for a hub (the bridge) with several impaired receivers.

Every namespace is named `sluice-t<pid>.<start>-<n><role>`: the creating process's PID and start time
(from /proc), so that a later Netlab removes what a crashed run left (its processes killed by PID first)
without touching a live run's. IPv6 is off in all of them (no DAD or router solicitations in the
measurements). Only namespaces made here carry 10.x addresses or test traffic.

`Netns.socket` makes a socket inside a namespace from this process (setns in a short-lived thread; a
socket stays in the namespace it was made in), so a test can send and receive there without a
subprocess; `PacedSender` and `Receiver` are the simple UDP probe the impairment tests measure with.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
NETNS_DIR = Path("/run/netns")
PREFIX = "sluice-t"
SUBNET = "10.77"
CLONE_NEWNET = 0x40000000
# Ethernet + IPv4 + UDP headers: what a UDP payload costs on the wire the relay and tbf count.
UDP_OVERHEAD = 14 + 20 + 8
NICE = shutil.which("nice") or "/usr/bin/nice"
#: The impairment relay's niceness (root may raise priority): see `Netlab._start_relay`.
RELAY_NICE = -10

T = TypeVar("T")
Direction = Literal["a-to-b", "b-to-a"]

_libc = ctypes.CDLL(None, use_errno=True)
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)\.(\d+)-")


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (proc(5) field 22): with the PID, it names one
    process even after the PID is reused."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()[19]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _namespace_pids(name: str) -> list[int]:
    out = _ip("netns", "pids", name, check=False).stdout
    return [int(p) for p in out.split()]


def _remove_namespace(name: str) -> None:
    """Kill what still runs in `name` (processes our runs started there), then delete it."""
    for pid in _namespace_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _ip("netns", "del", name, check=False)


def sweep_stale() -> list[str]:
    """Remove the namespaces of Netlabs whose process is gone; returns their names."""
    if not NETNS_DIR.is_dir():
        return []
    removed = []
    for name in sorted(os.listdir(NETNS_DIR)):
        match = _NAME.match(name)
        if match is None:
            continue
        pid, start = int(match.group(1)), match.group(2)
        if _start_time(pid) != start:
            _remove_namespace(name)
            removed.append(name)
    return removed


@dataclass(frozen=True, slots=True)
class Netns:
    name: str

    def exec_args(self, *cmd: str) -> list[str]:
        """`cmd` run inside this namespace (`ip netns exec` execs it: the PID is the command's)."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.exec_args(*cmd), capture_output=True, text=True, timeout=30, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(cmd)}: {result.stderr.strip()}")
        return result

    def ip(self, *args: str) -> None:
        _ip("-n", self.name, *args)

    def sysctl(self, key: str, value: str | int) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()` on a thread that has entered this namespace (setns is per thread); sockets it makes
        stay in the namespace."""
        result: list[T] = []
        error: list[BaseException] = []

        def target() -> None:
            try:
                fd = os.open(NETNS_DIR / self.name, os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        errno = ctypes.get_errno()
                        raise OSError(errno, f"setns({self.name}): {os.strerror(errno)}")
                    result.append(fn())
                finally:
                    os.close(fd)
            except BaseException as e:
                error.append(e)

        thread = threading.Thread(target=target, name=f"setns-{self.name}")
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        return self.call(lambda: socket.socket(family, kind))


@dataclass(slots=True)
class Link:
    """A and B on one /24; `mid` and `relay` when impaired."""

    index: int
    a: Netns
    b: Netns
    mid: Netns | None = None
    relay: subprocess.Popen[bytes] | None = None
    stats_path: Path | None = None
    log_path: Path | None = None

    @property
    def ifname(self) -> str:
        """The interface's name in A and in B."""
        return f"v{self.index}"

    @property
    def a_addr(self) -> str:
        return f"{SUBNET}.{self.index}.1"

    @property
    def b_addr(self) -> str:
        return f"{SUBNET}.{self.index}.2"

    def tbf(self, direction: Direction, rate_kbit: float, latency_ms: float = 50, burst: int = 3000) -> None:
        """A kernel rate cap on the way out towards the receiving side (under the relay when there is one)."""
        if self.mid is not None:
            ns, dev = self.mid, ("side-b" if direction == "a-to-b" else "side-a")
        else:
            ns, dev = (self.a if direction == "a-to-b" else self.b), self.ifname
        ns.run(
            "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
            "rate", f"{rate_kbit}kbit", "burst", str(burst), "latency", f"{latency_ms}ms",
        )  # fmt: skip

    def stats(self) -> dict[str, Any]:
        """The relay's statistics file as last written (see bench/impair.py)."""
        if self.stats_path is None:
            raise RuntimeError("this link has no relay")
        for _ in range(50):
            # Written by rename, so it is whole; a read racing the rename may see it missing.
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                data: dict[str, Any] = json.loads(self.stats_path.read_text())
                return data
            time.sleep(0.01)
        raise RuntimeError(f"{self.stats_path}: unreadable")

    def fresh_stats(self, timeout: float = 3.0) -> dict[str, Any]:
        """Statistics written after this call (the relay writes every stats interval)."""
        since = time.monotonic()
        deadline = since + timeout
        while time.monotonic() < deadline:
            stats = self.stats()
            if stats["now_monotonic"] >= since:
                return stats
            time.sleep(0.05)
        raise RuntimeError(f"relay statistics older than {timeout}s: {self.relay_log()}")

    def restart_schedule(self) -> float:
        """SIGUSR1: the relay's schedule starts again now; returns its new epoch (monotonic seconds)."""
        if self.relay is None:
            raise RuntimeError("this link has no relay")
        before = time.monotonic()
        os.kill(self.relay.pid, signal.SIGUSR1)
        deadline = before + 3
        while time.monotonic() < deadline:
            epoch = float(self.stats()["schedule_epoch_monotonic"])
            if epoch >= before:
                return epoch
            time.sleep(0.02)
        raise RuntimeError(f"the relay did not restart its schedule: {self.relay_log()}")

    def relay_log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop_relay(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """SIGTERM to the relay (SIGKILL after `timeout`); its final statistics, if it wrote them."""
        proc, self.relay = self.relay, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        if self.stats_path is not None and self.stats_path.exists():
            stats = self.stats()
            return stats if stats.get("final") else None
        return None


class Netlab:
    """Namespaces and links made for one test, all removed by `close()`."""

    def __init__(self, workdir: Path) -> None:
        if os.geteuid() != 0:
            raise PermissionError("network namespaces need root")
        sweep_stale()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._tag = f"{PREFIX}{os.getpid()}.{_start_time(os.getpid())}"
        self._counter = 0
        self.namespaces: list[Netns] = []
        self.links: list[Link] = []
        self._closed = False
        atexit.register(self.close)

    def namespace(self, role: str) -> Netns:
        """A new namespace (loopback up, IPv6 off); `role` is a short word for its name."""
        if not re.fullmatch(r"[a-z0-9]{1,12}", role):
            raise ValueError(f"role {role!r}: 1-12 of a-z, 0-9")
        self._counter += 1
        ns = Netns(f"{self._tag}-{self._counter}{role}")
        _ip("netns", "add", ns.name)
        self.namespaces.append(ns)
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        ns.ip("link", "set", "dev", "lo", "up")
        return ns

    def link(
        self,
        a: Netns,
        b: Netns,
        impair: Mapping[str, Any] | None = None,
        *,
        stats_interval: float = 0.2,
        ready_timeout: float = 10.0,
    ) -> Link:
        """Join A and B. With `impair` (bench/impair.py's configuration as a dict; {} impairs nothing
        but still relays), through a middle namespace and the relay, started and ready on return."""
        if len(self.links) >= 250:
            raise RuntimeError("at most 250 links per Netlab")
        link = Link(len(self.links), a, b)
        self.links.append(link)
        dev = link.ifname
        if impair is None:
            a.ip("link", "add", dev, "type", "veth", "peer", "name", dev, "netns", b.name)
        else:
            mid = link.mid = self.namespace(f"mid{link.index}")
            mid.sysctl("net.ipv4.ip_forward", 0)
            a.ip("link", "add", dev, "type", "veth", "peer", "name", "side-a", "netns", mid.name)
            b.ip("link", "add", dev, "type", "veth", "peer", "name", "side-b", "netns", mid.name)
            for side in ("side-a", "side-b"):
                mid.ip("link", "set", "dev", side, "up")
        a.ip("addr", "add", f"{link.a_addr}/24", "dev", dev)
        b.ip("addr", "add", f"{link.b_addr}/24", "dev", dev)
        a.ip("link", "set", "dev", dev, "up")
        b.ip("link", "set", "dev", dev, "up")
        if impair is not None:
            self._start_relay(link, impair, stats_interval, ready_timeout)
        return link

    def _start_relay(
        self, link: Link, impair: Mapping[str, Any], stats_interval: float, ready_timeout: float
    ) -> None:
        assert link.mid is not None
        config = self.workdir / f"impair{link.index}.json"
        config.write_text(json.dumps(impair))
        link.stats_path = self.workdir / f"impair{link.index}-stats.json"
        link.log_path = self.workdir / f"impair{link.index}.log"
        # The relay is the link: on a host whose browsers want more CPU than there is, a relay at their
        # priority paces late and a 3 Mbit/s link carries a third of that for a moment (probes measured
        # 282-447 kbit/s on one). `nice` execs, so the PID stays the relay's.
        cmd = [NICE, "-n", str(RELAY_NICE), *link.mid.exec_args(
            sys.executable, "-m", "bench.impair", "--a", "side-a", "--b", "side-b",
            "--config", str(config), "--stats", str(link.stats_path),
            "--stats-interval", str(stats_interval), "--watch-parent",
        )]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with link.log_path.open("wb") as log:
            link.relay = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while not link.stats_path.exists():
            if link.relay.poll() is not None:
                code = link.relay.returncode
                link.relay = None
                raise RuntimeError(f"the impairment relay exited with {code}: {link.relay_log()}")
            if time.monotonic() > deadline:
                link.stop_relay()
                raise RuntimeError(f"the relay was not ready in {ready_timeout}s: {link.relay_log()}")
            time.sleep(0.02)

    def default_route(self, ns: Netns, via: Link) -> None:
        """`ns` (one end of `via`) routes everything through the other end, which forwards."""
        if ns == via.a:
            gateway, gateway_addr = via.b, via.b_addr
        elif ns == via.b:
            gateway, gateway_addr = via.a, via.a_addr
        else:
            raise ValueError(f"{ns.name} is not an end of link {via.index}")
        gateway.sysctl("net.ipv4.ip_forward", 1)
        ns.ip("route", "replace", "default", "via", gateway_addr, "dev", via.ifname)

    def close(self) -> None:
        """Stop the relays, kill whatever else runs in our namespaces, delete them. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for link in self.links:
            with contextlib.suppress(Exception):
                link.stop_relay()
        for ns in reversed(self.namespaces):
            _remove_namespace(ns.name)


# --- reaching a namespace's loopback from this process -----------------------------------------------


class TcpForwarder:
    """Listens on this process's 127.0.0.1 and forwards each connection to `port` on `netns`'s loopback:
    chromedriver and a server's private API inside a namespace are reached without any interface of the
    namespace but its own `lo` (so nothing of the test's control traffic crosses an impaired link).
    Threads: one accepting, two per connection; `stop()` closes every socket and joins them."""

    def __init__(self, netns: Netns, port: int, *, host: str = "127.0.0.1", listen_port: int = 0) -> None:
        self.netns = netns
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", listen_port))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpForwarder:
        self._spawn(self._accept, "forward-accept")
        return self

    def _spawn(self, fn: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=fn, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            try:
                upstream = self.netns.call(lambda: socket.create_connection(self.target, timeout=5))
            except OSError:
                client.close()  # nothing listens there (yet): the caller sees a closed connection
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._stopped:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            self._spawn(functools.partial(self._pump, client, upstream), "forward-up")
            self._spawn(functools.partial(self._pump, upstream, client), "forward-down")

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            sockets, threads = list(self._sockets), list(self._threads)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in threads:
            if t is not threading.current_thread():
                t.join(5)


# --- a simple UDP probe --------------------------------------------------------------------------------

_HEADER = struct.Struct("!QQ")  # sequence number, send time (monotonic ns)


@dataclass(frozen=True, slots=True)
class Arrival:
    seq: int
    sent: float  # monotonic seconds (one clock for every namespace of the machine)
    received: float
    size: int  # the UDP payload's length


@dataclass(slots=True)
class Receiver:
    """Reads probe datagrams on `sock` on a thread until `stop()`; `arrivals` in the order they came."""

    sock: socket.socket
    arrivals: list[Arrival] = field(default_factory=list)
    malformed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Receiver:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, name="probe-receiver", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        buf = bytearray(65536)
        while not self._stop.is_set():
            try:
                n = self.sock.recv_into(buf)
            except TimeoutError:
                continue
            now = time.monotonic()
            if n < _HEADER.size:
                self.malformed += 1
                continue
            seq, sent_ns = _HEADER.unpack_from(buf)
            self.arrivals.append(Arrival(seq, sent_ns / 1e9, now, n))

    def stop(self, linger: float = 0.0) -> list[Arrival]:
        """Wait `linger` seconds for stragglers, then stop; returns the arrivals."""
        time.sleep(linger)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self.arrivals


@dataclass(frozen=True, slots=True)
class Sent:
    count: int
    start: float
    end: float


def send_paced(
    sock: socket.socket,
    dest: tuple[str, int],
    *,
    rate_kbps: float,
    payload: int = 1200,
    count: int | None = None,
    duration: float | None = None,
) -> Sent:
    """Probe datagrams of `payload` bytes at `rate_kbps` counted on the wire (Ethernet, IPv4 and UDP
    headers included, as the relay counts), evenly spaced, until `count` are sent or `duration` passed."""
    if (count is None) == (duration is None):
        raise ValueError("give count or duration")
    if payload < _HEADER.size:
        raise ValueError(f"payload must hold the {_HEADER.size}-byte header")
    interval = (payload + UDP_OVERHEAD) * 8 / (rate_kbps * 1000)
    filler = bytes(payload - _HEADER.size)
    start = time.monotonic()
    end_by = start + duration if duration is not None else None
    seq = 0
    while (count is None or seq < count) and (end_by is None or time.monotonic() < end_by):
        due = start + seq * interval
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sock.sendto(_HEADER.pack(seq, time.monotonic_ns()) + filler, dest)
        seq += 1
    return Sent(seq, start, time.monotonic())


def wire_kbps(arrivals: Sequence[Arrival], start: float, end: float) -> float:
    """The rate, on the wire as the relay counts, of the arrivals received within [start, end)."""
    bits = sum((a.size + UDP_OVERHEAD) * 8 for a in arrivals if start <= a.received < end)
    return bits / (end - start) / 1000
