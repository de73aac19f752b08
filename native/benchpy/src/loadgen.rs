//! bench._native.LoadGen and RawRelay: the load generator (sluice-loadgen) and the raw relay for the
//! Python bench. Conversions only; every packet is handled on their own threads, never under the GIL.
//! Statistics cross as dicts whose keys are the Rust field names.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use sluice_core::domain::RemoteCandidate;
use sluice_core::dtls::Fingerprint;
use sluice_core::ice::{CandidateKind, IceCredentials};
use sluice_loadgen::relay::RelayStats;
use sluice_loadgen::turn::TurnConfig;
use sluice_loadgen::{
    Latency, LoadGen as Inner, LoadGenConfig, MediaConfig, Mode, RemoteDescription, RidSignal,
    Role, Snapshot, Sources,
};

fn os_err(e: std::io::Error) -> PyErr {
    match e.kind() {
        std::io::ErrorKind::InvalidInput => PyValueError::new_err(e.to_string()),
        _ => PyOSError::new_err(e.to_string()),
    }
}

#[pyclass(module = "bench._native")]
pub struct LoadGen {
    inner: Inner,
}

#[pymethods]
impl LoadGen {
    #[new]
    #[pyo3(signature = (
        *, threads = 1, bind_ip = "127.0.0.1", mode = "secure", audio = true, video = true,
        video_bitrate_bps = 1_000_000, fps = 30, video_packet_size = 1200, audio_packet_size = 100,
        shared_sockets = true, keyframe_interval_frames = 3000, freeze_ms = 500,
        feedback = false, feedback_interval_ms = 100, drop_every_n = 0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        threads: usize,
        bind_ip: &str,
        mode: &str,
        audio: bool,
        video: bool,
        video_bitrate_bps: u32,
        fps: u32,
        video_packet_size: usize,
        audio_packet_size: usize,
        shared_sockets: bool,
        keyframe_interval_frames: u32,
        freeze_ms: u32,
        feedback: bool,
        feedback_interval_ms: u32,
        drop_every_n: u32,
    ) -> PyResult<Self> {
        let bind_ip: IpAddr = bind_ip
            .parse()
            .map_err(|_| PyValueError::new_err(format!("bad bind address {bind_ip:?}")))?;
        let mode = match mode {
            "secure" => Mode::Secure,
            "raw" => Mode::Raw,
            _ => return Err(PyValueError::new_err(format!("bad mode {mode:?}"))),
        };
        // A video packet holds the RTP header, the longest VP8 prefix and the trailer.
        if threads == 0 || fps == 0 || !(68..=1400).contains(&video_packet_size) {
            return Err(PyValueError::new_err(
                "threads and fps must be positive, video_packet_size within 68..=1400",
            ));
        }
        if !(10..=1000).contains(&feedback_interval_ms) {
            return Err(PyValueError::new_err(
                "feedback_interval_ms must be within 10..=1000",
            ));
        }
        if !(52..=1400).contains(&audio_packet_size) {
            return Err(PyValueError::new_err(
                "audio_packet_size must be within 52..=1400",
            ));
        }
        let media = MediaConfig {
            audio,
            video,
            video_bitrate_bps,
            fps,
            video_packet_size,
            audio_packet_size,
            keyframe_interval_frames,
            freeze_ms,
            feedback,
            feedback_interval_ms,
            drop_every_n,
            ..MediaConfig::default()
        };
        let inner = Inner::new(LoadGenConfig {
            threads,
            bind_ip,
            shared_sockets,
            mode,
            media,
        })
        .map_err(os_err)?;
        Ok(LoadGen { inner })
    }

    /// Creates `count` endpoints in `group`; one dict per endpoint with its local description.
    /// `ice_controlling`: the endpoint offers to a full ICE agent; `receives`: loss is counted against
    /// it; `peer`: the endpoint (its own publisher) whose streams it does not expect; `rtx_pt`: the
    /// payload type RTX arrives with (None: not negotiated); `rid`: (mid extension id, rid extension id,
    /// the video m-line's mid) for RID-signalled simulcast, every video packet then carrying MID and RID.
    #[pyo3(signature = (
        count, group, *, ice_controlling = false, receives = true, peer = None, rtx_pt = Some(96),
        rid = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn create_endpoints<'py>(
        &mut self,
        py: Python<'py>,
        count: usize,
        group: u32,
        ice_controlling: bool,
        receives: bool,
        peer: Option<u32>,
        rtx_pt: Option<u8>,
        rid: Option<(u8, u8, String)>,
    ) -> PyResult<Bound<'py, PyList>> {
        if rtx_pt.is_some_and(|pt| pt > 127) {
            return Err(PyValueError::new_err("rtx_pt must be within 0..=127"));
        }
        let rid = match rid {
            None => None,
            Some((mid_id, rid_id, mid)) => {
                // One-byte extensions (RFC 8285 4.2): ids 1..=14; a one-character mid.
                if !(1..=14).contains(&mid_id) || !(1..=14).contains(&rid_id) || mid_id == rid_id {
                    return Err(PyValueError::new_err(
                        "rid: two distinct extension ids in 1..=14",
                    ));
                }
                let &[mid] = mid.as_bytes() else {
                    return Err(PyValueError::new_err(
                        "rid: the mid must be one ASCII character",
                    ));
                };
                Some(RidSignal {
                    mid_id,
                    rid_id,
                    mid,
                })
            }
        };
        let role = Role {
            ice_controlling,
            receives,
            peer,
            rtx_pt,
            rid,
        };
        let locals = self
            .inner
            .create_endpoints_with(count, group, role)
            .map_err(os_err)?;
        let out = PyList::empty(py);
        for l in locals {
            let d = PyDict::new(py);
            d.set_item("index", l.index)?;
            d.set_item("group", l.group)?;
            d.set_item("ufrag", &l.ice.ufrag)?;
            d.set_item("pwd", &l.ice.pwd)?;
            d.set_item("fingerprint_hash", l.fingerprint.hash_name())?;
            d.set_item("fingerprint", l.fingerprint.value_hex())?;
            d.set_item("setup", l.setup)?;
            let cands = PyList::empty(py);
            for c in &l.candidates {
                let cd = PyDict::new(py);
                cd.set_item("ip", c.addr.ip().to_string())?;
                cd.set_item("port", c.addr.port())?;
                cd.set_item("priority", c.priority)?;
                cd.set_item("type", c.kind.sdp_name())?;
                cd.set_item("foundation", &c.foundation)?;
                cands.append(cd)?;
            }
            d.set_item("candidates", cands)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// The bridge's transport for endpoint `index`: candidates as (ip, port, priority, type). With
    /// `turn` (server host, port, username, password) the endpoint reaches the bridge through that
    /// TURN server: an allocation, and a channel bound to the first candidate.
    #[pyo3(signature = (index, ufrag, pwd, candidates, fingerprints, setup, turn = None))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        &self,
        index: u32,
        ufrag: String,
        pwd: String,
        candidates: Vec<(String, u16, u32, String)>,
        fingerprints: Vec<(String, String)>,
        setup: String,
        turn: Option<(String, u16, String, String)>,
    ) -> PyResult<()> {
        let turn = match turn {
            Some((host, port, username, password)) => {
                let ip: IpAddr = host.parse().map_err(|_| {
                    PyValueError::new_err(format!("bad TURN server address {host:?}"))
                })?;
                Some(TurnConfig {
                    server: SocketAddr::new(ip, port),
                    username,
                    password,
                })
            }
            None => None,
        };
        let mut cands = Vec::with_capacity(candidates.len());
        for (ip, port, priority, typ) in candidates {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| PyValueError::new_err(format!("bad candidate address {ip:?}")))?;
            let kind = CandidateKind::from_sdp_name(&typ)
                .ok_or_else(|| PyValueError::new_err(format!("bad candidate type {typ:?}")))?;
            cands.push(RemoteCandidate {
                addr: SocketAddr::new(ip, port),
                priority,
                kind,
            });
        }
        // Unsupported hashes are skipped: any supported fingerprint may match (RFC 8122 5).
        let fps: Vec<Fingerprint> = fingerprints
            .iter()
            .filter_map(|(h, v)| Fingerprint::parse(h, v).ok())
            .collect();
        self.inner
            .connect(
                index,
                RemoteDescription {
                    ice: IceCredentials { ufrag, pwd },
                    candidates: cands,
                    fingerprints: fps,
                    setup,
                    turn,
                },
            )
            .map_err(os_err)
    }

    /// Raw mode: endpoint `index` sends to the relay at host:port.
    fn connect_raw(&self, index: u32, host: &str, port: u16) -> PyResult<()> {
        let ip: IpAddr = host
            .parse()
            .map_err(|_| PyValueError::new_err(format!("bad relay address {host:?}")))?;
        self.inner
            .connect_raw(index, SocketAddr::new(ip, port))
            .map_err(os_err)
    }

    /// The SSRCs endpoint `index` sends: one audio (or None) and one video SSRC per simulcast layer,
    /// and (with feedback) each layer's RTX SSRC, in the same order, or none.
    #[pyo3(signature = (index, audio_ssrc, video_ssrcs, rtx_ssrcs = Vec::new()))]
    fn set_sources(
        &self,
        index: u32,
        audio_ssrc: Option<u32>,
        video_ssrcs: Vec<u32>,
        rtx_ssrcs: Vec<u32>,
    ) -> PyResult<()> {
        if !rtx_ssrcs.is_empty() && rtx_ssrcs.len() != video_ssrcs.len() {
            return Err(PyValueError::new_err(
                "rtx_ssrcs: one per video SSRC, or none",
            ));
        }
        self.inner
            .set_sources(
                index,
                Sources {
                    audio: audio_ssrc,
                    video: video_ssrcs,
                    rtx: rtx_ssrcs,
                },
            )
            .map_err(os_err)
    }

    /// The RFC 6464 level (-dBov, 0 loudest, 127 silence) endpoint `index` puts on its audio from
    /// now on, in header extension 1; None: none.
    #[pyo3(signature = (index, level))]
    fn set_audio_level(&self, index: u32, level: Option<u8>) -> PyResult<()> {
        self.inner.set_audio_level(index, level).map_err(os_err)
    }

    /// Distinct SSRCs for endpoint `index`: (audio, [video per layer]).
    #[staticmethod]
    fn default_sources(index: u32, layers: usize) -> (Option<u32>, Vec<u32>) {
        let s = Sources::for_endpoint(index, layers);
        (s.audio, s.video)
    }

    /// An RTX SSRC for each of `default_sources`' video SSRCs, from a range of their own.
    #[staticmethod]
    fn default_rtx_sources(index: u32, layers: usize) -> Vec<u32> {
        Sources::with_rtx(index, layers).rtx
    }

    fn endpoints(&self) -> usize {
        self.inner.endpoints()
    }

    fn connected(&self) -> usize {
        self.inner.connected()
    }

    fn failed(&self) -> usize {
        self.inner.failed()
    }

    /// Blocks (without the GIL) until every endpoint is connected; false on a failure or timeout.
    fn wait_connected(&self, py: Python<'_>, timeout: f64) -> bool {
        let d = Duration::from_secs_f64(timeout.max(0.0));
        py.detach(|| self.inner.wait_connected(d))
    }

    fn start(&mut self) {
        self.inner.start();
    }

    /// Forgets the latency recorded so far (totals and loss stay): the end of a warm-up.
    fn reset_latency(&self) {
        self.inner.reset_latency();
    }

    /// Stops sending and keeps receiving for `drain` seconds (without the GIL).
    #[pyo3(signature = (drain = 0.5))]
    fn stop(&mut self, py: Python<'_>, drain: f64) {
        let d = Duration::from_secs_f64(drain.max(0.0));
        let inner = &mut self.inner;
        py.detach(move || inner.stop(d));
    }

    /// The snapshot as a dict (see bench/_native.pyi); `detail` adds the per-second, per-stream and
    /// per-endpoint lists.
    #[pyo3(signature = (detail = false))]
    fn stats<'py>(&self, py: Python<'py>, detail: bool) -> PyResult<Bound<'py, PyDict>> {
        let snap = py.detach(|| self.inner.snapshot(detail));
        snapshot_dict(py, &snap)
    }

    /// Stops the worker threads and closes every endpoint socket.
    fn shutdown(&mut self, py: Python<'_>) {
        let inner = &mut self.inner;
        py.detach(move || inner.shutdown());
    }
}

