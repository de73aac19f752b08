//! The shard: one thread that owns sockets, Transports and Routers, and runs the hot path.
//!
//! recvmmsg → classify (RFC 7983) → route (STUN by ufrag, the rest by remote address) → SRTP unprotect in
//! place → RTP view → the Router forwards to every other member (copy into the egress batch, SRTP protect)
//! → sendmmsg. Everything here is `&mut` on one thread: no locks on the media path.
//!
//! - `run`: the loop (poll, timers, panic isolation) and the thread handle;
//! - `commands`: the seam's Commands applied to Routers and Transports;
//! - `ingress`: one received datagram, from classification to the Router or the RTCP terminator;
//! - `rtcp`: RTCP terminated per leg, the bridge's own RTCP and the keyframe policy;
//! - `egress`: sockets and send batches, the only way out (protected through `Transport::send_protected`).

mod commands;
mod egress;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod ingress;
mod rtcp;
mod run;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::domain::{IdMap, MediaKind, RouterId, TransportId, TransportState};
use crate::dtls::DtlsCert;
use crate::io::tcp::{TcpConfig, TcpIo};
use crate::io::{RecvBatch, SendBatch, UdpSocket, MAX_DATAGRAM};
use crate::router::Router;
use crate::seam::Event;
use crate::stats::{Counters, DropReason, FailureCounters, FailureKind, IoCounters, StatsSnapshot};
use crate::transport::{Note, Transport};
use egress::Io;
pub use run::ShardHandle;

/// Datagrams per recvmmsg/sendmmsg call.
pub const BATCH: usize = 64;
/// Receive batches per socket per loop turn, so commands and timers are not starved under load.
const RECV_ROUNDS: usize = 8;
/// The longest the loop sleeps; also the granularity of protocol timers.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// How soon the loop comes back to a pacer that just started holding packets.
const PACE_STEP: Duration = Duration::from_millis(1);
/// After an ICE restart command, how long a gap in the peer's video makes its receivers resume at a
/// switch point (the new path is usually up within a second or two; the web client gives up at 6 s).
const RESYNC_AFTER_RESTART: Duration = Duration::from_secs(5);
/// ... and after its media moved to the new path: its queued and retransmitted packets settle by then.
const RESYNC_AFTER_PATH_CHANGE: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default)]
pub struct ShardConfig {
    /// Local addresses to bind, all on the shared port (port 0: the first gets an ephemeral port, the
    /// others reuse it).
    pub bind: Vec<SocketAddr>,
    /// The CPU the shard's thread is pinned to, if any (see [`ShardHandle::spawn`]).
    pub cpu: Option<usize>,
    /// Where each transport's congestion-control trace is written (`cc::trace`; None: nowhere).
    pub cc_trace_dir: Option<std::path::PathBuf>,
    /// Each receiver's send-side estimate before feedback, bit/s (None: `EstimatorConfig`'s 2.5 Mbit/s).
    pub cc_initial_estimate_bps: Option<u64>,
    /// Whether each receiver's video is paced to its estimate (`cc::pacer`).
    pub cc_pacing: bool,
    /// ICE-TCP passive candidates (RFC 6544) on this listener, if any.
    pub tcp: Option<TcpConfig>,
    /// Send each receiver's run of equal-size packets in a batch as one UDP GSO message
    /// (`SendBatch::with_gso`; off again by itself where the kernel refuses it).
    pub gso: bool,
    /// This shard's number among the bridge's: its thread is `sluice-shard-<index>`.
    pub index: usize,
}

/// All state a shard mutates per packet.
pub struct State {
    cert: DtlsCert,
    local_addrs: Vec<SocketAddr>,
    /// The ICE-TCP listener's address: every Transport gets a passive candidate on it.
    tcp_local: Option<SocketAddr>,
    routers: IdMap<Router>,
    transports: IdMap<Transport>,
    by_ufrag: HashMap<Vec<u8>, TransportId>,
    by_addr: HashMap<SocketAddr, TransportId>,
    total: Counters,
    failures: FailureCounters,
    events: Vec<Event>,
    /// Earliest time a timer may be due; a sweep runs when it passes.
    next_sweep: Instant,
    /// When the Routers' audio levels next cross the seam.
    next_levels: Instant,
    /// When transport-cc feedback goes out next.
    next_feedback: Instant,
    /// When the bridge's own NACKs are looked at next.
    next_nack: Instant,
    /// Keyframe requests the Producer's rate limit refused: (router, SSRC, when it allows one), at most
    /// `MAX_DEFERRED_KEYFRAMES`; capacity kept, so no allocation once it has grown.
    deferred_keyframes: Vec<(RouterId, u32, Instant)>,
    /// Seam crossings: commands handled and events handed out since start.
    commands_seen: u64,
    events_sent: u64,
    cc_trace_dir: Option<std::path::PathBuf>,
    /// Every receiver's send-side estimator starts from this.
    cc_config: crate::cc::EstimatorConfig,
    cc_pacing: bool,
}

