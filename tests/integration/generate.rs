//! The `generate` subcommand: deterministic output, the data's shape (read
//! back through segql itself), the events and how they fit the orders,
//! `--events-from` on the bundled orders, segments over it, and bad input.

use std::fs;
use std::path::Path;

use crate::{Run, assert_fails, segql_in};

const FILES: [&str; 6] = [
    "customers.parquet",
    "orders.parquet",
    "order_items.parquet",
    "products.parquet",
    "events.parquet",
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
            && first.contains(" order items, 2,000 products, ")
            && first.contains(" events to "),
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
         order_items = \"order_items.parquet\"\nproducts = \"products.parquet\"\n\
         events = \"events.parquet\"\n"
    );
    // Only the six files: no `.partial` leftovers.
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
                (SELECT count(*) FROM order_items) AS i, (SELECT count(*) FROM products) AS p,
                (SELECT count(*) FROM events) AS e",
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
    // About five events per order.
    let per_order = counts[4] as f64 / counts[1] as f64;
    assert!((4.0..6.0).contains(&per_order), "{counts:?}");
    // The summary line states the same counts.
    assert_eq!(
        line.split(" to ").next().unwrap(),
        format!(
            "wrote 10,000 customers, {} orders, {} order items, 2,000 products, {} events",
            with_commas(counts[1]),
            with_commas(counts[2]),
            with_commas(counts[4])
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

/// The rows of `sql` as one text, `|` between columns and `;` between
/// rows, for exact comparisons.
#[track_caller]
fn rows(dir: &Path, sql: &str) -> String {
    query(dir, None, sql)
        .iter()
        .map(|row| row.join("|"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Events per event name, by name: `cart_add=...;email_click=...`.
const EVENT_COUNTS: &str =
    "SELECT event || '=' || CAST(count(*) AS VARCHAR) FROM events GROUP BY event ORDER BY event";

#[test]
fn generate_events_at_scale_0001() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sf0001");
    let line = summary(&generate(&dir, &["--scale", "0.001"]));
    assert_eq!(
        line,
        format!(
            "wrote 1,000 customers, 10,715 orders, 21,957 order items, 2,000 products, \
             50,910 events to {}",
            dir.display()
        )
    );
    assert_eq!(
        rows(&dir, EVENT_COUNTS),
        "cart_add=19753;email_click=131;email_open=578;email_send=2239;login=4083;\
         page_view=23126;signup=1000"
    );

    // The other four tables are those of the generator without events:
    // fingerprints taken before the events existed.
    assert_eq!(
        rows(
            &dir,
            "SELECT sum(amount), sum(order_id * customer_id), count(DISTINCT customer_id),
                    sum(n_items), count(*) FILTER (WHERE status = 'cancelled') FROM orders"
        ),
        "2296123.48|37584473541|872|21957|499"
    );
    assert_eq!(
        rows(
            &dir,
            "SELECT sum(line_amount), sum(product_id * quantity), sum(order_id * line_no)
             FROM order_items"
        ),
        "2296123.48|28607129|219476477"
    );
    assert_eq!(
        rows(
            &dir,
            "SELECT count(birthday), sum(customer_id * length(name)), min(created_at),
                    max(created_at) FROM customers"
        ),
        "912|5713938|2020-01-04T02:39:24|2024-12-31T14:40:13"
    );
    assert_eq!(
        rows(
            &dir,
            "SELECT sum(price), count(DISTINCT name) FROM products"
        ),
        "279405.00|1446"
    );

    // Each order placed online by a customer has a lead-up: the page views
    // and cart adds after the customer's previous order and less than a
    // day before it. Its views come before its cart adds, which come
    // before the order, one per item of the order; store orders have none.
    assert_eq!(
        rows(
            &dir,
            "WITH o AS (
               SELECT order_id, customer_id, order_ts, channel, n_items,
                      lag(order_ts) OVER (PARTITION BY customer_id ORDER BY order_ts, order_id)
                        AS previous
               FROM orders WHERE customer_id IS NOT NULL),
             w AS (
               SELECT o.order_id, o.channel, o.n_items, e.event, e.event_ts, e.product_id
               FROM o JOIN events e ON e.customer_id = o.customer_id
                AND e.event IN ('page_view', 'cart_add')
                AND e.event_ts < o.order_ts AND e.event_ts >= o.order_ts - INTERVAL '1 day'
                AND (o.previous IS NULL OR e.event_ts > o.previous)),
             per AS (
               SELECT order_id, min(channel) AS channel, min(n_items) AS n_items,
                 max(event_ts) FILTER (WHERE event = 'page_view') AS last_view,
                 min(event_ts) FILTER (WHERE event = 'cart_add') AS first_cart,
                 count(*) FILTER (WHERE event = 'cart_add') AS carts,
                 count(*) FILTER (WHERE event = 'page_view') AS views
               FROM w GROUP BY order_id)
             SELECT (SELECT count(*) FROM o WHERE channel <> 'store') AS online,
               count(*) AS lead_ups,
               count(*) FILTER (WHERE channel = 'store' OR views = 0 OR carts <> n_items
                                  OR last_view >= first_cart) AS bad,
               (SELECT count(*) FROM w WHERE event = 'cart_add' AND NOT EXISTS
                  (SELECT 1 FROM order_items i
                   WHERE i.order_id = w.order_id AND i.product_id = w.product_id)) AS strangers
             FROM per"
        ),
        // online orders, orders with a lead-up (the rest follow the
        // previous order too closely), bad lead-ups, carts of products not
        // in the order
        "8409|8382|0|0"
    );

    // Every other cart add was abandoned: no order follows within a week
    // (some in the last days, so `did('cart_add', date: -3d..today) AND NOT
    // bought(date: -3d..today)` has members as of 2025-01-01).
    assert_eq!(
        rows(
            &dir,
            "WITH carts AS (
               SELECT row_number() OVER () AS id, customer_id, event_ts
               FROM events WHERE event = 'cart_add'),
             gaps AS (
               SELECT c.id, min(o.order_ts) - min(c.event_ts) AS gap
               FROM carts c LEFT JOIN orders o
                 ON o.customer_id = c.customer_id AND o.order_ts > c.event_ts
               GROUP BY c.id)
             SELECT count(*) FILTER (WHERE gap < INTERVAL '1 day'),
                    count(*) FILTER (WHERE gap IS NULL OR gap > INTERVAL '7 days'),
                    count(*) FILTER (WHERE gap >= INTERVAL '1 day' AND gap <= INTERVAL '7 days')
             FROM gaps"
        ),
        "19335|418|0"
    );
    assert_eq!(
        rows(
            &dir,
            "SELECT count(DISTINCT customer_id) FROM events
             WHERE event = 'cart_add' AND event_ts >= TIMESTAMP '2024-12-29 00:00:00'
               AND customer_id NOT IN
                 (SELECT customer_id FROM orders WHERE status <> 'cancelled'
                    AND customer_id IS NOT NULL AND order_ts >= TIMESTAMP '2024-12-29 00:00:00')"
        ),
        "13"
    );

    // One campaign e-mail per customer and campaign at most; opens after
    // the send, clicks after the open.
    assert_eq!(
        rows(
            &dir,
            "SELECT count(*), count(*) FILTER (WHERE sends <> 1 OR opens > 1 OR clicks > opens
                                                  OR opened <= sent OR clicked <= opened)
             FROM (SELECT customer_id, campaign,
                     count(*) FILTER (WHERE event = 'email_send') AS sends,
                     count(*) FILTER (WHERE event = 'email_open') AS opens,
                     count(*) FILTER (WHERE event = 'email_click') AS clicks,
                     min(event_ts) FILTER (WHERE event = 'email_send') AS sent,
                     min(event_ts) FILTER (WHERE event = 'email_open') AS opened,
                     min(event_ts) FILTER (WHERE event = 'email_click') AS clicked
                   FROM events WHERE campaign IS NOT NULL GROUP BY 1, 2)"
        ),
        "2239|0"
    );
    assert_eq!(
        rows(
            &dir,
            "SELECT campaign FROM events WHERE campaign IS NOT NULL GROUP BY 1
             ORDER BY min(event_ts)"
        )
        .replace(';', ","),
        "Spring Sale 2022,Summer Sale 2022,Black Friday 2022,Christmas 2022,Spring Sale 2023,\
         Summer Sale 2023,Black Friday 2023,Christmas 2023,Spring Sale 2024,Summer Sale 2024,\
         Black Friday 2024,Christmas 2024"
    );

    // Each customer signs up at created_at, before any other event; no
    // event after the history's end; properties where they belong.
    assert_eq!(
        rows(
            &dir,
            "SELECT count(*) FROM customers c FULL JOIN
               (SELECT customer_id, min(event_ts) AS first_ts,
                       count(*) FILTER (WHERE event = 'signup') AS signups,
                       min(event_ts) FILTER (WHERE event = 'signup') AS signed_up
                FROM events GROUP BY 1) e ON c.customer_id = e.customer_id
             WHERE c.customer_id IS NULL OR (e.signups IS DISTINCT FROM 1)
                OR e.signed_up <> c.created_at OR e.first_ts < e.signed_up"
        ),
        "0"
    );
    assert_eq!(
        rows(
            &dir,
            "SELECT max(event_ts),
               count(*) FILTER (WHERE (url IS NOT NULL) <> (event = 'page_view')),
               count(*) FILTER (WHERE (campaign IS NOT NULL) <> (event LIKE 'email%')),
               count(*) FILTER (WHERE (channel IS NULL) <> (event LIKE 'email%')),
               count(*) FILTER (WHERE (product_id IS NOT NULL) <>
                                  (event = 'cart_add' OR url LIKE '/p/%')),
               count(*) FILTER (WHERE url LIKE '/p/%'
                                  AND url <> '/p/' || CAST(product_id AS VARCHAR))
             FROM events"
        ),
        "2024-12-31T23:38:07|0|0|0|0|0"
    );
    assert_eq!(
        rows(
            &dir,
            "SELECT count(DISTINCT url), min(url), max(url),
                    count(*) FILTER (WHERE url = '/c/coffee-tables') > 0
             FROM events WHERE url NOT LIKE '/p/%'"
        ),
        // `/`, `/sale` and the 16 categories' pages
        "18|/|/sale|true"
    );
}

/// A project over the bundled orders and an events file, in `dir`.
fn bundled_orders_project(dir: &Path, events: &Path) {
    let data = crate::repo_root().join("data/online_retail");
    fs::write(
        dir.join("segql.toml"),
        format!(
            "[tables]\norders = \"{}\"\nevents = \"{}\"\ncommitted = \"{}\"\n",
            data.join("orders.parquet").display(),
            events.display(),
            data.join("events.parquet").display()
        ),
    )
    .unwrap();
}

#[test]
fn generate_events_from_the_bundled_orders() {
    let tmp = tempfile::tempdir().unwrap();
    let orders = crate::repo_root().join("data/online_retail/orders.parquet");
    let out = tmp.path().join("events.parquet");
    let derive = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--events-from",
            orders.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        segql_in(tmp.path(), &args)
    };
    let line = summary(&derive(&out, &[]));
    assert_eq!(
        line,
        format!(
            "wrote 76,638 events for 4,372 customers (22,190 orders) to {}",
            out.display()
        )
    );
    bundled_orders_project(tmp.path(), &out);
    assert_eq!(
        rows(tmp.path(), EVENT_COUNTS),
        "cart_add=28716;email_click=193;email_open=1040;email_send=4227;login=8743;\
         page_view=29347;signup=4372"
    );
    // The committed file is what the command writes.
    assert_eq!(
        rows(
            tmp.path(),
            "SELECT (SELECT count(*) FROM committed) AS n,
               (SELECT count(*) FROM (SELECT * FROM events EXCEPT ALL SELECT * FROM committed))
                 AS new,
               (SELECT count(*) FROM (SELECT * FROM committed EXCEPT ALL SELECT * FROM events))
                 AS old"
        ),
        "76638|0|0"
    );
    // Cancelled orders have no lead-up; no event after the last order's
    // day; abandoned carts in the last days.
    assert_eq!(
        rows(
            tmp.path(),
            "SELECT count(*) FROM orders o JOIN events e ON e.customer_id = o.customer_id
               AND e.event = 'cart_add' AND e.event_ts < o.order_ts
               AND e.event_ts >= o.order_ts - INTERVAL '1 day'
             WHERE o.status = 'cancelled' AND NOT EXISTS
               (SELECT 1 FROM orders p WHERE p.customer_id = o.customer_id
                  AND p.status <> 'cancelled' AND p.order_ts > e.event_ts
                  AND p.order_ts <= e.event_ts + INTERVAL '1 day')"
        ),
        "0"
    );
    assert_eq!(
        rows(
            tmp.path(),
            "SELECT max(event_ts) < TIMESTAMP '2011-12-10 00:00:00', count(product_id),
                    count(DISTINCT channel)
             FROM events"
        ),
        "true|0|1"
    );
    assert_eq!(
        rows(
            tmp.path(),
            "SELECT count(DISTINCT customer_id) FROM events
             WHERE event = 'cart_add' AND event_ts >= TIMESTAMP '2011-12-07 00:00:00'
               AND customer_id NOT IN
                 (SELECT customer_id FROM orders WHERE status = 'completed'
                    AND customer_id IS NOT NULL AND order_ts >= TIMESTAMP '2011-12-07 00:00:00')"
        ),
        "53"
    );

    // Deterministic; the seed matters; an existing file is kept unless
    // --force.
    let again = tmp.path().join("again.parquet");
    summary(&derive(&again, &["--seed", "42"]));
    assert_eq!(fs::read(&out).unwrap(), fs::read(&again).unwrap());
    let other = tmp.path().join("other.parquet");
    summary(&derive(&other, &["--seed", "7"]));
    assert_ne!(fs::read(&out).unwrap(), fs::read(&other).unwrap());
    assert_fails(
        &derive(&out, &["--seed", "7"]),
        1,
        &format!(
            "error: {} already exists; pass --force to replace it\n",
            out.display()
        ),
    );
    summary(&derive(&out, &["--seed", "7", "--force"]));
    assert_eq!(fs::read(&out).unwrap(), fs::read(&other).unwrap());
}

