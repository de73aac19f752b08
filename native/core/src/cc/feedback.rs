//! Transport-cc feedback writer (draft-holmer-rmcat-transport-wide-cc-extensions-01 3.1): records
//! when each transport-wide sequence number arrived and writes RTPFB FMT=15 packets reporting them,
//! in the layout [`crate::rtcp::TransportCc`] parses.

use std::time::Duration;

use super::{micros, SeqUnwrapper};
use crate::rtcp::{RtcpError, FMT_TWCC, PT_RTPFB, RTCP_VERSION};

/// Sequence numbers the builder holds between two feedback packets (a power of two). Arrivals
/// more than this far behind the highest are dropped; so are unreported ones pushed out by newer.
pub const WINDOW: usize = 2048;

/// Slot value of a sequence number not (yet) received.
const NOT_RECEIVED: i64 = -1;

/// Header, SSRCs, base sequence number, status count, reference time and fb pkt count.
const FIXED_LEN: usize = 20;
/// The fixed part, one chunk and one small delta, rounded up to a word.
const MIN_PACKET_LEN: usize = 24;

/// A receive delta tick (250 us) and the reference time unit (64 ms), in microseconds.
const TICK_US: i64 = 250;
const REFERENCE_US: i64 = 64_000;

/// Packet status symbols (draft 3.1.1).
const SYMBOL_NOT_RECEIVED: u8 = 0;
const SYMBOL_SMALL: u8 = 1;
const SYMBOL_LARGE: u8 = 2;

/// Symbols a 2-bit and a 1-bit status vector chunk hold, and the longest run (13 bits).
const TWO_BIT_CAPACITY: usize = 7;
const ONE_BIT_CAPACITY: usize = 14;
const MAX_RUN: u16 = 0x1fff;

/// Bounds on one feedback packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedbackLimits {
    /// Packets one feedback reports at most (at most [`WINDOW`]).
    pub max_packets: u16,
    /// Bytes of one feedback packet at most (at least 24; rounded down to a word).
    pub max_bytes: usize,
}

impl Default for FeedbackLimits {
    fn default() -> Self {
        FeedbackLimits {
            max_packets: 1024,
            max_bytes: 1200,
        }
    }
}

/// What the builder did with its input, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedbackCounters {
    /// Arrivals recorded.
    pub recorded: u64,
    /// Arrivals of a sequence number already recorded, ignored.
    pub duplicate: u64,
    /// Arrivals of a sequence number already reported (or outside the window), dropped.
    pub too_old: u64,
    /// Received sequence numbers pushed out of the window before any feedback reported them.
    pub evicted: u64,
    /// Feedback packets written, and the packet statuses they carried.
    pub feedback_packets: u64,
    pub statuses_written: u64,
}

/// Records arrivals of transport-wide sequence numbers and writes transport-cc feedback about
/// them. Memory is fixed at construction (one slot per [`WINDOW`] sequence number).
///
/// Each feedback reports every sequence number from the first not yet reported up to the highest
/// received (or as many as the limits allow; the next call continues). Statuses use the smallest
/// chunk encoding this writer knows: run length chunks for runs, 2-bit status vectors where a
/// large delta is present, 1-bit ones otherwise. A receive delta that does not fit 16 bits signed
/// ends the packet; the next one starts there with its own reference time.
#[derive(Debug)]
pub struct FeedbackBuilder {
    sender_ssrc: u32,
    media_ssrc: u32,
    limits: FeedbackLimits,
    /// Arrival in microseconds since the caller's epoch, per sequence number modulo `WINDOW`;
    /// `NOT_RECEIVED` outside `[next, highest]` always.
    slots: Box<[i64]>,
    unwrap: SeqUnwrapper,
    /// First sequence number not yet reported; meaningful once something arrived.
    next: u64,
    /// Sequence numbers below this are reported or given up (0 until the first feedback).
    floor: u64,
    fb_pkt_count: u8,
    counters: FeedbackCounters,
}

