//! Loadgen endpoints against a real in-process `sluice_core` shard on loopback: ICE, DTLS-SRTP and
//! forwarding end to end, every endpoint receiving every other member's audio and video.

mod common;

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::time::{Duration, Instant};

use sluice_core::seam::{Command, Event};
use sluice_core::stats::StatsSnapshot;
use sluice_loadgen::inproc::InProcessBridge;
use sluice_loadgen::{Kind, LoadGen, LoadGenConfig, MediaConfig, Snapshot, Sources};

use common::{assert_complete, assert_paced, payload_rate};

struct Scenario {
    groups: u32,
    per_group: usize,
    layers: usize,
    media: MediaConfig,
    /// What the bridge is told our a=setup is, and what we are told the bridge's is.
    our_setup: &'static str,
    bridge_setup: &'static str,
    /// One shared loopback socket per worker, or one socket per endpoint.
    shared_sockets: bool,
}

struct Run {
    bridge: InProcessBridge,
    lg: LoadGen,
    addrs: Vec<SocketAddr>,
}

/// Allocates every endpoint on the shard the way the bridge's Colibri2 handler does, and hands
/// each loadgen endpoint the bridge's side; returns once both sides report connected.
fn connect(sc: &Scenario, threads: usize) -> Run {
    let mut bridge = InProcessBridge::spawn().expect("shard");
    let mut lg = LoadGen::new(LoadGenConfig {
        threads,
        shared_sockets: sc.shared_sockets,
        media: sc.media,
        ..LoadGenConfig::default()
    })
    .expect("loadgen");
    let mut addrs = Vec::new();
    for g in 0..sc.groups {
        bridge.create_conference(g);
        for local in lg.create_endpoints(sc.per_group, g).expect("endpoints") {
            addrs.push(local.candidates[0].addr);
            // With feedback each video layer has an RTX SSRC, as a browser's does.
            let sources = if sc.media.feedback {
                Sources::with_rtx(local.index, sc.layers)
            } else {
                Sources::for_endpoint(local.index, sc.layers)
            };
            bridge
                .allocate(&lg, &local, sources, sc.our_setup, sc.bridge_setup)
                .expect("allocate");
        }
    }
    let total = sc.groups as usize * sc.per_group;
    let ok = lg.wait_connected(Duration::from_secs(20));
    assert!(
        ok,
        "loadgen connected {} of {total}, failed {}: {:?}",
        lg.connected(),
        lg.failed(),
        lg.snapshot(true).endpoint_list
    );
    assert!(
        bridge.wait_connected(total, Duration::from_secs(10)),
        "bridge not connected: {:?}",
        bridge.events
    );
    Run { bridge, lg, addrs }
}

