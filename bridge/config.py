"""Bridge configuration with documented defaults (jvb.conf's names where they exist)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class BridgeConfig:
    """Media settings of one bridge process."""

    #: The UDP port of the first shard, shared by its endpoints (jvb.conf `videobridge.ice.udp.port`); shard
    #: i binds this + i (0: each an ephemeral port).
    udp_port: int = 10000
    #: Local addresses to bind the UDP port on. IPv4 and IPv6 wildcards by default.
    bind_addresses: list[str] = field(default_factory=lambda: ["0.0.0.0"])
    #: Addresses put in candidates (what peers can reach). Empty: the bound addresses, wildcards resolved
    #: to loopback, which is right only for one machine.
    advertised_addresses: list[str] = field(default_factory=list)
    #: STUN servers (host, port) asked at start for the public address of each bound one; a public address
    #: other than the bound one is advertised too (the "bridge behind a 1:1 NAT" deployment).
    stun_mapping_servers: list[tuple[str, int]] = field(default_factory=list)
    #: ICE-TCP (RFC 6544): the TCP port of the bridge's passive candidates (jvb.conf
    #: `videobridge.ice.tcp.port` when `enabled`); None: no ICE-TCP. For clients whose UDP is blocked and who
    #: have no TURN.
    ice_tcp_port: int | None = None
    #: The port advertised in the TCP candidates when a NAT or load balancer maps another one to it
    #: (`videobridge.ice.tcp.mapped-port`); None: `ice_tcp_port`.
    ice_tcp_mapped_port: int | None = None
    #: Open ICE-TCP connections at most (also 64 per source IP); more are refused and counted.
    ice_tcp_max_connections: int = 1024
    #: Shards: media threads, each with its own sockets on port `udp_port` + its index (and
    #: `ice_tcp_port` + its index); each conference is placed on one (bridge/placement.py).
    shards: int = 1
    #: The CPU each shard's thread is pinned to (one per shard); the process's other threads then keep off
    #: them when another CPU is theirs. None: the kernel places every thread.
    shard_cpus: list[int] | None = None
    #: UDP GSO for each receiver's runs of equal-size packets in a send batch (the packet path turns it off
    #: by itself where the kernel refuses it).
    gso: bool = True
    #: Where each transport's congestion-control trace is written (None: nowhere).
    cc_trace_dir: str | None = None
    #: Each receiver's send-side estimate before its first feedback, bit/s (None: the packet path's 2.5M;
    #: `Settings` gives 300k).
    cc_initial_estimate_bps: int | None = None
    #: Pace each receiver's video to its estimate (the packet path's `cc::pacer`); on with trust-bwe.
    cc_pacing: bool = False
    #: Seconds a connected transport may go without consent before it fails (RFC 7675 fixes 30 s).
    consent_timeout_s: float = 30.0
