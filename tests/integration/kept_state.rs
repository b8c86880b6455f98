//! The purchase lines a store keeps for `bought(...)` and the events it
//! keeps for `did(...)` (README, "Kept purchase lines and events"): counts
//! from the kept rows equal those of a pass over every line or event,
//! value for value, as order, item and event files arrive, files and
//! products change, calls change and the refresh day moves on; a refresh
//! through them gives the members an ad-hoc query gives.

use std::fs;
use std::path::Path;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::logical_expr::{LogicalPlan, col};
use datafusion::prelude::SessionContext;
use segql::bought_state::bought_pass;
use segql::events_state::events_pass;
use segql::segment::planner::{bought_pass_plan, events_pass_plan};
use segql::segment::resolve::resolve_text;

use super::{condition_members, open, refresh_on, repo_root, sql_ids, write_parquet};

/// Segments whose calls the comparison covers: a product test in a
/// window, a product test twice (two distinct orders), a window without
/// a product test beside a negated product test.
const SEGMENTS: [(&str, &str); 3] = [
    ("tea_recent", "bought(category: 'Tea', date: -60d..today)"),
    ("coffee_twice", "bought(category: 'Coffee', count: 2)"),
    (
        "recent_no_tea",
        "bought(date: -14d..today) AND NOT bought(category: 'Tea')",
    ),
];

/// Segments testing events: windows of two lengths, and a name tested on
/// every day.
const EVENT_SEGMENTS: [(&str, &str); 2] = [
    (
        "carts_recent",
        "did('cart_add', date: -30d..today) AND NOT did('login', date: -7d..today)",
    ),
    ("clicked_ever", "did('email_click')"),
];

/// The bundled data split for the test in `dir`: orders in a folder,
/// lines without their customer and time (they take them from the
/// orders) in another, and products with a category per SKU.
async fn write_sources(ctx: &SessionContext, dir: &Path) {
    let data = repo_root().join("data/online_retail");
    for table in ["orders", "order_items", "events"] {
        if !ctx.table_exist(format!("bundled_{table}")).unwrap() {
            let path = data.join(format!("{table}.parquet"));
            ctx.register_parquet(
                format!("bundled_{table}"),
                path.to_str().unwrap(),
                Default::default(),
            )
            .await
            .unwrap();
        }
    }
    fs::create_dir_all(dir.join("orders")).unwrap();
    fs::create_dir_all(dir.join("items")).unwrap();
    fs::create_dir_all(dir.join("events")).unwrap();
    write_events(ctx, dir, "a", "event_ts < TIMESTAMP '2011-10-20'").await;
    // The first order file stops on 2011-10-01; the first item file holds
    // the lines of the orders before 2011-11-01 (so some of its lines find
    // their order only when the second order file arrives).
    write_orders(ctx, dir, "a", "order_ts < TIMESTAMP '2011-10-01'").await;
    write_items(ctx, dir, "a", "order_ts < TIMESTAMP '2011-11-01'").await;
    write_products(ctx, dir, "'TEA'").await;
}

async fn write_orders(ctx: &SessionContext, dir: &Path, name: &str, filter: &str) {
    let path = dir.join(format!("orders/{name}.parquet"));
    let select = format!(
        "SELECT order_id, customer_id, order_ts, amount, status FROM bundled_orders \
         WHERE {filter}"
    );
    write_parquet(ctx, &select, &path).await;
}

async fn write_items(ctx: &SessionContext, dir: &Path, name: &str, filter: &str) {
    let path = dir.join(format!("items/{name}.parquet"));
    let select = format!(
        "SELECT order_id, line_no, sku AS product_id, quantity, unit_price \
         FROM bundled_order_items WHERE {filter}"
    );
    write_parquet(ctx, &select, &path).await;
}

async fn write_events(ctx: &SessionContext, dir: &Path, name: &str, filter: &str) {
    let path = dir.join(format!("events/{name}.parquet"));
    let select = format!("SELECT * FROM bundled_events WHERE {filter}");
    write_parquet(ctx, &select, &path).await;
}

/// Products whose description has `tea` (an SQL string) are Tea, those
/// with COFFEE Coffee.
async fn write_products(ctx: &SessionContext, dir: &Path, tea: &str) {
    let select = format!(
        "SELECT sku AS product_id, \
           max(CASE WHEN description ILIKE '%' || {tea} || '%' THEN 'Tea' \
                    WHEN description ILIKE '%COFFEE%' THEN 'Coffee' ELSE 'Other' END) \
             AS category \
         FROM bundled_order_items GROUP BY sku"
    );
    write_parquet(ctx, &select, &dir.join("products.parquet")).await;
}

