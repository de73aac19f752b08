//! Projection: what one receiver sees of one video Source. The Source may arrive on several layers
//! (simulcast SSRCs, each with its own sequence numbers, timestamps and VP8 PictureIDs); the receiver
//! gets one stream on the Source's primary SSRC, continuous across layer switches.
//!
//! The stream is a run of segments, each a stretch of one layer forwarded with fixed offsets. A new
//! segment starts only at a switch point of the target layer (a keyframe's first packet), its offsets
//! chosen so the receiver's sequence numbers, timestamps, PictureIDs and TL0PICIDX go on from the highest
//! it has seen. Switching off waits for a frame boundary. A late packet is forwarded with the offsets of
//! the segment it belongs to, so reordering and retransmissions fill gaps instead of making new ones;
//! anything else is filtered. Sans-IO: the caller passes the packet's fields and the time, and writes
//! the rewrite into its egress copy.

use std::time::{Duration, Instant};

use crate::codec::PictureIdWidth;

/// Segments remembered for late packets: the open one and the three before it.
pub const SEGMENTS: usize = 4;

/// How often one receiver asks again for the keyframe it is waiting for (the Producer's own limit,
/// shared by all receivers, comes on top).
pub const KEYFRAME_RETRY: Duration = Duration::from_millis(1000);

/// How far behind a stretch's newest packet a late one is still forwarded (and a NACK translated):
/// beyond what receivers ask retransmissions for (libwebrtc stops at 10,000).
const MAX_SPAN: u16 = 0x4000;

/// Half the sequence-number space: `a` is newer than `b` when `a - b` is in (0, 2^15).
const HALF: u16 = 0x8000;

/// What the Projection needs of one packet of the Source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// The layer it was sent on (index in the Source's SIM order; 0 without simulcast).
    pub layer: u8,
    pub seq: u16,
    pub timestamp: u32,
    /// A receiver may start on this layer here: the first packet of a keyframe (for a codec whose
    /// keyframes the bridge cannot see, every packet).
    pub switch_point: bool,
    /// It starts a frame: a receiver may stop here without cutting a frame in two.
    pub frame_start: bool,
    pub picture_id: Option<(u16, PictureIdWidth)>,
    pub tl0picidx: Option<u8>,
}

/// The fields the receiver's copy gets (the SSRC becomes the Source's primary one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub seq: u16,
    pub timestamp: u32,
    pub picture_id: Option<u16>,
    pub tl0picidx: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward(Rewrite),
    /// Not for this receiver now: another layer, before a switch point, or switched off.
    Filtered,
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    layer: u8,
    /// First and highest incoming sequence numbers forwarded in it.
    start: u16,
    end: u16,
    seq_off: u16,
    ts_off: u32,
    pid_off: u16,
    tl0_off: u8,
    /// Still growing: packets of its layer newer than `end` join it.
    open: bool,
}

/// The newest fields the receiver has been sent.
#[derive(Clone, Copy, Debug)]
struct Sent {
    seq: u16,
    timestamp: u32,
    picture_id: Option<u16>,
    tl0picidx: Option<u8>,
    at: Instant,
}

/// One receiver's view of one Source.
#[derive(Clone, Debug)]
pub struct Projection {
    target: Option<u8>,
    /// Newest first.
    segments: [Option<Segment>; SEGMENTS],
    sent: Option<Sent>,
    last_keyframe_request: Option<Instant>,
}

#[inline]
fn newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < HALF
}

#[inline]
fn within(seq: u16, start: u16, end: u16) -> bool {
    seq.wrapping_sub(start) <= end.wrapping_sub(start)
}

#[inline]
fn add_pid(pid: u16, off: u16, width: PictureIdWidth) -> u16 {
    pid.wrapping_add(off) & width.max()
}

impl Projection {
    /// A receiver that wants `target` (None: nothing) and has been sent nothing yet.
    pub fn new(target: Option<u8>) -> Self {
        Projection {
            target,
            segments: [None; SEGMENTS],
            sent: None,
            last_keyframe_request: None,
        }
    }

    pub fn target(&self) -> Option<u8> {
        self.target
    }

    /// The layer being forwarded now, if any.
    pub fn current(&self) -> Option<u8> {
        self.segments[0].filter(|s| s.open).map(|s| s.layer)
    }

    /// Sets the layer this receiver should get. The switch itself happens on the packets: at the
    /// target's next switch point, or (to nothing) at the current layer's next frame start.
    pub fn set_target(&mut self, target: Option<u8>) {
        if self.target != target {
            self.target = target;
            self.last_keyframe_request = None;
        }
    }

    /// Whether the receiver is waiting for a layer to start: it needs that layer's keyframe.
    pub fn waiting(&self) -> Option<u8> {
        self.target.filter(|&t| self.current() != Some(t))
    }

    /// The layer to ask a keyframe of now, at most once per [`KEYFRAME_RETRY`] while waiting.
    pub fn keyframe_request(&mut self, now: Instant) -> Option<u8> {
        let layer = self.waiting()?;
        match self.last_keyframe_request {
            Some(t) if now.saturating_duration_since(t) < KEYFRAME_RETRY => None,
            _ => {
                self.last_keyframe_request = Some(now);
                Some(layer)
            }
        }
    }

