//! Test harness: an in-process endpoint built from our own protocol machines in the client role
//! (ICE controlled, DTLS active), on a real loopback socket, talking to a real Shard.
#![allow(dead_code)]

pub mod simulcast;
pub mod spoof;
pub mod tcc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice_core::domain::{FeedbackSsrcs, MediaKind, RemoteCandidate, Source, TransportState};
use sluice_core::dtls::{DtlsCert, DtlsConn, DtlsEvent, DtlsRole, DtlsSetup, Fingerprint, HashAlg};
use sluice_core::ice::{Candidate, CandidateKind, IceAgent, IceCredentials};
use sluice_core::io::{classify, DatagramKind, RecvBatch, SendBatch, UdpSocket};
use sluice_core::rtcp::{parse_compound, RtcpPacket};
use sluice_core::rtp::RtpView;
use sluice_core::seam::{Command, Event};
use sluice_core::shard::{Shard, ShardConfig};
use sluice_core::srtp::{SrtpContext, SrtpProfile};
use sluice_core::stun::StunMessage;

pub struct TestPeer {
    pub sock: UdpSocket,
    pub ice: IceAgent,
    pub cert: DtlsCert,
    pub dtls: Option<DtlsConn>,
    dtls_started: bool,
    pub tx: Option<SrtpContext>,
    pub rx: Option<SrtpContext>,
    recv: RecvBatch,
    send: SendBatch,
    /// (ssrc, seq) of every RTP packet received and decrypted.
    pub rtp: Vec<(u32, u16)>,
    /// Every RTP packet received, decrypted.
    pub rtp_packets: Vec<Vec<u8>>,
    /// When each of `rtp_packets` was taken off the socket (the turn's time).
    pub rtp_arrivals: Vec<Instant>,
    pub rtcp: usize,
    /// Every decrypted RTCP compound received.
    pub rtcp_packets: Vec<Vec<u8>>,
    pub failed: Option<String>,
    /// RTP (SSRC, sequence number) lost on the way in, each once: loss on the receiver's downlink.
    pub drop_rtp: Vec<(u32, u16)>,
}

impl TestPeer {
    pub fn new() -> Self {
        Self::bind("127.0.0.1:0".parse().expect("literal"))
    }

