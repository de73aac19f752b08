//! Send-side bandwidth estimation for one receiver, in the manner of Google Congestion Control
//! (draft-ietf-rmcat-gcc-02), fed by the transport-cc feedback the receiver sends.
//!
//! The bridge is the sender of what it forwards. For each packet it sends it records the
//! transport-wide sequence number, size and send time; each feedback then says which of them
//! arrived, and when on the receiver's clock. Two estimates come of that:
//!
//! - delay-based (draft 5): packets are grouped into bursts sent within 5 ms; the change in delay
//!   between consecutive groups (arrival gap minus send gap) is accumulated, smoothed, and its
//!   trend over the last 20 groups taken by least squares. The trend, scaled, is compared with a
//!   threshold that follows it (fast when it is outside, slowly inside) to say over-use, normal or
//!   under-use. A rate controller (draft 5.5) multiplies the rate by up to 1.08 a second while far
//!   from the link's capacity (or a packet per response time, if more), adds about one packet per
//!   response time (100 ms + RTT) near it, holds on under-use, and on over-use drops to 0.85 of
//!   the bitrate the receiver acknowledged.
//! - loss-based (draft 6): the fraction of packets lost over at least 20 reported and a second:
//!   above 10 % the rate is cut by half that fraction, below 2 % it may grow, in between it holds.
//!
//! The estimate is the smaller of the two, within the configured bounds.

use std::time::Duration;

use super::probe::ClusterMeter;
use super::{micros, SeqUnwrapper};
use crate::rtcp::{RtcpError, TransportCc};

/// Sent packets remembered for matching feedback (a power of two). Feedback about a packet more
/// than this many sequence numbers behind the newest sent is ignored.
pub const HISTORY: usize = 4096;

/// Packets sent within this of a group's first belong to the group (draft 5.2, burst_time).
const BURST_US: i64 = 5_000;
/// A group joined by the arrival-burst rule ends after this long regardless.
const MAX_GROUP_US: i64 = 100_000;
/// An arrival gap this far from its send gap means a clock jump: the delay history restarts.
const MAX_DELTA_GAP_US: i64 = 3_000_000;

/// Trend window (groups), smoothing of the accumulated delay, and the gain the slope is scaled by
/// (with the number of samples, up to 60) before it meets the threshold.
const TREND_WINDOW: usize = 20;
const TREND_SMOOTHING: f64 = 0.9;
const TREND_GAIN: f64 = 4.0;
const TREND_MAX_SAMPLES: f64 = 60.0;

/// Adaptive threshold (draft 5.4): start, bounds, gains up and down (per ms), the largest step in
/// time one update takes, and how far outside it a trend is ignored as a spike.
const THRESHOLD_START_MS: f64 = 12.5;
const THRESHOLD_MIN_MS: f64 = 6.0;
const THRESHOLD_MAX_MS: f64 = 600.0;
const THRESHOLD_GAIN_UP: f64 = 0.01;
const THRESHOLD_GAIN_DOWN: f64 = 0.000_18;
const THRESHOLD_MAX_STEP_MS: f64 = 100.0;
const THRESHOLD_SPIKE_MS: f64 = 15.0;
/// The trend must stay above the threshold this long (draft 5.4, overuse_time_th).
const OVERUSE_TIME_MS: f64 = 10.0;

/// Acknowledged bitrate: arrivals are summed in buckets of 25 ms over the last 500 ms, and the
/// rate is trusted once it spans 100 ms.
const ACK_BUCKET_US: i64 = 25_000;
const ACK_BUCKETS: usize = 20;
const ACK_MIN_SPAN_US: i64 = 100_000;

/// Loss: the fraction is taken over at least this many reported packets, and at least this long
/// (us). Feedback comes every 50-100 ms; over so short an interval a burst of a few packets reads as
/// more than 10 % on a link that loses 5 % in bursts, with nothing queued, and every such burst cut
/// the estimate (impair-burst-5: 18 layer switches a minute). The draft's interval is that of the
/// receiver reports, about a second.
const LOSS_MIN_PACKETS: u32 = 20;
const LOSS_MIN_INTERVAL_US: i64 = 1_000_000;
const LOSS_HIGH: f64 = 0.10;
const LOSS_LOW: f64 = 0.02;
/// A probe's measured rate counts as carried by the link this long (us).
const PROBE_MEASURE_VALID_US: i64 = 2_000_000;
/// A loss-based cut goes no lower than this share of the acknowledged bitrate.
const LOSS_FLOOR_OF_ACKED: f64 = 0.85;
/// After a loss-based cut, the next waits this plus an RTT.
const LOSS_DECREASE_INTERVAL_US: i64 = 300_000;

/// Near-convergence additive increase: response time is this plus the RTT.
const RESPONSE_BASE_US: i64 = 100_000;
/// An over-use cuts again only after max(RTT, this), at most `MAX_DECREASE_INTERVAL_US`.
const MIN_DECREASE_INTERVAL_US: i64 = 100_000;
const MAX_DECREASE_INTERVAL_US: i64 = 300_000;
/// The rate never grows past 1.1 x the acknowledged bitrate + 10 kbit/s (draft 5.5 says 1.5; an
/// SFU's layers step, so a wide margin over what a receiver is sent only invites overshoot).
const ACKED_HEADROOM: f64 = 1.1;
const ACKED_HEADROOM_BPS: f64 = 10_000.0;
/// Smallest increase per update, bit/s.
const MIN_INCREASE_BPS: f64 = 1_000.0;
/// The link delivered what was sent when the acknowledged bitrate is at least this share of the
/// sent bitrate (both over 500 ms; windows apart by the path's delay differ by a few percent).
const DELIVERED_SHARE: f64 = 0.9;
/// An over-use shorter than this is taken for a passing dip (a radio's rate, a descheduled
/// receiver): its first cut backs off from the estimate; only a longer one cuts to what the link
/// delivered.
const SUSTAINED_OVERUSE_US: i64 = 400_000;
/// A link delivering under this share of what was sent is no passing dip: it is cut for at once.
const DIP_SHARE: f64 = 0.75;
/// A queue that has not drained below this for 500 ms is the sender's own, not jitter's.
const STANDING_QUEUE_US: i64 = 30_000;

