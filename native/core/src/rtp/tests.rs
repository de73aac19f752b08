use std::time::{Duration, Instant};

use super::*;
use crate::rtcp::{ntp_middle32, ReportBlock};

/// Small deterministic generator for garbage and property loops (xorshift64).
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub(crate) fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

/// Touches every accessor and iterator of a view, so fuzz-like tests exercise them all.
fn touch(v: &RtpView<'_>) -> usize {
    let mut n = usize::from(v.marker())
        + usize::from(v.payload_type())
        + usize::from(v.sequence_number())
        + v.timestamp() as usize
        + v.ssrc() as usize
        + v.header_len()
        + v.payload().len()
        + v.padding_len()
        + usize::from(v.extension_profile().unwrap_or(0))
        + v.as_bytes().len()
        + v.extension_data().len();
    n = n.wrapping_add(v.csrcs().map(|c| c as usize).sum::<usize>());
    for (id, data) in v.extensions() {
        n = n.wrapping_add(usize::from(id) + data.len());
    }
    for id in 0..=255u8 {
        n = n.wrapping_add(v.extension(id).map_or(0, <[u8]>::len));
    }
    assert!(v.header_len() + v.payload().len() + v.padding_len() == v.as_bytes().len());
    n
}

// RFC 3550 5.1: V=2 P=0 X=0 CC=0 M=1 PT=96 seq=0x1234 ts=0xdeadbeef ssrc=0x11223344.
const FIXED_ONLY: [u8; 15] = [
    0x80, 0xe0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0x11, 0x22, 0x33, 0x44, 0xaa, 0xbb, 0xcc,
];

#[test]
fn rfc3550_5_1_fixed_header() {
    let v = RtpView::parse(&FIXED_ONLY).unwrap();
    assert!(v.marker());
    assert_eq!(v.payload_type(), 96);
    assert_eq!(v.sequence_number(), 0x1234);
    assert_eq!(v.timestamp(), 0xdead_beef);
    assert_eq!(v.ssrc(), 0x1122_3344);
    assert_eq!(v.csrcs().count(), 0);
    assert_eq!(v.header_len(), 12);
    assert_eq!(v.payload(), &[0xaa, 0xbb, 0xcc]);
    assert_eq!(v.padding_len(), 0);
    assert!(!v.has_padding());
    assert_eq!(v.extension_profile(), None);
    assert_eq!(v.extensions().count(), 0);
    assert_eq!(v.as_bytes(), &FIXED_ONLY);
    // Header only, empty payload.
    let v = RtpView::parse(&FIXED_ONLY[..12]).unwrap();
    assert!(v.payload().is_empty());
}

#[test]
fn rfc3550_5_1_csrc_list() {
    // CC=2, M=0, PT=0.
    let pkt = [
        0x82, 0x00, 0x00, 0x01, 0, 0, 0, 0x10, 0, 0, 0, 0x20, // fixed
        0xca, 0xfe, 0xba, 0xbe, 0x01, 0x02, 0x03, 0x04, // CSRCs
        0x55,
    ];
    let v = RtpView::parse(&pkt).unwrap();
    assert!(!v.marker());
    assert_eq!(v.payload_type(), 0);
    assert_eq!(
        v.csrcs().collect::<Vec<_>>(),
        vec![0xcafe_babe, 0x0102_0304]
    );
    assert_eq!(v.header_len(), 20);
    assert_eq!(v.payload(), &[0x55]);
}

#[test]
fn rfc3550_5_1_padding() {
    // P=1: payload 2 bytes, then 3 padding bytes whose last counts them.
    let pkt = [
        0xa0, 0x60, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0x11, 0x22, 0, 0, 3,
    ];
    let v = RtpView::parse(&pkt).unwrap();
    assert!(v.has_padding());
    assert_eq!(v.padding_len(), 3);
    assert_eq!(v.payload(), &[0x11, 0x22]);
    // Padding may consume the whole payload room.
    let pkt = [0xa0, 0x60, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 3];
    let v = RtpView::parse(&pkt).unwrap();
    assert!(v.payload().is_empty());
    assert_eq!(v.padding_len(), 3);
}

