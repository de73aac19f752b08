//! RTP/RTCP hot-path benchmarks: parse a view, read the routing fields, rewrite on the egress copy,
//! walk compound RTCP.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::rtcp::{
    parse_compound, write_nack, write_sdes_cname, write_sender_report, ReportBlock, RtcpPacket,
};
use sluice_core::rtp::{
    set_marker, set_payload_type, set_sequence_number, set_ssrc, set_timestamp, RtpView,
};

const PACKET_LEN: usize = 1200;

/// A 1200-byte RTP packet; with `extensions`, a one-byte header extension carrying three elements
/// (audio level, transport-cc sequence number, abs-send-time), as WebRTC video sends.
fn rtp_packet(extensions: bool) -> Vec<u8> {
    let mut p = vec![
        0x80, 0x60, 0x12, 0x34, 0, 1, 0xe2, 0x40, 0xca, 0xfe, 0xba, 0xbe,
    ];
    if extensions {
        p[0] |= 0x10;
        p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x03]);
        p.extend_from_slice(&[0x10, 0x85]); // id 1, 1 byte
        p.extend_from_slice(&[0x31, 0x01, 0x02]); // id 3, 2 bytes
        p.extend_from_slice(&[0x22, 0x0a, 0x0b, 0x0c]); // id 2, 3 bytes
        p.extend_from_slice(&[0, 0, 0]); // padding to 12 bytes
    }
    p.resize(PACKET_LEN, 0x5a);
    p
}

fn bench_rtp(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtp");
    group.throughput(Throughput::Elements(1));
    for (name, ext) in [("no_ext", false), ("3_one_byte_ext", true)] {
        let pkt = rtp_packet(ext);
        group.bench_function(format!("parse/{name}/1200"), |b| {
            b.iter(|| RtpView::parse(black_box(&pkt)).is_ok())
        });
        group.bench_function(format!("parse_and_read/{name}/1200"), |b| {
            b.iter(|| {
                let v = RtpView::parse(black_box(&pkt)).expect("bench packet is valid");
                (
                    v.ssrc(),
                    v.sequence_number(),
                    v.timestamp(),
                    v.payload().len(),
                )
            })
        });
        if ext {
            group.bench_function(format!("parse_and_find_ext/{name}/1200"), |b| {
                b.iter(|| {
                    let v = RtpView::parse(black_box(&pkt)).expect("bench packet is valid");
                    v.extension(black_box(3)).map(|d| d.len())
                })
            });
        }
    }

    // Egress: copy the parsed packet into a receiver's buffer and rewrite it there.
    let pkt = rtp_packet(true);
    let mut egress = vec![0u8; 1500];
    group.bench_function("copy_and_rewrite/1200", |b| {
        b.iter(|| {
            let src = black_box(&pkt[..]);
            let out = &mut egress[..src.len()];
            out.copy_from_slice(src);
            set_ssrc(out, black_box(0x1111_2222));
            set_sequence_number(out, black_box(777));
            set_timestamp(out, black_box(90_000));
            set_payload_type(out, black_box(100));
            set_marker(out, black_box(true));
            black_box(out[0])
        })
    });
    // The rewrite alone, in place on a buffer that stays in cache.
    let mut out = pkt.clone();
    group.bench_function("rewrite_in_place/1200", |b| {
        b.iter(|| {
            let out = black_box(&mut out[..]);
            set_ssrc(out, black_box(0x1111_2222));
            set_sequence_number(out, black_box(777));
            set_timestamp(out, black_box(90_000));
            set_payload_type(out, black_box(100));
            set_marker(out, black_box(true));
        })
    });

    // Ingress receive statistics per packet (RFC 3550 A.1 + A.8).
    let t0 = std::time::Instant::now();
    let mut stats = sluice_core::rtp::ReceiverStats::new(0xcafe_babe, 90_000);
    let mut seq = 0u16;
    let mut at = t0;
    group.bench_function("receiver_stats_on_packet", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            at += std::time::Duration::from_micros(333);
            stats.on_packet(
                black_box(at),
                black_box(seq),
                u32::from(seq).wrapping_mul(30),
            );
        })
    });
    group.finish();
}

fn walk(buf: &[u8]) -> usize {
    let mut n = 0;
    for p in parse_compound(buf) {
        match p {
            Ok(RtcpPacket::SenderReport(sr)) => {
                n += sr.report_blocks().map(|b| b.jitter as usize).sum::<usize>();
                n += sr.packet_count as usize;
            }
            Ok(RtcpPacket::Sdes(s)) => {
                n += s
                    .chunks()
                    .filter_map(|c| c.cname())
                    .map(<[u8]>::len)
                    .sum::<usize>();
            }
            Ok(RtcpPacket::Nack(nack)) => n += nack.lost_sequence_numbers().count(),
            Ok(_) => n += 1,
            Err(_) => break,
        }
    }
    n
}

fn bench_rtcp(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtcp");
    group.throughput(Throughput::Elements(1));

    let mut sr_sdes = vec![0u8; 200];
    let blocks = [ReportBlock {
        ssrc: 7,
        jitter: 30,
        ..ReportBlock::default()
    }];
    let mut len = write_sender_report(&mut sr_sdes, 1, 0xe1a2_b3c4_d5e6_f708, 3, 4, 5, &blocks)
        .expect("room");
    len += write_sdes_cname(&mut sr_sdes[len..], 1, b"a1b2c3d4e5f6g7h8").expect("room");
    sr_sdes.truncate(len);
    group.bench_function("parse_compound/sr_1rb+sdes", |b| {
        b.iter(|| walk(black_box(&sr_sdes)))
    });

    let mut nack = vec![0u8; 64];
    let lost = [100u16, 101, 103, 116, 200, 205];
    let len = write_nack(&mut nack, 1, 2, &lost).expect("room");
    nack.truncate(len);
    group.bench_function("parse_compound/nack_2fci", |b| {
        b.iter(|| walk(black_box(&nack)))
    });

    let mut out = [0u8; 64];
    group.bench_function("write_nack/6_lost", |b| {
        b.iter(|| write_nack(&mut out, 1, 2, black_box(&lost)))
    });
    group.finish();
}

criterion_group!(benches, bench_rtp, bench_rtcp);
criterion_main!(benches);