/// Settings of one estimator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EstimatorConfig {
    /// The estimate before any feedback, bit/s.
    pub initial_bps: u64,
    /// Bounds of the estimate, bit/s.
    pub min_bps: u64,
    pub max_bps: u64,
    /// On over-use the delay-based rate drops to this times the acknowledged bitrate (draft 5.5,
    /// alpha; 0.85).
    pub decrease_factor: f64,
    /// Multiplicative increase per second far from convergence (draft 5.5, eta; 1.08).
    pub increase_per_second: f64,
}

impl Default for EstimatorConfig {
    /// Jitsi's defaults: 2.5 Mbit/s to start, between 30 kbit/s and 20 Mbit/s.
    fn default() -> Self {
        EstimatorConfig {
            initial_bps: 2_500_000,
            min_bps: 30_000,
            max_bps: 20_000_000,
            decrease_factor: 0.85,
            increase_per_second: 1.08,
        }
    }
}

/// What the delay signal says (draft 5.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BandwidthUsage {
    #[default]
    Normal,
    Overusing,
    Underusing,
}

/// The delay-based rate controller's state (draft 5.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RateControlState {
    #[default]
    Hold,
    Increase,
    Decrease,
}

/// A snapshot for metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EstimatorStats {
    pub estimate_bps: u64,
    pub delay_based_bps: u64,
    /// The loss-based limit: it grows while loss stays under 2 %, so it may sit far above the
    /// estimate when loss is not what limits.
    pub loss_based_bps: u64,
    /// What the receiver got over the last 500 ms of its clock, once known.
    pub acknowledged_bps: Option<u64>,
    /// What was sent over the last 500 ms (by send time), once known.
    pub sent_bps: Option<u64>,
    /// Loss fraction of the last loss interval (0 before one completes).
    pub loss_fraction: f64,
    /// Smoothed round-trip time: from sending a packet to the feedback reporting it (so it
    /// includes the receiver's wait before sending feedback).
    pub rtt: Option<Duration>,
    pub usage: BandwidthUsage,
    pub rate_control: RateControlState,
    /// The scaled delay trend and the threshold it is compared with, in ms.
    pub trend_ms: f64,
    pub threshold_ms: f64,
    /// Feedback packets taken, refused as malformed, and reported statuses that matched no
    /// remembered sent packet.
    pub feedbacks: u64,
    pub malformed_feedbacks: u64,
    pub unknown_packets: u64,
    /// Probe results that raised the estimate.
    pub probe_raises: u64,
    /// Over-use readings in feedback on probe clusters.
    pub probe_overuses: u64,
}

/// Report state of a sent packet (`SLOT_EMPTY`: no packet in the slot).
const REPORT_NONE: u8 = 0;
const REPORT_LOST: u8 = 1;
const REPORT_RECEIVED: u8 = 2;
const SLOT_EMPTY: u8 = 3;

#[derive(Clone, Copy, Debug)]
struct SentPacket {
    send_us: i64,
    /// Low 32 bits of the unwrapped sequence number, to tell this packet from one a lap away.
    tag: u32,
    size: u16,
    report: u8,
    /// The probe cluster it was sent in (0: none).
    cluster: u8,
}

const EMPTY: SentPacket = SentPacket {
    send_us: 0,
    tag: 0,
    size: 0,
    report: SLOT_EMPTY,
    cluster: 0,
};

/// The send-side estimator of one receiver. Memory is fixed at construction.
#[derive(Debug)]
pub struct Estimator {
    config: EstimatorConfig,
    sent: Box<[SentPacket]>,
    sent_seq: SeqUnwrapper,
    /// Highest sequence number whose arrival went into the delay filter, so that a packet
    /// reported late (after a newer one) does not go in out of order.
    last_delay_seq: u64,
    /// The receiver's 24-bit reference time, raw and unwrapped.
    reference: Option<(u32, i64)>,
    delay: DelayDetector,
    rate: RateControl,
    loss: LossBased,
    acked: AckedBitrate,
    queue: StandingQueue,
    /// What was sent over the last 500 ms (by send time).
    sent_rate: AckedBitrate,
    /// Smoothed packet size in bits, for the additive increase.
    packet_bits: f64,
    srtt_us: Option<i64>,
    estimate_bps: f64,
    feedbacks: u64,
    malformed_feedbacks: u64,
    unknown_packets: u64,
    /// Probe clusters being measured.
    clusters: ClusterMeter,
    /// Probe results that raised the estimate.
    probe_raises: u64,
    /// Over-use readings in feedback on probe clusters.
    probe_overuses: u64,
    /// The last probe's measured rate, bit/s, and when (us).
    probe_measured: Option<(f64, i64)>,
}

