//! The load generator's own bytes in every packet, after the RTP header and any codec prefix: a
//! trailer at the end of the RTP payload, and filler before it.
//!
//! ```text
//!  RTP header (12) | codec prefix (video: VP8, see `vp8`; audio: none) | filler | trailer (40)
//!
//!  trailer offset  (from the payload's end)
//!   0..4   -40..-36  magic "SLG2" (media) or "SLGH" (raw-mode hello, ignored by receivers)
//!   4..8   -36..-32  group (conference index); the raw relay's tag, see `relay`
//!   8..12  -32..-28  sender endpoint index
//!  12..16  -28..-24  ssrc as sent (a forwarder may rewrite the header's ssrc, not this)
//!  16..24  -24..-16  sequence number per sent ssrc, 64 bits: never wraps, so loss needs no unwrapping
//!  24..32  -16..-8   send time, CLOCK_MONOTONIC nanoseconds (sender and receiver share the host)
//!  32      -8        media kind: 0 audio, 1 video
//!  33      -7        simulcast layer (0 = lowest) of the sent ssrc
//!  34      -6        codec prefix length: the payload bytes before the filler
//!  35      -5        flags: bit 0 set on a retransmission (the sender's answer to a NACK)
//!  36..40  -4..      CRC-32 of the filler and trailer bytes 0..36
//! ```
//! All integers are big-endian. The checksum leaves the codec prefix out: a forwarder may rewrite
//! it (a VP8 Projection rewrites PictureID and TL0PICIDX in place). Why a trailer: the codec prefix
//! differs in length from packet to packet (a frame's first packet carries the VP8 payload header,
//! a keyframe's a longer one), so only the payload's end is at a fixed place in every packet.

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
pub const MAGIC: [u8; 4] = *b"SLG2";
/// Raw-mode registration packets (teach the relay our address and group; carry no media).
pub const MAGIC_HELLO: [u8; 4] = *b"SLGH";
/// Bytes of the trailer; the smallest payload without a codec prefix.
pub const HEADER_LEN: usize = 40;
/// Fixed RTP header length (no CSRCs, no extension).
pub const RTP_HEADER_LEN: usize = 12;
/// The group tag is the big-endian u32 that starts this many bytes before the end of a packet (any
/// packet: media of either kind, hello); the raw relay reads it there.
pub const GROUP_TAG_FROM_END: usize = HEADER_LEN - 4;

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
    /// Bytes of codec prefix at the payload's start (0 for audio and hellos).
    pub prefix: u8,
}

/// Why a payload did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// Shorter than its trailer and codec prefix.
    TooShort,
    /// Neither magic.
    BadMagic,
    /// The checksum does not match the bytes.
    BadChecksum,
    /// A hello packet (raw mode): not media.
    Hello,
}

/// Writes the filler and trailer of a payload of `len` bytes into `out[..len]`, after the
/// `f.prefix` bytes of codec prefix the caller wrote at its start. `len` is raised to the smallest
/// that holds prefix and trailer. Allocates nothing. Returns the length written.
pub fn write(out: &mut [u8], len: usize, f: &Fields) -> usize {
    let prefix = usize::from(f.prefix);
    let len = len.max(prefix + HEADER_LEN).min(out.len()).min(MAX_PAYLOAD);
    let p = &mut out[..len];
    // Filler byte i is (seq + i) mod 256: a slice of a precomputed ramp, copied in one go.
    let start = usize::from(f.seq as u8);
    let trailer = len - HEADER_LEN;
    let n = trailer - prefix;
    p[prefix..trailer].copy_from_slice(&RAMP[start..start + n]);
    let t = &mut p[trailer..];
    t[0..4].copy_from_slice(&MAGIC);
    t[4..8].copy_from_slice(&f.group.to_be_bytes());
    t[8..12].copy_from_slice(&f.sender.to_be_bytes());
    t[12..16].copy_from_slice(&f.ssrc.to_be_bytes());
    t[16..24].copy_from_slice(&f.seq.to_be_bytes());
    t[24..32].copy_from_slice(&f.send_ns.to_be_bytes());
    t[32] = f.kind.byte();
    t[33] = f.layer;
    t[34] = f.prefix;
    t[35] = 0;
    seal(p, prefix);
    len
}

