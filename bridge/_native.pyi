# Typed stub of the PyO3 seam (native/py). Commands return at once; results come back as events.
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, Final, TypedDict

SRTP_PROFILES: Final[tuple[str, ...]]

# ---- the typed values Commands carry (native/py/src/seam.rs); built by bridge/seam.py

class MediaKind:
    AUDIO: ClassVar[MediaKind]
    VIDEO: ClassVar[MediaKind]

class CandidateType:
    """RFC 8445 5.1.1 candidate types."""

    HOST: ClassVar[CandidateType]
    SRFLX: ClassVar[CandidateType]
    PRFLX: ClassVar[CandidateType]
    RELAY: ClassVar[CandidateType]

class DtlsSetup:
    """RFC 4145 4 a=setup."""

    ACTIVE: ClassVar[DtlsSetup]
    PASSIVE: ClassVar[DtlsSetup]
    ACTPASS: ClassVar[DtlsSetup]

class HashFunction:
    """The fingerprint hash functions the native DTLS supports (RFC 8122 5)."""

    SHA_1: ClassVar[HashFunction]
    SHA_256: ClassVar[HashFunction]
    SHA_384: ClassVar[HashFunction]
    SHA_512: ClassVar[HashFunction]

class Fingerprint:
    """A remote DTLS fingerprint: the digest's bytes and the a=setup announced with it."""

    def __init__(self, hash: HashFunction, digest: bytes, setup: DtlsSetup) -> None: ...
    @property
    def hash(self) -> HashFunction: ...
    @property
    def digest(self) -> bytes: ...
    @property
    def setup(self) -> DtlsSetup: ...

