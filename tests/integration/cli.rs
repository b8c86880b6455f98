//! Output formats, several statements, SQL files, `--output` and the
//! default project file, on the bundled Online Retail data.

use std::fs;

use crate::{assert_fails, assert_ok, repo_root, segql, segql_in};

const COUNT_ORDERS: &str = "SELECT count(*) AS n FROM orders";

#[test]
fn count_as_table() {
    let run = segql(&["--config", "segql.toml", "-c", COUNT_ORDERS]);
    assert_ok(
        &run,
        "+-------+\n\
         | n     |\n\
         +-------+\n\
         | 25900 |\n\
         +-------+\n",
    );
}

#[test]
fn count_as_csv() {
    let run = segql(&[
        "--config",
        "segql.toml",
        "--format",
        "csv",
        "-c",
        COUNT_ORDERS,
    ]);
    assert_ok(&run, "n\n25900\n");
}

#[test]
fn count_as_json() {
    let run = segql(&[
        "--config",
        "segql.toml",
        "--format",
        "json",
        "-c",
        COUNT_ORDERS,
    ]);
    assert_ok(&run, "[{\"n\":25900}]\n");
}

#[test]
fn count_as_ndjson() {
    let run = segql(&[
        "--config",
        "segql.toml",
        "--format",
        "ndjson",
        "-c",
        COUNT_ORDERS,
    ]);
    assert_ok(&run, "{\"n\":25900}\n");
}

#[test]
fn purchasing_customers() {
    let run = segql(&[
        "--format",
        "csv",
        "-c",
        "SELECT count(DISTINCT customer_id) AS n FROM orders WHERE status = 'completed'",
    ]);
    assert_ok(&run, "n\n4339\n");
}

#[test]
fn every_bundled_table_is_registered() {
    let run = segql(&[
        "--format",
        "csv",
        "-c",
        "SELECT (SELECT count(*) FROM orders) AS orders, \
                (SELECT count(*) FROM customers) AS customers, \
                (SELECT count(*) FROM order_items) AS order_items",
    ]);
    assert_ok(&run, "orders,customers,order_items\n25900,4372,541909\n");
}

#[test]
fn segql_functions_are_registered() {
    let run = segql(&[
        "--format",
        "csv",
        "-c",
        "SELECT rfm_code(5, 4, 5) AS code, rfm_segment(5, 5) AS best",
    ]);
    assert_ok(&run, "code,best\n545,Champions\n");
}

#[test]
fn several_statements_in_one_command() {
    let run = segql(&["-c", "SELECT 1 AS a; SELECT 'x' AS b;"]);
    assert_ok(
        &run,
        "+---+\n| a |\n+---+\n| 1 |\n+---+\n\
         \n\
         +---+\n| b |\n+---+\n| x |\n+---+\n",
    );
}

#[test]
fn several_statements_as_csv_json_ndjson() {
    let sql = "SELECT 1 AS a; SELECT 2 AS b";
    assert_ok(&segql(&["--format", "csv", "-c", sql]), "a\n1\n\nb\n2\n");
    assert_ok(
        &segql(&["--format", "json", "-c", sql]),
        "[{\"a\":1}]\n[{\"b\":2}]\n",
    );
    assert_ok(
        &segql(&["--format", "ndjson", "-c", sql]),
        "{\"a\":1}\n{\"b\":2}\n",
    );
}

#[test]
fn commands_run_before_files_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.sql");
    let second = dir.path().join("second.sql");
    fs::write(&first, "SELECT 'f1' AS step").unwrap();
    fs::write(&second, "SELECT 'f2' AS step").unwrap();
    let run = segql(&[
        "--format",
        "csv",
        "-f",
        first.to_str().unwrap(),
        "-c",
        "SELECT 'c1' AS step",
        "-f",
        second.to_str().unwrap(),
        "-c",
        "SELECT 'c2' AS step",
    ]);
    assert_ok(&run, "step\nc1\n\nstep\nc2\n\nstep\nf1\n\nstep\nf2\n");
}

#[test]
fn file_with_comments_views_and_several_statements() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.sql");
    fs::write(
        &file,
        "-- Purchases and cancellations on the bundled data.\n\
         \n\
         CREATE VIEW purchases AS\n\
         SELECT * FROM orders -- completed orders with a customer\n\
         WHERE status = 'completed' AND customer_id IS NOT NULL;\n\
         \n\
         /* block comment */\n\
         SELECT count(DISTINCT customer_id) AS customers FROM purchases;\n\
         \n\
         -- one row per status\n\
         SELECT status, count(*) AS orders FROM orders GROUP BY status ORDER BY status;\n\
         -- trailing comment, no statement\n",
    )
    .unwrap();
    let run = segql(&["--format", "csv", "-f", file.to_str().unwrap()]);
    assert_ok(
        &run,
        "customers\n4339\n\nstatus,orders\nadjustment,3\ncancelled,3836\ncompleted,22061\n",
    );
}

#[test]
fn statements_without_columns_print_nothing() {
    let run = segql(&[
        "-c",
        "CREATE VIEW v AS SELECT 1 AS a; SET datafusion.execution.batch_size = 1024",
    ]);
    assert_ok(&run, "");
}

