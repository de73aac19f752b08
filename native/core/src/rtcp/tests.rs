use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::rtp::tests::XorShift;

/// Walks every view and iterator of a compound, so malformed-input tests exercise them all.
fn touch_all(buf: &[u8]) -> usize {
    let mut n = 0usize;
    for p in parse_compound(buf) {
        let Ok(p) = p else { break };
        n = n.wrapping_add(p.as_bytes().map_or(0, <[u8]>::len));
        match p {
            RtcpPacket::SenderReport(sr) => {
                n = n
                    .wrapping_add(sr.ntp_timestamp as usize)
                    .wrapping_add(sr.ssrc as usize);
                n = n.wrapping_add(sr.report_blocks().map(|b| b.jitter as usize).sum::<usize>());
            }
            RtcpPacket::ReceiverReport(rr) => {
                n = n.wrapping_add(rr.report_blocks().map(|b| b.ssrc as usize).sum::<usize>());
            }
            RtcpPacket::Sdes(sdes) => {
                for chunk in sdes.chunks() {
                    n = n.wrapping_add(chunk.ssrc as usize);
                    for (t, text) in chunk.items() {
                        n = n.wrapping_add(usize::from(t) + text.len());
                    }
                    n = n.wrapping_add(chunk.cname().map_or(0, <[u8]>::len));
                }
            }
            RtcpPacket::Bye(bye) => {
                n = n.wrapping_add(bye.ssrcs().count() + bye.reason.map_or(0, <[u8]>::len));
            }
            RtcpPacket::Pli {
                sender_ssrc,
                media_ssrc,
            } => n = n.wrapping_add((sender_ssrc ^ media_ssrc) as usize),
            RtcpPacket::Fir(fir) => n = n.wrapping_add(fir.entries().count()),
            RtcpPacket::Nack(nack) => {
                n = n.wrapping_add(nack.lost_sequence_numbers().count() + nack.pairs().count());
            }
            RtcpPacket::TransportCc(twcc) => {
                n = n.wrapping_add(twcc.reference_time_us() as usize);
                for status in twcc.packets() {
                    n = n.wrapping_add(status.map_or(1, |p| p.sequence_number as usize));
                }
            }
            RtcpPacket::Remb(remb) => {
                n = n
                    .wrapping_add(remb.ssrcs().count())
                    .wrapping_add(remb.bitrate_bps as usize);
            }
            RtcpPacket::Other { data, .. } => n = n.wrapping_add(data.len()),
        }
    }
    let _ = validate_compound(buf);
    for raw in split_compound(buf).flatten() {
        n = n.wrapping_add(RtcpPacket::parse(raw).map_or(0, |_| 1));
    }
    n
}

fn one(buf: &[u8]) -> RtcpPacket<'_> {
    let mut it = parse_compound(buf);
    let p = it.next().expect("one packet").expect("valid packet");
    assert!(it.next().is_none());
    validate_compound(buf).expect("valid compound");
    assert_eq!(RtcpPacket::parse(buf), Ok(p));
    p
}

// ---- RFC 3550 ----

const SR: [u8; 52] = [
    0x81, 200, 0x00, 0x0c, // V=2 RC=1 PT=200 length=12
    0x01, 0x02, 0x03, 0x04, // SSRC of sender
    0xe1, 0xa2, 0xb3, 0xc4, 0xd5, 0xe6, 0xf7, 0x08, // NTP timestamp
    0x00, 0x11, 0x22, 0x33, // RTP timestamp
    0x00, 0x00, 0x00, 0x64, // packet count 100
    0x00, 0x00, 0x27, 0x10, // octet count 10000
    0x0a, 0x0b, 0x0c, 0x0d, // SSRC_1
    0x40, 0xff, 0xff, 0xff, // fraction 64/256, cumulative -1
    0x00, 0x01, 0x00, 0x05, // extended highest seq: 1 cycle, seq 5
    0x00, 0x00, 0x00, 0x20, // jitter
    0x12, 0x34, 0x56, 0x78, // LSR
    0x00, 0x01, 0x00, 0x00, // DLSR = 1 s
];

#[test]
fn rfc3550_6_4_1_sender_report() {
    let RtcpPacket::SenderReport(sr) = one(&SR) else {
        panic!("not an SR")
    };
    assert_eq!(sr.ssrc, 0x0102_0304);
    assert_eq!(sr.ntp_timestamp, 0xe1a2_b3c4_d5e6_f708);
    assert_eq!(sr.rtp_timestamp, 0x0011_2233);
    assert_eq!(sr.packet_count, 100);
    assert_eq!(sr.octet_count, 10_000);
    assert_eq!(sr.as_bytes(), &SR);
    let blocks: Vec<_> = sr.report_blocks().collect();
    assert_eq!(
        blocks,
        vec![ReportBlock {
            ssrc: 0x0a0b_0c0d,
            fraction_lost: 0x40,
            cumulative_lost: -1,
            extended_highest_seq: 0x0001_0005,
            jitter: 0x20,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 0x0001_0000,
        }]
    );
    // No blocks (RC=0), and profile-specific extension bytes after the blocks are ignored.
    let mut sr0 = SR[..28].to_vec();
    sr0[0] = 0x80;
    sr0[3] = 6;
    let RtcpPacket::SenderReport(sr) = one(&sr0) else {
        panic!()
    };
    assert_eq!(sr.report_blocks().count(), 0);
    let mut ext = SR.to_vec();
    ext.extend_from_slice(&[0xee; 8]);
    ext[3] = 14;
    let RtcpPacket::SenderReport(sr) = one(&ext) else {
        panic!()
    };
    assert_eq!(sr.report_blocks().count(), 1);
}

