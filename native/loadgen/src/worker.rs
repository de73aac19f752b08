//! A worker thread: owns a share of the endpoints and runs them with epoll (one socket per
//! endpoint), recvmmsg/sendmmsg batches and a timer wheel. Control arrives on a queue; nothing on
//! the packet path takes a lock or allocates in steady state.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use sluice_core::io::{RecvBatch, SendBatch, UdpSocket, MAX_DATAGRAM};
use sluice_core::queue::Queue;

use crate::endpoint::{Endpoint, Relay, Sock};
use crate::histogram::Histogram;
use crate::payload::{mono_ns, realtime_ns, Kind};
use crate::stats::{EndpointReport, OutgoingReport, Second, Totals, WorkerReport};
use crate::turn::channel_data_header;
use crate::{MediaConfig, RemoteDescription, Sources};

/// Datagrams per recvmmsg/sendmmsg.
pub const BATCH: usize = 64;
/// Receive batches per readable socket per turn, so one busy socket cannot starve the others.
const RECV_ROUNDS: usize = 4;
/// Timer wheel resolution and size (about 4 s ahead; later deadlines are re-checked on the way).
const TICK_NS: u64 = 1_000_000;
const SLOTS: u64 = 4096;
/// Longest epoll sleep.
const MAX_SLEEP_MS: u64 = 50;
/// epoll user data for the command queue and the shared socket (others: endpoint index).
const CMD_TOKEN: u64 = u64::MAX;
const SHARED_TOKEN: u64 = u64::MAX - 1;

/// Counters every worker shares with the controller without a round trip.
#[derive(Default)]
pub struct Shared {
    connected: AtomicUsize,
    failed: AtomicUsize,
}

