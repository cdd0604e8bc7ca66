//! `google.api.http` path templates (googleapis `google/api/http.proto`):
//! parsing, matching a request path with the variable bindings it yields,
//! and the shape two templates share when they would match the same
//! requests. The grammar:
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `**` matches zero or more segments and may only be last; variables do
//! not nest; `{var}` means `{var=*}`; `*` matches one non-empty segment.
//! A variable of one segment is percent-decoded fully; one of several
//! segments (or `**`) is decoded but for `%2F`, which stays encoded (the
//! spec's reserved expansion). A custom verb is the `:verb` ending the
//! last segment only when the template has that verb, so `/v1/{name}`
//! binds `a:b` from `/v1/a:b` (envoy#13920). Hand-written: no crate
//! implements this grammar, and it is the gateway's own core.

use std::fmt;

use percent_encoding::percent_decode_str;

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Percent-decoded.
    Literal(String),
    /// `*`: one segment.
    Single,
    /// `**`: the rest of the path, zero or more segments.
    Multi,
}

/// A `{field.path=...}` over `segments[start..end]` of its template.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Variable {
    field_path: String,
    start: usize,
    end: usize,
}

/// Why a template does not parse: the template, the byte offset and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template '{template}' at offset {offset}: {reason}")]
pub struct TemplateError {
    pub template: String,
    pub offset: usize,
    pub reason: String,
}

/// One variable's value from a matched path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture<'t> {
    /// As written in the template: `name`, `book.shelf`.
    pub field_path: &'t str,
    pub value: String,
}

/// A matched variable's decoded value is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path variable '{field_path}' is not valid UTF-8 once percent-decoded")]
pub struct NotUtf8 {
    pub field_path: String,
}

