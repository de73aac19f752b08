//! H.264 RTP payloads (RFC 6184): which NAL units a packet starts, and whether it starts a
//! keyframe.
//!
//! A packet starts a keyframe when it carries the start of an IDR slice (type 5) or an SPS (type 7)
//! in a single NAL unit packet (5.6), in any unit of a STAP-A (5.7.1), or in an FU-A start fragment
//! (5.8). An SPS counts because senders put SPS, PPS and IDR at the front of a keyframe, usually in
//! one STAP-A, and a receiver needs them all; a packet with only a PPS does not count. Only
//! packetization modes 0 and 1 (what WebRTC uses) are walked; STAP-B, MTAPs and FU-B
//! (interleaved mode) are reported as [`H264Packetization::Other`].
//!
//! ```text
//! NAL unit header (5.3)     STAP-A (5.7.1)                          FU-A (5.8)
//! +---------------+         +-----------+------------+---------+    +-------------+-----------+
//! |0|1|2|3|4|5|6|7|         | STAP-A    | NALU 1     | NALU 1  |    | FU indicator| FU header |
//! |F|NRI|  Type   |         | NAL HDR   | size (16)  | HDR+data| …  | F|NRI|28    |S|E|R|Type |
//! +---------------+         +-----------+------------+---------+    +-------------+-----------+
//! ```

use super::CodecError;

const TYPE_MASK: u8 = 0x1f;

/// NAL unit type of a coded slice of an IDR picture (H.264 Table 7-1).
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set (H.264 Table 7-1).
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set (H.264 Table 7-1).
pub const NAL_PPS: u8 = 8;
/// Single-time aggregation packet (RFC 6184 5.7.1).
pub const STAP_A: u8 = 24;
/// Fragmentation unit without DON (RFC 6184 5.8).
pub const FU_A: u8 = 28;

const FU_START: u8 = 0x80;
const FU_END: u8 = 0x40;

/// How the payload carries its NAL units (RFC 6184 5.2, Table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H264Packetization {
    /// One whole NAL unit, types 1..=23 (5.6).
    SingleNal,
    /// STAP-A, type 24: whole NAL units, each after a 16-bit size (5.7.1).
    StapA,
    /// FU-A, type 28: one fragment of a NAL unit of type `nal_type` (5.8).
    FuA {
        /// S: the first fragment, which carries the start of the NAL unit.
        start: bool,
        /// E: the last fragment.
        end: bool,
        /// Type of the fragmented NAL unit, from the FU header.
        nal_type: u8,
    },
    /// Any other type: 0 and 30..=31 (undefined), 25..=27 and 29 (interleaved mode only).
    Other,
}

/// What a selector needs from an H.264 payload. `Copy`; parsing allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Payload {
    /// The payload's own NAL unit header type: a NAL unit type, or 24 (STAP-A), 28 (FU-A), ….
    pub payload_type: u8,
    pub packetization: H264Packetization,
    /// NAL units whose start this packet carries: 1 for a single NAL unit or an FU-A start
    /// fragment, the unit count for a STAP-A, 0 otherwise.
    pub nal_units: u16,
    /// Bit `t` is set when a NAL unit of type `t` starts in this packet.
    types: u32,
}

impl H264Payload {
    /// Parses the RTP payload of an H.264 packet (RFC 6184 5.2-5.8).
    ///
    /// STAP-A units are walked to the end: a unit size of 0, one that runs past the end, or a
    /// dangling size byte is [`CodecError::BadAggregateLength`].
    #[inline]
    pub fn parse(payload: &[u8]) -> Result<Self, CodecError> {
        let header = *payload.first().ok_or(CodecError::Empty)?;
        let payload_type = header & TYPE_MASK;
        let mut out = H264Payload {
            payload_type,
            packetization: H264Packetization::Other,
            nal_units: 0,
            types: 0,
        };
        match payload_type {
            1..=23 => {
                out.packetization = H264Packetization::SingleNal;
                out.note(payload_type);
            }
            STAP_A => {
                out.packetization = H264Packetization::StapA;
                let mut rest = &payload[1..];
                if rest.is_empty() {
                    return Err(CodecError::EmptyAggregate);
                }
                while !rest.is_empty() {
                    let (size, after) = rest
                        .split_first_chunk::<2>()
                        .ok_or(CodecError::BadAggregateLength)?;
                    let size = usize::from(u16::from_be_bytes(*size));
                    if size == 0 || size > after.len() {
                        return Err(CodecError::BadAggregateLength);
                    }
                    out.note(after[0] & TYPE_MASK);
                    rest = &after[size..];
                }
            }
            FU_A => {
                let fu = *payload.get(1).ok_or(CodecError::Truncated)?;
                let start = fu & FU_START != 0;
                let nal_type = fu & TYPE_MASK;
                out.packetization = H264Packetization::FuA {
                    start,
                    end: fu & FU_END != 0,
                    nal_type,
                };
                if start {
                    out.note(nal_type);
                }
            }
            _ => {}
        }
        Ok(out)
    }

