//! OpenSSL's DTLS retransmission timer (RFC 6347 section 4.2.4), reached through `SSL_ctrl`.
//!
//! Limitation: OpenSSL keeps this timer on the real clock (`gettimeofday`), not on the `now`
//! the caller passes in. `DtlsConn` maps the remaining time onto the caller's `now` (deadline =
//! now + remaining) and only asks OpenSSL to retransmit once the caller's clock has reached
//! that deadline; OpenSSL still checks its own clock, so with a fake clock that runs ahead of
//! real time a retransmission waits until the real timer has expired too. OpenSSL also
//! retransmits on its own when it reads a datagram after its timer expired.
//!
//! rust-openssl 0.10 does not wrap these calls, so they are declared here.

use std::os::raw::{c_int, c_long, c_uint, c_void};
use std::ptr;
use std::time::Duration;

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslRef;
use openssl_sys as ffi;

// ssl.h: `# define DTLS_CTRL_GET_TIMEOUT 73`, `# define DTLS_CTRL_HANDLE_TIMEOUT 74`
// (the `DTLSv1_get_timeout` / `DTLSv1_handle_timeout` macros expand to these `SSL_ctrl` calls).
const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;

/// `typedef unsigned int (*DTLS_timer_cb)(SSL *s, unsigned int timer_us);`
pub(crate) type DtlsTimerCb = unsafe extern "C" fn(s: *mut ffi::SSL, timer_us: c_uint) -> c_uint;

extern "C" {
    // OpenSSL >= 1.1.1 (not in BoringSSL or LibreSSL): `void DTLS_set_timer_cb(SSL *s, DTLS_timer_cb cb);`
    fn DTLS_set_timer_cb(s: *mut ffi::SSL, cb: Option<DtlsTimerCb>);
}

/// Installs `cb` as the source of retransmission timeouts: OpenSSL calls it with 0 when a flight
/// is first sent and with the previous timeout (µs) on each expiry.
pub(crate) fn set_timer_cb(ssl: &SslRef, cb: DtlsTimerCb) {
    // SAFETY: `ssl` is a live SSL object (we hold a reference to it); the callback is a plain
    // function with the C signature OpenSSL expects and lives for the whole program.
    unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(cb)) }
}

/// `DTLSv1_get_timeout`: time left on the running retransmission timer, `None` when it is stopped.
///
/// OpenSSL reports anything under 15 ms as zero (already expired).
pub(crate) fn get_timeout(ssl: &SslRef) -> Option<Duration> {
    let mut left = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: `ssl` is a live SSL object; for DTLS_CTRL_GET_TIMEOUT OpenSSL writes one
    // `struct timeval` through `parg`, which points at our local `left`.
    let running = unsafe {
        ffi::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&mut left as *mut libc::timeval).cast::<c_void>(),
        )
    };
    if running <= 0 {
        return None;
    }
    let secs = u64::try_from(left.tv_sec).unwrap_or(0);
    let micros = u32::try_from(left.tv_usec).unwrap_or(0).min(999_999);
    Some(Duration::new(secs, micros * 1000))
}

/// `DTLSv1_handle_timeout`: retransmits the last flight if OpenSSL's timer has expired.
///
/// Returns > 0 when a flight was resent, 0 when the timer had not expired (or is not running),
/// < 0 on a fatal error (too many retransmissions: the handshake is dead).
pub(crate) fn handle_timeout(ssl: &SslRef) -> c_long {
    // SAFETY: `ssl` is a live SSL object with its BIOs set; DTLS_CTRL_HANDLE_TIMEOUT takes no
    // argument. The caller holds the `SslStream` mutably, so no other call runs on it meanwhile.
    unsafe { ffi::SSL_ctrl(ssl.as_ptr(), DTLS_CTRL_HANDLE_TIMEOUT, 0, ptr::null_mut()) }
}

/// `SSL_set_mtu` on an SSL that already has its BIOs. Returns false if OpenSSL refused the value
/// (below its DTLS minimum).
pub(crate) fn set_mtu(ssl: &SslRef, mtu: usize) -> bool {
    let mtu = c_long::try_from(mtu).unwrap_or(c_long::MAX);
    // SAFETY: `ssl` is a live SSL object; SSL_CTRL_SET_MTU only stores the value. The caller
    // holds the `SslStream` mutably.
    let set = unsafe { ffi::SSL_set_mtu(ssl.as_ptr(), mtu) };
    set > 0
}
