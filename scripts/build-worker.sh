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
args=(--release)
# wasm-opt takes about a minute on a large module: skip it for local runs, keep it for deploy.
[[ "${WRANGLER_COMMAND:-}" == dev || -n "${FUSOU_NO_WASM_OPT:-}" ]] && args+=(--no-opt)
cd "$FUSOU_ROOT/$crate"
exec worker-build "${args[@]}"
