//! One emulated endpoint: a UDP socket, the bridge's own [`Transport`] in the client's seat (ICE
//! controlled, DTLS by the remote's a=setup, SRTP), a synthetic media sender and per-stream
//! receive tracking. Sans-IO like the machines it drives: it writes into the worker's batches and
//! never reads the clock itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use sluice_core::domain::TransportState;
use sluice_core::dtls::{DtlsCert, DtlsSetup};
use sluice_core::ice::{Candidate, IceCredentials};
use sluice_core::io::{classify, DatagramKind, UdpSocket};
use sluice_core::rtcp::{ntp_from_system_time, write_sdes_cname, write_sender_report};
use sluice_core::rtp::RtpView;
use sluice_core::stats::DropReason;
use sluice_core::stun::StunMessage;
use sluice_core::transport::{Note, Transport};

use crate::payload::{self, Fields, Kind, PayloadError, HEADER_LEN, RTP_HEADER_LEN};
use crate::track::{Arrival, StreamTracker};
use crate::worker::{Ctx, Latencies};
use crate::{MediaConfig, RemoteDescription, Sources};

/// Payload types on the wire (what a Jitsi client would use for VP8 and Opus).
const PT_VIDEO: u8 = 100;
const PT_AUDIO: u8 = 111;
const VIDEO_CLOCK: u64 = 90_000;
const AUDIO_CLOCK: u64 = 48_000;
/// A schedule this far behind is reset instead of caught up (no bursts of a whole second).
const MAX_CATCH_UP_NS: u64 = 200_000_000;
/// Streams one endpoint tracks; more (only a broken or hostile sender makes them) are counted and
/// dropped so memory stays bounded.
const MAX_STREAMS: usize = 4096;
/// Hello packets a raw endpoint sends when it learns the relay.
const RAW_HELLOS: usize = 3;

/// An endpoint's UDP address.
pub enum Sock {
    /// Its own socket (any address family).
    Own(UdpSocket),
    /// A 127/8 address on its worker's shared socket (see `io`).
    Shared { local: SocketAddr },
}

impl Sock {
    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Sock::Own(s) => s.local_addr(),
            Sock::Shared { local } => *local,
        }
    }
}

/// Where an endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointState {
    /// Created; no remote description yet.
    New,
    /// ICE/DTLS running.
    Connecting,
    /// Media may flow (SRTP keys exist, or raw mode with a relay address).
    Connected,
    /// ICE or DTLS failed (final).
    Failed,
}

impl EndpointState {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::New => "new",
            EndpointState::Connecting => "connecting",
            EndpointState::Connected => "connected",
            EndpointState::Failed => "failed",
        }
    }
}

/// One SSRC this endpoint sends.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub ssrc: u32,
    pub kind: Kind,
    pub layer: u8,
    seq16: u16,
    /// Packets sent so far: also the next 64-bit sequence number.
    pub sent: u64,
    pub sent_bytes: u64,
    payload_octets: u32,
    rtp_ts: u32,
    /// Video: payload bytes per frame.
    frame_bytes: usize,
}

enum Proto {
    /// ICE, DTLS and SRTP exactly as the bridge runs them, with the roles reversed.
    Secure(Box<Transport>),
    Raw {
        relay: Option<SocketAddr>,
    },
}

pub struct Endpoint {
    pub index: u32,
    pub group: u32,
    pub sock: Sock,
    proto: Proto,
    pub state: EndpointState,
    pub detail: String,
    pub outgoing: Vec<Outgoing>,
    pub streams: Vec<StreamTracker>,
    stream_index: HashMap<(u32, u32), usize>,
    cname: Vec<u8>,
    next_audio_ns: u64,
    next_video_ns: u64,
    next_rtcp_ns: u64,
    /// Set by control input (STUN, DTLS) so the protocol machines are drained afterwards.
    control_input: bool,
    /// Earliest ICE or DTLS deadline, refreshed whenever the machines are driven.
    proto_wake: Option<Instant>,
}

