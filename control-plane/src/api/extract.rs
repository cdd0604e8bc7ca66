//! Request extractors whose failures are [`ApiError`]s (a `400` naming the
//! field), never axum's plain-text rejections. [`JsonBody`] and
//! [`Document`] are the only ways a handler reads a body, and both parse it
//! with `portico_shared::parse`, which refuses duplicate keys at any depth.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, header};
use portico_shared::parse;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Query parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The formats a body may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    fn of(headers: &HeaderMap, yaml_allowed: bool) -> Result<Self, ApiError> {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(Self::Json),
            e if e.starts_with("application/") && e.ends_with("+json") => Ok(Self::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" if yaml_allowed => Ok(Self::Yaml),
            _ => Err(ApiError::invalid(
                "Content-Type",
                if yaml_allowed {
                    format!("expected application/json or application/yaml, got '{content_type}'")
                } else {
                    format!("expected application/json, got '{content_type}'")
                },
            )),
        }
    }

    /// What a client asked for in `Accept`: YAML only when it says so.
    pub fn accepted(headers: &HeaderMap) -> Self {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        if accept.contains("yaml") { Self::Yaml } else { Self::Json }
    }
}

/// A JSON body parsed into `T`, with errors naming the field.
pub struct JsonBody<T>(pub T);

/// A JSON or YAML body (by `Content-Type`), parsed into `T`.
pub struct Document<T>(pub T);

async fn parse_body<T: DeserializeOwned, S: Send + Sync>(request: Request, state: &S, yaml_allowed: bool) -> Result<T, ApiError> {
    let format = Format::of(request.headers(), yaml_allowed)?;
    let bytes = Bytes::from_request(request, state).await?;
    match format {
        Format::Json => parse::from_json(&bytes),
        Format::Yaml => parse::from_yaml(&bytes),
    }
    .map_err(ApiError::from)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse_body(request, state, false).await.map(Self)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Document<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse_body(request, state, true).await.map(Self)
    }
}

/// The `If-Match` header, unquoted, if sent. A value that is not visible
/// ASCII can match no ETag, so it comes back as one that never matches.
pub fn if_match(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::IF_MATCH)?;
    Some(match value.to_str() {
        Ok(v) => v.trim().trim_start_matches("W/").trim_matches('"').to_owned(),
        Err(_) => "\u{fffd}".to_owned(),
    })
}

/// The optional change message of a write (`Portico-Change-Message`).
pub fn change_message(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get("portico-change-message") else {
        return Ok(String::new());
    };
    let message = value.to_str().map_err(|_| ApiError::invalid("Portico-Change-Message", "must be visible ASCII"))?;
    if message.len() > 1_000 {
        return Err(ApiError::invalid("Portico-Change-Message", "must be at most 1000 characters"));
    }
    Ok(message.to_owned())
}

/// The change message of a write, or `default` when it gives none.
pub fn change_message_or(headers: &HeaderMap, default: impl FnOnce() -> String) -> Result<String, ApiError> {
    let given = change_message(headers)?;
    Ok(if given.is_empty() { default() } else { given })
}