/// The raw relay baseline (sluice_loadgen::relay) on its own thread named "raw-relay", so a bench
/// can read its CPU from /proc/<pid>/task. No packet touches Python.
#[pyclass(module = "bench._native")]
pub struct RawRelay {
    addr: SocketAddr,
    /// Until `start` moves it to its thread.
    relay: Mutex<Option<sluice_loadgen::relay::RawRelay>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Published by the thread a few times a second, and once more when it stops.
    stats: Arc<Mutex<RelayStats>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[pymethods]
impl RawRelay {
    #[new]
    #[pyo3(signature = (host = "127.0.0.1", port = 0))]
    fn new(host: &str, port: u16) -> PyResult<Self> {
        let ip: IpAddr = host
            .parse()
            .map_err(|_| PyValueError::new_err(format!("bad relay address {host:?}")))?;
        let relay = sluice_loadgen::relay::RawRelay::bind(SocketAddr::new(ip, port))
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(RawRelay {
            addr: relay.local_addr(),
            relay: Mutex::new(Some(relay)),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            stats: Arc::new(Mutex::new(RelayStats::default())),
        })
    }

    fn local_address(&self) -> (String, u16) {
        (self.addr.ip().to_string(), self.addr.port())
    }

    /// Starts relaying on a thread (once).
    fn start(&mut self) -> PyResult<()> {
        let Some(mut relay) = locked(&self.relay).take() else {
            return Err(PyValueError::new_err("the relay was already started"));
        };
        let (stop, stats) = (self.stop.clone(), self.stats.clone());
        let thread = std::thread::Builder::new()
            .name("raw-relay".into())
            .spawn(move || {
                let mut published = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if relay.poll() == 0 {
                        relay.wait(10);
                    }
                    if published.elapsed() >= Duration::from_millis(100) {
                        *locked(&stats) = relay.stats();
                        published = Instant::now();
                    }
                }
                *locked(&stats) = relay.stats();
            })
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        self.thread = Some(thread);
        Ok(())
    }

