//! The bridge's own NACKs: a video packet that does not reach the bridge is asked of its sender (RFC
//! 4585), again after the retry interval while it stays missing, and no more once it came.

mod common;

use std::time::Duration;

use sluice_core::domain::MediaKind;
use sluice_core::rtcp::{parse_compound, RtcpPacket};

const VIDEO: u32 = 0x5151;

/// The sequence numbers the sender was asked for in the bridge's NACKs so far.
fn asked(peer: &common::TestPeer) -> Vec<u16> {
    let mut out = Vec::new();
    for p in &peer.rtcp_packets {
        for packet in parse_compound(p).flatten() {
            if let RtcpPacket::Nack(n) = packet {
                assert_eq!(n.media_ssrc, VIDEO);
                out.extend(n.lost_sequence_numbers());
            }
        }
    }
    out
}

#[test]
fn a_packet_lost_on_the_way_in_is_asked_of_its_sender_until_it_comes() {
    let mut conf = common::Conference::new(2);
    conf.set_sources(0, &[(VIDEO, MediaKind::Video)]);
    conf.connect_all();
    // 0..20 without 7 and 8.
    for seq in (0..20u16).filter(|s| !(7..=8).contains(s)) {
        conf.peers[0].send_rtp(VIDEO, seq, u32::from(seq) * 3000, 100, 200);
    }
    conf.peers[0].flush();
    conf.run_until(Duration::from_millis(80), |_| false);
    assert_eq!(asked(&conf.peers[0]), vec![7, 8], "one NACK for the gap");
    // 7 comes (as a retransmission would); 8 stays missing and is asked again every retry interval,
    // three times in all, then given up.
    conf.peers[0].send_rtp(VIDEO, 7, 21_000, 100, 200);
    conf.peers[0].flush();
    conf.run_until(Duration::from_millis(600), |_| false);
    assert_eq!(asked(&conf.peers[0]), vec![7, 8, 8, 8]);
    let total = conf.shard.stats().total;
    assert_eq!(total.nack_requested, 4);
    // Audio is not asked for (NACK is negotiated for video).
    assert!(conf.peers[1].rtcp_packets.iter().all(|p| parse_compound(p)
        .flatten()
        .all(|x| !matches!(x, RtcpPacket::Nack(_)))));
}
