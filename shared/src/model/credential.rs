//! Credentials: how a consumer proves who it is, an API key (`key-auth`)
//! or the key that signs its JWTs (`jwt`), each kind a variant with its own
//! fields ([`CredentialKind`]), so a `jwt` credential always has its issuer
//! and algorithm and a `key-auth` one has no JWT field. API keys are kept
//! only as keyed hashes ([`crate::secret`]); that each key and each
//! issuer's key identifies one credential is checked across the config in
//! [`crate::validate`]. Verifying callers is `portico_dp::auth`.
//!
//! The JSON stays flat (`{"name", "consumer", "type": "jwt", "issuer", …}`,
//! byte for byte what earlier versions wrote): the kind is flattened into
//! the credential and tagged by `type`. Decoding does not go through the
//! flattened enum but through [`FlatCredential`], the document's flat shape,
//! because serde buffers a flattened (or internally tagged) value before
//! decoding it and so cannot say which field a wrong value was in (an
//! `"algorithm": "none"` would be reported against the whole credential);
//! the flat shape also refuses unknown fields, which serde cannot do on a
//! struct with a flattened field. Its conversion names the field of every
//! mistake in serde's own words (`unknown field`, `missing field`), and the
//! compiler keeps it complete: it builds every field of [`Credential`] and
//! of each kind.

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
#[serde(try_from = "FlatCredential")]
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
    /// The kind (`type`) and its fields.
    #[serde(flatten)]
    pub kind: CredentialKind,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A credential's kind, chosen by `type`, with the fields of that kind.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CredentialKind {
    /// An API key the caller sends (header or query, as the `key-auth` policy says).
    KeyAuth(KeyAuthCredential),
    /// The key that verifies the caller's JWTs.
    Jwt(JwtCredential),
}

/// Fields of a `key-auth` credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct KeyAuthCredential {
    /// The API key, 16 to 256 visible ASCII characters. Write only: the
    /// control plane keeps and ships only `key_hash`, and answers with the
    /// key once, in the response of the write that set it. Left out on
    /// create (with no `key_hash`), a random 256-bit key is generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Lowercase hex HMAC-SHA256 of the key, keyed from the cluster token;
    /// what exports contain and imports accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
}

/// Fields of a `jwt` credential: its issuer's tokens, signed with one
/// algorithm, verified with a secret (HS*), a public key or a JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct JwtCredential {
    /// The `iss` claim of this consumer's tokens.
    pub issuer: String,
    /// The only algorithm accepted (a token's `alg` header never chooses
    /// the key type).
    pub algorithm: JwtAlgorithm,
    /// HS*: the shared secret, at least 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// RS*/ES*/EdDSA: the public key in PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// RS*/ES*/EdDSA: where data planes fetch the issuer's keys (JWKS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// With `secret` or `public_key`: the `kid` this key answers to, needed
    /// when several credentials share an issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
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

/// A credential as written: the fields of every kind side by side, all
/// optional; what decoding reads before the kind decides which fields a
/// credential may have (see the module doc).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatCredential {
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    consumer: String,
    #[serde(rename = "type")]
    kind: KindName,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_hash: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    algorithm: Option<JwtAlgorithm>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
}

/// The `type` of a credential as written.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum KindName {
    KeyAuth,
    Jwt,
}

impl TryFrom<FlatCredential> for Credential {
    /// serde's wording, which [`crate::parse`] reads the field from.
    type Error = String;

    fn try_from(flat: FlatCredential) -> std::result::Result<Self, String> {
        let given = |fields: &[(&str, bool)], expected: &str| {
            fields
                .iter()
                .find(|(_, given)| *given)
                .map_or(Ok(()), |(field, _)| Err(format!("unknown field `{field}`, expected {expected}")))
        };
        let kind = match flat.kind {
            KindName::KeyAuth => {
                let jwt_fields = [
                    ("issuer", flat.issuer.is_some()),
                    ("algorithm", flat.algorithm.is_some()),
                    ("secret", flat.secret.is_some()),
                    ("public_key", flat.public_key.is_some()),
                    ("jwks_url", flat.jwks_url.is_some()),
                    ("key_id", flat.key_id.is_some()),
                ];
                given(&jwt_fields, "`key` or `key_hash` (a key-auth credential)")?;
                CredentialKind::KeyAuth(KeyAuthCredential { key: flat.key, key_hash: flat.key_hash })
            }
            KindName::Jwt => {
                let key_fields = [("key", flat.key.is_some()), ("key_hash", flat.key_hash.is_some())];
                given(&key_fields, "`issuer`, `algorithm`, `secret`, `public_key`, `jwks_url` or `key_id` (a jwt credential)")?;
                CredentialKind::Jwt(JwtCredential {
                    issuer: flat.issuer.ok_or("missing field `issuer`")?,
                    algorithm: flat.algorithm.ok_or("missing field `algorithm`")?,
                    secret: flat.secret,
                    public_key: flat.public_key,
                    jwks_url: flat.jwks_url,
                    key_id: flat.key_id,
                })
            }
        };
        Ok(Self {
            id: flat.id,
            name: flat.name,
            consumer: flat.consumer,
            kind,
            tags: flat.tags,
            created_at: flat.created_at,
            updated_at: flat.updated_at,
        })
    }
}

