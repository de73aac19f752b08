//! The bridge's own NACKs for what it did not receive of a sender's stream (RFC 4585 generic NACK):
//! sans-IO, one per video SSRC. Gaps in the sequence numbers become missing entries; each is asked for
//! at most `MAX_TRIES` times, `RETRY` apart (or the round-trip time, if longer), and given up after
//! `GIVE_UP`; a packet that comes (late, or as RTX) leaves the list. Bounded: at most `CAPACITY` missing
//! entries per stream, and a gap wider than that is not asked for at all (a keyframe repairs it sooner).
//!
//! It also says which RTX packets are repairs (`take_repair`): those of packets still missing or asked
//! for upstream on a receiver's behalf (`want`). Any other is a duplicate of what every receiver has
//! (libwebrtc senders probe their link by resending recent packets on RTX).

use std::time::{Duration, Instant};

/// Missing packets remembered per stream.
pub const CAPACITY: usize = 128;
/// Requests per missing packet.
pub const MAX_TRIES: u8 = 3;
/// The least time between two requests for one packet.
pub const RETRY: Duration = Duration::from_millis(100);
/// How long after it went missing a packet is still worth asking for.
pub const GIVE_UP: Duration = Duration::from_millis(1000);
/// Packets asked for upstream on receivers' behalf, remembered per stream (the oldest goes first).
pub const WANTED: usize = 32;

#[derive(Clone, Copy, Debug)]
struct Missing {
    seq: u16,
    since: Instant,
    asked: Option<Instant>,
    tries: u8,
}

/// What one stream is missing.
#[derive(Clone, Debug, Default)]
pub struct NackTracker {
    highest: Option<u16>,
    missing: Vec<Missing>,
    /// Sequence numbers asked for upstream because a receiver missed them, and since when.
    wanted: Vec<(u16, Instant)>,
    /// Packets asked for, and gaps too wide to ask for.
    pub requested: u64,
    pub gaps_skipped: u64,
}

impl NackTracker {
    pub fn new() -> Self {
        NackTracker {
            highest: None,
            missing: Vec::with_capacity(CAPACITY),
            wanted: Vec::with_capacity(WANTED),
            requested: 0,
            gaps_skipped: 0,
        }
    }

    /// A packet of the stream arrived (in order, late, or unwrapped from RTX).
    #[inline]
    pub fn on_packet(&mut self, seq: u16, now: Instant) {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead == 0 {
            return;
        }
        if ahead < 0x8000 {
            let gap = usize::from(ahead - 1);
            if gap > CAPACITY {
                // A burst wider than what is remembered: the receivers' own requests and a keyframe
                // repair it; asking for all of it would only add to the load that caused it.
                self.gaps_skipped += 1;
                self.missing.clear();
            } else {
                for i in 1..ahead {
                    if self.missing.len() == CAPACITY {
                        self.missing.remove(0);
                    }
                    self.missing.push(Missing {
                        seq: highest.wrapping_add(i),
                        since: now,
                        asked: None,
                        tries: 0,
                    });
                }
            }
            self.highest = Some(seq);
        } else if let Some(i) = self.missing.iter().position(|m| m.seq == seq) {
            self.missing.remove(i);
        }
    }

    /// Appends to `out` the sequence numbers to ask for now (oldest first), and forgets those given up
    /// (after the last try, once its answer had a retry interval to come). `rtt`: the round-trip time
    /// to the sender, when known.
    pub fn due(&mut self, now: Instant, rtt: Option<Duration>, out: &mut Vec<u16>) {
        let retry = rtt.map_or(RETRY, |r| r.max(RETRY));
        let waited =
            |t: Option<Instant>| t.is_none_or(|t| now.saturating_duration_since(t) >= retry);
        self.missing.retain(|m| {
            now.saturating_duration_since(m.since) < GIVE_UP
                && (m.tries < MAX_TRIES || !waited(m.asked))
        });
        for m in &mut self.missing {
            if m.tries < MAX_TRIES && waited(m.asked) {
                m.asked = Some(now);
                m.tries += 1;
                self.requested += 1;
                out.push(m.seq);
            }
        }
    }

    /// How many packets are missing now (those waiting for the answer to their last request too).
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// `seq` was asked for upstream because a receiver missed it (the bridge's cache no longer had it).
    pub fn want(&mut self, seq: u16, now: Instant) {
        self.wanted
            .retain(|&(s, since)| s != seq && now.saturating_duration_since(since) < GIVE_UP);
        if self.wanted.len() == WANTED {
            self.wanted.remove(0);
        }
        self.wanted.push((seq, now));
    }

