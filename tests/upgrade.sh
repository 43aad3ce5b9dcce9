#!/usr/bin/env bash
# Upgrade test: from every installable version of flux, `ALTER EXTENSION flux UPDATE` must keep
# every stored row and end with exactly the schema a fresh `CREATE EXTENSION flux` gives.
# Runs against the cluster of a running stack ($FLUX_HOME); creates and drops its own databases.
set -euo pipefail
# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh"
load_secrets

# The extension's objects as the catalogs describe them. (pg_dump leaves extension members out.)
schema_of() {
    flux_psql_db "$1" -At <<'SQL'
WITH members AS (
    SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'flux' AND d.deptype = 'e'
), rels AS (SELECT objid::regclass AS rel FROM members WHERE classid = 'pg_class'::regclass)
SELECT line FROM (
    SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM members
    UNION ALL SELECT format('column %s.%s %s notnull=%s default=%s', rel, attname, format_type(atttypid, atttypmod),
                            attnotnull, pg_get_expr(adbin, adrelid))
        FROM rels JOIN pg_attribute a ON a.attrelid = rel LEFT JOIN pg_attrdef ad ON ad.adrelid = rel AND ad.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL SELECT format('constraint %s.%s %s', rel, conname, pg_get_constraintdef(c.oid))
        FROM rels JOIN pg_constraint c ON c.conrelid = rel
    UNION ALL SELECT 'index ' || pg_get_indexdef(indexrelid) FROM rels JOIN pg_index ON indrelid = rel
    UNION ALL SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM rels JOIN pg_trigger t ON t.tgrelid = rel WHERE NOT t.tgisinternal
    UNION ALL SELECT format('constraint trigger %s %s of %s enabled=%s', rel, t.tgfoid::regproc, c.conname, t.tgenabled)
        FROM rels JOIN pg_trigger t ON t.tgrelid = rel JOIN pg_constraint c ON c.oid = t.tgconstraint WHERE t.tgisinternal
    UNION ALL SELECT format('relation %s kind=%s rls=%s force=%s replident=%s acl=%s comment=%s partitioned by %s bound %s', rel,
                            relkind, relrowsecurity, relforcerowsecurity, relreplident, relacl, obj_description(rel, 'pg_class'),
                            pg_get_partkeydef(rel), pg_get_expr(relpartbound, rel))
        FROM rels JOIN pg_class c ON c.oid = rel
    UNION ALL SELECT 'dumped with pg_dump ' || cfg::regclass FROM pg_extension, unnest(extconfig) cfg WHERE extname = 'flux'
    -- The time partitions are not members: each must look like the others of its table.
    UNION ALL SELECT DISTINCT format('partition of %s: %s', i.inhparent::regclass,
                                     replace(d.line, c.relname, p.relname || '_p*'))
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
        CROSS JOIN LATERAL (
            SELECT format('rls=%s replident=%s acl=%s', c.relrowsecurity, c.relreplident, c.relacl)
            UNION ALL SELECT 'index ' || pg_get_indexdef(x.indexrelid) FROM pg_index x WHERE x.indrelid = c.oid
            UNION ALL SELECT format('constraint %s', pg_get_constraintdef(k.oid)) FROM pg_constraint k WHERE k.conrelid = c.oid
            UNION ALL SELECT format('trigger %s enabled=%s', t.tgfoid::regproc, t.tgenabled) FROM pg_trigger t WHERE t.tgrelid = c.oid
        ) d(line)
        WHERE i.inhparent IN (SELECT rel FROM rels) AND c.relnamespace = 'flux_partitions'::regnamespace
          AND c.oid NOT IN (SELECT rel FROM rels)
    UNION ALL SELECT format('column comment %s.%s %s', rel, attname, col_description(rel, attnum))
        FROM rels JOIN pg_attribute ON attrelid = rel WHERE attnum > 0 AND col_description(rel, attnum) IS NOT NULL
    UNION ALL SELECT format('policy %s.%s %s %s using=%s check=%s', rel, polname, polcmd,
                            polroles::regrole[], pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid))
        FROM rels JOIN pg_policy ON polrelid = rel
    UNION ALL SELECT format('function %s acl=%s %s', p.oid::regprocedure, proacl, pg_get_functiondef(p.oid))
        FROM members m JOIN pg_proc p ON p.oid = m.objid WHERE m.classid = 'pg_proc'::regclass AND p.prokind <> 'a'
    UNION ALL SELECT format('schema %s acl=%s', nspname, nspacl) FROM pg_namespace
        WHERE nspname IN ('flux', 'flux_internal', 'flux_partitions', 'realtime')
    UNION ALL SELECT 'published ' || pr.prrelid::regclass FROM pg_publication_rel pr
        JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = 'supabase_realtime'
) described(line)
ORDER BY line;
SQL
}

