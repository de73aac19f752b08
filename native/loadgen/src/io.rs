//! recvmmsg/sendmmsg batches that also carry each datagram's local IPv4 address (IP_PKTINFO).
//!
//! Why: on loopback every 127.0.0.0/8 address is local, so one socket bound to 0.0.0.0 can stand for
//! thousands of endpoints, each with its own address 127.a.b.c on the same port. The bridge still sees
//! one address per endpoint, and the load generator sends and receives for all of them in whole
//! batches instead of one syscall per endpoint. Per-endpoint sockets use the same batches without
//! the control message.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::RawFd;

pub use sluice_core::io::MAX_DATAGRAM;
use sluice_core::io::{from_sockaddr, to_sockaddr};

/// Room for one IP_PKTINFO control message (CMSG_SPACE(12) = 32 on 64-bit), 8-byte aligned.
type CmsgBuf = [u64; 8];

fn cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE only computes a length.
    unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize }
}

/// Turns on IP_PKTINFO reporting for received datagrams.
pub fn enable_pktinfo(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int and the length matches.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Datagrams to send through one socket, each optionally from a chosen local IPv4 address.
pub struct TxBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    lens: Box<[usize]>,
    dsts: Box<[libc::sockaddr_storage]>,
    dst_lens: Box<[libc::socklen_t]>,
    srcs: Box<[Option<Ipv4Addr>]>,
    cmsgs: Box<[CmsgBuf]>,
    iovecs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    count: usize,
    /// sendmmsg calls, datagrams sent, datagrams the kernel refused.
    pub calls: u64,
    pub packets: u64,
    pub dropped: u64,
}

// SAFETY: the raw pointers in iovecs/hdrs only point into this struct's own boxes and are rewritten
// before every syscall.
unsafe impl Send for TxBatch {}

impl TxBatch {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        TxBatch {
            bufs: vec![[0u8; MAX_DATAGRAM]; capacity].into_boxed_slice(),
            lens: vec![0; capacity].into_boxed_slice(),
            // SAFETY: all-zero is a valid value for these plain C structs.
            dsts: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            dst_lens: vec![0; capacity].into_boxed_slice(),
            srcs: vec![None; capacity].into_boxed_slice(),
            cmsgs: vec![[0u64; 8]; capacity].into_boxed_slice(),
            iovecs: (0..capacity)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            // SAFETY: as above.
            hdrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            count: 0,
            calls: 0,
            packets: 0,
            dropped: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count == self.bufs.len()
    }

    /// The next free buffer; `None` when full (send first).
    pub fn slot(&mut self) -> Option<&mut [u8; MAX_DATAGRAM]> {
        self.bufs.get_mut(self.count)
    }

    /// Queues the datagram written into the current slot.
    pub fn commit(&mut self, len: usize, to: SocketAddr, src: Option<Ipv4Addr>) {
        if self.count >= self.bufs.len() {
            return;
        }
        let (storage, slen) = to_sockaddr(to);
        self.dsts[self.count] = storage;
        self.dst_lens[self.count] = slen;
        self.lens[self.count] = len.min(MAX_DATAGRAM);
        self.srcs[self.count] = src;
        self.count += 1;
    }

    /// Copies `data` into the next slot and queues it; false when full or too large.
    pub fn push(&mut self, data: &[u8], to: SocketAddr, src: Option<Ipv4Addr>) -> bool {
        if data.len() > MAX_DATAGRAM {
            return false;
        }
        let Some(slot) = self.slot() else {
            return false;
        };
        slot[..data.len()].copy_from_slice(data);
        self.commit(data.len(), to, src);
        true
    }

    fn prepare(&mut self) {
        let space = cmsg_space();
        for i in 0..self.count {
            self.iovecs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.dsts[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = self.dst_lens[i];
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_flags = 0;
            match self.srcs[i] {
                Some(src) => {
                    hdr.msg_control = self.cmsgs[i].as_mut_ptr().cast();
                    hdr.msg_controllen = space;
                    // SAFETY: msg_control points at a zero-initialised, aligned buffer of `space`
                    // bytes, enough for one cmsghdr with an in_pktinfo (CMSG_SPACE above).
                    unsafe {
                        let c = libc::CMSG_FIRSTHDR(hdr);
                        (*c).cmsg_level = libc::IPPROTO_IP;
                        (*c).cmsg_type = libc::IP_PKTINFO;
                        (*c).cmsg_len =
                            libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
                        let info = libc::in_pktinfo {
                            ipi_ifindex: 0,
                            ipi_spec_dst: libc::in_addr {
                                s_addr: u32::from_ne_bytes(src.octets()),
                            },
                            ipi_addr: libc::in_addr { s_addr: 0 },
                        };
                        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                    }
                }
                None => {
                    hdr.msg_control = std::ptr::null_mut();
                    hdr.msg_controllen = 0;
                }
            }
            self.hdrs[i].msg_len = 0;
        }
    }

    /// Sends everything queued on `fd` with as few sendmmsg calls as the kernel allows, then
    /// clears the batch. A datagram the kernel refuses is skipped and counted in `dropped`.
    pub fn send(&mut self, fd: RawFd) {
        self.prepare();
        let mut start = 0;
        while start < self.count {
            // SAFETY: hdrs[start..count] point into buffers owned by `self`, prepared above.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(start),
                    (self.count - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            self.calls += 1;
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.dropped += 1;
                start += 1;
                continue;
            }
            self.packets += n as u64;
            start += n as usize;
        }
        self.count = 0;
    }
}

/// Received datagrams with their source and (with IP_PKTINFO on) the address they were sent to.
pub struct RxBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    srcs: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
    iovecs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    count: usize,
    /// recvmmsg calls that returned data, and datagrams received.
    pub calls: u64,
    pub packets: u64,
}

