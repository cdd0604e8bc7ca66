//! The per-key states of a local limit: a sharded hash table under one
//! lock per shard, bounded in keys, that forgets a key once it has been
//! idle long enough for its state to be back at the start.
//!
//! Written here rather than kept in a moka cache (the crate's choice for
//! caches): moka's bookkeeping on every lookup (recording the read for its
//! eviction policy, its pending maintenance, its epoch-based table) made a
//! limited request cost about 450 instructions more than it does with this
//! table (`bench/RESULTS.md`, "Optimisation history").
//! These states need less than a cache: a lookup by a borrowed key, an idle
//! sweep and a bound on keys. They also need admission that a cache does
//! not promise: a new key is always kept (the least recently used keys make
//! room), so a flood of new keys cannot leave one uncounted.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};

use hashbrown::HashTable;

use super::algorithm::{Decision, Params, State};

/// Most shards a store is split into (fewer on fewer cores: each costs
/// memory on every limited route).
const MAX_SHARDS: usize = 64;
/// A full shard drops at least this fraction of its bound at once (idle
/// keys first, then the least recently used), so that making room is rare
/// however keys come.
const EVICTED_PART: usize = 8;

/// The states of one limit's keys.
pub(super) struct States {
    shards: Box<[Mutex<Shard>]>,
    /// SipHash with random keys: clients choose the keys (`ip`, `header:`).
    hasher: RandomState,
    /// Keys per shard at most.
    per_shard: usize,
    /// Seconds after which an unused key's state is back at the start.
    idle: f64,
}

struct Shard {
    table: HashTable<Slot>,
    /// When the idle keys are next swept out (seconds, the limits' clock).
    next_sweep: f64,
}

struct Slot {
    hash: u64,
    key: Box<str>,
    state: State,
    /// When the key was last decided.
    used: f64,
}

impl States {
    /// A store that keeps at most about `max_keys` keys, each until it has
    /// been `idle` seconds unused.
    pub(super) fn new(max_keys: usize, idle: f64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::with_shards(max_keys, idle, 4 * cores)
    }

    /// As [`States::new`], in about `shards` shards (a power of two, at
    /// most [`MAX_SHARDS`] and no more than keys).
    fn with_shards(max_keys: usize, idle: f64, shards: usize) -> Self {
        let shards = shards.next_power_of_two().clamp(1, MAX_SHARDS).min(max_keys.max(1).next_power_of_two());
        let per_shard = max_keys.div_ceil(shards).max(1);
        let shards = (0..shards).map(|_| Mutex::new(Shard { table: HashTable::new(), next_sweep: f64::NEG_INFINITY })).collect();
        Self { shards, hasher: RandomState::new(), per_shard, idle }
    }

    /// Decides a request counted under `key` at `now` with `params`.
    pub(super) fn decide(&self, key: &str, params: &Params, now: f64) -> Decision {
        let hash = self.hasher.hash_one(key);
        // The table places keys by the hash's low bits and tags them with
        // its top seven: the shard is chosen by bits between the two.
        let shard = &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if now >= shard.next_sweep {
            shard.sweep(now, self.idle);
        }
        if let Some(slot) = shard.table.find_mut(hash, |slot| *slot.key == *key) {
            slot.used = now;
            return slot.state.decide(params, now);
        }
        if shard.table.len() >= self.per_shard {
            shard.make_room(self.per_shard, now, self.idle);
        }
        let slot = Slot { hash, key: key.into(), state: State::new(params), used: now };
        let slot = shard.table.insert_unique(hash, slot, |slot| slot.hash).into_mut();
        slot.state.decide(params, now)
    }

    /// Keys kept now (idle ones not yet swept out included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).table.len()).sum()
    }
}

impl Shard {
    /// Forgets the keys unused for `idle` seconds, and gives back the
    /// memory of a table mostly emptied.
    fn sweep(&mut self, now: f64, idle: f64) {
        self.table.retain(|slot| now - slot.used < idle);
        if self.table.capacity() > 4 * self.table.len() + 16 {
            self.table.shrink_to(self.table.len(), |slot| slot.hash);
        }
        self.next_sweep = now + idle;
    }

