#!/usr/bin/env bash
# The `[build] command` of both wrangler configs: builds one Worker crate with worker-build,
# using the tools scripts/setup.sh installed instead of downloading them.
# Usage: scripts/build-worker.sh <crate directory>
set -euo pipefail
source "$(dirname "$0")/env.sh"
crate="${1:?usage: build-worker.sh <crate directory>}"
export WASM_BINDGEN_BIN="$HOME/.cargo/bin/wasm-bindgen"
export ESBUILD_BIN="$FUSOU_ROOT/node_modules/.bin/esbuild"
export WASM_OPT_BIN="$FUSOU_ROOT/node_modules/.bin/wasm-opt"
# Local stacks and the deploy check build with the `worker-dev` profile (no LTO: a change rebuilds
# in seconds, not minutes) and skip wasm-opt (a minute on a large module); deploys, and the
# benchmarks (FUSOU_WORKER_PROFILE=release), build with `release` and optimise.
if [[ "${WRANGLER_COMMAND:-}" == dev || -n "${FUSOU_NO_WASM_OPT:-}" ]]; then
    args=(--profile "${FUSOU_WORKER_PROFILE:-worker-dev}" --no-opt)
else
    args=(--release)
fi
cd "$FUSOU_ROOT/$crate"
exec worker-build "${args[@]}"