/// Writes a raw-mode hello payload (trailer only) for `group`/`sender`; returns its length.
pub fn write_hello(out: &mut [u8], group: u32, sender: u32) -> usize {
    let fields = Fields {
        group,
        sender,
        ssrc: 0,
        seq: 0,
        send_ns: 0,
        kind: Kind::Audio,
        layer: 0,
        prefix: 0,
    };
    let n = write(out, HEADER_LEN, &fields);
    out[0..4].copy_from_slice(&MAGIC_HELLO);
    seal(&mut out[..n], 0);
    n
}

/// Writes the checksum over `p[prefix..len - 4]` into the last 4 bytes.
/// Marks a payload [`write`] wrote (with `prefix` bytes of codec prefix) as a retransmission and seals
/// it again. Only the measurement reads the flag: receivers keep a repaired packet's latency (send to
/// arrival, the repair's round trip included) out of the forwarding latency.
pub fn mark_retransmission(p: &mut [u8], prefix: usize) {
    let Some(at) = p.len().checked_sub(HEADER_LEN) else {
        return;
    };
    p[at + 35] |= FLAG_RETRANSMISSION;
    seal(p, prefix);
}

/// Whether a payload that verified carries the retransmission flag.
pub fn is_retransmission(p: &[u8]) -> bool {
    p.len()
        .checked_sub(HEADER_LEN)
        .is_some_and(|at| p[at + 35] & FLAG_RETRANSMISSION != 0)
}

const FLAG_RETRANSMISSION: u8 = 1;

