//! `segql generate`: deterministic synthetic sample data.
//!
//! This module owns the sample-data generator: a fixed product catalog and
//! the writer that streams `customers`, `orders`, `order_items`, `products`
//! and `events` Parquet files plus a `segql.toml` naming them into a
//! folder. Scale 1 is a million customers and about ten million orders over
//! three years ending on 2024-12-31. Its parts: `random` (the seeded
//! generator and distributions), `calendar` (days without a date library),
//! `events` (the events of one customer from their orders), `derive`
//! (`--events-from`: events for orders read from a Parquet file) and
//! `files` (`.partial` files renamed at the end).
//!
//! Every random draw comes from a generator keyed by the seed, a stream
//! and the customer id, so the output depends only on the seed and the
//! scale: no clock, no thread scheduling, no hash-map order. The events
//! draw from a stream of their own, so the other four tables are the same
//! with or without them. (The distributions use the platform's `ln`, `exp`
//! and `cos`, so byte-identical output is promised for one build on one
//! platform; the random bits themselves are the same everywhere.) Rows are
//! written in batches as they are generated and each file is written under
//! a `.partial` name and renamed when everything succeeded, so memory stays
//! bounded and a failure never leaves half a file behind.

mod calendar;
mod derive;
mod events;
mod files;
mod random;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::DataFusionError;

use crate::error::Error;
use calendar::{DAY, SECOND, days_from_civil};
pub use derive::Derived;
use events::{Customer, EventRows, Events, Item};
use files::{Partials, TableFile, partial_name};
pub use random::Rng;
use random::Weighted;

/// The seed used when none is given.
pub const DEFAULT_SEED: u64 = 42;

/// Customers at scale 1.
const CUSTOMERS_PER_SCALE: f64 = 1_000_000.0;

/// The largest scale accepted (a billion customers).
const MAX_SCALE: f64 = 1000.0;

/// Products in the catalog, whatever the scale.
const PRODUCTS: usize = 2000;

/// Rows per Arrow batch handed to the Parquet writers.
const BATCH_ROWS: usize = 65_536;

/// Orders of one customer at most (the tail of the distribution is cut).
const MAX_ORDERS_PER_CUSTOMER: u64 = 10_000;

const YEAR: f64 = 365.25 * DAY as f64;

/// The files a run writes, in the order they are renamed into place.
const FILES: [&str; 6] = [
    "customers.parquet",
    "orders.parquet",
    "order_items.parquet",
    "products.parquet",
    "events.parquet",
    "segql.toml",
];

/// The project file written beside the data.
const PROJECT_FILE: &str = "[tables]
customers = \"customers.parquet\"
orders = \"orders.parquet\"
order_items = \"order_items.parquet\"
products = \"products.parquet\"
events = \"events.parquet\"
";

/// A scale factor: more than 0 and at most 1000; 1 is a million customers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale(f64);

impl Scale {
    /// The scale as a number.
    pub fn value(self) -> f64 {
        self.0
    }

    /// How many customers this scale generates (at least one).
    pub fn customers(self) -> u64 {
        ((self.0 * CUSTOMERS_PER_SCALE).round() as u64).max(1)
    }
}

impl FromStr for Scale {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let value: f64 = text.trim().parse().map_err(|_| {
            "not a number; write a scale factor such as 0.01 or 1 (1 = a million customers)"
                .to_string()
        })?;
        if value.is_nan() || value <= 0.0 {
            return Err(
                "the scale must be more than 0, such as 0.01 or 1 (1 = a million customers)"
                    .to_string(),
            );
        }
        if value > MAX_SCALE {
            return Err(format!(
                "the scale goes up to {MAX_SCALE} (a billion customers)"
            ));
        }
        Ok(Self(value))
    }
}

/// clap's value parser for `--scale`.
pub fn parse_scale(text: &str) -> Result<Scale, String> {
    text.parse()
}

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// Scale factor.
    pub scale: Scale,
    /// Seed of every random draw.
    pub seed: u64,
    /// Folder to write into (created when missing).
    pub out: PathBuf,
    /// Replace files already in `out`.
    pub force: bool,
    /// Memory to stay within (`--memory-limit`): row groups end early
    /// so the Parquet writers' buffers fit beside the generator's batches.
    pub memory_limit: Option<usize>,
}

/// Memory the generator's own batches take (65,536 rows of each table,
/// measured at about 20 MiB), which a memory limit must leave room for.
const BATCH_MEMORY: usize = 24 << 20;

