//! Router: one conference's forwarding domain. It knows its transports, every Source each one signalled
//! (with its layers and their RTX), and for every signalled SSRC the Producer that sends it; and it owns
//! forwarding: the shard hands it each decrypted packet and an egress to queue into. The Router itself
//! touches no socket. Producers stay per SSRC and as small as the packet path needs; what an SSRC is within
//! its Source is looked up in the Source's record (`Router::stream`).

mod red;
mod rtx;
mod video;

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use red::{red_variant, RedVariant};
pub use rtx::{
    resend_interval, write_rtx, PacketCache, RtxBudget, CACHE_AGE, CACHE_BYTES, CACHE_SLOTS,
    RESEND_CEILING, RESEND_FLOOR, RTX_BURST, RTX_SHARE, RTX_START,
};
pub use video::{apply_rewrite, packet_meta, unwrap_rtx, Fields, Route, VideoSource};

use crate::cc::NackTracker;
use crate::codec::av1::{Av1Descriptor, Av1Structure, Dti};
use crate::domain::{
    Codec, FeedbackSsrcs, ForceMute, HeaderExtensionIds, IdMap, Layer, MediaKind, PayloadMap,
    PayloadType, RouterId, Source, TransportId,
};
use crate::io::{Egress, MAX_DATAGRAM};
use crate::projection::PacketMeta;
use crate::rtcp::{write_receiver_report, write_sdes_cname, ReportBlock};
use crate::rtp::{ReceiverStats, RtpView};
use crate::stats::{Counters, DropReason};
use crate::transport::{PaddingStream, Protect, TccOffset, Transport};

/// How often the bridge sends its own receiver reports to each sender (RFC 3550 6.2 allows 5 s;
/// WebRTC senders use them for loss-based rate control, so we report faster).
pub const RR_INTERVAL: Duration = Duration::from_millis(1000);

/// A keyframe request to one sender is sent at most this often: receivers joining together share one.
pub const KEYFRAME_REQUEST_MIN_INTERVAL: Duration = Duration::from_millis(300);

/// How far (in sequence numbers) the stream may move past a force-muted run before that run is forgotten:
/// beyond any age a receiver still asks retransmissions for (libwebrtc stops at 10,000), well short of a
/// wrap of the 16-bit sequence number.
const MUTED_RUN_MEMORY: u16 = 0x4000;

/// RFC 3550 6.4.2: at most 31 report blocks fit one RR.
const MAX_BLOCKS: usize = 31;

/// The CNAME the bridge uses for its own RTCP.
const BRIDGE_CNAME: &[u8] = b"sluice";

/// The layers whose keyframe receivers asked for during one packet's fan-out: distinct SSRCs, as many as
/// a simulcast Source has layers (receivers may wait for different ones). Fixed size: no allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyframeWants {
    ssrcs: [u32; 4],
    len: u8,
}

impl KeyframeWants {
    /// Adds `ssrc` unless it is there; past four (more layers than simulcast has) the receiver asks again
    /// after its retry interval.
    pub fn add(&mut self, ssrc: u32) {
        let len = usize::from(self.len);
        if !self.ssrcs[..len].contains(&ssrc) && len < self.ssrcs.len() {
            self.ssrcs[len] = ssrc;
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ssrcs[..usize::from(self.len)].iter().copied()
    }
}

/// The part one SSRC plays in its Source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Layer `index` of its Source (in SIM order; 0 without simulcast), retransmitted on `rtx`.
    Layer { index: u8, rtx: Option<u32> },
    /// Retransmissions (RFC 4588) of the layer sent on `primary`.
    Rtx { primary: u32 },
    /// Neither: an SSRC the Source lists outside its layers and their RTX (FEC, say).
    Other,
}

/// One signalled Source as the Router keeps it: who sends it, its kind, its name and its layers. Kept as
/// signalled; an SSRC refused because another transport owns it has no Producer here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    pub transport: TransportId,
    pub kind: MediaKind,
    pub name: String,
    pub layers: Vec<Layer>,
}

impl SourceRecord {
    /// The part `ssrc` plays in this Source, if it is one of the Source's layers or their RTX.
    fn stream(&self, ssrc: u32) -> Option<Stream> {
        self.layers.iter().enumerate().find_map(|(i, l)| {
            if l.ssrc == ssrc {
                // Simulcast has at most a few layers; u8 saturates rather than wraps.
                let index = u8::try_from(i).unwrap_or(u8::MAX);
                Some(Stream::Layer { index, rtx: l.rtx })
            } else if l.rtx == Some(ssrc) {
                Some(Stream::Rtx { primary: l.ssrc })
            } else {
                None
            }
        })
    }
}

/// Ingress of one signalled SSRC.
pub struct Producer {
    pub transport: TransportId,
    pub kind: MediaKind,
    pub stats: ReceiverStats,
    pub last_keyframe_request: Option<Instant>,
    pub packets: u64,
    /// Sequence numbers (first, last) this stream had dropped by force-mute, spanning at most
    /// MUTED_RUN_MEMORY. Receivers see the gap after an unmute and ask for it with NACKs; retransmitting it
    /// would deliver muted media.
    pub muted_run: Option<(u16, u16)>,
    /// Where its packets go: as they are, or through a video Source's Projections.
    pub route: Route,
    /// Its receive rate, measured on every packet.
    pub rate: RateMeter,
    /// A video layer's spatial and temporal layers, measured on every packet (not retransmissions);
    /// made on its first packet.
    pub sublayers: Option<Box<Sublayers>>,
    /// RFC 6464 levels of its packets since the last tick.
    pub levels: LevelMeter,
    /// AV1: the template dependency structure its last keyframe's dependency descriptor carried.
    pub av1: Option<Box<Av1Structure>>,
    /// Video: what did not arrive, for the bridge's own NACKs to the sender (made on its first packet).
    pub nack: Option<Box<NackTracker>>,
    /// A video layer: its recent packets, for answering receivers' NACKs (made on its first packet).
    pub cache: Option<Box<PacketCache>>,
}

/// How often a Router's audio levels cross the seam.
pub const LEVEL_TICK: Duration = Duration::from_millis(200);

