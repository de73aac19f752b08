use super::*;

use std::collections::{BTreeMap, HashSet};

const VIDEO: u32 = 90_000;

fn meta(layer: u8, seq: u16, ts: u32, key: bool, start: bool, pid: u16) -> PacketMeta {
    PacketMeta {
        switch_point: key,
        frame_start: start,
        picture_id: Some((pid, PictureIdWidth::Bits15)),
        tl0picidx: Some(pid as u8),
        ..PacketMeta::plain(layer, seq, ts)
    }
}

fn fwd(v: Verdict) -> Rewrite {
    match v {
        Verdict::Forward(r) => r,
        Verdict::Filtered => panic!("filtered"),
    }
}

#[test]
fn the_first_stretch_goes_out_as_it_came_in() {
    let t0 = Instant::now();
    let mut p = Projection::new(Some(Target::layer(0)));
    let r = fwd(p.on_packet(t0, VIDEO, &meta(0, 500, 9000, true, true, 7)));
    assert_eq!(
        (r.seq, r.timestamp, r.picture_id, r.tl0picidx),
        (500, 9000, Some(7), Some(7))
    );
    assert_eq!(p.current(), Some(0));
}

#[test]
fn a_switch_up_waits_for_the_target_keyframe_and_continues_every_field() {
    let t0 = Instant::now();
    let mut p = Projection::new(Some(Target::layer(0)));
    fwd(p.on_packet(t0, VIDEO, &meta(0, 100, 1000, true, true, 10)));
    fwd(p.on_packet(t0, VIDEO, &meta(0, 101, 1000, false, false, 10)));
    p.set_target(Some(Target::layer(2)));
    assert_eq!(p.waiting(), Some(2));
    // Layer 2 without a keyframe: filtered; layer 0 goes on meanwhile.
    assert_eq!(
        p.on_packet(t0, VIDEO, &meta(2, 5000, 77, false, true, 300)),
        Verdict::Filtered
    );
    let r = fwd(p.on_packet(t0, VIDEO, &meta(0, 102, 4000, false, true, 11)));
    assert_eq!(r.seq, 102);
    // The keyframe of layer 2, 10 ms later: seq, timestamp, PictureID and TL0PICIDX go on.
    let t1 = t0 + Duration::from_millis(10);
    let r = fwd(p.on_packet(t1, VIDEO, &meta(2, 5001, 50_000, true, true, 301)));
    assert_eq!(r.seq, 103);
    assert_eq!(r.timestamp, 4000 + 900);
    assert_eq!(r.picture_id, Some(12));
    assert_eq!(r.tl0picidx, Some(12));
    assert_eq!(p.current(), Some(2));
    assert_eq!(p.waiting(), None);
    // Layer 0 is filtered now, except a late packet of its stretch.
    assert_eq!(
        p.on_packet(t1, VIDEO, &meta(0, 103, 7000, false, true, 12)),
        Verdict::Filtered
    );
    assert_eq!(
        fwd(p.on_packet(t1, VIDEO, &meta(0, 101, 1000, false, false, 10))).seq,
        101
    );
    let r = fwd(p.on_packet(t1, VIDEO, &meta(2, 5002, 50_000, false, false, 301)));
    assert_eq!(r.seq, 104);
}

#[test]
fn switching_off_waits_for_a_frame_boundary_and_resuming_needs_a_keyframe() {
    let t0 = Instant::now();
    let mut p = Projection::new(Some(Target::layer(1)));
    fwd(p.on_packet(t0, VIDEO, &meta(1, 10, 0, true, true, 1)));
    p.set_target(None);
    // The rest of the frame still goes; the next frame does not.
    assert_eq!(
        fwd(p.on_packet(t0, VIDEO, &meta(1, 11, 0, false, false, 1))).seq,
        11
    );
    assert_eq!(
        p.on_packet(t0, VIDEO, &meta(1, 12, 3000, false, true, 2)),
        Verdict::Filtered
    );
    assert_eq!(p.current(), None);
    assert_eq!(
        p.on_packet(t0, VIDEO, &meta(1, 13, 3000, false, false, 2)),
        Verdict::Filtered
    );
    p.set_target(Some(Target::layer(1)));
    assert_eq!(
        p.on_packet(t0, VIDEO, &meta(1, 14, 6000, false, true, 3)),
        Verdict::Filtered
    );
    let r = fwd(p.on_packet(t0, VIDEO, &meta(1, 40, 90_000, true, true, 30)));
    assert_eq!((r.seq, r.picture_id), (12, Some(2)));
}

