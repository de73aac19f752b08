//! Certificate fingerprints as carried in SDP `a=fingerprint` and Jingle `<fingerprint/>`.
//!
//! RFC 8122 section 5:
//!
//! ```text
//! attribute          =/ fingerprint-attribute
//! fingerprint-attribute = "fingerprint" ":" hash-func SP fingerprint
//! hash-func          = "sha-1" / "sha-224" / "sha-256" / "sha-384" / "sha-512" / ...
//! fingerprint        = 2UHEX *(":" 2UHEX)   ; each byte in upper-case hex, colon separated
//! ```
//!
//! The fingerprint is the hash of the DER form of the certificate.

use openssl::hash::MessageDigest;
use openssl::x509::X509Ref;

use super::DtlsError;

/// A hash function from the IANA "Hash Function Textual Names" registry that we can compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// `sha-1` (20 bytes).
    Sha1,
    /// `sha-256` (32 bytes).
    Sha256,
    /// `sha-384` (48 bytes).
    Sha384,
    /// `sha-512` (64 bytes).
    Sha512,
}

impl HashAlg {
    /// Every hash we support, strongest-first is not implied; the order is stable.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// The registry name, e.g. `"sha-256"`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha-1",
            HashAlg::Sha256 => "sha-256",
            HashAlg::Sha384 => "sha-384",
            HashAlg::Sha512 => "sha-512",
        }
    }

    /// Looks up a registry name, case-insensitive; unknown or unsupported names give `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        HashAlg::ALL
            .into_iter()
            .find(|alg| alg.name().eq_ignore_ascii_case(name))
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    pub(crate) fn message_digest(self) -> MessageDigest {
        match self {
            HashAlg::Sha1 => MessageDigest::sha1(),
            HashAlg::Sha256 => MessageDigest::sha256(),
            HashAlg::Sha384 => MessageDigest::sha384(),
            HashAlg::Sha512 => MessageDigest::sha512(),
        }
    }
}

/// A certificate fingerprint: hash function and digest of the certificate's DER encoding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// The hash function.
    pub hash: HashAlg,
    /// The raw digest bytes.
    pub value: Vec<u8>,
}

impl Fingerprint {
    /// Parses the SDP/Jingle pair ("sha-256", "AB:CD:..."), case-insensitive; errors on bad hex or wrong length.
    ///
    /// An unknown hash name (`md5`, `sha-224`, ...) gives [`DtlsError::UnsupportedHash`] so callers
    /// can skip it and keep the others the remote announced.
    pub fn parse(hash: &str, value: &str) -> Result<Self, DtlsError> {
        let hash = HashAlg::from_name(hash).ok_or(DtlsError::UnsupportedHash)?;
        let expected = hash.digest_len();
        let mut bytes = Vec::with_capacity(expected);
        for pair in value.trim().split(':') {
            let &[hi, lo] = pair.as_bytes() else {
                return Err(DtlsError::BadFingerprint);
            };
            let (Some(hi), Some(lo)) = (hex_value(hi), hex_value(lo)) else {
                return Err(DtlsError::BadFingerprint);
            };
            if bytes.len() == expected {
                return Err(DtlsError::BadFingerprint);
            }
            bytes.push(hi << 4 | lo);
        }
        if bytes.len() != expected {
            return Err(DtlsError::BadFingerprint);
        }
        Ok(Fingerprint { hash, value: bytes })
    }

    /// Computes the fingerprint of a certificate.
    pub fn of_cert(cert: &X509Ref, hash: HashAlg) -> Result<Self, DtlsError> {
        let digest = cert
            .digest(hash.message_digest())
            .map_err(|e| DtlsError::Cert(e.to_string()))?;
        Ok(Fingerprint {
            hash,
            value: digest.to_vec(),
        })
    }

