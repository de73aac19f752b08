//! Typed packet counters: every drop has a reason, counted per transport and in total.

use std::collections::BTreeMap;

use crate::seam::ForceMute;

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
    /// Forwarding was impossible: the egress packet would not fit, or protect failed.
    EgressFailed,
    /// The kernel refused to send it.
    SendFailed,
    /// Processing panicked; the transport was failed.
    Panic,
}

pub const DROP_REASONS: [DropReason; 18] = [
    DropReason::Unclassified,
    DropReason::UnknownAddress,
    DropReason::StunMalformed,
    DropReason::StunUnroutable,
    DropReason::StunRejected,
    DropReason::DtlsUnexpected,
    DropReason::NotConnected,
    DropReason::TooShort,
    DropReason::SrtpAuth,
    DropReason::SrtpReplay,
    DropReason::SrtpOther,
    DropReason::RtpMalformed,
    DropReason::RtcpMalformed,
    DropReason::UnknownSsrc,
    DropReason::ForceMuted,
    DropReason::EgressFailed,
    DropReason::SendFailed,
    DropReason::Panic,
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
            DropReason::NotConnected => "not_connected",
            DropReason::TooShort => "too_short",
            DropReason::SrtpAuth => "srtp_auth",
            DropReason::SrtpReplay => "srtp_replay",
            DropReason::SrtpOther => "srtp_other",
            DropReason::RtpMalformed => "rtp_malformed",
            DropReason::RtcpMalformed => "rtcp_malformed",
            DropReason::UnknownSsrc => "unknown_ssrc",
            DropReason::ForceMuted => "force_muted",
            DropReason::EgressFailed => "egress_failed",
            DropReason::SendFailed => "send_failed",
            DropReason::Panic => "panic",
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
    drops: [u64; DROP_REASONS.len()],
}

impl Counters {
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
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

/// Why a transport failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Ice,
    Consent,
    DtlsHandshake,
    DtlsFingerprint,
    Panic,
}

/// Why transports failed, counted per bridge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureCounters {
    pub ice: u64,
    pub consent: u64,
    pub dtls_handshake: u64,
    pub dtls_fingerprint: u64,
    pub panic: u64,
}

impl FailureCounters {
    pub fn count(&mut self, kind: FailureKind) {
        match kind {
            FailureKind::Ice => self.ice += 1,
            FailureKind::Consent => self.consent += 1,
            FailureKind::DtlsHandshake => self.dtls_handshake += 1,
            FailureKind::DtlsFingerprint => self.dtls_fingerprint += 1,
            FailureKind::Panic => self.panic += 1,
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
    /// Commands received and events sent across the seam since start.
    pub seam_commands: u64,
    pub seam_events: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
