#!/usr/bin/env bash
# Regenerates docs/console/*.png (the README shows overview.png and delivery.png): runs the console's
# browser test in embedded mode with its screenshots written there, each page at 1280x800.
# Needs Debian's chromium and the playwright Python package (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HERALD_CONSOLE_SCREENSHOTS="$PWD/docs/console"
export HERALD_TEST_REQUIRE_BROWSER=1
mkdir -p "$HERALD_CONSOLE_SCREENSHOTS"
cargo test -p herald --test it console_browser::the_console_works_in_a_browser::embedded -- --exact --nocapture
ls -l "$HERALD_CONSOLE_SCREENSHOTS"
