//! Admin tokens: created with a role, shown once, stored hashed, listed and
//! read without their secrets, revocable.
//! Only admin tokens reach these endpoints. Token changes are not config
//! changes: they publish no version, but each is in the audit log.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit::Caller;
use super::auth::{BOOTSTRAP_NAME, generate_token, token_hash};
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path, Query, change_message, change_message_or};
use super::pagination::{List, Page};
use super::{AppState, known_name};
use crate::store::{Role, SYSTEM_AUTHOR, StoreError, TokenRecord};

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// `[a-z0-9._-]`, 1 to 64 characters; recorded as the author of the versions it publishes.
    pub name: String,
    pub role: Role,
}

/// A token, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A token just created: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: Token,
    /// The bearer token. Store it now: it cannot be shown again.
    pub secret: String,
}

impl From<TokenRecord> for Token {
    fn from(r: TokenRecord) -> Self {
        Self { name: r.name, role: r.role, created_by: r.created_by, created_at: r.created_at }
    }
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(Page),
    responses((status = 200, body = List<Token>, description = "By name; never their secrets"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list(State(state): State<AppState>, Query(page): Query<Page>) -> Result<Json<List<Token>>, ApiError> {
    Ok(Json(List::page(state.store.tokens().await?.into_iter().map(Token::from).collect(), page)?))
}

#[utoipa::path(get, path = "/api/v1/tokens/{name}", tag = "tokens", params(("name" = String, Path, description = "Token name")),
    responses((status = 200, body = Token, description = "Its metadata; the secret is shown only when created"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Token>, ApiError> {
    known_name(&name, "token")?;
    let record = state.store.token(&name).await?.ok_or_else(|| ApiError::not_found(format!("token '{name}'")))?;
    Ok(Json(record.into()))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(new): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    portico_shared::validate::name("name", &new.name)?;
    if new.name == BOOTSTRAP_NAME || new.name == SYSTEM_AUTHOR {
        return Err(ApiError::Conflict { field: Some("name".into()), message: format!("'{}' is reserved", new.name) });
    }
    let message = change_message_or(&headers, || format!("role: {}", new.role.as_str()))?;
    let secret = generate_token();
    let change = caller.change("token.create", &new.name, &message);
    let record = state.store.create_token(&new.name, new.role, &token_hash(&secret), &change).await.map_err(|e| match e {
        StoreError::Conflict(_) => {
            ApiError::Conflict { field: Some("name".into()), message: format!("token '{}' already exists", new.name) }
        }
        other => other.into(),
    })?;
    tracing::info!(token = %record.name, role = record.role.as_str(), by = %caller.principal.name, "admin token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { token: record.into(), secret })).into_response())
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens", params(("name" = String, Path, description = "Token name")),
    responses((status = 204, description = "Revoked"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    known_name(&name, "token")?;
    let message = change_message(&headers)?;
    if !state.store.revoke_token(&name, &caller.change("token.revoke", &name, &message)).await? {
        return Err(ApiError::not_found(format!("token '{name}'")));
    }
    tracing::info!(token = %name, by = %caller.principal.name, "admin token revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
