//! Sluice load generator: emulated endpoints in the client role of the same sans-IO machines the
//! bridge runs (`sluice_core::ice` controlled, `dtls`, `srtp`), thousands per process on a few
//! worker threads, and a raw UDP relay to measure the physical limit against.
//!
//! # Use
//! 1. [`LoadGen::new`], then [`LoadGen::create_endpoints`] per group (conference): each endpoint
//!    reports its ICE credentials, DTLS fingerprint (sha-256, setup `active`) and host candidate.
//! 2. Allocate the endpoints on the bridge (Colibri2), then hand each endpoint the bridge's side
//!    ([`LoadGen::connect`]) and the SSRCs it sends ([`LoadGen::set_sources`]). In raw mode,
//!    [`LoadGen::connect_raw`] names the relay instead.
//! 3. Wait for [`LoadGen::connected`], [`LoadGen::start`], let it run, [`LoadGen::stop`] with a
//!    drain time, and read [`LoadGen::snapshot`].
//!
//! # What is sent
//! Audio: one packet every 20 ms (payload type 111). Video (payload type 100): valid VP8 RTP
//! (RFC 7741) from an emulated encoder per simulcast layer, each layer its own SSRC with its own
//! PictureID and TL0PICIDX space, 3 temporal layers, keyframes at start, periodically and on
//! PLI/FIR, and Jitsi's simulcast resolutions and bitrate ratios (see [`vp8`]). Every packet ends
//! with the load generator's own trailer (see [`payload`]): sender, sent ssrc and layer, a 64-bit
//! sequence number, the send time (CLOCK_MONOTONIC, same host) and a CRC-32.
//!
//! With [`MediaConfig::feedback`] (secure mode) endpoints also act like browsers about loss and
//! congestion ([`repair`]): transport-wide sequence numbers on everything sent, transport-cc feedback
//! and NACKs from receivers, RTX from senders' packet histories.
//!
//! # What is measured
//! Receivers verify each packet and track it twice. Per sent stream (sender, ssrc as the payload
//! names it): loss, reordering, duplicates and one-way latency. Each receiver is expected to get
//! every stream of every other member of its group (what the bridge does today: forward all). Loss is
//! `sent - received` per stream once sending stopped and in-flight packets drained; while running,
//! only sequence gaps are known. Per received stream (the RTP header's ssrc, as a browser sees it):
//! RTP sequence gaps, simulcast layer switches (and those not at a keyframe), frames, keyframes and
//! freezes (see [`track`]), which is what a forwarder that rewrites layers onto one ssrc is judged
//! by.
//!
//! Latency runs from the moment a packet is written (just before encryption) to the moment its
//! receive batch is read from the socket, so it includes the load generator's own delays on both
//! ends (the rest of its send batch, its thread's wake-up); with the generator and the bridge sharing
//! two cores, treat p99 as an upper bound of what the forwarder adds. The same holds against the raw
//! relay, so the two are comparable.
//!
//! # Sockets
//! With an IPv4 loopback bind address (the default) each worker serves its endpoints from one socket
//! bound to 0.0.0.0, every endpoint with its own 127.a.b.c address ([`io`]); otherwise each endpoint
//! has its own socket. Either way the bridge sees one address per endpoint.

pub mod endpoint;
pub mod histogram;
pub mod inproc;
pub mod io;
pub mod payload;
pub mod relay;
pub mod repair;
pub mod stats;
pub mod track;
pub mod turn;
pub mod vp8;
mod worker;

use std::io as stdio;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_core::domain::RemoteCandidate;
use sluice_core::dtls::{DtlsCert, Fingerprint, HashAlg};
use sluice_core::ice::{Candidate, IceCredentials};
use sluice_core::io::UdpSocket;
use sluice_core::queue::Queue;

use endpoint::{Endpoint, Sock};
pub use endpoint::{EndpointState, RidSignal, Role, AUDIO_LEVEL_EXT_ID};
pub use payload::Kind;
pub use repair::{PT_RTX, TRANSPORT_CC_EXT_ID};
pub use stats::{Latency, ReceiveTotals, Snapshot, StreamStats, Totals};
use worker::{Cmd, Shared, Worker};

