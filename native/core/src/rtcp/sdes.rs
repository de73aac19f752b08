//! Source description (RFC 3550 6.5).

use super::{be32, RtcpError};

/// SDES item type CNAME (RFC 3550 6.5.1).
pub const SDES_CNAME: u8 = 1;

/// SDES packet view (RFC 3550 6.5). The chunk structure is fully checked at parse time.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |V=2|P|    SC   |  PT=SDES=202  |             length            |
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// |                          SSRC/CSRC_1                          |  chunk 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     type      |    length     |   text (length bytes) ...     |  items, ended by
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  one or more null
/// |                              ...                              |  octets up to the
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+  next 32-bit boundary
/// |                          SSRC/CSRC_2                          |  chunk 2
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sdes<'a> {
    count: u8,
    body: &'a [u8],
    raw: &'a [u8],
}

/// Where one chunk's parts lie within the SDES body.
struct ChunkSpan {
    ssrc: u32,
    items_start: usize,
    items_end: usize,
    next: usize,
}

/// Walks one chunk starting at `at` (a multiple of 4 within the body).
fn walk_chunk(body: &[u8], at: usize) -> Result<ChunkSpan, RtcpError> {
    let ssrc = be32(body, at).ok_or(RtcpError::Truncated)?;
    let items_start = at + 4;
    let mut pos = items_start;
    loop {
        let item_type = *body.get(pos).ok_or(RtcpError::Truncated)?;
        if item_type == 0 {
            // Null item: the list ends; skip to the next 32-bit boundary.
            let next = (pos + 1).next_multiple_of(4);
            if next > body.len() {
                return Err(RtcpError::Truncated);
            }
            return Ok(ChunkSpan {
                ssrc,
                items_start,
                items_end: pos,
                next,
            });
        }
        let len = usize::from(*body.get(pos + 1).ok_or(RtcpError::Truncated)?);
        pos += 2 + len;
        if pos > body.len() {
            return Err(RtcpError::Truncated);
        }
    }
}

impl<'a> Sdes<'a> {
    pub(super) fn parse(raw: &'a [u8], count: u8, body: &'a [u8]) -> Result<Self, RtcpError> {
        let mut at = 0;
        for _ in 0..count {
            at = walk_chunk(body, at)?.next;
        }
        Ok(Sdes { count, body, raw })
    }

    /// The SC chunks, each an SSRC/CSRC with its items.
    pub fn chunks(&self) -> SdesChunkIter<'a> {
        SdesChunkIter {
            body: self.body,
            at: 0,
            left: self.count,
        }
    }

    /// The packet's raw bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

/// One SDES chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// SSRC or CSRC the items describe.
    pub ssrc: u32,
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// Items as `(type, text)`.
    pub fn items(&self) -> SdesItemIter<'a> {
        SdesItemIter { rest: self.items }
    }

    /// The CNAME item's text, if present.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.items()
            .find(|&(t, _)| t == SDES_CNAME)
            .map(|(_, text)| text)
    }
}

/// Iterator over SDES chunks.
#[derive(Clone, Debug)]
pub struct SdesChunkIter<'a> {
    body: &'a [u8],
    at: usize,
    left: u8,
}

impl<'a> Iterator for SdesChunkIter<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<SdesChunk<'a>> {
        if self.left == 0 {
            return None;
        }
        // Parse already walked every chunk, so this cannot fail; stop quietly if it did.
        let Ok(span) = walk_chunk(self.body, self.at) else {
            self.left = 0;
            return None;
        };
        self.left -= 1;
        self.at = span.next;
        Some(SdesChunk {
            ssrc: span.ssrc,
            items: self
                .body
                .get(span.items_start..span.items_end)
                .unwrap_or(&[]),
        })
    }
}

/// Iterator over the items of one chunk, as `(type, text)`.
#[derive(Clone, Debug)]
pub struct SdesItemIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdesItemIter<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&item_type, rest) = self.rest.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let text = rest.get(..usize::from(len))?;
        self.rest = rest.get(usize::from(len)..).unwrap_or(&[]);
        Some((item_type, text))
    }
}
