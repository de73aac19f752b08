//! RFC 6347 section 4.1.2.7: after the handshake, invalid records are silently discarded and
//! never end the association; only the peer's authenticated close_notify or fatal alert does.
//!
//! Our `DtlsConn` faces a real OpenSSL peer (an `SslStream` over in-memory datagrams) whose
//! cipher suite the test picks, and an attacker who only spoofs records. To send records "as the
//! peer" the test derives the peer's record keys from its session (RFC 5246 section 6.3) and
//! protects records itself; that is how it makes OpenSSL see authentic but unusual records.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Instant;

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{
    ErrorCode, Ssl, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use openssl::symm::{encrypt_aead, Cipher, Crypter, Mode};
mod common;

use common::spoof::{self, junk, record, ALERT};
use sluice_core::dtls::{
    DtlsCert, DtlsConn, DtlsError, DtlsEvent, DtlsRole, HashAlg, RecordProtection,
    SrtpKeyingMaterial,
};

/// Datagrams in both directions of a raw OpenSSL peer, in memory.
#[derive(Default)]
struct Pipe {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.rx.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        buf[..d.len()].copy_from_slice(&d);
        Ok(d.len())
    }
}

impl Write for Pipe {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.tx.push(b.to_vec());
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// TLS 1.2 suites the peer may be limited to, with the protection OpenSSL applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suite {
    Aes128Gcm,
    Chacha20Poly1305,
    /// Offered with encrypt-then-MAC; we refuse ETM, so this runs MAC-then-encrypt.
    Aes128CbcSha,
}

impl Suite {
    fn openssl_name(self) -> &'static str {
        match self {
            Suite::Aes128Gcm => "ECDHE-ECDSA-AES128-GCM-SHA256",
            Suite::Chacha20Poly1305 => "ECDHE-ECDSA-CHACHA20-POLY1305",
            Suite::Aes128CbcSha => "ECDHE-ECDSA-AES128-SHA",
        }
    }

    fn iana(self) -> u16 {
        match self {
            Suite::Aes128Gcm => 0xc02b,
            Suite::Chacha20Poly1305 => 0xcca9,
            Suite::Aes128CbcSha => 0xc009,
        }
    }

    /// The length of a protected alert (2-byte plaintext) with minimal padding.
    fn alert_len(self) -> usize {
        match self {
            Suite::Aes128Gcm => 8 + 2 + 16,
            Suite::Chacha20Poly1305 => 2 + 16,
            Suite::Aes128CbcSha => 16 + 32,
        }
    }
}

/// Our `DtlsConn` connected to a raw OpenSSL peer.
struct Call {
    ours: DtlsConn,
    peer: SslStream<Pipe>,
    keys: SrtpKeyingMaterial,
    suite: Suite,
    now: Instant,
    /// The sequence number the forger uses next (far above the peer's own).
    forged_seq: u64,
}

fn raw_peer(suite: Suite, role: DtlsRole, cert: &DtlsCert) -> SslStream<Pipe> {
    let mut ctx = SslContextBuilder::new(SslMethod::dtls()).expect("ctx");
    ctx.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .expect("version");
    ctx.set_max_proto_version(Some(SslVersion::DTLS1_2))
        .expect("version");
    ctx.set_certificate(cert.x509()).expect("cert");
    ctx.set_private_key(cert.private_key()).expect("key");
    ctx.set_cipher_list(suite.openssl_name()).expect("suite");
    ctx.set_tlsext_use_srtp("SRTP_AEAD_AES_128_GCM")
        .expect("use_srtp");
    // The peer does not pin our certificate; our side pins the peer's.
    ctx.set_verify(SslVerifyMode::NONE);
    // Encrypt-then-MAC stays on (OpenSSL's default): the peer offers it, we must refuse it.
    ctx.set_options(SslOptions::NO_QUERY_MTU);
    let ctx = ctx.build();
    let mut ssl = Ssl::new(&ctx).expect("ssl");
    match role {
        DtlsRole::Client => ssl.set_connect_state(),
        DtlsRole::Server => ssl.set_accept_state(),
    }
    ssl.set_mtu(1200).expect("mtu");
    SslStream::new(ssl, Pipe::default()).expect("stream")
}

