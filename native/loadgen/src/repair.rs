//! What a browser does about loss, for the endpoints with feedback on: the sender's history of recent
//! video packets and its retransmission budget (answering NACKs, RFC 4585 6.2.1, with RTX, RFC 4588),
//! the receiver's NACK state per received video stream, and the RTP header extensions the endpoints
//! write (RFC 8285 one-byte: audio level, transport-wide sequence number). Sans-IO; everything is
//! bounded and allocated when made.

use std::time::Instant;

use sluice_core::cc::nack::{NackTracker, CAPACITY};

use crate::vp8::Frame;
use crate::AUDIO_LEVEL_EXT_ID;

/// The one-byte header extension id of transport-wide sequence numbers
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01): the focus's and Jicofo's, which the bench
/// signals for the load generator's endpoints.
pub const TRANSPORT_CC_EXT_ID: u8 = 5;
/// The RTX payload type of VP8 (apt 100), as the focus offers it.
pub const PT_RTX: u8 = 96;
/// Sent video packets remembered per SSRC (a power of two): at 1.5 Mbit/s in 1200-byte packets about
/// 4 s, beyond [`HISTORY_AGE_NS`]. Kept as what regenerates the packet, not its bytes (about 64 bytes
/// a packet instead of 1200): the load generator's payload is a function of these.
pub const HISTORY: usize = 512;
/// Older packets are not retransmitted (a receiver gives up after a second, and so does the bridge).
pub const HISTORY_AGE_NS: u64 = 1_000_000_000;
/// One packet is retransmitted at most once in this time (a receiver and the bridge may both ask).
pub const RESEND_SPACING_NS: u64 = 20_000_000;
/// How often a receiver with missing packets looks for NACKs due (libwebrtc's NACK module period).
pub const NACK_INTERVAL_NS: u64 = 20_000_000;

/// What regenerates one sent video packet exactly (header fields and payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentPacket {
    pub seq16: u16,
    pub rtp_ts: u32,
    pub marker: bool,
    /// The payload length asked of [`crate::payload::write`].
    pub payload_len: usize,
    /// The VP8 frame and whether this was its first packet.
    pub vp8: Option<(Frame, bool)>,
    /// The trailer's 64-bit sequence number and send time.
    pub seq: u64,
    pub send_ns: u64,
}

/// Why a NACKed packet was not retransmitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// Not in the history (never sent, or overwritten), or older than [`HISTORY_AGE_NS`].
    Unknown,
    /// Retransmitted less than [`RESEND_SPACING_NS`] ago.
    TooSoon,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    packet: SentPacket,
    /// When it was last retransmitted (0: never).
    resent_ns: u64,
}

/// A sender's recent packets of one video SSRC, by RTP sequence number.
#[derive(Clone, Debug)]
pub struct History {
    slots: Box<[Option<Slot>]>,
}

impl Default for History {
    fn default() -> Self {
        History {
            slots: vec![None; HISTORY].into_boxed_slice(),
        }
    }
}

impl History {
    #[inline]
    pub fn push(&mut self, packet: SentPacket) {
        self.slots[usize::from(packet.seq16) % HISTORY] = Some(Slot {
            packet,
            resent_ns: 0,
        });
    }

    /// The packet sent as `seq16`, to retransmit at `now_ns` (recorded as retransmitted then).
    pub fn resend(&mut self, seq16: u16, now_ns: u64) -> Result<SentPacket, Miss> {
        let slot = self.slots[usize::from(seq16) % HISTORY]
            .as_mut()
            .filter(|s| s.packet.seq16 == seq16)
            .filter(|s| now_ns.saturating_sub(s.packet.send_ns) <= HISTORY_AGE_NS)
            .ok_or(Miss::Unknown)?;
        if slot.resent_ns != 0 && now_ns.saturating_sub(slot.resent_ns) < RESEND_SPACING_NS {
            return Err(Miss::TooSoon);
        }
        slot.resent_ns = now_ns.max(1);
        Ok(slot.packet)
    }
}

