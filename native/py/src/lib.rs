//! bridge._native: the PyO3 seam over sluice-core. Converts Python values to Commands and Events to
//! Python values; no media logic lives here.

mod seam;

use seam::NativeEvent;

use std::net::{IpAddr, SocketAddr};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use sluice_core::domain::{FeedbackSsrcs, HeaderExtensionIds, VideoTarget};
use sluice_core::dtls::{DtlsCert, DtlsSetup, Fingerprint, HashAlg};
use sluice_core::ice::IceCredentials;
use sluice_core::io::tcp::TcpConfig;
use sluice_core::seam::Command;
use sluice_core::shard::{ShardConfig, ShardHandle};
use sluice_core::stats::{Counters, StatsSnapshot};
use sluice_core::stun::{StunClass, StunMessage, StunWriter, BINDING};

#[pyclass]
struct NativeBridge {
    shard: Option<ShardHandle>,
    /// The DTLS certificate every Transport of this shard presents; shards of one bridge share one.
    cert: DtlsCert,
    fingerprint: Fingerprint,
}

impl NativeBridge {
    fn shard(&self) -> PyResult<&ShardHandle> {
        self.shard
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("bridge is shut down"))
    }

    fn send(&self, cmd: Command) -> PyResult<()> {
        self.shard()?.send(cmd);
        Ok(())
    }
}