impl Call {
    /// A completed handshake; `ours` plays `our_role`.
    fn new(suite: Suite, our_role: DtlsRole) -> Call {
        let our_cert = DtlsCert::generate().expect("cert");
        let peer_cert = DtlsCert::generate().expect("cert");
        let peer_role = match our_role {
            DtlsRole::Client => DtlsRole::Server,
            DtlsRole::Server => DtlsRole::Client,
        };
        let mut peer = raw_peer(suite, peer_role, &peer_cert);
        let mut ours = DtlsConn::new(
            &our_cert,
            our_role,
            vec![peer_cert.fingerprint(HashAlg::Sha256)],
        )
        .expect("conn");
        let now = Instant::now();
        ours.start(now);
        let mut keys = None;
        for _ in 0..50 {
            match peer.do_handshake() {
                Ok(()) => {}
                Err(e) => assert!(
                    matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE),
                    "peer handshake: {e}"
                ),
            }
            for d in std::mem::take(&mut peer.get_mut().tx) {
                ours.handle_datagram(now, &d);
            }
            while let Some(d) = ours.poll_transmit() {
                peer.get_mut().rx.push_back(d);
            }
            while let Some(e) = ours.poll_event() {
                match e {
                    DtlsEvent::Connected(k) => keys = Some(k),
                    other => panic!("unexpected {other:?}"),
                }
            }
            if keys.is_some() && peer.ssl().is_init_finished() {
                break;
            }
        }
        let keys = keys.expect("our side connected");
        assert!(peer.ssl().is_init_finished(), "peer connected");
        assert_eq!(ours.cipher_suite(), Some(suite.iana()));
        Call {
            ours,
            peer,
            keys,
            suite,
            now,
            forged_seq: 10_000,
        }
    }

    /// Delivers what the peer's OpenSSL wrote to us.
    fn deliver_from_peer(&mut self) -> u64 {
        let mut discarded = 0;
        for d in std::mem::take(&mut self.peer.get_mut().tx) {
            discarded += self.ours.handle_datagram(self.now, &d);
        }
        discarded
    }

    fn events(&mut self) -> Vec<DtlsEvent> {
        std::iter::from_fn(|| self.ours.poll_event()).collect()
    }

    fn our_output(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.ours.poll_transmit()).collect()
    }

    /// The peer's SRTP keys (RFC 5764 section 4.2) agree with ours: the keys are usable.
    fn assert_keys_match_peer(&self) {
        let mut material = [0u8; 2 * (16 + 12)];
        self.peer
            .ssl()
            .export_keying_material(&mut material, "EXTRACTOR-dtls_srtp", None)
            .expect("export");
        let (client_key, rest) = material.split_at(16);
        let (server_key, rest) = rest.split_at(16);
        let (client_salt, server_salt) = rest.split_at(12);
        let (ours_key, ours_salt) = match self.ours.role() {
            DtlsRole::Client => (client_key, client_salt),
            DtlsRole::Server => (server_key, server_salt),
        };
        assert_eq!(self.keys.local_key, ours_key);
        assert_eq!(self.keys.local_salt, ours_salt);
    }

    /// A record protected with the peer's real write keys, as the peer would send it.
    fn forge(&mut self, content_type: u8, plaintext: &[u8]) -> Vec<u8> {
        let seq = self.forged_seq;
        self.forged_seq += 1;
        let keys = PeerKeys::derive(&self.peer, self.suite);
        keys.protect(content_type, 1, seq, plaintext)
    }
}

