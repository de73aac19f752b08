//! Feedback messages: generic NACK (RFC 4585 6.2.1), FIR (RFC 5104 4.3.1) and REMB
//! (draft-alvestrand-rmcat-remb). PLI has no body beyond the common feedback header.
//!
//! Common feedback header (RFC 4585 6.1):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|   FMT   |       PT      |          length               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  SSRC of packet sender                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  SSRC of media source                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! :            Feedback Control Information (FCI)                 :
//! ```

use super::{be32, RtcpError, SsrcIter};

/// Feedback header length after the common header: sender and media SSRC.
pub(super) const FEEDBACK_SSRCS_LEN: usize = 8;

/// Reads (SSRC of packet sender, SSRC of media source) from a feedback body.
pub(super) fn feedback_ssrcs(body: &[u8]) -> Result<(u32, u32), RtcpError> {
    let sender = be32(body, 0).ok_or(RtcpError::TooShort)?;
    let media = be32(body, 4).ok_or(RtcpError::TooShort)?;
    Ok((sender, media))
}

/// FCI after the feedback header, which must be a whole number of `entry`-byte entries.
fn fci_entries(body: &[u8], entry: usize) -> Result<&[u8], RtcpError> {
    let fci = body.get(FEEDBACK_SSRCS_LEN..).ok_or(RtcpError::TooShort)?;
    if !fci.len().is_multiple_of(entry) {
        return Err(RtcpError::Truncated);
    }
    Ok(fci)
}

/// Full intra request view (RFC 5104 4.3.1).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                              SSRC                             |  FCI entry, repeated
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Seq nr.       |    Reserved                                   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// The header's media SSRC is unused (0); each entry names the media sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fir<'a> {
    /// SSRC of packet sender.
    pub sender_ssrc: u32,
    /// SSRC of media source from the common header (RFC 5104: unused, 0).
    pub media_ssrc: u32,
    fci: &'a [u8],
    raw: &'a [u8],
}

impl<'a> Fir<'a> {
    const ENTRY: usize = 8;

    pub(super) fn parse(raw: &'a [u8], body: &'a [u8]) -> Result<Self, RtcpError> {
        let (sender_ssrc, media_ssrc) = feedback_ssrcs(body)?;
        Ok(Fir {
            sender_ssrc,
            media_ssrc,
            fci: fci_entries(body, Self::ENTRY)?,
            raw,
        })
    }

    /// FCI entries as `(ssrc, seq_nr)`.
    pub fn entries(&self) -> FirIter<'a> {
        FirIter(self.fci.as_chunks::<{ Fir::ENTRY }>().0.iter())
    }

    /// The packet's raw bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

/// Iterator over FIR entries as `(ssrc, seq_nr)`.
#[derive(Clone, Debug)]
pub struct FirIter<'a>(core::slice::Iter<'a, [u8; 8]>);

impl Iterator for FirIter<'_> {
    type Item = (u32, u8);

    fn next(&mut self) -> Option<(u32, u8)> {
        self.0
            .next()
            .map(|e| (u32::from_be_bytes([e[0], e[1], e[2], e[3]]), e[4]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for FirIter<'_> {}

/// Generic NACK view (RFC 4585 6.2.1).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |            PID                |             BLP               |  FCI entry, repeated
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// PID is a lost sequence number; bit i of BLP (least significant first) reports PID + i + 1 lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nack<'a> {
    /// SSRC of packet sender.
    pub sender_ssrc: u32,
    /// SSRC of media source whose packets were lost.
    pub media_ssrc: u32,
    fci: &'a [u8],
    raw: &'a [u8],
}

impl<'a> Nack<'a> {
    const ENTRY: usize = 4;

    pub(super) fn parse(raw: &'a [u8], body: &'a [u8]) -> Result<Self, RtcpError> {
        let (sender_ssrc, media_ssrc) = feedback_ssrcs(body)?;
        Ok(Nack {
            sender_ssrc,
            media_ssrc,
            fci: fci_entries(body, Self::ENTRY)?,
            raw,
        })
    }

    /// The raw `(PID, BLP)` pairs.
    pub fn pairs(&self) -> NackPairIter<'a> {
        NackPairIter(self.fci.as_chunks::<{ Nack::ENTRY }>().0.iter())
    }

    /// Every lost sequence number, PID + BLP expanded, in packet order.
    pub fn lost_sequence_numbers(&self) -> NackIter<'a> {
        NackIter {
            pairs: self.pairs(),
            pid: 0,
            blp: 0,
        }
    }

    /// The packet's raw bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

/// Iterator over NACK `(PID, BLP)` pairs.
#[derive(Clone, Debug)]
pub struct NackPairIter<'a>(core::slice::Iter<'a, [u8; 4]>);

