//! Credentials: how a consumer proves who it is, an API key (`key-auth`)
//! or the key that signs its JWTs (`jwt`). API keys are kept only as keyed
//! hashes ([`crate::secret`]); that each key and each issuer's key
//! identifies one credential is checked across the config in
//! [`crate::validate`]. Verifying callers is `portico_dp::auth`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::rules::{Result, Validate, name, tags};

const MIN_HMAC_SECRET: usize = 32;

/// How a consumer proves who it is. Managed under
/// `/consumers/{c}/credentials`; in a declarative document, a top-level
/// list whose entries name their `consumer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Unique in the gateway; derived from the credential when left out
    /// (`key-…` from the key's hash, `jwt-…` from issuer and key id).
    #[serde(default)]
    pub name: String,
    /// The owning consumer's username (taken from the URL under
    /// `/consumers/{c}/credentials`).
    #[serde(default)]
    pub consumer: String,
    #[serde(rename = "type")]
    pub kind: CredentialType,
    /// `key-auth`: the API key, 16 to 256 visible ASCII characters. Write
    /// only: the control plane keeps and ships only `key_hash`, and answers
    /// with the key once, in the response of the write that set it. Left out
    /// on create (with no `key_hash`), a random 256-bit key is generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `key-auth`: lowercase hex HMAC-SHA256 of the key, keyed from the
    /// cluster token; what exports contain and imports accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
    /// `jwt`: the `iss` claim of this consumer's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `jwt`: the only algorithm accepted (a token's `alg` header never
    /// chooses the key type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<JwtAlgorithm>,
    /// `jwt`, HS*: the shared secret, at least 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `jwt`, RS*/ES*/EdDSA: the public key in PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// `jwt`, RS*/ES*/EdDSA: where data planes fetch the issuer's keys (JWKS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// `jwt` with `secret` or `public_key`: the `kid` this key answers to,
    /// needed when several credentials share an issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// The kind of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialType {
    KeyAuth,
    Jwt,
}

/// JWT signature algorithms a credential may name (`none` never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    /// Whether the algorithm verifies with a shared secret (HMAC).
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

entity!(Credential, crate::model::EntityKind::Credential, credentials, name, owner = consumer);

impl Validate for Credential {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let fields: [(&str, bool); 8] = [
            ("key", self.key.is_some()),
            ("key_hash", self.key_hash.is_some()),
            ("issuer", self.issuer.is_some()),
            ("algorithm", self.algorithm.is_some()),
            ("secret", self.secret.is_some()),
            ("public_key", self.public_key.is_some()),
            ("jwks_url", self.jwks_url.is_some()),
            ("key_id", self.key_id.is_some()),
        ];
        let (kind, allowed): (&str, &[&str]) = match self.kind {
            CredentialType::KeyAuth => ("key-auth", &["key_hash"]),
            CredentialType::Jwt => ("jwt", &["issuer", "algorithm", "secret", "public_key", "jwks_url", "key_id"]),
        };
        let mut errors = Errors::default();
        for (field, _) in fields.iter().filter(|(field, given)| *given && !allowed.contains(field)) {
            errors.add(ConfigError::invalid(*field, format!("is not a field of a {kind} credential")));
        }
        if errors.is_empty() {
            let kind_valid = match self.kind {
                CredentialType::KeyAuth => errors.check(self.validate_key_auth()),
                CredentialType::Jwt => errors.check(self.validate_jwt()),
            };
            if kind_valid.is_some() && self.name.is_empty() {
                self.name = self.derived_name();
            }
        }
        // A name left out is derived from a valid key; with an invalid one
        // there is nothing to check yet.
        if !self.name.is_empty() {
            errors.check(name("name", &self.name));
        }
        if self.consumer.is_empty() {
            errors.add(ConfigError::invalid("consumer", "must name the consumer (username) this credential belongs to"));
        }
        errors.check(tags(&self.tags));
        errors.finish()
    }
}

