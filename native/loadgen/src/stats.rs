//! What workers report and the snapshot the controller builds from their reports.

use std::collections::HashMap;

use crate::endpoint::EndpointState;
use crate::histogram::Histogram;
use crate::payload::Kind;
use crate::track::{ReceiveStream, StreamTracker};
use crate::Mode;

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
    /// SRTP/SRTCP unprotect failures (but replays).
    pub decrypt_failures: u64,
    /// SRTP packets refused as replays of one already received. With feedback: a retransmission the
    /// bridge forwards to every receiver of the layer, also those that did not lose the packet.
    pub srtp_replays: u64,
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
    /// Keyframe requests received (RFC 4585 PLI; RFC 5104 FIR, one per entry).
    pub pli_received: u64,
    pub fir_received: u64,
    /// Requests that asked for nothing: rate-limited, a repeated FIR, or not one of our video SSRCs.
    pub keyframe_requests_ignored: u64,
    /// Keyframes sent: at start, periodic and requested, every layer.
    pub keyframes_sent: u64,
    /// Decrypted RTCP compounds with a malformed packet.
    pub rtcp_malformed: u64,
    /// Verified video packets whose VP8 payload descriptor does not parse or does not match what
    /// was sent (its fields, its length, a keyframe's start code): a forwarder broke it.
    pub vp8_invalid: u64,
    pub stun_in: u64,
    pub stun_out: u64,
    pub dtls_in: u64,
    pub dtls_out: u64,
    /// recvmmsg calls that returned data and the datagrams they returned; sendmmsg calls and datagrams.
    pub recv_calls: u64,
    pub recv_syscall_packets: u64,
    pub send_calls: u64,
    pub send_syscall_packets: u64,
    /// Feedback (see `MediaConfig::feedback`). Receivers: transport-cc feedback packets sent; NACK
    /// packets sent and the sequence numbers they asked for; packets that came after being asked
    /// for (recovered); RTX packets received and unwrapped; RTX that named no known stream.
    pub feedback_sent: u64,
    pub nacks_sent: u64,
    pub nack_seqs_sent: u64,
    pub recovered: u64,
    pub rtx_received: u64,
    pub rtx_unmatched: u64,
    /// Senders: NACK packets received and the sequence numbers they asked for; packets retransmitted
    /// (RTX or the original); asked for but not kept (never sent, overwritten, older than a second);
    /// not resent now (the same packet resent within 20 ms, or over the retransmission budget).
    pub nacks_received: u64,
    pub nack_seqs_received: u64,
    pub retransmits_sent: u64,
    pub retransmits_unknown: u64,
    pub retransmits_limited: u64,
    /// Transport-cc feedback received from the bridge (about what we sent it).
    pub feedback_received: u64,
    /// Media datagrams dropped on arrival by the `drop_every_n` test knob.
    pub link_dropped: u64,
    /// Behind TURN: datagrams to an address other than the bound peer, which the channel cannot carry.
    pub unrelayable: u64,
}

/// Calls `$m!` with every counter of [`Totals`], so summing and naming cannot drift from each other.
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
            srtp_replays,
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
            pli_received,
            fir_received,
            keyframe_requests_ignored,
            keyframes_sent,
            rtcp_malformed,
            vp8_invalid,
            stun_in,
            stun_out,
            dtls_in,
            dtls_out,
            recv_calls,
            recv_syscall_packets,
            send_calls,
            send_syscall_packets,
            feedback_sent,
            nacks_sent,
            nack_seqs_sent,
            recovered,
            rtx_received,
            rtx_unmatched,
            nacks_received,
            nack_seqs_received,
            retransmits_sent,
            retransmits_unknown,
            retransmits_limited,
            feedback_received,
            link_dropped,
            unrelayable
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

    /// Every counter with its field name (the keys a bench reads).
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
        macro_rules! list {
            ($($f:ident),*) => { [ $( (stringify!($f), self.$f), )* ] };
        }
        totals_fields!(list).into_iter()
    }

    /// Mean datagrams per recvmmsg call that returned data (0 before any).
    pub fn packets_per_recv_call(&self) -> f64 {
        ratio(self.recv_syscall_packets, self.recv_calls)
    }

    pub fn packets_per_send_call(&self) -> f64 {
        ratio(self.send_syscall_packets, self.send_calls)
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
    pub layer: u8,
    pub sent: u64,
    pub sent_bytes: u64,
    pub payload_bytes: u64,
    pub keyframes: u64,
}

#[derive(Clone, Debug)]
pub struct EndpointReport {
    pub index: u32,
    pub group: u32,
    pub state: EndpointState,
    pub detail: String,
    pub role: crate::endpoint::Role,
    /// Behind TURN: the relayed address the server allocated (what the bridge sees it as).
    pub relayed: Option<std::net::SocketAddr>,
    pub outgoing: Vec<OutgoingReport>,
    pub streams: Vec<StreamTracker>,
    pub receive: Vec<ReceiveStream>,
}

