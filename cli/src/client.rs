//! A thin client of the admin REST API that turns its JSON errors into
//! messages naming the field: one line per problem, `field: message`, and
//! the CLI's errors with the exit code each one ends the process with.

use portico_shared::GatewayConfig;
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;

use crate::Format;

/// What can go wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The API refused the request: each problem as `field: message`.
    #[error("{status}: {}", listed(.problems))]
    Api { status: StatusCode, problems: Vec<String> },
    /// A config file the CLI could not use, each problem on its own line.
    #[error("{file}: {}", listed(.problems))]
    File { file: String, problems: Vec<String> },
    /// The user did not confirm; nothing was changed.
    #[error("{0}")]
    Declined(String),
    /// A change went out (a version, a cache purge), but the fleet did not take it all.
    #[error("{0}")]
    Fleet(String),
}

impl CliError {
    /// The process's exit status: 3 when a version was published but data
    /// planes rejected it or did not serve it in time (`apply --wait`), or a
    /// cache purge was sent but a connected data plane did not confirm it
    /// in time; 1 for everything else (2 is `diff --exit-code`'s "there are
    /// changes").
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Fleet(_) => 3,
            _ => 1,
        }
    }
}

/// What a write answered.
pub struct Written {
    pub body: Value,
    /// The `Portico-Config-Version` header.
    pub version: Option<u64>,
    /// `201 Created` (a new version or entity) rather than `200`.
    pub created: bool,
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

