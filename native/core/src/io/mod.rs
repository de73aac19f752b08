//! I/O for the shard loop: one UDP socket per bound address on the shared port, `recvmmsg`/`sendmmsg`
//! batches over pooled buffers, RFC 7983 demultiplexing by first byte, and ICE-TCP (`tcp`: a
//! listener for passive candidates, RFC 4571 framing).
//!
//! This is the only module (with the shard loop) that touches sockets.

mod socket;
pub mod tcp;

use std::net::SocketAddr;

pub use socket::{from_sockaddr, to_sockaddr, RecvBatch, SendBatch, UdpSocket, MAX_DATAGRAM};

/// Where outgoing datagrams queue: one send batch per local address. The shard flushes a full batch
/// with sendmmsg; a benchmark can clear it instead, so forwarding is measured without the syscall.
pub trait Egress {
    /// A batch with room for one more datagram leaving from `local`.
    fn batch_for(&mut self, local: SocketAddr) -> &mut SendBatch;
    /// A pacer now holds a packet: the caller's loop should come back for it soon.
    fn paced(&mut self) {}
}

/// What a datagram on the shared port carries, by RFC 7983 section 7:
///
/// ```text
///              +----------------+
///              |        [0..3] -+--> forward to STUN
///              |      [16..19] -+--> forward to ZRTP
///  packet -->  |      [20..63] -+--> forward to DTLS
///              |      [64..79] -+--> forward to TURN Channel
///              |    [128..191] -+--> forward to RTP/RTCP
///              +----------------+
/// ```
/// RTP and RTCP are told apart by the second byte (RFC 5761 section 4: RTCP packet types 192..=223
/// map to the payload-type range 64..=95 once the marker bit is masked off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramKind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    /// ZRTP, TURN channel data or anything else: not for us.
    Unknown,
}

/// Classifies one datagram without parsing it (RFC 7983).
#[inline]
pub fn classify(buf: &[u8]) -> DatagramKind {
    let Some(&first) = buf.first() else {
        return DatagramKind::Unknown;
    };
    match first {
        0..=3 => DatagramKind::Stun,
        20..=63 => DatagramKind::Dtls,
        128..=191 => match buf.get(1) {
            Some(&b) if (64..=95).contains(&(b & 0x7f)) => DatagramKind::Rtcp,
            Some(_) => DatagramKind::Rtp,
            None => DatagramKind::Unknown,
        },
        _ => DatagramKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7983_7_first_byte_ranges() {
        assert_eq!(classify(&[0, 1]), DatagramKind::Stun);
        assert_eq!(classify(&[3]), DatagramKind::Stun);
        assert_eq!(classify(&[16, 0]), DatagramKind::Unknown); // ZRTP
        assert_eq!(classify(&[20, 0]), DatagramKind::Dtls);
        assert_eq!(classify(&[22, 0xfe, 0xfd]), DatagramKind::Dtls);
        assert_eq!(classify(&[63]), DatagramKind::Dtls);
        assert_eq!(classify(&[64, 0]), DatagramKind::Unknown); // TURN channel
        assert_eq!(classify(&[127, 0]), DatagramKind::Unknown);
        assert_eq!(classify(&[192, 0]), DatagramKind::Unknown);
        assert_eq!(classify(&[]), DatagramKind::Unknown);
        assert_eq!(classify(&[0x80]), DatagramKind::Unknown);
    }

    #[test]
    fn rfc5761_4_rtp_or_rtcp_by_packet_type() {
        assert_eq!(classify(&[0x80, 96]), DatagramKind::Rtp);
        assert_eq!(classify(&[0x80, 96 | 0x80]), DatagramKind::Rtp);
        assert_eq!(classify(&[0x80, 111]), DatagramKind::Rtp);
        assert_eq!(classify(&[0x80, 200]), DatagramKind::Rtcp); // SR
        assert_eq!(classify(&[0x81, 201]), DatagramKind::Rtcp); // RR
        assert_eq!(classify(&[0x81, 206]), DatagramKind::Rtcp); // PSFB
        assert_eq!(classify(&[0x80, 223]), DatagramKind::Rtcp);
        assert_eq!(classify(&[0x80, 224]), DatagramKind::Rtp);
    }
}