#[derive(Clone, Debug)]
pub struct WorkerReport {
    pub totals: Totals,
    pub latency: Histogram,
    pub latency_audio: Histogram,
    pub latency_video: Histogram,
    pub latency_socket: Histogram,
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
}

/// One stream as one receiver saw it; `sent` is what its sender sent in total.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamStats {
    pub receiver: u32,
    pub group: u32,
    pub sender: u32,
    pub ssrc: u32,
    pub kind: Kind,
    /// Simulcast layer of the sent ssrc (0 = lowest).
    pub layer: u8,
    pub sent: u64,
    /// RTP payload bytes the sender sent on it: its media bitrate.
    pub sent_payload_bytes: u64,
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

/// The received streams (header ssrcs) of every receiver from members of its group, summed (see
/// [`ReceiveStream`] for each count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiveTotals {
    pub streams: u64,
    pub video_streams: u64,
    pub packets: u64,
    pub seq_gaps: u64,
    pub seq_late: u64,
    pub layer_switches: u64,
    pub switches_off_keyframe: u64,
    pub frames: u64,
    pub keyframes: u64,
    pub freezes: u64,
    pub freeze_ns: u64,
}

impl ReceiveTotals {
    fn add(&mut self, r: &ReceiveStream) {
        self.streams += 1;
        self.video_streams += u64::from(r.kind == Kind::Video);
        self.packets += r.packets;
        self.seq_gaps += r.seq_gaps;
        self.seq_late += r.seq_late;
        self.layer_switches += r.layer_switches;
        self.switches_off_keyframe += r.switches_off_keyframe;
        self.frames += r.frames;
        self.keyframes += r.keyframes;
        self.freezes += r.freezes;
        self.freeze_ns += r.freeze_ns;
    }