#[test]
fn rfc3550_5_1_padding_invalid() {
    // Count 0.
    let pkt = [0xa0, 0x60, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0x11, 0];
    assert_eq!(RtpView::parse(&pkt).unwrap_err(), RtpError::BadPadding);
    // Count larger than the room after the header.
    let pkt = [0xa0, 0x60, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0x11, 3];
    assert_eq!(RtpView::parse(&pkt).unwrap_err(), RtpError::BadPadding);
    // P set on a header-only packet: the count byte would be inside the header.
    let mut pkt = FIXED_ONLY;
    pkt[0] |= 0x20;
    assert_eq!(
        RtpView::parse(&pkt[..12]).unwrap_err(),
        RtpError::BadPadding
    );
}

#[test]
fn rfc3550_5_3_1_header_extension_other_profile() {
    // X=1, profile 0xabcd (not RFC 8285), one word of opaque data.
    let pkt = [
        0x90, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xab, 0xcd, 0x00, 0x01, 1, 2, 3, 4, 0x99,
    ];
    let v = RtpView::parse(&pkt).unwrap();
    assert_eq!(v.extension_profile(), Some(0xabcd));
    assert_eq!(v.extension_data(), &[1, 2, 3, 4]);
    assert_eq!(v.extensions().count(), 0);
    assert_eq!(v.extension(1), None);
    assert_eq!(v.header_len(), 20);
    assert_eq!(v.payload(), &[0x99]);
    // Zero-length extension is valid.
    let pkt = [
        0x90, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xbe, 0xde, 0x00, 0x00, 0x42,
    ];
    let v = RtpView::parse(&pkt).unwrap();
    assert_eq!(v.extension_profile(), Some(0xbede));
    assert_eq!(v.extensions().count(), 0);
    assert_eq!(v.payload(), &[0x42]);
}

#[test]
fn rfc3550_5_1_csrc_extension_and_padding_together() {
    let pkt = [
        0xb1, 0xe3, 0xff, 0xff, 0, 0, 0x10, 0, 0, 0, 0, 9, // P X CC=1, M, PT=99
        0, 0, 0, 7, // CSRC
        0xbe, 0xde, 0, 1, 0x10, 0xab, 0, 0, // one-byte ext id 1 len 1 (data 0xab) + pad
        0xde, 0xad, // payload
        0, 2, // padding
    ];
    let v = RtpView::parse(&pkt).unwrap();
    assert_eq!(v.payload_type(), 99);
    assert_eq!(v.sequence_number(), 0xffff);
    assert_eq!(v.csrcs().collect::<Vec<_>>(), vec![7]);
    assert_eq!(v.header_len(), 24);
    assert_eq!(v.extension(1), Some(&[0xab][..]));
    assert_eq!(v.payload(), &[0xde, 0xad]);
    assert_eq!(v.padding_len(), 2);
    touch(&v);
}