#[test]
fn nacks_translate_back_to_the_layer_and_sequence_number_sent() {
    let t0 = Instant::now();
    let mut p = Projection::new(Some(Target::layer(0)));
    for s in 0..5u16 {
        fwd(p.on_packet(t0, VIDEO, &meta(0, 1000 + s, 0, s == 0, s == 0, 1)));
    }
    p.set_target(Some(Target::layer(1)));
    for s in 0..5u16 {
        fwd(p.on_packet(t0, VIDEO, &meta(1, 60_000 + s, 0, s == 0, s == 0, 1)));
    }
    assert_eq!(p.original(1002), Some((0, 1002)));
    assert_eq!(p.original(1006), Some((1, 60_001)));
    assert_eq!(p.original(2000), None);
    // Resending: the old stretch's packet gets its old fields back; a packet that is not the one the
    // receiver's number was made from gets nothing.
    let old = meta(0, 1002, 0, false, false, 1);
    let r = p.replay(1002, &old).expect("old stretch");
    assert_eq!((r.seq, r.timestamp, r.picture_id), (1002, 0, Some(1)));
    let new = meta(1, 60_001, 0, false, false, 1);
    let r = p.replay(1006, &new).expect("new stretch");
    assert_eq!((r.seq, r.picture_id, r.tl0picidx), (1006, Some(2), Some(2)));
    assert_eq!(p.replay(1006, &old), None);
    assert_eq!(p.replay(2000, &old), None);
}

#[test]
fn keyframe_requests_repeat_once_soon_then_at_most_once_a_second_while_waiting() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut p = Projection::new(Some(Target::layer(2)));
    assert_eq!(p.keyframe_request(t0), Some(2));
    // Past libwebrtc's 300 ms, in case the sender's encoder dropped the first as too soon.
    assert_eq!(p.keyframe_request(ms(399)), None);
    assert_eq!(p.keyframe_request(ms(400)), Some(2));
    assert_eq!(p.keyframe_request(ms(1399)), None);
    assert_eq!(p.keyframe_request(ms(1400)), Some(2));
    assert_eq!(p.keyframe_request(ms(2399)), None);
    // A new target starts over.
    p.set_target(Some(Target::layer(1)));
    assert_eq!(p.keyframe_request(ms(2400)), Some(1));
    assert_eq!(p.keyframe_request(ms(2799)), None);
    assert_eq!(p.keyframe_request(ms(2800)), Some(1));
    fwd(p.on_packet(t0, VIDEO, &meta(1, 1, 0, true, true, 1)));
    assert_eq!(p.keyframe_request(t0 + 3 * KEYFRAME_RETRY), None);
    p.set_target(None);
    assert_eq!(p.keyframe_request(t0 + 4 * KEYFRAME_RETRY), None);
}

#[test]
fn a_stretch_longer_than_half_the_sequence_space_keeps_forwarding() {
    let t0 = Instant::now();
    let mut p = Projection::new(Some(Target::layer(0)));
    for i in 0..100_000u32 {
        let seq = 60_000u16.wrapping_add(i as u16);
        let r = fwd(p.on_packet(
            t0,
            VIDEO,
            &meta(0, seq, i * 3000, i == 0, true, i as u16 & 0x7fff),
        ));
        assert_eq!(r.seq, seq);
    }
    // A packet 20,000 behind is past the stretch's memory: filtered, and no NACK translates to it.
    let newest = 60_000u16.wrapping_add(99_999u32 as u16);
    assert_eq!(
        p.original(newest.wrapping_sub(100)),
        Some((0, newest.wrapping_sub(100)))
    );
    assert_eq!(p.original(newest.wrapping_sub(20_000)), None);
    assert_eq!(
        p.on_packet(
            t0,
            VIDEO,
            &meta(0, newest.wrapping_sub(20_000), 0, false, false, 0)
        ),
        Verdict::Filtered
    );
}

#[test]
fn seven_bit_picture_ids_wrap_at_127() {
    let t0 = Instant::now();
    let mut p = Projection::new(Some(Target::layer(0)));
    let mut m = meta(0, 1, 0, true, true, 0);
    m.picture_id = Some((127, PictureIdWidth::Bits7));
    fwd(p.on_packet(t0, VIDEO, &m));
    p.set_target(Some(Target::layer(1)));
    let mut k = meta(1, 9, 0, true, true, 0);
    k.picture_id = Some((40, PictureIdWidth::Bits7));
    assert_eq!(fwd(p.on_packet(t0, VIDEO, &k)).picture_id, Some(0));
}

/// A small deterministic generator: the property runs are reproducible from their seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Clone, Copy)]
struct Sent {
    meta: PacketMeta,
    lost: bool,
}

