//! Segment statements that change or list the store: `CREATE SEGMENT`,
//! `ALTER SEGMENT`, `DROP SEGMENT`, `SHOW SEGMENTS`, `REFRESH SEGMENTS`.
//!
//! ```text
//! CREATE [STATIC | DYNAMIC] SEGMENT code [NAME '...'] [COMMENT '...'] AS <condition>
//! ALTER SEGMENT code [NAME '...'] [COMMENT '...'] [ACTIVE | INACTIVE] [AS <condition>]
//! DROP SEGMENT [IF EXISTS] code
//! SHOW SEGMENTS
//! REFRESH SEGMENTS [code, ...]
//! ```
//!
//! A dynamic segment (the default) is formed by its first refresh and
//! recalculated by every refresh while active; a static one is formed when
//! created, on the session's `as_of` day, and never changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, cast, col, lit};
use datafusion::prelude::{CsvReadOptions, SessionContext};

use super::env::{StatementEnv, StatementResult};
use crate::error::Error;
use crate::refresh::{self, RefreshOptions};
use crate::segment::catalog::is_valid_code;
use crate::segment::columns::{Role, SourceTable};
use crate::segment::{SegmentCatalog, SegmentGraph, plan_text};
use crate::store::StoreError;
use crate::store::read::{self, live_definitions, sizes};
use crate::store::tables::{ChangeKind, Definition, SegmentKind};
use crate::time::{format_day, now_micros};

/// A parsed store statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreStatement {
    Create {
        kind: SegmentKind,
        code: String,
        name: Option<String>,
        comment: Option<String>,
        condition: String,
    },
    Alter {
        code: String,
        name: Option<String>,
        comment: Option<String>,
        active: Option<bool>,
        condition: Option<String>,
    },
    Drop {
        code: String,
        if_exists: bool,
    },
    /// `ALTER SEGMENT code [REMOVE] INCLUDE|EXCLUDE (...)` or `INCLUDE|EXCLUDE
    /// FROM 'file.csv'`.
    Pin {
        code: String,
        list: PinList,
        /// Take the ids off the list instead of adding them.
        remove: bool,
        ids: PinIds,
    },
    Show,
    Refresh {
        codes: Vec<String>,
    },
}

/// A segment's pinned lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinList {
    /// Members whatever the condition.
    Include,
    /// Never members.
    Exclude,
}

impl PinList {
    fn name(self) -> &'static str {
        match self {
            Self::Include => "INCLUDE",
            Self::Exclude => "EXCLUDE",
        }
    }
}

/// The customer ids of a pin statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinIds {
    /// `(1, 2, 3)`.
    Listed(Vec<i64>),
    /// `FROM 'file.csv'`: the file's `customer_id` column.
    File(String),
}

/// The first words of a store statement, upper-cased, if `words` start one.
pub fn is_store_statement(words: &[String]) -> bool {
    let w = |i: usize| words.get(i).map(String::as_str);
    matches!(
        (w(0), w(1), w(2)),
        (Some("CREATE"), Some("SEGMENT"), _)
            | (Some("CREATE"), Some("STATIC" | "DYNAMIC"), Some("SEGMENT"))
            | (Some("ALTER" | "DROP"), Some("SEGMENT"), _)
            | (Some("SHOW"), Some("SEGMENTS"), _)
            | (Some("REFRESH"), Some("SEGMENT" | "SEGMENTS"), _)
    )
}

