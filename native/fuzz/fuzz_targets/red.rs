#![no_main]
//! Parses arbitrary bytes as an RFC 2198 RED payload inside an RTP packet: the blocks must tile the
//! payload exactly, and the packet stripped to the primary must parse as RTP with the primary's payload
//! type, the same header length and the primary's data as its payload.

use libfuzzer_sys::fuzz_target;
use sluice_core::rtp::{strip_to_primary, RedPayload, RtpView};

fuzz_target!(|data: &[u8]| {
    if let Ok(red) = RedPayload::parse(data) {
        let total: usize = red.blocks().map(|b| b.data.len()).sum();
        assert_eq!(total + 4 * red.redundant_count() + 1, data.len());
    }
    // The same bytes as the payload of a minimal RTP packet with padding-free header.
    let mut packet = vec![0x80, 63, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    packet.extend_from_slice(data);
    let Ok(rtp) = RtpView::parse(&packet) else {
        return;
    };
    let Ok(red) = RedPayload::parse(rtp.payload()) else {
        return;
    };
    let mut out = [0u8; 2048];
    if let Some(n) = strip_to_primary(&rtp, &red, &mut out) {
        let stripped = RtpView::parse(&out[..n]).expect("a stripped packet is RTP");
        assert_eq!(stripped.payload_type(), red.primary().pt);
        assert_eq!(stripped.header_len(), rtp.header_len());
        assert_eq!(stripped.payload(), red.primary().data);
    }
});
