//! Selective forwarding of video. Each signalled video Source with layers is a `VideoSource`; each of its
//! SSRCs routes to it (a layer, or the RTX of one). Every receiver has a Projection of the Source: the one
//! layer it is to get, rewritten onto the Source's primary SSRC (the first layer's, which the focus tells
//! receivers about). RTX from the sender is unwrapped to the original packet and goes through the same
//! Projection, so a retransmission fills the receiver's gap on the primary SSRC. Receivers' RTCP about the
//! primary SSRC (PLI, FIR) is translated back to the layer it was made from; their NACKs are answered
//! from the layers' caches, or translated back to the layer and sequence numbers (`rtx.rs`).

use std::collections::HashMap;
use std::time::Instant;

use super::{KeyframeWants, Router, MAX_SPATIAL};
use crate::codec::{
    h264::H264Payload, vp8, vp8::Vp8Descriptor, vp9, vp9::Vp9Descriptor, PictureIdWidth,
};
use crate::domain::{Codec, IdMap, Layer, MediaKind, TransportId, VideoTarget};
use crate::io::{Egress, MAX_DATAGRAM};
use crate::projection::{PacketMeta, Projection, Rewrite, Target, Verdict, ALL};
use crate::rtcp::write_sender_report;
use crate::rtp::{set_payload_type, set_sequence_number, set_ssrc, set_timestamp, RtpView};
use crate::stats::{Counters, DropReason, LayerStats, WaitingStats};
use crate::transport::{Protect, TccOffset, Transport};

/// Where one Producer's packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To every other member as they came (audio, and SSRCs outside a video Source's layers).
    Plain,
    /// Layer `layer` of video Source `source`: through each receiver's Projection.
    Layer { source: u64, layer: u8 },
    /// Retransmissions of that layer: unwrapped, then as the layer.
    Rtx { source: u64, layer: u8 },
}

/// One video Source with its layers and a Projection per receiver that has seen it.
pub struct VideoSource {
    pub owner: TransportId,
    pub name: String,
    pub layers: Vec<Layer>,
    pub(super) consumers: IdMap<Projection>,
    /// What each receiver was resent of it (made at its first packet resent).
    pub(super) rtx: IdMap<super::rtx::RtxOut>,
}

impl VideoSource {
    /// The SSRC receivers know it by.
    pub fn primary(&self) -> u32 {
        self.layers.first().map_or(0, |l| l.ssrc)
    }

    fn target_for(&self, allocations: &Allocations, receiver: u64) -> Option<Target> {
        vs_target(&self.name, &self.layers, allocations, receiver)
    }

    pub fn projection(&self, receiver: TransportId) -> Option<&Projection> {
        self.consumers.get(&receiver)
    }
}

/// Where a packet's codec fields sit (offsets from the start of the RTP packet), found once per packet
/// so each receiver's copy is rewritten without parsing again; and the frame sizes a keyframe carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    pub picture_id_at: Option<(usize, PictureIdWidth)>,
    pub tl0picidx_at: Option<usize>,
    /// Width and height of each spatial layer, when the packet says (a VP8 keyframe's header, a VP9
    /// scalability structure, an AV1 dependency structure).
    pub sizes: [Option<(u16, u16)>; MAX_SPATIAL],
}

impl Fields {
    /// Where a VP8 or VP9 descriptor's PictureID and TL0PICIDX sit in the packet, from their offsets in
    /// the payload (`field_offsets`) and the header's length.
    fn place_picture_fields(
        &mut self,
        header_len: usize,
        (pid_at, tl0_at): (Option<usize>, Option<usize>),
        width: Option<PictureIdWidth>,
    ) {
        self.picture_id_at = pid_at.zip(width).map(|(at, w)| (header_len + at, w));
        self.tl0picidx_at = tl0_at.map(|at| header_len + at);
    }
}

