//! SRTP and SRTCP (RFC 3711) with AES_CM_128_HMAC_SHA1_80 and AEAD_AES_128_GCM (RFC 7714).
//!
//! One [`SrtpContext`] is one direction of one DTLS-SRTP association: one master key and salt,
//! session keys derived once (RFC 3711 §4.3, kdr = 0), and per-SSRC state (rollover counter,
//! highest index, replay window, SRTCP index). Packets are protected and unprotected in place.
//! Crypto runs on OpenSSL contexts that are keyed once and re-initialised per packet with an IV
//! only; in steady state nothing is allocated on the Rust heap.
//!
//! Sans-IO and clock-free: these functions only transform buffers and update state.

mod crypto;
mod window;

#[cfg(test)]
mod tests;

use std::fmt;

use crypto::{
    AesCm, AesGcm, HmacSha1, AES_KEY_LEN, AUTH_KEY_LEN, GCM_IV_LEN, GCM_TAG_LEN, SHA1_LEN,
};
pub use window::REPLAY_WINDOW;
use window::{estimate_index, ReplayWindow, SsrcMap};

/// Largest packet accepted, header and trailer included. AES-CM's 16-bit block counter allows at
/// most 2^16 blocks (1 MiB) of keystream per packet (RFC 3711 §4.1.1); UDP stays far below it.
pub const MAX_PACKET_LEN: usize = 1 << 20;

/// Default limit on SSRCs tracked per direction and per protocol (RTP, RTCP) in one context.
pub const DEFAULT_MAX_SSRCS: usize = 1024;

/// SSRC slots reserved up front so that the first few streams allocate nothing.
const RESERVED_SSRCS: usize = 8;

/// Fixed RTP header length (RFC 3550 §5.1).
const RTP_HEADER_LEN: usize = 12;
/// RTCP common header plus sender SSRC, left in the clear by SRTCP (RFC 3711 §3.4).
const RTCP_HEADER_LEN: usize = 8;
/// HMAC-SHA1-80 tag length (RFC 3711 §5.2, n_tag = 80 bits).
const HMAC_TAG_LEN: usize = 10;
/// The E flag and 31-bit SRTCP index word (RFC 3711 §3.4).
const SRTCP_INDEX_LEN: usize = 4;
/// E flag: the SRTCP payload is encrypted.
const SRTCP_E_FLAG: u32 = 0x8000_0000;
/// SRTCP index modulus (31 bits).
const SRTCP_INDEX_MASK: u32 = 0x7fff_ffff;
/// AES-CM session salt length (RFC 3711 §4.3: n_s = 112 bits).
const CM_SALT_LEN: usize = 14;

/// RFC 3711 §4.3.1 key derivation labels.
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

/// An SRTP protection profile negotiated by DTLS-SRTP (RFC 5764 §4.1.2, RFC 7714 §14.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// SRTP_AEAD_AES_128_GCM {0x00, 0x07} (RFC 7714).
    AeadAes128Gcm,
    /// SRTP_AES128_CM_HMAC_SHA1_80 {0x00, 0x01} (RFC 5764, RFC 3711).
    Aes128CmHmacSha1_80,
}

impl SrtpProfile {
    /// The profile for an OpenSSL/DTLS-SRTP profile name, if supported.
    pub fn from_dtls_name(name: &str) -> Option<Self> {
        match name {
            "SRTP_AEAD_AES_128_GCM" => Some(Self::AeadAes128Gcm),
            "SRTP_AES128_CM_SHA1_80" => Some(Self::Aes128CmHmacSha1_80),
            _ => None,
        }
    }

