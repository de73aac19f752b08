//! RTCP terminated per leg, as an SFU does (RFC 7667 3.7):
//! - senders get the bridge's own receiver reports (from RFC 3550 receive statistics of each Producer);
//! - sender reports are passed on to receivers without report blocks (they keep lip sync working);
//! - PLI, FIR and NACK from a receiver go to the sender of that SSRC, with the bridge as packet sender;
//! - everything else (RR, REMB, transport-cc, SDES, BYE from receivers) ends here.
//!
//! Force-mute stops what an endpoint sends, not what it receives: the SRs of its muted SSRCs are not passed
//! on (receivers get no such stream) and nobody is asked for a keyframe of a muted stream, while its own
//! feedback about others' streams (PLI, FIR, NACK) is routed as usual and it still gets the bridge's RRs.
//! Receivers' NACKs lose the sequence numbers force-mute dropped, so an unmute never replays muted media.

use std::net::SocketAddr;
use std::time::Instant;

use super::{claim, Io, State};
use crate::io::MAX_DATAGRAM;
use crate::router::{Router, RR_INTERVAL};
use crate::rtcp::{
    parse_compound, set_sender_ssrc, validate_compound, write_nack, write_pli,
    write_receiver_report, write_sdes_cname, write_sender_report, Nack, ReportBlock, RtcpPacket,
};
use crate::seam::{MediaKind, RouterId, TransportId};
use crate::stats::DropReason;

/// RFC 3550 6.4.2: at most 31 report blocks fit one RR.
const MAX_BLOCKS: usize = 31;
/// Sequence numbers kept when a NACK is rewritten without force-muted ones (the rest is best effort).
const MAX_NACK_KEPT: usize = 256;
/// The CNAME the bridge uses for its own RTCP.
const BRIDGE_CNAME: &[u8] = b"sluice";

