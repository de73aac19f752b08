//! STUN parse / verify / write, and one ICE check answered end to end.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_core::ice::{Candidate, IceAgent, IceCredentials};
use sluice_core::stun::{StunClass, StunMessage, StunWriter, BINDING};

const KEY: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

/// A Chrome-like check with `extra` bytes of a comprehension-optional attribute (size profile).
fn check(extra: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    StunWriter::new(&mut buf, StunClass::Request, BINDING, [7; 12])
        .username(b"abcd1234:efgh5678")
        .attribute(0xC057, &vec![0u8; extra])
        .ice_controlling(0x1234_5678_9abc_def0)
        .use_candidate()
        .priority(0x6e00_1eff)
        .finish(Some(KEY));
    buf
}

fn stun(c: &mut Criterion) {
    let mut g = c.benchmark_group("stun");
    for extra in [0usize, 256, 1024] {
        let msg = check(extra);
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_with_input(BenchmarkId::new("parse", msg.len()), &msg, |b, m| {
            b.iter(|| StunMessage::parse(black_box(m)).unwrap().priority())
        });
        g.bench_with_input(BenchmarkId::new("parse_verify", msg.len()), &msg, |b, m| {
            b.iter(|| {
                StunMessage::parse(black_box(m))
                    .unwrap()
                    .verify_integrity(KEY)
            })
        });
    }
    let from: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    let mut buf = Vec::with_capacity(128);
    g.throughput(Throughput::Elements(1));
    g.bench_function("write_success_response", |b| {
        b.iter(|| {
            StunWriter::new(&mut buf, StunClass::SuccessResponse, BINDING, [7; 12])
                .xor_mapped_address(black_box(from))
                .finish(Some(KEY))
        })
    });
    g.finish();
}

fn ice(c: &mut Criterion) {
    let local: SocketAddr = "203.0.113.1:10000".parse().unwrap();
    let from: SocketAddr = "198.51.100.9:41000".parse().unwrap();
    let peer = IceCredentials::random();
    let mut agent = IceAgent::new(true, IceCredentials::random(), u64::MAX);
    agent.add_local_candidate(Candidate::host(local, 65535));
    agent.set_remote_credentials(peer.clone());
    let creds = agent.local_credentials().clone();
    let username = format!("{}:{}", creds.ufrag, peer.ufrag);
    let mut req = Vec::new();
    StunWriter::new(&mut req, StunClass::Request, BINDING, [9; 12])
        .username(username.as_bytes())
        .priority(0x6e00_1eff)
        .ice_controlled(1)
        .finish(Some(creds.pwd.as_bytes()));
    let now = Instant::now();
    // Learn the peer first so the measured path is the steady-state one (consent checks).
    agent.handle_datagram(now, local, from, &req).unwrap();
    while agent.poll_transmit().is_some() {}
    c.bench_function("ice/answer_check", |b| {
        b.iter(|| {
            agent
                .handle_datagram(now, local, from, black_box(&req))
                .unwrap();
            while let Some(t) = agent.poll_transmit() {
                black_box(t);
            }
        })
    });
}

criterion_group!(benches, stun, ice);
criterion_main!(benches);
