#![no_main]
//! Parses arbitrary bytes as a VP8 RTP payload, then runs both rewrite helpers on a copy and
//! checks that a rewritten packet still parses to the same layout with the new values.

use libfuzzer_sys::fuzz_target;
use sluice_core::codec::vp8::{set_picture_id, set_tl0picidx, Vp8Descriptor};

fuzz_target!(|data: &[u8]| {
    let parsed = Vp8Descriptor::parse(data);
    if let Ok(d) = parsed {
        assert!(d.header_len <= data.len());
        let _ = (d.starts_frame(), d.starts_keyframe());
    }
    let mut copy = data.to_vec();
    let value = data.len() as u16 ^ 0x2b3c;
    if let Ok(width) = set_picture_id(&mut copy, value) {
        let after = Vp8Descriptor::parse(&copy);
        assert_eq!(after.is_ok(), parsed.is_ok());
        if let (Ok(a), Ok(b)) = (after, parsed) {
            assert_eq!(a.picture_id, Some(value & width.max()));
            assert_eq!(a.header_len, b.header_len);
        }
    }
    if set_tl0picidx(&mut copy, 0xa7).is_ok() {
        if let Ok(a) = Vp8Descriptor::parse(&copy) {
            assert_eq!(a.tl0picidx, Some(0xa7));
        }
    }
    assert_eq!(copy.len(), data.len());
});
