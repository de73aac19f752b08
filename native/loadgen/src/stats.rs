//! What workers report and the snapshot the controller builds from their reports (also as JSON).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::endpoint::EndpointState;
use crate::histogram::Histogram;
use crate::payload::Kind;
use crate::track::StreamTracker;

/// Aggregate counters of a worker (or of the whole load generator).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Media packets handed to the socket (SRTP-protected in secure mode), and their wire bytes.
    pub sent_packets: u64,
    pub sent_bytes: u64,
    /// RTCP compounds sent (sender reports) and received (decrypted).
    pub sent_rtcp: u64,
    pub recv_rtcp: u64,
    /// Media packets received that decrypted and verified (duplicates included), and their wire bytes.
    pub recv_packets: u64,
    pub recv_bytes: u64,
    /// SRTP/SRTCP unprotect failures.
    pub decrypt_failures: u64,
    /// SRTP/SRTCP that arrived before our DTLS handshake finished (the bridge, as DTLS server,
    /// has keys one flight earlier and may already send RTCP feedback).
    pub before_keys: u64,
    /// Decrypted packets whose RTP header or payload (magic, checksum) did not verify.
    pub integrity_failures: u64,
    /// Verified packets from our own endpoint or from another group: the forwarder misrouted them.
    pub misrouted: u64,
    /// Packets of a new stream beyond the per-endpoint stream limit (dropped uncounted otherwise).
    pub stream_limit: u64,
    /// Datagrams that are none of STUN, DTLS, RTP, RTCP for this endpoint.
    pub foreign: u64,
    /// Raw-mode hello packets received (the relay fans them out like media).
    pub hello: u64,
    pub protect_failures: u64,
    /// Datagrams the kernel refused to send.
    pub send_failed: u64,
    pub recv_errors: u64,
    pub setup_errors: u64,
    /// Media schedules reset after a stall instead of bursting to catch up.
    pub schedule_resets: u64,
    pub stun_in: u64,
    pub stun_out: u64,
    pub dtls_in: u64,
    pub dtls_out: u64,
    /// recvmmsg calls that returned data and the datagrams they returned; sendmmsg calls and datagrams.
    pub recv_calls: u64,
    pub recv_syscall_packets: u64,
    pub send_calls: u64,
    pub send_syscall_packets: u64,
}

/// Calls `$m!` with every counter of [`Totals`], so summing and JSON cannot drift from each other.
macro_rules! totals_fields {
    ($m:ident) => {
        $m!(
            sent_packets,
            sent_bytes,
            sent_rtcp,
            recv_rtcp,
            recv_packets,
            recv_bytes,
            decrypt_failures,
            before_keys,
            integrity_failures,
            misrouted,
            stream_limit,
            foreign,
            hello,
            protect_failures,
            send_failed,
            recv_errors,
            setup_errors,
            schedule_resets,
            stun_in,
            stun_out,
            dtls_in,
            dtls_out,
            recv_calls,
            recv_syscall_packets,
            send_calls,
            send_syscall_packets
        )
    };
}

impl Totals {
    pub fn add(&mut self, o: &Totals) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        totals_fields!(sum);
    }

    fn write_json(&self, o: &mut Obj<'_>) {
        macro_rules! put {
            ($($f:ident),*) => { $( o.num(stringify!($f), self.$f); )* };
        }
        totals_fields!(put);
    }
}

/// One second of the run, on one worker or merged.
#[derive(Clone, Debug, Default)]
pub struct Second {
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub recv_packets: u64,
    pub recv_bytes: u64,
    /// Net change of gap-detected loss in this second (negative when late packets fill gaps).
    pub gap_lost: i64,
    pub latency: Histogram,
}

impl Second {
    fn merge(&mut self, o: &Second) {
        self.sent_packets += o.sent_packets;
        self.sent_bytes += o.sent_bytes;
        self.recv_packets += o.recv_packets;
        self.recv_bytes += o.recv_bytes;
        self.gap_lost += o.gap_lost;
        self.latency.merge(&o.latency);
    }
}

