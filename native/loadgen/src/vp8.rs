//! The emulated VP8 encoder of one simulcast layer and the RTP payload format it is sent in
//! (RFC 7741), so that a selective forwarder can parse what the load generator sends: pick
//! layers, switch at keyframes, rewrite PictureID and TL0PICIDX, learn each layer's resolution.
//!
//! # What a frame looks like on the wire
//! Every packet's payload starts with a 6-byte payload descriptor (RFC 7741 4.2):
//!
//! ```text
//!       0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+
//!      |X|R|N|S|R| PID |  X=1; N=1 on TID 2 frames (nothing refers to them); S=1 on a
//!      +-+-+-+-+-+-+-+-+  frame's first packet; PID=0 (one partition)
//!      |I|L|T|K| RSV   |  I=1 L=1 T=1 K=0
//!      +-+-+-+-+-+-+-+-+
//!      |M| PictureID   |  M=1: a 15-bit PictureID, +1 a frame, wrapping at 2^15
//!      +-+-+-+-+-+-+-+-+
//!      |   PictureID   |
//!      +-+-+-+-+-+-+-+-+
//!      |   TL0PICIDX   |  +1 on each TID 0 frame (wrapping at 2^8)
//!      +-+-+-+-+-+-+-+-+
//!      |TID|Y| KEYIDX  |  TID of the 3-layer pattern; Y=1 on the first TID 1 and TID 2 frames
//!      +-+-+-+-+-+-+-+-+  after a keyframe (they refer to the keyframe only); KEYIDX unused (K=0)
//! ```
//!
//! A frame's first packet then carries the VP8 payload header (RFC 7741 4.3, RFC 6386 9.1): the
//! 3-byte frame tag (P=0 on keyframes, 1 otherwise; version 0; show_frame 1; the first partition's
//! size) and, on keyframes, the start code `9d 01 2a` and the 14-bit width and height of the layer
//! (scale 0), little-endian. The rest of the frame is the load generator's own bytes (see
//! [`crate::payload`]), which no forwarder reads.
//!
//! # Temporal layers
//! The usual 3-layer pattern: TID 0, 2, 1, 2, repeating from each keyframe (a TID 0 frame). The
//! frame sizes follow libwebrtc's split of a layer's bitrate over 3 temporal layers, 40 / 20 / 40 %
//! (`kLayerRateAllocation`): at a quarter of the frames each, a TID 0 frame is 1.6 times the mean
//! frame and a TID 1 or TID 2 frame 0.8 times.
//!
//! # Keyframes
//! A keyframe is sent first, then every `keyframe_interval_frames` frames (libwebrtc's VP8
//! `keyFrameInterval`: 3000 frames, 100 s at 30 fps; browsers otherwise rely on PLI/FIR), and on a
//! PLI or a new FIR for the layer's SSRC, at most one request per [`KEYFRAME_REQUEST_MIN_INTERVAL_NS`]
//! (libwebrtc's `kMinKeyframeSendIntervalMs`, 300 ms; here per layer). A repeated FIR sequence
//! number is a retransmission (RFC 5104 4.3.1.2) and asks for nothing. A keyframe is
//! [`KEYFRAME_FACTOR`] times the mean frame: 5 times a TID 0 frame, 10 times a TID 1 or 2 frame,
//! below libwebrtc's cap on a VP8 keyframe (`rc_max_intra_target_pct`: 900 % of a frame's budget at
//! 30 fps). Like an encoder's rate control, the frames after a keyframe pay its excess back, each
//! giving up at most half its size, so the layer's bitrate stays on target on average (until
//! keyframes come more often than about every half a second at 30 fps; the debt is capped, so a
//! keyframe storm overshoots rather than starving the layer).

