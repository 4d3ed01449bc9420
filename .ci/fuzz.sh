#!/usr/bin/env bash
# The OpenAPI contract and hostile input, checked from outside, in both modes. docs/openapi.json must be
# valid OpenAPI 3.1 (openapi-spec-validator); then a fresh `herald serve` (debug build) is fuzzed in each
# mode, twice:
#   1. schemathesis against the document it serves: no server error, no status it does not document, no
#      body or header that violates its schema; it must refuse schema-violating input and requests
#      without credentials, answer 405 to undocumented methods, and not find a deleted resource. Every
#      check runs except positive_data_acceptance: some schema-valid requests are refused on purpose by
#      rules no schema states (an SSRF-refused URL, an expires_at in the past, an existing email).
#   2. .ci/hostile.py: bad bytes on every operation of the served document (NUL and control characters,
#      lone surrogates, invalid UTF-8 bodies and headers, 10,000-deep JSON, 300 KiB bodies, huge and
#      negative limits, extreme dates): no 5xx, and every request answered.
# Either pass fails on any ERROR in Herald's log.
#
# Embedded mode (SQLite, in-process queue) runs in a network namespace of its own with only the loopback
# interface, so nothing it makes Herald deliver leaves the machine. Production mode (PostgreSQL +
# RabbitMQ) cannot run there (the namespace cannot reach the machine's services), so it runs outside, on a
# fresh database and a fresh RabbitMQ virtual host (both deleted afterwards), with `herald-worker --role
# fanout` only: deliveries are created but no deliverer runs, so no request leaves the machine whatever
# URLs the fuzzing invents; Herald's default SSRF policy is on as well. It uses HERALD_TEST_DATABASE_URL
# and HERALD_TEST_AMQP_URL (default: the local PostgreSQL and RabbitMQ, as in .ci/run).
#
# Usage: bash .ci/fuzz.sh [MAX_EXAMPLES] [MODES]   (default 75 schemathesis examples per operation and
# "embedded production"; about 2 min 10 s of CPU for both modes, which is the wall time on an idle
# 2-core machine; hostile.py sends some 1,400 requests per mode in under 10 s. The seed is fixed, so a
# failure reproduces.)
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES=${1:-75}
MODES=${2:-embedded production}
SEED=20261201
here=$(pwd)

# --- one pass: a running Herald at $base with admin key $key, log files in $logs -----------------------

# Resources for the operations on one id, so they reach their handlers instead of answering 404: a
# webhook (subscribed to everything, its endpoint unreachable or never called), a second one for DELETE,
# an event and its delivery, and a second API key for DELETE (never the key the run uses).
api() { # METHOD PATH [BODY]: prints the response's `id` (the first item's, for a list)
  local body
  body=$(curl -sS --fail-with-body -X "$1" "$base/api/v1$2" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' ${3:+--data "$3"}) || {
    echo "error: $1 $2 failed: $body" >&2
    return 1
  }
  python3 -c 'import json, sys; body = json.load(sys.stdin); print(next((v[0] for v in body.values() if isinstance(v, list) and v and isinstance(v[0], dict)), body)["id"])' <<<"$body"
}

