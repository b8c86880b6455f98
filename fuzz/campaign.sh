#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after another,
# on a corpus grown from seeds/, and prints a Markdown table of executions,
# coverage and findings. Crashing inputs land in artifacts/<target>/.
#   ./campaign.sh [SECONDS]      TARGETS="lang_text group_map" ./campaign.sh 30
# Needs cargo-fuzz (cargo install cargo-fuzz).
set -uo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
targets=${TARGETS:-"lang_text lang_structured plan_text statements project_file group_map"}
if ! cargo fuzz build --dev -s none; then
  echo "error: the fuzz targets do not build" >&2
  exit 1
fi
# The built targets are run directly, so that editing the sources while a
# campaign runs does not rebuild (or break) it between targets.
bin_dir="${CARGO_TARGET_DIR:-target}/$(rustc -vV | sed -n 's/^host: //p')/debug"

mkdir -p logs
failed=0
echo "| target | executions | seconds | coverage (edges) | features | corpus | findings |"
echo "|---|---:|---:|---:|---:|---:|---|"
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  if [ -d "seeds/$t" ]; then cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null; fi
  # The example segments and queries of the repository seed the text targets.
  case "$t" in
    lang_text | plan_text) cp -n ../queries/segments/*.seg "corpus/$t/" 2>/dev/null ;;
    statements) cp -n ../queries/*.sql "corpus/$t/" 2>/dev/null ;;
  esac
  log="logs/$t.log"
  started=$(date +%s)
  "$bin_dir/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" -timeout=20 \
    -rss_limit_mb=4096 -print_final_stats=1 "corpus/$t" >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - started ))
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  corpus=$(find "corpus/$t" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    found="none"
  else
    found="exit $rc, see $log and artifacts/$t"
    failed=1
  fi
  echo "| $t | ${runs:-?} | $took | ${cov:-?} | ${ft:-?} | $corpus | $found |"
done
exit $failed
