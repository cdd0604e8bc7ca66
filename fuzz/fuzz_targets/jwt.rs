//! JWT verification (`auth::jwt::JwtCredentials::verify`) with fixed static
//! keys: an HS256 secret (issuer `hs-issuer`, consumer 0) and two RS256
//! public keys of one issuer told apart by `kid` (`rs-issuer`, `rs-1` for
//! consumer 1 and `rs-2` for consumer 2), behind a `jwt` policy with the
//! default settings (`exp` required, 30 s leeway, no audience).
//!
//! Input (structured, `arbitrary`): the header's `alg`, `kid` and extra
//! fields, the claims (`iss`, `exp`, `nbf`, `aud`, `sub`, `scope`, a
//! duplicated `iss`), who signs (each configured key, a wrong secret, the
//! other RSA key, the RSA public key PEM used as an HMAC secret, garbage)
//! and a last edit of the token's bytes. An input starting `eyJ` is a
//! token as it stands (the seed corpus holds real ones).
//!
//! Properties: nothing panics; a token that verifies carries the `iss` of
//! the credential it was accepted for, and its signature checks out
//! independently (HMAC recomputed with `hmac`; RSA through
//! `jsonwebtoken::crypto::verify`) with that credential's key and
//! algorithm; a well-formed token, signed by the right key with the right
//! `alg` and `kid`, unexpired and unedited, verifies.
#![no_main]

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use libfuzzer_sys::fuzz_target;
use portico_dp::auth::jwt::{JwtCredentials, JwtRule, TokenCache};
use portico_shared::model::{Credential, JwtPolicy};
use serde_json::{Map, Value, json};

const HS_SECRET: &str = "portico-fuzz-hs256-secret-of-32-bytes-or-more";
const RSA_PRIVATE: &str = include_str!("../../test-support/keys/rsa.pem");
const RSA_PUBLIC: &str = include_str!("../../test-support/keys/rsa.pub.pem");
const RSA2_PRIVATE: &str = include_str!("../../test-support/keys/rsa2.pem");
const RSA2_PUBLIC: &str = include_str!("../../test-support/keys/rsa2.pub.pem");

/// A configured key, by consumer index.
struct Key {
    issuer: &'static str,
    kid: Option<&'static str>,
    algorithm: Algorithm,
    public: &'static str,
}

const KEYS: [Key; 3] = [
    Key { issuer: "hs-issuer", kid: None, algorithm: Algorithm::HS256, public: HS_SECRET },
    Key { issuer: "rs-issuer", kid: Some("rs-1"), algorithm: Algorithm::RS256, public: RSA_PUBLIC },
    Key { issuer: "rs-issuer", kid: Some("rs-2"), algorithm: Algorithm::RS256, public: RSA2_PUBLIC },
];

struct Fixture {
    credentials: JwtCredentials,
    rule: JwtRule,
    cache: TokenCache,
    rsa: EncodingKey,
    rsa2: EncodingKey,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let http = reqwest::Client::new();
    let mut credentials = JwtCredentials::default();
    for (consumer, key) in KEYS.iter().enumerate() {
        let mut credential = json!({
            "name": format!("jwt-{consumer}"), "consumer": format!("c{consumer}"), "type": "jwt",
            "issuer": key.issuer, "algorithm": format!("{:?}", key.algorithm), "key_id": key.kid,
        });
        let material = if key.algorithm == Algorithm::HS256 { "secret" } else { "public_key" };
        credential[material] = json!(key.public);
        let credential: Credential = serde_json::from_value(credential).expect("a credential");
        credentials.add(&credential, consumer, &mut Vec::new(), &http, &mut Vec::new()).expect("the credential compiles");
    }
    let policy: JwtPolicy = serde_json::from_value(json!({})).expect("the default jwt policy");
    Fixture {
        credentials,
        rule: JwtRule::new(0, &policy),
        cache: TokenCache::new(0),
        rsa: EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("RSA test key"),
        rsa2: EncodingKey::from_rsa_pem(RSA2_PRIVATE.as_bytes()).expect("RSA test key"),
    }
});