/// Receive buffer of a worker's shared loopback socket. Every emulated encoder starts with a keyframe
/// within one frame interval, so every receiver's first keyframes arrive at once: at 30 meetings of
/// 8 about 25k datagrams, which overflowed 8 MB at the generator (not at the target) and capped the
/// measured knee. The instrument must not be what loses packets.
const SHARED_RECEIVE_BUFFER: libc::c_int = 128 << 20;

/// Whether endpoints speak ICE/DTLS/SRTP to a bridge or clear RTP to the raw relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Secure,
    Raw,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Secure => "secure",
            Mode::Raw => "raw",
        }
    }
}

/// What every endpoint sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaConfig {
    pub audio: bool,
    pub video: bool,
    /// Bitrate of the top video layer, bits/s. With simulcast the layers below send a third and
    /// 2/15 of it (Jitsi's ratios, [`vp8::simulcast_layer`]).
    pub video_bitrate_bps: u32,
    pub fps: u32,
    /// Largest video packet before SRTP, RTP header included (frames are split evenly below it).
    pub video_packet_size: usize,
    /// Audio packet size before SRTP, RTP header included.
    pub audio_packet_size: usize,
    /// Audio packet interval (20 ms: 50 packets/s).
    pub audio_interval_ms: u32,
    /// Sender report interval per sent SSRC (secure mode).
    pub rtcp_interval_ms: u32,
    /// A keyframe every this many frames of a layer besides the first and those asked for (0: none).
    pub keyframe_interval_frames: u32,
    /// A received video stream with no new frame for longer than this is frozen.
    pub freeze_ms: u32,
    /// Secure mode: behave like a browser about feedback (see [`repair`]). Every RTP packet sent
    /// carries a transport-wide sequence number ([`TRANSPORT_CC_EXT_ID`]); receivers send transport-cc
    /// feedback on the numbers the bridge stamped every `feedback_interval_ms` and NACK what is missing
    /// of each received video stream; senders answer NACKs from a history of their video packets, with
    /// RTX ([`PT_RTX`]) on the layer's RTX SSRC when it has one ([`Sources::rtx`]), else the original.
    pub feedback: bool,
    /// Transport-cc feedback interval. Chrome's is 50-250 ms by its receive rate (100 ms until it
    /// knows one); 100 ms is that default and the bridge's own interval.
    pub feedback_interval_ms: u32,
    /// Test knob, 0: off. Each endpoint drops every n-th SRTP media datagram it receives before
    /// anything reads it, as if the link had lost it (so transport-cc feedback reports it lost and
    /// NACKs ask for it). Counted in `Totals::link_dropped`.
    pub drop_every_n: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            audio: true,
            video: true,
            video_bitrate_bps: 1_000_000,
            fps: 30,
            video_packet_size: 1200,
            audio_packet_size: 100,
            audio_interval_ms: 20,
            rtcp_interval_ms: 1000,
            keyframe_interval_frames: vp8::DEFAULT_KEYFRAME_INTERVAL_FRAMES,
            freeze_ms: 500,
            feedback: false,
            feedback_interval_ms: 100,
            drop_every_n: 0,
        }
    }
}

impl MediaConfig {
    pub fn frame_interval_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.fps.max(1))
    }
    pub fn audio_interval_ns(&self) -> u64 {
        u64::from(self.audio_interval_ms.max(1)) * 1_000_000
    }
    pub fn rtcp_interval_ns(&self) -> u64 {
        u64::from(self.rtcp_interval_ms.max(1)) * 1_000_000
    }
    pub fn freeze_ns(&self) -> u64 {
        u64::from(self.freeze_ms) * 1_000_000
    }
    pub fn feedback_interval_ns(&self) -> u64 {
        u64::from(self.feedback_interval_ms.clamp(10, 1000)) * 1_000_000
    }
}

