use super::*;

const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    s.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// RFC 5769 section 2.1.
fn sample_request() -> Vec<u8> {
    hex("000100582112a442b7e7a701bc34d686fa87dfae
         802200105354554e207465737420636c69656e74
         002400046e0001ff
         80290008932ff9b151263b36
         000600096576746a3a68367659202020
         000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2
         80280004e57a3bcf")
}

/// RFC 5769 section 2.2.
fn sample_ipv4_response() -> Vec<u8> {
    hex("0101003c2112a442b7e7a701bc34d686fa87dfae
         8022000b7465737420766563746f7220
         002000080001a147e112a643
         000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7
         80280004c07d4c96")
}

/// RFC 5769 section 2.3.
fn sample_ipv6_response() -> Vec<u8> {
    hex("010100482112a442b7e7a701bc34d686fa87dfae
         8022000b7465737420766563746f7220
         002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9
         00080014a382954e4be67bf11784c97c8292c275bfe3ed41
         80280004c8fb0b4c")
}

#[test]
fn rfc5769_2_1_sample_request() {
    let buf = sample_request();
    assert!(is_stun(&buf));
    let msg = StunMessage::parse(&buf).expect("vector parses");
    assert_eq!(msg.class(), StunClass::Request);
    assert_eq!(msg.method(), BINDING);
    assert_eq!(msg.transaction_id(), TID);
    assert_eq!(msg.username(), Some(&b"evtj:h6vY"[..]));
    assert_eq!(msg.priority(), Some(0x6e00_01ff));
    assert_eq!(msg.ice_controlled(), Some(0x932f_f9b1_5126_3b36));
    assert_eq!(msg.ice_controlling(), None);
    assert!(!msg.use_candidate());
    assert!(msg.has_fingerprint());
    assert!(msg.verify_integrity(PASSWORD));
    assert!(!msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"));
    assert_eq!(local_ufrag_of(msg.username().unwrap()), Some(&b"evtj"[..]));
}

#[test]
fn rfc5769_2_1_sample_request_written_byte_exact() {
    let mut buf = Vec::new();
    StunWriter::new(&mut buf, StunClass::Request, BINDING, TID)
        .padding_byte(0x20)
        .software(b"STUN test client")
        .priority(0x6e00_01ff)
        .ice_controlled(0x932f_f9b1_5126_3b36)
        .username(b"evtj:h6vY")
        .finish(Some(PASSWORD));
    assert_eq!(buf, sample_request());
}

#[test]
fn rfc5769_2_2_sample_ipv4_response() {
    let buf = sample_ipv4_response();
    let msg = StunMessage::parse(&buf).expect("vector parses");
    assert_eq!(msg.class(), StunClass::SuccessResponse);
    assert_eq!(msg.method(), BINDING);
    assert_eq!(msg.transaction_id(), TID);
    assert_eq!(
        msg.xor_mapped_address(),
        Some("192.0.2.1:32853".parse().unwrap())
    );
    assert!(msg.has_fingerprint());
    assert!(msg.verify_integrity(PASSWORD));

    let mut out = Vec::new();
    StunWriter::new(&mut out, StunClass::SuccessResponse, BINDING, TID)
        .padding_byte(0x20)
        .software(b"test vector")
        .xor_mapped_address("192.0.2.1:32853".parse().unwrap())
        .finish(Some(PASSWORD));
    assert_eq!(out, buf);
}

#[test]
fn rfc5769_2_3_sample_ipv6_response() {
    let buf = sample_ipv6_response();
    let msg = StunMessage::parse(&buf).expect("vector parses");
    assert_eq!(msg.class(), StunClass::SuccessResponse);
    let want: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(msg.xor_mapped_address(), Some(want));
    assert!(msg.has_fingerprint());
    assert!(msg.verify_integrity(PASSWORD));

    let mut out = Vec::new();
    StunWriter::new(&mut out, StunClass::SuccessResponse, BINDING, TID)
        .padding_byte(0x20)
        .software(b"test vector")
        .xor_mapped_address(want)
        .finish(Some(PASSWORD));
    assert_eq!(out, buf);
}

#[test]
fn rfc8489_14_7_bad_fingerprint_rejected() {
    let mut buf = sample_request();
    let last = buf.len() - 1;
    buf[last] ^= 1;
    assert_eq!(
        StunMessage::parse(&buf).unwrap_err(),
        StunError::BadFingerprint
    );
}

#[test]
fn rfc8489_14_5_tampered_body_fails_integrity() {
    let mut buf = sample_request();
    // Flip a bit inside PRIORITY, then repair FINGERPRINT so only integrity catches it.
    buf[44] ^= 0x01;
    let fp_at = buf.len() - 8;
    let crc = crc32fast::hash(&buf[..fp_at]) ^ FINGERPRINT_XOR;
    buf[fp_at + 4..].copy_from_slice(&crc.to_be_bytes());
    let msg = StunMessage::parse(&buf).expect("still well-formed");
    assert!(!msg.verify_integrity(PASSWORD));
}

#[test]
fn rfc8489_5_class_and_method_round_trip() {
    for class in [
        StunClass::Request,
        StunClass::Indication,
        StunClass::SuccessResponse,
        StunClass::ErrorResponse,
    ] {
        for method in [0x001, 0x003, 0x00F, 0x010, 0x07F, 0x080, 0xABC, 0xFFF] {
            let mut buf = Vec::new();
            StunWriter::new(&mut buf, class, method, [9; 12]).finish(None);
            let msg = StunMessage::parse(&buf).unwrap();
            assert_eq!((msg.class(), msg.method()), (class, method));
            assert!(!msg.has_integrity());
            assert!(!msg.verify_integrity(b"x"));
        }
    }
}

#[test]
fn writer_round_trips_ice_attributes_and_error_code() {
    let mut buf = Vec::new();
    let v6: SocketAddr = "[::1]:5000".parse().unwrap();
    StunWriter::new(&mut buf, StunClass::ErrorResponse, BINDING, [3; 12])
        .username(b"abcd:efgh")
        .priority(1)
        .use_candidate()
        .ice_controlling(u64::MAX)
        .xor_mapped_address(v6)
        .error_code(487, "Role Conflict")
        .finish(Some(b"pwd"));
    assert_eq!(buf.len() % 4, 0);
    let msg = StunMessage::parse(&buf).unwrap();
    assert_eq!(msg.class(), StunClass::ErrorResponse);
    assert_eq!(msg.username(), Some(&b"abcd:efgh"[..]));
    assert_eq!(msg.priority(), Some(1));
    assert!(msg.use_candidate());
    assert_eq!(msg.ice_controlling(), Some(u64::MAX));
    assert_eq!(msg.xor_mapped_address(), Some(v6));
    assert_eq!(msg.error_code(), Some(487));
    assert!(msg.verify_integrity(b"pwd"));
    assert!(!msg.verify_integrity(b"pwe"));
    assert!(!msg.verify_integrity(b""));
}

#[test]
fn writer_reuses_buffer() {
    let mut buf = Vec::with_capacity(256);
    StunWriter::new(&mut buf, StunClass::Request, BINDING, [1; 12])
        .username(b"a:b")
        .finish(Some(b"k"));
    let first = buf.clone();
    let cap = buf.capacity();
    StunWriter::new(&mut buf, StunClass::Request, BINDING, [1; 12])
        .username(b"a:b")
        .finish(Some(b"k"));
    assert_eq!(buf, first);
    assert_eq!(buf.capacity(), cap);
}

#[test]
fn rfc8489_14_unknown_optional_skipped_unknown_required_reported() {
    let mut buf = Vec::new();
    StunWriter::new(&mut buf, StunClass::Request, BINDING, [1; 12])
        .attribute(0xC057, &[1, 2, 3]) // comprehension-optional (e.g. GOOG-NETWORK-INFO)
        .priority(7)
        .finish(None);
    let msg = StunMessage::parse(&buf).unwrap();
    assert_eq!(msg.priority(), Some(7));
    assert_eq!(msg.unknown_required_attribute(), None);

    StunWriter::new(&mut buf, StunClass::Request, BINDING, [1; 12])
        .attribute(0x7001, b"x")
        .finish(None);
    let msg = StunMessage::parse(&buf).unwrap();
    assert_eq!(msg.unknown_required_attribute(), Some(0x7001));
}

#[test]
fn rfc8489_14_5_attributes_after_integrity_ignored() {
    let mut buf = Vec::new();
    StunWriter::new(&mut buf, StunClass::Request, BINDING, [1; 12])
        .username(b"a:b")
        .finish(Some(b"k"));
    // Insert a PRIORITY after MESSAGE-INTEGRITY (before FINGERPRINT) and fix lengths and CRC.
    let fp_at = buf.len() - 8;
    buf.truncate(fp_at);
    buf.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0, 0, 0, 9]);
    let len = (buf.len() + 8 - HEADER_LEN) as u16;
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32fast::hash(&buf) ^ FINGERPRINT_XOR;
    buf.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
    buf.extend_from_slice(&crc.to_be_bytes());
    let msg = StunMessage::parse(&buf).unwrap();
    assert_eq!(msg.priority(), None);
    assert!(msg.verify_integrity(b"k"));
}

#[test]
fn rfc8489_14_7_fingerprint_must_be_last() {
    let mut buf = Vec::new();
    StunWriter::new(&mut buf, StunClass::Request, BINDING, [1; 12]).finish(None);
    buf.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    let len = (buf.len() - HEADER_LEN) as u16;
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    // Recompute the CRC over the header with the final length, so only the order is wrong.
    let fp_at = buf.len() - 12;
    let crc = crc32fast::hash(&buf[..fp_at]) ^ FINGERPRINT_XOR;
    buf[fp_at + 4..fp_at + 8].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        StunMessage::parse(&buf).unwrap_err(),
        StunError::FingerprintNotLast
    );
}

#[test]
fn header_errors() {
    assert_eq!(StunMessage::parse(&[]).unwrap_err(), StunError::TooShort);
    assert_eq!(
        StunMessage::parse(&[0; 19]).unwrap_err(),
        StunError::TooShort
    );
    let mut buf = sample_request();
    buf[0] = 0x40;
    assert_eq!(StunMessage::parse(&buf).unwrap_err(), StunError::NotStun);
    assert!(!is_stun(&buf));
    let mut buf = sample_request();
    buf[5] = 0;
    assert_eq!(StunMessage::parse(&buf).unwrap_err(), StunError::NotStun);
    let mut buf = sample_request();
    buf.push(0);
    assert_eq!(StunMessage::parse(&buf).unwrap_err(), StunError::BadLength);
    let mut buf = sample_request();
    buf[3] = 0x57;
    assert_eq!(StunMessage::parse(&buf).unwrap_err(), StunError::BadLength);
}

#[test]
fn bad_attribute_lengths_rejected() {
    for (typ, len) in [
        (0x0024u16, 3usize),
        (0x0025, 4),
        (0x802A, 4),
        (0x8029, 12),
        (0x0008, 16),
        (0x0020, 4),
    ] {
        let mut buf = Vec::new();
        StunWriter::new(&mut buf, StunClass::Request, BINDING, [1; 12])
            .attribute(typ, &vec![0u8; len]);
        let total = (buf.len() - HEADER_LEN) as u16;
        buf[2..4].copy_from_slice(&total.to_be_bytes());
        assert_eq!(
            StunMessage::parse(&buf).unwrap_err(),
            StunError::BadAttribute,
            "type {typ:#x}"
        );
    }
}

#[test]
fn truncated_and_garbage_never_panic() {
    let vectors = [
        sample_request(),
        sample_ipv4_response(),
        sample_ipv6_response(),
    ];
    for v in &vectors {
        for end in 0..=v.len() {
            let _ = StunMessage::parse(&v[..end]).map(|m| exercise(&m));
            let _ = is_stun(&v[..end]);
        }
    }
    // Every length 0..=40, with a valid-looking header and pseudo-random bodies.
    let mut seed = 0x1234_5678u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for len in 0..=40usize {
        for round in 0..500 {
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && len >= 8 {
                buf[0] &= 0x01;
                buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                if len >= 20 {
                    let l = ((len - 20) as u16) & !3;
                    buf[2..4].copy_from_slice(&l.to_be_bytes());
                }
            }
            let _ = is_stun(&buf);
            if let Ok(m) = StunMessage::parse(&buf) {
                exercise(&m);
            }
            let _ = local_ufrag_of(&buf);
        }
    }
}

fn exercise(m: &StunMessage<'_>) {
    let _ = (
        m.class(),
        m.method(),
        m.transaction_id(),
        m.username(),
        m.priority(),
    );
    let _ = (
        m.use_candidate(),
        m.ice_controlling(),
        m.ice_controlled(),
        m.xor_mapped_address(),
    );
    let _ = (
        m.error_code(),
        m.unknown_required_attribute(),
        m.verify_integrity(b"x"),
    );
}

#[test]
fn local_ufrag_routing() {
    assert_eq!(local_ufrag_of(b"abcd:efgh"), Some(&b"abcd"[..]));
    assert_eq!(local_ufrag_of(b"abcd:"), Some(&b"abcd"[..]));
    assert_eq!(local_ufrag_of(b"a:b:c"), Some(&b"a"[..]));
    assert_eq!(local_ufrag_of(b":efgh"), None);
    assert_eq!(local_ufrag_of(b"abcd"), None);
    assert_eq!(local_ufrag_of(b""), None);
}
