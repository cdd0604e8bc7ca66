//! The balancers. Weighted round robin without locks: the smooth weighted
//! round-robin order (nginx's, which interleaves targets instead of
//! bunching them) is computed once per config into a schedule that requests
//! walk with one atomic counter. Least requests: the power of two choices
//! over in-flight counts. Consistent hashing: a ring of points per target.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;
use sha2::{Digest, Sha256};

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

    /// The next target index that is `healthy`. Skipped slots use up the
    /// shared counter too, so the others keep their relative shares.
    pub fn pick(&self, healthy: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.schedule.len())
            .map(|_| self.schedule[self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len()] as usize)
            .find(|i| healthy(*i))
    }
}

/// Power of two choices: two targets drawn in proportion to their weights,
/// the one with fewer requests in flight per unit of weight wins.
#[derive(Debug)]
pub struct LeastRequests {
    weights: Box<[u32]>,
    in_flight: Box<[AtomicUsize]>,
}

/// A request counted in flight on a target until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LeastRequests {
    pub fn new(weights: &[u32]) -> Self {
        Self { weights: weights.into(), in_flight: weights.iter().map(|_| AtomicUsize::new(0)).collect() }
    }

    /// A target drawn in proportion to its weight among the `allowed` ones
    /// (`total`: their weights).
    fn draw(&self, rng: &mut impl Rng, total: u64, allowed: &[bool]) -> Option<usize> {
        let mut point = rng.random_range(0..total);
        for (i, w) in self.weights.iter().enumerate().filter(|(i, _)| allowed[*i]) {
            if point < u64::from(*w) {
                return Some(i);
            }
            point -= u64::from(*w);
        }
        None
    }

    /// The chosen `healthy` target, counted in flight until the guard drops.
    /// Health is read once per pick, so both draws see the same targets.
    pub fn pick(&self, healthy: impl Fn(usize) -> bool) -> Option<(usize, InFlight<'_>)> {
        let allowed: Vec<bool> = (0..self.weights.len()).map(healthy).collect();
        let total: u64 = self.weights.iter().zip(&allowed).filter(|(_, ok)| **ok).map(|(w, _)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut rng = rand::rng();
        let (a, b) = (self.draw(&mut rng, total, &allowed)?, self.draw(&mut rng, total, &allowed)?);
        // In flight per unit of weight, compared without dividing; a tie
        // (an idle fleet) keeps the first draw, so shares follow the weights.
        let busy = |i: usize| self.in_flight[i].load(Ordering::Relaxed) as u64;
        let chosen = if busy(b) * u64::from(self.weights[a]) < busy(a) * u64::from(self.weights[b]) { b } else { a };
        self.in_flight[chosen].fetch_add(1, Ordering::Relaxed);
        Some((chosen, InFlight(&self.in_flight[chosen])))
    }
}

/// Points on the ring per unit of weight (100 is the default weight).
const POINTS_PER_WEIGHT: u32 = 160;
/// Most points of one target.
const MAX_POINTS: u32 = 400;

/// A consistent-hash ring: each target owns points in proportion to its
/// weight, and a value goes to the target of the first point at or after
/// its hash. Adding or removing a target moves only the values of its own
/// points. Hashes are sha256 (stable across builds and data planes).
#[derive(Debug)]
pub struct HashRing {
    points: Box<[(u64, u32)]>,
}

fn ring_hash(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    u64::from_be_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
}

impl HashRing {
    /// `targets[i]` names target i (its authority) and weighs `weights[i]`.
    pub fn new(targets: &[&str], weights: &[u32]) -> Self {
        let mut points = Vec::new();
        for (i, (name, weight)) in targets.iter().zip(weights).enumerate() {
            let count = if *weight == 0 { 0 } else { (weight * POINTS_PER_WEIGHT / 100).clamp(1, MAX_POINTS) };
            for n in 0..count {
                points.push((ring_hash(format!("{name}#{n}").as_bytes()), u32::try_from(i).unwrap_or(0)));
            }
        }
        points.sort_unstable();
        Self { points: points.into_boxed_slice() }
    }