pub struct Shard {
    io: Io,
    recv: RecvBatch,
    state: State,
    /// poll(2) set: every UDP socket, then the ICE-TCP listener and connections, then one slot for
    /// the caller's wake-up fd.
    pollfds: Vec<libc::pollfd>,
    /// The last `wait` returned readiness in `pollfds`: `poll_io` then reads only the UDP sockets it
    /// reported (a timer wake-up costs no `recvmmsg` that finds nothing).
    polled: bool,
    /// One received ICE-TCP frame, as a datagram for `on_datagram`.
    tcp_frame: Box<[u8; MAX_DATAGRAM]>,
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
        let local_addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr()).collect();
        let tcp = match config.tcp {
            // One address would then name two ways out (the egress goes by local address).
            Some(t) if local_addrs.iter().any(|a| a.port() == t.bind.port()) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the ICE-TCP port {} must differ from the UDP port",
                        t.bind.port()
                    ),
                ))
            }
            Some(t) => Some(TcpIo::bind(t)?),
            None => None,
        };
        let tcp_local = tcp.as_ref().map(TcpIo::local_addr);
        let send = sockets
            .iter()
            .map(|_| {
                if config.gso {
                    SendBatch::with_gso(BATCH)
                } else {
                    SendBatch::new(BATCH)
                }
            })
            .collect();
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
            polled: false,
            tcp_frame: Box::new([0; MAX_DATAGRAM]),
            io: Io::new(sockets, send, tcp),
            recv: RecvBatch::new(BATCH),
            state: State {
                cert,
                local_addrs,
                tcp_local,
                routers: IdMap::default(),
                transports: IdMap::default(),
                by_ufrag: HashMap::new(),
                by_addr: HashMap::new(),
                total: Counters::default(),
                failures: FailureCounters::default(),
                events: Vec::new(),
                next_sweep: Instant::now(),
                next_levels: Instant::now() + crate::router::LEVEL_TICK,
                next_feedback: Instant::now() + rtcp::FEEDBACK_INTERVAL,
                next_nack: Instant::now() + rtcp::NACK_INTERVAL,
                deferred_keyframes: Vec::with_capacity(64),
                commands_seen: 0,
                cc_trace_dir: config.cc_trace_dir.clone(),
                cc_config: {
                    let base = crate::cc::EstimatorConfig::default();
                    crate::cc::EstimatorConfig {
                        initial_bps: config.cc_initial_estimate_bps.unwrap_or(base.initial_bps),
                        ..base
                    }
                },
                cc_pacing: config.cc_pacing,
                events_sent: 0,
            },
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.state.local_addrs
    }

    /// The ICE-TCP listener's address, if there is one.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.state.tcp_local
    }

    pub fn take_events(&mut self, out: &mut Vec<Event>) {
        self.state.events_sent += self.state.events.len() as u64;
        out.append(&mut self.state.events);
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.state.snapshot(&self.io, &self.recv)
    }

    /// One Router, to inspect what the shard knows of a conference (its Sources, Producers, members).
    pub fn router(&self, id: RouterId) -> Option<&Router> {
        self.state.routers.get(&id)
    }
}

