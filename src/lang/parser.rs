//! Tokens to syntax tree: a recursive-descent parser for
//!
//! ```text
//! condition  := or
//! or         := and ("OR" and)*
//! and        := unary ("AND" unary)*
//! unary      := "NOT" unary | "(" condition ")" | predicate
//! predicate  := name arguments ["=" ("true" | "false")]
//!             | attribute op value
//!             | attribute ["NOT"] "BETWEEN" value "AND" value
//!             | attribute ["NOT"] "IN" "(" value ("," value)* ")"
//!             | attribute ["NOT"] "IN" month_day ".." month_day
//!             | attribute ["NOT"] "IN" ("NEXT" | "LAST") integer ("DAYS" | "DAY")
//!             | attribute ["NOT"] "IN" period
//!             | attribute "IS" ["NOT"] "NULL"
//! attribute  := name [arguments]
//! arguments  := "(" [argument ("," argument)*] ")"
//! argument   := name ":" value | name ":" value ".." [value] | name ":" ".." value
//!             | name | 'text'
//! op         := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//! value      := number | 'text' | YYYY-MM-DD | MM-DD | ±N(d|w|m|y) | "today" | "true" | "false"
//!             | period
//! period     := "this_month" | "last_month" | "this_year" | "last_year" | "before_this_year"
//! ```
//!
//! Keywords are case-blind. Nesting deeper than [`MAX_DEPTH`] is refused
//! rather than risking the stack.

use super::ast::{
    Argument, Arguments, Attr, CompareOp, Condition, DateRange, Literal, Name, Period, Positional,
    Value,
};
use super::error::LangError;
use super::lexer::{Token, TokenKind, lex};

/// Deepest nesting of parentheses and `NOT`s accepted.
pub const MAX_DEPTH: usize = 200;

const KEYWORDS: [&str; 13] = [
    "and", "or", "not", "in", "between", "is", "null", "true", "false", "today", "next", "last",
    "days",
];

