//! A thin client of the admin REST API that turns its JSON errors into
//! messages naming the field: one line per problem, `field: message`.

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
    /// The API refused the request: each problem as `field: message`.
    #[error("{status}: {}", listed(.problems))]
    Api { status: StatusCode, problems: Vec<String> },
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
        Err(CliError::Api { status, problems: problems(&body) })
    }

    async fn json(&self, request: RequestBuilder) -> Result<Value, CliError> {
        let response = self.send(request).await?;
        response
            .json()
            .await
            .map_err(|e| CliError::Api { status: StatusCode::BAD_GATEWAY, problems: vec![format!("unreadable response: {e}")] })
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
        response.text().await.map_err(|e| CliError::Api { status: StatusCode::BAD_GATEWAY, problems: vec![e.to_string()] })
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

    /// The fleet: one page of the largest size (a list answers `{"data", "total", …}`).
    pub async fn data_planes(&self) -> Result<Value, CliError> {
        self.json(self.request(Method::GET, "/data-planes?limit=1000")).await
    }
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
