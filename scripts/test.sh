#!/usr/bin/env bash
# The test command: lints and native tests of every crate, then the end-to-end suite against one
# fresh local stack (started once, stopped at the end).
# Arguments go to the end-to-end harness (a name filter, --list, ...); FUSOU_E2E_ONLY=1 skips
# the lints and native tests.
#
# On a new machine most of the time is cold compilation. The Workers' build tools, which share
# nothing with the workspace, build beside the lints and native tests (a lone cargo leaves a
# core idle whenever one large crate compiles alone); everything else shares one target
# directory, so that build scripts and proc macros compile once. Each stage's time is printed
# at the end.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$FUSOU_ROOT/scripts/stack.sh"
cd "$FUSOU_ROOT"

started=$SECONDS
timings=()
# Runs "$@" as the stage named $1 and records its time.
stage() {
    local name="$1" t0=$SECONDS
    shift
    log "$name"
    "$@"
    timings+=("$(printf '%-34s %4d s' "$name" $((SECONDS - t0)))")
}
report() {
    # Whatever still runs in the background (after a failure) ends with the command.
    jobs -p | xargs -r kill 2>/dev/null || true
    log "stage times (the whole command: $((SECONDS - started)) s)"
    printf '  %s\n' "${timings[@]}" >&2
}
trap report EXIT

# In the background while the native work runs: the build tools (only the Workers' builds need
# them), logging to their own file, waited for below.
background() {
    local name="$1" log_file="$FUSOU_LOCAL/$2.log" t0=$SECONDS
    shift 2
    if "$@" >"$log_file" 2>&1; then
        echo "$(printf '%-34s %4d s' "$name (beside)" $((SECONDS - t0)))" >"$log_file.time"
    else
        cat "$log_file" >&2
        return 1
    fi
}
join() {
    local pid="$1" log_file="$FUSOU_LOCAL/$2.log"
    wait "$pid" || die "$2 failed (its output is above)"
    timings+=("$(cat "$log_file.time")")
}
mkdir -p "$FUSOU_LOCAL"

stage "set-up (packages, npm, readers)" bash scripts/setup.sh --without-tools
background "build tools" tools bash scripts/setup.sh --only-tools &
tools=$!
if [[ "${FUSOU_E2E_ONLY:-}" != 1 ]]; then
    stage "formatting" cargo fmt --check
    # The lints themselves are the workspace's (`[workspace.lints]` in Cargo.toml).
    stage "lints, native" cargo clippy -q --workspace --all-targets --all-features
    stage "lints, wasm32" cargo clippy -q -p fusou-upload-worker -p fusou-compaction-worker -p fusou-engine-wasm \
        --target wasm32-unknown-unknown
    export FUSOU_FUZZ_SECONDS="${FUSOU_FUZZ_SECONDS:-30}"
    # Every test binary, the end-to-end one included (its tests report ignored without the
    # stack): one feature resolution for the whole workspace, so that the end-to-end run below
    # and the stand-in the stack starts reuse these builds.
    stage "native tests (fuzzing ${FUSOU_FUZZ_SECONDS} s)" cargo test --workspace
    export FUSOU_STANDIN_BUILT=1
fi
join "$tools" tools
# The committed configuration deploys as it is (both Workers' production dry runs).
stage "deploy dry runs (builds the Workers)" bash scripts/check-deploy.sh

# Tests see queue messages at once instead of after the production burst delay and batch wait,
# failed messages again after 1 s instead of 10, a hanging Supabase given up after 2 s instead
# of 5, consolidation after two runs instead of eight, and may use the test hooks (injected
# crashes, clean-up ages, unchecked messages).
export FUSOU_REALTIME_DELAY_SECONDS=0 FUSOU_QUEUE_BATCH_TIMEOUT=1 FUSOU_COMPACTION_RETRY_DELAY_SECONDS=1 \
    FUSOU_REMOTE_TIMEOUT_MS=2000 FUSOU_COMPACTION_FAN_IN=2 FUSOU_LAKE_COMMIT_INTERVAL_SECONDS=1 FUSOU_TEST_HOOKS=on
state="$FUSOU_LOCAL/test"
rm -rf "$state"
stage "stack start" stack_up "$state"
trap 'stack_down; report' EXIT
export FUSOU_PG_URL="postgres://postgres@127.0.0.1:$FUSOU_PG_PORT/postgres" FUSOU_STATE="$state"
stage "end-to-end tests" cargo test --workspace --test e2e -- "$@"
