#![no_main]
//! The shard's whole per-datagram path: RFC 7983 classification, STUN routing, DTLS, SRTP, RTP/RTCP.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_core::shard::fuzz::demux(data);
});