/// Bytes of the payload descriptor on every packet.
pub const DESCRIPTOR_LEN: usize = 6;
/// Bytes of the payload header on a keyframe's first packet: frame tag, start code, width, height.
pub const KEY_HEADER_LEN: usize = 10;
/// Bytes of the payload header on an inter frame's first packet: the frame tag.
pub const INTER_HEADER_LEN: usize = 3;
/// The longest codec prefix a packet carries.
pub const MAX_PREFIX_LEN: usize = DESCRIPTOR_LEN + KEY_HEADER_LEN;
/// TID of each frame from a keyframe on.
pub const TEMPORAL_PATTERN: [u8; 4] = [0, 2, 1, 2];
/// A frame's size per TID in fifths of the mean frame (libwebrtc's 40 / 20 / 40 % over TID 0, 1, 2).
const TID_FIFTHS: [u64; 3] = [8, 4, 4];
/// A keyframe's size in mean frames.
pub const KEYFRAME_FACTOR: u64 = 8;
/// Keyframe requests (PLI, FIR) to one layer are served at most this often.
pub const KEYFRAME_REQUEST_MIN_INTERVAL_NS: u64 = 300_000_000;
/// libwebrtc's default VP8 keyframe interval, in frames.
pub const DEFAULT_KEYFRAME_INTERVAL_FRAMES: u32 = 3000;
/// The start code of a keyframe (RFC 6386 9.1).
pub const START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

const PICTURE_ID_MASK: u16 = 0x7fff;
/// Largest first-partition size the frame tag holds (19 bits).
const MAX_PARTITION_SIZE: usize = (1 << 19) - 1;

/// One simulcast layer's bitrate and resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    pub bitrate_bps: u64,
    pub width: u16,
    pub height: u16,
}

/// Layer `index` (0 = lowest) of `layers` simulcast layers whose top layer sends `top_bps`.
///
/// As Jitsi sends VP8 simulcast (lib-jitsi-meet: 200 / 500 / 1500 kbit/s, each layer scaled down
/// by 4, 2, 1): the top layer 1280x720 at `top_bps`, the one below 640x360 at a third of it, the
/// one below that 320x180 at 2/15 of it (1 : 2.5 : 7.5); any further layer halves the resolution
/// and quarters the bitrate again. A single layer is 1280x720 at `top_bps`.
pub fn simulcast_layer(top_bps: u64, layers: usize, index: usize) -> LayerSpec {
    let below_top = layers.saturating_sub(1).saturating_sub(index).min(7) as u32;
    let bitrate_bps = match below_top {
        0 => top_bps,
        1 => top_bps / 3,
        d => (top_bps * 2 / 15) >> (2 * (d - 2)),
    };
    LayerSpec {
        bitrate_bps,
        width: (1280u16 >> below_top).max(2),
        height: (720u16 >> below_top).max(2),
    }
}

/// One frame as the encoder made it: what its packets' codec prefixes say, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub keyframe: bool,
    pub tid: u8,
    /// Y: the frame refers to the base layer only.
    pub layer_sync: bool,
    pub picture_id: u16,
    pub tl0picidx: u8,
    /// The frame's VP8 bytes (payload header included, descriptors not): what it costs in bitrate.
    pub bytes: usize,
    pub width: u16,
    pub height: u16,
}

impl Frame {
    /// Bytes of the payload header on the frame's first packet.
    pub fn header_len(&self) -> usize {
        if self.keyframe {
            KEY_HEADER_LEN
        } else {
            INTER_HEADER_LEN
        }
    }

