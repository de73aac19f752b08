//! RTP packet views (RFC 3550 5.1, RFC 8285 header extensions), in-place header rewrites for the
//! egress copy, and RFC 3550 receive statistics.
//!
//! A packet is parsed once at the edge into an [`RtpView`] that borrows the receive buffer and
//! allocates nothing. Egress rewrites go through the `set_*` functions on the receiver's own copy.

mod ext;
mod red;
mod stats;

#[cfg(test)]
pub(crate) mod tests;

pub use ext::{ExtensionIter, ONE_BYTE_PROFILE, TWO_BYTE_PROFILE, TWO_BYTE_PROFILE_MASK};
pub use red::{strip_to_primary, RedBlock, RedError, RedPayload};
pub use stats::ReceiverStats;

/// Why a buffer is not a well-formed RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    TooShort,
    /// Version field is not 2.
    BadVersion,
    /// The CSRC list (CC field) runs past the end of the buffer.
    BadCsrcCount,
    /// The header extension (X bit) runs past the end of the buffer.
    BadExtension,
    /// The P bit is set but the padding count is 0 or larger than the room after the header.
    BadPadding,
}

/// RTP version carried in the two top bits of the first byte (RFC 3550 5.1).
pub const RTP_VERSION: u8 = 2;

/// Length of the fixed RTP header, before any CSRC.
pub const FIXED_HEADER_LEN: usize = 12;

/// A parsed RTP packet borrowing its buffer. `Copy`; creating one allocates nothing.
#[derive(Clone, Copy)]
pub struct RtpView<'a> {
    buf: &'a [u8],
    fixed: &'a [u8; FIXED_HEADER_LEN],
    /// Fixed header + CSRCs + extension header and data.
    header_len: usize,
    /// Trailing padding bytes including the count byte (0 when P is clear).
    padding_len: usize,
    /// Offset of the 4-byte extension header ("defined by profile", length), if X is set.
    ext_offset: Option<usize>,
}

impl core::fmt::Debug for RtpView<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RtpView")
            .field("ssrc", &self.ssrc())
            .field("payload_type", &self.payload_type())
            .field("sequence_number", &self.sequence_number())
            .field("timestamp", &self.timestamp())
            .field("marker", &self.marker())
            .field("header_len", &self.header_len)
            .field("payload_len", &self.payload().len())
            .field("padding_len", &self.padding_len)
            .finish()
    }
}

impl<'a> RtpView<'a> {
    /// Parses and bounds-checks an RTP packet (RFC 3550 5.1, 5.3.1).
    ///
    /// ```text
    ///  0                   1                   2                   3
    ///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                           timestamp                           |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |           synchronization source (SSRC) identifier            |
    /// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
    /// |            contributing source (CSRC) identifiers             |
    /// |                             ....                              |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |      defined by profile       |           length              |  (if X)
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                        header extension                       |
    /// |                             ....                              |
    /// ```
    ///
    /// The extension length counts 32-bit words after the 4-byte extension header. With P set,
    /// the last byte counts the padding bytes, itself included (RFC 3550 5.1).
    ///
    /// Extension elements are not walked here; [`RtpView::extensions`] stops at the first
    /// malformed element instead.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let fixed = buf
            .first_chunk::<FIXED_HEADER_LEN>()
            .ok_or(RtpError::TooShort)?;
        let b0 = fixed[0];
        if b0 >> 6 != RTP_VERSION {
            return Err(RtpError::BadVersion);
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let csrc_count = usize::from(b0 & 0x0f);

        let mut header_len = FIXED_HEADER_LEN + 4 * csrc_count;
        if header_len > buf.len() {
            return Err(RtpError::BadCsrcCount);
        }

        let ext_offset = if has_extension {
            let ext_header = buf
                .get(header_len..header_len + 4)
                .ok_or(RtpError::BadExtension)?;
            let words = usize::from(u16::from_be_bytes([ext_header[2], ext_header[3]]));
            let offset = header_len;
            header_len += 4 + 4 * words;
            if header_len > buf.len() {
                return Err(RtpError::BadExtension);
            }
            Some(offset)
        } else {
            None
        };

        let padding_len = if has_padding {
            let room = buf.len() - header_len;
            let count = usize::from(*buf.last().ok_or(RtpError::BadPadding)?);
            if count == 0 || count > room {
                return Err(RtpError::BadPadding);
            }
            count
        } else {
            0
        };

        Ok(RtpView {
            buf,
            fixed,
            header_len,
            padding_len,
            ext_offset,
        })
    }

    /// M bit: frame boundary marker, meaning defined by the payload format.
    #[inline]
    pub fn marker(&self) -> bool {
        self.fixed[1] & 0x80 != 0
    }

    /// PT: 7-bit payload type.
    #[inline]
    pub fn payload_type(&self) -> u8 {
        self.fixed[1] & 0x7f
    }

