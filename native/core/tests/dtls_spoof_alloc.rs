//! RFC 6347 section 4.1.2.7 without heap allocations: discarding a spoofed record on an
//! established association allocates nothing on our side (OpenSSL's own allocator is not seen).
//!
//! A counting global allocator wraps the system one; counting is on only around `handle_datagram`.

mod common;

use std::time::Instant;

use common::counting_alloc::{counted, Counting};
use common::spoof::{self, record, ALERT};
use sluice_core::dtls::{DtlsCert, DtlsConn, DtlsRole, HashAlg};

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
