//! The Dependency Descriptor RTP header extension of the AV1 RTP payload format (AV1 RTP spec,
//! Appendix A), parsed far enough for a selective forwarder: which frame a packet belongs to, its
//! spatial and temporal layer, its Decode Target Indications, frame and chain differences, and the
//! active decode targets.
//!
//! The descriptor is not in the payload: it is the data of the RFC 8285 element whose ID the SDP
//! maps to [`DEPENDENCY_DESCRIPTOR_URI`] ([`crate::rtp::RtpView::extension`]). Most packets carry
//! only the 3 mandatory bytes and name a frame dependency template; the templates come in the
//! template dependency structure, which the first packet of a coded video sequence (a keyframe)
//! carries. So parsing takes the stream's last [`Av1Structure`] and replaces it when the packet
//! brings a new one.
//!
//! ```text
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3
//! +-+-+-----------+-------------------------------+
//! |S|E|template_id|         frame_number          |  mandatory_descriptor_fields (A.8.2)
//! +-+-+-+-+-+-----+-------------------------------+
//! |T|A|D|F|C| template_dependency_structure (T)   |  extended_descriptor_fields, when the
//! +-+-+-+-+-+                                     |  element is longer than 3 bytes
//! | active_decode_targets_bitmask (A; DtCnt bits) |
//! | frame_dtis (D) | frame_fdiffs (F) | frame_chains (C) | zero_padding
//! +-----------------------------------------------+
//! S: start_of_frame  E: end_of_frame  T: template_dependency_structure_present_flag
//! A: active_decode_targets_present_flag  D/F/C: custom_dtis/fdiffs/chains_flag
//! ```
//!
//! Fields are bit-packed, most significant bit first (`f(n)`), and two are `ns(n)` (A.8.2). Every
//! read is bounds-checked; malformed input is a [`CodecError`], never a panic, and a descriptor
//! that fails leaves the structure it was given as it was. The structure is bounded (at most
//! [`MAX_TEMPLATES`] templates, [`MAX_DECODE_TARGETS`] decode targets, [`MAX_SPATIAL_LAYERS`]
//! spatial and [`MAX_TEMPORAL_LAYERS`] temporal layers, [`MAX_FDIFFS`] frame differences per
//! frame) and lives in fixed-size arrays: nothing here allocates.

use super::CodecError;

/// The `a=extmap` URI of the extension (A.9).
pub const DEPENDENCY_DESCRIPTOR_URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// frame_dependency_template_id is 6 bits: at most 64 templates can be told apart.
pub const MAX_TEMPLATES: usize = 64;
/// dt_cnt_minus_one is 5 bits: 1..=32 decode targets.
pub const MAX_DECODE_TARGETS: usize = 32;
/// chain_cnt is ns(DtCnt + 1): at most one chain per decode target.
pub const MAX_CHAINS: usize = MAX_DECODE_TARGETS;
/// Spatial ids 0..=7 (AV1 has 4, VP9 8); a structure with more is refused.
pub const MAX_SPATIAL_LAYERS: usize = 8;
/// Temporal ids 0..=7 (AV1's temporal_id is 3 bits); a structure with more is refused.
pub const MAX_TEMPORAL_LAYERS: usize = 8;
/// Frame differences (references) per template or frame; AV1 references at most 7 frames.
pub const MAX_FDIFFS: usize = 8;

/// Bytes of the mandatory fields; a longer element has the extended fields.
const MANDATORY_LEN: usize = 3;

/// A frame's relation to one decode target (Table A.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dti {
    /// `-`: no payload for this decode target.
    NotPresent = 0,
    /// `D`: in the decode target, and no later frame of it refers to this one.
    Discardable = 1,
    /// `S`: in the decode target, and a forwarder may start sending it here (A.7).
    Switch = 2,
    /// `R`: in the decode target, neither discardable nor a switch point.
    Required = 3,
}

