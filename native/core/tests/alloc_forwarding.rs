//! Zero heap allocations per forwarded packet in steady state.
//!
//! A counting global allocator wraps the system one; counting is switched on only around the shard's
//! receive → unprotect → route → protect → sendmmsg work, not around the test peers.

mod common;

use std::time::{Duration, Instant};

use sluice_core::domain::MediaKind;
use sluice_testutil::counting_alloc::{counted, Counting};

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
        let ((), n) = counted(|| conf.shard.poll_io(now));
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
