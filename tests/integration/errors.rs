//! Bad SQL, unknown tables, unreadable files and usage errors: each exits
//! with status 1 (2 for usage errors) and one clear `error:` line.

use std::fs;

use crate::{assert_fails, assert_ok, segql};

#[test]
fn bad_sql_shows_the_parser_error() {
    assert_fails(
        &segql(&["-c", "SELEC 1"]),
        1,
        "error: SQL syntax error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1\n",
    );
}

#[test]
fn missing_semicolon_between_statements() {
    assert_fails(
        &segql(&["-c", "SELECT 1\nSELECT 2"]),
        1,
        "error: SQL syntax error: Expected: end of statement, found: SELECT at Line: 2, Column: 1\n",
    );
}

#[test]
fn a_syntax_error_anywhere_runs_nothing() {
    // The whole text is parsed before the first statement runs.
    assert_fails(
        &segql(&["-c", "SELECT 1 AS a; SELECT (1 + ;"]),
        1,
        "error: SQL syntax error: Expected: an expression, found: ; at Line: 1, Column: 28\n",
    );
}

#[test]
fn unknown_table() {
    assert_fails(
        &segql(&["-c", "SELECT * FROM ordres"]),
        1,
        "error: Error during planning: table 'datafusion.public.ordres' not found\n",
    );
}

#[test]
fn unknown_column() {
    // DataFusion's message, which lists the valid fields on a second line.
    assert_fails(
        &segql(&["-c", "SELECT amout FROM orders"]),
        1,
        "error: Schema error: No field named amout. Did you mean 'orders.amount'?\n\
         Valid fields are orders.order_id, orders.customer_id, orders.order_ts, orders.amount, \
         orders.status, orders.n_lines, orders.n_units, orders.country, orders.channel.\n",
    );
}

#[test]
fn failing_statement_is_named_and_earlier_output_kept() {
    let run = segql(&[
        "--format",
        "csv",
        "-c",
        "SELECT 1 AS a;\nSELECT * FROM nope",
    ]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "a\n1\n");
    assert_eq!(
        run.stderr,
        "error: statement 2 (line 2): Error during planning: table 'datafusion.public.nope' not found\n"
    );
}

#[test]
fn error_in_a_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.sql");
    fs::write(
        &file,
        "-- first\nSELECT 1 AS a;\n\n-- second\nSELECT * FROM nope;\n",
    )
    .unwrap();
    let run = segql(&["--format", "csv", "-f", file.to_str().unwrap()]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "a\n1\n");
    assert_eq!(
        run.stderr,
        format!(
            "error: in {}: statement 2 (line 5): Error during planning: table \
             'datafusion.public.nope' not found\n",
            file.display()
        )
    );
}

#[test]
fn syntax_error_in_a_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.sql");
    fs::write(&file, "-- comment\nSELECT 1;\nSELEC 2;\n").unwrap();
    assert_fails(
        &segql(&["-f", file.to_str().unwrap()]),
        1,
        &format!(
            "error: in {}: SQL syntax error: Expected: an SQL statement, found: SELEC at \
             Line: 3, Column: 1\n",
            file.display()
        ),
    );
}

#[test]
fn missing_sql_file() {
    assert_fails(
        &segql(&["-f", "no/such/file.sql"]),
        1,
        "error: cannot read SQL file no/such/file.sql: No such file or directory (os error 2)\n",
    );
}