impl Dti {
    /// The DTI of decode target `dt` in a packed set: 2 bits per target, target 0 lowest.
    fn of(packed: u64, dt: usize) -> Dti {
        if dt >= MAX_DECODE_TARGETS {
            return Dti::NotPresent;
        }
        match (packed >> (2 * dt)) & 0b11 {
            0 => Dti::NotPresent,
            1 => Dti::Discardable,
            2 => Dti::Switch,
            _ => Dti::Required,
        }
    }
}

/// The largest frame of one spatial layer (max_render_width/height_minus_1 + 1: 1..=65536 each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenderResolution {
    pub width: u32,
    pub height: u32,
}

/// One frame dependency template (A.8.1): a frame naming it has these values unless its custom
/// flags say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Av1Template {
    spatial_id: u8,
    temporal_id: u8,
    fdiff_count: u8,
    /// TemplateFdiff: 1..=16 each.
    fdiffs: [u8; MAX_FDIFFS],
    /// template_dti, 2 bits per decode target, target 0 in the low bits.
    dtis: u64,
    /// template_chain_fdiff, 4 bits per chain (0..=15), chain 0 in the low nibble of byte 0.
    chain_fdiffs: [u8; MAX_CHAINS / 2],
}

impl Av1Template {
    const EMPTY: Av1Template = Av1Template {
        spatial_id: 0,
        temporal_id: 0,
        fdiff_count: 0,
        fdiffs: [0; MAX_FDIFFS],
        dtis: 0,
        chain_fdiffs: [0; MAX_CHAINS / 2],
    };

    pub fn spatial_id(&self) -> u8 {
        self.spatial_id
    }

    pub fn temporal_id(&self) -> u8 {
        self.temporal_id
    }

    /// How many frames back (in frame_number) each frame this template's frames refer to is.
    pub fn fdiffs(&self) -> &[u8] {
        &self.fdiffs[..usize::from(self.fdiff_count)]
    }

    /// The template's indication for decode target `dt`; [`Dti::NotPresent`] past the structure's
    /// decode targets.
    pub fn dti(&self, dt: usize) -> Dti {
        Dti::of(self.dtis, dt)
    }

    /// frame_chain_fdiff of chain `chain` for this template's frames; 0 past the structure's chains.
    pub fn chain_fdiff(&self, chain: usize) -> u8 {
        match self.chain_fdiffs.get(chain / 2) {
            Some(b) if chain.is_multiple_of(2) => b & 0x0f,
            Some(b) => b >> 4,
            None => 0,
        }
    }
}

/// A stream's template dependency structure (A.8.2 `template_dependency_structure`), as the last
/// packet carrying one set it. Fixed-size, no heap; [`Av1Structure::new`] is the empty one a
/// stream starts with, before its first keyframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Structure {
    template_id_offset: u8,
    /// TemplateCnt; 0 while no structure is known.
    template_count: u8,
    /// DtCnt, 1..=32 once known.
    decode_targets: u8,
    chain_count: u8,
    max_spatial_id: u8,
    max_temporal_id: u8,
    has_resolutions: bool,
    /// decode_target_protected_by, per decode target.
    protected_by: [u8; MAX_DECODE_TARGETS],
    /// DecodeTargetSpatialId / DecodeTargetTemporalId, per decode target.
    target_spatial_id: [u8; MAX_DECODE_TARGETS],
    target_temporal_id: [u8; MAX_DECODE_TARGETS],
    resolutions: [RenderResolution; MAX_SPATIAL_LAYERS],
    templates: [Av1Template; MAX_TEMPLATES],
}

impl Default for Av1Structure {
    fn default() -> Self {
        Self::new()
    }
}

impl Av1Structure {
    /// No structure known yet: every descriptor fails with [`CodecError::MissingStructure`] until
    /// one carrying a structure parses.
    pub const fn new() -> Self {
        Av1Structure {
            template_id_offset: 0,
            template_count: 0,
            decode_targets: 0,
            chain_count: 0,
            max_spatial_id: 0,
            max_temporal_id: 0,
            has_resolutions: false,
            protected_by: [0; MAX_DECODE_TARGETS],
            target_spatial_id: [0; MAX_DECODE_TARGETS],
            target_temporal_id: [0; MAX_DECODE_TARGETS],
            resolutions: [RenderResolution {
                width: 0,
                height: 0,
            }; MAX_SPATIAL_LAYERS],
            templates: [Av1Template::EMPTY; MAX_TEMPLATES],
        }
    }

