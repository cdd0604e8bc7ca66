//! A gateway's whole config, declaratively: export it (JSON or YAML),
//! replace it in one version, or preview what a replacement would change.
//! Entities are matched by name, so an exported document re-applied changes
//! nothing and entities keep their ids.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use portico_shared::GatewayConfig;
use portico_shared::diff::{ConfigDiff, diff as config_diff, merge};
use portico_shared::validate;
use serde::Serialize;
use utoipa::ToSchema;

use super::audit::Caller;
use super::credentials::seal_all;
use super::error::{ApiError, ErrorBody};
use super::extract::{Document, Format, Path, change_message, if_match};
use super::{AppState, VERSION_HEADER, written};
use crate::store::Publication;

/// The outcome of replacing a config.
#[derive(Debug, Serialize, ToSchema)]
pub struct Applied {
    /// The version now current (unchanged when the config already matched).
    pub version: u64,
    pub hash: String,
    /// Whether a new version was published.
    pub published: bool,
    pub diff: ConfigDiff,
}

/// What replacing the config would change, against the version it was computed on.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiffPreview {
    pub base_version: u64,
    pub base_hash: String,
    #[serde(flatten)]
    pub diff: ConfigDiff,
}

#[utoipa::path(get, path = "/api/v1/gateways/{gw}/config", tag = "config", params(("gw" = String, Path, description = "Gateway name")),
    responses((status = 200, description = "The declarative config; YAML with `Accept: application/yaml`",
        content((GatewayConfig = "application/json"), (GatewayConfig = "application/yaml")),
        headers(("ETag" = String, description = "The config hash, for If-Match"), ("Portico-Config-Version" = u64))),
        (status = 404, body = ErrorBody)))]
pub(super) async fn export(State(state): State<AppState>, headers: HeaderMap, Path(gw): Path<String>) -> Result<Response, ApiError> {
    let current = state.current(&gw).await?;
    let declarative = current.config.shown().declarative();
    let mut response = match Format::accepted(&headers) {
        Format::Yaml => {
            let yaml = serde_yaml_ng::to_string(&declarative).map_err(|_| ApiError::Internal)?;
            ([(header::CONTENT_TYPE, "application/yaml")], yaml).into_response()
        }
        Format::Json => Json(declarative).into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_str(&format!("\"{}\"", current.hash)).map_err(|_| ApiError::Internal)?);
    headers.insert(VERSION_HEADER, HeaderValue::from(current.version));
    Ok(response)
}

#[utoipa::path(put, path = "/api/v1/gateways/{gw}/config", tag = "config",
    params(("gw" = String, Path, description = "Gateway name"), ("If-Match" = Option<String>, Header, description = "The config hash you read")),
    request_body(content((GatewayConfig = "application/json"), (GatewayConfig = "application/yaml"))),
    responses((status = 200, body = Applied, headers(("Portico-Config-Version" = u64))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn import(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(gw): Path<String>,
    Document(desired): Document<GatewayConfig>,
) -> Result<Response, ApiError> {
    let message = change_message(&headers)?;
    let publication = Publication { change: caller.change("config.replace", "", &message), rollback_of: None };
    let expected = if_match(&headers);
    let mut before = GatewayConfig::default();
    let published = state
        .publisher
        .change(&gw, &publication, |current| {
            if let Some(expected) = expected.as_deref().filter(|e| *e != "*" && *e != current.hash) {
                return Err(ApiError::Stale(format!("the config is now at hash {}, not {expected}", current.hash)));
            }
            let mut desired = desired.clone();
            desired.drop_derived();
            seal_all(&mut desired, &state.keys)?;
            validate::config(&mut desired)?;
            before = current.config.clone();
            Ok(merge(&current.config, desired, Utc::now()))
        })
        .await?;
    let diff = config_diff(&before, &published.config);
    let body = Applied { version: published.version, hash: published.hash, published: published.created, diff };
    Ok(written(StatusCode::OK, published.version, Json(body)))
}

#[utoipa::path(post, path = "/api/v1/gateways/{gw}/config/diff", tag = "config", params(("gw" = String, Path, description = "Gateway name")),
    request_body(content((GatewayConfig = "application/json"), (GatewayConfig = "application/yaml"))),
    responses((status = 200, body = DiffPreview), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn diff(
    State(state): State<AppState>,
    Path(gw): Path<String>,
    Document(mut desired): Document<GatewayConfig>,
) -> Result<Json<DiffPreview>, ApiError> {
    let current = state.current(&gw).await?;
    desired.drop_derived();
    seal_all(&mut desired, &state.keys)?;
    validate::config(&mut desired)?;
    Ok(Json(DiffPreview { base_version: current.version, base_hash: current.hash, diff: config_diff(&current.config, &desired) }))
}
