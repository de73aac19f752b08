//! Transport: ICE + DTLS + SRTP for one remote peer on the shared UDP port (sans-IO).
//!
//! The shard routes datagrams here; the Transport answers with datagrams to send (STUN, DTLS) through
//! `poll_transmit`, with notes for the shard (addresses it may now route, state changes) through
//! `poll_note`, and offers in-place SRTP for the media path. Either role: the load generator's
//! emulated endpoints (native/loadgen) run it ICE-controlled, as a browser's side of the call.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cc::{
    Estimator, EstimatorConfig, FeedbackBuilder, Pacer, ProbeStats, Prober, ReceiveEstimator,
    TraceWriter,
};
use crate::domain::{ForceMute, RemoteCandidate, RouterId, TransportId, TransportState};
use crate::dtls::{DtlsCert, DtlsConn, DtlsError, DtlsEvent, DtlsRole, DtlsSetup, Fingerprint};
use crate::ice::{Candidate, IceAgent, IceCredentials, IceEvent, IceState};
use crate::io::Egress;
use crate::rtcp::TransportCc;
use crate::rtp::RtpView;
use crate::srtp::{SrtpContext, SrtpError, SrtpProfile};
pub use crate::stats::FailureKind;
use crate::stats::{Counters, DropReason, TransportStats};
use crate::stun::StunMessage;

/// DTLS datagrams kept while the remote description is not known yet (a ClientHello flight).
const MAX_EARLY_DTLS: usize = 4;

/// Which SRTP transform an egress packet takes (RFC 3711 3 for RTP, 3.4 for RTCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protect {
    Rtp,
    Rtcp,
}

/// A datagram a Transport wants sent (control traffic: STUN and DTLS).
#[derive(Debug)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// What the shard must learn from a Transport.
#[derive(Debug)]
pub enum Note {
    /// The peer proved itself (authenticated STUN) from `remote`, to our `local`: route its datagrams
    /// here.
    Address {
        local: SocketAddr,
        remote: SocketAddr,
    },
    State {
        state: TransportState,
        detail: String,
        failure: Option<FailureKind>,
    },
    /// SRTP is ready: media may flow both ways.
    MediaReady,
    /// Media moved to another path (an ICE restart, a new address): what was sent on the old one
    /// while it was failing was lost, and decoders on both sides wait for keyframes.
    PathChanged,
    /// The transport discarded `count` datagrams or records for `reason`, already counted on
    /// its own counters; the shard adds them to its total.
    Dropped { reason: DropReason, count: u64 },
}

pub struct Transport {
    pub id: TransportId,
    pub router: RouterId,
    ice: IceAgent,
    cert: DtlsCert,
    dtls: Option<DtlsConn>,
    dtls_started: bool,
    srtp_rx: Option<SrtpContext>,
    srtp_tx: Option<SrtpContext>,
    selected: Option<(SocketAddr, SocketAddr)>,
    /// Where DTLS last came from: the path to answer on before ICE has nominated.
    dtls_path: Option<(SocketAddr, SocketAddr)>,
    /// DTLS that arrived before the remote description (browsers start DTLS as soon as their own check
    /// succeeds, which can precede the answer reaching the bridge); replayed on `connect`.
    early_dtls: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    state: TransportState,
    transmits: VecDeque<Transmit>,
    notes: VecDeque<Note>,
    pub counters: Counters,
    /// What the focus force-muted: read once per RTP packet that already has its Producer in hand.
    pub force_mute: ForceMute,
    /// The transport-wide sequence numbers stamped on the RTP this transport sends, when its peer
    /// negotiated transport-cc (the id is its extmap's, which the focus makes everyone's).
    tcc_out: Option<TccOut>,
    /// Congestion control with the peer, made when it negotiated transport-cc: feedback on what it
    /// sends, and the estimate of what it can receive.
    cc: Option<Box<Cc>>,
    /// The receive-side estimate of what the peer sends, for a peer that negotiated REMB and not
    /// transport-cc (made with the abs-send-time id).
    remb: Option<Box<Remb>>,
    /// Test-only fault injection: the next DTLS datagram panics (proves the shard's isolation).
    #[cfg(test)]
    pub(crate) panic_on_dtls: bool,
}

/// The transport-wide sequence numbering of what one transport sends.
#[derive(Clone, Copy, Debug)]
struct TccOut {
    id: u8,
    next: u16,
}

/// REMB to a peer: its abs-send-time extension id and the receive-side estimate, on `epoch`'s clock.
struct Remb {
    epoch: Instant,
    id: u8,
    estimator: ReceiveEstimator,
}

/// One transport's congestion control, on the clock of its `epoch`.
struct Cc {
    epoch: Instant,
    /// Arrivals of the peer's packets, for the transport-cc feedback the bridge sends it.
    feedback: FeedbackBuilder,
    /// What the peer can receive, from its feedback on what the bridge sends it.
    estimator: Estimator,
    /// When to send the peer a probe cluster, and the padding that fills one.
    prober: Prober,
    /// Feedback from the peer that did not parse.
    bad_feedback: u64,
    /// The congestion-control trace being written, when tracing is on.
    trace: Option<TraceWriter>,
    /// Holds video back to a rate the estimate allows, when pacing is on (`cc::pacer`).
    pacer: Option<Pacer>,
    /// The highest estimate since the last fall was reported, and when that was.
    fall_peak: u64,
    fall_reported: Option<Duration>,
    /// What media costs the link beyond plain RTP, to tell the Allocator the estimate in its terms.
    overhead: Overhead,
}

