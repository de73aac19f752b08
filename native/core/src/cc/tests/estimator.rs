use std::time::Duration;

use super::sim::{run, Scenario, Trace};
use crate::cc::{BandwidthUsage, Estimator, EstimatorConfig, FeedbackBuilder};
use crate::rtcp::{RtcpError, RtcpPacket, TransportCc};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn parse(p: &[u8]) -> TransportCc<'_> {
    match RtcpPacket::parse(p).unwrap() {
        RtcpPacket::TransportCc(t) => t,
        other => panic!("{other:?}"),
    }
}

// ---- the estimator alone ----

#[test]
fn malformed_feedback_changes_nothing() {
    let mut e = Estimator::new(EstimatorConfig::default());
    for i in 0..10u16 {
        e.on_packet_sent(i, 1000, ms(u64::from(i)));
    }
    // Twenty statuses, one 7-symbol chunk: truncated.
    let bad = [
        0x8f, 205, 0x00, 0x05, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 20, 0, 0, 0, 0, 0xe0, 0x00, 0, 0,
    ];
    assert_eq!(
        e.on_feedback(&parse(&bad), ms(50)),
        Err(RtcpError::Truncated)
    );
    let s = e.stats();
    assert_eq!((s.feedbacks, s.malformed_feedbacks), (0, 1));
    assert_eq!(s.estimate_bps, 2_500_000);
    assert_eq!((s.loss_fraction, s.rtt), (0.0, None));
}

#[test]
fn unknown_statuses_are_counted() {
    let mut e = Estimator::new(EstimatorConfig::default());
    for i in 0..10u16 {
        e.on_packet_sent(i, 1000, ms(u64::from(i)));
    }
    let mut b = FeedbackBuilder::new(1, 2);
    // 100..=104 were never sent (ahead of the newest), 5..=9 were.
    for i in (5..10).chain(100..105) {
        b.on_arrival(i, ms(1000 + u64::from(i)));
    }
    let mut buf = [0u8; 1200];
    let n = b.write(&mut buf).unwrap().unwrap();
    e.on_feedback(&parse(&buf[..n]), ms(200)).unwrap();
    // 10..=99 were reported lost, also unknown: 90 + the 5 received past the newest sent.
    assert_eq!(e.stats().unknown_packets, 95);
}

#[test]
fn a_feedback_claiming_65535_statuses_is_read_only_as_far_as_the_history() {
    let mut e = Estimator::new(EstimatorConfig::default());
    for i in 0..10u16 {
        e.on_packet_sent(i, 1000, ms(u64::from(i)));
    }
    // Base 0, 65535 statuses in nine run length chunks of "not received": 40 bytes.
    let mut p = vec![
        0x8f, 205, 0x00, 0x09, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0xff, 0xff, 0, 0, 0, 0,
    ];
    for _ in 0..9 {
        p.extend_from_slice(&0x1fffu16.to_be_bytes());
    }
    p.extend_from_slice(&[0, 0]);
    e.on_feedback(&parse(&p), ms(100)).unwrap();
    let s = e.stats();
    // The ten sent were lost; the rest, up to 65535, match nothing.
    assert_eq!(s.unknown_packets, 65_535 - 10);
    assert_eq!(s.feedbacks, 1);
}

#[test]
fn rtt_loss_fraction_and_the_loss_based_cut() {
    let mut e = Estimator::new(EstimatorConfig::default());
    let mut b = FeedbackBuilder::new(1, 2);
    let mut buf = [0u8; 1200];
    // Every other packet arrives, in two batches a second apart.
    let mut batch = |e: &mut Estimator, from: u16, at_ms: u64| {
        for i in from..from + 40 {
            e.on_packet_sent(i, 1200, ms(at_ms - 100 + u64::from(i - from)));
            if i % 2 == 0 {
                b.on_arrival(i, ms(5000 + at_ms + u64::from(i - from)));
            }
        }
        let n = b.write(&mut buf).unwrap().unwrap();
        e.on_feedback(&parse(&buf[..n]), ms(at_ms)).unwrap();
    };
    batch(&mut e, 0, 100);
    // The last status written is the last received, 38; 39 is not reported yet.
    let s = e.stats();
    assert_eq!(s.rtt, Some(ms(100 - 38)));
    // 39 packets reported, but the loss interval lasts a second: no fraction, no cut yet.
    assert_eq!(
        (s.loss_fraction, s.loss_based_bps),
        (0.0, 2_500_000),
        "{s:?}"
    );
    batch(&mut e, 40, 1100);
    // 39 to 78 reported now, 20 of them lost: 39 of 79 over the interval.
    let s = e.stats();
    assert!(
        (s.loss_fraction - 39.0 / 79.0).abs() < 1e-9,
        "{}",
        s.loss_fraction
    );
    // Over 10 %: cut by half the fraction.
    let expect = 2_500_000.0 * (1.0 - 0.5 * 39.0 / 79.0);
    assert!((s.loss_based_bps as f64 - expect).abs() < 2.0, "{s:?}");
    assert_eq!(s.estimate_bps, s.loss_based_bps);
    assert_eq!(s.delay_based_bps, 2_500_000);
}

