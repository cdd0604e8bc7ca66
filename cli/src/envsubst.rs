//! `--env-subst`: `${NAME}` in a config file replaced by the environment
//! variable `NAME` before the file is parsed, so secrets need not be written
//! into it. `$$` is a literal `$` (as in Docker Compose files); any other `$`
//! is left as it is. A variable that is not set, or a `${` that does not
//! close on a valid name, is an error naming the variable and the line; every
//! such problem of the file is reported at once.
//!
//! Values go in verbatim (no quoting is added), so a value with a newline or
//! a `:` belongs in a quoted YAML string. Crates such as `shellexpand`
//! substitute too, but take `$NAME` as a variable and have neither the `$$`
//! escape nor line numbers; the grammar here is a dozen lines.

/// The text with every `${NAME}` replaced through `lookup`, or one line per problem.
pub(crate) fn substitute(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('{') {
                let Some(end) = tail.find('}').filter(|&end| is_name(&tail[..end])) else {
                    problems.push(format!("line {}: `${{` must start `${{NAME}}` (write `$${{` for a literal `${{`)", index + 1));
                    out.push('$');
                    rest = after;
                    continue;
                };
                let name = &tail[..end];
                match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => problems.push(format!("line {}: environment variable {name} is not set", index + 1)),
                }
                rest = &tail[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variables_and_keeps_other_dollars() {
        let text = "key: ${TOKEN}\nnone: '${EMPTY}'\nprice: $5 and $TOKEN\n";
        assert_eq!(substitute(text, env).unwrap(), "key: s3cr3t\nnone: ''\nprice: $5 and $TOKEN\n");
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(substitute("path: /a$${TOKEN}/$$", env).unwrap(), "path: /a${TOKEN}/$");
    }

    #[test]
    fn every_unset_variable_is_named_with_its_line() {
        let problems = substitute("a: ${TOKEN}\nb: ${DB_PASSWORD}\nc: ${API_KEY} ${TOKEN}\n", env).unwrap_err();
        assert_eq!(problems, ["line 2: environment variable DB_PASSWORD is not set", "line 3: environment variable API_KEY is not set"]);
    }

    #[test]
    fn an_unclosed_or_invalid_reference_is_an_error() {
        for text in ["a: ${TOKEN", "a: ${1X}", "a: ${}"] {
            let problems = substitute(text, env).unwrap_err();
            assert_eq!(problems.len(), 1, "{text}");
            assert!(problems[0].starts_with("line 1: `${` must start `${NAME}`"), "{}", problems[0]);
        }
    }
}