    /// Writes the codec prefix of one packet of this frame into `out`: the payload descriptor and,
    /// on the `first` packet, the payload header. Returns its length. `out` must hold
    /// [`MAX_PREFIX_LEN`] bytes.
    pub fn write_prefix(&self, out: &mut [u8], first: bool) -> usize {
        // RFC 7741 4.2: X, N, S, PID=0; then I, L, T; PictureID with M=1; TL0PICIDX; TID/Y.
        let non_reference = self.tid == 2;
        out[0] = 0x80 | (u8::from(non_reference) << 5) | (u8::from(first) << 4);
        out[1] = 0xe0;
        let [hi, lo] = (self.picture_id & PICTURE_ID_MASK).to_be_bytes();
        out[2] = 0x80 | hi;
        out[3] = lo;
        out[4] = self.tl0picidx;
        out[5] = (self.tid << 6) | (u8::from(self.layer_sync) << 5);
        if !first {
            return DESCRIPTOR_LEN;
        }
        // RFC 6386 9.1 frame tag, 24 bits little-endian: P (0 = keyframe), version 0, show_frame 1,
        // and the first partition's size: here the whole frame, as one partition.
        let partition = self
            .bytes
            .saturating_sub(self.header_len())
            .min(MAX_PARTITION_SIZE) as u32;
        let tag = u32::from(!self.keyframe) | (1 << 4) | (partition << 5);
        out[6..9].copy_from_slice(&tag.to_le_bytes()[..3]);
        if !self.keyframe {
            return DESCRIPTOR_LEN + INTER_HEADER_LEN;
        }
        out[9..12].copy_from_slice(&START_CODE);
        // 14-bit sizes with a 2-bit scale (0) above them.
        out[12..14].copy_from_slice(&(self.width & 0x3fff).to_le_bytes());
        out[14..16].copy_from_slice(&(self.height & 0x3fff).to_le_bytes());
        MAX_PREFIX_LEN
    }
}

/// The encoder state of one simulcast layer (one SSRC): its own PictureID and TL0PICIDX space.
#[derive(Clone, Debug)]
pub struct Encoder {
    spec: LayerSpec,
    /// The mean frame's bytes: the layer's bitrate at the frame rate.
    mean_frame: u64,
    picture_id: u16,
    tl0picidx: u8,
    /// Frames since the last keyframe; None before the first one.
    since_key: Option<u32>,
    key_requested: bool,
    last_request_ns: Option<u64>,
    last_fir_seq: Option<u8>,
    /// Bytes the last keyframes sent above their frames' share, still to be paid back.
    debt: u64,
    pub keyframes: u64,
}

impl Encoder {
    /// An encoder for `spec` at `fps`; its PictureID and TL0PICIDX start at values derived from
    /// `ssrc`, as an encoder starts at random ones.
    pub fn new(ssrc: u32, spec: LayerSpec, fps: u32) -> Self {
        let mix = ssrc.wrapping_mul(0x9e37_79b9);
        let mut e = Encoder {
            spec,
            mean_frame: 0,
            picture_id: (mix >> 17) as u16 & PICTURE_ID_MASK,
            tl0picidx: (mix >> 5) as u8,
            since_key: None,
            key_requested: false,
            last_request_ns: None,
            last_fir_seq: None,
            debt: 0,
            keyframes: 0,
        };
        e.configure(spec, fps);
        e
    }

    /// New bitrate or resolution; the PictureID and TL0PICIDX spaces go on.
    pub fn configure(&mut self, spec: LayerSpec, fps: u32) {
        self.spec = spec;
        self.mean_frame = spec.bitrate_bps / 8 / u64::from(fps.max(1));
    }

    pub fn spec(&self) -> LayerSpec {
        self.spec
    }

    /// The next frame is a keyframe (as when the encoder starts).
    pub fn restart(&mut self) {
        self.since_key = None;
    }

    /// A PLI for this layer: true when it will be served by the next frame, false when a request
    /// was served less than [`KEYFRAME_REQUEST_MIN_INTERVAL_NS`] ago.
    pub fn request_keyframe(&mut self, now_ns: u64) -> bool {
        if self
            .last_request_ns
            .is_some_and(|t| now_ns.saturating_sub(t) < KEYFRAME_REQUEST_MIN_INTERVAL_NS)
        {
            return false;
        }
        self.last_request_ns = Some(now_ns);
        self.key_requested = true;
        true
    }

    /// A FIR entry for this layer with sequence number `seq`: a new request unless `seq` repeats
    /// the last one (a retransmission, RFC 5104 4.3.1.2); then as [`Encoder::request_keyframe`].
    pub fn on_fir(&mut self, seq: u8, now_ns: u64) -> bool {
        if self.last_fir_seq == Some(seq) {
            return false;
        }
        self.last_fir_seq = Some(seq);
        self.request_keyframe(now_ns)
    }

