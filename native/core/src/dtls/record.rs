//! DTLS record framing check (RFC 6347 section 4.1), run before OpenSSL sees a datagram.
//!
//! OpenSSL silently discards records it cannot use, so we could not count them. Walking the
//! record headers first lets us count datagrams that are not DTLS at all (truncated, unknown
//! content type, wrong version, oversized) and hand OpenSSL only whole, plausible records.
//! It never allocates.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  ContentType  |   ProtocolVersion (major, minor)  |   epoch ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ... epoch       |            sequence_number (48 bits) ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ... sequence_number                             |    length     ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ... length      |  fragment (length bytes) ...
//! +-+-+-+-+-+-+-+-+
//! ```

/// RFC 6347 section 4.1: type (1) + version (2) + epoch (2) + sequence_number (6) + length (2).
pub const RECORD_HEADER_LEN: usize = 13;

/// RFC 5246 section 6.2.3 (inherited by RFC 6347): a ciphertext fragment is at most 2^14 + 2048 bytes.
pub const MAX_FRAGMENT_LEN: usize = (1 << 14) + 2048;

/// ContentType values (RFC 5246 section 6.2.1) that a DTLS 1.2 peer may send us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    /// change_cipher_spec(20)
    ChangeCipherSpec,
    /// alert(21)
    Alert,
    /// handshake(22)
    Handshake,
    /// application_data(23)
    ApplicationData,
}

impl ContentType {
    /// Maps the wire value; heartbeat(24) and anything else is refused (we never negotiate it).
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            20 => Some(ContentType::ChangeCipherSpec),
            21 => Some(ContentType::Alert),
            22 => Some(ContentType::Handshake),
            23 => Some(ContentType::ApplicationData),
            _ => None,
        }
    }
}

/// DTLS 1.0 wire version {254, 255}; still used in the ClientHello record by some stacks.
pub const DTLS1_0_VERSION: u16 = 0xfeff;
/// DTLS 1.2 wire version {254, 253}.
pub const DTLS1_2_VERSION: u16 = 0xfefd;

/// One parsed DTLS record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// The record's content type.
    pub content_type: ContentType,
    /// The wire version, `DTLS1_0_VERSION` or `DTLS1_2_VERSION`.
    pub version: u16,
    /// Cipher state epoch (0 until ChangeCipherSpec).
    pub epoch: u16,
    /// 48-bit record sequence number.
    pub sequence_number: u64,
    /// Length of the fragment that follows the header.
    pub length: u16,
}

/// Why a record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than a header, or than the header's length field announces.
    Truncated,
    /// Content type outside 20..=23.
    UnknownContentType(u8),
    /// Version other than DTLS 1.0 or 1.2.
    BadVersion(u16),
    /// Length field above 2^14 + 2048.
    TooLong(u16),
}

/// Parses one record from the front of `buf`: header, fragment, and the bytes after it.
pub fn parse_record(buf: &[u8]) -> Result<(RecordHeader, &[u8], &[u8]), RecordError> {
    let Some((header, rest)) = buf.split_first_chunk::<RECORD_HEADER_LEN>() else {
        return Err(RecordError::Truncated);
    };
    let [ty, v0, v1, e0, e1, s0, s1, s2, s3, s4, s5, l0, l1] = *header;
    let content_type = ContentType::from_u8(ty).ok_or(RecordError::UnknownContentType(ty))?;
    let version = u16::from_be_bytes([v0, v1]);
    if version != DTLS1_0_VERSION && version != DTLS1_2_VERSION {
        return Err(RecordError::BadVersion(version));
    }
    let length = u16::from_be_bytes([l0, l1]);
    if usize::from(length) > MAX_FRAGMENT_LEN {
        return Err(RecordError::TooLong(length));
    }
    if rest.len() < usize::from(length) {
        return Err(RecordError::Truncated);
    }
    let (fragment, rest) = rest.split_at(usize::from(length));
    let header = RecordHeader {
        content_type,
        version,
        epoch: u16::from_be_bytes([e0, e1]),
        sequence_number: u64::from_be_bytes([0, 0, s0, s1, s2, s3, s4, s5]),
        length,
    };
    Ok((header, fragment, rest))
}

/// Length of the longest prefix of `datagram` made of whole well-formed records, and the
/// error that ended the walk early, if any. An empty datagram gives `(0, Some(Truncated))`.
pub fn valid_prefix(datagram: &[u8]) -> (usize, Option<RecordError>) {
    if datagram.is_empty() {
        return (0, Some(RecordError::Truncated));
    }
    let mut rest = datagram;
    while !rest.is_empty() {
        match parse_record(rest) {
            Ok((_, _, next)) => rest = next,
            Err(e) => return (datagram.len() - rest.len(), Some(e)),
        }
    }
    (datagram.len(), None)
}

