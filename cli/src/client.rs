//! A thin client of the admin REST API that turns its JSON errors into
//! one-line messages naming the field.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use crate::Format;

/// What can go wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{status}: {message}")]
    Api { status: StatusCode, message: String },
}

/// The admin API of one gateway.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
    gateway: String,
}

impl AdminClient {
    pub fn new(base: &str, token: &str, gateway: &str) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), token: token.to_owned(), gateway: gateway.to_owned() })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}/api/v1/gateways/{}{path}", self.base, self.gateway)).bearer_auth(&self.token)
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, CliError> {
        let response = request.send().await.map_err(|e| CliError::Unreachable { url: self.base.clone(), reason: e.to_string() })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let error = &body["error"];
        let mut message = error["message"].as_str().unwrap_or("request failed").to_owned();
        if let Some(field) = error["field"].as_str().filter(|f| !f.is_empty()) {
            message = format!("{field}: {message}");
        }
        Err(CliError::Api { status, message })
    }

    async fn json(&self, request: RequestBuilder) -> Result<Value, CliError> {
        let response = self.send(request).await?;
        response.json().await.map_err(|e| CliError::Api { status: StatusCode::BAD_GATEWAY, message: format!("unreadable response: {e}") })
    }

    pub async fn apply(&self, body: Vec<u8>, content_type: &str, message: Option<&str>) -> Result<Value, CliError> {
        let mut request = self.request(Method::PUT, "/config").header("content-type", content_type).body(body);
        if let Some(message) = message {
            request = request.header("portico-change-message", message);
        }
        self.json(request).await
    }

    pub async fn diff(&self, body: Vec<u8>, content_type: &str) -> Result<Value, CliError> {
        self.json(self.request(Method::POST, "/config/diff").header("content-type", content_type).body(body)).await
    }

    pub async fn export(&self, format: Format) -> Result<String, CliError> {
        let accept = match format {
            Format::Yaml => "application/yaml",
            Format::Json => "application/json",
        };
        let response = self.send(self.request(Method::GET, "/config").header("accept", accept)).await?;
        response.text().await.map_err(|e| CliError::Api { status: StatusCode::BAD_GATEWAY, message: e.to_string() })
    }

    pub async fn versions(&self, limit: u32) -> Result<Value, CliError> {
        self.json(self.request(Method::GET, &format!("/versions?limit={limit}"))).await
    }

    pub async fn rollback(&self, version: u64, message: Option<&str>) -> Result<Value, CliError> {
        let mut request = self.request(Method::POST, &format!("/versions/{version}/rollback"));
        if let Some(message) = message {
            request = request.header("portico-change-message", message);
        }
        self.json(request).await
    }

    pub async fn data_planes(&self) -> Result<Value, CliError> {
        self.json(self.request(Method::GET, "/data-planes")).await
    }
}