/// Builds an RTP packet with the given extension profile and extension body.
fn with_extension(profile: u16, body: &[u8], payload: &[u8]) -> Vec<u8> {
    assert_eq!(body.len() % 4, 0);
    let mut p = vec![0x90, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
    p.extend_from_slice(&profile.to_be_bytes());
    p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
    p.extend_from_slice(body);
    p.extend_from_slice(payload);
    p
}

#[test]
fn rfc8285_4_2_one_byte_header_example() {
    // The RFC 8285 4.2 example: length=3; an element with L=0 (1 data byte), one with L=1
    // (2 data bytes), two padding bytes, one with L=3 (4 data bytes).
    let body = [
        0x10, 0xaa, // ID=1 L=0, data
        0x21, 0xbb, 0xbb, // ID=2 L=1, data
        0x00, 0x00, // padding
        0x33, 0xcc, 0xcc, 0xcc, 0xcc, // ID=3 L=3, data
    ];
    let pkt = with_extension(0xbede, &body, &[0x77]);
    let v = RtpView::parse(&pkt).unwrap();
    assert_eq!(v.extension_profile(), Some(ONE_BYTE_PROFILE));
    let elems: Vec<_> = v.extensions().collect();
    assert_eq!(
        elems,
        vec![
            (1, &[0xaa][..]),
            (2, &[0xbb, 0xbb][..]),
            (3, &[0xcc, 0xcc, 0xcc, 0xcc][..]),
        ]
    );
    assert_eq!(v.extension(2), Some(&[0xbb, 0xbb][..]));
    assert_eq!(v.extension(4), None);
    assert_eq!(v.extension(0), None);
    assert_eq!(v.payload(), &[0x77]);
}

#[test]
fn rfc8285_4_2_id_15_stops_processing() {
    let body = [0x10, 0xaa, 0xf3, 0x20, 0xbb, 0, 0, 0];
    let pkt = with_extension(0xbede, &body, &[]);
    let v = RtpView::parse(&pkt).unwrap();
    assert_eq!(v.extensions().collect::<Vec<_>>(), vec![(1, &[0xaa][..])]);
    assert_eq!(v.extension(2), None);
}

#[test]
fn rfc8285_4_2_element_overrun_stops() {
    // ID=1 L=15 needs 16 data bytes but only 3 remain.
    let body = [0x20, 0x01, 0x1f, 0, 0, 0, 0, 0];
    let pkt = with_extension(0xbede, &body[..4], &[]);
    let v = RtpView::parse(&pkt).unwrap();
    assert_eq!(v.extensions().collect::<Vec<_>>(), vec![(2, &[0x01][..])]);
    // ID 0 with a non-zero length is not padding: stop.
    let body = [0x05, 0x10, 0xaa, 0];
    let pkt = with_extension(0xbede, &body, &[]);
    assert_eq!(RtpView::parse(&pkt).unwrap().extensions().count(), 0);
}

#[test]
fn rfc8285_4_3_two_byte_header_example() {
    // The RFC 8285 4.3 example: length=3; ID L=0, ID L=1 + data, one padding byte, ID L=4 + data.
    let body = [
        0x01, 0x00, // ID=1 L=0
        0x02, 0x01, 0xbb, // ID=2 L=1, data
        0x00, // padding
        0x03, 0x04, 0xcc, 0xcc, 0xcc, 0xcc, // ID=3 L=4, data
    ];
    for appbits in [0x0, 0x5, 0xf] {
        let pkt = with_extension(0x1000 | appbits, &body, &[0x77]);
        let v = RtpView::parse(&pkt).unwrap();
        let elems: Vec<_> = v.extensions().collect();
        assert_eq!(
            elems,
            vec![
                (1, &[][..]),
                (2, &[0xbb][..]),
                (3, &[0xcc, 0xcc, 0xcc, 0xcc][..]),
            ]
        );
        assert_eq!(v.extension(1), Some(&[][..]));
        assert_eq!(v.extension(3), Some(&[0xcc; 4][..]));
    }
    // IDs above 14 and lengths above 16 are fine in the two-byte form.
    let mut body = vec![200, 20];
    body.extend_from_slice(&[0x5a; 20]);
    body.extend_from_slice(&[0, 0]);
    let pkt = with_extension(0x1000, &body, &[]);
    let v = RtpView::parse(&pkt).unwrap();
    assert_eq!(v.extension(200), Some(&[0x5a; 20][..]));
    // A length past the end stops iteration.
    let body = [0x01, 0x01, 0xbb, 0x02, 0x09, 0, 0, 0];
    let pkt = with_extension(0x1000, &body, &[]);
    let v = RtpView::parse(&pkt).unwrap();
    assert_eq!(v.extensions().collect::<Vec<_>>(), vec![(1, &[0xbb][..])]);
}

#[test]
fn rfc3550_5_1_invalid_headers() {
    assert_eq!(RtpView::parse(&[]).unwrap_err(), RtpError::TooShort);
    assert_eq!(
        RtpView::parse(&FIXED_ONLY[..11]).unwrap_err(),
        RtpError::TooShort
    );
    for version in [0u8, 1, 3] {
        let mut pkt = FIXED_ONLY;
        pkt[0] = (pkt[0] & 0x3f) | version << 6;
        assert_eq!(RtpView::parse(&pkt).unwrap_err(), RtpError::BadVersion);
    }
    // CC=15 needs 60 more bytes.
    let mut pkt = FIXED_ONLY;
    pkt[0] |= 0x0f;
    assert_eq!(RtpView::parse(&pkt).unwrap_err(), RtpError::BadCsrcCount);
    // X=1 without room for the extension header.
    let mut pkt = FIXED_ONLY;
    pkt[0] |= 0x10;
    assert_eq!(RtpView::parse(&pkt).unwrap_err(), RtpError::BadExtension);
    // Extension length overflow.
    let mut pkt = with_extension(0xbede, &[0x10, 0xaa, 0, 0], &[1, 2, 3]);
    pkt[14] = 0xff;
    pkt[15] = 0xff;
    assert_eq!(RtpView::parse(&pkt).unwrap_err(), RtpError::BadExtension);
}

fn sample_packets() -> Vec<Vec<u8>> {
    let mut full = vec![
        0xb2, 0xe3, 0x01, 0x02, 0, 0, 0x10, 0, 0, 0, 0, 9, 0, 0, 0, 7, 0, 0, 0, 8,
    ];
    full.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x10, 0xab, 0x21, 1, 2, 0x30, 9, 0]);
    full.extend_from_slice(&[1, 2, 3, 4, 5, 0, 0, 3]);
    vec![
        FIXED_ONLY.to_vec(),
        full,
        with_extension(
            0x1000,
            &[1, 0, 2, 1, 0xbb, 0, 3, 4, 0xcc, 0xcc, 0xcc, 0xcc],
            &[9; 40],
        ),
    ]
}