/// IP and UDP headers: what the link carries of each datagram beyond its payload. The estimator
/// counts them, as libwebrtc's send-side estimate does: a link's rate covers them, and a receiver of
/// small audio packets spends about a fifth of a 500 kbit/s link on headers and SRTP tags. Counting
/// plain RTP, a probe's large padding packets measured more than the media could use.
const IPV4_UDP_HEADERS: usize = 20 + 8;
const IPV6_UDP_HEADERS: usize = 40 + 8;

/// What the link carries of media packets beyond their plain RTP (SRTP tags, IP and UDP headers),
/// bit/s, over windows of `OVERHEAD_WINDOW_US` (padding left out: it is no media). Headers cost per
/// packet, not per bit: a receiver's overhead is about its packet rate (three Opus streams, 150 a
/// second) times 44 bytes, whatever its video's bitrate. No allocation.
#[derive(Clone, Copy, Debug, Default)]
struct Overhead {
    start_us: Option<i64>,
    bytes: u64,
    bps: u64,
}

const OVERHEAD_WINDOW_US: i64 = 500_000;

impl Overhead {
    fn add(&mut self, at_us: i64, bytes: usize) {
        let start = *self.start_us.get_or_insert(at_us);
        let elapsed = at_us - start;
        if elapsed >= OVERHEAD_WINDOW_US {
            self.bps = (self.bytes as f64 * 8e6 / elapsed as f64) as u64;
            self.start_us = Some(at_us);
            self.bytes = 0;
        }
        self.bytes += bytes as u64;
    }

    /// The last whole window's rate (0 before one closed).
    fn bps(&self) -> u64 {
        self.bps
    }
}

/// What a transport-cc feedback did to the estimate that the control plane hears of at once, with
/// the estimate after it (bit/s of plain RTP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EstimateChange {
    /// It fell enough (`FALL_REPORT_SHARE`): the old layers would overflow the link until the next
    /// stats snapshot.
    Fell(u64),
    /// A probe raised it: a receiver held below its ideal need not wait for the next snapshot to get
    /// what the probe found room for.
    Rose(u64),
}

/// An estimate under this share of its peak since the last report is reported at once: the Allocator
/// would otherwise go on sending the old layers until its next stats snapshot, up to a second of
/// overflowing a link that just shrank (a 500 kbit/s receiver's first seconds). At most one report per
/// `FALL_REPORT_INTERVAL` per transport: each costs the control plane a reallocation.
const FALL_REPORT_SHARE: f64 = 0.9;
const FALL_REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// The stream a transport's padding goes on: an RTX SSRC its peer was told of, with the RTX payload
/// type it negotiated (padding-only packets there are counted by its transport-cc and then dropped),
/// and the next RTX sequence number of that stream (shared with the RTX cache's resends: the Router
/// keeps it, and is told how many were used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaddingStream {
    pub ssrc: u32,
    pub payload_type: u8,
    pub next_seq: u16,
    /// The Router's key of the Source whose RTX stream it is.
    pub source: u64,
}

/// RTP header, a one-word header extension block with the transport-cc extension, 255 bytes of
/// padding (the most one padding count byte can say).
const PADDING_PACKET: usize = 12 + 8 + 255;
/// Padding packets sent in one step of a cluster at most (the step is about a millisecond: 16 is
/// 35 Mbit/s).
const MAX_PADDING_PER_STEP: usize = 16;

impl Cc {
    fn since(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }
}

/// Where one forwarded packet's transport-cc extension sits: found on the first copy that needs it and
/// kept for the others (a copy's rewrite never moves its header extensions).
pub struct TccOffset<'a> {
    packet: &'a [u8],
    found: Option<(u8, Option<usize>)>,
}

impl<'a> TccOffset<'a> {
    pub fn new(packet: &'a [u8]) -> Self {
        TccOffset {
            packet,
            found: None,
        }
    }

    /// The offset of the two-byte extension `id`, if the packet carries it at that size.
    #[inline]
    fn at(&mut self, id: u8) -> Option<usize> {
        if let Some((_, at)) = self.found.filter(|(i, _)| *i == id) {
            return at;
        }
        let at = RtpView::parse(self.packet)
            .ok()
            .and_then(|v| v.extension(id))
            .filter(|ext| ext.len() == 2)
            .map(|ext| ext.as_ptr() as usize - self.packet.as_ptr() as usize);
        self.found = Some((id, at));
        at
    }
}

impl Transport {
    pub fn new(
        id: TransportId,
        router: RouterId,
        ice: IceCredentials,
        controlling: bool,
        cert: DtlsCert,
        local_addrs: &[SocketAddr],
    ) -> Self {
        let mut tie = [0u8; 8];
        // A tie-breaker only needs to be unlikely to collide; fall back to the id if RAND fails.
        if openssl::rand::rand_bytes(&mut tie).is_err() {
            tie = id.to_be_bytes();
        }
        let mut agent = IceAgent::new(controlling, ice, u64::from_be_bytes(tie));
        for (i, addr) in local_addrs.iter().enumerate() {
            agent.add_local_candidate(Candidate::host(*addr, 65535 - i as u16));
        }
        Transport {
            id,
            router,
            ice: agent,
            cert,
            dtls: None,
            dtls_started: false,
            srtp_rx: None,
            srtp_tx: None,
            selected: None,
            dtls_path: None,
            early_dtls: Vec::new(),
            state: TransportState::Checking,
            transmits: VecDeque::new(),
            notes: VecDeque::new(),
            counters: Counters::default(),
            force_mute: ForceMute::default(),
            tcc_out: None,
            cc: None,
            remb: None,
            #[cfg(test)]
            panic_on_dtls: false,
        }
    }

    /// A passive ICE-TCP candidate on the shard's listener (RFC 6544): the peer connects to it.
    pub fn add_tcp_candidate(&mut self, addr: SocketAddr) {
        self.ice
            .add_local_candidate(Candidate::host_tcp_passive(addr));
    }

