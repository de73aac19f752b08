//! Test-only helpers for the workspace's crates, taken as a dev-dependency only: nothing here is
//! linked into the bridge or the load generator.

pub mod av1;
pub mod counting_alloc;