    /// The hash name as written in SDP/Jingle, e.g. `"sha-256"`.
    pub fn hash_name(&self) -> &'static str {
        self.hash.name()
    }

    /// The value as written in SDP/Jingle: upper-case hex pairs joined by `:`.
    pub fn value_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = String::with_capacity(self.value.len() * 3);
        for (i, byte) in self.value.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        out
    }

    /// True if `cert` hashes to this fingerprint.
    pub fn matches(&self, cert: &X509Ref) -> bool {
        match cert.digest(self.hash.message_digest()) {
            Ok(digest) => digest.as_ref() == self.value.as_slice(),
            Err(_) => false,
        }
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4572 section 5 example: `a=fingerprint:SHA-1 4A:AD:...:AB` (hash name in upper case).
    const RFC4572_5_SHA1: &str = "4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB";

    #[test]
    fn rfc4572_5_example_fingerprint() {
        let fp = Fingerprint::parse("SHA-1", RFC4572_5_SHA1).expect("valid example");
        assert_eq!(fp.hash, HashAlg::Sha1);
        assert_eq!(fp.value.len(), 20);
        assert_eq!(fp.value[0], 0x4a);
        assert_eq!(fp.value[19], 0xab);
        assert_eq!(fp.hash_name(), "sha-1");
        assert_eq!(fp.value_hex(), RFC4572_5_SHA1);
    }

    #[test]
    fn parse_sha256_round_trip_upper_case() {
        let hex = (0u8..32)
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let fp = Fingerprint::parse("sha-256", &hex).expect("valid");
        assert_eq!(fp.value, (0u8..32).collect::<Vec<_>>());
        assert_eq!(fp.value_hex(), hex);
    }

    #[test]
    fn parse_is_case_insensitive() {
        let upper = "AB:".repeat(47) + "CD";
        let lower = upper.to_ascii_lowercase();
        let a = Fingerprint::parse("SHA-384", &upper).expect("upper");
        let b = Fingerprint::parse("sha-384", &lower).expect("lower");
        let c = Fingerprint::parse("Sha-384", &format!("  {upper}\n")).expect("whitespace");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(b.value_hex(), upper);
    }

    #[test]
    fn parse_sha512() {
        let hex = "0F:".repeat(63) + "F0";
        let fp = Fingerprint::parse("sha-512", &hex).expect("valid");
        assert_eq!(fp.hash, HashAlg::Sha512);
        assert_eq!(fp.value.len(), 64);
    }

    #[test]
    fn parse_rejects_bad_hex() {
        let good = "AB:".repeat(31) + "CD";
        for bad in [
            good.replacen("AB", "AG", 1),  // not hex
            good.replacen("AB", "A", 1),   // one digit
            good.replacen("AB", "ABC", 1), // three digits
            good.replacen(':', "::", 1),   // empty pair
            good.replacen(':', "-", 1),    // wrong separator
            good.replace(':', ""),         // no separators
            format!(":{good}"),            // leading colon
            format!("{good}:"),            // trailing colon
            good.replacen("AB", "é", 1),   // non-ASCII (2 bytes in UTF-8)
            String::new(),
        ] {
            assert_eq!(
                Fingerprint::parse("sha-256", &bad),
                Err(DtlsError::BadFingerprint),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parse_rejects_wrong_length() {
        let short = "AB:".repeat(30) + "CD"; // 31 bytes
        let long = "AB:".repeat(32) + "CD"; // 33 bytes
        let sha1_len = "AB:".repeat(19) + "CD"; // 20 bytes
        assert_eq!(
            Fingerprint::parse("sha-256", &short),
            Err(DtlsError::BadFingerprint)
        );
        assert_eq!(
            Fingerprint::parse("sha-256", &long),
            Err(DtlsError::BadFingerprint)
        );
        assert_eq!(
            Fingerprint::parse("sha-256", &sha1_len),
            Err(DtlsError::BadFingerprint)
        );
        assert!(Fingerprint::parse("sha-1", &sha1_len).is_ok());
    }

    #[test]
    fn parse_rejects_unknown_hash() {
        let hex = "AB:".repeat(15) + "CD";
        for name in ["md5", "md2", "sha-224", "sha256", "", "sha-2566"] {
            assert_eq!(
                Fingerprint::parse(name, &hex),
                Err(DtlsError::UnsupportedHash),
                "{name:?}"
            );
        }
    }
}
