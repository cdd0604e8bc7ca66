//! The authentication and authorization policies: `key-auth` and `jwt`
//! (who calls, from a consumer's credential) and `scopes` (what the caller
//! may do). That an `anonymous` consumer exists is checked across the
//! config in [`crate::validate`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::model::default_true;
use crate::validate::rules::{MAX_LIST, Result, Validate, bounded, in_range, is_token_byte, scopes, unique};

/// Fields of the `key-auth` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthPolicy {
    /// Request header carrying the key.
    #[serde(default = "default_key_header")]
    pub header: String,
    /// Query parameter carrying the key; `null` turns query keys off.
    #[serde(default = "default_key_query")]
    pub query: Option<String>,
    /// Remove the key from the request before it goes upstream.
    #[serde(default = "default_true")]
    pub hide_credentials: bool,
    /// Username of the consumer that calls without any credential become.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
}

fn default_key_header() -> String {
    "x-api-key".to_owned()
}

#[allow(clippy::unnecessary_wraps)]
fn default_key_query() -> Option<String> {
    Some("apikey".to_owned())
}

/// Fields of the `jwt` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtPolicy {
    /// Accepted `aud` values; the token's `aud` must name one of them.
    /// Empty: `aud` is not checked.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Claims every token must carry.
    #[serde(default = "default_required_claims")]
    pub required_claims: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, 0 to 600 seconds.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Remove `Authorization` before the request goes upstream.
    #[serde(default = "default_true")]
    pub hide_credentials: bool,
    /// Username of the consumer that calls without any credential become.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
}

fn default_required_claims() -> Vec<String> {
    vec!["exp".to_owned()]
}

fn default_leeway_s() -> u64 {
    30
}

/// Fields of the `scopes` policy; at least one list must be non-empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopesPolicy {
    /// The caller must hold every one of these.
    #[serde(default)]
    pub all_of: Vec<String>,
    /// The caller must hold at least one of these.
    #[serde(default)]
    pub any_of: Vec<String>,
}

impl Validate for KeyAuthPolicy {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        self.header.make_ascii_lowercase();
        if self.header.is_empty() || self.header.len() > 128 || !self.header.bytes().all(is_token_byte) {
            errors.add(ConfigError::invalid("header", "is not a valid header name"));
        }
        if let Some(query) = &self.query
            && (query.is_empty() || query.len() > 128 || !query.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)))
        {
            errors.add(ConfigError::invalid("query", "must be 1 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_', '~' (or null)"));
        }
        errors.finish()
    }
}

impl Validate for JwtPolicy {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        if errors.check(bounded("audience", self.audience.len(), MAX_LIST)).is_some() {
            for (j, audience) in self.audience.iter().enumerate() {
                if audience.is_empty() || audience.len() > 512 || audience.chars().any(char::is_control) {
                    errors.add(ConfigError::invalid(format!("audience[{j}]"), "must be 1 to 512 characters without control characters"));
                }
            }
        }
        if errors.check(bounded("required_claims", self.required_claims.len(), 16)).is_some() {
            let before = errors.count();
            for (j, claim) in self.required_claims.iter().enumerate() {
                if claim.is_empty() || claim.len() > 64 || !claim.bytes().all(|b| b.is_ascii_graphic()) {
                    errors.add(ConfigError::invalid(format!("required_claims[{j}]"), "must be 1 to 64 visible ASCII characters"));
                }
            }
            if errors.count() == before {
                errors.check(unique("required_claims", &self.required_claims));
            }
        }
        errors.check(in_range("leeway_s", self.leeway_s, 0, 600));
        errors.finish()
    }
}

impl Validate for ScopesPolicy {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        errors.check(scopes("all_of", &self.all_of));
        errors.check(scopes("any_of", &self.any_of));
        if self.all_of.is_empty() && self.any_of.is_empty() {
            errors.add(ConfigError::invalid("all_of", "name at least one scope in all_of or any_of"));
        }
        errors.finish()
    }
}