    /// The OpenSSL/DTLS-SRTP profile name.
    pub fn dtls_name(self) -> &'static str {
        match self {
            Self::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            Self::Aes128CmHmacSha1_80 => "SRTP_AES128_CM_SHA1_80",
        }
    }

    /// Master key length in octets.
    pub fn master_key_len(self) -> usize {
        AES_KEY_LEN
    }

    /// Master salt length in octets: 12 for GCM (RFC 7714 §12), 14 for AES-CM (RFC 3711 §8.2).
    pub fn master_salt_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm => GCM_IV_LEN,
            Self::Aes128CmHmacSha1_80 => CM_SALT_LEN,
        }
    }

    /// Octets `protect_rtp` appends: the authentication tag.
    pub fn rtp_overhead(self) -> usize {
        match self {
            Self::AeadAes128Gcm => GCM_TAG_LEN,
            Self::Aes128CmHmacSha1_80 => HMAC_TAG_LEN,
        }
    }

    /// Octets `protect_rtcp` appends: the tag and the E flag with SRTCP index.
    pub fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + SRTCP_INDEX_LEN
    }
}

/// Why a packet could not be protected or unprotected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpError {
    /// The packet is shorter than its headers and trailer require.
    TooShort,
    /// The packet is not RTP/RTCP version 2, or is longer than [`MAX_PACKET_LEN`].
    Malformed,
    /// The authentication tag does not verify.
    AuthFailed,
    /// The packet index was already accepted or is older than the replay window.
    Replay,
    /// The buffer has no room for the trailer `protect_*` appends.
    NoRoom,
    /// OpenSSL failed, or key material has the wrong length.
    Crypto,
    /// A new SSRC would exceed the context's SSRC limit ([`SrtpContext::set_max_ssrcs`]).
    TooManySsrcs,
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooShort => "srtp: packet too short",
            Self::Malformed => "srtp: malformed packet",
            Self::AuthFailed => "srtp: authentication failed",
            Self::Replay => "srtp: replayed or too old",
            Self::NoRoom => "srtp: no room for the trailer",
            Self::Crypto => "srtp: crypto error",
            Self::TooManySsrcs => "srtp: too many SSRCs",
        })
    }
}

impl std::error::Error for SrtpError {}

/// Session keys for one of SRTP or SRTCP (RFC 3711 §4.3). The salt uses the profile's length.
struct SessionKeys {
    enc: [u8; AES_KEY_LEN],
    salt: [u8; CM_SALT_LEN],
    auth: [u8; AUTH_KEY_LEN],
}

impl SessionKeys {
    /// Derives SRTP or SRTCP session keys from the master key (RFC 3711 §4.3.1, kdr = 0).
    fn derive(
        profile: SrtpProfile,
        master_key: &[u8; AES_KEY_LEN],
        master_salt: &[u8],
        labels: [u8; 3],
    ) -> Result<Self, SrtpError> {
        let [enc_label, auth_label, salt_label] = labels;
        let mut keys = Self {
            enc: [0; AES_KEY_LEN],
            salt: [0; CM_SALT_LEN],
            auth: [0; AUTH_KEY_LEN],
        };
        let salt_len = profile.master_salt_len();
        crypto::derive(master_key, master_salt, enc_label, &mut keys.enc)?;
        let salt = keys.salt.get_mut(..salt_len).ok_or(SrtpError::Crypto)?;
        crypto::derive(master_key, master_salt, salt_label, salt)?;
        if profile == SrtpProfile::Aes128CmHmacSha1_80 {
            crypto::derive(master_key, master_salt, auth_label, &mut keys.auth)?;
        }
        Ok(keys)
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        crypto::cleanse(&mut self.enc);
        crypto::cleanse(&mut self.salt);
        crypto::cleanse(&mut self.auth);
    }
}

/// The keyed transform for SRTP or for SRTCP.
// ring's GCM key (its key schedule and GHASH table, ~590 bytes) stays inline: it is read on every
// packet, and a Box would add a dependent load; a context holds four transforms at most.
#[allow(clippy::large_enum_variant)]
enum Transform {
    /// AES-128-CM encryption with HMAC-SHA1-80 authentication (RFC 3711 §4.1.1, §4.2.1).
    CmSha1 {
        cipher: AesCm,
        salt: [u8; CM_SALT_LEN],
        hmac: HmacSha1,
    },
    /// AEAD_AES_128_GCM (RFC 7714 §8, §9).
    Gcm {
        cipher: AesGcm,
        salt: [u8; GCM_IV_LEN],
    },
}

