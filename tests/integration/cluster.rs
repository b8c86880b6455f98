//! A Ballista cluster on loopback: one `segql cluster scheduler` and two
//! `segql cluster executor` processes, started here and stopped after.
//! Every example segment, the example SQL files, the RFM grid and a
//! refresh with history give, through `--cluster`, exactly what they give
//! in-process.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Run, repo_root, segql_in, segql_in_env};

/// The nodes of a loopback cluster; dropping it stops them.
pub(super) struct Cluster {
    nodes: Vec<Child>,
    pub(super) url: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// A port nothing listens on now, with the one after it free too.
fn free_port_pair() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node(args: &[&str], work: &Path, env: &[(&str, String)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_segql"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts a scheduler and two executors of two tasks each, in `work`.
fn start_cluster(work: &Path) -> Cluster {
    start_cluster_with_env(work, &[])
}

/// [`start_cluster`] with `env` set in every node's environment.
pub(super) fn start_cluster_with_env(work: &Path, env: &[(&str, String)]) -> Cluster {
    let scheduler_port = free_port_pair();
    let scheduler = format!("127.0.0.1:{scheduler_port}");
    let mut cluster = Cluster {
        nodes: vec![node(
            &["cluster", "scheduler", "--bind", &scheduler],
            work,
            env,
        )],
        url: format!("df://{scheduler}"),
    };
    wait_for_port(scheduler_port, "the scheduler");
    for n in 0..2 {
        let port = free_port_pair();
        let bind = format!("127.0.0.1:{port}");
        let dir = work.join(format!("executor{n}"));
        cluster.nodes.push(node(
            &[
                "cluster",
                "executor",
                "--scheduler",
                &scheduler,
                "--bind",
                &bind,
                "--concurrent-tasks",
                "2",
                "--work-dir",
                dir.to_str().unwrap(),
            ],
            work,
            env,
        ));
        wait_for_port(port + 1, "an executor");
    }
    // The executors register with the scheduler right after they listen.
    std::thread::sleep(Duration::from_millis(500));
    cluster
}

/// Runs `args` in `dir` in-process and on the cluster; both must succeed
/// with the same output.
#[track_caller]
fn same_on_both(dir: &Path, cluster: &Cluster, args: &[&str]) -> Run {
    let local = segql_in(dir, args);
    assert_eq!(
        local.code,
        Some(0),
        "in-process run failed: {}",
        local.stderr
    );
    let mut remote_args = vec!["--cluster", cluster.url.as_str()];
    remote_args.extend_from_slice(args);
    let remote = segql_in(dir, &remote_args);
    assert_eq!(
        remote.code,
        Some(0),
        "cluster run of {args:?} failed: {}",
        remote.stderr
    );
    assert_eq!(
        remote.stdout, local.stdout,
        "cluster and in-process differ: {args:?}"
    );
    local
}

/// A copy of the bundled project in a temporary folder (tables by
/// absolute path, the example segments, an empty store).
fn project_copy(dir: &Path) {
    let root = repo_root();
    let data = root.join("data/online_retail");
    std::fs::write(
        dir.join("segql.toml"),
        format!(
            "[tables]\norders = \"{0}/orders.parquet\"\ncustomers = \"{0}/customers.parquet\"\n\
             order_items = \"{0}/order_items.parquet\"\nevents = \"{0}/events.parquet\"\n\
             [segments]\nfolder = \"{1}\"\n\
             [purchases]\nexclude_statuses = [\"cancelled\", \"adjustment\"]\n",
            data.display(),
            root.join("queries/segments").display()
        ),
    )
    .unwrap();
}

#[test]
fn a_loopback_cluster_gives_the_in_process_results() {
    let dir = tempfile::tempdir().unwrap();
    project_copy(dir.path());
    let cluster = start_cluster(dir.path());
    let as_of = ["--as-of", "2011-12-10", "--format", "csv"];

    // Every example segment, member by member.
    let mut segments: Vec<_> = std::fs::read_dir(repo_root().join("queries/segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 10);
    for path in &segments {
        let code = path.file_stem().unwrap().to_str().unwrap();
        let sql =
            format!("SELECT customer_id FROM segment('in_segment({code})') ORDER BY customer_id");
        let mut args = as_of.to_vec();
        args.extend(["-c", &sql]);
        let run = same_on_both(dir.path(), &cluster, &args);
        assert!(
            run.stdout.starts_with("customer_id\n"),
            "{code}: {}",
            run.stdout
        );
    }

    // The example SQL files.
    for file in [
        "anniversaries.sql",
        "clv_summary.sql",
        "rfm_fixed_thresholds.sql",
        "rfm_report.sql",
    ] {
        let path = repo_root().join("queries").join(file);
        let mut args = as_of.to_vec();
        args.extend(["-f", path.to_str().unwrap()]);
        same_on_both(dir.path(), &cluster, &args);
    }

    // The RFM grid.
    let run = same_on_both(dir.path(), &cluster, &["--as-of", "2011-12-10", "rfm"]);
    assert!(
        run.stdout.starts_with("R x F grid as of 2011-12-10"),
        "{}",
        run.stdout
    );
}

/// Four segments whose history the tests compare: order metrics, RFM,
/// `bought(...)` and one using another (`in_segment`).
pub(super) const HISTORY_SEGMENTS: [(&str, &str); 4] = [
    ("champions", "rfm_group IN ('Champions', 'Loyal')"),
    ("lapsed", "last_order_date < -90d AND amount_spent > 1000"),
    (
        "recent_tea",
        "bought(description: '%TEA%', date: -30d..today)",
    ),
    (
        "not_uk",
        "country != 'United Kingdom' AND NOT in_segment(lapsed)",
    ),
];

/// The membership, events and sizes of a store, without the wall-clock
/// columns (when each refresh ran).
pub(super) fn store_history(dir: &Path, cluster: Option<&Cluster>) -> String {
    let sql = "SELECT segment, customer_id, entered_at, exited_at FROM segment_membership \
               ORDER BY segment, customer_id, entered_at; \
               SELECT segment, customer_id, event, at FROM segment_events \
               ORDER BY segment, customer_id, at, event; \
               SELECT segment, refresh_id, size FROM segment_sizes ORDER BY segment, refresh_id";
    let mut args = vec!["--format", "csv", "-c", sql];
    if let Some(cluster) = cluster {
        args.splice(0..0, ["--cluster", cluster.url.as_str()]);
    }
    let run = segql_in(dir, &args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.stdout
}

#[test]
fn a_refresh_on_the_cluster_records_the_history_of_one_in_process() {
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    project_copy(local.path());
    project_copy(remote.path());
    let cluster = start_cluster(remote.path());
    for (dir, on) in [(local.path(), None), (remote.path(), Some(&cluster))] {
        for (code, condition) in HISTORY_SEGMENTS {
            let mut args = vec!["segment", "create", code, condition];
            if let Some(cluster) = on {
                args.splice(0..0, ["--cluster", cluster.url.as_str()]);
            }
            let run = segql_in(dir, &args);
            assert_eq!(run.code, Some(0), "{}", run.stderr);
        }
        for day in ["2011-06-01", "2011-08-01", "2011-10-01", "2011-12-01"] {
            let mut args = vec!["--as-of", day, "refresh"];
            if let Some(cluster) = on {
                args.splice(0..0, ["--cluster", cluster.url.as_str()]);
            }
            let run = segql_in_env(dir, &args, &[("SEGQL_TIMINGS", "1")]);
            assert_eq!(run.code, Some(0), "refresh on {day}: {}", run.stderr);
            // On the cluster, the membership changes are computed there.
            assert_eq!(
                run.stderr
                    .contains("timing: membership changes on the cluster"),
                on.is_some(),
                "refresh on {day}: {}",
                run.stderr
            );
        }
    }
    let expected = store_history(local.path(), None);
    assert!(expected.lines().count() > 1000, "{expected}");
    assert_eq!(store_history(remote.path(), Some(&cluster)), expected);
    assert_eq!(store_history(remote.path(), None), expected);

    // The store's functions on the cluster: `in_segment` under OR stays
    // a function call (its state travels in the plan), the other a semi
    // join; `segment_members` now and at a past day.
    for sql in [
        "SELECT count(*) FROM customers WHERE in_segment(customer_id, 'lapsed') OR country = 'France'",
        "SELECT count(*) FROM customers WHERE in_segment(customer_id, 'not_uk')",
        "SELECT customer_id FROM segment_members('champions') ORDER BY customer_id",
        "SELECT customer_id, entered_at FROM segment_members('lapsed', '2011-09-01') \
         ORDER BY customer_id",
    ] {
        let run = same_on_both(remote.path(), &cluster, &["--format", "csv", "-c", sql]);
        assert!(run.stdout.lines().count() > 1, "{sql}: {}", run.stdout);
    }
    let run = segql_in(
        remote.path(),
        &[
            "--cluster",
            &cluster.url,
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n FROM customers WHERE in_segment(customer_id, 'lapsed') \
             OR country = 'France'",
        ],
    );
    let local_count = segql_in(
        local.path(),
        &[
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n FROM customers WHERE in_segment(customer_id, 'lapsed') \
             OR country = 'France'",
        ],
    );
    assert_eq!(run.stdout, local_count.stdout);
}

#[test]
fn the_project_group_map_reaches_the_executors() {
    let dir = tempfile::tempdir().unwrap();
    project_copy(dir.path());
    std::fs::write(
        dir.path().join("groups.txt"),
        "scale 5\nLow: r 1-2, f 1-5\nHigh: r 3-5, f 1-5\n",
    )
    .unwrap();
    let mut toml = std::fs::read_to_string(dir.path().join("segql.toml")).unwrap();
    toml.push_str("[rfm]\ngroups = \"groups.txt\"\n");
    std::fs::write(dir.path().join("segql.toml"), toml).unwrap();
    let cluster = start_cluster(dir.path());
    // Scores from the rows, so the function runs on the executors.
    let sql = "SELECT rfm_segment(CAST(customer_id % 5 + 1 AS BIGINT), 1) AS g, count(*) AS n \
               FROM customers GROUP BY g ORDER BY g";
    let run = same_on_both(dir.path(), &cluster, &["--format", "csv", "-c", sql]);
    // As plain SQL counts them: customer_id % 5 < 2 is Low.
    assert_eq!(run.stdout, "g,n\nHigh,2641\nLow,1731\n");
}

#[test]
fn an_unreachable_scheduler_is_a_clear_error() {
    let port = free_port_pair();
    let url = format!("df://127.0.0.1:{port}");
    let run = super::segql(&["--cluster", &url, "-c", "SELECT 1"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.starts_with(&format!(
            "error: cannot reach the cluster scheduler at {url}: Connection refused"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("start one with `segql cluster scheduler --bind 127.0.0.1:"),
        "{}",
        run.stderr
    );
    let run = super::segql(&["--cluster", "http://x", "-c", "SELECT 1"]);
    assert_eq!(
        run.stderr,
        "error: cluster URL `http://x` does not start with df://; give the scheduler as \
         df://HOST:PORT, e.g. df://127.0.0.1:50050\n"
    );
    assert_eq!(run.code, Some(1));
}

#[test]
fn a_killed_executor_never_leaves_the_store_half_changed() {
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    project_copy(local.path());
    project_copy(remote.path());
    let mut cluster = start_cluster(remote.path());
    let condition = "orders_count >= 2 AND NOT bought(description: '%MUG%', date: -90d..today)";
    for dir in [local.path(), remote.path()] {
        let run = segql_in(dir, &["segment", "create", "regulars", condition]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let run = segql_in(dir, &["--as-of", "2011-09-01", "refresh"]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    let before = store_history(remote.path(), None);
    assert_eq!(before, store_history(local.path(), None));

    // A refresh on the cluster loses one of its two executors part way.
    let refresh = Command::new(env!("CARGO_BIN_EXE_segql"))
        .args([
            "--cluster",
            &cluster.url,
            "--as-of",
            "2011-12-01",
            "refresh",
        ])
        .current_dir(remote.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let executor = cluster.nodes.last_mut().unwrap();
    executor.kill().unwrap();
    executor.wait().unwrap();
    let output = refresh.wait_with_output().unwrap();
    eprintln!(
        "refresh went on after the kill: {}",
        output.status.success()
    );

    // Either Ballista ran the lost tasks again and the refresh recorded
    // what an in-process one records, or it failed, said so, and the
    // store still holds exactly the state before it.
    let run = segql_in(local.path(), &["--as-of", "2011-12-01", "refresh"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let after = store_history(remote.path(), None);
    if output.status.success() {
        assert_eq!(after, store_history(local.path(), None));
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert_eq!(after, before, "a failed refresh changed the store");
        // The next refresh, on the executor left, completes it.
        let run = segql_in(
            remote.path(),
            &[
                "--cluster",
                &cluster.url,
                "--as-of",
                "2011-12-01",
                "refresh",
            ],
        );
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert_eq!(
            store_history(remote.path(), None),
            store_history(local.path(), None)
        );
    }
}
