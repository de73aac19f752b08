#![no_main]
//! RFC 6347 section 4.1.2.7 on an established association: a connected pair of our own
//! `DtlsConn`s, and arbitrary datagrams thrown at one side. Nothing the fuzzer sends can be
//! authentic (it holds no keys), so every record must be discarded and counted, the association
//! must stay connected and reading, and nothing may be sent back or reported. Also checks the
//! framing walk (`record::valid_prefix`) on the raw input.
//!
//! Input: one selector byte (which side is hit), then datagrams, each a 2-byte big-endian length
//! and that many bytes (the last one takes whatever is left).

use std::cell::RefCell;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sluice_core::dtls::record::{self, MAX_FRAGMENT_LEN, RECORD_HEADER_LEN};
use sluice_core::dtls::{DtlsCert, DtlsConn, DtlsRole, HashAlg};

struct Pair {
    client: DtlsConn,
    server: DtlsConn,
}

/// A handshake is far too slow to run per input, so one connected pair serves every input; the
/// invariants below prove no input changed its state.
fn connected_pair() -> Pair {
    let a = DtlsCert::generate().expect("fuzz setup: certificate");
    let b = DtlsCert::generate().expect("fuzz setup: certificate");
    let mut client = DtlsConn::new(&a, DtlsRole::Client, vec![b.fingerprint(HashAlg::Sha256)])
        .expect("fuzz setup: client");
    let mut server = DtlsConn::new(&b, DtlsRole::Server, vec![a.fingerprint(HashAlg::Sha256)])
        .expect("fuzz setup: server");
    let now = Instant::now();
    server.start(now);
    client.start(now);
    for _ in 0..20 {
        while let Some(d) = client.poll_transmit() {
            server.handle_datagram(now, &d);
        }
        while let Some(d) = server.poll_transmit() {
            client.handle_datagram(now, &d);
        }
    }
    assert!(
        client.is_connected() && server.is_connected(),
        "fuzz setup: handshake"
    );
    while client.poll_event().is_some() || server.poll_event().is_some() {}
    Pair { client, server }
}

thread_local! {
    static PAIR: RefCell<Option<Pair>> = const { RefCell::new(None) };
}

/// What `handle_datagram` must report for a datagram no one authenticated: every whole record,
/// plus one for a malformed remainder (or one for the whole datagram if it is oversized).
fn expected_discards(datagram: &[u8]) -> u64 {
    if datagram.len() > RECORD_HEADER_LEN + MAX_FRAGMENT_LEN {
        return 1;
    }
    let (valid, error) = record::valid_prefix(datagram);
    let mut rest = &datagram[..valid];
    let mut records = 0;
    while let Ok((_, _, next)) = record::parse_record(rest) {
        records += 1;
        rest = next;
    }
    assert!(rest.is_empty(), "valid_prefix ends on a record boundary");
    records + u64::from(error.is_some())
}

fn check_framing(data: &[u8]) {
    let (valid, error) = record::valid_prefix(data);
    assert!(valid <= data.len());
    assert_eq!(error.is_none(), !data.is_empty() && valid == data.len());
    if let Some(rest) = data.get(valid..).filter(|r| !r.is_empty()) {
        assert!(
            record::parse_record(rest).is_err(),
            "the walk stopped at a good record"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check_framing(data);
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    PAIR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let pair = slot.get_or_insert_with(connected_pair);
        let target = if selector % 2 == 0 {
            &mut pair.server
        } else {
            &mut pair.client
        };
        let now = Instant::now();
        while !rest.is_empty() {
            let datagram;
            (datagram, rest) = match rest {
                [hi, lo, tail @ ..] => {
                    tail.split_at(usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len()))
                }
                last => (last, &[][..]),
            };
            let before = target.dropped_records();
            let discarded = target.handle_datagram(now, datagram);
            assert_eq!(discarded, expected_discards(datagram), "{datagram:02x?}");
            assert_eq!(target.dropped_records() - before, discarded);
            assert!(
                target.is_connected(),
                "a forged record ended the association"
            );
            assert!(
                !target.is_read_stopped(),
                "OpenSSL failed on a forged record"
            );
            assert!(
                target.poll_event().is_none(),
                "a forged record raised an event"
            );
            assert!(
                target.poll_transmit().is_none(),
                "a forged record was answered"
            );
        }
    });
});
