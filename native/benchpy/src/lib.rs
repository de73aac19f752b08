//! bench._native: the load generator (sluice-loadgen), the raw relay baseline and an SRTP test
//! helper for Python, apart from the bridge's own module (bridge._native): `sluice serve` and
//! `sluice bridge` never load it, and the bridge's wheel does not carry it. Conversions only.

mod loadgen;
mod srtp;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_native")]
fn bench_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<loadgen::LoadGen>()?;
    m.add_class::<loadgen::RawRelay>()?;
    m.add_class::<srtp::SrtpSession>()?;
    m.add("SRTP_PROFILES", srtp::PROFILES.map(|p| p.dtls_name()))?;
    Ok(())
}
