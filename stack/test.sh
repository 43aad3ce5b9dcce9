#!/usr/bin/env bash
# ./flux test — every test, against real parts:
#   1. formatting and clippy (no warnings)
#   2. unit and property tests of the pure crates (cargo test)
#   3. a throw-away stack (.flux-test/, ports 55321..) brought up by the same script as ./flux up
#   4. pgrx tests: the SQL surface inside a real PostgreSQL (cargo pgrx test), in a PostgreSQL
#      installation of their own, while a probe checks that the stack beside them never fails
#   5. end-to-end tests through the router with real clients (node --test tests/e2e), then
#      those that change the running stack, one at a time (tests/serial)
#   6. the dashboard in headless Chromium, with ./flux demo feeding the stack (tests/browser);
#      screenshots of its views in .flux-test/screenshots/
#   7. the upgrade test (ALTER EXTENSION flux UPDATE from every installable version)
# Every stack and the pgrx tests run their own copy of PostgreSQL with their own build of the
# extension: a user's own stack (./flux up) is never touched. The throw-away stack is stopped
# at the end.
set -euo pipefail
# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$FLUX_ROOT/stack/deps.sh"

TEST_HOME=$FLUX_ROOT/.flux-test
TEST_PORT=55321
# How the test stack is brought up; the failure tests bring it up again the same way.
TEST_STACK=("FLUX_HOME=$TEST_HOME" "FLUX_PORT=$TEST_PORT" FLUX_SHARED_BUFFERS=256MB)

step() { say "── $1"; }

stop_test_stack() { FLUX_HOME=$TEST_HOME FLUX_PORT=$TEST_PORT "$FLUX_ROOT/stack/down.sh" || true; }

# Runs shell code with lib.sh loaded for the test stack (its ports, secrets, flux_psql).
in_test_stack() {
    FLUX_HOME=$TEST_HOME FLUX_PORT=$TEST_PORT bash -c "source '$FLUX_ROOT/stack/lib.sh'; load_secrets; $1"
}

# The pgrx tests build, install and run their debug build in a PostgreSQL installation of
# their own (PGRX_HOME points cargo pgrx at its pg_config).
run_pgrx_tests() {
    local dir=$TEST_HOME/pgrx
    install -d -o postgres -g postgres "$dir"
    ensure_pg_tree "$dir/pg"
    install -d "$dir/home"
    printf '[configs]\npg15 = "%s"\n' "$dir/pg/lib/postgresql/15/bin/pg_config" >"$dir/home/config.toml"
    PGRX_HOME=$dir/home cargo pgrx test pg15 --runas postgres --pgdata "$dir/data"
}

# A client of the test stack for as long as the pgrx tests run: ten requests a second, every
# answer that is not a 200 recorded. Installing and running another build must not reach it.
PROBE_LOG=$TEST_HOME/probe.log
PROBE_PID=
start_probe() {
    # The loop's shell is the background job itself, so that killing $! stops it.
    # shellcheck disable=SC2016 # expanded by the probe's shell
    FLUX_HOME=$TEST_HOME FLUX_PORT=$TEST_PORT bash -c "source '$FLUX_ROOT/stack/lib.sh'; load_secrets"'
        while :; do
            code=$(curl -s -o /dev/null -w "%{http_code}" -m 10 -H "apikey: $FLUX_ANON_KEY" \
                "http://127.0.0.1:$FLUX_PORT/rest/v1/market_data?limit=1")
            echo "$(date +%T.%N) $code"
            sleep 0.1
        done' >"$PROBE_LOG" 2>&1 &
    PROBE_PID=$!
}
kill_probe() {
    [[ -n $PROBE_PID ]] || return 0
    kill "$PROBE_PID" 2>/dev/null || true
    wait "$PROBE_PID" 2>/dev/null || true
    PROBE_PID=
}
stop_probe() {
    kill_probe
    local total failed
    total=$(wc -l <"$PROBE_LOG")
    failed=$(grep -cv ' 200$' "$PROBE_LOG" || true)
    ((total > 10)) || die "the probe of the test stack made only $total requests"
    ((failed == 0)) || { grep -v ' 200$' "$PROBE_LOG" | head >&2; die "$failed of $total requests to the test stack failed while the pgrx tests ran"; }
    say "the test stack answered all $total probe requests while the pgrx tests ran"
}

