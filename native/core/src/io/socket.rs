//! Non-blocking UDP sockets with `recvmmsg`/`sendmmsg` batches over preallocated buffers.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Largest datagram we receive or send. Media is ~1200 bytes; anything larger is truncated and dropped.
pub const MAX_DATAGRAM: usize = 2048;

/// Socket buffer size we ask for: bursts of fan-out must not overflow the kernel queue.
const SOCKET_BUFFER: libc::c_int = 8 << 20;

/// One UDP socket bound to one local address.
pub struct UdpSocket {
    fd: OwnedFd,
    local: SocketAddr,
}

impl UdpSocket {
    /// Binds a non-blocking UDP socket. IPv6 sockets are v6-only so that an IPv4 socket may share the port.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                domain,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if addr.is_ipv6() {
            setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
        }
        // Best effort: past net.core.rmem_max/wmem_max only with CAP_NET_ADMIN (the *FORCE options);
        // without it the kernel caps the plain ones there without failing. A burst (every sender's
        // keyframe at once) must not overflow the queue while the shard waits for a CPU.
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            buffer(raw, force, plain, SOCKET_BUFFER);
        }
        if addr.is_ipv4() {
            // DF on every datagram, the path MTU ignored (as QUIC stacks do): an unfragmentable
            // datagram needs no IP ID (RFC 6864), which spares the kernel's per-datagram ID hash
            // (about 3 % of a loopback send and receive here). What we send fits an MTU (media as
            // received, DTLS cut to ours); one larger than the interface's fails and is counted.
            let _ = setsockopt(
                raw,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            );
        }
        let (storage, len) = to_sockaddr(addr);
        // SAFETY: storage is a valid sockaddr of `len` bytes for this family.
        let rc =
            unsafe { libc::bind(raw, (&storage as *const libc::sockaddr_storage).cast(), len) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let local = local_addr(raw)?;
        Ok(UdpSocket { fd, local })
    }

    /// The bound address (with the kernel-chosen port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Asks for a receive buffer of `bytes` instead of the default 8 MB (best effort, as at bind).
    pub fn set_receive_buffer(&self, bytes: libc::c_int) {
        buffer(
            self.fd.as_raw_fd(),
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            bytes,
        );
    }

    /// Asks the kernel for the local IPv4 address each datagram was sent to (IP_PKTINFO), read back
    /// with [`RecvBatch::destination`] from a batch made by [`RecvBatch::with_control`]. With it, one
    /// socket bound to 0.0.0.0 can answer for many local addresses (the load generator's loopback
    /// endpoints).
    pub fn enable_pktinfo(&self) -> io::Result<()> {
        setsockopt(self.fd.as_raw_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    }

    /// Asks the kernel to stamp each datagram with the time it reached this socket (SO_TIMESTAMPNS,
    /// CLOCK_REALTIME), read back with [`RecvBatch::received_at`] from a batch made by
    /// [`RecvBatch::with_control`]. The gap between that stamp and the read is how long the datagram
    /// waited for its reader.
    pub fn enable_rx_timestamps(&self) -> io::Result<()> {
        setsockopt(
            self.fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            1,
        )
    }

    /// Receives up to `batch.capacity()` datagrams in one `recvmmsg`. Returns 0 when nothing is queued.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.recv_on(self.as_fd())
    }

    /// Sends every queued datagram with as few `sendmmsg` calls as the kernel allows, then clears the batch.
    /// Datagrams the kernel refuses (full buffer, unreachable) are dropped and counted in `batch.dropped`.
    pub fn send_batch(&self, batch: &mut SendBatch) {
        batch.send_on(self.as_fd());
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Room for an IP_PKTINFO and an SCM_TIMESTAMPNS control message (CMSG_SPACE of each is 32 bytes
/// on 64-bit), 8-byte aligned as cmsghdr requires.
type CmsgBuf = [u64; 8];

fn pktinfo_space() -> usize {
    // SAFETY: CMSG_SPACE only computes a length.
    unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize }
}

fn iovecs(capacity: usize) -> Box<[libc::iovec]> {
    (0..capacity)
        .map(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        })
        .collect()
}

fn zeroed_slice<T>(capacity: usize) -> Box<[T]> {
    // SAFETY: only used for plain C structs (sockaddr_storage, mmsghdr), for which all-zero is valid.
    (0..capacity).map(|_| unsafe { zeroed() }).collect()
}

