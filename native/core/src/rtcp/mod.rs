//! RTCP: compound packet views (RFC 3550 6, RFC 4585, RFC 5104, transport-cc, REMB), writers into
//! caller buffers, and NTP helpers.
//!
//! Parsing borrows the datagram and allocates nothing; every view keeps `as_bytes()` (the packet's
//! raw bytes, header included) so it can be forwarded as-is. Writers fill a caller buffer and
//! return the number of bytes written.

mod bye;
mod feedback;
mod ntp;
mod report;
mod sdes;
mod twcc;
mod write;

#[cfg(test)]
mod tests;

pub use bye::Bye;
pub use feedback::{Fir, FirIter, Nack, NackIter, NackPairIter, Remb};
pub use ntp::{
    ntp_from_system_time, ntp_from_unix, ntp_middle32, round_trip_time, NTP_UNIX_OFFSET_SECS,
};
pub use report::{ReceiverReport, ReportBlock, ReportBlockIter, SenderReport};
pub use sdes::{Sdes, SdesChunk, SdesChunkIter, SdesItemIter, SDES_CNAME};
pub use twcc::{TransportCc, TwccPacket, TwccPacketIter};
pub use write::{
    write_bye, write_fir, write_nack, write_pli, write_receiver_report, write_remb,
    write_sdes_cname, write_sender_report,
};

/// Why RTCP bytes could not be parsed or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpError {
    /// Fewer than 4 bytes where a packet header should start, or a packet shorter than the fixed
    /// part of its type.
    TooShort,
    /// Version field is not 2.
    BadVersion,
    /// The length field runs past the end of the buffer (or, for a single packet, does not match it).
    BadLength,
    /// Padding count is 0 or larger than the packet body, or padding on a packet that is not last.
    BadPadding,
    /// A count field (RC, SC, SDES item length, REMB Num SSRC, BYE reason length, TWCC status
    /// count) or an entry list needs more bytes than the packet holds.
    Truncated,
    /// A field holds a value the format reserves (for example a reserved transport-cc status symbol).
    Malformed,
    /// Writer: the output buffer is too small.
    NoRoom,
    /// Writer: an input does not fit its wire field (over 31 report blocks or SSRCs, a CNAME over
    /// 255 bytes, over 255 REMB SSRCs, a packet over 65536 words).
    TooLarge,
    /// Writer: a list that the format requires to be non-empty is empty (NACK with no loss).
    Empty,
}

/// RTCP version (RFC 3550 6.4.1).
pub const RTCP_VERSION: u8 = 2;
/// Packet type: sender report (RFC 3550 6.4.1).
pub const PT_SR: u8 = 200;
/// Packet type: receiver report (RFC 3550 6.4.2).
pub const PT_RR: u8 = 201;
/// Packet type: source description (RFC 3550 6.5).
pub const PT_SDES: u8 = 202;
/// Packet type: goodbye (RFC 3550 6.6).
pub const PT_BYE: u8 = 203;
/// Packet type: application-defined (RFC 3550 6.7).
pub const PT_APP: u8 = 204;
/// Packet type: transport-layer feedback (RFC 4585 6.2).
pub const PT_RTPFB: u8 = 205;
/// Packet type: payload-specific feedback (RFC 4585 6.3).
pub const PT_PSFB: u8 = 206;
/// Packet type: extended report (RFC 3611).
pub const PT_XR: u8 = 207;
/// RTPFB FMT: generic NACK (RFC 4585 6.2.1).
pub const FMT_NACK: u8 = 1;
/// RTPFB FMT: transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-extensions-01).
pub const FMT_TWCC: u8 = 15;
/// PSFB FMT: picture loss indication (RFC 4585 6.3.1).
pub const FMT_PLI: u8 = 1;
/// PSFB FMT: full intra request (RFC 5104 4.3.1).
pub const FMT_FIR: u8 = 4;
/// PSFB FMT: application layer feedback, carrying REMB (RFC 4585 6.4).
pub const FMT_AFB: u8 = 15;

/// Common header length.
const HEADER_LEN: usize = 4;

/// The common RTCP header (RFC 3550 6.4.1):
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |V=2|P|  RC/FMT |      PT       |             length            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// `length` is the packet size in 32-bit words minus one, header and padding included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    padding: bool,
    count: u8,
    packet_type: u8,
    /// Whole packet size in bytes.
    size: usize,
}

fn read_header(buf: &[u8]) -> Result<Header, RtcpError> {
    let &[b0, b1, l0, l1] = buf.first_chunk::<HEADER_LEN>().ok_or(RtcpError::TooShort)?;
    if b0 >> 6 != RTCP_VERSION {
        return Err(RtcpError::BadVersion);
    }
    let words = usize::from(u16::from_be_bytes([l0, l1]));
    Ok(Header {
        padding: b0 & 0x20 != 0,
        count: b0 & 0x1f,
        packet_type: b1,
        size: (words + 1) * 4,
    })
}

