//! Transport-wide congestion control feedback
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01 3.1).

use super::feedback::{feedback_ssrcs, FEEDBACK_SSRCS_LEN};
use super::{be16, be32, RtcpError};

/// Transport-cc feedback view. The header is checked at parse time; packet chunks and receive
/// deltas are decoded lazily by [`TransportCc::packets`], which reports malformed input as errors.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |V=2|P|  FMT=15 |    PT=205     |           length              |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     SSRC of packet sender                     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      SSRC of media source                     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |      base sequence number     |      packet status count      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                 reference time                | fb pkt. count |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |          packet chunk         |         packet chunk          |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// .                                                               .
/// |         packet chunk          |  recv delta   |  recv delta   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// .                                                               .
/// |           recv delta          |  recv delta   | zero padding  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportCc<'a> {
    /// SSRC of packet sender.
    pub sender_ssrc: u32,
    /// SSRC of media source.
    pub media_ssrc: u32,
    /// Transport-wide sequence number of the first packet reported.
    pub base_sequence_number: u16,
    /// Number of packets this feedback reports on.
    pub packet_status_count: u16,
    /// 24-bit signed reference time, in multiples of 64 ms.
    pub reference_time: i32,
    /// Feedback packet count, incremented per feedback sent (wraps at 256).
    pub fb_pkt_count: u8,
    /// Packet chunks followed by receive deltas.
    chunks_and_deltas: &'a [u8],
    raw: &'a [u8],
}

/// Bytes between the feedback SSRCs and the first packet chunk.
const TWCC_FIELDS_LEN: usize = 8;

impl<'a> TransportCc<'a> {
    pub(super) fn parse(raw: &'a [u8], body: &'a [u8]) -> Result<Self, RtcpError> {
        let (sender_ssrc, media_ssrc) = feedback_ssrcs(body)?;
        let base_sequence_number = be16(body, FEEDBACK_SSRCS_LEN).ok_or(RtcpError::TooShort)?;
        let packet_status_count = be16(body, FEEDBACK_SSRCS_LEN + 2).ok_or(RtcpError::TooShort)?;
        let time_and_count = be32(body, FEEDBACK_SSRCS_LEN + 4).ok_or(RtcpError::TooShort)?;
        // Sign-extend the top 24 bits.
        let reference_time = (time_and_count as i32) >> 8;
        let fb_pkt_count = time_and_count as u8;
        let chunks_and_deltas = body
            .get(FEEDBACK_SSRCS_LEN + TWCC_FIELDS_LEN..)
            .unwrap_or(&[]);
        Ok(TransportCc {
            sender_ssrc,
            media_ssrc,
            base_sequence_number,
            packet_status_count,
            reference_time,
            fb_pkt_count,
            chunks_and_deltas,
            raw,
        })
    }

    /// Reference time in microseconds (`reference_time` x 64 ms).
    pub fn reference_time_us(&self) -> i64 {
        i64::from(self.reference_time) * 64_000
    }

    /// Decodes each reported packet in sequence order. Yields one `Err` and stops when chunks or
    /// deltas run out before `packet_status_count` packets, or on a reserved status symbol.
    pub fn packets(&self) -> TwccPacketIter<'a> {
        TwccPacketIter::new(
            self.chunks_and_deltas,
            self.base_sequence_number,
            self.packet_status_count,
        )
    }

    /// The packet's raw bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

/// One packet's status in transport-cc feedback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwccPacket {
    /// Transport-wide sequence number.
    pub sequence_number: u16,
    /// Receive delta in 250 us ticks, relative to the previous received packet (or to the
    /// reference time for the first); `None` when the packet was not received.
    pub delta_ticks: Option<i16>,
}

/// Packet status symbols (draft section 3.1.1).
const SYMBOL_NOT_RECEIVED: u8 = 0;
const SYMBOL_SMALL_DELTA: u8 = 1;
const SYMBOL_LARGE_DELTA: u8 = 2;

