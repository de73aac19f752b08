//! Full-stack interop: str0m 0.24 peers (an independent sans-IO WebRTC stack with its own ICE agent,
//! SRTP, RTP and RTCP) join one conference on a real `Shard` on 127.0.0.1 and exchange media through
//! it, in-process, driven turn by turn without threads.
//!
//! No SDP: each str0m `Rtc` is set up through its direct API exactly as the bridge's answer would
//! describe it: full ICE in the controlled role (the bridge controls), a=setup:active (str0m is the
//! DTLS client, the bridge the DTLS server), the bridge's sha-256 fingerprint, one video and one
//! audio SSRC per peer, and the other peers' SSRCs expected on receive.
//!
//! Checked end to end:
//! - ICE + DTLS + SRTP come up on every leg, in both SRTP profiles (AEAD_AES_128_GCM, which the
//!   bridge prefers, and AES_CM_128_HMAC_SHA1_80, forced from the str0m side);
//! - every RTP packet reaches every other peer unchanged: SSRC, PT, sequence number (including a
//!   wrap through 65535, which moves the SRTP rollover counter on both legs), timestamp, payload;
//! - RTCP is terminated per leg: senders get the bridge's own receiver reports (extended highest
//!   sequence number, loss, and an RTT from LSR/DLSR), receivers get the senders' SRs, and a
//!   receiver's PLI reaches the sender as a keyframe request;
//! - a peer whose certificate does not match the signalled fingerprint is refused, and the others
//!   keep working.
//!
//! not be sent still counts for the per-producer rate limit); see its doc comment.
//!
//! str0m API facts these tests rely on: in RTP mode (`RtcConfig::set_rtp_mode`) str0m keeps one
//! received packet for the next `poll_output()`, so output is drained after every datagram;
//! `Event::MediaEgressStats` needs `RtcConfig::set_stats_interval`; str0m has no setting for its
//! SRTP profiles, so the CM-only variant plugs in its own DTLS provider (bottom of this file).

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::pkey::PKey;
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{
    HandshakeError, MidHandshakeSslStream, Ssl, SslContext, SslContextBuilder, SslMethod,
    SslOptions, SslStream, SslVerifyMode,
};
use openssl::x509::X509;
use sluice_core::domain::{
    FeedbackSsrcs, MediaKind as SeamKind, RemoteCandidate, Source, TransportId, TransportState,
};
use sluice_core::dtls::{
    DtlsCert as BridgeCert, DtlsSetup, Fingerprint as BridgeFingerprint, HashAlg,
};
use sluice_core::ice::{CandidateKind, IceCredentials};
use sluice_core::seam::{Command, Event as SeamEvent};
use sluice_core::shard::{Shard, ShardConfig};
use sluice_core::stats::DropReason;
use str0m::config::Fingerprint;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, KeyingMaterial,
    ProtocolVersion, SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider};
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceCreds, Input, Output, Rtc, RtcConfig};

const ROUTER: u64 = 1;
const VIDEO_PACKETS: usize = 100;
const VIDEO_PAYLOAD: usize = 1000;
/// One audio packet for every `VIDEO_PACKETS / AUDIO_PACKETS` video packets.
const AUDIO_PACKETS: usize = 20;
const AUDIO_PAYLOAD: usize = 120;
/// Pace of writes per sender (about 500 packets/s, 4 Mbit/s of video per sender).
const WRITE_INTERVAL: Duration = Duration::from_millis(2);
const STATS_INTERVAL: Duration = Duration::from_millis(200);
/// At least 95 % of the packets must arrive intact.
const MIN_DELIVERY_PERCENT: usize = 95;
/// The bridge's keyframe-request rate limit per producer is 300 ms; wait past it before a PLI.
const PAST_KEYFRAME_LIMIT: Duration = Duration::from_millis(350);

/// Which str0m DTLS backend a peer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtls {
    /// str0m's own OpenSSL provider: offers AEAD_AES_256_GCM, AEAD_AES_128_GCM and
    /// AES128_CM_SHA1_80; the bridge (DTLS server) picks by its preference, AEAD_AES_128_GCM.
    Str0mDefault,
    /// `CmOnlyDtlsProvider` below: OpenSSL DTLS offering only SRTP_AES128_CM_SHA1_80.
    CmOnly,
}

/// One RTP stream a peer sends.
#[derive(Clone, Debug)]
struct Track {
    mid: Mid,
    kind: MediaKind,
    ssrc: Ssrc,
    pt: Pt,
    first_seq: u64,
    first_ts: u32,
    ts_step: u32,
    payload_len: usize,
    total: usize,
    written: usize,
}

impl Track {
    fn seq(&self, k: usize) -> u64 {
        self.first_seq + k as u64
    }

    fn ts(&self, k: usize) -> u32 {
        self.first_ts
            .wrapping_add(self.ts_step.wrapping_mul(k as u32))
    }

    /// Payload bytes of packet `k`: distinct per stream and per packet.
    fn payload(&self, k: usize) -> Vec<u8> {
        let seed = (*self.ssrc).wrapping_mul(7).wrapping_add(k as u32 * 13);
        (0..self.payload_len)
            .map(|j| (seed.wrapping_add(j as u32 * 31) >> 2) as u8)
            .collect()
    }

    /// Which packet a received sequence number is, if it is one of ours.
    fn index_of(&self, seq: u16) -> Option<usize> {
        let k = usize::from(seq.wrapping_sub(self.first_seq as u16));
        (k < self.total).then_some(k)
    }
}

/// A str0m peer on its own loopback socket.
struct Peer {
    name: String,
    transport: TransportId,
    sock: UdpSocket,
    addr: SocketAddr,
    prio: u32,
    rtc: Rtc,
    events: Vec<Event>,
    /// The first error str0m returned; the peer is not driven afterwards.
    error: Option<String>,
    video: Track,
    audio: Track,
    next_write: Option<Instant>,
    send_errors: usize,
}

