//! The Redis backend: one Lua script per algorithm, loaded once and called
//! by SHA (EVALSHA, loading it again after a Redis restart), each making a
//! round of decisions on one key (`batch.rs`: those that arrived while the
//! key's previous call was in flight) atomically with Redis's clock
//! (`TIME`), so data planes with skewed clocks agree. Calls go over a
//! reconnecting multiplexed connection (calls for different keys are
//! pipelined on it) with a short timeout; after a failure Redis is left
//! alone for [`BACKOFF`] and the callers' `on_backend_failure` decides
//! meanwhile. The same connection marks this node in each limit's set of
//! nodes (`fleet.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portico_shared::model::RateLimitAlgorithm;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::algorithm::{Decision, Params};
use super::batch::{Joined, Rounds, Turn};
use super::fleet::Membership;
use crate::telemetry;
use opentelemetry::KeyValue;

/// How long Redis is not asked after a failed call.
const BACKOFF: Duration = Duration::from_secs(1);
/// How long a fleet count's mark may take (it runs beside the traffic, every few seconds).
const MARK_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets `now` (milliseconds, fractional) from Redis's clock, and
/// `answer`, which adds one decision (allowed, remaining, reset ms,
/// retry-after ms, delay ms) to `out`. A script answers `out` as one string
/// of integers separated by spaces: an array of integers costs the client's
/// reply parser some thousand instructions per integer, a string one copy.
const PRELUDE: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local out = {}
local function answer(allowed, remaining, reset, retry, delay)
  out[#out + 1] = string.format('%d %d %d %d %d', allowed, remaining, reset, retry, delay)
end
";

// The decision scripts take ARGV[1] = how many decisions to make, one
// after the other at the same `now` (a round, `batch.rs`): they read the
// key once, decide each, and write it once.

/// ARGV: n, capacity, tokens per ms.
const TOKEN_BUCKET: &str = r"
local n, capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = capacity
if s[1] then tokens = math.min(capacity, tonumber(s[1]) + (now - tonumber(s[2])) * rate) end
for i = 1, n do
  if tokens >= 1 then
    tokens = tokens - 1
    answer(1, math.floor(tokens), math.ceil((capacity - tokens) / rate), 0, 0)
  else
    answer(0, math.floor(tokens), math.ceil((capacity - tokens) / rate), math.ceil((1 - tokens) / rate), 0)
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return table.concat(out, ' ')
";

/// ARGV: n, queue length, ms between releases.
const LEAKY_BUCKET: &str = r"
local n, burst, interval = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local next_free = tonumber(redis.call('GET', KEYS[1]) or '0')
local queue, admitted = burst * interval, false
for i = 1, n do
  local start = math.max(now, next_free)
  local delay = start - now
  if delay <= queue + 0.000001 then
    next_free, admitted = start + interval, true
    local ahead, remaining = next_free - now, 0
    if ahead <= queue + 0.000001 then remaining = math.floor((queue - ahead) / interval + 0.000001) + 1 end
    answer(1, remaining, math.ceil(ahead), 0, math.ceil(delay))
  else
    answer(0, 0, math.ceil(delay), math.ceil(delay - queue), 0)
  end
end
if admitted then redis.call('SET', KEYS[1], tostring(next_free), 'PX', math.ceil(next_free - now) + 1000) end
return table.concat(out, ' ')
";

/// ARGV: n, limit, window ms.
const FIXED_WINDOW: &str = r"
local n, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local index = math.floor(now / window)
local s = redis.call('HMGET', KEYS[1], 'index', 'count')
local count, admitted = 0, false
if tonumber(s[1]) == index then count = tonumber(s[2]) end
local reset = math.ceil((index + 1) * window - now)
for i = 1, n do
  if count < limit then
    count, admitted = count + 1, true
    answer(1, limit - count, reset, 0, 0)
  else
    answer(0, 0, reset, reset, 0)
  end
end
if admitted then
  redis.call('HSET', KEYS[1], 'index', index, 'count', count)
  redis.call('PEXPIRE', KEYS[1], reset + 1000)
end
return table.concat(out, ' ')
";

/// ARGV: n, limit, window ms, a member unique to this call (each admitted
/// request adds `<member>:<i>`).
const SLIDING_WINDOW_LOG: &str = r"
local n, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count, admitted = redis.call('ZCARD', KEYS[1]), false
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local oldest = now
if first[2] then oldest = tonumber(first[2]) end
for i = 1, n do
  local reset = math.ceil(oldest + window - now)
  if count < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. i)
    count, admitted = count + 1, true
    answer(1, limit - count, reset, 0, 0)
  else
    answer(0, 0, reset, reset, 0)
  end
