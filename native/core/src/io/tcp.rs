//! ICE-TCP (RFC 6544) for the shard: one listening socket for passive candidates, and per accepted
//! connection RFC 4571 framing (a 16-bit big-endian length before each STUN, DTLS, RTP or RTCP
//! packet), so a frame enters the shard exactly like a datagram and the same Transport handles it.
//!
//! Every connection is bounded: its read buffer holds two frames at most, its write buffer
//! [`WRITE_CAP`] bytes (a frame that does not fit is dropped and counted), and it is closed and
//! counted when it breaks the framing, when no Transport has selected a pair over it within
//! [`UNCLAIMED_TIMEOUT`] (only authenticated ICE checks select one), when it sends nothing for
//! [`IDLE_TIMEOUT`], or when it takes nothing of what we queued for [`STALL_TIMEOUT`] (a slow or
//! stuck reader). Connections are limited in all and per source IP; excess ones are refused.
//!
//! Egress: the shard queues frames for TCP peers in one `SendBatch` (the egress path is the same as
//! for UDP); [`TcpIo::flush`] frames them into the connections' write buffers and writes what the
//! kernel takes.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{SendBatch, MAX_DATAGRAM};

/// The largest frame accepted or sent: the shard's datagram size (RFC 4571 allows 65535, but no
/// packet of ours or of a WebRTC peer comes near it).
pub const MAX_FRAME: usize = MAX_DATAGRAM;
/// Read buffer per connection: two whole frames, so one read always has room after compaction.
const READ_CAP: usize = 2 * (2 + MAX_FRAME);
/// Bytes queued for one connection before its frames are dropped (about 180 video packets).
pub const WRITE_CAP: usize = 256 * 1024;
/// A connection must carry a Transport's selected pair by then.
pub const UNCLAIMED_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long is gone: ICE consent alone sends every ~5 s.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection whose queued bytes make no progress for this long has a stuck reader.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections from one source IP (a NAT'd office shares one).
pub const MAX_PER_IP: usize = 64;
/// Frames queued per flush of the egress batch.
const OUT_BATCH: usize = 64;
/// Connections accepted per loop turn, so a flood of SYNs cannot starve the media.
const ACCEPTS_PER_TURN: usize = 32;
/// How often the timeouts above are checked.
const EXPIRE_EVERY: Duration = Duration::from_millis(250);

/// The ICE-TCP listener's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Address of the passive candidates (its port must differ from the UDP port).
    pub bind: SocketAddr,
    /// Open connections at most; more are accepted and closed at once, and counted.
    pub max_connections: usize,
}

/// Why a connection was closed or refused, and what happened to frames: counted per listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounters {
    pub accepted: u64,
    /// Refused at accept: over `max_connections` or [`MAX_PER_IP`].
    pub refused: u64,
    pub closed_by_peer: u64,
    /// A length of 0 or over [`MAX_FRAME`].
    pub closed_bad_framing: u64,
    pub closed_unclaimed: u64,
    pub closed_idle: u64,
    pub closed_slow: u64,
    /// Read or write errors (reset, ...).
    pub closed_error: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Frames dropped because the connection's write buffer was full.
    pub frames_dropped_full: u64,
    /// Frames for a peer with no open connection (it closed or was dropped).
    pub frames_no_connection: u64,
    /// Open connections now.
    pub open: u64,
}

/// A framing error: the connection carrying it cannot be resynchronised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadFrameLength(pub usize);