#[test]
fn every_truncation_is_an_error_or_a_shorter_valid_packet() {
    for pkt in sample_packets() {
        let full = RtpView::parse(&pkt).unwrap();
        touch(&full);
        for len in 0..pkt.len() {
            if let Ok(v) = RtpView::parse(&pkt[..len]) {
                touch(&v);
                assert!(v.header_len() <= len);
            }
        }
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = XorShift::new(0x5eed);
    let mut buf = [0u8; 96];
    let mut parsed = 0;
    for _ in 0..200_000 {
        let len = rng.below(buf.len() + 1);
        rng.fill(&mut buf[..len]);
        // Bias half the cases towards version 2 so the deeper paths run.
        if len > 0 && rng.next_u64() & 1 == 0 {
            buf[0] = (buf[0] & 0x3f) | 0x80;
        }
        if let Ok(v) = RtpView::parse(&buf[..len]) {
            parsed += 1;
            touch(&v);
        }
    }
    assert!(parsed > 1000, "too few valid packets generated: {parsed}");
}

#[test]
fn setters_write_through() {
    for pkt in sample_packets() {
        let mut copy = pkt.clone();
        let before = RtpView::parse(&pkt).unwrap();
        set_sequence_number(&mut copy, 0xbeef);
        set_timestamp(&mut copy, 0x0102_0304);
        set_ssrc(&mut copy, 0xfeed_f00d);
        set_payload_type(&mut copy, 111);
        set_marker(&mut copy, !before.marker());
        let after = RtpView::parse(&copy).unwrap();
        assert_eq!(after.sequence_number(), 0xbeef);
        assert_eq!(after.timestamp(), 0x0102_0304);
        assert_eq!(after.ssrc(), 0xfeed_f00d);
        assert_eq!(after.payload_type(), 111);
        assert_eq!(after.marker(), !before.marker());
        // Everything else is unchanged.
        assert_eq!(
            after.csrcs().collect::<Vec<_>>(),
            before.csrcs().collect::<Vec<_>>()
        );
        assert_eq!(after.payload(), before.payload());
        assert_eq!(after.extension_data(), before.extension_data());
        assert_eq!(after.padding_len(), before.padding_len());
        assert_eq!(copy[0], pkt[0]);
        // Marker and payload type are independent bits of one byte.
        set_marker(&mut copy, true);
        set_payload_type(&mut copy, 0);
        assert_eq!(copy[1], 0x80);
        set_marker(&mut copy, false);
        set_payload_type(&mut copy, 127);
        assert_eq!(copy[1], 0x7f);
    }
}

#[cfg(not(debug_assertions))]
#[test]
fn setters_on_short_buffers_do_nothing() {
    let mut short = [0x80u8, 0x60, 0, 0];
    set_ssrc(&mut short, 1);
    set_timestamp(&mut short, 1);
    set_sequence_number(&mut short[..1], 1);
    assert_eq!(short, [0x80, 0x60, 0, 0]);
}

#[test]
fn rfc5761_4_is_rtcp() {
    for pt in 192..=223u8 {
        assert!(is_rtcp(&[0x80, pt]), "pt {pt}");
        assert!(is_rtcp(&[0x81, pt, 0, 1]), "pt {pt}");
    }
    // RTP payload types with and without marker.
    for b1 in [0x00u8, 0x60, 0xe0, 0x6f, 0x7f, 0xff, 0x80 | 63, 0x80 | 96] {
        assert!(!is_rtcp(&[0x80, b1]), "b1 {b1:#x}");
    }
    // Marker set on PT 64..=95 still reads as RTCP (the RFC 5761 rule masks it off).
    assert!(is_rtcp(&[0x80, 0x40]));
    // First byte outside 128..=191: STUN, DTLS, ZRTP/TURN.
    for b0 in [0u8, 1, 20, 63, 64, 127, 192, 255] {
        assert!(!is_rtcp(&[b0, 200]), "b0 {b0}");
    }
    assert!(!is_rtcp(&[]));
    assert!(!is_rtcp(&[0x80]));
}

// ---- ReceiverStats (RFC 3550 A.1, A.3, A.8) ----

const SSRC: u32 = 0x1234_5678;

fn feed(stats: &mut ReceiverStats, t0: Instant, seqs: &[u16]) {
    for (i, &seq) in seqs.iter().enumerate() {
        stats.on_packet(t0 + Duration::from_millis(20 * i as u64), seq, 0);
    }
}

#[test]
fn rfc3550_a_1_no_loss() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(SSRC, 90_000);
    let seqs: Vec<u16> = (1000..1100).collect();
    feed(&mut s, t0, &seqs);
    assert_eq!(s.packets_received(), 100);
    assert_eq!(s.packets_lost(), 0);
    let b = s.report_block(t0 + Duration::from_secs(2));
    assert_eq!(b.ssrc, SSRC);
    assert_eq!(b.fraction_lost, 0);
    assert_eq!(b.cumulative_lost, 0);
    assert_eq!(b.extended_highest_seq, 1099);
}