/// Three simulcast layers, each with its own sequence numbers, timestamps and PictureIDs (starting at
/// random values, so they wrap), frames of 1-4 packets, random keyframes plus one answering each keyframe
/// request; packets of a tick in random layer order.
fn traffic(rng: &mut Rng, ticks: usize, loss: u64) -> Vec<Vec<Sent>> {
    let mut seq = [0u16; 3].map(|_| rng.next() as u16);
    let mut ts = [0u32; 3].map(|_| rng.next() as u32);
    let mut pid = [0u16; 3].map(|_| (rng.next() as u16) & 0x7fff);
    let mut out = Vec::new();
    for tick in 0..ticks {
        let mut packets = Vec::new();
        for layer in 0..3u8 {
            let l = usize::from(layer);
            let key = tick == 0 || rng.chance(60);
            let n = 1 + rng.below(4) as u16;
            ts[l] = ts[l].wrapping_add(3000);
            pid[l] = (pid[l] + 1) & 0x7fff;
            for i in 0..n {
                packets.push(Sent {
                    meta: PacketMeta {
                        switch_point: key && i == 0,
                        frame_start: i == 0,
                        picture_id: Some((pid[l], PictureIdWidth::Bits15)),
                        tl0picidx: Some(pid[l] as u8),
                        ..PacketMeta::plain(layer, seq[l], ts[l])
                    },
                    lost: rng.chance(loss),
                });
                seq[l] = seq[l].wrapping_add(1);
            }
        }
        out.push(packets);
    }
    out
}