/// A token bucket in bytes: what an endpoint may retransmit, at most its top video layer's bitrate,
/// in bursts of a quarter second of it (libwebrtc caps retransmissions by the send rate too).
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    tokens: u64,
    burst: u64,
    bytes_per_s: u64,
    refilled_ns: u64,
}

impl Budget {
    pub fn new(bitrate_bps: u32) -> Self {
        let bytes_per_s = (u64::from(bitrate_bps) / 8).max(12_000);
        let burst = bytes_per_s / 4;
        Budget {
            tokens: burst,
            burst,
            bytes_per_s,
            refilled_ns: 0,
        }
    }

    /// Takes `bytes` at `now_ns` if the budget has them.
    pub fn take(&mut self, bytes: usize, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.refilled_ns);
        if self.refilled_ns == 0 {
            self.refilled_ns = now_ns;
        } else if elapsed > 0 {
            let add = (u128::from(elapsed) * u128::from(self.bytes_per_s) / 1_000_000_000) as u64;
            if add > 0 {
                self.tokens = (self.tokens + add).min(self.burst);
                self.refilled_ns = now_ns;
            }
        }
        let bytes = bytes as u64;
        if self.tokens < bytes {
            return false;
        }
        self.tokens -= bytes;
        true
    }
}

/// A receiver's NACK state of one received video stream: `sluice_core`'s [`NackTracker`] (each
/// missing packet asked for at most 3 times, 100 ms apart, given up after a second; a gap wider than
/// 128 left to a keyframe) and the sequence numbers asked for, so a packet that comes after being
/// asked for counts as recovered.
#[derive(Clone, Debug)]
pub struct Repair {
    tracker: NackTracker,
    /// Asked for and not arrived yet, oldest first; at most the tracker's capacity.
    asked: Vec<u16>,
}

impl Default for Repair {
    fn default() -> Self {
        Repair {
            tracker: NackTracker::new(),
            asked: Vec::with_capacity(CAPACITY),
        }
    }
}

impl Repair {
    /// A packet of the stream arrived (in order, late, or unwrapped from RTX). Returns whether it was
    /// asked for: recovered.
    #[inline]
    pub fn on_packet(&mut self, seq: u16, now: Instant) -> bool {
        let recovered = match self.asked.iter().position(|&s| s == seq) {
            Some(i) => {
                self.asked.remove(i);
                true
            }
            None => false,
        };
        self.tracker.on_packet(seq, now);
        recovered
    }

    /// Appends the sequence numbers to ask for now to `out`.
    pub fn due(&mut self, now: Instant, out: &mut Vec<u16>) {
        let start = out.len();
        // The round-trip time is not measured: the tracker's 100 ms spacing is far above loopback's.
        self.tracker.due(now, None, out);
        for &seq in &out[start..] {
            if self.asked.contains(&seq) {
                continue;
            }
            if self.asked.len() == CAPACITY {
                self.asked.remove(0);
            }
            self.asked.push(seq);
        }
    }

    /// Packets missing now (asked for or still to ask).
    pub fn missing(&self) -> usize {
        self.tracker.missing()
    }
}

/// Writes the RFC 8285 one-byte header extension block after a fixed 12-byte RTP header in `out`
/// (setting X): the audio level (RFC 6464; V when not silence) and the transport-wide sequence
/// number, either or both. Returns the header length with the block (12 without either).
pub fn write_extensions(out: &mut [u8], level: Option<u8>, tcc: Option<u16>) -> usize {
    write_extensions_with(out, level, tcc, None)
}

/// The MID and RID (RFC 8843 15, RFC 8852 3.3) a packet of RID-signalled simulcast carries: the
/// one-byte extension ids the offer gave them, the m-line's mid and the layer's rid, one byte each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sdes {
    pub mid_id: u8,
    pub mid: u8,
    pub rid_id: u8,
    pub rid: u8,
}