impl Transform {
    fn new(profile: SrtpProfile, keys: &SessionKeys) -> Result<Self, SrtpError> {
        Ok(match profile {
            SrtpProfile::Aes128CmHmacSha1_80 => Self::CmSha1 {
                cipher: AesCm::new(&keys.enc)?,
                salt: keys.salt,
                hmac: HmacSha1::new(&keys.auth)?,
            },
            SrtpProfile::AeadAes128Gcm => {
                let mut salt = [0u8; GCM_IV_LEN];
                let src = keys.salt.get(..GCM_IV_LEN).ok_or(SrtpError::Crypto)?;
                salt.copy_from_slice(src);
                Self::Gcm {
                    cipher: AesGcm::new(&keys.enc)?,
                    salt,
                }
            }
        })
    }
}

/// One direction (one master key), per-SSRC state (ROC, highest seq, replay window, SRTCP index).
pub struct SrtpContext {
    profile: SrtpProfile,
    rtp: Transform,
    rtcp: Transform,
    /// Highest SRTP packet index sent per SSRC (its top 32 bits are the ROC).
    rtp_tx: SsrcMap<u64>,
    /// Replay window (and highest index, hence ROC) per received SSRC.
    rtp_rx: SsrcMap<ReplayWindow>,
    /// Next SRTCP index to send per SSRC.
    rtcp_tx: SsrcMap<u32>,
    /// SRTCP replay window per received SSRC.
    rtcp_rx: SsrcMap<ReplayWindow>,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("rtp_tx_ssrcs", &self.rtp_tx.len())
            .field("rtp_rx_ssrcs", &self.rtp_rx.len())
            .field("rtcp_tx_ssrcs", &self.rtcp_tx.len())
            .field("rtcp_rx_ssrcs", &self.rtcp_rx.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derives the session keys from `master_key`/`master_salt` and keys the OpenSSL contexts.
    pub fn new(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, SrtpError> {
        if master_salt.len() != profile.master_salt_len() {
            return Err(SrtpError::Crypto);
        }
        let mut key: [u8; AES_KEY_LEN] = master_key.try_into().map_err(|_| SrtpError::Crypto)?;
        let derived = SessionKeys::derive(
            profile,
            &key,
            master_salt,
            [LABEL_RTP_ENCRYPTION, LABEL_RTP_AUTH, LABEL_RTP_SALT],
        )
        .and_then(|rtp| {
            let rtcp = SessionKeys::derive(
                profile,
                &key,
                master_salt,
                [LABEL_RTCP_ENCRYPTION, LABEL_RTCP_AUTH, LABEL_RTCP_SALT],
            )?;
            Ok((rtp, rtcp))
        });
        crypto::cleanse(&mut key);
        let (rtp, rtcp) = derived?;
        Self::with_session_keys(profile, &rtp, &rtcp)
    }

    /// Builds a context from already-derived session keys (RFC 7714 §16 vectors give these).
    fn with_session_keys(
        profile: SrtpProfile,
        rtp: &SessionKeys,
        rtcp: &SessionKeys,
    ) -> Result<Self, SrtpError> {
        Ok(Self {
            profile,
            rtp: Transform::new(profile, rtp)?,
            rtcp: Transform::new(profile, rtcp)?,
            rtp_tx: SsrcMap::new(RESERVED_SSRCS, DEFAULT_MAX_SSRCS),
            rtp_rx: SsrcMap::new(RESERVED_SSRCS, DEFAULT_MAX_SSRCS),
            rtcp_tx: SsrcMap::new(RESERVED_SSRCS, DEFAULT_MAX_SSRCS),
            rtcp_rx: SsrcMap::new(RESERVED_SSRCS, DEFAULT_MAX_SSRCS),
        })
    }

    /// The protection profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Sets how many SSRCs each per-SSRC table may hold (default [`DEFAULT_MAX_SSRCS`]).
    pub fn set_max_ssrcs(&mut self, limit: usize) {
        self.rtp_tx.set_limit(limit);
        self.rtp_rx.set_limit(limit);
        self.rtcp_tx.set_limit(limit);
        self.rtcp_rx.set_limit(limit);
    }

    /// The rollover counter of a received SSRC (highest authenticated index DIV 2^16).
    pub fn rx_roc(&self, ssrc: u32) -> Option<u32> {
        self.rtp_rx.get(ssrc).map(|w| (w.highest() >> 16) as u32)
    }

    /// The rollover counter of a sent SSRC.
    pub fn tx_roc(&self, ssrc: u32) -> Option<u32> {
        self.rtp_tx.get(ssrc).map(|highest| (highest >> 16) as u32)
    }

    /// buf[..len] is a plain RTP packet; buf.len() >= len + rtp_overhead. Encrypts in place, appends the tag.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len > MAX_PACKET_LEN {
            return Err(SrtpError::Malformed);
        }
        let packet = buf.get(..len).ok_or(SrtpError::NoRoom)?;
        let header = RtpHeader::parse(packet)?;
        let tag_len = self.profile.rtp_overhead();
        let total = len + tag_len;
        if total > buf.len() {
            return Err(SrtpError::NoRoom);
        }

        // RFC 3711 §3.3.1: the sender keeps its own ROC; estimating from the highest index sent
        // also gives a retransmitted older packet the index it had the first time.
        let index = match self.rtp_tx.get_mut(header.ssrc) {
            Some(highest) => {
                let index = estimate_index(*highest, header.seq).unwrap_or(u64::from(header.seq));
                *highest = (*highest).max(index);
                index
            }
            None => *self.rtp_tx.insert(header.ssrc, u64::from(header.seq))?,
        };
        let roc = (index >> 16) as u32;

        let (packet, trailer) = buf.split_at_mut(len);
        let trailer = trailer.get_mut(..tag_len).ok_or(SrtpError::NoRoom)?;
        match &mut self.rtp {
            Transform::CmSha1 { cipher, salt, hmac } => {
                let iv = cm_iv(salt, header.ssrc, index);
                let payload = packet.get_mut(header.len..).ok_or(SrtpError::TooShort)?;
                cipher.apply(&iv, payload)?;
                // RFC 3711 §4.2: the tag covers the authenticated portion followed by the ROC.
                let mut mac = [0u8; SHA1_LEN];
                hmac.compute(&[packet, &roc.to_be_bytes()], &mut mac)?;
                trailer.copy_from_slice(mac.get(..HMAC_TAG_LEN).ok_or(SrtpError::Crypto)?);
            }
            Transform::Gcm { cipher, salt } => {
                let iv = gcm_rtp_iv(salt, header.ssrc, roc, header.seq);
                let (aad, payload) = packet.split_at_mut(header.len);
                let mut tag = [0u8; GCM_TAG_LEN];
                // RFC 7714 §8.2: the RTP header, CSRCs and extension are the associated data.
                cipher.seal(&iv, &[aad], payload, &mut tag)?;
                trailer.copy_from_slice(&tag);
            }
        }
        Ok(total)
    }

