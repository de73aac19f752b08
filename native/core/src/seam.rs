//! The seam between the control plane and the shards: the closed list of Commands and Events.
//!
//! Commands go onto a queue per shard and return at once; the shard wakes on an eventfd. Events
//! come back on a queue whose eventfd the control plane (asyncio) watches (`crate::queue`). Crossings
//! scale with joins, leaves and control decisions, never with packets.

use crate::domain::{
    FeedbackSsrcs, HeaderExtensionIds, PayloadType, RemoteCandidate, RouterId, Source, TransportId,
    TransportState, VideoTarget,
};
use crate::dtls::{DtlsSetup, Fingerprint};
use crate::ice::IceCredentials;
use crate::router::AudioLevel;
use crate::stats::StatsSnapshot;

/// The closed list of control messages a shard accepts.
#[derive(Clone, Debug)]
pub enum Command {
    /// A conference; `feedback` are the SSRCs its Colibri2 answer signals as the bridge's own
    /// (`jvb-a0`, `jvb-v0`), the senders of every RTCP packet the bridge makes for it.
    CreateRouter {
        router: RouterId,
        feedback: FeedbackSsrcs,
    },
    CloseRouter {
        router: RouterId,
    },
    CreateTransport {
        router: RouterId,
        transport: TransportId,
        ice: IceCredentials,
        controlling: bool,
    },
    /// The remote's ICE credentials, every DTLS fingerprint it announced (of a supported hash) and its
    /// a=setup.
    ConnectTransport {
        transport: TransportId,
        remote_ice: IceCredentials,
        fingerprints: Vec<Fingerprint>,
        remote_setup: DtlsSetup,
    },
    AddRemoteCandidates {
        transport: TransportId,
        candidates: Vec<RemoteCandidate>,
    },
    /// ICE restart with our new credentials (Colibri2 `ice-restart`): the DTLS association and SRTP
    /// keys stay, and media keeps its path until the new generation selects one. The remote's new
    /// credentials follow in a `ConnectTransport`.
    RestartIce {
        transport: TransportId,
        ice: IceCredentials,
    },
    /// The full set of Sources this transport sends, each with its SSRCs and SIM/FID groups; replaces
    /// the previous set.
    SetSources {
        transport: TransportId,
        sources: Vec<Source>,
    },
    /// The video payload types this transport sends with (codec, or RTX of which); replaces the
    /// previous set. The bridge reads keyframes and layers of the codecs it knows and unwraps RTX.
    SetPayloadTypes {
        transport: TransportId,
        types: Vec<PayloadType>,
    },
    /// What this transport receives of each named video Source (None: nothing). Sources not named get
    /// all of their top layer. Replaces the previous allocation.
    SetAllocation {
        transport: TransportId,
        targets: Vec<(String, Option<VideoTarget>)>,
    },
    /// What the Allocator would send this transport if its bandwidth estimate allowed, bit/s (0: no
    /// more than it is allocated). Above the estimate, the bridge probes it (`cc::Prober`).
    SetProbeTarget {
        transport: TransportId,
        bps: u64,
    },
    /// The RTP header extension ids of what this transport sends (from its extmap). Replaces the
    /// previous ones.
    SetHeaderExtensions {
        transport: TransportId,
        ids: HeaderExtensionIds,
    },
    RequestKeyframe {
        transport: TransportId,
        ssrc: u32,
    },
    /// Force-mute (or unmute) what this transport sends, by kind; replaces the previous setting. Holds
    /// from the moment it is applied, whatever sources or connection state come later.
    SetForceMute {
        transport: TransportId,
        audio: bool,
        video: bool,
    },
    CloseTransport {
        transport: TransportId,
    },
    GetStats {
        request: u64,
    },
    Shutdown,
}

#[derive(Clone, Debug)]
pub enum Event {
    TransportState {
        transport: TransportId,
        state: TransportState,
        detail: String,
    },
    Stats {
        request: u64,
        snapshot: Box<StatsSnapshot>,
    },
    /// The audio levels of one conference's senders over the last `LEVEL_TICK`, one batch per tick
    /// for every Router that received audio with levels: what dominant-speaker detection reads.
    AudioLevels {
        router: RouterId,
        levels: Vec<AudioLevel>,
    },
    /// A transport's send-side estimate fell (`Transport::on_transport_feedback`): the control plane
    /// reallocates its receiver now rather than at its next stats snapshot.
    EstimateFell { transport: TransportId, bps: u64 },
    /// A probe raised a transport's send-side estimate: the control plane may switch its receiver up
    /// now rather than at its next stats snapshot.
    EstimateRose { transport: TransportId, bps: u64 },
    /// A command named an object that does not exist (or no longer does).
    CommandFailed {
        transport: TransportId,
        detail: String,
    },
}
