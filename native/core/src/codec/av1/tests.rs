//! Vectors written bit by bit from the AV1 RTP spec's Appendix A: the syntax of A.8.2 and the
//! structures of A.10.2. Each string holds one field (spaces only for reading); `bits` packs
//! them most significant bit first, zero-padding the last byte as zero_padding does.

use super::*;

/// Packs the '0' and '1' characters of `s` into bytes, MSB first; other characters are ignored.
pub(crate) fn bits(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = 0usize;
    for c in s.chars() {
        let bit = match c {
            '0' => 0u8,
            '1' => 1u8,
            _ => continue,
        };
        if n.is_multiple_of(8) {
            out.push(0);
        }
        if let Some(last) = out.last_mut() {
            *last |= bit << (7 - n % 8);
        }
        n += 1;
    }
    out
}

/// A 3-byte descriptor (mandatory fields only).
pub(crate) fn mandatory(start: bool, end: bool, template_id: u8, frame_number: u16) -> Vec<u8> {
    bits(&format!(
        "{} {} {:06b} {:016b}",
        u8::from(start),
        u8::from(end),
        template_id,
        frame_number
    ))
}

/// A.10.2.1 L1T3, sent on the keyframe (a single-packet frame, template index 0, frame 100):
/// the table's templates, with template_id_offset `offset`, and a 640x360 render resolution.
/// With offset 1 the template ids are the table's Idx column. 160 bits: no padding.
pub(crate) fn l1t3_keyframe_at(offset: u8) -> Vec<u8> {
    let offset = format!("{offset:06b}");
    bits(
        &[
            "1",                // start_of_frame
            "1",                // end_of_frame
            offset.as_str(),    // frame_dependency_template_id: template index 0
            "0000000001100100", // frame_number = 100
            "1",                // template_dependency_structure_present_flag
            "0",                // active_decode_targets_present_flag
            "0",                // custom_dtis_flag
            "0",                // custom_fdiffs_flag
            "0",                // custom_chains_flag
            offset.as_str(),    // template_id_offset
            "00010",            // dt_cnt_minus_one = 2: 30, 15 and 7.5 fps
            // template_layers: next_layer_idc after each template (S0T0 S0T0 S0T1 S0T2 S0T2)
            "00", // 1 -> 2: same ids
            "01", // 2 -> 3: temporal id + 1
            "01", // 3 -> 4: temporal id + 1
            "00", // 4 -> 5: same ids
            "11", // 5: no more templates
            // template_dtis (30, 15, 7.5 fps); S = 10, D = 01, - = 00
            "10 10 10", // 1: S S S
            "10 10 10", // 2: S S S
            "10 01 00", // 3: S D -
            "01 00 00", // 4: D - -
            "01 00 00", // 5: D - -
            // template_fdiffs: fdiff_follows_flag, fdiff_minus_one (4 bits), ..., 0
            "0",        // 1: none
            "1 0011 0", // 2: 4
            "1 0001 0", // 3: 2
            "1 0000 0", // 4: 1
            "1 0000 0", // 5: 1
            // template_chains
            "01", // chain_cnt = ns(DtCnt + 1 = 4): 1 (decode_target_protected_by = ns(1): no bits)
            "0000", // template_chain_fdiff, 1: 0
            "0100", // 2: 4
            "0010", // 3: 2
            "0001", // 4: 1
            "0011", // 5: 3
            "1",  // resolutions_present_flag
            "0000001001111111", // max_render_width_minus_1[0] = 639
            "0000000101100111", // max_render_height_minus_1[0] = 359
        ]
        .concat(),
    )
}

pub(crate) fn l1t3_keyframe() -> Vec<u8> {
    l1t3_keyframe_at(1)
}

/// The L1T3 structure, as a stream has it after its keyframe.
pub(crate) fn l1t3_structure() -> Av1Structure {
    let mut s = Av1Structure::new();
    Av1Descriptor::parse(&l1t3_keyframe(), &mut s).expect("L1T3 keyframe");
    s
}

