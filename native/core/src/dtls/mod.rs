//! Sans-IO DTLS 1.2 driver with use_srtp (RFC 6347, RFC 5764) over OpenSSL.
//!
//! One [`DtlsConn`] per Transport. Datagrams come in through [`DtlsConn::handle_datagram`],
//! datagrams to send come out of [`DtlsConn::poll_transmit`]; nothing here touches a socket or
//! a thread. After the handshake the peer's certificate is checked against the fingerprints it
//! announced in signaling (RFC 8122, RFC 5763 section 5) and the SRTP keys are exported
//! (RFC 5764 section 4.2) in a [`DtlsEvent::Connected`].
//!
//! Time: every call takes the caller's `now`, but OpenSSL runs its retransmission timer on the
//! real clock; see the `timer` module for how the two are mapped and what that means for tests.
//!
//! Requires OpenSSL 1.1.1 or newer (for `DTLS_set_timer_cb`).

mod cert;
mod channel;
mod conn;
mod filter;
mod fingerprint;
pub mod record;
mod timer;

use std::fmt;
use std::time::Duration;

pub use cert::DtlsCert;
pub use conn::DtlsConn;
pub use filter::{RecordFilter, RecordProtection};
pub use fingerprint::{Fingerprint, HashAlg};

/// Which side of the DTLS handshake we play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsRole {
    /// We send the ClientHello.
    Client,
    /// We answer the ClientHello.
    Server,
}

/// The remote's `a=setup` (RFC 4145 4, RFC 5763 5), as it announced it with its fingerprints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsSetup {
    Active,
    Passive,
    Actpass,
}

impl DtlsSetup {
    /// The SDP/Jingle word, case-insensitive and trimmed; anything else (`holdconn`) is None.
    pub fn parse(setup: &str) -> Option<Self> {
        let setup = setup.trim();
        [DtlsSetup::Active, DtlsSetup::Passive, DtlsSetup::Actpass]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(setup))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DtlsSetup::Active => "active",
            DtlsSetup::Passive => "passive",
            DtlsSetup::Actpass => "actpass",
        }
    }

    /// The one setup of a remote that announced several fingerprints, each with its own setup
    /// (Jicofo copies the client's onto each): `active` if any says so, as JVB reads it, else the first.
    pub fn announced(setups: impl IntoIterator<Item = DtlsSetup>) -> Option<Self> {
        let mut first = None;
        for setup in setups {
            if setup == DtlsSetup::Active {
                return Some(setup);
            }
            first.get_or_insert(setup);
        }
        first
    }
}

impl DtlsRole {
    /// Our role given the remote's a=setup when we offered actpass: active → Server, passive → Client,
    /// actpass (the remote left it to us) → Client.
    pub fn for_remote(setup: DtlsSetup) -> Self {
        match setup {
            DtlsSetup::Active => DtlsRole::Server,
            DtlsSetup::Passive | DtlsSetup::Actpass => DtlsRole::Client,
        }
    }

    /// [`DtlsRole::for_remote`] of an `a=setup` word; unknown → None.
    pub fn from_remote_setup(setup: &str) -> Option<Self> {
        DtlsSetup::parse(setup).map(Self::for_remote)
    }
}

/// SRTP protection profiles negotiated with use_srtp (RFC 5764 section 4.1.2, RFC 7714 section 14.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsSrtpProfile {
    /// SRTP_AEAD_AES_128_GCM {0x00, 0x07}: key 16, salt 12.
    AeadAes128Gcm,
    /// SRTP_AES128_CM_HMAC_SHA1_80 {0x00, 0x01}: key 16, salt 14.
    Aes128CmSha1_80,
}

