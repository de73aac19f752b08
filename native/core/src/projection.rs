//! Projection: what one receiver sees of one video Source. The Source may arrive on several layers
//! (simulcast SSRCs, each with its own sequence numbers, timestamps and PictureIDs), and each layer may
//! carry temporal layers and (one SSRC with SVC) spatial layers; the receiver gets one stream on the
//! Source's primary SSRC, continuous across layer switches and without holes where frames were left out.
//!
//! The stream is a run of segments, each a stretch of one layer forwarded with the same timestamp offset.
//! A new segment starts only at a switch point of the target layer (a keyframe's first packet), its
//! offsets chosen so the receiver's sequence numbers, timestamps, PictureIDs and TL0PICIDX go on from the
//! highest it has seen. Within a segment the packets of temporal and spatial layers above the target's
//! are left out; each run left out lowers the sequence-number offset of what follows (and a picture left
//! out, the PictureID offset), so the receiver sees gaps only where packets were really lost. Temporal
//! layers go down at any picture and up one at a time at a switching-up point (VP8 Y, VP9 U) or a
//! keyframe; spatial layers go down at any picture and up at a keyframe, the last packet forwarded of a
//! picture getting the marker bit. Switching off waits for a picture boundary. A late packet is forwarded
//! with the offsets it would have had in order, so reordering and retransmissions fill gaps instead of
//! making new ones; anything else is filtered. Sans-IO: the caller passes the packet's fields and the
//! time, and writes the rewrite into its egress copy.

use std::time::{Duration, Instant};

use crate::codec::PictureIdWidth;

/// Segments remembered for late packets: the open one and the three before it.
pub const SEGMENTS: usize = 4;

/// Runs left out that one segment remembers for placing late packets: at 30 frames a second with the
/// top temporal layer left out, about a second (the oldest is forgotten, and what came before it with it).
pub const CHANGES: usize = 32;

/// How often one receiver asks again for the keyframe it is waiting for (the Producer's own limit,
/// shared by all receivers, comes on top). A receiver waiting only for a temporal switching-up point
/// asks after this long without one.
pub const KEYFRAME_RETRY: Duration = Duration::from_millis(1000);
/// The first retry for a target comes sooner: libwebrtc's encoder ignores a keyframe request within
/// 300 ms of its last (`EncoderRtcpFeedback`), which a switch right after another switch of the same
/// sender meets (two steps of a climb), and the receiver would wait a whole `KEYFRAME_RETRY`.
pub const KEYFRAME_FIRST_RETRY: Duration = Duration::from_millis(400);

/// How far behind a stretch's newest packet a late one is still forwarded (and a NACK translated):
/// beyond what receivers ask retransmissions for (libwebrtc stops at 10,000).
const MAX_SPAN: u16 = 0x4000;

/// Half the sequence-number space: `a` is newer than `b` when `a - b` is in (0, 2^15).
const HALF: u16 = 0x8000;

/// Changes of the spatial layers forwarded that a segment remembers, for resending a packet with the
/// marker bit it had (a resend is asked within a second; the spatial target changes far less often).
const SPATIAL_LOG: usize = 4;

/// Every spatial or temporal layer.
pub const ALL: u8 = u8::MAX;

/// What a receiver is to get of a Source: one of its layers (simulcast SSRCs, in SIM order), and of that
/// layer the spatial and temporal layers up to these ([`ALL`]: all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub layer: u8,
    pub spatial: u8,
    pub temporal: u8,
}

impl Target {
    /// All of one layer.
    pub const fn layer(layer: u8) -> Self {
        Target {
            layer,
            spatial: ALL,
            temporal: ALL,
        }
    }
}

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
    /// It starts a frame (of its spatial layer): a receiver may stop here without cutting one in two.
    pub frame_start: bool,
    /// Its spatial layer within the SSRC (VP9 SID, AV1 spatial id); 0 without SVC.
    pub spatial: u8,
    /// Its temporal layer (VP8/VP9 TID, AV1 temporal id); 0 without temporal layers.
    pub temporal: u8,
    /// With `frame_start`: a receiver getting the temporal layers below this one may add this one here
    /// (VP8 Y, VP9 U).
    pub temporal_switch: bool,
    /// The last packet of its spatial layer's frame (VP9 E, AV1 end_of_frame; false when unknown).
    pub end_of_frame: bool,
    pub picture_id: Option<(u16, PictureIdWidth)>,
    pub tl0picidx: Option<u8>,
}

