//! Selective forwarding through a real shard: one simulcast layer per receiver on the primary SSRC,
//! switches at the target layer's VP8 keyframe with continuous sequence numbers and PictureIDs, keyframe
//! requests for the layer awaited, NACKs translated to the layer, RTX unwrapped, sender reports rewritten,
//! and a Source switched off by its allocation.

mod common;

use common::simulcast::{allocate, settle, simulcast, vp8, Sender, LAYERS, RTX, RTXS, VP8};

use std::time::{Duration, Instant};

use sluice_core::codec::vp8::Vp8Descriptor;
use sluice_core::domain::{Codec, PayloadType};
use sluice_core::router::KEYFRAME_REQUEST_MIN_INTERVAL;
use sluice_core::rtcp::{parse_compound, write_nack, write_sender_report, RtcpPacket};
use sluice_core::rtp::RtpView;
use sluice_core::seam::Command;
use sluice_core::stats::DropReason;

fn connected() -> common::Conference {
    let mut conf = common::Conference::new(3);
    conf.set_grouped_sources(0, vec![simulcast()]);
    conf.shard.handle_command(
        Instant::now(),
        Command::SetPayloadTypes {
            transport: 10,
            types: vec![
                PayloadType {
                    pt: VP8,
                    codec: Codec::Vp8,
                },
                PayloadType {
                    pt: RTX,
                    codec: Codec::Rtx { apt: VP8 },
                },
            ],
        },
    );
    conf.connect_all();
    conf
}

/// (ssrc, seq, PictureID) of what a peer received.
fn received(peer: &common::TestPeer) -> Vec<(u32, u16, u16)> {
    peer.rtp_packets
        .iter()
        .map(|p| {
            let v = RtpView::parse(p).expect("rtp");
            let d = Vp8Descriptor::parse(v.payload()).expect("vp8");
            (v.ssrc(), v.sequence_number(), d.picture_id.expect("pid"))
        })
        .collect()
}

fn plis_for(peer: &common::TestPeer, ssrc: u32) -> usize {
    peer.rtcp_packets
        .iter()
        .flat_map(|c| parse_compound(c).filter_map(Result::ok).collect::<Vec<_>>())
        .filter(|p| matches!(p, RtcpPacket::Pli { media_ssrc, .. } if *media_ssrc == ssrc))
        .count()
}

fn assert_continuous(got: &[(u32, u16, u16)]) {
    for w in got.windows(2) {
        assert_eq!(w[1].0, LAYERS[0], "every packet on the primary SSRC");
        assert_eq!(
            w[1].1,
            w[0].1.wrapping_add(1),
            "sequence numbers gapless: {got:?}"
        );
        let dp = w[1].2.wrapping_sub(w[0].2) & 0x7fff;
        assert!(dp <= 1, "PictureIDs continuous: {got:?}");
    }
}

