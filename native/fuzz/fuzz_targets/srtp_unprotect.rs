#![no_main]
//! Feeds arbitrary datagrams to SRTP and SRTCP unprotect for both profiles; nothing may panic.

use libfuzzer_sys::fuzz_target;
use sluice_core::srtp::{SrtpContext, SrtpProfile};

fuzz_target!(|data: &[u8]| {
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let key = [0x42u8; 16];
        let salt = [0x24u8; 14];
        let salt = &salt[..profile.master_salt_len()];
        let mut ctx = SrtpContext::new(profile, &key, salt).expect("fixed keys are valid");
        let mut buf = data.to_vec();
        let _ = ctx.unprotect_rtp(&mut buf);
        let mut buf = data.to_vec();
        let _ = ctx.unprotect_rtcp(&mut buf);
    }
});
