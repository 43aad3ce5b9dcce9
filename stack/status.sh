#!/usr/bin/env bash
# ./flux status — what of the stack is running.
set -euo pipefail
# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

state() { if "$@" >/dev/null 2>&1; then echo running; else echo stopped; fi; }
printf '%-12s %s\n' \
    postgresql "$(state pg_running)" \
    postgrest "$(state pid_alive "$FLUX_HOME/run/postgrest.pid" postgrest)" \
    router "$(state pid_alive "$FLUX_HOME/run/router.pid" flux-router)" \
    realtime "$(state pid_alive "$FLUX_HOME/run/realtime.pid" flux-realtime)"
