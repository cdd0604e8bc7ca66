//! The admin API's one error type. Clients get the documented JSON shape
//! `{"error": {"code", "message", "field"}, "errors": [...]}`: `error` is the
//! first (often the only) problem, `errors` every one found (a config with
//! several mistakes lists them all). Internals are logged, never sent.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portico_shared::{ConfigError, ConfigErrors};
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
    /// A config (or entity) with mistakes, every one listed: `409` when
    /// each is a conflict with the rest of the config, else `400`.
    Config(ConfigErrors),
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
    /// The first problem found (the only one, but for a config with several mistakes).
    pub error: ErrorDetail,
    /// Every problem found, `error` first: each mistake of a submitted
    /// config or entity, with its field.
    pub errors: Vec<ErrorDetail>,
}

/// One problem: its `message` is the text alone, `field` says where.
#[derive(Debug, Clone, Serialize, ToSchema)]
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

    /// The status, the first problem, and every problem.
    fn body(&self) -> (StatusCode, ErrorBody) {
        let single = |status, code, message: &str, field: Option<&str>| {
            let detail = ErrorDetail { code, message: message.to_owned(), field: field.map(str::to_owned) };
            (status, ErrorBody { error: detail.clone(), errors: vec![detail] })
        };
        match self {
            Self::Config(errors) => {
                let status = if errors.all_conflicts() { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST };
                (status, ErrorBody { error: config_detail(errors.first()), errors: errors.iter().map(config_detail).collect() })
            }
            Self::Invalid { field, message } => single(StatusCode::BAD_REQUEST, "invalid_input", message, field.as_deref()),
            Self::Unauthorized => {
                single(StatusCode::UNAUTHORIZED, "unauthorized", "a valid token is required: Authorization: Bearer <token>", None)
            }
            Self::Forbidden(message) => single(StatusCode::FORBIDDEN, "forbidden", message, None),
            Self::NotFound(what) => single(StatusCode::NOT_FOUND, "not_found", &format!("{what} not found"), None),
            Self::Conflict { field, message } => single(StatusCode::CONFLICT, "conflict", message, field.as_deref()),
            Self::MethodNotAllowed => {
                single(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not take that method", None)
            }
            Self::Stale(message) => single(StatusCode::CONFLICT, "precondition_failed", message, Some("If-Match")),
            Self::TooLarge(message) => single(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message, None),
            Self::Unavailable => {
                single(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the config store is unavailable; retry shortly", None)
            }
            Self::Internal => single(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the control plane's log", None),
        }
    }
}

/// One mistake of a config, as the API shows it.
fn config_detail(error: &ConfigError) -> ErrorDetail {
    let code = match error {
        ConfigError::Invalid { .. } => "invalid_input",
        ConfigError::Conflict { .. } => "conflict",
    };
    let field = Some(error.field().to_owned()).filter(|f| !f.is_empty());
    ErrorDetail { code, message: error.message().to_owned(), field }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.body();
        let mut response = (status, Json(body)).into_response();
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
        Self::Config(error.into())
    }
}

impl From<ConfigErrors> for ApiError {
    fn from(errors: ConfigErrors) -> Self {
        Self::Config(errors)
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