/// RFC 4571 section 2 deframing over a fixed buffer: read into [`Deframer::spare`], mark with
/// [`Deframer::filled`], then take frames with [`Deframer::next_frame`].
pub struct Deframer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Default for Deframer {
    fn default() -> Self {
        Deframer {
            buf: vec![0; READ_CAP].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

impl Deframer {
    /// Room to read into (what is left of a partial frame moves to the front first).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Deframer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next whole frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, BadFrameLength> {
        let avail = &self.buf[self.start..self.end];
        let [hi, lo, ..] = *avail else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 || len > MAX_FRAME {
            return Err(BadFrameLength(len));
        }
        if avail.len() < 2 + len {
            return Ok(None);
        }
        let at = self.start + 2;
        self.start = at + len;
        Ok(Some(&self.buf[at..at + len]))
    }
}

/// Appends one RFC 4571 frame to `out`.
pub fn frame_into(out: &mut Vec<u8>, packet: &[u8]) {
    debug_assert!(!packet.is_empty() && packet.len() <= MAX_FRAME);
    out.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    out.extend_from_slice(packet);
}

struct Conn {
    stream: TcpStream,
    rx: Deframer,
    /// Framed bytes not yet written, from `tx_start`.
    tx: Vec<u8>,
    tx_start: usize,
    opened: Instant,
    /// Last frame received; last time the kernel took bytes of ours (or the queue was empty).
    last_rx: Instant,
    last_tx_progress: Instant,
    /// Frames are buffered and may be taken.
    pending: bool,
}

impl Conn {
    fn queued(&self) -> usize {
        self.tx.len() - self.tx_start
    }

    /// Writes what the kernel takes now. Err: the connection is broken.
    fn write_some(&mut self, now: Instant) -> io::Result<()> {
        while self.tx_start < self.tx.len() {
            match self.stream.write(&self.tx[self.tx_start..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tx_start += n;
                    self.last_tx_progress = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.tx_start == self.tx.len() {
            self.tx.clear();
            self.tx_start = 0;
        } else if self.tx_start > WRITE_CAP / 2 {
            self.tx.drain(..self.tx_start);
            self.tx_start = 0;
        }
        Ok(())
    }
}

/// Why `close` is called, for its counter.
#[derive(Clone, Copy)]
enum Close {
    ByPeer,
    BadFraming,
    Unclaimed,
    Idle,
    Slow,
    Error,
}

/// The listener and its connections, keyed by the peer's address (the ICE candidate it stands for).
pub struct TcpIo {
    listener: TcpListener,
    local: SocketAddr,
    max_connections: usize,
    conns: HashMap<SocketAddr, Conn>,
    per_ip: HashMap<IpAddr, usize>,
    out: SendBatch,
    /// poll(2) scratch for readiness, rebuilt each turn.
    pollfds: Vec<libc::pollfd>,
    peers: Vec<SocketAddr>,
    /// Connections with frames to take, in the order they were read.
    ready: Vec<SocketAddr>,
    next_expiry: Instant,
    pub counters: TcpCounters,
}

impl TcpIo {
    pub fn bind(config: TcpConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(config.bind)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        Ok(TcpIo {
            listener,
            local,
            max_connections: config.max_connections,
            conns: HashMap::new(),
            per_ip: HashMap::new(),
            out: SendBatch::new(OUT_BATCH),
            pollfds: Vec::new(),
            peers: Vec::new(),
            ready: Vec::new(),
            next_expiry: Instant::now(),
            counters: TcpCounters::default(),
        })
    }

    /// The passive candidates' address (with the kernel-chosen port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The listener and every connection, for the shard's poll(2) set: read interest always, write
    /// interest where bytes wait.
    pub fn poll_fds(&self, out: &mut Vec<libc::pollfd>) {
        out.push(libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for c in self.conns.values() {
            let events = if c.queued() > 0 {
                libc::POLLIN | libc::POLLOUT
            } else {
                libc::POLLIN
            };
            out.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
    }

    /// The egress batch for TCP peers (frames addressed by peer); queued into the connections first
    /// if it is full.
    pub fn batch(&mut self, now: Instant) -> &mut SendBatch {
        if self.out.is_full() {
            self.drain_out(now);
        }
        &mut self.out
    }

    /// Accepts new connections, reads every readable one and writes every writable one. Frames read
    /// are then taken with [`TcpIo::next_frame`].
    pub fn poll(&mut self, now: Instant) {
        let mut fds = std::mem::take(&mut self.pollfds);
        let mut peers = std::mem::take(&mut self.peers);
        fds.clear();
        peers.clear();
        self.poll_fds(&mut fds);
        // poll_fds lists the connections in the map's order, after the listener.
        peers.extend(self.conns.keys().copied());
        // SAFETY: fds is a live array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
        if n > 0 {
            for (peer, p) in peers.iter().zip(&fds[1..]) {
                if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.read(*peer);
                }
                if p.revents & libc::POLLOUT != 0 {
                    let broken = self
                        .conns
                        .get_mut(peer)
                        .is_some_and(|c| c.write_some(now).is_err());
                    if broken {
                        self.close(*peer, Close::Error);
                    }
                }
            }
            if fds[0].revents != 0 {
                self.accept(now);
            }
        }
        self.pollfds = fds;
        self.peers = peers;
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_TURN {
            let (stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Aborted handshakes, fd limits: refuse this one, try again next turn.
                Err(_) => {
                    self.counters.refused += 1;
                    return;
                }
            };
            let peer = normalise(peer);
            let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
            if self.conns.len() >= self.max_connections
                || from_ip >= MAX_PER_IP
                || self.conns.contains_key(&peer)
            {
                self.counters.refused += 1;
                continue; // dropping the stream closes it
            }
            if stream.set_nonblocking(true).is_err() {
                self.counters.refused += 1;
                continue;
            }
            // Media: a frame must leave now, not wait for Nagle.
            let _ = stream.set_nodelay(true);
            self.per_ip.insert(peer.ip(), from_ip + 1);
            self.conns.insert(
                peer,
                Conn {
                    stream,
                    rx: Deframer::default(),
                    tx: Vec::new(),
                    tx_start: 0,
                    opened: now,
                    last_rx: now,
                    last_tx_progress: now,
                    pending: false,
                },
            );
            self.counters.accepted += 1;
            self.counters.open = self.conns.len() as u64;
        }
    }

    /// One read (at most a buffer's worth per turn, so one busy peer cannot starve the others).
    fn read(&mut self, peer: SocketAddr) {
        let Some(c) = self.conns.get_mut(&peer) else {
            return;
        };
        let spare = c.rx.spare();
        if spare.is_empty() {
            // Two frames are buffered and not taken yet: take them first.
            return;
        }
        match c.stream.read(spare) {
            Ok(0) => self.close(peer, Close::ByPeer),
            Ok(n) => {
                c.rx.filled(n);
                if !c.pending {
                    c.pending = true;
                    self.ready.push(peer);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => self.close(peer, Close::Error),
        }
    }

    /// Copies the next received frame into `buf` and says who sent it and how long it is; None when
    /// no connection has a whole frame left. A connection that breaks the framing is closed here.
    pub fn next_frame(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        while let Some(&peer) = self.ready.last() {
            let Some(c) = self.conns.get_mut(&peer) else {
                self.ready.pop();
                continue;
            };
            match c.rx.next_frame() {
                Ok(Some(frame)) => {
                    let n = frame.len().min(buf.len());
                    buf[..n].copy_from_slice(&frame[..n]);
                    c.last_rx = now;
                    self.counters.frames_in += 1;
                    return Some((peer, n));
                }
                Ok(None) => {
                    c.pending = false;
                    self.ready.pop();
                }
                Err(BadFrameLength(_)) => {
                    self.ready.pop();
                    self.close(peer, Close::BadFraming);
                }
            }
        }
        None
    }

    /// Frames everything queued in the egress batch into the connections and writes what the
    /// kernel takes.
    pub fn flush(&mut self, now: Instant) {
        self.drain_out(now);
        let mut broken = Vec::new();
        for (peer, c) in &mut self.conns {
            if c.queued() > 0 && c.write_some(now).is_err() {
                broken.push(*peer);
            }
        }
        for peer in broken {
            self.close(peer, Close::Error);
        }
    }

    fn drain_out(&mut self, now: Instant) {
        for i in 0..self.out.len() {
            let Some((packet, to)) = self.out.get(i) else {
                continue;
            };
            let Some(c) = self.conns.get_mut(&to) else {
                self.counters.frames_no_connection += 1;
                continue;
            };
            if packet.is_empty() || packet.len() > MAX_FRAME {
                continue;
            }
            if c.queued() + 2 + packet.len() > WRITE_CAP {
                self.counters.frames_dropped_full += 1;
                continue;
            }
            if c.queued() == 0 {
                // Progress is measured from when bytes start waiting.
                c.last_tx_progress = now;
            }
            frame_into(&mut c.tx, packet);
            self.counters.frames_out += 1;
        }
        self.out.clear();
    }

    /// Closes connections past their limits (at most every [`EXPIRE_EVERY`]). `routed` says whether a
    /// Transport's selected pair runs over the connection from that peer address now.
    pub fn expire(&mut self, now: Instant, routed: impl Fn(SocketAddr) -> bool) {
        if now < self.next_expiry {
            return;
        }
        self.next_expiry = now + EXPIRE_EVERY;
        let mut gone = Vec::new();
        for (peer, c) in &mut self.conns {
            let why = if !routed(*peer) && now.duration_since(c.opened) >= UNCLAIMED_TIMEOUT {
                Some(Close::Unclaimed)
            } else if now.duration_since(c.last_rx) >= IDLE_TIMEOUT {
                Some(Close::Idle)
            } else if c.queued() > 0 && now.duration_since(c.last_tx_progress) >= STALL_TIMEOUT {
                Some(Close::Slow)
            } else {
                None
            };
            if let Some(why) = why {
                gone.push((*peer, why));
            }
        }
        for (peer, why) in gone {
            self.close(peer, why);
        }
    }

    fn close(&mut self, peer: SocketAddr, why: Close) {
        if self.conns.remove(&peer).is_none() {
            return;
        }
        if let Some(n) = self.per_ip.get_mut(&peer.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&peer.ip());
            }
        }
        let c = &mut self.counters;
        match why {
            Close::ByPeer => c.closed_by_peer += 1,
            Close::BadFraming => c.closed_bad_framing += 1,
            Close::Unclaimed => c.closed_unclaimed += 1,
            Close::Idle => c.closed_idle += 1,
            Close::Slow => c.closed_slow += 1,
            Close::Error => c.closed_error += 1,
        }
        c.open = self.conns.len() as u64;
    }

    /// Open connections now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// A v4-mapped peer (dual-stack listener) as its IPv4 address, as UDP sources are.
fn normalise(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => peer,
        },
        SocketAddr::V4(_) => peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    fn feed(d: &mut Deframer, bytes: &[u8]) {
        let spare = d.spare();
        spare[..bytes.len()].copy_from_slice(bytes);
        d.filled(bytes.len());
    }

    #[test]
    fn rfc4571_2_frames_split_and_joined_across_reads() {
        let mut d = Deframer::default();
        // Two frames in one read, the second one's length split from its body.
        feed(&mut d, &[0, 3, 1, 2, 3, 0, 2, 9]);
        assert_eq!(d.next_frame(), Ok(Some(&[1u8, 2, 3][..])));
        assert_eq!(d.next_frame(), Ok(None));
        feed(&mut d, &[8]);
        assert_eq!(d.next_frame(), Ok(Some(&[9u8, 8][..])));
        // A length split in the middle.
        feed(&mut d, &[0]);
        assert_eq!(d.next_frame(), Ok(None));
        feed(&mut d, &[1, 7]);
        assert_eq!(d.next_frame(), Ok(Some(&[7u8][..])));
        assert_eq!(d.next_frame(), Ok(None));
        // The largest frame fits behind a partial one.
        let mut big = vec![(MAX_FRAME >> 8) as u8, MAX_FRAME as u8];
        big.resize(2 + MAX_FRAME, 0xaa);
        feed(&mut d, &big[..100]);
        feed(&mut d, &big[100..]);
        assert_eq!(
            d.next_frame().map(|f| f.map(<[u8]>::len)),
            Ok(Some(MAX_FRAME))
        );
    }

    #[test]
    fn rfc4571_2_lengths_of_zero_or_over_the_limit_break_the_stream() {
        let mut d = Deframer::default();
        feed(&mut d, &[0, 0, 1]);
        assert_eq!(d.next_frame(), Err(BadFrameLength(0)));
        let mut d = Deframer::default();
        let over = (MAX_FRAME + 1) as u16;
        feed(&mut d, &over.to_be_bytes());
        assert_eq!(d.next_frame(), Err(BadFrameLength(MAX_FRAME + 1)));
        let mut out = Vec::new();
        frame_into(&mut out, &[5, 6]);
        assert_eq!(out, [0, 2, 5, 6]);
    }

    fn listener(max: usize) -> TcpIo {
        TcpIo::bind(TcpConfig {
            bind: "127.0.0.1:0".parse().expect("literal"),
            max_connections: max,
        })
        .expect("bind")
    }

    /// Polls until `done` or 2 s.
    fn poll_until(t: &mut TcpIo, mut done: impl FnMut(&mut TcpIo) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !done(t) {
            assert!(Instant::now() < deadline, "timed out: {:?}", t.counters);
            t.poll(Instant::now());
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn frames_go_both_ways_and_a_bad_length_closes_only_that_connection() {
        let mut t = listener(8);
        let mut a = TcpStream::connect(t.local_addr()).expect("connect");
        let mut b = TcpStream::connect(t.local_addr()).expect("connect");
        poll_until(&mut t, |t| t.len() == 2);
        a.write_all(&[0, 2, 0xde, 0xad, 0, 1]).expect("write");
        a.write_all(&[0xbe]).expect("write");
        let mut buf = [0u8; MAX_FRAME];
        let mut got = Vec::new();
        poll_until(&mut t, |t| {
            while let Some((from, n)) = t.next_frame(Instant::now(), &mut buf) {
                got.push((from, buf[..n].to_vec()));
            }
            got.len() == 2
        });
        let a_addr = a.local_addr().expect("addr");
        assert_eq!(got, [(a_addr, vec![0xde, 0xad]), (a_addr, vec![0xbe])]);

        // Egress: queued by peer address, framed on flush.
        assert!(t.batch(Instant::now()).push(&[1, 2, 3], a_addr));
        t.flush(Instant::now());
        let mut rx = [0u8; 5];
        a.read_exact(&mut rx).expect("read");
        assert_eq!(rx, [0, 3, 1, 2, 3]);

        // b breaks the framing: closed and counted; a stays.
        b.write_all(&[0, 0]).expect("write");
        poll_until(&mut t, |t| {
            while t.next_frame(Instant::now(), &mut buf).is_some() {}
            t.counters.closed_bad_framing == 1
        });
        assert_eq!(t.len(), 1);
        assert_eq!(t.counters.open, 1);
        let mut end = [0u8; 1];
        b.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        assert_eq!(b.read(&mut end).unwrap_or(0), 0, "b's connection is closed");
    }

    #[test]
    fn connections_over_the_limit_are_refused_and_counted() {
        let mut t = listener(2);
        let _a = TcpStream::connect(t.local_addr()).expect("connect");
        let _b = TcpStream::connect(t.local_addr()).expect("connect");
        let mut c = TcpStream::connect(t.local_addr()).expect("connect");
        poll_until(&mut t, |t| t.counters.refused == 1);
        assert_eq!((t.len(), t.counters.accepted), (2, 2));
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut end = [0u8; 1];
        assert_eq!(c.read(&mut end).unwrap_or(0), 0, "the third is closed");
    }

    #[test]
    fn unclaimed_silent_and_stuck_connections_are_closed_and_counted() {
        let mut t = listener(8);
        let unclaimed = TcpStream::connect(t.local_addr()).expect("connect");
        let silent = TcpStream::connect(t.local_addr()).expect("connect");
        let stuck = TcpStream::connect(t.local_addr()).expect("connect");
        poll_until(&mut t, |t| t.len() == 3);
        let (u, s, k) = (
            unclaimed.local_addr().expect("addr"),
            silent.local_addr().expect("addr"),
            stuck.local_addr().expect("addr"),
        );
        let t0 = Instant::now();
        // The stuck reader never reads: fill the kernel's buffers, then ours.
        let packet = [0x80u8; 1200];
        let mut flushes = 0;
        while t.counters.frames_dropped_full == 0 {
            for _ in 0..OUT_BATCH {
                t.batch(t0).push(&packet, k);
            }
            t.flush(t0);
            flushes += 1;
            assert!(flushes < 10_000, "the connection never filled up");
        }
        let routed = |p: SocketAddr| p != u;
        t.expire(t0 + Duration::from_secs(4), routed);
        assert_eq!(t.len(), 3, "nothing is due yet");
        t.expire(t0 + STALL_TIMEOUT + Duration::from_secs(1), routed);
        assert_eq!((t.counters.closed_slow, t.len()), (1, 2));
        t.expire(t0 + UNCLAIMED_TIMEOUT + Duration::from_secs(1), routed);
        assert_eq!((t.counters.closed_unclaimed, t.len()), (1, 1));
        t.expire(t0 + IDLE_TIMEOUT + Duration::from_secs(1), routed);
        assert_eq!((t.counters.closed_idle, t.len()), (1, 0));
        assert_eq!(t.counters.open, 0);
        // Frames for a closed peer are counted, not kept.
        t.batch(t0).push(&packet, s);
        t.flush(t0);
        assert_eq!(t.counters.frames_no_connection, 1);
    }
}
