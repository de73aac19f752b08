//! The fan-out bench's conference, shared with `examples/forward_instructions.rs` (both include this
//! file with `#[path]`): a sender and receivers whose Transports ran their ICE and DTLS-SRTP handshakes in
//! memory against clients made of the same protocol machines, a Router, and one forwarding step as the
//! shard's ingress does it after the address lookup.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sluice_core::domain::{
    Codec, FeedbackSsrcs, GroupSemantics, IdMap, MediaKind, PayloadType, RemoteCandidate, Source,
    SsrcGroup, TransportId, VideoTarget,
};
use sluice_core::dtls::{
    DtlsCert, DtlsConfig, DtlsConn, DtlsEvent, DtlsRole, DtlsSetup, DtlsSrtpProfile, HashAlg,
};
use sluice_core::ice::{Candidate, CandidateKind, IceAgent, IceCredentials};
use sluice_core::io::{classify, DatagramKind, Egress, SendBatch, MAX_DATAGRAM};
use sluice_core::router::Router;
use sluice_core::rtp::RtpView;
use sluice_core::shard::BATCH;
use sluice_core::srtp::{SrtpContext, SrtpProfile};
use sluice_core::stats::Counters;
use sluice_core::stun::StunMessage;
use sluice_core::transport::Transport;

/// A full video packet.
pub const SIZE: usize = 1200;
pub const SSRC: u32 = 0x1234_5678;
pub const ROUTER: u64 = 1;
pub const SENDER: TransportId = 1;

/// The batch the Router queues into, cleared when full where the shard would flush it with sendmmsg.
pub struct ClearingEgress(pub SendBatch);

impl Egress for ClearingEgress {
    fn batch_for(&mut self, _local: SocketAddr) -> &mut SendBatch {
        if self.0.is_full() {
            self.0.clear();
        }
        &mut self.0
    }
}

pub fn bridge_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 10_000)
}

pub fn peer_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 250) as u8 + 1)),
        40_000 + i as u16,
    )
}

/// A bridge Transport connected in memory to a client peer (ICE controlled, DTLS client offering only
/// `profile`); returns it with the peer's sending SRTP context.
pub fn connected(
    id: TransportId,
    bridge_cert: &DtlsCert,
    peer_cert: &DtlsCert,
    profile: DtlsSrtpProfile,
) -> (Transport, SrtpContext) {
    let (bridge, peer) = (bridge_addr(), peer_addr(id as usize));
    let mut now = Instant::now();
    let bridge_ice = IceCredentials::random();
    let peer_ice = IceCredentials::random();
    let mut t = Transport::new(
        id,
        ROUTER,
        bridge_ice.clone(),
        true,
        bridge_cert.clone(),
        &[bridge],
    );
    let mut agent = IceAgent::new(false, peer_ice.clone(), id);
    agent.add_local_candidate(Candidate::host(peer, 65535));
    agent.set_remote_credentials(bridge_ice);
    agent.add_remote_candidate(Candidate::host(bridge, 65535));
    let config = DtlsConfig {
        srtp_profiles: vec![profile],
        ..DtlsConfig::default()
    };
    let mut dtls = DtlsConn::with_config(
        peer_cert,
        DtlsRole::Client,
        vec![bridge_cert.fingerprint(HashAlg::Sha256)],
        &config,
    )
    .expect("client");
    t.connect(
        now,
        peer_ice,
        vec![peer_cert.fingerprint(HashAlg::Sha256)],
        DtlsSetup::Active,
    );
    t.add_remote_candidates(
        now,
        &[RemoteCandidate {
            addr: peer,
            priority: Candidate::host(peer, 65535).priority,
            kind: CandidateKind::Host,
        }],
    );
    let mut started = false;
    let mut keys = None;
    for _ in 0..4000 {
        while let Some(tx) = t.poll_transmit() {
            match classify(&tx.contents) {
                DatagramKind::Stun => {
                    let _ = agent.handle_datagram(now, peer, bridge, &tx.contents);
                }
                DatagramKind::Dtls => {
                    dtls.handle_datagram(now, &tx.contents);
                }
                _ => {}
            }
        }
        agent.handle_timeout(now);
        while let Some(tx) = agent.poll_transmit() {
            let msg = StunMessage::parse(&tx.contents).expect("our own STUN");
            let _ = t.handle_stun(now, bridge, peer, &msg);
        }
        while agent.poll_event().is_some() {}
        if !started && agent.selected_pair().is_some() {
            started = true;
            dtls.start(now);
        }
        dtls.handle_timeout(now);
        while let Some(d) = dtls.poll_transmit() {
            let _ = t.handle_dtls(now, bridge, peer, &d);
        }
        while let Some(ev) = dtls.poll_event() {
            if let DtlsEvent::Connected(k) = ev {
                keys = Some(k);
            }
        }
        t.handle_timeout(now);
        while t.poll_note().is_some() {}
        if let (true, Some(k)) = (t.is_media_ready(), &keys) {
            let p = SrtpProfile::from_dtls_name(k.profile.name()).expect("profile");
            let tx = SrtpContext::new(p, &k.local_key, &k.local_salt).expect("peer keys");
            return (t, tx);
        }
        now += Duration::from_millis(5);
    }
    panic!("transport {id} did not connect in memory");
}

