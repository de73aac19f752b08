//! Colibri2 force-mute in the packet path: a muted kind of one sender reaches nobody, everything else flows.

mod common;

use std::time::{Duration, Instant};

use sluice_core::domain::{ForceMute, MediaKind};
use sluice_core::rtcp::{parse_compound, write_nack, write_pli, write_sender_report, RtcpPacket};
use sluice_core::seam::{Command, Event};
use sluice_core::stats::DropReason;

const A_AUDIO: u32 = 0xA1;
const A_VIDEO: u32 = 0xA2;
const B_AUDIO: u32 = 0xB1;
const B_VIDEO: u32 = 0xB2;

fn count(peer: &common::TestPeer, ssrc: u32) -> usize {
    peer.rtp.iter().filter(|(s, _)| *s == ssrc).count()
}

fn rtcp_seen(peer: &common::TestPeer, pred: impl Fn(&RtcpPacket<'_>) -> bool) -> bool {
    peer.rtcp_packets
        .iter()
        .any(|c| parse_compound(c).filter_map(Result::ok).any(|p| pred(&p)))
}

fn send_burst(conf: &mut common::Conference, peer: usize, ssrc: u32, seqs: std::ops::Range<u16>) {
    for seq in seqs {
        conf.peers[peer].send_rtp(ssrc, seq, u32::from(seq) * 960, 111, 160);
    }
    conf.peers[peer].flush();
}

fn set_force_mute(conf: &mut common::Conference, peer: usize, audio: bool, video: bool) {
    conf.shard.handle_command(
        Instant::now(),
        Command::SetForceMute {
            transport: 10 + peer as u64,
            audio,
            video,
        },
    );
}

fn force_muted_drops(conf: &common::Conference, peer: usize) -> u64 {
    conf.shard
        .stats()
        .transports
        .iter()
        .find(|t| t.id == 10 + peer as u64)
        .map_or(0, |t| t.counters.drops(DropReason::ForceMuted))
}

fn sender_report(ssrc: u32, ntp: u64) -> Vec<u8> {
    let mut out = [0u8; 64];
    let n = write_sender_report(&mut out, ssrc, ntp, 1, 2, 3, &[]).expect("sr");
    out[..n].to_vec()
}

#[test]
fn muted_audio_reaches_nobody_while_its_video_and_the_other_direction_flow_then_resumes() {
    let mut conf = common::Conference::new(3);
    conf.set_sources(
        0,
        &[(A_AUDIO, MediaKind::Audio), (A_VIDEO, MediaKind::Video)],
    );
    conf.set_sources(
        1,
        &[(B_AUDIO, MediaKind::Audio), (B_VIDEO, MediaKind::Video)],
    );
    conf.connect_all();

    // Before: everything flows.
    send_burst(&mut conf, 0, A_AUDIO, 0..20);
    send_burst(&mut conf, 0, A_VIDEO, 0..20);
    send_burst(&mut conf, 1, B_AUDIO, 0..20);
    assert!(
        conf.run_until(Duration::from_secs(5), |c| {
            [1, 2]
                .iter()
                .all(|&r| count(&c.peers[r], A_AUDIO) >= 20 && count(&c.peers[r], A_VIDEO) >= 20)
                && count(&c.peers[0], B_AUDIO) >= 20
        }),
        "media did not flow before the mute"
    );

    set_force_mute(&mut conf, 0, true, false);
    let a = conf.transport_stats(10);
    assert_eq!(
        a.force_mute,
        ForceMute {
            audio: true,
            video: false
        }
    );

    send_burst(&mut conf, 0, A_AUDIO, 20..40);
    send_burst(&mut conf, 0, A_VIDEO, 20..40);
    send_burst(&mut conf, 1, B_AUDIO, 20..40);
    send_burst(&mut conf, 1, B_VIDEO, 0..20);
    assert!(
        conf.run_until(Duration::from_secs(5), |c| {
            [1, 2].iter().all(|&r| count(&c.peers[r], A_VIDEO) >= 40)
                && count(&c.peers[0], B_AUDIO) >= 40
                && count(&c.peers[0], B_VIDEO) >= 20
                && count(&c.peers[2], B_AUDIO) >= 40
                && force_muted_drops(c, 0) >= 20
        }),
        "A's video, or B's media to A, stopped while only A's audio was muted"
    );
    conf.run_until(Duration::from_millis(200), |_| false);
    for r in [1, 2] {
        assert_eq!(
            count(&conf.peers[r], A_AUDIO),
            20,
            "peer {r} got A's audio while it was force-muted"
        );
    }
    let stats = conf.shard.stats();
    assert_eq!(force_muted_drops(&conf, 0), 20);
    assert_eq!(stats.total.drops(DropReason::ForceMuted), 20);
    assert_eq!(force_muted_drops(&conf, 1), 0);

    // The SR of the muted SSRC is not passed on; that of the unmuted one is.
    conf.peers[1].rtcp_packets.clear();
    let sr = sender_report(A_AUDIO, 0x1111);
    conf.peers[0].send_rtcp(&sr);
    let sr = sender_report(A_VIDEO, 0x2222);
    conf.peers[0].send_rtcp(&sr);
    assert!(
        conf.run_until(Duration::from_secs(2), |c| rtcp_seen(&c.peers[1], |p| {
            matches!(p, RtcpPacket::SenderReport(s) if s.ssrc == A_VIDEO)
        })),
        "the SR of A's unmuted video was not passed on"
    );
    conf.run_until(Duration::from_millis(100), |_| false);
    assert!(
        !rtcp_seen(
            &conf.peers[1],
            |p| matches!(p, RtcpPacket::SenderReport(s) if s.ssrc == A_AUDIO)
        ),
        "the SR of A's muted audio reached a receiver"
    );

    // What A sends about others' streams still counts: its NACK for B's video is answered (by the
    // bridge, from its RTX cache).
    let mut nack = [0u8; 64];
    let n = write_nack(&mut nack, 0x5eed, B_VIDEO, &[3, 4]).expect("nack");
    conf.peers[0].send_rtcp(&nack[..n]);
    let resent = |c: &common::Conference| {
        c.shard
            .stats()
            .transports
            .iter()
            .find(|t| t.id == 10)
            .map_or(0, |t| t.counters.retransmitted)
    };
    assert!(
        conf.run_until(Duration::from_secs(2), |c| resent(c) == 2),
        "the muted endpoint's NACK for B's video was not answered"
    );

    // Unmute: A's audio flows again.
    set_force_mute(&mut conf, 0, false, false);
    send_burst(&mut conf, 0, A_AUDIO, 40..60);
    assert!(
        conf.run_until(Duration::from_secs(5), |c| [1, 2]
            .iter()
            .all(|&r| count(&c.peers[r], A_AUDIO) >= 40)),
        "A's audio did not resume after unmute"
    );
    assert_eq!(force_muted_drops(&conf, 0), 20);
}

#[test]
fn a_force_mute_set_before_sources_and_connection_holds_once_media_flows() {
    let mut conf = common::Conference::new(2);
    // As Colibri2 may do on endpoint create: muted before anything else is known.
    set_force_mute(&mut conf, 0, true, true);
    conf.set_sources(
        0,
        &[(A_AUDIO, MediaKind::Audio), (A_VIDEO, MediaKind::Video)],
    );
    conf.set_sources(1, &[(B_AUDIO, MediaKind::Audio)]);
    conf.connect_all();

    send_burst(&mut conf, 0, A_AUDIO, 0..20);
    send_burst(&mut conf, 0, A_VIDEO, 0..20);
    send_burst(&mut conf, 1, B_AUDIO, 0..20);
    assert!(
        conf.run_until(Duration::from_secs(5), |c| count(&c.peers[0], B_AUDIO)
            >= 20
            && force_muted_drops(c, 0) >= 40),
        "B's audio did not reach A, or A's media was not dropped as force-muted"
    );
    conf.run_until(Duration::from_millis(200), |_| false);
    assert_eq!(
        conf.peers[1].rtp.len(),
        0,
        "the receiver got media from a muted sender"
    );
    assert_eq!(force_muted_drops(&conf, 0), 40);
}

#[test]
fn a_muted_video_sender_gets_no_keyframe_requests_until_unmuted_then_one_at_once() {
    let mut conf = common::Conference::new(2);
    conf.set_sources(0, &[(A_VIDEO, MediaKind::Video)]);
    conf.connect_all();
    set_force_mute(&mut conf, 0, false, true);

    // Past the keyframe-request rate limit, so only the mute can hold the receiver's PLI back.
    conf.run_until(Duration::from_millis(400), |_| false);
    conf.peers[0].rtcp_packets.clear();
    let mut pli = [0u8; 12];
    let n = write_pli(&mut pli, 0x7777, A_VIDEO).expect("pli");
    conf.peers[1].send_rtcp(&pli[..n]);
    conf.run_until(Duration::from_millis(300), |_| false);
    let is_pli = |p: &RtcpPacket<'_>| matches!(p, RtcpPacket::Pli { media_ssrc, .. } if *media_ssrc == A_VIDEO);
    assert!(
        !rtcp_seen(&conf.peers[0], is_pli),
        "a muted video sender was asked for a keyframe nobody would receive"
    );

    // Unmuting video asks A for a keyframe, so receivers can decode at once.
    set_force_mute(&mut conf, 0, false, false);
    assert!(
        conf.run_until(Duration::from_secs(2), |c| rtcp_seen(&c.peers[0], is_pli)),
        "no PLI to the unmuted video sender"
    );
    send_burst(&mut conf, 0, A_VIDEO, 0..10);
    assert!(
        conf.run_until(Duration::from_secs(5), |c| count(&c.peers[1], A_VIDEO)
            >= 10)
    );
    assert_eq!(force_muted_drops(&conf, 0), 0);
}

#[test]
fn receivers_nacks_never_ask_the_sender_for_what_force_mute_dropped() {
    let mut conf = common::Conference::new(2);
    conf.set_sources(0, &[(A_VIDEO, MediaKind::Video)]);
    conf.connect_all();
    send_burst(&mut conf, 0, A_VIDEO, 0..10);
    assert!(
        conf.run_until(Duration::from_secs(5), |c| count(&c.peers[1], A_VIDEO)
            >= 10)
    );
    set_force_mute(&mut conf, 0, false, true);
    send_burst(&mut conf, 0, A_VIDEO, 10..30);
    assert!(conf.run_until(Duration::from_secs(5), |c| force_muted_drops(c, 0) >= 20));
    set_force_mute(&mut conf, 0, false, false);
    send_burst(&mut conf, 0, A_VIDEO, 30..40);
    assert!(
        conf.run_until(Duration::from_secs(5), |c| count(&c.peers[1], A_VIDEO)
            >= 20)
    );

    // B saw 9 then 30: it asks for the gap, which is exactly what was muted, and for some real losses
    // (gone from the bridge's RTX cache by then, so asked of the sender).
    conf.run_until(sluice_core::router::CACHE_AGE, |_| false);
    conf.peers[0].rtcp_packets.clear();
    let mut nack = [0u8; 64];
    let n = write_nack(&mut nack, 0x5eed, A_VIDEO, &[12, 20, 29]).expect("nack");
    conf.peers[1].send_rtcp(&nack[..n]);
    let n = write_nack(&mut nack, 0x5eed, A_VIDEO, &[5, 15, 25, 35]).expect("nack");
    conf.peers[1].send_rtcp(&nack[..n]);
    let nacked = |c: &common::Conference| -> Vec<Vec<u16>> {
        c.peers[0]
            .rtcp_packets
            .iter()
            .flat_map(|c| parse_compound(c).filter_map(Result::ok).collect::<Vec<_>>())
            .filter_map(|p| match p {
                RtcpPacket::Nack(k) if k.media_ssrc == A_VIDEO => {
                    Some(k.lost_sequence_numbers().collect())
                }
                _ => None,
            })
            .collect()
    };
    assert!(
        conf.run_until(Duration::from_secs(2), |c| !nacked(c).is_empty()),
        "no NACK reached the sender"
    );
    conf.run_until(Duration::from_millis(100), |_| false);
    assert_eq!(
        nacked(&conf),
        vec![vec![5u16, 35]],
        "NACKs for force-muted packets reached the sender"
    );
}

#[test]
fn force_mute_of_an_unknown_transport_fails_the_command() {
    let mut conf = common::Conference::new(1);
    conf.shard.handle_command(
        Instant::now(),
        Command::SetForceMute {
            transport: 99,
            audio: true,
            video: true,
        },
    );
    conf.shard.take_events(&mut conf.events);
    assert!(conf.events.iter().any(|e| matches!(
        e,
        Event::CommandFailed { transport: 99, detail } if detail.contains("no such transport")
    )));
}
