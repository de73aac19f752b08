#![no_main]
//! STUN parser: any input either fails to parse or yields a view whose accessors never panic.

use libfuzzer_sys::fuzz_target;
use sluice_core::stun::{attr, decode_xor_address, is_stun, local_ufrag_of, StunMessage};

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
        // TURN's attributes, as the load generator's client reads them.
        for typ in [attr::REALM, attr::NONCE, 0x000D, 0x0016, data.len() as u16] {
            if let Some(v) = msg.attribute(typ) {
                assert!(v.len() <= data.len());
                let _ = decode_xor_address(v, &msg.transaction_id());
            }
        }
    }
});
