//! STUN (RFC 8489) as used by ICE (RFC 8445) and consent freshness (RFC 7675).
//!
//! [`StunMessage::parse`] validates a datagram once and returns a borrowed view; it allocates nothing.
//! [`StunWriter`] builds a message into a caller-owned buffer. Only the short-term credential mechanism
//! (MESSAGE-INTEGRITY with HMAC-SHA1, key = password) is implemented: that is all ICE needs.

mod writer;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

pub use writer::StunWriter;

/// The fixed magic cookie of RFC 8489 section 5.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header in bytes.
pub const HEADER_LEN: usize = 20;
/// The Binding method (RFC 8489 section 18.2).
pub const BINDING: u16 = 0x0001;
/// XOR applied to the CRC-32 in FINGERPRINT (RFC 8489 section 14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// Length of a MESSAGE-INTEGRITY value (HMAC-SHA1).
pub const INTEGRITY_LEN: usize = 20;
/// Longest USERNAME value allowed (RFC 8489 section 14.3: less than 513 bytes).
pub const MAX_USERNAME_LEN: usize = 512;

/// Attribute types used here (RFC 8489 section 18.3, RFC 8445 section 16.1).
pub mod attr {
    /// MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// MESSAGE-INTEGRITY-SHA256.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// PASSWORD-ALGORITHM.
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    /// USERHASH.
    pub const USERHASH: u16 = 0x001E;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// PRIORITY (RFC 8445).
    pub const PRIORITY: u16 = 0x0024;
    /// USE-CANDIDATE (RFC 8445).
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// ALTERNATE-SERVER.
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
    /// ICE-CONTROLLED (RFC 8445).
    pub const ICE_CONTROLLED: u16 = 0x8029;
    /// ICE-CONTROLLING (RFC 8445).
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

/// Comprehension-required attribute types (0x0000-0x7FFF) we recognise, from RFC 8489, RFC 8445,
/// RFC 8656 (TURN) and RFC 5780. Any other type in that range makes
/// [`StunMessage::unknown_required_attribute`] return it.
const KNOWN_REQUIRED: &[u16] = &[
    0x0001, 0x0003, 0x0006, 0x0008, 0x0009, 0x000A, 0x000C, 0x000D, 0x0012, 0x0013, 0x0014, 0x0015,
    0x0016, 0x0017, 0x0018, 0x0019, 0x001A, 0x001C, 0x001D, 0x001E, 0x0020, 0x0022, 0x0024, 0x0025,
    0x0026, 0x0027,
];

/// RFC 7983 section 7: a datagram whose first byte is 0..=3 is STUN; we also require the cookie.
pub fn is_stun(buf: &[u8]) -> bool {
    match buf.get(..8) {
        Some(head) => head[0] <= 3 && head[4..8] == MAGIC_COOKIE.to_be_bytes(),
        None => false,
    }
}

/// The class bits of the message type (RFC 8489 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunClass {
    /// C1 C0 = 0b00.
    Request,
    /// C1 C0 = 0b01.
    Indication,
    /// C1 C0 = 0b10.
    SuccessResponse,
    /// C1 C0 = 0b11.
    ErrorResponse,
}

/// Why a datagram is not a valid STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunError {
    /// Fewer than 20 bytes.
    TooShort,
    /// The two leading bits are not zero or the magic cookie is wrong.
    NotStun,
    /// The header's length field is not a multiple of 4 or disagrees with the datagram length.
    BadLength,
    /// An attribute header or value (with its padding) runs past the end of the message.
    TruncatedAttribute,
    /// A known attribute has a length or value the spec does not allow.
    BadAttribute,
    /// FINGERPRINT is present and does not match the CRC-32 of the message.
    BadFingerprint,
    /// An attribute follows FINGERPRINT, which must be last.
    FingerprintNotLast,
}

impl std::fmt::Display for StunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for StunError {}

/// A validated STUN message borrowing its datagram. Parsing allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct StunMessage<'a> {
    buf: &'a [u8],
    class: StunClass,
    method: u16,
    username: Option<&'a [u8]>,
    priority: Option<u32>,
    use_candidate: bool,
    ice_controlling: Option<u64>,
    ice_controlled: Option<u64>,
    xor_mapped_address: Option<SocketAddr>,
    error_code: Option<u16>,
    /// Offset of the MESSAGE-INTEGRITY attribute header.
    integrity_at: Option<usize>,
    fingerprint: bool,
    unknown_required: Option<u16>,
}

