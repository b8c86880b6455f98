#!/usr/bin/env bash
# In-process against a loopback Ballista cluster, on the same files.
#
#   bash benches/cluster.sh DATA_DIR [AS_OF]
#
# DATA_DIR is a folder written by `segql generate --scale SF --out DIR`
# (its segql.toml names the tables). The script starts a scheduler and two
# executors of one task each from the release binary (SEGQL_BIN, default
# target/release/segql under CARGO_TARGET_DIR or ./target), then runs each
# query three times in-process and three times with --cluster, and three
# daily refreshes of three segments into a fresh store per mode, printing
# wall times (seconds, process start included) and each side's result.
# The nodes are stopped at the end. Ports: SEGQL_BENCH_PORT (default 50350)
# and the four after it, and +11 / +12.
set -euo pipefail

data=$(cd "${1:?usage: bash benches/cluster.sh DATA_DIR [AS_OF]}" && pwd)
as_of=${2:-2025-01-01}
bin=${SEGQL_BIN:-${CARGO_TARGET_DIR:-$(pwd)/target}/release/segql}
port=${SEGQL_BENCH_PORT:-50350}
[ -x "$bin" ] || { echo "no segql binary at $bin: run cargo build --release, or set SEGQL_BIN" >&2; exit 2; }
[ -f "$data/segql.toml" ] || { echo "$data has no segql.toml: write it with segql generate --scale SF --out $data" >&2; exit 2; }

work=$(mktemp -d)
nodes=()
stop() { kill "${nodes[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap stop EXIT

"$bin" cluster scheduler --bind "127.0.0.1:$port" 2> "$work/scheduler.log" &
nodes+=($!)
sleep 1
for n in 1 11; do
  "$bin" cluster executor --scheduler "127.0.0.1:$port" --bind "127.0.0.1:$((port + n))" \
    --concurrent-tasks 1 --work-dir "$work/executor$n" 2> "$work/executor$n.log" &
  nodes+=($!)
done
sleep 3
cluster=(--cluster "df://127.0.0.1:$port")

# Seconds `$@` takes; its output in $work/out. A failure stops the script.
timed() {
  local start end
  start=$(date +%s.%N)
  if ! "$@" > "$work/out" 2> "$work/err"; then
    echo "failed: $*" >&2
    cat "$work/err" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

queries=(
  "SELECT count(*) AS customers, sum(n) AS orders, sum(s) AS spent, max(m) AS last FROM (SELECT customer_id, count(*) AS n, sum(amount) AS s, max(order_ts) AS m FROM orders GROUP BY customer_id)"
  "SELECT count(*) AS members FROM segment('rfm_group = ''Champions'' AND bought(category: ''Sofas'', date: -365d..today)')"
)
for query in "${queries[@]}"; do
  echo "## $query"
  for mode in in-process cluster; do
    args=()
    [ "$mode" = cluster ] && args=("${cluster[@]}")
    times=()
    for _ in 1 2 3; do
      times+=("$(cd "$data" && timed "$bin" "${args[@]}" --as-of "$as_of" --format csv -c "$query")")
    done
    echo "$mode: ${times[*]} s; result: $(tail -n +2 "$work/out" | tr '\n' ' ')"
  done
done

echo "## three refreshes of three segments into a fresh store"
for mode in in-process cluster; do
  args=()
  [ "$mode" = cluster ] && args=("${cluster[@]}")
  project="$work/project-$mode"
  mkdir -p "$project"
  {
    sed -n '/^\[tables\]/,/^$/p' "$data/segql.toml" | sed "s|= \"|= \"$data/|"
    printf '\n[purchases]\nexclude_statuses = ["cancelled"]\n[store]\nfolder = "%s/store"\n' "$project"
  } > "$project/segql.toml"
  (
    cd "$project"
    "$bin" segment create champs "rfm_group = 'Champions'" > /dev/null
    "$bin" segment create lapsed "last_order_date < -90d AND amount_spent > 1000" > /dev/null
    "$bin" segment create sofas "bought(category: 'Sofas', date: -365d..today)" > /dev/null
    times=()
    for day in 2024-11-01 2024-12-01 2025-01-01; do
      times+=("$(timed "$bin" "${args[@]}" --as-of "$day" refresh)")
    done
    "$bin" --format csv -c "SELECT segment, count(*) AS stays, count(exited_at) AS closed \
      FROM segment_membership GROUP BY segment ORDER BY segment" > "$work/out"
    echo "$mode: ${times[*]} s; stays: $(tail -n +2 "$work/out" | tr '\n' ' ')"
  )
done
