//! The shard: one thread that owns sockets, Transports and Routers, and runs the hot path.
//!
//! recvmmsg → classify (RFC 7983) → route (STUN by ufrag, the rest by remote address) → SRTP unprotect in
//! place → RTP view → Producer → for each other member: copy into the egress batch, SRTP protect → sendmmsg.
//! Everything here is `&mut` on one thread: no locks on the media path.

mod rtcp_path;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::dtls::DtlsCert;
use crate::io::{classify, DatagramKind, RecvBatch, SendBatch, UdpSocket};
use crate::router::Router;
use crate::rtp::RtpView;
use crate::seam::{Command, Event, ForceMute, Queue, RouterId, TransportId, TransportState};
use crate::stats::{Counters, DropReason, FailureCounters, IoCounters, StatsSnapshot};
use crate::stun::{local_ufrag_of, StunClass, StunMessage};
use crate::transport::{FailureKind, Note, Transport};

/// Datagrams per recvmmsg/sendmmsg call.
pub const BATCH: usize = 64;
/// Receive batches per socket per loop turn, so commands and timers are not starved under load.
const RECV_ROUNDS: usize = 8;
/// The longest the loop sleeps; also the granularity of protocol timers.
const MAX_SLEEP: Duration = Duration::from_millis(10);

#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Local addresses to bind, all on the shared port (port 0: the first gets an ephemeral port, the
    /// others reuse it).
    pub bind: Vec<SocketAddr>,
}

/// Sockets and egress batches, one batch per socket.
pub struct Io {
    sockets: Vec<UdpSocket>,
    send: Vec<SendBatch>,
}

impl Io {
    /// The socket index for a local address (same address, or else same family).
    fn socket_for(&self, local: SocketAddr) -> usize {
        self.sockets
            .iter()
            .position(|s| s.local_addr() == local)
            .or_else(|| {
                self.sockets
                    .iter()
                    .position(|s| s.local_addr().is_ipv4() == local.is_ipv4())
            })
            .unwrap_or(0)
    }

    /// A free egress slot on socket `idx`, flushing the batch first if it is full.
    #[inline]
    fn slot(&mut self, idx: usize) -> &mut SendBatch {
        if self.send[idx].is_full() {
            self.sockets[idx].send_batch(&mut self.send[idx]);
        }
        &mut self.send[idx]
    }

    fn flush(&mut self) {
        for (s, b) in self.sockets.iter().zip(self.send.iter_mut()) {
            if !b.is_empty() {
                s.send_batch(b);
            }
        }
    }
}

/// All state a shard mutates per packet.
pub struct State {
    cert: DtlsCert,
    local_addrs: Vec<SocketAddr>,
    routers: HashMap<RouterId, Router>,
    transports: HashMap<TransportId, Transport>,
    by_ufrag: HashMap<Vec<u8>, TransportId>,
    by_addr: HashMap<SocketAddr, TransportId>,
    total: Counters,
    failures: FailureCounters,
    events: Vec<Event>,
    /// Earliest time a timer may be due; a sweep runs when it passes.
    next_sweep: Instant,
    /// Seam crossings: commands handled and events handed out since start.
    commands_seen: u64,
    events_sent: u64,
}

pub struct Shard {
    io: Io,
    recv: RecvBatch,
    state: State,
    /// poll(2) set: every socket, then one slot for the caller's wake-up fd.
    pollfds: Vec<libc::pollfd>,
}