    /// Every count with its field name (the keys a bench reads).
    pub fn named(&self) -> [(&'static str, u64); 11] {
        [
            ("streams", self.streams),
            ("video_streams", self.video_streams),
            ("packets", self.packets),
            ("seq_gaps", self.seq_gaps),
            ("seq_late", self.seq_late),
            ("layer_switches", self.layer_switches),
            ("switches_off_keyframe", self.switches_off_keyframe),
            ("frames", self.frames),
            ("keyframes", self.keyframes),
            ("freezes", self.freezes),
            ("freeze_ns", self.freeze_ns),
        ]
    }
}

/// One received stream at one receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceiveStreamStats {
    pub receiver: u32,
    pub group: u32,
    pub stream: ReceiveStream,
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
    pub relayed: Option<std::net::SocketAddr>,
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
    /// Send to the kernel's queueing on the receiving socket, where the kernel stamps arrivals (the
    /// shared loopback sockets): `latency` less the receiving worker's delay in reading.
    pub latency_socket: Latency,
    /// Non-empty latency buckets as (upper edge ns, count).
    pub histogram: Vec<(u64, u64)>,
    /// What receivers saw per received stream (header ssrc), from members of their group.
    pub receive: ReceiveTotals,
    pub series: Vec<SecondStats>,
    pub streams: Vec<StreamStats>,
    pub receive_streams: Vec<ReceiveStreamStats>,
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
        let mut lat_s = Histogram::new();
        let mut series: Vec<Second> = Vec::new();
        let threads = reports.len();
        let mut endpoints: Vec<EndpointReport> = Vec::new();
        for r in reports {
            totals.add(&r.totals);
            lat.merge(&r.latency);
            lat_a.merge(&r.latency_audio);
            lat_v.merge(&r.latency_video);
            lat_s.merge(&r.latency_socket);
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
            latency_socket: Latency::of(&lat_s),
            histogram: lat.buckets().collect(),
            receive: ReceiveTotals::default(),
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
            receive_streams: Vec::new(),
            endpoint_list: Vec::new(),
        };
        let group_of: HashMap<u32, u32> = endpoints.iter().map(|e| (e.index, e.group)).collect();
        for rx in &endpoints {
            let mut received_here = 0;
            let expects = rx.role.receives;
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
            for r in &rx.receive {
                if group_of.get(&r.sender) != Some(&rx.group) {
                    continue; // forged: its packets are counted in `unexpected` above
                }
                snap.receive.add(r);
                if detail {
                    snap.receive_streams.push(ReceiveStreamStats {
                        receiver: rx.index,
                        group: rx.group,
                        stream: r.clone(),
                    });
                }
            }
            let by_key: HashMap<(u32, u32), &StreamTracker> =
                rx.streams.iter().map(|t| ((t.sender, t.ssrc), t)).collect();
            let senders = if expects {
                senders.get(&rx.group).map(Vec::as_slice).unwrap_or(&[])
            } else {
                &[]
            };
            for &s in senders {
                let tx = &endpoints[s];
                if tx.index == rx.index || rx.role.peer == Some(tx.index) {
                    continue;
                }
                // A selective forwarding unit sends a receiver one layer of a simulcast Source, which
                // layer its allocation says and may change: what the receiver expects is that stream,
                // gapless, on the Source's one received SSRC. Its loss is the stream's sequence gaps
                // (packets sent but not received), its received count the layer packets that came
                // (counted per sent layer in `rx.streams`). A Source received not at all is not
                // expected: its allocation gave this receiver nothing (lastN, constraints); the receive
                // totals (video streams per receiver) show what arrived. The raw relay fans every layer
                // out, so there each is expected as sent.
                let simulcast = tx.outgoing.iter().filter(|o| o.kind == Kind::Video).count() > 1;
                if mode == Mode::Secure.as_str() && simulcast {
                    let stream = rx
                        .receive
                        .iter()
                        .find(|r| r.sender == tx.index && r.kind == Kind::Video);
                    let layers: Vec<&OutgoingReport> = tx
                        .outgoing
                        .iter()
                        .filter(|o| o.kind == Kind::Video)
                        .collect();
                    let trackers: Vec<&&StreamTracker> = layers
                        .iter()
                        .filter_map(|l| by_key.get(&(tx.index, l.ssrc)))
                        .collect();
                    let received: u64 = trackers.iter().map(|t| t.received).sum();
                    let latency_sum: u64 = trackers.iter().map(|t| t.latency_sum_ns).sum();
                    let (lost, layer) = match stream {
                        Some(r) => (r.seq_gaps.saturating_sub(r.seq_late), r.layer),
                        None => (0, 0),
                    };
                    snap.expected += received + lost;
                    snap.lost += lost;
                    if detail && stream.is_some() {
                        let o = layers
                            .iter()
                            .find(|l| l.layer == layer)
                            .copied()
                            .or(layers.first().copied());
                        if let Some(o) = o {
                            snap.streams.push(StreamStats {
                                receiver: rx.index,
                                group: rx.group,
                                sender: tx.index,
                                ssrc: o.ssrc,
                                kind: o.kind,
                                layer,
                                sent: received + lost,
                                sent_payload_bytes: o.payload_bytes,
                                received,
                                lost,
                                gap_lost: lost,
                                duplicates: trackers.iter().map(|t| t.duplicates).sum(),
                                reordered: trackers.iter().map(|t| t.reordered).sum(),
                                latency_mean_ns: (received > 0)
                                    .then(|| latency_sum as f64 / received as f64),
                                latency_max_ns: trackers
                                    .iter()
                                    .filter(|t| t.received > 0)
                                    .map(|t| t.latency_max_ns)
                                    .max(),
                            });
                        }
                    }
                }
                for o in &tx.outgoing {
                    let t = by_key.get(&(tx.index, o.ssrc));
                    if mode == Mode::Secure.as_str() && simulcast && o.kind == Kind::Video {
                        continue;
                    }
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
                            layer: o.layer,
                            sent: o.sent,
                            sent_payload_bytes: o.payload_bytes,
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
                    relayed: rx.relayed,
                    sent: rx.outgoing.iter().map(|o| o.sent).sum(),
                    received: received_here,
                });
            }
        }
        snap
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{EndpointState, Role};
    use crate::track::StreamTracker;

    fn endpoint(
        index: u32,
        role: Role,
        sends: Option<u32>,
        heard: &[(u32, u32, u64)],
    ) -> EndpointReport {
        EndpointReport {
            index,
            group: 0,
            state: EndpointState::Connected,
            detail: String::new(),
            role,
            relayed: None,
            outgoing: sends
                .map(|ssrc| OutgoingReport {
                    ssrc,
                    kind: Kind::Audio,
                    layer: 0,
                    sent: 100,
                    sent_bytes: 0,
                    payload_bytes: 0,
                    keyframes: 0,
                })
                .into_iter()
                .collect(),
            streams: heard
                .iter()
                .map(|&(sender, ssrc, n)| {
                    let mut t = StreamTracker::new(sender, ssrc, false);
                    for seq in 0..n {
                        t.on_packet(seq, 100);
                    }
                    t
                })
                .collect(),
            receive: Vec::new(),
        }
    }

    #[test]
    fn a_publisher_expects_nothing_and_a_subscriber_not_its_own_publisher() {
        // Two participants, each a publisher (0, 2) and a subscriber (1, 3) as Janus and LiveKit have them.
        let publisher = Role {
            ice_controlling: true,
            receives: false,
            ..Role::default()
        };
        let subscriber = |peer| Role {
            peer: Some(peer),
            ..Role::default()
        };
        let report = WorkerReport {
            totals: Totals::default(),
            latency: Histogram::new(),
            latency_audio: Histogram::new(),
            latency_video: Histogram::new(),
            latency_socket: Histogram::new(),
            series: Vec::new(),
            endpoints: vec![
                endpoint(0, publisher, Some(10), &[]),
                endpoint(1, subscriber(0), None, &[(2, 20, 97)]),
                endpoint(2, publisher, Some(20), &[]),
                endpoint(3, subscriber(2), None, &[(0, 10, 100)]),
            ],
        };
        let snap = Snapshot::build("secure", vec![report], 1.0, false, true, 4, 0, false);
        // Each subscriber expects the other's 100 packets; publishers nothing.
        assert_eq!((snap.expected, snap.received, snap.lost), (200, 197, 3));
    }
}
