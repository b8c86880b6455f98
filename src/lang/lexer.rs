//! Text to tokens. Every token carries its span; dates (`2024-03-01`),
//! month-days (`07-25`) and relative dates (`-30d`) are tokens of their own,
//! since the language has no arithmetic.

use serde::Serialize;

use super::error::{LangError, Span};
use crate::time::is_leap;

/// Units of a relative date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    Day,
    Week,
    Month,
    Year,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum TokenKind {
    /// A name: an attribute, a function, a keyword, a segment code.
    Ident(String),
    Number(f64),
    Str(String),
    /// `YYYY-MM-DD`.
    Date {
        year: i32,
        month: u32,
        day: u32,
    },
    /// `MM-DD`.
    MonthDay {
        month: u32,
        day: u32,
    },
    /// `-30d`, `+3d`, `-4w`, `-12m`, `-1y`.
    Relative {
        amount: i64,
        unit: Unit,
    },
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    LParen,
    RParen,
    Comma,
    Colon,
    DotDot,
    Eof,
}

impl TokenKind {
    /// How the token is named in "expected ..., found ..." messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Ident(name) => format!("`{name}`"),
            Self::Number(n) => format!("number {n}"),
            Self::Str(s) => format!("text '{s}'"),
            Self::Date { year, month, day } => format!("date {year:04}-{month:02}-{day:02}"),
            Self::MonthDay { month, day } => format!("month-day {month:02}-{day:02}"),
            Self::Relative { .. } => "a relative date".to_string(),
            Self::Eq => "`=`".to_string(),
            Self::NotEq => "`!=`".to_string(),
            Self::Lt => "`<`".to_string(),
            Self::LtEq => "`<=`".to_string(),
            Self::Gt => "`>`".to_string(),
            Self::GtEq => "`>=`".to_string(),
            Self::LParen => "`(`".to_string(),
            Self::RParen => "`)`".to_string(),
            Self::Comma => "`,`".to_string(),
            Self::Colon => "`:`".to_string(),
            Self::DotDot => "`..`".to_string(),
            Self::Eof => "the end of the condition".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

/// Splits `source` into tokens, ending with [`TokenKind::Eof`].
pub fn lex(source: &str) -> Result<Vec<Token>, LangError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // `--` comments run to the end of the line.
        if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let single = |kind| Token {
            kind,
            span: Span::new(start, start + 1),
        };
        let double = |kind| Token {
            kind,
            span: Span::new(start, start + 2),
        };
        let next = bytes.get(i + 1).copied();
        let token = match c {
            b'(' => single(TokenKind::LParen),
            b')' => single(TokenKind::RParen),
            b',' => single(TokenKind::Comma),
            b':' => single(TokenKind::Colon),
            b'=' if next == Some(b'=') => double(TokenKind::Eq),
            b'=' => single(TokenKind::Eq),
            b'!' if next == Some(b'=') => double(TokenKind::NotEq),
            b'<' if next == Some(b'>') => double(TokenKind::NotEq),
            b'<' if next == Some(b'=') => double(TokenKind::LtEq),
            b'<' => single(TokenKind::Lt),
            b'>' if next == Some(b'=') => double(TokenKind::GtEq),
            b'>' => single(TokenKind::Gt),
            b'.' if next == Some(b'.') => double(TokenKind::DotDot),
            b'\'' => string(source, start)?,
            b'"' => quoted_ident(source, start)?,
            b'0'..=b'9' => number_or_date(source, start)?,
            b'+' | b'-' if next.is_some_and(|n| n.is_ascii_digit()) => signed(source, start)?,
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = scan(bytes, start, |b| b.is_ascii_alphanumeric() || b == b'_');
                Token {
                    kind: TokenKind::Ident(source[start..end].to_string()),
                    span: Span::new(start, end),
                }
            }
            _ => {
                let ch = source[start..].chars().next().unwrap_or('?');
                return Err(LangError::new(
                    format!("unexpected character `{ch}`"),
                    Span::new(start, start + ch.len_utf8()),
                )
                .with_hint(
                    "conditions use names, numbers, 'text', dates, ( ) , : .. and = != < <= > >=",
                ));
            }
        };
        i = token.span.end;
        tokens.push(token);
    }
    tokens.push(Token {
        kind: TokenKind::Eof,
        span: Span::new(source.len(), source.len()),
    });
    Ok(tokens)
}

