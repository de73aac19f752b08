//! Receive tracking at one receiver, two ways:
//! - [`StreamTracker`], per sent stream (one sender's ssrc as the payload names it): unique packets,
//!   gaps, reordering and duplicates from the payload's 64-bit sequence number. Loss accounting.
//! - [`ReceiveStream`], per received stream (the RTP header's ssrc, as a browser sees it): RTP
//!   sequence continuity, simulcast layer switches, frames, keyframes and freezes. A forwarder that
//!   rewrites several layers onto one ssrc must keep this stream gapless and switch only at
//!   keyframes.

use crate::payload::Kind;

/// How far back (in packets) duplicates are still recognised.
pub const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// What one arrival was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The newest packet so far (in order, or after a gap).
    InOrder,
    /// Older than the newest, not seen before: it filled a gap.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Older than the duplicate window: counted as reordered, duplicates cannot be told apart.
    Late,
}

#[derive(Clone, Debug)]
pub struct StreamTracker {
    pub sender: u32,
    pub ssrc: u32,
    pub video: bool,
    /// Unique packets received.
    pub received: u64,
    pub bytes: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub late: u64,
    /// Lowest and highest sequence number received.
    pub first: u64,
    pub highest: u64,
    pub latency_sum_ns: u64,
    pub latency_max_ns: u64,
    /// Bit i: `highest - i` was received.
    window: [u64; WORDS],
}

impl StreamTracker {
    pub fn new(sender: u32, ssrc: u32, video: bool) -> Self {
        StreamTracker {
            sender,
            ssrc,
            video,
            received: 0,
            bytes: 0,
            duplicates: 0,
            reordered: 0,
            late: 0,
            first: 0,
            highest: 0,
            latency_sum_ns: 0,
            latency_max_ns: 0,
            window: [0; WORDS],
        }
    }

    /// Records one arrival of sequence number `seq`.
    pub fn on_packet(&mut self, seq: u64, bytes: usize) -> Arrival {
        if self.received == 0 {
            self.first = seq;
            self.highest = seq;
            self.window = [0; WORDS];
            self.window[0] = 1;
            self.count(bytes);
            return Arrival::InOrder;
        }
        if seq > self.highest {
            self.shift(seq - self.highest);
            self.highest = seq;
            self.window[0] |= 1;
            self.count(bytes);
            return Arrival::InOrder;
        }
        let back = self.highest - seq;
        self.first = self.first.min(seq);
        if back >= WINDOW {
            self.late += 1;
            self.reordered += 1;
            self.count(bytes);
            return Arrival::Late;
        }
        let (word, bit) = ((back / 64) as usize, back % 64);
        if self.window[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.window[word] |= 1 << bit;
        self.reordered += 1;
        self.count(bytes);
        Arrival::Reordered
    }

    fn count(&mut self, bytes: usize) {
        self.received += 1;
        self.bytes += bytes as u64;
    }

    pub fn on_latency(&mut self, ns: u64) {
        self.latency_sum_ns = self.latency_sum_ns.saturating_add(ns);
        self.latency_max_ns = self.latency_max_ns.max(ns);
    }

    /// Shifts the window so that bit 0 stands for `highest + by`.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.window = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..WORDS).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.window[s]);
            let lo = src
                .and_then(|s| s.checked_sub(1))
                .map_or(0, |s| self.window[s]);
            self.window[i] = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (64 - bits))
            };
        }
    }

    /// Packets missing between the first and the highest received (loss while running).
    pub fn gap_lost(&self) -> u64 {
        if self.received == 0 {
            return 0;
        }
        (self.highest - self.first)
            .saturating_add(1)
            .saturating_sub(self.received)
    }
}

/// One packet as a [`ReceiveStream`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// RTP sequence number.
    pub seq: u16,
    /// Simulcast layer of the sent stream it came from (from the payload).
    pub layer: u8,
    /// It starts a frame (VP8: S=1 and PID=0; audio: every packet).
    pub starts_frame: bool,
    /// It starts a keyframe (VP8: and P=0 in the payload header).
    pub starts_keyframe: bool,
    /// When it was read, CLOCK_MONOTONIC ns.
    pub at_ns: u64,
}

/// One received RTP stream (one header ssrc) at one receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveStream {
    pub ssrc: u32,
    /// The sender of its first packet (from the payload).
    pub sender: u32,
    pub kind: Kind,
    pub packets: u64,
    /// Sequence numbers skipped: a packet `n` past the highest so far adds `n - 1`. Zero on a
    /// lossless path, across layer switches too when a forwarder rewrites them.
    pub seq_gaps: u64,
    /// Packets at or below the highest sequence number so far (late, duplicated or restarted).
    pub seq_late: u64,
    /// Layer of the newest in-order packet.
    pub layer: u8,
    /// In-order packets whose layer differs from the one before.
    pub layer_switches: u64,
    /// Of those, switches whose first packet does not start a keyframe: the receiver cannot decode
    /// the new layer until one comes.
    pub switches_off_keyframe: u64,
    /// Video: frames and keyframes begun (first packets received).
    pub frames: u64,
    pub keyframes: u64,
    /// Video: gaps between frames longer than the freeze threshold, and their total length.
    pub freezes: u64,
    pub freeze_ns: u64,
    highest: u16,
    last_frame_ns: u64,
}

