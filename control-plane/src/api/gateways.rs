//! Gateways: independently versioned config trees. `default` always exists
//! and cannot be deleted. Creating a gateway publishes its version 1, an
//! empty config.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path, Query, change_message, change_message_or};
use super::pagination::{List, Page};
use super::{AppState, known_name, written};
use crate::store::{DEFAULT_GATEWAY, GatewayRecord, StoreError};

/// A gateway as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Gateway {
    pub name: String,
    pub description: String,
    /// The version its data planes should serve.
    pub version: u64,
    pub created_at: DateTime<Utc>,
}

impl From<GatewayRecord> for Gateway {
    fn from(record: GatewayRecord) -> Self {
        Self { name: record.name, description: record.description, version: record.current_version, created_at: record.created_at }
    }
}

/// A gateway to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGateway {
    /// `[a-z0-9._-]`, 1 to 64 characters.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[utoipa::path(get, path = "/api/v1/gateways", tag = "gateways", params(Page),
    responses((status = 200, body = List<Gateway>, description = "By name"), (status = 400, body = ErrorBody)))]
pub(super) async fn list(State(state): State<AppState>, Query(page): Query<Page>) -> Result<Json<List<Gateway>>, ApiError> {
    Ok(Json(List::page(state.store.list_gateways().await?.into_iter().map(Gateway::from).collect(), page)?))
}

#[utoipa::path(post, path = "/api/v1/gateways", tag = "gateways", request_body = NewGateway,
    responses((status = 201, body = Gateway, headers(("Portico-Config-Version" = u64))), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(new): JsonBody<NewGateway>,
) -> Result<Response, ApiError> {
    portico_shared::validate::name("name", &new.name)?;
    if new.description.len() > 1_000 || new.description.chars().any(char::is_control) {
        return Err(ApiError::invalid("description", "must be at most 1000 characters, without control characters"));
    }
    let message = change_message_or(&headers, || "gateway created".to_owned())?;
    let change = caller.change("gateway.create", &new.name, &message);
    let version = state.store.create_gateway(&new.name, &new.description, &change).await.map_err(|e| match e {
        StoreError::Conflict(_) => {
            ApiError::Conflict { field: Some("name".into()), message: format!("gateway '{}' already exists", new.name) }
        }
        other => other.into(),
    })?;
    crate::metrics::config_published(&new.name);
    let record = state.store.gateway(&new.name).await?.ok_or(ApiError::Internal)?;
    Ok(written(StatusCode::CREATED, version.version, Json(Gateway::from(record))))
}

#[utoipa::path(get, path = "/api/v1/gateways/{gw}", tag = "gateways", params(("gw" = String, Path, description = "Gateway name")),
    responses((status = 200, body = Gateway), (status = 404, body = ErrorBody)))]
pub(super) async fn get(State(state): State<AppState>, Path(gw): Path<String>) -> Result<Json<Gateway>, ApiError> {
    known_name(&gw, "gateway")?;
    let record = state.store.gateway(&gw).await?.ok_or_else(|| ApiError::not_found(format!("gateway '{gw}'")))?;
    Ok(Json(record.into()))
}

#[utoipa::path(delete, path = "/api/v1/gateways/{gw}", tag = "gateways", params(("gw" = String, Path, description = "Gateway name")),
    responses((status = 204, description = "Deleted with its history"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(gw): Path<String>,
) -> Result<Response, ApiError> {
    known_name(&gw, "gateway")?;
    if gw == DEFAULT_GATEWAY {
        return Err(ApiError::conflict("the default gateway cannot be deleted"));
    }
    let message = change_message(&headers)?;
    if !state.store.delete_gateway(&gw, &caller.change("gateway.delete", &gw, &message)).await? {
        return Err(ApiError::not_found(format!("gateway '{gw}'")));
    }
    state.publisher.gateway_deleted(&gw);
    tracing::info!(gateway = %gw, "gateway deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
