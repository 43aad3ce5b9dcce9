# shellcheck shell=bash
# Shared settings and helpers for the stack scripts. Sourced, not run.
# shellcheck disable=SC2034 # the settings are for the scripts that source this file
#
# Everything the stack owns lives under $FLUX_HOME (default: .flux/ in the checkout):
#   pg/      the stack's own PostgreSQL 15 installation (see ensure_pg_tree): its flux library
#            and scripts are the ones this stack built, whatever another stack or a test installs
#   pgdata/  the PostgreSQL cluster (owned by the postgres user)
#   run/     pid files and checksums      log/  logs      socket/  PostgreSQL's socket
# Only pgdata/, socket/ and log/postgresql.log belong to the postgres user; the rest is root's,
# so that what root writes or trusts there cannot be swapped by another account.
#   bin/     the stack's copies of the realtime server and the router
#   conf/    generated PostgREST configuration, and the daemons' environments
#   secrets.env  generated passwords and JWT secret (mode 600)
#   stack.env    what clients need: URLs and keys
# Ports derive from FLUX_PORT (the router), so a second stack (the tests) can run beside the first.

FLUX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FLUX_HOME=${FLUX_HOME:-$FLUX_ROOT/.flux}
FLUX_PORT=${FLUX_PORT:-54321}                 # router: /rest/v1/, /realtime/v1/
FLUX_DB_PORT=${FLUX_DB_PORT:-$((FLUX_PORT + 1))}
FLUX_POSTGREST_PORT=${FLUX_POSTGREST_PORT:-$((FLUX_PORT + 3))}
FLUX_REALTIME_PORT=${FLUX_REALTIME_PORT:-$((FLUX_PORT + 4))}
FLUX_CACHE=${FLUX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flux}
# Debian's PostgreSQL 15: the extension is built against it, and each stack runs a copy of it.
PG_SYSTEM_BIN=/usr/lib/postgresql/15/bin
PG_SYSTEM_CONFIG=$PG_SYSTEM_BIN/pg_config
PG_TREE=$FLUX_HOME/pg
PG_BIN=$PG_TREE/lib/postgresql/15/bin
PGDATA=$FLUX_HOME/pgdata
POSTGREST_VERSION=12.0.2
POSTGREST_BIN=$FLUX_CACHE/postgrest-$POSTGREST_VERSION/postgrest
NODE22_VERSION=22.23.3
NODE22_BIN=$FLUX_CACHE/node-$NODE22_VERSION/bin/node

export PATH="$HOME/.cargo/bin:$PATH"
# `&` in a substitution's replacement means the match in bash 5.2: render() wants it literal.
shopt -u patsub_replacement 2>/dev/null || true

say() { printf '\033[1m[flux]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[flux] error:\033[0m %s\n' "$*" >&2; exit 1; }

as_postgres() { sudo -u postgres -- "$@"; }

# Renders a template: every @NAME@ is replaced by the value of the shell variable NAME.
render() {
    local template=$1 out=$2 name
    local content
    content=$(<"$template")
    while [[ $content =~ @([A-Z_0-9]+)@ ]]; do
        name=${BASH_REMATCH[1]}
        [[ -v $name ]] || die "template $template uses @$name@, which is not set"
        content=${content//@$name@/${!name}}
    done
    printf '%s\n' "$content" >"$out"
}

# Waits until `$@` succeeds, for at most $1 seconds.
wait_for() {
    local seconds=$1; shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# Whether the pid in file $1 is a live process whose command line contains $2: a stale pid
# file (after a reboot) must not make us signal an unrelated process.
pid_alive() {
    [[ -f $1 ]] || return 1
    local pid
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

# A private PostgreSQL 15 installation in $1, laid out like Debian's under /usr: PostgreSQL
# finds its lib and share directories relative to its own binary (after resolving symlinks),
# so the binaries are copies, and everything else links to Debian's files. Only the extension
# directory's flux files and lib/flux.so are the tree's own: a stack (or the pgrx tests)
# installs its build there, and nothing on the machine is touched. Rebuilt when Debian's
# PostgreSQL changes (a minor update), so that binaries and modules always match.
ensure_pg_tree() {
    local tree=$1 stamp=$1/.debian-postgres
    local version
    version=$( (sha256sum "$PG_SYSTEM_BIN/postgres"; ls /usr/lib/postgresql/15/lib /usr/share/postgresql/15/extension) |
        sha256sum | cut -d' ' -f1)
    [[ -f $stamp && $(<"$stamp") == "$version" ]] && return
    say "preparing a private PostgreSQL installation in $tree"
    local bin=$tree/lib/postgresql/15/bin lib=$tree/lib/postgresql/15/lib
    local share=$tree/share/postgresql/15 entry
    rm -rf "$bin"
    install -d "$bin" "$lib" "$share/extension" "$tree/include"
    cp -p "$PG_SYSTEM_BIN"/* "$bin/"
    for entry in /usr/lib/postgresql/15/lib/*; do
        [[ ${entry##*/} == flux.so ]] || ln -sfn "$entry" "$lib/"
    done
    for entry in /usr/share/postgresql/15/*; do
        [[ ${entry##*/} == extension ]] || ln -sfn "$entry" "$share/"
    done
    for entry in /usr/share/postgresql/15/extension/*; do
        [[ ${entry##*/} == flux[-.]* ]] || ln -sfn "$entry" "$share/extension/"
    done
    # pg_config of the tree reports $tree/include as well (cargo pgrx builds against it).
    ln -sfn /usr/include/postgresql "$tree/include/"
    [[ $("$bin/pg_config" --pkglibdir) == "$lib" ]] ||
        die "PostgreSQL in $tree does not find its own lib directory: cannot isolate the stack"
    echo "$version" >"$stamp"
}

pg_running() { as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

load_secrets() {
    # shellcheck disable=SC1091
    [[ -f $FLUX_HOME/secrets.env ]] && source "$FLUX_HOME/secrets.env"
}

# psql as the superuser, over TCP with the generated password: `flux_psql_db DB args...`.
flux_psql_db() {
    local db=$1; shift
    PGPASSWORD=$POSTGRES_PASSWORD PGOPTIONS="-c client_min_messages=warning" psql -X -q \
        -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$FLUX_DB_PORT" -U postgres -d "$db" "$@"
}
flux_psql() { flux_psql_db postgres "$@"; }