#[test]
fn the_reference_time_unwraps_at_its_sign_bit() {
    // The receiver's clock crosses 2^23 x 64 ms, where the parsed reference time turns
    // negative: arrivals must still run on, so the acknowledged bitrate stays right (one
    // 1200-byte packet a millisecond: 9.6 Mbit/s).
    let mut e = Estimator::new(EstimatorConfig::default());
    let mut b = FeedbackBuilder::new(1, 2);
    let offset = (1u64 << 23) * 64 - 300;
    let mut buf = [0u8; 1200];
    for i in 0..600u16 {
        e.on_packet_sent(i, 1200, ms(u64::from(i)));
        b.on_arrival(i, ms(offset + u64::from(i)));
        if i % 50 == 49 {
            while let Some(n) = b.write(&mut buf).unwrap() {
                e.on_feedback(&parse(&buf[..n]), ms(u64::from(i) + 30))
                    .unwrap();
            }
            if i > 300 {
                let acked = e.acknowledged_bps().unwrap() as f64;
                assert!((acked - 9.6e6).abs() < 0.3e6, "at {i}: {acked}");
            }
        }
    }
    assert_eq!(e.stats().usage, BandwidthUsage::Normal);
}

// ---- on the simulated link ----

/// The checks of a constant link after `from` seconds: the mean estimate within 10 % of the
/// capacity, never above 1.2 x, and the queue mostly empty (GCC's point is low delay).
fn link_checks(trace: &Trace, capacity: f64, from: f64, to: f64) -> Result<(), String> {
    let mean = trace.mean(from, to);
    let max = trace.max(from, to);
    let queue = trace.mean_queue_ms(from, to);
    let detail = trace.summary();
    if (mean / capacity - 1.0).abs() > 0.10 {
        return Err(format!(
            "mean {mean:.0} over {from}-{to} s, link {capacity}\n{detail}"
        ));
    }
    if max > 1.2 * capacity {
        return Err(format!(
            "peak {max:.0} over {from}-{to} s, link {capacity}\n{detail}"
        ));
    }
    if queue > 50.0 {
        return Err(format!(
            "mean queue {queue:.0} ms over {from}-{to} s\n{detail}"
        ));
    }
    Ok(())
}

fn assert_converges(capacity: f64) {
    let trace = run(&Scenario::constant(capacity, 30.0));
    link_checks(&trace, capacity, 5.0, 30.0).unwrap();
}

#[test]
fn converges_on_a_1_mbit_link() {
    assert_converges(1e6);
}

#[test]
fn converges_on_a_2_5_mbit_link() {
    assert_converges(2.5e6);
}

#[test]
fn converges_from_below_and_from_far_above() {
    for initial in [1_500_000, 10_000_000] {
        let mut scenario = Scenario::constant(2.5e6, 30.0);
        scenario.config.initial_bps = initial;
        let trace = run(&scenario);
        link_checks(&trace, 2.5e6, 10.0, 30.0).unwrap_or_else(|e| panic!("from {initial}: {e}"));
    }
}

/// 3 Mbit/s for 10 s, 300 kbit/s for 10 s, 3 Mbit/s again.
fn step_scenario() -> Scenario {
    let mut scenario = Scenario::constant(0.0, 60.0);
    scenario.capacity = Box::new(|t| if (10.0..20.0).contains(&t) { 3e5 } else { 3e6 });
    scenario
}

