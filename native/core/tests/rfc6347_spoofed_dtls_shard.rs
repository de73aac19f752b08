//! RFC 6347 section 4.1.2.7 through a real Shard: spoofed DTLS records sent from a connected
//! peer's own address (its own socket, on loopback) are discarded and counted as
//! `dtls_invalid`, and the call goes on: media keeps flowing both ways, no transport fails.

mod common;

use std::time::{Duration, Instant};

use sluice_core::domain::{MediaKind, TransportState};
use sluice_core::seam::Event;
use sluice_core::stats::DropReason;

const PER_KIND: u64 = 1000;
/// The AES-GCM suites our two sides negotiate: 8-byte nonce + 2-byte alert + 16-byte tag.
const GCM_ALERT_LEN: usize = 26;
const SSRCS: [u32; 2] = [0x1111_0001, 0x2222_0002];

/// Every peer sends a few packets of its stream.
fn send_media(conf: &mut common::Conference, seq: &mut u16) {
    for (i, ssrc) in SSRCS.iter().enumerate() {
        for _ in 0..3 {
            *seq = seq.wrapping_add(1);
            conf.peers[i].send_rtp(*ssrc, *seq, u32::from(*seq) * 3000, 100, 400);
        }
        conf.peers[i].flush();
    }
}

fn received(conf: &common::Conference, receiver: usize) -> usize {
    let from = SSRCS[1 - receiver];
    conf.peers[receiver]
        .rtp
        .iter()
        .filter(|(s, _)| *s == from)
        .count()
}

fn dtls_invalid(conf: &common::Conference) -> (u64, Vec<u64>) {
    let stats = conf.shard.stats();
    let per_transport = stats
        .transports
        .iter()
        .map(|t| t.counters.drops(DropReason::DtlsInvalid))
        .collect();
    (stats.total.drops(DropReason::DtlsInvalid), per_transport)
}

#[test]
fn rfc6347_4_1_2_7_spoofed_records_from_the_peers_address_never_end_the_call() {
    let mut conf = common::Conference::new(2);
    for (i, ssrc) in SSRCS.iter().enumerate() {
        conf.set_sources(i, &[(*ssrc, MediaKind::Video)]);
    }
    conf.connect_all();
    let mut seq = 0u16;
    send_media(&mut conf, &mut seq);
    assert!(
        conf.run_until(Duration::from_secs(5), |c| received(c, 0) > 0
            && received(c, 1) > 0),
        "no media before the attack"
    );

    // Both peers' transports are attacked from their own sockets, while media keeps flowing.
    let mut expected = [0u64; 2];
    for (name, make) in common::spoof::kinds(GCM_ALERT_LEN) {
        for batch in 0..PER_KIND / 50 {
            let packets_before = conf.shard.stats().total.packets_in;
            let mut sent = 0;
            for i in batch * 50..(batch + 1) * 50 {
                let (datagram, records) = make(i);
                for (victim, count) in expected.iter_mut().enumerate() {
                    conf.peers[victim].send_raw(&datagram);
                    *count += records;
                    sent += 1;
                }
            }
            send_media(&mut conf, &mut seq);
            // Let the shard drain its socket before the next batch (the kernel would drop).
            let caught_up = conf.run_until(Duration::from_secs(5), |c| {
                c.shard.stats().total.packets_in >= packets_before + sent
            });
            assert!(caught_up, "{name}: the shard fell behind");
        }
    }
    let (total, per_transport) = dtls_invalid(&conf);
    assert_eq!(per_transport, expected.to_vec(), "counted per transport");
    assert_eq!(total, expected.iter().sum::<u64>(), "counted in total");

    // Media keeps being received and decoded for a while after the attack, both ways.
    let before = [received(&conf, 0), received(&conf, 1)];
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        send_media(&mut conf, &mut seq);
        conf.run_until(Duration::from_millis(20), |_| false);
    }
    for (peer, count) in before.iter().enumerate() {
        assert!(
            received(&conf, peer) >= count + 100,
            "peer {peer} stopped receiving: {count} -> {}",
            received(&conf, peer)
        );
    }

    let stats = conf.shard.stats();
    assert_eq!(stats.failures.total(), 0, "{:?}", stats.failures);
    assert!(stats.transports.iter().all(|t| t.state == "connected"));
    assert!(!conf.events.iter().any(|e| matches!(
        e,
        Event::TransportState {
            state: TransportState::Failed | TransportState::Closed,
            ..
        }
    )));
    // The bridge answered no spoof: no peer received a DTLS alert.
    assert!(conf.peers.iter().all(|p| p.failed.is_none()));

    // The peer's real close_notify still closes its transport, without a failure.
    let peer = &mut conf.peers[0];
    let dtls = peer.dtls.as_mut().expect("dtls");
    dtls.close();
    let close: Vec<Vec<u8>> = std::iter::from_fn(|| dtls.poll_transmit()).collect();
    for d in close {
        peer.send_raw(&d);
    }
    let closed = conf.run_until(Duration::from_secs(5), |c| {
        c.events.iter().any(|e| {
            matches!(
                e,
                Event::TransportState {
                    transport: 10,
                    state: TransportState::Closed,
                    ..
                }
            )
        })
    });
    assert!(closed, "close_notify did not close the transport");
    assert_eq!(conf.shard.stats().failures.total(), 0);
}
