//! Behaviour and windowed order metrics: `did(...)`, `last_did(...)`,
//! `first_did(...)` over an `events` table with the project's own column
//! names, and order metrics over a window or a subset of orders, with
//! exact members, days at the edges of the project's time zone, and the
//! mistakes a user makes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use datafusion::prelude::SessionContext;
use segql::Project;
use segql::time::AsOfArg;

use super::{condition_members, write_parquet};

/// Orders (UTC instants):
///
/// | customer | order | order_ts (UTC) | amount | status | channel |
/// |---|---|---|---|---|---|
/// | 1 | 1 | 2024-12-19 10:00 | 50 | completed | store |
/// | 1 | 2 | 2024-09-01 10:00 | 100 | completed | web |
/// | 1 | 3 | 2024-12-18 10:00 | 30 | cancelled | store |
/// | 2 | 4 | 2024-12-20 22:30 | 20 | completed | web |
/// | 3 | 5 | 2024-03-01 10:00 | 500 | completed | store |
/// | 3 | 6 | 2024-06-01 10:00 | 700 | completed | store |
/// | 5 | 7 | 2023-12-01 10:00 | 300 | completed | web |
const ORDERS: &str = "(1, 1, TIMESTAMP '2024-12-19 10:00:00', 50.0, 'completed', 'store'), \
     (2, 1, TIMESTAMP '2024-09-01 10:00:00', 100.0, 'completed', 'web'), \
     (3, 1, TIMESTAMP '2024-12-18 10:00:00', 30.0, 'cancelled', 'store'), \
     (4, 2, TIMESTAMP '2024-12-20 22:30:00', 20.0, 'completed', 'web'), \
     (5, 3, TIMESTAMP '2024-03-01 10:00:00', 500.0, 'completed', 'store'), \
     (6, 3, TIMESTAMP '2024-06-01 10:00:00', 700.0, 'completed', 'store'), \
     (7, 5, TIMESTAMP '2023-12-01 10:00:00', 300.0, 'completed', 'web')";

/// Events (UTC instants), with the warehouse's own column names. As of
/// 2024-12-21 in Berlin (2024-12-20 23:00 UTC):
///
/// - 1 adds to the cart twice in the last three days and buys;
/// - 2 adds to the cart at 23:00 Berlin time on Dec 20 and buys;
/// - 6 adds at 00:30 Berlin time on Dec 18 (still Dec 17 in UTC) and does
///   not buy; 7 adds an hour earlier, on Dec 17 in both zones;
/// - 8's cart add is at the `as_of` instant itself, its login after it:
///   neither counts;
/// - 3 and 5 got the Black Friday email, 3 clicked it; 4 has no events.
const EVENTS: &str = "(1, 'page_view', TIMESTAMP '2024-12-18 08:55:00', '/sale/winter', NULL), \
     (1, 'cart_add', TIMESTAMP '2024-12-18 09:00:00', NULL, NULL), \
     (1, 'cart_add', TIMESTAMP '2024-12-19 09:50:00', NULL, NULL), \
     (2, 'page_view', TIMESTAMP '2024-12-20 21:55:00', '/p/3', NULL), \
     (2, 'cart_add', TIMESTAMP '2024-12-20 22:00:00', NULL, NULL), \
     (2, 'login', TIMESTAMP '2024-12-01 08:00:00', NULL, NULL), \
     (3, 'signup', TIMESTAMP '2024-01-01 12:00:00', NULL, NULL), \
     (3, 'login', TIMESTAMP '2024-06-01 09:00:00', NULL, NULL), \
     (3, 'page_view', TIMESTAMP '2024-06-01 09:01:00', '/SALE', NULL), \
     (3, 'email_send', TIMESTAMP '2024-11-25 06:00:00', NULL, 'Black Friday'), \
     (3, 'email_open', TIMESTAMP '2024-11-25 12:00:00', NULL, 'Black Friday'), \
     (3, 'email_click', TIMESTAMP '2024-11-26 07:00:00', NULL, 'Black Friday'), \
     (5, 'email_send', TIMESTAMP '2024-11-25 06:00:00', NULL, 'Black Friday'), \
     (5, 'email_open', TIMESTAMP '2024-11-27 18:00:00', NULL, 'Black Friday'), \
     (5, 'login', TIMESTAMP '2023-12-01 08:00:00', NULL, NULL), \
     (6, 'cart_add', TIMESTAMP '2024-12-17 23:30:00', NULL, NULL), \
     (7, 'cart_add', TIMESTAMP '2024-12-17 22:30:00', NULL, NULL), \
     (8, 'cart_add', TIMESTAMP '2024-12-20 23:00:00', NULL, NULL), \
     (8, 'login', TIMESTAMP '2024-12-21 10:00:00', NULL, NULL), \
     (NULL, 'cart_add', TIMESTAMP '2024-12-19 10:00:00', NULL, NULL)";

