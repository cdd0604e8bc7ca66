//! CRUD for the entities of a gateway (services, routes, consumers,
//! credentials, certificates, protos), written once against [`Entity`] and instantiated per kind
//! by `entity_api!`, which also gives each kind its OpenAPI operations
//! (credentials, which live under their consumer, have their own handlers
//! in `credentials`). Entities are addressed by id or by name; `If-Match`
//! takes the `ETag` of a previous read.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use portico_shared::model::Entity;
use portico_shared::validate::{self, Validate};
use portico_shared::{ConfigError, ConfigErrors, GatewayConfig, parse};
use uuid::Uuid;

use super::audit::Caller;
use super::error::ApiError;
use super::extract::{change_message, if_match};
use super::pagination::{List, Page};
use super::{AppState, written};
use crate::publish::Published;
use crate::store::Publication;

/// The strong ETag of an entity as stored.
pub fn etag<E: Entity>(entity: &E) -> String {
    let bytes = serde_json::to_vec(entity).expect("entities serialize");
    format!("\"{}\"", &portico_shared::snapshot::hash(&bytes)[..20])
}

/// Where a request looks for entities: a gateway, and for entities that
/// belong to another (a consumer's credentials) that owner's name.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub gateway: &'a str,
    pub owner: Option<&'a str>,
}

impl<'a> Scope<'a> {
    pub fn gateway(gateway: &'a str) -> Self {
        Self { gateway, owner: None }
    }

    fn contains<E: Entity>(&self, entity: &E) -> bool {
        self.owner.is_none_or(|owner| entity.owner() == Some(owner))
    }

    fn not_found<E: Entity>(&self, key: &str) -> ApiError {
        let owner = self.owner.map(|o| format!(" of '{o}'")).unwrap_or_default();
        ApiError::not_found(format!("{} '{key}'{owner} in gateway '{}'", E::KIND.as_str(), self.gateway))
    }
}

fn find<'a, E: Entity>(config: &'a GatewayConfig, scope: Scope<'_>, key: &str) -> Option<(usize, &'a E)> {
    let id = Uuid::parse_str(key).ok();
    E::collection(config)
        .iter()
        .enumerate()
        .find(|(_, e)| (id.is_some_and(|id| e.id() == Some(id)) || e.name() == key) && scope.contains(*e))
}

fn check_if_match<E: Entity>(headers: &HeaderMap, current: &E) -> Result<(), ApiError> {
    match if_match(headers) {
        Some(expected) if expected != "*" && format!("\"{expected}\"") != etag(current) => Err(ApiError::Stale(format!(
            "{} '{}' changed since it was read (ETag is now {})",
            E::KIND.as_str(),
            current.name(),
            etag(current)
        ))),
        _ => Ok(()),
    }
}

/// Errors from checking the whole config, made relative to the entity being
/// written when they concern it (`routes[3].service` becomes `service`).
fn relative<E: Entity>(errors: ConfigErrors, index: usize) -> ApiError {
    let prefix = format!("{}[{index}]", E::COLLECTION);
    let relative = |error: ConfigError| {
        let Some(field) = error.field().strip_prefix(&prefix).map(|rest| rest.trim_start_matches('.').to_owned()) else { return error };
        match error {
            ConfigError::Invalid { message, .. } => ConfigError::invalid(field, message),
            ConfigError::Conflict { message, .. } => ConfigError::conflict(field, message),
        }
    };
    ApiError::Config(errors.map(relative))
}

/// Checks an entity on its own (errors relative to it) and in the config
/// it would join at `index`.
fn prepare<E: Entity + Validate>(mut entity: E, config: &GatewayConfig, index: usize) -> Result<(E, GatewayConfig), ApiError> {
    entity.normalize_and_validate()?;
    let mut next = config.clone();
    let list = E::collection_mut(&mut next);
    if index < list.len() {
        list[index] = entity.clone();
    } else {
        list.push(entity.clone());
    }
    let mut checked = next.clone();
    validate::config(&mut checked).map_err(|e| relative::<E>(e, index))?;
    Ok((entity, next))
}

/// The response to a write of the entity `id`: the entity as stored, after
/// `reveal` (which adds what is shown only once, such as a new API key).
pub fn entity_response<E: Entity>(
    status: StatusCode,
    published: &Published,
    id: Uuid,
    location: Option<String>,
    reveal: impl FnOnce(&mut E),
) -> Result<Response, ApiError> {
    let entity = E::collection(&published.config).iter().find(|e| e.id() == Some(id)).ok_or(ApiError::Internal)?;
    let mut shown = entity.shown();
    reveal(&mut shown);
    let mut response = written(status, published.version, Json(shown)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_str(&etag(entity)).map_err(|_| ApiError::Internal)?);
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    Ok(response)
}

