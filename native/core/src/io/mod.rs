//! io (work in progress)