impl Endpoint {
    /// A secure endpoint on `sock`, answering as ICE controlled with `ice` credentials. Its
    /// Transport's ids are the endpoint's index and group (they only name it in its own stats).
    pub fn secure(index: u32, group: u32, sock: Sock, ice: IceCredentials, cert: DtlsCert) -> Self {
        let local = [sock.local_addr()];
        let t = Transport::new(index.into(), group.into(), ice, false, cert, &local);
        Self::with_proto(index, group, sock, Proto::Secure(Box::new(t)))
    }

    /// A raw endpoint: clear RTP-shaped packets to a relay, no ICE/DTLS/SRTP.
    pub fn raw(index: u32, group: u32, sock: Sock) -> Self {
        Self::with_proto(index, group, sock, Proto::Raw { relay: None })
    }

    fn with_proto(index: u32, group: u32, sock: Sock, proto: Proto) -> Self {
        Endpoint {
            index,
            group,
            sock,
            proto,
            state: EndpointState::New,
            detail: String::new(),
            outgoing: Vec::new(),
            streams: Vec::new(),
            stream_index: HashMap::new(),
            cname: format!("loadgen-{index}").into_bytes(),
            next_audio_ns: 0,
            next_video_ns: 0,
            next_rtcp_ns: 0,
            control_input: false,
            proto_wake: None,
        }
    }

    pub fn local_candidates(&self) -> Vec<Candidate> {
        match &self.proto {
            Proto::Secure(t) => t.local_candidates().to_vec(),
            Proto::Raw { .. } => vec![Candidate::host(self.sock.local_addr(), 65535)],
        }
    }

    fn fail(&mut self, detail: String, ctx: &mut Ctx) {
        if self.state != EndpointState::Failed {
            if self.state == EndpointState::Connected {
                ctx.shared.connected_dec();
            }
            self.state = EndpointState::Failed;
            self.detail = detail;
            ctx.shared.failed_inc();
        }
    }

    fn set_connected(&mut self, ctx: &mut Ctx) {
        if self.state != EndpointState::Connected && self.state != EndpointState::Failed {
            self.state = EndpointState::Connected;
            ctx.shared.connected_inc();
        }
    }

    /// The remote (bridge) description: starts ICE, and DTLS once a pair is selected. An unknown
    /// a=setup fails the endpoint at once; other failures come out of the Transport later.
    pub fn connect(&mut self, now: Instant, remote: RemoteDescription) {
        let Proto::Secure(t) = &mut self.proto else {
            self.detail = "connect on a raw endpoint".into();
            return;
        };
        if self.state != EndpointState::New {
            return; // one remote description per endpoint; ICE restarts are not emulated
        }
        let Some(setup) = DtlsSetup::parse(&remote.setup) else {
            self.state = EndpointState::Failed;
            self.detail = format!("dtls: unknown remote setup {:?}", remote.setup);
            return;
        };
        t.connect(now, remote.ice, remote.fingerprints, setup);
        t.add_remote_candidates(now, &remote.candidates);
        self.state = EndpointState::Connecting;
        self.control_input = true;
    }

    /// Raw mode: learn the relay and register with it (hello packets carry our group tag).
    pub fn connect_raw(&mut self, relay: SocketAddr, ctx: &mut Ctx) {
        let Proto::Raw { relay: r } = &mut self.proto else {
            self.detail = "connect_raw on a secure endpoint".into();
            return;
        };
        *r = Some(relay);
        for _ in 0..RAW_HELLOS {
            let Some(slot) = ctx.slot(&self.sock) else {
                break;
            };
            payload::write_rtp_header(slot, false, PT_AUDIO, 0, 0, 0);
            let n = payload::write_hello(&mut slot[RTP_HEADER_LEN..], self.group, self.index);
            ctx.commit(&self.sock, RTP_HEADER_LEN + n, relay);
        }
        self.set_connected(ctx);
    }

