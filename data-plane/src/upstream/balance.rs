//! Weighted round robin without locks: the smooth weighted round-robin
//! order (nginx's, which interleaves targets instead of bunching them) is
//! computed once per config into a schedule that requests walk with one
//! atomic counter.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest schedule kept; weights whose exact cycle is longer are scaled
/// down proportionally (shares stay within a fraction of a percent).
const MAX_SCHEDULE: usize = 4_096;

/// Picks target indices in proportion to their weights.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    schedule: Box<[u32]>,
    next: AtomicUsize,
}

impl WeightedRoundRobin {
    /// `weights[i]` is target i's share; zero-weight targets are never
    /// picked. At least one weight must be above zero.
    pub fn new(weights: &[u32]) -> Self {
        let divisor = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd).max(1);
        let mut scaled: Vec<u64> = weights.iter().map(|w| u64::from(w / divisor)).collect();
        let total: u64 = scaled.iter().sum();
        if total > MAX_SCHEDULE as u64 {
            scaled = scaled.iter().map(|w| if *w == 0 { 0 } else { (w * MAX_SCHEDULE as u64 / total).max(1) }).collect();
        }
        let total: i64 = scaled.iter().map(|w| *w as i64).sum();
        let mut current = vec![0i64; scaled.len()];
        let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&scaled) {
                *c += *w as i64;
            }
            let (best, _) = current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i))).expect("at least one target");
            current[best] -= total;
            schedule.push(u32::try_from(best).unwrap_or(0));
        }
        if schedule.is_empty() {
            schedule.push(0);
        }
        Self { schedule: schedule.into_boxed_slice(), next: AtomicUsize::new(0) }
    }

    /// The next target index.
    pub fn pick(&self) -> usize {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.schedule[n % self.schedule.len()] as usize
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(weights: &[u32], picks: usize) -> Vec<usize> {
        let rr = WeightedRoundRobin::new(weights);
        let mut counts = vec![0; weights.len()];
        for _ in 0..picks {
            counts[rr.pick()] += 1;
        }
        counts
    }

    #[test]
    fn equal_weights_alternate() {
        let rr = WeightedRoundRobin::new(&[100, 100]);
        let picks: Vec<usize> = (0..4).map(|_| rr.pick()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }

    #[test]
    fn shares_follow_weights_and_zero_gets_nothing() {
        assert_eq!(counts(&[300, 100, 0], 400), [300, 100, 0]);
        assert_eq!(counts(&[1, 2, 7], 1000), [100, 200, 700]);
    }

    #[test]
    fn smooth_order_interleaves() {
        let rr = WeightedRoundRobin::new(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| rr.pick()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn long_cycles_are_bounded_and_keep_shares() {
        let weights: Vec<u32> = (1..=1000).collect();
        let rr = WeightedRoundRobin::new(&weights);
        assert!(rr.schedule.len() <= MAX_SCHEDULE + weights.len());
        let c = counts(&[997, 991, 983], 2971 * 10);
        assert!(c.iter().zip([997, 991, 983]).all(|(c, w)| c.abs_diff(w * 10) <= 20), "{c:?}");
    }
}