end
if admitted then redis.call('PEXPIRE', KEYS[1], math.ceil(window) + 1000) end
return table.concat(out, ' ')
";

/// ARGV: n, limit, window ms.
const SLIDING_WINDOW_COUNTER: &str = r"
local n, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local index = math.floor(now / window)
local s = redis.call('HMGET', KEYS[1], 'index', 'current', 'previous')
local current, previous, admitted = 0, 0, false
local stored = tonumber(s[1])
if stored == index then current, previous = tonumber(s[2]), tonumber(s[3])
elseif stored == index - 1 then previous = tonumber(s[2]) end
local elapsed = now - index * window
local to_end = window - elapsed
for i = 1, n do
  local estimate = previous * (1 - elapsed / window) + current
  if estimate + 1 <= limit + 0.000000001 then
    current, admitted = current + 1, true
    answer(1, math.floor(math.max(0, limit - estimate - 1)), math.ceil(to_end), 0, 0)
  else
    local wait = to_end
    if previous > 0 and current < limit then wait = math.min(to_end, (estimate + 1 - limit) / previous * window) end
    answer(0, 0, math.ceil(to_end), math.ceil(wait), 0)
  end
end
if admitted then
  redis.call('HSET', KEYS[1], 'index', index, 'current', current, 'previous', previous)
  redis.call('PEXPIRE', KEYS[1], math.ceil(to_end + window) + 1000)
end
return table.concat(out, ' ')
";

