//! One emulated endpoint: a UDP socket, the bridge's own [`Transport`] in the client's seat (ICE
//! controlled, DTLS by the remote's a=setup, SRTP), a media sender (synthetic audio, VP8 video from
//! one emulated encoder per simulcast layer, keyframes on PLI/FIR) and receive tracking per sent
//! and per received stream; with feedback, transport-cc feedback and NACKs as a receiver and RTX as a
//! sender (see [`crate::repair`]). Sans-IO like the machines it drives: it writes into the worker's
//! batches and never reads the clock itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use sluice_core::cc::FeedbackBuilder;
use sluice_core::codec::vp8::Vp8Descriptor;
use sluice_core::domain::TransportState;
use sluice_core::dtls::{DtlsCert, DtlsSetup};
use sluice_core::ice::{Candidate, IceCredentials};
use sluice_core::io::{classify, DatagramKind, UdpSocket};
use sluice_core::rtcp::{
    ntp_from_system_time, parse_compound, write_nack, write_sdes_cname, write_sender_report,
    RtcpPacket,
};
use sluice_core::rtp::RtpView;
use sluice_core::stats::DropReason;
use sluice_core::stun::StunMessage;
use sluice_core::transport::{Note, Transport};

use crate::payload::{self, Fields, Kind, PayloadError, HEADER_LEN, RTP_HEADER_LEN};
use crate::repair::{
    self, Budget, History, Miss, Repair, SentPacket, NACK_INTERVAL_NS, PT_RTX, TRANSPORT_CC_EXT_ID,
};
use crate::track::{Arrival, ReceiveStream, Received, StreamTracker};
use crate::turn::{parse_channel_data, TurnClient, TurnState, CHANNEL};
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
/// The extension block a transport-wide number takes alone (RFC 8285 one-byte, padded to a word).
const TCC_EXT_LEN: usize = 8;

/// The `drop_every_n` test knob: whether this SRTP media datagram is the n-th.
fn drop_now(count: &mut u64, ctx: &Ctx) -> bool {
    let n = u64::from(ctx.media.drop_every_n);
    if n == 0 {
        return false;
    }
    *count += 1;
    count.is_multiple_of(n)
}

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
    /// Video with feedback: the layer's RTX SSRC (if signalled) and sequence numbers, and what was
    /// sent, to answer NACKs from.
    pub rtx_ssrc: Option<u32>,
    rtx_seq16: u16,
    history: Option<Box<History>>,
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
            rtx_ssrc: None,
            rtx_seq16: (ssrc as u16).wrapping_mul(17),
            history: None,
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

/// How an endpoint stands towards its target. The default is a bridge's client: ICE controlled, a
/// receiver of every other sender in its group. A forwarder with a PeerConnection per direction
/// (Janus, LiveKit) gets two endpoints per participant: a publisher that only sends and a subscriber
/// that receives everyone but its own publisher (`peer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    /// ICE controlling: the endpoint offered, against a full ICE agent that answered.
    pub ice_controlling: bool,
    /// Expected to receive the group's streams (loss is counted against it).
    pub receives: bool,
    /// The endpoint of the same participant whose streams this one does not expect.
    pub peer: Option<u32>,
    /// The payload type RTX arrives with (with feedback), as the remote's description numbers it; None:
    /// it negotiated none, so no payload type is unwrapped.
    pub rtx_pt: Option<u8>,
    /// RID-signalled simulcast (as browsers send it to LiveKit): every video packet carries the video
    /// m-line's MID and its layer's RID (`q`, `h`, `f` from the lowest) in these one-byte extension ids,
    /// with the mid. None: SSRC-signalled.
    pub rid: Option<RidSignal>,
}

/// Extension ids and the video m-line's mid for [`Role::rid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RidSignal {
    pub mid_id: u8,
    pub rid_id: u8,
    pub mid: u8,
}

/// RIDs of simulcast layers, lowest first (LiveKit's names for its qualities).
const RIDS: [u8; 3] = [b'q', b'h', b'f'];

impl Default for Role {
    fn default() -> Self {
        Role {
            ice_controlling: false,
            receives: true,
            peer: None,
            rtx_pt: Some(PT_RTX),
            rid: None,
        }
    }
}