/// RFC 5246 section 5: P_SHA256, the TLS 1.2 PRF of every suite used here.
fn prf_sha256(secret: &[u8], label: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
    let hmac = |data: &[&[u8]]| {
        let key = PKey::hmac(secret).expect("hmac key");
        let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("signer");
        for d in data {
            signer.update(d).expect("hmac");
        }
        signer.sign_to_vec().expect("hmac")
    };
    let mut out = Vec::new();
    let mut a = hmac(&[label, seed]);
    while out.len() < len {
        out.extend(hmac(&[&a, label, seed]));
        a = hmac(&[&a]);
    }
    out.truncate(len);
    out
}

/// The peer's write keys (RFC 5246 section 6.3 key_block).
struct PeerKeys {
    suite: Suite,
    mac_key: Vec<u8>,
    key: Vec<u8>,
    iv: Vec<u8>,
}

impl PeerKeys {
    fn derive(peer: &SslStream<Pipe>, suite: Suite) -> PeerKeys {
        let ssl = peer.ssl();
        let mut master = [0u8; 48];
        let session = ssl.session().expect("session");
        assert_eq!(session.master_key(&mut master), 48);
        let (mut client_random, mut server_random) = ([0u8; 32], [0u8; 32]);
        ssl.client_random(&mut client_random);
        ssl.server_random(&mut server_random);
        let (mac_len, key_len, iv_len) = match suite {
            Suite::Aes128Gcm => (0, 16, 4),
            Suite::Chacha20Poly1305 => (0, 32, 12),
            Suite::Aes128CbcSha => (20, 16, 0),
        };
        let seed = [server_random, client_random].concat();
        let block = prf_sha256(
            &master,
            b"key expansion",
            &seed,
            2 * (mac_len + key_len + iv_len),
        );
        // client_write_MAC, server_write_MAC, client_write_key, server_write_key, client IV, server IV
        let part = |offset: usize, len: usize, server: bool| {
            let start = offset + if server { len } else { 0 };
            block[start..start + len].to_vec()
        };
        let server = peer.ssl().is_server();
        PeerKeys {
            suite,
            mac_key: part(0, mac_len, server),
            key: part(2 * mac_len, key_len, server),
            iv: part(2 * (mac_len + key_len), iv_len, server),
        }
    }

    /// RFC 6347 section 4.1 record with a fragment protected per RFC 5246 section 6.2.3.
    fn protect(&self, content_type: u8, epoch: u16, seq: u64, plaintext: &[u8]) -> Vec<u8> {
        // RFC 6347 section 4.1.2.1: the MAC/AAD sequence number is epoch || sequence_number.
        let mut seq_num = [0u8; 8];
        seq_num[..2].copy_from_slice(&epoch.to_be_bytes());
        seq_num[2..].copy_from_slice(&seq.to_be_bytes()[2..]);
        let plain_len = u16::try_from(plaintext.len()).expect("small");
        let mut aad = seq_num.to_vec();
        aad.extend_from_slice(&[content_type, 0xfe, 0xfd]);
        aad.extend_from_slice(&plain_len.to_be_bytes());
        let fragment = match self.suite {
            Suite::Aes128Gcm => {
                // RFC 5288 section 3: nonce = salt (4) || explicit nonce (8).
                let nonce = [&self.iv[..], &seq_num[..]].concat();
                let mut tag = [0u8; 16];
                let ct = encrypt_aead(
                    Cipher::aes_128_gcm(),
                    &self.key,
                    Some(&nonce),
                    &aad,
                    plaintext,
                    &mut tag,
                )
                .expect("gcm");
                [&seq_num[..], &ct, &tag].concat()
            }
            Suite::Chacha20Poly1305 => {
                // RFC 7905 section 2: nonce = IV xor (0^32 || seq_num).
                let mut nonce = self.iv.clone();
                for (n, s) in nonce[4..].iter_mut().zip(seq_num) {
                    *n ^= s;
                }
                let mut tag = [0u8; 16];
                let ct = encrypt_aead(
                    Cipher::chacha20_poly1305(),
                    &self.key,
                    Some(&nonce),
                    &aad,
                    plaintext,
                    &mut tag,
                )
                .expect("chacha");
                [&ct[..], &tag].concat()
            }
            Suite::Aes128CbcSha => {
                // RFC 5246 section 6.2.3.1: HMAC over seq_num, type, version, length, content;
                // then content || MAC || padding, encrypted under a fresh explicit IV.
                let key = PKey::hmac(&self.mac_key).expect("mac key");
                let mut signer = Signer::new(MessageDigest::sha1(), &key).expect("signer");
                signer.update(&aad).expect("mac");
                signer.update(plaintext).expect("mac");
                let mac = signer.sign_to_vec().expect("mac");
                let mut body = [plaintext, &mac].concat();
                let pad = 16 - (body.len() % 16);
                body.extend(std::iter::repeat_n(
                    u8::try_from(pad - 1).expect("pad"),
                    pad,
                ));
                let iv = [0x5au8; 16];
                let mut crypter =
                    Crypter::new(Cipher::aes_128_cbc(), Mode::Encrypt, &self.key, Some(&iv))
                        .expect("cbc");
                crypter.pad(false);
                let mut ct = vec![0u8; body.len() + 16];
                let n = crypter.update(&body, &mut ct).expect("cbc");
                ct.truncate(n);
                [&iv[..], &ct].concat()
            }
        };
        record(content_type, epoch, seq, &fragment)
    }
}