# Calls every read function of the extension on the stored data: rows and energy.
calls_of() {
    flux_psql_db "$1" -Atc "
        SELECT count(*) || ' ' || round(sum(energy_imported_active_delta)::numeric, 6) FROM flux.get_meter_readings_5m('2024-01-01', '2024-01-02', NULL)
        UNION ALL SELECT count(*) || ' ' || round(sum(energy_imported_active_delta)::numeric, 6) FROM flux.get_meter_readings_30m('2024-01-01', '2024-01-02', NULL)
        UNION ALL SELECT count(*) || ' ' || round(sum(energy_imported_active_delta)::numeric, 6) FROM flux.meter_energy_buckets('2024-01-01', '2024-01-02', interval '1 hour', NULL)
        UNION ALL SELECT count(*)::text FROM flux.settlement_period('2024-01-01T12:00Z')"
}

# Every stored row, in a stable order, as one checksum per table.
data_of() {
    flux_psql_db "$1" -Atc "
        SELECT 'devices ' || count(*) || ' ' || md5(string_agg(to_jsonb(d)::text, ',' ORDER BY id)) FROM flux.mg_device_registry d
        UNION ALL SELECT 'bess ' || count(*) || ' ' || md5(string_agg(to_jsonb(b)::text, ',' ORDER BY device_id, time)) FROM flux.mg_bess_readings b
        UNION ALL SELECT 'meter ' || count(*) || ' ' || md5(string_agg(to_jsonb(m)::text, ',' ORDER BY device_id, time)) FROM flux.mg_meter_readings m
        UNION ALL SELECT 'market ' || count(*) || ' ' || md5(string_agg(to_jsonb(x)::text, ',' ORDER BY type, time)) FROM flux.market_data x"
}

fresh=flux_upgrade_fresh
current=$(flux_psql -Atc "SELECT default_version FROM pg_available_extensions WHERE name = 'flux'")
versions=$(flux_psql -Atc "SELECT version FROM pg_available_extension_versions WHERE name = 'flux' ORDER BY version")
[[ -n $versions ]] || die "no installable flux version found"

flux_psql -c "DROP DATABASE IF EXISTS $fresh" -c "CREATE DATABASE $fresh"
flux_psql_db "$fresh" -c "CREATE EXTENSION flux" -c "SELECT count(*) FROM flux.run_maintenance()" >/dev/null
expected_schema=$(schema_of "$fresh")
# The comparison below is only as good as the description: make sure it sees the extension.
for object in "member table flux.mg_meter_readings" "policy flux.mg_meter_readings.insert_at_claimed_sites" \
    "function flux_internal.pre_request()" "constraint flux.mg_bess_readings.soe_between_0_and_100" \
    "published flux.mg_bess_readings" "trigger CREATE TRIGGER check_metadata" "policy realtime.messages.service_all" \
    "relation flux.mg_meter_readings kind=p" "partition of flux.mg_meter_readings: index" \
    "constraint trigger flux.mg_meter_readings \"RI_FKey_check_ins\"" "dumped with pg_dump flux.mg_device_registry"; do
    grep -qF -- "$object" <<<"$expected_schema" || die "the schema description lacks \"$object\""
done

