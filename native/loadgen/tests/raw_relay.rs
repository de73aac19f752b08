//! Raw mode against the raw relay (in-process and as the shipped binary): the same synthetic
//! packets and the same measurements as against the bridge, with no ICE, DTLS or SRTP.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_loadgen::relay::RawRelay;
use sluice_loadgen::{Kind, LoadGen, LoadGenConfig, MediaConfig, Mode, Snapshot, Sources};

use common::{assert_complete, assert_paced, payload_rate};

fn raw_loadgen(
    relay: SocketAddr,
    groups: u32,
    per_group: usize,
    layers: usize,
    media: MediaConfig,
    shared_sockets: bool,
) -> LoadGen {
    let mut lg = LoadGen::new(LoadGenConfig {
        threads: 2,
        shared_sockets,
        mode: Mode::Raw,
        media,
        ..LoadGenConfig::default()
    })
    .expect("loadgen");
    for g in 0..groups {
        for local in lg.create_endpoints(per_group, g).expect("endpoints") {
            lg.set_sources(local.index, Sources::for_endpoint(local.index, layers))
                .expect("sources");
            lg.connect_raw(local.index, relay).expect("connect");
        }
    }
    assert!(lg.wait_connected(Duration::from_secs(5)));
    lg
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs media for `secs`; returns the final snapshot and how long media was sent.
fn run(lg: &mut LoadGen, secs: f64) -> (Snapshot, f64) {
    let t0 = Instant::now();
    lg.start();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let sent_for = t0.elapsed().as_secs_f64();
    lg.stop(Duration::from_millis(300));
    (lg.snapshot(true), sent_for)
}

#[test]
fn three_groups_of_three_through_the_raw_relay() {
    let mut relay = RawRelay::bind("127.0.0.1:0".parse().expect("literal")).expect("relay");
    let addr = relay.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let members = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (stop2, members2) = (stop.clone(), members.clone());
    let thread = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            if relay.poll() == 0 {
                relay.wait(5);
            }
            members2.store(relay.stats().members, Ordering::Relaxed);
        }
        relay.stats()
    });
    let media = MediaConfig {
        video_bitrate_bps: 500_000,
        ..MediaConfig::default()
    };
    // Simulcast: VP8 packets of every shape (keyframes' and inter frames' first packets, later
    // packets) must reach the right group.
    let mut lg = raw_loadgen(addr, 3, 3, 3, media, true);
    wait_for("the relay to learn every member", || {
        members.load(Ordering::Relaxed) == 9
    });
    let (snap, secs) = run(&mut lg, 2.0);
    stop.store(true, Ordering::Relaxed);
    let rs = thread.join().expect("relay thread");

    assert_complete(&snap, 3, 3, 1 + 3);
    assert_paced(&snap, secs, |s| payload_rate(&media, 3, s));
    // The relay got every datagram sent (media and three hellos each) and delivered every copy.
    assert_eq!((rs.members, rs.groups, rs.untagged), (9, 3, 0));
    assert_eq!(snap.totals.sent_packets + 9 * 3, rs.packets_in);
    assert_eq!(snap.totals.recv_packets + snap.totals.hello, rs.packets_out);
}

#[test]
fn the_relay_binary_relays_and_reports_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raw_relay"))
        .args(["--bind", "127.0.0.1:0", "--duration", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn raw_relay");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let addr: SocketAddr = first
        .trim_start_matches("{\"listening\":\"")
        .trim_end_matches("\"}")
        .parse()
        .unwrap_or_else(|_| panic!("listening line: {first}"));
    let media = MediaConfig {
        video_bitrate_bps: 200_000,
        ..MediaConfig::default()
    };
    let mut lg = raw_loadgen(addr, 1, 2, 1, media, false);
    // Registration is not observable from outside: wait for both hellos to be fanned out (the
    // second member's hello reaches the first one).
    wait_for("a hello to come back", || {
        lg.snapshot(false).totals.hello >= 1
    });
    let (snap, _) = run(&mut lg, 1.0);
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let last = lines.last().expect("final stats").expect("utf-8");
    let status = child.wait().expect("wait");
    assert!(status.success());
    assert_complete(&snap, 1, 2, 2);
    let field = |k: &str| -> u64 {
        let at = last.find(&format!("\"{k}\":")).expect(k) + k.len() + 3;
        last[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|d| d.parse().ok())
            .expect(k)
    };
    assert_eq!(field("members"), 2, "{last}");
    assert_eq!(
        field("packets_out"),
        snap.totals.recv_packets + snap.totals.hello,
        "{last}"
    );
}

#[test]
fn forged_and_corrupt_packets_are_counted_not_tracked() {
    use sluice_loadgen::payload::{self, Fields, RTP_HEADER_LEN};
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut lg = LoadGen::new(LoadGenConfig {
        mode: Mode::Raw,
        ..LoadGenConfig::default()
    })
    .expect("loadgen");
    let (me,) = match lg.create_endpoints(1, 7).expect("endpoint").as_slice() {
        [l] => (l.candidates[0].addr,),
        _ => unreachable!("asked for one"),
    };
    lg.connect_raw(0, sink.local_addr().expect("addr"))
        .expect("connect");
    let packet = |group: u32, sender: u32, seq: u64| {
        let mut p = vec![0u8; 200];
        payload::write_rtp_header(&mut p, false, 100, 1, 2, 3);
        let f = Fields {
            group,
            sender,
            ssrc: 3,
            seq,
            send_ns: 1,
            kind: Kind::Video,
            layer: 0,
            prefix: 0,
        };
        payload::write(&mut p[RTP_HEADER_LEN..], 188, &f);
        p
    };
    let attacker = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut corrupt = packet(7, 1, 5);
    corrupt[100] ^= 1;
    attacker.send_to(&corrupt, me).expect("send"); // checksum fails
    attacker.send_to(&packet(8, 1, 5), me).expect("send"); // another group
    attacker.send_to(&packet(7, 0, 5), me).expect("send"); // claims to be us
    attacker.send_to(&packet(7, 1, u64::MAX), me).expect("send"); // valid, extreme sequence
    attacker.send_to(&packet(7, 1, 0), me).expect("send");
    attacker.send_to(&[0x80], me).expect("send"); // too short for RTP
    wait_for("six datagrams", || {
        let t = lg.snapshot(false).totals;
        t.integrity_failures + t.misrouted + t.recv_packets + t.foreign >= 6
    });
    let snap = lg.snapshot(true);
    let t = &snap.totals;
    assert_eq!(
        (t.integrity_failures, t.misrouted, t.foreign),
        (1, 2, 1),
        "{t:?}"
    );
    assert_eq!(t.recv_packets, 2);
    // Both valid ones claim to be video but carry no VP8 payload descriptor.
    assert_eq!(t.vp8_invalid, 2);
    // The forged sender is no member: it is in no expected stream, and nothing overflowed.
    assert!(snap.streams.is_empty());
    assert_eq!((snap.expected, snap.received, snap.lost_gap), (0, 0, 0));
    assert_eq!(snap.unexpected, 2);
}