#[test]
fn rfc3550_a_3_loss_with_gaps_and_fraction_per_interval() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(SSRC, 90_000);
    // 0..10 with 3, 4 and 7 lost: expected 10, received 7.
    feed(&mut s, t0, &[0, 1, 2, 5, 6, 8, 9]);
    assert_eq!(s.packets_lost(), 3);
    let b = s.report_block(t0);
    assert_eq!(b.cumulative_lost, 3);
    assert_eq!(b.fraction_lost, (3 * 256 / 10) as u8);
    assert_eq!(b.extended_highest_seq, 9);
    // Next interval: 10..20 with 2 lost; fraction covers only this interval.
    feed(&mut s, t0, &[10, 11, 12, 13, 15, 16, 17, 19]);
    let b = s.report_block(t0);
    assert_eq!(b.cumulative_lost, 5);
    assert_eq!(b.fraction_lost, (2 * 256 / 10) as u8);
    // An interval without packets reports no fractional loss.
    let b = s.report_block(t0);
    assert_eq!(b.fraction_lost, 0);
    assert_eq!(b.cumulative_lost, 5);
}

#[test]
fn rfc3550_a_1_reordering_is_not_loss() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(SSRC, 90_000);
    feed(&mut s, t0, &[10, 11, 13, 12, 14, 16, 15]);
    assert_eq!(s.packets_lost(), 0);
    let b = s.report_block(t0);
    assert_eq!(b.extended_highest_seq, 16);
    assert_eq!(b.fraction_lost, 0);
    // The very first packet arriving late moves the base back before the first report.
    let mut s = ReceiverStats::new(SSRC, 90_000);
    feed(&mut s, t0, &[101, 100, 102]);
    assert_eq!(s.packets_lost(), 0);
    assert_eq!(s.report_block(t0).cumulative_lost, 0);
}

#[test]
fn rfc3550_a_1_duplicates_make_loss_negative() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(SSRC, 90_000);
    feed(&mut s, t0, &[1, 2, 2, 3, 3]);
    assert_eq!(s.packets_received(), 5);
    assert_eq!(s.packets_lost(), -2);
    assert_eq!(s.report_block(t0).cumulative_lost, -2);
}

