#!/usr/bin/env bash
# Compaction in the Worker (prints figures; not a test): a fixed synthetic set uploaded as the
# client uploads it, compacted by one run under `wrangler dev`, beside the native engine on the
# same fragments. MB/s and duration of each, their ratio, and the Worker's Wasm memory as it
# reports it from inside (its size after each run, which is its peak: Wasm memory never shrinks).
# Runs are capped in bytes (COMPACTION_MAX_RUN_BYTES), so the set takes several; their time is
# summed (queue waits between runs excluded). Beside them, the engine alone compiled to Wasm and
# run by V8 without the platform (crates/engine-wasm): the Worker's gap to native, split into
# what Wasm costs and what the platform's reads, writes and checkpoints cost. Each run's metrics
# row (`fusou runs --json`) also records the time its own code ran (`worker_busy_ms`, without its
# waits, in which local R2, D1 and queues do their work), the figure to set beside native for
# what the Worker itself costs, and the Wasm memory after it.
#
# `scripts/bench-worker.sh largest` instead compacts fragments of the largest size the upload
# accepts (one of one table: a single segment in one row group; one of 32 tables), each in a
# dataset of its own, and prints each run's figures and the Worker's Wasm memory after it.
# Usage: scripts/bench-worker.sh [fragments, default 500 | largest]
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$FUSOU_ROOT/scripts/stack.sh"
cd "$FUSOU_ROOT"
# The Workers as they deploy (LTO), not as the test stack builds them.
export FUSOU_WORKER_PROFILE=release
count="${1:-500}"
dir="$FUSOU_LOCAL/bench-worker"
dataset="bench-worker"

fusou_cli
rm -rf "$dir" && mkdir -p "$dir"

# Compacts `dataset` (uploaded already) in the Worker, waits until nothing is pending, and prints
# its committed runs' metrics rows, one JSON object a line.
compact_in_worker() {
    local dataset="$1" token="$2"
    "$fusou" --url "$FUSOU_URL" wait "$dataset" --compact --token "$token"
    "$fusou" --url "$FUSOU_URL" runs "$dataset" --json --token "$token" | grep '"status":"success"' \
        || die "no committed run of $dataset"
}

if [[ "$count" == largest ]]; then
    largest="$(awk -F'"' '/^MAX_UPLOAD_BYTES/ { print $2; exit }' wrangler.toml)"
    export FUSOU_REALTIME_DELAY_SECONDS=3600
    stack_up "$dir/stack"
    token="$(stack_token)"
    runs=""
    for tables in 1 32; do
        # A little under the limit: the generator aims at a size, the limit is a hard one.
        "$fusou" gen --out "$dir/largest-$tables" --count 1 --seed "$tables" --bytes "$((largest - 256 * 1024))" --tables "$tables"
        "$fusou" --url "$FUSOU_URL" upload --dir "$dir/largest-$tables" --dataset "largest-$tables" --clients 1 --token "$token"
        runs+="$(compact_in_worker "largest-$tables" "$token")"$'\n'
    done
    python3 - "$runs" "$largest" <<'PY'
import json, sys
runs = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
print(f"\nthe largest accepted fragment: MAX_UPLOAD_BYTES = {int(sys.argv[2]) / 2**20:.0f} MiB")
for m in runs:
    print(f"  {m['dataset_id']}: {m['input_bytes'] / 2**20:.1f} MiB in, {m['output_rows']} rows, {m['output_files']} files, {m['output_bytes'] / 2**20:.1f} MiB out,"
          f" {m['step_durations_ms']['total']} ms; Wasm memory after the run {m['wasm_memory_bytes'] / 2**20:.1f} MiB")
print(f"Wasm memory at most: {max(m['wasm_memory_bytes'] for m in runs) / 2**20:.1f} MiB (a Worker has 128 MB)")
PY
    exit 0
fi
"$fusou" gen --out "$dir/fragments" --count "$count" --seed 42 >/dev/null

