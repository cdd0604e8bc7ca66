//! A circuit breaker per target. Closed, it counts outcomes in a window of
//! ten buckets; too many failures open it. Open, the target gets no traffic
//! until `open_ms` has passed; then it is half-open and lets a bounded
//! number of probes through: enough successes close it, one failure opens
//! it again.

use std::sync::Mutex;

use portico_shared::model::CircuitBreaker as Config;

const BUCKETS: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        until_ms: u64,
    },
    /// `probing` let through, `passed` succeeded, since `since_ms`.
    HalfOpen {
        probing: u32,
        passed: u32,
        since_ms: u64,
    },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// `(bucket index, successes, failures)`, ring by index.
    buckets: [(u64, u32, u32); BUCKETS as usize],
}

/// One target's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: Config,
    state: Mutex<State>,
}

/// Why a breaker refuses a request: the time until it lets one through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub retry_after_ms: u64,
}

impl Breaker {
    pub fn new(config: &Config) -> Self {
        Self { config: config.clone(), state: Mutex::new(State { phase: Phase::Closed, buckets: [(u64::MAX, 0, 0); BUCKETS as usize] }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a request could go now (without taking a probe slot).
    pub fn check(&self, now_ms: u64) -> Result<(), Open> {
        match self.state().phase {
            Phase::Closed => Ok(()),
            Phase::Open { until_ms } if now_ms < until_ms => Err(Open { retry_after_ms: until_ms - now_ms }),
            Phase::Open { .. } => Ok(()),
            Phase::HalfOpen { probing, since_ms, .. } if probing >= self.config.half_open_probes && !self.probes_lost(since_ms, now_ms) => {
                Err(Open { retry_after_ms: 1_000 })
            }
            Phase::HalfOpen { .. } => Ok(()),
        }
    }

    /// Probes that never reported back (their clients went away) are given
    /// up after `open_ms`, so a half-open circuit cannot stay stuck.
    fn probes_lost(&self, since_ms: u64, now_ms: u64) -> bool {
        now_ms >= since_ms.saturating_add(u64::from(self.config.open_ms))
    }

    /// Lets a request through (taking a probe slot when half-open).
    pub fn acquire(&self, now_ms: u64) -> Result<(), Open> {
        let mut state = self.state();
        match state.phase {
            Phase::Closed => Ok(()),
            Phase::Open { until_ms } if now_ms < until_ms => Err(Open { retry_after_ms: until_ms - now_ms }),
            Phase::Open { .. } => {
                state.phase = Phase::HalfOpen { probing: 1, passed: 0, since_ms: now_ms };
                Ok(())
            }
            Phase::HalfOpen { probing, passed, since_ms } if probing < self.config.half_open_probes => {
                state.phase = Phase::HalfOpen { probing: probing + 1, passed, since_ms };
                Ok(())
            }
            Phase::HalfOpen { passed, since_ms, .. } if self.probes_lost(since_ms, now_ms) => {
                state.phase = Phase::HalfOpen { probing: passed + 1, passed, since_ms: now_ms };
                Ok(())
            }
            Phase::HalfOpen { .. } => Err(Open { retry_after_ms: 1_000 }),
        }
    }

    /// Records the outcome of a request let through; `Some(open)` when the
    /// circuit changed (true: it opened).
    pub fn record(&self, success: bool, now_ms: u64) -> Option<bool> {
        let config = &self.config;
        let mut state = self.state();
        match state.phase {
            Phase::HalfOpen { probing, passed, since_ms } if success => {
                if passed + 1 >= config.half_open_probes {
                    state.phase = Phase::Closed;
                    state.buckets = [(u64::MAX, 0, 0); BUCKETS as usize];
                    return Some(false);
                }
                state.phase = Phase::HalfOpen { probing, passed: passed + 1, since_ms };
                None
            }
            Phase::HalfOpen { .. } => {
                state.phase = Phase::Open { until_ms: now_ms + u64::from(config.open_ms) };
                Some(true)
            }
            Phase::Open { .. } => None,
            Phase::Closed => {
                let width = (u64::from(config.window_ms) / BUCKETS).max(1);
                let index = now_ms / width;
                let slot = &mut state.buckets[(index % BUCKETS) as usize];
                if slot.0 != index {
                    *slot = (index, 0, 0);
                }
                if success {
                    slot.1 += 1;
                } else {
                    slot.2 += 1;
                }
                let recent = state.buckets.iter().filter(|(i, _, _)| *i != u64::MAX && *i + BUCKETS > index);
                let (ok, failed) = recent.fold((0u64, 0u64), |(ok, failed), (_, s, f)| (ok + u64::from(*s), failed + u64::from(*f)));
                let total = ok + failed;
                let by_rate = total >= u64::from(config.min_requests) && failed * 100 >= total * u64::from(config.failure_rate_percent);
                let by_count = config.max_failures.is_some_and(|max| failed >= u64::from(max));
                if by_rate || by_count {
                    state.phase = Phase::Open { until_ms: now_ms + u64::from(config.open_ms) };
                    return Some(true);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config { failure_rate_percent: 50, min_requests: 4, max_failures: None, window_ms: 1_000, open_ms: 500, half_open_probes: 2 }
    }

    #[test]
    fn opens_on_the_failure_rate_then_probes_and_closes() {
        let breaker = Breaker::new(&config());
        assert_eq!(breaker.record(true, 0), None);
        assert_eq!(breaker.record(false, 10), None);
        assert_eq!(breaker.record(true, 20), None);
        assert_eq!(breaker.record(false, 30), Some(true), "2 of 4 failed: 50%");
        assert_eq!(breaker.acquire(100), Err(Open { retry_after_ms: 430 }));
        assert!(breaker.acquire(530).is_ok() && breaker.acquire(530).is_ok(), "two probes");
        assert!(breaker.acquire(530).is_err(), "no third probe");
        assert_eq!(breaker.record(true, 540), None);
        assert_eq!(breaker.record(true, 550), Some(false), "closed after two successful probes");
        assert!(breaker.check(560).is_ok());
    }

    #[test]
    fn a_failed_probe_opens_again_and_old_outcomes_age_out() {
        let breaker = Breaker::new(&config());
        for t in 0..4 {
            breaker.record(false, t);
        }
        assert!(breaker.acquire(600).is_ok());
        assert_eq!(breaker.record(false, 610), Some(true));
        assert!(breaker.check(1_000).is_err() && breaker.check(1_110).is_ok());
        assert!(breaker.acquire(1_110).is_ok() && breaker.acquire(1_110).is_ok() && breaker.acquire(1_110).is_err());
        assert!(breaker.acquire(1_610).is_ok(), "probes that never came back are given up after open_ms");

        let aging = Breaker::new(&config());
        aging.record(false, 0);
        aging.record(false, 0);
        aging.record(true, 1_500);
        assert_eq!(aging.record(true, 1_500), None, "the failures left the window");
        let counting = Breaker::new(&Config { max_failures: Some(2), min_requests: 100, ..config() });
        counting.record(false, 0);
        assert_eq!(counting.record(false, 0), Some(true), "max_failures opens whatever the rate");
    }
}
