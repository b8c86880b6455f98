//! Set semantics for people: `NOT c` is everyone for whom `c` is not true,
//! so customers with no value (a NULL country, no birthday, no purchases)
//! are in `country != 'x'`, `country NOT IN (...)`, `NOT birthday IN ...`
//! and `NOT orders_count >= 2`; customers without purchases have the RFM
//! group `Prospects`. Exact members on a table small enough to read.

use std::collections::BTreeSet;
use std::path::Path;

use datafusion::prelude::SessionContext;
use segql::Project;
use segql::time::AsOf;

use super::{condition_members, write_parquet};

/// | customer | country | birthday | orders |
/// |---|---|---|---|
/// | 1 | United Kingdom | 1990-08-01 | 2 |
/// | 2 | France | NULL | 1 |
/// | 3 | NULL | 1985-12-24 | 1 |
/// | 4 | Germany | NULL | none |
async fn write_data(dir: &Path) {
    let ctx = SessionContext::new();
    let tables = [
        (
            "customers.parquet",
            "SELECT column1 AS customer_id, column2 AS country, column3 AS birthday \
             FROM (VALUES (1, 'United Kingdom', DATE '1990-08-01'), (2, 'France', NULL), \
                          (3, NULL, DATE '1985-12-24'), (4, 'Germany', NULL))",
        ),
        (
            "orders.parquet",
            "SELECT column1 AS order_id, column2 AS customer_id, column3 AS order_ts, \
                    column4 AS amount, column5 AS status \
             FROM (VALUES (1, 1, TIMESTAMP '2024-01-10 10:00:00', 20.0, 'completed'), \
                          (2, 1, TIMESTAMP '2024-02-10 10:00:00', 30.0, 'completed'), \
                          (3, 2, TIMESTAMP '2024-03-10 10:00:00', 15.0, 'completed'), \
                          (4, 3, TIMESTAMP '2024-04-10 10:00:00', 40.0, 'completed'), \
                          (5, 4, TIMESTAMP '2024-04-11 10:00:00', 99.0, 'cancelled'))",
        ),
    ];
    for (file, query) in tables {
        write_parquet(&ctx, query, &dir.join(file)).await;
    }
    std::fs::write(
        dir.join("segql.toml"),
        "[tables]\norders = \"orders.parquet\"\ncustomers = \"customers.parquet\"\n",
    )
    .unwrap();
}

async fn members(project: &Project, condition: &str) -> BTreeSet<i64> {
    condition_members(project, condition).await
}

fn set(ids: &[i64]) -> BTreeSet<i64> {
    ids.iter().copied().collect()
}

#[tokio::test]
async fn negations_include_customers_without_a_value() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path()).await;
    let config = segql::Config::load(dir.path().join("segql.toml")).unwrap();
    let as_of = AsOf::day(segql::time::parse_day("2024-06-01").unwrap());
    let project = Project::open(config, SessionContext::new(), as_of, false)
        .await
        .unwrap();

    let cases: [(&str, &[i64]); 16] = [
        ("country = 'United Kingdom'", &[1]),
        ("country != 'United Kingdom'", &[2, 3, 4]),
        ("NOT country = 'United Kingdom'", &[2, 3, 4]),
        ("country IN ('United Kingdom', 'France')", &[1, 2]),
        ("country NOT IN ('United Kingdom', 'France')", &[3, 4]),
        ("country IS NULL", &[3]),
        ("country IS NOT NULL", &[1, 2, 4]),
        ("birthday IN 07-25..09-28", &[1]),
        ("NOT birthday IN 07-25..09-28", &[2, 3, 4]),
        ("birthday NOT BETWEEN 1980-01-01 AND 1989-12-31", &[1, 2, 4]),
        ("orders_count >= 2", &[1]),
        ("NOT orders_count >= 2", &[2, 3, 4]),
        ("days_since_last_order != 52", &[1, 2, 4]),
        ("rfm_group = 'Prospects'", &[4]),
        ("rfm_group != 'Prospects'", &[1, 2, 3]),
        (
            "NOT (country = 'France' OR rfm_group = 'Prospects')",
            &[1, 3],
        ),
    ];
    for (condition, want) in cases {
        assert_eq!(members(&project, condition).await, set(want), "{condition}");
    }
    // A condition and its negation split the customers.
    for condition in [
        "country = 'France'",
        "birthday IN 12-20..12-31",
        "amount_spent > 25",
    ] {
        let (yes, no) = (
            members(&project, condition).await,
            members(&project, &format!("NOT ({condition})")).await,
        );
        assert!(yes.is_disjoint(&no), "{condition}");
        assert_eq!(yes.union(&no).count(), 4, "{condition}");
    }
}
