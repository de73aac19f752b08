#![no_main]
//! Arbitrary arrival sequences into the transport-cc feedback writer: everything written must
//! parse with the transport-cc parser to the statuses and arrival times given (checked by
//! `cc::oracle`), within the limits, and every arrival must be reported, a duplicate, too old
//! or evicted.
//!
//! Input: two bytes of limits (max packets, max bytes), then records of 4 bytes: a sequence
//! number step (i8, so reordering and repeats), a time step (u8, in ms; 255 = 9 s, past what a
//! delta holds), and a control byte (bit 0: write feedback now; bit 1: a far sequence jump).

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sluice_core::cc::oracle::FeedbackOracle;
use sluice_core::cc::{FeedbackBuilder, FeedbackLimits};

fuzz_target!(|data: &[u8]| {
    let Some((&[packets, bytes], mut rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limits = FeedbackLimits {
        max_packets: u16::from(packets) * 8 + 1,
        max_bytes: 24 + usize::from(bytes) * 6,
    };
    let max_bytes = limits.max_bytes & !3;
    let mut builder = FeedbackBuilder::with_limits(7, 8, limits);
    let mut oracle = FeedbackOracle::new();
    let mut buf = [0u8; 1600];
    let mut seq: u16 = 0xfff0;
    let mut t_us: u64 = (1 << 24) * 64_000 - 2_000_000; // near the reference time's wrap

    let mut drain = |builder: &mut FeedbackBuilder, oracle: &mut FeedbackOracle| {
        while let Some(n) = builder.write(&mut buf).expect("the buffer is large enough") {
            oracle.check(&buf[..n], max_bytes);
        }
    };
    while let Some((&[step, dt, ctrl, extra], tail)) = rest.split_first_chunk::<4>() {
        rest = tail;
        seq = seq.wrapping_add(step as i8 as u16);
        if ctrl & 2 != 0 {
            seq = seq.wrapping_add(u16::from(extra) * 64);
        }
        t_us += if dt == 255 {
            9_000_000
        } else {
            u64::from(dt) * 1000 + u64::from(extra)
        };
        let at = Duration::from_micros(t_us);
        builder.on_arrival(seq, at);
        oracle.on_arrival(seq, at);
        if ctrl & 1 != 0 {
            drain(&mut builder, &mut oracle);
        }
    }
    drain(&mut builder, &mut oracle);
    assert!(!builder.has_pending());
    oracle.finish(&builder.counters());
});