impl Shared {
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }
    pub fn connected_inc(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }
    pub fn connected_dec(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn failed_inc(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

pub enum Cmd {
    Add(Box<Endpoint>),
    Connect {
        local: usize,
        remote: RemoteDescription,
    },
    ConnectRaw {
        local: usize,
        relay: SocketAddr,
    },
    SetSources {
        local: usize,
        sources: Sources,
    },
    SetAudioLevel {
        local: usize,
        level: Option<u8>,
    },
    Start,
    Stop,
    /// Forget the latency recorded so far (the end of a warm-up).
    ResetLatency,
    Report {
        series: bool,
        reply: mpsc::Sender<WorkerReport>,
    },
    Shutdown,
}

/// Everything an endpoint writes to besides itself.
pub struct Ctx {
    /// Egress for one socket at a time (`batch_fd`); flushed when full, when another socket's
    /// datagram comes, and at the end of every loop turn.
    pub send: SendBatch,
    batch_fd: RawFd,
    /// The worker's shared loopback socket, or -1.
    shared_fd: RawFd,
    pub totals: Totals,
    pub media: MediaConfig,
    pub shared: Arc<Shared>,
    pub latency: Histogram,
    pub latency_audio: Histogram,
    pub latency_video: Histogram,
    /// Send to the moment the kernel queued the datagram on the receiving socket: the latency
    /// without the receiving worker's own delay in reading it.
    pub latency_socket: Histogram,
    /// Per-second series from the epoch.
    pub series: Vec<Second>,
    /// When `start` was called (CLOCK_MONOTONIC ns, 0 before), shared by every worker: a worker
    /// may receive media before its own Start command arrives.
    pub epoch_ns: Arc<AtomicU64>,
    /// Scratch for the sequence numbers of one NACK (never grows past the NACK tracker's capacity).
    pub nack_seqs: Vec<u16>,
}

impl Ctx {
    fn fd_of(&self, sock: &Sock) -> RawFd {
        match sock {
            Sock::Own(s) => s.as_raw_fd(),
            Sock::Shared { .. } => self.shared_fd,
        }
    }

    /// A free egress slot for a datagram from `sock` (write it, then [`Ctx::commit`]).
    #[inline]
    pub fn slot(&mut self, sock: &Sock) -> Option<&mut [u8; MAX_DATAGRAM]> {
        let fd = self.fd_of(sock);
        if !self.send.is_empty() && (fd != self.batch_fd || self.send.is_full()) {
            self.flush();
        }
        self.batch_fd = fd;
        self.send.slot()
    }

    /// Queues the datagram written into the slot from [`Ctx::slot`].
    #[inline]
    pub fn commit(&mut self, sock: &Sock, len: usize, to: SocketAddr) {
        match sock {
            Sock::Shared {
                local: SocketAddr::V4(a),
            } => self.send.commit_from(len, to, *a.ip()),
            _ => self.send.commit(len, to),
        }
    }

    /// [`Ctx::commit`] for an endpoint that may be behind TURN: with a `relay`, a datagram to its
    /// peer leaves as ChannelData to the server (the 4-byte header goes in front, in the slot);
    /// one to any other address cannot be relayed and is counted.
    #[inline]
    pub fn commit_via(&mut self, sock: &Sock, relay: Option<&Relay>, len: usize, to: SocketAddr) {
        let Some(r) = relay else {
            self.commit(sock, len, to);
            return;
        };
        if to != r.peer || len + 4 > MAX_DATAGRAM {
            self.totals.unrelayable += 1;
            return;
        }
        let Some(slot) = self.send.slot() else {
            return;
        };
        slot.copy_within(..len, 4);
        slot[..4].copy_from_slice(&channel_data_header(r.channel, len));
        self.commit(sock, len + 4, r.server);
    }

    /// [`Ctx::push`] through [`Ctx::commit_via`].
    pub fn push_via(&mut self, sock: &Sock, relay: Option<&Relay>, data: &[u8], to: SocketAddr) {
        if data.len() > MAX_DATAGRAM {
            return;
        }
        if let Some(slot) = self.slot(sock) {
            slot[..data.len()].copy_from_slice(data);
            self.commit_via(sock, relay, data.len(), to);
        }
    }

    pub fn push(&mut self, sock: &Sock, data: &[u8], to: SocketAddr) {
        if data.len() > MAX_DATAGRAM {
            return;
        }
        if let Some(slot) = self.slot(sock) {
            slot[..data.len()].copy_from_slice(data);
            self.commit(sock, data.len(), to);
        }
    }

    pub fn flush(&mut self) {
        if !self.send.is_empty() {
            // SAFETY: `batch_fd` is the shared socket's or an endpoint's; the worker owns them all
            // and closes none while it runs.
            self.send
                .send_on(unsafe { BorrowedFd::borrow_raw(self.batch_fd) });
        }
    }

    fn second(&mut self, at_ns: u64) -> Option<&mut Second> {
        let epoch = self.epoch_ns.load(Ordering::Acquire);
        if epoch == 0 {
            return None;
        }
        let i = (at_ns.saturating_sub(epoch) / 1_000_000_000) as usize;
        if i >= self.series.len() {
            // One entry per second of the run: amortised, not per packet.
            self.series.resize_with(i + 1, Second::default);
        }
        self.series.get_mut(i)
    }

    #[inline]
    pub fn on_sent(&mut self, bytes: usize, at_ns: u64) {
        self.totals.sent_packets += 1;
        self.totals.sent_bytes += bytes as u64;
        if let Some(s) = self.second(at_ns) {
            s.sent_packets += 1;
            s.sent_bytes += bytes as u64;
        }
    }

    #[inline]
    pub fn on_received(
        &mut self,
        kind: Kind,
        bytes: usize,
        latency: Option<Latencies>,
        gap: i64,
        at_ns: u64,
    ) {
        // None: a retransmission, counted but not timed.
        if let Some(l) = latency {
            self.latency.record(l.read_ns);
            self.latency_socket.record(l.socket_ns);
            match kind {
                Kind::Audio => self.latency_audio.record(l.read_ns),
                Kind::Video => self.latency_video.record(l.read_ns),
            }
        }
        if let Some(s) = self.second(at_ns) {
            s.recv_packets += 1;
            s.recv_bytes += bytes as u64;
            s.gap_lost += gap;
            if let Some(l) = latency {
                s.latency.record(l.read_ns);
            }
        }
    }
}

#[cfg(test)]
impl Ctx {
    /// A context with no socket behind it, for an endpoint's own tests (nothing is flushed).
    pub fn for_test(media: MediaConfig) -> Ctx {
        Ctx {
            send: SendBatch::new(BATCH),
            batch_fd: -1,
            shared_fd: -1,
            totals: Totals::default(),
            media,
            shared: Arc::new(Shared::default()),
            latency: Histogram::new(),
            latency_audio: Histogram::new(),
            latency_video: Histogram::new(),
            latency_socket: Histogram::new(),
            series: Vec::new(),
            epoch_ns: Arc::new(AtomicU64::new(0)),
            nack_seqs: Vec::with_capacity(sluice_core::cc::nack::CAPACITY),
        }
    }
}

/// One packet's latency, to where the receiving socket got it and to where we read it.
#[derive(Clone, Copy, Debug)]
pub struct Latencies {
    pub socket_ns: u64,
    pub read_ns: u64,
}

/// No endpoint (list end).
const NONE: u32 = u32::MAX;
/// Not scheduled.
const UNSCHEDULED: u64 = u64::MAX;

/// Deadlines in 1 ms ticks: one doubly linked list per slot threaded through per-endpoint arrays,
/// so scheduling, moving and expiring an endpoint are O(1) and never allocate.
struct Wheel {
    heads: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The tick each endpoint is filed at, or UNSCHEDULED.
    tick: Vec<u64>,
    /// First tick not yet processed.
    next_tick: u64,
}

impl Wheel {
    fn new(now_ns: u64) -> Self {
        Wheel {
            heads: vec![NONE; SLOTS as usize],
            next: Vec::new(),
            prev: Vec::new(),
            tick: Vec::new(),
            next_tick: now_ns / TICK_NS,
        }
    }

    fn add_endpoint(&mut self) {
        self.next.push(NONE);
        self.prev.push(NONE);
        self.tick.push(UNSCHEDULED);
    }

    fn scheduled(&self, ep: usize) -> Option<u64> {
        self.tick.get(ep).copied().filter(|&t| t != UNSCHEDULED)
    }

    fn unlink(&mut self, ep: usize) {
        let t = self.tick[ep];
        if t == UNSCHEDULED {
            return;
        }
        let (p, n) = (self.prev[ep], self.next[ep]);
        if p == NONE {
            self.heads[(t % SLOTS) as usize] = n;
        } else {
            self.next[p as usize] = n;
        }
        if n != NONE {
            self.prev[n as usize] = p;
        }
        self.next[ep] = NONE;
        self.prev[ep] = NONE;
        self.tick[ep] = UNSCHEDULED;
    }

    /// Files `ep` at `at_ns`, clamped into the wheel's horizon (a later deadline is re-checked when
    /// it comes up), moving it if it was filed elsewhere.
    fn schedule(&mut self, ep: usize, at_ns: u64) {
        let tick = (at_ns / TICK_NS).clamp(self.next_tick, self.next_tick + SLOTS - 1);
        if self.tick[ep] == tick {
            return;
        }
        self.unlink(ep);
        let slot = (tick % SLOTS) as usize;
        let head = self.heads[slot];
        self.next[ep] = head;
        if head != NONE {
            self.prev[head as usize] = ep as u32;
        }
        self.heads[slot] = ep as u32;
        self.tick[ep] = tick;
    }

    /// Moves every endpoint due by `now_ns` into `due`.
    fn advance(&mut self, now_ns: u64, due: &mut Vec<u32>) {
        let now_tick = now_ns / TICK_NS;
        // After a long stall, one lap covers every slot.
        let start = self.next_tick.max((now_tick + 1).saturating_sub(SLOTS));
        for tick in start..=now_tick {
            let mut e = self.heads[(tick % SLOTS) as usize];
            while e != NONE {
                let n = self.next[e as usize];
                if self.tick[e as usize] <= tick {
                    self.unlink(e as usize);
                    due.push(e);
                }
                e = n;
            }
        }
        self.next_tick = self.next_tick.max(now_tick + 1);
    }

    /// Milliseconds until the next non-empty tick (looking a little way ahead), capped.
    fn timeout_ms(&self, now_ns: u64) -> i32 {
        let now_tick = now_ns / TICK_NS;
        for tick in self.next_tick..self.next_tick + MAX_SLEEP_MS {
            if self.heads[(tick % SLOTS) as usize] != NONE {
                return tick.saturating_sub(now_tick) as i32;
            }
        }
        MAX_SLEEP_MS as i32
    }
}

pub struct Worker {
    endpoints: Vec<Endpoint>,
    epoll: OwnedFd,
    commands: Arc<Queue<Cmd>>,
    recv: RecvBatch,
    /// The shared loopback socket and which endpoint each of its addresses belongs to.
    shared_sock: Option<UdpSocket>,
    by_ip: HashMap<Ipv4Addr, u32>,
    /// Endpoints that got control traffic in the current receive turn (at most one entry a datagram).
    touched: Vec<u32>,
    ctx: Ctx,
    wheel: Wheel,
    sending: bool,
    due: Vec<u32>,
}

impl Worker {
    pub fn new(
        commands: Arc<Queue<Cmd>>,
        media: MediaConfig,
        shared: Arc<Shared>,
        epoch_ns: Arc<AtomicU64>,
        shared_sock: Option<UdpSocket>,
    ) -> io::Result<Self> {
        // SAFETY: plain epoll_create1(2); the result is checked.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        epoll_add(epoll.as_raw_fd(), commands.fd(), CMD_TOKEN)?;
        let shared_fd = match &shared_sock {
            Some(s) => {
                s.enable_pktinfo()?;
                s.enable_rx_timestamps()?;
                epoll_add(epoll.as_raw_fd(), s.as_raw_fd(), SHARED_TOKEN)?;
                s.as_raw_fd()
            }
            None => -1,
        };
        Ok(Worker {
            endpoints: Vec::new(),
            epoll,
            commands,
            recv: RecvBatch::with_control(BATCH),
            shared_sock,
            by_ip: HashMap::new(),
            // At most one entry per datagram of a receive turn: never grows.
            touched: Vec::with_capacity(BATCH * RECV_ROUNDS),
            ctx: Ctx {
                send: SendBatch::with_pktinfo(BATCH),
                batch_fd: -1,
                shared_fd,
                totals: Totals::default(),
                media,
                shared,
                latency: Histogram::new(),
                latency_audio: Histogram::new(),
                latency_video: Histogram::new(),
                latency_socket: Histogram::new(),
                series: Vec::new(),
                epoch_ns,
                nack_seqs: Vec::with_capacity(sluice_core::cc::nack::CAPACITY),
            },
            wheel: Wheel::new(mono_ns()),
            sending: false,
            due: Vec::new(),
        })
    }

    pub fn run(mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut cmds = Vec::new();
        loop {
            let timeout = self.wheel.timeout_ms(mono_ns());
            // SAFETY: `events` is a live array of the given length.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    timeout,
                )
            };
            let now = Instant::now();
            let now_ns = mono_ns();
            for ev in events.iter().take(n.max(0) as usize) {
                let token = ev.u64;
                if token == CMD_TOKEN {
                    self.commands.drain_into(&mut cmds);
                    for cmd in cmds.drain(..) {
                        if !self.handle_command(now, now_ns, cmd) {
                            return;
                        }
                    }
                } else if token == SHARED_TOKEN {
                    self.on_readable(None, now);
                } else {
                    self.on_readable(Some(token as u32), now);
                }
            }
            self.run_timers(now, mono_ns());
            self.ctx.flush();
        }
    }

    fn run_timers(&mut self, now: Instant, now_ns: u64) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(now_ns, &mut due);
        for &idx in &due {
            let i = idx as usize;
            let Some(ep) = self.endpoints.get_mut(i) else {
                continue;
            };
            ep.on_timer(now, now_ns, self.sending, &mut self.ctx);
            self.reschedule(i, now, now_ns);
        }
        due.clear();
        self.due = due;
    }

    /// Files endpoint `i` at its next deadline if that is earlier than where it is filed now.
    fn reschedule(&mut self, i: usize, now: Instant, now_ns: u64) {
        let Some(at) = self.endpoints[i].next_wake_ns(now, now_ns, self.sending) else {
            return;
        };
        if self.wheel.scheduled(i).is_some_and(|t| t <= at / TICK_NS) {
            return;
        }
        self.wheel.schedule(i, at);
    }

    /// A socket is readable: endpoint `owner`'s own, or (None) the shared loopback one, where each
    /// datagram goes to the endpoint whose address it was sent to.
    fn on_readable(&mut self, owner: Option<u32>, now: Instant) {
        for _ in 0..RECV_ROUNDS {
            let sock = match owner {
                Some(i) => match self.endpoints.get(i as usize).map(|ep| &ep.sock) {
                    Some(Sock::Own(sock)) => sock,
                    _ => return,
                },
                None => match &self.shared_sock {
                    Some(sock) => sock,
                    None => return,
                },
            };
            let n = match self.recv.recv_on(sock.as_fd()) {
                Ok(n) => n,
                Err(_) => {
                    // E.g. an ICMP error queued on the socket: nothing to read this time.
                    self.ctx.totals.recv_errors += 1;
                    0
                }
            };
            if n == 0 {
                break;
            }
            let arrival_ns = mono_ns();
            // The kernel stamps arrivals in CLOCK_REALTIME; our send times are CLOCK_MONOTONIC.
            let realtime_to_mono = i128::from(arrival_ns) - i128::from(realtime_ns());
            for k in 0..n {
                let to = owner.or_else(|| {
                    let dst = self.recv.destination(k)?;
                    self.by_ip.get(&dst).copied()
                });
                let queued_ns = self.recv.received_at(k).map_or(arrival_ns, |at| {
                    let mono = i128::from(at) + realtime_to_mono;
                    u64::try_from(mono).unwrap_or(0).min(arrival_ns)
                });
                let (Some((buf, from)), Some(i)) = (self.recv.get_mut(k), to) else {
                    self.ctx.totals.foreign += 1;
                    continue;
                };
                let ep = &mut self.endpoints[i as usize];
                ep.on_datagram(now, queued_ns, arrival_ns, from, buf, &mut self.ctx);
                if ep.needs_service() {
                    self.touched.push(i);
                }
            }
            if n < self.recv.capacity() {
                break;
            }
        }
        let mut touched = std::mem::take(&mut self.touched);
        for &i in &touched {
            if self.endpoints[i as usize].after_input(&mut self.ctx) {
                self.reschedule(i as usize, now, mono_ns());
            }
        }
        touched.clear();
        self.touched = touched;
    }

    fn handle_command(&mut self, now: Instant, now_ns: u64, cmd: Cmd) -> bool {
        let touched = match cmd {
            Cmd::Add(ep) => {
                let i = self.endpoints.len();
                match &ep.sock {
                    Sock::Own(sock) => {
                        if epoll_add(self.epoll.as_raw_fd(), sock.as_raw_fd(), i as u64).is_err() {
                            self.ctx.totals.setup_errors += 1;
                        }
                    }
                    Sock::Shared {
                        local: SocketAddr::V4(a),
                    } => {
                        self.by_ip.insert(*a.ip(), i as u32);
                    }
                    Sock::Shared { .. } => self.ctx.totals.setup_errors += 1,
                }
                self.endpoints.push(*ep);
                self.wheel.add_endpoint();
                // Room for every endpoint being due at once: the timer path never grows it.
                self.due.reserve(self.endpoints.len());
                Some(i)
            }
            Cmd::Connect { local, remote } => self.endpoints.get_mut(local).map(|ep| {
                ep.connect(now, remote);
                ep.after_input(&mut self.ctx);
                local
            }),
            Cmd::ConnectRaw { local, relay } => self.endpoints.get_mut(local).map(|ep| {
                ep.connect_raw(relay, &mut self.ctx);
                local
            }),
            Cmd::SetSources { local, sources } => {
                let media = self.ctx.media;
                self.endpoints.get_mut(local).map(|ep| {
                    ep.set_sources(&sources, &media);
                    local
                })
            }
            Cmd::SetAudioLevel { local, level } => self.endpoints.get_mut(local).map(|ep| {
                ep.audio_level = level;
                local
            }),
            Cmd::Start => {
                self.sending = true;
                let media = self.ctx.media;
                for i in 0..self.endpoints.len() {
                    self.endpoints[i].start(now_ns, &media);
                    self.reschedule(i, now, now_ns);
                }
                None
            }
            Cmd::Stop => {
                self.sending = false;
                None
            }
            Cmd::ResetLatency => {
                let c = &mut self.ctx;
                for h in [
                    &mut c.latency,
                    &mut c.latency_audio,
                    &mut c.latency_video,
                    &mut c.latency_socket,
                ] {
                    h.clear();
                }
                None
            }
            Cmd::Report { series, reply } => {
                let _ = reply.send(self.report(series));
                None
            }
            Cmd::Shutdown => return false,
        };
        if let Some(i) = touched {
            self.reschedule(i, now, now_ns);
        }
        self.ctx.flush();
        true
    }

    fn report(&self, series: bool) -> WorkerReport {
        let mut totals = self.ctx.totals;
        totals.recv_calls = self.recv.calls;
        totals.recv_syscall_packets = self.recv.packets;
        totals.send_calls = self.ctx.send.calls;
        totals.send_syscall_packets = self.ctx.send.packets;
        totals.send_failed = self.ctx.send.dropped;
        WorkerReport {
            totals,
            latency: self.ctx.latency.clone(),
            latency_audio: self.ctx.latency_audio.clone(),
            latency_video: self.ctx.latency_video.clone(),
            latency_socket: self.ctx.latency_socket.clone(),
            series: if series {
                self.ctx.series.clone()
            } else {
                Vec::new()
            },
            endpoints: self
                .endpoints
                .iter()
                .map(|ep| EndpointReport {
                    index: ep.index,
                    group: ep.group,
                    state: ep.state,
                    detail: ep.detail.clone(),
                    role: ep.role,
                    relayed: ep.relayed_address(),
                    outgoing: ep
                        .outgoing
                        .iter()
                        .map(|o| OutgoingReport {
                            ssrc: o.ssrc,
                            kind: o.kind,
                            layer: o.layer,
                            sent: o.sent,
                            sent_bytes: o.sent_bytes,
                            payload_bytes: o.payload_bytes,
                            keyframes: o.encoder.as_ref().map_or(0, |e| e.keyframes),
                        })
                        .collect(),
                    streams: ep.streams.clone(),
                    receive: ep.receive.clone(),
                })
                .collect(),
        }
    }
}

