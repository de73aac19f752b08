//! A sans-IO ICE agent (RFC 8445) for one component (BUNDLE + rtcp-mux), with consent freshness
//! (RFC 7675).
//!
//! The bridge runs it in the controlling role; the load generator runs the same agent controlled.
//!
//! # Driving it
//! - Feed every STUN message routed to this agent to [`IceAgent::handle_stun`], and call
//!   [`IceAgent::handle_timeout`] when [`IceAgent::poll_timeout`] says so. Both take `now`.
//! - After a configuration call that has no `now` ([`IceAgent::set_remote_credentials`],
//!   [`IceAgent::add_remote_candidate`], [`IceAgent::add_local_candidate`]) call
//!   `handle_timeout(now)` once: that is when checks start. `poll_timeout` can only name an instant
//!   it has been shown, so before the first `handle_*` call it returns `None`.
//! - After each `handle_*` call drain [`IceAgent::poll_transmit`] and [`IceAgent::poll_event`].
//!
//! # Dropped input
//! `handle_stun` returns `Err(IceDrop)` for a message it ignores, and the agent also counts every
//! drop per reason ([`IceAgent::drop_count`]). Requests with a bad USERNAME or MESSAGE-INTEGRITY get
//! no error response (no 400/401): they are dropped silently and counted.
//!
//! # States
//! `New` until remote credentials and a pair exist; `Checking` while checks run; `Connected` once a
//! pair is nominated (and selected); `Disconnected` when no authenticated consent response has arrived
//! for [`IceConfig::disconnected_after`] (8 s by default: consent checks go out every 4-6 s, so a
//! shorter limit would flap); back to `Connected` on the next response; `Failed` when consent expires
//! ([`IceConfig::consent_timeout`], 30 s after the last authenticated response) or when no pair is
//! left to check for a grace period; `Closed` after [`IceAgent::close`]. `Failed` and `Closed` are
//! final: the agent then answers nothing.

mod agent;

use std::net::SocketAddr;
use std::time::Duration;

pub use agent::IceAgent;

/// ice-char (RFC 8839 section 5.4): ALPHA / DIGIT / "+" / "/". 64 symbols, so `byte & 63` is unbiased.
const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Fills `buf` from OpenSSL's CSPRNG.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    openssl::rand::rand_bytes(buf)
        .expect("OpenSSL RAND_bytes fails only if its CSPRNG cannot be seeded");
}

fn random_ice_string(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    random_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ICE_CHARS[usize::from(b & 63)]))
        .collect()
}

/// ICE username fragment and password of one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceCredentials {
    /// ice-ufrag.
    pub ufrag: String,
    /// ice-pwd; also the STUN short-term key.
    pub pwd: String,
}

impl IceCredentials {
    /// Fresh random credentials: an 8-char ufrag and a 24-char password from the ice-char set.
    pub fn random() -> Self {
        IceCredentials {
            ufrag: random_ice_string(8),
            pwd: random_ice_string(24),
        }
    }
}

/// Candidate type (RFC 8445 section 5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidateKind {
    /// A local interface address.
    Host,
    /// An address learned from a STUN server.
    ServerReflexive,
    /// An address learned from a connectivity check.
    PeerReflexive,
    /// An address on a TURN server.
    Relayed,
}

impl CandidateKind {
    /// Recommended type preference (RFC 8445 section 5.1.2.2).
    pub fn type_preference(self) -> u32 {
        match self {
            CandidateKind::Host => 126,
            CandidateKind::PeerReflexive => 110,
            CandidateKind::ServerReflexive => 100,
            CandidateKind::Relayed => 0,
        }
    }

    /// The type's name in SDP and Colibri2 (RFC 8839 section 5.1: `typ host` and so on).
    pub fn sdp_name(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relayed => "relay",
        }
    }

    pub fn from_sdp_name(name: &str) -> Option<Self> {
        [
            CandidateKind::Host,
            CandidateKind::ServerReflexive,
            CandidateKind::PeerReflexive,
            CandidateKind::Relayed,
        ]
        .into_iter()
        .find(|k| k.sdp_name() == name)
    }
}