#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum Alg {
    Hs256,
    Rs256,
    Hs384,
    Rs512,
    Es256,
    None,
    Missing,
    Other(String),
}

#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum Text {
    Hs,
    Rs1,
    Rs2,
    Other(String),
    Number(i64),
    List(Vec<String>),
}

#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum Time {
    Future(u16),
    Past(u16),
    Raw(i64),
    Float(f64),
    Text(String),
}

#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum Signer {
    Hs,
    Rs1,
    Rs2,
    WrongSecret,
    /// HMAC keyed with the RSA public key: the classic algorithm confusion.
    RsPublicAsSecret,
    Garbage(Vec<u8>),
    Empty,
}

#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum Edit {
    Replace { at: u16, byte: u8 },
    Truncate(u16),
    Insert { at: u16, text: String },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    alg: Alg,
    kid: Option<Text>,
    extra_header: Option<(String, Text)>,
    iss: Option<Text>,
    duplicate_iss: Option<Text>,
    exp: Option<Time>,
    nbf: Option<Time>,
    aud: Option<Text>,
    sub: Option<Text>,
    scope: Option<Text>,
    signer: Signer,
    edit: Option<Edit>,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn text(t: &Text) -> Value {
    match t {
        Text::Hs => json!("hs-issuer"),
        Text::Rs1 | Text::Rs2 => json!("rs-issuer"),
        Text::Other(s) => json!(s),
        Text::Number(n) => json!(n),
        Text::List(l) => json!(l),
    }
}

fn kid(t: &Text) -> Value {
    match t {
        Text::Rs1 => json!("rs-1"),
        Text::Rs2 => json!("rs-2"),
        other => text(other),
    }
}

