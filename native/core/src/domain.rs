//! The nouns the seam, the shard and the protocol machines share: ids, media kinds, sources with their
//! SIM/FID groups and layers, force-mute, transport states and the bridge's feedback SSRCs. Plain values.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

use crate::ice::CandidateKind;

pub type RouterId = u64;
pub type TransportId = u64;

/// A map keyed by Router or Transport id. The fan-out looks up every receiver per packet, so the ids
/// get a one-multiply hash instead of SipHash; they come from the control plane, never from the network,
/// so there is no flooding to defend against.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of one u64: the multiply spreads small sequential ids over the high bits, and the
/// odd constant keeps distinct ids distinct.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    /// Only reached if a non-u64 key is ever used; still a fine hash, just slower.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    /// The RTP clock rate of this kind's streams: 48 kHz for Opus (RFC 7587 4.1), 90 kHz for video
    /// (RFC 7741, RFC 6184 and every video payload format WebRTC uses).
    pub fn clock_rate(self) -> u32 {
        match self {
            MediaKind::Audio => 48_000,
            MediaKind::Video => 90_000,
        }
    }
}

/// What a payload type carries, as far as forwarding cares: the video codecs whose payload the bridge
/// reads for keyframes and layers, RTX (RFC 4588) with the payload type it retransmits, RFC 2198
/// redundant audio (RED), any other audio codec (Opus, telephone-event: forwarded unread), or anything
/// else (also what a payload type nobody signalled reads as).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Codec {
    Vp8,
    Vp9,
    H264,
    Av1,
    Rtx {
        apt: u8,
    },
    /// RFC 2198 redundant audio: blocks of other audio payload types, the primary last.
    Red,
    /// An audio codec the bridge forwards without reading it: what a RED packet's primary must be for a
    /// receiver without RED to get it stripped.
    Audio,
    #[default]
    Other,
}

/// One signalled payload type (0..=127).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadType {
    pub pt: u8,
    pub codec: Codec,
}

/// A transport's payload types (one payload type space for audio and video, as BUNDLE has it), looked
/// up per packet: what a sender's packets carry, and what a receiver can take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadMap {
    codecs: [Codec; 128],
    /// Whether any audio payload type (RED or another audio codec) was signalled: without one, what the
    /// transport takes of audio is unknown.
    audio: bool,
}

impl Default for PayloadMap {
    fn default() -> Self {
        PayloadMap {
            codecs: [Codec::Other; 128],
            audio: false,
        }
    }
}

impl PayloadMap {
    /// The map of these payload types; one outside 0..=127 is ignored (it cannot be on the wire).
    pub fn new(types: &[PayloadType]) -> Self {
        let mut map = PayloadMap::default();
        for t in types {
            if let Some(slot) = map.codecs.get_mut(usize::from(t.pt)) {
                *slot = t.codec;
                map.audio |= matches!(t.codec, Codec::Red | Codec::Audio);
            }
        }
        map
    }

    #[inline]
    pub fn get(&self, pt: u8) -> Codec {
        self.codecs
            .get(usize::from(pt))
            .copied()
            .unwrap_or_default()
    }

    /// Whether any audio payload type was signalled.
    #[inline]
    pub fn has_audio(&self) -> bool {
        self.audio
    }

    /// The lowest payload type that is RTX of a video codec the map knows.
    pub fn video_rtx(&self) -> Option<u8> {
        (0u8..128).find(|&pt| match self.get(pt) {
            Codec::Rtx { apt } => !matches!(self.get(apt), Codec::Rtx { .. } | Codec::Other),
            _ => false,
        })
    }

    /// The RTX payload type (RFC 4588) that retransmits `apt`, the lowest if several do.
    pub fn rtx_for(&self, apt: u8) -> Option<u8> {
        self.codecs
            .iter()
            .position(|c| *c == Codec::Rtx { apt })
            .and_then(|pt| u8::try_from(pt).ok())
    }
}

/// The kinds of media a transport may not send on (Colibri2 `force-mute`): its RTP of a muted kind reaches
/// nobody, while everything it receives, and its own feedback about others' streams, keeps flowing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForceMute {
    pub audio: bool,
    pub video: bool,
}

impl ForceMute {
    #[inline]
    pub fn mutes(self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
        }
    }
}

