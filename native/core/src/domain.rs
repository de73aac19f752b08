//! The nouns the seam, the shard and the protocol machines share: ids, media kinds, sources, force-mute,
//! transport states and the bridge's feedback SSRCs. Plain values, no behaviour beyond naming.

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
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "audio" => Some(MediaKind::Audio),
            "video" => Some(MediaKind::Video),
            _ => None,
        }
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

/// One SSRC an endpoint sends (a Producer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceSpec {
    pub ssrc: u32,
    pub kind: MediaKind,
    pub clock_rate: u32,
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
}