/// Reads words and quoted texts off the front of a statement.
struct Words<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Words<'a> {
    fn skip_space(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// The next bare word (letters, digits, `_`), or `None`.
    fn word(&mut self) -> Option<&'a str> {
        self.skip_space();
        let rest = &self.text[self.pos..];
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        (len > 0).then(|| {
            self.pos += len;
            &rest[..len]
        })
    }

    fn peek_word(&mut self) -> Option<String> {
        let at = self.pos;
        let word = self.word().map(str::to_ascii_uppercase);
        self.pos = at;
        word
    }

    /// A `'...'` text (`''` is a quote).
    fn quoted(&mut self, what: &str) -> Result<String, Error> {
        self.skip_space();
        let rest = &self.text[self.pos..];
        let Some(body) = rest.strip_prefix('\'') else {
            return Err(syntax(format!("expected '{what}' in quotes after {what}")));
        };
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                    chars.next();
                    out.push('\'');
                } else {
                    self.pos += 1 + i + 1;
                    return Ok(out);
                }
            } else {
                out.push(c);
            }
        }
        Err(syntax(format!("the quoted {what} is not closed with '")))
    }

    fn rest(&mut self) -> &'a str {
        let rest = self.text[self.pos..].trim();
        self.pos = self.text.len();
        rest
    }

    fn at_end(&mut self) -> bool {
        self.skip_space();
        self.pos >= self.text.len()
    }
}

fn syntax(message: String) -> Error {
    Error::StatementSyntax(format!(
        "{message}\nsegment statements:\n  CREATE [STATIC | DYNAMIC] SEGMENT code [NAME '...'] \
         [COMMENT '...'] AS <condition>\n  ALTER SEGMENT code [NAME '...'] [COMMENT '...'] \
         [ACTIVE | INACTIVE] [AS <condition>]\n  ALTER SEGMENT code [REMOVE] INCLUDE | \
         EXCLUDE (id, ...)\n  ALTER SEGMENT code INCLUDE | EXCLUDE FROM 'file.csv'\n  DROP \
         SEGMENT [IF EXISTS] code\n  SHOW SEGMENTS\n  REFRESH SEGMENTS [code, ...]"
    ))
}

fn code(words: &mut Words<'_>) -> Result<String, Error> {
    let code = words
        .word()
        .ok_or_else(|| syntax("expected a segment code".into()))?;
    check_code(code)?;
    Ok(code.to_string())
}

/// Refuses a code that is not `[a-z][a-z0-9_]*`.
pub fn check_code(code: &str) -> Result<(), Error> {
    if is_valid_code(code) {
        Ok(())
    } else {
        Err(StoreError::InvalidCode {
            code: code.to_string(),
        }
        .into())
    }
}

/// Parses one store statement (without its `;`).
pub fn parse(text: &str) -> Result<StoreStatement, Error> {
    let mut words = Words { text, pos: 0 };
    let first = words.word().unwrap_or_default().to_ascii_uppercase();
    let statement = match first.as_str() {
        "CREATE" => {
            let kind = match words
                .word()
                .unwrap_or_default()
                .to_ascii_uppercase()
                .as_str()
            {
                "STATIC" => {
                    words.word();
                    SegmentKind::Static
                }
                "DYNAMIC" => {
                    words.word();
                    SegmentKind::Dynamic
                }
                _ => SegmentKind::Dynamic,
            };
            let code = code(&mut words)?;
            let (name, comment, active, condition) = options(&mut words, false)?;
            let condition = condition
                .ok_or_else(|| syntax(format!("CREATE SEGMENT {code} needs AS <condition>")))?;
            debug_assert!(active.is_none());
            StoreStatement::Create {
                kind,
                code,
                name,
                comment,
                condition,
            }
        }
        "ALTER" => {
            words.word();
            let code = code(&mut words)?;
            if let Some(pin) = pin(&mut words, &code)? {
                return Ok(pin);
            }
            let (name, comment, active, condition) = options(&mut words, true)?;
            if name.is_none() && comment.is_none() && active.is_none() && condition.is_none() {
                return Err(syntax(format!(
                    "ALTER SEGMENT {code} changes nothing; give NAME, COMMENT, ACTIVE, INACTIVE \
                     or AS <condition>"
                )));
            }
            StoreStatement::Alter {
                code,
                name,
                comment,
                active,
                condition,
            }
        }
        "DROP" => {
            words.word();
            let if_exists = if words.peek_word().as_deref() == Some("IF") {
                words.word();
                if words.word().map(str::to_ascii_uppercase).as_deref() != Some("EXISTS") {
                    return Err(syntax("expected IF EXISTS".into()));
                }
                true
            } else {
                false
            };
            StoreStatement::Drop {
                code: code(&mut words)?,
                if_exists,
            }
        }
        "SHOW" => {
            words.word();
            StoreStatement::Show
        }
        _ => {
            words.word();
            let mut codes = Vec::new();
            let rest = words.rest();
            for part in rest.split(',') {
                let part = part.trim();
                if part.is_empty() && rest.is_empty() {
                    break;
                }
                check_code(part)?;
                codes.push(part.to_string());
            }
            StoreStatement::Refresh { codes }
        }
    };
    if !words.at_end() {
        return Err(syntax(format!(
            "unexpected `{}` at the end of the statement",
            words.rest()
        )));
    }
    Ok(statement)
}

