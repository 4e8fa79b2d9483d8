# Shared environment for every script: sourced, never run.
# The Cargo target directory lives outside the clone so that fresh clones (and CI) reuse builds.
FUSOU_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FUSOU_ROOT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusou/target}"
# The Iceberg readers (PyIceberg, DuckDB) the lake's tests and `query the lake` use, pinned.
export FUSOU_LAKE_VENV="${FUSOU_LAKE_VENV:-$HOME/.cache/fusou/lake-venv}"
export FUSOU_LAKE_PYTHON="$FUSOU_LAKE_VENV/bin/python"
FUSOU_LAKE_READERS="pyiceberg==0.12.0 duckdb==1.5.5 duckdb-extension-iceberg==1.5.5 duckdb-extension-avro==1.5.5 pyarrow==26.0.1"
export PATH="$HOME/.cargo/bin:$FUSOU_ROOT/node_modules/.bin:$PATH"
# Local wrangler makes no outside connection.
export WRANGLER_SEND_METRICS=false WRANGLER_SEND_ERROR_REPORTS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_HIDE_BANNER=true
# Toolchain versions; wasm-bindgen-cli must equal the wasm-bindgen of Cargo.lock.
export FUSOU_WORKER_BUILD_VERSION=0.8.7
FUSOU_WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print }' "$FUSOU_ROOT/Cargo.lock")"
export FUSOU_WASM_BINDGEN_VERSION
# Where local state lives (git-ignored).
export FUSOU_LOCAL="${FUSOU_LOCAL:-$FUSOU_ROOT/.local}"

# The fusou command-line tool, built once (release, in the shared target directory); sets $fusou.
fusou_cli() {
    cargo build -q --release -p fusou-cli || die "cannot build the fusou CLI"
    fusou="$CARGO_TARGET_DIR/release/fusou"
}

log() { printf '\033[1m[fusou]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[fusou] error:\033[0m %s\n' "$*" >&2; exit 1; }
