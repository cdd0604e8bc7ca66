//! Retries: which requests may be tried again (idempotent methods unless a
//! route opts in, bodies small enough to keep), on which outcomes, and a
//! budget per route so that retries add at most a share of the traffic.
//!
//! The budget is Finagle's `RetryBudget`, as tower's [`TpsBudget`] implements
//! it: every request deposits, every retry withdraws, and both expire after
//! [`BUDGET_TTL`] (a sliding window of ten slots), on top of a reserve of
//! `budget_min_per_second` retries per second of the window. So retries add
//! at most `budget_percent` of the requests plus that minimum rate, and a
//! quiet route, whose few requests deposit little, is never starved: its
//! reserve comes back as the window slides (a fixed reserve that only
//! traffic refilled ran dry on a route with one dead target of two). Envoy's
//! budget (a share of the requests in flight, at least
//! `min_retry_concurrency`) bounds concurrency rather than rate; a rate
//! suits a route whose retries are quick connect failures.

use std::time::Duration;

use http::Method;
use portico_shared::model::{Retries, RetryOn};
use tower::retry::budget::{Budget as _, TpsBudget};

/// Largest request body kept for retries; a larger one is streamed once.
pub const MAX_KEPT_BODY: u64 = 64 * 1024;
/// How long a request's deposit and a retry's withdrawal count (Finagle's default).
pub const BUDGET_TTL: Duration = Duration::from_secs(10);
/// Highest `budget_min_per_second` (validation refuses more; tower asserts below `i32::MAX`).
const MAX_MIN_PER_SECOND: u32 = 1_000;

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
    /// Tries in all (`attempts` 0 is one try, like 1).
    pub attempts: u32,
    on: Vec<RetryOn>,
    pub per_try_timeout: Option<Duration>,
    non_idempotent: bool,
    budget: TpsBudget,
}

impl RetryPlan {
    /// Whether `retries` asks for anything: more than one try, or a
    /// timeout per try.
    pub fn wanted(retries: &Retries) -> bool {
        retries.attempts > 1 || retries.per_try_timeout_ms.is_some()
    }

    pub fn new(retries: &Retries) -> Self {
        let percent = retries.budget_percent.min(100) as f32 / 100.0;
        Self {
            settings: retries.clone(),
            attempts: retries.attempts.max(1),
            on: retries.on.clone(),
            per_try_timeout: retries.per_try_timeout_ms.map(|ms| Duration::from_millis(u64::from(ms))),
            non_idempotent: retries.non_idempotent,
            budget: TpsBudget::new(BUDGET_TTL, retries.budget_min_per_second.min(MAX_MIN_PER_SECOND), percent),
        }
    }

    /// Whether this plan was built from `retries`.
    pub fn is_for(&self, retries: &Retries) -> bool {
        self.settings == *retries
    }

    /// Whether a retry may follow a try that went out (on anything but a
    /// connect failure), so that each try must send a copy of the request;
    /// a connect failure hands the request back.
    pub fn retries_sent_requests(&self) -> bool {
        self.on.iter().any(|on| *on != RetryOn::ConnectFailure)
    }

    /// Whether requests with `method` may be retried at all.
    pub fn allows(&self, method: &Method) -> bool {
        self.non_idempotent
            || matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
    }

    /// Counts a request into the budget.
    pub fn deposit(&self) {
        self.budget.deposit();
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
        if !self.budget.withdraw() {
            crate::metrics::retry_budget_exhausted();
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(budget_percent: u32, budget_min_per_second: u32) -> RetryPlan {
        RetryPlan::new(&Retries {
            attempts: 3,
            on: vec![RetryOn::ConnectFailure, RetryOn::Status503],
            budget_percent,
            budget_min_per_second,
            ..Retries::default()
        })
    }

    /// Retries granted out of `wanted` in a row.
    fn granted(plan: &RetryPlan, wanted: usize) -> usize {
        (0..wanted).filter(|_| plan.retry(Outcome::ConnectFailure)).count()
    }

    #[test]
    fn retries_only_what_it_is_told_and_idempotent_methods() {
        let p = plan(20, 10);
        assert!(p.retry(Outcome::ConnectFailure) && p.retry(Outcome::Status(503)));
        assert!(!p.retry(Outcome::Reset) && !p.retry(Outcome::Status(500)) && !p.retry(Outcome::Status(502)));
        assert!(p.allows(&Method::GET) && p.allows(&Method::PUT) && !p.allows(&Method::POST) && !p.allows(&Method::PATCH));
    }

    #[test]
    fn zero_or_one_attempt_without_a_per_try_timeout_needs_no_plan() {
        let off = |attempts| Retries { attempts, ..Retries::default() };
        assert!(!RetryPlan::wanted(&off(0)) && !RetryPlan::wanted(&off(1)) && RetryPlan::wanted(&Retries::default()));
        assert!(RetryPlan::wanted(&Retries { per_try_timeout_ms: Some(100), ..off(0) }));
        assert_eq!(RetryPlan::new(&off(0)).attempts, 1, "attempts 0 is one try");
    }

    // The budget runs on tokio's clock, paused here and moved by hand.

    #[tokio::test(start_paused = true)]
    async fn the_budget_stops_a_retry_storm_and_adds_a_share_of_the_requests() {
        let p = plan(10, 1);
        assert_eq!(granted(&p, 100), 10, "the reserve: 1 per second of the 10 s window");
        for _ in 0..100 {
            p.deposit();
        }
        assert_eq!(granted(&p, 100), 10, "then 10% of the requests");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_route_gets_its_reserve_back_as_the_window_slides() {
        let p = plan(20, 10);
        // One request a second, each needing a retry (one dead target of two),
        // for a minute: far more retries than any fixed reserve.
        for second in 0..60 {
            p.deposit();
            assert_eq!(granted(&p, 2), 2, "second {second}");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(granted(&p, 1_000), 100 - 20 + 2, "spent the last 10 s: 10/s for 10 s, less what they used, plus 20% of 10 requests");
        tokio::time::advance(BUDGET_TTL + Duration::from_secs(1)).await;
        assert_eq!(granted(&p, 1_000), 100, "a quiet window later the whole reserve is back");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_minimum_only_traffic_pays_for_retries() {
        let p = plan(50, 0);
        assert_eq!(granted(&p, 10), 0);
        for _ in 0..10 {
            p.deposit();
        }
        assert_eq!(granted(&p, 10), 5);
        tokio::time::advance(BUDGET_TTL + Duration::from_secs(1)).await;
        assert_eq!(granted(&p, 10), 0, "deposits expire with the window");
    }
}