    pub fn local_ufrag(&self) -> &str {
        &self.ice.local_credentials().ufrag
    }

    /// The host candidates made from `local_addrs`, to signal to the peer.
    pub fn local_candidates(&self) -> &[Candidate] {
        self.ice.local_candidates()
    }

    pub fn state(&self) -> TransportState {
        self.state
    }

    pub fn is_media_ready(&self) -> bool {
        self.srtp_tx.is_some() && self.selected.is_some() && self.state == TransportState::Connected
    }

    /// The address media is sent to (the remote of the selected ICE pair).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.selected.map(|(_, r)| r)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.selected.map(|(l, _)| l)
    }

    /// Remote ICE credentials, fingerprints and setup. DTLS runs once ICE has a path.
    pub fn connect(
        &mut self,
        now: Instant,
        remote_ice: IceCredentials,
        fingerprints: Vec<Fingerprint>,
        remote_setup: DtlsSetup,
    ) {
        if self.is_finished() {
            return;
        }
        self.ice.set_remote_credentials(remote_ice);
        let role = DtlsRole::for_remote(remote_setup);
        match &mut self.dtls {
            Some(conn) if !self.dtls_started => conn.set_remote_fingerprints(fingerprints),
            Some(_) => {} // DTLS already running: the session keeps its fingerprints.
            None => match DtlsConn::new(&self.cert, role, fingerprints) {
                Ok(conn) => self.dtls = Some(conn),
                Err(e) => {
                    self.fail(FailureKind::DtlsHandshake, format!("dtls: {e:?}"));
                    return;
                }
            },
        }
        // The agent schedules its checks from the `now` it is given after configuration.
        self.ice.handle_timeout(now);
        for (local, from, datagram) in std::mem::take(&mut self.early_dtls) {
            // Only our counterpart in the handshake can use them; a client ignores them.
            let _ = self.handle_dtls(now, local, from, &datagram);
        }
        self.drive(now);
    }

    pub fn add_remote_candidates(&mut self, now: Instant, candidates: &[RemoteCandidate]) {
        if self.is_finished() {
            return;
        }
        for c in candidates {
            // Signalled candidates are UDP: a peer's ICE-TCP candidates are learned from its connection.
            self.ice.add_remote_candidate(Candidate {
                addr: c.addr,
                tcp: false,
                kind: c.kind,
                priority: c.priority,
                foundation: format!("r{}", c.priority),
            });
        }
        self.ice.handle_timeout(now);
        self.drive(now);
    }

    /// ICE restart with our new credentials; DTLS and SRTP go on (see [`IceAgent::restart`]).
    pub fn restart_ice(&mut self, now: Instant, ice: IceCredentials) {
        if self.is_finished() {
            return;
        }
        self.ice.restart(ice);
        self.ice.handle_timeout(now);
        self.drive(now);
    }

    /// The ufrags STUN requests for this transport may name (two while an ICE restart is under way).
    pub fn accepted_ufrags(&self) -> impl Iterator<Item = &str> {
        self.ice.accepted_ufrags()
    }

    /// A STUN message routed to this transport (by ufrag or transaction id). The agent authenticates it.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        msg: &StunMessage<'_>,
    ) -> Result<(), DropReason> {
        if self.is_finished() {
            return Err(DropReason::StunUnroutable);
        }
        let result = self.ice.handle_stun(now, local, from, msg);
        // Only an authenticated request teaches the shard a new address to route media from.
        if result.is_ok() && msg.class() == crate::stun::StunClass::Request {
            self.notes.push_back(Note::Address {
                local,
                remote: from,
            });
        }
        self.drive(now);
        result.map_err(|_| DropReason::StunRejected)
    }

    pub fn is_pending_transaction(&self, tid: &[u8; 12]) -> bool {
        self.ice.is_pending_transaction(tid)
    }

    /// A DTLS datagram from an address this transport owns.
    pub fn handle_dtls(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        if self.is_finished() {
            return Err(DropReason::DtlsUnexpected);
        }
        let Some(conn) = &mut self.dtls else {
            if self.early_dtls.len() < MAX_EARLY_DTLS && datagram.len() <= crate::io::MAX_DATAGRAM {
                self.early_dtls.push((local, from, datagram.to_vec()));
                return Ok(());
            }
            return Err(DropReason::DtlsUnexpected);
        };
        #[cfg(test)]
        if self.panic_on_dtls {
            panic!("injected fault");
        }
        // A server learns it is in business from the peer's ClientHello.
        self.dtls_started = true;
        self.dtls_path = Some((local, from));
        let discarded = conn.handle_datagram(now, datagram);
        self.count_drops(DropReason::DtlsInvalid, discarded);
        self.drive(now);
        Ok(())
    }

    fn count_drops(&mut self, reason: DropReason, count: u64) {
        if count > 0 {
            self.counters.drop_n(reason, count);
            self.notes.push_back(Note::Dropped { reason, count });
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_finished() {
            return;
        }
        self.ice.handle_timeout(now);
        if let Some(conn) = &mut self.dtls {
            if self.dtls_started {
                conn.handle_timeout(now);
            }
        }
        self.drive(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_finished() {
            return None;
        }
        let ice = self.ice.poll_timeout();
        let dtls = self
            .dtls
            .as_ref()
            .filter(|_| self.dtls_started)
            .and_then(|d| d.poll_timeout());
        match (ice, dtls) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    /// Decrypts an SRTP packet in place; returns the RTP length.
    #[inline]
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, DropReason> {
        let ctx = self.srtp_rx.as_mut().ok_or(DropReason::NotConnected)?;
        ctx.unprotect_rtp(buf).map_err(srtp_drop)
    }

    #[inline]
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, DropReason> {
        let ctx = self.srtp_rx.as_mut().ok_or(DropReason::NotConnected)?;
        ctx.unprotect_rtcp(buf).map_err(srtp_drop)
    }

    /// Encrypts `buf[..len]` (plain RTP) in place; returns the SRTP length.
    #[inline]
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, DropReason> {
        let ctx = self.srtp_tx.as_mut().ok_or(DropReason::NotConnected)?;
        ctx.protect_rtp(buf, len)
            .map_err(|_| DropReason::EgressFailed)
    }

    #[inline]
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, DropReason> {
        let ctx = self.srtp_tx.as_mut().ok_or(DropReason::NotConnected)?;
        ctx.protect_rtcp(buf, len)
            .map_err(|_| DropReason::EgressFailed)
    }

    /// The one protected-send path, for forwarded RTP, passed-on sender reports and the bridge's own
    /// RTCP alike: copies `plain` into a free egress slot, protects it there with this transport's key,
    /// commits it and counts it (here and in `total`). Returns whether it was queued; before media is
    /// ready nothing is, and nothing is counted.
    #[inline]
    pub fn send_protected(
        &mut self,
        kind: Protect,
        plain: &[u8],
        egress: &mut impl Egress,
        total: &mut Counters,
    ) -> bool {
        self.send_rewritten(kind, plain, egress, total, |_| {})
    }

    /// Forwards one RTP packet to this transport's peer: `send_rewritten` with, after `rewrite`, this
    /// transport's next transport-wide sequence number written into the copy's transport-cc extension
    /// (when the peer negotiated one and the packet carries it: the sender's number means nothing to
    /// this receiver). Never held by the pacer (audio, retransmissions, padding), but counted
    /// against its budget.
    #[inline]
    pub fn send_rtp(
        &mut self,
        now: Instant,
        plain: &[u8],
        offset: &mut TccOffset<'_>,
        egress: &mut impl Egress,
        total: &mut Counters,
        rewrite: impl FnOnce(&mut [u8]),
    ) -> bool {
        let at = self.tcc_out.and_then(|t| offset.at(t.id));
        self.send_stamped(now, plain, at, true, egress, total, rewrite)
    }

    /// `send_rtp` for video: when this transport paces and its pacer has a backlog or no budget
    /// left, the rewritten packet is held (`cc::pacer`) and leaves in `pace`. Returns whether it was
    /// sent or held.
    #[inline]
    pub fn send_rtp_paced(
        &mut self,
        now: Instant,
        plain: &[u8],
        offset: &mut TccOffset<'_>,
        egress: &mut impl Egress,
        total: &mut Counters,
        rewrite: impl FnOnce(&mut [u8]),
    ) -> bool {
        self.paced(now, plain, offset, false, egress, total, rewrite)
    }

    /// A retransmission, paced as video is but ahead of any held video (`Pacer::hold` with `first`).
    pub fn send_rtx_paced(
        &mut self,
        now: Instant,
        packet: &[u8],
        egress: &mut impl Egress,
        total: &mut Counters,
    ) -> bool {
        let mut offset = TccOffset::new(packet);
        self.paced(now, packet, &mut offset, true, egress, total, |_| {})
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn paced(
        &mut self,
        now: Instant,
        plain: &[u8],
        offset: &mut TccOffset<'_>,
        first: bool,
        egress: &mut impl Egress,
        total: &mut Counters,
        rewrite: impl FnOnce(&mut [u8]),
    ) -> bool {
        let tcc_at = self.tcc_out.and_then(|t| offset.at(t.id));
        // With pacing off the first test is all a video copy pays; before media is ready nothing is
        // sent, and nothing should be held either.
        let paces = self.cc.as_ref().is_some_and(|cc| cc.pacer.is_some())
            && self.is_media_ready()
            && self.selected.is_some();
        let Some((pacer, at_us)) = self.cc.as_mut().filter(|_| paces).and_then(|cc| {
            let at_us = cc.since(now).as_micros() as i64;
            Some((cc.pacer.as_mut()?, at_us))
        }) else {
            return self.send_stamped(now, plain, tcc_at, true, egress, total, rewrite);
        };
        if pacer.may_send(at_us) {
            return self.send_stamped(now, plain, tcc_at, true, egress, total, rewrite);
        }
        let dropped = pacer.hold(at_us, plain, tcc_at, first, rewrite);
        self.counters.paced += 1;
        total.paced += 1;
        if dropped {
            self.drop_counted(DropReason::PacerOverflow, total);
        }
        egress.paced();
        true
    }

    /// Sends what the pacer lets leave at `now`; returns when it should be asked again, while it
    /// holds packets.
    pub fn pace(
        &mut self,
        now: Instant,
        egress: &mut impl Egress,
        total: &mut Counters,
    ) -> Option<Instant> {
        loop {
            let cc = self.cc.as_mut()?;
            let at_us = cc.since(now).as_micros() as i64;
            let pacer = cc.pacer.as_mut()?;
            let Some(held) = pacer.pop(at_us) else {
                let epoch = cc.epoch;
                return pacer
                    .next_send_us(at_us)
                    .map(|us| epoch + Duration::from_micros(us.max(0) as u64));
            };
            // send_stamped spends the budget.
            self.send_stamped(now, &held.packet, held.tcc_at, true, egress, total, |_| {});
            if let Some(p) = self.cc.as_mut().and_then(|cc| cc.pacer.as_mut()) {
                p.recycle(held.packet);
            }
        }
    }

    /// Whether the pacer holds packets.
    pub fn pacer_backlog(&self) -> bool {
        self.cc
            .as_ref()
            .and_then(|cc| cc.pacer.as_ref())
            .is_some_and(|p| !p.is_empty())
    }

    /// Sends one RTP packet with this transport's next transport-wide sequence number written at
    /// `tcc_at` (when it has one), tells the estimator, and spends the pacer's budget, all in
    /// datagram bytes with IP and UDP headers. `media`: its bytes beyond plain RTP count in the
    /// media overhead (`Overhead`; padding's do not).
    #[allow(clippy::too_many_arguments)]
    fn send_stamped(
        &mut self,
        now: Instant,
        plain: &[u8],
        tcc_at: Option<usize>,
        media: bool,
        egress: &mut impl Egress,
        total: &mut Counters,
        rewrite: impl FnOnce(&mut [u8]),
    ) -> bool {
        let Some(tcc) = self.tcc_out else {
            return self.send_rewritten(Protect::Rtp, plain, egress, total, rewrite);
        };
        let mut stamped = false;
        // The copy's SSRC and sequence number, as the receiver sees them, for the trace only.
        let tracing = self.cc.as_ref().is_some_and(|cc| cc.trace.is_some());
        let (mut ssrc, mut rtp_seq) = (0, 0);
        let before = self.counters.bytes_out;
        let sent = self.send_rewritten(Protect::Rtp, plain, egress, total, |b| {
            rewrite(b);
            if let Some(field) = tcc_at.and_then(|at| b.get_mut(at..at + 2)) {
                field.copy_from_slice(&tcc.next.to_be_bytes());
                stamped = true;
            }
            if let (true, Some(h)) = (tracing, b.get(..12)) {
                rtp_seq = u16::from_be_bytes([h[2], h[3]]);
                ssrc = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            }
        });
        if sent {
            let headers = match self.remote_addr() {
                Some(SocketAddr::V6(_)) => IPV6_UDP_HEADERS,
                _ => IPV4_UDP_HEADERS,
            };
            let wire = (self.counters.bytes_out - before) as usize + headers;
            if let Some(cc) = self.cc.as_mut() {
                if let Some(p) = cc.pacer.as_mut() {
                    p.spend(wire);
                }
                let at = cc.since(now);
                if media {
                    cc.overhead.add(at.as_micros() as i64, wire - plain.len());
                }
                if stamped {
                    cc.estimator.on_packet_sent(tcc.next, wire, at);
                    if let Some(t) = cc.trace.as_mut() {
                        t.sent(tcc.next, wire, at, ssrc, rtp_seq);
                    }
                }
            }
            if stamped {
                if let Some(t) = self.tcc_out.as_mut() {
                    t.next = t.next.wrapping_add(1);
                }
            }
        }
        sent
    }

    /// The transport-cc header extension id of the RTP this transport's peer sends and receives (None:
    /// it did not negotiate it); `feedback_ssrc` is the bridge's SSRC its feedback comes from.
    /// Numbering starts at 0 and goes on across changes of the id; the estimate too. With `pacing`
    /// its video is paced to the estimate (`send_rtp_paced`).
    pub fn set_transport_cc_id(
        &mut self,
        now: Instant,
        id: Option<u8>,
        feedback_ssrc: u32,
        config: EstimatorConfig,
        pacing: bool,
    ) {
        self.tcc_out = match (id, self.tcc_out) {
            (None, _) => None,
            (Some(id), Some(t)) => Some(TccOut { id, ..t }),
            (Some(id), None) => Some(TccOut { id, next: 0 }),
        };
        match id {
            None => self.cc = None,
            Some(_) if self.cc.is_none() => {
                self.cc = Some(Box::new(Cc {
                    epoch: now,
                    feedback: FeedbackBuilder::new(feedback_ssrc, 0),
                    estimator: Estimator::new(config),
                    prober: Prober::starting_at(config.initial_bps),
                    bad_feedback: 0,
                    trace: None,
                    pacer: pacing.then(Pacer::new),
                    fall_peak: 0,
                    fall_reported: None,
                    overhead: Overhead::default(),
                }));
            }
            Some(_) => {}
        }
    }

    /// Writes this transport's congestion-control trace into `dir` from now on (`cc::trace`), if it
    /// negotiated transport-cc and is not traced yet. A file that cannot be made means no trace.
    pub fn trace_cc(&mut self, dir: &std::path::Path) {
        if let Some(cc) = self.cc.as_mut().filter(|cc| cc.trace.is_none()) {
            cc.trace = TraceWriter::create(dir, self.id).ok();
        }
    }

    /// REMB to the peer, with the abs-send-time id its RTP carries (None: no REMB). The estimate
    /// survives a change of the id.
    pub fn set_remb(&mut self, now: Instant, abs_send_time: Option<u8>) {
        match (abs_send_time, self.remb.as_mut()) {
            (None, _) => self.remb = None,
            (Some(id), Some(r)) => r.id = id,
            (Some(id), None) => {
                self.remb = Some(Box::new(Remb {
                    epoch: now,
                    id,
                    estimator: ReceiveEstimator::new(EstimatorConfig::default()),
                }));
            }
        }
    }

    /// The REMB bitrate due to the peer now, if one is (`ReceiveEstimator::poll_remb`).
    pub fn poll_remb(&mut self, now: Instant) -> Option<u64> {
        let r = self.remb.as_mut()?;
        r.estimator
            .poll_remb(now.saturating_duration_since(r.epoch))
    }

    /// The receive-side estimate of what the peer sends, with REMB.
    pub fn remb_estimate(&self) -> Option<u64> {
        let r = self.remb.as_ref()?;
        r.estimator
            .incoming_bps()
            .map(|_| r.estimator.estimate_bps())
    }

    /// A packet from the peer, for the transport-cc feedback (or the REMB) the bridge sends it.
    #[inline]
    pub fn on_rtp_received(&mut self, now: Instant, rtp: &RtpView<'_>) {
        if let Some(r) = self.remb.as_mut() {
            if let Some(&[a, b, c]) = rtp.extension(r.id) {
                let abs = u32::from_be_bytes([0, a, b, c]);
                let at = now.saturating_duration_since(r.epoch);
                r.estimator.on_packet(at, abs, rtp.as_bytes().len());
            }
        }
        let (Some(t), Some(cc)) = (self.tcc_out, self.cc.as_mut()) else {
            return;
        };
        let Some(&[hi, lo]) = rtp.extension(t.id) else {
            return;
        };
        if cc.feedback.media_ssrc() == 0 {
            cc.feedback.set_media_ssrc(rtp.ssrc());
        }
        let at = cc.since(now);
        cc.feedback.on_arrival(u16::from_be_bytes([hi, lo]), at);
    }

    /// Writes the next transport-cc feedback to the peer into `out`, if any is due.
    pub fn take_transport_feedback(&mut self, out: &mut [u8]) -> Option<usize> {
        let cc = self.cc.as_mut()?;
        if !cc.feedback.has_pending() {
            return None;
        }
        cc.feedback.write(out).ok().flatten()
    }

    /// The peer's transport-cc feedback on what the bridge sent it: into the estimate. Returns the
    /// estimate when it fell enough to be reported now (`Event::EstimateFell`), or when a probe raised
    /// it (`Event::EstimateRose`).
    pub fn on_transport_feedback(
        &mut self,
        now: Instant,
        feedback: &TransportCc<'_>,
    ) -> Option<EstimateChange> {
        let cc = self.cc.as_mut()?;
        let at = cc.since(now);
        if let Some(t) = cc.trace.as_mut() {
            t.feedback(at, feedback.as_bytes());
        }
        let raises = cc.estimator.probe_raises();
        if cc.estimator.on_feedback(feedback, at).is_err() {
            cc.bad_feedback += 1;
        }
        if let Some(result) = cc.estimator.clusters().take_result() {
            cc.prober.on_result(at, result);
        }
        // The estimate changes only here: the pacer takes it once, not per packet.
        let estimate = self.wire_estimate();
        let payload = self.bandwidth_estimate();
        let cc = self.cc.as_mut()?;
        if let Some(p) = cc.pacer.as_mut() {
            p.set_estimate(estimate);
        }
        cc.prober.on_queue(cc.estimator.standing_queue());
        cc.prober.on_estimate(at, estimate?);
        let bps = payload?;
        // At most one a probe cluster, and clusters go one at a time. A raise is no fall even when
        // it stays under a peak from before a drop.
        let rose = cc.estimator.probe_raises() > raises;
        let fell = !rose && (bps as f64) < cc.fall_peak as f64 * FALL_REPORT_SHARE;
        if fell
            && cc
                .fall_reported
                .is_none_or(|t| at.saturating_sub(t) >= FALL_REPORT_INTERVAL)
        {
            cc.fall_peak = bps;
            cc.fall_reported = Some(at);
            return Some(EstimateChange::Fell(bps));
        }
        cc.fall_peak = cc.fall_peak.max(bps);
        rose.then_some(EstimateChange::Rose(bps))
    }

    /// What the Allocator would send the peer if its estimate allowed, bit/s of plain RTP as its
    /// layers count (0: no more than now); above the estimate, the peer is probed.
    pub fn set_probe_target(&mut self, bps: u64) {
        if let Some(cc) = self.cc.as_mut() {
            // In the prober's terms, datagrams: with what media costs beyond plain RTP now.
            let wire = if bps == 0 { 0 } else { bps + cc.overhead.bps() };
            cc.prober.set_target(wire);
        }
    }

    /// Whether a probe cluster runs or starts at `now` (only then does the shard look up the padding
    /// stream).
    pub fn wants_probe(&self, now: Instant) -> bool {
        let (Some(cc), Some(estimate)) = (self.cc.as_ref(), self.wire_estimate()) else {
            return false;
        };
        cc.prober.due(cc.since(now), estimate)
    }

    /// One step of probing at `now`: a cluster starts if one is due and `stream` can carry padding;
    /// a running one is topped up with padding to its rate, and ends when its time is up. Returns
    /// when the next step is due, while a cluster runs, and the padding packets sent on `stream`.
    pub fn probe(
        &mut self,
        now: Instant,
        stream: Option<PaddingStream>,
        egress: &mut impl Egress,
        total: &mut Counters,
    ) -> (Option<Instant>, u16) {
        let Some(estimate) = self.wire_estimate() else {
            return (None, 0);
        };
        let Some(cc) = self.cc.as_mut() else {
            return (None, 0);
        };
        let at = cc.since(now);
        if cc.prober.active().is_none() && stream.is_some() {
            if let Some((id, _)) = cc.prober.poll_start(at, estimate) {
                cc.estimator.clusters().open(id);
                if let Some(t) = cc.trace.as_mut() {
                    t.cluster(true, id, at);
                }
                self.counters.probe_clusters += 1;
                total.probe_clusters += 1;
            }
        }
        let due = cc
            .estimator
            .clusters()
            .open_cluster()
            .map_or(0, |(_, sent)| cc.prober.padding_due(at, sent));
        let mut sent = 0u16;
        if let Some(stream) = stream.filter(|_| due > 0) {
            let packets = (due as usize)
                .div_ceil(PADDING_PACKET)
                .min(MAX_PADDING_PER_STEP);
            for _ in 0..packets {
                let seq = stream.next_seq.wrapping_add(sent);
                if !self.send_padding(now, stream, seq, egress, total) {
                    break;
                }
                sent += 1;
            }
        }
        let Some(cc) = self.cc.as_mut() else {
            return (None, sent);
        };
        if let Some(id) = cc.prober.poll_end(at) {
            cc.estimator.clusters().close(id, at);
            if let Some(t) = cc.trace.as_mut() {
                t.cluster(false, id, at);
            }
        }
        (cc.prober.next_wake(at).map(|wake| cc.epoch + wake), sent)
    }

    /// Sends the peer one padding-only packet on `stream`, stamped for transport-cc like media.
    fn send_padding(
        &mut self,
        now: Instant,
        stream: PaddingStream,
        seq: u16,
        egress: &mut impl Egress,
        total: &mut Counters,
    ) -> bool {
        let (Some(tcc), Some(cc)) = (self.tcc_out, self.cc.as_ref()) else {
            return false;
        };
        // A 90 kHz clock from the epoch: the timestamp means nothing on a padding packet, but moves.
        let ts = (cc.since(now).as_micros() * 9 / 100) as u32;
        let mut p = [0u8; PADDING_PACKET];
        p[0] = 0x80 | 0x20 | 0x10; // V=2, padding, extension
        p[1] = stream.payload_type & 0x7f;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&stream.ssrc.to_be_bytes());
        // One-byte header extensions (RFC 8285), one word: the transport-cc id with two bytes.
        p[12..16].copy_from_slice(&[0xbe, 0xde, 0x00, 0x01]);
        p[16] = (tcc.id << 4) | 1;
        p[PADDING_PACKET - 1] = 255;
        let at = TccOffset::new(&p).at(tcc.id);
        let sent = self.send_stamped(now, &p, at, false, egress, total, |_| {});
        if sent {
            if let Some(cc) = self.cc.as_mut() {
                cc.prober.on_padding(PADDING_PACKET);
            }
            for c in [&mut self.counters, total] {
                c.padding_packets += 1;
                c.padding_bytes += PADDING_PACKET as u64;
            }
        }
        sent
    }

    /// Probing figures, when the peer negotiated transport-cc.
    pub fn probe_stats(&self) -> Option<ProbeStats> {
        self.cc.as_ref().map(|cc| cc.prober.stats())
    }

    /// The estimate of what the peer can receive, in bit/s of plain RTP as the Allocator counts
    /// layers (the estimator's figure, which counts datagrams with their headers, less what media
    /// costs beyond plain RTP now), once its feedback came.
    pub fn bandwidth_estimate(&self) -> Option<u64> {
        let cc = self.cc.as_ref()?;
        self.wire_estimate()
            .map(|bps| bps.saturating_sub(cc.overhead.bps()))
    }

    /// The estimator's own figure: what the link carries, in bit/s of datagrams with their IP and
    /// UDP headers; what the pacer and the prober work in.
    fn wire_estimate(&self) -> Option<u64> {
        let cc = self.cc.as_ref()?;
        cc.estimator
            .acknowledged_bps()
            .map(|_| cc.estimator.estimate_bps())
    }

    /// The round-trip time to the peer from its transport-cc feedback (send to feedback), once known.
    pub fn rtt(&self) -> Option<Duration> {
        self.cc.as_ref()?.estimator.rtt()
    }

    /// The next transport-wide sequence number this transport will stamp, if it stamps any.
    pub fn next_transport_cc_seq(&self) -> Option<u16> {
        self.tcc_out.map(|t| t.next)
    }

    /// `send_protected` with `rewrite` applied to this receiver's copy before it is protected (a
    /// Projection's new SSRC, sequence number, timestamp and codec fields).
    #[inline]
    pub fn send_rewritten(
        &mut self,
        kind: Protect,
        plain: &[u8],
        egress: &mut impl Egress,
        total: &mut Counters,
        rewrite: impl FnOnce(&mut [u8]),
    ) -> bool {
        if !self.is_media_ready() {
            return false;
        }
        let Some((src, dst)) = self.selected else {
            return false;
        };
        let batch = egress.batch_for(src);
        let Some(slot) = batch.slot() else {
            return false;
        };
        let Some(head) = slot.get_mut(..plain.len()) else {
            self.drop_counted(DropReason::EgressFailed, total);
            return false;
        };
        // Each receiver has its own key, so each gets its own copy, encrypted in the egress buffer.
        head.copy_from_slice(plain);
        rewrite(head);
        let protected = match kind {
            Protect::Rtp => self.protect_rtp(slot, plain.len()),
            Protect::Rtcp => self.protect_rtcp(slot, plain.len()),
        };
        match protected {
            Ok(n) => {
                batch.commit(n, dst);
                let c = &mut self.counters;
                c.packets_out += 1;
                c.bytes_out += n as u64;
                total.packets_out += 1;
                total.bytes_out += n as u64;
                match kind {
                    Protect::Rtp => {
                        c.rtp_out += 1;
                        total.rtp_out += 1;
                    }
                    Protect::Rtcp => {
                        c.rtcp_out += 1;
                        total.rtcp_out += 1;
                    }
                }
                true
            }
            Err(reason) => {
                self.drop_counted(reason, total);
                false
            }
        }
    }

    /// Counts a dropped datagram of this transport on it and in the shard's total.
    #[inline]
    pub fn drop_counted(&mut self, reason: DropReason, total: &mut Counters) {
        self.counters.drop(reason);
        total.drop(reason);
    }

    pub fn srtp_profile(&self) -> Option<SrtpProfile> {
        self.srtp_tx.as_ref().map(|c| c.profile())
    }

    pub fn close(&mut self) {
        if self.state == TransportState::Closed {
            return;
        }
        if let Some(conn) = &mut self.dtls {
            conn.close();
            while let Some(d) = conn.poll_transmit() {
                if let Some((local, remote)) = self.selected {
                    self.transmits.push_back(Transmit {
                        source: local,
                        destination: remote,
                        contents: d,
                    });
                }
            }
        }
        self.finish(TransportState::Closed, "closed".into(), None);
    }

    /// Fails the transport (after a panic in its processing, or a protocol failure).
    pub fn fail(&mut self, failure: FailureKind, detail: String) {
        if self.is_finished() {
            return;
        }
        self.finish(TransportState::Failed, detail, Some(failure));
    }

    pub fn stats(&self) -> TransportStats {
        TransportStats {
            id: self.id,
            router: self.router,
            state: self.state.as_str(),
            counters: self.counters,
            selected_remote: self.remote_addr(),
            srtp_profile: self.srtp_profile().map(|p| p.dtls_name()),
            force_mute: self.force_mute,
            bandwidth_estimate_bps: self.bandwidth_estimate(),
            probe: self.probe_stats(),
            probe_raises: self
                .cc
                .as_ref()
                .map_or(0, |cc| cc.estimator.stats().probe_raises),
            remb_estimate_bps: self.remb_estimate(),
            rtt_ms: self.rtt().map(|d| d.as_secs_f64() * 1000.0),
            // Filled in by the shard, which has the Producers.
            audio_in_bps: 0,
            rtp_received: 0,
            rtp_lost: 0,
            jitter_ms: 0.0,
        }
    }

    /// Enters a terminal state: ICE stops and the SRTP keys are dropped, so nothing more flows.
    fn finish(&mut self, state: TransportState, detail: String, failure: Option<FailureKind>) {
        self.ice.close();
        self.srtp_rx = None;
        self.srtp_tx = None;
        self.set_state(state, detail, failure);
    }

    fn is_finished(&self) -> bool {
        matches!(self.state, TransportState::Failed | TransportState::Closed)
    }

    fn set_state(&mut self, state: TransportState, detail: String, failure: Option<FailureKind>) {
        if self.state == state {
            return;
        }
        self.state = state;
        self.notes.push_back(Note::State {
            state,
            detail,
            failure,
        });
    }

    /// Runs ICE and DTLS to quiescence after any input.
    fn drive(&mut self, now: Instant) {
        while let Some(t) = self.ice.poll_transmit() {
            self.transmits.push_back(Transmit {
                source: t.source,
                destination: t.destination,
                contents: t.contents,
            });
        }
        while let Some(ev) = self.ice.poll_event() {
            match ev {
                IceEvent::SelectedPair { local, remote } => {
                    let moved = self.selected.is_some_and(|s| s != (local, remote));
                    if moved && self.srtp_tx.is_some() {
                        self.notes.push_back(Note::PathChanged);
                    }
                    self.selected = Some((local, remote));
                    self.notes.push_back(Note::Address { local, remote });
                    if let Some(conn) = &mut self.dtls {
                        if !self.dtls_started && conn.role() == DtlsRole::Client {
                            self.dtls_started = true;
                            conn.start(now);
                        }
                    }
                }
                IceEvent::StateChanged(IceState::Failed) => {
                    let (kind, detail) = if self.selected.is_some() {
                        (FailureKind::Consent, "ice: consent expired")
                    } else {
                        (FailureKind::Ice, "ice: no candidate pair succeeded")
                    };
                    self.fail(kind, detail.into());
                    return;
                }
                IceEvent::StateChanged(_) => {}
            }
        }
        let Some(conn) = &mut self.dtls else {
            return;
        };
        let mut events = Vec::new();
        while let Some(d) = conn.poll_transmit() {
            // DTLS goes to where ICE found the peer; before nomination, a server answers the sender.
            if let Some((local, remote)) = self.selected.or(self.dtls_path) {
                self.transmits.push_back(Transmit {
                    source: local,
                    destination: remote,
                    contents: d,
                });
            }
        }
        while let Some(ev) = conn.poll_event() {
            events.push(ev);
        }
        for ev in events {
            match ev {
                DtlsEvent::Connected(keys) => self.on_dtls_connected(keys),
                DtlsEvent::Failed(DtlsError::FingerprintMismatch) => {
                    self.fail(
                        FailureKind::DtlsFingerprint,
                        "dtls: fingerprint mismatch".into(),
                    );
                }
                // The only error an established association reports: the peer's authenticated
                // fatal alert. Spoofed or invalid records never get here.
                DtlsEvent::Failed(e @ DtlsError::Alert(_)) => {
                    self.fail(FailureKind::DtlsAlert, format!("dtls: {e}"))
                }
                DtlsEvent::Failed(e) => {
                    self.fail(FailureKind::DtlsHandshake, format!("dtls: {e:?}"))
                }
                DtlsEvent::Closed => {
                    self.finish(TransportState::Closed, "dtls: peer closed".into(), None)
                }
            }
        }
    }

    fn on_dtls_connected(&mut self, keys: crate::dtls::SrtpKeyingMaterial) {
        let Some(profile) = SrtpProfile::from_dtls_name(keys.profile.name()) else {
            self.fail(
                FailureKind::DtlsHandshake,
                "dtls: unsupported srtp profile".into(),
            );
            return;
        };
        let tx = SrtpContext::new(profile, &keys.local_key, &keys.local_salt);
        let rx = SrtpContext::new(profile, &keys.remote_key, &keys.remote_salt);
        match (tx, rx) {
            (Ok(tx), Ok(rx)) => {
                self.srtp_tx = Some(tx);
                self.srtp_rx = Some(rx);
                self.set_state(
                    TransportState::Connected,
                    format!("srtp {}", profile.dtls_name()),
                    None,
                );
                self.notes.push_back(Note::MediaReady);
            }
            _ => self.fail(
                FailureKind::DtlsHandshake,
                "srtp: bad keying material".into(),
            ),
        }
    }
}

fn srtp_drop(e: SrtpError) -> DropReason {
    match e {
        SrtpError::AuthFailed => DropReason::SrtpAuth,
        SrtpError::Replay => DropReason::SrtpReplay,
        SrtpError::TooShort => DropReason::TooShort,
        _ => DropReason::SrtpOther,
    }
}