/// The fields of a video packet a Projection needs, from its payload as `codec` says, and where they
/// sit. A payload that does not parse as its codec is no switch point and has nothing to rewrite.
#[inline]
pub fn packet_meta(codec: Codec, layer: u8, rtp: &RtpView<'_>) -> (PacketMeta, Fields) {
    let mut m = PacketMeta::plain(layer, rtp.sequence_number(), rtp.timestamp());
    let mut f = Fields::default();
    let payload = rtp.payload();
    let hl = rtp.header_len();
    match codec {
        Codec::Vp8 => {
            if let Ok(d) = Vp8Descriptor::parse(payload) {
                m.switch_point = d.starts_keyframe();
                m.frame_start = d.starts_frame();
                m.temporal = d.tid.unwrap_or(0);
                m.temporal_switch = d.layer_sync;
                m.picture_id = d.picture_id.zip(d.picture_id_width);
                m.tl0picidx = d.tl0picidx;
                f.place_picture_fields(hl, vp8::field_offsets(&d), d.picture_id_width);
                if m.switch_point {
                    f.sizes[0] = payload.get(d.header_len..).and_then(vp8::keyframe_size);
                }
            }
        }
        Codec::Vp9 => {
            if let Ok(d) = Vp9Descriptor::parse(payload) {
                m.switch_point = d.starts_keyframe();
                m.frame_start = d.start_of_frame;
                m.end_of_frame = d.end_of_frame;
                m.spatial = d.sid.unwrap_or(0);
                m.temporal = d.tid.unwrap_or(0);
                m.temporal_switch = d.switching_up_point;
                m.picture_id = d.picture_id.zip(d.picture_id_width);
                m.tl0picidx = d.tl0picidx;
                f.place_picture_fields(hl, vp9::field_offsets(&d), d.picture_id_width);
                if let Some(ss) = &d.scalability_structure {
                    for (slot, r) in f.sizes.iter_mut().zip(ss.resolutions()) {
                        *slot = Some((r.width, r.height));
                    }
                }
            }
        }
        Codec::H264 => {
            if let Ok(p) = H264Payload::parse(payload) {
                m.switch_point = p.starts_keyframe();
                m.frame_start = m.switch_point;
            }
        }
        // No keyframe the bridge can see (AV1 without a dependency descriptor): every packet is a
        // place to start or stop.
        Codec::Av1 | Codec::Other | Codec::Rtx { .. } | Codec::Red | Codec::Audio => {
            m.switch_point = true;
            m.frame_start = true;
        }
    }
    (m, f)
}

/// Writes a Projection's rewrite into a receiver's copy of the packet (a header the copy has, fields
/// where `f` found them; anything out of range is left alone).
#[inline]
pub fn apply_rewrite(buf: &mut [u8], primary: u32, f: &Fields, r: &Rewrite) {
    set_ssrc(buf, primary);
    if r.marker {
        if let Some(b) = buf.get_mut(1) {
            *b |= 0x80;
        }
    }
    set_sequence_number(buf, r.seq);
    set_timestamp(buf, r.timestamp);
    if let (Some((at, width)), Some(pid)) = (f.picture_id_at, r.picture_id) {
        match width {
            PictureIdWidth::Bits7 => {
                if let Some(b) = buf.get_mut(at) {
                    *b = (pid & 0x7f) as u8;
                }
            }
            PictureIdWidth::Bits15 => {
                if let Some(b) = buf.get_mut(at..at + 2) {
                    b.copy_from_slice(&(0x8000 | (pid & 0x7fff)).to_be_bytes());
                }
            }
        }
    }
    if let (Some(at), Some(tl0)) = (f.tl0picidx_at, r.tl0picidx) {
        if let Some(b) = buf.get_mut(at) {
            *b = tl0;
        }
    }
}

/// The original packet of an RTX one (RFC 4588 4): the header with the layer's SSRC, the original
/// sequence number and payload type, then the payload after the OSN, without padding. None for an RTX
/// packet that carries no original (padding only, as senders probe with).
pub fn unwrap_rtx(
    rtx: &RtpView<'_>,
    ssrc: u32,
    apt: u8,
    out: &mut [u8; MAX_DATAGRAM],
) -> Option<usize> {
    let payload = rtx.payload();
    let (osn, body) = payload.split_first_chunk::<2>()?;
    if body.is_empty() {
        return None;
    }
    let hl = rtx.header_len();
    let n = hl + body.len();
    out.get_mut(..hl)?
        .copy_from_slice(rtx.as_bytes().get(..hl)?);
    out.get_mut(hl..n)?.copy_from_slice(body);
    out[0] &= !0x20; // no padding any more
    set_ssrc(out, ssrc);
    set_sequence_number(out, u16::from_be_bytes(*osn));
    set_payload_type(out, apt);
    Some(n)
}