    /// Replaces the SSRCs this endpoint sends (counts restart for new SSRCs only).
    pub fn set_sources(&mut self, sources: &Sources, media: &MediaConfig) {
        let mut out = Vec::new();
        let mut add = |ssrc: u32, kind: Kind, layer: u8, frame_bytes: usize| {
            if let Some(o) = self.outgoing.iter().find(|o| o.ssrc == ssrc) {
                let mut o = o.clone();
                o.frame_bytes = frame_bytes;
                out.push(o);
            } else {
                out.push(Outgoing {
                    ssrc,
                    kind,
                    layer,
                    seq16: (ssrc as u16).wrapping_mul(31),
                    sent: 0,
                    sent_bytes: 0,
                    payload_octets: 0,
                    rtp_ts: ssrc.rotate_left(7),
                    frame_bytes,
                });
            }
        };
        if media.audio {
            if let Some(a) = sources.audio {
                add(a, Kind::Audio, 0, 0);
            }
        }
        if media.video {
            let n = sources.video.len();
            for (i, &ssrc) in sources.video.iter().enumerate() {
                // Simulcast: each lower layer carries a quarter of the one above (≈ half the
                // resolution in each dimension).
                let shift = 2 * (n - 1 - i) as u32;
                let bps = u64::from(media.video_bitrate_bps) >> shift.min(63);
                let frame_bytes = (bps / 8 / u64::from(media.fps.max(1))) as usize;
                add(ssrc, Kind::Video, i as u8, frame_bytes.max(HEADER_LEN));
            }
        }
        self.outgoing = out;
    }

    /// Starts the media clock: audio, video and RTCP begin at a phase spread over one interval,
    /// so thousands of endpoints do not send in the same millisecond.
    pub fn start(&mut self, now_ns: u64, media: &MediaConfig) {
        let h = u64::from(self.index).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
        self.next_audio_ns = now_ns + h % media.audio_interval_ns().max(1);
        self.next_video_ns = now_ns + h % media.frame_interval_ns().max(1);
        self.next_rtcp_ns = now_ns + h % media.rtcp_interval_ns().max(1);
    }

    fn remote_for_media(&self) -> Option<SocketAddr> {
        match &self.proto {
            Proto::Secure(t) if t.is_media_ready() => t.remote_addr(),
            Proto::Secure(_) => None,
            Proto::Raw { relay } => *relay,
        }
    }

    /// Runs due protocol timers and, while `sending`, due media. Output goes into `ctx.send`.
    pub fn on_timer(&mut self, now: Instant, now_ns: u64, sending: bool, ctx: &mut Ctx) {
        if let Proto::Secure(t) = &mut self.proto {
            if self.proto_wake.is_some_and(|at| at <= now) {
                // Each machine checks its own deadline; an early call does nothing.
                t.handle_timeout(now);
                self.control_input = true;
            }
        }
        self.drive(ctx);
        if sending && self.state == EndpointState::Connected {
            self.send_due_media(now_ns, ctx);
        }
    }

    /// When this endpoint next needs `on_timer`, in CLOCK_MONOTONIC ns.
    pub fn next_wake_ns(&self, now: Instant, now_ns: u64, sending: bool) -> Option<u64> {
        let to_ns = |t: Instant| now_ns + t.saturating_duration_since(now).as_nanos() as u64;
        let mut next: Option<u64> = None;
        let mut at = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
        if let Some(t) = self.proto_wake {
            at(to_ns(t));
        }
        if sending && self.state == EndpointState::Connected {
            let has = |k: Kind| self.outgoing.iter().any(|o| o.kind == k);
            if has(Kind::Audio) {
                at(self.next_audio_ns);
            }
            if has(Kind::Video) {
                at(self.next_video_ns);
            }
            if matches!(self.proto, Proto::Secure(_)) && !self.outgoing.is_empty() {
                at(self.next_rtcp_ns);
            }
        }
        next
    }

