//! Congestion control, sans-IO: the transport-cc feedback the bridge sends about the packets it
//! receives ([`FeedbackBuilder`]), and a GCC-style send-side bandwidth estimator per receiver, fed
//! by the transport-cc feedback that receiver sends about what the bridge forwarded ([`Estimator`]).
//!
//! [`Prober`] sends a receiver short clusters above its estimate when the Allocator wants more than
//! the estimate allows, and the estimator's [`ClusterMeter`] reads the rate they arrived at.
//!
//! [`ReceiveEstimator`] is the receive-side variant for a sender that negotiated REMB and not
//! transport-cc.
//!
//! [`NackTracker`] keeps what the bridge did not receive of a sender's video, for its own NACKs.
//!
//! The first two take time as a [`std::time::Duration`] since an epoch the caller chooses (the same epoch
//! for every call on one value); neither reads a clock, and neither allocates after construction.

mod estimator;
mod feedback;
pub mod nack;
#[cfg(any(test, feature = "fuzzing"))]
pub mod oracle;
pub mod pacer;
pub mod probe;
mod remb;
pub mod trace;

#[cfg(test)]
mod tests;

pub use estimator::{
    BandwidthUsage, Estimator, EstimatorConfig, EstimatorStats, RateControlState, HISTORY,
};
pub use feedback::{FeedbackBuilder, FeedbackCounters, FeedbackLimits, WINDOW};
pub use nack::NackTracker;
pub use pacer::{Pacer, PacerStats};
pub use probe::{ClusterMeter, ProbeResult, ProbeStats, Prober};
pub use remb::ReceiveEstimator;
pub use trace::TraceWriter;

/// Extends 16-bit transport-wide sequence numbers to 64 bits: each one is taken as the value
/// nearest to the highest seen so far (at most 32767 behind or 32768 ahead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SeqUnwrapper {
    highest: Option<u64>,
}

impl SeqUnwrapper {
    /// The first value lands at 2^16 + seq, so no later value goes below zero.
    const START: u64 = 1 << 16;

    /// The unwrapped value of `seq`, without recording it.
    pub(crate) fn peek(&self, seq: u16) -> u64 {
        match self.highest {
            None => Self::START + u64::from(seq),
            Some(h) => {
                let step = seq.wrapping_sub(h as u16) as i16;
                h.wrapping_add_signed(i64::from(step))
            }
        }
    }

    /// The unwrapped value of `seq`, which becomes the highest when it is.
    pub(crate) fn update(&mut self, seq: u16) -> u64 {
        let s = self.peek(seq);
        self.highest = Some(self.highest.map_or(s, |h| h.max(s)));
        s
    }

    pub(crate) fn highest(&self) -> Option<u64> {
        self.highest
    }
}

/// Microseconds of a `Duration`, saturating (584 000 years fit).
#[inline]
pub(crate) fn micros(t: std::time::Duration) -> i64 {
    i64::try_from(t.as_micros()).unwrap_or(i64::MAX)
}
