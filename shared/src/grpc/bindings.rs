//! The HTTP bindings of gRPC methods: for each method of the selected
//! services, its `google.api.http` rule and `additional_bindings` (one
//! level), or, for a method without a rule, `POST /pkg.Service/Method`
//! with the whole body as the request. Every rule is checked against the
//! method's messages (path variables are existing, non-repeated scalar
//! fields; `body` and `response_body` existing top-level fields) and
//! against the other rules (two that would match the same requests
//! collide). Every mistake is reported, each naming its method and rule.
//! What a binding does to a request is the data plane's business.

use std::collections::HashMap;
use std::fmt;

use prost_reflect::{Cardinality, DescriptorPool, DynamicMessage, ExtensionDescriptor, Kind, MessageDescriptor, MethodDescriptor, Value};

use super::http_rule::{PathTemplate, Shape};

/// How many messages go each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamingKind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
}

impl StreamingKind {
    pub fn of(method: &MethodDescriptor) -> Self {
        match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => Self::Unary,
            (false, true) => Self::ServerStreaming,
            (true, false) => Self::ClientStreaming,
            (true, true) => Self::Bidi,
        }
    }

    /// The client sends a stream of messages.
    pub fn client_streams(self) -> bool {
        matches!(self, Self::ClientStreaming | Self::Bidi)
    }

    /// The server answers with a stream of messages.
    pub fn server_streams(self) -> bool {
        matches!(self, Self::ServerStreaming | Self::Bidi)
    }
}

/// The HTTP method a binding answers: one, or any (`custom` kind `*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MethodMatch {
    Any,
    Only(http::Method),
}

impl MethodMatch {
    pub fn matches(&self, method: &http::Method) -> bool {
        match self {
            Self::Any => true,
            Self::Only(only) => only == method,
        }
    }

    /// Whether some request method is answered by both.
    pub fn overlaps(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Only(one), Self::Only(other)) => one == other,
            _ => true,
        }
    }
}

impl fmt::Display for MethodMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Only(method) => f.write_str(method.as_str()),
        }
    }
}

/// Where the request body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodySelector {
    /// No body (`body` omitted): fields come from the path and the query.
    None,
    /// `body: "*"`: the body is the request message, but for path fields.
    All,
    /// `body: "field"`: the body is that top-level field (proto name).
    Field(String),
}

/// One HTTP binding of a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub method: MethodMatch,
    pub template: PathTemplate,
    pub body: BodySelector,
    /// The top-level response field (proto name) that is the whole response.
    pub response_body: Option<String>,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.template)
    }
}

/// A method and every way HTTP reaches it.
#[derive(Debug, Clone)]
pub struct MethodBindings {
    pub method: MethodDescriptor,
    /// `/pkg.Service/Method`, the gRPC request path.
    pub grpc_path: String,
    pub kind: StreamingKind,
    /// The method declares `idempotency_level` `IDEMPOTENT` or `NO_SIDE_EFFECTS`.
    pub idempotent: bool,
    /// The rule first, then its additional bindings; the default `POST` alone when it has no rule.
    pub bindings: Vec<Binding>,
}

/// A rule (or service) that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{method}{}: {message}", rule.as_ref().map(|rule| format!(" (rule {rule})")).unwrap_or_default())]
pub struct BindingError {
    /// The method's full name (`pkg.Service.Method`), or the service's when it is missing.
    pub method: String,
    /// `GET /v1/{id}`, when the error is a rule's.
    pub rule: Option<String>,
    pub message: String,
}

/// Two bindings, of `first` and `second`, that match the same requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision<T> {
    pub first: T,
    pub second: T,
    /// The second binding, as written.
    pub rule: String,
}