/// `[REMOVE] INCLUDE|EXCLUDE (id, ...)` or `INCLUDE|EXCLUDE FROM 'file'`
/// after `ALTER SEGMENT code`, if that is what follows.
fn pin(words: &mut Words<'_>, code: &str) -> Result<Option<StoreStatement>, Error> {
    let remove = words.peek_word().as_deref() == Some("REMOVE");
    if remove {
        words.word();
    }
    let list = match words.peek_word().as_deref() {
        Some("INCLUDE") => PinList::Include,
        Some("EXCLUDE") => PinList::Exclude,
        _ if remove => return Err(syntax("expected INCLUDE or EXCLUDE after REMOVE".into())),
        _ => return Ok(None),
    };
    words.word();
    let ids =
        if words.peek_word().as_deref() == Some("FROM") {
            if remove {
                return Err(syntax(format!(
                    "REMOVE {} takes a list of ids, not a file",
                    list.name()
                )));
            }
            words.word();
            PinIds::File(words.quoted("FROM")?)
        } else {
            let rest = words.rest();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| {
                    syntax(format!(
                        "expected customer ids in parentheses after {}, as in {} (12346, 12347)",
                        list.name(),
                        list.name()
                    ))
                })?;
            let mut ids = Vec::new();
            for part in inner.split(',') {
                let part = part.trim();
                ids.push(part.parse::<i64>().map_err(|_| {
                    syntax(format!("`{part}` is not a customer id (a whole number)"))
                })?);
            }
            PinIds::Listed(ids)
        };
    if !words.at_end() {
        return Err(syntax(format!(
            "unexpected `{}` at the end of the statement",
            words.rest()
        )));
    }
    Ok(Some(StoreStatement::Pin {
        code: code.to_string(),
        list,
        remove,
        ids,
    }))
}

type Options = (Option<String>, Option<String>, Option<bool>, Option<String>);

/// `NAME '...'`, `COMMENT '...'`, `ACTIVE` / `INACTIVE` (ALTER only), then
/// `AS <condition>`.
fn options(words: &mut Words<'_>, alter: bool) -> Result<Options, Error> {
    let (mut name, mut comment, mut active, mut condition) = (None, None, None, None);
    while let Some(word) = words.peek_word() {
        words.word();
        match word.as_str() {
            "NAME" => name = Some(words.quoted("NAME")?),
            "COMMENT" => comment = Some(words.quoted("COMMENT")?),
            "ACTIVE" if alter => active = Some(true),
            "INACTIVE" if alter => active = Some(false),
            "AS" => {
                let text = words.rest();
                if text.is_empty() {
                    return Err(syntax("expected a condition after AS".into()));
                }
                condition = Some(text.to_string());
                break;
            }
            other => {
                return Err(syntax(format!(
                    "unexpected `{other}`; expected NAME, COMMENT{} or AS",
                    if alter { ", ACTIVE, INACTIVE" } else { "" }
                )));
            }
        }
    }
    Ok((name, comment, active, condition))
}

