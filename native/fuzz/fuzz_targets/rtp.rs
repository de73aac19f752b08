#![no_main]
//! Parses arbitrary bytes as RTP, then reads every accessor and walks every extension.

use libfuzzer_sys::fuzz_target;
use sluice_core::rtp::{is_rtcp, RtpView};

fuzz_target!(|data: &[u8]| {
    let _ = is_rtcp(data);
    if let Ok(v) = RtpView::parse(data) {
        let _ = (
            v.marker(),
            v.payload_type(),
            v.sequence_number(),
            v.timestamp(),
            v.ssrc(),
        );
        let _ = v.csrcs().count();
        let _ = (v.header_len(), v.payload(), v.padding_len(), v.as_bytes());
        let _ = (v.extension_profile(), v.extension_data());
        for (id, ext) in v.extensions() {
            let _ = (id, ext.len());
        }
        for id in 0..=255u8 {
            let _ = v.extension(id);
        }
        assert_eq!(
            v.header_len() + v.payload().len() + v.padding_len(),
            data.len()
        );
    }
});
