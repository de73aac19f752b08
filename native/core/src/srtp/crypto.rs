//! The primitives of SRTP, keyed once per session key and reused for every packet: OpenSSL for AES-CM
//! and HMAC-SHA1, ring for AES-GCM (see `AesGcm`).
//!
//! Nothing here allocates on the Rust heap per packet: each call re-initialises an existing
//! OpenSSL context with a new IV (AES-CM) or with the cached key (HMAC), or calls ring's keyed AEAD.

use std::ffi::{c_int, c_uint, c_void};
use std::ptr::{self, NonNull};

use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use openssl_sys as ffi;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_128_GCM};

use super::SrtpError;

/// AES-128 key length in octets (RFC 3711 §4.1.1, RFC 7714 §12).
pub(crate) const AES_KEY_LEN: usize = 16;
/// HMAC-SHA1 session authentication key length, n_a = 160 bits (RFC 3711 §4.2.1, §8.2).
pub(crate) const AUTH_KEY_LEN: usize = 20;
/// HMAC-SHA1 output length before truncation.
pub(crate) const SHA1_LEN: usize = 20;
/// GCM authentication tag length (RFC 7714 §12: AEAD_AES_128_GCM has a 16-octet tag).
pub(crate) const GCM_TAG_LEN: usize = 16;
/// GCM IV length (RFC 7714 §8.1).
pub(crate) const GCM_IV_LEN: usize = 12;

/// Wipes key material from the stack once it has been handed to OpenSSL.
pub(crate) fn cleanse(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, exclusively borrowed byte; the volatile write keeps the compiler
        // from eliding a store to memory that is about to go out of scope.
        unsafe { ptr::write_volatile(b, 0) }
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// RFC 3711 §4.3.1 key derivation with the AES-CM PRF of §4.3.3 and kdr = 0.
///
/// With kdr = 0, r = index DIV kdr is zero, so key_id = label || 0^48 and
/// x = key_id XOR master_salt, where key_id is right-aligned to the salt: the label lands in octet 7
/// of the salt. The PRF input block is x * 2^16 (two zero octets appended); the output is the
/// AES-CM keystream from that block, truncated to `out.len()`. RFC 7714 §11 uses the same KDF with
/// a 12-octet master salt, which sits in octets 0..12 followed by zeros.
pub(crate) fn derive(
    master_key: &[u8; AES_KEY_LEN],
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) -> Result<(), SrtpError> {
    let mut iv = [0u8; 16];
    let salt_dst = iv.get_mut(..master_salt.len()).ok_or(SrtpError::Crypto)?;
    salt_dst.copy_from_slice(master_salt);
    iv[7] ^= label;
    let mut prf = AesCm::new(master_key)?;
    out.fill(0);
    prf.apply(&iv, out)
}

/// AES-128 in counter mode (RFC 3711 §4.1.1): the key is set once, each packet sets only the IV.
pub(crate) struct AesCm {
    ctx: CipherCtx,
}

impl AesCm {
    /// Keys a counter-mode context.
    pub(crate) fn new(key: &[u8; AES_KEY_LEN]) -> Result<Self, SrtpError> {
        let mut ctx = CipherCtx::new().map_err(|_| SrtpError::Crypto)?;
        ctx.encrypt_init(Some(Cipher::aes_128_ctr()), Some(key), None)
            .map_err(|_| SrtpError::Crypto)?;
        Ok(Self { ctx })
    }

    /// XORs the keystream that starts at counter block `iv` into `data`, in place.
    ///
    /// OpenSSL increments the whole 128-bit block while SRTP increments its low 16 bits; they agree
    /// as long as a packet is below 2^16 blocks, which the caller's length limit guarantees.
    pub(crate) fn apply(&mut self, iv: &[u8; 16], data: &mut [u8]) -> Result<(), SrtpError> {
        self.ctx
            .encrypt_init(None, None, Some(iv))
            .map_err(|_| SrtpError::Crypto)?;
        let len = data.len();
        self.ctx
            .cipher_update_inplace(data, len)
            .map_err(|_| SrtpError::Crypto)?;
        Ok(())
    }
}

/// AES-128-GCM (RFC 7714) with ring's AEAD, keyed once (the key schedule and GHASH table are made
/// here); a packet is one call with its IV and associated data. Chosen over OpenSSL's EVP for this one
/// cipher because every EVP call on an OpenSSL 3 provider resolves parameters by name (IV length, tag):
/// callgrind put that at about 15 % of a forwarded packet's instructions.
pub(crate) struct AesGcm {
    key: LessSafeKey,
    /// Associated data given in several parts (SRTCP: header, then E || index), joined here: ring takes
    /// one slice. Grows to the longest seen, then is reused.
    aad: Vec<u8>,
}

impl AesGcm {
    pub(crate) fn new(key: &[u8; AES_KEY_LEN]) -> Result<Self, SrtpError> {
        let unbound = UnboundKey::new(&AES_128_GCM, key).map_err(|_| SrtpError::Crypto)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            aad: Vec::new(),
        })
    }

    /// The associated data as one slice: the only part, or the parts joined in `self.aad`.
    fn joined<'a>(aad_buf: &'a mut Vec<u8>, parts: &[&'a [u8]]) -> &'a [u8] {
        if let [only] = parts {
            return only;
        }
        aad_buf.clear();
        for part in parts {
            aad_buf.extend_from_slice(part);
        }
        aad_buf
    }

    /// Encrypts `data` in place and writes the tag over `aad` (the concatenation of its parts).
    pub(crate) fn seal(
        &mut self,
        iv: &[u8; GCM_IV_LEN],
        aad: &[&[u8]],
        data: &mut [u8],
        tag: &mut [u8; GCM_TAG_LEN],
    ) -> Result<(), SrtpError> {
        let aad = Self::joined(&mut self.aad, aad);
        let t = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*iv), Aad::from(aad), data)
            .map_err(|_| SrtpError::Crypto)?;
        tag.copy_from_slice(t.as_ref());
        Ok(())
    }

    /// Decrypts `data` in place and checks `tag`; `AuthFailed` if it does not verify.
    ///
    /// On failure `data` holds no plaintext the caller may use and must be dropped.
    pub(crate) fn open(
        &mut self,
        iv: &[u8; GCM_IV_LEN],
        aad: &[&[u8]],
        data: &mut [u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<(), SrtpError> {
        let aad = Self::joined(&mut self.aad, aad);
        self.key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*iv),
                Aad::from(aad),
                Tag::from(*tag),
                data,
                0..,
            )
            .map_err(|_| SrtpError::AuthFailed)?;
        Ok(())
    }
}

