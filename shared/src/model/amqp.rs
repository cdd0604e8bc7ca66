//! HTTP to AMQP 0-9-1 (RabbitMQ): what a config says about a broker and
//! about the messages a route publishes to it. A service of protocol
//! `amqp`/`amqps` names its brokers by [`AmqpTarget`] URLs
//! (`amqp://host:port/vhost`, tried in the order listed) and logs in with
//! its [`BrokerCredentials`], whose password is write-only like a private
//! key. A route's [`AmqpBackend`] says where each request is published
//! (exchange, routing key template) and how (`publish` or `rpc`, delivery
//! mode, `mandatory`, deadline, content type, copied headers). What can be
//! checked without the rest of the config is checked here; that the route's
//! service speaks AMQP, and that its templates fit the route, is
//! [`crate::validate`]'s. Talking to the broker is the data plane's.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Protocol;
use super::default_true;
use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::template::{Scope, Template};
use crate::validate::Validate;
use crate::validate::rules::{MAX_LIST, Result, bounded, in_range, is_token_byte, unique};

/// The longest AMQP short string (an exchange name, a routing key, a
/// virtual host, a content type), in bytes.
pub const MAX_SHORTSTR: usize = 255;
/// The longest wait for a publisher confirm (or an `rpc` reply), in ms.
pub const MAX_TIMEOUT_MS: u32 = 300_000;
/// The wait for a confirm (or reply) when a route gives none, in ms.
pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;
/// The port of an `amqp://` target without one.
pub const AMQP_PORT: u16 = 5672;
/// The port of an `amqps://` target without one.
pub const AMQPS_PORT: u16 = 5671;
/// The virtual host of a target URL without one.
pub const DEFAULT_VHOST: &str = "/";
/// Longest broker username or password, in bytes.
const MAX_LOGIN_LEN: usize = 1_024;

/// Request headers a route may not copy into messages: credentials (the
/// key-auth header by default; a route's own key-auth header is refused
/// where policies are known, in [`crate::validate`]), what describes the
/// HTTP connection or body (`content-*`) rather than the request, the identity headers
/// the gateway sets itself, and RabbitMQ's sender-selected distribution
/// headers (`CC`, `BCC`), which would let a client add routing keys.
const NOT_COPIED: [&str; 16] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "cc",
    "bcc",
    "forwarded",
    "x-forwarded-for",
];

/// Escaped in a vhost of a canonical target URL: all but RFC 3986's
/// unreserved characters (so `/` is `%2F`).
const VHOST_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// How a route hands a request to an AMQP broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpBackend {
    /// The exchange published to: `""` (the default exchange, which routes
    /// by queue name), `amq.topic`, or a name of letters, digits, `-`, `_`,
    /// `.`, `:`, at most 255 bytes.
    pub exchange: String,
    /// The routing key, a template over the request (`order.{path.kind}`;
    /// `{path.*}`, `{query.*}`, `{header.*}`, `{consumer.*}`, `{claim.*}`,
    /// `{request_id}`, and `{body.<field path>}`, a field of the request's
    /// JSON body). Its literal text is at most 255 bytes; so is the
    /// expanded key, checked per request.
    pub routing_key: String,
    /// `publish` (default): answer `202` once the broker confirms; `rpc`:
    /// wait for the reply and answer with it.
    #[serde(default)]
    pub mode: AmqpMode,
    /// Delivery mode 2 (persistent, default) or 1 (transient).
    #[serde(default = "default_true")]
    pub persistent: bool,
    /// Have the broker return a message no queue takes (default `true`):
    /// the request is a `502`, not a silent loss.
    #[serde(default = "default_true")]
    pub mandatory: bool,
    /// The wait for the publisher confirm (`publish`) or the reply (`rpc`),
    /// 1 to 300,000 ms (default 5000); past it, a `504`.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// The message's `content_type` (absent: the request's `Content-Type`,
    /// else `application/octet-stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Request headers copied to message headers (lowercase names); never
    /// credentials (`authorization`, `cookie`, the key-auth header),
    /// hop-by-hop headers, `host`, `content-*`, the identity headers (sent
    /// anyway) or `cc`/`bcc`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
}

/// What a route waits for after publishing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AmqpMode {
    /// Fire and confirm: `202 {"message_id"}` after the publisher confirm.
    #[default]
    Publish,
    /// Request/reply over RabbitMQ's direct reply-to: the reply is the answer.
    Rpc,
}

fn default_timeout_ms() -> u32 {
    DEFAULT_TIMEOUT_MS
}

