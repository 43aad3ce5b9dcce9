#!/usr/bin/env bash
# Realtime benchmark against the running stack (./flux up): builds flux-realtime (release) and
# runs bench.mjs, which starts its own server per phase. Options are passed on, e.g.
#   bench/realtime/run.sh --phases=changes --seconds=20 --modes=grouped
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
(cd "$root" && cargo build --release -q -p flux-realtime)
exec node "$root/bench/realtime/bench.mjs" "$@"
