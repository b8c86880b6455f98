//! The store's order state (README, "Refreshing after new orders"): order
//! metrics folded from the order files a store has not seen equal those of
//! a pass over every order, value for value and type for type, as files
//! settle, arrive, change and as the refresh day moves back; a refresh
//! through the state gives the members an ad-hoc query gives (and a
//! refresh with windowed metrics reads every order once instead).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::logical_expr::{LogicalPlan, col};
use datafusion::prelude::SessionContext;
use segql::Project;
use segql::order_state::{Fold, order_metrics};
use segql::segment::planner::order_metrics_plan;
use segql::segment::resolve::resolve_text;
use segql::segment::rfm_cuts::with_scores;

use super::{condition_members, open, refresh_on, repo_root, sql_ids, write_parquet};

/// Conditions whose metrics the comparison covers: every plain metric
/// through RFM, and windowed ones (a relative window, a window with a
/// column filter, an absolute one).
const CONDITIONS: [(&str, &str); 4] = [
    ("rfm", "rfm_group = 'Champions' OR rfm_code = '555'"),
    (
        "recent",
        "orders_count(date: -90d..today) >= 2 AND avg_order_value(date: -60d..today) > 10",
    ),
    (
        "uk_spend",
        "amount_spent(date: 2011-01-01..2011-06-30, country: 'United Kingdom') > 100",
    ),
    (
        "plain",
        "orders_count >= 3 AND amount_spent > 500 AND avg_order_value > 20 \
         AND first_order_date < 2011-03-01 AND days_since_last_order < 60",
    ),
];

