#!/usr/bin/env bash
# Runs one benchmark scenario against a Herald started here, in the given mode, and cleans up after:
#   bash bench/run.sh MODE SCENARIO [herald-bench flags...]
#   MODE: embedded (SQLite, in-process queue) or services (PostgreSQL on 127.0.0.1:5432, RabbitMQ on
#         127.0.0.1:5672, with WORKERS herald-worker processes, 1 by default)
#   PROFILE=release (default) or debug; herald-bench exits non-zero if any delivery is lost or badly signed.
#   HERALD_BIN_DIR=DIR runs the herald and herald-worker binaries found there instead (e.g. an older
#   build, to compare), still driven by this tree's herald-bench.
# Examples (docs/benchmarks.md has the full set):
#   bash bench/run.sh embedded single
#   bash bench/run.sh services fanout --json fanout.json
#   bash bench/run.sh services paced                 # 500 events/s for 20 s, ≤ 32 in flight, CPU per event
#   bash bench/run.sh services paced --rate 1000     # of Herald, PostgreSQL, RabbitMQ, all but the bench
#   PROFILE=debug bash bench/run.sh embedded single --events 300 --skip-ceiling   # CI's smoke run
set -euo pipefail
mode=${1:?usage: bench/run.sh embedded|services SCENARIO [herald-bench flags...]}
scenario=${2:?usage: bench/run.sh embedded|services SCENARIO [herald-bench flags...]}
shift 2
profile=${PROFILE:-release}
workers=${WORKERS:-1}
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
target=${CARGO_TARGET_DIR:-target}
if [ "$profile" = release ]; then
  cargo build -q --release -p herald -p herald-worker -p herald-bench
else
  cargo build -q -p herald -p herald-worker -p herald-bench
fi
bin="$(cd "$target/$profile" && pwd)"
abs_bin="${HERALD_BIN_DIR:-$bin}"

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
database=""
prefix="bench$$"
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$database" ]; then psql -q -U postgres -h 127.0.0.1 -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true; fi
  if [ "$mode" = services ]; then
    delete_rabbitmq_topology "$prefix"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

export HERALD__SERVER__BIND="127.0.0.1:$port"
export HERALD__DELIVERY__ALLOW_PRIVATE_TARGETS=true
export HERALD__LOG__LEVEL=warn
# Failures injected by the retry scenario are retried quickly.
export HERALD__DELIVERY__RETRY_SCHEDULE=${HERALD__DELIVERY__RETRY_SCHEDULE:-100ms,200ms,400ms,800ms}
export HERALD__DELIVERY__SCHEDULER_INTERVAL=${HERALD__DELIVERY__SCHEDULER_INTERVAL:-100ms}
export HERALD_CONFIG_DIR="$work/no-config"
mkdir -p "$HERALD_CONFIG_DIR"
case "$mode" in
  embedded) ;;
  services)
    database="herald_bench_$$"
    psql -q -U postgres -h 127.0.0.1 -c "CREATE DATABASE $database"
    # Loopback: no TLS (Debian's PostgreSQL offers it, and sqlx would use it by default).
    export HERALD__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$database?sslmode=disable"
    export HERALD__QUEUE__URL="amqp://guest:guest@127.0.0.1:5672/%2f"
    export HERALD__QUEUE__PREFIX="$prefix"
    HERALD__SECRETS__KEYS=$("$abs_bin/herald" gen-key)
    export HERALD__SECRETS__KEYS
    ;;
  *) echo "unknown mode '$mode' (embedded or services)" >&2; exit 2 ;;
esac

(cd "$work" && exec "$abs_bin/herald" serve > serve.out 2> serve.err) &
pids+=($!)
for _ in $(seq 100); do
  if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then break; fi
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "Herald did not become ready:" >&2; cat "$work/serve.err" >&2; exit 1; }
key=$(sed -n 2p "$work/serve.out")
if [ "$mode" = services ]; then
  for n in $(seq "$workers"); do
    (cd "$work" && exec "$abs_bin/herald-worker" 2> "worker$n.err") &
    pids+=($!)
  done
fi
label="$mode"
[ "$mode" = services ] && label="postgres+rabbitmq, $workers worker(s)"
"$bin/herald-bench" --url "http://127.0.0.1:$port" --key "$key" --scenario "$scenario" --mode-label "$label" \
  --pid "${pids[@]}" "$@"