/// The SSRCs the bridge sends its own RTCP from in one conference: the Colibri2 `jvb-a0` and `jvb-v0`
/// sources. The control plane signals them and hands them to the Router; the Router never invents one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedbackSsrcs {
    pub audio: u32,
    pub video: u32,
}

impl FeedbackSsrcs {
    /// The packet sender SSRC for RTCP about a stream of `kind` (RR blocks, PLI, FIR, NACK).
    #[inline]
    pub fn for_kind(self, kind: MediaKind) -> u32 {
        match kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
        }
    }
}

/// The `ssrc-group` semantics the packet path uses (RFC 5576 4.2): simulcast layers, and the pairing of a
/// stream with its retransmission stream (RFC 4588 8.1, "FID").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupSemantics {
    Sim,
    Fid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsrcGroup {
    pub semantics: GroupSemantics,
    pub ssrcs: Vec<u32>,
}

/// A signalled Source as it crossed the seam: its kind, every SSRC it sends, its SIM and FID groups
/// unchanged, and its name (`abcd1234-v0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub kind: MediaKind,
    pub ssrcs: Vec<u32>,
    pub groups: Vec<SsrcGroup>,
    pub name: String,
}

/// Where a transport's RTP carries the header extensions the bridge reads (ids 1..=255 from its
/// extmap; None: it does not send it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HeaderExtensionIds {
    /// RFC 6464 audio levels (`urn:ietf:params:rtp-hdrext:ssrc-audio-level`).
    pub audio_level: Option<u8>,
    /// The AV1 dependency descriptor.
    pub dependency_descriptor: Option<u8>,
    /// Transport-wide sequence numbers (draft-holmer-rmcat-transport-wide-cc-extensions-01).
    pub transport_cc: Option<u8>,
    /// abs-send-time, given only for a peer that negotiated REMB (goog-remb) and not transport-cc:
    /// the bridge estimates what it receives from it and sends it REMB.
    pub abs_send_time: Option<u8>,
}

/// What a receiver is allocated of one video Source: `spatial`, the simulcast layer (SIM order) or, for a
/// Source of one SSRC, its SVC spatial layer; `temporal`, the highest temporal layer (255: all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VideoTarget {
    pub spatial: u8,
    pub temporal: u8,
}

/// One encoding of a Source: the SSRC it is sent on and the SSRC of its retransmissions, if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    pub ssrc: u32,
    pub rtx: Option<u32>,
}

impl Source {
    /// A Source of one SSRC and no groups (audio, or video without simulcast or RTX).
    pub fn single(ssrc: u32, kind: MediaKind) -> Self {
        Source {
            kind,
            ssrcs: vec![ssrc],
            groups: Vec::new(),
            name: String::new(),
        }
    }

    /// The Source's layers in the order of its SIM group (as signalled: lowest first from WebRTC
    /// clients); without one, its primary SSRCs (each SSRC that is not the RTX of another, in
    /// signalled order: one, for a Source without simulcast). Each layer carries the RTX SSRC its FID group pairs it with (the group lists
    /// the primary first, RFC 4588 8.1). Group members the Source does not list are ignored, as are
    /// FID groups of fewer than two SSRCs.
    pub fn layers(&self) -> Vec<Layer> {
        let listed = |ssrc: &u32| self.ssrcs.contains(ssrc);
        let fid: Vec<(u32, u32)> = self
            .groups
            .iter()
            .filter(|g| g.semantics == GroupSemantics::Fid)
            .filter_map(|g| match g.ssrcs[..] {
                [primary, rtx, ..] if listed(&primary) && listed(&rtx) => Some((primary, rtx)),
                _ => None,
            })
            .collect();
        let rtx_of = |ssrc: u32| fid.iter().find(|(p, _)| *p == ssrc).map(|(_, r)| *r);
        let sim = self
            .groups
            .iter()
            .find(|g| g.semantics == GroupSemantics::Sim);
        let primaries: Vec<u32> = match sim {
            Some(g) => g.ssrcs.iter().copied().filter(listed).collect(),
            None => self
                .ssrcs
                .iter()
                .copied()
                .filter(|s| !fid.iter().any(|(_, r)| r == s))
                .collect(),
        };
        let mut layers: Vec<Layer> = Vec::with_capacity(primaries.len());
        for ssrc in primaries {
            if !layers.iter().any(|l| l.ssrc == ssrc) {
                layers.push(Layer {
                    ssrc,
                    rtx: rtx_of(ssrc),
                });
            }
        }
        layers
    }
}