/// For any switches, loss and reordering: sequence numbers unique, gaps only where a packet was lost
/// or came before the first packet of its stretch (the receiver's NACK gets it), timestamps and
/// PictureIDs monotone in sequence order, only target layers forwarded once switched, every stretch
/// opened at a switch point.
#[test]
fn any_switches_losses_and_reordering_keep_each_receiver_stream_continuous() {
    let mut totals = (0usize, 0usize, 0usize, 0usize, 0usize);
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let loss = [0, 0, 20, 100][rng.below(4) as usize];
        let reorder = [0, 0, 30, 150][rng.below(4) as usize];
        let frames = traffic(&mut rng, 200, loss);
        let mut p = Projection::new(Some(Target::layer(rng.below(3) as u8)));
        let t0 = Instant::now();
        // out seq (extended by hand below) -> (layer, in seq, timestamp, pid)
        let mut forwarded: Vec<(u16, PacketMeta, Rewrite)> = Vec::new();
        // Gaps seen, each a lost or early packet.
        let mut arrived_before_open: HashSet<(u8, u16)> = HashSet::new();
        let mut lost: HashSet<(u8, u16)> = HashSet::new();
        // Filtered packets by (layer, seq), with their arrival index.
        let mut seen_filtered: BTreeMap<(u8, u16), usize> = BTreeMap::new();
        let mut opened_at: BTreeMap<(u8, u16), usize> = BTreeMap::new();
        let mut arrival = 0usize;
        for (tick, mut packets) in frames.into_iter().enumerate() {
            let now = t0 + Duration::from_millis(33 * tick as u64);
            if rng.chance(80) {
                p.set_target(match rng.below(4) {
                    3 => None,
                    l => Some(Target::layer(l as u8)),
                });
            }
            // Shuffle layer order within the tick, then swap some neighbours.
            for i in (1..packets.len()).rev() {
                if rng.chance(reorder) {
                    packets.swap(i, i - 1);
                }
            }
            for s in packets {
                if s.lost {
                    lost.insert((s.meta.layer, s.meta.seq));
                    continue;
                }
                arrival += 1;
                match p.on_packet(now, VIDEO, &s.meta) {
                    Verdict::Forward(r) => {
                        forwarded.push((r.seq, s.meta, r));
                        opened_at.insert((s.meta.layer, s.meta.seq), arrival);
                    }
                    Verdict::Filtered => {
                        seen_filtered.insert((s.meta.layer, s.meta.seq), arrival);
                    }
                }
            }
        }
        assert!(!forwarded.is_empty(), "seed {seed}: nothing forwarded");
        // A resend of what it still remembers is the same rewrite as the first time; the most recent
        // packets are always remembered.
        for (i, (seq, m, r)) in forwarded.iter().enumerate() {
            match p.replay(*seq, m) {
                Some(again) => {
                    assert_eq!(again, *r, "seed {seed}: replay of {seq}");
                    totals.4 += 1;
                }
                None => assert!(
                    i + 5 < forwarded.len(),
                    "seed {seed}: a recent packet ({seq}) cannot be replayed"
                ),
            }
        }
        // Unwrap the out sequence numbers in arrival order.
        let mut ext: Vec<(i64, PacketMeta, Rewrite)> = Vec::new();
        let mut last: Option<(u16, i64)> = None;
        for (seq, m, r) in &forwarded {
            let e = match last {
                None => i64::from(*seq),
                Some((ls, le)) => le + i64::from(seq.wrapping_sub(ls) as i16),
            };
            if last.is_none_or(|(_, le)| e > le) {
                last = Some((*seq, e));
            }
            ext.push((e, *m, *r));
        }
        let mut by_seq: BTreeMap<i64, (PacketMeta, Rewrite)> = BTreeMap::new();
        for (e, m, r) in &ext {
            assert!(
                by_seq.insert(*e, (*m, *r)).is_none(),
                "seed {seed}: out seq {e} twice"
            );
        }
        // Stretches: runs of one (layer, offset); each opens at a switch point unless it is the one the
        // receiver started on, and its out range contains only its own packets.
        let mut stretches: Vec<(u8, u16, i64, i64)> = Vec::new(); // layer, seq offset, first, last out
        for (e, (m, r)) in &by_seq {
            let off = r.seq.wrapping_sub(m.seq);
            match stretches.last_mut() {
                Some(s) if s.0 == m.layer && s.1 == off => s.3 = *e,
                _ => stretches.push((m.layer, off, *e, *e)),
            }
        }
        // Gaps: every missing out seq maps, through its stretch, to a packet that was lost or that came
        // before the packet that opened the stretch.
        let first_of = |s: &(u8, u16, i64, i64)| {
            let (m, _) = by_seq[&s.2];
            opened_at[&(m.layer, m.seq)]
        };
        for w in by_seq.keys().collect::<Vec<_>>().windows(2) {
            for missing in (*w[0] + 1)..*w[1] {
                let s = stretches
                    .iter()
                    .find(|s| s.2 <= missing && missing <= s.3)
                    .unwrap_or_else(|| panic!("seed {seed}: gap {missing} between stretches"));
                let orig = (missing as u16).wrapping_sub(s.1);
                assert!(
                    lost.contains(&(s.0, orig))
                        || seen_filtered.get(&(s.0, orig)).is_some_and(|&a| a < first_of(s)),
                    "seed {seed}: gap at {missing} (layer {} seq {orig}) was neither lost nor early",
                    s.0
                );
                arrived_before_open.insert((s.0, orig));
            }
        }
        // Monotone timestamps and PictureIDs in sequence order.
        let mut prev: Option<Rewrite> = None;
        for (m, r) in by_seq.values() {
            if let Some(pr) = prev {
                let dt = r.timestamp.wrapping_sub(pr.timestamp) as i32;
                assert!(dt >= 0, "seed {seed}: timestamp went back by {dt}");
                let dp = r
                    .picture_id
                    .unwrap_or(0)
                    .wrapping_sub(pr.picture_id.unwrap_or(0))
                    & 0x7fff;
                assert!(dp < 0x4000, "seed {seed}: PictureID went back");
            }
            let _ = m;
            prev = Some(*r);
        }
        // Every stretch after the first began with a switch point of its layer.
        for s in stretches.iter().skip(1) {
            let (m, _) = by_seq[&s.2];
            assert!(
                m.switch_point,
                "seed {seed}: a stretch of layer {} began mid-frame",
                s.0
            );
        }
        totals.0 += stretches.len();
        totals.1 += arrived_before_open.len();
        totals.2 += seen_filtered.len();
        totals.3 += forwarded.len();
    }
    // The runs did switch, lose and filter: the properties above were exercised.
    assert!(
        totals.0 > 1500 && totals.1 > 100 && totals.2 > 10_000 && totals.4 > 10_000,
        "{totals:?}"
    );
}

/// A packet of layer 0 with temporal layer `tid` (and Y/U when `sync`), spatial `sid`.
fn layered(seq: u16, pid: u16, tid: u8, sync: bool, start: bool) -> PacketMeta {
    PacketMeta {
        frame_start: start,
        temporal: tid,
        temporal_switch: sync,
        picture_id: Some((pid, PictureIdWidth::Bits15)),
        tl0picidx: Some(0),
        ..PacketMeta::plain(0, seq, u32::from(pid) * 3000)
    }
}

fn temporal(t: u8) -> Option<Target> {
    Some(Target {
        layer: 0,
        spatial: ALL,
        temporal: t,
    })
}