impl Peer {
    fn new(i: usize, dtls: Dtls) -> Self {
        let now = Instant::now();
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind peer socket");
        sock.set_nonblocking(true).expect("non-blocking");
        let addr = sock.local_addr().expect("local addr");

        let mut config = RtcConfig::new()
            .set_ice_lite(false)
            .set_rtp_mode(true)
            .set_stats_interval(Some(STATS_INTERVAL));
        if dtls == Dtls::CmOnly {
            config = config.set_crypto_provider(Arc::new(cm_only_crypto_provider()));
        }
        let mut rtc = config.build(now);
        let host = Candidate::host(addr, "udp").expect("host candidate");
        let prio = rtc
            .add_local_candidate(host)
            .expect("str0m accepts a loopback host candidate")
            .prio();

        let pt_of = |codec: Codec| {
            rtc.codec_config()
                .iter()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
                .expect("codec in str0m's default config")
        };
        // Peer 0's video wraps through seq 65535 -> 0 (SRTP ROC 0 -> 1) mid-stream.
        let first_video_seq = [65_480, 1_000, 30_000][i % 3];
        let video = Track {
            mid: Mid::from(format!("v{i}").as_str()),
            kind: MediaKind::Video,
            ssrc: Ssrc::from(0x5100_0000 + 16 * i as u32 + 1),
            pt: pt_of(Codec::Vp8),
            first_seq: first_video_seq,
            first_ts: 90_000 * (i as u32 + 1),
            ts_step: 3_000,
            payload_len: VIDEO_PAYLOAD,
            total: VIDEO_PACKETS,
            written: 0,
        };
        let audio = Track {
            mid: Mid::from(format!("a{i}").as_str()),
            kind: MediaKind::Audio,
            ssrc: Ssrc::from(0x5100_0000 + 16 * i as u32 + 2),
            pt: pt_of(Codec::Opus),
            first_seq: 100 + 1_000 * i as u64,
            first_ts: 48_000 * (i as u32 + 1),
            ts_step: 960,
            payload_len: AUDIO_PAYLOAD,
            total: AUDIO_PACKETS,
            written: 0,
        };
        {
            let mut api = rtc.direct_api();
            for t in [&video, &audio] {
                api.declare_media(t.mid, t.kind);
                api.declare_stream_tx(t.ssrc, None, t.mid, None);
            }
        }
        Peer {
            name: format!("str0m-{i}"),
            transport: 10 + i as u64,
            sock,
            addr,
            prio,
            rtc,
            events: Vec::new(),
            error: None,
            video,
            audio,
            next_write: None,
            send_errors: 0,
        }
    }

    fn ice_credentials(&mut self) -> IceCredentials {
        let c = self.rtc.direct_api().local_ice_credentials();
        IceCredentials {
            ufrag: c.ufrag,
            pwd: c.pass,
        }
    }

    /// str0m's certificate fingerprint, through the text form it would travel in.
    fn fingerprint(&mut self) -> BridgeFingerprint {
        let text = self.rtc.direct_api().local_dtls_fingerprint().to_string();
        let (hash, value) = text.split_once(' ').expect("'<hash> <hex>'");
        BridgeFingerprint::parse(hash, value).expect("str0m fingerprint parses")
    }

    /// Expects another peer's stream: declares a receive m-line for it and its SSRC.
    fn expect(&mut self, t: &Track) {
        let mut api = self.rtc.direct_api();
        api.declare_media(t.mid, t.kind);
        api.expect_stream_rx(t.ssrc, None, t.mid, None);
    }

    /// The bridge's transport description: ICE credentials, its one host candidate, its fingerprint.
    fn connect(
        &mut self,
        bridge: &IceCredentials,
        bridge_addr: SocketAddr,
        bridge_fp: &BridgeFingerprint,
    ) {
        self.rtc
            .add_remote_candidate(Candidate::host(bridge_addr, "udp").expect("bridge candidate"));
        let fp: Fingerprint = format!("{} {}", bridge_fp.hash_name(), bridge_fp.value_hex())
            .parse()
            .expect("str0m parses the bridge fingerprint");
        let mut api = self.rtc.direct_api();
        api.set_ice_controlling(false);
        api.set_remote_ice_credentials(IceCreds {
            ufrag: bridge.ufrag.clone(),
            pass: bridge.pwd.clone(),
        });
        api.set_remote_fingerprint(fp);
        api.start_dtls(true).expect("start DTLS as client");
    }

    fn alive(&self) -> bool {
        self.error.is_none()
    }

    /// The peer's network changes: a new socket at `to`, its old host candidate gone, new ICE
    /// credentials (its side of an ICE restart); DTLS and SRTP state stay.
    fn move_to(&mut self, to: &str) {
        let old = Candidate::host(self.addr, "udp").expect("old candidate");
        let sock = UdpSocket::bind(to).expect("bind the moved socket");
        sock.set_nonblocking(true).expect("non-blocking");
        self.addr = sock.local_addr().expect("local addr");
        self.sock = sock;
        let new = Candidate::host(self.addr, "udp").expect("new candidate");
        self.prio = self
            .rtc
            .add_local_candidate(new)
            .expect("str0m accepts the new candidate")
            .prio();
        let mut api = self.rtc.direct_api();
        assert!(
            api.invalidate_candidate(&old),
            "the old candidate was known"
        );
        api.set_local_ice_credentials(IceCreds::new());
    }