/// The bindings of every method of `services` (full names) in `pool`, or
/// every mistake found in them.
pub fn method_bindings<S: AsRef<str>>(pool: &DescriptorPool, services: &[S]) -> Result<Vec<MethodBindings>, Vec<BindingError>> {
    let http = pool.get_extension_by_name("google.api.http");
    let mut methods = Vec::new();
    let mut errors = Vec::new();
    for service_name in services {
        let service_name = service_name.as_ref();
        let Some(service) = pool.get_service_by_name(service_name) else {
            errors.push(BindingError { method: service_name.to_owned(), rule: None, message: "no such service in the descriptors".into() });
            continue;
        };
        for method in service.methods() {
            match bindings_of(&method, http.as_ref()) {
                Ok(bindings) => methods.push(MethodBindings {
                    grpc_path: format!("/{}/{}", service.full_name(), method.name()),
                    kind: StreamingKind::of(&method),
                    idempotent: idempotent(&method),
                    method,
                    bindings,
                }),
                Err(mut method_errors) => errors.append(&mut method_errors),
            }
        }
    }
    let all = methods.iter().flat_map(|method| method.bindings.iter().map(move |binding| (method.method.full_name(), binding)));
    for collision in find_collisions(all) {
        errors.push(BindingError {
            method: collision.second.to_owned(),
            rule: Some(collision.rule),
            message: format!("matches the same requests as a rule of {}", collision.first),
        });
    }
    if errors.is_empty() { Ok(methods) } else { Err(errors) }
}