fuzz_pass() { # MODE: schemathesis, then hostile.py, then the log check
  local mode=$1 status=0 webhook doomed_webhook event delivery="" doomed_key started
  started=$(date +%s)
  webhook=$(api POST /webhooks '{"url": "https://receiver.example/hook", "events": ["*"]}') || return 1
  doomed_webhook=$(api POST /webhooks '{"url": "https://receiver.example/doomed", "events": ["*"]}') || return 1
  event=$(api POST /events '{"event": "item.created", "data": {"id": 1}}') || return 1
  for _ in $(seq 50); do
    delivery=$(api GET "/webhooks/$webhook/deliveries" 2>/dev/null || true)
    [ -n "$delivery" ] && break
    sleep 0.2
  done
  if [ -z "$delivery" ]; then
    echo "error: [$mode] the event got no delivery in 10 s" >&2
    return 1
  fi
  doomed_key=$(api POST /api-keys '{"name": "revoked by the fuzzing", "purpose": "custom"}') || return 1
  cat >"$work/schemathesis.toml" <<TOML
[[operations]]
include-path-regex = "^/api/v1/webhooks/"
exclude-method = "DELETE"
parameters = { "path.id" = "$webhook" }

[[operations]]
include-path = "/api/v1/webhooks/{id}"
include-method = "DELETE"
parameters = { "path.id" = "$doomed_webhook" }

[[operations]]
include-path-regex = "^/api/v1/deliveries/"
parameters = { "path.id" = "$delivery" }

[[operations]]
include-path = "/api/v1/events/{id}"
parameters = { "path.id" = "$event" }

[[operations]]
include-path = "/api/v1/api-keys/{id}"
parameters = { "path.id" = "$doomed_key" }
TOML

  echo "[$mode] hostile.py: bad bytes on every operation"
  python3 "$here/.ci/hostile.py" "$base" "$key" --webhook "$webhook" --delivery "$delivery" \
    --event "$event" --doomed-webhook "$doomed_webhook" --doomed-key "$doomed_key" || status=1

  echo "[$mode] schemathesis: $MAX_EXAMPLES examples per operation, seed $SEED"
  # schemathesis keeps a cache in its working folder: not in the clone.
  (cd "$work" && python3 -c 'from schemathesis.cli import schemathesis; schemathesis(prog_name="st")' \
    --config-file "$work/schemathesis.toml" run \
    "$base/api/v1/openapi.json" \
    -H "Authorization: Bearer $key" \
    --checks all --exclude-checks positive_data_acceptance \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
    --generation-database none --workers 1 --request-timeout 10 \
    --no-color --output-truncate false) || status=1

  if grep -q 'ERROR' "$work"/*.err; then
    echo "[$mode] herald logged errors during the fuzzing:" >&2
    grep -h 'ERROR' "$work"/*.err | head -20 >&2
    status=1
  fi
  echo "[$mode] done in $(($(date +%s) - started)) s: $([ "$status" = 0 ] && echo passed || echo FAILED)"
  return "$status"
}

wait_ready() { # PID: until the admin key is printed and the API answers
  for _ in $(seq 60); do
    if grep -q '^sk_' "$work/serve.out" 2>/dev/null && curl -fsS "$base/healthz" >/dev/null 2>&1; then
      key=$(grep -m1 '^sk_' "$work/serve.out")
      return 0
    fi
    if ! kill -0 "$1" 2>/dev/null; then
      echo "error: herald serve exited" >&2
      cat "$work/serve.err" >&2
      return 1
    fi
    sleep 1
  done
  echo "error: herald serve printed no admin key in 60s" >&2
  cat "$work/serve.out" "$work/serve.err" >&2
  return 1
}

# --- inside the network namespace: the embedded pass ---------------------------------------------------

if [ "${FUZZ_ISOLATED:-}" = 1 ]; then
  ip link set lo up
  work=$(mktemp -d)
  server=""
  cleanup() {
    if [ -n "$server" ]; then
      kill "$server" 2>/dev/null || true
      wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
  }
  trap cleanup EXIT
  trap 'exit 1' INT TERM
  base="http://127.0.0.1:18080" # free by construction: the namespace is new
  (
    cd "$work"
    export HERALD__DATABASE__URL="sqlite://$work/herald.db" HERALD__SECRETS__KEY_FILE="$work/herald.key"
    export HERALD__LOG__LEVEL=warn HERALD_CONFIG_DIR="$work"
    exec "$HERALD_BIN" serve --bind "127.0.0.1:18080" >"$work/serve.out" 2>"$work/serve.err"
  ) &
  server=$!
  wait_ready "$server"
  fuzz_pass embedded
  exit $?
fi

# --- outside: tools, the document, the build, then each mode --------------------------------------------

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"
ensure() { # PACKAGE VERSION: installed only when that version is not there already
  local installed
  installed=$(python3 -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [ "$installed" != "$2" ]; then
    echo "installing $1 $2 from PyPI"
    python3 -m pip install -q --disable-pip-version-check "$1==$2"
  fi
}
ensure openapi-spec-validator 0.9.0
ensure schemathesis 4.32.5
echo "openapi-spec-validator docs/openapi.json"
python3 -m openapi_spec_validator docs/openapi.json
if [ -z "${HERALD_BIN:-}" ]; then # binaries built elsewhere may be given (HERALD_BIN, HERALD_WORKER_BIN)
  cargo build -q --bin herald --bin herald-worker
  HERALD_BIN="$CARGO_TARGET_DIR/debug/herald"
  HERALD_WORKER_BIN="$CARGO_TARGET_DIR/debug/herald-worker"
fi
HERALD_WORKER_BIN=${HERALD_WORKER_BIN:-$(dirname "$HERALD_BIN")/herald-worker}

with_path() { # URL NAME: the URL with its path replaced by /NAME (a database, a virtual host)
  python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p._replace(path="/" + u.quote(sys.argv[2], safe="")).geturl())' "$1" "$2"
}

production_pass() ( # a subshell: its cleanup runs however it ends
  local admin_url amqp_url database vhost port status=0 pids=()
  admin_url=${HERALD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
  database="herald_fuzz_$$"
  # A virtual host of its own: deleting it removes every queue and exchange the run declared
  # (rabbitmqctl cannot delete exchanges).
  vhost="herald-fuzz-$$"
  amqp_url=$(with_path "${HERALD_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}" "$vhost")
  work=$(mktemp -d)
  cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null || true
    rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
    rm -rf "$work"
  }
  trap cleanup EXIT
  trap 'exit 1' INT TERM
  psql -q "$admin_url" -c "CREATE DATABASE $database"
  rabbitmqctl -q add_vhost "$vhost" >/dev/null
  rabbitmqctl -q set_permissions -p "$vhost" "$(python3 -c 'import sys, urllib.parse as u; print(u.unquote(u.urlsplit(sys.argv[1]).username))' "$amqp_url")" ".*" ".*" ".*" >/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  base="http://127.0.0.1:$port"
  (
    cd "$work"
    HERALD__DATABASE__URL=$(with_path "$admin_url" "$database")
    export HERALD__DATABASE__URL HERALD__QUEUE__URL="$amqp_url"
    HERALD__SECRETS__KEYS=$("$HERALD_BIN" gen-key)
    export HERALD__SECRETS__KEYS HERALD__ADMIN__BIND="127.0.0.1:0" HERALD__LOG__LEVEL=warn
    export HERALD_CONFIG_DIR="$work"
    "$HERALD_BIN" serve --bind "127.0.0.1:$port" >"$work/serve.out" 2>"$work/serve.err" &
    echo $! >"$work/serve.pid"
    # Migrated and bootstrapped once the API answers; the worker creates deliveries and delivers none.
    for _ in $(seq 60); do curl -fsS "$base/healthz" >/dev/null 2>&1 && break; sleep 1; done
    "$HERALD_WORKER_BIN" --role fanout >"$work/worker.out" 2>"$work/worker.err" &
    echo $! >"$work/worker.pid"
  )
  pids=("$(cat "$work/serve.pid")" "$(cat "$work/worker.pid")")
  wait_ready "${pids[0]}" || exit 1
  fuzz_pass production || status=1
  exit "$status"
)

status=0
for mode in $MODES; do
  echo "==> fuzzing in $mode mode"
  case "$mode" in
    embedded)
      isolate=(unshare --net)
      [ "$(id -u)" = 0 ] || isolate=(unshare --map-root-user --net)
      FUZZ_ISOLATED=1 HERALD_BIN="$HERALD_BIN" MAX_EXAMPLES="$MAX_EXAMPLES" "${isolate[@]}" bash "$0" "$MAX_EXAMPLES" || status=1
      ;;
    production) production_pass || status=1 ;;
    *) echo "error: unknown mode '$mode' (embedded or production)" >&2; exit 2 ;;
  esac
done
exit "$status"
