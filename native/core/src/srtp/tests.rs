//! RFC test vectors (RFC 3711 appendix B, RFC 7714 §16 and §17) and libsrtp reference packets.

use super::crypto::derive;
use super::*;

/// Hex to bytes, ignoring whitespace.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("test hex is ASCII");
            u8::from_str_radix(text, 16).expect("test hex is valid")
        })
        .collect()
}

/// A context keyed directly with session keys (the RFC 7714 and B.2 vectors give session keys).
fn with_session_keys(profile: SrtpProfile, key: &str, salt: &str) -> SrtpContext {
    let mut keys = SessionKeys {
        enc: [0; AES_KEY_LEN],
        salt: [0; CM_SALT_LEN],
        auth: [0; AUTH_KEY_LEN],
    };
    keys.enc.copy_from_slice(&hex(key));
    let salt = hex(salt);
    keys.salt[..salt.len()].copy_from_slice(&salt);
    SrtpContext::with_session_keys(profile, &keys, &keys).expect("session keys are valid")
}

/// Protects `plain` into a fresh buffer and returns the wire bytes.
fn protect_rtp(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + ctx.profile().rtp_overhead(), 0);
    let n = ctx.protect_rtp(&mut buf, plain.len()).expect("protects");
    buf.truncate(n);
    buf
}

fn protect_rtcp(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + ctx.profile().rtcp_overhead(), 0);
    let n = ctx.protect_rtcp(&mut buf, plain.len()).expect("protects");
    buf.truncate(n);
    buf
}

