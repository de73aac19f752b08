//! Proves the codec payload parsers allocate nothing: VP8 (with the PictureID / TL0PICIDX
//! rewrites), VP9 (non-flexible, flexible, with a scalability structure), H.264 (single NAL,
//! STAP-A, FU-A) and AV1's Dependency Descriptor (structures replaced, frames resolved, custom
//! fields, errors), counted by a global allocator.

use sluice_core::codec::av1::{Av1Descriptor, Av1Structure};
use sluice_core::codec::h264::H264Payload;
use sluice_core::codec::vp8::{set_picture_id, set_tl0picidx, Vp8Descriptor};
use sluice_core::codec::vp9::Vp9Descriptor;
use sluice_testutil::av1;
use sluice_testutil::counting_alloc::{counted_here, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn codec_parsers_allocate_nothing() {
    // The counter itself works.
    assert!(counted_here(|| drop(std::hint::black_box(vec![0u8; 16]))).1 >= 1);

    // Inputs are built before counting starts.
    let mut vp8 = vec![0x90, 0xf0, 0x92, 0x34, 0x56, 0xa5, 0x10, 0x02, 0x00];
    vp8.resize(1100, 0x5a);
    let vp9_non_flexible = [0xe8, 0x81, 0x02, 0x53, 0x17, 0xde, 0xad];
    let vp9_flexible = [0xf5, 0x2a, 0x24, 0x03, 0x05, 0x08, 0x11];
    let mut vp9_ss = vec![0xaa, 0x80, 0x07, 0x00, 0x00, 0x58];
    vp9_ss.extend_from_slice(&[0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68]);
    vp9_ss.extend_from_slice(&[0x05, 0x00, 0x02, 0xd0, 0x02, 0x04, 0x02, 0x34, 0x01, 0x82]);
    let h264_single = [0x65, 0x88, 0x84, 0x00];
    let h264_stap_a = [
        0x78, 0x00, 0x04, 0x67, 0x42, 0xc0, 0x1f, 0x00, 0x02, 0x68, 0xce, 0x00, 0x03, 0x65, 0x88,
        0x84,
    ];
    let h264_fu_a = [0x7c, 0x85, 0x88, 0x84];
    let h264_bad = [0x78, 0x00, 0x09, 0x67];
    // The L1T3 and L3T3 keyframes, a frame and a custom-field frame of codec/av1/tests.rs.
    let (av1_l1t3_keyframe, av1_l3t3_keyframe) = (av1::L1T3_KEYFRAME, av1::L3T3_KEYFRAME);
    let (av1_frame, av1_custom) = (av1::FRAME, av1::CUSTOM);
    let av1_unknown_template = [0x46, 0x00, 0x65];
    let mut av1 = Av1Structure::new();

    let (sum, n) = counted_here(|| {
        let mut sum = 0usize;
        for i in 0..1000u16 {
            let d = Vp8Descriptor::parse(&vp8).expect("valid VP8");
            sum += d.header_len + usize::from(d.starts_keyframe());
            sum += usize::from(d.picture_id.unwrap_or(0));
            set_picture_id(&mut vp8, i).expect("has PictureID");
            set_tl0picidx(&mut vp8, i as u8).expect("has TL0PICIDX");

            for p in [&vp9_non_flexible[..], &vp9_flexible[..], &vp9_ss[..]] {
                let d = Vp9Descriptor::parse(p).expect("valid VP9");
                sum += d.header_len + d.p_diffs().len() + usize::from(d.starts_keyframe());
                if let Some(ss) = d.scalability_structure {
                    sum += ss
                        .resolutions()
                        .iter()
                        .map(|r| usize::from(r.width))
                        .sum::<usize>();
                }
            }

            for p in [&h264_single[..], &h264_stap_a[..], &h264_fu_a[..]] {
                let p = H264Payload::parse(p).expect("valid H.264");
                sum += usize::from(p.nal_units) + usize::from(p.starts_keyframe());
            }
            sum += usize::from(H264Payload::parse(&h264_bad).is_err());
            sum += usize::from(Vp8Descriptor::parse(&vp8[..3]).is_err());

            for p in [
                &av1_l3t3_keyframe[..],
                &av1_l1t3_keyframe[..],
                &av1_frame[..],
                &av1_custom[..],
            ] {
                let d = Av1Descriptor::parse(p, &mut av1).expect("valid DD");
                sum += usize::from(d.spatial_id) + usize::from(d.temporal_id);
                sum += d.fdiffs().len() + d.chain_fdiffs().len() + usize::from(d.starts_keyframe());
            }
            sum += usize::from(Av1Descriptor::parse(&av1_unknown_template, &mut av1).is_err());
            sum += usize::from(Av1Descriptor::parse(&av1_l3t3_keyframe[..40], &mut av1).is_err());
        }
        std::hint::black_box(sum)
    });
    assert!(sum > 0);
    assert_eq!(n, 0, "codec parsers allocated {n} times");
}
