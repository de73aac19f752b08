//! Pacing: a receiver's video leaves at a bounded rate (`PACING_FACTOR` times its estimate), so a
//! burst (keyframes of several senders at once, a layer switch) waits here instead of overflowing the
//! queue of the receiver's bottleneck link, where it would take that receiver's audio with it.
//!
//! Video and retransmissions are paced, retransmissions ahead of held video (`hold` with `first`, as
//! libwebrtc's pacer orders them: a repair is worth more than the next frame, and a burst of them on a
//! small link takes the link's queue, and the audio in it, as surely as video does); audio, RTCP and
//! probe padding are never held: they leave at once and only spend the budget. Held packets are plain
//! RTP, already rewritten for the receiver; the transport stamps their transport-wide sequence number
//! and protects them when they leave, so the estimator sees the time they really left (a packet's wait
//! here is not the link's queueing delay).
//!
//! A backlog that would not leave within `MAX_QUEUE_DELAY_US` of its oldest packet's arrival at the
//! pacing rate raises the rate to make it (libwebrtc's pacer does the same, over 2 s); past `MAX_HELD` packets the
//! oldest is dropped and counted. Buffers are reused: no allocation once the queue has been as long
//! as it gets. Sans-IO: time is microseconds since the owner's epoch.

use std::collections::VecDeque;

/// The pacing rate against the estimate (headroom for an estimate below the link, and for the
/// Allocator's layers, which are means over seconds).
pub const PACING_FACTOR: f64 = 1.5;
/// Budget saved up while idle, at most this much time at the pacing rate ...
const MAX_BURST_US: f64 = 20_000.0;
/// ... and never less than two full packets.
const MIN_BURST_BYTES: f64 = 2_400.0;
/// The longest a backlog should take to leave: a longer one raises the rate.
pub const MAX_QUEUE_DELAY_US: i64 = 400_000;
/// A late backlog is planned to leave over at least this long.
const MIN_DRAIN_US: i64 = 20_000;
/// Packets held at most (about a 720p keyframe and a half of 180p ones); the oldest goes first.
pub const MAX_HELD: usize = 256;

/// Counters of one transport's pacing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacerStats {
    /// Packets held before leaving, and dropped because the queue was full.
    pub held: u64,
    pub dropped: u64,
    /// The longest any packet waited, microseconds.
    pub max_wait_us: u64,
}

/// One held packet: plain rewritten RTP, where its transport-cc field is, and since when it waits.
#[derive(Debug)]
pub struct Held {
    pub packet: Vec<u8>,
    pub tcc_at: Option<usize>,
    since_us: i64,
}

#[derive(Debug, Default)]
pub struct Pacer {
    queue: VecDeque<Held>,
    /// How many of the queue's first packets are retransmissions (`hold` with `first`).
    first: usize,
    spare: Vec<Vec<u8>>,
    queued_bytes: usize,
    /// PACING_FACTOR times the estimate, bit/s (None: no estimate yet, nothing is held).
    rate_bps: Option<f64>,
    /// Bytes that may leave now; below zero after what left unpaced.
    budget: f64,
    last_us: Option<i64>,
    stats: PacerStats,
}

impl Pacer {
    pub fn new() -> Self {
        Pacer::default()
    }

