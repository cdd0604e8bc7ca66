//! Prometheus metrics of the control plane: names, help texts and the
//! recording helpers that publishes, config streams, the store and the
//! admin API call. The fleet's gauges (data planes by status, the current
//! version) are set from the store at each scrape (`api::metrics`), so
//! every replica reports the same fleet. Labels are bounded: gateways
//! (created by admins), store operations, admin route templates, methods
//! and statuses; never node ids, raw paths or consumers.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use axum::http::{Method, StatusCode};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::PrometheusHandle;

/// Installs the recorder (shared with the data plane, see
/// [`portico_shared::metrics`]) and describes every metric; call once.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = portico_shared::metrics::install()?;
    describe_counter!("portico_cp_config_publishes_total", "Config versions published by this replica, by gateway");
    describe_gauge!("portico_cp_config_streams", "Config streams open on this replica (data planes connected to it), by gateway");
    describe_counter!("portico_cp_config_acks_total", "Config versions data planes applied (ACK), by gateway");
    describe_counter!("portico_cp_config_nacks_total", "Config versions data planes rejected (NACK), by gateway");
    describe_gauge!(
        "portico_cp_data_planes",
        "Data planes by gateway and status (in_sync, behind, rejected, disconnected), from the store at scrape time"
    );
    describe_gauge!("portico_cp_config_version", "The current config version of each gateway, from the store at scrape time");
    describe_histogram!("portico_cp_store_duration_seconds", Unit::Seconds, "Time of store operations, by operation");
    describe_counter!(
        "portico_cp_admin_requests_total",
        "Admin API requests answered, by method, route template (path; unmatched for none) and status"
    );
    Ok(handle)
}

/// This replica published a new version of `gateway`.
pub fn config_published(gateway: &str) {
    counter!("portico_cp_config_publishes_total", "gateway" => gateway.to_owned()).increment(1);
}

pub fn config_acked(gateway: &str) {
    counter!("portico_cp_config_acks_total", "gateway" => gateway.to_owned()).increment(1);
}

pub fn config_nacked(gateway: &str) {
    counter!("portico_cp_config_nacks_total", "gateway" => gateway.to_owned()).increment(1);
}

/// An open config stream, counted in `portico_cp_config_streams` while it lives.
#[derive(Debug)]
pub struct OpenStream {
    gateway: String,
}

impl OpenStream {
    pub fn opened(gateway: &str) -> Self {
        gauge!("portico_cp_config_streams", "gateway" => gateway.to_owned()).increment(1.0);
        // The gateway's ACK and NACK series exist from 0 before the first
        // one, so `increase()` sees that first one (a series born at 1 shows none).
        counter!("portico_cp_config_acks_total", "gateway" => gateway.to_owned()).increment(0);
        counter!("portico_cp_config_nacks_total", "gateway" => gateway.to_owned()).increment(0);
        Self { gateway: gateway.to_owned() }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        gauge!("portico_cp_config_streams", "gateway" => self.gateway.clone()).decrement(1.0);
    }
}

/// Times one store operation: its duration is recorded when dropped, at
/// the end of the operation whatever its outcome.
#[derive(Debug)]
pub struct StoreTimer {
    operation: &'static str,
    started: Instant,
}

impl StoreTimer {
    pub fn start(operation: &'static str) -> Self {
        Self { operation, started: Instant::now() }
    }
}

impl Drop for StoreTimer {
    fn drop(&mut self) {
        histogram!("portico_cp_store_duration_seconds", "operation" => self.operation).record(self.started.elapsed().as_secs_f64());
    }
}

/// An admin request answered `status`; `path` is its route template
/// (`None`: no route matched). Methods outside the standard ones count as
/// `other`, so a client cannot mint label values.
pub fn admin_request(method: &Method, path: Option<&str>, status: StatusCode) {
    let method = match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let path = path.unwrap_or("unmatched").to_owned();
    counter!("portico_cp_admin_requests_total", "method" => method, "path" => path, "status" => status.as_u16().to_string()).increment(1);
}

