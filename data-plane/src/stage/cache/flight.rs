//! Request coalescing: concurrent misses of one key make one upstream
//! request. The first becomes the *leader* and holds a [`FlightGuard`]
//! until its response is stored or found unfit to store; the others wait
//! (at most `max_waiters` of them, each at most `wait_ms`) and then look
//! again: a stored response answers them all at once, and when none was
//! stored they all go upstream at once, not one after another (the
//! waiting-list serialization Varnish's #3461 describes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::key::Key;

/// The fetches in flight, by key.
#[derive(Debug, Default)]
pub struct Flights {
    running: Mutex<HashMap<Key, Arc<Flight>>>,
}

#[derive(Debug)]
struct Flight {
    landed: watch::Sender<bool>,
    waiters: AtomicU32,
}

/// What a miss does.
pub enum Joined {
    /// Fetch, and let the others know by dropping the guard.
    Leader(FlightGuard),
    /// Another request is fetching: wait for it.
    Waiter(Waiting),
    /// Too many wait already: go upstream alone.
    Alone,
}

/// Held by the request fetching a key; dropping it releases the waiters.
#[derive(Debug)]
pub struct FlightGuard {
    cache: Arc<super::ResponseCache>,
    key: Key,
}

/// A place in a flight's waiting list.
pub struct Waiting {
    landed: watch::Receiver<bool>,
}

impl Flights {
    /// Joins the flight of `key`, or starts it.
    pub fn join(cache: &Arc<super::ResponseCache>, key: Key, max_waiters: u32) -> Joined {
        let mut running = cache.flights.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = running.get(&key) {
            if max_waiters == 0 || flight.waiters.fetch_add(1, Ordering::Relaxed) >= max_waiters {
                return Joined::Alone;
            }
            return Joined::Waiter(Waiting { landed: flight.landed.subscribe() });
        }
        running.insert(key, Arc::new(Flight { landed: watch::channel(false).0, waiters: AtomicU32::new(0) }));
        Joined::Leader(FlightGuard { cache: cache.clone(), key })
    }

    /// Starts the flight of `key` only if none runs (a background refresh).
    pub fn lead(cache: &Arc<super::ResponseCache>, key: Key) -> Option<FlightGuard> {
        match Self::join(cache, key, 0) {
            Joined::Leader(guard) => Some(guard),
            Joined::Waiter(_) | Joined::Alone => None,
        }
    }
}

impl Waiting {
    /// Waits for the leader, at most `wait`; whether it landed in time.
    pub async fn landed(mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.landed.wait_for(|landed| *landed)).await.is_ok_and(|seen| seen.is_ok())
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let flight = self.cache.flights.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
        if let Some(flight) = flight {
            flight.landed.send_replace(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::cache::ResponseCache;

    #[tokio::test]
    async fn waiters_are_bounded_and_all_released_together() {
        let cache = Arc::new(ResponseCache::new(1 << 20));
        let key = [1; 32];
        let Joined::Leader(guard) = Flights::join(&cache, key, 2) else { panic!("the first leads") };
        let waiting: Vec<Waiting> = (0..2)
            .map(|_| match Flights::join(&cache, key, 2) {
                Joined::Waiter(w) => w,
                _ => panic!("room for two"),
            })
            .collect();
        assert!(matches!(Flights::join(&cache, key, 2), Joined::Alone), "the third goes alone");
        assert!(Flights::lead(&cache, key).is_none(), "one refresh at a time");
        let released =
            tokio::spawn(async move { futures::future::join_all(waiting.into_iter().map(|w| w.landed(Duration::from_secs(5)))).await });
        drop(guard);
        assert_eq!(released.await.unwrap(), [true, true]);
        assert!(matches!(Flights::join(&cache, key, 2), Joined::Leader(_)), "a landed flight is gone");
    }

    #[tokio::test]
    async fn a_waiter_gives_up_after_its_time() {
        let cache = Arc::new(ResponseCache::new(1 << 20));
        let _guard = Flights::lead(&cache, [2; 32]).unwrap();
        let Joined::Waiter(waiting) = Flights::join(&cache, [2; 32], 10) else { panic!("waits") };
        assert!(!waiting.landed(Duration::from_millis(20)).await);
    }
}
