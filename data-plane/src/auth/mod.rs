//! Authentication and authorization at the edge. A config's consumers and
//! credentials compile into one [`Authenticator`] per runtime (API keys by
//! keyed hash, JWT keys by issuer); each route gets an [`AuthPlan`] from
//! the policies that apply to it. A request passes when any of the route's
//! authentication policies accepts it (or, when it presents no credential
//! at all, as the policy's `anonymous` consumer), then its scopes are
//! checked. Upstreams learn who called from `X-Consumer-*`, `X-User-Id` and
//! `X-Scopes`, which clients can never set themselves.

pub mod jwks;
pub mod jwt;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::Either;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use portico_shared::GatewayConfig;
use portico_shared::model::{CredentialKind, KeyAuthPolicy, Policy, ScopesPolicy};
use portico_shared::secret::KeyHasher;
use subtle::ConstantTimeEq;

use self::jwks::Jwks;
use self::jwt::{JwtCredentials, JwtRule, TokenCache};
use crate::error::ProxyError;

pub const CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
pub const CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
pub const USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub const SCOPES: HeaderName = HeaderName::from_static("x-scopes");
pub const ANONYMOUS: HeaderName = HeaderName::from_static("x-anonymous-consumer");

/// What compiling authentication needs from the node.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Hashes presented API keys as the control plane hashed stored ones.
    pub keys: KeyHasher,
    /// Verified tokens kept per config version (`0`: none).
    pub token_cache_capacity: u64,
    /// Fetches JWKS documents.
    pub http: reqwest::Client,
}

/// A consumer as upstream requests name it.
#[derive(Debug)]
struct ConsumerHeaders {
    id: HeaderValue,
    /// The id as text, shared by the identities of its requests.
    id_text: Arc<str>,
    username: HeaderValue,
    custom_id: Option<HeaderValue>,
    scopes: Vec<String>,
}

/// The consumers and credentials of one config version.
#[derive(Debug)]
pub struct Authenticator {
    settings: AuthSettings,
    consumers: Vec<ConsumerHeaders>,
    by_username: HashMap<String, usize>,
    /// Consumer index by keyed hash of the API key.
    keys: HashMap<[u8; 32], usize>,
    jwt: JwtCredentials,
    tokens: TokenCache,
    /// The JWKS sets in use, handed on to the next version.
    jwks_sets: Vec<Arc<Jwks>>,
}

/// A route's authentication and scope policies, compiled. Boxed, and
/// absent for a route without any: every route holds a plan, few have one.
#[derive(Debug, Default)]
pub struct AuthPlan(Option<Box<AuthRules>>);

/// The policies of an [`AuthPlan`].
#[derive(Debug, Default)]
struct AuthRules {
    key_auth: Option<KeyAuthPolicy>,
    jwt: Option<JwtRule>,
    scopes: Option<ScopesPolicy>,
    /// The consumer that calls without credentials become.
    anonymous: Option<usize>,
}

/// Who a request comes from.
#[derive(Debug)]
pub struct Identity {
    consumer: usize,
    consumer_id: Arc<str>,
    user_id: Option<String>,
    scopes: Vec<String>,
    anonymous: bool,
    /// The verified token's claims, for JWT callers.
    claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

impl Identity {
    /// The consumer's id.
    pub fn consumer_id(&self) -> &str {
        &self.consumer_id
    }