/// Runs a store statement; the result is a table to print.
pub async fn execute(
    env: &StatementEnv<'_>,
    statement: StoreStatement,
) -> Result<StatementResult, Error> {
    let step = match &statement {
        StoreStatement::Create { code, .. } => format!("while creating segment `{code}`"),
        StoreStatement::Alter { code, .. } | StoreStatement::Pin { code, .. } => {
            format!("while changing segment `{code}`")
        }
        StoreStatement::Drop { code, .. } => format!("while dropping segment `{code}`"),
        StoreStatement::Show => "while listing the segments".to_string(),
        // A refresh names its own steps.
        StoreStatement::Refresh { .. } => String::new(),
    };
    let result = execute_statement(env, statement).await;
    if step.is_empty() {
        return result;
    }
    result.map_err(crate::error::in_running_step(|| step))
}

async fn execute_statement(
    env: &StatementEnv<'_>,
    statement: StoreStatement,
) -> Result<StatementResult, Error> {
    match statement {
        StoreStatement::Show => show(env).await,
        StoreStatement::Refresh { codes } => {
            let catalog = env.catalog()?.clone().with_stored(None);
            let outcome = refresh::refresh(
                env.ctx,
                env.store,
                &catalog,
                &RefreshOptions {
                    codes,
                    as_of: env.as_of,
                    wait: env.wait,
                },
            )
            .await?;
            refresh_table(&outcome)
        }
        other => {
            let message = change(env, other).await?;
            message_table(&message)
        }
    }
}

/// Every segment a condition may refer to, store and saved files.
fn graph(
    env_definitions: &BTreeMap<String, String>,
    live: &BTreeMap<String, Definition>,
) -> SegmentGraph {
    SegmentGraph::new(
        env_definitions
            .iter()
            .map(|(c, t)| (c.as_str(), t.as_str()))
            .chain(live.iter().map(|(c, d)| (c.as_str(), d.condition.as_str()))),
    )
}

/// Refuses `condition` for `code` if it would close a cycle.
fn check_cycles(graph: SegmentGraph, code: &str, condition: &str) -> Result<(), Error> {
    match graph.with(code, condition).cycle_through(code) {
        Some(path) => Err(StoreError::Cycle {
            code: code.to_string(),
            path,
        }
        .into()),
        None => Ok(()),
    }
}

