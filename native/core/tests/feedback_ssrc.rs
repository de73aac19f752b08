//! Every RTCP packet the bridge sends as itself comes from the conference's feedback SSRCs, the ones the
//! control plane gave in `CreateRouter` and signals in Colibri2 (`jvb-a0`, `jvb-v0`), by the media kind
//! of the stream it is about: RRs, their SDES, PLI, and the FIR and NACK it passes on.

mod common;

use std::time::Duration;

use common::FEEDBACK;
use sluice_core::domain::MediaKind;
use sluice_core::rtcp::{parse_compound, write_fir, write_nack, write_pli, RtcpPacket};

const AUDIO: u32 = 0xA;
const VIDEO: u32 = 0xB;
/// The receiver's own SSRC as packet sender: the bridge must replace it.
const RECEIVER: u32 = 0x7777;

/// (what, packet sender SSRC, the media SSRCs it is about) for every packet of `compounds`, SDES as one
/// entry per chunk.
fn senders(compounds: &[Vec<u8>]) -> Vec<(&'static str, u32, Vec<u32>)> {
    let mut out = Vec::new();
    for c in compounds {
        for p in parse_compound(c) {
            match p.expect("the bridge sends valid RTCP") {
                RtcpPacket::ReceiverReport(rr) => {
                    out.push(("rr", rr.ssrc, rr.report_blocks().map(|b| b.ssrc).collect()))
                }
                RtcpPacket::Sdes(sdes) => {
                    out.extend(sdes.chunks().map(|ch| ("sdes", ch.ssrc, vec![])));
                }
                RtcpPacket::Pli {
                    sender_ssrc,
                    media_ssrc,
                } => out.push(("pli", sender_ssrc, vec![media_ssrc])),
                RtcpPacket::Fir(fir) => out.push((
                    "fir",
                    fir.sender_ssrc,
                    fir.entries().map(|(s, _)| s).collect(),
                )),
                RtcpPacket::Nack(nack) => {
                    out.push(("nack", nack.sender_ssrc, vec![nack.media_ssrc]))
                }
                other => panic!("the bridge sent {other:?}"),
            }
        }
    }
    out
}

#[test]
fn the_bridge_sends_rtcp_from_the_signalled_feedback_ssrcs_by_media_kind() {
    let mut conf = common::Conference::new(2);
    conf.set_sources(0, &[(AUDIO, MediaKind::Audio), (VIDEO, MediaKind::Video)]);
    conf.connect_all();
    for seq in 0..50u16 {
        conf.peers[0].send_rtp(AUDIO, seq, u32::from(seq) * 960, 111, 100);
        // Video 3 and 5 are lost on the way in: the bridge's cache cannot answer the NACK below.
        if seq != 3 && seq != 5 {
            conf.peers[0].send_rtp(VIDEO, seq, u32::from(seq) * 3000, 96, 800);
        }
    }
    conf.peers[0].flush();

    // Past the keyframe request rate limit, in case the bridge asked when the receiver connected.
    conf.run_until(Duration::from_millis(400), |_| false);
    // The receiver asks the sender for a keyframe (PLI, FIR) and for retransmissions of both streams.
    let mut buf = [0u8; 64];
    let n = write_pli(&mut buf, RECEIVER, VIDEO).expect("pli");
    conf.peers[1].send_rtcp(&buf[..n]);
    let n = write_fir(&mut buf, RECEIVER, VIDEO, 1).expect("fir");
    conf.peers[1].send_rtcp(&buf[..n]);
    for ssrc in [AUDIO, VIDEO] {
        let n = write_nack(&mut buf, RECEIVER, ssrc, &[3, 5]).expect("nack");
        conf.peers[1].send_rtcp(&buf[..n]);
    }

    let wanted = [
        ("rr", AUDIO),
        ("rr", VIDEO),
        ("pli", VIDEO),
        ("fir", VIDEO),
        ("nack", AUDIO),
        ("nack", VIDEO),
    ];
    let ok = conf.run_until(Duration::from_secs(4), |c| {
        let got = senders(&c.peers[0].rtcp_packets);
        wanted
            .iter()
            .all(|(what, ssrc)| got.iter().any(|(w, _, m)| w == what && m.contains(ssrc)))
    });
    let got = senders(&conf.peers[0].rtcp_packets);
    assert!(ok, "the sender did not get all of {wanted:?}: {got:x?}");

    for (what, sender, media) in &got {
        match *what {
            "sdes" => assert!(
                [FEEDBACK.audio, FEEDBACK.video].contains(sender),
                "SDES chunk for {sender:#x}"
            ),
            _ => {
                let kind = if media.iter().all(|m| *m == AUDIO) {
                    FEEDBACK.audio
                } else {
                    assert!(
                        media.iter().all(|m| *m == VIDEO),
                        "{what} mixes kinds: {media:x?}"
                    );
                    FEEDBACK.video
                };
                assert_eq!(
                    *sender, kind,
                    "{what} about {media:x?} sent from {sender:#x}"
                );
            }
        }
    }
    // One compound per reporting SSRC: its RR, then its own SDES CNAME (RFC 3550 6.1).
    for c in &conf.peers[0].rtcp_packets {
        let s = senders(std::slice::from_ref(c));
        if let Some((_, rr_sender, _)) = s.iter().find(|(w, _, _)| *w == "rr") {
            let others: Vec<u32> = s.iter().map(|(_, sender, _)| *sender).collect();
            assert!(
                others.iter().all(|x| x == rr_sender),
                "a report compound mixes senders: {s:x?}"
            );
            assert!(
                s.iter().any(|(w, _, _)| *w == "sdes"),
                "an RR without SDES: {s:x?}"
            );
        }
    }
    // The receiver sends nothing, so the bridge reports to it on nothing.
    assert!(senders(&conf.peers[1].rtcp_packets)
        .iter()
        .all(|(what, _, _)| *what != "rr"));
}