#[test]
fn empty_result_prints_the_header() {
    let sql = "SELECT order_id, amount FROM orders WHERE false";
    assert_ok(
        &segql(&["-c", sql]),
        "+----------+--------+\n\
         | order_id | amount |\n\
         +----------+--------+\n\
         +----------+--------+\n",
    );
    assert_ok(&segql(&["--format", "csv", "-c", sql]), "order_id,amount\n");
    assert_ok(&segql(&["--format", "json", "-c", sql]), "[]\n");
    assert_ok(&segql(&["--format", "ndjson", "-c", sql]), "");
}

/// Two anonymous invoices: `customer_id` is NULL in the data.
const NULL_CUSTOMERS: &str = "SELECT order_id, customer_id, order_ts, amount FROM orders \
     WHERE customer_id IS NULL ORDER BY order_id LIMIT 2";

#[test]
fn nulls_in_table() {
    assert_ok(
        &segql(&["-c", NULL_CUSTOMERS]),
        "+----------+-------------+---------------------+----------+\n\
         | order_id | customer_id | order_ts            | amount   |\n\
         +----------+-------------+---------------------+----------+\n\
         | 536414   |             | 2010-12-01T11:52:00 | 0.000    |\n\
         | 536544   |             | 2010-12-01T14:32:00 | 5521.140 |\n\
         +----------+-------------+---------------------+----------+\n",
    );
}

#[test]
fn nulls_in_csv() {
    assert_ok(
        &segql(&["--format", "csv", "-c", NULL_CUSTOMERS]),
        "order_id,customer_id,order_ts,amount\n\
         536414,,2010-12-01T11:52:00,0.000\n\
         536544,,2010-12-01T14:32:00,5521.140\n",
    );
}

#[test]
fn nulls_in_json() {
    assert_ok(
        &segql(&["--format", "json", "-c", NULL_CUSTOMERS]),
        "[{\"order_id\":\"536414\",\"customer_id\":null,\"order_ts\":\"2010-12-01T11:52:00\",\"amount\":0.000},\
         {\"order_id\":\"536544\",\"customer_id\":null,\"order_ts\":\"2010-12-01T14:32:00\",\"amount\":5521.140}]\n",
    );
    assert_ok(
        &segql(&["--format", "ndjson", "-c", NULL_CUSTOMERS]),
        "{\"order_id\":\"536414\",\"customer_id\":null,\"order_ts\":\"2010-12-01T11:52:00\",\"amount\":0.000}\n\
         {\"order_id\":\"536544\",\"customer_id\":null,\"order_ts\":\"2010-12-01T14:32:00\",\"amount\":5521.140}\n",
    );
}

#[test]
fn csv_quotes_commas_and_quotes() {
    assert_ok(
        &segql(&[
            "--format",
            "csv",
            "-c",
            "SELECT 'a,b' AS x, 'say \"hi\"' AS y",
        ]),
        "x,y\n\"a,b\",\"say \"\"hi\"\"\"\n",
    );
}

#[test]
fn output_goes_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("n.csv");
    let run = segql(&[
        "--format",
        "csv",
        "--output",
        out.to_str().unwrap(),
        "-c",
        COUNT_ORDERS,
    ]);
    assert_ok(&run, "");
    assert_eq!(fs::read_to_string(&out).unwrap(), "n\n25900\n");
}

#[test]
fn default_project_file_is_used_when_present() {
    // From the repository root, ./segql.toml maps the bundled tables.
    let run = segql(&["--format", "csv", "-c", COUNT_ORDERS]);
    assert_ok(&run, "n\n25900\n");
}

#[test]
fn without_a_project_file_there_are_no_tables() {
    let dir = tempfile::tempdir().unwrap();
    assert_ok(
        &segql_in(
            dir.path(),
            &["--format", "csv", "-c", "SELECT 1 + 1 AS two"],
        ),
        "two\n2\n",
    );
    assert_fails(
        &segql_in(dir.path(), &["-c", COUNT_ORDERS]),
        1,
        "error: Error during planning: table 'datafusion.public.orders' not found\n",
    );
}

#[test]
fn project_file_found_from_another_directory() {
    // Relative table paths resolve against the project file's folder.
    let dir = tempfile::tempdir().unwrap();
    let config = repo_root().join("segql.toml");
    let run = segql_in(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--format",
            "csv",
            "-c",
            COUNT_ORDERS,
        ],
    );
    assert_ok(&run, "n\n25900\n");
}

#[test]
fn no_sql_and_no_terminal_reads_standard_input() {
    // The test runner gives the binary an empty, non-terminal stdin.
    assert_ok(&segql(&[]), "");
}

#[test]
fn help_shows_usage() {
    let run = segql(&["--help"]);
    assert_eq!(run.code, Some(0));
    assert!(
        run.stdout.contains(
            "Usage: segql [--config FILE] [-c SQL]... [-f FILE]... \
             [--format table|csv|json|ndjson|parquet] [--output PATH] [--as-of DATE]\n"
        ),
        "{}",
        run.stdout
    );
}
