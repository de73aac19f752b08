//! The typed values that cross the seam. Commands carry transport descriptions (fingerprints,
//! candidates) and Sources with their SIM/FID groups: Python builds them from values the bridge
//! validated once (bridge/seam.py), and each converts field by field into sluice-core's types,
//! parsing nothing again. Events come back as one class per kind of Event.

use std::net::IpAddr;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use sluice_core::domain;
use sluice_core::dtls::{self, HashAlg};
use sluice_core::ice::CandidateKind;
use sluice_core::seam::Event;
use sluice_core::stats::StatsSnapshot;

#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "bridge._native")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    #[pyo3(name = "AUDIO")]
    Audio,
    #[pyo3(name = "VIDEO")]
    Video,
}

impl From<MediaKind> for domain::MediaKind {
    fn from(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Audio => domain::MediaKind::Audio,
            MediaKind::Video => domain::MediaKind::Video,
        }
    }
}

/// RFC 8445 5.1.1 candidate types.
#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "bridge._native")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateType {
    #[pyo3(name = "HOST")]
    Host,
    #[pyo3(name = "SRFLX")]
    Srflx,
    #[pyo3(name = "PRFLX")]
    Prflx,
    #[pyo3(name = "RELAY")]
    Relay,
}

impl From<CandidateType> for CandidateKind {
    fn from(kind: CandidateType) -> Self {
        match kind {
            CandidateType::Host => CandidateKind::Host,
            CandidateType::Srflx => CandidateKind::ServerReflexive,
            CandidateType::Prflx => CandidateKind::PeerReflexive,
            CandidateType::Relay => CandidateKind::Relayed,
        }
    }
}

/// RFC 4145 4 a=setup.
#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "bridge._native")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtlsSetup {
    #[pyo3(name = "ACTIVE")]
    Active,
    #[pyo3(name = "PASSIVE")]
    Passive,
    #[pyo3(name = "ACTPASS")]
    Actpass,
}

impl From<DtlsSetup> for dtls::DtlsSetup {
    fn from(setup: DtlsSetup) -> Self {
        match setup {
            DtlsSetup::Active => dtls::DtlsSetup::Active,
            DtlsSetup::Passive => dtls::DtlsSetup::Passive,
            DtlsSetup::Actpass => dtls::DtlsSetup::Actpass,
        }
    }
}

/// The fingerprint hash functions the native DTLS supports (RFC 8122 5).
#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "bridge._native")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashFunction {
    #[pyo3(name = "SHA_1")]
    Sha1,
    #[pyo3(name = "SHA_256")]
    Sha256,
    #[pyo3(name = "SHA_384")]
    Sha384,
    #[pyo3(name = "SHA_512")]
    Sha512,
}

impl From<HashFunction> for HashAlg {
    fn from(hash: HashFunction) -> Self {
        match hash {
            HashFunction::Sha1 => HashAlg::Sha1,
            HashFunction::Sha256 => HashAlg::Sha256,
            HashFunction::Sha384 => HashAlg::Sha384,
            HashFunction::Sha512 => HashAlg::Sha512,
        }
    }
}

impl From<HashAlg> for HashFunction {
    fn from(hash: HashAlg) -> Self {
        match hash {
            HashAlg::Sha1 => HashFunction::Sha1,
            HashAlg::Sha256 => HashFunction::Sha256,
            HashAlg::Sha384 => HashFunction::Sha384,
            HashAlg::Sha512 => HashFunction::Sha512,
        }
    }
}

/// A remote DTLS fingerprint: the digest's bytes (a digest of the wrong length matches no certificate)
/// and the a=setup announced with it.
#[pyclass(frozen, get_all, eq, from_py_object, module = "bridge._native")]
#[derive(Clone, PartialEq, Eq)]
pub struct Fingerprint {
    hash: HashFunction,
    digest: Vec<u8>,
    setup: DtlsSetup,
}

#[pymethods]
impl Fingerprint {
    #[new]
    fn new(hash: HashFunction, digest: Vec<u8>, setup: DtlsSetup) -> Self {
        Fingerprint {
            hash,
            digest,
            setup,
        }
    }
}

impl Fingerprint {
    pub fn to_core(&self) -> dtls::Fingerprint {
        dtls::Fingerprint {
            hash: self.hash.into(),
            value: self.digest.clone(),
        }
    }

