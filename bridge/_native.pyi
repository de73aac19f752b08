# Typed stub of the PyO3 seam (native/py). Commands return at once; results come back as events.
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar

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

class VideoCodec:
    """A payload type's codec as far as forwarding cares (audio too, despite the name)."""

    VP8: ClassVar[VideoCodec]
    VP9: ClassVar[VideoCodec]
    H264: ClassVar[VideoCodec]
    AV1: ClassVar[VideoCodec]
    RTX: ClassVar[VideoCodec]
    RED: ClassVar[VideoCodec]
    AUDIO: ClassVar[VideoCodec]
    OTHER: ClassVar[VideoCodec]

class PayloadType:
    def __init__(self, pt: int, codec: VideoCodec, apt: int | None = None) -> None: ...
    @property
    def pt(self) -> int: ...
    @property
    def codec(self) -> VideoCodec: ...
    @property
    def apt(self) -> int | None: ...

# ---- the Events a shard sends back (native/py/src/seam.rs), one class per kind

class TransportState:
    """A Transport's state as its shard reports it."""

    CHECKING: ClassVar[TransportState]
    CONNECTED: ClassVar[TransportState]
    FAILED: ClassVar[TransportState]
    CLOSED: ClassVar[TransportState]

class TransportStateEvent:
    """A Transport changed state; `detail` says why it failed."""

    def __init__(self, transport_id: int, state: TransportState, detail: str) -> None: ...
    @property
    def transport_id(self) -> int: ...
    @property
    def state(self) -> TransportState: ...
    @property
    def detail(self) -> str: ...

class StatsEvent:
    """The answer to get_stats: {"total": {..., "drops": {reason: n}}, "failures": {cause: n}, "io": ...,
    "transports": {id: {...}}}; drop reasons and failure causes as in docs/architecture.md."""

    def __init__(self, request_id: int, stats: dict[str, object]) -> None: ...
    @property
    def request_id(self) -> int: ...
    @property
    def stats(self) -> dict[str, object]: ...

class CommandFailedEvent:
    """A Command named an unknown Transport, or the shard refused it."""

    def __init__(self, transport_id: int, detail: str) -> None: ...
    @property
    def transport_id(self) -> int: ...
    @property
    def detail(self) -> str: ...

class AudioLevelsEvent:
    """One conference's RFC 6464 levels over the last tick: (transport_id, ssrc, loudness 0..127, voice,
    packets) per audio SSRC that carried levels."""

    def __init__(self, router_id: int, levels: Sequence[tuple[int, int, int, bool, int]]) -> None: ...
    @property
    def router_id(self) -> int: ...
    @property
    def levels(self) -> list[tuple[int, int, int, bool, int]]: ...

class EstimateFellEvent:
    """A transport's send-side estimate fell under 0.9 x its peak since the last such event (at most one
    per 100 ms per transport), bit/s."""

    def __init__(self, transport_id: int, bps: int) -> None: ...
    @property
    def transport_id(self) -> int: ...
    @property
    def bps(self) -> int: ...

class EstimateRoseEvent:
    """A probe raised a transport's send-side estimate (at most once per probe cluster), bit/s."""

    def __init__(self, transport_id: int, bps: int) -> None: ...
    @property
    def transport_id(self) -> int: ...
    @property
    def bps(self) -> int: ...

class NativeBridge:
    # One shard: its thread (sluice-shard-<shard_index>), sockets and transports; `certificate_of`, another
    # shard of the bridge whose DTLS certificate this one presents too.
    def __init__(
        self,
        bind_addresses: list[str],
        port: int,
        shard_cpu: int | None = None,
        cc_trace_dir: str | None = None,
        cc_initial_estimate_bps: int | None = None,
        cc_pacing: bool = False,
        tcp_port: int | None = None,
        tcp_max_connections: int = 1024,
        gso: bool = True,
        shard_index: int = 0,
        certificate_of: NativeBridge | None = None,
    ) -> None: ...
    def local_addresses(self) -> list[tuple[str, int]]: ...
    # The ICE-TCP listener's (address, port); None without one.
    def tcp_local_address(self) -> tuple[str, int] | None: ...
    # The bridge certificate's fingerprint: hash function and digest.
    def fingerprint(self) -> tuple[HashFunction, bytes]: ...
    def event_fd(self) -> int: ...
    def drain_events(
        self,
    ) -> list[
        TransportStateEvent
        | StatsEvent
        | CommandFailedEvent
        | AudioLevelsEvent
        | EstimateFellEvent
        | EstimateRoseEvent
    ]: ...
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
    # ICE restart with our new credentials; DTLS and SRTP state stay, media keeps its path until the new
    # generation selects one.
    def restart_ice(self, transport_id: int, ufrag: str, pwd: str) -> None: ...
    def add_remote_candidates(self, transport_id: int, candidates: Sequence[Candidate]) -> None: ...
    # Every Source the transport sends, replacing the previous set.
    def set_sources(self, transport_id: int, sources: Sequence[Source]) -> None: ...
    def set_payload_types(self, transport_id: int, types: Sequence[PayloadType]) -> None: ...
    def set_allocation(
        self, transport_id: int, targets: Sequence[tuple[str, tuple[int, int] | None]]
    ) -> None:
        """Per video source name, (spatial, temporal) to receive (temporal 255: all) or None."""
        ...
    def set_header_extensions(
        self,
        transport_id: int,
        audio_level: int | None = None,
        dependency_descriptor: int | None = None,
        transport_cc: int | None = None,
        abs_send_time: int | None = None,
    ) -> None: ...
    def set_probe_target(self, transport_id: int, bps: int) -> None:
        """What the allocation would send the transport if its estimate allowed (0: no more)."""
        ...
    def request_keyframe(self, transport_id: int, ssrc: int) -> None: ...
    def set_force_mute(self, transport_id: int, audio: bool, video: bool) -> None: ...
    def close_transport(self, transport_id: int) -> None: ...
    def get_stats(self, request_id: int) -> None: ...
    def shutdown(self) -> None: ...

# A STUN Binding request without credentials (with FINGERPRINT); `transaction_id` is 12 bytes.
def stun_binding_request(transaction_id: bytes) -> bytes: ...

# The XOR-MAPPED-ADDRESS (ip, port) of a Binding success response to `transaction_id`, else None.
def stun_mapped_address(datagram: bytes, transaction_id: bytes) -> tuple[str, int] | None: ...