#[test]
fn follows_a_step_down_and_back_up() {
    let trace = run(&step_scenario());
    let detail = trace.summary();
    link_checks(&trace, 3e6, 5.0, 10.0).unwrap();
    // Down to 1.2 x the new capacity within 2 s.
    let down = trace.first_at_most(10.0, 1.2 * 3e5);
    assert!(
        down.is_some_and(|t| t <= 12.0),
        "down at {down:?}\n{detail}"
    );
    // It stays near it. The threshold rose with the step's huge delay trend and takes seconds
    // to come back, so a slow climb past the link is seen late: up to about 1.22 x here.
    let low_max = trace.max(12.0, 20.0);
    assert!(low_max <= 1.3 * 3e5, "peak {low_max:.0} at 300k\n{detail}");
    // Back up: growing at once, 8 % a second (or a packet per response time) compounding, so
    // about 3 x in 15 s, and at 90 % of the link within 30 s, never past 1.2 x.
    let at_15s = trace.min(35.0, 35.2);
    assert!(
        at_15s >= 3.0 * 3e5,
        "{at_15s:.0} 15 s after the step up\n{detail}"
    );
    let up = trace.first_at_least(20.0, 0.9 * 3e6);
    assert!(up.is_some_and(|t| t <= 50.0), "up at {up:?}\n{detail}");
    assert!(trace.max(20.0, 60.0) <= 1.2 * 3e6, "{detail}");
}

#[test]
fn random_loss_of_2_percent_does_not_collapse_the_estimate() {
    // 2 % is the edge of what the loss-based part lets grow; the estimate must stay near the
    // link (a loss-based part cutting on any loss falls to about half).
    for seed in 1..=3 {
        let mut scenario = Scenario::constant(2.5e6, 30.0);
        scenario.random_loss = 0.02;
        scenario.seed = seed;
        let trace = run(&scenario);
        let (min, mean) = (trace.min(5.0, 30.0), trace.mean(5.0, 30.0));
        let detail = trace.summary();
        assert!(min >= 0.7 * 2.5e6, "seed {seed}: low {min:.0}\n{detail}");
        assert!(
            mean >= 0.85 * 2.5e6,
            "seed {seed}: mean {mean:.0}\n{detail}"
        );
        assert!(trace.max(5.0, 30.0) <= 1.2 * 2.5e6, "seed {seed}\n{detail}");
        assert!(trace.dropped > 0);
    }
}

#[test]
fn the_link_checks_fail_for_broken_estimators() {
    // No decrease on over-use: the loss-based part and the 1.5 x acknowledged cap hold the
    // estimate near the link, but the queue stays full.
    let mut scenario = Scenario::constant(1e6, 30.0);
    scenario.config.decrease_factor = 1.0;
    let trace = run(&scenario);
    assert!(
        link_checks(&trace, 1e6, 5.0, 30.0).is_err(),
        "{}",
        trace.summary()
    );
    // An estimator that never hears feedback keeps its initial 2.5 Mbit/s.
    let mut scenario = Scenario::constant(1e6, 30.0);
    scenario.feedback_interval_us = i64::MAX / 2;
    let trace = run(&scenario);
    assert!(
        link_checks(&trace, 1e6, 5.0, 30.0).is_err(),
        "{}",
        trace.summary()
    );
}

// ---- an SFU's receiver: discrete layers, and probing ----

/// An allocation of 150 kbit/s, 500 kbit/s or 2.5 Mbit/s (180p, 360p, 720p) over the step
/// scenario's link: 3 Mbit/s, 300 kbit/s from 10 s to 20 s, 3 Mbit/s again.
fn layered_step(probing: bool) -> Trace {
    let mut scenario = step_scenario();
    scenario.seconds = 40.0;
    scenario.layers = Some(vec![150e3, 500e3, 2.5e6]);
    scenario.probing = probing;
    run(&scenario)
}

#[test]
fn without_probing_a_receiver_sent_a_low_layer_never_gets_back_up() {
    // The estimate may not grow past 1.5 x what is acknowledged: at 150 kbit/s sent, it stays
    // far below the 2.5 Mbit/s layer after the link recovers. This is why the bridge probes.
    let trace = layered_step(false);
    assert!(trace.max(25.0, 40.0) < 1e6, "{}", trace.summary());
    assert_eq!(trace.probes.clusters, 0);
}

