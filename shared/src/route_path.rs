//! Route path syntax: the segments of a route path, its `{name}`
//! parameters (`/users/{id}/orders`), and the rules for its parameters and
//! percent-escapes. The data plane's router and the config validation
//! (templates naming `{path.id}`) read route paths through this module so
//! that both agree on what a parameter is. It does not match request paths
//! (the data plane's router does) nor check the rest of a route path
//! (leading `/`, allowed characters, dot segments: `validate`).

/// Most parameters one route path may have.
pub const MAX_PARAMS: usize = 16;
/// Longest parameter name.
pub const MAX_PARAM_NAME_LEN: usize = 64;

/// One segment of a route path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Matches a request segment equal to it.
    Literal(&'a str),
    /// `{name}`: matches any one request segment; holds the name.
    Param(&'a str),
}

/// The segments of a route path after its leading `/` (`/` has none).
/// A segment is a parameter when it is `{...}` as a whole; validation
/// makes sure no other segment has braces.
pub fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('/').filter(|s| !s.is_empty()).map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        Some(name) => Segment::Param(name),
        None => Segment::Literal(s),
    })
}

/// The parameter names of a route path, in order (`/users/{id}/orders/{order}`
/// gives `id`, `order`).
pub fn path_params(path: &str) -> impl Iterator<Item = &str> {
    segments(path).filter_map(|s| match s {
        Segment::Param(name) => Some(name),
        Segment::Literal(_) => None,
    })
}

/// The path with every parameter name left out (`/users/{}`): two route
/// paths of one shape match exactly the same requests.
pub fn shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for segment in segments(path) {
        out.push('/');
        out.push_str(match segment {
            Segment::Literal(s) => s,
            Segment::Param(_) => "{}",
        });
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `[A-Za-z_][A-Za-z0-9_]{0,63}`.
pub fn is_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= MAX_PARAM_NAME_LEN
}

/// Checks the parameters and percent-escapes of a route path that is
/// otherwise valid, and gives it with escapes in the case request paths
/// carry them (`%c3%a9` becomes `%C3%A9`). The error is a message to
/// follow the quoted path.
///
/// Request paths are matched after normalization, which decodes escapes of
/// unreserved characters (`%61` is `a`) and refuses escaped `/`, `\` and
/// control characters: a route path with such an escape could never match,
/// so it is refused. Other escapes (`%20`, `%C3%A9`) stay escaped in
/// request paths and are matched as such.
pub fn check(path: &str) -> Result<String, String> {
    let mut names: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        if !segment.contains(['{', '}']) {
            continue;
        }
        let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')).filter(|n| !n.contains(['{', '}'])) else {
            return Err("may use '{' and '}' only around a whole segment, as in '/users/{id}/orders'".to_owned());
        };
        if !is_param_name(name) {
            return Err(format!(
                "has the parameter '{{{name}}}': a name is 1 to {MAX_PARAM_NAME_LEN} of A-Z, a-z, 0-9 and '_', not starting with a digit"
            ));
        }
        if names.contains(&name) {
            return Err(format!("names the parameter '{{{name}}}' twice"));
        }
        names.push(name);
    }
    if names.len() > MAX_PARAMS {
        return Err(format!("has {} parameters; at most {MAX_PARAMS} are allowed", names.len()));
    }
    canonical_escapes(path)
}

fn canonical_escapes(path: &str) -> Result<String, String> {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let Some(byte) = rest.get(at + 1..at + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()) else {
            return Err("has a '%' that is not followed by two hex digits".to_owned());
        };
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            return Err(format!(
                "has '%{:02X}': request paths are matched with escaped letters, digits and '-._~' decoded, so write '{}' rather than its escape",
                byte,
                char::from(byte)
            ));
        }
        if byte < 0x20 || byte == 0x7f || byte == b'/' || byte == b'\\' {
            return Err(format!(
                "has '%{byte:02X}': a request path with an escaped '/', '\\' or control character is refused, so this route could never match"
            ));
        }
        out.push_str(&format!("%{byte:02X}"));
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parameter_names_in_order() {
        assert_eq!(path_params("/users/{id}/orders/{order_id}").collect::<Vec<_>>(), ["id", "order_id"]);
        assert_eq!(path_params("/users").count(), 0);
        assert_eq!(path_params("/").count(), 0);
        assert_eq!(path_params("/{tenant}").collect::<Vec<_>>(), ["tenant"]);
    }

    #[test]
    fn splits_literals_and_parameters() {
        assert_eq!(
            segments("/users/{id}/orders").collect::<Vec<_>>(),
            [Segment::Literal("users"), Segment::Param("id"), Segment::Literal("orders")]
        );
    }

    #[test]
    fn shape_forgets_parameter_names() {
        assert_eq!(shape("/users/{id}/orders"), "/users/{}/orders");
        assert_eq!(shape("/users/{id}/orders"), shape("/users/{user}/orders"));
        assert_eq!(shape("/"), "/");
    }

    #[test]
    fn accepts_whole_segment_parameters() {
        assert_eq!(check("/users/{id}/orders/{_Order9}").unwrap(), "/users/{id}/orders/{_Order9}");
        let sixteen: String = (0..16).map(|i| format!("/{{p{i}}}")).collect();
        assert!(check(&sixteen).is_ok());
        assert!(check(&format!("/{{{}}}", "a".repeat(64))).is_ok());
    }

    #[test]
    fn rejects_braces_outside_a_whole_segment() {
        for path in ["/users/{id", "/users/id}", "/users/x{id}", "/users/{id}x", "/{a}{b}", "/{{a}}", "/}{", "/a{}b"] {
            let message = check(path).unwrap_err();
            assert!(message.contains("only around a whole segment"), "{path}: {message}");
        }
    }

    #[test]
    fn rejects_bad_duplicate_and_too_many_parameter_names() {
        for path in ["/{}", "/{1id}", "/{user-id}", "/{a b}", &format!("/{{{}}}", "a".repeat(65))] {
            assert!(check(path).unwrap_err().contains("a name is 1 to 64"), "{path}");
        }
        assert_eq!(check("/{id}/x/{id}").unwrap_err(), "names the parameter '{id}' twice");
        let seventeen: String = (0..17).map(|i| format!("/{{p{i}}}")).collect();
        assert_eq!(check(&seventeen).unwrap_err(), "has 17 parameters; at most 16 are allowed");
    }

    #[test]
    fn rejects_escapes_a_request_path_never_carries() {
        let message = check("/%61dmin").unwrap_err();
        assert!(message.contains("decoded, so write 'a'"), "{message}");
        for path in ["/%2e%2e/admin", "/%7Euser", "/a%2Fb", "/a%5cb", "/a%00", "/a%", "/a%4", "/a%zz"] {
            assert!(check(path).is_err(), "{path}");
        }
    }

    #[test]
    fn keeps_other_escapes_in_the_case_requests_carry() {
        assert_eq!(check("/caf%c3%a9/a%20b").unwrap(), "/caf%C3%A9/a%20b");
        assert_eq!(check("/%7Bid%7D").unwrap(), "/%7Bid%7D", "an escaped brace is a literal");
    }
}