/// RFC 6464 audio levels of one SSRC over one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LevelMeter {
    /// Sum of the levels' loudness, 127 - level (level is -dBov, 127 silence), over `packets`.
    loudness: u32,
    packets: u32,
    voice: bool,
}

impl LevelMeter {
    /// One packet's extension byte: V (voice activity) and the level in -dBov.
    #[inline]
    pub fn add(&mut self, byte: u8) {
        self.loudness = self.loudness.saturating_add(u32::from(127 - (byte & 0x7f)));
        self.packets = self.packets.saturating_add(1);
        self.voice |= byte & 0x80 != 0;
    }
}

/// One sender SSRC's audio over a tick: its mean loudness (127 - mean level in -dBov: 0 is silence,
/// 127 full scale), whether any packet said voice, and how many packets carried a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioLevel {
    pub transport: TransportId,
    pub ssrc: u32,
    pub loudness: u8,
    pub voice: bool,
    pub packets: u32,
}

/// Bits and frames per second over the last complete window of at least RATE_WINDOW.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    frames: u32,
    bps: u64,
    /// Frames per second × 1000.
    fps_milli: u32,
    /// A window closed: `bps` and `fps_milli` are measured, not just started.
    settled: bool,
}

/// The window a rate is measured over: long enough for a few frames at the lowest layer's rate.
pub const RATE_WINDOW: Duration = Duration::from_millis(500);

impl RateMeter {
    #[inline]
    pub fn on_packet(&mut self, now: Instant, len: usize) {
        self.on_frame_packet(now, len, false);
    }

    /// A packet, `frame_start` when it begins a frame.
    #[inline]
    pub fn on_frame_packet(&mut self, now: Instant, len: usize, frame_start: bool) {
        let Some(start) = self.window_start else {
            // The first packet opens the window: a frame it starts would be counted over no time.
            self.window_start = Some(now);
            self.bytes = len as u64;
            return;
        };
        self.bytes += len as u64;
        self.frames += u32::from(frame_start);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let micros = elapsed.as_micros().max(1);
            self.bps = (u128::from(self.bytes) * 8_000_000 / micros) as u64;
            self.fps_milli = (u128::from(self.frames) * 1_000_000_000 / micros) as u32;
            self.settled = true;
            self.bytes = 0;
            self.frames = 0;
            self.window_start = Some(now);
        }
    }

    /// Whether a packet ever came.
    pub fn seen(&self) -> bool {
        self.window_start.is_some()
    }

    /// Whether a whole window was measured: until then a layer's rates are a start, not its rates.
    pub fn settled(&self) -> bool {
        self.settled
    }

    fn live(&self, now: Instant) -> bool {
        matches!(self.window_start, Some(s) if now.saturating_duration_since(s) < 2 * RATE_WINDOW)
    }

    /// Until the first window closes, what the open one has seen so far (after a tenth of a window):
    /// a layer that has just started is not taken for one that is not sent.
    fn first_window(&self, now: Instant) -> Option<f64> {
        let start = self.window_start?;
        let elapsed = now.saturating_duration_since(start);
        (!self.settled && elapsed >= RATE_WINDOW / 10).then_some(elapsed.as_secs_f64())
    }

    /// The rate, 0 once nothing came for two windows.
    pub fn bps(&self, now: Instant) -> u64 {
        if !self.live(now) {
            return 0;
        }
        match self.first_window(now) {
            Some(secs) => (self.bytes as f64 * 8.0 / secs) as u64,
            None => self.bps,
        }
    }

    /// Frames per second, 0 once nothing came for two windows, and 0 (unknown) until the first window
    /// closed: a few frames over part of a window read low (the first frame opens it uncounted), and the
    /// allocation would take a layer just started for one under its frame rate and choose a lower
    /// temporal layer, whose way back up then waits for a switching point.
    pub fn fps(&self, now: Instant) -> f64 {
        if !self.live(now) || !self.settled {
            return 0.0;
        }
        f64::from(self.fps_milli) / 1000.0
    }
}

/// Spatial and temporal layers measured within one SSRC (higher ids count as the highest).
pub const MAX_SPATIAL: usize = 4;
pub const MAX_TEMPORAL: usize = 4;

/// What each spatial and temporal layer of one video SSRC brings: its own packets (not those of the
/// layers below it) and the frame size of each spatial layer.
#[derive(Clone, Debug, Default)]
pub struct Sublayers {
    pub meters: [[RateMeter; MAX_TEMPORAL]; MAX_SPATIAL],
    pub sizes: [Option<(u16, u16)>; MAX_SPATIAL],
}

impl Sublayers {
    #[inline]
    pub fn on_packet(&mut self, now: Instant, len: usize, meta: &PacketMeta, fields: &Fields) {
        let s = usize::from(meta.spatial).min(MAX_SPATIAL - 1);
        let t = usize::from(meta.temporal).min(MAX_TEMPORAL - 1);
        self.meters[s][t].on_frame_packet(now, len, meta.frame_start);
        for (to, from) in self.sizes.iter_mut().zip(fields.sizes) {
            if from.is_some() {
                *to = from;
            }
        }
    }
}

impl Producer {
    /// Records a packet dropped by force-mute: starts a run or widens it (packets may come out of order).
    /// A re-mute soon after an unmute widens the run over what was forwarded in between, so NACKs for those
    /// packets are held back too: never replaying muted media is worth more than those retransmissions.
    #[inline]
    pub fn note_muted(&mut self, seq: u16) {
        let Some((first, last)) = &mut self.muted_run else {
            self.muted_run = Some((seq, seq));
            return;
        };
        if seq.wrapping_sub(*last) < MUTED_RUN_MEMORY {
            *last = seq;
            if last.wrapping_sub(*first) > MUTED_RUN_MEMORY {
                *first = last.wrapping_sub(MUTED_RUN_MEMORY);
            }
        } else if seq.wrapping_sub(*first) <= last.wrapping_sub(*first) {
            // Already inside the run.
        } else if first.wrapping_sub(seq) < MUTED_RUN_MEMORY {
            // Late, just before the run: taken in unless the run would span too far.
            if last.wrapping_sub(seq) <= MUTED_RUN_MEMORY {
                *first = seq;
            }
        } else {
            // Far from a run that no longer matters: start over.
            self.muted_run = Some((seq, seq));
        }
    }