fn seal(p: &mut [u8], prefix: usize) {
    let end = p.len() - 4;
    let crc = crc32fast::hash(&p[prefix..end]);
    p[end..].copy_from_slice(&crc.to_be_bytes());
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn be64(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_be_bytes(b)
}

/// Checks magic and checksum of a whole RTP payload and returns the fields.
pub fn verify(p: &[u8]) -> Result<Fields, PayloadError> {
    let Some(at) = p.len().checked_sub(HEADER_LEN) else {
        return Err(PayloadError::TooShort);
    };
    let t = &p[at..];
    let magic = [t[0], t[1], t[2], t[3]];
    if magic != MAGIC && magic != MAGIC_HELLO {
        return Err(PayloadError::BadMagic);
    }
    let prefix = usize::from(t[34]);
    if prefix > at {
        return Err(PayloadError::TooShort);
    }
    if be32(t, 36) != crc32fast::hash(&p[prefix..p.len() - 4]) {
        return Err(PayloadError::BadChecksum);
    }
    if magic == MAGIC_HELLO {
        return Err(PayloadError::Hello);
    }
    Ok(Fields {
        group: be32(t, 4),
        sender: be32(t, 8),
        ssrc: be32(t, 12),
        seq: be64(t, 16),
        send_ns: be64(t, 24),
        kind: if t[32] == 0 { Kind::Audio } else { Kind::Video },
        layer: t[33],
        prefix: t[34],
    })
}

/// Reads the group tag of a whole packet, [`GROUP_TAG_FROM_END`] bytes before its end, without
/// checking anything else.
#[inline]
pub fn group_tag(packet: &[u8]) -> Option<u32> {
    let at = packet.len().checked_sub(GROUP_TAG_FROM_END)?;
    // Not inside the RTP header: a datagram too short to hold header and trailer has no tag.
    if at < RTP_HEADER_LEN + 4 {
        return None;
    }
    let b = &packet[at..at + 4];
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
    use crate::vp8::{Encoder, LayerSpec, MAX_PREFIX_LEN};

    fn fields() -> Fields {
        Fields {
            group: 7,
            sender: 42,
            ssrc: 0xdead_beef,
            seq: 1 << 40,
            send_ns: 123_456_789,
            kind: Kind::Video,
            layer: 2,
            prefix: 0,
        }
    }

    #[test]
    fn round_trip_any_length_and_prefix() {
        for prefix in [0u8, 6, 9, 16] {
            for len in [HEADER_LEN + usize::from(prefix), 57, 100, 1188] {
                let mut buf = [0xaa; 1500];
                let f = Fields { prefix, ..fields() };
                let n = write(&mut buf, len, &f);
                assert_eq!(n, len, "prefix {prefix} len {len}");
                // The caller's prefix is left alone.
                assert!(buf[..usize::from(prefix)].iter().all(|&b| b == 0xaa));
                assert_eq!(verify(&buf[..len]), Ok(f), "prefix {prefix} len {len}");
            }
        }
        // Too short for prefix and trailer: raised to fit.
        let mut buf = [0u8; 100];
        let f = Fields {
            prefix: 16,
            ..fields()
        };
        assert_eq!(write(&mut buf, 10, &f), 56);
    }

    /// Every bit after the codec prefix is covered; the prefix is not (a forwarder may rewrite it).
    #[test]
    fn every_flipped_bit_outside_the_codec_prefix_is_caught() {
        let mut buf = [0u8; 200];
        let f = Fields {
            prefix: 9,
            ..fields()
        };
        write(&mut buf, 200, &f);
        for byte in 0..200 {
            for bit in 0..8 {
                let mut b = buf;
                b[byte] ^= 1 << bit;
                assert_eq!(verify(&b).is_err(), byte >= 9, "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn short_and_foreign_payloads_are_refused() {
        assert_eq!(verify(&[0u8; 39]), Err(PayloadError::TooShort));
        assert_eq!(verify(&[0u8; 100]), Err(PayloadError::BadMagic));
        let mut buf = [0u8; 64];
        let n = write_hello(&mut buf, 3, 4);
        assert_eq!(n, HEADER_LEN);
        assert_eq!(verify(&buf[..n]), Err(PayloadError::Hello));
        // A prefix length past the trailer's start is refused, not sliced.
        let mut buf = [0u8; 60];
        write(&mut buf, 60, &fields());
        buf[60 - 6] = 30;
        assert_eq!(verify(&buf), Err(PayloadError::TooShort));
    }

    /// The raw relay's tag is at the same place from the end of every kind of packet: audio, every
    /// VP8 packet (keyframe and inter frame first packets, later packets), a hello.
    #[test]
    fn group_tag_is_at_the_documented_offset_in_every_packet() {
        let mut enc = Encoder::new(
            3,
            LayerSpec {
                bitrate_bps: 1_000_000,
                width: 1280,
                height: 720,
            },
            30,
        );
        let key = enc.next_frame(0);
        let inter = enc.next_frame(0);
        let mut seen = Vec::new();
        for (frame, first) in [
            (Some(key), true),
            (Some(inter), true),
            (Some(key), false),
            (None, true),
        ] {
            let mut pkt = [0u8; 300];
            write_rtp_header(&mut pkt, true, 100, 1, 2, 3);
            let prefix = frame.map_or(0, |f| f.write_prefix(&mut pkt[RTP_HEADER_LEN..], first));
            assert!(prefix <= MAX_PREFIX_LEN);
            let f = Fields {
                prefix: prefix as u8,
                ..fields()
            };
            let n = write(&mut pkt[RTP_HEADER_LEN..], 150, &f);
            let pkt = &pkt[..RTP_HEADER_LEN + n];
            assert_eq!(group_tag(pkt), Some(7));
            seen.push(prefix);
        }
        assert_eq!(seen, [16, 9, 6, 0]);
        let mut hello = [0u8; 64];
        let n = write_hello(&mut hello[RTP_HEADER_LEN..], 9, 1);
        assert_eq!(group_tag(&hello[..RTP_HEADER_LEN + n]), Some(9));
        // Too short to hold an RTP header and a trailer: no tag.
        assert_eq!(group_tag(&hello[..RTP_HEADER_LEN + n - 1]), None);
        assert_eq!(group_tag(&[]), None);
    }
}
