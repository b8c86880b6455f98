//! Local time: orders placed around midnight and both clock changes of
//! 2024, in Europe/Berlin and America/New_York, land on the day of the
//! project's `[time] zone`; `--as-of` may be a time of day. Timestamps in
//! the data are UTC instants.

use std::collections::BTreeSet;
use std::path::Path;

use datafusion::prelude::SessionContext;
use segql::Project;
use segql::time::{AsOfArg, parse_zone};

use super::{assert_ok, condition_members, segql_in, write_parquet};

/// Orders (UTC instants) and where they fall:
///
/// | customer | order_ts (UTC) | Berlin | New York |
/// |---|---|---|---|
/// | 1 | 2024-03-30 23:30 | 03-31 00:30 CET | 03-30 |
/// | 2 | 2024-03-31 22:30 | 04-01 00:30 CEST | 03-31 |
/// | 3 | 2024-10-26 22:30 | 10-27 00:30 CEST | 10-26 |
/// | 4 | 2024-10-27 23:30 | 10-28 00:30 CET | 10-27 |
/// | 5 | 2024-12-20 17:30 | 12-20 18:30 | 12-20 |
/// | 6 | 2024-03-10 04:30 | 03-10 | 03-09 23:30 EST |
/// | 7 | 2024-11-03 04:30 | 11-03 | 11-03 00:30 EDT |
/// | 8 | 2024-11-04 04:30 | 11-04 | 11-03 23:30 EST |
const ORDERS: [(i64, &str); 8] = [
    (1, "2024-03-30 23:30:00"),
    (2, "2024-03-31 22:30:00"),
    (3, "2024-10-26 22:30:00"),
    (4, "2024-10-27 23:30:00"),
    (5, "2024-12-20 17:30:00"),
    (6, "2024-03-10 04:30:00"),
    (7, "2024-11-03 04:30:00"),
    (8, "2024-11-04 04:30:00"),
];

async fn write_data(dir: &Path) {
    let ctx = SessionContext::new();
    let rows: Vec<String> = ORDERS
        .iter()
        .map(|(id, ts)| format!("({id}, {id}, TIMESTAMP '{ts}', 10.0, 'completed', 'tea')"))
        .collect();
    let values = rows.join(", ");
    let orders = format!(
        "SELECT column1 AS order_id, column2 AS customer_id, column3 AS order_ts, \
                column4 AS amount, column5 AS status, column6 AS description \
         FROM (VALUES {values})"
    );
    // Customer 1 signed up at 2020-12-24 23:30 UTC: Dec 25 in Berlin.
    let customers = "SELECT column1 AS customer_id, column2 AS created_at \
                     FROM (VALUES (1, TIMESTAMP '2020-12-24 23:30:00'), \
                                  (2, TIMESTAMP '2020-06-01 12:00:00'), \
                                  (3, NULL), (4, NULL), (5, NULL), (6, NULL), (7, NULL), \
                                  (8, NULL), (9, NULL))";
    for (file, query) in [
        ("orders.parquet", orders.as_str()),
        ("order_items.parquet", orders.as_str()),
        ("customers.parquet", customers),
    ] {
        write_parquet(&ctx, query, &dir.join(file)).await;
    }
}

/// A project over the data in `dir` with `[time] zone = zone` (none: UTC).
async fn project_in(dir: &Path, zone: Option<&str>) -> std::path::PathBuf {
    let folder = dir.join(zone.unwrap_or("UTC").replace('/', "_"));
    std::fs::create_dir_all(&folder).unwrap();
    let time = zone.map_or(String::new(), |z| format!("[time]\nzone = \"{z}\"\n"));
    let config = folder.join("segql.toml");
    std::fs::write(
        &config,
        format!(
            "[tables]\norders = \"{0}/orders.parquet\"\ncustomers = \"{0}/customers.parquet\"\n\
             order_items = \"{0}/order_items.parquet\"\n{time}",
            dir.display()
        ),
    )
    .unwrap();
    config
}

struct Zoned {
    project: Project,
}

impl Zoned {
    async fn open(config: &Path, as_of: &str) -> Self {
        let config = segql::Config::load(config).unwrap();
        let as_of = AsOfArg::parse(as_of)
            .unwrap()
            .resolve(config.zone())
            .unwrap();
        let project = Project::open(config, SessionContext::new(), as_of, false)
            .await
            .unwrap();
        Self { project }
    }

    async fn members(&self, condition: &str) -> BTreeSet<i64> {
        condition_members(&self.project, condition).await
    }
}

