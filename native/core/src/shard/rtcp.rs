//! RTCP terminated per leg, as an SFU does (RFC 7667 3.7):
//! - senders get the bridge's own receiver reports (from RFC 3550 receive statistics of each Producer);
//! - sender reports are passed on to receivers without report blocks (they keep lip sync working);
//! - PLI and FIR from a receiver go to the sender of that SSRC, with the bridge as packet sender;
//! - a receiver's NACK of a video Source is answered from the layers' RTX caches (`router::rtx`); what
//!   they do not hold goes to the sender like other NACKs;
//! - everything else (RR, REMB, transport-cc, SDES, BYE from receivers) ends here.
//!
//! Every packet the bridge sends as itself (RR, SDES, PLI, and the FIR and NACK it passes on) carries the
//! conference's feedback SSRC of the stream's media kind, the `jvb-a0`/`jvb-v0` sources its Colibri2
//! answer signals (`Router::feedback`).
//!
//! Force-mute stops what an endpoint sends, not what it receives: the SRs of its muted SSRCs are not passed
//! on (receivers get no such stream) and nobody is asked for a keyframe of a muted stream, while its own
//! feedback about others' streams (PLI, FIR, NACK) is routed as usual and it still gets the bridge's RRs.
//! Receivers' NACKs lose the sequence numbers force-mute dropped, so an unmute never replays muted media.

use std::time::Instant;

use super::egress::Io;
use super::State;
use crate::domain::{ForceMute, MediaKind, RouterId, TransportId};
use crate::io::MAX_DATAGRAM;
use crate::router::{Router, KEYFRAME_REQUEST_MIN_INTERVAL, RR_INTERVAL};
use crate::rtcp::{
    parse_compound, set_sender_ssrc, write_nack, write_pli, write_remb, Nack, RtcpPacket,
};
use crate::seam::Event;
use crate::stats::DropReason;
use crate::transport::{EstimateChange, Protect, Transport};

/// Deferred keyframe requests kept at most (one per video layer Producer in practice).
const MAX_DEFERRED_KEYFRAMES: usize = 1024;

/// How often the bridge sends transport-cc feedback (libwebrtc: every 100 ms at low rates, down to 25).
pub const FEEDBACK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// How often the bridge's own NACKs go out (each missing packet is asked at most every `cc::nack::RETRY`).
pub const NACK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// The sender's video SSRCs a REMB names at most.
const MAX_REMB_SSRCS: usize = 16;

/// Sequence numbers kept when a NACK is rewritten without force-muted ones (the rest is best effort).
const MAX_NACK_KEPT: usize = 256;

impl State {
    /// Terminates one valid, decrypted compound from transport `id` of `router`.
    pub(super) fn terminate_rtcp(
        &mut self,
        now: Instant,
        id: TransportId,
        router: RouterId,
        force_mute: ForceMute,
        compound: &[u8],
        io: &mut Io,
    ) {
        for packet in parse_compound(compound) {
            let Ok(packet) = packet else {
                self.total.drop(DropReason::RtcpMalformed);
                return;
            };
            match packet {
                RtcpPacket::SenderReport(sr) => {
                    let owned = self
                        .routers
                        .get_mut(&router)
                        .and_then(|r| r.producers.get_mut(&sr.ssrc));
                    let Some(p) = owned.filter(|p| p.transport == id) else {
                        continue;
                    };
                    p.stats.on_sender_report(now, sr.ntp_timestamp);
                    if force_mute.mutes(p.kind) {
                        continue;
                    }
                    if let Some(r) = self.routers.get(&router) {
                        r.forward_sender_report(
                            now,
                            id,
                            sr.ssrc,
                            sr.ntp_timestamp,
                            sr.rtp_timestamp,
                            (sr.packet_count, sr.octet_count),
                            &mut self.transports,
                            io,
                            &mut self.total,
                        );
                    }
                }
                RtcpPacket::Pli { media_ssrc, .. } => {
                    let ssrc = self.keyframe_ssrc(router, id, media_ssrc);
                    self.request_keyframe(now, router, ssrc, io)
                }
                RtcpPacket::Fir(fir) => {
                    if let Some((media, _)) = fir.entries().next() {
                        let ssrc = self.keyframe_ssrc(router, id, media);
                        if ssrc == media {
                            self.forward_feedback(router, media, fir.as_bytes(), io);
                        } else {
                            // The receiver's FIR names the primary SSRC; the layer's sender gets a PLI.
                            self.request_keyframe(now, router, ssrc, io);
                        }
                    }
                }
                RtcpPacket::Nack(nack) => self.on_nack(now, router, id, &nack, io),
                RtcpPacket::TransportCc(feedback) => {
                    let t = self.transports.get_mut(&id);
                    match t.and_then(|t| t.on_transport_feedback(now, &feedback)) {
                        Some(EstimateChange::Fell(bps)) => {
                            self.events.push(Event::EstimateFell { transport: id, bps })
                        }
                        Some(EstimateChange::Rose(bps)) => {
                            self.events.push(Event::EstimateRose { transport: id, bps })
                        }
                        None => {}
                    }
                }
                _ => {}
            }
        }
    }

