#!/usr/bin/env bash
# Live delivery latency while a large recovery runs (issue 13: "a recovery of 100,000 events does not
# starve live traffic, live p99 within 2x while it runs"), in production mode (PostgreSQL + RabbitMQ,
# `herald serve` + one `herald-worker`, default settings):
#   bash bench/recovery.sh [EVENTS] [RATE] [SECONDS]      (defaults: 100000 events, 200 events/s, 60 s)
# 1. EVENTS `comment.created` events are written straight into PostgreSQL, an hour old and published,
#    that a webhook (to a counting receiver on 127.0.0.1) never received: as if emitted while it was
#    disabled.
# 2. herald-bench's steady scenario sends RATE item.created events/s for SECONDS to its own endpoint
#    (another webhook): latency accepted -> received, "before".
# 3. POST /webhooks/{id}/recover {since: 2 h ago} for the first webhook, then the same steady load again
#    while the recovery runs: "during". Prints both, their ratio, and how far the recovery got.
# herald-bench warns that the organization has a webhook it did not create: the recovered one, which
# is subscribed to comment.created only, so it receives none of the bench's item.created events.
# PROFILE=release (default) or debug; HERALD_BIN_DIR=DIR runs the herald, herald-worker and
# herald-bench binaries found there instead (an older build, to compare in one session) and builds
# nothing. Needs psql, python3, curl. Figures: docs/benchmarks.md.
set -euo pipefail
events=${1:-100000}
rate=${2:-200}
seconds=${3:-60}
profile=${PROFILE:-release}
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
target=${CARGO_TARGET_DIR:-target}
if [ -n "${HERALD_BIN_DIR:-}" ]; then
  bin="$(cd "$HERALD_BIN_DIR" && pwd)"
else
  if [ "$profile" = release ]; then
    cargo build -q --release -p herald -p herald-worker -p herald-bench
  else
    cargo build -q -p herald -p herald-worker -p herald-bench
  fi
  bin="$(cd "$target/$profile" && pwd)"
fi

work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
receiver_port=$(free_port)
pids=()
database="herald_recovery_bench_$$"
prefix="benchrecovery$$"
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql -q -U postgres -h 127.0.0.1 -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
  delete_rabbitmq_topology "$prefix"
  rm -rf "$work"
}
trap cleanup EXIT

# The recovered webhook's receiver: answers 200 at once over keep-alive and counts requests.
cat > "$work/receiver.py" <<'EOF'
import asyncio, sys
count = 0
async def handle(reader, writer):
    global count
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            count += 1
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def report(path):
    while True:
        with open(path, "w") as out:
            out.write(str(count))
        await asyncio.sleep(0.5)
async def main(port, path):
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    asyncio.get_running_loop().create_task(report(path))
    async with server:
        await server.serve_forever()
asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
EOF
python3 "$work/receiver.py" "$receiver_port" "$work/received" &
pids+=($!)

psql -q -U postgres -h 127.0.0.1 -c "CREATE DATABASE $database"
export HERALD__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$database?sslmode=disable"
export HERALD__QUEUE__URL="amqp://guest:guest@127.0.0.1:5672/%2f"
export HERALD__QUEUE__PREFIX="$prefix"
export HERALD__SERVER__BIND="127.0.0.1:$port"
export HERALD__DELIVERY__ALLOW_PRIVATE_TARGETS=true
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
api() { curl -sf -H "Authorization: Bearer $key" -H 'content-type: application/json' "$@"; }
base="http://127.0.0.1:$port/api/v1"

webhook=$(api -X POST "$base/webhooks" -d "{\"url\":\"http://127.0.0.1:$receiver_port/hook\",\"events\":[\"comment.created\"]}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
organization=$(psql -qtA -U postgres -h 127.0.0.1 -d "$database" -c "SELECT organization_id FROM webhooks WHERE id = '$webhook'")

echo "seeding $events comment.created events an hour old, never delivered to webhook $webhook"
psql -q -U postgres -h 127.0.0.1 -d "$database" <<SQL
INSERT INTO events (id, organization_id, event_type, payload, created_at, published_at)
SELECT id::uuid, '$organization', 'comment.created',
       '{"id":"' || id || '","event":"comment.created","timestamp":"' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
         || '","organization_id":"$organization","data":{"n":' || n || '}}',
       at, at
FROM (
  SELECT n, at,
         substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || substr(r, 1, 3) || '-8' || substr(r, 4, 3) || '-' || substr(r, 7, 12) AS id
  FROM (
    SELECT n, at, lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') AS h, md5(n::text) AS r
    FROM (SELECT n, now() - interval '1 hour' + n * interval '1 millisecond' AS at FROM generate_series(1, $events) AS n) AS times
  ) AS parts
) AS rows;
ANALYZE events;
SQL

steady() { # LABEL
  "$bin/herald-bench" --url "http://127.0.0.1:$port" --key "$key" --scenario steady --rate "$rate" --duration "$seconds" \
    --skip-ceiling --mode-label "postgres+rabbitmq, 1 worker, $1" --pid "${pids[@]:1}" --json "$work/$1.json" | grep -E "summary|latency"
}
p99() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['latency_ms']['p99'])" "$work/$1.json"; }
p50() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['latency_ms']['p50'])" "$work/$1.json"; }

echo "== live traffic alone: $rate events/s for $seconds s"
steady before
since=$(date -u -d '2 hours ago' +%Y-%m-%dT%H:%M:%SZ)
location=$(api -X POST "$base/webhooks/$webhook/recover" -d "{\"since\":\"$since\"}" -D - -o /dev/null | sed -n 's/^[Ll]ocation: *\([^\r]*\).*/\1/p')
echo "== recovery started ($location); the same live traffic while it runs"
started=$(date +%s.%N)
steady during
progress=$(api "http://127.0.0.1:$port$location")
elapsed=$(python3 -c "import time,sys; print(round(time.time() - float(sys.argv[1]), 1))" "$started")
received=$(cat "$work/received")
echo "recovery after ${elapsed} s: $progress"
echo "recovered webhook's receiver got $received requests ($(python3 -c "print(round($received / $elapsed))") /s)"
python3 - "$(p50 before)" "$(p99 before)" "$(p50 during)" "$(p99 during)" <<'EOF'
import sys
b50, b99, d50, d99 = map(float, sys.argv[1:])
print(f"live latency p50/p99 before {b50:.1f}/{b99:.1f} ms, during the recovery {d50:.1f}/{d99:.1f} ms: p99 ratio {d99 / b99:.2f}x")
EOF
uptime