impl State {
    pub(super) fn on_rtcp(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8], io: &mut Io) {
        let Some((id, t)) = claim(
            &self.by_addr,
            &mut self.transports,
            &mut self.total,
            from,
            buf.len(),
        ) else {
            return;
        };
        t.counters.rtcp_in += 1;
        self.total.rtcp_in += 1;
        let len = match t.unprotect_rtcp(buf) {
            Ok(len) => len,
            Err(reason) => {
                t.counters.drop(reason);
                self.total.drop(reason);
                return;
            }
        };
        let router_id = t.router;
        let force_mute = t.force_mute;
        let Some(pkt) = buf.get(..len) else {
            self.total.drop(DropReason::SrtpOther);
            return;
        };
        if validate_compound(pkt).is_err() {
            t.counters.drop(DropReason::RtcpMalformed);
            self.total.drop(DropReason::RtcpMalformed);
            return;
        }
        for packet in parse_compound(pkt) {
            let Ok(packet) = packet else {
                self.total.drop(DropReason::RtcpMalformed);
                return;
            };
            match packet {
                RtcpPacket::SenderReport(sr) => {
                    let owned = self
                        .routers
                        .get_mut(&router_id)
                        .and_then(|r| r.producers.get_mut(&sr.ssrc));
                    let Some(p) = owned.filter(|p| p.transport == id) else {
                        continue;
                    };
                    p.stats.on_sender_report(now, sr.ntp_timestamp);
                    if force_mute.mutes(p.kind) {
                        continue;
                    }
                    let mut out = [0u8; 64];
                    let Ok(n) = write_sender_report(
                        &mut out,
                        sr.ssrc,
                        sr.ntp_timestamp,
                        sr.rtp_timestamp,
                        sr.packet_count,
                        sr.octet_count,
                        &[],
                    ) else {
                        continue;
                    };
                    self.send_to_others(router_id, id, &out[..n], io);
                }
                RtcpPacket::Pli { media_ssrc, .. } => {
                    self.request_keyframe(now, router_id, media_ssrc, io)
                }
                RtcpPacket::Fir(fir) => {
                    let media = fir.entries().next().map(|(ssrc, _)| ssrc);
                    if let Some(owner) = media.and_then(|s| self.owner_of(router_id, s)) {
                        self.forward_feedback(router_id, owner, fir.as_bytes(), io);
                    }
                }
                RtcpPacket::Nack(nack) => self.on_nack(router_id, &nack, io),
                _ => {}
            }
        }
    }

    /// Routes a receiver's NACK to the sender, without the sequence numbers force-mute dropped: those were
    /// never forwarded, and retransmitting them after an unmute would deliver what the focus muted.
    fn on_nack(&mut self, router: RouterId, nack: &Nack<'_>, io: &mut Io) {
        let Some(p) = self
            .routers
            .get(&router)
            .and_then(|r| r.producers.get(&nack.media_ssrc))
        else {
            return;
        };
        let owner = p.transport;
        if p.muted_run.is_none() {
            self.forward_feedback(router, owner, nack.as_bytes(), io);
            return;
        }
        let mut kept = [0u16; MAX_NACK_KEPT];
        let (mut n, mut total) = (0, 0);
        for seq in nack.lost_sequence_numbers() {
            total += 1;
            if !p.was_muted(seq) && n < MAX_NACK_KEPT {
                kept[n] = seq;
                n += 1;
            }
        }
        if n == total {
            self.forward_feedback(router, owner, nack.as_bytes(), io);
        } else if n > 0 {
            let mut out = [0u8; MAX_DATAGRAM];
            if let Ok(len) = write_nack(&mut out, nack.sender_ssrc, nack.media_ssrc, &kept[..n]) {
                self.forward_feedback(router, owner, &out[..len], io);
            }
        }
    }

    /// Asks the sender of `ssrc` for a keyframe with a PLI (rate-limited per Producer).
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
        if !owner_ready || !Router::may_request_keyframe(p, now) {
            return;
        }
        let owner = p.transport;
        self.send_pli(router, owner, ssrc, io);
    }

    /// A video sender was just unmuted: receivers need a keyframe to decode it at once. Not rate-limited,
    /// since a request made just before (at a join) produced a keyframe that nobody got.
    pub(super) fn keyframe_after_unmute(&mut self, now: Instant, owner: TransportId, io: &mut Io) {
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

    pub(super) fn send_pli(
        &mut self,
        router: RouterId,
        owner: TransportId,
        ssrc: u32,
        io: &mut Io,
    ) {
        let Some(sender) = self.routers.get(&router).map(|r| r.rtcp_ssrc) else {
            return;
        };
        let mut out = [0u8; 12];
        if let Ok(n) = write_pli(&mut out, sender, ssrc) {
            self.send_rtcp(owner, &out[..n], io);
        }
    }

    fn owner_of(&self, router: RouterId, ssrc: u32) -> Option<TransportId> {
        self.routers
            .get(&router)?
            .producers
            .get(&ssrc)
            .map(|p| p.transport)
    }

    /// Forwards one feedback packet with the bridge as its sender.
    fn forward_feedback(
        &mut self,
        router: RouterId,
        owner: TransportId,
        packet: &[u8],
        io: &mut Io,
    ) {
        let Some(sender) = self.routers.get(&router).map(|r| r.rtcp_ssrc) else {
            return;
        };
        let mut out = [0u8; MAX_DATAGRAM];
        let Some(dst) = out.get_mut(..packet.len()) else {
            return;
        };
        dst.copy_from_slice(packet);
        set_sender_ssrc(dst, sender);
        self.send_rtcp(owner, &out[..packet.len()], io);
    }

    fn send_to_others(
        &mut self,
        router: RouterId,
        except: TransportId,
        packet: &[u8],
        io: &mut Io,
    ) {
        let Some(members) = self.routers.get(&router).map(|r| r.members.clone()) else {
            return;
        };
        for m in members {
            if m != except {
                self.send_rtcp(m, packet, io);
            }
        }
    }

    /// Protects a plain RTCP compound for one transport and queues it.
    pub(super) fn send_rtcp(&mut self, to: TransportId, packet: &[u8], io: &mut Io) {
        let Some(t) = self.transports.get_mut(&to) else {
            return;
        };
        if !t.is_media_ready() {
            return;
        }
        let (Some(dst), Some(src)) = (t.remote_addr(), t.local_addr()) else {
            return;
        };
        let sock = io.socket_for(src);
        let batch = io.slot(sock);
        let Some(slot) = batch.slot() else {
            return;
        };
        let Some(head) = slot.get_mut(..packet.len()) else {
            return;
        };
        head.copy_from_slice(packet);
        match t.protect_rtcp(slot, packet.len()) {
            Ok(n) => {
                batch.commit(n, dst);
                t.counters.packets_out += 1;
                t.counters.bytes_out += n as u64;
                t.counters.rtcp_out += 1;
                self.total.rtcp_out += 1;
                self.total.packets_out += 1;
                self.total.bytes_out += n as u64;
            }
            Err(reason) => {
                t.counters.drop(reason);
                self.total.drop(reason);
            }
        }
    }

    /// Sends each sender an RR (plus SDES CNAME, RFC 3550 6.1) about the SSRCs it sends, every RR_INTERVAL.
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
            let sender_ssrc = r.rtcp_ssrc;
            let members = r.members.clone();
            for m in members {
                let Some(r) = self.routers.get_mut(&router) else {
                    break;
                };
                let mut blocks = [ReportBlock::default(); MAX_BLOCKS];
                let mut n = 0;
                for p in r.producers.values_mut() {
                    if p.transport == m && p.packets > 0 && n < MAX_BLOCKS {
                        blocks[n] = p.stats.report_block(now);
                        n += 1;
                    }
                }
                if n == 0 {
                    continue;
                }
                let mut out = [0u8; 1024];
                let Ok(rr) = write_receiver_report(&mut out, sender_ssrc, &blocks[..n]) else {
                    continue;
                };
                let Ok(sdes) = write_sdes_cname(&mut out[rr..], sender_ssrc, BRIDGE_CNAME) else {
                    continue;
                };
                self.send_rtcp(m, &out[..rr + sdes], io);
            }
        }
    }
}
