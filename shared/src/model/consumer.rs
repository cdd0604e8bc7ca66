//! Consumers: who calls. Their credentials are [`super::Credential`]s
//! that name them; the checks that those exist and that `custom_id` is
//! unique are [`crate::validate`]'s.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::rules::{Result, Validate, scopes, tags};

/// Who calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// 1 to 128 characters of `[A-Za-z0-9._@+-]`, unique in the gateway.
    pub username: String,
    /// The caller's id in your own systems; unique in the gateway when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// Scopes granted to this consumer when it authenticates with an API key
    /// (or is the anonymous consumer); JWT callers get their token's scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

entity!(Consumer, crate::model::EntityKind::Consumer, consumers, username);

impl Validate for Consumer {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        let valid = self.username.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
        if self.username.is_empty() || self.username.len() > 128 || !valid {
            errors.add(ConfigError::invalid("username", "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', '@', '+', '-'"));
        }
        if let Some(custom_id) = &self.custom_id
            && (custom_id.is_empty() || custom_id.len() > 256 || custom_id.chars().any(char::is_control))
        {
            errors.add(ConfigError::invalid("custom_id", "must be 1 to 256 characters without control characters"));
        }
        errors.check(scopes("scopes", &self.scopes));
        errors.check(tags(&self.tags));
        errors.finish()
    }
}
