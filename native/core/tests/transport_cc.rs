//! Transport-wide sequence numbers on what the bridge forwards: each receiver that negotiated
//! transport-cc gets its own gapless numbering in the packets' extension, whatever the sender wrote
//! there; a receiver that did not gets the packet as it came.

mod common;

use std::time::{Duration, Instant};

use sluice_core::domain::{HeaderExtensionIds, MediaKind};
use sluice_core::rtp::RtpView;
use sluice_core::seam::Command;

const TCC: u8 = 5;
const AUDIO: u32 = 0xA0;

/// An audio packet with a one-byte-header extension block: transport-cc (id 5, the sender's own
/// number) and an audio level (id 1).
fn packet(seq: u16, tcc: u16) -> Vec<u8> {
    let mut p = vec![0x90, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&AUDIO.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x02]);
    p.extend_from_slice(&[(TCC << 4) | 1, (tcc >> 8) as u8, tcc as u8]);
    p.extend_from_slice(&[(1 << 4), 0x85, 0x00, 0x00]);
    p.extend_from_slice(&[0x42; 60]);
    p
}

fn tcc_of(packet: &[u8]) -> Option<u16> {
    common::tcc::number(packet, TCC)
}

/// `n` connected peers, peer 0 sending the audio SSRC; `negotiated` transports have transport-cc (and
/// audio levels at id 1).
fn call(n: usize, negotiated: &[u64]) -> common::Conference {
    let mut conf = common::Conference::new(n);
    conf.set_sources(0, &[(AUDIO, MediaKind::Audio)]);
    let ids = HeaderExtensionIds {
        audio_level: Some(1),
        transport_cc: Some(TCC),
        ..HeaderExtensionIds::default()
    };
    for &transport in negotiated {
        conf.shard.handle_command(
            Instant::now(),
            Command::SetHeaderExtensions { transport, ids },
        );
    }
    conf.connect_all();
    conf
}

#[test]
fn each_receiver_gets_its_own_gapless_transport_wide_numbers() {
    // The sender and receiver 1 negotiated transport-cc; receiver 2 did not.
    let mut conf = call(3, &[10, 11]);
    for i in 0..50u16 {
        // The sender's own numbers, with gaps (it numbers its video too).
        conf.peers[0].send_plain_rtp(&packet(i, 7000 + 3 * i));
    }
    conf.peers[0].flush();
    assert!(
        conf.run_until(Duration::from_secs(5), |c| c.peers[1].rtp_packets.len()
            >= 50
            && c.peers[2].rtp_packets.len() >= 50)
    );
    let mine: Vec<u16> = conf.peers[1]
        .rtp_packets
        .iter()
        .filter_map(|p| tcc_of(p))
        .collect();
    assert_eq!(mine, (0..50).collect::<Vec<u16>>());
    let theirs: Vec<u16> = conf.peers[2]
        .rtp_packets
        .iter()
        .filter_map(|p| tcc_of(p))
        .collect();
    assert_eq!(theirs, (0..50).map(|i| 7000 + 3 * i).collect::<Vec<u16>>());
    // The audio level next to it is untouched.
    let level = RtpView::parse(&conf.peers[1].rtp_packets[0])
        .expect("rtp")
        .extension(1)
        .map(<[u8]>::to_vec);
    assert_eq!(level, Some(vec![0x85]));
}

