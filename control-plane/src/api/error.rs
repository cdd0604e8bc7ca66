//! The admin API's one error type. Clients get the documented JSON shape
//! `{"error": {"code", "message", "field"}}`; internals are logged, never sent.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portico_shared::ConfigError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// An admin API error, with the status it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the request is malformed or a field is invalid.
    Invalid { field: Option<String>, message: String },
    /// 401
    Unauthorized,
    /// 403
    Forbidden(String),
    /// 404
    NotFound(String),
    /// 409: a duplicate, an entity still in use, or a concurrent change.
    Conflict { field: Option<String>, message: String },
    /// 405
    MethodNotAllowed,
    /// 409: `If-Match` names a version that is no longer current.
    Stale(String),
    /// 413
    TooLarge(String),
    /// 503: the store cannot be reached.
    Unavailable,
    /// 500: a bug; the details are logged.
    Internal,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_input`, `unauthorized`,
    /// `forbidden`, `not_found`, `method_not_allowed`, `conflict`, `precondition_failed`,
    /// `payload_too_large`, `store_unavailable`,
    /// `internal`.
    pub code: &'static str,
    pub message: String,
    /// The offending field, as a path into the request body or a parameter
    /// name; `null` when the error concerns no single field.
    pub field: Option<String>,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: Some(field.into()), message: message.into() }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict { field: None, message: message.into() }
    }

    fn parts(&self) -> (StatusCode, &'static str, String, Option<String>) {
        match self {
            Self::Invalid { field, message } => (StatusCode::BAD_REQUEST, "invalid_input", message.clone(), field.clone()),
            Self::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "a valid token is required: Authorization: Bearer <token>".into(), None)
            }
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, "forbidden", message.clone(), None),
            Self::NotFound(what) => (StatusCode::NOT_FOUND, "not_found", format!("{what} not found"), None),
            Self::Conflict { field, message } => (StatusCode::CONFLICT, "conflict", message.clone(), field.clone()),
            Self::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not take that method".into(), None)
            }
            Self::Stale(message) => (StatusCode::CONFLICT, "precondition_failed", message.clone(), Some("If-Match".into())),
            Self::TooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message.clone(), None),
            Self::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the config store is unavailable; retry shortly".into(), None)
            }
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the control plane's log".into(), None),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = self.parts();
        let mut response = (status, Json(ErrorBody { error: ErrorDetail { code, message, field } })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("2"));
        }
        response
    }
}

impl From<ConfigError> for ApiError {
    fn from(error: ConfigError) -> Self {
        let field = Some(error.field().to_owned()).filter(|f| !f.is_empty());
        match error {
            ConfigError::Invalid { message, .. } => Self::Invalid { field, message },
            ConfigError::Conflict { message, .. } => Self::Conflict { field, message },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(reason) => {
                tracing::warn!(error = %reason, "store unavailable");
                Self::Unavailable
            }
            StoreError::NotFound => Self::not_found("gateway"),
            StoreError::Conflict(message) => Self::conflict(message),
            StoreError::Stale => Self::conflict("the config changed concurrently; retry"),
            StoreError::InvalidValue(message) => Self::Invalid { field: None, message },
            other => {
                tracing::error!(error = %other, "store error");
                Self::Internal
            }
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::Invalid { field: Some("path".into()), message: rejection.body_text() }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Invalid { field: Some("query".into()), message: rejection.body_text() }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge(rejection.body_text())
        } else {
            Self::Invalid { field: None, message: rejection.body_text() }
        }
    }
}