    /// Room in a shard holding its bound of `per_shard` keys: it keeps at
    /// most seven eighths of that less one, the idle keys going first and
    /// then the least recently used (ties broken by hash, so exactly as
    /// many go as must).
    fn make_room(&mut self, per_shard: usize, now: f64, idle: f64) {
        let keep = per_shard - per_shard / EVICTED_PART - 1;
        self.sweep(now, idle);
        let Some(last) = self.table.len().checked_sub(keep + 1) else { return };
        let order = |slot: &Slot| (slot.used, slot.hash);
        let earlier = |a: &(f64, u64), b: &(f64, u64)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        let mut uses: Vec<(f64, u64)> = self.table.iter().map(order).collect();
        let (_, cutoff, _) = uses.select_nth_unstable_by(last, earlier);
        let cutoff = *cutoff;
        self.table.retain(|slot| earlier(&order(slot), &cutoff).is_gt());
    }
}

#[cfg(test)]
mod tests {
    use portico_shared::model::RateLimitAlgorithm;

    use super::*;

    const TWO_PER_MINUTE: Params = Params { algorithm: RateLimitAlgorithm::FixedWindow, limit: 2, window: 60.0, burst: 2 };

    fn allowed(states: &States, key: &str, now: f64) -> bool {
        states.decide(key, &TWO_PER_MINUTE, now).allowed
    }

    #[test]
    fn a_key_is_counted_across_decisions_and_apart_from_other_keys() {
        let states = States::new(100, 121.0);
        assert!(allowed(&states, "ip:10.0.0.1", 0.0));
        assert!(allowed(&states, "ip:10.0.0.1", 1.0));
        assert!(!allowed(&states, "ip:10.0.0.1", 2.0), "the third request of the minute is refused");
        assert!(allowed(&states, "ip:10.0.0.2", 3.0), "another key has its own count");
        assert!(allowed(&states, "ip:10.0.0.1", 60.0), "the next window admits again");
        assert_eq!(states.len(), 2);
    }

    #[test]
    fn idle_keys_are_forgotten_once_their_state_is_back_at_the_start() {
        // One shard: the later keys surely reach it and sweep it.
        let states = States::with_shards(1000, 121.0, 1);
        for n in 0..500 {
            assert!(allowed(&states, &format!("ip:{n}"), 0.5));
        }
        assert!(allowed(&states, "ip:busy", 100.0));
        assert_eq!(states.len(), 501, "nothing is idle yet");
        assert!(allowed(&states, "ip:busy", 125.0), "the first of a new window");
        // A later request sweeps the shard: only the key used within the
        // idle time is left.
        for n in 0..200 {
            assert!(allowed(&states, &format!("later:{n}"), 130.0));
        }
        assert_eq!(states.len(), 201);
        assert!(allowed(&states, "ip:busy", 130.0));
        assert!(!allowed(&states, "ip:busy", 130.0), "the key used within the idle time kept its count");
    }

    #[test]
    fn a_full_store_keeps_every_new_key_and_drops_the_least_recently_used() {
        // Four shards of 16 keys at most.
        let states = States::with_shards(64, f64::INFINITY, 4);
        // Two requests each: these keys are at their limit for the minute.
        for n in 0..64 {
            let at = 1.0 + f64::from(n) / 1000.0;
            assert!(allowed(&states, &format!("old:{n}"), at));
            assert!(allowed(&states, &format!("old:{n}"), at));
        }
        assert!(!allowed(&states, "old:63", 2.0), "kept, and used just now");
        for n in 0..1000 {
            assert!(allowed(&states, &format!("new:{n}"), 3.0 + f64::from(n) / 1000.0), "a new key is always counted");
            assert!(states.len() <= 64, "bounded: {} keys", states.len());
        }
        assert!(allowed(&states, "new:999", 4.0), "its second request");
        assert!(!allowed(&states, "new:999", 4.0), "the newest key kept its count: its third is refused");
        assert!(allowed(&states, "old:0", 4.0), "the least recently used keys went first");
    }
}