// SAFETY: see TxBatch.
unsafe impl Send for RxBatch {}

impl RxBatch {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        RxBatch {
            bufs: vec![[0u8; MAX_DATAGRAM]; capacity].into_boxed_slice(),
            // SAFETY: all-zero is a valid value for these plain C structs.
            srcs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            cmsgs: vec![[0u64; 8]; capacity].into_boxed_slice(),
            iovecs: (0..capacity)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            // SAFETY: as above.
            hdrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            count: 0,
            calls: 0,
            packets: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// One recvmmsg on `fd`; 0 when nothing is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let space = size_of::<CmsgBuf>();
        for i in 0..self.bufs.len() {
            self.iovecs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.srcs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            hdr.msg_controllen = space;
            hdr.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every mmsghdr points into buffers owned by `self` that outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(err),
            };
        }
        self.count = n as usize;
        self.calls += 1;
        self.packets += n as u64;
        Ok(self.count)
    }

    /// Datagram `i` of the last receive (mutable, to decrypt in place), its source, and the IPv4
    /// address it was sent to when IP_PKTINFO is on. `None` for a truncated datagram or an unknown
    /// address family.
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr, Option<Ipv4Addr>)> {
        if i >= self.count {
            return None;
        }
        let hdr = &self.hdrs[i];
        if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = (hdr.msg_len as usize).min(MAX_DATAGRAM);
        let from = from_sockaddr(&self.srcs[i])?;
        let mut dst = None;
        // SAFETY: the kernel filled msg_control with msg_controllen bytes of well-formed cmsgs;
        // CMSG_FIRSTHDR/NXTHDR stay inside that length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&hdr.msg_hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                    let info: libc::in_pktinfo =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    dst = Some(Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes()));
                }
                c = libc::CMSG_NXTHDR(&hdr.msg_hdr, c);
            }
        }
        Some((&mut self.bufs[i][..len], from, dst))
    }
}

/// The loopback address of shared-socket endpoint `index`: 127.a.b.c with c in 1..=254, starting at
/// 127.1.0.1 (127.0.0.0/16 is left to everything else on the host).
pub fn loopback_ip(index: u32) -> Ipv4Addr {
    let c = (index % 254) as u8 + 1;
    let rest = index / 254;
    let b = (rest % 256) as u8;
    let a = (1 + rest / 256).min(254) as u8;
    Ipv4Addr::new(127, a, b, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::io::UdpSocket;
    use std::net::IpAddr;
    use std::os::fd::AsRawFd;

    #[test]
    fn loopback_ips_are_distinct_and_avoid_0_and_255() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..200_000 {
            let ip = loopback_ip(i);
            assert!(seen.insert(ip), "{i} -> {ip}");
            let o = ip.octets();
            assert_eq!(o[0], 127);
            assert!(o[1] >= 1 && o[3] != 0 && o[3] != 255, "{ip}");
        }
    }

    #[test]
    fn one_socket_sends_from_and_receives_for_many_loopback_addresses() {
        let shared = UdpSocket::bind("0.0.0.0:0".parse().expect("literal")).expect("bind");
        enable_pktinfo(shared.as_raw_fd()).expect("pktinfo");
        let port = shared.local_addr().port();
        let peer = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let mut tx = TxBatch::new(16);
        for i in 0..10u32 {
            assert!(tx.push(&[i as u8; 50], peer.local_addr(), Some(loopback_ip(i))));
        }
        tx.send(shared.as_raw_fd());
        assert_eq!((tx.packets, tx.dropped), (10, 0));

        let mut rx = RxBatch::new(32);
        let mut got = Vec::new();
        for _ in 0..200 {
            let n = rx.recv(peer.as_raw_fd()).expect("recv");
            for k in 0..n {
                let (buf, from, _) = rx.get_mut(k).expect("datagram");
                got.push((buf[0], from));
            }
            if got.len() == 10 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let want: Vec<_> = (0..10u32)
            .map(|i| (i as u8, SocketAddr::new(IpAddr::V4(loopback_ip(i)), port)))
            .collect();
        assert_eq!(got, want);

        // And back: each datagram says which endpoint address it was for.
        let mut back = TxBatch::new(16);
        for i in 0..10u32 {
            let to = SocketAddr::new(IpAddr::V4(loopback_ip(i)), port);
            assert!(back.push(&[i as u8; 20], to, None));
        }
        back.send(peer.as_raw_fd());
        let mut got = Vec::new();
        for _ in 0..200 {
            let n = rx.recv(shared.as_raw_fd()).expect("recv");
            for k in 0..n {
                let (buf, from, dst) = rx.get_mut(k).expect("datagram");
                assert_eq!(from, peer.local_addr());
                got.push((buf[0], dst));
            }
            if got.len() == 10 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let want: Vec<_> = (0..10u32)
            .map(|i| (i as u8, Some(loopback_ip(i))))
            .collect();
        assert_eq!(got, want);
    }
}
