//! VP8 payload descriptor (RFC 7741 4.2), the keyframe bit of the payload header (RFC 7741 4.3),
//! and in-place PictureID / TL0PICIDX rewrites for the egress copy.
//!
//! ```text
//!       0 1 2 3 4 5 6 7                      0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+                   +-+-+-+-+-+-+-+-+
//!      |X|R|N|S|R| PID | (REQUIRED)        |X|R|N|S|R| PID | (REQUIRED)
//!      +-+-+-+-+-+-+-+-+                   +-+-+-+-+-+-+-+-+
//! X:   |I|L|T|K| RSV   | (OPTIONAL)   X:   |I|L|T|K| RSV   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+                   +-+-+-+-+-+-+-+-+
//! I:   |M| PictureID   | (OPTIONAL)   I:   |M| PictureID   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+                   +-+-+-+-+-+-+-+-+
//! L:   |   TL0PICIDX   | (OPTIONAL)        |   PictureID   |
//!      +-+-+-+-+-+-+-+-+                   +-+-+-+-+-+-+-+-+
//! T/K: |TID|Y| KEYIDX  | (OPTIONAL)   L:   |   TL0PICIDX   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+                   +-+-+-+-+-+-+-+-+
//!                                     T/K: |TID|Y| KEYIDX  | (OPTIONAL)
//!                                          +-+-+-+-+-+-+-+-+
//! ```

use super::{read_picture_id, write_picture_id, CodecError, PictureIdWidth};

const X_BIT: u8 = 0x80;
const N_BIT: u8 = 0x20;
const S_BIT: u8 = 0x10;
const PID_MASK: u8 = 0x07;

const I_BIT: u8 = 0x80;
const L_BIT: u8 = 0x40;
const T_BIT: u8 = 0x20;
const K_BIT: u8 = 0x10;

const Y_BIT: u8 = 0x20;
const KEYIDX_MASK: u8 = 0x1f;

/// Inverse keyframe flag, the low bit of the payload header's first byte (RFC 7741 4.3).
const INTER_FRAME_BIT: u8 = 0x01;

/// A parsed VP8 payload descriptor. `Copy`; parsing allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// N: the frame is not used as a reference by any other frame, so it can be dropped.
    pub non_reference: bool,
    /// S: this packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index (0..=7) this packet's first byte belongs to.
    pub partition_index: u8,
    /// PictureID (I bit), 7 or 15 bits wide as [`Vp8Descriptor::picture_id_width`] tells.
    pub picture_id: Option<u16>,
    /// Width of [`Vp8Descriptor::picture_id`]; `Some` exactly when it is.
    pub picture_id_width: Option<PictureIdWidth>,
    /// TL0PICIDX (L bit): running index of the temporal base layer frames.
    pub tl0picidx: Option<u8>,
    /// TID (T bit): temporal layer index, 0..=3.
    pub tid: Option<u8>,
    /// Y (meaningful with T): the frame depends only on the base layer frame of its TL0PICIDX,
    /// so a receiver can switch up to this layer here.
    pub layer_sync: bool,
    /// KEYIDX (K bit): running index of the keyframes, 0..=31.
    pub keyidx: Option<u8>,
    /// Bytes of descriptor before the VP8 payload.
    pub header_len: usize,
    keyframe: bool,
}

/// Where the optional fields sit, as the flag bytes say; bounds-checked.
struct Layout {
    first: u8,
    picture_id_at: Option<usize>,
    tl0picidx_at: Option<usize>,
    tk_at: Option<usize>,
    ext: u8,
    header_len: usize,
}

fn layout(payload: &[u8]) -> Result<Layout, CodecError> {
    let first = *payload.first().ok_or(CodecError::Empty)?;
    let mut out = Layout {
        first,
        picture_id_at: None,
        tl0picidx_at: None,
        tk_at: None,
        ext: 0,
        header_len: 1,
    };
    if first & X_BIT == 0 {
        return Ok(out);
    }
    out.ext = *payload.get(1).ok_or(CodecError::Truncated)?;
    let mut at = 2;
    if out.ext & I_BIT != 0 {
        let (_, width) = read_picture_id(payload, at)?;
        out.picture_id_at = Some(at);
        at += width.byte_len();
    }
    if out.ext & L_BIT != 0 {
        out.tl0picidx_at = Some(at);
        at += 1;
    }
    // One byte carries both TID/Y and KEYIDX; either flag brings it.
    if out.ext & (T_BIT | K_BIT) != 0 {
        out.tk_at = Some(at);
        at += 1;
    }
    if at > payload.len() {
        return Err(CodecError::Truncated);
    }
    out.header_len = at;
    Ok(out)
}