const PER_KIND: u64 = 1000;

/// Every spoofed record is discarded and counted, nothing goes back to the peer, and the call
/// stays up with the same keys.
fn assert_spoofs_are_discarded(call: &mut Call) {
    for (name, make) in spoof::kinds(call.suite.alert_len()) {
        let before = call.ours.dropped_records();
        let mut expected = 0;
        for i in 0..PER_KIND {
            let (datagram, records) = make(i);
            expected += records;
            let discarded = call.ours.handle_datagram(call.now, &datagram);
            assert_eq!(discarded, records, "{name} #{i}: {datagram:02x?}");
        }
        assert_eq!(call.ours.dropped_records() - before, expected, "{name}");
        assert!(call.ours.is_connected(), "{name}");
        assert!(!call.ours.is_read_stopped(), "{name}");
        assert!(call.events().is_empty(), "{name}");
        // OpenSSL's fatal alert would end the call at the peer.
        assert!(
            call.our_output().is_empty(),
            "{name}: we answered a spoofed record"
        );
    }
    call.assert_keys_match_peer();
}

/// After the spoofing the association still reads the peer: its close_notify closes it.
fn assert_close_notify_still_closes(call: &mut Call) {
    call.peer.shutdown().expect("peer close_notify");
    assert_eq!(call.deliver_from_peer(), 0, "close_notify is authentic");
    assert!(matches!(call.events().as_slice(), [DtlsEvent::Closed]));
    assert!(!call.ours.is_connected());
}

#[test]
fn rfc6347_4_1_2_7_invalid_records_are_discarded_gcm() {
    for role in [DtlsRole::Server, DtlsRole::Client] {
        let mut call = Call::new(Suite::Aes128Gcm, role);
        assert_spoofs_are_discarded(&mut call);
        assert_close_notify_still_closes(&mut call);
    }
}

#[test]
fn rfc6347_4_1_2_7_invalid_records_are_discarded_chacha20_poly1305() {
    let mut call = Call::new(Suite::Chacha20Poly1305, DtlsRole::Server);
    assert_spoofs_are_discarded(&mut call);
    assert_close_notify_still_closes(&mut call);
}

#[test]
fn rfc6347_4_1_2_7_invalid_records_are_discarded_cbc_even_when_the_peer_offers_etm() {
    // With encrypt-then-MAC (RFC 7366) OpenSSL fails on any bad MAC; we refuse ETM, so the
    // MAC-then-encrypt records of this suite are discarded like any other.
    for role in [DtlsRole::Server, DtlsRole::Client] {
        let mut call = Call::new(Suite::Aes128CbcSha, role);
        assert_spoofs_are_discarded(&mut call);
        assert_close_notify_still_closes(&mut call);
    }
}

