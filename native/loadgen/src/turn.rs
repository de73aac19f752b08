//! A TURN client (RFC 8656) for one load-generator endpoint, sans-IO: it allocates a UDP relay on a
//! TURN server with long-term credentials (RFC 8489 section 9.2: MESSAGE-INTEGRITY keyed with
//! MD5(username ":" realm ":" password), HMAC-SHA1 through OpenSSL), binds one channel to the bridge
//! (which also installs the permission, RFC 8656 section 12), and keeps both alive with Refresh and
//! ChannelBind before they expire. Once [`TurnClient::is_ready`], the endpoint's datagrams to the
//! bridge travel as ChannelData (section 12.4: a 4-byte header) to the server, and the server's
//! ChannelData are the bridge's datagrams.
//!
//! One transaction at a time; requests are retransmitted (500 ms, doubling) up to [`MAX_TRIES`] times.
//! A 401 or 438 (stale nonce) answer is retried once with the realm and nonce it carries; any other
//! error, or a server that never answers, fails the client with the reason.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openssl::hash::{hash, MessageDigest};
use sluice_core::stun::{attr, decode_xor_address, StunClass, StunMessage, StunWriter};

pub const ALLOCATE: u16 = 0x003;
pub const REFRESH: u16 = 0x004;
pub const CHANNEL_BIND: u16 = 0x009;

/// RFC 8656 section 18 attribute types.
pub mod turn_attr {
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
}

/// The one channel each client binds (0x4000..=0x4FFF are channel numbers).
pub const CHANNEL: u16 = 0x4000;
/// First retransmission timeout; doubled each time.
const RTO: Duration = Duration::from_millis(500);
pub const MAX_TRIES: u32 = 5;
/// RFC 8656: a permission lasts 300 s and a channel 600 s; re-binding refreshes both.
const REBIND_EVERY: Duration = Duration::from_secs(240);
/// The allocation's lifetime when the server names none (RFC 8656 section 3.2: 10 minutes).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// Where the TURN server is and who we are to it (TURN REST credentials work as any other).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnConfig {
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnState {
    Allocating,
    Binding,
    Ready,
    Failed(String),
}

struct Tx {
    tid: [u8; 12],
    method: u16,
    bytes: Vec<u8>,
    next_at: Instant,
    rto: Duration,
    tries: u32,
    /// A 401/438 was answered once for this request already.
    retried_auth: bool,
}

pub struct TurnClient {
    config: TurnConfig,
    peer: SocketAddr,
    realm: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
    key: Option<[u8; 16]>,
    state: TurnState,
    tx: Option<Tx>,
    relayed: Option<SocketAddr>,
    refresh_at: Option<Instant>,
    rebind_at: Option<Instant>,
    out: Vec<Vec<u8>>,
    /// Requests sent (first tries) and retransmissions.
    pub requests: u64,
    pub retransmits: u64,
}

/// The ChannelData header (RFC 8656 section 12.4): channel number, then the data's length.
pub fn channel_data_header(channel: u16, len: usize) -> [u8; 4] {
    let [c0, c1] = channel.to_be_bytes();
    let [l0, l1] = (len as u16).to_be_bytes();
    [c0, c1, l0, l1]
}

/// A ChannelData message: its channel and the length of the data after the 4-byte header. None for
/// anything else, or a length the datagram does not hold (over UDP the padding is optional).
pub fn parse_channel_data(buf: &[u8]) -> Option<(u16, usize)> {
    let [c0, c1, l0, l1, ..] = *buf else {
        return None;
    };
    let channel = u16::from_be_bytes([c0, c1]);
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    ((0x4000..=0x4FFF).contains(&channel) && buf.len() >= 4 + len).then_some((channel, len))
}

