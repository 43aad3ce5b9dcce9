#!/usr/bin/env bash
# Cost of the API edge (api key check + rate limit in db-pre-request) on GET throughput.
#
# Three PostgREST 12.0.2 servers with the stack's configuration serve the same database:
#   bare   no db-pre-request
#   noop   db-pre-request = a plpgsql function that does nothing (the cost of the hook itself:
#          PostgREST runs it as one more statement per request)
#   hdrs   db-pre-request = a plpgsql function that only sets three fixed X-RateLimit-* headers
#          (what PostgREST pays to parse and send them)
#   guard  the stack's own, db-pre-request = flux_internal.pre_request
# wrk drives each in turn, in rounds whose order rotates; the medians are compared. The tiers are
# raised for the run (so nothing is refused) and restored afterwards.
#
#   ./flux bench edge [--rounds 5] [--seconds 5] [--connections 16]
set -euo pipefail
# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../stack/lib.sh"
load_secrets

rounds=5 seconds=5 connections=16
while (($#)); do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done
command -v wrk >/dev/null || { say "installing wrk"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[[ -f $FLUX_HOME/conf/postgrest.conf ]] || die "start the stack first: ./flux up"

saved=$(flux_psql -Atc "SELECT string_agg(name || '=' || setting, ' ') FROM pg_settings WHERE name LIKE 'flux.rate_limit_%'")
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    for kv in $saved; do flux_psql -c "ALTER SYSTEM SET ${kv%%=*} = ${kv#*=}"; done
    flux_psql -c "SELECT pg_reload_conf()" -c "DROP FUNCTION IF EXISTS public.flux_bench_noop_pre_request()" \
        -c "DROP FUNCTION IF EXISTS public.flux_bench_headers_pre_request()" >/dev/null
}
trap cleanup EXIT
for kv in $saved; do flux_psql -c "ALTER SYSTEM SET ${kv%%=*} = 2000000000"; done
flux_psql -c "SELECT pg_reload_conf()" >/dev/null
flux_psql -c "CREATE OR REPLACE FUNCTION public.flux_bench_noop_pre_request() RETURNS void LANGUAGE plpgsql AS 'BEGIN END'"
flux_psql <<'SQL'
CREATE OR REPLACE FUNCTION public.flux_bench_headers_pre_request() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('response.headers',
        '[{"X-RateLimit-Limit":"60"},{"X-RateLimit-Remaining":"59"},{"X-RateLimit-Reset":"1800000000"}]', true);
END $$;
SQL

# Starts a copy of the stack's PostgREST on port $1 with db-pre-request $2 (empty: none).
start_postgrest() {
    local port=$1 hook=$2 conf=$FLUX_HOME/conf/postgrest-bench-$1.conf
    grep -v '^db-pre-request' "$FLUX_HOME/conf/postgrest.conf" | sed "s/^server-port = .*/server-port = $port/" >"$conf"
    [[ -n $hook ]] && echo "db-pre-request = \"$hook\"" >>"$conf"
    "$POSTGREST_BIN" "$conf" >"$FLUX_HOME/log/postgrest-bench-$port.log" 2>&1 &
    pids+=($!)
    wait_for 30 curl -s -o /dev/null "http://127.0.0.1:$port/" || die "PostgREST on $port did not start"
}
bare_port=$((FLUX_PORT + 10)) noop_port=$((FLUX_PORT + 11)) hdrs_port=$((FLUX_PORT + 12))
start_postgrest "$bare_port" ""
start_postgrest "$noop_port" public.flux_bench_noop_pre_request
start_postgrest "$hdrs_port" public.flux_bench_headers_pre_request

# A small, realistic read: the latest market signal.
flux_psql -c "INSERT INTO flux.market_data (time, type, value) VALUES ('2024-01-01T12:00Z', 1, -150.5) ON CONFLICT DO NOTHING"
path="/market_data?type=eq.1&order=time.desc&limit=1"
run() {
    local out
    out=$(wrk -t2 -c"$connections" -d"${seconds}s" -H "apikey: $FLUX_ANON_KEY" \
        -H "Authorization: Bearer $FLUX_ANON_KEY" "http://127.0.0.1:$1$path")
    grep -q "Non-2xx" <<<"$out" && die "port $1 answered errors: $out"
    awk '/Requests\/sec/ {print $2}' <<<"$out"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for port in "$bare_port" "$noop_port" "$hdrs_port" "$FLUX_POSTGREST_PORT"; do run "$port" >/dev/null; done # warm up
bare=() noop=() hdrs=() guard=()
# The order rotates every round, so that no variant always runs first or last.
variants=(bare noop hdrs guard)
declare -A port_of=([bare]=$bare_port [noop]=$noop_port [hdrs]=$hdrs_port [guard]=$FLUX_POSTGREST_PORT)
for ((i = 0; i < rounds; i++)); do
    for ((j = 0; j < 4; j++)); do
        v=${variants[$(((i + j) % 4))]}
        declare -n results=$v
        results+=("$(run "${port_of[$v]}")")
        unset -n results
    done
done
b=$(printf '%s\n' "${bare[@]}" | median)
n=$(printf '%s\n' "${noop[@]}" | median)
h=$(printf '%s\n' "${hdrs[@]}" | median)
g=$(printf '%s\n' "${guard[@]}" | median)
echo
echo "edge benchmark: GET $path (1 row), wrk 2 threads × $connections connections,"
echo "$rounds alternating rounds × $seconds s, medians, PostgREST direct (no router)"
printf '  bare   no pre-request           %8.0f req/s   (%s)\n' "$b" "${bare[*]}"
printf '  noop   empty pre-request hook   %8.0f req/s   (%s)\n' "$n" "${noop[*]}"
printf '  hdrs   hook setting 3 headers   %8.0f req/s   (%s)\n' "$h" "${hdrs[*]}"
printf '  guard  flux api key + limits    %8.0f req/s   (%s)\n' "$g" "${guard[*]}"
awk -v b="$b" -v n="$n" -v h="$h" -v g="$g" 'BEGIN {
    printf "  guard/bare = %.3f: throughput cost %.1f %% (goal <= 5 %%)\n", g / b, (1 - g / b) * 100
    printf "  hook mechanism: noop/bare = %.3f; plus the headers: hdrs/bare = %.3f; the checks: guard/hdrs = %.3f\n", n / b, h / b, g / h
}'