async fn write_data(dir: &Path) {
    let ctx = SessionContext::new();
    let orders = format!(
        "SELECT column1 AS order_id, column2 AS customer_id, column3 AS order_ts, \
                column4 AS amount, column5 AS status, column6 AS channel \
         FROM (VALUES {ORDERS})"
    );
    let events = format!(
        "SELECT column1 AS user_id, column2 AS event_name, column3 AS occurred_at, \
                column4 AS url, column5 AS campaign \
         FROM (VALUES {EVENTS})"
    );
    let customers = "SELECT column1 AS customer_id FROM (VALUES (1), (2), (3), (4), (5), (6), \
                     (7), (8))";
    // The events once more as a folder partitioned by month.
    let before =
        format!("SELECT * FROM ({events}) WHERE occurred_at < TIMESTAMP '2024-12-01 00:00:00'");
    let after =
        format!("SELECT * FROM ({events}) WHERE occurred_at >= TIMESTAMP '2024-12-01 00:00:00'");
    for folder in ["month=2024-11", "month=2024-12"] {
        std::fs::create_dir_all(dir.join("events_by_month").join(folder)).unwrap();
    }
    for (file, query) in [
        ("orders.parquet", orders.as_str()),
        ("events.parquet", events.as_str()),
        ("customers.parquet", customers),
        (
            "events_by_month/month=2024-11/part-0.parquet",
            before.as_str(),
        ),
        (
            "events_by_month/month=2024-12/part-0.parquet",
            after.as_str(),
        ),
    ] {
        write_parquet(&ctx, query, &dir.join(file)).await;
    }
}

/// A project over the data in `dir` (orders also as denormalized order
/// lines), in `zone`, with `events` mapped or without an events table.
fn project_in(dir: &Path, name: &str, zone: &str, events: bool) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let events = if events {
        format!(
            "events = \"{}/events.parquet\"\n\n[columns.events]\ncustomer_id = \"user_id\"\n\
             event = \"event_name\"\nevent_ts = \"occurred_at\"\n",
            dir.display()
        )
    } else {
        String::new()
    };
    let config = folder.join("segql.toml");
    std::fs::write(
        &config,
        format!(
            "[time]\nzone = \"{zone}\"\n\n[tables]\norders = \"{0}/orders.parquet\"\n\
             order_items = \"{0}/orders.parquet\"\ncustomers = \"{0}/customers.parquet\"\n\
             {events}",
            dir.display()
        ),
    )
    .unwrap();
    config
}

async fn open(config: &Path, as_of: &str) -> Result<Project, segql::Error> {
    let config = segql::Config::load(config).unwrap();
    let as_of = AsOfArg::parse(as_of)
        .unwrap()
        .resolve(config.zone())
        .unwrap();
    Project::open(config, SessionContext::new(), as_of, false).await
}

/// The data written to `dir`, as a project in Berlin as of 2024-12-21.
async fn berlin(dir: &Path) -> Project {
    write_data(dir).await;
    open(
        &project_in(dir, "berlin", "Europe/Berlin", true),
        "2024-12-21",
    )
    .await
    .unwrap()
}

