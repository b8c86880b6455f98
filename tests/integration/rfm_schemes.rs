//! `[rfm]` on the bundled data: a 4-bin fixed-threshold scheme with a
//! custom group map and a custom name for customers without purchases, and
//! a quantile scheme with NTILE ties and average order value. The language's
//! RFM attributes must give exactly the members that the same scores,
//! written independently in SQL with segql's functions, give.

use std::collections::BTreeSet;
use std::path::Path;

use datafusion::prelude::SessionContext;
use segql::Project;
use segql::time::AsOf;

use super::{condition_members, first_ids, repo_root, segql_in};

const GROUPS: &str = "\
# four scores: recency x frequency
scale 4
Stars:     r 4,   f 3-4
Regulars:  r 3-4, f 1-4
Fading:    r 1-2, f 3-4
Gone:      r 1-2, f 1-2
";

fn project(dir: &Path, rfm: &str) {
    let data = repo_root().join("data/online_retail");
    std::fs::write(dir.join("groups.txt"), GROUPS).unwrap();
    std::fs::write(
        dir.join("segql.toml"),
        format!(
            "[tables]\norders = \"{0}/orders.parquet\"\ncustomers = \"{0}/customers.parquet\"\n\
             [purchases]\nexclude_statuses = [\"cancelled\", \"adjustment\"]\n[rfm]\n{rfm}",
            data.display()
        ),
    )
    .unwrap();
}

async fn open(dir: &Path) -> Project {
    let config = segql::Config::load(dir.join("segql.toml")).unwrap();
    let as_of = AsOf::day(segql::time::parse_day("2011-12-10").unwrap());
    Project::open(config, SessionContext::new(), as_of, false)
        .await
        .unwrap()
}

fn ids(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> BTreeSet<i64> {
    first_ids(batches)
}

async fn members(project: &Project, condition: &str) -> BTreeSet<i64> {
    condition_members(project, condition).await
}

/// The customers `where` selects from independently computed scores
/// `r`, `f`, `m` (`score_*` are SQL expressions over `recency`,
/// `frequency`, `monetary`, `average`).
async fn oracle(scores: [&str; 3], filter: &str) -> BTreeSet<i64> {
    let mut ctx = SessionContext::new();
    segql_udfs::register_all(&mut ctx).unwrap();
    let data = repo_root().join("data/online_retail");
    for table in ["orders", "customers"] {
        ctx.register_parquet(
            table,
            data.join(format!("{table}.parquet")).to_str().unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    let [r, f, m] = scores;
    let sql = format!(
        "WITH base AS (
           SELECT customer_id,
                  CAST(DATE '2011-12-10' - CAST(max(order_ts) AS DATE) AS BIGINT) AS recency,
                  count(order_id) AS frequency, CAST(sum(amount) AS DOUBLE) AS monetary,
                  CAST(avg(amount) AS DOUBLE) AS average
           FROM orders
           WHERE status = 'completed' AND customer_id IS NOT NULL
             AND CAST(order_ts AS DATE) < DATE '2011-12-10'
           GROUP BY customer_id),
         scored AS (SELECT customer_id, {r} AS r, {f} AS f, {m} AS m FROM base)
         SELECT c.customer_id FROM customers c LEFT JOIN scored s ON c.customer_id = s.customer_id
         WHERE {filter}"
    );
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    ids(&batches)
}

#[tokio::test]
async fn a_four_bin_threshold_scheme_with_its_own_map() {
    let dir = tempfile::tempdir().unwrap();
    project(
        dir.path(),
        "bins = 4\nscheme = \"thresholds\"\nrecency_thresholds = [30, 90, 180]\n\
         frequency_thresholds = [2, 5, 10]\nmonetary_thresholds = [250, 1000, 5000]\n\
         groups = \"groups.txt\"\nprospects = \"Never bought\"\n",
    );
    let project = open(dir.path()).await;
    let scores = [
        "rfm_bucket(recency, [30, 90, 180], 'low')",
        "rfm_bucket(frequency, [2, 5, 10], 'high')",
        "rfm_bucket(monetary, [250, 1000, 5000], 'high')",
    ];
    let cases = [
        ("rfm_group = 'Stars'", "s.r = 4 AND s.f >= 3"),
        (
            "rfm_group = 'Regulars'",
            "s.r >= 3 AND NOT (s.r = 4 AND s.f >= 3)",
        ),
        ("rfm_group = 'Gone'", "s.r <= 2 AND s.f <= 2"),
        ("rfm_group = 'Never bought'", "s.customer_id IS NULL"),
        ("rfm_m = 4 AND rfm_r <= 2", "s.m = 4 AND s.r <= 2"),
        ("rfm_code = '444'", "s.r = 4 AND s.f = 4 AND s.m = 4"),
    ];
    let mut sizes = Vec::new();
    for (condition, filter) in cases {
        let got = members(&project, condition).await;
        assert_eq!(got, oracle(scores, filter).await, "{condition}");
        sizes.push(got.len());
    }
    assert!(sizes.iter().all(|n| *n > 0), "{sizes:?}");
    // Every customer is in exactly one group.
    let mut all = BTreeSet::new();
    for group in ["Stars", "Regulars", "Fading", "Gone", "Never bought"] {
        let these = members(&project, &format!("rfm_group = '{group}'")).await;
        assert!(all.is_disjoint(&these), "{group}");
        all.extend(these);
    }
    assert_eq!(all.len(), 4372);

    // SQL's rfm_segment uses the project's map.
    let run = segql_in(
        dir.path(),
        &[
            "--format",
            "csv",
            "-c",
            "SELECT rfm_segment(4, 3) AS a, rfm_segment(1, 1) AS b",
        ],
    );
    assert_eq!(
        run.stdout,
        "a,b
Stars,Gone
",
        "{}",
        run.stderr
    );
    // The grid follows the scheme: 4 x 4.
    let run = segql_in(dir.path(), &["--as-of", "2011-12-10", "rfm"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].contains("4 = most recent"), "{}", run.stdout);
    assert_eq!(lines[1].matches('|').count(), 4, "{}", run.stdout);
    assert_eq!(lines.len(), 7, "{}", run.stdout);
    // A group of another map is refused with the nearest name.
    let catalog = project.condition_catalog().unwrap();
    let err = segql::segment::plan_text("rfm_group = 'Star'", &catalog, project.as_of())
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean 'Stars'?"), "{err}");
}

#[tokio::test]
async fn quantiles_with_ntile_ties_on_average_order_value() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "ties = \"ntile\"\nmonetary = \"average\"\n");
    let project = open(dir.path()).await;
    let scores = [
        "rfm_quantile(recency, 5, 'low', 'ntile') OVER ()",
        "rfm_quantile(frequency, 5, 'high', 'ntile') OVER ()",
        "rfm_quantile(average, 5, 'high', 'ntile') OVER ()",
    ];
    // Average order values rarely tie: the top fifth is the same customers.
    assert_eq!(
        members(&project, "rfm_m = 5").await,
        oracle(scores, "s.m = 5").await
    );
    // With NTILE ties, equal values may land in either of two scores, so
    // which customers get a score is up to the order of the ties; how many
    // get each score is not.
    for score in 1..=5 {
        for (attribute, column) in [("rfm_r", "s.r"), ("rfm_f", "s.f")] {
            let condition = format!("{attribute} = {score}");
            assert_eq!(
                members(&project, &condition).await.len(),
                oracle(scores, &format!("{column} = {score}")).await.len(),
                "{condition}"
            );
        }
    }
}

