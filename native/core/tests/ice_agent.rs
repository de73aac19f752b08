//! ICE agent tests: agents wired through an in-memory network driven by a fake clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice_core::ice::{
    Candidate, CandidateKind, IceAgent, IceConfig, IceCredentials, IceDrop, IceEvent, IceState,
    Transmit,
};
use sluice_core::stun::{StunClass, StunMessage, StunWriter, BINDING};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Node {
    agent: IceAgent,
    addrs: Vec<SocketAddr>,
    events: Vec<(Instant, IceEvent)>,
    /// When a STUN success response was delivered to this node.
    responses_in: Vec<Instant>,
    drops: Vec<IceDrop>,
    /// Everything this node sent, when.
    sent: Vec<(Instant, Transmit)>,
}

/// A network of agents. Packets take `latency`; `dead` addresses drop everything to or from them;
/// `nat` maps (internal, external) so the peer sees `external` and cannot reach `internal`.
struct Net {
    start: Instant,
    now: Instant,
    nodes: Vec<Node>,
    in_flight: Vec<(Instant, Transmit)>,
    latency: Duration,
    dead: Vec<SocketAddr>,
    nat: Vec<(SocketAddr, SocketAddr)>,
    delivering: bool,
}

impl Net {
    fn new() -> Self {
        let start = Instant::now();
        Net {
            start,
            now: start,
            nodes: Vec::new(),
            in_flight: Vec::new(),
            latency: Duration::from_millis(10),
            dead: Vec::new(),
            nat: Vec::new(),
            delivering: true,
        }
    }

    fn add(&mut self, agent: IceAgent) -> usize {
        let addrs = agent.local_candidates().iter().map(|c| c.addr).collect();
        self.nodes.push(Node {
            agent,
            addrs,
            events: Vec::new(),
            responses_in: Vec::new(),
            drops: Vec::new(),
            sent: Vec::new(),
        });
        self.nodes.len() - 1
    }

    fn agent(&mut self, i: usize) -> &mut IceAgent {
        &mut self.nodes[i].agent
    }

    /// What the owner must do after configuring: one handle_timeout.
    fn kick(&mut self) {
        let now = self.now;
        for n in &mut self.nodes {
            n.agent.handle_timeout(now);
        }
        self.pump();
    }

    fn pump(&mut self) {
        let (now, latency) = (self.now, self.latency);
        for n in &mut self.nodes {
            while let Some(t) = n.agent.poll_transmit() {
                n.sent.push((now, t.clone()));
                self.in_flight.push((now + latency, t));
            }
            while let Some(e) = n.agent.poll_event() {
                n.events.push((now, e));
            }
        }
    }

    fn deliver(&mut self, t: Transmit) {
        if !self.delivering || self.dead.contains(&t.source) || self.dead.contains(&t.destination) {
            return;
        }
        let source = self
            .nat
            .iter()
            .find(|(i, _)| *i == t.source)
            .map_or(t.source, |(_, e)| *e);
        let dest = match self.nat.iter().find(|(_, e)| *e == t.destination) {
            Some((i, _)) => *i,
            None if self.nat.iter().any(|(i, _)| *i == t.destination) => return,
            None => t.destination,
        };
        let Some(n) = self.nodes.iter_mut().find(|n| n.addrs.contains(&dest)) else {
            return;
        };
        let msg = StunMessage::parse(&t.contents).expect("agents send valid STUN");
        if msg.class() == StunClass::SuccessResponse {
            n.responses_in.push(self.now);
        }
        if let Err(d) = n.agent.handle_stun(self.now, dest, source, &msg) {
            n.drops.push(d);
        }
    }

    /// Advances to the next thing that happens, up to `limit`. False when nothing happens before it.
    fn step(&mut self, limit: Instant) -> bool {
        self.pump();
        let next = self
            .in_flight
            .iter()
            .map(|(t, _)| *t)
            .chain(self.nodes.iter().filter_map(|n| n.agent.poll_timeout()))
            .min();
        match next {
            Some(t) if t <= limit => self.now = self.now.max(t),
            _ => {
                self.now = limit;
                return false;
            }
        }
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|(t, _)| *t <= now);
        self.in_flight = later;
        for (_, t) in due {
            self.deliver(t);
        }
        for n in &mut self.nodes {
            if n.agent.poll_timeout().is_some_and(|t| t <= now) {
                n.agent.handle_timeout(now);
            }
        }
        self.pump();
        true
    }

    fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        let mut guard = 0;
        while self.step(limit) {
            guard += 1;
            assert!(guard < 2_000_000, "busy loop: poll_timeout never moves on");
        }
        self.pump();
    }

    /// Runs until `cond` holds or `d` passes; returns whether it held.
    fn run_until(&mut self, d: Duration, cond: impl Fn(&Net) -> bool) -> bool {
        let limit = self.now + d;
        let mut guard = 0;
        while !cond(self) {
            if !self.step(limit) {
                return cond(self);
            }
            guard += 1;
            assert!(guard < 2_000_000, "busy loop: poll_timeout never moves on");
        }
        true
    }

    fn state(&self, i: usize) -> IceState {
        self.nodes[i].agent.state()
    }

    fn all_connected(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.agent.state() == IceState::Connected)
    }

    fn since_start(&self, t: Instant) -> Duration {
        t - self.start
    }

    fn event_time(&self, i: usize, want: &IceEvent) -> Option<Instant> {
        self.nodes[i]
            .events
            .iter()
            .find(|(_, e)| e == want)
            .map(|(t, _)| *t)
    }

    fn states(&self, i: usize) -> Vec<IceState> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                IceEvent::StateChanged(s) => Some(*s),
                _ => None,
            })
            .collect()
    }
}