pub struct Endpoint {
    pub index: u32,
    pub group: u32,
    pub sock: Sock,
    proto: Proto,
    pub state: EndpointState,
    pub detail: String,
    pub role: Role,
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
    /// Feedback (see `MediaConfig::feedback`): the transport-wide number of our next RTP packet.
    tcc_seq: u16,
    /// Arrivals of the transport-wide numbers the bridge stamped, made on the first one.
    tcc_in: Option<Box<FeedbackBuilder>>,
    next_feedback_ns: u64,
    /// Per received stream (as `receive`): its NACK state, for video.
    repair: Vec<Option<Repair>>,
    /// When to look for NACKs due again, while anything is missing.
    next_nack_ns: Option<u64>,
    /// A deadline above moved earlier on input (the worker reschedules after the batch).
    wake_changed: bool,
    /// What this endpoint may retransmit.
    budget: Option<Budget>,
    /// SRTP media datagrams received, for the `drop_every_n` test knob.
    media_datagrams: u64,
    /// Through a TURN relay (`RemoteDescription::turn`): the client, and the remote description
    /// it holds back until the channel to the bridge is bound.
    turn: Option<Box<TurnPath>>,
    /// Set once the channel is bound: every datagram to the bridge leaves as ChannelData.
    pub relay: Option<Relay>,
}

struct TurnPath {
    client: TurnClient,
    pending: Option<RemoteDescription>,
}

/// Where an endpoint behind TURN sends: its datagrams to `peer` go to `server` on `channel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relay {
    pub server: SocketAddr,
    pub peer: SocketAddr,
    pub channel: u16,
}

impl Endpoint {
    /// A secure endpoint on `sock`, answering as ICE controlled with `ice` credentials. Its
    /// Transport's ids are the endpoint's index and group (they only name it in its own stats).
    pub fn secure(index: u32, group: u32, sock: Sock, ice: IceCredentials, cert: DtlsCert) -> Self {
        Self::secure_with(index, group, sock, ice, cert, Role::default())
    }