/// Parses a whole condition.
pub fn parse(source: &str) -> Result<Condition, LangError> {
    let tokens = lex(source)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let condition = parser.condition()?;
    let next = parser.peek();
    if next.kind != TokenKind::Eof {
        return Err(LangError::new(
            format!(
                "expected AND, OR or the end of the condition, found {}",
                next.kind.describe()
            ),
            next.span,
        )
        .with_hint("join conditions with AND or OR"));
    }
    Ok(condition)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        token
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.peek().kind, TokenKind::Ident(name) if name.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.is_keyword(keyword);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, kind: TokenKind, what: &str) -> Result<Token, LangError> {
        if self.peek().kind == kind {
            return Ok(self.bump());
        }
        Err(self.unexpected(what))
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), LangError> {
        if self.eat_keyword(keyword) {
            return Ok(());
        }
        Err(self.unexpected(&format!("`{}`", keyword.to_ascii_uppercase())))
    }

    fn unexpected(&self, expected: &str) -> LangError {
        let token = self.peek();
        LangError::new(
            format!("expected {expected}, found {}", token.kind.describe()),
            token.span,
        )
    }

    fn enter(&mut self) -> Result<(), LangError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(LangError::new(
                format!("the condition is nested more than {MAX_DEPTH} levels deep"),
                self.peek().span,
            ));
        }
        Ok(())
    }

    fn condition(&mut self) -> Result<Condition, LangError> {
        self.enter()?;
        let mut parts = vec![self.and()?];
        while self.eat_keyword("or") {
            parts.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Condition, LangError> {
        let mut parts = vec![self.unary()?];
        while self.eat_keyword("and") {
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Condition, LangError> {
        if self.eat_keyword("not") {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        if self.peek().kind == TokenKind::LParen {
            self.bump();
            let inner = self.condition()?;
            self.expect(TokenKind::RParen, "`)` to close `(`")?;
            return Ok(inner);
        }
        self.predicate()
    }

    fn name(&mut self, what: &str) -> Result<Name, LangError> {
        match &self.peek().kind {
            TokenKind::Ident(name) if !KEYWORDS.contains(&name.to_ascii_lowercase().as_str()) => {
                let name = name.clone();
                let span = self.bump().span;
                Ok(Name { name, span })
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn predicate(&mut self) -> Result<Condition, LangError> {
        let name = self.name("an attribute, a call such as bought(...), `NOT` or `(`")?;
        let arguments = if self.peek().kind == TokenKind::LParen {
            let arguments = self.arguments()?;
            if !self.starts_test() {
                return self.call(name, arguments);
            }
            Some(arguments)
        } else {
            None
        };
        let attribute = Attr { name, arguments };
        let op = match self.peek().kind {
            TokenKind::Eq => Some(CompareOp::Eq),
            TokenKind::NotEq => Some(CompareOp::NotEq),
            TokenKind::Lt => Some(CompareOp::Lt),
            TokenKind::LtEq => Some(CompareOp::LtEq),
            TokenKind::Gt => Some(CompareOp::Gt),
            TokenKind::GtEq => Some(CompareOp::GtEq),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let value = self.value()?;
            return Ok(Condition::Compare {
                attribute,
                op,
                value,
            });
        }
        if self.eat_keyword("is") {
            let negated = self.eat_keyword("not");
            self.expect_keyword("null")?;
            return Ok(Condition::IsNull { attribute, negated });
        }
        let negated = self.eat_keyword("not");
        if self.eat_keyword("between") {
            let low = self.value()?;
            self.expect_keyword("and")?;
            let high = self.value()?;
            return Ok(Condition::Between {
                attribute,
                low,
                high,
                negated,
            });
        }
        if self.eat_keyword("in") {
            return self.in_tail(attribute, negated);
        }
        Err(self.unexpected(if negated {
            "`BETWEEN` or `IN` after `NOT`"
        } else {
            "a comparison (= != < <= > >=, BETWEEN, IN, IS NULL)"
        }))
    }

    /// Whether a comparison follows a call, making it an attribute with
    /// arguments (`orders_count(date: this_year) >= 2`) rather than a test
    /// of its own (`bought(...)`, `bought(...) = false`).
    fn starts_test(&self) -> bool {
        let next = &self.peek().kind;
        if *next == TokenKind::Eq {
            let after = &self.tokens[(self.pos + 1).min(self.tokens.len() - 1)].kind;
            return !matches!(after, TokenKind::Ident(word)
                if word.eq_ignore_ascii_case("true") || word.eq_ignore_ascii_case("false"));
        }
        matches!(
            next,
            TokenKind::NotEq | TokenKind::Lt | TokenKind::LtEq | TokenKind::Gt | TokenKind::GtEq
        ) || ["is", "not", "between", "in"]
            .iter()
            .any(|k| self.is_keyword(k))
    }

    fn in_tail(&mut self, attribute: Attr, negated: bool) -> Result<Condition, LangError> {
        if self.peek().kind == TokenKind::LParen {
            self.bump();
            let mut values = vec![self.value()?];
            while self.peek().kind == TokenKind::Comma {
                self.bump();
                values.push(self.value()?);
            }
            let close = self.expect(TokenKind::RParen, "`,` or `)`")?;
            let span = attribute.span().to(close.span);
            return Ok(Condition::InList {
                attribute,
                values,
                negated,
                span,
            });
        }
        if let TokenKind::MonthDay { .. } = self.peek().kind {
            let from = self.value()?;
            self.expect(
                TokenKind::DotDot,
                "`..` between the two month-days, as in 07-25..09-28",
            )?;
            let to = self.value()?;
            if !matches!(to.literal, Literal::MonthDay { .. }) {
                return Err(LangError::new(
                    "expected a month-day such as 09-28",
                    to.span,
                ));
            }
            return Ok(Condition::YearlyWindow {
                attribute,
                from,
                to,
                negated,
            });
        }
        if let TokenKind::Ident(word) = &self.peek().kind
            && Period::from_name(word).is_some()
        {
            let period = self.value()?;
            return Ok(Condition::InPeriod {
                attribute,
                period,
                negated,
            });
        }
        let start = self.peek().span;
        let future = if self.eat_keyword("next") {
            true
        } else if self.eat_keyword("last") {
            false
        } else {
            return Err(self.unexpected(
                "`(` with a list, a month-day window such as 07-25..09-28, NEXT/LAST n DAYS, or a \
                 period such as last_month",
            ));
        };
        let days = match self.peek().kind {
            TokenKind::Number(n) if n >= 0.0 && n.fract() == 0.0 && n <= 3660.0 => n as i64,
            _ => return Err(self.unexpected("a whole number of days from 0 to 3660")),
        };
        self.bump();
        if !(self.eat_keyword("days") || self.eat_keyword("day")) {
            return Err(self.unexpected("`DAYS`"));
        }
        let span = start.to(self.tokens[self.pos - 1].span);
        Ok(Condition::Anniversary {
            attribute,
            days,
            future,
            negated,
            span,
        })
    }

    /// `(argument, ...)`: named arguments (`key: value`, `key: from..to`),
    /// bare names and texts.
    fn arguments(&mut self) -> Result<Arguments, LangError> {
        let open = self.bump().span; // `(`
        let mut named = Vec::new();
        let mut positional = Vec::new();
        if self.peek().kind != TokenKind::RParen {
            loop {
                if let TokenKind::Str(_) = self.peek().kind {
                    positional.push(Positional::Text(self.value()?));
                } else {
                    let key = self.name("an argument such as category: 'Sofas' or 'cart_add'")?;
                    if self.peek().kind == TokenKind::Colon {
                        self.bump();
                        named.push(self.argument_value(key)?);
                    } else {
                        positional.push(Positional::Name(key));
                    }
                }
                if self.peek().kind != TokenKind::Comma {
                    break;
                }
                self.bump();
            }
        }
        let close = self.expect(TokenKind::RParen, "`,` or `)` in the argument list")?;
        Ok(Arguments {
            named,
            positional,
            span: open.to(close.span),
        })
    }

    /// A call that is a test of its own, optionally Shopify style
    /// `bought(...) = false`.
    fn call(&mut self, function: Name, arguments: Arguments) -> Result<Condition, LangError> {
        let span = function.span.to(arguments.span);
        let call = Condition::Call {
            function,
            arguments: arguments.named,
            positional: arguments.positional,
            span,
        };
        if self.peek().kind == TokenKind::Eq {
            self.bump();
            let truth = self.value()?;
            return match truth.literal {
                Literal::Bool(true) => Ok(call),
                Literal::Bool(false) => Ok(Condition::Not(Box::new(call))),
                _ => Err(LangError::new("expected true or false", truth.span)),
            };
        }
        Ok(call)
    }

    fn argument_value(&mut self, key: Name) -> Result<Argument, LangError> {
        let start = self.peek().span;
        if self.peek().kind == TokenKind::DotDot {
            let dots = self.bump().span;
            if matches!(self.peek().kind, TokenKind::Comma | TokenKind::RParen) {
                return Err(LangError::new(
                    format!("the range of `{}` has neither end", key.name),
                    dots,
                )
                .with_hint(format!(
                    "give one end or both, as in {0}: -30d.. or {0}: ..2011-12-31, or leave \
                     `{0}` out for no limit",
                    key.name
                )));
            }
            let to = self.value()?;
            let span = start.to(to.span);
            return Ok(Argument::Range {
                key,
                range: DateRange {
                    from: None,
                    to: Some(to),
                    span,
                },
            });
        }
        let value = self.value()?;
        if self.peek().kind != TokenKind::DotDot {
            return Ok(Argument::Value { key, value });
        }
        let dots = self.bump().span;
        let to = match self.peek().kind {
            TokenKind::Comma | TokenKind::RParen => None,
            _ => Some(self.value()?),
        };
        let span = value.span.to(to.as_ref().map_or(dots, |v| v.span));
        Ok(Argument::Range {
            key,
            range: DateRange {
                from: Some(value),
                to,
                span,
            },
        })
    }

    fn value(&mut self) -> Result<Value, LangError> {
        let token = self.peek().clone();
        let literal = match &token.kind {
            TokenKind::Number(n) => Literal::Number(*n),
            TokenKind::Str(s) => Literal::Text(s.clone()),
            TokenKind::Date { year, month, day } => Literal::Date {
                year: *year,
                month: *month,
                day: *day,
            },
            TokenKind::MonthDay { month, day } => Literal::MonthDay {
                month: *month,
                day: *day,
            },
            TokenKind::Relative { amount, unit } => Literal::Relative {
                amount: *amount,
                unit: *unit,
            },
            TokenKind::Ident(word) if word.eq_ignore_ascii_case("today") => Literal::Today,
            TokenKind::Ident(word) if let Some(period) = Period::from_name(word) => {
                Literal::Period(period)
            }
            TokenKind::Ident(word) if word.eq_ignore_ascii_case("true") => Literal::Bool(true),
            TokenKind::Ident(word) if word.eq_ignore_ascii_case("false") => Literal::Bool(false),
            TokenKind::Ident(word) => {
                return Err(LangError::new(
                    format!("expected a value, found the name `{word}`"),
                    token.span,
                )
                .with_hint(format!("write text in single quotes: '{word}'")));
            }
            _ => return Err(self.unexpected("a value (number, 'text', date, -30d, today)")),
        };
        self.bump();
        Ok(Value {
            literal,
            span: token.span,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::error::Span;

    fn err(source: &str) -> String {
        parse(source).unwrap_err().render(source)
    }

    #[test]
    fn precedence_and_not() {
        let c = parse("a = 1 OR b = 2 AND NOT (c = 3 OR d = 4)").unwrap();
        let Condition::Or(parts) = c else {
            panic!("{c:?}")
        };
        assert_eq!(parts.len(), 2);
        let Condition::And(and) = &parts[1] else {
            panic!("{:?}", parts[1])
        };
        assert!(matches!(&and[1], Condition::Not(inner) if matches!(**inner, Condition::Or(_))));
    }

    #[test]
    fn every_predicate_form() {
        for source in [
            "orders_count >= 3",
            "amount_spent BETWEEN 100 AND 500",
            "country NOT IN ('France', 'Germany')",
            "birthday IS NOT NULL",
            "birthday IN 07-25..09-28",
            "birthday NOT IN 12-02..01-03",
            "birthday IN NEXT 3 DAYS",
            "last_order_date < -90d AND first_order_date >= 2011-01-01",
            "bought(category: 'Sofas', date: -365d..today) AND NOT bought(category: 'Coffee tables')",
            "bought(product: 'iPod', date: -1m..) = false",
            "bought(category: 'Allergy', date: ..-1y, count: 2)",
            "in_segment(vip) OR in_segment(big_spenders)",
            "did('cart_add', date: -3d..today, count: 2) AND NOT bought(date: -3d..today)",
            "did('page_view', url: '%/sale%') = false",
            "last_did('login') < -30d OR first_did('signup') NOT IN this_year",
            "orders_count(date: -90d..today, channel: 'store') >= 2",
            "amount_spent(date: this_year) BETWEEN 100 AND 500",
            "last_order_date(channel: 'store') IS NULL",
        ] {
            parse(source).unwrap_or_else(|e| panic!("{}", e.render(source)));
        }
    }

    #[test]
    fn errors_point_at_the_problem() {
        assert_eq!(
            err("orders_count >> 3"),
            "error: expected a value (number, 'text', date, -30d, today), found `>`\n  |\n1 | orders_count >> 3\n  |               ^"
        );
        assert_eq!(
            err("country = France"),
            "error: expected a value, found the name `France`\n  |\n1 | country = France\n  |           ^^^^^^\n  = help: write text in single quotes: 'France'"
        );
        assert_eq!(
            err("(a = 1"),
            "error: expected `)` to close `(`, found the end of the condition\n  |\n1 | (a = 1\n  |       ^"
        );
        assert_eq!(
            err("a = 1 b = 2"),
            "error: expected AND, OR or the end of the condition, found `b`\n  |\n1 | a = 1 b = 2\n  |       ^\n  = help: join conditions with AND or OR"
        );
        // Found by fuzzing (fuzz/regressions/lang_text/range_without_ends).
        assert_eq!(
            err("bought(date: .., count: 2)"),
            "error: the range of `date` has neither end\n  |\n1 | bought(date: .., count: 2)\n  |              ^^\n  = help: give one end or both, as in date: -30d.. or date: ..2011-12-31, or leave `date` out for no limit"
        );
        assert!(err("birthday IN NEXT three DAYS").contains("expected a whole number of days"));
        assert!(err("a IN 07-25..2024-01-01").contains("expected a month-day such as 09-28"));
        assert_eq!(
            parse("a BETWEEN 1 OR 2").unwrap_err().span,
            Span::new(12, 14)
        );
    }

    #[test]
    fn calls_are_tests_or_attributes_by_what_follows() {
        let Condition::Call { positional, .. } = parse("did('cart_add', count: 2)").unwrap() else {
            panic!("expected a call")
        };
        assert!(matches!(&positional[..], [Positional::Text(_)]));
        assert!(matches!(
            parse("bought(date: -3d..today) = false").unwrap(),
            Condition::Not(_)
        ));
        let Condition::Compare { attribute, .. } =
            parse("orders_count(date: this_year) = 2").unwrap()
        else {
            panic!("expected a comparison")
        };
        assert_eq!(attribute.name.name, "orders_count");
        assert_eq!(attribute.span(), Span::new(0, 29));
        assert_eq!(attribute.arguments.map(|a| a.named.len()), Some(1));
        assert!(matches!(
            parse("last_did('login') NOT IN last_month").unwrap(),
            Condition::InPeriod { negated: true, .. }
        ));
        assert_eq!(
            err("did('a' 'b')"),
            "error: expected `,` or `)` in the argument list, found text 'b'\n  |\n1 | did('a' 'b')\n  |         ^^^"
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = format!("{}a = 1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(
            parse(&deep)
                .unwrap_err()
                .message
                .contains("nested more than 200")
        );
        let nots = format!("{}a = 1", "NOT ".repeat(10_000));
        assert!(parse(&nots).is_err());
    }

    /// A small deterministic generator for the no-panic tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn random_text_never_panics() {
        let alphabet: Vec<char> = "ab_(),:.'\"=!<>-+ 0123456789dwmyé\n".chars().collect();
        let mut rng = Rng(0x5E61);
        for _ in 0..20_000 {
            let len = rng.next(40);
            let text: String = (0..len)
                .map(|_| alphabet[rng.next(alphabet.len())])
                .collect();
            if let Err(e) = parse(&text) {
                // Rendering must not panic either, and the span is in bounds.
                assert!(e.span.end <= text.len(), "{text:?} {e:?}");
                let _ = e.render(&text);
            }
        }
    }

    #[test]
    fn random_token_sequences_never_panic() {
        let pieces = [
            "orders_count",
            "city",
            "bought",
            "in_segment",
            "NOT",
            "AND",
            "OR",
            "IN",
            "BETWEEN",
            "IS",
            "NULL",
            "NEXT",
            "LAST",
            "DAYS",
            "today",
            "true",
            "(",
            ")",
            ",",
            ":",
            "..",
            "=",
            "!=",
            "<",
            ">=",
            "3",
            "2.5",
            "'x'",
            "2024-03-01",
            "07-25",
            "-30d",
            "+3d",
            "category",
            "did",
            "'cart_add'",
            "last_did",
        ];
        let mut rng = Rng(0xC0FFEE);
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = 1 + rng.next(12);
            let text: Vec<&str> = (0..len).map(|_| pieces[rng.next(pieces.len())]).collect();
            let text = text.join(" ");
            match parse(&text) {
                Ok(_) => parsed += 1,
                Err(e) => {
                    assert!(e.span.end <= text.len(), "{text:?} {e:?}");
                    let _ = e.render(&text);
                }
            }
        }
        // Some random sequences are valid conditions.
        assert!(parsed > 0);
    }
}
