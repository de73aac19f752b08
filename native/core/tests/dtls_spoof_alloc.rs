//! RFC 6347 section 4.1.2.7 without heap allocations: discarding a spoofed record on an
//! established association allocates nothing on our side (OpenSSL's own allocator is not seen).
//!
//! A counting global allocator wraps the system one; counting is on only around `handle_datagram`.

mod common;

use std::time::Instant;

use common::spoof::{self, record, ALERT};
use sluice_testutil::counting_alloc::{counted, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn rfc6347_4_1_2_7_discarding_spoofed_records_allocates_nothing() {
    let now = Instant::now();
    let (_client, mut server) = spoof::connected_pair(now);

    // Every kind, built before counting; a warm-up pass grows the receive buffer once.
    let datagrams: Vec<(Vec<u8>, u64)> = spoof::kinds(26)
        .iter()
        .flat_map(|(_, make)| (0..100).map(make))
        .collect();
    let big = record(ALERT, 1, 1, &[0; 1500]);
    server.handle_datagram(now, &big);

    let (discarded, allocs) = counted(|| {
        datagrams
            .iter()
            .map(|(datagram, _)| server.handle_datagram(now, datagram))
            .sum::<u64>()
    });

    assert_eq!(discarded, datagrams.iter().map(|(_, n)| n).sum::<u64>());
    assert!(server.is_connected() && !server.is_read_stopped());
    assert_eq!(
        allocs,
        0,
        "{allocs} allocations for {} datagrams",
        datagrams.len()
    );
}
