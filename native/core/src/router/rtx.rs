//! Receivers' NACKs answered by the bridge. Every video packet a Producer sends is kept once, in its
//! `PacketCache` (by the sender's sequence number), not once per receiver: a receiver's NACK names its
//! own sequence numbers, which its Projection maps back to (layer, sender's sequence number); a packet
//! found is rewritten again for that receiver exactly as it was the first time (`Projection::replay`)
//! and sent to it as RTX (RFC 4588) on the RTX SSRC it knows for the Source, or as it is when it
//! negotiated no RTX. What is not in the cache is asked of the sender as before.
//!
//! Bounds: a cache holds at most `CACHE_SLOTS` packets, `CACHE_BYTES` of them and nothing older than
//! `CACHE_AGE`. A receiver is not sent the same packet again within its round-trip time
//! (`resend_interval`), and what it is resent comes out of a token bucket filled by a quarter of what
//! it is sent, within what its bandwidth estimate leaves room for (`RtxBudget`). A NACK is untrusted
//! input: it can make the bridge send a receiver at most that, and only packets it was sent already.

use std::time::{Duration, Instant};

use crate::codec::PictureIdWidth;
use crate::domain::{IdMap, TransportId};
use crate::io::{Egress, MAX_DATAGRAM};
use crate::projection::PacketMeta;
use crate::rtp::{set_payload_type, set_sequence_number, set_ssrc, RtpView};
use crate::stats::{Counters, DropReason};
use crate::transport::Transport;

use super::video::{apply_rewrite, Fields};
use super::Router;

/// Packets one Producer's cache holds: about two seconds of a 2.5 Mbit/s layer's packets.
pub const CACHE_SLOTS: usize = 512;

/// Bytes one Producer's cache holds: a second of a 2 Mbit/s layer (a faster one keeps less than a
/// second, still several round trips).
pub const CACHE_BYTES: usize = 256 * 1024;

/// How long a packet is worth resending: a receiver's jitter buffer has given up on it by then.
pub const CACHE_AGE: Duration = Duration::from_secs(1);

/// The same packet is not resent to the same receiver sooner than this...
pub const RESEND_FLOOR: Duration = Duration::from_millis(10);

/// ...nor sooner than its round-trip time, counted up to this (the transport-cc RTT includes the
/// receiver's feedback interval, up to 100 ms, which would make repeats wait too long).
pub const RESEND_CEILING: Duration = Duration::from_millis(100);

/// Resends one receiver remembers of one Source, for refusing a repeat within its RTT.
const RESENT_MEMORY: usize = 64;

/// A receiver's retransmission budget gains this fraction (1/n) of what it is sent otherwise.
pub const RTX_SHARE: u64 = 4;

/// And holds at most this many bytes: a keyframe's worth of 720p packets, so a burst of loss is
/// repaired at once.
pub const RTX_BURST: u64 = 64 * 1024;

/// What a receiver's budget starts with: a dozen packets. Not the whole burst: a receiver that
/// joins behind a small link loses much of its first second (keyframes of every sender at once), and
/// a full bucket resent 45 packets into that link within 0.4 s, which lost more (a measured run).
pub const RTX_START: u64 = 16 * 1024;

/// With an estimate the bucket holds at most this long of it (a 500 kbit/s link: 15 kB, what its
/// bottleneck's queue takes on top of the media), but never under `RTX_MIN_BURST` (two packets).
pub const RTX_BURST_TIME: Duration = Duration::from_millis(250);
pub const RTX_MIN_BURST: u64 = 2_400;

/// Where a packet's codec fields sit, as `Fields` has them, in fewer bytes.
#[derive(Clone, Copy, Debug)]
struct Placement {
    picture_id_at: Option<(u16, PictureIdWidth)>,
    tl0picidx_at: Option<u16>,
}

/// One cached packet.
#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: u16,
    len: u16,
    /// Where its bytes start in the running count of bytes written to the arena.
    at: u64,
    arrived: Instant,
    meta: PacketMeta,
    placement: Placement,
}