#[test]
fn rfc3550_6_4_2_receiver_report() {
    let mut rr = vec![0x82, 201, 0x00, 13, 0xde, 0xad, 0xbe, 0xef];
    rr.extend_from_slice(&[
        0, 0, 0, 1, 0xff, 0x7f, 0xff, 0xff, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3,
    ]);
    rr.extend_from_slice(&[
        0, 0, 0, 2, 0x00, 0x80, 0x00, 0x00, 0, 0, 0, 8, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6,
    ]);
    let RtcpPacket::ReceiverReport(view) = one(&rr) else {
        panic!()
    };
    assert_eq!(view.ssrc, 0xdead_beef);
    let blocks: Vec<_> = view.report_blocks().collect();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].ssrc, 1);
    assert_eq!(blocks[0].fraction_lost, 255);
    assert_eq!(blocks[0].cumulative_lost, 0x7f_ffff);
    assert_eq!(blocks[0].extended_highest_seq, 9);
    assert_eq!(blocks[0].jitter, 1);
    assert_eq!(blocks[0].last_sr, 2);
    assert_eq!(blocks[0].delay_since_last_sr, 3);
    assert_eq!(blocks[1].cumulative_lost, -0x80_0000);
    // Empty RR (RC=0) as sent by a receiver with nothing to report.
    let empty = [0x80, 201, 0, 1, 0, 0, 0, 7];
    let RtcpPacket::ReceiverReport(view) = one(&empty) else {
        panic!()
    };
    assert_eq!((view.ssrc, view.report_blocks().count()), (7, 0));
    // RC says 2 blocks but the length holds 1.
    let mut short = rr[..32].to_vec();
    short[3] = 7;
    assert_eq!(RtcpPacket::parse(&short), Err(RtcpError::Truncated));
}

const SDES: [u8; 28] = [
    0x82, 202, 0x00, 0x06, // V=2 SC=2 PT=202 length=6
    0x11, 0x11, 0x11, 0x11, // SSRC_1
    1, 3, b'a', b'b', b'c', 0, 0, 0, // CNAME "abc", null, pad to 32 bits
    0x22, 0x22, 0x22, 0x22, // SSRC_2
    2, 2, b'J', b'o', 6, 1, b'x', 0, // NAME "Jo", TOOL "x", null
];

#[test]
fn rfc3550_6_5_sdes() {
    let RtcpPacket::Sdes(sdes) = one(&SDES) else {
        panic!()
    };
    let chunks: Vec<_> = sdes.chunks().collect();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].ssrc, 0x1111_1111);
    assert_eq!(
        chunks[0].items().collect::<Vec<_>>(),
        vec![(SDES_CNAME, &b"abc"[..])]
    );
    assert_eq!(chunks[0].cname(), Some(&b"abc"[..]));
    assert_eq!(chunks[1].ssrc, 0x2222_2222);
    assert_eq!(
        chunks[1].items().collect::<Vec<_>>(),
        vec![(2, &b"Jo"[..]), (6, &b"x"[..])]
    );
    assert_eq!(chunks[1].cname(), None);
    // An item whose length runs past the packet.
    let mut bad = SDES;
    bad[9] = 200;
    assert_eq!(RtcpPacket::parse(&bad), Err(RtcpError::Truncated));
    // A chunk without a null terminator.
    let mut bad = SDES;
    bad[27] = 0x41;
    assert_eq!(RtcpPacket::parse(&bad), Err(RtcpError::Truncated));
    // SC larger than the chunks present.
    let mut bad = SDES;
    bad[0] = 0x83;
    assert_eq!(RtcpPacket::parse(&bad), Err(RtcpError::Truncated));
}

