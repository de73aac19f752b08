//! VP9 payload descriptor (RFC 9628 4.2) and the scalability structure it may carry (4.2.1).
//!
//! ```text
//! Flexible mode (F=1)                         Non-flexible mode (F=0)
//!       0 1 2 3 4 5 6 7                             0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+                           +-+-+-+-+-+-+-+-+
//!      |I|P|L|F|B|E|V|Z| (REQUIRED)                |I|P|L|F|B|E|V|Z| (REQUIRED)
//!      +-+-+-+-+-+-+-+-+                           +-+-+-+-+-+-+-+-+
//! I:   |M| PICTURE ID  |                      I:   |M| PICTURE ID  |
//!      +-+-+-+-+-+-+-+-+                           +-+-+-+-+-+-+-+-+
//! M:   | EXTENDED PID  |                      M:   | EXTENDED PID  |
//!      +-+-+-+-+-+-+-+-+                           +-+-+-+-+-+-+-+-+
//! L:   | TID |U| SID |D|                      L:   | TID |U| SID |D|
//!      +-+-+-+-+-+-+-+-+           -\              +-+-+-+-+-+-+-+-+
//! P,F: | P_DIFF      |N|  up to 3 times            |   TL0PICIDX   |
//!      +-+-+-+-+-+-+-+-+           -/              +-+-+-+-+-+-+-+-+
//! V:   | SS            |                      V:   | SS            |
//!      | ..            |                           | ..            |
//!      +-+-+-+-+-+-+-+-+                           +-+-+-+-+-+-+-+-+
//!
//! Scalability structure (4.2.1)
//!      +-+-+-+-+-+-+-+-+
//! V:   | N_S |Y|G|-|-|-|
//!      +-+-+-+-+-+-+-+-+              -\
//! Y:   |     WIDTH     | (16 bits)     . N_S + 1 times
//!      |     HEIGHT    | (16 bits)     .
//!      +-+-+-+-+-+-+-+-+              -/
//! G:   |      N_G      |
//!      +-+-+-+-+-+-+-+-+                            -\
//! N_G: | TID |U| R |-|-|                             . N_G times
//!      +-+-+-+-+-+-+-+-+              -\             .
//!      |    P_DIFF     |               . R times     .
//!      +-+-+-+-+-+-+-+-+              -/            -/
//! ```

use super::{read_picture_id, CodecError, PictureIdWidth};

const I_BIT: u8 = 0x80;
const P_BIT: u8 = 0x40;
const L_BIT: u8 = 0x20;
const F_BIT: u8 = 0x10;
const B_BIT: u8 = 0x08;
const E_BIT: u8 = 0x04;
const V_BIT: u8 = 0x02;
const Z_BIT: u8 = 0x01;

const U_BIT: u8 = 0x10;
const D_BIT: u8 = 0x01;
const N_BIT: u8 = 0x01;

const SS_Y_BIT: u8 = 0x10;
const SS_G_BIT: u8 = 0x08;

/// N_S is 3 bits: at most 8 spatial layers.
pub const MAX_SPATIAL_LAYERS: usize = 8;
/// At most 3 P_DIFFs per picture in flexible mode (RFC 9628 4.2).
pub const MAX_REFERENCES: usize = 3;

/// Frame size of one spatial layer, from the scalability structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resolution {
    pub width: u16,
    pub height: u16,
}

/// The scalability structure (SS, V bit) parsed far enough for a selector: its length, the number
/// of spatial layers and, when Y is set, their resolutions (RFC 9628 4.2.1). The picture group
/// descriptions are walked for their length only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9ScalabilityStructure {
    spatial_layers: u8,
    has_resolutions: bool,
    resolutions: [Resolution; MAX_SPATIAL_LAYERS],
    /// N_G, the number of pictures in the picture group, when G is set.
    pub picture_group_len: Option<u8>,
    /// Bytes the structure takes in the descriptor.
    pub len: usize,
}