/// Preallocated buffers and headers for `recvmmsg`.
pub struct RecvBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    /// One control buffer per datagram (IP_PKTINFO, SO_TIMESTAMPNS) in a batch made with_control,
    /// else empty.
    cmsgs: Box<[CmsgBuf]>,
    iovecs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    count: usize,
    /// `recvmmsg` calls that returned data, and datagrams received: their ratio is the batch size.
    pub calls: u64,
    pub packets: u64,
}

// SAFETY: the raw pointers inside iovecs/hdrs only ever point into this struct's own boxes and are
// rewritten by `prepare` before every syscall.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(capacity: usize) -> Self {
        Self::build(capacity, false)
    }

    /// A batch that also keeps each datagram's control messages: its destination address on a socket
    /// with [`UdpSocket::enable_pktinfo`], its arrival time with [`UdpSocket::enable_rx_timestamps`].
    pub fn with_control(capacity: usize) -> Self {
        Self::build(capacity, true)
    }

    fn build(capacity: usize, control: bool) -> Self {
        let capacity = capacity.max(1);
        RecvBatch {
            bufs: vec![[0u8; MAX_DATAGRAM]; capacity].into_boxed_slice(),
            addrs: zeroed_slice(capacity),
            cmsgs: vec![[0u64; 8]; if control { capacity } else { 0 }].into_boxed_slice(),
            iovecs: iovecs(capacity),
            hdrs: zeroed_slice(capacity),
            count: 0,
            calls: 0,
            packets: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Datagrams from the last receive.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// One `recvmmsg` on `fd` (see [`UdpSocket::recv_batch`]), for a caller that keeps sockets apart
    /// from their batches.
    pub fn recv_on(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.prepare();
        // SAFETY: every mmsghdr points into buffers owned by `self` that outlive the call; vlen matches.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            self.count = 0;
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

    /// Datagram `i` of the last receive, mutable so it can be decrypted in place, and its source.
    /// Returns `None` for a truncated datagram (larger than MAX_DATAGRAM) or an unknown address family.
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let hdr = &self.hdrs[i];
        if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = (hdr.msg_len as usize).min(MAX_DATAGRAM);
        let from = from_sockaddr(&self.addrs[i])?;
        Some((&mut self.bufs[i][..len], from))
    }

    /// The local IPv4 address datagram `i` was sent to, from its IP_PKTINFO (a batch made by
    /// [`RecvBatch::with_control`], on a socket with [`UdpSocket::enable_pktinfo`]).
    pub fn destination(&self, i: usize) -> Option<Ipv4Addr> {
        let data = self.control(i, libc::IPPROTO_IP, libc::IP_PKTINFO)?;
        // SAFETY: an IP_PKTINFO message carries one in_pktinfo; read_unaligned needs no alignment.
        let info: libc::in_pktinfo = unsafe { std::ptr::read_unaligned(data.cast()) };
        Some(Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes()))
    }

    /// When datagram `i` reached the socket, in CLOCK_REALTIME nanoseconds, from its SCM_TIMESTAMPNS
    /// (a batch made by [`RecvBatch::with_control`], on a socket with
    /// [`UdpSocket::enable_rx_timestamps`]).
    pub fn received_at(&self, i: usize) -> Option<u64> {
        let data = self.control(i, libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS)?;
        // SAFETY: an SCM_TIMESTAMPNS message carries one timespec; read_unaligned needs no alignment.
        let ts: libc::timespec = unsafe { std::ptr::read_unaligned(data.cast()) };
        let secs = u64::try_from(ts.tv_sec).ok()?;
        let nanos = u64::try_from(ts.tv_nsec).ok()?;
        secs.checked_mul(1_000_000_000)?.checked_add(nanos)
    }

    /// The data of datagram `i`'s control message of this level and type, if the kernel gave one.
    fn control(&self, i: usize, level: libc::c_int, kind: libc::c_int) -> Option<*const u8> {
        if i >= self.count || self.cmsgs.is_empty() {
            return None;
        }
        let hdr = &self.hdrs[i].msg_hdr;
        // SAFETY: the kernel filled msg_control with msg_controllen bytes of well-formed cmsgs;
        // CMSG_FIRSTHDR/NXTHDR stay inside that length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                if (*c).cmsg_level == level && (*c).cmsg_type == kind {
                    return Some(libc::CMSG_DATA(c).cast_const());
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
        None
    }

    fn prepare(&mut self) {
        for i in 0..self.bufs.len() {
            self.iovecs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            };
            let hdr = &mut self.hdrs[i];
            hdr.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_hdr.msg_iovlen = 1;
            match self.cmsgs.get_mut(i) {
                Some(c) => {
                    hdr.msg_hdr.msg_control = c.as_mut_ptr().cast();
                    hdr.msg_hdr.msg_controllen = size_of::<CmsgBuf>();
                }
                None => {
                    hdr.msg_hdr.msg_control = std::ptr::null_mut();
                    hdr.msg_hdr.msg_controllen = 0;
                }
            }
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
    }
}