/// The shard's stats snapshot, asked over the seam as the bridge does.
fn bridge_stats(bridge: &mut InProcessBridge) -> StatsSnapshot {
    bridge.shard.send(Command::GetStats { request: 77 });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    loop {
        bridge.shard.events.drain_into(&mut events);
        for e in events.drain(..) {
            if let Event::Stats {
                request: 77,
                snapshot,
            } = e
            {
                return *snapshot;
            }
        }
        assert!(Instant::now() < deadline, "no stats from the shard");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_media(run: &mut Run, secs: f64) -> (Snapshot, f64) {
    let t0 = Instant::now();
    run.lg.start();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let sent_for = t0.elapsed().as_secs_f64();
    run.lg.stop(Duration::from_millis(400));
    (run.lg.snapshot(true), sent_for)
}

#[test]
fn three_conferences_of_three_with_simulcast_each_receive_audio_and_the_top_layer() {
    let media = MediaConfig {
        video_bitrate_bps: 600_000,
        fps: 30,
        ..MediaConfig::default()
    };
    let sc = Scenario {
        groups: 3,
        per_group: 3,
        layers: 3,
        media,
        our_setup: "active",
        bridge_setup: "actpass",
        shared_sockets: true,
    };
    let mut run = connect(&sc, 2);
    let (snap, secs) = run_media(&mut run, 2.0);
    // The bridge forwards one layer of each simulcast Source: with no allocation, the top one.
    assert_complete(&snap, 3, 3, 1 + 1);
    assert_eq!(snap.totals.decrypt_failures, 0);
    // Senders' SRs reach the bridge, which answers with RRs and passes SRs on.
    assert!(
        snap.totals.sent_rtcp > 0 && snap.totals.recv_rtcp > 0,
        "{:?}",
        snap.totals
    );
    // The layers send 80, 200 and 600 kbit/s (2/15, 1/3 and all of the top's), audio 50 packets/s.
    assert_paced(&snap, secs, |s| payload_rate(&media, 3, s));
    for s in &snap.streams {
        let want = Sources::for_endpoint(s.sender, 3);
        match s.kind {
            Kind::Video => {
                assert_eq!(s.layer, 2, "{s:?}");
                assert_eq!(want.video[2], s.ssrc, "{s:?}");
            }
            Kind::Audio => assert_eq!(want.audio, Some(s.ssrc), "{s:?}"),
        }
    }
    // Each receiver gets that layer on the Source's primary SSRC, gapless.
    for r in snap
        .receive_streams
        .iter()
        .filter(|r| r.stream.kind == Kind::Video)
    {
        let want = Sources::for_endpoint(r.stream.sender, 3);
        assert_eq!(r.stream.ssrc, want.video[0], "{r:?}");
        assert_eq!(r.stream.seq_gaps, 0, "{r:?}");
    }
    // Receivers joining ask the senders already there for keyframes (the bridge's PLIs).
    assert!(snap.totals.pli_received > 0, "{:?}", snap.totals);
    run.bridge.shard.shutdown();
}

/// Browser-like feedback through a real shard: every endpoint stamps transport-wide numbers and
/// reports those the bridge stamped every 100 ms (the bridge estimates each receiver from them and
/// reports back to the senders); with every 20th media datagram dropped on arrival, receivers NACK
/// the video they miss, the bridge answers from its RTX cache, and what was asked comes back.
#[test]
fn with_feedback_receivers_report_and_nack_and_the_bridge_repairs_with_rtx() {
    let media = MediaConfig {
        video_bitrate_bps: 600_000,
        feedback: true,
        drop_every_n: 20,
        ..MediaConfig::default()
    };
    let sc = Scenario {
        groups: 1,
        per_group: 3,
        layers: 3,
        media,
        our_setup: "active",
        bridge_setup: "actpass",
        shared_sockets: true,
    };
    let mut run = connect(&sc, 1);
    let (snap, secs) = run_media(&mut run, 2.0);
    let t = &snap.totals;
    // Cadence: each of the 3 receivers once per 100 ms while media flowed and over the 0.4 s drain
    // (a feedback goes only when something arrived since the last; a loaded machine delays timers, so
    // the lower bound is loose; per packet or per second would be far outside).
    let per_receiver = t.feedback_sent as f64 / 3.0;
    let intervals = (secs + 0.4) / 0.1;
    assert!(
        per_receiver >= 0.5 * secs / 0.1 && per_receiver <= intervals + 2.0,
        "{per_receiver} feedbacks per receiver in {secs} s: {t:?}"
    );
    assert!(
        t.feedback_received > 0,
        "the bridge reports on our numbers: {t:?}"
    );
    assert!(t.link_dropped > 0, "{t:?}");
    assert_eq!(t.decrypt_failures, 0, "{t:?}");
    assert!(
        t.nacks_sent > 0 && t.nack_seqs_sent >= t.nacks_sent,
        "{t:?}"
    );
    // The bridge answers receivers' NACKs from its RTX cache: RTX on the Source's RTX SSRC, which
    // the receivers unwrap onto the primary. Only what the cache lacks would be asked of the sender.
    assert!(t.rtx_received > 0 && t.recovered > 0, "{t:?}");
    assert_eq!(t.rtx_unmatched, 0, "{t:?}");
    // Video that was dropped came back: of the forwarded (top) layer, only a few stay lost (the
    // retransmission itself may be dropped again, three tries each); audio is never repaired.
    let video_lost: u64 = snap
        .streams
        .iter()
        .filter(|s| s.kind == Kind::Video)
        .map(|s| s.lost)
        .sum();
    let audio_lost: u64 = snap
        .streams
        .iter()
        .filter(|s| s.kind == Kind::Audio)
        .map(|s| s.lost)
        .sum();
    assert!(audio_lost > 0, "audio is dropped and not repaired");
    assert!(
        video_lost * 10 <= t.recovered,
        "video lost {video_lost}, recovered {}: {t:?}",
        t.recovered
    );
    // A repaired packet is counted received but not timed.
    assert!(
        snap.latency.count < snap.totals.recv_packets,
        "{:?}",
        snap.latency
    );
    // The bridge took the receivers' feedback: each of their transports has an estimate.
    let stats = bridge_stats(&mut run.bridge);
    for i in 0..3 {
        let id = InProcessBridge::transport(i);
        let tr = stats
            .transports
            .iter()
            .find(|t| t.id == id)
            .expect("transport");
        assert!(tr.bandwidth_estimate_bps.is_some_and(|b| b > 0), "{tr:?}");
    }
    run.bridge.shard.shutdown();
}

/// The bridge asks one sender for a keyframe of one simulcast layer (a PLI, as it will when a
/// receiver switches to that layer): that layer, and only it, sends one more; every receiver, which
/// gets that (top) layer on the Source's primary SSRC, sees it.
#[test]
fn a_keyframe_request_gets_a_keyframe_of_that_layer_only() {
    let media = MediaConfig {
        video_bitrate_bps: 300_000,
        ..MediaConfig::default()
    };
    let sc = Scenario {
        groups: 1,
        per_group: 3,
        layers: 3,
        media,
        our_setup: "active",
        bridge_setup: "actpass",
        shared_sockets: true,
    };
    let mut run = connect(&sc, 1);
    let sources = Sources::for_endpoint(0, 3);
    let ssrc = sources.video[2];
    run.lg.start();
    // Past the bridge's and the sender's rate limits (300 ms) since the PLIs of the joins.
    std::thread::sleep(Duration::from_millis(700));
    let before = run.lg.snapshot(false).totals;
    run.bridge.shard.send(Command::RequestKeyframe {
        transport: InProcessBridge::transport(0),
        ssrc,
    });
    std::thread::sleep(Duration::from_millis(500));
    run.lg.stop(Duration::from_millis(300));
    let snap = run.lg.snapshot(true);
    assert_complete(&snap, 1, 3, 1 + 1);
    let t = &snap.totals;
    assert_eq!(t.pli_received, before.pli_received + 1, "{t:?}");
    // The one asked for, on top of those before (one at start per layer of each sender, and any a
    // receiver that became ready after them asked for).
    assert!(before.keyframes_sent >= 3 * 3, "{before:?}");
    assert_eq!(t.keyframes_sent, before.keyframes_sent + 1, "{t:?}");
    // Sender 0's receivers saw it on the Source's primary SSRC.
    let video = snap
        .receive_streams
        .iter()
        .filter(|s| s.stream.kind == Kind::Video && s.stream.sender == 0);
    for s in video {
        assert_eq!(s.stream.ssrc, sources.video[0], "{s:?}");
        assert!(s.stream.keyframes >= 2, "{s:?}");
    }
    run.bridge.shard.shutdown();
}

#[test]
fn dtls_server_role_when_the_bridge_is_active_on_per_endpoint_sockets() {
    let sc = Scenario {
        groups: 1,
        per_group: 2,
        layers: 1,
        media: MediaConfig {
            video_bitrate_bps: 300_000,
            ..MediaConfig::default()
        },
        // The bridge is told we are passive, so it connects as the DTLS client; we answer.
        our_setup: "passive",
        bridge_setup: "active",
        shared_sockets: false,
    };
    let mut run = connect(&sc, 1);
    let (snap, secs) = run_media(&mut run, 1.0);
    assert_complete(&snap, 1, 2, 2);
    assert_paced(&snap, secs, |s| payload_rate(&sc.media, 1, s));
    run.bridge.shard.shutdown();
}

#[test]
fn garbage_to_an_endpoint_is_counted_and_harmless() {
    let sc = Scenario {
        groups: 1,
        per_group: 3,
        layers: 1,
        media: MediaConfig {
            video_bitrate_bps: 300_000,
            ..MediaConfig::default()
        },
        our_setup: "active",
        bridge_setup: "actpass",
        shared_sockets: true,
    };
    let mut run = connect(&sc, 1);
    let attacker = StdUdpSocket::bind("127.0.0.1:0").expect("bind");
    let target = run.addrs[0];
    let mut fake_rtp = vec![0u8; 200];
    fake_rtp[0] = 0x80;
    fake_rtp[1] = 100;
    let mut fake_rtcp = vec![0u8; 60];
    fake_rtcp[0] = 0x80;
    fake_rtcp[1] = 200;
    let garbage: [&[u8]; 6] = [
        &fake_rtp,               // SRTP auth fails
        &fake_rtcp,              // SRTCP auth fails
        &[0xff; 30],             // no protocol of ours
        &[0x00, 0x01, 0x00],     // truncated STUN
        &[22, 0xfe, 0xfd, 0, 0], // truncated DTLS record
        &[],
    ];
    for g in garbage {
        attacker.send_to(g, target).expect("send");
    }
    // The shared socket also receives for 127/8 addresses that are no endpoint's.
    let nobody = SocketAddr::new("127.200.0.1".parse().expect("literal"), target.port());
    attacker.send_to(&fake_rtp, nobody).expect("send");
    let (snap, _) = run_media(&mut run, 1.0);
    let t = &snap.totals;
    assert_eq!(t.decrypt_failures, 2, "{t:?}");
    assert_eq!(t.foreign, 4, "{t:?}");
    assert_complete(&snap, 1, 3, 2);
    run.bridge.shard.shutdown();
}