    /// Whether the caller came in without credentials, as the anonymous consumer.
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    /// A claim of the caller's token as text (strings, numbers and booleans).
    pub fn claim(&self, name: &str) -> Option<String> {
        match self.claims.as_ref()?.get(name)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

impl Authenticator {
    /// Compiles the consumers and credentials of `config`, keeping the
    /// JWKS sets of `previous` that are still used.
    pub fn compile(config: &GatewayConfig, settings: &AuthSettings, previous: Option<&Authenticator>) -> Result<Self, String> {
        let mut consumers = Vec::with_capacity(config.consumers.len());
        let mut by_username = HashMap::with_capacity(config.consumers.len());
        for consumer in &config.consumers {
            let id = consumer.id.ok_or_else(|| format!("consumer '{}' has no id", consumer.username))?;
            let value =
                |s: &str| HeaderValue::from_str(s).map_err(|_| format!("consumer '{}' cannot be sent in a header", consumer.username));
            by_username.insert(consumer.username.clone(), consumers.len());
            consumers.push(ConsumerHeaders {
                id: value(&id.to_string())?,
                id_text: id.to_string().into(),
                username: value(&consumer.username)?,
                custom_id: consumer.custom_id.as_deref().map(value).transpose()?,
                scopes: consumer.scopes.clone(),
            });
        }
        let mut keys = HashMap::new();
        let mut jwt = JwtCredentials::default();
        let mut jwks_sets = previous.map(|p| p.jwks_sets.clone()).unwrap_or_default();
        let mut used_sets = Vec::new();
        for credential in &config.credentials {
            let consumer =
                *by_username.get(&credential.consumer).ok_or_else(|| format!("credential '{}': unknown consumer", credential.name))?;
            match &credential.kind {
                CredentialKind::KeyAuth(key) => {
                    let hash = key.key_hash.as_deref().and_then(|h| hex::decode(h).ok()).and_then(|h| <[u8; 32]>::try_from(h).ok());
                    keys.insert(hash.ok_or_else(|| format!("credential '{}': bad key_hash", credential.name))?, consumer);
                }
                CredentialKind::Jwt(_) => jwt.add(credential, consumer, &mut jwks_sets, &settings.http, &mut used_sets)?,
            }
        }
        Ok(Self {
            settings: settings.clone(),
            consumers,
            by_username,
            keys,
            jwt,
            tokens: TokenCache::new(settings.token_cache_capacity),
            jwks_sets: used_sets,
        })
    }

    /// The username of the consumer a request comes from.
    pub fn username(&self, identity: &Identity) -> Option<&str> {
        self.consumers.get(identity.consumer)?.username.to_str().ok()
    }

    /// The custom id of the consumer a request comes from, when it has one.
    pub fn custom_id(&self, identity: &Identity) -> Option<&str> {
        self.consumers.get(identity.consumer)?.custom_id.as_ref()?.to_str().ok()
    }

    /// The plan of a route whose applicable policies are `policies`;
    /// `index` tells its JWT policy apart in the token cache.
    pub fn plan(&self, policies: &[&Policy], index: u32) -> AuthPlan {
        let mut plan = AuthRules::default();
        for policy in policies {
            match policy {
                Policy::KeyAuth(p) => plan.key_auth = Some(p.clone()),
                Policy::Jwt(p) => plan.jwt = Some(JwtRule::new(index, p)),
                Policy::Scopes(p) => plan.scopes = Some(p.clone()),
                Policy::RequestSizeLimit { .. }
                | Policy::RateLimit(_)
                | Policy::Cors(_)
                | Policy::IpRestriction(_)
                | Policy::RequestTransform(_)
                | Policy::ResponseTransform(_)
                | Policy::Cache(_)
                | Policy::AccessLog(_) => {}
            }
            if let Some(anonymous) = policy.anonymous() {
                plan.anonymous = plan.anonymous.or_else(|| self.by_username.get(anonymous).copied());
            }
        }
        let any = plan.key_auth.is_some() || plan.jwt.is_some() || plan.scopes.is_some() || plan.anonymous.is_some();
        AuthPlan(any.then(|| Box::new(plan)))
    }

    /// Authenticates and authorizes a request by `plan`, removing the
    /// credentials the policies hide. `None` when the route needs no one,
    /// at once: only a route with credentials to check gets the check's
    /// future, boxed, so that it does not enlarge every request's.
    pub fn authenticate<'a>(
        &'a self,
        plan: &'a AuthPlan,
        parts: &'a mut Parts,
    ) -> impl Future<Output = Result<Option<Identity>, ProxyError>> + Send + 'a {
        match plan.0.as_deref().filter(|plan| plan.key_auth.is_some() || plan.jwt.is_some()) {
            None => Either::Left(std::future::ready(Ok(None))),
            Some(plan) => Either::Right(Box::pin(self.check_credentials(plan, parts))),
        }
    }

