//! A log-linear histogram of nanosecond values in fixed memory (the HDR histogram idea).
//!
//! Values below 2^SUB_BITS get one bucket each; above, each power of two is split into 2^SUB_BITS
//! equal buckets, so a bucket's width is at most 1/32 of its value (about 3 % relative error).
//! Values up to 2^MAX_EXP ns (about 68 s) are kept; larger ones land in the last bucket.

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const MAX_EXP: u32 = 36;
/// One linear group for 0..32, then one group per exponent 5..=MAX_EXP.
pub const BUCKETS: usize = SUB * (MAX_EXP - SUB_BITS + 2) as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

#[inline]
fn index_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = ((v >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    (exp - SUB_BITS + 1) as usize * SUB + sub
}

/// The largest value that lands in bucket `i`.
fn upper_of(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let group = (i / SUB) as u32; // 1 = exponent SUB_BITS
    let exp = group + SUB_BITS - 1;
    let sub = (i % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    (1u64 << exp) + (sub + 1) * width - 1
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[index_of(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.count = 0;
        self.sum = 0;
        self.min = u64::MAX;
        self.max = 0;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at quantile `q` (0..=1): the upper edge of the bucket holding it, capped by the
    /// true maximum, so it never understates by more than a bucket.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper_of(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// Non-empty buckets as (upper edge in ns, count), for plots.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (upper_of(i), c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut last = None;
        for i in 0..BUCKETS - 1 {
            let up = upper_of(i);
            assert_eq!(index_of(up), i, "upper edge of {i}");
            assert_eq!(index_of(up + 1), i + 1, "next after {i}");
            if let Some(l) = last {
                assert!(up > l);
            }
            last = Some(up);
        }
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn relative_error_is_within_one_thirty_second() {
        for v in [33u64, 1000, 12_345, 999_999, 1 << 30, 50_000_000_000] {
            let up = upper_of(index_of(v));
            assert!(up >= v);
            assert!((up - v) as f64 <= v as f64 / 32.0, "{v} -> {up}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5).expect("p50");
        let p99 = h.quantile(0.99).expect("p99");
        assert!(
            (5_000_000..=5_000_000 + 5_000_000 / 32).contains(&p50),
            "{p50}"
        );
        assert!(
            (9_900_000..=9_900_000 + 9_900_000 / 32).contains(&p99),
            "{p99}"
        );
        assert_eq!(h.quantile(1.0), Some(10_000_000));
        assert_eq!(h.min(), Some(1000));
        assert_eq!(h.count(), 10_000);
        let mut m = Histogram::new();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count(), 20_000);
        assert_eq!(m.quantile(0.5), h.quantile(0.5));
        assert_eq!(Histogram::new().quantile(0.5), None);
    }
}
