#!/usr/bin/env bash
# ./flux up — install what is missing, build and install the extension, bring the stack up.
# Safe to run again: it reuses the cluster, secrets and keys, restarts only what changed.
set -euo pipefail
# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$FLUX_ROOT/stack/deps.sh"

FLUX_PROFILE=${FLUX_PROFILE:-release}           # cargo profile of the installed extension
FLUX_SHARED_BUFFERS=${FLUX_SHARED_BUFFERS:-1GB}
FLUX_MAX_ROWS=${FLUX_MAX_ROWS:-10000}               # rows per REST response (PostgREST db-max-rows)
FLUX_SLOT_WAL_KEEP=${FLUX_SLOT_WAL_KEEP:-2GB}       # WAL the realtime slot may hold back while unread

random_secret() { tr -dc 'A-Za-z0-9' </dev/urandom | head -c "$1"; }

# The postgres user must reach $FLUX_HOME through every parent directory. A checkout under a
# private home (/root is 0700) would stop it, so grant search (not read) permission on the way.
ensure_traversable() {
    local dir=$FLUX_HOME
    while [[ $dir != / ]]; do
        if [[ -d $dir ]] && ! as_postgres test -x "$dir"; then
            say "granting o+x on $dir so the postgres user can reach $FLUX_HOME"
            chmod o+x "$dir"
        fi
        dir=$(dirname "$dir")
    done
}

prepare_dirs() {
    install -d -o root -g root -m 755 "$FLUX_HOME" "$FLUX_HOME"/{bin,conf,build,run,log}
    install -d -o postgres -g postgres -m 755 "$FLUX_HOME/socket"
    # pg_ctl writes the server log as the postgres user: that one file is theirs.
    touch "$FLUX_HOME/log/postgresql.log"
    chown postgres:postgres "$FLUX_HOME/log/postgresql.log"
    ensure_traversable
}

ensure_secrets() {
    load_secrets || true
    if [[ -z ${JWT_SECRET:-} ]]; then
        umask 077
        cat >"$FLUX_HOME/secrets.env" <<SECRETS
POSTGRES_PASSWORD=$(random_secret 32)
AUTHENTICATOR_PASSWORD=$(random_secret 32)
JWT_SECRET=$(random_secret 48)
SECRETS
        umask 022
        load_secrets
    fi
}