impl Estimator {
    pub fn new(config: EstimatorConfig) -> Self {
        let min = config.min_bps.max(1) as f64;
        let max = (config.max_bps as f64).max(min);
        let initial = (config.initial_bps as f64).clamp(min, max);
        Estimator {
            config,
            sent: vec![EMPTY; HISTORY].into_boxed_slice(),
            sent_seq: SeqUnwrapper::default(),
            last_delay_seq: 0,
            reference: None,
            delay: DelayDetector::new(),
            rate: RateControl::new(initial),
            loss: LossBased::new(initial),
            acked: AckedBitrate::new(),
            queue: StandingQueue::new(),
            sent_rate: AckedBitrate::new(),
            packet_bits: 1200.0 * 8.0,
            srtt_us: None,
            estimate_bps: initial,
            feedbacks: 0,
            malformed_feedbacks: 0,
            unknown_packets: 0,
            clusters: ClusterMeter::default(),
            probe_raises: 0,
            probe_overuses: 0,
            probe_measured: None,
        }
    }

    /// The probe clusters: the prober opens and closes them; packets sent while one is open join it.
    pub fn clusters(&mut self) -> &mut ClusterMeter {
        &mut self.clusters
    }

    pub fn config(&self) -> &EstimatorConfig {
        &self.config
    }

    /// The available bitrate estimate, bit/s.
    pub fn estimate_bps(&self) -> u64 {
        self.estimate_bps as u64
    }

    /// Loss fraction of the last completed loss interval.
    pub fn loss_fraction(&self) -> f64 {
        self.loss.last_fraction
    }

    /// The queue the link holds lately and does not drain (`StandingQueue`), once known.
    pub fn standing_queue(&self) -> Option<Duration> {
        self.queue
            .standing_us()
            .map(|us| Duration::from_micros(us.max(0) as u64))
    }

