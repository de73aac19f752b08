//! Receivers' NACKs answered by the bridge from its RTX cache, through a real shard: an RTX packet (RFC
//! 4588) on the RTX SSRC the receiver knows, with its own RTX sequence numbers, whose OSN and payload are
//! what it was forwarded (across a simulcast switch too); the original itself for a receiver without RTX;
//! only what the cache lacks asked of the sender; a repeat within the RTT and anything over the
//! receiver's budget refused and counted; force-muted media never replayed.

mod common;

use common::simulcast::{
    allocate, payload_types, settle, simulcast, vp8, Sender, LAYERS, RTX, RTXS,
};

use std::time::{Duration, Instant};

use sluice_core::domain::{ForceMute, MediaKind};
use sluice_core::router::{RTX_BURST, RTX_SHARE, RTX_START};
use sluice_core::rtcp::write_nack;
use sluice_core::rtp::RtpView;
use sluice_core::seam::Command;
use sluice_core::stats::Counters;

const RECEIVER_SSRC: u32 = 0x5151;

/// Peer 0 sends the simulcast Source; peer 1 negotiated RTX, peer 2 did not.
fn connected() -> common::Conference {
    let mut conf = common::Conference::new(3);
    conf.set_grouped_sources(0, vec![simulcast()]);
    payload_types(&mut conf, 10, true);
    payload_types(&mut conf, 11, true);
    payload_types(&mut conf, 12, false);
    conf.connect_all();
    conf
}

fn nack(conf: &mut common::Conference, receiver: usize, seqs: &[u16]) {
    let mut buf = [0u8; 1200];
    let n = write_nack(&mut buf, RECEIVER_SSRC, LAYERS[0], seqs).expect("nack");
    conf.peers[receiver].send_rtcp(&buf[..n]);
}

fn counters(conf: &common::Conference, peer: usize) -> Counters {
    conf.shard
        .stats()
        .transports
        .iter()
        .find(|t| t.id == 10 + peer as u64)
        .expect("transport")
        .counters
}

/// The packet a peer was forwarded on the primary SSRC with sequence number `seq` (the first).
fn forwarded(peer: &common::TestPeer, seq: u16) -> Vec<u8> {
    peer.rtp_packets
        .iter()
        .find(|p| {
            let v = RtpView::parse(p).expect("rtp");
            v.ssrc() == LAYERS[0] && v.sequence_number() == seq
        })
        .unwrap_or_else(|| panic!("{seq} was not forwarded"))
        .clone()
}

/// One RTX packet a peer got: (RTX sequence number, OSN), after checking it against what it was
/// forwarded: on the RTX SSRC of the primary with the RTX payload type, same timestamp and marker,
/// payload after the OSN byte-equal.
fn check_rtx(peer: &common::TestPeer, rtx: &[u8]) -> (u16, u16) {
    let v = RtpView::parse(rtx).expect("rtp");
    assert_eq!(
        (v.ssrc(), v.payload_type()),
        (RTXS[0], RTX),
        "RTX SSRC and payload type"
    );
    let osn = u16::from_be_bytes([v.payload()[0], v.payload()[1]]);
    let original = forwarded(peer, osn);
    let o = RtpView::parse(&original).expect("rtp");
    assert_eq!(&v.payload()[2..], o.payload(), "payload of {osn}");
    assert_eq!((v.timestamp(), v.marker()), (o.timestamp(), o.marker()));
    (v.sequence_number(), osn)
}

