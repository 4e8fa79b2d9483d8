#!/usr/bin/env bash
# The open tables' metadata under load, natively over the same code the Worker runs (SQLite for
# D1, memory for R2): 10,000 commits to one table (FUSOU_LAKE_COMMITS to change), then the
# metadata's size and the time to plan a full scan, against a baseline that never merges
# manifests; and commits per second to one table from 8 concurrent writers.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$FUSOU_ROOT"
cargo test -q --profile worker-dev -p fusou-lake --lib tests::bench -- --ignored --nocapture 2>&1 | grep -v "^$"
