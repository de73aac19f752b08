//! A simulcast VP8 sender for shard tests: a Source of three layers with RTX (SIM and FID groups), VP8
//! packets with PictureIDs and keyframes, and the commands that set payload types and allocations.

use std::time::{Duration, Instant};

use sluice_core::domain::{
    Codec, GroupSemantics, MediaKind, PayloadType, Source, SsrcGroup, VideoTarget,
};
use sluice_core::seam::Command;

pub const VP8: u8 = 100;
pub const RTX: u8 = 96;
pub const LAYERS: [u32; 3] = [0x11, 0x12, 0x13];
pub const RTXS: [u32; 3] = [0x21, 0x22, 0x23];

pub fn simulcast() -> Source {
    let group = |semantics, ssrcs: &[u32]| SsrcGroup {
        semantics,
        ssrcs: ssrcs.to_vec(),
    };
    let mut groups = vec![group(GroupSemantics::Sim, &LAYERS)];
    for i in 0..3 {
        groups.push(group(GroupSemantics::Fid, &[LAYERS[i], RTXS[i]]));
    }
    Source {
        kind: MediaKind::Video,
        ssrcs: LAYERS.iter().chain(RTXS.iter()).copied().collect(),
        groups,
        name: "peer0-v0".into(),
    }
}

/// A video Source of one SSRC and its RTX (a FID group), named `name`.
pub fn with_rtx(name: &str, primary: u32, rtx: u32) -> Source {
    Source {
        kind: MediaKind::Video,
        ssrcs: vec![primary, rtx],
        groups: vec![SsrcGroup {
            semantics: GroupSemantics::Fid,
            ssrcs: vec![primary, rtx],
        }],
        name: name.into(),
    }
}

/// A VP8 packet: descriptor with a 15-bit PictureID, TL0PICIDX and TID 0; on a frame's first packet the
/// payload header (P=0 on a keyframe); then `fill` bytes that differ per packet.
pub fn vp8(pid: u16, first: bool, key: bool, fill: usize, salt: u16) -> Vec<u8> {
    let mut p = vec![
        if first { 0x90 } else { 0x80 },
        0xE0,
        0x80 | (pid >> 8) as u8,
        pid as u8,
        pid as u8,
        0x00,
    ];
    if first {
        p.extend_from_slice(&[if key { 0x10 } else { 0x11 }, 0, 0]);
        if key {
            p.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00]);
        }
    }
    p.extend((0..fill).map(|i| (i as u16 ^ salt) as u8));
    p
}

/// Each layer's sequence numbers, PictureIDs and timestamps; each frame two packets.
pub struct Sender {
    pub seq: [u16; 3],
    pub pid: [u16; 3],
    pub ts: [u32; 3],
    pub fill: usize,
}

impl Sender {
    pub fn new() -> Self {
        Sender {
            seq: [1000, 30_000, 65_500],
            pid: [100, 2000, 32_760],
            ts: [0, 1_000_000, 4_000_000_000],
            fill: 100,
        }
    }

    pub fn frame(&mut self, conf: &mut super::Conference, layer: usize, key: bool) {
        self.pid[layer] = (self.pid[layer] + 1) & 0x7fff;
        self.ts[layer] = self.ts[layer].wrapping_add(3000);
        for first in [true, false] {
            let payload = vp8(self.pid[layer], first, key, self.fill, self.seq[layer]);
            conf.peers[0].send_rtp_payload(
                LAYERS[layer],
                self.seq[layer],
                self.ts[layer],
                VP8,
                &payload,
            );
            self.seq[layer] = self.seq[layer].wrapping_add(1);
        }
        conf.peers[0].flush();
    }

    pub fn all(&mut self, conf: &mut super::Conference, key: bool) {
        for l in 0..3 {
            self.frame(conf, l, key);
        }
    }
}

pub fn payload_types(conf: &mut super::Conference, transport: u64, rtx: bool) {
    let mut types = vec![PayloadType {
        pt: VP8,
        codec: Codec::Vp8,
    }];
    if rtx {
        types.push(PayloadType {
            pt: RTX,
            codec: Codec::Rtx { apt: VP8 },
        });
    }
    conf.shard.handle_command(
        Instant::now(),
        Command::SetPayloadTypes { transport, types },
    );
}

pub fn settle(conf: &mut super::Conference) {
    conf.run_until(Duration::from_millis(150), |_| false);
}

pub fn allocate(conf: &mut super::Conference, receiver: usize, layer: Option<u8>) {
    conf.shard.handle_command(
        Instant::now(),
        Command::SetAllocation {
            transport: 10 + receiver as u64,
            targets: vec![(
                "peer0-v0".into(),
                layer.map(|spatial| VideoTarget {
                    spatial,
                    temporal: 255,
                }),
            )],
        },
    );
}
