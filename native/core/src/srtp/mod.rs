//! srtp (work in progress)