#[test]
fn temporal_layers_left_out_leave_no_gap_in_sequence_numbers_or_picture_ids() {
    let t0 = Instant::now();
    let mut p = Projection::new(temporal(0));
    let mut key = layered(100, 10, 0, false, true);
    key.switch_point = true;
    assert_eq!(fwd(p.on_packet(t0, VIDEO, &key)).seq, 100);
    // Frames TID 2 (2 packets), 1, 2, 0: only the TID 0 frame goes, right after the keyframe.
    for (seq, pid, tid, start) in [
        (101, 11, 2, true),
        (102, 11, 2, false),
        (103, 12, 1, true),
        (104, 13, 2, true),
    ] {
        assert_eq!(
            p.on_packet(t0, VIDEO, &layered(seq, pid, tid, false, start)),
            Verdict::Filtered
        );
    }
    let r = fwd(p.on_packet(t0, VIDEO, &layered(105, 14, 0, false, true)));
    assert_eq!((r.seq, r.picture_id), (101, Some(11)));
    // A retransmission of a packet left out stays out; a NACK for the receiver's 101 is for 105.
    assert_eq!(
        p.on_packet(t0, VIDEO, &layered(103, 12, 1, false, true)),
        Verdict::Filtered
    );
    assert_eq!(p.original(101), Some((0, 105)));
    assert_eq!(p.original(100), Some((0, 100)));
    assert_eq!(p.original(102), None);
}

#[test]
fn a_lost_packet_keeps_its_place_and_fills_it_when_it_comes_late() {
    let t0 = Instant::now();
    let mut p = Projection::new(temporal(1));
    let mut key = layered(1, 1, 0, false, true);
    key.switch_point = true;
    fwd(p.on_packet(t0, VIDEO, &key));
    // 2 (TID 2) left out, 3 (TID 1) lost for now, 4 (TID 2) left out, 5 (TID 0).
    assert_eq!(
        p.on_packet(t0, VIDEO, &layered(2, 2, 2, false, true)),
        Verdict::Filtered
    );
    assert_eq!(
        p.on_packet(t0, VIDEO, &layered(4, 4, 2, false, true)),
        Verdict::Filtered
    );
    let r5 = fwd(p.on_packet(t0, VIDEO, &layered(5, 5, 0, false, true)));
    // 1 -> 1, [2 out], 3 -> 2 (missing for now), [4 out], 5 -> 3.
    assert_eq!((r5.seq, r5.picture_id), (3, Some(3)));
    let r3 = fwd(p.on_packet(t0, VIDEO, &layered(3, 3, 1, false, true)));
    assert_eq!((r3.seq, r3.picture_id), (2, Some(2)));
    assert_eq!(p.original(2), Some((0, 3)));
}

#[test]
fn temporal_layers_go_up_one_at_a_time_at_switching_up_points() {
    let t0 = Instant::now();
    let mut p = Projection::new(temporal(0));
    let mut key = layered(1, 1, 0, false, true);
    key.switch_point = true;
    fwd(p.on_packet(t0, VIDEO, &key));
    p.set_target(temporal(2));
    assert_eq!(p.waiting(), None, "no keyframe needed to go up in time");
    // TID 2 with Y while only TID 0 is sent: it may refer to a TID 1 frame the receiver lacks.
    assert_eq!(
        p.on_packet(t0, VIDEO, &layered(2, 2, 2, true, true)),
        Verdict::Filtered
    );
    // TID 1 without Y: not yet.
    assert_eq!(
        p.on_packet(t0, VIDEO, &layered(3, 3, 1, false, true)),
        Verdict::Filtered
    );
    fwd(p.on_packet(t0, VIDEO, &layered(4, 4, 0, false, true)));
    // TID 1 with Y: from here TID 1 goes; TID 2 still waits for its own Y.
    fwd(p.on_packet(t0, VIDEO, &layered(5, 5, 1, true, true)));
    assert_eq!(
        p.on_packet(t0, VIDEO, &layered(6, 6, 2, false, true)),
        Verdict::Filtered
    );
    fwd(p.on_packet(t0, VIDEO, &layered(7, 7, 1, false, true)));
    let r = fwd(p.on_packet(t0, VIDEO, &layered(8, 8, 2, true, true)));
    assert_eq!((r.seq, r.picture_id), (5, Some(5)));
    assert_eq!(p.current_target().map(|t| t.temporal), Some(2));
    // Going down takes effect at the next picture, without a keyframe.
    p.set_target(temporal(0));
    fwd(p.on_packet(t0, VIDEO, &layered(9, 8, 2, true, false)));
    assert_eq!(
        p.on_packet(t0, VIDEO, &layered(10, 9, 1, false, true)),
        Verdict::Filtered
    );
}

