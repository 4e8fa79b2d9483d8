#!/usr/bin/env bash
# The whole FUSOU pipeline locally: sets up what is missing, starts PostgreSQL, the Supabase
# stand-in and both Workers under one `wrangler dev`, prints what you need to try an upload,
# and stops everything on Ctrl-C. State persists in .local/dev between runs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$FUSOU_ROOT/scripts/stack.sh"

fusou_cli
stack_up "$FUSOU_LOCAL/dev"

token="$(stack_token)"
dataset="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

cat <<INFO

  FUSOU pipeline running locally
  ------------------------------
  upload service    $FUSOU_URL          (health: $FUSOU_URL/health)
  upload endpoint   $FUSOU_URL/api/battle-data/upload
  Supabase (local)  $SUPABASE_URL         (REST: /rest/v1/, JWKS: /auth/v1/.well-known/jwks.json)
  PostgreSQL        postgres://postgres@127.0.0.1:$FUSOU_PG_PORT/postgres
  logs              $FUSOU_LOCAL/dev/logs

  a dataset id to try   $dataset
  a user token (24 h)   $token
  the CLI               $fusou

  alias fusou=$fusou
  export FUSOU_URL=$FUSOU_URL FUSOU_TOKEN=$token FUSOU_DATASET=$dataset

  Press Ctrl-C to stop everything.
INFO

wait