    /// Smoothed round-trip time (send to feedback arrival), once a feedback reported a packet.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt_us
            .map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0)))
    }

    /// Bitrate the receiver acknowledged over its last 500 ms, once known.
    pub fn acknowledged_bps(&self) -> Option<u64> {
        self.acked.rate_bps().map(|r| r as u64)
    }

    /// Times a probe raised the estimate so far.
    pub fn probe_raises(&self) -> u64 {
        self.probe_raises
    }

    pub fn stats(&self) -> EstimatorStats {
        EstimatorStats {
            estimate_bps: self.estimate_bps(),
            delay_based_bps: self.rate.rate as u64,
            loss_based_bps: self.loss.rate as u64,
            acknowledged_bps: self.acknowledged_bps(),
            sent_bps: self.sent_rate.rate_bps().map(|r| r as u64),
            loss_fraction: self.loss.last_fraction,
            rtt: self.rtt(),
            usage: self.delay.usage,
            rate_control: self.rate.state,
            trend_ms: self.delay.trend,
            threshold_ms: self.delay.threshold,
            feedbacks: self.feedbacks,
            malformed_feedbacks: self.malformed_feedbacks,
            unknown_packets: self.unknown_packets,
            probe_raises: self.probe_raises,
            probe_overuses: self.probe_overuses,
        }
    }

    /// Records a packet sent with transport-wide sequence number `seq`, `size` bytes (the RTP
    /// packet as sent), at `at`.
    pub fn on_packet_sent(&mut self, seq: u16, size: usize, at: Duration) {
        let s = self.sent_seq.update(seq);
        let send_us = micros(at);
        let size = u16::try_from(size).unwrap_or(u16::MAX);
        let cluster = self.clusters.on_sent(send_us, size);
        self.sent_rate.add(send_us, u64::from(size));
        self.sent[(s % HISTORY as u64) as usize] = SentPacket {
            send_us,
            tag: s as u32,
            size,
            report: REPORT_NONE,
            cluster,
        };
    }

    /// The remembered packet of a reported sequence number, with its unwrapped value.
    fn lookup(&self, seq: u16) -> Option<(u64, usize)> {
        let highest = self.sent_seq.highest()?;
        let s = self.sent_seq.peek(seq);
        if s > highest || highest - s >= HISTORY as u64 {
            return None;
        }
        let i = (s % HISTORY as u64) as usize;
        let p = &self.sent[i];
        (p.report != SLOT_EMPTY && p.tag == s as u32).then_some((s, i))
    }

    /// Takes one transport-cc feedback from the receiver, which arrived at `now`. A feedback whose
    /// chunks or deltas are malformed is refused whole (counted) and changes nothing.
    pub fn on_feedback(
        &mut self,
        feedback: &TransportCc<'_>,
        now: Duration,
    ) -> Result<(), RtcpError> {
        // A few bytes of run length chunks can claim 65535 statuses; no more than `HISTORY` can
        // match a packet remembered, so no more are read.
        let statuses = usize::from(feedback.packet_status_count);
        if let Some(Err(e)) = feedback.packets().take(HISTORY).find(Result::is_err) {
            self.malformed_feedbacks += 1;
            return Err(e);
        }
        self.feedbacks += 1;
        let now_us = micros(now);

        // The reference time is 24 bits of 64 ms; unwrap it against the previous feedback's.
        let raw = (feedback.reference_time as u32) & 0x00ff_ffff;
        let reference = match self.reference {
            None => i64::from(feedback.reference_time),
            Some((last_raw, last)) => {
                let step = ((raw.wrapping_sub(last_raw) << 8) as i32) >> 8;
                last + i64::from(step)
            }
        };
        self.reference = Some((raw, reference));
        let mut arrival_us = reference * 64_000;

        let mut newest_send_us: Option<i64> = None;
        let mut probed = false;
        self.unknown_packets += statuses.saturating_sub(HISTORY) as u64;
        for status in feedback.packets().take(HISTORY).flatten() {
            let found = self.lookup(status.sequence_number);
            let Some(delta) = status.delta_ticks else {
                match found {
                    Some((_, i)) if self.sent[i].report == REPORT_NONE => {
                        let p = &mut self.sent[i];
                        p.report = REPORT_LOST;
                        self.loss.lost += 1;
                        if p.cluster != 0 {
                            self.clusters.on_report(p.cluster, p.size, None);
                        }
                    }
                    Some(_) => {}
                    None => self.unknown_packets += 1,
                }
                continue;
            };
            arrival_us += i64::from(delta) * 250;
            let Some((s, i)) = found else {
                self.unknown_packets += 1;
                continue;
            };
            let p = self.sent[i];
            match p.report {
                REPORT_RECEIVED => continue,
                REPORT_LOST => self.loss.lost = self.loss.lost.saturating_sub(1),
                _ => {
                    if p.cluster != 0 {
                        probed = true;
                        self.clusters.on_report(p.cluster, p.size, Some(arrival_us));
                    }
                }
            }
            self.sent[i].report = REPORT_RECEIVED;
            self.loss.received += 1;
            self.acked.add(arrival_us, u64::from(p.size));
            self.queue.add(p.send_us, arrival_us);
            self.packet_bits = 0.95 * self.packet_bits + 0.05 * f64::from(p.size) * 8.0;
            newest_send_us = Some(newest_send_us.map_or(p.send_us, |n| n.max(p.send_us)));
            if s > self.last_delay_seq {
                self.last_delay_seq = s;
                self.delay.on_packet(p.send_us, arrival_us);
            }
        }

        if let Some(send_us) = newest_send_us.filter(|&t| t <= now_us) {
            let sample = now_us - send_us;
            self.srtt_us = Some(self.srtt_us.map_or(sample, |s| (7 * s + sample) / 8));
        }
        let rtt_us = self.srtt_us.unwrap_or(RESPONSE_BASE_US);
        let acked = self.acked.rate_bps();
        let usage = self.delay.take_usage();
        if probed && usage == BandwidthUsage::Overusing {
            self.probe_overuses += 1;
        }
        // What the link carried: the acknowledged bitrate, or more if a recent probe measured more
        // (a receiver sent less than the link carries acknowledges little, and an over-use -- a
        // failed probe's own, say -- would cut to 0.85 x that).
        let measured = self
            .probe_measured
            .filter(|&(_, at)| now_us - at <= PROBE_MEASURE_VALID_US)
            .map(|(bps, _)| bps);
        let carried = match (acked, measured) {
            (Some(a), Some(m)) => Some(a.max(m)),
            (a, m) => a.or(m),
        };
        self.rate.update(
            usage,
            Throughput {
                acked: carried,
                sent: self.sent_rate.rate_bps(),
                standing_us: self.queue.standing_us(),
            },
            now_us,
            rtt_us,
            self.packet_bits,
            &self.config,
        );
        self.loss
            .update(now_us, rtt_us, self.estimate_bps, carried, &self.config);

        let min = self.config.min_bps.max(1) as f64;
        let max = (self.config.max_bps as f64).max(min);
        self.rate.rate = self.rate.rate.clamp(min, max);
        self.loss.rate = self.loss.rate.clamp(min, max);
        self.estimate_bps = self.rate.rate.min(self.loss.rate);
        if let Some(result) = self.clusters.finish(now_us) {
            if let Some(bps) = result.bps {
                self.probe_measured = Some((bps as f64, now_us));
                self.on_probe_result(bps as f64, min, max);
            }
        }
        Ok(())
    }

    /// A probe showed the link carrying `bps`: an estimate below it rises to it at once, both parts
    /// (GCC's probe controller does the same), and the capacity the delay-based part remembered is
    /// forgotten, since the link is not where it was.
    fn on_probe_result(&mut self, bps: f64, min: f64, max: f64) {
        let bps = bps.clamp(min, max);
        if bps <= self.estimate_bps {
            return;
        }
        self.probe_raises += 1;
        self.rate.rate = self.rate.rate.max(bps);
        self.rate.link.reset();
        self.loss.rate = self.loss.rate.max(bps);
        self.estimate_bps = self.rate.rate.min(self.loss.rate);
    }
}

/// A group of packets sent within one burst.
#[derive(Clone, Copy, Debug)]
struct Group {
    first_send_us: i64,
    last_send_us: i64,
    first_arrival_us: i64,
    last_arrival_us: i64,
}

impl Group {
    fn new(send_us: i64, arrival_us: i64) -> Self {
        Group {
            first_send_us: send_us,
            last_send_us: send_us,
            first_arrival_us: arrival_us,
            last_arrival_us: arrival_us,
        }
    }

    /// Whether a packet belongs to this group: sent within the burst time of its first, or
    /// arriving in a burst (within the burst time of the last arrival, with less delay than the
    /// last packet: queued behind cross traffic and released together; draft 5.2).
    fn takes(&self, send_us: i64, arrival_us: i64) -> bool {
        if send_us - self.first_send_us <= BURST_US {
            return true;
        }
        let arrival_gap = arrival_us - self.last_arrival_us;
        let send_gap = send_us - self.last_send_us;
        arrival_gap <= BURST_US
            && arrival_gap - send_gap < 0
            && arrival_us - self.first_arrival_us < MAX_GROUP_US
    }
}