#[test]
fn probing_moves_a_receiver_down_fast_and_back_up_within_15_s_of_recovery() {
    let trace = layered_step(true);
    let detail = trace.summary();
    // The 2.5 Mbit/s layer fits within 5 s of the start...
    let up = trace.first_at_least(0.0, 2.5e6);
    assert!(up.is_some_and(|t| t <= 5.0), "first up at {up:?}\n{detail}");
    // ...down to at most 1.2 x the 300 kbit/s link within 2 s of the drop, and held there (the
    // failed probes back off)...
    let down = trace.first_at_most(10.0, 1.2 * 3e5);
    assert!(
        down.is_some_and(|t| t <= 12.0),
        "down at {down:?}\n{detail}"
    );
    assert!(trace.max(13.0, 20.0) <= 1.5 * 3e5, "{detail}");
    // ...and back to the top layer within 15 s of the recovery. What is sent, probes included, stays
    // within 1.2 x the link over every second but the one after the drop (a probe cluster itself
    // goes over the link for up to 100 ms: that is what it is for).
    let back = trace.first_at_least(20.0, 2.5e6);
    assert!(
        back.is_some_and(|t| t <= 35.0),
        "back at {back:?}\n{detail}"
    );
    for second in (0..40).filter(|&s| s != 10) {
        let from = f64::from(second);
        let window: Vec<_> = trace.window(from, from + 1.0).collect();
        let sent = window.iter().map(|s| s.sent_bps).sum::<f64>() / window.len() as f64;
        let capacity = window
            .iter()
            .map(|s| s.capacity)
            .fold(f64::INFINITY, f64::min);
        assert!(
            sent <= 1.2 * capacity,
            "{sent:.0} sent over {second}-{} s\n{detail}",
            second + 1
        );
    }
    assert!(trace.probes.succeeded >= 2, "{:?}", trace.probes);
}

#[test]
fn a_300_kbit_start_probes_up_without_overshooting_a_small_link() {
    // From 300 kbit/s (`[videobridge.cc] initial-estimate`), probing towards the 2.5 Mbit/s layer: a 5 Mbit/s link gets it within 1 s
    // (the first clusters at 3x and 6x the start, then doubling);
    // a 500 kbit/s link is never estimated above 1.2 x its rate (the old 2.5 Mbit/s start sent it
    // 720p before the first feedback), and gets the 500 kbit/s layer's worth within 3 s.
    for (link, layer_by, within) in [(5e6, 2.5e6, 1.0), (5e5, 0.9 * 5e5, 3.0)] {
        let mut scenario = Scenario::constant(link, 15.0);
        scenario.config = EstimatorConfig {
            initial_bps: 300_000,
            ..EstimatorConfig::default()
        };
        scenario.queue_limit_us = 200_000.0;
        scenario.layers = Some(vec![150e3, 500e3, 2.5e6]);
        scenario.probing = true;
        let trace = run(&scenario);
        let detail = trace.summary();
        let up = trace.first_at_least(0.0, layer_by);
        assert!(
            up.is_some_and(|t| t <= within),
            "{link}: up at {up:?}\n{detail}"
        );
        if link < 1e6 {
            assert!(trace.max(0.0, 15.0) <= 1.2 * link, "{detail}");
        }
    }
}

#[test]
fn a_jittery_path_does_not_take_a_layer_the_link_carries() {
    // A 5 Mbit/s link carrying the 1.5 Mbit/s top layer, its delay wandering over 40 ms (as the
    // QoE runs' unimpaired path did on a busy machine). The wander reads as over-use now and then;
    // the link delivered all that was sent, so the estimate backs off from itself, no lower than
    // the acknowledged bitrate's headroom, not to 0.85 x the 1.5 Mbit/s sent: the top layer stays.
    // (A link pausing outright is not over-use: its queue drains as one burst group.)
    let mut scenario = Scenario::constant(5e6, 30.0);
    scenario.layers = Some(vec![150e3, 500e3, 1.5e6]);
    scenario.probing = true;
    scenario.jitter_max_us = 40_000.0;
    scenario.jitter_step_us = 3_000.0;
    let trace = run(&scenario);
    let detail = trace.summary();
    assert!(
        trace.saw_overuse(),
        "the jitter was never read as over-use: the test shows nothing\n{detail}"
    );
    assert!(trace.min(2.0, 30.0) >= 1.5e6, "{detail}");
}

