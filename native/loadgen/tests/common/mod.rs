//! Shared checks for the loadgen integration tests.
#![allow(dead_code)]

use sluice_loadgen::vp8::simulcast_layer;
use sluice_loadgen::{Kind, MediaConfig, Snapshot, StreamStats};

/// Loss allowed on loopback: the bench's own knee criterion (0.1 %). Loopback UDP does not lose
/// packets unless a socket queue overflows (4 MiB buffers here, seconds of traffic at these rates)
/// or the kernel refuses a send; the tolerance only absorbs a machine shared with other jobs
/// stalling a thread, and `send_failed` is asserted separately.
pub const MAX_LOSS: f64 = 0.001;

/// The checks every run must pass, whichever forwarder carried it.
pub fn assert_complete(
    snap: &Snapshot,
    groups: usize,
    per_group: usize,
    streams_per_sender: usize,
) {
    let t = &snap.totals;
    assert_eq!(snap.failed, 0, "{:?}", snap.endpoint_list);
    assert_eq!(snap.connected, groups * per_group);
    assert!(snap.stopped);
    assert_eq!(t.integrity_failures, 0, "{t:?}");
    assert_eq!(t.misrouted, 0, "{t:?}");
    assert_eq!(t.send_failed, 0, "{t:?}");
    assert_eq!(snap.duplicates, 0);

    // Every endpoint receives every other member's every stream.
    let expected_streams = groups * per_group * (per_group - 1) * streams_per_sender;
    assert_eq!(snap.streams.len(), expected_streams);
    let mut received = 0;
    for s in &snap.streams {
        assert!(s.received > 0, "nothing received: {s:?}");
        assert_eq!(s.sent, s.received + s.lost, "{s:?}");
        assert!(
            s.latency_mean_ns.is_some() && s.latency_max_ns.is_some(),
            "{s:?}"
        );
        assert_eq!(s.group, group_of(snap, s.sender), "{s:?}");
        received += s.received;
    }
    assert_eq!(received, snap.received);
    assert_eq!(snap.expected, snap.received + snap.lost);
    assert!(snap.expected > 0);
    let loss = snap.loss_ratio();
    assert!(
        loss <= MAX_LOSS,
        "loss {loss} ({} of {})",
        snap.lost,
        snap.expected
    );

    // Every unique packet has one latency sample, audio and video alike.
    let l = &snap.latency;
    assert_eq!(l.count, snap.received);
    let (p50, p99, p999, max) = (
        l.p50_ns.expect("p50"),
        l.p99_ns.expect("p99"),
        l.p999_ns.expect("p999"),
        l.max_ns.expect("max"),
    );
    assert!(p50 <= p99 && p99 <= p999 && p999 <= max, "{l:?}");
    assert!(p50 > 0, "{l:?}");
    assert_eq!(snap.latency_audio.count + snap.latency_video.count, l.count);
    assert!(snap.latency_audio.count > 0 && snap.latency_video.count > 0);
    assert!(!snap.histogram.is_empty());
    assert_eq!(snap.histogram.iter().map(|(_, c)| c).sum::<u64>(), l.count);

    // The time series adds up to the totals.
    assert!(!snap.series.is_empty());
    let sent: u64 = snap.series.iter().map(|s| s.sent_packets).sum();
    assert_eq!(sent, t.sent_packets);
    let got: u64 = snap.series.iter().map(|s| s.recv_packets).sum();
    assert_eq!(got, t.recv_packets);

    // Batched I/O was used and counted.
    assert!(t.recv_calls > 0 && t.recv_syscall_packets >= t.recv_calls);
    assert!(t.send_calls > 0 && t.send_syscall_packets >= t.send_calls);

    assert_received_streams(snap, expected_streams);
}

/// What receivers saw per received ssrc, when the forwarder forwards every stream unchanged: one
/// received stream per sent one, each on one layer (no switches), its RTP sequence gaps exactly the
/// loss the payload's sequence numbers show, every video packet valid VP8, each video stream
/// starting with a keyframe and never frozen.
pub fn assert_received_streams(snap: &Snapshot, expected_streams: usize) {
    let r = &snap.receive;
    let t = &snap.totals;
    assert_eq!(r.streams as usize, expected_streams, "{r:?}");
    assert_eq!(snap.receive_streams.len(), expected_streams);
    assert_eq!(r.packets, snap.received + snap.duplicates, "{r:?}");
    if snap.reordered == 0 {
        assert_eq!(r.seq_gaps, snap.lost_gap, "{r:?}");
    }
    assert_eq!((r.layer_switches, r.switches_off_keyframe), (0, 0), "{r:?}");
    assert_eq!(t.vp8_invalid, 0, "{t:?}");
    assert_eq!(r.freezes, 0, "{r:?}");
    let video = snap
        .receive_streams
        .iter()
        .filter(|s| s.stream.kind == Kind::Video);
    for s in video {
        assert!(
            s.stream.keyframes >= 1 && s.stream.frames > s.stream.keyframes,
            "{s:?}"
        );
    }
    assert!(
        r.keyframes >= r.video_streams && r.video_streams > 0,
        "{r:?}"
    );
    assert!(t.keyframes_sent > 0);
}

/// The RTP payload bytes per second a stream of `media` carries: audio's packets, a video layer's
/// bitrate (what the encoder makes; packetization adds about 0.5 % of descriptors).
pub fn payload_rate(media: &MediaConfig, layers: usize, s: &StreamStats) -> f64 {
    match s.kind {
        Kind::Audio => {
            (1000 / media.audio_interval_ms * (media.audio_packet_size as u32 - 12)) as f64
        }
        Kind::Video => {
            let spec = simulcast_layer(u64::from(media.video_bitrate_bps), layers, s.layer.into());
            spec.bitrate_bps as f64 / 8.0
        }
    }
}

fn group_of(snap: &Snapshot, index: u32) -> u32 {
    snap.endpoint_list
        .iter()
        .find(|e| e.index == index)
        .map(|e| e.group)
        .expect("sender is listed")
}

/// Each stream carried about the payload bytes its sender was configured to send in `secs`: within
/// ±25 % (thread wake-ups on a shared machine shift a frame or two, never a whole interval's worth;
/// the first keyframe's excess is paid back within half a second).
pub fn assert_paced(snap: &Snapshot, secs: f64, bytes_per_second: impl Fn(&StreamStats) -> f64) {
    let mut seen = std::collections::HashSet::new();
    for s in &snap.streams {
        if !seen.insert((s.sender, s.ssrc)) {
            continue;
        }
        let want = bytes_per_second(s) * secs;
        let sent = s.sent_payload_bytes as f64;
        assert!(
            sent >= want * 0.75 && sent <= want * 1.25,
            "{:?} ssrc {} layer {} sent {sent} payload bytes, want about {want}",
            s.kind,
            s.ssrc,
            s.layer
        );
    }
    assert!(!seen.is_empty());
}
