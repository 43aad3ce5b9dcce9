-- Flux 0.4.0 → 0.5.0: private realtime channels authorised by row-level security on
-- realtime.messages (see sql/realtime.sql), and a partition maintenance move that no
-- concurrent read can miss rows of (see sql/partitions.sql). The update is instant and touches
-- no data. Every object is created exactly as the 0.5.0 install script creates it.

-- Private channels are authorised by row-level security on realtime.messages, with the names
-- and columns Supabase uses, so that its policies carry over. When a role joins a private channel, the realtime
-- server inserts a 'broadcast' and a 'presence' row for its topic and reads them back as that
-- role, with its JWT claims and realtime.topic() set: a row the role's SELECT policies
-- show is the right to hear that extension on the topic. Its right to send is an INSERT of
-- such a row that the role's policies let through. It all runs in a transaction rolled back at
-- once: the table never holds rows. With no policy (the default) only the service role may
-- join a private channel. For example, to let the gateways of a site hear its commands channel:
--   CREATE POLICY site_commands ON realtime.messages FOR SELECT TO authenticated
--       USING (extension = 'broadcast' AND realtime.topic() =
--              'commands:' || (current_setting('request.jwt.claims', true)::jsonb ->> 'site'));
-- The schema is not PostgREST's: the table is not part of the REST API. (A database that already
-- has a schema `realtime`, Supabase's own, cannot take the extension.)
CREATE SCHEMA realtime;
CREATE TABLE realtime.messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    topic text NOT NULL,
    extension text NOT NULL CHECK (extension IN ('broadcast', 'presence')),
    event text,
    payload jsonb,
    private boolean NOT NULL DEFAULT true,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;

-- The topic being authorised (the channel's name without `realtime:`), for policies.
CREATE FUNCTION realtime.topic() RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT nullif(current_setting('realtime.topic', true), '') $$;

GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role;
GRANT SELECT, INSERT ON realtime.messages TO anon, authenticated, service_role;
-- As on the flux tables: a service_role made without BYPASSRLS keeps its rights.
CREATE POLICY service_all ON realtime.messages TO service_role USING (true) WITH CHECK (true);

-- A move of rows out of a default partition locks the table whole while it runs: a read planned
-- before it committed and run after it missed the moved rows.
CREATE OR REPLACE FUNCTION flux_internal.create_partition(parent regclass, t timestamptz, widen_sparse boolean,
                                               source regclass DEFAULT NULL,
                                               OUT partition regclass, OUT moved bigint,
                                               OUT range_lower timestamptz, OUT range_upper timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO'
AS $$
DECLARE
    step interval := (flux_internal.partition_settings(parent)).partition_interval;
    default_part regclass;
    name text;
    columns text;
    sparse boolean;
    moving boolean := false;
BEGIN
    -- One read of the catalog each, before the locks and after: a table has hundreds of
    -- partitions, and premaking calls this for partitions that mostly exist.
    SELECT (array_agg(p.partition) FILTER (WHERE p.is_default))[1],
           min(p.lower) FILTER (WHERE t >= p.lower AND t < p.upper),
           min(p.upper) FILTER (WHERE t >= p.lower AND t < p.upper)
    INTO default_part, range_lower, range_upper
    FROM flux_internal.time_partitions(parent) p;
    IF range_upper IS NOT NULL THEN
        RETURN;
    END IF;
    range_lower := flux_internal.partition_start(t, step);
    range_upper := range_lower + step;
    -- ATTACH locks the registry its foreign key references; taken first, and in the order of
    -- a registry update that cascades to the readings, so neither waits for the other in turn.
    IF parent <> 'flux.market_data'::regclass THEN
        LOCK TABLE flux.mg_device_registry IN SHARE ROW EXCLUSIVE MODE;
    END IF;
    IF default_part IS NOT NULL AND source IS NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT FROM %s)', default_part) INTO STRICT moving;
    END IF;
    EXECUTE format('LOCK TABLE %s IN %s MODE', parent,
                   CASE WHEN moving THEN 'ACCESS EXCLUSIVE' ELSE 'SHARE ROW EXCLUSIVE' END);
    IF default_part IS NOT NULL THEN
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', default_part);
        -- Rows that reached it between the look and the lock would move while reads go on.
        IF NOT moving AND source IS NULL THEN
            EXECUTE format('SELECT EXISTS (SELECT FROM %s)', default_part) INTO STRICT moving;
            IF moving THEN
                RAISE EXCEPTION 'rows arrived in % while a partition of % was being made', default_part, parent
                    USING ERRCODE = '55P03', HINT = 'Try again: the next attempt moves them.';
            END IF;
        END IF;
    END IF;
    -- Sparse: fewer than 1,000 rows to fill the partition with.
    IF widen_sparse AND coalesce(source, default_part) IS NOT NULL AND t < now() - 31 * step THEN
        EXECUTE format('SELECT count(*) < 1000 FROM (SELECT FROM %s WHERE time >= $1 AND time < $2 LIMIT 1000) AS r',
                       coalesce(source, default_part))
            INTO STRICT sparse USING range_lower, range_upper;
        IF sparse THEN
            range_lower := date_trunc('year', t);
            range_upper := least(range_lower + interval '1 year',
                                 greatest(range_upper, flux_internal.partition_start(now() - 31 * step, step)));
        END IF;
    END IF;
    SELECT greatest(range_lower, max(p.upper) FILTER (WHERE p.upper <= t)),
           least(range_upper, min(p.lower) FILTER (WHERE p.lower > t))
    INTO range_lower, range_upper
    FROM flux_internal.time_partitions(parent) p WHERE NOT p.is_default;

    name := (SELECT c.relname FROM pg_class c WHERE c.oid = parent) || '_p'
            || to_char(range_lower, CASE WHEN range_lower = date_trunc('day', range_lower) THEN 'YYYYMMDD' ELSE 'YYYYMMDD_HH24MISS' END);
    EXECUTE format('CREATE TABLE flux_partitions.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
                        CONSTRAINT %I CHECK (time >= %L AND time < %L))',
                   name, parent, name || '_bound', range_lower, range_upper);
    partition := format('flux_partitions.%I', name)::regclass;
    EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', partition);
    moved := 0;
    IF coalesce(source, default_part) IS NOT NULL THEN
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO columns
        FROM pg_attribute a WHERE a.attrelid = parent AND a.attnum > 0 AND NOT a.attisdropped;
        -- The rows change place, not content: the realtime feed leaves out changes made under
        -- this replication origin.
        PERFORM flux_internal.as_maintenance(true);
        BEGIN
            IF source IS NULL THEN
                EXECUTE format('WITH gone AS (DELETE FROM %s WHERE time >= $1 AND time < $2 RETURNING %s)
                                INSERT INTO %s (%s) SELECT %s FROM gone',
                               default_part, columns, partition, columns, columns)
                    USING range_lower, range_upper;
            ELSE
                EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM %s WHERE time >= $1 AND time < $2',
                               partition, columns, columns, source)
                    USING range_lower, range_upper;
            END IF;
            GET DIAGNOSTICS moved = ROW_COUNT;
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            PERFORM flux_internal.as_maintenance(false);
            RAISE;
        END;
        PERFORM flux_internal.as_maintenance(false);
    END IF;
    -- The bound constraint spares ATTACH a scan of the moved rows; it is redundant after.
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                   parent, partition, range_lower, range_upper);
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', partition, name || '_bound');
    PERFORM flux_internal.mirror_table_security(partition);
    PERFORM flux_internal.disable_row_reference_checks();
END
$$;