    /// 16-bit sequence number.
    #[inline]
    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.fixed[2], self.fixed[3]])
    }

    /// 32-bit RTP timestamp.
    #[inline]
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.fixed[4], self.fixed[5], self.fixed[6], self.fixed[7]])
    }

    /// Synchronization source.
    #[inline]
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.fixed[8], self.fixed[9], self.fixed[10], self.fixed[11]])
    }

    /// P bit: the packet carries trailing padding.
    #[inline]
    pub fn has_padding(&self) -> bool {
        self.padding_len != 0
    }

    /// Contributing sources, in order (CC of them).
    #[inline]
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let count = usize::from(self.fixed[0] & 0x0f);
        let list = self
            .buf
            .get(FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4 * count)
            .unwrap_or(&[]);
        list.as_chunks::<4>()
            .0
            .iter()
            .map(|word| u32::from_be_bytes(*word))
    }

    /// Bytes before the payload: fixed header, CSRCs and the whole header extension.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The payload, without header and without padding.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let end = self.buf.len() - self.padding_len;
        self.buf.get(self.header_len..end).unwrap_or(&[])
    }

    /// Trailing padding bytes, the count byte included; 0 when P is clear.
    #[inline]
    pub fn padding_len(&self) -> usize {
        self.padding_len
    }

    /// The 16-bit "defined by profile" field of the header extension, if X is set.
    #[inline]
    pub fn extension_profile(&self) -> Option<u16> {
        let at = self.ext_offset?;
        let field = self.buf.get(at..at + 2)?;
        Some(u16::from_be_bytes([field[0], field[1]]))
    }

    /// The header extension data after its 4-byte header (empty if X is clear).
    #[inline]
    pub fn extension_data(&self) -> &'a [u8] {
        match self.ext_offset {
            Some(at) => self.buf.get(at + 4..self.header_len).unwrap_or(&[]),
            None => &[],
        }
    }

    /// RFC 8285 elements as `(id, data)`, one-byte (0xBEDE) or two-byte (0x100X) form.
    ///
    /// Yields nothing for other profiles. Padding is skipped; iteration stops at a one-byte ID 15
    /// or at the first element that would run past the extension.
    #[inline]
    pub fn extensions(&self) -> ExtensionIter<'a> {
        match self.extension_profile() {
            Some(profile) => ExtensionIter::new(profile, self.extension_data()),
            None => ExtensionIter::empty(),
        }
    }

    /// Data of the first RFC 8285 element with this ID (1..=14 one-byte, 1..=255 two-byte).
    #[inline]
    pub fn extension(&self, id: u8) -> Option<&'a [u8]> {
        if id == 0 {
            return None;
        }
        self.extensions()
            .find(|&(elem_id, _)| elem_id == id)
            .map(|(_, data)| data)
    }

    /// The whole packet as parsed.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// Demultiplexes RTCP from RTP on one port (RFC 5761 4, RFC 7983).
///
/// True when the first byte is 128..=191 (RTP/RTCP range) and the payload-type byte with the
/// marker bit masked off is 64..=95, i.e. the RTCP packet types 192..=223.
#[inline]
pub fn is_rtcp(buf: &[u8]) -> bool {
    match buf {
        [b0, b1, ..] => (128..=191).contains(b0) && (64..=95).contains(&(b1 & 0x7f)),
        _ => false,
    }
}

// Setters write through into a buffer that the caller has already parsed as RTP. On a buffer too
// short for the field they do nothing (and assert in debug builds), so a caller bug never panics
// the shard in release.

/// Overwrites the sequence number (bytes 2..4).
#[inline]
pub fn set_sequence_number(buf: &mut [u8], seq: u16) {
    debug_assert!(
        buf.len() >= FIXED_HEADER_LEN,
        "set_sequence_number on a non-RTP buffer"
    );
    if let Some(field) = buf.get_mut(2..4) {
        field.copy_from_slice(&seq.to_be_bytes());
    }
}

/// Overwrites the RTP timestamp (bytes 4..8).
#[inline]
pub fn set_timestamp(buf: &mut [u8], ts: u32) {
    debug_assert!(
        buf.len() >= FIXED_HEADER_LEN,
        "set_timestamp on a non-RTP buffer"
    );
    if let Some(field) = buf.get_mut(4..8) {
        field.copy_from_slice(&ts.to_be_bytes());
    }
}

/// Overwrites the SSRC (bytes 8..12).
#[inline]
pub fn set_ssrc(buf: &mut [u8], ssrc: u32) {
    debug_assert!(
        buf.len() >= FIXED_HEADER_LEN,
        "set_ssrc on a non-RTP buffer"
    );
    if let Some(field) = buf.get_mut(8..12) {
        field.copy_from_slice(&ssrc.to_be_bytes());
    }
}

/// Overwrites the 7-bit payload type, keeping the marker bit.
#[inline]
pub fn set_payload_type(buf: &mut [u8], pt: u8) {
    debug_assert!(
        buf.len() >= FIXED_HEADER_LEN,
        "set_payload_type on a non-RTP buffer"
    );
    debug_assert!(pt <= 0x7f, "payload type is 7 bits");
    if let Some(b1) = buf.get_mut(1) {
        *b1 = (*b1 & 0x80) | (pt & 0x7f);
    }
}

/// Sets or clears the marker bit, keeping the payload type.
#[inline]
pub fn set_marker(buf: &mut [u8], m: bool) {
    debug_assert!(
        buf.len() >= FIXED_HEADER_LEN,
        "set_marker on a non-RTP buffer"
    );
    if let Some(b1) = buf.get_mut(1) {
        *b1 = (*b1 & 0x7f) | if m { 0x80 } else { 0 };
    }
}