    fn is_connected(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::Connected))
    }

    fn fail(&mut self, e: impl std::fmt::Display) {
        if self.error.is_none() {
            self.error = Some(e.to_string());
        }
    }

    /// Socket in, timers, everything str0m wants to say out (bounded).
    fn poll(&mut self, now: Instant) {
        let mut buf = [0u8; 2048];
        for _ in 0..512 {
            let (n, source) = match self.sock.recv_from(&mut buf) {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{}: recv: {e}", self.name),
            };
            if !self.alive() {
                continue; // keep draining the socket of a dead peer
            }
            let Ok(contents) = buf[..n].try_into() else {
                continue;
            };
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.addr,
                    contents,
                },
            );
            if let Err(e) = self.rtc.handle_input(input) {
                self.fail(e);
                continue;
            }
            // In RTP mode str0m keeps one received packet for the next poll_output(): drain
            // after every datagram or the previous packet is overwritten.
            self.drain();
        }
        if !self.alive() {
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(e);
            return;
        }
        self.drain();
    }

    fn drain(&mut self) {
        for _ in 0..100_000 {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) => return,
                Ok(Output::Transmit(t)) => {
                    if self.sock.send_to(&t.contents, t.destination).is_err() {
                        self.send_errors += 1;
                    }
                }
                Ok(Output::Event(e)) => self.events.push(e),
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
        panic!("{}: str0m kept producing output", self.name);
    }

    /// Writes the next video packet (and an audio packet every few video packets) when due.
    fn write_media(&mut self, now: Instant) {
        if !self.alive() || self.video.written >= self.video.total {
            return;
        }
        if self.next_write.is_some_and(|t| now < t) {
            return;
        }
        self.next_write = Some(now + WRITE_INTERVAL);
        let k = self.video.written;
        let every = VIDEO_PACKETS / AUDIO_PACKETS;
        let mut tracks = vec![&mut self.video];
        if k.is_multiple_of(every) {
            tracks.push(&mut self.audio);
        }
        let mut api = self.rtc.direct_api();
        for t in tracks {
            let k = t.written;
            let write = RtpWrite::new(t.pt, t.seq(k).into(), t.ts(k), now, t.payload(k))
                .marker(t.kind == MediaKind::Audio || k % 5 == 4);
            api.stream_tx(&t.ssrc)
                .expect("declared tx stream")
                .write_rtp(write);
            t.written += 1;
        }
        self.drain();
    }

    fn media_done(&self) -> bool {
        !self.alive()
            || (self.video.written == self.video.total && self.audio.written == self.audio.total)
    }

    /// Packets of `t` that arrived intact here: right SSRC, PT, seq, timestamp and payload bytes.
    fn intact(&self, t: &Track) -> BTreeSet<usize> {
        let mut got = BTreeSet::new();
        for e in &self.events {
            let Event::RtpPacket(p) = e else { continue };
            if p.header.ssrc != t.ssrc {
                continue;
            }
            let Some(k) = t.index_of(p.header.sequence_number) else {
                continue;
            };
            if p.header.payload_type == t.pt
                && p.header.timestamp == t.ts(k)
                && *p.payload == *t.payload(k)
            {
                got.insert(k);
            }
        }
        got
    }

    /// Every RTP packet str0m delivered for `ssrc`, intact or not.
    fn rtp_count(&self, ssrc: Ssrc) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::RtpPacket(p) if p.header.ssrc == ssrc))
            .count()
    }

    fn keyframe_requests(&self) -> Vec<(Mid, KeyframeRequestKind)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::KeyframeRequest(r) => Some((r.mid, r.kind)),
                _ => None,
            })
            .collect()
    }

    /// The remote-ingress part of the last egress stats for `mid`: what the bridge's RRs said.
    fn last_rr(&self, mid: Mid) -> Option<(u64, u64)> {
        self.events.iter().rev().find_map(|e| match e {
            Event::MediaEgressStats(s) if s.mid == mid => s
                .remote
                .as_ref()
                .map(|r| (*r.maximum_sequence_number, r.packets_lost)),
            _ => None,
        })
    }

    /// The last round-trip time str0m derived from the bridge's RRs (LSR/DLSR) for `mid`.
    fn last_rtt(&self, mid: Mid) -> Option<Duration> {
        self.events.iter().rev().find_map(|e| match e {
            Event::MediaEgressStats(s) if s.mid == mid => s.rtt,
            _ => None,
        })
    }

    /// Sender reports seen for a stream this peer receives.
    fn sender_reports(&self, ssrc: Ssrc) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::SenderFeedback(f) if f.sender_info.ssrc == ssrc))
            .count()
    }
}

struct Options {
    peers: usize,
    dtls: Dtls,
    /// This peer's transport gets the fingerprint of some other certificate.
    wrong_fingerprint: Option<usize>,
    /// Peers start ICE/DTLS only when `Call::start` is called (otherwise all start at once).
    staged: bool,
}

/// One shard with one conference; one transport per str0m peer (ids 10, 11, ...).
struct Call {
    shard: Shard,
    peers: Vec<Peer>,
    events: Vec<SeamEvent>,
    sending: bool,
    bridge_addr: SocketAddr,
    bridge_fp: BridgeFingerprint,
    /// The bridge's ICE credentials of each peer's transport.
    bridge_ice: Vec<IceCredentials>,
}

