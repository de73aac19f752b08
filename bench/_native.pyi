# Typed stub of bench._native (native/benchpy): the load generator, the raw relay and an SRTP test helper.
# Built and installed apart from bridge._native by scripts/bootstrap.sh; the bridge's wheel does not carry it.
from typing import Final, TypedDict

#: The SRTP profiles SrtpSession accepts.
SRTP_PROFILES: Final[tuple[str, ...]]

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

class Latency(TypedDict):
    """One-way latency percentiles in ns; None while nothing was received."""

    count: int
    min_ns: int | None
    mean_ns: float | None
    p50_ns: int | None
    p90_ns: int | None
    p99_ns: int | None
    p999_ns: int | None
    max_ns: int | None

class Totals(TypedDict):
    """Every worker's counters, summed (sluice_loadgen::Totals)."""

    sent_packets: int
    sent_bytes: int
    sent_rtcp: int
    recv_rtcp: int
    recv_packets: int
    recv_bytes: int
    decrypt_failures: int
    srtp_replays: int  # a retransmission the bridge forwarded to a receiver that had the packet already
    before_keys: int
    integrity_failures: int
    misrouted: int
    stream_limit: int
    foreign: int
    hello: int
    protect_failures: int
    send_failed: int
    recv_errors: int
    setup_errors: int
    schedule_resets: int
    pli_received: int
    fir_received: int
    keyframe_requests_ignored: int  # rate-limited, a repeated FIR, or not one of our video SSRCs
    keyframes_sent: int
    rtcp_malformed: int
    vp8_invalid: int  # video packets whose VP8 descriptor a forwarder broke
    stun_in: int
    stun_out: int
    dtls_in: int
    dtls_out: int
    recv_calls: int
    recv_syscall_packets: int
    send_calls: int
    send_syscall_packets: int
    # With feedback (LoadGen(feedback=True)). Receivers: transport-cc feedback packets sent, NACK packets
    # and the sequence numbers they asked for, packets that came after being asked for, RTX unwrapped
    # (and RTX naming no known stream).
    feedback_sent: int
    nacks_sent: int
    nack_seqs_sent: int
    recovered: int
    rtx_received: int
    rtx_unmatched: int
    # Senders: the bridge's NACKs and the sequence numbers they asked for, packets retransmitted, asked
    # for but not in the history (or older than 1 s), not resent now (resent < 20 ms ago, or over budget).
    nacks_received: int
    nack_seqs_received: int
    retransmits_sent: int
    retransmits_unknown: int
    retransmits_limited: int
    feedback_received: int  # transport-cc feedback from the bridge on what we sent
    link_dropped: int  # media datagrams the drop_every_n test knob dropped on arrival
    unrelayable: int  # behind TURN: datagrams to an address the channel does not carry

class Second(TypedDict):
    t: int
    sent_packets: int
    sent_bytes: int
    recv_packets: int
    recv_bytes: int
    gap_lost: int
    latency: Latency

class Stream(TypedDict):
    """One stream as one receiver saw it; `sent` is what its sender sent."""

    receiver: int
    group: int
    sender: int
    ssrc: int
    kind: str  # "audio" or "video"
    layer: int  # simulcast layer of the sent ssrc, 0 = lowest
    sent: int
    sent_payload_bytes: int
    received: int
    lost: int
    gap_lost: int
    duplicates: int
    reordered: int
    latency_mean_ns: float | None
    latency_max_ns: int | None

class ReceiveTotals(TypedDict):
    """What receivers saw per received ssrc (RTP header), summed over the streams from their group."""

    streams: int
    video_streams: int
    packets: int
    seq_gaps: int  # RTP sequence numbers skipped: 0 on a lossless path, across layer switches too
    seq_late: int
    layer_switches: int
    switches_off_keyframe: int  # switches whose first packet does not start a keyframe
    frames: int
    keyframes: int
    freezes: int  # video: gaps between frames above freeze_ms
    freeze_ns: int

class ReceiveStream(TypedDict):
    """One received stream (RTP header ssrc) at one receiver."""

    receiver: int
    group: int
    ssrc: int
    sender: int
    kind: str  # "audio" or "video"
    packets: int
    seq_gaps: int
    seq_late: int
    layer: int  # of the newest packet
    layer_switches: int
    switches_off_keyframe: int
    frames: int
    keyframes: int
    freezes: int
    freeze_ns: int

class EndpointSummary(TypedDict):
    index: int
    group: int
    state: str  # "new", "connecting", "connected", "failed"
    detail: str
    relayed: str | None  # behind TURN: "ip:port" the TURN server relays it from
    sent: int
    received: int

