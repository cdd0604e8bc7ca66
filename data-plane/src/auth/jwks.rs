//! JSON Web Key Sets of identity providers: fetched by the data plane,
//! held in memory, refreshed in the background and when a token names a
//! key id the set does not have (at most once per [`MIN_REFRESH_INTERVAL`]),
//! and kept as they are when the provider cannot be reached. One set per
//! URL is shared by the runtimes of successive config versions.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};

/// Time between background refreshes.
const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Least time between two fetches (an unknown `kid` never causes more).
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Time a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most keys kept from one document.
const MAX_KEYS: usize = 100;

/// The keys of one JWKS URL, by `kid`.
pub struct Jwks {
    url: String,
    algorithm: jsonwebtoken::Algorithm,
    http: reqwest::Client,
    keys: ArcSwap<HashMap<String, Arc<DecodingKey>>>,
    /// When the last fetch started; held while fetching so callers share one.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    refresher: OnceLock<()>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("url", &self.url).field("keys", &self.keys.load().len()).finish()
    }
}

impl Jwks {
    pub fn new(url: &str, algorithm: jsonwebtoken::Algorithm, http: reqwest::Client) -> Self {
        Self {
            url: url.to_owned(),
            algorithm,
            http,
            keys: ArcSwap::default(),
            last_fetch: tokio::sync::Mutex::new(None),
            refresher: OnceLock::new(),
        }
    }

    /// Whether this set serves `url` with `algorithm` (and can be kept across a swap).
    pub fn serves(&self, url: &str, algorithm: jsonwebtoken::Algorithm) -> bool {
        self.url == url && self.algorithm == algorithm
    }

    /// The algorithm the set's keys verify.
    pub fn algorithm(&self) -> jsonwebtoken::Algorithm {
        self.algorithm
    }

    /// The key named `kid`, fetching the set again when it is unknown.
    pub async fn key(self: &Arc<Self>, kid: &str) -> Option<Arc<DecodingKey>> {
        self.start_refresher();
        if let Some(key) = self.keys.load().get(kid) {
            return Some(key.clone());
        }
        self.refresh().await;
        self.keys.load().get(kid).cloned()
    }

    /// The only key of the set, for tokens without `kid`.
    pub async fn only_key(self: &Arc<Self>) -> Option<Arc<DecodingKey>> {
        self.start_refresher();
        if self.keys.load().is_empty() {
            self.refresh().await;
        }
        let keys = self.keys.load();
        if keys.len() == 1 { keys.values().next().cloned() } else { None }
    }

    /// Refreshes in the background for as long as a runtime uses the set.
    fn start_refresher(self: &Arc<Self>) {
        self.refresher.get_or_init(|| {
            let weak: Weak<Self> = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REFRESH_INTERVAL).await;
                    let Some(jwks) = weak.upgrade() else { return };
                    jwks.refresh().await;
                }
            });
        });
    }

    /// Fetches the set unless a fetch started less than
    /// [`MIN_REFRESH_INTERVAL`] ago; keeps the old keys when it fails.
    async fn refresh(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < MIN_REFRESH_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                crate::metrics::jwks_fetched(true);
                self.keys.store(Arc::new(keys));
            }
            Err(reason) => {
                tracing::warn!(url = %self.url, %reason, "JWKS fetch failed; keeping the keys we have");
                crate::metrics::jwks_fetched(false);
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
        let mut response = self.http.get(&self.url).timeout(FETCH_TIMEOUT).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("document larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
        }
        parse(&body, self.algorithm)
    }
}

/// The usable keys of a JWKS document: signing keys with a `kid` whose type
/// fits `algorithm` (and whose own `alg`, when given, is it). Others are skipped.
fn parse(document: &[u8], algorithm: jsonwebtoken::Algorithm) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(document).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    for value in document.keys.into_iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        if jwk.common.key_algorithm.is_some_and(|alg| alg.to_string() != format!("{algorithm:?}")) {
            continue;
        }
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) if key.family() == algorithm.family() => {
                keys.insert(kid, Arc::new(key));
            }
            _ => {}
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_KEY: &str = r#"{"kty":"EC","crv":"P-256","kid":"k1","use":"sig",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn keeps_signing_keys_of_the_right_type_with_a_kid() {
        let no_kid = EC_KEY.replace(r#""kid":"k1","#, "");
        let encryption = EC_KEY.replace(r#""kid":"k1""#, r#""kid":"enc""#).replace(r#""use":"sig""#, r#""use":"enc""#);
        let document = format!(r#"{{"keys":[{EC_KEY},{no_kid},{encryption},{{"kty":"nonsense"}}]}}"#);
        let keys = parse(document.as_bytes(), jsonwebtoken::Algorithm::ES256).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["k1"]);
        assert!(parse(document.as_bytes(), jsonwebtoken::Algorithm::RS256).unwrap().is_empty(), "an EC key never verifies RS256");
        assert!(parse(b"{}", jsonwebtoken::Algorithm::RS256).is_err());
    }
}