    /// A structure has been received.
    pub fn is_known(&self) -> bool {
        self.template_count > 0
    }

    /// template_id_offset: the frame_dependency_template_id of template 0.
    pub fn template_id_offset(&self) -> u8 {
        self.template_id_offset
    }

    /// The templates in order (template index 0 first).
    pub fn templates(&self) -> &[Av1Template] {
        &self.templates[..usize::from(self.template_count)]
    }

    /// The template a frame_dependency_template_id names (its index is the id minus
    /// template_id_offset, modulo 64), if the structure has it.
    pub fn template(&self, template_id: u8) -> Option<&Av1Template> {
        let index = (usize::from(template_id) + MAX_TEMPLATES
            - usize::from(self.template_id_offset))
            % MAX_TEMPLATES;
        self.templates().get(index)
    }

    /// DtCnt: the number of decode targets (0 while unknown).
    pub fn decode_targets(&self) -> u8 {
        self.decode_targets
    }

    /// chain_cnt: 0 when the stream does not use chains.
    pub fn chain_count(&self) -> u8 {
        self.chain_count
    }

    /// decode_target_protected_by: the chain that protects decode target `dt`, when there are
    /// chains and such a target.
    pub fn protected_by(&self, dt: usize) -> Option<u8> {
        if self.chain_count == 0 || dt >= usize::from(self.decode_targets) {
            return None;
        }
        Some(self.protected_by[dt])
    }

    /// The (spatial, temporal) layer decode target `dt` decodes up to: the highest ids among the
    /// templates present in it (A.8.2 `decode_target_layers`).
    pub fn decode_target_layer(&self, dt: usize) -> Option<(u8, u8)> {
        if dt >= usize::from(self.decode_targets) {
            return None;
        }
        Some((self.target_spatial_id[dt], self.target_temporal_id[dt]))
    }

    /// MaxSpatialId + 1 (0 while unknown).
    pub fn spatial_layers(&self) -> u8 {
        if self.is_known() {
            self.max_spatial_id + 1
        } else {
            0
        }
    }

    /// MaxTemporalId + 1 (0 while unknown).
    pub fn temporal_layers(&self) -> u8 {
        if self.is_known() {
            self.max_temporal_id + 1
        } else {
            0
        }
    }

    /// Each spatial layer's largest frame, layer 0 first; empty when the structure had none.
    pub fn resolutions(&self) -> &[RenderResolution] {
        if self.has_resolutions {
            &self.resolutions[..usize::from(self.max_spatial_id) + 1]
        } else {
            &[]
        }
    }

    /// The template of a frame_dependency_template_id (A.8.2 `frame_dependency_definition`).
    fn lookup(&self, template_id: u8) -> Result<&Av1Template, CodecError> {
        if !self.is_known() {
            return Err(CodecError::MissingStructure);
        }
        self.template(template_id)
            .ok_or(CodecError::UnknownTemplate)
    }

