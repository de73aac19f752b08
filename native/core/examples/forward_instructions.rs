//! A fixed run of SRTP packets through the shard's forwarding code, for counting instructions per
//! forwarded packet under callgrind (`python -m bench.instructions`, which the suite runs against a
//! committed baseline). Everything but `forward_all` is setup: the conference of the fan-out bench
//! (`benches/support/conference.rs`, real DTLS-SRTP keys) and the ingress packets, protected beforehand.
//!
//! `forward_instructions SCENARIO PACKETS` prints `egress N`: the packets `forward_all` queued.
//! Scenarios: rtp-gcm-10, rtp-cm-10 (1,200-octet video to 10 receivers, AES-GCM or AES-CM with
//! HMAC-SHA1-80), simulcast-gcm-30 (the top VP8 simulcast layer to 30 receivers, a third of whom get it),
//! audio-gcm-50 (100-octet audio to 50 receivers).

use std::hint::black_box;
use std::time::Instant;

use sluice_core::dtls::DtlsSrtpProfile;
use sluice_core::io::{SendBatch, MAX_DATAGRAM};
use sluice_core::shard::BATCH;
use sluice_core::srtp::SrtpContext;
use sluice_core::stats::Counters;

// Shared with the criterion bench; not every helper is used here.
#[allow(dead_code)]
#[path = "../benches/support/conference.rs"]
mod conference;
use conference::{write_audio, write_rtp, write_vp8, ClearingEgress, Conference, AUDIO_SIZE, SIZE};

type Writer = fn(&mut [u8; MAX_DATAGRAM], u16);

/// What callgrind counts: every packet through the sender's unprotect, the Router and each receiver's
/// protect into the egress batch.
#[inline(never)]
fn forward_all(
    conf: &mut Conference,
    packets: &mut [([u8; MAX_DATAGRAM], usize)],
    egress: &mut ClearingEgress,
    total: &mut Counters,
    now: Instant,
) -> usize {
    let mut sent = 0;
    for (buf, len) in packets.iter_mut() {
        sent += conf.forward(now, &mut buf[..*len], egress, total);
    }
    sent
}

fn packets(
    sender: &mut SrtpContext,
    n: usize,
    write: Writer,
    size: usize,
) -> Vec<([u8; MAX_DATAGRAM], usize)> {
    (0..n)
        .map(|i| {
            let mut buf = [0u8; MAX_DATAGRAM];
            write(&mut buf, i as u16 + 1);
            let len = sender.protect_rtp(&mut buf, size).expect("protects");
            (buf, len)
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(scenario), Some(count)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok()))
    else {
        eprintln!("usage: forward_instructions SCENARIO PACKETS");
        std::process::exit(2);
    };
    let now = Instant::now();
    let gcm = DtlsSrtpProfile::AeadAes128Gcm;
    let (mut conf, mut ingress) = match scenario.as_str() {
        "rtp-gcm-10" | "rtp-cm-10" => {
            let profile = if scenario == "rtp-cm-10" {
                DtlsSrtpProfile::Aes128CmSha1_80
            } else {
                gcm
            };
            let (conf, mut sender) = Conference::new(profile, 10);
            let ingress = packets(&mut sender, count, write_rtp, SIZE);
            (conf, ingress)
        }
        "simulcast-gcm-30" => {
            let (_, mut sender) = Conference::new(gcm, 1);
            let conf = Conference::simulcast(gcm, 30, &mut sender, now);
            let ingress = packets(&mut sender, count, write_vp8, SIZE);
            (conf, ingress)
        }
        "audio-gcm-50" => {
            let (conf, mut sender) = Conference::audio(gcm, 50);
            let ingress = packets(&mut sender, count, write_audio, AUDIO_SIZE);
            (conf, ingress)
        }
        other => {
            eprintln!("unknown scenario {other:?}");
            std::process::exit(2);
        }
    };
    let mut egress = ClearingEgress(SendBatch::new(BATCH));
    let mut total = Counters::default();
    let sent = forward_all(&mut conf, &mut ingress, &mut egress, &mut total, now);
    black_box(total.rtp_out);
    println!("egress {sent}");
}
