//! Bad source data, each with its documented behaviour (README, "Bad source
//! data"): the orders table changing under a store between refreshes
//! (a column renamed, a type changed, a file truncated, every file
//! removed), and odd rows (duplicate order ids, orders after `as_of`,
//! negative and NaN amounts). The variants are written from the bundled
//! orders with DataFusion's COPY.

use std::fs;
use std::path::Path;

use super::{repo_root, segql_in};

const COLUMNS: &str = "order_id, customer_id, order_ts, amount, status, n_lines, n_units, \
                       country, channel";

/// Writes `select` (over the bundled tables) to `path` as Parquet.
fn write(path: &Path, select: &str) {
    let run = segql_in(
        &repo_root(),
        &[
            "-c",
            &format!("COPY ({select}) TO '{}' STORED AS PARQUET", path.display()),
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

/// A project whose orders are `orders` (a file or folder) in `dir`.
fn project(dir: &Path, orders: &str) {
    let data = repo_root().join("data/online_retail");
    fs::write(
        dir.join("segql.toml"),
        format!(
            "[tables]\norders = \"{orders}\"\ncustomers = \"{}/customers.parquet\"\n\
             [purchases]\nexclude_statuses = [\"cancelled\", \"adjustment\"]\n",
            data.display()
        ),
    )
    .unwrap();
}

/// The folder `dir/orders` holding a copy of the bundled orders as
/// `a.parquet`, and the bundled file's path.
fn orders_folder(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let folder = dir.join("orders");
    fs::create_dir(&folder).unwrap();
    let original = repo_root().join("data/online_retail/orders.parquet");
    fs::copy(&original, folder.join("a.parquet")).unwrap();
    (folder, original)
}

/// How many customers meet `condition` as of `as_of`.
fn count(dir: &Path, as_of: &str, condition: &str) -> String {
    let run = segql_in(
        dir,
        &[
            "--as-of",
            as_of,
            "--format",
            "csv",
            "-c",
            &format!(
                "SELECT count(*) AS n FROM segment('{}')",
                condition.replace('\'', "''")
            ),
        ],
    );
    assert_eq!(run.code, Some(0), "{condition}: {}", run.stderr);
    run.stdout.trim_start_matches("n\n").trim().to_string()
}

/// The store's committed changes, read through a project file that names
/// only the customers (the orders may be broken).
fn refreshes(dir: &Path) -> String {
    let data = repo_root().join("data/online_retail");
    let config = dir.join("store_only.toml");
    fs::write(
        &config,
        format!(
            "[tables]\ncustomers = \"{}/customers.parquet\"\n[store]\nfolder = \"{}\"\n",
            data.display(),
            dir.join("segql_store").display()
        ),
    )
    .unwrap();
    let run = segql_in(
        dir,
        &[
            "--config",
            config.to_str().unwrap(),
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n FROM segment_refreshes",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.stdout
}

#[test]
fn orders_that_change_under_a_store_stop_the_refresh_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (folder, original) = orders_folder(d);
    let variants = d.join("variants");
    fs::create_dir(&variants).unwrap();
    write(
        &variants.join("renamed.parquet"),
        "SELECT order_id, customer_id, order_ts, amount AS total, status, n_lines, n_units, \
         country, channel FROM orders",
    );
    write(
        &variants.join("text.parquet"),
        "SELECT order_id, customer_id, order_ts, CAST(amount AS VARCHAR) AS amount, status, \
         n_lines, n_units, country, channel FROM orders",
    );
    let bytes = fs::read(&original).unwrap();
    fs::write(
        variants.join("truncated.parquet"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    project(d, "orders");
    let run = segql_in(d, &["segment", "create", "big", "amount_spent > 1000"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let run = segql_in(d, &["--as-of", "2011-12-10", "refresh"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let committed = refreshes(d);
    // The project file as found: segql.toml in the working directory.
    let from = format!("{} (from segql.toml)", folder.display());
    let cases = [
        (
            "renamed.parquet",
            "error: table `orders` has no column `amount` (the default for amount), which segql \
             reads as the order's amount; its columns are order_id, customer_id, order_ts, \
             total, status, n_lines, n_units, country, channel; set amount = \"<column>\" under \
             [columns.orders] in the project file\n"
                .to_string(),
        ),
        (
            "text.parquet",
            "error: table `orders`: column `amount` (the default for amount) is text, but amount \
             must be a number (integer, decimal or float); set amount under [columns.orders] to \
             a column of that type\n"
                .to_string(),
        ),
        (
            "truncated.parquet",
            format!(
                "error: table `orders`: cannot read {from}: Parquet error: Invalid Parquet file. \
                 Corrupt footer; check that the path holds valid Parquet files\n"
            ),
        ),
        (
            "",
            format!(
                "error: table `orders`: no Parquet file (*.parquet) in directory {from}; add \
                 .parquet files or fix the path under [tables]\n"
            ),
        ),
    ];
    for (variant, expected) in cases {
        if variant.is_empty() {
            fs::remove_file(folder.join("a.parquet")).unwrap();
        } else {
            fs::copy(variants.join(variant), folder.join("a.parquet")).unwrap();
        }
        let run = segql_in(d, &["--as-of", "2011-12-17", "refresh"]);
        assert_eq!(
            (run.code, run.stderr.as_str()),
            (Some(1), expected.as_str())
        );
        assert_eq!(refreshes(d), committed, "{variant}");
    }
    // The data back, and a second copy of it beside it: the next refresh
    // reads both files, so every order counts twice.
    fs::copy(&original, folder.join("a.parquet")).unwrap();
    fs::copy(&original, folder.join("b.parquet")).unwrap();
    let run = segql_in(d, &["--as-of", "2011-12-17", "refresh"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        count(d, "2011-12-17", "customer_id = 12437 AND orders_count = 36"),
        "1"
    );
}

#[test]
fn odd_orders_count_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Customer 12437: 18 purchases as of 2011-12-10, 4951.41 in all.
    project(
        d,
        &repo_root()
            .join("data/online_retail/orders.parquet")
            .display()
            .to_string(),
    );
    assert_eq!(
        count(
            d,
            "2011-12-10",
            "customer_id = 12437 AND orders_count = 18 AND amount_spent BETWEEN 4951.40 AND \
             4951.42"
        ),
        "1"
    );
    let cases = [
        // Duplicate order ids are not merged: each row is an order.
        (
            "duplicates",
            format!(
                "SELECT {COLUMNS} FROM orders UNION ALL \
                 SELECT {COLUMNS} FROM orders WHERE customer_id = 12437"
            ),
            vec![("2011-12-10", "customer_id = 12437 AND orders_count = 36")],
        ),
        // An order after as_of does not count until that day.
        (
            "future",
            format!(
                "SELECT {COLUMNS} FROM orders UNION ALL \
                 SELECT 'F1' AS order_id, customer_id, TIMESTAMP '2012-06-01 10:00:00' AS \
                 order_ts, amount, status, n_lines, n_units, country, channel FROM orders \
                 WHERE order_id = '540972'"
            ),
            vec![
                (
                    "2011-12-10",
                    "customer_id = 12437 AND orders_count = 18 AND last_order_date = 2011-12-08",
                ),
                (
                    "2012-07-01",
                    "customer_id = 12437 AND orders_count = 19 AND last_order_date = 2012-06-01",
                ),
            ],
        ),
        // Negative amounts (refunds) are summed as they are.
        (
            "negative",
            "SELECT order_id, customer_id, order_ts, CASE WHEN customer_id = 12437 THEN -amount \
             ELSE amount END AS amount, status, n_lines, n_units, country, channel FROM orders"
                .to_string(),
            vec![(
                "2011-12-10",
                "customer_id = 12437 AND amount_spent BETWEEN -4951.42 AND -4951.40",
            )],
        ),
        // NaN is kept: a sum with NaN is NaN, which DataFusion orders above
        // every number.
        (
            "nan",
            "SELECT order_id, customer_id, order_ts, CASE WHEN customer_id = 12437 THEN \
             CAST('NaN' AS DOUBLE) ELSE CAST(amount AS DOUBLE) END AS amount, status, n_lines, \
             n_units, country, channel FROM orders"
                .to_string(),
            vec![(
                "2011-12-10",
                "customer_id = 12437 AND amount_spent > 1000000000 AND orders_count = 18",
            )],
        ),
    ];
    for (name, select, checks) in cases {
        let file = d.join(format!("{name}.parquet"));
        write(&file, &select);
        project(d, &file.display().to_string());
        for (as_of, condition) in checks {
            assert_eq!(count(d, as_of, condition), "1", "{name}: {condition}");
        }
    }
}

/// An orders file cut short while a refresh reads it (truncated in
/// place, as a copy or a writer that dies mid-file leaves it), at moments
/// spread over the refresh: the refresh either read the file before the
/// cut and commits, or fails saying which table and file it could not
/// read, and commits nothing. The store stays readable, and once the
/// file is whole again the next refresh succeeds.
#[test]
fn an_orders_file_truncated_during_a_refresh_fails_it_cleanly() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (folder, original) = orders_folder(d);
    let file = folder.join("a.parquet");
    project(d, "orders");
    for (code, condition) in [
        ("big", "amount_spent > 1000"),
        ("recent", "last_order_date >= -30d"),
    ] {
        let run = segql_in(d, &["segment", "create", code, condition]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    // How long a refresh takes here, so the cuts land inside one.
    let started = Instant::now();
    let run = segql_in(d, &["--as-of", "2011-11-01", "refresh"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let span = started.elapsed();
    let len = fs::metadata(&file).unwrap().len();
    let (mut failed, mut committed) = (0, 0);
    let steps = 8u32;
    for step in 0..steps {
        let before = refreshes(d);
        let child = Command::new(env!("CARGO_BIN_EXE_segql"))
            .current_dir(d)
            .args(["--as-of", &format!("2011-11-{:02}", 2 + step), "refresh"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(span * step / steps);
        let cut = fs::OpenOptions::new().write(true).open(&file).unwrap();
        cut.set_len(len / 3).unwrap();
        drop(cut);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        match out.status.code() {
            Some(0) => {
                committed += 1;
                assert_ne!(
                    refreshes(d),
                    before,
                    "a refresh that succeeded committed nothing"
                );
            }
            Some(1) => {
                failed += 1;
                assert!(
                    stderr.starts_with("error: ") && stderr.contains("orders"),
                    "step {step}: {stderr}"
                );
                assert!(!stderr.contains("damaged"), "{stderr}");
                assert_eq!(
                    refreshes(d),
                    before,
                    "step {step}: a failed refresh committed"
                );
            }
            other => panic!("step {step}: exit {other:?}: {stderr}"),
        }
        fs::copy(&original, &file).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("truncated during refresh: {failed} failed cleanly, {committed} committed");
    assert!(failed > 0, "no cut landed inside a refresh");
    let run = segql_in(d, &["--as-of", "2011-11-20", "refresh"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

/// A folder whose files come from different writers: the bundled file
/// declares its text as plain strings, one written by DataFusion's COPY
/// declares Arrow views. Both are read, as one table.
#[test]
fn files_from_different_writers_make_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (folder, _) = orders_folder(d);
    write(
        &folder.join("b.parquet"),
        &format!("SELECT {COLUMNS} FROM orders WHERE customer_id = 12437"),
    );
    for orders in ["orders", "orders/*.parquet"] {
        project(d, orders);
        let run = segql_in(
            d,
            &[
                "--format",
                "csv",
                "-c",
                "SELECT count(*) AS n, count(DISTINCT order_id) AS ids FROM orders",
            ],
        );
        assert_eq!(
            (run.code, run.stderr.as_str(), run.stdout.as_str()),
            (Some(0), "", "n,ids\n25919,25900\n"),
            "{orders}"
        );
        assert_eq!(
            count(d, "2011-12-10", "customer_id = 12437 AND orders_count = 36"),
            "1",
            "{orders}"
        );
    }
}
