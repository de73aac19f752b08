//! Properties shared by every codec parser: no panic on any input, and a descriptor never claims
//! more bytes than the payload has. Per-RFC vectors live beside each parser.

use super::av1::{self, Av1Descriptor, Av1Structure};
use super::h264::H264Payload;
use super::vp8::{self, Vp8Descriptor};
use super::vp9::Vp9Descriptor;
use super::*;
use crate::rtp::tests::XorShift;
use crate::rtp::RtpView;

/// Parses `buf` as a Dependency Descriptor against `structure`: a success agrees with the
/// structure it leaves, a failure leaves the structure as it was.
fn check_av1(buf: &[u8], structure: &mut Av1Structure) {
    let before = structure.clone();
    match Av1Descriptor::parse(buf, structure) {
        Ok(d) => {
            let s = &*structure;
            if !d.structure_present {
                assert_eq!(*s, before);
            }
            let t = s
                .template(d.template_id)
                .expect("resolved through a template");
            assert_eq!(
                (t.spatial_id(), t.temporal_id()),
                (d.spatial_id, d.temporal_id)
            );
            assert!(d.spatial_id < s.spatial_layers());
            assert!(usize::from(s.spatial_layers()) <= av1::MAX_SPATIAL_LAYERS);
            assert!(d.temporal_id < s.temporal_layers());
            assert!(usize::from(s.temporal_layers()) <= av1::MAX_TEMPORAL_LAYERS);
            assert!(s.templates().len() <= av1::MAX_TEMPLATES);
            assert_eq!(d.decode_targets(), s.decode_targets());
            assert!((1..=32).contains(&d.decode_targets()));
            assert!(d.fdiffs().len() <= av1::MAX_FDIFFS);
            assert!(d.fdiffs().iter().all(|&f| (1..=4096).contains(&f)));
            assert_eq!(d.chain_fdiffs().len(), usize::from(s.chain_count()));
            assert!(s.chain_count() <= s.decode_targets());
            for dt in 0..usize::from(s.decode_targets()) {
                assert!(s.protected_by(dt).is_none_or(|c| c < s.chain_count()));
            }
            if let Some(mask) = d.active_decode_targets {
                assert_eq!(u64::from(mask) >> d.decode_targets(), 0);
            }
            assert!(s.resolutions().len() <= usize::from(s.spatial_layers()));
            assert_eq!(d.resolution.is_some(), !s.resolutions().is_empty());
            assert!(!d.starts_keyframe() || d.start_of_frame);
        }
        Err(_) => assert_eq!(*structure, before),
    }
}

/// Runs every parser and rewrite helper over `buf`, checking the length property.
fn check_all(buf: &[u8]) {
    check_av1(buf, &mut Av1Structure::new());
    check_av1(buf, &mut av1::tests::l1t3_structure());

    if let Ok(d) = Vp8Descriptor::parse(buf) {
        assert!(d.header_len <= buf.len());
        assert_eq!(d.picture_id.is_some(), d.picture_id_width.is_some());
        if d.starts_keyframe() {
            assert!(d.header_len < buf.len());
        }
    }
    let mut copy = buf.to_vec();
    let before = Vp8Descriptor::parse(buf).ok();
    if let Ok(width) = vp8::set_picture_id(&mut copy, 0x5a5a) {
        let after = Vp8Descriptor::parse(&copy);
        assert_eq!(after.is_ok(), before.is_some());
        if let (Ok(a), Some(b)) = (after, before) {
            assert_eq!(a.picture_id, Some(0x5a5a & width.max()));
            assert_eq!(a.header_len, b.header_len);
        }
    }
    if vp8::set_tl0picidx(&mut copy, 0xa5).is_ok() {
        assert_eq!(copy.len(), buf.len());
    }

    if let Ok(d) = Vp9Descriptor::parse(buf) {
        assert!(d.header_len <= buf.len());
        assert!(d.p_diffs().len() <= vp9::MAX_REFERENCES);
        if let Some(ss) = d.scalability_structure {
            assert!(ss.len <= d.header_len);
            assert!((1..=8).contains(&ss.spatial_layers()));
            assert!(ss.resolutions().len() <= usize::from(ss.spatial_layers()));
        }
    }

    if let Ok(p) = H264Payload::parse(buf) {
        assert!(usize::from(p.nal_units) <= buf.len());
        let _ = p.starts_keyframe();
    }
}

