//! The load generator against a bridge shard in the same process, allocated over the seam the way the
//! bridge's Colibri2 handler does: for this crate's tests and the `quick` example, which run without
//! Python. `sluice bench` drives a real bridge over Colibri2 instead.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice_core::domain::{
    Codec, FeedbackSsrcs, GroupSemantics, HeaderExtensionIds, MediaKind, PayloadType,
    RemoteCandidate, Source, SsrcGroup, TransportState,
};
use sluice_core::dtls::{DtlsCert, DtlsSetup, Fingerprint, HashAlg};
use sluice_core::ice::{candidate_priority, CandidateKind, IceCredentials};
use sluice_core::seam::{Command, Event};
use sluice_core::shard::{ShardConfig, ShardHandle};

use crate::endpoint::PT_VIDEO;
use crate::{LoadGen, LocalDescription, RemoteDescription, Sources, PT_RTX, TRANSPORT_CC_EXT_ID};

/// A shard thread on 127.0.0.1 (one router per load generator group) and the events it sent.
pub struct InProcessBridge {
    pub shard: ShardHandle,
    addr: SocketAddr,
    fingerprint: Fingerprint,
    pub events: Vec<Event>,
}

impl InProcessBridge {
    pub fn spawn() -> io::Result<Self> {
        let cert = DtlsCert::generate().map_err(|e| io::Error::other(e.to_string()))?;
        let fingerprint = cert.fingerprint(HashAlg::Sha256);
        let bind = SocketAddr::from(([127, 0, 0, 1], 0));
        let shard = ShardHandle::spawn(
            &ShardConfig {
                bind: vec![bind],
                ..Default::default()
            },
            cert,
        )?;
        let addr = shard.local_addrs()[0];
        Ok(InProcessBridge {
            shard,
            addr,
            fingerprint,
            events: Vec::new(),
        })
    }

    /// The router of load generator group `group`.
    pub fn router(group: u32) -> u64 {
        u64::from(group) + 1
    }

    /// The bridge transport of load generator endpoint `index`.
    pub fn transport(index: u32) -> u64 {
        1000 + u64::from(index)
    }

    pub fn create_conference(&self, group: u32) {
        self.shard.send(Command::CreateRouter {
            router: Self::router(group),
            feedback: FeedbackSsrcs {
                audio: 0xA000 + group,
                video: 0xB000 + group,
            },
        });
    }

    /// Allocates endpoint `local` in its group's conference: an ICE-controlling bridge transport told
    /// that the endpoint's a=setup is `endpoint_setup` and that it sends `sources`. Then gives the
    /// endpoint the bridge's side, with the bridge's a=setup `bridge_setup`.
    pub fn allocate(
        &self,
        lg: &LoadGen,
        local: &LocalDescription,
        sources: Sources,
        endpoint_setup: &str,
        bridge_setup: &str,
    ) -> io::Result<()> {
        let transport = Self::transport(local.index);
        let ice = IceCredentials::random();
        self.shard.send(Command::CreateTransport {
            router: Self::router(local.group),
            transport,
            ice: ice.clone(),
            controlling: true,
        });
        self.shard.send(Command::ConnectTransport {
            transport,
            remote_ice: local.ice.clone(),
            fingerprints: vec![local.fingerprint.clone()],
            remote_setup: DtlsSetup::parse(endpoint_setup).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a=setup must be active, passive or actpass",
                )
            })?,
        });
        let candidates = local.candidates.iter().map(|c| RemoteCandidate {
            addr: c.addr,
            priority: c.priority,
            kind: c.kind,
        });
        self.shard.send(Command::AddRemoteCandidates {
            transport,
            candidates: candidates.collect(),
        });
        let audio = sources
            .audio
            .iter()
            .map(|&ssrc| Source::single(ssrc, MediaKind::Audio));
        // The video SSRCs are one Source, simulcast (a SIM group) when there are several, each layer
        // with its RTX SSRC in an FID group when it has one, as a browser signals them; the bridge
        // reads its VP8.
        let mut groups = Vec::new();
        if sources.video.len() > 1 {
            groups.push(SsrcGroup {
                semantics: GroupSemantics::Sim,
                ssrcs: sources.video.clone(),
            });
        }
        for (&primary, &rtx) in sources.video.iter().zip(&sources.rtx) {
            groups.push(SsrcGroup {
                semantics: GroupSemantics::Fid,
                ssrcs: vec![primary, rtx],
            });
        }
        let video = (!sources.video.is_empty()).then(|| Source {
            kind: MediaKind::Video,
            ssrcs: sources.video.iter().chain(&sources.rtx).copied().collect(),
            groups,
            name: format!("{}-v0", local.index),
        });
        self.shard.send(Command::SetSources {
            transport,
            sources: audio.chain(video).collect(),
        });
        let mut types = vec![PayloadType {
            pt: PT_VIDEO,
            codec: Codec::Vp8,
        }];
        if lg.config().media.feedback {
            // What the focus offers browsers: RTX of VP8, transport-wide numbers in extension 5.
            types.push(PayloadType {
                pt: PT_RTX,
                codec: Codec::Rtx { apt: PT_VIDEO },
            });
            self.shard.send(Command::SetHeaderExtensions {
                transport,
                ids: HeaderExtensionIds {
                    transport_cc: Some(TRANSPORT_CC_EXT_ID),
                    ..HeaderExtensionIds::default()
                },
            });
        }
        self.shard
            .send(Command::SetPayloadTypes { transport, types });
        lg.set_sources(local.index, sources)?;
        lg.connect(
            local.index,
            RemoteDescription {
                ice,
                candidates: vec![RemoteCandidate {
                    addr: self.addr,
                    priority: candidate_priority(CandidateKind::Host, 65535, 1),
                    kind: CandidateKind::Host,
                }],
                fingerprints: vec![self.fingerprint.clone()],
                setup: bridge_setup.into(),
                turn: None,
            },
        )
    }

    /// Waits until `n` bridge transports are media-ready (or `timeout` passed: false). Senders must
    /// not start before, or their first packets are not forwarded and count as loss.
    pub fn wait_connected(&mut self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.shard.events.drain_into(&mut self.events);
            let up = self.events.iter().filter(|e| {
                matches!(
                    e,
                    Event::TransportState {
                        state: TransportState::Connected,
                        ..
                    }
                )
            });
            if up.count() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
