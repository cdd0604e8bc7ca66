//! Header rewriting between client and upstream: hop-by-hop headers out,
//! spoofable identity headers out, `X-Forwarded-*` and `X-Request-Id` in.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::error::ProxyError;
use crate::http1::{disguised, same_but_separators, strip_prefix_but_separators};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// The lengths of the [`HOP_BY_HOP`] names.
const HOP_BY_HOP_LENGTHS: [usize; 6] = [2, 7, 10, 16, 17, 19];

/// Headers, besides the hop-by-hop ones, that frame a message or that the
/// gateway sets: dropped, like those, when a client spells them with other
/// separators ([`strip_spoofed`]).
const FRAMING_AND_FORWARDING: [&str; 10] = [
    "content-length",
    "host",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "x-request-id",
];

/// Identity headers only the gateway may set, in their canonical form.
pub const IDENTITY: [&str; 5] = portico_shared::model::grpc::IDENTITY_HEADERS;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Most header fields a request may send.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of header names and values a request may send.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The socket peer of a client connection, its address written out as a
/// header value once per connection rather than once per request.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    header: HeaderValue,
    /// The TLS session, on the TLS listener.
    pub tls: Option<crate::access_log::TlsInfo>,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        let header = HeaderValue::from_str(&addr.ip().to_string()).expect("an IP address is a valid header value");
        Self { addr, header, tls: None }
    }

    /// The peer of a TLS connection.
    pub fn with_tls(self, tls: crate::access_log::TlsInfo) -> Self {
        Self { tls: Some(tls), ..self }
    }
}

/// Appends `ip` as `Display` writes it; an IPv4 address digit by digit, at
/// a tenth of `Display`'s cost (rate-limit keys and access log lines write
/// one per request).
pub fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Removes hop-by-hop headers and those the `Connection` header names.
/// With `upgrade`, keeps `Connection: upgrade` and `Upgrade` so a WebSocket
/// (or other) upgrade can pass through. One pass over the names finds
/// which are there (removing by name costs a hash and a probe each).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(index) = hop_by_hop_index(name) {
            present |= 1 << index;
        }
    }
    // `Connection` (the first) goes with its values, read as it is removed.
    if present & 1 != 0
        && let Entry::Occupied(connection) = headers.entry(header::CONNECTION)
    {
        let mut named = Vec::new();
        for value in connection.remove_entry_mult().1 {
            named.extend(
                value
                    .as_bytes()
                    .split(|b| *b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|token| !["close", "keep-alive", "upgrade"].iter().any(|common| token.eq_ignore_ascii_case(common.as_bytes())))
                    .filter_map(|name| HeaderName::from_bytes(name).ok()),
            );
        }
        for name in named {
            headers.remove(name);
        }
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << index) != 0 {
            headers.remove(name);
        }
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// Where `name` is in [`HOP_BY_HOP`]: only a name as long as one of them
/// is compared with them (most are not, and each comparison costs).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    if !HOP_BY_HOP_LENGTHS.contains(&name.as_str().len()) {
        return None;
    }
    HOP_BY_HOP.iter().position(|hop| hop == name)
}

/// `websocket` when the request asks to upgrade to it (`Connection:
/// upgrade` plus `Upgrade: websocket`). Other upgrades (notably `h2c`, which
/// would open a tunnel past routing) are not passed on: the request goes
/// upstream as a plain one.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    // `Upgrade` first: most requests have none, and then `Connection` is not looked up.
    let websocket = headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    (websocket && lists_token(headers, header::CONNECTION, "upgrade")).then(|| HeaderValue::from_static("websocket"))
}

/// Whether the comma-separated field `name` (all its lines) lists `token`, in any case.
pub fn lists_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| crate::http1::value_lists(value.as_bytes(), token))
}

/// Refuses request heads with more than [`MAX_HEADERS`] fields or
/// [`MAX_HEADER_BYTES`] of names and values, as a JSON `431`.
pub fn check_limits(headers: &HeaderMap) -> Result<(), ProxyError> {
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(ProxyError::HeadersTooLarge { max_fields: MAX_HEADERS, max_bytes: MAX_HEADER_BYTES });
    }
    Ok(())
}

