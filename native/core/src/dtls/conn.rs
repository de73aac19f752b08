//! `DtlsConn`: one DTLS association driven by datagrams and the caller's clock.

use std::collections::VecDeque;
use std::os::raw::c_uint;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{ErrorCode, Ssl, SslRef, SslStream};
use openssl::x509::{X509Ref, X509StoreContext, X509StoreContextRef, X509VerifyResult};
use openssl_sys as ffi;

use super::cert::srtp_profile_list;
use super::channel::MemoryChannel;
use super::record::{self, MAX_FRAGMENT_LEN, RECORD_HEADER_LEN};
use super::{
    timer, DtlsCert, DtlsConfig, DtlsError, DtlsEvent, DtlsRole, DtlsSrtpProfile, Fingerprint,
    SrtpKeyingMaterial,
};

/// RFC 5764 section 4.2: the exporter label for DTLS-SRTP keys.
const EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// OpenSSL refuses a DTLS MTU below 256 bytes (its smallest "probable MTU").
const OPENSSL_MIN_MTU: usize = 256;

/// RFC 6347 section 4.2.4.1: back off by doubling up to at least 60 s.
const MAX_RETRANSMIT_US: c_uint = 60_000_000;

/// Largest datagram we pass to OpenSSL: one maximal record. Several records share a datagram
/// only when they fit a path MTU, far below this.
const MAX_DATAGRAM_LEN: usize = RECORD_HEADER_LEN + MAX_FRAGMENT_LEN;

/// Scratch space for draining records after the handshake. Sluice sends no DTLS application
/// data; anything read is counted and dropped.
const READ_SCRATCH_LEN: usize = 2048;

/// Per-SSL data the OpenSSL callbacks need (they only get the `SSL*`).
pub(crate) struct ConnData {
    remote_fingerprints: Vec<Fingerprint>,
    initial_retransmit_us: c_uint,
}

/// The ex_data slot holding `ConnData`, allocated once per process.
fn conn_data_index() -> Result<Index<Ssl, ConnData>, ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, ConnData>> = OnceLock::new();
    if let Some(index) = INDEX.get() {
        return Ok(*index);
    }
    // Two threads may race here and each allocate a slot; one is then unused, which is harmless.
    let index = Ssl::new_ex_index::<ConnData>()?;
    Ok(*INDEX.get_or_init(|| index))
}

fn matches_any(cert: &X509Ref, fingerprints: &[Fingerprint]) -> bool {
    fingerprints.iter().any(|fp| fp.matches(cert))
}

/// Certificate verify callback (set on every context): a chain is accepted when its leaf
/// matches one of the fingerprints the remote announced; self-signed is normal and CA trust
/// plays no part (RFC 5763 section 5, RFC 8122 section 5). Intermediate certificates are not
/// judged. A mismatch aborts the handshake inside OpenSSL, before any key is derived.
pub(crate) fn verify_peer_fingerprint(_preverify_ok: bool, ctx: &mut X509StoreContextRef) -> bool {
    if ctx.error_depth() != 0 {
        return true;
    }
    let matched = (|| {
        let ssl = ctx.ex_data(X509StoreContext::ssl_idx().ok()?)?;
        let data = ssl.ex_data(conn_data_index().ok()?)?;
        let leaf = ctx.current_cert()?;
        Some(matches_any(leaf, &data.remote_fingerprints))
    })()
    .unwrap_or(false);
    if !matched {
        ctx.set_error(X509VerifyResult::APPLICATION_VERIFICATION);
    }
    matched
}

/// `DTLS_timer_cb`: our initial timeout on a fresh flight (`timer_us == 0`), then doubling.
unsafe extern "C" fn retransmit_timer_cb(ssl: *mut ffi::SSL, timer_us: c_uint) -> c_uint {
    if timer_us != 0 {
        return timer_us.saturating_mul(2).min(MAX_RETRANSMIT_US);
    }
    // SAFETY: OpenSSL passes the SSL whose timer it is starting; it is live during the call and
    // we only read from it.
    let ssl = unsafe { SslRef::from_ptr(ssl) };
    conn_data_index()
        .ok()
        .and_then(|index| ssl.ex_data(index))
        .map_or(micros(super::DEFAULT_INITIAL_RETRANSMIT), |data| {
            data.initial_retransmit_us
        })
}

/// Floor for the first timeout. OpenSSL counts a timer with under 15 ms left as expired and
/// then resends on its next read, doubling each time; from 1 ms that is at most four resends,
/// well inside its limit of 12 before it gives up.
const MIN_RETRANSMIT_US: c_uint = 1_000;

