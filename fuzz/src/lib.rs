//! What segql's fuzz targets share: conditions and statement texts built
//! from `arbitrary` input (structure-aware fuzzing: every text the
//! builders write follows the language's grammar), and the project over
//! the bundled Online Retail tables that the planning targets plan
//! against.

use std::fmt::Write;
use std::path::Path;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use segql::lang::ast::Period;
use segql::time::AsOf;
use segql::{Config, Project};

/// The day the planning targets plan on (the bundled data's last days).
pub const AS_OF: &str = "2011-12-10";

/// Deepest nesting the builders write; the parser refuses more than
/// `segql::lang::parser::MAX_DEPTH`, and that refusal is tested apart.
const MAX_BUILT_DEPTH: usize = 40;

/// A condition of the segment language, as a tree the fuzzer fills in.
#[derive(Debug, Arbitrary)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Group(Box<Cond>),
    Compare(Attr, Op, Val),
    Between {
        attr: Attr,
        negated: bool,
        low: Val,
        high: Val,
    },
    InList {
        attr: Attr,
        negated: bool,
        first: Val,
        rest: Vec<Val>,
    },
    Window {
        attr: Attr,
        negated: bool,
        from: MonthDay,
        to: MonthDay,
    },
    NextLast {
        attr: Attr,
        negated: bool,
        next: bool,
        days: u16,
        plural: bool,
    },
    InPeriod {
        attr: Attr,
        negated: bool,
        period: PeriodName,
    },
    IsNull {
        attr: Attr,
        negated: bool,
    },
    Call {
        function: Function,
        arguments: Vec<Arg>,
        equals: Option<bool>,
    },
}

/// An attribute: a known name or another name, with or without arguments.
#[derive(Debug, Arbitrary)]
pub struct Attr {
    pub name: AttrName,
    pub arguments: Option<Vec<Arg>>,
}

