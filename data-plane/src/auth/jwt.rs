//! JWT verification: the token's `iss` (and `kid`) find the consumer's
//! credential, whose algorithm is the only one accepted (the token's `alg`
//! header never chooses the key type; `none` does not parse). Signature,
//! `exp`, `nbf`, `iss` and `aud` are checked by jsonwebtoken; the claims
//! it tolerates in the wrong JSON type (`aud`, `sub`, `scope`, `scp`) are
//! refused here. Verified tokens are cached until they expire, keyed by the
//! policy and the whole token (compared byte for byte: a digest of the
//! token cost more than the rest of the cached check), so RSA and ECDSA are
//! paid once per token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portico_shared::model::{Credential, CredentialKind, JwtAlgorithm, JwtPolicy};
use serde_json::{Map, Value};

use super::jwks::Jwks;

/// Longest token accepted (larger ones are refused before any parsing).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest a verified token stays cached, whatever its `exp`.
const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);

/// The JWT credentials of a config, by issuer.
#[derive(Debug, Default)]
pub struct JwtCredentials {
    by_issuer: HashMap<String, IssuerKeys>,
}

#[derive(Debug)]
enum IssuerKeys {
    /// Keys given with the credentials (`secret` or `public_key`).
    Static(Vec<StaticKey>),
    /// One consumer whose keys come from a JWKS.
    Jwks { consumer: usize, jwks: Arc<Jwks> },
}

struct StaticKey {
    kid: Option<String>,
    consumer: usize,
    algorithm: Algorithm,
    key: Arc<DecodingKey>,
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKey").field("kid", &self.kid).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// A token that passed, and what the request learns from it.
#[derive(Debug)]
pub struct Verified {
    pub consumer: usize,
    pub subject: Option<String>,
    pub scopes: Vec<String>,
    pub claims: Arc<Map<String, Value>>,
    expires: Option<u64>,
    leeway: u64,
    cache_until: Instant,
}

/// A `jwt` policy, compiled.
#[derive(Debug)]
pub struct JwtRule {
    /// Distinguishes the policy in the token cache.
    id: u32,
    audience: Vec<String>,
    required_claims: Vec<String>,
    leeway: u64,
    pub hide_credentials: bool,
}

impl JwtRule {
    pub fn new(id: u32, policy: &JwtPolicy) -> Self {
        Self {
            id,
            audience: policy.audience.clone(),
            required_claims: policy.required_claims.clone(),
            leeway: policy.leeway_s,
            hide_credentials: policy.hide_credentials,
        }
    }
}

/// Verified tokens by policy id and token, until they expire; bounded.
pub struct TokenCache(Option<moka::sync::Cache<TokenKey, Arc<Verified>, foldhash::fast::RandomState>>);

/// A cached token's key: the policy and the whole token.
#[derive(PartialEq, Eq, Hash)]
struct TokenKey {
    rule: u32,
    token: Box<str>,
}

/// A [`TokenKey`] borrowed from the request, to look one up without
/// copying the token (hashed and compared as the key it stands for).
#[derive(Hash)]
struct TokenLookup<'a> {
    rule: u32,
    token: &'a str,
}

impl moka::Equivalent<TokenKey> for TokenLookup<'_> {
    fn equivalent(&self, key: &TokenKey) -> bool {
        self.rule == key.rule && self.token == &*key.token
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TokenCache").field(&self.0.as_ref().map(moka::sync::Cache::entry_count)).finish()
    }
}

struct UntilExpiry;

impl moka::Expiry<TokenKey, Arc<Verified>> for UntilExpiry {
    fn expire_after_create(&self, _key: &TokenKey, value: &Arc<Verified>, created_at: Instant) -> Option<Duration> {
        Some(value.cache_until.saturating_duration_since(created_at))
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (`0`: no caching).
    pub fn new(capacity: u64) -> Self {
        // Keys are hashed with foldhash (seeded per process), a fifth of
        // SipHash's cost on a token; only verified tokens become keys.
        Self((capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .build_with_hasher(foldhash::fast::RandomState::default())
        }))
    }
}

