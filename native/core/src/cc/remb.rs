//! Receive-side estimation for a sender that negotiated REMB and not transport-cc
//! (draft-alvestrand-rmcat-remb; GCC's receive-side variant): the same delay-based detector and
//! rate controller as the send-side [`super::Estimator`], fed by the sender's abs-send-time header
//! extension and the arrival times here, with the incoming bitrate where the send side has the
//! acknowledged one. The estimate goes back to the sender as REMB, once a second, or at once when it
//! falls 3 % below the last one sent (libwebrtc's rule).

use std::time::Duration;

use super::estimator::{AckedBitrate, DelayDetector, RateControl, Throughput};
use super::{micros, EstimatorConfig};

/// abs-send-time is 6.18 fixed point seconds in 24 bits: it wraps every 64 s.
const ABS_SEND_TIME_BITS: u32 = 24;
const ABS_SEND_TIME_FRACTION: u32 = 18;
/// How often REMB is sent without a decrease, and how much of a decrease sends one at once.
const REMB_INTERVAL_US: i64 = 1_000_000;
const REMB_DECREASE: f64 = 0.97;
/// The response time assumed without an RTT (the receive side does not know it).
const ASSUMED_RTT_US: i64 = 100_000;

/// The receive-side estimate of one sender's transport.
#[derive(Debug)]
pub struct ReceiveEstimator {
    config: EstimatorConfig,
    delay: DelayDetector,
    rate: RateControl,
    incoming: AckedBitrate,
    /// The last abs-send-time, raw and unwrapped (in its 2^-18 s units).
    send_time: Option<(u32, i64)>,
    packet_bits: f64,
    last_update_us: Option<i64>,
    /// The last REMB: when, and what it said.
    sent: Option<(i64, u64)>,
    packets: u64,
}

impl ReceiveEstimator {
    pub fn new(config: EstimatorConfig) -> Self {
        let min = config.min_bps.max(1) as f64;
        let initial = (config.initial_bps as f64).clamp(min, (config.max_bps as f64).max(min));
        ReceiveEstimator {
            config,
            delay: DelayDetector::new(),
            rate: RateControl::new(initial),
            incoming: AckedBitrate::new(),
            send_time: None,
            packet_bits: 1200.0 * 8.0,
            last_update_us: None,
            sent: None,
            packets: 0,
        }
    }

    /// The estimate, bit/s.
    pub fn estimate_bps(&self) -> u64 {
        self.rate.rate as u64
    }

