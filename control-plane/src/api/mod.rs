//! The admin REST API (axum): CRUD for every entity of a gateway, the
//! declarative config, version history and rollback, the fleet view, cache
//! purges, admin tokens and the audit log, all under `/api/v1` behind
//! bearer tokens, plus the OpenAPI document generated from the handlers
//! (`/api/v1/openapi.json`), `/healthz` (alive), `/readyz` (the store
//! answers) and `/metrics` (Prometheus, behind a token).

pub mod audit;
pub mod auth;
pub mod cache;
pub mod config;
pub mod credentials;
pub mod entities;
pub mod error;
pub mod extract;
pub mod fleet;
pub mod gateways;
pub mod metrics;
pub mod pagination;
pub mod settings;
pub mod tokens;
pub mod versions;

use std::sync::LazyLock;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, middleware};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use portico_shared::secret::KeyHasher;
use serde::Serialize;
use utoipa::ToSchema;

use self::auth::Authenticator;
use self::error::ApiError;
use crate::publish::Publisher;
use crate::store::{Current, Store};

/// The header that carries the version a write published (or left current).
pub const VERSION_HEADER: &str = "portico-config-version";

/// Largest request body: a whole config of some 10k routes fits well.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub publisher: Publisher,
    pub auth: Authenticator,
    /// Hashes API keys (derived from the cluster token, as data planes do).
    pub keys: KeyHasher,
    /// Heartbeat interval of the config streams (for the fleet view's staleness).
    pub heartbeat: Duration,
    /// Renders the process's metrics (`/metrics`).
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// The current config of a gateway; `404` if there is no such gateway.
    pub async fn current(&self, gateway: &str) -> Result<Current, ApiError> {
        known_name(gateway, "gateway")?;
        self.store.current(gateway).await?.ok_or_else(|| ApiError::not_found(format!("gateway '{gateway}'")))
    }
}

/// A name from a URL path: one that could never have been created is a `404`
/// before any query (so odd bytes never reach the database).
pub fn known_name(name: &str, what: &str) -> Result<(), ApiError> {
    portico_shared::validate::name(what, name).map_err(|_| ApiError::not_found(format!("{what} '{}'", name.escape_debug())))
}

/// A write's response: `status`, `body` and the `Portico-Config-Version` header.
pub fn written(status: StatusCode, version: u64, body: impl IntoResponse) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(VERSION_HEADER, HeaderValue::from(version));
    response
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Portico admin API", description = "Configure Portico gateways: services, routes, consumers and their credentials, certificates, protos, gateway settings, versions, data planes and cache purges."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "gateways", description = "Independently versioned front doors"),
        (name = "services", description = "Where traffic goes"),
        (name = "routes", description = "What traffic a gateway takes"),
        (name = "consumers", description = "Who calls, and their credentials"),
        (name = "certificates", description = "TLS certificates served by SNI (private keys are write-only)"),
        (name = "protos", description = "Protobuf descriptors of the gRPC services behind `grpc` routes"),
        (name = "settings", description = "A gateway's own policies and trusted proxies"),
        (name = "config", description = "A gateway's whole config, declaratively"),
        (name = "versions", description = "History and rollback"),
        (name = "data-planes", description = "The fleet"),
        (name = "cache", description = "Purging data planes' response caches"),
        (name = "tokens", description = "Admin API tokens"),
        (name = "audit", description = "Who changed what, when and from where (admin tokens only)"),
        (name = "meta", description = "Health and this document, without a token; Prometheus metrics, with one"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The admin API's authenticated routes and their OpenAPI operations.
fn authenticated() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(gateways::list, gateways::create))
        .routes(routes!(gateways::get, gateways::delete))
        .routes(routes!(entities::services::list, entities::services::create))
        .routes(routes!(entities::services::get, entities::services::replace, entities::services::patch, entities::services::delete))
        .routes(routes!(entities::routes::list, entities::routes::create))
        .routes(routes!(entities::routes::get, entities::routes::replace, entities::routes::patch, entities::routes::delete))
        .routes(routes!(entities::consumers::list, entities::consumers::create))
        .routes(routes!(entities::consumers::get, entities::consumers::replace, entities::consumers::patch, entities::consumers::delete))
        .routes(routes!(entities::certificates::list, entities::certificates::create))
        .routes(routes!(
            entities::certificates::get,
            entities::certificates::replace,
            entities::certificates::patch,
            entities::certificates::delete
        ))
        .routes(routes!(entities::protos::list, entities::protos::create))
        .routes(routes!(entities::protos::get, entities::protos::replace, entities::protos::patch, entities::protos::delete))
        .routes(routes!(credentials::list, credentials::create))
        .routes(routes!(credentials::get, credentials::replace, credentials::patch, credentials::delete))
        .routes(routes!(settings::get, settings::replace))
        .routes(routes!(config::export, config::import))
        .routes(routes!(config::diff))
        .routes(routes!(versions::list))
        .routes(routes!(versions::get))
        .routes(routes!(versions::rollback))
        .routes(routes!(fleet::list))
        .routes(routes!(fleet::delete))
        .routes(routes!(cache::purge))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::get, tokens::revoke))
        .routes(routes!(audit::list))
        .routes(routes!(metrics::render))
}

/// The routes that answer without a token, documented as such.
fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_document)).routes(routes!(healthz)).routes(routes!(readyz))
}

/// Every route of the admin service, the authenticated ones behind the
/// token check. Routes and document come from the same [`OpenApiRouter`]s
/// ([`openapi`]), so no route can be served without being documented, and
/// the auth test enumerates the document.
fn routes(state: &AppState) -> Router<AppState> {
    let (authenticated, _) = authenticated().split_for_parts();
    let (public, _) = public().split_for_parts();
    authenticated.layer(middleware::from_fn_with_state(state.clone(), auth::require_token)).merge(public)
}

/// The OpenAPI document of the admin API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, doc) = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi()).merge(authenticated()).merge(public()).split_for_parts();
    doc
}

/// The document as served, built once.
static OPENAPI: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(openapi);

/// The whole admin service: authenticated API, public health and OpenAPI.
pub fn router(state: AppState) -> Router {
    routes(&state)
        .fallback(|| async { ApiError::not_found("endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // A `Router::layer` wraps each route and the fallbacks, after routing: it sees the `MatchedPath`.
        .layer(middleware::from_fn(metrics::count_requests))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http().make_span_with(crate::telemetry::admin_span).on_response(crate::telemetry::answered))
        .with_state(state)
}

/// What the health endpoints answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `store_unavailable` from `/readyz`.
    pub status: &'static str,
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "This document (no token needed: it holds no secrets)", content_type = "application/json")))]
async fn openapi_document() -> Json<utoipa::openapi::OpenApi> {
    Json(OPENAPI.clone())
}

#[utoipa::path(get, path = "/healthz", tag = "meta", security(()), responses((status = 200, body = Health, description = "The process is alive")))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: `200` while the store answers, `503` while it does not.
#[utoipa::path(get, path = "/readyz", tag = "meta", security(()),
    responses((status = 200, body = Health, description = "The store answers"), (status = 503, body = Health, description = "The store does not answer")))]
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(Health { status: "ok" }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "store_unavailable" })).into_response()
        }
    }
}
