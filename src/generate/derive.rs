//! `segql generate --events-from`: synthetic events for orders that exist.
//!
//! This module reads an orders Parquet file (`customer_id`, `order_ts`,
//! and `status` and `channel` when present) and writes one `events`
//! Parquet file with the rules of [`super::events`]: each customer signs up
//! shortly before their first order, each order that is not cancelled and
//! not placed in a store gets a browsing session before it, some carts are
//! abandoned, and the campaigns of the orders' time range are sent. The
//! orders carry no items, so page views name no products and cart adds
//! have a null `product_id`.
//!
//! The orders' customer, instant, status and channel are held in memory
//! (about 32 bytes an order) to put each customer's orders in time order;
//! the events are written in batches as they are made, under a `.partial`
//! name renamed at the end.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::calendar::{DAY, SECOND};
use super::events::{self, Customer, EventRows, Events, Kind};
use super::files::{Partials, TableFile, partial_name};
use super::random::Rng;
use crate::error::Error;

/// The random stream of the sign-up instants (the events draw from
/// [`events::STREAM_EVENTS`]).
const STREAM_SIGNUPS: u64 = 4;

/// Mean time from sign-up to the first order's session, in seconds.
const MEAN_SIGNUP_LEAD: i64 = 3 * 86_400;

/// Abandoned carts fall until this long after a customer's last order.
const ACTIVE_AFTER_LAST_ORDER: i64 = 60 * DAY;

/// Rows per Arrow batch read and written.
const BATCH_ROWS: usize = 65_536;

/// What was written and from what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// Events written, per kind: signup, login, page_view, cart_add,
    /// email_send, email_open, email_click.
    pub by_event: Vec<(&'static str, u64)>,
    /// Customers with at least one order.
    pub customers: u64,
    /// Orders with a customer id and an instant.
    pub orders: u64,
}

impl Derived {
    /// Events written in all.
    pub fn events(&self) -> u64 {
        self.by_event.iter().map(|(_, n)| n).sum()
    }
}

/// One order as read: the columns the events need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    customer_id: i64,
    ts: i64,
    lead_up: bool,
    channel: &'static str,
}

/// Bytes held per order while deriving: the row, and its share of the
/// per-customer grouping (measured with `size_of`, rounded up).
const BYTES_PER_ORDER: usize = std::mem::size_of::<Row>() + 16;

/// Reads the orders at `orders` and writes their events to `out`. Every
/// order is held in memory, sorted by customer; with `memory_limit`, an
/// input that would need more is refused before anything is read.
pub(crate) fn derive(
    orders: &Path,
    out: &Path,
    seed: u64,
    force: bool,
    memory_limit: Option<usize>,
) -> Result<Derived, Error> {
    if out.is_dir() {
        return Err(Error::Usage(format!(
            "--out {} is a folder; with --events-from, --out names the events Parquet file to \
             write, such as {}",
            out.display(),
            out.join("events.parquet").display()
        )));
    }
    if out.exists() {
        if !force {
            return Err(Error::AlreadyExists {
                path: out.to_path_buf(),
            });
        }
        if same_file(orders, out) {
            return Err(Error::Usage(format!(
                "--out {} is the orders file given to --events-from; write the events to \
                 another file",
                out.display()
            )));
        }
    }
    let (mut rows, zone) = read_orders(orders, memory_limit)?;
    rows.sort_unstable();
    let instants = || rows.iter().map(|r| r.ts);
    let (Some(start), Some(last)) = (instants().min(), instants().max()) else {
        return write(out, zone, seed, &[], 0, 0);
    };
    // The midnight (UTC) after the last order's day.
    let end = last.div_euclid(DAY) * DAY + DAY;
    write(out, zone, seed, &rows, start, end)
}

/// Whether two paths name one file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes the events of `rows` (sorted by customer and time), none at or
/// after `end`, campaigns from `start`.
fn write(
    out: &Path,
    zone: Option<Arc<str>>,
    seed: u64,
    rows: &[Row],
    start: i64,
    end: i64,
) -> Result<Derived, Error> {
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let dir = out.parent().unwrap_or(Path::new(""));
    let mut partials = Partials(Vec::new());
    let mut rows_out = EventRows::new(zone);
    let mut file = TableFile::create(dir, &name, rows_out.schema(), &mut partials)?;
    let mut maker = Events::new(seed, end, events::campaigns(start, end));

    let groups: Vec<&[Row]> = rows
        .chunk_by(|a, b| a.customer_id == b.customer_id)
        .collect();
    let progress = crate::progress::bar(groups.len() as u64, "deriving events".into());
    let mut orders = Vec::new();
    for (done, group) in groups.iter().enumerate() {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        let id = first.customer_id;
        orders.clear();
        orders.extend(group.iter().map(|row| events::Order {
            ts: row.ts,
            lead_up: row.lead_up,
            channel: row.channel,
            items: 0..0,
        }));
        // The orders hold no sign-up date: a few days before the first
        // order (before the data starts for some).
        let mut rng = Rng::for_key(seed, STREAM_SIGNUPS, id as u64);
        let lead = 3600 + rng.exponential(MEAN_SIGNUP_LEAD as f64) as i64;
        let signup = first.ts - lead * SECOND;
        let customer = Customer {
            id,
            signup,
            signup_channel: first.channel,
            channel: first.channel,
            orders: &orders,
            items: &[],
            active: (signup, last.ts + ACTIVE_AFTER_LAST_ORDER),
        };
        maker.customer(&customer, &mut |_| None);
        rows_out.append(id, maker.events(), maker.campaigns());
        if rows_out.len() >= BATCH_ROWS {
            file.write(&rows_out.finish()?)?;
        }
        if done % 1024 == 0 {
            progress.set_position(done as u64);
        }
    }
    file.write(&rows_out.finish()?)?;
    file.close()?;
    progress.finish_and_clear();
    std::fs::rename(partial_name(out), out).map_err(|source| Error::OutputCreate {
        path: out.to_path_buf(),
        source,
    })?;
    partials.0.clear();
    Ok(Derived {
        by_event: Kind::ALL
            .iter()
            .map(|k| (k.name(), rows_out.counts[k.index()]))
            .collect(),
        customers: groups.len() as u64,
        orders: rows.len() as u64,
    })
}

