//! The Redis backend: one Lua script per algorithm, loaded once and called
//! by SHA (EVALSHA, loading it again after a Redis restart), each making
//! one decision atomically with Redis's clock (`TIME`), so data planes
//! with skewed clocks agree. Calls go over a reconnecting multiplexed
//! connection (concurrent calls are pipelined on it) with a short timeout;
//! after a failure Redis is left alone for [`BACKOFF`] and the callers'
//! `on_backend_failure` decides meanwhile. The same connection marks this
//! node in each limit's set of nodes (`fleet.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portico_shared::model::RateLimitAlgorithm;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::algorithm::{Decision, Params};
use super::fleet::Membership;

/// How long Redis is not asked after a failed call.
const BACKOFF: Duration = Duration::from_secs(1);
/// How long a fleet count's mark may take (it runs beside the traffic, every few seconds).
const MARK_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets `now` (milliseconds, fractional) from Redis's clock.
const PRELUDE: &str = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n";

/// ARGV: capacity, tokens per ms.
const TOKEN_BUCKET: &str = r"
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local s = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = capacity
if s[1] then tokens = math.min(capacity, tonumber(s[1]) + (now - tonumber(s[2])) * rate) end
local allowed, retry = 0, 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 else retry = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return {allowed, math.floor(tokens), math.ceil((capacity - tokens) / rate), retry, 0}
";

/// ARGV: queue length, ms between releases.
const LEAKY_BUCKET: &str = r"
local burst, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local next_free = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(now, next_free)
local delay, queue = start - now, burst * interval
if delay <= queue + 0.000001 then
  next_free = start + interval
  redis.call('SET', KEYS[1], tostring(next_free), 'PX', math.ceil(next_free - now) + 1000)
  local ahead, remaining = next_free - now, 0
  if ahead <= queue + 0.000001 then remaining = math.floor((queue - ahead) / interval + 0.000001) + 1 end
  return {1, remaining, math.ceil(ahead), 0, math.ceil(delay)}
end
return {0, 0, math.ceil(delay), math.ceil(delay - queue), 0}
";

/// ARGV: limit, window ms.
const FIXED_WINDOW: &str = r"
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local index = math.floor(now / window)
local s = redis.call('HMGET', KEYS[1], 'index', 'count')
local count = 0
if tonumber(s[1]) == index then count = tonumber(s[2]) end
local reset = math.ceil((index + 1) * window - now)
if count < limit then
  count = count + 1
  redis.call('HSET', KEYS[1], 'index', index, 'count', count)
  redis.call('PEXPIRE', KEYS[1], reset + 1000)
  return {1, limit - count, reset, 0, 0}
end
return {0, 0, reset, reset, 0}
";

/// ARGV: limit, window ms, a unique member for this request.
const SLIDING_WINDOW_LOG: &str = r"
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window) + 1000)
  allowed, count = 1, count + 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = math.ceil(tonumber(oldest[2]) + window - now)
if allowed == 1 then return {1, limit - count, reset, 0, 0} end
return {0, 0, reset, reset, 0}
";

/// ARGV: limit, window ms.
const SLIDING_WINDOW_COUNTER: &str = r"
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local index = math.floor(now / window)
local s = redis.call('HMGET', KEYS[1], 'index', 'current', 'previous')
local current, previous = 0, 0
local stored = tonumber(s[1])
if stored == index then current, previous = tonumber(s[2]), tonumber(s[3])
elseif stored == index - 1 then previous = tonumber(s[2]) end
local elapsed = now - index * window
local estimate = previous * (1 - elapsed / window) + current
local to_end = window - elapsed
if estimate + 1 <= limit + 0.000000001 then
  current = current + 1
  redis.call('HSET', KEYS[1], 'index', index, 'current', current, 'previous', previous)
  redis.call('PEXPIRE', KEYS[1], math.ceil(to_end + window) + 1000)
  return {1, math.floor(math.max(0, limit - estimate - 1)), math.ceil(to_end), 0, 0}
end
local wait = to_end
if previous > 0 and current < limit then wait = math.min(to_end, (estimate + 1 - limit) / previous * window) end
return {0, 0, math.ceil(to_end), math.ceil(wait), 0}
";

/// ARGV: this process, how long a mark counts (ms). Answers the nodes marked within it.
const MARK_MEMBER: &str = r"
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return {redis.call('ZCARD', KEYS[1])}
";