    /// A request to the gateway's path `segments`, each percent-encoded
    /// (they are names a user typed).
    fn request_to(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder, CliError> {
        self.api_request(method, &[&["gateways", self.gateway.as_str()], segments].concat())
    }

    /// A request to `/api/v1/` and `segments`, each percent-encoded.
    fn api_request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder, CliError> {
        let usage = || CliError::Usage(format!("not a valid admin URL: {}", self.base));
        let mut url = Url::parse(&self.base).map_err(|_| usage())?;
        url.path_segments_mut().map_err(|_| usage())?.pop_if_empty().extend(["api", "v1"]).extend(segments);
        Ok(self.http.request(method, url).bearer_auth(&self.token))
    }

    async fn written(&self, request: RequestBuilder) -> Result<Written, CliError> {
        let response = self.send(request).await?;
        let created = response.status() == StatusCode::CREATED;
        let version = response.headers().get("portico-config-version").and_then(|v| v.to_str().ok()?.parse().ok());
        let body = if response.status() == StatusCode::NO_CONTENT { Value::Null } else { read_json(response).await? };
        Ok(Written { body, version, created })
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, CliError> {
        let response = request.send().await.map_err(|e| CliError::Unreachable { url: self.base.clone(), reason: e.to_string() })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(CliError::Api { status, problems: problems(&body) })
    }

    async fn json(&self, request: RequestBuilder) -> Result<Value, CliError> {
        read_json(self.send(request).await?).await
    }

    pub async fn apply(&self, body: Vec<u8>, content_type: &str, message: Option<&str>) -> Result<Value, CliError> {
        self.apply_if_match(body, content_type, message, None).await
    }

    /// Replaces the config only if it is still at hash `if_match` (else `409`).
    pub async fn apply_if_match(
        &self,
        body: Vec<u8>,
        content_type: &str,
        message: Option<&str>,
        if_match: Option<&str>,
    ) -> Result<Value, CliError> {
        let mut request = self.request_to(Method::PUT, &["config"])?.header("content-type", content_type).body(body);
        if let Some(message) = message {
            request = request.header("portico-change-message", message);
        }
        if let Some(hash) = if_match {
            request = request.header("if-match", format!("\"{hash}\""));
        }
        self.json(request).await
    }

    /// The current config and its hash (the ETag, for `If-Match`).
    pub async fn config(&self) -> Result<(GatewayConfig, String), CliError> {
        let response = self.send(self.request_to(Method::GET, &["config"])?.header("accept", "application/json")).await?;
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").trim_matches('"').to_owned();
        let bytes = response.bytes().await.map_err(unreadable)?;
        let config = serde_json::from_slice(&bytes).map_err(unreadable)?;
        Ok((config, etag))
    }

    pub async fn diff(&self, body: Vec<u8>, content_type: &str) -> Result<Value, CliError> {
        self.json(self.request_to(Method::POST, &["config", "diff"])?.header("content-type", content_type).body(body)).await
    }

    pub async fn export(&self, format: Format) -> Result<String, CliError> {
        let accept = match format {
            Format::Yaml => "application/yaml",
            Format::Json => "application/json",
        };
        let response = self.send(self.request_to(Method::GET, &["config"])?.header("accept", accept)).await?;
        response.text().await.map_err(|e| CliError::Api { status: StatusCode::BAD_GATEWAY, problems: vec![e.to_string()] })
    }

    pub async fn versions(&self, limit: u32) -> Result<Value, CliError> {
        self.json(self.request_to(Method::GET, &["versions"])?.query(&[("limit", limit)])).await
    }

    /// Version `n` with its snapshot.
    pub async fn version(&self, n: u64) -> Result<Value, CliError> {
        self.json(self.request_to(Method::GET, &["versions", &n.to_string()])?).await
    }

    pub async fn rollback(&self, version: u64, message: Option<&str>) -> Result<Written, CliError> {
        let mut request = self.request_to(Method::POST, &["versions", &version.to_string(), "rollback"])?;
        if let Some(message) = message {
            request = request.header("portico-change-message", message);
        }
        self.written(request).await
    }

    /// The newest `limit` audit entries: this gateway's, or with
    /// `all_gateways` every entry (token changes too); of `author` and of
    /// `action` (or of its subject) when given.
    pub async fn audit(&self, all_gateways: bool, author: Option<&str>, action: Option<&str>, limit: u32) -> Result<Value, CliError> {
        let mut query = vec![("limit", limit.to_string())];
        let filters = [("gateway", (!all_gateways).then_some(self.gateway.as_str())), ("author", author), ("action", action)];
        query.extend(filters.into_iter().filter_map(|(name, value)| Some((name, value?.to_owned()))));
        self.json(self.api_request(Method::GET, &["audit"])?.query(&query)).await
    }

    /// The fleet: one page of the largest size (a list answers `{"data", "total", …}`).
    pub async fn data_planes(&self) -> Result<Value, CliError> {
        self.json(self.request_to(Method::GET, &["data-planes"])?.query(&[("limit", "1000")])).await
    }

    /// Every data plane of the gateway, across pages.
    pub async fn nodes(&self) -> Result<Vec<Value>, CliError> {
        self.all(&["data-planes"]).await
    }

    /// Every item of a list endpoint, across its pages (`{"data", "total",
    /// "limit", "offset"}`).
    pub async fn all(&self, segments: &[&str]) -> Result<Vec<Value>, CliError> {
        let mut items = Vec::new();
        loop {
            let request = self.request_to(Method::GET, segments)?.query(&[("limit", "1000"), ("offset", &items.len().to_string())]);
            let mut page = self.json(request).await?;
            let found = page["data"].take().as_array().cloned().unwrap_or_default();
            let empty = found.is_empty();
            items.extend(found);
            if empty || page["total"].as_u64().is_none_or(|total| items.len() as u64 >= total) {
                return Ok(items);
            }
        }
    }

    /// Purges the data planes' caches (`body` names the target), waiting
    /// `timeout_ms` (or the control plane's default) for their answers.
    pub async fn purge(&self, body: &Value, timeout_ms: Option<u64>) -> Result<Value, CliError> {
        let mut request = self.request_to(Method::POST, &["cache", "purge"])?.json(body);
        if let Some(timeout_ms) = timeout_ms {
            request = request.query(&[("timeout_ms", timeout_ms)]);
        }
        self.json(request).await
    }

    pub async fn get(&self, segments: &[&str]) -> Result<Value, CliError> {
        self.json(self.request_to(Method::GET, segments)?).await
    }

    pub async fn create(&self, segments: &[&str], body: &Value) -> Result<Written, CliError> {
        self.written(self.request_to(Method::POST, segments)?.json(body)).await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Written, CliError> {
        self.written(self.request_to(Method::DELETE, segments)?).await
    }
}

async fn read_json(response: Response) -> Result<Value, CliError> {
    response.json().await.map_err(unreadable)
}

fn unreadable(e: impl std::fmt::Display) -> CliError {
    CliError::Api { status: StatusCode::BAD_GATEWAY, problems: vec![format!("unreadable response: {e}")] }
}

/// Each problem of an error body, as `field: message` (or the message alone
/// when it concerns no field): every entry of `errors`, else `error`.
fn problems(body: &Value) -> Vec<String> {
    let line = |error: &Value| {
        let message = error["message"].as_str().unwrap_or("request failed");
        match error["field"].as_str().filter(|f| !f.is_empty()) {
            Some(field) => format!("{field}: {message}"),
            None => message.to_owned(),
        }
    };
    match body["errors"].as_array().filter(|errors| !errors.is_empty()) {
        Some(errors) => errors.iter().map(line).collect(),
        None => vec![line(&body["error"])],
    }
}

/// One problem on the same line; several, one per line after their count.
fn listed(problems: &[String]) -> String {
    match problems {
        [one] => one.clone(),
        many => format!("{} errors:\n{}", many.len(), many.join("\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prints_every_problem_one_per_line_naming_its_field() {
        let body = json!({
            "error": {"code": "invalid_input", "message": "bad url", "field": "services[0].targets[0].url"},
            "errors": [
                {"code": "invalid_input", "message": "bad url", "field": "services[0].targets[0].url"},
                {"code": "invalid_input", "message": "must be one of GET, POST", "field": "routes[0].methods[0]"},
                {"code": "invalid_input", "message": "the document is empty", "field": null}
            ]
        });
        let error = CliError::Api { status: StatusCode::BAD_REQUEST, problems: problems(&body) };
        assert_eq!(
            error.to_string(),
            "400 Bad Request: 3 errors:\nservices[0].targets[0].url: bad url\nroutes[0].methods[0]: must be one of GET, POST\nthe document is empty"
        );
    }

    #[test]
    fn one_problem_stays_on_one_line_and_older_bodies_still_read() {
        let body = json!({"error": {"code": "not_found", "message": "version 99 not found", "field": null}});
        let error = CliError::Api { status: StatusCode::NOT_FOUND, problems: problems(&body) };
        assert_eq!(error.to_string(), "404 Not Found: version 99 not found");
    }
}