impl Call {
    fn new(opts: &Options) -> Self {
        let cert = BridgeCert::generate().expect("bridge cert");
        let bridge_fp = cert.fingerprint(HashAlg::Sha256);
        let config = ShardConfig {
            bind: vec!["127.0.0.1:0".parse().expect("literal")],
            ..Default::default()
        };
        let mut shard = Shard::new(&config, cert).expect("shard");
        let bridge_addr = shard.local_addrs()[0];
        let now = Instant::now();
        shard.handle_command(
            now,
            Command::CreateRouter {
                router: ROUTER,
                feedback: FeedbackSsrcs {
                    audio: 0xA0,
                    video: 0xB0,
                },
            },
        );

        let mut peers: Vec<Peer> = (0..opts.peers).map(|i| Peer::new(i, opts.dtls)).collect();
        let tracks: Vec<[Track; 2]> = peers
            .iter()
            .map(|p| [p.video.clone(), p.audio.clone()])
            .collect();
        for (r, peer) in peers.iter_mut().enumerate() {
            for (s, t) in tracks.iter().enumerate() {
                if s != r {
                    peer.expect(&t[0]);
                    peer.expect(&t[1]);
                }
            }
        }
        let mut all_bridge_ice = Vec::new();
        for (i, peer) in peers.iter_mut().enumerate() {
            let bridge_ice = IceCredentials::random();
            let transport = peer.transport;
            let fingerprint = if opts.wrong_fingerprint == Some(i) {
                BridgeCert::generate()
                    .expect("other cert")
                    .fingerprint(HashAlg::Sha256)
            } else {
                peer.fingerprint()
            };
            let commands = [
                Command::CreateTransport {
                    router: ROUTER,
                    transport,
                    ice: bridge_ice.clone(),
                    controlling: true,
                },
                Command::ConnectTransport {
                    transport,
                    remote_ice: peer.ice_credentials(),
                    fingerprints: vec![fingerprint],
                    remote_setup: DtlsSetup::Active,
                },
                Command::AddRemoteCandidates {
                    transport,
                    candidates: vec![RemoteCandidate {
                        addr: peer.addr,
                        priority: peer.prio,
                        kind: CandidateKind::Host,
                    }],
                },
                Command::SetSources {
                    transport,
                    sources: vec![
                        Source::single(*peer.video.ssrc, SeamKind::Video),
                        Source::single(*peer.audio.ssrc, SeamKind::Audio),
                    ],
                },
            ];
            for c in commands {
                shard.handle_command(now, c);
            }
            all_bridge_ice.push(bridge_ice);
        }
        let mut call = Call {
            shard,
            peers,
            events: Vec::new(),
            sending: false,
            bridge_addr,
            bridge_fp,
            bridge_ice: all_bridge_ice,
        };
        if !opts.staged {
            for i in 0..opts.peers {
                call.start(i);
            }
        }
        call
    }

    /// Gives peer `i` the bridge's transport description: ICE and DTLS start.
    fn start(&mut self, i: usize) {
        let ice = self.bridge_ice[i].clone();
        self.peers[i].connect(&ice, self.bridge_addr, &self.bridge_fp);
    }

    /// One turn of everything: shard I/O and timers, media writes, every peer; then wait (at most
    /// 1 ms) for a peer socket to become readable.
    fn turn(&mut self) {
        let now = Instant::now();
        self.shard.poll_io(now);
        self.shard.handle_timeouts(now);
        self.shard.take_events(&mut self.events);
        for p in &mut self.peers {
            if self.sending && p.is_connected() {
                p.write_media(now);
            }
            p.poll(now);
        }
        let mut fds: Vec<libc::pollfd> = self
            .peers
            .iter()
            .map(|p| libc::pollfd {
                fd: p.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of pollfd of the given length.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1) };
    }

    /// Runs turns until `done` or the deadline; returns whether `done` became true.
    fn run_until(&mut self, timeout: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.turn();
            if done(self) {
                return true;
            }
        }
        done(self)
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    fn bridge_state(&self, transport: TransportId) -> Option<(TransportState, &str)> {
        self.events.iter().rev().find_map(|e| match e {
            SeamEvent::TransportState {
                transport: t,
                state,
                detail,
            } if *t == transport => Some((*state, detail.as_str())),
            _ => None,
        })
    }

