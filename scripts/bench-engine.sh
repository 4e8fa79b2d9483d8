#!/usr/bin/env bash
# Engine benchmark (prints figures; not a test). One machine, one run, one input: 2,000
# synthetic fragments shaped like the client's (32 tables, about 20 rows each). The engine
# (single-threaded, reading the fragments) beside DuckDB with one thread and pyarrow, both
# merging the same segments as separate files; MB/s of input and ratios against DuckDB. The
# engine and DuckDB figures are medians of three runs.
# Usage: scripts/bench-engine.sh [fragments, default 2000]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$FUSOU_ROOT"
count="${1:-2000}"
dir="$FUSOU_LOCAL/bench-engine"
# DuckDB and pyarrow are the pinned readers the set-up installs (FUSOU_LAKE_READERS).
bash scripts/setup.sh --without-tools
fusou_cli
if [[ ! -f "$dir/fragments/$(printf '%06d' $((count - 1))).bin" ]]; then
    rm -rf "$dir"
    "$fusou" gen --out "$dir/fragments" --count "$count" --seed 1 --segments
fi

log "engine (snappy, like the baselines; then zstd, the default): median of three runs each"
engine() {
    for _ in 1 2 3; do
        "$fusou" compact --dir "$dir/fragments" --out "$dir/out-$1" --codec "$1" | tee /dev/stderr \
            | sed -nE 's/.* ([0-9.]+) MB\/s, peak heap ([0-9.]+) MiB/\1 \2/p'
    done | sort -n | sed -n 2p
}
read -r snappy_mbps snappy_peak < <(engine snappy)
read -r zstd_mbps zstd_peak < <(engine zstd)
log "DuckDB (one thread) and pyarrow on the same segments"
baselines="$("$FUSOU_LAKE_PYTHON" scripts/bench_baselines.py "$dir/fragments/segments" "$dir/baselines")"

python3 - "$baselines" "$snappy_mbps" "$snappy_peak" "$zstd_mbps" "$zstd_peak" <<'PY'
import json, sys
b = json.loads(sys.argv[1]); r = b["results"]
snappy, snappy_peak, zstd, zstd_peak = map(float, sys.argv[2:6])
duck = r["duckdb"]["mb_per_s"]
print(f"\ninput: {b['segments']} segments, {b['input_bytes'] / 1e6:.1f} MB (DuckDB runs: {r['duckdb']['runs_mb_per_s']} MB/s)")
print(f"{'tool':<28}{'MB/s':>8}{'× DuckDB':>10}")
for name, mbps in (("DuckDB, 1 thread (snappy)", duck), ("pyarrow (snappy)", r["pyarrow"]["mb_per_s"]),
                   ("fusou engine (snappy)", snappy), ("fusou engine (zstd, default)", zstd)):
    print(f"{name:<28}{mbps:>8.1f}{mbps / duck:>10.2f}")
print(f"engine peak heap: {snappy_peak:.1f} MiB (snappy), {zstd_peak:.1f} MiB (zstd)")
PY
