//! RFC 6347 section 4.1.2.7 without heap allocations: discarding a spoofed record on an
//! established association allocates nothing on our side (OpenSSL's own allocator is not seen).
//!
//! A counting global allocator wraps the system one; counting is on only around `handle_datagram`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use common::spoof::{self, record, ALERT};
use sluice_core::dtls::{DtlsCert, DtlsConn, DtlsRole, HashAlg};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers to the system allocator; only adds a relaxed counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn rfc6347_4_1_2_7_discarding_spoofed_records_allocates_nothing() {
    let a = DtlsCert::generate().expect("cert");
    let b = DtlsCert::generate().expect("cert");
    let mut client =
        DtlsConn::new(&a, DtlsRole::Client, vec![b.fingerprint(HashAlg::Sha256)]).expect("conn");
    let mut server =
        DtlsConn::new(&b, DtlsRole::Server, vec![a.fingerprint(HashAlg::Sha256)]).expect("conn");
    let now = Instant::now();
    server.start(now);
    client.start(now);
    for _ in 0..10 {
        while let Some(d) = client.poll_transmit() {
            server.handle_datagram(now, &d);
        }
        while let Some(d) = server.poll_transmit() {
            client.handle_datagram(now, &d);
        }
    }
    assert!(server.is_connected());
    while server.poll_event().is_some() {}

    // Every kind, built before counting; a warm-up pass grows the receive buffer once.
    let datagrams: Vec<(Vec<u8>, u64)> = spoof::kinds(26)
        .iter()
        .flat_map(|(_, make)| (0..100).map(make))
        .collect();
    let big = record(ALERT, 1, 1, &[0; 1500]);
    server.handle_datagram(now, &big);

    ALLOCS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let mut discarded = 0;
    for (datagram, _) in &datagrams {
        discarded += server.handle_datagram(now, datagram);
    }
    COUNTING.store(false, Ordering::Relaxed);
    let allocs = ALLOCS.load(Ordering::Relaxed);

    assert_eq!(discarded, datagrams.iter().map(|(_, n)| n).sum::<u64>());
    assert!(server.is_connected() && !server.is_read_stopped());
    assert_eq!(
        allocs,
        0,
        "{allocs} allocations for {} datagrams",
        datagrams.len()
    );
}
