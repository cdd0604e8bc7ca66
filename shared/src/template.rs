//! Request templates: the `{path.id}` strings in route rewrites, aggregate
//! calls and AMQP routing keys, parsed once when the config is written and
//! expanded per request with values the caller looks up. This module only
//! parses, checks and expands strings; it does no I/O and does not know
//! where values come from (the data plane implements [`Lookup`]) nor which
//! path parameters a route declares (config validation checks
//! [`Template::sources`] against the route).
//!
//! # Syntax
//!
//! A template is literal text with variables in braces:
//! `/v2/users/{path.id}/orders?tenant={header.x-tenant}`.
//!
//! | variable | value |
//! |---|---|
//! | `{path.<name>}` | the route path parameter `{name}` (`[A-Za-z_][A-Za-z0-9_]*`) |
//! | `{query.<name>}` | the first value of the query parameter `name` (visible ASCII except `{` `}`) |
//! | `{header.<name>}` | the request header `name` (an HTTP token, case-insensitive) |
//! | `{consumer.id}`, `{consumer.username}`, `{consumer.custom_id}` | the authenticated consumer's fields |
//! | `{claim.<name>}` | the verified JWT's claim `name`: everything after `claim.`, dots included |
//! | `{request_id}` | the request's id, as sent back in `X-Request-Id` |
//!
//! In an AMQP routing key ([`Scope::Message`]) one more form exists:
//! `{body.<field path>}`, a field of the request's JSON body (a field path
//! as below, without `[*]`: `{body.order.kind}`, `{body.items[0].sku}`).
//!
//! In an aggregate call ([`crate::model::Aggregate`], parsed with
//! [`Scope::Aggregate`]) three more forms exist:
//!
//! | variable | value |
//! |---|---|
//! | `{<call>.<field path>}` | a field of an earlier call's JSON answer: `{profile.segment}`, `{orders.items[0].id}` |
//! | `{<call>.<path with [*]>\|join:<sep>}` | every value the path reaches, joined: `{orders.items[*].id\|join:,}` |
//! | `{item}`, `{item.<field path>}` | the current item of a `for_each` call |
//! | `{body}` | the client's request body, verbatim (a call's `body` only) |
//!
//! A field path is keys joined by `.` with `[n]` (an index) or `[*]` (every
//! element, only with `|join:`) after any of them; an answer that is an
//! array is read from an index (`{orders[0].id}`, `{orders[*].id|join:,}`). A call's name is any
//! word that is not one of the request sources above (nor `item`, `body`).
//! A value that is JSON `null`, absent, an object or an array is absent; a
//! number or boolean is its JSON text.
//!
//! `{{` and `}}` write a literal `{` and `}`. An unknown variable, an
//! unclosed `{`, a lone `}`, an empty `{}` or a control character is refused
//! when the config is written, naming the field. A template is at most
//! 2048 bytes with at most 32 variables.
//!
//! # Expansion
//!
//! Values are escaped for where they land; the literal text is used as
//! written.
//! - **In a path** each value becomes (part of) one segment: everything but
//!   letters, digits and `-._~!$&'()*,=:@` is percent-encoded byte by byte
//!   from UTF-8 with uppercase hex (`/` is `%2F`, space `%20`, `é` `%C3%A9`,
//!   and `%`, `?`, `#`, `\`, `;`, `+` are encoded too). A value of `.` or
//!   `..` is refused rather than encoded: upstreams that normalise paths
//!   (Portico's own router among them) decode `%2E` and would still resolve
//!   it as a dot segment.
//! - **In a query** each value is one form component: everything but
//!   letters, digits and `*-._` is percent-encoded, space as `%20` (never
//!   `+`), so a value cannot add a parameter.
//! - **In a header** values are not encoded, but one holding a control
//!   character other than tab (CR, LF, NUL, …) is refused.
//! - **In a JSON body** each value is the content of a JSON string (quotes,
//!   backslashes and control characters escaped; write the quotes
//!   yourself), but `{body}` is inserted as it came.
//! - **A path with a query** (`/orders?user={consumer.custom_id}`): values
//!   before the first literal `?` are path segments, values after it query
//!   components.
//!
//! A variable with no value in the request is an error for the client
//! (`400`), never an empty segment or a literal `null` upstream; in a path an
//! empty value counts as absent.
//!
//! The escaping uses the `percent-encoding` crate with this module's own
//! byte sets; only the choice of sets is Portico's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The longest template accepted, in bytes.
pub const MAX_LEN: usize = 2048;
/// The most variables one template may hold.
pub const MAX_VARIABLES: usize = 32;

/// The variable forms, for error messages.
const VALID_FORMS: &str = "{path.<name>}, {query.<name>}, {header.<name>}, {claim.<name>}, \
     {consumer.id}, {consumer.username}, {consumer.custom_id}, {request_id}";

/// Bytes left as they are in a path segment: RFC 3986 unreserved, and the
/// `pchar` sub-delims and `:@` that no common server gives a meaning inside
/// a segment. `;` (path parameters) and `+` (space to some frameworks) are
/// encoded; `NON_ALPHANUMERIC` already covers controls, and non-ASCII bytes
/// are always encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// The WHATWG application/x-www-form-urlencoded set: everything but ASCII
/// alphanumerics and `*-._`. Space goes through it as `%20`.
const QUERY_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');

/// Which variables a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The request's own values (transforms).
    Request,
    /// Those, and fields of the request's JSON body (AMQP routing keys).
    Message,
    /// Those, and the answers of an aggregate's other calls, the current
    /// `for_each` item and the client's body.
    Aggregate,
}

/// The most steps a field path may have.
pub const MAX_FIELD_STEPS: usize = 16;

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// An object member.
    Key(String),
    /// An array element.
    Index(usize),
    /// Every array element (`[*]`).
    Each,
}

/// Where a value sits in a JSON document: `items[*].id`, `address.city`;
/// empty for the document itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldPath(pub Vec<Step>);