#[pymethods]
impl NativeBridge {
    #[new]
    /// One shard: its thread, sockets and Transports. `shard_index` names its thread; `certificate_of`, another
    /// shard of the same bridge, whose DTLS certificate this one presents too (None: a new one).
    #[pyo3(signature = (bind_addresses, port, shard_cpu=None, cc_trace_dir=None, cc_initial_estimate_bps=None, cc_pacing=false, tcp_port=None, tcp_max_connections=1024, gso=true, shard_index=0, certificate_of=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        bind_addresses: Vec<String>,
        port: u16,
        shard_cpu: Option<usize>,
        cc_trace_dir: Option<String>,
        cc_initial_estimate_bps: Option<u64>,
        cc_pacing: bool,
        tcp_port: Option<u16>,
        tcp_max_connections: usize,
        gso: bool,
        shard_index: usize,
        certificate_of: Option<PyRef<'_, NativeBridge>>,
    ) -> PyResult<Self> {
        let mut bind = Vec::new();
        for a in &bind_addresses {
            let ip: IpAddr = a
                .parse()
                .map_err(|_| PyValueError::new_err(format!("bad bind address {a:?}")))?;
            bind.push(SocketAddr::new(ip, port));
        }
        // ICE-TCP listens on the first bind address (a wildcard there listens on all of them).
        let tcp = match (tcp_port, bind.first()) {
            (Some(p), Some(first)) => Some(TcpConfig {
                bind: SocketAddr::new(first.ip(), p),
                max_connections: tcp_max_connections,
            }),
            _ => None,
        };
        let cert = match certificate_of {
            Some(other) => other.cert.clone(),
            None => DtlsCert::generate()
                .map_err(|e| PyRuntimeError::new_err(format!("certificate: {e:?}")))?,
        };
        let fingerprint = cert.fingerprint(HashAlg::Sha256);
        let config = ShardConfig {
            bind,
            cpu: shard_cpu,
            cc_trace_dir: cc_trace_dir.map(std::path::PathBuf::from),
            cc_initial_estimate_bps,
            cc_pacing,
            tcp,
            gso,
            index: shard_index,
        };
        let shard = ShardHandle::spawn(&config, cert.clone())
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(NativeBridge {
            shard: Some(shard),
            cert,
            fingerprint,
        })
    }

    fn local_addresses(&self) -> PyResult<Vec<(String, u16)>> {
        Ok(self
            .shard()?
            .local_addrs()
            .iter()
            .map(|a| (a.ip().to_string(), a.port()))
            .collect())
    }

    /// The ICE-TCP listener's (address, port), if there is one.
    fn tcp_local_address(&self) -> PyResult<Option<(String, u16)>> {
        Ok(self
            .shard()?
            .tcp_local_addr()
            .map(|a| (a.ip().to_string(), a.port())))
    }

    /// The bridge certificate's fingerprint: its hash function and digest.
    fn fingerprint(&self) -> (seam::HashFunction, Vec<u8>) {
        (self.fingerprint.hash.into(), self.fingerprint.value.clone())
    }

    fn event_fd(&self) -> PyResult<i32> {
        Ok(self.shard()?.events.fd())
    }

    fn drain_events(&self, py: Python<'_>) -> PyResult<Vec<NativeEvent>> {
        let mut events = Vec::new();
        self.shard()?.events.drain_into(&mut events);
        events
            .into_iter()
            .map(|e| NativeEvent::from_core(e, |s| Ok(stats_dict(py, s)?.unbind())))
            .collect()
    }

    /// The feedback SSRCs are the ones the control plane signals as the bridge's own (Colibri2 `jvb-a0`,
    /// `jvb-v0`): every RTCP packet the bridge makes for this conference is sent from one of them.
    fn create_router(
        &self,
        router_id: u64,
        feedback_audio_ssrc: u32,
        feedback_video_ssrc: u32,
    ) -> PyResult<()> {
        self.send(Command::CreateRouter {
            router: router_id,
            feedback: FeedbackSsrcs {
                audio: feedback_audio_ssrc,
                video: feedback_video_ssrc,
            },
        })
    }

    fn close_router(&self, router_id: u64) -> PyResult<()> {
        self.send(Command::CloseRouter { router: router_id })
    }

    fn create_transport(
        &self,
        router_id: u64,
        transport_id: u64,
        ufrag: String,
        pwd: String,
        controlling: bool,
    ) -> PyResult<()> {
        self.send(Command::CreateTransport {
            router: router_id,
            transport: transport_id,
            ice: IceCredentials { ufrag, pwd },
            controlling,
        })
    }

    /// The remote's ICE credentials and every DTLS fingerprint it announced, each with its a=setup.
    fn connect_transport(
        &self,
        transport_id: u64,
        ufrag: String,
        pwd: String,
        fingerprints: Vec<seam::Fingerprint>,
    ) -> PyResult<()> {
        let remote_setup = DtlsSetup::announced(fingerprints.iter().map(seam::Fingerprint::setup))
            .ok_or_else(|| PyValueError::new_err("no DTLS fingerprint"))?;
        self.send(Command::ConnectTransport {
            transport: transport_id,
            remote_ice: IceCredentials { ufrag, pwd },
            fingerprints: fingerprints
                .iter()
                .map(seam::Fingerprint::to_core)
                .collect(),
            remote_setup,
        })
    }

    /// ICE restart with our new credentials (Colibri2 `ice-restart`); DTLS and SRTP state stay.
    fn restart_ice(&self, transport_id: u64, ufrag: String, pwd: String) -> PyResult<()> {
        self.send(Command::RestartIce {
            transport: transport_id,
            ice: IceCredentials { ufrag, pwd },
        })
    }

    fn add_remote_candidates(
        &self,
        transport_id: u64,
        candidates: Vec<seam::Candidate>,
    ) -> PyResult<()> {
        self.send(Command::AddRemoteCandidates {
            transport: transport_id,
            candidates: candidates.iter().map(seam::Candidate::to_core).collect(),
        })
    }

    fn set_sources(&self, transport_id: u64, sources: Vec<seam::Source>) -> PyResult<()> {
        self.send(Command::SetSources {
            transport: transport_id,
            sources: sources.iter().map(seam::Source::to_core).collect(),
        })
    }

    fn set_payload_types(&self, transport_id: u64, types: Vec<seam::PayloadType>) -> PyResult<()> {
        self.send(Command::SetPayloadTypes {
            transport: transport_id,
            types: types.iter().map(seam::PayloadType::to_core).collect(),
        })
    }

    /// `targets`: (source name, (spatial, temporal) or None); temporal 255 is every temporal layer.
    fn set_allocation(
        &self,
        transport_id: u64,
        targets: Vec<(String, Option<(u8, u8)>)>,
    ) -> PyResult<()> {
        self.send(Command::SetAllocation {
            transport: transport_id,
            targets: targets
                .into_iter()
                .map(|(name, t)| {
                    let t = t.map(|(spatial, temporal)| VideoTarget { spatial, temporal });
                    (name, t)
                })
                .collect(),
        })
    }

    /// What the allocation would send the transport if its estimate allowed, bit/s (0: no more).
    fn set_probe_target(&self, transport_id: u64, bps: u64) -> PyResult<()> {
        self.send(Command::SetProbeTarget {
            transport: transport_id,
            bps,
        })
    }

    /// The header extension ids the transport's RTP carries (from its extmap; None: not sent).
    /// `abs_send_time` only for a peer that negotiated REMB and not transport-cc.
    #[pyo3(signature = (transport_id, audio_level=None, dependency_descriptor=None, transport_cc=None, abs_send_time=None))]
    fn set_header_extensions(
        &self,
        transport_id: u64,
        audio_level: Option<u8>,
        dependency_descriptor: Option<u8>,
        transport_cc: Option<u8>,
        abs_send_time: Option<u8>,
    ) -> PyResult<()> {
        if [
            audio_level,
            dependency_descriptor,
            transport_cc,
            abs_send_time,
        ]
        .contains(&Some(0))
        {
            return Err(PyValueError::new_err(
                "an RTP header extension id is 1..=255",
            ));
        }
        self.send(Command::SetHeaderExtensions {
            transport: transport_id,
            ids: HeaderExtensionIds {
                audio_level,
                dependency_descriptor,
                transport_cc,
                abs_send_time,
            },
        })
    }

    fn request_keyframe(&self, transport_id: u64, ssrc: u32) -> PyResult<()> {
        self.send(Command::RequestKeyframe {
            transport: transport_id,
            ssrc,
        })
    }

    fn set_force_mute(&self, transport_id: u64, audio: bool, video: bool) -> PyResult<()> {
        self.send(Command::SetForceMute {
            transport: transport_id,
            audio,
            video,
        })
    }

    fn close_transport(&self, transport_id: u64) -> PyResult<()> {
        self.send(Command::CloseTransport {
            transport: transport_id,
        })
    }

    fn get_stats(&self, request_id: u64) -> PyResult<()> {
        self.send(Command::GetStats {
            request: request_id,
        })
    }

    fn shutdown(&mut self, py: Python<'_>) {
        if let Some(mut shard) = self.shard.take() {
            py.detach(move || shard.shutdown());
        }
    }
}