/// A data plane's connection to Redis, shared by all its limits.
pub struct RedisBackend {
    connection: ConnectionManager,
    timeout: Duration,
    scripts: [Script; 5],
    mark_member: Script,
    /// This node's limits, counted in Redis.
    fleet: Membership,
    /// Milliseconds since `started` before which Redis is not asked.
    backoff_until_ms: AtomicU64,
    started: Instant,
    /// Tells requests apart in sliding-window logs: this process (a node
    /// id and a random number, as a restarted node keeps its id) and a count.
    sequence: AtomicU64,
    process: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Sets up the connection (made on first use, remade when it breaks);
    /// limits assume `expected_nodes` until they are counted.
    pub fn new(url: &str, timeout: Duration, node: &str, expected_nodes: u64) -> Result<Self, String> {
        let client = Client::open(url).map_err(|e| format!("--redis-url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| format!("--redis-url: {e}"))?;
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Ok(Self {
            connection,
            timeout,
            scripts: [
                script(TOKEN_BUCKET),
                script(LEAKY_BUCKET),
                script(FIXED_WINDOW),
                script(SLIDING_WINDOW_LOG),
                script(SLIDING_WINDOW_COUNTER),
            ],
            mark_member: script(MARK_MEMBER),
            fleet: Membership::new(expected_nodes),
            backoff_until_ms: AtomicU64::new(0),
            started: Instant::now(),
            sequence: AtomicU64::new(0),
            process: format!("{node}:{:016x}", rand::random::<u64>()),
        })
    }

    /// This node's Redis-backed limits, counted in Redis.
    pub fn fleet(&self) -> &Membership {
        &self.fleet
    }

    /// Marks this process in the set of nodes `key` for `ttl`; the nodes
    /// marked within `ttl`, or why Redis could not answer.
    pub async fn mark_member(&self, key: &str, ttl: Duration) -> Result<u64, String> {
        let ttl_ms = ttl.as_millis().to_string();
        // Off the request path: its own, longer timeout, and a failure here
        // never sends decisions to the fallback (no backoff).
        let values = self.invoke(&self.mark_member, key, &[self.process.clone(), ttl_ms], 1, MARK_TIMEOUT).await?;
        Ok(u64::try_from(values[0]).unwrap_or(1))
    }

    /// One decision for `key`, or why Redis could not make it.
    pub async fn decide(&self, params: &Params, key: &str) -> Result<Decision, String> {
        let window_ms = params.window * 1000.0;
        let (script, args): (&Script, Vec<String>) = match params.algorithm {
            RateLimitAlgorithm::TokenBucket => {
                (&self.scripts[0], vec![params.burst.to_string(), (params.limit as f64 / window_ms).to_string()])
            }
            RateLimitAlgorithm::LeakyBucket => {
                (&self.scripts[1], vec![params.burst.to_string(), (window_ms / params.limit as f64).to_string()])
            }
            RateLimitAlgorithm::FixedWindow => (&self.scripts[2], vec![params.limit.to_string(), window_ms.to_string()]),
            RateLimitAlgorithm::SlidingWindowLog => {
                let member = format!("{}:{}", self.process, self.sequence.fetch_add(1, Ordering::Relaxed));
                (&self.scripts[3], vec![params.limit.to_string(), window_ms.to_string(), member])
            }
            RateLimitAlgorithm::SlidingWindowCounter => (&self.scripts[4], vec![params.limit.to_string(), window_ms.to_string()]),
        };
        let values = self.call(script, key, &args, 5).await?;
        let seconds = |ms: i64| ms.max(0) as f64 / 1000.0;
        Ok(Decision {
            allowed: values[0] == 1,
            limit: params.limit,
            remaining: u64::try_from(values[1]).unwrap_or(0),
            reset: seconds(values[2]),
            retry_after: seconds(values[3]),
            delay: seconds(values[4]),
        })
    }

    /// Runs a decision's `script` on `key` with `args` within the request
    /// path's timeout, expecting `len` integers back; a failure leaves
    /// Redis alone for [`BACKOFF`].
    async fn call(&self, script: &Script, key: &str, args: &[String], len: usize) -> Result<Vec<i64>, String> {
        let elapsed_ms = || u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if elapsed_ms() < self.backoff_until_ms.load(Ordering::Relaxed) {
            return Err("Redis failed less than a second ago".to_owned());
        }
        let answer = self.invoke(script, key, args, len, self.timeout).await;
        if answer.is_err() {
            self.backoff_until_ms.store(elapsed_ms().saturating_add(u64::try_from(BACKOFF.as_millis()).unwrap_or(0)), Ordering::Relaxed);
        }
        answer
    }

    /// Runs `script` on `key` with `args` within `timeout`, expecting `len` integers back.
    async fn invoke(&self, script: &Script, key: &str, args: &[String], len: usize, timeout: Duration) -> Result<Vec<i64>, String> {
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(arg);
        }
        let mut connection = self.connection.clone();
        match tokio::time::timeout(timeout, invocation.invoke_async::<Vec<i64>>(&mut connection)).await {
            Ok(Ok(values)) if values.len() == len => Ok(values),
            Ok(Ok(values)) => Err(format!("unexpected script answer {values:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }
}