/// RFC 8489 section 9.2.2: the long-term key with the MD5 password algorithm.
pub fn long_term_key(username: &str, realm: &[u8], password: &str) -> [u8; 16] {
    let mut input = Vec::with_capacity(username.len() + realm.len() + password.len() + 2);
    input.extend_from_slice(username.as_bytes());
    input.push(b':');
    input.extend_from_slice(realm);
    input.push(b':');
    input.extend_from_slice(password.as_bytes());
    let mut key = [0u8; 16];
    // MD5 is in every OpenSSL build TURN servers are tested with; a failure leaves a key no server
    // accepts, which fails the allocation with coturn's 401.
    if let Ok(d) = hash(MessageDigest::md5(), &input) {
        key.copy_from_slice(&d);
    }
    key
}

impl TurnClient {
    /// A client that will relay to `peer` through `config.server`.
    pub fn new(config: TurnConfig, peer: SocketAddr) -> Self {
        TurnClient {
            config,
            peer,
            realm: None,
            nonce: None,
            key: None,
            state: TurnState::Allocating,
            tx: None,
            relayed: None,
            refresh_at: None,
            rebind_at: None,
            out: Vec::new(),
            requests: 0,
            retransmits: 0,
        }
    }

    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn state(&self) -> &TurnState {
        &self.state
    }

    pub fn is_ready(&self) -> bool {
        self.state == TurnState::Ready
    }

    /// The relayed transport address the server allocated (what the bridge sees us as).
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    /// Sends the first Allocate (without credentials: the server's 401 names its realm and nonce).
    pub fn start(&mut self, now: Instant) {
        self.request(now, ALLOCATE);
    }

    /// A STUN message from the server.
    pub fn handle(&mut self, now: Instant, msg: &StunMessage<'_>) {
        let Some(tx) = &self.tx else {
            return;
        };
        if msg.transaction_id() != tx.tid || msg.method() != tx.method {
            return; // a late answer to a retransmitted or finished request
        }
        let (method, retried_auth) = (tx.method, tx.retried_auth);
        match msg.class() {
            StunClass::SuccessResponse => {
                // An authenticated request's answer must be authenticated with the same key.
                if let Some(key) = self.key {
                    if !msg.has_integrity() || !msg.verify_integrity(&key) {
                        return;
                    }
                }
                self.tx = None;
                self.on_success(now, method, msg);
            }
            StunClass::ErrorResponse => {
                let code = msg.error_code().unwrap_or(0);
                let realm = msg.attribute(attr::REALM);
                let nonce = msg.attribute(attr::NONCE);
                if matches!(code, 401 | 438) && !retried_auth && nonce.is_some() {
                    if let Some(r) = realm {
                        self.realm = Some(r.to_vec());
                    }
                    self.nonce = nonce.map(<[u8]>::to_vec);
                    if let Some(r) = &self.realm {
                        self.key = Some(long_term_key(
                            &self.config.username,
                            r,
                            &self.config.password,
                        ));
                    }
                    self.tx = None;
                    self.request(now, method);
                    if let Some(tx) = &mut self.tx {
                        tx.retried_auth = true;
                    }
                    return;
                }
                self.tx = None;
                self.fail(format!(
                    "TURN {} refused: error {code}",
                    method_name(method)
                ));
            }
            _ => {}
        }
    }

    fn on_success(&mut self, now: Instant, method: u16, msg: &StunMessage<'_>) {
        let tid = msg.transaction_id();
        match method {
            ALLOCATE => {
                self.relayed = msg
                    .attribute(turn_attr::XOR_RELAYED_ADDRESS)
                    .and_then(|v| decode_xor_address(v, &tid));
                if self.relayed.is_none() {
                    self.fail("TURN Allocate answered without XOR-RELAYED-ADDRESS".into());
                    return;
                }
                self.refresh_at = Some(now + lifetime_of(msg) / 2);
                self.state = TurnState::Binding;
                self.request(now, CHANNEL_BIND);
            }
            CHANNEL_BIND => {
                self.state = TurnState::Ready;
                self.rebind_at = Some(now + REBIND_EVERY);
            }
            REFRESH => self.refresh_at = Some(now + lifetime_of(msg) / 2),
            _ => {}
        }
    }

