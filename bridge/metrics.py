"""Prometheus metrics of one bridge, built from a native stats snapshot (no I/O, no clock).

Names use the `sluice_` prefix, not JVB's `jitsi_`: the counters come from our native core and do not
mean exactly what JVB's do, so a JVB dashboard must not silently mistake them for its own.

| metric | type | labels | source |
| --- | --- | --- | --- |
| `sluice_packets_received_total` / `sluice_packets_sent_total` | counter | | native `total.packets_in/out` |
| `sluice_bytes_received_total` / `sluice_bytes_sent_total` | counter | | native `total.bytes_in/out` |
| `sluice_packets_dropped_total` | counter | `reason` (native drop reason) | native `total.drops` |
| `sluice_nack_requested_total` | counter | | native `total.nack_requested` (the bridge's own NACKs) |
| `sluice_nack_cache_total` | counter | `result` (hit, miss) | native `total.nack_cache_hit/miss` |
| `sluice_retransmitted_packets_total` / `_bytes_total` | counter | | native `total.retransmitted(_bytes)` |
| `sluice_rtx_rate_limited_total` | counter | | native `total.rtx_rate_limited` |
| `sluice_transport_failures_total` | counter | `cause` (ice, consent, dtls_...) | native `failures` |
| `sluice_seam_commands_total` / `sluice_seam_events_total` | counter | | Python/Rust crossings |
| `sluice_io_syscalls_total` / `sluice_io_packets_total` | counter | `op` (recvmmsg, sendmmsg) | native `io` |
| `sluice_conferences`, `sluice_endpoints` | gauge | | the Bridge's bookkeeping |
| `sluice_stress_level` | gauge | | `LoadSampler` (packet rate / capacity) |
| `sluice_packet_rate` | gauge | `direction` (download, upload) | packets per second |
| `sluice_bit_rate_kbps` | gauge | `direction` | kbit/s |
| `sluice_healthy`, `sluice_drain`, `sluice_graceful_shutdown`, `sluice_shutting_down` | gauge | | 0 or 1 |
| `sluice_colibri_web_socket_messages_received_total` / `_sent_total` | counter | | bridge channel |
| `sluice_colibri_web_socket_errors_total` | counter | `reason` (malformed_json, ...) | frames refused |
| `sluice_colibri_web_socket_dropped_total` | counter | `reason` (no_socket, ...) | messages not delivered |
| `sluice_colibri_web_socket_refused_total` | counter | `reason` (bad_pwd, ...) | upgrades refused |
| `sluice_private_http_refused_total` | counter | `reason` (cross_origin, ...) | private API refusals |
| `sluice_xmpp_iqs_refused_total` | counter | | IQs from senders that are not authorized sources |
| `sluice_colibri2_refused_total` | counter | `limit` (conferences, ...) | Colibri2 refused at a limit |
| `sluice_allocation_runs_total` / `_changes_total` | counter | | allocations computed / changed |
| `sluice_allocation_sources_total` | counter | `reason` (`Reason`: last-n, ...) | in changed allocations |

| `sluice_endpoint_rtt_seconds`, `_jitter_seconds`, `_loss_ratio` | gauge histogram | `le` | quality.py |
| `sluice_endpoint_bitrate_bps` | gauge histogram | `direction` (up, down), `le` | endpoints now |
| `sluice_admin_events_total` | counter | `event` (admin_logins, ...) | the admin page (admin.py) |

`sluice serve` adds its XMPP server's and focus's families (sluice/serve.py) through `extra`.

Without a snapshot (the core did not answer) only the gauges are exported and `sluice_healthy` is 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from bridge.allocation import AllocationStats, Reason
from bridge.channel import ChannelStats
from bridge.load import LoadSample
from bridge.quality import Quality
from bridge.quality import families as quality_families

PREFIX = "sluice"


@dataclass(frozen=True, slots=True)
class BridgeMetrics:
    """Everything one scrape exports; `snapshot` is `Bridge.get_stats()` or None if it failed."""

    snapshot: Mapping[str, object] | None
    conferences: int
    endpoints: int
    load: LoadSample
    healthy: bool
    drain: bool
    graceful_shutdown: bool
    shutting_down: bool
    #: The bridge channel's counters (colibri websockets); None leaves them out.
    channels: ChannelStats | None = None
    #: Private HTTP API requests refused, by reason (bridge/http.py); None leaves them out.
    private_http_refused: Mapping[str, int] | None = None
    #: IQs refused for their sender (bridge/xmpp.py); None leaves it out.
    xmpp_iqs_refused: int | None = None
    #: Colibri2 requests refused at a limit, by limit (bridge/colibri2_handler.py); None leaves them out.
    colibri2_refused: Mapping[str, int] | None = None
    #: The allocators' counters (bridge/allocation.py); None leaves them out.
    allocation: AllocationStats | None = None
    #: Each endpoint's link figures now (bridge/quality.py), exported as aggregates; None leaves them out.
    quality: tuple[Quality, ...] | None = None
    #: The admin page's counters (bridge/admin.py); None leaves them out.
    admin: Mapping[str, int] | None = None
    #: More families from whoever composes the process (signaling in `sluice serve`).
    extra: tuple[Metric, ...] = ()


def _int(section: Mapping[str, object], key: str) -> int:
    value = section.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _section(parent: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = parent.get(key)
    return value if isinstance(value, Mapping) else {}


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def families(m: BridgeMetrics) -> Iterator[Metric]:
    """The metric families of one scrape, in a stable order."""
    yield _gauge("conferences", "Conferences hosted by this bridge.", m.conferences)
    yield _gauge("endpoints", "Endpoints on this bridge.", m.endpoints)
    yield _gauge("stress_level", "Packet rate (both directions) over capacity.", m.load.stress_level)
    rate = GaugeMetricFamily(f"{PREFIX}_packet_rate", "Packets per second.", labels=["direction"])
    rate.add_metric(["download"], m.load.packet_rate_download)
    rate.add_metric(["upload"], m.load.packet_rate_upload)
    yield rate
    bits = GaugeMetricFamily(f"{PREFIX}_bit_rate_kbps", "Bit rate in kbit/s.", labels=["direction"])
    bits.add_metric(["download"], m.load.bit_rate_download)
    bits.add_metric(["upload"], m.load.bit_rate_upload)
    yield bits
    yield _gauge("healthy", "1 if the native core answered in time.", float(m.healthy))
    yield _gauge("drain", "1 while draining (no new conferences preferred).", float(m.drain))
    yield _gauge("graceful_shutdown", "1 while in graceful shutdown.", float(m.graceful_shutdown))
    yield _gauge("shutting_down", "1 while shutting down.", float(m.shutting_down))
    if m.channels is not None:
        yield from _channel_families(m.channels)
    if m.private_http_refused is not None:
        refused = CounterMetricFamily(
            f"{PREFIX}_private_http_refused",
            "Private HTTP API requests refused, by reason.",
            labels=["reason"],
        )
        for why, n in sorted(m.private_http_refused.items()):
            refused.add_metric([why], n)
        yield refused
    if m.xmpp_iqs_refused is not None:
        yield _counter(
            "xmpp_iqs_refused", "IQs refused: the sender is not an authorized source.", m.xmpp_iqs_refused
        )
    if m.colibri2_refused is not None:
        limits = CounterMetricFamily(
            f"{PREFIX}_colibri2_refused", "Colibri2 requests refused at a limit.", labels=["limit"]
        )
        for limit, n in sorted(m.colibri2_refused.items()):
            limits.add_metric([limit], n)
        yield limits
    if m.allocation is not None:
        yield from _allocation_families(m.allocation)
    if m.quality is not None:
        yield from quality_families(m.quality)
    if m.admin is not None:
        admin = CounterMetricFamily(
            f"{PREFIX}_admin_events", "Admin page logins and actions, by event.", labels=["event"]
        )
        for event, n in m.admin.items():
            admin.add_metric([event], n)
        yield admin
    yield from m.extra
    if m.snapshot is None:
        return
    total = _section(m.snapshot, "total")
    yield _counter("packets_received", "UDP packets received.", _int(total, "packets_in"))
    yield _counter("packets_sent", "UDP packets sent.", _int(total, "packets_out"))
    yield _counter("bytes_received", "UDP payload bytes received.", _int(total, "bytes_in"))
    yield _counter("bytes_sent", "UDP payload bytes sent.", _int(total, "bytes_out"))
    yield _counter(
        "nack_requested",
        "Sequence numbers the bridge asked senders for in its own NACKs (its ingress loss).",
        _int(total, "nack_requested"),
    )
    yield _counter(
        "remb_sent", "REMB sent to senders that negotiated it and not transport-cc.", _int(total, "remb_sent")
    )
    for name, text in (
        ("probe_clusters", "Bandwidth probe clusters sent to receivers."),
        ("padding_packets", "Padding packets sent in probe clusters."),
        ("padding_bytes", "Padding bytes sent in probe clusters."),
        ("paced", "Video packets a receiver's pacer held before they left."),
    ):
        yield _counter(name, text, _int(total, name))
    drops = CounterMetricFamily(f"{PREFIX}_packets_dropped", "Packets dropped, by reason.", labels=["reason"])
    for reason, count in sorted(_section(total, "drops").items()):
        if isinstance(count, int):
            drops.add_metric([str(reason)], count)
    yield drops
    cache = CounterMetricFamily(
        f"{PREFIX}_nack_cache",
        "Sequence numbers receivers NACKed, by whether the RTX cache held them (a miss is asked upstream).",
        labels=["result"],
    )
    cache.add_metric(["hit"], _int(total, "nack_cache_hit"))
    cache.add_metric(["miss"], _int(total, "nack_cache_miss"))
    yield cache
    yield _counter(
        "retransmitted_packets",
        "Packets resent to receivers from the RTX cache.",
        _int(total, "retransmitted"),
    )
    yield _counter(
        "retransmitted_bytes",
        "Bytes (protected) resent to receivers from the RTX cache.",
        _int(total, "retransmitted_bytes"),
    )
    yield _counter(
        "rtx_rate_limited",
        "Cached packets NACKed but not resent: again within the receiver's RTT, or over its budget.",
        _int(total, "rtx_rate_limited"),
    )
    failures = CounterMetricFamily(
        f"{PREFIX}_transport_failures", "Transports failed, by cause.", labels=["cause"]
    )
    for cause, count in sorted(_section(m.snapshot, "failures").items()):
        if isinstance(count, int):
            failures.add_metric([str(cause)], count)
    yield failures
    yield _counter(
        "seam_commands", "Commands sent from Python to the native core.", _int(m.snapshot, "seam_commands")
    )
    yield _counter("seam_events", "Events from the native core to Python.", _int(m.snapshot, "seam_events"))
    io = _section(m.snapshot, "io")
    calls = CounterMetricFamily(f"{PREFIX}_io_syscalls", "Batched UDP syscalls.", labels=["op"])
    calls.add_metric(["recvmmsg"], _int(io, "recv_calls"))
    calls.add_metric(["sendmmsg"], _int(io, "send_calls"))
    yield calls
    batched = CounterMetricFamily(
        f"{PREFIX}_io_packets", "Packets moved by the batched UDP syscalls.", labels=["op"]
    )
    batched.add_metric(["recvmmsg"], _int(io, "recv_packets"))
    batched.add_metric(["sendmmsg"], _int(io, "send_packets"))
    yield batched
    gso = CounterMetricFamily(
        f"{PREFIX}_io_gso",
        "UDP GSO: messages sent as one send of several datagrams; sends refused.",
        labels=["event"],
    )
    gso.add_metric(["sends"], _int(io, "gso_sends"))
    gso.add_metric(["refused"], _int(io, "gso_refused"))
    yield gso
    tcp = _section(io, "tcp")
    conns = CounterMetricFamily(
        f"{PREFIX}_ice_tcp_connections",
        "ICE-TCP connections accepted, refused (over the limits) and closed, by why they closed.",
        labels=["event"],
    )
    for event in ("accepted", "refused"):
        conns.add_metric([event], _int(tcp, event))
    for why in ("by_peer", "bad_framing", "unclaimed", "idle", "slow", "error"):
        conns.add_metric([f"closed_{why}"], _int(tcp, f"closed_{why}"))
    yield conns
    frames = CounterMetricFamily(
        f"{PREFIX}_ice_tcp_frames",
        "ICE-TCP frames (RFC 4571) received, sent, and dropped: write buffer full, or no connection.",
        labels=["event"],
    )
    for event, key in (
        ("in", "frames_in"),
        ("out", "frames_out"),
        ("dropped_full", "frames_dropped_full"),
        ("no_connection", "frames_no_connection"),
    ):
        frames.add_metric([event], _int(tcp, key))
    yield frames
    yield GaugeMetricFamily(
        f"{PREFIX}_ice_tcp_connections_open", "Open ICE-TCP connections.", _int(tcp, "open")
    )
    yield from _shard_families(m.snapshot)


def _shard_families(snapshot: Mapping[str, object]) -> Iterator[Metric]:
    """Each shard's own figures: how its conferences are spread and what its thread costs."""
    shards = snapshot.get("shards")
    if not isinstance(shards, list):
        return
    cpu = CounterMetricFamily(
        f"{PREFIX}_shard_cpu_seconds", "CPU time of each shard's thread.", labels=["shard"]
    )
    packets = CounterMetricFamily(
        f"{PREFIX}_shard_packets", "UDP packets each shard received and sent.", labels=["shard", "direction"]
    )
    conferences = GaugeMetricFamily(
        f"{PREFIX}_shard_conferences", "Conferences placed on each shard.", labels=["shard"]
    )
    endpoints = GaugeMetricFamily(f"{PREFIX}_shard_endpoints", "Transports on each shard.", labels=["shard"])
    for entry in shards:
        if not isinstance(entry, Mapping):
            continue
        shard = str(entry.get("index"))
        seconds = entry.get("cpu_seconds")
        cpu.add_metric([shard], float(seconds) if isinstance(seconds, int | float) else 0.0)
        packets.add_metric([shard, "in"], _int(entry, "packets_in"))
        packets.add_metric([shard, "out"], _int(entry, "packets_out"))
        conferences.add_metric([shard], _int(entry, "routers"))
        endpoints.add_metric([shard], _int(entry, "transports"))
    yield from (cpu, packets, conferences, endpoints)