#[test]
fn rfc6347_4_1_2_7_invalid_records_between_two_of_our_own_connections() {
    let now = Instant::now();
    let (mut client, mut server) = spoof::connected_pair(now);
    for (name, make) in spoof::kinds(Suite::Aes128Gcm.alert_len()) {
        for i in 0..PER_KIND {
            let (datagram, records) = make(i);
            for conn in [&mut client, &mut server] {
                assert_eq!(conn.handle_datagram(now, &datagram), records, "{name} #{i}");
            }
        }
    }
    for conn in [&mut client, &mut server] {
        assert!(conn.is_connected() && !conn.is_read_stopped());
        assert!(conn.poll_event().is_none());
        assert!(conn.poll_transmit().is_none());
    }
    // Still talking to each other: a close reaches the other side.
    client.close();
    while let Some(d) = client.poll_transmit() {
        assert_eq!(server.handle_datagram(now, &d), 0);
    }
    assert!(matches!(server.poll_event(), Some(DtlsEvent::Closed)));
}

#[test]
fn regression_one_15_byte_alert_used_to_end_the_association() {
    // Before the record filter, OpenSSL 3.0 failed on this record (its AES-GCM setup refuses a
    // 2-byte ciphertext, which it treats as fatal), sent internal_error to the peer, and the
    // Transport failed.
    let mut call = Call::new(Suite::Aes128Gcm, DtlsRole::Server);
    let spoof = record(ALERT, 1, 7, &[2, 40]);
    assert_eq!(spoof.len(), 15);
    assert_eq!(call.ours.handle_datagram(call.now, &spoof), 1);
    assert!(call.ours.is_connected());
    assert!(call.events().is_empty());
    assert!(call.our_output().is_empty());
    // The same record does kill an unprotected OpenSSL endpoint, which then tells its peer
    // (us) with an authenticated fatal alert: internal_error(80). That ends our association.
    call.peer.get_mut().rx.push_back(spoof);
    let mut buf = [0u8; 64];
    let error = call.peer.ssl_read(&mut buf).expect_err("the raw peer dies");
    assert_eq!(error.code(), ErrorCode::SYSCALL, "{error}");
    assert_eq!(call.deliver_from_peer(), 0);
    match call.events().as_slice() {
        [DtlsEvent::Failed(DtlsError::Alert(80))] => {}
        other => panic!("expected internal_error(80): {other:?}"),
    }
    assert!(!call.ours.is_connected());
    assert!(call.our_output().is_empty(), "no answer to a fatal alert");
}

#[test]
fn rfc5246_7_2_2_authenticated_fatal_alert_fails_with_its_description() {
    for suite in [
        Suite::Aes128Gcm,
        Suite::Chacha20Poly1305,
        Suite::Aes128CbcSha,
    ] {
        let mut call = Call::new(suite, DtlsRole::Server);
        assert_eq!(
            call.forge(ALERT, &[1, 0]).len(),
            13 + suite.alert_len(),
            "{suite:?}"
        );
        // handshake_failure(40), fatal(2), protected with the peer's real keys.
        let alert = call.forge(ALERT, &[2, 40]);
        assert_eq!(call.ours.handle_datagram(call.now, &alert), 0, "{suite:?}");
        match call.events().as_slice() {
            [DtlsEvent::Failed(e @ DtlsError::Alert(40))] => {
                assert_eq!(e.to_string(), "peer sent fatal alert handshake_failure(40)");
            }
            other => panic!("{suite:?}: {other:?}"),
        }
        assert!(!call.ours.is_connected());
        // Dead now: later records are discarded without reaching OpenSSL.
        let again = call.forge(ALERT, &[1, 0]);
        assert_eq!(call.ours.handle_datagram(call.now, &again), 1);
        assert!(call.events().is_empty());
    }
}

