use super::*;

use std::collections::{BTreeMap, HashSet};

const VIDEO: u32 = 90_000;

fn meta(layer: u8, seq: u16, ts: u32, key: bool, start: bool, pid: u16) -> PacketMeta {
    PacketMeta {
        layer,
        seq,
        timestamp: ts,
        switch_point: key,
        frame_start: start,
        picture_id: Some((pid, PictureIdWidth::Bits15)),
        tl0picidx: Some(pid as u8),
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
    let mut p = Projection::new(Some(0));
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
    let mut p = Projection::new(Some(0));
    fwd(p.on_packet(t0, VIDEO, &meta(0, 100, 1000, true, true, 10)));
    fwd(p.on_packet(t0, VIDEO, &meta(0, 101, 1000, false, false, 10)));
    p.set_target(Some(2));
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
    let mut p = Projection::new(Some(1));
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
    p.set_target(Some(1));
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
    let mut p = Projection::new(Some(0));
    for s in 0..5u16 {
        fwd(p.on_packet(t0, VIDEO, &meta(0, 1000 + s, 0, s == 0, s == 0, 1)));
    }
    p.set_target(Some(1));
    for s in 0..5u16 {
        fwd(p.on_packet(t0, VIDEO, &meta(1, 60_000 + s, 0, s == 0, s == 0, 1)));
    }
    assert_eq!(p.original(1002), Some((0, 1002)));
    assert_eq!(p.original(1006), Some((1, 60_001)));
    assert_eq!(p.original(2000), None);
}

#[test]
fn keyframe_requests_repeat_at_most_once_a_second_while_waiting() {
    let t0 = Instant::now();
    let mut p = Projection::new(Some(2));
    assert_eq!(p.keyframe_request(t0), Some(2));
    assert_eq!(p.keyframe_request(t0 + Duration::from_millis(500)), None);
    assert_eq!(p.keyframe_request(t0 + KEYFRAME_RETRY), Some(2));
    fwd(p.on_packet(t0, VIDEO, &meta(2, 1, 0, true, true, 1)));
    assert_eq!(p.keyframe_request(t0 + 3 * KEYFRAME_RETRY), None);
    p.set_target(None);
    assert_eq!(p.keyframe_request(t0 + 4 * KEYFRAME_RETRY), None);
}

#[test]
fn a_stretch_longer_than_half_the_sequence_space_keeps_forwarding() {
    let t0 = Instant::now();
    let mut p = Projection::new(Some(0));
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
    let mut p = Projection::new(Some(0));
    let mut m = meta(0, 1, 0, true, true, 0);
    m.picture_id = Some((127, PictureIdWidth::Bits7));
    fwd(p.on_packet(t0, VIDEO, &m));
    p.set_target(Some(1));
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
                        layer,
                        seq: seq[l],
                        timestamp: ts[l],
                        switch_point: key && i == 0,
                        frame_start: i == 0,
                        picture_id: Some((pid[l], PictureIdWidth::Bits15)),
                        tl0picidx: Some(pid[l] as u8),
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
    let mut totals = (0usize, 0usize, 0usize, 0usize);
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let loss = [0, 0, 20, 100][rng.below(4) as usize];
        let reorder = [0, 0, 30, 150][rng.below(4) as usize];
        let frames = traffic(&mut rng, 200, loss);
        let mut p = Projection::new(Some(rng.below(3) as u8));
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
                    l => Some(l as u8),
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
        totals.0 > 1500 && totals.1 > 100 && totals.2 > 10_000,
        "{totals:?}"
    );
}
