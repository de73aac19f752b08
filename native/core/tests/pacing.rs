//! Pacing on the real shard: a burst of video for a receiver whose estimate is small leaves at about
//! 1.5 times the estimate, in order and whole, while its audio is not held behind it; the
//! transport-wide numbers are stamped as packets leave, so they stay gapless in arrival order.

mod common;

use std::time::{Duration, Instant};

use sluice_core::domain::{HeaderExtensionIds, MediaKind, Source};
use sluice_core::rtp::RtpView;
use sluice_core::seam::Command;
use sluice_core::shard::ShardConfig;

use common::simulcast::{self, Sender, LAYERS};
use common::tcc::FeedbackLoop;

const TCC: u8 = 5;
const AUDIO: u32 = 0xA0;

/// An audio packet with a transport-cc extension (the sender's own number, replaced per receiver).
fn audio(seq: u16) -> Vec<u8> {
    let mut p = vec![0x90, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&AUDIO.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01]);
    p.extend_from_slice(&[(TCC << 4) | 1, 0, 0, 0]);
    p.extend_from_slice(&[0x42; 60]);
    p
}

fn ssrc_of(packet: &[u8]) -> u32 {
    RtpView::parse(packet).map_or(0, |v| v.ssrc())
}

/// Peer 0 sends audio and a simulcast Source with RTX; peer 1 is allocated its lowest layer, with
/// pacing on and an initial estimate of 300 kbit/s (paced at 450 kbit/s, about 56 kB a second).
fn paced_call() -> common::Conference {
    let mut conf = common::Conference::with_config(
        2,
        ShardConfig {
            bind: vec!["127.0.0.1:0".parse().expect("literal")],
            // 300 kbit/s: paced at 450 kbit/s, about 56 kB a second.
            cc_initial_estimate_bps: Some(300_000),
            cc_pacing: true,
            ..Default::default()
        },
    );
    conf.set_grouped_sources(
        0,
        vec![
            Source::single(AUDIO, MediaKind::Audio),
            simulcast::simulcast(),
        ],
    );
    let ids = HeaderExtensionIds {
        transport_cc: Some(TCC),
        ..HeaderExtensionIds::default()
    };
    for transport in [10, 11] {
        simulcast::payload_types(&mut conf, transport, true);
        conf.shard.handle_command(
            Instant::now(),
            Command::SetHeaderExtensions { transport, ids },
        );
    }
    conf.connect_all();
    simulcast::allocate(&mut conf, 1, Some(0));
    conf
}

#[test]
fn a_video_burst_leaves_at_the_pacing_rate_and_audio_is_not_held_behind_it() {
    let mut conf = paced_call();

    // Audio every 10 ms, and the receiver's feedback on it: the estimate starts at 300 kbit/s.
    let mut feedback = FeedbackLoop::new(TCC);
    let mut audio_sent = feedback.run(&mut conf, Duration::from_millis(600), audio);
    let estimate = conf
        .transport_stats(11)
        .bandwidth_estimate_bps
        .expect("an estimate");
    assert!(estimate < 600_000, "{estimate}");
    let before = conf.peers[1].rtp_packets.len();

    // A keyframe and 15 frames more of about 1 kB a packet, sent at once: 32 packets, 33 kB.
    let mut sender = Sender::new();
    sender.fill = 1000;
    let burst_at = Instant::now();
    for i in 0..16 {
        sender.frame(&mut conf, 0, i == 0);
    }
    audio_sent.extend(feedback.run(&mut conf, Duration::from_millis(1200), audio));

    let arrived = &conf.peers[1].rtp_packets[before..];
    let arrivals = &conf.peers[1].rtp_arrivals[before..];
    let video: Vec<(Instant, u16)> = arrived
        .iter()
        .zip(arrivals)
        .filter(|(p, _)| ssrc_of(p) == LAYERS[0])
        .map(|(p, &at)| (at, RtpView::parse(p).unwrap().sequence_number()))
        .collect();
    // Whole and in order.
    assert_eq!(video.len(), 32, "{video:?}");
    assert!(
        video.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
        "{video:?}"
    );
    // Spread out: 33 kB at about 56 kB/s, within the 400 ms a backlog may wait (not all at once,
    // and not slower than the bound).
    let spread = video.last().unwrap().0 - video[0].0;
    assert!(
        (Duration::from_millis(250)..Duration::from_millis(600)).contains(&spread),
        "{spread:?}"
    );
    // Audio sent during the burst came through at once, between the video packets.
    let audio_during: Vec<Instant> = arrived
        .iter()
        .zip(arrivals)
        .filter(|(p, at)| ssrc_of(p) == AUDIO && **at < video.last().unwrap().0)
        .map(|(_, &at)| at)
        .collect();
    assert!(audio_during.len() >= 10, "{}", audio_during.len());
    let first_audio_after = audio_sent
        .iter()
        .find(|(_, at)| *at >= burst_at)
        .expect("audio after the burst")
        .1;
    assert!(
        audio_during[0] - first_audio_after < Duration::from_millis(50),
        "the first audio after the burst waited {:?}",
        audio_during[0] - first_audio_after
    );
    // Numbers stamped at departure: gapless in the order packets arrived.
    common::tcc::assert_gapless(&conf.peers[1].rtp_packets, TCC);
    let stats = conf.shard.stats();
    assert!(stats.total.paced >= 25, "{:?}", stats.total);
    assert_eq!(
        stats
            .total
            .drop_map()
            .get("pacer_overflow")
            .copied()
            .unwrap_or(0),
        0
    );
}