fn set(ids: &[i64]) -> BTreeSet<i64> {
    ids.iter().copied().collect()
}

/// The error planning `condition` on `project` gives, rendered.
fn error(project: &Project, condition: &str) -> String {
    let catalog = project.condition_catalog().unwrap();
    segql::segment::plan_text(condition, &catalog, project.as_of())
        .unwrap_err()
        .render()
}

#[tokio::test]
async fn did_and_event_times_have_exact_members() {
    let dir = tempfile::tempdir().unwrap();
    let berlin = berlin(dir.path()).await;
    let members = |condition: &'static str| condition_members(&berlin, condition);

    // The abandoned cart: 6 added on Dec 18 in Berlin, just inside the
    // window; 7 on Dec 17; 8 at the as_of instant itself.
    assert_eq!(
        members("did('cart_add', date: -3d..today) AND NOT bought(date: -3d..today)").await,
        set(&[6])
    );
    assert_eq!(
        members("did('cart_add', date: -3d..today)").await,
        set(&[1, 2, 6])
    );
    assert_eq!(
        members("did('cart_add', date: -3d..today, count: 2)").await,
        set(&[1])
    );
    assert_eq!(members("did('cart_add')").await, set(&[1, 2, 6, 7]));
    // NOT did: everyone else, customers without any event included.
    assert_eq!(members("NOT did('cart_add')").await, set(&[3, 4, 5, 8]));
    assert_eq!(members("did('cart_add') = false").await, set(&[3, 4, 5, 8]));
    // Filters on any events column, `%` patterns case-blind.
    assert_eq!(
        members("did('email_open', campaign: 'Black Friday')").await,
        set(&[3, 5])
    );
    assert_eq!(
        members("did('email_click', campaign: 'black%')").await,
        set(&[3])
    );
    assert_eq!(
        members("did('page_view', url: '%/sale%')").await,
        set(&[1, 3])
    );
    assert_eq!(
        members("did('email_open', campaign: 'Black Friday', date: 2024-11-27)").await,
        set(&[5])
    );
    // The instants of the latest / earliest event, as days.
    assert_eq!(members("last_did('login') < -30d").await, set(&[3, 5]));
    assert_eq!(
        members("NOT last_did('login') < -30d").await,
        set(&[1, 2, 4, 6, 7, 8])
    );
    assert_eq!(
        members("last_did('login') IS NULL").await,
        set(&[1, 4, 6, 7, 8])
    );
    assert_eq!(members("first_did('signup') IN this_year").await, set(&[3]));
    assert_eq!(
        members("first_did('email_send', campaign: 'Black Friday') = 2024-11-25").await,
        set(&[3, 5])
    );
    assert_eq!(
        members("last_did('cart_add') = 2024-12-20 OR last_did('cart_add') = 2024-12-18").await,
        set(&[2, 6])
    );
    // Several event tests and an order metric in one condition.
    assert_eq!(
        members(
            "(did('email_open', campaign: 'Black Friday') AND NOT did('email_click')) \
             OR (did('cart_add', count: 2) AND orders_count >= 2)"
        )
        .await,
        set(&[1, 5])
    );

    // In UTC, 6's cart add was on Dec 17: outside the window; 8's is
    // before the as_of instant (midnight UTC).
    let utc = open(&project_in(dir.path(), "utc", "UTC", true), "2024-12-21")
        .await
        .unwrap();
    assert_eq!(
        condition_members(&utc, "did('cart_add', date: -3d..today)").await,
        set(&[1, 2, 8])
    );
    // The same events as a partitioned folder give the same members.
    let folder = dir.path().join("partitioned");
    std::fs::create_dir_all(&folder).unwrap();
    let text = std::fs::read_to_string(dir.path().join("utc/segql.toml"))
        .unwrap()
        .replace("events.parquet", "events_by_month/");
    std::fs::write(folder.join("segql.toml"), text).unwrap();
    let partitioned = open(&folder.join("segql.toml"), "2024-12-21")
        .await
        .unwrap();
    for condition in [
        "did('cart_add', date: -3d..today)",
        "last_did('login') < -30d",
        "did('email_open', campaign: 'Black Friday') AND NOT did('email_click')",
    ] {
        assert_eq!(
            condition_members(&partitioned, condition).await,
            condition_members(&utc, condition).await,
            "{condition}"
        );
    }
    // A day later, 8 is the one who did not buy.
    let later = open(&project_in(dir.path(), "later", "UTC", true), "2024-12-22")
        .await
        .unwrap();
    assert_eq!(
        condition_members(
            &later,
            "did('cart_add', date: -3d..today) AND NOT bought(date: -3d..today)"
        )
        .await,
        set(&[8])
    );
}

