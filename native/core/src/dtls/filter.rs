//! Which records an established association may hand to OpenSSL (RFC 6347 section 4.1.2.7).
//!
//! RFC 6347 section 4.1.2.7: "invalid records SHOULD be silently discarded, thus preserving the
//! association". OpenSSL 3.0 does not always do that: a ciphertext shorter than an AEAD's explicit
//! nonce and tag makes its AEAD setup fail, which it treats as fatal (it sends internal_error and
//! kills the SSL object), and with encrypt-then-MAC any bad MAC is fatal. An off-path attacker who
//! can spoof the peer's address could end a call with one 15-byte record. So after the handshake
//! we only hand OpenSSL records that could be valid for the negotiated suite; everything else is
//! discarded and counted here.
//!
//! Pure and allocation-free: one call per record header.

use super::record::{ContentType, RecordHeader, DTLS1_2_VERSION};

/// RFC 5246 section 6.2.1: a plaintext fragment is at most 2^14 bytes (no compression).
const MAX_PLAINTEXT_LEN: usize = 1 << 14;

/// RFC 5246 section 7.2: an Alert is exactly level (1) + description (1).
const ALERT_LEN: usize = 2;

/// RFC 6347 section 4.2.2: the DTLS handshake header (type, length, message_seq,
/// fragment_offset, fragment_length) is 12 bytes; every handshake fragment carries one.
const HANDSHAKE_HEADER_LEN: usize = 12;

/// RFC 5246 section 6.2.3.2: padding plus its length byte is 1..=256 bytes.
const MAX_CBC_PADDING: usize = 256;

/// How the negotiated suite turns a plaintext fragment into a ciphertext fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordProtection {
    /// RFC 5246 section 6.2.3.3: explicit nonce, then the ciphertext (as long as the plaintext),
    /// then the tag. AES-GCM (RFC 5288 section 3): 8-byte nonce, 16-byte tag.
    /// ChaCha20-Poly1305 (RFC 7905 section 2): no explicit nonce, 16-byte tag.
    Aead { explicit_nonce: usize, tag: usize },
    /// RFC 5246 section 6.2.3.2, MAC-then-encrypt (encrypt-then-MAC is disabled on our context):
    /// an IV of one block, then whole blocks of content + MAC + 1..=256 bytes of padding.
    Cbc { block: usize, mac: usize },
}

impl RecordProtection {
    /// The protection of a TLS 1.2 cipher suite by its IANA number (the one in ServerHello).
    /// Covers every suite our context enables; `None` for anything else.
    pub fn from_suite(id: u16) -> Option<Self> {
        const GCM: RecordProtection = RecordProtection::Aead {
            explicit_nonce: 8,
            tag: 16,
        };
        const CHACHA20_POLY1305: RecordProtection = RecordProtection::Aead {
            explicit_nonce: 0,
            tag: 16,
        };
        // AES-CBC with HMAC-SHA1: 16-byte blocks, 20-byte MAC (RFC 4492 section 6 suites).
        const CBC_SHA1: RecordProtection = RecordProtection::Cbc { block: 16, mac: 20 };
        match id {
            // TLS_ECDHE_{ECDSA,RSA}_WITH_AES_{128,256}_GCM_SHA{256,384} (RFC 5289 section 3.2)
            0xc02b | 0xc02f | 0xc02c | 0xc030 => Some(GCM),
            // TLS_ECDHE_{RSA,ECDSA}_WITH_CHACHA20_POLY1305_SHA256 (RFC 7905 section 2)
            0xcca8 | 0xcca9 => Some(CHACHA20_POLY1305),
            // TLS_ECDHE_{ECDSA,RSA}_WITH_AES_{128,256}_CBC_SHA (RFC 4492 section 6)
            0xc009 | 0xc013 | 0xc00a | 0xc014 => Some(CBC_SHA1),
            _ => None,
        }
    }

    /// Whether some plaintext of `min..=max` bytes protects to exactly `len` bytes.
    pub fn fits(self, len: usize, min: usize, max: usize) -> bool {
        match self {
            RecordProtection::Aead {
                explicit_nonce,
                tag,
            } => {
                let overhead = explicit_nonce + tag;
                len >= min + overhead && len <= max + overhead
            }
            RecordProtection::Cbc { block, mac } => {
                // IV, then n whole blocks with min + mac + 1 <= n * block <= max + mac + 256.
                let Some(body) = len.checked_sub(block) else {
                    return false;
                };
                block > 0
                    && body % block == 0
                    && body > min + mac
                    && body <= max + mac + MAX_CBC_PADDING
            }
        }
    }

    /// The shortest ciphertext fragment this protection can produce (empty plaintext).
    pub fn min_ciphertext(self) -> usize {
        match self {
            RecordProtection::Aead {
                explicit_nonce,
                tag,
            } => explicit_nonce + tag,
            // IV plus the MAC and at least one padding byte, rounded up to whole blocks.
            RecordProtection::Cbc { block, mac } => block + (mac + 1).div_ceil(block) * block,
        }
    }
}