#[test]
fn rfc3550_6_6_bye() {
    let bye = [
        0x82, 203, 0x00, 0x04, // SC=2 length=4
        0, 0, 0, 1, 0, 0, 0, 2, // SSRCs
        4, b'b', b'y', b'e', b'!', 0, 0, 0, // reason, padded with zeros
    ];
    let RtcpPacket::Bye(view) = one(&bye) else {
        panic!()
    };
    assert_eq!(view.ssrcs().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(view.reason, Some(&b"bye!"[..]));
    // Without a reason.
    let bye = [0x81, 203, 0x00, 0x01, 0, 0, 0, 9];
    let RtcpPacket::Bye(view) = one(&bye) else {
        panic!()
    };
    assert_eq!(view.ssrcs().collect::<Vec<_>>(), vec![9]);
    assert_eq!(view.reason, None);
    // A reason length past the end.
    let bad = [0x81, 203, 0x00, 0x02, 0, 0, 0, 9, 5, b'a', b'b', b'c'];
    assert_eq!(RtcpPacket::parse(&bad), Err(RtcpError::Truncated));
    // SC past the end.
    let bad = [0x83, 203, 0x00, 0x01, 0, 0, 0, 9];
    assert_eq!(RtcpPacket::parse(&bad), Err(RtcpError::Truncated));
}

// ---- RFC 4585 / RFC 5104 ----

const PLI: [u8; 12] = [0x81, 206, 0x00, 0x02, 0, 0, 0, 0x0a, 0, 0, 0, 0x0b];

#[test]
fn rfc4585_6_3_1_pli() {
    assert_eq!(
        one(&PLI),
        RtcpPacket::Pli {
            sender_ssrc: 0x0a,
            media_ssrc: 0x0b
        }
    );
    assert_eq!(one(&PLI).as_bytes(), None);
    // Missing media SSRC.
    let bad = [0x81, 206, 0x00, 0x01, 0, 0, 0, 0x0a];
    assert_eq!(RtcpPacket::parse(&bad), Err(RtcpError::TooShort));
}

const NACK: [u8; 20] = [
    0x81, 205, 0x00, 0x04, // FMT=1 PT=205 length=4
    0, 0, 0, 0x0a, 0, 0, 0, 0x0b, // sender, media
    0x00, 0x64, 0x80, 0x05, // PID=100, BLP bits 0, 2, 15
    0xff, 0xff, 0x00, 0x01, // PID=65535, BLP bit 0 (wraps to 0)
];

#[test]
fn rfc4585_6_2_1_generic_nack() {
    let RtcpPacket::Nack(nack) = one(&NACK) else {
        panic!()
    };
    assert_eq!((nack.sender_ssrc, nack.media_ssrc), (0x0a, 0x0b));
    assert_eq!(
        nack.pairs().collect::<Vec<_>>(),
        vec![(100, 0x8005), (65535, 1)]
    );
    assert_eq!(
        nack.lost_sequence_numbers().collect::<Vec<_>>(),
        vec![100, 101, 103, 116, 65535, 0]
    );
    // Every BLP bit maps to PID + bit + 1.
    for bit in 0..16u16 {
        let mut p = NACK[..16].to_vec();
        p[3] = 3;
        p[14..16].copy_from_slice(&(1u16 << bit).to_be_bytes());
        let RtcpPacket::Nack(nack) = one(&p) else {
            panic!()
        };
        assert_eq!(
            nack.lost_sequence_numbers().collect::<Vec<_>>(),
            vec![100, 101 + bit]
        );
    }
    // A partial FCI entry: padding count 2 leaves 2 FCI bytes.
    let mut pad = NACK[..16].to_vec();
    pad[0] |= 0x20;
    pad[3] = 3;
    pad[15] = 2; // padding count 2 leaves a 2-byte FCI
    assert_eq!(RtcpPacket::parse(&pad), Err(RtcpError::Truncated));
}

#[test]
fn rfc5104_4_3_1_fir() {
    let fir = [
        0x84, 206, 0x00, 0x06, // FMT=4 PT=206 length=6
        0, 0, 0, 0x0a, 0, 0, 0, 0, // sender, media SSRC unused (0)
        0xaa, 0xaa, 0xaa, 0xaa, 7, 0, 0, 0, // entry 1
        0xbb, 0xbb, 0xbb, 0xbb, 255, 0, 0, 0, // entry 2
    ];
    let RtcpPacket::Fir(view) = one(&fir) else {
        panic!()
    };
    assert_eq!((view.sender_ssrc, view.media_ssrc), (0x0a, 0));
    assert_eq!(
        view.entries().collect::<Vec<_>>(),
        vec![(0xaaaa_aaaa, 7), (0xbbbb_bbbb, 255)]
    );
    assert_eq!(view.as_bytes(), &fir);
    // Half an entry.
    let mut bad = fir[..24].to_vec();
    bad[3] = 5;
    assert_eq!(RtcpPacket::parse(&bad), Err(RtcpError::Truncated));
}

// ---- draft-holmer-rmcat-transport-wide-cc-extensions-01 ----

const TWCC: [u8; 32] = [
    0x8f, 205, 0x00, 0x07, // FMT=15 PT=205 length=7
    0, 0, 0, 0x0a, 0, 0, 0, 0x0b, // sender, media
    0x00, 0x0a, 0x00, 0x05, // base sequence number 10, packet status count 5
    0xff, 0xff, 0xff, 0x07, // reference time -1 (x 64 ms), fb pkt count 7
    0x20, 0x03, // run length chunk: S=01 (small delta) x 3
    0xe0, 0x00, // status vector chunk, 2-bit: [large delta, not received, ...]
    4, 8, 255, // three small deltas
    0xff, 0x9c, // one large delta: -100
    0, 0, 0, // zero padding
];

#[test]
fn twcc_draft_3_1_header_and_chunks() {
    let RtcpPacket::TransportCc(t) = one(&TWCC) else {
        panic!()
    };
    assert_eq!((t.sender_ssrc, t.media_ssrc), (0x0a, 0x0b));
    assert_eq!(t.base_sequence_number, 10);
    assert_eq!(t.packet_status_count, 5);
    assert_eq!(t.reference_time, -1);
    assert_eq!(t.reference_time_us(), -64_000);
    assert_eq!(t.fb_pkt_count, 7);
    let packets: Vec<_> = t.packets().collect::<Result<_, _>>().unwrap();
    let expect = [
        (10, Some(4)),
        (11, Some(8)),
        (12, Some(255)),
        (13, Some(-100)),
        (14, None),
    ];
    assert_eq!(packets.len(), expect.len());
    for (p, (seq, delta)) in packets.iter().zip(expect) {
        assert_eq!((p.sequence_number, p.delta_ticks), (seq, delta));
    }
}

#[test]
fn twcc_draft_3_1_one_bit_status_vector_and_errors() {
    // 1-bit vector: 14 symbols, received where the bit is 1; base seq wraps past 65535.
    let mut p = TWCC;
    p[12..14].copy_from_slice(&65534u16.to_be_bytes());
    p[14..16].copy_from_slice(&4u16.to_be_bytes());
    p[16..19].copy_from_slice(&[0x12, 0x34, 0x56]);
    // T=1 S=0, symbols from bit 13 down: 1, 0, 0, 0, ...
    p[20..22].copy_from_slice(&[0b1010_0000, 0b0000_0000]);
    p[22] = 9; // the one small delta
    let RtcpPacket::TransportCc(t) = one(&p) else {
        panic!()
    };
    assert_eq!(t.reference_time, 0x12_3456);
    let packets: Vec<_> = t.packets().collect::<Result<_, _>>().unwrap();
    let got: Vec<_> = packets
        .iter()
        .map(|p| (p.sequence_number, p.delta_ticks))
        .collect();
    assert_eq!(
        got,
        vec![(65534, Some(9)), (65535, None), (0, None), (1, None)]
    );

    // Reserved symbol 11 in a run length chunk.
    let mut bad = TWCC;
    bad[20] = 0x60;
    let RtcpPacket::TransportCc(t) = one(&bad) else {
        panic!()
    };
    let results: Vec<_> = t.packets().collect();
    assert_eq!(results, vec![Err(RtcpError::Malformed)]);

    // A status count larger than the chunks describe: 20 packets, one 7-symbol chunk.
    let mut bad = TWCC[..24].to_vec();
    bad[3] = 5;
    bad[15] = 20;
    bad[20..24].copy_from_slice(&[0xe0, 0x00, 0x00, 0x00]);
    let RtcpPacket::TransportCc(t) = one(&bad) else {
        panic!()
    };
    let results: Vec<_> = t.packets().collect();
    assert_eq!(results, vec![Err(RtcpError::Truncated)]);

    // Deltas missing: run of 12 small deltas but only 8 bytes left.
    let mut bad = TWCC;
    bad[15] = 12;
    bad[20..22].copy_from_slice(&[0x20, 0x0c]);
    let RtcpPacket::TransportCc(t) = one(&bad) else {
        panic!()
    };
    let results: Vec<_> = t.packets().collect();
    assert_eq!(results.len(), 11);
    assert!(results[..10].iter().all(Result::is_ok));
    assert_eq!(results[10], Err(RtcpError::Truncated));

    // Header fields cut short.
    let short = [0x8f, 205, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 2, 0, 1, 0, 1];
    assert_eq!(RtcpPacket::parse(&short), Err(RtcpError::TooShort));
}

// ---- draft-alvestrand-rmcat-remb ----

const REMB: [u8; 28] = [
    0x8f, 206, 0x00, 0x06, // FMT=15 PT=206 length=6
    0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, // sender, media SSRC 0
    b'R', b'E', b'M', b'B', // unique identifier
    0x02, 0x0d, 0x86, 0xa0, // Num SSRC=2, BR Exp=3, BR Mantissa=100000
    0, 0, 0, 1, 0, 0, 0, 2, // SSRC feedback
];

#[test]
fn remb_draft_2_2_exponent_mantissa() {
    let RtcpPacket::Remb(remb) = one(&REMB) else {
        panic!()
    };
    assert_eq!(remb.sender_ssrc, 0x1234_5678);
    assert_eq!(remb.bitrate_bps, 100_000 << 3);
    assert_eq!(remb.ssrcs().collect::<Vec<_>>(), vec![1, 2]);
    // Largest exponent with the largest mantissa saturates rather than wrapping.
    let mut big = REMB;
    big[17] = 0xff;
    big[18] = 0xff;
    big[19] = 0xff;
    let RtcpPacket::Remb(remb) = one(&big) else {
        panic!()
    };
    assert_eq!(remb.bitrate_bps, u64::MAX);
    // Num SSRC larger than the list.
    let mut bad = REMB;
    bad[16] = 5;
    assert_eq!(RtcpPacket::parse(&bad), Err(RtcpError::Truncated));
    // Another AFB message is not REMB.
    let mut afb = REMB;
    afb[12..16].copy_from_slice(b"GOOG");
    assert!(matches!(
        one(&afb),
        RtcpPacket::Other {
            packet_type: 206,
            fmt: 15,
            ..
        }
    ));
}

// ---- compound packets ----

const APP: [u8; 12] = [0x83, 204, 0x00, 0x02, 0, 0, 0, 5, b'A', b'B', b'C', b'D'];

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn rfc3550_6_1_compound_mixing_several_types() {
    let bye = [0x81, 203, 0x00, 0x01, 0, 0, 0, 9];
    let compound = concat(&[&SR, &SDES, &PLI, &NACK, &TWCC, &REMB, &APP, &bye]);
    validate_compound(&compound).unwrap();
    let packets: Vec<_> = parse_compound(&compound).collect::<Result<_, _>>().unwrap();
    assert_eq!(packets.len(), 8);
    assert!(matches!(packets[0], RtcpPacket::SenderReport(sr) if sr.as_bytes() == SR));
    assert!(matches!(packets[1], RtcpPacket::Sdes(s) if s.as_bytes() == SDES));
    assert!(matches!(
        packets[2],
        RtcpPacket::Pli {
            sender_ssrc: 0x0a,
            media_ssrc: 0x0b
        }
    ));
    assert!(matches!(packets[3], RtcpPacket::Nack(n) if n.as_bytes() == NACK));
    assert!(matches!(packets[4], RtcpPacket::TransportCc(t) if t.as_bytes() == TWCC));
    assert!(matches!(packets[5], RtcpPacket::Remb(r) if r.as_bytes() == REMB));
    assert!(
        matches!(packets[6], RtcpPacket::Other { packet_type: PT_APP, fmt: 3, data } if data == APP)
    );
    assert!(matches!(packets[7], RtcpPacket::Bye(_)));
    // The raw splitter gives the same slices.
    let raws: Vec<_> = split_compound(&compound).collect::<Result<_, _>>().unwrap();
    assert_eq!(raws.len(), 8);
    assert_eq!(raws[2], &PLI);
    // RFC 5506 reduced-size: a lone feedback packet is a valid compound.
    validate_compound(&PLI).unwrap();
    validate_compound(&NACK).unwrap();
    // An empty buffer is not a compound packet.
    assert_eq!(validate_compound(&[]), Err(RtcpError::TooShort));
    assert_eq!(parse_compound(&[]).count(), 0);
}

#[test]
fn rfc3550_a_2_compound_validity() {
    let good = concat(&[&SR, &SDES]);
    // Wrong version in the second packet.
    let mut bad = good.clone();
    bad[SR.len()] = 0x42;
    assert_eq!(validate_compound(&bad), Err(RtcpError::BadVersion));
    let results: Vec<_> = parse_compound(&bad).collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert_eq!(results[1], Err(RtcpError::BadVersion));
    // Length field overflow.
    let mut bad = good.clone();
    bad[2] = 0xff;
    bad[3] = 0xff;
    assert_eq!(validate_compound(&bad), Err(RtcpError::BadLength));
    assert_eq!(
        parse_compound(&bad).collect::<Vec<_>>(),
        vec![Err(RtcpError::BadLength)]
    );
    // Trailing bytes that cannot hold a header.
    for extra in 1..4 {
        let mut bad = good.clone();
        bad.extend(std::iter::repeat_n(0x80, extra));
        assert_eq!(validate_compound(&bad), Err(RtcpError::TooShort));
    }
    // Errors stop iteration: nothing after the bad packet is yielded.
    let mut bad = concat(&[&PLI, &PLI, &PLI]);
    bad[12] = 0;
    let results: Vec<_> = parse_compound(&bad).collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1], Err(RtcpError::BadVersion));
    // A body error also stops iteration.
    let mut bad_sdes = SDES;
    bad_sdes[9] = 200;
    let bad = concat(&[&PLI, &bad_sdes, &PLI]);
    let results: Vec<_> = parse_compound(&bad).collect();
    assert_eq!(results, vec![Ok(one(&PLI)), Err(RtcpError::Truncated)]);
}