def _channel_families(c: ChannelStats) -> Iterator[Metric]:
    yield _counter(
        "colibri_web_socket_messages_received", "Bridge channel messages received.", c.messages_received
    )
    yield _counter("colibri_web_socket_messages_sent", "Bridge channel messages sent.", c.messages_sent)
    for name, doc, counts in (
        ("errors", "Bridge channel frames refused, by reason.", c.errors),
        ("dropped", "Bridge channel messages not delivered, by reason.", c.dropped),
        ("refused", "Colibri websocket upgrades refused, by reason.", c.refused),
    ):
        family = CounterMetricFamily(f"{PREFIX}_colibri_web_socket_{name}", doc, labels=["reason"])
        for reason, count in sorted(counts.items()):
            family.add_metric([reason], count)
        yield family


def _allocation_families(a: AllocationStats) -> Iterator[Metric]:
    yield _counter("allocation_runs", "Receiver allocations computed.", a.runs)
    yield _counter("allocation_changes", "Receiver allocations that changed (recorded decisions).", a.changes)
    yield _counter(
        "allocation_no_feedback",
        "Receivers with transport-cc that sent no feedback, sized by receiver-bandwidth instead.",
        a.no_feedback,
    )
    sources = CounterMetricFamily(
        f"{PREFIX}_allocation_sources",
        "Sources in receiver allocations that changed, by the reason for their layer.",
        labels=["reason"],
    )
    # Every reason, 0 included, and nothing else: the label set is the Reason enum.
    for reason in Reason:
        sources.add_metric([str(reason)], a.reasons.get(str(reason), 0))
    yield sources


class _Families(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def render_families(metrics: Iterable[Metric], accept: str | None) -> tuple[bytes, str]:
    """The exposition body of these families and its Content-Type for the client's Accept header (text or
    OpenMetrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(metrics))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def render(metrics: BridgeMetrics, accept: str | None) -> tuple[bytes, str]:
    """The bridge's exposition body and its Content-Type."""
    return render_families(families(metrics), accept)