    /// Authenticates and decrypts in place; returns the plain RTP length. Replays are refused.
    ///
    /// State (ROC, replay window) changes only when the packet authenticates. On error the
    /// buffer's contents are unspecified and the packet must be dropped.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtp_overhead();
        if buf.len() > MAX_PACKET_LEN + tag_len {
            return Err(SrtpError::Malformed);
        }
        let auth_end = buf.len().checked_sub(tag_len).ok_or(SrtpError::TooShort)?;
        let (packet, tag) = buf.split_at_mut(auth_end);
        let header = RtpHeader::parse(packet)?;

        // RFC 3711 §3.3.1-3.3.2: guess the index, refuse replays before spending any crypto.
        let window = self.rtp_rx.get(header.ssrc);
        let index = match window {
            Some(w) => {
                let index = estimate_index(w.highest(), header.seq).ok_or(SrtpError::Replay)?;
                w.check(index)?;
                index
            }
            None => u64::from(header.seq),
        };
        let roc = (index >> 16) as u32;

        match &mut self.rtp {
            Transform::CmSha1 { cipher, salt, hmac } => {
                let mut mac = [0u8; SHA1_LEN];
                hmac.compute(&[packet, &roc.to_be_bytes()], &mut mac)?;
                let expected = mac.get(..HMAC_TAG_LEN).ok_or(SrtpError::Crypto)?;
                if !openssl::memcmp::eq(expected, tag) {
                    return Err(SrtpError::AuthFailed);
                }
                let iv = cm_iv(salt, header.ssrc, index);
                let payload = packet.get_mut(header.len..).ok_or(SrtpError::TooShort)?;
                cipher.apply(&iv, payload)?;
            }
            Transform::Gcm { cipher, salt } => {
                let tag: &[u8; GCM_TAG_LEN] =
                    (&*tag).try_into().map_err(|_| SrtpError::TooShort)?;
                let iv = gcm_rtp_iv(salt, header.ssrc, roc, header.seq);
                let (aad, payload) = packet.split_at_mut(header.len);
                cipher.open(&iv, &[aad], payload, tag)?;
            }
        }

