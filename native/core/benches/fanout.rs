//! Forwarding one incoming SRTP packet to 1, 10 and 50 receivers with the shard's own code: the sender's
//! Transport unprotects it once in place, the RTP view is parsed, then `Router::on_rtp` counts it on its
//! Producer and forwards it, per receiver: filter, copy into an egress batch slot, protect there with that
//! receiver's own SRTP context, count. What the shard adds around this is the address lookup and the
//! RFC 7983 classification (see the demux bench).
//!
//! `fanout_audio_100` forwards a 100-octet audio packet to 50 receivers. `fanout_simulcast_vp8` is the
//! selective path: a VP8 simulcast Source of three layers, the receivers
//! allocated a layer each in turn, so a packet of the top layer is forwarded (through each receiver's
//! Projection, rewritten onto the primary SSRC) to a third of them and filtered for the rest; elements
//! are receivers, forwarded or not.
//!
//! Every Transport is real: before timing starts, each one's ICE and DTLS-SRTP handshake runs in memory
//! against a client made of the same protocol machines, so the keys come from DTLS as in a call. A full
//! batch is cleared where the shard would `sendmmsg` it: the syscall is not part of this figure.
//! Throughput is in egress packets, so criterion's elements/s is egress packets/s and time ÷ receivers is
//! the cost per egress packet (including its share of the one unprotect).

use std::hint::black_box;
use std::time::Instant;

use criterion::{
    criterion_group, criterion_main, BatchSize, Bencher, BenchmarkId, Criterion, Throughput,
};
use sluice_core::dtls::DtlsSrtpProfile;
use sluice_core::io::{SendBatch, MAX_DATAGRAM};
use sluice_core::shard::BATCH;
use sluice_core::srtp::SrtpContext;
use sluice_core::stats::Counters;

#[path = "support/conference.rs"]
mod conference;
use conference::{
    name, write_audio, write_rtp, write_vp8, ClearingEgress, Conference, AUDIO_SIZE, SIZE,
};

const PROFILES: [DtlsSrtpProfile; 2] = [
    DtlsSrtpProfile::AeadAes128Gcm,
    DtlsSrtpProfile::Aes128CmSha1_80,
];
const RECEIVERS: [usize; 3] = [1, 10, 50];

/// A packet writer of the conference module (`write_rtp`, `write_vp8`, `write_audio`).
type Writer = fn(&mut [u8; MAX_DATAGRAM], u16);

/// Times one forwarding step per iteration: a fresh sequence number per packet, written by `write` and
/// protected outside the timed section (so the ingress replay window never refuses one); `expect`
/// egress packets each.
fn time_forward(
    b: &mut Bencher<'_>,
    conf: &mut Conference,
    sender: &mut SrtpContext,
    (write, size): (Writer, usize),
    expect: usize,
) {
    let mut egress = ClearingEgress(SendBatch::new(BATCH));
    let mut total = Counters::default();
    let now = Instant::now();
    let mut seq = 0u16;
    b.iter_batched_ref(
        || {
            seq = seq.wrapping_add(1);
            let mut buf = [0u8; MAX_DATAGRAM];
            write(&mut buf, seq);
            let len = sender.protect_rtp(&mut buf, size).expect("protects");
            (buf, len)
        },
        |(buf, len)| {
            let sent = conf.forward(now, &mut buf[..*len], &mut egress, &mut total);
            assert_eq!(sent, expect, "{total:?}");
        },
        BatchSize::SmallInput,
    );
    black_box(total.rtp_out);
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_rtp_1200");
    for profile in PROFILES {
        for n in RECEIVERS {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::new(name(profile), n), |b| {
                let (mut conf, mut sender) = Conference::new(profile, n);
                time_forward(b, &mut conf, &mut sender, (write_rtp, SIZE), n);
            });
        }
    }
    g.finish();
}

fn fanout_simulcast(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_simulcast_vp8");
    let profile = DtlsSrtpProfile::AeadAes128Gcm;
    for n in [3, 30] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new(name(profile), n), |b| {
            let (_, mut sender) = Conference::new(profile, 1);
            let mut conf = Conference::simulcast(profile, n, &mut sender, Instant::now());
            time_forward(b, &mut conf, &mut sender, (write_vp8, SIZE), n / 3);
        });
    }
    g.finish();
}

/// A 100-octet audio packet to 50 receivers (the audio-large shape): per-packet costs weigh more than
/// per-byte ones here.
fn fanout_audio(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_audio_100");
    let profile = DtlsSrtpProfile::AeadAes128Gcm;
    let n = 50;
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new(name(profile), n), |b| {
        let (mut conf, mut sender) = Conference::audio(profile, n);
        time_forward(b, &mut conf, &mut sender, (write_audio, AUDIO_SIZE), n);
    });
    g.finish();
}

criterion_group!(benches, fanout, fanout_simulcast, fanout_audio);
criterion_main!(benches);