#[test]
fn rfc3550_a_1_sequence_rollover_increments_cycles() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(SSRC, 90_000);
    let seqs: Vec<u16> = (65530..=65535).chain(0..=5).collect();
    feed(&mut s, t0, &seqs);
    assert_eq!(s.packets_lost(), 0);
    assert_eq!(s.extended_highest_seq(), (1 << 16) | 5);
    let b = s.report_block(t0);
    assert_eq!(b.extended_highest_seq, 65536 + 5);
    assert_eq!(b.cumulative_lost, 0);
    // Loss across the wrap: 65534 -> 1 skips 65535 and 0.
    let mut s = ReceiverStats::new(SSRC, 90_000);
    feed(&mut s, t0, &[65533, 65534, 1, 2]);
    assert_eq!(s.packets_lost(), 2);
    assert_eq!(s.extended_highest_seq(), 65536 + 2);
    // A packet from before the wrap arriving after it does not add a cycle.
    let mut s = ReceiverStats::new(SSRC, 90_000);
    feed(
        &mut s,
        t0,
        &[65534, 65535, 0, 65533 /* late, before base */, 1],
    );
    assert_eq!(s.extended_highest_seq(), 65536 + 1);
    assert_eq!(s.packets_lost(), 0);
    // Many wraps.
    let mut s = ReceiverStats::new(SSRC, 90_000);
    let mut seq = 0u16;
    for _ in 0..(3 * 65536 + 10) {
        s.on_packet(t0, seq, 0);
        seq = seq.wrapping_add(1);
    }
    assert_eq!(s.extended_highest_seq(), 3 * 65536 + 9);
    assert_eq!(s.packets_lost(), 0);
}

#[test]
fn rfc3550_a_1_large_jump_resyncs_after_two_sequential_packets() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(SSRC, 90_000);
    feed(&mut s, t0, &[100, 101, 102]);
    // A jump of 30000: the first packet is not counted.
    s.on_packet(t0, 30_102, 0);
    assert_eq!(s.packets_received(), 3);
    assert_eq!(s.extended_highest_seq(), 102);
    // The sender really restarted: the next sequential packet resyncs.
    s.on_packet(t0, 30_103, 0);
    assert_eq!(s.packets_received(), 1);
    assert_eq!(s.extended_highest_seq(), 30_103);
    assert_eq!(s.packets_lost(), 0);
    s.on_packet(t0, 30_105, 0);
    assert_eq!(s.packets_lost(), 1);
    // A single stray packet does not resync.
    s.on_packet(t0, 5, 0);
    s.on_packet(t0, 30_106, 0);
    assert_eq!(s.extended_highest_seq(), 30_106);
}

/// RFC 3550 A.8 in floating point, as the RFC states it: J += (|D| - J) / 16.
/// `timestamps` are unwrapped (they may run past 2^32).
fn reference_jitter(arrivals_ms: &[u64], timestamps: &[u64], clock_rate: u32) -> f64 {
    let mut j = 0.0f64;
    let mut prev: Option<f64> = None;
    for (&a, &ts) in arrivals_ms.iter().zip(timestamps) {
        let arrival = a as f64 * f64::from(clock_rate) / 1000.0;
        let transit = arrival - ts as f64;
        if let Some(p) = prev {
            j += ((transit - p).abs() - j) / 16.0;
        }
        prev = Some(transit);
    }
    j
}

