#!/usr/bin/env bash
# Installs whatever is missing, at pinned versions, from the registries these machines reach
# (crates.io, npm, Debian). Safe to run again: each step checks before it installs.
# Usage: setup.sh [--without-tools | --only-tools] (the Workers' build tools take minutes to
# build on a new machine; scripts/test.sh builds them beside the native tests).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$FUSOU_ROOT"
part="${1:-all}"

if [[ "$part" != --only-tools ]]; then
    need_apt=()
    command -v clang >/dev/null || need_apt+=(clang)
    if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        need_apt+=(postgresql)
    fi
    command -v node >/dev/null || need_apt+=(nodejs npm)
    # The Iceberg readers (below) live in a virtual environment.
    python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3 python3-venv)
    if ((${#need_apt[@]})); then
        log "installing Debian packages: ${need_apt[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need_apt[@]}" >/dev/null
    fi

    for component in clippy rustfmt; do
        if ! rustup component list --installed | grep -q "^$component"; then
            log "adding the $component component"
            rustup component add "$component"
        fi
    done

    if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
        log "adding the wasm32-unknown-unknown target"
        rustup target add wasm32-unknown-unknown
    fi

fi

if [[ "$part" != --without-tools ]]; then
    # The two build tools are built once per machine, lightly optimised and without LTO, in one
    # shared target directory (they share most of their dependencies): they only run for seconds
    # per build, and building them this way took 4 m 18 s against 5 m 30 s for cargo's default
    # release profile, both measured here in one session on a 2-core machine. `--force`: the
    # check above found the binary missing or of another version, whatever cargo has recorded.
    tool_install() {
        CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
            CARGO_PROFILE_RELEASE_DEBUG=false cargo install --force --target-dir "$CARGO_TARGET_DIR/tools" "$@"
    }

    if [[ "$(worker-build --version 2>/dev/null)" != *"$FUSOU_WORKER_BUILD_VERSION"* ]]; then
        log "installing worker-build $FUSOU_WORKER_BUILD_VERSION (a few minutes)"
        tool_install "worker-build@$FUSOU_WORKER_BUILD_VERSION" --locked
    fi

    [[ -n "$FUSOU_WASM_BINDGEN_VERSION" ]] || die "no wasm-bindgen in Cargo.lock"
    if [[ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $FUSOU_WASM_BINDGEN_VERSION" ]]; then
        log "installing wasm-bindgen-cli $FUSOU_WASM_BINDGEN_VERSION (a few minutes)"
        # Not --locked: one of its locked dependency versions is missing from the registry mirror.
        tool_install "wasm-bindgen-cli@$FUSOU_WASM_BINDGEN_VERSION"
    fi

fi
[[ "$part" != --only-tools ]] || exit 0

if [[ ! -x node_modules/.bin/wrangler || package-lock.json -nt node_modules/.package-lock.json ]]; then
    log "installing npm packages from package-lock.json"
    npm ci --no-audit --no-fund --loglevel=error
fi

if ! "$FUSOU_LAKE_PYTHON" -c 'import pyiceberg, duckdb, duckdb_extension_iceberg, duckdb_extension_avro' 2>/dev/null; then
    log "installing the Iceberg readers into $FUSOU_LAKE_VENV"
    python3 -m venv "$FUSOU_LAKE_VENV"
    # shellcheck disable=SC2086
    "$FUSOU_LAKE_PYTHON" -m pip install -q $FUSOU_LAKE_READERS
fi

# Local secrets, generated once with random values; nothing falls back to a built-in secret.
mkdir -p "$FUSOU_LOCAL"
secrets="$FUSOU_LOCAL/secrets.env"
if [[ ! -s "$secrets" ]]; then
    log "generating local secrets in $secrets"
    rand() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
    umask 077
    cat > "$secrets" <<SECRETS
SUPABASE_SERVICE_KEY=sb_secret_$(rand)
SUPABASE_PUBLISHABLE_KEY=sb_publishable_$(rand)
UPLOAD_TOKEN_SECRET=$(rand)
OPERATOR_SECRET=$(rand)
LAKE_READ_SECRET=$(rand)
SECRETS
fi
# Secrets added since a machine's file was generated.
if ! grep -q '^LAKE_READ_SECRET=' "$secrets"; then
    (umask 077 && echo "LAKE_READ_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$secrets")
fi
log "set-up complete"