/// One gateway's fleet as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayFleet {
    pub gateway: String,
    pub current_version: u64,
    /// How many data planes have each status (every status, 0 included).
    pub data_planes: Vec<(&'static str, u64)>,
}

/// The fleets set by the last [`fleet_observed`], by gateway.
static REPORTED: Mutex<BTreeMap<String, GatewayFleet>> = Mutex::new(BTreeMap::new());

/// Sets the fleet gauges to `fleets`, every gateway there is; a gateway
/// reported before and now gone reads 0 (a series cannot be removed).
pub fn fleet_observed(fleets: Vec<GatewayFleet>) {
    let mut reported = REPORTED.lock().unwrap_or_else(PoisonError::into_inner);
    let mut now: BTreeMap<String, GatewayFleet> = fleets.into_iter().map(|fleet| (fleet.gateway.clone(), fleet)).collect();
    for (gateway, before) in std::mem::take(&mut *reported) {
        if !now.contains_key(&gateway) {
            let data_planes = before.data_planes.iter().map(|(status, _)| (*status, 0)).collect();
            set_fleet_gauges(&GatewayFleet { gateway, current_version: 0, data_planes });
        }
    }
    for fleet in now.values() {
        set_fleet_gauges(fleet);
    }
    std::mem::swap(&mut *reported, &mut now);
}

fn set_fleet_gauges(fleet: &GatewayFleet) {
    gauge!("portico_cp_config_version", "gateway" => fleet.gateway.clone()).set(fleet.current_version as f64);
    for (status, count) in &fleet.data_planes {
        gauge!("portico_cp_data_planes", "gateway" => fleet.gateway.clone(), "status" => *status).set(*count as f64);
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    /// Runs `record` against a recorder of its own and renders what it
    /// recorded, while what `record` returns still lives.
    fn rendered<T>(record: impl FnOnce() -> T) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _alive = metrics::with_local_recorder(&recorder, record);
        handle.render()
    }

    #[test]
    fn a_gateway_gone_from_the_store_reads_zero() {
        let statuses = |in_sync, behind| vec![("in_sync", in_sync), ("behind", behind), ("rejected", 0), ("disconnected", 0)];
        let text = rendered(|| {
            fleet_observed(vec![
                GatewayFleet { gateway: "mobile".into(), current_version: 4, data_planes: statuses(2, 1) },
                GatewayFleet { gateway: "web".into(), current_version: 9, data_planes: statuses(3, 0) },
            ]);
            fleet_observed(vec![GatewayFleet { gateway: "web".into(), current_version: 10, data_planes: statuses(2, 1) }]);
        });
        for series in [
            r#"portico_cp_config_version{gateway="mobile"} 0"#,
            r#"portico_cp_data_planes{gateway="mobile",status="in_sync"} 0"#,
            r#"portico_cp_data_planes{gateway="mobile",status="behind"} 0"#,
            r#"portico_cp_config_version{gateway="web"} 10"#,
            r#"portico_cp_data_planes{gateway="web",status="behind"} 1"#,
        ] {
            assert!(text.lines().any(|line| line == series), "{series} in:\n{text}");
        }
    }

    #[test]
    fn open_streams_count_while_they_live_and_start_their_ack_and_nack_series() {
        let text = rendered(|| {
            let first = OpenStream::opened("default");
            let second = OpenStream::opened("default");
            drop(first);
            config_nacked("default");
            second
        });
        for series in [
            r#"portico_cp_config_streams{gateway="default"} 1"#,
            r#"portico_cp_config_acks_total{gateway="default"} 0"#,
            r#"portico_cp_config_nacks_total{gateway="default"} 1"#,
        ] {
            assert!(text.lines().any(|line| line == series), "{series} in:\n{text}");
        }
    }
}