    /// Counters as a dict: at most 100 ms old while running, exact after `stop`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = match locked(&self.relay).as_ref() {
            Some(r) => r.stats(),
            None => *locked(&self.stats),
        };
        let d = PyDict::new(py);
        for (k, v) in s.named() {
            d.set_item(k, v)?;
        }
        let (recv, send) = s.packets_per_call();
        d.set_item("packets_per_recv_call", recv)?;
        d.set_item("packets_per_send_call", send)?;
        Ok(d)
    }

    /// Stops the thread and waits for it.
    fn stop(&mut self, py: Python<'_>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = py.detach(move || t.join());
        }
    }
}

impl Drop for RawRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn latency_dict<'py>(py: Python<'py>, l: &Latency) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("count", l.count)?;
    d.set_item("min_ns", l.min_ns)?;
    d.set_item("mean_ns", l.mean_ns)?;
    d.set_item("p50_ns", l.p50_ns)?;
    d.set_item("p90_ns", l.p90_ns)?;
    d.set_item("p99_ns", l.p99_ns)?;
    d.set_item("p999_ns", l.p999_ns)?;
    d.set_item("max_ns", l.max_ns)?;
    Ok(d)
}

fn snapshot_dict<'py>(py: Python<'py>, s: &Snapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("mode", s.mode)?;
    d.set_item("threads", s.threads)?;
    d.set_item("elapsed_s", s.elapsed_s)?;
    d.set_item("sending", s.sending)?;
    d.set_item("stopped", s.stopped)?;
    d.set_item("endpoints", s.endpoints)?;
    d.set_item("connected", s.connected)?;
    d.set_item("failed", s.failed)?;
    d.set_item("expected", s.expected)?;
    d.set_item("received", s.received)?;
    d.set_item("unexpected", s.unexpected)?;
    d.set_item("lost", s.lost)?;
    d.set_item("lost_gap", s.lost_gap)?;
    d.set_item("loss_ratio", s.loss_ratio())?;
    d.set_item("duplicates", s.duplicates)?;
    d.set_item("reordered", s.reordered)?;
    d.set_item("late", s.late)?;
    d.set_item("packets_per_recv_call", s.totals.packets_per_recv_call())?;
    d.set_item("packets_per_send_call", s.totals.packets_per_send_call())?;
    let totals = PyDict::new(py);
    for (k, v) in s.totals.named() {
        totals.set_item(k, v)?;
    }
    d.set_item("totals", totals)?;
    d.set_item("latency", latency_dict(py, &s.latency)?)?;
    d.set_item("latency_audio", latency_dict(py, &s.latency_audio)?)?;
    d.set_item("latency_video", latency_dict(py, &s.latency_video)?)?;
    d.set_item("latency_socket", latency_dict(py, &s.latency_socket)?)?;
    d.set_item("histogram", &s.histogram)?;
    let receive = PyDict::new(py);
    for (k, v) in s.receive.named() {
        receive.set_item(k, v)?;
    }
    d.set_item("receive", receive)?;
    let series = PyList::empty(py);
    for x in &s.series {
        let e = PyDict::new(py);
        e.set_item("t", x.t)?;
        e.set_item("sent_packets", x.sent_packets)?;
        e.set_item("sent_bytes", x.sent_bytes)?;
        e.set_item("recv_packets", x.recv_packets)?;
        e.set_item("recv_bytes", x.recv_bytes)?;
        e.set_item("gap_lost", x.gap_lost)?;
        e.set_item("latency", latency_dict(py, &x.latency)?)?;
        series.append(e)?;
    }
    d.set_item("series", series)?;
    let streams = PyList::empty(py);
    for x in &s.streams {
        let e = PyDict::new(py);
        e.set_item("receiver", x.receiver)?;
        e.set_item("group", x.group)?;
        e.set_item("sender", x.sender)?;
        e.set_item("ssrc", x.ssrc)?;
        e.set_item("kind", x.kind.as_str())?;
        e.set_item("layer", x.layer)?;
        e.set_item("sent", x.sent)?;
        e.set_item("sent_payload_bytes", x.sent_payload_bytes)?;
        e.set_item("received", x.received)?;
        e.set_item("lost", x.lost)?;
        e.set_item("gap_lost", x.gap_lost)?;
        e.set_item("duplicates", x.duplicates)?;
        e.set_item("reordered", x.reordered)?;
        e.set_item("latency_mean_ns", x.latency_mean_ns)?;
        e.set_item("latency_max_ns", x.latency_max_ns)?;
        streams.append(e)?;
    }
    d.set_item("streams", streams)?;
    let received = PyList::empty(py);
    for x in &s.receive_streams {
        let r = &x.stream;
        let e = PyDict::new(py);
        e.set_item("receiver", x.receiver)?;
        e.set_item("group", x.group)?;
        e.set_item("ssrc", r.ssrc)?;
        e.set_item("sender", r.sender)?;
        e.set_item("kind", r.kind.as_str())?;
        e.set_item("packets", r.packets)?;
        e.set_item("seq_gaps", r.seq_gaps)?;
        e.set_item("seq_late", r.seq_late)?;
        e.set_item("layer", r.layer)?;
        e.set_item("layer_switches", r.layer_switches)?;
        e.set_item("switches_off_keyframe", r.switches_off_keyframe)?;
        e.set_item("frames", r.frames)?;
        e.set_item("keyframes", r.keyframes)?;
        e.set_item("freezes", r.freezes)?;
        e.set_item("freeze_ns", r.freeze_ns)?;
        received.append(e)?;
    }
    d.set_item("receive_streams", received)?;
    let endpoints = PyList::empty(py);
    for x in &s.endpoint_list {
        let e = PyDict::new(py);
        e.set_item("index", x.index)?;
        e.set_item("group", x.group)?;
        e.set_item("state", x.state)?;
        e.set_item("detail", &x.detail)?;
        e.set_item("relayed", x.relayed.map(|a| a.to_string()))?;
        e.set_item("sent", x.sent)?;
        e.set_item("received", x.received)?;
        endpoints.append(e)?;
    }
    d.set_item("endpoint_list", endpoints)?;
    Ok(d)
}
