//! Builds STUN messages into a caller-owned buffer.

use std::net::SocketAddr;

use super::{
    attr, encode_xor_address, hmac_sha1, padded, StunClass, FINGERPRINT_XOR, HEADER_LEN,
    INTEGRITY_LEN, MAGIC_COOKIE, MAX_USERNAME_LEN,
};

/// Longest attribute value the writer emits; longer values are cut (keeps lengths within 16 bits).
const MAX_VALUE_LEN: usize = 0xFFFC;
/// RFC 8489 section 14.8: the reason phrase is at most 763 bytes.
const MAX_REASON_LEN: usize = 763;

/// Builds one message into a caller-owned `Vec` (cleared first): header, attributes in call order,
/// then MESSAGE-INTEGRITY and FINGERPRINT in [`StunWriter::finish`].
///
/// ```
/// # use sluice_core::stun::{StunWriter, StunClass, BINDING};
/// let mut buf = Vec::new();
/// StunWriter::new(&mut buf, StunClass::Request, BINDING, [7; 12])
///     .username(b"remote:local")
///     .priority(0x6e00_01ff)
///     .ice_controlling(42)
///     .use_candidate()
///     .finish(Some(b"password"));
/// ```
///
/// The writer reuses the buffer's capacity, so a caller that keeps one `Vec` allocates nothing in
/// steady state. Messages longer than 64 KiB are not representable; the writer does not check that.
pub struct StunWriter<'b> {
    buf: &'b mut Vec<u8>,
    transaction_id: [u8; 12],
    padding: u8,
}

/// Message type from class and method, RFC 8489 section 5:
/// ```text
///  0                 1
///  2  3  4 5 6 7 8 9 0 1 2 3 4 5
/// +--+--+-+-+-+-+-+-+-+-+-+-+-+-+
/// |M |M |M|M|M|C|M|M|M|C|M|M|M|M|
/// |11|10|9|8|7|1|6|5|4|0|3|2|1|0|
/// +--+--+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
fn message_type(class: StunClass, method: u16) -> u16 {
    let c: u16 = match class {
        StunClass::Request => 0b00,
        StunClass::Indication => 0b01,
        StunClass::SuccessResponse => 0b10,
        StunClass::ErrorResponse => 0b11,
    };
    let m = method & 0x0FFF;
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

impl<'b> StunWriter<'b> {
    /// Clears `buf` and writes the 20-byte header.
    pub fn new(
        buf: &'b mut Vec<u8>,
        class: StunClass,
        method: u16,
        transaction_id: [u8; 12],
    ) -> Self {
        buf.clear();
        buf.extend_from_slice(&message_type(class, method).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id);
        StunWriter {
            buf,
            transaction_id,
            padding: 0,
        }
    }

    /// Byte used to pad attribute values to 4 bytes (default 0; RFC 5769 vectors use 0x20).
    pub fn padding_byte(&mut self, byte: u8) -> &mut Self {
        self.padding = byte;
        self
    }

    /// Appends any attribute, padded to 4 bytes. Values over 65,532 bytes are cut.
    pub fn attribute(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        let value = value.get(..MAX_VALUE_LEN).unwrap_or(value);
        let len = value.len() as u16; // at most MAX_VALUE_LEN, fits
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = padded(value.len()) - value.len();
        self.buf.extend(std::iter::repeat_n(self.padding, pad));
        self
    }

    /// USERNAME (cut to 512 bytes, RFC 8489 section 14.3).
    pub fn username(&mut self, username: &[u8]) -> &mut Self {
        let username = username.get(..MAX_USERNAME_LEN).unwrap_or(username);
        self.attribute(attr::USERNAME, username)
    }

    /// SOFTWARE.
    pub fn software(&mut self, software: &[u8]) -> &mut Self {
        let software = software.get(..MAX_REASON_LEN).unwrap_or(software);
        self.attribute(attr::SOFTWARE, software)
    }

    /// PRIORITY (RFC 8445 section 16.1).
    pub fn priority(&mut self, priority: u32) -> &mut Self {
        self.attribute(attr::PRIORITY, &priority.to_be_bytes())
    }

    /// USE-CANDIDATE (empty value).
    pub fn use_candidate(&mut self) -> &mut Self {
        self.attribute(attr::USE_CANDIDATE, &[])
    }

    /// ICE-CONTROLLING with our tie-breaker.
    pub fn ice_controlling(&mut self, tie_breaker: u64) -> &mut Self {
        self.attribute(attr::ICE_CONTROLLING, &tie_breaker.to_be_bytes())
    }

    /// ICE-CONTROLLED with our tie-breaker.
    pub fn ice_controlled(&mut self, tie_breaker: u64) -> &mut Self {
        self.attribute(attr::ICE_CONTROLLED, &tie_breaker.to_be_bytes())
    }

    /// XOR-MAPPED-ADDRESS (RFC 8489 section 14.2).
    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.xor_address(attr::XOR_MAPPED_ADDRESS, addr)
    }

    /// Any attribute in the XOR-MAPPED-ADDRESS format (TURN's XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS).
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let mut value = [0u8; 20];
        let len = encode_xor_address(addr, &self.transaction_id, &mut value);
        self.attribute(typ, &value[..len])
    }

    /// ERROR-CODE (RFC 8489 section 14.8); `code` is 300..=699, the reason is cut to 763 bytes.
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        let reason = reason.as_bytes();
        let reason = reason.get(..MAX_REASON_LEN).unwrap_or(reason);
        let class = ((code / 100) & 0x07) as u8;
        let number = (code % 100) as u8;
        let mut value = [0u8; 4 + MAX_REASON_LEN];
        value[2] = class;
        value[3] = number;
        value[4..4 + reason.len()].copy_from_slice(reason);
        self.attribute(attr::ERROR_CODE, &value[..4 + reason.len()])
    }

    /// Sets the header's length field to the bytes written so far plus `extra`.
    fn set_length(&mut self, extra: usize) {
        let len = (self.buf.len() + extra - HEADER_LEN).min(usize::from(u16::MAX)) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends MESSAGE-INTEGRITY (if `integrity_key`) and FINGERPRINT, sets the length and returns it.
    ///
    /// RFC 8489 section 14.5: the HMAC covers the message with the length field already counting
    /// MESSAGE-INTEGRITY; section 14.7: the CRC covers it with the length counting FINGERPRINT.
    pub fn finish(&mut self, integrity_key: Option<&[u8]>) -> usize {
        if let Some(key) = integrity_key {
            self.set_length(4 + INTEGRITY_LEN);
            // OpenSSL refuses an HMAC key only on internal failure; a zero MAC then fails verification.
            let mac = hmac_sha1(key, &[self.buf.as_slice()]).unwrap_or([0; INTEGRITY_LEN]);
            self.attribute(attr::MESSAGE_INTEGRITY, &mac);
        }
        self.set_length(8);
        let crc = crc32fast::hash(self.buf) ^ FINGERPRINT_XOR;
        self.attribute(attr::FINGERPRINT, &crc.to_be_bytes());
        self.buf.len()
    }
}