impl Router {
    /// Rebuilds the video Sources of `transport` after its Sources were replaced: a Source that keeps
    /// its name keeps its receivers' Projections; every SSRC it owns gets its route.
    pub(super) fn refresh_video(&mut self, transport: TransportId) {
        let mut old: HashMap<String, (u64, VideoSource)> = HashMap::new();
        let keys: Vec<u64> = self
            .video
            .iter()
            .filter(|(_, v)| v.owner == transport)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(v) = self.video.remove(&k) {
                old.insert(v.name.clone(), (k, v));
            }
        }
        for p in self.producers.values_mut() {
            if p.transport == transport {
                p.route = Route::Plain;
            }
        }
        let records = self.sources.get(&transport).cloned().unwrap_or_default();
        for rec in records {
            if rec.kind != MediaKind::Video || rec.layers.is_empty() {
                continue;
            }
            let (key, mut vs) = old.remove(&rec.name).unwrap_or_else(|| {
                self.next_video += 1;
                let vs = VideoSource {
                    owner: transport,
                    name: rec.name.clone(),
                    layers: Vec::new(),
                    consumers: IdMap::default(),
                    rtx: IdMap::default(),
                };
                (self.next_video, vs)
            });
            vs.layers = rec.layers.clone();
            for (i, l) in rec.layers.iter().enumerate() {
                let layer = u8::try_from(i).unwrap_or(u8::MAX);
                let mut set = |ssrc: u32, route: Route| {
                    if let Some(p) = self.producers.get_mut(&ssrc) {
                        if p.transport == transport {
                            p.route = route;
                        }
                    }
                };
                set(l.ssrc, Route::Layer { source: key, layer });
                if let Some(rtx) = l.rtx {
                    set(rtx, Route::Rtx { source: key, layer });
                }
            }
            for (&receiver, proj) in vs.consumers.iter_mut() {
                proj.set_target(vs_target(&vs.name, &vs.layers, &self.allocations, receiver));
            }
            self.video.insert(key, vs);
        }
    }

    /// One video packet of `from`, layer `layer` of `source`, through every other ready member's
    /// Projection. Returns the number queued; filtered copies are counted as `filtered` on the total.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) fn forward_layer(
        &mut self,
        now: Instant,
        from: TransportId,
        source: u64,
        meta: &PacketMeta,
        fields: &Fields,
        packet: &[u8],
        transports: &mut IdMap<Transport>,
        egress: &mut impl Egress,
        total: &mut Counters,
    ) -> usize {
        let Router {
            members,
            video,
            allocations,
            keyframe_wanted,
            ..
        } = self;
        let Some(vs) = video.get_mut(&source) else {
            return 0;
        };
        let primary = vs.primary();
        let mut tcc = TccOffset::new(packet);
        let mut queued = 0;
        for &m in members.iter() {
            if m == from {
                continue;
            }
            let Some(r) = transports.get_mut(&m) else {
                continue;
            };
            if !r.is_media_ready() {
                continue;
            }
            let proj = match vs.consumers.get_mut(&m) {
                Some(p) => p,
                None => {
                    let target = vs.target_for(allocations, m);
                    vs.consumers.entry(m).or_insert(Projection::new(target))
                }
            };
            match proj.on_packet(now, MediaKind::Video.clock_rate(), meta) {
                Verdict::Forward(rw) => {
                    let sent = r.send_rtp_paced(now, packet, &mut tcc, egress, total, |b| {
                        apply_rewrite(b, primary, fields, &rw)
                    });
                    if sent {
                        queued += 1;
                    }
                }
                Verdict::Filtered => {
                    r.counters.drop(DropReason::Filtered);
                    total.drop(DropReason::Filtered);
                }
            }
            // Every packet: H.264 marks no frame starts but keyframes, and a waiting receiver must ask
            // again if its first request was lost (at most once a second; a few compares otherwise).
            if let Some(l) = proj
                .keyframe_request(now)
                .and_then(|l| vs.layers.get(usize::from(l)))
            {
                keyframe_wanted.add(l.ssrc);
            }
        }
        queued
    }

    /// A keyframe a receiver's Projection is waiting for (the SSRC of its layer), once.
    pub fn take_keyframe_requests(&mut self) -> KeyframeWants {
        std::mem::take(&mut self.keyframe_wanted)
    }

    /// Whether some receiver still waits for a keyframe of `ssrc`, a layer of a video Source.
    pub fn keyframe_awaited(&self, ssrc: u32) -> bool {
        let Some((source, layer)) = self.video_route(ssrc) else {
            return false;
        };
        let Some(vs) = self.video.get(&source) else {
            return false;
        };
        vs.layers
            .get(usize::from(layer))
            .is_some_and(|l| l.ssrc == ssrc)
            && vs.consumers.values().any(|p| p.waiting() == Some(layer))
    }

    /// Sets what `receiver` gets of each named video Source (None: nothing; a layer above the Source's
    /// top means its top). Sources it does not name get all of their top layer. Returns the SSRCs whose
    /// keyframe a receiver now waits for.
    pub fn set_allocation(
        &mut self,
        now: Instant,
        receiver: TransportId,
        targets: Vec<(String, Option<VideoTarget>)>,
    ) -> Vec<u32> {
        self.allocations
            .insert(receiver, targets.into_iter().collect());
        let mut wanted = Vec::new();
        for vs in self.video.values_mut() {
            if vs.owner == receiver {
                continue;
            }
            let target = vs_target(&vs.name, &vs.layers, &self.allocations, receiver);
            let proj = vs
                .consumers
                .entry(receiver)
                .or_insert(Projection::new(target));
            proj.set_target(target);
            if let Some(l) = proj.keyframe_request(now) {
                if let Some(layer) = vs.layers.get(usize::from(l)) {
                    wanted.push(layer.ssrc);
                }
            }
        }
        wanted
    }

    /// `owner`'s path is changing (an ICE restart): until `until`, a gap in its video makes each
    /// receiver resume at a switch point ([`Projection::resync_after_gap`]).
    pub fn resync_sender(&mut self, owner: TransportId, until: Instant) {
        for vs in self.video.values_mut().filter(|v| v.owner == owner) {
            for p in vs.consumers.values_mut() {
                p.resync_after_gap(until);
            }
        }
    }

    /// Forgets a receiver's Projections and allocation (it left).
    pub(super) fn forget_receiver(&mut self, receiver: TransportId) {
        self.allocations.remove(&receiver);
        self.rtx_budgets.remove(&receiver);
        for vs in self.video.values_mut() {
            vs.consumers.remove(&receiver);
            vs.rtx.remove(&receiver);
        }
    }

    /// The video Source an SSRC belongs to and the layer it is (or retransmits).
    pub fn video_route(&self, ssrc: u32) -> Option<(u64, u8)> {
        match self.producers.get(&ssrc)?.route {
            Route::Layer { source, layer } | Route::Rtx { source, layer } => Some((source, layer)),
            Route::Plain => None,
        }
    }

    pub fn video_source(&self, source: u64) -> Option<&VideoSource> {
        self.video.get(&source)
    }

    /// The SSRC to ask a keyframe of when `receiver` asks one of `media_ssrc`: the layer it gets (or
    /// waits for) of that Source; `media_ssrc` itself outside video Sources.
    pub fn keyframe_ssrc_for(&self, receiver: TransportId, media_ssrc: u32) -> u32 {
        let Some((source, _)) = self.video_route(media_ssrc) else {
            return media_ssrc;
        };
        let Some(vs) = self.video.get(&source) else {
            return media_ssrc;
        };
        let layer = vs
            .consumers
            .get(&receiver)
            .and_then(|p| p.waiting().or(p.current()));
        layer
            .and_then(|l| vs.layers.get(usize::from(l)))
            .map_or(media_ssrc, |l| l.ssrc)
    }

    /// Passes a sender report of `ssrc` from `from` on: as it is for a plain stream; for a video layer,
    /// to each receiver currently getting that layer, on the primary SSRC with its timestamp offset; an
    /// RTX stream's reports go to nobody (receivers know no RTX of layers). Returns the number queued.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_sender_report(
        &self,
        now: Instant,
        from: TransportId,
        ssrc: u32,
        ntp: u64,
        rtp_timestamp: u32,
        counts: (u32, u32),
        transports: &mut IdMap<Transport>,
        egress: &mut impl Egress,
        total: &mut Counters,
    ) -> usize {
        let mut out = [0u8; 64];
        let route = self.producers.get(&ssrc).map_or(Route::Plain, |p| p.route);
        match route {
            Route::Plain => {
                let Ok(n) = write_sender_report(
                    &mut out,
                    ssrc,
                    ntp,
                    rtp_timestamp,
                    counts.0,
                    counts.1,
                    &[],
                ) else {
                    return 0;
                };
                self.forward(
                    now,
                    from,
                    Protect::Rtcp,
                    &out[..n],
                    transports,
                    egress,
                    total,
                )
            }
            Route::Rtx { .. } => 0,
            Route::Layer { source, layer } => {
                let Some(vs) = self.video.get(&source) else {
                    return 0;
                };
                let mut queued = 0;
                for (&m, proj) in vs.consumers.iter() {
                    let Some(off) = proj.timestamp_offset(layer).filter(|_| m != from) else {
                        continue;
                    };
                    let ts = rtp_timestamp.wrapping_add(off);
                    let Ok(n) = write_sender_report(
                        &mut out,
                        vs.primary(),
                        ntp,
                        ts,
                        counts.0,
                        counts.1,
                        &[],
                    ) else {
                        continue;
                    };
                    if let Some(r) = transports.get_mut(&m) {
                        if r.send_protected(Protect::Rtcp, &out[..n], egress, total) {
                            queued += 1;
                        }
                    }
                }
                queued
            }
        }
    }
}

