//! `DtlsConn`: one DTLS association driven by datagrams and the caller's clock.

use std::collections::VecDeque;
use std::os::raw::{c_int, c_uint};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{ErrorCode, ShutdownState, Ssl, SslRef, SslStream};
use openssl::x509::{X509Ref, X509StoreContext, X509StoreContextRef, X509VerifyResult};
use openssl_sys as ffi;

use super::cert::srtp_profile_list;
use super::channel::MemoryChannel;
use super::filter::{RecordFilter, RecordProtection};
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

/// RFC 6347 section 4.1: the handshake's Finished messages are the first records of epoch 1, and
/// with renegotiation disabled (see `cert::build_context`) no later epoch ever starts.
const ESTABLISHED_EPOCH: u16 = 1;

/// ssl.h: `SSL_AD_REASON_OFFSET` (1000). OpenSSL reports a received fatal alert as the error
/// reason 1000 + the alert's description.
const SSL_AD_REASON_OFFSET: c_int = 1000;

/// err.h: `ERR_LIB_SSL` (20), the library of OpenSSL's SSL errors.
const ERR_LIB_SSL: c_int = 20;

/// ssl.h: `SSL_CB_READ_ALERT` = `SSL_CB_ALERT` (0x4000) | `SSL_CB_READ` (0x04).
const SSL_CB_READ_ALERT: c_int = 0x4004;

/// `void (*cb)(const SSL *ssl, int type, int val)`
type InfoCb = unsafe extern "C" fn(ssl: *const ffi::SSL, kind: c_int, value: c_int);

extern "C" {
    // rust-openssl wraps only the context's variant: `void SSL_set_info_callback(SSL *ssl, cb)`.
    fn SSL_set_info_callback(ssl: *mut ffi::SSL, cb: Option<InfoCb>);
}

/// Per-SSL data the OpenSSL callbacks need (they only get the `SSL*`).
pub(crate) struct ConnData {
    remote_fingerprints: Vec<Fingerprint>,
    initial_retransmit_us: c_uint,
    /// Alerts OpenSSL has read, i.e. decrypted and authenticated (it reports nothing else).
    alerts_read: AtomicU32,
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

/// Info callback: counts the alerts OpenSSL accepted. A spoofed alert never gets here, so a
/// count that did not move means OpenSSL discarded the record.
unsafe extern "C" fn info_cb(ssl: *const ffi::SSL, kind: c_int, _value: c_int) {
    if kind != SSL_CB_READ_ALERT {
        return;
    }
    // SAFETY: OpenSSL passes the live SSL it is reading on; we only read its ex_data, whose
    // counter is atomic.
    let ssl = unsafe { SslRef::from_ptr(ssl.cast_mut()) };
    if let Some(data) = conn_data_index().ok().and_then(|index| ssl.ex_data(index)) {
        data.alerts_read.fetch_add(1, Ordering::Relaxed);
    }
}

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

/// How a read on an established association ended.
enum ReadEnd {
    /// OpenSSL wants the next datagram; `app_data` records were read (and dropped).
    WantRead { app_data: u64 },
    /// The peer's authenticated close_notify.
    CloseNotify,
    /// OpenSSL gave up on the association.
    Fatal(openssl::ssl::Error),
}

/// One DTLS 1.2 association with use_srtp, sans-IO.
///
/// Feed it datagrams and timeouts, drain `poll_transmit` and `poll_event` after each call.
/// After `Closed` or `Failed` every input is ignored; already queued output can still be polled.
///
/// Once connected, only the peer's authenticated close_notify (`Closed`) or fatal alert
/// (`Failed(DtlsError::Alert)`) ends it; invalid records are discarded (RFC 6347 section 4.1.2.7).
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
    /// Set when connected: which records OpenSSL may see from then on.
    filter: Option<RecordFilter>,
    /// Connected, but OpenSSL failed on something other than the peer's alert: its SSL object is
    /// dead, so every later record is discarded. The SRTP keys were exported at `Connected`, so
    /// media keeps flowing; only DTLS-level close and alerts can no longer be received.
    read_stopped: bool,
}