/// The buffered bytes at which each of the five writers ends its row
/// group under `limit`, or why the limit is too small.
fn flush_at(limit: Option<usize>) -> Result<Option<usize>, Error> {
    let Some(limit) = limit else {
        return Ok(None);
    };
    let least = BATCH_MEMORY + (8 << 20);
    if limit < least {
        return Err(Error::Usage(format!(
            "generate: --memory-limit {} MiB is too small: the generator holds a batch of \
             {} rows of each table (about {} MiB) besides the Parquet writers' buffers; give \
             --memory-limit {} MiB or more, or leave it out",
            limit >> 20,
            thousands(BATCH_ROWS as u64),
            BATCH_MEMORY >> 20,
            least >> 20
        )));
    }
    Ok(Some((limit - BATCH_MEMORY) / 5))
}

/// How many rows of each table a run wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Rows of `customers`.
    pub customers: u64,
    /// Rows of `orders`.
    pub orders: u64,
    /// Rows of `order_items`.
    pub order_items: u64,
    /// Rows of `products`.
    pub products: u64,
    /// Rows of `events`.
    pub events: u64,
}

/// What a run wrote and where, shown as the one-line summary.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Rows per table.
    pub counts: Counts,
    /// The folder written to.
    pub out: PathBuf,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "wrote {} customers, {} orders, {} order items, {} products, {} events to {}",
            thousands(c.customers),
            thousands(c.orders),
            thousands(c.order_items),
            thousands(c.products),
            thousands(c.events),
            self.out.display()
        )
    }
}

/// `segql generate`: writes the sample data and prints the summary line
/// with the time taken.
pub fn run(
    out: &Path,
    scale: Scale,
    seed: u64,
    force: bool,
    memory_limit: Option<usize>,
) -> Result<(), Error> {
    let started = Instant::now();
    let summary = write(&Options {
        scale,
        seed,
        out: out.to_path_buf(),
        force,
        memory_limit,
    })?;
    let line = format!("{summary} in {:.1} s\n", started.elapsed().as_secs_f64());
    std::io::stdout()
        .write_all(line.as_bytes())
        .map_err(|source| Error::Write {
            target: "standard output".to_string(),
            source,
        })
}

/// `segql generate --events-from ORDERS --out FILE`: writes synthetic
/// events for the orders in the Parquet file `orders` and prints the
/// summary line with the time taken.
pub fn run_events_from(
    orders: &Path,
    out: &Path,
    seed: u64,
    force: bool,
    memory_limit: Option<usize>,
) -> Result<(), Error> {
    let started = Instant::now();
    let derived = derive::derive(orders, out, seed, force, memory_limit)?;
    let line = format!(
        "wrote {} events for {} customers ({} orders) to {} in {:.1} s\n",
        thousands(derived.events()),
        thousands(derived.customers),
        thousands(derived.orders),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    std::io::stdout()
        .write_all(line.as_bytes())
        .map_err(|source| Error::Write {
            target: "standard output".to_string(),
            source,
        })
}

/// Writes synthetic events for the orders in the Parquet file `orders`
/// (`customer_id`, `order_ts`, and `status` and `channel` when present) to
/// the Parquet file `out`, drawing from `seed`; an existing `out` is kept
/// unless `force`. The same orders and seed give the same bytes.
pub fn events_from(orders: &Path, out: &Path, seed: u64, force: bool) -> Result<Derived, Error> {
    derive::derive(orders, out, seed, force, None)
}

/// Writes the five tables and `segql.toml` into `options.out`, with a
/// progress bar on standard error when it is a terminal.
pub fn write(options: &Options) -> Result<Summary, Error> {
    let out = &options.out;
    let flush_at = flush_at(options.memory_limit)?;
    std::fs::create_dir_all(out).map_err(|source| Error::OutputFolder {
        path: out.clone(),
        source,
    })?;
    if !options.force {
        for name in FILES {
            let path = out.join(name);
            if path.exists() {
                return Err(Error::AlreadyExists { path });
            }
        }
    }

    let n_customers = options.scale.customers();
    let progress = crate::progress::bar(n_customers, "generating customers".into());

    // Removes every `.partial` file unless the run got to the renames.
    let mut partials = Partials(Vec::new());
    let catalog = Catalog::new(options.seed);
    // Every table file ends its row groups early under a memory limit.
    let create = |name: &str, schema, partials: &mut Partials| {
        TableFile::create(out, name, schema, partials).map(|file| file.flush_at(flush_at))
    };
    let mut products = create("products.parquet", products_schema(), &mut partials)?;
    products.write(&catalog.batch()?)?;
    let mut generator = Generator {
        seed: options.seed,
        catalog: &catalog,
        customers: CustomerRows::default(),
        orders: OrderRows::default(),
        items: ItemRows::default(),
        next_order_id: 1,
        counts: Counts {
            products: catalog.products.len() as u64,
            ..Counts::default()
        },
        times: Vec::new(),
        weights: Weights::new(),
        event_rows: EventRows::new(None),
        events: Events::new(
            options.seed,
            history().1,
            events::campaigns(history().0, history().1),
        ),
        placed: Vec::new(),
        placed_items: Vec::new(),
        active_end: 0,
    };
    let mut customers = create("customers.parquet", customers_schema(), &mut partials)?;
    let mut orders = create("orders.parquet", orders_schema(), &mut partials)?;
    let mut items = create("order_items.parquet", order_items_schema(), &mut partials)?;
    let mut events = create(
        "events.parquet",
        generator.event_rows.schema(),
        &mut partials,
    )?;

    for customer_id in 1..=n_customers {
        generator.customer(customer_id as i64);
        if generator.customers.len() >= BATCH_ROWS {
            customers.write(&generator.customers.finish()?)?;
        }
        if generator.orders.len() >= BATCH_ROWS {
            orders.write(&generator.orders.finish()?)?;
        }
        if generator.items.len() >= BATCH_ROWS {
            items.write(&generator.items.finish()?)?;
        }
        if generator.event_rows.len() >= BATCH_ROWS {
            events.write(&generator.event_rows.finish()?)?;
        }
        if customer_id.is_multiple_of(1024) {
            progress.set_position(customer_id);
        }
    }
    customers.write(&generator.customers.finish()?)?;
    orders.write(&generator.orders.finish()?)?;
    items.write(&generator.items.finish()?)?;
    events.write(&generator.event_rows.finish()?)?;
    for table in [customers, orders, items, products, events] {
        table.close()?;
    }
    progress.finish_and_clear();
    let project = out.join("segql.toml");
    let project_partial = partial_name(&project);
    partials.0.push(project_partial.clone());
    std::fs::write(&project_partial, PROJECT_FILE).map_err(|source| Error::OutputCreate {
        path: project.clone(),
        source,
    })?;
    for name in FILES {
        let path = out.join(name);
        std::fs::rename(partial_name(&path), &path)
            .map_err(|source| Error::OutputCreate { path, source })?;
    }
    partials.0.clear();
    Ok(Summary {
        counts: Counts {
            events: generator.event_rows.total(),
            ..generator.counts
        },
        out: out.clone(),
    })
}

// ---------------------------------------------------------------------------
// Schemas

fn decimal() -> DataType {
    DataType::Decimal128(18, 2)
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

/// `customers`.
pub fn customers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("birthday", DataType::Date32, true),
        Field::new("created_at", timestamp(), true),
    ]))
}

