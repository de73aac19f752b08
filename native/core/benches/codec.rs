//! Codec payload parser benchmarks, per packet of each kind a layer selector will see: `parse`
//! hands the whole descriptor to `black_box` (so it also pays for moving the struct to memory),
//! `parse_and_read` reads only the fields a selector uses, as inlined callers will. Plus the VP8
//! egress rewrite, and AV1's Dependency Descriptor (a header extension's data, with the stream's
//! structure).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::codec::av1::{Av1Descriptor, Av1Structure};
use sluice_core::codec::h264::H264Payload;
use sluice_core::codec::vp8::{set_picture_id, set_tl0picidx, Vp8Descriptor};
use sluice_core::codec::vp9::Vp9Descriptor;
use sluice_testutil::av1;

/// A 1100-byte payload that starts with `prefix`, as the RTP view's payload would be.
fn payload(prefix: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    p.resize(1100, 0x5a);
    p
}

fn bench_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));

    // VP8 as libwebrtc sends it: 15-bit PictureID, TL0PICIDX, TID/Y; keyframe start.
    let vp8 = payload(&[0x90, 0xe0, 0x92, 0x34, 0x56, 0xa0, 0x10, 0x02, 0x00]);
    group.bench_function("vp8/parse", |b| {
        b.iter(|| Vp8Descriptor::parse(black_box(&vp8)))
    });
    group.bench_function("vp8/parse_and_read", |b| {
        b.iter(|| {
            Vp8Descriptor::parse(black_box(&vp8)).map(|d| {
                (
                    d.header_len,
                    d.picture_id,
                    d.tl0picidx,
                    d.tid,
                    d.layer_sync,
                    d.starts_keyframe(),
                )
            })
        })
    });
    let mut out = vp8.clone();
    group.bench_function("vp8/rewrite_picture_id_and_tl0picidx", |b| {
        b.iter(|| {
            let out = black_box(&mut out[..]);
            let w = set_picture_id(out, black_box(0x1111));
            let t = set_tl0picidx(out, black_box(7));
            (w, t)
        })
    });

    let vp9_non_flexible = payload(&[0xe8, 0x81, 0x02, 0x53, 0x17]);
    let vp9_flexible = payload(&[0xf5, 0x2a, 0x24, 0x03, 0x05, 0x08]);
    let vp9_ss = payload(&[
        0xaa, 0x80, 0x07, 0x00, 0x00, 0x58, 0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68, 0x05,
        0x00, 0x02, 0xd0, 0x02, 0x04, 0x02, 0x34, 0x01,
    ]);
    for (name, p) in [
        ("non_flexible", &vp9_non_flexible),
        ("flexible_3_p_diff", &vp9_flexible),
        ("keyframe_ss_3_layers", &vp9_ss),
    ] {
        group.bench_function(format!("vp9/parse/{name}"), |b| {
            b.iter(|| Vp9Descriptor::parse(black_box(p)))
        });
        group.bench_function(format!("vp9/parse_and_read/{name}"), |b| {
            b.iter(|| {
                Vp9Descriptor::parse(black_box(p)).map(|d| {
                    (
                        d.header_len,
                        d.picture_id,
                        d.tid,
                        d.sid,
                        d.tl0picidx,
                        d.switching_up_point,
                        d.starts_keyframe(),
                        d.scalability_structure
                            .and_then(|ss| ss.resolutions().last().copied()),
                    )
                })
            })
        });
    }

    let h264_single = payload(&[0x41, 0x9a]);
    let mut h264_stap_a = vec![
        0x78, 0x00, 0x04, 0x67, 0x42, 0xc0, 0x1f, 0x00, 0x02, 0x68, 0xce,
    ];
    h264_stap_a.extend_from_slice(&[0x04, 0x33, 0x65]); // IDR of 0x433 bytes
    h264_stap_a.resize(h264_stap_a.len() + 0x432, 0x5a);
    let h264_fu_a = payload(&[0x7c, 0x85]);
    for (name, p) in [
        ("single_nal", &h264_single),
        ("stap_a_sps_pps_idr", &h264_stap_a),
        ("fu_a_start", &h264_fu_a),
    ] {
        group.bench_function(format!("h264/parse/{name}"), |b| {
            b.iter(|| H264Payload::parse(black_box(p)))
        });
    }

    // The vectors of codec/av1/tests.rs: A.10.2.1 L1T3 and A.10.2.2 L3T3 keyframes (each replaces
    // the structure, as a keyframe does), a 3-byte frame naming L1T3's template 4, and an L1T3
    // frame with the active decode targets and every custom field.
    let (av1_l1t3_keyframe, av1_l3t3_keyframe) = (av1::L1T3_KEYFRAME, av1::L3T3_KEYFRAME);
    let (av1_frame, av1_custom) = (av1::FRAME, av1::CUSTOM);
    let mut l1t3 = Av1Structure::new();
    Av1Descriptor::parse(&av1_l1t3_keyframe, &mut l1t3).expect("L1T3 keyframe");
    for (name, p) in [
        ("mandatory_3_bytes", &av1_frame[..]),
        ("custom_fields", &av1_custom[..]),
        ("keyframe_l1t3_structure", &av1_l1t3_keyframe[..]),
        ("keyframe_l3t3_structure", &av1_l3t3_keyframe[..]),
    ] {
        let mut s = l1t3.clone();
        group.bench_function(format!("av1_dd/parse/{name}"), |b| {
            b.iter(|| Av1Descriptor::parse(black_box(p), black_box(&mut s)))
        });
        group.bench_function(format!("av1_dd/parse_and_read/{name}"), |b| {
            b.iter(|| {
                Av1Descriptor::parse(black_box(p), black_box(&mut s)).map(|d| {
                    (
                        d.frame_number,
                        d.spatial_id,
                        d.temporal_id,
                        d.start_of_frame,
                        d.end_of_frame,
                        d.starts_keyframe(),
                        d.active_decode_targets,
                    )
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
