#!/usr/bin/env bash
# `wrangler deploy --dry-run` of both Workers in their production environment: the committed
# configuration must deploy as it is. Prints what each would upload. Run by scripts/test.sh.
# (wasm-opt is skipped: this checks the configuration and the bundle, not the optimisation.)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$FUSOU_ROOT"
mkdir -p "$FUSOU_LOCAL"
for worker in compaction upload; do
    config=wrangler.toml
    [[ "$worker" == upload ]] || config="crates/$worker-worker/wrangler.toml"
    out="$(mktemp -d)"
    # The whole output (bindings and variables included) is kept beside the local state.
    report="$FUSOU_LOCAL/dry-run-$worker.log"
    log "wrangler deploy --dry-run --env production -c $config (all of it in $report)"
    if ! FUSOU_NO_WASM_OPT=1 wrangler deploy --dry-run --env production --outdir "$out" -c "$config" >"$report" 2>&1; then
        cat "$report" >&2
        die "the production deploy of $config does not pass its dry run"
    fi
    grep -E "Total Upload|exiting now" "$report" | sed "s|^|  |" || true
    rm -rf "$out"
done