    /// Drains the Transport after input or timers: its datagrams, and its notes for failure.
    /// Returns whether anything was driven (so deadlines may have moved).
    fn drive(&mut self, ctx: &mut Ctx) -> bool {
        if !std::mem::take(&mut self.control_input) {
            return false;
        }
        let Proto::Secure(t) = &mut self.proto else {
            return true;
        };
        while let Some(out) = t.poll_transmit() {
            match classify(&out.contents) {
                DatagramKind::Stun => ctx.totals.stun_out += 1,
                _ => ctx.totals.dtls_out += 1,
            }
            ctx.push(&self.sock, &out.contents, out.destination);
        }
        let mut failure = None;
        while let Some(note) = t.poll_note() {
            // Addresses and drops are for a shard's routing and counters; an endpoint has one peer.
            if let Note::State {
                state: TransportState::Failed | TransportState::Closed,
                detail,
                ..
            } = note
            {
                failure = Some(detail);
            }
        }
        let ready = t.is_media_ready();
        self.proto_wake = t.poll_timeout();
        if let Some(f) = failure {
            self.fail(f, ctx);
        } else if ready {
            self.set_connected(ctx);
        }
        true
    }

    /// One received datagram. `arrival_ns` was read right after the receive call; `queued_ns` is
    /// when the kernel queued it on our socket (`arrival_ns` where the kernel did not say).
    pub fn on_datagram(
        &mut self,
        now: Instant,
        queued_ns: u64,
        arrival_ns: u64,
        from: SocketAddr,
        buf: &mut [u8],
        ctx: &mut Ctx,
    ) {
        let wire = buf.len();
        let local = self.sock.local_addr();
        let kind = classify(buf);
        let proto = &mut self.proto;
        let len = match (proto, kind) {
            (Proto::Secure(t), DatagramKind::Stun) => {
                ctx.totals.stun_in += 1;
                match StunMessage::parse(buf) {
                    // A rejected message is the agent's to count; it is ours for the peer.
                    Ok(msg) => {
                        let _ = t.handle_stun(now, local, from, &msg);
                    }
                    Err(_) => ctx.totals.foreign += 1,
                }
                self.control_input = true;
                return;
            }
            (Proto::Secure(t), DatagramKind::Dtls) => {
                ctx.totals.dtls_in += 1;
                if t.handle_dtls(now, local, from, buf).is_err() {
                    ctx.totals.foreign += 1;
                }
                self.control_input = true;
                return;
            }
            (Proto::Secure(t), DatagramKind::Rtcp) => {
                match t.unprotect_rtcp(buf) {
                    Ok(_) => ctx.totals.recv_rtcp += 1,
                    Err(DropReason::NotConnected) => ctx.totals.before_keys += 1,
                    Err(_) => ctx.totals.decrypt_failures += 1,
                }
                return;
            }
            (Proto::Secure(t), DatagramKind::Rtp) => match t.unprotect_rtp(buf) {
                Ok(len) => len,
                Err(DropReason::NotConnected) => {
                    ctx.totals.before_keys += 1;
                    return;
                }
                Err(_) => {
                    ctx.totals.decrypt_failures += 1;
                    return;
                }
            },
            (Proto::Raw { .. }, DatagramKind::Rtp) => wire,
            _ => {
                ctx.totals.foreign += 1;
                return;
            }
        };
        let Some(pkt) = buf.get(..len) else {
            ctx.totals.integrity_failures += 1;
            return;
        };
        self.on_media(pkt, wire, queued_ns, arrival_ns, ctx);
    }

