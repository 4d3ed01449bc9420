#!/usr/bin/env bash
# Ingest latency during a retention pass (issue 13), on PostgreSQL + RabbitMQ:
#   bash bench/retention.sh [ROWS]        (ROWS expired events, each with a delivery and an attempt;
#                                          1000000 by default)
# Starts `herald serve` (retention stage off: the pass is started by hand, to time it) and one
# herald-worker on a database of its own, seeds ROWS events 60 days old, each with a succeeded delivery
# and one attempt with a response body (bulk SQL, generate_series), then measures the ingest latency
# (POST /events to 202) with herald-bench's steady scenario at RATE events/s (200 by default):
#   before   DURATION_S seconds (60), no pass running;
#   during   DURING_S seconds (120), while `herald retention run` removes everything seeded
#            (default windows and batches: 1000 rows per batch, 50 ms between batches);
#   after    DURATION_S seconds, once the pass is done.
# Prints each phase's ingest p50/p99, the pass duration and the machine's load average, and the worst
# p99 ratio of "during" to the other two. Release build; PostgreSQL on 127.0.0.1:5432 (user postgres,
# trust), RabbitMQ on 127.0.0.1:5672 (guest). docs/benchmarks.md, "Retention", has the figures.
set -euo pipefail
rows=${1:-1000000}
rate=${RATE:-200}
duration=${DURATION_S:-60}
during=${DURING_S:-120}
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
target=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p herald -p herald-worker -p herald-bench
bin="$(cd "$target/release" && pwd)"

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
database="herald_bench_retention_$$"
prefix="benchret$$"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql -q -U postgres -h 127.0.0.1 -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
  delete_rabbitmq_topology "$prefix"
  rm -rf "$work"
}
trap cleanup EXIT

psql -q -U postgres -h 127.0.0.1 -c "CREATE DATABASE $database"
export HERALD__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$database?sslmode=disable"
export HERALD__QUEUE__URL="amqp://guest:guest@127.0.0.1:5672/%2f"
export HERALD__QUEUE__PREFIX="$prefix"
export HERALD__SERVER__BIND="127.0.0.1:$port"
export HERALD__ADMIN__BIND="127.0.0.1:0"
export HERALD__DELIVERY__ALLOW_PRIVATE_TARGETS=true
export HERALD__RETENTION__ENABLED=false
export HERALD__LOG__LEVEL=warn
export HERALD_CONFIG_DIR="$work/no-config"
mkdir -p "$HERALD_CONFIG_DIR"
HERALD__SECRETS__KEYS=$("$bin/herald" gen-key)
export HERALD__SECRETS__KEYS

(cd "$work" && exec "$bin/herald" serve > serve.out 2> serve.err) &
pids+=($!)
for _ in $(seq 100); do
  if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then break; fi
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "Herald did not become ready:" >&2; cat "$work/serve.err" >&2; exit 1; }
key=$(sed -n 2p "$work/serve.out")
(cd "$work" && exec "$bin/herald-worker" 2> worker.err) &
pids+=($!)

echo "seeding $rows expired events, deliveries and attempts ..."
seed_started=$(date +%s)
psql -q -v ON_ERROR_STOP=1 -U postgres -h 127.0.0.1 -d "$database" -v rows="$rows" <<'SQL'
-- An organization of its own (so herald-bench finds only its webhooks in the bootstrap one) with an
-- inactive webhook holding the seeded deliveries (no live event reaches it; its secret is never
-- decrypted).
INSERT INTO organizations (id, name, is_active, created_at)
VALUES ('00000000-0000-4000-8000-00000000a5c0', 'retention archive', TRUE, now());
INSERT INTO webhooks (id, organization_id, url, events, secret_key_id, secret_ciphertext, is_active, created_at, updated_at)
VALUES ('00000000-0000-4000-8000-00000000a5c1', '00000000-0000-4000-8000-00000000a5c0', 'http://127.0.0.1:9/archive',
        '*', 'none', '\x00', FALSE, now(), now());
CREATE TEMP TABLE seed AS
SELECT g, now() - interval '60 days' + g * interval '1 ms' AS at, '00000000-0000-4000-8000-00000000a5c0'::uuid AS org
FROM generate_series(1, :rows) g;
INSERT INTO events (id, organization_id, event_type, payload, created_at, published_at)
SELECT md5('e' || g)::uuid, org, 'item.created', '{"padding":"' || repeat('x', 300) || '"}', at, at FROM seed;
INSERT INTO deliveries (id, event_id, webhook_id, organization_id, status, attempts, created_at, updated_at, completed_at)
SELECT md5('d' || g)::uuid, md5('e' || g)::uuid, '00000000-0000-4000-8000-00000000a5c1', org, 'succeeded', 1, at,
       at + interval '5 ms', at + interval '5 ms' FROM seed;
INSERT INTO delivery_attempts (id, delivery_id, attempt_number, started_at, duration_ms, status_code, response_body)
SELECT md5('a' || g)::uuid, md5('d' || g)::uuid, 1, at, 5, 200, repeat('r', 200) FROM seed;
VACUUM ANALYZE events, deliveries, delivery_attempts;
SQL
echo "seeded in $(( $(date +%s) - seed_started )) s"

load() { # PHASE SECONDS
  echo "phase $1: ${rate} events/s for $2 s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  cut -d' ' -f1 /proc/loadavg > "$work/$1.load"
  "$bin/herald-bench" --url "http://127.0.0.1:$port" --key "$key" --scenario steady --rate "$rate" --duration "$2" \
    --skip-ceiling --mode-label "postgres+rabbitmq, 1 worker, retention $1" --pid "${pids[@]}" \
    --json "$work/$1.json" > "$work/$1.txt"
  grep -E "ingest|latency|lost" "$work/$1.txt" | sed 's/^/  /'
}

load before "$duration"
"$bin/herald" retention run --dry-run | sed 's/^/  /'
pass_started=$(date +%s.%N)
("$bin/herald" retention run > "$work/pass.out" 2> "$work/pass.err"; echo $? > "$work/pass.rc"; date +%s.%N > "$work/pass.end") &
pass=$!
sleep 5
load during "$during"
if [ -e "$work/pass.end" ]; then echo "WARNING: the pass ended before the 'during' load did; lower DURING_S" >&2; fi
wait "$pass"
[ "$(cat "$work/pass.rc")" = 0 ] || { echo "the retention pass failed:" >&2; cat "$work/pass.err" >&2; exit 1; }
pass_s=$(python3 -c "print(round($(cat "$work/pass.end") - $pass_started, 1))")
tail -5 "$work/pass.out" | sed 's/^/  /'
echo "pass took $pass_s s"
load after "$duration"

python3 - "$work" "$pass_s" "$rows" <<'PY'
import json, sys
work, pass_s, rows = sys.argv[1], sys.argv[2], sys.argv[3]
p = {}
for phase in ("before", "during", "after"):
    report = json.load(open(f"{work}/{phase}.json"))
    lat = report["ingest_latency_ms"]
    load = open(f"{work}/{phase}.load").read().strip()
    p[phase] = lat["p99"]
    print(f"{phase:<7} ingest p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms  "
          f"accepted {report['accepted']}  lost {report['lost']}  load average {load}")
worst = max(p["during"] / p["before"], p["during"] / p["after"])
print(f"retention pass over {rows} expired rows per kind: {pass_s} s; worst p99 ratio during/before|after {worst:.2f}x")
PY