#[derive(Clone, Debug)]
pub struct OutgoingReport {
    pub ssrc: u32,
    pub kind: Kind,
    pub sent: u64,
    pub sent_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct EndpointReport {
    pub index: u32,
    pub group: u32,
    pub state: EndpointState,
    pub detail: String,
    pub outgoing: Vec<OutgoingReport>,
    pub streams: Vec<StreamTracker>,
}

#[derive(Clone, Debug)]
pub struct WorkerReport {
    pub totals: Totals,
    pub latency: Histogram,
    pub latency_audio: Histogram,
    pub latency_video: Histogram,
    pub series: Vec<Second>,
    pub endpoints: Vec<EndpointReport>,
}

/// Percentiles of a latency histogram, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub min_ns: Option<u64>,
    pub mean_ns: Option<f64>,
    pub p50_ns: Option<u64>,
    pub p90_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub p999_ns: Option<u64>,
    pub max_ns: Option<u64>,
}

impl Latency {
    pub fn of(h: &Histogram) -> Self {
        Latency {
            count: h.count(),
            min_ns: h.min(),
            mean_ns: h.mean(),
            p50_ns: h.quantile(0.5),
            p90_ns: h.quantile(0.9),
            p99_ns: h.quantile(0.99),
            p999_ns: h.quantile(0.999),
            max_ns: h.max(),
        }
    }

    fn write_json(&self, out: &mut String) {
        let mut o = Obj::new(out);
        o.num("count", self.count);
        o.opt("min_ns", self.min_ns);
        o.optf("mean_ns", self.mean_ns);
        o.opt("p50_ns", self.p50_ns);
        o.opt("p90_ns", self.p90_ns);
        o.opt("p99_ns", self.p99_ns);
        o.opt("p999_ns", self.p999_ns);
        o.opt("max_ns", self.max_ns);
        o.end();
    }
}

/// One stream as one receiver saw it; `sent` is what its sender sent in total.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamStats {
    pub receiver: u32,
    pub group: u32,
    pub sender: u32,
    pub ssrc: u32,
    pub kind: Kind,
    pub sent: u64,
    pub received: u64,
    /// `sent - received`: exact once sending stopped and in-flight packets drained.
    pub lost: u64,
    /// Loss from sequence gaps only (what is known while running).
    pub gap_lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub latency_mean_ns: Option<f64>,
    pub latency_max_ns: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SecondStats {
    pub t: usize,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub recv_packets: u64,
    pub recv_bytes: u64,
    pub gap_lost: i64,
    pub latency: Latency,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSummary {
    pub index: u32,
    pub group: u32,
    pub state: &'static str,
    pub detail: String,
    pub sent: u64,
    pub received: u64,
}

/// Everything a bench needs from one moment of the run.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub mode: &'static str,
    pub threads: usize,
    /// Seconds since `start` (0 before).
    pub elapsed_s: f64,
    pub sending: bool,
    /// Sending was stopped: `lost` is final (after the drain the caller waited).
    pub stopped: bool,
    pub endpoints: usize,
    pub connected: usize,
    pub failed: usize,
    pub totals: Totals,
    /// Packets every receiver should have got: for each receiver, everything every other member of its
    /// group sent.
    pub expected: u64,
    /// Unique packets received from members of the receiver's group.
    pub received: u64,
    /// Packets that verified but name a sender outside the receiver's group (forged).
    pub unexpected: u64,
    pub lost: u64,
    pub lost_gap: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub late: u64,
    pub latency: Latency,
    pub latency_audio: Latency,
    pub latency_video: Latency,
    /// Non-empty latency buckets as (upper edge ns, count).
    pub histogram: Vec<(u64, u64)>,
    pub series: Vec<SecondStats>,
    pub streams: Vec<StreamStats>,
    pub endpoint_list: Vec<EndpointSummary>,
}

impl Snapshot {
    /// Loss ratio: final (`lost / expected`) once stopped, else from gaps.
    pub fn loss_ratio(&self) -> f64 {
        if self.stopped {
            if self.expected == 0 {
                0.0
            } else {
                self.lost as f64 / self.expected as f64
            }
        } else {
            let seen = self.received + self.lost_gap;
            if seen == 0 {
                0.0
            } else {
                self.lost_gap as f64 / seen as f64
            }
        }
    }