/// The error for a problem with the orders file.
fn source_error(path: &Path, problem: impl Into<String>) -> Error {
    Error::EventsSource {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The orders of `path` that have a customer id and an instant, and the
/// time zone of their `order_ts`.
fn read_orders(
    path: &Path,
    memory_limit: Option<usize>,
) -> Result<(Vec<Row>, Option<Arc<str>>), Error> {
    let file = File::open(path).map_err(|e| source_error(path, format!("cannot open it: {e}")))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| source_error(path, format!("not a readable Parquet file: {e}")))?;
    let count = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    if let Some(limit) = memory_limit
        && count.saturating_mul(BYTES_PER_ORDER) > limit
    {
        let size = |bytes: usize| {
            if bytes < 1 << 20 {
                format!("{} KiB", bytes.div_ceil(1 << 10))
            } else {
                format!("{} MiB", bytes.div_ceil(1 << 20))
            }
        };
        let need = size(count * BYTES_PER_ORDER);
        return Err(source_error(
            path,
            format!(
                "deriving events holds every order in memory, sorted by customer: its {} \
                 orders need about {need}, over --memory-limit ({}); raise --memory-limit to \
                 at least {need} or leave it out",
                super::thousands(count as u64),
                size(limit),
            ),
        ));
    }
    let schema = Arc::clone(builder.schema());
    let customer_id = column(path, &schema, "customer_id", true)?;
    let order_ts = column(path, &schema, "order_ts", true)?;
    let status = column(path, &schema, "status", false)?;
    let channel = column(path, &schema, "channel", false)?;

    if let Some((_, t)) = customer_id
        && !t.is_integer()
    {
        return Err(wrong_type(path, "customer_id", t, "an integer"));
    }
    let zone = match order_ts {
        Some((_, DataType::Timestamp(_, zone))) => zone.clone(),
        Some((_, DataType::Date32 | DataType::Date64)) => None,
        Some((_, t)) => return Err(wrong_type(path, "order_ts", t, "a timestamp or a date")),
        None => None,
    };
    for (name, found) in [("status", status), ("channel", channel)] {
        if let Some((_, t)) = found
            && !is_text(t)
        {
            return Err(wrong_type(path, name, t, "text"));
        }
    }

    let indices: Vec<usize> = [customer_id, order_ts, status, channel]
        .into_iter()
        .flatten()
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| source_error(path, format!("cannot read it: {e}")))?;
    let read_error = |e: &dyn std::fmt::Display| source_error(path, format!("cannot read it: {e}"));
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, zone.clone());

    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| read_error(&e))?;
        let as_type = |name: &str, to: &DataType| {
            batch
                .column_by_name(name)
                .map(|c| cast(c, to).map_err(|e| read_error(&e)))
                .transpose()
        };
        let (Some(ids), Some(instants)) = (
            as_type("customer_id", &DataType::Int64)?,
            as_type("order_ts", &ts_type)?,
        ) else {
            continue;
        };
        let statuses = as_type("status", &DataType::Utf8)?;
        let channels = as_type("channel", &DataType::Utf8)?;
        let ids = ids.as_primitive::<Int64Type>();
        let instants = instants.as_primitive::<TimestampMicrosecondType>();
        let statuses = statuses.as_ref().map(|a| a.as_string::<i32>());
        let channels = channels.as_ref().map(|a| a.as_string::<i32>());
        for i in 0..batch.num_rows() {
            if ids.is_null(i) || instants.is_null(i) {
                continue;
            }
            let is = |column, value: &str| {
                text(column, i).is_some_and(|s| s.trim().eq_ignore_ascii_case(value))
            };
            let cancelled = is(statuses, "cancelled");
            let in_store = is(channels, "store");
            rows.push(Row {
                customer_id: ids.value(i),
                ts: instants.value(i),
                lead_up: !cancelled && !in_store,
                channel: if is(channels, "app") { "app" } else { "web" },
            });
        }
    }
    Ok((rows, zone))
}

/// The index and type of the column `name`; an error naming it when it is
/// `required` and missing.
fn column<'a>(
    path: &Path,
    schema: &'a SchemaRef,
    name: &str,
    required: bool,
) -> Result<Option<(usize, &'a DataType)>, Error> {
    match schema.index_of(name) {
        Ok(i) => Ok(Some((i, schema.field(i).data_type()))),
        Err(_) if !required => Ok(None),
        Err(_) => {
            let found: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Err(source_error(
                path,
                format!(
                    "no `{name}` column (it has {}); --events-from needs `customer_id` (an \
                     integer) and `order_ts` (a timestamp or a date), and reads `status` and \
                     `channel` (text) when present",
                    found.join(", ")
                ),
            ))
        }
    }
}

fn wrong_type(path: &Path, name: &str, found: &DataType, wanted: &str) -> Error {
    source_error(
        path,
        format!("column `{name}` is {found}; --events-from needs {wanted} there"),
    )
}

/// The text at row `i` of `column`, if any.
fn text(column: Option<&StringArray>, i: usize) -> Option<&str> {
    column.filter(|c| c.is_valid(i)).map(|c| c.value(i))
}

fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, value) => is_text(value),
        _ => false,
    }
}