/// `orders`.
pub fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, true),
        Field::new("order_ts", timestamp(), true),
        Field::new("amount", decimal(), true),
        Field::new("status", DataType::Utf8, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("n_items", DataType::Int32, true),
    ]))
}

/// `order_items`.
pub fn order_items_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("line_no", DataType::Int32, false),
        Field::new("customer_id", DataType::Int64, true),
        Field::new("order_ts", timestamp(), true),
        Field::new("product_id", DataType::Int64, true),
        Field::new("quantity", DataType::Int32, true),
        Field::new("unit_price", decimal(), true),
        Field::new("line_amount", decimal(), true),
        Field::new("status", DataType::Utf8, true),
    ]))
}

/// `products`.
pub fn products_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("product_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("brand", DataType::Utf8, true),
        Field::new("price", decimal(), true),
    ]))
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, Error> {
    RecordBatch::try_new(schema, columns).map_err(|e| Error::DataFusion(DataFusionError::from(e)))
}

fn decimal_array(builder: &mut Decimal128Builder) -> Result<ArrayRef, Error> {
    let array = builder
        .finish()
        .with_precision_and_scale(18, 2)
        .map_err(|e| Error::DataFusion(DataFusionError::from(e)))?;
    Ok(Arc::new(array))
}

// ---------------------------------------------------------------------------
// Row buffers, one per table

#[derive(Default)]
struct CustomerRows {
    customer_id: Int64Builder,
    name: StringBuilder,
    email: StringBuilder,
    city: StringBuilder,
    country: StringBuilder,
    channel: StringBuilder,
    birthday: Date32Builder,
    created_at: TimestampMicrosecondBuilder,
}

impl CustomerRows {
    fn len(&self) -> usize {
        self.customer_id.len()
    }

    fn finish(&mut self) -> Result<RecordBatch, Error> {
        batch(
            customers_schema(),
            vec![
                Arc::new(self.customer_id.finish()),
                Arc::new(self.name.finish()),
                Arc::new(self.email.finish()),
                Arc::new(self.city.finish()),
                Arc::new(self.country.finish()),
                Arc::new(self.channel.finish()),
                Arc::new(self.birthday.finish()),
                Arc::new(self.created_at.finish()),
            ],
        )
    }
}

#[derive(Default)]
struct OrderRows {
    order_id: Int64Builder,
    customer_id: Int64Builder,
    order_ts: TimestampMicrosecondBuilder,
    amount: Decimal128Builder,
    status: StringBuilder,
    channel: StringBuilder,
    n_items: Int32Builder,
}

impl OrderRows {
    fn len(&self) -> usize {
        self.order_id.len()
    }