pub async fn list<E: Entity>(state: &AppState, scope: Scope<'_>, page: Page) -> Result<Json<List<E>>, ApiError> {
    let current = state.current(scope.gateway).await?;
    let items = E::collection(&current.config).iter().filter(|e| scope.contains(*e)).map(Entity::shown).collect();
    Ok(Json(List::page(items, page)?))
}

pub async fn get<E: Entity>(state: &AppState, scope: Scope<'_>, key: &str) -> Result<Response, ApiError> {
    let current = state.current(scope.gateway).await?;
    let (_, entity) = find::<E>(&current.config, scope, key).ok_or_else(|| scope.not_found::<E>(key))?;
    let etag = HeaderValue::from_str(&etag(entity)).map_err(|_| ApiError::Internal)?;
    Ok(([(header::ETAG, etag)], Json(entity.shown())).into_response())
}

pub async fn create<E: Entity + Validate>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    gateway: &str,
    entity: E,
) -> Result<Response, ApiError> {
    let (published, id) = create_entity(state, caller, headers, gateway, entity).await?;
    let location = format!("/api/v1/gateways/{gateway}/{}/{id}", E::COLLECTION);
    entity_response::<E>(StatusCode::CREATED, &published, id, Some(location), |_| {})
}

/// Adds `entity` to the gateway's config; the version and the new id.
pub async fn create_entity<E: Entity + Validate>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    gateway: &str,
    mut entity: E,
) -> Result<(Published, Uuid), ApiError> {
    let id = entity.id().unwrap_or_else(Uuid::new_v4);
    let now = Utc::now();
    entity.drop_derived();
    entity.set_meta(Some(id), Some(now), Some(now));
    let message = change_message(headers)?;
    // A name left out (a credential's) is derived while the config is checked: the id names it here.
    let key = if entity.name().is_empty() { id.to_string() } else { entity.name().to_owned() };
    let (action, target) = (action::<E>("create"), target(entity.owner(), &key));
    let publication = Publication { change: caller.change(&action, &target, &message), rollback_of: None };
    let published = state
        .publisher
        .change(gateway, &publication, |current| {
            let config = &current.config;
            if E::collection(config).iter().any(|e| e.id() == Some(id)) {
                return Err(ApiError::Conflict { field: Some("id".into()), message: format!("id {id} is already used") });
            }
            let index = E::collection(config).len();
            prepare(entity.clone(), config, index).map(|(_, next)| next)
        })
        .await?;
    Ok((published, id))
}

/// `PUT`: replaces the entity's fields (its id and creation time stay).
pub async fn replace<E: Entity + Validate>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    gateway: &str,
    key: &str,
    replacement: E,
) -> Result<Response, ApiError> {
    let (published, id) = update_entity::<E>(state, caller, headers, Scope::gateway(gateway), key, |_| Ok(replacement.clone())).await?;
    entity_response::<E>(StatusCode::OK, &published, id, None, |_| {})
}

/// `PATCH`: a JSON merge patch (RFC 7396) on the entity's fields.
pub async fn patch<E: Entity + Validate>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    gateway: &str,
    key: &str,
    merge_patch: serde_json::Value,
) -> Result<Response, ApiError> {
    let (published, id) =
        update_entity::<E>(state, caller, headers, Scope::gateway(gateway), key, |current| apply_merge_patch(current, &merge_patch))
            .await?;
    entity_response::<E>(StatusCode::OK, &published, id, None, |_| {})
}

/// `current` with a JSON merge patch (RFC 7396) applied to its fields, as
/// shown: its write-only secrets come back only as [`Entity::keep_secrets_of`]
/// allows (a patch moving a broker's targets elsewhere must give the password).
pub fn apply_merge_patch<E: Entity>(current: &E, merge_patch: &serde_json::Value) -> Result<E, ApiError> {
    if !merge_patch.is_object() {
        return Err(ApiError::invalid("", "a merge patch must be a JSON object"));
    }
    let mut document = serde_json::to_value(current.shown().declarative()).map_err(|_| ApiError::Internal)?;
    json_patch::merge(&mut document, merge_patch);
    let bytes = serde_json::to_vec(&document).map_err(|_| ApiError::Internal)?;
    Ok(parse::from_json(&bytes)?)
}

