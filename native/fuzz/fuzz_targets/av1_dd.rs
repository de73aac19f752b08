#![no_main]
//! Parses arbitrary bytes as AV1 Dependency Descriptors against the structure the earlier ones
//! left: the first byte splits the rest into a first descriptor (often bringing a structure) and
//! a second one, which is also parsed as its 3 mandatory bytes (a frame naming a template).

use libfuzzer_sys::fuzz_target;
use sluice_core::codec::av1::{
    Av1Descriptor, Av1Structure, MAX_FDIFFS, MAX_SPATIAL_LAYERS, MAX_TEMPLATES, MAX_TEMPORAL_LAYERS,
};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = rest.split_at(usize::from(split).min(rest.len()));
    let mut s = Av1Structure::new();
    for dd in [first, second, second.get(..3).unwrap_or(second)] {
        let before = s.clone();
        match Av1Descriptor::parse(dd, &mut s) {
            Ok(d) => {
                if !d.structure_present {
                    assert_eq!(s, before);
                }
                let t = s
                    .template(d.template_id)
                    .expect("resolved through a template");
                assert_eq!(
                    (t.spatial_id(), t.temporal_id()),
                    (d.spatial_id, d.temporal_id)
                );
                assert!(usize::from(s.spatial_layers()) <= MAX_SPATIAL_LAYERS);
                assert!(usize::from(s.temporal_layers()) <= MAX_TEMPORAL_LAYERS);
                assert!(s.templates().len() <= MAX_TEMPLATES);
                assert!(d.fdiffs().len() <= MAX_FDIFFS);
                assert_eq!(d.chain_fdiffs().len(), usize::from(s.chain_count()));
                assert_eq!(d.decode_targets(), s.decode_targets());
                if let Some(mask) = d.active_decode_targets {
                    assert_eq!(u64::from(mask) >> d.decode_targets(), 0);
                }
                for dt in 0..=usize::from(d.decode_targets()) {
                    let _ = (d.dti(dt), s.protected_by(dt), s.decode_target_layer(dt));
                }
                let _ = (d.starts_keyframe(), d.resolution, s.resolutions());
            }
            Err(_) => assert_eq!(s, before),
        }
    }
});