    fn diagnostics(&self) -> String {
        let stats = self.shard.stats();
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|p| {
                let egress: Vec<String> = p
                    .events
                    .iter()
                    .rev()
                    .filter_map(|e| match e {
                        Event::MediaEgressStats(s) => Some(format!("{}:{}", s.mid, s.packets)),
                        _ => None,
                    })
                    .take(2)
                    .collect();
                let ingress: Vec<String> = p
                    .events
                    .iter()
                    .rev()
                    .filter_map(|e| match e {
                        Event::MediaIngressStats(s) => Some(format!("{}:{}", s.mid, s.packets)),
                        _ => None,
                    })
                    .take(4)
                    .collect();
                format!(
                    "{} connected={} error={:?} send_errors={} str0m sent {egress:?} received {ingress:?}",
                    p.name,
                    p.is_connected(),
                    p.error,
                    p.send_errors
                )
            })
            .collect();
        let transports: Vec<String> = stats
            .transports
            .iter()
            .map(|t| {
                format!(
                    "{} rtp in {} out {} rtcp in {} out {} drops {:?}",
                    t.id,
                    t.counters.rtp_in,
                    t.counters.rtp_out,
                    t.counters.rtcp_in,
                    t.counters.rtcp_out,
                    t.counters.drop_map()
                )
            })
            .collect();
        format!(
            "bridge events {:?}; drops {:?}; failures {:?}; transports {transports:?}; peers {peers:?}",
            self.events,
            stats.total.drop_map(),
            stats.failures
        )
    }

    /// Waits until the transports in `expected` are Connected on the bridge and their peers report
    /// DTLS connected.
    fn connect(&mut self, expected: &[usize]) {
        let ids: Vec<TransportId> = expected.iter().map(|&i| self.peers[i].transport).collect();
        let ok = self.run_until(Duration::from_secs(10), |c| {
            expected.iter().all(|&i| c.peers[i].is_connected())
                && ids
                    .iter()
                    .all(|&id| matches!(c.bridge_state(id), Some((TransportState::Connected, _))))
        });
        assert!(ok, "peers did not connect: {}", self.diagnostics());
    }

    /// Lets every connected sender write its packets, then waits until every receiver has them
    /// all (or a deadline passes; loss is judged by the caller).
    fn exchange_media(&mut self, live: &[usize]) {
        self.sending = true;
        let sent = self.run_until(Duration::from_secs(10), |c| {
            live.iter().all(|&i| c.peers[i].media_done())
        });
        assert!(sent, "senders did not finish: {}", self.diagnostics());
        self.run_until(Duration::from_secs(3), |c| {
            live.iter().all(|&r| {
                live.iter().filter(|&&s| s != r).all(|&s| {
                    let (v, a) = (&c.peers[s].video, &c.peers[s].audio);
                    c.peers[r].intact(v).len() == v.total && c.peers[r].intact(a).len() == a.total
                })
            })
        });
    }

    /// ≥ 95 % of every stream of every live sender reached every other live peer intact.
    fn assert_delivery(&self, live: &[usize]) {
        for &r in live {
            for &s in live.iter().filter(|&&s| s != r) {
                for t in [&self.peers[s].video, &self.peers[s].audio] {
                    let got = self.peers[r].intact(t);
                    let all = self.peers[r].rtp_count(t.ssrc);
                    assert!(
                        got.len() * 100 >= t.total * MIN_DELIVERY_PERCENT,
                        "{} got {}/{} intact ({} delivered in all) of {} {:?} ssrc {}: {}",
                        self.peers[r].name,
                        got.len(),
                        t.total,
                        all,
                        self.peers[s].name,
                        t.kind,
                        t.ssrc,
                        self.diagnostics()
                    );
                    assert_eq!(
                        all,
                        got.len(),
                        "{}: a delivered packet was altered or duplicated",
                        self.peers[r].name
                    );
                }
            }
        }
    }

    fn assert_bridge_profile(&self, live: &[usize], profile: &str) {
        let stats = self.shard.stats();
        for &i in live {
            let p = &self.peers[i];
            let t = stats
                .transports
                .iter()
                .find(|t| t.id == p.transport)
                .expect("transport in stats");
            assert_eq!(t.srtp_profile, Some(profile), "{}", p.name);
            assert_eq!(
                t.selected_remote,
                Some(p.addr),
                "{}: ICE selected str0m's host candidate",
                p.name
            );
            assert_eq!(t.state, "connected");
            let detail = self.bridge_state(p.transport).map(|s| s.1);
            assert_eq!(detail, Some(format!("srtp {profile}").as_str()));
        }
        for reason in [
            DropReason::SrtpAuth,
            DropReason::SrtpReplay,
            DropReason::SrtpOther,
            DropReason::RtpMalformed,
            DropReason::RtcpMalformed,
            DropReason::UnknownSsrc,
            DropReason::EgressFailed,
            DropReason::Panic,
        ] {
            assert_eq!(
                stats.total.drops(reason),
                0,
                "{reason:?}: {}",
                self.diagnostics()
            );
        }
    }

    /// Senders get the bridge's RRs: their stats carry the bridge's extended highest sequence
    /// number and loss, and, once the bridge has seen an SR, a round-trip time from the RR's
    /// LSR/DLSR (RFC 3550 section 6.4.1). Receivers get each sender's SRs, passed on by the bridge.
    fn assert_rtcp_reports(&mut self, live: &[usize]) {
        let rr_ok = |c: &Call, s: usize| {
            let v = &c.peers[s].video;
            c.peers[s]
                .last_rr(v.mid)
                .is_some_and(|(max, _)| max == v.seq(v.total - 1))
        };
        let sr_ok =
            |c: &Call, r: usize, s: usize| c.peers[r].sender_reports(c.peers[s].video.ssrc) > 0;
        let rtt_ok = |c: &Call, s: usize| c.peers[s].last_rtt(c.peers[s].video.mid).is_some();
        // str0m sends a video SR about every second and the bridge an RR every second.
        self.run_until(Duration::from_secs(8), |c| {
            live.iter().all(|&s| rr_ok(c, s) && rtt_ok(c, s))
                && live
                    .iter()
                    .all(|&r| live.iter().filter(|&&s| s != r).all(|&s| sr_ok(c, r, s)))
        });
        for &s in live {
            let p = &self.peers[s];
            let rr = p.last_rr(p.video.mid);
            let (max, lost) =
                rr.unwrap_or_else(|| panic!("{}: no receiver report from the bridge", p.name));
            assert_eq!(
                max,
                p.video.seq(p.video.total - 1),
                "{}: RR extended highest seq",
                p.name
            );
            assert!(
                lost * 100 <= (p.video.total * (100 - MIN_DELIVERY_PERCENT)) as u64,
                "{}: RR lost {lost}",
                p.name
            );
            let rtt = p.last_rtt(p.video.mid);
            let rtt = rtt.unwrap_or_else(|| panic!("{}: no RTT from the bridge's RR", p.name));
            assert!(
                rtt < Duration::from_millis(500),
                "{}: loopback RTT {rtt:?}",
                p.name
            );
            for &r in live.iter().filter(|&&r| r != s) {
                assert!(
                    sr_ok(self, r, s),
                    "{} got no SR for {}'s video from the bridge",
                    self.peers[r].name,
                    p.name
                );
            }
        }
    }

    /// A PLI from one receiver for each live sender's video reaches that sender as
    /// `Event::KeyframeRequest`.
    fn assert_pli_reaches_sender(&mut self, live: &[usize]) {
        // Any keyframe request the bridge sent on join is older than its rate limit by now.
        self.run_for(PAST_KEYFRAME_LIMIT);
        let before: Vec<usize> = self
            .peers
            .iter()
            .map(|p| p.keyframe_requests().len())
            .collect();
        for (n, &s) in live.iter().enumerate() {
            let r = live[(n + 1) % live.len()];
            let ssrc = self.peers[s].video.ssrc;
            self.peers[r]
                .rtc
                .direct_api()
                .stream_rx(&ssrc)
                .expect("expected rx stream")
                .request_keyframe(KeyframeRequestKind::Pli);
        }
        let ok = self.run_until(Duration::from_secs(3), |c| {
            live.iter()
                .all(|&s| c.peers[s].keyframe_requests().len() > before[s])
        });
        assert!(ok, "PLI did not reach every sender: {}", self.diagnostics());
        for &s in live {
            let p = &self.peers[s];
            let new = &p.keyframe_requests()[before[s]..];
            assert!(
                new.iter()
                    .all(|&(mid, kind)| mid == p.video.mid && kind == KeyframeRequestKind::Pli),
                "{}: {new:?}",
                p.name
            );
        }
    }
}

