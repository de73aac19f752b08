//! The estimator on traces recorded from real browsers (`cc::trace`): the packets the bridge sent a
//! Chromium receiver behind the impairment relay and the transport-cc feedback Chromium sent back,
//! replayed through a fresh estimator.

use std::time::Duration;

use crate::cc::trace::{parse, replay, Record};
use crate::cc::{Estimator, EstimatorConfig};

/// (seconds since the first packet, estimate bit/s, acknowledged bit/s) after every feedback.
fn timeline(text: &str) -> Vec<(f64, f64, Option<u64>)> {
    let records = parse(text).expect("the trace parses");
    let start = records.first().map_or(Duration::ZERO, Record::at);
    let mut e = Estimator::new(EstimatorConfig::default());
    let mut out = Vec::new();
    replay(&records, &mut e, |at, e, _| {
        let t = (at - start).as_secs_f64();
        out.push((t, e.estimate_bps() as f64, e.acknowledged_bps()));
    })
    .expect("the trace replays");
    out
}

fn summary(line: &[(f64, f64, Option<u64>)]) -> String {
    line.iter()
        .step_by(10)
        .map(|(t, e, a)| {
            format!(
                "t={t:5.1} est={:5.0}k acked={:?}\n",
                e / 1e3,
                a.map(|a| a / 1000)
            )
        })
        .collect()
}

#[test]
fn behind_a_500_kbit_cap_the_estimate_finds_the_link_and_stays_near_it() {
    // RTP bytes, as the estimator counts them: the link's 500 kbit/s of Ethernet frames carry about
    // 90 % of that in RTP at these packet sizes (42 bytes of Ethernet, IP and UDP, 10 of SRTP tag).
    let line = timeline(include_str!("data/cap-500k.trace"));
    let detail = summary(&line);
    assert!(line.len() > 300, "{} feedbacks\n{detail}", line.len());
    let link = 500e3;
    let after = |from: f64| line.iter().filter(move |(t, _, _)| *t >= from);
    // The 2.5 Mbit/s start overshoots; within 2 s the estimate is down to the link...
    let down = line.iter().find(|(_, e, _)| *e <= 1.2 * link);
    assert!(
        down.is_some_and(|(t, _, _)| *t <= 2.0),
        "down at {down:?}\n{detail}"
    );
    // ...and once the overshoot's loss is reported (in this recording the bridge then sent little
    // but audio for two seconds), from 4.5 s on it neither collapses nor rises far past the link
    // while the receiver is sent less than the link carries.
    for &(t, e, _) in after(4.5) {
        assert!(e >= 0.5 * link, "{e:.0} at {t:.1} s\n{detail}");
        assert!(e <= 1.2 * link, "{e:.0} at {t:.1} s\n{detail}");
    }
    let mean = after(4.5).map(|(_, e, _)| e).sum::<f64>() / after(4.5).count() as f64;
    assert!(
        (0.6 * link..=1.1 * link).contains(&mean),
        "mean {mean:.0}\n{detail}"
    );
}

/// With SLUICE_CC_TRACE=<file>, prints the estimate after every feedback and each probe result
/// (a tool for reading a trace recorded with `[videobridge.cc] trace-dir`; does nothing otherwise).
#[test]
fn print_a_trace_given_in_the_environment() {
    let Some(path) = std::env::var_os("SLUICE_CC_TRACE") else {
        return;
    };
    let text = std::fs::read_to_string(path).expect("the trace file");
    let records = parse(&text).expect("the trace parses");
    let start = records.first().map_or(Duration::ZERO, Record::at);
    // The live estimator's start, when it was not the default (`[videobridge.cc] initial-estimate`).
    let initial = std::env::var("SLUICE_CC_INITIAL_BPS")
        .ok()
        .and_then(|v| v.parse().ok());
    let base = EstimatorConfig::default();
    let mut e = Estimator::new(EstimatorConfig {
        initial_bps: initial.unwrap_or(base.initial_bps),
        ..base
    });
    replay(&records, &mut e, |at, e, probe| {
        let s = e.stats();
        if let Some(p) = probe {
            println!(
                "t={:6.2} probe cluster {} measured {:?} bit/s",
                (at - start).as_secs_f64(),
                p.cluster,
                p.bps
            );
        }
        println!(
            "t={:6.2} est={:5.0}k delay={:5.0}k loss={:5.0}k acked={:?} sent={:?} usage={:?} raises={} overuses_in_probes={}",
            (at - start).as_secs_f64(),
            s.estimate_bps as f64 / 1e3,
            s.delay_based_bps as f64 / 1e3,
            s.loss_based_bps as f64 / 1e3,
            s.acknowledged_bps.map(|a| a / 1000),
            s.sent_bps.map(|a| a / 1000),
            s.usage,
            s.probe_raises,
            s.probe_overuses,
        );
    })
    .expect("the trace replays");
}
