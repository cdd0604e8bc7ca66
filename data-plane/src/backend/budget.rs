//! The retry budget of a route: Finagle's `RetryBudget`. Every request
//! deposits `budget_percent` of a retry, every retry withdraws one, and both
//! expire after [`TTL_S`] seconds (ten one-second slots, so the window
//! slides); on top, a reserve of `budget_min_per_second` × [`TTL_S`]
//! retries. Over any window, retries add at most `budget_percent` of the
//! requests plus `budget_min_per_second` per second: a retry storm stays
//! bounded, and a quiet route, whose few requests deposit little, gets its
//! reserve back as its old retries leave the window (the reserve of 10 this
//! replaces only traffic refilled, and a route with one dead target of two
//! spent it for good).
//!
//! Envoy's budget (retries in flight at most a share of the active requests,
//! and at least `min_retry_concurrency`) bounds concurrency rather than a
//! rate; a rate fits retries that are mostly quick connect failures.
//! tower's `TpsBudget` is the same design, but it keeps `1 / percent`
//! withdrawals per deposit in whole numbers (40% allows 50%, 60% allows
//! 100%), reads the clock itself and, after a long quiet spell, clears its
//! slots one window at a time; here amounts are exact thousandths of a retry
//! and the clock is the caller's.

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// Seconds a deposit or withdrawal counts (Finagle's default `ttl`).
pub const TTL_S: u64 = 10;
/// One retry, in the thousandths the budget counts.
const RETRY: i64 = 1_000;

/// Per second (`second % TTL_S`): which second it holds, and the net
/// thousandths deposited in it.
type Slots = [(u64, i64); TTL_S as usize];

/// One route's budget.
#[derive(Debug)]
pub struct Budget {
    /// Thousandths of a retry each request deposits.
    deposit: i64,
    reserve: i64,
    /// Made at the first request or retry: most routes (and aggregate
    /// calls) have a budget, and one nobody calls holds an empty cell.
    slots: OnceLock<Box<Mutex<Slots>>>,
}

impl Budget {
    /// `percent` of the requests (0 to 100) plus `min_per_second` retries a second.
    pub fn new(percent: u32, min_per_second: u32) -> Self {
        Self {
            deposit: i64::from(percent.min(100)) * RETRY / 100,
            reserve: i64::from(min_per_second) * TTL_S as i64 * RETRY,
            slots: OnceLock::new(),
        }
    }

    /// Counts a request, at `now_ms`.
    pub fn deposit(&self, now_ms: u64) {
        if self.deposit > 0 {
            slot(&mut self.slots(), now_ms / 1_000).1 += self.deposit;
        }
    }

    /// Takes a retry if the budget has one, at `now_ms`.
    pub fn withdraw(&self, now_ms: u64) -> bool {
        let second = now_ms / 1_000;
        let mut slots = self.slots();
        let in_window = slots.iter().filter(|(at, _)| *at <= second && second - at < TTL_S).map(|(_, amount)| amount).sum::<i64>();
        if self.reserve + in_window < RETRY {
            return false;
        }
        slot(&mut slots, second).1 -= RETRY;
        true
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        let slots = self.slots.get_or_init(|| Box::new(Mutex::new([(u64::MAX, 0); TTL_S as usize])));
        slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The slot of `second`, emptied first if it held an older one.
fn slot(slots: &mut Slots, second: u64) -> &mut (u64, i64) {
    let slot = &mut slots[(second % TTL_S) as usize];
    if slot.0 != second {
        *slot = (second, 0);
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retries granted out of `wanted` in a row, at `now_ms`.
    fn granted(budget: &Budget, wanted: usize, now_ms: u64) -> usize {
        (0..wanted).filter(|_| budget.withdraw(now_ms)).count()
    }

    #[test]
    fn the_reserve_and_a_share_of_the_requests_bound_a_retry_storm() {
        let budget = Budget::new(10, 1);
        assert_eq!(granted(&budget, 100, 0), 10, "the reserve: 1 per second of the 10 s window");
        for _ in 0..100 {
            budget.deposit(0);
        }
        assert_eq!(granted(&budget, 100, 0), 10, "then 10% of the requests");
        let odd = Budget::new(40, 0);
        for _ in 0..100 {
            odd.deposit(0);
        }
        assert_eq!(granted(&odd, 100, 0), 40, "exactly the percentage");
    }

    #[test]
    fn a_quiet_route_gets_its_reserve_back_as_the_window_slides() {
        let budget = Budget::new(20, 10);
        // One request a second, each wanting two retries (say, one dead
        // target of three), for a minute: far more than any fixed reserve.
        for second in 0..60 {
            budget.deposit(second * 1_000);
            assert_eq!(granted(&budget, 2, second * 1_000), 2, "second {second}");
        }
        assert_eq!(granted(&budget, 1_000, 59_500), 100 - 20 + 2, "the reserve less the last 10 s of retries, plus 20% of their requests");
        assert_eq!(granted(&budget, 1_000, 59_500 + TTL_S * 1_000), 100, "a quiet window later the whole reserve is back");
    }

    #[test]
    fn without_a_minimum_only_traffic_pays_for_retries_and_deposits_expire() {
        let budget = Budget::new(50, 0);
        assert_eq!(granted(&budget, 10, 0), 0);
        for _ in 0..10 {
            budget.deposit(0);
        }
        assert_eq!(granted(&budget, 10, 0), 5);
        assert_eq!(granted(&budget, 10, 9_999), 0, "still spent 9.999 s later");
        for _ in 0..10 {
            budget.deposit(10_000);
        }
        assert_eq!(granted(&budget, 10, 10_000), 5, "the first second left the window, its deposits and withdrawals together");
        assert_eq!(granted(&budget, 10, 3_600_000), 0, "an hour later, nothing is left and nothing is owed");
    }
}