#[test]
fn garbage_never_panics_and_header_len_stays_within_the_payload() {
    let mut rng = XorShift::new(0x00c0_dec5);
    let mut buf = [0u8; 64];
    for _ in 0..200_000 {
        let len = rng.below(buf.len() + 1);
        rng.fill(&mut buf[..len]);
        // Bias the flag bytes towards "everything present" half the time, where the walks are.
        if len > 1 && rng.below(2) == 0 {
            buf[0] |= 0x80;
            buf[1] |= 0xf0;
        }
        check_all(&buf[..len]);
    }
    for len in 0..=8 {
        for fill in [0x00, 0xff, 0x80, 0x7f, 0x18, 0x1c] {
            check_all(&[fill; 8][..len]);
        }
    }
}

/// A Dependency Descriptor after an L1T3 structure, and descriptors of arbitrary bits after it:
/// where the template walk and the custom fields are.
#[test]
fn av1_descriptors_after_a_structure_never_panic() {
    let mut rng = XorShift::new(0x0a11_dd00);
    let mut buf = [0u8; 40];
    for _ in 0..100_000 {
        let mut s = av1::tests::l1t3_structure();
        let len = rng.below(buf.len() + 1);
        rng.fill(&mut buf[..len]);
        if len > 3 && rng.below(4) != 0 {
            buf[3] &= 0x7f; // mostly no structure of its own: the frame's fields are read
        }
        check_av1(&buf[..len], &mut s);
        // Then frames of whatever structure that left: mandatory fields only, and with custom
        // fields (no structure of their own).
        let id = rng.below(64) as u8;
        check_av1(&[id, 0, 1], &mut s);
        let mut frame = [0u8; 12];
        rng.fill(&mut frame);
        frame[3] &= 0x7f;
        check_av1(&frame[..3 + rng.below(10)], &mut s);
    }
}

/// The Dependency Descriptor is the data of an RFC 8285 element; past 16 bytes, as with a
/// structure, it needs the two-byte form.
#[test]
fn av1_descriptor_reads_the_rtp_header_extension() {
    let dd = av1::tests::l3t3_keyframe();
    assert!(dd.len() > 16 && dd.len() <= 255);
    let mut ext = vec![0x03, dd.len() as u8]; // two-byte element: ID 3, length
    ext.extend_from_slice(&dd);
    ext.resize(ext.len().div_ceil(4) * 4, 0); // padding to 32-bit words
    let mut pkt = vec![0x90, 0x2d, 0x00, 0x01, 0, 0, 0, 1, 0xca, 0xfe, 0xba, 0xbe]; // X=1, PT 45
    pkt.extend_from_slice(&[0x10, 0x00]); // two-byte profile, appbits 0
    pkt.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
    pkt.extend_from_slice(&ext);
    pkt.extend_from_slice(&[0x10, 0x20]); // AV1 aggregation header and OBU bytes
    let v = RtpView::parse(&pkt).expect("valid RTP");
    let mut s = Av1Structure::new();
    let d = Av1Descriptor::parse(v.extension(3).expect("element 3"), &mut s).expect("valid DD");
    assert!(d.starts_keyframe());
    assert_eq!(
        (s.spatial_layers(), s.temporal_layers(), s.decode_targets()),
        (3, 3, 9)
    );
    assert_eq!(v.payload(), &[0x10, 0x20]);
}

/// The parsers take what [`RtpView::payload`] gives: header, extensions and padding excluded.
#[test]
fn parsers_read_the_rtp_payload() {
    let mut pkt = vec![
        0xa0, 0x60, 0x00, 0x01, 0, 0, 0, 1, 0xca, 0xfe, 0xba, 0xbe, // V=2 P=1
    ];
    pkt.extend_from_slice(&[0x90, 0x80, 0x85, 0x01, 0x10, 0x02, 0x00]); // VP8 keyframe start
    pkt.extend_from_slice(&[0, 0, 3]); // 3 bytes of RTP padding
    let v = RtpView::parse(&pkt).expect("valid RTP");
    let d = Vp8Descriptor::parse(v.payload()).expect("valid VP8");
    assert_eq!(d.picture_id, Some(0x0501));
    assert!(d.starts_keyframe());
    assert_eq!(d.header_len, 4);
    assert_eq!(v.payload().len() - d.header_len, 3);
}
