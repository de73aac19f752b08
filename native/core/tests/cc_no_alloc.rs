//! Proves the congestion-control pieces allocate nothing in steady state: recording arrivals and
//! writing transport-cc feedback (FeedbackBuilder), recording sent packets and taking feedback
//! (Estimator), counted by a global allocator after both were built and warmed up.

use std::time::Duration;

use sluice_core::cc::{Estimator, EstimatorConfig, FeedbackBuilder};
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
