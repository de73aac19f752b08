//! Bad input is dropped and counted by reason; it never panics and never disturbs anyone else.

mod common;

use std::time::Duration;

use sluice_core::domain::MediaKind;
use sluice_core::io::UdpSocket;
use sluice_core::stats::DropReason;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn garbage_and_attacks_are_counted_and_media_keeps_flowing() {
    let mut conf = common::Conference::new(2);
    conf.set_sources(0, &[(0xAAAA, MediaKind::Video)]);
    conf.connect_all();
    let bridge = conf.shard.local_addrs()[0];

    // Baseline: media flows 0 → 1.
    for seq in 0..50u16 {
        conf.peers[0].send_rtp(0xAAAA, seq, 0, 100, 500);
    }
    conf.peers[0].flush();
    assert!(conf.run_until(Duration::from_secs(5), |c| c.peers[1].rtp.len() >= 50));

    // An unknown address sends every kind of datagram, including truncated ones.
    let rogue = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
    let mut tx = sluice_core::io::SendBatch::new(64);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let templates: [&[u8]; 5] = [
        &[
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ],
        &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10],
        &[0x80, 100, 0, 1, 0, 0, 0, 0, 0, 0, 0xAA, 0xAA, 1, 2, 3],
        &[0x80, 200, 0, 6, 0, 0, 0xAA, 0xAA],
        &[0xff; 40],
    ];
    for t in templates {
        for len in 0..=t.len() {
            tx.push(&t[..len], bridge);
            if tx.is_full() {
                rogue.send_batch(&mut tx);
            }
        }
    }
    for _ in 0..500 {
        let len = (xorshift(&mut rng) % 200) as usize;
        let data: Vec<u8> = (0..len).map(|_| xorshift(&mut rng) as u8).collect();
        tx.push(&data, bridge);
        if tx.is_full() {
            rogue.send_batch(&mut tx);
        }
    }
    rogue.send_batch(&mut tx);

    // The connected peer sends a tampered packet, a replay, a truncated one and an unsignalled SSRC.
    let good = conf.peers[0].protected_rtp(0xAAAA, 100, 300);
    let mut tampered = conf.peers[0].protected_rtp(0xAAAA, 101, 300);
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    conf.peers[0].send_raw(&good);
    conf.peers[0].send_raw(&good); // replay
    conf.peers[0].send_raw(&tampered);
    conf.peers[0].send_raw(&good[..10]);
    let unknown = conf.peers[0].protected_rtp(0xBBBB, 1, 100);
    conf.peers[0].send_raw(&unknown);
    conf.run_until(Duration::from_millis(500), |_| false);

    let total = conf.shard.stats().total;
    for reason in [
        DropReason::UnknownAddress,
        DropReason::StunUnroutable,
        DropReason::StunMalformed,
        DropReason::Unclassified,
        DropReason::SrtpReplay,
        DropReason::SrtpAuth,
        DropReason::UnknownSsrc,
    ] {
        assert!(
            total.drops(reason) > 0,
            "no {} drops counted: {:?}",
            reason.as_str(),
            total.drop_map()
        );
    }
    assert!(
        total.drops(DropReason::TooShort)
            + total.drops(DropReason::SrtpAuth)
            + total.drops(DropReason::SrtpOther)
            > 0
    );
    assert_eq!(total.drops(DropReason::Panic), 0);

    // Nobody else was disturbed: media still flows, with the good packet forwarded once.
    let before = conf.peers[1].rtp.len();
    for seq in 200..250u16 {
        conf.peers[0].send_rtp(0xAAAA, seq, 0, 100, 500);
    }
    conf.peers[0].flush();
    assert!(
        conf.run_until(Duration::from_secs(5), |c| c.peers[1].rtp.len()
            >= before + 50)
    );
    assert_eq!(
        conf.peers[1].rtp.iter().filter(|(_, s)| *s == 100).count(),
        1
    );
}