impl FeedbackBuilder {
    /// A builder writing feedback from `sender_ssrc` (the bridge's, on this transport) about
    /// `media_ssrc` (one of the remote sender's media SSRCs), with the default limits.
    pub fn new(sender_ssrc: u32, media_ssrc: u32) -> Self {
        Self::with_limits(sender_ssrc, media_ssrc, FeedbackLimits::default())
    }

    /// As [`FeedbackBuilder::new`], with `limits` (clamped to what the format and window allow).
    pub fn with_limits(sender_ssrc: u32, media_ssrc: u32, limits: FeedbackLimits) -> Self {
        let limits = FeedbackLimits {
            max_packets: limits.max_packets.clamp(1, WINDOW as u16),
            max_bytes: limits.max_bytes.max(MIN_PACKET_LEN) & !3,
        };
        FeedbackBuilder {
            sender_ssrc,
            media_ssrc,
            limits,
            slots: vec![NOT_RECEIVED; WINDOW].into_boxed_slice(),
            unwrap: SeqUnwrapper::default(),
            next: 0,
            floor: 0,
            fb_pkt_count: 0,
            counters: FeedbackCounters::default(),
        }
    }

    /// The media SSRC feedback names (0 until set).
    pub fn media_ssrc(&self) -> u32 {
        self.media_ssrc
    }

    /// Changes the media SSRC later feedback names.
    pub fn set_media_ssrc(&mut self, media_ssrc: u32) {
        self.media_ssrc = media_ssrc;
    }

    pub fn counters(&self) -> FeedbackCounters {
        self.counters
    }

    /// Whether a feedback packet is waiting to be written.
    pub fn has_pending(&self) -> bool {
        self.unwrap.highest().is_some_and(|h| self.next <= h)
    }

    #[inline]
    fn slot(seq: u64) -> usize {
        (seq % WINDOW as u64) as usize
    }

    /// Records that transport-wide sequence number `seq` arrived at `at`.
    pub fn on_arrival(&mut self, seq: u16, at: Duration) {
        let us = micros(at);
        let Some(highest) = self.unwrap.highest() else {
            let s = self.unwrap.update(seq);
            self.next = s;
            self.slots[Self::slot(s)] = us;
            self.counters.recorded += 1;
            return;
        };
        let s = self.unwrap.peek(seq);
        let lowest = self.floor.max((highest + 1).saturating_sub(WINDOW as u64));
        if s < lowest {
            self.counters.too_old += 1;
            return;
        }
        if s > highest {
            self.unwrap.update(seq);
            self.evict_below((s + 1).saturating_sub(WINDOW as u64));
        }
        let slot = &mut self.slots[Self::slot(s)];
        if *slot != NOT_RECEIVED {
            self.counters.duplicate += 1;
            return;
        }
        *slot = us;
        self.counters.recorded += 1;
        // Before the first feedback a late packet may start the window earlier.
        self.next = self.next.min(s);
    }

    /// Gives up sequence numbers below `new_next`, still unreported, when newer ones need their
    /// slots. Touches at most `WINDOW` slots.
    fn evict_below(&mut self, new_next: u64) {
        if new_next <= self.next {
            return;
        }
        let stop = new_next.min(self.next + WINDOW as u64);
        for s in self.next..stop {
            let slot = &mut self.slots[Self::slot(s)];
            if *slot != NOT_RECEIVED {
                self.counters.evicted += 1;
                *slot = NOT_RECEIVED;
            }
        }
        self.next = new_next;
        self.floor = self.floor.max(new_next);
    }