#[test]
fn rfc3550_6_4_1_padding_only_on_last_packet() {
    // RR with 4 bytes of padding (P=1, last byte = 4).
    let padded = [0xa0, 201, 0x00, 0x02, 0, 0, 0, 7, 0, 0, 0, 4];
    let RtcpPacket::ReceiverReport(rr) = one(&padded) else {
        panic!()
    };
    assert_eq!(rr.ssrc, 7);
    assert_eq!(rr.as_bytes(), &padded);
    validate_compound(&concat(&[&SR, &padded])).unwrap();
    // Padding on a packet that is not last.
    let bad = concat(&[&padded, &SR]);
    assert_eq!(validate_compound(&bad), Err(RtcpError::BadPadding));
    assert_eq!(
        parse_compound(&bad).next(),
        Some(Err(RtcpError::BadPadding))
    );
    // Count 0, or more than the body.
    for count in [0u8, 9, 255] {
        let mut bad = padded;
        bad[11] = count;
        assert_eq!(
            validate_compound(&bad),
            Err(RtcpError::BadPadding),
            "count {count}"
        );
        assert_eq!(RtcpPacket::parse(&bad), Err(RtcpError::BadPadding));
    }
    // Padding that eats the SSRC.
    let mut bad = padded;
    bad[11] = 8;
    assert_eq!(RtcpPacket::parse(&bad), Err(RtcpError::TooShort));
}