#[test]
fn resends_are_paced_ahead_of_held_video() {
    let mut conf = paced_call();
    let mut feedback = FeedbackLoop::new(TCC);
    feedback.run(&mut conf, Duration::from_millis(600), audio);
    let before = conf.peers[1].rtp_packets.len();

    // The 33 kB burst; as soon as its first packets arrive the receiver NACKs the first of them.
    let mut sender = Sender::new();
    sender.fill = 1000;
    for i in 0..16 {
        sender.frame(&mut conf, 0, i == 0);
    }
    conf.run_until(Duration::from_millis(20), |c| {
        c.peers[1].rtp_packets[before..]
            .iter()
            .any(|p| ssrc_of(p) == LAYERS[0])
    });
    let first = conf.peers[1].rtp_packets[before..]
        .iter()
        .find(|p| ssrc_of(p) == LAYERS[0])
        .map(|p| RtpView::parse(p).unwrap().sequence_number())
        .expect("the burst's first packet");
    let mut nack = [0u8; 64];
    let n = sluice_core::rtcp::write_nack(&mut nack, 0x7777, LAYERS[0], &[first]).expect("nack");
    conf.peers[1].send_rtcp(&nack[..n]);
    feedback.run(&mut conf, Duration::from_millis(600), audio);

    let arrived: Vec<u32> = conf.peers[1].rtp_packets[before..]
        .iter()
        .map(|p| ssrc_of(p))
        .filter(|&s| s != AUDIO)
        .collect();
    let resend = arrived
        .iter()
        .position(|&s| s == simulcast::RTXS[0])
        .expect("the resend arrived");
    // Ahead of most of the held burst, not behind all of it.
    let video_after = arrived[resend..]
        .iter()
        .filter(|&&s| s == LAYERS[0])
        .count();
    assert!(video_after >= 16, "{arrived:x?}");

    // Twelve packets of the burst (still cached) NACKed at once: the resends leave at the pacing
    // rate, not in one go on top of what the link carries, and no more than the retransmission
    // budget allows a receiver sent more than its estimate: 250 ms of its 300 kbit/s (9.4 kB).
    let burst: Vec<u16> = conf.peers[1].rtp_packets[before..]
        .iter()
        .filter(|p| ssrc_of(p) == LAYERS[0])
        .map(|p| RtpView::parse(p).unwrap().sequence_number())
        .skip(16)
        .take(12)
        .collect();
    let limited = conf.shard.stats().total.rtx_rate_limited;
    let mark = conf.peers[1].rtp_packets.len();
    let n = sluice_core::rtcp::write_nack(&mut nack, 0x7777, LAYERS[0], &burst).expect("nack");
    conf.peers[1].send_rtcp(&nack[..n]);
    feedback.run(&mut conf, Duration::from_millis(600), audio);
    let resends: Vec<(usize, Instant)> = conf.peers[1].rtp_packets[mark..]
        .iter()
        .zip(&conf.peers[1].rtp_arrivals[mark..])
        .filter(|(p, _)| ssrc_of(p) == simulcast::RTXS[0])
        .map(|(p, &at)| (p.len(), at))
        .collect();
    let stats = conf.shard.stats();
    let refused = stats.total.rtx_rate_limited - limited;
    assert_eq!(resends.len() as u64 + refused, 12, "{:?}", stats.total);
    let bytes: usize = resends.iter().map(|(len, _)| len).sum();
    assert!(
        resends.len() >= 4 && bytes <= 9_375 + 1_100,
        "{bytes} in {}",
        resends.len()
    );
    // At about 56 kB/s, less the idle budget's two packets.
    let spread = resends.last().unwrap().1 - resends[0].1;
    let paced = Duration::from_micros((bytes as u64 - 3 * 1_100) * 1_000_000 / 56_000);
    assert!(spread >= paced, "{spread:?} for {bytes} bytes");
    assert_eq!(
        stats.total.retransmitted,
        1 + resends.len() as u64,
        "{:?}",
        stats.total
    );
    common::tcc::assert_gapless(&conf.peers[1].rtp_packets, TCC);
}