/// ARGV: this process, how long a mark counts (ms). Answers the nodes marked within it.
const MARK_MEMBER: &str = r"
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return string.format('%d', redis.call('ZCARD', KEYS[1]))
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
    /// id and a random number, as a restarted node keeps its id), a count
    /// of calls and the place in the call.
    sequence: AtomicU64,
    process: String,
    /// Decisions waiting on a call for the same key.
    rounds: Arc<Rounds>,
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
            rounds: Arc::default(),
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

    /// One decision for `key`, or why Redis could not make it. It goes in
    /// the next round of `key` (`batch.rs`): at once when none is in flight.
    pub async fn decide(self: &Arc<Self>, params: &Params, key: &str) -> Result<Decision, String> {
        let traced = telemetry::client_span(
            || "rate-limit redis".to_owned(),
            || {
                vec![
                    KeyValue::new("db.system.name", "redis"),
                    KeyValue::new("portico.rate_limit.algorithm", format!("{:?}", params.algorithm)),
                ]
            },
        );
        let decided = self.decide_in_round(params, key).await;
        if let Some(span) = traced {
            span.end(decided.as_ref().err().map(|error| error as &dyn std::fmt::Display));
        }
        decided
    }

    /// One decision for `key`, made in the next round of `key`.
    async fn decide_in_round(self: &Arc<Self>, params: &Params, key: &str) -> Result<Decision, String> {
        let round = match self.rounds.join(key) {
            Joined::Lead(round) => round,
            Joined::Wait(turn) => match turn.await {
                Ok(Turn::Decided(answer)) => return answer,
                Ok(Turn::Lead(round)) => round,
                Err(_) => return Err("the round deciding it was dropped".to_owned()),
            },
        };
        // The call goes on if this request goes away: it may be counted in
        // Redis already, and its followers wait for its answers.
        let (backend, params, key) = (Arc::clone(self), *params, key.to_owned());
        let call = tokio::spawn(async move {
            let answers = backend.decide_round(&params, &key, round.decisions()).await;
            round.finish(answers)
        });
        call.await.unwrap_or_else(|e| Err(format!("the call was stopped: {e}")))
    }

    /// `n` decisions for `key` in one script call.
    async fn decide_round(&self, params: &Params, key: &str, n: usize) -> Result<Vec<Decision>, String> {
        let window_ms = params.window * 1000.0;
        let n_arg = n.to_string();
        let (script, args): (&Script, Vec<String>) = match params.algorithm {
            RateLimitAlgorithm::TokenBucket => {
                (&self.scripts[0], vec![n_arg, params.burst.to_string(), (params.limit as f64 / window_ms).to_string()])
            }
            RateLimitAlgorithm::LeakyBucket => {
                (&self.scripts[1], vec![n_arg, params.burst.to_string(), (window_ms / params.limit as f64).to_string()])
            }
            RateLimitAlgorithm::FixedWindow => (&self.scripts[2], vec![n_arg, params.limit.to_string(), window_ms.to_string()]),
            RateLimitAlgorithm::SlidingWindowLog => {
                let member = format!("{}:{}", self.process, self.sequence.fetch_add(1, Ordering::Relaxed));
                (&self.scripts[3], vec![n_arg, params.limit.to_string(), window_ms.to_string(), member])
            }
            RateLimitAlgorithm::SlidingWindowCounter => (&self.scripts[4], vec![n_arg, params.limit.to_string(), window_ms.to_string()]),
        };
        let values = self.call(script, key, &args, 5 * n).await?;
        let seconds = |ms: i64| ms.max(0) as f64 / 1000.0;
        Ok(values
            .chunks_exact(5)
            .map(|v| Decision {
                allowed: v[0] == 1,
                limit: params.limit,
                remaining: u64::try_from(v[1]).unwrap_or(0),
                reset: seconds(v[2]),
                retry_after: seconds(v[3]),
                delay: seconds(v[4]),
            })
            .collect())
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
        match tokio::time::timeout(timeout, invocation.invoke_async::<String>(&mut connection)).await {
            Ok(Ok(answer)) => integers(&answer, len).ok_or_else(|| format!("unexpected script answer '{answer}'")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }
}

/// The `len` integers of a script's answer (see [`PRELUDE`]).
fn integers(answer: &str, len: usize) -> Option<Vec<i64>> {
    let values: Vec<i64> = answer.split_ascii_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
    (values.len() == len).then_some(values)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use futures::future::join_all;
    use portico_test_support::eventually;
    use portico_test_support::redis::{redis_addr, redis_url};
    use redis::AsyncCommands;

    use super::*;
    use crate::ratelimit::algorithm::State;

    #[tokio::test]
    async fn concurrent_decisions_on_one_key_go_in_rounds_and_answer_as_if_made_one_at_a_time() {
        redis_addr().await;
        let backend = Arc::new(RedisBackend::new(&redis_url(), Duration::from_secs(5), "test-node", 1).unwrap());
        let mut redis = Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let run = rand::random::<u64>();
        for algorithm in [
            RateLimitAlgorithm::TokenBucket,
            RateLimitAlgorithm::LeakyBucket,
            RateLimitAlgorithm::FixedWindow,
            RateLimitAlgorithm::SlidingWindowLog,
            RateLimitAlgorithm::SlidingWindowCounter,
        ] {
            let burst = if algorithm == RateLimitAlgorithm::LeakyBucket { 5 } else { 30 };
            let params = Params { algorithm, limit: 30, window: 600.0, burst };
            let key = format!("portico:test:{run}:{algorithm:?}");
            let answers = join_all((0..50).map(|_| backend.decide(&params, &key))).await;
            let decided: Vec<Decision> = answers.into_iter().collect::<Result<_, _>>().unwrap();
            // The same limit in the node, one decision after the other.
            let mut state = State::new(&params);
            let expected: Vec<Decision> = (0..50).map(|_| state.decide(&params, 1_000.0)).collect();
            let outcomes = |decisions: &[Decision]| {
                let mut outcomes: Vec<(bool, u64)> = decisions.iter().map(|d| (d.allowed, d.remaining)).collect();
                outcomes.sort_unstable();
                outcomes
            };
            assert_eq!(outcomes(&decided), outcomes(&expected), "{algorithm:?}");
            assert_eq!(decided.iter().filter(|d| d.allowed).count(), if burst == 5 { 6 } else { 30 }, "{algorithm:?}");
            if algorithm == RateLimitAlgorithm::SlidingWindowLog {
                // Members are <process>:<call>:<place in the call>.
                let members: Vec<String> = redis.zrange(&key, 0, -1).await.unwrap();
                let calls: BTreeSet<&str> = members.iter().map(|m| m.rsplit(':').nth(1).unwrap()).collect();
                assert_eq!(members.len(), 30);
                assert!(calls.len() <= 3, "50 concurrent decisions took {} calls, not a few rounds", calls.len());
            }
            let _: () = redis.del(&key).await.unwrap();
        }
    }

    /// A proxy to Redis whose answers come 200 ms late: calls stay in flight.
    async fn slow_redis() -> String {
        let redis = redis_addr().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(redis).await.unwrap();
                let ((mut client_read, mut client_write), (mut server_read, mut server_write)) = (client.into_split(), server.into_split());
                tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut server_read, &mut buffer).await
                        && n > 0
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if tokio::io::AsyncWriteExt::write_all(&mut client_write, &buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn a_round_whose_leader_goes_away_mid_call_counts_each_decision_once() {
        let backend = Arc::new(RedisBackend::new(&slow_redis().await, Duration::from_secs(5), "test-node", 1).unwrap());
        let mut redis = Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let params = Params { algorithm: RateLimitAlgorithm::FixedWindow, limit: 100, window: 600.0, burst: 100 };
        let key = format!("portico:test:{}:cancelled", rand::random::<u64>());
        let decide = |backend: &Arc<RedisBackend>| {
            let (backend, key) = (Arc::clone(backend), key.clone());
            tokio::spawn(async move { backend.decide(&params, &key).await })
        };
        let first = decide(&backend);
        tokio::task::yield_now().await; // it leads the first round
        let leader = decide(&backend);
        tokio::task::yield_now().await; // it waits for the next round
        let followers: Vec<_> = (0..9).map(|_| decide(&backend)).collect();
        tokio::task::yield_now().await; // and so do they, behind it
        assert!(first.await.unwrap().unwrap().allowed);
        // The second round's call reaches Redis (its answer comes 200 ms later)…
        eventually("the second round counted in Redis", Duration::from_secs(10), || {
            let mut redis = redis.clone();
            let key = key.clone();
            async move { (redis.hget::<_, _, Option<u64>>(&key, "count").await.ok().flatten() == Some(11)).then_some(()) }
        })
        .await;
        leader.abort(); // …and its leader's client goes away before the answer
        let mut remaining = Vec::new();
        for follower in followers {
            remaining.push(follower.await.unwrap().unwrap().remaining);
        }
        remaining.sort_unstable();
        assert_eq!(remaining, (89..=97).collect::<Vec<u64>>(), "the followers got the second round's answers");
        let counted: u64 = redis.hget(&key, "count").await.unwrap();
        assert_eq!(counted, 11, "eleven requests, each counted once");
        let _: () = redis.del(&key).await.unwrap();
    }
}
