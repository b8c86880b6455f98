//! A foreign warehouse: the bundled data copied with other column names, a
//! normalized `order_items` table `(order_id, line_no, product_id,
//! description, qty, price)`, statuses of its own (`refunded`, `void`), and
//! times stored as UTC instants of a shop in London (the bundled data holds
//! London wall-clock times), read with `[time] zone = "Europe/London"`.
//! With the matching `[columns]` and `[purchases]` settings it must give
//! exactly the members the bundled project gives, for every example
//! segment, through `segment()`, refresh and export; and each bad mapping
//! must be reported when the tables are registered.

use std::collections::BTreeSet;
use std::path::Path;

use datafusion::prelude::SessionContext;
use segql::Project;
use segql::segment::AsOf;

use super::{assert_fails, condition_members, first_ids, repo_root, segql_in, write_parquet};

const AS_OF: &str = "2011-12-10";

/// Writes the foreign copy of the bundled data into `dir`.
async fn write_foreign_copy(dir: &Path) {
    let data = repo_root().join("data/online_retail");
    let ctx = SessionContext::new();
    for table in ["orders", "customers", "order_items", "events"] {
        ctx.register_parquet(
            table,
            data.join(format!("{table}.parquet")).to_str().unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    let copies = [
        (
            "sales.parquet",
            // Some cancellations become `refunded`, adjustments `void`.
            "SELECT customer_id AS client_id, order_id AS invoice, \
                    arrow_cast(arrow_cast(order_ts, 'Timestamp(Microsecond, Some(\"Europe/London\"))'), \
                               'Timestamp(Microsecond, Some(\"UTC\"))') AS purchased_at, \
                    amount AS total_gross, \
                    CASE WHEN status = 'adjustment' THEN 'void' \
                         WHEN status = 'cancelled' AND order_id LIKE '%5' THEN 'Refunded' \
                         ELSE upper(status) END AS state, \
                    country, channel \
             FROM orders",
        ),
        (
            "clients.parquet",
            "SELECT customer_id AS client_id, \
                    arrow_cast(arrow_cast(created_at, 'Timestamp(Microsecond, Some(\"Europe/London\"))'), \
                               'Timestamp(Microsecond, Some(\"UTC\"))') AS signed_up_at, country, \
                    n_countries, birthday AS date_of_birth \
             FROM customers",
        ),
        (
            "activity.parquet",
            "SELECT customer_id AS user_id, event AS event_name, \
                    arrow_cast(event_ts, 'Timestamp(Millisecond, Some(\"UTC\"))') AS occurred_at, \
                    url, campaign, channel \
             FROM events",
        ),
        (
            "lines.parquet",
            "SELECT order_id AS invoice, line_no, sku AS product_id, description, \
                    quantity AS qty, unit_price AS price \
             FROM order_items",
        ),
    ];
    for (file, query) in copies {
        write_parquet(&ctx, query, &dir.join(file)).await;
    }
    std::fs::write(
        dir.join("segql.toml"),
        format!(
            "[tables]\norders = \"sales.parquet\"\ncustomers = \"clients.parquet\"\n\
             order_items = \"lines.parquet\"\nevents = \"activity.parquet\"\n\n\
             [columns.events]\ncustomer_id = \"user_id\"\nevent = \"event_name\"\n\
             event_ts = \"occurred_at\"\n\n\
             [columns.orders]\ncustomer_id = \"client_id\"\norder_id = \"invoice\"\n\
             order_ts = \"purchased_at\"\namount = \"total_gross\"\nstatus = \"state\"\n\n\
             [columns.customers]\ncustomer_id = \"client_id\"\ncreated_at = \"signed_up_at\"\n\
             birthday = \"date_of_birth\"\n\n\
             [columns.order_items]\norder_id = \"invoice\"\nquantity = \"qty\"\n\n\
             [purchases]\nexclude_statuses = [\"cancelled\", \"refunded\", \"void\"]\n\n\
             [time]\nzone = \"Europe/London\"\n\n\
             [segments]\nfolder = \"{}\"\n",
            repo_root().join("queries/segments").display()
        ),
    )
    .unwrap();
}

fn day() -> AsOf {
    AsOf::day(segql::time::parse_day(AS_OF).unwrap())
}

async fn open(config: &Path) -> Project {
    let config = segql::Config::load(config).unwrap();
    let as_of = AsOf::midnight(day().day, config.zone());
    Project::open(config, SessionContext::new(), as_of, false)
        .await
        .unwrap()
}

/// The integers of the first column of every result.
fn first_column(results: &[segql::statements::StatementResult]) -> BTreeSet<i64> {
    let batches: Vec<_> = results.iter().flat_map(|r| r.batches.clone()).collect();
    first_ids(&batches)
}

async fn members(project: &Project, condition: &str) -> BTreeSet<i64> {
    condition_members(project, condition).await
}

fn examples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(repo_root().join("queries/segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_schema_gives_the_same_members() {
    let dir = tempfile::tempdir().unwrap();
    write_foreign_copy(dir.path()).await;
    // The bundled project, with a store of its own.
    let bundled = tempfile::tempdir().unwrap();
    let data = repo_root().join("data/online_retail");
    std::fs::write(
        bundled.path().join("segql.toml"),
        format!(
            "[tables]\norders = \"{0}/orders.parquet\"\ncustomers = \"{0}/customers.parquet\"\n\
             order_items = \"{0}/order_items.parquet\"\nevents = \"{0}/events.parquet\"\n\
             [purchases]\nexclude_statuses = [\"cancelled\", \"adjustment\"]\n\
             [segments]\nfolder = \"{1}\"\n",
            data.display(),
            repo_root().join("queries/segments").display()
        ),
    )
    .unwrap();
    let original = open(&bundled.path().join("segql.toml")).await;
    let mut foreign = open(&dir.path().join("segql.toml")).await;

    let examples = examples();
    assert_eq!(examples.len(), 16);
    for (name, condition) in &examples {
        let want = members(&original, condition).await;
        let got = members(&foreign, condition).await;
        assert_eq!(got, want, "{name}");
    }
    // Mapped names work in conditions beside the table's own.
    assert_eq!(
        members(&foreign, "signed_up_at IN 07-25..09-28").await,
        members(&original, "created_at IN 07-25..09-28").await
    );
    assert_eq!(
        members(&foreign, "bought(qty: 24, date: -30d..today)").await,
        members(&original, "bought(quantity: 24, date: -30d..today)").await
    );

    // purchases() and the RFM grid read the same purchases.
    let sql = "SELECT count(*), count(DISTINCT customer_id), sum(amount) FROM purchases()";
    let totals = |results: Vec<segql::statements::StatementResult>| {
        let mut printer = segql::output::Printer::new(Vec::new(), segql::Format::Csv, "memory");
        for result in &results {
            printer.print(result).unwrap();
        }
        String::from_utf8(printer.finish().unwrap()).unwrap()
    };
    let mut original = original;
    assert_eq!(
        totals(foreign.collect_sql(sql).await.unwrap()),
        totals(original.collect_sql(sql).await.unwrap())
    );
    let grid = |project: &Project| {
        let config = project.config().clone();
        let ctx = project.ctx().clone();
        async move {
            let as_of = AsOf::midnight(day().day, config.zone());
            segql::rfm_grid::RfmGrid::compute(
                &ctx,
                &config.columns,
                &config.purchases,
                &config.rfm,
                as_of,
            )
            .await
            .unwrap()
        }
    };
    // Equal to the cent (sums in another order differ in the last bits).
    assert_eq!(
        grid(&foreign).await.to_text(),
        grid(&original).await.to_text()
    );

    // Refresh and segment_members, every example saved in each store.
    for project in [&mut original, &mut foreign] {
        for (name, condition) in &examples {
            let statement = format!("CREATE SEGMENT s_{name} AS {condition}");
            project.collect_sql(&statement).await.unwrap();
        }
        project.collect_sql("REFRESH SEGMENTS").await.unwrap();
    }
    for (name, _) in &examples {
        let sql = format!("SELECT customer_id FROM segment_members('s_{name}')");
        let want = first_column(&original.collect_sql(&sql).await.unwrap());
        let got = first_column(&foreign.collect_sql(&sql).await.unwrap());
        assert_eq!(got, want, "refreshed {name}");
    }

    // Export: the same customers, in each project's own column names.
    let export = |dir: &Path| {
        let run = segql_in(
            dir,
            &["--as-of", AS_OF, "segment", "export", "s_tea_never_coffee"],
        );
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let mut lines = run.stdout.lines();
        let header = lines.next().unwrap().to_string();
        let ids: Vec<String> = lines
            .map(|l| l.split(',').next().unwrap().to_string())
            .collect();
        (header, ids)
    };
    let (header, ids) = export(dir.path());
    let (bundled_header, bundled_ids) = export(bundled.path());
    assert_eq!(
        header,
        "client_id,signed_up_at,country,n_countries,date_of_birth"
    );
    assert_eq!(
        bundled_header,
        "customer_id,created_at,country,n_countries,birthday"
    );
    assert_eq!(ids, bundled_ids);
    assert!(ids.len() > 100, "{}", ids.len());
}

/// A project over the foreign copy with `section` appended.
async fn foreign_with(section: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_foreign_copy(dir.path()).await;
    let path = dir.path().join("segql.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("[purchases]", &format!("{section}\n[purchases]")),
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn bad_mappings_are_reported_when_tables_are_registered() {
    // The copy without its [columns.orders] section.
    let dir = tempfile::tempdir().unwrap();
    write_foreign_copy(dir.path()).await;
    let path = dir.path().join("segql.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[columns.orders]").unwrap();
    let end = text.find("[columns.customers]").unwrap();
    std::fs::write(&path, format!("{}{}", &text[..start], &text[end..])).unwrap();
    assert_fails(
        &segql_in(dir.path(), &["-c", "SELECT 1"]),
        1,
        "error: table `orders` has no column `customer_id` (the default for customer_id), \
         which segql reads as the customer id; its columns are client_id, invoice, \
         purchased_at, total_gross, state, country, channel; set customer_id = \"<column>\" \
         under [columns.orders] in the project file\n",
    );

    // A mapped column that is not there, and one of the wrong type.
    let dir = foreign_with("[columns.products]\n").await;
    let path = dir.path().join("segql.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("signed_up_at", "signup")).unwrap();
    assert_fails(
        &segql_in(dir.path(), &["-c", "SELECT 1"]),
        1,
        "error: table `customers` has no column `signup` ([columns.customers] created_at), \
         which segql reads as when the customer signed up; its columns are client_id, \
         signed_up_at, country, n_countries, date_of_birth; set created_at = \"<column>\" \
         under [columns.customers] in the project file\n",
    );
    std::fs::write(&path, text.replace("total_gross", "state")).unwrap();
    assert_fails(
        &segql_in(dir.path(), &["-c", "SELECT 1"]),
        1,
        "error: table `orders`: column `state` ([columns.orders] amount) is text, but amount \
         must be a number (integer, decimal or float); set amount under [columns.orders] to a \
         column of that type\n",
    );
    std::fs::write(&path, text.replace("\"purchased_at\"", "\"client_id\"")).unwrap();
    assert_fails(
        &segql_in(dir.path(), &["-c", "SELECT 1"]),
        1,
        "error: table `orders`: column `client_id` ([columns.orders] order_ts) is an integer, \
         but order_ts must be a timestamp or a date; set order_ts under [columns.orders] to a \
         column of that type\n",
    );
}

/// Statuses in `[purchases]` are compared case-blind and literally: a `%`
/// or `_` in a configured status is a character, not a wildcard.
#[test]
fn purchase_statuses_are_case_blind_and_literal() {
    let data = repo_root().join("data/online_retail");
    let buyers = |rule: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("segql.toml"),
            format!(
                "[tables]\norders = \"{0}/orders.parquet\"\n\
                 customers = \"{0}/customers.parquet\"\n[purchases]\n{rule}\n",
                data.display()
            ),
        )
        .unwrap();
        let out = segql_in(
            dir.path(),
            &[
                "--as-of",
                AS_OF,
                "--format",
                "csv",
                "-c",
                "SELECT count(*) AS n FROM segment('orders_count >= 1')",
            ],
        );
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        out.stdout
    };
    // 4,372 customers, 33 of whom only ever cancelled.
    let purchasers = "n\n4339\n";
    assert_eq!(
        buyers("exclude_statuses = [\"cancelled\", \"adjustment\"]"),
        purchasers
    );
    assert_eq!(
        buyers("exclude_statuses = [\"CANCELLED\", \"Adjustment\"]"),
        purchasers
    );
    assert_eq!(buyers("include_statuses = [\"Completed\"]"), purchasers);
    assert_eq!(
        buyers("exclude_statuses = [\"c%\", \"_ancelled\"]"),
        "n\n4372\n"
    );
}