fn algorithm(algorithm: JwtAlgorithm) -> Algorithm {
    match algorithm {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

impl JwtCredentials {
    /// Adds the `jwt` credential of consumer `consumer`. A JWKS set is taken
    /// from `available` (the previous version's) when one serves the URL, and
    /// recorded in `used`.
    pub fn add(
        &mut self,
        credential: &Credential,
        consumer: usize,
        available: &mut Vec<Arc<Jwks>>,
        http: &reqwest::Client,
        used: &mut Vec<Arc<Jwks>>,
    ) -> Result<(), String> {
        let fail = |what: &str| format!("credential '{}': {what}", credential.name);
        let CredentialKind::Jwt(credential) = &credential.kind else { return Err(fail("not a jwt credential")) };
        let issuer = credential.issuer.clone();
        let alg = algorithm(credential.algorithm);
        if let Some(url) = &credential.jwks_url {
            let jwks = match available.iter().find(|j| j.serves(url, alg)) {
                Some(jwks) => jwks.clone(),
                None => {
                    let jwks = Arc::new(Jwks::new(url, alg, http.clone()));
                    available.push(jwks.clone());
                    jwks
                }
            };
            if !used.iter().any(|j| Arc::ptr_eq(j, &jwks)) {
                used.push(jwks.clone());
            }
            self.by_issuer.insert(issuer, IssuerKeys::Jwks { consumer, jwks });
            return Ok(());
        }
        let key = match (&credential.secret, &credential.public_key) {
            (Some(secret), _) => DecodingKey::from_secret(secret.as_bytes()),
            (None, Some(pem)) => match alg.family() {
                jsonwebtoken::AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem.as_bytes()),
                jsonwebtoken::AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem.as_bytes()),
                _ => DecodingKey::from_ed_pem(pem.as_bytes()),
            }
            .map_err(|e| fail(&format!("public key: {e}")))?,
            (None, None) => return Err(fail("no key")),
        };
        let entry = self.by_issuer.entry(issuer).or_insert_with(|| IssuerKeys::Static(Vec::new()));
        let IssuerKeys::Static(keys) = entry else { return Err(fail("issuer also served by a JWKS")) };
        keys.push(StaticKey { kid: credential.key_id.clone(), consumer, algorithm: alg, key: Arc::new(key) });
        Ok(())
    }

    /// Verifies `token` for `rule`; the reason of a refusal names no secret.
    pub async fn verify(&self, rule: &JwtRule, token: &str, cache: &TokenCache) -> Result<Arc<Verified>, &'static str> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err("the token is too large");
        }
        if let Some(cache) = &cache.0
            && let Some(hit) = cache.get(&TokenLookup { rule: rule.id, token })
        {
            return if hit.expires.is_none_or(|exp| exp.saturating_add(hit.leeway) >= now()) {
                Ok(hit)
            } else {
                Err("the token has expired")
            };
        }
        // Boxed: a miss is rare, and its future (a JWKS fetch) would
        // otherwise enlarge every authenticated request's.
        let verified = Arc::new(Box::pin(self.verify_uncached(rule, token)).await?);
        if let Some(cache) = &cache.0 {
            cache.insert(TokenKey { rule: rule.id, token: token.into() }, verified.clone());
        }
        Ok(verified)
    }

    async fn verify_uncached(&self, rule: &JwtRule, token: &str) -> Result<Verified, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the token is malformed")?;
        let unverified = payload(token).ok_or("the token is malformed")?;
        let issuer = match unverified.get("iss") {
            Some(Value::String(issuer)) => issuer,
            Some(_) => return Err("the token's 'iss' claim has the wrong type"),
            None => return Err("the token has no 'iss' claim"),
        };
        let (consumer, alg, key) = match self.by_issuer.get(issuer).ok_or("the token's issuer is not known")? {
            IssuerKeys::Static(keys) => {
                let by_kid = header.kid.as_deref().and_then(|kid| keys.iter().find(|k| k.kid.as_deref() == Some(kid)));
                let key = by_kid.or_else(|| keys.iter().find(|k| k.kid.is_none())).ok_or("the token's key id is not known")?;
                (key.consumer, key.algorithm, key.key.clone())
            }
            IssuerKeys::Jwks { consumer, jwks } => {
                let key = match header.kid.as_deref() {
                    Some(kid) => jwks.key(kid).await,
                    None => jwks.only_key().await,
                };
                (*consumer, jwks.algorithm(), key.ok_or("the token's key id is not known")?)
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = rule.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        let mut required: Vec<&str> = rule.required_claims.iter().map(String::as_str).collect();
        if rule.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&rule.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| refusal(e.kind()))?.claims;
        if let Some(missing) = rule.required_claims.iter().find(|c| !claims.contains_key(c.as_str())) {
            tracing::debug!(claim = %missing, "token lacks a required claim");
            return Err("the token lacks a required claim");
        }
        if claims.get("aud").is_some_and(|aud| !is_string_or_strings(aud)) {
            return Err("the token's 'aud' claim has the wrong type");
        }
        let subject = match claims.get("sub") {
            None => None,
            Some(Value::String(sub)) => Some(sub.clone()),
            Some(_) => return Err("the token's 'sub' claim has the wrong type"),
        };
        let scopes = scopes(&claims)?;
        let expires = claims.get("exp").and_then(Value::as_u64);
        let lifetime = expires.map_or(MAX_CACHE_TTL, |exp| Duration::from_secs(exp.saturating_add(rule.leeway).saturating_sub(now())));
        Ok(Verified {
            consumer,
            subject,
            scopes,
            claims: Arc::new(claims),
            expires,
            leeway: rule.leeway,
            cache_until: Instant::now() + lifetime.min(MAX_CACHE_TTL),
        })
    }
}

