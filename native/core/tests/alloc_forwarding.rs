//! Zero heap allocations per forwarded packet in steady state.
//!
//! A counting global allocator wraps the system one; counting is switched on only around the shard's
//! receive → unprotect → route → protect → sendmmsg work, not around the test peers.

mod common;

use std::time::{Duration, Instant};

use sluice_core::domain::{MediaKind, VideoTarget};
use sluice_testutil::counting_alloc::{counted_here, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn forwarding_allocates_nothing_per_packet_in_steady_state() {
    let mut conf = common::Conference::new(3);
    conf.set_sources(0, &[(0x1111, MediaKind::Video), (0x2222, MediaKind::Audio)]);
    conf.connect_all();

    // Warm-up: first packets of each SSRC create per-SSRC SRTP state on every context.
    let mut seq: u16 = 0;
    for _ in 0..200 {
        for ssrc in [0x1111u32, 0x2222] {
            conf.peers[0].send_rtp(ssrc, seq, u32::from(seq) * 3000, 100, 1100);
        }
        seq = seq.wrapping_add(1);
    }
    conf.peers[0].flush();
    assert!(
        conf.run_until(Duration::from_secs(5), |c| c.peers[1].rtp.len() >= 390
            && c.peers[2].rtp.len() >= 390)
    );

    // Steady state: count allocations inside the shard only.
    let before_rx = (conf.peers[1].rtp.len(), conf.peers[2].rtp.len());
    let mut forwarded_in_window = 0u64;
    let mut allocs = 0u64;
    for _round in 0..100 {
        for _ in 0..32 {
            conf.peers[0].send_rtp(0x1111, seq, u32::from(seq) * 3000, 100, 1100);
            seq = seq.wrapping_add(1);
        }
        conf.peers[0].flush();
        let stats_before = conf.shard.stats().total.rtp_out;
        // Give the kernel a moment so the shard sees whole batches.
        std::thread::sleep(Duration::from_micros(200));
        let now = Instant::now();
        let ((), n) = counted_here(|| conf.shard.poll_io(now));
        allocs += n;
        forwarded_in_window += conf.shard.stats().total.rtp_out - stats_before;
        for p in &mut conf.peers {
            p.poll(now);
        }
    }
    conf.run_until(Duration::from_secs(2), |_| false);
    let after_rx = (conf.peers[1].rtp.len(), conf.peers[2].rtp.len());
    assert!(
        forwarded_in_window >= 5000,
        "forwarded only {forwarded_in_window} packets in the window"
    );
    assert!(
        after_rx.0 - before_rx.0 >= 3000 && after_rx.1 - before_rx.1 >= 3000,
        "receivers got {after_rx:?}"
    );
    assert_eq!(
        allocs, 0,
        "{allocs} heap allocations while forwarding {forwarded_in_window} packets"
    );
}

/// The selective path allocates nothing per packet either: a VP8 simulcast Source (three layers, each
/// with temporal layers 0, 2, 1, 2), each receiver's Projection choosing one, the other two filtered,
/// one receiver's temporal layers above 0 left out, every forwarded copy rewritten.
#[test]
fn selective_forwarding_allocates_nothing_per_packet_in_steady_state() {
    use sluice_core::domain::{Codec, GroupSemantics, PayloadType, Source, SsrcGroup};
    use sluice_core::seam::Command;

    let layers = [0x31u32, 0x32, 0x33];
    let mut conf = common::Conference::new(3);
    conf.set_grouped_sources(
        0,
        vec![Source {
            kind: MediaKind::Video,
            ssrcs: layers.to_vec(),
            groups: vec![SsrcGroup {
                semantics: GroupSemantics::Sim,
                ssrcs: layers.to_vec(),
            }],
            name: "peer0-v0".into(),
        }],
    );
    conf.shard.handle_command(
        Instant::now(),
        Command::SetPayloadTypes {
            transport: 10,
            types: vec![PayloadType {
                pt: 100,
                codec: Codec::Vp8,
            }],
        },
    );
    conf.connect_all();
    conf.shard.handle_command(
        Instant::now(),
        Command::SetAllocation {
            transport: 12,
            targets: vec![(
                "peer0-v0".into(),
                Some(VideoTarget {
                    spatial: 0,
                    temporal: 0,
                }),
            )],
        },
    );

    // VP8: descriptor with a 15-bit PictureID, TL0PICIDX and TID; a keyframe every 30 frames per layer.
    let mut seq = [0u16; 3];
    let mut frame = 0u16;
    let mut send_frames = |conf: &mut common::Conference, n: usize| {
        for _ in 0..n {
            frame = frame.wrapping_add(1);
            let key = frame % 30 == 1;
            let tid = if key {
                0
            } else {
                [0u8, 2, 1, 2][usize::from(frame % 4)]
            };
            for (l, &ssrc) in layers.iter().enumerate() {
                let mut p = vec![
                    0x90,
                    0xE0,
                    0x80 | (frame >> 8) as u8,
                    frame as u8,
                    frame as u8,
                    tid << 6,
                ];
                p.push(if key { 0x10 } else { 0x11 });
                p.resize(1000, 0x5a);
                conf.peers[0].send_rtp_payload(ssrc, seq[l], u32::from(frame) * 3000, 100, &p);
                seq[l] = seq[l].wrapping_add(1);
            }
        }
        conf.peers[0].flush();
    };
    // Warm-up: every receiver's Projection exists and has started its layer.
    send_frames(&mut conf, 40);
    assert!(
        conf.run_until(Duration::from_secs(5), |c| c.peers[1].rtp.len() >= 30
            && c.peers[2].rtp.len() >= 8)
    );

    let before = (conf.peers[1].rtp.len(), conf.peers[2].rtp.len());
    let mut allocs = 0u64;
    let mut forwarded = 0u64;
    for _round in 0..100 {
        send_frames(&mut conf, 10);
        let out_before = conf.shard.stats().total.rtp_out;
        std::thread::sleep(Duration::from_micros(200));
        let now = Instant::now();
        let ((), n) = counted_here(|| conf.shard.poll_io(now));
        allocs += n;
        forwarded += conf.shard.stats().total.rtp_out - out_before;
        for p in &mut conf.peers {
            p.poll(now);
        }
    }
    conf.run_until(Duration::from_secs(2), |_| false);
    let after = (conf.peers[1].rtp.len(), conf.peers[2].rtp.len());
    assert!(forwarded >= 1000, "forwarded only {forwarded}");
    // Receiver 1 gets every frame of the top layer, receiver 2 the temporal base of the lowest (a
    // quarter of the frames, and the keyframes).
    assert!(
        after.0 - before.0 >= 900 && (200..=400).contains(&(after.1 - before.1)),
        "{before:?} {after:?}"
    );
    // What receiver 2 got is gapless: the frames left out left no holes.
    let seqs: Vec<u16> = conf.peers[2].rtp.iter().map(|&(_, q)| q).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "gaps where temporal layers were left out: {seqs:?}"
    );
    // Each receiver got one layer, on the primary SSRC.
    assert!(conf.peers[1]
        .rtp
        .iter()
        .chain(&conf.peers[2].rtp)
        .all(|(s, _)| *s == layers[0]));
    assert_eq!(
        allocs, 0,
        "{allocs} heap allocations while forwarding {forwarded} packets"
    );
}
