//! The shard's loop: sleep in poll(2) until a socket, a command or a timer is due, then commands,
//! received datagrams, timers and events, in that order. Each datagram and each transport timer runs
//! under `catch_unwind`: a panic fails that one Transport and the shard lives.

use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::egress::Io;
use super::{Shard, ShardConfig, State, MAX_SLEEP, PACE_STEP, RECV_ROUNDS};
use crate::domain::TransportId;
use crate::dtls::DtlsCert;
use crate::queue::Queue;
use crate::router::LEVEL_TICK;
use crate::seam::{Command, Event};
use crate::stats::DropReason;
use crate::transport::{FailureKind, Note, Transport};

impl Shard {
    /// Receives and processes whatever is queued on the sockets (bounded), then flushes egress.
    pub fn poll_io(&mut self, now: Instant) {
        let Shard {
            io,
            recv,
            state,
            tcp_frame,
            pollfds,
            polled,
        } = self;
        io.set_now(now);
        let ready = std::mem::take(polled);
        for sock_idx in 0..io.sockets().len() {
            let readable = libc::POLLIN | libc::POLLERR;
            if ready
                && pollfds
                    .get(sock_idx)
                    .is_some_and(|p| p.revents & readable == 0)
            {
                continue;
            }
            let local = io.sockets()[sock_idx].local_addr();
            for _ in 0..RECV_ROUNDS {
                // A receive error (e.g. ICMP unreachable reported on the socket) means no datagrams now.
                let n = io.sockets()[sock_idx].recv_batch(recv).unwrap_or_default();
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
        if let (Some(local), Some(tcp)) = (state.tcp_local, &mut io.tcp) {
            tcp.poll(now);
            let mut any = false;
            while let Some((from, n)) = io
                .tcp
                .as_mut()
                .and_then(|t| t.next_frame(now, &mut tcp_frame[..]))
            {
                any = true;
                let buf = &mut tcp_frame[..n];
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    state.on_datagram(now, local, from, buf, io)
                }));
                if outcome.is_err() {
                    state.on_panic(from);
                }
            }
            if any {
                io.flush();
            }
        }
        // A pacer that started holding video is served at the next step, not the next sweep.
        if io.take_paced() {
            state.next_sweep = state.next_sweep.min(now + PACE_STEP);
        }
    }

    /// Runs due protocol timers (ICE pacing, retransmits, consent, DTLS) and periodic RTCP.
    pub fn handle_timeouts(&mut self, now: Instant) {
        if now < self.state.next_sweep {
            return;
        }
        self.io.set_now(now);
        if let Some(tcp) = &mut self.io.tcp {
            // A connection is claimed once a transport's selected pair runs over it.
            let State {
                by_addr,
                transports,
                tcp_local,
                ..
            } = &self.state;
            tcp.expire(now, |peer| {
                by_addr
                    .get(&peer)
                    .and_then(|id| transports.get(id))
                    .is_some_and(|t| t.local_addr() == *tcp_local && t.remote_addr() == Some(peer))
            });
        }
        self.state.sweep(now, &mut self.io);
        self.io.flush();
    }

    /// When the loop should wake at the latest.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        self.state.next_sweep.min(now + MAX_SLEEP)
    }

    /// Sleeps until a socket or `extra_fd` is readable (or a TCP connection writable where bytes
    /// wait), or until `deadline`. Returns whether `extra_fd` may be readable: the loop then drains
    /// the command queue, and otherwise spares that syscall on each wake-up.
    pub fn wait(&mut self, extra_fd: Option<i32>, deadline: Instant, now: Instant) -> bool {
        if let Some(tcp) = &self.io.tcp {
            // Connections come and go: the set after the UDP sockets is rebuilt each time.
            self.pollfds.truncate(self.io.sockets().len());
            tcp.poll_fds(&mut self.pollfds);
            self.pollfds.push(libc::pollfd {
                fd: -1,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // A negative fd is ignored by poll(2).
        if let Some(last) = self.pollfds.last_mut() {
            last.fd = extra_fd.unwrap_or(-1);
        }
        // To the nanosecond: a timeout in whole milliseconds, rounded down, made the loop spin
        // through the last fraction of one before a timer (the pacer's 1 ms step among them).
        let sleep = deadline
            .saturating_duration_since(now)
            .min(Duration::from_secs(1));
        let timeout = libc::timespec {
            tv_sec: sleep.as_secs() as libc::time_t,
            tv_nsec: sleep.subsec_nanos() as libc::c_long,
        };
        for p in &mut self.pollfds {
            p.revents = 0;
        }
        // SAFETY: pollfds is a live array of pollfd of the given length; the timespec outlives the
        // call; a null sigmask leaves the thread's signal mask alone.
        let ready = unsafe {
            libc::ppoll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                &timeout,
                std::ptr::null(),
            )
        };
        self.polled = ready >= 0;
        // An interrupted poll says nothing of the fd: look, as before.
        extra_fd.is_some()
            && (ready < 0 || self.pollfds.last().is_some_and(|last| last.revents != 0))
    }
}

impl State {
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
                Note::Address { .. } | Note::MediaReady | Note::PathChanged => {}
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
        self.send_transport_feedback(now, io);
        next = next.min(self.next_feedback);
        self.send_nacks(now, io);
        next = next.min(self.next_nack);
        if let Some(at) = self.send_deferred_keyframes(now, io) {
            next = next.min(at);
        }
        if let Some(at) = self.probe(now, io) {
            next = next.min(at);
        }
        if let Some(at) = self.pace(now, io) {
            next = next.min(at);
        }
        for r in self.routers.values() {
            if let Some(at) = r.next_report {
                next = next.min(at);
            }
        }
        if now >= self.next_levels {
            self.next_levels = now + LEVEL_TICK;
            for r in self.routers.values_mut() {
                let levels = r.take_levels();
                if !levels.is_empty() {
                    self.events.push(Event::AudioLevels {
                        router: r.id,
                        levels,
                    });
                }
            }
        }
        next = next.min(self.next_levels);
        self.next_sweep = next.max(now + Duration::from_millis(1));
    }
}

