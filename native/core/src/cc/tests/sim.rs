//! A bottleneck link simulator with a fake clock: a sender paced at the estimator's estimate, a
//! FIFO queue draining at the link's capacity (tail drop past a queueing delay), optional random
//! loss, a receiver writing transport-cc feedback with [`FeedbackBuilder`] on its own clock, and
//! the feedback's way back to the estimator. Every packet and feedback passes the real writer
//! and parser.

use std::collections::VecDeque;
use std::time::Duration;

use crate::cc::{Estimator, EstimatorConfig, FeedbackBuilder, Prober};
use crate::rtcp::RtcpPacket;
use crate::rtp::tests::XorShift;

pub(super) struct Scenario {
    /// Link capacity, bit/s, at a time in seconds.
    pub capacity: Box<dyn Fn(f64) -> f64>,
    pub seconds: f64,
    pub one_way_delay_us: f64,
    /// Packets that would wait longer than this in the queue are dropped.
    pub queue_limit_us: f64,
    pub random_loss: f64,
    /// Gilbert-Elliott burst loss after the queue: per packet, good to bad with the first
    /// probability, bad to good with the second; every packet in the bad state is lost.
    pub burst_loss: Option<(f64, f64)>,
    pub feedback_interval_us: i64,
    pub packet_size: usize,
    pub config: EstimatorConfig,
    pub seed: u64,
    /// The rates (bit/s, ascending) an SFU could send this receiver, as its allocation's layers: the
    /// sender sends the highest that fits in the estimate, or the lowest (None: always the estimate).
    pub layers: Option<Vec<f64>>,
    /// Probe with a [`Prober`] whose target is the highest layer while a lower one is sent,
    /// padding with `PADDING_SIZE` packets.
    pub probing: bool,
    /// Delay jitter: each packet's extra one-way delay walks randomly (by up to `jitter_step_us` a
    /// packet) between 0 and this, in order (a busy receiver or relay); 0: none.
    pub jitter_max_us: f64,
    pub jitter_step_us: f64,
}

/// The size of a padding packet (RTP header, a transport-cc extension, 255 bytes of padding).
pub(super) const PADDING_SIZE: usize = 275;

impl Scenario {
    pub fn constant(bps: f64, seconds: f64) -> Self {
        Scenario {
            capacity: Box::new(move |_| bps),
            seconds,
            one_way_delay_us: 25_000.0,
            queue_limit_us: 400_000.0,
            random_loss: 0.0,
            burst_loss: None,
            feedback_interval_us: 100_000,
            packet_size: 1200,
            config: EstimatorConfig::default(),
            seed: 1,
            layers: None,
            probing: false,
            jitter_max_us: 0.0,
            jitter_step_us: 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    pub t: f64,
    pub estimate: f64,
    pub capacity: f64,
    pub queue_ms: f64,
    /// What the sender sent over the last 100 ms, bit/s (media and padding).
    pub sent_bps: f64,
    /// The layer sent this millisecond, bit/s (None: no `layers`, the sender sends the estimate).
    pub layer_bps: Option<f64>,
    pub stats: crate::cc::EstimatorStats,
}

pub(super) struct Trace {
    pub samples: Vec<Sample>,
    pub sent: u64,
    pub dropped: u64,
    pub probes: crate::cc::ProbeStats,
}

impl Trace {
    /// Whether the estimator read over-use at some sample (a test of its reaction needs one).
    pub fn saw_overuse(&self) -> bool {
        self.samples
            .iter()
            .any(|s| s.stats.usage == crate::cc::BandwidthUsage::Overusing)
    }

    pub fn window(&self, from: f64, to: f64) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.t >= from && s.t < to)
    }

    pub fn mean(&self, from: f64, to: f64) -> f64 {
        let (sum, n) = self
            .window(from, to)
            .fold((0.0, 0), |(sum, n), s| (sum + s.estimate, n + 1));
        sum / f64::from(n)
    }

    pub fn mean_queue_ms(&self, from: f64, to: f64) -> f64 {
        let (sum, n) = self
            .window(from, to)
            .fold((0.0, 0), |(sum, n), s| (sum + s.queue_ms, n + 1));
        sum / f64::from(n)
    }

