//! Pinned lists of a saved segment: `ALTER SEGMENT code INCLUDE (...)`,
//! `EXCLUDE (...)`, `INCLUDE FROM 'file.csv'`, `REMOVE INCLUDE|EXCLUDE
//! (...)`, stored with the definition, applied by refresh (an excluded
//! customer never enters, an included one is a member whatever the
//! condition), shown by SHOW SEGMENTS; unknown ids are refused.

use std::collections::BTreeSet;
use std::path::Path;

use super::{assert_fails, repo_root, segql_in};

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = repo_root().join("data/online_retail");
    std::fs::write(
        dir.path().join("segql.toml"),
        format!(
            "[tables]\norders = \"{0}/orders.parquet\"\ncustomers = \"{0}/customers.parquet\"\n\
             [purchases]\nexclude_statuses = [\"cancelled\", \"adjustment\"]\n",
            data.display()
        ),
    )
    .unwrap();
    dir
}

fn sql(dir: &Path, text: &str) -> String {
    let run = segql_in(
        dir,
        &["--as-of", "2011-12-10", "--format", "csv", "-c", text],
    );
    assert_eq!(run.code, Some(0), "{text}: {}", run.stderr);
    run.stdout
}

fn ids(csv: &str) -> BTreeSet<i64> {
    csv.lines().skip(1).map(|l| l.parse().unwrap()).collect()
}

#[test]
fn pinned_lists_are_applied_by_refresh() {
    let dir = project();
    let d = dir.path();
    sql(d, "CREATE SEGMENT big AS amount_spent > 20000");
    sql(d, "REFRESH SEGMENTS");
    let condition = ids(&sql(
        d,
        "SELECT customer_id FROM segment('amount_spent > 20000') ORDER BY 1",
    ));
    let members = |d: &Path| {
        ids(&sql(
            d,
            "SELECT customer_id FROM segment_members('big') ORDER BY 1",
        ))
    };
    assert_eq!(members(d), condition);
    let excluded = *condition.iter().next().unwrap();
    let outsider = 12347;
    assert!(!condition.contains(&outsider));

    assert_eq!(
        sql(d, &format!("ALTER SEGMENT big INCLUDE ({outsider}, 12348)")),
        "result\nsegment big (version 2) includes 2 and excludes 0 pinned customers; the next \
         refresh applies them\n"
    );
    sql(d, &format!("ALTER SEGMENT big EXCLUDE ({excluded})"));
    std::fs::write(
        d.join("vips.csv"),
        "customer_id,why\n12349,asked\n12348,twice\n",
    )
    .unwrap();
    sql(d, "ALTER SEGMENT big INCLUDE FROM 'vips.csv'");
    // Nothing changes before the next refresh.
    assert_eq!(members(d), condition);
    let refreshed = sql(d, "REFRESH SEGMENTS");
    let mut want = condition.clone();
    want.extend([outsider, 12348, 12349]);
    want.remove(&excluded);
    assert_eq!(members(d), want);
    assert_eq!(
        refreshed,
        format!(
            "segment,size,entered,exited,note\nbig,{},3,1,refresh 6\n",
            want.len()
        )
    );
    assert!(
        sql(d, "SHOW SEGMENTS").ends_with(",amount_spent > 20000,3,1\n"),
        "{}",
        sql(d, "SHOW SEGMENTS")
    );

    // An excluded customer stays out even when also included.
    sql(d, &format!("ALTER SEGMENT big INCLUDE ({excluded})"));
    sql(d, "ALTER SEGMENT big REMOVE INCLUDE (12349)");
    sql(d, "REFRESH SEGMENTS");
    want.remove(&12349);
    assert_eq!(members(d), want);
    sql(d, &format!("ALTER SEGMENT big REMOVE EXCLUDE ({excluded})"));
    sql(d, "REFRESH SEGMENTS");
    want.insert(excluded);
    assert_eq!(members(d), want);

    // PREVIEW and EXPLAIN of the code show the condition with its pins.
    let preview = sql(d, "PREVIEW SEGMENT big");
    assert!(
        preview.starts_with(&format!("members\n{}\n", want.len())),
        "{preview}"
    );
    let explain = sql(d, "EXPLAIN SEGMENT big");
    assert!(
        explain.contains(&format!(
            "\nsegment,big\nincluded,\"{excluded}, 12347, 12348\"\nexcluded,none\n"
        )),
        "{explain}"
    );
    // Conditions on stored segments preview too.
    let norway = sql(
        d,
        "PREVIEW SEGMENT in_segment(big) AND country != 'United Kingdom'",
    );
    let by_sql = sql(
        d,
        "SELECT count(*) AS members FROM segment('in_segment(big) AND country != ''United \
         Kingdom''')",
    );
    assert!(norway.starts_with(&by_sql), "{norway}\n{by_sql}");
}

#[test]
fn pin_mistakes_are_refused() {
    let dir = project();
    let d = dir.path();
    sql(d, "CREATE SEGMENT big AS amount_spent > 20000");
    sql(d, "CREATE STATIC SEGMENT frozen AS country = 'Norway'");
    let fails = |text: &str, stderr: &str| {
        assert_fails(
            &segql_in(d, &["--as-of", "2011-12-10", "-c", text]),
            1,
            stderr,
        )
    };
    fails(
        "ALTER SEGMENT big INCLUDE (12347, 1, 2)",
        "error: 2 of the ids to include are not customers (1, 2); nothing changed\n",
    );
    fails(
        "ALTER SEGMENT big REMOVE EXCLUDE (12347)",
        "error: segment `big` does not exclude 12347; nothing changed\n",
    );
    fails(
        "ALTER SEGMENT frozen INCLUDE (12347)",
        "error: segment `frozen` is static: its members were formed once and are frozen; create \
         a new segment with the new condition instead\n",
    );
    fails(
        "ALTER SEGMENT big INCLUDE FROM 'nowhere.csv'",
        "error: INCLUDE FROM 'nowhere.csv': no such file (a relative path is read from the \
         working directory)\n",
    );
    std::fs::write(d.join("ids.csv"), "id\n12347\n").unwrap();
    fails(
        "ALTER SEGMENT big INCLUDE FROM 'ids.csv'",
        "error: INCLUDE FROM 'ids.csv': the file has no customer_id column; its header must \
         name one\n",
    );
    let syntax = segql_in(d, &["-c", "ALTER SEGMENT big INCLUDE 12347"]);
    assert!(
        syntax.stderr.starts_with(
            "error: expected customer ids in parentheses after INCLUDE, as in INCLUDE (12346, \
             12347)\nsegment statements:"
        ),
        "{}",
        syntax.stderr
    );
    let syntax = segql_in(d, &["-c", "ALTER SEGMENT big EXCLUDE (12347, x)"]);
    assert!(
        syntax
            .stderr
            .starts_with("error: `x` is not a customer id (a whole number)"),
        "{}",
        syntax.stderr
    );
}