#[test]
fn a_receiver_without_a_temporal_switching_up_point_asks_a_keyframe_after_a_while() {
    let t0 = Instant::now();
    let mut p = Projection::new(temporal(0));
    let mut key = layered(1, 1, 0, false, true);
    key.switch_point = true;
    fwd(p.on_packet(t0, VIDEO, &key));
    assert_eq!(p.keyframe_request(t0), None);
    p.set_target(temporal(2));
    assert_eq!(p.keyframe_request(t0), None);
    assert_eq!(p.keyframe_request(t0 + KEYFRAME_RETRY / 2), None);
    assert_eq!(p.keyframe_request(t0 + KEYFRAME_RETRY), Some(0));
    // The keyframe brings every temporal layer.
    let mut key = layered(2, 2, 0, false, true);
    key.switch_point = true;
    fwd(p.on_packet(t0 + KEYFRAME_RETRY, VIDEO, &key));
    assert_eq!(p.current_target().map(|t| t.temporal), Some(2));
    assert_eq!(p.keyframe_request(t0 + 5 * KEYFRAME_RETRY), None);
}

/// A VP9-like SVC packet: spatial layer `sid` of picture `pid`, first/last packet of its layer frame.
fn svc(seq: u16, pid: u16, sid: u8, start: bool, end: bool) -> PacketMeta {
    PacketMeta {
        frame_start: start,
        end_of_frame: end,
        spatial: sid,
        picture_id: Some((pid, PictureIdWidth::Bits15)),
        ..PacketMeta::plain(0, seq, u32::from(pid) * 3000)
    }
}

fn spatial(s: u8) -> Option<Target> {
    Some(Target {
        layer: 0,
        spatial: s,
        temporal: ALL,
    })
}

#[test]
fn spatial_layers_above_the_target_are_left_out_and_the_picture_ends_with_a_marker() {
    let t0 = Instant::now();
    let mut p = Projection::new(spatial(2));
    // A keyframe picture with three spatial layers, one packet each.
    let mut key = svc(1, 1, 0, true, true);
    key.switch_point = true;
    assert!(!fwd(p.on_packet(t0, VIDEO, &key)).marker);
    fwd(p.on_packet(t0, VIDEO, &svc(2, 1, 1, true, true)));
    assert!(fwd(p.on_packet(t0, VIDEO, &svc(3, 1, 2, true, true))).marker);
    // Down to spatial 0 at the next picture: S1 and S2 left out, S0 ends the picture.
    p.set_target(spatial(0));
    let r = fwd(p.on_packet(t0, VIDEO, &svc(4, 2, 0, true, true)));
    assert_eq!((r.seq, r.picture_id, r.marker), (4, Some(2), true));
    assert_eq!(
        p.on_packet(t0, VIDEO, &svc(5, 2, 1, true, true)),
        Verdict::Filtered
    );
    assert_eq!(
        p.on_packet(t0, VIDEO, &svc(6, 2, 2, true, true)),
        Verdict::Filtered
    );
    // The next picture's S0 continues without a gap; its PictureID too (pictures are not left out).
    let r = fwd(p.on_packet(t0, VIDEO, &svc(7, 3, 0, true, false)));
    assert_eq!((r.seq, r.picture_id, r.marker), (5, Some(3), false));
    // Going up needs a keyframe (upper layers of k-SVC refer to their own earlier frames).
    p.set_target(spatial(1));
    assert_eq!(p.waiting(), Some(0));
    fwd(p.on_packet(t0, VIDEO, &svc(8, 3, 0, false, true)));
    assert_eq!(
        p.on_packet(t0, VIDEO, &svc(9, 3, 1, true, true)),
        Verdict::Filtered
    );
    let mut key = svc(10, 4, 0, true, true);
    key.switch_point = true;
    assert!(!fwd(p.on_packet(t0, VIDEO, &key)).marker);
    let r = fwd(p.on_packet(t0, VIDEO, &svc(11, 4, 1, true, true)));
    assert_eq!((r.seq, r.marker), (8, true));
    assert_eq!(p.waiting(), None);
    // Resent now, each packet gets the marker it went out with, across both spatial switches.
    for (out, m, marker) in [
        (1, svc(1, 1, 0, true, true), false),
        (3, svc(3, 1, 2, true, true), true),
        (4, svc(4, 2, 0, true, true), true),
        (6, svc(8, 3, 0, false, true), true),
        (8, svc(11, 4, 1, true, true), true),
    ] {
        let r = p.replay(out, &m).expect("forwarded");
        assert_eq!((r.seq, r.marker), (out, marker), "{out}");
    }
}

