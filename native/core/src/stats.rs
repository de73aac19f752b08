//! Typed packet counters: every drop has a reason, counted per transport and in total.

use std::collections::BTreeMap;

use crate::domain::ForceMute;

/// Why a datagram was dropped. One name per reason in Rust, Python, logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Not STUN, DTLS, RTP or RTCP by RFC 7983 (or empty, or truncated by the socket).
    Unclassified,
    /// Media or DTLS from an address no transport has authenticated with ICE.
    UnknownAddress,
    /// STUN that does not parse.
    StunMalformed,
    /// STUN whose ufrag or transaction matches no transport.
    StunUnroutable,
    /// STUN the ICE agent refused (bad integrity, unknown transaction, missing attributes).
    StunRejected,
    /// A DTLS record that arrived before DTLS could run, or after the transport failed.
    DtlsUnexpected,
    /// A DTLS record (or unparsable datagram) the association discarded (RFC 6347 section
    /// 4.1.2.7): malformed framing, or, once connected, a wrong epoch, content type or length
    /// for the negotiated suite, a failed MAC or replay, or anything after reading stopped.
    DtlsInvalid,
    /// Media before SRTP keys exist.
    NotConnected,
    /// Shorter than the smallest valid packet.
    TooShort,
    /// SRTP/SRTCP authentication failed (wrong key, tampered, garbage).
    SrtpAuth,
    /// SRTP/SRTCP replay or too old for the replay window.
    SrtpReplay,
    /// Other SRTP errors (malformed header).
    SrtpOther,
    /// Decrypted RTP that does not parse.
    RtpMalformed,
    /// Decrypted RTCP that does not parse.
    RtcpMalformed,
    /// RTP whose SSRC this transport has not signalled.
    UnknownSsrc,
    /// RTP of a kind the focus force-muted on its sender: received (and reported on), forwarded to nobody.
    ForceMuted,
    /// Video not selected for this receiver now (another layer, before the target layer's keyframe,
    /// switched off by its allocation), or an RTX packet without an original to unwrap. Not loss.
    Filtered,
    /// A sender's RTX packet whose original the bridge was not missing and no receiver asked for
    /// (libwebrtc probes its own link by resending recent packets on RTX): forwarding it would hand
    /// every receiver a duplicate, which SRTP's replay check drops and transport-cc reports as lost.
    RtxUnneeded,
    /// An RFC 2198 redundant audio payload whose headers or block lengths do not fit it.
    RedMalformed,
    /// A receiver negotiated neither the packet's payload type nor, for RED, its primary's: counted on
    /// that receiver.
    NotNegotiated,
    /// Video a receiver's pacer held longest, dropped because its queue was full (`cc::pacer`).
    PacerOverflow,
    /// Forwarding was impossible: the egress packet would not fit, or protect failed.
    EgressFailed,
    /// The kernel refused to send it.
    SendFailed,
    /// Processing panicked; the transport was failed.
    Panic,
    /// An ICE-TCP peer's check selected an address another live transport receives from: not routed.
    AddressInUse,
}

