//! The `generate` subcommand: deterministic output, the data's shape (read
//! back through segql itself), segments over it, and bad input.

use std::fs;
use std::path::Path;

use crate::{Run, assert_fails, segql_in};

const FILES: [&str; 5] = [
    "customers.parquet",
    "orders.parquet",
    "order_items.parquet",
    "products.parquet",
    "segql.toml",
];

/// Runs `segql generate` into `out` and returns the run.
fn generate(out: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["generate", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    segql_in(out.parent().unwrap(), &args)
}

/// Asserts a successful run and returns its summary line without the
/// timing (`wrote ... to DIR`).
#[track_caller]
fn summary(run: &Run) -> String {
    assert_eq!(run.stderr, "", "unexpected stderr");
    assert_eq!(run.code, Some(0));
    let line = run.stdout.strip_suffix(" s\n").unwrap();
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    let (summary, seconds) = line.rsplit_once(" in ").unwrap();
    seconds.parse::<f64>().unwrap();
    summary.to_string()
}

/// Runs `sql` over the generated project in `dir` (with `as_of` when
/// given) and returns the CSV rows without the header.
#[track_caller]
fn query(dir: &Path, as_of: Option<&str>, sql: &str) -> Vec<Vec<String>> {
    let config = dir.join("segql.toml");
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--format",
        "csv",
        "-c",
        sql,
    ];
    if let Some(day) = as_of {
        args.extend(["--as-of", day]);
    }
    let run = segql_in(dir, &args);
    assert_eq!(run.stderr, "", "{sql}");
    assert_eq!(run.code, Some(0), "{sql}");
    run.stdout
        .lines()
        .skip(1)
        .map(|line| line.split(',').map(str::to_string).collect())
        .collect()
}

/// The single number a query returns.
#[track_caller]
fn number(dir: &Path, sql: &str) -> f64 {
    let rows = query(dir, None, sql);
    assert_eq!(rows.len(), 1, "{sql}");
    rows[0][0].parse().unwrap()
}

