//! Properties shared by every codec parser: no panic on any input, and a descriptor never claims
//! more bytes than the payload has. Per-RFC vectors live beside each parser.

use super::h264::H264Payload;
use super::vp8::{self, Vp8Descriptor};
use super::vp9::Vp9Descriptor;
use super::*;
use crate::rtp::tests::XorShift;
use crate::rtp::RtpView;

/// Runs every parser and rewrite helper over `buf`, checking the length property.
fn check_all(buf: &[u8]) {
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