    pub fn bind(addr: SocketAddr) -> Self {
        let sock = UdpSocket::bind(addr).expect("bind peer");
        let mut ice = IceAgent::new(false, IceCredentials::random(), 7);
        ice.add_local_candidate(Candidate::host(sock.local_addr(), 65535));
        TestPeer {
            sock,
            ice,
            cert: DtlsCert::generate().expect("cert"),
            dtls: None,
            dtls_started: false,
            tx: None,
            rx: None,
            recv: RecvBatch::new(64),
            send: SendBatch::new(64),
            rtp: Vec::new(),
            rtp_packets: Vec::new(),
            rtp_arrivals: Vec::new(),
            rtcp: 0,
            rtcp_packets: Vec::new(),
            failed: None,
            drop_rtp: Vec::new(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr()
    }

    pub fn credentials(&self) -> IceCredentials {
        self.ice.local_credentials().clone()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.cert.fingerprint(HashAlg::Sha256)
    }

    /// The bridge's transport description: we answer with a=setup:active, so we are the DTLS client.
    pub fn connect_to(
        &mut self,
        bridge: IceCredentials,
        bridge_addr: SocketAddr,
        bridge_fp: Fingerprint,
    ) {
        self.ice.set_remote_credentials(bridge);
        self.ice.add_remote_candidate(Candidate {
            addr: bridge_addr,
            tcp: false,
            kind: CandidateKind::Host,
            priority: 2_130_706_431,
            foundation: "1".into(),
        });
        self.dtls =
            Some(DtlsConn::new(&self.cert, DtlsRole::Client, vec![bridge_fp]).expect("dtls"));
    }

    pub fn is_connected(&self) -> bool {
        self.tx.is_some()
    }

    pub fn poll(&mut self, now: Instant) {
        loop {
            let n = self.sock.recv_batch(&mut self.recv).expect("recv");
            if n == 0 {
                break;
            }
            for i in 0..n {
                let local = self.sock.local_addr();
                let Some((buf, from)) = self.recv.get_mut(i) else {
                    continue;
                };
                match classify(buf) {
                    DatagramKind::Stun => {
                        if let Ok(msg) = StunMessage::parse(buf) {
                            let _ = self.ice.handle_stun(now, local, from, &msg);
                        }
                    }
                    DatagramKind::Dtls => {
                        if let Some(d) = &mut self.dtls {
                            d.handle_datagram(now, buf);
                        }
                    }
                    DatagramKind::Rtp => {
                        // SSRC and sequence number are in the clear.
                        if let (Some(seq), Some(ssrc)) = (buf.get(2..4), buf.get(8..12)) {
                            let key = (
                                u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]),
                                u16::from_be_bytes([seq[0], seq[1]]),
                            );
                            if let Some(i) = self.drop_rtp.iter().position(|d| *d == key) {
                                self.drop_rtp.remove(i);
                                continue;
                            }
                        }
                        if let Some(rx) = &mut self.rx {
                            if let Ok(len) = rx.unprotect_rtp(buf) {
                                if let Ok(v) = RtpView::parse(&buf[..len]) {
                                    self.rtp.push((v.ssrc(), v.sequence_number()));
                                    self.rtp_packets.push(buf[..len].to_vec());
                                    self.rtp_arrivals.push(now);
                                }
                            }
                        }
                    }
                    DatagramKind::Rtcp => {
                        if let Some(rx) = &mut self.rx {
                            if let Ok(len) = rx.unprotect_rtcp(buf) {
                                self.rtcp += 1;
                                self.rtcp_packets.push(buf[..len].to_vec());
                            }
                        }
                    }
                    DatagramKind::Unknown => {}
                }
            }
        }
        self.ice.handle_timeout(now);
        while let Some(t) = self.ice.poll_transmit() {
            self.send.push(&t.contents, t.destination);
        }
        while self.ice.poll_event().is_some() {}
        let selected = self.ice.selected_pair();
        if let (Some(d), Some((_, remote))) = (&mut self.dtls, selected) {
            if !self.dtls_started {
                self.dtls_started = true;
                d.start(now);
            }
            d.handle_timeout(now);
            while let Some(datagram) = d.poll_transmit() {
                self.send.push(&datagram, remote);
            }
            while let Some(ev) = d.poll_event() {
                match ev {
                    DtlsEvent::Connected(k) => {
                        let p = SrtpProfile::from_dtls_name(k.profile.name()).expect("profile");
                        self.tx =
                            Some(SrtpContext::new(p, &k.local_key, &k.local_salt).expect("tx"));
                        self.rx =
                            Some(SrtpContext::new(p, &k.remote_key, &k.remote_salt).expect("rx"));
                    }
                    DtlsEvent::Failed(e) => self.failed = Some(format!("{e:?}")),
                    DtlsEvent::Closed => self.failed = Some("closed".into()),
                }
            }
        }
        self.sock.send_batch(&mut self.send);
    }

    /// The NACKs among the RTCP received: (media SSRC, sequence numbers) each, in order.
    pub fn nacks_received(&self) -> Vec<(u32, Vec<u16>)> {
        self.rtcp_packets
            .iter()
            .flat_map(|c| parse_compound(c).filter_map(Result::ok).collect::<Vec<_>>())
            .filter_map(|p| match p {
                RtcpPacket::Nack(n) => Some((n.media_ssrc, n.lost_sequence_numbers().collect())),
                _ => None,
            })
            .collect()
    }

