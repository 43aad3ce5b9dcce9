#!/usr/bin/env bash
# ./flux bench [energy|edge|realtime] [options] — run the benchmarks against the running stack (./flux up).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ -f ${FLUX_HOME:-$root/.flux}/stack.env ]] || { echo "start the stack first: ./flux up" >&2; exit 1; }
[[ -d $root/tests/node_modules ]] || (cd "$root/tests" && npm ci --silent --no-audit --no-fund)
which=${1:-all}
[[ $# -gt 0 ]] && shift
case $which in
    energy) node "$root/bench/energy/run.mjs" "$@" ;;
    edge) "$root/bench/edge/run.sh" "$@" ;;
    realtime) "$root/bench/realtime/run.sh" "$@" ;;
    all) node "$root/bench/energy/run.mjs"; "$root/bench/edge/run.sh"; "$root/bench/realtime/run.sh" ;;
    *) echo "usage: ./flux bench [energy|edge|realtime] [options]" >&2; exit 2 ;;
esac