fn agent(controlling: bool, tie_breaker: u64, addrs: &[&str], config: &IceConfig) -> IceAgent {
    let mut a = IceAgent::with_config(
        controlling,
        IceCredentials::random(),
        tie_breaker,
        config.clone(),
    );
    for (i, s) in addrs.iter().enumerate() {
        a.add_local_candidate(Candidate::host(sa(s), 65535 - i as u16));
    }
    a
}

/// Exchanges credentials and all candidates between two agents.
fn introduce(a: &mut IceAgent, b: &mut IceAgent) {
    a.set_remote_credentials(b.local_credentials().clone());
    b.set_remote_credentials(a.local_credentials().clone());
    for c in b.local_candidates().to_vec() {
        a.add_remote_candidate(c);
    }
    for c in a.local_candidates().to_vec() {
        b.add_remote_candidate(c);
    }
}

/// A controlling bridge-like agent and a controlled peer, introduced, in a network.
fn two(a_addrs: &[&str], b_addrs: &[&str]) -> Net {
    let cfg = IceConfig::default();
    let mut a = agent(true, 1000, a_addrs, &cfg);
    let mut b = agent(false, 2000, b_addrs, &cfg);
    introduce(&mut a, &mut b);
    let mut net = Net::new();
    net.add(a);
    net.add(b);
    net.kick();
    net
}

fn assert_mirrored(net: &Net) -> (SocketAddr, SocketAddr) {
    let a = net.nodes[0]
        .agent
        .selected_pair()
        .expect("a selected a pair");
    let b = net.nodes[1]
        .agent
        .selected_pair()
        .expect("b selected a pair");
    assert_eq!(a, (b.1, b.0), "both sides use the same pair");
    a
}

#[test]
fn controlling_and_controlled_connect_ipv4() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    let pair = assert_mirrored(&net);
    assert_eq!(pair, (sa("10.0.0.1:10000"), sa("10.0.0.2:5000")));
    assert_eq!(net.states(0), [IceState::Checking, IceState::Connected]);
    assert_eq!(net.states(1), [IceState::Checking, IceState::Connected]);
    let selected = IceEvent::SelectedPair {
        local: pair.0,
        remote: pair.1,
    };
    assert!(net.event_time(0, &selected).is_some());
    // One pair, nothing pending: nominated at once, connected within a few round trips.
    let t = net
        .event_time(0, &IceEvent::StateChanged(IceState::Connected))
        .unwrap();
    assert!(
        net.since_start(t) < Duration::from_millis(200),
        "took {:?}",
        net.since_start(t)
    );
    assert!(net.nodes[0].agent.controlling());
    assert!(!net.nodes[1].agent.controlling());
    assert!(
        net.nodes.iter().all(|n| n.drops.is_empty()),
        "no drops on a clean network"
    );
}

#[test]
fn controlling_and_controlled_connect_ipv6() {
    let mut net = two(&["[2001:db8::1]:10000"], &["[2001:db8::2]:5000"]);
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    let pair = assert_mirrored(&net);
    assert_eq!(pair, (sa("[2001:db8::1]:10000"), sa("[2001:db8::2]:5000")));
}

#[test]
fn dual_stack_pairs_only_matching_families() {
    let mut net = two(
        &["10.0.0.1:10000", "[2001:db8::1]:10000"],
        &["[2001:db8::2]:5000", "10.0.0.2:5000"],
    );
    assert!(net.run_until(Duration::from_secs(3), Net::all_connected));
    let (l, r) = assert_mirrored(&net);
    assert_eq!(l.is_ipv4(), r.is_ipv4());
}

#[test]
fn one_unreachable_candidate_is_skipped() {
    // The peer's best candidate is a black hole; the agent nominates the working one after the
    // nomination delay instead of waiting for the dead pair's retransmissions to run out.
    let mut net = two(
        &["10.0.0.1:10000"],
        &["192.168.1.7:5000", "10.0.0.2:5001", "10.0.0.2:5002"],
    );
    net.dead.push(sa("192.168.1.7:5000"));
    assert!(net.run_until(Duration::from_secs(3), Net::all_connected));
    let (_, remote) = assert_mirrored(&net);
    assert_eq!(remote, sa("10.0.0.2:5001"), "best reachable candidate");
    let t = net
        .event_time(0, &IceEvent::StateChanged(IceState::Connected))
        .unwrap();
    let took = net.since_start(t);
    assert!(
        took >= IceConfig::default().nomination_delay && took < Duration::from_secs(1),
        "took {took:?}"
    );
    // And it stays up while the dead pair's transaction times out in the background.
    net.run_for(Duration::from_secs(20));
    assert_eq!(net.state(0), IceState::Connected);
    assert_eq!(net.state(1), IceState::Connected);
}

#[test]
fn all_pairs_failing_fails_after_grace() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    net.dead.push(sa("10.0.0.2:5000"));
    net.run_for(Duration::from_secs(30));
    let t = net
        .event_time(0, &IceEvent::StateChanged(IceState::Failed))
        .expect("a fails");
    // 7 requests: 0.25 + 0.5 + 1 + 2 + 2 + 2 + 2 (final wait) = 9.75 s, plus the 2 s grace.
    assert_eq!(net.since_start(t), Duration::from_millis(9750 + 2000));
    assert_eq!(net.nodes[0].agent.poll_timeout(), None);
    assert_eq!(net.nodes[0].agent.selected_pair(), None);
}

