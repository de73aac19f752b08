//! Tests of the feedback writer (round trips through the transport-cc parser) and of the
//! estimator, alone and driving a sender over a simulated bottleneck.

mod estimator;
mod feedback;
mod recorded;
mod sim;
