#![no_main]
//! Parses arbitrary bytes as a VP9 RTP payload descriptor and reads every field.

use libfuzzer_sys::fuzz_target;
use sluice_core::codec::vp9::{Vp9Descriptor, MAX_REFERENCES};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Vp9Descriptor::parse(data) {
        assert!(d.header_len <= data.len());
        assert!(d.p_diffs().len() <= MAX_REFERENCES);
        let _ = d.starts_keyframe();
        if let Some(ss) = d.scalability_structure {
            assert!(ss.len < d.header_len);
            assert!(ss.resolutions().len() <= usize::from(ss.spatial_layers()));
        }
    }
});