#[derive(Debug, Arbitrary)]
pub enum AttrName {
    Known(KnownAttr),
    Other(Ident),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum KnownAttr {
    Country,
    City,
    CreatedAt,
    CustomerId,
    OrdersCount,
    AmountSpent,
    AvgOrderValue,
    LastOrderDate,
    FirstOrderDate,
    DaysSinceLastOrder,
    RfmR,
    RfmF,
    RfmM,
    RfmCode,
    RfmGroup,
    FirstDid,
    LastDid,
    Birthday,
}

impl KnownAttr {
    fn name(self) -> &'static str {
        match self {
            Self::Country => "country",
            Self::City => "city",
            Self::CreatedAt => "created_at",
            Self::CustomerId => "customer_id",
            Self::OrdersCount => "orders_count",
            Self::AmountSpent => "amount_spent",
            Self::AvgOrderValue => "avg_order_value",
            Self::LastOrderDate => "last_order_date",
            Self::FirstOrderDate => "first_order_date",
            Self::DaysSinceLastOrder => "days_since_last_order",
            Self::RfmR => "rfm_r",
            Self::RfmF => "rfm_f",
            Self::RfmM => "rfm_m",
            Self::RfmCode => "rfm_code",
            Self::RfmGroup => "rfm_group",
            Self::FirstDid => "first_did",
            Self::LastDid => "last_did",
            Self::Birthday => "birthday",
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Function {
    Bought,
    Did,
    InSegment,
    Other,
}

/// A name: `x_` and letters, digits and `_` (never a keyword).
#[derive(Debug, Arbitrary)]
pub struct Ident(pub Vec<u8>);

impl Ident {
    fn write(&self, out: &mut String) {
        out.push_str("x_");
        for b in self.0.iter().take(12) {
            let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789_";
            out.push(char::from(alphabet[usize::from(*b) % alphabet.len()]));
        }
    }
}

#[derive(Debug, Arbitrary)]
pub enum Arg {
    Value(ArgKey, Val),
    Range(ArgKey, Option<Val>, Option<Val>),
    Name(SegmentName),
    Text(Text),
}

#[derive(Debug, Arbitrary)]
pub enum ArgKey {
    Date,
    Description,
    Count,
    Category,
    Campaign,
    Amount,
    ProductId,
    Other(Ident),
}

/// A segment code: one of the bundled examples, or another.
#[derive(Debug, Arbitrary)]
pub enum SegmentName {
    LapsedBigSpenders,
    OutsideUk,
    TeaNeverCoffee,
    LapsedBigSpendersAbroad,
    Other(Ident),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Op {
    Eq,
    DoubleEq,
    NotEq,
    Diamond,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

#[derive(Debug, Arbitrary)]
pub enum Val {
    Integer(i32),
    Decimal(u32, u16),
    Negative(u32),
    Text(Text),
    Date(u16, u8, u8),
    MonthDay(MonthDay),
    Relative { minus: bool, amount: u16, unit: u8 },
    Today,
    Bool(bool),
    Period(PeriodName),
}

/// Text in quotes, with any characters (quotes doubled).
#[derive(Debug, Arbitrary)]
pub struct Text(pub String);

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct MonthDay(pub u8, pub u8);

/// One of the language's calendar periods.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct PeriodName(u8);

impl PeriodName {
    fn name(self) -> &'static str {
        Period::ALL[usize::from(self.0) % Period::ALL.len()].name()
    }
}

const DAYS_IN_MONTH: [u8; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl MonthDay {
    /// A valid month and day (29 February included).
    fn valid(self) -> (u8, u8) {
        let month = self.0 % 12 + 1;
        let day = self.1 % DAYS_IN_MONTH[usize::from(month - 1)] + 1;
        (month, day)
    }

    fn write(self, out: &mut String) {
        let (month, day) = self.valid();
        let _ = write!(out, "{month:02}-{day:02}");
    }
}

fn is_leap(year: u16) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

impl Val {
    fn write(&self, out: &mut String) {
        match self {
            Self::Integer(n) => {
                let _ = write!(out, "{}", n.unsigned_abs());
            }
            Self::Decimal(whole, fraction) => {
                let _ = write!(out, "{whole}.{fraction}");
            }
            Self::Negative(n) => {
                let _ = write!(out, "-{n}");
            }
            Self::Text(text) => text.write(out),
            Self::Date(year, month, day) => {
                let year = 1000 + year % 9000;
                let month = month % 12 + 1;
                let mut last = DAYS_IN_MONTH[usize::from(month - 1)];
                if month == 2 && !is_leap(year) {
                    last = 28;
                }
                let day = day % last + 1;
                let _ = write!(out, "{year:04}-{month:02}-{day:02}");
            }
            Self::MonthDay(month_day) => month_day.write(out),
            Self::Relative {
                minus,
                amount,
                unit,
            } => {
                let unit = ["d", "w", "m", "y", "D", "W", "M", "Y"][usize::from(unit % 8)];
                let sign = if *minus { '-' } else { '+' };
                let _ = write!(out, "{sign}{amount}{unit}");
            }
            Self::Today => out.push_str("today"),
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Period(period) => out.push_str(period.name()),
        }
    }
}

impl Text {
    fn write(&self, out: &mut String) {
        out.push('\'');
        for ch in self.0.chars().take(40) {
            if ch == '\'' {
                out.push('\'');
            }
            out.push(ch);
        }
        out.push('\'');
    }
}

impl ArgKey {
    fn write(&self, out: &mut String) {
        match self {
            Self::Date => out.push_str("date"),
            Self::Description => out.push_str("description"),
            Self::Count => out.push_str("count"),
            Self::Category => out.push_str("category"),
            Self::Campaign => out.push_str("campaign"),
            Self::Amount => out.push_str("amount"),
            Self::ProductId => out.push_str("product_id"),
            Self::Other(ident) => ident.write(out),
        }
    }
}

impl SegmentName {
    fn write(&self, out: &mut String) {
        match self {
            Self::LapsedBigSpenders => out.push_str("lapsed_big_spenders"),
            Self::OutsideUk => out.push_str("outside_uk"),
            Self::TeaNeverCoffee => out.push_str("tea_never_coffee"),
            Self::LapsedBigSpendersAbroad => out.push_str("lapsed_big_spenders_abroad"),
            Self::Other(ident) => ident.write(out),
        }
    }
}

fn write_arguments(arguments: &[Arg], out: &mut String) {
    out.push('(');
    for (index, argument) in arguments.iter().take(6).enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        match argument {
            Arg::Value(key, value) => {
                key.write(out);
                out.push_str(": ");
                value.write(out);
            }
            Arg::Range(key, from, to) => {
                key.write(out);
                out.push_str(": ");
                if let Some(from) = from {
                    from.write(out);
                }
                out.push_str("..");
                match (from, to) {
                    (_, Some(to)) => to.write(out),
                    // A range needs one end at least.
                    (None, None) => out.push_str("today"),
                    (Some(_), None) => {}
                }
            }
            Arg::Name(name) => name.write(out),
            Arg::Text(text) => text.write(out),
        }
    }
    out.push(')');
}

impl Attr {
    fn write(&self, out: &mut String) {
        match &self.name {
            AttrName::Known(known) => out.push_str(known.name()),
            AttrName::Other(ident) => ident.write(out),
        }
        if let Some(arguments) = &self.arguments {
            write_arguments(arguments, out);
        }
    }
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::DoubleEq => "==",
            Self::NotEq => "!=",
            Self::Diamond => "<>",
            Self::Lt => "<",
            Self::LtEq => "<=",
            Self::Gt => ">",
            Self::GtEq => ">=",
        }
    }
}

fn not(negated: bool) -> &'static str {
    if negated { " NOT" } else { "" }
}

impl Cond {
    /// The condition as text that follows the grammar.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let depth = depth + 1;
        if depth > MAX_BUILT_DEPTH {
            out.push_str("country = 'France'");
            return;
        }
        match self {
            Self::And(a, b) | Self::Or(a, b) => {
                let word = if matches!(self, Self::And(..)) {
                    " AND "
                } else {
                    " or "
                };
                // Parenthesised, so the text reads as the tree was built.
                out.push('(');
                a.write(out, depth);
                out.push_str(word);
                b.write(out, depth);
                out.push(')');
            }
            Self::Not(inner) => {
                out.push_str("NOT ");
                inner.write(out, depth);
            }
            Self::Group(inner) => {
                out.push('(');
                inner.write(out, depth);
                out.push(')');
            }
            Self::Compare(attr, op, value) => {
                attr.write(out);
                let _ = write!(out, " {} ", op.text());
                value.write(out);
            }
            Self::Between {
                attr,
                negated,
                low,
                high,
            } => {
                attr.write(out);
                let _ = write!(out, "{} BETWEEN ", not(*negated));
                low.write(out);
                out.push_str(" AND ");
                high.write(out);
            }
            Self::InList {
                attr,
                negated,
                first,
                rest,
            } => {
                attr.write(out);
                let _ = write!(out, "{} IN (", not(*negated));
                first.write(out);
                for value in rest.iter().take(8) {
                    out.push_str(", ");
                    value.write(out);
                }
                out.push(')');
            }
            Self::Window {
                attr,
                negated,
                from,
                to,
            } => {
                attr.write(out);
                let _ = write!(out, "{} IN ", not(*negated));
                from.write(out);
                out.push_str("..");
                to.write(out);
            }
            Self::NextLast {
                attr,
                negated,
                next,
                days,
                plural,
            } => {
                attr.write(out);
                // The language takes 0 to 3660 days.
                let days = days % 3661;
                let _ = write!(
                    out,
                    "{} in {} {days} {}",
                    not(*negated),
                    if *next { "NEXT" } else { "last" },
                    if *plural { "DAYS" } else { "day" }
                );
            }
            Self::InPeriod {
                attr,
                negated,
                period,
            } => {
                attr.write(out);
                let _ = write!(out, "{} IN {}", not(*negated), period.name());
            }
            Self::IsNull { attr, negated } => {
                attr.write(out);
                let _ = write!(out, " IS{} NULL", not(*negated));
            }
            Self::Call {
                function,
                arguments,
                equals,
            } => {
                out.push_str(match function {
                    Function::Bought => "bought",
                    Function::Did => "did",
                    Function::InSegment => "in_segment",
                    Function::Other => "x_call",
                });
                write_arguments(arguments, out);
                if let Some(b) = equals {
                    out.push_str(if *b { " = true" } else { " = FALSE" });
                }
            }
        }
    }
}

