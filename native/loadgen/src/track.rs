//! Receive tracking of one stream (one sender's ssrc at one receiver): unique packets, gaps,
//! reordering and duplicates, from the payload's 64-bit sequence number.

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

#[cfg(test)]
mod tests {
    use super::*;

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