impl Vp8Descriptor {
    /// Parses the payload descriptor at the start of an RTP payload (RFC 7741 4.2) and, on the
    /// first packet of a frame (S=1, PID=0), the keyframe bit of the payload header after it
    /// (RFC 7741 4.3).
    ///
    /// Reserved bits are ignored, as the RFC asks of receivers.
    #[inline]
    pub fn parse(payload: &[u8]) -> Result<Self, CodecError> {
        let l = layout(payload)?;
        let picture_id = match l.picture_id_at {
            Some(at) => Some(read_picture_id(payload, at)?),
            None => None,
        };
        let tl0picidx = l.tl0picidx_at.map(|at| payload[at]);
        let tk = l.tk_at.map_or(0, |at| payload[at]);
        let has_t = l.ext & T_BIT != 0;

        let start_of_partition = l.first & S_BIT != 0;
        let partition_index = l.first & PID_MASK;
        let keyframe = if start_of_partition && partition_index == 0 {
            let header = payload
                .get(l.header_len)
                .ok_or(CodecError::MissingPayloadHeader)?;
            header & INTER_FRAME_BIT == 0
        } else {
            false
        };

        Ok(Vp8Descriptor {
            non_reference: l.first & N_BIT != 0,
            start_of_partition,
            partition_index,
            picture_id: picture_id.map(|(v, _)| v),
            picture_id_width: picture_id.map(|(_, w)| w),
            tl0picidx,
            tid: has_t.then_some(tk >> 6),
            layer_sync: has_t && tk & Y_BIT != 0,
            keyidx: (l.ext & K_BIT != 0).then_some(tk & KEYIDX_MASK),
            header_len: l.header_len,
            keyframe,
        })
    }

    /// This packet holds the start of a frame: S=1 and PID=0 (RFC 7741 4.2).
    pub fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition_index == 0
    }

    /// This packet starts a keyframe: the first packet of a frame whose payload header has P=0
    /// (RFC 7741 4.3). False on every other packet, the later packets of a keyframe included.
    pub fn starts_keyframe(&self) -> bool {
        self.keyframe
    }
}

/// The width and height (14 bits each; the 2-bit scales dropped) a VP8 keyframe's header carries after
/// its 3-byte frame tag and the start code 9d 01 2a (RFC 6386 9.1, 19.1). `frame` is the VP8 payload
/// after the descriptor, of a packet that starts a keyframe; None when it is too short or the start
/// code is not there.
pub fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    let b = frame.get(..10)?;
    if b[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([b[6], b[7]]) & 0x3fff;
    let height = u16::from_le_bytes([b[8], b[9]]) & 0x3fff;
    Some((width, height))
}

/// Byte offsets in the payload of the PictureID and TL0PICIDX fields a descriptor carries, so a
/// Projection can rewrite them in each receiver's copy without parsing again. With X=1 the PictureID
/// follows the extension byte, and TL0PICIDX follows it (RFC 7741 4.2).
pub fn field_offsets(d: &Vp8Descriptor) -> (Option<usize>, Option<usize>) {
    let pid = d.picture_id_width.map(|_| 2);
    let tl0 = d
        .tl0picidx
        .map(|_| 2 + d.picture_id_width.map_or(0, PictureIdWidth::byte_len));
    (pid, tl0)
}