    /// Decides one packet and, when it is forwarded, gives its new fields. `clock_rate` converts the
    /// time since the last packet sent into a timestamp step at a switch.
    #[inline]
    pub fn on_packet(&mut self, now: Instant, clock_rate: u32, m: &PacketMeta) -> Verdict {
        if let Some(seg) = self.segments[0].as_mut().filter(|s| s.open) {
            if seg.layer == m.layer && (newer(m.seq, seg.end) || within(m.seq, seg.start, seg.end))
            {
                // Switched off: stop at the next frame. Going to another layer instead: this one goes
                // on until that one's switch point.
                if self.target.is_none() && m.frame_start && newer(m.seq, seg.end) {
                    seg.open = false;
                    return Verdict::Filtered;
                }
                let seg = *seg;
                return Verdict::Forward(self.forward(0, &seg, now, m));
            }
        }
        if self.target == Some(m.layer) && m.switch_point {
            let seg = self.open_segment(now, clock_rate, m);
            return Verdict::Forward(self.forward(0, &seg, now, m));
        }
        // A late packet of an earlier stretch.
        for i in 0..SEGMENTS {
            let Some(seg) = self.segments[i] else { break };
            if seg.layer == m.layer && within(m.seq, seg.start, seg.end) && (i > 0 || !seg.open) {
                return Verdict::Forward(self.forward(i, &seg, now, m));
            }
        }
        Verdict::Filtered
    }

    /// The incoming sequence number (and its layer) that the receiver's `seq` was made from, for
    /// translating its NACKs; None if it is not one this Projection forwarded recently.
    pub fn original(&self, seq: u16) -> Option<(u8, u16)> {
        self.segments.iter().flatten().find_map(|s| {
            let orig = seq.wrapping_sub(s.seq_off);
            within(orig, s.start, s.end).then_some((s.layer, orig))
        })
    }

    /// The current segment's layer and timestamp offset, for rewriting that layer's sender reports.
    pub fn timestamp_offset(&self, layer: u8) -> Option<u32> {
        self.segments[0]
            .filter(|s| s.open && s.layer == layer)
            .map(|s| s.ts_off)
    }

    fn open_segment(&mut self, now: Instant, clock_rate: u32, m: &PacketMeta) -> Segment {
        let (seq_off, ts_off, pid_off, tl0_off) = match self.sent {
            // The first stretch goes out as it came in.
            None => (0, 0, 0, 0),
            Some(s) => {
                let elapsed = now.saturating_duration_since(s.at);
                let step = (elapsed.as_nanos() * u128::from(clock_rate) / 1_000_000_000)
                    .clamp(1, u128::from(u32::MAX / 2)) as u32;
                let pid_off = match (s.picture_id, m.picture_id) {
                    (Some(sent), Some((pid, _))) => sent.wrapping_add(1).wrapping_sub(pid),
                    _ => 0,
                };
                let tl0_off = match (s.tl0picidx, m.tl0picidx) {
                    (Some(sent), Some(tl0)) => sent.wrapping_add(1).wrapping_sub(tl0),
                    _ => 0,
                };
                (
                    s.seq.wrapping_add(1).wrapping_sub(m.seq),
                    s.timestamp.wrapping_add(step).wrapping_sub(m.timestamp),
                    pid_off,
                    tl0_off,
                )
            }
        };
        let seg = Segment {
            layer: m.layer,
            start: m.seq,
            end: m.seq,
            seq_off,
            ts_off,
            pid_off,
            tl0_off,
            open: true,
        };
        for old in self.segments.iter_mut().flatten() {
            old.open = false;
        }
        self.segments.rotate_right(1);
        self.segments[0] = Some(seg);
        seg
    }

    #[inline]
    fn forward(&mut self, index: usize, seg: &Segment, now: Instant, m: &PacketMeta) -> Rewrite {
        let out = Rewrite {
            seq: m.seq.wrapping_add(seg.seq_off),
            timestamp: m.timestamp.wrapping_add(seg.ts_off),
            picture_id: m.picture_id.map(|(p, w)| add_pid(p, seg.pid_off, w)),
            tl0picidx: m.tl0picidx.map(|t| t.wrapping_add(seg.tl0_off)),
        };
        if let Some(s) = self.segments[index].as_mut() {
            if newer(m.seq, s.end) {
                s.end = m.seq;
                // A long stretch keeps only its recent past: a packet further behind is no longer
                // late but lost, and the span must stay well inside half the sequence space.
                if s.end.wrapping_sub(s.start) > MAX_SPAN {
                    s.start = s.end.wrapping_sub(MAX_SPAN);
                }
            }
        }
        let newest = self.sent.is_none_or(|s| newer(out.seq, s.seq));
        if newest {
            let prev = self.sent;
            self.sent = Some(Sent {
                seq: out.seq,
                timestamp: out.timestamp,
                picture_id: out.picture_id.or(prev.and_then(|s| s.picture_id)),
                tl0picidx: out.tl0picidx.or(prev.and_then(|s| s.tl0picidx)),
                at: now,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests;