    /// A secure endpoint in `role`: its ICE role and what it expects to receive.
    pub fn secure_with(
        index: u32,
        group: u32,
        sock: Sock,
        ice: IceCredentials,
        cert: DtlsCert,
        role: Role,
    ) -> Self {
        let local = [sock.local_addr()];
        let t = Transport::new(
            index.into(),
            group.into(),
            ice,
            role.ice_controlling,
            cert,
            &local,
        );
        let mut ep = Self::with_proto(index, group, sock, Proto::Secure(Box::new(t)));
        ep.role = role;
        ep
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
            role: Role::default(),
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
            tcc_seq: 0,
            tcc_in: None,
            next_feedback_ns: 0,
            repair: Vec::new(),
            next_nack_ns: None,
            wake_changed: false,
            budget: None,
            media_datagrams: 0,
            turn: None,
            relay: None,
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
    pub fn connect(&mut self, now: Instant, mut remote: RemoteDescription) {
        let Proto::Secure(t) = &mut self.proto else {
            self.detail = "connect on a raw endpoint".into();
            return;
        };
        if self.state != EndpointState::New {
            return; // one remote description per endpoint; ICE restarts are not emulated
        }
        if let Some(config) = remote.turn.take() {
            // Through TURN: allocate and bind a channel to the bridge's first candidate first;
            // `turn_progress` connects once the channel is up.
            let Some(peer) = remote.candidates.first().map(|c| c.addr) else {
                self.state = EndpointState::Failed;
                self.detail = "turn: the bridge has no candidate".into();
                return;
            };
            let mut client = TurnClient::new(config, peer);
            client.start(now);
            self.turn = Some(Box::new(TurnPath {
                client,
                pending: Some(remote),
            }));
            self.state = EndpointState::Connecting;
            self.control_input = true;
            return;
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
        let mut old = std::mem::take(&mut self.outgoing);
        let mut add = |ssrc: u32, kind: Kind, layer: u8, spec: Option<vp8::LayerSpec>| {
            let mut o = match old.iter().position(|o| o.ssrc == ssrc) {
                Some(i) => old.swap_remove(i),
                None => Outgoing::new(ssrc, kind, layer),
            };
            if kind == Kind::Video && media.feedback {
                o.rtx_ssrc = sources.rtx.get(usize::from(layer)).copied();
                if o.history.is_none() {
                    o.history = Some(Box::default());
                }
            } else {
                (o.rtx_ssrc, o.history) = (None, None);
            }
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
        if media.feedback && self.budget.is_none() {
            self.budget = Some(Budget::new(media.video_bitrate_bps));
        }
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

    /// Behind TURN, once the channel is bound: the relayed address the server allocated.
    pub fn relayed_address(&self) -> Option<SocketAddr> {
        self.relay
            .and(self.turn.as_ref())
            .and_then(|t| t.client.relayed())
    }

    /// After the TURN client moved: once its channel is bound, connect the held remote description
    /// through it; if it failed, fail the endpoint.
    fn turn_progress(&mut self, now: Instant, ctx: &mut Ctx) {
        let Some(turn) = &mut self.turn else {
            return;
        };
        self.control_input = true;
        match turn.client.state() {
            TurnState::Ready if self.relay.is_none() => {
                self.relay = Some(Relay {
                    server: turn.client.server(),
                    peer: turn.client.peer(),
                    channel: CHANNEL,
                });
                if let Some(mut remote) = turn.pending.take() {
                    // The channel reaches one address: checks to others could not be relayed.
                    let peer = turn.client.peer();
                    remote.candidates.retain(|c| c.addr == peer);
                    // `connect` runs its first-time path: the state must read New again.
                    self.state = EndpointState::New;
                    self.connect(now, remote);
                }
            }
            TurnState::Failed(reason) => {
                let reason = reason.clone();
                self.fail(reason, ctx);
            }
            _ => {}
        }
    }

    /// Runs due protocol timers and, while `sending`, due media. Output goes into `ctx.send`.
    pub fn on_timer(&mut self, now: Instant, now_ns: u64, sending: bool, ctx: &mut Ctx) {
        if let Some(turn) = &mut self.turn {
            if turn.client.poll_timeout().is_some_and(|at| at <= now) {
                turn.client.handle_timeout(now);
                self.turn_progress(now, ctx);
            }
        }
        if let Proto::Secure(t) = &mut self.proto {
            if self.proto_wake.is_some_and(|at| at <= now) {
                // Each machine checks its own deadline; an early call does nothing.
                t.handle_timeout(now);
                self.control_input = true;
            }
        }
        self.drive(ctx);
        if self.state != EndpointState::Connected {
            return;
        }
        if sending {
            self.send_due_media(now_ns, ctx);
        }
        // Feedback goes on after sending stopped: receivers still receive what is in flight.
        if self.tcc_in.is_some() && self.next_feedback_ns <= now_ns {
            self.next_feedback_ns = now_ns + ctx.media.feedback_interval_ns();
            self.send_transport_feedback(ctx);
        }
        if self.next_nack_ns.is_some_and(|at| at <= now_ns) {
            self.send_nacks(now, now_ns, ctx);
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
        if let Some(t) = self.turn.as_ref().and_then(|p| p.client.poll_timeout()) {
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
        if self.state == EndpointState::Connected {
            if self.tcc_in.is_some() {
                at(self.next_feedback_ns);
            }
            if let Some(t) = self.next_nack_ns {
                at(t);
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
        if let Some(turn) = &mut self.turn {
            let server = turn.client.server();
            while let Some(msg) = turn.client.poll_transmit() {
                ctx.totals.stun_out += 1;
                ctx.push(&self.sock, &msg, server);
            }
        }
        let Proto::Secure(t) = &mut self.proto else {
            return true;
        };
        while let Some(out) = t.poll_transmit() {
            match classify(&out.contents) {
                DatagramKind::Stun => ctx.totals.stun_out += 1,
                _ => ctx.totals.dtls_out += 1,
            }
            ctx.push_via(
                &self.sock,
                self.relay.as_ref(),
                &out.contents,
                out.destination,
            );
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
        // Behind TURN, the server's ChannelData carry the bridge's datagrams; its STUN is TURN's.
        let (from, buf) = match &mut self.turn {
            Some(turn) if from == turn.client.server() => match parse_channel_data(buf) {
                Some((CHANNEL, len)) if self.relay.is_some() => {
                    (turn.client.peer(), &mut buf[4..4 + len])
                }
                Some(_) => {
                    ctx.totals.foreign += 1;
                    return;
                }
                None => {
                    match StunMessage::parse(buf) {
                        Ok(msg) => {
                            ctx.totals.stun_in += 1;
                            turn.client.handle(now, &msg);
                        }
                        Err(_) => ctx.totals.foreign += 1,
                    }
                    self.turn_progress(now, ctx);
                    return;
                }
            },
            _ => (from, buf),
        };
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
            (Proto::Secure(_), DatagramKind::Rtp) if drop_now(&mut self.media_datagrams, ctx) => {
                ctx.totals.link_dropped += 1;
                return;
            }
            (Proto::Secure(t), DatagramKind::Rtp) => match t.unprotect_rtp(buf) {
                Ok(len) => len,
                Err(DropReason::NotConnected) => {
                    ctx.totals.before_keys += 1;
                    return;
                }
                Err(DropReason::SrtpReplay) => {
                    ctx.totals.srtp_replays += 1;
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
        self.on_media(pkt, wire, now, queued_ns, arrival_ns, ctx);
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
                Ok(RtcpPacket::Nack(nack)) => {
                    ctx.totals.nacks_received += 1;
                    for seq in nack.lost_sequence_numbers() {
                        ctx.totals.nack_seqs_received += 1;
                        self.retransmit(nack.media_ssrc, seq, now_ns, ctx);
                    }
                }
                Ok(RtcpPacket::TransportCc(_)) => ctx.totals.feedback_received += 1,
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

    #[allow(clippy::too_many_arguments)]
    fn on_media(
        &mut self,
        pkt: &[u8],
        wire: usize,
        now: Instant,
        queued_ns: u64,
        arrival_ns: u64,
        ctx: &mut Ctx,
    ) {
        let Ok(view) = RtpView::parse(pkt) else {
            ctx.totals.integrity_failures += 1;
            return;
        };
        let feedback = ctx.media.feedback;
        if feedback {
            self.record_arrival(&view, queued_ns, arrival_ns);
        }
        // RTX (RFC 4588): the original sequence number and payload. The bridge unwraps a sender's RTX
        // and forwards the original, and answers receivers' NACKs from its RTX cache as RTX.
        let rtx = feedback && self.role.rtx_pt == Some(view.payload_type());
        let (body, osn) = match (rtx, view.payload()) {
            (true, p) => match repair::rtx_original(p) {
                Some((osn, body)) => (body, Some(osn)),
                None => {
                    ctx.totals.rtx_unmatched += 1;
                    return;
                }
            },
            (false, p) => (p, None),
        };
        let fields = match payload::verify(body) {
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
        // An RTX stream belongs to the received stream of the same sender and kind (each member sends
        // one video Source, whatever SSRC the forwarder gives it).
        let (ssrc, seq) = match osn {
            None => (view.ssrc(), view.sequence_number()),
            Some(osn) => {
                let same = |r: &&ReceiveStream| r.sender == fields.sender && r.kind == fields.kind;
                match self.receive.iter().find(same) {
                    Some(r) => (r.ssrc, osn),
                    None => {
                        ctx.totals.rtx_unmatched += 1;
                        return;
                    }
                }
            }
        };
        ctx.totals.rtx_received += u64::from(osn.is_some());
        // A retransmission's latency is the repair's round trip, not forwarding: counted, not timed.
        // The sender marks its own; the bridge's resends from its RTX cache come as RTX.
        let retransmission = payload::is_retransmission(body) || osn.is_some();
        ctx.totals.recv_packets += 1;
        ctx.totals.recv_bytes += wire as u64;
        self.on_received_stream(ssrc, seq, body, &fields, now, arrival_ns, ctx);
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
        let latency = (!retransmission).then_some(latency);
        if let Some(l) = latency {
            t.on_latency(l.read_ns);
        }
        ctx.on_received(fields.kind, wire, latency, gap_delta, arrival_ns);
    }

    /// The bridge stamped a transport-wide number on `view`: record its arrival (the kernel's
    /// timestamp: the link's timing, not our reading delay) for our transport-cc feedback.
    fn record_arrival(&mut self, view: &RtpView, queued_ns: u64, arrival_ns: u64) {
        let Some(&[hi, lo]) = view.extension(TRANSPORT_CC_EXT_ID) else {
            return;
        };
        if !matches!(self.proto, Proto::Secure(_)) {
            return;
        }
        if self.tcc_in.is_none() {
            let sender = self.feedback_ssrc();
            self.tcc_in = Some(Box::new(FeedbackBuilder::new(sender, view.ssrc())));
            self.next_feedback_ns = arrival_ns;
            self.wake_changed = true;
        }
        if let Some(fb) = self.tcc_in.as_mut() {
            fb.on_arrival(
                u16::from_be_bytes([hi, lo]),
                Duration::from_nanos(queued_ns),
            );
        }
    }

    /// The SSRC our RTCP feedback comes from: our first sent SSRC, or (receive-only, as browsers
    /// use one too) one of our own.
    fn feedback_ssrc(&self) -> u32 {
        self.outgoing
            .first()
            .map_or(0x3000_0000u32.wrapping_add(self.index), |o| o.ssrc)
    }

    /// The packet as its received stream (header SSRC, or the one an RTX packet repairs) sees it,
    /// duplicates included: what a browser's jitter buffer and decoder get; with feedback, what its
    /// NACKs ask for.
    #[allow(clippy::too_many_arguments)]
    fn on_received_stream(
        &mut self,
        ssrc: u32,
        seq: u16,
        body: &[u8],
        f: &Fields,
        now: Instant,
        arrival_ns: u64,
        ctx: &mut Ctx,
    ) {
        let (starts_frame, starts_keyframe) = match f.kind {
            Kind::Audio => (true, false),
            Kind::Video => match vp8_packet(body, usize::from(f.prefix)) {
                Some(d) => (d.starts_frame(), d.starts_keyframe()),
                None => {
                    ctx.totals.vp8_invalid += 1;
                    (false, false)
                }
            },
        };
        let idx = match self.receive_index.get(&ssrc) {
            Some(&i) => i,
            None if self.receive.len() >= MAX_STREAMS => {
                ctx.totals.stream_limit += 1;
                return;
            }
            None => {
                self.receive
                    .push(ReceiveStream::new(ssrc, f.sender, f.kind));
                // Browsers NACK video only (Opus has no retransmission in Jitsi's offer).
                let nack = f.kind == Kind::Video && ctx.media.feedback;
                self.repair.push(nack.then(Repair::default));
                self.receive_index.insert(ssrc, self.receive.len() - 1);
                self.receive.len() - 1
            }
        };
        let received = Received {
            seq,
            layer: f.layer,
            starts_frame,
            starts_keyframe,
            at_ns: arrival_ns,
        };
        self.receive[idx].on_packet(&received, ctx.media.freeze_ns());
        if let Some(r) = self.repair.get_mut(idx).and_then(Option::as_mut) {
            let before = r.missing();
            if r.on_packet(seq, now) {
                ctx.totals.recovered += 1;
            }
            // A new gap is asked for at once (the next timer tick), as libwebrtc does.
            if r.missing() > before && self.next_nack_ns.is_none_or(|t| t > arrival_ns) {
                self.next_nack_ns = Some(arrival_ns);
                self.wake_changed = true;
            }
        }
    }

    /// Transport-cc feedback on what arrived since the last (a few packets at most).
    fn send_transport_feedback(&mut self, ctx: &mut Ctx) {
        let Some(remote) = self.remote_for_media() else {
            return;
        };
        let (Proto::Secure(t), Some(fb)) = (&mut self.proto, self.tcc_in.as_mut()) else {
            return;
        };
        for _ in 0..4 {
            if !fb.has_pending() {
                break;
            }
            let Some(slot) = ctx.slot(&self.sock) else {
                return;
            };
            let Ok(Some(n)) = fb.write(slot) else {
                break;
            };
            if let Ok(len) = t.protect_rtcp(slot, n) {
                ctx.commit_via(&self.sock, self.relay.as_ref(), len, remote);
                ctx.totals.feedback_sent += 1;
            }
        }
    }

    /// One generic NACK (RFC 4585 6.2.1) per received video stream with sequence numbers due.
    fn send_nacks(&mut self, now: Instant, now_ns: u64, ctx: &mut Ctx) {
        self.next_nack_ns = None;
        let Some(remote) = self.remote_for_media() else {
            return;
        };
        let sender = self.feedback_ssrc();
        let Proto::Secure(t) = &mut self.proto else {
            return;
        };
        let mut seqs = std::mem::take(&mut ctx.nack_seqs);
        let mut missing = false;
        for (r, stream) in self.repair.iter_mut().zip(&self.receive) {
            let Some(r) = r else {
                continue;
            };
            seqs.clear();
            r.due(now, &mut seqs);
            missing |= r.missing() > 0;
            if seqs.is_empty() {
                continue;
            }
            let Some(slot) = ctx.slot(&self.sock) else {
                break;
            };
            let Ok(n) = write_nack(slot, sender, stream.ssrc, &seqs) else {
                continue;
            };
            if let Ok(len) = t.protect_rtcp(slot, n) {
                ctx.commit_via(&self.sock, self.relay.as_ref(), len, remote);
                ctx.totals.nacks_sent += 1;
                ctx.totals.nack_seqs_sent += seqs.len() as u64;
            }
        }
        ctx.nack_seqs = seqs;
        if missing {
            self.next_nack_ns = Some(now_ns + NACK_INTERVAL_NS);
        }
    }

    /// A NACK from the bridge asks for packet `seq` of `ssrc`: resend it from the history (RTX when
    /// the layer has an RTX SSRC), within the retransmission budget.
    fn retransmit(&mut self, ssrc: u32, seq: u16, now_ns: u64, ctx: &mut Ctx) {
        let Some(remote) = self.remote_for_media() else {
            return;
        };
        let history = self
            .outgoing
            .iter_mut()
            .position(|o| o.ssrc == ssrc)
            .and_then(|i| Some((i, self.outgoing[i].history.as_mut()?)));
        let Some((i, history)) = history else {
            ctx.totals.retransmits_unknown += 1;
            return;
        };
        let p = match history.resend(seq, now_ns) {
            Ok(p) => p,
            Err(Miss::Unknown) => {
                ctx.totals.retransmits_unknown += 1;
                return;
            }
            Err(Miss::TooSoon) => {
                ctx.totals.retransmits_limited += 1;
                return;
            }
        };
        let bytes = RTP_HEADER_LEN + TCC_EXT_LEN + 2 + p.payload_len;
        if !self.budget.as_mut().is_some_and(|b| b.take(bytes, now_ns)) {
            ctx.totals.retransmits_limited += 1;
            return;
        }
        if self.write_media(i, &p, true, remote, ctx).is_some() {
            ctx.totals.retransmits_sent += 1;
        }
    }

    /// Whether input arrived that `after_input` has not handled yet: control traffic, or media that
    /// moved a feedback deadline earlier.
    pub fn needs_service(&self) -> bool {
        self.control_input || self.wake_changed
    }

    /// Called after a batch of input: drains protocol output if control traffic arrived. Returns
    /// whether deadlines may have moved.
    pub fn after_input(&mut self, ctx: &mut Ctx) -> bool {
        let woke = std::mem::take(&mut self.wake_changed);
        self.drive(ctx) | woke
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
            // The transport-wide number's extension block comes out of the packet size, as in a browser.
            let ext = if media.feedback { TCC_EXT_LEN } else { 0 };
            let max_share = media
                .video_packet_size
                .max(RTP_HEADER_LEN + ext + MIN_VIDEO_PAYLOAD)
                - RTP_HEADER_LEN
                - ext
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
        let o = &self.outgoing[i];
        let p = SentPacket {
            seq16: o.seq16,
            rtp_ts: o.rtp_ts,
            marker,
            payload_len,
            vp8,
            seq: o.sent,
            send_ns,
        };
        let Some((len, payload_len)) = self.write_media(i, &p, false, remote, ctx) else {
            return;
        };
        let o = &mut self.outgoing[i];
        if let Some(h) = o.history.as_mut() {
            h.push(p);
        }
        o.sent += 1;
        o.sent_bytes += len as u64;
        o.seq16 = o.seq16.wrapping_add(1);
        o.payload_bytes += payload_len as u64;
        ctx.on_sent(len, send_ns);
    }

    /// Writes, protects and queues packet `p` of stream `i`: as sent, or (`resend`) as its
    /// retransmission: on the layer's RTX SSRC with the original sequence number first (RFC 4588 4)
    /// when it has one, else the same packet again; its payload flagged (see
    /// `payload::mark_retransmission`). Returns the wire and payload lengths.
    fn write_media(
        &mut self,
        i: usize,
        p: &SentPacket,
        resend: bool,
        remote: SocketAddr,
        ctx: &mut Ctx,
    ) -> Option<(usize, usize)> {
        let (index, group) = (self.index, self.group);
        let tcc = ctx.media.feedback.then_some(self.tcc_seq);
        let o = &mut self.outgoing[i];
        let slot = ctx.slot(&self.sock)?;
        let rtx = o.rtx_ssrc.filter(|_| resend);
        match rtx {
            Some(r) => payload::write_rtp_header(slot, p.marker, PT_RTX, o.rtx_seq16, p.rtp_ts, r),
            None => {
                let pt = if o.kind == Kind::Audio {
                    PT_AUDIO
                } else {
                    PT_VIDEO
                };
                payload::write_rtp_header(slot, p.marker, pt, p.seq16, p.rtp_ts, o.ssrc);
            }
        }
        let level = self.audio_level.filter(|_| o.kind == Kind::Audio);
        let top = usize::from(o.layer).min(RIDS.len() - 1);
        let sdes = self
            .role
            .rid
            .filter(|_| o.kind == Kind::Video && rtx.is_none())
            .map(|r| repair::Sdes {
                mid_id: r.mid_id,
                mid: r.mid,
                rid_id: r.rid_id,
                rid: RIDS[top],
            });
        let mut header = repair::write_extensions_with(slot, level, tcc, sdes);
        if rtx.is_some() {
            slot[header..header + 2].copy_from_slice(&p.seq16.to_be_bytes());
            header += 2;
        }
        let body = &mut slot[header..];
        let prefix = p
            .vp8
            .map_or(0, |(frame, first)| frame.write_prefix(body, first));
        let payload_len = payload::write(
            body,
            p.payload_len,
            &Fields {
                group,
                sender: index,
                ssrc: o.ssrc,
                seq: p.seq,
                send_ns: p.send_ns,
                kind: o.kind,
                layer: o.layer,
                prefix: prefix as u8,
            },
        );
        if resend {
            payload::mark_retransmission(&mut body[..payload_len], prefix);
        }
        let plain = header + payload_len;
        let len = match &mut self.proto {
            Proto::Secure(t) => match t.protect_rtp(slot, plain) {
                Ok(n) => n,
                Err(_) => {
                    ctx.totals.protect_failures += 1;
                    return None;
                }
            },
            Proto::Raw { .. } => plain,
        };
        ctx.commit_via(&self.sock, self.relay.as_ref(), len, remote);
        if tcc.is_some() {
            self.tcc_seq = self.tcc_seq.wrapping_add(1);
        }
        if rtx.is_some() {
            o.rtx_seq16 = o.rtx_seq16.wrapping_add(1);
        }
        Some((len, payload_len))
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
                ctx.commit_via(&self.sock, self.relay.as_ref(), n, remote);
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
    use crate::repair::RESEND_SPACING_NS;
    use crate::vp8::LayerSpec;
    use sluice_core::dtls::DtlsCert;
    use sluice_core::ice::IceCredentials;
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
        feedback: false,
        feedback_interval_ms: 100,
        drop_every_n: 0,
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
                rtx: Vec::new(),
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
            rx.on_media(p, p.len(), Instant::now(), 1, 1, &mut ctx);
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
            rx.on_media(&p, p.len(), Instant::now(), 1, 1, &mut ctx);
        }
        // Still counted as received (the trailer verified): loss accounting is apart.
        assert_eq!((ctx.totals.vp8_invalid, ctx.totals.recv_packets), (3, 6));
        assert_eq!(rx.receive[0].frames, 2);
    }
    /// A sender answers the bridge's NACK from its history: RTX on the layer's RTX SSRC, one packet at
    /// most once per 20 ms; nothing for a packet it never sent or for an SSRC that is not its video.
    #[test]
    fn a_nack_is_answered_from_the_history_with_rtx() {
        let media = MediaConfig {
            feedback: true,
            ..MEDIA
        };
        let mut ctx = Ctx::for_test(media);
        let local = SocketAddr::from(([127, 1, 0, 1], 5000));
        let relay = SocketAddr::from(([127, 0, 0, 1], 9));
        let mut ep = Endpoint::raw(0, 0, Sock::Shared { local });
        let sources = Sources::with_rtx(0, 1);
        ep.set_sources(&sources, &media);
        ep.connect_raw(relay, &mut ctx);
        let video = ep
            .outgoing
            .iter()
            .position(|o| o.kind == Kind::Video)
            .expect("video");
        assert_eq!(ep.outgoing[video].rtx_ssrc, Some(sources.rtx[0]));
        let first = ep.outgoing[video].seq16;
        for _ in 0..3 {
            ep.send_packet(video, false, 300, None, relay, &mut ctx);
        }
        let (queued, rtx_seq) = (ctx.send.len(), ep.outgoing[video].rtx_seq16);
        let now = payload::mono_ns();
        let mut buf = [0u8; 64];
        let asked = [first.wrapping_add(1), first.wrapping_add(7)];
        let n = write_nack(&mut buf, 0xb000, sources.video[0], &asked).expect("nack");
        ep.on_rtcp(&buf[..n], now, &mut ctx);
        assert_eq!(ctx.send.len(), queued + 1, "one retransmission");
        let t = ctx.totals;
        assert_eq!((t.nacks_received, t.nack_seqs_received), (1, 2));
        assert_eq!((t.retransmits_sent, t.retransmits_unknown), (1, 1));
        // Asked again at once: not resent; after the spacing: resent.
        ep.on_rtcp(&buf[..n], now + 1, &mut ctx);
        assert_eq!(ctx.totals.retransmits_limited, 1);
        ep.on_rtcp(&buf[..n], now + RESEND_SPACING_NS, &mut ctx);
        assert_eq!(ctx.totals.retransmits_sent, 2);
        // The RTX stream numbers its own packets; the media stream's numbering did not move.
        let o = &ep.outgoing[video];
        assert_eq!(o.rtx_seq16, rtx_seq.wrapping_add(2));
        assert_eq!((o.seq16, o.sent), (first.wrapping_add(3), 3));
        // Audio is not retransmitted (no history).
        let audio = sources.audio.expect("audio");
        let n = write_nack(&mut buf, 0xb000, audio, &[1]).expect("nack");
        ep.on_rtcp(&buf[..n], now, &mut ctx);
        // The never-sent one was asked three times, then the audio packet.
        assert_eq!(ctx.totals.retransmits_unknown, 3 + 1);
    }

    /// With feedback a receiver tracks what it misses of a received video stream; the packet it asked
    /// for, coming back as RTX (payload type 96, the original sequence number first, on an SSRC of its
    /// own), is unwrapped onto that stream, counted recovered, and not timed.
    #[test]
    fn rtx_is_unwrapped_onto_its_stream_and_counts_as_recovered() {
        let media = MediaConfig {
            feedback: true,
            ..MEDIA
        };
        let mut ctx = Ctx::for_test(media);
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
        let lost = video_packet(&inter, true, 102, 77, 1);
        let t0 = Instant::now();
        for p in [
            video_packet(&key, true, 100, 77, 1),
            video_packet(&key, false, 101, 77, 1),
            video_packet(&inter, false, 103, 77, 1),
        ] {
            rx.on_media(&p, p.len(), t0, 1, 1, &mut ctx);
        }
        assert!(
            rx.next_nack_ns.is_some() && rx.needs_service(),
            "a gap asks at once"
        );
        // What `send_nacks` asks, without a transport to send it on.
        let mut asked = Vec::new();
        rx.repair[0].as_mut().expect("video").due(t0, &mut asked);
        assert_eq!(asked, [102]);

        let rtx_of = |original: &[u8], osn: u16, ssrc: u32| {
            let mut pkt = vec![0u8; RTP_HEADER_LEN];
            payload::write_rtp_header(&mut pkt, false, PT_RTX, 5, 90_000, ssrc);
            pkt.extend(osn.to_be_bytes());
            let mut body = original[RTP_HEADER_LEN..].to_vec();
            let prefix = payload::verify(&body).expect("payload").prefix;
            payload::mark_retransmission(&mut body, usize::from(prefix));
            pkt.extend(body);
            pkt
        };
        let timed = ctx.latency.count();
        let rtx = rtx_of(&lost, 102, 999);
        rx.on_media(&rtx, rtx.len(), t0, 1, 1, &mut ctx);
        let t = ctx.totals;
        assert_eq!((t.rtx_received, t.recovered, t.rtx_unmatched), (1, 1, 0));
        assert_eq!((t.recv_packets, t.integrity_failures), (4, 0));
        assert_eq!(ctx.latency.count(), timed, "a repair is not timed");
        assert_eq!(rx.receive.len(), 1, "no stream of the RTX SSRC");
        assert_eq!((rx.receive[0].seq_late, rx.receive[0].packets), (1, 4));
        assert_eq!(rx.repair[0].as_ref().map(Repair::missing), Some(0));
        // Padding only (no original), and RTX of a sender we have no stream of: counted, dropped.
        let mut padding = vec![0u8; RTP_HEADER_LEN + 2];
        payload::write_rtp_header(&mut padding, false, PT_RTX, 6, 90_000, 999);
        rx.on_media(&padding, padding.len(), t0, 1, 1, &mut ctx);
        let mut audio = vec![0u8; RTP_HEADER_LEN + 100];
        let fields = Fields {
            group: 0,
            sender: 1,
            ssrc: 55,
            seq: 1,
            send_ns: 1,
            kind: Kind::Audio,
            layer: 0,
            prefix: 0,
        };
        let n = payload::write(&mut audio[RTP_HEADER_LEN..], 100, &fields);
        audio.truncate(RTP_HEADER_LEN + n);
        let rtx = rtx_of(&audio, 9, 998);
        rx.on_media(&rtx, rtx.len(), t0, 1, 1, &mut ctx);
        assert_eq!((ctx.totals.rtx_unmatched, ctx.totals.recovered), (2, 1));
    }
    /// Feedback cadence: the first transport-wide number that arrives makes the feedback builder and
    /// asks for a wake-up at once; each feedback tick schedules the next one interval later.
    #[test]
    fn transport_cc_feedback_is_scheduled_every_interval() {
        let media = MediaConfig {
            feedback: true,
            feedback_interval_ms: 100,
            ..MEDIA
        };
        let mut ctx = Ctx::for_test(media);
        let local = SocketAddr::from(([127, 1, 0, 1], 5000));
        let cert = DtlsCert::generate().expect("cert");
        let mut rx = Endpoint::secure(0, 0, Sock::Shared { local }, IceCredentials::random(), cert);
        // As if ICE and DTLS were done (what the Transport would report).
        rx.state = EndpointState::Connected;
        let (now, t0) = (Instant::now(), 5_000_000_000u64);
        assert_eq!(
            rx.next_wake_ns(now, t0, false),
            None,
            "nothing arrived: no feedback"
        );
        let mut enc = Encoder::new(
            9,
            LayerSpec {
                bitrate_bps: 300_000,
                width: 640,
                height: 360,
            },
            30,
        );
        let frame = enc.next_frame(0);
        let plain = video_packet(&frame, true, 100, 77, 1);
        // The bridge's transport-wide number in extension 5, between header and payload.
        let mut pkt = plain[..RTP_HEADER_LEN].to_vec();
        pkt.resize(RTP_HEADER_LEN + 8, 0);
        let header = repair::write_extensions(&mut pkt, None, Some(42));
        pkt.extend_from_slice(&plain[RTP_HEADER_LEN..]);
        assert_eq!(header, RTP_HEADER_LEN + 8);
        rx.on_media(&pkt, pkt.len(), now, t0, t0, &mut ctx);
        assert_eq!(ctx.totals.recv_packets, 1);
        assert!(rx.needs_service() && rx.after_input(&mut ctx));
        assert_eq!(
            rx.next_wake_ns(now, t0, false),
            Some(t0),
            "the first feedback at once"
        );
        for k in 0..3u64 {
            let at = t0 + k * 100_000_000;
            rx.on_timer(now, at, false, &mut ctx);
            assert_eq!(rx.next_wake_ns(now, at, false), Some(at + 100_000_000));
        }
        let counters = rx.tcc_in.as_ref().map(|f| f.counters().recorded);
        assert_eq!(counters, Some(1));
    }
}