fn sample_compounds() -> Vec<Vec<u8>> {
    let bye = [
        0x82, 203, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 2, 4, b'b', b'y', b'e', b'!', 0, 0, 0,
    ];
    vec![
        concat(&[&SR, &SDES]),
        concat(&[&PLI, &NACK, &TWCC, &REMB, &APP, &bye]),
        concat(&[
            &SR,
            &SDES,
            &REMB,
            &[0xa0, 201, 0x00, 0x02, 0, 0, 0, 7, 0, 0, 0, 4],
        ]),
    ]
}

/// Offsets at which a packet ends, for a well-formed compound.
fn boundaries(buf: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut out = vec![];
    for raw in split_compound(buf) {
        at += raw.unwrap().len();
        out.push(at);
    }
    out
}

#[test]
fn every_truncation_never_panics_and_validates_only_on_boundaries() {
    for compound in sample_compounds() {
        assert!(touch_all(&compound) > 0);
        let ends = boundaries(&compound);
        for len in 0..=compound.len() {
            let prefix = &compound[..len];
            touch_all(prefix);
            let valid = validate_compound(prefix).is_ok();
            // The padded RR is only valid as the last packet, which every boundary prefix has.
            assert_eq!(valid, ends.contains(&len), "prefix of {len}");
            if valid {
                assert!(parse_compound(prefix).all(|p| p.is_ok()), "prefix of {len}");
            }
        }
    }
}