    /// Routes a receiver's NACK to the sender, without the sequence numbers force-mute dropped: those were
    /// never forwarded, and retransmitting them after an unmute would deliver what the focus muted.
    /// A NACK of a video Source's primary SSRC names the receiver's sequence numbers (at most
    /// MAX_NACK_KEPT of them are read): what the layers' caches hold is resent from there; the rest goes
    /// to each layer's SSRC with the numbers its Projection made them from.
    fn on_nack(
        &mut self,
        now: Instant,
        router: RouterId,
        receiver: TransportId,
        nack: &Nack<'_>,
        io: &mut Io,
    ) {
        let mut missed = [(0u32, 0u16); MAX_NACK_KEPT];
        let mut n = 0;
        let answered = self.routers.get_mut(&router).is_some_and(|r| {
            r.answer_nack(
                now,
                receiver,
                nack.media_ssrc,
                nack.lost_sequence_numbers().take(MAX_NACK_KEPT),
                &mut self.transports,
                io,
                &mut self.total,
                |ssrc, seq| {
                    if let Some(slot) = missed.get_mut(n) {
                        *slot = (ssrc, seq);
                        n += 1;
                    }
                },
            )
        });
        if !answered {
            self.nack_layer(router, nack, nack.media_ssrc, None, io);
            return;
        }
        // One NACK per layer, in the order the layers were first named.
        let missed = &missed[..n];
        let mut seqs = [0u16; MAX_NACK_KEPT];
        for (i, &(ssrc, _)) in missed.iter().enumerate() {
            if missed[..i].iter().any(|(s, _)| *s == ssrc) {
                continue;
            }
            let mut k = 0;
            for &(_, seq) in missed[i..].iter().filter(|(s, _)| *s == ssrc) {
                seqs[k] = seq;
                k += 1;
            }
            self.nack_layer(router, nack, ssrc, Some(&seqs[..k]), io);
        }
    }