impl FieldPath {
    /// Parses `a.b[0].c[*]` (or `[*].id`, from an array); the error says
    /// what is wrong. The empty text is the document itself.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        if text.is_empty() {
            return Ok(Self(steps));
        }
        for (i, key) in text.split('.').enumerate() {
            let (name, mut rest) = key.find('[').map_or((key, ""), |at| key.split_at(at));
            // Only the first step may be an index: `[0].id` reads an array answer.
            let leading_index = i == 0 && name.is_empty() && !rest.is_empty();
            if !leading_index {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                    return Err(format!(
                        "'{text}' is not a field path (keys of letters, digits, `_` or `-` joined by `.`, with `[n]` or `[*]`)"
                    ));
                }
                steps.push(Step::Key(name.to_owned()));
            }
            while !rest.is_empty() {
                let Some((inside, after)) = rest.strip_prefix('[').and_then(|r| r.split_once(']')) else {
                    return Err(format!("'{text}' has a `[` that is not `[n]` or `[*]`"));
                };
                steps.push(match inside {
                    "*" => Step::Each,
                    n => Step::Index(n.parse().map_err(|_| format!("'{text}' has `[{n}]`; an index is a number or `*`"))?),
                });
                rest = after;
            }
        }
        if steps.len() > MAX_FIELD_STEPS {
            return Err(format!("'{text}' has more than {MAX_FIELD_STEPS} steps"));
        }
        Ok(Self(steps))
    }

    /// Splits `orders.items[*].id` (or `orders[0]`, or `orders`) into the
    /// call's name and the path within its answer.
    pub fn of_call(text: &str) -> Result<(&str, Self), String> {
        let at = text.find(['.', '[']).unwrap_or(text.len());
        let (call, rest) = text.split_at(at);
        Ok((call, Self::parse(rest.strip_prefix('.').unwrap_or(rest))?))
    }

    /// The path as written after a call's name: `.items[0]`, `[*].id`, or nothing.
    pub fn after_name(&self) -> String {
        match self.0.first() {
            Some(Step::Key(_)) => format!(".{self}"),
            _ => self.to_string(),
        }
    }

    /// Whether the path has a `[*]`, so it reaches many values.
    pub fn has_each(&self) -> bool {
        self.0.contains(&Step::Each)
    }

    /// The values of `document` the path reaches, in document order.
    pub fn select<'v>(&self, document: &'v serde_json::Value) -> Vec<&'v serde_json::Value> {
        let mut found = vec![document];
        for step in &self.0 {
            found = found
                .into_iter()
                .flat_map(|value| -> Vec<&serde_json::Value> {
                    match step {
                        Step::Key(key) => value.get(key.as_str()).into_iter().collect(),
                        Step::Index(i) => value.get(*i).into_iter().collect(),
                        Step::Each => value.as_array().map(|items| items.iter().collect()).unwrap_or_default(),
                    }
                })
                .collect();
        }
        found
    }
}

/// The path as written (`items[*].id`).
impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => f.write_str(key)?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
                Step::Each => f.write_str("[*]")?,
            }
        }
        Ok(())
    }
}

/// A JSON value as a template value: a string as is, a number or boolean
/// as its JSON text; `null`, objects and arrays have none.
pub fn json_scalar(value: &serde_json::Value) -> Option<Cow<'_, str>> {
    match value {
        serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
        serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
        serde_json::Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// The most values one `|join:` joins.
pub const MAX_JOINED: usize = 100;

/// The words that name request sources, which no aggregate call may be named.
pub const RESERVED_WORDS: [&str; 8] = ["path", "query", "header", "consumer", "claim", "request_id", "item", "body"];

/// Where a template variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A route path parameter: `{path.id}` for the route path `/users/{id}`.
    Path(String),
    /// A query parameter of the client's request.
    Query(String),
    /// A request header, its name in lowercase.
    Header(String),
    /// The authenticated consumer's id.
    ConsumerId,
    /// The authenticated consumer's username.
    ConsumerUsername,
    /// The authenticated consumer's `custom_id`.
    ConsumerCustomId,
    /// A claim of the verified JWT.
    Claim(String),
    /// The request's id (`X-Request-Id`).
    RequestId,
    /// A field of another aggregate call's JSON answer (`{profile.segment}`).
    Call { call: String, field: FieldPath },
    /// The current item of a `for_each` call, or a field of it.
    Item(FieldPath),
    /// The client's request body, verbatim.
    Body,
    /// A field of the client's JSON request body (`{body.order.kind}`).
    BodyField(FieldPath),
}