/// Every pair of bindings that match the same requests, each named by
/// what `items` pairs it with (a method, a route), in input order.
pub fn find_collisions<'b, T: Clone>(items: impl IntoIterator<Item = (T, &'b Binding)>) -> Vec<Collision<T>> {
    let mut seen: HashMap<Shape, Vec<(T, &'b Binding)>> = HashMap::new();
    let mut collisions = Vec::new();
    for (owner, binding) in items {
        let same_shape = seen.entry(binding.template.shape()).or_default();
        if let Some((first, _)) = same_shape.iter().find(|(_, earlier)| earlier.method.overlaps(&binding.method)) {
            collisions.push(Collision { first: first.clone(), second: owner.clone(), rule: binding.to_string() });
        }
        same_shape.push((owner, binding));
    }
    collisions
}

fn idempotent(method: &MethodDescriptor) -> bool {
    // `IDEMPOTENCY_UNKNOWN` is 0; `NO_SIDE_EFFECTS` and `IDEMPOTENT` are not.
    method.options().get_field_by_name("idempotency_level").and_then(|level| level.as_enum_number()).is_some_and(|level| level != 0)
}

fn bindings_of(method: &MethodDescriptor, http: Option<&ExtensionDescriptor>) -> Result<Vec<Binding>, Vec<BindingError>> {
    let options = method.options();
    let rule = http.filter(|http| options.has_extension(http)).map(|http| options.get_extension(http));
    let Some(Value::Message(rule)) = rule.as_deref() else {
        let template = PathTemplate::parse(&format!("/{}/{}", method.parent_service().full_name(), method.name()))
            .map_err(|error| vec![BindingError { method: method.full_name().to_owned(), rule: None, message: error.to_string() }])?;
        return Ok(vec![Binding { method: MethodMatch::Only(http::Method::POST), template, body: BodySelector::All, response_body: None }]);
    };
    let mut rules = vec![rule.clone()];
    if let Some(Value::List(additional)) = rule.get_field_by_name("additional_bindings").as_deref() {
        rules.extend(additional.iter().filter_map(|value| value.as_message().cloned()));
    }
    let mut bindings = Vec::with_capacity(rules.len());
    let mut errors = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        if index > 0
            && rule.get_field_by_name("additional_bindings").as_deref().and_then(Value::as_list).is_some_and(|list| !list.is_empty())
        {
            errors.push(BindingError {
                method: method.full_name().to_owned(),
                rule: pattern(rule).ok().map(|(kind, path)| format!("{kind} {path}")),
                message: "additional_bindings may not nest".into(),
            });
        }
        match binding(method, rule) {
            Ok(binding) => bindings.push(binding),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() { Ok(bindings) } else { Err(errors) }
}

/// The HTTP method (or `*`) and path of a rule.
fn pattern(rule: &DynamicMessage) -> Result<(String, String), String> {
    for method in ["get", "put", "post", "delete", "patch"] {
        if rule.has_field_by_name(method) {
            return Ok((method.to_ascii_uppercase(), string_field(rule, method)));
        }
    }
    match rule.get_field_by_name("custom").as_deref().and_then(Value::as_message) {
        Some(custom) if rule.has_field_by_name("custom") => Ok((string_field(custom, "kind"), string_field(custom, "path"))),
        _ => Err("the rule has no pattern (get, put, post, delete, patch or custom)".into()),
    }
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    message.get_field_by_name(name).as_deref().and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn binding(method: &MethodDescriptor, rule: &DynamicMessage) -> Result<Binding, BindingError> {
    let error = |rule: Option<String>, message: String| BindingError { method: method.full_name().to_owned(), rule, message };
    let (kind, path) = pattern(rule).map_err(|message| error(None, message))?;
    let rule_name = Some(format!("{kind} {path}"));
    let http_method = if kind == "*" {
        MethodMatch::Any
    } else {
        MethodMatch::Only(
            http::Method::from_bytes(kind.as_bytes()).map_err(|_| error(rule_name.clone(), format!("'{kind}' is not an HTTP method")))?,
        )
    };
    let template = PathTemplate::parse(&path).map_err(|template_error| error(rule_name.clone(), template_error.to_string()))?;
    let input = method.input();
    for field_path in template.field_paths() {
        check_path_variable(&input, field_path).map_err(|message| error(rule_name.clone(), message))?;
    }
    let body = match string_field(rule, "body").as_str() {
        "" => BodySelector::None,
        "*" => BodySelector::All,
        field => {
            if input.get_field_by_name(field).is_none() {
                return Err(error(rule_name, format!("body field '{field}' is not a field of {}", input.full_name())));
            }
            BodySelector::Field(field.to_owned())
        }
    };
    if StreamingKind::of(method).client_streams() && body == BodySelector::None {
        return Err(error(rule_name, "a client-streaming method needs a body to stream its messages in".into()));
    }
    let response_body = match string_field(rule, "response_body") {
        field if field.is_empty() => None,
        field => {
            let output = method.output();
            if output.get_field_by_name(&field).is_none() {
                return Err(error(rule_name, format!("response_body field '{field}' is not a field of {}", output.full_name())));
            }
            Some(field)
        }
    };
    Ok(Binding { method: http_method, template, body, response_body })
}

/// A path variable names a singular scalar field (string, number, bool or
/// enum), through singular message fields.
fn check_path_variable(input: &MessageDescriptor, field_path: &str) -> Result<(), String> {
    let mut message = input.clone();
    let mut names = field_path.split('.').peekable();
    while let Some(name) = names.next() {
        let field = message
            .get_field_by_name(name)
            .ok_or_else(|| format!("path variable '{field_path}': '{name}' is not a field of {}", message.full_name()))?;
        if field.cardinality() == Cardinality::Repeated {
            return Err(format!("path variable '{field_path}': '{name}' is repeated"));
        }
        match (field.kind(), names.peek()) {
            (Kind::Message(inner), Some(_)) => message = inner,
            (_, Some(_)) => return Err(format!("path variable '{field_path}': '{name}' is not a message")),
            (Kind::Message(_) | Kind::Bytes, None) => {
                return Err(format!("path variable '{field_path}' must be a string, number, bool or enum field"));
            }
            (_, None) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::grpc::compile;

    fn pool(source: &str) -> DescriptorPool {
        let files = BTreeMap::from([("test/svc.proto".to_owned(), source.to_owned())]);
        compile::decode(&compile::compile(&files).unwrap_or_else(|error| panic!("{error}"))).unwrap()
    }

    const HEADER: &str = r#"syntax = "proto3";
package test;
import "google/api/annotations.proto";
message Shelf { string name = 1; int64 id = 2; }
message Book { string name = 1; Shelf shelf = 2; repeated string tags = 3; bytes cover = 4; }
message GetBookRequest { string name = 1; Book book = 2; repeated string ids = 3; bytes raw = 4; Shelf shelf = 5; int32 page = 6; }
"#;

    fn service(methods: &str) -> DescriptorPool {
        pool(&format!("{HEADER}service Library {{\n{methods}\n}}\n"))
    }

    fn errors(methods: &str) -> Vec<String> {
        method_bindings(&service(methods), &["test.Library"]).unwrap_err().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reads_rules_bodies_and_additional_bindings() {
        let pool = service(
            r#"rpc GetBook(GetBookRequest) returns (Book) {
  option (google.api.http) = {
    get: "/v1/{name=shelves/*/books/*}"
    response_body: "shelf"
    additional_bindings { post: "/v1/books:get" body: "*" }
    additional_bindings { custom: { kind: "HEAD" path: "/v1/{book.shelf.name}" } }
    additional_bindings { patch: "/v1/{book.name}" body: "book" }
  };
}
rpc Stream(stream GetBookRequest) returns (stream Book) { option (google.api.http) = { custom: { kind: "*" path: "/v1/stream" } body: "*" }; }
rpc Plain(Shelf) returns (Shelf) { option idempotency_level = NO_SIDE_EFFECTS; }"#,
        );
        let methods = method_bindings(&pool, &["test.Library"]).unwrap();
        let get = &methods[0];
        assert_eq!((get.grpc_path.as_str(), get.kind, get.idempotent), ("/test.Library/GetBook", StreamingKind::Unary, false));
        let rules: Vec<String> = get.bindings.iter().map(ToString::to_string).collect();
        assert_eq!(
            rules,
            ["GET /v1/{name=shelves/*/books/*}", "POST /v1/books:get", "HEAD /v1/{book.shelf.name}", "PATCH /v1/{book.name}"]
        );
        assert_eq!(get.bindings[0].response_body.as_deref(), Some("shelf"));
        assert_eq!(get.bindings[0].body, BodySelector::None);
        assert_eq!(get.bindings[1].body, BodySelector::All);
        assert_eq!(get.bindings[1].response_body, None, "additional bindings have their own response_body");
        assert_eq!(get.bindings[3].body, BodySelector::Field("book".into()));

        let stream = &methods[1];
        assert_eq!(stream.kind, StreamingKind::Bidi);
        assert_eq!(stream.bindings[0].method, MethodMatch::Any);

        let plain = &methods[2];
        assert!(plain.idempotent);
        assert_eq!(plain.bindings.len(), 1);
        assert_eq!(plain.bindings[0].to_string(), "POST /test.Library/Plain");
        assert_eq!(plain.bindings[0].body, BodySelector::All);
    }

    #[test]
    fn methods_without_annotations_get_the_default_binding() {
        let pool = pool(
            "syntax = \"proto3\";\npackage p;\nmessage M {}\nservice S { rpc Up(stream M) returns (M); rpc Down(M) returns (stream M); }\n",
        );
        let methods = method_bindings(&pool, &["p.S"]).unwrap();
        assert_eq!(methods[0].kind, StreamingKind::ClientStreaming);
        assert_eq!(methods[1].kind, StreamingKind::ServerStreaming);
        assert_eq!(methods[1].bindings[0].to_string(), "POST /p.S/Down");
    }

    #[test]
    fn unknown_services_are_named() {
        let errors: Vec<String> = method_bindings(&service(""), &["test.Nope"]).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(errors, ["test.Nope: no such service in the descriptors"]);
    }

    #[test]
    fn path_variables_must_be_singular_scalars() {
        let errors = errors(
            r#"rpc A(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/a/{missing}" }; }
rpc B(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/b/{ids}" }; }
rpc C(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/c/{book}" }; }
rpc D(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/d/{raw}" }; }
rpc E(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/e/{name.x}" }; }
rpc F(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/f/{book.tags}" }; }
rpc G(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/g/{book.nope}" }; }
rpc H(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/h/{shelf.id}/{page}" }; }"#,
        );
        assert_eq!(
            errors,
            [
                "test.Library.A (rule GET /a/{missing}): path variable 'missing': 'missing' is not a field of test.GetBookRequest",
                "test.Library.B (rule GET /b/{ids}): path variable 'ids': 'ids' is repeated",
                "test.Library.C (rule GET /c/{book}): path variable 'book' must be a string, number, bool or enum field",
                "test.Library.D (rule GET /d/{raw}): path variable 'raw' must be a string, number, bool or enum field",
                "test.Library.E (rule GET /e/{name.x}): path variable 'name.x': 'name' is not a message",
                "test.Library.F (rule GET /f/{book.tags}): path variable 'book.tags': 'tags' is repeated",
                "test.Library.G (rule GET /g/{book.nope}): path variable 'book.nope': 'nope' is not a field of test.Book",
            ]
        );
    }

    #[test]
    fn body_and_response_body_must_name_fields() {
        let errors = errors(
            r#"rpc A(GetBookRequest) returns (Book) { option (google.api.http) = { post: "/a" body: "nope" }; }
rpc B(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/b" response_body: "nope" }; }
rpc C(stream GetBookRequest) returns (Book) { option (google.api.http) = { post: "/c" }; }
rpc D(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/d/{name=**}/x" }; }
rpc E(GetBookRequest) returns (Book) { option (google.api.http) = { custom: { kind: "BAD KIND" path: "/e" } }; }
rpc F(GetBookRequest) returns (Book) { option (google.api.http) = { body: "*" }; }"#,
        );
        assert_eq!(
            errors,
            [
                "test.Library.A (rule POST /a): body field 'nope' is not a field of test.GetBookRequest",
                "test.Library.B (rule GET /b): response_body field 'nope' is not a field of test.Book",
                "test.Library.C (rule POST /c): a client-streaming method needs a body to stream its messages in",
                "test.Library.D (rule GET /d/{name=**}/x): invalid path template '/d/{name=**}/x' at offset 0: '**' may only be the last segment",
                "test.Library.E (rule BAD KIND /e): 'BAD KIND' is not an HTTP method",
                "test.Library.F: the rule has no pattern (get, put, post, delete, patch or custom)",
            ]
        );
    }

    #[test]
    fn colliding_rules_are_refused() {
        let errors = errors(
            r#"rpc A(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/v1/{name}" }; }
rpc B(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/v1/{page}" additional_bindings { post: "/v1/{name}" } }; }
rpc C(GetBookRequest) returns (Book) { option (google.api.http) = { get: "/v1/{name}:cancel" }; }
rpc D(GetBookRequest) returns (Book) { option (google.api.http) = { custom: { kind: "*" path: "/v1/*:cancel" } }; }"#,
        );
        assert_eq!(
            errors,
            [
                "test.Library.B (rule GET /v1/{page}): matches the same requests as a rule of test.Library.A",
                "test.Library.D (rule * /v1/*:cancel): matches the same requests as a rule of test.Library.C",
            ]
        );
    }

    #[test]
    fn collisions_across_owners_respect_methods_and_shapes() {
        let binding = |method: MethodMatch, path: &str| Binding {
            method,
            template: PathTemplate::parse(path).unwrap(),
            body: BodySelector::None,
            response_body: None,
        };
        let get = |path: &str| binding(MethodMatch::Only(http::Method::GET), path);
        let routes = [
            ("route-a", get("/v1/{id}")),
            ("route-b", binding(MethodMatch::Only(http::Method::POST), "/v1/{id}")),
            ("route-c", get("/v1/items")),
            ("route-d", get("/v1/{other}")),
            ("route-e", binding(MethodMatch::Any, "/v1/items")),
        ];
        let collisions = find_collisions(routes.iter().map(|(route, binding)| (*route, binding)));
        assert_eq!(
            collisions,
            [
                Collision { first: "route-a", second: "route-d", rule: "GET /v1/{other}".into() },
                Collision { first: "route-c", second: "route-e", rule: "* /v1/items".into() },
            ]
        );
    }

    #[test]
    fn a_set_without_annotations_has_only_default_bindings() {
        let pool = pool("syntax = \"proto3\";\npackage p;\nmessage M {}\nservice S { rpc Get(M) returns (M); }\n");
        assert!(pool.get_extension_by_name("google.api.http").is_none());
        assert_eq!(method_bindings(&pool, &["p.S"]).unwrap()[0].bindings[0].to_string(), "POST /p.S/Get");
    }
}