# A version's install script is frozen in sql/install/ (README: Upgrades): the one this build
# generates must hold the same statements, whatever their order (pgrx orders them by a
# dependency graph) and comments (pgrx names source lines). A changed SQL surface needs a new
# version and an upgrade script.
check_sql_surface() {
    local generated version frozen
    generated=$(find "$TEST_HOME/build/package" -name 'flux--*.sql' ! -name 'flux--*--*.sql')
    version=${generated##*/flux--}
    version=${version%.sql}
    frozen=$FLUX_ROOT/sql/install/flux--$version.sql
    [[ -f $frozen ]] || die "sql/install/flux--$version.sql is missing: freeze the install script of $version there (cp $generated sql/install/)"
    local strip='/^--/d; s/[[:space:]]*\/\*[^*]*\*\/[[:space:]]*$//; s/[[:space:]]*$//; /^$/d'
    if ! diff -u <(sed "$strip" "$frozen" | sort) <(sed "$strip" "$generated" | sort) >&2; then
        die "the SQL surface differs from the frozen install script of $version (diff above): a released version never changes; give the change a new version and an upgrade script"
    fi
}

# The stack's shell scripts: shellcheck, and templates render any value literally.
check_stack_scripts() {
    command -v shellcheck >/dev/null || {
        say "installing shellcheck"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
    }
    shellcheck -x flux .ci/run stack/*.sh tests/*.sh bench/*.sh bench/*/*.sh
    local out
    out=$(FLUX_HOME='/srv/R&D \1 $x' bash -c "source stack/lib.sh; tmp=\$(mktemp); printf 'home @FLUX_HOME@\n' >\$tmp; render \$tmp /dev/stdout")
    # shellcheck disable=SC2016 # the value is literal on purpose
    [[ $out == 'home /srv/R&D \1 $x' ]] || die "render() changed a value: $out"
}

main() {
    cd "$FLUX_ROOT"
    step "installing what is missing"
    ensure_runtime_deps
    ensure_node22
    ensure_chromium
    (cd tests && npm ci --silent --no-audit --no-fund)

    step "cargo fmt --check, shellcheck"
    cargo fmt --all -- --check
    check_stack_scripts

    step "cargo clippy (warnings are errors)"
    cargo clippy --workspace --all-targets --quiet -- -D warnings

    step "unit and property tests of the pure crates"
    cargo test --workspace --exclude flux --quiet

    step "bringing up the test stack"
    stop_test_stack
    rm -rf "$TEST_HOME"
    trap 'kill_probe; stop_test_stack' EXIT
    env "${TEST_STACK[@]}" FLUX_QUIET=1 "$FLUX_ROOT/stack/up.sh"
    check_sql_surface
    # The systemd units of the stack render, and systemd-analyze (where present) accepts them.
    env "${TEST_STACK[@]}" "$FLUX_ROOT/stack/systemd.sh" >/dev/null

    # The end-to-end tests all come from one address and run in parallel: lift the rate limits
    # for them. tests/serial/rate-limits tests the limits (and the documented defaults).
    # Distinct values per tier, so that the tests still see which tier a request got.
    # shellcheck disable=SC2016 # expanded by in_test_stack's shell
    in_test_stack 'for t in anon:1000001 authenticated:1000002 service_role:1000003; do
                       flux_psql -c "ALTER SYSTEM SET flux.rate_limit_${t%:*}_per_minute = ${t#*:}" \
                                 -c "ALTER SYSTEM SET flux.rate_limit_${t%:*}_burst = ${t#*:}"
                   done
                   flux_psql -c "SELECT pg_reload_conf()" >/dev/null'

    step "pgrx tests (beside the running test stack, which must not notice)"
    start_probe
    run_pgrx_tests
    stop_probe

    step "end-to-end tests"
    FLUX_HOME=$TEST_HOME FLUX_NODE22=$NODE22_BIN node --test --test-reporter=spec tests/e2e/

    step "end-to-end tests that change the stack (one at a time)"
    env "${TEST_STACK[@]}" FLUX_NODE22="$NODE22_BIN" node --test --test-concurrency=1 --test-reporter=spec tests/serial/

    step "browser tests of the dashboard (headless Chromium, ./flux demo running)"
    env "${TEST_STACK[@]}" node --test --test-concurrency=1 --test-reporter=spec tests/browser/

    step "upgrade test"
    FLUX_HOME=$TEST_HOME FLUX_PORT=$TEST_PORT "$FLUX_ROOT/tests/upgrade.sh"

    say "all tests passed"
}

main "$@"