#[tokio::test]
async fn order_metrics_take_windows_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let project = berlin(dir.path()).await;
    let members = |condition: &'static str| condition_members(&project, condition);

    // Purchase rules hold: 1's cancelled store order does not count.
    assert_eq!(
        members("orders_count(date: -90d..today, channel: 'store') >= 1").await,
        set(&[1])
    );
    assert_eq!(
        members("orders_count(channel: 'store') = 0").await,
        set(&[2, 4, 5, 6, 7, 8])
    );
    assert_eq!(
        members("amount_spent(date: this_year) > 500").await,
        set(&[3])
    );
    assert_eq!(
        members("amount_spent(date: last_year) >= 300").await,
        set(&[5])
    );
    assert_eq!(
        members("avg_order_value(channel: 'store') = 600").await,
        set(&[3])
    );
    assert_eq!(
        members("last_order_date(channel: 'web') < -30d").await,
        set(&[1, 5])
    );
    assert_eq!(
        members("first_order_date(channel: 'STO%') IN this_year").await,
        set(&[1, 3])
    );
    assert_eq!(
        members("days_since_last_order(channel: 'store') <= 2").await,
        set(&[1])
    );
    // 2's order at 23:30 Berlin time on Dec 20 is in the last day.
    assert_eq!(
        members("orders_count(date: -1d..today) >= 1").await,
        set(&[2])
    );
    // Windowed and lifetime metrics side by side; no filters is lifetime.
    assert_eq!(
        members("orders_count >= 2 AND orders_count(channel: 'web') >= 1").await,
        set(&[1])
    );
    assert_eq!(members("orders_count() >= 2").await, set(&[1, 3]));
}