    pub fn max(&self, from: f64, to: f64) -> f64 {
        self.window(from, to)
            .map(|s| s.estimate)
            .fold(0.0, f64::max)
    }

    pub fn min(&self, from: f64, to: f64) -> f64 {
        self.window(from, to)
            .map(|s| s.estimate)
            .fold(f64::INFINITY, f64::min)
    }

    /// The first time at or after `from` the estimate is at least `level`.
    pub fn first_at_least(&self, from: f64, level: f64) -> Option<f64> {
        self.window(from, f64::INFINITY)
            .find(|s| s.estimate >= level)
            .map(|s| s.t)
    }

    /// The first time at or after `from` the estimate is at most `level`.
    pub fn first_at_most(&self, from: f64, level: f64) -> Option<f64> {
        self.window(from, f64::INFINITY)
            .find(|s| s.estimate <= level)
            .map(|s| s.t)
    }

    /// One line per second (every sample with `SIM_ALL` set), for failure messages.
    pub fn summary(&self) -> String {
        self.samples
            .iter()
            .filter(|s| (s.t * 10.0).round() as i64 % 10 == 0 || std::env::var_os("SIM_ALL").is_some())
            .map(|s| {
                let st = &s.stats;
                format!(
                    "t={:5.1} est={:7.0}k cap={:6.0}k sent={:6.0}k queue={:4.0}ms delay={:.0}k loss={:.0}k acked={:?} lossf={:.3} trend={:.1} thr={:.1} {:?} {:?}\n",
                    s.t,
                    s.estimate / 1e3,
                    s.capacity / 1e3,
                    s.sent_bps / 1e3,
                    s.queue_ms,
                    st.delay_based_bps as f64 / 1e3,
                    st.loss_based_bps as f64 / 1e3,
                    st.acknowledged_bps.map(|a| a / 1000),
                    st.loss_fraction,
                    st.trend_ms,
                    st.threshold_ms,
                    st.usage,
                    st.rate_control,
                )
            })
            .collect()
    }
}

fn at(us: f64) -> Duration {
    Duration::from_nanos((us * 1000.0) as u64)
}