fn scan(bytes: &[u8], mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
    while i < bytes.len() && keep(bytes[i]) {
        i += 1;
    }
    i
}

fn string(source: &str, start: usize) -> Result<Token, LangError> {
    let mut text = String::new();
    let mut chars = source[start + 1..].char_indices();
    while let Some((offset, ch)) = chars.next() {
        if ch == '\'' {
            // `''` is a quote inside the text.
            if source[start + 1 + offset + 1..].starts_with('\'') {
                text.push('\'');
                chars.next();
                continue;
            }
            return Ok(Token {
                kind: TokenKind::Str(text),
                span: Span::new(start, start + 1 + offset + 1),
            });
        }
        text.push(ch);
    }
    Err(
        LangError::new("unterminated text", Span::new(start, source.len()))
            .with_hint("close the text with `'` (write `''` for a quote inside it)"),
    )
}

fn quoted_ident(source: &str, start: usize) -> Result<Token, LangError> {
    match source[start + 1..].find('"') {
        Some(len) => Ok(Token {
            kind: TokenKind::Ident(source[start + 1..start + 1 + len].to_string()),
            span: Span::new(start, start + len + 2),
        }),
        None => Err(
            LangError::new("unterminated quoted name", Span::new(start, source.len()))
                .with_hint("close the name with `\"`"),
        ),
    }
}

/// Digits starting at `start`: a number, a `YYYY-MM-DD` date or an `MM-DD`
/// month-day.
fn number_or_date(source: &str, start: usize) -> Result<Token, LangError> {
    let bytes = source.as_bytes();
    let digits_end = scan(bytes, start, |b| b.is_ascii_digit());
    let digits = digits_end - start;
    let two_digits_at = |i: usize| {
        bytes.get(i).is_some_and(u8::is_ascii_digit)
            && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
            && !bytes.get(i + 2).is_some_and(u8::is_ascii_digit)
    };
    let bad = |what: &str, end: usize| {
        Err(LangError::new(
            format!("`{}` is not a valid {what}", &source[start..end]),
            Span::new(start, end),
        ))
    };
    if digits == 4
        && bytes.get(digits_end) == Some(&b'-')
        && two_digits_at(digits_end + 1)
        && bytes.get(digits_end + 3) == Some(&b'-')
        && two_digits_at(digits_end + 4)
    {
        let end = digits_end + 6;
        let year: i32 = source[start..start + 4].parse().unwrap_or(0);
        let month: u32 = source[start + 5..start + 7].parse().unwrap_or(0);
        let day: u32 = source[start + 8..start + 10].parse().unwrap_or(0);
        if !valid_day(month, day, is_leap(year)) {
            return bad("date (YYYY-MM-DD)", end);
        }
        return Ok(Token {
            kind: TokenKind::Date { year, month, day },
            span: Span::new(start, end),
        });
    }
    if digits == 2 && bytes.get(digits_end) == Some(&b'-') && two_digits_at(digits_end + 1) {
        let end = digits_end + 3;
        let month: u32 = source[start..start + 2].parse().unwrap_or(0);
        let day: u32 = source[start + 3..start + 5].parse().unwrap_or(0);
        if !valid_day(month, day, true) {
            return bad("month-day (MM-DD)", end);
        }
        return Ok(Token {
            kind: TokenKind::MonthDay { month, day },
            span: Span::new(start, end),
        });
    }
    let mut end = digits_end;
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end = scan(bytes, end + 1, |b| b.is_ascii_digit());
    }
    if bytes
        .get(end)
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
    {
        let word_end = scan(bytes, end, |b| b.is_ascii_alphanumeric() || b == b'_');
        return Err(LangError::new(
            format!("`{}` is not a number", &source[start..word_end]),
            Span::new(start, word_end),
        )
        .with_hint(
            "relative dates need a sign, as in -30d or +3d; names cannot start with a digit",
        ));
    }
    let value: f64 = source[start..end]
        .parse()
        .map_err(|_| LangError::new("not a number", Span::new(start, end)))?;
    Ok(Token {
        kind: TokenKind::Number(value),
        span: Span::new(start, end),
    })
}

