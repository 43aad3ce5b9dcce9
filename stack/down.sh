#!/usr/bin/env bash
# ./flux down — stop everything ./flux up started. Data and keys stay in $FLUX_HOME.
set -euo pipefail
# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Stops daemon $1, whose command line contains $2.
stop_pidfile() {
    local pidfile=$FLUX_HOME/run/$1.pid
    if pid_alive "$pidfile" "$2"; then
        kill "$(<"$pidfile")"
        wait_for 15 bash -c "! kill -0 $(<"$pidfile")" || kill -9 "$(<"$pidfile")" 2>/dev/null || true
        say "stopped $1"
    fi
    rm -f "$pidfile"
}

[[ -d $FLUX_HOME ]] || exit 0
stop_pidfile router flux-router
stop_pidfile realtime flux-realtime
stop_pidfile postgrest postgrest
if [[ -f $PGDATA/PG_VERSION ]] && pg_running; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -w -m fast stop >/dev/null
    say "stopped PostgreSQL"
fi
