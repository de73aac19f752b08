//! SRTP/SRTCP protect and unprotect, in place, per profile and packet size; and RTP protect the way the
//! shard's egress does it (copy the plain packet into an egress buffer, then protect there).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use sluice_core::srtp::{SrtpContext, SrtpProfile};

const PROFILES: [SrtpProfile; 2] = [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80];
/// Audio, a mid-sized video packet, and a full video packet.
const SIZES: [usize; 3] = [100, 500, 1200];
/// RTCP compounds are small; 1200 stands for a large one (many report blocks or a long TWCC).
const RTCP_SIZES: [usize; 2] = [100, 1200];
const MTU: usize = 1500;
const SSRC: u32 = 0x1234_5678;

fn context(profile: SrtpProfile) -> SrtpContext {
    let key = [0x11u8; 16];
    let salt = vec![0x22u8; profile.master_salt_len()];
    SrtpContext::new(profile, &key, &salt).expect("valid keys")
}

/// Writes a plain RTP packet (12-octet header, one-word 0xBEDE extension) of `len` octets.
fn write_rtp(buf: &mut [u8; MTU], seq: u16, len: usize) {
    buf[..len].fill(0x5a);
    buf[0] = 0x90;
    buf[1] = 96;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    buf[8..12].copy_from_slice(&SSRC.to_be_bytes());
    buf[12..16].copy_from_slice(&[0xbe, 0xde, 0, 1]);
}

fn write_rtcp(buf: &mut [u8; MTU], len: usize) {
    buf[..len].fill(0x5a);
    buf[0] = 0x80;
    buf[1] = 200;
    buf[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&SSRC.to_be_bytes());
}

fn name(profile: SrtpProfile) -> &'static str {
    match profile {
        SrtpProfile::AeadAes128Gcm => "aead_aes_128_gcm",
        SrtpProfile::Aes128CmHmacSha1_80 => "aes_128_cm_sha1_80",
    }
}

fn rtp(c: &mut Criterion) {
    let mut protect = c.benchmark_group("srtp_protect_rtp");
    for profile in PROFILES {
        for size in SIZES {
            protect.throughput(Throughput::Bytes(size as u64));
            protect.bench_function(BenchmarkId::new(name(profile), size), |b| {
                let mut tx = context(profile);
                let mut buf = [0u8; MTU];
                let mut seq = 0u16;
                write_rtp(&mut buf, seq, size);
                // In place on one buffer: only the sequence number changes; the payload is
                // re-encrypted each time, which costs the same as fresh plaintext.
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    buf[2..4].copy_from_slice(&seq.to_be_bytes());
                    black_box(tx.protect_rtp(black_box(&mut buf), size).expect("protects"))
                });
            });
        }
    }
    protect.finish();

    let mut unprotect = c.benchmark_group("srtp_unprotect_rtp");
    for profile in PROFILES {
        for size in SIZES {
            unprotect.throughput(Throughput::Bytes(size as u64));
            unprotect.bench_function(BenchmarkId::new(name(profile), size), |b| {
                let mut tx = context(profile);
                let mut rx = context(profile);
                let mut seq = 0u16;
                // A fresh sequence number per packet, protected outside the timed section, so
                // the replay window never refuses one.
                b.iter_batched_ref(
                    || {
                        seq = seq.wrapping_add(1);
                        let mut buf = [0u8; MTU];
                        write_rtp(&mut buf, seq, size);
                        let n = tx.protect_rtp(&mut buf, size).expect("protects");
                        (buf, n)
                    },
                    |(buf, n)| black_box(rx.unprotect_rtp(&mut buf[..*n]).expect("unprotects")),
                    BatchSize::SmallInput,
                );
            });
        }
    }
    unprotect.finish();

    let mut copy = c.benchmark_group("srtp_copy_protect_rtp");
    for profile in PROFILES {
        for size in SIZES {
            copy.throughput(Throughput::Bytes(size as u64));
            copy.bench_function(BenchmarkId::new(name(profile), size), |b| {
                let mut tx = context(profile);
                let mut plain = [0u8; MTU];
                write_rtp(&mut plain, 0, size);
                let mut egress = [0u8; MTU];
                let mut seq = 0u16;
                // The source stays plain; each turn copies it out and encrypts the copy, as the
                // shard does once per receiver.
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    plain[2..4].copy_from_slice(&seq.to_be_bytes());
                    egress[..size].copy_from_slice(black_box(&plain[..size]));
                    black_box(tx.protect_rtp(&mut egress, size).expect("protects"))
                });
            });
        }
    }
    copy.finish();
}

fn rtcp(c: &mut Criterion) {
    let mut protect = c.benchmark_group("srtp_protect_rtcp");
    for profile in PROFILES {
        for size in RTCP_SIZES {
            protect.throughput(Throughput::Bytes(size as u64));
            protect.bench_function(BenchmarkId::new(name(profile), size), |b| {
                let mut tx = context(profile);
                let mut buf = [0u8; MTU];
                write_rtcp(&mut buf, size);
                b.iter(|| {
                    black_box(
                        tx.protect_rtcp(black_box(&mut buf), size)
                            .expect("protects"),
                    )
                });
            });
        }
    }
    protect.finish();

    let mut unprotect = c.benchmark_group("srtp_unprotect_rtcp");
    for profile in PROFILES {
        for size in RTCP_SIZES {
            unprotect.throughput(Throughput::Bytes(size as u64));
            unprotect.bench_function(BenchmarkId::new(name(profile), size), |b| {
                let mut tx = context(profile);
                let mut rx = context(profile);
                b.iter_batched_ref(
                    || {
                        let mut buf = [0u8; MTU];
                        write_rtcp(&mut buf, size);
                        let n = tx.protect_rtcp(&mut buf, size).expect("protects");
                        (buf, n)
                    },
                    |(buf, n)| black_box(rx.unprotect_rtcp(&mut buf[..*n]).expect("unprotects")),
                    BatchSize::SmallInput,
                );
            });
        }
    }
    unprotect.finish();
}

criterion_group!(benches, rtp, rtcp);
criterion_main!(benches);