/// Preallocated buffers and headers for `sendmmsg`. Fill with `slot` + `commit`, flush with
/// [`UdpSocket::send_batch`].
pub struct SendBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    lens: Box<[usize]>,
    addrs: Box<[libc::sockaddr_storage]>,
    addr_lens: Box<[libc::socklen_t]>,
    /// With IP_PKTINFO: the local IPv4 address each datagram leaves from (None: the socket's own)
    /// and its control buffer. Both empty otherwise.
    sources: Box<[Option<Ipv4Addr>]>,
    cmsgs: Box<[CmsgBuf]>,
    iovecs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    count: usize,
    /// UDP GSO (`SendBatch::with_gso`): each datagram's destination as a number (for grouping), the
    /// next datagram to the same destination, each message's datagram count. Empty otherwise.
    keys: Box<[u64]>,
    next: Box<[u16]>,
    segments: Box<[u16]>,
    /// Group heads (first datagram per destination, in order of appearance), and their tails.
    heads: Box<[u16]>,
    tails: Box<[u16]>,
    gso: bool,
    /// `sendmmsg` calls, datagrams sent, datagrams the kernel refused.
    pub calls: u64,
    pub packets: u64,
    pub dropped: u64,
    /// Messages that carried several datagrams as one GSO send, and times the kernel refused one
    /// (GSO is then off for this batch and the datagrams go one by one).
    pub gso_sends: u64,
    pub gso_refused: u64,
}

/// `UDP_SEGMENT` (linux/udp.h), not in the libc crate for glibc targets.
const UDP_SEGMENT: libc::c_int = 103;
/// The kernel's limit on segments per GSO send (UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// A GSO send is one UDP datagram until segmented: its payload must fit in 16 bits of length.
const GSO_MAX_BYTES: usize = 65_000;
const NONE: u16 = u16::MAX;