/// Scopes from `scope` (space-separated string) or `scp` (array of strings).
fn scopes(claims: &Map<String, Value>) -> Result<Vec<String>, &'static str> {
    let mut scopes = Vec::new();
    match claims.get("scope") {
        None => {}
        Some(Value::String(scope)) => scopes.extend(scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)),
        Some(_) => return Err("the token's 'scope' claim has the wrong type"),
    }
    match claims.get("scp") {
        None => {}
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            scopes.extend(list.iter().filter_map(Value::as_str).map(str::to_owned))
        }
        Some(_) => return Err("the token's 'scp' claim has the wrong type"),
    }
    Ok(scopes)
}

fn is_string_or_strings(value: &Value) -> bool {
    match value {
        Value::String(_) => true,
        Value::Array(list) => list.iter().all(Value::is_string),
        _ => false,
    }
}

/// The token's claims, unverified (to find the issuer).
fn payload(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else { return None };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn refusal(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidAudience => "the token is not meant for this audience",
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
        ErrorKind::InvalidSignature => "the token's signature is not valid",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "the token's algorithm is not accepted for its issuer",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        ErrorKind::InvalidClaimFormat(_) => "a claim of the token has the wrong type",
        _ => "the token is malformed",
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_test_support::jwt::{mint, now as epoch_now};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";

    fn credentials() -> JwtCredentials {
        let credential: Credential = serde_json::from_value(json!({
            "name": "jwt-test", "consumer": "c", "type": "jwt", "issuer": "test", "algorithm": "HS256", "secret": SECRET
        }))
        .unwrap();
        let mut credentials = JwtCredentials::default();
        credentials.add(&credential, 0, &mut Vec::new(), &reqwest::Client::new(), &mut Vec::new()).unwrap();
        credentials
    }

    fn rule(id: u32, required: &[&str]) -> JwtRule {
        let policy: JwtPolicy = serde_json::from_value(json!({ "required_claims": required })).unwrap();
        JwtRule::new(id, &policy)
    }

    #[tokio::test]
    async fn a_cached_token_is_found_again_for_its_policy_only() {
        let (credentials, cache) = (credentials(), TokenCache::new(10));
        let token = mint(Algorithm::HS256, SECRET, None, &json!({"iss": "test", "sub": "u", "exp": epoch_now() + 600}));
        let (lenient, strict) = (rule(1, &["exp"]), rule(2, &["exp", "scope"]));
        let first = credentials.verify(&lenient, &token, &cache).await.unwrap();
        let again = credentials.verify(&lenient, &token, &cache).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second check is the cached verification");
        assert_eq!(credentials.verify(&strict, &token, &cache).await.unwrap_err(), "the token lacks a required claim");
        let also_lenient = rule(3, &["exp"]);
        let own = credentials.verify(&also_lenient, &token, &cache).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &own), "another policy verifies the token itself");
        assert!(Arc::ptr_eq(&own, &credentials.verify(&also_lenient, &token, &cache).await.unwrap()), "and caches it apart");
        let other = mint(Algorithm::HS256, SECRET, None, &json!({"iss": "test", "sub": "v", "exp": epoch_now() + 600}));
        assert!(!Arc::ptr_eq(&first, &credentials.verify(&lenient, &other, &cache).await.unwrap()));
    }
}