impl Credential {
    fn validate_key_auth(&mut self) -> Result {
        let hash = self.key_hash.as_mut().ok_or_else(|| ConfigError::invalid("key", "a key-auth credential needs a key"))?;
        hash.make_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::invalid("key_hash", "must be 64 hex digits (as exported; send `key` to set a new key)"));
        }
        Ok(())
    }

    fn validate_jwt(&self) -> Result {
        let issuer = self.issuer.as_deref().ok_or_else(|| ConfigError::invalid("issuer", "a jwt credential needs the tokens' issuer"))?;
        if issuer.is_empty() || issuer.len() > 512 || issuer.chars().any(char::is_control) {
            return Err(ConfigError::invalid("issuer", "must be 1 to 512 characters without control characters"));
        }
        let algorithm = self.algorithm.ok_or_else(|| {
            ConfigError::invalid(
                "algorithm",
                "a jwt credential needs its algorithm (HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384 or EdDSA)",
            )
        })?;
        if algorithm.is_hmac() {
            let secret = self.secret.as_deref().ok_or_else(|| ConfigError::invalid("secret", format!("{algorithm:?} needs a secret")))?;
            if secret.len() < MIN_HMAC_SECRET || secret.len() > 4096 {
                return Err(ConfigError::invalid("secret", format!("must be {MIN_HMAC_SECRET} to 4096 bytes")));
            }
            for (field, given) in [("public_key", self.public_key.is_some()), ("jwks_url", self.jwks_url.is_some())] {
                if given {
                    return Err(ConfigError::invalid(field, format!("{algorithm:?} verifies with a secret, not a public key")));
                }
            }
        } else {
            if self.secret.is_some() {
                return Err(ConfigError::invalid("secret", format!("{algorithm:?} verifies with a public key, not a secret")));
            }
            match (&self.public_key, &self.jwks_url) {
                (Some(pem), None) => public_key("public_key", algorithm, pem)?,
                (None, Some(url)) => {
                    jwks_url("jwks_url", url)?;
                    if self.key_id.is_some() {
                        return Err(ConfigError::invalid("key_id", "a JWKS names its own keys; leave key_id out with jwks_url"));
                    }
                }
                _ => return Err(ConfigError::invalid("public_key", format!("{algorithm:?} needs exactly one of public_key or jwks_url"))),
            }
        }
        if let Some(kid) = &self.key_id
            && (kid.is_empty() || kid.len() > 256 || kid.chars().any(char::is_control))
        {
            return Err(ConfigError::invalid("key_id", "must be 1 to 256 characters without control characters"));
        }
        Ok(())
    }

    /// A stable name from what identifies the credential, so that a
    /// declarative document without names applies idempotently.
    fn derived_name(&self) -> String {
        match self.kind {
            CredentialType::KeyAuth => format!("key-{}", &self.key_hash.as_deref().unwrap_or_default()[..12]),
            CredentialType::Jwt => {
                let identity = format!("{}\n{}", self.issuer.as_deref().unwrap_or_default(), self.key_id.as_deref().unwrap_or_default());
                format!("jwt-{}", &hex::encode(Sha256::digest(identity.as_bytes()))[..12])
            }
        }
    }
}

/// Checks an API key as a user sends it: 16 to 256 visible ASCII characters.
pub fn api_key(field: &str, key: &str) -> Result {
    if key.len() < 16 || key.len() > 256 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::invalid(field, "must be 16 to 256 visible ASCII characters"));
    }
    Ok(())
}

fn public_key(field: &str, algorithm: JwtAlgorithm, pem: &str) -> Result {
    use jsonwebtoken::DecodingKey;
    let parsed = match algorithm {
        JwtAlgorithm::RS256 | JwtAlgorithm::RS384 | JwtAlgorithm::RS512 => DecodingKey::from_rsa_pem(pem.as_bytes()).map(drop),
        JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()).map(drop),
        JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()).map(drop),
        JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => Ok(()),
    };
    parsed.map_err(|e| ConfigError::invalid(field, format!("is not a PEM public key for {algorithm:?}: {e}")))
}

fn jwks_url(field: &str, url: &str) -> Result {
    let uri: http::Uri = url.parse().map_err(|e| ConfigError::invalid(field, format!("'{url}' is not a valid URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(field, format!("'{url}' must be an absolute https:// (or http://) URL")));
    }
    Ok(())
}