impl CredentialKind {
    /// The credential's `type`, as written.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::KeyAuth(_) => "key-auth",
            Self::Jwt(_) => "jwt",
        }
    }

    /// A stable name from what identifies the credential, so that a
    /// declarative document without names applies idempotently.
    fn derived_name(&self) -> String {
        match self {
            Self::KeyAuth(k) => format!("key-{}", k.key_hash.as_deref().unwrap_or_default().get(..12).unwrap_or_default()),
            Self::Jwt(j) => {
                let identity = format!("{}\n{}", j.issuer, j.key_id.as_deref().unwrap_or_default());
                format!("jwt-{}", &hex::encode(Sha256::digest(identity.as_bytes()))[..12])
            }
        }
    }
}

entity!(Credential, crate::model::EntityKind::Credential, credentials, name, owner = consumer);

impl Validate for Credential {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        if errors.check(self.kind.normalize_and_validate()).is_some() && self.name.is_empty() {
            self.name = self.kind.derived_name();
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

impl Validate for CredentialKind {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        match self {
            Self::KeyAuth(k) => Ok(k.normalize_and_validate()?),
            Self::Jwt(j) => j.normalize_and_validate(),
        }
    }
}

impl KeyAuthCredential {
    /// A sealed key: its hash, in lowercase hex. The key itself never gets
    /// this far (the control plane replaces it by its hash first).
    fn normalize_and_validate(&mut self) -> Result {
        if self.key.is_some() {
            return Err(ConfigError::invalid("key", "is replaced by its key_hash before it is checked or stored; give key_hash here"));
        }
        let hash = self.key_hash.as_mut().ok_or_else(|| ConfigError::invalid("key", "a key-auth credential needs a key"))?;
        hash.make_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::invalid("key_hash", "must be 64 hex digits (as exported; send `key` to set a new key)"));
        }
        Ok(())
    }
}

impl Validate for JwtCredential {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        let issuer = &self.issuer;
        if issuer.is_empty() || issuer.len() > 512 || issuer.chars().any(char::is_control) {
            errors.add(ConfigError::invalid("issuer", "must be 1 to 512 characters without control characters"));
        }
        errors.check(self.check_key_material());
        if let Some(kid) = &self.key_id
            && (kid.is_empty() || kid.len() > 256 || kid.chars().any(char::is_control))
        {
            errors.add(ConfigError::invalid("key_id", "must be 1 to 256 characters without control characters"));
        }
        errors.finish()
    }
}