pub const DROP_REASONS: [DropReason; 25] = [
    DropReason::Unclassified,
    DropReason::UnknownAddress,
    DropReason::StunMalformed,
    DropReason::StunUnroutable,
    DropReason::StunRejected,
    DropReason::DtlsUnexpected,
    DropReason::DtlsInvalid,
    DropReason::NotConnected,
    DropReason::TooShort,
    DropReason::SrtpAuth,
    DropReason::SrtpReplay,
    DropReason::SrtpOther,
    DropReason::RtpMalformed,
    DropReason::RtcpMalformed,
    DropReason::UnknownSsrc,
    DropReason::ForceMuted,
    DropReason::Filtered,
    DropReason::RtxUnneeded,
    DropReason::RedMalformed,
    DropReason::NotNegotiated,
    DropReason::PacerOverflow,
    DropReason::EgressFailed,
    DropReason::SendFailed,
    DropReason::Panic,
    DropReason::AddressInUse,
];

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Unclassified => "unclassified",
            DropReason::UnknownAddress => "unknown_address",
            DropReason::StunMalformed => "stun_malformed",
            DropReason::StunUnroutable => "stun_unroutable",
            DropReason::StunRejected => "stun_rejected",
            DropReason::DtlsUnexpected => "dtls_unexpected",
            DropReason::DtlsInvalid => "dtls_invalid",
            DropReason::NotConnected => "not_connected",
            DropReason::TooShort => "too_short",
            DropReason::SrtpAuth => "srtp_auth",
            DropReason::SrtpReplay => "srtp_replay",
            DropReason::SrtpOther => "srtp_other",
            DropReason::RtpMalformed => "rtp_malformed",
            DropReason::RtcpMalformed => "rtcp_malformed",
            DropReason::UnknownSsrc => "unknown_ssrc",
            DropReason::ForceMuted => "force_muted",
            DropReason::Filtered => "filtered",
            DropReason::RtxUnneeded => "rtx_unneeded",
            DropReason::RedMalformed => "red_malformed",
            DropReason::NotNegotiated => "not_negotiated",
            DropReason::PacerOverflow => "pacer_overflow",
            DropReason::EgressFailed => "egress_failed",
            DropReason::SendFailed => "send_failed",
            DropReason::Panic => "panic",
            DropReason::AddressInUse => "address_in_use",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Packet and byte counters of one transport (or the total).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub rtp_in: u64,
    pub rtp_out: u64,
    pub rtcp_in: u64,
    pub rtcp_out: u64,
    /// Sequence numbers the bridge asked this sender for in its own NACKs (what it did not receive).
    pub nack_requested: u64,
    /// REMB packets the bridge sent this peer (one that negotiated REMB and not transport-cc).
    pub remb_sent: u64,
    /// Probe clusters sent this peer, and the padding packets and bytes in them.
    pub probe_clusters: u64,
    pub padding_packets: u64,
    pub padding_bytes: u64,
    /// Video and RTX packets this receiver's pacer held before they left (`cc::pacer`).
    pub paced: u64,
    /// Packets (and their RTP bytes) the bridge resent this receiver from its RTX cache (or queued in
    /// its pacer to be).
    pub retransmitted: u64,
    pub retransmitted_bytes: u64,
    /// Sequence numbers this receiver NACKed that the cache held (resent, or refused by a limit)...
    pub nack_cache_hit: u64,
    /// ...and that it did not: asked of the sender.
    pub nack_cache_miss: u64,
    /// Cached packets this receiver NACKed that were not resent: again within its RTT, or over its
    /// retransmission budget.
    pub rtx_rate_limited: u64,
    drops: [u64; DROP_REASONS.len()],
}

impl Counters {
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// Counts `count` drops at once (records discarded from one datagram).
    #[inline]
    pub fn drop_n(&mut self, reason: DropReason, count: u64) {
        self.drops[reason.index()] += count;
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub fn add(&mut self, other: &Counters) {
        self.packets_in += other.packets_in;
        self.bytes_in += other.bytes_in;
        self.packets_out += other.packets_out;
        self.bytes_out += other.bytes_out;
        self.rtp_in += other.rtp_in;
        self.rtp_out += other.rtp_out;
        self.rtcp_in += other.rtcp_in;
        self.rtcp_out += other.rtcp_out;
        self.nack_requested += other.nack_requested;
        self.retransmitted += other.retransmitted;
        self.retransmitted_bytes += other.retransmitted_bytes;
        self.nack_cache_hit += other.nack_cache_hit;
        self.nack_cache_miss += other.nack_cache_miss;
        self.rtx_rate_limited += other.rtx_rate_limited;
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
    }

    /// Drops by reason name, only the non-zero ones.
    pub fn drop_map(&self) -> BTreeMap<&'static str, u64> {
        DROP_REASONS
            .iter()
            .filter(|r| self.drops(**r) > 0)
            .map(|r| (r.as_str(), self.drops(*r)))
            .collect()
    }
}

