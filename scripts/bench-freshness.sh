#!/usr/bin/env bash
# Freshness of the open tables under production-like latency (prints figures; not a test):
# the local stack with INJECT_LATENCY_MS=30 on every D1, R2, queue and Supabase call and the
# production queue settings (REALTIME_DELAY_SECONDS 30, batches of 10 waiting up to 30 s);
# FUSOU_FRESHNESS_DATASETS (100) datasets × 10 fragments uploaded by 8 clients; then the time
# from the last upload's answer until every row is in its table (each table's current
# snapshot's total-records, read through the Iceberg REST catalog with LAKE_READ_SECRET), the
# snapshots added per table and the compare-and-swap attempts per snapshot. Once per commit
# interval in FUSOU_FRESHNESS_INTERVALS ("60 0": the default, and a snapshot per notice), and
# for each COMPACTION_CONCURRENT_RUNS in FUSOU_FRESHNESS_CONCURRENT_RUNS ("1 10": one run at a
# time, as before runs shared a batch, and the default), side by side in one run; with each,
# the compaction isolate's peak Wasm memory.
# The Workers run as the test stack builds them (worker-dev), not with the release build.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$FUSOU_ROOT/scripts/stack.sh"
cd "$FUSOU_ROOT"
datasets="${FUSOU_FRESHNESS_DATASETS:-100}"
dir="$FUSOU_LOCAL/bench-freshness"
fusou_cli
rm -rf "$dir" && mkdir -p "$dir"
unset FUSOU_QUEUE_BATCH_TIMEOUT FUSOU_REALTIME_DELAY_SECONDS
export FUSOU_INJECT_LATENCY_MS=30 FUSOU_TEST_HOOKS=on
for runs in ${FUSOU_FRESHNESS_CONCURRENT_RUNS:-1 10}; do
for interval in ${FUSOU_FRESHNESS_INTERVALS:-60 0}; do
    export FUSOU_LAKE_COMMIT_INTERVAL_SECONDS="$interval" FUSOU_COMPACTION_CONCURRENT_RUNS="$runs"
    state="$dir/stack-$interval-$runs"
    stack_up "$state"
    # 20 admirals (a user makes at most 10 datasets a minute), 5 datasets each.
    tokens=""
    for user in $(seq 1 20); do
        tokens+="$("$fusou" token --supabase-url "$SUPABASE_URL" --service-key "$SUPABASE_SERVICE_KEY" --email "admiral-$user@fusou.local"),"
    done
    log "LAKE_COMMIT_INTERVAL_SECONDS=$interval COMPACTION_CONCURRENT_RUNS=$runs: $datasets datasets × 10 fragments, 8 clients, 30 ms a call"
    "$fusou" --url "$FUSOU_URL" load --uploads "$((datasets * 10))" --clients 8 --datasets "$datasets" \
        --dataset-prefix fresh --freshness --lake-key "$LAKE_READ_SECRET" --token "$tokens" --verify-timeout 1800
    stack_down
    peak=$(grep -o '"wasm_memory_bytes":[0-9]*' "$state/logs/wrangler.log" | cut -d: -f2 | sort -n | tail -1)
    echo "compaction isolate's peak Wasm memory: $((${peak:-0} / 1024)) KiB"
done
done