    /// Encodes the next frame. `interval_frames` is the periodic keyframe interval (0: none).
    pub fn next_frame(&mut self, interval_frames: u32) -> Frame {
        let keyframe = match self.since_key {
            None => true,
            Some(n) => self.key_requested || (interval_frames > 0 && n + 1 >= interval_frames),
        };
        let since = if keyframe {
            0
        } else {
            self.since_key.map_or(0, |n| n.saturating_add(1))
        };
        self.since_key = Some(since);
        let tid = TEMPORAL_PATTERN[since as usize % TEMPORAL_PATTERN.len()];
        self.picture_id = self.picture_id.wrapping_add(1) & PICTURE_ID_MASK;
        if tid == 0 {
            self.tl0picidx = self.tl0picidx.wrapping_add(1);
        }
        let share = self.mean_frame * TID_FIFTHS[usize::from(tid)] / 5;
        let bytes = if keyframe {
            self.key_requested = false;
            self.keyframes += 1;
            let size = self.mean_frame * KEYFRAME_FACTOR;
            let cap = 2 * KEYFRAME_FACTOR * self.mean_frame;
            self.debt = (self.debt + size.saturating_sub(share)).min(cap);
            size
        } else {
            let cut = self.debt.min(share / 2);
            self.debt -= cut;
            share - cut
        };
        Frame {
            keyframe,
            tid,
            // The first TID 2 and TID 1 frames after a keyframe refer to it alone.
            layer_sync: !keyframe && (since == 1 || since == 2),
            picture_id: self.picture_id,
            tl0picidx: self.tl0picidx,
            bytes: bytes as usize,
            width: self.spec.width,
            height: self.spec.height,
        }
    }