impl Router {
    /// Appends the receive figures of every video layer's spatial and temporal layers (one entry with
    /// nothing measured for a signalled layer no packet came on yet).
    pub fn layer_stats(&self, now: Instant, out: &mut Vec<LayerStats>) {
        for vs in self.video.values() {
            for (i, l) in vs.layers.iter().enumerate() {
                let Some(p) = self.producers.get(&l.ssrc) else {
                    continue;
                };
                let entry = |spatial: usize, temporal: usize| LayerStats {
                    router: self.id,
                    transport: vs.owner,
                    source: vs.name.clone(),
                    layer: u8::try_from(i).unwrap_or(u8::MAX),
                    spatial: spatial as u8,
                    temporal: temporal as u8,
                    ssrc: l.ssrc,
                    bitrate_bps: 0,
                    frame_rate: 0.0,
                    settled: false,
                    packets: p.packets,
                    frame_size: None,
                };
                let Some(sub) = &p.sublayers else {
                    out.push(entry(0, 0));
                    continue;
                };
                for (s, row) in sub.meters.iter().enumerate() {
                    for (t, meter) in row.iter().enumerate().filter(|(_, m)| m.seen()) {
                        out.push(LayerStats {
                            bitrate_bps: meter.bps(now),
                            frame_rate: meter.fps(now),
                            settled: meter.settled(),
                            frame_size: sub.sizes[s],
                            ..entry(s, t)
                        });
                    }
                }
            }
        }
    }

