//! Forwarding one incoming SRTP packet to 1, 10 and 50 receivers the way the shard's media path does it:
//! unprotect once in place, parse the RTP view, then per receiver copy into an egress batch slot and
//! protect there with that receiver's own SRTP context.
//!
//! The shard's own per-packet function (`State::on_rtp`) is private and needs DTLS-keyed Transports, so
//! this drives the same public pieces (`SrtpContext`, `RtpView`, `SendBatch`) in the same order. A full
//! batch is cleared where the shard would `sendmmsg` it: the syscall is not part of this figure.
//! Throughput is in egress packets, so criterion's elements/s is egress packets/s and
//! time ÷ receivers is the cost per egress packet (including its share of the one unprotect).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use sluice_core::io::{SendBatch, MAX_DATAGRAM};
use sluice_core::rtp::RtpView;
use sluice_core::shard::BATCH;
use sluice_core::srtp::{SrtpContext, SrtpProfile};

const PROFILES: [SrtpProfile; 2] = [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80];
const RECEIVERS: [usize; 3] = [1, 10, 50];
/// A full video packet.
const SIZE: usize = 1200;
const SSRC: u32 = 0x1234_5678;

/// Each endpoint has its own DTLS-derived keys; `seed` stands in for them.
fn context(profile: SrtpProfile, seed: u8) -> SrtpContext {
    let key = [seed; 16];
    let salt = vec![seed ^ 0x5a; profile.master_salt_len()];
    SrtpContext::new(profile, &key, &salt).expect("valid keys")
}

/// A plain RTP packet (12-octet header, one-word 0xBEDE extension) of `SIZE` octets.
fn write_rtp(buf: &mut [u8; MAX_DATAGRAM], seq: u16) {
    buf[..SIZE].fill(0x5a);
    buf[0] = 0x90;
    buf[1] = 96;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    buf[8..12].copy_from_slice(&SSRC.to_be_bytes());
    buf[12..16].copy_from_slice(&[0xbe, 0xde, 0, 1]);
}

fn name(profile: SrtpProfile) -> &'static str {
    match profile {
        SrtpProfile::AeadAes128Gcm => "aead_aes_128_gcm",
        SrtpProfile::Aes128CmHmacSha1_80 => "aes_128_cm_sha1_80",
    }
}

struct Receiver {
    ctx: SrtpContext,
    addr: SocketAddr,
}

/// One forwarding step; returns the number of egress packets queued.
fn forward(
    ingress: &mut SrtpContext,
    pkt: &mut [u8],
    receivers: &mut [Receiver],
    batch: &mut SendBatch,
) -> usize {
    let len = ingress.unprotect_rtp(pkt).expect("unprotects");
    let plain = &pkt[..len];
    let view = RtpView::parse(plain).expect("valid RTP");
    // The shard looks the producer up by SSRC here; keep the read so it is not optimised away.
    black_box(view.ssrc());
    let mut sent = 0;
    for r in receivers {
        if batch.is_full() {
            batch.clear();
        }
        let Some(slot) = batch.slot() else {
            continue;
        };
        slot[..len].copy_from_slice(plain);
        let n = r.ctx.protect_rtp(slot, len).expect("protects");
        batch.commit(n, r.addr);
        sent += 1;
    }
    sent
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_rtp_1200");
    for profile in PROFILES {
        for n in RECEIVERS {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::new(name(profile), n), |b| {
                let mut sender = context(profile, 1);
                let mut ingress = context(profile, 1);
                let mut receivers: Vec<Receiver> = (0..n)
                    .map(|i| Receiver {
                        ctx: context(profile, 2 + i as u8),
                        addr: SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 250) as u8 + 1)),
                            40_000 + i as u16,
                        ),
                    })
                    .collect();
                let mut batch = SendBatch::new(BATCH);
                let mut seq = 0u16;
                // A fresh sequence number per packet, protected outside the timed section, so the
                // ingress replay window never refuses one.
                b.iter_batched_ref(
                    || {
                        seq = seq.wrapping_add(1);
                        let mut buf = [0u8; MAX_DATAGRAM];
                        write_rtp(&mut buf, seq);
                        let len = sender.protect_rtp(&mut buf, SIZE).expect("protects");
                        (buf, len)
                    },
                    |(buf, len)| {
                        let sent =
                            forward(&mut ingress, &mut buf[..*len], &mut receivers, &mut batch);
                        assert_eq!(sent, n);
                    },
                    BatchSize::SmallInput,
                );
            });
        }
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