/// `-30d`, `+3w`, or a signed number `-5`, `-0.5`.
fn signed(source: &str, start: usize) -> Result<Token, LangError> {
    let bytes = source.as_bytes();
    let digits_end = scan(bytes, start + 1, |b| b.is_ascii_digit());
    let unit = bytes
        .get(digits_end)
        .and_then(|b| match b.to_ascii_lowercase() {
            b'd' => Some(Unit::Day),
            b'w' => Some(Unit::Week),
            b'm' => Some(Unit::Month),
            b'y' => Some(Unit::Year),
            _ => None,
        });
    let after_unit = bytes.get(digits_end + 1);
    if let Some(unit) = unit
        && !after_unit.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        let amount: i64 = source[start + 1..digits_end].parse().map_err(|_| {
            LangError::new("the amount is too large", Span::new(start, digits_end + 1))
        })?;
        let amount = if bytes[start] == b'-' {
            -amount
        } else {
            amount
        };
        return Ok(Token {
            kind: TokenKind::Relative { amount, unit },
            span: Span::new(start, digits_end + 1),
        });
    }
    let token = number_or_date(source, start + 1)?;
    match token.kind {
        TokenKind::Number(n) => Ok(Token {
            kind: TokenKind::Number(if bytes[start] == b'-' { -n } else { n }),
            span: Span::new(start, token.span.end),
        }),
        _ => Err(LangError::new(
            "a date cannot have a sign",
            Span::new(start, token.span.end),
        )
        .with_hint("write relative dates as -30d, -4w, -12m, -1y or +3d")),
    }
}

pub(crate) fn valid_day(month: u32, day: u32, leap: bool) -> bool {
    let last = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=last).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<TokenKind> {
        lex(source).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn dates_month_days_and_relative_dates() {
        use TokenKind::*;
        assert_eq!(
            kinds("last_order_date < -90d AND birthday IN 07-25..09-28"),
            vec![
                Ident("last_order_date".into()),
                Lt,
                Relative {
                    amount: -90,
                    unit: Unit::Day
                },
                Ident("AND".into()),
                Ident("birthday".into()),
                Ident("IN".into()),
                MonthDay { month: 7, day: 25 },
                DotDot,
                MonthDay { month: 9, day: 28 },
                Eof
            ]
        );
        assert_eq!(
            kinds("2024-02-29 +3d -4w -12m -1y -5 2.5 'it''s'"),
            vec![
                Date {
                    year: 2024,
                    month: 2,
                    day: 29
                },
                Relative {
                    amount: 3,
                    unit: Unit::Day
                },
                Relative {
                    amount: -4,
                    unit: Unit::Week
                },
                Relative {
                    amount: -12,
                    unit: Unit::Month
                },
                Relative {
                    amount: -1,
                    unit: Unit::Year
                },
                Number(-5.0),
                Number(2.5),
                Str("it's".into()),
                Eof
            ]
        );
    }

    #[test]
    fn spans_and_comments() {
        let tokens = lex("a -- note\n>= 10").unwrap();
        assert_eq!(tokens[1].span, Span::new(10, 12));
        assert_eq!(tokens[2].span, Span::new(13, 15));
    }

    #[test]
    fn lexical_errors() {
        let err = |s: &str| lex(s).unwrap_err();
        assert_eq!(
            err("2023-02-29").message,
            "`2023-02-29` is not a valid date (YYYY-MM-DD)"
        );
        assert_eq!(
            err("13-01").message,
            "`13-01` is not a valid month-day (MM-DD)"
        );
        assert_eq!(err("city = 'Paris").message, "unterminated text");
        assert_eq!(err("a # b").span, Span::new(2, 3));
        assert_eq!(err("30d").message, "`30d` is not a number");
        assert_eq!(err("amount > 5é").message, "unexpected character `é`");
    }
}