    fn finish(&mut self) -> Result<RecordBatch, Error> {
        batch(
            orders_schema(),
            vec![
                Arc::new(self.order_id.finish()),
                Arc::new(self.customer_id.finish()),
                Arc::new(self.order_ts.finish()),
                decimal_array(&mut self.amount)?,
                Arc::new(self.status.finish()),
                Arc::new(self.channel.finish()),
                Arc::new(self.n_items.finish()),
            ],
        )
    }
}

#[derive(Default)]
struct ItemRows {
    order_id: Int64Builder,
    line_no: Int32Builder,
    customer_id: Int64Builder,
    order_ts: TimestampMicrosecondBuilder,
    product_id: Int64Builder,
    quantity: Int32Builder,
    unit_price: Decimal128Builder,
    line_amount: Decimal128Builder,
    status: StringBuilder,
}

impl ItemRows {
    fn len(&self) -> usize {
        self.order_id.len()
    }

    fn finish(&mut self) -> Result<RecordBatch, Error> {
        batch(
            order_items_schema(),
            vec![
                Arc::new(self.order_id.finish()),
                Arc::new(self.line_no.finish()),
                Arc::new(self.customer_id.finish()),
                Arc::new(self.order_ts.finish()),
                Arc::new(self.product_id.finish()),
                Arc::new(self.quantity.finish()),
                decimal_array(&mut self.unit_price)?,
                decimal_array(&mut self.line_amount)?,
                Arc::new(self.status.finish()),
            ],
        )
    }
}

// ---------------------------------------------------------------------------
// The data's shape

/// Independent random streams: each draws from its own generator (the
/// events draw from `events::STREAM_EVENTS`).
const STREAM_CATALOG: u64 = 1;
const STREAM_CUSTOMER: u64 = 2;

/// Orders fall in [2022-01-01, 2025-01-01): three years ending 2024-12-31.
fn history() -> (i64, i64) {
    (
        days_from_civil(2022, 1, 1) * DAY,
        days_from_civil(2025, 1, 1) * DAY,
    )
}

/// Share of customers who register and never order.
const NEVER_ORDER: f64 = 0.12;
/// Share of customers created in the two years before the history starts.
const EARLIER_CUSTOMERS: f64 = 0.25;
/// Share of customers who never lapse.
const LOYAL: f64 = 0.35;
/// Mean years until a lapsing customer stops ordering.
const MEAN_LIFETIME_YEARS: f64 = 2.5;
/// Median orders per year of an active customer (log-normal, sigma 1).
const MEDIAN_ORDERS_PER_YEAR: f64 = 5.0;
/// Share of orders placed as a guest (no customer id).
const GUEST: f64 = 0.005;
/// Share of lines (and of abandoned-cart items) from the customer's
/// favourite category.
const FAVOURITE: f64 = 0.4;
/// Share of orders cancelled.
const CANCELLED: f64 = 0.05;
/// Share of non-null birthdays moved to Feb 29 (on top of the natural
/// 1 in 1461), so small samples have some.
const EXTRA_FEB_29: f64 = 0.002;

const FIRST_NAMES: &[&str] = &[
    "Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Isla", "Jack", "Katie",
    "Liam", "Maya", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera",
    "Will", "Xena", "Yusuf", "Zoe", "Lucas", "Mia", "Leon", "Sofia", "Marco", "Elena", "Jan",
    "Eva", "Pierre", "Lea", "Carlos", "Lucia", "Lars", "Ingrid",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Wilson",
    "Evans",
    "Muller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Martin",
    "Bernard",
    "Dubois",
    "Garcia",
    "Lopez",
    "Martinez",
    "Rossi",
    "Russo",
    "Bianchi",
    "Jansen",
    "de Vries",
    "Bakker",
    "Andersson",
    "Johansson",
    "Nielsen",
    "Hansen",
    "Kowalski",
    "Nowak",
    "Murphy",
    "Kelly",
    "Silva",
    "Santos",
    "Novak",
    "Horvat",
    "Walker",
    "Young",
    "King",
    "Wright",
    "Scott",
    "Green",
];

const EMAIL_DOMAINS: &[&str] = &["example.com", "example.org", "example.net"];