    /// What the sender sent over the last 500 ms, as it arrived, once known.
    pub fn incoming_bps(&self) -> Option<u64> {
        self.incoming.rate_bps().map(|r| r as u64)
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// A packet of `size` bytes that arrived at `at` with abs-send-time `abs_send_time` (the
    /// extension's 24 bits).
    pub fn on_packet(&mut self, at: Duration, abs_send_time: u32, size: usize) {
        let raw = abs_send_time & ((1 << ABS_SEND_TIME_BITS) - 1);
        let unwrapped = match self.send_time {
            None => i64::from(raw),
            Some((last_raw, last)) => {
                // The step to the nearest value: sign-extend the 24-bit difference.
                let step = ((raw.wrapping_sub(last_raw) << 8) as i32) >> 8;
                last + i64::from(step)
            }
        };
        self.send_time = Some((raw, unwrapped));
        let send_us = (unwrapped * 1_000_000) >> ABS_SEND_TIME_FRACTION;
        let arrival_us = micros(at);
        self.packets += 1;
        self.incoming.add(arrival_us, size as u64);
        self.packet_bits = 0.95 * self.packet_bits + 0.05 * size as f64 * 8.0;
        self.delay.on_packet(send_us, arrival_us);
    }

    /// The rate controller's step at `now`, and the REMB bitrate to send now if one is due.
    pub fn poll_remb(&mut self, now: Duration) -> Option<u64> {
        let now_us = micros(now);
        let incoming = self.incoming.rate_bps()?;
        // The controller steps at most every 25 ms, as a feedback interval would pace it.
        if self.last_update_us.is_some_and(|t| now_us - t < 25_000) {
            return None;
        }
        self.last_update_us = Some(now_us);
        let usage = self.delay.take_usage();
        self.rate.update(
            usage,
            Throughput {
                acked: Some(incoming),
                sent: None,
                standing_us: None,
            },
            now_us,
            ASSUMED_RTT_US,
            self.packet_bits,
            &self.config,
        );
        let min = self.config.min_bps.max(1) as f64;
        let max = (self.config.max_bps as f64).max(min);
        self.rate.rate = self.rate.rate.clamp(min, max);
        let estimate = self.estimate_bps();
        let due = match self.sent {
            None => true,
            Some((at, last)) => {
                now_us - at >= REMB_INTERVAL_US || (estimate as f64) < last as f64 * REMB_DECREASE
            }
        };
        if !due {
            return None;
        }
        self.sent = Some((now_us, estimate));
        Some(estimate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// abs-send-time of a time in microseconds (wrapping at 64 s).
    fn abs(us: i64) -> u32 {
        (((us << ABS_SEND_TIME_FRACTION) / 1_000_000) as u32) & 0x00ff_ffff
    }

    /// A sender at `rate_bps` through a bottleneck of `capacity_bps` (a FIFO, no loss) for
    /// `seconds`, starting at send time `start_us` (to cross the 64 s wrap); the REMBs sent, as
    /// (time in s, bit/s).
    fn run(rate_bps: f64, capacity_bps: f64, seconds: f64, start_us: i64) -> Vec<(f64, u64)> {
        let mut e = ReceiveEstimator::new(EstimatorConfig::default());
        let size = 1200usize;
        let gap_us = size as f64 * 8.0 / rate_bps * 1e6;
        let mut link_free = 0.0f64;
        let mut out = Vec::new();
        let mut t = 0.0;
        let mut next_poll = 0.0;
        while t < seconds * 1e6 {
            link_free = link_free.max(t) + size as f64 * 8.0 / capacity_bps * 1e6;
            let arrival = link_free + 20_000.0;
            e.on_packet(
                Duration::from_micros(arrival as u64),
                abs(start_us + t as i64),
                size,
            );
            while next_poll <= arrival {
                if let Some(bps) = e.poll_remb(Duration::from_micros(next_poll as u64)) {
                    out.push((next_poll / 1e6, bps));
                }
                next_poll += 10_000.0;
            }
            t += gap_us;
        }
        out
    }

    #[test]
    fn an_uncongested_sender_is_told_at_least_what_it_sends_once_a_second() {
        let rembs = run(1e6, 10e6, 10.0, 0);
        assert!(rembs.len() >= 9 && rembs.len() <= 11, "{rembs:?}");
        assert!(rembs.iter().all(|&(_, b)| b as f64 >= 1e6), "{rembs:?}");
        for pair in rembs.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= 0.99, "{rembs:?}");
        }
    }

    #[test]
    fn an_overusing_sender_is_told_at_once_to_slow_down_to_the_link() {
        // 2 Mbit/s into a 1 Mbit/s link: the queue grows, the delay trend says over-use.
        let rembs = run(2e6, 1e6, 5.0, 0);
        let low = rembs.iter().find(|&&(_, b)| b <= 1_000_000);
        assert!(low.is_some_and(|&(t, _)| t < 3.0), "{rembs:?}");
        // Down to 0.85 x what arrives, about the link.
        assert!(low.is_some_and(|&(_, b)| b >= 700_000), "{rembs:?}");
    }

    #[test]
    fn the_send_time_wraps_at_64_s() {
        // Across the wrap an unwrapped clock would jump back 64 s: the detector would see a huge
        // negative delay step and hold. Unwrapped properly, nothing happens.
        let wrapped = run(1e6, 10e6, 10.0, 60_000_000);
        let plain = run(1e6, 10e6, 10.0, 0);
        assert_eq!(wrapped, plain);
    }

    #[test]
    fn no_remb_before_the_incoming_rate_is_known() {
        let mut e = ReceiveEstimator::new(EstimatorConfig::default());
        e.on_packet(Duration::from_millis(0), 0, 1200);
        assert_eq!(e.poll_remb(Duration::from_millis(10)), None);
        assert_eq!(e.packets(), 1);
    }
}