/// Replaces the entity `key` of `scope` by what `edit` makes of it; the
/// version and the entity's id.
pub async fn update_entity<E: Entity + Validate>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    scope: Scope<'_>,
    key: &str,
    edit: impl Fn(&E) -> Result<E, ApiError>,
) -> Result<(Published, Uuid), ApiError> {
    let gateway = scope.gateway;
    let message = change_message(headers)?;
    let (action, target) = (action::<E>("update"), audit_target::<E>(state, scope, key).await?);
    let publication = Publication { change: caller.change(&action, &target, &message), rollback_of: None };
    let mut id = None;
    let published = state
        .publisher
        .change(gateway, &publication, |current| {
            let config = &current.config;
            let (index, existing) = find::<E>(config, scope, key).ok_or_else(|| scope.not_found::<E>(key))?;
            check_if_match(headers, existing)?;
            let mut entity = edit(existing)?;
            entity.drop_derived();
            entity.keep_secrets_of(existing);
            if entity.name() != existing.name() {
                refuse_if_referenced(config, existing)?;
            }
            entity.set_meta(existing.id(), existing.created_at(), existing.updated_at());
            let (normalized, mut next) = prepare(entity, config, index)?;
            if normalized.declarative() != existing.declarative() {
                let list = E::collection_mut(&mut next);
                list[index].set_meta(existing.id(), existing.created_at(), Some(Utc::now()));
            }
            id = existing.id();
            Ok::<_, ApiError>(next)
        })
        .await?;
    Ok((published, id.ok_or(ApiError::Internal)?))
}

pub async fn delete<E: Entity>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    scope: Scope<'_>,
    key: &str,
) -> Result<Response, ApiError> {
    let gateway = scope.gateway;
    let message = change_message(headers)?;
    let (action, target) = (action::<E>("delete"), audit_target::<E>(state, scope, key).await?);
    let publication = Publication { change: caller.change(&action, &target, &message), rollback_of: None };
    let published = state
        .publisher
        .change(gateway, &publication, |current| {
            let (index, existing) = find::<E>(&current.config, scope, key).ok_or_else(|| scope.not_found::<E>(key))?;
            check_if_match(headers, existing)?;
            refuse_if_referenced(&current.config, existing)?;
            let mut next = current.config.clone();
            E::collection_mut(&mut next).remove(index);
            Ok::<_, ApiError>(next)
        })
        .await?;
    Ok(written(StatusCode::NO_CONTENT, published.version, ()).into_response())
}

/// The audit action of `verb` (`create`, `update`, `delete`) on an `E`: `service.create`.
fn action<E: Entity>(verb: &str) -> String {
    format!("{}.{verb}", E::KIND.as_str())
}

/// The audit target of an entity: its name, after its owner's name for one
/// that belongs to another (`alice/key-1`).
fn target(owner: Option<&str>, name: &str) -> String {
    owner.map_or_else(|| name.to_owned(), |owner| format!("{owner}/{name}"))
}

/// The audit target of the entity `key` of `scope`: an id is looked up, so
/// the log names the entity (as it was just before the write), not a uuid.
async fn audit_target<E: Entity>(state: &AppState, scope: Scope<'_>, key: &str) -> Result<String, ApiError> {
    if Uuid::parse_str(key).is_err() {
        return Ok(target(scope.owner, key));
    }
    let current = state.current(scope.gateway).await?;
    let name = find::<E>(&current.config, scope, key).map_or(key, |(_, entity)| entity.name());
    Ok(target(scope.owner, name))
}

/// An entity that others refer to (a service its routes use) can be
/// neither deleted nor renamed.
fn refuse_if_referenced<E: Entity>(config: &GatewayConfig, entity: &E) -> Result<(), ApiError> {
    let referrers = validate::referrers(config, E::KIND, entity.name());
    if referrers.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = referrers.iter().map(|(kind, name)| format!("{} '{name}'", kind.as_str())).collect();
    Err(ApiError::conflict(format!("{} '{}' is used by {}; change those first", E::KIND.as_str(), entity.name(), names.join(", "))))
}

