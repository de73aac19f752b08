//! Interop: our ICE agent against str0m's (an independent sans-IO implementation), in memory,
//! with a fake clock. Both roles.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use sluice_core::ice::{
    Candidate, CandidateKind, IceAgent, IceCredentials, IceDrop, IceEvent, IceState,
};
use sluice_core::stun::StunMessage;
use str0m::crypto::Sha1HmacProvider;
use str0m::ice::{
    IceAgent as PeerAgent, IceAgentEvent, IceCreds, StunMessage as PeerStun, StunPacket,
};
use str0m::net::Protocol;
use str0m::IceConnectionState;

/// str0m is built without its own SHA-1; give it OpenSSL's.
#[derive(Debug)]
struct OpensslHmac;

impl Sha1HmacProvider for OpensslHmac {
    fn sha1_hmac(&self, key: &[u8], payloads: &[&[u8]]) -> [u8; 20] {
        let pkey = PKey::hmac(key).unwrap();
        let mut signer = Signer::new(MessageDigest::sha1(), &pkey).unwrap();
        for p in payloads {
            signer.update(p).unwrap();
        }
        let mut out = [0u8; 20];
        signer.sign(&mut out).unwrap();
        out
    }
}

static HMAC: OpensslHmac = OpensslHmac;

struct Pair {
    now: Instant,
    ours: IceAgent,
    peer: PeerAgent,
    ours_addr: SocketAddr,
    peer_addr: SocketAddr,
    /// (deliver at, to ours?, source, destination, bytes)
    in_flight: Vec<(Instant, bool, SocketAddr, SocketAddr, Vec<u8>)>,
    ours_events: Vec<(Instant, IceEvent)>,
    peer_events: Vec<(Instant, IceAgentEvent)>,
    ours_drops: Vec<IceDrop>,
    peer_rejected: usize,
    delivering: bool,
}

const LATENCY: Duration = Duration::from_millis(15);

impl Pair {
    fn new(ours_controlling: bool, ours_addr: &str, peer_addr: &str) -> Self {
        let ours_addr: SocketAddr = ours_addr.parse().unwrap();
        let peer_addr: SocketAddr = peer_addr.parse().unwrap();
        let mut ours = IceAgent::new(
            ours_controlling,
            IceCredentials::random(),
            0x0123_4567_89ab_cdef,
        );
        ours.add_local_candidate(Candidate::host(ours_addr, 65535));

        let peer_creds = IceCreds::new();
        let mut peer = PeerAgent::with_hmac(peer_creds.clone(), &HMAC);
        peer.set_controlling(!ours_controlling);
        let peer_host = str0m::Candidate::host(peer_addr, "udp").unwrap();
        let peer_prio = peer_host.prio();
        peer.add_local_candidate(peer_host);

        // Signalling, as SDP would carry it.
        let ours_c = &ours.local_candidates()[0];
        let sdp = format!(
            "candidate:{} 1 udp {} {} {} typ host",
            ours_c.foundation,
            ours_c.priority,
            ours_addr.ip(),
            ours_addr.port()
        );
        peer.add_remote_candidate(str0m::Candidate::from_sdp_string(&sdp).unwrap());
        peer.set_remote_credentials(IceCreds {
            ufrag: ours.local_credentials().ufrag.clone(),
            pass: ours.local_credentials().pwd.clone(),
        });
        ours.set_remote_credentials(IceCredentials {
            ufrag: peer_creds.ufrag,
            pwd: peer_creds.pass,
        });
        ours.add_remote_candidate(Candidate::new(
            peer_addr,
            CandidateKind::Host,
            peer_prio,
            "str0m",
        ));

        let now = Instant::now();
        ours.handle_timeout(now);
        peer.handle_timeout(now);
        Pair {
            now,
            ours,
            peer,
            ours_addr,
            peer_addr,
            in_flight: Vec::new(),
            ours_events: Vec::new(),
            peer_events: Vec::new(),
            ours_drops: Vec::new(),
            peer_rejected: 0,
            delivering: true,
        }
    }

