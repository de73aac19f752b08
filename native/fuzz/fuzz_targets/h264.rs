#![no_main]
//! Parses arbitrary bytes as an H.264 RTP payload and asks for every NAL unit type.

use libfuzzer_sys::fuzz_target;
use sluice_core::codec::h264::H264Payload;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = H264Payload::parse(data) {
        assert!(usize::from(p.nal_units) <= data.len());
        let _ = p.starts_keyframe();
        for t in 0..=255u8 {
            let _ = p.carries(t);
        }
    }
});