impl Shard {
    pub fn new(config: &ShardConfig, cert: DtlsCert) -> io::Result<Self> {
        if config.bind.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no bind address",
            ));
        }
        let mut sockets: Vec<UdpSocket> = Vec::new();
        let mut port = 0;
        for addr in &config.bind {
            let mut a = *addr;
            if a.port() == 0 && port != 0 {
                a.set_port(port);
            }
            let s = UdpSocket::bind(a)?;
            port = s.local_addr().port();
            sockets.push(s);
        }
        let local_addrs = sockets.iter().map(|s| s.local_addr()).collect();
        let send = sockets.iter().map(|_| SendBatch::new(BATCH)).collect();
        let mut pollfds: Vec<libc::pollfd> = sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(s),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        pollfds.push(libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        });
        Ok(Shard {
            pollfds,
            io: Io { sockets, send },
            recv: RecvBatch::new(BATCH),
            state: State {
                cert,
                local_addrs,
                routers: HashMap::new(),
                transports: HashMap::new(),
                by_ufrag: HashMap::new(),
                by_addr: HashMap::new(),
                total: Counters::default(),
                failures: FailureCounters::default(),
                events: Vec::new(),
                next_sweep: Instant::now(),
                commands_seen: 0,
                events_sent: 0,
            },
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.state.local_addrs
    }

    /// Applies one control command. Returns false on Shutdown.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> bool {
        self.state.commands_seen += 1;
        let keep_going = self
            .state
            .handle_command(now, cmd, &mut self.io, &self.recv);
        self.io.flush();
        keep_going
    }

    /// Receives and processes whatever is queued on the sockets (bounded), then flushes egress.
    pub fn poll_io(&mut self, now: Instant) {
        let Shard {
            io, recv, state, ..
        } = self;
        for sock_idx in 0..io.sockets.len() {
            let local = io.sockets[sock_idx].local_addr();
            for _ in 0..RECV_ROUNDS {
                // A receive error (e.g. ICMP unreachable reported on the socket) means no datagrams now.
                let n = io.sockets[sock_idx].recv_batch(recv).unwrap_or_default();
                if n == 0 {
                    break;
                }
                for i in 0..n {
                    let Some((buf, from)) = recv.get_mut(i) else {
                        state.total.packets_in += 1;
                        state.total.drop(DropReason::Unclassified);
                        continue;
                    };
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        state.on_datagram(now, local, from, buf, io)
                    }));
                    if outcome.is_err() {
                        state.on_panic(from);
                    }
                }
                io.flush();
                if n < recv.capacity() {
                    break;
                }
            }
        }
    }

    /// Runs due protocol timers (ICE pacing, retransmits, consent, DTLS) and periodic RTCP.
    pub fn handle_timeouts(&mut self, now: Instant) {
        if now < self.state.next_sweep {
            return;
        }
        self.state.sweep(now, &mut self.io);
        self.io.flush();
    }

    /// When the loop should wake at the latest.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        self.state.next_sweep.min(now + MAX_SLEEP)
    }

    pub fn take_events(&mut self, out: &mut Vec<Event>) {
        self.state.events_sent += self.state.events.len() as u64;
        out.append(&mut self.state.events);
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.state.snapshot(&self.io, &self.recv)
    }

    /// Sleeps until a socket or `extra_fd` is readable, or until `deadline`.
    pub fn wait(&mut self, extra_fd: Option<i32>, deadline: Instant, now: Instant) {
        // A negative fd is ignored by poll(2).
        if let Some(last) = self.pollfds.last_mut() {
            last.fd = extra_fd.unwrap_or(-1);
        }
        let ms = deadline
            .saturating_duration_since(now)
            .as_millis()
            .min(1000) as libc::c_int;
        // SAFETY: pollfds is a live array of pollfd of the given length.
        unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                ms,
            )
        };
    }
}

impl State {
    fn handle_command(
        &mut self,
        now: Instant,
        cmd: Command,
        io: &mut Io,
        recv: &RecvBatch,
    ) -> bool {
        match cmd {
            Command::CreateRouter { router } => {
                self.routers
                    .entry(router)
                    .or_insert_with(|| Router::new(router));
            }
            Command::CloseRouter { router } => {
                if let Some(r) = self.routers.get(&router) {
                    for t in r.members.clone() {
                        self.close_transport(now, t, io);
                    }
                }
                self.routers.remove(&router);
            }
            Command::CreateTransport {
                router,
                transport,
                ice,
                controlling,
            } => {
                let Some(r) = self.routers.get_mut(&router) else {
                    self.command_failed(transport, format!("no router {router}"));
                    return true;
                };
                if self.transports.contains_key(&transport) {
                    self.command_failed(transport, "transport exists".into());
                    return true;
                }
                let t = Transport::new(
                    transport,
                    router,
                    ice,
                    controlling,
                    self.cert.clone(),
                    &self.local_addrs,
                );
                self.by_ufrag
                    .insert(t.local_ufrag().as_bytes().to_vec(), transport);
                r.add_member(transport);
                self.transports.insert(transport, t);
            }
            Command::ConnectTransport {
                transport,
                remote_ice,
                fingerprints,
                remote_setup,
            } => {
                let Some(t) = self.transports.get_mut(&transport) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                t.connect(now, remote_ice, fingerprints, &remote_setup);
                self.after_transport(now, transport, io);
            }
            Command::AddRemoteCandidates {
                transport,
                candidates,
            } => {
                let Some(t) = self.transports.get_mut(&transport) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                t.add_remote_candidates(now, &candidates);
                self.after_transport(now, transport, io);
            }
            Command::SetSources { transport, sources } => {
                let Some(t) = self.transports.get(&transport) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                let Some(r) = self.routers.get_mut(&t.router) else {
                    return true;
                };
                let refused = r.set_sources(transport, &sources);
                if !refused.is_empty() {
                    self.command_failed(
                        transport,
                        format!("ssrcs owned by another endpoint: {refused:?}"),
                    );
                }
            }
            Command::RequestKeyframe { transport, ssrc } => {
                let Some(router) = self.transports.get(&transport).map(|t| t.router) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                self.request_keyframe(now, router, ssrc, io);
            }
            Command::SetForceMute {
                transport,
                audio,
                video,
            } => {
                let Some(t) = self.transports.get_mut(&transport) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                let was = t.force_mute;
                t.force_mute = ForceMute { audio, video };
                if was.video && !video {
                    self.keyframe_after_unmute(now, transport, io);
                }
            }
            Command::CloseTransport { transport } => self.close_transport(now, transport, io),
            Command::GetStats { request } => {
                let snapshot = Box::new(self.snapshot(io, recv));
                self.events.push(Event::Stats { request, snapshot });
            }
            Command::Shutdown => return false,
        }
        self.next_sweep = now;
        true
    }