/// CREATE, ALTER or DROP: one change of the store; returns what it did.
async fn change(env: &StatementEnv<'_>, statement: StoreStatement) -> Result<String, Error> {
    let (ctx, store) = (env.ctx, env.store);
    let base = env.catalog()?.clone().with_stored(None);
    store.create_if_missing().await?;
    let lock = store.lock(env.wait)?;
    let pinned = store.recover(ctx, &lock).await?;
    let snapshot = store.snapshot_of(pinned.clone()).await?;
    let history = read::definitions(ctx, &snapshot).await?;
    let live = read::newest(&history);
    let now = now_micros();
    let refresh_id = pinned.next_refresh_id();
    let at = env.as_of.micros();
    let mut codes: std::collections::BTreeSet<String> = live.keys().cloned().collect();
    let unknown = |code: &str| -> Error {
        StoreError::unknown_segment(code, live.keys().map(String::as_str)).into()
    };
    match statement {
        StoreStatement::Create {
            kind,
            code,
            name,
            comment,
            condition,
        } => {
            if let Some(existing) = live.get(&code) {
                return Err(StoreError::AlreadyExists {
                    code,
                    created_at: existing.created_at,
                }
                .into());
            }
            if base.definitions.contains_key(&code) {
                return Err(StoreError::NamesAFile { code }.into());
            }
            check_cycles(graph(&base.definitions, &live), &code, &condition)?;
            let catalog = refresh::catalog_with_store(&base, &snapshot, codes.clone())?;
            // Planning checks names and types before anything is written.
            plan_text(&condition, &catalog, env.as_of)?;
            // A code used before (then dropped) goes on from its last version.
            let previous = history
                .iter()
                .filter(|d| d.code == code)
                .map(|d| d.version)
                .max()
                .unwrap_or(0);
            let definition = Definition {
                code: code.clone(),
                version: previous + 1,
                name,
                comment,
                kind,
                active: true,
                dropped: false,
                condition: condition.clone(),
                created_at: now,
                updated_at: now,
                refresh_id,
                include: Vec::new(),
                exclude: Vec::new(),
            };
            let scratch = refresh::Scratch::new(store, pinned.next_refresh_id())?;
            let changes = if kind == SegmentKind::Static {
                codes.insert(code.clone());
                vec![
                    refresh::evaluate(ctx, &scratch, &code, &condition, &catalog, env.as_of)
                        .await?,
                ]
            } else {
                Vec::new()
            };
            let applied = refresh::apply(
                ctx,
                store,
                &lock,
                &pinned,
                &snapshot,
                ChangeKind::Create,
                at,
                vec![definition],
                changes,
                refresh::Moved::Here,
            )
            .await?;
            Ok(match applied.sizes.first() {
                Some(size) => format!(
                    "created static segment {code} with {} members as of {}",
                    size.size, env.as_of
                ),
                None => format!(
                    "created dynamic segment {code}; `segql refresh` (or REFRESH SEGMENTS) forms it"
                ),
            })
        }
        StoreStatement::Alter {
            code,
            name,
            comment,
            active,
            condition,
        } => {
            let Some(current) = live.get(&code) else {
                return Err(unknown(&code));
            };
            let mut next = next_version(current, now, refresh_id);
            if let Some(name) = name {
                next.name = Some(name);
            }
            if let Some(comment) = comment {
                next.comment = Some(comment);
            }
            if let Some(active) = active {
                next.active = active;
            }
            if let Some(condition) = condition {
                if current.kind == SegmentKind::Static {
                    return Err(StoreError::StaticCondition { code }.into());
                }
                check_cycles(graph(&base.definitions, &live), &code, &condition)?;
                let catalog = refresh::catalog_with_store(&base, &snapshot, codes.clone())?;
                plan_text(&condition, &catalog, env.as_of)?;
                next.condition = condition;
            }
            refresh::apply(
                ctx,
                store,
                &lock,
                &pinned,
                &snapshot,
                ChangeKind::Alter,
                at,
                vec![next.clone()],
                Vec::new(),
                refresh::Moved::Here,
            )
            .await?;
            Ok(format!(
                "altered segment {code} (version {}{})",
                next.version,
                if next.active { "" } else { ", inactive" }
            ))
        }
        StoreStatement::Drop { code, if_exists } => {
            let Some(current) = live.get(&code) else {
                if if_exists {
                    return Ok(format!("segment {code} does not exist; nothing dropped"));
                }
                return Err(unknown(&code));
            };
            let store_graph =
                SegmentGraph::new(live.iter().map(|(c, d)| (c.as_str(), d.condition.as_str())));
            let users: Vec<String> = store_graph
                .users_of(&code)
                .into_iter()
                .map(String::from)
                .collect();
            if !users.is_empty() {
                return Err(StoreError::InUse { code, users }.into());
            }
            let mut next = next_version(current, now, refresh_id);
            next.dropped = true;
            next.active = false;
            // Everyone leaves: the stays close and the size goes to 0.
            let applied = refresh::apply(
                ctx,
                store,
                &lock,
                &pinned,
                &snapshot,
                ChangeKind::Drop,
                at.max(read::latest_entry(ctx, &snapshot, &code).await?),
                vec![next],
                vec![refresh::no_members(&code)],
                refresh::Moved::Here,
            )
            .await?;
            let exited = applied.sizes.first().map_or(0, |s| s.exited);
            Ok(format!("dropped segment {code} ({exited} members left it)"))
        }
        StoreStatement::Pin {
            code,
            list,
            remove,
            ids,
        } => {
            let Some(current) = live.get(&code) else {
                return Err(unknown(&code));
            };
            if current.kind == SegmentKind::Static {
                return Err(StoreError::StaticCondition { code }.into());
            }
            let ids = match ids {
                PinIds::Listed(ids) => ids,
                PinIds::File(path) => ids_from_file(ctx, &path).await?,
            };
            let mut next = next_version(current, now, refresh_id);
            let listed = match list {
                PinList::Include => &mut next.include,
                PinList::Exclude => &mut next.exclude,
            };
            if remove {
                let absent: Vec<String> = ids
                    .iter()
                    .filter(|id| !listed.contains(id))
                    .map(i64::to_string)
                    .collect();
                if !absent.is_empty() {
                    return Err(Error::Usage(format!(
                        "segment `{code}` does not {} {}; nothing changed",
                        list.name().to_ascii_lowercase(),
                        absent.join(", ")
                    )));
                }
                listed.retain(|id| !ids.contains(id));
            } else {
                let unknown = unknown_customers(ctx, &base, &ids).await?;
                if !unknown.is_empty() {
                    let shown: Vec<String> = unknown.iter().take(10).map(i64::to_string).collect();
                    return Err(Error::Usage(format!(
                        "{} of the ids to {} are not customers ({}{}); nothing changed",
                        unknown.len(),
                        list.name().to_ascii_lowercase(),
                        shown.join(", "),
                        if unknown.len() > 10 { ", ..." } else { "" }
                    )));
                }
                listed.extend(ids);
                listed.sort_unstable();
                listed.dedup();
            }
            refresh::apply(
                ctx,
                store,
                &lock,
                &pinned,
                &snapshot,
                ChangeKind::Alter,
                at,
                vec![next.clone()],
                Vec::new(),
                refresh::Moved::Here,
            )
            .await?;
            Ok(format!(
                "segment {code} (version {}) includes {} and excludes {} pinned customers; the \
                 next refresh applies them",
                next.version,
                next.include.len(),
                next.exclude.len()
            ))
        }
        StoreStatement::Show | StoreStatement::Refresh { .. } => Err(Error::StatementSyntax(
            "SHOW and REFRESH do not change segments".into(),
        )),
    }
}

