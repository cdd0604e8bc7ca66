//! The audit log as the admin API writes and shows it. [`Caller`] names
//! who makes a write and from where (the client address the admin server
//! saw: behind a proxy, the proxy's); each writing handler turns it into
//! the store's [`Change`] with its action, and the store writes the entry
//! in the transaction of the change. `GET /api/v1/audit` reads the log,
//! newest first, paged and filtered in SQL; only admin tokens may (the log
//! holds client addresses). Actions are `subject.verb`:
//! `token.create`, `token.revoke`; `gateway.create`, `gateway.delete`;
//! `service`, `route`, `consumer`, `credential`, `certificate`, `proto`
//! each with `.create`, `.update` (`PUT` or `PATCH`), `.delete`;
//! `config.replace`, `settings.replace`, `version.rollback`; `cache.purge`.
//! Reads, refused writes and writes that change nothing leave no entry.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use utoipa::IntoParams;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::extract::Query;
use super::pagination::{List, Page};
use crate::store::{AuditFilter, AuditRecord, Change};

/// The longest action filter.
const MAX_ACTION_LEN: usize = 64;

/// Who makes a request: the authenticated token, and the client address
/// when the server was started with connect info (in-process tests build
/// the router without it: then the address is unknown).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub source: Option<String>,
}

impl Caller {
    /// The change this caller makes: `action` on `target`, with `message`.
    pub fn change<'a>(&'a self, action: &'a str, target: &'a str, message: &'a str) -> Change<'a> {
        Change { author: &self.principal.name, source: self.source.as_deref(), action, target, message }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(principal) = parts.extensions.get::<Principal>().cloned() else {
            tracing::error!("a handler that takes a Caller is served without the token check");
            return Err(ApiError::Internal);
        };
        let source = ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await.ok().map(|ConnectInfo(addr)| addr.to_string());
        Ok(Self { principal, source })
    }
}

/// Which entries to show. Any other parameter is a `400` naming it.
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only the entries of this gateway (they outlive a deleted gateway).
    pub gateway: Option<String>,
    /// Only the changes made with this token name.
    pub author: Option<String>,
    /// Only this action (`service.create`), or every action of a subject (`service`).
    pub action: Option<String>,
    /// Only entries older than this id: pass the last `id` of a page to get
    /// the next one unshifted by entries written meanwhile.
    #[param(minimum = 1)]
    pub before: Option<u64>,
    /// Entries per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// Entries to skip (default 0).
    pub offset: Option<u64>,
}

impl AuditQuery {
    /// Reads the query string's pairs: an unknown, repeated or bad
    /// parameter is a `400` naming it.
    fn parse(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut query = Self::default();
        for (key, value) in pairs {
            let repeated = match key.as_str() {
                "gateway" | "author" => {
                    portico_shared::validate::name(&key, &value)?;
                    let slot = if key == "gateway" { &mut query.gateway } else { &mut query.author };
                    slot.replace(value).is_some()
                }
                "action" => query.action.replace(action(value)?).is_some(),
                "before" => query.before.replace(number(&key, &value).and_then(|n| positive(&key, n))?).is_some(),
                "limit" => query.limit.replace(number(&key, &value)?).is_some(),
                "offset" => query.offset.replace(number(&key, &value)?).is_some(),
                _ => {
                    return Err(ApiError::invalid(
                        key.chars().take(64).collect::<String>(),
                        "unknown parameter: the audit log takes gateway, author, action, before, limit and offset",
                    ));
                }
            };
            if repeated {
                return Err(ApiError::invalid(key, "given more than once"));
            }
        }
        Ok(query)
    }
}

/// An action filter: `a-z`, `.` and `-` only (so never a `LIKE` wildcard).
fn action(value: String) -> Result<String, ApiError> {
    let valid = !value.is_empty() && value.len() <= MAX_ACTION_LEN && value.bytes().all(|b| b.is_ascii_lowercase() || b".-".contains(&b));
    if valid {
        Ok(value)
    } else {
        Err(ApiError::invalid("action", format!("must be 1 to {MAX_ACTION_LEN} characters of a-z, '.' and '-', such as service.create")))
    }
}

fn number<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| ApiError::invalid(field, "must be a non-negative integer"))
}

fn positive(field: &str, value: u64) -> Result<u64, ApiError> {
    if value == 0 { Err(ApiError::invalid(field, "must be at least 1")) } else { Ok(value) }
}

/// The audit log, newest first: token creation and revocation, every
/// config write, cache purges; who, when, from where.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = List<AuditRecord>, description = "Newest first"),
        (status = 400, body = ErrorBody, description = "An unknown, repeated or bad parameter, named in `field`"),
        (status = 403, body = ErrorBody, description = "Not an admin token")))]
pub(super) async fn list(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<List<AuditRecord>>, ApiError> {
    let query = AuditQuery::parse(pairs)?;
    let (limit, offset) = Page { limit: query.limit, offset: query.offset }.resolve()?;
    let filter = AuditFilter {
        gateway: query.gateway.as_deref(),
        author: query.author.as_deref(),
        action: query.action.as_deref(),
        before: query.before,
    };
    let (records, total) = state.store.audit_log(&filter, limit, offset).await?;
    Ok(Json(List::of(records, total, limit, offset)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn refused_field(query: &[(&str, &str)]) -> Option<String> {
        match AuditQuery::parse(pairs(query)) {
            Err(ApiError::Invalid { field, .. }) => field,
            Err(ApiError::Config(errors)) => Some(errors.first().field().to_owned()),
            other => panic!("{query:?} not refused: {other:?}"),
        }
    }

    #[test]
    fn parses_filters_and_refuses_unknown_repeated_or_bad_ones_naming_them() {
        let parsed = AuditQuery::parse(pairs(&[("gateway", "default"), ("author", "ci"), ("action", "service"), ("before", "9")])).unwrap();
        assert_eq!(
            (parsed.gateway.as_deref(), parsed.author.as_deref(), parsed.action.as_deref(), parsed.before),
            (Some("default"), Some("ci"), Some("service"), Some(9))
        );
        assert_eq!(refused_field(&[("gw", "default")]).as_deref(), Some("gw"));
        assert_eq!(refused_field(&[("author", "a"), ("author", "b")]).as_deref(), Some("author"));
        assert_eq!(refused_field(&[("gateway", "Not Valid")]).as_deref(), Some("gateway"));
        assert_eq!(refused_field(&[("action", "service_%")]).as_deref(), Some("action"));
        assert_eq!(refused_field(&[("before", "0")]).as_deref(), Some("before"));
        assert_eq!(refused_field(&[("limit", "many")]).as_deref(), Some("limit"));
        assert_eq!(refused_field(&[("offset", "-1")]).as_deref(), Some("offset"));
    }
}