    /// Writes one transport-cc feedback packet into `buf` and returns its length, or `None` when
    /// nothing is waiting. Call again while [`FeedbackBuilder::has_pending`]: one packet covers
    /// at most `max_packets` statuses and `max_bytes` bytes. `RtcpError::NoRoom` when `buf` cannot
    /// hold even the smallest packet (24 bytes); nothing is consumed then.
    pub fn write(&mut self, buf: &mut [u8]) -> Result<Option<usize>, RtcpError> {
        let Some(highest) = self.unwrap.highest() else {
            return Ok(None);
        };
        if self.next > highest {
            return Ok(None);
        }
        let limit = self.limits.max_bytes.min(buf.len()) & !3;
        if limit < MIN_PACKET_LEN {
            return Err(RtcpError::NoRoom);
        }
        let out = &mut buf[..limit];

        // The reference time is the first received packet's, rounded down to 64 ms, so its delta
        // is small; the packets before it in this feedback are all "not received".
        let mut reference: Option<i64> = None;
        let mut encoder = ChunkEncoder::default();
        let mut chunks = 0usize;
        let mut delta_bytes = 0usize;
        let mut prev_ticks = 0;
        let mut count = 0usize;
        let mut seq = self.next;
        while seq <= highest && count < usize::from(self.limits.max_packets) {
            let us = self.slots[Self::slot(seq)];
            let (symbol, bytes, ticks) = if us == NOT_RECEIVED {
                (SYMBOL_NOT_RECEIVED, 0, prev_ticks)
            } else {
                if reference.is_none() {
                    let r = us / REFERENCE_US;
                    reference = Some(r);
                    prev_ticks = r * (REFERENCE_US / TICK_US);
                }
                let ticks = us / TICK_US;
                match ticks - prev_ticks {
                    0..=255 => (SYMBOL_SMALL, 1, ticks),
                    d if i16::try_from(d).is_ok() => (SYMBOL_LARGE, 2, ticks),
                    // Too far from the previous arrival: the next packet starts here.
                    _ => break,
                }
            };
            let mut trial = encoder;
            let emitted = trial.push(symbol);
            let chunks_after = chunks + usize::from(emitted.is_some()) + 1;
            let size = (FIXED_LEN + 2 * chunks_after + delta_bytes + bytes).next_multiple_of(4);
            if size > limit {
                break;
            }
            if let Some(chunk) = emitted {
                put16(out, FIXED_LEN + 2 * chunks, chunk);
                chunks += 1;
            }
            encoder = trial;
            delta_bytes += bytes;
            prev_ticks = ticks;
            count += 1;
            seq += 1;
        }
        if let Some(chunk) = encoder.finish() {
            put16(out, FIXED_LEN + 2 * chunks, chunk);
            chunks += 1;
        }

        // Deltas follow the last chunk; the same walk again, now that the chunk count is known.
        // (A feedback of lost packets only has no delta, and its reference time means nothing.)
        let reference = reference.unwrap_or(0);
        let mut at = FIXED_LEN + 2 * chunks;
        let mut prev_ticks = reference * (REFERENCE_US / TICK_US);
        for s in self.next..self.next + count as u64 {
            let us = self.slots[Self::slot(s)];
            if us == NOT_RECEIVED {
                continue;
            }
            let ticks = us / TICK_US;
            let delta = ticks - prev_ticks;
            prev_ticks = ticks;
            if (0..=255).contains(&delta) {
                out[at] = delta as u8;
                at += 1;
            } else {
                put16(out, at, delta as i16 as u16);
                at += 2;
            }
        }
        let len = at.next_multiple_of(4);
        out[at..len].fill(0);

        out[0] = RTCP_VERSION << 6 | FMT_TWCC;
        out[1] = PT_RTPFB;
        put16(out, 2, (len / 4 - 1) as u16);
        out[4..8].copy_from_slice(&self.sender_ssrc.to_be_bytes());
        out[8..12].copy_from_slice(&self.media_ssrc.to_be_bytes());
        put16(out, 12, self.next as u16);
        put16(out, 14, count as u16);
        let time_and_count = ((reference as u32) & 0x00ff_ffff) << 8 | u32::from(self.fb_pkt_count);
        out[16..20].copy_from_slice(&time_and_count.to_be_bytes());

        for s in self.next..self.next + count as u64 {
            self.slots[Self::slot(s)] = NOT_RECEIVED;
        }
        self.next += count as u64;
        self.floor = self.next;
        self.fb_pkt_count = self.fb_pkt_count.wrapping_add(1);
        self.counters.feedback_packets += 1;
        self.counters.statuses_written += count as u64;
        Ok(Some(len))
    }
}

