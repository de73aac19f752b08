//! RFC 2198 redundant audio ("red/48000/2" in WebRTC, carrying Opus): a view of the payload's blocks, and
//! the strip to the primary block for a receiver that did not negotiate RED. Sans-IO, allocation-free:
//! every length is checked against the payload, so a malformed payload is an error, never a panic.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |F|   block PT  |  timestamp offset         |   block length    |   F=1: a redundant block's header
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0|   Block PT  |                                                   F=0: the last header, the primary's
//! +-+-+-+-+-+-+-+-+
//! ```
//!
//! After the headers come the blocks' data in header order; the primary is last and takes what is left
//! (RFC 2198 section 3).

use super::{set_payload_type, RtpView};

/// Why a payload is not RFC 2198 redundant audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedError {
    /// No bytes at all: not even the primary's one-byte header.
    Empty,
    /// The headers run past the payload (a redundant header cut short, or no F=0 header).
    TruncatedHeader,
    /// The redundant blocks' lengths add up to more than the payload holds after the headers.
    BlockTooLong,
}

/// One block: its payload type, how far its timestamp lies before the packet's (0 for the primary),
/// and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedBlock<'a> {
    pub pt: u8,
    pub timestamp_offset: u16,
    pub data: &'a [u8],
}

/// A parsed RED payload borrowing its buffer; creating one allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct RedPayload<'a> {
    payload: &'a [u8],
    /// Bytes of all headers (4 per redundant block, 1 for the primary).
    headers_len: usize,
    /// Sum of the redundant blocks' lengths.
    redundant_len: usize,
}

impl<'a> RedPayload<'a> {
    /// Walks the headers and checks that every block fits the payload.
    pub fn parse(payload: &'a [u8]) -> Result<Self, RedError> {
        if payload.is_empty() {
            return Err(RedError::Empty);
        }
        let mut at = 0;
        let mut redundant_len = 0usize;
        loop {
            let &b0 = payload.get(at).ok_or(RedError::TruncatedHeader)?;
            if b0 & 0x80 == 0 {
                at += 1;
                break;
            }
            let h = payload.get(at..at + 4).ok_or(RedError::TruncatedHeader)?;
            redundant_len += usize::from(u16::from_be_bytes([h[2], h[3]]) & 0x03ff);
            at += 4;
        }
        if redundant_len > payload.len() - at {
            return Err(RedError::BlockTooLong);
        }
        Ok(RedPayload {
            payload,
            headers_len: at,
            redundant_len,
        })
    }

    /// The primary block (the last): the encoding a receiver without RED plays.
    #[inline]
    pub fn primary(&self) -> RedBlock<'a> {
        let pt = self
            .payload
            .get(self.headers_len - 1)
            .map_or(0, |b| b & 0x7f);
        RedBlock {
            pt,
            timestamp_offset: 0,
            data: self
                .payload
                .get(self.headers_len + self.redundant_len..)
                .unwrap_or(&[]),
        }
    }

    /// How many redundant blocks precede the primary.
    #[inline]
    pub fn redundant_count(&self) -> usize {
        (self.headers_len - 1) / 4
    }

    /// Every block in order: the redundant ones (oldest first, as sent), then the primary.
    pub fn blocks(&self) -> impl Iterator<Item = RedBlock<'a>> + 'a {
        let payload = self.payload;
        let headers = payload.get(..self.headers_len - 1).unwrap_or(&[]);
        let mut data_at = self.headers_len;
        let primary = self.primary();
        headers
            .as_chunks::<4>()
            .0
            .iter()
            .map(move |h| {
                let len = usize::from(u16::from_be_bytes([h[2], h[3]]) & 0x03ff);
                let data = payload.get(data_at..data_at + len).unwrap_or(&[]);
                data_at += len;
                RedBlock {
                    pt: h[0] & 0x7f,
                    timestamp_offset: (u16::from(h[1]) << 6) | u16::from(h[2] >> 2),
                    data,
                }
            })
            .chain(std::iter::once(primary))
    }
}

