//! Retries: which requests may be tried again (idempotent methods unless a
//! route opts in, bodies small enough to keep), on which outcomes, and a
//! budget per route so that retries add at most a share of the traffic.

use std::sync::Mutex;
use std::time::Duration;

use http::Method;
use portico_shared::model::{Retries, RetryOn};

/// Largest request body kept for retries; a larger one is streamed once.
pub const MAX_KEPT_BODY: u64 = 64 * 1024;
/// The budget counts thousandths of a retry.
const RETRY: u64 = 1_000;
/// Retries the budget allows before any traffic has paid for them.
const RESERVE: u64 = 10 * RETRY;
/// Most retries the budget saves up.
const MAX_SAVED: u64 = 1_000 * RETRY;

/// What a try ended with, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    ConnectFailure,
    Reset,
    Timeout,
    Status(u16),
}

/// A route's retry settings, compiled.
#[derive(Debug)]
pub struct RetryPlan {
    /// The settings this was built from (a new version with the same keeps the budget).
    settings: Retries,
    pub attempts: u32,
    on: Vec<RetryOn>,
    pub per_try_timeout: Option<Duration>,
    non_idempotent: bool,
    /// Retries saved up, in thousandths: each request adds `budget_percent / 100`.
    budget: Mutex<u64>,
    deposit: u64,
}

impl RetryPlan {
    pub fn new(retries: &Retries) -> Self {
        Self {
            settings: retries.clone(),
            attempts: retries.attempts,
            on: retries.on.clone(),
            per_try_timeout: retries.per_try_timeout_ms.map(|ms| Duration::from_millis(u64::from(ms))),
            non_idempotent: retries.non_idempotent,
            budget: Mutex::new(RESERVE),
            deposit: u64::from(retries.budget_percent) * RETRY / 100,
        }
    }

    /// Whether this plan was built from `retries`.
    pub fn is_for(&self, retries: &Retries) -> bool {
        self.settings == *retries
    }

    /// Whether requests with `method` may be retried at all.
    pub fn allows(&self, method: &Method) -> bool {
        self.non_idempotent
            || matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
    }

    /// Counts a request into the budget.
    pub fn deposit(&self) {
        let mut budget = self.budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *budget = (*budget + self.deposit).min(MAX_SAVED);
    }

    /// Whether `outcome` is worth another try (taking one from the budget).
    pub fn retry(&self, outcome: Outcome) -> bool {
        let wanted = match outcome {
            Outcome::ConnectFailure => RetryOn::ConnectFailure,
            Outcome::Reset => RetryOn::Reset,
            Outcome::Timeout => RetryOn::Timeout,
            Outcome::Status(502) => RetryOn::Status502,
            Outcome::Status(503) => RetryOn::Status503,
            Outcome::Status(504) => RetryOn::Status504,
            Outcome::Status(_) => return false,
        };
        if !self.on.contains(&wanted) {
            return false;
        }
        let mut budget = self.budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *budget < RETRY {
            crate::metrics::retry_budget_exhausted();
            return false;
        }
        *budget -= RETRY;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(budget_percent: u32) -> RetryPlan {
        RetryPlan::new(&Retries {
            attempts: 3,
            on: vec![RetryOn::ConnectFailure, RetryOn::Status503],
            per_try_timeout_ms: None,
            budget_percent,
            non_idempotent: false,
        })
    }

    #[test]
    fn retries_only_what_it_is_told_and_idempotent_methods() {
        let p = plan(20);
        assert!(p.retry(Outcome::ConnectFailure) && p.retry(Outcome::Status(503)));
        assert!(!p.retry(Outcome::Reset) && !p.retry(Outcome::Status(500)) && !p.retry(Outcome::Status(502)));
        assert!(p.allows(&Method::GET) && p.allows(&Method::PUT) && !p.allows(&Method::POST) && !p.allows(&Method::PATCH));
    }

    #[test]
    fn the_budget_stops_a_retry_storm() {
        let p = plan(10);
        let granted = (0..100).filter(|_| p.retry(Outcome::ConnectFailure)).count();
        assert_eq!(granted, 10, "the reserve only");
        for _ in 0..100 {
            p.deposit();
        }
        let granted = (0..100).filter(|_| p.retry(Outcome::ConnectFailure)).count();
        assert_eq!(granted, 10, "then 10% of the requests");
    }
}