#[test]
fn rfc3550_a_8_jitter_known_arrival_pattern() {
    let t0 = Instant::now();
    // Constant transit: zero jitter.
    let mut s = ReceiverStats::new(SSRC, 90_000);
    for i in 0..50u32 {
        s.on_packet(
            t0 + Duration::from_millis(20 * u64::from(i)),
            i as u16,
            1000 + 1800 * i,
        );
    }
    assert_eq!(s.jitter(), 0);

    // Sent every 20 ms (1800 ticks at 90 kHz), arriving alternately on time and 10 ms late:
    // |D| = 900 ticks for every packet after the first, so J tends to 900.
    let n = 200;
    let arrivals: Vec<u64> = (0..n)
        .map(|i| 20 * i + if i % 2 == 1 { 10 } else { 0 })
        .collect();
    let timestamps: Vec<u64> = (0..n).map(|i| 0xffff_0000 + 1800 * i).collect();
    let mut s = ReceiverStats::new(SSRC, 90_000);
    for i in 0..n as usize {
        let at = t0 + Duration::from_millis(arrivals[i]);
        s.on_packet(at, i as u16, timestamps[i] as u32);
        let expect = reference_jitter(&arrivals[..=i], &timestamps[..=i], 90_000);
        let got = f64::from(s.jitter());
        // The integer form truncates and lags the real-valued one by up to about one tick.
        assert!(
            (got - expect).abs() <= 1.5,
            "packet {i}: got {got}, expected {expect}"
        );
    }
    assert!((895..=900).contains(&s.jitter()), "{}", s.jitter());
    // After the first packet pair, J = 900/16.
    let mut s = ReceiverStats::new(SSRC, 90_000);
    s.on_packet(t0, 0, 0);
    s.on_packet(t0 + Duration::from_millis(30), 1, 1800);
    assert_eq!(s.jitter(), 900 / 16);
    assert_eq!(s.report_block(t0).jitter, 900 / 16);

    // Audio at 48 kHz with 5 ms early/late swings; timestamps wrap through 2^32.
    let arrivals: Vec<u64> = (0..100)
        .map(|i| 20 * i + [0, 5, 0, 3][i as usize % 4])
        .collect();
    let timestamps: Vec<u64> = (0..100)
        .map(|i| u64::from(u32::MAX) - 2000 + 960 * i)
        .collect();
    let mut s = ReceiverStats::new(SSRC, 48_000);
    for (i, (&a, &ts)) in arrivals.iter().zip(&timestamps).enumerate() {
        s.on_packet(t0 + Duration::from_millis(a), i as u16, ts as u32);
    }
    let expect = reference_jitter(&arrivals, &timestamps, 48_000);
    assert!(
        (f64::from(s.jitter()) - expect).abs() <= 1.5,
        "{} vs {expect}",
        s.jitter()
    );
}

#[test]
fn rfc3550_6_4_1_lsr_and_dlsr_after_sender_report() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(SSRC, 90_000);
    s.on_packet(t0, 1, 0);
    // Before any SR both are zero.
    let b = s.report_block(t0);
    assert_eq!((b.last_sr, b.delay_since_last_sr), (0, 0));

    let ntp: u64 = 0xe1a2_b3c4_d5e6_f708;
    s.on_sender_report(t0 + Duration::from_millis(500), ntp);
    let b = s.report_block(t0 + Duration::from_millis(2000));
    assert_eq!(b.last_sr, 0xb3c4_d5e6);
    assert_eq!(b.last_sr, ntp_middle32(ntp));
    // 1.5 s in 1/65536 s units.
    assert_eq!(b.delay_since_last_sr, 98_304);
    // DLSR of 1/65536 s resolution: 250 ms -> 16384.
    let b = s.report_block(t0 + Duration::from_millis(750));
    assert_eq!(b.delay_since_last_sr, 16_384);
    // A newer SR replaces the older one.
    s.on_sender_report(t0 + Duration::from_secs(5), 0x0000_1111_2222_0000);
    let b = s.report_block(t0 + Duration::from_secs(5));
    assert_eq!((b.last_sr, b.delay_since_last_sr), (0x1111_2222, 0));
}

#[test]
fn receiver_stats_before_any_packet() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(SSRC, 0);
    assert_eq!(s.packets_received(), 0);
    assert_eq!(s.packets_lost(), 0);
    assert_eq!(s.jitter(), 0);
    let b = s.report_block(t0);
    assert_eq!(
        b,
        ReportBlock {
            ssrc: SSRC,
            ..ReportBlock::default()
        }
    );
    // Clock rate 0 disables jitter without failing.
    s.on_packet(t0, 1, 5);
    s.on_packet(t0 + Duration::from_millis(7), 2, 99);
    assert_eq!(s.jitter(), 0);
    assert_eq!(s.packets_received(), 2);
}

#[test]
fn receiver_stats_random_input_never_panics() {
    let mut rng = XorShift::new(77);
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(SSRC, 90_000);
    let mut t = t0;
    for i in 0..100_000u32 {
        // Occasionally step time backwards: the fake clock must not cause a panic.
        t = if rng.below(50) == 0 {
            t0
        } else {
            t + Duration::from_micros(rng.below(50_000) as u64)
        };
        s.on_packet(t, rng.next_u32() as u16, rng.next_u32());
        if i % 97 == 0 {
            s.on_sender_report(t, rng.next_u64());
            let b = s.report_block(t);
            assert!((-0x80_0000..=0x7f_ffff).contains(&b.cumulative_lost));
        }
    }
}
