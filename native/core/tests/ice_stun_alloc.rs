//! STUN hot path allocates nothing on the Rust heap: parse, every accessor, verify_integrity, and
//! writing into a reused buffer. (OpenSSL's own C-heap use inside HMAC is not counted here.)

use sluice_core::stun::{local_ufrag_of, StunClass, StunMessage, StunWriter, BINDING};
use sluice_testutil::counting_alloc::{allocations_here, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn parse_verify_and_write_do_not_allocate() {
    let key = b"VOkJxbRl1RmTxUk/WvJxBt";
    let mut buf = Vec::with_capacity(256);
    StunWriter::new(&mut buf, StunClass::Request, BINDING, [5; 12])
        .username(b"abcd1234:efgh5678")
        .priority(0x6e00_1eff)
        .ice_controlling(7)
        .use_candidate()
        .finish(Some(key));
    let mut out = Vec::with_capacity(256);
    let from = "192.0.2.1:32853".parse().unwrap();

    // Warm-up: OpenSSL's one-time library initialisation.
    assert!(StunMessage::parse(&buf).unwrap().verify_integrity(key));

    let before = allocations_here();
    let mut ok = 0;
    for _ in 0..1000 {
        let m = StunMessage::parse(&buf).unwrap();
        let _ = (
            m.class(),
            m.method(),
            m.transaction_id(),
            m.priority(),
            m.use_candidate(),
        );
        let _ = (
            m.ice_controlling(),
            m.ice_controlled(),
            m.xor_mapped_address(),
            m.error_code(),
        );
        let _ = local_ufrag_of(m.username().unwrap());
        ok += usize::from(m.verify_integrity(key));
        StunWriter::new(
            &mut out,
            StunClass::SuccessResponse,
            BINDING,
            m.transaction_id(),
        )
        .xor_mapped_address(from)
        .finish(Some(key));
    }
    let after = allocations_here();
    assert_eq!(ok, 1000);
    assert_eq!(
        after - before,
        0,
        "Rust heap allocations on the STUN hot path"
    );
}