# Uploads must not start compactions of their own: the run under test is the manual one.
export FUSOU_REALTIME_DELAY_SECONDS=3600
stack_up "$dir/stack"
token="$(stack_token)"
"$fusou" --url "$FUSOU_URL" upload --dir "$dir/fragments" --dataset "$dataset" --clients 8 --token "$token"

log "compacting $count fragments in the Worker"
# Runs are capped in bytes; the rest continues in follow-up runs.
runs="$(compact_in_worker "$dataset" "$token")"
stack_down

# The native figure is the median of three runs: this machine's noise is several percent.
native="$(for _ in 1 2 3; do "$fusou" compact --dir "$dir/fragments" --out "$dir/native-out" --codec zstd | tail -n 1; done)"
# The engine alone in Wasm, in V8 (Node's): what Wasm costs, without the platform's I/O.
log "compacting the same fragments with the engine alone in Wasm (V8)"
cargo build -q --release -p fusou-engine-wasm --target wasm32-unknown-unknown
wasm-bindgen --target nodejs --out-dir "$dir/engine-wasm" "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/fusou_engine_wasm.wasm"
wasm="$(node "$FUSOU_ROOT/scripts/bench-engine-wasm.mjs" "$dir/engine-wasm" "$dir/fragments" | tee /dev/stderr | tail -n 1)"
python3 - "$runs" "$native" "$wasm" <<'PY'
import json, re, sys
# The metrics rows, oldest first (the service lists the newest first).
runs = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()][::-1]
natives = [re.search(r"([0-9.]+) s .* ([0-9.]+) MB/s, peak heap ([0-9.]+) MiB", l) for l in sys.argv[2].splitlines()]
native = sorted(natives, key=lambda m: float(m.group(2)))[1]
total = lambda k: sum(r[k] for r in runs)
seconds = sum(r["step_durations_ms"]["total"] for r in runs) / 1000
worker_mbps = total("input_bytes") / 1e6 / seconds
native_mbps = float(native.group(2))
print(f"\ninput: {total('input_fragments')} fragments, {total('input_bytes') / 1e6:.1f} MB, {total('output_rows')} rows -> {total('output_files')} files, {total('output_bytes') / 1e6:.1f} MB, in {len(runs)} runs")
print(f"worker (wrangler dev): {seconds:.2f} s of runs, {worker_mbps:.1f} MB/s, Wasm memory at most {max(r['wasm_memory_bytes'] for r in runs) / 2**20:.1f} MiB")
for m in runs:
    print(f"  run {m['run_id']}: {m['input_fragments']} fragments, {m['input_bytes'] / 1e6:.1f} MB, {m['step_durations_ms']['total']} ms ({m['worker_busy_ms']} ms in the Worker's own code), steps {m['step_durations_ms']}")
warm = runs[1:]
if warm:
    warm_mbps = sum(r["input_bytes"] for r in warm) / 1e6 / (sum(r["step_durations_ms"]["total"] for r in warm) / 1000)
    print(f"  without the first run (the isolate's start and Wasm tier-up): {warm_mbps:.1f} MB/s")
busy = sum(r["worker_busy_ms"] for r in runs) / 1000
busy_mbps = total("input_bytes") / 1e6 / busy
print(f"  of which the Worker's own code: {busy:.2f} s, {busy_mbps:.1f} MB/s; the other {seconds - busy:.2f} s it waited on local R2, D1, queues and Supabase")
print(f"native engine (median of 3: {', '.join(m.group(2) for m in natives)} MB/s): {float(native.group(1)):.2f} s, {native_mbps:.1f} MB/s, peak heap {native.group(3)} MiB")
wasm = re.search(r"cold ([0-9.]+) MB/s, warm \(median of 3\) ([0-9.]+) MB/s", sys.argv[3])
print(f"engine alone in Wasm (V8, no platform I/O): {wasm.group(2)} MB/s warm, {wasm.group(1)} MB/s cold; / native {float(wasm.group(2)) / native_mbps:.2f}")
print(f"worker's own code / native: {busy_mbps / native_mbps:.2f}")
print(f"worker / native throughput: {worker_mbps / native_mbps:.2f}")
PY