#[test]
fn a_nack_is_answered_with_rtx_whose_osn_and_payload_are_what_was_forwarded() {
    let mut conf = connected();
    let mut s = Sender::new();
    allocate(&mut conf, 1, Some(0));
    allocate(&mut conf, 2, Some(0));
    // Receiver 2 loses 1003 on its downlink (a resend it already had its SRTP would refuse as a replay).
    conf.peers[2].drop_rtp.push((LAYERS[0], 1003));
    s.all(&mut conf, true);
    for _ in 0..3 {
        s.all(&mut conf, false);
    }
    settle(&mut conf);
    assert_eq!(conf.peers[1].rtp_packets.len(), 8);
    assert_eq!(conf.peers[2].rtp_packets.len(), 7);
    // Both receivers get the same stretch of layer 0, rewritten the same.
    assert_eq!(
        forwarded(&conf.peers[2], 1002),
        forwarded(&conf.peers[1], 1002)
    );

    nack(&mut conf, 1, &[1003, 1006]);
    nack(&mut conf, 2, &[1003]);
    assert!(
        conf.run_until(Duration::from_secs(2), |c| c.peers[1].rtp_packets.len()
            == 10
            && c.peers[2].rtp_packets.len() == 8)
    );
    settle(&mut conf);
    let got: Vec<(u16, u16)> = conf.peers[1].rtp_packets[8..]
        .iter()
        .map(|p| check_rtx(&conf.peers[1], p))
        .collect();
    assert_eq!((got[0].1, got[1].1), (1003, 1006));
    assert_eq!(
        got[1].0,
        got[0].0.wrapping_add(1),
        "the receiver's own RTX numbering"
    );
    // Without RTX: the original, byte for byte what receiver 1 was forwarded.
    assert_eq!(
        conf.peers[2].rtp_packets[7],
        forwarded(&conf.peers[1], 1003)
    );
    assert_eq!(conf.peers[2].rtp_packets.len(), 8);
    // The sender was asked nothing.
    assert_eq!(conf.peers[0].nacks_received(), vec![]);
    let one = counters(&conf, 1);
    assert_eq!(
        (one.retransmitted, one.nack_cache_hit, one.nack_cache_miss),
        (2, 2, 0)
    );
    assert!(one.retransmitted_bytes > 2 * 100);
    let total = conf.shard.stats().total;
    assert_eq!((total.retransmitted, total.nack_cache_hit), (3, 3));
}

#[test]
fn a_nack_across_a_simulcast_switch_gets_each_stretchs_packet_as_it_was_rewritten() {
    let mut conf = connected();
    let mut s = Sender::new();
    allocate(&mut conf, 1, Some(0));
    s.all(&mut conf, true);
    s.all(&mut conf, false);
    settle(&mut conf);
    // Up to the top layer at its keyframe: new offsets for sequence numbers, timestamps, PictureIDs.
    allocate(&mut conf, 1, Some(2));
    settle(&mut conf);
    s.frame(&mut conf, 2, true);
    s.all(&mut conf, false);
    settle(&mut conf);
    let seqs: Vec<u16> = conf.peers[1]
        .rtp_packets
        .iter()
        .map(|p| RtpView::parse(p).expect("rtp").sequence_number())
        .collect();
    assert_eq!(seqs, (1000..1008).collect::<Vec<_>>(), "continuous");
    let before = conf.peers[1].rtp_packets.len();
    // 1001 is of the old stretch (layer 0), 1005 of the new one (layer 2's 65_505).
    nack(&mut conf, 1, &[1001, 1005]);
    assert!(
        conf.run_until(Duration::from_secs(2), |c| c.peers[1].rtp_packets.len()
            == before + 2)
    );
    let got: Vec<u16> = conf.peers[1].rtp_packets[before..]
        .iter()
        .map(|p| check_rtx(&conf.peers[1], p).1)
        .collect();
    assert_eq!(got, [1001, 1005]);
    assert_eq!(conf.peers[0].nacks_received(), vec![]);
}