impl State {
    /// Drains a Transport's control output and notes after any input, command or timer.
    fn after_transport(&mut self, now: Instant, id: TransportId, io: &mut Io) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let (mut media_ready, mut path_changed) = (false, false);
        while let Some(tx) = t.poll_transmit() {
            io.send_plain(t, &mut self.total, &tx);
        }
        let router = t.router;
        while let Some(note) = self.transports.get_mut(&id).and_then(Transport::poll_note) {
            match note {
                Note::Address { local, remote } => self.route_address(id, local, remote),
                Note::State {
                    state,
                    detail,
                    failure,
                } => self.on_state(id, state, detail, failure),
                Note::MediaReady => media_ready = true,
                Note::PathChanged => path_changed = true,
                Note::Dropped { reason, count } => self.total.drop_n(reason, count),
            }
        }
        if media_ready || path_changed {
            self.keyframes_for_new_receiver(now, router, id, io);
        }
        if path_changed {
            if let Some(r) = self.routers.get_mut(&router) {
                r.resync_sender(id, now + RESYNC_AFTER_PATH_CHANGE);
            }
            self.keyframes_from(now, id, io);
        }
    }

    /// Routes datagrams from `addr` to transport `id`. A TCP peer never takes an address another live
    /// transport has: a UDP peer's address, reused as a TCP source from the same host or NAT, would
    /// otherwise divert that peer's media.
    fn route_address(&mut self, id: TransportId, local: SocketAddr, addr: SocketAddr) {
        if Some(local) == self.tcp_local {
            if let Some(other) = self.by_addr.get(&addr) {
                let live = self.transports.get(other).is_some_and(|t| {
                    !matches!(t.state(), TransportState::Failed | TransportState::Closed)
                });
                if *other != id && live {
                    self.total.drop(DropReason::AddressInUse);
                    return;
                }
            }
        }
        self.by_addr.insert(addr, id);
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

    fn snapshot(&self, io: &Io, recv: &RecvBatch) -> StatsSnapshot {
        let mut total = self.total;
        let mut io_counters = IoCounters {
            recv_calls: recv.calls,
            recv_packets: recv.packets,
            tcp: io.tcp.as_ref().map(|t| t.counters).unwrap_or_default(),
            ..Default::default()
        };
        for b in io.batches() {
            io_counters.send_calls += b.calls;
            io_counters.send_packets += b.packets;
            io_counters.gso_sends += b.gso_sends;
            io_counters.gso_refused += b.gso_refused;
            for _ in 0..b.dropped {
                total.drop(DropReason::SendFailed);
            }
        }
        let mut transports: Vec<_> = self.transports.values().map(|t| t.stats()).collect();
        transports.sort_by_key(|t| t.id);
        let now = std::time::Instant::now();
        let mut layers = Vec::new();
        let mut waiting = Vec::new();
        for r in self.routers.values() {
            r.layer_stats(now, &mut layers);
            r.waiting_stats(&mut waiting);
            for p in r.producers.values() {
                let Ok(i) = transports.binary_search_by_key(&p.transport, |t| t.id) else {
                    continue;
                };
                let t = &mut transports[i];
                t.rtp_received += p.stats.packets_received();
                t.rtp_lost += p.stats.packets_lost();
                if p.kind == MediaKind::Audio {
                    t.audio_in_bps += p.rate.bps(now);
                    // Audio only: a video SSRC's timestamps jump when a paused simulcast layer
                    // starts again, which RFC 3550 jitter takes for minutes of delay.
                    let jitter_ms =
                        f64::from(p.stats.jitter()) * 1000.0 / f64::from(p.kind.clock_rate());
                    t.jitter_ms = t.jitter_ms.max(jitter_ms);
                }
            }
        }
        StatsSnapshot {
            layers,
            waiting,
            total,
            failures: self.failures,
            io: io_counters,
            routers: self.routers.len() as u64,
            transports,
            seam_commands: self.commands_seen,
            seam_events: self.events_sent,
            thread_cpu_ns: crate::stats::thread_cpu_ns(),
        }
    }
}

/// A shard with one router (1, feedback SSRCs 0xA0 and 0xB0) for the tests of each part.
#[cfg(test)]
fn test_shard(cert: DtlsCert) -> Shard {
    use crate::domain::FeedbackSsrcs;
    use crate::seam::Command;
    let mut shard = Shard::new(
        &ShardConfig {
            bind: vec!["127.0.0.1:0".parse().expect("literal")],
            ..Default::default()
        },
        cert,
    )
    .expect("bind");
    shard.handle_command(
        Instant::now(),
        Command::CreateRouter {
            router: 1,
            feedback: FeedbackSsrcs {
                audio: 0xA0,
                video: 0xB0,
            },
        },
    );
    shard
}
