#![no_main]
//! The selective path on arbitrary packets: RTX unwrapping, the codec reading of `packet_meta` (for the
//! codec the first byte picks), a Projection deciding each packet across arbitrary target changes and
//! layers, and the rewrite of each forwarded copy, which must stay a parseable RTP packet carrying the
//! rewritten sequence number and SSRC. Then NACK translation of what was seen, and the RTX cache: each
//! packet kept, a forwarded one found there and rewritten again (`replay`) with the fields it went out
//! with, and wrapped as RTX that parses back to its OSN.
//!
//! Input: a codec selector byte, then records of (length, control, packet bytes); control bit 7 sets a
//! new target (bits 0-1: layer 0-2, 3 = none; bits 4-5: the spatial and temporal cap, 3 = all), bit 6
//! unwraps the packet as RTX, bits 2-3 are its layer.

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice_core::domain::Codec;
use sluice_core::io::MAX_DATAGRAM;
use sluice_core::projection::{Projection, Target, Verdict, ALL};
use sluice_core::router::{apply_rewrite, packet_meta, unwrap_rtx, write_rtx, PacketCache};
use sluice_core::rtp::RtpView;

const PRIMARY: u32 = 0x1111_2222;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let codec = match sel % 5 {
        0 => Codec::Vp8,
        1 => Codec::Vp9,
        2 => Codec::H264,
        3 => Codec::Av1,
        _ => Codec::Other,
    };
    let t0 = Instant::now();
    let mut proj = Projection::new(Some(Target::layer(0)));
    let mut cache = PacketCache::new();
    let mut tick = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let Some((&ctrl, tail)) = tail.split_first() else {
            break;
        };
        let n = usize::from(len).min(tail.len());
        let (pkt, next) = tail.split_at(n);
        rest = next;
        if ctrl & 0x80 != 0 {
            let cap = match (ctrl >> 4) & 3 {
                3 => ALL,
                c => c,
            };
            proj.set_target(match ctrl & 3 {
                3 => None,
                layer => Some(Target {
                    layer,
                    spatial: cap,
                    temporal: cap,
                }),
            });
        }
        let layer = (ctrl >> 2) & 3;
        let Ok(rtp) = RtpView::parse(pkt) else {
            continue;
        };
        let mut unwrapped = [0u8; MAX_DATAGRAM];
        let bytes: &[u8] = if ctrl & 0x40 != 0 {
            match unwrap_rtx(&rtp, PRIMARY ^ 1, 100, &mut unwrapped) {
                Some(n) => &unwrapped[..n],
                None => continue,
            }
        } else {
            pkt
        };
        let Ok(view) = RtpView::parse(bytes) else {
            continue;
        };
        let (meta, fields) = packet_meta(codec, layer, &view);
        tick += 1;
        let now = t0 + Duration::from_millis(tick * 7);
        cache.insert(now, bytes, &meta, &fields);
        if let Verdict::Forward(rw) = proj.on_packet(now, 90_000, &meta) {
            let mut copy = bytes.to_vec();
            apply_rewrite(&mut copy, PRIMARY, &fields, &rw);
            let after = RtpView::parse(&copy).expect("a rewritten copy is still RTP");
            assert_eq!((after.ssrc(), after.sequence_number()), (PRIMARY, rw.seq));
            assert_eq!(after.timestamp(), rw.timestamp);
            assert_eq!(copy.len(), bytes.len());
            assert!(
                !rw.marker || after.marker(),
                "the marker is set where asked"
            );
            // Resent from the cache: the same fields (the marker follows the packet's place in order,
            // which a late packet's first rewrite may not have).
            if let Some((cached, m, f)) = cache.get(now, meta.seq).filter(|(c, ..)| *c == bytes) {
                if let Some(again) = proj.replay(rw.seq, &m) {
                    assert_eq!(
                        (again.seq, again.timestamp, again.picture_id, again.tl0picidx),
                        (rw.seq, rw.timestamp, rw.picture_id, rw.tl0picidx)
                    );
                }
                let mut resend = cached.to_vec();
                apply_rewrite(&mut resend, PRIMARY, &f, &rw);
                let mut rtx = [0u8; MAX_DATAGRAM];
                if let Some(n) = write_rtx(&resend, PRIMARY ^ 2, 96, 7, &mut rtx) {
                    let v = RtpView::parse(&rtx[..n]).expect("RTX is RTP");
                    assert_eq!(v.payload()[..2], rw.seq.to_be_bytes());
                    assert_eq!((v.ssrc(), v.sequence_number()), (PRIMARY ^ 2, 7));
                }
            }
        }
        let _ = proj.keyframe_request(now);
        if let Some((l, orig)) = proj.original(meta.seq) {
            assert!(l <= 3, "{l} {orig}");
            if let Some((_, m, _)) = cache.get(now, orig) {
                let _ = proj.replay(meta.seq, &m);
            }
        }
    }
});