/// Removes client-sent headers that pose as one only the gateway or HTTP
/// framing may set: every copy of an identity header, whatever its case and
/// whether it uses `-`, `_` or `.` (`X_Consumer_ID`, `x.user.id`), any other
/// `x-consumer-*` header, and a hop-by-hop or [`FRAMING_AND_FORWARDING`]
/// name spelled with other separators (`Proxy_Authorization`,
/// `X_Forwarded__For`), which servers that map `_` or `.`
/// to `-` (CGI-style frameworks) would take for the real one. Other names
/// with `_` pass (unlike nginx's default, which drops them all: APIs do use
/// headers such as `api_key`).
pub fn strip_spoofed(headers: &mut HeaderMap) {
    let spoofed = |name: &HeaderName| {
        let name = name.as_str().as_bytes();
        // Every identity name starts with `x` (so does a spelling of one
        // with other separators): most names are compared with none of them.
        (name.first() == Some(&b'x')
            && (IDENTITY.iter().any(|identity| same_but_separators(name, identity.as_bytes()))
                || strip_prefix_but_separators(name, b"x-consumer-").is_some()))
            || (disguised(name)
                && HOP_BY_HOP
                    .iter()
                    .map(HeaderName::as_str)
                    .chain(FRAMING_AND_FORWARDING)
                    .any(|meaningful| same_but_separators(name, meaningful.as_bytes())))
    };
    if !headers.keys().any(spoofed) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| spoofed(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// The fields the gateway sets on a request it sends upstream:
/// `X-Real-IP` (the client: the socket peer, or the address found past
/// trusted proxies), `X-Forwarded-For` (with the socket peer appended),
/// `X-Forwarded-Proto`, `X-Forwarded-Host` (the host the client asked
/// for) and `X-Request-Id`. Kept apart from the request's header map: the
/// HTTP/1 upstream writer writes them after the map's fields
/// ([`Forwarding::write`]), which costs less than five map inserts (a hash
/// and a probe each); other senders insert them ([`Forwarding::insert_into`]).
/// Small (borrowed values), as it rides in every proxied request's future.
#[derive(Debug, Clone)]
pub struct Forwarding<'a> {
    peer: &'a Peer,
    /// The client is not the socket peer, or sent an `X-Forwarded-For` to
    /// append to: the two values then (else both are the peer's address).
    relayed: Option<Box<Relayed>>,
    secure: bool,
    host: Option<&'a HeaderValue>,
    request_id: &'a HeaderValue,
}

/// `X-Real-IP` and `X-Forwarded-For` other than the socket peer's address.
#[derive(Debug, Clone)]
struct Relayed {
    real_ip: Option<HeaderValue>,
    chain: Option<HeaderValue>,
}

static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

impl<'a> Forwarding<'a> {
    /// The fields for a request with `headers` from `client` (`secure`: over
    /// TLS), taking out of `headers` what the client sent of them (its
    /// `X-Forwarded-For` read first, to be appended to) and a client-sent
    /// `Forwarded` (this gateway speaks the `X-Forwarded-*` set).
    pub fn take(
        headers: &mut HeaderMap,
        peer: &'a Peer,
        client: IpAddr,
        secure: bool,
        host: Option<&'a HeaderValue>,
        request_id: &'a HeaderValue,
    ) -> Self {
        // One pass over the names finds which of those the client sent
        // (most send none, and each lookup or removal costs a hash).
        let mut sent = [false; REPLACED.len()];
        for name in headers.keys() {
            if let Some(index) = REPLACED.iter().position(|replaced| replaced == name) {
                sent[index] = true;
            }
        }
        let chained = sent[1]; // `X-Forwarded-For`
        let relayed = (client != peer.addr.ip() || chained).then(|| {
            let real_ip =
                if client == peer.addr.ip() { Some(peer.header.clone()) } else { HeaderValue::from_str(&client.to_string()).ok() };
            let previous: Vec<&str> = headers.get_all(&FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
            let chain = if previous.is_empty() {
                Some(peer.header.clone())
            } else {
                HeaderValue::from_str(&format!("{}, {}", previous.join(", "), peer.addr.ip())).ok()
            };
            Box::new(Relayed { real_ip, chain })
        });
        for (name, _) in REPLACED.iter().zip(sent).filter(|(_, sent)| *sent) {
            headers.remove(name);
        }
        Self { peer, relayed, secure, host, request_id }
    }

    /// The fields as name and value, in the order they go out.
    fn fields(&self) -> impl Iterator<Item = (&'static HeaderName, &HeaderValue)> {
        let (real_ip, chain) = match &self.relayed {
            Some(relayed) => (relayed.real_ip.as_ref(), relayed.chain.as_ref()),
            None => (Some(&self.peer.header), Some(&self.peer.header)),
        };
        let proto = if self.secure { &HTTPS } else { &HTTP };
        let values = [real_ip, chain, Some(proto), self.host, Some(self.request_id)];
        REPLACED.iter().zip(values).filter_map(|(name, value)| Some((name, value?)))
    }

    /// Sets the fields in `headers`.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.fields() {
            headers.insert(name, value.clone());
        }
    }

    /// Writes the fields as HTTP/1 header lines into `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        for (name, value) in self.fields() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The fields a client may send that [`Forwarding`] sets (the first five,
/// in the order it writes them) or drops (`Forwarded`).
static REPLACED: [HeaderName; 6] = [REAL_IP, FORWARDED_FOR, FORWARDED_PROTO, FORWARDED_HOST, REQUEST_ID, header::FORWARDED];

/// The client's address. Without trusted proxies, or when the socket peer
/// is not one of them, it is the peer: a client's own `X-Forwarded-For` is
/// never believed. Behind trusted proxies, `X-Forwarded-For` is walked from
/// the right past trusted hops; the first untrusted address is the client
/// (an entry that does not parse stops the walk at the last trusted hop).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    // `::ffff:10.0.0.1` (a dual-stack socket) is 10.0.0.1.
    let peer = peer.to_canonical();
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers.get_all(&FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let hop = hop.trim();
        let Some(ip) = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())) else {
            return client;
        };
        let ip = ip.to_canonical();
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// The client's request id when it is sensible (1 to 128 of
/// `[A-Za-z0-9._:-]`), otherwise a new random (v4) UUID, drawn from the
/// thread's RNG rather than the OS one (no syscall per request).
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers
        .get(&REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b)))
    {
        return id.clone();
    }
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_bytes(uuid.hyphenated().encode_lower(&mut text).as_bytes()).expect("a UUID is a valid header value")
}