/// The whole scenario for `n` peers that all connect.
fn full_call(n: usize, dtls: Dtls, profile: &str) {
    let mut call = Call::new(&Options {
        peers: n,
        dtls,
        wrong_fingerprint: None,
        staged: false,
    });
    let live: Vec<usize> = (0..n).collect();
    call.connect(&live);
    call.exchange_media(&live);
    call.assert_delivery(&live);
    call.assert_bridge_profile(&live, profile);
    call.assert_rtcp_reports(&live);
    call.assert_pli_reaches_sender(&live);
    let stats = call.shard.stats();
    assert_eq!(stats.failures, Default::default(), "{}", call.diagnostics());
    for p in &call.peers {
        assert!(p.error.is_none(), "{}: {:?}", p.name, p.error);
    }
}

/// Three str0m peers, str0m's own OpenSSL DTLS: every peer receives the other two, unchanged.
#[test]
fn str0m_three_peers_exchange_media_through_the_shard_aead_aes_128_gcm() {
    full_call(3, Dtls::Str0mDefault, "SRTP_AEAD_AES_128_GCM");
}

/// Two str0m peers offering only AES_CM_128_HMAC_SHA1_80 (RFC 5764 section 4.1.2): the bridge
/// falls back from its preferred GCM profile and str0m's CM SRTP interoperates with ours.
#[test]
fn str0m_two_peers_exchange_media_through_the_shard_aes_cm_128_hmac_sha1_80() {
    full_call(2, Dtls::CmOnly, "SRTP_AES128_CM_SHA1_80");
}

/// RFC 8122 section 5: the third peer's certificate does not match the fingerprint the bridge
/// was given. Its transport fails with a fingerprint error; the other two keep exchanging media.
#[test]
fn str0m_peer_with_wrong_fingerprint_is_refused_and_the_others_keep_working() {
    let mut call = Call::new(&Options {
        peers: 3,
        dtls: Dtls::Str0mDefault,
        wrong_fingerprint: Some(2),
        staged: false,
    });
    let bad = call.peers[2].transport;
    let failed = call.run_until(Duration::from_secs(10), |c| {
        matches!(c.bridge_state(bad), Some((TransportState::Failed, _)))
    });
    assert!(
        failed,
        "the mismatching transport did not fail: {}",
        call.diagnostics()
    );
    let live = [0, 1];
    call.connect(&live);
    call.exchange_media(&live);
    call.assert_delivery(&live);
    call.assert_bridge_profile(&live, "SRTP_AEAD_AES_128_GCM");

    let (state, detail) = call.bridge_state(bad).expect("state event");
    assert_eq!(state, TransportState::Failed);
    assert!(detail.contains("fingerprint"), "{detail}");
    assert!(
        !call.events.iter().any(|e| matches!(e,
            SeamEvent::TransportState { transport, state: TransportState::Connected, .. } if *transport == bad)),
        "the refused transport never connected"
    );
    let stats = call.shard.stats();
    assert_eq!(stats.failures.dtls_fingerprint, 1, "{}", call.diagnostics());
    assert_eq!(
        stats.failures.dtls_handshake + stats.failures.ice + stats.failures.consent,
        0
    );
    let t = stats
        .transports
        .iter()
        .find(|t| t.id == bad)
        .expect("failed transport stays for stats");
    assert_eq!(t.state, "failed");
    assert_eq!(t.srtp_profile, None);
    // The refused peer got no media and no keys.
    let refused = &call.peers[2];
    assert!(!refused.is_connected(), "{}: str0m connected", refused.name);
    for s in &call.peers[..2] {
        assert_eq!(refused.rtp_count(s.video.ssrc), 0);
    }
}

/// When a receiver becomes media-ready, the bridge asks every other video sender for a keyframe
/// (`Router::keyframe_requests`, rate-limited to one request per producer per 300 ms).
///
/// Regression: the rate limit once also counted requests that were never sent (to senders whose
/// transport was not media-ready yet), so a receiver joining within 300 ms of another got no keyframe.
#[test]
fn str0m_receiver_joining_gets_a_keyframe_request_sent_to_every_ready_sender() {
    let mut call = Call::new(&Options {
        peers: 3,
        dtls: Dtls::Str0mDefault,
        wrong_fingerprint: None,
        staged: true,
    });
    call.start(0);
    call.connect(&[0]);
    let first_ready = Instant::now();
    call.start(1);
    call.connect(&[0, 1]);
    let before = call.peers[1].keyframe_requests().len();
    call.start(2);
    call.connect(&[0, 1, 2]);
    let joined_after = first_ready.elapsed();
    let asked = call.run_until(Duration::from_secs(2), |c| {
        c.peers[1].keyframe_requests().len() > before
    });
    assert!(
        asked,
        "str0m-2 joined {joined_after:?} after str0m-0 was ready; str0m-1 was not asked for a keyframe \
         (requests seen by each sender: {:?})",
        call.peers
            .iter()
            .map(|p| p.keyframe_requests().len())
            .collect::<Vec<_>>()
    );
}

