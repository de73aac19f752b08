//! Congestion control per feedback: writing transport-cc feedback for 100 received packets
//! (`FeedbackBuilder::on_arrival` x 100 + `write`), and the estimator taking one parsed feedback
//! of 100 packets (`Estimator::on_feedback`, with the 100 `on_packet_sent` before it). Elements
//! are packets.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::cc::{Estimator, EstimatorConfig, FeedbackBuilder};
use sluice_core::rtcp::RtcpPacket;

const PACKETS: u16 = 100;

/// Arrival of packet `i` of a round starting at `t_ms`: 1 ms apart with some jitter, every
/// 25th lost.
fn arrival(t_ms: u64, i: u16) -> Option<Duration> {
    (i % 25 != 7)
        .then(|| Duration::from_micros(t_ms * 1000 + u64::from(i) * 1000 + u64::from(i % 3) * 150))
}

fn bench_cc(c: &mut Criterion) {
    let mut group = c.benchmark_group("cc");
    group.throughput(Throughput::Elements(u64::from(PACKETS)));

    let mut builder = FeedbackBuilder::new(1, 2);
    let mut buf = [0u8; 1500];
    let (mut seq, mut t_ms) = (0u16, 0u64);
    group.bench_function("feedback/record_and_write_100", |b| {
        b.iter(|| {
            for i in 0..PACKETS {
                if let Some(at) = arrival(t_ms, i) {
                    builder.on_arrival(seq.wrapping_add(i), at);
                }
            }
            seq = seq.wrapping_add(PACKETS);
            t_ms += 100;
            let mut n = 0;
            while let Some(len) = builder.write(black_box(&mut buf)).unwrap() {
                n += len;
            }
            n
        })
    });

    // One recorded feedback of 100 packets, replayed each run with its base sequence number
    // and reference time moved on (by 100 packets and 128 ms), so the estimator sees a steady
    // stream: every status matches a packet it sent, and every arrival goes through the delay
    // filter.
    let mut recorder = FeedbackBuilder::new(1, 2);
    for i in 0..PACKETS {
        if let Some(at) = arrival(0, i) {
            recorder.on_arrival(i, at);
        }
    }
    let mut fb = [0u8; 1500];
    let len = recorder.write(&mut fb).unwrap().unwrap();
    let mut estimator = Estimator::new(EstimatorConfig::default());
    let (mut base, mut reference, mut now_ms) = (0u16, 0u32, 0u64);
    group.bench_function("estimator/sent_100_and_feedback", |b| {
        b.iter(|| {
            for i in 0..PACKETS {
                let at = Duration::from_millis(now_ms + u64::from(i));
                estimator.on_packet_sent(base.wrapping_add(i), 1100, at);
            }
            fb[12..14].copy_from_slice(&base.to_be_bytes());
            fb[16..19].copy_from_slice(&reference.to_be_bytes()[1..]);
            base = base.wrapping_add(PACKETS);
            reference = (reference + 2) & 0x00ff_ffff;
            now_ms += 128;
            let Ok(RtcpPacket::TransportCc(t)) = RtcpPacket::parse(black_box(&fb[..len])) else {
                unreachable!()
            };
            estimator
                .on_feedback(&t, Duration::from_millis(now_ms))
                .unwrap();
            estimator.estimate_bps()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_cc);
criterion_main!(benches);
