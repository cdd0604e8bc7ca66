//! The Prometheus recorder both planes install: one bucket layout for every
//! `_seconds` histogram and a thread that folds samples into buckets while
//! nobody scrapes. Installing is idempotent, so `portico dev` (both planes
//! in one process) shares one registry: each plane's `/metrics` then shows
//! the other's metrics too. What each plane measures, and the help texts,
//! live with that plane.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets, in seconds: from half a millisecond (a cached answer,
/// a store read) to 30 s (a slow upstream).
pub const BUCKETS: [f64; 15] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The handle of the installed recorder, once installed.
static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the process's recorder, or returns the one installed before.
pub fn install() -> Result<PrometheusHandle, String> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let handle =
        PrometheusBuilder::new().set_buckets(&BUCKETS).map_err(|e| e.to_string())?.install_recorder().map_err(|e| e.to_string())?;
    // Histogram samples wait in the recorder until a scrape renders them:
    // with nobody scraping, memory would grow with every request (about
    // 18 bytes each, `bench/memory`'s soak). Upkeep folds them into the
    // buckets, as the exporter's own listener would every 5 s.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| format!("cannot start the metrics upkeep thread: {e}"))?;
    *installed = Some(handle.clone());
    Ok(handle)
}