/// Why a transport failed. One name per cause in Rust, Python, logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// No ICE candidate pair succeeded.
    Ice,
    /// ICE consent expired after connecting (RFC 7675).
    Consent,
    /// The DTLS handshake failed (or its keys were unusable).
    DtlsHandshake,
    /// The peer's certificate matched none of its announced fingerprints.
    DtlsFingerprint,
    /// After the handshake, the peer sent an authenticated fatal alert.
    DtlsAlert,
    /// Processing panicked.
    Panic,
}

pub const FAILURE_KINDS: [FailureKind; 6] = [
    FailureKind::Ice,
    FailureKind::Consent,
    FailureKind::DtlsHandshake,
    FailureKind::DtlsFingerprint,
    FailureKind::DtlsAlert,
    FailureKind::Panic,
];

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Ice => "ice",
            FailureKind::Consent => "consent",
            FailureKind::DtlsHandshake => "dtls_handshake",
            FailureKind::DtlsFingerprint => "dtls_fingerprint",
            FailureKind::DtlsAlert => "dtls_alert",
            FailureKind::Panic => "panic",
        }
    }
}

/// Why transports failed, counted per bridge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureCounters {
    pub ice: u64,
    pub consent: u64,
    pub dtls_handshake: u64,
    pub dtls_fingerprint: u64,
    pub dtls_alert: u64,
    pub panic: u64,
}

impl FailureCounters {
    pub fn count(&mut self, kind: FailureKind) {
        *self.slot(kind) += 1;
    }

    pub fn get(&self, kind: FailureKind) -> u64 {
        match kind {
            FailureKind::Ice => self.ice,
            FailureKind::Consent => self.consent,
            FailureKind::DtlsHandshake => self.dtls_handshake,
            FailureKind::DtlsFingerprint => self.dtls_fingerprint,
            FailureKind::DtlsAlert => self.dtls_alert,
            FailureKind::Panic => self.panic,
        }
    }

    pub fn total(&self) -> u64 {
        FAILURE_KINDS.iter().map(|k| self.get(*k)).sum()
    }

    /// Every cause by name, zeros included (a dashboard wants each series from the start).
    pub fn by_name(&self) -> [(&'static str, u64); FAILURE_KINDS.len()] {
        FAILURE_KINDS.map(|k| (k.as_str(), self.get(k)))
    }

    fn slot(&mut self, kind: FailureKind) -> &mut u64 {
        match kind {
            FailureKind::Ice => &mut self.ice,
            FailureKind::Consent => &mut self.consent,
            FailureKind::DtlsHandshake => &mut self.dtls_handshake,
            FailureKind::DtlsFingerprint => &mut self.dtls_fingerprint,
            FailureKind::DtlsAlert => &mut self.dtls_alert,
            FailureKind::Panic => &mut self.panic,
        }
    }
}

/// I/O batching counters: their ratios are packets per syscall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    pub recv_calls: u64,
    pub recv_packets: u64,
    pub send_calls: u64,
    pub send_packets: u64,
    /// Messages sent as one UDP GSO send of several datagrams, and GSO sends the kernel refused.
    pub gso_sends: u64,
    pub gso_refused: u64,
    /// ICE-TCP connections and frames (all zero without a listener).
    pub tcp: crate::io::tcp::TcpCounters,
}

#[derive(Clone, Debug, Default)]
pub struct TransportStats {
    pub id: u64,
    pub router: u64,
    pub state: &'static str,
    pub counters: Counters,
    pub selected_remote: Option<std::net::SocketAddr>,
    pub srtp_profile: Option<&'static str>,
    pub force_mute: ForceMute,
    /// What the peer can receive, from its transport-cc feedback (None: no feedback yet, or it did
    /// not negotiate transport-cc).
    pub bandwidth_estimate_bps: Option<u64>,
    /// Probing of the peer (None: it did not negotiate transport-cc), and the probe results that
    /// raised its estimate.
    pub probe: Option<crate::cc::ProbeStats>,
    pub probe_raises: u64,
    /// What the bridge estimates it can receive from the peer and tells it with REMB (a peer that
    /// negotiated REMB and not transport-cc; None before the incoming rate is known).
    pub remb_estimate_bps: Option<u64>,
    /// The audio the peer sends, bit/s (every other member of its conference is sent it): the
    /// Allocator keeps room for it in each receiver's estimate.
    pub audio_in_bps: u64,
    /// Round trip to the peer from its transport-cc feedback (None: no estimate yet).
    pub rtt_ms: Option<f64>,
    /// RFC 3550 receive statistics over the SSRCs the peer sends, summed: packets received and
    /// cumulative lost (expected - received), for the operator's loss figures.
    pub rtp_received: u64,
    pub rtp_lost: i64,
    /// The largest interarrival jitter of its audio SSRCs, in milliseconds.
    pub jitter_ms: f64,
}

