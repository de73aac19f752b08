//! DTLS driver costs: what a join costs (connection setup, full handshake), the framing
//! check every received DTLS datagram goes through, and what a spoofed record costs an
//! established association (refused by the record filter, or handed to OpenSSL and refused there).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_core::dtls::record::valid_prefix;
use sluice_core::dtls::{DtlsCert, DtlsConfig, DtlsConn, DtlsRole, DtlsSrtpProfile, HashAlg};

fn handshake(client: &mut DtlsConn, server: &mut DtlsConn, now: Instant) {
    server.start(now);
    client.start(now);
    loop {
        let mut moved = false;
        while let Some(d) = client.poll_transmit() {
            moved = true;
            server.handle_datagram(now, &d);
        }
        while let Some(d) = server.poll_transmit() {
            moved = true;
            client.handle_datagram(now, &d);
        }
        if !moved {
            break;
        }
    }
    assert!(client.is_connected() && server.is_connected());
}

fn bench_setup(c: &mut Criterion) {
    let cert = DtlsCert::generate().expect("cert");
    let fp = cert.fingerprint(HashAlg::Sha256);
    c.bench_function("dtls/cert_generate", |b| {
        b.iter(|| black_box(DtlsCert::generate().expect("cert")))
    });
    c.bench_function("dtls/conn_new", |b| {
        b.iter(|| {
            black_box(DtlsConn::new(&cert, DtlsRole::Server, vec![fp.clone()]).expect("conn"))
        })
    });

    let mut group = c.benchmark_group("dtls/handshake");
    for profile in [
        DtlsSrtpProfile::AeadAes128Gcm,
        DtlsSrtpProfile::Aes128CmSha1_80,
    ] {
        let config = DtlsConfig {
            srtp_profiles: vec![profile],
            ..DtlsConfig::default()
        };
        let client_cert = DtlsCert::generate().expect("cert");
        let server_cert = DtlsCert::generate().expect("cert");
        group.bench_function(BenchmarkId::from_parameter(profile.name()), |b| {
            b.iter(|| {
                let now = Instant::now();
                let mut client = DtlsConn::with_config(
                    &client_cert,
                    DtlsRole::Client,
                    vec![server_cert.fingerprint(HashAlg::Sha256)],
                    &config,
                )
                .expect("client");
                let mut server = DtlsConn::with_config(
                    &server_cert,
                    DtlsRole::Server,
                    vec![client_cert.fingerprint(HashAlg::Sha256)],
                    &config,
                )
                .expect("server");
                handshake(&mut client, &mut server, now);
                black_box((client, server))
            })
        });
    }
    group.finish();
}

fn bench_framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("dtls/valid_prefix");
    for (records, size) in [(1usize, 100usize), (1, 1200), (5, 240)] {
        let mut datagram = Vec::new();
        for seq in 0..records {
            let body = size - 13;
            datagram.extend_from_slice(&[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0]);
            datagram.push(u8::try_from(seq).expect("few records"));
            datagram.extend_from_slice(&u16::try_from(body).expect("small").to_be_bytes());
            datagram.resize(datagram.len() + body, 0xab);
        }
        group.throughput(Throughput::Bytes(datagram.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{records}x{size}")),
            &datagram,
            |b, d| b.iter(|| black_box(valid_prefix(black_box(d)))),
        );
    }
    group.finish();
}

/// An RFC 6347 section 4.1 record (DTLS 1.2) with a fragment of `len` bytes.
fn spoofed(content_type: u8, epoch: u16, len: usize) -> Vec<u8> {
    let mut out = vec![content_type, 0xfe, 0xfd];
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 9]);
    out.extend_from_slice(&u16::try_from(len).expect("small").to_be_bytes());
    out.resize(out.len() + len, 0x5a);
    out
}

fn bench_established(c: &mut Criterion) {
    let client_cert = DtlsCert::generate().expect("cert");
    let server_cert = DtlsCert::generate().expect("cert");
    let now = Instant::now();
    let mut client = DtlsConn::new(
        &client_cert,
        DtlsRole::Client,
        vec![server_cert.fingerprint(HashAlg::Sha256)],
    )
    .expect("client");
    let mut server = DtlsConn::new(
        &server_cert,
        DtlsRole::Server,
        vec![client_cert.fingerprint(HashAlg::Sha256)],
    )
    .expect("server");
    handshake(&mut client, &mut server, now);
    let mut group = c.benchmark_group("dtls/spoofed_record");
    // 15 bytes: the 2-byte epoch-1 alert the filter refuses; 39 bytes: an AES-GCM alert's exact
    // length, which only OpenSSL's tag check refuses; three records of the former in one datagram.
    let short = spoofed(21, 1, 2);
    let cases = [
        ("filtered_15B", short.clone()),
        ("openssl_tag_39B", spoofed(21, 1, 26)),
        ("filtered_3x15B", [&short[..], &short, &short].concat()),
    ];
    for (name, datagram) in cases {
        group.bench_with_input(BenchmarkId::from_parameter(name), &datagram, |b, d| {
            b.iter(|| black_box(server.handle_datagram(now, black_box(d))))
        });
    }
    group.finish();
    assert!(server.is_connected() && !server.is_read_stopped());
}

criterion_group!(benches, bench_setup, bench_framing, bench_established);
criterion_main!(benches);
