//! The five rate-limit algorithms as pure state machines over a clock the
//! caller passes in (seconds as `f64`), so they are tested against a
//! simulated clock. The Redis scripts (`redis.rs`) implement the same
//! arithmetic atomically on the server, with Redis's own clock.

use std::collections::VecDeque;

use portico_shared::model::{RateLimitAlgorithm, RateLimitPolicy};

/// A limit's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub algorithm: RateLimitAlgorithm,
    pub limit: u64,
    /// Window in seconds.
    pub window: f64,
    /// Bucket size (token bucket), or how many requests may wait (leaky bucket).
    pub burst: u64,
}

impl Params {
    pub fn of(policy: &RateLimitPolicy) -> Self {
        Self {
            algorithm: policy.algorithm,
            limit: policy.limit,
            window: policy.window_s as f64,
            burst: policy.burst.unwrap_or(policy.limit),
        }
    }

    /// The same limit shared by `nodes` nodes: each gets its part (at least 1).
    pub fn divided(self, nodes: u64) -> Self {
        let part = |n: u64| (n / nodes.max(1)).max(1);
        Self { limit: part(self.limit), burst: part(self.burst), ..self }
    }

    /// Requests per second for the bucket algorithms.
    fn rate(&self) -> f64 {
        self.limit as f64 / self.window
    }
}

/// One decision, with what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the quota is whole again.
    pub reset: f64,
    /// When refused: seconds until a request may pass.
    pub retry_after: f64,
    /// Leaky bucket: seconds the admitted request waits for its slot.
    pub delay: f64,
}

/// The state of one key.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    TokenBucket { tokens: f64, at: f64 },
    LeakyBucket { next_free: f64 },
    FixedWindow { index: i64, count: u64 },
    SlidingWindowLog { admitted: VecDeque<f64> },
    SlidingWindowCounter { index: i64, current: u64, previous: u64 },
}

impl State {
    /// A fresh key's state.
    pub fn new(params: &Params) -> Self {
        match params.algorithm {
            RateLimitAlgorithm::TokenBucket => Self::TokenBucket { tokens: params.burst as f64, at: f64::NEG_INFINITY },
            RateLimitAlgorithm::LeakyBucket => Self::LeakyBucket { next_free: f64::NEG_INFINITY },
            RateLimitAlgorithm::FixedWindow => Self::FixedWindow { index: i64::MIN, count: 0 },
            RateLimitAlgorithm::SlidingWindowLog => Self::SlidingWindowLog { admitted: VecDeque::new() },
            RateLimitAlgorithm::SlidingWindowCounter => Self::SlidingWindowCounter { index: i64::MIN, current: 0, previous: 0 },
        }
    }