fn unprotect_rtp(ctx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = wire.to_vec();
    let n = ctx.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtcp(ctx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = wire.to_vec();
    let n = ctx.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

// ---- RFC 3711 appendix B -------------------------------------------------------------------

/// RFC 3711 B.2: the AES-CM keystream for session key 2B7E..., salt F0F1...FD, SSRC 0, i = 0,
/// over its full 65282-block segment, produced by protecting an all-zero payload.
#[test]
fn rfc3711_b_2_aes_cm_keystream() {
    let mut ctx = with_session_keys(
        SrtpProfile::Aes128CmHmacSha1_80,
        "2B7E151628AED2A6ABF7158809CF4F3C",
        "F0F1F2F3F4F5F6F7F8F9FAFBFCFD",
    );
    const SEGMENT: usize = 1_044_512;
    // V=2, seq 0, timestamp 0, SSRC 0, so the IV is exactly salt * 2^16.
    let mut plain = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    plain.resize(12 + SEGMENT, 0);
    let wire = protect_rtp(&mut ctx, &plain);
    let keystream = &wire[12..12 + SEGMENT];
    let block = |counter: usize| &keystream[counter * 16..counter * 16 + 16];
    assert_eq!(block(0x0000), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
    assert_eq!(block(0x0001), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
    assert_eq!(block(0x0002), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
    assert_eq!(block(0xFEFF), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
    assert_eq!(block(0xFF00), hex("362B7C3C6773516318A077D7FC5073AE"));
    assert_eq!(block(0xFF01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
}

/// RFC 3711 B.3: session keys derived from master key E1F9... and master salt 0EC6....
#[test]
fn rfc3711_b_3_key_derivation() {
    let master_key: [u8; 16] = hex("E1F97A0D3E018BE0D64FA32C06DE4139")
        .try_into()
        .expect("16 octets");
    let master_salt = hex("0EC675AD498AFEEBB6960B3AABE6");

    let mut cipher_key = [0u8; 16];
    derive(&master_key, &master_salt, 0x00, &mut cipher_key).expect("derives");
    assert_eq!(cipher_key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));

    let mut cipher_salt = [0u8; 14];
    derive(&master_key, &master_salt, 0x02, &mut cipher_salt).expect("derives");
    assert_eq!(cipher_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));

    // The RFC shows 94 octets of auth key; SHA1-80 uses the first 20.
    let mut auth_key = [0u8; 94];
    derive(&master_key, &master_salt, 0x01, &mut auth_key).expect("derives");
    let expected = hex(
        "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
         E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
         6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2",
    );
    assert_eq!(auth_key.to_vec(), expected);

    let keys = SessionKeys::derive(
        SrtpProfile::Aes128CmHmacSha1_80,
        &master_key,
        &master_salt,
        [LABEL_RTP_ENCRYPTION, LABEL_RTP_AUTH, LABEL_RTP_SALT],
    )
    .expect("derives");
    assert_eq!(keys.enc, cipher_key);
    assert_eq!(keys.salt, cipher_salt);
    assert_eq!(keys.auth[..], expected[..20]);
}

// ---- RFC 7714 §16 (SRTP) and §17 (SRTCP), AEAD_AES_128_GCM ---------------------------------

const RFC7714_KEY: &str = "000102030405060708090a0b0c0d0e0f";
/// "Quid pro quo".
const RFC7714_SALT: &str = "517569642070726f2071756f";
/// Header 8040f17b 8041f8d3 5501a0b2 and "Gallia est omnis divisa in partes tres".
const RFC7714_RTP: &str = "8040f17b8041f8d35501a0b2
    47616c6c696120657374206f6d6e697320646976 69736120696e207061727465732074726573";
const RFC7714_16_1_SRTP: &str = "8040f17b8041f8d35501a0b2
    f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833
    899d7f27beb16a9152cf765ee4390cce";
const RFC7714_RTCP: &str = "81c8000d4d617273
    4e5450314e545032525450200000042a0000e9304c756e61
    deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";
/// Header | ciphertext | tag | E=1, SRTCP index 0x5d4.
const RFC7714_17_1_SRTCP: &str = "81c8000d4d617273
    63e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b4686303ded0bb9275b
    c84aa45896cf4d2fc5abf87245d9eade
    800005d4";

fn rfc7714_context() -> SrtpContext {
    with_session_keys(SrtpProfile::AeadAes128Gcm, RFC7714_KEY, RFC7714_SALT)
}

#[test]
fn rfc7714_8_1_and_9_1_iv_formation() {
    let salt: [u8; 12] = hex(RFC7714_SALT).try_into().expect("12 octets");
    assert_eq!(
        gcm_rtp_iv(&salt, 0x5501_a0b2, 0, 0xf17b).to_vec(),
        hex("51753c6580c2726f20718414")
    );
    assert_eq!(
        gcm_rtcp_iv(&salt, 0x4d61_7273, 0x5d4).to_vec(),
        hex("517524055203726f207170bb")
    );
}

#[test]
fn rfc7714_16_1_1_srtp_aead_aes_128_gcm_encryption() {
    let mut ctx = rfc7714_context();
    assert_eq!(
        protect_rtp(&mut ctx, &hex(RFC7714_RTP)),
        hex(RFC7714_16_1_SRTP)
    );
}

#[test]
fn rfc7714_16_1_2_srtp_aead_aes_128_gcm_decryption() {
    let mut ctx = rfc7714_context();
    assert_eq!(
        unprotect_rtp(&mut ctx, &hex(RFC7714_16_1_SRTP)),
        Ok(hex(RFC7714_RTP))
    );
    // Every single-bit flip, header and tag included, is refused.
    let wire = hex(RFC7714_16_1_SRTP);
    for bit in 0..wire.len() * 8 {
        let mut ctx = rfc7714_context();
        let mut bad = wire.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let result = unprotect_rtp(&mut ctx, &bad);
        assert!(result.is_err(), "bit {bit} flipped was accepted");
    }
}

#[test]
fn rfc7714_17_1_srtcp_aead_aes_128_gcm_encryption_and_tagging() {
    let mut ctx = rfc7714_context();
    ctx.rtcp_tx
        .insert(0x4d61_7273, 0x5d4)
        .expect("room for one SSRC");
    assert_eq!(
        protect_rtcp(&mut ctx, &hex(RFC7714_RTCP)),
        hex(RFC7714_17_1_SRTCP)
    );
    let mut rx = rfc7714_context();
    assert_eq!(
        unprotect_rtcp(&mut rx, &hex(RFC7714_17_1_SRTCP)),
        Ok(hex(RFC7714_RTCP))
    );
}

/// §17.3: E = 0, the whole RTCP packet and the index word are associated data.
#[test]
fn rfc7714_17_3_srtcp_aead_aes_128_gcm_tagging_only() {
    let mut wire = hex(RFC7714_RTCP);
    wire.extend(hex("841dd9683dd78ec92ae58790125f62b3 000005d4"));
    let mut ctx = rfc7714_context();
    assert_eq!(unprotect_rtcp(&mut ctx, &wire), Ok(hex(RFC7714_RTCP)));
    // The same bytes with the E flag set do not verify.
    let len = wire.len();
    wire[len - 4] |= 0x80;
    let mut ctx = rfc7714_context();
    assert_eq!(unprotect_rtcp(&mut ctx, &wire), Err(SrtpError::AuthFailed));
}

// ---- libsrtp reference packets (test/srtp_driver.c), through the full KDF ------------------

const LIBSRTP_RTP: &str = "800f1234decafbadcafebabe abababababababababababababababab";
const LIBSRTP_RTCP: &str = "81c8000bcafebabe abababababababababababababababab";

#[test]
fn libsrtp_reference_aes_cm_128_hmac_sha1_80() {
    let key = hex("e1f97a0d3e018be0d64fa32c06de4139");
    let salt = hex("0ec675ad498afeebb6960b3aabe6");
    let srtp =
        hex("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb");
    // libsrtp sends SRTCP index 1 first; RFC 3711 §3.4 (and this module) start at 0.
    let srtcp =
        hex("81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798");

    let mut tx = SrtpContext::new(SrtpProfile::Aes128CmHmacSha1_80, &key, &salt).expect("keys");
    assert_eq!(protect_rtp(&mut tx, &hex(LIBSRTP_RTP)), srtp);
    tx.rtcp_tx.insert(0xcafe_babe, 1).expect("room");
    assert_eq!(protect_rtcp(&mut tx, &hex(LIBSRTP_RTCP)), srtcp);

    let mut rx = SrtpContext::new(SrtpProfile::Aes128CmHmacSha1_80, &key, &salt).expect("keys");
    assert_eq!(unprotect_rtp(&mut rx, &srtp), Ok(hex(LIBSRTP_RTP)));
    assert_eq!(unprotect_rtcp(&mut rx, &srtcp), Ok(hex(LIBSRTP_RTCP)));
}

#[test]
fn libsrtp_reference_aead_aes_128_gcm() {
    let key = hex("000102030405060708090a0b0c0d0e0f");
    let salt = hex("a0a1a2a3a4a5a6a7a8a9aaab");
    let srtp = hex(
        "800f1234decafbadcafebabe c5002ede04cfdd2eb91159e0880aa06e d2976826f796b201df3131a127e8a392",
    );
    let srtcp = hex(
        "81c8000bcafebabe c98b8b5df0392a55852b6c21ac8e7025 c52c6fbea2b3b446ea31123ba88ce61e 80000001",
    );

    let mut tx = SrtpContext::new(SrtpProfile::AeadAes128Gcm, &key, &salt).expect("keys");
    assert_eq!(protect_rtp(&mut tx, &hex(LIBSRTP_RTP)), srtp);
    tx.rtcp_tx.insert(0xcafe_babe, 1).expect("room");
    assert_eq!(protect_rtcp(&mut tx, &hex(LIBSRTP_RTCP)), srtcp);

    let mut rx = SrtpContext::new(SrtpProfile::AeadAes128Gcm, &key, &salt).expect("keys");
    assert_eq!(unprotect_rtp(&mut rx, &srtp), Ok(hex(LIBSRTP_RTP)));
    assert_eq!(unprotect_rtcp(&mut rx, &srtcp), Ok(hex(LIBSRTP_RTCP)));
}

/// A one-byte-header extension (0xBEDE, 6 words) stays in the clear and is authenticated.
#[test]
fn libsrtp_reference_aead_aes_128_gcm_header_extension() {
    let key = hex("e1f97a0d3e018be0d64fa32c06de4139");
    let salt = hex("0ec675ad498afeebb6960b3a");
    let header =
        "900f1234decafbadcafebabe bede0006 17414273a475262748220000c8308e4655996386b395fb00";
    let plain = hex(&format!("{header} abababababababababababababababab"));
    let srtp = hex(&format!(
        "{header} 0eca0cf95ee955b26cd3d288b49f6ca9 e0eb4eab09af2baef6804f141b9b02b0"
    ));

    let mut tx = SrtpContext::new(SrtpProfile::AeadAes128Gcm, &key, &salt).expect("keys");
    assert_eq!(protect_rtp(&mut tx, &plain), srtp);
    let mut rx = SrtpContext::new(SrtpProfile::AeadAes128Gcm, &key, &salt).expect("keys");
    assert_eq!(unprotect_rtp(&mut rx, &srtp), Ok(plain));
}

#[test]
fn profile_names_and_sizes() {
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        assert_eq!(
            SrtpProfile::from_dtls_name(profile.dtls_name()),
            Some(profile)
        );
        assert_eq!(profile.master_key_len(), 16);
    }
    assert_eq!(SrtpProfile::from_dtls_name("SRTP_AES128_CM_SHA1_32"), None);
    assert_eq!(SrtpProfile::AeadAes128Gcm.master_salt_len(), 12);
    assert_eq!(SrtpProfile::Aes128CmHmacSha1_80.master_salt_len(), 14);
    assert_eq!(SrtpProfile::AeadAes128Gcm.rtp_overhead(), 16);
    assert_eq!(SrtpProfile::Aes128CmHmacSha1_80.rtp_overhead(), 10);
    assert_eq!(SrtpProfile::AeadAes128Gcm.rtcp_overhead(), 20);
    assert_eq!(SrtpProfile::Aes128CmHmacSha1_80.rtcp_overhead(), 14);
}

#[test]
fn wrong_key_lengths_are_refused() {
    let p = SrtpProfile::AeadAes128Gcm;
    assert_eq!(
        SrtpContext::new(p, &[0; 15], &[0; 12]).err(),
        Some(SrtpError::Crypto)
    );
    assert_eq!(
        SrtpContext::new(p, &[0; 16], &[0; 14]).err(),
        Some(SrtpError::Crypto)
    );
    let p = SrtpProfile::Aes128CmHmacSha1_80;
    assert_eq!(
        SrtpContext::new(p, &[0; 16], &[0; 12]).err(),
        Some(SrtpError::Crypto)
    );
    assert!(SrtpContext::new(p, &[0; 16], &[0; 14]).is_ok());
}
