//! `GET /metrics`, the control plane's Prometheus metrics, behind a token
//! like the rest of the admin API (a read-only token is enough; Prometheus
//! sends it from `authorization.credentials_file`). Each scrape first sets
//! the fleet gauges from the store, so they are fresh and every replica
//! reports the same fleet; while the store does not answer the scrape fails
//! (`503`), rather than show a fleet as it was. Also the middleware that
//! counts admin requests by route template.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::fleet::{NodeStatus, stale_before, status};
use crate::metrics::GatewayFleet;
use crate::store::StoreError;

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, content_type = "text/plain", description = "Prometheus text format (the metrics are listed in the README)"),
        (status = 503, body = ErrorBody, description = "The store does not answer")))]
pub(super) async fn render(State(state): State<AppState>) -> Result<Response, ApiError> {
    observe_fleet(&state).await?;
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], state.metrics.render()).into_response())
}

/// Sets the fleet gauges from the store: each gateway's current version and
/// its data planes by status, as the fleet view computes them.
async fn observe_fleet(state: &AppState) -> Result<(), StoreError> {
    let stale_before = stale_before(state);
    let heads = state.store.heads().await?;
    let nodes = state.store.all_nodes().await?;
    let fleets = heads
        .into_iter()
        .map(|head| {
            let statuses: Vec<NodeStatus> = nodes
                .iter()
                .filter(|node| node.gateway == head.gateway)
                .map(|node| status(node, head.version, &head.hash, stale_before))
                .collect();
            let data_planes = NodeStatus::ALL
                .into_iter()
                .map(|wanted| (wanted.label(), statuses.iter().filter(|seen| **seen == wanted).count() as u64))
                .collect();
            GatewayFleet { gateway: head.gateway, current_version: head.version, data_planes }
        })
        .collect();
    crate::metrics::fleet_observed(fleets);
    Ok(())
}

/// Middleware: counts each admin request by method, route template and status.
pub(super) async fn count_requests(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let template = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    crate::metrics::admin_request(&method, template.as_ref().map(MatchedPath::as_str), response.status());
    response
}
