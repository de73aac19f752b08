//! The RTX cache allocates nothing per packet in steady state: every video packet kept in its layer's
//! cache, and receivers' NACKs answered from it (RTX written, sent, counted), counted by a global
//! allocator around the shard's work only.

mod common;

use std::time::{Duration, Instant};

use sluice_core::domain::{Codec, PayloadType};
use sluice_core::rtcp::write_nack;
use sluice_core::rtp::RtpView;
use sluice_core::seam::Command;
use sluice_testutil::counting_alloc::{counted_here, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

const VIDEO: u32 = 0x41;
const RTX: u32 = 0x42;

#[test]
fn caching_and_answering_nacks_allocates_nothing_in_steady_state() {
    let mut conf = common::Conference::new(2);
    conf.set_grouped_sources(0, vec![common::simulcast::with_rtx("peer0-v0", VIDEO, RTX)]);
    for transport in [10, 11] {
        conf.shard.handle_command(
            Instant::now(),
            Command::SetPayloadTypes {
                transport,
                types: vec![
                    PayloadType {
                        pt: 100,
                        codec: Codec::Vp8,
                    },
                    PayloadType {
                        pt: 96,
                        codec: Codec::Rtx { apt: 100 },
                    },
                ],
            },
        );
    }
    conf.connect_all();

    let mut seq = 0u16;
    let mut send_frames = |conf: &mut common::Conference, n: usize| {
        for _ in 0..n {
            let key = seq.is_multiple_of(300);
            let mut p = vec![0x90, 0xE0, 0x80 | (seq >> 8) as u8, seq as u8, 0, 0];
            p.push(if key { 0x10 } else { 0x11 });
            p.resize(1000, seq as u8);
            conf.peers[0].send_rtp_payload(VIDEO, seq, u32::from(seq) * 3000, 100, &p);
            seq = seq.wrapping_add(1);
        }
        conf.peers[0].flush();
    };
    // The receiver NACKs two of the packets it got last.
    let nack_recent = |conf: &mut common::Conference| {
        let got: Vec<u16> = conf.peers[1]
            .rtp_packets
            .iter()
            .map(|p| RtpView::parse(p).expect("rtp"))
            .filter(|v| v.ssrc() == VIDEO)
            .map(|v| v.sequence_number())
            .collect();
        let seqs = &got[got.len() - 5..got.len() - 3];
        let mut buf = [0u8; 64];
        let n = write_nack(&mut buf, 0x5151, VIDEO, seqs).expect("nack");
        conf.peers[1].send_rtcp(&buf[..n]);
    };
    // Warm-up: the cache exists, the receiver's RTX state and budget too.
    send_frames(&mut conf, 40);
    assert!(conf.run_until(Duration::from_secs(5), |c| c.peers[1].rtp.len() >= 40));
    nack_recent(&mut conf);
    assert!(conf.run_until(Duration::from_secs(5), |c| c.peers[1].rtp.len() >= 42));

    let resent = |conf: &common::Conference| conf.shard.stats().total.retransmitted;
    let before = resent(&conf);
    let mut allocs = 0u64;
    for _round in 0..100 {
        send_frames(&mut conf, 10);
        nack_recent(&mut conf);
        std::thread::sleep(Duration::from_micros(200));
        let now = Instant::now();
        let ((), n) = counted_here(|| conf.shard.poll_io(now));
        allocs += n;
        for p in &mut conf.peers {
            p.poll(now);
        }
    }
    conf.run_until(Duration::from_millis(500), |_| false);
    let resent = resent(&conf) - before;
    assert!(resent >= 100, "only {resent} resent");
    assert_eq!(
        allocs, 0,
        "{allocs} heap allocations while resending {resent}"
    );
}
