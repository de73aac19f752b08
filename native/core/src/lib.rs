//! Sluice packet path.
//!
//! Protocol machines here are sans-IO: they take input and the current time and return what to send
//! and when to be woken. Only `io` and the shard loop own sockets, threads and clocks.

pub mod cc;
pub mod codec;
pub mod domain;
pub mod dtls;
pub mod ice;
pub mod io;
pub mod projection;
pub mod queue;
pub mod router;
pub mod rtcp;
pub mod rtp;
pub mod seam;
pub mod shard;
pub mod srtp;
pub mod stats;
pub mod stun;
pub mod transport;