#[derive(Clone, Debug)]
pub struct LoadGenConfig {
    /// Worker threads the endpoints are spread over.
    pub threads: usize,
    /// Address every endpoint socket binds to (its host candidate).
    pub bind_ip: IpAddr,
    /// With an IPv4 loopback `bind_ip`: every worker serves its endpoints from one socket bound to
    /// 0.0.0.0, each endpoint with its own 127.a.b.c address (see `io`), so sends and receives are
    /// batched across endpoints. Otherwise (or when false) each endpoint has its own socket.
    pub shared_sockets: bool,
    pub mode: Mode,
    pub media: MediaConfig,
}

impl Default for LoadGenConfig {
    fn default() -> Self {
        LoadGenConfig {
            threads: 1,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            shared_sockets: true,
            mode: Mode::Secure,
            media: MediaConfig::default(),
        }
    }
}

/// The SSRCs one endpoint sends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    pub audio: Option<u32>,
    /// One per simulcast layer, lowest first.
    pub video: Vec<u32>,
    /// The RTX SSRC of each video layer (RFC 4588, an FID group each), in the same order; empty: no
    /// RTX (retransmissions then resend the original packet).
    pub rtx: Vec<u32>,
}

impl Sources {
    /// Distinct SSRCs derived from the endpoint index: audio and `layers` video SSRCs.
    pub fn for_endpoint(index: u32, layers: usize) -> Self {
        let base = 0x1000_0000u32.wrapping_add(index.wrapping_mul(8));
        Sources {
            audio: Some(base),
            video: (0..layers.min(7) as u32).map(|l| base + 1 + l).collect(),
            rtx: Vec::new(),
        }
    }

    /// [`Sources::for_endpoint`] with an RTX SSRC per video layer, from a range of its own.
    pub fn with_rtx(index: u32, layers: usize) -> Self {
        let base = 0x5000_0000u32.wrapping_add(index.wrapping_mul(8));
        Sources {
            rtx: (0..layers.min(7) as u32).map(|l| base + 1 + l).collect(),
            ..Self::for_endpoint(index, layers)
        }
    }
}

/// The bridge's side of one endpoint's transport.
#[derive(Clone, Debug)]
pub struct RemoteDescription {
    pub ice: IceCredentials,
    pub candidates: Vec<RemoteCandidate>,
    /// Every fingerprint it announced (any supported one may match).
    pub fingerprints: Vec<Fingerprint>,
    /// Its a=setup: "actpass" or "passive" makes us the DTLS client, "active" the server.
    pub setup: String,
    /// Reach the bridge through this TURN server (a channel bound to its first candidate) rather
    /// than directly.
    pub turn: Option<turn::TurnConfig>,
}

/// One endpoint's side, to put into the Colibri2 endpoint transport.
#[derive(Clone, Debug)]
pub struct LocalDescription {
    pub index: u32,
    pub group: u32,
    pub ice: IceCredentials,
    pub fingerprint: Fingerprint,
    /// Our a=setup: we offer to be the DTLS client, as browsers answering Jitsi do.
    pub setup: &'static str,
    pub candidates: Vec<Candidate>,
}

struct WorkerHandle {
    commands: Arc<Queue<Cmd>>,
    /// Port of the worker's shared socket, when endpoints share one.
    shared_port: Option<u16>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The controller: creates endpoints, routes control to their workers, merges reports.
pub struct LoadGen {
    config: LoadGenConfig,
    /// One certificate for all endpoints: the bridge checks each fingerprint, and one key pair keeps
    /// setting up thousands of endpoints cheap.
    cert: DtlsCert,
    workers: Vec<WorkerHandle>,
    epoch_ns: Arc<AtomicU64>,
    endpoints: u32,
    started: Option<Instant>,
    sending: bool,
    stopped: bool,
}

fn invalid(msg: String) -> stdio::Error {
    stdio::Error::new(stdio::ErrorKind::InvalidInput, msg)
}

impl LoadGen {
    pub fn new(mut config: LoadGenConfig) -> stdio::Result<Self> {
        raise_fd_limit();
        if config.mode == Mode::Raw {
            // No RTCP to or from the raw relay.
            config.media.feedback = false;
        }
        let cert = DtlsCert::generate().map_err(|e| stdio::Error::other(e.to_string()))?;
        let mut workers = Vec::new();
        let epoch_ns = Arc::new(AtomicU64::new(0));
        let share =
            config.shared_sockets && matches!(config.bind_ip, IpAddr::V4(ip) if ip.is_loopback());
        for i in 0..config.threads.max(1) {
            let commands = Arc::new(Queue::new()?);
            let shared = Arc::new(Shared::default());
            let shared_sock = if share {
                let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
                sock.set_receive_buffer(SHARED_RECEIVE_BUFFER);
                Some(sock)
            } else {
                None
            };
            let shared_port = shared_sock.as_ref().map(|s| s.local_addr().port());
            let worker = Worker::new(
                commands.clone(),
                config.media,
                shared.clone(),
                epoch_ns.clone(),
                shared_sock,
            )?;
            let thread = std::thread::Builder::new()
                .name(format!("loadgen-{i}"))
                .spawn(move || worker.run())?;
            workers.push(WorkerHandle {
                commands,
                shared_port,
                shared,
                thread: Some(thread),
            });
        }
        Ok(LoadGen {
            config,
            cert,
            workers,
            epoch_ns,
            endpoints: 0,
            started: None,
            sending: false,
            stopped: false,
        })
    }

