//! bench._native.SrtpSession: sluice-core's SRTP/SRTCP contexts for the differential tests against
//! libsrtp (tests/unit/test_srtp_differential.py). Conversions only.

use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use sluice_core::srtp::{SrtpContext, SrtpProfile};

/// Every profile `SrtpSession` accepts: all that sluice-core implements and DTLS-SRTP negotiates.
pub const PROFILES: [SrtpProfile; 2] =
    [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80];

/// One SRTP/SRTCP session (a send and a receive context from one master key), for differential tests.
#[pyclass(module = "bench._native")]
pub struct SrtpSession {
    // PyO3 objects may be shared across threads; the contexts are Send, not Sync.
    tx: Mutex<SrtpContext>,
    rx: Mutex<SrtpContext>,
}

fn lock(m: &Mutex<SrtpContext>) -> std::sync::MutexGuard<'_, SrtpContext> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[pymethods]
impl SrtpSession {
    #[new]
    fn new(profile: &str, key: &[u8], salt: &[u8]) -> PyResult<Self> {
        let p = SrtpProfile::from_dtls_name(profile)
            .ok_or_else(|| PyValueError::new_err(format!("unknown SRTP profile {profile:?}")))?;
        let make =
            || SrtpContext::new(p, key, salt).map_err(|e| PyValueError::new_err(format!("{e:?}")));
        Ok(SrtpSession {
            tx: Mutex::new(make()?),
            rx: Mutex::new(make()?),
        })
    }

    fn protect_rtp<'py>(&self, py: Python<'py>, packet: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let mut tx = lock(&self.tx);
        let overhead = tx.profile().rtp_overhead();
        let mut buf = vec![0u8; packet.len() + overhead];
        buf[..packet.len()].copy_from_slice(packet);
        let n = tx
            .protect_rtp(&mut buf, packet.len())
            .map_err(|e| PyValueError::new_err(format!("{e:?}")))?;
        Ok(PyBytes::new(py, &buf[..n]))
    }

    fn unprotect_rtp<'py>(&self, py: Python<'py>, packet: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let mut buf = packet.to_vec();
        let n = lock(&self.rx)
            .unprotect_rtp(&mut buf)
            .map_err(|e| PyValueError::new_err(format!("{e:?}")))?;
        Ok(PyBytes::new(py, &buf[..n]))
    }

    fn protect_rtcp<'py>(&self, py: Python<'py>, packet: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let mut tx = lock(&self.tx);
        let overhead = tx.profile().rtcp_overhead();
        let mut buf = vec![0u8; packet.len() + overhead];
        buf[..packet.len()].copy_from_slice(packet);
        let n = tx
            .protect_rtcp(&mut buf, packet.len())
            .map_err(|e| PyValueError::new_err(format!("{e:?}")))?;
        Ok(PyBytes::new(py, &buf[..n]))
    }

    fn unprotect_rtcp<'py>(&self, py: Python<'py>, packet: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let mut buf = packet.to_vec();
        let n = lock(&self.rx)
            .unprotect_rtcp(&mut buf)
            .map_err(|e| PyValueError::new_err(format!("{e:?}")))?;
        Ok(PyBytes::new(py, &buf[..n]))
    }
}