    /// Whether `seq` was dropped by force-mute, while that is recent enough for a receiver to still ask
    /// for it.
    pub fn was_muted(&self, seq: u16) -> bool {
        let Some((first, last)) = self.muted_run else {
            return false;
        };
        let highest = self.stats.extended_highest_seq() as u16;
        highest.wrapping_sub(last) < MUTED_RUN_MEMORY
            && seq.wrapping_sub(first) <= last.wrapping_sub(first)
    }
}

pub struct Router {
    pub id: RouterId,
    /// Transports in join order; forwarding walks this list.
    members: Vec<TransportId>,
    pub producers: HashMap<u32, Producer>,
    /// Every Source each transport signalled, in signalled order.
    sources: IdMap<Vec<SourceRecord>>,
    /// The SSRCs the bridge sends its own RTCP from, as signalled in Colibri2 (one per media kind).
    pub feedback: FeedbackSsrcs,
    pub next_report: Option<Instant>,
    /// Video Sources with layers, by a key their SSRCs' routes name.
    video: IdMap<VideoSource>,
    next_video: u64,
    /// Each transport's payload types: what its packets carry, and (RED) what it can receive.
    payloads: IdMap<PayloadMap>,
    /// What each receiver was allocated, by Source name.
    allocations: video::Allocations,
    /// An SSRC whose keyframe a receiver waits for, taken by the shard after each packet.
    keyframe_wanted: KeyframeWants,
    /// Each sender's header extension ids.
    extensions: IdMap<HeaderExtensionIds>,
    /// Each receiver's retransmission budget (made at its first NACK answered from a cache).
    rtx_budgets: IdMap<RtxBudget>,
}

impl Router {
    pub fn new(id: RouterId, feedback: FeedbackSsrcs) -> Self {
        Router {
            id,
            members: Vec::new(),
            producers: HashMap::new(),
            sources: IdMap::default(),
            feedback,
            next_report: None,
            video: IdMap::default(),
            next_video: 0,
            payloads: IdMap::default(),
            allocations: IdMap::default(),
            keyframe_wanted: KeyframeWants::default(),
            extensions: IdMap::default(),
            rtx_budgets: IdMap::default(),
        }
    }

    /// Transports in join order.
    pub fn members(&self) -> &[TransportId] {
        &self.members
    }

    /// The Sources `transport` signalled last, with their layers and RTX.
    pub fn sources_of(&self, transport: TransportId) -> &[SourceRecord] {
        self.sources.get(&transport).map_or(&[], Vec::as_slice)
    }

    /// What `ssrc` is within the Source its Producer's transport signalled: a layer, the RTX of one, or
    /// neither (`Other`). None when no Producer sends it.
    pub fn stream(&self, ssrc: u32) -> Option<Stream> {
        let p = self.producers.get(&ssrc)?;
        let sources = self.sources_of(p.transport);
        Some(
            sources
                .iter()
                .find_map(|s| s.stream(ssrc))
                .unwrap_or(Stream::Other),
        )
    }

    /// Writes the video SSRCs `transport` sends (its Producers') into `out`; returns how many fit.
    pub fn video_ssrcs_of(&self, transport: TransportId, out: &mut [u32]) -> usize {
        let mut n = 0;
        for (&ssrc, p) in &self.producers {
            if p.transport != transport || p.kind != MediaKind::Video {
                continue;
            }
            let Some(slot) = out.get_mut(n) else { break };
            *slot = ssrc;
            n += 1;
        }
        n
    }

    /// The stream `receiver`'s probe padding goes on: the RTX SSRC of a video Source of another member
    /// (receivers are told each Source's primary SSRC and its RTX), preferring one it is sent now, with
    /// the RTX payload type of the receiver's own payload types (else the Source owner's: a Jitsi
    /// conference uses one set). None: no Source has RTX, or nobody negotiated it.
    pub fn padding_stream(&mut self, receiver: TransportId) -> Option<PaddingStream> {
        let mut chosen: Option<(u64, u32, u8)> = None;
        for (&key, vs) in self.video.iter() {
            if vs.owner == receiver {
                continue;
            }
            let Some(ssrc) = vs.layers.first().and_then(|l| l.rtx) else {
                continue;
            };
            let map = self
                .payloads
                .get(&receiver)
                .or_else(|| self.payloads.get(&vs.owner));
            let Some(payload_type) = map.and_then(PayloadMap::video_rtx) else {
                continue;
            };
            let sent_now = vs
                .projection(receiver)
                .is_some_and(|p| p.current().is_some());
            if sent_now || chosen.is_none() {
                chosen = Some((key, ssrc, payload_type));
            }
            if sent_now {
                break;
            }
        }
        let (source, ssrc, payload_type) = chosen?;
        let out = self
            .video
            .get_mut(&source)?
            .rtx
            .entry(receiver)
            .or_insert_with(rtx::RtxOut::random);
        Some(PaddingStream {
            ssrc,
            payload_type,
            next_seq: out.next_seq,
            source,
        })
    }

    /// `count` padding packets went out on `stream` (the RTX numbering it started from moves on).
    pub fn padding_sent(&mut self, receiver: TransportId, stream: &PaddingStream, count: u16) {
        if let Some(out) = self
            .video
            .get_mut(&stream.source)
            .and_then(|vs| vs.rtx.get_mut(&receiver))
        {
            out.next_seq = out.next_seq.wrapping_add(count);
        }
    }