/// (city, country, weight).
const CITIES: &[(&str, &str, u64)] = &[
    ("London", "United Kingdom", 90),
    ("Manchester", "United Kingdom", 30),
    ("Edinburgh", "United Kingdom", 15),
    ("Berlin", "Germany", 50),
    ("Munich", "Germany", 30),
    ("Hamburg", "Germany", 25),
    ("Paris", "France", 50),
    ("Lyon", "France", 20),
    ("Madrid", "Spain", 35),
    ("Barcelona", "Spain", 30),
    ("Milan", "Italy", 25),
    ("Rome", "Italy", 25),
    ("Amsterdam", "Netherlands", 25),
    ("Rotterdam", "Netherlands", 10),
    ("Stockholm", "Sweden", 15),
    ("Copenhagen", "Denmark", 12),
    ("Oslo", "Norway", 10),
    ("Dublin", "Ireland", 15),
    ("Lisbon", "Portugal", 12),
    ("Vienna", "Austria", 12),
    ("Zurich", "Switzerland", 10),
    ("Warsaw", "Poland", 15),
    ("Prague", "Czech Republic", 10),
    ("New York", "United States", 40),
    ("Chicago", "United States", 20),
    ("Toronto", "Canada", 15),
    ("Sydney", "Australia", 12),
];

/// Channels and their shares of customers.
const CHANNELS: &[(&str, u64)] = &[("web", 50), ("app", 30), ("store", 20)];

/// A product category: name, median price in whole currency units,
/// purchase weight, product nouns and brands.
struct Category {
    name: &'static str,
    median_price: f64,
    weight: u64,
    nouns: &'static [&'static str],
    brands: &'static [&'static str],
}

const CATEGORIES: &[Category] = &[
    Category {
        name: "Sofas",
        median_price: 900.0,
        weight: 3,
        nouns: &[
            "3-seat sofa",
            "2-seat sofa",
            "corner sofa",
            "sofa bed",
            "chaise sofa",
        ],
        brands: &["Nordhem", "Loftline", "Casa Verde", "Brightwood"],
    },
    Category {
        name: "Coffee tables",
        median_price: 180.0,
        weight: 3,
        nouns: &[
            "coffee table",
            "side table",
            "nesting tables",
            "lift-top coffee table",
        ],
        brands: &["Nordhem", "Oakcraft", "Loftline", "Tavola"],
    },
    Category {
        name: "Lamps",
        median_price: 60.0,
        weight: 6,
        nouns: &["floor lamp", "table lamp", "desk lamp", "pendant light"],
        brands: &["Lumen & Co", "Brightwood", "Halo", "Glimmer"],
    },
    Category {
        name: "Rugs",
        median_price: 150.0,
        weight: 4,
        nouns: &["wool rug", "runner", "round rug", "shaggy rug"],
        brands: &["Weavers Guild", "Casa Verde", "Kilim House"],
    },
    Category {
        name: "Bedding",
        median_price: 60.0,
        weight: 6,
        nouns: &["duvet cover", "pillow", "fitted sheet", "throw blanket"],
        brands: &["Dreamwell", "Linen Lane", "Nordhem"],
    },
    Category {
        name: "Kitchen",
        median_price: 35.0,
        weight: 9,
        nouns: &[
            "frying pan",
            "chef's knife",
            "kettle",
            "mixing bowls",
            "teapot",
        ],
        brands: &["Culina", "Ironforge", "Bake & Co", "Tavola"],
    },
    Category {
        name: "Headphones",
        median_price: 120.0,
        weight: 6,
        nouns: &[
            "over-ear headphones",
            "earbuds",
            "noise-cancelling headphones",
        ],
        brands: &["Sonora", "Aurix", "Quietwave", "Beatline"],
    },
    Category {
        name: "Phones",
        median_price: 450.0,
        weight: 3,
        nouns: &[
            "smartphone",
            "music player",
            "pocket music player",
            "flip phone",
        ],
        brands: &["Pomme", "Novatel", "Aurix", "Zento"],
    },
    Category {
        name: "Tea",
        median_price: 8.0,
        weight: 14,
        nouns: &["green tea", "black tea", "herbal tea", "oolong tea", "chai"],
        brands: &["Leaf & Kettle", "Darjeeling House", "Teaworks"],
    },
    Category {
        name: "Coffee",
        median_price: 12.0,
        weight: 14,
        nouns: &[
            "espresso beans",
            "filter coffee",
            "ground coffee",
            "coffee capsules",
        ],
        brands: &["Roastery 9", "Bean There", "Crema", "Highland Roast"],
    },
    Category {
        name: "Books",
        median_price: 18.0,
        weight: 10,
        nouns: &[
            "novel",
            "cookbook",
            "travel guide",
            "biography",
            "children's book",
        ],
        brands: &["Penfold Press", "Northlight Books", "Marigold"],
    },
    Category {
        name: "Toys",
        median_price: 25.0,
        weight: 8,
        nouns: &[
            "building set",
            "puzzle",
            "plush bear",
            "board game",
            "toy car",
        ],
        brands: &["Playwell", "Tinker Toys", "Bricko", "Little Owl"],
    },
    Category {
        name: "Allergy care",
        median_price: 15.0,
        weight: 5,
        nouns: &[
            "antihistamine tablets",
            "nasal spray",
            "eye drops",
            "air purifier filter",
        ],
        brands: &["Clarea", "Pollenix", "Breathe Easy"],
    },
    Category {
        name: "Beauty",
        median_price: 20.0,
        weight: 5,
        nouns: &["face cream", "shampoo", "lip balm", "perfume"],
        brands: &["Velour", "Pure Bloom", "Aqua Vita"],
    },
    Category {
        name: "Garden",
        median_price: 40.0,
        weight: 4,
        nouns: &["planter", "garden hose", "pruning shears", "bird feeder"],
        brands: &["Greenthumb", "Fieldstone", "Casa Verde"],
    },
    Category {
        name: "Pet supplies",
        median_price: 18.0,
        weight: 5,
        nouns: &["dog bed", "cat toy", "pet food bowl", "leash"],
        brands: &["Pawsome", "Whisker & Tail", "Furbright"],
    },
];