    /// Sends the sender of `ssrc` a NACK of `seqs` (the received NACK's own when None), without the
    /// sequence numbers force-mute dropped.
    fn nack_layer(
        &mut self,
        router: RouterId,
        nack: &Nack<'_>,
        ssrc: u32,
        seqs: Option<&[u16]>,
        io: &mut Io,
    ) {
        let Some(p) = self
            .routers
            .get(&router)
            .and_then(|r| r.producers.get(&ssrc))
        else {
            return;
        };
        if seqs.is_none() && p.muted_run.is_none() {
            self.forward_feedback(router, ssrc, nack.as_bytes(), io);
            return;
        }
        let mut kept = [0u16; MAX_NACK_KEPT];
        let (mut n, mut total) = (0, 0);
        let mut keep = |seq: u16| {
            total += 1;
            if !p.was_muted(seq) && n < MAX_NACK_KEPT {
                kept[n] = seq;
                n += 1;
            }
        };
        match seqs {
            Some(s) => s.iter().copied().for_each(&mut keep),
            None => nack.lost_sequence_numbers().for_each(&mut keep),
        }
        if seqs.is_none() && n == total {
            self.forward_feedback(router, ssrc, nack.as_bytes(), io);
        } else if n > 0 {
            let mut out = [0u8; MAX_DATAGRAM];
            if let Ok(len) = write_nack(&mut out, nack.sender_ssrc, ssrc, &kept[..n]) {
                self.forward_feedback(router, ssrc, &out[..len], io);
            }
        }
    }

    /// The SSRC whose sender a receiver's keyframe request about `media_ssrc` is for.
    fn keyframe_ssrc(&self, router: RouterId, receiver: TransportId, media_ssrc: u32) -> u32 {
        self.routers
            .get(&router)
            .map_or(media_ssrc, |r| r.keyframe_ssrc_for(receiver, media_ssrc))
    }

    /// Asks the sender of `ssrc` for a keyframe with a PLI (rate-limited per Producer). A request the
    /// limit refuses is kept until the limit allows it (`deferred_keyframes`) and sent then if a receiver
    /// still waits for that layer: a receiver switched just after another request to the sender would
    /// otherwise wait for its own retry, a second later.
    pub(super) fn request_keyframe(
        &mut self,
        now: Instant,
        router: RouterId,
        ssrc: u32,
        io: &mut Io,
    ) {
        let Some(r) = self.routers.get_mut(&router) else {
            return;
        };
        let Some(p) = r.producers.get_mut(&ssrc) else {
            return;
        };
        let kind = p.kind;
        let owner_ready = self
            .transports
            .get(&p.transport)
            .is_some_and(|t| t.is_media_ready() && !t.force_mute.mutes(kind));
        if !owner_ready {
            return;
        }
        if !Router::may_request_keyframe(p, now) {
            let due = p
                .last_keyframe_request
                .map_or(now, |t| t + KEYFRAME_REQUEST_MIN_INTERVAL);
            let known = self
                .deferred_keyframes
                .iter()
                .any(|d| d.0 == router && d.1 == ssrc);
            // Bounded: past it the receiver's own retry still asks.
            if !known && self.deferred_keyframes.len() < MAX_DEFERRED_KEYFRAMES {
                self.deferred_keyframes.push((router, ssrc, due));
                self.next_sweep = self.next_sweep.min(due);
            }
            return;
        }
        let owner = p.transport;
        self.send_pli(router, owner, ssrc, io);
    }

    /// Sends the deferred keyframe requests that are due and still wanted; returns when the next is due.
    pub(super) fn send_deferred_keyframes(&mut self, now: Instant, io: &mut Io) -> Option<Instant> {
        let mut next = None::<Instant>;
        let mut i = 0;
        while i < self.deferred_keyframes.len() {
            let (router, ssrc, due) = self.deferred_keyframes[i];
            if due > now {
                next = Some(next.map_or(due, |n| n.min(due)));
                i += 1;
                continue;
            }
            self.deferred_keyframes.swap_remove(i);
            if self
                .routers
                .get(&router)
                .is_some_and(|r| r.keyframe_awaited(ssrc))
            {
                self.request_keyframe(now, router, ssrc, io);
            }
        }
        next
    }