#[test]
fn random_garbage_and_mutations_never_panic() {
    let mut rng = XorShift::new(0xdecaf);
    let mut buf = [0u8; 160];
    for _ in 0..100_000 {
        let len = rng.below(buf.len() + 1);
        rng.fill(&mut buf[..len]);
        // Make headers look plausible half the time: version 2, a known type, a small length.
        if len >= 4 && rng.next_u64() & 1 == 0 {
            buf[0] = (buf[0] & 0x3f) | 0x80;
            buf[1] = 200 + (rng.below(8) as u8);
            buf[2] = 0;
            buf[3] = rng.below(len / 4 + 1) as u8;
        }
        touch_all(&buf[..len]);
    }
    let samples = sample_compounds();
    for i in 0..100_000 {
        let mut m = samples[i % samples.len()].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(m.len());
            m[at] = rng.next_u64() as u8;
        }
        let cut = rng.below(m.len() + 1);
        touch_all(&m[..cut]);
        touch_all(&m);
    }
}

// ---- writers ----

fn random_block(rng: &mut XorShift) -> ReportBlock {
    ReportBlock {
        ssrc: rng.next_u32(),
        fraction_lost: rng.next_u32() as u8,
        cumulative_lost: (rng.next_u32() as i32) >> 8,
        extended_highest_seq: rng.next_u32(),
        jitter: rng.next_u32(),
        last_sr: rng.next_u32(),
        delay_since_last_sr: rng.next_u32(),
    }
}

/// Every buffer shorter than `needed` is refused with NoRoom.
fn assert_no_room(needed: usize, mut write: impl FnMut(&mut [u8]) -> Result<usize, RtcpError>) {
    let mut buf = vec![0u8; needed];
    for len in 0..needed {
        assert_eq!(
            write(&mut buf[..len]),
            Err(RtcpError::NoRoom),
            "len {len} of {needed}"
        );
    }
    assert_eq!(write(&mut buf), Ok(needed));
}

#[test]
fn write_receiver_report_round_trip() {
    let mut rng = XorShift::new(1);
    let mut buf = [0u8; 1500];
    for n in 0..=31 {
        let blocks: Vec<_> = (0..n).map(|_| random_block(&mut rng)).collect();
        let ssrc = rng.next_u32();
        let len = write_receiver_report(&mut buf, ssrc, &blocks).unwrap();
        assert_eq!(len, 8 + 24 * n);
        let RtcpPacket::ReceiverReport(rr) = one(&buf[..len]) else {
            panic!()
        };
        assert_eq!(rr.ssrc, ssrc);
        assert_eq!(rr.report_blocks().collect::<Vec<_>>(), blocks);
        assert_no_room(len, |b| write_receiver_report(b, ssrc, &blocks));
    }
    let blocks = [ReportBlock::default(); 32];
    assert_eq!(
        write_receiver_report(&mut buf, 1, &blocks),
        Err(RtcpError::TooLarge)
    );
    // Cumulative loss outside 24 bits is clamped, not wrapped.
    let clamp = [
        ReportBlock {
            cumulative_lost: i32::MAX,
            ..ReportBlock::default()
        },
        ReportBlock {
            cumulative_lost: i32::MIN,
            ..ReportBlock::default()
        },
    ];
    let len = write_receiver_report(&mut buf, 1, &clamp).unwrap();
    let RtcpPacket::ReceiverReport(rr) = one(&buf[..len]) else {
        panic!()
    };
    let lost: Vec<_> = rr.report_blocks().map(|b| b.cumulative_lost).collect();
    assert_eq!(lost, vec![0x7f_ffff, -0x80_0000]);
}

#[test]
fn write_sender_report_round_trip() {
    let mut rng = XorShift::new(2);
    let mut buf = [0u8; 1500];
    for n in [0usize, 1, 2, 17, 31] {
        let blocks: Vec<_> = (0..n).map(|_| random_block(&mut rng)).collect();
        let (ssrc, ntp, ts, pc, oc) = (
            rng.next_u32(),
            rng.next_u64(),
            rng.next_u32(),
            rng.next_u32(),
            rng.next_u32(),
        );
        let len = write_sender_report(&mut buf, ssrc, ntp, ts, pc, oc, &blocks).unwrap();
        assert_eq!(len, 28 + 24 * n);
        let RtcpPacket::SenderReport(sr) = one(&buf[..len]) else {
            panic!()
        };
        assert_eq!(
            (
                sr.ssrc,
                sr.ntp_timestamp,
                sr.rtp_timestamp,
                sr.packet_count,
                sr.octet_count
            ),
            (ssrc, ntp, ts, pc, oc)
        );
        assert_eq!(sr.report_blocks().collect::<Vec<_>>(), blocks);
        assert_no_room(len, |b| {
            write_sender_report(b, ssrc, ntp, ts, pc, oc, &blocks)
        });
    }
    // Re-building a forwarded SR without report blocks.
    let RtcpPacket::SenderReport(sr) = one(&SR) else {
        panic!()
    };
    let len = write_sender_report(
        &mut buf,
        sr.ssrc,
        sr.ntp_timestamp,
        sr.rtp_timestamp,
        sr.packet_count,
        sr.octet_count,
        &[],
    )
    .unwrap();
    let mut expect = SR[..28].to_vec();
    expect[0] = 0x80;
    expect[3] = 6;
    assert_eq!(&buf[..len], &expect[..]);
}