    fn note(&mut self, nal_type: u8) {
        self.types |= 1 << (nal_type & TYPE_MASK);
        self.nal_units = self.nal_units.saturating_add(1);
    }

    /// A NAL unit of this type starts in this packet.
    pub fn carries(&self, nal_type: u8) -> bool {
        nal_type <= TYPE_MASK && self.types & (1 << nal_type) != 0
    }

    /// This packet starts a keyframe: it carries the start of an IDR slice or an SPS (see the
    /// module documentation for why SPS counts).
    pub fn starts_keyframe(&self) -> bool {
        self.carries(NAL_IDR) || self.carries(NAL_SPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6184 5.6: a single NAL unit packet is the NAL unit itself; F=0 NRI=11 Type=5.
    #[test]
    fn rfc6184_5_6_single_nal_idr_starts_a_keyframe() {
        let pkt = [0b0110_0101, 0x88, 0x84, 0x00, 0x33];
        let p = H264Payload::parse(&pkt).expect("valid");
        assert_eq!(p.packetization, H264Packetization::SingleNal);
        assert_eq!(p.payload_type, NAL_IDR);
        assert_eq!(p.nal_units, 1);
        assert!(p.carries(NAL_IDR));
        assert!(p.starts_keyframe());

        // Type 1, a non-IDR slice; type 8, a PPS alone.
        for (t, key) in [(1u8, false), (NAL_PPS, false), (NAL_SPS, true)] {
            let p = H264Payload::parse(&[0x40 | t, 0x9a]).expect("valid");
            assert_eq!(p.packetization, H264Packetization::SingleNal);
            assert_eq!(p.starts_keyframe(), key, "type {t}");
        }
    }

    /// RFC 6184 5.7.1: STAP-A header (type 24), then for each unit a 16-bit size and the unit.
    #[test]
    fn rfc6184_5_7_1_stap_a_with_sps_pps_idr() {
        let pkt = [
            0b0111_1000, // STAP-A NAL HDR: F=0 NRI=11 Type=24
            0x00,
            0x04,        // NALU 1 size = 4
            0b0110_0111, // NALU 1 HDR: SPS
            0x42,
            0xc0,
            0x1f,
            0x00,
            0x02,        // NALU 2 size = 2
            0b0110_1000, // NALU 2 HDR: PPS
            0xce,
            0x00,
            0x03,        // NALU 3 size = 3
            0b0110_0101, // NALU 3 HDR: IDR slice
            0x88,
            0x84,
        ];
        let p = H264Payload::parse(&pkt).expect("valid");
        assert_eq!(p.packetization, H264Packetization::StapA);
        assert_eq!(p.payload_type, STAP_A);
        assert_eq!(p.nal_units, 3);
        assert!(p.carries(NAL_SPS) && p.carries(NAL_PPS) && p.carries(NAL_IDR));
        assert!(!p.carries(1));
        assert!(p.starts_keyframe());

        // A cut between units leaves a shorter valid STAP-A; any other cut is a bad length.
        for len in 2..pkt.len() {
            let got = H264Payload::parse(&pkt[..len]);
            match len {
                7 => assert_eq!(
                    got.map(|p| (p.nal_units, p.starts_keyframe())),
                    Ok((1, true))
                ),
                11 => assert_eq!(got.map(|p| p.nal_units), Ok(2)),
                _ => assert_eq!(got, Err(CodecError::BadAggregateLength), "len {len}"),
            }
        }
    }

    #[test]
    fn rfc6184_5_7_1_stap_a_without_keyframe_units() {
        // SEI (6) and a non-IDR slice (1).
        let pkt = [0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x41, 0x9a];
        let p = H264Payload::parse(&pkt).expect("valid");
        assert_eq!(p.nal_units, 2);
        assert!(p.carries(6) && p.carries(1));
        assert!(!p.starts_keyframe());
    }

    #[test]
    fn rfc6184_5_7_1_truncated_or_malformed_stap_a_is_an_error() {
        assert_eq!(H264Payload::parse(&[0x78]), Err(CodecError::EmptyAggregate));
        // Size runs past the end.
        assert_eq!(
            H264Payload::parse(&[0x78, 0x00, 0x05, 0x67, 0x42]),
            Err(CodecError::BadAggregateLength)
        );
        // Zero-sized unit.
        assert_eq!(
            H264Payload::parse(&[0x78, 0x00, 0x00, 0x00, 0x01, 0x65]),
            Err(CodecError::BadAggregateLength)
        );
        // One dangling size byte after a good unit.
        assert_eq!(
            H264Payload::parse(&[0x78, 0x00, 0x01, 0x65, 0x00]),
            Err(CodecError::BadAggregateLength)
        );
        // Largest size, nothing behind it.
        assert_eq!(
            H264Payload::parse(&[0x78, 0xff, 0xff, 0x65]),
            Err(CodecError::BadAggregateLength)
        );
    }

    /// RFC 6184 5.8: FU indicator (type 28), FU header S|E|R|Type; only the start fragment
    /// carries the start of the NAL unit.
    #[test]
    fn rfc6184_5_8_fu_a_start_middle_and_end_fragments() {
        // FU indicator F=0 NRI=11 Type=28; FU header S, E, R=0, Type=5.
        let start = [0b0111_1100, 0b1000_0101, 0x88, 0x84]; // S=1 E=0
        let middle = [0b0111_1100, 0b0000_0101, 0x21, 0x22]; // S=0 E=0
        let end = [0b0111_1100, 0b0100_0101, 0x31]; // S=0 E=1

        let p = H264Payload::parse(&start).expect("valid");
        assert_eq!(
            p.packetization,
            H264Packetization::FuA {
                start: true,
                end: false,
                nal_type: NAL_IDR
            }
        );
        assert_eq!(p.payload_type, FU_A);
        assert_eq!(p.nal_units, 1);
        assert!(p.starts_keyframe());

        let p = H264Payload::parse(&middle).expect("valid");
        assert_eq!(
            p.packetization,
            H264Packetization::FuA {
                start: false,
                end: false,
                nal_type: NAL_IDR
            }
        );
        assert_eq!(p.nal_units, 0);
        assert!(!p.carries(NAL_IDR));
        assert!(!p.starts_keyframe());

        let p = H264Payload::parse(&end).expect("valid");
        assert!(matches!(
            p.packetization,
            H264Packetization::FuA { end: true, .. }
        ));
        assert!(!p.starts_keyframe());

        // Start of a non-IDR slice.
        let p = H264Payload::parse(&[0x5c, 0x81, 0x9a]).expect("valid");
        assert!(p.carries(1) && !p.starts_keyframe());

        // FU indicator alone.
        assert_eq!(H264Payload::parse(&start[..1]), Err(CodecError::Truncated));
    }

    #[test]
    fn rfc6184_5_2_other_types_are_reported_not_walked() {
        for t in [0u8, 25, 26, 27, 29, 30, 31] {
            let p = H264Payload::parse(&[t, 0xff, 0xff]).expect("valid");
            assert_eq!(p.packetization, H264Packetization::Other, "type {t}");
            assert_eq!(p.nal_units, 0);
            assert!(!p.starts_keyframe());
        }
        assert_eq!(H264Payload::parse(&[]), Err(CodecError::Empty));
        assert!(!H264Payload::parse(&[0x65]).expect("valid").carries(200));
    }
}