/// ICE restart through the shard (Colibri2 `ice-restart`): a str0m peer moves to a new address with
/// new ICE credentials; the bridge restarts the transport's ICE, learns the peer's new credentials and
/// candidate, and the call goes on over the new path with the same DTLS association and SRTP keys.
#[test]
fn str0m_peer_that_moves_is_followed_through_an_ice_restart() {
    let mut call = Call::new(&Options {
        peers: 2,
        dtls: Dtls::Str0mDefault,
        wrong_fingerprint: None,
        staged: false,
    });
    let live = [0, 1];
    call.connect(&live);
    let t = call.peers[0].transport;
    let old_addr = call.peers[0].addr;

    call.peers[0].move_to("127.0.0.3:0");
    let bridge_ice = IceCredentials::random();
    let now = Instant::now();
    call.shard.handle_command(
        now,
        Command::RestartIce {
            transport: t,
            ice: bridge_ice.clone(),
        },
    );
    call.peers[0]
        .rtc
        .direct_api()
        .set_remote_ice_credentials(IceCreds {
            ufrag: bridge_ice.ufrag.clone(),
            pass: bridge_ice.pwd.clone(),
        });
    let (peer_ice, peer_fp) = (call.peers[0].ice_credentials(), call.peers[0].fingerprint());
    let (new_addr, prio) = (call.peers[0].addr, call.peers[0].prio);
    for c in [
        Command::ConnectTransport {
            transport: t,
            remote_ice: peer_ice,
            fingerprints: vec![peer_fp],
            remote_setup: DtlsSetup::Active,
        },
        Command::AddRemoteCandidates {
            transport: t,
            candidates: vec![RemoteCandidate {
                addr: new_addr,
                priority: prio,
                kind: CandidateKind::Host,
            }],
        },
    ] {
        call.shard.handle_command(now, c);
    }
    let moved = call.run_until(Duration::from_secs(5), |c| {
        c.shard
            .stats()
            .transports
            .iter()
            .any(|s| s.id == t && s.selected_remote == Some(new_addr))
    });
    assert!(moved, "the bridge did not follow: {}", call.diagnostics());

    // Media both ways over the new path, from the keys of the first handshake.
    call.exchange_media(&live);
    call.assert_delivery(&live);
    let stats = call.shard.stats();
    assert_eq!(stats.failures, Default::default(), "{}", call.diagnostics());
    // The peer's checks under its new credentials found the transport by the new ufrag, and were
    // authenticated with the bridge's new password.
    for reason in [DropReason::StunUnroutable, DropReason::StunRejected] {
        assert_eq!(
            stats.total.drops(reason),
            0,
            "{reason:?}: {}",
            call.diagnostics()
        );
    }
    call.assert_bridge_profile(&live, "SRTP_AEAD_AES_128_GCM");
    let connected = call
        .events
        .iter()
        .filter(|e| matches!(e, SeamEvent::TransportState { transport, state: TransportState::Connected, .. } if *transport == t))
        .count();
    assert_eq!(connected, 1, "one handshake, never failed or reconnected");
    assert_ne!(old_addr, new_addr);
    for p in &call.peers {
        assert!(p.error.is_none(), "{}: {:?}", p.name, p.error);
    }
}

// ---------------------------------------------------------------------------------------------
// A str0m DTLS provider that offers only SRTP_AES128_CM_SHA1_80.
//
// str0m 0.24 has no setting for its SRTP profiles: its OpenSSL provider always offers
// AEAD_AES_256_GCM, AEAD_AES_128_GCM and AES128_CM_SHA1_80, and the DTLS server (the bridge)
// picks GCM. Its crypto is pluggable, though (`RtcConfig::set_crypto_provider`), so this test
// swaps in a DTLS provider built the way str0m-openssl builds its own (OpenSSL DTLS 1.2 over an
// in-memory datagram pipe) with the use_srtp list cut to SRTP_AES128_CM_SHA1_80. Everything else
// (SRTP ciphers, STUN HMAC, SHA-256, and all of str0m's ICE/SRTP/RTP/RTCP code) stays str0m's.
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct CmOnlyDtlsProvider;

static CM_ONLY_DTLS: CmOnlyDtlsProvider = CmOnlyDtlsProvider;

fn cm_only_crypto_provider() -> CryptoProvider {
    CryptoProvider {
        dtls_provider: &CM_ONLY_DTLS,
        ..str0m::crypto::from_feature_flags()
    }
}

/// RFC 5764 section 4.2 exporter label.
const DTLS_SRTP_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// The datagrams OpenSSL reads and writes: one read or write is one datagram.
#[derive(Default)]
struct Pipe {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Handshake {
    Init(Ssl, Pipe),
    Mid(MidHandshakeSslStream<Pipe>),
    Up(SslStream<Pipe>),
    Dead,
}

enum Pending {
    Connected,
    PeerCert(Vec<u8>),
    Keys(Vec<u8>, SrtpProfile),
}

struct CmOnlyDtls {
    hs: Handshake,
    active: Option<bool>,
    out: VecDeque<Vec<u8>>,
    pending: VecDeque<Pending>,
    now: Instant,
}

impl std::fmt::Debug for CmOnlyDtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmOnlyDtls")
            .field("active", &self.active)
            .finish()
    }
}

fn crypto_err(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Other(e.to_string())
}

impl DtlsProvider for CmOnlyDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        if dtls_version != DtlsVersion::Dtls12 {
            return Err(CryptoError::Other("DTLS 1.2 only".into()));
        }
        let mut ctx = SslContextBuilder::new(SslMethod::dtls()).map_err(crypto_err)?;
        ctx.set_cipher_list("ECDHE+AESGCM:ECDHE+AES256")
            .map_err(crypto_err)?;
        ctx.set_tlsext_use_srtp("SRTP_AES128_CM_SHA1_80")
            .map_err(crypto_err)?;
        // Like str0m: demand the peer's certificate, accept any; str0m checks the fingerprint.
        ctx.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            |_, _| true,
        );
        let key = PKey::private_key_from_der(&cert.private_key).map_err(crypto_err)?;
        let x509 = X509::from_der(&cert.certificate).map_err(crypto_err)?;
        ctx.set_private_key(&key).map_err(crypto_err)?;
        ctx.set_certificate(&x509).map_err(crypto_err)?;
        ctx.set_options(
            SslOptions::SINGLE_ECDH_USE | SslOptions::NO_DTLSV1 | SslOptions::NO_QUERY_MTU,
        );
        let ctx: SslContext = ctx.build();
        let mut ssl = Ssl::new(&ctx).map_err(crypto_err)?;
        ssl.set_mtu(mtu.unwrap_or(str0m::DATAGRAM_MTU_TARGET) as u32)
            .map_err(crypto_err)?;
        Ok(Box::new(CmOnlyDtls {
            hs: Handshake::Init(ssl, Pipe::default()),
            active: None,
            out: VecDeque::new(),
            pending: VecDeque::new(),
            now,
        }))
    }
}

