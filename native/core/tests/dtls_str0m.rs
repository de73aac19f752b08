//! Interop: our `DtlsConn` against str0m 0.24's DTLS (its public `crypto::dtls` provider API,
//! OpenSSL backend), both roles. Checks the handshake, the selected profile, and that both
//! sides export the same RFC 5764 section 4.2 keying material in the same layout.
//!
//! Both sides use OpenSSL underneath, so this tests our driver, framing and key layout against
//! an independent driver, not against an independent DTLS stack.

use std::time::Instant;

use sluice_core::dtls::{
    DtlsCert, DtlsConfig, DtlsConn, DtlsError, DtlsEvent, DtlsRole, DtlsSrtpProfile, Fingerprint,
    HashAlg, SrtpKeyingMaterial,
};
use str0m::crypto::dtls::{DtlsInstance, DtlsOutput, DtlsVersion, SrtpProfile};

struct Str0mResult {
    connected: bool,
    peer_cert: Option<Vec<u8>>,
    keying: Option<(Vec<u8>, SrtpProfile)>,
}

/// Drains str0m's output: datagrams go to `to_ours`, the rest is recorded.
fn drain_str0m(theirs: &mut dyn DtlsInstance, to_ours: &mut Vec<Vec<u8>>, res: &mut Str0mResult) {
    let mut buf = vec![0u8; 2048];
    for _ in 0..1000 {
        match theirs.poll_output(&mut buf) {
            DtlsOutput::Packet(p) => to_ours.push(p.to_vec()),
            DtlsOutput::Timeout(_) => return,
            DtlsOutput::Connected => res.connected = true,
            DtlsOutput::PeerCert(der) => res.peer_cert = Some(der.to_vec()),
            DtlsOutput::KeyingMaterial(km, profile) => res.keying = Some((km.to_vec(), profile)),
            DtlsOutput::BufferTooSmall { needed } => buf.resize(needed, 0),
            _ => {} // application data, close_notify, future variants
        }
    }
    panic!("str0m kept producing output");
}

struct Run {
    events: Vec<DtlsEvent>,
    connected: bool,
    theirs: Str0mResult,
    our_cert: DtlsCert,
}

fn run(our_role: DtlsRole, config: &DtlsConfig, wrong_fingerprint: bool) -> Run {
    let now = Instant::now();
    let provider = str0m::crypto::from_feature_flags();
    let their_cert = provider
        .dtls_provider
        .generate_certificate()
        .expect("str0m generates a certificate");
    let their_x509 = openssl::x509::X509::from_der(&their_cert.certificate).expect("DER");
    let their_fp = Fingerprint::of_cert(&their_x509, HashAlg::Sha256).expect("digest");
    // Exercise the text form the fingerprint would travel in.
    let mut their_fp =
        Fingerprint::parse(their_fp.hash_name(), &their_fp.value_hex()).expect("parse");
    if wrong_fingerprint {
        their_fp.value[0] ^= 1;
    }

    let mut theirs = provider
        .dtls_provider
        .new_dtls(&their_cert, now, DtlsVersion::Dtls12, Some(1200))
        .expect("str0m DTLS instance");
    theirs.set_active(our_role == DtlsRole::Server);

    let our_cert = DtlsCert::generate().expect("cert");
    let mut ours =
        DtlsConn::with_config(&our_cert, our_role, vec![their_fp], config).expect("conn");

    let mut res = Str0mResult {
        connected: false,
        peer_cert: None,
        keying: None,
    };
    let mut to_ours = Vec::new();
    ours.start(now);
    if our_role == DtlsRole::Server {
        // str0m's active side sends its ClientHello on its first input.
        theirs.handle_packet(&[]).expect("str0m starts");
    }
    let mut events = Vec::new();
    for _ in 0..50 {
        drain_str0m(theirs.as_mut(), &mut to_ours, &mut res);
        let mut moved = !to_ours.is_empty();
        for d in to_ours.drain(..) {
            ours.handle_datagram(now, &d);
        }
        while let Some(d) = ours.poll_transmit() {
            moved = true;
            assert!(d.len() <= 1200);
            // After a failure str0m reports the alert we sent as an error; that is expected.
            let accepted = theirs.handle_packet(&d);
            if !wrong_fingerprint {
                accepted.expect("str0m accepts our records");
            }
        }
        while let Some(e) = ours.poll_event() {
            events.push(e);
        }
        if !moved {
            break;
        }
    }
    drain_str0m(theirs.as_mut(), &mut to_ours, &mut res);
    Run {
        events,
        connected: ours.is_connected(),
        theirs: res,
        our_cert,
    }
}