    /// Builds a snapshot from every worker's report. `detail` keeps per-stream and per-endpoint lists.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        mode: &'static str,
        reports: Vec<WorkerReport>,
        elapsed_s: f64,
        sending: bool,
        stopped: bool,
        connected: usize,
        failed: usize,
        detail: bool,
    ) -> Snapshot {
        let mut totals = Totals::default();
        let mut lat = Histogram::new();
        let mut lat_a = Histogram::new();
        let mut lat_v = Histogram::new();
        let mut series: Vec<Second> = Vec::new();
        let threads = reports.len();
        let mut endpoints: Vec<EndpointReport> = Vec::new();
        for r in reports {
            totals.add(&r.totals);
            lat.merge(&r.latency);
            lat_a.merge(&r.latency_audio);
            lat_v.merge(&r.latency_video);
            if series.len() < r.series.len() {
                series.resize_with(r.series.len(), Second::default);
            }
            for (a, b) in series.iter_mut().zip(&r.series) {
                a.merge(b);
            }
            endpoints.extend(r.endpoints);
        }
        endpoints.sort_by_key(|e| e.index);

        // Senders per group, for the expected set of streams of each receiver.
        let mut senders: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, e) in endpoints.iter().enumerate() {
            if !e.outgoing.is_empty() {
                senders.entry(e.group).or_default().push(i);
            }
        }
        let mut snap = Snapshot {
            mode,
            threads,
            elapsed_s,
            sending,
            stopped,
            endpoints: endpoints.len(),
            connected,
            failed,
            totals,
            expected: 0,
            received: 0,
            unexpected: 0,
            lost: 0,
            lost_gap: 0,
            duplicates: 0,
            reordered: 0,
            late: 0,
            latency: Latency::of(&lat),
            latency_audio: Latency::of(&lat_a),
            latency_video: Latency::of(&lat_v),
            histogram: lat.buckets().collect(),
            series: series
                .iter()
                .enumerate()
                .map(|(t, s)| SecondStats {
                    t,
                    sent_packets: s.sent_packets,
                    sent_bytes: s.sent_bytes,
                    recv_packets: s.recv_packets,
                    recv_bytes: s.recv_bytes,
                    gap_lost: s.gap_lost,
                    latency: Latency::of(&s.latency),
                })
                .collect(),
            streams: Vec::new(),
            endpoint_list: Vec::new(),
        };
        let group_of: HashMap<u32, u32> = endpoints.iter().map(|e| (e.index, e.group)).collect();
        for rx in &endpoints {
            let mut received_here = 0;
            for t in &rx.streams {
                // Only streams of members of the receiver's group count: anything else was forged
                // (a raw-mode receiver accepts any source) and must not skew loss.
                if group_of.get(&t.sender) != Some(&rx.group) {
                    snap.unexpected += t.received;
                    continue;
                }
                snap.received += t.received;
                snap.lost_gap += t.gap_lost();
                snap.duplicates += t.duplicates;
                snap.reordered += t.reordered;
                snap.late += t.late;
                received_here += t.received;
            }
            let by_key: HashMap<(u32, u32), &StreamTracker> =
                rx.streams.iter().map(|t| ((t.sender, t.ssrc), t)).collect();
            for &s in senders.get(&rx.group).map(Vec::as_slice).unwrap_or(&[]) {
                let tx = &endpoints[s];
                if tx.index == rx.index {
                    continue;
                }
                for o in &tx.outgoing {
                    let t = by_key.get(&(tx.index, o.ssrc));
                    let received = t.map_or(0, |t| t.received);
                    let lost = o.sent.saturating_sub(received);
                    snap.expected += o.sent;
                    snap.lost += lost;
                    if detail {
                        snap.streams.push(StreamStats {
                            receiver: rx.index,
                            group: rx.group,
                            sender: tx.index,
                            ssrc: o.ssrc,
                            kind: o.kind,
                            sent: o.sent,
                            received,
                            lost,
                            gap_lost: t.map_or(0, |t| t.gap_lost()),
                            duplicates: t.map_or(0, |t| t.duplicates),
                            reordered: t.map_or(0, |t| t.reordered),
                            latency_mean_ns: t
                                .filter(|t| t.received > 0)
                                .map(|t| t.latency_sum_ns as f64 / t.received as f64),
                            latency_max_ns: t.filter(|t| t.received > 0).map(|t| t.latency_max_ns),
                        });
                    }
                }
            }
            if detail {
                snap.endpoint_list.push(EndpointSummary {
                    index: rx.index,
                    group: rx.group,
                    state: rx.state.as_str(),
                    detail: rx.detail.clone(),
                    sent: rx.outgoing.iter().map(|o| o.sent).sum(),
                    received: received_here,
                });
            }
        }
        snap
    }

    /// The snapshot as one JSON object (what the Python bench reads).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(4096 + 256 * (self.streams.len() + self.series.len()));
        let mut o = Obj::new(&mut out);
        o.str("mode", self.mode);
        o.num("threads", self.threads as u64);
        o.float("elapsed_s", self.elapsed_s);
        o.bool("sending", self.sending);
        o.bool("stopped", self.stopped);
        o.num("endpoints", self.endpoints as u64);
        o.num("connected", self.connected as u64);
        o.num("failed", self.failed as u64);
        o.num("expected", self.expected);
        o.num("received", self.received);
        o.num("unexpected", self.unexpected);
        o.num("lost", self.lost);
        o.num("lost_gap", self.lost_gap);
        o.float("loss_ratio", self.loss_ratio());
        o.num("duplicates", self.duplicates);
        o.num("reordered", self.reordered);
        o.num("late", self.late);
        let t = &self.totals;
        o.float(
            "packets_per_recv_call",
            ratio(t.recv_syscall_packets, t.recv_calls),
        );
        o.float(
            "packets_per_send_call",
            ratio(t.send_syscall_packets, t.send_calls),
        );
        o.raw("totals", |s| {
            let mut to = Obj::new(s);
            t.write_json(&mut to);
            to.end();
        });
        o.raw("latency", |s| self.latency.write_json(s));
        o.raw("latency_audio", |s| self.latency_audio.write_json(s));
        o.raw("latency_video", |s| self.latency_video.write_json(s));
        o.raw("histogram", |s| {
            s.push('[');
            for (i, (up, c)) in self.histogram.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "[{up},{c}]");
            }
            s.push(']');
        });
        o.raw("series", |s| {
            s.push('[');
            for (i, x) in self.series.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let mut so = Obj::new(s);
                so.num("t", x.t as u64);
                so.num("sent_packets", x.sent_packets);
                so.num("sent_bytes", x.sent_bytes);
                so.num("recv_packets", x.recv_packets);
                so.num("recv_bytes", x.recv_bytes);
                so.int("gap_lost", x.gap_lost);
                so.raw("latency", |s| x.latency.write_json(s));
                so.end();
            }
            s.push(']');
        });
        o.raw("streams", |s| {
            s.push('[');
            for (i, x) in self.streams.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let mut so = Obj::new(s);
                so.num("receiver", u64::from(x.receiver));
                so.num("group", u64::from(x.group));
                so.num("sender", u64::from(x.sender));
                so.num("ssrc", u64::from(x.ssrc));
                so.str("kind", x.kind.as_str());
                so.num("sent", x.sent);
                so.num("received", x.received);
                so.num("lost", x.lost);
                so.num("gap_lost", x.gap_lost);
                so.num("duplicates", x.duplicates);
                so.num("reordered", x.reordered);
                so.optf("latency_mean_ns", x.latency_mean_ns);
                so.opt("latency_max_ns", x.latency_max_ns);
                so.end();
            }
            s.push(']');
        });
        o.raw("endpoint_list", |s| {
            s.push('[');
            for (i, x) in self.endpoint_list.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let mut so = Obj::new(s);
                so.num("index", u64::from(x.index));
                so.num("group", u64::from(x.group));
                so.str("state", x.state);
                so.str("detail", &x.detail);
                so.num("sent", x.sent);
                so.num("received", x.received);
                so.end();
            }
            s.push(']');
        });
        o.end();
        out
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// A minimal JSON object writer (numbers, strings, nested raw values); no dependency needed.
pub(crate) struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_str(self.out, k);
        self.out.push(':');
    }

    pub(crate) fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        let _ = write!(self.out, "{v}");
    }

    pub(crate) fn int(&mut self, k: &str, v: i64) {
        self.key(k);
        let _ = write!(self.out, "{v}");
    }

    pub(crate) fn float(&mut self, k: &str, v: f64) {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.out, "{v}");
        } else {
            self.out.push_str("null");
        }
    }

    pub(crate) fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
    }

    pub(crate) fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        write_str(self.out, v);
    }

    fn opt(&mut self, k: &str, v: Option<u64>) {
        match v {
            Some(v) => self.num(k, v),
            None => {
                self.key(k);
                self.out.push_str("null");
            }
        }
    }

    fn optf(&mut self, k: &str, v: Option<f64>) {
        match v {
            Some(v) => self.float(k, v),
            None => {
                self.key(k);
                self.out.push_str("null");
            }
        }
    }

    pub(crate) fn raw(&mut self, k: &str, f: impl FnOnce(&mut String)) {
        self.key(k);
        f(self.out);
    }

    pub(crate) fn end(self) {
        self.out.push('}');
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        let mut o = Obj::new(&mut s);
        o.str("a\"b", "x\\y\n");
        o.float("f", f64::NAN);
        o.end();
        assert_eq!(s, r#"{"a\"b":"x\\y\u000a","f":null}"#);
    }
}