fn set(ids: &[i64]) -> BTreeSet<i64> {
    ids.iter().copied().collect()
}

#[tokio::test]
async fn order_days_are_days_of_the_project_zone() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path()).await;

    let berlin = Zoned::open(
        &project_in(dir.path(), Some("Europe/Berlin")).await,
        "2024-12-21",
    )
    .await;
    assert_eq!(
        segql::time::format_micros(berlin.project.as_of().micros()),
        "2024-12-20T23:00:00Z"
    );
    // Around midnight, before and after the March change.
    assert_eq!(
        berlin.members("last_order_date = 2024-03-31").await,
        set(&[1])
    );
    assert_eq!(
        berlin.members("last_order_date = 2024-04-01").await,
        set(&[2])
    );
    // Around midnight, before and after the October change.
    assert_eq!(berlin.members("bought(date: 2024-10-27)").await, set(&[3]));
    assert_eq!(
        berlin.members("last_order_date = 2024-10-28").await,
        set(&[4])
    );
    // Relative dates and days since count from the local day.
    assert_eq!(berlin.members("days_since_last_order = 1").await, set(&[5]));
    assert_eq!(berlin.members("last_order_date >= -1d").await, set(&[5]));
    assert_eq!(
        berlin.members("bought(date: -1d..today, count: 1)").await,
        set(&[5])
    );
    // A sign-up at 23:30 UTC on Dec 24 is Dec 25 in Berlin: not within the
    // next 3 days of Dec 21.
    assert_eq!(berlin.members("created_at IN NEXT 3 DAYS").await, set(&[]));

    let new_york = Zoned::open(
        &project_in(dir.path(), Some("America/New_York")).await,
        "2024-12-21",
    )
    .await;
    assert_eq!(
        new_york.members("last_order_date = 2024-03-09").await,
        set(&[6])
    );
    assert_eq!(new_york.members("bought(date: 2024-03-10)").await, set(&[]));
    assert_eq!(
        new_york.members("last_order_date = 2024-11-03").await,
        set(&[7, 8])
    );
    assert_eq!(
        new_york.members("last_order_date = 2024-03-30").await,
        set(&[1])
    );

    // Without a zone, days are UTC days.
    let utc = Zoned::open(&project_in(dir.path(), None).await, "2024-12-21").await;
    assert_eq!(utc.members("last_order_date = 2024-03-30").await, set(&[1]));
    assert_eq!(utc.members("last_order_date = 2024-11-04").await, set(&[8]));
    assert_eq!(utc.members("created_at IN NEXT 3 DAYS").await, set(&[1]));
}

#[tokio::test]
async fn as_of_may_be_a_time_of_day() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path()).await;
    let config = project_in(dir.path(), Some("Europe/Berlin")).await;
    // Customer 5 ordered at 18:30 Berlin time on Dec 20.
    let before = Zoned::open(&config, "2024-12-20T18:00").await;
    assert_eq!(
        before.members("orders_count >= 1").await,
        set(&[1, 2, 3, 4, 6, 7, 8])
    );
    assert_eq!(before.members("last_order_date >= today").await, set(&[]));
    let after = Zoned::open(&config, "2024-12-20T19:00").await;
    assert_eq!(after.members("orders_count >= 1").await.len(), 8);
    assert_eq!(after.members("last_order_date >= today").await, set(&[5]));
    // An offset names the instant directly: 17:45 UTC is 18:45 in Berlin.
    let offset = Zoned::open(&config, "2024-12-20T17:45:00Z").await;
    assert_eq!(offset.members("days_since_last_order = 0").await, set(&[5]));

    // The same through the command line, and a time the clocks skip.
    let folder = config.parent().unwrap();
    assert_ok(
        &segql_in(
            folder,
            &[
                "--as-of",
                "2024-12-20T18:00",
                "--format",
                "csv",
                "-c",
                "SELECT count(*) AS n FROM segment('orders_count >= 1')",
            ],
        ),
        "n\n7\n",
    );
    let skipped = segql_in(folder, &["--as-of", "2024-03-31T02:30", "-c", "SELECT 1"]);
    assert_eq!(skipped.code, Some(1));
    assert_eq!(
        skipped.stderr,
        "error: --as-of: that time does not exist in Europe/Berlin (the clocks skip it); give \
         a time outside the change, or one with an offset\n"
    );
    assert_eq!(
        parse_zone("Europe/Berlin").map(|z| z.name()),
        Some("Europe/Berlin")
    );
}