/// The customer ids of a CSV file's `customer_id` column.
async fn ids_from_file(ctx: &SessionContext, path: &str) -> Result<Vec<i64>, Error> {
    if !std::path::Path::new(path).is_file() {
        return Err(Error::Usage(format!(
            "INCLUDE FROM '{path}': no such file (a relative path is read from the working \
             directory)"
        )));
    }
    let frame = ctx
        .read_csv(path, CsvReadOptions::new())
        .await
        .map_err(|e| {
            Error::Usage(format!(
                "INCLUDE FROM '{path}': cannot read it as CSV with a header: {}",
                e.strip_backtrace()
            ))
        })?;
    if frame
        .schema()
        .field_with_unqualified_name("customer_id")
        .is_err()
    {
        return Err(Error::Usage(format!(
            "INCLUDE FROM '{path}': the file has no customer_id column; its header must name one"
        )));
    }
    let batches = frame
        .select(vec![cast(col("customer_id"), DataType::Int64)])?
        .collect()
        .await?;
    let mut ids = Vec::new();
    for batch in &batches {
        let column = batch.column(0).as_primitive::<Int64Type>();
        for i in 0..column.len() {
            if column.is_null(i) {
                return Err(Error::Usage(format!(
                    "INCLUDE FROM '{path}': row {} has no customer id (or not a whole number)",
                    ids.len() + i + 2
                )));
            }
            ids.push(column.value(i));
        }
    }
    Ok(ids)
}