#[test]
fn no_candidates_fails_after_timeout() {
    let mut a = agent(true, 1, &["10.0.0.1:10000"], &IceConfig::default());
    a.set_remote_credentials(IceCredentials::random());
    let t0 = Instant::now();
    a.handle_timeout(t0);
    assert_eq!(a.state(), IceState::New);
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    a.handle_timeout(t0 + Duration::from_secs(9));
    assert_eq!(a.state(), IceState::New);
    a.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(a.state(), IceState::Failed);
    assert_eq!(
        a.poll_event(),
        Some(IceEvent::StateChanged(IceState::Failed))
    );
}

#[test]
fn trickled_candidates_start_and_keep_the_session() {
    let cfg = IceConfig::default();
    let mut a = agent(true, 1, &["10.0.0.1:10000"], &cfg);
    let mut b = agent(false, 2, &["10.0.0.2:5000"], &cfg);
    a.set_remote_credentials(b.local_credentials().clone());
    b.set_remote_credentials(a.local_credentials().clone());
    let mut net = Net::new();
    net.add(a);
    net.add(b);
    net.kick();
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.state(0), IceState::New, "no candidates yet");
    let bc = net.nodes[1].agent.local_candidates()[0].clone();
    net.agent(0).add_remote_candidate(bc);
    net.kick();
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    let before = assert_mirrored(&net);
    // A late candidate (even one that goes nowhere) does not disturb the selected pair.
    net.agent(0).add_remote_candidate(Candidate::new(
        sa("10.9.9.9:9"),
        CandidateKind::ServerReflexive,
        1_000,
        "late",
    ));
    net.kick();
    net.run_for(Duration::from_secs(15));
    assert_eq!(assert_mirrored(&net), before);
    assert_eq!(net.states(0), [IceState::Checking, IceState::Connected]);
}

#[test]
fn role_conflict_both_controlling_resolves() {
    let cfg = IceConfig::default();
    let mut a = agent(true, 1, &["10.0.0.1:10000"], &cfg);
    let mut b = agent(true, 2, &["10.0.0.2:5000"], &cfg);
    introduce(&mut a, &mut b);
    let mut net = Net::new();
    net.add(a);
    net.add(b);
    net.kick();
    assert!(net.run_until(Duration::from_secs(3), Net::all_connected));
    assert_mirrored(&net);
    // The larger tie-breaker keeps controlling (RFC 8445 section 7.3.1.1).
    assert!(!net.nodes[0].agent.controlling());
    assert!(net.nodes[1].agent.controlling());
}

#[test]
fn role_conflict_both_controlled_resolves() {
    let cfg = IceConfig::default();
    let mut a = agent(false, 1, &["10.0.0.1:10000"], &cfg);
    let mut b = agent(false, 2, &["10.0.0.2:5000"], &cfg);
    introduce(&mut a, &mut b);
    let mut net = Net::new();
    net.add(a);
    net.add(b);
    net.kick();
    assert!(net.run_until(Duration::from_secs(3), Net::all_connected));
    assert_mirrored(&net);
    assert!(!net.nodes[0].agent.controlling());
    assert!(net.nodes[1].agent.controlling());
}

#[test]
fn role_conflict_is_resolved_from_either_start_order() {
    // Same as above with the tie-breakers the other way round and the peer kicked first.
    for (a_ctl, b_ctl) in [(true, true), (false, false)] {
        let cfg = IceConfig::default();
        let mut a = agent(a_ctl, u64::MAX, &["10.0.0.1:10000"], &cfg);
        let mut b = agent(b_ctl, 7, &["10.0.0.2:5000"], &cfg);
        introduce(&mut a, &mut b);
        let mut net = Net::new();
        net.add(b);
        net.add(a);
        net.kick();
        assert!(net.run_until(Duration::from_secs(3), Net::all_connected));
        assert_mirrored(&net);
        assert!(net.nodes[1].agent.controlling(), "u64::MAX wins");
        assert!(!net.nodes[0].agent.controlling());
    }
}

#[test]
fn peer_reflexive_candidate_learned_behind_nat() {
    // The peer sits behind a NAT: its host candidate is unreachable and its checks arrive from
    // the NAT's external address, which the bridge learns as peer-reflexive (RFC 8445 7.3.1.3).
    let mut net = two(&["203.0.113.1:10000"], &["192.168.1.7:5000"]);
    net.nat
        .push((sa("192.168.1.7:5000"), sa("198.51.100.9:41000")));
    assert!(net.run_until(Duration::from_secs(3), Net::all_connected));
    let a = net.nodes[0].agent.selected_pair().unwrap();
    assert_eq!(a, (sa("203.0.113.1:10000"), sa("198.51.100.9:41000")));
    let b = net.nodes[1].agent.selected_pair().unwrap();
    assert_eq!(b, (sa("192.168.1.7:5000"), sa("203.0.113.1:10000")));
    let prflx = net.nodes[0]
        .agent
        .remote_candidates()
        .iter()
        .find(|c| c.addr == a.1)
        .expect("learned");
    assert_eq!(prflx.kind, CandidateKind::PeerReflexive);
    // 110 << 24: the peer claimed a peer-reflexive priority in PRIORITY.
    assert_eq!(prflx.priority >> 24, 110);
}

