//! stun (work in progress)