/// Body of one packet (after the 4-byte header), without padding.
fn body_of<'a>(packet: &'a [u8], header: &Header) -> Result<&'a [u8], RtcpError> {
    let body = packet.get(HEADER_LEN..).ok_or(RtcpError::TooShort)?;
    if !header.padding {
        return Ok(body);
    }
    // The last byte counts the padding bytes, itself included (RFC 3550 6.4.1).
    let count = usize::from(*body.last().ok_or(RtcpError::BadPadding)?);
    if count == 0 || count > body.len() {
        return Err(RtcpError::BadPadding);
    }
    Ok(&body[..body.len() - count])
}

/// Reads a big-endian u32 at `at`, if in bounds.
#[inline]
fn be32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..)?.first_chunk::<4>()?;
    Some(u32::from_be_bytes(*bytes))
}

/// Reads a big-endian u16 at `at`, if in bounds.
#[inline]
fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..)?.first_chunk::<2>()?;
    Some(u16::from_be_bytes(*bytes))
}

/// Iterator over the big-endian u32 words of a slice whose length is a multiple of 4.
#[derive(Clone, Debug)]
pub struct SsrcIter<'a>(core::slice::Iter<'a, [u8; 4]>);

impl<'a> SsrcIter<'a> {
    fn new(words: &'a [u8]) -> Self {
        SsrcIter(words.as_chunks::<4>().0.iter())
    }
}

impl Iterator for SsrcIter<'_> {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        self.0.next().map(|w| u32::from_be_bytes(*w))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for SsrcIter<'_> {}