    /// Reads `template_dependency_structure()` (A.8.2).
    fn read(r: &mut BitReader<'_>) -> Result<Self, CodecError> {
        let mut s = Av1Structure::new();
        s.template_id_offset = r.bits(6)? as u8;
        let dt_cnt = r.bits(5)? as usize + 1;
        s.decode_targets = dt_cnt as u8;

        // template_layers: each template's ids follow from the previous one's by next_layer_idc.
        let (mut spatial_id, mut temporal_id) = (0u8, 0u8);
        let mut count = 0usize;
        loop {
            let t = s
                .templates
                .get_mut(count)
                .ok_or(CodecError::TooManyTemplates)?;
            t.spatial_id = spatial_id;
            t.temporal_id = temporal_id;
            count += 1;
            match r.bits(2)? {
                0 => {}
                1 => {
                    temporal_id += 1;
                    if usize::from(temporal_id) >= MAX_TEMPORAL_LAYERS {
                        return Err(CodecError::TooManyLayers);
                    }
                    s.max_temporal_id = s.max_temporal_id.max(temporal_id);
                }
                2 => {
                    temporal_id = 0;
                    spatial_id += 1;
                    if usize::from(spatial_id) >= MAX_SPATIAL_LAYERS {
                        return Err(CodecError::TooManyLayers);
                    }
                }
                _ => break,
            }
        }
        s.template_count = count as u8;
        s.max_spatial_id = spatial_id;
        let templates = &mut s.templates[..count];

        // template_dtis
        for t in templates.iter_mut() {
            for dt in 0..dt_cnt {
                t.dtis |= u64::from(r.bits(2)?) << (2 * dt);
            }
        }

        // template_fdiffs: fdiff_follows_flag, then fdiff_minus_one, until the flag is 0.
        for t in templates.iter_mut() {
            while r.bits(1)? == 1 {
                let at = usize::from(t.fdiff_count);
                let slot = t.fdiffs.get_mut(at).ok_or(CodecError::TooManyReferences)?;
                *slot = r.bits(4)? as u8 + 1;
                t.fdiff_count += 1;
            }
        }

        // template_chains
        let chain_cnt = r.ns(dt_cnt as u32 + 1)? as usize;
        s.chain_count = chain_cnt as u8;
        if chain_cnt > 0 {
            for p in &mut s.protected_by[..dt_cnt] {
                *p = r.ns(chain_cnt as u32)? as u8;
            }
            for t in templates.iter_mut() {
                for chain in 0..chain_cnt {
                    let fdiff = r.bits(4)? as u8;
                    t.chain_fdiffs[chain / 2] |= fdiff << (4 * (chain % 2));
                }
            }
        }

        // decode_target_layers: derived, nothing read.
        for dt in 0..dt_cnt {
            let (mut sid, mut tid) = (0, 0);
            for t in templates.iter().filter(|t| t.dti(dt) != Dti::NotPresent) {
                sid = sid.max(t.spatial_id);
                tid = tid.max(t.temporal_id);
            }
            s.target_spatial_id[dt] = sid;
            s.target_temporal_id[dt] = tid;
        }

        // resolutions_present_flag, then render_resolutions for spatial ids 0..=MaxSpatialId.
        if r.bits(1)? == 1 {
            s.has_resolutions = true;
            for res in &mut s.resolutions[..=usize::from(spatial_id)] {
                res.width = r.bits(16)? + 1;
                res.height = r.bits(16)? + 1;
            }
        }
        Ok(s)
    }
}

/// One parsed Dependency Descriptor, resolved against the stream's structure: the frame's
/// values, whether they came from its template or its custom fields. `Copy`; parsing allocates
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Av1Descriptor {
    /// start_of_frame: the packet's payload begins a frame.
    pub start_of_frame: bool,
    /// end_of_frame: the last packet of a frame.
    pub end_of_frame: bool,
    /// frame_dependency_template_id.
    pub template_id: u8,
    /// frame_number: one more per frame in decode order, wrapping; the same in all of a frame's
    /// packets.
    pub frame_number: u16,
    /// template_dependency_structure_present_flag: the packet carried a structure, which is now
    /// the stream's (the first packet of a coded video sequence).
    pub structure_present: bool,
    /// active_decode_targets_present_flag.
    pub active_decode_targets_present: bool,
    /// custom_dtis_flag: the DTIs are the frame's own, not its template's.
    pub custom_dtis: bool,
    /// custom_fdiffs_flag: the frame differences are the frame's own.
    pub custom_fdiffs: bool,
    /// custom_chains_flag: the chain differences are the frame's own.
    pub custom_chains: bool,
    /// The active decode targets (bit i for target i) when this packet sets them (A.4): the
    /// bitmask when present, else every target when a structure is present. `None`: unchanged.
    pub active_decode_targets: Option<u32>,
    /// FrameSpatialId, from the template.
    pub spatial_id: u8,
    /// FrameTemporalId, from the template.
    pub temporal_id: u8,
    /// FrameMaxWidth/Height: the frame's spatial layer's resolution, when the structure has them.
    pub resolution: Option<RenderResolution>,
    decode_targets: u8,
    dtis: u64,
    fdiff_count: u8,
    fdiffs: [u16; MAX_FDIFFS],
    chain_count: u8,
    chain_fdiffs: [u8; MAX_CHAINS],
}

