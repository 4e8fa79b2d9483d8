#!/usr/bin/env bash
# The open tables as readers meet them, before and after the period roll-ups, in one run: 1,000
# datasets (FUSOU_BENCH_DATASETS) each upload one fragment to each of 2 periods; the writes run
# natively over the Workers' own code (compaction runs, the committer, the roll-ups), the bucket
# is written to a directory, and PyIceberg and DuckDB run a period-wide aggregate and a
# one-dataset lookup on `fusou.battle` and `fusou.cells`: files opened, bytes, time. Then the
# largest period's roll-up again in Wasm (V8, as the Worker runs it): MB/s and Wasm memory.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$FUSOU_ROOT"
out="${FUSOU_BENCH_OUT:-$(mktemp -d)}"
rm -rf "$out/bucket"
mkdir -p "$out"
FUSOU_BENCH_OUT="$out" cargo test -q --profile worker-dev -p fusou-compaction --test lake_read -- --ignored --nocapture 2>&1 | grep -v "^$"
"$FUSOU_LAKE_PYTHON" scripts/bench_lake_read.py "$out/plan.json"
# The engine in Wasm, built as the local Workers are (worker-dev: dependencies at opt-level 1, so
# its MB/s understates a release deploy's; its memory is the same).
cargo build -q --profile worker-dev -p fusou-engine-wasm --target wasm32-unknown-unknown
wasm-bindgen --target nodejs --out-dir "$out/engine-wasm" "$CARGO_TARGET_DIR/wasm32-unknown-unknown/worker-dev/fusou_engine_wasm.wasm"
for table in battle cells; do
    node scripts/bench-rollup-wasm.mjs "$out/engine-wasm" "$out/bucket/battle_compacted/2026-02" "$table"
done