/// A.10.2.2 L3T3 full SVC, template_id_offset 1, on the first packet of the keyframe (template
/// 1, frame 1000, start_of_frame without end_of_frame), with 320x180, 640x360 and 1280x720.
/// Decode targets in the table's column order: HD 30/15/7.5 fps, VGA 30/15/7.5, QVGA 30/15/7.5.
pub(crate) fn l3t3_keyframe() -> Vec<u8> {
    bits(concat!(
        "1",                // start_of_frame
        "0",                // end_of_frame
        "000001",           // frame_dependency_template_id = 1
        "0000001111101000", // frame_number = 1000
        "1",                // template_dependency_structure_present_flag
        "0",                // active_decode_targets_present_flag
        "0",                // custom_dtis_flag
        "0",                // custom_fdiffs_flag
        "0",                // custom_chains_flag
        "000001",           // template_id_offset = 1
        "01000",            // dt_cnt_minus_one = 8
        // template_layers: next_layer_idc after each template
        "00", // 1 S0T0 -> 2 S0T0
        "01", // 2 -> 3 S0T1
        "01", // 3 -> 4 S0T2
        "00", // 4 -> 5 S0T2
        "10", // 5 -> 6 S1T0: spatial id + 1, temporal id 0
        "00", // 6 -> 7 S1T0
        "01", // 7 -> 8 S1T1
        "01", // 8 -> 9 S1T2
        "00", // 9 -> 10 S1T2
        "10", // 10 -> 11 S2T0
        "00", // 11 -> 12 S2T0
        "01", // 12 -> 13 S2T1
        "01", // 13 -> 14 S2T2
        "00", // 14 -> 15 S2T2
        "11", // 15: no more templates
        // template_dtis: HD30 HD15 HD7.5 VGA30 VGA15 VGA7.5 QVGA30 QVGA15 QVGA7.5
        // S = 10, D = 01, R = 11, - = 00
        "10 10 10 10 10 10 10 10 10", // 1: S S S S S S S S S
        "11 11 11 11 11 11 10 10 10", // 2: R R R R R R S S S
        "11 11 00 11 11 00 10 01 00", // 3: R R - R R - S D -
        "11 00 00 11 00 00 01 00 00", // 4: R - - R - - D - -
        "11 00 00 11 00 00 01 00 00", // 5: R - - R - - D - -
        "10 10 10 10 10 10 00 00 00", // 6: S S S S S S - - -
        "11 11 11 10 10 10 00 00 00", // 7: R R R S S S - - -
        "11 11 00 10 01 00 00 00 00", // 8: R R - S D - - - -
        "11 00 00 01 00 00 00 00 00", // 9: R - - D - - - - -
        "11 00 00 01 00 00 00 00 00", // 10: R - - D - - - - -
        "10 10 10 00 00 00 00 00 00", // 11: S S S - - - - - -
        "10 10 10 00 00 00 00 00 00", // 12: S S S - - - - - -
        "10 01 00 00 00 00 00 00 00", // 13: S D - - - - - - -
        "01 00 00 00 00 00 00 00 00", // 14: D - - - - - - - -
        "01 00 00 00 00 00 00 00 00", // 15: D - - - - - - - -
        // template_fdiffs: fdiff_follows_flag, fdiff_minus_one, ..., 0
        "0",               // 1: none
        "1 1011 0",        // 2: 12
        "1 0101 0",        // 3: 6
        "1 0010 0",        // 4: 3
        "1 0010 0",        // 5: 3
        "1 0000 0",        // 6: 1
        "1 1011 1 0000 0", // 7: 12, 1
        "1 0101 1 0000 0", // 8: 6, 1
        "1 0010 1 0000 0", // 9: 3, 1
        "1 0010 1 0000 0", // 10: 3, 1
        "1 0000 0",        // 11: 1
        "1 1011 1 0000 0", // 12: 12, 1
        "1 0101 1 0000 0", // 13: 6, 1
        "1 0010 1 0000 0", // 14: 3, 1
        "1 0010 1 0000 0", // 15: 3, 1
        // template_chains
        "011", // chain_cnt = ns(10): w = 4, m = 6, f(3) = 3 < 6: 3
        // decode_target_protected_by = ns(3) each (w = 2, m = 1): 0 = "0", 1 = "10", 2 = "11"
        "11 11 11", // HD: chain 2
        "10 10 10", // VGA: chain 1
        "0 0 0",    // QVGA: chain 0
        // template_chain_fdiff, chains 0 1 2
        "0000 0000 0000",   // 1: 0 0 0
        "1100 1011 1010",   // 2: 12 11 10
        "0110 0101 0100",   // 3: 6 5 4
        "0011 0010 0001",   // 4: 3 2 1
        "1001 1000 0111",   // 5: 9 8 7
        "0001 0001 0001",   // 6: 1 1 1
        "0001 0001 0001",   // 7: 1 1 1
        "0111 0110 0101",   // 8: 7 6 5
        "0100 0011 0010",   // 9: 4 3 2
        "1010 1001 1000",   // 10: 10 9 8
        "0010 0001 0001",   // 11: 2 1 1
        "0010 0001 0001",   // 12: 2 1 1
        "1000 0111 0110",   // 13: 8 7 6
        "0101 0100 0011",   // 14: 5 4 3
        "1011 1010 1001",   // 15: 11 10 9
        "1",                // resolutions_present_flag
        "0000000100111111", // spatial 0: width - 1 = 319
        "0000000010110011", //            height - 1 = 179
        "0000001001111111", // spatial 1: 639
        "0000000101100111", //            359
        "0000010011111111", // spatial 2: 1279
        "0000001011001111", //            719
    ))
}

/// Bits the L3T3 keyframe descriptor takes, before the last byte's padding.
const L3T3_BITS: usize = 24 + 5 + 11 + 15 * 2 + 15 * 18 + 125 + 3 + 15 + 15 * 12 + 1 + 96;

