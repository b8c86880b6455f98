#!/usr/bin/env python3
"""segql against DuckDB on the same Parquet files, side by side.

    python3 benches/compare/run.py [--scale SF] [--only q1,q2,...] [--runs N]
        [--history N] [--segql PATH] [--memory-limit SIZE] [--out FILE]

Run from anywhere; paths are relative to the repository. The script

1. makes a virtualenv `.venv` in the repository root when missing, installs
   `duckdb` into it when it cannot be imported, and runs itself again with
   that interpreter (everything else is the Python standard library);
2. generates data with `segql generate --scale SF --seed 42` into
   `benches/compare/data/sf<SF>/` (kept and reused), moves `orders` into a
   folder of Parquet files (`orders/part-0.parquet`) and writes project
   files naming `orders/*.parquet`;
3. runs each workload on both engines, alternating (segql, DuckDB, segql,
   ...), `--runs` times; each run is a child process, started by the small
   `launch.py`, which records its wall time and peak RSS (`os.wait4`,
   ru_maxrss); the DuckDB side is a Python child (`duck.py`) so its RSS is
   its own;
4. checks that both engines give the same result (row counts and
   checksums, or every segment's size / entered / exited) and fails on a
   mismatch;
5. prints a Markdown table (median time net of each engine's start cost,
   ratio, peak RSS, check) and writes it to `--out`
   (default `benches/compare/results-sf<SF>.md`).

The segql binary is `--segql PATH`, or `target/release/segql` (under
CARGO_TARGET_DIR when set), built with `cargo build --release --bin segql`
when missing. A CI smoke run with the debug build:

    python3 benches/compare/run.py --scale 0.001 --runs 1 --history 3 \\
        --segql target/debug/segql

Workloads (SQL for both engines in workloads.py):

  q1  per-customer RFM base (last order, orders, spend) written to Parquet
  q2  bought Sofas in the last 365 days and never a Coffee table
  q3  recency quintile >= 4, five cities, birthday in the next 30 days
  q4  fixed-threshold RFM scores of every customer written to Parquet
  q5  the abandoned cart: a cart add in the last 3 days, no purchase in them
  r1  first refresh of 22 saved segments in a fresh store
  r2  the next refresh, a week later, after 1% new orders arrive as a second
      file of the orders folder (`orders_r2/`: part-0 plus part-1.parquet)
  r3  the 2nd and the Nth refresh of a daily history of --history refreshes,
      from the as-of day on
"""

import argparse
import csv
import datetime
import io
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV = REPO / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
WORKLOADS = ("q1", "q2", "q3", "q4", "q5", "r1", "r2", "r3")
SEED = 42
# R2's new orders land on the day before R2's refresh, which is this many
# days after R1's.
R2_DAYS_LATER = 7


# -- bootstrap ---------------------------------------------------------------