/// The post-handshake record filter of one association.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordFilter {
    /// The epoch the peer writes in: 1 after a DTLS 1.2 handshake; renegotiation is disabled, so
    /// it never changes.
    pub read_epoch: u16,
    /// `None` if the suite is unknown: lengths are then left to OpenSSL (and to the connection's
    /// fallback for its fatal errors).
    pub protection: Option<RecordProtection>,
}

impl RecordFilter {
    /// Whether a record with this header and a fragment of `len` bytes could be valid now.
    ///
    /// Only alerts and handshake records pass: Sluice carries no DTLS application data (no SCTP),
    /// and ChangeCipherSpec ends a handshake, which cannot start again. Handshake records stay
    /// because a peer that lost our last flight resends its Finished, which OpenSSL answers
    /// (RFC 6347 section 4.2.4).
    pub fn admits(&self, header: &RecordHeader, len: usize) -> bool {
        // RFC 6347 section 4.1: records of other epochs are stale or from the future.
        if header.epoch != self.read_epoch || header.version != DTLS1_2_VERSION {
            return false;
        }
        let (min, max) = match header.content_type {
            ContentType::Alert => (ALERT_LEN, ALERT_LEN),
            ContentType::Handshake => (HANDSHAKE_HEADER_LEN, MAX_PLAINTEXT_LEN),
            ContentType::ChangeCipherSpec | ContentType::ApplicationData => return false,
        };
        match self.protection {
            Some(p) => p.fits(len, min, max),
            None => len > 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCM: RecordProtection = RecordProtection::Aead {
        explicit_nonce: 8,
        tag: 16,
    };
    const CHACHA: RecordProtection = RecordProtection::Aead {
        explicit_nonce: 0,
        tag: 16,
    };
    const CBC: RecordProtection = RecordProtection::Cbc { block: 16, mac: 20 };

    fn header(content_type: ContentType, epoch: u16) -> RecordHeader {
        RecordHeader {
            content_type,
            version: DTLS1_2_VERSION,
            epoch,
            sequence_number: 1,
            length: 0,
        }
    }

    #[test]
    fn rfc5288_3_gcm_and_rfc7905_2_chacha_minimums() {
        assert_eq!(GCM.min_ciphertext(), 24);
        assert_eq!(CHACHA.min_ciphertext(), 16);
        // IV 16 + (20-byte MAC + 1 padding byte → 2 blocks).
        assert_eq!(CBC.min_ciphertext(), 48);
    }

    #[test]
    fn rfc5246_7_2_alert_ciphertext_lengths() {
        let alert = |p: RecordProtection, len| p.fits(len, ALERT_LEN, ALERT_LEN);
        assert!(alert(GCM, 26));
        assert!(!alert(GCM, 2) && !alert(GCM, 25) && !alert(GCM, 27));
        assert!(alert(CHACHA, 18));
        assert!(!alert(CHACHA, 26));
        // 2 + 20 + 1..=256 bytes rounded to blocks: 32..=272, after a 16-byte IV.
        assert!(alert(CBC, 48) && alert(CBC, 288));
        assert!(!alert(CBC, 32) && !alert(CBC, 49) && !alert(CBC, 304) && !alert(CBC, 0));
    }

    #[test]
    fn rfc6347_4_1_2_7_filter_admits_only_plausible_records() {
        let filter = RecordFilter {
            read_epoch: 1,
            protection: Some(GCM),
        };
        assert!(filter.admits(&header(ContentType::Alert, 1), 26));
        // The 15-byte record: a 2-byte fragment at epoch 1.
        assert!(!filter.admits(&header(ContentType::Alert, 1), 2));
        for epoch in [0, 2, 0xffff] {
            assert!(!filter.admits(&header(ContentType::Alert, epoch), 26));
        }
        // A Finished: 12-byte header + 12-byte verify_data.
        assert!(filter.admits(&header(ContentType::Handshake, 1), 8 + 24 + 16));
        assert!(!filter.admits(&header(ContentType::Handshake, 1), 8 + 11 + 16));
        assert!(filter.admits(&header(ContentType::Handshake, 1), 24 + (1 << 14)));
        assert!(!filter.admits(&header(ContentType::Handshake, 1), 25 + (1 << 14)));
        assert!(!filter.admits(&header(ContentType::ApplicationData, 1), 100));
        assert!(!filter.admits(&header(ContentType::ChangeCipherSpec, 1), 25));
        let mut dtls10 = header(ContentType::Alert, 1);
        dtls10.version = super::super::record::DTLS1_0_VERSION;
        assert!(!filter.admits(&dtls10, 26));
        let unknown = RecordFilter {
            read_epoch: 1,
            protection: None,
        };
        assert!(unknown.admits(&header(ContentType::Alert, 1), 2));
        assert!(!unknown.admits(&header(ContentType::Alert, 1), 0));
    }

    #[test]
    fn suites_by_iana_number() {
        assert_eq!(RecordProtection::from_suite(0xc02b), Some(GCM));
        assert_eq!(RecordProtection::from_suite(0xc030), Some(GCM));
        assert_eq!(RecordProtection::from_suite(0xcca9), Some(CHACHA));
        assert_eq!(RecordProtection::from_suite(0xc014), Some(CBC));
        // TLS_RSA_WITH_AES_128_CBC_SHA256: not on our list.
        assert_eq!(RecordProtection::from_suite(0x003c), None);
    }
}