/// A shard running on its own thread, driven through the seam queues.
pub struct ShardHandle {
    pub commands: Arc<Queue<Command>>,
    pub events: Arc<Queue<Event>>,
    local_addrs: Vec<SocketAddr>,
    tcp_local: Option<SocketAddr>,
    thread: Option<JoinHandle<()>>,
}

impl ShardHandle {
    /// Binds the shard's sockets and starts its thread, pinned to `config.cpu` if one is given: then
    /// the threads that wake it (peers on the same host, the control plane) cannot take its CPU,
    /// and the kernel cannot pull a woken reader onto its CPU mid-batch. A CPU this process may not
    /// use is an error here, before anything runs.
    pub fn spawn(config: &ShardConfig, cert: DtlsCert) -> io::Result<Self> {
        Self::start(Shard::new(config, cert)?, config.cpu, config.index)
    }

    /// Starts `shard`'s thread (`sluice-shard-<index>`), pinned to `cpu` if given.
    fn start(shard: Shard, cpu: Option<usize>, index: usize) -> io::Result<Self> {
        let local_addrs = shard.local_addrs().to_vec();
        let tcp_local = shard.tcp_local_addr();
        let commands = Arc::new(Queue::new()?);
        let events = Arc::new(Queue::new()?);
        let (c, e) = (commands.clone(), events.clone());
        let name = format!("sluice-shard-{index}");
        let (pinned_tx, pinned_rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let pinned = cpu.map_or(Ok(()), pin_current_thread);
            let ok = pinned.is_ok();
            let _ = pinned_tx.send(pinned);
            if ok {
                run(shard, &c, &e);
            }
        })?;
        let pinned = pinned_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the shard thread ended before starting")));
        if let Err(err) = pinned {
            let _ = thread.join();
            return Err(err);
        }
        Ok(ShardHandle {
            commands,
            events,
            local_addrs,
            tcp_local,
            thread: Some(thread),
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The ICE-TCP listener's address, if the shard has one.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.tcp_local
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

/// Pins the calling thread to one CPU.
fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // CPU_SET indexes a fixed-size mask: a larger number must not reach it.
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpu >= max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is out of range (at most {})", max - 1),
        ));
    }
    // SAFETY: cpu_set_t is a plain bit mask for which all-zero is the empty set; CPU_SET stays in
    // it (checked above); sched_setaffinity(0, ..) reads the mask for the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("cannot pin the shard to CPU {cpu}: {err}"),
        ));
    }
    Ok(())
}