    /// Appends every receiver that waits for a layer's keyframe.
    pub fn waiting_stats(&self, out: &mut Vec<WaitingStats>) {
        for vs in self.video.values() {
            for (&receiver, p) in vs.consumers.iter() {
                if let Some(target) = p.waiting() {
                    out.push(WaitingStats {
                        router: self.id,
                        receiver,
                        source: vs.name.clone(),
                        target,
                        current: p.current(),
                    });
                }
            }
        }
    }
}

/// What each receiver was allocated, by Source name.
pub(super) type Allocations = IdMap<HashMap<String, Option<VideoTarget>>>;

/// What `receiver` has been allocated of a Source (all of its top layer if nothing was said): with
/// simulcast the allocation's spatial index picks the layer; a Source of one SSRC filters its spatial
/// layers instead.
fn vs_target(
    name: &str,
    layers: &[Layer],
    allocations: &Allocations,
    receiver: u64,
) -> Option<Target> {
    let top = u8::try_from(layers.len().checked_sub(1)?).ok()?;
    match allocations.get(&receiver).and_then(|a| a.get(name)) {
        Some(t) => t.map(|t| {
            if top > 0 {
                Target {
                    layer: t.spatial.min(top),
                    spatial: ALL,
                    temporal: t.temporal,
                }
            } else {
                Target {
                    layer: 0,
                    spatial: t.spatial,
                    temporal: t.temporal,
                }
            }
        }),
        None => Some(Target::layer(top)),
    }
}
