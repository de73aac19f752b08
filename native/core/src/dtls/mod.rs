//! dtls (work in progress)
