//! The segment store end to end: the lifecycle from the CLI and from SQL, a
//! year of monthly history on the bundled data, and the faults: SIGKILL in
//! the middle of refreshes, two writers at once, a damaged store, a store
//! from a newer segql.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use segql::refresh::{RefreshOptions, refresh};
use segql::segment::AsOf;

use super::{assert_fails, assert_ok, repo_root, segql_in};

/// A project folder whose tables are the bundled data and whose store is
/// `segql_store` inside it.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = repo_root().join("data/online_retail");
    std::fs::write(
        dir.path().join("segql.toml"),
        format!(
            "[tables]\norders = \"{0}/orders.parquet\"\ncustomers = \"{0}/customers.parquet\"\n\
             order_items = \"{0}/order_items.parquet\"\n\
             [purchases]\nexclude_statuses = [\"cancelled\", \"adjustment\"]\n",
            data.display()
        ),
    )
    .unwrap();
    dir
}

fn day(text: &str) -> AsOf {
    AsOf::day(NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap())
}

async fn session(dir: &Path, as_of: AsOf) -> segql::Project {
    let config = segql::Config::load(dir.join("segql.toml")).unwrap();
    segql::Project::open(config, SessionContext::new(), as_of, false)
        .await
        .unwrap()
}

async fn ids(ctx: &SessionContext, sql: &str) -> BTreeSet<i64> {
    super::sql_ids(ctx, sql).await
}

/// One number from a query.
async fn number(ctx: &SessionContext, sql: &str) -> i64 {
    let values = ids(ctx, sql).await;
    assert_eq!(values.len(), 1, "{sql}");
    values.into_iter().next().unwrap()
}