impl AmqpBackend {
    /// The routing key template, parsed (it was checked when the config
    /// was written).
    pub fn routing_key_template(&self) -> std::result::Result<Template, String> {
        Template::parse_in(&self.routing_key, Scope::Message)
    }
}

impl Validate for AmqpBackend {
    fn normalize_and_validate(&mut self) -> std::result::Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        errors.check(exchange_name(&self.exchange));
        if let Some(template) = errors.check(super::policy::transform::template_in("routing_key", &self.routing_key, Scope::Message)) {
            let literal: usize = template.literals().map(str::len).sum();
            if literal > MAX_SHORTSTR {
                errors.add(ConfigError::invalid(
                    "routing_key",
                    format!("its literal text is {literal} bytes; a routing key is at most {MAX_SHORTSTR}"),
                ));
            }
        }
        errors.check(in_range("timeout_ms", self.timeout_ms, 1, MAX_TIMEOUT_MS));
        if let Some(content_type) = &self.content_type {
            errors.check(media_type(content_type));
        }
        if errors.check(bounded("headers", self.headers.len(), MAX_LIST)).is_some() {
            let before = errors.count();
            for (i, header) in self.headers.iter_mut().enumerate() {
                header.make_ascii_lowercase();
                errors.check(copied_header(&format!("headers[{i}]"), header));
            }
            if errors.count() == before {
                errors.check(unique("headers", &self.headers));
            }
        }
        errors.finish()
    }
}

/// `""`, or a name RabbitMQ accepts: letters, digits, `-_.:`, at most 255 bytes.
fn exchange_name(exchange: &str) -> Result {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_.:".contains(&b);
    if exchange.len() > MAX_SHORTSTR || !exchange.bytes().all(allowed) {
        return Err(ConfigError::invalid(
            "exchange",
            format!(
                "'{exchange}' is not an exchange name (up to {MAX_SHORTSTR} letters, digits, '-', '_', '.', ':'; \"\" is the default exchange)"
            ),
        ));
    }
    Ok(())
}

/// `type/subtype`, optionally with parameters, in visible ASCII and spaces.
fn media_type(content_type: &str) -> Result {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let token = |part: &str| !part.is_empty() && part.bytes().all(is_token_byte);
    let well_formed = essence.split_once('/').is_some_and(|(kind, subtype)| token(kind) && token(subtype));
    if !well_formed || content_type.len() > MAX_SHORTSTR || !content_type.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(ConfigError::invalid(
            "content_type",
            format!("'{content_type}' is not a media type (`type/subtype`, optionally with parameters, at most {MAX_SHORTSTR} bytes)"),
        ));
    }
    Ok(())
}

/// A request header a route may copy into its messages.
fn copied_header(field: &str, header: &str) -> Result {
    if header.is_empty() || !header.bytes().all(is_token_byte) {
        return Err(ConfigError::invalid(field, format!("'{header}' is not a valid header name")));
    }
    if NOT_COPIED.contains(&header) || header.starts_with("content-") {
        return Err(ConfigError::invalid(field, format!("'{header}' may not be copied into a message")));
    }
    if super::grpc::IDENTITY_HEADERS.contains(&header) || header.starts_with("x-consumer-") {
        return Err(ConfigError::invalid(field, format!("'{header}' is an identity header, always set by the gateway")));
    }
    Ok(())
}

/// A broker address of an `amqp`/`amqps` service, as its target URL gives
/// it: `amqp://host[:port][/vhost]`. The vhost is the URL's path after the
/// first `/`, percent-decoded (`%2F` is `/`); none, or an empty one, is
/// the default vhost `/`. The canonical URL always has the port and the
/// vhost, escaped: `amqp://rabbit:5672/%2F`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpTarget {
    /// Whether the connection is TLS (`amqps`).
    pub tls: bool,
    /// Host name or IP address, lowercase (an IPv6 address in brackets).
    pub host: String,
    pub port: u16,
    /// The virtual host, decoded.
    pub vhost: String,
}