    /// The media path for one decrypted RTP packet from member `from`: RFC 3550 receive statistics, rate
    /// and audio level on its Producer, the sender's force-mute, then by the Producer's route: `forward`
    /// as it is to every other member, or through each receiver's Projection (RTX unwrapped first).
    /// Returns the number of egress packets queued, or why the packet goes nowhere (the caller counts
    /// that on the sender).
    // The shard's fields come separately so that it keeps the others borrowable.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn on_rtp(
        &mut self,
        now: Instant,
        from: TransportId,
        force_mute: ForceMute,
        rtp: &RtpView<'_>,
        transports: &mut IdMap<Transport>,
        egress: &mut impl Egress,
        total: &mut Counters,
    ) -> Result<usize, DropReason> {
        let route = match self.producers.get_mut(&rtp.ssrc()) {
            Some(p) if p.transport == from => {
                // A muted stream still counts as received: the bridge's RRs to its sender stay true.
                p.stats
                    .on_packet(now, rtp.sequence_number(), rtp.timestamp());
                p.packets += 1;
                p.rate.on_packet(now, rtp.as_bytes().len());
                if p.kind == MediaKind::Video {
                    p.nack
                        .get_or_insert_with(|| Box::new(NackTracker::new()))
                        .on_packet(rtp.sequence_number(), now);
                }
                if let Some(id) = self.extensions.get(&from).and_then(|e| e.audio_level) {
                    if let Some(&byte) = rtp.extension(id).and_then(<[u8]>::first) {
                        p.levels.add(byte);
                    }
                }
                if force_mute.mutes(p.kind) {
                    p.note_muted(rtp.sequence_number());
                    return Err(DropReason::ForceMuted);
                }
                p.route
            }
            _ => return Err(DropReason::UnknownSsrc),
        };
        match route {
            // RFC 2198 audio: as is to receivers with RED, the primary to the others.
            Route::Plain if self.codec_of(from, rtp.payload_type()) == Codec::Red => {
                self.forward_red(now, from, rtp, transports, egress, total)
            }
            Route::Plain => Ok(self.forward(
                now,
                from,
                Protect::Rtp,
                rtp.as_bytes(),
                transports,
                egress,
                total,
            )),
            Route::Layer { source, layer } => {
                let codec = self.codec_of(from, rtp.payload_type());
                Ok(self.forward_video(
                    now, from, source, layer, codec, rtp, false, transports, egress, total,
                ))
            }
            Route::Rtx { source, layer } => {
                let Codec::Rtx { apt } = self.codec_of(from, rtp.payload_type()) else {
                    return Err(DropReason::Filtered);
                };
                let Some(ssrc) = self
                    .video
                    .get(&source)
                    .and_then(|v| v.layers.get(usize::from(layer)))
                    .map(|l| l.ssrc)
                else {
                    return Err(DropReason::Filtered);
                };
                let mut buf = [0u8; MAX_DATAGRAM];
                let Some(n) = unwrap_rtx(rtp, ssrc, apt, &mut buf) else {
                    return Err(DropReason::Filtered);
                };
                let Ok(original) = RtpView::parse(&buf[..n]) else {
                    return Err(DropReason::RtpMalformed);
                };
                // Only a repair the bridge (or a receiver) asked for goes on; any other resend is a
                // duplicate of what every receiver has.
                let repair = self
                    .producers
                    .get_mut(&ssrc)
                    .and_then(|p| p.nack.as_mut())
                    .is_some_and(|t| t.take_repair(original.sequence_number(), now));
                if !repair {
                    return Err(DropReason::RtxUnneeded);
                }
                let codec = self.codec_of(from, apt);
                Ok(self.forward_video(
                    now, from, source, layer, codec, &original, true, transports, egress, total,
                ))
            }
        }
    }

    /// What a payload type of `from` carries (`Other` for one it did not signal).
    fn codec_of(&self, from: TransportId, pt: u8) -> Codec {
        self.payloads.get(&from).map_or(Codec::Other, |m| m.get(pt))
    }

    /// A video packet of layer `layer` of `source` (received, or unwrapped from RTX: `retransmission`):
    /// its codec fields, its sublayer's figures (not for retransmissions), then every receiver's
    /// Projection (`forward_layer`).
    // The shard's fields come separately so that it keeps the others borrowable.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn forward_video(
        &mut self,
        now: Instant,
        from: TransportId,
        source: u64,
        layer: u8,
        codec: Codec,
        rtp: &RtpView<'_>,
        retransmission: bool,
        transports: &mut IdMap<Transport>,
        egress: &mut impl Egress,
        total: &mut Counters,
    ) -> usize {
        let (mut meta, mut fields) = packet_meta(codec, layer, rtp);
        if codec == Codec::Av1 {
            self.av1_meta(from, rtp, &mut meta, &mut fields);
        } else if codec == Codec::Vp8 && meta.tl0picidx.is_none() {
            self.vp8_temporal_from_dd(from, rtp, &mut meta);
        }
        if let Some(p) = self.producers.get_mut(&rtp.ssrc()) {
            if !retransmission {
                p.sublayers.get_or_insert_with(Box::default).on_packet(
                    now,
                    rtp.as_bytes().len(),
                    &meta,
                    &fields,
                );
            }
            // Kept once for every receiver's NACKs; a retransmission fills its place.
            p.cache
                .get_or_insert_with(Box::default)
                .insert(now, rtp.as_bytes(), &meta, &fields);
        }
        self.forward_layer(
            now,
            from,
            source,
            &meta,
            &fields,
            rtp.as_bytes(),
            transports,
            egress,
            total,
        )
    }

    /// The header extension ids `transport` sends with.
    pub fn set_header_extensions(&mut self, transport: TransportId, ids: HeaderExtensionIds) {
        if ids == HeaderExtensionIds::default() {
            self.extensions.remove(&transport);
        } else {
            self.extensions.insert(transport, ids);
        }
    }

    /// An AV1 packet's switch point, frame start and end, layers and frame size from its dependency
    /// descriptor (AV1 RTP spec, Appendix A), read against its SSRC's template structure: a keyframe
    /// starts where a structure comes with start_of_frame; a frame is a temporal switching-up point
    /// where it is a switch (DTI `S`) for a decode target of its temporal layer. A sender without the
    /// extension keeps every packet a switch point; a packet without a descriptor that parses is neither.
    pub fn av1_meta(
        &mut self,
        from: TransportId,
        rtp: &RtpView<'_>,
        meta: &mut PacketMeta,
        fields: &mut Fields,
    ) {
        match self.dependency_descriptor(from, rtp) {
            None => {}
            Some(Some((d, switches_up))) => {
                meta.switch_point = d.starts_keyframe();
                meta.frame_start = d.start_of_frame;
                meta.end_of_frame = d.end_of_frame;
                meta.spatial = d.spatial_id;
                meta.temporal = d.temporal_id;
                meta.temporal_switch = switches_up;
                if let (Some(r), Some(slot)) = (
                    d.resolution,
                    fields.sizes.get_mut(usize::from(d.spatial_id)),
                ) {
                    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
                    *slot = Some((clamp(r.width), clamp(r.height)));
                }
            }
            Some(None) => {
                meta.switch_point = false;
                meta.frame_start = false;
            }
        }
    }

    /// A packet's dependency descriptor, read against its SSRC's template structure, and whether its
    /// frame is a temporal switching-up point (None: its sender negotiated no such extension, or the
    /// SSRC is no Producer; Some(None): this packet has none that parses).
    fn dependency_descriptor(
        &mut self,
        from: TransportId,
        rtp: &RtpView<'_>,
    ) -> Option<Option<(Av1Descriptor, bool)>> {
        let id = self
            .extensions
            .get(&from)
            .and_then(|e| e.dependency_descriptor)?;
        let p = self.producers.get_mut(&rtp.ssrc())?;
        let structure = p.av1.get_or_insert_with(|| Box::new(Av1Structure::new()));
        Some(
            rtp.extension(id)
                .and_then(|ext| Av1Descriptor::parse(ext, structure).ok())
                .map(|d| {
                    let up = switches_up(&d, structure);
                    (d, up)
                }),
        )
    }

    /// A VP8 packet's temporal layer from its dependency descriptor: libwebrtc, once the extension is
    /// negotiated, sends VP8 temporal layers (L1T3) with a bare payload descriptor (no TID, no picture
    /// id) and tells the layers only there. The rest of what the bridge needs (keyframes, frame starts,
    /// sizes) stays the payload descriptor's; a descriptor that does not parse (its structure not yet
    /// seen) leaves the packet in temporal layer 0.
    fn vp8_temporal_from_dd(
        &mut self,
        from: TransportId,
        rtp: &RtpView<'_>,
        meta: &mut PacketMeta,
    ) {
        if let Some(Some((d, switches_up))) = self.dependency_descriptor(from, rtp) {
            meta.temporal = d.temporal_id;
            meta.temporal_switch = switches_up;
        }
    }

    /// The bridge's own NACKs due now: (sender transport, SSRC, sequence numbers) for each video stream
    /// with packets missing (`cc::nack`).
    pub fn due_nacks(
        &mut self,
        now: Instant,
        rtt_of: impl Fn(TransportId) -> Option<Duration>,
    ) -> Vec<(TransportId, u32, Vec<u16>)> {
        let mut out = Vec::new();
        for (&ssrc, p) in self.producers.iter_mut() {
            let Some(t) = p.nack.as_mut().filter(|t| t.missing() > 0) else {
                continue;
            };
            let mut seqs = Vec::new();
            t.due(now, rtt_of(p.transport), &mut seqs);
            if !seqs.is_empty() {
                out.push((p.transport, ssrc, seqs));
            }
        }
        out
    }

    /// Every audio SSRC's levels since the last call, and resets them; empty when no level came.
    pub fn take_levels(&mut self) -> Vec<AudioLevel> {
        let mut out = Vec::new();
        for (&ssrc, p) in self.producers.iter_mut() {
            let m = std::mem::take(&mut p.levels);
            if let Some(mean) = m.loudness.checked_div(m.packets) {
                out.push(AudioLevel {
                    transport: p.transport,
                    ssrc,
                    loudness: mean.min(127) as u8,
                    voice: m.voice,
                    packets: m.packets,
                });
            }
        }
        out
    }

    /// The payload types `transport` sends and receives with (video, and audio for RED); replaces what
    /// it had.
    pub fn set_payload_types(&mut self, transport: TransportId, types: &[PayloadType]) {
        self.payloads.insert(transport, PayloadMap::new(types));
    }

    /// Forwards one plain packet from member `from` to every other member, each receiver in turn: the
    /// filter (media ready), a copy into its egress slot as it came in, protect with its key, count.
    /// Returns the number queued.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        now: Instant,
        from: TransportId,
        kind: Protect,
        packet: &[u8],
        transports: &mut IdMap<Transport>,
        egress: &mut impl Egress,
        total: &mut Counters,
    ) -> usize {
        let mut queued = 0;
        let mut tcc = TccOffset::new(packet);
        for &m in &self.members {
            if m == from {
                continue;
            }
            let Some(r) = transports.get_mut(&m) else {
                continue;
            };
            let sent = match kind {
                Protect::Rtp => r.send_rtp(now, packet, &mut tcc, egress, total, |_| {}),
                Protect::Rtcp => r.send_protected(kind, packet, egress, total),
            };
            if sent {
                queued += 1;
            }
        }
        queued
    }

    /// The packet sender SSRC for the bridge's RTCP about `media_ssrc` (PLI, FIR, NACK): the feedback
    /// SSRC of that stream's kind; video for an SSRC no Producer sends.
    pub fn feedback_ssrc_for(&self, media_ssrc: u32) -> u32 {
        let kind = self
            .producers
            .get(&media_ssrc)
            .map_or(MediaKind::Video, |p| p.kind);
        self.feedback.for_kind(kind)
    }

    /// Writes the bridge's report on the streams of `kind` that `member` sends into `out`: an RR from
    /// that kind's feedback SSRC (RFC 3550 6.4.2) and its SDES CNAME (RFC 3550 6.1). One compound per
    /// reporting SSRC, as browsers send them (aiortc 1.16 also misreads SDES chunks after the first).
    /// None while it has sent nothing of that kind, or when `out` is too small.
    pub fn write_receiver_report(
        &mut self,
        now: Instant,
        member: TransportId,
        kind: MediaKind,
        out: &mut [u8],
    ) -> Option<usize> {
        let mut blocks = [ReportBlock::default(); MAX_BLOCKS];
        let mut n = 0;
        for p in self.producers.values_mut() {
            if p.transport == member && p.kind == kind && p.packets > 0 && n < MAX_BLOCKS {
                blocks[n] = p.stats.report_block(now);
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        let sender = self.feedback.for_kind(kind);
        let rr = write_receiver_report(out, sender, &blocks[..n]).ok()?;
        let sdes = write_sdes_cname(out.get_mut(rr..)?, sender, BRIDGE_CNAME).ok()?;
        Some(rr + sdes)
    }

    pub fn add_member(&mut self, transport: TransportId) {
        if !self.members.contains(&transport) {
            self.members.push(transport);
        }
    }

    /// Removes a transport, its Sources and every Producer it owned.
    pub fn remove_member(&mut self, transport: TransportId) {
        self.members.retain(|t| *t != transport);
        self.producers.retain(|_, p| p.transport != transport);
        self.sources.remove(&transport);
        self.payloads.remove(&transport);
        self.extensions.remove(&transport);
        self.video.retain(|_, v| v.owner != transport);
        self.forget_receiver(transport);
    }

    /// Replaces the Sources of one transport (Colibri2 sources replace, never merge): a record of each
    /// Source with its layers, and one Producer per SSRC. Receive state of an SSRC that stays is kept.
    /// SSRCs owned by another transport are refused (returned).
    pub fn set_sources(&mut self, transport: TransportId, sources: &[Source]) -> Vec<u32> {
        let records: Vec<SourceRecord> = sources
            .iter()
            .map(|s| SourceRecord {
                transport,
                kind: s.kind,
                name: s.name.clone(),
                layers: s.layers(),
            })
            .collect();
        let mut refused = Vec::new();
        self.producers.retain(|ssrc, p| {
            p.transport != transport || sources.iter().any(|s| s.ssrcs.contains(ssrc))
        });
        for s in sources {
            for &ssrc in &s.ssrcs {
                match self.producers.get(&ssrc) {
                    Some(p) if p.transport != transport => refused.push(ssrc),
                    Some(_) => {}
                    None => {
                        self.producers.insert(
                            ssrc,
                            Producer {
                                transport,
                                kind: s.kind,
                                stats: ReceiverStats::new(ssrc, s.kind.clock_rate()),
                                last_keyframe_request: None,
                                packets: 0,
                                muted_run: None,
                                route: Route::Plain,
                                rate: RateMeter::default(),
                                sublayers: None,
                                nack: None,
                                cache: None,
                                levels: LevelMeter::default(),
                                av1: None,
                            },
                        );
                    }
                }
            }
        }
        self.sources.insert(transport, records);
        self.refresh_video(transport);
        refused
    }

    /// Video SSRCs whose sender should be asked for a keyframe now (rate-limited), e.g. when a receiver joins.
    pub fn keyframe_requests(
        &mut self,
        now: Instant,
        except: TransportId,
        ready: impl Fn(TransportId) -> bool,
    ) -> Vec<(TransportId, u32)> {
        let mut out = Vec::new();
        for (ssrc, p) in self.producers.iter_mut() {
            if p.kind != MediaKind::Video || p.transport == except || !ready(p.transport) {
                continue;
            }
            if Self::may_request_keyframe(p, now) {
                out.push((p.transport, *ssrc));
            }
        }
        out
    }

    /// Rate limit for keyframe requests to one Producer; records the request when allowed.
    pub fn may_request_keyframe(p: &mut Producer, now: Instant) -> bool {
        match p.last_keyframe_request {
            Some(t) if now.saturating_duration_since(t) < KEYFRAME_REQUEST_MIN_INTERVAL => false,
            _ => {
                p.last_keyframe_request = Some(now);
                true
            }
        }
    }
}

/// A frame is a temporal switching-up point where it is a switch (DTI `S`) for a decode target of its
/// own temporal layer.
fn switches_up(d: &Av1Descriptor, structure: &Av1Structure) -> bool {
    (0..usize::from(d.decode_targets())).any(|dt| {
        d.dti(dt) == Dti::Switch
            && structure
                .decode_target_layer(dt)
                .is_some_and(|(_, t)| t == d.temporal_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEEDBACK: FeedbackSsrcs = FeedbackSsrcs {
        audio: 0xA0,
        video: 0xB0,
    };

    fn spec(ssrc: u32, kind: MediaKind) -> Source {
        Source::single(ssrc, kind)
    }

    #[test]
    fn the_router_knows_each_sources_layers_and_rtx_after_set_sources() {
        let video = crate::domain::chrome_simulcast("a-v0");
        let mut audio = Source::single(5, MediaKind::Audio);
        audio.name = "a-a0".into();
        let mut r = Router::new(1, FEEDBACK);
        r.add_member(10);
        assert!(r.set_sources(10, &[audio, video.clone()]).is_empty());

        let layer = |ssrc, rtx| Layer { ssrc, rtx };
        let names: Vec<&str> = r.sources_of(10).iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a-a0", "a-v0"]);
        assert_eq!(r.sources_of(10)[0].layers, [layer(5, None)]);
        assert_eq!(
            r.sources_of(10)[1].layers,
            [layer(1, Some(11)), layer(2, Some(12)), layer(3, Some(13))]
        );
        assert_eq!(
            r.stream(3),
            Some(Stream::Layer {
                index: 2,
                rtx: Some(13)
            })
        );
        assert_eq!(r.stream(12), Some(Stream::Rtx { primary: 2 }));
        assert_eq!(
            r.stream(5),
            Some(Stream::Layer {
                index: 0,
                rtx: None
            })
        );

        // A new set replaces the layers; a Producer that stays keeps its receive state and learns its new
        // place (the middle layer alone is now layer 0).
        r.producers.get_mut(&2).expect("producer").packets = 7;
        let mut fewer = video;
        fewer.ssrcs = vec![2, 12];
        fewer.groups = vec![crate::domain::SsrcGroup {
            semantics: crate::domain::GroupSemantics::Fid,
            ssrcs: vec![2, 12],
        }];
        r.set_sources(10, &[fewer]);
        assert_eq!(r.sources_of(10)[0].layers, [layer(2, Some(12))]);
        assert_eq!(r.producers[&2].packets, 7);
        assert_eq!(
            r.stream(2),
            Some(Stream::Layer {
                index: 0,
                rtx: Some(12)
            })
        );
        assert!(!r.producers.contains_key(&1) && !r.producers.contains_key(&5));
        r.remove_member(10);
        assert!(r.sources_of(10).is_empty() && r.producers.is_empty());
    }

    /// An AV1 packet with its dependency descriptor in an RFC 8285 two-byte extension (id 11).
    fn av1_packet(ssrc: u32, seq: u16, dd: Option<&[u8]>) -> Vec<u8> {
        let mut p = vec![0x80, 41, (seq >> 8) as u8, seq as u8, 0, 0, 0, 0];
        p.extend_from_slice(&ssrc.to_be_bytes());
        if let Some(dd) = dd {
            p[0] |= 0x10;
            let mut ext = vec![11u8, dd.len() as u8];
            ext.extend_from_slice(dd);
            while ext.len() % 4 != 0 {
                ext.push(0);
            }
            p.extend_from_slice(&[0x10, 0x00]);
            p.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
            p.extend_from_slice(&ext);
        }
        p.extend_from_slice(&[0x5a; 20]);
        p
    }

    #[test]
    fn rate_meters_give_bits_from_the_first_tenth_of_a_window_and_frames_from_the_first_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!((m.bps(t0), m.seen()), (0, false));
        // 30 frames a second of 1000 bytes each: 240 kbit/s.
        let at = |i: u64| t0 + Duration::from_micros(i * 33_333);
        m.on_frame_packet(at(0), 1000, true);
        assert_eq!(m.bps(at(1)), 0, "nothing to say before a tenth of a window");
        for i in 1..=3 {
            m.on_frame_packet(at(i), 1000, true);
        }
        // The open first window: 4000 bytes and 3 frames over 100 ms.
        assert!(
            (310_000..=330_000).contains(&m.bps(at(3))),
            "{}",
            m.bps(at(3))
        );
        // Frames per second only once a whole window was seen: read between frames, 3 frames over part
        // of one read low, and the allocation would take the layer for a slower one.
        assert_eq!(m.fps(at(3)), 0.0);
        assert!(!m.settled());
        for i in 4..=60 {
            m.on_frame_packet(at(i), 1000, true);
        }
        assert!(
            (235_000..=245_000).contains(&m.bps(at(60))),
            "{}",
            m.bps(at(60))
        );
        assert!((29.5..=30.5).contains(&m.fps(at(60))), "{}", m.fps(at(60)));
        assert!(m.settled());
        // Silence for two windows: nothing.
        assert_eq!(m.bps(at(60) + 2 * RATE_WINDOW), 0);
        assert_eq!(m.fps(at(60) + 2 * RATE_WINDOW), 0.0);
    }

    #[test]
    fn av1_switch_points_come_from_the_dependency_descriptor() {
        use crate::codec::av1::tests::{l1t3_keyframe, mandatory};
        use crate::domain::{Codec, PayloadType};
        let mut r = Router::new(1, FEEDBACK);
        r.set_sources(10, &[spec(0x41, MediaKind::Video)]);
        r.set_payload_types(
            10,
            &[PayloadType {
                pt: 41,
                codec: Codec::Av1,
            }],
        );
        let meta_of = |r: &mut Router, pkt: &[u8]| {
            let v = RtpView::parse(pkt).expect("rtp");
            let (mut m, mut f) = packet_meta(Codec::Av1, 0, &v);
            r.av1_meta(10, &v, &mut m, &mut f);
            (m.switch_point, m.frame_start)
        };
        let layers_of = |r: &mut Router, pkt: &[u8]| {
            let v = RtpView::parse(pkt).expect("rtp");
            let (mut m, mut f) = packet_meta(Codec::Av1, 0, &v);
            r.av1_meta(10, &v, &mut m, &mut f);
            (m.spatial, m.temporal)
        };
        let key = av1_packet(0x41, 1, Some(&l1t3_keyframe()));
        // Template 3 of L1T3 at offset 1 (S0T1), the first packet of frame 101.
        let delta = av1_packet(0x41, 2, Some(&mandatory(true, true, 3, 101)));
        let bare = av1_packet(0x41, 3, None);
        // Without the extension's id the bridge cannot tell: every packet is a place to switch.
        assert_eq!(meta_of(&mut r, &delta), (true, true));
        let dd = HeaderExtensionIds {
            dependency_descriptor: Some(11),
            ..HeaderExtensionIds::default()
        };
        r.set_header_extensions(10, dd);
        // Before any keyframe the template is unknown: no switch point.
        assert_eq!(meta_of(&mut r, &delta), (false, false));
        assert_eq!(meta_of(&mut r, &key), (true, true));
        assert_eq!(meta_of(&mut r, &delta), (false, true));
        // The layers come from the template: S0T1.
        assert_eq!(layers_of(&mut r, &delta), (0, 1));
        assert_eq!(meta_of(&mut r, &bare), (false, false));
        assert!(r.producers[&0x41].av1.is_some());
        r.set_header_extensions(10, HeaderExtensionIds::default());
        assert_eq!(meta_of(&mut r, &bare), (true, true));
    }

    #[test]
    fn vp8_temporal_layers_come_from_the_dependency_descriptor_when_its_payload_has_none() {
        use crate::codec::av1::tests::{l1t3_keyframe, mandatory};
        let mut r = Router::new(1, FEEDBACK);
        r.set_sources(10, &[spec(0x41, MediaKind::Video)]);
        r.set_header_extensions(
            10,
            HeaderExtensionIds {
                dependency_descriptor: Some(11),
                ..HeaderExtensionIds::default()
            },
        );
        // A bare VP8 payload descriptor (S=1, no X: no TID), as libwebrtc sends L1T3 with the extension.
        let vp8 = |seq: u16, dd: &[u8]| {
            let mut p = av1_packet(0x41, seq, Some(dd));
            let n = p.len();
            p[n - 20] = 0x10;
            p
        };
        let temporal = |r: &mut Router, pkt: &[u8]| {
            let v = RtpView::parse(pkt).expect("rtp");
            let (mut m, _) = packet_meta(Codec::Vp8, 0, &v);
            assert_eq!((m.tl0picidx, m.temporal), (None, 0));
            r.vp8_temporal_from_dd(10, &v, &mut m);
            (m.temporal, m.frame_start)
        };
        // Template 3 of L1T3 (S0T1): before its structure came, layer 0; then layer 1, the payload
        // descriptor's frame start kept.
        let delta = vp8(2, &mandatory(true, true, 3, 101));
        assert_eq!(temporal(&mut r, &delta), (0, true));
        assert_eq!(temporal(&mut r, &vp8(1, &l1t3_keyframe())), (0, true));
        assert_eq!(temporal(&mut r, &delta), (1, true));
    }

    #[test]
    fn sources_replace_and_are_owned_by_one_transport() {
        let mut r = Router::new(1, FEEDBACK);
        r.add_member(10);
        r.add_member(11);
        assert!(r
            .set_sources(10, &[spec(1, MediaKind::Audio), spec(2, MediaKind::Video)])
            .is_empty());
        assert_eq!(
            r.set_sources(11, &[spec(2, MediaKind::Video), spec(3, MediaKind::Video)]),
            vec![2]
        );
        assert_eq!(r.producers[&2].transport, 10);
        r.set_sources(10, &[spec(2, MediaKind::Video)]);
        assert!(!r.producers.contains_key(&1));
        assert!(r.producers.contains_key(&2));
        r.remove_member(10);
        assert!(!r.producers.contains_key(&2));
        assert_eq!(r.members(), &[11]);
    }

    #[test]
    fn a_muted_run_covers_what_was_dropped_and_is_forgotten_far_behind() {
        let t0 = Instant::now();
        let mut r = Router::new(1, FEEDBACK);
        r.set_sources(10, &[spec(2, MediaKind::Video)]);
        let p = r.producers.get_mut(&2).expect("producer");
        // Wrapping run 65530..=4, one packet out of order.
        for seq in [65531u16, 65530, 65532, 65535, 0, 4] {
            p.stats.on_packet(t0, seq, 0);
            p.note_muted(seq);
        }
        assert_eq!(p.muted_run, Some((65530, 4)));
        assert!(p.was_muted(65530) && p.was_muted(2) && p.was_muted(4));
        assert!(!p.was_muted(65529) && !p.was_muted(5));
        // Forwarded packets move the stream on (in steps RFC 3550 A.1 takes as in order); far enough,
        // the run no longer matters.
        for seq in (1000..=16000).step_by(1000) {
            p.stats.on_packet(t0, seq, 0);
        }
        assert!(p.was_muted(3), "16000 is 15996 past the run");
        p.stats.on_packet(t0, 17000, 0);
        assert!(!p.was_muted(3), "17000 is 16996 past the run");
        // Muted again far from the old run: a new one.
        p.stats.on_packet(t0, 17001, 0);
        p.note_muted(17001);
        assert_eq!(p.muted_run, Some((17001, 17001)));
        // Unmuted for a while, then muted again: the run widens over what was forwarded in between.
        for seq in [17100u16, 17101] {
            p.stats.on_packet(t0, seq, 0);
            p.note_muted(seq);
        }
        assert_eq!(p.muted_run, Some((17001, 17101)));
        assert!(p.was_muted(17050));
        // The run never spans more than MUTED_RUN_MEMORY.
        for seq in (18000..=40000).step_by(1000) {
            p.stats.on_packet(t0, seq, 0);
            p.note_muted(seq);
        }
        assert_eq!(p.muted_run, Some((40000 - MUTED_RUN_MEMORY, 40000)));
        // A late packet from before a run already at its widest changes nothing.
        p.note_muted(40000 - MUTED_RUN_MEMORY - 1);
        assert_eq!(p.muted_run, Some((40000 - MUTED_RUN_MEMORY, 40000)));
    }

    #[test]
    fn receiver_reports_come_from_the_feedback_ssrc_of_their_kind() {
        use crate::rtcp::{parse_compound, RtcpPacket};
        let t0 = Instant::now();
        let mut r = Router::new(1, FEEDBACK);
        r.set_sources(
            10,
            &[
                spec(1, MediaKind::Audio),
                spec(2, MediaKind::Video),
                spec(3, MediaKind::Video),
            ],
        );
        r.set_sources(11, &[spec(4, MediaKind::Audio)]);
        for ssrc in [1, 2, 4] {
            let p = r.producers.get_mut(&ssrc).expect("producer");
            p.stats.on_packet(t0, 100, 0);
            p.packets += 1;
        }
        let mut out = [0u8; 1024];
        let mut report = |r: &mut Router, member, kind| {
            let n = r.write_receiver_report(t0, member, kind, &mut out)?;
            let mut got = Vec::new();
            for p in parse_compound(&out[..n]) {
                match p.expect("valid") {
                    RtcpPacket::ReceiverReport(rr) => {
                        got.push((rr.ssrc, rr.report_blocks().map(|b| b.ssrc).collect()))
                    }
                    RtcpPacket::Sdes(sdes) => {
                        got.extend(sdes.chunks().map(|c| (c.ssrc, Vec::new())))
                    }
                    other => panic!("{other:?}"),
                }
            }
            Some(got)
        };
        assert_eq!(
            report(&mut r, 10, MediaKind::Audio),
            Some(vec![(0xA0, vec![1]), (0xA0, vec![])])
        );
        // SSRC 3 has sent nothing yet: no block for it.
        assert_eq!(
            report(&mut r, 10, MediaKind::Video),
            Some(vec![(0xB0, vec![2]), (0xB0, vec![])])
        );
        assert_eq!(report(&mut r, 11, MediaKind::Video), None);
        assert_eq!(r.feedback_ssrc_for(4), 0xA0);
        assert_eq!(r.feedback_ssrc_for(3), 0xB0);
    }

    #[test]
    fn keyframe_requests_are_rate_limited() {
        let mut r = Router::new(1, FEEDBACK);
        r.set_sources(10, &[spec(1, MediaKind::Audio), spec(2, MediaKind::Video)]);
        let t0 = Instant::now();
        assert_eq!(r.keyframe_requests(t0, 11, |_| true), vec![(10, 2)]);
        assert!(r
            .keyframe_requests(t0 + Duration::from_millis(100), 12, |_| true)
            .is_empty());
        assert_eq!(
            r.keyframe_requests(t0 + Duration::from_millis(400), 12, |_| true),
            vec![(10, 2)]
        );
        assert!(r
            .keyframe_requests(t0 + Duration::from_secs(5), 10, |_| true)
            .is_empty());
    }
}
