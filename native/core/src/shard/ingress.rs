//! One received datagram: RFC 7983 classification, then STUN routed by ICE username fragment, and DTLS,
//! SRTP and SRTCP routed by remote address to their Transport. Decrypted RTP goes to the Router, which
//! forwards it; decrypted RTCP to the per-leg terminator (`super::rtcp`). Every drop is counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::egress::Io;
use super::State;
use crate::domain::{IdMap, TransportId};
use crate::io::{classify, DatagramKind};
use crate::rtcp::validate_compound;
use crate::rtp::RtpView;
use crate::stats::{Counters, DropReason};
use crate::stun::{local_ufrag_of, StunClass, StunMessage};
use crate::transport::Transport;

impl State {
    /// Routes one received datagram.
    pub(super) fn on_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        buf: &mut [u8],
        io: &mut Io,
    ) {
        self.total.packets_in += 1;
        self.total.bytes_in += buf.len() as u64;
        match classify(buf) {
            DatagramKind::Stun => self.on_stun(now, local, from, buf, io),
            DatagramKind::Dtls => self.on_dtls(now, local, from, buf, io),
            DatagramKind::Rtp => self.on_rtp(now, from, buf, io),
            DatagramKind::Rtcp => self.on_rtcp(now, from, buf, io),
            DatagramKind::Unknown => self.total.drop(DropReason::Unclassified),
        }
    }

    fn on_stun(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        buf: &[u8],
        io: &mut Io,
    ) {
        let msg = match StunMessage::parse(buf) {
            Ok(m) => m,
            Err(_) => {
                self.total.drop(DropReason::StunMalformed);
                return;
            }
        };
        let id = match msg.class() {
            StunClass::Request | StunClass::Indication => msg
                .username()
                .and_then(local_ufrag_of)
                .and_then(|u| self.by_ufrag.get(u).copied()),
            StunClass::SuccessResponse | StunClass::ErrorResponse => {
                let tid = msg.transaction_id();
                match self.by_addr.get(&from) {
                    Some(id)
                        if self
                            .transports
                            .get(id)
                            .is_some_and(|t| t.is_pending_transaction(&tid)) =>
                    {
                        Some(*id)
                    }
                    // Responses from a candidate not yet routed: find the transaction's owner.
                    _ => self
                        .transports
                        .iter()
                        .find(|(_, t)| t.is_pending_transaction(&tid))
                        .map(|(id, _)| *id),
                }
            }
        };
        let Some(id) = id else {
            self.total.drop(DropReason::StunUnroutable);
            return;
        };
        let Some(t) = self.transports.get_mut(&id) else {
            self.total.drop(DropReason::StunUnroutable);
            return;
        };
        t.counters.packets_in += 1;
        t.counters.bytes_in += buf.len() as u64;
        if let Err(reason) = t.handle_stun(now, local, from, &msg) {
            t.drop_counted(reason, &mut self.total);
        }
        self.after_transport(now, id, io);
    }

    fn on_dtls(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        buf: &[u8],
        io: &mut Io,
    ) {
        let Some((id, t)) = claim(
            &self.by_addr,
            &mut self.transports,
            &mut self.total,
            from,
            buf.len(),
        ) else {
            return;
        };
        if let Err(reason) = t.handle_dtls(now, local, from, buf) {
            t.drop_counted(reason, &mut self.total);
        }
        self.after_transport(now, id, io);
    }

    /// The media path: unprotect in place, parse the RTP view, then the Router counts it on its
    /// Producer and forwards it to every other member.
    #[inline]
    fn on_rtp(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8], io: &mut Io) {
        let Some((id, t)) = claim(
            &self.by_addr,
            &mut self.transports,
            &mut self.total,
            from,
            buf.len(),
        ) else {
            return;
        };
        t.counters.rtp_in += 1;
        self.total.rtp_in += 1;
        let force_mute = t.force_mute;
        let len = match t.unprotect_rtp(buf) {
            Ok(len) => len,
            Err(reason) => {
                t.drop_counted(reason, &mut self.total);
                return;
            }
        };
        let router_id = t.router;
        let Some(pkt) = buf.get(..len) else {
            self.total.drop(DropReason::SrtpOther);
            return;
        };
        let rtp = match RtpView::parse(pkt) {
            Ok(v) => v,
            Err(_) => {
                t.drop_counted(DropReason::RtpMalformed, &mut self.total);
                return;
            }
        };
        // Every authenticated packet counts for the sender's bandwidth estimate, forwarded or not.
        t.on_rtp_received(now, &rtp);
        let Some(router) = self.routers.get_mut(&router_id) else {
            self.total.drop(DropReason::UnknownSsrc);
            return;
        };
        let routed = router.on_rtp(
            now,
            id,
            force_mute,
            &rtp,
            &mut self.transports,
            io,
            &mut self.total,
        );
        let wanted = router.take_keyframe_requests();
        if let Err(reason) = routed {
            if let Some(t) = self.transports.get_mut(&id) {
                t.counters.drop(reason);
            }
            self.total.drop(reason);
        }
        for ssrc in wanted.iter() {
            self.request_keyframe(now, router_id, ssrc, io);
        }
    }

    /// SRTCP: unprotect in place and check the compound (RFC 3550 6.1), then terminate it per leg.
    fn on_rtcp(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8], io: &mut Io) {
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
                t.drop_counted(reason, &mut self.total);
                return;
            }
        };
        let router = t.router;
        let force_mute = t.force_mute;
        let Some(pkt) = buf.get(..len) else {
            self.total.drop(DropReason::SrtpOther);
            return;
        };
        if validate_compound(pkt).is_err() {
            t.drop_counted(DropReason::RtcpMalformed, &mut self.total);
            return;
        }
        self.terminate_rtcp(now, id, router, force_mute, pkt, io);
    }
}