    async fn check_credentials(&self, plan: &AuthRules, parts: &mut Parts) -> Result<Option<Identity>, ProxyError> {
        let mut refusal = None;
        let mut identity = None;
        if let Some(policy) = &plan.key_auth
            && let Some(key) = api_key(policy, parts)
        {
            match key.ok().and_then(|key| self.key_owner(&key)) {
                Some(consumer) => identity = Some(self.identity(consumer, None)),
                None => refusal = Some("the API key is not valid"),
            }
        }
        // Read once: for the JWT policy, and for hiding it.
        let bearer = plan.jwt.as_ref().and_then(|rule| Some((rule, bearer_token(parts)?)));
        let has_bearer = bearer.is_some();
        if identity.is_none()
            && let Some((rule, token)) = bearer
        {
            match self.jwt.verify(rule, token, &self.tokens).await {
                Ok(verified) => identity = Some(self.identity(verified.consumer, Some(&verified))),
                Err(reason) => refusal = refusal.or(Some(reason)),
            }
        }
        let identity = match (identity, refusal, plan.anonymous) {
            (Some(identity), _, _) => identity,
            (None, None, Some(anonymous)) => Identity { anonymous: true, ..self.identity(anonymous, None) },
            (None, refusal, _) => {
                let message = refusal.unwrap_or("this route needs credentials");
                return Err(ProxyError::Unauthorized { message, challenges: challenges(plan, refusal.is_some()) });
            }
        };
        hide_credentials(plan, parts, has_bearer);
        if let Some(scopes) = &plan.scopes {
            let holds = |scope: &String| identity.scopes.contains(scope);
            let missing: Vec<&str> = scopes.all_of.iter().filter(|s| !holds(s)).map(String::as_str).collect();
            if !missing.is_empty() || (!scopes.any_of.is_empty() && !scopes.any_of.iter().any(holds)) {
                let wanted = if missing.is_empty() { scopes.any_of.join(" ") } else { missing.join(" ") };
                let challenge =
                    HeaderValue::from_str(&format!("Bearer realm=\"portico\", error=\"insufficient_scope\", scope=\"{wanted}\""))
                        .unwrap_or(HeaderValue::from_static("Bearer realm=\"portico\", error=\"insufficient_scope\""));
                return Err(ProxyError::Forbidden { challenge });
            }
        }
        Ok(Some(identity))
    }

    /// The consumer whose key hashes to the presented key's hash.
    fn key_owner(&self, key: &str) -> Option<usize> {
        let presented = self.settings.keys.digest(key);
        let (stored, consumer) = self.keys.get_key_value(&presented)?;
        bool::from(stored.ct_eq(&presented)).then_some(*consumer)
    }

    /// The identity of `consumer`, authenticated by `token` when it used one.
    fn identity(&self, consumer: usize, token: Option<&jwt::Verified>) -> Identity {
        let headers = &self.consumers[consumer];
        Identity {
            consumer,
            consumer_id: headers.id_text.clone(),
            user_id: token.and_then(|t| t.subject.clone()),
            scopes: token.map_or_else(|| headers.scopes.clone(), |t| t.scopes.clone()),
            anonymous: false,
            claims: token.map(|t| t.claims.clone()),
        }
    }