#[test]
fn each_receiver_gets_its_layer_on_the_primary_ssrc_and_switches_only_at_its_keyframe() {
    let mut conf = connected();
    let mut s = Sender::new();
    // Receiver 2 asks for the bottom layer up front; receiver 1 has no allocation: the top layer.
    allocate(&mut conf, 2, Some(0));
    s.all(&mut conf, true);
    for _ in 0..3 {
        s.all(&mut conf, false);
    }
    settle(&mut conf);
    let one = received(&conf.peers[1]);
    let two = received(&conf.peers[2]);
    assert_eq!(one.len(), 8, "receiver 1: the top layer's four frames");
    assert_eq!(two.len(), 8, "receiver 2: the bottom layer's four frames");
    assert_eq!(
        one[0],
        (LAYERS[0], 65_500, 32_761),
        "the first stretch goes out as it came"
    );
    assert_eq!(two[0], (LAYERS[0], 1000, 101));
    assert_continuous(&one);
    assert_continuous(&two);
    let filtered = conf.shard.stats().total.drops(DropReason::Filtered);
    assert_eq!(
        filtered, 32,
        "two unselected layers x 8 packets x 2 receivers"
    );

    // Receiver 1 goes down to layer 1: its sender is asked for a keyframe of layer 1 (once the
    // Producer's own limit allows: the joins asked for keyframes just now), and until it comes receiver 1
    // stays on the top layer.
    conf.run_until(sluice_core::router::KEYFRAME_REQUEST_MIN_INTERVAL, |_| {
        false
    });
    let before = plis_for(&conf.peers[0], LAYERS[1]);
    allocate(&mut conf, 1, Some(1));
    settle(&mut conf);
    assert_eq!(
        plis_for(&conf.peers[0], LAYERS[1]),
        before + 1,
        "a PLI for the awaited layer"
    );
    s.all(&mut conf, false);
    s.frame(&mut conf, 1, true);
    s.frame(&mut conf, 0, false);
    s.frame(&mut conf, 2, false);
    s.all(&mut conf, false);
    settle(&mut conf);
    let one = received(&conf.peers[1]);
    assert_eq!(
        one.len(),
        8 + 2 + 2 + 2,
        "top frame, then layer 1 from its keyframe on"
    );
    assert_continuous(&one);
    assert_eq!(
        conf.shard
            .router(1)
            .expect("router")
            .keyframe_ssrc_for(11, LAYERS[0]),
        LAYERS[1]
    );
}

/// Receivers 1 and 2 on the top layer with its keyframe in, the joins' keyframe requests long past; then
/// receiver 1 goes down to layer 1 (a PLI at once) and receiver 2 follows within the Producer's limit.
fn two_switch_within_the_limit() -> (common::Conference, Sender, usize) {
    let mut conf = connected();
    let mut s = Sender::new();
    s.all(&mut conf, true);
    settle(&mut conf);
    conf.run_until(KEYFRAME_REQUEST_MIN_INTERVAL, |_| false);
    let before = plis_for(&conf.peers[0], LAYERS[1]);
    allocate(&mut conf, 1, Some(1));
    allocate(&mut conf, 2, Some(1));
    settle(&mut conf);
    assert_eq!(
        plis_for(&conf.peers[0], LAYERS[1]),
        before + 1,
        "one PLI now, the second refused by the limit"
    );
    (conf, s, before)
}

#[test]
fn a_keyframe_request_the_limit_refused_goes_when_it_allows_if_a_receiver_still_waits() {
    let (mut conf, _, before) = two_switch_within_the_limit();
    // No packet of the Source comes meanwhile, so no Projection's own retry (a second apart) asks: the
    // second PLI is the deferred one, once the limit allows.
    let sent = conf.run_until(Duration::from_millis(700), |c| {
        plis_for(&c.peers[0], LAYERS[1]) == before + 2
    });
    assert!(
        sent,
        "the refused request was not sent when the limit allowed"
    );
    conf.run_until(Duration::from_millis(400), |_| false);
    assert_eq!(plis_for(&conf.peers[0], LAYERS[1]), before + 2, "once");
}

#[test]
fn a_deferred_keyframe_request_is_dropped_when_the_keyframe_came_first() {
    let (mut conf, mut s, before) = two_switch_within_the_limit();
    s.frame(&mut conf, 1, true);
    conf.run_until(Duration::from_millis(700), |_| false);
    assert_eq!(
        plis_for(&conf.peers[0], LAYERS[1]),
        before + 1,
        "nobody waits any more: no second PLI"
    );
    assert!(conf.shard.stats().waiting.is_empty());
}

