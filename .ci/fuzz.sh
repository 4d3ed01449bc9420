#!/usr/bin/env bash
# The OpenAPI contract, checked from outside: docs/openapi.json must be valid OpenAPI 3.1
# (openapi-spec-validator), and a fresh `herald serve` (debug build, embedded mode, a temporary folder)
# fuzzed with schemathesis against the document it serves must give no server error, no status it does
# not document and no body or header that violates its schema; it must refuse schema-violating input and
# requests without credentials, answer 405 to undocumented methods, and not find a deleted resource.
# Every schemathesis check runs except positive_data_acceptance: some schema-valid requests are refused
# on purpose by rules no schema states (an SSRF-refused URL, an expires_at in the past, an existing email).
# The fuzzing runs in a network namespace of its own with only the loopback interface, so nothing it
# makes Herald deliver leaves the machine.
#
# Usage: bash .ci/fuzz.sh [MAX_EXAMPLES]   (default 200 per operation, about a minute and
# a half on 2 cores; the seed is fixed, so a failure reproduces)
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES=${1:-200}
SEED=20261201
PORT=18080 # free by construction: the namespace is new

if [ "${FUZZ_ISOLATED:-}" != 1 ]; then
  # Outside the namespace: install the tools (registries are reachable here), validate, build.
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"
  ensure() { # PACKAGE VERSION: installed only when that version is not there already
    local installed
    installed=$(python3 -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')
    if [ "$installed" != "$2" ]; then
      echo "installing $1 $2 from PyPI"
      python3 -m pip install -q --disable-pip-version-check "$1==$2"
    fi
  }
  ensure openapi-spec-validator 0.9.0
  ensure schemathesis 4.32.5
  echo "openapi-spec-validator docs/openapi.json"
  python3 -m openapi_spec_validator docs/openapi.json
  if [ -z "${HERALD_BIN:-}" ]; then # a binary built elsewhere may be given
    cargo build -q --bin herald
    HERALD_BIN="$CARGO_TARGET_DIR/debug/herald"
  fi
  isolate=(unshare --net)
  [ "$(id -u)" = 0 ] || isolate=(unshare --map-root-user --net)
  FUZZ_ISOLATED=1 HERALD_BIN="$HERALD_BIN" exec "${isolate[@]}" bash "$0" "$@"
fi

# Inside the namespace.
ip link set lo up
dir=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

(
  cd "$dir"
  export HERALD__DATABASE__URL="sqlite://$dir/herald.db" HERALD__SECRETS__KEY_FILE="$dir/herald.key"
  export HERALD__LOG__LEVEL=warn
  exec "$HERALD_BIN" serve --bind "127.0.0.1:$PORT" >"$dir/stdout" 2>"$dir/stderr"
) &
server=$!

for _ in $(seq 60); do
  if grep -q '^sk_' "$dir/stdout" 2>/dev/null && curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "error: herald serve exited" >&2
    cat "$dir/stderr" >&2
    exit 1
  fi
  sleep 1
done
key=$(grep -m1 '^sk_' "$dir/stdout" || true)
if [ -z "$key" ]; then
  echo "error: herald serve printed no admin key in 60s" >&2
  cat "$dir/stdout" "$dir/stderr" >&2
  exit 1
fi

# Resources for the operations on one id, so they reach their handlers instead of answering 404: a
# webhook (subscribed to everything, its endpoint unreachable here), a second one for DELETE, an event
# and its delivery, and a second API key for DELETE (never the key the run uses).
api() { # METHOD PATH [BODY]: prints the response's `id` (the first item's, for a list)
  local body
  body=$(curl -sS --fail-with-body -X "$1" "http://127.0.0.1:$PORT/api/v1$2" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' ${3:+--data "$3"}) || {
    echo "error: $1 $2 failed: $body" >&2
    return 1
  }
  python3 -c 'import json, sys; body = json.load(sys.stdin); print(next((v[0] for v in body.values() if isinstance(v, list) and v and isinstance(v[0], dict)), body)["id"])' <<<"$body"
}
webhook=$(api POST /webhooks '{"url": "https://receiver.example/hook", "events": ["*"]}')
doomed_webhook=$(api POST /webhooks '{"url": "https://receiver.example/doomed", "events": ["*"]}')
event=$(api POST /events '{"event": "item.created", "data": {"id": 1}}')
for _ in $(seq 30); do
  delivery=$(api GET "/webhooks/$webhook/deliveries" 2>/dev/null || true)
  [ -n "$delivery" ] && break
  sleep 0.2
done
doomed_key=$(api POST /api-keys '{"name": "revoked by the fuzzing", "purpose": "custom"}')
cat >"$dir/schemathesis.toml" <<TOML
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

status=0
cd "$dir" # schemathesis keeps a cache in its working folder: not in the clone
python3 -c 'from schemathesis.cli import schemathesis; schemathesis(prog_name="st")' \
  --config-file "$dir/schemathesis.toml" run \
  "http://127.0.0.1:$PORT/api/v1/openapi.json" \
  -H "Authorization: Bearer $key" \
  --checks all --exclude-checks positive_data_acceptance \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
  --generation-database none --workers 1 --request-timeout 10 \
  --no-color --output-truncate false || status=$?

if grep -q 'ERROR' "$dir/stderr"; then
  echo "herald logged errors during the fuzzing:" >&2
  grep 'ERROR' "$dir/stderr" | head -20 >&2
  status=1
fi
exit "$status"