/// One SSRC with the 3-layer temporal pattern (TID 0, 2, 1, 2; Y on the first TID 1 and 2 frames after
/// each TID 0 frame at random), frames of 1-3 packets, random keyframes.
fn temporal_traffic(rng: &mut Rng, frames: usize, loss: u64) -> Vec<Sent> {
    let mut seq = rng.next() as u16;
    let mut ts = rng.next() as u32;
    let mut pid = (rng.next() as u16) & 0x7fff;
    let mut out = Vec::new();
    for f in 0..frames {
        let key = f == 0 || rng.chance(20);
        let tid = if key { 0 } else { [0, 2, 1, 2][f % 4] };
        let sync = !key && tid > 0 && rng.chance(500);
        ts = ts.wrapping_add(3000);
        pid = (pid + 1) & 0x7fff;
        for i in 0..1 + rng.below(3) as u16 {
            out.push(Sent {
                meta: PacketMeta {
                    switch_point: key && i == 0,
                    frame_start: i == 0,
                    temporal: tid,
                    temporal_switch: sync,
                    picture_id: Some((pid, PictureIdWidth::Bits15)),
                    tl0picidx: Some(0),
                    ..PacketMeta::plain(0, seq, ts)
                },
                lost: rng.chance(loss),
            });
            seq = seq.wrapping_add(1);
        }
    }
    out
}

/// For any temporal targets, loss and reordering: sequence numbers unique; between two packets next
/// to each other in the receiver's order, no more missing than were lost between them or came too late
/// (or too early) to be left out in order (a packet left out in order leaves no gap); PictureIDs step by one per picture sent or lost; no packet above the temporal
/// layer the receiver was last set to; and a temporal layer the receiver did not get comes back only
/// at a keyframe or its switching-up point, after the layer below.
#[test]
fn any_temporal_targets_losses_and_reordering_leave_gaps_only_where_packets_were_lost() {
    let mut totals = (0usize, 0usize, 0usize);
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0xD134_2543_DE82_EF95) | 1);
        let loss = [0, 0, 20, 100][rng.below(4) as usize];
        let reorder = [0, 0, 30, 150][rng.below(4) as usize];
        let mut packets = temporal_traffic(&mut rng, 400, loss);
        // The send order: seq -> index.
        let order: BTreeMap<u16, usize> = packets
            .iter()
            .enumerate()
            .map(|(i, s)| (s.meta.seq, i))
            .collect();
        let sorted: Vec<PacketMeta> = packets.iter().map(|s| s.meta).collect();
        for i in (1..packets.len()).rev() {
            if rng.chance(reorder) {
                packets.swap(i, i - 1);
            }
        }
        let mut cap = rng.below(3) as u8;
        let mut p = Projection::new(temporal(cap));
        let t0 = Instant::now();
        let lost: HashSet<u16> = packets
            .iter()
            .filter(|s| s.lost)
            .map(|s| s.meta.seq)
            .collect();
        let mut forwarded: Vec<(PacketMeta, Rewrite)> = Vec::new();
        // Which temporal layers the receiver has without a break, and the caps set so far.
        let mut has = [false; 3];
        let mut newest: Option<u16> = None;
        let mut max_cap = cap;
        // Packets filtered after a newer one went, or before the stream started: their place was
        // kept, as for a loss.
        let mut late_filtered: HashSet<u16> = HashSet::new();
        for (i, s) in packets.iter().enumerate() {
            if rng.chance(15) {
                cap = rng.below(3) as u8;
                max_cap = max_cap.max(cap);
                p.set_target(temporal(cap));
            }
            if s.lost {
                continue;
            }
            let m = s.meta;
            let in_order = newest.is_none_or(|n| newer(m.seq, n));
            let open = p.current().is_some();
            let verdict = p.on_packet(t0 + Duration::from_millis(i as u64), VIDEO, &m);
            if in_order {
                newest = Some(m.seq);
            }
            let t = usize::from(m.temporal);
            match verdict {
                Verdict::Forward(r) => {
                    assert!(
                        m.temporal <= max_cap,
                        "seed {seed}: TID {t} above every cap"
                    );
                    if m.switch_point {
                        has = [true; 3];
                    } else if in_order && m.frame_start && !has[t] {
                        assert!(
                            m.temporal_switch && (t == 0 || has[t - 1]),
                            "seed {seed}: TID {t} resumed at a frame that is no switching-up point"
                        );
                        has[t] = true;
                    }
                    forwarded.push((m, r));
                }
                Verdict::Filtered => {
                    if in_order && m.frame_start {
                        for h in has.iter_mut().skip(t) {
                            *h = false;
                        }
                    }
                    if !in_order || !open {
                        late_filtered.insert(m.seq);
                    }
                }
            }
        }
        assert!(!forwarded.is_empty(), "seed {seed}: nothing forwarded");
        // Receiver order (out seq, unwrapped around the first).
        let base = forwarded[0].1.seq;
        let mut by_out: BTreeMap<i32, (PacketMeta, Rewrite)> = BTreeMap::new();
        for (m, r) in &forwarded {
            let e = i32::from(r.seq.wrapping_sub(base) as i16);
            assert!(
                by_out.insert(e, (*m, *r)).is_none(),
                "seed {seed}: out seq {e} twice"
            );
        }
        for w in by_out.iter().collect::<Vec<_>>().windows(2) {
            let ((ea, (ma, ra)), (eb, (mb, rb))) = (w[0], w[1]);
            let (ia, ib) = (order[&ma.seq], order[&mb.seq]);
            assert!(
                ia < ib,
                "seed {seed}: the receiver's order is not the sender's: {ma:?} {ra:?} / {mb:?} {rb:?}"
            );
            let missing = (eb - ea - 1) as usize;
            let lost_between = sorted[ia + 1..ib]
                .iter()
                .filter(|m| lost.contains(&m.seq) || late_filtered.contains(&m.seq))
                .count();
            assert!(
                missing <= lost_between,
                "seed {seed}: {missing} missing between {} and {} where {lost_between} were lost",
                ma.seq,
                mb.seq
            );
            // PictureIDs: the same picture, or one more per picture started between them that was
            // sent or lost.
            let dp = rb
                .picture_id
                .unwrap_or(0)
                .wrapping_sub(ra.picture_id.unwrap_or(0))
                & 0x7fff;
            if ma.picture_id != mb.picture_id {
                let pictures = sorted[ia + 1..=ib].iter().filter(|m| m.frame_start).count();
                assert!(
                    dp >= 1 && usize::from(dp) <= pictures,
                    "seed {seed}: PictureID stepped {dp} over {pictures} pictures"
                );
            } else {
                assert_eq!(dp, 0, "seed {seed}");
            }
            totals.1 += missing;
        }
        totals.0 += forwarded.len();
        totals.2 += packets.len() - forwarded.len();
    }
    assert!(
        totals.0 > 50_000 && totals.1 > 500 && totals.2 > 50_000,
        "{totals:?}"
    );
}

