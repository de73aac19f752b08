//! bridge._native.LoadGen: the load generator (sluice-loadgen) for the Python bench. Conversions only;
//! every packet is handled on the loadgen's own threads, never under the GIL.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use sluice_core::dtls::Fingerprint;
use sluice_core::ice::{Candidate, CandidateKind, IceCredentials};
use sluice_loadgen::relay::RelayStats;
use sluice_loadgen::{
    LoadGen as Inner, LoadGenConfig, MediaConfig, Mode, RemoteDescription, Sources,
};

fn os_err(e: std::io::Error) -> PyErr {
    match e.kind() {
        std::io::ErrorKind::InvalidInput => PyValueError::new_err(e.to_string()),
        _ => PyOSError::new_err(e.to_string()),
    }
}

fn candidate_kind(typ: &str) -> PyResult<CandidateKind> {
    Ok(match typ {
        "host" => CandidateKind::Host,
        "srflx" => CandidateKind::ServerReflexive,
        "prflx" => CandidateKind::PeerReflexive,
        "relay" => CandidateKind::Relayed,
        _ => return Err(PyValueError::new_err(format!("bad candidate type {typ:?}"))),
    })
}

fn kind_name(kind: CandidateKind) -> &'static str {
    match kind {
        CandidateKind::Host => "host",
        CandidateKind::ServerReflexive => "srflx",
        CandidateKind::PeerReflexive => "prflx",
        CandidateKind::Relayed => "relay",
    }
}

#[pyclass(module = "bridge._native")]
pub struct LoadGen {
    inner: Inner,
}

#[pymethods]
impl LoadGen {
    #[new]
    #[pyo3(signature = (
        *, threads = 1, bind_ip = "127.0.0.1", mode = "secure", audio = true, video = true,
        video_bitrate_bps = 1_000_000, fps = 30, video_packet_size = 1200, audio_packet_size = 100,
        shared_sockets = true
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
    ) -> PyResult<Self> {
        let bind_ip: IpAddr = bind_ip
            .parse()
            .map_err(|_| PyValueError::new_err(format!("bad bind address {bind_ip:?}")))?;
        let mode = match mode {
            "secure" => Mode::Secure,
            "raw" => Mode::Raw,
            _ => return Err(PyValueError::new_err(format!("bad mode {mode:?}"))),
        };
        if threads == 0 || fps == 0 || !(64..=1400).contains(&video_packet_size) {
            return Err(PyValueError::new_err(
                "threads and fps must be positive, video_packet_size within 64..=1400",
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
    fn create_endpoints<'py>(
        &mut self,
        py: Python<'py>,
        count: usize,
        group: u32,
    ) -> PyResult<Bound<'py, PyList>> {
        let locals = self.inner.create_endpoints(count, group).map_err(os_err)?;
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
                cd.set_item("type", kind_name(c.kind))?;
                cd.set_item("foundation", &c.foundation)?;
                cands.append(cd)?;
            }
            d.set_item("candidates", cands)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// The bridge's transport for endpoint `index`: candidates as (ip, port, priority, type).
    fn connect(
        &self,
        index: u32,
        ufrag: String,
        pwd: String,
        candidates: Vec<(String, u16, u32, String)>,
        fingerprints: Vec<(String, String)>,
        setup: String,
    ) -> PyResult<()> {
        let mut cands = Vec::with_capacity(candidates.len());
        for (i, (ip, port, priority, typ)) in candidates.into_iter().enumerate() {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| PyValueError::new_err(format!("bad candidate address {ip:?}")))?;
            cands.push(Candidate::new(
                SocketAddr::new(ip, port),
                candidate_kind(&typ)?,
                priority,
                (i + 1).to_string(),
            ));
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

    /// The SSRCs endpoint `index` sends: one audio (or None) and one video SSRC per simulcast layer.
    #[pyo3(signature = (index, audio_ssrc, video_ssrcs))]
    fn set_sources(
        &self,
        index: u32,
        audio_ssrc: Option<u32>,
        video_ssrcs: Vec<u32>,
    ) -> PyResult<()> {
        self.inner
            .set_sources(
                index,
                Sources {
                    audio: audio_ssrc,
                    video: video_ssrcs,
                },
            )
            .map_err(os_err)
    }

    /// Distinct SSRCs for endpoint `index`: (audio, [video per layer]).
    #[staticmethod]
    fn default_sources(index: u32, layers: usize) -> (Option<u32>, Vec<u32>) {
        let s = Sources::for_endpoint(index, layers);
        (s.audio, s.video)
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

    /// Stops sending and keeps receiving for `drain` seconds (without the GIL).
    #[pyo3(signature = (drain = 0.5))]
    fn stop(&mut self, py: Python<'_>, drain: f64) {
        let d = Duration::from_secs_f64(drain.max(0.0));
        let inner = &mut self.inner;
        py.detach(move || inner.stop(d));
    }

    /// The snapshot as JSON text (see sluice_loadgen::Snapshot::to_json for the fields).
    #[pyo3(signature = (detail = false))]
    fn stats_json(&self, py: Python<'_>, detail: bool) -> String {
        py.detach(|| self.inner.snapshot(detail).to_json())
    }

    /// The snapshot as a dict.
    #[pyo3(signature = (detail = false))]
    fn stats<'py>(&self, py: Python<'py>, detail: bool) -> PyResult<Bound<'py, PyAny>> {
        let text = self.stats_json(py, detail);
        py.import("json")?.call_method1("loads", (text,))
    }

    /// Stops the worker threads and closes every endpoint socket.
    fn shutdown(&mut self, py: Python<'_>) {
        let inner = &mut self.inner;
        py.detach(move || inner.shutdown());
    }
}

/// The raw relay baseline (sluice_loadgen::relay) on its own thread named "raw-relay", so a bench
/// can read its CPU from /proc/<pid>/task. No packet touches Python.
#[pyclass(module = "bridge._native")]
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
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = match locked(&self.relay).as_ref() {
            Some(r) => r.stats(),
            None => *locked(&self.stats),
        };
        py.import("json")?.call_method1("loads", (s.to_json(),))
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