// SAFETY: see RecvBatch.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(capacity: usize) -> Self {
        Self::build(capacity, false)
    }

    /// A batch whose datagrams may each leave from a chosen local IPv4 address
    /// ([`SendBatch::commit_from`]), through a socket bound to 0.0.0.0.
    pub fn with_pktinfo(capacity: usize) -> Self {
        Self::build(capacity, true)
    }

    /// A batch that sends the datagrams of one destination together with UDP GSO (`UDP_SEGMENT`):
    /// at flush they are grouped by destination (each destination's order kept), and a run of equal
    /// sizes (the last may be shorter) leaves as one message the kernel segments. A kernel that
    /// refuses it gets the datagrams one by one, and GSO stays off for this batch.
    pub fn with_gso(capacity: usize) -> Self {
        let mut b = Self::build(capacity, false);
        let capacity = b.bufs.len();
        b.keys = vec![0; capacity].into_boxed_slice();
        b.next = vec![NONE; capacity].into_boxed_slice();
        b.segments = vec![0; capacity].into_boxed_slice();
        b.heads = vec![NONE; capacity].into_boxed_slice();
        b.tails = vec![NONE; capacity].into_boxed_slice();
        b.cmsgs = vec![[0u64; 8]; capacity].into_boxed_slice();
        b.gso = true;
        b
    }

    /// Whether the next flush may use GSO.
    pub fn gso(&self) -> bool {
        self.gso
    }

    fn build(capacity: usize, pktinfo: bool) -> Self {
        let capacity = capacity.max(1);
        let with = if pktinfo { capacity } else { 0 };
        SendBatch {
            bufs: vec![[0u8; MAX_DATAGRAM]; capacity].into_boxed_slice(),
            lens: vec![0; capacity].into_boxed_slice(),
            addrs: zeroed_slice(capacity),
            addr_lens: vec![0; capacity].into_boxed_slice(),
            sources: vec![None; with].into_boxed_slice(),
            cmsgs: vec![[0u64; 8]; with].into_boxed_slice(),
            iovecs: iovecs(capacity),
            hdrs: zeroed_slice(capacity),
            count: 0,
            keys: Box::new([]),
            next: Box::new([]),
            segments: Box::new([]),
            heads: Box::new([]),
            tails: Box::new([]),
            gso: false,
            calls: 0,
            packets: 0,
            dropped: 0,
            gso_sends: 0,
            gso_refused: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Forgets every queued datagram without sending.
    pub fn clear(&mut self) {
        let n = self.count.min(self.sources.len());
        self.sources[..n].fill(None);
        self.count = 0;
    }

    pub fn is_full(&self) -> bool {
        self.count == self.bufs.len()
    }

    /// The next free buffer to write a datagram into; `None` when the batch is full (flush first).
    pub fn slot(&mut self) -> Option<&mut [u8; MAX_DATAGRAM]> {
        self.bufs.get_mut(self.count)
    }

    /// Queues the datagram written into the current slot.
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        debug_assert!(self.count < self.bufs.len() && len <= MAX_DATAGRAM);
        if self.count >= self.bufs.len() {
            return;
        }
        let (storage, slen) = to_sockaddr(to);
        self.addrs[self.count] = storage;
        self.addr_lens[self.count] = slen;
        if let Some(k) = self.keys.get_mut(self.count) {
            *k = destination_key(to);
        }
        self.lens[self.count] = len.min(MAX_DATAGRAM);
        self.count += 1;
    }

    /// Queues the datagram written into the current slot, to leave from local address `from`
    /// (a batch made by [`SendBatch::with_pktinfo`]; otherwise like [`SendBatch::commit`]).
    pub fn commit_from(&mut self, len: usize, to: SocketAddr, from: Ipv4Addr) {
        if let Some(s) = self.sources.get_mut(self.count) {
            *s = Some(from);
        }
        self.commit(len, to);
    }

    /// Datagram `i` as queued, with its destination (for a caller that frames them itself).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let to = from_sockaddr(&self.addrs[i])?;
        Some((&self.bufs[i][..self.lens[i]], to))
    }

    /// Copies `data` into the next slot and queues it. Returns false when the batch is full or it is too big.
    pub fn push(&mut self, data: &[u8], to: SocketAddr) -> bool {
        if data.len() > MAX_DATAGRAM {
            return false;
        }
        let Some(slot) = self.slot() else {
            return false;
        };
        slot[..data.len()].copy_from_slice(data);
        self.commit(data.len(), to);
        true
    }

    /// Sends everything queued on `fd` (see [`UdpSocket::send_batch`]), for a caller that keeps
    /// sockets apart from their batches.
    pub fn send_on(&mut self, fd: BorrowedFd<'_>) {
        if self.gso && self.count > 1 {
            self.send_gso(fd);
            return;
        }
        let mut start = 0;
        self.prepare();
        while start < self.count {
            match self.sendmmsg(fd, start, self.count) {
                Ok(n) => {
                    self.packets += n as u64;
                    start += n;
                }
                Err(_) => {
                    // Skip the datagram that failed (e.g. EAGAIN or an unreachable destination) and go on.
                    self.dropped += 1;
                    start += 1;
                }
            }
        }
        self.count = 0;
    }

    /// One `sendmmsg` of the prepared messages `start..end` (retried on EINTR): how many went out.
    fn sendmmsg(&mut self, fd: BorrowedFd<'_>, start: usize, end: usize) -> io::Result<usize> {
        loop {
            // SAFETY: hdrs[start..end] were prepared (`prepare` or `prepare_gso`) and point into
            // iovecs, buffers, addresses and control buffers owned by `self`.
            let n = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr().add(start),
                    (end - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            self.calls += 1;
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// GSO flush: group, build one message per run, send; see [`SendBatch::with_gso`].
    fn send_gso(&mut self, fd: BorrowedFd<'_>) {
        let messages = self.prepare_gso();
        let mut start = 0;
        while start < messages {
            let n = match self.sendmmsg(fd, start, messages) {
                Ok(n) => n,
                Err(err) => {
                    let segs = self.segments[start] as usize;
                    if segs > 1
                        && matches!(
                            err.raw_os_error(),
                            Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
                        )
                    {
                        // The kernel or the route cannot segment: this message one by one, and no GSO
                        // from now on.
                        self.gso = false;
                        self.gso_refused += 1;
                        self.send_one_by_one(fd, start);
                    } else {
                        self.dropped += segs as u64;
                    }
                    start += 1;
                    continue;
                }
            };
            for m in start..start + n {
                let segs = self.segments[m];
                self.packets += u64::from(segs);
                self.gso_sends += u64::from(segs > 1);
            }
            start += n;
        }
        self.count = 0;
    }

    /// Sends the datagrams of message `m` each on its own (`sendmsg`), after the kernel refused GSO.
    fn send_one_by_one(&mut self, fd: BorrowedFd<'_>, m: usize) {
        let hdr = self.hdrs[m].msg_hdr;
        for k in 0..self.segments[m] as usize {
            let mut single = hdr;
            // SAFETY: msg_iov points at `segments[m]` consecutive iovecs of `self.iovecs`.
            single.msg_iov = unsafe { hdr.msg_iov.add(k) };
            single.msg_iovlen = 1;
            single.msg_control = std::ptr::null_mut();
            single.msg_controllen = 0;
            self.calls += 1;
            // SAFETY: `single` points at one prepared iovec and the message's destination.
            if unsafe { libc::sendmsg(fd.as_raw_fd(), &single, libc::MSG_DONTWAIT) } < 0 {
                self.dropped += 1;
            } else {
                self.packets += 1;
            }
        }
    }

    /// Groups the queued datagrams by destination and writes one message per run of equal sizes
    /// (the last of a run may be shorter); returns the number of messages.
    fn prepare_gso(&mut self) -> usize {
        let n = self.count;
        let mut groups = 0;
        for i in 0..n {
            self.next[i] = NONE;
            let g = (0..groups).find(|&g| {
                let h = self.heads[g] as usize;
                self.keys[h] == self.keys[i]
                    && same_destination(
                        &self.addrs[h],
                        self.addr_lens[h],
                        &self.addrs[i],
                        self.addr_lens[i],
                    )
            });
            match g {
                Some(g) => {
                    let tail = self.tails[g] as usize;
                    self.next[tail] = i as u16;
                    self.tails[g] = i as u16;
                }
                None => {
                    self.heads[groups] = i as u16;
                    self.tails[groups] = i as u16;
                    groups += 1;
                }
            }
        }
        let (mut iov, mut messages) = (0, 0);
        for g in 0..groups {
            let mut i = self.heads[g];
            while i != NONE {
                let first = i as usize;
                let size = self.lens[first];
                let (start, mut segs, mut total, mut last_len) = (iov, 0usize, 0usize, size);
                while i != NONE {
                    let len = self.lens[i as usize];
                    let fits = segs == 0
                        || (last_len == size
                            && len <= size
                            && segs < GSO_MAX_SEGMENTS
                            && total + len <= GSO_MAX_BYTES);
                    if !fits {
                        break;
                    }
                    self.iovecs[iov] = libc::iovec {
                        iov_base: self.bufs[i as usize].as_mut_ptr().cast(),
                        iov_len: len,
                    };
                    iov += 1;
                    segs += 1;
                    total += len;
                    last_len = len;
                    i = self.next[i as usize];
                }
                let hdr = &mut self.hdrs[messages];
                hdr.msg_hdr.msg_name =
                    (&mut self.addrs[first] as *mut libc::sockaddr_storage).cast();
                hdr.msg_hdr.msg_namelen = self.addr_lens[first];
                hdr.msg_hdr.msg_iov = &mut self.iovecs[start];
                hdr.msg_hdr.msg_iovlen = segs;
                hdr.msg_hdr.msg_control = std::ptr::null_mut();
                hdr.msg_hdr.msg_controllen = 0;
                hdr.msg_hdr.msg_flags = 0;
                hdr.msg_len = 0;
                if segs > 1 {
                    write_segment_size(&mut hdr.msg_hdr, &mut self.cmsgs[messages], size as u16);
                }
                self.segments[messages] = segs as u16;
                messages += 1;
            }
        }
        messages
    }

    fn prepare(&mut self) {
        for i in 0..self.count {
            self.iovecs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
            let hdr = &mut self.hdrs[i];
            hdr.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = self.addr_lens[i];
            hdr.msg_hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // Only a batch made with_pktinfo has sources; each is used once, so `commit` need not
        // clear it (the shard's batches stay as they were without).
        for i in 0..self.count.min(self.sources.len()) {
            if let Some(src) = self.sources[i].take() {
                write_pktinfo(&mut self.hdrs[i].msg_hdr, &mut self.cmsgs[i], src);
            }
        }
    }
}

/// A number for a destination, to compare cheaply before comparing addresses (equal addresses give
/// equal keys; equal keys are checked with `same_destination`).
fn destination_key(to: SocketAddr) -> u64 {
    match to {
        SocketAddr::V4(a) => (u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port()),
        SocketAddr::V6(a) => {
            let ip = u128::from(*a.ip());
            (ip as u64 ^ (ip >> 64) as u64).rotate_left(16) ^ u64::from(a.port())
        }
    }
}

fn same_destination(
    a: &libc::sockaddr_storage,
    alen: libc::socklen_t,
    b: &libc::sockaddr_storage,
    blen: libc::socklen_t,
) -> bool {
    let len = alen as usize;
    // SAFETY: both point at sockaddr_storage values at least `len` (<= their size) bytes long.
    alen == blen
        && len <= size_of::<libc::sockaddr_storage>()
        && unsafe {
            std::slice::from_raw_parts((a as *const libc::sockaddr_storage).cast::<u8>(), len)
                == std::slice::from_raw_parts(
                    (b as *const libc::sockaddr_storage).cast::<u8>(),
                    len,
                )
        }
}

/// Points `hdr` at `buf` holding one UDP_SEGMENT control message: the kernel cuts the message's
/// payload into datagrams of `size` bytes (the last may be shorter).
fn write_segment_size(hdr: &mut libc::msghdr, buf: &mut CmsgBuf, size: u16) {
    hdr.msg_control = buf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a length.
    hdr.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
    // SAFETY: msg_control points at an aligned buffer of 64 bytes, more than CMSG_SPACE(u16), so
    // CMSG_FIRSTHDR is non-null and one cmsghdr with its u16 fits.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(hdr);
        (*c).cmsg_level = libc::IPPROTO_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), size);
    }
}