/// What decides whether two templates match the same requests: their
/// segments (literal, one or many) and verb; variable names do not count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape {
    segments: Vec<ShapeSegment>,
    verb: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ShapeSegment {
    Literal(String),
    Single,
    Multi,
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        Parser { template, position: 0, verb_at: verb_position(template) }.template()
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn verb(&self) -> Option<&str> {
        self.verb.as_deref()
    }

    /// The field paths of the variables, in template order.
    pub fn field_paths(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|variable| variable.field_path.as_str())
    }

    pub fn shape(&self) -> Shape {
        let segments = self
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(literal) => ShapeSegment::Literal(literal.clone()),
                Segment::Single => ShapeSegment::Single,
                Segment::Multi => ShapeSegment::Multi,
            })
            .collect();
        Shape { segments, verb: self.verb.clone() }
    }

    /// How specific the template is, to try the most specific first: per
    /// segment a literal beats `*`, which beats `**`, earlier segments
    /// deciding first; then a template with a verb beats one without.
    /// Larger is more specific.
    pub fn specificity(&self) -> (Vec<u8>, bool) {
        let ranks = self
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(_) => 2,
                Segment::Single => 1,
                Segment::Multi => 0,
            })
            .collect();
        (ranks, self.verb.is_some())
    }

    /// Matches `path` (without its query): `Ok(None)` when it does not
    /// match, else the variables' values, decoded.
    pub fn match_path(&self, path: &str) -> Result<Option<Vec<Capture<'_>>>, NotUtf8> {
        let Some(path) = path.strip_prefix('/') else { return Ok(None) };
        let path = match &self.verb {
            Some(verb) => {
                // The verb ends the last part (which a `*` or literal never lets be empty).
                let Some(rest) = path.strip_suffix(verb.as_str()).and_then(|rest| rest.strip_suffix(':')) else {
                    return Ok(None);
                };
                rest
            }
            None => path,
        };
        if !self.segments_match(path) {
            return Ok(None);
        }
        // Matched: where each part starts in `path`, to slice the variables' values.
        let starts: Vec<usize> =
            if path.is_empty() { Vec::new() } else { std::iter::once(0).chain(path.match_indices('/').map(|(at, _)| at + 1)).collect() };
        let end_of = |part: usize| starts.get(part + 1).map_or(path.len(), |next| next - 1);
        let ends_multi = self.segments.last() == Some(&Segment::Multi);
        let mut captures = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let last = if ends_multi && variable.end == self.segments.len() { starts.len() } else { variable.end };
            let raw = if last > variable.start { &path[starts[variable.start]..end_of(last - 1)] } else { "" };
            let single = variable.end - variable.start == 1 && self.segments[variable.start] != Segment::Multi;
            let value = if single { decode_fully(raw) } else { decode_but_slash(raw) };
            let value = value.ok_or_else(|| NotUtf8 { field_path: variable.field_path.clone() })?;
            captures.push(Capture { field_path: &variable.field_path, value });
        }
        Ok(Some(captures))
    }

    /// Whether the parts of `path` (after the leading '/' and before the
    /// verb) match the segments, without allocating.
    fn segments_match(&self, path: &str) -> bool {
        let ends_multi = self.segments.last() == Some(&Segment::Multi);
        let fixed = &self.segments[..self.segments.len() - usize::from(ends_multi)];
        let mut parts = path.split('/').filter(|_| !path.is_empty());
        for segment in fixed {
            let Some(part) = parts.next() else { return false };
            let matches = match segment {
                Segment::Literal(literal) => {
                    part == literal || (part.contains('%') && decode_fully(part).is_some_and(|decoded| &decoded == literal))
                }
                Segment::Single => !part.is_empty(),
                Segment::Multi => false,
            };
            if !matches {
                return false;
            }
        }
        ends_multi || parts.next().is_none()
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn decode_fully(raw: &str) -> Option<String> {
    percent_decode_str(raw).decode_utf8().ok().map(|decoded| decoded.into_owned())
}

/// Decodes all but `%2F`/`%2f`, kept as written.
fn decode_but_slash(raw: &str) -> Option<String> {
    let mut decoded = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = find_encoded_slash(rest) {
        decoded.push_str(&decode_fully(&rest[..at])?);
        decoded.push_str(&rest[at..at + 3]);
        rest = &rest[at + 3..];
    }
    decoded.push_str(&decode_fully(rest)?);
    Some(decoded)
}

fn find_encoded_slash(raw: &str) -> Option<usize> {
    raw.as_bytes().windows(3).position(|window| window[0] == b'%' && window[1] == b'2' && (window[2] == b'F' || window[2] == b'f'))
}

/// Where the verb's ':' is: the last ':' outside braces after the last '/'
/// outside braces (a ':' earlier in the path is part of a literal).
fn verb_position(template: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut verb_at = None;
    for (at, byte) in template.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b'/' if depth == 0 => verb_at = None,
            b':' if depth == 0 => verb_at = Some(at),
            _ => {}
        }
    }
    verb_at
}

struct Parser<'a> {
    template: &'a str,
    position: usize,
    verb_at: Option<usize>,
}

