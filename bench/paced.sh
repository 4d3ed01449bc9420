#!/usr/bin/env bash
# Issue 15's paced series: `herald-bench --scenario paced` (500 events/s for 20 s to 1 endpoint, at most
# 32 sends in flight) in both modes, alternating, RUNS times each, then once at 1,000/s in production;
# one Markdown table row per run with the load average (`uptime`) at its start:
#   bash bench/paced.sh                      # RUNS=2 by default; HERALD_BIN_DIR=DIR for another build
#   RATES="500 1000" MODES="services" bash bench/paced.sh
#   BENCH_ARGS="--skip-ceiling" bash bench/paced.sh   # extra herald-bench flags for every run
# The JSON reports are kept in ${OUT:-/tmp/herald-paced}.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-2}
modes=${MODES:-embedded services}
out=${OUT:-/tmp/herald-paced}
mkdir -p "$out"
cargo build -q --release -p herald -p herald-worker -p herald-bench

row() { # MODE RATE N
  local json="$out/$1-$2-$3.json" load
  load=$(uptime | sed 's/.*load average: //')
  # shellcheck disable=SC2086 # BENCH_ARGS are extra herald-bench flags, split on purpose
  bash bench/run.sh "$1" paced --rate "$2" --json "$json" ${BENCH_ARGS:-} >"$out/$1-$2-$3.txt" 2>&1 ||
    echo "run $1 $2/s #$3 failed: see $out/$1-$2-$3.txt" >&2
  python3 - "$json" "$load" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
cpu = {g["name"]: g["cpu_ms_per_event"] for g in r["cpu_per_event"]["groups"]}
ms = lambda v: "-" if v is None else f"{v:.2f}"
lat = r["latency_ms"] or {}
ceiling = r["ceiling_latency_ms"]
ceiling = f'{ceiling["p50"]:.1f} / {ceiling["p99"]:.1f}' if ceiling else "-"
print(f'| {r["mode"]} | {r["rate"]:.0f}/s | {lat.get("p50", 0):.1f} | {lat.get("p99", 0):.1f} '
      f'| {r["deliveries_per_sec"]:,.0f} | {ms(cpu.get("herald"))} | {ms(cpu.get("postgres"))} '
      f'| {ms(cpu.get("rabbitmq"))} | {ms(r["cpu_per_event"]["everything_but_bench_ms_per_event"])} '
      f'| {r["late_sends"]} | {r["lost"]} | {ceiling} '
      f'| {sys.argv[2]} |')
EOF
}

echo "| mode | rate | p50 ms | p99 ms | deliveries/s | herald ms/event | postgres | rabbitmq | all but bench | late sends | lost | raw ceiling p50 / p99 ms | uptime load |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for rate in ${RATES:-500}; do
  for n in $(seq "$runs"); do
    for mode in $modes; do row "$mode" "$rate" "$n"; done
  done
done
if [ -z "${RATES:-}" ]; then row services 1000 1; fi
