//! JWT helpers for tests: fixed test key pairs (`test-support/keys`),
//! minting tokens, and a test identity provider serving a JWKS document
//! that a test can change or take offline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const RSA_PRIVATE: &str = include_str!("../keys/rsa.pem");
pub const RSA_PUBLIC: &str = include_str!("../keys/rsa.pub.pem");
pub const RSA2_PRIVATE: &str = include_str!("../keys/rsa2.pem");
pub const RSA2_PUBLIC: &str = include_str!("../keys/rsa2.pub.pem");
pub const EC_PRIVATE: &str = include_str!("../keys/ec.pem");
pub const EC_PUBLIC: &str = include_str!("../keys/ec.pub.pem");
pub const ED_PRIVATE: &str = include_str!("../keys/ed25519.pem");
pub const ED_PUBLIC: &str = include_str!("../keys/ed25519.pub.pem");

/// Seconds since the epoch.
pub fn now() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs())
        .expect("time fits i64")
}

/// The signing key for `alg` from a PEM private key (or an HMAC secret).
pub fn encoding_key(alg: Algorithm, key: &str) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(key.as_bytes()),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(key.as_bytes()).expect("EC test key"),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(key.as_bytes()).expect("Ed25519 test key"),
        _ => EncodingKey::from_rsa_pem(key.as_bytes()).expect("RSA test key"),
    }
}

/// A token with `claims`, signed with `key` for `alg`, naming `kid`.
pub fn mint(alg: Algorithm, key: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key(alg, key)).expect("mint a token")
}

/// The public JWK of an RSA or EC private key, named `kid`.
pub fn jwk(alg: Algorithm, private_pem: &str, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(alg, private_pem), alg).expect("JWK of a test key");
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).expect("JWK serializes")
}

/// A JWKS document of `keys`.
pub fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

/// An identity provider serving a JWKS document at `/jwks`.
pub struct TestIdp {
    pub addr: SocketAddr,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestIdp {
    pub async fn start(document: &Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the test IdP");
        let addr = listener.local_addr().expect("IdP address");
        let document = Arc::new(Mutex::new(document.to_string()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counter) = (document.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (served, counter) = (served.clone(), counter.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = served.lock().expect("IdP document lock").clone();
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = StatusCode::OK;
                            response.headers_mut().insert("content-type", "application/json".parse().expect("static header"));
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, document, fetches, task }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    /// Serves `document` from now on.
    pub fn publish(&self, document: &Value) {
        *self.document.lock().expect("IdP document lock") = document.to_string();
    }

    /// How many times the document was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Stops answering (connections are refused from now on).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