/// Reads a big-endian u16 at `at`, if in bounds.
fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Reads a fixed-size array from the start of `buf`, if long enough.
fn array<const N: usize>(buf: &[u8]) -> Option<[u8; N]> {
    buf.get(..N)?.try_into().ok()
}

/// Attribute values are padded to a multiple of 4 bytes (RFC 8489 section 14).
const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

impl<'a> StunMessage<'a> {
    /// Validates the header, every attribute TLV, and FINGERPRINT if present.
    ///
    /// Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are ignored (RFC 8489 section
    /// 14.5); only the first instance of an attribute type counts (section 14); unknown
    /// comprehension-optional attributes are skipped.
    pub fn parse(buf: &'a [u8]) -> Result<Self, StunError> {
        // RFC 8489 section 5, the header:
        //  0                   1                   2                   3
        //  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        // |0 0|     STUN Message Type     |         Message Length        |
        // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        // |                         Magic Cookie                          |
        // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        // |                     Transaction ID (96 bits)                  |
        // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        let header: [u8; HEADER_LEN] = array(buf).ok_or(StunError::TooShort)?;
        if header[0] & 0xC0 != 0 || header[4..8] != MAGIC_COOKIE.to_be_bytes() {
            return Err(StunError::NotStun);
        }
        let message_type = u16::from_be_bytes([header[0], header[1]]);
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if length % 4 != 0 || HEADER_LEN + length != buf.len() {
            return Err(StunError::BadLength);
        }

        // Message type bits, RFC 8489 section 5:
        //  0                 1
        //  2  3  4 5 6 7 8 9 0 1 2 3 4 5
        // +--+--+-+-+-+-+-+-+-+-+-+-+-+-+
        // |M |M |M|M|M|C|M|M|M|C|M|M|M|M|
        // |11|10|9|8|7|1|6|5|4|0|3|2|1|0|
        // +--+--+-+-+-+-+-+-+-+-+-+-+-+-+
        let class = match (message_type >> 7) & 0b10 | (message_type >> 4) & 0b01 {
            0b00 => StunClass::Request,
            0b01 => StunClass::Indication,
            0b10 => StunClass::SuccessResponse,
            _ => StunClass::ErrorResponse,
        };
        let method = (message_type & 0x000F)
            | ((message_type & 0x00E0) >> 1)
            | ((message_type & 0x3E00) >> 2);

        let mut msg = StunMessage {
            buf,
            class,
            method,
            username: None,
            priority: None,
            use_candidate: false,
            ice_controlling: None,
            ice_controlled: None,
            xor_mapped_address: None,
            error_code: None,
            integrity_at: None,
            fingerprint: false,
            unknown_required: None,
        };
        let transaction_id: [u8; 12] = array(&header[8..]).ok_or(StunError::TooShort)?;

        // Attributes, RFC 8489 section 14:
        //  0                   1                   2                   3
        // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        // |         Type                  |            Length             |
        // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        // |                         Value (variable)                ....
        // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        let mut pos = HEADER_LEN;
        while pos < buf.len() {
            if msg.fingerprint {
                return Err(StunError::FingerprintNotLast);
            }
            let typ = be16(buf, pos).ok_or(StunError::TruncatedAttribute)?;
            let len = usize::from(be16(buf, pos + 2).ok_or(StunError::TruncatedAttribute)?);
            let start = pos + 4;
            let value = buf
                .get(start..start + len)
                .ok_or(StunError::TruncatedAttribute)?;
            let next = start + padded(len);
            if next > buf.len() {
                return Err(StunError::TruncatedAttribute);
            }
            match typ {
                attr::FINGERPRINT => {
                    // RFC 8489 section 14.7: CRC-32 of the message up to (not including) this
                    // attribute, XORed with 0x5354554e. The header length already covers it.
                    let want: [u8; 4] = array(value)
                        .filter(|_| len == 4)
                        .ok_or(StunError::BadAttribute)?;
                    let got = crc32fast::hash(buf.get(..pos).ok_or(StunError::TruncatedAttribute)?)
                        ^ FINGERPRINT_XOR;
                    if got != u32::from_be_bytes(want) {
                        return Err(StunError::BadFingerprint);
                    }
                    msg.fingerprint = true;
                }
                // Everything after MESSAGE-INTEGRITY except FINGERPRINT is ignored (section 14.5).
                _ if msg.integrity_at.is_some() => {}
                attr::MESSAGE_INTEGRITY => {
                    if len != INTEGRITY_LEN {
                        return Err(StunError::BadAttribute);
                    }
                    msg.integrity_at = Some(pos);
                }
                attr::USERNAME => {
                    if len > MAX_USERNAME_LEN {
                        return Err(StunError::BadAttribute);
                    }
                    msg.username.get_or_insert(value);
                }
                attr::PRIORITY => {
                    let v: [u8; 4] = array(value)
                        .filter(|_| len == 4)
                        .ok_or(StunError::BadAttribute)?;
                    msg.priority.get_or_insert(u32::from_be_bytes(v));
                }
                attr::USE_CANDIDATE => {
                    if len != 0 {
                        return Err(StunError::BadAttribute);
                    }
                    msg.use_candidate = true;
                }
                attr::ICE_CONTROLLING => {
                    let v: [u8; 8] = array(value)
                        .filter(|_| len == 8)
                        .ok_or(StunError::BadAttribute)?;
                    msg.ice_controlling.get_or_insert(u64::from_be_bytes(v));
                }
                attr::ICE_CONTROLLED => {
                    let v: [u8; 8] = array(value)
                        .filter(|_| len == 8)
                        .ok_or(StunError::BadAttribute)?;
                    msg.ice_controlled.get_or_insert(u64::from_be_bytes(v));
                }
                attr::XOR_MAPPED_ADDRESS if msg.xor_mapped_address.is_none() => {
                    let addr = decode_xor_address(value, &transaction_id)
                        .ok_or(StunError::BadAttribute)?;
                    msg.xor_mapped_address = Some(addr);
                }
                attr::ERROR_CODE => {
                    // RFC 8489 section 14.8:
                    // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
                    // |           Reserved, should be 0         |Class|     Number    |
                    // +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
                    // |      Reason Phrase (variable)                                ..
                    let v: [u8; 4] = array(value).ok_or(StunError::BadAttribute)?;
                    let class = u16::from(v[2] & 0x07);
                    let number = u16::from(v[3]);
                    if !(3..=6).contains(&class) || number > 99 {
                        return Err(StunError::BadAttribute);
                    }
                    msg.error_code.get_or_insert(class * 100 + number);
                }
                t if t < 0x8000 && !KNOWN_REQUIRED.contains(&t) => {
                    msg.unknown_required.get_or_insert(t);
                }
                _ => {}
            }
            pos = next;
        }
        Ok(msg)
    }

