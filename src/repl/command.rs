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

/// The backslash commands by name: what `\\?` lists and what parsing
/// looks names up in, so the two cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Quit,
    Help,
    Describe,
    Functions,
    Segments,
    Timing,
    Format,
}

impl Meta {
    /// Every command, in the order help lists them.
    pub const ALL: [Meta; 7] = [
        Self::Quit,
        Self::Help,
        Self::Describe,
        Self::Functions,
        Self::Segments,
        Self::Timing,
        Self::Format,
    ];

    /// The command's names, the one help shows first.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Self::Quit => &["\\q", "\\quit"],
            Self::Help => &["\\?", "\\h", "\\help"],
            Self::Describe => &["\\d"],
            Self::Functions => &["\\df"],
            Self::Segments => &["\\segments"],
            Self::Timing => &["\\timing"],
            Self::Format => &["\\format"],
        }
    }

    /// Its arguments, as help shows them.
    pub fn arguments(self) -> &'static str {
        match self {
            Self::Describe => "[table]",
            Self::Functions => "[pattern]",
            Self::Format => "table|csv|json|ndjson",
            _ => "",
        }
    }

    /// What it does.
    pub fn about(self) -> &'static str {
        match self {
            Self::Quit => "quit",
            Self::Help => "this help",
            Self::Describe => "list tables, or the columns of one",
            Self::Functions => "list functions whose name contains pattern, with their docs",
            Self::Segments => "list the saved segments (files and store) and their conditions",
            Self::Timing => "turn printing of each statement's run time on or off",
            Self::Format => "change the output format",
        }
    }

    fn find(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.names().contains(&name))
    }
}

/// Each command, its arguments and what it does, for `\\?`.
pub fn help() -> Vec<(&'static str, &'static str, &'static str)> {
    Meta::ALL
        .iter()
        .map(|m| (m.names()[0], m.arguments(), m.about()))
        .collect()
}

impl FromStr for Command {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_end_matches(';').trim();
        let (name, argument) = match text.split_once(char::is_whitespace) {
            Some((name, argument)) => (name, Some(argument.trim().to_string())),
            None => (text, None),
        };
        let argument = argument.filter(|a| !a.is_empty());
        let unknown = || format!("unknown or malformed command `{name}`; \\? lists the commands");
        let meta = Meta::find(name).ok_or_else(unknown)?;
        Ok(match (meta, argument) {
            (Meta::Quit, None) => Self::Quit,
            (Meta::Help, None) => Self::Help,
            (Meta::Describe, None) => Self::ListTables,
            (Meta::Describe, Some(table)) => Self::DescribeTable(table),
            (Meta::Functions, pattern) => Self::ListFunctions(pattern),
            (Meta::Segments, None) => Self::ListSegments,
            (Meta::Timing, None) => Self::Timing,
            (Meta::Format, Some(format)) => {
                match <Format as clap::ValueEnum>::from_str(&format, true) {
                    Ok(Format::Parquet) | Err(_) => {
                        return Err(format!(
                            "unknown format `{format}`; use table, csv, json or ndjson"
                        ));
                    }
                    Ok(format) => Self::SetFormat(format),
                }
            }
            (Meta::Format, None) => {
                return Err("\\format needs a format: table, csv, json or ndjson".into());
            }
            (_, Some(_)) => return Err(unknown()),
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
        assert_eq!(
            "\\q now".parse::<Command>(),
            Err("unknown or malformed command `\\q`; \\? lists the commands".into())
        );
    }

    #[test]
    fn help_lists_every_command_by_the_name_it_parses() {
        let help = help();
        assert_eq!(help.len(), Meta::ALL.len());
        for (name, _, about) in help {
            assert!(!about.is_empty());
            assert!(Meta::find(name).is_some(), "{name}");
        }
        assert_eq!("\\quit".parse(), Ok(Command::Quit));
        assert_eq!("\\help".parse(), Ok(Command::Help));
    }
}