#[tokio::test]
async fn mistakes_name_the_table_the_column_and_the_form() {
    let dir = tempfile::tempdir().unwrap();
    let project = berlin(dir.path()).await;
    assert_eq!(
        error(&project, "did('email_open', campain: 'Black Friday')"),
        "in segment condition\nerror: unknown filter `campain` for did(...)\n  |\n1 | \
         did('email_open', campain: 'Black Friday')\n  |                   ^^^^^^^\n  = help: \
         did you mean `campaign`?"
    );
    assert_eq!(
        error(&project, "did(cart_add)"),
        "in segment condition\nerror: write the event's name in quotes: did('cart_add')\n  \
         |\n1 | did(cart_add)\n  |     ^^^^^^^^"
    );
    assert_eq!(
        error(&project, "did(date: -3d..today)"),
        "in segment condition\nerror: did(...) needs the event's name first, as in \
         did('cart_add')\n  |\n1 | did(date: -3d..today)\n  | ^^^^^^^^^^^^^^^^^^^^^"
    );
    assert_eq!(
        error(&project, "last_did('login') > 5"),
        "in segment condition\nerror: `last_did` is a date, but this is a number\n  |\n1 | \
         last_did('login') > 5\n  |                     ^"
    );
    assert_eq!(
        error(&project, "last_did < -30d"),
        "in segment condition\nerror: last_did(...) needs the event's name\n  |\n1 | \
         last_did < -30d\n  | ^^^^^^^^\n  = help: as in last_did('login') < -30d"
    );
    assert_eq!(
        error(&project, "did('cart_add') >= 2"),
        "in segment condition\nerror: did(...) is a test of its own, not a value to \
         compare\n  |\n1 | did('cart_add') >= 2\n  | ^^^^^^^^^^^^^^^\n  = help: write \
         did(..., count: 2) for at least two"
    );
    assert_eq!(
        error(&project, "orders_count(chanel: 'store') > 1"),
        "in segment condition\nerror: unknown filter `chanel` for orders_count(...)\n  |\n1 | \
         orders_count(chanel: 'store') > 1\n  |              ^^^^^^\n  = help: did you mean \
         `channel`?"
    );
    assert_eq!(
        error(&project, "orders_count(date: -90d..today)"),
        "in segment condition\nerror: `orders_count(...)` is a value, not a test\n  |\n1 | \
         orders_count(date: -90d..today)\n  | ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n  = help: \
         compare it, as in orders_count(...) >= 2"
    );
    assert_eq!(
        error(&project, "rfm_r(date: this_year) = 5"),
        "in segment condition\nerror: `rfm_r` takes no arguments\n  |\n1 | rfm_r(date: \
         this_year) = 5\n  | ^^^^^^^^^^^^^^^^^^^^^^\n  = help: only these take arguments: \
         orders_count, amount_spent, avg_order_value, first_order_date, last_order_date, \
         days_since_last_order, last_did, first_did"
    );

    // Without an events table, did() names the key to add.
    let without = open(
        &project_in(dir.path(), "without", "UTC", false),
        "2024-12-21",
    )
    .await
    .unwrap();
    assert_eq!(
        error(&without, "did('cart_add')"),
        "in segment condition\nerror: did(...) needs an `events` table\n  |\n1 | \
         did('cart_add')\n  | ^^^^^^^^^^^^^^^\n  = help: add events = \"<Parquet file, folder \
         or glob>\" to [tables] in the project file (columns customer_id, event, event_ts; map \
         others under [columns.events])"
    );
    assert_eq!(
        error(&without, "last_did('login') < -30d"),
        "in segment condition\nerror: last_did(...) needs an `events` table\n  |\n1 | \
         last_did('login') < -30d\n  | ^^^^^^^^^^^^^^^^^\n  = help: add events = \"<Parquet \
         file, folder or glob>\" to [tables] in the project file (columns customer_id, event, \
         event_ts; map others under [columns.events])"
    );

    // A mapping to a column that is not there, or of the wrong type, is
    // refused when the tables are registered.
    for (name, mapping, expected) in [
        (
            "wrong_type",
            "customer_id = \"user_id\"\nevent = \"event_name\"\nevent_ts = \"url\"",
            "table `events`: column `url` ([columns.events] event_ts) is text, but event_ts must \
             be a timestamp or a date; set event_ts under [columns.events] to a column of that \
             type",
        ),
        (
            "unmapped",
            "customer_id = \"user_id\"\nevent = \"event_name\"",
            "table `events` has no column `event_ts` (the default for event_ts), which segql \
             reads as when the event happened; its columns are user_id, event_name, \
             occurred_at, url, campaign; set event_ts = \"<column>\" under [columns.events] in \
             the project file",
        ),
    ] {
        let folder = dir.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        let config = folder.join("segql.toml");
        std::fs::write(
            &config,
            format!(
                "[tables]\norders = \"{0}/orders.parquet\"\ncustomers = \
                 \"{0}/customers.parquet\"\nevents = \"{0}/events.parquet\"\n\n\
                 [columns.events]\n{mapping}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let err = open(&config, "2024-12-21").await.err().unwrap();
        assert_eq!(err.to_string(), expected, "{name}");
    }
}

/// How many times `plan` scans `table`.
fn scans(plan: &datafusion::logical_expr::LogicalPlan, table: &str) -> usize {
    format!("{}", plan.display_indent())
        .lines()
        .filter(|l| {
            l.trim_start()
                .strip_prefix("TableScan: ")
                .and_then(|rest| rest.split_whitespace().next())
                == Some(table)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pass_over_events_and_one_over_orders() {
    let dir = tempfile::tempdir().unwrap();
    let mut project = berlin(dir.path()).await;

    // Every event test and windowed metric of a condition: one scan each.
    let condition = "did('cart_add', date: -3d..today) AND NOT did('email_click') \
                     AND (last_did('login') < -30d OR first_did('signup') IS NULL) \
                     AND orders_count(channel: 'web') = 0 AND amount_spent(date: this_year) \
                     < 100 AND orders_count < 5";
    let catalog = project.condition_catalog().unwrap();
    let plan = segql::segment::plan_text(condition, &catalog, project.as_of()).unwrap();
    assert_eq!(scans(&plan, "events"), 1);
    assert_eq!(scans(&plan, "orders"), 1);
    assert_eq!(condition_members(&project, condition).await, set(&[6]));

    // A refresh reads events once for all its segments.
    let segments = [
        (
            "abandoned_cart",
            "did('cart_add', date: -3d..today) AND NOT bought(date: -3d..today)",
        ),
        (
            "black_friday_openers",
            "did('email_open', campaign: 'Black Friday') AND NOT did('email_click')",
        ),
        ("dormant_logins", "last_did('login') < -30d"),
        (
            "store_regulars",
            "orders_count(date: -365d..today, channel: 'store') >= 1",
        ),
    ];
    for (code, condition) in segments {
        project
            .collect_sql(&format!("CREATE SEGMENT {code} AS {condition}"))
            .await
            .unwrap();
    }
    let outcome = crate::refresh_project(&project).await;
    assert_eq!(outcome.events_scans, 1);
    assert_eq!(outcome.orders_scans, 1);
    project.sync_store().await.unwrap();
    for ((code, condition), expected) in
        segments
            .iter()
            .zip([set(&[6]), set(&[5]), set(&[3, 5]), set(&[1, 3])])
    {
        let stored = super::first_ids(
            &project
                .ctx()
                .sql(&format!(
                    "SELECT customer_id FROM segment_members('{code}')"
                ))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap(),
        );
        assert_eq!(stored, expected, "{code}");
        assert_eq!(condition_members(&project, condition).await, expected);
    }
}

/// Conditions over the generated data (scale 0.001, as of the day after
/// its last order, 2025-01-01, UTC) and the same written in plain SQL.
const GENERATED: [(&str, &str); 9] = [
    (
        "bought(category: 'Sofas', date: -365d..today) AND NOT bought(category: 'Coffee tables') \
         AND bought(brand: '%a%', count: 2)",
        "SELECT customer_id FROM order_items i JOIN products p USING (product_id)
         WHERE {LINES} AND p.category = 'Sofas' AND i.order_ts >= TIMESTAMP '2024-01-02 00:00:00'
         INTERSECT
         SELECT customer_id FROM order_items i JOIN products p USING (product_id)
         WHERE {LINES} AND p.brand ILIKE '%a%'
         GROUP BY customer_id HAVING count(DISTINCT order_id) >= 2
         EXCEPT
         SELECT customer_id FROM order_items i JOIN products p USING (product_id)
         WHERE {LINES} AND p.category = 'Coffee tables'",
    ),
    (
        "did('cart_add', date: -3d..today) AND NOT bought(date: -3d..today)",
        "SELECT customer_id FROM customers
         WHERE customer_id IN (SELECT customer_id FROM events WHERE {EVENTS}
                               AND event = 'cart_add' AND event_ts >= TIMESTAMP '2024-12-29 00:00:00')
           AND customer_id NOT IN (SELECT customer_id FROM order_items WHERE {LINES}
                                   AND order_ts >= TIMESTAMP '2024-12-29 00:00:00')",
    ),
    (
        "did('email_click', campaign: 'Black Friday 2024') \
         AND orders_count(date: 2024-11-29..today) = 0",
        "SELECT customer_id FROM customers
         WHERE customer_id IN (SELECT customer_id FROM events WHERE {EVENTS}
                               AND event = 'email_click' AND campaign = 'Black Friday 2024')
           AND customer_id NOT IN (SELECT customer_id FROM orders WHERE {PURCHASES}
                                   AND order_ts >= TIMESTAMP '2024-11-29 00:00:00')",
    ),
    (
        "did('email_open', campaign: '%friday%') AND NOT did('email_click')",
        "SELECT customer_id FROM events WHERE {EVENTS} AND event = 'email_open'
           AND campaign ILIKE '%friday%'
         EXCEPT SELECT customer_id FROM events WHERE {EVENTS} AND event = 'email_click'",
    ),
    (
        "did('page_view', count: 20) AND last_did('login') < -90d",
        "SELECT customer_id FROM events WHERE {EVENTS} AND event = 'page_view'
         GROUP BY customer_id HAVING count(*) >= 20
         INTERSECT
         SELECT customer_id FROM events WHERE {EVENTS} AND event = 'login'
         GROUP BY customer_id HAVING CAST(max(event_ts) AS DATE) < DATE '2024-10-03'",
    ),
    (
        "first_did('signup') IN last_month OR NOT did('signup')",
        "SELECT customer_id FROM customers
         WHERE customer_id NOT IN (SELECT customer_id FROM events WHERE {EVENTS}
                                   AND event = 'signup' AND event_ts < TIMESTAMP '2024-12-01 00:00:00')",
    ),
    (
        "amount_spent(date: last_year, channel: 'store') >= 500",
        "SELECT customer_id FROM orders WHERE {PURCHASES} AND channel = 'store'
           AND order_ts >= TIMESTAMP '2024-01-01 00:00:00'
         GROUP BY customer_id HAVING sum(amount) >= 500",
    ),
    (
        "avg_order_value(channel: 'app') > 200 AND last_order_date(channel: 'web') < -180d",
        "SELECT customer_id FROM orders WHERE {PURCHASES} AND channel = 'app'
         GROUP BY customer_id HAVING avg(amount) > 200
         INTERSECT
         SELECT customer_id FROM orders WHERE {PURCHASES} AND channel = 'web'
         GROUP BY customer_id HAVING CAST(max(order_ts) AS DATE) < DATE '2024-07-05'",
    ),
    (
        "orders_count(date: -90d..today) >= 3 AND orders_count < 10",
        "SELECT customer_id FROM orders WHERE {PURCHASES}
         GROUP BY customer_id
         HAVING count(*) FILTER (WHERE order_ts >= TIMESTAMP '2024-10-03 00:00:00') >= 3
            AND count(*) < 10",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_data_answers_as_plain_sql_does() {
    let dir = tempfile::tempdir().unwrap();
    segql::generate::write(&segql::generate::Options {
        scale: "0.001".parse().unwrap(),
        seed: segql::generate::DEFAULT_SEED,
        out: dir.path().to_path_buf(),
        force: false,
        memory_limit: None,
    })
    .unwrap();
    let project = open(&dir.path().join("segql.toml"), "2025-01-01")
        .await
        .unwrap();
    let before = "TIMESTAMP '2025-01-01 00:00:00'";
    for (condition, sql) in GENERATED {
        let sql = sql
            .replace(
                "{EVENTS}",
                &format!("customer_id IS NOT NULL AND event_ts < {before}"),
            )
            .replace(
                "{PURCHASES}",
                &format!(
                    "customer_id IS NOT NULL AND lower(coalesce(status, '')) <> 'cancelled' \
                     AND order_ts < {before}"
                ),
            )
            .replace(
                "{LINES}",
                &format!(
                    "customer_id IS NOT NULL AND lower(coalesce(status, '')) <> 'cancelled' \
                     AND order_ts < {before}"
                ),
            );
        let ours = condition_members(&project, condition).await;
        let theirs = super::sql_ids(project.ctx(), &sql).await;
        assert!(ours.len() >= 2, "{condition}: {} members", ours.len());
        assert_eq!(ours, theirs, "{condition}");
    }
}