impl std::fmt::Debug for DtlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsConn")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("timeout", &self.timeout)
            .field("dropped_records", &self.dropped_records)
            .field("filter", &self.filter)
            .field("read_stopped", &self.read_stopped)
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
                alerts_read: AtomicU32::new(0),
            },
        );
        let stream = SslStream::new(ssl, MemoryChannel::new(config.mtu)).map_err(err)?;
        timer::set_timer_cb(stream.ssl(), retransmit_timer_cb);
        // SAFETY: the SSL is live and owned by `stream`; the callback is a plain function with
        // the C signature OpenSSL expects and lives for the whole program.
        unsafe { SSL_set_info_callback(stream.ssl().as_ptr(), Some(info_cb)) };
        let mut conn = DtlsConn {
            stream,
            role,
            state: State::Idle,
            events: VecDeque::new(),
            timeout: None,
            dropped_records: 0,
            awaiting_client_hello: role == DtlsRole::Server,
            filter: None,
            read_stopped: false,
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

    /// One DTLS record datagram (may hold several records). Returns how many records (or
    /// unparsable remainders) it discarded; they are also added to [`DtlsConn::dropped_records`].
    ///
    /// A server accepts a ClientHello even before `start`, and nothing but a ClientHello until
    /// its first one; a client ignores datagrams until `start`. Malformed framing is discarded
    /// before OpenSSL sees it. During the handshake OpenSSL judges well-framed records and may
    /// fail the handshake on a bad one (`Failed`). After `Connected`, OpenSSL sees only records
    /// that pass the record filter (see the `filter` module), one at a time, and a record it
    /// silently drops (bad MAC, replay) is counted as discarded too.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> u64 {
        let discarded = self.receive(datagram);
        self.dropped_records += discarded;
        self.after_io(now);
        discarded
    }

    fn receive(&mut self, datagram: &[u8]) -> u64 {
        let accepting = match self.state {
            State::Closed | State::Failed => false,
            State::Idle => self.role == DtlsRole::Server,
            // After reading stopped, records are still parsed so each one is counted.
            State::Handshaking | State::Connected => true,
        };
        if !accepting || datagram.len() > MAX_DATAGRAM_LEN {
            return 1;
        }
        let (valid, error) = record::valid_prefix(datagram);
        let mut discarded = u64::from(error.is_some());
        let Some(records) = datagram.get(..valid).filter(|r| !r.is_empty()) else {
            return discarded;
        };
        if self.state == State::Connected {
            return discarded + self.receive_established(records);
        }
        if self.awaiting_client_hello {
            // A server that has not seen a ClientHello has no state worth risking: stray or
            // injected records before it are dropped instead of letting OpenSSL abort on them.
            if !record::starts_with_client_hello(records) {
                return discarded + 1;
            }
            self.awaiting_client_hello = false;
        }
        if self.state == State::Idle {
            self.state = State::Handshaking;
        }
        self.stream.get_mut().push_rx(records);
        discarded += self.drive();
        if self.stream.get_mut().discard_rx() {
            // OpenSSL stopped (failure, close) before reading it.
            discarded += 1;
        }
        discarded
    }

    /// RFC 6347 section 4.1.2.7: after the handshake, each record is either handed to OpenSSL
    /// alone (so its fate is known) or discarded. `records` is a whole number of records.
    fn receive_established(&mut self, records: &[u8]) -> u64 {
        let mut discarded = 0;
        let mut rest = records;
        while let Ok((header, fragment, next)) = record::parse_record(rest) {
            let (record, _) = rest.split_at(rest.len() - next.len());
            rest = next;
            let admitted = self.state == State::Connected
                && !self.read_stopped
                && self
                    .filter
                    .is_some_and(|f| f.admits(&header, fragment.len()));
            if !admitted || !self.read_record(record) {
                discarded += 1;
            }
        }
        discarded
    }

    /// Hands one admitted record to OpenSSL; returns whether OpenSSL showed it was authentic
    /// (it answered it, or read an alert from it). Silently dropped records return false.
    fn read_record(&mut self, record: &[u8]) -> bool {
        let alerts_before = self.alerts_read();
        let mark = self.stream.get_mut().tx_mark();
        self.stream.get_mut().push_rx(record);
        let end = self.read_records();
        // Nothing is left unread unless OpenSSL died first.
        self.stream.get_mut().discard_rx();
        match end {
            ReadEnd::WantRead { app_data } => {
                app_data == 0
                    && (self.alerts_read() != alerts_before
                        || self.stream.get_ref().wrote_since(mark))
            }
            ReadEnd::CloseNotify => {
                self.on_peer_close();
                true
            }
            ReadEnd::Fatal(error) => self.on_established_error(&error, mark),
        }
    }

    fn alerts_read(&self) -> u32 {
        conn_data_index()
            .ok()
            .and_then(|index| self.stream.ssl().ex_data(index))
            .map_or(0, |data| data.alerts_read.load(Ordering::Relaxed))
    }

    /// Retransmission (RFC 6347 4.2.4): call at or after `poll_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.timer_running() || self.timeout.is_none_or(|deadline| now < deadline) {
            return;
        }
        let mark = self.stream.get_mut().tx_mark();
        if timer::handle_timeout(self.stream.ssl()) < 0 {
            // Drain OpenSSL's thread-local error queue so it cannot leak into later calls.
            let _ = ErrorStack::get();
            if self.state == State::Connected {
                // The keys are out: a timer never ends an established association.
                self.stop_reading(mark);
            } else {
                self.fail(DtlsError::Timeout);
            }
        }
        self.after_io(now);
    }

    /// One datagram to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stream.get_mut().pop_tx()
    }

    /// When to call `handle_timeout` next, on the caller's clock.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timeout.filter(|_| self.timer_running())
    }

    /// OpenSSL's retransmission timer matters while handshaking, and after it until reading
    /// stopped (a connected server answers a resent Finished).
    fn timer_running(&self) -> bool {
        match self.state {
            State::Handshaking => true,
            State::Connected => !self.read_stopped,
            State::Idle | State::Closed | State::Failed => false,
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

    /// True once OpenSSL failed on the established association for a reason other than the
    /// peer's alert: it stays connected (the SRTP keys are out) but reads no more records.
    pub fn is_read_stopped(&self) -> bool {
        self.read_stopped
    }

    /// The negotiated cipher suite's IANA number, once the handshake has chosen one.
    pub fn cipher_suite(&self) -> Option<u16> {
        self.stream
            .ssl()
            .current_cipher()
            .map(|c| u16::from_be_bytes(c.protocol_id()))
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

    /// Everything [`DtlsConn::handle_datagram`] discarded so far: malformed or oversized framing,
    /// arrivals before `start` (client), anything but a ClientHello before the first one
    /// (server), arrivals after close/failure or after reading stopped, DTLS application data
    /// (Sluice sends none) and, once connected, records the filter refused or OpenSSL silently
    /// dropped (bad MAC, replays). During the handshake OpenSSL's own silent drops are not
    /// visible here.
    pub fn dropped_records(&self) -> u64 {
        self.dropped_records
    }

    /// Advances OpenSSL with whatever input is queued; returns the records it discarded.
    fn drive(&mut self) -> u64 {
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
        if self.state != State::Connected {
            return 0;
        }
        // Whatever followed the peer's Finished in the same datagram; the flight that completed
        // the handshake is already queued and must go out whatever happens next.
        let mark = self.stream.get_mut().tx_mark();
        match self.read_records() {
            ReadEnd::WantRead { app_data } => app_data,
            ReadEnd::CloseNotify => {
                self.on_peer_close();
                0
            }
            ReadEnd::Fatal(error) => u64::from(!self.on_established_error(&error, mark)),
        }
    }

    /// After the handshake: retransmitted flights (answered by OpenSSL), alerts, close_notify.
    fn read_records(&mut self) -> ReadEnd {
        let mut scratch = [0u8; READ_SCRATCH_LEN];
        let mut app_data = 0;
        loop {
            match self.stream.ssl_read(&mut scratch) {
                Ok(_) => app_data += 1,
                Err(e) => {
                    return match e.code() {
                        ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => {
                            ReadEnd::WantRead { app_data }
                        }
                        ErrorCode::ZERO_RETURN => ReadEnd::CloseNotify,
                        _ => ReadEnd::Fatal(e),
                    };
                }
            }
        }
    }

    /// OpenSSL failed after the handshake. Returns true if the peer ended the association with
    /// an authenticated fatal alert (we fail with its description); otherwise reading stops and
    /// the association stays up (see `read_stopped`), and false is returned.
    fn on_established_error(&mut self, error: &openssl::ssl::Error, mark: usize) -> bool {
        match self.peer_fatal_alert(error) {
            Some(description) => {
                self.fail(DtlsError::Alert(description));
                true
            }
            None => {
                self.stop_reading(mark);
                false
            }
        }
    }

    /// The description of the fatal alert OpenSSL has just read from the peer, if that is why it
    /// failed: it then marks the shutdown as received and reports reason 1000 + description.
    /// OpenSSL only reads alerts that decrypted and authenticated, so no one else can forge this.
    fn peer_fatal_alert(&mut self, error: &openssl::ssl::Error) -> Option<u8> {
        if !self.stream.get_shutdown().contains(ShutdownState::RECEIVED) {
            return None;
        }
        error
            .ssl_error()?
            .errors()
            .iter()
            .filter(|e| e.library_code() == ERR_LIB_SSL)
            .find_map(|e| u8::try_from(e.reason_code() - SSL_AD_REASON_OFFSET).ok())
    }

    /// Defense in depth for OpenSSL failing on something other than the peer's alert (a record
    /// the filter could not foresee, or a timer). The SRTP keys were exported at `Connected` and
    /// live outside OpenSSL, so media keeps flowing and we do not fail: the association only
    /// stops reading, and every later record is discarded and counted. What OpenSSL queued while
    /// failing (its own fatal alert) is taken back, since it would make the peer end the call.
    fn stop_reading(&mut self, mark: usize) {
        let _ = ErrorStack::get();
        self.read_stopped = true;
        self.timeout = None;
        self.stream.get_mut().truncate_tx(mark);
        self.stream.get_mut().discard_rx();
    }

    fn on_handshake_done(&mut self) {
        match self.keying_material() {
            Ok(material) => {
                self.state = State::Connected;
                self.filter = Some(RecordFilter {
                    read_epoch: ESTABLISHED_EPOCH,
                    protection: self.cipher_suite().and_then(RecordProtection::from_suite),
                });
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
        self.timeout = if self.timer_running() {
            timer::get_timeout(self.stream.ssl()).map(|left| now + left)
        } else {
            None
        };
    }
}