#[inline]
fn put16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Turns status symbols into packet chunks as they come. It holds the symbols not yet in a
/// chunk: up to 7 of any kind, up to 14 while none is a large delta, or any number of one
/// symbol (a run). A symbol that fits none of these closes a chunk first.
#[derive(Clone, Copy, Debug, Default)]
struct ChunkEncoder {
    /// The held symbols (only the first is meaningful past 14: a run repeats it).
    symbols: [u8; ONE_BIT_CAPACITY],
    len: u16,
    all_same: bool,
    has_large: bool,
}

impl ChunkEncoder {
    /// Adds one symbol; returns the chunk this closed, if any (at most one per symbol).
    fn push(&mut self, symbol: u8) -> Option<u16> {
        let len = usize::from(self.len);
        let fits = len < TWO_BIT_CAPACITY
            || (len < ONE_BIT_CAPACITY && !self.has_large && symbol != SYMBOL_LARGE)
            || (self.all_same && symbol == self.symbols[0] && self.len < MAX_RUN);
        if fits {
            self.add(symbol);
            return None;
        }
        let chunk = if self.all_same {
            let chunk = run_chunk(self.symbols[0], self.len);
            self.len = 0;
            chunk
        } else if len == ONE_BIT_CAPACITY {
            // A full 1-bit vector (a held large delta would have stopped it at 7).
            let chunk = one_bit_chunk(&self.symbols[..ONE_BIT_CAPACITY]);
            self.len = 0;
            chunk
        } else {
            // A large delta is held (then exactly 7 are) or comes: seven into a 2-bit vector,
            // the rest stay.
            let chunk = two_bit_chunk(&self.symbols[..TWO_BIT_CAPACITY]);
            self.symbols.copy_within(TWO_BIT_CAPACITY..len, 0);
            self.len -= TWO_BIT_CAPACITY as u16;
            chunk
        };
        let held = usize::from(self.len);
        self.all_same = self.symbols[..held].iter().all(|&s| s == self.symbols[0]);
        self.has_large = self.symbols[..held].contains(&SYMBOL_LARGE);
        self.add(symbol);
        Some(chunk)
    }

    fn add(&mut self, symbol: u8) {
        let len = usize::from(self.len);
        if len == 0 {
            self.all_same = true;
            self.has_large = false;
        } else {
            self.all_same &= symbol == self.symbols[0];
        }
        if len < ONE_BIT_CAPACITY {
            self.symbols[len] = symbol;
        }
        self.has_large |= symbol == SYMBOL_LARGE;
        self.len += 1;
    }

    /// The chunk holding what is left, if anything (trailing slots of a vector are zero).
    fn finish(&self) -> Option<u16> {
        let len = usize::from(self.len);
        if len == 0 {
            None
        } else if self.all_same {
            Some(run_chunk(self.symbols[0], self.len))
        } else if !self.has_large {
            Some(one_bit_chunk(&self.symbols[..len]))
        } else {
            Some(two_bit_chunk(&self.symbols[..len]))
        }
    }
}

/// Run length chunk: T=0, the symbol in 2 bits, the run in 13.
fn run_chunk(symbol: u8, run: u16) -> u16 {
    u16::from(symbol) << 13 | run
}

/// Status vector chunk, T=1 S=0: up to 14 one-bit symbols, first at bit 13.
fn one_bit_chunk(symbols: &[u8]) -> u16 {
    symbols
        .iter()
        .enumerate()
        .fold(0x8000, |c, (i, &s)| c | u16::from(s & 1) << (13 - i))
}

/// Status vector chunk, T=1 S=1: up to 7 two-bit symbols, first at bits 13-12.
fn two_bit_chunk(symbols: &[u8]) -> u16 {
    symbols
        .iter()
        .enumerate()
        .fold(0xc000, |c, (i, &s)| c | u16::from(s & 3) << (12 - 2 * i))
}

#[cfg(test)]
pub(super) mod chunk_tests {
    use super::*;

    /// Encodes `symbols` and returns the chunks, for the tests of the encoder alone.
    pub(in crate::cc) fn encode(symbols: &[u8]) -> Vec<u16> {
        let mut e = ChunkEncoder::default();
        let mut chunks: Vec<u16> = symbols.iter().filter_map(|&s| e.push(s)).collect();
        chunks.extend(e.finish());
        chunks
    }
}