impl Vp9ScalabilityStructure {
    /// Parses the SS starting at `at` (RFC 9628 4.2.1).
    fn parse(buf: &[u8], at: usize) -> Result<Self, CodecError> {
        let header = *buf.get(at).ok_or(CodecError::Truncated)?;
        let spatial_layers = (header >> 5) + 1;
        let has_resolutions = header & SS_Y_BIT != 0;
        let mut pos = at + 1;

        let mut resolutions = [Resolution::default(); MAX_SPATIAL_LAYERS];
        if has_resolutions {
            for r in &mut resolutions[..usize::from(spatial_layers)] {
                let b = buf.get(pos..pos + 4).ok_or(CodecError::Truncated)?;
                *r = Resolution {
                    width: u16::from_be_bytes([b[0], b[1]]),
                    height: u16::from_be_bytes([b[2], b[3]]),
                };
                pos += 4;
            }
        }

        let picture_group_len = if header & SS_G_BIT != 0 {
            let n_g = *buf.get(pos).ok_or(CodecError::Truncated)?;
            pos += 1;
            for _ in 0..n_g {
                let desc = *buf.get(pos).ok_or(CodecError::Truncated)?;
                // R, the picture's reference count, sits in bits 4-5; one P_DIFF byte each.
                pos += 1 + usize::from((desc >> 2) & 0x03);
            }
            if pos > buf.len() {
                return Err(CodecError::Truncated);
            }
            Some(n_g)
        } else {
            None
        };

        Ok(Vp9ScalabilityStructure {
            spatial_layers,
            has_resolutions,
            resolutions,
            picture_group_len,
            len: pos - at,
        })
    }

    /// Spatial layers in the stream: N_S + 1, 1..=8.
    pub fn spatial_layers(&self) -> u8 {
        self.spatial_layers
    }

    /// Each spatial layer's frame size, lowest layer first; empty when Y is not set.
    pub fn resolutions(&self) -> &[Resolution] {
        if self.has_resolutions {
            &self.resolutions[..usize::from(self.spatial_layers)]
        } else {
            &[]
        }
    }
}

/// A parsed VP9 payload descriptor. `Copy`; parsing allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9Descriptor {
    /// PictureID (I bit), 7 or 15 bits wide as [`Vp9Descriptor::picture_id_width`] tells.
    pub picture_id: Option<u16>,
    /// Width of [`Vp9Descriptor::picture_id`]; `Some` exactly when it is.
    pub picture_id_width: Option<PictureIdWidth>,
    /// P: the picture is predicted from earlier pictures; P=0 on an intra picture.
    pub inter_picture_predicted: bool,
    /// F: flexible mode (references in P_DIFFs) rather than non-flexible (TL0PICIDX).
    pub flexible_mode: bool,
    /// B: this packet starts a layer frame.
    pub start_of_frame: bool,
    /// E: this packet ends a layer frame.
    pub end_of_frame: bool,
    /// Z: the frame is not used as a reference by upper spatial layers.
    pub not_upper_spatial_reference: bool,
    /// TID (L bit): temporal layer index, 0..=7.
    pub tid: Option<u8>,
    /// U (with L): switching up point; a receiver can move up to a higher temporal layer here.
    pub switching_up_point: bool,
    /// SID (L bit): spatial layer index, 0..=7.
    pub sid: Option<u8>,
    /// D (with L): the frame depends on the lower spatial layer of the same picture.
    pub inter_layer_dependency: bool,
    /// TL0PICIDX: present with L in non-flexible mode only.
    pub tl0picidx: Option<u8>,
    /// The scalability structure, when V is set.
    pub scalability_structure: Option<Vp9ScalabilityStructure>,
    /// Bytes of descriptor before the VP9 payload.
    pub header_len: usize,
    p_diffs: [u8; MAX_REFERENCES],
    p_diff_count: u8,
}

