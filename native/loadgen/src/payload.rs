//! The synthetic media payload every loadgen packet carries after its 12-byte RTP header.
//!
//! ```text
//!  payload offset   packet offset
//!   0..4            12..16   magic "SLG1" (media) or "SLGH" (raw-mode hello, ignored by receivers)
//!   4..8            16..20   group (conference index); the raw relay's tag, see `relay`
//!   8..12           20..24   sender endpoint index
//!  12..16           24..28   ssrc as sent (the bridge may rewrite the header's ssrc, not this)
//!  16..24           28..36   sequence number, 64 bits: never wraps, so loss needs no unwrapping
//!  24..32           36..44   send time, CLOCK_MONOTONIC nanoseconds (sender and receiver share the host)
//!  32               44       media kind: 0 audio, 1 video
//!  33               45       simulcast layer (0 = lowest)
//!  34..36           46..48   zero
//!  36..40           48..52   CRC-32 of payload[0..36] and payload[40..]
//!  40..             52..     filler derived from the sequence number
//! ```
//! All integers are big-endian.

/// 0, 1, ..., 255, 0, 1, ... long enough for any start byte plus a whole datagram.
const RAMP: [u8; 256 + MAX_PAYLOAD] = {
    let mut a = [0u8; 256 + MAX_PAYLOAD];
    let mut i = 0;
    while i < a.len() {
        a[i] = i as u8;
        i += 1;
    }
    a
};
/// Largest payload written (a whole datagram buffer).
const MAX_PAYLOAD: usize = sluice_core::io::MAX_DATAGRAM;

/// Media packets.
pub const MAGIC: [u8; 4] = *b"SLG1";
/// Raw-mode registration packets (teach the relay our address and group; carry no media).
pub const MAGIC_HELLO: [u8; 4] = *b"SLGH";
/// Bytes of payload header; the smallest valid payload.
pub const HEADER_LEN: usize = 40;
/// Fixed RTP header length (no CSRCs, no extension).
pub const RTP_HEADER_LEN: usize = 12;
/// Offset of the group tag in a whole packet (RTP header included); the raw relay reads it there.
pub const GROUP_TAG_OFFSET: usize = RTP_HEADER_LEN + 4;

/// What kind of media a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Audio,
    Video,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Audio => 0,
            Kind::Video => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Audio => "audio",
            Kind::Video => "video",
        }
    }
}

/// The fields a payload carries (everything but the filler and checksum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    pub group: u32,
    pub sender: u32,
    pub ssrc: u32,
    pub seq: u64,
    pub send_ns: u64,
    pub kind: Kind,
    pub layer: u8,
}

/// Why a payload did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// Shorter than [`HEADER_LEN`].
    TooShort,
    /// Neither magic.
    BadMagic,
    /// The checksum does not match the bytes.
    BadChecksum,
    /// A hello packet (raw mode): not media.
    Hello,
}

/// Writes a payload of `len` bytes (at least [`HEADER_LEN`]) into `out[..len]`. Allocates nothing.
pub fn write(out: &mut [u8], len: usize, f: &Fields) {
    let len = len.max(HEADER_LEN).min(out.len()).min(MAX_PAYLOAD);
    let p = &mut out[..len];
    p[0..4].copy_from_slice(&MAGIC);
    p[4..8].copy_from_slice(&f.group.to_be_bytes());
    p[8..12].copy_from_slice(&f.sender.to_be_bytes());
    p[12..16].copy_from_slice(&f.ssrc.to_be_bytes());
    p[16..24].copy_from_slice(&f.seq.to_be_bytes());
    p[24..32].copy_from_slice(&f.send_ns.to_be_bytes());
    p[32] = f.kind.byte();
    p[33] = f.layer;
    p[34] = 0;
    p[35] = 0;
    // Filler byte i is (seq + i) mod 256: a slice of a precomputed ramp, copied in one go.
    let start = usize::from(f.seq as u8);
    let n = len - HEADER_LEN;
    p[HEADER_LEN..].copy_from_slice(&RAMP[start..start + n]);
    let crc = checksum(p);
    p[36..40].copy_from_slice(&crc.to_be_bytes());
}