    /// Retransmissions, and the Refresh and ChannelBind that keep the relay.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, TurnState::Failed(_)) {
            return;
        }
        if let Some(tx) = &mut self.tx {
            if now < tx.next_at {
                return;
            }
            if tx.tries >= MAX_TRIES {
                let name = method_name(tx.method);
                self.tx = None;
                self.fail(format!(
                    "TURN server {} did not answer {name}",
                    self.config.server
                ));
                return;
            }
            tx.tries += 1;
            tx.rto *= 2;
            tx.next_at = now + tx.rto;
            self.out.push(tx.bytes.clone());
            self.retransmits += 1;
            return;
        }
        if self.refresh_at.is_some_and(|at| at <= now) {
            self.refresh_at = None;
            self.request(now, REFRESH);
        } else if self.rebind_at.is_some_and(|at| at <= now) {
            self.rebind_at = None;
            self.request(now, CHANNEL_BIND);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, TurnState::Failed(_)) {
            return None;
        }
        if let Some(tx) = &self.tx {
            return Some(tx.next_at);
        }
        match (self.refresh_at, self.rebind_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next message to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.remove(0))
        }
    }

    fn fail(&mut self, reason: String) {
        self.state = TurnState::Failed(reason);
        self.refresh_at = None;
        self.rebind_at = None;
    }

    fn request(&mut self, now: Instant, method: u16) {
        let mut tid = [0u8; 12];
        // A failed RAND leaves a zero transaction id: still a valid request.
        let _ = openssl::rand::rand_bytes(&mut tid);
        let mut bytes = Vec::with_capacity(160);
        let mut w = StunWriter::new(&mut bytes, StunClass::Request, method, tid);
        match method {
            ALLOCATE => {
                // UDP (protocol 17) in the first byte, the rest reserved.
                w.attribute(turn_attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            }
            CHANNEL_BIND => {
                let [c0, c1] = CHANNEL.to_be_bytes();
                w.attribute(turn_attr::CHANNEL_NUMBER, &[c0, c1, 0, 0]);
                w.xor_address(turn_attr::XOR_PEER_ADDRESS, self.peer);
            }
            REFRESH => {
                w.attribute(
                    turn_attr::LIFETIME,
                    &(DEFAULT_LIFETIME.as_secs() as u32).to_be_bytes(),
                );
            }
            _ => {}
        }
        if let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) {
            w.username(self.config.username.as_bytes());
            w.attribute(attr::REALM, realm);
            w.attribute(attr::NONCE, nonce);
        }
        w.finish(self.key.as_ref().map(<[u8; 16]>::as_slice));
        self.out.push(bytes.clone());
        self.requests += 1;
        self.tx = Some(Tx {
            tid,
            method,
            bytes,
            next_at: now + RTO,
            rto: RTO,
            tries: 1,
            retried_auth: false,
        });
    }
}

fn lifetime_of(msg: &StunMessage<'_>) -> Duration {
    msg.attribute(turn_attr::LIFETIME)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map(|v| Duration::from_secs(u64::from(u32::from_be_bytes(v)).max(60)))
        .unwrap_or(DEFAULT_LIFETIME)
}