fn micros(d: Duration) -> c_uint {
    c_uint::try_from(d.as_micros())
        .unwrap_or(MAX_RETRANSMIT_US)
        .clamp(MIN_RETRANSMIT_US, MAX_RETRANSMIT_US)
}

fn profile_from_id(id: SrtpProfileId) -> Option<DtlsSrtpProfile> {
    if id == SrtpProfileId::SRTP_AEAD_AES_128_GCM {
        Some(DtlsSrtpProfile::AeadAes128Gcm)
    } else if id == SrtpProfileId::SRTP_AES128_CM_SHA1_80 {
        Some(DtlsSrtpProfile::Aes128CmSha1_80)
    } else {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Created; client waits for `start`, server for `start` or the first ClientHello.
    Idle,
    Handshaking,
    Connected,
    /// Closed by us or the peer; the queued close_notify may still be polled.
    Closed,
    /// Dead after an error; a queued alert may still be polled.
    Failed,
}

/// One DTLS 1.2 association with use_srtp, sans-IO.
///
/// Feed it datagrams and timeouts, drain `poll_transmit` and `poll_event` after each call.
/// After `Closed` or `Failed` every input is ignored; already queued output can still be polled.
pub struct DtlsConn {
    stream: SslStream<MemoryChannel>,
    role: DtlsRole,
    state: State,
    events: VecDeque<DtlsEvent>,
    /// The retransmission deadline on the caller's clock.
    timeout: Option<Instant>,
    dropped_records: u64,
    /// Server only: no ClientHello has been handed to OpenSSL yet.
    awaiting_client_hello: bool,
}

impl std::fmt::Debug for DtlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsConn")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("timeout", &self.timeout)
            .field("dropped_records", &self.dropped_records)
            .finish()
    }
}

impl DtlsConn {
    /// remote_fingerprints: every fingerprint the remote announced (any supported one must match).
    pub fn new(
        cert: &DtlsCert,
        role: DtlsRole,
        remote_fingerprints: Vec<Fingerprint>,
    ) -> Result<Self, DtlsError> {
        Self::with_config(cert, role, remote_fingerprints, &DtlsConfig::default())
    }

    /// Like [`DtlsConn::new`] with explicit settings (profiles, first retransmit timeout, MTU).
    pub fn with_config(
        cert: &DtlsCert,
        role: DtlsRole,
        remote_fingerprints: Vec<Fingerprint>,
        config: &DtlsConfig,
    ) -> Result<Self, DtlsError> {
        if config.srtp_profiles.is_empty() {
            return Err(DtlsError::NoSrtpProfile);
        }
        let err = |e: ErrorStack| DtlsError::Cert(e.to_string());
        // The context (certificate, suites, verify callback) is shared by every connection of
        // this certificate; only per-connection state is set here.
        let mut ssl = Ssl::new(cert.context()).map_err(err)?;
        match role {
            DtlsRole::Client => ssl.set_connect_state(),
            DtlsRole::Server => ssl.set_accept_state(),
        }
        if config.srtp_profiles != DtlsSrtpProfile::DEFAULT {
            ssl.set_tlsext_use_srtp(&srtp_profile_list(&config.srtp_profiles))
                .map_err(err)?;
        }
        ssl.set_ex_data(
            conn_data_index().map_err(err)?,
            ConnData {
                remote_fingerprints,
                initial_retransmit_us: micros(config.initial_retransmit),
            },
        );
        let stream = SslStream::new(ssl, MemoryChannel::new(config.mtu)).map_err(err)?;
        timer::set_timer_cb(stream.ssl(), retransmit_timer_cb);
        let mut conn = DtlsConn {
            stream,
            role,
            state: State::Idle,
            events: VecDeque::new(),
            timeout: None,
            dropped_records: 0,
            awaiting_client_hello: role == DtlsRole::Server,
        };
        conn.set_mtu(config.mtu);
        Ok(conn)
    }

    /// Our role.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// Replaces the remote's fingerprints (Jingle may update them). Takes effect for a
    /// certificate not yet checked, so call it before the peer's Certificate arrives.
    pub fn set_remote_fingerprints(&mut self, fps: Vec<Fingerprint>) {
        if matches!(self.state, State::Closed | State::Failed) {
            return;
        }
        let Ok(index) = conn_data_index() else {
            return;
        };
        // SAFETY: the pointer comes from our own live `SslStream`, and `&mut self` guarantees no
        // other reference to that SSL exists while this one is used.
        let ssl = unsafe { SslRef::from_ptr_mut(self.stream.ssl().as_ptr()) };
        if let Some(data) = ssl.ex_data_mut(index) {
            data.remote_fingerprints = fps;
        }
    }

