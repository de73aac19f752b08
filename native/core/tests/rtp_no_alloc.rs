//! Proves the RTP/RTCP hot path allocates nothing: parse, accessors, extension lookup, egress
//! rewrite, compound RTCP walk, and the RTCP writers, counted by a global allocator.

use std::time::{Duration, Instant};

use sluice_core::rtcp::{
    parse_compound, set_sender_ssrc, write_nack, write_pli, write_receiver_report, write_remb,
    write_sdes_cname, write_sender_report, ReportBlock, RtcpPacket,
};
use sluice_core::rtp::{
    set_marker, set_payload_type, set_sequence_number, set_ssrc, set_timestamp, ReceiverStats,
    RtpView,
};
use sluice_testutil::counting_alloc::{counted_here, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    counted_here(f).1
}

#[test]
fn hot_path_allocates_nothing() {
    // The counter itself works.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![0u8; 16]))) >= 1);

    // Inputs are built before counting starts.
    let mut pkt = vec![
        0x91, 0xe0, 0x12, 0x34, 0, 1, 0xe2, 0x40, 0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 1,
    ];
    pkt.extend_from_slice(&[0xbe, 0xde, 0x00, 0x02, 0x10, 0x85, 0x31, 1, 2, 0x20, 1, 2]);
    pkt.resize(1200, 0x5a);
    let mut egress = vec![0u8; 1500];
    let mut rtcp = vec![0u8; 1500];
    let blocks = [ReportBlock::default(); 3];
    let lost = [1u16, 2, 3, 40, 41, 500];
    let t0 = Instant::now();
    let mut stats = ReceiverStats::new(0xcafe_babe, 90_000);

    let n = allocations_during(|| {
        let mut sum = 0usize;
        for i in 0..1000u16 {
            let v = RtpView::parse(&pkt).expect("valid packet");
            sum += v.ssrc() as usize + usize::from(v.sequence_number()) + v.timestamp() as usize;
            sum += v.payload().len() + v.csrcs().count();
            sum += v
                .extensions()
                .map(|(id, d)| usize::from(id) + d.len())
                .sum::<usize>();
            sum += v.extension(3).map_or(0, <[u8]>::len);

            let out = &mut egress[..pkt.len()];
            out.copy_from_slice(v.as_bytes());
            set_ssrc(out, 0x1111_2222);
            set_sequence_number(out, i);
            set_timestamp(out, u32::from(i) * 3000);
            set_payload_type(out, 100);
            set_marker(out, i % 2 == 0);

            stats.on_packet(
                t0 + Duration::from_millis(u64::from(i) * 20),
                i,
                u32::from(i) * 1800,
            );
        }

        let mut len = write_sender_report(&mut rtcp, 1, 2, 3, 4, 5, &blocks).expect("room");
        len += write_sdes_cname(&mut rtcp[len..], 1, b"cname").expect("room");
        len += write_receiver_report(&mut rtcp[len..], 1, &[stats.report_block(t0)]).expect("room");
        len += write_nack(&mut rtcp[len..], 1, 2, &lost).expect("room");
        let pli_at = len;
        len += write_pli(&mut rtcp[len..], 1, 2).expect("room");
        len += write_remb(&mut rtcp[len..], 1, 1_000_000, &[2, 3]).expect("room");
        set_sender_ssrc(&mut rtcp[pli_at..], 9);
        for p in parse_compound(&rtcp[..len]) {
            match p.expect("valid compound") {
                RtcpPacket::SenderReport(sr) => sum += sr.report_blocks().count(),
                RtcpPacket::Sdes(s) => sum += s.chunks().filter_map(|c| c.cname()).count(),
                RtcpPacket::Nack(n) => sum += n.lost_sequence_numbers().count(),
                RtcpPacket::Remb(r) => sum += r.ssrcs().count(),
                _ => sum += 1,
            }
        }
        std::hint::black_box(sum);
    });
    assert_eq!(n, 0, "hot path allocated {n} times");
}
