//! `segql serve` driven by real PostgreSQL clients on loopback: `psql`
//! (Debian's postgresql-client) and Python's psycopg 3
//! (`server_client.py`), over the bundled Online Retail project as of
//! 2011-12-10 with a store in a temporary folder.
//!
//! `.ci/run` installs both; elsewhere each test is skipped with a message
//! when a client is missing (unless `SEGQL_REQUIRE_SERVER_CLIENTS` is set, as
//! CI sets it). The load test runs 16 clients for `SEGQL_LOAD_SECONDS`
//! (default 30) and prints its figures.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Run, repo_root, segql_in};

/// A `segql serve` child process, killed when dropped; its log is kept.
struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `segql serve` on a free loopback port with `dir/segql.toml`.
    fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_segql"))
            .args(["--as-of", "2011-12-10", "serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = port_tx.send(port.parse::<u16>().unwrap_or(0));
                }
                log_writer.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("segql serve did not start: {}", log.lock().unwrap()));
        Server { child, port, log }
    }

    /// The server's log, with the time stamps taken off.
    fn log(&self) -> String {
        self.log
            .lock()
            .unwrap()
            .lines()
            .map(|line| line.split_once(' ').map_or(line, |(_, rest)| rest))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs psql with `args` (after the connection options), the password
    /// in `PGPASSWORD` when given.
    fn psql(&self, user: &str, password: Option<&str>, sslmode: &str, args: &[&str]) -> Run {
        let mut command = Command::new(psql().unwrap());
        command
            .args([
                "-X",
                "-w",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                "segql",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(args)
            .env("PGSSLMODE", sslmode)
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD");
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        let output = command.output().unwrap();
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Whether a client may be missing (outside CI).
fn missing(what: &str) -> bool {
    assert!(
        std::env::var_os("SEGQL_REQUIRE_SERVER_CLIENTS").is_none(),
        "SEGQL_REQUIRE_SERVER_CLIENTS is set but {what} was not found"
    );
    eprintln!(
        "skipped: no {what} (`apt-get install postgresql-client` and `.venv/bin/pip install \
         'psycopg[binary]'`, as .ci/run does)"
    );
    true
}

fn psql() -> Option<PathBuf> {
    std::env::var_os("SEGQL_PSQL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("psql"))
                    .find(|p| p.is_file())
            })
        })
        .filter(|p| p.is_file())
}

/// The Python of `.venv` when it has psycopg.
fn python() -> Option<PathBuf> {
    let python = repo_root().join(".venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import psycopg"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// A project folder: the bundled tables and saved segments, a store of its
/// own, and `server` as its `[server]` section.
fn project(server: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = repo_root().join("data/online_retail");
    let segments = repo_root().join("queries/segments");
    let toml = format!(
        "[tables]\n\
         orders = \"{data}/orders.parquet\"\n\
         customers = \"{data}/customers.parquet\"\n\
         order_items = \"{data}/order_items.parquet\"\n\
         events = \"{data}/events.parquet\"\n\
         [segments]\n\
         folder = \"{segments}\"\n\
         [purchases]\n\
         exclude_statuses = [\"cancelled\", \"adjustment\"]\n\
         {server}\n",
        data = data.display(),
        segments = segments.display(),
    );
    std::fs::write(dir.path().join("segql.toml"), toml).unwrap();
    dir
}

/// `segql hash-password` with `password` on standard input.
fn hash(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_segql"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn psql_runs_sql_functions_and_segment_statements() {
    if psql().is_none() && missing("psql") {
        return;
    }
    let dir = project("");
    let server = Server::start(dir.path(), &[]);
    let run = server.psql(
        "segql",
        None,
        "disable",
        &[
            "-A",
            "-F",
            "|",
            "-c",
            "SELECT count(*) AS orders FROM orders",
            "-c",
            "SELECT rfm_code(5, 4, 5) AS code, rfm_segment(1, 5) AS segment, count(*) AS \
             recent FROM segment('rfm_r >= 4')",
            "-c",
            "SELECT count(*) AS joined_around_christmas FROM customers \
             WHERE anniversary_between(CAST(created_at AS DATE), DATE '2011-12-10', \
             DATE '2011-12-24')",
            "-c",
            "PREVIEW SEGMENT in_segment(lapsed_big_spenders)",
            "-c",
            "CREATE SEGMENT france AS country = 'France'; REFRESH SEGMENTS; SHOW SEGMENTS",
            "-c",
            "SELECT count(*) AS members FROM segment_members('france')",
            "-c",
            "SELECT in_segment(customer_id, 'france') AS member, count(*) FROM customers \
             GROUP BY 1 ORDER BY 1",
            "-c",
            "DROP SEGMENT france",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let refresh_note = run
        .stdout
        .lines()
        .find(|l| l.starts_with("france|87|87|0|"))
        .unwrap_or_default()
        .to_string();
    let stdout = run
        .stdout
        .replace(&refresh_note, "france|87|87|0|<refresh>");
    assert_eq!(
        stdout,
        "orders\n25900\n(1 row)\n\
         code|segment|recent\n545|Can't Lose|1715\n(1 row)\n\
         joined_around_christmas\n326\n(1 row)\n\
         members\n122\n(1 row)\n\
         customer_id|created_at|country|n_countries|birthday\n\
         12346|2011-01-18 10:01:00.000000|United Kingdom|1|\n\
         12354|2011-04-21 13:11:00.000000|Spain|1|\n\
         12377|2010-12-20 09:37:00.000000|Switzerland|1|\n\
         12378|2011-08-02 10:34:00.000000|Switzerland|1|\n\
         12405|2011-07-14 08:52:00.000000|Finland|1|\n\
         12424|2011-06-30 12:06:00.000000|Australia|1|\n\
         12435|2011-03-17 07:40:00.000000|Denmark|1|\n\
         12458|2011-02-28 10:55:00.000000|Switzerland|1|\n\
         12497|2011-09-19 12:29:00.000000|Germany|1|\n\
         12501|2011-01-07 12:28:00.000000|Germany|1|\n\
         (10 rows)\n\
         result\n\
         created dynamic segment france; `segql refresh` (or REFRESH SEGMENTS) forms it\n\
         (1 row)\n\
         segment|size|entered|exited|note\n\
         france|87|87|0|<refresh>\n\
         (1 row)\n\
         code|name|kind|active|size|as_of|version|condition|included|excluded\n\
         france||dynamic|t|87|2011-12-10|1|country = 'France'|0|0\n\
         (1 row)\n\
         members\n87\n(1 row)\n\
         member|count(*)\nf|4285\nt|87\n(2 rows)\n\
         result\ndropped segment france (87 members left it)\n(1 row)\n"
    );

    // information_schema lists the columns too (some drivers read it).
    let run = server.psql(
        "segql",
        None,
        "disable",
        &[
            "-A",
            "-t",
            "-c",
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'orders' ORDER BY ordinal_position LIMIT 3",
        ],
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (
            Some(0),
            "order_id|Utf8View\ncustomer_id|Int64\norder_ts|Timestamp(µs)\n"
        ),
        "{}",
        run.stderr
    );
    // The catalog: \d lists the tables, \d orders its columns.
    let run = server.psql(
        "segql",
        None,
        "disable",
        &["-c", "\\d", "-c", "\\d customers"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "               List of relations\n \
         Schema |        Name        | Type  |  Owner   \n\
         --------+--------------------+-------+----------\n \
         public | customers          | table | postgres\n \
         public | events             | table | postgres\n \
         public | order_items        | table | postgres\n \
         public | orders             | table | postgres\n \
         public | segment_events     | table | postgres\n \
         public | segment_membership | table | postgres\n \
         public | segment_refreshes  | table | postgres\n \
         public | segment_sizes      | table | postgres\n \
         public | segments           | table | postgres\n\
         (9 rows)\n\n\
         \x20                         Table \"public.customers\"\n   \
         Column    |            Type             | Collation | Nullable | Default \n\
         -------------+-----------------------------+-----------+----------+---------\n \
         customer_id | bigint                      |           |          | \n \
         created_at  | timestamp without time zone |           |          | \n \
         country     | text                        |           |          | \n \
         n_countries | integer                     |           |          | \n \
         birthday    | date                        |           |          | \n\n"
    );

    // Errors reach psql with their text; the server goes on.
    let run = server.psql(
        "segql",
        None,
        "disable",
        &["-c", "PREVIEW SEGMENT rfm_r >= 4 AND city = 'London'"],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "ERROR:  Error during planning: in segment condition\n\
         error: unknown attribute `city`\n  |\n\
         1 | rfm_r >= 4 AND city = 'London'\n  |                ^^^^\n  \
         = help: known attributes: customer_id, created_at, country, n_countries, birthday, \
         orders_count, amount_spent, avg_order_value, first_order_date, last_order_date, \
         days_since_last_order, rfm_r, rfm_f, rfm_m, rfm_code, rfm_group, last_did(...), \
         first_did(...)\n"
    );

    // A client that goes away mid-statement: the statement stops, the
    // server answers the next one.
    let mut gone = Command::new(psql().unwrap())
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-d",
            "segql",
        ])
        .args([
            "-c",
            "SELECT count(*) FROM generate_series(1, 100000000000) WHERE value % 7 = 100",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    gone.kill().unwrap();
    gone.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .log()
        .contains("closed its connection during a statement; stopped it")
    {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = server.psql(
        "segql",
        None,
        "disable",
        &["-A", "-t", "-c", "SELECT 1 + 1"],
    );
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "2\n"));
    assert!(
        server
            .log()
            .starts_with("segql serve: listening on 127.0.0.1:",)
            && server
                .log()
                .contains("(no TLS, no passwords: this machine only)"),
        "{}",
        server.log()
    );
}

#[test]
fn passwords_roles_and_tls() {
    if psql().is_none() && missing("psql") {
        return;
    }
    let fixtures = repo_root().join("tests/integration/fixtures/tls");
    let admin_hash = hash("admin-secret");
    let dir = project(&format!(
        "[server]\n\
         tls_cert = \"{cert}\"\n\
         tls_key = \"{key}\"\n\
         [server.users.analyst]\n\
         password_hash = \"{analyst}\"\n\
         role = \"read_only\"\n\
         [server.users.admin]\n\
         password_hash_env = \"SEGQL_TEST_ADMIN_HASH\"\n",
        cert = fixtures.join("server.crt").display(),
        key = fixtures.join("server.key").display(),
        analyst = hash("analyst-secret"),
    ));
    let server = Server::start(dir.path(), &[("SEGQL_TEST_ADMIN_HASH", &admin_hash)]);
    let port = server.port;

    // Wrong password, unknown user, no password: the same refusal.
    for (user, password) in [
        ("analyst", Some("admin-secret")),
        ("nobody", Some("x")),
        ("analyst", None),
    ] {
        let run = server.psql(user, password, "disable", &["-c", "SELECT 1"]);
        assert_eq!(run.code, Some(2), "{user}");
        let expected = match password {
            Some(_) => format!(
                "psql: error: connection to server at \"127.0.0.1\", port {port} failed: \
                 FATAL:  password authentication failed for user \"{user}\"\n"
            ),
            None => format!(
                "psql: error: connection to server at \"127.0.0.1\", port {port} failed: \
                 fe_sendauth: no password supplied\n"
            ),
        };
        assert_eq!(run.stderr, expected);
    }
    let log = server.log();
    assert!(
        log.contains("password authentication failed for user \"analyst\" from 127.0.0.1")
            && log.contains("password authentication failed for user \"nobody\" from 127.0.0.1")
            && !log.contains("admin-secret")
            && !log.contains("analyst-secret"),
        "{log}"
    );

    // TLS, with the right password.
    let run = server.psql(
        "analyst",
        Some("analyst-secret"),
        "require",
        &[
            "-A",
            "-t",
            "-c",
            "SELECT count(*) FROM customers",
            "-c",
            "\\conninfo",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("4372\n")
            && run.stdout.contains("SSL connection (protocol: TLSv1.3"),
        "{}",
        run.stdout
    );

    // The read-only user reads and previews, and may not change anything.
    let run = server.psql(
        "analyst",
        Some("analyst-secret"),
        "disable",
        &[
            "-A",
            "-t",
            "-c",
            "PREVIEW SEGMENT country = 'France'",
            "-c",
            "SHOW SEGMENTS",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.starts_with("87\n12413|"), "{}", run.stdout);
    for (statement, shown) in [
        ("CREATE SEGMENT fr AS country = 'France'", "CREATE SEGMENT"),
        ("REFRESH SEGMENTS", "REFRESH SEGMENTS"),
        (
            "CREATE TABLE copy AS SELECT * FROM orders",
            "CREATE TABLE copy AS SELECT * FROM orders",
        ),
        (
            "COPY orders TO '/tmp/segql-server-test-orders.csv'",
            "COPY orders TO '/tmp/segql-server-test-orders.csv'",
        ),
    ] {
        let run = server.psql(
            "analyst",
            Some("analyst-secret"),
            "disable",
            &["-c", statement],
        );
        assert_eq!(run.code, Some(1), "{statement}");
        assert_eq!(
            run.stderr,
            format!(
                "ERROR:  permission denied: user \"analyst\" is read-only; it may query and \
                 PREVIEW, EXPLAIN or SHOW segments, not run `{shown}`. Connect as a user with \
                 role = \"admin\" to change segments or tables.\n"
            ),
            "{statement}"
        );
    }
    assert!(!Path::new("/tmp/segql-server-test-orders.csv").exists());

    // The admin (hash from the environment) changes segments.
    let run = server.psql(
        "admin",
        Some("admin-secret"),
        "disable",
        &[
            "-A",
            "-t",
            "-c",
            "CREATE SEGMENT fr AS country = 'France'",
            "-c",
            "DROP SEGMENT fr",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "created dynamic segment fr; `segql refresh` (or REFRESH SEGMENTS) forms it\n\
         dropped segment fr (0 members left it)\n"
    );
    drop(server);

    // require_tls: a connection without TLS is turned away.
    let dir = project(&format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\nrequire_tls = true\n",
        fixtures.join("server.crt").display(),
        fixtures.join("server.key").display(),
    ));
    let server = Server::start(dir.path(), &[]);
    let run = server.psql("segql", None, "disable", &["-c", "SELECT 1"]);
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        format!(
            "psql: error: connection to server at \"127.0.0.1\", port {} failed: FATAL:  this \
             segql server accepts only TLS connections; connect with sslmode=require\n",
            server.port
        )
    );
    let run = server.psql("segql", None, "require", &["-A", "-t", "-c", "SELECT 1"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), "1\n"),
        "{}",
        run.stderr
    );
    drop(server);

    // max_connections: one held open, the next one turned away in words.
    let dir = project("[server]\nmax_connections = 1\n");
    let server = Server::start(dir.path(), &[]);
    let held = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let run = server.psql("segql", None, "disable", &["-c", "SELECT 1"]);
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        format!(
            "psql: error: connection to server at \"127.0.0.1\", port {} failed: FATAL:  sorry, \
             too many clients already (max_connections = 1); try again later\n",
            server.port
        )
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = server.psql("segql", None, "disable", &["-A", "-t", "-c", "SELECT 1"]);
        if run.code == Some(0) {
            assert_eq!(run.stdout, "1\n");
            break;
        }
        assert!(Instant::now() < deadline, "{}", run.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        server.log().contains("turned away 127.0.0.1:"),
        "{}",
        server.log()
    );
}

#[test]
fn the_server_refuses_to_start_when_it_should_not() {
    let fixtures = repo_root().join("tests/integration/fixtures/tls");
    let cases = [
        (
            String::new(),
            "0.0.0.0:0",
            "error: segql serve: listening on 0.0.0.0:0 without users would let anyone who can \
             reach it in without a password; add a user under [server.users.<name>] with a \
             password hash from `segql hash-password`, or listen on 127.0.0.1\n",
        ),
        (
            String::new(),
            "localhost:5432",
            "error: segql serve: `localhost:5432` is not an address to listen on; write it as \
             IP:PORT, such as 127.0.0.1:5432 or 0.0.0.0:5432\n",
        ),
        (
            "[server.users.a]\npassword_hash = \"hunter2\"\n".to_string(),
            "127.0.0.1:0",
            "error: [server.users.a]: the password hash is not usable: it is not a segql \
             password hash (segql-scram-sha-256$4096$<salt>$<key>); make one with `segql \
             hash-password`\n",
        ),
        (
            "[server.users.a]\npassword_hash_env = \"SEGQL_TEST_NO_SUCH_VARIABLE\"\n".to_string(),
            "127.0.0.1:0",
            "error: [server.users.a] takes its password hash from the environment variable \
             SEGQL_TEST_NO_SUCH_VARIABLE, which is not set; set it to the output of `segql \
             hash-password`\n",
        ),
        (
            format!(
                "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                fixtures.join("server.key").display(),
                fixtures.join("server.key").display()
            ),
            "127.0.0.1:0",
            "",
        ),
    ];
    for (server, listen, expected) in cases {
        let dir = project(&server);
        let run = segql_in(dir.path(), &["serve", "--listen", listen]);
        assert_eq!(run.code, Some(1), "{server}");
        if expected.is_empty() {
            assert_eq!(
                run.stderr,
                format!(
                    "error: segql serve: {} holds no certificate (PEM, -----BEGIN \
                     CERTIFICATE-----)\n",
                    fixtures.join("server.key").display()
                )
            );
        } else {
            assert_eq!(run.stderr, expected, "{server}");
        }
    }
    let dir = project("[server]\ntls_cert = \"a.crt\"\n");
    let run = segql_in(dir.path(), &["serve"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.ends_with(
            "[server] sets only one of tls_cert and tls_key; TLS needs both the certificate \
             chain and its private key (PEM files)\n"
        ),
        "{}",
        run.stderr
    );
    let run = segql_in(dir.path(), &["--memory-limit", "1G", "serve"]);
    assert_eq!(run.code, Some(1));
    let mut child = Command::new(env!("CARGO_BIN_EXE_segql"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: hash-password: no password on standard input; type or pipe one line, such as \
         `printf '%s\\n' \"$PASSWORD\" | segql hash-password`\n"
    );
}

#[test]
fn psycopg_prepared_statements_limits_cancel_and_load() {
    let Some(python) = python() else {
        missing("psycopg in .venv");
        return;
    };
    let dir = project("[server]\nquery_memory_limit = \"32M\"\n");
    let server = Server::start(dir.path(), &[]);
    let script = repo_root().join("tests/integration/server_client.py");
    let output = Command::new(&python)
        .arg(&script)
        .args(["checks", &server.port.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let expected = r#"["parameter", 19]
["customers in France", 87]
["preview count", 44]
["preview rows", [10, 12437, "France"]]
["prepared preview columns", ["customer_id", "created_at", "country", "n_countries", "birthday"]]
["prepared preview first", 12437]
["prepared explain steps", ["condition", "as_of", "logical_plan", "optimized_plan", "sql", "customers", "keeps 1", "keeps 2"]]
["prepared create", [["created dynamic segment py_france; `segql refresh` (or REFRESH SEGMENTS) forms it"]]]
["prepared refresh", ["segment", "size", "entered", "exited", "note", "py_france", 87, 87, 0]]
["members after refresh", 87]
["in_segment", 87]
["prepared drop", [["dropped segment py_france (87 members left it)"]]]
["unknown attribute", ["XX000", "Error during planning: in segment condition"]]
["unknown attribute, prepared", ["XX000", "Error during planning: in segment condition"]]
["unknown table", ["XX000", "Error during planning: table 'datafusion.public.ordres' not found"]]
["timeout", ["57014", "canceling statement due to statement timeout"]]
["timeout stopped within 10 s", true]
["cancel", ["57014", "canceling statement due to user request"]]
["cancel stopped within 10 s", true]
["after cancel", 42]
["over the memory limit", ["53200", "Resources exhausted: Additional allocation failed for HashJoinInput", "The statement needs more memory than this connection may use (32 MiB, [server] query_memory_limit in the project file); raise the limit, or narrow the statement."]]
["after the memory error", 25900]
"#;
    assert_eq!(stdout, expected);

    let seconds = std::env::var("SEGQL_LOAD_SECONDS").unwrap_or_else(|_| "30".into());
    let output = Command::new(&python)
        .arg(&script)
        .args([
            "load",
            &server.port.to_string(),
            &server.child.id().to_string(),
            &seconds,
            "16",
        ])
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&output.stdout);
    eprintln!("load test: {summary}");
    assert!(
        output.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(summary.contains("\"wrong\": 0, \"errors\": 0"), "{summary}");
}