#[test]
fn rfc5246_7_2_authenticated_warning_alert_never_ends_the_association() {
    // A warning alert other than close_notify does not end a connection. OpenSSL 3.0's DTLS
    // reads such a record again and again until its limit of warnings and then fails
    // (unexpected_message); later versions read it once. Either way the call stays up and
    // nothing goes back to the peer; on 3.0 the association stops reading.
    for suite in [Suite::Aes128Gcm, Suite::Aes128CbcSha] {
        let mut call = Call::new(suite, DtlsRole::Server);
        // user_canceled(90) as a warning, protected with the peer's real keys.
        let warning = call.forge(ALERT, &[1, 90]);
        let discarded = call.ours.handle_datagram(call.now, &warning);
        assert_eq!(discarded == 1, call.ours.is_read_stopped(), "{suite:?}");
        assert!(call.ours.is_connected(), "{suite:?}");
        assert!(call.events().is_empty(), "{suite:?}");
        assert!(call.our_output().is_empty(), "{suite:?}");
        // The same record again is a replay (RFC 6347 section 4.1.2.6), or arrives after
        // reading stopped: discarded either way.
        assert_eq!(
            call.ours.handle_datagram(call.now, &warning),
            1,
            "{suite:?}"
        );
        assert!(call.ours.is_connected() && call.events().is_empty());
        call.assert_keys_match_peer();
    }
}

#[test]
fn defense_in_depth_an_openssl_failure_after_the_handshake_only_stops_reading() {
    // An authenticated alert of an undefined level (3) passes the filter (it has an alert's
    // length) and OpenSSL fails on it (illegal_parameter). That is not the peer ending the
    // association: we keep the keys and the call, stop reading, and send nothing back.
    for suite in [Suite::Aes128Gcm, Suite::Aes128CbcSha] {
        let mut call = Call::new(suite, DtlsRole::Server);
        let odd = call.forge(ALERT, &[3, 0]);
        assert_eq!(call.ours.handle_datagram(call.now, &odd), 1, "{suite:?}");
        assert!(call.ours.is_connected(), "{suite:?}");
        assert!(call.ours.is_read_stopped(), "{suite:?}");
        assert!(call.events().is_empty(), "{suite:?}");
        assert!(
            call.our_output().is_empty(),
            "{suite:?}: OpenSSL's own fatal alert must not reach the peer"
        );
        assert_eq!(call.ours.poll_timeout(), None);
        // Every later record is discarded and counted, even an authentic close_notify.
        for i in 0..PER_KIND {
            let d = record(ALERT, 1, i, &junk(i, suite.alert_len()));
            assert_eq!(call.ours.handle_datagram(call.now, &d), 1);
        }
        let three = [odd.clone(), odd.clone(), odd].concat();
        assert_eq!(call.ours.handle_datagram(call.now, &three), 3);
        call.peer.shutdown().expect("peer close_notify");
        assert_eq!(call.deliver_from_peer(), 1);
        call.ours
            .handle_timeout(call.now + std::time::Duration::from_secs(3600));
        assert!(call.ours.is_connected(), "{suite:?}");
        assert!(call.events().is_empty());
        assert!(call.our_output().is_empty());
        call.assert_keys_match_peer();
        // Our own close still ends it locally.
        call.ours.close();
        assert!(!call.ours.is_connected());
    }
}

#[test]
fn record_protection_of_the_negotiated_suite_matches_the_wire() {
    // The filter's idea of each suite's alert length is what the peer's OpenSSL really sends.
    for suite in [
        Suite::Aes128Gcm,
        Suite::Chacha20Poly1305,
        Suite::Aes128CbcSha,
    ] {
        let mut call = Call::new(suite, DtlsRole::Server);
        call.peer.shutdown().expect("close_notify");
        let sent = std::mem::take(&mut call.peer.get_mut().tx);
        let [datagram] = sent.as_slice() else {
            panic!("{suite:?}: {sent:?}")
        };
        assert_eq!(datagram.len(), 13 + suite.alert_len(), "{suite:?}");
        let protection = RecordProtection::from_suite(suite.iana()).expect("known");
        assert!(protection.fits(datagram.len() - 13, 2, 2), "{suite:?}");
    }
}
