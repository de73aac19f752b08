//! One receiver's Projection on the per-packet path: reading the VP8 or VP9 payload descriptor
//! (`packet_meta`), the Projection's verdict, and the rewrite of the receiver's copy (`apply_rewrite`).
//! `vp8/all` forwards every packet; `vp8/temporal_0_1` keeps temporal layers 0 and 1 of the 0,2,1,2
//! pattern, leaving out every other frame (each run left out is a change the later packets are
//! offset by); `vp9/spatial_0` keeps the lowest of three spatial layers of a k-SVC picture. Elements are
//! input packets. `rtx_cache/insert` keeps each VP8 packet (1200 bytes) in a Producer's RTX cache, as
//! every video packet is on arrival; `rtx_cache/replay` looks one up and rewrites it again for a
//! receiver, as a NACK answered from the cache does (before the RTX is written and sent).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::domain::Codec;
use sluice_core::projection::{Projection, Target, Verdict, ALL};
use sluice_core::router::{apply_rewrite, packet_meta, PacketCache};
use sluice_core::rtp::RtpView;

/// Packets per run: frames of one packet, so every packet starts a picture.
const PACKETS: usize = 4096;

fn rtp(seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 100];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(payload);
    p.resize(1200, 0x5a);
    p
}

/// VP8 with a 15-bit PictureID, TL0PICIDX and TID (the 0,2,1,2 pattern; Y on each TID 1 and 2 frame
/// after a TID 0 one); the first a keyframe.
fn vp8_stream() -> Vec<Vec<u8>> {
    let mut tl0 = 0u8;
    (0..PACKETS)
        .map(|i| {
            let tid = [0u8, 2, 1, 2][i % 4];
            if tid == 0 {
                tl0 = tl0.wrapping_add(1);
            }
            let pid = (i as u16) & 0x7fff;
            let sync = u8::from(i % 4 == 1 || i % 4 == 2) << 5;
            let descriptor = [
                0x90,
                0xe0,
                0x80 | (pid >> 8) as u8,
                pid as u8,
                tl0,
                (tid << 6) | sync,
                u8::from(i != 0),
            ];
            rtp(i as u16, i as u32 * 3000, &descriptor)
        })
        .collect()
}

/// VP9 k-SVC, flexible mode: pictures of three spatial layers (one packet each, B and E set), the
/// first a keyframe.
fn vp9_stream() -> Vec<Vec<u8>> {
    (0..PACKETS)
        .map(|i| {
            let picture = (i / 3) as u16 & 0x7fff;
            let sid = (i % 3) as u8;
            let inter = i >= 3;
            // I, P (inter pictures), L, F, B, E; PictureID; TID 0, SID; one P_DIFF of 1 when inter.
            let mut d = vec![
                0x80 | (u8::from(inter) << 6) | 0x20 | 0x10 | 0x08 | 0x04,
                0x80 | (picture >> 8) as u8,
                picture as u8,
                sid << 1,
            ];
            if inter {
                d.push(1 << 1);
            }
            rtp(i as u16, u32::from(picture) * 3000, &d)
        })
        .collect()
}

fn run(stream: &[Vec<u8>], codec: Codec, target: Target) -> usize {
    let now = Instant::now();
    let mut p = Projection::new(Some(target));
    let mut copy = [0u8; 1200];
    let mut sent = 0;
    for pkt in stream {
        let view = RtpView::parse(pkt).expect("rtp");
        let (meta, fields) = packet_meta(codec, 0, &view);
        if let Verdict::Forward(rw) = p.on_packet(now, 90_000, &meta) {
            copy.copy_from_slice(pkt);
            apply_rewrite(&mut copy, 0x1111_1111, &fields, &rw);
            sent += 1;
        }
    }
    black_box(&copy);
    sent
}

fn projection(c: &mut Criterion) {
    let mut g = c.benchmark_group("projection");
    g.throughput(Throughput::Elements(PACKETS as u64));
    let vp8 = vp8_stream();
    let vp9 = vp9_stream();
    let cases = [
        ("vp8/all", &vp8, Codec::Vp8, Target::layer(0), PACKETS),
        (
            "vp8/temporal_0_1",
            &vp8,
            Codec::Vp8,
            Target {
                layer: 0,
                spatial: ALL,
                temporal: 1,
            },
            PACKETS / 2,
        ),
        (
            "vp9/spatial_0",
            &vp9,
            Codec::Vp9,
            Target {
                layer: 0,
                spatial: 0,
                temporal: ALL,
            },
            PACKETS.div_ceil(3),
        ),
    ];
    for (name, stream, codec, target, expected) in cases {
        assert_eq!(run(stream, codec, target), expected, "{name}");
        g.bench_function(name, |b| b.iter(|| run(stream, codec, target)));
    }
    g.finish();
}

fn rtx_cache(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtx_cache");
    g.throughput(Throughput::Elements(PACKETS as u64));
    let stream = vp8_stream();
    let now = Instant::now();
    let parsed: Vec<_> = stream
        .iter()
        .map(|p| packet_meta(Codec::Vp8, 0, &RtpView::parse(p).expect("rtp")))
        .collect();
    let mut cache = PacketCache::new();
    g.bench_function("insert", |b| {
        b.iter(|| {
            for (pkt, (meta, fields)) in stream.iter().zip(&parsed) {
                // A new sequence number each time round: every insert takes a place.
                let mut m = *meta;
                m.seq = m.seq.wrapping_add(PACKETS as u16);
                cache.insert(now, pkt, &m, fields);
            }
        })
    });
    // The receiver's Projection forwarded the whole stream; a NACK for each packet replays it.
    let mut cache = PacketCache::new();
    let mut p = Projection::new(Some(Target::layer(0)));
    for (pkt, (meta, fields)) in stream.iter().zip(&parsed) {
        cache.insert(now, pkt, meta, fields);
        p.on_packet(now, 90_000, meta);
    }
    let mut copy = [0u8; 1200];
    g.bench_function("replay", |b| {
        b.iter(|| {
            let mut resent = 0;
            for i in 0..PACKETS as u16 {
                let Some((layer, orig)) = p.original(i) else {
                    continue;
                };
                let Some((bytes, meta, fields)) = cache.get(now, orig).filter(|_| layer == 0)
                else {
                    continue;
                };
                if let Some(rw) = p.replay(i, &meta) {
                    copy.copy_from_slice(bytes);
                    apply_rewrite(&mut copy, 0x1111_1111, &fields, &rw);
                    resent += 1;
                }
            }
            black_box(resent)
        })
    });
    g.finish();
}

criterion_group!(benches, projection, rtx_cache);
criterion_main!(benches);