fn counters_dict<'py>(py: Python<'py>, c: &Counters) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("packets_in", c.packets_in)?;
    d.set_item("bytes_in", c.bytes_in)?;
    d.set_item("packets_out", c.packets_out)?;
    d.set_item("bytes_out", c.bytes_out)?;
    d.set_item("rtp_in", c.rtp_in)?;
    d.set_item("rtp_out", c.rtp_out)?;
    d.set_item("rtcp_in", c.rtcp_in)?;
    d.set_item("rtcp_out", c.rtcp_out)?;
    d.set_item("nack_requested", c.nack_requested)?;
    d.set_item("remb_sent", c.remb_sent)?;
    d.set_item("probe_clusters", c.probe_clusters)?;
    d.set_item("padding_packets", c.padding_packets)?;
    d.set_item("padding_bytes", c.padding_bytes)?;
    d.set_item("paced", c.paced)?;
    d.set_item("retransmitted", c.retransmitted)?;
    d.set_item("retransmitted_bytes", c.retransmitted_bytes)?;
    d.set_item("nack_cache_hit", c.nack_cache_hit)?;
    d.set_item("nack_cache_miss", c.nack_cache_miss)?;
    d.set_item("rtx_rate_limited", c.rtx_rate_limited)?;
    let drops = PyDict::new(py);
    for (k, v) in c.drop_map() {
        drops.set_item(k, v)?;
    }
    d.set_item("drops", drops)?;
    Ok(d)
}