# Builds the extension package against Debian's PostgreSQL and copies the files that differ
# into this stack's own installation ($PG_TREE), which no other stack uses.
install_extension() {
    local pkg="$FLUX_HOME/build/package" f dest
    say "building the extension ($FLUX_PROFILE)"
    rm -rf "$pkg"
    local profile_flag=(--profile "$FLUX_PROFILE")
    [[ $FLUX_PROFILE == dev ]] && profile_flag=(--debug)
    (cd "$FLUX_ROOT" && cargo pgrx package "${profile_flag[@]}" --pg-config "$PG_SYSTEM_CONFIG" \
        --out-dir "$pkg" >/dev/null 2>"$FLUX_HOME/log/build.log") ||
        { cat "$FLUX_HOME/log/build.log" >&2; die "extension build failed"; }
    while IFS= read -r -d '' f; do
        dest=$PG_TREE/${f#"$pkg"/usr/}
        # `install` replaces the file (new inode): running backends keep the old mapping.
        cmp -s "$f" "$dest" || install -D -m 644 "$f" "$dest"
    done < <(find "$pkg" -type f -print0)
    # The frozen install scripts of earlier releases: a database may be created at one of them
    # (the upgrade test does) and brought up to date with ALTER EXTENSION flux UPDATE.
    for f in "$FLUX_ROOT"/sql/install/flux--*.sql; do
        dest=$PG_TREE/share/postgresql/15/extension/${f##*/}
        [[ -f $pkg/usr/share/postgresql/15/extension/${f##*/} ]] && continue
        cmp -s "$f" "$dest" || install -m 644 "$f" "$dest"
    done
}

# The preloaded library and the server binary are read at server start: the checksum of the
# pair this cluster runs.
LOADED_LIBRARY=$FLUX_HOME/run/flux.so.sha256
library_sum() { cat "$PG_TREE/lib/postgresql/15/lib/flux.so" "$PG_BIN/postgres" | sha256sum | cut -d' ' -f1; }

init_cluster() {
    [[ -f $PGDATA/PG_VERSION ]] && return
    say "creating the PostgreSQL cluster in $PGDATA"
    install -d -o postgres -g postgres -m 700 "$PGDATA"
    local pwfile
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    chown postgres "$pwfile"
    as_postgres "$PG_BIN/initdb" -D "$PGDATA" -U postgres --pwfile="$pwfile" -E UTF8 \
        --locale=C.UTF-8 --auth-local=peer --auth-host=scram-sha-256 >"$FLUX_HOME/log/initdb.log"
    rm -f "$pwfile"
    echo "include = 'flux.conf'" | as_postgres tee -a "$PGDATA/postgresql.conf" >/dev/null
}

# Renders pgdata/flux.conf; prints "changed" when it differs from what the server has.
configure_cluster() {
    local tmp
    tmp=$(mktemp)
    render "$FLUX_ROOT/stack/templates/postgresql.conf" "$tmp"
    if cmp -s "$tmp" "$PGDATA/flux.conf"; then
        rm -f "$tmp"
    else
        install -o postgres -g postgres -m 600 "$tmp" "$PGDATA/flux.conf"
        rm -f "$tmp"
        echo changed
    fi
}

start_postgres() {
    local restart=$1
    [[ $(cat "$LOADED_LIBRARY" 2>/dev/null) == "$(library_sum)" ]] || restart+=library
    if pg_running; then
        if [[ -n $restart ]]; then
            say "restarting PostgreSQL (server, library or settings changed)"
            as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -w -t 120 -m fast restart \
                -l "$FLUX_HOME/log/postgresql.log" >/dev/null
        fi
    else
        say "starting PostgreSQL on 127.0.0.1:$FLUX_DB_PORT"
        as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -w -t 120 -l "$FLUX_HOME/log/postgresql.log" \
            start >/dev/null || { tail -20 "$FLUX_HOME/log/postgresql.log" >&2; die "PostgreSQL did not start"; }
    fi
    library_sum >"$LOADED_LIBRARY"
}

create_extension() {
    local installed offered script_sum sum_file=$FLUX_HOME/run/extension.sha256
    installed=$(flux_psql -Atc "SELECT extversion FROM pg_extension WHERE extname = 'flux'")
    offered=$(flux_psql -Atc "SELECT default_version FROM pg_available_extensions WHERE name = 'flux'")
    script_sum=$(sha256sum "$PG_TREE/share/postgresql/15/extension/flux--$offered.sql" | cut -d' ' -f1)
    if [[ $installed != "$offered" ]]; then
        # Created or updated below: the database will have this script's schema.
        echo "$script_sum" >"$sum_file"
    elif [[ -f $sum_file && $(<"$sum_file") != "$script_sum" ]]; then
        # Same version, different SQL: only a development build does this. ALTER EXTENSION
        # cannot apply it; an upgrade script and a new version would.
        say "warning: the flux install script changed but its version did not; the database keeps the old schema."
        say "         Recreate it (loses data): psql \"\$FLUX_DB_URL\" -c 'DROP EXTENSION flux CASCADE' -c 'CREATE EXTENSION flux'"
    fi
    flux_psql <<SQL
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS flux;
ALTER EXTENSION flux UPDATE;
-- Partitions from the start, rather than at the maintenance worker's first round.
SET flux.maintenance_lock_timeout = '10s';
DO \$\$ BEGIN IF to_regprocedure('flux.run_maintenance()') IS NOT NULL THEN PERFORM flux.run_maintenance(); END IF; END \$\$;
ALTER ROLE authenticator PASSWORD '$AUTHENTICATOR_PASSWORD';
NOTIFY pgrst, 'reload schema';
NOTIFY pgrst, 'reload config';
SQL
}

ensure_keys() {
    [[ -n ${FLUX_ANON_KEY:-} && -n ${FLUX_SERVICE_ROLE_KEY:-} ]] && return
    local anon service
    anon=$(flux_psql -Atc "SELECT flux.sign_jwt('{\"role\":\"anon\"}', interval '10 years')")
    service=$(flux_psql -Atc "SELECT flux.sign_jwt('{\"role\":\"service_role\"}', interval '10 years')")
    printf 'FLUX_ANON_KEY=%s\nFLUX_SERVICE_ROLE_KEY=%s\n' "$anon" "$service" >>"$FLUX_HOME/secrets.env"
    load_secrets
}

# Starts `$3...` in the background as daemon $1 (pid file run/$1.pid) unless it is running;
# restarts it when $2 is non-empty (its configuration changed).
start_daemon() {
    local name=$1 pidfile=$FLUX_HOME/run/$1.pid restart=$2; shift 2
    if pid_alive "$pidfile" "${1##*/}"; then
        [[ -z $restart ]] && return
        kill "$(<"$pidfile")" 2>/dev/null || true
        wait_for 10 bash -c "! kill -0 $(<"$pidfile")" || true
    fi
    setsid "$@" >>"$FLUX_HOME/log/$name.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

# Renders a template into conf/; prints "changed" when the file changed.
render_conf() {
    local tmp
    tmp=$(mktemp)
    render "$FLUX_ROOT/stack/templates/$1" "$tmp"
    if cmp -s "$tmp" "$FLUX_HOME/conf/$1"; then rm -f "$tmp"; else mv "$tmp" "$FLUX_HOME/conf/$1"; echo changed; fi
}

start_postgrest() {
    start_daemon postgrest "$(render_conf postgrest.conf)" "$POSTGREST_BIN" "$FLUX_HOME/conf/postgrest.conf"
    # Any HTTP answer will do: without an api key the answer is a 401 from the database.
    wait_for 30 curl -s -o /dev/null "http://127.0.0.1:$FLUX_POSTGREST_PORT/" ||
        { tail -20 "$FLUX_HOME/log/postgrest.log" >&2; die "PostgREST did not start"; }
}

# Builds the realtime server and the router (workspace binaries) and copies them into bin/: a
# stack runs its own copies, which a later build for another stack does not replace.
# Prints the names of those that changed.
install_daemons() {
    local dir=$FLUX_PROFILE name
    [[ $FLUX_PROFILE == dev ]] && dir=debug
    say "building the realtime server and the router ($FLUX_PROFILE)"
    (cd "$FLUX_ROOT" && cargo build --quiet --profile "$FLUX_PROFILE" -p flux-realtime -p flux-router \
        2>"$FLUX_HOME/log/build-daemons.log") ||
        { cat "$FLUX_HOME/log/build-daemons.log" >&2; die "building the realtime server or the router failed"; }
    for name in flux-realtime flux-router; do
        if ! cmp -s "$FLUX_ROOT/target/$dir/$name" "$FLUX_HOME/bin/$name"; then
            install -m 755 "$FLUX_ROOT/target/$dir/$name" "$FLUX_HOME/bin/$name"
            echo "$name"
        fi
    done
}

# The dashboard (dashboard/, README: Demo and dashboard): its npm packages installed once per
# lock file, bundled by esbuild into web/, which the router serves at /. config.json tells the
# page the anon key, which is public by design: it is what every browser client holds.
build_dashboard() {
    local dir=$FLUX_ROOT/dashboard stamp=$FLUX_ROOT/dashboard/node_modules/.flux-lock.sha256 sum
    sum=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    if [[ $(cat "$stamp" 2>/dev/null) != "$sum" ]]; then
        say "installing the dashboard's npm packages"
        (cd "$dir" && npm ci --silent --no-audit --no-fund) || die "npm ci in dashboard/ failed"
        echo "$sum" >"$stamp"
    fi
    node "$dir/build.mjs" "$FLUX_HOME/web" || die "building the dashboard failed"
    printf '{"anonKey": "%s"}\n' "$FLUX_ANON_KEY" >"$FLUX_HOME/web/config.json"
}

# Writes conf/$1 from standard input; prints "changed" when it differs from what was there.
write_conf() {
    local tmp
    tmp=$(mktemp) # mode 600: these hold passwords
    cat >"$tmp"
    if cmp -s "$tmp" "$FLUX_HOME/conf/$1"; then rm -f "$tmp"; else mv "$tmp" "$FLUX_HOME/conf/$1"; echo changed; fi
}

# Starts daemon $1 from bin/ with the environment in conf/$1.env (FLUX_* variables), restarted
# when its binary ($2 non-empty) or that environment changed.
start_flux_daemon() {
    local name=$1 binary_changed=$2 env_changed
    env_changed=$(write_conf "$name.env")
    (
        set -a
        # shellcheck disable=SC1090
        source "$FLUX_HOME/conf/$name.env"
        set +a
        # Every client connection is a descriptor (two, for the router).
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        start_daemon "$name" "$binary_changed$env_changed" "$FLUX_HOME/bin/flux-$name"
    )
}

# The realtime server (crates/flux-realtime). Settings the caller exported pass through.
start_realtime() {
    {
        printf 'FLUX_REALTIME_LISTEN=127.0.0.1:%s\nFLUX_DB_URL=%s\nFLUX_JWT_SECRET=%s\n' \
            "$FLUX_REALTIME_PORT" "$FLUX_DB_URL" "$JWT_SECRET"
        env | grep -E '^FLUX_REALTIME_[A-Z_]+=' | grep -v '^FLUX_REALTIME_LISTEN=' | sort || true
    } | start_flux_daemon realtime "$(grep -x flux-realtime <<<"$1" || true)"
    # /health answers 200 once the change feed streams.
    wait_for 60 curl -sf -o /dev/null "http://127.0.0.1:$FLUX_REALTIME_PORT/health" ||
        { tail -20 "$FLUX_HOME/log/realtime.log" >&2; die "the realtime server did not start"; }
}

# The router (crates/flux-router): the stack's one origin. Its limits are FLUX_ROUTER_*
# settings (README); those the caller exported pass through.
start_router() {
    {
        printf 'FLUX_ROUTER_LISTEN=127.0.0.1:%s\nFLUX_ROUTER_POSTGREST=127.0.0.1:%s\n' "$FLUX_PORT" "$FLUX_POSTGREST_PORT"
        printf 'FLUX_ROUTER_REALTIME=127.0.0.1:%s\nFLUX_ROUTER_STATIC=%s\n' "$FLUX_REALTIME_PORT" "$FLUX_HOME/web"
        printf 'FLUX_ROUTER_DB_URL=postgres://authenticator:%s@127.0.0.1:%s/postgres\n' \
            "$AUTHENTICATOR_PASSWORD" "$FLUX_DB_PORT"
        env | grep -E '^FLUX_ROUTER_[A-Z_]+=' |
            grep -vE '^FLUX_ROUTER_(LISTEN|POSTGREST|REALTIME|DB_URL|STATIC)=' | sort || true
    } | start_flux_daemon router "$(grep -x flux-router <<<"$1" || true)"
    wait_for 15 curl -sf -o /dev/null -H "apikey: $FLUX_ANON_KEY" \
        "http://127.0.0.1:$FLUX_PORT/rest/v1/market_data?limit=0" ||
        { tail -20 "$FLUX_HOME/log/router.log" >&2; die "the router does not answer on 127.0.0.1:$FLUX_PORT"; }
}

write_env() {
    cat >"$FLUX_HOME/stack.env" <<ENV
FLUX_URL=http://127.0.0.1:$FLUX_PORT
FLUX_API_URL=http://127.0.0.1:$FLUX_PORT/rest/v1
FLUX_REALTIME_URL=ws://127.0.0.1:$FLUX_PORT/realtime/v1
FLUX_DB_URL=$FLUX_DB_URL
FLUX_ANON_KEY=$FLUX_ANON_KEY
FLUX_SERVICE_ROLE_KEY=$FLUX_SERVICE_ROLE_KEY
FLUX_JWT_SECRET=$JWT_SECRET
ENV
    chmod 600 "$FLUX_HOME/stack.env"
}

print_summary() {
    cat <<SUMMARY

Flux is up. Connection details are in $FLUX_HOME/stack.env (source it in your shell):

  Dashboard  http://127.0.0.1:$FLUX_PORT/   (./flux demo brings a demo site to life)
  REST API   http://127.0.0.1:$FLUX_PORT/rest/v1
  Realtime   ws://127.0.0.1:$FLUX_PORT/realtime/v1/websocket
  Database   $FLUX_DB_URL
  anon key          $FLUX_ANON_KEY
  service_role key  $FLUX_SERVICE_ROLE_KEY

Try it:
  curl 'http://127.0.0.1:$FLUX_PORT/rest/v1/mg_device_registry?active=eq.true' \\
    -H 'apikey: $FLUX_ANON_KEY' -H 'Authorization: Bearer $FLUX_ANON_KEY'
  psql '$FLUX_DB_URL'

Stop it with ./flux down.
SUMMARY
}

main() {
    ensure_runtime_deps
    prepare_dirs
    ensure_secrets
    ensure_pg_tree "$PG_TREE"
    install_extension
    init_cluster
    start_postgres "$(configure_cluster)"
    create_extension
    ensure_keys
    FLUX_DB_URL="postgres://postgres:$POSTGRES_PASSWORD@127.0.0.1:$FLUX_DB_PORT/postgres"
    local changed_daemons
    changed_daemons=$(install_daemons)
    build_dashboard
    start_postgrest
    start_realtime "$changed_daemons"
    start_router "$changed_daemons"
    write_env
    [[ ${FLUX_QUIET:-} ]] || print_summary
}

main "$@"