impl DtlsSrtpProfile {
    /// What we offer and accept by default, preferred first.
    pub const DEFAULT: &'static [DtlsSrtpProfile] = &[
        DtlsSrtpProfile::AeadAes128Gcm,
        DtlsSrtpProfile::Aes128CmSha1_80,
    ];

    /// The profile name as OpenSSL spells it.
    pub fn name(self) -> &'static str {
        match self {
            DtlsSrtpProfile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            DtlsSrtpProfile::Aes128CmSha1_80 => "SRTP_AES128_CM_SHA1_80",
        }
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            DtlsSrtpProfile::AeadAes128Gcm => 12,
            DtlsSrtpProfile::Aes128CmSha1_80 => 14,
        }
    }
}

/// SRTP master keys and salts for one direction each, from the DTLS exporter (RFC 5764 section 4.2).
///
/// `Debug` prints the profile and lengths only, never the secrets.
#[derive(Clone)]
pub struct SrtpKeyingMaterial {
    /// The negotiated profile.
    pub profile: DtlsSrtpProfile,
    /// What we protect with (client_write if we are client).
    pub local_key: Vec<u8>,
    /// Salt that goes with `local_key`.
    pub local_salt: Vec<u8>,
    /// What we unprotect the peer's packets with.
    pub remote_key: Vec<u8>,
    /// Salt that goes with `remote_key`.
    pub remote_salt: Vec<u8>,
}

impl fmt::Debug for SrtpKeyingMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeyingMaterial")
            .field("profile", &self.profile)
            .field(
                "local_key",
                &format_args!("[{} bytes]", self.local_key.len()),
            )
            .field(
                "local_salt",
                &format_args!("[{} bytes]", self.local_salt.len()),
            )
            .field(
                "remote_key",
                &format_args!("[{} bytes]", self.remote_key.len()),
            )
            .field(
                "remote_salt",
                &format_args!("[{} bytes]", self.remote_salt.len()),
            )
            .finish()
    }
}

/// Why a DTLS connection or one of its inputs failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtlsError {
    /// The peer's certificate matched none of the fingerprints it announced.
    FingerprintMismatch,
    /// No common SRTP protection profile (or an empty profile list was configured).
    NoSrtpProfile,
    /// OpenSSL ended the handshake; the text is OpenSSL's reason.
    Handshake(String),
    /// Creating the certificate, key or OpenSSL context failed.
    Cert(String),
    /// A fingerprint value was not colon-separated hex of the hash's length.
    BadFingerprint,
    /// A fingerprint named a hash function we do not support (md5, sha-224, ...).
    UnsupportedHash,
    /// The handshake gave up after too many retransmissions (RFC 6347 section 4.2.4).
    Timeout,
    /// After the handshake, the peer sent an authenticated fatal alert with this description
    /// (RFC 5246 section 7.2). Nothing else ends an established association with an error.
    Alert(u8),
}

impl fmt::Display for DtlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtlsError::FingerprintMismatch => {
                f.write_str("peer certificate matches no announced fingerprint")
            }
            DtlsError::NoSrtpProfile => f.write_str("no common SRTP protection profile"),
            DtlsError::Handshake(reason) => write!(f, "DTLS handshake failed: {reason}"),
            DtlsError::Cert(reason) => write!(f, "DTLS certificate error: {reason}"),
            DtlsError::BadFingerprint => f.write_str("malformed fingerprint value"),
            DtlsError::UnsupportedHash => f.write_str("unsupported fingerprint hash function"),
            DtlsError::Timeout => f.write_str("DTLS handshake timed out"),
            DtlsError::Alert(description) => match alert_name(*description) {
                Some(name) => write!(f, "peer sent fatal alert {name}({description})"),
                None => write!(f, "peer sent fatal alert {description}"),
            },
        }
    }
}

impl std::error::Error for DtlsError {}

/// RFC 5246 section 7.2 (with RFC 5746, RFC 7301): the AlertDescription names.
pub fn alert_name(description: u8) -> Option<&'static str> {
    Some(match description {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        90 => "user_canceled",
        100 => "no_renegotiation",
        110 => "unsupported_extension",
        120 => "no_application_protocol",
        _ => return None,
    })
}

