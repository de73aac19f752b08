//! Our DTLS identity: a self-signed ECDSA P-256 certificate and the OpenSSL context built on it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    SslContext, SslContextBuilder, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode,
    SslVersion,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use super::conn::verify_peer_fingerprint;
use super::{DtlsError, DtlsSrtpProfile, Fingerprint, HashAlg};

/// TLS 1.2 cipher suites we offer or accept, preferred first. AEAD suites first; CBC-SHA suites
/// stay for older WebRTC stacks. ECDHE-RSA suites let peers with RSA certificates be servers.
const CIPHER_LIST: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA";

/// ssl.h: `SSL_OP_NO_ENCRYPT_THEN_MAC` is `SSL_OP_BIT(19)`; rust-openssl has no name for it.
const NO_ENCRYPT_THEN_MAC: SslOptions = SslOptions::from_bits_retain(1 << 19);

/// Validity starts this long before generation, so peers with a slow clock accept it.
const NOT_BEFORE_BACKDATE_SECS: i64 = 30 * 24 * 3600;
/// Validity ends this long after generation.
const NOT_AFTER_SECS: i64 = 365 * 24 * 3600;

/// Our certificate: ECDSA P-256, self-signed, random serial, CN "sluice", valid ~30 days back to ~1 year ahead.
///
/// Cheap to clone: the certificate, key and the OpenSSL context built from them are shared.
#[derive(Clone)]
pub struct DtlsCert {
    inner: Arc<CertInner>,
}

struct CertInner {
    x509: X509,
    pkey: PKey<Private>,
    /// One context for every connection using this certificate with the default profiles.
    context: SslContext,
    /// Precomputed fingerprints, in `HashAlg::ALL` order.
    fingerprints: [Fingerprint; 4],
}

impl std::fmt::Debug for DtlsCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsCert")
            .field("sha-256", &self.fingerprint(HashAlg::Sha256).value_hex())
            .finish()
    }
}

impl DtlsCert {
    /// Generates a fresh key and certificate. Reads the wall clock once, for the validity period.
    pub fn generate() -> Result<Self, DtlsError> {
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| DtlsError::Cert(e.to_string()))?
            .as_secs();
        Self::generate_at(i64::try_from(unix_now).unwrap_or(i64::MAX / 2))
    }

    /// Generates a fresh key and certificate as if the wall clock read `unix_now` seconds.
    pub fn generate_at(unix_now: i64) -> Result<Self, DtlsError> {
        let err = |e: openssl::error::ErrorStack| DtlsError::Cert(e.to_string());
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(err)?;
        let key = EcKey::generate(&group).map_err(err)?;
        let pkey = PKey::from_ec_key(key).map_err(err)?;

        let mut name = X509NameBuilder::new().map_err(err)?;
        name.append_entry_by_nid(Nid::COMMONNAME, "sluice")
            .map_err(err)?;
        let name = name.build();

        let mut serial = BigNum::new().map_err(err)?;
        // 63 random bits with the top bit clear: a positive INTEGER, as RFC 5280 4.1.2.2 asks.
        serial.rand(63, MsbOption::MAYBE_ZERO, false).map_err(err)?;
        let serial: Asn1Integer = serial.to_asn1_integer().map_err(err)?;

        let not_before =
            Asn1Time::from_unix(to_time_t(unix_now - NOT_BEFORE_BACKDATE_SECS)).map_err(err)?;
        let not_after = Asn1Time::from_unix(to_time_t(unix_now + NOT_AFTER_SECS)).map_err(err)?;

        let mut builder = X509Builder::new().map_err(err)?;
        builder.set_version(2).map_err(err)?; // X.509 v3
        builder.set_serial_number(&serial).map_err(err)?;
        builder.set_subject_name(&name).map_err(err)?;
        builder.set_issuer_name(&name).map_err(err)?;
        builder.set_pubkey(&pkey).map_err(err)?;
        builder.set_not_before(&not_before).map_err(err)?;
        builder.set_not_after(&not_after).map_err(err)?;
        builder.sign(&pkey, MessageDigest::sha256()).map_err(err)?;
        let x509 = builder.build();

        Self::from_parts(x509, pkey)
    }

    /// Wraps an existing certificate and its private key (e.g. loaded from disk).
    pub fn from_parts(x509: X509, pkey: PKey<Private>) -> Result<Self, DtlsError> {
        let context = build_context(&x509, &pkey, DtlsSrtpProfile::DEFAULT)?;
        let fingerprints = [
            Fingerprint::of_cert(&x509, HashAlg::ALL[0])?,
            Fingerprint::of_cert(&x509, HashAlg::ALL[1])?,
            Fingerprint::of_cert(&x509, HashAlg::ALL[2])?,
            Fingerprint::of_cert(&x509, HashAlg::ALL[3])?,
        ];
        Ok(DtlsCert {
            inner: Arc::new(CertInner {
                x509,
                pkey,
                context,
                fingerprints,
            }),
        })
    }

    /// The fingerprint of this certificate for `hash` (precomputed).
    pub fn fingerprint(&self, hash: HashAlg) -> Fingerprint {
        let index = match hash {
            HashAlg::Sha1 => 0,
            HashAlg::Sha256 => 1,
            HashAlg::Sha384 => 2,
            HashAlg::Sha512 => 3,
        };
        self.inner.fingerprints[index].clone()
    }

    /// The certificate.
    pub fn x509(&self) -> &X509 {
        &self.inner.x509
    }

    /// The private key.
    pub fn private_key(&self) -> &PKey<Private> {
        &self.inner.pkey
    }

    /// The shared context for the default SRTP profile list.
    pub(crate) fn context(&self) -> &SslContext {
        &self.inner.context
    }
}