#[test]
fn only_what_the_cache_lacks_is_asked_of_the_sender_and_its_retransmission_fills_the_cache() {
    let mut conf = connected();
    let mut s = Sender::new();
    allocate(&mut conf, 1, Some(0));
    s.frame(&mut conf, 0, true);
    // 1002 is lost on the way in.
    s.seq[0] = s.seq[0].wrapping_add(1);
    s.frame(&mut conf, 0, false);
    // Past the bridge's own NACKs for 1002 (three, 100 ms apart).
    conf.run_until(Duration::from_millis(450), |_| false);
    conf.peers[0].rtcp_packets.clear();
    let before = conf.peers[1].rtp_packets.len();
    assert_eq!(before, 4);

    nack(&mut conf, 1, &[1002, 1003]);
    assert!(conf.run_until(Duration::from_secs(2), |c| !c.peers[0]
        .nacks_received()
        .is_empty()
        && c.peers[1].rtp_packets.len() == before + 1));
    settle(&mut conf);
    assert_eq!(
        conf.peers[0].nacks_received(),
        vec![(LAYERS[0], vec![1002])]
    );
    assert_eq!(
        check_rtx(&conf.peers[1], &conf.peers[1].rtp_packets[before]).1,
        1003
    );
    let one = counters(&conf, 1);
    assert_eq!((one.nack_cache_hit, one.nack_cache_miss), (1, 1));

    // The sender's RTX of 1002 is forwarded (as 1002 on the primary) and kept: the next NACK for it is
    // answered by the bridge.
    let mut rtx = 1002u16.to_be_bytes().to_vec();
    rtx.extend_from_slice(&vp8(101, false, false, 100, 1002));
    conf.peers[0].send_rtp_payload(RTXS[0], 500, s.ts[0], RTX, &rtx);
    conf.peers[0].flush();
    assert!(
        conf.run_until(Duration::from_secs(2), |c| c.peers[1].rtp_packets.len()
            == before + 2)
    );
    nack(&mut conf, 1, &[1002]);
    assert!(
        conf.run_until(Duration::from_secs(2), |c| c.peers[1].rtp_packets.len()
            == before + 3)
    );
    let last = conf.peers[1].rtp_packets.last().expect("rtx").clone();
    assert_eq!(check_rtx(&conf.peers[1], &last).1, 1002);
    settle(&mut conf);
    assert_eq!(
        conf.peers[0].nacks_received(),
        vec![(LAYERS[0], vec![1002])]
    );
    assert_eq!(counters(&conf, 1).nack_cache_hit, 2);
}

#[test]
fn seventeen_sequence_numbers_of_one_fci_are_all_answered_in_order() {
    let mut conf = connected();
    let mut s = Sender::new();
    allocate(&mut conf, 1, Some(0));
    s.frame(&mut conf, 0, true);
    for _ in 0..10 {
        s.frame(&mut conf, 0, false);
    }
    settle(&mut conf);
    let before = conf.peers[1].rtp_packets.len();
    assert_eq!(before, 22);
    let seqs: Vec<u16> = (1001..=1017).collect();
    let mut buf = [0u8; 64];
    let n = write_nack(&mut buf, RECEIVER_SSRC, LAYERS[0], &seqs).expect("nack");
    assert_eq!(n, 16, "one FCI: PID and all 16 bits of BLP");
    conf.peers[1].send_rtcp(&buf[..n]);
    assert!(
        conf.run_until(Duration::from_secs(2), |c| c.peers[1].rtp_packets.len()
            == before + 17)
    );
    let got: Vec<(u16, u16)> = conf.peers[1].rtp_packets[before..]
        .iter()
        .map(|p| check_rtx(&conf.peers[1], p))
        .collect();
    assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), seqs);
    assert!(got.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1)));
}

#[test]
fn a_repeat_within_the_rtt_and_what_exceeds_the_budget_are_refused_and_counted() {
    let mut conf = connected();
    let mut s = Sender::new();
    s.fill = 1100;
    allocate(&mut conf, 1, Some(0));
    s.frame(&mut conf, 0, true);
    s.frame(&mut conf, 0, false);
    settle(&mut conf);
    // The same packet twice in one compound: resent once.
    let mut buf = [0u8; 64];
    let n = write_nack(&mut buf, RECEIVER_SSRC, LAYERS[0], &[1001]).expect("nack");
    let twice = [&buf[..n], &buf[..n]].concat();
    conf.peers[1].send_rtcp(&twice);
    settle(&mut conf);
    let one = counters(&conf, 1);
    assert_eq!((one.retransmitted, one.rtx_rate_limited), (1, 1));
    // Asked again after the interval (no RTT known: the floor): resent.
    nack(&mut conf, 1, &[1001]);
    settle(&mut conf);
    assert_eq!(counters(&conf, 1).retransmitted, 2);

    // 120 packets of about 1.2 kB forwarded, then all asked for: the budget (RTX_START, plus a quarter
    // of what was sent, at most RTX_BURST) runs out.
    for _ in 0..6 {
        for _ in 0..10 {
            s.frame(&mut conf, 0, false);
        }
        conf.run_until(Duration::from_millis(30), |_| false);
    }
    settle(&mut conf);
    assert_eq!(conf.peers[1].rtp_packets.len(), 4 + 2 + 120);
    let seqs: Vec<u16> = (1004..1124).collect();
    let mut buf = [0u8; 1200];
    let n = write_nack(&mut buf, RECEIVER_SSRC, LAYERS[0], &seqs).expect("nack");
    conf.peers[1].send_rtcp(&buf[..n]);
    settle(&mut conf);
    let one = counters(&conf, 1);
    let sent = one.bytes_out - one.retransmitted_bytes;
    assert!(
        one.retransmitted_bytes <= (RTX_START + sent / RTX_SHARE).min(RTX_BURST + 1200),
        "{one:?}"
    );
    // About 16 kB + 150 kB / 4: some 40 of the 120 resent.
    assert!(
        one.retransmitted >= 2 + 30 && one.rtx_rate_limited > 1 + 60,
        "{one:?}"
    );
    assert_eq!(one.retransmitted + one.rtx_rate_limited, 2 + 1 + 120);
    assert_eq!(
        conf.peers[1].rtp_packets.len() as u64,
        126 + one.retransmitted - 2
    );
}

