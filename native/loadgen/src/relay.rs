//! The raw relay baseline: recvmmsg → fan-out to the other members of the sender's group →
//! sendmmsg, with no crypto and no parsing. It is the physical limit a bridge is compared against:
//! the same kernel I/O, the same copy per receiver, nothing else.
//!
//! How it knows the group: the first datagram from an address it has not seen carries the group as
//! a big-endian u32 [`GROUP_TAG_FROM_END`] bytes before its end (36: inside the loadgen payload's
//! trailer, which ends every packet whatever codec prefix comes before it). That address joins the
//! group for good; later datagrams from it are routed by address alone, like the bridge routes media
//! by address after ICE. A first datagram too short to carry the tag is dropped and counted.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_core::io::{RecvBatch, SendBatch, UdpSocket};

use crate::payload::group_tag;
pub use crate::payload::GROUP_TAG_FROM_END;

/// Datagrams per recvmmsg/sendmmsg, as in the bridge's shard.
const BATCH: usize = 64;
/// Receive batches per turn before the caller may check its stop flag.
const RECV_ROUNDS: usize = 8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// First datagrams from an unknown address too short to carry the group tag.
    pub untagged: u64,
    /// Fan-out copies that did not fit a datagram buffer or were refused by the kernel.
    pub send_failed: u64,
    pub members: u64,
    pub groups: u64,
    pub recv_calls: u64,
    pub recv_syscall_packets: u64,
    pub send_calls: u64,
    pub send_syscall_packets: u64,
}

impl RelayStats {
    /// Every counter with its field name.
    pub fn named(&self) -> [(&'static str, u64); 12] {
        [
            ("packets_in", self.packets_in),
            ("bytes_in", self.bytes_in),
            ("packets_out", self.packets_out),
            ("bytes_out", self.bytes_out),
            ("untagged", self.untagged),
            ("send_failed", self.send_failed),
            ("members", self.members),
            ("groups", self.groups),
            ("recv_calls", self.recv_calls),
            ("recv_syscall_packets", self.recv_syscall_packets),
            ("send_calls", self.send_calls),
            ("send_syscall_packets", self.send_syscall_packets),
        ]
    }

    /// Mean datagrams per recvmmsg and per sendmmsg call (0 before any).
    pub fn packets_per_call(&self) -> (f64, f64) {
        let per = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        (
            per(self.recv_syscall_packets, self.recv_calls),
            per(self.send_syscall_packets, self.send_calls),
        )
    }

    /// One JSON object: the raw_relay program's stats line.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (k, v) in self.named() {
            let _ = write!(out, "\"{k}\":{v},");
        }
        let (recv, send) = self.packets_per_call();
        let _ = write!(
            out,
            "\"packets_per_recv_call\":{recv},\"packets_per_send_call\":{send}}}"
        );
        out
    }
}

pub struct RawRelay {
    sock: UdpSocket,
    recv: RecvBatch,
    send: SendBatch,
    by_addr: HashMap<SocketAddr, u32>,
    groups: HashMap<u32, Vec<SocketAddr>>,
    stats: RelayStats,
}

impl RawRelay {
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(RawRelay {
            sock: UdpSocket::bind(addr)?,
            recv: RecvBatch::new(BATCH),
            send: SendBatch::new(BATCH),
            by_addr: HashMap::new(),
            groups: HashMap::new(),
            stats: RelayStats::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr()
    }

    pub fn stats(&self) -> RelayStats {
        let mut s = self.stats;
        s.recv_calls = self.recv.calls;
        s.recv_syscall_packets = self.recv.packets;
        s.send_calls = self.send.calls;
        s.send_syscall_packets = self.send.packets;
        s.send_failed += self.send.dropped;
        s.members = self.by_addr.len() as u64;
        s.groups = self.groups.len() as u64;
        s
    }

    /// Receives and fans out whatever is queued (bounded); returns the datagrams received.
    pub fn poll(&mut self) -> usize {
        let mut total = 0;
        for _ in 0..RECV_ROUNDS {
            let n = self.sock.recv_batch(&mut self.recv).unwrap_or(0);
            if n == 0 {
                break;
            }
            total += n;
            for i in 0..n {
                let Some((buf, from)) = self.recv.get_mut(i) else {
                    continue;
                };
                self.stats.packets_in += 1;
                self.stats.bytes_in += buf.len() as u64;
                let group = match self.by_addr.get(&from) {
                    Some(&g) => g,
                    None => {
                        let Some(g) = group_tag(buf) else {
                            self.stats.untagged += 1;
                            continue;
                        };
                        self.by_addr.insert(from, g);
                        self.groups.entry(g).or_default().push(from);
                        g
                    }
                };
                let Some(members) = self.groups.get(&group) else {
                    continue;
                };
                for &to in members {
                    if to == from {
                        continue;
                    }
                    if self.send.is_full() {
                        self.sock.send_batch(&mut self.send);
                    }
                    if self.send.push(buf, to) {
                        self.stats.packets_out += 1;
                        self.stats.bytes_out += buf.len() as u64;
                    } else {
                        self.stats.send_failed += 1;
                    }
                }
            }
            if !self.send.is_empty() {
                self.sock.send_batch(&mut self.send);
            }
            if n < self.recv.capacity() {
                break;
            }
        }
        total
    }

    /// Sleeps until the socket is readable or `timeout_ms` passed.
    pub fn wait(&self, timeout_ms: i32) {
        let mut p = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
    }

    /// Runs until `stop` is set (checked at least every 10 ms).
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if self.poll() == 0 {
                self.wait(10);
            }
        }
    }
}