/// A receiver whose feedback starts reporting half its packets lost: its estimate's fall is an event at
/// once (the control plane reallocates it then, not at its next snapshot), at most one per 100 ms, and
/// only for that receiver.
#[test]
fn a_falling_estimate_is_reported_as_an_event() {
    use sluice_core::cc::FeedbackBuilder;
    use sluice_core::seam::Event;

    let mut conf = call(2, &[10, 11]);
    let t0 = Instant::now();
    let mut feedback = FeedbackBuilder::new(0x5151, 0);
    let (mut sent, mut seen) = (0u16, 0usize);
    let lossy_from = t0 + Duration::from_millis(800);
    let deadline = t0 + Duration::from_millis(2500);
    while Instant::now() < deadline {
        for _ in 0..5 {
            conf.peers[0].send_plain_rtp(&packet(sent, sent));
            sent += 1;
        }
        conf.peers[0].flush();
        conf.run_until(Duration::from_millis(20), |_| false);
        let lossy = Instant::now() >= lossy_from;
        let keep = |s: u16| !lossy || s.is_multiple_of(2);
        common::tcc::answer_with_feedback_of(&mut conf, 1, TCC, t0, &mut seen, &mut feedback, keep);
    }
    conf.run_until(Duration::from_millis(100), |_| false);
    let falls: Vec<(u64, u64)> = conf
        .events
        .iter()
        .filter_map(|e| match e {
            Event::EstimateFell { transport, bps } => Some((*transport, *bps)),
            _ => None,
        })
        .collect();
    assert!(!falls.is_empty(), "no fall reported: {:?}", conf.events);
    assert!(falls.iter().all(|&(t, _)| t == 11), "{falls:?}");
    // Each report is at least 10 % under the one before (the loss-based part halves the loss fraction
    // off per cut), and they come no faster than one per 100 ms: 1.7 s of loss makes at most 18.
    assert!(
        falls
            .windows(2)
            .all(|w| (w[1].1 as f64) < 0.9 * w[0].1 as f64),
        "{falls:?}"
    );
    assert!(falls.len() <= 18, "{falls:?}");
    let receiver = conf.transport_stats(11);
    // What the snapshot shows has not risen back past what was reported first.
    assert!(
        receiver
            .bandwidth_estimate_bps
            .is_some_and(|b| b <= falls[0].1),
        "{falls:?} {receiver:?}"
    );
}

/// Transport-cc feedback both ways: the bridge tells a sender what arrived (every 100 ms), and a
/// receiver's feedback on what the bridge stamped gives that receiver a bandwidth estimate.
#[test]
fn feedback_goes_to_the_sender_and_the_receivers_feedback_makes_an_estimate() {
    use sluice_core::cc::FeedbackBuilder;
    use sluice_core::rtcp::{parse_compound, RtcpPacket};

    let mut conf = call(2, &[10, 11]);
    let t0 = Instant::now();
    let mut receiver_feedback = FeedbackBuilder::new(0x5151, 0);
    let mut sent = 0u16;
    let mut seen = 0usize;
    let deadline = t0 + Duration::from_secs(3);
    while Instant::now() < deadline {
        for _ in 0..5 {
            conf.peers[0].send_plain_rtp(&packet(sent, 100 + sent));
            sent += 1;
        }
        conf.peers[0].flush();
        conf.run_until(Duration::from_millis(20), |_| false);
        // The receiver notes what arrived and answers with feedback, as a browser does.
        let arrived: Vec<u16> = conf.peers[1].rtp_packets[seen..]
            .iter()
            .filter_map(|p| tcc_of(p))
            .collect();
        seen = conf.peers[1].rtp_packets.len();
        for seq in arrived {
            receiver_feedback.on_arrival(seq, Instant::now() - t0);
        }
        let mut out = [0u8; 1200];
        while let Ok(Some(n)) = receiver_feedback.write(&mut out) {
            conf.peers[1].send_rtcp(&out[..n]);
        }
    }
    conf.run_until(Duration::from_millis(200), |_| false);
    // The sender got the bridge's feedback, naming its own numbers (100, 101, ...).
    let mut reported = 0usize;
    for p in &conf.peers[0].rtcp_packets {
        for packet in parse_compound(p).flatten() {
            if let RtcpPacket::TransportCc(fb) = packet {
                assert!(
                    (100..100 + sent).contains(&fb.base_sequence_number),
                    "{}",
                    fb.base_sequence_number
                );
                reported += fb
                    .packets()
                    .filter_map(Result::ok)
                    .filter(|s| s.delta_ticks.is_some())
                    .count();
            }
        }
    }
    assert!(
        reported >= usize::from(sent) * 9 / 10,
        "the bridge reported {reported} of {sent} arrivals"
    );
    // The receiver's feedback gave its transport an estimate.
    let receiver = conf.transport_stats(11);
    let sender = conf.transport_stats(10);
    assert!(
        receiver.bandwidth_estimate_bps.is_some_and(|b| b > 0),
        "{receiver:?}"
    );
    // And a round trip (what the operator's view shows): loopback, well under a second.
    assert!(
        receiver.rtt_ms.is_some_and(|r| (0.0..1000.0).contains(&r)),
        "{receiver:?}"
    );
    assert_eq!(
        sender.bandwidth_estimate_bps, None,
        "the sender was sent nothing"
    );
}

