//! Codec payload parsers for selective forwarding: what a layer selector and a Projection need from
//! the RTP payload ([`crate::rtp::RtpView::payload`]) of VP8 (RFC 7741), VP9 (RFC 9628) and H.264
//! (RFC 6184), and from AV1's Dependency Descriptor header extension (AV1 RTP spec, Appendix A).
//!
//! Like the RTP view, every parser borrows its input, allocates nothing and bounds-checks each
//! field its flags announce: malformed input is a [`CodecError`], never a panic.

pub mod av1;
pub mod h264;
pub mod vp8;
pub mod vp9;

/// Why a payload is not a well-formed descriptor, or a rewrite cannot be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// The payload is empty: no descriptor byte or NAL unit header.
    Empty,
    /// A field that the flags announce runs past the end of the payload.
    Truncated,
    /// VP8: the first packet of a frame (S=1, PID=0) has no payload header after the descriptor
    /// (RFC 7741 4.3).
    MissingPayloadHeader,
    /// VP9: the third P_DIFF still has N set; at most 3 references are allowed (RFC 9628 4.2).
    /// AV1 Dependency Descriptor: a template or frame lists more than [`av1::MAX_FDIFFS`] frame
    /// differences.
    TooManyReferences,
    /// H.264 STAP-A: a NAL unit size is 0, runs past the end, or a size field is cut short
    /// (RFC 6184 5.7.1).
    BadAggregateLength,
    /// H.264 STAP-A without a single aggregation unit (RFC 6184 5.7.1).
    EmptyAggregate,
    /// A rewrite helper was asked for a field the packet does not carry.
    FieldAbsent,
    /// AV1 Dependency Descriptor: the packet names a template, or needs the decode target count,
    /// and no template dependency structure is known yet (none received, A.8.2).
    MissingStructure,
    /// AV1 Dependency Descriptor: frame_dependency_template_id is outside the known structure's
    /// templates; the packet with a newer structure was lost or is late (A.8.3).
    UnknownTemplate,
    /// AV1 Dependency Descriptor: template_layers defines more than [`av1::MAX_TEMPLATES`]
    /// templates, more than a 6-bit template id can name.
    TooManyTemplates,
    /// AV1 Dependency Descriptor: a template's spatial or temporal id reaches
    /// [`av1::MAX_SPATIAL_LAYERS`] or [`av1::MAX_TEMPORAL_LAYERS`].
    TooManyLayers,
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for CodecError {}

/// Width of a VP8 or VP9 PictureID: 7 bits when M=0, 15 bits when M=1 (RFC 7741 4.2, RFC 9628
/// 4.2). A sender picks one; a rewrite keeps it, since changing it would move every later field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PictureIdWidth {
    Bits7,
    Bits15,
}

impl PictureIdWidth {
    /// The largest PictureID of this width; the next one wraps to 0.
    pub const fn max(self) -> u16 {
        match self {
            PictureIdWidth::Bits7 => 0x7f,
            PictureIdWidth::Bits15 => 0x7fff,
        }
    }

    /// Bytes the field takes, M bit included.
    pub const fn byte_len(self) -> usize {
        match self {
            PictureIdWidth::Bits7 => 1,
            PictureIdWidth::Bits15 => 2,
        }
    }
}

/// M bit of the PictureID's first byte, in both VP8 and VP9.
const M_BIT: u8 = 0x80;

/// Reads a PictureID (M bit, then 7 or 15 bits) at `at`; VP8 and VP9 encode it alike.
fn read_picture_id(buf: &[u8], at: usize) -> Result<(u16, PictureIdWidth), CodecError> {
    let first = *buf.get(at).ok_or(CodecError::Truncated)?;
    if first & M_BIT == 0 {
        return Ok((u16::from(first), PictureIdWidth::Bits7));
    }
    let second = *buf.get(at + 1).ok_or(CodecError::Truncated)?;
    let value = u16::from_be_bytes([first & !M_BIT, second]);
    Ok((value, PictureIdWidth::Bits15))
}

/// Writes `value` (masked to the field's width) over the PictureID at `at`, keeping M.
fn write_picture_id(buf: &mut [u8], at: usize, value: u16) -> Result<PictureIdWidth, CodecError> {
    let (_, width) = read_picture_id(buf, at)?;
    let value = value & width.max();
    match width {
        PictureIdWidth::Bits7 => buf[at] = value as u8,
        PictureIdWidth::Bits15 => {
            let [hi, lo] = value.to_be_bytes();
            buf[at] = M_BIT | hi;
            buf[at + 1] = lo;
        }
    }
    Ok(width)
}

#[cfg(test)]
mod tests;