    /// Overrides the PictureID the next frame follows (tests: the wrap).
    #[cfg(test)]
    fn set_picture_id(&mut self, id: u16) {
        self.picture_id = id & PICTURE_ID_MASK;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::codec::vp8::Vp8Descriptor;
    use sluice_core::codec::PictureIdWidth;

    const FPS: u32 = 30;

    fn encoder(bps: u64) -> Encoder {
        Encoder::new(
            0x1234_5678,
            LayerSpec {
                bitrate_bps: bps,
                width: 640,
                height: 360,
            },
            FPS,
        )
    }

    /// The packet payload of `frame`'s packet: its prefix and a few bytes of frame data.
    fn packet(frame: &Frame, first: bool) -> Vec<u8> {
        let mut out = vec![0xee; MAX_PREFIX_LEN + 8];
        let n = frame.write_prefix(&mut out, first);
        out.truncate(n + 8);
        out
    }

    #[test]
    fn simulcast_layers_are_jitsis_resolutions_and_ratios() {
        let top = 1_500_000;
        let specs: Vec<_> = (0..3).map(|i| simulcast_layer(top, 3, i)).collect();
        assert_eq!(
            specs
                .iter()
                .map(|s| (s.width, s.height, s.bitrate_bps))
                .collect::<Vec<_>>(),
            [
                (320, 180, 200_000),
                (640, 360, 500_000),
                (1280, 720, 1_500_000)
            ]
        );
        assert_eq!(simulcast_layer(top, 1, 0), specs[2]);
        assert_eq!(simulcast_layer(top, 2, 0), specs[1]);
        let fourth = simulcast_layer(top, 4, 0);
        assert_eq!(
            (fourth.width, fourth.height, fourth.bitrate_bps),
            (160, 90, 50_000)
        );
        // Out-of-range layers stay sane rather than overflowing a shift.
        assert!(simulcast_layer(top, 64, 0).width >= 2);
    }

    /// RFC 7741 4.2 and 4.3 through the bridge's own parser: every field, on first and later
    /// packets, of keyframes and inter frames.
    #[test]
    fn rfc7741_descriptors_parse_with_the_bridges_parser() {
        let mut e = encoder(500_000);
        for n in 0..12 {
            let f = e.next_frame(0);
            let first = Vp8Descriptor::parse(&packet(&f, true)).expect("first packet parses");
            let later = Vp8Descriptor::parse(&packet(&f, false)).expect("later packet parses");
            for (d, is_first) in [(first, true), (later, false)] {
                assert_eq!(d.picture_id, Some(f.picture_id), "frame {n}");
                assert_eq!(d.picture_id_width, Some(PictureIdWidth::Bits15));
                assert_eq!(d.tl0picidx, Some(f.tl0picidx));
                assert_eq!(d.tid, Some(f.tid));
                assert_eq!(d.layer_sync, f.layer_sync);
                assert_eq!(d.keyidx, None);
                assert_eq!(d.partition_index, 0);
                assert_eq!(d.start_of_partition, is_first);
                assert_eq!(d.non_reference, f.tid == 2);
                assert_eq!(d.header_len, DESCRIPTOR_LEN);
                assert_eq!(d.starts_keyframe(), is_first && f.keyframe, "frame {n}");
            }
            assert!(first.starts_frame() && !later.starts_frame());
            assert_eq!(f.keyframe, n == 0);
        }
    }

    /// RFC 6386 9.1: a keyframe's payload header carries the start code and the layer's size, so a
    /// forwarder learns each layer's resolution; an inter frame's is the 3-byte tag with P=1.
    #[test]
    fn rfc6386_9_1_keyframe_header_carries_start_code_and_resolution() {
        let mut e = Encoder::new(
            7,
            LayerSpec {
                bitrate_bps: 2_000_000,
                width: 1280,
                height: 720,
            },
            FPS,
        );
        let key = e.next_frame(0);
        let p = packet(&key, true);
        let h = &p[DESCRIPTOR_LEN..];
        let tag = u32::from_le_bytes([h[0], h[1], h[2], 0]);
        assert_eq!(tag & 1, 0, "P=0 on a keyframe");
        assert_eq!((tag >> 1) & 7, 0, "version 0");
        assert_eq!((tag >> 4) & 1, 1, "shown");
        assert_eq!((tag >> 5) as usize, key.bytes - KEY_HEADER_LEN);
        assert_eq!(&h[3..6], &START_CODE);
        assert_eq!(u16::from_le_bytes([h[6], h[7]]), 1280);
        assert_eq!(u16::from_le_bytes([h[8], h[9]]), 720);

        let inter = e.next_frame(0);
        let p = packet(&inter, true);
        assert_eq!(p.len(), DESCRIPTOR_LEN + INTER_HEADER_LEN + 8);
        assert_eq!(p[DESCRIPTOR_LEN] & 1, 1, "P=1 on an inter frame");
        assert!(!Vp8Descriptor::parse(&p).expect("parses").starts_keyframe());
    }

    #[test]
    fn temporal_pattern_and_tl0picidx_and_picture_id_continuity() {
        let mut e = encoder(500_000);
        e.set_picture_id(0x7ffd); // the 15-bit wrap comes up within the run
        let frames: Vec<Frame> = (0..40).map(|_| e.next_frame(0)).collect();
        let tids: Vec<u8> = frames.iter().map(|f| f.tid).collect();
        assert_eq!(&tids[..8], &[0, 2, 1, 2, 0, 2, 1, 2]);
        for w in frames.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert_eq!(b.picture_id, (a.picture_id + 1) & 0x7fff);
            let step = u8::from(b.tid == 0);
            assert_eq!(
                b.tl0picidx,
                a.tl0picidx.wrapping_add(step),
                "{a:?} -> {b:?}"
            );
        }
        assert!(frames.iter().any(|f| f.picture_id == 0));
        // Only the first TID 2 and TID 1 frames after the keyframe are sync frames.
        let sync: Vec<usize> = (0..40).filter(|&i| frames[i].layer_sync).collect();
        assert_eq!(sync, [1, 2]);
    }