#[test]
fn a_receiver_wanting_more_than_its_estimate_is_probed_with_padding_on_an_rtx_stream() {
    use sluice_core::domain::{Codec, PayloadType, Source};
    use sluice_core::seam::Event;

    const VIDEO: u32 = 0xB0;
    const VIDEO_RTX: u32 = 0xB1;
    let mut conf = common::Conference::new(2);
    // Peer 0 sends audio, and signals a video Source with RTX (the stream the padding goes on).
    let video = common::simulcast::with_rtx("peer0-v0", VIDEO, VIDEO_RTX);
    conf.set_grouped_sources(0, vec![Source::single(AUDIO, MediaKind::Audio), video]);
    let types = vec![
        PayloadType {
            pt: 100,
            codec: Codec::Vp8,
        },
        PayloadType {
            pt: 96,
            codec: Codec::Rtx { apt: 100 },
        },
    ];
    let ids = HeaderExtensionIds {
        audio_level: Some(1),
        transport_cc: Some(TCC),
        ..HeaderExtensionIds::default()
    };
    for transport in [10, 11] {
        let now = Instant::now();
        conf.shard.handle_command(
            now,
            Command::SetPayloadTypes {
                transport,
                types: types.clone(),
            },
        );
        conf.shard
            .handle_command(now, Command::SetHeaderExtensions { transport, ids });
    }
    conf.connect_all();

    // Audio only, about 100 kbit/s: the receiver's estimate starts at 2.5 Mbit/s and stays near it.
    let mut feedback = common::tcc::FeedbackLoop::new(TCC);
    let mut step = |conf: &mut common::Conference, until: Duration| {
        feedback.run(conf, until, |n| packet(n, n));
    };
    step(&mut conf, Duration::from_millis(600));
    let receiver = |conf: &common::Conference| conf.transport_stats(11);
    let before = receiver(&conf);
    // The estimator counts datagrams; the stats say the estimate in plain RTP, less what media costs
    // beyond it: 44 bytes (SRTP tag, IPv4 and UDP headers) a packet, at most 100 packets a second here.
    let estimate = before.bandwidth_estimate_bps.expect("an estimate");
    assert!(
        (2_400_000 - 100 * 44 * 8..2_600_000).contains(&estimate),
        "{before:?}"
    );
    assert_eq!(
        before.probe.map(|p| p.clusters),
        Some(0),
        "no target, no probe"
    );
    let audio_packets = conf.peers[1].rtp_packets.len();

    // The allocation wants 8 Mbit/s: clusters of padding (the first two at 3 x and 6 x the initial
    // estimate, capped at 1.2 x the target; then up to twice the estimate) find the loopback carries
    // it, each success raising the estimate.
    conf.shard.handle_command(
        Instant::now(),
        Command::SetProbeTarget {
            transport: 11,
            bps: 8_000_000,
        },
    );
    step(&mut conf, Duration::from_millis(1500));
    let after = receiver(&conf);
    let probe = after.probe.expect("probe stats");
    assert!(probe.clusters >= 2 && probe.succeeded >= 2, "{after:?}");
    assert!(after.probe_raises >= 2, "{after:?}");
    assert!(
        after.bandwidth_estimate_bps.is_some_and(|b| b >= 8_000_000),
        "{after:?}"
    );
    // Each raise was told to the control plane at once, rising from above the estimate before any
    // probe; the estimate may have grown past the last since (rate control goes on after it).
    let rises: Vec<u64> = conf
        .events
        .iter()
        .filter_map(|e| match e {
            Event::EstimateRose { transport: 11, bps } => Some(*bps),
            _ => None,
        })
        .collect();
    assert_eq!(rises.len() as u64, after.probe_raises, "{rises:?}");
    assert!(rises.windows(2).all(|w| w[1] > w[0]), "{rises:?}");
    assert!(rises.first().is_some_and(|&b| b > estimate), "{rises:?}");
    assert!(
        rises
            .last()
            .is_some_and(|&b| after.bandwidth_estimate_bps.is_some_and(|now| b <= now)),
        "{rises:?} {after:?}"
    );
    // The padding: on the Source's RTX SSRC with the RTX payload type, padding-only, each stamped
    // with the receiver's next transport-wide number like media.
    let padding: Vec<&Vec<u8>> = conf.peers[1].rtp_packets[audio_packets..]
        .iter()
        .filter(|p| RtpView::parse(p).is_ok_and(|v| v.ssrc() == VIDEO_RTX))
        .collect();
    assert_eq!(padding.len() as u64, probe.padding_packets, "{after:?}");
    for p in &padding {
        let v = RtpView::parse(p).unwrap();
        assert_eq!(v.payload_type(), 96);
        assert_eq!(p[0] & 0x20, 0x20, "padding bit");
        assert!(v.payload().is_empty(), "padding only");
        assert!(tcc_of(p).is_some());
    }
    common::tcc::assert_gapless(&conf.peers[1].rtp_packets, TCC);
    let seqs: Vec<u16> = padding
        .iter()
        .map(|p| RtpView::parse(p).unwrap().sequence_number())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{seqs:?}"
    );

    // At its target the receiver is not probed any more.
    conf.shard.handle_command(
        Instant::now(),
        Command::SetProbeTarget {
            transport: 11,
            bps: 0,
        },
    );
    let clusters = receiver(&conf).probe.unwrap().clusters;
    step(&mut conf, Duration::from_millis(500));
    assert_eq!(receiver(&conf).probe.unwrap().clusters, clusters);
}

