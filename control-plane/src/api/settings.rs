//! A gateway's own settings (`/api/v1/gateways/{gw}/settings`): policies
//! applied to every route (unless the route or its service has a policy of
//! the same type, which takes precedence) and the proxies trusted in front
//! of the gateway.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_shared::model::Policy;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path, change_message};
use super::{AppState, written};
use crate::store::Publication;

/// The settings of a whole gateway; `PUT` replaces all of them (a field
/// left out becomes empty).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Policies for every route of the gateway.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Proxies (addresses or CIDRs) whose `X-Forwarded-For` entries are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/gateways/{gw}/settings", tag = "settings", params(("gw" = String, Path, description = "Gateway name")),
    responses((status = 200, body = GatewaySettings), (status = 404, body = ErrorBody)))]
pub(super) async fn get(State(state): State<AppState>, Path(gw): Path<String>) -> Result<Json<GatewaySettings>, ApiError> {
    let config = state.current(&gw).await?.config;
    Ok(Json(GatewaySettings { policies: config.policies, trusted_proxies: config.trusted_proxies }))
}

#[utoipa::path(put, path = "/api/v1/gateways/{gw}/settings", tag = "settings", params(("gw" = String, Path, description = "Gateway name")),
    request_body = GatewaySettings,
    responses((status = 200, body = GatewaySettings, headers(("Portico-Config-Version" = u64))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(gw): Path<String>,
    JsonBody(body): JsonBody<GatewaySettings>,
) -> Result<Response, ApiError> {
    state.current(&gw).await?;
    let message = change_message(&headers)?;
    let publication = Publication { change: caller.change("settings.replace", "", &message), rollback_of: None };
    let published = state
        .publisher
        .change(&gw, &publication, |current| {
            let mut next = current.config.clone();
            next.policies.clone_from(&body.policies);
            next.trusted_proxies.clone_from(&body.trusted_proxies);
            Ok::<_, ApiError>(next)
        })
        .await?;
    let config = published.config;
    Ok(written(
        StatusCode::OK,
        published.version,
        Json(GatewaySettings { policies: config.policies, trusted_proxies: config.trusted_proxies }),
    ))
}
