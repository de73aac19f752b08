//! Packet index estimation, replay windows and the per-SSRC map (RFC 3711 §3.3.1, §3.3.2, App. A).

use super::SrtpError;

/// Replay window size in packets (RFC 3711 §3.3.2 asks for at least 64; libsrtp uses 128).
pub const REPLAY_WINDOW: u64 = 128;

/// RFC 3711 §3.3.1 and Appendix A: the 48-bit packet index i = 2^16 * ROC + SEQ for a received
/// SEQ, given the highest index seen so far (whose top 32 bits are ROC and low 16 bits are s_l).
///
/// ```text
/// if s_l < 32768:  v = ROC - 1 if SEQ - s_l > 32768 else ROC
/// else:            v = ROC + 1 if s_l - 32768 > SEQ else ROC
/// ```
///
/// Returns `None` when the guess would be ROC - 1 with ROC = 0: the packet would precede the
/// stream's first index, so it can only be a replay or garbage.
pub fn estimate_index(highest: u64, seq: u16) -> Option<u64> {
    let roc = highest >> 16;
    let s_l = i32::from((highest & 0xffff) as u16);
    let seq_i = i32::from(seq);
    let v = if s_l < 32768 {
        if seq_i - s_l > 32768 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if s_l - 32768 > seq_i {
        roc + 1
    } else {
        roc
    };
    Some((v << 16) | u64::from(seq))
}

/// Sliding replay window over packet indices (RFC 3711 §3.3.2).
///
/// Bit k of `seen` records whether index `highest - k` was authenticated.
#[derive(Clone, Copy, Debug)]
pub struct ReplayWindow {
    highest: u64,
    seen: u128,
}

impl ReplayWindow {
    /// A window whose first authenticated index is `index`.
    pub fn new(index: u64) -> Self {
        Self {
            highest: index,
            seen: 1,
        }
    }

    /// The highest authenticated index.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// `Replay` if `index` was already accepted or is older than the window.
    pub fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.highest {
            return Ok(());
        }
        let delta = self.highest - index;
        if delta >= REPLAY_WINDOW || (self.seen >> delta) & 1 == 1 {
            return Err(SrtpError::Replay);
        }
        Ok(())
    }

    /// Records an authenticated `index` (that passed `check`).
    pub fn commit(&mut self, index: u64) {
        if index > self.highest {
            let shift = index - self.highest;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            let delta = self.highest - index;
            if delta < REPLAY_WINDOW {
                self.seen |= 1u128 << delta;
            }
        }
    }
}

/// A small map from SSRC to per-stream state: sorted keys and binary search, no hashing.
///
/// Allocates only when a new SSRC does not fit the reserved capacity.
pub struct SsrcMap<T> {
    keys: Vec<u32>,
    values: Vec<T>,
    limit: usize,
}

impl<T> SsrcMap<T> {
    /// An empty map with room for `reserve` SSRCs that refuses to grow past `limit`.
    pub fn new(reserve: usize, limit: usize) -> Self {
        Self {
            keys: Vec::with_capacity(reserve),
            values: Vec::with_capacity(reserve),
            limit,
        }
    }

    /// The state for `ssrc`, if seen.
    pub fn get(&self, ssrc: u32) -> Option<&T> {
        let at = self.keys.binary_search(&ssrc).ok()?;
        self.values.get(at)
    }

    /// The state for `ssrc`, mutably, if seen.
    pub fn get_mut(&mut self, ssrc: u32) -> Option<&mut T> {
        let at = self.keys.binary_search(&ssrc).ok()?;
        self.values.get_mut(at)
    }

    /// Inserts or replaces the state for `ssrc`; `TooManySsrcs` once `limit` SSRCs are held.
    pub fn insert(&mut self, ssrc: u32, value: T) -> Result<&mut T, SrtpError> {
        let at = match self.keys.binary_search(&ssrc) {
            Ok(at) => {
                let slot = self.values.get_mut(at).ok_or(SrtpError::Crypto)?;
                *slot = value;
                return Ok(slot);
            }
            Err(at) => at,
        };
        if self.keys.len() >= self.limit {
            return Err(SrtpError::TooManySsrcs);
        }
        self.keys.insert(at, ssrc);
        self.values.insert(at, value);
        self.values.get_mut(at).ok_or(SrtpError::Crypto)
    }

    /// Number of SSRCs held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Changes the SSRC limit (existing entries are kept).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3711_3_3_1_index_estimation() {
        // Same ROC in the middle of the space.
        assert_eq!(estimate_index(1000, 1001), Some(1001));
        assert_eq!(estimate_index(1000, 999), Some(999));
        // s_l near the top, SEQ wrapped: ROC + 1.
        assert_eq!(estimate_index(65_530, 3), Some(65_536 + 3));
        // s_l just wrapped, a late packet from before the wrap: ROC - 1.
        assert_eq!(estimate_index(65_536 + 2, 65_534), Some(65_534));
        // Would need ROC - 1 with ROC = 0.
        assert_eq!(estimate_index(5, 60_000), None);
        // Exactly half the space ahead still counts as the same ROC.
        assert_eq!(estimate_index(0, 32_768), Some(32_768));
    }

    #[test]
    fn rfc3711_3_3_2_replay_window() {
        let mut w = ReplayWindow::new(500);
        assert_eq!(w.check(500), Err(SrtpError::Replay));
        assert_eq!(w.check(499), Ok(()));
        w.commit(499);
        assert_eq!(w.check(499), Err(SrtpError::Replay));
        w.commit(600);
        assert_eq!(w.highest(), 600);
        assert_eq!(w.check(500), Err(SrtpError::Replay));
        assert_eq!(w.check(501), Ok(()));
        assert_eq!(w.check(600 - 127), Ok(()));
        assert_eq!(w.check(600 - 128), Err(SrtpError::Replay));
        w.commit(10_000);
        assert_eq!(w.check(600), Err(SrtpError::Replay));
        assert_eq!(w.check(9_999), Ok(()));
    }

    #[test]
    fn ssrc_map_sorted_and_bounded() {
        let mut m = SsrcMap::new(2, 3);
        assert_eq!(m.len(), 0);
        for ssrc in [30u32, 10, 20] {
            *m.insert(ssrc, ssrc * 2).expect("below the limit") += 1;
        }
        assert_eq!(m.get(10), Some(&21));
        assert_eq!(m.get(20), Some(&41));
        assert_eq!(m.get(30), Some(&61));
        assert_eq!(m.get(40), None);
        assert_eq!(m.insert(40, 0).err(), Some(SrtpError::TooManySsrcs));
        assert!(
            m.insert(20, 7).is_ok(),
            "replacing an existing SSRC is allowed at the limit"
        );
        assert_eq!(m.get(20), Some(&7));
        assert_eq!(m.len(), 3);
    }
}