#[test]
fn prflx_replaced_by_signalled_candidate() {
    let mut net = two(&["203.0.113.1:10000"], &["192.168.1.7:5000"]);
    net.nat
        .push((sa("192.168.1.7:5000"), sa("198.51.100.9:41000")));
    assert!(net.run_until(Duration::from_secs(3), Net::all_connected));
    // The srflx candidate arrives late by trickle with the same address.
    net.agent(0).add_remote_candidate(Candidate::new(
        sa("198.51.100.9:41000"),
        CandidateKind::ServerReflexive,
        100 << 24,
        "srflx1",
    ));
    net.kick();
    let c = net.nodes[0]
        .agent
        .remote_candidates()
        .iter()
        .find(|c| c.addr == sa("198.51.100.9:41000"))
        .unwrap();
    assert_eq!(c.kind, CandidateKind::ServerReflexive);
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.state(0), IceState::Connected);
}

#[test]
fn consent_expires_30s_after_last_response() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    net.run_for(Duration::from_secs(20));
    assert!(net.all_connected());
    let cut = net.now;
    net.delivering = false;
    net.run_for(Duration::from_secs(45));
    for i in 0..2 {
        let last_ok = *net.nodes[i].responses_in.last().unwrap();
        assert!(last_ok <= cut);
        let disconnected = net
            .event_time(i, &IceEvent::StateChanged(IceState::Disconnected))
            .unwrap();
        let failed = net
            .event_time(i, &IceEvent::StateChanged(IceState::Failed))
            .unwrap();
        assert_eq!(disconnected, last_ok + Duration::from_secs(8));
        assert_eq!(
            failed,
            last_ok + Duration::from_secs(30),
            "fails exactly when consent expires"
        );
        // The last response came at most one consent interval (6 s) plus a round trip before the cut.
        assert!(
            failed - cut >= Duration::from_secs(23),
            "not before ~30 s: {:?}",
            failed - cut
        );
        assert!(failed - cut <= Duration::from_secs(30));
        assert_eq!(
            net.states(i),
            [
                IceState::Checking,
                IceState::Connected,
                IceState::Disconnected,
                IceState::Failed
            ]
        );
        // Final: no timers, no pair, and checks are no longer answered.
        assert_eq!(net.nodes[i].agent.poll_timeout(), None);
        assert_eq!(net.nodes[i].agent.selected_pair(), None);
    }
}

#[test]
fn consent_recovers_from_a_short_outage() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    net.delivering = false;
    net.run_for(Duration::from_secs(15));
    assert_eq!(net.state(0), IceState::Disconnected);
    net.delivering = true;
    assert!(net.run_until(Duration::from_secs(8), Net::all_connected));
    net.run_for(Duration::from_secs(60));
    assert!(net.all_connected());
}

#[test]
fn consent_keeps_connection_for_five_minutes() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    let connected_at = net.now;
    net.run_for(Duration::from_secs(300));
    for i in 0..2 {
        assert_eq!(
            net.states(i),
            [IceState::Checking, IceState::Connected],
            "node {i}"
        );
        // Consent responses every 4-6 s.
        let n = net.nodes[i]
            .responses_in
            .iter()
            .filter(|t| **t > connected_at)
            .count();
        assert!(
            (50..=76).contains(&n),
            "node {i}: {n} consent responses in 300 s"
        );
        let gaps = net.nodes[i].responses_in.windows(2).map(|w| w[1] - w[0]);
        assert!(
            gaps.clone().all(|g| g <= Duration::from_millis(6100)),
            "a gap over 6 s"
        );
    }
    assert_mirrored(&net);
}

/// A hand-built check towards `agent` as a peer with `peer` credentials would send it.
fn check(
    agent_creds: &IceCredentials,
    peer: &IceCredentials,
    key: &[u8],
    controlling: bool,
    use_candidate: bool,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let username = format!("{}:{}", agent_creds.ufrag, peer.ufrag);
    let mut w = StunWriter::new(&mut buf, StunClass::Request, BINDING, [0x42; 12]);
    w.username(username.as_bytes())
        .priority(110 << 24 | 0xFFFF << 8 | 255);
    if controlling {
        w.ice_controlling(99);
    } else {
        w.ice_controlled(99);
    }
    if use_candidate {
        w.use_candidate();
    }
    w.finish(Some(key));
    buf
}