impl Parser<'_> {
    fn error(&self, reason: impl Into<String>) -> TemplateError {
        TemplateError { template: self.template.to_owned(), offset: self.position, reason: reason.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.template.as_bytes().get(self.position).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.position += 1;
        }
        found
    }

    fn template(mut self) -> Result<PathTemplate, TemplateError> {
        if !self.eat(b'/') {
            return Err(self.error("a template starts with '/'"));
        }
        let mut segments = Vec::new();
        let mut variables: Vec<Variable> = Vec::new();
        // "/" alone, or "/:verb", has no segment.
        if self.peek().is_some() && Some(self.position) != self.verb_at {
            self.segments(&mut segments, &mut variables, false)?;
        }
        let verb = if Some(self.position) == self.verb_at && self.eat(b':') {
            let verb = self.literal()?;
            Some(verb)
        } else {
            None
        };
        if self.position != self.template.len() {
            return Err(self.error("unexpected character"));
        }
        if let Some(at) = segments.iter().position(|segment| *segment == Segment::Multi)
            && at + 1 != segments.len()
        {
            return Err(TemplateError {
                template: self.template.to_owned(),
                offset: 0,
                reason: "'**' may only be the last segment".into(),
            });
        }
        for (index, variable) in variables.iter().enumerate() {
            if variables[..index].iter().any(|earlier| earlier.field_path == variable.field_path) {
                return Err(TemplateError {
                    template: self.template.to_owned(),
                    offset: 0,
                    reason: format!("variable '{}' appears twice", variable.field_path),
                });
            }
        }
        Ok(PathTemplate { source: self.template.to_owned(), segments, variables, verb })
    }

    /// Segments separated by '/', up to the verb, the end, or (in a
    /// variable) the closing '}'.
    fn segments(&mut self, segments: &mut Vec<Segment>, variables: &mut Vec<Variable>, in_variable: bool) -> Result<(), TemplateError> {
        loop {
            match self.peek() {
                Some(b'*') => {
                    self.position += 1;
                    segments.push(if self.eat(b'*') { Segment::Multi } else { Segment::Single });
                    if !(matches!(self.peek(), None | Some(b'/' | b'}')) || Some(self.position) == self.verb_at) {
                        return Err(self.error("'*' and '**' are whole segments"));
                    }
                }
                Some(b'{') if in_variable => return Err(self.error("variables cannot nest")),
                Some(b'{') => {
                    self.position += 1;
                    let field_path = self.field_path()?;
                    let start = segments.len();
                    if self.eat(b'=') {
                        self.segments(segments, variables, true)?;
                    } else {
                        segments.push(Segment::Single);
                    }
                    if !self.eat(b'}') {
                        return Err(self.error("expected '}' closing the variable"));
                    }
                    variables.push(Variable { field_path, start, end: segments.len() });
                }
                _ => segments.push(Segment::Literal(self.literal()?)),
            }
            if !self.eat(b'/') {
                return Ok(());
            }
        }
    }

    fn field_path(&mut self) -> Result<String, TemplateError> {
        let start = self.position;
        loop {
            let ident_start = self.position;
            while matches!(self.peek(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_')) {
                self.position += 1;
            }
            let ident = &self.template[ident_start..self.position];
            if ident.is_empty() || ident.as_bytes()[0].is_ascii_digit() {
                self.position = ident_start;
                return Err(self.error("expected a field name"));
            }
            if !self.eat(b'.') {
                return Ok(self.template[start..self.position].to_owned());
            }
        }
    }

    /// A literal segment or verb, percent-decoded.
    fn literal(&mut self) -> Result<String, TemplateError> {
        let start = self.position;
        while let Some(byte) = self.peek() {
            match byte {
                b'/' | b'{' | b'}' | b'=' => break,
                b':' if Some(self.position) == self.verb_at => break,
                b'*' => return Err(self.error("'*' inside a literal")),
                b'%' => {
                    let hex = self.template.as_bytes().get(self.position + 1..self.position + 3);
                    if !hex.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                        return Err(self.error("'%' not followed by two hex digits"));
                    }
                    self.position += 3;
                }
                byte if byte.is_ascii_control() || byte == b' ' || byte == b'?' || byte == b'#' => {
                    return Err(self.error("character not allowed in a path"));
                }
                _ => self.position += 1,
            }
        }
        let raw = &self.template[start..self.position];
        if raw.is_empty() {
            return Err(self.error("empty segment"));
        }
        decode_fully(raw).ok_or_else(|| self.error("literal is not valid UTF-8 once percent-decoded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> PathTemplate {
        PathTemplate::parse(source).unwrap_or_else(|error| panic!("{error}"))
    }

    fn captures(source: &str, path: &str) -> Option<Vec<(String, String)>> {
        template(source)
            .match_path(path)
            .unwrap()
            .map(|captures| captures.into_iter().map(|capture| (capture.field_path.to_owned(), capture.value)).collect())
    }

    fn pairs(entries: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(entries.iter().map(|(field, value)| ((*field).to_owned(), (*value).to_owned())).collect())
    }

    #[test]
    fn parses_the_spec_examples() {
        for source in [
            "/",
            "/shelves",
            "/v1/{name}",
            "/v1/{name=shelves/*}",
            "/v1/{name=shelves/*/books/*}",
            "/v1/{book.name=shelves/*/books/*}",
            "/v1/{name=**}",
            "/v1/*/books/**",
            "/v1/{name=messages/*}:cancel",
            "/v1:batchGet",
            "/v1/a%20b/{x}",
            "/v1/{a}/{b.c}/{d=*}",
            "/v1/{name=projects/*/locations/*}/{rest=**}:run",
        ] {
            assert_eq!(template(source).as_str(), source);
        }
        assert_eq!(template("/v1/{name=messages/*}:cancel").verb(), Some("cancel"));
        assert_eq!(template("/v1/{a}/{b.c}").field_paths().collect::<Vec<_>>(), ["a", "b.c"]);
    }

    #[test]
    fn refuses_malformed_templates_with_a_reason() {
        for (source, reason) in [
            ("", "starts with '/'"),
            ("v1/x", "starts with '/'"),
            ("/v1//x", "empty segment"),
            ("/v1/", "empty segment"),
            ("/v1/**/x", "'**' may only be the last"),
            ("/v1/{name=**}/x", "'**' may only be the last"),
            ("/v1/{a={b}}", "cannot nest"),
            ("/v1/{a", "expected '}'"),
            ("/v1/{}", "expected a field name"),
            ("/v1/{1a}", "expected a field name"),
            ("/v1/{a.}", "expected a field name"),
            ("/v1/a*", "'*' inside a literal"),
            ("/v1/**x", "whole segments"),
            ("/v1/x:", "empty segment"),
            ("/v1/%zz", "two hex digits"),
            ("/v1/a b", "not allowed"),
            ("/v1/{a}/{a}", "appears twice"),
            ("/v1/x}", "unexpected character"),
        ] {
            let error = PathTemplate::parse(source).expect_err(source);
            assert!(error.reason.contains(reason), "{source}: {error}");
            assert!(error.to_string().contains(&format!("'{source}'")));
        }
    }

    #[test]
    fn matches_literals_and_single_wildcards() {
        assert_eq!(captures("/v1/shelves", "/v1/shelves"), pairs(&[]));
        assert_eq!(captures("/v1/shelves", "/v1/shelves/"), None);
        assert_eq!(captures("/v1/shelves", "/v1/shelve"), None);
        assert_eq!(captures("/v1/*/x", "/v1/a/x"), pairs(&[]));
        assert_eq!(captures("/v1/{id}", "/v1/42"), pairs(&[("id", "42")]));
        assert_eq!(captures("/v1/{id}", "/v1/"), None, "'*' does not match an empty segment");
        assert_eq!(captures("/v1/{id}", "/v1/42/43"), None);
        assert_eq!(captures("/", "/"), pairs(&[]));
        assert_eq!(captures("/", "/x"), None);
        assert_eq!(captures("/v1/a%20b", "/v1/a%20b"), pairs(&[]));
        assert_eq!(captures("/v1/a%20b", "/v1/a b"), pairs(&[]));
        assert_eq!(captures("/v1/x", "v1/x"), None);
    }

    #[test]
    fn matches_variables_over_several_segments() {
        assert_eq!(captures("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books/b2"), pairs(&[("name", "shelves/s1/books/b2")]));
        assert_eq!(captures("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/book/b2"), None);
        assert_eq!(captures("/v1/{book.name=shelves/*}/x", "/v1/shelves/7/x"), pairs(&[("book.name", "shelves/7")]));
        assert_eq!(captures("/v1/{a}/{b}", "/v1/1/2"), pairs(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn double_wildcard_takes_zero_or_more_segments() {
        assert_eq!(captures("/v1/{name=**}", "/v1/a/b/c"), pairs(&[("name", "a/b/c")]));
        assert_eq!(captures("/v1/{name=**}", "/v1/a"), pairs(&[("name", "a")]));
        assert_eq!(captures("/v1/{name=**}", "/v1"), pairs(&[("name", "")]));
        assert_eq!(captures("/v1/{name=files/**}", "/v1/files/a/b"), pairs(&[("name", "files/a/b")]));
        assert_eq!(captures("/v1/{name=files/**}", "/v1/file/a"), None);
        assert_eq!(captures("/v1/**", "/v2/a"), None);
        assert_eq!(captures("/{a}/**", "/x/y/z"), pairs(&[("a", "x")]));
    }

    #[test]
    fn single_segment_variables_are_fully_decoded() {
        assert_eq!(captures("/v1/{id}", "/v1/a%2Fb%20c"), pairs(&[("id", "a/b c")]));
        assert_eq!(captures("/v1/{id}", "/v1/%E2%82%AC"), pairs(&[("id", "€")]));
        assert_eq!(captures("/v1/{id}", "/v1/a+b"), pairs(&[("id", "a+b")]), "'+' is a plus in a path");
    }

    #[test]
    fn multi_segment_variables_keep_encoded_slashes() {
        assert_eq!(captures("/v1/{name=**}", "/v1/a%2Fb/c%20d%2fe"), pairs(&[("name", "a%2Fb/c d%2fe")]));
        assert_eq!(captures("/v1/{name=x/*}", "/v1/x/%2F%41"), pairs(&[("name", "x/%2FA")]));
        assert_eq!(captures("/v1/{name=**}", "/v1/%252F"), pairs(&[("name", "%2F")]), "only one decoding pass");
    }

    #[test]
    fn invalid_utf8_names_the_variable() {
        let template = template("/v1/{book.id}");
        assert_eq!(template.match_path("/v1/%FF").unwrap_err(), NotUtf8 { field_path: "book.id".into() });
    }

    #[test]
    fn custom_verbs_end_the_last_segment() {
        assert_eq!(captures("/v1/{name=messages/*}:cancel", "/v1/messages/7:cancel"), pairs(&[("name", "messages/7")]));
        assert_eq!(captures("/v1/{name=messages/*}:cancel", "/v1/messages/7"), None);
        assert_eq!(captures("/v1/{name=messages/*}:cancel", "/v1/messages/7:undo"), None);
        assert_eq!(captures("/v1/{name=messages/*}:cancel", "/v1/messages/:cancel"), None);
        assert_eq!(captures("/v1/{name=messages/*}:cancel", "/v1/messages/7/:cancel"), None);
        assert_eq!(captures("/v1:batchGet", "/v1:batchGet"), pairs(&[]));
        assert_eq!(captures("/v1/{name=**}:run", "/v1/a/b:run"), pairs(&[("name", "a/b")]));
        assert_eq!(captures("/v1/{name=**}:run", "/v1/:run"), pairs(&[("name", "")]), "as '/v1/' gives '**' nothing");
        assert_eq!(captures("/:ping", "/:ping"), pairs(&[]));
    }

    #[test]
    fn a_colon_in_the_last_segment_is_data_without_a_verb() {
        // envoy#13920: a ':' the template does not declare is part of the segment.
        assert_eq!(captures("/v1/{name}", "/v1/a:b"), pairs(&[("name", "a:b")]));
        assert_eq!(captures("/v1/{name}:cancel", "/v1/a:b:cancel"), pairs(&[("name", "a:b")]));
        assert_eq!(captures("/v1/{name=**}", "/v1/x/a:cancel"), pairs(&[("name", "x/a:cancel")]));
        assert_eq!(captures("/v1/a:b/{x}", "/v1/a:b/1"), pairs(&[("x", "1")]));
    }

    #[test]
    fn shapes_ignore_variable_names_but_not_literals_or_verbs() {
        let shape = |source: &str| template(source).shape();
        assert_eq!(shape("/v1/{id}"), shape("/v1/{name}"));
        assert_eq!(shape("/v1/{id}"), shape("/v1/*"));
        assert_eq!(shape("/v1/{name=**}"), shape("/v1/**"));
        assert_eq!(shape("/v1/{name=shelves/*}"), shape("/v1/shelves/{id}"));
        assert_eq!(shape("/v1/%61"), shape("/v1/a"), "literals compare decoded");
        assert_ne!(shape("/v1/{id}"), shape("/v2/{id}"));
        assert_ne!(shape("/v1/{id}"), shape("/v1/{id}:cancel"));
        assert_ne!(shape("/v1/{id}:undo"), shape("/v1/{id}:cancel"));
        assert_ne!(shape("/v1/*"), shape("/v1/**"));
    }

    #[test]
    fn specificity_puts_literals_before_variables_at_the_same_depth() {
        let rank = |source: &str| template(source).specificity();
        assert!(rank("/v1/shelves/{id}") > rank("/v1/{kind}/{id}"));
        assert!(rank("/v1/{kind}/books") > rank("/v1/{kind}/{id}"));
        assert!(rank("/v1/{kind}/{id}") > rank("/v1/{name=**}"));
        assert!(rank("/v1/{id}:cancel") > rank("/v1/{id}"));
        assert!(rank("/v1/a/**") > rank("/v1/*/b"));
    }

    mod properties {
        use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
        use proptest::prelude::*;

        use super::*;

        /// What a client leaves unencoded in a one-segment variable, and in a many-segment one.
        const SINGLE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
        const MULTI: &AsciiSet = &SINGLE.remove(b'/');

        #[derive(Debug, Clone)]
        enum Part {
            Literal(String),
            Variable(String),
        }

        fn part() -> impl Strategy<Value = Part> {
            prop_oneof!["[a-z]{1,5}".prop_map(Part::Literal), "[ -~€é]{1,8}".prop_map(Part::Variable)]
        }

        proptest! {
            /// Expanding a template as the spec tells clients to, then matching, gives the values back.
            #[test]
            fn expanded_values_match_back(parts in prop::collection::vec(part(), 1..5), rest in prop::option::of("[ -~€]{0,12}"), verb in prop::option::of("[a-z]{1,6}")) {
                let mut template = String::new();
                let mut path = String::new();
                let mut expected = Vec::new();
                for (index, part) in parts.iter().enumerate() {
                    match part {
                        Part::Literal(literal) => {
                            template.push_str(&format!("/{literal}"));
                            path.push_str(&format!("/{literal}"));
                        }
                        Part::Variable(value) => {
                            template.push_str(&format!("/{{v{index}}}"));
                            path.push_str(&format!("/{}", utf8_percent_encode(value, SINGLE)));
                            expected.push((format!("v{index}"), value.clone()));
                        }
                    }
                }
                if let Some(rest) = &rest {
                    template.push_str("/{rest=**}");
                    path.push_str(&format!("/{}", utf8_percent_encode(rest, MULTI)));
                    expected.push(("rest".to_owned(), rest.clone()));
                }
                if let Some(verb) = &verb {
                    template.push_str(&format!(":{verb}"));
                    path.push_str(&format!(":{verb}"));
                }
                let template = PathTemplate::parse(&template).unwrap();
                let captures = template.match_path(&path).unwrap().unwrap_or_else(|| panic!("{template} does not match {path}"));
                let captures: Vec<(String, String)> = captures.into_iter().map(|capture| (capture.field_path.to_owned(), capture.value)).collect();
                prop_assert_eq!(captures, expected);
            }
        }
    }
}
