//! The segment language end to end on the bundled Online Retail data, as of
//! 2011-12-10: every example in `queries/segments/` against its snapshot
//! (plan and result) and against the same condition written independently
//! in plain SQL.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use segql::segment::AsOf;
use segql::segment::table_function::plan_text;

const AS_OF: &str = "2011-12-10";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn session() -> SessionContext {
    let mut ctx = SessionContext::new();
    segql_udfs::register_all(&mut ctx).unwrap();
    let config = segql::Config::load(root().join("segql.toml")).unwrap();
    segql::session::register_tables(&ctx, &config)
        .await
        .unwrap();
    segql::segment::table_function::register(&ctx, session_catalog(&ctx).await);
    ctx
}

/// The tables of the session and the saved segment files, as of `AS_OF`.
async fn session_catalog(ctx: &SessionContext) -> segql::segment::SegmentCatalog {
    let config = segql::Config::load(root().join("segql.toml")).unwrap();
    let definitions =
        segql::segment::catalog::load_definitions(&config.segments_folder.clone().unwrap())
            .unwrap();
    segql::segment::SegmentCatalog::from_session(ctx, as_of())
        .await
        .unwrap()
        .with_definitions(definitions)
        .with_rules(config.columns, config.purchases)
}

fn as_of() -> AsOf {
    AsOf::day(NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d").unwrap())
}

async fn ids(ctx: &SessionContext, sql: &str) -> BTreeSet<i64> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut out = BTreeSet::new();
    for batch in batches {
        let column = datafusion::arrow::compute::cast(
            batch.column(0),
            &datafusion::arrow::datatypes::DataType::Int64,
        )
        .unwrap();
        let column = column.as_primitive::<Int64Type>();
        for i in 0..column.len() {
            if column.is_valid(i) {
                out.insert(column.value(i));
            }
        }
    }
    out
}

fn condition_of(name: &str) -> String {
    std::fs::read_to_string(root().join(format!("queries/segments/{name}.seg"))).unwrap()
}

async fn members(ctx: &SessionContext, name: &str) -> BTreeSet<i64> {
    let condition = condition_of(name).replace('\'', "''");
    ids(
        ctx,
        &format!("SELECT customer_id FROM segment('{condition}', '{AS_OF}')"),
    )
    .await
}

/// Purchases in plain SQL, as the planner defines them.
const PURCHASES: &str = "status = 'completed' AND customer_id IS NOT NULL AND CAST(order_ts AS DATE) < DATE '2011-12-10'";

/// Events before the as-of day, in plain SQL.
const EVENTS: &str = "customer_id IS NOT NULL AND CAST(event_ts AS DATE) < DATE '2011-12-10'";

