#!/usr/bin/env bash
# ./flux bench [energy|rollups|edge|realtime|ingest|partitions|soak|upgrade] [options] — run the benchmarks
# against the running stack (./flux up).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ -f ${FLUX_HOME:-$root/.flux}/stack.env ]] || { echo "start the stack first: ./flux up" >&2; exit 1; }
[[ -d $root/tests/node_modules ]] || (cd "$root/tests" && npm ci --silent --no-audit --no-fund)
which=${1:-all}
[[ $# -gt 0 ]] && shift
case $which in
    energy) node "$root/bench/energy/run.mjs" "$@" ;;
    rollups) node "$root/bench/rollups/run.mjs" "$@" ;;
    edge) "$root/bench/edge/run.sh" "$@" ;;
    realtime) "$root/bench/realtime/run.sh" "$@" ;;
    ingest) node "$root/bench/ingest/run.mjs" "$@" ;;
    partitions) node "$root/bench/partitions/run.mjs" "$@" ;;
    soak) node "$root/bench/soak/run.mjs" "$@" ;;
    upgrade) node "$root/bench/upgrade/run.mjs" "$@" ;;
    all)
        node "$root/bench/energy/run.mjs"
        node "$root/bench/rollups/run.mjs"
        "$root/bench/edge/run.sh"
        "$root/bench/realtime/run.sh"
        node "$root/bench/ingest/run.mjs"
        node "$root/bench/partitions/run.mjs"
        node "$root/bench/soak/run.mjs"
        node "$root/bench/upgrade/run.mjs"
        ;;
    *) echo "usage: ./flux bench [energy|rollups|edge|realtime|ingest|partitions|soak|upgrade] [options]" >&2; exit 2 ;;
esac
