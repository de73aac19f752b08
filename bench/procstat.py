"""What the kernel says about a process and about UDP: CPU time from /proc/<pid>/stat, drops from
/proc/net/snmp. Read between samples; each reading is a few hundred bytes of text."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """User and system CPU seconds a process has used so far."""

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system


def process_cpu(pid: int, proc: Path = Path("/proc")) -> CpuTimes:
    """CPU seconds of `pid` (all its threads). Raises ProcessLookupError once it has gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    # The command name is in parentheses and may hold spaces; fields resume after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return CpuTimes(utime / _TICKS, stime / _TICKS)


def machine_busy_seconds(stat: Path = Path("/proc/stat")) -> float:
    """CPU seconds all cores have spent busy since boot (the aggregate `cpu` line of proc(5), less idle
    and iowait). Compared with the bench's own processes, it shows what else ran during a step."""
    with stat.open() as f:
        first = f.readline().split()
    if not first or first[0] != "cpu":
        raise ValueError(f"{stat}: no aggregate cpu line")
    # user nice system idle iowait irq softirq steal (guest time is already inside user and nice)
    ticks = [int(v) for v in first[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICKS


@dataclass(frozen=True, slots=True)
class UdpCounters:
    """The kernel's UDP counters (RFC 4113 names) for this network namespace."""

    in_datagrams: int = 0
    out_datagrams: int = 0
    in_errors: int = 0
    rcvbuf_errors: int = 0
    sndbuf_errors: int = 0
    no_ports: int = 0

    @property
    def drops(self) -> int:
        """Datagrams the kernel dropped: full receive or send buffers, other input errors."""
        return self.in_errors + self.sndbuf_errors

    def __add__(self, other: UdpCounters) -> UdpCounters:
        return UdpCounters(
            self.in_datagrams + other.in_datagrams,
            self.out_datagrams + other.out_datagrams,
            self.in_errors + other.in_errors,
            self.rcvbuf_errors + other.rcvbuf_errors,
            self.sndbuf_errors + other.sndbuf_errors,
            self.no_ports + other.no_ports,
        )

    def __sub__(self, other: UdpCounters) -> UdpCounters:
        return UdpCounters(
            self.in_datagrams - other.in_datagrams,
            self.out_datagrams - other.out_datagrams,
            self.in_errors - other.in_errors,
            self.rcvbuf_errors - other.rcvbuf_errors,
            self.sndbuf_errors - other.sndbuf_errors,
            self.no_ports - other.no_ports,
        )


def parse_snmp(text: str) -> UdpCounters:
    """The `Udp:` header/value line pair of /proc/net/snmp (IPv4; loopback benches use IPv4)."""
    lines = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
    if len(lines) < 2:
        raise ValueError("no Udp: lines in snmp text")
    row = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:]), strict=True))
    return UdpCounters(
        in_datagrams=row.get("InDatagrams", 0),
        out_datagrams=row.get("OutDatagrams", 0),
        in_errors=row.get("InErrors", 0),
        rcvbuf_errors=row.get("RcvbufErrors", 0),
        sndbuf_errors=row.get("SndbufErrors", 0),
        no_ports=row.get("NoPorts", 0),
    )


def udp_counters(snmp: Path = Path("/proc/net/snmp")) -> UdpCounters:
    return parse_snmp(snmp.read_text())


def parse_udp_socket_drops(table: str) -> dict[str, int]:
    """Drops per socket inode from a /proc/net/udp or udp6 table (its last column)."""
    drops: dict[str, int] = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 13 and fields[-1].isdigit():
            drops[fields[9]] = int(fields[-1])
    return drops


def socket_inodes(pid: int) -> set[str]:
    """The inodes of process `pid`'s sockets (empty if it is gone or not ours to read)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def udp_socket_drops(*pids: int, net: Path = Path("/proc/net")) -> list[int]:
    """Datagrams the kernel dropped at each process's own UDP sockets (a full receive buffer), summed per
    process, from one reading of the socket tables: which side of a run lost what the namespace-wide
    counters count."""
    drops: dict[str, int] = {}
    for name in ("udp", "udp6"):
        try:
            drops |= parse_udp_socket_drops((net / name).read_text())
        except OSError:
            continue
    return [sum(drops.get(inode, 0) for inode in socket_inodes(pid)) for pid in pids]


def hardware() -> dict[str, object]:
    """CPU model, core count and memory, for the result header."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count() or 0,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": os.uname().release,
    }