/// One Producer's recent video packets: a byte arena written as a ring (a packet never wraps: the
/// rest of the arena is skipped) and an index of slots by sequence number (`seq % CACHE_SLOTS`). A
/// slot is live while its bytes have not been written over, it is the newest of its index, and it is
/// younger than `CACHE_AGE`; nothing is freed, a newer packet just takes the place.
pub struct PacketCache {
    arena: Box<[u8]>,
    slots: Box<[Option<Slot>]>,
    /// Bytes written to the arena so far (skipped ends included).
    written: u64,
}

impl Default for PacketCache {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketCache {
    /// The whole cache, allocated once.
    pub fn new() -> Self {
        PacketCache {
            arena: vec![0u8; CACHE_BYTES].into_boxed_slice(),
            slots: vec![None; CACHE_SLOTS].into_boxed_slice(),
            written: 0,
        }
    }

    fn live(&self, now: Instant, slot: &Slot) -> bool {
        self.written - slot.at <= CACHE_BYTES as u64
            && now.saturating_duration_since(slot.arrived) <= CACHE_AGE
    }

    /// Keeps one received packet (an original, or one unwrapped from the sender's RTX) with what its
    /// Projections need of it. A sequence number already held keeps its first copy; an older packet
    /// does not take the place of a newer one.
    #[inline]
    pub fn insert(&mut self, now: Instant, packet: &[u8], meta: &PacketMeta, fields: &Fields) {
        let len = packet.len();
        let (Ok(len16), true) = (u16::try_from(len), len <= CACHE_BYTES) else {
            return;
        };
        let index = usize::from(meta.seq) % CACHE_SLOTS;
        if let Some(old) = &self.slots[index] {
            let d = meta.seq.wrapping_sub(old.seq);
            if self.live(now, old) && (d == 0 || d >= 0x8000) {
                return;
            }
        }
        let mut pos = (self.written % CACHE_BYTES as u64) as usize;
        if pos + len > CACHE_BYTES {
            self.written += (CACHE_BYTES - pos) as u64;
            pos = 0;
        }
        self.arena[pos..pos + len].copy_from_slice(packet);
        let placement = Placement {
            picture_id_at: fields
                .picture_id_at
                .and_then(|(at, w)| Some((u16::try_from(at).ok()?, w))),
            tl0picidx_at: fields.tl0picidx_at.and_then(|at| u16::try_from(at).ok()),
        };
        self.slots[index] = Some(Slot {
            seq: meta.seq,
            len: len16,
            at: self.written,
            arrived: now,
            meta: *meta,
            placement,
        });
        self.written += len as u64;
    }

    /// The packet with sender's sequence number `seq`, its Projection fields and where its codec
    /// fields sit, if the cache still holds it.
    #[inline]
    pub fn get(&self, now: Instant, seq: u16) -> Option<(&[u8], PacketMeta, Fields)> {
        let slot = self.slots[usize::from(seq) % CACHE_SLOTS]
            .as_ref()
            .filter(|s| s.seq == seq && self.live(now, s))?;
        let pos = (slot.at % CACHE_BYTES as u64) as usize;
        let bytes = self.arena.get(pos..pos + usize::from(slot.len))?;
        let fields = Fields {
            picture_id_at: slot
                .placement
                .picture_id_at
                .map(|(at, w)| (usize::from(at), w)),
            tl0picidx_at: slot.placement.tl0picidx_at.map(usize::from),
            ..Fields::default()
        };
        Some((bytes, slot.meta, fields))
    }
}

/// What one receiver was resent of one Source: its RTX sequence numbers go on from `next_seq`, and
/// the receiver's sequence numbers resent lately (a ring) keep a repeat from going out within its RTT.
#[derive(Clone, Debug)]
pub struct RtxOut {
    pub(super) next_seq: u16,
    resent: [(u16, Option<Instant>); RESENT_MEMORY],
    head: usize,
}

impl RtxOut {
    /// Numbering from a random start.
    pub fn random() -> Self {
        RtxOut::new(random_seq())
    }