fn to_time_t(secs: i64) -> libc::time_t {
    libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX)
}

/// The `use_srtp` profile string OpenSSL takes, preferred first.
pub(crate) fn srtp_profile_list(profiles: &[DtlsSrtpProfile]) -> String {
    profiles
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(":")
}

/// Builds a DTLS 1.2 context with our certificate, cipher suites, use_srtp profiles and the
/// fingerprint-checking verify callback.
pub(crate) fn build_context(
    x509: &X509,
    pkey: &PKey<Private>,
    profiles: &[DtlsSrtpProfile],
) -> Result<SslContext, DtlsError> {
    if profiles.is_empty() {
        return Err(DtlsError::NoSrtpProfile);
    }
    let err = |e: openssl::error::ErrorStack| DtlsError::Cert(e.to_string());
    let mut ctx = SslContextBuilder::new(SslMethod::dtls()).map_err(err)?;
    ctx.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .map_err(err)?;
    ctx.set_max_proto_version(Some(SslVersion::DTLS1_2))
        .map_err(err)?;
    ctx.set_certificate(x509).map_err(err)?;
    ctx.set_private_key(pkey).map_err(err)?;
    ctx.check_private_key().map_err(err)?;
    ctx.set_cipher_list(CIPHER_LIST).map_err(err)?;
    ctx.set_tlsext_use_srtp(&srtp_profile_list(profiles))
        .map_err(err)?;
    // No resumption (a resumed handshake carries no certificate to pin), no renegotiation,
    // and the MTU is ours (SSL_set_mtu), never queried from the BIO.
    // No encrypt-then-MAC (RFC 7366) for the CBC suites: OpenSSL's DTLS treats a bad ETM MAC
    // as fatal instead of discarding the record (RFC 6347 section 4.1.2.7), so anyone who can
    // spoof the peer's address could end the association. Browsers do not negotiate ETM.
    ctx.set_session_cache_mode(SslSessionCacheMode::OFF);
    ctx.set_options(
        SslOptions::NO_TICKET
            | SslOptions::NO_RENEGOTIATION
            | SslOptions::NO_QUERY_MTU
            | SslOptions::CIPHER_SERVER_PREFERENCE
            | NO_ENCRYPT_THEN_MAC,
    );
    // Both roles demand the peer's certificate; the callback accepts self-signed chains and
    // decides on the leaf's fingerprint (RFC 8122 section 5, RFC 5763 section 5).
    ctx.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        verify_peer_fingerprint,
    );
    Ok(ctx.build())
}

#[cfg(test)]
mod tests {
    use foreign_types::ForeignTypeRef;
    use openssl::ssl::{SslCipher, SslContextRef};
    use openssl::stack::StackRef;
    use openssl_sys as ffi;

    use super::*;
    use crate::dtls::RecordProtection;

    extern "C" {
        // `STACK_OF(SSL_CIPHER) *SSL_CTX_get_ciphers(const SSL_CTX *ctx);`
        fn SSL_CTX_get_ciphers(ctx: *const ffi::SSL_CTX) -> *mut ffi::stack_st_SSL_CIPHER;
    }

    fn enabled_suites(ctx: &SslContextRef) -> Vec<(String, u16)> {
        // SAFETY: the stack belongs to the live context and is only read while `ctx` is borrowed.
        let stack: &StackRef<SslCipher> = unsafe {
            let ptr = SSL_CTX_get_ciphers(ctx.as_ptr());
            assert!(!ptr.is_null(), "context has a cipher list");
            StackRef::from_ptr(ptr)
        };
        stack
            .iter()
            .map(|c| (c.name().to_string(), u16::from_be_bytes(c.protocol_id())))
            .collect()
    }

    #[test]
    fn rfc6347_4_1_2_7_every_enabled_suite_has_a_known_record_protection() {
        let cert = DtlsCert::generate().expect("cert");
        let suites = enabled_suites(cert.context());
        // The ten suites of CIPHER_LIST (TLS 1.3 suites are listed too but DTLS 1.2 never
        // negotiates them).
        let tls12: Vec<_> = suites
            .iter()
            .filter(|(name, _)| !name.starts_with("TLS_"))
            .collect();
        assert_eq!(tls12.len(), 10, "{suites:?}");
        for (name, id) in tls12 {
            assert!(
                RecordProtection::from_suite(*id).is_some(),
                "{name} ({id:#06x}) has no record protection"
            );
        }
    }
}