/// A statement of a text mixing SQL and segment statements.
#[derive(Debug, Arbitrary)]
pub enum Stmt {
    Preview(Cond),
    Explain(Cond),
    Create {
        code: SegmentName,
        kind: Option<bool>,
        name: Option<Text>,
        comment: Option<Text>,
        condition: Cond,
    },
    Alter {
        code: SegmentName,
        condition: Cond,
    },
    Pin {
        code: SegmentName,
        exclude: bool,
        remove: bool,
        ids: Vec<i64>,
    },
    Drop {
        code: SegmentName,
        if_exists: bool,
    },
    Show,
    Refresh(Vec<SegmentName>),
    Sql(SqlQuery),
    Raw(String),
}

/// SQL over the bundled tables and segql's functions.
#[derive(Debug, Arbitrary)]
pub enum SqlQuery {
    Segment(Cond),
    SegmentMembers(SegmentName),
    InSegment(SegmentName),
    Rfm,
    Window(MonthDay, MonthDay),
    Anniversary(u8),
    Select(Val),
}

impl SqlQuery {
    fn write(&self, out: &mut String) {
        match self {
            Self::Segment(condition) => {
                out.push_str("SELECT count(*) FROM segment('");
                out.push_str(&condition.text().replace('\'', "''"));
                out.push_str("')");
            }
            Self::SegmentMembers(code) => {
                out.push_str("SELECT * FROM segment_members('");
                code.write(out);
                out.push_str("')");
            }
            Self::InSegment(code) => {
                out.push_str("SELECT customer_id FROM customers WHERE in_segment(customer_id, '");
                code.write(out);
                out.push_str("')");
            }
            Self::Rfm => out.push_str(
                "SELECT customer_id, rfm_quantile(amount, 5) OVER (ORDER BY amount) \
                 FROM (SELECT customer_id, sum(amount) AS amount FROM orders GROUP BY 1)",
            ),
            Self::Window(from, to) => {
                out.push_str("SELECT count(*) FROM customers WHERE in_yearly_window(created_at, '");
                from.write(out);
                out.push_str("', '");
                to.write(out);
                out.push_str("')");
            }
            Self::Anniversary(days) => {
                let _ = write!(
                    out,
                    "SELECT customer_id FROM customers \
                     WHERE days_to_anniversary(created_at, DATE '{AS_OF}') <= {days}"
                );
            }
            Self::Select(value) => {
                out.push_str("SELECT ");
                value.write(out);
            }
        }
    }
}

