//! Goodbye (RFC 3550 6.6).

use super::{RtcpError, SsrcIter};

/// BYE packet view (RFC 3550 6.6).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |V=2|P|    SC   |   PT=BYE=203  |             length            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                           SSRC/CSRC                           |  x SC
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     length    |               reason for leaving            ...  (opt)
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bye<'a> {
    /// Reason for leaving, if the packet has one.
    pub reason: Option<&'a [u8]>,
    ssrcs: &'a [u8],
    raw: &'a [u8],
}

impl<'a> Bye<'a> {
    pub(super) fn parse(raw: &'a [u8], count: u8, body: &'a [u8]) -> Result<Self, RtcpError> {
        let list_len = usize::from(count) * 4;
        let ssrcs = body.get(..list_len).ok_or(RtcpError::Truncated)?;
        let tail = body.get(list_len..).unwrap_or(&[]);
        let reason = match tail.split_first() {
            None => None,
            Some((&len, text)) => Some(text.get(..usize::from(len)).ok_or(RtcpError::Truncated)?),
        };
        Ok(Bye { reason, ssrcs, raw })
    }

    /// The SC sources that are leaving.
    pub fn ssrcs(&self) -> SsrcIter<'a> {
        SsrcIter::new(self.ssrcs)
    }

    /// The packet's raw bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}
