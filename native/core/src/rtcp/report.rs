//! Sender and receiver reports (RFC 3550 6.4).

use super::{be32, RtcpError};

/// One reception report block (RFC 3550 6.4.1).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// |                 SSRC_n (SSRC of source n)                     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | fraction lost |       cumulative number of packets lost       |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           extended highest sequence number received           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      interarrival jitter                      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         last SR (LSR)                         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                   delay since last SR (DLSR)                  |
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// SSRC of the source this block reports on.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, 8-bit fixed point (x/256).
    pub fraction_lost: u8,
    /// Cumulative packets lost, a 24-bit signed value on the wire (clamped when written).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received: wrap count << 16 | highest sequence number.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from the source (LSR).
    pub last_sr: u32,
    /// Delay since that SR in 1/65536 s (DLSR).
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    /// Wire size of a report block.
    pub const LEN: usize = 24;

    /// Decodes one block.
    pub fn from_bytes(b: &[u8; Self::LEN]) -> Self {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        // Sign-extend the 24-bit cumulative count by shifting it to the top and back.
        let cumulative_lost = i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8;
        ReportBlock {
            ssrc: word(0),
            fraction_lost: b[4],
            cumulative_lost,
            extended_highest_seq: word(8),
            jitter: word(12),
            last_sr: word(16),
            delay_since_last_sr: word(20),
        }
    }

    /// Encodes one block; `cumulative_lost` is clamped to the 24-bit signed range.
    pub fn write_to(&self, out: &mut [u8; Self::LEN]) {
        let lost = self
            .cumulative_lost
            .clamp(-0x80_0000, 0x7f_ffff)
            .to_be_bytes();
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        out[4] = self.fraction_lost;
        out[5..8].copy_from_slice(&lost[1..4]);
        out[8..12].copy_from_slice(&self.extended_highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// Iterator over report blocks.
#[derive(Clone, Debug)]
pub struct ReportBlockIter<'a>(core::slice::Iter<'a, [u8; ReportBlock::LEN]>);

impl<'a> ReportBlockIter<'a> {
    fn new(blocks: &'a [u8]) -> Self {
        ReportBlockIter(blocks.as_chunks::<{ ReportBlock::LEN }>().0.iter())
    }
}

impl Iterator for ReportBlockIter<'_> {
    type Item = ReportBlock;

    #[inline]
    fn next(&mut self) -> Option<ReportBlock> {
        self.0.next().map(ReportBlock::from_bytes)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for ReportBlockIter<'_> {}

/// Returns the `count` report blocks starting at `at` in `body`.
fn blocks_at(body: &[u8], at: usize, count: u8) -> Result<&[u8], RtcpError> {
    let len = usize::from(count) * ReportBlock::LEN;
    body.get(at..at + len).ok_or(RtcpError::Truncated)
}

/// Sender report view (RFC 3550 6.4.1).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |V=2|P|    RC   |   PT=SR=200   |             length            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         SSRC of sender                        |
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// |              NTP timestamp, most significant word             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |             NTP timestamp, least significant word             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         RTP timestamp                         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     sender's packet count                     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      sender's octet count                     |
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// |                 report blocks (RC x 24 bytes)                 |
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// |                  profile-specific extensions                  |
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderReport<'a> {
    /// SSRC of sender.
    pub ssrc: u32,
    /// 64-bit NTP timestamp (seconds since 1900 in the top half, fraction in the bottom).
    pub ntp_timestamp: u64,
    /// RTP timestamp for the same instant.
    pub rtp_timestamp: u32,
    /// Sender's packet count.
    pub packet_count: u32,
    /// Sender's octet count (payload only).
    pub octet_count: u32,
    blocks: &'a [u8],
    raw: &'a [u8],
}

impl<'a> SenderReport<'a> {
    /// Fixed part after the common header.
    const FIXED: usize = 24;

    pub(super) fn parse(raw: &'a [u8], count: u8, body: &'a [u8]) -> Result<Self, RtcpError> {
        if body.len() < Self::FIXED {
            return Err(RtcpError::TooShort);
        }
        let word = |at| be32(body, at).ok_or(RtcpError::TooShort);
        let ntp_msw = word(4)?;
        let ntp_lsw = word(8)?;
        Ok(SenderReport {
            ssrc: word(0)?,
            ntp_timestamp: u64::from(ntp_msw) << 32 | u64::from(ntp_lsw),
            rtp_timestamp: word(12)?,
            packet_count: word(16)?,
            octet_count: word(20)?,
            blocks: blocks_at(body, Self::FIXED, count)?,
            raw,
        })
    }

    /// The RC report blocks.
    pub fn report_blocks(&self) -> ReportBlockIter<'a> {
        ReportBlockIter::new(self.blocks)
    }

    /// The packet's raw bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

/// Receiver report view (RFC 3550 6.4.2).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |V=2|P|    RC   |   PT=RR=201   |             length            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     SSRC of packet sender                     |
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// |                 report blocks (RC x 24 bytes)                 |
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// |                  profile-specific extensions                  |
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    /// SSRC of packet sender.
    pub ssrc: u32,
    blocks: &'a [u8],
    raw: &'a [u8],
}

impl<'a> ReceiverReport<'a> {
    pub(super) fn parse(raw: &'a [u8], count: u8, body: &'a [u8]) -> Result<Self, RtcpError> {
        let ssrc = be32(body, 0).ok_or(RtcpError::TooShort)?;
        Ok(ReceiverReport {
            ssrc,
            blocks: blocks_at(body, 4, count)?,
            raw,
        })
    }

    /// The RC report blocks.
    pub fn report_blocks(&self) -> ReportBlockIter<'a> {
        ReportBlockIter::new(self.blocks)
    }

    /// The packet's raw bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}