#[test]
fn bad_requests_are_dropped_silently_and_counted() {
    let local = sa("10.0.0.1:10000");
    let from = sa("10.0.0.2:5000");
    let peer = IceCredentials::random();
    let mut a = agent(true, 1, &["10.0.0.1:10000"], &IceConfig::default());
    a.set_remote_credentials(peer.clone());
    let creds = a.local_credentials().clone();
    let now = Instant::now();

    let wrong_pwd = check(&creds, &peer, b"not the password", false, false);
    assert_eq!(
        a.handle_datagram(now, local, from, &wrong_pwd),
        Err(IceDrop::BadIntegrity)
    );

    let other = IceCredentials {
        ufrag: "zzzz".into(),
        pwd: creds.pwd.clone(),
    };
    let wrong_ufrag = check(&other, &peer, creds.pwd.as_bytes(), false, false);
    assert_eq!(
        a.handle_datagram(now, local, from, &wrong_ufrag),
        Err(IceDrop::BadUsername)
    );

    let stranger = IceCredentials {
        ufrag: "yyyy".into(),
        pwd: peer.pwd.clone(),
    };
    let wrong_remote_ufrag = check(&creds, &stranger, creds.pwd.as_bytes(), false, false);
    assert_eq!(
        a.handle_datagram(now, local, from, &wrong_remote_ufrag),
        Err(IceDrop::BadUsername)
    );

    let mut bad_fingerprint = check(&creds, &peer, creds.pwd.as_bytes(), false, false);
    *bad_fingerprint.last_mut().unwrap() ^= 0xFF;
    assert_eq!(
        StunMessage::parse(&bad_fingerprint).unwrap_err(),
        sluice_core::stun::StunError::BadFingerprint
    );
    assert_eq!(
        a.handle_datagram(now, local, from, &bad_fingerprint),
        Err(IceDrop::Malformed)
    );

    let mut no_integrity = Vec::new();
    let username = format!("{}:{}", creds.ufrag, peer.ufrag);
    StunWriter::new(&mut no_integrity, StunClass::Request, BINDING, [1; 12])
        .username(username.as_bytes())
        .priority(1)
        .finish(None);
    assert_eq!(
        a.handle_datagram(now, local, from, &no_integrity),
        Err(IceDrop::MissingIntegrity)
    );

    let mut stray = Vec::new();
    StunWriter::new(&mut stray, StunClass::SuccessResponse, BINDING, [9; 12])
        .finish(Some(peer.pwd.as_bytes()));
    assert_eq!(
        a.handle_datagram(now, local, from, &stray),
        Err(IceDrop::UnknownTransaction)
    );

    let elsewhere = check(&creds, &peer, creds.pwd.as_bytes(), false, false);
    assert_eq!(
        a.handle_datagram(now, sa("10.0.0.99:1"), from, &elsewhere),
        Err(IceDrop::UnknownLocal)
    );

    // None of these got an answer (no 400/401), and each is counted once.
    assert_eq!(a.poll_transmit(), None);
    for d in [
        IceDrop::BadIntegrity,
        IceDrop::Malformed,
        IceDrop::MissingIntegrity,
        IceDrop::UnknownTransaction,
        IceDrop::UnknownLocal,
    ] {
        assert_eq!(a.drop_count(d), 1, "{d:?}");
    }
    assert_eq!(a.drop_count(IceDrop::BadUsername), 2);
    assert_eq!(
        a.remote_candidates().len(),
        0,
        "nothing learned from rejected checks"
    );

    // A good one is answered: 200, XOR-MAPPED-ADDRESS = source, our password, FINGERPRINT.
    let good = check(&creds, &peer, creds.pwd.as_bytes(), false, false);
    assert_eq!(a.handle_datagram(now, local, from, &good), Ok(()));
    let t = a.poll_transmit().expect("a response");
    assert_eq!((t.source, t.destination), (local, from));
    let resp = StunMessage::parse(&t.contents).unwrap();
    assert_eq!(resp.class(), StunClass::SuccessResponse);
    assert_eq!(resp.transaction_id(), [0x42; 12]);
    assert_eq!(resp.xor_mapped_address(), Some(from));
    assert!(resp.verify_integrity(creds.pwd.as_bytes()));
    assert!(resp.has_fingerprint());
}