impl Av1Descriptor {
    /// Parses the extension element's data `ext` (A.8.2 `dependency_descriptor(sz)`, sz being its
    /// length) against `structure`, the stream's last. A packet that carries a structure
    /// replaces `structure` when the whole descriptor parses; on any error it is left unchanged.
    ///
    /// Errors: [`CodecError::Empty`], [`CodecError::Truncated`] (a field past the end),
    /// [`CodecError::MissingStructure`] (no structure known and the packet brings none),
    /// [`CodecError::UnknownTemplate`] (the template id is outside the structure: a new structure
    /// was lost or is late), and [`CodecError::TooManyTemplates`], [`CodecError::TooManyLayers`],
    /// [`CodecError::TooManyReferences`] past this module's bounds. zero_padding is ignored.
    #[inline]
    pub fn parse(ext: &[u8], structure: &mut Av1Structure) -> Result<Self, CodecError> {
        let (b0, frame_number) = match ext {
            [] => return Err(CodecError::Empty),
            [b0, hi, lo, ..] => (*b0, u16::from_be_bytes([*hi, *lo])),
            _ => return Err(CodecError::Truncated),
        };
        let mut d = Av1Descriptor {
            start_of_frame: b0 & 0x80 != 0,
            end_of_frame: b0 & 0x40 != 0,
            template_id: b0 & 0x3f,
            frame_number,
            structure_present: false,
            active_decode_targets_present: false,
            custom_dtis: false,
            custom_fdiffs: false,
            custom_chains: false,
            active_decode_targets: None,
            spatial_id: 0,
            temporal_id: 0,
            resolution: None,
            decode_targets: 0,
            dtis: 0,
            fdiff_count: 0,
            fdiffs: [0; MAX_FDIFFS],
            chain_count: 0,
            chain_fdiffs: [0; MAX_CHAINS],
        };
        if ext.len() == MANDATORY_LEN {
            // no_extended_descriptor_fields: everything from the template.
            d.resolve(structure.lookup(d.template_id)?, structure);
            return Ok(d);
        }

        let mut r = BitReader {
            buf: ext,
            pos: 8 * MANDATORY_LEN,
        };
        let flags = r.bits(5)?;
        d.structure_present = flags & 0b10000 != 0;
        d.active_decode_targets_present = flags & 0b01000 != 0;
        d.custom_dtis = flags & 0b00100 != 0;
        d.custom_fdiffs = flags & 0b00010 != 0;
        d.custom_chains = flags & 0b00001 != 0;

        // A new structure applies to this packet already; it is kept only if all of it parses.
        let fresh = if d.structure_present {
            Some(Av1Structure::read(&mut r)?)
        } else {
            None
        };
        let s = fresh.as_ref().unwrap_or(structure);
        if !s.is_known() {
            return Err(CodecError::MissingStructure);
        }
        let dt_cnt = usize::from(s.decode_targets);
        let all_targets = u32::MAX >> (32 - dt_cnt);
        if d.structure_present {
            d.active_decode_targets = Some(all_targets);
        }
        if d.active_decode_targets_present {
            d.active_decode_targets = Some(r.bits(dt_cnt as u32)?);
        }

        // frame_dependency_definition
        d.resolve(s.lookup(d.template_id)?, s);
        if d.custom_dtis {
            d.dtis = 0;
            for dt in 0..dt_cnt {
                d.dtis |= u64::from(r.bits(2)?) << (2 * dt);
            }
        }
        if d.custom_fdiffs {
            d.fdiff_count = 0;
            loop {
                // next_fdiff_size: the next fdiff_minus_one's size in nibbles; 0 ends the list.
                let size = r.bits(2)?;
                if size == 0 {
                    break;
                }
                let slot = d
                    .fdiffs
                    .get_mut(usize::from(d.fdiff_count))
                    .ok_or(CodecError::TooManyReferences)?;
                *slot = r.bits(4 * size)? as u16 + 1;
                d.fdiff_count += 1;
            }
        }
        if d.custom_chains {
            for c in &mut d.chain_fdiffs[..usize::from(d.chain_count)] {
                *c = r.bits(8)? as u8;
            }
        }

        if let Some(fresh) = fresh {
            *structure = fresh;
        }
        Ok(d)
    }