    /// Whether an RTX packet of `seq` repairs something: the bridge is missing it, or asked for it on a
    /// receiver's behalf within `GIVE_UP`. Either way it then counts as received.
    pub fn take_repair(&mut self, seq: u16, now: Instant) -> bool {
        let mut repair = false;
        if let Some(i) = self.missing.iter().position(|m| m.seq == seq) {
            self.missing.remove(i);
            repair = true;
        }
        if let Some(i) = self.wanted.iter().position(|&(s, _)| s == seq) {
            let (_, since) = self.wanted.remove(i);
            repair |= now.saturating_duration_since(since) < GIVE_UP;
        }
        repair
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(t: &mut NackTracker, now: Instant) -> Vec<u16> {
        let mut out = Vec::new();
        t.due(now, None, &mut out);
        out
    }

    #[test]
    fn a_gap_is_asked_for_retried_and_given_up() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        for s in [10u16, 11, 14] {
            t.on_packet(s, t0);
        }
        assert_eq!(asked(&mut t, t0), vec![12, 13]);
        // Not again before the retry interval.
        assert_eq!(asked(&mut t, t0 + RETRY / 2), Vec::<u16>::new());
        // 12 came as RTX: only 13 is asked again.
        t.on_packet(12, t0 + RETRY / 2);
        assert_eq!(asked(&mut t, t0 + RETRY), vec![13]);
        assert_eq!(asked(&mut t, t0 + 2 * RETRY), vec![13]);
        // Three tries, then no more.
        assert_eq!(asked(&mut t, t0 + 3 * RETRY), Vec::<u16>::new());
        assert_eq!((t.missing(), t.requested), (0, 4));
    }

    #[test]
    fn the_round_trip_time_spaces_retries_and_old_gaps_are_given_up() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        t.on_packet(1, t0);
        t.on_packet(3, t0);
        let mut out = Vec::new();
        t.due(t0, Some(Duration::from_millis(300)), &mut out);
        t.due(t0 + RETRY, Some(Duration::from_millis(300)), &mut out);
        assert_eq!(out, vec![2]);
        t.on_packet(5, t0 + GIVE_UP / 2);
        out.clear();
        t.due(t0 + GIVE_UP, Some(Duration::from_millis(300)), &mut out);
        // 2 is past GIVE_UP; 4 is asked.
        assert_eq!(out, vec![4]);
    }

    #[test]
    fn only_an_rtx_of_a_missing_or_wanted_packet_is_a_repair() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        for s in [10u16, 11, 13] {
            t.on_packet(s, t0);
        }
        // A resend of what arrived (a sender's probe) is none; the missing 12 is, once.
        assert!(!t.take_repair(11, t0));
        assert!(t.take_repair(12, t0));
        assert!(!t.take_repair(12, t0));
        assert_eq!(t.missing(), 0);
        // What a receiver missed and the cache no longer had: asked upstream, a repair while fresh.
        t.want(11, t0);
        t.want(10, t0);
        assert!(t.take_repair(11, t0 + GIVE_UP / 2));
        assert!(!t.take_repair(10, t0 + GIVE_UP));
        // Bounded: the oldest wanted goes first.
        for s in 0..WANTED as u16 + 1 {
            t.want(100 + s, t0);
        }
        assert!(!t.take_repair(100, t0));
        assert!(t.take_repair(101, t0));
    }

    #[test]
    fn the_answer_to_the_last_request_still_counts_as_a_repair() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        t.on_packet(1, t0);
        t.on_packet(3, t0);
        for i in 0..3 {
            assert_eq!(asked(&mut t, t0 + i * RETRY), vec![2]);
        }
        // Asked three times; its answer may still be on the way for a retry interval.
        assert_eq!(asked(&mut t, t0 + 2 * RETRY + RETRY / 2), Vec::<u16>::new());
        assert!(t.take_repair(2, t0 + 2 * RETRY + RETRY / 2));
    }

    #[test]
    fn a_burst_wider_than_the_memory_is_not_asked_for_and_memory_is_bounded() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        t.on_packet(0, t0);
        t.on_packet(1000, t0);
        assert_eq!((t.missing(), t.gaps_skipped), (0, 1));
        // Many small gaps: never more than CAPACITY remembered.
        for i in 0..500u16 {
            t.on_packet(1000 + 2 * i, t0);
        }
        assert!(t.missing() <= CAPACITY);
        // Sequence numbers wrap.
        let mut w = NackTracker::new();
        w.on_packet(65535, t0);
        w.on_packet(1, t0);
        assert_eq!(asked(&mut w, t0), vec![0]);
    }
}
