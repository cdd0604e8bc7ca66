//! Retries: which requests may be tried again (idempotent ones unless a
//! route opts in, bodies small enough to keep), on which outcomes, and a
//! budget per route ([`super::budget`]) so that retries add at most a share
//! of the traffic.

use std::time::Duration;

use portico_shared::model::{Retries, RetryOn};

use super::budget::Budget;
use crate::upstream::health::now_ms;

/// Largest request body kept for retries; a larger one is streamed once.
pub const MAX_KEPT_BODY: u64 = 64 * 1024;

/// What a try ended with, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    ConnectFailure,
    Reset,
    Timeout,
    Status(u16),
    /// An HTTP/2 target refused the stream (`REFUSED_STREAM`): it never
    /// processed the request, like a connect failure.
    RefusedStream,
    /// A gRPC target answered `UNAVAILABLE` at once (trailers-only), gRPC's `503`.
    GrpcUnavailable,
}

/// A route's (or an aggregate call's) retry settings, with its budget.
/// Most routes have one (a second try on a connect failure, by default), so
/// it holds the settings once and reads them as it goes.
#[derive(Debug)]
pub struct RetryPlan {
    /// The settings this was built from (a new version with the same keeps the budget).
    settings: Retries,
    budget: Budget,
}

impl RetryPlan {
    /// Whether `retries` asks for anything: more than one try, or a
    /// timeout per try.
    pub fn wanted(retries: &Retries) -> bool {
        retries.attempts > 1 || retries.per_try_timeout_ms.is_some()
    }

    pub fn new(retries: &Retries) -> Self {
        Self { settings: retries.clone(), budget: Budget::new(retries.budget_percent, retries.budget_min_per_second) }
    }

    /// Tries in all (`attempts` 0 is one try, like 1).
    pub fn attempts(&self) -> u32 {
        self.settings.attempts.max(1)
    }

    /// The time each try may take to the response headers, if limited.
    pub fn per_try_timeout(&self) -> Option<Duration> {
        self.settings.per_try_timeout_ms.map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// Whether this plan was built from `retries`.
    pub fn is_for(&self, retries: &Retries) -> bool {
        self.settings == *retries
    }

    /// Whether a retry may follow a try that went out (on anything but a
    /// connect failure), so that each try must send a copy of the request;
    /// a connect failure hands the request back.
    pub fn retries_sent_requests(&self) -> bool {
        self.settings.on.iter().any(|on| *on != RetryOn::ConnectFailure)
    }

    /// Whether a request may be retried at all: an idempotent one (as the
    /// caller judged it, [`super::proxy::Prepared::idempotent`]), or any
    /// when the route opted in.
    pub fn allows(&self, idempotent: bool) -> bool {
        self.settings.non_idempotent || idempotent
    }

    /// Counts a request into the budget.
    pub fn deposit(&self) {
        self.budget.deposit(now_ms());
    }

    /// Whether `outcome` is worth another try (taking one from the budget).
    pub fn retry(&self, outcome: Outcome) -> bool {
        let wanted = match outcome {
            Outcome::ConnectFailure | Outcome::RefusedStream => RetryOn::ConnectFailure,
            Outcome::GrpcUnavailable => RetryOn::Status503,
            Outcome::Reset => RetryOn::Reset,
            Outcome::Timeout => RetryOn::Timeout,
            Outcome::Status(502) => RetryOn::Status502,
            Outcome::Status(503) => RetryOn::Status503,
            Outcome::Status(504) => RetryOn::Status504,
            Outcome::Status(_) => return false,
        };
        if !self.settings.on.contains(&wanted) {
            return false;
        }
        if !self.budget.withdraw(now_ms()) {
            crate::metrics::retry_budget_exhausted();
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> RetryPlan {
        RetryPlan::new(&Retries { attempts: 3, on: vec![RetryOn::ConnectFailure, RetryOn::Status503], ..Retries::default() })
    }

    #[test]
    fn retries_only_what_it_is_told_and_idempotent_methods() {
        let p = plan();
        assert!(p.retry(Outcome::ConnectFailure) && p.retry(Outcome::Status(503)));
        assert!(!p.retry(Outcome::Reset) && !p.retry(Outcome::Status(500)) && !p.retry(Outcome::Status(502)));
        assert!(p.retry(Outcome::RefusedStream) && p.retry(Outcome::GrpcUnavailable), "gRPC's never-processed and unavailable");
        assert!(p.allows(true) && !p.allows(false));
        let opted_in = RetryPlan::new(&Retries { attempts: 3, non_idempotent: true, ..Retries::default() });
        assert!(opted_in.allows(false));
    }

    #[test]
    fn zero_or_one_attempt_without_a_per_try_timeout_needs_no_plan() {
        let off = |attempts| Retries { attempts, ..Retries::default() };
        assert!(!RetryPlan::wanted(&off(0)) && !RetryPlan::wanted(&off(1)) && RetryPlan::wanted(&Retries::default()));
        assert!(RetryPlan::wanted(&Retries { per_try_timeout_ms: Some(100), ..off(0) }));
        assert_eq!(RetryPlan::new(&off(0)).attempts(), 1, "attempts 0 is one try");
    }
}