/// The ids of `ids` that are not in `customers`.
async fn unknown_customers(
    ctx: &SessionContext,
    catalog: &SegmentCatalog,
    ids: &[i64],
) -> Result<Vec<i64>, Error> {
    let id = catalog.column(SourceTable::Customers, Role::CustomerId);
    let column = Expr::Column(Column::from_name(id));
    let batches = ctx
        .read_table(Arc::clone(&catalog.customers))?
        .filter(
            column
                .clone()
                .in_list(ids.iter().map(|i| lit(*i)).collect(), false),
        )?
        .select(vec![cast(column, DataType::Int64)])?
        .collect()
        .await?;
    let mut known = std::collections::BTreeSet::new();
    for batch in &batches {
        let column = batch.column(0).as_primitive::<Int64Type>();
        known.extend(
            (0..column.len())
                .filter(|i| column.is_valid(*i))
                .map(|i| column.value(i)),
        );
    }
    let mut unknown: Vec<i64> = ids.iter().copied().filter(|i| !known.contains(i)).collect();
    unknown.sort_unstable();
    unknown.dedup();
    Ok(unknown)
}

/// The next version of a definition, changed at `now` by change
/// `refresh_id`.
fn next_version(current: &Definition, now: i64, refresh_id: i64) -> Definition {
    let mut next = current.clone();
    next.version += 1;
    next.updated_at = now;
    next.refresh_id = refresh_id;
    next
}

/// The columns a store statement's result will have, known before it
/// runs; `None` for `SHOW SEGMENTS`, which only reads (run it to see).
pub fn result_fields(statement: &StoreStatement) -> Option<Vec<Field>> {
    match statement {
        StoreStatement::Show => None,
        StoreStatement::Refresh { .. } => Some(refresh_fields()),
        _ => Some(message_fields()),
    }
}

fn message_fields() -> Vec<Field> {
    vec![Field::new("result", DataType::Utf8, false)]
}

fn message_table(message: &str) -> Result<StatementResult, Error> {
    StatementResult::from_columns(
        message_fields(),
        vec![Arc::new(StringArray::from(vec![message]))],
    )
}

fn refresh_fields() -> Vec<Field> {
    vec![
        Field::new("segment", DataType::Utf8, false),
        Field::new("size", DataType::Int64, true),
        Field::new("entered", DataType::Int64, true),
        Field::new("exited", DataType::Int64, true),
        Field::new("note", DataType::Utf8, true),
    ]
}

/// One row per segment recalculated or skipped.
pub fn refresh_table(outcome: &refresh::RefreshOutcome) -> Result<StatementResult, Error> {
    let fields = refresh_fields();
    let rows = &outcome.segments;
    let skipped = |s: &refresh::SegmentOutcome, v: i64| s.skipped.is_none().then_some(v);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|s| s.code.as_str()),
        )),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|s| skipped(s, s.size)),
        )),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|s| skipped(s, s.entered)),
        )),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|s| skipped(s, s.exited)),
        )),
        Arc::new(StringArray::from_iter(rows.iter().map(|s| {
            s.skipped
                .as_ref()
                .map(|r| format!("skipped: {r}"))
                .or_else(|| {
                    outcome
                        .commit
                        .as_ref()
                        .map(|c| format!("refresh {}", c.refresh_id))
                })
        }))),
    ];
    StatementResult::from_columns(fields, columns)
}