impl PacketMeta {
    /// A packet of `layer` with no codec fields.
    pub const fn plain(layer: u8, seq: u16, timestamp: u32) -> Self {
        PacketMeta {
            layer,
            seq,
            timestamp,
            switch_point: false,
            frame_start: false,
            spatial: 0,
            temporal: 0,
            temporal_switch: false,
            end_of_frame: false,
            picture_id: None,
            tl0picidx: None,
        }
    }

    /// It starts a picture: the frame of its lowest spatial layer.
    #[inline]
    fn picture_start(&self) -> bool {
        self.frame_start && self.spatial == 0
    }
}

/// The fields the receiver's copy gets (the SSRC becomes the Source's primary one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub seq: u16,
    pub timestamp: u32,
    pub picture_id: Option<u16>,
    pub tl0picidx: Option<u8>,
    /// Set the marker bit: it ends the picture as forwarded (upper spatial layers left out).
    pub marker: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward(Rewrite),
    /// Not for this receiver now: another layer or a layer above its target, before a switch point,
    /// or switched off.
    Filtered,
}

/// Sequence-number and PictureID offsets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Offsets {
    seq: u16,
    pid: u16,
}

/// A run of packets left out of a segment: `dropped` packets just before `seq`; from `seq` on the
/// offsets are `after`. `pictures`: the first and last PictureID (as received) of the pictures it left
/// out whole, so a late piece of one stays out too instead of taking a forwarded picture's PictureID.
#[derive(Clone, Copy, Debug, Default)]
struct Change {
    seq: u16,
    dropped: u16,
    after: Offsets,
    pictures: Option<(u16, u16)>,
}

/// One segment's changes, oldest first (`[..len]` of them); apart from the segment, so that the fields
/// every packet reads stay on a cache line or two.
type Changes = [Change; CHANGES];

#[derive(Clone, Copy, Debug)]
struct Segment {
    layer: u8,
    /// First and newest incoming sequence numbers of it (forwarded or left out).
    start: u16,
    end: u16,
    /// The offsets from `start`, until the first change.
    base: Offsets,
    /// The offsets of newer packets: the last change's, else `base`.
    current: Offsets,
    ts_off: u32,
    tl0_off: u8,
    /// How many changes it has.
    len: u8,
    /// The spatial and temporal layers forwarded now (up to).
    spatial: u8,
    temporal: u8,
    /// The last changes of `spatial`, oldest first, ring order from `spatial_head`: from the incoming
    /// sequence number on, it was no longer the layer given.
    spatial_log: [Option<(u16, u8)>; SPATIAL_LOG],
    spatial_head: u8,
    /// Still growing: packets of its layer newer than `end` join it.
    open: bool,
}