fn epoll_add(epoll: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: `ev` is a live epoll_event; both descriptors are open.
    let rc = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::{parse_channel_data, CHANNEL};
    use crate::MediaConfig;

    #[test]
    fn behind_turn_datagrams_to_the_peer_leave_as_channel_data_to_the_server() {
        let mut ctx = Ctx::for_test(MediaConfig::default());
        let sock = Sock::Shared {
            local: "127.0.0.2:5000".parse().expect("literal"),
        };
        let relay = Relay {
            server: "127.0.0.1:3478".parse().expect("literal"),
            peer: "127.0.0.1:10000".parse().expect("literal"),
            channel: CHANNEL,
        };
        ctx.push_via(&sock, Some(&relay), &[0x80, 96, 1, 2, 3], relay.peer);
        let (data, to) = ctx.send.get(0).expect("queued");
        assert_eq!(to, relay.server);
        assert_eq!(parse_channel_data(data), Some((CHANNEL, 5)));
        assert_eq!(&data[4..], &[0x80, 96, 1, 2, 3]);
        // Anything else cannot be relayed over the one channel: counted, not sent.
        ctx.push_via(
            &sock,
            Some(&relay),
            &[1, 2],
            "127.0.0.1:9".parse().expect("literal"),
        );
        assert_eq!((ctx.send.len(), ctx.totals.unrelayable), (1, 1));
        // Without a relay, nothing changes.
        ctx.push_via(&sock, None, &[7], relay.peer);
        assert_eq!(ctx.send.get(1), Some((&[7u8][..], relay.peer)));
    }
}
