#!/usr/bin/env bash
# Upload benchmark (prints figures; not a test): handshake plus upload, exactly as the FUSOU
# client makes them, against a fresh local stack with 1, 8 and 32 concurrent clients, beside a
# baseline of static requests through the same Worker runtime. Then uploads while Supabase
# answers normally, slowly (1.5 s an answer) and not at all (it hangs): the upload answers
# without waiting on it. Then the Workers' bundle sizes as `wrangler deploy` would upload them.
# Usage: scripts/bench-upload.sh [uploads per run, default 400]
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$FUSOU_ROOT/scripts/stack.sh"
cd "$FUSOU_ROOT"
# The Workers as they deploy (LTO), not as the test stack builds them.
export FUSOU_WORKER_PROFILE=release
uploads="${1:-400}"

cargo build -q --release -p fusou-cli
fusou="$CARGO_TARGET_DIR/release/fusou"
state="$FUSOU_LOCAL/bench"
rm -rf "$state"
stack_up "$state"
token="$("$fusou" token --supabase-url "$SUPABASE_URL" --service-key "$SUPABASE_SERVICE_KEY")"

echo
echo "== upload throughput: $uploads uploads per run, fragments of 32 tables (1 to 40 rows each) =="
for clients in 1 8 32; do
    "$fusou" --url "$FUSOU_URL" load --uploads "$uploads" --clients "$clients" --token "$token" \
        --dataset-prefix "bench-$clients" --seed "$((clients * 100000))" --baseline
done

echo
echo "== uploads while Supabase is normal, slow and hanging: $((uploads / 4)) uploads, 8 clients each =="
for mode in '{"mode": "normal"}' '{"mode": "slow", "delayMs": 1500}' '{"mode": "hang"}'; do
    curl -fsS -X PUT "$SUPABASE_URL/__fault" -H "apikey: $SUPABASE_SERVICE_KEY" \
        -H "authorization: Bearer $SUPABASE_SERVICE_KEY" -d "$mode" >/dev/null
    echo "Supabase $mode"
    "$fusou" --url "$FUSOU_URL" load --uploads "$((uploads / 4))" --clients 8 --token "$token" \
        --dataset-prefix "bench-supabase-$(date +%s%N)" --seed "$(date +%s)"
done
curl -fsS -X PUT "$SUPABASE_URL/__fault" -H "apikey: $SUPABASE_SERVICE_KEY" \
    -H "authorization: Bearer $SUPABASE_SERVICE_KEY" -d '{"mode": "normal"}' >/dev/null

stack_down
echo
echo "== bundle sizes (wrangler deploy --dry-run, with wasm-opt) =="
for config in wrangler.toml crates/compaction-worker/wrangler.toml; do
    out="$(mktemp -d)"
    wrangler deploy --dry-run --env production --outdir "$out" -c "$config" 2>&1 | grep -E "Total Upload" | sed "s|^|$config: |"
    rm -rf "$out"
done
