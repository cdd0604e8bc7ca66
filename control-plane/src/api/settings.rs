//! The gateway-wide policies (`/api/v1/gateways/{gw}/policies`): applied to
//! every route of the gateway, unless the route or its service has a policy
//! of the same type, which takes precedence.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use portico_shared::model::Policy;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path, change_message};
use super::{AppState, written};
use crate::store::Publication;

/// The policies of a whole gateway.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayPolicies {
    pub policies: Vec<Policy>,
}

#[utoipa::path(get, path = "/api/v1/gateways/{gw}/policies", tag = "policies", params(("gw" = String, Path, description = "Gateway name")),
    responses((status = 200, body = GatewayPolicies), (status = 404, body = ErrorBody)))]
pub(super) async fn get(State(state): State<AppState>, Path(gw): Path<String>) -> Result<Json<GatewayPolicies>, ApiError> {
    let current = state.current(&gw).await?;
    Ok(Json(GatewayPolicies { policies: current.config.policies }))
}

#[utoipa::path(put, path = "/api/v1/gateways/{gw}/policies", tag = "policies", params(("gw" = String, Path, description = "Gateway name")),
    request_body = GatewayPolicies,
    responses((status = 200, body = GatewayPolicies, headers(("Portico-Config-Version" = u64))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn replace(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Path(gw): Path<String>,
    JsonBody(body): JsonBody<GatewayPolicies>,
) -> Result<Response, ApiError> {
    state.current(&gw).await?;
    let message = change_message(&headers)?;
    let publication = Publication { author: &principal.name, message: &message, rollback_of: None };
    let published = state
        .publisher
        .change(&gw, &publication, |current| {
            let mut next = current.config.clone();
            next.policies.clone_from(&body.policies);
            Ok::<_, ApiError>(next)
        })
        .await?;
    Ok(written(StatusCode::OK, published.version, Json(GatewayPolicies { policies: published.config.policies })))
}