/// Six segments, one of them built on another, three `bought(...)` calls.
const SEGMENTS: [(&str, &str); 6] = [
    ("big_spenders", "amount_spent > 2000"),
    ("lapsed", "days_since_last_order > 60 AND orders_count >= 2"),
    ("champions", "rfm_group = 'Champions'"),
    (
        "christmas",
        "bought(description: '%CHRISTMAS%', date: -90d..today)",
    ),
    (
        "big_uk",
        "in_segment(big_spenders) AND country = 'United Kingdom'",
    ),
    (
        "mugs_no_bags",
        "bought(description: '%MUG%', count: 2) AND NOT bought(description: '%BAG%', \
         date: -60d..today)",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_monthly_history_adds_up() {
    let dir = project();
    let mut project = session(dir.path(), day("2011-01-01")).await;
    for (code, condition) in SEGMENTS {
        project
            .collect_sql(&format!("CREATE SEGMENT {code} AS {condition}"))
            .await
            .unwrap();
    }
    let store = project.store().clone();
    let catalog = project.catalog("refresh").unwrap().clone();
    let ctx = project.ctx().clone();
    let months: Vec<AsOf> = (2..=13)
        .map(|m| {
            let (y, m) = if m == 13 { (2012, 1) } else { (2011, m) };
            AsOf::day(NaiveDate::from_ymd_opt(y, m, 1).unwrap())
        })
        .collect();
    for as_of in &months {
        let outcome = refresh(
            &ctx,
            &store,
            &catalog,
            &RefreshOptions {
                codes: Vec::new(),
                as_of: *as_of,
                // Another test's child process can hold a copy of the lock's
                // descriptor for a moment (between its fork and exec).
                wait: true,
            },
        )
        .await
        .unwrap();
        assert_eq!(outcome.segments.len(), SEGMENTS.len());
        // One pass over orders feeds all five segments, and one over
        // order_items their `bought(...)` calls.
        assert_eq!(outcome.orders_scans, 1);
        assert_eq!(outcome.items_scans, 1);
    }
    project.sync_store().await.unwrap();

    for (code, condition) in SEGMENTS {
        let sizes = ctx
            .sql(&format!(
                "SELECT size, entered, exited, refresh_id FROM segment_sizes \
                 WHERE segment = '{code}' ORDER BY as_of"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let batch = datafusion::arrow::compute::concat_batches(&sizes[0].schema(), &sizes).unwrap();
        assert_eq!(batch.num_rows(), 12, "{code}");
        let col = |i: usize| batch.column(i).as_primitive::<Int64Type>().clone();
        let (size, entered, exited, refresh_id) = (col(0), col(1), col(2), col(3));
        let mut previous = 0;
        for (month, as_of) in months.iter().enumerate() {
            // size(t) = size(t-1) + entered - exited, and the events agree.
            assert_eq!(
                size.value(month),
                previous + entered.value(month) - exited.value(month),
                "{code} {as_of:?}"
            );
            previous = size.value(month);
            let events = number(
                &ctx,
                &format!(
                    "SELECT count(*) FILTER (WHERE event = 'entered') * 1000000 \
                          + count(*) FILTER (WHERE event = 'exited') \
                     FROM segment_events WHERE segment = '{code}' AND refresh_id = {}",
                    refresh_id.value(month)
                ),
            )
            .await;
            assert_eq!(
                events,
                entered.value(month) * 1_000_000 + exited.value(month),
                "{code} {as_of:?}"
            );
            // The members as of that day equal a fresh evaluation then.
            let date = as_of.day.format("%Y-%m-%d");
            let stored = ids(
                &ctx,
                &format!("SELECT customer_id FROM segment_members('{code}', '{date}')"),
            )
            .await;
            let fresh = ids(
                &ctx,
                &format!(
                    "SELECT customer_id FROM segment('{}', DATE '{date}')",
                    condition.replace('\'', "''")
                ),
            )
            .await;
            assert_eq!(stored.len() as i64, size.value(month), "{code} {date}");
            assert_eq!(stored, fresh, "{code} {date}");
        }
    }
    // Every segment changed over the year, and events are numbered once each.
    assert_eq!(
        number(
            &ctx,
            "SELECT count(*) - count(DISTINCT event_id) + (max(event_id) - count(*)) \
             FROM segment_events"
        )
        .await,
        0
    );
    let current = ids(&ctx, "SELECT customer_id FROM segment_members('big_uk')").await;
    let by_function = ids(
        &ctx,
        "SELECT customer_id FROM customers WHERE in_segment(customer_id, 'big_uk')",
    )
    .await;
    assert_eq!(current, by_function);
    assert!(!current.is_empty());
    // In a WHERE conjunction, in_segment is a semi join with the members.
    let plan = ctx
        .sql(
            "EXPLAIN SELECT customer_id FROM customers \
             WHERE country = 'France' AND in_segment(customer_id, 'big_uk')",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    assert!(
        plan.contains("LeftSemi Join: CAST(customers.customer_id AS Int64) = __in_segment_"),
        "{plan}"
    );
    let either = ids(
        &ctx,
        "SELECT customer_id FROM customers \
         WHERE country = 'France' OR in_segment(customer_id, 'big_uk')",
    )
    .await;
    assert!(either.is_superset(&current));

    // Stays closed by a refresh are in that refresh's partition, and the
    // open ones in the null partition.
    assert_eq!(
        number(
            &ctx,
            "SELECT count(*) FROM (SELECT exited_refresh, count(*) AS n FROM segment_membership \
               WHERE exited_refresh IS NOT NULL GROUP BY exited_refresh) m \
             FULL JOIN (SELECT refresh_id, sum(exited) AS n FROM segment_sizes \
               WHERE exited > 0 GROUP BY refresh_id) s ON m.exited_refresh = s.refresh_id \
             WHERE m.n IS DISTINCT FROM s.n"
        )
        .await,
        0
    );
    // Version 0 creates the table, version 1 is the first refresh.
    history_is_never_rewritten(&store.root().join("segment_membership"), 2, 10);
    // Each of the 17 changes added a file to the commit log and most a
    // file of events and of sizes; once a table holds 10 small files a
    // change merges them, so none holds 10 now (and the rows read above,
    // through the merged files, add up).
    for table in ["segment_events", "segment_sizes", "segment_refreshes"] {
        let path = store.root().join(table);
        let url = url::Url::from_directory_path(&path).unwrap();
        let delta = deltalake::open_table(url).await.unwrap();
        let files = delta.get_file_uris().unwrap().count();
        assert!((1..10).contains(&files), "{table}: {files} files");
        let merges = std::fs::read_dir(path.join("_delta_log"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap()
                    .contains("\"operation\":\"OPTIMIZE\"")
            })
            .count();
        assert!(merges >= 1, "{table}: no merge in its log");
    }
}

/// Every change to `segment_membership` (a Delta table) from log version
/// `from` on (at least `changes` of them) removes files only from the open
/// stays' partition and adds files only there or in its own partition:
/// the history of closed stays is written once.
fn history_is_never_rewritten(table: &Path, from: usize, changes: usize) {
    let mut logs: Vec<_> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    logs.sort();
    let open = "exited_refresh=__HIVE_DEFAULT_PARTITION__/";
    let mut checked = 0;
    for log in logs.iter().skip(from) {
        let text = std::fs::read_to_string(log).unwrap();
        let mut partitions = BTreeSet::new();
        for line in text.lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(path) = action["remove"]["path"].as_str() {
                assert!(path.starts_with(open), "{} removes {path}", log.display());
            }
            if let Some(path) = action["add"]["path"].as_str() {
                let partition = path.split('/').next().unwrap().to_string();
                if partition != open.trim_end_matches('/') {
                    partitions.insert(partition);
                }
            }
        }
        assert!(partitions.len() <= 1, "{}: {partitions:?}", log.display());
        checked += 1;
    }
    assert!(checked >= changes, "{checked} changes checked");
}

/// Runs segql in `dir` and returns the run.
fn run(dir: &Path, args: &[&str]) -> super::Run {
    segql_in(dir, args)
}

#[test]
fn lifecycle_from_the_command_line() {
    let dir = project();
    let d = dir.path();
    assert_ok(
        &run(
            d,
            &[
                "--format",
                "csv",
                "segment",
                "create",
                "big",
                "amount_spent > 5000",
                "--name",
                "Big spenders",
            ],
        ),
        "result\ncreated dynamic segment big; `segql refresh` (or REFRESH SEGMENTS) forms it\n",
    );
    assert_ok(
        &run(
            d,
            &[
                "--as-of",
                "2011-06-01",
                "--format",
                "csv",
                "segment",
                "create",
                "--static",
                "norway",
                "country = 'Norway'",
            ],
        ),
        "result\ncreated static segment norway with 10 members as of 2011-06-01\n",
    );
    assert_ok(
        &run(d, &["--as-of", "2011-03-01", "--format", "csv", "refresh"]),
        "segment,size,entered,exited,note\nbig,38,38,0,refresh 3\n\
         norway,,,,\"skipped: static: formed once, when created\"\n",
    );
    // The refresh rewrote the open stays: those of the segment it skipped
    // are still there, as they were.
    assert_ok(
        &run(
            d,
            &[
                "--format",
                "csv",
                "-c",
                "SELECT segment, count(*) AS open, min(entered_refresh) AS first, \
                 max(entered_refresh) AS last FROM segment_membership \
                 WHERE exited_at IS NULL GROUP BY segment ORDER BY segment",
            ],
        ),
        "segment,open,first,last\nbig,38,3,3\nnorway,10,2,2\n",
    );
    let events = d.join("events.jsonl");
    let refreshed = run(
        d,
        &[
            "--as-of",
            "2011-06-01",
            "--format",
            "csv",
            "refresh",
            "big",
            "--events",
            events.to_str().unwrap(),
            "--on-events",
            "wc -l | tr -d ' ' > batch.txt; echo $SEGQL_REFRESH_ID $SEGQL_EVENTS >> batch.txt",
        ],
    );
    assert_ok(
        &refreshed,
        "segment,size,entered,exited,note\nbig,80,42,0,refresh 4\n",
    );
    let lines = std::fs::read_to_string(&events).unwrap();
    assert_eq!(lines.lines().count(), 42);
    assert_eq!(
        lines.lines().next().unwrap(),
        "{\"event_id\":49,\"refresh_id\":4,\"segment\":\"big\",\"customer_id\":12428,\
         \"event\":\"entered\",\"at\":\"2011-06-01T00:00:00Z\"}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("batch.txt")).unwrap(),
        "42\n4 42\n"
    );
    assert_ok(
        &run(d, &["--format", "csv", "segment", "list"]),
        "code,name,kind,active,size,as_of,version,condition,included,excluded\n\
         big,Big spenders,dynamic,true,80,2011-06-01,1,amount_spent > 5000,0,0\n\
         norway,,static,true,10,2011-06-01,1,country = 'Norway',0,0\n",
    );
    let svg = d.join("big.svg");
    let history = run(
        d,
        &["segment", "history", "big", "--svg", svg.to_str().unwrap()],
    );
    assert_ok(
        &history,
        &format!(
            "as_of       size  entered  exited\n2011-03-01     38       38       0\n\
             2011-06-01     80       42       0\n▁█\nchart written to {}\n",
            svg.display()
        ),
    );
    let png = d.join("big.png");
    let charted = run(
        d,
        &["segment", "history", "big", "--png", png.to_str().unwrap()],
    );
    assert_eq!(charted.code, Some(0), "{}", charted.stderr);
    let (width, height, inked) = super::png_summary(&png);
    assert_eq!((width, height), (760, 420));
    assert!(inked > 2000, "{inked}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg width=\"760\" height=\"420\""),
        "{svg}"
    );
    assert_eq!(svg.matches("<circle").count(), 2);
    for text in [
        ">\nSize of segment big\n</text>",
        ">\nCustomers in the segment\n</text>",
        ">\n2011-03-01\n</text>",
        ">\n2011-06-01\n</text>",
        ">\n80\n</text>",
    ] {
        assert!(svg.contains(text), "{text} missing from {svg}");
    }
    // Export: the members on a past day, chosen columns, each format.
    let export = run(
        d,
        &[
            "--as-of",
            "2011-04-01",
            "segment",
            "export",
            "big",
            "--columns",
            "customer_id,country",
        ],
    );
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    assert_eq!(export.stdout.lines().count(), 39);
    assert_eq!(
        export.stdout.lines().take(2).collect::<Vec<_>>(),
        ["customer_id,country", "12346,United Kingdom"]
    );
    let parquet = d.join("big.parquet");
    assert_ok(
        &run(
            d,
            &[
                "--format",
                "parquet",
                "segment",
                "export",
                "big",
                "--out",
                parquet.to_str().unwrap(),
            ],
        ),
        "",
    );
    let reader = datafusion::parquet::file::reader::SerializedFileReader::new(
        std::fs::File::open(&parquet).unwrap(),
    )
    .unwrap();
    use datafusion::parquet::file::reader::FileReader;
    assert_eq!(reader.metadata().file_metadata().num_rows(), 80);
    let json = run(
        d,
        &[
            "--format",
            "json",
            "segment",
            "export",
            "norway",
            "--columns",
            "customer_id",
        ],
    );
    assert_eq!(json.code, Some(0));
    assert!(
        json.stdout
            .starts_with("[{\"customer_id\":12350},{\"customer_id\":12352}"),
        "{}",
        json.stdout
    );
    // SQL statements, functions and tables in one batch.
    assert_ok(
        &run(
            d,
            &[
                "--format",
                "csv",
                "-c",
                "ALTER SEGMENT big INACTIVE; \
                 SELECT count(*) AS n FROM customers WHERE in_segment(customer_id, 'big'); \
                 SELECT count(*) AS n FROM segment_members('big', '2011-05-31'); \
                 SELECT count(*) AS n FROM segment('in_segment(big) AND country = ''Norway''')",
            ],
        ),
        "result\n\"altered segment big (version 2, inactive)\"\n\nn\n80\n\nn\n38\n\nn\n0\n",
    );
    assert_ok(
        &run(d, &["--as-of", "2011-09-01", "--format", "csv", "refresh"]),
        "segment,size,entered,exited,note\nbig,,,,skipped: inactive\n\
         norway,,,,\"skipped: static: formed once, when created\"\n",
    );
    assert_ok(
        &run(d, &["--format", "csv", "segment", "drop", "norway"]),
        "result\ndropped segment norway (10 members left it)\n",
    );
    assert_ok(
        &run(
            d,
            &[
                "--format",
                "csv",
                "-c",
                "SELECT segment, event, count(*) AS n FROM segment_events \
                 GROUP BY segment, event ORDER BY segment, event; \
                 SELECT refresh_id, kind, segments FROM segment_refreshes ORDER BY refresh_id",
            ],
        ),
        "segment,event,n\nbig,entered,80\nnorway,entered,10\nnorway,exited,10\n\n\
         refresh_id,kind,segments\n1,create,big\n2,create,norway\n3,refresh,big\n4,refresh,big\n\
         5,alter,big\n6,drop,norway\n",
    );
}

#[test]
fn lifecycle_mistakes_are_explained() {
    let dir = project();
    let d = dir.path();
    let fails = |args: &[&str], stderr: &str| assert_fails(&run(d, args), 1, stderr);
    // No store yet: an empty list, and nothing created by looking.
    assert_ok(
        &run(d, &["--format", "csv", "segment", "list"]),
        "code,name,kind,active,size,as_of,version,condition,included,excluded\n",
    );
    assert!(!d.join("segql_store").exists());
    fails(
        &["segment", "create", "Big", "x = 1"],
        "error: `Big` is not a valid segment code; use lower-case letters, digits and _, \
         starting with a letter (e.g. big_spenders)\n",
    );
    fails(
        &["segment", "create", "vip", "amount_spnt > 5"],
        "error: Error during planning: in segment condition\nerror: unknown attribute \
         `amount_spnt`\n  |\n1 | amount_spnt > 5\n  | ^^^^^^^^^^^\n  = help: did you mean \
         `amount_spent`?\n",
    );
    let create = |code: &str, condition: &str| {
        let out = run(
            d,
            &[
                "--as-of",
                "2011-01-01",
                "segment",
                "create",
                code,
                condition,
            ],
        );
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    };
    create("vip", "amount_spent > 5");
    let again = run(d, &["segment", "create", "vip", "amount_spent > 5"]);
    assert_eq!(again.code, Some(1));
    assert!(
        again
            .stderr
            .starts_with("error: segment `vip` already exists (created ")
    );
    assert!(
        again
            .stderr
            .ends_with("); change it with ALTER SEGMENT or remove it with DROP SEGMENT first\n")
    );
    fails(
        &["segment", "create", "other", "in_segment(vipp)"],
        "error: Error during planning: in segment condition\nerror: unknown segment `vipp`\n  \
         |\n1 | in_segment(vipp)\n  |            ^^^^\n  = help: did you mean `vip`?\n",
    );
    create("a2", "country = 'x'");
    create("b2", "in_segment(a2)");
    fails(
        &["segment", "alter", "a2", "--condition", "in_segment(b2)"],
        "error: segment `a2` would refer to itself: a2 -> b2 -> a2; a segment cannot contain \
         itself, so change one of these conditions\n",
    );
    fails(
        &["-c", "ALTER SEGMENT a2 AS in_segment(a2)"],
        "error: segment `a2` would refer to itself: a2 -> a2; a segment cannot contain \
         itself, so change one of these conditions\n",
    );
    fails(
        &["refresh", "vpi"],
        "error: unknown segment `vpi`; segments: a2, b2, vip\n",
    );
    fails(
        &["segment", "history", "nope"],
        "error: unknown segment `nope`; segments: a2, b2, vip\n",
    );
    fails(
        &["segment", "export", "nope"],
        "error: Error during planning: segment_members: unknown segment 'nope'; segments: a2, \
         b2, vip\n",
    );
    fails(
        &["-c", "SELECT in_segment(customer_id, 'vop') FROM customers"],
        "error: Error during planning: in_segment: unknown segment 'vop'; did you mean 'vip'?\n",
    );
    create("froz", "country = 'Norway'");
    fails(
        &["segment", "drop", "a2"],
        "error: segment `a2` is used by `b2`; drop or alter those first\n",
    );
    fails(
        &["segment", "drop", "nope"],
        "error: unknown segment `nope`; segments: a2, b2, froz, vip\n",
    );
    assert_ok(
        &run(
            d,
            &["--format", "csv", "segment", "drop", "nope", "--if-exists"],
        ),
        "result\nsegment nope does not exist; nothing dropped\n",
    );
    assert_ok(
        &run(
            d,
            &["--as-of", "2011-05-01", "--format", "csv", "refresh", "vip"],
        ),
        "segment,size,entered,exited,note\nvip,2432,2432,0,refresh 5\n",
    );
    fails(
        &["--as-of", "2011-04-01", "refresh", "vip"],
        "error: segment `vip` was last refreshed as of 2011-05-01T00:00:00Z; a refresh as of \
         2011-04-01T00:00:00Z would go back in time. Refresh as of a later day (backfill a \
         history oldest first)\n",
    );
    fails(
        &["refresh", "--every", "4h", "--as-of", "2011-01-01"],
        "error: --every refreshes as of each run's day; leave --as-of out (or run once per day \
         with --as-of to backfill)\n",
    );
    assert_fails(
        &run(d, &["refresh", "--every", "0h"]),
        2,
        "error: invalid value '0h' for '--every <INTERVAL>': `0h` is not an interval; write a \
         whole number above 0 and s, m, h or d, such as 4h\n\nFor more information, try \
         '--help'.\n",
    );
    fails(
        &["-c", "CREATE SEGMENT x"],
        "error: CREATE SEGMENT x needs AS <condition>\nsegment statements:\n  CREATE [STATIC | \
         DYNAMIC] SEGMENT code [NAME '...'] [COMMENT '...'] AS <condition>\n  ALTER SEGMENT \
         code [NAME '...'] [COMMENT '...'] [ACTIVE | INACTIVE] [AS <condition>]\n  ALTER \
         SEGMENT code [REMOVE] INCLUDE | EXCLUDE (id, ...)\n  ALTER SEGMENT code INCLUDE | \
         EXCLUDE FROM 'file.csv'\n  DROP SEGMENT [IF EXISTS] code\n  SHOW SEGMENTS\n  REFRESH \
         SEGMENTS [code, ...]\n",
    );
    let frozen = run(
        d,
        &[
            "--as-of",
            "2011-01-01",
            "segment",
            "create",
            "--static",
            "frozen",
            "country = 'Norway'",
        ],
    );
    assert_eq!(frozen.code, Some(0));
    fails(
        &[
            "segment",
            "alter",
            "frozen",
            "--condition",
            "country = 'Spain'",
        ],
        "error: segment `frozen` is static: its members were formed once and are frozen; \
         create a new segment with the new condition instead\n",
    );
}

/// Checks, through the CLI as any reader would, that the store's committed
/// state is whole: sizes match the open stays, events are numbered once
/// each and add up to the sizes, and every row belongs to a committed
/// change. Returns the number of committed changes.
fn check_whole(d: &Path) -> i64 {
    whole(d).unwrap_or_else(|problem| panic!("{problem}"))
}

/// [`check_whole`] as a result: the number of committed changes, or what
/// is wrong.
fn whole(d: &Path) -> Result<i64, String> {
    let out = run(
        d,
        &[
            "--format",
            "csv",
            "-c",
            "WITH latest AS (
               SELECT s.segment, s.size FROM segment_sizes s
               JOIN (SELECT segment, max(refresh_id) AS r FROM segment_sizes GROUP BY segment) l
                 ON s.segment = l.segment AND s.refresh_id = l.r),
             open AS (SELECT segment, count(*) AS n FROM segment_membership
                      WHERE exited_at IS NULL GROUP BY segment),
             net AS (SELECT segment, sum(CASE WHEN event = 'entered' THEN 1 ELSE -1 END) AS n
                     FROM segment_events GROUP BY segment)
             SELECT
               (SELECT count(*) FROM latest LEFT JOIN open ON latest.segment = open.segment
                 WHERE latest.size <> coalesce(open.n, 0)) AS open_mismatches,
               (SELECT count(*) FROM latest LEFT JOIN net ON latest.segment = net.segment
                 WHERE latest.size <> coalesce(net.n, 0)) AS event_mismatches,
               (SELECT count(*) - count(DISTINCT event_id) FROM segment_events) AS duplicates,
               (SELECT coalesce(max(event_id), 0) - count(*) FROM segment_events) AS gaps,
               (SELECT count(*) FROM segment_events WHERE refresh_id NOT IN
                  (SELECT refresh_id FROM segment_refreshes)) AS orphan_events,
               (SELECT count(*) FROM segment_sizes WHERE refresh_id NOT IN
                  (SELECT refresh_id FROM segment_refreshes)) AS orphan_sizes,
               (SELECT (SELECT coalesce(sum(entered), 0) FROM segment_sizes)
                     - (SELECT count(*) FROM segment_events WHERE event = 'entered'))
                 AS entered_mismatch,
               (SELECT count(*) FROM segment_refreshes) AS commits",
        ],
    );
    if out.code != Some(0) {
        return Err(format!("store unreadable: {}", out.stderr));
    }
    let values: Vec<i64> = out
        .stdout
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split(',')
        .filter_map(|v| v.parse().ok())
        .collect();
    match values.as_slice() {
        [0, 0, 0, 0, 0, 0, 0, commits] => Ok(*commits),
        _ => Err(format!("store not whole: {}", out.stdout)),
    }
}

/// Runs `segql args...` in `d` with the fault-injection hook failing its
/// `n`-th store write.
fn run_failing_at(d: &Path, n: u64, args: &[&str]) -> super::Run {
    let output = Command::new(env!("CARGO_BIN_EXE_segql"))
        .args(args)
        .current_dir(d)
        .env(segql::store::FAIL_AT_WRITE, n.to_string())
        .output()
        .unwrap();
    super::Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A change stopped before each of its writes in turn (the deterministic
/// counterpart of the SIGKILL test): after each the store is whole and
/// unchanged, and once the hook is past the change's last write it
/// commits.
#[test]
fn a_change_stopped_at_any_write_leaves_the_store_whole() {
    let dir = project();
    let d = dir.path();
    create_segments(
        d,
        &[
            ("big", "amount_spent > 1000"),
            ("recent", "days_since_last_order <= 30"),
            ("big_recent", "in_segment(big) AND in_segment(recent)"),
        ],
    );
    let out = run(d, &["--as-of", "2011-01-02", "refresh"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let changes: [&[&str]; 3] = [
        &["--as-of", "2011-03-01", "refresh"],
        &["segment", "create", "loyal", "rfm_f >= 4"],
        &["segment", "drop", "big_recent"],
    ];
    for args in changes {
        let mut commits = check_whole(d);
        let mut stopped = 0;
        for n in 1..50 {
            let out = run_failing_at(d, n, args);
            if out.code == Some(0) {
                commits += 1;
                assert_eq!(check_whole(d), commits, "{args:?}");
                break;
            }
            assert_eq!(out.code, Some(1), "{args:?} at {n}: {}", out.stderr);
            assert!(
                out.stderr.contains(&format!("store write {n} ("))
                    && out
                        .stderr
                        .contains("failed on purpose: SEGQL_FAIL_AT_WRITE="),
                "{args:?} at {n}: {}",
                out.stderr
            );
            assert_eq!(check_whole(d), commits, "{args:?} at {n}");
            stopped += 1;
        }
        // Every change writes at least one data table and its commit record.
        assert!(stopped >= 2, "{args:?}: stopped {stopped} times");
        eprintln!("fault injection: {args:?} stopped before each of its {stopped} writes");
    }
}

/// The parquet files in the folder of store table `table` of the project
/// `d` (every file a change added: nothing is vacuumed).
fn table_files(d: &Path, table: &str) -> usize {
    std::fs::read_dir(d.join("segql_store").join(table))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .count()
}

/// Whether the Delta log of store table `table` of `d` has a merge.
fn has_merge(d: &Path, table: &str) -> bool {
    std::fs::read_dir(d.join("segql_store").join(table).join("_delta_log"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .any(|e| {
            std::fs::read_to_string(e.path())
                .unwrap()
                .contains("\"operation\":\"OPTIMIZE\"")
        })
}

/// Merging a table's small files changes no row: when the merge a change
/// makes fails (the fault-injection hook stops it as a crash or a full
/// disk would), the change still commits, with a warning naming the
/// table, the store is whole, and the next change merges.
#[test]
fn a_failed_merge_warns_and_the_change_commits() {
    let dir = project();
    let d = dir.path();
    create_segments(
        d,
        &[
            ("big", "amount_spent > 1000"),
            ("recent", "days_since_last_order <= 30"),
        ],
    );
    // Weekly refreshes, each with events, until `segment_events` holds
    // nine small files: the next change merges them.
    let days: Vec<String> = (0..30)
        .map(|week| {
            (NaiveDate::from_ymd_opt(2011, 1, 2).unwrap() + chrono::Days::new(7 * week))
                .format("%Y-%m-%d")
                .to_string()
        })
        .collect();
    let mut days = days.iter();
    while table_files(d, "segment_events") < 9 {
        let day = days.next().expect("a day left for the history");
        let out = run(d, &["--as-of", day, "refresh"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    assert!(!has_merge(d, "segment_events"));
    let day = days.next().unwrap();
    let mut commits = check_whole(d);
    let mut failed = None;
    for n in 1..50 {
        let out = run_failing_at(d, n, &["--as-of", day, "refresh"]);
        if out.code == Some(0) {
            // The failure fell on the merge: a warning, and the change
            // is committed without it.
            commits += 1;
            assert_eq!(check_whole(d), commits);
            let warning = "warning: could not merge the small files of store table ";
            let table = out
                .stderr
                .strip_prefix(warning)
                .and_then(|rest| rest.split_once(": store write "))
                .map(|(table, _)| table.to_string());
            assert!(
                table.is_some()
                    && out.stderr.contains("failed on purpose")
                    && out.stderr.contains("the change goes on without it"),
                "at {n}: {}",
                out.stderr
            );
            failed = table;
            break;
        }
        assert_eq!(out.code, Some(1), "at {n}: {}", out.stderr);
        assert_eq!(check_whole(d), commits, "at {n}");
    }
    let table = failed.expect("no change committed with a failed merge");
    assert!(!has_merge(d, &table), "{table}");
    assert!(table_files(d, &table) >= 10, "{table}");
    // The next change merges them.
    let out = run(d, &["--as-of", days.next().unwrap(), "refresh"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert_eq!(check_whole(d), commits + 1);
    assert!(has_merge(d, &table), "{table}");
}

/// A full disk, as a file-size limit makes one (`ulimit -f`, with SIGXFSZ
/// ignored so that writes fail with "File too large" instead of killing
/// the process): refresh, `--output`, export and generate each fail with a
/// clear message and leave no partial file; the store stays whole and the
/// next refresh, with room, commits.
#[test]
fn a_full_disk_fails_clearly_and_leaves_nothing_half_written() {
    if !Path::new("/bin/bash").exists() {
        eprintln!("skipped: no /bin/bash to set a file-size limit");
        return;
    }
    let dir = project();
    let d = dir.path();
    let out = run(d, &["segment", "create", "big", "amount_spent > 100"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(d, &["--as-of", "2011-01-02", "refresh"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let commits = check_whole(d);
    let full = |args: &[&str]| {
        let output = Command::new("/bin/bash")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 8; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_segql"))
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // Under 2 MiB a quarter of the limit does not hold the order metrics:
    // they go to a scratch file, which the disk cannot take.
    let (code, stderr) = full(&["--memory-limit", "2M", "--as-of", "2011-03-01", "refresh"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("error: while computing the order metrics (orders at file://")
            && stderr.ends_with("File too large (os error 27)\n"),
        "{stderr}"
    );
    assert_eq!(check_whole(d), commits);
    assert_eq!(
        full(&["-c", "SELECT * FROM order_items", "--output", "out.csv"]),
        (
            Some(1),
            "error: cannot write to out.csv: File too large (os error 27)\n".to_string()
        )
    );
    assert_eq!(
        full(&["segment", "export", "big", "--out", "big.csv"]),
        (
            Some(1),
            "error: cannot write results as csv: Csv error: File too large (os error 27)\n"
                .to_string()
        )
    );
    assert_eq!(
        full(&["generate", "--scale", "0.001", "--out", "gen"]),
        (
            Some(1),
            "error: cannot write gen/customers.parquet: External: File too large (os error 27); \
             check that the disk has space and the folder is writable\n"
                .to_string()
        )
    );
    for partial in ["out.csv", "out.csv.partial", "big.csv", "big.csv.partial"] {
        assert!(!d.join(partial).exists(), "{partial}");
    }
    assert_eq!(std::fs::read_dir(d.join("gen")).unwrap().count(), 0);
    let out = run(d, &["--as-of", "2011-03-01", "refresh"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(check_whole(d), commits + 1);
}

#[test]
fn readers_see_only_committed_states_while_a_writer_refreshes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = project();
    let d = dir.path().to_path_buf();
    create_segments(
        &d,
        &[
            ("big", "amount_spent > 1000"),
            ("recent", "days_since_last_order <= 30"),
            ("loyal", "rfm_f >= 4"),
        ],
    );
    let first = run(&d, &["--as-of", "2011-01-02", "refresh"]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let before = check_whole(&d);
    let writing = Arc::new(AtomicBool::new(true));
    // Eight reader processes at a time, each checking that the state it
    // reads is whole, and that the changes it sees never go back.
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (d, writing) = (d.clone(), Arc::clone(&writing));
            std::thread::spawn(move || {
                let (mut reads, mut problems, mut last) = (0, Vec::new(), 0);
                while writing.load(Ordering::SeqCst) || reads == 0 {
                    match whole(&d) {
                        Ok(commits) if commits >= last => last = commits,
                        Ok(commits) => problems.push(format!("went back from {last} to {commits}")),
                        Err(problem) => problems.push(problem),
                    }
                    reads += 1;
                }
                (reads, problems)
            })
        })
        .collect();
    let start = NaiveDate::from_ymd_opt(2011, 2, 1).unwrap();
    let writes = 6;
    for k in 0..writes {
        let as_of = (start + chrono::Duration::days(14 * k))
            .format("%Y-%m-%d")
            .to_string();
        let out = run(&d, &["--wait", "--as-of", &as_of, "refresh"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    writing.store(false, Ordering::SeqCst);
    let (mut reads, mut problems) = (0, Vec::new());
    for reader in readers {
        let (n, found) = reader.join().unwrap();
        reads += n;
        problems.extend(found);
    }
    eprintln!(
        "concurrency: {reads} reads by 8 readers during {writes} refreshes, {} problems",
        problems.len()
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(check_whole(&d), before + writes);
}

/// Saves each `(code, condition)` as a dynamic segment.
fn create_segments(d: &Path, segments: &[(&str, &str)]) {
    for (code, condition) in segments {
        let out = run(d, &["segment", "create", code, condition]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
}

/// A small deterministic generator for kill delays.
fn next_random(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn sigkill_during_refresh_loses_nothing() {
    let dir = project();
    let d = dir.path();
    create_segments(
        d,
        &[
            ("big", "amount_spent > 1000"),
            ("recent", "days_since_last_order <= 30"),
            ("loyal", "rfm_f >= 4"),
            ("big_recent", "in_segment(big) AND in_segment(recent)"),
        ],
    );
    let start = NaiveDate::from_ymd_opt(2011, 1, 10).unwrap();
    let first = run(d, &["--as-of", "2011-01-02", "refresh"]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    // The kills are spread over the time of a refresh like the ones killed
    // (not the first, which builds the order state and takes longer).
    let timed = Instant::now();
    let second = run(d, &["--as-of", "2011-01-03", "refresh"]);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    // Kill delays are drawn from [0, span). A refresh that finishes before
    // its kill shows the span is longer than a refresh takes now (the
    // machine's load changes while the tests run), so the span shrinks to
    // that delay: most kills then land inside the refresh's work.
    let mut span = timed.elapsed().as_millis() as u64 * 13 / 10;
    let mut commits = check_whole(d);
    let (mut attempts, mut killed_before_commit, mut finished) = (0, 0, 0);
    let mut seed = 0x5eed_u64;
    while attempts < 16 || (killed_before_commit < 4 && attempts < 48) {
        let as_of = (start + chrono::Duration::days(attempts))
            .format("%Y-%m-%d")
            .to_string();
        attempts += 1;
        let mut child = Command::new(env!("CARGO_BIN_EXE_segql"))
            .args(["--as-of", &as_of, "refresh"])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = span * (next_random(&mut seed) % 1000) / 1000;
        std::thread::sleep(Duration::from_millis(delay));
        // SIGKILL: no chance to clean up.
        let _ = child.kill();
        let status = child.wait().unwrap();
        let now = check_whole(d);
        if status.success() {
            finished += 1;
            span = span.min(delay.max(50));
            assert_eq!(now, commits + 1);
        } else if now == commits {
            killed_before_commit += 1;
        } else {
            // Killed after its commit record landed: the refresh counts.
            assert_eq!(now, commits + 1);
        }
        commits = now;
    }
    eprintln!("killed before commit: {killed_before_commit} of {attempts}, {finished} finished");
    // Most kills land before the commit point; the store recovered each time.
    assert!(
        killed_before_commit >= 4,
        "{killed_before_commit} of {attempts} ({finished} finished)"
    );
    // The next refresh completes, and the store is whole.
    let last = run(d, &["--as-of", "2011-06-01", "refresh"]);
    assert_eq!(last.code, Some(0), "{}", last.stderr);
    assert_eq!(check_whole(d), commits + 1);
}

/// The campaign behind the SIGKILL test, not run in CI: `SEGQL_KILLS`
/// (default 200) kills at random moments of refreshes, alters, drops,
/// creates and exports against a store with a year of monthly history,
/// checking after each that the store is whole, that it holds either the
/// change or nothing of it, and that an export left no partial file.
///
///     SEGQL_KILLS=200 cargo test --test integration -- --ignored kills_at_scale --nocapture
#[test]
#[ignore = "a campaign of minutes; run by hand, its figures go in the notes"]
fn kills_at_scale() {
    let kills: u64 = std::env::var("SEGQL_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = project();
    let d = dir.path();
    create_segments(
        d,
        &[
            ("big", "amount_spent > 1000"),
            ("recent", "days_since_last_order <= 30"),
            ("loyal", "rfm_f >= 4"),
            ("tea", "bought(description: '%TEA%')"),
            ("big_recent", "in_segment(big) AND in_segment(recent)"),
        ],
    );
    let mut day = NaiveDate::from_ymd_opt(2010, 12, 15).unwrap();
    for _ in 0..12 {
        let as_of = day.format("%Y-%m-%d").to_string();
        let out = run(d, &["--as-of", &as_of, "refresh"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        day += chrono::Duration::days(30);
    }
    let mut commits = check_whole(d);
    let timed = Instant::now();
    let out = run(d, &["--as-of", "2011-12-10", "refresh"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let typical = timed.elapsed().as_millis() as u64;
    commits += 1;
    assert_eq!(check_whole(d), commits);
    let mut seed = 0x5eed_2026_u64;
    let (mut before, mut after, mut finished) = (0, 0, 0);
    let mut dropped = false;
    for k in 0..kills {
        let as_of = (NaiveDate::from_ymd_opt(2011, 12, 10).unwrap()
            + chrono::Duration::days(k as i64 % 300))
        .format("%Y-%m-%d")
        .to_string();
        let export = d.join("export.csv");
        let condition = format!("amount_spent > {}", 500 + (k % 7) * 100);
        let args: Vec<&str> = match next_random(&mut seed) % 4 {
            0 => vec!["--as-of", &as_of, "refresh"],
            1 => vec!["segment", "alter", "big", "--condition", &condition],
            2 if dropped => vec!["segment", "create", "recent", "days_since_last_order <= 30"],
            2 => vec!["segment", "drop", "recent"],
            _ => vec!["segment", "export", "loyal", "--out", "export.csv"],
        };
        let changes = args[0] != "segment" || args[1] != "export";
        let _ = std::fs::remove_file(&export);
        let mut child = Command::new(env!("CARGO_BIN_EXE_segql"))
            .args(&args)
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = typical * 13 / 10 * (next_random(&mut seed) % 1000) / 1000;
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let now = check_whole(d);
        if changes {
            assert!(
                now == commits || now == commits + 1,
                "{args:?}: {commits} -> {now}"
            );
            if now == commits + 1 && args[1] == "drop" {
                dropped = true;
            } else if now == commits + 1 && args[1] == "create" {
                dropped = false;
            }
            match (status.success(), now > commits) {
                (true, _) => finished += 1,
                (false, true) => after += 1,
                (false, false) => before += 1,
            }
            commits = now;
        } else {
            assert!(!d.join("export.csv.partial").exists() || !status.success());
            if status.success() {
                finished += 1;
            } else {
                before += 1;
            }
            // A killed export may leave its .partial file, never a
            // half-written export.csv.
            if export.exists() {
                let text = std::fs::read_to_string(&export).unwrap();
                assert!(
                    text.starts_with("customer_id"),
                    "export.csv is half-written"
                );
            }
        }
    }
    let out = run(d, &["--as-of", "2012-12-31", "refresh"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(check_whole(d), commits + 1);
    eprintln!(
        "kills at scale: {kills} kills; {before} before the commit point (nothing kept), \
         {after} after it (the change kept), {finished} finished first; the store was whole \
         after every one"
    );
}

#[test]
fn a_second_writer_is_refused_or_waits() {
    let dir = project();
    let d = dir.path();
    let out = run(d, &["segment", "create", "big", "amount_spent > 1000"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let store = d.join("segql_store");
    // Another process holds the write lock.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(store.join(".lock"))
        .unwrap();
    lock.try_lock().unwrap();
    std::fs::write(
        store.join(".lock"),
        "process 4242 since 2011-01-01 00:00:00 UTC\n",
    )
    .unwrap();
    assert_fails(
        &run(d, &["--as-of", "2011-03-01", "refresh"]),
        1,
        &format!(
            "error: the segment store at {} is being changed by another segql (process 4242 \
             since 2011-01-01 00:00:00 UTC); wait for it to finish and try again, or pass \
             --wait to wait for it\n",
            store.display()
        ),
    );
    assert_eq!(check_whole(d), 1);
    let mut waiting = Command::new(env!("CARGO_BIN_EXE_segql"))
        .args([
            "--as-of",
            "2011-03-01",
            "--wait",
            "--format",
            "csv",
            "refresh",
        ])
        .current_dir(d)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(waiting.try_wait().unwrap().is_none(), "did not wait");
    drop(lock);
    let output = waiting.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "segment,size,entered,exited,note\nbig,317,317,0,refresh 2\n"
    );
    assert_eq!(check_whole(d), 2);
}

#[test]
fn damaged_or_newer_stores_are_refused_clearly() {
    let dir = project();
    let d = dir.path();
    let out = run(d, &["segment", "create", "big", "amount_spent > 1000"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let store = d.join("segql_store");
    let marker = store.join("segql_store.json");

    std::fs::write(&marker, "{\"format\": 2}\n").unwrap();
    // A store that cannot be read stops store work, not unrelated SQL.
    assert_ok(
        &run(d, &["--format", "csv", "-c", "SELECT 1 AS one"]),
        "one\n1\n",
    );
    assert_fails(
        &run(d, &["segment", "list"]),
        1,
        &format!(
            "error: the segment store at {} was written by a newer segql (store format 2; this \
             segql reads format 1); upgrade segql to use it\n",
            store.display()
        ),
    );
    std::fs::write(&marker, "not json").unwrap();
    assert_fails(
        &run(d, &["segment", "list"]),
        1,
        &format!(
            "error: the segment store marker {} is damaged (expected {{\"format\": 1}}); restore \
             the store from a backup\n",
            marker.display()
        ),
    );
    std::fs::write(&marker, "{\"format\": 1}\n").unwrap();
    // A commit file of the log table overwritten with garbage.
    let log = store.join("segment_refreshes/_delta_log/00000000000000000001.json");
    let saved = std::fs::read(&log).unwrap();
    std::fs::write(&log, "{not json").unwrap();
    let broken = run(d, &["segment", "list"]);
    assert_eq!(broken.code, Some(1));
    assert!(
        broken
            .stderr
            .starts_with("error: store table segment_refreshes cannot be used: "),
        "{}",
        broken.stderr
    );
    assert!(broken.stderr.ends_with(&format!(
        "; the store at {} may be damaged (restore it from a backup, or move it away to start \
         a new one)\n",
        store.display()
    )));
    std::fs::write(&log, saved).unwrap();
    assert_eq!(check_whole(d), 1);

    // A folder that is something else.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("notes.txt"), "mine").unwrap();
    std::fs::write(
        d.join("other.toml"),
        format!(
            "{}[store]\nfolder = \"{}\"\n",
            std::fs::read_to_string(d.join("segql.toml")).unwrap(),
            other.path().display()
        ),
    )
    .unwrap();
    assert_fails(
        &run(
            d,
            &[
                "--config",
                "other.toml",
                "segment",
                "create",
                "x",
                "country = 'x'",
            ],
        ),
        1,
        &format!(
            "error: {} is not a segment store ({}/segql_store.json cannot be read: No such file \
             or directory (os error 2)); point [store] folder in the project file at a segment \
             store, or at a folder that does not exist yet\n",
            other.path().display(),
            other.path().display()
        ),
    );
    assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 1);
}

#[test]
fn every_keeps_refreshing_until_interrupted() {
    use std::io::BufRead;
    let dir = project();
    let d = dir.path();
    let out = run(d, &["segment", "create", "big", "amount_spent > 1000"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut child = Command::new(env!("CARGO_BIN_EXE_segql"))
        .args(["--format", "csv", "refresh", "--every", "1s"])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    // Two refreshes, as of today, a second apart.
    let mut rows = Vec::new();
    while rows.len() < 2 {
        let line = lines.next().unwrap().unwrap();
        if line.starts_with("big,") {
            rows.push(line);
        }
    }
    assert!(rows[0].ends_with(",refresh 2"), "{rows:?}");
    assert!(rows[1].ends_with(",0,0,refresh 3"), "{rows:?}");
    // Ctrl-C between refreshes ends the loop cleanly.
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("refresh --every did not stop on Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    assert!(check_whole(d) >= 3);
}

/// A project with two saved segments, one on order metrics and one on
/// order lines.
fn project_with_big_and_mugs() -> tempfile::TempDir {
    let dir = project();
    for (code, condition) in [
        ("big", "amount_spent > 1000"),
        ("mugs", "bought(description: '%MUG%', count: 2)"),
    ] {
        assert_eq!(
            run(dir.path(), &["segment", "create", code, condition]).code,
            Some(0)
        );
    }
    dir
}

#[test]
fn explain_shows_each_step_of_a_refresh_and_changes_nothing() {
    let (plain, explained) = (project_with_big_and_mugs(), project_with_big_and_mugs());
    // The second refresh meets open stays: its stays come from the join
    // of the new members with them.
    for day in ["2011-06-01", "2011-09-01"] {
        let args = ["--format", "csv", "--as-of", day, "refresh"];
        let a = run(plain.path(), &args);
        let b = super::segql_in_env(explained.path(), &args, &[("SEGQL_EXPLAIN", "1")]);
        assert_eq!(b.code, Some(0), "{}", b.stderr);
        assert_eq!(a.stdout, b.stdout);
        for step in ["__order_metrics", "big", "mugs"] {
            assert!(
                b.stderr.contains(&format!("explain: {step}\n")),
                "{step}: {}",
                b.stderr
            );
        }
        assert_eq!(
            b.stderr.contains("explain: stays\n"),
            day == "2011-09-01",
            "{}",
            b.stderr
        );
        assert!(b.stderr.contains("Plan with Metrics"), "{}", b.stderr);
        assert!(!a.stderr.contains("explain:"), "{}", a.stderr);
    }
    assert_eq!(check_whole(plain.path()), check_whole(explained.path()));
}

/// The stays join keeps a bit per key when the members' pairs (segment,
/// customer) pack densely into one integer, else a hash table on the two
/// columns; both make the same changes. DataFusion's
/// `perfect_hash_join_min_key_density` above 1 turns the packing off.
#[tokio::test]
async fn stays_joined_by_key_set_or_by_hash_table_make_the_same_changes() {
    let (packed, paired) = (project_with_big_and_mugs(), project_with_big_and_mugs());
    for dir in [&packed, &paired] {
        // Members who leave: those who have not ordered for a while come
        // back.
        let args = ["segment", "create", "recent", "last_order_date >= -60d"];
        assert_eq!(run(dir.path(), &args).code, Some(0));
    }
    for day in ["2011-06-01", "2011-09-01", "2011-12-01"] {
        for (dir, density) in [(&packed, 0.15), (&paired, 2.0)] {
            let mut config = datafusion::prelude::SessionConfig::new();
            config
                .options_mut()
                .execution
                .perfect_hash_join_min_key_density = density;
            let project =
                super::open_in(dir.path(), day, SessionContext::new_with_config(config)).await;
            super::refresh_project(&project).await;
        }
    }
    assert_same_stays_and_events(packed.path(), paired.path());
    // Stays closed on the two later days.
    let closed = run(
        packed.path(),
        &[
            "--format",
            "csv",
            "-c",
            "SELECT DISTINCT exited_refresh FROM segment_membership \
             WHERE exited_refresh IS NOT NULL ORDER BY 1",
        ],
    );
    assert_eq!(closed.stdout, "exited_refresh\n5\n6\n");
    // With DataFusion's own setting these members pack: the stays plan
    // sets a bit per member, no hash table.
    let args = ["--format", "csv", "--as-of", "2011-12-09", "refresh"];
    let explained = super::segql_in_env(packed.path(), &args, &[("SEGQL_EXPLAIN", "1")]);
    assert_eq!(explained.code, Some(0), "{}", explained.stderr);
    let stays = explained
        .stderr
        .split("explain: stays\n")
        .nth(1)
        .unwrap_or_default();
    assert!(
        stays.contains("KeySetJoinExec: on=(n_key = o_key@4), keys 0..")
            && !stays.contains("HashJoinExec"),
        "{stays}"
    );
}

/// The passes' rows and the members held in memory, or written to scratch
/// files (under 2 MiB a quarter of the limit does not hold the order
/// metrics, see `a_full_disk_fails_clearly_and_leaves_nothing_half_written`),
/// make the same changes.
#[test]
fn held_and_written_scratch_rows_make_the_same_changes() {
    let (held, written) = (project_with_big_and_mugs(), project_with_big_and_mugs());
    for day in ["2011-06-01", "2011-09-01"] {
        let a = run(held.path(), &["--format", "csv", "--as-of", day, "refresh"]);
        let b = run(
            written.path(),
            &[
                "--memory-limit",
                "2M",
                "--format",
                "csv",
                "--as-of",
                day,
                "refresh",
            ],
        );
        assert_eq!(a.code, Some(0), "{}", a.stderr);
        assert_eq!(b.code, Some(0), "{}", b.stderr);
        assert_eq!(a.stdout, b.stdout);
    }
    assert_same_stays_and_events(held.path(), written.path());
}

/// The stores of the projects in `a` and `b` hold the same stays and
/// events, row for row (over a thousand of them), after as many changes.
fn assert_same_stays_and_events(a: &Path, b: &Path) {
    let rows = |d: &Path, sql: &str| run(d, &["--format", "csv", "-c", sql]).stdout;
    for sql in [
        "SELECT segment, customer_id, entered_at, exited_at, entered_refresh, exited_refresh \
         FROM segment_membership ORDER BY 1, 2, 3",
        "SELECT event_id, refresh_id, segment, customer_id, event, at FROM segment_events \
         ORDER BY event_id",
    ] {
        let (in_a, in_b) = (rows(a, sql), rows(b, sql));
        assert!(in_a.lines().count() > 1000, "{in_a}");
        assert_eq!(in_a, in_b, "{sql}");
    }
    assert_eq!(check_whole(a), check_whole(b));
}

#[test]
fn a_refresh_short_of_memory_says_so_and_changes_nothing() {
    let dir = project_with_big_and_mugs();
    let d = dir.path();
    let commits = check_whole(d);
    // Too little for the order metrics' aggregation: refused, named,
    // nothing written.
    let out = run(
        d,
        &["--memory-limit", "256K", "--as-of", "2011-06-01", "refresh"],
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    // The step that runs short first depends on timing (the order
    // metrics, or one segment's evaluation); it is named either way.
    assert!(
        out.stderr.starts_with("error: while ") && out.stderr.contains(": Resources exhausted: "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("raise --memory-limit"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("damaged"), "{}", out.stderr);
    assert_eq!(check_whole(d), commits);
    // 4 MiB is room enough: sorts spill (their merge reservation shrinks
    // with the limit), and sizes add up.
    let out = run(
        d,
        &["--memory-limit", "4M", "--as-of", "2011-06-01", "refresh"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(check_whole(d), commits + 1);
}

/// Every command under `--memory-limit`: with 4 MiB each one spills or
/// fits and gives the same output as without a limit; with 256 KiB each
/// fails with exit code 1, the step it was in, DataFusion's account of
/// the memory and the advice, and leaves no output file and the store as
/// it was.
#[test]
fn every_command_spills_or_names_its_step_under_a_memory_limit() {
    let dir = project_with_big_and_mugs();
    let d = dir.path();
    assert_eq!(run(d, &["--as-of", "2011-09-01", "refresh"]).code, Some(0));
    let out = |name: &str| d.join(name).to_str().unwrap().to_string();
    let (export, scores) = (out("mugs.csv"), out("scores.csv"));
    let commands: Vec<(&str, Vec<String>, Option<&str>)> = vec![
        (
            "",
            vec![
                "--format".into(),
                "csv".into(),
                "-c".into(),
                "SELECT count(*) AS n FROM segment('orders_count > 2 AND bought(count: 3)')".into(),
            ],
            None,
        ),
        (
            // The order metrics or a segment's evaluation, by timing.
            "while ",
            vec!["--as-of".into(), "2011-10-01".into(), "refresh".into()],
            None,
        ),
        (
            "while creating segment `st`: ",
            [
                "--as-of",
                "2011-10-01",
                "segment",
                "create",
                "--static",
                "st",
                "country = 'France' AND orders_count > 2",
            ]
            .map(String::from)
            .to_vec(),
            None,
        ),
        (
            "while exporting segment `mugs`: ",
            vec![
                "segment".into(),
                "export".into(),
                "mugs".into(),
                "--out".into(),
                export.clone(),
            ],
            Some(export.as_str()),
        ),
        (
            "while scoring RFM: ",
            vec![
                "--as-of".into(),
                "2011-10-01".into(),
                "rfm".into(),
                "--out".into(),
                scores.clone(),
            ],
            Some(scores.as_str()),
        ),
    ];
    for (step, args, file) in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let commits = check_whole(d);
        let with = |limit: &str| {
            let mut all = vec!["--memory-limit", limit];
            all.extend(&args);
            run(d, &all)
        };
        let failed = with("256K");
        assert_eq!(failed.code, Some(1), "{args:?}: {}", failed.stderr);
        assert!(
            failed.stderr.starts_with(&format!("error: {step}"))
                && (failed.stderr.contains("Resources exhausted: ")
                    || failed
                        .stderr
                        .contains("Not enough memory to continue external sort")),
            "{args:?}: {}",
            failed.stderr
        );
        assert!(
            failed.stderr.trim_end().ends_with(
                "hint: this step needs more memory than the limit allows and cannot spill \
                 further; raise --memory-limit (e.g. double it) or leave it out"
            ),
            "{args:?}: {}",
            failed.stderr
        );
        assert_eq!(check_whole(d), commits, "{args:?} changed the store");
        if let Some(file) = file {
            assert!(!Path::new(file).exists(), "{args:?} left {file}");
            let partial = format!("{file}.partial");
            assert!(!Path::new(&partial).exists(), "{args:?} left {partial}");
        }
        // The same command with 4 MiB, then without a limit: the same
        // output (the store commands each change it once).
        let limited = with("4M");
        assert_eq!(limited.code, Some(0), "{args:?}: {}", limited.stderr);
        let written = file.map(|f| std::fs::read(f).unwrap());
        if args.contains(&"create") {
            assert_eq!(run(d, &["segment", "drop", "st"]).code, Some(0));
        }
        let free = run(d, &args);
        assert_eq!(free.code, Some(0), "{args:?}: {}", free.stderr);
        if args.contains(&"refresh") {
            continue;
        }
        assert_eq!(limited.stdout, free.stdout, "{args:?}");
        if let Some(file) = file {
            assert_eq!(written, Some(std::fs::read(file).unwrap()), "{args:?}");
        }
        if args.contains(&"create") {
            assert_eq!(run(d, &["segment", "drop", "st"]).code, Some(0));
        }
    }
    // The demo under 256 KiB, and generate below the batches it holds.
    let demo = run(
        d,
        &["--memory-limit", "256K", "demo", "--out", &out("demo")],
    );
    assert_eq!(demo.code, Some(1), "{}", demo.stderr);
    assert!(
        demo.stderr.starts_with("error: while running the demo: "),
        "{}",
        demo.stderr
    );
    assert_fails(
        &run(
            d,
            &[
                "--memory-limit",
                "16M",
                "generate",
                "--scale",
                "0.001",
                "--out",
                &out("gen"),
            ],
        ),
        1,
        "error: generate: --memory-limit 16 MiB is too small: the generator holds a batch of \
         65,536 rows of each table (about 24 MiB) besides the Parquet writers' buffers; give \
         --memory-limit 32 MiB or more, or leave it out\n",
    );
    assert!(!d.join("gen").exists());
    let orders = repo_root().join("data/online_retail/orders.parquet");
    let orders = orders.to_str().unwrap();
    assert_fails(
        &run(
            d,
            &[
                "--memory-limit",
                "256K",
                "generate",
                "--events-from",
                orders,
                "--out",
                &out("events.parquet"),
            ],
        ),
        1,
        &format!(
            "error: --events-from {orders}: deriving events holds every order in memory, sorted \
             by customer: its 25,900 orders need about 2 MiB, over --memory-limit (256 KiB); \
             raise --memory-limit to at least 2 MiB or leave it out\n"
        ),
    );
    assert!(!d.join("events.parquet").exists());
}

/// Copies the folder `from` to `to`, recursively.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_folder(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A store written by segql before `segment_membership` was partitioned
/// (two segments, refreshed as of 2011-03-01 and 2011-06-01; made with
/// `tests/integration/fixtures/make_store_format1.sh`): its next change
/// rewrites the stays once into the partitioned layout, keeping every
/// stay, and later changes only add.
#[test]
fn a_store_from_before_the_partitioning_is_rewritten_once() {
    let dir = project();
    let d = dir.path();
    copy_folder(
        &repo_root().join("tests/integration/fixtures/store_format1"),
        &d.join("segql_store"),
    );
    let stays = |closed_now: &str| {
        let out = run(
            d,
            &[
                "--format",
                "csv",
                "-c",
                &format!(
                    "SELECT segment, customer_id, entered_at, \
                       CASE WHEN exited_refresh = {closed_now} THEN NULL ELSE exited_at END \
                         AS exited_at, \
                       entered_refresh, \
                       CASE WHEN exited_refresh = {closed_now} THEN NULL ELSE exited_refresh END \
                         AS exited_refresh \
                     FROM segment_membership WHERE entered_refresh < 5 ORDER BY 1, 2, 3"
                ),
            ],
        );
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        out.stdout
    };
    let before = stays("0");
    assert!(before.lines().count() > 100, "{before}");
    let commits = check_whole(d);
    let members = |at: &str| {
        run(
            d,
            &[
                "--format",
                "csv",
                "-c",
                &format!("SELECT customer_id FROM segment_members('recent', '{at}') ORDER BY 1"),
            ],
        )
        .stdout
    };
    let (march, june) = (members("2011-03-01"), members("2011-06-01"));

    let out = run(d, &["--as-of", "2011-09-01", "refresh"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(check_whole(d), commits + 1);
    let table = d.join("segql_store/segment_membership");
    assert!(
        table
            .join("exited_refresh=__HIVE_DEFAULT_PARTITION__")
            .is_dir()
    );
    // Every earlier stay is kept; those closed by this refresh (5) differ
    // only in their exit.
    assert_eq!(stays("5"), before);
    assert_eq!(members("2011-03-01"), march);
    assert_eq!(members("2011-06-01"), june);

    let logs = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
        .count();
    let out = run(d, &["--as-of", "2011-12-01", "refresh"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(check_whole(d), commits + 2);
    history_is_never_rewritten(&table, logs, 1);
}

/// A `customers` table that repeats ids: every member is still in its
/// segment once (a refresh leaves out its duplicate-removing pass only
/// when each id comes once), on the first refresh and on the next, the
/// same as with each customer once.
#[test]
fn customers_listed_twice_are_members_once() {
    let once = project_with_big_and_mugs();
    let twice = project_with_big_and_mugs();
    let data = repo_root().join("data/online_retail");
    let doubled = twice.path().join("customers_twice.parquet");
    let copy = run(
        twice.path(),
        &[
            "-c",
            &format!(
                "COPY (SELECT * FROM customers UNION ALL \
                 SELECT * FROM customers WHERE customer_id IN (12346, 12347, 12426)) TO '{}'",
                doubled.display()
            ),
        ],
    );
    assert_eq!(copy.code, Some(0), "{}", copy.stderr);
    let config = twice.path().join("segql.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("{}/customers.parquet", data.display()),
        doubled.to_str().unwrap(),
    );
    std::fs::write(&config, text).unwrap();
    for d in [once.path(), twice.path()] {
        assert_eq!(
            run(d, &["segment", "create", "germans", "country = 'Germany'"]).code,
            Some(0)
        );
    }
    let no_repeated_stays = |d: &Path| {
        check_whole(d);
        let repeated = run(
            d,
            &[
                "--format",
                "csv",
                "-c",
                "SELECT count(*) - count(DISTINCT (segment, customer_id)) AS repeated \
                 FROM segment_membership WHERE exited_at IS NULL",
            ],
        );
        assert_eq!(repeated.stdout, "repeated\n0\n", "{}", repeated.stderr);
    };
    // A project whose customers file gains the repeated ids between its
    // two refreshes: the store remembers whether the ids were unique only
    // for the files it counted.
    let later = project_with_big_and_mugs();
    let own = later.path().join("customers.parquet");
    std::fs::copy(data.join("customers.parquet"), &own).unwrap();
    let config = later.path().join("segql.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("{}/customers.parquet", data.display()),
        own.to_str().unwrap(),
    );
    std::fs::write(&config, text).unwrap();
    assert_eq!(
        run(
            later.path(),
            &["segment", "create", "germans", "country = 'Germany'"]
        )
        .code,
        Some(0)
    );
    let manifest = later
        .path()
        .join("segql_store/customers_state/manifest.json");
    for (i, day) in ["2011-06-01", "2011-09-01"].into_iter().enumerate() {
        let args = ["--format", "csv", "--as-of", day, "refresh"];
        if i == 1 {
            std::fs::copy(&doubled, &own).unwrap();
        }
        let (a, b, c) = (
            run(once.path(), &args),
            run(twice.path(), &args),
            run(later.path(), &args),
        );
        assert_eq!(b.code, Some(0), "{}", b.stderr);
        assert_eq!(c.code, Some(0), "{}", c.stderr);
        assert_eq!(a.stdout, b.stdout);
        assert_eq!(a.stdout, c.stdout);
        assert!(b.stdout.contains("germans,"), "{}", b.stdout);
        no_repeated_stays(twice.path());
        no_repeated_stays(later.path());
        let remembered = std::fs::read_to_string(&manifest).unwrap();
        let unique = format!("\"unique\": {}", i == 0);
        assert!(remembered.contains(&unique), "{remembered}");
    }
}
