//! Tables in an S3-compatible object store: the bundled data uploaded to a
//! moto server started by the test on loopback gives the same answers as
//! the local files. `.ci/run` installs moto (`moto_server`) into `.venv`;
//! elsewhere the test looks for `$SEGQL_MOTO_SERVER`, then
//! `.venv/bin/moto_server`, and is skipped with a message when neither is
//! there (unless `SEGQL_REQUIRE_MOTO` is set, as CI sets it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;

use tempfile::TempDir;

use super::cluster::{HISTORY_SEGMENTS, start_cluster_with_env};
use super::{repo_root, segql_in};

/// A moto server on loopback, stopped when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> Option<PathBuf> {
    std::env::var_os("SEGQL_MOTO_SERVER")
        .map(PathBuf::from)
        .or_else(|| Some(repo_root().join(".venv/bin/moto_server")))
        .filter(|p| p.is_file())
}

fn start_moto() -> Option<Moto> {
    let Some(binary) = moto_binary() else {
        assert!(
            std::env::var_os("SEGQL_REQUIRE_MOTO").is_none(),
            "SEGQL_REQUIRE_MOTO is set but no moto_server was found"
        );
        eprintln!(
            "skipped: no moto_server (install it with `python3 -m venv .venv && \
             .venv/bin/pip install 'moto[server]'`, as .ci/run does)"
        );
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto { child, port };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

/// Creates `bucket` (an S3 CreateBucket is a PUT of its path).
fn create_bucket(port: u16, bucket: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

async fn upload(moto: &Moto, bucket: &str, files: &[(&Path, &str)]) {
    let store = moto_bucket(moto, bucket);
    for (file, key) in files {
        let bytes = std::fs::read(file).unwrap();
        store
            .put(&ObjectPath::from(*key), bytes.into())
            .await
            .unwrap();
    }
}

fn project(dir: &Path, tables: &str, storage: &str) {
    std::fs::write(
        dir.join("segql.toml"),
        format!(
            "[tables]\n{tables}\n[purchases]\nexclude_statuses = [\"cancelled\", \"adjustment\"]\n\
             {storage}\n[segments]\nfolder = \"{}\"\n",
            repo_root().join("queries/segments").display()
        ),
    )
    .unwrap();
}

/// Runs `args` in the `local` project and, after `remote_options`, in the
/// `remote` one: both succeed, the remote run quietly, with one output.
#[track_caller]
fn same_output(local: &Path, remote: &Path, remote_options: &[&str], args: &[&str]) -> String {
    let here = segql_in(local, args);
    let there = segql_in(remote, &[remote_options, args].concat());
    assert_eq!(here.code, Some(0), "{}", here.stderr);
    assert_eq!(there.code, Some(0), "{args:?}: {}", there.stderr);
    assert_eq!(there.stderr, "");
    assert_eq!(there.stdout, here.stdout, "{args:?}");
    there.stdout
}

/// How many members `condition` has, and the first.
fn members_query(condition: &str) -> String {
    format!(
        "SELECT count(*) AS n, min(customer_id) AS first FROM segment('{}')",
        condition.replace('\'', "''")
    )
}

/// The bundled tables uploaded to moto's bucket `shop`, and two projects
/// over them: one reading them there (`[storage]` points at moto), one
/// reading the local files.
async fn remote_and_local_projects(moto: &Moto) -> (TempDir, TempDir) {
    let data = repo_root().join("data/online_retail");
    create_bucket(moto.port, "shop");
    upload(
        moto,
        "shop",
        &[
            (&data.join("orders.parquet"), "raw/orders/part-0.parquet"),
            (
                &data.join("customers.parquet"),
                "warehouse/customers.parquet",
            ),
            (
                &data.join("order_items.parquet"),
                "warehouse/order_items.parquet",
            ),
        ],
    )
    .await;

    let remote = tempfile::tempdir().unwrap();
    project(
        remote.path(),
        "orders = \"s3://shop/raw/orders/*.parquet\"\n\
         customers = \"s3://shop/warehouse/customers.parquet\"\n\
         order_items = \"s3://shop/warehouse/order_items.parquet\"",
        &moto_storage(moto),
    );
    let local = tempfile::tempdir().unwrap();
    project(
        local.path(),
        &format!(
            "orders = \"{0}/orders.parquet\"\ncustomers = \"{0}/customers.parquet\"\n\
             order_items = \"{0}/order_items.parquet\"",
            data.display()
        ),
        "",
    );
    (remote, local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_tables_answer_like_local_files() {
    let Some(moto) = start_moto() else {
        return;
    };
    let (remote, local) = remote_and_local_projects(&moto).await;
    let same = |args: &[&str]| same_output(local.path(), remote.path(), &[], args);
    let counts = same(&[
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS orders FROM orders; SELECT count(*) AS lines FROM order_items; \
         SELECT count(*) AS purchases, sum(amount) AS spent FROM purchases()",
    ]);
    // The gross spend is the reference figure of the data's README.
    assert_eq!(
        counts,
        "orders\n25900\n\nlines\n541909\n\npurchases,spent\n18536,8911407.904\n"
    );
    for condition in [
        "rfm_group = 'Champions'",
        "bought(description: '%TEA%', date: -365d..today) AND NOT bought(description: \
         '%COFFEE%', date: -365d..today)",
        "in_segment(lapsed_big_spenders) AND country != 'United Kingdom'",
    ] {
        same(&[
            "--as-of",
            "2011-12-10",
            "--format",
            "csv",
            "-c",
            &members_query(condition),
        ]);
    }
    same(&["--as-of", "2011-12-10", "rfm"]);
    // Segments saved and refreshed over the remote tables (the store stays
    // local), then exported.
    for dir in [local.path(), remote.path()] {
        let run = segql_in(
            dir,
            &[
                "--as-of",
                "2011-12-10",
                "segment",
                "create",
                "big",
                "amount_spent > 5000",
            ],
        );
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    same(&["--as-of", "2011-12-10", "--format", "csv", "refresh"]);
    same(&[
        "segment",
        "export",
        "big",
        "--columns",
        "customer_id,country",
    ]);
}

/// The same tables read by a loopback cluster: the scheduler and the
/// executors have no project file and set up the bucket's store from
/// their environment; the client keeps its `[storage]` options.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_tables_on_a_cluster_answer_like_local_files() {
    let Some(moto) = start_moto() else {
        return;
    };
    let (remote, local) = remote_and_local_projects(&moto).await;
    let cluster = moto_cluster(&moto, remote.path());
    let on_cluster = ["--cluster", cluster.url.as_str()];
    let same = |args: &[&str]| same_output(local.path(), remote.path(), &on_cluster, args);
    let counts = same(&[
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS orders FROM orders; \
         SELECT count(*) AS purchases, sum(amount) AS spent FROM purchases()",
    ]);
    assert_eq!(
        counts,
        "orders\n25900\n\npurchases,spent\n18536,8911407.904\n"
    );
    same(&[
        "--as-of",
        "2011-12-10",
        "--format",
        "csv",
        "-c",
        &members_query(
            "rfm_group = 'Champions' AND bought(description: '%TEA%', date: -365d..today)",
        ),
    ]);
    same(&["--as-of", "2011-12-10", "rfm"]);
    for dir in [local.path(), remote.path()] {
        let run = segql_in(dir, &["segment", "create", "big", "amount_spent > 5000"]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    same(&["--as-of", "2011-11-01", "--format", "csv", "refresh"]);
    same(&["--as-of", "2011-12-10", "--format", "csv", "refresh"]);
    same(&[
        "--format",
        "csv",
        "-c",
        "SELECT segment, customer_id, entered_at, exited_at FROM segment_membership \
         ORDER BY customer_id, entered_at",
    ]);
}

/// A loopback cluster whose nodes reach moto through their environment.
fn moto_cluster(moto: &Moto, work: &Path) -> super::cluster::Cluster {
    start_cluster_with_env(
        work,
        &[
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", moto.port)),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", "segql".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "segql".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ],
    )
}

/// The S3 options of moto's buckets in a project file.
fn moto_storage(moto: &Moto) -> String {
    format!(
        "[storage]\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"us-east-1\"\n\
         access_key_id = \"segql\"\nsecret_access_key = \"segql\"\nallow_http = true\n",
        moto.port
    )
}

/// moto's bucket `bucket` through object_store, as a test reads it.
fn moto_bucket(moto: &Moto, bucket: &str) -> object_store::aws::AmazonS3 {
    AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(format!("http://127.0.0.1:{}", moto.port))
        .with_region("us-east-1")
        .with_access_key_id("segql")
        .with_secret_access_key("segql")
        .with_allow_http(true)
        .build()
        .unwrap()
}

/// Two projects over the bundled files: one keeps its segment store in
/// moto's bucket `segments` (under `shop/store`), the other in a local
/// folder.
fn s3_store_and_local_projects(moto: &Moto) -> (TempDir, TempDir) {
    create_bucket(moto.port, "segments");
    let data = repo_root().join("data/online_retail");
    let tables = format!(
        "orders = \"{0}/orders.parquet\"\ncustomers = \"{0}/customers.parquet\"\n\
         order_items = \"{0}/order_items.parquet\"",
        data.display()
    );
    let remote = tempfile::tempdir().unwrap();
    project(
        remote.path(),
        &tables,
        &format!(
            "{}\n[store]\nfolder = \"s3://segments/shop/store\"\n",
            moto_storage(moto)
        ),
    );
    let local = tempfile::tempdir().unwrap();
    project(local.path(), &tables, "");
    (remote, local)
}

/// Creates the segments of [`HISTORY_SEGMENTS`] in the project in `dir` and
/// refreshes them on four days (`options` before every command).
fn create_and_refresh(dir: &Path, options: &[&str]) {
    for (code, condition) in HISTORY_SEGMENTS {
        let run = segql_in(
            dir,
            &[options, &["segment", "create", code, condition]].concat(),
        );
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    for day in ["2011-06-01", "2011-08-01", "2011-10-01", "2011-12-01"] {
        let run = segql_in(dir, &[options, &["--as-of", day, "refresh"]].concat());
        assert_eq!(run.code, Some(0), "refresh on {day}: {}", run.stderr);
    }
}

/// A store in S3 keeps what a local one keeps: the same history after the
/// same changes, the same answers from its SQL functions and exports; its
/// order state lives beside it; its write lock is an object that a live
/// holder keeps and a dead one loses when its lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_store_in_s3_keeps_what_a_local_one_keeps() {
    let Some(moto) = start_moto() else {
        return;
    };
    let (remote, local) = s3_store_and_local_projects(&moto);
    // Nothing there yet: a clear error, nothing created.
    let run = segql_in(remote.path(), &["segment", "list"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    create_and_refresh(local.path(), &[]);
    create_and_refresh(remote.path(), &[]);
    // A refresh that dies between its writes (the test hook fails the
    // store's third write): nothing of it is seen, and the next change
    // undoes what it wrote before it writes its own.
    let failed = super::segql_in_env(
        remote.path(),
        &["--as-of", "2011-12-05", "refresh"],
        &[("SEGQL_FAIL_AT_WRITE", "3")],
    );
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("failed on purpose"),
        "{}",
        failed.stderr
    );
    let expected = super::cluster::store_history(local.path(), None);
    assert!(expected.lines().count() > 1000, "{expected}");
    assert_eq!(super::cluster::store_history(remote.path(), None), expected);
    let same = |args: &[&str]| same_output(local.path(), remote.path(), &[], args);
    same(&[
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS n FROM customers WHERE in_segment(customer_id, 'lapsed') \
         OR country = 'France'; \
         SELECT count(*) AS n FROM customers WHERE in_segment(customer_id, 'not_uk'); \
         SELECT customer_id, entered_at FROM segment_members('lapsed', '2011-09-01') \
         ORDER BY customer_id",
    ]);
    same(&[
        "segment",
        "export",
        "champions",
        "--columns",
        "customer_id,country",
    ]);
    same(&["--format", "csv", "segment", "list"]);

    // The store's objects: the marker and the tables; no lock and no
    // scratch folder left behind.
    let bucket = moto_bucket(&moto, "segments");
    let names: Vec<String> = futures::TryStreamExt::try_collect::<Vec<_>>(
        object_store::ObjectStore::list(&bucket, Some(&ObjectPath::from("shop/store"))),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|m| m.location.to_string())
    .collect();
    for expected in [
        "shop/store/segql_store.json",
        "shop/store/segment_refreshes/_delta_log/00000000000000000000.json",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        !names
            .iter()
            .any(|n| n.contains("/.work-") || n.ends_with("_lock.json")),
        "{names:?}"
    );

    // A live lease: the next change is refused, naming its holder.
    let lock = ObjectPath::from("shop/store/_lock.json");
    let lease = |expires: i64| {
        format!("{{\"holder\":\"process 4242 on elsewhere\",\"expires_micros\":{expires}}}")
    };
    let now = chrono::Utc::now().timestamp_micros();
    bucket
        .put(&lock, lease(now + 600_000_000).into())
        .await
        .unwrap();
    let refused = segql_in(remote.path(), &["--as-of", "2011-12-10", "refresh"]);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("is being changed by another segql (process 4242 on elsewhere)"),
        "{}",
        refused.stderr
    );
    // A lease that ran out (its holder died): taken over, then removed.
    // On 2011-12-10 the orders file is settled (its last order is on the
    // 9th): the refresh keeps the order state in the bucket too.
    bucket.put(&lock, lease(now - 1).into()).await.unwrap();
    let run = segql_in(remote.path(), &["--as-of", "2011-12-10", "refresh"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(bucket.head(&lock).await.is_err(), "the lock is left behind");
    let manifest = bucket
        .get(&ObjectPath::from("shop/store/order_state/manifest.json"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&manifest).contains("orders.parquet"),
        "{}",
        String::from_utf8_lossy(&manifest)
    );
    let here = segql_in(local.path(), &["--as-of", "2011-12-10", "refresh"]);
    assert_eq!(here.code, Some(0), "{}", here.stderr);
    // A second refresh on the state read back from the bucket.
    for dir in [remote.path(), local.path()] {
        let run = segql_in(dir, &["--as-of", "2011-12-11", "refresh"]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    assert_eq!(
        super::cluster::store_history(remote.path(), None),
        super::cluster::store_history(local.path(), None)
    );
}

/// A cluster refreshes a store in S3: the executors read its tables from
/// the bucket (set up from their environment), the client commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_refreshes_a_segment_store_in_s3() {
    let Some(moto) = start_moto() else {
        return;
    };
    let (remote, local) = s3_store_and_local_projects(&moto);
    let cluster = moto_cluster(&moto, remote.path());
    create_and_refresh(local.path(), &[]);
    create_and_refresh(remote.path(), &["--cluster", cluster.url.as_str()]);
    let expected = super::cluster::store_history(local.path(), None);
    assert_eq!(
        super::cluster::store_history(remote.path(), Some(&cluster)),
        expected
    );
    same_output(
        local.path(),
        remote.path(),
        &["--cluster", cluster.url.as_str()],
        &[
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n FROM customers WHERE in_segment(customer_id, 'lapsed') \
             OR country = 'France'; \
             SELECT customer_id FROM segment_members('champions') ORDER BY customer_id",
        ],
    );
}