/// `SHOW SEGMENTS`: every segment with its latest size.
pub async fn show(env: &StatementEnv<'_>) -> Result<StatementResult, Error> {
    let (live, sizes) = if env.store.exists() {
        let snapshot = env.store.snapshot(env.ctx).await?;
        (
            live_definitions(env.ctx, &snapshot).await?,
            sizes(env.ctx, &snapshot).await?,
        )
    } else {
        (BTreeMap::new(), Vec::new())
    };
    let last = |code: &str| sizes.iter().rev().find(|s| s.segment == code);
    let fields = vec![
        Field::new("code", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, false),
        Field::new("active", DataType::Boolean, false),
        Field::new("size", DataType::Int64, true),
        Field::new("as_of", DataType::Utf8, true),
        Field::new("version", DataType::Int64, false),
        Field::new("condition", DataType::Utf8, false),
        Field::new("included", DataType::Int64, false),
        Field::new("excluded", DataType::Int64, false),
    ];
    let defs: Vec<&Definition> = live.values().collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            defs.iter().map(|d| d.code.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            defs.iter().map(|d| d.name.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(
            defs.iter().map(|d| d.kind.as_str()),
        )),
        Arc::new(BooleanArray::from_iter(defs.iter().map(|d| Some(d.active)))),
        Arc::new(Int64Array::from_iter(
            defs.iter().map(|d| last(&d.code).map(|s| s.size)),
        )),
        Arc::new(StringArray::from_iter(
            defs.iter()
                .map(|d| last(&d.code).map(|s| format_day(s.as_of))),
        )),
        Arc::new(Int64Array::from_iter_values(
            defs.iter().map(|d| i64::from(d.version)),
        )),
        Arc::new(StringArray::from_iter_values(
            defs.iter().map(|d| d.condition.trim()),
        )),
        Arc::new(Int64Array::from_iter_values(
            defs.iter().map(|d| d.include.len() as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            defs.iter().map(|d| d.exclude.len() as i64),
        )),
    ];
    StatementResult::from_columns(fields, columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements() {
        assert_eq!(
            parse("CREATE STATIC SEGMENT vip NAME 'V''s' COMMENT 'c' AS orders_count > 3").unwrap(),
            StoreStatement::Create {
                kind: SegmentKind::Static,
                code: "vip".into(),
                name: Some("V's".into()),
                comment: Some("c".into()),
                condition: "orders_count > 3".into(),
            }
        );
        assert_eq!(
            parse("create segment a as city = 'x'").unwrap(),
            StoreStatement::Create {
                kind: SegmentKind::Dynamic,
                code: "a".into(),
                name: None,
                comment: None,
                condition: "city = 'x'".into(),
            }
        );
        assert_eq!(
            parse("ALTER SEGMENT a INACTIVE").unwrap(),
            StoreStatement::Alter {
                code: "a".into(),
                name: None,
                comment: None,
                active: Some(false),
                condition: None,
            }
        );
        assert_eq!(
            parse("DROP SEGMENT IF EXISTS a").unwrap(),
            StoreStatement::Drop {
                code: "a".into(),
                if_exists: true
            }
        );
        assert_eq!(parse("SHOW SEGMENTS").unwrap(), StoreStatement::Show);
        assert_eq!(
            parse("REFRESH SEGMENTS a, b").unwrap(),
            StoreStatement::Refresh {
                codes: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(
            parse("REFRESH SEGMENTS").unwrap(),
            StoreStatement::Refresh { codes: vec![] }
        );
    }

    #[test]
    fn bad_statements() {
        let message = |text: &str| parse(text).unwrap_err().to_string();
        assert!(message("CREATE SEGMENT Vip AS x = 1").starts_with("`Vip` is not a valid"));
        assert!(message("CREATE SEGMENT vip").starts_with("CREATE SEGMENT vip needs AS"));
        assert!(message("CREATE SEGMENT vip NAME vip AS x = 1").starts_with("expected 'NAME'"));
        assert!(message("ALTER SEGMENT vip").starts_with("ALTER SEGMENT vip changes nothing"));
        assert!(message("DROP SEGMENT vip now").starts_with("unexpected `now`"));
        assert!(message("CREATE SEGMENT v NAME 'x AS y").starts_with("the quoted NAME"));
        assert!(message("REFRESH SEGMENTS a b").starts_with("`a b` is not a valid"));
    }
}
