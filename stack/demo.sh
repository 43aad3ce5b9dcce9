#!/usr/bin/env bash
# ./flux demo — brings the demo site to life on the running stack (demo/demo.mjs; README: Demo).
set -euo pipefail
# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -f $FLUX_HOME/stack.env ]] || die "no stack in $FLUX_HOME: run ./flux up first"
set -a
# shellcheck disable=SC1091
source "$FLUX_HOME/stack.env"
set +a
curl -sf -o /dev/null -H "apikey: $FLUX_ANON_KEY" "$FLUX_API_URL/market_data?limit=0" ||
    die "the stack does not answer at $FLUX_URL: run ./flux up"
exec node "$FLUX_ROOT/demo/demo.mjs" "$@"