    /// The target for `value`: the owner of the first point at or after its
    /// hash, skipping points of targets that are not `healthy`.
    pub fn pick(&self, value: &[u8], healthy: impl Fn(usize) -> bool) -> Option<usize> {
        let hash = ring_hash(value);
        let at = self.points.partition_point(|(point, _)| *point < hash);
        let len = self.points.len();
        (0..len).map(|step| self.points[(at + step) % len].1 as usize).find(|i| healthy(*i))
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
            counts[rr.pick(|_| true).expect("a target")] += 1;
        }
        counts
    }

    fn counts_without(weights: &[u32], down: usize, picks: usize) -> Vec<usize> {
        let rr = WeightedRoundRobin::new(weights);
        let mut counts = vec![0; weights.len()];
        for _ in 0..picks {
            counts[rr.pick(|i| i != down).expect("a target")] += 1;
        }
        counts
    }

    #[test]
    fn equal_weights_alternate() {
        let rr = WeightedRoundRobin::new(&[100, 100]);
        let picks: Vec<usize> = (0..4).map(|_| rr.pick(|_| true).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
        let only_one: Vec<usize> = (0..3).map(|_| rr.pick(|i| i == 1).unwrap()).collect();
        assert_eq!(only_one, [1, 1, 1], "unhealthy targets are skipped");
        assert_eq!(counts_without(&[1, 1, 1], 0, 600), [0, 300, 300], "the others keep equal shares");
        assert_eq!(rr.pick(|_| false), None);
    }

    #[test]
    fn shares_follow_weights_and_zero_gets_nothing() {
        assert_eq!(counts(&[300, 100, 0], 400), [300, 100, 0]);
        assert_eq!(counts(&[1, 2, 7], 1000), [100, 200, 700]);
    }

    #[test]
    fn smooth_order_interleaves() {
        let rr = WeightedRoundRobin::new(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| rr.pick(|_| true).unwrap()).collect();
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

    #[test]
    fn least_requests_prefers_the_idler_target_and_counts_down() {
        let lr = LeastRequests::new(&[100, 100]);
        lr.in_flight[0].store(5, Ordering::Relaxed);
        let picks: Vec<usize> = (0..200).map(|_| lr.pick(|_| true).unwrap().0).collect();
        // Target 0 wins only when both draws are 0 (a quarter of the time).
        assert!(picks.iter().filter(|p| **p == 1).count() > 120, "target 1 is idle: {picks:?}");
        let held = lr.pick(|_| true).unwrap();
        assert_eq!(lr.in_flight[held.0].load(Ordering::Relaxed), if held.0 == 0 { 6 } else { 1 });
        let weighted = LeastRequests::new(&[300, 100]);
        let heavy = (0..4_000).filter(|_| weighted.pick(|_| true).unwrap().0 == 0).count();
        assert!((0..100).all(|_| weighted.pick(|i| i == 1).unwrap().0 == 1), "only healthy targets are drawn");
        assert!(weighted.pick(|_| false).is_none());
        assert!((2_800..=3_200).contains(&heavy), "idle targets share by weight: {heavy}");
        drop(held);
        assert_eq!((lr.in_flight[0].load(Ordering::Relaxed), lr.in_flight[1].load(Ordering::Relaxed)), (5, 0), "guards count down");
    }

    #[test]
    fn consistent_hash_moves_only_the_new_targets_share() {
        let three = HashRing::new(&["a:1", "b:1", "c:1"], &[100, 100, 100]);
        let four = HashRing::new(&["a:1", "b:1", "c:1", "d:1"], &[100, 100, 100, 100]);
        let keys: Vec<String> = (0..10_000).map(|i| format!("client-{i}")).collect();
        let mut moved = 0;
        let mut per_target = [0usize; 4];
        for key in &keys {
            let (before, after) = (three.pick(key.as_bytes(), |_| true).unwrap(), four.pick(key.as_bytes(), |_| true).unwrap());
            per_target[after] += 1;
            if before != after {
                moved += 1;
                assert_eq!(after, 3, "a key only ever moves to the new target");
            }
        }
        assert!((1_800..=3_200).contains(&moved), "about a quarter moves: {moved}");
        assert!(per_target.iter().all(|n| (1_800..=3_200).contains(n)), "{per_target:?}");
        assert_eq!(three.pick(b"client-7", |_| true), three.pick(b"client-7", |_| true), "stable");
        let moved_off_c =
            keys.iter().filter(|k| three.pick(k.as_bytes(), |_| true) == Some(2)).all(|k| three.pick(k.as_bytes(), |i| i != 2) != Some(2));
        assert!(moved_off_c, "an unhealthy target's keys go elsewhere");
        let weighted = HashRing::new(&["a:1", "b:1"], &[300, 100]);
        let heavy = keys.iter().filter(|k| weighted.pick(k.as_bytes(), |_| true) == Some(0)).count();
        assert!((6_800..=8_200).contains(&heavy), "shares follow weights: {heavy}");
    }
}