    fn command_failed(&mut self, transport: TransportId, detail: String) {
        self.events.push(Event::CommandFailed { transport, detail });
    }

    fn close_transport(&mut self, now: Instant, id: TransportId, io: &mut Io) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        t.close();
        self.after_transport(now, id, io);
        let Some(t) = self.transports.remove(&id) else {
            return;
        };
        self.by_ufrag.remove(t.local_ufrag().as_bytes());
        self.by_addr.retain(|_, v| *v != id);
        if let Some(r) = self.routers.get_mut(&t.router) {
            r.remove_member(id);
        }
    }

    /// Routes one received datagram.
    fn on_datagram(
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
            DatagramKind::Dtls => {
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
                    t.counters.drop(reason);
                    self.total.drop(reason);
                }
                self.after_transport(now, id, io);
            }
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
            t.counters.drop(reason);
            self.total.drop(reason);
        }
        self.after_transport(now, id, io);
    }

    /// The media path: unprotect, parse, find the Producer, fan out to every other member.
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
                t.counters.drop(reason);
                self.total.drop(reason);
                return;
            }
        };
        let router_id = t.router;
        let Some(pkt) = buf.get(..len) else {
            self.total.drop(DropReason::SrtpOther);
            return;
        };
        let view = match RtpView::parse(pkt) {
            Ok(v) => v,
            Err(_) => {
                t.counters.drop(DropReason::RtpMalformed);
                self.total.drop(DropReason::RtpMalformed);
                return;
            }
        };
        let Some(router) = self.routers.get_mut(&router_id) else {
            self.total.drop(DropReason::UnknownSsrc);
            return;
        };
        match router.producers.get_mut(&view.ssrc()) {
            Some(p) if p.transport == id => {
                // A muted stream still counts as received: the bridge's RRs to its sender stay true.
                p.stats
                    .on_packet(now, view.sequence_number(), view.timestamp());
                p.packets += 1;
                if force_mute.mutes(p.kind) {
                    p.note_muted(view.sequence_number());
                    t.counters.drop(DropReason::ForceMuted);
                    self.total.drop(DropReason::ForceMuted);
                    return;
                }
            }
            _ => {
                t.counters.drop(DropReason::UnknownSsrc);
                self.total.drop(DropReason::UnknownSsrc);
                return;
            }
        }
        for &m in &router.members {
            if m == id {
                continue;
            }
            let Some(r) = self.transports.get_mut(&m) else {
                continue;
            };
            if !r.is_media_ready() {
                continue;
            }
            let (Some(dst), Some(src)) = (r.remote_addr(), r.local_addr()) else {
                continue;
            };
            let sock = io.socket_for(src);
            let batch = io.slot(sock);
            let Some(slot) = batch.slot() else {
                continue;
            };
            // One copy per receiver is unavoidable: each has its own SRTP key. Encrypt in the egress buffer.
            slot[..len].copy_from_slice(pkt);
            match r.protect_rtp(slot, len) {
                Ok(n) => {
                    batch.commit(n, dst);
                    r.counters.packets_out += 1;
                    r.counters.bytes_out += n as u64;
                    r.counters.rtp_out += 1;
                    self.total.rtp_out += 1;
                    self.total.packets_out += 1;
                    self.total.bytes_out += n as u64;
                }
                Err(reason) => {
                    r.counters.drop(reason);
                    self.total.drop(reason);
                }
            }
        }
    }

    /// Drains a Transport's control output and notes after any input or command.
    fn after_transport(&mut self, now: Instant, id: TransportId, io: &mut Io) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let mut media_ready = false;
        while let Some(tx) = t.poll_transmit() {
            let sock = io.socket_for(tx.source);
            if io.slot(sock).push(&tx.contents, tx.destination) {
                t.counters.packets_out += 1;
                t.counters.bytes_out += tx.contents.len() as u64;
                self.total.packets_out += 1;
                self.total.bytes_out += tx.contents.len() as u64;
            } else {
                t.counters.drop(DropReason::EgressFailed);
                self.total.drop(DropReason::EgressFailed);
            }
        }
        let router = t.router;
        while let Some(note) = self.transports.get_mut(&id).and_then(Transport::poll_note) {
            match note {
                Note::Address(addr) => {
                    self.by_addr.insert(addr, id);
                }
                Note::State {
                    state,
                    detail,
                    failure,
                } => self.on_state(id, state, detail, failure),
                Note::MediaReady => media_ready = true,
                Note::Dropped { reason, count } => self.total.drop_n(reason, count),
            }
        }
        if media_ready {
            let transports = &self.transports;
            if let Some(r) = self.routers.get_mut(&router) {
                // A force-muted video sender's keyframe would reach nobody; it gets a PLI on unmute.
                let ready = |t: TransportId| {
                    transports
                        .get(&t)
                        .is_some_and(|t| t.is_media_ready() && !t.force_mute.video)
                };
                for (owner, ssrc) in r.keyframe_requests(now, id, ready) {
                    self.send_pli(router, owner, ssrc, io);
                }
            }
        }
    }

    /// Records a transport's state change: failure counters, the event, and no more routing to a
    /// finished transport (it stays for stats until closed).
    fn on_state(
        &mut self,
        id: TransportId,
        state: TransportState,
        detail: String,
        failure: Option<FailureKind>,
    ) {
        if let Some(f) = failure {
            self.failures.count(f);
        }
        if matches!(state, TransportState::Failed | TransportState::Closed) {
            self.by_addr.retain(|_, v| *v != id);
        }
        self.events.push(Event::TransportState {
            transport: id,
            state,
            detail,
        });
    }

    fn on_panic(&mut self, from: SocketAddr) {
        self.total.drop(DropReason::Panic);
        if let Some(&id) = self.by_addr.get(&from) {
            self.fail_after_panic(id, "internal error while processing a packet");
        }
    }

    /// Fails a transport whose processing panicked and reports it at once; its pending output is
    /// discarded, since a failed transport needs no egress.
    fn fail_after_panic(&mut self, id: TransportId, detail: &str) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        t.fail(FailureKind::Panic, detail.into());
        while t.poll_transmit().is_some() {}
        while let Some(note) = self.transports.get_mut(&id).and_then(Transport::poll_note) {
            match note {
                Note::State {
                    state,
                    detail,
                    failure,
                } => self.on_state(id, state, detail, failure),
                Note::Dropped { reason, count } => self.total.drop_n(reason, count),
                Note::Address(_) | Note::MediaReady => {}
            }
        }
    }

    fn sweep(&mut self, now: Instant, io: &mut Io) {
        let mut next = now + MAX_SLEEP;
        let ids: Vec<TransportId> = self.transports.keys().copied().collect();
        for id in ids {
            let due = self.transports.get(&id).and_then(|t| t.poll_timeout());
            if let Some(at) = due {
                if at <= now {
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        if let Some(t) = self.transports.get_mut(&id) {
                            t.handle_timeout(now);
                        }
                        self.after_transport(now, id, io);
                    }));
                    if outcome.is_err() {
                        self.fail_after_panic(id, "internal error in a timer");
                    }
                }
                if let Some(at) = self.transports.get(&id).and_then(|t| t.poll_timeout()) {
                    next = next.min(at);
                }
            }
        }
        self.send_receiver_reports(now, io);
        for r in self.routers.values() {
            if let Some(at) = r.next_report {
                next = next.min(at);
            }
        }
        self.next_sweep = next.max(now + Duration::from_millis(1));
    }

    fn snapshot(&self, io: &Io, recv: &RecvBatch) -> StatsSnapshot {
        let mut total = self.total;
        let mut io_counters = IoCounters {
            recv_calls: recv.calls,
            recv_packets: recv.packets,
            ..Default::default()
        };
        for b in &io.send {
            io_counters.send_calls += b.calls;
            io_counters.send_packets += b.packets;
            for _ in 0..b.dropped {
                total.drop(DropReason::SendFailed);
            }
        }
        let mut transports: Vec<_> = self.transports.values().map(|t| t.stats()).collect();
        transports.sort_by_key(|t| t.id);
        StatsSnapshot {
            total,
            failures: self.failures,
            io: io_counters,
            routers: self.routers.len() as u64,
            transports,
            seam_commands: self.commands_seen,
            seam_events: self.events_sent,
        }
    }
}