impl Source {
    /// The source a variable names, without its braces: `path.id`,
    /// `header.X-Tenant` (stored lowercase), `request_id`. `None` for
    /// anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Self::parse_or_explain(name, Scope::Request).ok()
    }

    /// Like [`Source::parse`] in `scope`, with the reason a name is refused.
    fn parse_or_explain(name: &str, scope: Scope) -> Result<Self, String> {
        if scope == Scope::Aggregate {
            let word = &name[..name.find(['.', '[']).unwrap_or(name.len())];
            if name == "body" {
                return Ok(Self::Body);
            }
            if word == "item" || (!RESERVED_WORDS.contains(&word) && is_identifier(word)) {
                let (_, field) = FieldPath::of_call(name).map_err(|e| format!("template variable `{{{name}}}`: {e}"))?;
                if word == "item" {
                    return Ok(Self::Item(field));
                }
                if field.0.is_empty() {
                    return Err(format!(
                        "template variable `{{{name}}}`: name a field of call '{word}' (`{{{word}.<field>}}`), not its whole answer"
                    ));
                }
                return Ok(Self::Call { call: word.to_owned(), field });
            }
        }
        if scope == Scope::Message
            && let Some(path) = name.strip_prefix("body.")
        {
            let field = FieldPath::parse(path).map_err(|e| format!("template variable `{{{name}}}`: {e}"))?;
            if field.0.is_empty() || field.has_each() {
                return Err(format!(
                    "template variable `{{{name}}}`: name one field of the JSON body (`{{body.order.kind}}`), without `[*]`"
                ));
            }
            return Ok(Self::BodyField(field));
        }
        match name {
            "request_id" => return Ok(Self::RequestId),
            "consumer.id" => return Ok(Self::ConsumerId),
            "consumer.username" => return Ok(Self::ConsumerUsername),
            "consumer.custom_id" => return Ok(Self::ConsumerCustomId),
            _ => {}
        }
        let refused = |rule: &str| Err(format!("template variable `{{{name}}}`: {rule}"));
        match name.split_once('.') {
            Some(("path", n)) if is_identifier(n) => Ok(Self::Path(n.to_owned())),
            Some(("path", _)) => refused("a path parameter name is a letter or `_` followed by letters, digits or `_`"),
            Some(("query", n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}') => {
                Ok(Self::Query(n.to_owned()))
            }
            Some(("query", _)) => refused("a query parameter name is one or more visible ASCII characters"),
            Some(("header", n)) if !n.is_empty() && n.bytes().all(is_tchar) => Ok(Self::Header(n.to_ascii_lowercase())),
            Some(("header", _)) => refused("a header name is one or more HTTP token characters (letters, digits, `!#$%&'*+-.^_`|~`)"),
            Some(("claim", n)) if !n.is_empty() && !n.chars().any(|c| c == '{' || c == '}' || c.is_control()) => {
                Ok(Self::Claim(n.to_owned()))
            }
            Some(("claim", _)) => refused("a claim name is one or more characters other than braces"),
            Some(("consumer", _)) => refused("a consumer has `id`, `username` and `custom_id`"),
            _ => Err(format!("unknown template variable `{{{name}}}`; the valid forms are {VALID_FORMS}")),
        }
    }

    /// The source in words, for the client's error message: `path
    /// parameter 'id'`, `query parameter 'q'`, `header 'x-tenant'`,
    /// `claim 'sub'`, `consumer custom_id`, `request id`.
    pub fn describe(&self) -> String {
        match self {
            Self::Path(name) => format!("path parameter '{name}'"),
            Self::Query(name) => format!("query parameter '{name}'"),
            Self::Header(name) => format!("header '{name}'"),
            Self::ConsumerId => "consumer id".to_owned(),
            Self::ConsumerUsername => "consumer username".to_owned(),
            Self::ConsumerCustomId => "consumer custom_id".to_owned(),
            Self::Claim(name) => format!("claim '{name}'"),
            Self::RequestId => "request id".to_owned(),
            Self::Call { call, field } => format!("field '{field}' of call '{call}'"),
            Self::Item(field) if field.0.is_empty() => "current item".to_owned(),
            Self::Item(field) => format!("field '{field}' of the current item"),
            Self::Body => "request body".to_owned(),
            Self::BodyField(field) => format!("field '{field}' of the JSON request body"),
        }
    }

    /// Whether the value exists only after authentication (a consumer field
    /// or a JWT claim), so a route using it needs an auth policy.
    pub fn needs_identity(&self) -> bool {
        matches!(self, Self::ConsumerId | Self::ConsumerUsername | Self::ConsumerCustomId | Self::Claim(_))
    }
}

/// The variable's name as written between braces (`path.id`,
/// `header.x-tenant`); [`Source::parse`] reads it back.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(name) => write!(f, "path.{name}"),
            Self::Query(name) => write!(f, "query.{name}"),
            Self::Header(name) => write!(f, "header.{name}"),
            Self::ConsumerId => f.write_str("consumer.id"),
            Self::ConsumerUsername => f.write_str("consumer.username"),
            Self::ConsumerCustomId => f.write_str("consumer.custom_id"),
            Self::Claim(name) => write!(f, "claim.{name}"),
            Self::RequestId => f.write_str("request_id"),
            Self::Call { call, field } => write!(f, "{call}{}", field.after_name()),
            Self::Item(field) => write!(f, "item{}", field.after_name()),
            Self::Body => f.write_str("body"),
            Self::BodyField(field) => write!(f, "body.{field}"),
        }
    }
}

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How expanded values are escaped where they land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Inside one path segment: percent-encoded so a value is never more
    /// than one segment; empty values and `.`/`..` refused.
    PathSegment,
    /// One query name or value: percent-encoded, space as `%20`.
    QueryComponent,
    /// A header value: as is, but control characters other than tab refused.
    HeaderValue,
    /// A path that may carry a query: [`Escape::PathSegment`] before the
    /// first literal `?`, [`Escape::QueryComponent`] after it.
    PathAndQuery,
    /// The content of a JSON string; `{body}` goes in verbatim.
    JsonString,
    /// Words of an AMQP routing key: as is, but a value must be one word
    /// (not empty; no `.`, which separates words, nor `*` or `#`, a topic
    /// binding's wildcards; no control character), so a client's value can
    /// never reach a routing the route did not write.
    RoutingKeyWord,
}

/// Why a value cannot be placed where its variable stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// A control character other than tab, in a header value.
    ControlInHeader,
    /// `.` or `..`, as (part of) a path segment.
    DotSegment,
    /// A `.`, `*`, `#` or control character in a word of a routing key.
    NotOneWord,
}

/// Why a template could not be expanded for a request: a client error
/// (`400`), whose message names the variable but never echoes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError<'t> {
    /// The request has no value for this variable (or, in a path, an empty one).
    #[error("the request has no value for {}", .0.describe())]
    Absent(&'t Source),
    /// The value exists but cannot be placed there.
    #[error("{}", unfit_message(.0, .1))]
    Invalid(&'t Source, Unfit),
}

fn unfit_message(source: &Source, unfit: &Unfit) -> String {
    match unfit {
        Unfit::ControlInHeader => format!("the {} has a control character, which cannot be sent in a header", source.describe()),
        Unfit::DotSegment => format!("the {} is '.' or '..', which cannot be a path segment", source.describe()),
        Unfit::NotOneWord => {
            format!("the {} is not one word of a routing key (it has '.', '*', '#' or a control character)", source.describe())
        }
    }
}

/// Where expansion finds values. `None` is an absent value.
pub trait Lookup {
    fn value(&self, source: &Source) -> Option<Cow<'_, str>>;

    /// Every value of a source whose path has `[*]` (for `|join:`), in
    /// order; `None` or an empty list when there are none. A lookup without
    /// such sources has each one's single value.
    fn values(&self, source: &Source) -> Option<Vec<Cow<'_, str>>> {
        self.value(source).map(|value| vec![value])
    }
}

