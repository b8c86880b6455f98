"""A PostgreSQL driver (psycopg 3) against `segql serve`, for the server tests.

    server_client.py checks PORT
        SQL with parameters, segment statements over the simple and the
        extended protocol, errors, the statement timeout, cancel, and the
        memory limit: one JSON line per check, compared exactly by the test.

    server_client.py load PORT SERVER_PID SECONDS CLIENTS
        CLIENTS connections at once, each running a fixed mix of SQL and
        segment statements for SECONDS, every answer checked against the
        one a single connection got first; prints a JSON summary (answers,
        errors, latency percentiles, server RSS before and after) and exits
        1 on any wrong answer or error.

Run by tests/integration/server.rs with the .venv that .ci/run fills.
"""

import json
import sys
import threading
import time

import psycopg

# A statement that runs for hours, one small batch after another (DataFusion
# stops a statement between batches).
SLOW = "SELECT count(*) FROM generate_series(1, 100000000000) WHERE value % 7 = 100"


def connect(port, user="segql"):
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        dbname="segql",
        user=user,
        autocommit=True,
        sslmode="disable",
        connect_timeout=10,
    )


def emit(name, value):
    print(json.dumps([name, value]), flush=True)


def failure(cur, sql, **kwargs):
    """Runs `sql`, which must fail; its SQLSTATE and first line."""
    try:
        cur.execute(sql, **kwargs)
    except psycopg.Error as e:
        return [e.sqlstate, str(e).splitlines()[0]]
    return ["no error", sql]


def checks(port):
    with connect(port) as conn:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM orders WHERE customer_id = %s", (12437,))
        emit("parameter", cur.fetchone()[0])
        cur.execute("SELECT count(*) FROM customers WHERE country = %s", ("France",))
        emit("customers in France", cur.fetchone()[0])

        # Simple protocol (no parameters): PREVIEW gives the count, then rows.
        cur.execute("PREVIEW SEGMENT country = 'France' AND rfm_r >= 4")
        emit("preview count", cur.fetchone()[0])
        cur.nextset()
        rows = cur.fetchall()
        emit("preview rows", [len(rows), rows[0][0], rows[0][2]])

        # Extended protocol: the last table, described before it runs.
        cur.execute("PREVIEW SEGMENT country = 'France' AND rfm_r >= 4", prepare=True)
        emit("prepared preview columns", [d.name for d in cur.description])
        emit("prepared preview first", cur.fetchall()[0][0])
        cur.execute("EXPLAIN SEGMENT country = 'France' AND rfm_r >= 4", prepare=True)
        steps = [row[0] for row in cur.fetchall()]
        emit("prepared explain steps", steps)
        cur.execute("CREATE SEGMENT py_france AS country = 'France'", prepare=True)
        emit("prepared create", cur.fetchall())
        cur.execute("REFRESH SEGMENTS py_france", prepare=True)
        emit("prepared refresh", [d.name for d in cur.description] + list(cur.fetchall()[0][:4]))
        cur.execute("SELECT count(*) FROM segment_members('py_france')")
        emit("members after refresh", cur.fetchone()[0])
        cur.execute("SELECT count(*) FROM customers WHERE in_segment(customer_id, 'py_france')")
        emit("in_segment", cur.fetchone()[0])
        cur.execute("DROP SEGMENT py_france", prepare=True)
        emit("prepared drop", cur.fetchall())

        emit("unknown attribute", failure(cur, "PREVIEW SEGMENT countr = 'France'"))
        emit(
            "unknown attribute, prepared",
            failure(cur, "PREVIEW SEGMENT countr = 'France'", prepare=True),
        )
        emit("unknown table", failure(cur, "SELECT * FROM ordres"))

        # The statement timeout (the client's own), then a cancel.
        cur.execute("SET statement_timeout = 300")
        started = time.monotonic()
        emit("timeout", failure(cur, SLOW))
        emit("timeout stopped within 10 s", time.monotonic() - started < 10)
        cur.execute("SET statement_timeout = 0")

        def cancel_soon():
            time.sleep(0.5)
            conn.cancel()

        threading.Thread(target=cancel_soon).start()
        started = time.monotonic()
        emit("cancel", failure(cur, SLOW))
        emit("cancel stopped within 10 s", time.monotonic() - started < 10)
        cur.execute("SELECT 41 + 1")
        emit("after cancel", cur.fetchone()[0])

        # More than the connection's memory: a clear error, then business
        # as usual on the same connection.
        try:
            cur.execute(
                "SELECT a.order_id, count(*) FROM order_items a "
                "JOIN order_items b ON a.sku = b.sku GROUP BY a.order_id"
            )
            emit("over the memory limit", "no error")
        except psycopg.Error as e:
            emit("over the memory limit", [e.sqlstate] + str(e).splitlines())
        cur.execute("SELECT count(*) FROM orders")
        emit("after the memory error", cur.fetchone()[0])


# The load: SQL, segql's functions and segment statements, each with the
# answer's shape that is compared.
LOAD = [
    ("SELECT count(*) FROM orders", {}),
    ("SELECT count(*) FROM orders WHERE customer_id = %s", {"params": (12437,)}),
    (
        "SELECT country, count(*) FROM customers GROUP BY country ORDER BY 2 DESC, 1 LIMIT 3",
        {},
    ),
    ("PREVIEW SEGMENT country = 'France' AND rfm_r >= 4", {"prepare": True}),
    ("PREVIEW SEGMENT bought(description: '%TEA%') AND orders_count >= 5", {}),
    ("SELECT count(*) FROM segment('rfm_group = ''Champions''')", {}),
    ("SHOW SEGMENTS", {}),
]


def run_one(cur, sql, options):
    cur.execute(sql, options.get("params"), prepare=options.get("prepare"))
    return [list(row) for row in cur.fetchall()]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def load(port, pid, seconds, clients):
    with connect(port) as conn:
        cur = conn.cursor()
        expected = [run_one(cur, sql, options) for sql, options in LOAD]
    rss_before = rss_kib(pid)
    latencies, errors, wrong = [], [], []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(index):
        try:
            with connect(port) as conn:
                cur = conn.cursor()
                n = index
                while time.monotonic() < stop_at:
                    sql, options = LOAD[n % len(LOAD)]
                    n += 1
                    started = time.monotonic()
                    try:
                        answer = run_one(cur, sql, options)
                    except psycopg.Error as e:
                        with lock:
                            errors.append(f"{sql}: {e}")
                        continue
                    took = time.monotonic() - started
                    with lock:
                        latencies.append(took)
                        if answer != expected[(n - 1) % len(LOAD)]:
                            wrong.append(sql)
        except psycopg.Error as e:
            with lock:
                errors.append(f"connection {index}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rss_after = rss_kib(pid)
    latencies.sort()

    def percentile(p):
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    summary = {
        "clients": clients,
        "seconds": seconds,
        "answered": len(latencies),
        "wrong": len(wrong),
        "errors": len(errors),
        "latency_ms": {"p50": percentile(0.5), "p95": percentile(0.95), "p99": percentile(0.99)},
        "server_rss_mib": {"before": round(rss_before / 1024), "after": round(rss_after / 1024)},
        "first_problems": (errors + wrong)[:3],
    }
    print(json.dumps(summary), flush=True)
    return 0 if not errors and not wrong and latencies else 1


def main():
    mode = sys.argv[1]
    if mode == "checks":
        checks(int(sys.argv[2]))
        return 0
    if mode == "load":
        return load(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