    pub fn setup(&self) -> dtls::DtlsSetup {
        self.setup.into()
    }
}

/// A remote ICE candidate for component 1 over UDP (the only ones the bridge can use).
#[pyclass(frozen, get_all, eq, from_py_object, module = "bridge._native")]
#[derive(Clone, PartialEq, Eq)]
pub struct Candidate {
    ip: IpAddr,
    port: u16,
    priority: u32,
    #[pyo3(name = "type")]
    kind: CandidateType,
}

#[pymethods]
impl Candidate {
    /// `ip` is an `ipaddress` address object: its packed bytes cross, never its text.
    #[new]
    fn new(
        ip: &Bound<'_, PyAny>,
        port: u16,
        priority: u32,
        r#type: CandidateType,
    ) -> PyResult<Self> {
        let not_an_address =
            || PyTypeError::new_err("ip must be an ipaddress.IPv4Address or IPv6Address");
        let packed: Vec<u8> = ip
            .getattr("packed")
            .and_then(|p| p.extract())
            .map_err(|_| not_an_address())?;
        let ip = match <[u8; 16]>::try_from(packed.as_slice()) {
            Ok(v6) => IpAddr::from(v6),
            Err(_) => {
                IpAddr::from(<[u8; 4]>::try_from(packed.as_slice()).map_err(|_| not_an_address())?)
            }
        };
        Ok(Candidate {
            ip,
            port,
            priority,
            kind: r#type,
        })
    }
}

impl Candidate {
    pub fn to_core(&self) -> domain::RemoteCandidate {
        domain::RemoteCandidate {
            addr: std::net::SocketAddr::new(self.ip, self.port),
            priority: self.priority,
            kind: self.kind.into(),
        }
    }
}

/// RFC 5576 ssrc-group semantics the packet path uses.
#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "bridge._native")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum SsrcGroupSemantics {
    #[pyo3(name = "SIM")]
    Sim,
    #[pyo3(name = "FID")]
    Fid,
}

#[pyclass(frozen, get_all, eq, from_py_object, module = "bridge._native")]
#[derive(Clone, PartialEq, Eq)]
pub struct SsrcGroup {
    semantics: SsrcGroupSemantics,
    ssrcs: Vec<u32>,
}

#[pymethods]
impl SsrcGroup {
    #[new]
    fn new(semantics: SsrcGroupSemantics, ssrcs: Vec<u32>) -> Self {
        SsrcGroup { semantics, ssrcs }
    }
}

/// A signalled Source: its kind, every SSRC it sends, its SIM and FID groups, its name.
#[pyclass(frozen, get_all, eq, from_py_object, module = "bridge._native")]
#[derive(Clone, PartialEq, Eq)]
pub struct Source {
    kind: MediaKind,
    ssrcs: Vec<u32>,
    groups: Vec<SsrcGroup>,
    name: String,
}

#[pymethods]
impl Source {
    #[new]
    fn new(kind: MediaKind, ssrcs: Vec<u32>, groups: Vec<SsrcGroup>, name: String) -> Self {
        Source {
            kind,
            ssrcs,
            groups,
            name,
        }
    }
}

impl Source {
    pub fn to_core(&self) -> domain::Source {
        domain::Source {
            kind: self.kind.into(),
            ssrcs: self.ssrcs.clone(),
            groups: self
                .groups
                .iter()
                .map(|g| domain::SsrcGroup {
                    semantics: match g.semantics {
                        SsrcGroupSemantics::Sim => domain::GroupSemantics::Sim,
                        SsrcGroupSemantics::Fid => domain::GroupSemantics::Fid,
                    },
                    ssrcs: g.ssrcs.clone(),
                })
                .collect(),
            name: self.name.clone(),
        }
    }
}

/// A payload type's codec, as far as forwarding cares (the name predates audio: RED, RFC 2198, and any
/// other audio codec are here too).
#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "bridge._native")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    #[pyo3(name = "VP8")]
    Vp8,
    #[pyo3(name = "VP9")]
    Vp9,
    #[pyo3(name = "H264")]
    H264,
    #[pyo3(name = "AV1")]
    Av1,
    #[pyo3(name = "RTX")]
    Rtx,
    #[pyo3(name = "RED")]
    Red,
    #[pyo3(name = "AUDIO")]
    Audio,
    #[pyo3(name = "OTHER")]
    Other,
}