/// Candidate priority, RFC 8445 section 5.1.2.1:
/// `2^24 * type preference + 2^8 * local preference + (256 - component ID)`.
pub fn candidate_priority(kind: CandidateKind, local_preference: u16, component: u8) -> u32 {
    (kind.type_preference() << 24)
        | (u32::from(local_preference) << 8)
        | (256 - u32::from(component))
}

/// One transport address of either side (component 1): UDP, or ICE-TCP (RFC 6544) when `tcp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Transport address.
    pub addr: SocketAddr,
    /// An ICE-TCP candidate (RFC 6544): it pairs only with TCP candidates of the other side. The
    /// bridge's are passive; a peer's are learned (peer-reflexive) from the connection it opened.
    pub tcp: bool,
    /// Candidate type.
    pub kind: CandidateKind,
    /// Priority (RFC 8445 section 5.1.2).
    pub priority: u32,
    /// Foundation (RFC 8445 section 5.1.1.3).
    pub foundation: String,
}

impl Candidate {
    /// A host candidate for component 1; its foundation is derived from the type and IP address.
    pub fn host(addr: SocketAddr, local_preference: u16) -> Self {
        Candidate {
            addr,
            tcp: false,
            kind: CandidateKind::Host,
            priority: candidate_priority(CandidateKind::Host, local_preference, 1),
            foundation: foundation_of(CandidateKind::Host, addr, false),
        }
    }

    /// A passive ICE-TCP host candidate (RFC 6544 section 4.2): local preference
    /// `2^13 * direction-pref + other-pref` with direction-pref 4 for passive host candidates, so
    /// a UDP host candidate (65535) is preferred when both work.
    pub fn host_tcp_passive(addr: SocketAddr) -> Self {
        const PASSIVE_HOST: u16 = (4 << 13) | 0x1fff;
        Candidate {
            addr,
            tcp: true,
            kind: CandidateKind::Host,
            priority: candidate_priority(CandidateKind::Host, PASSIVE_HOST, 1),
            foundation: foundation_of(CandidateKind::Host, addr, true),
        }
    }

    /// A candidate of any type for component 1 (e.g. a remote one from signalling).
    pub fn new(
        addr: SocketAddr,
        kind: CandidateKind,
        priority: u32,
        foundation: impl Into<String>,
    ) -> Self {
        Candidate {
            addr,
            tcp: false,
            kind,
            priority,
            foundation: foundation.into(),
        }
    }
}

/// Same type, base IP and transport protocol give the same foundation (RFC 8445 section 5.1.1.3).
fn foundation_of(kind: CandidateKind, addr: SocketAddr, tcp: bool) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind.type_preference() as u8, u8::from(tcp)]);
    match addr.ip() {
        std::net::IpAddr::V4(ip) => h.update(&ip.octets()),
        std::net::IpAddr::V6(ip) => h.update(&ip.octets()),
    }
    h.finalize().to_string()
}

/// A datagram the agent wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Local address to send from.
    pub source: SocketAddr,
    /// Remote address to send to.
    pub destination: SocketAddr,
    /// The STUN message.
    pub contents: Vec<u8>,
}

/// Connection state of the agent (see the module docs for transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceState {
    /// Waiting for remote credentials and candidates.
    New,
    /// Running connectivity checks.
    Checking,
    /// A pair is nominated and consent is fresh.
    Connected,
    /// Consent responses are late; consent has not expired yet.
    Disconnected,
    /// All pairs failed or consent expired. Final.
    Failed,
    /// Closed by the owner. Final.
    Closed,
}

/// Something the owner should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IceEvent {
    /// The state changed.
    StateChanged(IceState),
    /// The nominated pair (also when it changes).
    SelectedPair {
        /// Our address.
        local: SocketAddr,
        /// The peer's address.
        remote: SocketAddr,
    },
}

