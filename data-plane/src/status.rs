//! The operators' listener: `/healthz` (alive), `/readyz` (200 once a
//! config is applied), `/status` (gateway, version, hash, node id) and
//! `/metrics` (Prometheus text format; the route count is there, as
//! `portico_config_routes`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::state::NodeState;

#[derive(Clone)]
struct StatusState {
    node: Arc<NodeState>,
    metrics: PrometheusHandle,
}

pub fn router(node: Arc<NodeState>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(render_metrics))
        .with_state(StatusState { node, metrics })
}

/// Prometheus text, or OpenMetrics (with exemplars) to a scraper that asks for it.
async fn render_metrics(State(s): State<StatusState>, headers: axum::http::HeaderMap) -> Response {
    let text = s.metrics.render();
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    if crate::openmetrics::wanted(accept) {
        return ([(axum::http::header::CONTENT_TYPE, crate::openmetrics::CONTENT_TYPE)], crate::openmetrics::render(&text)).into_response();
    }
    text.into_response()
}

async fn readyz(State(s): State<StatusState>) -> Response {
    match s.node.runtime() {
        Some(runtime) => Json(json!({"status": "ready", "version": runtime.version})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "no config yet"}))).into_response(),
    }
}

async fn status(State(s): State<StatusState>) -> Json<serde_json::Value> {
    let runtime = s.node.runtime();
    Json(json!({
        "gateway": s.node.gateway,
        "version": runtime.as_ref().map(|r| r.version),
        "hash": runtime.as_ref().map(|r| r.hash.clone()),
        "node_id": s.node.node_id,
    }))
}