/// Inter-group delay variation, its trend, and the over-use detector with its threshold.
#[derive(Debug)]
pub(super) struct DelayDetector {
    current: Option<Group>,
    previous: Option<Group>,
    /// Arrival of the first group in the trend window's time base, us.
    origin_us: Option<i64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    /// (arrival ms since origin, smoothed accumulated delay ms), a ring of `TREND_WINDOW`.
    points: [(f64, f64); TREND_WINDOW],
    point_count: usize,
    point_head: usize,
    samples: u32,
    /// Scaled trend, the previous one, and the threshold, in ms.
    trend: f64,
    previous_trend: f64,
    threshold: f64,
    last_threshold_us: Option<i64>,
    /// Time (ms) the trend has stayed above the threshold, and the readings that did.
    overuse_ms: Option<f64>,
    overuse_count: u32,
    usage: BandwidthUsage,
    /// Over-use declared since the estimator last asked.
    overuse_seen: bool,
}

impl DelayDetector {
    pub(super) fn new() -> Self {
        DelayDetector {
            current: None,
            previous: None,
            origin_us: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            points: [(0.0, 0.0); TREND_WINDOW],
            point_count: 0,
            point_head: 0,
            samples: 0,
            trend: 0.0,
            previous_trend: 0.0,
            threshold: THRESHOLD_START_MS,
            last_threshold_us: None,
            overuse_ms: None,
            overuse_count: 0,
            usage: BandwidthUsage::Normal,
            overuse_seen: false,
        }
    }

    /// The usage to act on for one feedback: over-use if it was declared at any group since the
    /// last call, else the current state.
    pub(super) fn take_usage(&mut self) -> BandwidthUsage {
        let seen = std::mem::take(&mut self.overuse_seen);
        if seen {
            BandwidthUsage::Overusing
        } else {
            self.usage
        }
    }

    /// One acknowledged packet, in send order.
    pub(super) fn on_packet(&mut self, send_us: i64, arrival_us: i64) {
        let Some(mut group) = self.current else {
            self.current = Some(Group::new(send_us, arrival_us));
            return;
        };
        if send_us < group.first_send_us {
            // Sent before the group began: out of order, no use to the delay signal.
            return;
        }
        if group.takes(send_us, arrival_us) {
            group.last_send_us = group.last_send_us.max(send_us);
            group.last_arrival_us = group.last_arrival_us.max(arrival_us);
            self.current = Some(group);
            return;
        }
        if let Some(previous) = self.previous {
            self.on_group(&previous, &group);
        }
        self.previous = Some(group);
        self.current = Some(Group::new(send_us, arrival_us));
    }

    fn reset_trend(&mut self) {
        self.origin_us = None;
        self.accumulated_ms = 0.0;
        self.smoothed_ms = 0.0;
        self.point_count = 0;
        self.point_head = 0;
        self.samples = 0;
        self.trend = 0.0;
        self.previous_trend = 0.0;
    }

    /// A completed group after `previous`: its delay variation goes into the trend.
    fn on_group(&mut self, previous: &Group, group: &Group) {
        let send_gap_us = group.last_send_us - previous.last_send_us;
        let arrival_gap_us = group.last_arrival_us - previous.last_arrival_us;
        if (arrival_gap_us - send_gap_us).abs() > MAX_DELTA_GAP_US {
            // The receiver's clock jumped: the delay history means nothing now.
            self.reset_trend();
            return;
        }
        if arrival_gap_us < 0 {
            // Reordered across groups: no delay sample.
            return;
        }
        let variation_ms = (arrival_gap_us - send_gap_us) as f64 / 1000.0;
        self.accumulated_ms += variation_ms;
        self.smoothed_ms =
            TREND_SMOOTHING * self.smoothed_ms + (1.0 - TREND_SMOOTHING) * self.accumulated_ms;
        let origin = *self.origin_us.get_or_insert(group.last_arrival_us);
        let x = (group.last_arrival_us - origin) as f64 / 1000.0;
        self.points[self.point_head] = (x, self.smoothed_ms);
        self.point_head = (self.point_head + 1) % TREND_WINDOW;
        self.point_count = (self.point_count + 1).min(TREND_WINDOW);
        self.samples = self.samples.saturating_add(1);
        if self.point_count == TREND_WINDOW {
            if let Some(slope) = slope(&self.points) {
                self.trend = slope * f64::from(self.samples).min(TREND_MAX_SAMPLES) * TREND_GAIN;
            }
        }
        self.detect(send_gap_us as f64 / 1000.0, group.last_arrival_us);
    }

    /// Over-use detection against the adaptive threshold (draft 5.4).
    fn detect(&mut self, send_gap_ms: f64, arrival_us: i64) {
        if self.point_count < TREND_WINDOW {
            return;
        }
        let trend = self.trend;
        if trend > self.threshold {
            let over = match self.overuse_ms {
                None => send_gap_ms / 2.0,
                Some(t) => t + send_gap_ms,
            };
            self.overuse_ms = Some(over);
            self.overuse_count += 1;
            if over > OVERUSE_TIME_MS && self.overuse_count > 1 && trend >= self.previous_trend {
                self.overuse_ms = Some(0.0);
                self.overuse_count = 0;
                self.usage = BandwidthUsage::Overusing;
                self.overuse_seen = true;
            }
        } else if trend < -self.threshold {
            self.overuse_ms = None;
            self.overuse_count = 0;
            self.usage = BandwidthUsage::Underusing;
        } else {
            self.overuse_ms = None;
            self.overuse_count = 0;
            self.usage = BandwidthUsage::Normal;
        }
        self.previous_trend = trend;
        self.adapt_threshold(trend, arrival_us);
    }