fn project_file(dir: &Path) {
    let data = repo_root().join("data/online_retail");
    fs::write(
        dir.join("segql.toml"),
        format!(
            "[tables]\norders = \"orders\"\norder_items = \"items\"\n\
             products = \"products.parquet\"\nevents = \"events\"\ncustomers = \"{}/customers.parquet\"\n\
             [purchases]\nexclude_statuses = [\"cancelled\"]\n",
            data.display()
        ),
    )
    .unwrap();
}

/// The rows of `plan` by customer, as text with their types.
async fn table(ctx: &SessionContext, plan: LogicalPlan, customer: &str) -> String {
    let frame = ctx
        .execute_logical_plan(plan)
        .await
        .unwrap()
        .sort(vec![col(customer).sort(true, false)])
        .unwrap();
    let types: Vec<String> = frame
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    let batches = frame.collect().await.unwrap();
    format!(
        "{}\n{}",
        types.join(", "),
        pretty_format_batches(&batches).unwrap()
    )
}

/// The counts of the calls of `segments` on `as_of` through the lines kept
/// in the store in `dir`, checked against a pass over every line; returns
/// how the state was used.
async fn kept_equals_full(dir: &Path, as_of: &str, segments: &[(&str, &str)]) -> String {
    let project = open(dir, as_of).await;
    let ctx = project.ctx().clone();
    let catalog = project.catalog("test").unwrap().clone();
    let as_of = project.as_of();
    let mut calls = Vec::new();
    for (_, condition) in segments {
        resolve_text(condition, &catalog, as_of)
            .unwrap()
            .bought_calls(true, &mut calls);
    }
    let full = table(
        &ctx,
        bought_pass_plan(&catalog, as_of, &calls).unwrap(),
        "__bought_customer",
    )
    .await;
    let (plan, kept) = bought_pass(&ctx, project.store(), &catalog, as_of, &calls)
        .await
        .unwrap()
        .unwrap();
    let kept_counts = table(&ctx, plan, "__bought_customer").await;
    assert_eq!(kept_counts, full, "as of {as_of:?}");
    // Not a comparison of nothing: some customer matches some call.
    let matched = kept_counts.lines().skip(4).any(|line| {
        line.split('|')
            .skip(2)
            .any(|c| !matches!(c.trim(), "" | "0"))
    });
    assert!(matched, "no call matches anybody as of {as_of:?}");
    kept.describe()
}