    /// The message class.
    pub fn class(&self) -> StunClass {
        self.class
    }

    /// The 12-bit method (1 = Binding).
    pub fn method(&self) -> u16 {
        self.method
    }

    /// The 96-bit transaction id.
    pub fn transaction_id(&self) -> [u8; 12] {
        let mut tid = [0u8; 12];
        // parse() checked the buffer holds a full header.
        if let Some(src) = self.buf.get(8..HEADER_LEN) {
            tid.copy_from_slice(src);
        }
        tid
    }

    /// The raw datagram this view borrows.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The value of the first attribute of type `typ` before MESSAGE-INTEGRITY (or FINGERPRINT), for
    /// attributes this view does not decode itself (TURN's REALM, NONCE, LIFETIME, XOR-RELAYED-ADDRESS).
    pub fn attribute(&self, typ: u16) -> Option<&'a [u8]> {
        let mut pos = HEADER_LEN;
        // parse() checked every TLV fits; the bounds are checked again rather than trusted.
        while let (Some(t), Some(len)) = (be16(self.buf, pos), be16(self.buf, pos + 2)) {
            if t == attr::MESSAGE_INTEGRITY || t == attr::FINGERPRINT {
                return None;
            }
            let start = pos + 4;
            let value = self.buf.get(start..start + usize::from(len))?;
            if t == typ {
                return Some(value);
            }
            pos = start + padded(usize::from(len));
        }
        None
    }

    /// USERNAME (for ICE: "<receiver ufrag>:<sender ufrag>").
    pub fn username(&self) -> Option<&'a [u8]> {
        self.username
    }

    /// PRIORITY (RFC 8445 section 7.1.1).
    pub fn priority(&self) -> Option<u32> {
        self.priority
    }

    /// Whether USE-CANDIDATE is present.
    pub fn use_candidate(&self) -> bool {
        self.use_candidate
    }

    /// ICE-CONTROLLING tie-breaker.
    pub fn ice_controlling(&self) -> Option<u64> {
        self.ice_controlling
    }

    /// ICE-CONTROLLED tie-breaker.
    pub fn ice_controlled(&self) -> Option<u64> {
        self.ice_controlled
    }

    /// XOR-MAPPED-ADDRESS, decoded.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        self.xor_mapped_address
    }

    /// ERROR-CODE as class * 100 + number (e.g. 487).
    pub fn error_code(&self) -> Option<u16> {
        self.error_code
    }

    /// Whether MESSAGE-INTEGRITY is present.
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Whether FINGERPRINT is present (parse() already checked it).
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint
    }

    /// The first comprehension-required attribute type we do not understand, if any.
    pub fn unknown_required_attribute(&self) -> Option<u16> {
        self.unknown_required
    }

    /// Checks MESSAGE-INTEGRITY with a short-term key (the ICE password). False if absent.
    ///
    /// RFC 8489 section 14.5: HMAC-SHA1 over the message up to the attribute, with the header
    /// length set as if MESSAGE-INTEGRITY were the last attribute.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let (Some(head), Some(body), Some(given)) = (
            self.buf.get(..2),
            self.buf.get(4..at),
            self.buf.get(at + 4..at + 4 + INTEGRITY_LEN),
        ) else {
            return false;
        };
        let Ok(adjusted) = u16::try_from(at + 4 + INTEGRITY_LEN - HEADER_LEN) else {
            return false;
        };
        match hmac_sha1(key, &[head, &adjusted.to_be_bytes(), body]) {
            Some(mac) => openssl::memcmp::eq(&mac, given),
            None => false,
        }
    }
}