    fn adapt_threshold(&mut self, trend: f64, arrival_us: i64) {
        let last = self.last_threshold_us.replace(arrival_us);
        let magnitude = trend.abs();
        // A spike far outside says nothing about the noise level.
        if magnitude > self.threshold + THRESHOLD_SPIKE_MS {
            return;
        }
        let Some(last) = last else { return };
        let step_ms = ((arrival_us - last) as f64 / 1000.0).clamp(0.0, THRESHOLD_MAX_STEP_MS);
        let gain = if magnitude < self.threshold {
            THRESHOLD_GAIN_DOWN
        } else {
            THRESHOLD_GAIN_UP
        };
        self.threshold += gain * (magnitude - self.threshold) * step_ms;
        self.threshold = self.threshold.clamp(THRESHOLD_MIN_MS, THRESHOLD_MAX_MS);
    }
}

/// Least-squares slope of the points, or `None` when they share one x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

/// Mean and spread of the acknowledged bitrate at the moments of over-use: where the link's
/// capacity lies. Near it the rate grows additively, far from it multiplicatively (draft 5.5).
#[derive(Debug, Default)]
struct LinkCapacity {
    /// Mean, kbit/s, and variance normalised by the mean.
    mean_kbps: Option<f64>,
    variance: f64,
}

impl LinkCapacity {
    const SMOOTHING: f64 = 0.05;
    const MIN_VARIANCE: f64 = 0.4;
    const MAX_VARIANCE: f64 = 2.5;

    fn deviation_kbps(&self, mean: f64) -> f64 {
        (self.variance * mean).sqrt()
    }

    /// Whether `bps` is within three deviations of the mean (false without a mean).
    fn near(&self, bps: f64) -> bool {
        self.mean_kbps
            .is_some_and(|m| (bps / 1000.0 - m).abs() <= 3.0 * self.deviation_kbps(m))
    }

    fn above(&self, bps: f64) -> bool {
        self.mean_kbps
            .is_some_and(|m| bps / 1000.0 > m + 3.0 * self.deviation_kbps(m))
    }

    fn sample(&mut self, bps: f64) {
        let x = bps / 1000.0;
        if !self.near(bps) {
            self.mean_kbps = None;
        }
        let mean = match self.mean_kbps {
            None => {
                self.variance = Self::MIN_VARIANCE;
                x
            }
            Some(m) => (1.0 - Self::SMOOTHING) * m + Self::SMOOTHING * x,
        };
        let spread = (mean - x) * (mean - x) / mean.max(1.0);
        self.variance = ((1.0 - Self::SMOOTHING) * self.variance + Self::SMOOTHING * spread)
            .clamp(Self::MIN_VARIANCE, Self::MAX_VARIANCE);
        self.mean_kbps = Some(mean);
    }

    fn reset(&mut self) {
        self.mean_kbps = None;
    }
}

/// What the link carried and what was sent to it, bit/s, over the last 500 ms (None: not known yet).
#[derive(Clone, Copy, Debug)]
pub(super) struct Throughput {
    pub(super) acked: Option<f64>,
    pub(super) sent: Option<f64>,
    /// The queueing delay that has not drained for 500 ms.
    pub(super) standing_us: Option<i64>,
}

/// The delay-based AIMD rate controller (draft 5.5).
#[derive(Debug)]
pub(super) struct RateControl {
    pub(super) rate: f64,
    state: RateControlState,
    last_update_us: Option<i64>,
    last_decrease_us: Option<i64>,
    /// When the over-use going on began, and whether it was cut for yet (None: none going on).
    overuse: Option<(i64, bool)>,
    /// The acked bitrate when the link last showed no over-use.
    acked_before: Option<f64>,
    link: LinkCapacity,
}

impl RateControl {
    pub(super) fn new(rate: f64) -> Self {
        RateControl {
            rate,
            state: RateControlState::Hold,
            last_update_us: None,
            last_decrease_us: None,
            overuse: None,
            acked_before: None,
            link: LinkCapacity::default(),
        }
    }