    /// Sets the identity headers of an upstream request (any client-sent
    /// copies are already gone).
    pub fn add_identity_headers(&self, identity: &Identity, headers: &mut http::HeaderMap) {
        let consumer = &self.consumers[identity.consumer];
        headers.insert(CONSUMER_ID, consumer.id.clone());
        headers.insert(CONSUMER_USERNAME, consumer.username.clone());
        // A token's subject, when the token has one (left out if it cannot
        // be a header value, never replaced by the consumer's id); else custom_id.
        let user_id = match &identity.user_id {
            Some(sub) => HeaderValue::from_str(sub).ok(),
            None => consumer.custom_id.clone(),
        };
        if let Some(user_id) = user_id {
            headers.insert(USER_ID, user_id);
        }
        if !identity.scopes.is_empty()
            && let Ok(scopes) = HeaderValue::from_str(&identity.scopes.join(" "))
        {
            headers.insert(SCOPES, scopes);
        }
        if identity.anonymous {
            headers.insert(ANONYMOUS, HeaderValue::from_static("true"));
        }
    }
}

/// The API key a request presents: the policy's header, else its query
/// parameter. A header that is not visible ASCII is presented, and wrong.
fn api_key(policy: &KeyAuthPolicy, parts: &Parts) -> Option<Result<String, ()>> {
    if let Some(value) = parts.headers.get(policy.header.as_str()) {
        return Some(value.to_str().map(str::to_owned).map_err(drop));
    }
    let name = policy.query.as_deref()?;
    form_urlencoded::parse(parts.uri.query()?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| Ok(v.into_owned()))
}

/// The token of `Authorization: Bearer <token>`.
fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.as_bytes();
    // Byte by byte, as `HeaderValue::to_str` would have it: a header value
    // holds no control byte but tab, so ASCII is visible ASCII.
    if !value.is_ascii() {
        return None;
    }
    let space = memchr::memchr(b' ', value)?;
    let (scheme, token) = (&value[..space], value[space + 1..].trim_ascii());
    let token = std::str::from_utf8(token).ok()?;
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// Removes the credentials of every policy that hides them (`bearer`: the
/// request has a bearer token).
fn hide_credentials(plan: &AuthRules, parts: &mut Parts, bearer: bool) {
    if let Some(policy) = plan.key_auth.as_ref().filter(|p| p.hide_credentials) {
        parts.headers.remove(policy.header.as_str());
        if let Some(name) = &policy.query {
            remove_query_parameter(&mut parts.uri, name);
        }
    }
    if bearer && plan.jwt.as_ref().is_some_and(|rule| rule.hide_credentials) {
        parts.headers.remove(header::AUTHORIZATION);
    }
}

/// `uri` without the query parameter `name` (other parameters untouched).
fn remove_query_parameter(uri: &mut http::Uri, name: &str) {
    let Some(query) = uri.query() else { return };
    let kept: Vec<&str> =
        query.split('&').filter(|pair| form_urlencoded::parse(pair.as_bytes()).next().is_none_or(|(k, _)| k != name)).collect();
    if kept.len() == query.split('&').count() {
        return;
    }
    let path_and_query = if kept.is_empty() { uri.path().to_owned() } else { format!("{}?{}", uri.path(), kept.join("&")) };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    *uri = http::Uri::from_parts(parts).unwrap_or_default();
}

/// `WWW-Authenticate` challenges for a refused request, one per policy.
fn challenges(plan: &AuthRules, presented: bool) -> Vec<HeaderValue> {
    let mut challenges = Vec::new();
    if let Some(policy) = &plan.key_auth {
        let challenge = format!("APIKey realm=\"portico\", header=\"{}\"", policy.header);
        challenges.push(HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("APIKey realm=\"portico\"")));
    }
    if plan.jwt.is_some() {
        challenges.push(HeaderValue::from_static(if presented {
            "Bearer realm=\"portico\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"portico\""
        }));
    }
    challenges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_the_named_query_parameter() {
        let mut uri: http::Uri = "/a?x=1&apikey=secret&y=2".parse().unwrap();
        remove_query_parameter(&mut uri, "apikey");
        assert_eq!(uri, "/a?x=1&y=2");
        let mut uri: http::Uri = "/a?apik%65y=secret".parse().unwrap();
        remove_query_parameter(&mut uri, "apikey");
        assert_eq!(uri, "/a");
        let mut uri: http::Uri = "/a?other=1".parse().unwrap();
        remove_query_parameter(&mut uri, "apikey");
        assert_eq!(uri, "/a?other=1");
    }
}