/// Adds `names` (`Origin`, or `x-client, x-app`) to the response's `Vary`,
/// keeping what is there: the names already listed (in any case) are not
/// repeated, nothing is added to `*`, and the existing values and the new
/// names become one line (an empty upstream value is dropped).
pub fn append_vary(headers: &mut HeaderMap, names: &HeaderValue) {
    let existing: Vec<&[u8]> =
        headers.get_all(header::VARY).iter().map(|value| value.as_bytes().trim_ascii()).filter(|value| !value.is_empty()).collect();
    let listed = || existing.iter().filter_map(|value| std::str::from_utf8(value).ok()).flat_map(|value| value.split(',')).map(str::trim);
    if listed().any(|name| name == "*") {
        return;
    }
    let Ok(wanted) = names.to_str() else { return };
    let missing: Vec<&str> =
        wanted.split(',').map(str::trim).filter(|name| !name.is_empty() && !listed().any(|l| l.eq_ignore_ascii_case(name))).collect();
    if missing.is_empty() {
        return;
    }
    let mut joined: Vec<u8> = existing.iter().flat_map(|value| [*value, b", "]).flatten().copied().collect();
    joined.extend_from_slice(missing.join(", ").as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(value) => {
            headers.insert(header::VARY, value);
        }
        Err(_) => {
            if let Ok(value) = HeaderValue::from_str(&missing.join(", ")) {
                headers.append(header::VARY, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hop_by_hop_name_has_a_listed_length() {
        for (index, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(index), "{name}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut h, None);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn keeps_upgrade_headers_for_upgrades() {
        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "WebSocket")]);
        let protocol = upgrade_protocol(&h);
        assert_eq!(protocol.as_ref().unwrap(), "websocket");
        remove_hop_by_hop(&mut h, protocol);
        assert_eq!((h["connection"].to_str().unwrap(), h["upgrade"].to_str().unwrap()), ("upgrade", "websocket"));
        let h2c = headers(&[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")]);
        assert!(upgrade_protocol(&h2c).is_none(), "h2c upgrades are not passed on");
    }

    #[test]
    fn strips_identity_headers_in_every_spelling() {
        let mut h = headers(&[
            ("x-consumer-id", "1"),
            ("X_Consumer_Username", "mallory"),
            ("x.user.id", "0"),
            ("X-SCOPES", "admin"),
            ("x-consumer-custom-id", "9"),
            ("x-user-agent-ish", "kept"),
            ("user-agent", "kept"),
            ("accept-language", "kept"),
        ]);
        strip_spoofed(&mut h);
        let mut kept: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["accept-language", "user-agent", "x-user-agent-ish"]);
    }

    #[test]
    fn strips_framing_and_forwarding_headers_spelled_with_underscores() {
        let mut h = headers(&[
            ("transfer_encoding", "chunked"),
            ("content.length", "5"),
            ("x_forwarded_for", "6.6.6.6"),
            ("x_request_id", "forged"),
            ("transfer---encoding", "chunked"),
            ("x-forwarded__for", "6.6.6.6"),
            ("proxy_authorization", "Basic x"),
            ("x__consumer_foo", "1"),
            ("api_key", "kept"),
            ("content-length", "0"),
        ]);
        strip_spoofed(&mut h);
        let mut kept: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["api_key", "content-length"]);
    }

    #[test]
    fn appends_to_forwarded_for_and_sets_proto_and_host() {
        let mut h = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        let peer = Peer::new("192.0.2.7:5000".parse().unwrap());
        forward(&mut h, &peer, false, Some(&HeaderValue::from_static("api.example.com")));
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert!(h.get("forwarded").is_none());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
    }

    #[test]
    fn a_client_sent_forwarded_host_goes_without_a_host_and_a_first_hop_starts_the_chain() {
        let peer = Peer::new("192.0.2.7:5000".parse().unwrap());
        let mut h = headers(&[("x-forwarded-host", "evil.example"), ("accept", "*/*")]);
        forward(&mut h, &peer, true, None);
        assert!(h.get("x-forwarded-host").is_none());
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["accept"], "*/*");
        let mut h = HeaderMap::new();
        forward(&mut h, &peer, false, None);
        assert_eq!(h.len(), 4, "x-real-ip, x-forwarded-for, x-forwarded-proto and x-request-id: {h:?}");
    }

    /// Sets the forwarding fields of a request from `peer` with `headers`, as the pipeline does.
    fn forward(headers: &mut HeaderMap, peer: &Peer, secure: bool, host: Option<&HeaderValue>) {
        Forwarding::take(headers, peer, peer.addr.ip(), secure, host, &HeaderValue::from_static("id-1")).insert_into(headers);
    }

    #[test]
    fn forwarding_fields_are_taken_from_the_map_and_written_after_it() {
        let peer = Peer::new("192.0.2.7:5000".parse().unwrap());
        let mut h = headers(&[("accept", "*/*"), ("x-request-id", "client-id"), ("x-forwarded-for", "10.0.0.1"), ("x-real-ip", "6.6.6.6")]);
        let (host, id) = (HeaderValue::from_static("api.example.com"), HeaderValue::from_static("id-1"));
        let written = |forwarding: Forwarding<'_>| {
            let mut out = Vec::new();
            forwarding.write(&mut out);
            String::from_utf8(out).unwrap()
        };
        // Behind a trusted proxy, with a chain to append to.
        let client = "198.51.100.1".parse().unwrap();
        let forwarding = Forwarding::take(&mut h, &peer, client, true, Some(&host), &id);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["accept"], "what the client sent of them is taken out");
        assert_eq!(
            written(forwarding),
            "x-real-ip: 198.51.100.1\r\nx-forwarded-for: 10.0.0.1, 192.0.2.7\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: api.example.com\r\nx-request-id: id-1\r\n"
        );
        // The common case: the client is the socket peer and sent none of them.
        let forwarding = Forwarding::take(&mut h, &peer, peer.addr.ip(), false, None, &id);
        assert_eq!(
            written(forwarding),
            "x-real-ip: 192.0.2.7\r\nx-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\nx-request-id: id-1\r\n"
        );
    }

    #[test]
    fn keeps_valid_request_ids_and_replaces_others() {
        assert_eq!(request_id(&headers(&[("x-request-id", "abc-123")])), "abc-123");
        for bad in ["", "has space", &"x".repeat(200)] {
            let id = request_id(&headers(&[("x-request-id", bad)]));
            assert_eq!(id.len(), 36, "{bad:?} was replaced by a UUID");
        }
        assert_eq!(request_id(&HeaderMap::new()).len(), 36);
    }

    #[test]
    fn client_ip_believes_forwarded_for_only_past_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert(FORWARDED_FOR, HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.0.0.2"));
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_ip(peer, &h, &trusted), "203.0.113.9".parse::<IpAddr>().unwrap(), "the first untrusted hop from the right");
        assert_eq!(client_ip(peer, &h, &[]), peer, "no trusted proxies: the socket peer");
        let outsider: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(outsider, &h, &trusted), outsider, "a client's own X-Forwarded-For is ignored");
        h.insert(FORWARDED_FOR, HeaderValue::from_static("garbage, 10.0.0.2"));
        assert_eq!(client_ip(peer, &h, &trusted), "10.0.0.2".parse::<IpAddr>().unwrap());
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_ip(mapped, &h, &trusted), "10.0.0.2".parse::<IpAddr>().unwrap(), "an IPv4-mapped peer is its IPv4 address");
    }

    #[test]
    fn vary_names_are_appended_once_never_replacing_the_upstreams() {
        let vary = |upstream: &[&str], names: &'static str| {
            let mut headers = HeaderMap::new();
            for value in upstream {
                headers.append(header::VARY, HeaderValue::from_str(value).unwrap());
            }
            append_vary(&mut headers, &HeaderValue::from_static(names));
            headers.get_all(header::VARY).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(vary(&["Accept-Encoding, X-Client"], "x-client, x-app"), ["Accept-Encoding, X-Client, x-app"]);
        assert_eq!(vary(&["Accept-Encoding", "Accept-Language"], "Origin"), ["Accept-Encoding, Accept-Language, Origin"]);
        assert_eq!(vary(&["*"], "x-client"), ["*"]);
        assert_eq!(vary(&[""], "Origin"), ["Origin"]);
        assert_eq!(vary(&[], "x-client, x-app"), ["x-client, x-app"]);
    }
}