/// The bought state's files whose names start with `prefix` in `dir`'s
/// store.
fn lines_files(dir: &Path, prefix: &str) -> usize {
    fs::read_dir(dir.join("segql_store/bought_state"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_lines_count_as_a_pass_over_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ctx = SessionContext::new();
    write_sources(&ctx, d).await;
    project_file(d);
    // The store must exist for its state to be kept.
    open(d, "2011-09-01")
        .await
        .collect_sql("CREATE SEGMENT placeholder AS orders_count >= 1")
        .await
        .unwrap();

    let kept = |day: &'static str| kept_equals_full(d, day, &SEGMENTS);
    let read_all = "bought state: read from every order_items file";
    assert_eq!(kept("2011-10-01").await, read_all);
    assert_eq!(
        kept("2011-10-08").await,
        "bought state: 1 kept files read, 0 new source files read"
    );
    // A new order file: the kept item file's lines of its orders.
    write_orders(&ctx, d, "b", "order_ts >= TIMESTAMP '2011-10-01'").await;
    assert_eq!(
        kept("2011-10-29").await,
        "bought state: 2 kept files read, 1 new source files read"
    );
    // A new item file: its lines, with every order.
    write_items(&ctx, d, "b", "order_ts >= TIMESTAMP '2011-11-01'").await;
    assert_eq!(
        kept("2011-11-15").await,
        "bought state: 3 kept files read, 1 new source files read"
    );
    assert_eq!((lines_files(d, "lines-"), lines_files(d, "sums-")), (3, 3));
    // A refresh day before one the kept counts were made on.
    assert_eq!(
        kept("2011-11-10").await,
        format!("{read_all}; rebuilt: the refresh day is before one the kept counts were made on")
    );
    // Changed products, a rewritten order file: every line again.
    write_products(&ctx, d, "'HERB'").await;
    assert_eq!(
        kept("2011-11-15").await,
        format!("{read_all}; rebuilt: the products changed since the last refresh")
    );
    assert_eq!(lines_files(d, "lines-"), 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_orders(&ctx, d, "a", "order_ts < TIMESTAMP '2011-10-01'").await;
    assert_eq!(
        kept("2011-11-15").await,
        format!("{read_all}; rebuilt: a.parquet changed or was removed since the last refresh")
    );
    // A window needing older lines than kept, and one far ahead of them.
    assert_eq!(
        kept("2011-09-20").await,
        format!("{read_all}; rebuilt: a window starts before the kept rows")
    );
    assert_eq!(
        kept("2012-03-01").await,
        format!("{read_all}; rebuilt: the kept rows start long before the windows")
    );
    // Another call.
    let mut more = SEGMENTS.to_vec();
    more.push(("coffee_once", "bought(category: 'Coffee')"));
    assert_eq!(
        kept_equals_full(d, "2012-03-01", &more).await,
        format!("{read_all}; rebuilt: the calls, the columns or the purchase rule changed")
    );
    // Past eight layers, the next new file merges them into one.
    for k in 0..8 {
        write_items(
            &ctx,
            d,
            &format!("c{k}"),
            &format!("order_ts >= TIMESTAMP '2011-11-20' AND line_no % 8 = {k}"),
        )
        .await;
        let layers = if k < 7 { k + 2 } else { 1 };
        assert_eq!(
            kept_equals_full(d, "2012-03-01", &more).await,
            format!("bought state: {layers} kept files read, 1 new source files read")
        );
    }
    assert_eq!((lines_files(d, "lines-"), lines_files(d, "sums-")), (1, 1));
    assert_eq!(lines_files(d, "split-"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_through_kept_lines_give_the_members_of_an_ad_hoc_query() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ctx = SessionContext::new();
    write_sources(&ctx, d).await;
    project_file(d);
    let mut project = open(d, "2011-10-01").await;
    for (code, condition) in SEGMENTS.iter().chain(&EVENT_SEGMENTS) {
        project
            .collect_sql(&format!("CREATE SEGMENT {code} AS {condition}"))
            .await
            .unwrap();
    }
    let mut reports = Vec::new();
    let segments = || SEGMENTS.iter().chain(&EVENT_SEGMENTS).copied();
    for (day, arrives) in [
        ("2011-10-01", None),
        ("2011-11-01", Some("orders")),
        ("2011-11-28", Some("items")),
    ] {
        match arrives {
            Some("orders") => {
                write_orders(&ctx, d, "b", "order_ts >= TIMESTAMP '2011-10-01'").await;
            }
            Some(_) => {
                write_items(&ctx, d, "b", "order_ts >= TIMESTAMP '2011-11-01'").await;
                write_events(&ctx, d, "b", "event_ts >= TIMESTAMP '2011-10-20'").await;
            }
            None => {}
        }
        let outcome = refresh_on(d, day).await;
        assert_eq!(outcome.items_scans, 1);
        reports.push(outcome.bought_kept.map(|k| k.describe()));
        reports.push(outcome.events_kept.map(|k| k.describe()));
        let project = open(d, day).await;
        for (code, condition) in segments() {
            let stored = sql_ids(
                project.ctx(),
                &format!("SELECT customer_id FROM segment_members('{code}')"),
            )
            .await;
            let adhoc = condition_members(&project, condition).await;
            assert_eq!(stored, adhoc, "{code} on {day}");
            assert!(!adhoc.is_empty(), "{code} on {day}");
        }
    }
    assert_eq!(
        reports,
        [
            "bought state: read from every order_items file",
            "events state: read from every events file",
            "bought state: 2 kept files read, 1 new source files read",
            "events state: 1 kept files read, 0 new source files read",
            "bought state: 3 kept files read, 1 new source files read",
            "events state: 2 kept files read, 1 new source files read",
        ]
        .map(|s| Some(s.to_string()))
    );
}

/// The answers to the tests of `segments` on `as_of` through the events
/// kept in the store in `dir`, checked against a pass over every event;
/// returns how the state was used.
async fn kept_events_equal_all(dir: &Path, as_of: &str, segments: &[(&str, &str)]) -> String {
    let project = open(dir, as_of).await;
    let ctx = project.ctx().clone();
    let catalog = project.catalog("test").unwrap().clone();
    let as_of = project.as_of();
    let mut tests = Vec::new();
    for (_, condition) in segments {
        resolve_text(condition, &catalog, as_of)
            .unwrap()
            .event_tests(true, &mut tests);
    }
    let all = events_pass_plan(&catalog, as_of, &tests).unwrap();
    let all = table(&ctx, all, "__e_customer_id").await;
    let (plan, kept) = events_pass(&ctx, project.store(), &catalog, as_of, &tests)
        .await
        .unwrap()
        .unwrap();
    let kept_answers = table(&ctx, plan, "__e_customer_id").await;
    assert_eq!(kept_answers, all, "as of {as_of:?}");
    assert!(
        kept_answers.lines().count() > 5,
        "nobody matches as of {as_of:?}"
    );
    kept.describe()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_events_answer_as_a_pass_over_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ctx = SessionContext::new();
    write_sources(&ctx, d).await;
    project_file(d);
    open(d, "2011-10-01")
        .await
        .collect_sql("CREATE SEGMENT placeholder AS orders_count >= 1")
        .await
        .unwrap();
    let kept = |day: &'static str| kept_events_equal_all(d, day, &EVENT_SEGMENTS);
    let read_all = "events state: read from every events file";
    assert_eq!(kept("2011-10-01").await, read_all);
    assert_eq!(
        kept("2011-10-15").await,
        "events state: 1 kept files read, 0 new source files read"
    );
    write_events(&ctx, d, "b", "event_ts >= TIMESTAMP '2011-10-20'").await;
    assert_eq!(
        kept("2011-11-20").await,
        "events state: 2 kept files read, 1 new source files read"
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_events(&ctx, d, "a", "event_ts < TIMESTAMP '2011-10-20'").await;
    assert_eq!(
        kept("2011-11-20").await,
        format!("{read_all}; rebuilt: a.parquet changed or was removed since the last refresh")
    );
    assert_eq!(
        kept("2011-12-09").await,
        "events state: 1 kept files read, 0 new source files read"
    );
    let mut more = EVENT_SEGMENTS.to_vec();
    more.push(("viewed", "did('page_view', date: -7d..today)"));
    assert_eq!(
        kept_events_equal_all(d, "2011-12-09", &more).await,
        format!("{read_all}; rebuilt: the events tested or their columns changed")
    );
    // A test on a column keeps that column too (the others are not kept).
    more.push((
        "on_sale",
        "did('page_view', url: '/sale', date: -30d..today)",
    ));
    assert_eq!(
        kept_events_equal_all(d, "2011-12-09", &more).await,
        format!("{read_all}; rebuilt: the events tested or their columns changed")
    );
    assert_eq!(
        kept_events_equal_all(d, "2011-12-09", &more).await,
        "events state: 1 kept files read, 0 new source files read"
    );
    let kept_columns = fs::read_dir(d.join("segql_store/events_state"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .map(|e| {
            let file = fs::File::open(e.path()).unwrap();
            let reader =
                datafusion::parquet::file::reader::SerializedFileReader::new(file).unwrap();
            use datafusion::parquet::file::reader::FileReader;
            let schema = reader.metadata().file_metadata().schema_descr_ptr();
            (0..schema.num_columns())
                .map(|i| schema.column(i).name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>();
    assert_eq!(kept_columns, ["customer_id, event, event_ts, url"]);
    // Each name keeps its own days: 31 before the earliest day its tests
    // need on 2011-12-09 (`login` 7 days, `cart_add` and `page_view` 30),
    // `email_click` (no window) every day.
    ctx.register_parquet(
        "kept_events",
        d.join("segql_store/events_state").to_str().unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let first = |sql: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string()
        }
    };
    let by_name = |from: &str| {
        format!(
            "SELECT event, min(event_ts) AS first, count(*) AS n FROM {from} \
             GROUP BY event ORDER BY event"
        )
    };
    let kept_rows = first(by_name("kept_events")).await;
    let expected = first(by_name(
        "bundled_events WHERE (event = 'login' AND event_ts >= TIMESTAMP '2011-11-01') \
         OR (event IN ('cart_add', 'page_view') AND event_ts >= TIMESTAMP '2011-10-09') \
         OR event = 'email_click'",
    ))
    .await;
    assert_eq!(kept_rows, expected);
    assert_eq!(kept_rows.lines().count(), 8, "{kept_rows}");
}
