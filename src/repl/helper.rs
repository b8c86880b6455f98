//! The line editor's helper: a statement is complete when it ends with `;`
//! outside quotes and comments (or is a backslash command), and Tab
//! completes keywords, tables, columns, functions and segment codes.

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};

/// Words offered by completion besides the session's names.
const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "JOIN",
    "LEFT",
    "RIGHT",
    "FULL",
    "INNER",
    "OUTER",
    "ON",
    "USING",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "BETWEEN",
    "LIKE",
    "ILIKE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "DISTINCT",
    "UNION",
    "ALL",
    "WITH",
    "OVER",
    "PARTITION",
    "CREATE",
    "VIEW",
    "TABLE",
    "DROP",
    "EXPLAIN",
    "PREVIEW",
    "SEGMENT",
    "DESC",
    "ASC",
    "COUNT",
    "CAST",
    "DATE",
    "TIMESTAMP",
    "INTERVAL",
    "TRUE",
    "FALSE",
    "SHOW",
    "SET",
    "VALUES",
];

#[derive(Debug, Default)]
pub struct ReplHelper {
    /// Table, column, function and segment names of the session.
    pub names: Vec<String>,
}

/// Whether `text` holds a whole statement: a backslash command, or text
/// whose last significant character is a `;` outside quotes and comments.
pub fn is_complete(text: &str) -> bool {
    let trimmed = text.trim_start();
    if trimmed.starts_with('\\') || trimmed.is_empty() {
        return true;
    }
    let mut chars = text.chars().peekable();
    let mut last_significant = None;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == c {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return false;
                }
                last_significant = Some(c);
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                let mut closed = false;
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        closed = true;
                        break;
                    }
                    prev = d;
                }
                if !closed {
                    return false;
                }
            }
            c if c.is_whitespace() => {}
            c => last_significant = Some(c),
        }
    }
    last_significant == Some(';')
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if is_complete(ctx.input()) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos.min(line.len())];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| {
                i + before[i..].chars().next().map_or(1, char::len_utf8)
            });
        let prefix = &before[start..];
        if prefix.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let lower = prefix.to_ascii_lowercase();
        let mut candidates: Vec<String> = KEYWORDS
            .iter()
            .map(|k| {
                // Keep the case the user is typing in.
                if prefix.chars().next().is_some_and(char::is_lowercase) {
                    k.to_ascii_lowercase()
                } else {
                    k.to_string()
                }
            })
            .chain(self.names.iter().cloned())
            .filter(|c| c.to_ascii_lowercase().starts_with(&lower))
            .collect();
        candidates.sort();
        candidates.dedup();
        Ok((
            start,
            candidates
                .into_iter()
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: c,
                })
                .collect(),
        ))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {}

impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_a_semicolon_outside_quotes_and_comments() {
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete("SELECT 1;  \n"));
        assert!(is_complete("\\d orders"));
        assert!(is_complete(""));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';"));
        assert!(is_complete("SELECT ';';"));
        assert!(!is_complete("SELECT 1 -- done;"));
        assert!(is_complete("SELECT 1; -- done"));
        assert!(!is_complete("SELECT /* ; */ 1"));
        assert!(is_complete("PREVIEW SEGMENT country = 'France';"));
    }

    #[test]
    fn completes_keywords_and_names() {
        let helper = ReplHelper {
            names: vec!["orders".into(), "order_items".into(), "rfm_quantile".into()],
        };
        let history = rustyline::history::DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, found) = helper.complete("SELECT * FROM ord", 17, &ctx).unwrap();
        assert_eq!(start, 14);
        let words: Vec<_> = found.iter().map(|p| p.replacement.as_str()).collect();
        assert_eq!(words, ["order", "order_items", "orders"]);
        let (_, found) = helper.complete("sel", 3, &ctx).unwrap();
        assert_eq!(found[0].replacement, "select");
        let (_, found) = helper.complete("SELECT rfm_q", 12, &ctx).unwrap();
        assert_eq!(found[0].replacement, "rfm_quantile");
    }
}