    #[test]
    fn keyframes_at_start_periodically_and_on_request_rate_limited() {
        let mut e = encoder(500_000);
        let keys = |e: &mut Encoder, n: usize, interval: u32| {
            (0..n).filter(|_| e.next_frame(interval).keyframe).count()
        };
        // First frame, then every 10th.
        assert_eq!(keys(&mut e, 30, 10), 3);
        e.restart();
        assert!(e.next_frame(0).keyframe);
        assert_eq!(keys(&mut e, 100, 0), 0);

        let t0 = 5_000_000_000;
        assert!(e.request_keyframe(t0));
        let f = e.next_frame(0);
        assert!(
            f.keyframe && f.tid == 0,
            "a keyframe restarts the pattern at TID 0"
        );
        assert_eq!(e.next_frame(0).tid, 2);
        // Within 300 ms of the last request served: ignored; after: served.
        assert!(!e.request_keyframe(t0 + 299_000_000));
        assert!(!e.next_frame(0).keyframe);
        assert!(e.request_keyframe(t0 + 300_000_000));
        assert!(e.next_frame(0).keyframe);
        // A FIR's retransmission (same sequence number) asks for nothing; a new one does.
        let t1 = t0 + 1_000_000_000;
        assert!(e.on_fir(4, t1));
        assert!(e.next_frame(0).keyframe);
        assert!(!e.on_fir(4, t1 + 1_000_000_000));
        assert!(e.on_fir(5, t1 + 1_000_000_000));
        assert!(e.next_frame(0).keyframe);
        assert_eq!(e.keyframes, 3 + 1 + 2 + 2);
    }

    /// The bitrate stays on target over time, keyframes included; a keyframe is 5-10 times a delta
    /// frame of the layer.
    #[test]
    fn bitrate_stays_on_target_with_keyframes() {
        for (bps, interval, requests_every) in [
            (200_000u64, 3000, None),
            (500_000, 300, None),
            (1_500_000, 90, Some(45)),
        ] {
            let mut e = encoder(bps);
            let frames = 30 * 60;
            let mut bytes = 0u64;
            let mut key = 0;
            let mut deltas = Vec::new();
            for n in 0..frames {
                if requests_every.is_some_and(|k| n % k == k - 1) {
                    assert!(e.request_keyframe(n as u64 * 33_333_333));
                }
                let f = e.next_frame(interval);
                bytes += f.bytes as u64;
                if f.keyframe {
                    key = f.bytes;
                } else if n % 30 == 29 {
                    deltas.push(f.bytes); // late in the second: the debt is paid
                }
            }
            let rate = bytes as f64 * 8.0 / 60.0;
            let want = bps as f64;
            assert!((rate - want).abs() / want < 0.02, "{bps}: {rate} bit/s");
            let mean = bps / 8 / 30;
            assert_eq!(key as u64, KEYFRAME_FACTOR * mean);
            for d in deltas {
                let ratio = key as f64 / d as f64;
                // 5 to 10, give or take the rounding of sizes to bytes.
                assert!(
                    (4.99..=10.02).contains(&ratio),
                    "{bps}: key {key} / delta {d}"
                );
            }
        }
    }

    #[test]
    fn a_keyframe_storm_overshoots_but_never_starves_the_layer() {
        let mut e = encoder(300_000);
        let mean = 300_000 / 8 / 30;
        let mut keys = 0;
        // A request before every frame at 30 fps: served at most every 300 ms, every 9th frame.
        for n in 0..300u64 {
            e.request_keyframe(n * 33_333_334);
            let f = e.next_frame(0);
            keys += usize::from(f.keyframe);
            assert!(
                f.bytes as u64 >= mean * 4 / 10,
                "frame {n}: {} bytes",
                f.bytes
            );
        }
        assert_eq!(keys, 300usize.div_ceil(9));
        assert!(e.debt <= 2 * KEYFRAME_FACTOR * mean);
    }
}
