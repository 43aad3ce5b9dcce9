#!/usr/bin/env bash
# ./flux test — every test, against real parts:
#   1. formatting and clippy (no warnings)
#   2. unit and property tests of the pure crates (cargo test)
#   3. pgrx tests: the SQL surface inside a real PostgreSQL (cargo pgrx test)
#   4. a throw-away stack (.flux-test/, ports 55321..) brought up by the same script as ./flux up
#   5. end-to-end tests through the router with real clients (node --test tests/e2e), then
#      those that change the running stack, one at a time (tests/serial)
#   6. the upgrade test (ALTER EXTENSION flux UPDATE from every installable version)
# The throw-away stack is stopped at the end; a user's own stack (./flux up) is left alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$FLUX_ROOT/stack/deps.sh"

TEST_HOME=$FLUX_ROOT/.flux-test
TEST_PORT=55321

step() { say "── $1"; }

stop_test_stack() { FLUX_HOME=$TEST_HOME FLUX_PORT=$TEST_PORT "$FLUX_ROOT/stack/down.sh" || true; }

# Runs shell code with lib.sh loaded for the test stack (its ports, secrets, flux_psql).
in_test_stack() {
    FLUX_HOME=$TEST_HOME FLUX_PORT=$TEST_PORT bash -c "source '$FLUX_ROOT/stack/lib.sh'; load_secrets; $1"
}

main() {
    cd "$FLUX_ROOT"
    step "installing what is missing"
    ensure_runtime_deps
    ensure_node22
    (cd tests && npm ci --silent --no-audit --no-fund)

    step "cargo fmt --check"
    cargo fmt --all -- --check

    step "cargo clippy (warnings are errors)"
    cargo clippy --workspace --all-targets --quiet -- -D warnings

    step "unit and property tests of the pure crates"
    cargo test --workspace --exclude flux --quiet

    step "pgrx tests"
    stop_test_stack
    rm -rf "$TEST_HOME"
    install -d -o postgres -g postgres "$TEST_HOME" "$TEST_HOME/pgrx"
    # pgrx copies its test build over the installed library in place; unlink it first so that
    # a running stack keeps the library it mapped instead of seeing it rewritten under it.
    rm -f "$("$PG_CONFIG" --pkglibdir)/flux.so"
    cargo pgrx test pg15 --runas postgres --pgdata "$TEST_HOME/pgrx/data"

    step "bringing up the test stack"
    trap stop_test_stack EXIT
    FLUX_HOME=$TEST_HOME FLUX_PORT=$TEST_PORT FLUX_QUIET=1 FLUX_SHARED_BUFFERS=256MB "$FLUX_ROOT/stack/up.sh"

    # The end-to-end tests all come from one address and run in parallel: lift the rate limits
    # for them. tests/serial/rate-limits tests the limits (and the documented defaults).
    # Distinct values per tier, so that the tests still see which tier a request got.
    in_test_stack 'for t in anon:1000001 authenticated:1000002 service_role:1000003; do
                       flux_psql -c "ALTER SYSTEM SET flux.rate_limit_${t%:*}_per_minute = ${t#*:}" \
                                 -c "ALTER SYSTEM SET flux.rate_limit_${t%:*}_burst = ${t#*:}"
                   done
                   flux_psql -c "SELECT pg_reload_conf()" >/dev/null'

    step "end-to-end tests"
    FLUX_HOME=$TEST_HOME FLUX_NODE22=$NODE22_BIN node --test --test-reporter=spec tests/e2e/

    step "end-to-end tests that change the stack (one at a time)"
    FLUX_HOME=$TEST_HOME FLUX_NODE22=$NODE22_BIN node --test --test-concurrency=1 --test-reporter=spec tests/serial/

    step "upgrade test"
    FLUX_HOME=$TEST_HOME FLUX_PORT=$TEST_PORT "$FLUX_ROOT/tests/upgrade.sh"

    say "all tests passed"
}

main "$@"