impl Vp9Descriptor {
    /// Parses the payload descriptor at the start of an RTP payload (RFC 9628 4.2, 4.2.1).
    ///
    /// More than [`MAX_REFERENCES`] P_DIFFs is [`CodecError::TooManyReferences`]; any field the
    /// flags announce that runs past the end is [`CodecError::Truncated`].
    #[inline]
    pub fn parse(payload: &[u8]) -> Result<Self, CodecError> {
        let first = *payload.first().ok_or(CodecError::Empty)?;
        let byte = |at: usize| payload.get(at).copied().ok_or(CodecError::Truncated);
        let flexible_mode = first & F_BIT != 0;
        let inter_picture_predicted = first & P_BIT != 0;
        let mut at = 1;

        let picture_id = if first & I_BIT != 0 {
            let (value, width) = read_picture_id(payload, at)?;
            at += width.byte_len();
            Some((value, width))
        } else {
            None
        };

        let (mut tid, mut sid, mut u, mut d, mut tl0picidx) = (None, None, false, false, None);
        if first & L_BIT != 0 {
            let layer = byte(at)?;
            at += 1;
            tid = Some(layer >> 5);
            u = layer & U_BIT != 0;
            sid = Some((layer >> 1) & 0x07);
            d = layer & D_BIT != 0;
            if !flexible_mode {
                tl0picidx = Some(byte(at)?);
                at += 1;
            }
        }

        let mut p_diffs = [0u8; MAX_REFERENCES];
        let mut p_diff_count = 0u8;
        if flexible_mode && inter_picture_predicted {
            loop {
                let b = byte(at)?;
                at += 1;
                p_diffs[usize::from(p_diff_count)] = b >> 1;
                p_diff_count += 1;
                if b & N_BIT == 0 {
                    break;
                }
                if usize::from(p_diff_count) == MAX_REFERENCES {
                    return Err(CodecError::TooManyReferences);
                }
            }
        }

        let scalability_structure = if first & V_BIT != 0 {
            let ss = Vp9ScalabilityStructure::parse(payload, at)?;
            at += ss.len;
            Some(ss)
        } else {
            None
        };

        Ok(Vp9Descriptor {
            picture_id: picture_id.map(|(v, _)| v),
            picture_id_width: picture_id.map(|(_, w)| w),
            inter_picture_predicted,
            flexible_mode,
            start_of_frame: first & B_BIT != 0,
            end_of_frame: first & E_BIT != 0,
            not_upper_spatial_reference: first & Z_BIT != 0,
            tid,
            switching_up_point: u,
            sid,
            inter_layer_dependency: d,
            tl0picidx,
            scalability_structure,
            header_len: at,
            p_diffs,
            p_diff_count,
        })
    }

    /// The P_DIFFs of a flexible-mode inter picture: how far back (in PictureIDs) each reference
    /// is. Empty in non-flexible mode and on intra pictures.
    pub fn p_diffs(&self) -> &[u8] {
        &self.p_diffs[..usize::from(self.p_diff_count)]
    }

    /// This packet starts a keyframe of the base spatial layer: P=0, B=1 and SID=0 (SID is 0
    /// when the layer indices are absent). Upper spatial layers of the same picture follow in
    /// packets of their own.
    pub fn starts_keyframe(&self) -> bool {
        !self.inter_picture_predicted && self.start_of_frame && self.sid.unwrap_or(0) == 0
    }
}