#[test]
fn garbage_never_panics() {
    let mut a = agent(true, 1, &["10.0.0.1:10000"], &IceConfig::default());
    a.set_remote_credentials(IceCredentials::random());
    let now = Instant::now();
    let mut seed = 0x9e37_79b9u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for len in 0..=40usize {
        for round in 0..200 {
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && len >= 20 {
                buf[0] &= 0x01;
                buf[2..4].copy_from_slice(&(((len - 20) & !3) as u16).to_be_bytes());
                buf[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            }
            let _ = a.handle_datagram(now, sa("10.0.0.1:10000"), sa("10.0.0.2:5000"), &buf);
        }
    }
    assert!(a.drop_count(IceDrop::Malformed) > 0);
}

#[test]
fn controlled_agent_honours_aggressive_nomination() {
    let local = sa("10.0.0.2:5000");
    let peer_addr = sa("10.0.0.1:10000");
    let peer = IceCredentials::random();
    let mut b = agent(false, 5, &["10.0.0.2:5000"], &IceConfig::default());
    b.set_remote_credentials(peer.clone());
    let creds = b.local_credentials().clone();
    let t0 = Instant::now();

    // The peer's first check already carries USE-CANDIDATE, from an address B never heard of.
    let req = check(&creds, &peer, creds.pwd.as_bytes(), true, true);
    assert_eq!(b.handle_datagram(t0, local, peer_addr, &req), Ok(()));
    let resp = b.poll_transmit().unwrap();
    assert_eq!(
        StunMessage::parse(&resp.contents).unwrap().class(),
        StunClass::SuccessResponse
    );
    assert_eq!(
        b.state(),
        IceState::Checking,
        "not selected before our own check succeeds"
    );

    // B's triggered check goes out at once (RFC 8445 7.3.1.4).
    let t = b.poll_transmit().expect("triggered check");
    assert_eq!((t.source, t.destination), (local, peer_addr));
    let chk = StunMessage::parse(&t.contents).unwrap();
    assert_eq!(chk.class(), StunClass::Request);
    assert!(chk.verify_integrity(peer.pwd.as_bytes()));
    assert_eq!(
        chk.username(),
        Some(format!("{}:{}", peer.ufrag, creds.ufrag).as_bytes())
    );
    assert_eq!(chk.ice_controlled(), Some(5));
    assert!(!chk.use_candidate());
    assert!(b.is_pending_transaction(&chk.transaction_id()));

    let mut ok = Vec::new();
    StunWriter::new(
        &mut ok,
        StunClass::SuccessResponse,
        BINDING,
        chk.transaction_id(),
    )
    .xor_mapped_address(local)
    .finish(Some(peer.pwd.as_bytes()));
    // A response signed with the wrong key is ignored and the transaction stays open.
    let mut forged = Vec::new();
    StunWriter::new(
        &mut forged,
        StunClass::SuccessResponse,
        BINDING,
        chk.transaction_id(),
    )
    .xor_mapped_address(local)
    .finish(Some(b"guess"));
    let t1 = t0 + Duration::from_millis(20);
    assert_eq!(
        b.handle_datagram(t1, local, peer_addr, &forged),
        Err(IceDrop::BadIntegrity)
    );
    assert!(b.is_pending_transaction(&chk.transaction_id()));
    assert_eq!(b.handle_datagram(t1, local, peer_addr, &ok), Ok(()));
    assert!(!b.is_pending_transaction(&chk.transaction_id()));

    assert_eq!(b.state(), IceState::Connected);
    assert_eq!(b.selected_pair(), Some((local, peer_addr)));
    let events: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
    assert_eq!(
        events,
        [
            IceEvent::StateChanged(IceState::Checking),
            IceEvent::SelectedPair {
                local,
                remote: peer_addr
            },
            IceEvent::StateChanged(IceState::Connected),
        ]
    );
    // Still answers checks once connected.
    let again = check(&creds, &peer, creds.pwd.as_bytes(), true, true);
    assert_eq!(b.handle_datagram(t1, local, peer_addr, &again), Ok(()));
    let r = b.poll_transmit().unwrap();
    assert_eq!(
        StunMessage::parse(&r.contents).unwrap().class(),
        StunClass::SuccessResponse
    );
}

#[test]
fn role_conflict_answered_with_487() {
    let local = sa("10.0.0.1:10000");
    let from = sa("10.0.0.2:5000");
    let peer = IceCredentials::random();
    // We control with the bigger tie-breaker: the peer's ICE-CONTROLLING(99) gets a 487.
    let mut a = agent(true, 1000, &["10.0.0.1:10000"], &IceConfig::default());
    a.set_remote_credentials(peer.clone());
    let creds = a.local_credentials().clone();
    let req = check(&creds, &peer, creds.pwd.as_bytes(), true, false);
    assert_eq!(a.handle_datagram(Instant::now(), local, from, &req), Ok(()));
    let t = a.poll_transmit().unwrap();
    let resp = StunMessage::parse(&t.contents).unwrap();
    assert_eq!(resp.class(), StunClass::ErrorResponse);
    assert_eq!(resp.error_code(), Some(487));
    assert!(resp.verify_integrity(creds.pwd.as_bytes()));
    assert!(a.controlling());

    // With a smaller tie-breaker we give in and answer 200.
    let mut a = agent(true, 5, &["10.0.0.1:10000"], &IceConfig::default());
    a.set_remote_credentials(peer.clone());
    let creds = a.local_credentials().clone();
    let req = check(&creds, &peer, creds.pwd.as_bytes(), true, false);
    assert_eq!(a.handle_datagram(Instant::now(), local, from, &req), Ok(()));
    let t = a.poll_transmit().unwrap();
    assert_eq!(
        StunMessage::parse(&t.contents).unwrap().class(),
        StunClass::SuccessResponse
    );
    assert!(!a.controlling());
}

#[test]
fn closed_agent_answers_nothing() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    net.agent(0).close();
    net.pump();
    assert_eq!(net.state(0), IceState::Closed);
    assert_eq!(net.nodes[0].agent.poll_timeout(), None);
    net.run_for(Duration::from_secs(40));
    assert!(net.nodes[0].drops.iter().all(|d| *d == IceDrop::Inactive));
    assert!(
        !net.nodes[0].drops.is_empty(),
        "peer's consent checks were dropped"
    );
    assert_eq!(net.state(1), IceState::Failed, "peer lost consent");
}

#[test]
fn credentials_are_random_ice_chars() {
    let a = IceCredentials::random();
    let b = IceCredentials::random();
    assert_eq!(a.ufrag.len(), 8);
    assert_eq!(a.pwd.len(), 24);
    assert_ne!(a, b);
    let ok = |s: &str| {
        s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    };
    assert!(ok(&a.ufrag) && ok(&a.pwd));
}

#[test]
fn rfc8445_5_1_2_1_host_priority() {
    let c = Candidate::host(sa("10.0.0.1:1"), 65535);
    assert_eq!(c.priority, (126 << 24) | (65535 << 8) | 255);
    assert_eq!(c.kind, CandidateKind::Host);
    // Same type and IP give the same foundation; another IP another one.
    assert_eq!(
        c.foundation,
        Candidate::host(sa("10.0.0.1:2"), 1).foundation
    );
    assert_ne!(
        c.foundation,
        Candidate::host(sa("10.0.0.2:1"), 1).foundation
    );
}

/// Requests a node sent: (time, transaction id, USE-CANDIDATE, destination).
fn requests(net: &Net, i: usize) -> Vec<(Instant, [u8; 12], bool, SocketAddr)> {
    net.nodes[i]
        .sent
        .iter()
        .filter_map(|(t, x)| {
            let m = StunMessage::parse(&x.contents).unwrap();
            (m.class() == StunClass::Request)
                .then(|| (*t, m.transaction_id(), m.use_candidate(), x.destination))
        })
        .collect()
}