impl AmqpTarget {
    /// Reads a target URL of a service of `protocol`; the error is a
    /// message for the URL's field.
    pub fn parse(url: &str, protocol: Protocol) -> std::result::Result<Self, String> {
        let scheme = protocol.scheme();
        let example = format!("{scheme}://10.0.0.5:{}/%2F", if protocol.is_tls() { AMQPS_PORT } else { AMQP_PORT });
        let (given, rest) = url.split_once("://").ok_or_else(|| format!("'{url}' must be an absolute URL such as {example}"))?;
        if !given.eq_ignore_ascii_case(scheme) {
            return Err(format!("scheme '{given}' does not match the service's protocol '{scheme}'"));
        }
        let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
        // Anywhere, not only in the authority: a password with a `/` (`amqp://app:1234/pw@host`)
        // would otherwise pass as a port and a vhost, and be stored and shown.
        if rest.contains('@') {
            return Err(
                "must not contain credentials (write an '@' in a vhost as %40): give them in the service's `credentials`".to_owned()
            );
        }
        if path.contains(['?', '#']) || authority.contains(['?', '#']) {
            return Err(format!("must be {scheme}://host[:port][/vhost], without a query or fragment"));
        }
        let authority: http::uri::Authority = authority.parse().map_err(|e| format!("'{url}' is not a valid URL: {e}"))?;
        if authority.host().is_empty() {
            return Err("needs a host".to_owned());
        }
        let port = if authority.as_str().len() > authority.host().len() {
            authority.port_u16().filter(|p| *p != 0).ok_or_else(|| "the port must be 1 to 65535".to_owned())?
        } else if protocol.is_tls() {
            AMQPS_PORT
        } else {
            AMQP_PORT
        };
        let vhost = vhost(path.strip_prefix('/').unwrap_or_default())?;
        Ok(Self { tls: protocol.is_tls(), host: authority.host().to_ascii_lowercase(), port, vhost })
    }

    /// The canonical URL: scheme, host, port and escaped vhost.
    pub fn url(&self) -> String {
        let scheme = if self.tls { Protocol::Amqps.scheme() } else { Protocol::Amqp.scheme() };
        format!("{scheme}://{}:{}/{}", self.host, self.port, utf8_percent_encode(&self.vhost, VHOST_ESCAPED))
    }
}

/// The vhost of a target URL's path (after its first `/`), decoded.
fn vhost(escaped: &str) -> std::result::Result<String, String> {
    if escaped.contains('/') {
        return Err("a vhost is one path segment: write a '/' inside it as %2F".to_owned());
    }
    let decoded =
        percent_decode_str(escaped).decode_utf8().map_err(|_| "the vhost is not UTF-8 once percent-decoded".to_owned())?.into_owned();
    if decoded.len() > MAX_SHORTSTR || decoded.chars().any(char::is_control) {
        return Err(format!("the vhost must be at most {MAX_SHORTSTR} bytes without control characters"));
    }
    Ok(if decoded.is_empty() { DEFAULT_VHOST.to_owned() } else { decoded })
}

/// How a service of protocol `amqp`/`amqps` logs in to its brokers (SASL
/// PLAIN). The password is write-only: the admin API and exports never
/// show it, and a write without it keeps the stored one, for the same
/// `username` and only while every target was already a target (so the
/// password cannot be sent to a new broker by someone who never knew it).
/// Snapshots carry it: data planes need it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerCredentials {
    pub username: String,
    /// Write-only (see the type's doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Never prints the password (logs of a config must not leak it).
impl fmt::Debug for BrokerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerCredentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Validate for BrokerCredentials {
    fn normalize_and_validate(&mut self) -> std::result::Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        let login = |field: &str, value: &str, empty_ok: bool| {
            if (value.is_empty() && !empty_ok) || value.len() > MAX_LOGIN_LEN || value.contains('\0') {
                return Err(ConfigError::invalid(field, format!("must be 1 to {MAX_LOGIN_LEN} bytes without NUL")));
            }
            Ok(())
        };
        errors.check(login("username", &self.username, false));
        if let Some(password) = &self.password {
            errors.check(login("password", password, true));
        }
        errors.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;

    fn errors_of(json: &str) -> Vec<String> {
        let mut amqp: AmqpBackend = from_json(json.as_bytes()).unwrap();
        amqp.normalize_and_validate().map_or_else(|e| e.iter().map(|e| e.field().to_owned()).collect(), |()| Vec::new())
    }