/// Rewrites the PictureID of the VP8 payload at the start of `payload` in place, keeping its width
/// (7 or 15 bits; `value` is taken modulo that width, as PictureIDs wrap). Returns the width.
///
/// Fails with [`CodecError::FieldAbsent`] when the descriptor has no PictureID (I=0 or X=0), or
/// with the parse error when the descriptor is malformed; `payload` is then unchanged.
pub fn set_picture_id(payload: &mut [u8], value: u16) -> Result<PictureIdWidth, CodecError> {
    let at = layout(payload)?
        .picture_id_at
        .ok_or(CodecError::FieldAbsent)?;
    write_picture_id(payload, at, value)
}

/// Rewrites the TL0PICIDX of the VP8 payload at the start of `payload` in place.
///
/// Fails with [`CodecError::FieldAbsent`] when the descriptor has none (L=0 or X=0), or with the
/// parse error when the descriptor is malformed; `payload` is then unchanged.
pub fn set_tl0picidx(payload: &mut [u8], value: u8) -> Result<(), CodecError> {
    let at = layout(payload)?
        .tl0picidx_at
        .ok_or(CodecError::FieldAbsent)?;
    payload[at] = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6386 9.1 / 19.1: a keyframe's frame tag (3 bytes), start code 9d 01 2a, then width and height
    /// little-endian, 14 bits each with a 2-bit scale on top; here 1280x720 with scale bits set on the
    /// height (they are not part of the size).
    #[test]
    fn rfc6386_9_1_keyframe_header_gives_the_frame_size() {
        let frame = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x42];
        assert_eq!(keyframe_size(&frame), Some((1280, 720)));
        assert_eq!(keyframe_size(&frame[..9]), None);
        let mut bad = frame;
        bad[4] = 0x02;
        assert_eq!(keyframe_size(&bad), None);
    }

    #[test]
    fn field_offsets_point_at_the_picture_id_and_tl0picidx() {
        let seven = [0x90, 0xC0, 0x05, 0x21, 0x10];
        let d = Vp8Descriptor::parse(&seven).expect("parses");
        assert_eq!(field_offsets(&d), (Some(2), Some(3)));
        let fifteen = [0x90, 0xC0, 0x80 | 0x12, 0x34, 0x21, 0x10];
        let d = Vp8Descriptor::parse(&fifteen).expect("parses");
        assert_eq!(field_offsets(&d), (Some(2), Some(4)));
        let tl0_only = [0x90, 0x40, 0x21, 0x10];
        let d = Vp8Descriptor::parse(&tl0_only).expect("parses");
        assert_eq!(field_offsets(&d), (None, Some(2)));
    }

    /// RFC 7741 4.2, right-hand figure: X=1, S=1, PID=0; I, L, T set; M=1 with a 15-bit
    /// PictureID; then TL0PICIDX, then TID/Y/KEYIDX; then a keyframe payload header.
    #[test]
    fn rfc7741_4_2_descriptor_with_15_bit_picture_id_tl0picidx_and_tid() {
        let pkt = [
            0b1001_0000, // X=1 R=0 N=0 S=1 R=0 PID=000
            0b1110_0000, // I=1 L=1 T=1 K=0 RSV=0000
            0b1001_0010, // M=1, PictureID high 7 bits = 0x12
            0b0011_0100, // PictureID low 8 bits = 0x34
            0b0101_0110, // TL0PICIDX = 0x56
            0b1010_0000, // TID=10 Y=1 KEYIDX=00000
            0b1001_0000, // payload header: Size0=100 H=1 VER=000 P=0 (keyframe)
            0x9d,
            0x01,
            0x2a,
        ];
        let d = Vp8Descriptor::parse(&pkt).expect("valid");
        assert!(!d.non_reference);
        assert!(d.start_of_partition);
        assert_eq!(d.partition_index, 0);
        assert_eq!(d.picture_id, Some(0x1234));
        assert_eq!(d.picture_id_width, Some(PictureIdWidth::Bits15));
        assert_eq!(d.tl0picidx, Some(0x56));
        assert_eq!(d.tid, Some(2));
        assert!(d.layer_sync);
        assert_eq!(d.keyidx, None);
        assert_eq!(d.header_len, 6);
        assert!(d.starts_frame());
        assert!(d.starts_keyframe());
    }

    /// RFC 7741 4.2, left-hand figure: M=0 gives a 7-bit PictureID; K alone brings the T/K byte.
    #[test]
    fn rfc7741_4_2_descriptor_with_7_bit_picture_id_and_keyidx() {
        let pkt = [
            0b1010_0011, // X=1 R=0 N=1 S=0 R=0 PID=011
            0b1001_0000, // I=1 L=0 T=0 K=1
            0b0111_1111, // M=0 PictureID=127
            0b1101_0101, // TID=11 (ignored: T=0) Y=0 KEYIDX=10101
            0xaa,        // partition data
        ];
        let d = Vp8Descriptor::parse(&pkt).expect("valid");
        assert!(d.non_reference);
        assert!(!d.start_of_partition);
        assert_eq!(d.partition_index, 3);
        assert_eq!(d.picture_id, Some(127));
        assert_eq!(d.picture_id_width, Some(PictureIdWidth::Bits7));
        assert_eq!(d.tl0picidx, None);
        assert_eq!(d.tid, None);
        assert!(!d.layer_sync);
        assert_eq!(d.keyidx, Some(0b10101));
        assert_eq!(d.header_len, 4);
        assert!(!d.starts_frame());
        assert!(!d.starts_keyframe());
    }

    /// RFC 7741 4.2: with X=0 the descriptor is the one required byte.
    #[test]
    fn rfc7741_4_2_minimal_descriptor_without_extension() {
        let pkt = [0b0001_0000, 0b0000_0001, 0, 0]; // S=1 PID=0; payload header P=1
        let d = Vp8Descriptor::parse(&pkt).expect("valid");
        assert_eq!(d.header_len, 1);
        assert_eq!(d.picture_id, None);
        assert_eq!(d.picture_id_width, None);
        assert_eq!((d.tl0picidx, d.tid, d.keyidx), (None, None, None));
        assert!(d.starts_frame());
        assert!(!d.starts_keyframe());
    }

    /// RFC 7741 4.3: the P bit of the first payload header byte is 0 for a keyframe, 1 for an
    /// inter frame; it is only read on the first packet of a frame (S=1, PID=0).
    #[test]
    fn rfc7741_4_3_keyframe_vs_inter_frame() {
        let key = [0x90, 0x80, 0x05, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        let inter = [0x90, 0x80, 0x06, 0x11, 0x02, 0x00];
        assert!(Vp8Descriptor::parse(&key).expect("valid").starts_keyframe());
        assert!(!Vp8Descriptor::parse(&inter)
            .expect("valid")
            .starts_keyframe());

        // Same bytes, but not the frame's first packet: S=0, or PID=1.
        let mut later = key;
        later[0] = 0x80;
        assert!(!Vp8Descriptor::parse(&later)
            .expect("valid")
            .starts_keyframe());
        later[0] = 0x91;
        assert!(!Vp8Descriptor::parse(&later)
            .expect("valid")
            .starts_keyframe());

        // A frame's first packet with no payload header after the descriptor.
        assert_eq!(
            Vp8Descriptor::parse(&key[..3]),
            Err(CodecError::MissingPayloadHeader)
        );
        // A later packet may end right after its descriptor.
        assert!(Vp8Descriptor::parse(&[0x80, 0x80, 0x05]).is_ok());
    }

    #[test]
    fn rfc7741_4_2_truncated_descriptors_are_errors() {
        assert_eq!(Vp8Descriptor::parse(&[]), Err(CodecError::Empty));
        let full = [0x90, 0xf0, 0x92, 0x34, 0x56, 0xa5, 0x00];
        assert_eq!(Vp8Descriptor::parse(&full).expect("valid").header_len, 6);
        for len in 1..6 {
            assert_eq!(
                Vp8Descriptor::parse(&full[..len]),
                Err(CodecError::Truncated),
                "len {len}"
            );
        }
    }

    /// Rewrites one field and checks that it parses back to the new value and that every other
    /// byte is unchanged.
    fn assert_rewrite(pkt: &[u8], value: u16, want: u16, want_width: PictureIdWidth) {
        let mut out = pkt.to_vec();
        assert_eq!(set_picture_id(&mut out, value), Ok(want_width));
        let before = Vp8Descriptor::parse(pkt).expect("valid");
        let after = Vp8Descriptor::parse(&out).expect("still valid");
        assert_eq!(after.picture_id, Some(want));
        assert_eq!(
            Vp8Descriptor {
                picture_id: before.picture_id,
                ..after
            },
            before
        );
        let at = 2..2 + want_width.byte_len();
        for (i, (a, b)) in pkt.iter().zip(&out).enumerate() {
            if !at.contains(&i) {
                assert_eq!(a, b, "byte {i} changed");
            }
        }
    }

    #[test]
    fn rfc7741_4_2_picture_id_rewrite_round_trip_7_and_15_bits() {
        // 7 bits: M=0, PictureID 5; KEYIDX 1; payload follows.
        let short = [0x90, 0x90, 0x05, 0x01, 0x00, 0xaa, 0xbb];
        assert_rewrite(&short, 100, 100, PictureIdWidth::Bits7);
        assert_rewrite(&short, 127, 127, PictureIdWidth::Bits7);
        // Wraps modulo 2^7 rather than widening the field.
        assert_rewrite(&short, 130, 2, PictureIdWidth::Bits7);

        // 15 bits: M=1, PictureID 0x1234; TL0PICIDX; TID.
        let long = [0x90, 0xe0, 0x92, 0x34, 0x56, 0x40, 0x00, 0xaa];
        assert_rewrite(&long, 0x7fff, 0x7fff, PictureIdWidth::Bits15);
        assert_rewrite(&long, 3, 3, PictureIdWidth::Bits15);
        assert_rewrite(&long, 0x8005, 5, PictureIdWidth::Bits15);
    }

    #[test]
    fn rfc7741_4_2_tl0picidx_rewrite_round_trip() {
        let pkt = [0x90, 0xe0, 0x92, 0x34, 0x56, 0x40, 0x00, 0xaa];
        let mut out = pkt;
        assert_eq!(set_tl0picidx(&mut out, 0xfe), Ok(()));
        assert_eq!(
            Vp8Descriptor::parse(&out).expect("valid").tl0picidx,
            Some(0xfe)
        );
        for (i, (a, b)) in pkt.iter().zip(&out).enumerate() {
            if i != 4 {
                assert_eq!(a, b, "byte {i} changed");
            }
        }

        // A 7-bit PictureID puts TL0PICIDX one byte earlier.
        let pkt = [0x90, 0xc0, 0x05, 0x33, 0x00];
        let mut out = pkt;
        assert_eq!(set_tl0picidx(&mut out, 9), Ok(()));
        assert_eq!(out, [0x90, 0xc0, 0x05, 0x09, 0x00]);
    }

    #[test]
    fn rfc7741_4_2_rewrite_of_absent_field_is_an_error_and_changes_nothing() {
        let mut no_ext = [0x10, 0x00, 0x00]; // X=0
        assert_eq!(set_picture_id(&mut no_ext, 1), Err(CodecError::FieldAbsent));
        assert_eq!(set_tl0picidx(&mut no_ext, 1), Err(CodecError::FieldAbsent));
        assert_eq!(no_ext, [0x10, 0x00, 0x00]);

        let mut only_tl0 = [0x90, 0x40, 0x07, 0x00]; // L only
        assert_eq!(
            set_picture_id(&mut only_tl0, 1),
            Err(CodecError::FieldAbsent)
        );
        assert_eq!(only_tl0, [0x90, 0x40, 0x07, 0x00]);

        let mut only_pid = [0x90, 0x80, 0x07, 0x00]; // I only
        assert_eq!(
            set_tl0picidx(&mut only_pid, 1),
            Err(CodecError::FieldAbsent)
        );
        assert_eq!(only_pid, [0x90, 0x80, 0x07, 0x00]);

        // M=1 but the second PictureID byte is missing.
        let mut truncated = [0x90, 0x80, 0x80];
        assert_eq!(
            set_picture_id(&mut truncated, 1),
            Err(CodecError::Truncated)
        );
        assert_eq!(truncated, [0x90, 0x80, 0x80]);
        assert_eq!(set_tl0picidx(&mut [], 1), Err(CodecError::Empty));
    }
}