#[derive(Clone, Debug)]
pub struct RemoteCandidate {
    pub addr: SocketAddr,
    pub priority: u32,
    pub kind: CandidateKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportState {
    Checking,
    /// ICE, DTLS and SRTP are up: media flows.
    Connected,
    Failed,
    Closed,
}

impl TransportState {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportState::Checking => "checking",
            TransportState::Connected => "connected",
            TransportState::Failed => "failed",
            TransportState::Closed => "closed",
        }
    }
}

/// Chrome's simulcast with RTX, as Jitsi clients signal it: SIM 1 2 3, FID 1 11, FID 2 12, FID 3 13
/// (SSRCs listed pairwise). A fixture for the tests of everything that reads a Source's layers.
#[cfg(test)]
pub(crate) fn chrome_simulcast(name: &str) -> Source {
    let group = |semantics, ssrcs: &[u32]| SsrcGroup {
        semantics,
        ssrcs: ssrcs.to_vec(),
    };
    Source {
        kind: MediaKind::Video,
        ssrcs: vec![1, 11, 2, 12, 3, 13],
        groups: vec![
            group(GroupSemantics::Sim, &[1, 2, 3]),
            group(GroupSemantics::Fid, &[1, 11]),
            group(GroupSemantics::Fid, &[2, 12]),
            group(GroupSemantics::Fid, &[3, 13]),
        ],
        name: name.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn sequential_ids_hash_apart_in_both_the_low_and_the_high_bits() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (1..=4096u64).map(|id| build.hash_one(id)).collect();
        // hashbrown picks the bucket from the low bits and the control byte from the top 7.
        let low: HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(low.len(), 4096, "low 12 bits collide");
        assert_eq!(top.len(), 128, "top 7 bits do not cover every control byte");

        let mut m: IdMap<u64> = IdMap::default();
        m.extend((1..=4096u64).map(|id| (id, id * 2)));
        assert!((1..=4096u64).all(|id| m.get(&id) == Some(&(id * 2))));
    }

    fn group(semantics: GroupSemantics, ssrcs: &[u32]) -> SsrcGroup {
        SsrcGroup {
            semantics,
            ssrcs: ssrcs.to_vec(),
        }
    }

    fn layer(ssrc: u32, rtx: Option<u32>) -> Layer {
        Layer { ssrc, rtx }
    }

    #[test]
    fn rfc5576_simulcast_with_rfc4588_rtx_gives_layers_in_sim_order() {
        let source = chrome_simulcast("abcd1234-v0");
        assert_eq!(
            source.layers(),
            vec![layer(1, Some(11)), layer(2, Some(12)), layer(3, Some(13))]
        );
    }

    #[test]
    fn without_simulcast_the_one_primary_is_the_layer() {
        let rtx = Source {
            kind: MediaKind::Video,
            ssrcs: vec![7, 6],
            groups: vec![group(GroupSemantics::Fid, &[6, 7])],
            name: String::new(),
        };
        assert_eq!(rtx.layers(), vec![layer(6, Some(7))]);
        assert_eq!(
            Source::single(5, MediaKind::Audio).layers(),
            vec![layer(5, None)]
        );
        // Simulcast without RTX.
        let sim = Source {
            kind: MediaKind::Video,
            ssrcs: vec![3, 2, 1],
            groups: vec![group(GroupSemantics::Sim, &[1, 2, 3])],
            name: String::new(),
        };
        assert_eq!(
            sim.layers(),
            vec![layer(1, None), layer(2, None), layer(3, None)]
        );
    }

    #[test]
    fn groups_naming_unlisted_ssrcs_or_too_short_are_ignored() {
        let source = Source {
            kind: MediaKind::Video,
            ssrcs: vec![1, 11, 2],
            groups: vec![
                group(GroupSemantics::Sim, &[1, 2, 99]),
                group(GroupSemantics::Fid, &[1, 11]),
                group(GroupSemantics::Fid, &[2, 98]),
                group(GroupSemantics::Fid, &[2]),
            ],
            name: String::new(),
        };
        assert_eq!(source.layers(), vec![layer(1, Some(11)), layer(2, None)]);
    }
}