#[test]
fn write_sdes_cname_round_trip_every_length() {
    let mut buf = [0u8; 300];
    for n in 0..=255usize {
        let cname: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        let len = write_sdes_cname(&mut buf, 0x5555_0000 + n as u32, &cname).unwrap();
        assert_eq!(len % 4, 0);
        // At least one null octet ends the item list.
        assert!(len > 4 + 4 + 2 + n);
        assert!(len < 4 + 4 + 2 + n + 1 + 4);
        let RtcpPacket::Sdes(sdes) = one(&buf[..len]) else {
            panic!()
        };
        let chunks: Vec<_> = sdes.chunks().collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].ssrc, 0x5555_0000 + n as u32);
        assert_eq!(chunks[0].cname(), Some(&cname[..]));
        assert_eq!(chunks[0].items().count(), 1);
        if n % 37 == 0 {
            assert_no_room(len, |b| write_sdes_cname(b, 1, &cname));
        }
    }
    assert_eq!(
        write_sdes_cname(&mut buf, 1, &[b'x'; 256]),
        Err(RtcpError::TooLarge)
    );
}

#[test]
fn write_bye_round_trip() {
    let mut buf = [0u8; 200];
    for n in 0..=31u32 {
        let ssrcs: Vec<u32> = (0..n).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
        let len = write_bye(&mut buf, &ssrcs).unwrap();
        let RtcpPacket::Bye(bye) = one(&buf[..len]) else {
            panic!()
        };
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), ssrcs);
        assert_eq!(bye.reason, None);
        assert_no_room(len, |b| write_bye(b, &ssrcs));
    }
    assert_eq!(write_bye(&mut buf, &[0; 32]), Err(RtcpError::TooLarge));
}

#[test]
fn write_pli_and_fir_round_trip() {
    let mut rng = XorShift::new(3);
    let mut buf = [0u8; 64];
    for _ in 0..1000 {
        let (s, m, seq) = (rng.next_u32(), rng.next_u32(), rng.next_u32() as u8);
        let len = write_pli(&mut buf, s, m).unwrap();
        assert_eq!(
            one(&buf[..len]),
            RtcpPacket::Pli {
                sender_ssrc: s,
                media_ssrc: m
            }
        );
        let len = write_fir(&mut buf, s, m, seq).unwrap();
        let RtcpPacket::Fir(fir) = one(&buf[..len]) else {
            panic!()
        };
        assert_eq!((fir.sender_ssrc, fir.media_ssrc), (s, 0));
        assert_eq!(fir.entries().collect::<Vec<_>>(), vec![(m, seq)]);
    }
    assert_no_room(12, |b| write_pli(b, 1, 2));
    assert_no_room(20, |b| write_fir(b, 1, 2, 3));
}

#[test]
fn write_nack_round_trip_packs_pid_blp() {
    let mut rng = XorShift::new(4);
    let mut buf = [0u8; 2000];
    for round in 0..2000 {
        let base = rng.next_u32() as u16;
        let count = 1 + rng.below(60);
        let mut lost: Vec<u16> = (0..count)
            .map(|_| base.wrapping_add(rng.below(400) as u16))
            .collect();
        // Sort in wrapped order relative to base, then dedup.
        lost.sort_by_key(|s| s.wrapping_sub(base));
        lost.dedup();
        let mut input = lost.clone();
        if round % 3 == 1 {
            // Any order, with duplicates, must still cover exactly the same set.
            input.reverse();
            input.push(lost[0]);
        }
        let len = write_nack(&mut buf, 0xa, 0xb, &input).unwrap();
        let RtcpPacket::Nack(nack) = one(&buf[..len]) else {
            panic!()
        };
        assert_eq!((nack.sender_ssrc, nack.media_ssrc), (0xa, 0xb));
        let mut got: Vec<u16> = nack.lost_sequence_numbers().collect();
        got.sort_by_key(|s| s.wrapping_sub(base));
        got.dedup();
        assert_eq!(got, lost, "round {round}");
        if round % 3 == 0 {
            // Ascending input yields exactly as many pairs as a greedy 17-wide cover needs.
            let mut pairs = 0;
            let mut pid: Option<u16> = None;
            for &s in &lost {
                if pid.is_none_or(|p| s.wrapping_sub(p) > 16) {
                    pairs += 1;
                    pid = Some(s);
                }
            }
            assert_eq!(nack.pairs().count(), pairs);
            assert_no_room(len, |b| write_nack(b, 0xa, 0xb, &input));
        }
    }
    // 17 consecutive losses fit one pair; 18 need two.
    let lost: Vec<u16> = (65530..=65535).chain(0..=10).collect();
    let len = write_nack(&mut buf, 1, 2, &lost).unwrap();
    assert_eq!(len, 16);
    let RtcpPacket::Nack(nack) = one(&buf[..len]) else {
        panic!()
    };
    assert_eq!(nack.pairs().collect::<Vec<_>>(), vec![(65530, 0xffff)]);
    let lost: Vec<u16> = (0..=17).collect();
    assert_eq!(write_nack(&mut buf, 1, 2, &lost), Ok(20));
    assert_eq!(write_nack(&mut buf, 1, 2, &[]), Err(RtcpError::Empty));
}