/// One signalled payload type: 0..=127, with the payload type an RTX one retransmits.
#[pyclass(frozen, get_all, eq, from_py_object, module = "bridge._native")]
#[derive(Clone, PartialEq, Eq)]
pub struct PayloadType {
    pt: u8,
    codec: VideoCodec,
    apt: Option<u8>,
}

#[pymethods]
impl PayloadType {
    #[new]
    #[pyo3(signature = (pt, codec, apt=None))]
    fn new(pt: u8, codec: VideoCodec, apt: Option<u8>) -> PyResult<Self> {
        if pt > 127 || apt.is_some_and(|a| a > 127) {
            return Err(PyValueError::new_err("an RTP payload type is 0..=127"));
        }
        if (codec == VideoCodec::Rtx) != apt.is_some() {
            return Err(PyValueError::new_err("apt is given exactly for RTX"));
        }
        Ok(PayloadType { pt, codec, apt })
    }
}

impl PayloadType {
    pub fn to_core(&self) -> domain::PayloadType {
        let codec = match (self.codec, self.apt) {
            (VideoCodec::Vp8, _) => domain::Codec::Vp8,
            (VideoCodec::Vp9, _) => domain::Codec::Vp9,
            (VideoCodec::H264, _) => domain::Codec::H264,
            (VideoCodec::Av1, _) => domain::Codec::Av1,
            (VideoCodec::Rtx, Some(apt)) => domain::Codec::Rtx { apt },
            (VideoCodec::Red, _) => domain::Codec::Red,
            (VideoCodec::Audio, _) => domain::Codec::Audio,
            (VideoCodec::Rtx, None) | (VideoCodec::Other, _) => domain::Codec::Other,
        };
        domain::PayloadType { pt: self.pt, codec }
    }
}

/// A Transport's state as its shard reports it.
#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "bridge._native")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportState {
    #[pyo3(name = "CHECKING")]
    Checking,
    #[pyo3(name = "CONNECTED")]
    Connected,
    #[pyo3(name = "FAILED")]
    Failed,
    #[pyo3(name = "CLOSED")]
    Closed,
}

impl From<domain::TransportState> for TransportState {
    fn from(state: domain::TransportState) -> Self {
        match state {
            domain::TransportState::Checking => TransportState::Checking,
            domain::TransportState::Connected => TransportState::Connected,
            domain::TransportState::Failed => TransportState::Failed,
            domain::TransportState::Closed => TransportState::Closed,
        }
    }
}

/// Event::TransportState: a Transport changed state (`detail` says why it failed).
#[pyclass(frozen, get_all, eq, module = "bridge._native")]
#[derive(Clone, PartialEq, Eq)]
pub struct TransportStateEvent {
    transport_id: u64,
    state: TransportState,
    detail: String,
}

#[pymethods]
impl TransportStateEvent {
    #[new]
    fn new(transport_id: u64, state: TransportState, detail: String) -> Self {
        TransportStateEvent {
            transport_id,
            state,
            detail,
        }
    }
}

/// Event::Stats: the answer to a stats request, as nested dicts (see NativeBridge.request_stats).
#[pyclass(frozen, get_all, module = "bridge._native")]
pub struct StatsEvent {
    request_id: u64,
    stats: Py<PyDict>,
}

#[pymethods]
impl StatsEvent {
    #[new]
    fn new(request_id: u64, stats: Py<PyDict>) -> Self {
        StatsEvent { request_id, stats }
    }
}

/// Event::CommandFailed: a Command named an unknown Transport, or the shard refused it.
#[pyclass(frozen, get_all, eq, module = "bridge._native")]
#[derive(Clone, PartialEq, Eq)]
pub struct CommandFailedEvent {
    transport_id: u64,
    detail: String,
}

#[pymethods]
impl CommandFailedEvent {
    #[new]
    fn new(transport_id: u64, detail: String) -> Self {
        CommandFailedEvent {
            transport_id,
            detail,
        }
    }
}

