"""Runs SQL in DuckDB as its own process, for benches/compare/run.py.

    duck.py [--db FILE] [--memory-limit SIZE] (-c SQL | -f FILE)

Executes every statement of the text in one connection (in memory, or the
database file --db) and prints the last statement's result as CSV with a
header. run.py starts one of these per timed run, so the peak RSS and the
wall time it measures belong to this one DuckDB job; it also times
`-c "SELECT 1"` as DuckDB's start cost (Python plus `import duckdb`).
"""

import argparse
import csv
import sys

import duckdb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=":memory:", help="database file (default: in memory)")
    parser.add_argument("--memory-limit", help="DuckDB memory_limit, such as 4GB")
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("-c", dest="sql", help="SQL text")
    text.add_argument("-f", dest="file", help="file of SQL text")
    args = parser.parse_args()

    sql = args.sql if args.sql is not None else open(args.file, encoding="utf-8").read()
    con = duckdb.connect(args.db)
    if args.memory_limit:
        con.execute(f"SET memory_limit = '{args.memory_limit}'")
    # One call runs every statement; the cursor holds the last one's result.
    result = con.execute(sql)
    out = csv.writer(sys.stdout, lineterminator="\n")
    if result.description:
        out.writerow(d[0] for d in result.description)
        out.writerows(result.fetchall())
    con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
