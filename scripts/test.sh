#!/usr/bin/env bash
# The test command: native tests of every crate, then the end-to-end suite against one fresh
# local stack (started once, stopped at the end).
# Arguments go to the end-to-end harness (a name filter, --list, ...); FUSOU_E2E_ONLY=1 skips
# the native tests.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$FUSOU_ROOT/scripts/stack.sh"
cd "$FUSOU_ROOT"

bash scripts/setup.sh
if [[ "${FUSOU_E2E_ONLY:-}" != 1 ]]; then
    log "formatting and lints"
    cargo fmt --check
    cargo clippy -q --workspace --all-targets --all-features -- -D warnings
    cargo clippy -q -p fusou-upload-worker -p fusou-compaction-worker -p fusou-engine-wasm --target wasm32-unknown-unknown -- -D warnings
    log "native tests (the fuzz harness for ${FUSOU_FUZZ_SECONDS:=30} s)"
    export FUSOU_FUZZ_SECONDS
    cargo test --workspace --exclude fusou-e2e
fi
# The committed configuration deploys as it is (both Workers' production dry runs).
bash scripts/check-deploy.sh
cargo build -q --tests -p fusou-e2e

# Tests see queue messages at once instead of after the production burst delay and batch wait,
# failed messages again after 1 s instead of 10, a hanging Supabase given up after 2 s instead
# of 5, consolidation after two runs instead of eight, and may use the test hooks (injected
# crashes, clean-up ages, unchecked messages).
export FUSOU_REALTIME_DELAY_SECONDS=0 FUSOU_QUEUE_BATCH_TIMEOUT=1 FUSOU_COMPACTION_RETRY_DELAY_SECONDS=1 \
    FUSOU_REMOTE_TIMEOUT_MS=2000 FUSOU_COMPACTION_FAN_IN=2 FUSOU_TEST_HOOKS=on
state="$FUSOU_LOCAL/test"
rm -rf "$state"
stack_up "$state"
export FUSOU_PG_URL="postgres://postgres@127.0.0.1:$FUSOU_PG_PORT/postgres" FUSOU_STATE="$state"
log "end-to-end tests"
cargo test -p fusou-e2e --test e2e -- "$@"
