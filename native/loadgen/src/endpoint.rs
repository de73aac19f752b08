//! One emulated endpoint: a UDP socket, the bridge's own [`Transport`] in the client's seat (ICE
//! controlled, DTLS by the remote's a=setup, SRTP), a media sender (synthetic audio, VP8 video from
//! one emulated encoder per simulcast layer, keyframes on PLI/FIR) and receive tracking per sent
//! and per received stream. Sans-IO like the machines it drives: it writes into the worker's
//! batches and never reads the clock itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use sluice_core::codec::vp8::Vp8Descriptor;
use sluice_core::domain::TransportState;
use sluice_core::dtls::{DtlsCert, DtlsSetup};
use sluice_core::ice::{Candidate, IceCredentials};
use sluice_core::io::{classify, DatagramKind, UdpSocket};
use sluice_core::rtcp::{
    ntp_from_system_time, parse_compound, write_sdes_cname, write_sender_report, RtcpPacket,
};
use sluice_core::rtp::RtpView;
use sluice_core::stats::DropReason;
use sluice_core::stun::StunMessage;
use sluice_core::transport::{Note, Transport};

use crate::payload::{self, Fields, Kind, PayloadError, HEADER_LEN, RTP_HEADER_LEN};
use crate::track::{Arrival, ReceiveStream, Received, StreamTracker};
use crate::vp8::{self, Encoder, Frame, DESCRIPTOR_LEN, MAX_PREFIX_LEN};
use crate::worker::{Ctx, Latencies};
use crate::{MediaConfig, RemoteDescription, Sources};

/// Payload types on the wire (what a Jitsi client would use for VP8 and Opus).
pub(crate) const PT_VIDEO: u8 = 100;
/// The one-byte header extension id of RFC 6464 audio levels (Jitsi's, and Chrome's usual one).
pub const AUDIO_LEVEL_EXT_ID: u8 = 1;
const PT_AUDIO: u8 = 111;
const VIDEO_CLOCK: u64 = 90_000;
const AUDIO_CLOCK: u64 = 48_000;
/// A schedule this far behind is reset instead of caught up (no bursts of a whole second).
const MAX_CATCH_UP_NS: u64 = 200_000_000;
/// Streams one endpoint tracks, of each kind (sent and received); more (only a broken or hostile
/// sender makes them) are counted and dropped so memory stays bounded.
const MAX_STREAMS: usize = 4096;
/// The smallest video packet payload: the longest codec prefix and the trailer.
const MIN_VIDEO_PAYLOAD: usize = MAX_PREFIX_LEN + HEADER_LEN;
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
    /// Wire bytes sent.
    pub sent_bytes: u64,
    /// RTP payload bytes sent (codec prefix, filler, trailer): the media bitrate.
    pub payload_bytes: u64,
    rtp_ts: u32,
    /// Video: the layer's emulated encoder.
    pub encoder: Option<Encoder>,
}

impl Outgoing {
    fn new(ssrc: u32, kind: Kind, layer: u8) -> Self {
        Outgoing {
            ssrc,
            kind,
            layer,
            seq16: (ssrc as u16).wrapping_mul(31),
            sent: 0,
            sent_bytes: 0,
            payload_bytes: 0,
            rtp_ts: ssrc.rotate_left(7),
            encoder: None,
        }
    }
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
    /// Per sent stream (sender, payload ssrc): loss accounting.
    pub streams: Vec<StreamTracker>,
    stream_index: HashMap<(u32, u32), usize>,
    /// Per received stream (header ssrc): continuity, layers, frames.
    pub receive: Vec<ReceiveStream>,
    receive_index: HashMap<u32, usize>,
    cname: Vec<u8>,
    next_audio_ns: u64,
    /// RFC 6464 level of its audio packets (-dBov), None: no extension.
    pub audio_level: Option<u8>,
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
            receive: Vec::new(),
            receive_index: HashMap::new(),
            cname: format!("loadgen-{index}").into_bytes(),
            next_audio_ns: 0,
            audio_level: None,
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