    pub fn stats(&self) -> PacerStats {
        self.stats
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// The receiver's estimate, bit/s, when it changes (it does only on feedback): the pacing rate
    /// follows it.
    pub fn set_estimate(&mut self, bps: Option<u64>) {
        self.rate_bps = bps.map(|b| b as f64 * PACING_FACTOR);
    }

    pub fn rate_bps(&self) -> Option<f64> {
        self.rate_bps
    }

    /// The rate the budget fills at: `rate_bps`, or faster when the backlog would not have left
    /// `MAX_QUEUE_DELAY_US` after its oldest packet was held (never planning on less than
    /// `MIN_DRAIN_US`).
    fn drain_rate(&self, now_us: i64, rate_bps: f64) -> f64 {
        let Some(head) = self.queue.front() else {
            return rate_bps;
        };
        let left = (MAX_QUEUE_DELAY_US - (now_us - head.since_us)).max(MIN_DRAIN_US);
        rate_bps.max(self.queued_bytes as f64 * 8.0 * 1e6 / left as f64)
    }

    fn refill(&mut self, now_us: i64, rate_bps: f64) {
        let rate = self.drain_rate(now_us, rate_bps);
        let cap = (rate * MAX_BURST_US / 8e6).max(MIN_BURST_BYTES);
        if let Some(last) = self.last_us {
            let dt = (now_us - last).max(0) as f64;
            self.budget = (self.budget + rate * dt / 8e6).min(cap);
        } else {
            self.budget = cap;
        }
        self.last_us = Some(now_us);
    }

    /// Whether a video packet may leave at once at `now_us` (no estimate yet, or nothing held and
    /// budget left); if not, the caller holds it.
    pub fn may_send(&mut self, now_us: i64) -> bool {
        let Some(rate) = self.rate_bps else {
            return true;
        };
        self.refill(now_us, rate);
        self.queue.is_empty() && self.budget > 0.0
    }

    /// Counts `bytes` that left (paced or not) against the budget.
    pub fn spend(&mut self, bytes: usize) {
        self.budget -= bytes as f64;
    }

    /// Holds a copy of `plain` (then `rewrite` applied to the copy); `tcc_at` is where its
    /// transport-cc field is. A retransmission (`first`) leaves before any held video, after those held
    /// before it. Returns whether an older packet was dropped to make room.
    pub fn hold(
        &mut self,
        now_us: i64,
        plain: &[u8],
        tcc_at: Option<usize>,
        first: bool,
        rewrite: impl FnOnce(&mut [u8]),
    ) -> bool {
        let dropped = self.make_room();
        let held = self.copy(now_us, plain, tcc_at, rewrite);
        if first {
            self.queue.insert(self.first, held);
            self.first += 1;
        } else {
            self.queue.push_back(held);
        }
        dropped
    }

    /// At `MAX_HELD`, drops the oldest held video (the oldest retransmission if only they are held).
    fn make_room(&mut self) -> bool {
        if self.queue.len() < MAX_HELD {
            return false;
        }
        let at = if self.queue.len() > self.first {
            self.first
        } else {
            self.first -= 1;
            0
        };
        if let Some(old) = self.queue.remove(at) {
            self.queued_bytes -= old.packet.len();
            self.spare.push(old.packet);
        }
        self.stats.dropped += 1;
        true
    }

    fn copy(
        &mut self,
        now_us: i64,
        plain: &[u8],
        tcc_at: Option<usize>,
        rewrite: impl FnOnce(&mut [u8]),
    ) -> Held {
        let mut packet = self.spare.pop().unwrap_or_default();
        packet.clear();
        packet.extend_from_slice(plain);
        rewrite(&mut packet);
        self.queued_bytes += packet.len();
        self.stats.held += 1;
        Held {
            packet,
            tcc_at,
            since_us: now_us,
        }
    }

    /// The next held packet, if the budget lets it leave at `now_us`. Spend its bytes after sending,
    /// and give its buffer back (`recycle`).
    pub fn pop(&mut self, now_us: i64) -> Option<Held> {
        if self.queue.is_empty() {
            return None;
        }
        if let Some(rate) = self.rate_bps {
            self.refill(now_us, rate);
            if self.budget <= 0.0 {
                return None;
            }
        }
        let held = self.queue.pop_front()?;
        self.first = self.first.saturating_sub(1);
        self.queued_bytes -= held.packet.len();
        let waited = (now_us - held.since_us).max(0) as u64;
        self.stats.max_wait_us = self.stats.max_wait_us.max(waited);
        Some(held)
    }

    /// Takes back a buffer `pop` handed out.
    pub fn recycle(&mut self, packet: Vec<u8>) {
        if self.spare.len() < MAX_HELD {
            self.spare.push(packet);
        }
    }

    /// When the next held packet may leave (now, if the budget allows), if one is held.
    pub fn next_send_us(&self, now_us: i64) -> Option<i64> {
        if self.queue.is_empty() {
            return None;
        }
        let Some(rate_bps) = self.rate_bps.filter(|_| self.budget <= 0.0) else {
            return Some(now_us);
        };
        let rate = self.drain_rate(now_us, rate_bps).max(1.0);
        let wait = (-self.budget + 1.0) * 8e6 / rate;
        Some(now_us + wait.ceil() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: f64 = 480_000.0; // 60 kB/s: a 1200-byte packet every 20 ms

    /// A pacer at RATE (an estimate of 320 kbit/s).
    fn pacer() -> Pacer {
        let mut p = Pacer::new();
        p.set_estimate(Some(320_000));
        assert_eq!(p.rate_bps(), Some(RATE));
        p
    }

    fn packet(n: u8) -> Vec<u8> {
        vec![n; 1200]
    }

    /// Sends what the pacer lets out every millisecond from `from_us` for `ms`; returns (time, first
    /// byte) of each.
    fn drain(p: &mut Pacer, from_us: i64, ms: i64) -> Vec<(i64, u8)> {
        let mut out = Vec::new();
        for t in 0..ms {
            let now = from_us + t * 1000;
            while let Some(h) = p.pop(now) {
                p.spend(h.packet.len());
                out.push((now, h.packet[0]));
                p.recycle(h.packet);
            }
        }
        out
    }

    #[test]
    fn a_burst_leaves_at_the_pacing_rate_in_order() {
        let mut p = pacer();
        let mut sent_at_once = 0;
        for n in 0..10 {
            if p.may_send(0) {
                p.spend(1200);
                sent_at_once += 1;
            } else {
                p.hold(0, &packet(n), None, false, |_| {});
            }
        }
        // The idle budget lets two packets out at once; the rest wait.
        assert_eq!(sent_at_once, 2);
        assert_eq!(p.len(), 8);
        let out = drain(&mut p, 0, 400);
        let order: Vec<u8> = out.iter().map(|&(_, n)| n).collect();
        assert_eq!(order, (2..10).collect::<Vec<u8>>());
        // 8 packets of 1200 bytes at 60 kB/s: the last leaves at about 160 ms, none early.
        let last = out.last().expect("sent").0;
        assert!((140_000..=170_000).contains(&last), "{last}");
        for (i, &(t, _)) in out.iter().enumerate() {
            assert!(t >= (i as i64) * 20_000 - 1_000, "packet {i} at {t}");
        }
    }

    #[test]
    fn what_leaves_unpaced_spends_the_budget_and_delays_video() {
        let mut p = pacer();
        assert!(p.may_send(0));
        // Audio and padding went out unpaced, 6 kB.
        p.spend(6_000);
        assert!(!p.may_send(0));
        p.hold(0, &packet(1), None, false, |_| {});
        let next = p.next_send_us(0).expect("held");
        // 3.6 kB over the idle budget's 2.4 kB: 60 ms at 60 kB/s.
        assert!((55_000..=65_000).contains(&next), "{next}");
        assert!(p.pop(next - 2_000).is_none());
        assert!(p.pop(next).is_some());
    }

    #[test]
    fn a_backlog_drains_within_the_queue_delay_bound() {
        let mut p = pacer();
        p.may_send(0);
        p.spend(2_400);
        // 200 packets (240 kB): four seconds at the pacing rate, gone within the bound instead.
        for n in 0..200u8 {
            p.hold(0, &packet(n), None, false, |_| {});
        }
        let out = drain(&mut p, 0, 2_000);
        assert_eq!(out.len(), 200);
        let last = out.last().expect("sent").0;
        // Within the bound and the last plans' floor (each plans its rest over at least 20 ms).
        let bound = MAX_QUEUE_DELAY_US + 3 * MIN_DRAIN_US;
        assert!(last <= bound, "{last}");
        assert!(p.stats().max_wait_us <= bound as u64);
        // Not all at once either: the first half took about half the time.
        assert!(out[100].0 >= MAX_QUEUE_DELAY_US / 4, "{:?}", out[100]);
    }

    #[test]
    fn nothing_is_held_before_an_estimate() {
        let mut p = Pacer::new();
        for _ in 0..10 {
            assert!(p.may_send(0));
            p.spend(1200);
        }
        // Pacing starts from an idle budget (two packets at this rate), whatever left before.
        p.set_estimate(Some(320_000));
        assert!(p.may_send(0));
        p.spend(1200);
        assert!(p.may_send(0));
        p.spend(1200);
        assert!(!p.may_send(0));
    }

    #[test]
    fn retransmissions_leave_before_held_video_in_their_own_order() {
        let mut p = pacer();
        p.may_send(0);
        p.spend(10_000);
        for n in 0..3 {
            p.hold(0, &packet(n), None, false, |_| {});
        }
        p.hold(1_000, &packet(100), None, true, |_| {});
        p.hold(2_000, &packet(101), None, true, |_| {});
        p.hold(3_000, &packet(3), None, false, |_| {});
        let order: Vec<u8> = drain(&mut p, 0, 1_000).iter().map(|&(_, n)| n).collect();
        assert_eq!(order, vec![100, 101, 0, 1, 2, 3]);
        // A full queue drops its oldest video, not a retransmission.
        let mut q = Pacer::new();
        q.set_estimate(Some(1));
        q.may_send(0);
        q.spend(1_000_000);
        q.hold(0, &packet(200), None, true, |_| {});
        for n in 0..MAX_HELD {
            q.hold(0, &packet(n as u8), None, false, |_| {});
        }
        assert_eq!(q.stats().dropped, 1);
        q.set_estimate(Some(1_000_000_000));
        let first: Vec<u8> = (0..2)
            .filter_map(|_| q.pop(1_000_000).map(|h| h.packet[0]))
            .collect();
        assert_eq!(first, vec![200, 1]);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_counts_it() {
        let mut p = Pacer::new();
        p.set_estimate(Some(1));
        p.may_send(0);
        p.spend(1_000_000);
        for n in 0..MAX_HELD + 3 {
            p.hold(0, &packet(n as u8), None, false, |_| {});
        }
        assert_eq!(p.len(), MAX_HELD);
        assert_eq!(p.stats().dropped, 3);
        assert_eq!(p.stats().held, (MAX_HELD + 3) as u64);
    }

    #[test]
    fn the_rewrite_applies_to_the_held_copy_and_buffers_are_reused() {
        let mut p = pacer();
        p.may_send(0);
        p.spend(10_000);
        p.hold(0, &[1, 2, 3, 4], Some(2), false, |b| b[0] = 9);
        let h = p.pop(1_000_000).expect("due");
        assert_eq!(h.packet, vec![9, 2, 3, 4]);
        assert_eq!(h.tcc_at, Some(2));
        let ptr = h.packet.as_ptr();
        p.recycle(h.packet);
        p.spend(10_000);
        p.hold(1_000_000, &[5, 6], None, false, |_| {});
        let h = p.pop(3_000_000).expect("due");
        assert_eq!(h.packet.as_ptr(), ptr, "the spare buffer is used again");
    }
}
