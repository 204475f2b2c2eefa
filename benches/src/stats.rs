//! Order statistics of timing samples.

/// Median of `samples` (sorted in place); `None` if empty. With an even
/// count it is the mean of the two middle values.
pub fn median(samples: &mut [f64]) -> Option<f64> {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(samples[n / 2]),
        _ => Some((samples[n / 2 - 1] + samples[n / 2]) / 2.0),
    }
}

/// The `p`-th percentile of `samples` (sorted in place) by the nearest-rank
/// method: the smallest sample with at least `p`% of the samples at or below
/// it; `None` if empty. `p` is clamped to `0.0..=100.0`.
pub fn percentile(samples: &mut [f64], p: f64) -> Option<f64> {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n == 0 {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil() as usize;
    Some(samples[rank.clamp(1, n) - 1])
}

/// The 90th percentile of `samples` (see [`percentile`]).
pub fn p90(samples: &mut [f64]) -> Option<f64> {
    percentile(samples, 90.0)
}

/// Median and 90th percentile of a set of timings, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Median, in nanoseconds.
    pub median_ns: f64,
    /// 90th percentile (nearest rank), in nanoseconds.
    pub p90_ns: f64,
    /// Number of samples.
    pub samples: usize,
}

impl Summary {
    /// Summarises `nanos`; `None` if empty.
    pub fn of_nanos(nanos: &[u64]) -> Option<Summary> {
        let mut values: Vec<f64> = nanos.iter().map(|&n| n as f64).collect();
        Some(Summary { median_ns: median(&mut values)?, p90_ns: p90(&mut values)?, samples: values.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn p90_nearest_rank() {
        let mut ten: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert_eq!(p90(&mut ten), Some(9.0));
        let mut hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p90(&mut hundred), Some(90.0));
        assert_eq!(p90(&mut [7.0]), Some(7.0));
        assert_eq!(p90(&mut [1.0, 2.0]), Some(2.0));
        assert_eq!(p90(&mut []), None);
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0], 0.0), Some(1.0));
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0], 100.0), Some(3.0));
    }

    #[test]
    fn summary_median_never_exceeds_p90() {
        for n in 1..50u64 {
            let nanos: Vec<u64> = (0..n).map(|i| (i * 7919) % 101).collect();
            let s = Summary::of_nanos(&nanos).unwrap();
            assert!(s.median_ns <= s.p90_ns, "n={n}: {s:?}");
            assert_eq!(s.samples, n as usize);
        }
        assert_eq!(Summary::of_nanos(&[]), None);
        assert_eq!(Summary::of_nanos(&[5, 1, 3]), Some(Summary { median_ns: 3.0, p90_ns: 5.0, samples: 3 }));
    }
}