fn our_keys(run: &Run) -> SrtpKeyingMaterial {
    assert!(run.connected, "{:?}", run.events);
    run.events
        .iter()
        .find_map(|e| match e {
            DtlsEvent::Connected(km) => Some(km.clone()),
            _ => None,
        })
        .expect("Connected event")
}

/// RFC 5764 section 4.2 layout of the exported block.
fn check_layout(ours: &SrtpKeyingMaterial, our_role: DtlsRole, block: &[u8]) {
    let k = ours.profile.key_len();
    let s = ours.profile.salt_len();
    assert_eq!(block.len(), 2 * (k + s));
    let client_key = &block[..k];
    let server_key = &block[k..2 * k];
    let client_salt = &block[2 * k..2 * k + s];
    let server_salt = &block[2 * k + s..];
    let (local_key, local_salt, remote_key, remote_salt) = match our_role {
        DtlsRole::Client => (client_key, client_salt, server_key, server_salt),
        DtlsRole::Server => (server_key, server_salt, client_key, client_salt),
    };
    assert_eq!(ours.local_key, local_key);
    assert_eq!(ours.local_salt, local_salt);
    assert_eq!(ours.remote_key, remote_key);
    assert_eq!(ours.remote_salt, remote_salt);
}

fn interop(our_role: DtlsRole, config: &DtlsConfig) -> DtlsSrtpProfile {
    let run = run(our_role, config, false);
    let ours = our_keys(&run);
    assert!(run.theirs.connected, "str0m connected");
    assert_eq!(
        run.theirs.peer_cert.as_deref(),
        Some(run.our_cert.x509().to_der().expect("DER").as_slice()),
        "str0m saw our certificate"
    );
    let (block, profile) = run.theirs.keying.clone().expect("str0m exported keys");
    let expected = match ours.profile {
        DtlsSrtpProfile::AeadAes128Gcm => SrtpProfile::AEAD_AES_128_GCM,
        DtlsSrtpProfile::Aes128CmSha1_80 => SrtpProfile::AES128_CM_SHA1_80,
    };
    assert_eq!(profile, expected);
    check_layout(&ours, our_role, &block);
    ours.profile
}

#[test]
fn rfc5764_4_2_interop_str0m_we_are_client() {
    let profile = interop(DtlsRole::Client, &DtlsConfig::default());
    assert_eq!(profile, DtlsSrtpProfile::AeadAes128Gcm);
}

#[test]
fn rfc5764_4_2_interop_str0m_we_are_server() {
    let profile = interop(DtlsRole::Server, &DtlsConfig::default());
    assert_eq!(profile, DtlsSrtpProfile::AeadAes128Gcm);
}

#[test]
fn rfc5764_4_1_2_interop_str0m_sha1_80_both_roles() {
    let only_cm = DtlsConfig {
        srtp_profiles: vec![DtlsSrtpProfile::Aes128CmSha1_80],
        ..DtlsConfig::default()
    };
    for role in [DtlsRole::Client, DtlsRole::Server] {
        assert_eq!(interop(role, &only_cm), DtlsSrtpProfile::Aes128CmSha1_80);
    }
}

#[test]
fn rfc8122_5_interop_str0m_fingerprint_mismatch_refused() {
    for role in [DtlsRole::Client, DtlsRole::Server] {
        let run = run(role, &DtlsConfig::default(), true);
        assert!(!run.connected);
        let failures: Vec<&DtlsEvent> = run
            .events
            .iter()
            .filter(|e| matches!(e, DtlsEvent::Failed(DtlsError::FingerprintMismatch)))
            .collect();
        assert_eq!(failures.len(), 1, "{role:?}: {:?}", run.events);
        assert!(
            !run.events
                .iter()
                .any(|e| matches!(e, DtlsEvent::Connected(_))),
            "{role:?}"
        );
        assert!(run.theirs.keying.is_none(), "{role:?}: str0m got keys");
        assert!(!run.theirs.connected, "{role:?}: str0m connected");
    }
}