/// The transport that owns datagrams from `from`, with their arrival counted on it; an unknown address
/// is counted as a drop. Free function over the fields so the caller keeps the others borrowable.
#[inline]
fn claim<'a>(
    by_addr: &HashMap<SocketAddr, TransportId>,
    transports: &'a mut IdMap<Transport>,
    total: &mut Counters,
    from: SocketAddr,
    len: usize,
) -> Option<(TransportId, &'a mut Transport)> {
    let t = by_addr.get(&from).and_then(|id| transports.get_mut(id));
    let Some(t) = t else {
        total.drop(DropReason::UnknownAddress);
        return None;
    };
    t.counters.packets_in += 1;
    t.counters.bytes_in += len as u64;
    Some((t.id, t))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_shard;
    use crate::dtls::{DtlsCert, DtlsConn, DtlsRole, DtlsSetup, HashAlg};
    use crate::ice::IceCredentials;
    use crate::io::{classify, DatagramKind, RecvBatch, SendBatch, UdpSocket};
    use crate::seam::Command;
    use crate::stats::DropReason;
    use std::time::Instant;

    #[test]
    fn dtls_before_the_remote_description_is_kept_and_answered_on_connect() {
        let cert = DtlsCert::generate().expect("cert");
        let mut shard = test_shard(cert.clone());
        let now = Instant::now();
        let ice = IceCredentials {
            ufrag: "early".into(),
            pwd: "p".repeat(24),
        };
        shard.handle_command(
            now,
            Command::CreateTransport {
                router: 1,
                transport: 10,
                ice,
                controlling: true,
            },
        );
        let peer = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        // As if the peer's ICE check had been authenticated already.
        shard.state.by_addr.insert(peer.local_addr(), 10);

        let peer_cert = DtlsCert::generate().expect("cert");
        let mut client = DtlsConn::new(
            &peer_cert,
            DtlsRole::Client,
            vec![cert.fingerprint(HashAlg::Sha256)],
        )
        .expect("dtls");
        client.start(now);
        let mut batch = SendBatch::new(8);
        while let Some(d) = client.poll_transmit() {
            batch.push(&d, shard.local_addrs()[0]);
        }
        peer.send_batch(&mut batch);
        let deadline = Instant::now() + Duration::from_secs(2);
        while shard.state.transports[&10].counters.packets_in == 0 && Instant::now() < deadline {
            shard.poll_io(Instant::now());
        }
        assert_eq!(shard.stats().total.drops(DropReason::DtlsUnexpected), 0);

        shard.handle_command(
            Instant::now(),
            Command::ConnectTransport {
                transport: 10,
                remote_ice: IceCredentials {
                    ufrag: "peer".into(),
                    pwd: "q".repeat(24),
                },
                fingerprints: vec![peer_cert.fingerprint(HashAlg::Sha256)],
                remote_setup: DtlsSetup::Active,
            },
        );
        // The server's first flight goes back to the peer without waiting for a retransmission.
        let mut rx = RecvBatch::new(8);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got_dtls = false;
        while !got_dtls && Instant::now() < deadline {
            if peer.recv_batch(&mut rx).expect("recv") > 0 {
                got_dtls = (0..rx.len()).any(|i| {
                    rx.get_mut(i)
                        .is_some_and(|(d, _)| classify(d) == DatagramKind::Dtls)
                });
            }
        }
        assert!(got_dtls, "no DTLS answer to the early ClientHello");
    }
}