/// As [`write_extensions`], with `sdes` (MID and RID) as well.
pub fn write_extensions_with(
    out: &mut [u8],
    level: Option<u8>,
    tcc: Option<u16>,
    sdes: Option<Sdes>,
) -> usize {
    const FIXED: usize = 12;
    if level.is_none() && tcc.is_none() && sdes.is_none() {
        return FIXED;
    }
    out[0] |= 0x10;
    let mut at = FIXED + 4;
    if let Some(l) = level {
        let v = if l < 127 { 0x80 } else { 0 };
        out[at] = AUDIO_LEVEL_EXT_ID << 4;
        out[at + 1] = v | l.min(127);
        at += 2;
    }
    if let Some(seq) = tcc {
        out[at] = (TRANSPORT_CC_EXT_ID << 4) | 1;
        out[at + 1..at + 3].copy_from_slice(&seq.to_be_bytes());
        at += 3;
    }
    if let Some(x) = sdes {
        out[at..at + 4].copy_from_slice(&[x.mid_id << 4, x.mid, x.rid_id << 4, x.rid]);
        at += 4;
    }
    let end = (at - FIXED).next_multiple_of(4) + FIXED;
    out[at..end].fill(0);
    let words = ((end - FIXED - 4) / 4) as u16;
    out[FIXED..FIXED + 4].copy_from_slice(&[0xbe, 0xde, (words >> 8) as u8, words as u8]);
    end
}