const MODELS: &[&str] = &[
    "Classic",
    "Nova",
    "Aria",
    "Pro",
    "Lite",
    "Max",
    "Mini",
    "Plus",
    "Eco",
    "Studio",
    "Luxe",
    "Essential",
];

/// Items per order: 1 to 5.
const ITEMS_PER_ORDER: &[u64] = &[45, 25, 15, 10, 5];
/// Quantity per line: 1 to 4.
const QUANTITIES: &[u64] = &[80, 14, 4, 2];

struct Product {
    id: i64,
    name: String,
    category: usize,
    brand: &'static str,
    price_cents: i64,
}

/// The fixed product catalog.
struct Catalog {
    products: Vec<Product>,
    /// Indexes into `products`, per category, the most popular first.
    by_category: Vec<Vec<usize>>,
    category_weights: Weighted,
}

impl Catalog {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::for_key(seed, STREAM_CATALOG, 0);
        let n_categories = CATEGORIES.len();
        let mut products = Vec::with_capacity(PRODUCTS);
        let mut by_category = Vec::with_capacity(n_categories);
        for (index, category) in CATEGORIES.iter().enumerate() {
            // An even share each, the first ones taking the remainder.
            let count = PRODUCTS / n_categories + usize::from(index < PRODUCTS % n_categories);
            let mut members = Vec::with_capacity(count);
            for _ in 0..count {
                let brand = *rng.pick(category.brands);
                let model = *rng.pick(MODELS);
                let noun = *rng.pick(category.nouns);
                let units = rng.log_normal(category.median_price, 0.45).round().max(1.0);
                members.push(products.len());
                products.push(Product {
                    id: products.len() as i64 + 1,
                    name: format!("{brand} {model} {noun}"),
                    category: index,
                    brand,
                    // Prices end in .99.
                    price_cents: units as i64 * 100 - 1,
                });
            }
            by_category.push(members);
        }
        Self {
            products,
            by_category,
            category_weights: Weighted::new(CATEGORIES.iter().map(|c| c.weight)),
        }
    }

    fn batch(&self) -> Result<RecordBatch, Error> {
        let mut id = Int64Builder::new();
        let mut name = StringBuilder::new();
        let mut category = StringBuilder::new();
        let mut brand = StringBuilder::new();
        let mut price = Decimal128Builder::new();
        for product in &self.products {
            id.append_value(product.id);
            name.append_value(&product.name);
            category.append_value(CATEGORIES[product.category].name);
            brand.append_value(product.brand);
            price.append_value(i128::from(product.price_cents));
        }
        batch(
            products_schema(),
            vec![
                Arc::new(id.finish()),
                Arc::new(name.finish()),
                Arc::new(category.finish()),
                Arc::new(brand.finish()),
                decimal_array(&mut price)?,
            ],
        )
    }

    /// A product of `category`, popular ones more often.
    fn product_in(&self, rng: &mut Rng, category: usize) -> &Product {
        let members = &self.by_category[category];
        let index = (members.len() as f64 * rng.unit() * rng.unit()) as usize;
        &self.products[members[index.min(members.len() - 1)]]
    }
}

/// Generates customers one at a time into the row buffers.
struct Generator<'a> {
    seed: u64,
    catalog: &'a Catalog,
    customers: CustomerRows,
    orders: OrderRows,
    items: ItemRows,
    next_order_id: i64,
    counts: Counts,
    /// Reused buffer of one customer's order instants.
    times: Vec<i64>,
    weights: Weights,
    event_rows: EventRows,
    /// Makes each customer's events.
    events: Events,
    /// The current customer's orders and their items, for the events.
    placed: Vec<events::Order>,
    placed_items: Vec<Item>,
    /// When the current customer stops ordering (the history's end for
    /// those who never lapse).
    active_end: i64,
}

/// The fixed discrete distributions, built once.
struct Weights {
    cities: Weighted,
    channels: Weighted,
    items_per_order: Weighted,
    quantities: Weighted,
}

