//! Transport-cc on the receiving side of shard tests: reading a forwarded packet's transport-wide
//! number, checking a receiver's numbers are gapless, answering with feedback as a browser does, and
//! the loop of a sender's packets and that feedback a receiver's estimate runs on.

use std::time::{Duration, Instant};

use sluice_core::cc::FeedbackBuilder;
use sluice_core::rtp::RtpView;

/// The transport-wide number in `packet`'s extension `id`, if it carries one.
pub fn number(packet: &[u8], id: u8) -> Option<u16> {
    let v = RtpView::parse(packet).ok()?;
    let ext = v.extension(id)?;
    Some(u16::from_be_bytes([*ext.first()?, *ext.get(1)?]))
}

/// Every transport-wide number in `packets` (in arrival order) follows the one before.
pub fn assert_gapless(packets: &[Vec<u8>], id: u8) {
    let numbers: Vec<u16> = packets.iter().filter_map(|p| number(p, id)).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{numbers:?}"
    );
}

/// The receiver's side of the loop: every packet `peer` took off its socket since `seen` (at that
/// time) goes into its feedback, which it sends.
pub fn answer_with_feedback(
    conf: &mut super::Conference,
    peer: usize,
    id: u8,
    t0: Instant,
    seen: &mut usize,
    builder: &mut FeedbackBuilder,
) {
    answer_with_feedback_of(conf, peer, id, t0, seen, builder, |_| true);
}

/// `answer_with_feedback`, reporting only the transport-wide numbers `keep` takes: the others are
/// lost, as far as the bridge can tell.
pub fn answer_with_feedback_of(
    conf: &mut super::Conference,
    peer: usize,
    id: u8,
    t0: Instant,
    seen: &mut usize,
    builder: &mut FeedbackBuilder,
    keep: impl Fn(u16) -> bool,
) {
    let p = &conf.peers[peer];
    let new: Vec<(u16, Instant)> = p.rtp_packets[*seen..]
        .iter()
        .zip(&p.rtp_arrivals[*seen..])
        .filter_map(|(packet, &at)| number(packet, id).map(|s| (s, at)))
        .filter(|&(s, _)| keep(s))
        .collect();
    *seen = p.rtp_packets.len();
    for (seq, at) in new {
        builder.on_arrival(seq, at - t0);
    }
    let mut out = [0u8; 1200];
    while let Ok(Some(n)) = builder.write(&mut out) {
        conf.peers[peer].send_rtcp(&out[..n]);
    }
}

/// Peer 0 sending a packet every 10 ms and peer 1 answering with transport-cc feedback on what it
/// took: the loop a receiver's estimate runs on in shard tests.
pub struct FeedbackLoop {
    id: u8,
    t0: Instant,
    builder: FeedbackBuilder,
    seen: usize,
    next: u16,
}

impl FeedbackLoop {
    /// Feedback on the transport-cc extension `id`, its times counted from now.
    pub fn new(id: u8) -> Self {
        FeedbackLoop {
            id,
            t0: Instant::now(),
            builder: FeedbackBuilder::new(0x5151, 0),
            seen: 0,
            next: 0,
        }
    }

    /// For `until`: peer 0 sends `packet(n)` (n counting on from 0 over the loop's life), the shard
    /// runs 10 ms, peer 1 answers. Returns each packet's n and when it was sent.
    pub fn run(
        &mut self,
        conf: &mut super::Conference,
        until: Duration,
        packet: impl Fn(u16) -> Vec<u8>,
    ) -> Vec<(u16, Instant)> {
        let mut sent = Vec::new();
        let end = Instant::now() + until;
        while Instant::now() < end {
            conf.peers[0].send_plain_rtp(&packet(self.next));
            sent.push((self.next, Instant::now()));
            self.next = self.next.wrapping_add(1);
            conf.peers[0].flush();
            conf.run_until(Duration::from_millis(10), |_| false);
            answer_with_feedback(conf, 1, self.id, self.t0, &mut self.seen, &mut self.builder);
        }
        sent
    }
}
