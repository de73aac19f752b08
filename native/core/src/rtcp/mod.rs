//! rtcp (work in progress)