impl Weights {
    fn new() -> Self {
        Self {
            cities: Weighted::new(CITIES.iter().map(|c| c.2)),
            channels: Weighted::new(CHANNELS.iter().map(|c| c.1)),
            items_per_order: Weighted::new(ITEMS_PER_ORDER.iter().copied()),
            quantities: Weighted::new(QUANTITIES.iter().copied()),
        }
    }
}

impl Generator<'_> {
    fn customer(&mut self, customer_id: i64) {
        let mut rng = Rng::for_key(self.seed, STREAM_CUSTOMER, customer_id as u64);
        let (start, end) = history();

        let first = *rng.pick(FIRST_NAMES);
        let last = *rng.pick(LAST_NAMES);
        let (city, country, _) = CITIES[self.weights.cities.pick(&mut rng)];
        let channel = CHANNELS[self.weights.channels.pick(&mut rng)].0;
        let email = format!(
            "{}.{}{}@{}",
            first.to_ascii_lowercase(),
            last.to_ascii_lowercase().replace(' ', ""),
            customer_id,
            rng.pick(EMAIL_DOMAINS)
        );
        let birthday = birthday(&mut rng);

        // Sign-ups grow over time; a quarter of the customers predate the
        // history.
        let created = if rng.chance(EARLIER_CUSTOMERS) {
            start - (rng.unit() * 2.0 * YEAR) as i64
        } else {
            start + (rng.unit().powf(0.7) * (end - start) as f64) as i64
        };
        let created = created - created.rem_euclid(SECOND);

        self.customers.customer_id.append_value(customer_id);
        self.customers.name.append_value(format!("{first} {last}"));
        self.customers.email.append_value(email);
        self.customers.city.append_value(city);
        self.customers.country.append_value(country);
        self.customers.channel.append_value(channel);
        self.customers.birthday.append_option(birthday);
        self.customers.created_at.append_value(created);
        self.counts.customers += 1;

        self.order_times(&mut rng, created, start, end);
        let favourite = self.catalog.category_weights.pick(&mut rng);
        let times = std::mem::take(&mut self.times);
        self.placed.clear();
        self.placed_items.clear();
        for &ts in &times {
            self.order(&mut rng, customer_id, channel, favourite, ts);
        }
        self.times = times;

        // The events draw from their own stream: the rows above are the
        // same with or without them.
        let catalog = self.catalog;
        let mut browse = |rng: &mut Rng| {
            let category = if rng.chance(FAVOURITE) {
                favourite
            } else {
                catalog.category_weights.pick(rng)
            };
            let product = catalog.product_in(rng, category);
            Some(Item {
                product: product.id,
                category: CATEGORIES[product.category].name,
            })
        };
        let customer = Customer {
            id: customer_id,
            signup: created,
            signup_channel: channel,
            channel: if channel == "store" { "web" } else { channel },
            orders: &self.placed,
            items: &self.placed_items,
            active: (start, self.active_end),
        };
        self.events.customer(&customer, &mut browse);
        self.event_rows
            .append(customer_id, self.events.events(), self.events.campaigns());
    }

    /// Fills `self.times` with the instants of the customer's orders, in
    /// order: a first order soon after sign-up (or after the history
    /// starts), then a geometric number of further orders spread until the
    /// customer lapses, at a log-normal rate per year.
    fn order_times(&mut self, rng: &mut Rng, created: i64, start: i64, end: i64) {
        self.times.clear();
        let never = rng.chance(NEVER_ORDER);
        let first = if created >= start {
            created + (rng.exponential(7.0 * DAY as f64) as i64).max(SECOND)
        } else {
            start + rng.exponential(60.0 * DAY as f64) as i64
        };
        let first = first - first.rem_euclid(SECOND);
        let lifetime = if rng.chance(LOYAL) {
            f64::INFINITY
        } else {
            rng.exponential(MEAN_LIFETIME_YEARS * YEAR)
        };
        let rate = rng.log_normal(MEDIAN_ORDERS_PER_YEAR, 1.0);
        let active_end = (first as f64 + lifetime).min(end as f64);
        self.active_end = active_end as i64;
        if never || first >= end {
            return;
        }
        let span = active_end - first as f64;
        let n = 1 + rng
            .geometric(rate * span / YEAR)
            .min(MAX_ORDERS_PER_CUSTOMER - 1);
        self.times.push(first);
        for _ in 1..n {
            let ts = first + (rng.unit() * span) as i64;
            self.times.push(ts - ts.rem_euclid(SECOND));
        }
        self.times.sort_unstable();
    }

    fn order(
        &mut self,
        rng: &mut Rng,
        customer_id: i64,
        channel: &'static str,
        favourite: usize,
        ts: i64,
    ) {
        let order_id = self.next_order_id;
        self.next_order_id += 1;
        let customer = (!rng.chance(GUEST)).then_some(customer_id);
        let status = if rng.chance(CANCELLED) {
            "cancelled"
        } else {
            "completed"
        };
        let channel = if rng.chance(0.75) {
            channel
        } else {
            CHANNELS[rng.below(CHANNELS.len() as u64) as usize].0
        };
        let n_items = self.weights.items_per_order.pick(rng) + 1;
        let first_item = self.placed_items.len();
        let mut amount: i64 = 0;
        for line_no in 1..=n_items {
            let category = if rng.chance(FAVOURITE) {
                favourite
            } else {
                self.catalog.category_weights.pick(rng)
            };
            let product = self.catalog.product_in(rng, category);
            let quantity = self.weights.quantities.pick(rng) as i64 + 1;
            let unit_price = if rng.chance(0.15) {
                let discount = 10 * (1 + rng.below(3) as i64);
                product.price_cents * (100 - discount) / 100
            } else {
                product.price_cents
            };
            let line_amount = unit_price * quantity;
            self.placed_items.push(Item {
                product: product.id,
                category: CATEGORIES[product.category].name,
            });
            amount += line_amount;
            let items = &mut self.items;
            items.order_id.append_value(order_id);
            items.line_no.append_value(line_no as i32);
            items.customer_id.append_option(customer);
            items.order_ts.append_value(ts);
            items.product_id.append_value(product.id);
            items.quantity.append_value(quantity as i32);
            items.unit_price.append_value(i128::from(unit_price));
            items.line_amount.append_value(i128::from(line_amount));
            items.status.append_value(status);
        }
        let orders = &mut self.orders;
        orders.order_id.append_value(order_id);
        orders.customer_id.append_option(customer);
        orders.order_ts.append_value(ts);
        orders.amount.append_value(i128::from(amount));
        orders.status.append_value(status);
        orders.channel.append_value(channel);
        orders.n_items.append_value(n_items as i32);
        self.counts.orders += 1;
        self.counts.order_items += n_items as u64;
        self.placed.push(events::Order {
            ts,
            lead_up: customer.is_some() && channel != "store",
            channel,
            items: first_item..self.placed_items.len(),
        });
    }
}