#[test]
fn a_passing_dip_does_not_take_a_layer_the_link_carries() {
    // A 3 Mbit/s link carrying the 1.2 Mbit/s top layer dips now and then below what is sent (a
    // radio's rate; in the QoE runs, a descheduled receiver on the loaded host): 150 ms at 800
    // kbit/s, or 300 ms at 1 Mbit/s. Each queues what is sent and delivers it late, which reads
    // as over-use and as a link delivering less than was sent; 0.85 x that took the top layer at
    // each dip (down to 890 and 920 kbit/s here). A dip that passes costs one back-off.
    for (dip, seconds, every) in [(0.8e6, 0.15, 3.0), (1e6, 0.3, 2.0)] {
        let mut scenario = Scenario::constant(3e6, 30.0);
        scenario.capacity = Box::new(move |t| {
            if t > 1.0 && t % every < seconds {
                dip
            } else {
                3e6
            }
        });
        scenario.queue_limit_us = 200_000.0;
        scenario.layers = Some(vec![150e3, 500e3, 1.2e6]);
        scenario.probing = true;
        let trace = run(&scenario);
        let detail = trace.summary();
        assert!(
            trace.saw_overuse(),
            "no dip was read as over-use: the test shows nothing\n{detail}"
        );
        assert!(trace.min(2.0, 30.0) >= 1.2e6, "dip to {dip}\n{detail}");
    }
}

#[test]
fn an_overshoot_into_a_short_queue_does_not_collapse_the_estimate() {
    // Starting at 2.5 Mbit/s on a 500 kbit/s link with a 200 ms queue: most of the first second is
    // lost. The loss reported late must not cut the estimate far below what got through (it once
    // fell to 86 kbit/s behind such a link with Chromium), and it must then settle near the link.
    let mut scenario = Scenario::constant(5e5, 20.0);
    scenario.queue_limit_us = 200_000.0;
    scenario.layers = Some(vec![150e3, 500e3, 2.5e6]);
    scenario.probing = true;
    let trace = run(&scenario);
    let detail = trace.summary();
    assert!(trace.dropped > 0, "{detail}");
    assert!(trace.min(1.0, 20.0) >= 0.5 * 5e5, "{detail}");
    // Then near the link (at 500 kbit/s one 1200-byte packet is 19 ms of queue, so the queue is
    // judged in packets: under four on average).
    let mean = trace.mean(6.0, 20.0);
    assert!((mean / 5e5 - 1.0).abs() <= 0.1, "mean {mean:.0}\n{detail}");
    assert!(trace.max(6.0, 20.0) <= 1.2 * 5e5, "{detail}");
    assert!(trace.mean_queue_ms(6.0, 20.0) <= 4.0 * 19.2, "{detail}");
}

#[test]
fn burst_loss_of_5_percent_does_not_move_a_receiver_between_layers() {
    // The impair-burst-5 scenario's loss (Gilbert-Elliott: bursts of 4 packets on average, 5 % of
    // packets) on a link with room to spare: nothing here is congestion, so the receiver keeps
    // its top layer. A loss-based part that reads each burst in a short interval as over 10 %
    // cuts every half second or so and moves the receiver up and down all the time.
    for seed in 1..=3 {
        let mut scenario = Scenario::constant(10e6, 60.0);
        scenario.burst_loss = Some((0.01316, 0.25));
        scenario.layers = Some(vec![150e3, 500e3, 1.5e6]);
        scenario.probing = true;
        scenario.seed = seed;
        let trace = run(&scenario);
        let detail = trace.summary();
        let sent: Vec<Option<f64>> = trace.window(5.0, 60.0).map(|s| s.layer_bps).collect();
        let switches = sent.windows(2).filter(|w| w[0] != w[1]).count();
        let lost = trace.dropped as f64 / trace.sent as f64;
        assert!((0.03..0.08).contains(&lost), "seed {seed}: loss {lost:.3}");
        assert!(switches <= 2, "seed {seed}: {switches} switches\n{detail}");
    }
}
