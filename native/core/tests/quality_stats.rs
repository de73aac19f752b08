//! What the stats snapshot tells of each transport's link for the operator's view: the RFC 3550
//! receive statistics of what it sends (received, lost) and its audio jitter.

mod common;

use std::time::Duration;

use sluice_core::domain::MediaKind;

const AUDIO: u32 = 0xA0;

/// An Opus-like packet, 20 ms apart in RTP time.
fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&AUDIO.to_be_bytes());
    p.extend_from_slice(&[0x42; 60]);
    p
}

#[test]
fn a_senders_losses_and_jitter_show_on_its_transport() {
    let mut conf = common::Conference::new(2);
    conf.set_sources(0, &[(AUDIO, MediaKind::Audio)]);
    conf.connect_all();
    // 100 sequence numbers, every tenth never sent: 90 arrive, 10 are lost.
    for seq in (0..100u16).filter(|s| s % 10 != 5) {
        conf.peers[0].send_plain_rtp(&packet(seq));
    }
    conf.peers[0].flush();
    assert!(
        conf.run_until(Duration::from_secs(5), |c| c.peers[1].rtp_packets.len()
            >= 90)
    );
    let sender = conf.transport_stats(10);
    assert_eq!(
        (sender.rtp_received, sender.rtp_lost),
        (90, 10),
        "{sender:?}"
    );
    // Sent in one burst, timestamps 20 ms apart: the jitter is about the 20 ms spacing, finite.
    assert!(
        sender.jitter_ms.is_finite() && sender.jitter_ms > 0.0,
        "{sender:?}"
    );
    assert!(sender.jitter_ms < 1000.0, "{sender:?}");
    // The receiver sent nothing: nothing received from it, nothing lost, no RTT without feedback.
    let receiver = conf.transport_stats(11);
    assert_eq!((receiver.rtp_received, receiver.rtp_lost), (0, 0));
    assert_eq!(receiver.rtt_ms, None);
}
