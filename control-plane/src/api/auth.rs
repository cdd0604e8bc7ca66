//! Bearer-token authentication of the admin API. The bootstrap token comes
//! from `--admin-token`; more tokens live in the store as sha256 hashes.
//! Comparisons are constant-time; a read-only token may only read (and
//! preview a diff), and only admins manage tokens and read the audit log
//! (it holds client addresses).

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::store::{Role, Store, StoreError};

/// Who is calling: the token's name (recorded as a version's author) and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// The author name of writes made with the bootstrap token.
pub const BOOTSTRAP_NAME: &str = "bootstrap";

/// Checks bearer tokens against the bootstrap token and the store.
#[derive(Clone)]
pub struct Authenticator {
    bootstrap: Option<[u8; 32]>,
    store: Store,
}

impl Authenticator {
    pub fn new(bootstrap_token: Option<&str>, store: Store) -> Self {
        Self { bootstrap: bootstrap_token.map(digest), store }
    }

    /// The caller a token belongs to, if any.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        let presented = digest(token);
        if let Some(bootstrap) = &self.bootstrap
            && bool::from(presented.ct_eq(bootstrap))
        {
            return Ok(Some(Principal { name: BOOTSTRAP_NAME.to_owned(), role: Role::Admin }));
        }
        let hash = hex::encode(presented);
        Ok(self
            .store
            .token_by_hash(&hash)
            .await?
            .filter(|record| bool::from(record.token_hash.as_bytes().ct_eq(hash.as_bytes())))
            .map(|record| Principal { name: record.name, role: record.role }))
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(digest(token))
}

/// A new random admin token: `pt_` and 256 bits.
pub fn generate_token() -> String {
    generate_secret("pt_")
}

/// A new random secret: `prefix` and 256 bits, URL-safe base64.
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Middleware: authenticates the caller, checks the role, and hands the
/// [`Principal`] to handlers as an extension.
pub async fn require_token(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return ApiError::Unauthorized.into_response();
    };
    let principal = match state.auth.authenticate(token).await {
        Ok(Some(principal)) => principal,
        Ok(None) => return ApiError::Unauthorized.into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Err(e) = authorize(&principal, request.method(), request.uri().path()) {
        return e.into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

fn authorize(principal: &Principal, method: &Method, path: &str) -> Result<(), ApiError> {
    if principal.role == Role::Admin {
        return Ok(());
    }
    if path.starts_with("/api/v1/tokens") {
        return Err(ApiError::Forbidden("only admin tokens may manage tokens".into()));
    }
    if path.starts_with("/api/v1/audit") {
        return Err(ApiError::Forbidden("only admin tokens may read the audit log".into()));
    }
    let reads =
        matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || (*method == Method::POST && path.ends_with("/config/diff"));
    if reads { Ok(()) } else { Err(ApiError::Forbidden(format!("token '{}' is read-only", principal.name))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> Principal {
        Principal { name: "ci".into(), role: Role::ReadOnly }
    }

    #[test]
    fn read_only_tokens_may_read_and_diff_but_not_write() {
        assert!(authorize(&reader(), &Method::GET, "/api/v1/gateways/default/routes").is_ok());
        assert!(authorize(&reader(), &Method::POST, "/api/v1/gateways/default/config/diff").is_ok());
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(matches!(authorize(&reader(), &method, "/api/v1/gateways/default/routes"), Err(ApiError::Forbidden(_))));
        }
        assert!(matches!(authorize(&reader(), &Method::GET, "/api/v1/tokens"), Err(ApiError::Forbidden(_))));
        assert!(matches!(authorize(&reader(), &Method::GET, "/api/v1/audit"), Err(ApiError::Forbidden(_))));
    }

    #[test]
    fn generated_tokens_are_distinct_and_long() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with("pt_") && a.len() >= 46, "{a}");
        assert_eq!(token_hash(&a).len(), 64);
    }
}