#[tokio::test]
async fn rfm_out_writes_every_customer_by_the_scheme() {
    let dir = tempfile::tempdir().unwrap();
    project(
        dir.path(),
        "bins = 4\nscheme = \"thresholds\"\nrecency_thresholds = [30, 90, 180]\n\
         frequency_thresholds = [2, 5, 10]\nmonetary_thresholds = [250, 1000, 5000]\n\
         groups = \"groups.txt\"\nprospects = \"Never bought\"\n",
    );
    let run = segql_in(
        dir.path(),
        &["--as-of", "2011-12-10", "rfm", "--out", "scores.parquet"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout
            .ends_with("scores of 4372 customers written to scores.parquet\n"),
        "{}",
        run.stdout
    );
    let parquet_stdout = run.stdout;
    // Each group's count in the file is the language's member count.
    let ctx = SessionContext::new();
    ctx.register_parquet(
        "scores",
        dir.path().join("scores.parquet").to_str().unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let project = open(dir.path()).await;
    for group in ["Stars", "Regulars", "Fading", "Gone", "Never bought"] {
        let batches = ctx
            .sql(&format!(
                "SELECT customer_id FROM scores WHERE \"group\" = '{group}'"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            ids(&batches),
            members(&project, &format!("rfm_group = '{group}'")).await,
            "{group}"
        );
    }
    let run = segql_in(
        dir.path(),
        &[
            "--as-of",
            "2011-12-10",
            "--format",
            "csv",
            "rfm",
            "--out",
            "scores.csv",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let text = std::fs::read_to_string(dir.path().join("scores.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("customer_id,recency_days,frequency,monetary,r,f,m,code,group")
    );
    assert_eq!(lines.next(), Some("12346,326,1,77183.600,1,1,4,114,Gone"));
    // Every customer once, by id; the grid counted on the way to the file
    // is the one `segql rfm` computes from the orders.
    let ids: Vec<i64> = text
        .lines()
        .skip(1)
        .map(|line| line.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 4372);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let grid = segql_in(dir.path(), &["--as-of", "2011-12-10", "rfm"]);
    assert_eq!(grid.code, Some(0), "{}", grid.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "{}scores of 4372 customers written to scores.csv\n",
            grid.stdout
        )
    );
    assert_eq!(
        parquet_stdout,
        format!(
            "{}scores of 4372 customers written to scores.parquet\n",
            grid.stdout
        )
    );
    let run = segql_in(dir.path(), &["rfm", "--out", "scores.xlsx"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: cannot tell the format of scores.xlsx from its name; end it in .csv, .parquet, \
         .json or .ndjson, or pass --format\n"
    );
}