#[test]
fn while_the_senders_path_changes_a_gap_resumes_at_the_next_keyframe_numbered_on() {
    let t0 = Instant::now();
    let mut p = Projection::new(Some(Target::layer(0)));
    fwd(p.on_packet(t0, VIDEO, &meta(0, 100, 1000, true, true, 10)));
    fwd(p.on_packet(t0, VIDEO, &meta(0, 101, 4000, false, true, 11)));
    p.resync_after_gap(t0 + Duration::from_secs(5));
    // Packets the sender queued come on without a gap: forwarded as ever.
    let t1 = t0 + Duration::from_millis(2000);
    assert_eq!(
        fwd(p.on_packet(t1, VIDEO, &meta(0, 102, 7000, false, true, 12))).seq,
        102
    );
    // 103..=149 were lost on the way in: the stream comes back at 150, a delta frame, filtered.
    assert_eq!(
        p.on_packet(t1, VIDEO, &meta(0, 150, 180_000, false, true, 60)),
        Verdict::Filtered
    );
    assert_eq!(p.waiting(), Some(0), "it waits for a keyframe");
    // A retransmission of something lost goes nowhere either.
    assert_eq!(
        p.on_packet(t1, VIDEO, &meta(0, 120, 90_000, false, true, 30)),
        Verdict::Filtered
    );
    // The keyframe: numbered on from 102 (no gap for the receiver to wait on).
    let r = fwd(p.on_packet(t1, VIDEO, &meta(0, 151, 183_000, true, true, 61)));
    assert_eq!((r.seq, r.picture_id), (103, Some(13)));
    assert_eq!(
        r.timestamp, 7001,
        "the last went out at this instant: the smallest step"
    );
    assert_eq!(
        fwd(p.on_packet(t1, VIDEO, &meta(0, 152, 186_000, false, true, 62))).seq,
        104
    );
    // One cut per window: a later gap is ordinary loss, left to NACKs.
    assert_eq!(
        fwd(p.on_packet(t1, VIDEO, &meta(0, 160, 189_000, false, true, 63))).seq,
        112
    );
}

#[test]
fn once_the_window_is_over_a_gap_is_ordinary_loss() {
    let t0 = Instant::now();
    let mut p = Projection::new(Some(Target::layer(0)));
    fwd(p.on_packet(t0, VIDEO, &meta(0, 100, 1000, true, true, 10)));
    p.resync_after_gap(t0 + Duration::from_secs(1));
    p.resync_after_gap(t0 + Duration::from_millis(500)); // does not shorten it
    let t1 = t0 + Duration::from_millis(900);
    assert_eq!(
        fwd(p.on_packet(t1, VIDEO, &meta(0, 101, 4000, false, true, 11))).seq,
        101
    );
    let t2 = t0 + Duration::from_millis(1100);
    assert_eq!(
        fwd(p.on_packet(t2, VIDEO, &meta(0, 105, 7000, false, true, 12))).seq,
        105
    );
    assert_eq!(p.waiting(), None);
}