    /// Fills the frame's values from its template `t` of structure `s`.
    #[inline]
    fn resolve(&mut self, t: &Av1Template, s: &Av1Structure) {
        self.spatial_id = t.spatial_id;
        self.temporal_id = t.temporal_id;
        self.decode_targets = s.decode_targets;
        self.dtis = t.dtis;
        self.fdiff_count = t.fdiff_count;
        for (to, from) in self.fdiffs.iter_mut().zip(t.fdiffs()) {
            *to = u16::from(*from);
        }
        self.chain_count = s.chain_count;
        for (c, to) in self.chain_fdiffs[..usize::from(s.chain_count)]
            .iter_mut()
            .enumerate()
        {
            *to = t.chain_fdiff(c);
        }
        self.resolution = s.resolutions().get(usize::from(t.spatial_id)).copied();
    }

    /// The packet starts a frame of a new coded video sequence: it carries the structure and
    /// start_of_frame. A forwarder can switch to any decode target here, as at a keyframe.
    pub fn starts_keyframe(&self) -> bool {
        self.structure_present && self.start_of_frame
    }

    /// DtCnt of the structure the descriptor was resolved against.
    pub fn decode_targets(&self) -> u8 {
        self.decode_targets
    }

    /// The frame's indication for decode target `dt`; [`Dti::NotPresent`] past the decode targets.
    pub fn dti(&self, dt: usize) -> Dti {
        Dti::of(self.dtis, dt)
    }

    /// How many frames back (in frame_number, modulo 2^16) each frame this one refers to is.
    pub fn fdiffs(&self) -> &[u16] {
        &self.fdiffs[..usize::from(self.fdiff_count)]
    }

    /// Per chain, how many frames back the previous frame of that chain is (0: none needed).
    pub fn chain_fdiffs(&self) -> &[u8] {
        &self.chain_fdiffs[..usize::from(self.chain_count)]
    }
}

/// Reads `f(n)` and `ns(n)` (A.8.2), most significant bit first, from a bit position.
struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    /// `f(n)` for n <= 32.
    #[inline]
    fn bits(&mut self, n: u32) -> Result<u32, CodecError> {
        debug_assert!(n <= 32);
        let mut value = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = *self.buf.get(self.pos / 8).ok_or(CodecError::Truncated)?;
            let used = (self.pos % 8) as u32;
            let take = left.min(8 - used);
            let chunk = (u32::from(byte) >> (8 - used - take)) & ((1 << take) - 1);
            value = (value << take) | u64::from(chunk);
            self.pos += take as usize;
            left -= take;
        }
        Ok(value as u32)
    }

    /// `ns(n)`, n >= 1: a value in 0..n in w-1 or w bits, w being n's bit length.
    fn ns(&mut self, n: u32) -> Result<u32, CodecError> {
        let w = u32::BITS - n.leading_zeros();
        let m = (1 << w) - n;
        let v = self.bits(w - 1)?;
        if v < m {
            return Ok(v);
        }
        let extra = self.bits(1)?;
        Ok((v << 1) - m + extra)
    }
}

#[cfg(test)]
pub(crate) mod tests;
