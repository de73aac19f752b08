//! RFC 3550 receive statistics for one incoming SSRC (appendix A.1, A.3, A.8; section 6.4.1).

use std::time::{Duration, Instant};

use crate::rtcp::{ntp_middle32, ReportBlock};

/// RFC 3550 A.1: a forward jump below this many sequence numbers is in-order (with loss).
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a backward step of at most this many is a reordered or duplicate packet.
const MAX_MISORDER: u16 = 100;
/// RFC 3550 A.1: `bad_seq` value meaning "no resync candidate".
const NO_BAD_SEQ: u32 = 1 << 16 | 1;

/// Receive statistics for one incoming SSRC, as RFC 3550 A.1/A.3/A.8 describe them.
///
/// Sans-IO: arrival times come in as `now`. Differences from appendix A.1: there is no probation
/// (the first packet counts, since SRTP already authenticates the source), and a reordered packet
/// older than the first one seen moves the base back while no report has been sent yet, so early
/// reordering does not show up as negative loss.
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    ssrc: u32,
    clock_rate: u32,
    started: bool,
    /// Highest sequence number seen (A.1 `max_seq`).
    max_seq: u16,
    /// Number of times the sequence number wrapped (A.1 keeps `cycles` shifted by 16).
    cycles: u64,
    /// Extended sequence number of the first packet (A.1 `base_seq`), may move back before the
    /// first report.
    base_seq: i64,
    /// Last "bad" sequence number + 1 (A.1 `bad_seq`), for resyncing after a large jump.
    bad_seq: u32,
    received: u64,
    expected_prior: i64,
    received_prior: u64,
    reported: bool,
    /// Reference instant for arrival times in timestamp units.
    epoch: Option<Instant>,
    /// Relative transit time of the previous packet (A.8 `transit`), timestamp units.
    transit: Option<u32>,
    /// Interarrival jitter scaled by 16 (A.8 integer form).
    jitter_q4: u32,
    last_sr: u32,
    last_sr_at: Option<Instant>,
}

impl ReceiverStats {
    /// Statistics for `ssrc`, whose RTP timestamps tick at `clock_rate` Hz (jitter needs it).
    pub fn new(ssrc: u32, clock_rate: u32) -> Self {
        ReceiverStats {
            ssrc,
            clock_rate,
            started: false,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: NO_BAD_SEQ,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            reported: false,
            epoch: None,
            transit: None,
            jitter_q4: 0,
            last_sr: 0,
            last_sr_at: None,
        }
    }