/// HMAC-SHA1 (RFC 2104) with the key schedule cached in one `HMAC_CTX`.
///
/// `HMAC_Init_ex(ctx, NULL, 0, NULL, NULL)` restarts from the stored inner/outer pads without
/// re-hashing the key, so per packet it costs one context copy instead of a new signer.
/// Chosen over OpenSSL 3's `EVP_MAC` because in 3.0 the HMAC provider wraps this same `HMAC_CTX`:
/// measured with callgrind on 104 octets, `EVP_MAC` reuse costs ~10% more instructions and a
/// per-packet `openssl::sign::Signer` ~24x more time. `HMAC_CTX` is deprecated in OpenSSL 3; a
/// build with `no-deprecated` would need the `EVP_MAC` equivalent.
pub(crate) struct HmacSha1 {
    ctx: NonNull<ffi::HMAC_CTX>,
}

// SAFETY: the HMAC_CTX is owned exclusively by this value and never shared; OpenSSL contexts may be
// used from any thread as long as one thread uses them at a time, which `&mut self` guarantees.
unsafe impl Send for HmacSha1 {}

impl HmacSha1 {
    /// Creates a context keyed with `key`.
    pub(crate) fn new(key: &[u8]) -> Result<Self, SrtpError> {
        let len = c_int::try_from(key.len()).map_err(|_| SrtpError::Crypto)?;
        // SAFETY: HMAC_CTX_new has no preconditions; a null return is handled.
        let raw = unsafe { ffi::HMAC_CTX_new() };
        let ctx = NonNull::new(raw).ok_or(SrtpError::Crypto)?;
        let this = Self { ctx };
        // SAFETY: ctx is a live HMAC_CTX; key points to `len` readable bytes; EVP_sha1 returns a
        // static digest; no engine.
        let ok = unsafe {
            ffi::HMAC_Init_ex(
                this.ctx.as_ptr(),
                key.as_ptr().cast::<c_void>(),
                len,
                ffi::EVP_sha1(),
                ptr::null_mut(),
            )
        };
        if ok != 1 {
            return Err(SrtpError::Crypto);
        }
        Ok(this)
    }

    /// Computes HMAC-SHA1 over the concatenation of `parts`.
    pub(crate) fn compute(
        &mut self,
        parts: &[&[u8]],
        out: &mut [u8; SHA1_LEN],
    ) -> Result<(), SrtpError> {
        let ctx = self.ctx.as_ptr();
        // SAFETY: ctx is live and was keyed in `new`; a null key and md reuse that key and digest.
        if unsafe { ffi::HMAC_Init_ex(ctx, ptr::null(), 0, ptr::null(), ptr::null_mut()) } != 1 {
            return Err(SrtpError::Crypto);
        }
        for part in parts {
            // SAFETY: part points to part.len() readable bytes.
            if unsafe { ffi::HMAC_Update(ctx, part.as_ptr(), part.len()) } != 1 {
                return Err(SrtpError::Crypto);
            }
        }
        let mut written: c_uint = 0;
        // SAFETY: out has room for a SHA-1 digest (20 bytes), the most HMAC_Final writes here.
        if unsafe { ffi::HMAC_Final(ctx, out.as_mut_ptr(), &mut written) } != 1
            || written as usize != SHA1_LEN
        {
            return Err(SrtpError::Crypto);
        }
        Ok(())
    }
}

impl Drop for HmacSha1 {
    fn drop(&mut self) {
        // SAFETY: ctx came from HMAC_CTX_new and is freed exactly once; HMAC_CTX_free also wipes
        // the cached key pads.
        unsafe { ffi::HMAC_CTX_free(self.ctx.as_ptr()) }
    }
}