failures=0
for version in $versions; do
    db=flux_upgrade_from_${version//./_}
    flux_psql -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    flux_psql_db "$db" -c "CREATE EXTENSION flux VERSION '$version'"
    flux_psql_db "$db" <<'SQL'
INSERT INTO flux.mg_device_registry (id, name, type, site, metadata)
VALUES ('123e4567-e89b-12d3-a456-426614174000', 'WLCE-BESS-01', 'bess', 'WLCE', '{"max_power": 100}'),
       ('223e4567-e89b-12d3-a456-426614174000', 'WLCE-METER-01', 'meter', 'WLCE', '{"max_power_kw": 250}');
INSERT INTO flux.mg_bess_readings (device_id, time, soe, target_power, available_inverter_blocks, command_source)
SELECT '123e4567-e89b-12d3-a456-426614174000', t, 50 + 10 * sin(extract(epoch FROM t) / 3600), -25, 4, 1
FROM generate_series('2024-01-01'::timestamptz, '2024-01-02', '1 minute') t;
INSERT INTO flux.mg_meter_readings (device_id, time, power_total_active, energy_imported_active, energy_exported_active)
SELECT '223e4567-e89b-12d3-a456-426614174000', t, 120, 1000 + row_number() OVER (ORDER BY t) * 2, 0
FROM generate_series('2024-01-01'::timestamptz, '2024-01-02', '1 minute') t;
-- Strays: years apart (year partitions), 40 days ago (a year partition must stop short of
-- recent days), far in the future.
INSERT INTO flux.mg_bess_readings (device_id, time, soe)
SELECT '123e4567-e89b-12d3-a456-426614174000', t, 42
FROM unnest(ARRAY['1999-06-01 00:00+00', '2010-03-15 12:00+00', now() - interval '40 days', '2200-01-01 00:00+00']::timestamptz[]) t;
INSERT INTO flux.market_data (time, type, value, metadata)
VALUES ('2024-01-01T12:00:00Z', 1, -150.5, '{"confidence": 0.85, "settlement_period": 24}');
SQL
    before=$(data_of "$db")
    # The current library serves the old schema until the update: its functions still work.
    energy_before=$(calls_of "$db") || { say "FAIL $version: its functions fail on the current library"; failures=$((failures + 1)); }
    # In a session whose date style prints zone abbreviations that read back wrong (CST is
    # US Central to PostgreSQL): the conversion must not depend on the session.
    flux_psql_db "$db" -c "SET DateStyle = 'SQL, DMY'" -c "SET TimeZone = 'Asia/Shanghai'" \
        -c "ALTER EXTENSION flux UPDATE" -c "SELECT count(*) FROM flux.run_maintenance()" >/dev/null
    after=$(data_of "$db")
    got_version=$(flux_psql_db "$db" -Atc "SELECT extversion FROM pg_extension WHERE extname = 'flux'")
    # Maintenance materialised the energy rollups of the stored readings: same figures.
    energy_after=$(calls_of "$db") || { say "FAIL $version: the updated functions fail"; failures=$((failures + 1)); }
    rollup_rows=$(flux_psql_db "$db" -Atc "SELECT count(*) FROM flux_internal.meter_rollup_5m")
    if [[ $got_version != "$current" ]]; then
        say "FAIL $version: after UPDATE the version is $got_version, not $current"; failures=$((failures + 1))
    elif [[ $before != "$after" ]]; then
        say "FAIL $version: stored data changed during the update"; diff <(echo "$before") <(echo "$after") >&2 || true
        failures=$((failures + 1))
    elif [[ $energy_before != "$energy_after" ]] || ((rollup_rows < 288)); then
        say "FAIL $version: the energy figures changed ($rollup_rows rollup rows)"; diff <(echo "$energy_before") <(echo "$energy_after") >&2 || true
        failures=$((failures + 1))
    elif [[ $(flux_psql_db "$db" -Atc "SELECT count(*) FROM flux_internal.time_partitions('flux.mg_bess_readings') p
                                        WHERE p.upper > now() - interval '31 days' AND p.upper - p.lower > interval '1 day'") != 0 ]]; then
        say "FAIL $version: a partition wider than a day reaches into the last 31 days"; failures=$((failures + 1))
    elif ! diff -u <(echo "$expected_schema") <(schema_of "$db") >&2; then
        say "FAIL $version: the updated schema differs from a fresh install (diff above)"; failures=$((failures + 1))
    else
        say "ok   $version -> $current: $(echo "$before" | tr '\n' ' ')"
    fi
    flux_psql -c "DROP DATABASE $db"
done
flux_psql -c "DROP DATABASE $fresh"
((failures == 0)) || die "$failures upgrade path(s) failed"