/// Why the agent ignored a STUN message. Requests dropped this way get no error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IceDrop {
    /// The datagram is not valid STUN ([`IceAgent::handle_datagram`] only).
    Malformed,
    /// The agent is `Failed` or `Closed`.
    Inactive,
    /// A method other than Binding.
    NotBinding,
    /// A comprehension-required attribute we do not know (RFC 8489 would answer 420).
    UnknownAttribute,
    /// A request without USERNAME.
    MissingUsername,
    /// USERNAME does not name our ufrag (or the known remote ufrag).
    BadUsername,
    /// No MESSAGE-INTEGRITY.
    MissingIntegrity,
    /// MESSAGE-INTEGRITY does not verify.
    BadIntegrity,
    /// A check without PRIORITY (RFC 8445 section 7.1.1 requires it).
    MissingPriority,
    /// Arrived on an address that is none of our candidates.
    UnknownLocal,
    /// A response to no transaction of ours (or one already finished).
    UnknownTransaction,
    /// Candidate or pair limit reached; the request was answered but nothing was learned.
    Limit,
}

impl IceDrop {
    /// Number of variants (size of the counter array).
    pub const COUNT: usize = 12;
    /// Every variant, in counter order.
    pub const ALL: [IceDrop; IceDrop::COUNT] = [
        IceDrop::Malformed,
        IceDrop::Inactive,
        IceDrop::NotBinding,
        IceDrop::UnknownAttribute,
        IceDrop::MissingUsername,
        IceDrop::BadUsername,
        IceDrop::MissingIntegrity,
        IceDrop::BadIntegrity,
        IceDrop::MissingPriority,
        IceDrop::UnknownLocal,
        IceDrop::UnknownTransaction,
        IceDrop::Limit,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Timers and limits. The defaults suit a bridge talking to browsers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceConfig {
    /// Pacing of checks, Ta (RFC 8445 section 14.2). Default 50 ms.
    pub ta: Duration,
    /// First retransmission timeout of a check (RFC 8489 section 6.2.1). Default 250 ms; doubles.
    pub rto_initial: Duration,
    /// Cap on the doubled RTO. Default 2 s.
    pub rto_max: Duration,
    /// Requests sent per transaction, first one included. Default 7.
    pub max_requests: u32,
    /// How long the controlling agent waits after the first valid pair for a higher-priority pair
    /// still being checked before it nominates the best valid one. Default 500 ms.
    pub nomination_delay: Duration,
    /// Mean interval between consent checks (RFC 7675 section 5.1), randomised ±20 %. Default 5 s.
    pub consent_interval: Duration,
    /// Consent expires this long after the last authenticated response. Default 30 s.
    pub consent_timeout: Duration,
    /// `Connected` becomes `Disconnected` this long after the last authenticated response. Default 8 s.
    pub disconnected_after: Duration,
    /// With remote credentials but no pair at all, fail after this long. Default 10 s.
    pub no_candidates_timeout: Duration,
    /// Once every pair has failed, wait this long for new (trickled) candidates before failing. Default 2 s.
    pub all_failed_grace: Duration,
    /// Most remote candidates kept (signalled plus peer-reflexive). Default 32.
    pub max_remote_candidates: usize,
    /// Most candidate pairs (RFC 8445 section 6.1.2.5 suggests 100). Default 100.
    pub max_pairs: usize,
}

impl Default for IceConfig {
    fn default() -> Self {
        IceConfig {
            ta: Duration::from_millis(50),
            rto_initial: Duration::from_millis(250),
            rto_max: Duration::from_secs(2),
            max_requests: 7,
            nomination_delay: Duration::from_millis(500),
            consent_interval: Duration::from_secs(5),
            consent_timeout: Duration::from_secs(30),
            disconnected_after: Duration::from_secs(8),
            no_candidates_timeout: Duration::from_secs(10),
            all_failed_grace: Duration::from_secs(2),
            max_remote_candidates: 32,
            max_pairs: 100,
        }
    }
}