/// Points `hdr` at `buf` holding one IP_PKTINFO control message that sends from `src`.
fn write_pktinfo(hdr: &mut libc::msghdr, buf: &mut CmsgBuf, src: Ipv4Addr) {
    hdr.msg_control = buf.as_mut_ptr().cast();
    hdr.msg_controllen = pktinfo_space();
    // SAFETY: msg_control points at an aligned buffer of CMSG_SPACE(in_pktinfo) bytes or more (zeroed
    // when made; only these fields are ever written), so CMSG_FIRSTHDR is non-null and one cmsghdr
    // with its in_pktinfo fits.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(hdr);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
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

/// Sets a buffer size past `net.core.*mem_max` (`force`, with CAP_NET_ADMIN), else as far as the
/// host's cap allows (`plain`: the kernel caps it without failing).
fn buffer(fd: RawFd, force: libc::c_int, plain: libc::c_int, bytes: libc::c_int) {
    if setsockopt(fd, libc::SOL_SOCKET, force, bytes).is_err() {
        let _ = setsockopt(fd, libc::SOL_SOCKET, plain, bytes);
    }
}

fn setsockopt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: value is a live c_int and the length matches.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: zeroed sockaddr_storage is valid; getsockname writes at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage/len are valid for writing.
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    from_sockaddr(&storage).ok_or_else(|| io::Error::other("unknown address family"))
}