/// One RTCP packet of a compound packet, parsed into a borrowed view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// SR, RFC 3550 6.4.1.
    SenderReport(SenderReport<'a>),
    /// RR, RFC 3550 6.4.2.
    ReceiverReport(ReceiverReport<'a>),
    /// SDES, RFC 3550 6.5.
    Sdes(Sdes<'a>),
    /// BYE, RFC 3550 6.6.
    Bye(Bye<'a>),
    /// Picture loss indication, RFC 4585 6.3.1 (no FCI; rebuild with [`write_pli`] to forward).
    Pli {
        /// SSRC of packet sender.
        sender_ssrc: u32,
        /// SSRC of media source.
        media_ssrc: u32,
    },
    /// Full intra request, RFC 5104 4.3.1.
    Fir(Fir<'a>),
    /// Generic NACK, RFC 4585 6.2.1.
    Nack(Nack<'a>),
    /// Transport-wide congestion control feedback.
    TransportCc(TransportCc<'a>),
    /// Receiver estimated maximum bitrate, draft-alvestrand-rmcat-remb.
    Remb(Remb<'a>),
    /// Any other packet (APP, XR, other feedback). `data` is the whole packet, header included.
    Other {
        /// Packet type (byte 1).
        packet_type: u8,
        /// The 5-bit RC/SC/FMT field.
        fmt: u8,
        /// The raw packet, header included, padding included.
        data: &'a [u8],
    },
}

impl<'a> RtcpPacket<'a> {
    /// Parses exactly one RTCP packet; its length field must cover `packet` exactly.
    pub fn parse(packet: &'a [u8]) -> Result<Self, RtcpError> {
        let header = read_header(packet)?;
        if header.size != packet.len() {
            return Err(RtcpError::BadLength);
        }
        Self::parse_with(packet, &header)
    }

    fn parse_with(packet: &'a [u8], header: &Header) -> Result<Self, RtcpError> {
        let body = body_of(packet, header)?;
        let count = header.count;
        let parsed = match header.packet_type {
            PT_SR => RtcpPacket::SenderReport(SenderReport::parse(packet, count, body)?),
            PT_RR => RtcpPacket::ReceiverReport(ReceiverReport::parse(packet, count, body)?),
            PT_SDES => RtcpPacket::Sdes(Sdes::parse(packet, count, body)?),
            PT_BYE => RtcpPacket::Bye(Bye::parse(packet, count, body)?),
            PT_RTPFB => match count {
                FMT_NACK => RtcpPacket::Nack(Nack::parse(packet, body)?),
                FMT_TWCC => RtcpPacket::TransportCc(TransportCc::parse(packet, body)?),
                _ => Self::other(packet, header),
            },
            PT_PSFB => match count {
                FMT_PLI => {
                    let (sender_ssrc, media_ssrc) = feedback::feedback_ssrcs(body)?;
                    RtcpPacket::Pli {
                        sender_ssrc,
                        media_ssrc,
                    }
                }
                FMT_FIR => RtcpPacket::Fir(Fir::parse(packet, body)?),
                FMT_AFB => match Remb::parse(packet, body)? {
                    Some(remb) => RtcpPacket::Remb(remb),
                    None => Self::other(packet, header),
                },
                _ => Self::other(packet, header),
            },
            _ => Self::other(packet, header),
        };
        Ok(parsed)
    }

    fn other(packet: &'a [u8], header: &Header) -> Self {
        RtcpPacket::Other {
            packet_type: header.packet_type,
            fmt: header.count,
            data: packet,
        }
    }

    /// The packet's raw bytes, except for [`RtcpPacket::Pli`], which keeps none.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            RtcpPacket::SenderReport(p) => Some(p.as_bytes()),
            RtcpPacket::ReceiverReport(p) => Some(p.as_bytes()),
            RtcpPacket::Sdes(p) => Some(p.as_bytes()),
            RtcpPacket::Bye(p) => Some(p.as_bytes()),
            RtcpPacket::Pli { .. } => None,
            RtcpPacket::Fir(p) => Some(p.as_bytes()),
            RtcpPacket::Nack(p) => Some(p.as_bytes()),
            RtcpPacket::TransportCc(p) => Some(p.as_bytes()),
            RtcpPacket::Remb(p) => Some(p.as_bytes()),
            RtcpPacket::Other { data, .. } => Some(data),
        }
    }
}

/// Splits a compound packet into raw packets (header and padding included), checking each
/// header, length and padding. Stops after the first error.
#[derive(Clone, Debug)]
pub struct RtcpRawIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> RtcpRawIter<'a> {
    fn next_raw(&mut self) -> Option<Result<(&'a [u8], Header), RtcpError>> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = split_one(self.rest);
        match result {
            Ok((packet, header, rest)) => {
                self.rest = rest;
                Some(Ok((packet, header)))
            }
            Err(e) => {
                self.failed = true;
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// RFC 3550 A.2-style step: one packet off the front of `buf`.
fn split_one(buf: &[u8]) -> Result<(&[u8], Header, &[u8]), RtcpError> {
    let header = read_header(buf)?;
    if header.size > buf.len() {
        return Err(RtcpError::BadLength);
    }
    let (packet, rest) = buf.split_at(header.size);
    if header.padding {
        // Padding is only allowed on the last packet of a compound (RFC 3550 6.4.1, A.2).
        if !rest.is_empty() {
            return Err(RtcpError::BadPadding);
        }
        body_of(packet, &header)?;
    }
    Ok((packet, header, rest))
}

impl<'a> Iterator for RtcpRawIter<'a> {
    type Item = Result<&'a [u8], RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_raw().map(|r| r.map(|(packet, _)| packet))
    }
}

impl core::iter::FusedIterator for RtcpRawIter<'_> {}

/// Splits a compound packet into raw packets without parsing their bodies.
pub fn split_compound(buf: &[u8]) -> RtcpRawIter<'_> {
    RtcpRawIter {
        rest: buf,
        failed: false,
    }
}

/// Iterator over the packets of a compound packet; stops after the first error.
#[derive(Clone, Debug)]
pub struct RtcpIter<'a> {
    raw: RtcpRawIter<'a>,
}

impl<'a> Iterator for RtcpIter<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (packet, header) = match self.raw.next_raw()? {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        let parsed = RtcpPacket::parse_with(packet, &header);
        if parsed.is_err() {
            self.raw.failed = true;
            self.raw.rest = &[];
        }
        Some(parsed)
    }
}

impl core::iter::FusedIterator for RtcpIter<'_> {}

/// Parses a compound RTCP packet lazily, one packet per `next()`.
pub fn parse_compound(buf: &[u8]) -> RtcpIter<'_> {
    RtcpIter {
        raw: split_compound(buf),
    }
}

/// RFC 3550 A.2-style validity check of a compound packet: version 2 throughout, lengths that add
/// up exactly to the buffer, padding only on the last packet and within it.
///
/// The first packet need not be SR or RR (RFC 5506 reduced-size RTCP). Bodies are not parsed.
pub fn validate_compound(buf: &[u8]) -> Result<(), RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::TooShort);
    }
    let mut rest = buf;
    while !rest.is_empty() {
        let (_, _, tail) = split_one(rest)?;
        rest = tail;
    }
    Ok(())
}

/// Overwrites the packet-sender SSRC (bytes 4..8) of one RTCP packet in place (used when
/// forwarding feedback). Does nothing on a buffer shorter than 8 bytes (asserts in debug builds).
#[inline]
pub fn set_sender_ssrc(packet: &mut [u8], ssrc: u32) {
    debug_assert!(
        packet.len() >= 8,
        "set_sender_ssrc on a packet without sender SSRC"
    );
    if let Some(field) = packet.get_mut(4..8) {
        field.copy_from_slice(&ssrc.to_be_bytes());
    }
}

/// Overwrites the media-source SSRC (bytes 8..12) of one feedback packet (RFC 4585 6.1) in place.
/// Does nothing on a buffer shorter than 12 bytes (asserts in debug builds).
#[inline]
pub fn set_media_ssrc(packet: &mut [u8], ssrc: u32) {
    debug_assert!(
        packet.len() >= 12,
        "set_media_ssrc on a packet without media SSRC"
    );
    if let Some(field) = packet.get_mut(8..12) {
        field.copy_from_slice(&ssrc.to_be_bytes());
    }
}
