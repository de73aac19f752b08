//! Proves that SRTP/SRTCP protect and unprotect allocate nothing on the Rust heap in steady state.
//!
//! Its own test binary, because it installs a counting global allocator. Counting is per thread,
//! so the test harness's other threads do not disturb it.

use sluice_core::srtp::{SrtpContext, SrtpError, SrtpProfile};
use sluice_testutil::counting_alloc::{allocations_here as allocations, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Writes an RTP packet (2 CSRCs, a 2-word 0xBEDE extension) of `len` octets into `buf`.
fn write_rtp(buf: &mut [u8], seq: u16, ssrc: u32, len: usize) {
    buf[..len].fill(0xab);
    buf[0] = 0x80 | 0x10 | 2;
    buf[1] = 96;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&u32::from(seq).wrapping_mul(3000).to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    buf[20..24].copy_from_slice(&[0xbe, 0xde, 0, 2]);
}

fn write_rtcp(buf: &mut [u8], ssrc: u32, len: usize) {
    buf[..len].fill(0x11);
    buf[0] = 0x80;
    buf[1] = 200;
    buf[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
}

#[test]
fn srtp_steady_state_allocates_nothing() {
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let key = [7u8; 16];
        let salt = vec![3u8; profile.master_salt_len()];
        let mut tx = SrtpContext::new(profile, &key, &salt).expect("keys");
        let mut rx = SrtpContext::new(profile, &key, &salt).expect("keys");
        let mut buf = [0u8; 1500];
        let ssrcs = [0x1111_1111u32, 0x2222_2222, 0x3333_3333];

        // Warm-up: first packet of each SSRC, RTP and RTCP.
        for &ssrc in &ssrcs {
            write_rtp(&mut buf, 65000, ssrc, 1200);
            let n = tx.protect_rtp(&mut buf, 1200).expect("protect");
            rx.unprotect_rtp(&mut buf[..n]).expect("unprotect");
            write_rtcp(&mut buf, ssrc, 100);
            let n = tx.protect_rtcp(&mut buf, 100).expect("protect");
            rx.unprotect_rtcp(&mut buf[..n]).expect("unprotect");
        }

        // The counter works: a boxed value is one allocation.
        let probe = allocations();
        drop(std::hint::black_box(Box::new(1u64)));
        assert_eq!(
            allocations() - probe,
            1,
            "the counting allocator sees allocations"
        );

        let before = allocations();
        for i in 1..=1000u16 {
            let ssrc = ssrcs[usize::from(i) % ssrcs.len()];
            let len = if i % 2 == 0 { 1200 } else { 100 };
            // Crosses the 16-bit rollover on the way.
            let seq = i.wrapping_add(65000);
            write_rtp(&mut buf, seq, ssrc, len);
            let n = tx.protect_rtp(&mut buf, len).expect("protect");
            let m = rx.unprotect_rtp(&mut buf[..n]).expect("unprotect");
            assert_eq!(m, len);
            if i % 10 == 0 {
                write_rtcp(&mut buf, ssrc, 80);
                let n = tx.protect_rtcp(&mut buf, 80).expect("protect");
                rx.unprotect_rtcp(&mut buf[..n]).expect("unprotect");
            }
        }
        let steady = allocations() - before;
        assert_eq!(
            steady, 0,
            "{profile:?}: {steady} allocations in 1,000 packets"
        );

        // Refused packets do not allocate either: replay, bad tag, truncation.
        write_rtp(&mut buf, 2000, ssrcs[0], 200);
        let n = tx.protect_rtp(&mut buf, 200).expect("protect");
        let mut wire = [0u8; 1500];
        wire[..n].copy_from_slice(&buf[..n]);
        let before = allocations();
        let mut forged = wire;
        forged[n - 1] ^= 1;
        assert_eq!(
            rx.unprotect_rtp(&mut forged[..n]),
            Err(SrtpError::AuthFailed)
        );
        let mut good = wire;
        rx.unprotect_rtp(&mut good[..n]).expect("unprotect");
        let mut again = wire;
        assert_eq!(rx.unprotect_rtp(&mut again[..n]), Err(SrtpError::Replay));
        assert_eq!(rx.unprotect_rtp(&mut again[..5]), Err(SrtpError::TooShort));
        let refused = allocations() - before;
        assert_eq!(
            refused, 0,
            "{profile:?}: {refused} allocations on refused packets"
        );
    }
}