    fn on_media(
        &mut self,
        pkt: &[u8],
        wire: usize,
        queued_ns: u64,
        arrival_ns: u64,
        ctx: &mut Ctx,
    ) {
        let fields = match RtpView::parse(pkt).map(|v| payload::verify(v.payload())) {
            Ok(Ok(f)) => f,
            Ok(Err(PayloadError::Hello)) => {
                ctx.totals.hello += 1;
                return;
            }
            _ => {
                ctx.totals.integrity_failures += 1;
                return;
            }
        };
        if fields.group != self.group || fields.sender == self.index {
            ctx.totals.misrouted += 1;
            return;
        }
        ctx.totals.recv_packets += 1;
        ctx.totals.recv_bytes += wire as u64;
        let key = (fields.sender, fields.ssrc);
        let idx = match self.stream_index.get(&key) {
            Some(&i) => i,
            None if self.streams.len() >= MAX_STREAMS => {
                ctx.totals.stream_limit += 1;
                return;
            }
            None => {
                self.streams.push(StreamTracker::new(
                    fields.sender,
                    fields.ssrc,
                    fields.kind == Kind::Video,
                ));
                self.stream_index.insert(key, self.streams.len() - 1);
                self.streams.len() - 1
            }
        };
        let t = &mut self.streams[idx];
        let before = t.highest;
        let first = t.received == 0;
        let arrival = t.on_packet(fields.seq, wire);
        let gap_delta: i64 = match arrival {
            Arrival::InOrder if !first => (t.highest - before - 1).min(i64::MAX as u64) as i64,
            Arrival::InOrder => 0,
            Arrival::Reordered | Arrival::Late => -1,
            Arrival::Duplicate => return,
        };
        let latency = Latencies {
            socket_ns: queued_ns.saturating_sub(fields.send_ns),
            read_ns: arrival_ns.saturating_sub(fields.send_ns),
        };
        t.on_latency(latency.read_ns);
        ctx.on_received(fields.kind, wire, latency, gap_delta, arrival_ns);
    }

    /// Whether control traffic arrived that `after_input` has not handled yet.
    pub fn has_control_input(&self) -> bool {
        self.control_input
    }

    /// Called after a batch of input: drains protocol output if control traffic arrived. Returns
    /// whether deadlines may have moved (media alone never moves them).
    pub fn after_input(&mut self, ctx: &mut Ctx) -> bool {
        self.drive(ctx)
    }

    fn send_due_media(&mut self, now_ns: u64, ctx: &mut Ctx) {
        let Some(remote) = self.remote_for_media() else {
            return;
        };
        let media = ctx.media;
        let frame = media.frame_interval_ns();
        let audio = media.audio_interval_ns();
        let rtcp = media.rtcp_interval_ns();
        let has_audio = self.outgoing.iter().any(|o| o.kind == Kind::Audio);
        let has_video = self.outgoing.iter().any(|o| o.kind == Kind::Video);
        if has_audio {
            catch_up(
                &mut self.next_audio_ns,
                now_ns,
                audio,
                &mut ctx.totals.schedule_resets,
            );
            while self.next_audio_ns <= now_ns {
                self.next_audio_ns += audio;
                for i in 0..self.outgoing.len() {
                    if self.outgoing[i].kind == Kind::Audio {
                        let size = media.audio_packet_size.max(RTP_HEADER_LEN + HEADER_LEN);
                        self.send_packet(i, true, size - RTP_HEADER_LEN, remote, ctx);
                        self.outgoing[i].rtp_ts = self.outgoing[i]
                            .rtp_ts
                            .wrapping_add((AUDIO_CLOCK * audio / 1_000_000_000) as u32);
                    }
                }
            }
        }
        if has_video {
            catch_up(
                &mut self.next_video_ns,
                now_ns,
                frame,
                &mut ctx.totals.schedule_resets,
            );
            let max_payload =
                media.video_packet_size.max(RTP_HEADER_LEN + HEADER_LEN) - RTP_HEADER_LEN;
            while self.next_video_ns <= now_ns {
                self.next_video_ns += frame;
                for i in 0..self.outgoing.len() {
                    if self.outgoing[i].kind != Kind::Video {
                        continue;
                    }
                    let bytes = self.outgoing[i].frame_bytes;
                    let packets = bytes.div_ceil(max_payload).max(1);
                    let each = (bytes / packets).max(HEADER_LEN);
                    for p in 0..packets {
                        self.send_packet(i, p + 1 == packets, each, remote, ctx);
                    }
                    self.outgoing[i].rtp_ts = self.outgoing[i]
                        .rtp_ts
                        .wrapping_add((VIDEO_CLOCK * frame / 1_000_000_000) as u32);
                }
            }
        }
        if matches!(self.proto, Proto::Secure(_)) && self.next_rtcp_ns <= now_ns {
            self.next_rtcp_ns = now_ns + rtcp;
            self.send_sender_reports(remote, ctx);
        }
    }