    pub fn config(&self) -> &LoadGenConfig {
        &self.config
    }

    /// Endpoint `index` lives on worker `index % threads` at position `index / threads`.
    fn route(&self, index: u32) -> stdio::Result<(&WorkerHandle, usize)> {
        self.check_running()?;
        if index >= self.endpoints {
            return Err(invalid(format!("no endpoint {index}")));
        }
        let n = self.workers.len() as u32;
        Ok((&self.workers[(index % n) as usize], (index / n) as usize))
    }

    fn check_running(&self) -> stdio::Result<()> {
        if self.workers.iter().any(|w| w.thread.is_none()) {
            return Err(stdio::Error::other("the load generator is shut down"));
        }
        Ok(())
    }

    /// Creates `n` endpoints in `group`, each on its own socket; returns their descriptions.
    pub fn create_endpoints(
        &mut self,
        n: usize,
        group: u32,
    ) -> stdio::Result<Vec<LocalDescription>> {
        self.create_endpoints_with(n, group, Role::default())
    }

    /// As [`LoadGen::create_endpoints`], each endpoint in `role` (secure mode; raw endpoints have none).
    pub fn create_endpoints_with(
        &mut self,
        n: usize,
        group: u32,
        role: Role,
    ) -> stdio::Result<Vec<LocalDescription>> {
        self.check_running()?;
        if self.config.mode == Mode::Raw && role != Role::default() {
            return Err(invalid("raw endpoints have no ICE role".into()));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let index = self.endpoints;
            let w = &self.workers[(index as usize) % self.workers.len()];
            let sock = match w.shared_port {
                Some(port) => Sock::Shared {
                    local: SocketAddr::new(IpAddr::V4(io::loopback_ip(index)), port),
                },
                None => {
                    let sock = UdpSocket::bind(SocketAddr::new(self.config.bind_ip, 0))?;
                    sock.enable_rx_timestamps()?;
                    Sock::Own(sock)
                }
            };
            let ice = IceCredentials::random();
            let ep = match self.config.mode {
                Mode::Secure => {
                    Endpoint::secure_with(index, group, sock, ice.clone(), self.cert.clone(), role)
                }
                Mode::Raw => Endpoint::raw(index, group, sock),
            };
            out.push(LocalDescription {
                index,
                group,
                ice,
                fingerprint: self.cert.fingerprint(HashAlg::Sha256),
                setup: "active",
                candidates: ep.local_candidates(),
            });
            w.commands.push(Cmd::Add(Box::new(ep)));
            self.endpoints += 1;
        }
        Ok(out)
    }

    /// Gives endpoint `index` the bridge's transport; ICE and DTLS start at once.
    pub fn connect(&self, index: u32, remote: RemoteDescription) -> stdio::Result<()> {
        if self.config.mode != Mode::Secure {
            return Err(invalid("connect needs secure mode".into()));
        }
        if remote.fingerprints.is_empty() {
            return Err(invalid("no DTLS fingerprint".into()));
        }
        let (w, local) = self.route(index)?;
        w.commands.push(Cmd::Connect { local, remote });
        Ok(())
    }