#[test]
fn regular_nomination_sends_one_use_candidate_check() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    net.run_for(Duration::from_secs(30));
    let reqs = requests(&net, 0);
    let nominations: Vec<_> = reqs.iter().filter(|r| r.2).collect();
    assert_eq!(
        nominations.len(),
        1,
        "one USE-CANDIDATE check, answered first time"
    );
    // It follows an ordinary check that succeeded (RFC 8445 section 8.1.1).
    assert!(!reqs[0].2);
    assert!(nominations[0].0 > reqs[0].0);
    // The controlled side never sends USE-CANDIDATE.
    assert!(requests(&net, 1).iter().all(|r| !r.2));
}

#[test]
fn rfc8445_14_2_checks_are_paced_by_ta() {
    for ta_ms in [50u64, 20] {
        let cfg = IceConfig {
            ta: Duration::from_millis(ta_ms),
            ..IceConfig::default()
        };
        let mut a = agent(true, 1, &["10.0.0.1:10000"], &cfg);
        let remotes: Vec<String> = (1..=5).map(|i| format!("10.0.1.{i}:5000")).collect();
        a.set_remote_credentials(IceCredentials::random());
        for (i, r) in remotes.iter().enumerate() {
            a.add_remote_candidate(Candidate::new(
                sa(r),
                CandidateKind::Host,
                1000 + i as u32,
                format!("f{i}"),
            ));
        }
        let mut net = Net::new();
        net.add(a);
        net.kick();
        net.run_for(Duration::from_secs(1));
        // First transmission of each transaction: one every Ta, highest priority first.
        let mut firsts: Vec<(Instant, [u8; 12], bool, SocketAddr)> = Vec::new();
        for r in requests(&net, 0) {
            if !firsts.iter().any(|f| f.1 == r.1) {
                firsts.push(r);
            }
        }
        assert_eq!(firsts.len(), 5);
        for w in firsts.windows(2) {
            assert_eq!(w[1].0 - w[0].0, Duration::from_millis(ta_ms));
        }
        let order: Vec<SocketAddr> = firsts.iter().map(|f| f.3).collect();
        let want: Vec<SocketAddr> = remotes.iter().rev().map(|r| sa(r)).collect();
        assert_eq!(order, want, "checklist in pair-priority order");
    }
}

#[test]
fn rfc8489_6_2_1_retransmissions_double_up_to_the_cap() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    net.dead.push(sa("10.0.0.2:5000"));
    net.run_for(Duration::from_secs(30));
    let reqs = requests(&net, 0);
    let tid = reqs[0].1;
    let times: Vec<u64> = reqs
        .iter()
        .filter(|r| r.1 == tid)
        .map(|r| (r.0 - net.start).as_millis() as u64)
        .collect();
    // 7 requests; RTO 250 ms doubling, capped at 2 s.
    assert_eq!(times, [0, 250, 750, 1750, 3750, 5750, 7750]);
    // Every retransmission is byte-identical.
    let bytes: Vec<&Vec<u8>> = net.nodes[0]
        .sent
        .iter()
        .filter(|(_, x)| StunMessage::parse(&x.contents).unwrap().transaction_id() == tid)
        .map(|(_, x)| &x.contents)
        .collect();
    assert!(bytes.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn rfc8839_5_1_candidate_type_names_round_trip() {
    use sluice_core::ice::CandidateKind::*;
    let names: Vec<_> = [Host, ServerReflexive, PeerReflexive, Relayed]
        .into_iter()
        .map(|k| {
            assert_eq!(CandidateKind::from_sdp_name(k.sdp_name()), Some(k));
            k.sdp_name()
        })
        .collect();
    assert_eq!(names, ["host", "srflx", "prflx", "relay"]);
    assert_eq!(CandidateKind::from_sdp_name("Host"), None);
    assert_eq!(CandidateKind::from_sdp_name(""), None);
}

/// Both agents restart ICE (new credentials, the same candidates), then learn each other's again.
fn restart_both(net: &mut Net) {
    net.agent(0).restart(IceCredentials::random());
    net.agent(1).restart(IceCredentials::random());
    let (a, b) = net.nodes.split_at_mut(1);
    introduce(&mut a[0].agent, &mut b[0].agent);
    net.kick();
}

fn selections(net: &Net, i: usize) -> Vec<(SocketAddr, SocketAddr)> {
    net.nodes[i]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            IceEvent::SelectedPair { local, remote } => Some((*local, *remote)),
            _ => None,
        })
        .collect()
}