/// Writes a raw-mode hello payload (header only) for `group`/`sender`.
pub fn write_hello(out: &mut [u8], group: u32, sender: u32) -> usize {
    write(
        out,
        HEADER_LEN,
        &Fields {
            group,
            sender,
            ssrc: 0,
            seq: 0,
            send_ns: 0,
            kind: Kind::Audio,
            layer: 0,
        },
    );
    out[0..4].copy_from_slice(&MAGIC_HELLO);
    let crc = checksum(&out[..HEADER_LEN]);
    out[36..40].copy_from_slice(&crc.to_be_bytes());
    HEADER_LEN
}

fn checksum(p: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&p[..36]);
    h.update(&p[HEADER_LEN..]);
    h.finalize()
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn be64(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_be_bytes(b)
}

/// Checks magic and checksum and returns the fields.
pub fn verify(p: &[u8]) -> Result<Fields, PayloadError> {
    if p.len() < HEADER_LEN {
        return Err(PayloadError::TooShort);
    }
    let magic = [p[0], p[1], p[2], p[3]];
    if magic != MAGIC && magic != MAGIC_HELLO {
        return Err(PayloadError::BadMagic);
    }
    if be32(p, 36) != checksum(p) {
        return Err(PayloadError::BadChecksum);
    }
    if magic == MAGIC_HELLO {
        return Err(PayloadError::Hello);
    }
    Ok(Fields {
        group: be32(p, 4),
        sender: be32(p, 8),
        ssrc: be32(p, 12),
        seq: be64(p, 16),
        send_ns: be64(p, 24),
        kind: if p[32] == 0 { Kind::Audio } else { Kind::Video },
        layer: p[33],
    })
}

/// Reads the group tag of a whole packet at [`GROUP_TAG_OFFSET`] without checking anything else.
#[inline]
pub fn group_tag(packet: &[u8]) -> Option<u32> {
    let b = packet.get(GROUP_TAG_OFFSET..GROUP_TAG_OFFSET + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Writes a 12-byte RTP header (RFC 3550 5.1: V=2, no padding, extension or CSRCs).
pub fn write_rtp_header(out: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    out[0] = 0x80;
    out[1] = (u8::from(marker) << 7) | (pt & 0x7f);
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// CLOCK_MONOTONIC in nanoseconds: the clock every send time and arrival is read from.
#[inline]
pub fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in nanoseconds: the clock of the kernel's receive timestamps (SO_TIMESTAMPNS).
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

#[inline]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local; both clocks used here always exist
    // on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        Fields {
            group: 7,
            sender: 42,
            ssrc: 0xdead_beef,
            seq: 1 << 40,
            send_ns: 123_456_789,
            kind: Kind::Video,
            layer: 2,
        }
    }

    #[test]
    fn round_trip_any_length() {
        for len in [HEADER_LEN, 41, 100, 1188] {
            let mut buf = [0u8; 1500];
            write(&mut buf, len, &fields());
            assert_eq!(verify(&buf[..len]), Ok(fields()), "len {len}");
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut buf = [0u8; 200];
        write(&mut buf, 200, &fields());
        for byte in 0..200 {
            for bit in 0..8 {
                let mut b = buf;
                b[byte] ^= 1 << bit;
                assert!(verify(&b).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn short_and_foreign_payloads_are_refused() {
        assert_eq!(verify(&[0u8; 39]), Err(PayloadError::TooShort));
        assert_eq!(verify(&[0u8; 100]), Err(PayloadError::BadMagic));
        let mut buf = [0u8; 64];
        let n = write_hello(&mut buf, 3, 4);
        assert_eq!(verify(&buf[..n]), Err(PayloadError::Hello));
    }

    #[test]
    fn group_tag_is_at_the_documented_offset() {
        let mut pkt = [0u8; 100];
        write_rtp_header(&mut pkt, true, 100, 1, 2, 3);
        write(&mut pkt[RTP_HEADER_LEN..], 88, &fields());
        assert_eq!(group_tag(&pkt), Some(7));
        assert_eq!(group_tag(&pkt[..19]), None);
        assert_eq!(pkt[1], 0x80 | 100);
    }
}
