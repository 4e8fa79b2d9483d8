#!/usr/bin/env bash
# Upload benchmark (prints figures; not a test). First the upload's crypto (the body's SHA-256,
# ES256 and RS256 token verification) in Wasm, as the upload Worker runs it, beside WebCrypto.
# Then handshake plus upload, exactly as the FUSOU client makes them, against a fresh local
# stack, for this checkout and, in the same run, for a
# baseline version of the service (FUSOU_BENCH_BASELINE, a git ref; `none` skips it):
# - uploads/s, latency and CPU per upload with 1, 8 and 32 concurrent clients: the Worker's own
#   CPU (its `Server-Timing: cpu` header, both phases; versions without it print "-") and the
#   CPU of the whole workerd process that runs the Worker with its local R2, D1 and queues;
# - each phase's p50 with every remote call the Worker makes (D1, R2, queue, Supabase) delayed
#   by 30 ms (INJECT_LATENCY_MS), which shows how many round trips lie before each answer.
# Then, for this checkout only: uploads while Supabase answers normally, slowly (1.5 s an
# answer) and not at all (it hangs), and the Workers' bundle sizes as `wrangler deploy` makes them.
# The baseline builds in its own worktree and target directory (~/.cache/fusou/target-baseline),
# so that neither version's build is taken for the other's.
# Usage: scripts/bench-upload.sh [uploads per run, default 400]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$FUSOU_ROOT"
# The Workers as they deploy (LTO), not as the test stack builds them.
export FUSOU_WORKER_PROFILE=release
uploads="${1:-400}"
# The version before the upload's critical path was cut to one D1 query and one put + batch.
baseline="${FUSOU_BENCH_BASELINE:-66d3c5e}"

fusou_cli

echo "== the upload's crypto: Wasm (as the upload Worker runs it) beside WebCrypto, in Node's V8 =="
cargo build -q --release -p fusou-engine-wasm --target wasm32-unknown-unknown
rm -rf "$FUSOU_LOCAL/bench-crypto"
wasm-bindgen --target nodejs --out-dir "$FUSOU_LOCAL/bench-crypto" "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/fusou_engine_wasm.wasm"
node scripts/bench-upload-crypto.mjs "$FUSOU_LOCAL/bench-crypto"
clock_ticks="$(getconf CLK_TCK)"

# CPU seconds used so far by every workerd process (wrangler dev's runtime).
workerd_cpu() {
    local pid total=0
    for pid in $(pgrep -x workerd || true); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# One load run, followed by the workerd CPU per upload it cost.
load() {
    local clients="$1" count="$2" before after
    shift 2
    before="$(workerd_cpu)"
    "$fusou" --url "$FUSOU_URL" load --uploads "$count" --clients "$clients" --token "$token" \
        --dataset-prefix "bench-$clients-$(date +%s%N)" --seed "$((clients * 100000 + RANDOM))" "$@"
    after="$(workerd_cpu)"
    awk -v t="$((after - before))" -v hz="$clock_ticks" -v n="$count" \
        'BEGIN { printf "             workerd process CPU per upload: %.1f ms\n", t / hz * 1000 / n }'
}

# The measurements of one version of the service, checked out at $1, labelled $2.
measure() {
    local root="$1" label="$2" latency
    (
        # The version's own scripts, settings and state.
        cd "$root"
        source scripts/env.sh
        source scripts/stack.sh
        export FUSOU_TEST_HOOKS=on
        for latency in 0 30; do
            export FUSOU_INJECT_LATENCY_MS="$latency"
            rm -rf "$FUSOU_LOCAL/bench"
            stack_up "$FUSOU_LOCAL/bench" 2>"$FUSOU_LOCAL/bench-$latency.log" \
                || { cat "$FUSOU_LOCAL/bench-$latency.log" >&2; exit 1; }
            token="$(stack_token)"
            # One upload first: the isolate starts and caches the signing keys.
            "$fusou" --url "$FUSOU_URL" load --uploads 1 --clients 1 --token "$token" --dataset-prefix warm >/dev/null
            if [[ "$latency" == 0 ]]; then
                echo
                echo "== $label: $uploads uploads per run, fragments of 32 tables (1 to 40 rows each) =="
                for clients in 1 8 32; do
                    load "$clients" "$uploads"
                done
            else
                echo
                echo "== $label: every remote call delayed by $latency ms, 1 client, $((uploads / 4)) uploads =="
                load 1 "$((uploads / 4))"
            fi
            stack_down 2>/dev/null
        done
    )
}

if [[ "$baseline" != none ]]; then
    worktree="$FUSOU_LOCAL/bench-baseline"
    rm -rf "$worktree"
    git worktree prune
    git worktree add --detach "$worktree" "$baseline" >/dev/null
    ln -s "$FUSOU_ROOT/node_modules" "$worktree/node_modules"
    log "building the baseline ($baseline) in its own target directory (the first time takes minutes)"
    CARGO_TARGET_DIR="$HOME/.cache/fusou/target-baseline" measure "$worktree" "baseline $(git rev-parse --short "$baseline")"
    git worktree remove --force "$worktree"
fi
measure "$FUSOU_ROOT" "this checkout ($(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ', modified'))"

source scripts/stack.sh
state="$FUSOU_LOCAL/bench"
rm -rf "$state"
stack_up "$state"
token="$(stack_token)"
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