/// Writes into `out` the packet a receiver without RED gets from `rtp` (whose payload is `red`): the same
/// header (CSRCs and header extensions, so audio levels and transport-cc, kept byte for byte) with the
/// primary's payload type, then the primary's data; padding dropped (P cleared). None when `out` is too
/// small.
pub fn strip_to_primary(rtp: &RtpView<'_>, red: &RedPayload<'_>, out: &mut [u8]) -> Option<usize> {
    let header = rtp.as_bytes().get(..rtp.header_len())?;
    let primary = red.primary();
    let n = header.len() + primary.data.len();
    let dst = out.get_mut(..n)?;
    let (h, d) = dst.split_at_mut(header.len());
    h.copy_from_slice(header);
    d.copy_from_slice(primary.data);
    h[0] &= !0x20;
    set_payload_type(dst, primary.pt);
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2198 section 3's example: one redundant block of LPC (PT 7, 14 bytes) before a primary of DVI4
    /// (PT 5, 84 bytes). The RFC gives no offset; 160 is one 20 ms frame at 8 kHz.
    fn rfc_example() -> Vec<u8> {
        let mut p = vec![
            0x80 | 7,
            (160u16 >> 6) as u8,
            ((160u16 & 0x3f) << 2) as u8, // the offset's low 6 bits, then the length's high 2 (0)
            14,
            5,
        ];
        p.extend_from_slice(&[0x11; 14]);
        p.extend_from_slice(&[0x55; 84]);
        p
    }

    #[test]
    fn rfc2198_example_gives_the_lpc_block_then_the_dvi4_primary() {
        let payload = rfc_example();
        // The header words as the RFC's figure lays them out: F=1, PT 7, offset 160, length 14.
        assert_eq!(payload[..5], [0x87, 0x02, 0x80, 0x0e, 0x05]);
        let red = RedPayload::parse(&payload).expect("valid");
        assert_eq!(red.redundant_count(), 1);
        let blocks: Vec<RedBlock<'_>> = red.blocks().collect();
        assert_eq!(
            blocks,
            [
                RedBlock {
                    pt: 7,
                    timestamp_offset: 160,
                    data: &[0x11; 14]
                },
                RedBlock {
                    pt: 5,
                    timestamp_offset: 0,
                    data: &[0x55; 84]
                },
            ]
        );
        assert_eq!(red.primary(), blocks[1]);
    }

    #[test]
    fn the_extreme_fields_and_a_primary_alone_parse() {
        // 14-bit offset 16383 and 10-bit length 1023 (the largest each field holds).
        let mut p = vec![0xff, 0xff, 0xff, 0xff, 0x6f];
        p.extend_from_slice(&[1; 1023]);
        p.extend_from_slice(&[2; 3]);
        let red = RedPayload::parse(&p).expect("valid");
        let b: Vec<RedBlock<'_>> = red.blocks().collect();
        assert_eq!(
            (b[0].pt, b[0].timestamp_offset, b[0].data.len()),
            (127, 16383, 1023)
        );
        assert_eq!((b[1].pt, b[1].data), (0x6f, &[2u8; 3][..]));
        // Chrome before it has anything to repeat: the primary's header alone.
        let only = [111u8, 9, 9, 9];
        let red = RedPayload::parse(&only).expect("valid");
        assert_eq!(red.redundant_count(), 0);
        assert_eq!(
            red.primary(),
            RedBlock {
                pt: 111,
                timestamp_offset: 0,
                data: &[9, 9, 9]
            }
        );
        // Two redundant blocks (Chrome's default distance), each 2 bytes; an empty primary is allowed.
        let two = [0xef, 0x0f, 0x00, 2, 0xef, 0x07, 0x80, 2, 111, 1, 1, 2, 2];
        let red = RedPayload::parse(&two).expect("valid");
        let b: Vec<RedBlock<'_>> = red.blocks().collect();
        assert_eq!(
            b.iter()
                .map(|b| (b.timestamp_offset, b.data))
                .collect::<Vec<_>>(),
            [(960, &[1u8, 1][..]), (480, &[2, 2][..]), (0, &[][..])]
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert_eq!(RedPayload::parse(&[]).err(), Some(RedError::Empty));
        // A redundant header cut short, and headers without an F=0 one.
        assert_eq!(
            RedPayload::parse(&[0x80 | 111, 0, 0]).err(),
            Some(RedError::TruncatedHeader)
        );
        assert_eq!(
            RedPayload::parse(&[0xef, 0, 0, 0]).err(),
            Some(RedError::TruncatedHeader)
        );
        // A block one byte longer than what follows the headers.
        assert_eq!(
            RedPayload::parse(&[0xef, 0, 0, 3, 111, 1, 2]).err(),
            Some(RedError::BlockTooLong)
        );
        assert!(RedPayload::parse(&[0xef, 0, 0, 2, 111, 1, 2]).is_ok());
    }

    #[test]
    fn garbage_never_panics_and_blocks_tile_the_payload() {
        let mut rng = crate::rtp::tests::XorShift::new(2198);
        let mut buf = [0u8; 64];
        for _ in 0..20_000 {
            let len = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..len]);
            // Bias towards F=1 headers with short lengths, so that valid payloads come up too.
            if len > 3 && rng.below(2) == 0 {
                buf[0] |= 0x80;
                buf[2] &= 0xfc;
                buf[3] &= 0x0f;
            }
            if let Ok(red) = RedPayload::parse(&buf[..len]) {
                let total: usize = red.blocks().map(|b| b.data.len()).sum();
                assert_eq!(total + 4 * red.redundant_count() + 1, len);
            }
        }
    }

    /// An RTP packet: V=2, the given first byte's P/X/CC bits, PT 63 (RED), seq 7, ts 960, SSRC 0xA1.
    fn rtp(b0: u8, csrcs: &[u32], ext: &[u8], payload: &[u8], padding: u8) -> Vec<u8> {
        let mut p = vec![0x80 | b0, 0x80 | 63, 0, 7, 0, 0, 0x03, 0xc0, 0, 0, 0, 0xa1];
        for c in csrcs {
            p.extend_from_slice(&c.to_be_bytes());
        }
        p.extend_from_slice(ext);
        p.extend_from_slice(payload);
        if padding > 0 {
            p.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
            p.push(padding);
        }
        p
    }

    #[test]
    fn stripping_keeps_the_header_and_extensions_and_drops_padding_byte_for_byte() {
        // One-byte extension: audio level (id 1) 0x85, transport-cc (id 5) 0x0102, one pad byte.
        let ext = [0xbe, 0xde, 0, 2, 0x10, 0x85, 0x51, 0x01, 0x02, 0, 0, 0];
        let payload = [0xef, 0x07, 0x80, 2, 111, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        let input = rtp(0x20 | 0x10 | 1, &[0xc5c5c5c5], &ext, &payload, 4);
        let view = RtpView::parse(&input).expect("rtp");
        let red = RedPayload::parse(view.payload()).expect("red");
        let mut out = [0u8; 1500];
        let n = strip_to_primary(&view, &red, &mut out).expect("fits");
        let mut want = vec![0x91, 0x80 | 111, 0, 7, 0, 0, 0x03, 0xc0, 0, 0, 0, 0xa1];
        want.extend_from_slice(&[0xc5; 4]);
        want.extend_from_slice(&ext);
        want.extend_from_slice(&[0xcc, 0xdd, 0xee]);
        assert_eq!(out[..n], want[..]);
        let stripped = RtpView::parse(&out[..n]).expect("still rtp");
        assert_eq!(stripped.extension(1), Some(&[0x85][..]));
        assert_eq!(stripped.extension(5), Some(&[0x01, 0x02][..]));
        assert!(!stripped.has_padding());
        // Too small an output: nothing written past it, None.
        assert_eq!(strip_to_primary(&view, &red, &mut out[..n - 1]), None);
    }
}