/// The transport that owns datagrams from `from`, with their arrival counted on it; an unknown address
/// is counted as a drop. Free function over the fields so the caller keeps the others borrowable.
#[inline]
fn claim<'a>(
    by_addr: &HashMap<SocketAddr, TransportId>,
    transports: &'a mut HashMap<TransportId, Transport>,
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

/// A shard running on its own thread, driven through the seam queues.
pub struct ShardHandle {
    pub commands: Arc<Queue<Command>>,
    pub events: Arc<Queue<Event>>,
    local_addrs: Vec<SocketAddr>,
    thread: Option<JoinHandle<()>>,
}

impl ShardHandle {
    pub fn spawn(config: &ShardConfig, cert: DtlsCert) -> io::Result<Self> {
        let shard = Shard::new(config, cert)?;
        let local_addrs = shard.local_addrs().to_vec();
        let commands = Arc::new(Queue::new()?);
        let events = Arc::new(Queue::new()?);
        let (c, e) = (commands.clone(), events.clone());
        let thread = std::thread::Builder::new()
            .name("sluice-shard-0".into())
            .spawn(move || run(shard, &c, &e))?;
        Ok(ShardHandle {
            commands,
            events,
            local_addrs,
            thread: Some(thread),
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    pub fn send(&self, cmd: Command) {
        self.commands.push(cmd);
    }

    /// Stops the shard thread and waits for it.
    pub fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            self.commands.push(Command::Shutdown);
            let _ = t.join();
        }
    }
}

impl Drop for ShardHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(mut shard: Shard, commands: &Queue<Command>, events: &Queue<Event>) {
    let mut cmds = Vec::new();
    let mut evs = Vec::new();
    loop {
        let now = Instant::now();
        shard.wait(Some(commands.fd()), shard.poll_timeout(now), now);
        let now = Instant::now();
        commands.drain_into(&mut cmds);
        for cmd in cmds.drain(..) {
            if !shard.handle_command(now, cmd) {
                return;
            }
        }
        shard.poll_io(now);
        shard.handle_timeouts(now);
        shard.take_events(&mut evs);
        if !evs.is_empty() {
            events.push_all(evs.drain(..));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ice::IceCredentials;

    fn shard_with_transports(ids: &[TransportId]) -> Shard {
        let cert = DtlsCert::generate().expect("cert");
        let mut shard = Shard::new(
            &ShardConfig {
                bind: vec!["127.0.0.1:0".parse().expect("literal")],
            },
            cert,
        )
        .expect("bind");
        let now = Instant::now();
        shard.handle_command(now, Command::CreateRouter { router: 1 });
        for &id in ids {
            let ice = IceCredentials {
                ufrag: format!("ufrag{id}"),
                pwd: "p".repeat(24),
            };
            shard.handle_command(
                now,
                Command::CreateTransport {
                    router: 1,
                    transport: id,
                    ice,
                    controlling: true,
                },
            );
            let fp = crate::dtls::DtlsCert::generate()
                .expect("cert")
                .fingerprint(crate::dtls::HashAlg::Sha256);
            shard.handle_command(
                now,
                Command::ConnectTransport {
                    transport: id,
                    remote_ice: IceCredentials {
                        ufrag: "peer".into(),
                        pwd: "q".repeat(24),
                    },
                    fingerprints: vec![fp],
                    remote_setup: "active".into(),
                },
            );
        }
        shard
    }

    #[test]
    fn dtls_before_the_remote_description_is_kept_and_answered_on_connect() {
        use crate::dtls::{DtlsConn, DtlsRole, HashAlg};
        let cert = DtlsCert::generate().expect("cert");
        let mut shard = Shard::new(
            &ShardConfig {
                bind: vec!["127.0.0.1:0".parse().expect("literal")],
            },
            cert.clone(),
        )
        .expect("bind");
        let now = Instant::now();
        shard.handle_command(now, Command::CreateRouter { router: 1 });
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
                remote_setup: "active".into(),
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

    #[test]
    fn a_panic_in_one_transport_fails_it_and_the_shard_lives() {
        let mut shard = shard_with_transports(&[10, 11]);
        let peer = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let other = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        shard.state.by_addr.insert(peer.local_addr(), 10);
        shard.state.by_addr.insert(other.local_addr(), 11);
        shard
            .state
            .transports
            .get_mut(&10)
            .expect("transport")
            .panic_on_dtls = true;

        let mut batch = SendBatch::new(4);
        batch.push(&[22, 0xfe, 0xfd, 0, 0], shard.local_addrs()[0]);
        peer.send_batch(&mut batch);
        let deadline = Instant::now() + Duration::from_secs(2);
        while shard.stats().total.drops(DropReason::Panic) == 0 && Instant::now() < deadline {
            shard.poll_io(Instant::now());
        }
        let mut events = Vec::new();
        shard.take_events(&mut events);
        assert!(events.iter().any(|e| matches!(e,
            Event::TransportState { transport: 10, state: TransportState::Failed, detail } if detail.contains("internal"))));
        assert_eq!(shard.stats().failures.panic, 1);
        assert!(
            !shard.state.by_addr.values().any(|v| *v == 10),
            "a failed transport is no longer routed"
        );

        // The other transport still gets its datagrams.
        let before = shard.state.transports[&11].counters.packets_in;
        batch.push(&[22, 0xfe, 0xfd, 0, 0], shard.local_addrs()[0]);
        other.send_batch(&mut batch);
        let deadline = Instant::now() + Duration::from_secs(2);
        while shard.state.transports[&11].counters.packets_in == before && Instant::now() < deadline
        {
            shard.poll_io(Instant::now());
        }
        assert_eq!(shard.state.transports[&11].counters.packets_in, before + 1);
        assert_eq!(
            shard.state.transports[&11].state(),
            TransportState::Checking
        );
    }
}

/// Entry points for native/fuzz: the whole per-datagram path of a shard, without threads.
#[cfg(feature = "fuzzing")]
pub mod fuzz {
    use super::*;
    use crate::ice::IceCredentials;
    use std::cell::RefCell;

    thread_local! {
        static SHARD: RefCell<Option<Shard>> = const { RefCell::new(None) };
    }

    const KNOWN: &str = "127.0.0.1:40000";
    const UNKNOWN: &str = "127.0.0.1:40001";

    fn setup() -> Shard {
        let cert = DtlsCert::generate().expect("fuzz setup: certificate");
        let config = ShardConfig {
            bind: vec!["127.0.0.1:0".parse().expect("literal")],
        };
        let mut shard = Shard::new(&config, cert).expect("fuzz setup: bind");
        let now = Instant::now();
        shard.handle_command(now, Command::CreateRouter { router: 1 });
        for (id, ufrag) in [(10, "fuzzufrag"), (11, "otherufrag")] {
            let ice = IceCredentials {
                ufrag: ufrag.into(),
                pwd: "fuzzpasswordfuzzpassword".into(),
            };
            shard.handle_command(
                now,
                Command::CreateTransport {
                    router: 1,
                    transport: id,
                    ice,
                    controlling: true,
                },
            );
        }
        shard
            .state
            .by_addr
            .insert(KNOWN.parse().expect("literal"), 10);
        shard
    }

    /// Routes one datagram through classify → STUN/DTLS/SRTP/RTCP handling, as from a known peer
    /// (first byte even) or an unknown address (odd).
    pub fn demux(data: &[u8]) {
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        SHARD.with(|cell| {
            let mut slot = cell.borrow_mut();
            let shard = slot.get_or_insert_with(setup);
            let from: SocketAddr = if sel % 2 == 0 { KNOWN } else { UNKNOWN }
                .parse()
                .expect("literal");
            let local = shard.io.sockets[0].local_addr();
            let mut buf = rest.to_vec();
            let Shard { io, state, .. } = shard;
            state.on_datagram(Instant::now(), local, from, &mut buf, io);
            // Never put fuzz output on the wire.
            io.send.iter_mut().for_each(|b| b.clear());
        });
    }
}