def ensure_venv() -> None:
    """Runs this script under .venv/bin/python with duckdb importable,
    creating the venv and installing duckdb when needed."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        try:
            import duckdb  # noqa: F401
        except ImportError:
            pip_install_duckdb()
        return
    if not VENV_PYTHON.exists():
        print(f"== creating {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if subprocess.run([str(VENV_PYTHON), "-c", "import duckdb"],
                      stderr=subprocess.DEVNULL).returncode != 0:
        pip_install_duckdb()
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])


def pip_install_duckdb() -> None:
    print(f"== installing duckdb into {VENV}", file=sys.stderr)
    subprocess.run([str(VENV_PYTHON), "-m", "pip", "install", "-q", "duckdb"], check=True)


# -- child processes ---------------------------------------------------------


class BenchError(Exception):
    """A failure that ends the run with a message."""


@dataclass
class Sample:
    """One child process: wall seconds, peak RSS in KiB, standard output."""

    wall: float
    rss_kib: int
    stdout: str


def run_child(cmd: list) -> Sample:
    """Runs `cmd` through launch.py, which times it and reads its peak RSS
    (see there why not from here). Output goes to temporary files, not a
    pipe to drain while timing."""
    with tempfile.TemporaryDirectory(prefix="segql-compare-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        launcher = subprocess.run(
            [sys.executable, "-I", "-S", str(HERE / "launch.py"), str(out), str(err),
             *map(str, cmd)],
            capture_output=True, text=True)
        if launcher.returncode != 0:
            raise BenchError(f"launch.py failed:\n{launcher.stderr}")
        code, wall, rss = launcher.stdout.split()
        stdout = out.read_text(errors="replace")
        stderr = err.read_text(errors="replace")
    if int(code) != 0:
        tail = "\n".join(stderr.strip().splitlines()[-20:])
        raise BenchError(
            f"command failed (exit code {code}):\n  {shlex.join(map(str, cmd))}\n{tail}"
        )
    return Sample(float(wall), int(rss), stdout)


def csv_rows(text: str) -> list:
    """The rows of CSV text with a header, as dicts."""
    return list(csv.DictReader(io.StringIO(text)))


# -- the two engines ---------------------------------------------------------


class Segql:
    def __init__(self, binary: Path, memory_limit: Optional[str]):
        self.binary = binary
        self.memory_limit = memory_limit

    def cmd(self, config: Path, *args, as_of: Optional[str] = None) -> list:
        cmd = [str(self.binary), "--config", str(config)]
        if as_of:
            cmd += ["--as-of", as_of]
        if self.memory_limit:
            cmd += ["--memory-limit", self.memory_limit]
        return cmd + list(args)

    def version(self) -> str:
        return run_child([str(self.binary), "--version"]).stdout.strip()


class Duck:
    def __init__(self, memory_limit: Optional[str]):
        # segql takes 512M / 4G; DuckDB wants 512MB / 4GB.
        if memory_limit and memory_limit[-1:].upper() in "KMGT":
            memory_limit += "B"
        self.memory_limit = memory_limit

    def cmd(self, sql_file: Optional[Path] = None, db: Optional[Path] = None,
            sql: Optional[str] = None) -> list:
        cmd = [str(VENV_PYTHON), str(HERE / "duck.py")]
        if db:
            cmd += ["--db", str(db)]
        if self.memory_limit:
            cmd += ["--memory-limit", self.memory_limit]
        return cmd + (["-c", sql] if sql is not None else ["-f", str(sql_file)])


# -- data ----------------------------------------------------------------------


def scale_label(scale: str) -> str:
    value = float(scale)
    if not 0 < value <= 1000:
        raise BenchError(f"--scale {scale}: give a number above 0 and at most 1000")
    return f"{value:g}"


@dataclass
class Data:
    """The data folder, its project files and the facts read from it."""

    dir: Path
    as_of: str  # R1 and the queries: the day after the last order
    r2_as_of: str
    customers: int
    orders: int

    @property
    def work(self) -> Path:
        return self.dir / "work"

    def config(self, name: str = "segql.toml") -> Path:
        return self.dir / name

    def tables(self, orders: str = "orders") -> dict:
        """Absolute Parquet paths for DuckDB."""
        return {
            "customers": str(self.dir / "customers.parquet"),
            "orders": str(self.dir / orders / "*.parquet"),
            "order_items": str(self.dir / "order_items.parquet"),
            "products": str(self.dir / "products.parquet"),
            "events": str(self.dir / "events.parquet"),
        }


def project_file(orders: str, extra: str = "") -> str:
    # [purchases] repeats segql's default so the rule DuckDB copies is in view.
    return f"""# Written by benches/compare/run.py.
[tables]
customers = "customers.parquet"
orders = "{orders}/*.parquet"
order_items = "order_items.parquet"
products = "products.parquet"
events = "events.parquet"

[purchases]
exclude_statuses = ["cancelled"]