/// Number of packets one chunk describes (before clamping to what is left).
///
/// ```text
/// Run length chunk (T=0):            Status vector chunk (T=1):
///  0                   1              0                   1
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |T| S |       Run Length        |  |T|S|       symbol list         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// S=0 in a status vector: 14 one-bit symbols; S=1: 7 two-bit symbols.
fn chunk_capacity(chunk: u16) -> usize {
    if chunk & 0x8000 == 0 {
        usize::from(chunk & 0x1fff)
    } else if chunk & 0x4000 == 0 {
        14
    } else {
        7
    }
}

/// Status symbol `index` (0-based, first packet first) of a chunk.
fn chunk_symbol(chunk: u16, index: usize) -> u8 {
    if chunk & 0x8000 == 0 {
        ((chunk >> 13) & 0x3) as u8
    } else if chunk & 0x4000 == 0 {
        ((chunk >> (13 - index)) & 0x1) as u8
    } else {
        ((chunk >> (12 - 2 * index)) & 0x3) as u8
    }
}

/// Iterator over transport-cc packet statuses; allocates nothing.
#[derive(Clone, Debug)]
pub struct TwccPacketIter<'a> {
    data: &'a [u8],
    /// Offset of the next chunk to load.
    chunk_pos: usize,
    chunk: u16,
    /// Next symbol index within `chunk`, and how many it holds.
    in_chunk: usize,
    chunk_len: usize,
    /// Packets still to yield.
    left: u16,
    /// Offset of the next receive delta.
    delta_pos: usize,
    seq: u16,
    /// An error found while locating the deltas, yielded first.
    pending_error: Option<RtcpError>,
}

impl<'a> TwccPacketIter<'a> {
    fn new(data: &'a [u8], base: u16, count: u16) -> Self {
        // Deltas start right after the last chunk needed to cover `count` packets.
        let mut pos = 0;
        let mut covered = 0usize;
        let mut pending_error = None;
        while covered < usize::from(count) {
            match be16(data, pos) {
                Some(chunk) => {
                    covered += chunk_capacity(chunk);
                    pos += 2;
                }
                None => {
                    pending_error = Some(RtcpError::Truncated);
                    break;
                }
            }
        }
        TwccPacketIter {
            data,
            chunk_pos: 0,
            chunk: 0,
            in_chunk: 0,
            chunk_len: 0,
            left: count,
            delta_pos: pos,
            seq: base,
            pending_error,
        }
    }

    fn fail(&mut self, e: RtcpError) -> Option<Result<TwccPacket, RtcpError>> {
        self.left = 0;
        Some(Err(e))
    }
}

impl Iterator for TwccPacketIter<'_> {
    type Item = Result<TwccPacket, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending_error.take() {
            return self.fail(e);
        }
        if self.left == 0 {
            return None;
        }
        while self.in_chunk >= self.chunk_len {
            let Some(chunk) = be16(self.data, self.chunk_pos) else {
                return self.fail(RtcpError::Truncated);
            };
            self.chunk = chunk;
            self.chunk_pos += 2;
            self.in_chunk = 0;
            self.chunk_len = chunk_capacity(chunk);
        }
        let symbol = chunk_symbol(self.chunk, self.in_chunk);
        self.in_chunk += 1;

        let delta_ticks = match symbol {
            SYMBOL_NOT_RECEIVED => None,
            SYMBOL_SMALL_DELTA => {
                let Some(&d) = self.data.get(self.delta_pos) else {
                    return self.fail(RtcpError::Truncated);
                };
                self.delta_pos += 1;
                Some(i16::from(d))
            }
            SYMBOL_LARGE_DELTA => {
                let Some(d) = be16(self.data, self.delta_pos) else {
                    return self.fail(RtcpError::Truncated);
                };
                self.delta_pos += 2;
                Some(d as i16)
            }
            _ => return self.fail(RtcpError::Malformed),
        };
        let packet = TwccPacket {
            sequence_number: self.seq,
            delta_ticks,
        };
        self.seq = self.seq.wrapping_add(1);
        self.left -= 1;
        Some(Ok(packet))
    }
}

impl core::iter::FusedIterator for TwccPacketIter<'_> {}
