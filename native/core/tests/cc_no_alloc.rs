//! Proves the congestion-control pieces allocate nothing in steady state: recording arrivals and
//! writing transport-cc feedback (FeedbackBuilder), recording sent packets and taking feedback
//! (Estimator), holding and letting out bursts (Pacer), counted by a global allocator after each was
//! built and warmed up.

use std::time::Duration;

use sluice_core::cc::{Estimator, EstimatorConfig, FeedbackBuilder, Pacer};
use sluice_core::rtcp::RtcpPacket;
use sluice_testutil::counting_alloc::{counted_here, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One round: 100 packets sent 2 ms apart, 3 of them lost and two reordered, arriving 20 ms
/// later on the receiver's clock; the feedback written and fed back.
fn round(
    builder: &mut FeedbackBuilder,
    estimator: &mut Estimator,
    seq: &mut u16,
    t_ms: &mut u64,
    buf: &mut [u8; 1500],
) -> usize {
    let first = *seq;
    for i in 0..100u16 {
        let s = first.wrapping_add(i);
        estimator.on_packet_sent(s, 1100, Duration::from_millis(*t_ms + 2 * u64::from(i)));
    }
    for i in 0..100u16 {
        let j = match i {
            40 => 41,
            41 => 40,
            _ => i,
        };
        if j % 33 == 5 {
            continue;
        }
        let at = Duration::from_micros(7_000_000_000 + (*t_ms + 20 + 2 * u64::from(j)) * 1000);
        builder.on_arrival(first.wrapping_add(j), at);
    }
    *seq = first.wrapping_add(100);
    *t_ms += 200;
    let mut written = 0;
    while let Some(n) = builder.write(buf).unwrap() {
        let Ok(RtcpPacket::TransportCc(fb)) = RtcpPacket::parse(&buf[..n]) else {
            panic!("not transport-cc");
        };
        estimator
            .on_feedback(&fb, Duration::from_millis(*t_ms))
            .unwrap();
        written += n;
    }
    written
}

#[test]
fn cc_feedback_and_estimator_allocate_nothing() {
    // The counter itself works.
    assert!(counted_here(|| drop(std::hint::black_box(vec![0u8; 16]))).1 >= 1);

    let mut builder = FeedbackBuilder::new(1, 2);
    let mut estimator = Estimator::new(EstimatorConfig::default());
    let mut buf = [0u8; 1500];
    let (mut seq, mut t_ms) = (65_000u16, 0u64);
    for _ in 0..50 {
        round(&mut builder, &mut estimator, &mut seq, &mut t_ms, &mut buf);
    }
    let (bytes, allocations) = counted_here(|| {
        let mut bytes = 0;
        for _ in 0..500 {
            bytes += round(&mut builder, &mut estimator, &mut seq, &mut t_ms, &mut buf);
        }
        bytes
    });
    assert_eq!(allocations, 0);
    assert!(bytes > 500 * 100);
    assert!(estimator.acknowledged_bps().is_some());
    assert!(estimator.loss_fraction() > 0.0);
}

/// The pacer holds and lets out bursts without allocating once its queue has been as long as it
/// gets: held packets reuse the buffers of those that left.
#[test]
fn the_pacer_allocates_nothing_once_warm() {
    let mut pacer = Pacer::new();
    pacer.set_estimate(Some(700_000));
    let packet = [0x80u8; 1100];
    let mut now_us = 0i64;
    let burst = |pacer: &mut Pacer, now_us: &mut i64| {
        let mut left = 0;
        for _ in 0..40 {
            if pacer.may_send(*now_us) {
                pacer.spend(packet.len());
            } else {
                pacer.hold(*now_us, &packet, Some(20), false, |b| b[1] = 0x60);
            }
        }
        while !pacer.is_empty() {
            *now_us += 1_000;
            while let Some(h) = pacer.pop(*now_us) {
                pacer.spend(h.packet.len());
                pacer.recycle(h.packet);
                left += 1;
            }
        }
        left
    };
    for _ in 0..3 {
        burst(&mut pacer, &mut now_us);
    }
    let (left, allocations) = counted_here(|| {
        (0..50)
            .map(|_| burst(&mut pacer, &mut now_us))
            .sum::<usize>()
    });
    assert_eq!(allocations, 0);
    assert!(left > 50 * 30, "{left}");
}