#[test]
fn generate_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let first = summary(&generate(&a, &["--scale", "0.002"]));
    assert!(
        first.starts_with("wrote 2,000 customers, ")
            && first.contains(" order items, 2,000 products to "),
        "{first}"
    );
    assert!(first.ends_with(&format!(" to {}", a.display())), "{first}");
    let second = summary(&generate(&b, &["--scale", "0.002", "--seed", "42"]));
    assert_eq!(
        first.replace(&a.display().to_string(), "DIR"),
        second.replace(&b.display().to_string(), "DIR")
    );
    summary(&generate(&c, &["--scale", "0.002", "--seed", "7"]));
    for name in FILES {
        let bytes = fs::read(a.join(name)).unwrap();
        assert_eq!(bytes, fs::read(b.join(name)).unwrap(), "{name} differs");
        if name.ends_with(".parquet") {
            assert_ne!(
                bytes,
                fs::read(c.join(name)).unwrap(),
                "{name} ignores the seed"
            );
        }
    }
    assert_eq!(
        fs::read_to_string(a.join("segql.toml")).unwrap(),
        "[tables]\ncustomers = \"customers.parquet\"\norders = \"orders.parquet\"\n\
         order_items = \"order_items.parquet\"\nproducts = \"products.parquet\"\n"
    );
    // Only the five files: no `.partial` leftovers.
    let mut names: Vec<String> = fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn generate_shape_at_scale_001() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sf001");
    let line = summary(&generate(&dir, &["--scale", "0.01"]));
    assert!(line.starts_with("wrote 10,000 customers, "), "{line}");

    let counts = query(
        &dir,
        None,
        "SELECT (SELECT count(*) FROM customers) AS c, (SELECT count(*) FROM orders) AS o,
                (SELECT count(*) FROM order_items) AS i, (SELECT count(*) FROM products) AS p",
    );
    let counts: Vec<u64> = counts[0].iter().map(|v| v.parse().unwrap()).collect();
    assert_eq!(counts[0], 10_000);
    assert!((80_000..=120_000).contains(&counts[1]), "{counts:?}");
    // 1 to 5 items per order, about 2.1 on average.
    assert!(
        counts[2] > counts[1] * 19 / 10 && counts[2] < counts[1] * 23 / 10,
        "{counts:?}"
    );
    assert_eq!(counts[3], 2_000);
    // The summary line states the same counts.
    assert_eq!(
        line.split(" to ").next().unwrap(),
        format!(
            "wrote 10,000 customers, {} orders, {} order items, 2,000 products",
            with_commas(counts[1]),
            with_commas(counts[2])
        )
    );

    let cancelled = number(
        &dir,
        "SELECT avg(CASE WHEN status = 'cancelled' THEN 1.0 ELSE 0.0 END) FROM orders",
    );
    assert!((0.03..0.07).contains(&cancelled), "{cancelled}");
    let statuses = query(&dir, None, "SELECT DISTINCT status FROM orders ORDER BY 1");
    assert_eq!(statuses, [["cancelled"], ["completed"]]);

    let guests = number(
        &dir,
        "SELECT avg(CASE WHEN customer_id IS NULL THEN 1.0 ELSE 0.0 END) FROM orders",
    );
    assert!((0.002..0.01).contains(&guests), "{guests}");

    let without_orders = number(
        &dir,
        "SELECT count(*) FROM customers c WHERE NOT EXISTS
           (SELECT 1 FROM orders o WHERE o.customer_id = c.customer_id)",
    );
    assert!(
        (1_000.0..=2_000.0).contains(&without_orders),
        "{without_orders}"
    );

    let birthdays = query(
        &dir,
        None,
        "SELECT count(*) FILTER (WHERE birthday IS NULL),
                count(*) FILTER (WHERE extract(month FROM birthday) = 2
                                   AND extract(day FROM birthday) = 29)
         FROM customers",
    );
    let nulls: u64 = birthdays[0][0].parse().unwrap();
    let feb_29: u64 = birthdays[0][1].parse().unwrap();
    assert!((700..=1_300).contains(&nulls), "{nulls}");
    assert!(feb_29 >= 1, "{feb_29}");

    let channels = query(
        &dir,
        None,
        "SELECT DISTINCT channel FROM customers ORDER BY 1",
    );
    assert_eq!(channels, [["app"], ["store"], ["web"]]);

    let categories: Vec<String> = query(&dir, None, "SELECT DISTINCT category FROM products")
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    for needed in [
        "Sofas",
        "Coffee tables",
        "Headphones",
        "Phones",
        "Tea",
        "Allergy care",
    ] {
        assert!(categories.iter().any(|c| c == needed), "{categories:?}");
    }
    let brands = number(
        &dir,
        "SELECT min(n) FROM (SELECT category, count(DISTINCT brand) AS n FROM products
                             GROUP BY category)",
    );
    assert!(brands >= 3.0, "{brands}");

    // Every order's amount is the sum of its lines, and n_items counts them;
    // the lines repeat the order's customer, instant and status.
    let mismatches = number(
        &dir,
        "SELECT count(*) FROM orders o FULL JOIN
           (SELECT order_id, sum(line_amount) AS total, count(*) AS n,
                   min(line_no) AS lo, max(line_no) AS hi,
                   count(DISTINCT status) AS statuses, min(status) AS status,
                   min(order_ts) AS ts, max(order_ts) AS ts_hi,
                   min(customer_id) AS customer_id
            FROM order_items GROUP BY order_id) i ON o.order_id = i.order_id
         WHERE o.order_id IS NULL OR i.order_id IS NULL OR o.amount <> i.total
            OR o.n_items <> i.n OR i.lo <> 1 OR i.hi <> i.n OR i.statuses <> 1
            OR o.status <> i.status OR o.order_ts <> i.ts OR i.ts <> i.ts_hi
            OR o.customer_id IS DISTINCT FROM i.customer_id",
    );
    assert_eq!(mismatches, 0.0);
    let bad_lines = number(
        &dir,
        "SELECT count(*) FROM order_items i LEFT JOIN products p USING (product_id)
         WHERE p.product_id IS NULL OR i.line_amount <> i.unit_price * i.quantity
            OR i.quantity NOT BETWEEN 1 AND 4 OR i.unit_price <= 0",
    );
    assert_eq!(bad_lines, 0.0);

    // Three years ending 2024-12-31, denser towards the end.
    let years = query(
        &dir,
        None,
        "SELECT CAST(min(order_ts) AS DATE), CAST(max(order_ts) AS DATE),
                count(*) FILTER (WHERE order_ts < TIMESTAMP '2023-01-01 00:00:00'),
                count(*) FILTER (WHERE order_ts >= TIMESTAMP '2024-01-01 00:00:00')
         FROM orders",
    );
    assert!(years[0][0].as_str() >= "2022-01-01", "{years:?}");
    assert_eq!(years[0][1], "2024-12-31");
    let first_year: u64 = years[0][2].parse().unwrap();
    let last_year: u64 = years[0][3].parse().unwrap();
    assert!(last_year > first_year * 3 / 2, "{years:?}");

    // Customers exist before they order.
    let early = number(
        &dir,
        "SELECT count(*) FROM customers c JOIN
           (SELECT customer_id, min(order_ts) AS first_ts FROM orders GROUP BY customer_id) o
           ON c.customer_id = o.customer_id
         WHERE c.created_at >= o.first_ts",
    );
    assert_eq!(early, 0.0);

    // Heavy tail: the busiest customer has far more orders than the median.
    let tail = query(
        &dir,
        None,
        "SELECT max(n), median(n) FROM
           (SELECT customer_id, count(*) AS n FROM orders WHERE customer_id IS NOT NULL
            GROUP BY customer_id)",
    );
    let max: f64 = tail[0][0].parse().unwrap();
    let median: f64 = tail[0][1].parse().unwrap();
    assert!(max >= 20.0 * median, "{tail:?}");

    // The segment language works on the generated data.
    let sofas = query(
        &dir,
        Some("2024-12-31"),
        "SELECT count(*) FROM segment('bought(category: ''Sofas'', date: -365d..today)
                                       AND NOT bought(category: ''Coffee tables'')')",
    );
    let sofas: u64 = sofas[0][0].parse().unwrap();
    let any_sofa = query(
        &dir,
        Some("2024-12-31"),
        "SELECT count(*) FROM segment('bought(category: ''Sofas'', date: -365d..today)')",
    );
    let any_sofa: u64 = any_sofa[0][0].parse().unwrap();
    assert!(sofas > 0 && sofas < any_sofa, "{sofas} {any_sofa}");
}