/// Each example's condition, written independently in SQL.
fn independent_sql(name: &str) -> String {
    let rfm = format!(
        "WITH base AS (
           SELECT customer_id, CAST(DATE '2011-12-10' - CAST(max(order_ts) AS DATE) AS BIGINT) AS recency,
                  count(order_id) AS frequency, sum(amount) AS monetary,
                  CAST(max(order_ts) AS DATE) AS last_day
           FROM orders WHERE {PURCHASES} GROUP BY customer_id)
         SELECT *, rfm_quantile(recency, 5, 'low') OVER () AS r,
                   rfm_quantile(frequency, 5, 'high') OVER () AS f,
                   rfm_quantile(monetary, 5, 'high') OVER () AS m FROM base"
    );
    let bought = |pattern: &str, from: &str, to: &str| {
        format!(
            "SELECT customer_id FROM order_items WHERE {PURCHASES} AND description ILIKE '{pattern}'
             AND CAST(order_ts AS DATE) BETWEEN DATE '{from}' AND DATE '{to}'"
        )
    };
    let month_day = "date_part('month', created_at) * 100 + date_part('day', created_at)";
    match name {
        "lapsed_big_spenders" => format!("SELECT customer_id FROM ({rfm}) WHERE m >= 4 AND r <= 2 AND f <= 2"),
        "tea_never_coffee" => format!(
            "SELECT customer_id FROM customers WHERE customer_id IN ({}) AND customer_id NOT IN ({})",
            bought("%TEA%", "2010-12-10", "2011-12-10"),
            bought("%COFFEE%", "2010-12-10", "2011-12-10")
        ),
        "lunch_bag_not_box" => format!(
            "SELECT customer_id FROM customers WHERE customer_id IN ({}) AND customer_id NOT IN ({})",
            bought("%LUNCH BAG%", "2011-11-10", "2011-12-10"),
            bought("%LUNCH BOX%", "2011-11-10", "2011-12-10")
        ),
        "christmas_prior_year" => format!(
            "SELECT customer_id FROM order_items WHERE {PURCHASES} AND description ILIKE '%CHRISTMAS%'
             AND CAST(order_ts AS DATE) <= DATE '2010-12-31'
             GROUP BY customer_id HAVING count(DISTINCT order_id) >= 2"
        ),
        "anniversary_next_3_days" => format!("SELECT customer_id FROM customers WHERE {month_day} BETWEEN 1210 AND 1213"),
        "window_late_summer" => format!("SELECT customer_id FROM customers WHERE {month_day} BETWEEN 725 AND 928"),
        "window_new_year" => format!("SELECT customer_id FROM customers WHERE {month_day} >= 1202 OR {month_day} <= 103"),
        "outside_uk" => "SELECT customer_id FROM customers WHERE country IS DISTINCT FROM 'United Kingdom'".to_string(),
        "frequent_high_spenders_benelux" => format!(
            "SELECT c.customer_id FROM customers c JOIN orders o ON o.customer_id = c.customer_id
             WHERE c.country IN ('Belgium', 'Netherlands', 'Luxembourg') AND o.{PURCHASES}
             GROUP BY c.customer_id HAVING count(*) >= 5 AND sum(o.amount) >= 2000"
        )
        .replace("o.status = 'completed' AND customer_id IS NOT NULL AND CAST(order_ts", "o.status = 'completed' AND o.customer_id IS NOT NULL AND CAST(o.order_ts"),
        "champions_or_loyal_recent" => format!(
            "SELECT customer_id FROM ({rfm}) WHERE rfm_segment(r, f) = 'Champions'
             OR (rfm_segment(r, f) = 'Loyal' AND last_day >= DATE '2011-11-10')"
        ),
        "lapsed_big_spenders_abroad" => format!(
            "{} AND customer_id IN (SELECT customer_id FROM customers WHERE country IS DISTINCT FROM 'United Kingdom')",
            independent_sql("lapsed_big_spenders")
        ),
        "christmas_any_prior_year" => format!(
            "SELECT DISTINCT customer_id FROM order_items WHERE {PURCHASES}
             AND description ILIKE '%CHRISTMAS%' AND CAST(order_ts AS DATE) <= DATE '2010-12-31'"
        ),
        "first_order_last_month" => format!(
            "SELECT customer_id FROM orders WHERE {PURCHASES} GROUP BY customer_id
             HAVING CAST(min(order_ts) AS DATE) BETWEEN DATE '2011-11-01' AND DATE '2011-11-30'"
        ),
        "abandoned_cart" => format!(
            "SELECT customer_id FROM customers
             WHERE customer_id IN (SELECT customer_id FROM events WHERE {EVENTS}
                                   AND event = 'cart_add' AND CAST(event_ts AS DATE) >= DATE '2011-12-07')
               AND customer_id NOT IN (SELECT customer_id FROM order_items WHERE {PURCHASES}
                                       AND CAST(order_ts AS DATE) >= DATE '2011-12-07')"
        ),
        "black_friday_clicked_not_bought" => format!(
            "SELECT customer_id FROM customers
             WHERE customer_id IN (SELECT customer_id FROM events WHERE {EVENTS}
                                   AND event = 'email_click' AND lower(campaign) LIKE 'black friday%')
               AND customer_id NOT IN (SELECT customer_id FROM order_items WHERE {PURCHASES}
                                       AND CAST(order_ts AS DATE) >= DATE '2011-11-25')"
        ),
        "big_this_year_quiet_lately" => format!(
            "SELECT customer_id FROM orders WHERE {PURCHASES} AND CAST(order_ts AS DATE) >= DATE '2011-01-01'
             GROUP BY customer_id HAVING sum(amount) >= 5000
             EXCEPT
             SELECT customer_id FROM orders WHERE {PURCHASES} AND CAST(order_ts AS DATE) >= DATE '2011-10-11'"
        ),
        other => panic!("no independent SQL for example `{other}`: add one"),
    }
}

fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("queries/segments"))
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            (path.extension()? == "seg")
                .then(|| path.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names
}

/// Compares `actual` with the snapshot file, or rewrites it when
/// `SEGQL_UPDATE_SNAPSHOTS=1`.
fn check_snapshot(path: &Path, actual: &str) {
    if std::env::var("SEGQL_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with SEGQL_UPDATE_SNAPSHOTS=1 and review it",
            path.display()
        )
    });
    assert_eq!(
        expected,
        actual,
        "snapshot {} differs (SEGQL_UPDATE_SNAPSHOTS=1 rewrites it)",
        path.display()
    );
}

#[tokio::test]
async fn examples_match_their_snapshots() {
    let ctx = session().await;
    let catalog = session_catalog(&ctx).await;
    let names = examples();
    assert_eq!(names.len(), 16);
    for name in names {
        let condition = condition_of(&name);
        let plan = plan_text(&condition, &catalog, as_of()).unwrap();
        let members = members(&ctx, &name).await;
        let first: Vec<String> = members.iter().take(10).map(i64::to_string).collect();
        let snapshot = format!(
            "# as of {AS_OF}\n{}\n## plan\n{}\n\n## result\nmembers: {}\nfirst: {}\n",
            condition.trim_end(),
            plan.display_indent(),
            members.len(),
            first.join(", ")
        );
        check_snapshot(
            &root().join(format!("queries/segments/{name}.snap")),
            &snapshot,
        );
    }
}

#[tokio::test]
async fn examples_equal_independent_sql() {
    let ctx = session().await;
    for name in examples() {
        let ours = members(&ctx, &name).await;
        let theirs = ids(&ctx, &independent_sql(&name)).await;
        assert!(
            !ours.is_empty(),
            "{name}: no members, the example tests nothing"
        );
        assert_eq!(ours, theirs, "{name}: members differ from the plain SQL");
    }
}

/// The `detail` of `step` in an `EXPLAIN SEGMENT` result.
fn explain_step(result: &segql::statements::StatementResult, step: &str) -> String {
    for batch in &result.batches {
        let (steps, details) = (
            batch.column(0).as_string::<i32>(),
            batch.column(1).as_string::<i32>(),
        );
        if let Some(i) = (0..batch.num_rows()).find(|i| steps.value(*i) == step) {
            return details.value(i).to_string();
        }
    }
    panic!("no {step} row");
}