/// One layer of a video Source as the bridge receives it: what the Allocator sizes allocations with.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerStats {
    pub router: u64,
    /// The sender's transport.
    pub transport: u64,
    pub source: String,
    /// Index in the Source's SIM order.
    pub layer: u8,
    /// The spatial and temporal layer within that SSRC (0 without SVC or temporal layers): the
    /// figures are this sublayer's own, without the layers it depends on.
    pub spatial: u8,
    pub temporal: u8,
    pub ssrc: u32,
    pub bitrate_bps: u64,
    pub frame_rate: f64,
    /// A whole rate window was measured (false: the figures are of a layer just started, or none).
    pub settled: bool,
    /// Packets of the SSRC.
    pub packets: u64,
    /// Width and height of its spatial layer, from the last keyframe that said.
    pub frame_size: Option<(u16, u16)>,
}

/// A receiver waiting for a layer of a Source to start (its keyframe has not come yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingStats {
    pub router: u64,
    pub receiver: u64,
    pub source: String,
    pub target: u8,
    /// The layer it gets meanwhile.
    pub current: Option<u8>,
}

/// A point-in-time copy of a shard's counters.
#[derive(Clone, Debug, Default)]
pub struct StatsSnapshot {
    /// Everything on the shard, including traffic no transport claimed.
    pub total: Counters,
    pub failures: FailureCounters,
    pub io: IoCounters,
    pub routers: u64,
    pub transports: Vec<TransportStats>,
    pub layers: Vec<LayerStats>,
    pub waiting: Vec<WaitingStats>,
    /// Commands received and events sent across the seam since start.
    pub seam_commands: u64,
    pub seam_events: u64,
    /// CPU time the thread that took the snapshot (the shard's) has used, in ns: what the control plane
    /// places new conferences by.
    pub thread_cpu_ns: u64,
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in ns; 0 if the clock is refused.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call writes into; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threads_cpu_clock_counts_this_threads_work() {
        let before = thread_cpu_ns();
        let mut x = 0u64;
        while thread_cpu_ns() < before + 2_000_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(thread_cpu_ns() >= before + 2_000_000);
        // Another thread's clock starts near zero: it is per thread, not per process.
        let other = std::thread::spawn(thread_cpu_ns).join().expect("thread");
        assert!(other < before + 2_000_000, "{other} ns");
    }

    #[test]
    fn every_reason_has_its_own_slot_and_name() {
        let mut c = Counters::default();
        for (i, r) in DROP_REASONS.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?} is out of place in DROP_REASONS");
            c.drop(*r);
        }
        let names = c.drop_map();
        assert_eq!(names.len(), DROP_REASONS.len(), "two reasons share a name");
        assert_eq!(names.get("force_muted"), Some(&1));
        assert_eq!(names.get("dtls_invalid"), Some(&1));
        c.drop_n(DropReason::DtlsInvalid, 4);
        assert_eq!(c.drops(DropReason::DtlsInvalid), 5);
    }

    #[test]
    fn every_failure_cause_has_its_own_counter_and_name() {
        let mut f = FailureCounters::default();
        for (i, k) in FAILURE_KINDS.iter().enumerate() {
            for _ in 0..=i {
                f.count(*k);
            }
        }
        let names = f.by_name();
        for (i, (name, count)) in names.iter().enumerate() {
            assert_eq!(*count, i as u64 + 1, "{name}");
            assert_eq!(names.iter().filter(|(n, _)| n == name).count(), 1);
        }
        assert_eq!(f.dtls_alert, 5);
        assert_eq!(f.get(FailureKind::DtlsAlert), 5);
        assert_eq!(f.total(), 21);
    }
}