    /// `receiver` can take media now: its decoders need a keyframe of every video stream already flowing
    /// (rate-limited per Producer, so receivers joining together share one).
    pub(super) fn keyframes_for_new_receiver(
        &mut self,
        now: Instant,
        router: RouterId,
        receiver: TransportId,
        io: &mut Io,
    ) {
        let transports = &self.transports;
        let Some(r) = self.routers.get_mut(&router) else {
            return;
        };
        // A force-muted video sender's keyframe would reach nobody; it gets a PLI on unmute.
        let ready = |t: TransportId| {
            transports
                .get(&t)
                .is_some_and(|t| t.is_media_ready() && !t.force_mute.video)
        };
        for (owner, ssrc) in r.keyframe_requests(now, receiver, ready) {
            self.send_pli(router, owner, ssrc, io);
        }
    }

    /// A video sender's receivers need a keyframe to decode it at once: it was just unmuted, or its
    /// path changed (an ICE restart) and what it sent meanwhile was lost. Not rate-limited, since a
    /// request made just before (at a join) produced a keyframe that nobody got.
    pub(super) fn keyframes_from(&mut self, now: Instant, owner: TransportId, io: &mut Io) {
        let Some(t) = self.transports.get(&owner) else {
            return;
        };
        let router = t.router;
        if !t.is_media_ready() {
            return; // its first packets after connecting start with a keyframe anyway
        }
        let Some(r) = self.routers.get_mut(&router) else {
            return;
        };
        let mut ssrcs = Vec::new();
        for (ssrc, p) in r.producers.iter_mut() {
            if p.transport == owner && p.kind == MediaKind::Video {
                p.last_keyframe_request = Some(now);
                ssrcs.push(*ssrc);
            }
        }
        for ssrc in ssrcs {
            self.send_pli(router, owner, ssrc, io);
        }
    }

    fn send_pli(&mut self, router: RouterId, owner: TransportId, ssrc: u32, io: &mut Io) {
        let Some(sender) = self.routers.get(&router).map(|r| r.feedback_ssrc_for(ssrc)) else {
            return;
        };
        let mut out = [0u8; 12];
        if let Ok(n) = write_pli(&mut out, sender, ssrc) {
            self.send_rtcp(owner, &out[..n], io);
        }
    }

    /// Passes one feedback packet about `media_ssrc` on to that stream's sender, with the bridge as its
    /// packet sender.
    fn forward_feedback(&mut self, router: RouterId, media_ssrc: u32, packet: &[u8], io: &mut Io) {
        let Some(r) = self.routers.get(&router) else {
            return;
        };
        let Some(owner) = r.producers.get(&media_ssrc).map(|p| p.transport) else {
            return;
        };
        let sender = r.feedback_ssrc_for(media_ssrc);
        let mut out = [0u8; MAX_DATAGRAM];
        let Some(dst) = out.get_mut(..packet.len()) else {
            return;
        };
        dst.copy_from_slice(packet);
        set_sender_ssrc(dst, sender);
        self.send_rtcp(owner, &out[..packet.len()], io);
    }

    /// Sends each transport whose peer negotiated transport-cc the feedback on what arrived since the
    /// last, every FEEDBACK_INTERVAL (as browsers do, so their own estimators work against the bridge);
    /// and each that negotiated REMB instead, REMB when its estimate says (`ReceiveEstimator`).
    pub(super) fn send_transport_feedback(&mut self, now: Instant, io: &mut Io) {
        if now < self.next_feedback {
            return;
        }
        self.next_feedback = now + FEEDBACK_INTERVAL;
        let mut out = [0u8; MAX_DATAGRAM];
        let mut ssrcs = [0u32; MAX_REMB_SSRCS];
        for (&id, t) in self.transports.iter_mut() {
            if let Some(bps) = t.poll_remb(now) {
                if let Some(r) = self.routers.get(&t.router) {
                    let n = r.video_ssrcs_of(id, &mut ssrcs);
                    let sender = r.feedback.for_kind(MediaKind::Video);
                    if let Ok(len) = write_remb(&mut out, sender, bps, &ssrcs[..n]) {
                        if t.send_protected(Protect::Rtcp, &out[..len], io, &mut self.total) {
                            t.counters.remb_sent += 1;
                            self.total.remb_sent += 1;
                        }
                    }
                }
            }
            // A few packets per interval at most; the writer bounds each.
            for _ in 0..4 {
                let Some(n) = t.take_transport_feedback(&mut out) else {
                    break;
                };
                t.send_protected(Protect::Rtcp, &out[..n], io, &mut self.total);
            }
        }
    }