impl ReceiveStream {
    pub fn new(ssrc: u32, sender: u32, kind: Kind) -> Self {
        ReceiveStream {
            ssrc,
            sender,
            kind,
            packets: 0,
            seq_gaps: 0,
            seq_late: 0,
            layer: 0,
            layer_switches: 0,
            switches_off_keyframe: 0,
            frames: 0,
            keyframes: 0,
            freezes: 0,
            freeze_ns: 0,
            highest: 0,
            last_frame_ns: 0,
        }
    }

    /// Records one packet. A freeze is a gap of more than `freeze_ns` between the starts of two
    /// frames of a video stream: counted when the next frame comes, so a stream that ends (its
    /// sender stopped, or a forwarder stopped sending it) is not frozen.
    pub fn on_packet(&mut self, p: &Received, freeze_ns: u64) {
        let first = self.packets == 0;
        self.packets += 1;
        if first {
            self.highest = p.seq;
            self.layer = p.layer;
        } else {
            // RFC 3550 A.1: the 16-bit distance decides ahead or behind.
            let ahead = p.seq.wrapping_sub(self.highest) as i16;
            if ahead <= 0 {
                // A late packet of the previous layer says nothing about switching.
                self.seq_late += 1;
                return self.on_frame(p, freeze_ns);
            }
            self.seq_gaps += (ahead - 1) as u64;
            self.highest = p.seq;
            if p.layer != self.layer {
                self.layer_switches += 1;
                self.switches_off_keyframe += u64::from(!p.starts_keyframe);
                self.layer = p.layer;
            }
        }
        self.on_frame(p, freeze_ns);
    }