fn stats_dict<'py>(py: Python<'py>, s: &StatsSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("total", counters_dict(py, &s.total)?)?;
    let f = PyDict::new(py);
    for (cause, count) in s.failures.by_name() {
        f.set_item(cause, count)?;
    }
    d.set_item("failures", f)?;
    let io = PyDict::new(py);
    io.set_item("recv_calls", s.io.recv_calls)?;
    io.set_item("recv_packets", s.io.recv_packets)?;
    io.set_item("send_calls", s.io.send_calls)?;
    io.set_item("send_packets", s.io.send_packets)?;
    io.set_item("gso_sends", s.io.gso_sends)?;
    io.set_item("gso_refused", s.io.gso_refused)?;
    let t = &s.io.tcp;
    let tcp = PyDict::new(py);
    for (name, value) in [
        ("accepted", t.accepted),
        ("refused", t.refused),
        ("closed_by_peer", t.closed_by_peer),
        ("closed_bad_framing", t.closed_bad_framing),
        ("closed_unclaimed", t.closed_unclaimed),
        ("closed_idle", t.closed_idle),
        ("closed_slow", t.closed_slow),
        ("closed_error", t.closed_error),
        ("frames_in", t.frames_in),
        ("frames_out", t.frames_out),
        ("frames_dropped_full", t.frames_dropped_full),
        ("frames_no_connection", t.frames_no_connection),
        ("open", t.open),
    ] {
        tcp.set_item(name, value)?;
    }
    io.set_item("tcp", tcp)?;
    d.set_item("io", io)?;
    d.set_item("routers", s.routers)?;
    d.set_item("seam_commands", s.seam_commands)?;
    d.set_item("seam_events", s.seam_events)?;
    d.set_item("cpu_seconds", s.thread_cpu_ns as f64 / 1e9)?;
    let ts = PyDict::new(py);
    for t in &s.transports {
        let td = counters_dict(py, &t.counters)?;
        td.set_item("router", t.router)?;
        td.set_item("state", t.state)?;
        td.set_item("selected_remote", t.selected_remote.map(|a| a.to_string()))?;
        td.set_item("srtp_profile", t.srtp_profile)?;
        td.set_item("force_mute_audio", t.force_mute.audio)?;
        td.set_item("force_mute_video", t.force_mute.video)?;
        td.set_item("bandwidth_estimate_bps", t.bandwidth_estimate_bps)?;
        td.set_item("remb_estimate_bps", t.remb_estimate_bps)?;
        td.set_item("audio_in_bps", t.audio_in_bps)?;
        td.set_item("rtt_ms", t.rtt_ms)?;
        td.set_item("rtp_received", t.rtp_received)?;
        td.set_item("rtp_lost", t.rtp_lost)?;
        td.set_item("jitter_ms", t.jitter_ms)?;
        if let Some(p) = t.probe {
            let pd = PyDict::new(py);
            pd.set_item("clusters", p.clusters)?;
            pd.set_item("succeeded", p.succeeded)?;
            pd.set_item("failed", p.failed)?;
            pd.set_item("padding_packets", p.padding_packets)?;
            pd.set_item("padding_bytes", p.padding_bytes)?;
            pd.set_item("held_for_queue", p.held_for_queue)?;
            pd.set_item("raises", t.probe_raises)?;
            td.set_item("probe", pd)?;
        }
        ts.set_item(t.id, td)?;
    }
    d.set_item("transports", ts)?;
    let layers = pyo3::types::PyList::empty(py);
    for l in &s.layers {
        let ld = PyDict::new(py);
        ld.set_item("router", l.router)?;
        ld.set_item("transport", l.transport)?;
        ld.set_item("source", &l.source)?;
        ld.set_item("layer", l.layer)?;
        ld.set_item("spatial", l.spatial)?;
        ld.set_item("temporal", l.temporal)?;
        ld.set_item("frame_rate", l.frame_rate)?;
        ld.set_item("settled", l.settled)?;
        ld.set_item("ssrc", l.ssrc)?;
        ld.set_item("bitrate_bps", l.bitrate_bps)?;
        ld.set_item("packets", l.packets)?;
        ld.set_item("width", l.frame_size.map(|s| s.0))?;
        ld.set_item("height", l.frame_size.map(|s| s.1))?;
        layers.append(ld)?;
    }
    d.set_item("layers", layers)?;
    let waiting = pyo3::types::PyList::empty(py);
    for w in &s.waiting {
        let wd = PyDict::new(py);
        wd.set_item("router", w.router)?;
        wd.set_item("receiver", w.receiver)?;
        wd.set_item("source", &w.source)?;
        wd.set_item("target", w.target)?;
        wd.set_item("current", w.current)?;
        waiting.append(wd)?;
    }
    d.set_item("waiting", waiting)?;
    Ok(d)
}

/// A STUN Binding request without credentials (RFC 8489 section 6.1, with FINGERPRINT): what asks a STUN
/// server for the bridge's public address.
#[pyfunction]
fn stun_binding_request<'py>(
    py: Python<'py>,
    transaction_id: &[u8],
) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    let id: [u8; 12] = transaction_id
        .try_into()
        .map_err(|_| PyValueError::new_err("a STUN transaction id is 12 bytes"))?;
    let mut buf = Vec::with_capacity(28);
    StunWriter::new(&mut buf, StunClass::Request, BINDING, id).finish(None);
    Ok(pyo3::types::PyBytes::new(py, &buf))
}

/// The XOR-MAPPED-ADDRESS (ip, port) of a Binding success response to `transaction_id`; None for any other
/// datagram (not STUN, another class, method or transaction, no such attribute).
#[pyfunction]
fn stun_mapped_address(datagram: &[u8], transaction_id: &[u8]) -> Option<(String, u16)> {
    let msg = StunMessage::parse(datagram).ok()?;
    if msg.class() != StunClass::SuccessResponse
        || msg.method() != BINDING
        || msg.transaction_id().as_slice() != transaction_id
    {
        return None;
    }
    let addr = msg.xor_mapped_address()?;
    Some((addr.ip().to_string(), addr.port()))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeBridge>()?;
    m.add_function(wrap_pyfunction!(stun_binding_request, m)?)?;
    m.add_function(wrap_pyfunction!(stun_mapped_address, m)?)?;
    seam::register(m)?;
    Ok(())
}