[store]
folder = "work/store"
{extra}"""


def prepare_data(segql: Segql, data_dir: Path, scale: str) -> Data:
    import duckdb
    from workloads import segql_rfm_section

    ready = data_dir / "READY"
    # Data from before the events table is generated again.
    if not ready.exists() or not (data_dir / "events.parquet").exists():
        print(f"== generating scale {scale} into {data_dir}", file=sys.stderr)
        data_dir.mkdir(parents=True, exist_ok=True)
        run_child([str(segql.binary), "generate", "--scale", scale, "--seed", str(SEED),
                   "--out", str(data_dir), "--force"])
        (data_dir / "orders").mkdir(exist_ok=True)
        os.replace(data_dir / "orders.parquet", data_dir / "orders" / "part-0.parquet")
        ready.write_text(f"segql generate --scale {scale} --seed {SEED}\n")
    else:
        print(f"== reusing {data_dir}", file=sys.stderr)

    con = duckdb.connect()
    part0 = data_dir / "orders" / "part-0.parquet"
    last_day, orders, max_id = con.execute(
        f"SELECT CAST(max(order_ts) AS DATE), count(*), max(order_id) FROM read_parquet('{part0}')"
    ).fetchone()
    customers = con.execute(
        f"SELECT count(*) FROM read_parquet('{data_dir / 'customers.parquet'}')"
    ).fetchone()[0]
    as_of = last_day + datetime.timedelta(days=1)
    r2_as_of = as_of + datetime.timedelta(days=R2_DAYS_LATER)

    # R2's orders table: the same part-0 (a hard link) plus part-1, 1% of
    # the orders again (every 100th order id) with new ids above the
    # largest and their time of day moved to the day before R2's refresh.
    r2 = data_dir / "orders_r2"
    r2.mkdir(exist_ok=True)
    if not (r2 / "part-0.parquet").exists():
        try:
            os.link(part0, r2 / "part-0.parquet")
        except OSError:
            shutil.copyfile(part0, r2 / "part-0.parquet")
    part1 = r2 / "part-1.parquet"
    if not part1.exists():
        day = r2_as_of - datetime.timedelta(days=1)
        partial = r2 / "part-1.parquet.partial"
        con.execute(f"""COPY (
  SELECT {max_id} + row_number() OVER (ORDER BY order_id) AS order_id, customer_id,
         CAST(DATE '{day}' AS TIMESTAMP) + (order_ts - date_trunc('day', order_ts)) AS order_ts,
         amount, status, channel, n_items
  FROM read_parquet('{part0}') WHERE order_id % 100 = 0 ORDER BY order_id
) TO '{partial}' (FORMAT parquet, COMPRESSION zstd)""")
        os.replace(partial, part1)
    con.close()

    (data_dir / "segql.toml").write_text(project_file("orders"))
    (data_dir / "segql-r2.toml").write_text(project_file("orders_r2"))
    (data_dir / "segql-q4.toml").write_text(project_file("orders", "\n" + segql_rfm_section()))
    return Data(data_dir, str(as_of), str(r2_as_of), customers, orders)


# -- stores: the state a timed refresh starts from --------------------------


class States:
    """Named snapshots of both engines' segment stores. The working copies
    are `work/store` (the folder segql's project files name) and
    `work/duck.duckdb`; a timed refresh first restores a snapshot into them."""

    def __init__(self, data: Data, segql: Segql, duck: Duck):
        self.data, self.segql, self.duck = data, segql, duck
        self.store = data.work / "store"
        self.db = data.work / "duck.duckdb"
        self.saved = data.work / "states"
        self.built = set()

    def _clear(self) -> None:
        shutil.rmtree(self.store, ignore_errors=True)
        for path in (self.db, self.db.with_name(self.db.name + ".wal")):
            path.unlink(missing_ok=True)

    def save(self, name: str) -> None:
        target = self.saved / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        shutil.copytree(self.store, target / "store")
        shutil.copyfile(self.db, target / "duck.duckdb")
        self.built.add(name)

    def restore_segql(self, name: str) -> None:
        shutil.rmtree(self.store, ignore_errors=True)
        shutil.copytree(self.saved / name / "store", self.store)

    def restore_duck(self, name: str) -> None:
        self.db.with_name(self.db.name + ".wal").unlink(missing_ok=True)
        shutil.copyfile(self.saved / name / "duck.duckdb", self.db)

    def fresh(self) -> None:
        """The 20 segments saved, never refreshed (not timed)."""
        if "fresh" in self.built:
            return
        from workloads import DuckSql, segql_create_segments

        self._clear()
        create = write_sql(self.data, "create_segments.sql", segql_create_segments())
        run_child(self.segql.cmd(self.data.config(), "-f", str(create)))
        schema = write_sql(self.data, "duck_store_schema.sql", DuckSql.store_schema())
        run_child(self.duck.cmd(schema, db=self.db))
        self.save("fresh")


def write_sql(data: Data, name: str, text: str) -> Path:
    """Writes SQL under work/sql/ (kept for reading after the run)."""
    path = data.work / "sql" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- workloads -----------------------------------------------------------------


@dataclass
class Side:
    """One engine's part of a workload: the timed command, what to do before
    each run (not timed), and how to read its result from standard output
    (and any file it wrote) into something comparable."""

    cmd: list
    result: Callable[[str], object]
    prepare: Optional[Callable[[], None]] = None


@dataclass
class Row:
    work: str
    segql: list = field(default_factory=list)
    duck: list = field(default_factory=list)
    check: str = ""
    ok: bool = True


def measure(work: str, segql: Side, duck: Side, runs: int, unit: str = "rows") -> Row:
    """Runs both sides alternately `runs` times and checks their results
    (`unit` names what the first value of a result tuple counts)."""
    return measure_together([(work, segql, duck)], runs, unit)[0]


def measure_together(works: list, runs: int, unit: str = "rows") -> list:
    """`measure` for several works (tuples of work, segql side, DuckDB side)
    whose times are compared with each other (R3's refresh no. 2 and no.
    N): each run goes through all of them in turn, so that a slow spell of
    the machine falls on all, not on the last one measured."""
    rows = [Row(work) for work, _, _ in works]
    results = [{"segql": [], "duck": []} for _ in works]
    for i in range(runs):
        for row, result, (work, segql, duck) in zip(rows, results, works):
            for name, side in (("segql", segql), ("duck", duck)):
                if side.prepare:
                    side.prepare()
                sample = run_child(side.cmd)
                getattr(row, name).append(sample)
                result[name].append(side.result(sample.stdout))
            print(f"   {work}: run {i + 1}/{runs}: segql {row.segql[-1].wall:.3f} s, "
                  f"DuckDB {row.duck[-1].wall:.3f} s", file=sys.stderr)
    for row, result in zip(rows, results):
        checked(row, result, unit)
    return rows


def checked(row: Row, results: dict, unit: str) -> None:
    """Sets `row`'s check from each engine's results of its runs: all the
    same within an engine, and the same on both."""
    for name in results:
        if any(r != results[name][0] for r in results[name]):
            row.ok = False
            row.check = f"MISMATCH: {name} differs between runs"
            print(f"error: {row.work}: {name} gave different results between runs: "
                  f"{results[name]}", file=sys.stderr)
            return
    row.ok, row.check = compare(row.work, results["segql"][0], results["duck"][0], unit)


def compare(work: str, ours, theirs, unit: str = "rows") -> tuple:
    """(ok, check text) for two results: tuples of values, or dicts of
    segment -> (size, entered, exited)."""
    if ours == theirs:
        if isinstance(ours, dict):
            total = sum(v[0] for v in ours.values())
            return True, f"ok: {len(ours)} segments, {total:,} memberships"
        return True, f"ok: {ours[0]:,} {unit}"
    if isinstance(ours, dict):
        lines = [f"  {code}: segql (size, entered, exited) {ours.get(code)}, "
                 f"DuckDB {theirs.get(code)}"
                 for code in sorted(set(ours) | set(theirs)) if ours.get(code) != theirs.get(code)]
        detail = "\n".join(lines)
    else:
        detail = f"  segql:  {ours}\n  DuckDB: {theirs}"
    print(f"error: {work}: segql and DuckDB disagree:\n{detail}", file=sys.stderr)
    return False, "MISMATCH (see stderr)"


def parquet_checksum(path: Path, select: str, histogram: Optional[str] = None) -> tuple:
    """Aggregates over a Parquet file the engine wrote (read by DuckDB in
    this process, the same way for both engines' files)."""
    import duckdb

    con = duckdb.connect()
    source = f"read_parquet('{path}')"
    values = con.execute(f"SELECT {select} FROM {source}").fetchone()
    if histogram:
        values += (tuple(con.execute(
            f"SELECT {histogram}, count(*) FROM {source} GROUP BY ALL ORDER BY ALL"
        ).fetchall()),)
    con.close()
    return tuple(values)


def first_row(stdout: str) -> tuple:
    """The first data row of CSV output, as text values."""
    rows = csv_rows(stdout)
    if len(rows) != 1:
        raise BenchError(f"expected one row of CSV output, got:\n{stdout}")
    values = tuple(rows[0].values())
    return (int(values[0]),) + values[1:]


def sizes(stdout: str) -> dict:
    """Refresh output (segql's summary or the DuckDB job's last SELECT):
    segment -> (size, entered, exited)."""
    return {r["segment"]: (int(r["size"]), int(r["entered"]), int(r["exited"]))
            for r in csv_rows(stdout)}


class Bench:
    def __init__(self, args, segql: Segql, duck: Duck, data: Data):
        self.args, self.segql, self.duck, self.data = args, segql, duck, data
        self.states = States(data, segql, duck)
        self.out = data.work / "out"
        self.out.mkdir(parents=True, exist_ok=True)

    def duck_sql(self, orders: str = "orders", as_of: Optional[str] = None):
        from workloads import DuckSql

        return DuckSql(self.data.tables(orders), as_of or self.data.as_of)

    def output_side(self, cmd: list, path: Path, select: str, histogram=None) -> Side:
        """A side that writes a Parquet file, checked by checksums over it."""
        def prepare():
            path.unlink(missing_ok=True)
        return Side(cmd, lambda _: parquet_checksum(path, select, histogram), prepare)

    # Q1: the per-customer base of RFM, materialized as Parquet on both sides.
    def q1(self) -> list:
        d = self.data
        # purchases() is every purchase whenever placed (README), so the
        # as-of cut is written out, as on the DuckDB side.
        sql = ("SELECT customer_id, max(order_ts) AS last_order_ts, count(*) AS orders, "
               "sum(amount) AS spent FROM purchases() "
               f"WHERE order_ts < TIMESTAMP '{d.as_of} 00:00:00' GROUP BY customer_id")
        check = ("count(*), sum(customer_id), sum(orders), sum(spent), "
                 "sum(epoch_us(last_order_ts))")
        ours, theirs = self.out / "q1_segql.parquet", self.out / "q1_duckdb.parquet"
        segql = self.output_side(
            self.segql.cmd(d.config(), "--format", "parquet", "--output", str(ours), "-c", sql,
                           as_of=d.as_of), ours, check)
        duck = self.output_side(
            self.duck.cmd(write_sql(d, "q1.sql", self.duck_sql().q1(str(theirs)))), theirs, check)
        return [measure("Q1 RFM base per customer, to Parquet", segql, duck, self.args.runs,
                        "customers")]

    def q2(self) -> list:
        from workloads import Q2_CONDITION

        return [self.segment_count("Q2 bought Sofas in 365 d, never a Coffee table",
                                   Q2_CONDITION, self.duck_sql().q2(), "q2.sql")]

    def q3(self) -> list:
        from workloads import Q3_CONDITION

        return [self.segment_count("Q3 recency quintile >= 4, 5 cities, birthday in 30 d",
                                   Q3_CONDITION, self.duck_sql().q3(), "q3.sql")]

    def q5(self) -> list:
        from workloads import Q5_CONDITION

        return [self.segment_count("Q5 abandoned cart: cart add in 3 d, no purchase",
                                   Q5_CONDITION, self.duck_sql().q5(), "q5.sql")]

    def segment_count(self, work: str, condition: str, duck_sql: str, name: str) -> Row:
        d = self.data
        literal = condition.replace("'", "''")
        sql = (f"SELECT count(*) AS members, sum(customer_id) AS id_sum "
               f"FROM segment('{literal}')")
        segql = Side(self.segql.cmd(d.config(), "--format", "csv", "-c", sql, as_of=d.as_of),
                     first_row)
        duck = Side(self.duck.cmd(write_sql(d, name, duck_sql)), first_row)
        return measure(work, segql, duck, self.args.runs, "members")

    def q4(self) -> list:
        d = self.data
        check = ('count(*), count(r), sum(r), sum(f), sum(m), '
                 'sum(customer_id * (100 * r + 10 * f + m)), sum(CAST(code AS INTEGER)), '
                 'sum(recency_days), sum(frequency), sum(monetary)')
        ours, theirs = self.out / "q4_segql.parquet", self.out / "q4_duckdb.parquet"
        segql = self.output_side(
            self.segql.cmd(d.config("segql-q4.toml"), "rfm", "--out", str(ours), as_of=d.as_of),
            ours, check, '"group"')
        duck = self.output_side(
            self.duck.cmd(write_sql(d, "q4.sql", self.duck_sql().q4(str(theirs)))),
            theirs, check, '"group"')
        return [measure("Q4 fixed-threshold RFM scores, to Parquet", segql, duck,
                        self.args.runs, "customers")]

    # -- refreshes ---------------------------------------------------------

    def refresh_sides(self, state: str, as_of: str, orders: str = "orders",
                      config: str = "segql.toml") -> tuple:
        """Both engines' refresh as of `as_of`, each run starting from the
        snapshot `state`."""
        st = self.states
        segql = Side(self.segql.cmd(self.data.config(config), "--format", "csv", "refresh",
                                    as_of=as_of),
                     sizes, lambda: st.restore_segql(state))
        sql = write_sql(self.data, f"refresh_{orders}_{as_of}.sql",
                        self.duck_sql(orders, as_of).refresh())
        duck = Side(self.duck.cmd(sql, db=st.db), sizes, lambda: st.restore_duck(state))
        return segql, duck

    def refresh_untimed(self, as_of: str, orders: str = "orders",
                        config: str = "segql.toml") -> None:
        """One refresh on both working stores, checked, not timed."""
        segql, duck = self.refresh_sides("unused", as_of, orders, config)
        ours = segql.result(run_child(segql.cmd).stdout)
        theirs = duck.result(run_child(duck.cmd).stdout)
        ok, _ = compare(f"refresh as of {as_of}", ours, theirs)
        if not ok:
            raise BenchError(f"the refresh as of {as_of} differs (building a store state)")

    def r1(self) -> list:
        from workloads import SEGMENTS

        self.states.fresh()
        segql, duck = self.refresh_sides("fresh", self.data.as_of)
        row = measure(f"R1 first refresh of {len(SEGMENTS)} segments", segql, duck,
                      self.args.runs)
        self.states.save("after_r1")  # what the last run left
        return [row]

    def r2(self) -> list:
        st = self.states
        if "after_r1" not in st.built:
            st.fresh()
            st.restore_segql("fresh")
            st.restore_duck("fresh")
            self.refresh_untimed(self.data.as_of)
            st.save("after_r1")
        segql, duck = self.refresh_sides("after_r1", self.data.r2_as_of, "orders_r2",
                                         "segql-r2.toml")
        return [measure(f"R2 refresh {R2_DAYS_LATER} d later, +1% orders (part-1)", segql,
                        duck, self.args.runs)]

    def r3(self) -> list:
        n = self.args.history
        st = self.states
        # The history starts on the as-of day, after the data's last order,
        # so every order file is settled from the first refresh on: what a
        # later refresh costs then depends on the history alone (a history
        # ending on that day would settle the file, and build segql's order
        # state, on its last refresh).
        first = datetime.date.fromisoformat(self.data.as_of)
        days = [str(first + datetime.timedelta(days=k)) for k in range(n)]
        st.fresh()
        st.restore_segql("fresh")
        st.restore_duck("fresh")
        print(f"== R3: building a history of {n - 1} daily refreshes "
              f"({days[0]} .. {days[-2]})", file=sys.stderr)
        for k, day in enumerate(days[:-1]):
            self.refresh_untimed(day)
            if k == 0:
                st.save("history_1")
        st.save(f"history_{n - 1}")
        works = []
        for number in sorted({2, n}):
            before = f"history_{number - 1}"
            segql, duck = self.refresh_sides(before, days[number - 1])
            works.append((f"R3 refresh no. {number} of a daily history", segql, duck))
        # No. 2 and no. N alternate, run by run: their ratio is the measure.
        return measure_together(works, self.args.runs)


# -- report ----------------------------------------------------------------------


def machine() -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 ** 2:.1f} GiB memory"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}){memory}, {platform.system()} {platform.release()}"


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def net(samples: list, start: float) -> float:
    """Median wall time less the start cost; at tiny scales start-up noise
    can exceed the work, which shows as 0."""
    return max(0.0, statistics.median(s.wall for s in samples) - start)


def report(rows: list, start: dict, args, data: Data, versions: str) -> str:
    lines = [
        f"# segql vs DuckDB, scale {args.scale_label}",
        "",
        "| work | segql s | DuckDB s | ratio | segql peak RSS | DuckDB peak RSS | check |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if not row.segql:
            lines.append(f"| {row.work} | | | | | | {row.check} |")
            continue
        ours, theirs = net(row.segql, start["segql"].wall), net(row.duck, start["duck"].wall)
        ratio = f"{ours / theirs:.2f}" if ours > 0 and theirs > 0 else "n/a"
        lines.append(
            f"| {row.work} | {ours:.3f} | {theirs:.3f} | {ratio} | "
            f"{mib(max(s.rss_kib for s in row.segql))} | "
            f"{mib(max(s.rss_kib for s in row.duck))} | {row.check} |"
        )
    r3 = [r for r in rows if r.work.startswith("R3") and r.segql]
    if len(r3) == 2:
        growth = []
        for name, label in (("segql", "segql"), ("duck", "DuckDB")):
            a, b = (net(getattr(r, name), start[name].wall) for r in r3)
            growth.append(f"{label} {b / a:.2f}x" if a > 0 else f"{label} n/a")
        lines += ["", f"R3 cost against history (refresh no. {args.history} / no. 2): "
                      + ", ".join(growth) + "."]
    lines += [
        "",
        f"Times are the median of {args.runs} runs per engine (engines alternating), wall clock "
        "minus the engine's process start cost; ratio is segql / DuckDB (above 1: segql "
        "slower). Peak RSS is the largest ru_maxrss of the engine's process over the runs.",
        f"Process start (`SELECT 1`, median of {len(start['segql_all'])}): segql "
        f"{start['segql'].wall:.3f} s, {mib(start['segql'].rss_kib)} (no segment store yet: "
        "opening the store counts as refresh work); DuckDB (Python + duckdb) "
        f"{start['duck'].wall:.3f} s, {mib(start['duck'].rss_kib)} (its peak RSS includes "
        f"this). Every peak RSS includes the launcher's {mib(start['floor'].rss_kib)} "
        "(what `true` shows).",
        f"Data: `segql generate --scale {args.scale_label} --seed {SEED}` "
        f"({data.customers:,} customers, {data.orders:,} orders), orders as a folder of "
        f"Parquet files; as of {data.as_of} (R2 {data.r2_as_of}); "
        f"memory limit {args.memory_limit or 'none'}.",
        f"{versions}; {machine()}; {datetime.date.today()}.",
    ]
    return "\n".join(lines) + "\n"


def start_costs(segql: Segql, duck: Duck, data: Data) -> dict:
    """Each engine's cost of starting and answering `SELECT 1` (segql with
    the project's tables registered; DuckDB: Python plus `import duckdb`),
    median of 5, alternating."""
    samples = {"segql": [], "duck": []}
    for _ in range(5):
        samples["segql"].append(run_child(segql.cmd(data.config(), "-c", "SELECT 1")))
        samples["duck"].append(run_child(duck.cmd(sql="SELECT 1")))
    # What any child starts from: the launcher's own memory.
    result = {"floor": run_child(["true"])}
    for name, runs in samples.items():
        result[name] = Sample(statistics.median(s.wall for s in runs),
                              max(s.rss_kib for s in runs), "")
        result[name + "_all"] = runs
    return result


# -- main ------------------------------------------------------------------------


def find_segql(path: Optional[str]) -> Path:
    if path:
        binary = Path(path)
        if not binary.is_file():
            raise BenchError(f"--segql {path}: no such file")
        return binary.resolve()
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    binary = target / "release" / "segql"
    if not binary.is_file():
        print(f"== {binary} is missing; cargo build --release --bin segql", file=sys.stderr)
        try:
            subprocess.run(["cargo", "build", "--release", "--bin", "segql"], cwd=REPO,
                           check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise BenchError(f"could not build segql ({e}); pass --segql PATH") from e
    return binary


def parse_args():
    parser = argparse.ArgumentParser(
        description="segql against DuckDB on the same Parquet files, side by side.",
        epilog="Workloads: " + ", ".join(WORKLOADS) + " (see the top of run.py).")
    parser.add_argument("--scale", default="1", help="scale factor of segql generate (default 1)")
    parser.add_argument("--only", help="comma-separated workloads (default: all)")
    parser.add_argument("--runs", type=int, default=5, help="runs per engine (default 5)")
    parser.add_argument("--history", type=int, default=50,
                        help="R3: refreshes in the history, at least 2 (default 50)")
    parser.add_argument("--segql", help="segql binary (default: target/release/segql)")
    parser.add_argument("--memory-limit",
                        help="memory limit for both engines, such as 4G (segql --memory-limit, "
                             "DuckDB memory_limit)")
    parser.add_argument("--data", help="data folder (default: benches/compare/data/sf<SF>)")
    parser.add_argument("--out", help="Markdown file (default: benches/compare/results-sf<SF>.md)")
    args = parser.parse_args()
    args.scale_label = scale_label(args.scale)
    args.only = args.only.lower().split(",") if args.only else list(WORKLOADS)
    unknown = [w for w in args.only if w not in WORKLOADS]
    if unknown:
        parser.error(f"--only: unknown workload {', '.join(unknown)}; choose from "
                     f"{', '.join(WORKLOADS)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.history < 2:
        parser.error("--history must be at least 2")
    return args


def main() -> int:
    args = parse_args()  # before the venv, so --help and usage errors need none
    ensure_venv()
    sys.path.insert(0, str(HERE))
    import duckdb

    segql = Segql(find_segql(args.segql), args.memory_limit)
    duck = Duck(args.memory_limit)
    data_dir = Path(args.data).resolve() if args.data else HERE / "data" / f"sf{args.scale_label}"
    out = Path(args.out) if args.out else HERE / f"results-sf{args.scale_label}.md"

    data = prepare_data(segql, data_dir, args.scale_label)
    shutil.rmtree(data.work, ignore_errors=True)
    data.work.mkdir(parents=True)
    versions = f"{segql.version()} ({segql.binary}), DuckDB {duckdb.__version__}"
    print(f"== {versions}; as of {data.as_of}", file=sys.stderr)

    start = start_costs(segql, duck, data)
    bench = Bench(args, segql, duck, data)
    rows = []
    for name in WORKLOADS:
        if name not in args.only:
            continue
        print(f"== {name}", file=sys.stderr)
        try:
            rows.extend(getattr(bench, name)())
        except BenchError as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            rows.append(Row(name.upper(), check="FAILED (see stderr)", ok=False))

    text = report(rows, start, args, data, versions)
    out.write_text(text)
    print(text)
    print(f"== wrote {out}", file=sys.stderr)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