    fn on_frame(&mut self, p: &Received, freeze_ns: u64) {
        if self.kind != Kind::Video || !p.starts_frame {
            return;
        }
        if self.frames > 0 {
            let gap = p.at_ns.saturating_sub(self.last_frame_ns);
            if gap > freeze_ns {
                self.freezes += 1;
                self.freeze_ns += gap;
            }
        }
        self.frames += 1;
        self.keyframes += u64::from(p.starts_keyframe);
        self.last_frame_ns = self.last_frame_ns.max(p.at_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// `n` video packets from `seq` on, one frame of `per_frame` packets every 33 ms.
    fn frames(seq: u16, n: u16, per_frame: u16, layer: u8, t0: u64) -> Vec<Received> {
        (0..n)
            .map(|i| Received {
                seq: seq.wrapping_add(i),
                layer,
                starts_frame: i % per_frame == 0,
                starts_keyframe: i == 0,
                at_ns: t0 + u64::from(i / per_frame) * 33 * MS,
            })
            .collect()
    }

    #[test]
    fn a_gapless_stream_across_layer_switches_at_keyframes() {
        let mut s = ReceiveStream::new(5, 1, Kind::Video);
        // Layer 0, then 2, then 1, each starting with a keyframe; the 16-bit sequence wraps.
        let mut seq = 65_500u16;
        let mut t = 0;
        for layer in [0u8, 2, 1] {
            for p in frames(seq, 60, 3, layer, t) {
                s.on_packet(&p, 500 * MS);
            }
            seq = seq.wrapping_add(60);
            t += 20 * 33 * MS;
        }
        assert_eq!((s.packets, s.seq_gaps, s.seq_late), (180, 0, 0));
        assert_eq!(
            (s.layer, s.layer_switches, s.switches_off_keyframe),
            (1, 2, 0)
        );
        assert_eq!((s.frames, s.keyframes, s.freezes), (60, 3, 0));
    }

    #[test]
    fn gaps_late_packets_and_switches_off_keyframes_are_counted() {
        let mut s = ReceiveStream::new(5, 1, Kind::Video);
        let p = |seq: u16, layer: u8, key: bool| Received {
            seq,
            layer,
            starts_frame: key,
            starts_keyframe: key,
            at_ns: 0,
        };
        for pkt in [p(10, 0, true), p(11, 0, false), p(15, 0, false)] {
            s.on_packet(&pkt, 500 * MS);
        }
        assert_eq!(s.seq_gaps, 3);
        // A late packet of another layer is late, not a switch.
        s.on_packet(&p(12, 1, false), 500 * MS);
        assert_eq!((s.seq_late, s.layer_switches), (1, 0));
        s.on_packet(&p(15, 0, false), 500 * MS);
        assert_eq!(s.seq_late, 2);
        // A switch in the middle of a frame, then one at a keyframe.
        s.on_packet(&p(16, 1, false), 500 * MS);
        s.on_packet(&p(17, 2, true), 500 * MS);
        assert_eq!(
            (s.layer_switches, s.switches_off_keyframe, s.layer),
            (2, 1, 2)
        );
        // Within half the 16-bit space ahead: a gap; further: behind (RFC 3550 A.1's reading).
        s.on_packet(&p(17 + 30_000, 2, false), 500 * MS);
        assert_eq!(s.seq_gaps, 3 + 29_999);
        s.on_packet(&p(47_017u16.wrapping_add(40_000), 2, false), 500 * MS);
        assert_eq!((s.seq_gaps, s.seq_late), (3 + 29_999, 3));
    }

    #[test]
    fn freezes_are_gaps_between_frames_above_the_threshold() {
        let mut s = ReceiveStream::new(5, 1, Kind::Video);
        let frame = |seq: u16, at_ms: u64| Received {
            seq,
            layer: 0,
            starts_frame: true,
            starts_keyframe: false,
            at_ns: at_ms * MS,
        };
        // 33 ms apart, then one 500 ms gap (not above), one of 700 ms, one of 2 s.
        for (i, at) in [0, 33, 66, 566, 1266, 1299, 3299].into_iter().enumerate() {
            s.on_packet(&frame(i as u16, at), 500 * MS);
        }
        assert_eq!((s.frames, s.freezes), (7, 2));
        assert_eq!(s.freeze_ns, 2700 * MS);
        // Packets within a frame are no new frame, however late.
        s.on_packet(
            &Received {
                starts_frame: false,
                ..frame(7, 9000)
            },
            500 * MS,
        );
        assert_eq!(s.freezes, 2);
        // Audio streams have no frames to freeze.
        let mut a = ReceiveStream::new(6, 1, Kind::Audio);
        a.on_packet(&frame(1, 0), 500 * MS);
        a.on_packet(&frame(2, 5000), 500 * MS);
        assert_eq!((a.frames, a.freezes, a.packets), (0, 0, 2));
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let mut t = StreamTracker::new(1, 2, true);
        for s in 0..5000 {
            assert_eq!(t.on_packet(s, 100), Arrival::InOrder);
        }
        assert_eq!((t.received, t.gap_lost(), t.reordered), (5000, 0, 0));
        assert_eq!(t.bytes, 500_000);
    }

    #[test]
    fn gaps_reordering_and_duplicates() {
        let mut t = StreamTracker::new(1, 2, false);
        for s in [0, 1, 2, 5, 6] {
            t.on_packet(s, 1);
        }
        assert_eq!(t.gap_lost(), 2);
        assert_eq!(t.on_packet(3, 1), Arrival::Reordered);
        assert_eq!(t.gap_lost(), 1);
        assert_eq!(t.on_packet(3, 1), Arrival::Duplicate);
        assert_eq!(t.on_packet(6, 1), Arrival::Duplicate);
        assert_eq!((t.received, t.duplicates, t.reordered), (6, 2, 1));
    }

    #[test]
    fn duplicates_are_found_across_word_boundaries() {
        let mut t = StreamTracker::new(1, 2, false);
        for s in (0..3000).filter(|s| s % 7 != 0) {
            t.on_packet(s, 1);
        }
        // Everything inside the window: each missing one is new once, then a duplicate.
        for s in (3000 - WINDOW + 1..3000).filter(|s| s % 7 == 0) {
            assert_eq!(t.on_packet(s, 1), Arrival::Reordered, "{s}");
            assert_eq!(t.on_packet(s, 1), Arrival::Duplicate, "{s}");
        }
        for s in (3000 - WINDOW + 1..3000).filter(|s| s % 7 != 0) {
            assert_eq!(t.on_packet(s, 1), Arrival::Duplicate, "{s}");
        }
        assert_eq!(t.on_packet(7, 1), Arrival::Late);
    }

    #[test]
    fn a_jump_beyond_the_window_clears_it() {
        let mut t = StreamTracker::new(1, 2, false);
        t.on_packet(10, 1);
        t.on_packet(10 + 5 * WINDOW, 1);
        assert_eq!(t.gap_lost(), 5 * WINDOW - 1);
        assert_eq!(t.on_packet(10 + 5 * WINDOW - 1, 1), Arrival::Reordered);
    }

    #[test]
    fn extreme_sequence_numbers_do_not_overflow() {
        let mut t = StreamTracker::new(1, 2, false);
        t.on_packet(0, 1);
        t.on_packet(u64::MAX, 1);
        // 2^64 numbers span the range; the count saturates at u64::MAX before the two received.
        assert_eq!(t.gap_lost(), u64::MAX - 2);
        t.on_latency(u64::MAX);
        t.on_latency(u64::MAX);
        assert_eq!(t.latency_sum_ns, u64::MAX);
    }

    #[test]
    fn an_earlier_first_packet_extends_the_range() {
        let mut t = StreamTracker::new(1, 2, false);
        t.on_packet(5, 1);
        t.on_packet(3, 1);
        assert_eq!((t.first, t.highest, t.gap_lost()), (3, 5, 1));
    }
}
