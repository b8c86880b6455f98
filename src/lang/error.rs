//! Errors of the segment language: what went wrong, the span of the source
//! it concerns, and hints, rendered with the source line and a caret.

use std::fmt;

use serde::Serialize;

/// A byte range of the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// An error in a segment condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LangError {
    pub message: String,
    pub span: Span,
    pub hint: Option<String>,
}

impl LangError {
    pub fn new(message: impl Into<String>, span: Span) -> Self {
        Self {
            message: message.into(),
            span,
            hint: None,
        }
    }

    /// The same error pointing at `span`.
    pub fn with_span(mut self, span: Span) -> Self {
        self.span = span;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error with the offending line of `source` and a caret under the
    /// span:
    ///
    /// ```text
    /// error: unknown attribute `contry`
    ///   |
    /// 1 | contry = 'France'
    ///   | ^^^^^^
    ///   = help: did you mean `country`?
    /// ```
    pub fn render(&self, source: &str) -> String {
        let start = self.span.start.min(source.len());
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let line_no = source[..line_start].matches('\n').count() + 1;
        let line = &source[line_start..line_end];
        let col = source[line_start..start].chars().count();
        let end = self.span.end.clamp(start, line_end);
        let width = source[start..end].chars().count().max(1);
        let gutter = " ".repeat(line_no.to_string().len());
        let mut out = format!(
            "error: {}\n{gutter} |\n{line_no} | {line}\n{gutter} | {}{}",
            self.message,
            " ".repeat(col),
            "^".repeat(width)
        );
        if let Some(hint) = &self.hint {
            out.push_str(&format!("\n{gutter} = help: {hint}"));
        }
        out
    }
}

impl fmt::Display for LangError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}..{}",
            self.message, self.span.start, self.span.end
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for LangError {}

/// The closest of `candidates` to `name` by edit distance, if close enough
/// to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&name, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len().max(name.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_caret_under_the_span() {
        let err = LangError::new("unknown attribute `contry`", Span::new(0, 6))
            .with_hint("did you mean `country`?");
        assert_eq!(
            err.render("contry = 'France'"),
            "error: unknown attribute `contry`\n  |\n1 | contry = 'France'\n  | ^^^^^^\n  = help: did you mean `country`?"
        );
        let err = LangError::new("expected a value", Span::new(19, 20));
        assert_eq!(
            err.render("a = 1 AND\nb IN (1, )"),
            "error: expected a value\n  |\n2 | b IN (1, )\n  |          ^"
        );
    }

    #[test]
    fn suggests_near_names_only() {
        let names = ["country", "city", "orders_count"];
        assert_eq!(did_you_mean("contry", names), Some("country"));
        assert_eq!(did_you_mean("CITY", names), Some("city"));
        assert_eq!(did_you_mean("order_count", names), Some("orders_count"));
        assert_eq!(did_you_mean("zzz", names), None);
    }
}
