#![no_main]
//! STUN parser: any input either fails to parse or yields a view whose accessors never panic.

use libfuzzer_sys::fuzz_target;
use sluice_core::stun::{is_stun, local_ufrag_of, StunMessage};

fuzz_target!(|data: &[u8]| {
    let _ = is_stun(data);
    if let Ok(msg) = StunMessage::parse(data) {
        let _ = (
            msg.class(),
            msg.method(),
            msg.transaction_id(),
            msg.priority(),
            msg.use_candidate(),
        );
        let _ = (
            msg.ice_controlling(),
            msg.ice_controlled(),
            msg.xor_mapped_address(),
            msg.error_code(),
        );
        let _ = (
            msg.has_integrity(),
            msg.has_fingerprint(),
            msg.unknown_required_attribute(),
        );
        if let Some(username) = msg.username() {
            let _ = local_ufrag_of(username);
        }
        let _ = msg.verify_integrity(b"x");
    }
});