    /// Sends one SRTP packet with `payload_len` bytes of payload.
    pub fn send_rtp(&mut self, ssrc: u32, seq: u16, ts: u32, pt: u8, payload_len: usize) {
        let mut payload = [0u8; 1488];
        for (i, b) in payload[..payload_len].iter_mut().enumerate() {
            *b = (i as u8) ^ (seq as u8);
        }
        self.send_rtp_payload(ssrc, seq, ts, pt, &payload[..payload_len]);
    }

    /// Sends one SRTP packet with this payload.
    pub fn send_rtp_payload(&mut self, ssrc: u32, seq: u16, ts: u32, pt: u8, payload: &[u8]) {
        let Some((_, remote)) = self.ice.selected_pair() else {
            return;
        };
        let Some(tx) = &mut self.tx else { return };
        let mut buf = [0u8; 1500];
        buf[0] = 0x80;
        buf[1] = pt;
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        buf[4..8].copy_from_slice(&ts.to_be_bytes());
        buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
        buf[12..12 + payload.len()].copy_from_slice(payload);
        let n = tx
            .protect_rtp(&mut buf, 12 + payload.len())
            .expect("protect");
        self.send.push(&buf[..n], remote);
        if self.send.is_full() {
            self.sock.send_batch(&mut self.send);
        }
    }

    /// Protects and sends one plain RTP packet as it is (header extensions and all).
    pub fn send_plain_rtp(&mut self, plain: &[u8]) {
        let Some((_, remote)) = self.ice.selected_pair() else {
            return;
        };
        let Some(tx) = &mut self.tx else { return };
        let mut buf = [0u8; 1500];
        buf[..plain.len()].copy_from_slice(plain);
        let n = tx.protect_rtp(&mut buf, plain.len()).expect("protect");
        self.send.push(&buf[..n], remote);
        if self.send.is_full() {
            self.sock.send_batch(&mut self.send);
        }
    }

    /// A protected RTP packet, not sent (so a test can tamper with it or replay it).
    pub fn protected_rtp(&mut self, ssrc: u32, seq: u16, payload_len: usize) -> Vec<u8> {
        let tx = self.tx.as_mut().expect("connected");
        let mut buf = vec![0u8; 12 + payload_len + 16];
        buf[0] = 0x80;
        buf[1] = 100;
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
        let n = tx.protect_rtp(&mut buf, 12 + payload_len).expect("protect");
        buf.truncate(n);
        buf
    }

    /// Protects and sends one plain RTCP compound.
    pub fn send_rtcp(&mut self, plain: &[u8]) {
        let tx = self.tx.as_mut().expect("connected");
        let mut buf = vec![0u8; plain.len() + 32];
        buf[..plain.len()].copy_from_slice(plain);
        let n = tx
            .protect_rtcp(&mut buf, plain.len())
            .expect("protect rtcp");
        self.send_raw(&buf[..n]);
    }

    /// Sends bytes as they are to the bridge.
    pub fn send_raw(&mut self, data: &[u8]) {
        let (_, remote) = self.ice.selected_pair().expect("selected pair");
        self.send.push(data, remote);
        self.sock.send_batch(&mut self.send);
    }

    pub fn flush(&mut self) {
        self.sock.send_batch(&mut self.send);
    }
}

/// The SSRCs the bridge sends its own RTCP from in the harness's conference (as Colibri2 signals them).
pub const FEEDBACK: FeedbackSsrcs = FeedbackSsrcs {
    audio: 0x0A0D_10A0,
    video: 0x0B1D_E0B0,
};

/// A shard on 127.0.0.1 with one conference (router 1) and one transport per peer (ids 10, 11, ...),
/// each peer connected and sending the SSRCs it is given.
pub struct Conference {
    pub shard: Shard,
    pub peers: Vec<TestPeer>,
    pub events: Vec<Event>,
}

impl Conference {
    /// The stats of transport `id`, from a fresh snapshot.
    pub fn transport_stats(&self, id: u64) -> sluice_core::stats::TransportStats {
        self.shard
            .stats()
            .transports
            .into_iter()
            .find(|t| t.id == id)
            .unwrap_or_else(|| panic!("transport {id} in the stats"))
    }