/// A plain RTP packet (12-octet header, one-word 0xBEDE extension) of `SIZE` octets.
pub fn write_rtp(buf: &mut [u8; MAX_DATAGRAM], seq: u16) {
    buf[..SIZE].fill(0x5a);
    buf[0] = 0x90;
    buf[1] = 96;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    buf[8..12].copy_from_slice(&SSRC.to_be_bytes());
    buf[12..16].copy_from_slice(&[0xbe, 0xde, 0, 1]);
}

pub const AUDIO_SSRC: u32 = 0x0A0D_1000;
/// An Opus packet of 20 ms at about 32 kbit/s.
pub const AUDIO_SIZE: usize = 100;

/// A plain audio RTP packet of `AUDIO_SIZE` octets (payload type 111, an RFC 6464 level in extension 1).
pub fn write_audio(buf: &mut [u8; MAX_DATAGRAM], seq: u16) {
    buf[..AUDIO_SIZE].fill(0x33);
    buf[0] = 0x90;
    buf[1] = 111;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    buf[8..12].copy_from_slice(&AUDIO_SSRC.to_be_bytes());
    buf[12..20].copy_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0x80 | 30, 0, 0]);
}

/// The simulcast layers' SSRCs; the bench sends on the top one.
pub const LAYERS: [u32; 3] = [0x1000_0001, 0x1000_0002, SSRC];

/// A VP8 packet of the top layer: after the header and its extension, a descriptor with a 15-bit
/// PictureID and TL0PICIDX, then a delta frame.
pub fn write_vp8(buf: &mut [u8; MAX_DATAGRAM], seq: u16) {
    write_rtp(buf, seq);
    buf[1] = 100;
    buf[20..26].copy_from_slice(&[
        0x90,
        0xC0,
        0x80 | (seq >> 8) as u8 & 0x7f,
        seq as u8,
        seq as u8,
        0x11,
    ]);
}

pub fn name(profile: DtlsSrtpProfile) -> &'static str {
    match profile {
        DtlsSrtpProfile::AeadAes128Gcm => "aead_aes_128_gcm",
        DtlsSrtpProfile::Aes128CmSha1_80 => "aes_128_cm_sha1_80",
    }
}

/// One conference: the sender and `n` receivers, all connected, the sender's SSRC signalled.
pub struct Conference {
    pub router: Router,
    pub transports: IdMap<Transport>,
}