fn method_name(method: u16) -> &'static str {
    match method {
        ALLOCATE => "Allocate",
        REFRESH => "Refresh",
        CHANNEL_BIND => "ChannelBind",
        _ => "request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "192.0.2.1:3478";
    const PEER: &str = "198.51.100.7:10000";

    fn client() -> TurnClient {
        TurnClient::new(
            TurnConfig {
                server: SERVER.parse().expect("literal"),
                username: "1700000000:lg".into(),
                password: "secret-pass".into(),
            },
            PEER.parse().expect("literal"),
        )
    }

    /// The server's answer to the request `sent` (class, extra attributes, integrity key).
    fn answer(
        sent: &[u8],
        class: StunClass,
        attrs: &[(u16, Vec<u8>)],
        key: Option<&[u8]>,
    ) -> Vec<u8> {
        let req = StunMessage::parse(sent).expect("request parses");
        let mut out = Vec::new();
        let mut w = StunWriter::new(&mut out, class, req.method(), req.transaction_id());
        for (t, v) in attrs {
            w.attribute(*t, v);
        }
        w.finish(key);
        out
    }

    #[test]
    fn rfc8489_9_2_2_the_long_term_key_is_md5_of_user_realm_and_password() {
        // MD5("user:realm:pass") computed independently (coreutils md5sum).
        let key = long_term_key("user", b"realm", "pass");
        assert_eq!(
            key,
            [
                0x84, 0x93, 0xfb, 0xc5, 0x3b, 0xa5, 0x82, 0xfb, 0x4c, 0x04, 0x4c, 0x45, 0x6b, 0xdc,
                0x40, 0xeb
            ]
        );
    }

    #[test]
    fn rfc8656_12_4_channel_data_framing() {
        assert_eq!(channel_data_header(0x4000, 5), [0x40, 0x00, 0x00, 0x05]);
        assert_eq!(
            parse_channel_data(&[0x40, 0x00, 0, 2, 7, 8]),
            Some((0x4000, 2))
        );
        // Padded over UDP: the extra bytes are not data.
        assert_eq!(
            parse_channel_data(&[0x4f, 0xff, 0, 1, 7, 0, 0, 0]),
            Some((0x4fff, 1))
        );
        assert_eq!(
            parse_channel_data(&[0x40, 0x00, 0, 9, 7]),
            None,
            "shorter than it says"
        );
        assert_eq!(
            parse_channel_data(&[0x50, 0x00, 0, 0]),
            None,
            "not a channel number"
        );
        assert_eq!(parse_channel_data(&[0x00, 0x01, 0, 0]), None, "STUN");
        assert_eq!(parse_channel_data(&[0x40]), None);
    }

    #[test]
    fn allocates_after_the_challenge_binds_the_channel_and_keeps_both_alive() {
        let mut c = client();
        let t0 = Instant::now();
        c.start(t0);
        let first = c.poll_transmit().expect("allocate");
        let msg = StunMessage::parse(&first).expect("parses");
        assert_eq!((msg.method(), msg.has_integrity()), (ALLOCATE, false));
        assert_eq!(
            msg.attribute(turn_attr::REQUESTED_TRANSPORT),
            Some(&[17u8, 0, 0, 0][..])
        );

        // 401 with realm and nonce: the same request again, authenticated.
        let challenge = answer(
            &first,
            StunClass::ErrorResponse,
            &[
                (attr::ERROR_CODE, vec![0, 0, 4, 1]),
                (attr::REALM, b"sluice".to_vec()),
                (attr::NONCE, b"n0nce".to_vec()),
            ],
            None,
        );
        c.handle(t0, &StunMessage::parse(&challenge).expect("parses"));
        let second = c.poll_transmit().expect("allocate again");
        let key = long_term_key("1700000000:lg", b"sluice", "secret-pass");
        let msg = StunMessage::parse(&second).expect("parses");
        assert_eq!(msg.username(), Some(&b"1700000000:lg"[..]));
        assert_eq!(msg.attribute(attr::NONCE), Some(&b"n0nce"[..]));
        assert!(msg.verify_integrity(&key));

        // An unauthenticated success is not believed.
        let relayed: SocketAddr = "192.0.2.1:50000".parse().expect("literal");
        let tid = msg.transaction_id();
        let mut xor = Vec::new();
        StunWriter::new(&mut xor, StunClass::SuccessResponse, ALLOCATE, tid)
            .xor_address(turn_attr::XOR_RELAYED_ADDRESS, relayed);
        let relayed_attr = xor[24..].to_vec();
        let attrs = [
            (turn_attr::XOR_RELAYED_ADDRESS, relayed_attr),
            (turn_attr::LIFETIME, 600u32.to_be_bytes().to_vec()),
        ];
        let forged = answer(&second, StunClass::SuccessResponse, &attrs, None);
        c.handle(t0, &StunMessage::parse(&forged).expect("parses"));
        assert_eq!(c.state(), &TurnState::Allocating);
        let ok = answer(&second, StunClass::SuccessResponse, &attrs, Some(&key));
        c.handle(t0, &StunMessage::parse(&ok).expect("parses"));
        assert_eq!(
            (c.state(), c.relayed()),
            (&TurnState::Binding, Some(relayed))
        );

        let bind = c.poll_transmit().expect("channel bind");
        let msg = StunMessage::parse(&bind).expect("parses");
        assert_eq!(msg.method(), CHANNEL_BIND);
        assert_eq!(
            msg.attribute(turn_attr::CHANNEL_NUMBER),
            Some(&[0x40u8, 0, 0, 0][..])
        );
        let peer = msg
            .attribute(turn_attr::XOR_PEER_ADDRESS)
            .and_then(|v| decode_xor_address(v, &msg.transaction_id()));
        assert_eq!(peer, Some(PEER.parse().expect("literal")));
        let ok = answer(&bind, StunClass::SuccessResponse, &[], Some(&key));
        c.handle(t0, &StunMessage::parse(&ok).expect("parses"));
        assert!(c.is_ready());

        // The channel is bound again before its permission (300 s) lapses; the allocation is
        // refreshed at half its lifetime.
        assert_eq!(c.poll_timeout(), Some(t0 + REBIND_EVERY));
        c.handle_timeout(t0 + REBIND_EVERY);
        let rebind = c.poll_transmit().expect("rebind");
        assert_eq!(
            StunMessage::parse(&rebind).map(|m| m.method()),
            Ok(CHANNEL_BIND)
        );
        let ok = answer(&rebind, StunClass::SuccessResponse, &[], Some(&key));
        c.handle(t0 + REBIND_EVERY, &StunMessage::parse(&ok).expect("parses"));
        c.handle_timeout(t0 + Duration::from_secs(300));
        let refresh = c.poll_transmit().expect("refresh");
        assert_eq!(
            StunMessage::parse(&refresh).map(|m| m.method()),
            Ok(REFRESH)
        );
    }

    #[test]
    fn refused_credentials_and_a_silent_server_fail_with_the_reason() {
        let mut c = client();
        let t0 = Instant::now();
        c.start(t0);
        let first = c.poll_transmit().expect("allocate");
        let challenge = |sent: &[u8]| {
            answer(
                sent,
                StunClass::ErrorResponse,
                &[
                    (attr::ERROR_CODE, vec![0, 0, 4, 1]),
                    (attr::REALM, b"r".to_vec()),
                    (attr::NONCE, b"n".to_vec()),
                ],
                None,
            )
        };
        c.handle(t0, &StunMessage::parse(&challenge(&first)).expect("parses"));
        let second = c.poll_transmit().expect("again");
        c.handle(
            t0,
            &StunMessage::parse(&challenge(&second)).expect("parses"),
        );
        assert_eq!(
            c.state(),
            &TurnState::Failed("TURN Allocate refused: error 401".into())
        );
        assert!(c.poll_transmit().is_none() && c.poll_timeout().is_none());

        let mut c = client();
        c.start(t0);
        let mut now = t0;
        while let Some(at) = c.poll_timeout() {
            now = at;
            c.handle_timeout(now);
        }
        assert!(
            matches!(c.state(), TurnState::Failed(r) if r.contains("did not answer")),
            "{:?}",
            c.state()
        );
        assert_eq!((c.requests, c.retransmits), (1, u64::from(MAX_TRIES) - 1));
        assert!(
            now - t0 < Duration::from_secs(20),
            "gave up after {:?}",
            now - t0
        );
    }
}
