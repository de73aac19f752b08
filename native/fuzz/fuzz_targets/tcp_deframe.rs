#![no_main]
//! Feeds arbitrary bytes to the ICE-TCP deframer (RFC 4571) in reads whose sizes the first byte
//! chooses: every frame it yields is non-empty, at most MAX_FRAME, and exactly the bytes its length
//! prefix framed; after a framing error nothing more is read from that stream.

use libfuzzer_sys::fuzz_target;
use sluice_core::io::tcp::{Deframer, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let Some((&step, mut rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1) * 7;
    let mut d = Deframer::default();
    let mut consumed = 0usize;
    let mut fed = Vec::new();
    while !rest.is_empty() {
        let spare = d.spare();
        let n = step.min(rest.len()).min(spare.len());
        if n == 0 {
            return;
        }
        spare[..n].copy_from_slice(&rest[..n]);
        d.filled(n);
        fed.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty() && frame.len() <= MAX_FRAME);
                    let len = usize::from(u16::from_be_bytes([fed[consumed], fed[consumed + 1]]));
                    assert_eq!(len, frame.len());
                    assert_eq!(frame, &fed[consumed + 2..consumed + 2 + len]);
                    consumed += 2 + len;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