pub(super) fn run(scenario: &Scenario) -> Trace {
    let mut estimator = Estimator::new(scenario.config);
    let mut prober = Prober::starting_at(scenario.config.initial_bps);
    let mut sent_bits = 0.0;
    let mut rng = XorShift::new(scenario.seed);
    let mut builder = FeedbackBuilder::new(0x1111, 0x2222);
    // The receiver's clock is its own: an arbitrary offset from the sender's.
    let receiver_offset_us = 987_654_321.0;
    let size = scenario.packet_size;
    let bits = size as f64 * 8.0;

    let mut seq: u16 = 65_000; // wraps early on
    let mut next_send_us = 0.0;
    let mut link_free_us = 0.0f64;
    let mut in_flight: VecDeque<(f64, u16)> = VecDeque::new();
    let mut jitter_us = 0.0f64;
    let mut bad = false;
    let mut last_arrival_us = 0.0f64;
    let mut returning: VecDeque<(i64, Vec<u8>)> = VecDeque::new();
    let mut next_feedback_us = scenario.feedback_interval_us;
    let mut buf = [0u8; 1500];
    let mut trace = Trace {
        samples: Vec::new(),
        sent: 0,
        dropped: 0,
        probes: Default::default(),
    };

    let end_ms = (scenario.seconds * 1000.0) as i64;
    for now_ms in 0..end_ms {
        let now_us = now_ms * 1000;
        let now = now_us as f64;

        let mut send = |t: f64, size: usize, estimator: &mut Estimator, trace: &mut Trace| {
            estimator.on_packet_sent(seq, size, at(t));
            trace.sent += 1;
            sent_bits += size as f64 * 8.0;
            let capacity = (scenario.capacity)(t / 1e6);
            let queued_us = (link_free_us - t).max(0.0);
            if queued_us > scenario.queue_limit_us {
                trace.dropped += 1;
            } else {
                link_free_us = link_free_us.max(t) + size as f64 * 8.0 / capacity * 1e6;
                if let Some((p, r)) = scenario.burst_loss {
                    let u = rng.next_u64() as f64 / (u64::MAX as f64);
                    bad = if bad { u >= r } else { u < p };
                }
                if bad || rng.next_u64() as f64 / (u64::MAX as f64) < scenario.random_loss {
                    trace.dropped += 1;
                } else {
                    if scenario.jitter_max_us > 0.0 {
                        let step = (rng.next_u64() as f64 / (u64::MAX as f64) * 2.0 - 1.0)
                            * scenario.jitter_step_us;
                        jitter_us = (jitter_us + step).clamp(0.0, scenario.jitter_max_us);
                    }
                    let arrival =
                        (link_free_us + scenario.one_way_delay_us + jitter_us).max(last_arrival_us);
                    last_arrival_us = arrival;
                    in_flight.push_back((arrival, seq));
                }
            }
            seq = seq.wrapping_add(1);
        };

        let estimate = estimator.estimate_bps() as f64;
        let layer = scenario.layers.as_ref().map(|l| {
            let fits = l.iter().rev().find(|&&r| r <= estimate);
            (
                fits.or(l.first()).copied().unwrap_or(estimate),
                l.last().copied().unwrap_or(0.0),
            )
        });
        if scenario.probing {
            // The allocator's ideal is the top layer; none is wanted while it is sent.
            let target = layer.map_or(0.0, |(sent, top)| if sent < top { top } else { 0.0 });
            prober.set_target(target as u64);
            let now_d = at(now);
            if let Some((id, _)) = prober.poll_start(now_d, estimator.estimate_bps()) {
                estimator.clusters().open(id);
            }
            if prober.active().is_some() {
                let sent = estimator.clusters().open_cluster().map_or(0, |(_, b)| b);
                let mut due = prober.padding_due(now_d, sent);
                while due > 0 {
                    send(now, PADDING_SIZE, &mut estimator, &mut trace);
                    prober.on_padding(PADDING_SIZE);
                    due = due.saturating_sub(PADDING_SIZE as u64);
                }
            }
            if let Some(id) = prober.poll_end(now_d) {
                estimator.clusters().close(id, now_d);
            }
        }

        while next_send_us <= now {
            let t = next_send_us;
            send(t, size, &mut estimator, &mut trace);
            let rate = layer.map_or(estimator.estimate_bps() as f64, |(sent, _)| sent);
            next_send_us += bits / rate * 1e6;
        }

        while in_flight
            .front()
            .is_some_and(|&(arrival, _)| arrival <= now)
        {
            let (arrival, s) = in_flight.pop_front().unwrap();
            builder.on_arrival(s, at(arrival + receiver_offset_us));
        }

        if now_us >= next_feedback_us {
            next_feedback_us += scenario.feedback_interval_us;
            while let Some(n) = builder.write(&mut buf).unwrap() {
                let back = now_us + scenario.one_way_delay_us as i64;
                returning.push_back((back, buf[..n].to_vec()));
            }
        }

        while returning.front().is_some_and(|(t, _)| *t <= now_us) {
            let (_, packet) = returning.pop_front().unwrap();
            let Ok(RtcpPacket::TransportCc(feedback)) = RtcpPacket::parse(&packet) else {
                panic!("the builder wrote something else");
            };
            estimator.on_feedback(&feedback, at(now)).unwrap();
            if let Some(result) = estimator.clusters().take_result() {
                prober.on_result(at(now), result);
            }
            // As the transport does after each feedback.
            prober.on_estimate(at(now), estimator.estimate_bps());
        }

        if now_ms % 100 == 0 {
            trace.samples.push(Sample {
                t: now / 1e6,
                estimate: estimator.estimate_bps() as f64,
                capacity: (scenario.capacity)(now / 1e6),
                queue_ms: (link_free_us - now).max(0.0) / 1000.0,
                sent_bps: std::mem::take(&mut sent_bits) * 10.0,
                layer_bps: layer.map(|(sent, _)| sent),
                stats: estimator.stats(),
            });
        }
    }
    trace.probes = prober.stats();
    trace
}
