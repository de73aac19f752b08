//! Transport-wide sequence numbers on what the bridge forwards: each receiver that negotiated
//! transport-cc gets its own gapless numbering in the packets' extension, whatever the sender wrote
//! there; a receiver that did not gets the packet as it came.

mod common;

use std::time::{Duration, Instant};

use sluice_core::domain::{HeaderExtensionIds, MediaKind};
use sluice_core::rtp::RtpView;
use sluice_core::seam::Command;

const TCC: u8 = 5;
const AUDIO: u32 = 0xA0;

/// An audio packet with a one-byte-header extension block: transport-cc (id 5, the sender's own
/// number) and an audio level (id 1).
fn packet(seq: u16, tcc: u16) -> Vec<u8> {
    let mut p = vec![0x90, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&AUDIO.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x02]);
    p.extend_from_slice(&[(TCC << 4) | 1, (tcc >> 8) as u8, tcc as u8]);
    p.extend_from_slice(&[(1 << 4), 0x85, 0x00, 0x00]);
    p.extend_from_slice(&[0x42; 60]);
    p
}

fn tcc_of(packet: &[u8]) -> Option<u16> {
    let v = RtpView::parse(packet).ok()?;
    let ext = v.extension(TCC)?;
    Some(u16::from_be_bytes([*ext.first()?, *ext.get(1)?]))
}

#[test]
fn each_receiver_gets_its_own_gapless_transport_wide_numbers() {
    let mut conf = common::Conference::new(3);
    conf.set_sources(0, &[(AUDIO, MediaKind::Audio)]);
    let ids = HeaderExtensionIds {
        audio_level: Some(1),
        transport_cc: Some(TCC),
        ..HeaderExtensionIds::default()
    };
    // The sender and receiver 1 negotiated transport-cc; receiver 2 did not.
    for transport in [10, 11] {
        conf.shard.handle_command(
            Instant::now(),
            Command::SetHeaderExtensions { transport, ids },
        );
    }
    conf.connect_all();
    for i in 0..50u16 {
        // The sender's own numbers, with gaps (it numbers its video too).
        conf.peers[0].send_plain_rtp(&packet(i, 7000 + 3 * i));
    }
    conf.peers[0].flush();
    assert!(
        conf.run_until(Duration::from_secs(5), |c| c.peers[1].rtp_packets.len()
            >= 50
            && c.peers[2].rtp_packets.len() >= 50)
    );
    let mine: Vec<u16> = conf.peers[1]
        .rtp_packets
        .iter()
        .filter_map(|p| tcc_of(p))
        .collect();
    assert_eq!(mine, (0..50).collect::<Vec<u16>>());
    let theirs: Vec<u16> = conf.peers[2]
        .rtp_packets
        .iter()
        .filter_map(|p| tcc_of(p))
        .collect();
    assert_eq!(theirs, (0..50).map(|i| 7000 + 3 * i).collect::<Vec<u16>>());
    // The audio level next to it is untouched.
    let level = RtpView::parse(&conf.peers[1].rtp_packets[0])
        .expect("rtp")
        .extension(1)
        .map(<[u8]>::to_vec);
    assert_eq!(level, Some(vec![0x85]));
}