/// XOR-MAPPED-ADDRESS value, RFC 8489 section 14.2:
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |0 0 0 0 0 0 0 0|    Family     |         X-Port                |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                X-Address (Variable)
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
/// X-Port is XORed with the cookie's top 16 bits; an IPv4 address with the cookie, an IPv6 address
/// with the cookie followed by the transaction id.
pub fn decode_xor_address(value: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = be16(value, 2)? ^ (MAGIC_COOKIE >> 16) as u16;
    match (value.first()?, value.get(1)?, value.len()) {
        (0, 0x01, 8) => {
            let mut ip: [u8; 4] = array(value.get(4..)?)?;
            ip.iter_mut().zip(cookie).for_each(|(b, k)| *b ^= k);
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        (0, 0x02, 20) => {
            let mut ip: [u8; 16] = array(value.get(4..)?)?;
            ip.iter_mut()
                .zip(cookie.iter().chain(tid))
                .for_each(|(b, k)| *b ^= k);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// Encodes an XOR-MAPPED-ADDRESS value into `out`, returning the used length (8 or 20).
fn encode_xor_address(addr: SocketAddr, tid: &[u8; 12], out: &mut [u8; 20]) -> usize {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let xport = (addr.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes();
    out[0] = 0;
    out[2..4].copy_from_slice(&xport);
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 0x01;
            for (o, (b, k)) in out[4..8]
                .iter_mut()
                .zip(ip.octets().into_iter().zip(cookie))
            {
                *o = b ^ k;
            }
            8
        }
        IpAddr::V6(ip) => {
            out[1] = 0x02;
            let key = cookie.iter().chain(tid);
            for (o, (b, k)) in out[4..20].iter_mut().zip(ip.octets().into_iter().zip(key)) {
                *o = b ^ k;
            }
            20
        }
    }
}

/// HMAC-SHA1 over the concatenation of `parts`, through OpenSSL. None if OpenSSL refuses the key.
fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Option<[u8; INTEGRITY_LEN]> {
    let pkey = PKey::hmac(key).ok()?;
    let mut signer = Signer::new(MessageDigest::sha1(), &pkey).ok()?;
    for part in parts {
        signer.update(part).ok()?;
    }
    let mut mac = [0u8; INTEGRITY_LEN];
    let n = signer.sign(&mut mac).ok()?;
    (n == INTEGRITY_LEN).then_some(mac)
}

/// The local ufrag of an ICE USERNAME as seen by the receiver: the part before the first ':'.
pub fn local_ufrag_of(username: &[u8]) -> Option<&[u8]> {
    let colon = username.iter().position(|&b| b == b':')?;
    let ufrag = username.get(..colon)?;
    (!ufrag.is_empty()).then_some(ufrag)
}