#[test]
fn force_muted_media_is_never_replayed_and_a_muted_receivers_nack_is_answered() {
    const VIDEO: u32 = 0xA2;
    let mut conf = common::Conference::new(2);
    conf.set_sources(0, &[(VIDEO, MediaKind::Video)]);
    conf.connect_all();
    let mute = |conf: &mut common::Conference, peer: u64, video: bool| {
        conf.shard.handle_command(
            Instant::now(),
            Command::SetForceMute {
                transport: 10 + peer,
                audio: false,
                video,
            },
        );
    };
    let burst = |conf: &mut common::Conference, seqs: std::ops::Range<u16>| {
        for seq in seqs {
            conf.peers[0].send_rtp(VIDEO, seq, u32::from(seq) * 3000, 100, 300);
        }
        conf.peers[0].flush();
        settle(conf);
    };
    // The receiver is force-muted itself: its feedback about others still counts. It loses 5 and 40.
    mute(&mut conf, 1, true);
    conf.peers[1].drop_rtp = vec![(VIDEO, 5), (VIDEO, 40)];
    burst(&mut conf, 0..10);
    mute(&mut conf, 0, true);
    burst(&mut conf, 10..20);
    mute(&mut conf, 0, false);
    burst(&mut conf, 20..30);
    // Muted again soon: the run covers what was forwarded in between too.
    mute(&mut conf, 0, true);
    burst(&mut conf, 30..35);
    mute(&mut conf, 0, false);
    burst(&mut conf, 35..45);
    let received: Vec<u16> = conf.peers[1].rtp.iter().map(|r| r.1).collect();
    let expected: Vec<u16> = (0..10)
        .chain(20..30)
        .chain(35..45)
        .filter(|s| ![5, 40].contains(s))
        .collect();
    assert_eq!(received, expected);
    conf.peers[0].rtcp_packets.clear();

    let mut buf = [0u8; 64];
    let n = write_nack(&mut buf, RECEIVER_SSRC, VIDEO, &[5, 12, 25, 32, 40]).expect("nack");
    conf.peers[1].send_rtcp(&buf[..n]);
    assert!(
        conf.run_until(Duration::from_secs(2), |c| c.peers[1].rtp.len()
            == expected.len() + 2)
    );
    settle(&mut conf);
    // Without RTX negotiated: the originals again.
    assert_eq!(
        conf.peers[1].rtp[expected.len()..],
        [(VIDEO, 5), (VIDEO, 40)]
    );
    assert_eq!(
        conf.peers[0].nacks_received(),
        vec![],
        "muted packets asked of the sender"
    );
    let one = counters(&conf, 1);
    assert_eq!(one.retransmitted, 2);
    assert_eq!(
        conf.shard
            .stats()
            .transports
            .iter()
            .find(|t| t.id == 11)
            .map(|t| t.force_mute),
        Some(ForceMute {
            audio: false,
            video: true
        })
    );
}
