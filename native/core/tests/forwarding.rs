//! Forwarding and per-leg RTCP through a real Shard with in-process peers on loopback.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice_core::domain::MediaKind;
use sluice_core::rtcp::{parse_compound, write_pli, write_sender_report, ReportBlock, RtcpPacket};
use sluice_core::seam::Command;

fn rtcp_seen(peer: &common::TestPeer, pred: impl Fn(&RtcpPacket<'_>) -> bool) -> bool {
    peer.rtcp_packets
        .iter()
        .any(|c| parse_compound(c).filter_map(Result::ok).any(|p| pred(&p)))
}

fn send_burst(conf: &mut common::Conference, peer: usize, ssrc: u32, seqs: std::ops::Range<u16>) {
    for seq in seqs {
        conf.peers[peer].send_rtp(ssrc, seq, u32::from(seq) * 3000, 100, 800);
    }
    conf.peers[peer].flush();
}

fn every_stream_reaches_every_other_peer(bind: SocketAddr) {
    let mut conf = common::Conference::on(3, bind);
    let ssrcs = [0x1000_0001u32, 0x2000_0002, 0x3000_0003];
    for (i, ssrc) in ssrcs.iter().enumerate() {
        conf.set_sources(i, &[(*ssrc, MediaKind::Video)]);
    }
    conf.connect_all();
    for (i, ssrc) in ssrcs.iter().enumerate() {
        send_burst(&mut conf, i, *ssrc, 0..100);
    }
    let ok = conf.run_until(Duration::from_secs(5), |c| {
        (0..3).all(|r| {
            (0..3).filter(|s| *s != r).all(|s| {
                c.peers[r]
                    .rtp
                    .iter()
                    .filter(|(x, _)| *x == ssrcs[s])
                    .count()
                    >= 100
            })
        })
    });
    assert!(ok, "not every stream reached every other peer");
    for (r, peer) in conf.peers.iter().enumerate() {
        assert!(
            !peer.rtp.iter().any(|(x, _)| *x == ssrcs[r]),
            "peer {r} got its own stream back"
        );
    }
}

#[test]
fn every_stream_reaches_every_other_peer_ipv4() {
    every_stream_reaches_every_other_peer("127.0.0.1:0".parse().expect("literal"));
}

#[test]
fn every_stream_reaches_every_other_peer_ipv6() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine: skipped");
        return;
    }
    every_stream_reaches_every_other_peer("[::1]:0".parse().expect("literal"));
}

#[test]
fn rtcp_is_terminated_per_leg() {
    let mut conf = common::Conference::new(2);
    conf.set_sources(0, &[(0xA, MediaKind::Video)]);
    conf.connect_all();
    send_burst(&mut conf, 0, 0xA, 0..50);

    // The sender gets the bridge's own receiver reports about its stream.
    let ok = conf.run_until(Duration::from_secs(4), |c| {
        rtcp_seen(&c.peers[0], |p| {
            matches!(p, RtcpPacket::ReceiverReport(rr) if rr.report_blocks().any(|b| b.ssrc == 0xA))
        })
    });
    assert!(ok, "no receiver report about ssrc 0xA reached the sender");

    // A sender report reaches the receiver without report blocks.
    let mut sr = [0u8; 64];
    let block = ReportBlock {
        ssrc: 0xBEEF,
        ..Default::default()
    };
    let n = write_sender_report(
        &mut sr,
        0xA,
        0x1234_5678_9abc_def0,
        42,
        50,
        40_000,
        &[block],
    )
    .expect("sr");
    conf.peers[0].send_rtcp(&sr[..n]);
    let ok = conf.run_until(Duration::from_secs(2), |c| {
        rtcp_seen(&c.peers[1], |p| {
            matches!(p, RtcpPacket::SenderReport(s)
                if s.ssrc == 0xA && s.ntp_timestamp == 0x1234_5678_9abc_def0 && s.report_blocks().count() == 0)
        })
    });
    assert!(
        ok,
        "the sender report was not passed on (stripped of report blocks)"
    );

    // The receiver's PLI for 0xA reaches the sender, with the bridge as the packet sender. (Forget the PLI
    // the bridge sent by itself when the receiver connected.)
    conf.peers[0].rtcp_packets.clear();
    let mut pli = [0u8; 12];
    let n = write_pli(&mut pli, 0x7777, 0xA).expect("pli");
    conf.peers[1].send_rtcp(&pli[..n]);
    let ok = conf.run_until(Duration::from_secs(2), |c| {
        rtcp_seen(&c.peers[0], |p| matches!(p, RtcpPacket::Pli { media_ssrc: 0xA, sender_ssrc } if *sender_ssrc != 0x7777))
    });
    assert!(ok, "the PLI was not routed to the sender");

    // The receiver's own receiver reports end at the bridge.
    assert!(!rtcp_seen(
        &conf.peers[0],
        |p| matches!(p, RtcpPacket::ReceiverReport(rr) if rr.ssrc == 0x7777)
    ));
}

