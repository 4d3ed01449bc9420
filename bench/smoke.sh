#!/usr/bin/env bash
# A short benchmark run that checks correctness, not speed: Herald is started in the given mode, the
# `single` scenario sends a few hundred events, and herald-bench exits non-zero if any delivery is lost or
# badly signed. CI runs it in both modes; a developer can too:
#   bash bench/smoke.sh embedded
#   bash bench/smoke.sh services   # PostgreSQL on 127.0.0.1:5432 and RabbitMQ on 127.0.0.1:5672
set -euo pipefail
mode=${1:?usage: bench/smoke.sh embedded|services}
events=${EVENTS:-300}
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build -q -p herald -p herald-worker -p herald-bench
bin="$(cd "$target/debug" && pwd)"
abs_bin="$bin"

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
database=""
prefix="smoke$$"
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$database" ]; then psql -q -U postgres -h 127.0.0.1 -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true; fi
  if [ "$mode" = services ]; then
    for queue in fanout deliveries deliveries.dead; do rabbitmqctl -q delete_queue "$prefix.$queue" >/dev/null 2>&1 || true; done
    for exchange in events deliveries deliveries.dead; do rabbitmqctl -q delete_exchange "$prefix.$exchange" >/dev/null 2>&1 || true; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

export HERALD__SERVER__BIND="127.0.0.1:$port"
export HERALD__DELIVERY__ALLOW_PRIVATE_TARGETS=true
export HERALD__LOG__LEVEL=warn
export HERALD_CONFIG_DIR="$work/no-config"
case "$mode" in
  embedded) ;;
  services)
    database="herald_smoke_$$"
    psql -q -U postgres -h 127.0.0.1 -c "CREATE DATABASE $database"
    export HERALD__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$database"
    export HERALD__QUEUE__URL="amqp://guest:guest@127.0.0.1:5672/%2f"
    export HERALD__QUEUE__PREFIX="$prefix"
    HERALD__SECRETS__KEYS=$("$bin/herald" gen-key)
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
  (cd "$work" && exec "$abs_bin/herald-worker" 2> worker.err) &
  pids+=($!)
fi
"$bin/herald-bench" --url "http://127.0.0.1:$port" --key "$key" --scenario single --events "$events" \
  --concurrency 16 --skip-ceiling --deadline 120 --mode-label "$mode"