    /// Replaces the SSRCs this endpoint sends (counts restart for new SSRCs only; a kept video SSRC
    /// keeps its encoder, PictureID and TL0PICIDX going).
    pub fn set_sources(&mut self, sources: &Sources, media: &MediaConfig) {
        let mut out = Vec::new();
        let mut add = |ssrc: u32, kind: Kind, layer: u8, spec: Option<vp8::LayerSpec>| {
            let mut o = match self.outgoing.iter().find(|o| o.ssrc == ssrc) {
                Some(o) => o.clone(),
                None => Outgoing::new(ssrc, kind, layer),
            };
            (o.kind, o.layer) = (kind, layer);
            o.encoder = spec.map(|spec| match o.encoder.take() {
                Some(mut e) => {
                    e.configure(spec, media.fps);
                    e
                }
                None => Encoder::new(ssrc, spec, media.fps),
            });
            out.push(o);
        };
        if media.audio {
            if let Some(a) = sources.audio {
                add(a, Kind::Audio, 0, None);
            }
        }
        if media.video {
            let n = sources.video.len();
            for (i, &ssrc) in sources.video.iter().enumerate() {
                let spec = vp8::simulcast_layer(u64::from(media.video_bitrate_bps), n, i);
                add(ssrc, Kind::Video, i as u8, Some(spec));
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
        for e in self.outgoing.iter_mut().filter_map(|o| o.encoder.as_mut()) {
            e.restart();
        }
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
                    Ok(n) => {
                        ctx.totals.recv_rtcp += 1;
                        if let Some(rtcp) = buf.get(..n) {
                            self.on_rtcp(rtcp, arrival_ns, ctx);
                        }
                    }
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

    /// Keyframe requests in a decrypted RTCP compound (RFC 4585 PLI, RFC 5104 FIR); the rest (the
    /// bridge's reports, other senders' SRs) is only counted as received.
    fn on_rtcp(&mut self, buf: &[u8], now_ns: u64, ctx: &mut Ctx) {
        for packet in parse_compound(buf) {
            match packet {
                Ok(RtcpPacket::Pli { media_ssrc, .. }) => {
                    ctx.totals.pli_received += 1;
                    self.keyframe_request(media_ssrc, None, now_ns, ctx);
                }
                Ok(RtcpPacket::Fir(fir)) => {
                    for (ssrc, seq) in fir.entries() {
                        ctx.totals.fir_received += 1;
                        self.keyframe_request(ssrc, Some(seq), now_ns, ctx);
                    }
                }
                Ok(_) => {}
                // The iterator stops at the first malformed packet.
                Err(_) => ctx.totals.rtcp_malformed += 1,
            }
        }
    }

    /// A PLI (or a FIR entry with its sequence number) for `ssrc`: the next frame of that layer is
    /// a keyframe, unless rate-limited, a repeated FIR, or not a video SSRC of ours.
    fn keyframe_request(&mut self, ssrc: u32, fir_seq: Option<u8>, now_ns: u64, ctx: &mut Ctx) {
        let encoder = self
            .outgoing
            .iter_mut()
            .find(|o| o.ssrc == ssrc)
            .and_then(|o| o.encoder.as_mut());
        let served = encoder.is_some_and(|e| match fir_seq {
            Some(seq) => e.on_fir(seq, now_ns),
            None => e.request_keyframe(now_ns),
        });
        if !served {
            ctx.totals.keyframe_requests_ignored += 1;
        }
    }

    fn on_media(
        &mut self,
        pkt: &[u8],
        wire: usize,
        queued_ns: u64,
        arrival_ns: u64,
        ctx: &mut Ctx,
    ) {
        let Ok(view) = RtpView::parse(pkt) else {
            ctx.totals.integrity_failures += 1;
            return;
        };
        let fields = match payload::verify(view.payload()) {
            Ok(f) => f,
            Err(PayloadError::Hello) => {
                ctx.totals.hello += 1;
                return;
            }
            Err(_) => {
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
        self.on_received_stream(&view, &fields, arrival_ns, ctx);
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

    /// The packet as its received stream (header SSRC) sees it, duplicates included: what a
    /// browser's jitter buffer and decoder get.
    fn on_received_stream(&mut self, view: &RtpView, f: &Fields, arrival_ns: u64, ctx: &mut Ctx) {
        let (starts_frame, starts_keyframe) = match f.kind {
            Kind::Audio => (true, false),
            Kind::Video => match vp8_packet(view.payload(), usize::from(f.prefix)) {
                Some(d) => (d.starts_frame(), d.starts_keyframe()),
                None => {
                    ctx.totals.vp8_invalid += 1;
                    (false, false)
                }
            },
        };
        let ssrc = view.ssrc();
        let idx = match self.receive_index.get(&ssrc) {
            Some(&i) => i,
            None if self.receive.len() >= MAX_STREAMS => {
                ctx.totals.stream_limit += 1;
                return;
            }
            None => {
                self.receive
                    .push(ReceiveStream::new(ssrc, f.sender, f.kind));
                self.receive_index.insert(ssrc, self.receive.len() - 1);
                self.receive.len() - 1
            }
        };
        let received = Received {
            seq: view.sequence_number(),
            layer: f.layer,
            starts_frame,
            starts_keyframe,
            at_ns: arrival_ns,
        };
        self.receive[idx].on_packet(&received, ctx.media.freeze_ns());
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
                        self.send_packet(i, true, size - RTP_HEADER_LEN, None, remote, ctx);
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
            // Each packet: the descriptor, then its share of the frame (the first one's begins with
            // the payload header; every one ends with our trailer).
            let max_share = media
                .video_packet_size
                .max(RTP_HEADER_LEN + MIN_VIDEO_PAYLOAD)
                - RTP_HEADER_LEN
                - DESCRIPTOR_LEN;
            while self.next_video_ns <= now_ns {
                self.next_video_ns += frame;
                for i in 0..self.outgoing.len() {
                    let interval = media.keyframe_interval_frames;
                    let Some(f) = self.outgoing[i]
                        .encoder
                        .as_mut()
                        .map(|e| e.next_frame(interval))
                    else {
                        continue;
                    };
                    ctx.totals.keyframes_sent += u64::from(f.keyframe);
                    let packets = f.bytes.div_ceil(max_share).max(1);
                    let (each, rest) = (f.bytes / packets, f.bytes % packets);
                    for p in 0..packets {
                        let share = each + usize::from(p < rest);
                        let vp8 = Some((f, p == 0));
                        let last = p + 1 == packets;
                        self.send_packet(i, last, DESCRIPTOR_LEN + share, vp8, remote, ctx);
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

    /// One packet of stream `i`, of about `payload_len` payload bytes; for video, of `vp8.0`
    /// (its first packet when `vp8.1`).
    fn send_packet(
        &mut self,
        i: usize,
        marker: bool,
        payload_len: usize,
        vp8: Option<(Frame, bool)>,
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
        // RFC 6464 in an RFC 8285 one-byte extension block (8 bytes): the level, and V when not silent.
        let level = self.audio_level.filter(|_| o.kind == Kind::Audio);
        let header = match level {
            Some(l) => {
                slot[0] |= 0x10;
                let v = if l < 127 { 0x80 } else { 0 };
                slot[12..20].copy_from_slice(&[
                    0xbe,
                    0xde,
                    0,
                    1,
                    AUDIO_LEVEL_EXT_ID << 4,
                    v | l,
                    0,
                    0,
                ]);
                RTP_HEADER_LEN + 8
            }
            None => RTP_HEADER_LEN,
        };
        let body = &mut slot[header..];
        let prefix = vp8.map_or(0, |(frame, first)| frame.write_prefix(body, first));
        let payload_len = payload::write(
            body,
            payload_len,
            &Fields {
                group,
                sender: index,
                ssrc: o.ssrc,
                seq: o.sent,
                send_ns,
                kind: o.kind,
                layer: o.layer,
                prefix: prefix as u8,
            },
        );
        let plain = header + payload_len;
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
        o.payload_bytes += payload_len as u64;
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
                // RFC 3550 6.4.1: the octet count wraps at 2^32.
                o.payload_bytes as u32,
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

/// The VP8 payload descriptor of a received video packet, if it parses, carries what the load
/// generator sends (PictureID, TL0PICIDX, TID) and agrees with the trailer on where the codec prefix
/// ends (a keyframe's payload header with its start code). A forwarder may rewrite the values,
/// never the layout.
fn vp8_packet(payload: &[u8], prefix: usize) -> Option<Vp8Descriptor> {
    let d = Vp8Descriptor::parse(payload).ok()?;
    if d.picture_id.is_none() || d.tl0picidx.is_none() || d.tid.is_none() {
        return None;
    }
    let header = match (d.starts_frame(), d.starts_keyframe()) {
        (false, _) => 0,
        (true, false) => vp8::INTER_HEADER_LEN,
        (true, true) => vp8::KEY_HEADER_LEN,
    };
    if d.header_len + header != prefix {
        return None;
    }
    if d.starts_keyframe() {
        let code = payload.get(d.header_len + 3..d.header_len + 6)?;
        if code != vp8::START_CODE {
            return None;
        }
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vp8::LayerSpec;
    use sluice_core::rtcp::{write_fir, write_pli};

    const MEDIA: MediaConfig = MediaConfig {
        audio: true,
        video: true,
        video_bitrate_bps: 900_000,
        fps: 30,
        video_packet_size: 1200,
        audio_packet_size: 100,
        audio_interval_ms: 20,
        rtcp_interval_ms: 1000,
        keyframe_interval_frames: 0,
        freeze_ms: 500,
    };

    fn endpoint(index: u32, group: u32, layers: usize) -> Endpoint {
        let local = SocketAddr::from(([127, 1, 0, 1], 5000));
        let mut ep = Endpoint::raw(index, group, Sock::Shared { local });
        ep.set_sources(&Sources::for_endpoint(index, layers), &MEDIA);
        ep
    }

    /// Whether the next frame of each video layer is a keyframe.
    fn next_keys(ep: &mut Endpoint) -> Vec<bool> {
        ep.outgoing
            .iter_mut()
            .filter_map(|o| o.encoder.as_mut())
            .map(|e| e.next_frame(0).keyframe)
            .collect()
    }

    #[test]
    fn simulcast_layers_get_their_own_encoder_rate_and_resolution() {
        let mut ep = endpoint(0, 0, 3);
        let specs: Vec<LayerSpec> = ep
            .outgoing
            .iter()
            .filter_map(|o| o.encoder.as_ref().map(|e| e.spec()))
            .collect();
        let rates: Vec<u64> = specs.iter().map(|s| s.bitrate_bps).collect();
        assert_eq!(rates, [120_000, 300_000, 900_000]);
        assert_eq!(specs[0].height, 180);
        // Fewer layers later: the kept SSRC keeps its encoder (and PictureID space), re-rated.
        let before = ep.outgoing[1]
            .encoder
            .as_mut()
            .map(|e| e.next_frame(0).picture_id);
        ep.set_sources(
            &Sources {
                audio: None,
                video: Sources::for_endpoint(0, 3).video[..2].to_vec(),
            },
            &MEDIA,
        );
        assert_eq!(ep.outgoing.len(), 2);
        let after = ep.outgoing[0]
            .encoder
            .as_mut()
            .map(|e| e.next_frame(0).picture_id);
        assert_eq!(after, before.map(|p| (p + 1) & 0x7fff));
        assert_eq!(
            ep.outgoing[1].encoder.as_ref().map(|e| e.spec().height),
            Some(720)
        );
    }

    /// PLI and FIR for one layer make that layer's next frame a keyframe, rate-limited; a repeated
    /// FIR, a request for an SSRC we do not send and a malformed packet ask for nothing.
    #[test]
    fn keyframe_on_pli_and_fir_for_that_layer_only() {
        let mut ctx = Ctx::for_test(MEDIA);
        let mut ep = endpoint(0, 0, 3);
        let video = Sources::for_endpoint(0, 3).video;
        assert_eq!(next_keys(&mut ep), [true, true, true], "keyframes at start");
        assert_eq!(next_keys(&mut ep), [false, false, false]);

        let t0 = 10_000_000_000;
        let mut buf = [0u8; 64];
        let n = write_pli(&mut buf, 0xb000, video[1]).expect("pli");
        ep.on_rtcp(&buf[..n], t0, &mut ctx);
        assert_eq!(next_keys(&mut ep), [false, true, false]);
        // Again within 300 ms: ignored.
        ep.on_rtcp(&buf[..n], t0 + 100_000_000, &mut ctx);
        assert_eq!(next_keys(&mut ep), [false, false, false]);

        // A compound: FIR for layer 2 (seq 7), then a PLI for an SSRC we do not send.
        let mut n = write_fir(&mut buf, 0xb000, video[2], 7).expect("fir");
        n += write_pli(&mut buf[n..], 0xb000, 0x5555).expect("pli");
        ep.on_rtcp(&buf[..n], t0 + 200_000_000, &mut ctx);
        assert_eq!(next_keys(&mut ep), [false, false, true]);
        // The FIR retransmitted (same sequence number) later: nothing; audio's SSRC: nothing.
        let n = write_fir(&mut buf, 0xb000, video[2], 7).expect("fir");
        ep.on_rtcp(&buf[..n], t0 + 900_000_000, &mut ctx);
        let audio = Sources::for_endpoint(0, 3).audio.expect("audio");
        let n = write_pli(&mut buf, 0xb000, audio).expect("pli");
        ep.on_rtcp(&buf[..n], t0 + 900_000_000, &mut ctx);
        assert_eq!(next_keys(&mut ep), [false, false, false]);
        // A truncated packet is counted, not trusted.
        ep.on_rtcp(&[0x81, 206, 0, 5, 1, 2], t0, &mut ctx);

        let t = &ctx.totals;
        assert_eq!((t.pli_received, t.fir_received), (4, 2));
        assert_eq!((t.keyframe_requests_ignored, t.rtcp_malformed), (4, 1));
    }

    /// One video packet of `frame` from endpoint 1 (group 0) to endpoint 0, as sent.
    fn video_packet(frame: &Frame, first: bool, seq: u16, ssrc: u32, layer: u8) -> Vec<u8> {
        let mut pkt = vec![0u8; 300];
        payload::write_rtp_header(&mut pkt, true, PT_VIDEO, seq, 90_000, ssrc);
        let body = &mut pkt[RTP_HEADER_LEN..];
        let prefix = frame.write_prefix(body, first);
        let fields = Fields {
            group: 0,
            sender: 1,
            ssrc,
            seq: u64::from(seq),
            send_ns: 1,
            kind: Kind::Video,
            layer,
            prefix: prefix as u8,
        };
        let n = payload::write(body, 200, &fields);
        pkt.truncate(RTP_HEADER_LEN + n);
        pkt
    }

    /// What a rewriting forwarder may change (PictureID, TL0PICIDX, the header's SSRC and
    /// sequence number) keeps the packet valid; a descriptor it broke is counted.
    #[test]
    fn received_vp8_is_checked_and_tracked_per_received_ssrc() {
        let mut ctx = Ctx::for_test(MEDIA);
        let mut rx = endpoint(0, 0, 1);
        let mut enc = Encoder::new(
            9,
            LayerSpec {
                bitrate_bps: 300_000,
                width: 640,
                height: 360,
            },
            30,
        );
        let key = enc.next_frame(0);
        let inter = enc.next_frame(0);
        // Layer 1's keyframe (2 packets) and an inter frame, rewritten onto SSRC 77 from seq 100.
        let mut pkts = vec![
            video_packet(&key, true, 100, 77, 1),
            video_packet(&key, false, 101, 77, 1),
            video_packet(&inter, true, 102, 77, 1),
        ];
        for p in &mut pkts {
            let body = &mut p[RTP_HEADER_LEN..];
            sluice_core::codec::vp8::set_picture_id(body, 0x1234).expect("picture id");
            sluice_core::codec::vp8::set_tl0picidx(body, 3).expect("tl0picidx");
        }
        for p in &pkts {
            rx.on_media(p, p.len(), 1, 1, &mut ctx);
        }
        assert_eq!(ctx.totals.recv_packets, 3);
        assert_eq!(
            (ctx.totals.vp8_invalid, ctx.totals.integrity_failures),
            (0, 0)
        );
        let s = &rx.receive[0];
        assert_eq!((s.ssrc, s.sender, s.layer, s.packets), (77, 1, 1, 3));
        assert_eq!((s.frames, s.keyframes, s.seq_gaps), (2, 1, 0));

        // Broken descriptors: no PictureID (I=0); S cleared on a first packet, so the prefix
        // length no longer matches; a keyframe's start code overwritten.
        let mut no_i = video_packet(&inter, false, 103, 77, 1);
        no_i[RTP_HEADER_LEN + 1] = 0x60;
        let mut no_s = video_packet(&inter, true, 104, 77, 1);
        no_s[RTP_HEADER_LEN] &= !0x10;
        let mut no_code = video_packet(&key, true, 105, 77, 1);
        no_code[RTP_HEADER_LEN + DESCRIPTOR_LEN + 3] = 0;
        for p in [no_i, no_s, no_code] {
            rx.on_media(&p, p.len(), 1, 1, &mut ctx);
        }
        // Still counted as received (the trailer verified): loss accounting is apart.
        assert_eq!((ctx.totals.vp8_invalid, ctx.totals.recv_packets), (3, 6));
        assert_eq!(rx.receive[0].frames, 2);
    }
}