/// RFC 6347 section 4.2.2 / RFC 5246 section 7.4: HandshakeType client_hello(1), the first byte
/// of a handshake fragment.
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 1;

/// True if the datagram starts with a plaintext (epoch 0) handshake record carrying a
/// ClientHello: the only thing a server should accept before its handshake begins.
pub fn starts_with_client_hello(datagram: &[u8]) -> bool {
    match parse_record(datagram) {
        Ok((header, fragment, _)) => {
            header.content_type == ContentType::Handshake
                && header.epoch == 0
                && fragment.first() == Some(&HANDSHAKE_TYPE_CLIENT_HELLO)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ty: u8, version: u16, epoch: u16, seq: u64, body: &[u8]) -> Vec<u8> {
        let mut out = vec![ty];
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes()[2..]);
        let len = u16::try_from(body.len()).expect("test bodies are small");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn rfc6347_4_1_record_header_fields() {
        let wire = record(22, DTLS1_2_VERSION, 1, 0x0000_0102_0304, b"abc");
        let (header, fragment, rest) = parse_record(&wire).expect("well formed");
        assert_eq!(
            header,
            RecordHeader {
                content_type: ContentType::Handshake,
                version: DTLS1_2_VERSION,
                epoch: 1,
                sequence_number: 0x0102_0304,
                length: 3,
            }
        );
        assert_eq!(fragment, b"abc");
        assert!(rest.is_empty());
    }

    #[test]
    fn rfc6347_4_1_several_records_in_one_datagram() {
        let mut wire = record(22, DTLS1_0_VERSION, 0, 0, &[1; 40]);
        wire.extend(record(20, DTLS1_2_VERSION, 0, 1, &[1]));
        wire.extend(record(22, DTLS1_2_VERSION, 1, 0, &[9; 60]));
        assert_eq!(valid_prefix(&wire), (wire.len(), None));
    }

    #[test]
    fn refuses_bad_framing() {
        let good = record(23, DTLS1_2_VERSION, 1, 7, &[0; 10]);
        assert_eq!(valid_prefix(&[]), (0, Some(RecordError::Truncated)));
        assert_eq!(
            parse_record(&good[..12]).map(|r| r.0),
            Err(RecordError::Truncated)
        );
        assert_eq!(
            parse_record(&good[..20]).map(|r| r.0),
            Err(RecordError::Truncated)
        );
        let mut bad = good.clone();
        bad[0] = 24;
        assert_eq!(
            parse_record(&bad).map(|r| r.0),
            Err(RecordError::UnknownContentType(24))
        );
        let mut bad = good.clone();
        bad[1..3].copy_from_slice(&0x0303u16.to_be_bytes());
        assert_eq!(
            parse_record(&bad).map(|r| r.0),
            Err(RecordError::BadVersion(0x0303))
        );
        let mut bad = good.clone();
        bad[11..13].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            parse_record(&bad).map(|r| r.0),
            Err(RecordError::TooLong(u16::MAX))
        );
    }

    #[test]
    fn rfc6347_4_2_2_client_hello_detection() {
        assert!(starts_with_client_hello(&record(
            22,
            DTLS1_0_VERSION,
            0,
            0,
            &[1, 0, 0, 9]
        )));
        assert!(!starts_with_client_hello(&record(
            22,
            DTLS1_2_VERSION,
            1,
            0,
            &[1, 0]
        )));
        assert!(!starts_with_client_hello(&record(
            22,
            DTLS1_2_VERSION,
            0,
            0,
            &[2, 0]
        )));
        assert!(!starts_with_client_hello(&record(
            21,
            DTLS1_2_VERSION,
            0,
            0,
            &[1, 0]
        )));
        assert!(!starts_with_client_hello(&record(
            22,
            DTLS1_2_VERSION,
            0,
            0,
            &[]
        )));
        assert!(!starts_with_client_hello(b"junk"));
    }

    #[test]
    fn valid_prefix_stops_at_first_bad_record() {
        let mut wire = record(22, DTLS1_2_VERSION, 0, 0, &[1; 30]);
        let first = wire.len();
        wire.extend_from_slice(&[0x17, 0xfe, 0xfd, 0, 1]); // truncated header
        assert_eq!(valid_prefix(&wire), (first, Some(RecordError::Truncated)));
        assert_eq!(
            valid_prefix(b"\x00\x01garbage-not-dtls"),
            (0, Some(RecordError::UnknownContentType(0)))
        );
    }
}
