//! Version history and rollback. History is linear: rolling back to n
//! publishes a new version whose content (and hash) equals n's.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use portico_shared::GatewayConfig;
use serde::Serialize;
use utoipa::ToSchema;

use super::audit::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{Path, Query, change_message_or};
use super::pagination::{List, Page};
use super::{AppState, written};
use crate::store::{Publication, VersionRecord};

/// One published version.
#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    pub version: u64,
    /// sha256 of the canonical snapshot.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    /// The name of the token that published it.
    pub author: String,
    /// From the write's `Portico-Change-Message` header.
    pub message: String,
    /// Set when this version is a rollback to an earlier one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
}

impl From<VersionRecord> for Version {
    fn from(r: VersionRecord) -> Self {
        Self {
            version: r.version,
            hash: r.hash,
            created_at: r.created_at,
            author: r.author,
            message: r.message,
            rollback_of: r.rollback_of,
        }
    }
}

/// A version with its snapshot.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionWithConfig {
    #[serde(flatten)]
    pub version: Version,
    /// The snapshot as data planes receive it, but for certificates' private keys.
    pub config: GatewayConfig,
}

#[utoipa::path(get, path = "/api/v1/gateways/{gw}/versions", tag = "versions", params(("gw" = String, Path, description = "Gateway name"), Page),
    responses((status = 200, body = List<Version>, description = "Newest first"), (status = 404, body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Path(gw): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<List<Version>>, ApiError> {
    let (limit, offset) = page.resolve()?;
    state.current(&gw).await?;
    let (records, total) = state.store.versions(&gw, limit, offset).await?;
    Ok(Json(List::of(records.into_iter().map(Version::from).collect(), total, limit, offset)))
}

#[utoipa::path(get, path = "/api/v1/gateways/{gw}/versions/{n}", tag = "versions",
    params(("gw" = String, Path, description = "Gateway name"), ("n" = u64, Path, description = "Version number")),
    responses((status = 200, body = VersionWithConfig), (status = 404, body = ErrorBody)))]
pub(super) async fn get(State(state): State<AppState>, Path((gw, n)): Path<(String, u64)>) -> Result<Json<VersionWithConfig>, ApiError> {
    let (record, bytes) = load(&state, &gw, n).await?;
    let config: GatewayConfig = serde_json::from_slice(&bytes).map_err(|e| {
        tracing::error!(gateway = %gw, version = n, error = %e, "stored snapshot does not parse");
        ApiError::Internal
    })?;
    Ok(Json(VersionWithConfig { version: record.into(), config: config.shown() }))
}

#[utoipa::path(post, path = "/api/v1/gateways/{gw}/versions/{n}/rollback", tag = "versions",
    params(("gw" = String, Path, description = "Gateway name"), ("n" = u64, Path, description = "Version to restore")),
    responses((status = 201, body = Version, description = "The new version, equal in content to n", headers(("Portico-Config-Version" = u64))),
        (status = 200, body = Version, description = "The current config already equals n; nothing published"),
        (status = 404, body = ErrorBody)))]
pub(super) async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((gw, n)): Path<(String, u64)>,
) -> Result<Response, ApiError> {
    let (_, bytes) = load(&state, &gw, n).await?;
    let target: GatewayConfig = serde_json::from_slice(&bytes).map_err(|_| ApiError::Internal)?;
    let message = change_message_or(&headers, || format!("rollback to version {n}"))?;
    let restored = n.to_string();
    let publication = Publication { change: caller.change("version.rollback", &restored, &message), rollback_of: Some(n) };
    let published = state.publisher.change(&gw, &publication, |_| Ok::<_, ApiError>(target.clone())).await?;
    let (record, _) = load(&state, &gw, published.version).await?;
    let status = if published.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(written(status, published.version, Json(Version::from(record))))
}

async fn load(state: &AppState, gw: &str, n: u64) -> Result<(VersionRecord, Vec<u8>), ApiError> {
    state.current(gw).await?;
    state.store.version(gw, n).await?.ok_or_else(|| ApiError::not_found(format!("version {n} of gateway '{gw}'")))
}
