#!/usr/bin/env bash
# Flux command line: bring the local stack up or down, run the tests, run the benchmarks.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<'USAGE'
usage: ./flux <command>

  up        install what is missing, build the extension, start PostgreSQL + PostgREST + router
            (+ realtime) under .flux/, print the keys (idempotent)
  down      stop the stack started by `up` (data stays in .flux/)
  status    show what is running
  env       print .flux/stack.env (the connection details)
  demo      bring a demo site to life on the running stack, watch it at the printed URL:
            ./flux demo [--for DURATION] [--devices N] (README: Demo and dashboard)
  test      run every test: unit, pgrx, end-to-end against a throw-away stack, upgrade
  bench     run the benchmarks in bench/ against the stack (see README)
  systemd   write systemd units that supervise the stack in a long-running installation
USAGE
}

case "${1:-}" in
    up | down | status | test | systemd | demo) cmd=$1; shift; exec "$root/stack/$cmd.sh" "$@" ;;
    env) exec cat "${FLUX_HOME:-$root/.flux}/stack.env" ;;
    bench) shift; exec "$root/bench/run.sh" "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