/// An RTX packet's original sequence number and payload (RFC 4588 4), if it carries one.
pub fn rtx_original(payload: &[u8]) -> Option<(u16, &[u8])> {
    let (osn, body) = payload.split_first_chunk::<2>()?;
    (!body.is_empty()).then(|| (u16::from_be_bytes(*osn), body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::cc::nack::{GIVE_UP, MAX_TRIES, RETRY};
    use sluice_core::rtp::RtpView;

    fn sent(seq16: u16, send_ns: u64) -> SentPacket {
        SentPacket {
            seq16,
            rtp_ts: 9,
            marker: false,
            payload_len: 300,
            vp8: None,
            seq: u64::from(seq16),
            send_ns,
        }
    }

    #[test]
    fn history_is_bounded_by_count_and_age_and_spaces_resends() {
        let mut h = History::default();
        let t0 = 5_000_000_000;
        for s in 0..(HISTORY as u16 + 10) {
            h.push(sent(s, t0));
        }
        // The first 10 were overwritten by the last 10.
        assert_eq!(h.resend(3, t0), Err(Miss::Unknown));
        assert_eq!(
            h.resend(HISTORY as u16 + 3, t0),
            Ok(sent(HISTORY as u16 + 3, t0))
        );
        // Asked again at once: not again within the spacing, then again.
        assert_eq!(h.resend(HISTORY as u16 + 3, t0 + 1), Err(Miss::TooSoon));
        assert!(h.resend(HISTORY as u16 + 3, t0 + RESEND_SPACING_NS).is_ok());
        // Too old to be worth it.
        assert_eq!(h.resend(100, t0 + HISTORY_AGE_NS + 1), Err(Miss::Unknown));
        // Never sent.
        assert_eq!(History::default().resend(7, t0), Err(Miss::Unknown));
    }

    #[test]
    fn the_budget_allows_a_burst_then_the_rate() {
        // 96 kbit/s: 12 000 bytes a second, bursts of 3 000.
        let mut b = Budget::new(96_000);
        let t0 = 1_000_000_000;
        assert!(b.take(1_200, t0) && b.take(1_200, t0));
        assert!(!b.take(1_200, t0), "the burst is spent");
        // 100 ms later: 1 200 more bytes, with the 600 left.
        assert!(b.take(1_200, t0 + 100_000_000));
        assert!(!b.take(601, t0 + 100_000_000));
        assert!(b.take(600, t0 + 100_000_000));
        // A long pause refills only up to the burst.
        assert!(b.take(3_000, t0 + 60_000_000_000));
        assert!(!b.take(1, t0 + 60_000_000_000));
    }

    #[test]
    fn a_receiver_asks_retries_gives_up_and_counts_what_came_after_asking() {
        let t0 = Instant::now();
        let mut r = Repair::default();
        let mut out = Vec::new();
        for s in [10u16, 11, 15] {
            assert!(!r.on_packet(s, t0));
        }
        r.due(t0, &mut out);
        assert_eq!(out, [12, 13, 14]);
        // 13 arrives (as a retransmission): recovered; 16 was never asked for.
        assert!(r.on_packet(13, t0 + RETRY / 2));
        assert!(!r.on_packet(16, t0 + RETRY / 2));
        assert!(
            !r.on_packet(13, t0 + RETRY / 2),
            "a duplicate is not recovered twice"
        );
        // Retried RETRY apart, MAX_TRIES times in all, then given up.
        let mut tries = 1;
        for k in 1..10u32 {
            out.clear();
            r.due(t0 + RETRY * k, &mut out);
            if out.is_empty() {
                break;
            }
            assert_eq!(out, [12, 14]);
            tries += 1;
        }
        assert_eq!(tries, MAX_TRIES);
        assert_eq!(r.missing(), 0);
        // A gap older than GIVE_UP is never asked for.
        let mut late = Repair::default();
        late.on_packet(1, t0);
        late.on_packet(3, t0);
        out.clear();
        late.due(t0 + GIVE_UP, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn mid_and_rid_parse_back_beside_the_others() {
        let mut pkt = [0u8; 40];
        crate::payload::write_rtp_header(&mut pkt, false, 100, 1, 2, 3);
        let sdes = Sdes {
            mid_id: 4,
            mid: b'1',
            rid_id: 10,
            rid: b'h',
        };
        let n = write_extensions_with(&mut pkt, None, Some(9), Some(sdes));
        assert_eq!(n, 24);
        let v = RtpView::parse(&pkt).expect("parses");
        assert_eq!(v.extension(4), Some(&b"1"[..]));
        assert_eq!(v.extension(10), Some(&b"h"[..]));
        assert_eq!(v.extension(TRANSPORT_CC_EXT_ID), Some(&[0, 9][..]));
    }

    #[test]
    fn extensions_parse_back_with_the_rtp_reader() {
        for (level, tcc, len) in [
            (None, None, 12),
            (Some(30), None, 20),
            (None, Some(0xbeef), 20),
            (Some(127), Some(7), 24),
        ] {
            let mut pkt = [0u8; 40];
            crate::payload::write_rtp_header(&mut pkt, false, 100, 1, 2, 3);
            let n = write_extensions(&mut pkt, level, tcc);
            assert_eq!(n, len);
            let v = RtpView::parse(&pkt).expect("parses");
            assert_eq!(v.header_len(), len);
            assert_eq!(
                v.extension(TRANSPORT_CC_EXT_ID),
                tcc.map(|s| s.to_be_bytes()).as_ref().map(|b| &b[..])
            );
            let want = level.map(|l| [if l < 127 { 0x80 | l } else { l }]);
            assert_eq!(
                v.extension(AUDIO_LEVEL_EXT_ID),
                want.as_ref().map(|b| &b[..])
            );
        }
    }

    #[test]
    fn rtx_unwraps_to_the_original_sequence_number_and_payload() {
        assert_eq!(
            rtx_original(&[0x12, 0x34, 9, 8]),
            Some((0x1234, &[9u8, 8][..]))
        );
        // Padding-only probes and truncated ones carry no original.
        assert_eq!(rtx_original(&[0x12, 0x34]), None);
        assert_eq!(rtx_original(&[0x12]), None);
    }
}