    fn send_packet(
        &mut self,
        i: usize,
        marker: bool,
        payload_len: usize,
        remote: SocketAddr,
        ctx: &mut Ctx,
    ) {
        // Stamped per packet, as late as possible: what waits in our own batch after this is the
        // load generator's delay, and it is counted in the latency (see the crate docs).
        let send_ns = payload::mono_ns();
        let (index, group) = (self.index, self.group);
        let o = &mut self.outgoing[i];
        let Some(slot) = ctx.slot(&self.sock) else {
            return;
        };
        let pt = if o.kind == Kind::Audio {
            PT_AUDIO
        } else {
            PT_VIDEO
        };
        payload::write_rtp_header(slot, marker, pt, o.seq16, o.rtp_ts, o.ssrc);
        payload::write(
            &mut slot[RTP_HEADER_LEN..],
            payload_len,
            &Fields {
                group,
                sender: index,
                ssrc: o.ssrc,
                seq: o.sent,
                send_ns,
                kind: o.kind,
                layer: o.layer,
            },
        );
        let plain = RTP_HEADER_LEN + payload_len;
        let len = match &mut self.proto {
            Proto::Secure(t) => match t.protect_rtp(slot, plain) {
                Ok(n) => n,
                Err(_) => {
                    ctx.totals.protect_failures += 1;
                    return;
                }
            },
            Proto::Raw { .. } => plain,
        };
        ctx.commit(&self.sock, len, remote);
        o.sent += 1;
        o.sent_bytes += len as u64;
        o.seq16 = o.seq16.wrapping_add(1);
        o.payload_octets = o.payload_octets.wrapping_add(payload_len as u32);
        ctx.on_sent(len, send_ns);
    }

    /// RFC 3550 6.4.1: one SR (+ SDES CNAME, 6.1 compound rule) per sent SSRC.
    fn send_sender_reports(&mut self, remote: SocketAddr, ctx: &mut Ctx) {
        let Proto::Secure(t) = &mut self.proto else {
            return;
        };
        let ntp = ntp_from_system_time(SystemTime::now());
        for o in &self.outgoing {
            let Some(slot) = ctx.slot(&self.sock) else {
                return;
            };
            let Ok(sr) = write_sender_report(
                slot,
                o.ssrc,
                ntp,
                o.rtp_ts,
                o.sent as u32,
                o.payload_octets,
                &[],
            ) else {
                continue;
            };
            let Ok(sdes) = write_sdes_cname(&mut slot[sr..], o.ssrc, &self.cname) else {
                continue;
            };
            if let Ok(n) = t.protect_rtcp(slot, sr + sdes) {
                ctx.commit(&self.sock, n, remote);
                ctx.totals.sent_rtcp += 1;
            }
        }
    }
}

/// Keeps a periodic deadline from falling far behind (after a stall, skip instead of bursting).
fn catch_up(next: &mut u64, now_ns: u64, interval: u64, resets: &mut u64) {
    if now_ns > *next + MAX_CATCH_UP_NS.max(interval) {
        *next = now_ns;
        *resets += 1;
    }
}
