//! RFC 2198 redundant audio through a real shard: one sender sends RED, a receiver that negotiated RED gets
//! the packets as sent, one that did not gets each stripped to its primary (byte for byte, the audio level
//! extension kept), one that negotiated neither gets nothing; a malformed RED payload reaches nobody.

mod common;

use std::time::{Duration, Instant};

use sluice_core::domain::{Codec, HeaderExtensionIds, MediaKind, PayloadType};
use sluice_core::seam::{Command, Event};
use sluice_core::stats::DropReason;
use sluice_testutil::counting_alloc::{counted_here, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

const OPUS: u8 = 111;
const RED: u8 = 63;
const SENDER_AUDIO: u32 = 0xA1;

fn set_payload_types(conf: &mut common::Conference, peer: usize, types: &[(u8, Codec)]) {
    conf.shard.handle_command(
        Instant::now(),
        Command::SetPayloadTypes {
            transport: 10 + peer as u64,
            types: types
                .iter()
                .map(|&(pt, codec)| PayloadType { pt, codec })
                .collect(),
        },
    );
}

/// A RED packet as Chrome sends it: the audio level (id 1) in a one-byte extension, then one redundant
/// Opus block (the previous frame, 960 ticks earlier) and the primary.
fn red_packet(seq: u16, payload: &[u8]) -> Vec<u8> {
    let ts = u32::from(seq) * 960;
    let mut p = vec![0x90, 0x80 | RED];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&SENDER_AUDIO.to_be_bytes());
    p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0x9e, 0, 0]);
    p.extend_from_slice(payload);
    p
}

fn valid_red(seq: u16) -> Vec<u8> {
    let s = seq as u8;
    red_packet(
        seq,
        &[0x80 | OPUS, 0x0f, 0x00, 3, OPUS, s, s, s, 0xf0, s, 0xf1, s],
    )
}

fn drops(conf: &common::Conference, peer: usize, reason: DropReason) -> u64 {
    conf.shard
        .stats()
        .transports
        .iter()
        .find(|t| t.id == 10 + peer as u64)
        .map_or(0, |t| t.counters.drops(reason))
}

/// A conference of a RED sender (peer 0), a receiver with RED (1) and one without (2), connected.
fn red_call(n: usize) -> common::Conference {
    let mut conf = common::Conference::new(n);
    conf.set_sources(0, &[(SENDER_AUDIO, MediaKind::Audio)]);
    let with_red = [(OPUS, Codec::Audio), (RED, Codec::Red), (100, Codec::Vp8)];
    set_payload_types(&mut conf, 0, &with_red);
    set_payload_types(&mut conf, 1, &with_red);
    set_payload_types(&mut conf, 2, &[(OPUS, Codec::Audio), (100, Codec::Vp8)]);
    conf
}

#[test]
fn red_goes_as_is_to_red_receivers_stripped_to_the_others_and_nowhere_when_malformed() {
    let mut conf = red_call(4);
    // Peer 3 signalled an audio codec, but neither RED nor Opus.
    set_payload_types(&mut conf, 3, &[(0, Codec::Audio)]);
    conf.shard.handle_command(
        Instant::now(),
        Command::SetHeaderExtensions {
            transport: 10,
            ids: HeaderExtensionIds {
                audio_level: Some(1),
                ..HeaderExtensionIds::default()
            },
        },
    );
    conf.connect_all();

    for seq in 0..20u16 {
        conf.peers[0].send_plain_rtp(&valid_red(seq));
    }
    conf.peers[0].flush();
    assert!(
        conf.run_until(Duration::from_secs(5), |c| {
            c.peers[1].rtp_packets.len() >= 20 && c.peers[2].rtp_packets.len() >= 20
        }),
        "red receiver got {}, plain receiver {}",
        conf.peers[1].rtp_packets.len(),
        conf.peers[2].rtp_packets.len()
    );

    for seq in 0..20u16 {
        let sent = valid_red(seq);
        assert_eq!(conf.peers[1].rtp_packets[usize::from(seq)], sent);
        // Same header with PT 111 (marker kept), the same extension, then the primary's 3 bytes.
        let s = seq as u8;
        let mut want = sent[..20].to_vec();
        want[1] = 0x80 | OPUS;
        want.extend_from_slice(&[0xf0, s, 0xf1, s]);
        assert_eq!(conf.peers[2].rtp_packets[usize::from(seq)], want);
    }
    assert!(conf.peers[3].rtp_packets.is_empty());
    assert_eq!(drops(&conf, 3, DropReason::NotNegotiated), 20);

    // Malformed: a redundant block longer than the payload. Nobody gets it; it counts on the sender.
    conf.peers[0].send_plain_rtp(&red_packet(20, &[0x80 | OPUS, 0, 0, 200, OPUS, 1, 2]));
    // And a valid one after it, so the test knows the shard has read both.
    conf.peers[0].send_plain_rtp(&valid_red(21));
    conf.peers[0].flush();
    assert!(conf.run_until(Duration::from_secs(5), |c| {
        c.peers[1].rtp_packets.len() >= 21 && c.peers[2].rtp_packets.len() >= 21
    }));
    assert_eq!(conf.peers[1].rtp_packets.len(), 21);
    assert_eq!(conf.peers[2].rtp_packets.len(), 21);
    assert_eq!(drops(&conf, 0, DropReason::RedMalformed), 1);

    // The audio level still reaches the control plane (0x9e: voice, -30 dBov).
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut level = None;
    while level.is_none() && Instant::now() < deadline {
        conf.turn();
        level = conf.events.iter().find_map(|e| match e {
            Event::AudioLevels { levels, .. } => {
                levels.iter().find(|l| l.ssrc == SENDER_AUDIO).copied()
            }
            _ => None,
        });
    }
    let level = level.expect("an AudioLevels event for the RED sender");
    assert_eq!((level.loudness, level.voice), (127 - 30, true));
}

/// The RED fan-out allocates nothing per packet in steady state: the stripped copy is made on the stack.
#[test]
fn red_fan_out_allocates_nothing_per_packet_in_steady_state() {
    let mut conf = red_call(3);
    conf.connect_all();
    // Warm-up: the first packets create per-SSRC SRTP state.
    for seq in 0..100u16 {
        conf.peers[0].send_plain_rtp(&valid_red(seq));
    }
    conf.peers[0].flush();
    assert!(conf.run_until(Duration::from_secs(5), |c| {
        c.peers[1].rtp.len() >= 100 && c.peers[2].rtp.len() >= 100
    }));

    let mut seq = 100u16;
    let mut forwarded = 0u64;
    let mut allocs = 0u64;
    for _round in 0..50 {
        for _ in 0..32 {
            conf.peers[0].send_plain_rtp(&valid_red(seq));
            seq = seq.wrapping_add(1);
        }
        conf.peers[0].flush();
        let before = conf.shard.stats().total.rtp_out;
        std::thread::sleep(Duration::from_micros(200));
        let now = Instant::now();
        let ((), n) = counted_here(|| conf.shard.poll_io(now));
        allocs += n;
        forwarded += conf.shard.stats().total.rtp_out - before;
        for p in &mut conf.peers {
            p.poll(now);
        }
    }
    assert!(forwarded >= 1000, "forwarded only {forwarded} packets");
    assert_eq!(
        allocs, 0,
        "{allocs} heap allocations forwarding {forwarded} RED packets"
    );
}