#[test]
fn rfc8445_9_restart_keeps_the_old_path_until_the_new_generation_is_selected() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    net.run_for(Duration::from_secs(10));
    let old = assert_mirrored(&net);
    let old_ufrag = net.agent(0).local_credentials().ufrag.clone();

    // The bridge restarts; the peer hears of it 12 s later (a slow signalling path): meanwhile the old
    // path keeps its consent both ways, with the old credentials.
    net.agent(0).restart(IceCredentials::random());
    let new_ufrag = net.agent(0).local_credentials().ufrag.clone();
    assert_eq!(net.agent(0).generation(), 1);
    let accepted: Vec<String> = net.agent(0).accepted_ufrags().map(str::to_owned).collect();
    assert_eq!(accepted, [new_ufrag.clone(), old_ufrag]);
    net.kick();
    net.run_for(Duration::from_secs(12));
    assert!(net.all_connected(), "{:?} {:?}", net.state(0), net.state(1));
    assert_eq!(net.agent(0).selected_pair(), Some(old));
    assert_eq!(selections(&net, 0).len(), 1);

    // Then the peer restarts as well and both learn the other's new credentials: the new generation
    // selects a pair, and only the new ufrag is accepted after that.
    net.agent(1).restart(IceCredentials::random());
    let b_ufrag = net.agent(1).local_credentials().ufrag.clone();
    let (a, b) = net.nodes.split_at_mut(1);
    introduce(&mut a[0].agent, &mut b[0].agent);
    net.kick();
    assert!(
        net.run_until(Duration::from_secs(2), |n| selections(n, 0).len() == 2
            && selections(n, 1).len() == 2)
    );
    assert_mirrored(&net);
    let accepted: Vec<String> = net.agent(0).accepted_ufrags().map(str::to_owned).collect();
    assert_eq!(accepted, [new_ufrag]);
    net.run_for(Duration::from_secs(60));
    assert!(net.all_connected());
    for i in 0..2 {
        assert_eq!(
            net.states(i),
            [IceState::Checking, IceState::Connected],
            "node {i}"
        );
        assert!(
            net.nodes[i].drops.is_empty(),
            "node {i}: {:?}",
            net.nodes[i].drops
        );
    }
    // The new generation's requests name the new credentials.
    let last = net.nodes[0].sent.last().unwrap();
    let msg = StunMessage::parse(&last.1.contents).unwrap();
    if msg.class() == StunClass::Request {
        let username = String::from_utf8(msg.username().unwrap().to_vec()).unwrap();
        assert!(username.starts_with(&format!("{b_ufrag}:")), "{username}");
    }
}

#[test]
fn rfc8445_9_restart_moves_the_call_to_the_peer_s_new_address() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    net.run_for(Duration::from_secs(5));
    // The peer's address changes: the old one is gone, a new one appears.
    net.dead.push(sa("10.0.0.2:5000"));
    net.agent(1)
        .add_local_candidate(Candidate::host(sa("10.0.0.3:5001"), 65535));
    net.nodes[1].addrs.push(sa("10.0.0.3:5001"));
    let moved = net.now;
    restart_both(&mut net);
    assert!(net.run_until(Duration::from_secs(5), |n| selections(n, 0).len() == 2));
    assert!(
        net.now - moved < Duration::from_secs(1),
        "{:?}",
        net.now - moved
    );
    assert_eq!(
        net.agent(0).selected_pair(),
        Some((sa("10.0.0.1:10000"), sa("10.0.0.3:5001")))
    );
    net.run_for(Duration::from_secs(60));
    assert_eq!(net.state(0), IceState::Connected);
    assert_eq!(net.states(0), [IceState::Checking, IceState::Connected]);
}

#[test]
fn rfc8445_9_a_restart_that_never_completes_fails_when_the_old_path_s_consent_expires() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    net.agent(0).restart(IceCredentials::random());
    net.kick();
    net.run_for(Duration::from_secs(20));
    assert_eq!(
        net.state(0),
        IceState::Connected,
        "the old path's consent holds"
    );
    net.delivering = false;
    let cut = net.now;
    net.run_for(Duration::from_secs(40));
    let failed = net
        .event_time(0, &IceEvent::StateChanged(IceState::Failed))
        .expect("failed");
    assert!(failed - cut > Duration::from_secs(23) && failed - cut <= Duration::from_secs(30));
    assert_eq!(net.agent(0).selected_pair(), None);
}

#[test]
fn rfc8445_9_a_restart_before_connecting_starts_over_with_the_new_credentials() {
    let cfg = IceConfig::default();
    let mut a = agent(true, 1000, &["10.0.0.1:10000"], &cfg);
    let mut b = agent(false, 2000, &["10.0.0.2:5000"], &cfg);
    a.restart(IceCredentials::random());
    assert_eq!(a.accepted_ufrags().count(), 1);
    assert_eq!(a.selected_pair(), None);
    introduce(&mut a, &mut b);
    let mut net = Net::new();
    net.add(a);
    net.add(b);
    net.kick();
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    assert_mirrored(&net);
}

#[test]
fn rfc8445_9_checks_naming_a_retired_ufrag_are_dropped_and_counted() {
    let mut net = two(&["10.0.0.1:10000"], &["10.0.0.2:5000"]);
    assert!(net.run_until(Duration::from_secs(2), Net::all_connected));
    let first = net.agent(0).local_credentials().clone();
    let peer_first = net.agent(1).local_credentials().ufrag.clone();
    let check = |creds: &IceCredentials, peer: &str| {
        let mut bytes = Vec::new();
        let mut w = StunWriter::new(&mut bytes, StunClass::Request, BINDING, [7; 12]);
        w.username(format!("{}:{peer}", creds.ufrag).as_bytes())
            .priority(1);
        w.finish(Some(creds.pwd.as_bytes()));
        bytes
    };
    restart_both(&mut net);
    // While the old path is kept, a check with the first generation's credentials is answered.
    let bytes = check(&first, &peer_first);
    let now = net.now;
    let (local, from) = (sa("10.0.0.1:10000"), sa("10.0.0.2:5000"));
    let msg = StunMessage::parse(&bytes).unwrap();
    assert_eq!(net.agent(0).handle_stun(now, local, from, &msg), Ok(()));
    // Once the new generation is selected, it names a retired ufrag.
    assert!(net.run_until(Duration::from_secs(2), |n| selections(n, 0).len() == 2));
    let before = net.agent(0).drop_count(IceDrop::BadUsername);
    let now = net.now;
    assert_eq!(
        net.agent(0).handle_stun(now, local, from, &msg),
        Err(IceDrop::BadUsername)
    );
    assert_eq!(net.agent(0).drop_count(IceDrop::BadUsername), before + 1);
}
