//! A consumer's credentials (`/consumers/{c}/credentials`): the generic
//! entity CRUD scoped to one consumer, plus what only credentials need.
//! API keys are sealed on the way in: a `key` (given, or generated when a
//! `key-auth` credential comes without one) is replaced by its keyed hash
//! before anything is validated or stored, and the response of that one
//! write is the only place the key is ever shown.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_shared::model::{Credential, CredentialKind};
use portico_shared::secret::KeyHasher;
use portico_shared::{ConfigError, ConfigErrors, GatewayConfig, validate};

use super::AppState;
use super::audit::Caller;
use super::auth::generate_secret;
use super::entities::{self, Scope};
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path, Query};
use super::pagination::{List, Page};

/// Prefix of generated API keys, so they are recognisable in logs and scanners.
const KEY_PREFIX: &str = "pk_";

/// Replaces a `key-auth` credential's `key` by its keyed hash, generating a
/// key first when `generate` is set and the credential has neither key nor
/// hash. Returns the key to show once.
pub fn seal(credential: &mut Credential, keys: &KeyHasher, generate: bool) -> Result<Option<String>, ConfigError> {
    let CredentialKind::KeyAuth(credential) = &mut credential.kind else { return Ok(None) };
    if credential.key.is_none() && credential.key_hash.is_none() && generate {
        credential.key = Some(generate_secret(KEY_PREFIX));
    }
    let Some(key) = credential.key.take() else { return Ok(None) };
    validate::api_key("key", &key)?;
    credential.key_hash = Some(keys.hash_hex(&key));
    Ok(Some(key))
}

/// Shows `key` (the one a write just set) in the response of that write.
fn reveal(credential: &mut Credential, key: Option<String>) {
    if let CredentialKind::KeyAuth(credential) = &mut credential.kind {
        credential.key = key;
    }
}

/// Seals every credential of a declarative document (keys are given, never
/// generated, there), reporting every key that cannot be sealed.
pub fn seal_all(config: &mut GatewayConfig, keys: &KeyHasher) -> Result<(), ConfigErrors> {
    let errors = config
        .credentials
        .iter_mut()
        .enumerate()
        .filter_map(|(i, credential)| seal(credential, keys, false).err().map(|e| e.within(&format!("credentials[{i}]"))))
        .collect();
    ConfigErrors::from_vec(errors).map_or(Ok(()), Err)
}

/// The username of consumer `key` (id or username); `404` if there is none.
async fn owner(state: &AppState, gateway: &str, key: &str) -> Result<String, ApiError> {
    let current = state.current(gateway).await?;
    current
        .config
        .consumers
        .iter()
        .find(|c| c.username == key || c.id.is_some_and(|id| id.to_string() == key))
        .map(|c| c.username.clone())
        .ok_or_else(|| ApiError::not_found(format!("consumer '{key}' in gateway '{gateway}'")))
}

/// Gives `credential` to `consumer`; one that names another consumer is refused.
fn adopt(credential: &mut Credential, consumer: &str) -> Result<(), ApiError> {
    if credential.consumer.is_empty() {
        credential.consumer = consumer.to_owned();
    }
    if credential.consumer != consumer {
        return Err(ApiError::invalid("consumer", format!("this credential belongs to consumer '{consumer}' (the URL's)")));
    }
    Ok(())
}

const LIST: &str = "/api/v1/gateways/{gw}/consumers/{c}/credentials";