#[test]
fn a_sender_that_negotiated_remb_and_not_transport_cc_gets_remb_on_its_video() {
    use sluice_core::rtcp::{parse_compound, RtcpPacket};

    const VIDEO: u32 = 0xC0;
    const ABS: u8 = 3;
    let mut conf = common::Conference::new(2);
    conf.set_sources(0, &[(VIDEO, MediaKind::Video)]);
    let ids = HeaderExtensionIds {
        abs_send_time: Some(ABS),
        ..HeaderExtensionIds::default()
    };
    conf.shard.handle_command(
        Instant::now(),
        Command::SetHeaderExtensions { transport: 10, ids },
    );
    conf.connect_all();
    // About 1 Mbit/s of 1000-byte packets, each with its abs-send-time (6.18 fixed point seconds).
    let t0 = Instant::now();
    let mut seq = 0u16;
    while t0.elapsed() < Duration::from_millis(2500) {
        for _ in 0..2 {
            let abs = ((t0.elapsed().as_micros() << 18) / 1_000_000) as u32 & 0x00ff_ffff;
            let mut p = vec![0x90, 100];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
            p.extend_from_slice(&VIDEO.to_be_bytes());
            p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, (ABS << 4) | 2]);
            p.extend_from_slice(&abs.to_be_bytes()[1..]);
            p.extend_from_slice(&[0x42; 980]);
            conf.peers[0].send_plain_rtp(&p);
            seq = seq.wrapping_add(1);
        }
        conf.peers[0].flush();
        conf.run_until(Duration::from_millis(16), |_| false);
    }
    let rembs: Vec<(u64, Vec<u32>)> = conf.peers[0]
        .rtcp_packets
        .iter()
        .flat_map(|p| parse_compound(p).flatten().collect::<Vec<_>>())
        .filter_map(|packet| match packet {
            RtcpPacket::Remb(r) => Some((r.bitrate_bps, r.ssrcs().collect())),
            _ => None,
        })
        .collect();
    // The first once the incoming rate is known (after 100 ms), then about one a second.
    assert!((2..=4).contains(&rembs.len()), "{rembs:?}");
    for (bps, ssrcs) in &rembs {
        assert_eq!(ssrcs, &[VIDEO]);
        assert!(*bps >= 900_000, "{rembs:?}");
    }
    let sender = conf.transport_stats(10);
    assert_eq!(sender.counters.remb_sent, rembs.len() as u64);
    assert!(sender.remb_estimate_bps.is_some());
    assert_eq!(sender.bandwidth_estimate_bps, None, "no transport-cc");
}