impl Segment {
    fn changes<'a>(&self, all: &'a Changes) -> &'a [Change] {
        &all[..usize::from(self.len)]
    }

    /// The offsets `seq` (within the segment) went or goes out with; None if it was left out.
    #[inline]
    fn offsets(&self, changes: &Changes, seq: u16) -> Option<Offsets> {
        let d = seq.wrapping_sub(self.start);
        let mut off = self.base;
        for c in self.changes(changes) {
            let dc = c.seq.wrapping_sub(self.start);
            if dc <= d {
                off = c.after;
            } else {
                return (dc - d > c.dropped).then_some(off);
            }
        }
        Some(off)
    }

    /// Leaves out `seq`, the newest packet so far; `picture`: it starts a picture that is left out
    /// whole, with this PictureID (0 when it has none).
    #[inline]
    fn leave_out(&mut self, changes: &mut Changes, seq: u16, picture: Option<u16>) {
        self.end = seq;
        let next = seq.wrapping_add(1);
        let pid = u16::from(picture.is_some());
        self.current = Offsets {
            seq: self.current.seq.wrapping_sub(1),
            pid: self.current.pid.wrapping_sub(pid),
        };
        let n = usize::from(self.len);
        if let Some(last) = changes[..n].last_mut().filter(|c| c.seq == seq) {
            last.seq = next;
            last.dropped = last.dropped.saturating_add(1);
            last.after = self.current;
            if let Some(p) = picture {
                last.pictures = Some(last.pictures.map_or((p, p), |(first, _)| (first, p)));
            }
            return;
        }
        if n == CHANGES {
            self.forget_oldest(changes);
        }
        changes[usize::from(self.len)] = Change {
            seq: next,
            dropped: 1,
            after: self.current,
            pictures: picture.map(|p| (p, p)),
        };
        self.len += 1;
    }

    /// Whether PictureID `pid` is of a picture this segment left out.
    #[inline]
    fn left_out_picture(&self, changes: &Changes, pid: (u16, PictureIdWidth)) -> bool {
        let (pid, width) = pid;
        let mask = width.max();
        self.changes(changes).iter().any(|c| {
            c.pictures.is_some_and(|(first, last)| {
                pid.wrapping_sub(first) & mask <= last.wrapping_sub(first) & mask
            })
        })
    }

    /// Forgets the oldest change: what came before it can no longer be placed.
    fn forget_oldest(&mut self, changes: &mut Changes) {
        let first = changes[0];
        self.base = first.after;
        self.start = first.seq;
        changes.copy_within(1.., 0);
        self.len -= 1;
    }

    /// The spatial layers forwarded up to when the packet `seq` (in order) went out.
    fn spatial_at(&self, seq: u16) -> u8 {
        let mut spatial = self.spatial;
        // Newest first: each change at or after `seq` was not yet made when it went.
        for i in (0..SPATIAL_LOG).rev() {
            let at = (usize::from(self.spatial_head) + i) % SPATIAL_LOG;
            match self.spatial_log[at] {
                Some((from, before)) if newer(from, seq) => spatial = before,
                Some(_) => break,
                None => {}
            }
        }
        spatial
    }

    /// Records that from `seq` on the spatial layers forwarded are no longer `before`.
    fn log_spatial(&mut self, seq: u16, before: u8) {
        let head = usize::from(self.spatial_head);
        self.spatial_log[head] = Some((seq, before));
        self.spatial_head = ((head + 1) % SPATIAL_LOG) as u8;
    }

    /// Keeps the segment's span within MAX_SPAN of its newest packet.
    #[inline]
    fn trim(&mut self, changes: &mut Changes) {
        if self.end.wrapping_sub(self.start) <= MAX_SPAN {
            return;
        }
        let start = self.end.wrapping_sub(MAX_SPAN);
        while self.len > 0 && newer(start, changes[0].seq) {
            self.forget_oldest(changes);
        }
        self.start = start;
    }
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
    target: Option<Target>,
    /// Newest first.
    segments: [Option<Segment>; SEGMENTS],
    /// Each segment's changes, by the same index.
    changes: Box<[Changes; SEGMENTS]>,
    sent: Option<Sent>,
    /// When it last asked a keyframe; or, waiting for a temporal switching-up point, since when it waits
    /// (a keyframe is asked after a second of that too).
    last_keyframe_request: Option<Instant>,
    /// Keyframes asked for the current target (the first retry is `KEYFRAME_FIRST_RETRY` after the
    /// first request).
    keyframe_requests: u8,
    /// The sender's path is changing ([`Projection::resync_after_gap`]): until then, a gap cuts.
    resync_until: Option<Instant>,
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
    pub fn new(target: Option<Target>) -> Self {
        Projection {
            target,
            segments: [None; SEGMENTS],
            changes: Box::new([[Change::default(); CHANGES]; SEGMENTS]),
            sent: None,
            last_keyframe_request: None,
            keyframe_requests: 0,
            resync_until: None,
        }
    }

    /// The sender's path is changing (an ICE restart): what it sends while the old path fails is lost
    /// on the way in, and its own history may not have it all. A gap in its stream before `until`
    /// makes the receiver get it from the next switch point on, numbered on from what it last got,
    /// instead of holding every later frame while it asks for packets that may never come. Without a
    /// gap nothing changes. A later `until` extends the window, an earlier one does not shorten it.
    pub fn resync_after_gap(&mut self, until: Instant) {
        self.resync_until = Some(self.resync_until.map_or(until, |u| u.max(until)));
    }

    pub fn target(&self) -> Option<Target> {
        self.target
    }

    fn open(&self) -> Option<&Segment> {
        self.segments[0].as_ref().filter(|s| s.open)
    }

    /// The layer being forwarded now, if any.
    pub fn current(&self) -> Option<u8> {
        self.open().map(|s| s.layer)
    }

    /// The layer, spatial and temporal layers being forwarded now, if any.
    pub fn current_target(&self) -> Option<Target> {
        self.open().map(|s| Target {
            layer: s.layer,
            spatial: s.spatial,
            temporal: s.temporal,
        })
    }

    /// Sets what this receiver should get. The switch itself happens on the packets: at the target's
    /// next switch point, or (going down, or to nothing) at the next picture.
    pub fn set_target(&mut self, target: Option<Target>) {
        if self.target != target {
            self.target = target;
            self.last_keyframe_request = None;
            self.keyframe_requests = 0;
        }
    }

    /// The layer whose keyframe the receiver waits for: another layer, or a spatial layer above what it
    /// gets of this one.
    pub fn waiting(&self) -> Option<u8> {
        let t = self.target?;
        match self.open() {
            Some(s) if s.layer == t.layer && s.spatial >= t.spatial => None,
            _ => Some(t.layer),
        }
    }

    /// Whether the receiver waits for a temporal switching-up point of the layer it gets.
    fn waiting_temporal(&self) -> bool {
        match (self.target, self.open()) {
            (Some(t), Some(s)) => s.layer == t.layer && s.temporal < t.temporal,
            _ => false,
        }
    }

    /// The layer to ask a keyframe of now, at most once per [`KEYFRAME_RETRY`] while waiting, the first
    /// retry [`KEYFRAME_FIRST_RETRY`] after the first request (for a temporal switching-up point, once
    /// one has not come for `KEYFRAME_RETRY`). Called on every packet.
    #[inline]
    pub fn keyframe_request(&mut self, now: Instant) -> Option<u8> {
        let layer = match self.waiting() {
            Some(l) => l,
            None if self.waiting_temporal() => {
                if self.last_keyframe_request.is_none() {
                    self.last_keyframe_request = Some(now);
                    return None;
                }
                self.current()?
            }
            None => return None,
        };
        let wait = if self.keyframe_requests == 1 {
            KEYFRAME_FIRST_RETRY
        } else {
            KEYFRAME_RETRY
        };
        match self.last_keyframe_request {
            Some(t) if now.saturating_duration_since(t) < wait => None,
            _ => {
                self.last_keyframe_request = Some(now);
                self.keyframe_requests = self.keyframe_requests.saturating_add(1);
                Some(layer)
            }
        }
    }

    /// Decides one packet and, when it is forwarded, gives its new fields. `clock_rate` converts the
    /// time since the last packet sent into a timestamp step at a switch.
    #[inline]
    pub fn on_packet(&mut self, now: Instant, clock_rate: u32, m: &PacketMeta) -> Verdict {
        let target = self.target;
        if self.resync_until.is_some() {
            self.resync(now, m);
        }
        if let Some(seg) = self.segments[0]
            .as_mut()
            .filter(|s| s.open && s.layer == m.layer)
        {
            if newer(m.seq, seg.end) {
                let spatial = seg.spatial;
                match target {
                    // Switched off: stop at the next picture.
                    None if m.picture_start() => {
                        seg.open = false;
                        return Verdict::Filtered;
                    }
                    // A keyframe of the layer it gets: any spatial and temporal layer may start here.
                    Some(t) if t.layer == m.layer && m.switch_point => {
                        seg.spatial = t.spatial;
                        seg.temporal = t.temporal;
                    }
                    Some(t) if t.layer == m.layer && m.picture_start() => {
                        seg.spatial = seg.spatial.min(t.spatial);
                        if seg.temporal > t.temporal {
                            seg.temporal = t.temporal;
                        } else if seg.temporal < t.temporal
                            && m.temporal_switch
                            && m.temporal == seg.temporal.saturating_add(1)
                        {
                            seg.temporal = m.temporal;
                        }
                    }
                    // Mid-picture; or going to another layer: this one goes on as it is until that
                    // one's switch point.
                    _ => {}
                }
                if seg.spatial != spatial {
                    seg.log_spatial(m.seq, spatial);
                }
                if m.temporal > seg.temporal || m.spatial > seg.spatial {
                    let picture = (m.picture_start() && m.temporal > seg.temporal)
                        .then(|| m.picture_id.map_or(0, |p| p.0));
                    let changes = &mut self.changes[0];
                    seg.leave_out(changes, m.seq, picture);
                    seg.trim(changes);
                    return Verdict::Filtered;
                }
                return Verdict::Forward(self.forward(0, now, m));
            }
            if within(m.seq, seg.start, seg.end) {
                return self.late(0, now, m);
            }
        }
        if let Some(t) = target.filter(|t| t.layer == m.layer && m.switch_point) {
            self.open_segment(now, clock_rate, m, t);
            return Verdict::Forward(self.forward(0, now, m));
        }
        // A late packet of an earlier stretch.
        for i in 0..SEGMENTS {
            let Some(seg) = &self.segments[i] else { break };
            if seg.layer == m.layer && within(m.seq, seg.start, seg.end) && (i > 0 || !seg.open) {
                return self.late(i, now, m);
            }
        }
        Verdict::Filtered
    }

    /// A packet older than its segment's newest: forwarded where it would have gone in order, unless
    /// it is of a layer left out now or its place was given up.
    #[inline]
    fn late(&mut self, index: usize, now: Instant, m: &PacketMeta) -> Verdict {
        let Some(seg) = &self.segments[index] else {
            return Verdict::Filtered;
        };
        let changes = &self.changes[index];
        if m.temporal > seg.temporal
            || m.spatial > seg.spatial
            || seg.offsets(changes, m.seq).is_none()
            || m.picture_id
                .is_some_and(|p| seg.left_out_picture(changes, p))
        {
            return Verdict::Filtered;
        }
        Verdict::Forward(self.forward(index, now, m))
    }

    /// The incoming sequence number (and its layer) that the receiver's `seq` was made from, for
    /// translating its NACKs; None if it is not one this Projection forwarded recently.
    #[inline]
    pub fn original(&self, seq: u16) -> Option<(u8, u16)> {
        let (i, orig, _) = self.locate(seq)?;
        Some((self.segments[i].as_ref()?.layer, orig))
    }

    /// The segment the receiver's `seq` was made in, the incoming sequence number and its offsets.
    #[inline]
    fn locate(&self, seq: u16) -> Option<(usize, u16, Offsets)> {
        self.segments
            .iter()
            .zip(self.changes.iter())
            .enumerate()
            .filter_map(|(i, (s, c))| Some((i, s.as_ref()?, c)))
            .find_map(|(i, s, changes)| {
                std::iter::once(s.base)
                    .chain(s.changes(changes).iter().map(|c| c.after))
                    .find_map(|off| {
                        let orig = seq.wrapping_sub(off.seq);
                        (within(orig, s.start, s.end) && s.offsets(changes, orig) == Some(off))
                            .then_some((i, orig, off))
                    })
            })
    }

    /// The rewrite the receiver's `seq` went out with, for resending it: `m` is the packet it was
    /// made from (its layer and sequence number must be what [`Projection::original`] gives). The
    /// same fields as the first time, from the segment's offsets and the spatial layers it forwarded
    /// then (for the marker bit); nothing of the Projection changes. None when `seq` is not one it
    /// forwarded, or `m` is not its original.
    #[inline]
    pub fn replay(&self, seq: u16, m: &PacketMeta) -> Option<Rewrite> {
        let (i, orig, off) = self.locate(seq)?;
        let seg = self.segments[i].as_ref()?;
        if orig != m.seq
            || seg.layer != m.layer
            || m.picture_id
                .is_some_and(|p| seg.left_out_picture(&self.changes[i], p))
        {
            return None;
        }
        Some(Rewrite {
            seq,
            timestamp: m.timestamp.wrapping_add(seg.ts_off),
            picture_id: m.picture_id.map(|(p, w)| add_pid(p, off.pid, w)),
            tl0picidx: m.tl0picidx.map(|t| t.wrapping_add(seg.tl0_off)),
            marker: m.end_of_frame && m.spatial == seg.spatial_at(orig),
        })
    }

    /// The current segment's layer and timestamp offset, for rewriting that layer's sender reports.
    pub fn timestamp_offset(&self, layer: u8) -> Option<u32> {
        self.open().filter(|s| s.layer == layer).map(|s| s.ts_off)
    }

    fn open_segment(&mut self, now: Instant, clock_rate: u32, m: &PacketMeta, t: Target) {
        let (seq, ts_off, pid, tl0_off) = match self.sent {
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
            base: Offsets { seq, pid },
            current: Offsets { seq, pid },
            ts_off,
            tl0_off,
            len: 0,
            spatial: t.spatial,
            temporal: t.temporal,
            spatial_log: [None; SPATIAL_LOG],
            spatial_head: 0,
            open: true,
        };
        for old in self.segments.iter_mut().flatten() {
            old.open = false;
        }
        self.resync_until = None;
        self.segments.rotate_right(1);
        self.changes.rotate_right(1);
        self.segments[0] = Some(seg);
    }

    /// Within the resync window: the window ends, or a gap closes the open stretch (the next switch
    /// point opens the next). Out of line: rare, and the per-packet path stays small.
    #[cold]
    #[inline(never)]
    fn resync(&mut self, now: Instant, m: &PacketMeta) {
        let Some(until) = self.resync_until else {
            return;
        };
        if now >= until {
            self.resync_until = None;
        } else if let Some(seg) = self.segments[0].as_mut().filter(|s| {
            s.open && s.layer == m.layer && newer(m.seq, s.end) && m.seq.wrapping_sub(s.end) > 1
        }) {
            seg.open = false;
            self.resync_until = None;
        }
    }

    /// The rewrite of a packet of segment `index` that is forwarded.
    #[inline]
    fn forward(&mut self, index: usize, now: Instant, m: &PacketMeta) -> Rewrite {
        let Some(seg) = self.segments[index].as_mut() else {
            // Callers pass a segment they found.
            return Rewrite {
                seq: m.seq,
                timestamp: m.timestamp,
                picture_id: m.picture_id.map(|p| p.0),
                tl0picidx: m.tl0picidx,
                marker: false,
            };
        };
        let changes = &mut self.changes[index];
        let in_order = newer(m.seq, seg.end);
        let off = if in_order {
            seg.current
        } else {
            seg.offsets(changes, m.seq).unwrap_or(seg.current)
        };
        let out = Rewrite {
            seq: m.seq.wrapping_add(off.seq),
            timestamp: m.timestamp.wrapping_add(seg.ts_off),
            picture_id: m.picture_id.map(|(p, w)| add_pid(p, off.pid, w)),
            tl0picidx: m.tl0picidx.map(|t| t.wrapping_add(seg.tl0_off)),
            marker: m.end_of_frame && m.spatial == seg.spatial,
        };
        if in_order {
            seg.end = m.seq;
            // A long stretch keeps only its recent past: a packet further behind is no longer late
            // but lost, and the span must stay well inside half the sequence space.
            seg.trim(changes);
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
