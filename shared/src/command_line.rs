//! How every Portico binary reads its command line: clap parses it, and a
//! bad flag is reported as the one line the README promises
//! (`portico-cp: error: unexpected argument '--foo' found (see --help)`)
//! instead of clap's block of error, usage and hint. `--help` and
//! `--version` print as clap prints them. This is the one place here that
//! does I/O: it prints and exits.

use clap::error::ErrorKind;

/// Exit status of a bad command line: 1, as any failure to start (clap's
/// own 2 is left for a command's own meaning, such as a diff with changes).
const USAGE_EXIT: i32 = 1;

/// Parses the process's arguments with `command` into `P`; on a bad flag
/// prints one line to stderr and exits with status 1.
pub fn parse<P: clap::FromArgMatches>(mut command: clap::Command) -> P {
    let parsed = command.try_get_matches_from_mut(std::env::args_os()).and_then(|mut matches| P::from_arg_matches_mut(&mut matches));
    match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            let error = error.format(&mut command);
            match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => error.exit(),
                // A command that needs a subcommand and got none: its help, on stderr.
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = error.print();
                }
                _ => eprintln!("{}: error: {} (see --help)", command.get_name(), one_line(&error.render().to_string())),
            }
            std::process::exit(USAGE_EXIT)
        }
    }
}

/// A flag's value that is a share, 0 to 1 (`0.01` for 1 %).
pub fn share(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("'{value}' is not a share between 0 and 1")),
    }
}

/// clap's rendered error without its usage and help hint, on one line:
/// `error: ` dropped, indented lines joined, a tip after a semicolon.
fn one_line(rendered: &str) -> String {
    let mut line = String::new();
    for part in rendered.lines().take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information")).map(str::trim) {
        if part.is_empty() {
            continue;
        }
        let part = part.strip_prefix("error: ").unwrap_or(part);
        if !line.is_empty() {
            line.push_str(if part.starts_with("tip:") { "; " } else { " " });
        }
        line.push_str(part);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_clap_errors_into_one_line() {
        let rendered = "error: unexpected argument '--foo' found\n\n  tip: to pass '--foo' as a value, use '-- --foo'\n\nUsage: portico-cp [OPTIONS] [COMMAND]\n\nFor more information, try '--help'.\n";
        assert_eq!(one_line(rendered), "unexpected argument '--foo' found; tip: to pass '--foo' as a value, use '-- --foo'");
        let missing = "error: the following required arguments were not provided:\n  --file <FILE>\n\nUsage: portico apply --file <FILE>\n";
        assert_eq!(one_line(missing), "the following required arguments were not provided: --file <FILE>");
    }
}
