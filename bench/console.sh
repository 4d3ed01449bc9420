#!/usr/bin/env bash
# The console's page-load budget: 10,000 deliveries in the store (embedded mode), each page loaded 50
# times; prints p50/p99/max per page and fails if a p99 is over 200 ms. Figures: docs/benchmarks.md.
#   bash bench/console.sh [--deliveries N] [--loads N]      PROFILE=release (default) or debug
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
target=${CARGO_TARGET_DIR:-target}
if [ "$profile" = release ]; then cargo build -q --release -p herald; else cargo build -q -p herald; fi
python3 bench/console.py --bin "$target/$profile/herald" "$@"