impl Conference {
    /// The conference and the sender peer's SRTP context, to make ingress packets with.
    pub fn new(profile: DtlsSrtpProfile, n: usize) -> (Self, SrtpContext) {
        Self::with_source(profile, n, Source::single(SSRC, MediaKind::Video))
    }

    /// The same with the sender's one Source an audio one on [`AUDIO_SSRC`] (forwarded to everyone).
    pub fn audio(profile: DtlsSrtpProfile, n: usize) -> (Self, SrtpContext) {
        Self::with_source(profile, n, Source::single(AUDIO_SSRC, MediaKind::Audio))
    }

    fn with_source(profile: DtlsSrtpProfile, n: usize, source: Source) -> (Self, SrtpContext) {
        let bridge_cert = DtlsCert::generate().expect("cert");
        let peer_cert = DtlsCert::generate().expect("cert");
        let mut router = Router::new(
            ROUTER,
            FeedbackSsrcs {
                audio: 0xA0,
                video: 0xB0,
            },
        );
        let mut transports = IdMap::default();
        let mut sender = None;
        for id in SENDER..=SENDER + n as u64 {
            let (t, tx) = connected(id, &bridge_cert, &peer_cert, profile);
            router.add_member(id);
            transports.insert(id, t);
            sender.get_or_insert(tx);
        }
        router.set_sources(SENDER, &[source]);
        (Conference { router, transports }, sender.expect("a sender"))
    }

    /// The conference with the sender's video a VP8 simulcast Source, receiver i allocated layer i % 3,
    /// and every receiver's Projection started on its layer (a keyframe of each layer forwarded once).
    pub fn simulcast(
        profile: DtlsSrtpProfile,
        n: usize,
        sender: &mut SrtpContext,
        now: Instant,
    ) -> Self {
        let (mut conf, mut tx) = Conference::new(profile, n);
        std::mem::swap(sender, &mut tx);
        let video = Source {
            kind: MediaKind::Video,
            ssrcs: LAYERS.to_vec(),
            groups: vec![SsrcGroup {
                semantics: GroupSemantics::Sim,
                ssrcs: LAYERS.to_vec(),
            }],
            name: "sender-v0".into(),
        };
        conf.router.set_sources(SENDER, &[video]);
        conf.router.set_payload_types(
            SENDER,
            &[PayloadType {
                pt: 100,
                codec: Codec::Vp8,
            }],
        );
        for (i, r) in (SENDER + 1..=SENDER + n as u64).enumerate() {
            let target = VideoTarget {
                spatial: (i % 3) as u8,
                temporal: 255,
            };
            conf.router
                .set_allocation(now, r, vec![("sender-v0".into(), Some(target))]);
        }
        let mut egress = ClearingEgress(SendBatch::new(BATCH));
        let mut total = Counters::default();
        for (l, ssrc) in LAYERS.iter().enumerate() {
            let mut buf = [0u8; MAX_DATAGRAM];
            write_vp8(&mut buf, 60_000 + l as u16);
            buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
            buf[25] = 0x10; // a keyframe
            let len = sender.protect_rtp(&mut buf, SIZE).expect("protects");
            conf.forward(now, &mut buf[..len], &mut egress, &mut total);
        }
        conf
    }

    /// One forwarding step, as the shard's ingress does it after the address lookup; returns the number
    /// of egress packets queued.
    pub fn forward(
        &mut self,
        now: Instant,
        pkt: &mut [u8],
        egress: &mut ClearingEgress,
        total: &mut Counters,
    ) -> usize {
        let t = self.transports.get_mut(&SENDER).expect("sender");
        let force_mute = t.force_mute;
        let len = t.unprotect_rtp(pkt).expect("unprotects");
        let rtp = RtpView::parse(&pkt[..len]).expect("valid RTP");
        self.router
            .on_rtp(
                now,
                SENDER,
                force_mute,
                &rtp,
                &mut self.transports,
                egress,
                total,
            )
            .expect("forwarded")
    }
}