#[test]
fn generate_events_from_rejects_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = crate::repo_root().join("data/online_retail");
    let out = dir.join("events.parquet");
    let out_text = out.to_str().unwrap();
    let derive = |from: &Path, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--events-from",
            from.to_str().unwrap(),
            "--out",
            out_text,
        ];
        args.extend_from_slice(extra);
        segql_in(dir, &args)
    };
    // Nothing written, not even a partial file.
    let nothing_left = || {
        let names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("events"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    };

    let missing = dir.join("nope.parquet");
    assert_fails(
        &derive(&missing, &[]),
        1,
        &format!(
            "error: --events-from {}: cannot open it: No such file or directory (os error 2)\n",
            missing.display()
        ),
    );
    nothing_left();

    let text = dir.join("orders.csv");
    fs::write(&text, "customer_id,order_ts\n1,2024-01-01\n").unwrap();
    let run = derive(&text, &[]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.starts_with(&format!(
            "error: --events-from {}: not a readable Parquet file: ",
            text.display()
        )),
        "{}",
        run.stderr
    );
    nothing_left();

    let customers = data.join("customers.parquet");
    assert_fails(
        &derive(&customers, &[]),
        1,
        &format!(
            "error: --events-from {}: no `order_ts` column (it has customer_id, created_at, \
             country, n_countries, birthday); --events-from needs `customer_id` (an integer) \
             and `order_ts` (a timestamp or a date), and reads `status` and `channel` (text) \
             when present\n",
            customers.display()
        ),
    );
    nothing_left();

    // Columns of the wrong type, written by segql itself.
    let typed = |name: &str, sql: &str| {
        let path = dir.join(name);
        let run = segql_in(
            dir,
            &[
                "--format",
                "parquet",
                "--output",
                path.to_str().unwrap(),
                "-c",
                sql,
            ],
        );
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        path
    };
    let text_ids = typed(
        "text_ids.parquet",
        "SELECT 'C1' AS customer_id, TIMESTAMP '2024-01-01 10:00:00' AS order_ts",
    );
    assert_fails(
        &derive(&text_ids, &[]),
        1,
        &format!(
            "error: --events-from {}: column `customer_id` is Utf8; --events-from needs an \
             integer there\n",
            text_ids.display()
        ),
    );
    let number_status = typed(
        "number_status.parquet",
        "SELECT 1 AS customer_id, TIMESTAMP '2024-01-01 10:00:00' AS order_ts, 3 AS status",
    );
    assert_fails(
        &derive(&number_status, &[]),
        1,
        &format!(
            "error: --events-from {}: column `status` is Int64; --events-from needs text there\n",
            number_status.display()
        ),
    );
    nothing_left();

    // --out names a file, not a folder, and not the orders themselves.
    let run = segql_in(
        dir,
        &[
            "generate",
            "--events-from",
            data.join("orders.parquet").to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    assert_fails(
        &run,
        1,
        &format!(
            "error: --out {} is a folder; with --events-from, --out names the events Parquet \
             file to write, such as {}\n",
            dir.display(),
            dir.join("events.parquet").display()
        ),
    );
    let copy = dir.join("copy.parquet");
    fs::copy(data.join("orders.parquet"), &copy).unwrap();
    let run = segql_in(
        dir,
        &[
            "generate",
            "--events-from",
            copy.to_str().unwrap(),
            "--out",
            copy.to_str().unwrap(),
            "--force",
        ],
    );
    assert_fails(
        &run,
        1,
        &format!(
            "error: --out {} is the orders file given to --events-from; write the events to \
             another file\n",
            copy.display()
        ),
    );
    assert_eq!(
        fs::read(&copy).unwrap(),
        fs::read(data.join("orders.parquet")).unwrap()
    );
    nothing_left();

    // The two modes exclude each other, and one is needed.
    let usage = "Usage: segql generate --scale SF --out DIR [--seed N] [--force]\n       \
                 segql generate --events-from ORDERS --out FILE [--seed N] [--force]\n\n\
                 For more information, try '--help'.\n";
    let run = derive(&customers, &["--scale", "0.001"]);
    assert_fails(
        &run,
        2,
        &format!(
            "error: the argument '--events-from <ORDERS>' cannot be used with '--scale <SF>'\n\n\
             {usage}"
        ),
    );
    let run = segql_in(dir, &["generate", "--out", out_text]);
    assert_fails(
        &run,
        2,
        &format!(
            "error: the following required arguments were not provided:\n  \
             <--scale <SF>|--events-from <ORDERS>>\n\n{usage}"
        ),
    );
    nothing_left();
}

/// Under `--memory-limit` the writers end row groups early: more, smaller
/// row groups in different bytes, but the same rows.
#[test]
fn generate_under_a_memory_limit_writes_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (free, limited) = (dir.path().join("free"), dir.path().join("limited"));
    let free_summary = summary(&generate(&free, &["--scale", "0.02"]));
    let limited_summary = summary(&generate(
        &limited,
        &["--scale", "0.02", "--memory-limit", "33M"],
    ));
    assert_eq!(
        free_summary.replace("free", "x"),
        limited_summary.replace("limited", "x")
    );
    let fingerprint = "SELECT (SELECT count(*) FROM orders) AS o, \
                       (SELECT sum(amount) FROM orders) AS a, \
                       (SELECT count(DISTINCT order_id) FROM order_items) AS i, \
                       (SELECT sum(line_amount) FROM order_items) AS l, \
                       (SELECT count(*) FROM events) AS e, \
                       (SELECT max(event_ts) FROM events) AS t";
    assert_eq!(
        query(&free, None, fingerprint),
        query(&limited, None, fingerprint)
    );
    // Row groups ended early: other bytes.
    let same = fs::read(free.join("order_items.parquet")).unwrap()
        == fs::read(limited.join("order_items.parquet")).unwrap();
    assert!(!same, "the limit changed nothing");
}