/// Event::AudioLevels: one conference's senders' RFC 6464 levels over the last tick, as
/// (transport_id, ssrc, loudness 0..=127, voice, packets).
#[pyclass(frozen, get_all, eq, module = "bridge._native")]
#[derive(Clone, PartialEq, Eq)]
pub struct AudioLevelsEvent {
    router_id: u64,
    levels: Vec<(u64, u32, u8, bool, u32)>,
}

#[pymethods]
impl AudioLevelsEvent {
    #[new]
    fn new(router_id: u64, levels: Vec<(u64, u32, u8, bool, u32)>) -> Self {
        AudioLevelsEvent { router_id, levels }
    }
}

/// Event::EstimateFell: a transport's send-side estimate fell, bit/s.
#[pyclass(frozen, get_all, eq, module = "bridge._native")]
#[derive(Clone, PartialEq, Eq)]
pub struct EstimateFellEvent {
    transport_id: u64,
    bps: u64,
}

#[pymethods]
impl EstimateFellEvent {
    #[new]
    fn new(transport_id: u64, bps: u64) -> Self {
        EstimateFellEvent { transport_id, bps }
    }
}

/// Event::EstimateRose: a probe raised a transport's send-side estimate, bit/s.
#[pyclass(frozen, get_all, eq, module = "bridge._native")]
#[derive(Clone, PartialEq, Eq)]
pub struct EstimateRoseEvent {
    transport_id: u64,
    bps: u64,
}

#[pymethods]
impl EstimateRoseEvent {
    #[new]
    fn new(transport_id: u64, bps: u64) -> Self {
        EstimateRoseEvent { transport_id, bps }
    }
}

/// One Event from a shard, as the Python class of its kind.
#[derive(IntoPyObject)]
pub enum NativeEvent {
    TransportState(TransportStateEvent),
    Stats(StatsEvent),
    CommandFailed(CommandFailedEvent),
    AudioLevels(AudioLevelsEvent),
    EstimateFell(EstimateFellEvent),
    EstimateRose(EstimateRoseEvent),
}

impl NativeEvent {
    /// `stats` is the snapshot of an Event::Stats, already converted (only that variant uses it).
    pub fn from_core(
        event: Event,
        stats: impl FnOnce(&StatsSnapshot) -> PyResult<Py<PyDict>>,
    ) -> PyResult<Self> {
        Ok(match event {
            Event::TransportState {
                transport,
                state,
                detail,
            } => NativeEvent::TransportState(TransportStateEvent {
                transport_id: transport,
                state: state.into(),
                detail,
            }),
            Event::Stats { request, snapshot } => NativeEvent::Stats(StatsEvent {
                request_id: request,
                stats: stats(&snapshot)?,
            }),
            Event::CommandFailed { transport, detail } => {
                NativeEvent::CommandFailed(CommandFailedEvent {
                    transport_id: transport,
                    detail,
                })
            }
            Event::EstimateFell { transport, bps } => {
                NativeEvent::EstimateFell(EstimateFellEvent {
                    transport_id: transport,
                    bps,
                })
            }
            Event::EstimateRose { transport, bps } => {
                NativeEvent::EstimateRose(EstimateRoseEvent {
                    transport_id: transport,
                    bps,
                })
            }
            Event::AudioLevels { router, levels } => NativeEvent::AudioLevels(AudioLevelsEvent {
                router_id: router,
                levels: levels
                    .iter()
                    .map(|l| (l.transport, l.ssrc, l.loudness, l.voice, l.packets))
                    .collect(),
            }),
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<MediaKind>()?;
    m.add_class::<CandidateType>()?;
    m.add_class::<DtlsSetup>()?;
    m.add_class::<HashFunction>()?;
    m.add_class::<Fingerprint>()?;
    m.add_class::<Candidate>()?;
    m.add_class::<SsrcGroupSemantics>()?;
    m.add_class::<SsrcGroup>()?;
    m.add_class::<Source>()?;
    m.add_class::<VideoCodec>()?;
    m.add_class::<AudioLevelsEvent>()?;
    m.add_class::<PayloadType>()?;
    m.add_class::<TransportState>()?;
    m.add_class::<TransportStateEvent>()?;
    m.add_class::<StatsEvent>()?;
    m.add_class::<CommandFailedEvent>()?;
    m.add_class::<EstimateFellEvent>()?;
    m.add_class::<EstimateRoseEvent>()?;
    Ok(())
}