    /// Raw mode: endpoint `index` sends to (and registers with) the relay at `relay`.
    pub fn connect_raw(&self, index: u32, relay: SocketAddr) -> stdio::Result<()> {
        if self.config.mode != Mode::Raw {
            return Err(invalid("connect_raw needs raw mode".into()));
        }
        let (w, local) = self.route(index)?;
        w.commands.push(Cmd::ConnectRaw { local, relay });
        Ok(())
    }

    /// The SSRCs endpoint `index` sends (replaces the previous set).
    pub fn set_sources(&self, index: u32, sources: Sources) -> stdio::Result<()> {
        let (w, local) = self.route(index)?;
        w.commands.push(Cmd::SetSources { local, sources });
        Ok(())
    }

    /// The RFC 6464 audio level endpoint `index` puts on its audio packets from now on, in -dBov
    /// (0 loudest, 127 silence; below 127 with the voice bit), in header extension
    /// [`AUDIO_LEVEL_EXT_ID`]; None: no extension (the default).
    pub fn set_audio_level(&self, index: u32, level: Option<u8>) -> stdio::Result<()> {
        let (w, local) = self.route(index)?;
        w.commands.push(Cmd::SetAudioLevel {
            local,
            level: level.map(|l| l.min(127)),
        });
        Ok(())
    }

    pub fn endpoints(&self) -> usize {
        self.endpoints as usize
    }

    /// Endpoints with media ready (SRTP keys, or a relay address in raw mode).
    pub fn connected(&self) -> usize {
        self.workers.iter().map(|w| w.shared.connected()).sum()
    }

    pub fn failed(&self) -> usize {
        self.workers.iter().map(|w| w.shared.failed()).sum()
    }

    /// Waits until every endpoint is connected (true) or one failed or the timeout passed (false).
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.connected() >= self.endpoints() {
                return true;
            }
            if self.failed() > 0 || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts sending on every endpoint (connected ones send; the rest join when connected).
    pub fn start(&mut self) {
        self.epoch_ns.store(payload::mono_ns(), Ordering::Release);
        self.started = Some(Instant::now());
        self.sending = true;
        self.stopped = false;
        for w in &self.workers {
            w.commands.push(Cmd::Start);
        }
    }

    /// Stops sending, then keeps receiving for `drain` so in-flight packets are counted.
    /// Forgets the latency recorded so far in every worker (the totals, loss and per-stream figures
    /// stay): what comes after is measured without the start's synchronised keyframes.
    pub fn reset_latency(&self) {
        for w in &self.workers {
            w.commands.push(Cmd::ResetLatency);
        }
    }

    pub fn stop(&mut self, drain: Duration) {
        for w in &self.workers {
            w.commands.push(Cmd::Stop);
        }
        std::thread::sleep(drain);
        self.sending = false;
        self.stopped = true;
    }

    /// Merges every worker's counters. `detail` adds per-stream, per-endpoint and per-second lists.
    pub fn snapshot(&self, detail: bool) -> Snapshot {
        let (tx, rx) = mpsc::channel();
        let mut asked = 0;
        // After shutdown no worker answers: the snapshot is then empty rather than late.
        for w in self.workers.iter().filter(|w| w.thread.is_some()) {
            w.commands.push(Cmd::Report {
                series: detail,
                reply: tx.clone(),
            });
            asked += 1;
        }
        drop(tx);
        let mut reports = Vec::with_capacity(asked);
        while reports.len() < asked {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(r) => reports.push(r),
                Err(_) => break,
            }
        }
        let elapsed = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        Snapshot::build(
            self.config.mode.as_str(),
            reports,
            elapsed,
            self.sending,
            self.stopped,
            self.connected(),
            self.failed(),
            detail,
        )
    }

    /// Stops the workers and closes every socket.
    pub fn shutdown(&mut self) {
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                w.commands.push(Cmd::Shutdown);
                let _ = t.join();
            }
        }
    }
}

impl Drop for LoadGen {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One socket per endpoint: lift the soft descriptor limit to the hard one (best effort).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a live local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
