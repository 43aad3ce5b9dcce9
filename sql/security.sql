-- Who may do what. Objects created by CREATE EXTENSION belong to the installing role, so the API
-- roles get explicit grants here; default privileges would not cover them.
--
--   anon           read every table
--   authenticated  read every table; insert readings for devices at the sites listed in the
--                  `sites` claim of its JWT (an array of site codes, or one code)
--   service_role   read and write every table (BYPASSRLS)
--
-- Row-level security is on for every table, so a role only ever sees or writes rows a policy
-- grants it. A refused write is a 401 (anon) or 403 (authenticated) and stores nothing.

GRANT USAGE ON SCHEMA flux TO anon, authenticated, service_role;

GRANT SELECT ON flux.mg_device_registry, flux.mg_bess_readings, flux.mg_meter_readings,
    flux.market_data TO anon, authenticated;
-- The measured columns only: `id` and `created_at` are the database's to set.
GRANT INSERT (time, device_id, soe, target_power, available_inverter_blocks, command_source)
    ON flux.mg_bess_readings TO authenticated;
GRANT INSERT (time, device_id, power_total_active, energy_imported_active, energy_exported_active,
              voltage_line_average, current_phase_average)
    ON flux.mg_meter_readings TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON flux.mg_device_registry, flux.mg_bess_readings,
    flux.mg_meter_readings, flux.market_data TO service_role;

ALTER TABLE flux.mg_device_registry ENABLE ROW LEVEL SECURITY;
ALTER TABLE flux.mg_bess_readings ENABLE ROW LEVEL SECURITY;
ALTER TABLE flux.mg_meter_readings ENABLE ROW LEVEL SECURITY;
ALTER TABLE flux.market_data ENABLE ROW LEVEL SECURITY;

CREATE POLICY read_all ON flux.mg_device_registry FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY read_all ON flux.mg_bess_readings FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY read_all ON flux.mg_meter_readings FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY read_all ON flux.market_data FOR SELECT TO anon, authenticated USING (true);

-- service_role is created BYPASSRLS, but a database may already have one without it.
CREATE POLICY service_all ON flux.mg_device_registry TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_all ON flux.mg_bess_readings TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_all ON flux.mg_meter_readings TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_all ON flux.market_data TO service_role USING (true) WITH CHECK (true);

-- The site codes of the request's JWT claims (PostgREST's request.jwt.claims).
CREATE FUNCTION flux_internal.claimed_sites() RETURNS text[]
LANGUAGE sql STABLE
AS $$
    SELECT CASE jsonb_typeof(claims -> 'sites')
               WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(claims -> 'sites'))
               WHEN 'string' THEN ARRAY[claims ->> 'sites']
               ELSE '{}'::text[]
           END
    FROM (SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb) AS c(claims)
$$;

-- `(SELECT claimed_sites())` is an initplan and the uncorrelated IN a hashed subplan: the
-- claims and the devices at the claimed sites are read once per statement, and each inserted
-- row costs one hash lookup rather than an index probe.
CREATE POLICY insert_at_claimed_sites ON flux.mg_bess_readings FOR INSERT TO authenticated
    WITH CHECK (device_id IN (SELECT d.id FROM flux.mg_device_registry d
                              WHERE d.site = ANY ((SELECT flux_internal.claimed_sites())::text[])));
CREATE POLICY insert_at_claimed_sites ON flux.mg_meter_readings FOR INSERT TO authenticated
    WITH CHECK (device_id IN (SELECT d.id FROM flux.mg_device_registry d
                              WHERE d.site = ANY ((SELECT flux_internal.claimed_sites())::text[])));

-- A partition answers to its table's policies, but PostgreSQL checks a few things on the
-- partition itself: the key of a duplicate is reported (23505 details) only to a role that
-- may read the partition and is not subject to its row-level security. So each partition
-- carries its table's privileges and has row-level security on, like its table; the roles
-- still cannot reach it directly, as they have no access to the flux_partitions schema.
CREATE FUNCTION flux_internal.mirror_table_security(partition regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    grant_sql text;
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', partition);
    FOR grant_sql IN
        SELECT format('GRANT %s ON %s TO %s', acl.privilege_type, partition,
                      CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END)
        FROM pg_inherits i
        JOIN pg_class parent ON parent.oid = i.inhparent
        CROSS JOIN LATERAL aclexplode(parent.relacl) acl
        LEFT JOIN pg_roles r ON r.oid = acl.grantee
        WHERE i.inhrelid = partition AND acl.grantee <> parent.relowner
    LOOP
        EXECUTE grant_sql;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION flux_internal.mirror_table_security(regclass) FROM PUBLIC;

SELECT flux_internal.mirror_table_security(p)
FROM unnest(ARRAY['flux_partitions.mg_bess_readings_default', 'flux_partitions.mg_meter_readings_default',
                  'flux_partitions.market_data_default']::regclass[]) AS p;