/// A text of statements separated by `;`.
pub fn statements_text(statements: &[Stmt]) -> String {
    let mut out = String::new();
    for statement in statements.iter().take(6) {
        match statement {
            Stmt::Preview(condition) => {
                out.push_str("PREVIEW SEGMENT ");
                out.push_str(&condition.text());
            }
            Stmt::Explain(condition) => {
                out.push_str("explain segment ");
                out.push_str(&condition.text());
            }
            Stmt::Create {
                code,
                kind,
                name,
                comment,
                condition,
            } => {
                out.push_str(match kind {
                    None => "CREATE SEGMENT ",
                    Some(true) => "CREATE STATIC SEGMENT ",
                    Some(false) => "create dynamic segment ",
                });
                code.write(&mut out);
                if let Some(name) = name {
                    out.push_str(" NAME ");
                    name.write(&mut out);
                }
                if let Some(comment) = comment {
                    out.push_str(" COMMENT ");
                    comment.write(&mut out);
                }
                out.push_str(" AS ");
                out.push_str(&condition.text());
            }
            Stmt::Alter { code, condition } => {
                out.push_str("ALTER SEGMENT ");
                code.write(&mut out);
                out.push_str(" AS ");
                out.push_str(&condition.text());
            }
            Stmt::Pin {
                code,
                exclude,
                remove,
                ids,
            } => {
                out.push_str("ALTER SEGMENT ");
                code.write(&mut out);
                if *remove {
                    out.push_str(" REMOVE");
                }
                out.push_str(if *exclude { " EXCLUDE (" } else { " INCLUDE (" });
                for (index, id) in ids.iter().take(8).enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{id}");
                }
                out.push(')');
            }
            Stmt::Drop { code, if_exists } => {
                out.push_str("DROP SEGMENT ");
                if *if_exists {
                    out.push_str("IF EXISTS ");
                }
                code.write(&mut out);
            }
            Stmt::Show => out.push_str("SHOW SEGMENTS"),
            Stmt::Refresh(codes) => {
                out.push_str("REFRESH SEGMENTS");
                for (index, code) in codes.iter().take(4).enumerate() {
                    out.push_str(if index == 0 { " " } else { ", " });
                    code.write(&mut out);
                }
            }
            Stmt::Sql(query) => query.write(&mut out),
            Stmt::Raw(text) => out.push_str(text),
        }
        out.push_str(";\n");
    }
    out
}

/// The bundled project (the repository's `segql.toml`: the Online Retail
/// tables and the example segments), opened once per fuzzing process, with
/// the runtime that opened it.
pub struct Bundled {
    pub runtime: tokio::runtime::Runtime,
    pub project: Project,
}

/// The bundled project, opened on first use.
pub fn bundled() -> &'static Bundled {
    static BUNDLED: OnceLock<Bundled> = OnceLock::new();
    BUNDLED.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| fatal(&format!("cannot start a runtime: {e}")));
        let config = Config::load(root.join("segql.toml"))
            .unwrap_or_else(|e| fatal(&format!("cannot read segql.toml: {e}")));
        let day = segql::time::parse_day(AS_OF).unwrap_or_else(|| fatal("bad AS_OF"));
        let project = runtime
            .block_on(Project::open(
                config,
                datafusion::prelude::SessionContext::new(),
                AsOf::day(day),
                false,
            ))
            .unwrap_or_else(|e| fatal(&format!("cannot open the bundled project: {e}")));
        Bundled { runtime, project }
    })
}

/// Stops the fuzzing process over a broken set-up (not a finding).
fn fatal(message: &str) -> ! {
    eprintln!("segql-fuzz set-up: {message}");
    std::process::exit(2)
}
