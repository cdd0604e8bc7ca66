//! Rate-limited warnings about data planes refused for a wrong or missing
//! cluster token: the first attempt from a peer address is logged at once,
//! then at most one line per address per [`WINDOW`], counting the attempts
//! it stands for, so a misconfigured fleet retrying with backoff cannot
//! flood the log; past [`MAX_PEERS`] addresses a minute, the rest share one
//! line. The token itself is never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one line per peer address this often.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Peers with a window of their own at once; beyond that, new addresses
/// share one window. This also bounds the log: at most this many lines
/// (plus the shared one) a minute, however many addresses a client rotates
/// through (IPv6 gives it plenty).
const MAX_PEERS: usize = 64;

/// The windows of recently refused peers (`None`: address unknown, or too many peers).
#[derive(Default)]
pub(crate) struct Refusals {
    peers: Mutex<HashMap<Option<IpAddr>, Window>>,
}

struct Window {
    logged_at: Instant,
    /// Attempts since the last line.
    unlogged: u64,
}

impl Refusals {
    /// Counts one refused attempt from `peer` at `now`; `Some(attempts)` when
    /// a line is due, `attempts` being this one and those not logged since
    /// the previous line.
    pub(crate) fn record(&self, peer: Option<IpAddr>, now: Instant) -> Option<u64> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, window| now.duration_since(window.logged_at) < WINDOW);
        }
        let key = if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) { None } else { peer };
        match peers.get_mut(&key) {
            Some(window) if now.duration_since(window.logged_at) < WINDOW => {
                window.unlogged += 1;
                None
            }
            Some(window) => {
                let attempts = window.unlogged + 1;
                *window = Window { logged_at: now, unlogged: 0 };
                Some(attempts)
            }
            None => {
                peers.insert(key, Window { logged_at: now, unlogged: 0 });
                Some(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_peer_per_window_counting_the_attempts_between() {
        let refusals = Refusals::default();
        let (a, b) = (Some(IpAddr::from([10, 0, 0, 1])), Some(IpAddr::from([10, 0, 0, 2])));
        let start = Instant::now();
        assert_eq!(refusals.record(a, start), Some(1));
        assert_eq!(refusals.record(a, start + Duration::from_secs(1)), None);
        assert_eq!(refusals.record(a, start + Duration::from_secs(59)), None);
        assert_eq!(refusals.record(b, start + Duration::from_secs(2)), Some(1), "another peer has its own window");
        assert_eq!(refusals.record(a, start + WINDOW), Some(3), "the next line counts the two held back");
        assert_eq!(refusals.record(a, start + WINDOW + Duration::from_secs(1)), None);
    }

    #[test]
    fn memory_and_lines_stay_bounded_under_many_addresses() {
        let refusals = Refusals::default();
        let start = Instant::now();
        let lines = (0..10_000u32).filter(|i| refusals.record(Some(IpAddr::from(i.to_be_bytes())), start).is_some()).count();
        assert_eq!(lines, MAX_PEERS + 1, "one line each for the first peers, then one for all the others");
        assert!(refusals.peers.lock().unwrap().len() <= MAX_PEERS + 1);
    }
}