impl CmOnlyDtls {
    fn pipe(&mut self) -> Option<&mut Pipe> {
        match &mut self.hs {
            Handshake::Init(_, p) => Some(p),
            Handshake::Mid(m) => Some(m.get_mut()),
            Handshake::Up(s) => Some(s.get_mut()),
            Handshake::Dead => None,
        }
    }

    fn collect(&mut self) {
        if let Some(p) = self.pipe() {
            let out: Vec<Vec<u8>> = p.outgoing.drain(..).collect();
            self.out.extend(out);
        }
    }

    /// Moves the handshake on as far as the queued datagrams allow.
    fn drive(&mut self) -> Result<(), DtlsImplError> {
        let Some(active) = self.active else {
            return Ok(());
        };
        let result = match std::mem::replace(&mut self.hs, Handshake::Dead) {
            Handshake::Init(ssl, pipe) if active || !pipe.incoming.is_empty() => {
                if active {
                    ssl.connect(pipe)
                } else {
                    ssl.accept(pipe)
                }
            }
            Handshake::Mid(mid) => mid.handshake(),
            Handshake::Up(mut stream) => {
                // Records after the handshake (a retransmitted flight, an alert): let OpenSSL
                // answer them; application data is not used.
                let mut buf = [0u8; 2048];
                for _ in 0..16 {
                    if stream.get_ref().incoming.is_empty() || stream.ssl_read(&mut buf).is_err() {
                        break;
                    }
                }
                self.hs = Handshake::Up(stream);
                self.collect();
                return Ok(());
            }
            Handshake::Dead => return Err(DtlsImplError::ConnectionClosed),
            waiting => {
                self.hs = waiting;
                return Ok(());
            }
        };
        match result {
            Ok(stream) => {
                self.on_connected(&stream)?;
                self.hs = Handshake::Up(stream);
                self.collect();
                Ok(())
            }
            Err(HandshakeError::WouldBlock(mid)) => {
                self.hs = Handshake::Mid(mid);
                self.collect();
                Ok(())
            }
            Err(HandshakeError::Failure(mut mid)) => {
                // Send the alert OpenSSL wrote, then give up.
                self.out.extend(mid.get_mut().outgoing.drain(..));
                Err(DtlsImplError::ConnectionClosed)
            }
            Err(HandshakeError::SetupFailure(_)) => Err(DtlsImplError::ConnectionClosed),
        }
    }

    fn on_connected(&mut self, stream: &SslStream<Pipe>) -> Result<(), DtlsImplError> {
        let ssl = stream.ssl();
        let der = ssl
            .peer_certificate()
            .and_then(|c| c.to_der().ok())
            .ok_or(DtlsImplError::ConnectionClosed)?;
        let id = ssl.selected_srtp_profile().map(|p| p.id());
        if id != Some(SrtpProfileId::SRTP_AES128_CM_SHA1_80) {
            return Err(DtlsImplError::ConnectionClosed);
        }
        let profile = SrtpProfile::AES128_CM_SHA1_80;
        let mut keys = vec![0u8; profile.keying_material_len()];
        ssl.export_keying_material(&mut keys, DTLS_SRTP_LABEL, None)
            .map_err(|_| DtlsImplError::ConnectionClosed)?;
        self.pending.push_back(Pending::Connected);
        self.pending.push_back(Pending::PeerCert(der));
        self.pending.push_back(Pending::Keys(keys, profile));
        Ok(())
    }
}

impl DtlsInstance for CmOnlyDtls {
    fn set_active(&mut self, active: bool) {
        self.active = Some(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        if !packet.is_empty() {
            // An empty read would be EOF to OpenSSL; str0m passes `&[]` only to start a client.
            let pipe = self.pipe().ok_or(DtlsImplError::ConnectionClosed)?;
            pipe.incoming.push_back(packet.to_vec());
        }
        self.drive()
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        if let Some(d) = self.out.pop_front() {
            if d.len() > buf.len() {
                let needed = d.len();
                self.out.push_front(d);
                return DtlsOutput::BufferTooSmall { needed };
            }
            buf[..d.len()].copy_from_slice(&d);
            return DtlsOutput::Packet(&buf[..d.len()]);
        }
        match self.pending.pop_front() {
            Some(Pending::Connected) => return DtlsOutput::Connected,
            Some(Pending::PeerCert(der)) if der.len() <= buf.len() => {
                buf[..der.len()].copy_from_slice(&der);
                return DtlsOutput::PeerCert(&buf[..der.len()]);
            }
            Some(Pending::PeerCert(der)) => {
                let needed = der.len();
                self.pending.push_front(Pending::PeerCert(der));
                return DtlsOutput::BufferTooSmall { needed };
            }
            Some(Pending::Keys(keys, profile)) => {
                return DtlsOutput::KeyingMaterial(KeyingMaterial::new(&keys), profile)
            }
            None => {}
        }
        // While handshaking, come back soon so OpenSSL can retransmit a lost flight.
        let wait = match self.hs {
            Handshake::Init(..) | Handshake::Mid(_) => Duration::from_millis(50),
            Handshake::Up(_) | Handshake::Dead => Duration::from_secs(3600),
        };
        DtlsOutput::Timeout(self.now + wait)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = now;
        match self.hs {
            Handshake::Mid(_) => self.drive(),
            _ => Ok(()),
        }
    }

    fn send_application_data(&mut self, _data: &[u8]) -> Result<(), DtlsImplError> {
        // No SCTP in these tests.
        Ok(())
    }

    fn is_active(&self) -> bool {
        self.active.unwrap_or(false)
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        matches!(self.hs, Handshake::Up(_)).then_some(ProtocolVersion::DTLS1_2)
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        if let Handshake::Up(stream) = &mut self.hs {
            let _ = stream.shutdown();
        }
        self.collect();
        Ok(())
    }
}
