#!/usr/bin/env bash
# ./flux systemd — systemd units that supervise this stack ($FLUX_HOME) in a long-running
# installation: PostgreSQL, PostgREST, the realtime server and the router restart when they
# die and start at boot. Writes them to $FLUX_HOME/systemd/ and says how to install them.
set -euo pipefail
# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -f $FLUX_HOME/conf/router.env && -x $FLUX_HOME/bin/flux-router ]] ||
    die "bring the stack up once first (./flux up): the units run what it built and configured"
out=$FLUX_HOME/systemd
install -d "$out"
for template in "$FLUX_ROOT"/stack/templates/systemd/*; do
    render "$template" "$out/${template##*/}"
done
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify --man=no "$out"/*.service "$out"/flux.target >&2 ||
        die "systemd-analyze finds fault with the units in $out"
fi
cat <<DONE
Units for the stack in $FLUX_HOME are in $out. To let systemd run it:

  ./flux down
  cp $out/* /etc/systemd/system/ && systemctl daemon-reload
  systemctl enable --now flux.target

systemctl status 'flux-*' shows them; journalctl -u flux-router has the router's log.
DONE
