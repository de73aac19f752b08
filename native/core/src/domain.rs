//! The nouns the seam, the shard and the protocol machines share: ids, media kinds, sources, force-mute,
//! transport states and the bridge's feedback SSRCs. Plain values, no behaviour beyond naming.

use std::net::SocketAddr;

use crate::ice::CandidateKind;

pub type RouterId = u64;
pub type TransportId = u64;

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