/// Writes the rows of `select` (over `{orders}`, the bundled orders) to
/// `path`, through `ctx`.
async fn write_orders(ctx: &SessionContext, path: &Path, select: &str) {
    if !ctx.table_exist("bundled_orders").unwrap() {
        let orders = repo_root().join("data/online_retail/orders.parquet");
        ctx.register_parquet(
            "bundled_orders",
            orders.to_str().unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    write_parquet(ctx, &select.replace("{orders}", "bundled_orders"), path).await;
}

/// A project in `dir` whose orders are the folder `dir/orders` and whose
/// store is `dir/segql_store`.
fn project_file(dir: &Path, statuses: &str) {
    let data = repo_root().join("data/online_retail");
    fs::write(
        dir.join("segql.toml"),
        format!(
            "[tables]\norders = \"orders\"\ncustomers = \"{0}/customers.parquet\"\n\
             order_items = \"{0}/order_items.parquet\"\n\
             [purchases]\nexclude_statuses = [{statuses}]\n",
            data.display()
        ),
    )
    .unwrap();
}

/// The rows of `plan` by customer, as text with their types.
async fn table(ctx: &SessionContext, plan: LogicalPlan) -> String {
    let frame = ctx
        .execute_logical_plan(plan)
        .await
        .unwrap()
        .sort(vec![col("__m_customer_id").sort(true, false)])
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

/// Folds the store's state in `dir` on `as_of` and checks the metrics
/// against a pass over every order; returns how the fold went.
async fn folded_equals_full(dir: &Path, as_of: &str) -> Option<Fold> {
    folded_equals_full_for(dir, as_of, &CONDITIONS, 3).await
}

/// [`folded_equals_full`] for the metrics of `conditions`, which have at
/// least `windows` windowed metrics.
async fn folded_equals_full_for(
    dir: &Path,
    as_of: &str,
    conditions: &[(&str, &str)],
    windows: usize,
) -> Option<Fold> {
    let project = open(dir, as_of).await;
    let ctx = project.ctx().clone();
    let catalog = project.catalog("test").unwrap().clone();
    let as_of = project.as_of();
    let mut scopes = Vec::new();
    for (_, condition) in conditions {
        resolve_text(condition, &catalog, as_of)
            .unwrap()
            .order_scopes(true, &mut scopes);
    }
    assert!(scopes.len() >= windows, "{scopes:?}");
    let full = table(
        &ctx,
        order_metrics_plan(&catalog, as_of, &scopes, true).unwrap(),
    )
    .await;
    // A refresh scores quantiles with shared ties from the cuts of the
    // metrics (the project's scheme): the same scores as the window's.
    assert!(catalog.rfm.shared_quantiles());
    let unscored = order_metrics_plan(&catalog, as_of, &scopes, false).unwrap();
    let unscored = ctx
        .execute_logical_plan(unscored)
        .await
        .unwrap()
        .into_view();
    let scored = with_scores(&ctx, unscored, &catalog.rfm).await.unwrap();
    let scored = table(
        &ctx,
        ctx.read_table(scored).unwrap().into_unoptimized_plan(),
    )
    .await;
    assert_eq!(scored, full, "as of {as_of:?}");
    let folded = order_metrics(&ctx, project.store(), &catalog, as_of, &scopes, true)
        .await
        .unwrap();
    let (plan, fold) = folded?;
    let folded = table(&ctx, plan).await;
    assert_eq!(folded, full, "as of {as_of:?}");
    assert!(full.lines().count() > 1000, "{}", &full[..200]);
    Some(fold)
}

/// The files of sums in the state's folder `state`.
fn sums_files(state: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sums-"))
        })
        .collect()
}

fn fold(kept: usize, added: usize, unsettled: usize, rebuilt: Option<&str>) -> Fold {
    Fold {
        files: 0,
        kept,
        added,
        unsettled,
        rebuilt: rebuilt.map(str::to_string),
        recent: None,
    }
}

/// The fold without its file count and recent orders (checked
/// separately).
fn without_files(fold: Option<Fold>) -> Option<Fold> {
    fold.map(|f| Fold {
        files: 0,
        recent: None,
        ..f
    })
}

/// The bundled orders in three files of `<dir>/orders` by time (a: before
/// June 2011, b: June to August, c: from September), with a project file
/// in `dir`; returns the orders folder.
async fn three_order_files(ctx: &SessionContext, dir: &Path) -> std::path::PathBuf {
    let orders = dir.join("orders");
    fs::create_dir(&orders).unwrap();
    let part = |from: &str, to: &str| {
        format!(
            "SELECT * FROM {{orders}} WHERE order_ts >= TIMESTAMP '{from}' \
             AND order_ts < TIMESTAMP '{to}' ORDER BY order_id"
        )
    };
    for (file, from, to) in [
        ("a", "2000-01-01", "2011-06-01"),
        ("b", "2011-06-01", "2011-09-01"),
        ("c", "2011-09-01", "2012-01-01"),
    ] {
        write_orders(
            ctx,
            &orders.join(format!("{file}.parquet")),
            &part(from, to),
        )
        .await;
    }
    project_file(dir, "\"cancelled\", \"adjustment\"");
    orders
}

/// Writes `e<digit>.parquet` to `orders`: the orders from 2011-11-20 whose
/// id ends in `digit`, again two weeks later under new ids.
async fn write_late_orders(ctx: &SessionContext, orders: &Path, digit: char) {
    write_orders(
        ctx,
        &orders.join(format!("e{digit}.parquet")),
        &format!(
            "SELECT order_id || '-e' AS order_id, customer_id, \
             order_ts + INTERVAL '14 days' AS order_ts, amount, status, n_lines, n_units, \
             country, channel FROM {{orders}} WHERE order_ts >= TIMESTAMP '2011-11-20' \
             AND right(order_id, 1) = '{digit}'"
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folded_order_metrics_equal_a_pass_over_every_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ctx = SessionContext::new();
    let orders = three_order_files(&ctx, d).await;

    // a settles first; b and c hold orders on or after the day.
    let first = folded_equals_full(d, "2011-07-01").await;
    assert_eq!(first.as_ref().map(|f| f.files), Some(3));
    assert_eq!(without_files(first), Some(fold(0, 1, 2, None)));
    // The same day again: a is kept, nothing added.
    assert_eq!(
        without_files(folded_equals_full(d, "2011-07-01").await),
        Some(fold(1, 0, 2, None))
    );
    // b settles.
    assert_eq!(
        without_files(folded_equals_full(d, "2011-10-01").await),
        Some(fold(1, 1, 1, None))
    );
    // Everything settled.
    assert_eq!(
        without_files(folded_equals_full(d, "2012-01-01").await),
        Some(fold(2, 1, 0, None))
    );
    // New orders arrive as a new file (every tenth order again, a week
    // later, with new ids).
    write_orders(
        &ctx,
        &orders.join("d.parquet"),
        "SELECT order_id || '-again' AS order_id, customer_id, \
         order_ts + INTERVAL '7 days' AS order_ts, amount, status, n_lines, n_units, country, \
         channel FROM {orders} WHERE order_ts >= TIMESTAMP '2011-11-01' \
         AND right(order_id, 1) = '7'",
    )
    .await;
    assert_eq!(
        without_files(folded_equals_full(d, "2012-01-01").await),
        Some(fold(3, 1, 0, None))
    );
    // More files, one at a time: a layer each, up to eight, then the
    // layers are merged into one.
    for (n, digit) in (5..=9).zip('1'..='5') {
        write_late_orders(&ctx, &orders, digit).await;
        assert_eq!(
            without_files(folded_equals_full(d, "2012-01-01").await),
            Some(fold(n - 1, 1, 0, None))
        );
        let layers = sums_files(&d.join("segql_store/order_state")).len();
        assert_eq!(layers, if n < 9 { n } else { 1 }, "after {n} files");
    }
    for digit in '1'..='5' {
        fs::remove_file(orders.join(format!("e{digit}.parquet"))).unwrap();
    }
    assert_eq!(
        without_files(folded_equals_full(d, "2012-01-01").await),
        Some(fold(
            0,
            4,
            0,
            Some("e1.parquet changed or was removed since the last refresh")
        ))
    );
    // Back in time: the state counts orders of days after this one, so
    // the metrics come from every order and the state is left alone.
    assert_eq!(folded_equals_full(d, "2011-08-01").await, None);
    assert_eq!(
        without_files(folded_equals_full(d, "2012-01-01").await),
        Some(fold(4, 0, 0, None))
    );
    // A file of the state changes: rebuilt from every settled file.
    write_orders(
        &ctx,
        &orders.join("b.parquet"),
        "SELECT * FROM {orders} WHERE order_ts >= TIMESTAMP '2011-06-01' \
         AND order_ts < TIMESTAMP '2011-08-01' ORDER BY order_id",
    )
    .await;
    assert_eq!(
        without_files(folded_equals_full(d, "2012-01-01").await),
        Some(fold(
            0,
            4,
            0,
            Some("b.parquet changed or was removed since the last refresh")
        ))
    );
    fs::remove_file(orders.join("d.parquet")).unwrap();
    assert_eq!(
        without_files(folded_equals_full(d, "2012-01-01").await),
        Some(fold(
            0,
            3,
            0,
            Some("d.parquet changed or was removed since the last refresh")
        ))
    );
    // Another purchase rule: rebuilt.
    project_file(d, "\"cancelled\"");
    assert_eq!(
        without_files(folded_equals_full(d, "2012-01-01").await),
        Some(fold(
            0,
            3,
            0,
            Some("the orders' columns or purchase rule changed")
        ))
    );
    // The state's sums file cut short: rebuilt, not read.
    let state = d.join("segql_store/order_state");
    let sums = sums_files(&state);
    assert_eq!(sums.len(), 1, "one sums file: {sums:?}");
    let bytes = fs::read(&sums[0]).unwrap();
    fs::write(&sums[0], &bytes[..bytes.len() / 2]).unwrap();
    let rebuilt = without_files(folded_equals_full(d, "2012-01-01").await).unwrap();
    assert_eq!((rebuilt.kept, rebuilt.added), (0, 3));
    assert!(
        rebuilt
            .rebuilt
            .as_deref()
            .unwrap()
            .ends_with("is missing or cut short"),
        "{rebuilt:?}"
    );
    let left: Vec<String> = fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left.len(),
        3,
        "the manifest, one sums file, one of recent orders: {left:?}"
    );
}

/// Days since 1970-01-01 of `date` (`YYYY-MM-DD`).
fn day(date: &str) -> i32 {
    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_metrics_read_the_recent_orders_the_state_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ctx = SessionContext::new();
    let orders = three_order_files(&ctx, d).await;
    // Windows of 90 and 60 days back from the refresh's day.
    let relative = [CONDITIONS[1], CONDITIONS[0]];
    let check = |as_of: &'static str| folded_equals_full_for(d, as_of, &relative, 2);
    let recent = |fold: &Option<Fold>| fold.as_ref().and_then(|f| f.recent);

    // Nothing settled yet: no sums to keep, one pass reads every order.
    assert_eq!(check("2011-05-01").await, None);
    // a settles: its recent orders start 31 days before the 90-day window.
    let first = check("2011-07-01").await;
    assert_eq!(recent(&first), Some((day("2011-03-02"), 0)));
    // A month later they still cover the window: kept as they are.
    let kept = check("2011-08-01").await;
    assert_eq!(recent(&kept), Some((day("2011-03-02"), 0)));
    assert_eq!(without_files(kept), Some(fold(1, 0, 2, None)));
    // b settles; a's recent orders now start too early and are cut.
    let later = check("2011-10-01").await;
    assert_eq!(recent(&later), Some((day("2011-06-02"), 0)));
    assert_eq!(without_files(later), Some(fold(1, 1, 1, None)));
    let state = d.join("segql_store/order_state");
    let named = |prefix: &str| -> Vec<std::path::PathBuf> {
        let mut found: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .collect();
        found.sort();
        found
    };
    assert_eq!(
        named("recent-").len(),
        2,
        "one per layer, the cut one replaced"
    );
    // Recent orders cut short are taken from the layer's files again.
    let broken = &named("recent-")[0];
    let bytes = fs::read(broken).unwrap();
    fs::write(broken, &bytes[..bytes.len() / 2]).unwrap();
    let repaired = check("2011-10-02").await;
    // (the other layer's still start on 2011-06-02)
    assert_eq!(recent(&repaired), Some((day("2011-06-02"), 1)));
    assert_eq!(named("recent-").len(), 2);
    // A window that reaches back to the first order reads every order.
    let unbounded = [(
        "uk",
        "orders_count(country: 'United Kingdom') >= 2 AND orders_count(date: -30d..today) > 0",
    )];
    assert_eq!(
        folded_equals_full_for(d, "2011-10-02", &unbounded, 2).await,
        None
    );
    // Without windows the state leaves the recent orders alone.
    let plain = [CONDITIONS[3]];
    let fold = folded_equals_full_for(d, "2011-10-02", &plain, 0).await;
    assert_eq!(recent(&fold), None);
    assert_eq!(named("recent-").len(), 2);
    // Every file settled, one more layer, and eight more: merged into
    // one layer, with recent orders of its own.
    let settled = check("2012-01-01").await;
    assert_eq!(recent(&settled), Some((day("2011-09-02"), 0)));
    for digit in '1'..='8' {
        write_late_orders(&ctx, &orders, digit).await;
        let fold = check("2012-01-01").await;
        assert_eq!(
            recent(&fold),
            Some((day("2011-09-02"), 0)),
            "after e{digit}"
        );
    }
    assert_eq!(named("sums-").len(), 3);
    assert_eq!(named("recent-").len(), 3);
}

/// The members of `code` in the store, and those of `condition` by an
/// ad-hoc query (a pass over every order), as of the project's day.
async fn members(project: &Project, code: &str, condition: &str) -> (BTreeSet<i64>, BTreeSet<i64>) {
    let sql = format!("SELECT customer_id FROM segment_members('{code}')");
    (
        sql_ids(project.ctx(), &sql).await,
        condition_members(project, condition).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_through_the_state_give_the_members_of_a_full_pass() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let orders = d.join("orders");
    fs::create_dir(&orders).unwrap();
    let ctx = SessionContext::new();
    write_orders(
        &ctx,
        &orders.join("a.parquet"),
        "SELECT * FROM {orders} WHERE order_ts < TIMESTAMP '2011-09-01'",
    )
    .await;
    write_orders(
        &ctx,
        &orders.join("b.parquet"),
        "SELECT * FROM {orders} WHERE order_ts >= TIMESTAMP '2011-09-01'",
    )
    .await;
    project_file(d, "\"cancelled\", \"adjustment\"");
    // Without windowed metrics a refresh reads the order state.
    let unwindowed = [CONDITIONS[0], CONDITIONS[3]];
    let mut project = open(d, "2011-10-01").await;
    for (code, condition) in unwindowed {
        project
            .collect_sql(&format!("CREATE SEGMENT {code} AS {condition}"))
            .await
            .unwrap();
    }
    let mut reports = Vec::new();
    for day in ["2011-10-01", "2011-11-01", "2011-12-15", "2012-01-01"] {
        let outcome = refresh_on(d, day).await;
        reports.push(outcome.orders_fold.map(|f| f.describe()));
        let project = open(d, day).await;
        for (code, condition) in unwindowed {
            let (stored, adhoc) = members(&project, code, condition).await;
            assert_eq!(stored, adhoc, "{code} on {day}");
            assert!(!adhoc.is_empty(), "{code} on {day}");
        }
    }
    assert_eq!(
        reports,
        [
            "order state: 2 of 2 order files read (0 kept, 1 added, 1 read for this day only)",
            "order state: 1 of 2 order files read (1 kept, 0 added, 1 read for this day only)",
            "order state: 1 of 2 order files read (1 kept, 1 added, 0 read for this day only)",
            "order state: 0 of 2 order files read (2 kept, 0 added, 0 read for this day only)",
        ]
        .map(|s| Some(s.to_string()))
    );

    // With a windowed metric, the window reads the recent orders the
    // state keeps (taken from the kept files once); the members agree.
    let mut project = open(d, "2012-01-01").await;
    let (code, condition) = CONDITIONS[1];
    project
        .collect_sql(&format!("CREATE SEGMENT {code} AS {condition}"))
        .await
        .unwrap();
    let outcome = refresh_on(d, "2012-01-02").await;
    assert_eq!(
        outcome.orders_fold.map(|f| f.describe()).as_deref(),
        Some(
            "order state: 0 of 2 order files read (2 kept, 0 added, 0 read for this day only); \
             windows read the orders from 2011-09-03 on (2 layers' recent orders taken from \
             their files)"
        )
    );
    assert_eq!(outcome.orders_scans, 1);
    let project = open(d, "2012-01-02").await;
    for (code, condition) in [CONDITIONS[0], CONDITIONS[1], CONDITIONS[3]] {
        let (stored, adhoc) = members(&project, code, condition).await;
        assert_eq!(stored, adhoc, "{code}");
    }
    // A week later the recent orders are kept as they are.
    let outcome = refresh_on(d, "2012-01-09").await;
    assert_eq!(
        outcome.orders_fold.map(|f| f.describe()).as_deref(),
        Some(
            "order state: 0 of 2 order files read (2 kept, 0 added, 0 read for this day only); \
             windows read the orders from 2011-09-03 on"
        )
    );
    let project = open(d, "2012-01-09").await;
    let (stored, adhoc) = members(&project, code, condition).await;
    assert_eq!(stored, adhoc, "{code}");
    assert!(!adhoc.is_empty());
}