class Candidate:
    """A remote ICE candidate for component 1 over UDP; the address crosses as its packed bytes."""

    def __init__(
        self, ip: IPv4Address | IPv6Address, port: int, priority: int, type: CandidateType
    ) -> None: ...
    @property
    def ip(self) -> IPv4Address | IPv6Address: ...
    @property
    def port(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def type(self) -> CandidateType: ...

class SsrcGroupSemantics:
    SIM: ClassVar[SsrcGroupSemantics]
    FID: ClassVar[SsrcGroupSemantics]

class SsrcGroup:
    def __init__(self, semantics: SsrcGroupSemantics, ssrcs: Sequence[int]) -> None: ...
    @property
    def semantics(self) -> SsrcGroupSemantics: ...
    @property
    def ssrcs(self) -> list[int]: ...

class Source:
    """A signalled Source: kind, every SSRC it sends, its SIM and FID groups intact, its name."""

    def __init__(
        self, kind: MediaKind, ssrcs: Sequence[int], groups: Sequence[SsrcGroup], name: str
    ) -> None: ...
    @property
    def kind(self) -> MediaKind: ...
    @property
    def ssrcs(self) -> list[int]: ...
    @property
    def groups(self) -> list[SsrcGroup]: ...
    @property
    def name(self) -> str: ...

class NativeEvent:
    """One event from a shard. `kind` says which fields are set."""

    # "transport_state": transport_id, state ("checking", "connected", "failed", "closed"), detail
    # "stats": request_id, stats ({"total": {..., "drops": {reason: n}}, "failures": {cause: n}, ...};
    #   drop reasons as in the README (e.g. "dtls_invalid"), failure causes "ice", "consent",
    #   "dtls_handshake", "dtls_fingerprint", "dtls_alert", "panic")
    # "command_failed": transport_id, detail (a command named an unknown transport, or was refused)
    kind: str
    transport_id: int
    state: str
    detail: str
    request_id: int
    ssrc: int
    stats: dict[str, object]

class NativeBridge:
    def __init__(self, bind_addresses: list[str], port: int) -> None: ...
    def local_addresses(self) -> list[tuple[str, int]]: ...
    # The bridge certificate's fingerprint: hash function and digest.
    def fingerprint(self) -> tuple[HashFunction, bytes]: ...
    def event_fd(self) -> int: ...
    def drain_events(self) -> list[NativeEvent]: ...
    # The conference's feedback SSRCs (Colibri2 jvb-a0, jvb-v0): the senders of all the bridge's own RTCP.
    def create_router(self, router_id: int, feedback_audio_ssrc: int, feedback_video_ssrc: int) -> None: ...
    def close_router(self, router_id: int) -> None: ...
    def create_transport(
        self, router_id: int, transport_id: int, ufrag: str, pwd: str, controlling: bool
    ) -> None: ...
    # Every announced fingerprint, each with its a=setup (any active one makes the remote the DTLS client).
    def connect_transport(
        self, transport_id: int, ufrag: str, pwd: str, fingerprints: Sequence[Fingerprint]
    ) -> None: ...
    def add_remote_candidates(self, transport_id: int, candidates: Sequence[Candidate]) -> None: ...
    # Every Source the transport sends, replacing the previous set.
    def set_sources(self, transport_id: int, sources: Sequence[Source]) -> None: ...
    def request_keyframe(self, transport_id: int, ssrc: int) -> None: ...
    def set_force_mute(self, transport_id: int, audio: bool, video: bool) -> None: ...
    def close_transport(self, transport_id: int) -> None: ...
    def get_stats(self, request_id: int) -> None: ...
    def shutdown(self) -> None: ...

class SrtpSession:
    """One direction of SRTP/SRTCP over the native implementation (for differential tests)."""

    def __init__(self, profile: str, key: bytes, salt: bytes) -> None: ...
    def protect_rtp(self, packet: bytes) -> bytes: ...
    def unprotect_rtp(self, packet: bytes) -> bytes: ...
    def protect_rtcp(self, packet: bytes) -> bytes: ...
    def unprotect_rtcp(self, packet: bytes) -> bytes: ...

class LoadGenCandidate(TypedDict):
    ip: str
    port: int
    priority: int
    type: str
    foundation: str

class LoadGenEndpoint(TypedDict):
    """One emulated endpoint's side, to put into its Colibri2 endpoint transport."""

    index: int
    group: int
    ufrag: str
    pwd: str
    fingerprint_hash: str  # "sha-256"
    fingerprint: str
    setup: str  # "active": we offer to be the DTLS client
    candidates: list[LoadGenCandidate]

class LoadGen:
    """Emulated endpoints (native/loadgen) on their own threads; no packet is handled under the GIL.

    mode "secure": ICE controlled, DTLS-SRTP to a bridge; mode "raw": clear RTP to the raw relay.
    Each receiver expects every stream of every other endpoint in its group (conference).
    """

    def __init__(
        self,
        *,
        threads: int = 1,
        bind_ip: str = "127.0.0.1",
        mode: str = "secure",
        audio: bool = True,
        video: bool = True,
        video_bitrate_bps: int = 1_000_000,
        fps: int = 30,
        video_packet_size: int = 1200,
        audio_packet_size: int = 100,
        # With an IPv4 loopback bind_ip: one socket per worker, each endpoint its own 127.a.b.c address.
        shared_sockets: bool = True,
    ) -> None: ...
    def create_endpoints(self, count: int, group: int) -> list[LoadGenEndpoint]: ...
    def connect(
        self,
        index: int,
        ufrag: str,
        pwd: str,
        candidates: list[tuple[str, int, int, str]],
        fingerprints: list[tuple[str, str]],
        setup: str,
    ) -> None: ...
    def connect_raw(self, index: int, host: str, port: int) -> None: ...
    def set_sources(self, index: int, audio_ssrc: int | None, video_ssrcs: list[int]) -> None: ...
    @staticmethod
    def default_sources(index: int, layers: int) -> tuple[int | None, list[int]]: ...
    def endpoints(self) -> int: ...
    def connected(self) -> int: ...
    def failed(self) -> int: ...
    def wait_connected(self, timeout: float) -> bool: ...
    def start(self) -> None: ...
    def stop(self, drain: float = 0.5) -> None: ...
    def stats_json(self, detail: bool = False) -> str: ...
    # Keys: mode, threads, elapsed_s, sending, stopped, endpoints, connected, failed, expected, received,
    # unexpected, lost (final once stopped), lost_gap, loss_ratio, duplicates, reordered, late,
    # packets_per_recv_call, packets_per_send_call, totals{...}, latency / latency_audio / latency_video
    # {count, min_ns, mean_ns, p50_ns, p90_ns, p99_ns, p999_ns, max_ns}, histogram [[upper_ns, count]], and
    # with detail: series [{t, sent_packets, sent_bytes, recv_packets, recv_bytes, gap_lost, latency}],
    # streams [{receiver, group, sender, ssrc, kind, sent, received, lost, gap_lost, duplicates, reordered,
    # latency_mean_ns, latency_max_ns}], endpoint_list [{index, group, state, detail, sent, received}].
    def stats(self, detail: bool = False) -> dict[str, object]: ...
    def shutdown(self) -> None: ...

class RawRelay:
    """The raw relay baseline (recvmmsg -> fan-out to the sender's group -> sendmmsg, no crypto) on a
    thread named "raw-relay". A sender's group is read once from its first datagram (loadgen payload)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None: ...
    def local_address(self) -> tuple[str, int]: ...
    def start(self) -> None: ...
    # Keys: packets_in, bytes_in, packets_out, bytes_out, untagged, send_failed, members, groups, recv_calls,
    # recv_syscall_packets, send_calls, send_syscall_packets, packets_per_recv_call, packets_per_send_call.
    def stats(self) -> dict[str, float]: ...
    def stop(self) -> None: ...