class LoadGenStats(TypedDict):
    """A snapshot of the whole load generator. `lost` is final once stopped (after the drain); the
    lists `series`, `streams`, `receive_streams` and `endpoint_list` are empty unless asked for with
    `detail`. `streams` are per sent ssrc (loss, latency); `receive` and `receive_streams` per
    received ssrc (what a forwarder that rewrites layers onto one ssrc is judged by)."""

    mode: str  # "secure" or "raw"
    threads: int
    elapsed_s: float
    sending: bool
    stopped: bool
    endpoints: int
    connected: int
    failed: int
    expected: int
    received: int
    unexpected: int
    lost: int
    lost_gap: int
    loss_ratio: float
    duplicates: int
    reordered: int
    late: int
    packets_per_recv_call: float
    packets_per_send_call: float
    totals: Totals
    latency: Latency
    latency_audio: Latency
    latency_video: Latency
    #: Send to the kernel's queueing on the receiving socket: `latency` without the receiver's read delay.
    latency_socket: Latency
    histogram: list[tuple[int, int]]  # non-empty buckets: (upper edge ns, count)
    receive: ReceiveTotals
    series: list[Second]
    streams: list[Stream]
    receive_streams: list[ReceiveStream]
    endpoint_list: list[EndpointSummary]

class LoadGen:
    """Emulated endpoints (native/loadgen) on their own threads; no packet is handled under the GIL.

    mode "secure": ICE controlled, DTLS-SRTP to a bridge; mode "raw": clear RTP to the raw relay.
    Video is VP8 (RFC 7741) with 3 temporal layers; simulcast layers are 320x180 / 640x360 / 1280x720
    at 2/15, 1/3 and all of video_bitrate_bps. Keyframes at start, every keyframe_interval_frames
    (0: never) and on PLI/FIR. Each receiver expects every stream of every other endpoint in its group.
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
        keyframe_interval_frames: int = 3000,  # libwebrtc's VP8 default: 100 s at 30 fps
        freeze_ms: int = 500,
        # Secure mode, like a browser: transport-wide sequence numbers (extension 5) on what is sent,
        # transport-cc feedback every feedback_interval_ms and NACKs from receivers, NACKs answered
        # (RTX, payload type 96, on a layer's RTX SSRC when set_sources gave one) by senders.
        feedback: bool = False,
        feedback_interval_ms: int = 100,
        # Test knob: every endpoint drops every n-th SRTP media datagram it receives, as a lossy link.
        drop_every_n: int = 0,
    ) -> None: ...
    def create_endpoints(
        self,
        count: int,
        group: int,
        *,
        ice_controlling: bool = False,
        receives: bool = True,
        peer: int | None = None,
        rtx_pt: int | None = 96,
        rid: tuple[int, int, str] | None = None,
    ) -> list[LoadGenEndpoint]: ...
    def connect(
        self,
        index: int,
        ufrag: str,
        pwd: str,
        candidates: list[tuple[str, int, int, str]],
        fingerprints: list[tuple[str, str]],
        setup: str,
        # (server ip, port, username, password): reach the bridge through this TURN server.
        turn: tuple[str, int, str, str] | None = None,
    ) -> None: ...
    def connect_raw(self, index: int, host: str, port: int) -> None: ...
    def set_sources(
        self, index: int, audio_ssrc: int | None, video_ssrcs: list[int], rtx_ssrcs: list[int] = ...
    ) -> None: ...
    def set_audio_level(self, index: int, level: int | None) -> None: ...
    @staticmethod
    def default_sources(index: int, layers: int) -> tuple[int | None, list[int]]: ...
    @staticmethod
    def default_rtx_sources(index: int, layers: int) -> list[int]: ...
    def endpoints(self) -> int: ...
    def connected(self) -> int: ...
    def failed(self) -> int: ...
    def wait_connected(self, timeout: float) -> bool: ...
    def start(self) -> None: ...
    def reset_latency(self) -> None: ...
    def stop(self, drain: float = 0.5) -> None: ...
    def stats(self, detail: bool = False) -> LoadGenStats: ...
    def shutdown(self) -> None: ...

class RelayStats(TypedDict):
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    untagged: int
    send_failed: int
    members: int
    groups: int
    recv_calls: int
    recv_syscall_packets: int
    send_calls: int
    send_syscall_packets: int
    packets_per_recv_call: float
    packets_per_send_call: float

class RawRelay:
    """The raw relay baseline (recvmmsg -> fan-out to the sender's group -> sendmmsg, no crypto) on a
    thread named "raw-relay". A sender's group is read once from its first datagram (loadgen payload)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None: ...
    def local_address(self) -> tuple[str, int]: ...
    def start(self) -> None: ...
    # At most 100 ms old while running, exact after `stop`.
    def stats(self) -> RelayStats: ...
    def stop(self) -> None: ...