#[test]
fn write_remb_round_trip() {
    let mut rng = XorShift::new(5);
    let mut buf = [0u8; 1100];
    let mut rates = vec![
        0u64,
        1,
        0x3_ffff,
        0x4_0000,
        0x4_0001,
        1_000_000,
        2_500_000_000,
        u64::MAX,
    ];
    rates.extend((0..2000).map(|_| rng.next_u64() >> rng.below(64)));
    for (i, &rate) in rates.iter().enumerate() {
        let ssrcs: Vec<u32> = (0..(i % 5) as u32).collect();
        let len = write_remb(&mut buf, 0x77, rate, &ssrcs).unwrap();
        let RtcpPacket::Remb(remb) = one(&buf[..len]) else {
            panic!()
        };
        assert_eq!(remb.sender_ssrc, 0x77);
        assert_eq!(remb.ssrcs().collect::<Vec<_>>(), ssrcs);
        // Rounded down to an 18-bit mantissa: exact below 2^18, within 2^-17 above.
        assert!(remb.bitrate_bps <= rate);
        assert!(
            rate - remb.bitrate_bps <= rate >> 17,
            "{rate} -> {}",
            remb.bitrate_bps
        );
        if rate < 1 << 18 {
            assert_eq!(remb.bitrate_bps, rate);
        }
    }
    let ssrcs: Vec<u32> = (0..255).collect();
    let len = write_remb(&mut buf, 1, 1, &ssrcs).unwrap();
    let RtcpPacket::Remb(remb) = one(&buf[..len]) else {
        panic!()
    };
    assert_eq!(remb.ssrcs().count(), 255);
    assert_no_room(len, |b| write_remb(b, 1, 1, &ssrcs));
    let ssrcs: Vec<u32> = (0..256).collect();
    assert_eq!(write_remb(&mut buf, 1, 1, &ssrcs), Err(RtcpError::TooLarge));
}

#[test]
fn written_compound_validates() {
    let mut buf = [0u8; 1500];
    let mut at = 0;
    at += write_sender_report(&mut buf[at..], 1, 2, 3, 4, 5, &[ReportBlock::default()]).unwrap();
    at += write_sdes_cname(&mut buf[at..], 1, b"sluice").unwrap();
    at += write_nack(&mut buf[at..], 1, 2, &[5, 6, 40]).unwrap();
    at += write_pli(&mut buf[at..], 1, 2).unwrap();
    at += write_fir(&mut buf[at..], 1, 2, 9).unwrap();
    at += write_remb(&mut buf[at..], 1, 300_000, &[2]).unwrap();
    at += write_bye(&mut buf[at..], &[1]).unwrap();
    validate_compound(&buf[..at]).unwrap();
    assert_eq!(parse_compound(&buf[..at]).filter(Result::is_ok).count(), 7);
}

#[test]
fn set_sender_and_media_ssrc_in_place() {
    let mut fwd = NACK;
    set_sender_ssrc(&mut fwd, 0xcafe_f00d);
    set_media_ssrc(&mut fwd, 0x0bad_beef);
    let RtcpPacket::Nack(nack) = one(&fwd) else {
        panic!()
    };
    assert_eq!(
        (nack.sender_ssrc, nack.media_ssrc),
        (0xcafe_f00d, 0x0bad_beef)
    );
    assert_eq!(nack.lost_sequence_numbers().count(), 6);
    let mut fwd = PLI;
    set_sender_ssrc(&mut fwd, 3);
    assert_eq!(
        one(&fwd),
        RtcpPacket::Pli {
            sender_ssrc: 3,
            media_ssrc: 0x0b
        }
    );
}

// ---- NTP ----

#[test]
fn rfc3550_4_ntp_timestamps() {
    assert_eq!(ntp_from_unix(Duration::ZERO), NTP_UNIX_OFFSET_SECS << 32);
    assert_eq!(
        ntp_from_unix(Duration::from_millis(1500)),
        (NTP_UNIX_OFFSET_SECS + 1) << 32 | 0x8000_0000
    );
    assert_eq!(
        ntp_from_system_time(UNIX_EPOCH + Duration::from_millis(250)),
        NTP_UNIX_OFFSET_SECS << 32 | 0x4000_0000
    );
    assert_eq!(ntp_middle32(0x1122_3344_5566_7788), 0x3344_5566);
}

#[test]
fn rfc3550_6_4_1_round_trip_time_example() {
    // The worked example of RFC 3550 6.4.1: SR sent at ntp 0xb44db705:20000000, RR arriving at
    // A = 0xb710:8000 with DLSR 0x0005:4000 gives a delay of 0x0006:2000 (6.125 s).
    let sr_ntp: u64 = 0xb44d_b705_2000_0000;
    let block = ReportBlock {
        last_sr: ntp_middle32(sr_ntp),
        delay_since_last_sr: 0x0005_4000,
        ..ReportBlock::default()
    };
    assert_eq!(block.last_sr, 0xb705_2000);
    let arrival: u64 = 0xb44d_b710_8000_0000;
    assert_eq!(
        round_trip_time(arrival, &block),
        Some(Duration::from_millis(6125))
    );
    // No LSR yet, or a negative result.
    assert_eq!(round_trip_time(arrival, &ReportBlock::default()), None);
    assert_eq!(round_trip_time(sr_ntp, &block), None);
}