/// What a [`DtlsConn`] reports through `poll_event`.
#[derive(Clone, Debug)]
pub enum DtlsEvent {
    /// Once, after the handshake and the fingerprint check.
    Connected(SrtpKeyingMaterial),
    /// Handshake error, fingerprint mismatch, or the peer's fatal alert after the handshake;
    /// the connection is dead afterwards.
    Failed(DtlsError),
    /// Peer sent close_notify.
    Closed,
}

/// Per-connection settings; `Default` is what a bridge Transport uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtlsConfig {
    /// use_srtp profiles offered (client) or accepted (server), preferred first.
    pub srtp_profiles: Vec<DtlsSrtpProfile>,
    /// First retransmission timeout; it doubles on each expiry up to 60 s (RFC 6347 section
    /// 4.2.4.1 suggests 1 s; browsers start lower since ICE has just proven the path).
    /// Clamped to 1 ms..60 s. OpenSSL treats anything under 15 ms as already expired, so such
    /// values make it resend a flight right after sending it (useful only in tests).
    pub initial_retransmit: Duration,
    /// Largest datagram we send (at least 256, OpenSSL's DTLS minimum).
    pub mtu: usize,
}

/// Default first retransmission timeout.
pub const DEFAULT_INITIAL_RETRANSMIT: Duration = Duration::from_millis(200);
/// Default MTU for outgoing datagrams.
pub const DEFAULT_MTU: usize = 1200;

impl Default for DtlsConfig {
    fn default() -> Self {
        DtlsConfig {
            srtp_profiles: DtlsSrtpProfile::DEFAULT.to_vec(),
            initial_retransmit: DEFAULT_INITIAL_RETRANSMIT,
            mtu: DEFAULT_MTU,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5763_5_role_from_remote_setup() {
        assert_eq!(
            DtlsRole::from_remote_setup("active"),
            Some(DtlsRole::Server)
        );
        assert_eq!(
            DtlsRole::from_remote_setup("passive"),
            Some(DtlsRole::Client)
        );
        assert_eq!(
            DtlsRole::from_remote_setup("actpass"),
            Some(DtlsRole::Client)
        );
        assert_eq!(
            DtlsRole::from_remote_setup(" ACTIVE "),
            Some(DtlsRole::Server)
        );
        assert_eq!(DtlsRole::from_remote_setup("holdconn"), None);
        assert_eq!(DtlsRole::from_remote_setup(""), None);
    }

    #[test]
    fn several_fingerprints_announce_active_if_any_does() {
        use DtlsSetup::*;
        assert_eq!(DtlsSetup::announced([Actpass, Active]), Some(Active));
        assert_eq!(DtlsSetup::announced([Passive, Actpass]), Some(Passive));
        assert_eq!(DtlsSetup::announced([]), None);
    }

    #[test]
    fn rfc5764_4_1_2_profile_lengths() {
        let gcm = DtlsSrtpProfile::AeadAes128Gcm;
        let cm = DtlsSrtpProfile::Aes128CmSha1_80;
        assert_eq!((gcm.key_len(), gcm.salt_len()), (16, 12));
        assert_eq!((cm.key_len(), cm.salt_len()), (16, 14));
        assert_eq!(gcm.name(), "SRTP_AEAD_AES_128_GCM");
        assert_eq!(cm.name(), "SRTP_AES128_CM_SHA1_80");
    }

    #[test]
    fn keying_material_debug_hides_secrets() {
        let km = SrtpKeyingMaterial {
            profile: DtlsSrtpProfile::AeadAes128Gcm,
            local_key: vec![0xAB; 16],
            local_salt: vec![0xCD; 12],
            remote_key: vec![0xEF; 16],
            remote_salt: vec![0x12; 12],
        };
        let text = format!("{km:?}");
        assert!(text.contains("[16 bytes]"), "{text}");
        assert!(!text.contains("171"), "{text}"); // 0xAB as decimal
    }
}