    /// RTX sequence numbers start at `first` (random, RFC 3550 5.1).
    pub fn new(first: u16) -> Self {
        RtxOut {
            next_seq: first,
            resent: [(0, None); RESENT_MEMORY],
            head: 0,
        }
    }

    /// Whether the receiver's `seq` was resent less than `interval` ago.
    pub fn recently(&self, now: Instant, seq: u16, interval: Duration) -> bool {
        self.resent.iter().any(|&(s, at)| {
            s == seq && at.is_some_and(|at| now.saturating_duration_since(at) < interval)
        })
    }

    pub fn note(&mut self, now: Instant, seq: u16) {
        self.resent[self.head] = (seq, Some(now));
        self.head = (self.head + 1) % RESENT_MEMORY;
    }
}

/// How soon the same packet may go again to a receiver with round-trip time `rtt`.
pub fn resend_interval(rtt: Option<Duration>) -> Duration {
    rtt.unwrap_or(RESEND_FLOOR)
        .clamp(RESEND_FLOOR, RESEND_CEILING)
}

/// One receiver's retransmission budget: a token bucket in bytes, filled by `1/RTX_SHARE` of the
/// bytes it is sent otherwise, up to `RTX_BURST`. With a bandwidth estimate, resends fill no more
/// than the room the estimate left above what was sent since the last fill, and the bucket holds at
/// most `RTX_BURST_TIME` of the estimate: a receiver sent more than its link carries loses packets,
/// NACKs them, and resends on top (a quarter more, and a 64 kB bucket) kept a 500 kbit/s link
/// overflowing for 2 s, with its audio (a measured run: 700 kbit/s sent, 40 resends a second).
#[derive(Clone, Copy, Debug)]
pub struct RtxBudget {
    tokens: u64,
    /// What it had been sent (retransmissions excluded) when last filled, and when.
    seen: u64,
    at: Instant,
}

impl RtxBudget {
    /// A bucket of `RTX_START` bytes, counting from `sent` bytes at `now`.
    pub fn new(now: Instant, sent: u64) -> Self {
        RtxBudget {
            tokens: RTX_START,
            seen: sent,
            at: now,
        }
    }

