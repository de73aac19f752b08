//! ice (work in progress)