#[test]
fn runtime_error_from_a_segql_function() {
    let run = segql(&["-c", "SELECT rfm_code(12, 1, 1)"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "");
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(run.stderr.contains("rfm_code"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn unknown_format_is_a_usage_error() {
    let run = segql(&["--format", "xml", "-c", "SELECT 1"]);
    assert_eq!(run.code, Some(2));
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with(
            "error: invalid value 'xml' for '--format <FORMAT>'\n  \
             [possible values: table, csv, json, ndjson, parquet]\n"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let run = segql(&["--frmat", "csv"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .starts_with("error: unexpected argument '--frmat' found"),
        "{}",
        run.stderr
    );
}

#[test]
fn nested_column_in_csv() {
    assert_fails(
        &segql(&["--format", "csv", "-c", "SELECT named_struct('a', 1) AS s"]),
        1,
        "error: cannot write column `s` as csv: its type Struct(\"a\": Int64) is nested; use \
         --format json or ndjson, or select the fields you need\n",
    );
}

#[test]
fn nested_column_in_json() {
    crate::assert_ok(
        &segql(&["--format", "json", "-c", "SELECT named_struct('a', 1) AS s"]),
        "[{\"s\":{\"a\":1}}]\n",
    );
}

#[test]
fn output_file_in_a_missing_folder() {
    assert_fails(
        &segql(&["--output", "no/such/dir/out.csv", "-c", "SELECT 1"]),
        1,
        "error: cannot create output file no/such/dir/out.csv: No such file or directory \
         (os error 2); check that its folder exists and is writable\n",
    );
}

#[test]
fn bad_function_arguments_name_the_function_and_argument() {
    assert_fails(
        &segql(&["-c", "SELECT rfm_bucket(1, [3, 2], 'high')"]),
        1,
        "error: Error during planning: rfm_bucket: argument `thresholds` must be strictly \
         ascending, but 3 is followed by 2\n",
    );
    assert_fails(
        &segql(&[
            "-c",
            "SELECT rfm_quantile(amount, 12, 'high') OVER () FROM orders",
        ]),
        1,
        "error: Error during planning: rfm_quantile: argument `bins` must be from 2 to 10, got 12\n",
    );
    assert_fails(
        &segql(&[
            "-c",
            "SELECT in_yearly_window(created_at, '07-32', '09-28') FROM customers",
        ]),
        1,
        "error: Error during planning: in_yearly_window: argument `from` must be 'MM-DD' text, \
         got '07-32': day 32 does not exist in month 07\n",
    );
}

#[test]
fn continue_on_error_runs_the_rest_and_still_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batch.sql");
    fs::write(&file, "SELECT 1 AS a;\nSELECT nope;\nSELECT 3 AS c;\n").unwrap();
    let file = file.to_str().unwrap();
    let run = segql(&["--format", "csv", "--continue-on-error", "-f", file]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "a\n1\n\nc\n3\n");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(
        lines[0].starts_with(&format!("error: in {file}: statement 2 (line 2): ")),
        "{}",
        run.stderr
    );
    assert_eq!(lines[1], "error: 1 statement(s) failed");
    // Without the flag the batch stops at the failing statement.
    let run = segql(&["--format", "csv", "-f", file]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "a\n1\n");
}

#[test]
fn memory_limit_spills_or_is_refused_clearly() {
    // Sorting and grouping all 541,909 lines in 32 MiB spills to disk and
    // still answers.
    let run = segql(&[
        "--memory-limit",
        "32M",
        "--format",
        "csv",
        "-c",
        "SELECT max(rn) AS m FROM (SELECT row_number() OVER (ORDER BY description, line_no) AS rn FROM order_items); \
         SELECT count(*) AS n FROM (SELECT DISTINCT order_id, line_no, description FROM order_items)",
    ]);
    assert_ok(&run, "m\n541909\n\nn\n541909\n");
    // What cannot spill is refused with DataFusion's account of the memory.
    let run = segql(&[
        "--memory-limit",
        "32M",
        "-c",
        "SELECT line_amount FROM order_items ORDER BY description LIMIT 1000000",
    ]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.starts_with("error: Resources exhausted: "),
        "{}",
        run.stderr
    );
    for bad in ["0", "12X", "lots"] {
        let run = segql(&["--memory-limit", bad, "-c", "SELECT 1"]);
        assert_eq!(run.code, Some(2), "{bad}");
        assert!(run.stderr.contains("--memory-limit"), "{}", run.stderr);
    }
}

#[test]
fn output_files_are_whole_or_absent() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.csv");
    let out_str = out.to_str().unwrap();
    // A failing statement after a good one leaves no file at all.
    let run = segql(&[
        "--format",
        "csv",
        "--output",
        out_str,
        "-c",
        "SELECT 1 AS a; SELECT nope",
    ]);
    assert_eq!(run.code, Some(1));
    assert!(!out.exists());
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a partial file was left"
    );
    // Success writes the whole file.
    let run = segql(&[
        "--format",
        "csv",
        "--output",
        out_str,
        "-c",
        "SELECT 1 AS a",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(fs::read_to_string(&out).unwrap(), "a\n1\n");
}

#[test]
fn parquet_output_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("countries.parquet");
    let run = segql(&[
        "--format",
        "parquet",
        "--output",
        out.to_str().unwrap(),
        "-c",
        "SELECT country, count(*) AS customers FROM customers GROUP BY country",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    fs::write(
        dir.path().join("segql.toml"),
        "[tables]\nc = \"countries.parquet\"\n",
    )
    .unwrap();
    let run = crate::segql_in(
        dir.path(),
        &[
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n, sum(customers) AS s FROM c",
        ],
    );
    assert_ok(&run, "n,s\n37,4372\n");
    // One result per Parquet file.
    let run = segql(&[
        "--format",
        "parquet",
        "--output",
        out.to_str().unwrap(),
        "-c",
        "SELECT 1 AS a; SELECT 2 AS b",
    ]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("a Parquet output holds one result"),
        "{}",
        run.stderr
    );
}

/// Reads `sql` over the Parquet file `file` (as table `t`) as CSV.
fn read_back(dir: &std::path::Path, file: &str, sql: &str) -> crate::Run {
    fs::write(dir.join("read.toml"), format!("[tables]\nt = \"{file}\"\n")).unwrap();
    crate::segql_in(
        dir,
        &["--config", "read.toml", "--format", "csv", "-c", sql],
    )
}

#[test]
fn one_query_streams_into_a_parquet_file() {
    // One plain query (from -c or a file of one statement) is written as
    // its rows come, not collected first; what the file holds is the same.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spend.parquet");
    let out_str = out.to_str().unwrap();
    let to_parquet = |rest: &[&str]| {
        let mut args = vec!["--format", "parquet", "--output", out_str];
        args.extend_from_slice(rest);
        segql(&args)
    };
    let query = "SELECT customer_id, count(*) AS orders, sum(amount) AS spent \
                 FROM purchases() GROUP BY customer_id";
    let run = to_parquet(&["-c", query]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    let check = "SELECT count(*) AS n, sum(orders) AS o, sum(customer_id) AS c FROM t";
    let direct = segql(&[
        "--format",
        "csv",
        "-c",
        &format!("SELECT count(*) AS n, sum(orders) AS o, sum(customer_id) AS c FROM ({query})"),
    ]);
    assert_eq!(direct.code, Some(0), "{}", direct.stderr);
    assert_ok(
        &read_back(dir.path(), "spend.parquet", check),
        &direct.stdout,
    );
    assert!(!dir.path().join("spend.parquet.partial").exists());

    // From a file of one statement, with a comment and a semicolon.
    let file = dir.path().join("query.sql");
    fs::write(&file, format!("-- spend per customer\n{query};\n")).unwrap();
    fs::remove_file(&out).unwrap();
    let run = to_parquet(&["-f", file.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_ok(
        &read_back(dir.path(), "spend.parquet", check),
        &direct.stdout,
    );

    // An empty result is a file with the columns and no rows.
    let run = to_parquet(&[
        "-c",
        "SELECT customer_id, country FROM customers WHERE customer_id < 0",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_ok(
        &read_back(
            dir.path(),
            "spend.parquet",
            "SELECT count(*) AS n, arrow_typeof(max(country)) AS country FROM t",
        ),
        "n,country\n0,Utf8View\n",
    );

    // A query failing while its rows are written leaves the file it
    // replaces as it was, and nothing half-written.
    let before = fs::read(&out).unwrap();
    assert_fails(
        &to_parquet(&[
            "-c",
            "SELECT customer_id, 10 / (customer_id - customer_id) AS x FROM customers",
        ]),
        1,
        "error: Arrow error: Divide by zero error\n",
    );
    assert_eq!(fs::read(&out).unwrap(), before);
    assert!(!dir.path().join("spend.parquet.partial").exists());

    // A statement that is not a plain query is collected and written as
    // before.
    fs::remove_file(&out).unwrap();
    let run = to_parquet(&["-c", "EXPLAIN SELECT 1 AS a"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_ok(
        &read_back(dir.path(), "spend.parquet", "SELECT count(*) AS n FROM t"),
        "n\n2\n",
    );
}

#[test]
fn datafusion_settings_come_from_the_environment() {
    let root = crate::repo_root();
    let explain = [
        "--format",
        "csv",
        "-c",
        "EXPLAIN SELECT country, count(*) FROM customers GROUP BY country",
    ];
    let run = crate::segql_in_env(
        &root,
        &explain,
        &[("DATAFUSION_EXECUTION_TARGET_PARTITIONS", "3")],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("Hash([country@0], 3)"),
        "{}",
        run.stdout
    );
    assert_fails(
        &crate::segql_in_env(
            &root,
            &explain,
            &[("DATAFUSION_EXECUTION_TARGET_PARTITIONS", "many")],
        ),
        1,
        "error: bad DataFusion setting in the environment \
         (DATAFUSION_EXECUTION_TARGET_PARTITIONS=many): Error setting config \
         datafusion.execution.target_partitions: Error parsing 'many' as usize: External \
         error: invalid digit found in string; fix or unset it\n",
    );
}