    fn pump(&mut self) {
        let at = self.now + LATENCY;
        while let Some(t) = self.ours.poll_transmit() {
            assert_eq!(t.source, self.ours_addr);
            self.in_flight
                .push((at, false, t.source, t.destination, t.contents));
        }
        while let Some(t) = self.peer.poll_transmit() {
            self.in_flight
                .push((at, true, t.source, t.destination, t.contents.into()));
        }
        while let Some(e) = self.ours.poll_event() {
            self.ours_events.push((self.now, e));
        }
        while let Some(e) = self.peer.poll_event() {
            self.peer_events.push((self.now, e));
        }
    }

    fn step(&mut self, limit: Instant) -> bool {
        self.pump();
        let next = self
            .in_flight
            .iter()
            .map(|p| p.0)
            .chain(self.ours.poll_timeout())
            .chain(self.peer.poll_timeout())
            .min();
        match next {
            Some(t) if t <= limit => self.now = self.now.max(t),
            _ => {
                self.now = limit;
                return false;
            }
        }
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|p| p.0 <= now);
        self.in_flight = later;
        for (_, to_ours, source, destination, bytes) in due {
            if !self.delivering {
                continue;
            }
            if to_ours {
                assert_eq!(destination, self.ours_addr);
                let msg = StunMessage::parse(&bytes).expect("str0m sends valid STUN");
                if let Err(d) = self.ours.handle_stun(now, destination, source, &msg) {
                    self.ours_drops.push(d);
                }
            } else {
                if destination != self.peer_addr {
                    continue; // an address the peer no longer has
                }
                let message = PeerStun::parse(&bytes).expect("str0m parses our STUN");
                let accepted = self.peer.handle_packet(
                    now,
                    StunPacket {
                        proto: Protocol::Udp,
                        source,
                        destination,
                        message,
                    },
                );
                if !accepted {
                    self.peer_rejected += 1;
                }
            }
        }
        if self.ours.poll_timeout().is_some_and(|t| t <= now) {
            self.ours.handle_timeout(now);
        }
        if self.peer.poll_timeout().is_some_and(|t| t <= now) {
            self.peer.handle_timeout(now);
        }
        self.pump();
        true
    }

    fn run_until(&mut self, d: Duration, cond: impl Fn(&Pair) -> bool) -> bool {
        let limit = self.now + d;
        while !cond(self) {
            if !self.step(limit) {
                return cond(self);
            }
        }
        true
    }

    fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
    }

    fn peer_connected(&self) -> bool {
        matches!(
            self.peer.state(),
            IceConnectionState::Connected | IceConnectionState::Completed
        )
    }

    fn peer_nominated(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.peer_events.iter().rev().find_map(|(_, e)| match e {
            IceAgentEvent::NominatedSend {
                source,
                destination,
                ..
            } => Some((*source, *destination)),
            _ => None,
        })
    }

    /// Every state our agent went through.
    fn our_states(&self) -> Vec<IceState> {
        self.ours_events
            .iter()
            .filter_map(|(_, e)| match e {
                IceEvent::StateChanged(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    fn both_connected(&self) -> bool {
        self.ours.state() == IceState::Connected
            && self.peer_connected()
            && self.peer_nominated().is_some()
    }
}

fn connect_and_hold(ours_controlling: bool, ours_addr: &str, peer_addr: &str) {
    let mut p = Pair::new(ours_controlling, ours_addr, peer_addr);
    assert!(
        p.run_until(Duration::from_secs(5), Pair::both_connected),
        "ours {:?}, str0m {:?}",
        p.ours.state(),
        p.peer.state()
    );
    assert_eq!(p.ours.selected_pair(), Some((p.ours_addr, p.peer_addr)));
    assert_eq!(p.peer_nominated(), Some((p.peer_addr, p.ours_addr)));
    assert_eq!(p.ours.controlling(), ours_controlling, "no role change");

    // Two minutes of consent / keepalive traffic both ways: nobody drops anything, nobody disconnects.
    p.run_for(Duration::from_secs(120));
    assert_eq!(p.ours.state(), IceState::Connected);
    assert!(p.peer_connected());
    assert_eq!(p.our_states(), [IceState::Checking, IceState::Connected]);
    assert!(p.ours_drops.is_empty(), "we dropped: {:?}", p.ours_drops);
    assert_eq!(p.peer_rejected, 0, "str0m rejected some of our messages");

    // Silence the peer: our consent expires, 30 s after its last answer.
    p.delivering = false;
    let cut = p.now;
    p.run_for(Duration::from_secs(40));
    assert_eq!(p.ours.state(), IceState::Failed);
    let failed = p
        .ours_events
        .iter()
        .find(|(_, e)| *e == IceEvent::StateChanged(IceState::Failed))
        .map(|(t, _)| *t)
        .unwrap();
    assert!(failed - cut > Duration::from_secs(23) && failed - cut <= Duration::from_secs(30));
}

#[test]
fn ours_controlling_str0m_controlled_ipv4() {
    connect_and_hold(true, "10.0.0.1:10000", "10.0.0.2:5000");
}

#[test]
fn ours_controlled_str0m_controlling_ipv4() {
    connect_and_hold(false, "10.0.0.1:10000", "10.0.0.2:5000");
}

#[test]
fn ours_controlling_str0m_controlled_ipv6() {
    connect_and_hold(true, "[2001:db8::1]:10000", "[2001:db8::2]:5000");
}

#[test]
fn ours_controlling_restarts_ice_and_follows_str0m_to_its_new_address() {
    let mut p = Pair::new(true, "10.0.0.1:10000", "10.0.0.2:5000");
    assert!(p.run_until(Duration::from_secs(5), Pair::both_connected));
    p.run_for(Duration::from_secs(10));

    // str0m's network changes: a new address and an ICE restart of its own; the bridge is asked
    // to restart too, and the new credentials and candidates cross over (as Jingle would carry them).
    let new_addr: SocketAddr = "10.0.0.3:5001".parse().unwrap();
    let peer_creds = IceCreds::new();
    p.peer.ice_restart(peer_creds.clone(), false);
    let host = str0m::Candidate::host(new_addr, "udp").unwrap();
    let prio = host.prio();
    p.peer.add_local_candidate(host);
    p.peer_addr = new_addr;
    p.ours.restart(IceCredentials::random());
    assert_eq!(p.ours.generation(), 1);
    let ours_c = &p.ours.local_candidates()[0];
    let sdp = format!(
        "candidate:{} 1 udp {} {} {} typ host",
        ours_c.foundation,
        ours_c.priority,
        p.ours_addr.ip(),
        p.ours_addr.port()
    );
    p.peer
        .add_remote_candidate(str0m::Candidate::from_sdp_string(&sdp).unwrap());
    p.peer.set_remote_credentials(IceCreds {
        ufrag: p.ours.local_credentials().ufrag.clone(),
        pass: p.ours.local_credentials().pwd.clone(),
    });
    p.ours.set_remote_credentials(IceCredentials {
        ufrag: peer_creds.ufrag,
        pwd: peer_creds.pass,
    });
    p.ours.add_remote_candidate(Candidate::new(
        new_addr,
        CandidateKind::Host,
        prio,
        "str0m2",
    ));
    let (now, ours_addr) = (p.now, p.ours_addr);
    p.ours.handle_timeout(now);
    p.peer.handle_timeout(now);
    let moved = p.now;
    assert!(
        p.run_until(Duration::from_secs(5), |p| {
            p.ours.selected_pair() == Some((ours_addr, new_addr))
                && p.peer_nominated() == Some((new_addr, ours_addr))
        }),
        "ours {:?} {:?}, str0m {:?}",
        p.ours.state(),
        p.ours.selected_pair(),
        p.peer.state()
    );
    assert!(
        p.now - moved < Duration::from_secs(1),
        "{:?}",
        p.now - moved
    );

    // A minute on the new path: consent holds, and we never went through Disconnected.
    p.run_for(Duration::from_secs(60));
    assert_eq!(p.ours.state(), IceState::Connected);
    assert!(p.peer_connected());
    assert_eq!(p.our_states(), [IceState::Checking, IceState::Connected]);
    assert!(
        !p.ours_drops
            .iter()
            .any(|d| matches!(d, IceDrop::BadUsername | IceDrop::BadIntegrity)),
        "{:?}",
        p.ours_drops
    );
}