        // Authenticated: now commit the index.
        match self.rtp_rx.get_mut(header.ssrc) {
            Some(w) => w.commit(index),
            None => {
                self.rtp_rx.insert(header.ssrc, ReplayWindow::new(index))?;
            }
        }
        Ok(auth_end)
    }

    /// buf[..len] is a plain (compound) RTCP packet; buf.len() >= len + rtcp_overhead. Encrypts in
    /// place (E = 1) and appends the SRTCP index and tag.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len > MAX_PACKET_LEN {
            return Err(SrtpError::Malformed);
        }
        let packet = buf.get(..len).ok_or(SrtpError::NoRoom)?;
        let ssrc = rtcp_sender_ssrc(packet)?;
        let total = len + self.profile.rtcp_overhead();
        if total > buf.len() {
            return Err(SrtpError::NoRoom);
        }

        // RFC 3711 §3.4: the SRTCP index starts at zero and counts packets modulo 2^31.
        let index = match self.rtcp_tx.get_mut(ssrc) {
            Some(next) => {
                let index = *next;
                *next = (index + 1) & SRTCP_INDEX_MASK;
                index
            }
            None => {
                self.rtcp_tx.insert(ssrc, 1)?;
                0
            }
        };
        let e_index = (SRTCP_E_FLAG | index).to_be_bytes();

        let (packet, trailer) = buf.split_at_mut(len);
        let (header, payload) = packet.split_at_mut(RTCP_HEADER_LEN);
        match &mut self.rtcp {
            Transform::CmSha1 { cipher, salt, hmac } => {
                // RFC 3711 §3.4:  header | encrypted payload | E+SRTCP index | tag
                let iv = cm_iv(salt, ssrc, u64::from(index));
                cipher.apply(&iv, payload)?;
                let (index_field, tag_field) = trailer.split_at_mut(SRTCP_INDEX_LEN);
                index_field.copy_from_slice(&e_index);
                let mut mac = [0u8; SHA1_LEN];
                hmac.compute(&[header, payload, &e_index], &mut mac)?;
                let tag_field = tag_field.get_mut(..HMAC_TAG_LEN).ok_or(SrtpError::NoRoom)?;
                tag_field.copy_from_slice(mac.get(..HMAC_TAG_LEN).ok_or(SrtpError::Crypto)?);
            }
            Transform::Gcm { cipher, salt } => {
                // RFC 7714 §9.2:  header | ciphertext | tag | E+SRTCP index
                // with AAD = header | E+SRTCP index (§9.3, §17).
                let iv = gcm_rtcp_iv(salt, ssrc, index);
                let mut tag = [0u8; GCM_TAG_LEN];
                cipher.seal(&iv, &[header, &e_index], payload, &mut tag)?;
                let (tag_field, index_field) = trailer.split_at_mut(GCM_TAG_LEN);
                tag_field.copy_from_slice(&tag);
                index_field
                    .get_mut(..SRTCP_INDEX_LEN)
                    .ok_or(SrtpError::NoRoom)?
                    .copy_from_slice(&e_index);
            }
        }
        Ok(total)
    }

    /// Authenticates and, if the E flag is set, decrypts in place; returns the plain RTCP length.
    /// Replayed SRTCP indices are refused; state changes only when the packet authenticates.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtcp_overhead();
        if buf.len() > MAX_PACKET_LEN + overhead {
            return Err(SrtpError::Malformed);
        }
        let plain_end = buf.len().checked_sub(overhead).ok_or(SrtpError::TooShort)?;
        let ssrc = rtcp_sender_ssrc(buf.get(..plain_end).ok_or(SrtpError::TooShort)?)?;

        // The E+index word sits after the payload for AES-CM, at the very end for GCM.
        let index_at = match self.profile {
            SrtpProfile::Aes128CmHmacSha1_80 => plain_end,
            SrtpProfile::AeadAes128Gcm => plain_end + GCM_TAG_LEN,
        };
        let e_index: [u8; SRTCP_INDEX_LEN] = buf
            .get(index_at..index_at + SRTCP_INDEX_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(SrtpError::TooShort)?;
        let word = u32::from_be_bytes(e_index);
        let encrypted = word & SRTCP_E_FLAG != 0;
        let index = word & SRTCP_INDEX_MASK;

        if let Some(w) = self.rtcp_rx.get(ssrc) {
            w.check(u64::from(index))?;
        }

        match &mut self.rtcp {
            Transform::CmSha1 { cipher, salt, hmac } => {
                // header | payload | E+index | tag; the tag covers everything before it.
                let auth_end = plain_end + SRTCP_INDEX_LEN;
                let (authed, tag) = buf.split_at_mut(auth_end);
                let mut mac = [0u8; SHA1_LEN];
                hmac.compute(&[authed], &mut mac)?;
                let expected = mac.get(..HMAC_TAG_LEN).ok_or(SrtpError::Crypto)?;
                if !openssl::memcmp::eq(expected, tag) {
                    return Err(SrtpError::AuthFailed);
                }
                if encrypted {
                    let iv = cm_iv(salt, ssrc, u64::from(index));
                    let payload = authed
                        .get_mut(RTCP_HEADER_LEN..plain_end)
                        .ok_or(SrtpError::TooShort)?;
                    cipher.apply(&iv, payload)?;
                }
            }
            Transform::Gcm { cipher, salt } => {
                let (packet, rest) = buf.split_at_mut(plain_end);
                let tag: &[u8; GCM_TAG_LEN] = rest
                    .get(..GCM_TAG_LEN)
                    .and_then(|t| t.try_into().ok())
                    .ok_or(SrtpError::TooShort)?;
                let iv = gcm_rtcp_iv(salt, ssrc, index);
                if encrypted {
                    let (header, payload) = packet.split_at_mut(RTCP_HEADER_LEN);
                    cipher.open(&iv, &[header, &e_index], payload, tag)?;
                } else {
                    // RFC 7714 §9.3: unencrypted SRTCP authenticates the whole packet as AAD.
                    cipher.open(&iv, &[packet, &e_index], &mut [], tag)?;
                }
            }
        }

        match self.rtcp_rx.get_mut(ssrc) {
            Some(w) => w.commit(u64::from(index)),
            None => {
                self.rtcp_rx
                    .insert(ssrc, ReplayWindow::new(u64::from(index)))?;
            }
        }
        Ok(plain_end)
    }
}