fn with_commas(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn generate_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    summary(&generate(&dir, &["--scale", "0.0001"]));
    let before = fs::read(dir.join("orders.parquet")).unwrap();
    assert_fails(
        &generate(&dir, &["--scale", "0.0002"]),
        1,
        &format!(
            "error: {} already exists; pass --force to replace it\n",
            dir.join("customers.parquet").display()
        ),
    );
    assert_eq!(fs::read(dir.join("orders.parquet")).unwrap(), before);
    let line = summary(&generate(&dir, &["--scale", "0.0002", "--force"]));
    assert!(line.starts_with("wrote 200 customers, "), "{line}");
    assert_ne!(fs::read(dir.join("orders.parquet")).unwrap(), before);

    // Any one of the files is enough to refuse, and the message names it.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("segql.toml"), "mine").unwrap();
    assert_fails(
        &generate(&other, &["--scale", "0.0001"]),
        1,
        &format!(
            "error: {} already exists; pass --force to replace it\n",
            other.join("segql.toml").display()
        ),
    );
    assert_eq!(fs::read_dir(&other).unwrap().count(), 1);
}

#[test]
fn generate_rejects_a_bad_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    for (bad, message) in [
        (
            "0",
            "the scale must be more than 0, such as 0.01 or 1 (1 = a million customers)",
        ),
        (
            "-1",
            "the scale must be more than 0, such as 0.01 or 1 (1 = a million customers)",
        ),
        (
            "NaN",
            "the scale must be more than 0, such as 0.01 or 1 (1 = a million customers)",
        ),
        (
            "lots",
            "not a number; write a scale factor such as 0.01 or 1 (1 = a million customers)",
        ),
        ("5000", "the scale goes up to 1000 (a billion customers)"),
    ] {
        let run = segql_in(
            tmp.path(),
            &["generate", "--scale", bad, "--out", out.to_str().unwrap()],
        );
        assert_fails(
            &run,
            2,
            &format!(
                "error: invalid value '{bad}' for '--scale <SF>': {message}\n\n\
                 For more information, try '--help'.\n"
            ),
        );
    }
    assert!(!out.exists());
}

#[test]
fn generate_reports_an_unwritable_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file.txt");
    fs::write(&file, "not a folder").unwrap();
    let out = file.join("data");
    let run = segql_in(
        tmp.path(),
        &[
            "generate",
            "--scale",
            "0.0001",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_fails(
        &run,
        1,
        &format!(
            "error: cannot create output folder {}: Not a directory (os error 20); check that \
             its parent folder exists and is writable, or pass another --out\n",
            out.display()
        ),
    );
}

#[test]
fn generate_leaves_nothing_behind_when_a_file_cannot_be_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // A folder where the customers file's temporary name goes.
    fs::create_dir_all(dir.join("customers.parquet.partial")).unwrap();
    assert_fails(
        &generate(&dir, &["--scale", "0.0001"]),
        1,
        &format!(
            "error: cannot create output file {}: Is a directory (os error 21); check that its \
             folder exists and is writable\n",
            dir.join("customers.parquet").display()
        ),
    );
    // The products file, written first, was removed again.
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["customers.parquet.partial"]);
}