    pub fn new(n: usize) -> Self {
        Self::on(n, "127.0.0.1:0".parse().expect("literal"))
    }

    /// A conference whose shard and peers all use `bind`'s address family (e.g. `[::1]:0`).
    pub fn on(n: usize, bind: SocketAddr) -> Self {
        Self::with_config(
            n,
            ShardConfig {
                bind: vec![bind],
                ..Default::default()
            },
        )
    }

    /// A conference on a shard made with `config` (its first bind address is the peers' family).
    pub fn with_config(n: usize, config: ShardConfig) -> Self {
        let bind = config.bind[0];
        let cert = DtlsCert::generate().expect("cert");
        let bridge_fp = cert.fingerprint(HashAlg::Sha256);
        let mut shard = Shard::new(&config, cert).expect("shard");
        let bridge_addr = shard.local_addrs()[0];
        let now = Instant::now();
        shard.handle_command(
            now,
            Command::CreateRouter {
                router: 1,
                feedback: FEEDBACK,
            },
        );
        let mut peers = Vec::new();
        for i in 0..n {
            let mut peer = TestPeer::bind(SocketAddr::new(bind.ip(), 0));
            let creds = IceCredentials::random();
            let id = 10 + i as u64;
            shard.handle_command(
                now,
                Command::CreateTransport {
                    router: 1,
                    transport: id,
                    ice: creds.clone(),
                    controlling: true,
                },
            );
            shard.handle_command(
                now,
                Command::ConnectTransport {
                    transport: id,
                    remote_ice: peer.credentials(),
                    fingerprints: vec![peer.fingerprint()],
                    remote_setup: DtlsSetup::Active,
                },
            );
            shard.handle_command(
                now,
                Command::AddRemoteCandidates {
                    transport: id,
                    candidates: vec![RemoteCandidate {
                        addr: peer.addr(),
                        priority: 2_130_706_431,
                        kind: CandidateKind::Host,
                    }],
                },
            );
            peer.connect_to(creds, bridge_addr, bridge_fp.clone());
            peers.push(peer);
        }
        Conference {
            shard,
            peers,
            events: Vec::new(),
        }
    }

    /// One Source of one SSRC per entry.
    pub fn set_sources(&mut self, peer: usize, ssrcs: &[(u32, MediaKind)]) {
        let sources = ssrcs
            .iter()
            .map(|&(ssrc, kind)| Source::single(ssrc, kind))
            .collect();
        self.set_grouped_sources(peer, sources);
    }

    /// Sources as signalled, with their groups.
    pub fn set_grouped_sources(&mut self, peer: usize, sources: Vec<Source>) {
        self.shard.handle_command(
            Instant::now(),
            Command::SetSources {
                transport: 10 + peer as u64,
                sources,
            },
        );
    }

    /// One turn of everything: shard I/O and timers, every peer.
    pub fn turn(&mut self) {
        let now = Instant::now();
        self.shard.poll_io(now);
        self.shard.handle_timeouts(now);
        self.shard.take_events(&mut self.events);
        for p in &mut self.peers {
            p.poll(now);
        }
    }

    /// Runs turns until `done` or the deadline; returns whether `done` became true.
    pub fn run_until(&mut self, timeout: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.turn();
            if done(self) {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    pub fn connected_transports(&self) -> usize {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::TransportState {
                        state: TransportState::Connected,
                        ..
                    }
                )
            })
            .count()
    }

    pub fn connect_all(&mut self) {
        let n = self.peers.len();
        let ok = self.run_until(Duration::from_secs(10), |c| {
            c.peers.iter().all(|p| p.is_connected()) && c.connected_transports() >= n
        });
        let failed: Vec<_> = self.peers.iter().filter_map(|p| p.failed.clone()).collect();
        assert!(
            ok,
            "peers did not connect: failures {failed:?}, events {:?}",
            self.events
        );
    }
}