    /// Decides one request at time `now` (never earlier than the last call).
    pub fn decide(&mut self, params: &Params, now: f64) -> Decision {
        let limit = params.limit;
        let refused = |remaining: u64, reset: f64, retry_after: f64| Decision {
            allowed: false,
            limit,
            remaining,
            reset,
            retry_after: retry_after.max(0.0),
            delay: 0.0,
        };
        let admitted =
            |remaining: u64, reset: f64, delay: f64| Decision { allowed: true, limit, remaining, reset, retry_after: 0.0, delay };
        match self {
            Self::TokenBucket { tokens, at } => {
                let (capacity, rate) = (params.burst as f64, params.rate());
                *tokens = if at.is_finite() { (*tokens + (now - *at) * rate).min(capacity) } else { capacity };
                *at = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    admitted(*tokens as u64, (capacity - *tokens) / rate, 0.0)
                } else {
                    refused(0, (capacity - *tokens) / rate, (1.0 - *tokens) / rate)
                }
            }
            Self::LeakyBucket { next_free } => {
                // `burst` requests may wait: a request is admitted when its
                // slot is at most `burst` intervals away (a small epsilon
                // keeps float noise from refusing the last slot).
                let interval = 1.0 / params.rate();
                let queue = params.burst as f64 * interval;
                let start = next_free.max(now);
                let delay = start - now;
                if delay <= queue + 1e-9 {
                    *next_free = start + interval;
                    let ahead = *next_free - now;
                    let remaining = if ahead <= queue + 1e-9 { ((queue - ahead) / interval + 1e-9).floor() as u64 + 1 } else { 0 };
                    admitted(remaining, ahead, delay)
                } else {
                    refused(0, delay, delay - queue)
                }
            }
            Self::FixedWindow { index, count } => {
                let current = (now / params.window).floor() as i64;
                if current != *index {
                    (*index, *count) = (current, 0);
                }
                let reset = (current + 1) as f64 * params.window - now;
                if *count < limit {
                    *count += 1;
                    admitted(limit - *count, reset, 0.0)
                } else {
                    refused(0, reset, reset)
                }
            }
            Self::SlidingWindowLog { admitted: log } => {
                while log.front().is_some_and(|t| *t <= now - params.window) {
                    log.pop_front();
                }
                if (log.len() as u64) < limit {
                    log.push_back(now);
                    let oldest = log.front().copied().unwrap_or(now);
                    admitted(limit - log.len() as u64, oldest + params.window - now, 0.0)
                } else {
                    let oldest = log.front().copied().unwrap_or(now);
                    refused(0, oldest + params.window - now, oldest + params.window - now)
                }
            }
            Self::SlidingWindowCounter { index, current, previous } => {
                let now_index = (now / params.window).floor() as i64;
                if now_index != *index {
                    *previous = if now_index == index.saturating_add(1) { *current } else { 0 };
                    (*index, *current) = (now_index, 0);
                }
                let elapsed = now - now_index as f64 * params.window;
                let weight = 1.0 - elapsed / params.window;
                let estimate = *previous as f64 * weight + *current as f64;
                let to_window_end = params.window - elapsed;
                if estimate + 1.0 <= limit as f64 + 1e-9 {
                    *current += 1;
                    let remaining = (limit as f64 - estimate - 1.0).max(0.0).floor() as u64;
                    admitted(remaining, to_window_end, 0.0)
                } else {
                    // The previous window's weight falls linearly: when does the estimate drop to limit - 1?
                    let excess = estimate + 1.0 - limit as f64;
                    let wait = if *previous > 0 && (*current as f64) < limit as f64 {
                        (excess / *previous as f64 * params.window).min(to_window_end)
                    } else {
                        to_window_end
                    };
                    refused(0, to_window_end, wait)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn params(algorithm: RateLimitAlgorithm, limit: u64, window: f64, burst: u64) -> Params {
        Params { algorithm, limit, window, burst }
    }

    /// Runs requests at the given times; the times of the admitted ones.
    fn run(params: &Params, times: &[f64]) -> Vec<f64> {
        let mut state = State::new(params);
        times.iter().filter(|t| state.decide(params, **t).allowed).copied().collect()
    }

    /// The most admitted in one window aligned to the epoch.
    fn most_in_an_aligned_window(admitted: &[f64], window: u64) -> u64 {
        let mut per_window = std::collections::HashMap::new();
        for t in admitted {
            *per_window.entry((t / window as f64).floor() as i64).or_insert(0u64) += 1;
        }
        per_window.into_values().max().unwrap_or(0)
    }

    /// The most admitted in any window of `window` seconds (half-open).
    fn most_in_any_window(admitted: &[f64], window: u64) -> u64 {
        (0..admitted.len())
            .map(|i| admitted[i..].iter().take_while(|t| **t < admitted[i] + window as f64).count() as u64)
            .max()
            .unwrap_or(0)
    }

    /// Sorted arrival times from increments.
    fn arrivals(gaps: &[f64]) -> Vec<f64> {
        gaps.iter()
            .scan(0.0, |t, gap| {
                *t += gap;
                Some(*t)
            })
            .collect()
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_refill_rate() {
        let p = params(RateLimitAlgorithm::TokenBucket, 10, 10.0, 3);
        let mut state = State::new(&p);
        let decisions: Vec<bool> = (0..5).map(|_| state.decide(&p, 0.0).allowed).collect();
        assert_eq!(decisions, [true, true, true, false, false]);
        let refused = state.decide(&p, 0.5);
        assert!(!refused.allowed && (refused.retry_after - 0.5).abs() < 1e-9, "{refused:?}");
        assert!(state.decide(&p, 1.0).allowed, "one token a second");
    }

    #[test]
    fn leaky_bucket_delays_what_fits_and_refuses_the_rest() {
        let p = params(RateLimitAlgorithm::LeakyBucket, 2, 1.0, 3);
        let mut state = State::new(&p);
        let decisions: Vec<Decision> = (0..6).map(|_| state.decide(&p, 0.0)).collect();
        let delays: Vec<f64> = decisions.iter().filter(|d| d.allowed).map(|d| d.delay).collect();
        assert_eq!(delays, [0.0, 0.5, 1.0, 1.5], "one at once, three waiting, released at 2/s");
        let remaining: Vec<u64> = decisions.iter().take(4).map(|d| d.remaining).collect();
        assert_eq!(remaining, [3, 2, 1, 0]);
        assert!(!decisions[4].allowed && (decisions[4].retry_after - 0.5).abs() < 1e-9, "{:?}", decisions[4]);
        assert!(state.decide(&p, 0.5).allowed, "a slot frees every half second");
    }

    #[test]
    fn fixed_window_counts_per_aligned_window() {
        let p = params(RateLimitAlgorithm::FixedWindow, 2, 10.0, 2);
        assert_eq!(run(&p, &[1.0, 2.0, 3.0, 9.9, 10.0, 10.1, 10.2]), [1.0, 2.0, 10.0, 10.1]);
        let mut state = State::new(&p);
        state.decide(&p, 1.0);
        let d = state.decide(&p, 4.0);
        assert_eq!((d.remaining, d.reset), (0, 6.0));
    }

    #[test]
    fn sliding_window_log_is_exact() {
        let p = params(RateLimitAlgorithm::SlidingWindowLog, 2, 10.0, 2);
        assert_eq!(run(&p, &[0.0, 5.0, 9.0, 10.0, 10.5, 15.0]), [0.0, 5.0, 10.0, 15.0]);
    }

    #[test]
    fn sliding_window_counter_weighs_the_previous_window() {
        let p = params(RateLimitAlgorithm::SlidingWindowCounter, 10, 10.0, 10);
        let mut state = State::new(&p);
        for _ in 0..10 {
            assert!(state.decide(&p, 9.0).allowed);
        }
        // At 15 s the previous window (10 requests) still weighs half: 5 more fit.
        let admitted = (0..10).filter(|_| state.decide(&p, 15.0).allowed).count();
        assert_eq!(admitted, 5);
    }

    proptest! {
        #[test]
        fn fixed_window_never_admits_more_than_the_limit_in_an_aligned_window(
            gaps in proptest::collection::vec(0.0f64..0.5, 1..300), limit in 1u64..20, window in 1u64..5,
        ) {
            let p = params(RateLimitAlgorithm::FixedWindow, limit, window as f64, limit);
            prop_assert!(most_in_an_aligned_window(&run(&p, &arrivals(&gaps)), window) <= limit);
        }

        #[test]
        fn sliding_window_log_never_admits_more_than_the_limit_in_any_window(
            gaps in proptest::collection::vec(0.0f64..0.5, 1..300), limit in 1u64..20, window in 1u64..5,
        ) {
            let p = params(RateLimitAlgorithm::SlidingWindowLog, limit, window as f64, limit);
            prop_assert!(most_in_any_window(&run(&p, &arrivals(&gaps)), window) <= limit);
        }

        #[test]
        fn token_bucket_never_admits_more_than_burst_plus_refill(
            gaps in proptest::collection::vec(0.0f64..0.5, 1..300), limit in 1u64..20, window in 1u64..5, burst in 1u64..20,
        ) {
            let p = params(RateLimitAlgorithm::TokenBucket, limit, window as f64, burst);
            let admitted = run(&p, &arrivals(&gaps));
            let rate = limit as f64 / window as f64;
            for i in 0..admitted.len() {
                for j in i..admitted.len() {
                    let bound = burst as f64 + (admitted[j] - admitted[i]) * rate + 1e-6;
                    prop_assert!((j - i + 1) as f64 <= bound, "{} admitted in {}s", j - i + 1, admitted[j] - admitted[i]);
                }
            }
        }

        #[test]
        fn leaky_bucket_releases_at_most_at_its_rate(
            gaps in proptest::collection::vec(0.0f64..0.5, 1..300), limit in 1u64..20, window in 1u64..5, burst in 1u64..20,
        ) {
            let p = params(RateLimitAlgorithm::LeakyBucket, limit, window as f64, burst);
            let mut state = State::new(&p);
            let mut releases: Vec<f64> = arrivals(&gaps)
                .into_iter()
                .filter_map(|t| { let d = state.decide(&p, t); d.allowed.then_some(t + d.delay) })
                .collect();
            releases.sort_by(f64::total_cmp);
            let interval = window as f64 / limit as f64;
            prop_assert!(releases.windows(2).all(|w| w[1] - w[0] >= interval - 1e-6), "releases closer than {interval}s");
        }

        #[test]
        fn sliding_window_counter_keeps_to_the_limit_per_aligned_window_and_twice_it_in_any(
            gaps in proptest::collection::vec(0.0f64..0.5, 1..300), limit in 1u64..20, window in 1u64..5,
        ) {
            let p = params(RateLimitAlgorithm::SlidingWindowCounter, limit, window as f64, limit);
            let admitted = run(&p, &arrivals(&gaps));
            prop_assert!(most_in_an_aligned_window(&admitted, window) <= limit);
            // The documented tolerance: a rolling window holds at most twice the limit.
            prop_assert!(most_in_any_window(&admitted, window) <= 2 * limit);
        }
    }
}
