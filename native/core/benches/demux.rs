//! RFC 7983 demultiplexing: `io::classify` per datagram kind, as the shard runs it on every datagram,
//! and over a mixed batch (branch prediction cannot learn one kind).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_core::io::{classify, DatagramKind};
use sluice_core::shard::BATCH;
use sluice_core::stun::{StunClass, StunWriter, BINDING};

const KEY: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

/// One datagram of each kind the shared port sees, with the kind `classify` must give it.
fn samples() -> Vec<(&'static str, Vec<u8>, DatagramKind)> {
    let mut stun = Vec::new();
    StunWriter::new(&mut stun, StunClass::Request, BINDING, [7; 12])
        .username(b"abcd1234:efgh5678")
        .priority(0x6e00_1eff)
        .finish(Some(KEY));
    // DTLS 1.2 handshake record header (content type 22, version fe fd), then filler.
    let mut dtls = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x80];
    dtls.resize(141, 0x5a);
    let mut rtp = vec![
        0x90, 96, 0x12, 0x34, 0, 1, 0xe2, 0x40, 0xca, 0xfe, 0xba, 0xbe,
    ];
    rtp.resize(1200, 0x5a);
    // Sender report (PT 200) header.
    let mut rtcp = vec![0x80, 200, 0, 6, 0xca, 0xfe, 0xba, 0xbe];
    rtcp.resize(28, 0);
    // TURN channel data (first byte 64..=79): not ours.
    let mut garbage = vec![0x40, 0x00, 0x00, 0x10];
    garbage.resize(20, 0xff);
    vec![
        ("stun", stun, DatagramKind::Stun),
        ("dtls", dtls, DatagramKind::Dtls),
        ("rtp", rtp, DatagramKind::Rtp),
        ("rtcp", rtcp, DatagramKind::Rtcp),
        ("garbage", garbage, DatagramKind::Unknown),
        ("empty", Vec::new(), DatagramKind::Unknown),
    ]
}

fn demux(c: &mut Criterion) {
    let samples = samples();
    // A bench over a misclassified sample would measure the wrong branch.
    for (name, buf, kind) in &samples {
        assert_eq!(classify(buf), *kind, "{name}");
    }

    let mut g = c.benchmark_group("demux_classify");
    g.throughput(Throughput::Elements(1));
    for (name, buf, _) in &samples {
        g.bench_with_input(BenchmarkId::from_parameter(name), buf, |b, buf| {
            b.iter(|| classify(black_box(buf)))
        });
    }
    g.finish();

    // A receive batch as the shard sees it under load: mostly RTP, some RTCP, a little of the rest,
    // interleaved by a fixed pseudo-random pattern.
    let weights: [(usize, usize); 6] = [(0, 2), (1, 1), (2, 52), (3, 6), (4, 2), (5, 1)];
    let mut batch: Vec<&[u8]> = weights
        .iter()
        .flat_map(|&(i, n)| std::iter::repeat_n(samples[i].1.as_slice(), n))
        .collect();
    assert_eq!(batch.len(), BATCH);
    let mut x = 0x2545_f491_u32;
    for i in (1..batch.len()).rev() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        batch.swap(i, x as usize % (i + 1));
    }
    let mut g = c.benchmark_group("demux_classify_batch");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function(BenchmarkId::new("mixed", batch.len()), |b| {
        b.iter(|| {
            let mut media = 0usize;
            for d in black_box(&batch) {
                if matches!(classify(d), DatagramKind::Rtp | DatagramKind::Rtcp) {
                    media += 1;
                }
            }
            media
        })
    });
    g.finish();
}

criterion_group!(benches, demux);
criterion_main!(benches);
