//! Backslash commands of the interactive prompt.

use std::str::FromStr;

use crate::output::Format;

/// One backslash command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    Help,
    /// `\d`: the tables.
    ListTables,
    /// `\d name`: a table's columns.
    DescribeTable(String),
    /// `\df [pattern]`: functions, with their documentation.
    ListFunctions(Option<String>),
    /// `\segments`: the saved segments.
    ListSegments,
    /// `\timing`: toggle printing how long each statement took.
    Timing,
    /// `\format FMT`: change the output format.
    SetFormat(Format),
}

/// Each command, its arguments and what it does, for `\?`.
pub const HELP: &[(&str, &str, &str)] = &[
    ("\\q", "", "quit"),
    ("\\?", "", "this help"),
    ("\\d", "[table]", "list tables, or the columns of one"),
    (
        "\\df",
        "[pattern]",
        "list functions whose name contains pattern, with their docs",
    ),
    (
        "\\segments",
        "",
        "list the saved segments (files and store) and their conditions",
    ),
    (
        "\\timing",
        "",
        "turn printing of each statement's run time on or off",
    ),
    (
        "\\format",
        "table|csv|json|ndjson",
        "change the output format",
    ),
];

impl FromStr for Command {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_end_matches(';').trim();
        let (name, argument) = match text.split_once(char::is_whitespace) {
            Some((name, argument)) => (name, Some(argument.trim().to_string())),
            None => (text, None),
        };
        let argument = argument.filter(|a| !a.is_empty());
        Ok(match (name, argument) {
            ("\\q" | "\\quit", None) => Self::Quit,
            ("\\?" | "\\h" | "\\help", None) => Self::Help,
            ("\\d", None) => Self::ListTables,
            ("\\d", Some(table)) => Self::DescribeTable(table),
            ("\\df", pattern) => Self::ListFunctions(pattern),
            ("\\segments", None) => Self::ListSegments,
            ("\\timing", None) => Self::Timing,
            ("\\format", Some(format)) => {
                match <Format as clap::ValueEnum>::from_str(&format, true) {
                    Ok(Format::Parquet) | Err(_) => {
                        return Err(format!(
                            "unknown format `{format}`; use table, csv, json or ndjson"
                        ));
                    }
                    Ok(format) => Self::SetFormat(format),
                }
            }
            ("\\format", None) => {
                return Err("\\format needs a format: table, csv, json or ndjson".into());
            }
            (name, _) => {
                return Err(format!(
                    "unknown or malformed command `{name}`; \\? lists the commands"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!("\\q".parse(), Ok(Command::Quit));
        assert_eq!("\\d".parse(), Ok(Command::ListTables));
        assert_eq!(
            "\\d orders".parse(),
            Ok(Command::DescribeTable("orders".into()))
        );
        assert_eq!(
            "\\df rfm".parse(),
            Ok(Command::ListFunctions(Some("rfm".into())))
        );
        assert_eq!("\\df".parse(), Ok(Command::ListFunctions(None)));
        assert_eq!("\\format csv".parse(), Ok(Command::SetFormat(Format::Csv)));
        assert!("\\format parquet".parse::<Command>().is_err());
        assert_eq!(
            "\\format xml".parse::<Command>(),
            Err("unknown format `xml`; use table, csv, json or ndjson".into())
        );
        assert_eq!(
            "\\x".parse::<Command>(),
            Err("unknown or malformed command `\\x`; \\? lists the commands".into())
        );
    }
}