/// The fields of an RTP header that SRTP needs.
struct RtpHeader {
    /// Header length: fixed header, CSRC list and extension.
    len: usize,
    seq: u16,
    ssrc: u32,
}

impl RtpHeader {
    /// RFC 3550 §5.1 and §5.3.1: finds where the payload starts, with bounds checks.
    ///
    /// ```text
    ///  0                   1                   2                   3
    ///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    /// |                           timestamp                           |
    /// |           synchronization source (SSRC) identifier            |
    /// |            contributing source (CSRC) identifiers (CC)        |
    /// |      defined by profile       |        length (words)         |  if X
    /// |                        header extension                       |  if X
    /// ```
    fn parse(packet: &[u8]) -> Result<Self, SrtpError> {
        let fixed: &[u8; RTP_HEADER_LEN] = packet
            .get(..RTP_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(SrtpError::TooShort)?;
        let [b0, _, s0, s1, _, _, _, _, c0, c1, c2, c3] = *fixed;
        if b0 >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let csrc_count = usize::from(b0 & 0x0f);
        let mut len = RTP_HEADER_LEN + 4 * csrc_count;
        if b0 & 0x10 != 0 {
            let ext = packet.get(len..len + 4).ok_or(SrtpError::TooShort)?;
            let words = match ext {
                [_, _, l0, l1] => usize::from(u16::from_be_bytes([*l0, *l1])),
                _ => return Err(SrtpError::TooShort),
            };
            len += 4 + 4 * words;
        }
        if len > packet.len() {
            return Err(SrtpError::TooShort);
        }
        Ok(Self {
            len,
            seq: u16::from_be_bytes([s0, s1]),
            ssrc: u32::from_be_bytes([c0, c1, c2, c3]),
        })
    }
}

/// RFC 3550 §6.4.1: checks the version of the first RTCP header and returns the sender SSRC.
///
/// ```text
/// |V=2|P|    RC   |   PT          |             length            |
/// |                         SSRC of sender                        |
/// ```
fn rtcp_sender_ssrc(packet: &[u8]) -> Result<u32, SrtpError> {
    let header: &[u8; RTCP_HEADER_LEN] = packet
        .get(..RTCP_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(SrtpError::TooShort)?;
    let [b0, _, _, _, s0, s1, s2, s3] = *header;
    if b0 >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    Ok(u32::from_be_bytes([s0, s1, s2, s3]))
}

/// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16).
///
/// ```text
/// octet:  0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
/// k_s:   [ session salt, 14 octets                   ] 00 00
/// SSRC:              [   SSRC    ]
/// i:                             [  index, 48 bits   ]
/// ```
/// For SRTCP, i is the 31-bit SRTCP index.
fn cm_iv(salt: &[u8; CM_SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    let (head, _) = iv.split_at_mut(CM_SALT_LEN);
    head.copy_from_slice(salt);
    for (dst, src) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *dst ^= src;
    }
    // The low 48 bits of the index, big-endian, in octets 8..14.
    for (dst, src) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *dst ^= src;
    }
    iv
}

/// RFC 7714 §8.1: the SRTP GCM IV.
///
/// ```text
///   0  1  2  3  4  5  6  7  8  9 10 11
/// |00|00|    SSRC   |    ROC    | SEQ |   XOR   salt (12 octets)
/// ```
fn gcm_rtp_iv(salt: &[u8; GCM_IV_LEN], ssrc: u32, roc: u32, seq: u16) -> [u8; GCM_IV_LEN] {
    let mut iv = *salt;
    let ssrc = ssrc.to_be_bytes();
    let roc = roc.to_be_bytes();
    let seq = seq.to_be_bytes();
    let fields = [
        0, 0, ssrc[0], ssrc[1], ssrc[2], ssrc[3], roc[0], roc[1], roc[2], roc[3], seq[0], seq[1],
    ];
    for (dst, src) in iv.iter_mut().zip(fields) {
        *dst ^= src;
    }
    iv
}

/// RFC 7714 §9.1: the SRTCP GCM IV.
///
/// ```text
///   0  1  2  3  4  5  6  7  8  9 10 11
/// |00|00|    SSRC   |00|00|0+SRTCP idx|   XOR   salt (12 octets)
/// ```
fn gcm_rtcp_iv(salt: &[u8; GCM_IV_LEN], ssrc: u32, index: u32) -> [u8; GCM_IV_LEN] {
    let mut iv = *salt;
    let ssrc = ssrc.to_be_bytes();
    let index = (index & SRTCP_INDEX_MASK).to_be_bytes();
    let fields = [
        0, 0, ssrc[0], ssrc[1], ssrc[2], ssrc[3], 0, 0, index[0], index[1], index[2], index[3],
    ];
    for (dst, src) in iv.iter_mut().zip(fields) {
        *dst ^= src;
    }
    iv
}