/// A birthday for an adult aged 18 to 80 at the end of 2024, or none (one
/// customer in ten).
fn birthday(rng: &mut Rng) -> Option<i32> {
    if rng.chance(0.1) {
        return None;
    }
    let year = 1944 + rng.below(63) as i64;
    if rng.chance(EXTRA_FEB_29) {
        // The nearest leap year at or before `year` (all of 1944..2006 that
        // are divisible by 4 are leap years).
        return Some(days_from_civil(year - year % 4, 2, 29) as i32);
    }
    let days = days_from_civil(year + 1, 1, 1) - days_from_civil(year, 1, 1);
    Some((days_from_civil(year, 1, 1) + rng.below(days as u64) as i64) as i32)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_birthdays_include_feb_29_and_nulls() {
        let mut rng = Rng::new(4);
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        let days: Vec<Option<i32>> = (0..20_000).map(|_| birthday(&mut rng)).collect();
        let nulls = days.iter().filter(|d| d.is_none()).count();
        assert!((1_600..2_400).contains(&nulls), "{nulls}");
        let dates: Vec<chrono::NaiveDate> = days
            .iter()
            .flatten()
            .map(|&d| epoch + chrono::Duration::days(i64::from(d)))
            .collect();
        use chrono::Datelike;
        assert!(dates.iter().all(|d| (1944..=2006).contains(&d.year())));
        let feb_29 = dates
            .iter()
            .filter(|d| d.month() == 2 && d.day() == 29)
            .count();
        assert!(feb_29 >= 20, "{feb_29}");
    }

    #[test]
    fn generate_scale_parses_and_rejects() {
        assert_eq!("0.01".parse::<Scale>().unwrap().customers(), 10_000);
        assert_eq!("1".parse::<Scale>().unwrap().customers(), 1_000_000);
        assert_eq!("0.0000001".parse::<Scale>().unwrap().customers(), 1);
        for bad in ["0", "-1", "nan", "abc", "", "inf", "1001"] {
            assert!(bad.parse::<Scale>().is_err(), "{bad}");
        }
    }

    #[test]
    fn generate_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(10_123_456), "10,123,456");
    }

    #[test]
    fn generate_catalog_is_fixed_and_priced() {
        let catalog = Catalog::new(DEFAULT_SEED);
        assert_eq!(catalog.products.len(), PRODUCTS);
        assert!(catalog.products.iter().all(|p| p.price_cents >= 99));
        let names: Vec<&str> = CATEGORIES.iter().map(|c| c.name).collect();
        for needed in ["Sofas", "Coffee tables", "Headphones", "Phones"] {
            assert!(names.contains(&needed));
        }
        let again = Catalog::new(DEFAULT_SEED);
        assert!(
            catalog
                .products
                .iter()
                .zip(&again.products)
                .all(|(a, b)| a.name == b.name && a.price_cents == b.price_cents)
        );
    }
}
