//! The load generator's own per-packet work, which competes with the bridge for the same cores:
//! writing and verifying the synthetic payload, tracking a stream, recording latency.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_loadgen::histogram::Histogram;
use sluice_loadgen::payload::{self, Fields, Kind};
use sluice_loadgen::track::StreamTracker;

fn fields(seq: u64) -> Fields {
    Fields {
        group: 1,
        sender: 2,
        ssrc: 3,
        seq,
        send_ns: 123_456,
        kind: Kind::Video,
        layer: 0,
        prefix: 0,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("loadgen");
    group.throughput(Throughput::Elements(1));
    for len in [88usize, 1188] {
        let mut buf = vec![0u8; 1500];
        let mut seq = 0u64;
        group.bench_function(format!("payload_write/{len}"), |b| {
            b.iter(|| {
                seq += 1;
                payload::write(black_box(&mut buf), len, &fields(seq));
            })
        });
        payload::write(&mut buf, len, &fields(7));
        group.bench_function(format!("payload_verify/{len}"), |b| {
            b.iter(|| payload::verify(black_box(&buf[..len])).is_ok())
        });
    }
    let mut t = StreamTracker::new(1, 2, true);
    let mut seq = 0u64;
    group.bench_function("track_in_order", |b| {
        b.iter(|| {
            seq += 1;
            t.on_packet(black_box(seq), 1200)
        })
    });
    let mut h = Histogram::new();
    let mut v = 1000u64;
    group.bench_function("histogram_record", |b| {
        b.iter(|| {
            v = v
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            h.record(black_box(v >> 40));
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
