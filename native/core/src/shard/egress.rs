//! The shard's way out: one socket and one send batch per local address, flushed with sendmmsg when a
//! batch fills and at the end of every loop step.
//!
//! Media and the bridge's RTCP leave through `Transport::send_protected`, the one protected-send path
//! (the Router's fan-out and `State::send_rtcp` both call it); control datagrams (STUN, DTLS) through
//! `Io::send_plain`.

use std::net::SocketAddr;
use std::time::Instant;

use super::State;
use crate::domain::TransportId;
use crate::io::tcp::TcpIo;
use crate::io::{Egress, SendBatch, UdpSocket};
use crate::stats::{Counters, DropReason};
use crate::transport::{Protect, Transmit, Transport};

/// Sockets and egress batches, one batch per socket; and the ICE-TCP listener, if enabled.
pub struct Io {
    sockets: Vec<UdpSocket>,
    send: Vec<SendBatch>,
    pub(super) tcp: Option<TcpIo>,
    /// A transport's pacer started holding packets since the last `take_paced`.
    paced: bool,
    /// The loop turn's time, for the TCP connections' progress timers.
    now: Instant,
}

/// Where a datagram from a local address leaves.
enum Way {
    Udp(usize),
    Tcp,
}

impl Io {
    pub(super) fn new(sockets: Vec<UdpSocket>, send: Vec<SendBatch>, tcp: Option<TcpIo>) -> Self {
        debug_assert_eq!(sockets.len(), send.len(), "one batch per socket");
        Io {
            sockets,
            send,
            tcp,
            paced: false,
            now: Instant::now(),
        }
    }

    pub(super) fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    pub(super) fn sockets(&self) -> &[UdpSocket] {
        &self.sockets
    }

    pub(super) fn batches(&self) -> &[SendBatch] {
        &self.send
    }

    /// The way out for a local address: its UDP socket, the ICE-TCP listener's connections, or else
    /// the first UDP socket of the same family.
    #[inline]
    fn way_for(&self, local: SocketAddr) -> Way {
        if let Some(i) = self.sockets.iter().position(|s| s.local_addr() == local) {
            return Way::Udp(i);
        }
        if self.tcp.as_ref().is_some_and(|t| t.local_addr() == local) {
            return Way::Tcp;
        }
        Way::Udp(
            self.sockets
                .iter()
                .position(|s| s.local_addr().is_ipv4() == local.is_ipv4())
                .unwrap_or(0),
        )
    }

    /// Queues one control datagram of `t` as it is (STUN and DTLS carry their own protection).
    pub(super) fn send_plain(&mut self, t: &mut Transport, total: &mut Counters, tx: &Transmit) {
        if self.batch_for(tx.source).push(&tx.contents, tx.destination) {
            t.counters.packets_out += 1;
            t.counters.bytes_out += tx.contents.len() as u64;
            total.packets_out += 1;
            total.bytes_out += tx.contents.len() as u64;
        } else {
            t.drop_counted(DropReason::EgressFailed, total);
        }
    }

    pub(super) fn flush(&mut self) {
        for (s, b) in self.sockets.iter().zip(self.send.iter_mut()) {
            if !b.is_empty() {
                s.send_batch(b);
            }
        }
        if let Some(tcp) = &mut self.tcp {
            tcp.flush(self.now);
        }
    }

    /// Whether a pacer started holding packets since last asked.
    pub(super) fn take_paced(&mut self) -> bool {
        std::mem::take(&mut self.paced)
    }

    /// Forgets whatever is queued (the fuzz entry point never puts its output on the wire).
    #[cfg(feature = "fuzzing")]
    pub(super) fn discard(&mut self) {
        self.send.iter_mut().for_each(|b| b.clear());
        if let Some(tcp) = &mut self.tcp {
            tcp.batch(self.now).clear();
        }
    }
}

impl Egress for Io {
    /// The batch of the socket for `local`, flushed first with sendmmsg if it is full.
    #[inline]
    fn batch_for(&mut self, local: SocketAddr) -> &mut SendBatch {
        match self.way_for(local) {
            Way::Udp(idx) => {
                if self.send[idx].is_full() {
                    self.sockets[idx].send_batch(&mut self.send[idx]);
                }
                &mut self.send[idx]
            }
            Way::Tcp => match &mut self.tcp {
                Some(tcp) => tcp.batch(self.now),
                None => &mut self.send[0],
            },
        }
    }

    fn paced(&mut self) {
        self.paced = true;
    }
}

impl State {
    /// Protects a plain RTCP compound for one transport and queues it.
    pub(super) fn send_rtcp(&mut self, to: TransportId, packet: &[u8], io: &mut Io) {
        if let Some(t) = self.transports.get_mut(&to) {
            t.send_protected(Protect::Rtcp, packet, io, &mut self.total);
        }
    }
}
