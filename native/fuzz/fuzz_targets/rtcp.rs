#![no_main]
//! Parses arbitrary bytes as compound RTCP, touching every view's iterators.

use libfuzzer_sys::fuzz_target;
use sluice_core::rtcp::{parse_compound, split_compound, validate_compound, RtcpPacket};

fuzz_target!(|data: &[u8]| {
    let _ = validate_compound(data);
    for raw in split_compound(data).flatten() {
        let _ = RtcpPacket::parse(raw);
    }
    for packet in parse_compound(data) {
        let Ok(packet) = packet else { break };
        let _ = packet.as_bytes();
        match packet {
            RtcpPacket::SenderReport(sr) => {
                let _ = (
                    sr.ssrc,
                    sr.ntp_timestamp,
                    sr.rtp_timestamp,
                    sr.packet_count,
                    sr.octet_count,
                );
                let _ = sr.report_blocks().count();
            }
            RtcpPacket::ReceiverReport(rr) => {
                let _ = rr.report_blocks().count();
            }
            RtcpPacket::Sdes(sdes) => {
                for chunk in sdes.chunks() {
                    let _ = chunk.items().count();
                    let _ = chunk.cname();
                }
            }
            RtcpPacket::Bye(bye) => {
                let _ = (bye.ssrcs().count(), bye.reason);
            }
            RtcpPacket::Pli {
                sender_ssrc,
                media_ssrc,
            } => {
                let _ = (sender_ssrc, media_ssrc);
            }
            RtcpPacket::Fir(fir) => {
                let _ = fir.entries().count();
            }
            RtcpPacket::Nack(nack) => {
                let _ = nack.pairs().count();
                let _ = nack.lost_sequence_numbers().count();
            }
            RtcpPacket::TransportCc(twcc) => {
                let _ = twcc.reference_time_us();
                for status in twcc.packets() {
                    let _ = status;
                }
            }
            RtcpPacket::Remb(remb) => {
                let _ = (remb.bitrate_bps, remb.ssrcs().count());
            }
            RtcpPacket::Other {
                packet_type,
                fmt,
                data,
            } => {
                let _ = (packet_type, fmt, data.len());
            }
        }
    }
});