impl Iterator for NackPairIter<'_> {
    type Item = (u16, u16);

    fn next(&mut self) -> Option<(u16, u16)> {
        self.0.next().map(|e| {
            (
                u16::from_be_bytes([e[0], e[1]]),
                u16::from_be_bytes([e[2], e[3]]),
            )
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for NackPairIter<'_> {}

/// Iterator over lost sequence numbers of a NACK.
#[derive(Clone, Debug)]
pub struct NackIter<'a> {
    pairs: NackPairIter<'a>,
    /// PID of the current pair.
    pid: u16,
    /// Bits of the current BLP not yet yielded.
    blp: u16,
}

impl Iterator for NackIter<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if self.blp != 0 {
            let bit = self.blp.trailing_zeros() as u16;
            self.blp &= self.blp - 1;
            return Some(self.pid.wrapping_add(bit + 1));
        }
        let (pid, blp) = self.pairs.next()?;
        self.pid = pid;
        self.blp = blp;
        Some(pid)
    }
}

/// Unique identifier at the start of a REMB FCI.
pub(super) const REMB_ID: [u8; 4] = *b"REMB";

/// REMB view (draft-alvestrand-rmcat-remb-03 2.2), an application layer feedback message.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |V=2|P| FMT=15  |   PT=206      |             length            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                  SSRC of packet sender                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                  SSRC of media source (0)                     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Unique identifier 'R' 'E' 'M' 'B'                            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Num SSRC     | BR Exp    |  BR Mantissa                      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   SSRC feedback                                               |  x Num SSRC
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// Bitrate = mantissa (18 bits) << exp (6 bits), in bits per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remb<'a> {
    /// SSRC of packet sender.
    pub sender_ssrc: u32,
    /// Estimated maximum bitrate in bit/s (saturates at `u64::MAX` for absurd exponents).
    pub bitrate_bps: u64,
    ssrcs: &'a [u8],
    raw: &'a [u8],
}

impl<'a> Remb<'a> {
    /// Parses an AFB body; `Ok(None)` when it is not REMB.
    pub(super) fn parse(raw: &'a [u8], body: &'a [u8]) -> Result<Option<Self>, RtcpError> {
        let (sender_ssrc, _media) = feedback_ssrcs(body)?;
        let is_remb = body
            .get(FEEDBACK_SSRCS_LEN..)
            .and_then(|fci| fci.first_chunk::<4>())
            .is_some_and(|id| *id == REMB_ID);
        if !is_remb {
            return Ok(None);
        }
        let fields = be32(body, FEEDBACK_SSRCS_LEN + 4).ok_or(RtcpError::TooShort)?;
        let num_ssrc = usize::from((fields >> 24) as u8);
        let exp = (fields >> 18) & 0x3f;
        let mantissa = u64::from(fields & 0x3_ffff);
        let list_start = FEEDBACK_SSRCS_LEN + 8;
        let ssrcs = body
            .get(list_start..list_start + 4 * num_ssrc)
            .ok_or(RtcpError::Truncated)?;
        Ok(Some(Remb {
            sender_ssrc,
            bitrate_bps: remb_bitrate(exp, mantissa),
            ssrcs,
            raw,
        }))
    }

    /// The media SSRCs the estimate applies to.
    pub fn ssrcs(&self) -> SsrcIter<'a> {
        SsrcIter::new(self.ssrcs)
    }

    /// The packet's raw bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

/// mantissa << exp, saturating instead of dropping high bits.
fn remb_bitrate(exp: u32, mantissa: u64) -> u64 {
    if mantissa == 0 {
        0
    } else if mantissa.leading_zeros() < exp {
        u64::MAX
    } else {
        mantissa << exp
    }
}

/// Splits a bitrate into (exp, mantissa) with an 18-bit mantissa, rounding down.
pub(super) fn remb_exp_mantissa(bitrate_bps: u64) -> (u8, u32) {
    let bits = u64::BITS - bitrate_bps.leading_zeros();
    let exp = bits.saturating_sub(18);
    // exp <= 46 and the shifted value < 2^18, so both casts are lossless.
    (exp as u8, (bitrate_bps >> exp) as u32)
}