/// A fixed set of values (tests, or a caller that gathers them first).
impl<S: BuildHasher> Lookup for HashMap<Source, String, S> {
    fn value(&self, source: &Source) -> Option<Cow<'_, str>> {
        self.get(source).map(|v| Cow::Borrowed(v.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    /// Text copied as is, `{{`/`}}` already made single braces.
    Literal(String),
    /// A source, with the separator of `|join:` when it has one.
    Variable(Source, Option<String>),
}

/// A parsed template: its text as written, and that text as literal and
/// variable parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template: `{{` and `}}` are literal braces, `{src.name}` a
    /// variable (see the module doc). The error is a message; the caller
    /// adds the field.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_in(text, Scope::Request)
    }

    /// Parses a template that may use the variables of `scope`.
    pub fn parse_in(text: &str, scope: Scope) -> Result<Self, String> {
        if text.len() > MAX_LEN {
            return Err(format!("the template is {} bytes long; at most {MAX_LEN} are allowed", text.len()));
        }
        let position = |byte: usize| text[..byte].chars().count() + 1;
        if let Some((at, c)) = text.char_indices().find(|(_, c)| c.is_control()) {
            return Err(format!("the template has a control character (U+{:04X}) at position {}", u32::from(c), position(at)));
        }
        let bytes = text.as_bytes();
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut variables = 0;
        // `run` is where the current stretch of plain text began.
        let (mut i, mut run) = (0, 0);
        while i < bytes.len() {
            match (bytes[i], bytes.get(i + 1)) {
                (b'{', Some(b'{')) | (b'}', Some(b'}')) => {
                    literal.push_str(&text[run..=i]);
                    i += 2;
                    run = i;
                }
                (b'}', _) => {
                    return Err(format!(
                        "the template has a `}}` at position {} that closes nothing (write `}}}}` for a literal brace)",
                        position(i)
                    ));
                }
                (b'{', _) => {
                    let Some(len) = text[i + 1..].find('}') else {
                        return Err(format!(
                            "the template has a `{{` at position {} that is never closed (write `{{{{` for a literal brace)",
                            position(i)
                        ));
                    };
                    let name = &text[i + 1..i + 1 + len];
                    if let Some(inner) = name.find('{') {
                        return Err(format!(
                            "the template has a `{{` at position {} inside a variable (write `{{{{` for a literal brace)",
                            position(i + 1 + inner)
                        ));
                    }
                    if name.is_empty() {
                        return Err(format!(
                            "the template has an empty `{{}}` at position {}; the valid forms are {VALID_FORMS}",
                            position(i)
                        ));
                    }
                    let (name, join) = match name.split_once("|join:") {
                        Some((name, separator)) if scope == Scope::Aggregate => (name, Some(join_separator(name, separator)?)),
                        _ => (name, None),
                    };
                    let source = Source::parse_or_explain(name, scope)?;
                    let many = matches!(&source, Source::Call { field, .. } | Source::Item(field) if field.has_each());
                    if many != join.is_some() {
                        return Err(if many {
                            format!(
                                "template variable `{{{name}}}` reaches many values: join them (`{{{name}|join:,}}`) or fan out with for_each"
                            )
                        } else {
                            format!("template variable `{{{name}}}` has one value; `|join:` needs a path with `[*]`")
                        });
                    }
                    variables += 1;
                    if variables > MAX_VARIABLES {
                        return Err(format!("the template has more than {MAX_VARIABLES} variables"));
                    }
                    literal.push_str(&text[run..i]);
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Variable(source, join));
                    i += len + 2;
                    run = i;
                }
                _ => i += 1,
            }
        }
        literal.push_str(&text[run..]);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self { text: text.to_owned(), parts })
    }

    /// The literal text between the variables.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Literal(text) => Some(text.as_str()),
            Part::Variable(..) => None,
        })
    }

    /// The sources joined with `|join:`.
    pub fn joins(&self) -> impl Iterator<Item = &Source> {
        self.parts.iter().filter_map(|part| match part {
            Part::Variable(source, Some(_)) => Some(source),
            _ => None,
        })
    }

    /// The variables in order of appearance, repeats included.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.parts.iter().filter_map(|part| match part {
            Part::Variable(source, _) => Some(source),
            Part::Literal(_) => None,
        })
    }

    /// Expands the template with values from `lookup`, escaped for
    /// `escape`. The error is the first variable that has no value or whose
    /// value cannot be placed there.
    pub fn expand<'t>(&'t self, lookup: &impl Lookup, escape: Escape) -> Result<String, ExpandError<'t>> {
        let mut out = String::with_capacity(self.text.len() + 16);
        let mut here = match escape {
            Escape::PathAndQuery => Escape::PathSegment,
            other => other,
        };
        for part in &self.parts {
            match part {
                Part::Literal(text) => {
                    out.push_str(text);
                    if escape == Escape::PathAndQuery && text.contains('?') {
                        here = Escape::QueryComponent;
                    }
                }
                Part::Variable(source, join) => {
                    let unfit = |unfit| match unfit {
                        None => ExpandError::Absent(source),
                        Some(unfit) => ExpandError::Invalid(source, unfit),
                    };
                    match join {
                        // Verbatim: the caller decides where a body may go.
                        None if *source == Source::Body => out.push_str(&lookup.value(source).ok_or(ExpandError::Absent(source))?),
                        None => {
                            let value = lookup.value(source).ok_or(ExpandError::Absent(source))?;
                            push_escaped(&mut out, &value, here).map_err(unfit)?;
                        }
                        Some(separator) => {
                            let values = lookup.values(source).filter(|values| !values.is_empty()).ok_or(ExpandError::Absent(source))?;
                            for (i, value) in values.iter().enumerate() {
                                if i > 0 {
                                    out.push_str(separator);
                                }
                                push_escaped(&mut out, value, here).map_err(unfit)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Appends `value` escaped for `escape` (never `PathAndQuery`). `Err(None)`
/// is a value that counts as absent there.
fn push_escaped(out: &mut String, value: &str, escape: Escape) -> Result<(), Option<Unfit>> {
    match escape {
        Escape::PathSegment | Escape::PathAndQuery => {
            if value.is_empty() {
                return Err(None);
            }
            if value == "." || value == ".." {
                return Err(Some(Unfit::DotSegment));
            }
            out.extend(utf8_percent_encode(value, PATH_SEGMENT));
        }
        Escape::QueryComponent => out.extend(utf8_percent_encode(value, QUERY_COMPONENT)),
        Escape::HeaderValue => {
            if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                return Err(Some(Unfit::ControlInHeader));
            }
            out.push_str(value);
        }
        Escape::RoutingKeyWord => {
            if value.is_empty() {
                return Err(None);
            }
            if value.bytes().any(|b| b.is_ascii_control() || b".*#".contains(&b)) {
                return Err(Some(Unfit::NotOneWord));
            }
            out.push_str(value);
        }
        Escape::JsonString => {
            // serde_json writes it quoted; the quotes are the template's.
            let quoted = serde_json::Value::from(value).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
    }
    Ok(())
}

/// The separator of `{name|join:<separator>}`: 1 to 8 of `,;:+-_.~!*`,
/// which mean nothing to a path or query (no `/`, `?`, `&`, `=`, `#`).
fn join_separator(name: &str, separator: &str) -> Result<String, String> {
    let fits = (1..=8).contains(&separator.len()) && separator.bytes().all(|b| b",;:+-_.~!*".contains(&b));
    if !fits {
        return Err(format!("template variable `{{{name}|join:{separator}}}`: a separator is 1 to 8 of `,;:+-_.~!*`"));
    }
    Ok(separator.to_owned())
}

impl FromStr for Template {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

/// The template as written.
impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::percent_decode_str;
    use proptest::prelude::*;

    fn values(pairs: &[(Source, &str)]) -> HashMap<Source, String> {
        pairs.iter().map(|(s, v)| (s.clone(), (*v).to_owned())).collect()
    }

    fn path(name: &str) -> Source {
        Source::Path(name.to_owned())
    }

    fn expand_one(template: &str, value: &str, escape: Escape) -> Result<String, String> {
        let t = Template::parse(template).unwrap();
        let source = t.sources().next().unwrap().clone();
        let lookup = values(&[(source, value)]);
        t.expand(&lookup, escape).map_err(|e| e.to_string())
    }

    /// Percent-decoding as application/x-www-form-urlencoded does it (`+` is space).
    fn form_decode(s: &str) -> String {
        percent_decode_str(&s.replace('+', " ")).decode_utf8().unwrap().into_owned()
    }

    // --- parsing ---

    #[test]
    fn parses_literals_and_variables_in_order() {
        let t = Template::parse("/v2/users/{path.id}/orders?q={query.q}").unwrap();
        assert_eq!(t.sources().collect::<Vec<_>>(), [&path("id"), &Source::Query("q".into())]);
        assert_eq!(t.as_str(), "/v2/users/{path.id}/orders?q={query.q}");
        assert_eq!(t.to_string(), t.as_str());
    }

    #[test]
    fn parses_every_source_form() {
        let cases = [
            ("path.id", path("id")),
            ("path._x9", path("_x9")),
            ("query.q", Source::Query("q".into())),
            ("query.page[size]", Source::Query("page[size]".into())),
            ("header.x-tenant", Source::Header("x-tenant".into())),
            ("consumer.id", Source::ConsumerId),
            ("consumer.username", Source::ConsumerUsername),
            ("consumer.custom_id", Source::ConsumerCustomId),
            ("claim.sub", Source::Claim("sub".into())),
            ("claim.https://example.com/roles", Source::Claim("https://example.com/roles".into())),
            ("request_id", Source::RequestId),
        ];
        for (name, source) in cases {
            assert_eq!(Source::parse(name), Some(source.clone()), "{name}");
            assert_eq!(Template::parse(&format!("{{{name}}}")).unwrap().sources().next(), Some(&source), "{name}");
        }
    }

    #[test]
    fn header_names_are_stored_lowercase() {
        assert_eq!(Source::parse("header.X-Tenant"), Some(Source::Header("x-tenant".into())));
        assert_eq!(Source::Header("x-tenant".into()).to_string(), "header.x-tenant");
    }

    #[test]
    fn rejects_bad_names_for_each_source() {
        for name in [
            "path.",
            "path.1id",
            "path.user-id",
            "query.",
            "query.a b",
            "query.é",
            "header.",
            "header.x tenant",
            "header.x:y",
            "claim.",
            "consumer.email",
            "consumer",
            "path",
            "request_id.x",
            "requestid",
            "Path.id",
            "body.x",
        ] {
            assert_eq!(Source::parse(name), None, "{name}");
            let err = Template::parse(&format!("/a/{{{name}}}")).unwrap_err();
            assert!(err.contains(&format!("`{{{name}}}`")), "{name}: {err}");
        }
    }

    #[test]
    fn unknown_source_error_names_it_and_lists_the_valid_forms() {
        let err = Template::parse("/users/{body.id}").unwrap_err();
        assert!(err.contains("`{body.id}`"), "{err}");
        for form in ["{path.<name>}", "{query.<name>}", "{header.<name>}", "{claim.<name>}", "{consumer.custom_id}", "{request_id}"] {
            assert!(err.contains(form), "{err} lacks {form}");
        }
    }

    #[test]
    fn rejects_unclosed_brace() {
        let err = Template::parse("/users/{path.id").unwrap_err();
        assert!(err.contains("never closed") && err.contains("position 8"), "{err}");
        let err = Template::parse("/{path.{x}}").unwrap_err();
        assert!(err.contains("inside a variable") && err.contains("position 8"), "{err}");
    }

    #[test]
    fn rejects_stray_closing_brace() {
        let err = Template::parse("/users/}x").unwrap_err();
        assert!(err.contains("`}`") && err.contains("position 8"), "{err}");
        assert!(Template::parse("{{path.id}").is_err(), "`{{{{` opens nothing, so the `}}` is stray");
    }

    #[test]
    fn rejects_empty_braces() {
        let err = Template::parse("/users/{}").unwrap_err();
        assert!(err.contains("empty `{}`"), "{err}");
    }

    #[test]
    fn rejects_control_characters() {
        let err = Template::parse("/a\nb").unwrap_err();
        assert!(err.contains("U+000A") && err.contains("position 3"), "{err}");
        assert!(Template::parse("{claim.a\tb}").is_err());
    }

    #[test]
    fn double_braces_are_literal_braces() {
        let t = Template::parse("{{path.id}} {{{path.id}}}").unwrap();
        assert_eq!(t.sources().count(), 1);
        let out = t.expand(&values(&[(path("id"), "7")]), Escape::HeaderValue).unwrap();
        assert_eq!(out, "{path.id} {7}");
    }

    #[test]
    fn literal_template_expands_to_its_text_with_single_braces() {
        let t = Template::parse("/static/{{x}}").unwrap();
        assert!(t.sources().next().is_none());
        assert_eq!(t.expand(&HashMap::new(), Escape::PathSegment).unwrap(), "/static/{x}");
    }

    #[test]
    fn rejects_templates_over_2048_bytes() {
        assert!(Template::parse(&"a".repeat(MAX_LEN)).is_ok());
        let err = Template::parse(&"a".repeat(MAX_LEN + 1)).unwrap_err();
        assert!(err.contains("2049 bytes") && err.contains("2048"), "{err}");
    }

    #[test]
    fn rejects_more_than_32_variables() {
        assert!(Template::parse(&"/{path.a}".repeat(MAX_VARIABLES)).is_ok());
        let err = Template::parse(&"/{path.a}".repeat(MAX_VARIABLES + 1)).unwrap_err();
        assert!(err.contains("more than 32 variables"), "{err}");
    }

    #[test]
    fn describes_sources_for_client_errors() {
        assert_eq!(path("id").describe(), "path parameter 'id'");
        assert_eq!(Source::Query("q".into()).describe(), "query parameter 'q'");
        assert_eq!(Source::Header("x-tenant".into()).describe(), "header 'x-tenant'");
        assert_eq!(Source::Claim("sub".into()).describe(), "claim 'sub'");
        assert_eq!(Source::ConsumerId.describe(), "consumer id");
        assert_eq!(Source::ConsumerUsername.describe(), "consumer username");
        assert_eq!(Source::ConsumerCustomId.describe(), "consumer custom_id");
        assert_eq!(Source::RequestId.describe(), "request id");
    }

    #[test]
    fn consumer_and_claim_sources_need_identity() {
        for s in [Source::ConsumerId, Source::ConsumerUsername, Source::ConsumerCustomId, Source::Claim("sub".into())] {
            assert!(s.needs_identity(), "{s}");
        }
        for s in [path("id"), Source::Query("q".into()), Source::Header("x".into()), Source::RequestId] {
            assert!(!s.needs_identity(), "{s}");
        }
    }

    // --- expansion ---

    #[test]
    fn expands_every_source_from_the_lookup() {
        let t = Template::parse(
            "/{path.id}/{query.q}/{header.x-tenant}/{consumer.id}/{consumer.username}/{consumer.custom_id}/{claim.sub}/{request_id}",
        )
        .unwrap();
        let lookup = values(&[
            (path("id"), "1"),
            (Source::Query("q".into()), "2"),
            (Source::Header("x-tenant".into()), "3"),
            (Source::ConsumerId, "4"),
            (Source::ConsumerUsername, "5"),
            (Source::ConsumerCustomId, "6"),
            (Source::Claim("sub".into()), "7"),
            (Source::RequestId, "8"),
        ]);
        assert_eq!(t.expand(&lookup, Escape::PathSegment).unwrap(), "/1/2/3/4/5/6/7/8");
    }

    #[test]
    fn absent_value_is_the_first_missing_source() {
        let t = Template::parse("/{path.id}/{claim.sub}/{header.x-tenant}").unwrap();
        let lookup = values(&[(path("id"), "1")]);
        let err = t.expand(&lookup, Escape::PathSegment).unwrap_err();
        assert_eq!(err, ExpandError::Absent(&Source::Claim("sub".into())));
        assert_eq!(err.to_string(), "the request has no value for claim 'sub'");
    }

    #[test]
    fn empty_value_is_absent_in_a_path_but_not_in_a_query_or_header() {
        assert_eq!(
            expand_one("/users/{path.id}/orders", "", Escape::PathSegment).unwrap_err(),
            "the request has no value for path parameter 'id'"
        );
        assert_eq!(expand_one("/users?id={query.id}", "", Escape::PathAndQuery).unwrap(), "/users?id=");
        assert_eq!(expand_one("q={query.q}", "", Escape::QueryComponent).unwrap(), "q=");
        assert_eq!(expand_one("t-{header.x}", "", Escape::HeaderValue).unwrap(), "t-");
    }

    #[test]
    fn path_segment_percent_encodes_delimiters_and_non_ascii_in_uppercase_hex() {
        assert_eq!(expand_one("/u/{path.id}", "a/b?c#d%e f\\g", Escape::PathSegment).unwrap(), "/u/a%2Fb%3Fc%23d%25e%20f%5Cg");
        assert_eq!(expand_one("/u/{path.id}", "é\u{1}\u{7f}", Escape::PathSegment).unwrap(), "/u/%C3%A9%01%7F");
        assert_eq!(expand_one("/u/{path.id}", "a;b+c", Escape::PathSegment).unwrap(), "/u/a%3Bb%2Bc");
    }

    #[test]
    fn path_segment_keeps_unreserved_and_safe_sub_delims() {
        let kept = "AZaz09-._~!$&'()*,=:@";
        assert_eq!(expand_one("/u/{path.id}", kept, Escape::PathSegment).unwrap(), format!("/u/{kept}"));
        assert_eq!(expand_one("/u/{path.id}", "...", Escape::PathSegment).unwrap(), "/u/...");
    }

    #[test]
    fn path_segment_refuses_dot_segment_values() {
        for value in [".", ".."] {
            let err = expand_one("/files/{query.name}/meta", value, Escape::PathSegment).unwrap_err();
            assert_eq!(err, "the query parameter 'name' is '.' or '..', which cannot be a path segment");
        }
        let t = Template::parse("/files/{query.name}").unwrap();
        let lookup = values(&[(Source::Query("name".into()), "..")]);
        assert_eq!(t.expand(&lookup, Escape::PathSegment), Err(ExpandError::Invalid(&Source::Query("name".into()), Unfit::DotSegment)));
    }

    #[test]
    fn query_component_encodes_form_delimiters_with_percent20_space() {
        assert_eq!(expand_one("?q={query.q}", "a&b=c+d#e%f g", Escape::QueryComponent).unwrap(), "?q=a%26b%3Dc%2Bd%23e%25f%20g");
        assert_eq!(expand_one("?q={query.q}", "é/?~", Escape::QueryComponent).unwrap(), "?q=%C3%A9%2F%3F%7E");
        assert_eq!(expand_one("?q={query.q}", "Az09*-._", Escape::QueryComponent).unwrap(), "?q=Az09*-._");
    }

    #[test]
    fn header_value_is_not_encoded() {
        assert_eq!(expand_one("tenant {header.x}", "a/b %20 é\tz", Escape::HeaderValue).unwrap(), "tenant a/b %20 é\tz");
    }

    #[test]
    fn header_value_refuses_control_characters_but_tab() {
        for value in ["a\r\nX-Admin: 1", "a\nb", "a\0b", "a\u{1b}b", "a\u{7f}"] {
            let t = Template::parse("{claim.sub}").unwrap();
            let lookup = values(&[(Source::Claim("sub".into()), value)]);
            let err = t.expand(&lookup, Escape::HeaderValue).unwrap_err();
            assert_eq!(err, ExpandError::Invalid(&Source::Claim("sub".into()), Unfit::ControlInHeader), "{value:?}");
            assert_eq!(err.to_string(), "the claim 'sub' has a control character, which cannot be sent in a header");
        }
    }

    #[test]
    fn path_and_query_escapes_each_side_of_the_first_literal_question_mark() {
        let t = Template::parse("/orders/{path.id}?user={consumer.custom_id}&next={path.id}").unwrap();
        let lookup = values(&[(path("id"), "a b/c"), (Source::ConsumerCustomId, "x&y=z/")]);
        assert_eq!(t.expand(&lookup, Escape::PathAndQuery).unwrap(), "/orders/a%20b%2Fc?user=x%26y%3Dz%2F&next=a%20b%2Fc");
        // A `?` in a value is encoded, so it cannot move the boundary.
        let lookup = values(&[(path("id"), "?"), (Source::ConsumerCustomId, "u")]);
        assert_eq!(t.expand(&lookup, Escape::PathAndQuery).unwrap(), "/orders/%3F?user=u&next=%3F");
    }

    // --- aggregate calls ---

    fn aggregate(text: &str) -> Result<Template, String> {
        Template::parse_in(text, Scope::Aggregate)
    }

    #[test]
    fn aggregate_templates_name_calls_items_and_the_body() {
        let t = aggregate("/recs/{profile.segment}/{orders.items[0].id}?ids={orders.items[*].id|join:,}&i={item.sku}&x={item}").unwrap();
        let field = |text: &str| FieldPath::parse(text).unwrap();
        assert_eq!(
            t.sources().cloned().collect::<Vec<_>>(),
            [
                Source::Call { call: "profile".into(), field: field("segment") },
                Source::Call { call: "orders".into(), field: field("items[0].id") },
                Source::Call { call: "orders".into(), field: field("items[*].id") },
                Source::Item(field("sku")),
                Source::Item(FieldPath::default()),
            ]
        );
        assert_eq!(aggregate("{body}").unwrap().sources().next(), Some(&Source::Body));
        assert_eq!(aggregate("/{path.id}").unwrap().sources().next(), Some(&path("id")), "request sources keep their meaning");
        assert_eq!(aggregate("?p={query.page[size]}").unwrap().sources().next(), Some(&Source::Query("page[size]".into())));
        assert_eq!(aggregate("{claim.https://x.io/r}").unwrap().sources().next(), Some(&Source::Claim("https://x.io/r".into())));
        for text in ["/{profile.segment}", "/{item}", "{body}", "/{a.b[*]|join:,}"] {
            assert!(Template::parse(text).is_err(), "{text} is for aggregates only");
        }
    }

    #[test]
    fn aggregate_templates_refuse_whole_answers_bad_paths_and_misused_joins() {
        for (text, expected) in [
            ("/{profile}", "not its whole answer"),
            ("/{profile.a..b}", "is not a field path"),
            ("/{profile.a[x]}", "an index is a number or `*`"),
            ("/{orders.items[*].id}", "join them"),
            ("/{orders.id|join:,}", "`|join:` needs a path with `[*]`"),
            ("/{orders.items[*]|join:}", "a separator is 1 to 8"),
            ("/{orders.items[*]|join:/}", "a separator is 1 to 8"),
            ("/{orders.items[*]|join:#}", "a separator is 1 to 8"),
        ] {
            let error = aggregate(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn joins_escape_each_value_and_keep_the_separator() {
        struct Many;
        impl Lookup for Many {
            fn value(&self, _: &Source) -> Option<Cow<'_, str>> {
                None
            }
            fn values(&self, _: &Source) -> Option<Vec<Cow<'_, str>>> {
                Some(vec!["a b".into(), "c,d".into(), "7".into()])
            }
        }
        let t = aggregate("/p?ids={o.items[*].id|join:,}").unwrap();
        assert_eq!(t.expand(&Many, Escape::PathAndQuery).unwrap(), "/p?ids=a%20b,c%2Cd,7");
    }

    #[test]
    fn json_string_escaping_and_a_verbatim_body() {
        let t = aggregate(r#"{{"user":"{header.x}","order":{body}}}"#).unwrap();
        let lookup = values(&[(Source::Header("x".into()), "a\"b\n"), (Source::Body, "{\"id\": 1}")]);
        assert_eq!(t.expand(&lookup, Escape::JsonString).unwrap(), r#"{"user":"a\"b\n","order":{"id": 1}}"#);
    }

    #[test]
    fn field_paths_select_values_in_document_order() {
        let document = serde_json::json!({"items": [{"id": 1}, {"id": "two"}, {"x": 3}], "n": null});
        let select = |text: &str| FieldPath::parse(text).unwrap().select(&document).into_iter().cloned().collect::<Vec<_>>();
        assert_eq!(select("items[*].id"), [serde_json::json!(1), serde_json::json!("two")]);
        assert_eq!(select("items[1].id"), [serde_json::json!("two")]);
        assert!(select("missing.id").is_empty());
        assert_eq!(json_scalar(&serde_json::json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(json_scalar(&serde_json::json!(null)), None);
        assert_eq!(FieldPath::parse("a.b[2][*].c").unwrap().to_string(), "a.b[2][*].c");
        assert_eq!(select("items[*]").len(), 3);
        let array = serde_json::json!([{"id": 1}, {"id": 2}]);
        assert_eq!(FieldPath::parse("[*].id").unwrap().select(&array), [&serde_json::json!(1), &serde_json::json!(2)]);
        assert!(FieldPath::parse("a.[0]").is_err() && FieldPath::parse("a[0].").is_err());
        let (call, path) = FieldPath::of_call("orders[1].id").unwrap();
        assert_eq!((call, path.to_string(), path.after_name()), ("orders", "[1].id".to_owned(), "[1].id".to_owned()));
        assert_eq!(Source::Call { call: "p".into(), field: FieldPath::parse("seg").unwrap() }.to_string(), "p.seg");
    }

    // --- properties ---

    /// Strings rich in the characters the escapes care about, and any string.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[./%?#&=+;\\\\ a{}\r\n\u{0}é]{0,8}", "\\.{1,2}"]
    }

    fn source() -> impl Strategy<Value = Source> {
        prop_oneof![
            "[A-Za-z_][A-Za-z0-9_]{0,6}".prop_map(Source::Path),
            "[!-z|~]{1,6}".prop_map(Source::Query),
            "[a-z0-9!#$%&'*+.^_`|~-]{1,6}".prop_map(Source::Header),
            "[^{}\\p{Cc}]{1,6}".prop_map(Source::Claim),
            Just(Source::ConsumerId),
            Just(Source::ConsumerUsername),
            Just(Source::ConsumerCustomId),
            Just(Source::RequestId),
        ]
    }

    proptest! {
        #[test]
        fn path_segment_expansion_is_exactly_one_segment_that_decodes_back(v in value()) {
            let t = Template::parse("/{path.x}").unwrap();
            let lookup = values(&[(path("x"), &v)]);
            match t.expand(&lookup, Escape::PathSegment) {
                Ok(out) => {
                    prop_assert_eq!(out.matches('/').count(), 1);
                    prop_assert!(out != "/." && out != "/..");
                    prop_assert_eq!(percent_decode_str(&out[1..]).decode_utf8().unwrap(), v.as_str());
                }
                Err(ExpandError::Absent(_)) => prop_assert!(v.is_empty()),
                Err(ExpandError::Invalid(_, unfit)) => {
                    prop_assert_eq!(unfit, Unfit::DotSegment);
                    prop_assert!(v == "." || v == "..");
                }
            }
        }

        #[test]
        fn query_component_expansion_has_no_delimiters_and_form_decodes_back(v in value()) {
            let out = expand_one("{query.x}", &v, Escape::QueryComponent).unwrap();
            prop_assert!(!out.contains(['&', '=', '#', '+', ' ']), "{}", out);
            prop_assert_eq!(form_decode(&out), v);
        }

        #[test]
        fn header_expansion_is_the_value_or_refused_for_controls(v in value()) {
            match expand_one("{header.x}", &v, Escape::HeaderValue) {
                Ok(out) => prop_assert_eq!(out, v),
                Err(_) => prop_assert!(v.bytes().any(|b| b.is_ascii_control() && b != b'\t')),
            }
        }

        #[test]
        fn generated_templates_round_trip(
            pieces in proptest::collection::vec(
                prop_oneof![
                    "[^{}\\p{Cc}]{1,8}",
                    Just("{{".to_owned()),
                    Just("}}".to_owned()),
                    source().prop_map(|s| format!("{{{s}}}")),
                ],
                0..12,
            )
        ) {
            let text = pieces.concat();
            let t = Template::parse(&text).unwrap();
            prop_assert_eq!(t.as_str(), text.as_str());
            let written: Vec<Source> = pieces.iter()
                .filter(|p| p.starts_with('{') && p.len() > 2)
                .map(|p| Source::parse(&p[1..p.len() - 1]).unwrap())
                .collect();
            prop_assert_eq!(t.sources().cloned().collect::<Vec<_>>(), written);
        }

        #[test]
        fn any_text_parses_to_itself_or_is_refused(text in "[{}a./]{0,12}|\\PC{0,40}") {
            if let Ok(t) = Template::parse(&text) {
                prop_assert_eq!(t.as_str(), text.as_str());
            }
        }

        #[test]
        fn source_display_parses_back(s in source()) {
            prop_assert_eq!(Source::parse(&s.to_string()), Some(s));
        }
    }

    #[test]
    fn a_routing_key_reads_fields_of_the_json_body() {
        let template = Template::parse_in("order.{body.order.items[0].sku}", Scope::Message).unwrap();
        let source = template.sources().next().unwrap();
        assert_eq!(source.to_string(), "body.order.items[0].sku");
        assert_eq!(source.describe(), "field 'order.items[0].sku' of the JSON request body");
        let Source::BodyField(field) = source else { panic!("{source:?}") };
        let body = serde_json::json!({"order": {"items": [{"sku": "A-1"}]}});
        assert_eq!(field.select(&body), [&serde_json::json!("A-1")]);
        assert!(Template::parse_in("{body.items[*].sku}", Scope::Message).unwrap_err().contains("without `[*]`"));
        assert!(Template::parse_in("{body.}", Scope::Message).is_err());
        assert!(Template::parse("{body.id}").unwrap_err().contains("unknown template variable"), "only routing keys read the body");
    }
}