    /// Sends each video sender the bridge's own NACKs for what it did not receive (`cc::nack`), every
    /// NACK_INTERVAL.
    pub(super) fn send_nacks(&mut self, now: Instant, io: &mut Io) {
        if now < self.next_nack {
            return;
        }
        self.next_nack = now + NACK_INTERVAL;
        let mut out = [0u8; MAX_DATAGRAM];
        let transports = &self.transports;
        // The RTT to a sender that also receives with transport-cc (its estimator's, which includes
        // its feedback interval: a retry waits a little longer than it must).
        let rtt_of = |t: TransportId| transports.get(&t).and_then(Transport::rtt);
        let mut due = Vec::new();
        for r in self.routers.values_mut() {
            let sender_ssrc = r.feedback.for_kind(MediaKind::Video);
            for (transport, ssrc, seqs) in r.due_nacks(now, rtt_of) {
                due.push((sender_ssrc, transport, ssrc, seqs));
            }
        }
        for (sender_ssrc, transport, ssrc, seqs) in due {
            let Ok(n) = write_nack(&mut out, sender_ssrc, ssrc, &seqs) else {
                continue;
            };
            if let Some(t) = self.transports.get_mut(&transport) {
                if t.send_protected(Protect::Rtcp, &out[..n], io, &mut self.total) {
                    t.counters.nack_requested += seqs.len() as u64;
                    self.total.nack_requested += seqs.len() as u64;
                }
            }
        }
    }

    /// One probing step of every transport that probes or may start to (`Transport::probe`, with the
    /// padding stream its Router names); when the next step of a running cluster is due.
    pub(super) fn probe(&mut self, now: Instant, io: &mut Io) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for (&id, t) in self.transports.iter_mut() {
            if !t.wants_probe(now) {
                continue;
            }
            let router = self.routers.get_mut(&t.router);
            let stream = router.and_then(|r| r.padding_stream(id));
            let (wake, sent) = t.probe(now, stream, io, &mut self.total);
            if let (Some(s), Some(r)) = (stream, self.routers.get_mut(&t.router)) {
                r.padding_sent(id, &s, sent);
            }
            if let Some(at) = wake {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    /// Lets out what every pacer with a backlog may send now (`Transport::pace`); when the next is due.
    pub(super) fn pace(&mut self, now: Instant, io: &mut Io) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for t in self.transports.values_mut() {
            if !t.pacer_backlog() {
                continue;
            }
            if let Some(at) = t.pace(now, io, &mut self.total) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    /// Sends each sender the bridge's reports on the SSRCs it sends (one per media kind), every
    /// RR_INTERVAL.
    pub(super) fn send_receiver_reports(&mut self, now: Instant, io: &mut Io) {
        let due: Vec<RouterId> = self
            .routers
            .values_mut()
            .filter_map(|r| match r.next_report {
                Some(at) if at > now => None,
                _ => {
                    r.next_report = Some(now + RR_INTERVAL);
                    Some(r.id)
                }
            })
            .collect();
        for router in due {
            let Some(r) = self.routers.get_mut(&router) else {
                continue;
            };
            let mut i = 0;
            while let Some(&m) = r.members().get(i) {
                i += 1;
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    let mut out = [0u8; 1024];
                    let Some(n) = r.write_receiver_report(now, m, kind, &mut out) else {
                        continue;
                    };
                    if let Some(t) = self.transports.get_mut(&m) {
                        t.send_protected(Protect::Rtcp, &out[..n], io, &mut self.total);
                    }
                }
            }
        }
    }
}
