#!/usr/bin/env bash
# The cost of an upload: a realistic day (FUSOU_COST_DATASETS admirals, 30; each
# FUSOU_COST_SESSIONS sessions, 2, of FUSOU_COST_BURST fragments, 10, FUSOU_COST_SPACING_SECONDS
# apart, 90, beginning within an evening of FUSOU_COST_WINDOW_MINUTES, 180) over the pipeline's own
# code, natively (SQLite for D1, memory for R2), every billable operation counted by the
# metered ports and priced at Cloudflare's published prices (fusou_ports::meter::Prices). The
# tables committed as this version does (one committer, FUSOU_COST_INTERVAL_SECONDS, 60)
# against each run committing its own snapshots, side by side in one run (FUSOU_COST_BEFORE=0:
# this version only, for days whose per-run metadata would outgrow memory).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$FUSOU_ROOT"
cargo test -q --profile worker-dev -p fusou-compaction --test cost -- --ignored --nocapture 2>&1 | grep -v "^$"