    /// The SSRC these statistics are about.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// A.1 `init_seq`: restart counting at `seq`.
    fn init_seq(&mut self, seq: u16) {
        self.base_seq = i64::from(seq);
        self.max_seq = seq;
        self.bad_seq = NO_BAD_SEQ;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    fn extended_max(&self) -> i64 {
        // Wrap counts beyond i64 range would need 2^47 wraps; saturate rather than overflow.
        let cycles = i64::try_from(self.cycles).unwrap_or(i64::MAX >> 16);
        (cycles << 16) | i64::from(self.max_seq)
    }

    /// Records one received packet (A.1 `update_seq`, A.8 jitter).
    pub fn on_packet(&mut self, now: Instant, seq: u16, rtp_timestamp: u32) {
        if !self.started {
            self.started = true;
            self.init_seq(seq);
        } else {
            let udelta = seq.wrapping_sub(self.max_seq);
            if udelta < MAX_DROPOUT {
                // In order, possibly with a gap.
                if seq < self.max_seq {
                    self.cycles += 1;
                }
                self.max_seq = seq;
            } else if u32::from(udelta) <= (1 << 16) - u32::from(MAX_MISORDER) {
                // A very large jump: restart only if the next packet follows this one.
                if u32::from(seq) == self.bad_seq {
                    self.init_seq(seq);
                } else {
                    self.bad_seq = (u32::from(seq) + 1) & 0xffff;
                    return;
                }
            } else {
                // Duplicate or reordered packet, 65536 - udelta behind max_seq.
                let ext_seq = self.extended_max() - ((1 << 16) - i64::from(udelta));
                if !self.reported && ext_seq < self.base_seq {
                    self.base_seq = ext_seq;
                }
            }
        }
        self.received += 1;
        self.update_jitter(now, rtp_timestamp);
    }

    /// RFC 3550 A.8: J += (|D| - J) / 16, kept scaled by 16 in integers.
    ///
    /// D is the difference of relative transit times (arrival - RTP timestamp, both in timestamp
    /// units) of this packet and the previous one in arrival order.
    fn update_jitter(&mut self, now: Instant, rtp_timestamp: u32) {
        if self.clock_rate == 0 {
            return;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = to_rtp_units(now.saturating_duration_since(epoch), self.clock_rate);
        let transit = arrival.wrapping_sub(rtp_timestamp);
        if let Some(prev) = self.transit {
            // Wrapping difference read as signed: transit times wrap with the RTP timestamp.
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
            let j = u64::from(self.jitter_q4);
            let next = j + u64::from(d) - ((j + 8) >> 4);
            self.jitter_q4 = u32::try_from(next).unwrap_or(u32::MAX);
        }
        self.transit = Some(transit);
    }

    /// Records a sender report from this SSRC, for LSR/DLSR (RFC 3550 6.4.1).
    pub fn on_sender_report(&mut self, now: Instant, ntp_timestamp: u64) {
        self.last_sr = ntp_middle32(ntp_timestamp);
        self.last_sr_at = Some(now);
    }

    /// Builds a report block (RFC 3550 6.4.1, A.3) and starts a new reporting interval.
    pub fn report_block(&mut self, now: Instant) -> ReportBlock {
        let delay_since_last_sr = match self.last_sr_at {
            Some(at) => to_dlsr_units(now.saturating_duration_since(at)),
            None => 0,
        };
        let mut block = ReportBlock {
            ssrc: self.ssrc,
            last_sr: self.last_sr,
            delay_since_last_sr,
            ..ReportBlock::default()
        };
        if !self.started {
            return block;
        }

        let extended_max = self.extended_max();
        let expected = extended_max - self.base_seq + 1;
        let received = i64::try_from(self.received).unwrap_or(i64::MAX);
        let lost = expected - received;

        let expected_interval = expected - self.expected_prior;
        self.expected_prior = expected;
        let received_prior = i64::try_from(self.received_prior).unwrap_or(i64::MAX);
        let received_interval = received - received_prior;
        self.received_prior = self.received;
        let lost_interval = expected_interval - received_interval;
        let fraction_lost = if expected_interval <= 0 || lost_interval <= 0 {
            0
        } else {
            // lost_interval <= expected_interval, so this is at most 256; 8-bit fixed point.
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        self.reported = true;

        // 24-bit signed field: clamp as A.3 does.
        block.cumulative_lost = lost.clamp(-0x80_0000, 0x7f_ffff) as i32;
        block.fraction_lost = fraction_lost;
        block.extended_highest_seq = extended_max as u32;
        block.jitter = self.jitter();
        block
    }

    /// Packets counted as received (duplicates included, as in RFC 3550).
    pub fn packets_received(&self) -> u64 {
        self.received
    }

    /// Cumulative lost: expected - received; negative when duplicates arrive (RFC 3550 6.4.1).
    pub fn packets_lost(&self) -> i64 {
        if !self.started {
            return 0;
        }
        let expected = self.extended_max() - self.base_seq + 1;
        expected - i64::try_from(self.received).unwrap_or(i64::MAX)
    }

    /// Extended highest sequence number received: wrap count in the top 16 bits.
    pub fn extended_highest_seq(&self) -> u32 {
        self.extended_max() as u32
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }
}

/// Converts a duration to RTP timestamp units, wrapping like RTP timestamps do.
fn to_rtp_units(d: Duration, clock_rate: u32) -> u32 {
    let rate = u64::from(clock_rate);
    let whole = d.as_secs().wrapping_mul(rate);
    // subsec_nanos < 1e9 and rate < 2^32, so the product fits in u64.
    let frac = u64::from(d.subsec_nanos()) * rate / 1_000_000_000;
    whole.wrapping_add(frac) as u32
}

/// Converts a duration to units of 1/65536 s (RFC 3550 6.4.1 DLSR), saturating.
fn to_dlsr_units(d: Duration) -> u32 {
    let whole = d.as_secs().saturating_mul(65536);
    let frac = (u64::from(d.subsec_nanos()) << 16) / 1_000_000_000;
    u32::try_from(whole.saturating_add(frac)).unwrap_or(u32::MAX)
}