/// Instantiates the CRUD handlers of one entity kind, with their OpenAPI docs.
macro_rules! entity_api {
    ($module:ident, $type:ty, $tag:literal, $list_path:literal, $one_path:literal) => {
        pub mod $module {
            use axum::extract::State;
            use axum::http::HeaderMap;
            use axum::response::Response;
            use axum::Json;

            use crate::api::AppState;
            use crate::api::audit::Caller;
            use crate::api::entities::{self, Scope};
            use crate::api::error::{ApiError, ErrorBody};
            use crate::api::extract::{JsonBody, Path, Query};
            use crate::api::pagination::{List, Page};
            #[allow(unused_imports)]
            use portico_shared::model::*;

            #[utoipa::path(get, path = $list_path, tag = $tag, params(("gw" = String, Path, description = "Gateway name"), Page),
                responses((status = 200, body = List<$type>), (status = 404, body = ErrorBody)))]
            pub(crate) async fn list(State(state): State<AppState>, Path(gw): Path<String>, Query(page): Query<Page>) -> Result<Json<List<$type>>, ApiError> {
                entities::list::<$type>(&state, Scope::gateway(&gw), page).await
            }

            #[utoipa::path(post, path = $list_path, tag = $tag, params(("gw" = String, Path, description = "Gateway name")),
                request_body = $type,
                responses((status = 201, body = $type, headers(("Portico-Config-Version" = u64), ("ETag" = String), ("Location" = String))),
                    (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
            pub(crate) async fn create(State(state): State<AppState>, caller: Caller, headers: HeaderMap,
                Path(gw): Path<String>, JsonBody(entity): JsonBody<$type>) -> Result<Response, ApiError> {
                entities::create::<$type>(&state, &caller, &headers, &gw, entity).await
            }

            #[utoipa::path(get, path = $one_path, tag = $tag,
                params(("gw" = String, Path, description = "Gateway name"), ("key" = String, Path, description = "Id or name")),
                responses((status = 200, body = $type, headers(("ETag" = String))), (status = 404, body = ErrorBody)))]
            pub(crate) async fn get(State(state): State<AppState>, Path((gw, key)): Path<(String, String)>) -> Result<Response, ApiError> {
                entities::get::<$type>(&state, Scope::gateway(&gw), &key).await
            }

            #[utoipa::path(put, path = $one_path, tag = $tag,
                params(("gw" = String, Path, description = "Gateway name"), ("key" = String, Path, description = "Id or name"),
                    ("If-Match" = Option<String>, Header, description = "ETag of the version you read")),
                request_body = $type,
                responses((status = 200, body = $type, headers(("Portico-Config-Version" = u64), ("ETag" = String))),
                    (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
            pub(crate) async fn replace(State(state): State<AppState>, caller: Caller, headers: HeaderMap,
                Path((gw, key)): Path<(String, String)>, JsonBody(entity): JsonBody<$type>) -> Result<Response, ApiError> {
                entities::replace::<$type>(&state, &caller, &headers, &gw, &key, entity).await
            }

            #[utoipa::path(patch, path = $one_path, tag = $tag,
                params(("gw" = String, Path, description = "Gateway name"), ("key" = String, Path, description = "Id or name"),
                    ("If-Match" = Option<String>, Header, description = "ETag of the version you read")),
                request_body(content = Object, description = "JSON merge patch (RFC 7396) of the entity's fields"),
                responses((status = 200, body = $type, headers(("Portico-Config-Version" = u64), ("ETag" = String))),
                    (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
            pub(crate) async fn patch(State(state): State<AppState>, caller: Caller, headers: HeaderMap,
                Path((gw, key)): Path<(String, String)>, JsonBody(merge_patch): JsonBody<serde_json::Value>) -> Result<Response, ApiError> {
                entities::patch::<$type>(&state, &caller, &headers, &gw, &key, merge_patch).await
            }

            #[utoipa::path(delete, path = $one_path, tag = $tag,
                params(("gw" = String, Path, description = "Gateway name"), ("key" = String, Path, description = "Id or name"),
                    ("If-Match" = Option<String>, Header, description = "ETag of the version you read")),
                responses((status = 204, headers(("Portico-Config-Version" = u64))), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
            pub(crate) async fn delete(State(state): State<AppState>, caller: Caller, headers: HeaderMap,
                Path((gw, key)): Path<(String, String)>) -> Result<Response, ApiError> {
                entities::delete::<$type>(&state, &caller, &headers, Scope::gateway(&gw), &key).await
            }
        }
    };
}

entity_api!(services, Service, "services", "/api/v1/gateways/{gw}/services", "/api/v1/gateways/{gw}/services/{key}");
entity_api!(routes, Route, "routes", "/api/v1/gateways/{gw}/routes", "/api/v1/gateways/{gw}/routes/{key}");
entity_api!(consumers, Consumer, "consumers", "/api/v1/gateways/{gw}/consumers", "/api/v1/gateways/{gw}/consumers/{key}");
entity_api!(certificates, Certificate, "certificates", "/api/v1/gateways/{gw}/certificates", "/api/v1/gateways/{gw}/certificates/{key}");
entity_api!(protos, Proto, "protos", "/api/v1/gateways/{gw}/protos", "/api/v1/gateways/{gw}/protos/{key}");
