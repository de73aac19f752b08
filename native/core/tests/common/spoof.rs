//! Spoofed DTLS records: what an attacker who can send from a peer's address (but holds none of
//! its keys) may throw at an established association.

use std::time::Instant;

use sluice_core::dtls::{DtlsCert, DtlsConn, DtlsRole, HashAlg};

/// ContentType values (RFC 5246 section 6.2.1).
pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;

/// An RFC 6347 section 4.1 record with the DTLS 1.2 version.
pub fn record(content_type: u8, epoch: u16, seq: u64, fragment: &[u8]) -> Vec<u8> {
    let mut out = vec![content_type, 0xfe, 0xfd];
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes()[2..]);
    out.extend_from_slice(&u16::try_from(fragment.len()).expect("small").to_be_bytes());
    out.extend_from_slice(fragment);
    out
}

/// Deterministic junk (xorshift), so failures reproduce.
pub fn junk(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// One kind of spoof: record number `i` of that kind → (datagram, records in it).
pub type Spoof = (&'static str, Box<dyn Fn(u64) -> (Vec<u8>, u64)>);

/// Every kind, for a suite whose protected alert is `alert_len` bytes (26 for AES-GCM).
pub fn kinds(alert_len: usize) -> Vec<Spoof> {
    fn one(d: Vec<u8>) -> (Vec<u8>, u64) {
        (d, 1)
    }
    let size = |i: u64, modulo: usize| i as usize % modulo;
    vec![
        // The reported kill: a 15-byte epoch-1 alert (2-byte fragment).
        (
            "alert fatal epoch 1, 15 bytes",
            Box::new(|i| one(record(ALERT, 1, i, &[2, 40]))),
        ),
        (
            "alert warning epoch 1, 15 bytes",
            Box::new(|i| one(record(ALERT, 1, i, &[1, 0]))),
        ),
        (
            "alert fatal epoch 0",
            Box::new(|i| one(record(ALERT, 0, i, &[2, 40]))),
        ),
        (
            "alert close_notify epoch 0",
            Box::new(|i| one(record(ALERT, 0, i, &[1, 0]))),
        ),
        // Exactly a protected alert's length: only the MAC or tag can refuse these.
        (
            "alert epoch 1, exact ciphertext length",
            Box::new(move |i| one(record(ALERT, 1, i + 1, &junk(i, alert_len)))),
        ),
        (
            "alert epoch 1, long",
            Box::new(move |i| one(record(ALERT, 1, i, &junk(i, 64 + size(i, 900))))),
        ),
        (
            "application data epoch 1",
            Box::new(move |i| one(record(APPLICATION_DATA, 1, i, &junk(i, size(i, 1200))))),
        ),
        (
            "handshake epoch 1, short",
            Box::new(move |i| one(record(HANDSHAKE, 1, i, &junk(i, size(i, 24))))),
        ),
        // Finished-sized and larger: plausible, refused by the MAC or tag.
        (
            "handshake epoch 1, plausible",
            Box::new(move |i| one(record(HANDSHAKE, 1, i + 1, &junk(i, 48 + size(i, 16) * 16)))),
        ),
        (
            "handshake epoch 0, ClientHello-like",
            Box::new(|i| {
                one(record(
                    HANDSHAKE,
                    0,
                    i,
                    &[&[1u8, 0, 0, 40][..], &junk(i, 40)].concat(),
                ))
            }),
        ),
        (
            "change_cipher_spec epoch 0",
            Box::new(|i| one(record(CHANGE_CIPHER_SPEC, 0, i, &[1]))),
        ),
        (
            "change_cipher_spec epoch 1",
            Box::new(move |i| one(record(CHANGE_CIPHER_SPEC, 1, i, &junk(i, 1 + size(i, 40))))),
        ),
        (
            "epoch 2",
            Box::new(move |i| one(record(ALERT, 2, i, &junk(i, alert_len)))),
        ),
        (
            "epoch 0xffff",
            Box::new(|i| one(record(HANDSHAKE, 0xffff, i, &junk(i, 48)))),
        ),
        (
            "shorter than the cipher minimum",
            Box::new(move |i| {
                let types = [ALERT, HANDSHAKE, APPLICATION_DATA, CHANGE_CIPHER_SPEC];
                one(record(types[size(i, 4)], 1, i, &junk(i, size(i, 24))))
            }),
        ),
        (
            "garbage of valid framing, three records per datagram",
            Box::new(|i| {
                let datagram: Vec<u8> = (0..3)
                    .flat_map(|k| {
                        let bytes = junk(i * 3 + k, 4);
                        let epoch = u16::from(bytes[1] % 3);
                        record(
                            20 + bytes[0] % 4,
                            epoch,
                            i,
                            &junk(i + k, usize::from(bytes[2]) + 1),
                        )
                    })
                    .collect();
                (datagram, 3)
            }),
        ),
    ]
}

/// Two of our own DtlsConns (client, server) after a real handshake in memory, their events drained.
pub fn connected_pair(now: Instant) -> (DtlsConn, DtlsConn) {
    let a = DtlsCert::generate().expect("cert");
    let b = DtlsCert::generate().expect("cert");
    let mut client =
        DtlsConn::new(&a, DtlsRole::Client, vec![b.fingerprint(HashAlg::Sha256)]).expect("conn");
    let mut server =
        DtlsConn::new(&b, DtlsRole::Server, vec![a.fingerprint(HashAlg::Sha256)]).expect("conn");
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
    assert!(client.is_connected() && server.is_connected());
    while client.poll_event().is_some() || server.poll_event().is_some() {}
    (client, server)
}