fn run(mut shard: Shard, commands: &Queue<Command>, events: &Queue<Event>) {
    let mut cmds = Vec::new();
    let mut evs = Vec::new();
    loop {
        let now = Instant::now();
        let commanded = shard.wait(Some(commands.fd()), shard.poll_timeout(now), now);
        let now = Instant::now();
        if commanded {
            commands.drain_into(&mut cmds);
        }
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
    use super::super::test_shard;
    use super::*;
    use crate::domain::TransportState;
    use crate::dtls::DtlsSetup;
    use crate::ice::IceCredentials;
    use crate::io::{SendBatch, UdpSocket};

    #[test]
    fn a_wait_sleeps_to_a_sub_millisecond_deadline_and_a_timer_wake_reads_no_socket() {
        let mut shard = test_shard(DtlsCert::generate().expect("cert"));
        // A deadline 1.5 ms away: poll(2)'s whole milliseconds would have woken at 1 ms and spun.
        let start = Instant::now();
        let deadline = start + Duration::from_micros(1500);
        let mut wakes = 0;
        while Instant::now() < deadline {
            shard.wait(None, deadline, Instant::now());
            wakes += 1;
        }
        assert!(wakes <= 2, "{wakes} wake-ups for one timer");
        // A datagram that came after that timer wake-up is left for the next wait: the socket was
        // not reported readable, so it is not read.
        let peer = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let mut batch = SendBatch::new(1);
        batch.push(b"x", shard.local_addrs()[0]);
        peer.send_batch(&mut batch);
        shard.poll_io(Instant::now());
        assert_eq!(shard.stats().io.recv_packets, 0);
        let now = Instant::now();
        shard.wait(None, now + Duration::from_secs(1), now);
        shard.poll_io(Instant::now());
        assert_eq!(shard.stats().io.recv_packets, 1);
    }

    fn shard_with_transports(ids: &[TransportId]) -> Shard {
        let mut shard = test_shard(DtlsCert::generate().expect("cert"));
        let now = Instant::now();
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
            let fp = DtlsCert::generate()
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
                    remote_setup: DtlsSetup::Active,
                },
            );
        }
        shard
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

    /// Waits for the first event `pick` takes from `handle`'s queue.
    fn next_event<T>(handle: &ShardHandle, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut events = Vec::new();
        loop {
            handle.events.drain_into(&mut events);
            if let Some(found) = events.iter().find_map(&mut pick) {
                return found;
            }
            events.clear();
            assert!(Instant::now() < deadline, "no such event within 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Transport `id`'s packets in, by a stats request to the running shard.
    fn packets_in(handle: &ShardHandle, request: u64, id: TransportId) -> u64 {
        handle.send(Command::GetStats { request });
        next_event(handle, |e| match e {
            Event::Stats {
                request: r,
                snapshot,
            } if *r == request => snapshot
                .transports
                .iter()
                .find(|t| t.id == id)
                .map(|t| t.counters.packets_in),
            _ => None,
        })
    }

    #[test]
    fn a_panic_on_one_running_shard_leaves_the_other_shards_call_alone() {
        let mut a = shard_with_transports(&[10]);
        let mut b = shard_with_transports(&[20]);
        let peer = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let other = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        a.state.by_addr.insert(peer.local_addr(), 10);
        b.state.by_addr.insert(other.local_addr(), 20);
        a.state
            .transports
            .get_mut(&10)
            .expect("transport")
            .panic_on_dtls = true;
        let (a_addr, b_addr) = (a.local_addrs()[0], b.local_addrs()[0]);
        let mut ha = ShardHandle::start(a, None, 50).expect("shard a");
        let mut hb = ShardHandle::start(b, None, 51).expect("shard b");

        let mut batch = SendBatch::new(4);
        batch.push(&[22, 0xfe, 0xfd, 0, 0], a_addr);
        peer.send_batch(&mut batch);
        let detail = next_event(&ha, |e| match e {
            Event::TransportState {
                transport: 10,
                state: TransportState::Failed,
                detail,
            } => Some(detail.clone()),
            _ => None,
        });
        assert!(detail.contains("internal"), "{detail}");

        // Shard b, on its own thread, still takes its transport's datagrams; shard a still answers.
        batch.push(&[22, 0xfe, 0xfd, 0, 0], b_addr);
        other.send_batch(&mut batch);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut request = 1;
        while packets_in(&hb, request, 20) == 0 {
            assert!(
                Instant::now() < deadline,
                "shard b stopped taking datagrams"
            );
            request += 1;
        }
        assert_eq!(packets_in(&ha, 1000, 10), 1);
        ha.shutdown();
        hb.shutdown();
    }

    /// The CPUs a thread of this process named `name` may run on, from /proc.
    fn allowed_cpus_of(name: &str) -> Option<String> {
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let dir = task.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if comm.trim() == name {
                let status = std::fs::read_to_string(dir.join("status")).ok()?;
                return status
                    .lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .map(|v| v.trim().to_string());
            }
        }
        None
    }

    fn config() -> ShardConfig {
        ShardConfig {
            bind: vec!["127.0.0.1:0".parse().expect("literal")],
            ..ShardConfig::default()
        }
    }

    #[test]
    fn a_pinned_shard_runs_on_its_cpu_and_an_unusable_cpu_is_refused() {
        let cert = DtlsCert::generate().expect("cert");
        let last = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
        // A thread name of its own: tests run side by side, and others start shards too.
        let mut pinned = ShardHandle::spawn(
            &ShardConfig {
                cpu: Some(last),
                index: 40,
                ..config()
            },
            cert.clone(),
        )
        .expect("an allowed CPU");
        assert_eq!(
            allowed_cpus_of("sluice-shard-40").as_deref(),
            Some(last.to_string().as_str())
        );
        pinned.shutdown();

        for cpu in [1023, 1 << 20] {
            let err = ShardHandle::spawn(
                &ShardConfig {
                    cpu: Some(cpu),
                    ..config()
                },
                cert.clone(),
            )
            .err()
            .expect("refused");
            assert!(err.to_string().contains(&format!("CPU {cpu}")), "{err}");
        }
    }

    /// A shard with an ICE-TCP listener and transport 7 (controlling, credentials known both ways), and
    /// a TCP peer connected to the listener that runs a controlled ICE agent over RFC 4571 frames.
    struct TcpPeer {
        shard: Shard,
        stream: std::net::TcpStream,
        agent: crate::ice::IceAgent,
        rx: crate::io::tcp::Deframer,
        addr: SocketAddr,
        bridge: SocketAddr,
    }

    impl TcpPeer {
        fn new() -> Self {
            use crate::ice::{Candidate, IceAgent};
            use crate::io::tcp::{Deframer, TcpConfig};
            let mut shard = Shard::new(
                &ShardConfig {
                    tcp: Some(TcpConfig {
                        bind: "127.0.0.1:0".parse().expect("literal"),
                        max_connections: 8,
                    }),
                    ..config()
                },
                DtlsCert::generate().expect("cert"),
            )
            .expect("shard");
            let bridge = shard.tcp_local_addr().expect("listener");
            let now = Instant::now();
            let (ours, theirs) = (
                IceCredentials {
                    ufrag: "bridgeT".into(),
                    pwd: "b".repeat(24),
                },
                IceCredentials {
                    ufrag: "peerT".into(),
                    pwd: "c".repeat(24),
                },
            );
            shard.handle_command(
                now,
                Command::CreateRouter {
                    router: 1,
                    feedback: crate::domain::FeedbackSsrcs {
                        audio: 0xA0,
                        video: 0xB0,
                    },
                },
            );
            shard.handle_command(
                now,
                Command::CreateTransport {
                    router: 1,
                    transport: 7,
                    ice: ours.clone(),
                    controlling: true,
                },
            );
            let peer_fp = DtlsCert::generate()
                .expect("cert")
                .fingerprint(crate::dtls::HashAlg::Sha256);
            shard.handle_command(
                now,
                Command::ConnectTransport {
                    transport: 7,
                    remote_ice: theirs.clone(),
                    fingerprints: vec![peer_fp],
                    remote_setup: DtlsSetup::Active,
                },
            );
            // The peer: an active ICE-TCP candidate, which the bridge learns as peer-reflexive.
            let stream = std::net::TcpStream::connect(bridge).expect("connect");
            stream.set_nonblocking(true).expect("nonblocking");
            let addr = stream.local_addr().expect("addr");
            let mut agent = IceAgent::new(false, theirs, 1);
            agent.add_local_candidate(Candidate {
                tcp: true,
                ..Candidate::host(addr, 65535)
            });
            agent.set_remote_credentials(ours);
            agent.add_remote_candidate(Candidate::host_tcp_passive(bridge));
            agent.handle_timeout(now);
            TcpPeer {
                shard,
                stream,
                agent,
                rx: Deframer::default(),
                addr,
                bridge,
            }
        }

        /// Runs both sides until `done` (5 s at most).
        fn run_until(&mut self, mut done: impl FnMut(&mut Self) -> bool) {
            use crate::io::tcp::frame_into;
            use std::io::{Read, Write};
            let deadline = Instant::now() + Duration::from_secs(5);
            while !done(self) {
                assert!(Instant::now() < deadline, "timed out");
                let now = Instant::now();
                self.agent.handle_timeout(now);
                while let Some(tx) = self.agent.poll_transmit() {
                    assert_eq!(tx.destination, self.bridge);
                    let mut framed = Vec::new();
                    frame_into(&mut framed, &tx.contents);
                    self.stream.write_all(&framed).expect("write");
                }
                self.shard.poll_io(now);
                self.shard.handle_timeouts(now);
                if let Ok(n) = self.stream.read(self.rx.spare()) {
                    self.rx.filled(n);
                }
                while let Ok(Some(frame)) = self.rx.next_frame() {
                    let _ = self
                        .agent
                        .handle_datagram(now, self.addr, self.bridge, frame);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    #[test]
    fn ice_over_tcp_selects_the_connection_and_it_stays_open_while_routed() {
        use crate::ice::IceState;
        use crate::io::tcp::UNCLAIMED_TIMEOUT;
        let mut p = TcpPeer::new();
        let bridge = p.bridge;
        p.run_until(|p| {
            p.agent.state() == IceState::Connected
                && p.shard.state.transports[&7].local_addr() == Some(bridge)
        });
        let t = &p.shard.state.transports[&7];
        assert_eq!(t.remote_addr(), Some(p.addr));
        assert_eq!(p.shard.state.by_addr.get(&p.addr), Some(&7));
        let tcp = p.shard.stats().io.tcp;
        assert!(tcp.frames_in > 0 && tcp.frames_out > 0, "{tcp:?}");
        // Routed, so the unauthenticated limit does not close it.
        let later = Instant::now() + UNCLAIMED_TIMEOUT + Duration::from_secs(1);
        p.shard.state.next_sweep = later;
        p.shard.handle_timeouts(later);
        assert_eq!(p.shard.stats().io.tcp.open, 1);
        assert_eq!(p.shard.stats().io.tcp.closed_unclaimed, 0);
    }

    #[test]
    fn a_tcp_peer_cannot_take_the_address_a_live_udp_transport_receives_from() {
        use crate::ice::IceState;
        use crate::io::tcp::UNCLAIMED_TIMEOUT;
        let mut p = TcpPeer::new();
        // Transport 8 is live and receives (over UDP) from the very address the TCP peer connects from.
        p.shard.handle_command(
            Instant::now(),
            Command::CreateTransport {
                router: 1,
                transport: 8,
                ice: IceCredentials {
                    ufrag: "victim".into(),
                    pwd: "v".repeat(24),
                },
                controlling: true,
            },
        );
        let addr = p.addr;
        p.shard.state.by_addr.insert(addr, 8);
        p.run_until(|p| {
            p.agent.state() == IceState::Connected
                && p.shard.stats().total.drops(DropReason::AddressInUse) > 0
        });
        assert_eq!(
            p.shard.state.by_addr.get(&addr),
            Some(&8),
            "still the UDP peer's"
        );
        // Never routed, the connection is closed as unauthenticated.
        let later = Instant::now() + UNCLAIMED_TIMEOUT + Duration::from_secs(1);
        p.shard.state.next_sweep = later;
        p.shard.handle_timeouts(later);
        assert_eq!(p.shard.stats().io.tcp.closed_unclaimed, 1);
    }

    #[test]
    fn the_ice_tcp_port_must_differ_from_the_udp_port() {
        let udp = UdpSocket::bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let port = udp.local_addr().port();
        drop(udp);
        let err = Shard::new(
            &ShardConfig {
                bind: vec![format!("127.0.0.1:{port}").parse().expect("literal")],
                tcp: Some(crate::io::tcp::TcpConfig {
                    bind: format!("127.0.0.1:{port}").parse().expect("literal"),
                    max_connections: 1,
                }),
                ..ShardConfig::default()
            },
            DtlsCert::generate().expect("cert"),
        )
        .err()
        .expect("refused");
        assert!(err.to_string().contains("must differ"), "{err}");
    }
}