    pub(super) fn update(
        &mut self,
        usage: BandwidthUsage,
        throughput: Throughput,
        now_us: i64,
        rtt_us: i64,
        packet_bits: f64,
        config: &EstimatorConfig,
    ) {
        let Throughput {
            acked,
            sent,
            standing_us,
        } = throughput;
        let dt_s = self
            .last_update_us
            .map_or(0.0, |t| ((now_us - t) as f64 / 1e6).clamp(0.0, 1.0));
        self.last_update_us = Some(now_us);

        // Draft 5.5's state table: over-use always decreases; under-use holds; normal increases,
        // except right after a decrease, when it holds first.
        self.state = match (usage, self.state) {
            (BandwidthUsage::Overusing, _) => RateControlState::Decrease,
            (BandwidthUsage::Underusing, _) => RateControlState::Hold,
            (BandwidthUsage::Normal, RateControlState::Decrease) => RateControlState::Hold,
            (BandwidthUsage::Normal, _) => RateControlState::Increase,
        };
        self.overuse = match usage {
            BandwidthUsage::Overusing => self.overuse.or(Some((now_us, false))),
            _ => {
                self.acked_before = acked.or(self.acked_before);
                None
            }
        };

        match self.state {
            RateControlState::Hold => {}
            RateControlState::Decrease => {
                let interval = rtt_us.clamp(MIN_DECREASE_INTERVAL_US, MAX_DECREASE_INTERVAL_US);
                if self.last_decrease_us.is_some_and(|t| now_us - t < interval) {
                    return;
                }
                let (since, cut) = self.overuse.unwrap_or((now_us, false));
                let drained = standing_us.is_none_or(|q| q < STANDING_QUEUE_US);
                let delivered_all = |a: f64| {
                    drained && sent.is_some_and(|s| s < self.rate && a >= DELIVERED_SHARE * s)
                };
                // Backing off from the estimate, no lower than the headroom of what the link
                // delivered, now or before this over-use (while it lasts, late packets lower
                // the acked bitrate now).
                let before = self.acked_before.unwrap_or(0.0);
                let back_off = |rate: f64, a: f64| {
                    let floor = ACKED_HEADROOM * a.max(before) + ACKED_HEADROOM_BPS;
                    rate.min((config.decrease_factor * rate).max(floor))
                };
                let sustained = now_us - since >= SUSTAINED_OVERUSE_US;
                match acked {
                    // Sending below the estimate, and the link delivered all of it: the delay did
                    // not come from this sender filling the link (jitter on a busy receiver or
                    // path), and cutting to 0.85 x what it sends would take away a layer the link
                    // carries. Should the over-use be real, it lasts, or what is delivered falls
                    // behind what is sent, and the next cut is the draft's; loss cuts as well.
                    Some(a) if delivered_all(a) => {
                        let floor = ACKED_HEADROOM * a + ACKED_HEADROOM_BPS;
                        self.rate = self
                            .rate
                            .min((config.decrease_factor * self.rate).max(floor));
                    }
                    // The link delivered less than was sent, but only for a moment so far and
                    // not much less: a passing dip queues what is sent and delivers it late,
                    // which reads as a link carrying less than it does (0.85 x that took a layer
                    // at each such dip in the QoE runs). One back-off, then see whether it lasts.
                    Some(a)
                        if !sustained && drained && sent.is_some_and(|s| a >= DIP_SHARE * s) =>
                    {
                        if cut {
                            return;
                        }
                        self.rate = back_off(self.rate, a);
                    }
                    // It lasted, or the link delivered far less than was sent: it is the
                    // bottleneck, and what it delivered is its capacity (draft 5.5).
                    Some(a) => {
                        self.link.sample(a);
                        self.rate = self.rate.min(config.decrease_factor * a);
                    }
                    None => self.rate *= config.decrease_factor,
                }
                self.last_decrease_us = Some(now_us);
                self.overuse = Some((since, true));
            }
            RateControlState::Increase => {
                if self.link.above(self.rate) {
                    // Past where the link was: its capacity changed, search again.
                    self.link.reset();
                }
                // Near the link's capacity: about one packet per response time.
                let response_s = (RESPONSE_BASE_US + rtt_us.max(0)) as f64 / 1e6;
                let additive = packet_bits * dt_s / response_s;
                let increase = if self.link.mean_kbps.is_some() {
                    additive
                } else {
                    // Far from it: multiplicative, and never slower than near it (at low
                    // rates 8 % a second is less than a packet per response time).
                    let multiplicative = self.rate * (config.increase_per_second.powf(dt_s) - 1.0);
                    multiplicative.max(additive)
                };
                let mut rate = self.rate + increase.max(MIN_INCREASE_BPS * dt_s.min(1.0));
                if let Some(a) = acked {
                    // Never far above what actually got through (the sender may not be using
                    // what it is allowed).
                    rate = rate.min(self.rate.max(ACKED_HEADROOM * a + ACKED_HEADROOM_BPS));
                }
                self.rate = rate;
            }
        }
    }
}

/// The loss-based estimate (draft 6).
#[derive(Debug)]
struct LossBased {
    rate: f64,
    /// Packets reported lost and received in the interval being gathered.
    lost: u32,
    received: u32,
    /// When the interval being gathered began (the first update after the last one completed).
    since_us: Option<i64>,
    last_fraction: f64,
    last_update_us: Option<i64>,
    last_decrease_us: Option<i64>,
}

impl LossBased {
    fn new(rate: f64) -> Self {
        LossBased {
            rate,
            lost: 0,
            received: 0,
            since_us: None,
            last_fraction: 0.0,
            last_update_us: None,
            last_decrease_us: None,
        }
    }

    fn update(
        &mut self,
        now_us: i64,
        rtt_us: i64,
        estimate: f64,
        acked: Option<f64>,
        config: &EstimatorConfig,
    ) {
        let total = self.lost + self.received;
        let since = *self.since_us.get_or_insert(now_us);
        if total < LOSS_MIN_PACKETS || now_us - since < LOSS_MIN_INTERVAL_US {
            return;
        }
        let fraction = f64::from(self.lost) / f64::from(total);
        self.lost = 0;
        self.received = 0;
        self.since_us = Some(now_us);
        self.last_fraction = fraction;
        let dt_s = self
            .last_update_us
            .map_or(0.0, |t| ((now_us - t) as f64 / 1e6).clamp(0.0, 1.0));
        self.last_update_us = Some(now_us);
        if fraction > LOSS_HIGH {
            let wait = LOSS_DECREASE_INTERVAL_US + rtt_us.max(0);
            if self.last_decrease_us.is_none_or(|t| now_us - t >= wait) {
                self.last_decrease_us = Some(now_us);
                let current = self.rate.min(estimate);
                // Never below what demonstrably got through (as the delay-based part on over-use):
                // loss reported late, from an overshoot already over, would otherwise halve the rate
                // again and again (seen behind a 500 kbit/s cap: 2.5 Mbit/s down to 86 kbit/s).
                let floor = acked.map_or(0.0, |a| LOSS_FLOOR_OF_ACKED * a).min(current);
                self.rate = (current * (1.0 - 0.5 * fraction)).max(floor);
            }
        } else if fraction < LOSS_LOW {
            self.rate = self.rate * config.increase_per_second.powf(dt_s) + MIN_INCREASE_BPS * dt_s;
        }
    }
}

