//! The question `apply` asks before it deletes: the entities that would go,
//! then `Delete them? [y/N]`. Asked only when standard input is a terminal
//! and `--yes` is not given; elsewhere (CI, pipes) `apply` does not ask,
//! as decK's `sync` does not. Only `y` or `yes` confirms; anything else,
//! including end of input, declines.

use std::io::{BufRead, Write};

use serde_json::Value;

/// The deletions in a diff, as `service users`.
pub(crate) fn deletions(diff: &Value) -> Vec<String> {
    diff["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|change| change["action"] == "delete")
        .map(|change| format!("{} {}", change["kind"].as_str().unwrap_or("entity"), change["name"].as_str().unwrap_or("")))
        .collect()
}

/// Lists `deletions` on `output`, asks, and reads the answer from `input`.
pub(crate) fn ask(deletions: &[String], input: &mut impl BufRead, output: &mut impl Write) -> std::io::Result<bool> {
    let count = deletions.len();
    writeln!(output, "This apply deletes {count} {}:", if count == 1 { "entity" } else { "entities" })?;
    for deletion in deletions {
        writeln!(output, "  - {deletion}")?;
    }
    write!(output, "Delete {}? [y/N] ", if count == 1 { "it" } else { "them" })?;
    output.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(typed: &str) -> (bool, String) {
        let mut output = Vec::new();
        let confirmed = ask(&["service old".into(), "route legacy".into()], &mut typed.as_bytes(), &mut output).unwrap();
        (confirmed, String::from_utf8(output).unwrap())
    }

    #[test]
    fn lists_the_deletions_then_asks() {
        let (_, shown) = answer("y\n");
        assert_eq!(shown, "This apply deletes 2 entities:\n  - service old\n  - route legacy\nDelete them? [y/N] ");
    }

    #[test]
    fn only_yes_confirms() {
        for (typed, confirmed) in
            [("y\n", true), ("YES\n", true), (" yes \n", true), ("n\n", false), ("\n", false), ("", false), ("ja\n", false)]
        {
            assert_eq!(answer(typed).0, confirmed, "{typed:?}");
        }
    }

    #[test]
    fn finds_the_deletions_of_a_diff() {
        let diff = json!({"changes": [
            {"kind": "service", "name": "new", "action": "create"},
            {"kind": "route", "name": "old", "action": "delete"},
            {"kind": "consumer", "name": "bob", "action": "update"}
        ]});
        assert_eq!(deletions(&diff), ["route old"]);
    }
}