/// The SQL section of the `table` rendering, unindented.
fn pretty_sql(result: &segql::statements::StatementResult) -> String {
    let mut out = Vec::new();
    segql::output::write_result(&mut out, segql::Format::Table, result).unwrap();
    let text = String::from_utf8(out).unwrap();
    let (_, rest) = text.split_once("\nSQL\n").unwrap();
    let (sql, _) = rest.split_once("\n\nCounts\n").unwrap();
    sql.lines()
        .map(|l| l.strip_prefix("  ").unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// EXPLAIN SEGMENT's `sql` row runs: for every example, the SQL
/// DataFusion's unparser writes for the plan (RFM windows, semi and anti
/// joins, passes over order lines and events, nested segments), run back
/// on the same session, selects exactly the example's members; so does the
/// same SQL laid out over lines in the `table` format.
/// Turning a plan back into SQL recurses once per plan node, in frames a
/// debug build makes large: the plans of the longer examples overflow a
/// test thread's 2 MiB (the command line unparses on its main thread,
/// 8 MiB), so the test runs on a thread with the main thread's stack.
#[test]
fn explain_sql_selects_the_members() {
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(explain_sql_selects_the_members_on_a_thread())
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn explain_sql_selects_the_members_on_a_thread() {
    let config = segql::Config::load(root().join("segql.toml")).unwrap();
    let mut project = segql::Project::open(config, SessionContext::new(), as_of(), false)
        .await
        .unwrap();
    for name in examples() {
        let condition = condition_of(&name);
        let results = project
            .collect_sql(&format!("EXPLAIN SEGMENT {condition}"))
            .await
            .unwrap();
        let sql = explain_step(&results[0], "sql");
        let members = crate::condition_members(&project, &condition).await;
        assert!(!members.is_empty(), "{name}: no members");
        for text in [sql.clone(), pretty_sql(&results[0])] {
            let batches = match project.ctx().sql(&text).await {
                Ok(frame) => frame.collect().await,
                Err(e) => Err(e),
            }
            .unwrap_or_else(|e| panic!("{name}: the SQL does not run: {e}\n{text}"));
            assert_eq!(
                crate::first_ids(&batches),
                members,
                "{name}: the SQL selects other customers\n{text}"
            );
        }
    }
}

/// The `table` format lays EXPLAIN SEGMENT out in sections.
#[test]
fn explain_reads_in_sections() {
    let condition = condition_of("lapsed_big_spenders");
    let run = crate::segql(&[
        "--as-of",
        AS_OF,
        "-c",
        &format!("EXPLAIN SEGMENT {condition}"),
    ]);
    assert_eq!(run.stderr, "");
    assert_eq!(run.code, Some(0));
    check_snapshot(
        &root().join("tests/integration/snapshots/explain_lapsed_big_spenders.out"),
        &run.stdout,
    );
}

#[tokio::test]
async fn plans_read_only_what_the_condition_needs() {
    let ctx = session().await;
    let catalog = session_catalog(&ctx).await;
    let plan = |c: &str| {
        plan_text(c, &catalog, as_of())
            .unwrap()
            .display_indent()
            .to_string()
    };

    let customers_only = plan(&condition_of("outside_uk"));
    assert!(
        !customers_only.contains("TableScan: orders"),
        "{customers_only}"
    );
    assert!(!customers_only.contains("order_items"), "{customers_only}");

    let metrics = plan(
        "orders_count >= 2 AND amount_spent > 100 AND avg_order_value > 10 AND last_order_date > -90d AND days_since_last_order < 60",
    );
    assert_eq!(metrics.matches("TableScan: orders").count(), 1, "{metrics}");
    assert_eq!(metrics.matches("Aggregate:").count(), 1, "{metrics}");

    // Two purchase tests: one pass over the order lines, a count each.
    let two = plan(&condition_of("tea_never_coffee"));
    assert_eq!(two.matches("TableScan: order_items").count(), 1, "{two}");
    assert!(two.contains("__bought_pass_1"), "{two}");
    assert!(!two.contains("TableScan: orders\n"), "{two}");
    // A lone one is a semi join, or an anti join under NOT.
    assert!(
        plan("bought(description: '%TEA%')").contains("LeftSemi Join"),
        "semi"
    );
    assert!(
        plan("NOT bought(description: '%TEA%')").contains("LeftAnti Join"),
        "anti"
    );

    // Inside OR a purchase test is a left join checked for a match.
    let mixed = plan("country = 'France' OR bought(description: '%TEA%')");
    assert!(mixed.contains("Left Join"), "{mixed}");
}

#[tokio::test]
async fn language_errors_point_at_the_problem() {
    let ctx = session().await;
    let catalog = session_catalog(&ctx).await;
    let err = |c: &str| {
        plan_text(c, &catalog, as_of())
            .unwrap_err()
            .strip_backtrace()
    };
    assert_eq!(
        err("contry = 'France'"),
        "Error during planning: in segment condition\nerror: unknown attribute `contry`\n  |\n1 | contry = 'France'\n  | ^^^^^^\n  = help: did you mean `country`?"
    );
    assert_eq!(
        err("created_at > 5"),
        "Error during planning: in segment condition\nerror: `created_at` is a date, but this is a number\n  |\n1 | created_at > 5\n  |              ^"
    );
    assert_eq!(
        err("country IN NEXT 3 DAYS"),
        "Error during planning: in segment condition\nerror: `country` is text, not a date: year-ignoring windows need a date\n  |\n1 | country IN NEXT 3 DAYS\n  | ^^^^^^^"
    );
    assert_eq!(
        err("bougth(description: 'x')"),
        "Error during planning: in segment condition\nerror: unknown function `bougth`\n  |\n1 | bougth(description: 'x')\n  | ^^^^^^\n  = help: did you mean `bought`?"
    );
    assert_eq!(
        err("bought(descripton: 'x')"),
        "Error during planning: in segment condition\nerror: unknown filter `descripton` for bought(...)\n  |\n1 | bought(descripton: 'x')\n  |        ^^^^^^^^^^\n  = help: did you mean `description`?"
    );
    assert_eq!(
        err("rfm_group = 'Champion'"),
        "Error during planning: in segment condition\nerror: `Champion` is not an RFM group\n  |\n1 | rfm_group = 'Champion'\n  |             ^^^^^^^^^^\n  = help: did you mean 'Champions'?"
    );
    assert!(err("orders_count >= 'many'").contains("`orders_count` is a number, but this is text"));
    assert_eq!(
        err("in_segment(lapsed_big_spender)"),
        "Error during planning: in segment condition\nerror: unknown segment `lapsed_big_spender`\n  |\n1 | in_segment(lapsed_big_spender)\n  |            ^^^^^^^^^^^^^^^^^^\n  = help: did you mean `lapsed_big_spenders`?"
    );
}

#[tokio::test]
async fn segment_references_nest_and_cycles_are_refused() {
    let ctx = session().await;
    let mut catalog = session_catalog(&ctx).await;
    let define = |catalog: &mut segql::segment::SegmentCatalog, code: &str, text: &str| {
        catalog
            .definitions
            .insert(code.to_string(), text.to_string());
    };
    define(&mut catalog, "a", "in_segment(b) AND orders_count >= 1");
    define(&mut catalog, "b", "country = 'France' OR in_segment(c)");
    define(&mut catalog, "c", "in_segment(a)");
    define(&mut catalog, "broken", "orders_count >>= 1");
    define(&mut catalog, "french", "country = 'France'");
    define(
        &mut catalog,
        "french_buyers",
        "in_segment(french) AND orders_count >= 1",
    );
    let err = |c: &str| {
        plan_text(c, &catalog, as_of())
            .unwrap_err()
            .strip_backtrace()
    };
    assert!(
        err("in_segment(a)").contains("segments refer to each other in a cycle: a -> b -> c -> a"),
        "{}",
        err("in_segment(a)")
    );
    assert!(err("in_segment(broken)").contains("segment `broken` does not parse"));
    // Two levels deep, and negated.
    let plan = plan_text("in_segment(french_buyers)", &catalog, as_of()).unwrap();
    let n = ctx
        .execute_logical_plan(plan)
        .await
        .unwrap()
        .count()
        .await
        .unwrap();
    assert_eq!(n, 87);
    let plan = plan_text("NOT in_segment(french)", &catalog, as_of()).unwrap();
    let n = ctx
        .execute_logical_plan(plan)
        .await
        .unwrap()
        .count()
        .await
        .unwrap();
    assert_eq!(n, 4372 - 87);
}

#[tokio::test]
async fn product_attributes_come_from_products() {
    let ctx = session().await;
    // The Online Retail data has no products table: derive one with a
    // category per SKU, and give the lines the product_id it joins on.
    for sql in [
        "CREATE VIEW items_with_product AS SELECT *, sku AS product_id FROM order_items",
        "CREATE TABLE products AS SELECT sku AS product_id,
           max(CASE WHEN description ILIKE '%TEA%' THEN 'Tea'
                    WHEN description ILIKE '%COFFEE%' THEN 'Coffee' ELSE 'Other' END) AS category
         FROM order_items GROUP BY sku",
    ] {
        ctx.sql(sql).await.unwrap().collect().await.unwrap();
    }
    let mut catalog = session_catalog(&ctx).await;
    catalog.order_items = Some(ctx.table_provider("items_with_product").await.unwrap());
    catalog.products = Some(ctx.table_provider("products").await.unwrap());
    // Each condition against plain SQL. The lines' purchase rule, with
    // the lines' columns named (both tables have a customer id).
    let line_purchases = format!("i.{PURCHASES}")
        .replace("AND customer_id", "AND i.customer_id")
        .replace("CAST(order_ts", "CAST(i.order_ts");
    let buyers = |category: &str, orders: i64, since: &str| {
        format!(
            "SELECT i.customer_id FROM items_with_product i JOIN products p USING (product_id)
             WHERE {line_purchases} AND p.category = '{category}'
               AND CAST(i.order_ts AS DATE) >= DATE '{since}'
             GROUP BY i.customer_id HAVING count(DISTINCT i.order_id) >= {orders}"
        )
    };
    let recent = format!(
        "SELECT customer_id, order_id FROM items_with_product WHERE {PURCHASES}
           AND CAST(order_ts AS DATE) >= DATE '2011-11-10'"
    );
    let always = "0001-01-01";
    // The first: two product calls. Then one pass answers several calls:
    // product tests evaluated per product, a call without one beside them
    // (the lines not joined to a tested product still count for it), two
    // orders found from the smallest and largest order id, three by
    // counting them.
    let cases = [
        (
            "bought(category: 'Coffee', date: -365d..today) AND NOT bought(category: 'Tea')",
            format!(
                "customer_id IN ({}) AND customer_id NOT IN ({})",
                buyers("Coffee", 1, "2010-12-10"),
                buyers("Tea", 1, always)
            ),
        ),
        (
            "bought(category: 'Coffee', count: 2) AND NOT bought(category: 'Tea', count: 3)",
            format!(
                "customer_id IN ({}) AND customer_id NOT IN ({})",
                buyers("Coffee", 2, always),
                buyers("Tea", 3, always)
            ),
        ),
        (
            "bought(category: 'Tea', count: 2) OR bought(date: -30d..today)",
            format!(
                "customer_id IN ({}) OR customer_id IN (SELECT customer_id FROM ({recent}))",
                buyers("Tea", 2, always)
            ),
        ),
        (
            "bought(category: 'Coffee') AND NOT bought(date: -30d..today, count: 2)",
            format!(
                "customer_id IN ({}) AND customer_id NOT IN (
                   SELECT customer_id FROM ({recent}) GROUP BY customer_id
                   HAVING count(DISTINCT order_id) >= 2)",
                buyers("Coffee", 1, always)
            ),
        ),
    ];
    for (condition, test) in cases {
        let plan = plan_text(condition, &catalog, as_of()).unwrap();
        let text = plan.display_indent().to_string();
        assert!(text.contains("TableScan: products"), "{condition}");
        assert!(text.contains("__bought_pass"), "{condition}");
        let mut ours = BTreeSet::new();
        for batch in ctx
            .execute_logical_plan(plan)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
        {
            ours.extend(batch.column(0).as_primitive::<Int64Type>().iter().flatten());
        }
        let theirs = ids(
            &ctx,
            &format!("SELECT customer_id FROM customers WHERE {test}"),
        )
        .await;
        assert!(!ours.is_empty(), "{condition}");
        assert_eq!(ours, theirs, "{condition}");
    }
    // A name in neither table is an error that lists both.
    let err = plan_text("bought(categry: 'Tea')", &catalog, as_of())
        .unwrap_err()
        .strip_backtrace();
    assert!(err.contains("did you mean `category`?"), "{err}");
}

#[tokio::test]
async fn segments_join_with_sql() {
    let ctx = session().await;
    let sql = "SELECT s.country, count(*) AS n FROM segment('orders_count >= 20', '2011-12-10') s
               JOIN orders o ON o.customer_id = s.customer_id
               WHERE o.status = 'completed' GROUP BY s.country ORDER BY n DESC LIMIT 1";
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(table.contains("United Kingdom"), "{table}");
    let err = ctx
        .sql("SELECT * FROM segment(42)")
        .await
        .unwrap_err()
        .strip_backtrace();
    assert_eq!(
        err,
        "Error during planning: segment: the condition must be constant text, as in segment('orders_count >= 3')"
    );
    let err = ctx
        .sql("SELECT * FROM segment('country = ''X''', 'yesterday')")
        .await
        .unwrap_err()
        .strip_backtrace();
    assert_eq!(
        err,
        "Error during planning: segment: as_of must be a date such as '2011-12-10', got 'yesterday'"
    );
}

#[test]
fn preview_and_explain_from_the_command_line() {
    let run = crate::segql(&[
        "--as-of",
        AS_OF,
        "--format",
        "csv",
        "-c",
        "PREVIEW SEGMENT country = 'Iceland'",
    ]);
    crate::assert_ok(
        &run,
        "members\n1\n\ncustomer_id,created_at,country,n_countries,birthday\n12347,2010-12-07T14:57:00,Iceland,1,\n",
    );

    let run = crate::segql(&[
        "--as-of",
        AS_OF,
        "--format",
        "csv",
        "-c",
        "EXPLAIN SEGMENT country IN ('Belgium', 'Netherlands') AND orders_count >= 5 AND NOT bought(description: '%TEA%')",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("keeps") || l.starts_with("customers") || l.starts_with("as_of"))
        .collect();
    assert_eq!(
        lines,
        [
            "as_of,2011-12-10",
            "customers,4372",
            "keeps 1,\"country IN ('Belgium', 'Netherlands'): 33 alone, 33 with the conditions before it\"",
            "keeps 2,\"orders_count >= 5: 1115 alone, 11 with the conditions before it\"",
            "keeps 3,\"NOT bought(description: '%TEA%'): 1816 alone, 2 with the conditions before it\"",
        ]
    );
    for step in ["condition,", "logical_plan,", "optimized_plan,", "sql,"] {
        assert!(run.stdout.contains(step), "no {step} in {}", run.stdout);
    }
    assert!(
        run.stdout.contains("NOT EXISTS (SELECT 1 FROM"),
        "{}",
        run.stdout
    );

    // Segment statements mix with SQL in one text, and errors show the caret.
    let run = crate::segql(&[
        "--as-of",
        AS_OF,
        "-c",
        "SELECT 1 AS one; PREVIEW SEGMENT orders_count >= 'many'",
    ]);
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.contains("| one |"), "{}", run.stdout);
    assert!(
        run.stderr.contains("error: `orders_count` is a number, but this is text\n  |\n1 | orders_count >= 'many'\n  |                 ^^^^^^"),
        "{}",
        run.stderr
    );

    let run = crate::segql(&["--as-of", "2011-02-30", "-c", "SELECT 1"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .contains("`2011-02-30` is not a date; write it as YYYY-MM-DD"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn random_token_sequences_never_panic_the_planner() {
    let ctx = session().await;
    let catalog = session_catalog(&ctx).await;
    let pieces = [
        "orders_count",
        "country",
        "created_at",
        "rfm_group",
        "amount_spent",
        "bought",
        "description",
        "date",
        "count",
        "NOT",
        "AND",
        "OR",
        "IN",
        "BETWEEN",
        "IS",
        "NULL",
        "NEXT",
        "DAYS",
        "today",
        "(",
        ")",
        ",",
        ":",
        "..",
        "=",
        "!=",
        ">=",
        "3",
        "'x'",
        "2011-03-01",
        "07-25",
        "-30d",
    ];
    let mut state: u64 = 0x5EC_0DE;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    // Valid conditions, mutated: a token replaced, dropped or repeated.
    let seeds = [
        "orders_count >= 3 AND country != 'x'",
        "created_at IN 07-25 .. 07-25 OR created_at IN NEXT 3 DAYS",
        "NOT ( amount_spent BETWEEN 3 AND 3 ) AND rfm_group IS NOT NULL",
        "bought ( description : 'x' , date : -30d .. today , count : 3 ) AND country IN ( 'x' , 'x' )",
    ];
    let mut planned = 0;
    for round in 0..4_000 {
        let mut tokens: Vec<&str> = seeds[round % seeds.len()].split(' ').collect();
        for _ in 0..next(3) {
            let at = next(tokens.len());
            match next(3) {
                0 => tokens[at] = pieces[next(pieces.len())],
                1 if tokens.len() > 1 => {
                    tokens.remove(at);
                }
                _ => tokens.insert(at, tokens[at]),
            }
        }
        let text = tokens.join(" ");
        if plan_text(&text, &catalog, as_of()).is_ok() {
            planned += 1;
        }
    }
    for _ in 0..4_000 {
        let len = 1 + next(10);
        let text = (0..len)
            .map(|_| pieces[next(pieces.len())])
            .collect::<Vec<_>>()
            .join(" ");
        let _ = plan_text(&text, &catalog, as_of());
    }
    assert!(planned > 0, "no random condition planned");
}
