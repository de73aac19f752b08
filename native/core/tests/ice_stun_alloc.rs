//! STUN hot path allocates nothing on the Rust heap: parse, every accessor, verify_integrity, and
//! writing into a reused buffer. (OpenSSL's own C-heap use inside HMAC is not counted here.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_core::stun::{local_ufrag_of, StunClass, StunMessage, StunWriter, BINDING};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwards the caller's layout contract to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
}

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

    let before = ALLOCS.load(Ordering::Relaxed);
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
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(ok, 1000);
    assert_eq!(
        after - before,
        0,
        "Rust heap allocations on the STUN hot path"
    );
}