    /// Client: starts the handshake (queues the ClientHello). Server: waits. Call once the ICE path exists.
    pub fn start(&mut self, now: Instant) {
        if self.state != State::Idle {
            return;
        }
        self.state = State::Handshaking;
        if self.role == DtlsRole::Client {
            self.drive();
        }
        self.after_io(now);
    }

    /// One DTLS record datagram (may hold several records).
    ///
    /// A server accepts a ClientHello even before `start`, and nothing but a ClientHello until
    /// its first one; a client ignores datagrams until `start`. Malformed framing is counted in
    /// [`DtlsConn::dropped_records`] and not shown to OpenSSL. During the handshake OpenSSL
    /// judges well-framed records and may fail the handshake on a bad one (`Failed`); after
    /// `Connected` bad records are discarded.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        let accepting = match self.state {
            State::Closed | State::Failed => false,
            State::Idle => self.role == DtlsRole::Server,
            State::Handshaking | State::Connected => true,
        };
        if !accepting || datagram.len() > MAX_DATAGRAM_LEN {
            self.dropped_records += 1;
            return;
        }
        let (valid, error) = record::valid_prefix(datagram);
        if error.is_some() {
            self.dropped_records += 1;
        }
        let Some(records) = datagram.get(..valid).filter(|r| !r.is_empty()) else {
            return;
        };
        if self.awaiting_client_hello {
            // A server that has not seen a ClientHello has no state worth risking: stray or
            // injected records before it are dropped instead of letting OpenSSL abort on them.
            if !record::starts_with_client_hello(records) {
                self.dropped_records += 1;
                return;
            }
            self.awaiting_client_hello = false;
        }
        if self.state == State::Idle {
            self.state = State::Handshaking;
        }
        self.stream.get_mut().push_rx(records);
        self.drive();
        if self.stream.get_mut().discard_rx() {
            // OpenSSL stopped (failure, close) before reading it.
            self.dropped_records += 1;
        }
        self.after_io(now);
    }

    /// Retransmission (RFC 6347 4.2.4): call at or after `poll_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !matches!(self.state, State::Handshaking | State::Connected) {
            return;
        }
        if self.timeout.is_none_or(|deadline| now < deadline) {
            return;
        }
        if timer::handle_timeout(self.stream.ssl()) < 0 {
            // Drain OpenSSL's thread-local error queue so it cannot leak into later calls.
            let _ = ErrorStack::get();
            self.fail(DtlsError::Timeout);
        }
        self.after_io(now);
    }

    /// One datagram to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stream.get_mut().pop_tx()
    }

    /// When to call `handle_timeout` next, on the caller's clock.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Handshaking | State::Connected => self.timeout,
            State::Idle | State::Closed | State::Failed => None,
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// True between `Connected` and close or failure.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Queue close_notify (if the handshake got far enough to send one) and stop.
    pub fn close(&mut self) {
        match self.state {
            State::Handshaking | State::Connected => {
                // During the handshake OpenSSL declines; nothing is sent then.
                if self.stream.shutdown().is_err() {
                    let _ = ErrorStack::get();
                }
            }
            State::Idle => {}
            State::Closed | State::Failed => return,
        }
        self.state = State::Closed;
        self.timeout = None;
        self.stream.get_mut().finish_datagram();
    }

    /// Default 1200: each outgoing datagram <= mtu. OpenSSL cannot go below 256 bytes; a smaller
    /// value is raised to 256 for OpenSSL's fragmenting.
    pub fn set_mtu(&mut self, mtu: usize) {
        let mtu = mtu.max(OPENSSL_MIN_MTU);
        self.stream.get_mut().set_mtu(mtu);
        if !timer::set_mtu(self.stream.ssl(), mtu) {
            let _ = ErrorStack::get();
        }
    }

    /// Received datagrams (or trailing parts of them) not handed to OpenSSL: malformed or
    /// oversized framing, arrivals before `start` (client), anything but a ClientHello before
    /// the first one (server), arrivals after close/failure, and DTLS application data records
    /// (Sluice sends none). Records OpenSSL itself discards (bad MAC,
    /// replays, stale epochs) are not visible here.
    pub fn dropped_records(&self) -> u64 {
        self.dropped_records
    }

    /// Advances OpenSSL with whatever input is queued.
    fn drive(&mut self) {
        if self.state == State::Handshaking {
            match self.stream.do_handshake() {
                Ok(()) => self.on_handshake_done(),
                Err(e) => match e.code() {
                    ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => {}
                    ErrorCode::ZERO_RETURN => self.on_peer_close(),
                    _ => {
                        let error = if self.stream.ssl().verify_result()
                            == X509VerifyResult::APPLICATION_VERIFICATION
                        {
                            DtlsError::FingerprintMismatch
                        } else {
                            DtlsError::Handshake(e.to_string())
                        };
                        self.fail(error);
                    }
                },
            }
        }
        if self.state == State::Connected {
            self.read_records();
        }
    }

    /// After the handshake: retransmitted flights (answered by OpenSSL), alerts, close_notify.
    fn read_records(&mut self) {
        let mut scratch = [0u8; READ_SCRATCH_LEN];
        loop {
            match self.stream.ssl_read(&mut scratch) {
                Ok(_) => self.dropped_records += 1,
                Err(e) => {
                    match e.code() {
                        ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => {}
                        ErrorCode::ZERO_RETURN => self.on_peer_close(),
                        _ => self.fail(DtlsError::Protocol(e.to_string())),
                    }
                    return;
                }
            }
        }
    }

    fn on_handshake_done(&mut self) {
        match self.keying_material() {
            Ok(material) => {
                self.state = State::Connected;
                self.events.push_back(DtlsEvent::Connected(material));
            }
            Err(error) => {
                // The handshake itself succeeded, so the peer thinks we are connected: tell it.
                if self.stream.shutdown().is_err() {
                    let _ = ErrorStack::get();
                }
                self.fail(error);
            }
        }
    }

    /// Checks the peer again (the verify callback already did) and exports the SRTP keys.
    fn keying_material(&self) -> Result<SrtpKeyingMaterial, DtlsError> {
        let ssl = self.stream.ssl();
        // Defense in depth: the verify callback should have refused already, but a handshake
        // without a peer certificate or a matching fingerprint must never yield keys.
        let index = conn_data_index().map_err(|e| DtlsError::Handshake(e.to_string()))?;
        let peer_ok = match (ssl.peer_certificate(), ssl.ex_data(index)) {
            (Some(cert), Some(data)) => matches_any(&cert, &data.remote_fingerprints),
            _ => false,
        };
        if !peer_ok {
            return Err(DtlsError::FingerprintMismatch);
        }
        let profile = ssl
            .selected_srtp_profile()
            .and_then(|p| profile_from_id(p.id()))
            .ok_or(DtlsError::NoSrtpProfile)?;

        // RFC 5764 section 4.2: 2 * (key + salt) bytes, laid out as
        // client_write_SRTP_master_key | server_write_SRTP_master_key |
        // client_write_SRTP_master_salt | server_write_SRTP_master_salt
        let (key_len, salt_len) = (profile.key_len(), profile.salt_len());
        let mut material = [0u8; 2 * (16 + 14)];
        let material = material
            .get_mut(..2 * (key_len + salt_len))
            .ok_or(DtlsError::NoSrtpProfile)?;
        ssl.export_keying_material(material, EXPORTER_LABEL, None)
            .map_err(|e| DtlsError::Handshake(e.to_string()))?;
        let (client_key, rest) = material.split_at(key_len);
        let (server_key, rest) = rest.split_at(key_len);
        let (client_salt, server_salt) = rest.split_at(salt_len);
        let (local_key, local_salt, remote_key, remote_salt) = match self.role {
            DtlsRole::Client => (client_key, client_salt, server_key, server_salt),
            DtlsRole::Server => (server_key, server_salt, client_key, client_salt),
        };
        Ok(SrtpKeyingMaterial {
            profile,
            local_key: local_key.to_vec(),
            local_salt: local_salt.to_vec(),
            remote_key: remote_key.to_vec(),
            remote_salt: remote_salt.to_vec(),
        })
    }

    fn on_peer_close(&mut self) {
        // RFC 5246 section 7.2.1: answer close_notify with our own.
        if self.stream.shutdown().is_err() {
            let _ = ErrorStack::get();
        }
        self.state = State::Closed;
        self.timeout = None;
        self.events.push_back(DtlsEvent::Closed);
    }

    fn fail(&mut self, error: DtlsError) {
        self.state = State::Failed;
        self.timeout = None;
        self.events.push_back(DtlsEvent::Failed(error));
    }

    /// Closes the pending datagram and maps OpenSSL's timer onto the caller's clock.
    fn after_io(&mut self, now: Instant) {
        self.stream.get_mut().finish_datagram();
        self.timeout = match self.state {
            State::Handshaking | State::Connected => {
                timer::get_timeout(self.stream.ssl()).map(|left| now + left)
            }
            State::Idle | State::Closed | State::Failed => None,
        };
    }
}