impl JwtCredential {
    /// What verifies the tokens fits the algorithm: a secret for HS*,
    /// exactly one of a public key or a JWKS otherwise.
    fn check_key_material(&self) -> Result {
        let algorithm = self.algorithm;
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
            return Ok(());
        }
        if self.secret.is_some() {
            return Err(ConfigError::invalid("secret", format!("{algorithm:?} verifies with a public key, not a secret")));
        }
        match (&self.public_key, &self.jwks_url) {
            (Some(pem), None) => public_key("public_key", algorithm, pem),
            (None, Some(url)) => {
                jwks_url("jwks_url", url)?;
                if self.key_id.is_some() {
                    return Err(ConfigError::invalid("key_id", "a JWKS names its own keys; leave key_id out with jwks_url"));
                }
                Ok(())
            }
            _ => Err(ConfigError::invalid("public_key", format!("{algorithm:?} needs exactly one of public_key or jwks_url"))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{from_json, from_yaml};

    fn credential(json: &str) -> Credential {
        from_json(json.as_bytes()).unwrap()
    }

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn encodes_flat_as_before_with_type_before_the_kind_fields() {
        for json in [
            format!(r#"{{"name":"k","consumer":"alice","type":"key-auth","key_hash":"{HASH}","tags":["a"]}}"#),
            r#"{"id":"7f1c2a58-3a4e-4d55-8a4c-2f36a1d4b3e1","name":"j","consumer":"alice","type":"jwt","issuer":"https://idp","algorithm":"HS256","secret":"s","key_id":"k1","tags":[],"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#.to_owned(),
            r#"{"name":"w","consumer":"bob","type":"jwt","issuer":"i","algorithm":"RS256","jwks_url":"https://idp/jwks","tags":[]}"#.to_owned(),
        ] {
            let parsed = credential(&json);
            assert_eq!(serde_json::to_string(&parsed).unwrap(), json);
        }
    }

    #[test]
    fn refuses_unknown_fields_and_fields_of_the_other_kind_naming_them() {
        for (json, field) in [
            (r#"{"consumer":"a","type":"key-auth","issuer":"x"}"#, "issuer"),
            (r#"{"consumer":"a","type":"key-auth","key_hash":"00","colour":"red"}"#, "colour"),
            (r#"{"consumer":"a","type":"jwt","issuer":"i","algorithm":"HS256","key_hash":"00"}"#, "key_hash"),
            (r#"{"type":"jwt","issuer":"i","algorithm":"RS256","public_kye":"pem"}"#, "public_kye"),
            (r#"{"type":"jwt","algorithm":"HS256"}"#, "issuer"),
            (r#"{"type":"jwt","issuer":"i"}"#, "algorithm"),
            (r#"{"consumer":"a"}"#, "type"),
            (r#"{"consumer":"a","type":"password"}"#, "type"),
            (r#"{"type":"jwt","issuer":"i","algorithm":"none","secret":"s"}"#, "algorithm"),
            (r#"{"type":"jwt","issuer":5,"algorithm":"HS256"}"#, "issuer"),
            (r#"{"type":"key-auth","key_hash":["x"]}"#, "key_hash"),
        ] {
            let error = from_json::<Credential>(json.as_bytes()).unwrap_err();
            assert_eq!(error.field(), field, "{json}: {error}");
        }
        let error =
            from_json::<crate::model::GatewayConfig>(br#"{"credentials":[{"consumer":"a","type":"key-auth","secret":"x"}]}"#).unwrap_err();
        assert_eq!(error.field(), "credentials[0].secret");
        let error =
            from_yaml::<crate::model::GatewayConfig>(b"credentials:\n  - {consumer: a, type: jwt, issuer: i, algorithm: HS256, kee: x}\n")
                .unwrap_err();
        assert_eq!(error.field(), "credentials[0].kee");
    }

    #[test]
    fn derives_a_stable_name_and_lowercases_the_hash() {
        let mut key = credential(&format!(r#"{{"consumer":"a","type":"key-auth","key_hash":"{}"}}"#, HASH.to_uppercase()));
        key.normalize_and_validate().unwrap();
        assert_eq!(key.name, "key-0123456789ab");
        assert_eq!(key.kind, CredentialKind::KeyAuth(KeyAuthCredential { key: None, key_hash: Some(HASH.to_owned()) }));
        let mut jwt =
            credential(r#"{"consumer":"a","type":"jwt","issuer":"i","algorithm":"HS256","secret":"0123456789abcdef0123456789abcdef"}"#);
        jwt.normalize_and_validate().unwrap();
        assert!(jwt.name.starts_with("jwt-") && jwt.name.len() == 16, "{}", jwt.name);
    }

    #[test]
    fn reports_every_wrong_field_of_a_credential() {
        let mut jwt = credential(r#"{"name":"Bad","type":"jwt","issuer":"","algorithm":"HS256","secret":"short","key_id":""}"#);
        let errors = jwt.normalize_and_validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(ConfigError::field).collect();
        assert_eq!(fields, ["issuer", "secret", "key_id", "name", "consumer"]);
        let mut key = credential(r#"{"consumer":"a","type":"key-auth","key_hash":"zz"}"#);
        assert_eq!(key.normalize_and_validate().unwrap_err().first().field(), "key_hash", "no name is derived from a bad hash");
        assert_eq!(key.name, "");
    }
}