/// Byte offsets in the payload of the PictureID and TL0PICIDX fields a descriptor carries (RFC 9628
/// 4.2: the PictureID follows the first byte; TL0PICIDX follows the layer indices in non-flexible mode),
/// so a Projection can rewrite them in each receiver's copy without parsing again.
pub fn field_offsets(d: &Vp9Descriptor) -> (Option<usize>, Option<usize>) {
    let pid = d.picture_id_width.map(|_| 1);
    let tl0 = d
        .tl0picidx
        .map(|_| 2 + d.picture_id_width.map_or(0, PictureIdWidth::byte_len));
    (pid, tl0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix shorter than the descriptor is an error, never a panic.
    fn assert_prefixes_fail(pkt: &[u8], header_len: usize) {
        assert_eq!(Vp9Descriptor::parse(&[]), Err(CodecError::Empty));
        for len in 1..header_len {
            assert_eq!(
                Vp9Descriptor::parse(&pkt[..len]),
                Err(CodecError::Truncated),
                "len {len}"
            );
        }
        // The descriptor alone, with no VP9 payload after it, still parses.
        assert!(Vp9Descriptor::parse(&pkt[..header_len]).is_ok());
    }

    /// RFC 9628 4.2, non-flexible mode: layer indices then TL0PICIDX.
    #[test]
    fn rfc9628_4_2_non_flexible_with_layer_indices_and_tl0picidx() {
        let pkt = [
            0b1110_1000, // I=1 P=1 L=1 F=0 B=1 E=0 V=0 Z=0
            0b1000_0001, // M=1, PictureID high 7 bits = 0x01
            0b0000_0010, // PictureID low 8 bits = 0x02
            0b0101_0011, // TID=010 U=1 SID=001 D=1
            0b0001_0111, // TL0PICIDX = 0x17
            0xde,        // VP9 payload
            0xad,
        ];
        let d = Vp9Descriptor::parse(&pkt).expect("valid");
        assert_eq!(d.picture_id, Some(0x0102));
        assert_eq!(d.picture_id_width, Some(PictureIdWidth::Bits15));
        assert!(d.inter_picture_predicted);
        assert!(!d.flexible_mode);
        assert!(d.start_of_frame && !d.end_of_frame);
        assert!(!d.not_upper_spatial_reference);
        assert_eq!(d.tid, Some(2));
        assert!(d.switching_up_point);
        assert_eq!(d.sid, Some(1));
        assert!(d.inter_layer_dependency);
        // The fields a Projection rewrites sit where the layout says: PictureID at 1, TL0PICIDX at 4.
        assert_eq!(field_offsets(&d), (Some(1), Some(4)));
        assert_eq!(d.tl0picidx, Some(0x17));
        assert_eq!(d.p_diffs(), &[] as &[u8]);
        assert_eq!(d.scalability_structure, None);
        assert_eq!(d.header_len, 5);
        assert!(!d.starts_keyframe());
        assert_prefixes_fail(&pkt, 5);
    }

    /// RFC 9628 4.2, flexible mode: layer indices without TL0PICIDX, then P_DIFFs while N is set.
    #[test]
    fn rfc9628_4_2_flexible_with_p_diffs() {
        let pkt = [
            0b1111_0101, // I=1 P=1 L=1 F=1 B=0 E=1 V=0 Z=1
            0b0010_1010, // M=0, PictureID = 42
            0b0010_0100, // TID=001 U=0 SID=010 D=0
            0b0000_0011, // P_DIFF=1 N=1
            0b0000_0101, // P_DIFF=2 N=1
            0b0000_1000, // P_DIFF=4 N=0
            0x11,        // VP9 payload
        ];
        let d = Vp9Descriptor::parse(&pkt).expect("valid");
        assert_eq!(d.picture_id, Some(42));
        assert_eq!(d.picture_id_width, Some(PictureIdWidth::Bits7));
        assert!(d.flexible_mode && d.inter_picture_predicted);
        // Flexible mode: no TL0PICIDX to rewrite.
        assert_eq!(field_offsets(&d), (Some(1), None));
        assert!(!d.start_of_frame && d.end_of_frame);
        assert!(d.not_upper_spatial_reference);
        assert_eq!((d.tid, d.sid), (Some(1), Some(2)));
        assert!(!d.switching_up_point && !d.inter_layer_dependency);
        assert_eq!(d.tl0picidx, None);
        assert_eq!(d.p_diffs(), &[1, 2, 4]);
        assert_eq!(d.header_len, 6);
        assert!(!d.starts_keyframe());
        assert_prefixes_fail(&pkt, 6);

        // One P_DIFF, no layer indices.
        let d = Vp9Descriptor::parse(&[0xd8, 0x05, 0x0e, 0x00]).expect("valid");
        assert_eq!((d.p_diffs(), d.tid, d.header_len), (&[7u8][..], None, 3));

        // A fourth reference: N still set on the third P_DIFF.
        let mut too_many = pkt;
        too_many[5] |= N_BIT;
        assert_eq!(
            Vp9Descriptor::parse(&too_many),
            Err(CodecError::TooManyReferences)
        );

        // Flexible mode on an intra picture (P=0) carries no P_DIFF.
        let d = Vp9Descriptor::parse(&[0b1011_1000, 0x05, 0x00, 0x99]).expect("valid");
        assert_eq!(d.p_diffs(), &[] as &[u8]);
        assert_eq!(d.header_len, 3);
        assert!(d.starts_keyframe());
    }

    /// RFC 9628 4.2.1: a keyframe of the base layer carrying an SS with 3 spatial layers, their
    /// resolutions and a 2-picture group.
    #[test]
    fn rfc9628_4_2_1_scalability_structure_with_3_spatial_layers_and_resolutions() {
        let pkt = [
            0b1010_1010, // I=1 P=0 L=1 F=0 B=1 E=0 V=1 Z=0
            0b1000_0000, // M=1, PictureID high = 0
            0b0000_0111, // PictureID low = 7
            0b0000_0000, // TID=0 U=0 SID=0 D=0
            0b0000_0000, // TL0PICIDX = 0
            0b0101_1000, // SS: N_S=010 (3 layers) Y=1 G=1
            0x01,
            0x40, // WIDTH 320
            0x00,
            0xb4, // HEIGHT 180
            0x02,
            0x80, // WIDTH 640
            0x01,
            0x68, // HEIGHT 360
            0x05,
            0x00, // WIDTH 1280
            0x02,
            0xd0,        // HEIGHT 720
            0x02,        // N_G = 2
            0b0000_0100, // TID=000 U=0 R=01
            0x02,        // P_DIFF 2
            0b0011_0100, // TID=001 U=1 R=01
            0x01,        // P_DIFF 1
            0x82,        // VP9 payload (frame marker)
        ];
        let d = Vp9Descriptor::parse(&pkt).expect("valid");
        assert_eq!(d.picture_id, Some(7));
        assert_eq!((d.tid, d.sid, d.tl0picidx), (Some(0), Some(0), Some(0)));
        assert!(d.starts_keyframe());
        let ss = d.scalability_structure.expect("V=1");
        assert_eq!(ss.spatial_layers(), 3);
        assert_eq!(
            ss.resolutions(),
            &[
                Resolution {
                    width: 320,
                    height: 180
                },
                Resolution {
                    width: 640,
                    height: 360
                },
                Resolution {
                    width: 1280,
                    height: 720
                },
            ]
        );
        assert_eq!(ss.picture_group_len, Some(2));
        assert_eq!(ss.len, 18);
        assert_eq!(d.header_len, 23);
        assert_prefixes_fail(&pkt, 23);

        // The same keyframe on spatial layer 1 is not a base-layer keyframe.
        let mut upper = pkt;
        upper[3] = 0b0000_0010; // SID=1
        assert!(!Vp9Descriptor::parse(&upper)
            .expect("valid")
            .starts_keyframe());
    }

    /// RFC 9628 4.2.1: an SS with neither Y nor G is the one N_S byte.
    #[test]
    fn rfc9628_4_2_1_scalability_structure_without_resolutions_or_group() {
        let pkt = [0b0000_1010, 0b0010_0000, 0x82]; // B=1 V=1; N_S=001 Y=0 G=0
        let d = Vp9Descriptor::parse(&pkt).expect("valid");
        let ss = d.scalability_structure.expect("V=1");
        assert_eq!(ss.spatial_layers(), 2);
        assert!(ss.resolutions().is_empty());
        assert_eq!((ss.picture_group_len, ss.len), (None, 1));
        assert_eq!(d.header_len, 2);
        assert_eq!((d.picture_id, d.tid, d.sid), (None, None, None));
        assert!(d.starts_keyframe());

        // G=1 with N_G=0: one more byte.
        let d = Vp9Descriptor::parse(&[0x0a, 0x08, 0x00]).expect("valid");
        let ss = d.scalability_structure.expect("V=1");
        assert_eq!(
            (ss.picture_group_len, ss.len, d.header_len),
            (Some(0), 2, 3)
        );

        // 8 layers with resolutions: N_S=111, Y=1.
        let mut eight = vec![0x02, 0xf0];
        for i in 1..=8u16 {
            eight.extend_from_slice(&(i * 10).to_be_bytes());
            eight.extend_from_slice(&(i * 20).to_be_bytes());
        }
        let d = Vp9Descriptor::parse(&eight).expect("valid");
        let ss = d.scalability_structure.expect("V=1");
        assert_eq!(ss.spatial_layers(), 8);
        assert_eq!(
            ss.resolutions()[7],
            Resolution {
                width: 80,
                height: 160
            }
        );
        assert_eq!(d.header_len, eight.len());
        assert_prefixes_fail(&eight, eight.len());
    }

    #[test]
    fn rfc9628_4_2_truncated_picture_group_is_an_error() {
        // N_G=1 whose description announces R=3 P_DIFFs, only 2 present.
        let pkt = [0x02, 0x08, 0x01, 0b0000_1100, 0x01, 0x02];
        assert_eq!(Vp9Descriptor::parse(&pkt), Err(CodecError::Truncated));
        let mut whole = pkt.to_vec();
        whole.push(0x03);
        assert_eq!(Vp9Descriptor::parse(&whole).expect("valid").header_len, 7);
    }
}