    #[test]
    fn defaults_are_a_persistent_mandatory_publish_within_five_seconds() {
        let mut amqp: AmqpBackend = from_json(br#"{"exchange":"","routing_key":"orders","headers":["X-Tenant"]}"#).unwrap();
        amqp.normalize_and_validate().unwrap();
        assert_eq!((amqp.mode, amqp.persistent, amqp.mandatory, amqp.timeout_ms), (AmqpMode::Publish, true, true, 5_000));
        assert_eq!((amqp.content_type, amqp.headers), (None, vec!["x-tenant".to_owned()]), "header names are lowercased");
        assert_eq!(from_json::<AmqpBackend>(br#"{"exchange":"","routing_key":"k","mode":"call"}"#).unwrap_err().field(), "mode");
        assert_eq!(from_json::<AmqpBackend>(br#"{"routing_key":"k"}"#).unwrap_err().field(), "exchange");
    }

    #[test]
    fn refuses_bad_names_keys_limits_and_headers_naming_each() {
        let long = "k".repeat(256);
        assert_eq!(
            errors_of(&format!(r#"{{"exchange":"a b","routing_key":"{long}","timeout_ms":0,"content_type":"json"}}"#)),
            ["exchange", "routing_key", "timeout_ms", "content_type"]
        );
        assert_eq!(errors_of(r#"{"exchange":"x","routing_key":"a.{path.}","timeout_ms":300001}"#), ["routing_key", "timeout_ms"]);
        assert_eq!(errors_of(r#"{"exchange":"x","routing_key":"{header.x-consumer-id}"}"#), ["routing_key"], "what the gateway writes");
        let refused = r#"["x-ok","Authorization","cookie","x-api-key","te","content-type","x-consumer-id","CC","bad header","X-OK"]"#;
        assert_eq!(
            errors_of(&format!(r#"{{"exchange":"x","routing_key":"k","headers":{refused}}}"#)),
            ["headers[1]", "headers[2]", "headers[3]", "headers[4]", "headers[5]", "headers[6]", "headers[7]", "headers[8]"]
        );
        assert_eq!(errors_of(r#"{"exchange":"x","routing_key":"k","headers":["x-ok","X-OK"]}"#), ["headers[1]"]);
        let fine = format!(
            r#"{{"exchange":"amq.topic","routing_key":"{}.{{path.kind}}.{{body.order.items[0].sku}}","mode":"rpc","timeout_ms":300000,"content_type":"application/json; charset=utf-8"}}"#,
            "k".repeat(250)
        );
        assert!(errors_of(&fine).is_empty(), "255 literal bytes, body fields, a media type with parameters");
        assert_eq!(errors_of(r#"{"exchange":"x","routing_key":"{body.items[*].id}"}"#), ["routing_key"], "one value per variable");
    }

    #[test]
    fn target_urls_default_the_port_and_vhost_and_name_the_vhost_escaped() {
        let read = |url: &str, protocol| AmqpTarget::parse(url, protocol).map(|t| (t.url(), t.vhost));
        for url in ["amqp://Rabbit", "amqp://rabbit/", "amqp://rabbit:5672/%2F", "amqp://rabbit:5672/%2f", "AMQP://rabbit:5672"] {
            assert_eq!(read(url, Protocol::Amqp), Ok(("amqp://rabbit:5672/%2F".to_owned(), "/".to_owned())), "{url}");
        }
        assert_eq!(read("amqps://[::1]/orders", Protocol::Amqps), Ok(("amqps://[::1]:5671/orders".to_owned(), "orders".to_owned())));
        assert_eq!(read("amqp://h:1/a%20b%2Fc", Protocol::Amqp), Ok(("amqp://h:1/a%20b%2Fc".to_owned(), "a b/c".to_owned())));
        for (url, message) in [
            ("amqp://guest:guest@h/", "must not contain credentials"),
            ("amqp://app:1234/s3cret@rabbit", "must not contain credentials"),
            ("amqp://app:pa/ss@rabbit", "must not contain credentials"),
            ("amqps://h", "scheme 'amqps' does not match"),
            ("amqp://h/a/b", "a vhost is one path segment"),
            ("amqp://h:0/", "the port must be 1 to 65535"),
            ("amqp://h/?heartbeat=10", "without a query"),
            ("amqp://h/%FF", "not UTF-8"),
            ("rabbit:5672", "must be an absolute URL such as amqp://10.0.0.5:5672/%2F"),
        ] {
            let error = read(url, Protocol::Amqp).unwrap_err();
            assert!(error.contains(message), "{url}: {error}");
        }
    }

    #[test]
    fn credentials_never_print_their_password() {
        let credentials = BrokerCredentials { username: "app".into(), password: Some("s3cret".into()) };
        assert!(!format!("{credentials:?}").contains("s3cret"));
        let mut empty = BrokerCredentials { username: String::new(), password: Some("\0".into()) };
        let fields: Vec<String> = empty.normalize_and_validate().unwrap_err().iter().map(|e| e.field().to_owned()).collect();
        assert_eq!(fields, ["username", "password"]);
    }
}