    /// Takes `len` bytes if the bucket has them, after filling it from `sent` (the receiver's bytes
    /// out so far without its retransmissions) and `estimate_bps` (its bandwidth estimate, if any).
    pub fn take(&mut self, now: Instant, sent: u64, estimate_bps: Option<u64>, len: usize) -> bool {
        let new = sent.saturating_sub(self.seen);
        self.seen = self.seen.max(sent);
        let mut gain = new / RTX_SHARE;
        let mut cap = RTX_BURST;
        if let Some(bps) = estimate_bps {
            let bytes_in = |d: Duration| (u128::from(bps) * d.as_micros() / 8_000_000) as u64;
            let room = bytes_in(now.saturating_duration_since(self.at)).saturating_sub(new);
            gain = gain.min(room);
            cap = bytes_in(RTX_BURST_TIME).clamp(RTX_MIN_BURST, RTX_BURST);
        }
        self.at = self.at.max(now);
        self.tokens = (self.tokens + gain).min(cap);
        let len = len as u64;
        if self.tokens >= len {
            self.tokens -= len;
            true
        } else {
            false
        }
    }
}

/// The RTX packet (RFC 4588 4) of `original` on `ssrc` with payload type `pt` and sequence number
/// `seq`: its header (without padding), the original sequence number, its payload. None if it does
/// not parse or would not fit.
pub fn write_rtx(original: &[u8], ssrc: u32, pt: u8, seq: u16, out: &mut [u8]) -> Option<usize> {
    let v = RtpView::parse(original).ok()?;
    let hl = v.header_len();
    let payload = v.payload();
    let n = hl + 2 + payload.len();
    let dst = out.get_mut(..n)?;
    dst[..hl].copy_from_slice(original.get(..hl)?);
    dst[0] &= !0x20;
    set_payload_type(dst, pt);
    set_sequence_number(dst, seq);
    set_ssrc(dst, ssrc);
    dst[hl..hl + 2].copy_from_slice(&v.sequence_number().to_be_bytes());
    dst[hl + 2..].copy_from_slice(payload);
    Some(n)
}

/// What a receiver has been sent, retransmissions left out: what fills its budget.
fn sent_otherwise(t: &Transport) -> u64 {
    t.counters
        .bytes_out
        .saturating_sub(t.counters.retransmitted_bytes)
}

fn random_seq() -> u16 {
    let mut b = [0u8; 2];
    // Unpredictable is only a nicety (RFC 3550 5.1); 0 if RAND fails.
    let _ = openssl::rand::rand_bytes(&mut b);
    u16::from_be_bytes(b)
}

/// Counts on the receiver and in the total.
fn count(t: &mut Transport, total: &mut Counters, f: impl Fn(&mut Counters)) {
    f(&mut t.counters);
    f(total);
}

impl Router {
    /// Answers a receiver's NACK of `media_ssrc` (its sequence numbers `seqs`) from the layers'
    /// caches: each sequence number its Projection made from a cached packet is resent (as RTX when
    /// the receiver negotiated it for that codec and the Source has an RTX SSRC, else as it was
    /// sent), unless it went to this receiver within its RTT or its budget is spent; each one made
    /// from a packet not cached goes to `upstream` (layer SSRC, sender's sequence number). Sequence
    /// numbers it was not sent recently, and those force-mute dropped, go nowhere. False when
    /// `media_ssrc` is not a video Source's: the caller passes the NACK on as it is.
    #[allow(clippy::too_many_arguments)]
    pub fn answer_nack(
        &mut self,
        now: Instant,
        receiver: TransportId,
        media_ssrc: u32,
        seqs: impl Iterator<Item = u16>,
        transports: &mut IdMap<Transport>,
        egress: &mut impl Egress,
        total: &mut Counters,
        mut upstream: impl FnMut(u32, u16),
    ) -> bool {
        let Some((source, _)) = self.video_route(media_ssrc) else {
            return false;
        };
        let Router {
            video,
            producers,
            payloads,
            rtx_budgets,
            ..
        } = self;
        let Some(vs) = video.get_mut(&source) else {
            return false;
        };
        let (Some(t), Some(proj)) = (transports.get_mut(&receiver), vs.consumers.get(&receiver))
        else {
            return true;
        };
        let primary = vs.primary();
        let rtx_ssrc = vs.layers.first().and_then(|l| l.rtx);
        let map = payloads.get(&receiver);
        let interval = resend_interval(t.rtt());
        let mut plain = [0u8; MAX_DATAGRAM];
        let mut rtx = [0u8; MAX_DATAGRAM];
        for seq in seqs {
            let Some((layer, orig)) = proj.original(seq) else {
                continue;
            };
            let Some(ssrc) = vs.layers.get(usize::from(layer)).map(|l| l.ssrc) else {
                continue;
            };
            let Some(p) = producers.get_mut(&ssrc) else {
                continue;
            };
            // Never replayed: it was dropped by force-mute (or forwarded just before a re-mute).
            if p.was_muted(orig) {
                continue;
            }
            let cached = p.cache.as_ref().and_then(|c| c.get(now, orig));
            let Some((bytes, fields, rw)) =
                cached.and_then(|(b, m, f)| Some((b, f, proj.replay(seq, &m)?)))
            else {
                count(t, total, |c| c.nack_cache_miss += 1);
                // The sender's RTX of it is then a repair to forward.
                if let Some(n) = p.nack.as_mut() {
                    n.want(orig, now);
                }
                upstream(ssrc, orig);
                continue;
            };
            count(t, total, |c| c.nack_cache_hit += 1);
            let out = vs
                .rtx
                .entry(receiver)
                .or_insert_with(|| RtxOut::new(random_seq()));
            if out.recently(now, seq, interval) {
                count(t, total, |c| c.rtx_rate_limited += 1);
                continue;
            }
            // The original as the receiver got it, then (if it takes RTX) wrapped.
            let Some(copy) = plain.get_mut(..bytes.len()) else {
                continue;
            };
            copy.copy_from_slice(bytes);
            apply_rewrite(copy, primary, &fields, &rw);
            let pt = bytes.get(1).map_or(0, |b| b & 0x7f);
            let wrap = rtx_ssrc.zip(map.and_then(|m| m.rtx_for(pt)));
            let packet: &[u8] = match wrap {
                Some((rs, rpt)) => match write_rtx(copy, rs, rpt, out.next_seq, &mut rtx) {
                    Some(n) => &rtx[..n],
                    None => {
                        t.drop_counted(DropReason::EgressFailed, total);
                        continue;
                    }
                },
                None => copy,
            };
            let sent = sent_otherwise(t);
            let budget = rtx_budgets
                .entry(receiver)
                .or_insert_with(|| RtxBudget::new(now, sent));
            if !budget.take(now, sent, t.bandwidth_estimate(), packet.len()) {
                count(t, total, |c| c.rtx_rate_limited += 1);
                continue;
            }
            // Paced, ahead of any held video (libwebrtc's pacer orders resends so): unpaced, a burst
            // of them to a receiver behind a small link overflowed its queue. The budget above
            // bounds them besides. Counted in RTP bytes when queued (a held one leaves later).
            if t.send_rtx_paced(now, packet, egress, total) {
                let n = packet.len() as u64;
                count(t, total, |c| {
                    c.retransmitted += 1;
                    c.retransmitted_bytes += n;
                });
                out.note(now, seq);
                if wrap.is_some() {
                    out.next_seq = out.next_seq.wrapping_add(1);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 100];
        p.extend_from_slice(&seq.to_be_bytes());
        p.resize(len, seq as u8);
        p
    }

    fn put(c: &mut PacketCache, now: Instant, seq: u16, len: usize) {
        c.insert(
            now,
            &packet(seq, len),
            &PacketMeta::plain(0, seq, 0),
            &Fields::default(),
        );
    }

    fn has(c: &PacketCache, now: Instant, seq: u16, len: usize) -> bool {
        c.get(now, seq)
            .is_some_and(|(b, m, _)| b == packet(seq, len) && m.seq == seq)
    }

    #[test]
    fn sequence_numbers_wrap_and_the_newest_takes_an_index() {
        let t0 = Instant::now();
        let mut c = PacketCache::new();
        for i in 0..300u16 {
            put(&mut c, t0, 65_400u16.wrapping_add(i), 100);
        }
        assert!(has(&c, t0, 65_400, 100) && has(&c, t0, 65_535, 100));
        assert!(has(&c, t0, 0, 100) && has(&c, t0, 163, 100));
        assert!(!has(&c, t0, 164, 100) && !has(&c, t0, 65_399, 100));
        // A duplicate keeps the first copy; a packet CACHE_SLOTS older does not evict the newer one.
        c.insert(
            t0,
            &packet(5, 60),
            &PacketMeta::plain(0, 5, 0),
            &Fields::default(),
        );
        assert!(has(&c, t0, 5, 100));
        let older = 5u16.wrapping_sub(CACHE_SLOTS as u16);
        put(&mut c, t0, older, 100);
        assert!(has(&c, t0, 5, 100) && !has(&c, t0, older, 100));
    }

    #[test]
    fn packets_go_by_count_bytes_and_age() {
        let t0 = Instant::now();
        let mut c = PacketCache::new();
        // By count: CACHE_SLOTS later, an index is taken by the newer packet.
        for seq in 0..(CACHE_SLOTS as u16 + 10) {
            put(&mut c, t0, seq, 50);
        }
        assert!(!has(&c, t0, 9, 50) && has(&c, t0, 10, 50));
        assert!(has(&c, t0, CACHE_SLOTS as u16 + 9, 50));
        // By bytes: 1200-byte packets, 218 fit in 256 KiB; the oldest are written over first, and a
        // packet that does not fit at the end starts the arena again.
        let mut c = PacketCache::new();
        let per = CACHE_BYTES / 1200;
        for seq in 0..(per as u16 + 3) {
            put(&mut c, t0, seq, 1200);
        }
        let last = per as u16 + 2;
        assert!(!has(&c, t0, 0, 1200) && !has(&c, t0, 2, 1200));
        assert!(has(&c, t0, 3, 1200) && has(&c, t0, last, 1200));
        // By age.
        let later = t0 + CACHE_AGE + Duration::from_millis(1);
        assert!(has(&c, t0 + CACHE_AGE, last, 1200));
        assert!(!has(&c, later, last, 1200));
        put(&mut c, later, last + 1, 1200);
        assert!(has(&c, later, last + 1, 1200));
        // A place is free once its packet is too old, even for an older sequence number.
        let older = last.wrapping_sub(CACHE_SLOTS as u16);
        put(&mut c, later, older, 1200);
        assert!(has(&c, later, older, 1200));
    }

    #[test]
    fn a_repeat_waits_for_the_rtt_within_bounds_and_the_budget_is_a_share_of_what_is_sent() {
        assert_eq!(resend_interval(None), RESEND_FLOOR);
        assert_eq!(
            resend_interval(Some(Duration::from_millis(1))),
            RESEND_FLOOR
        );
        assert_eq!(
            resend_interval(Some(Duration::from_millis(40))),
            Duration::from_millis(40)
        );
        assert_eq!(
            resend_interval(Some(Duration::from_secs(2))),
            RESEND_CEILING
        );
        let t0 = Instant::now();
        let mut out = RtxOut::new(7);
        out.note(t0, 100);
        let iv = Duration::from_millis(20);
        assert!(out.recently(t0 + Duration::from_millis(19), 100, iv));
        assert!(!out.recently(t0 + iv, 100, iv));
        assert!(!out.recently(t0, 101, iv));

        let mut b = RtxBudget::new(t0, 1000);
        assert!(
            !b.take(t0, 1000, None, RTX_START as usize + 1),
            "it starts with RTX_START"
        );
        assert!(b.take(t0, 1000, None, RTX_START as usize));
        assert!(!b.take(t0, 1000, None, 1));
        // 4000 bytes sent since: 1000 to resend.
        assert!(!b.take(t0, 5000, None, 1001));
        assert!(b.take(t0, 5000, None, 1000));
        // Never more than the burst, however much was sent.
        assert!(!b.take(t0, u64::MAX / 2, None, RTX_BURST as usize + 1));
        assert!(b.take(t0, u64::MAX / 2, None, RTX_BURST as usize));
    }

    #[test]
    fn resends_fill_only_the_room_the_estimate_leaves() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // 500 kbit/s: 62 500 bytes a second.
        let est = Some(500_000);
        let mut b = RtxBudget::new(t0, 0);
        // The bucket holds 250 ms of the estimate (15 625 bytes), not RTX_START.
        assert!(!b.take(t0, 0, est, 15_626));
        assert!(b.take(t0, 0, est, 15_625));
        // Sent 40 000 bytes in 400 ms (800 kbit/s, over the estimate): no room, nothing gained.
        assert!(!b.take(ms(400), 40_000, est, 1));
        // Then 20 000 in the next 400 ms (400 kbit/s): a quarter of it (5 000) fits the 5 000 of room.
        assert!(!b.take(ms(800), 60_000, est, 5_001));
        assert!(b.take(ms(800), 60_000, est, 5_000));
        // 10 000 in the next second (80 kbit/s): a quarter (2 500), well inside the room.
        assert!(!b.take(ms(1800), 70_000, est, 2_501));
        assert!(b.take(ms(1800), 70_000, est, 2_500));
        // A tiny estimate still allows two packets' bucket.
        let mut tiny = RtxBudget::new(t0, 0);
        assert!(tiny.take(t0, 0, Some(10_000), RTX_MIN_BURST as usize));
        assert!(!tiny.take(t0, 0, Some(10_000), 1));
    }
}