/// Converts a Rust socket address to a C one.
pub fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// Converts a C socket address to a Rust one; `None` for other families.
pub fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // A v4-mapped source (dual-stack peer) is normalised so one peer has one address.
            if let Some(v4) = ip.to_ipv4_mapped() {
                return Some(SocketAddr::new(
                    IpAddr::V4(v4),
                    u16::from_be(sin6.sin6_port),
                ));
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer_size(sock: &UdpSocket, name: libc::c_int) -> usize {
        usize::try_from(int_option(sock, libc::SOL_SOCKET, name)).expect("size")
    }

    fn int_option(sock: &UdpSocket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len are live and sized for an int option.
        let rc = unsafe {
            libc::getsockopt(
                sock.fd.as_raw_fd(),
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt");
        value
    }

    #[test]
    fn a_larger_receive_buffer_is_had_where_the_host_allows() {
        let sock = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let asked: libc::c_int = 32 << 20;
        sock.set_receive_buffer(asked);
        // SAFETY: geteuid has no preconditions.
        let privileged = unsafe { libc::geteuid() } == 0;
        let want = if privileged {
            asked as usize
        } else {
            (asked as usize).min(sysctl("rmem_max"))
        };
        assert!(buffer_size(&sock, libc::SO_RCVBUF) >= 2 * want);
    }

    #[test]
    fn ipv4_datagrams_leave_unfragmentable_whatever_the_path_mtu() {
        let sock = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        assert_eq!(
            int_option(&sock, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_PROBE
        );
    }

    fn sysctl(name: &str) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn buffers_are_as_large_as_asked_or_as_the_host_allows() {
        let sock = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let asked = SOCKET_BUFFER as usize;
        // The kernel reports twice what was set (its bookkeeping share). With CAP_NET_ADMIN (root here)
        // the FORCE options pass the host's cap; without it the cap is the most there is.
        // SAFETY: geteuid has no preconditions.
        let privileged = unsafe { libc::geteuid() } == 0;
        for (name, cap) in [
            (libc::SO_RCVBUF, sysctl("rmem_max")),
            (libc::SO_SNDBUF, sysctl("wmem_max")),
        ] {
            let want = if privileged { asked } else { asked.min(cap) };
            assert!(
                buffer_size(&sock, name) >= 2 * want,
                "option {name}: cap {cap}"
            );
        }
    }

    #[test]
    fn sockaddr_round_trip() {
        for s in ["127.0.0.1:10000", "[::1]:443", "[fe80::1%2]:5", "0.0.0.0:0"] {
            let a: SocketAddr = s.parse().expect("test literal");
            let (st, _) = to_sockaddr(a);
            assert_eq!(from_sockaddr(&st), Some(a));
        }
    }

    #[test]
    fn batch_send_and_receive_on_loopback_v4_and_v6() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let a = UdpSocket::bind(bind.parse().expect("literal")).expect("bind a");
            let b = match UdpSocket::bind(bind.parse().expect("literal")) {
                Ok(b) => b,
                Err(_) if bind.starts_with('[') => return, // no IPv6 loopback here
                Err(e) => panic!("bind b: {e}"),
            };
            let mut tx = SendBatch::new(16);
            for i in 0..10u8 {
                assert!(tx.push(&[i; 100], b.local_addr()));
            }
            a.send_batch(&mut tx);
            assert_eq!(tx.packets, 10);
            let mut rx = RecvBatch::new(32);
            let mut got = 0;
            for _ in 0..100 {
                got += b.recv_batch(&mut rx).expect("recv");
                for i in 0..rx.len() {
                    let (data, from) = rx.get_mut(i).expect("datagram");
                    assert_eq!(data.len(), 100);
                    assert_eq!(from, a.local_addr());
                }
                if got == 10 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(got, 10);
        }
    }

    /// Every datagram `sock` receives within a second, up to `want`, whole.
    fn receive_all(sock: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
        receive_as(sock, &mut RecvBatch::new(64), want, |rx, k| {
            rx.get_mut(k).expect("datagram").0.to_vec()
        })
    }

    #[test]
    fn gso_sends_each_destinations_runs_together_and_plain_receivers_get_every_datagram_in_order() {
        let tx = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let a = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let mut batch = SendBatch::with_gso(64);
        // Interleaved as a fan-out queues them: a's run of 1,200s ends with a 500 and then starts
        // again; b's run is broken by a larger datagram.
        let plan: [(&UdpSocket, usize); 9] = [
            (&a, 1200),
            (&b, 1000),
            (&a, 1200),
            (&b, 1000),
            (&a, 500),
            (&b, 1200),
            (&a, 1200),
            (&b, 1000),
            (&a, 1200),
        ]; // fmt: skip
        let mut sent_a = Vec::new();
        let mut sent_b = Vec::new();
        for (k, (to, len)) in plan.iter().enumerate() {
            let data: Vec<u8> = (0..*len).map(|i| (i + k * 7) as u8).collect();
            assert!(batch.push(&data, to.local_addr()));
            if std::ptr::eq(*to, &a) {
                sent_a.push(data);
            } else {
                sent_b.push(data);
            }
        }
        tx.send_batch(&mut batch);
        assert_eq!((batch.packets, batch.dropped), (9, 0));
        if batch.gso_refused == 0 {
            // a: [1200, 1200, 500] then [1200, 1200]; b: [1000, 1000], then [1200, 1000] (a
            // shorter last segment is allowed).
            assert_eq!(batch.gso_sends, 4);
        }
        assert_eq!(
            receive_all(&a, 5),
            sent_a,
            "a gets its datagrams whole and in order"
        );
        assert_eq!(receive_all(&b, 4), sent_b);

        // Sizes that cannot be one send (more than the kernel's segment limit) are split.
        let mut batch = SendBatch::with_gso(128);
        let many: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 200]).collect();
        for d in &many {
            assert!(batch.push(d, a.local_addr()));
        }
        tx.send_batch(&mut batch);
        assert_eq!(batch.packets, 100);
        assert_eq!(receive_all(&a, 100), many);
    }

    /// Receives up to `want` datagrams on `sock` within a second, each as `take` makes it.
    fn receive_as<T>(
        sock: &UdpSocket,
        rx: &mut RecvBatch,
        want: usize,
        mut take: impl FnMut(&mut RecvBatch, usize) -> T,
    ) -> Vec<T> {
        let mut got = Vec::new();
        for _ in 0..1000 {
            let n = sock.recv_batch(rx).expect("recv");
            got.extend((0..n).map(|k| take(rx, k)));
            if got.len() >= want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        got
    }

    /// Receives up to `want` datagrams on `sock` within a second, each as (first byte, source,
    /// destination).
    fn receive(
        sock: &UdpSocket,
        rx: &mut RecvBatch,
        want: usize,
    ) -> Vec<(u8, SocketAddr, Option<Ipv4Addr>)> {
        receive_as(sock, rx, want, |rx, k| {
            let dst = rx.destination(k);
            let (buf, from) = rx.get_mut(k).expect("datagram");
            (buf[0], from, dst)
        })
    }

    #[test]
    fn one_wildcard_socket_sends_from_and_receives_for_many_loopback_addresses() {
        let shared = UdpSocket::bind("0.0.0.0:0".parse().expect("literal")).expect("bind");
        shared.enable_pktinfo().expect("pktinfo");
        let port = shared.local_addr().port();
        let peer = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let ip = |i: u8| Ipv4Addr::new(127, 1, 0, i + 1);

        // Out: each datagram leaves from its own loopback address; one without a source from the
        // kernel's choice.
        let mut tx = SendBatch::with_pktinfo(16);
        for i in 0..10u8 {
            let slot = tx.slot().expect("room");
            slot[0] = i;
            tx.commit_from(50, peer.local_addr(), ip(i));
        }
        assert!(tx.push(&[10; 50], peer.local_addr()));
        shared.send_batch(&mut tx);
        assert_eq!((tx.packets, tx.dropped), (11, 0));
        let mut rx = RecvBatch::new(32);
        let got = receive(&peer, &mut rx, 11);
        let mut want: Vec<_> = (0..10u8)
            .map(|i| (i, SocketAddr::from((ip(i), port)), None))
            .collect();
        want.push((10, SocketAddr::from((Ipv4Addr::LOCALHOST, port)), None));
        assert_eq!(got, want);
        // A source holds for its one datagram: the slot's next use leaves from the kernel's choice.
        assert!(tx.push(&[11; 5], peer.local_addr()));
        shared.send_batch(&mut tx);
        let got = receive(&peer, &mut rx, 1);
        assert_eq!(
            got,
            vec![(11, SocketAddr::from((Ipv4Addr::LOCALHOST, port)), None)]
        );

        // Back: each datagram says which local address it was for; a plain batch says nothing.
        let mut back = SendBatch::new(16);
        for i in 0..10u8 {
            assert!(back.push(&[i; 20], SocketAddr::from((ip(i), port))));
        }
        peer.send_batch(&mut back);
        let mut rx = RecvBatch::with_control(32);
        let got = receive(&shared, &mut rx, 10);
        let want: Vec<_> = (0..10u8)
            .map(|i| (i, peer.local_addr(), Some(ip(i))))
            .collect();
        assert_eq!(got, want);
        assert!(back.push(&[1], SocketAddr::from((ip(0), port))));
        peer.send_batch(&mut back);
        let mut plain = RecvBatch::new(4);
        assert_eq!(
            receive(&shared, &mut plain, 1),
            vec![(1, peer.local_addr(), None)]
        );
    }

    fn realtime_ns() -> u64 {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        u64::try_from(since.as_nanos()).expect("fits")
    }

    #[test]
    fn a_datagram_carries_its_arrival_time_and_destination_together() {
        let sock = UdpSocket::bind("0.0.0.0:0".parse().expect("literal")).expect("bind");
        sock.enable_pktinfo().expect("pktinfo");
        sock.enable_rx_timestamps().expect("timestamps");
        let port = sock.local_addr().port();
        let peer = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let before = realtime_ns();
        let mut tx = SendBatch::new(4);
        assert!(tx.push(
            &[7; 20],
            SocketAddr::from((Ipv4Addr::new(127, 2, 0, 1), port))
        ));
        peer.send_batch(&mut tx);
        let mut rx = RecvBatch::with_control(4);
        let got = receive(&sock, &mut rx, 1);
        let after = realtime_ns();
        assert_eq!(
            got,
            vec![(7, peer.local_addr(), Some(Ipv4Addr::new(127, 2, 0, 1)))]
        );
        let at = rx.received_at(0).expect("a timestamp");
        assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
        assert_eq!(rx.received_at(1), None, "past the batch");

        // Without the socket option, or without control buffers, there is no time.
        let plain = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        assert!(tx.push(&[8; 20], plain.local_addr()));
        peer.send_batch(&mut tx);
        let got = receive(&plain, &mut rx, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(rx.received_at(0), None);
        assert!(tx.push(
            &[9; 20],
            SocketAddr::from((Ipv4Addr::new(127, 2, 0, 1), port))
        ));
        peer.send_batch(&mut tx);
        let mut bare = RecvBatch::new(4);
        assert_eq!(receive(&sock, &mut bare, 1).len(), 1);
        assert_eq!(bare.received_at(0), None);
    }
}