#[test]
fn a_closed_transport_gets_nothing_and_sends_nothing() {
    let mut conf = common::Conference::new(3);
    conf.set_sources(0, &[(0xA, MediaKind::Audio)]);
    conf.set_sources(2, &[(0xC, MediaKind::Audio)]);
    conf.connect_all();
    send_burst(&mut conf, 0, 0xA, 0..20);
    assert!(
        conf.run_until(Duration::from_secs(3), |c| c.peers[2].rtp.len() >= 20
            && c.peers[1].rtp.len() >= 20)
    );

    conf.shard
        .handle_command(Instant::now(), Command::CloseTransport { transport: 12 });
    let before = conf.peers[2].rtp.len();
    send_burst(&mut conf, 0, 0xA, 20..40);
    send_burst(&mut conf, 2, 0xC, 0..20);
    assert!(conf.run_until(Duration::from_secs(3), |c| c.peers[1].rtp.len() >= 40));
    conf.run_until(Duration::from_millis(200), |_| false);
    assert_eq!(
        conf.peers[2].rtp.len(),
        before,
        "a closed transport still received media"
    );
    assert!(
        !conf.peers[1].rtp.iter().any(|(s, _)| *s == 0xC),
        "a closed transport's media was forwarded"
    );
}

/// SIM and FID groups cross the seam intact: after SetSources the Router knows each layer and its RTX,
/// and the receiver gets one layer (the top one, with no allocation yet) on the Source's primary SSRC.
#[test]
fn set_sources_carries_simulcast_layers_and_rtx_into_the_router() {
    use sluice_core::domain::{GroupSemantics, Layer, Source, SsrcGroup};
    use sluice_core::router::Stream;

    let group = |semantics, ssrcs: &[u32]| SsrcGroup {
        semantics,
        ssrcs: ssrcs.to_vec(),
    };
    let video = Source {
        kind: MediaKind::Video,
        ssrcs: vec![0x11, 0x21, 0x12, 0x22, 0x13, 0x23],
        groups: vec![
            group(GroupSemantics::Sim, &[0x11, 0x12, 0x13]),
            group(GroupSemantics::Fid, &[0x11, 0x21]),
            group(GroupSemantics::Fid, &[0x12, 0x22]),
            group(GroupSemantics::Fid, &[0x13, 0x23]),
        ],
        name: "peer0-v0".into(),
    };
    let mut conf = common::Conference::new(2);
    conf.set_grouped_sources(0, vec![video]);

    let router = conf.shard.router(1).expect("router 1");
    let sources = router.sources_of(10);
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].name, "peer0-v0");
    assert_eq!(
        sources[0].layers,
        [0x11, 0x12, 0x13].map(|ssrc| Layer {
            ssrc,
            rtx: Some(ssrc + 0x10)
        })
    );
    assert_eq!(
        router.stream(0x12),
        Some(Stream::Layer {
            index: 1,
            rtx: Some(0x22)
        })
    );
    assert_eq!(router.stream(0x23), Some(Stream::Rtx { primary: 0x13 }));
    assert!(
        router.producers.contains_key(&0x23),
        "every SSRC has its Producer"
    );

    conf.connect_all();
    for ssrc in [0x11, 0x13] {
        send_burst(&mut conf, 0, ssrc, 0..20);
    }
    let ok = conf.run_until(Duration::from_secs(5), |c| c.peers[1].rtp.len() >= 20);
    assert!(ok, "the top layer reaches the other peer");
    conf.run_until(Duration::from_millis(200), |_| false);
    let got: Vec<(u32, u16)> = conf.peers[1].rtp.clone();
    assert_eq!(got, (0..20).map(|s| (0x11, s)).collect::<Vec<_>>());
}