/// The queueing delay that stays: the least one-way delay of the last 500 ms above the least of
/// the last 10 s (the clocks' offset cancels out). A path that jitter delays drains between its
/// spikes; a link its sender keeps full does not.
#[derive(Debug)]
pub(super) struct StandingQueue {
    /// (bucket index, least one-way delay in it), by arrival: 250 ms and 1 s buckets.
    recent: [(i64, i64); 2],
    base: [(i64, i64); 10],
    newest: Option<i64>,
}

impl StandingQueue {
    const RECENT_US: i64 = 250_000;
    const BASE_US: i64 = 1_000_000;

    pub(super) fn new() -> Self {
        StandingQueue {
            recent: [(i64::MIN, 0); 2],
            base: [(i64::MIN, 0); 10],
            newest: None,
        }
    }

    fn put(ring: &mut [(i64, i64)], index: i64, delay_us: i64) {
        let slot = &mut ring[index.rem_euclid(ring.len() as i64) as usize];
        if slot.0 != index {
            *slot = (index, delay_us);
        } else {
            slot.1 = slot.1.min(delay_us);
        }
    }

    fn least(ring: &[(i64, i64)], newest: i64) -> Option<i64> {
        ring.iter()
            .filter(|(i, _)| *i <= newest && newest.saturating_sub(*i) < ring.len() as i64)
            .map(|&(_, d)| d)
            .min()
    }

    pub(super) fn add(&mut self, send_us: i64, arrival_us: i64) {
        let delay = arrival_us - send_us;
        self.newest = Some(self.newest.map_or(arrival_us, |n| n.max(arrival_us)));
        Self::put(
            &mut self.recent,
            arrival_us.div_euclid(Self::RECENT_US),
            delay,
        );
        Self::put(&mut self.base, arrival_us.div_euclid(Self::BASE_US), delay);
    }

    /// The standing queue, us (None: not known yet).
    pub(super) fn standing_us(&self) -> Option<i64> {
        let newest = self.newest?;
        let recent = Self::least(&self.recent, newest.div_euclid(Self::RECENT_US))?;
        let base = Self::least(&self.base, newest.div_euclid(Self::BASE_US))?;
        Some(recent - base)
    }
}

/// Bytes the receiver got over the last 500 ms of its clock, in 25 ms buckets.
#[derive(Debug)]
pub(super) struct AckedBitrate {
    bytes: [u64; ACK_BUCKETS],
    packets: [u32; ACK_BUCKETS],
    /// Index (arrival / bucket length) of the newest bucket.
    head: Option<i64>,
    first_arrival_us: i64,
    last_arrival_us: i64,
}

impl AckedBitrate {
    pub(super) fn new() -> Self {
        AckedBitrate {
            bytes: [0; ACK_BUCKETS],
            packets: [0; ACK_BUCKETS],
            head: None,
            first_arrival_us: 0,
            last_arrival_us: 0,
        }
    }

    pub(super) fn add(&mut self, arrival_us: i64, bytes: u64) {
        let index = arrival_us.div_euclid(ACK_BUCKET_US);
        let head = match self.head {
            None => {
                self.first_arrival_us = arrival_us;
                self.last_arrival_us = arrival_us;
                index
            }
            Some(h) if index > h => {
                let clear = (index - h).min(ACK_BUCKETS as i64);
                for i in 1..=clear {
                    let b = (h + i).rem_euclid(ACK_BUCKETS as i64) as usize;
                    self.bytes[b] = 0;
                    self.packets[b] = 0;
                }
                index
            }
            Some(h) if index <= h - ACK_BUCKETS as i64 => return,
            Some(h) => h,
        };
        self.head = Some(head);
        self.first_arrival_us = self.first_arrival_us.min(arrival_us);
        self.last_arrival_us = self.last_arrival_us.max(arrival_us);
        let b = index.rem_euclid(ACK_BUCKETS as i64) as usize;
        self.bytes[b] += bytes;
        self.packets[b] += 1;
    }

    pub(super) fn rate_bps(&self) -> Option<f64> {
        let head = self.head?;
        if self.last_arrival_us - self.first_arrival_us < ACK_MIN_SPAN_US {
            return None;
        }
        let window_start = (head + 1 - ACK_BUCKETS as i64) * ACK_BUCKET_US;
        let bytes: u64 = self.bytes.iter().sum();
        let packets: u32 = self.packets.iter().sum();
        if window_start >= self.first_arrival_us {
            // A full window: its packets spread over it from its start.
            let span = (self.last_arrival_us - window_start).max(ACK_BUCKET_US);
            return Some(bytes as f64 * 8.0 * 1e6 / span as f64);
        }
        // Since the first arrival: n packets span n - 1 gaps, so the first one's bytes are
        // left out of the rate.
        let span = self.last_arrival_us - self.first_arrival_us;
        let scale = f64::from(packets.saturating_sub(1)) / f64::from(packets.max(1));
        Some(bytes as f64 * scale * 8.0 * 1e6 / span as f64)
    }
}