/// One row of an A.10.2 table: Idx, S, T, Fdiffs, Chains (C of them), DTIs (D decode targets).
type Row<const C: usize, const D: usize> = (u8, u8, u8, &'static [u8], [u8; C], [Dti; D]);

const S: Dti = Dti::Switch;
const D: Dti = Dti::Discardable;
const R: Dti = Dti::Required;
const N: Dti = Dti::NotPresent;

fn dtis_of(t: &Av1Template, count: usize) -> Vec<Dti> {
    (0..count).map(|dt| t.dti(dt)).collect()
}

/// The structure has exactly the table's templates, each with its row's layers, frame differences,
/// chains and DTIs.
fn assert_rows<const CHAINS: usize, const TARGETS: usize>(
    s: &Av1Structure,
    table: &[Row<CHAINS, TARGETS>],
) {
    assert_eq!(s.templates().len(), table.len());
    for &(idx, sid, tid, fdiffs, chains, dtis) in table {
        let t = s.template(idx).expect("in the structure");
        assert_eq!(
            (t.spatial_id(), t.temporal_id()),
            (sid, tid),
            "template {idx}"
        );
        assert_eq!(t.fdiffs(), fdiffs, "template {idx}");
        assert_eq!(chains_of(t, CHAINS), chains, "template {idx}");
        assert_eq!(dtis_of(t, TARGETS), dtis, "template {idx}");
    }
}

fn chains_of(t: &Av1Template, count: usize) -> Vec<u8> {
    (0..count).map(|c| t.chain_fdiff(c)).collect()
}

/// A.8.2 `ns(n)`: the table for n = 5 (0 = 00, 1 = 01, 2 = 10, 3 = 110, 4 = 111), and n = 1,
/// which takes no bits.
#[test]
fn a8_2_ns_non_symmetric_integers() {
    let buf = bits("00 01 10 110 111");
    let mut r = BitReader { buf: &buf, pos: 0 };
    for want in 0..5 {
        assert_eq!(r.ns(5), Ok(want));
    }
    assert_eq!(r.pos, 12);
    assert_eq!(r.ns(1), Ok(0));
    assert_eq!(r.pos, 12);
    // ns(33), the largest chain_cnt's: 31 = 11111 0 ... and 32 = 111111.
    let buf = bits("111110 111111 00000");
    let mut r = BitReader { buf: &buf, pos: 0 };
    assert_eq!((r.ns(33), r.ns(33), r.ns(33)), (Ok(31), Ok(32), Ok(0)));
    assert_eq!(r.pos, 17);
    r.pos = 22; // 2 bits left of 3 bytes
    assert_eq!(r.ns(33), Err(CodecError::Truncated));
}

/// A.8.2 `mandatory_descriptor_fields`: a 3-byte descriptor names a template and takes every
/// other value from it (`no_extended_descriptor_fields`).
#[test]
fn a8_2_mandatory_descriptor_fields_resolve_through_the_template() {
    let mut s = l1t3_structure();
    let before = s.clone();
    let dd = bits(concat!(
        "0",                // start_of_frame
        "1",                // end_of_frame
        "000100",           // frame_dependency_template_id = 4
        "0000000001100101", // frame_number = 101
    ));
    assert_eq!(dd, [0x44, 0x00, 0x65]);
    let d = Av1Descriptor::parse(&dd, &mut s).expect("valid");
    assert!(!d.start_of_frame && d.end_of_frame);
    assert_eq!((d.template_id, d.frame_number), (4, 101));
    assert!(!d.structure_present && !d.starts_keyframe());
    assert!(!d.active_decode_targets_present && d.active_decode_targets.is_none());
    assert!(!d.custom_dtis && !d.custom_fdiffs && !d.custom_chains);
    // Template 4 of A.10.2.1: S0 T2, fdiff 1, chain 1, D - -.
    assert_eq!((d.spatial_id, d.temporal_id), (0, 2));
    assert_eq!(d.fdiffs(), &[1]);
    assert_eq!(d.chain_fdiffs(), &[1]);
    assert_eq!(d.decode_targets(), 3);
    assert_eq!((d.dti(0), d.dti(1), d.dti(2), d.dti(3)), (D, N, N, N));
    assert_eq!(
        d.resolution,
        Some(RenderResolution {
            width: 640,
            height: 360
        })
    );
    assert_eq!(s, before, "a descriptor without a structure keeps it");

    // Every template id of the table, one frame each: (S, T) as in its rows.
    for (id, layers) in [
        (1u8, (0, 0)),
        (2, (0, 0)),
        (3, (0, 1)),
        (4, (0, 2)),
        (5, (0, 2)),
    ] {
        let d = Av1Descriptor::parse(&mandatory(true, true, id, 7), &mut s).expect("valid");
        assert_eq!((d.spatial_id, d.temporal_id), layers, "template {id}");
        assert_eq!(d.frame_number, 7);
    }
}

/// A.10.2.1: the L1T3 structure, template by template, as the table has it.
#[test]
fn a10_2_1_l1t3_structure() {
    let dd = l1t3_keyframe();
    assert_eq!(dd.len(), 20);
    let mut s = Av1Structure::new();
    assert!(!s.is_known());
    let d = Av1Descriptor::parse(&dd, &mut s).expect("valid");
    assert!(d.start_of_frame && d.end_of_frame);
    assert!(d.structure_present && d.starts_keyframe());
    assert_eq!((d.template_id, d.frame_number), (1, 100));
    assert_eq!((d.spatial_id, d.temporal_id), (0, 0));
    // A.4: a structure without a bitmask makes every decode target active.
    assert_eq!(d.active_decode_targets, Some(0b111));
    assert_eq!((d.dti(0), d.dti(1), d.dti(2)), (S, S, S));
    assert_eq!(d.fdiffs(), &[] as &[u16]);
    assert_eq!(d.chain_fdiffs(), &[0]);

    assert!(s.is_known());
    assert_eq!(s.template_id_offset(), 1);
    assert_eq!(s.decode_targets(), 3);
    assert_eq!((s.spatial_layers(), s.temporal_layers()), (1, 3));
    assert_eq!(s.chain_count(), 1);
    assert_eq!(
        (0..4).map(|dt| s.protected_by(dt)).collect::<Vec<_>>(),
        [Some(0), Some(0), Some(0), None]
    );
    // 30 fps needs up to T2, 15 fps up to T1, 7.5 fps only T0.
    assert_eq!(
        (0..4)
            .map(|dt| s.decode_target_layer(dt))
            .collect::<Vec<_>>(),
        [Some((0, 2)), Some((0, 1)), Some((0, 0)), None]
    );
    assert_eq!(
        s.resolutions(),
        &[RenderResolution {
            width: 640,
            height: 360
        }]
    );

    // The rows of the table.
    let table: [Row<1, 3>; 5] = [
        (1, 0, 0, &[], [0], [S, S, S]),
        (2, 0, 0, &[4], [4], [S, S, S]),
        (3, 0, 1, &[2], [2], [S, D, N]),
        (4, 0, 2, &[1], [1], [D, N, N]),
        (5, 0, 2, &[1], [3], [D, N, N]),
    ];
    assert_rows(&s, &table);
    for (idx, ..) in table {
        assert_eq!(s.template(idx).expect("in the structure").dti(3), N);
    }
}

/// A.10.2.2: the L3T3 full SVC structure: 15 templates over 3 spatial and 3 temporal layers,
/// 9 decode targets, 3 chains.
#[test]
fn a10_2_2_l3t3_full_svc_structure() {
    let dd = l3t3_keyframe();
    assert_eq!(dd.len(), L3T3_BITS.div_ceil(8));
    let mut s = Av1Structure::new();
    let d = Av1Descriptor::parse(&dd, &mut s).expect("valid");
    assert!(d.start_of_frame && !d.end_of_frame && d.starts_keyframe());
    assert_eq!((d.template_id, d.frame_number), (1, 1000));
    assert_eq!((d.spatial_id, d.temporal_id), (0, 0));
    assert_eq!(d.active_decode_targets, Some(0x1ff));
    assert_eq!(d.chain_fdiffs(), &[0, 0, 0]);
    assert_eq!(
        d.resolution,
        Some(RenderResolution {
            width: 320,
            height: 180
        })
    );

    assert_eq!((s.spatial_layers(), s.temporal_layers()), (3, 3));
    assert_eq!((s.decode_targets(), s.chain_count()), (9, 3));
    assert_eq!(
        (0..9).map(|dt| s.protected_by(dt)).collect::<Vec<_>>(),
        [2, 2, 2, 1, 1, 1, 0, 0, 0].map(Some)
    );
    // HD is S2, VGA S1, QVGA S0; 30 fps T2, 15 fps T1, 7.5 fps T0.
    let layers: Vec<_> = (0..9).map(|dt| s.decode_target_layer(dt)).collect();
    assert_eq!(
        layers,
        [
            (2, 2),
            (2, 1),
            (2, 0),
            (1, 2),
            (1, 1),
            (1, 0),
            (0, 2),
            (0, 1),
            (0, 0)
        ]
        .map(Some)
    );
    assert_eq!(
        s.resolutions(),
        &[(320, 180), (640, 360), (1280, 720)]
            .map(|(width, height)| RenderResolution { width, height })
    );

    // The rows of the table.
    let table: [Row<3, 9>; 15] = [
        (1, 0, 0, &[], [0, 0, 0], [S, S, S, S, S, S, S, S, S]),
        (2, 0, 0, &[12], [12, 11, 10], [R, R, R, R, R, R, S, S, S]),
        (3, 0, 1, &[6], [6, 5, 4], [R, R, N, R, R, N, S, D, N]),
        (4, 0, 2, &[3], [3, 2, 1], [R, N, N, R, N, N, D, N, N]),
        (5, 0, 2, &[3], [9, 8, 7], [R, N, N, R, N, N, D, N, N]),
        (6, 1, 0, &[1], [1, 1, 1], [S, S, S, S, S, S, N, N, N]),
        (7, 1, 0, &[12, 1], [1, 1, 1], [R, R, R, S, S, S, N, N, N]),
        (8, 1, 1, &[6, 1], [7, 6, 5], [R, R, N, S, D, N, N, N, N]),
        (9, 1, 2, &[3, 1], [4, 3, 2], [R, N, N, D, N, N, N, N, N]),
        (10, 1, 2, &[3, 1], [10, 9, 8], [R, N, N, D, N, N, N, N, N]),
        (11, 2, 0, &[1], [2, 1, 1], [S, S, S, N, N, N, N, N, N]),
        (12, 2, 0, &[12, 1], [2, 1, 1], [S, S, S, N, N, N, N, N, N]),
        (13, 2, 1, &[6, 1], [8, 7, 6], [S, D, N, N, N, N, N, N, N]),
        (14, 2, 2, &[3, 1], [5, 4, 3], [D, N, N, N, N, N, N, N, N]),
        (15, 2, 2, &[3, 1], [11, 10, 9], [D, N, N, N, N, N, N, N, N]),
    ];
    assert_rows(&s, &table);

    // A later packet of a VGA frame at 30 fps only (template 9): S1 T2, its resolution.
    let d = Av1Descriptor::parse(&mandatory(false, true, 9, 1003), &mut s).expect("valid");
    assert_eq!((d.spatial_id, d.temporal_id), (1, 2));
    assert_eq!(d.fdiffs(), &[3, 1]);
    assert_eq!(d.chain_fdiffs(), &[4, 3, 2]);
    assert_eq!(
        (0..9).map(|dt| d.dti(dt)).collect::<Vec<_>>(),
        [R, N, N, D, N, N, N, N, N]
    );
    assert_eq!(
        d.resolution,
        Some(RenderResolution {
            width: 640,
            height: 360
        })
    );
    assert!(!d.starts_keyframe());
}

/// A.8.2 `frame_dependency_definition`: a template index at or past TemplateCnt is an error,
/// and so is any template before a structure is known.
#[test]
fn a8_2_template_id_outside_the_structure_is_an_error() {
    let mut none = Av1Structure::new();
    assert_eq!(
        Av1Descriptor::parse(&mandatory(true, true, 1, 5), &mut none),
        Err(CodecError::MissingStructure)
    );
    // The extended form needs DtCnt for its bitmask: also missing.
    let active = bits("1 1 000001 0000000000000101  0 1 0 0 0  1");
    assert_eq!(
        Av1Descriptor::parse(&active, &mut none),
        Err(CodecError::MissingStructure)
    );
    assert_eq!(none, Av1Structure::new());

    // L1T3 at offset 1 has ids 1..=5.
    let mut s = l1t3_structure();
    let before = s.clone();
    for id in [0u8, 6, 7, 33, 63] {
        assert_eq!(
            Av1Descriptor::parse(&mandatory(true, false, id, 200), &mut s),
            Err(CodecError::UnknownTemplate),
            "template {id}"
        );
        assert!(s.template(id).is_none());
    }
    // The same through the extended form (no custom fields).
    let extended = bits("1 0 000110 0000000011001000  0 0 0 0 0");
    assert_eq!(extended.len(), 4);
    assert_eq!(
        Av1Descriptor::parse(&extended, &mut s),
        Err(CodecError::UnknownTemplate)
    );
    assert_eq!(s, before);

    // A.8.3: ids wrap modulo 64 from template_id_offset: offset 62 gives 62, 63, 0, 1, 2.
    let mut s = Av1Structure::new();
    let d = Av1Descriptor::parse(&l1t3_keyframe_at(62), &mut s).expect("valid");
    assert_eq!((d.template_id, d.temporal_id), (62, 0));
    for (id, tid) in [(62u8, 0), (63, 0), (0, 1), (1, 2), (2, 2)] {
        let d = Av1Descriptor::parse(&mandatory(false, false, id, 9), &mut s).expect("valid");
        assert_eq!(d.temporal_id, tid, "template {id}");
    }
    for id in [3u8, 61] {
        assert_eq!(
            Av1Descriptor::parse(&mandatory(false, false, id, 9), &mut s),
            Err(CodecError::UnknownTemplate)
        );
    }
}

/// A.8.3 template_id_offset: a new structure replaces the old one, whose ids then no longer
/// resolve; a packet with a structure that fails leaves the old structure in place.
#[test]
fn a8_3_new_structure_replaces_the_old_only_when_it_parses() {
    let mut s = l1t3_structure();
    let d = Av1Descriptor::parse(&l1t3_keyframe_at(10), &mut s).expect("valid");
    assert!(d.starts_keyframe());
    assert_eq!(s.template_id_offset(), 10);
    assert_eq!(
        Av1Descriptor::parse(&mandatory(true, true, 1, 0), &mut s),
        Err(CodecError::UnknownTemplate)
    );
    assert_eq!(
        Av1Descriptor::parse(&mandatory(true, true, 12, 0), &mut s)
            .expect("valid")
            .temporal_id,
        1
    );

    // A structure at offset 20 whose own frame names template 19, outside it: refused whole.
    let before = s.clone();
    let mut bad = l1t3_keyframe_at(20);
    bad[0] = (bad[0] & 0xc0) | 19;
    assert_eq!(
        Av1Descriptor::parse(&bad, &mut s),
        Err(CodecError::UnknownTemplate)
    );
    assert_eq!(s, before);

    // L1T3 to L3T3 (both at offset 1): template 9 now exists, as S1 T2.
    Av1Descriptor::parse(&l3t3_keyframe(), &mut s).expect("valid");
    let d = Av1Descriptor::parse(&mandatory(true, false, 9, 1), &mut s).expect("valid");
    assert_eq!((d.spatial_id, d.temporal_id, d.decode_targets()), (1, 2, 9));
}

/// Every prefix of a descriptor is an error (never a panic), and leaves the structure as it was.
#[test]
fn a8_2_truncated_at_every_length() {
    for (name, dd) in [("L1T3", l1t3_keyframe()), ("L3T3", l3t3_keyframe())] {
        for known in [Av1Structure::new(), l1t3_structure()] {
            let mut s = known.clone();
            assert_eq!(
                Av1Descriptor::parse(&[], &mut s),
                Err(CodecError::Empty),
                "{name}"
            );
            for len in 1..dd.len() {
                let got = Av1Descriptor::parse(&dd[..len], &mut s);
                let want = match len {
                    1 | 2 => Err(CodecError::Truncated),
                    // The mandatory fields alone are a whole descriptor, naming template 1.
                    3 if known.is_known() => Ok(()),
                    3 => Err(CodecError::MissingStructure),
                    _ => Err(CodecError::Truncated),
                };
                assert_eq!(got.map(|_| ()), want, "{name} len {len}");
                assert_eq!(s, known, "{name} len {len}");
            }
            assert!(Av1Descriptor::parse(&dd, &mut s).is_ok(), "{name}");
        }
    }

    // A packet referring to a template, with every custom field: each prefix past the
    // mandatory bytes is short.
    let mut s = l1t3_structure();
    let dd = custom_fields_descriptor();
    for len in 4..dd.len() {
        assert_eq!(
            Av1Descriptor::parse(&dd[..len], &mut s),
            Err(CodecError::Truncated),
            "len {len}"
        );
    }
}

/// A frame of the L1T3 stream with every extended field after the mandatory ones.
fn custom_fields_descriptor() -> Vec<u8> {
    bits(concat!(
        "1",                // start_of_frame
        "0",                // end_of_frame
        "000010",           // frame_dependency_template_id = 2 (S0 T0)
        "0000000001101000", // frame_number = 104
        "0",                // template_dependency_structure_present_flag
        "1",                // active_decode_targets_present_flag
        "1",                // custom_dtis_flag
        "1",                // custom_fdiffs_flag
        "1",                // custom_chains_flag
        "011",              // active_decode_targets_bitmask (DtCnt = 3 bits): 15 and 30 fps
        "11 11 10",         // frame_dti: R R S
        "01 0011",          // next_fdiff_size = 1, fdiff_minus_one = 3: 4
        "10 00001111",      // next_fdiff_size = 2, fdiff_minus_one = 15: 16
        "11 000100000000",  // next_fdiff_size = 3, fdiff_minus_one = 256: 257
        "00",               // next_fdiff_size = 0: no more
        "00000110",         // frame_chain_fdiff[0] = 6; 2 bits of zero_padding follow
    ))
}

/// A.8.2 `extended_descriptor_fields` and the frame's custom DTIs, fdiffs (every
/// next_fdiff_size) and chains, which override the template's.
#[test]
fn a8_2_custom_dtis_fdiffs_and_chains_override_the_template() {
    let mut s = l1t3_structure();
    let before = s.clone();
    let dd = custom_fields_descriptor();
    assert_eq!(dd.len(), 10);
    let d = Av1Descriptor::parse(&dd, &mut s).expect("valid");
    assert!(d.start_of_frame && !d.end_of_frame);
    assert_eq!((d.template_id, d.frame_number), (2, 104));
    assert!(!d.structure_present && !d.starts_keyframe());
    assert!(d.active_decode_targets_present && d.custom_dtis && d.custom_fdiffs && d.custom_chains);
    assert_eq!(d.active_decode_targets, Some(0b011));
    assert_eq!((d.spatial_id, d.temporal_id), (0, 0));
    assert_eq!((d.dti(0), d.dti(1), d.dti(2)), (R, R, S));
    assert_eq!(d.fdiffs(), &[4, 16, 257]);
    assert_eq!(d.chain_fdiffs(), &[6]);
    assert_eq!(s, before);

    // Without the custom flags the same template gives the table's values.
    let plain = bits("1 0 000010 0000000001101000  0 0 0 0 0  000");
    let d = Av1Descriptor::parse(&plain, &mut s).expect("valid");
    assert_eq!((d.dti(0), d.dti(1), d.dti(2)), (S, S, S));
    assert_eq!((d.fdiffs(), d.chain_fdiffs()), (&[4u16][..], &[4u8][..]));
    assert_eq!(d.active_decode_targets, None);

    // Custom fdiffs may be none at all.
    let none = bits("1 0 000010 0000000001101000  0 0 0 1 0  00");
    let d = Av1Descriptor::parse(&none, &mut s).expect("valid");
    assert_eq!(d.fdiffs(), &[] as &[u16]);
}

/// A.4: with a structure, all decode targets are active unless the bitmask follows it.
#[test]
fn a4_structure_sets_every_target_active_unless_a_bitmask_follows() {
    // One template (S0 T0), 2 decode targets, no chains, no resolutions.
    let structure = concat!(
        "000000", // template_id_offset = 0
        "00001",  // dt_cnt_minus_one = 1
        "11",     // next_layer_idc: one template
        "10 10",  // template_dti: S S
        "0",      // template 0: no fdiffs
        "0",      // chain_cnt = ns(3) = 0 (one bit: w = 2, m = 1)
        "0",      // resolutions_present_flag
    );
    let mut s = Av1Structure::new();
    let implicit = bits(&format!(
        "1 1 000000 0000000000000001  1 0 0 0 0 {structure}"
    ));
    let d = Av1Descriptor::parse(&implicit, &mut s).expect("valid");
    assert_eq!(d.active_decode_targets, Some(0b11));
    assert!(!d.active_decode_targets_present);
    assert_eq!((s.chain_count(), s.protected_by(0)), (0, None));
    assert!(s.resolutions().is_empty());
    assert_eq!(d.chain_fdiffs(), &[] as &[u8]);
    assert_eq!(d.resolution, None);

    let explicit = bits(&format!(
        "1 1 000000 0000000000000001  1 1 0 0 0 {structure} 01"
    ));
    let d = Av1Descriptor::parse(&explicit, &mut s).expect("valid");
    assert!(d.active_decode_targets_present);
    assert_eq!(d.active_decode_targets, Some(0b01));

    // The bitmask alone, against the known structure.
    let alone = bits("0 1 000000 0000000000000010  0 1 0 0 0  10");
    let d = Av1Descriptor::parse(&alone, &mut s).expect("valid");
    assert_eq!(d.active_decode_targets, Some(0b10));
}

/// The bounds of this parser's fixed arrays: 64 templates, 32 decode targets and chains, 8
/// spatial and temporal layers, 8 frame differences. One past each is an error.
#[test]
fn a8_2_structure_at_and_past_the_limits() {
    let header = "1 1 000000 0000000000000000  1 0 0 0 0  000000";
    let parse = |tail: String| {
        let mut s = Av1Structure::new();
        Av1Descriptor::parse(&bits(&format!("{header} {tail}")), &mut s).map(|d| (d, s))
    };
    // 64 templates of S0T0 (63 x "same", then "last"), 1 decode target, nothing else.
    let (_, s) = parse(format!(
        "00000 {}11 {} {} 0 0",
        "00".repeat(63),
        "10".repeat(64),
        "0".repeat(64)
    ))
    .expect("64 templates");
    assert_eq!(s.templates().len(), MAX_TEMPLATES);
    assert!(s.template(63).is_some());
    // A 65th.
    assert_eq!(
        parse(format!("00000 {}", "00".repeat(64))).map(|_| ()),
        Err(CodecError::TooManyTemplates)
    );

    // Temporal ids 0..=7 (idc 1 seven times), then one more.
    let (_, s) = parse(format!(
        "00000 {}11 {} {} 0 0",
        "01".repeat(7),
        "10".repeat(8),
        "0".repeat(8)
    ))
    .expect("8 temporal layers");
    assert_eq!(
        (s.temporal_layers(), s.decode_target_layer(0)),
        (8, Some((0, 7)))
    );
    assert_eq!(
        parse(format!("00000 {}", "01".repeat(8))).map(|_| ()),
        Err(CodecError::TooManyLayers)
    );
    // Spatial ids 0..=7 with a resolution each, then one more.
    let resolutions: String = (1..=8u32)
        .map(|i| format!("{:016b}{:016b}", i * 16 - 1, i * 9 - 1))
        .collect();
    let (d, s) = parse(format!(
        "00000 {}11 {} {} 0 1 {resolutions}",
        "10".repeat(7),
        "10".repeat(8),
        "0".repeat(8)
    ))
    .expect("8 spatial layers");
    assert_eq!(s.spatial_layers(), 8);
    assert_eq!(
        s.resolutions()[7],
        RenderResolution {
            width: 128,
            height: 72
        }
    );
    assert_eq!(d.resolution.map(|r| r.width), Some(16));
    assert_eq!(
        parse(format!("00000 {}", "10".repeat(8))).map(|_| ()),
        Err(CodecError::TooManyLayers)
    );

    // 8 fdiffs in the one template, then 9.
    let fdiffs = |n: usize| format!("{}0", "1 0001 ".repeat(n));
    let (d, _) = parse(format!("00000 11 10 {} 0 0", fdiffs(8))).expect("8 fdiffs");
    assert_eq!(d.fdiffs(), &[2; 8]);
    assert_eq!(
        parse(format!("00000 11 10 {} 0 0", fdiffs(9))).map(|_| ()),
        Err(CodecError::TooManyReferences)
    );
    // And a frame's own: 9 custom fdiffs against the L1T3 structure.
    let mut s = l1t3_structure();
    let custom = bits(&format!(
        "1 0 000001 0000000000000001  0 0 0 1 0  {}00",
        "01 0000 ".repeat(MAX_FDIFFS + 1)
    ));
    assert_eq!(
        Av1Descriptor::parse(&custom, &mut s),
        Err(CodecError::TooManyReferences)
    );

    // 32 decode targets, each protected by its own chain (chain_cnt = ns(33) = 32: "111111",
    // decode_target_protected_by = ns(32): 5 bits each), chain fdiffs 0..=15 and a 32-bit mask.
    let protected: String = (0..32).map(|dt| format!("{dt:05b}")).collect();
    let chains: String = (0..32).map(|c| format!("{:04b}", c % 16)).collect();
    let (d, s) = parse(format!(
        "11111 11 {} 0 111111 {protected} {chains} 0",
        "11".repeat(32)
    ))
    .expect("32 decode targets");
    assert_eq!((s.decode_targets(), s.chain_count()), (32, 32));
    assert_eq!(d.active_decode_targets, Some(u32::MAX));
    assert_eq!(s.protected_by(31), Some(31));
    assert_eq!(d.chain_fdiffs().len(), 32);
    assert_eq!(d.chain_fdiffs()[17], 1);
    assert_eq!((d.dti(31), d.dti(32)), (R, N));
    let t = s.template(0).expect("template 0");
    assert_eq!(
        (t.chain_fdiff(15), t.chain_fdiff(31), t.chain_fdiff(32)),
        (15, 15, 0)
    );
    let mask = bits(&format!(
        "0 0 000000 0000000000000001  0 1 0 0 1 {:032b} {}",
        0x8000_0001u32,
        "00000001".repeat(32)
    ));
    let mut s = s;
    let d = Av1Descriptor::parse(&mask, &mut s).expect("valid");
    assert_eq!(d.active_decode_targets, Some(0x8000_0001));
    assert_eq!(d.chain_fdiffs(), &[1; 32]);
}

/// zero_padding is ignored (A.8.3), whatever it holds; nothing is read past the fields.
#[test]
fn a8_3_zero_padding_is_ignored() {
    let mut s = l1t3_structure();
    let mut dd = l1t3_keyframe();
    dd.extend_from_slice(&[0, 0, 0]);
    let d = Av1Descriptor::parse(&dd, &mut s).expect("valid");
    assert!(d.starts_keyframe());
    let mut junk = mandatory(true, true, 3, 1);
    junk.extend_from_slice(&[0x07, 0xff]); // flags 0, then non-zero padding
    let d = Av1Descriptor::parse(&junk, &mut s).expect("valid");
    assert_eq!(d.temporal_id, 1);
}

/// A keyframe's descriptor as Chrome 118 sent it for single-layer AV1 (a capture published with
/// libre's DD tests): two S0T0 templates, one decode target, no chains, 640x480.
#[test]
fn a8_2_keyframe_descriptor_as_chrome_sends_it() {
    let dd = [
        0x80, 0x00, 0x01, 0x80, 0x00, 0x3a, 0x40, 0x81, 0x3f, 0x80, 0xef, 0x80,
    ];
    // 1 0 000000 | 0000000000000001 | 10000 | 000000 00000 | 00 11 | 10 10 | 0 | 1 0000 0 | 0 | 1
    // S E id=0     frame_number=1     T=1     offset dt_cnt  layers  dtis   fdiffs        chains res
    let mut s = Av1Structure::new();
    let d = Av1Descriptor::parse(&dd, &mut s).expect("valid");
    assert!(d.start_of_frame && !d.end_of_frame && d.starts_keyframe());
    assert_eq!((d.template_id, d.frame_number), (0, 1));
    assert_eq!(d.active_decode_targets, Some(1));
    assert_eq!(
        (s.templates().len(), s.decode_targets(), s.chain_count()),
        (2, 1, 0)
    );
    assert_eq!((s.spatial_layers(), s.temporal_layers()), (1, 1));
    let t = s.template(1).expect("template 1");
    assert_eq!((t.fdiffs(), t.dti(0)), (&[1u8][..], S));
    assert_eq!(
        s.resolutions(),
        &[RenderResolution {
            width: 640,
            height: 480
        }]
    );
    // The delta frames after it: 3 bytes naming template 1.
    let d = Av1Descriptor::parse(&[0xc1, 0x00, 0x02], &mut s).expect("valid");
    assert_eq!(
        (d.template_id, d.frame_number, d.fdiffs()),
        (1, 2, &[1u16][..])
    );
}

/// The byte vectors benches and integration tests take from `sluice_testutil::av1` are the ones the
/// annotated builders above make.
#[test]
fn the_shared_byte_vectors_are_the_annotated_ones() {
    use sluice_testutil::av1::{CUSTOM, FRAME, L1T3_KEYFRAME, L3T3_KEYFRAME};
    assert_eq!(l1t3_keyframe(), L1T3_KEYFRAME);
    assert_eq!(l3t3_keyframe(), L3T3_KEYFRAME);
    assert_eq!(mandatory(false, true, 4, 101), FRAME);
    assert_eq!(custom_fields_descriptor(), CUSTOM);
}
