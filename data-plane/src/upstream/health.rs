//! Target health: what active checks and passive outlier detection know of
//! each target. A target is healthy unless the active checks have found it
//! down or it is ejected after failing on live traffic; ejections grow with
//! each one (doubling up to the configured maximum). The state of a target
//! is shared by the upstreams of successive config versions while its URL
//! stays, so a swap neither forgets an ejection nor resets a check.
//!
//! Without passive checks, a target that refused a connection is still
//! tried last for a while ([`ConnectBackoff`], like nginx's `max_fails=1
//! fail_timeout=10s` default): it is not ejected (with no other target it
//! still gets every request), but round robin stops handing it the first
//! try of request after request, each to be retried elsewhere.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portico_shared::model::{ActiveHealthCheck, PassiveHealthCheck};

/// Milliseconds on a process-wide monotonic clock.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What one target's checks and traffic have shown.
#[derive(Debug, Default)]
pub struct TargetHealth {
    /// The active checks' verdict.
    active_down: AtomicBool,
    /// Active checks in a row that disagree with the verdict.
    active_streak: AtomicU32,
    /// Passive failures in a row.
    failures: AtomicU32,
    /// Ejections so far (the next one lasts longer).
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
}

impl TargetHealth {
    /// Whether the target may take traffic now.
    pub fn is_healthy(&self, now_ms: u64) -> bool {
        !self.active_down.load(Ordering::Relaxed) && now_ms >= self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Records one live request's outcome; true when it ejected the target.
    pub fn record_traffic(&self, success: bool, config: &PassiveHealthCheck, now_ms: u64) -> bool {
        if success {
            self.failures.store(0, Ordering::Relaxed);
            // Healthy for a whole maximum ejection since the last one: forgive past ejections.
            let until = self.ejected_until_ms.load(Ordering::Relaxed);
            if until > 0 && now_ms > until.saturating_add(u64::from(config.max_ejection_ms)) {
                self.ejections.store(0, Ordering::Relaxed);
            }
            return false;
        }
        if now_ms < self.ejected_until_ms.load(Ordering::Relaxed) {
            return false; // a request sent before the ejection: already counted
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < config.consecutive_failures {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed);
        let duration = u64::from(config.base_ejection_ms).saturating_mul(1 << ejections.min(20)).min(u64::from(config.max_ejection_ms));
        self.ejected_until_ms.store(now_ms.saturating_add(duration), Ordering::Relaxed);
        true
    }

    /// Records one active check; `Some(healthy)` when the verdict changed.
    pub fn record_check(&self, success: bool, config: &ActiveHealthCheck) -> Option<bool> {
        let down = self.active_down.load(Ordering::Relaxed);
        if success != down {
            // Agrees with the verdict (up and fine, or down and failing).
            self.active_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.active_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = if down { config.healthy_threshold } else { config.unhealthy_threshold };
        if streak < threshold {
            return None;
        }
        self.active_streak.store(0, Ordering::Relaxed);
        self.active_down.store(!down, Ordering::Relaxed);
        Some(down)
    }
}

/// How long a target that refused a connection is tried last: this long
/// after the first failure in a row, doubling with each one...
const BACKOFF_BASE_MS: u64 = 1_000;
/// ...up to this.
const BACKOFF_MAX_MS: u64 = 10_000;

/// Connect failures of one target, for services without passive checks (no
/// settings): after one, other targets go first for a while that doubles
/// with each failure in a row (1 s to 10 s); an answer from the target (or
/// a passed active check) ends it.
#[derive(Debug, Default)]
pub struct ConnectBackoff {
    failures: AtomicU32,
    until_ms: AtomicU64,
}

impl ConnectBackoff {
    /// Whether other targets should go first now.
    pub fn is_backing_off(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms.load(Ordering::Relaxed)
    }

    /// A connection to the target could not be made. Failures while it is
    /// already backing off (concurrent requests meeting one outage) do not
    /// lengthen the backoff: only a failure after it ends doubles it.
    pub fn failed(&self, now_ms: u64) {
        if self.is_backing_off(now_ms) {
            return;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).min(16);
        let duration = BACKOFF_BASE_MS.saturating_mul(1 << failures).min(BACKOFF_MAX_MS);
        self.until_ms.store(now_ms.saturating_add(duration), Ordering::Relaxed);
    }

    /// The target answered: it goes in turn again.
    pub fn answered(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.until_ms.store(0, Ordering::Relaxed);
        }
    }
}

/// The time an active check of `config` may take.
pub fn check_timeout(config: &ActiveHealthCheck) -> Duration {
    Duration::from_millis(u64::from(config.timeout_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive() -> PassiveHealthCheck {
        PassiveHealthCheck { consecutive_failures: 3, base_ejection_ms: 1_000, max_ejection_ms: 3_000 }
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_period() {
        let (health, config) = (TargetHealth::default(), passive());
        assert!(!health.record_traffic(false, &config, 0) && !health.record_traffic(false, &config, 0));
        assert!(health.record_traffic(false, &config, 0), "the third failure in a row ejects");
        assert!(!health.is_healthy(999) && health.is_healthy(1_000));
        for _ in 0..3 {
            health.record_traffic(false, &config, 1_000);
        }
        assert!(!health.is_healthy(2_999) && health.is_healthy(3_000), "the second ejection lasts twice as long");
        for _ in 0..3 {
            health.record_traffic(false, &config, 3_000);
        }
        assert!(health.is_healthy(6_000) && !health.is_healthy(5_999), "capped at the maximum");
        health.record_traffic(false, &config, 7_000);
        health.record_traffic(true, &config, 7_000);
        health.record_traffic(false, &config, 7_000);
        assert!(!health.record_traffic(false, &config, 7_000), "a success breaks the streak");
    }

    #[test]
    fn a_refused_connection_puts_the_target_last_for_a_growing_while_until_it_answers() {
        let backoff = ConnectBackoff::default();
        assert!(!backoff.is_backing_off(0));
        backoff.failed(0);
        backoff.failed(10);
        assert!(backoff.is_backing_off(999) && !backoff.is_backing_off(1_000), "concurrent failures of one outage count once");
        backoff.failed(1_000);
        assert!(backoff.is_backing_off(2_999) && !backoff.is_backing_off(3_000), "twice as long after a second failure in a row");
        backoff.failed(3_000);
        backoff.failed(7_000);
        backoff.failed(15_000);
        assert!(backoff.is_backing_off(24_999) && !backoff.is_backing_off(25_000), "at most 10 s");
        backoff.answered();
        assert!(!backoff.is_backing_off(15_001));
        backoff.failed(30_000);
        assert!(!backoff.is_backing_off(31_000), "an answer starts the doubling over");
    }

    #[test]
    fn active_checks_need_their_thresholds_both_ways() {
        let health = TargetHealth::default();
        let config =
            ActiveHealthCheck { path: "/health".into(), interval_ms: 100, timeout_ms: 50, healthy_threshold: 2, unhealthy_threshold: 3 };
        assert_eq!(health.record_check(false, &config), None);
        assert_eq!(health.record_check(false, &config), None);
        assert_eq!(health.record_check(false, &config), Some(false), "down after three failures");
        assert!(!health.is_healthy(0));
        assert_eq!(health.record_check(true, &config), None);
        assert_eq!(health.record_check(true, &config), Some(true), "up after two successes");
        assert!(health.is_healthy(0));
    }
}