fn time(t: &Time) -> Value {
    match t {
        Time::Future(s) => json!(now() + 1 + i64::from(*s)),
        Time::Past(s) => json!(now() - 1 - i64::from(*s)),
        Time::Raw(n) => json!(n),
        Time::Float(f) => json!(f),
        Time::Text(s) => json!(s),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hmac(secret: &str, message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn token(input: &Input, fixture: &Fixture) -> String {
    let mut header = Map::new();
    let alg = match &input.alg {
        Alg::Hs256 => Some("HS256"),
        Alg::Rs256 => Some("RS256"),
        Alg::Hs384 => Some("HS384"),
        Alg::Rs512 => Some("RS512"),
        Alg::Es256 => Some("ES256"),
        Alg::None => Some("none"),
        Alg::Missing => None,
        Alg::Other(s) => Some(s.as_str()),
    };
    if let Some(alg) = alg {
        header.insert("alg".into(), json!(alg));
    }
    header.insert("typ".into(), json!("JWT"));
    if let Some(k) = &input.kid {
        header.insert("kid".into(), kid(k));
    }
    if let Some((name, value)) = &input.extra_header {
        header.insert(name.clone(), text(value));
    }
    let mut claims = Map::new();
    let fields = [("iss", input.iss.as_ref().map(text)), ("aud", input.aud.as_ref().map(text)), ("sub", input.sub.as_ref().map(text))];
    for (name, value) in fields.into_iter().chain([
        ("scope", input.scope.as_ref().map(text)),
        ("exp", input.exp.as_ref().map(time)),
        ("nbf", input.nbf.as_ref().map(time)),
    ]) {
        if let Some(value) = value {
            claims.insert(name.into(), value);
        }
    }
    let mut payload = Value::Object(claims).to_string();
    if let Some(iss) = &input.duplicate_iss {
        // serde_json keeps the last of duplicated keys; a second parser might not.
        payload.pop();
        if payload.len() > 1 {
            payload.push(',');
        }
        payload.push_str(&format!("\"iss\":{}}}", text(iss)));
    }
    let signing_input = format!("{}.{}", b64(Value::Object(header).to_string().as_bytes()), b64(payload.as_bytes()));
    let message = signing_input.as_bytes();
    let signature = match &input.signer {
        Signer::Hs => b64(&hmac(HS_SECRET, message)),
        Signer::WrongSecret => b64(&hmac("another-secret-of-32-bytes-or-more-bytes", message)),
        Signer::RsPublicAsSecret => b64(&hmac(RSA_PUBLIC, message)),
        Signer::Rs1 => jsonwebtoken::crypto::sign(message, &fixture.rsa, Algorithm::RS256).expect("RSA signs"),
        Signer::Rs2 => jsonwebtoken::crypto::sign(message, &fixture.rsa2, Algorithm::RS256).expect("RSA signs"),
        Signer::Garbage(bytes) => b64(bytes),
        Signer::Empty => String::new(),
    };
    let mut token = format!("{signing_input}.{signature}").into_bytes();
    match &input.edit {
        None => {}
        Some(Edit::Replace { at, byte }) => {
            let len = token.len();
            token[usize::from(*at) % len] = *byte;
        }
        Some(Edit::Truncate(at)) => token.truncate(usize::from(*at)),
        Some(Edit::Insert { at, text }) => {
            let at = usize::from(*at) % (token.len() + 1);
            token.splice(at..at, text.bytes());
        }
        Some(Edit::Raw(raw)) => token = raw.clone().into_bytes(),
    }
    String::from_utf8_lossy(&token).into_owned()
}

/// The token's signature checks out with `key`, computed apart from the
/// code under test where the crate allows.
fn signed_by(token: &str, key: &Key) -> bool {
    let Some((message, signature)) = token.rsplit_once('.') else { return false };
    if message.matches('.').count() != 1 {
        return false;
    }
    match key.algorithm {
        Algorithm::HS256 => URL_SAFE_NO_PAD.decode(signature).is_ok_and(|sig| sig == hmac(key.public, message.as_bytes())),
        Algorithm::RS256 => {
            let public = DecodingKey::from_rsa_pem(key.public.as_bytes()).expect("RSA public key");
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), &public, Algorithm::RS256).unwrap_or(false)
        }
        other => unreachable!("no {other:?} key is configured"),
    }
}

/// The input is a token that must verify: well formed, signed by the key
/// its `iss` and `kid` name, with that key's `alg`, unexpired, unedited.
fn must_verify(input: &Input) -> bool {
    let signer_matches = matches!(
        (&input.signer, &input.iss, &input.kid, &input.alg),
        (Signer::Hs, Some(Text::Hs), None | Some(Text::Other(_)), Alg::Hs256)
            | (Signer::Rs1, Some(Text::Rs1 | Text::Rs2), Some(Text::Rs1), Alg::Rs256)
            | (Signer::Rs2, Some(Text::Rs1 | Text::Rs2), Some(Text::Rs2), Alg::Rs256)
    );
    let string = |t: &Option<Text>| matches!(t, None | Some(Text::Other(_) | Text::Hs | Text::Rs1 | Text::Rs2));
    signer_matches
        && input.edit.is_none()
        && input.extra_header.is_none()
        && input.duplicate_iss.is_none()
        && matches!(input.exp, Some(Time::Future(_)))
        && matches!(input.nbf, None | Some(Time::Past(_)))
        && string(&input.aud)
        && string(&input.sub)
        && string(&input.scope)
}

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    // A seed or mutation that looks like a JWT is taken as the token itself
    // (the corpus keeps real tokens); anything else describes one.
    let (token, input) = if data.starts_with(b"eyJ") {
        (String::from_utf8_lossy(data).into_owned(), None)
    } else {
        let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) else { return };
        (token(&input, fixture), Some(input))
    };
    let result = futures::executor::block_on(fixture.credentials.verify(&fixture.rule, &token, &fixture.cache));
    match &result {
        Ok(verified) => {
            let key = &KEYS[verified.consumer];
            let issuer = verified.claims.get("iss").and_then(Value::as_str);
            assert_eq!(issuer, Some(key.issuer), "accepted for consumer {} with another issuer: {token}", verified.consumer);
            assert!(signed_by(&token, key), "accepted for consumer {} but not signed by its key: {token}", verified.consumer);
        }
        Err(reason) => {
            if let Some(input) = input.filter(must_verify) {
                panic!("a good token was refused ({reason}): {token}\n{input:?}");
            }
        }
    }
});