#[utoipa::path(get, path = "/api/v1/gateways/{gw}/consumers/{c}/credentials", tag = "consumers",
    params(("gw" = String, Path, description = "Gateway name"), ("c" = String, Path, description = "Consumer id or username"), Page),
    responses((status = 200, body = List<Credential>), (status = 404, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Path((gw, c)): Path<(String, String)>,
    Query(page): Query<Page>,
) -> Result<Json<List<Credential>>, ApiError> {
    let consumer = owner(&state, &gw, &c).await?;
    entities::list::<Credential>(&state, Scope { gateway: &gw, owner: Some(&consumer) }, page).await
}

#[utoipa::path(post, path = "/api/v1/gateways/{gw}/consumers/{c}/credentials", tag = "consumers",
    params(("gw" = String, Path, description = "Gateway name"), ("c" = String, Path, description = "Consumer id or username")),
    request_body(content = Credential, description = "`{\"type\": \"key-auth\"}` generates a key; the response shows it once"),
    responses((status = 201, body = Credential, headers(("Portico-Config-Version" = u64), ("ETag" = String), ("Location" = String))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((gw, c)): Path<(String, String)>,
    JsonBody(mut credential): JsonBody<Credential>,
) -> Result<Response, ApiError> {
    let consumer = owner(&state, &gw, &c).await?;
    adopt(&mut credential, &consumer)?;
    let key = seal(&mut credential, &state.keys, true)?;
    let (published, id) = entities::create_entity(&state, &caller, &headers, &gw, credential).await?;
    let location = format!("{}/{id}", LIST.replace("{gw}", &gw).replace("{c}", &consumer));
    entities::entity_response::<Credential>(StatusCode::CREATED, &published, id, Some(location), |c| reveal(c, key))
}

#[utoipa::path(get, path = "/api/v1/gateways/{gw}/consumers/{c}/credentials/{key}", tag = "consumers",
    params(("gw" = String, Path, description = "Gateway name"), ("c" = String, Path, description = "Consumer id or username"),
        ("key" = String, Path, description = "Credential id or name")),
    responses((status = 200, body = Credential, headers(("ETag" = String))), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(State(state): State<AppState>, Path((gw, c, key)): Path<(String, String, String)>) -> Result<Response, ApiError> {
    let consumer = owner(&state, &gw, &c).await?;
    entities::get::<Credential>(&state, Scope { gateway: &gw, owner: Some(&consumer) }, &key).await
}

#[utoipa::path(put, path = "/api/v1/gateways/{gw}/consumers/{c}/credentials/{key}", tag = "consumers",
    params(("gw" = String, Path, description = "Gateway name"), ("c" = String, Path, description = "Consumer id or username"),
        ("key" = String, Path, description = "Credential id or name"),
        ("If-Match" = Option<String>, Header, description = "ETag of the version you read")),
    request_body(content = Credential, description = "A key-auth credential without `key` or `key_hash` gets a new generated key (rotation)"),
    responses((status = 200, body = Credential, headers(("Portico-Config-Version" = u64), ("ETag" = String))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((gw, c, key)): Path<(String, String, String)>,
    JsonBody(mut credential): JsonBody<Credential>,
) -> Result<Response, ApiError> {
    let consumer = owner(&state, &gw, &c).await?;
    adopt(&mut credential, &consumer)?;
    let shown = seal(&mut credential, &state.keys, true)?;
    let scope = Scope { gateway: &gw, owner: Some(&consumer) };
    let (published, id) = entities::update_entity(&state, &caller, &headers, scope, &key, |_| Ok(credential.clone())).await?;
    entities::entity_response::<Credential>(StatusCode::OK, &published, id, None, |c| reveal(c, shown))
}

#[utoipa::path(patch, path = "/api/v1/gateways/{gw}/consumers/{c}/credentials/{key}", tag = "consumers",
    params(("gw" = String, Path, description = "Gateway name"), ("c" = String, Path, description = "Consumer id or username"),
        ("key" = String, Path, description = "Credential id or name"),
        ("If-Match" = Option<String>, Header, description = "ETag of the version you read")),
    request_body(content = Object, description = "JSON merge patch (RFC 7396); `{\"key\": \"…\"}` sets a new API key"),
    responses((status = 200, body = Credential, headers(("Portico-Config-Version" = u64), ("ETag" = String))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((gw, c, key)): Path<(String, String, String)>,
    JsonBody(merge_patch): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let consumer = owner(&state, &gw, &c).await?;
    let scope = Scope { gateway: &gw, owner: Some(&consumer) };
    let (published, id) = entities::update_entity(&state, &caller, &headers, scope, &key, |current: &Credential| {
        let mut credential = entities::apply_merge_patch(current, &merge_patch)?;
        adopt(&mut credential, &consumer)?;
        seal(&mut credential, &state.keys, false)?;
        Ok(credential)
    })
    .await?;
    let shown = merge_patch.get("key").and_then(|k| k.as_str()).map(str::to_owned);
    entities::entity_response::<Credential>(StatusCode::OK, &published, id, None, |c| reveal(c, shown))
}

#[utoipa::path(delete, path = "/api/v1/gateways/{gw}/consumers/{c}/credentials/{key}", tag = "consumers",
    params(("gw" = String, Path, description = "Gateway name"), ("c" = String, Path, description = "Consumer id or username"),
        ("key" = String, Path, description = "Credential id or name"),
        ("If-Match" = Option<String>, Header, description = "ETag of the version you read")),
    responses((status = 204, headers(("Portico-Config-Version" = u64))), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((gw, c, key)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let consumer = owner(&state, &gw, &c).await?;
    entities::delete::<Credential>(&state, &caller, &headers, Scope { gateway: &gw, owner: Some(&consumer) }, &key).await
}