#[test]
fn nacks_reach_the_layer_and_its_rtx_fills_the_receivers_gap() {
    let mut conf = connected();
    let mut s = Sender::new();
    allocate(&mut conf, 1, Some(0));
    allocate(&mut conf, 2, None);
    s.frame(&mut conf, 0, true);
    // One packet of layer 0 is lost on the way in (sequence number skipped), then another frame.
    s.seq[0] = s.seq[0].wrapping_add(1);
    s.frame(&mut conf, 0, false);
    settle(&mut conf);
    let got = received(&conf.peers[1]);
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        [1000, 1001, 1003, 1004]
    );
    assert!(
        conf.peers[2].rtp.is_empty(),
        "a receiver allocated nothing gets nothing"
    );

    // The bridge asks for 1002 on its own (it did not receive it either), three times, then gives up.
    conf.run_until(Duration::from_millis(400), |_| false);
    let own = conf.peers[0].nacks_received();
    assert_eq!(own, vec![(LAYERS[0], vec![1002]); 3]);

    // The receiver NACKs 1002 on the primary SSRC; the sender is asked for 1002 of layer 0 once more.
    let mut nack = [0u8; 64];
    let n = write_nack(&mut nack, 0x5151, LAYERS[0], &[1002]).expect("nack");
    conf.peers[1].send_rtcp(&nack[..n]);
    settle(&mut conf);
    assert_eq!(
        conf.peers[0].nacks_received(),
        vec![(LAYERS[0], vec![1002]); 4]
    );

    // The sender retransmits on RTX (OSN 1002, then the payload): the receiver gets 1002 on the primary.
    let mut rtx = vec![(1002u16 >> 8) as u8, 1002u16 as u8];
    rtx.extend_from_slice(&vp8(101, false, false, 100, 1002));
    conf.peers[0].send_rtp_payload(RTXS[0], 7, 3000, RTX, &rtx);
    // A padding-only RTX probe carries no original: filtered.
    conf.peers[0].send_rtp_payload(RTXS[0], 8, 3000, RTX, &[]);
    conf.peers[0].flush();
    settle(&mut conf);
    let got = received(&conf.peers[1]);
    assert_eq!(
        got.last().map(|g| (g.0, g.1, g.2)),
        Some((LAYERS[0], 1002, 101))
    );

    // A resend of what everyone has (libwebrtc probing with RTX payload), and a second copy of the
    // repair: duplicates the receiver's SRTP would drop as replays (this peer's does), so the bridge
    // does not send them; they are counted.
    let sent_to_receiver = |conf: &common::Conference| conf.transport_stats(11).counters.rtp_out;
    let before = sent_to_receiver(&conf);
    for (rtx_seq, orig) in [(9u16, 1001u16), (10, 1002)] {
        let mut dup = vec![(orig >> 8) as u8, orig as u8];
        dup.extend_from_slice(&vp8(101, orig == 1001, false, 100, orig));
        conf.peers[0].send_rtp_payload(RTXS[0], rtx_seq, 3000, RTX, &dup);
    }
    conf.peers[0].flush();
    settle(&mut conf);
    assert_eq!(sent_to_receiver(&conf), before);
    assert_eq!(conf.shard.stats().total.drops(DropReason::RtxUnneeded), 2);
}

#[test]
fn sender_reports_go_on_the_primary_ssrc_to_receivers_of_that_layer_only() {
    let mut conf = connected();
    let mut s = Sender::new();
    allocate(&mut conf, 2, Some(0));
    s.all(&mut conf, true);
    settle(&mut conf);
    for (i, ssrc) in LAYERS.iter().enumerate() {
        let mut sr = [0u8; 64];
        let n = write_sender_report(&mut sr, *ssrc, 0x1234_5678_9abc_def0, s.ts[i], 9, 900, &[])
            .expect("sr");
        conf.peers[0].send_rtcp(&sr[..n]);
    }
    settle(&mut conf);
    let srs = |peer: &common::TestPeer| -> Vec<(u32, u32)> {
        peer.rtcp_packets
            .iter()
            .flat_map(|c| parse_compound(c).filter_map(Result::ok).collect::<Vec<_>>())
            .filter_map(|p| match p {
                RtcpPacket::SenderReport(sr) => Some((sr.ssrc, sr.rtp_timestamp)),
                _ => None,
            })
            .collect()
    };
    // Each receiver's first stretch has offset 0: the report's timestamp is its layer's.
    assert_eq!(srs(&conf.peers[1]), [(LAYERS[0], s.ts[2])]);
    assert_eq!(srs(&conf.peers[2]), [(LAYERS[0], s.ts[0])]);
}
