//! A quick in-process throughput run: N conferences of P endpoints against a real shard thread
//! (secure) and against the raw relay (raw), with per-thread CPU from /proc. Not the bench (that is
//! `sluice bench`, driving a real bridge over Colibri2); this is for a first look and for profiling.
//!
//! cargo run --release -p sluice-loadgen --example quick -- [--conferences 10] [--per 5] [--layers 1]
//!     [--bitrate 1000000] [--fps 30] [--secs 10] [--threads 1] [--mode both|secure|raw]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::seam::{Command, Event};
use sluice_loadgen::inproc::InProcessBridge;
use sluice_loadgen::relay::RawRelay;
use sluice_loadgen::{LoadGen, LoadGenConfig, MediaConfig, Mode, Snapshot, Sources};

struct Opts {
    conferences: u32,
    per: usize,
    layers: usize,
    media: MediaConfig,
    secs: f64,
    threads: usize,
    mode: String,
    shared: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        conferences: 10,
        per: 5,
        layers: 1,
        media: MediaConfig::default(),
        secs: 10.0,
        threads: 1,
        mode: "both".into(),
        shared: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or("");
        let num = || v.parse::<f64>().expect("a number");
        match pair[0].as_str() {
            "--conferences" => o.conferences = num() as u32,
            "--per" => o.per = num() as usize,
            "--layers" => o.layers = num() as usize,
            "--bitrate" => o.media.video_bitrate_bps = num() as u32,
            "--fps" => o.media.fps = num() as u32,
            "--secs" => o.secs = num(),
            "--threads" => o.threads = num() as usize,
            "--mode" => o.mode = v.to_string(),
            "--shared-sockets" => o.shared = num() != 0.0,
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// CPU seconds (user + system) of this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc/self/task")
        .expect("/proc")
        .flatten()
    {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3; utime, stime are 14, 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += get(14) + get(15);
    }
    ticks as f64 / hz
}

/// Kernel UDP receive-buffer drops so far (/proc/net/snmp Udp: RcvbufErrors).
fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return 0;
    };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn report(label: &str, snap: &Snapshot, secs: f64, fwd_cpu: f64, lg_cpu: f64, drops: u64) {
    let t = &snap.totals;
    let egress_pps = snap.received as f64 / secs;
    let us = |ns: Option<u64>| ns.map_or(f64::NAN, |v| v as f64 / 1000.0);
    println!(
        "{label}: endpoints {} connected {} | sent {} pkt ({:.0} pkt/s ingress) | received {} ({:.0} egress pkt/s, {:.1} Mbit/s) | lost {} ({:.4} %) | latency p50 {:.0} us p99 {:.0} us p99.9 {:.0} us max {:.0} us",
        snap.endpoints,
        snap.connected,
        t.sent_packets,
        t.sent_packets as f64 / secs,
        snap.received,
        egress_pps,
        t.recv_bytes as f64 * 8.0 / secs / 1e6,
        snap.lost,
        snap.loss_ratio() * 100.0,
        us(snap.latency.p50_ns),
        us(snap.latency.p99_ns),
        us(snap.latency.p999_ns),
        us(snap.latency.max_ns),
    );
    println!(
        "{label}: forwarder CPU {:.2} cores ({:.2} us/egress pkt) | loadgen CPU {:.2} cores | loadgen pkts/recvmmsg {:.1}, pkts/sendmmsg {:.1} | kernel UDP rcvbuf drops {drops} | decrypt failures {} integrity failures {}",
        fwd_cpu / secs,
        fwd_cpu * 1e6 / snap.received.max(1) as f64,
        lg_cpu / secs,
        t.recv_syscall_packets as f64 / t.recv_calls.max(1) as f64,
        t.send_syscall_packets as f64 / t.send_calls.max(1) as f64,
        t.decrypt_failures,
        t.integrity_failures,
    );
}

fn drive(lg: &mut LoadGen, secs: f64, fwd: &str) -> (Snapshot, f64, f64, f64, u64) {
    let (f0, l0, d0) = (thread_cpu(fwd), thread_cpu("loadgen"), udp_rcvbuf_errors());
    let t0 = Instant::now();
    lg.start();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let elapsed = t0.elapsed().as_secs_f64();
    let (f1, l1) = (thread_cpu(fwd), thread_cpu("loadgen"));
    lg.stop(Duration::from_millis(500));
    let d1 = udp_rcvbuf_errors();
    (lg.snapshot(false), elapsed, f1 - f0, l1 - l0, d1 - d0)
}

fn secure(o: &Opts) {
    let mut bridge = InProcessBridge::spawn().expect("shard");
    let mut lg = LoadGen::new(LoadGenConfig {
        threads: o.threads,
        shared_sockets: o.shared,
        media: o.media,
        ..LoadGenConfig::default()
    })
    .expect("loadgen");
    for g in 0..o.conferences {
        bridge.create_conference(g);
        for l in lg.create_endpoints(o.per, g).expect("endpoints") {
            let sources = Sources::for_endpoint(l.index, o.layers);
            bridge
                .allocate(&lg, &l, sources, l.setup, "actpass")
                .expect("allocate");
        }
    }
    let n = lg.endpoints();
    assert!(
        lg.wait_connected(Duration::from_secs(60)),
        "loadgen did not connect"
    );
    assert!(
        bridge.wait_connected(n, Duration::from_secs(30)),
        "bridge did not connect"
    );
    let (snap, secs, fwd, lgc, drops) = drive(&mut lg, o.secs, "sluice-shard");
    report("secure", &snap, secs, fwd, lgc, drops);
    bridge.shard.send(Command::GetStats { request: 1 });
    std::thread::sleep(Duration::from_millis(200));
    bridge.events.clear();
    bridge.shard.events.drain_into(&mut bridge.events);
    for e in bridge.events {
        if let Event::Stats { snapshot, .. } = e {
            let io = snapshot.io;
            println!(
                "secure: shard pkts/recvmmsg {:.1}, pkts/sendmmsg {:.1}, drops {:?}",
                io.recv_packets as f64 / io.recv_calls.max(1) as f64,
                io.send_packets as f64 / io.send_calls.max(1) as f64,
                snapshot.total.drop_map()
            );
        }
    }
}

fn raw(o: &Opts) {
    let mut relay = RawRelay::bind("127.0.0.1:0".parse().expect("literal")).expect("relay");
    let addr = relay.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("raw-relay".into())
        .spawn(move || {
            relay.run(&s2);
            relay.stats()
        })
        .expect("relay thread");
    let mut lg = LoadGen::new(LoadGenConfig {
        threads: o.threads,
        shared_sockets: o.shared,
        mode: Mode::Raw,
        media: o.media,
        ..LoadGenConfig::default()
    })
    .expect("loadgen");
    for g in 0..o.conferences {
        for l in lg.create_endpoints(o.per, g).expect("endpoints") {
            lg.set_sources(l.index, Sources::for_endpoint(l.index, o.layers))
                .expect("sources");
            lg.connect_raw(l.index, addr).expect("connect");
        }
    }
    assert!(lg.wait_connected(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    let (snap, secs, fwd, lgc, drops) = drive(&mut lg, o.secs, "raw-relay");
    report("raw", &snap, secs, fwd, lgc, drops);
    stop.store(true, Ordering::Relaxed);
    let rs = thread.join().expect("join");
    println!("raw: relay {}", rs.to_json());
}

fn main() {
    let o = opts();
    if o.mode == "both" || o.mode == "secure" {
        secure(&o);
    }
    if o.mode == "both" || o.mode == "raw" {
        raw(&o);
    }
}
