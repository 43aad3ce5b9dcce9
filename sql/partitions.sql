-- Time partitions: creation ahead of time, rows moved out of the default partitions, retention.
--
-- mg_bess_readings, mg_meter_readings and market_data are partitioned by range of `time`
-- (sql/tables.sql). Partitions are aligned to their table's interval, counted in UTC from
-- 2000-01-01: days and hours with date_bin, months from January 2000. Defaults:
--   readings     1 day   ~86 M rows a day for 10,000 devices at one reading per 10 s, some
--                        16 GB with indexes: the index pages being written stay in memory,
--                        retention frees a day at a time, and two years are 730
--                        partitions (what that costs a query: README, Benchmarks).
--   market_data  1 month ~200 rows a day: fewer, larger partitions.
-- Maintenance runs in steps, each one action in its own transaction when the background
-- worker runs them (src/maintenance.rs), or all in one when flux.run_maintenance() is called:
--   1. partitions are created ahead of time: the current one and `premake` more;
--   2. past the retention horizon, whole partitions are dropped, oldest first; never row by
--      row. A meter partition is dropped only once the energy of its time is kept elsewhere.
--   3. rows in a default partition (a back-fill, a clock in the future) move to a partition of
--      their own, oldest first (last, so that a move that cannot finish holds up nothing else);
--   4. the per-row reference checks on new partitions are disabled (sql/references.sql).
-- Locks, each waited for at most flux.maintenance_lock_timeout (200 ms) before the step gives
-- up until the next round, which bounds how long maintenance holds up queries queued behind:
--   creating a partition  SHARE ROW EXCLUSIVE on the table (writes wait, reads go on) and on
--                         the registry (its foreign key), ACCESS EXCLUSIVE on its default
--                         partition, for a few milliseconds,
--                         plus the time to move the default partition's rows of its range;
--   dropping a partition  ACCESS EXCLUSIVE on the table, for a catalog update.

-- Settings per table; a table without a row has the defaults of flux_internal.partition_settings.
CREATE TABLE flux_internal.partition_config (
    parent             regclass PRIMARY KEY,
    partition_interval interval,
    premake            integer,
    retention          interval,
    CONSTRAINT partition_config_parent_known
        CHECK (parent IN ('flux.mg_bess_readings'::regclass, 'flux.mg_meter_readings'::regclass,
                          'flux.market_data'::regclass))
);
COMMENT ON TABLE flux_internal.partition_config IS
    'Partition interval, partitions made ahead and retention of the partitioned flux tables; NULL = default. Set with flux.set_partition_interval and flux.set_retention.';
SELECT pg_catalog.pg_extension_config_dump('flux_internal.partition_config', '');

CREATE FUNCTION flux_internal.partition_settings(
    parent regclass,
    OUT partition_interval interval, OUT premake integer, OUT retention interval)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(c.partition_interval,
                    CASE WHEN $1 = 'flux.market_data'::regclass THEN interval '1 month' ELSE interval '1 day' END),
           coalesce(c.premake, CASE WHEN $1 = 'flux.market_data'::regclass THEN 2 ELSE 3 END),
           c.retention
    FROM (SELECT) AS one
    LEFT JOIN flux_internal.partition_config c ON c.parent = $1
$$;

-- The partitioned flux tables, in the order maintenance visits them.
CREATE FUNCTION flux_internal.partitioned_tables() RETURNS SETOF regclass
LANGUAGE sql IMMUTABLE
AS $$
    VALUES ('flux.mg_bess_readings'::regclass), ('flux.mg_meter_readings'::regclass),
           ('flux.market_data'::regclass)
$$;

-- The partitions of a table and their bounds, read from the catalog (so partitions made or
-- dropped by hand count too). Bounds print in the session's date style and are read back in
-- the same session: callers set DateStyle ISO, whose numeric offsets read back exactly in any
-- time zone (other styles print zone abbreviations, some ambiguous: CST). MINVALUE/MAXVALUE
-- bounds read as -/+infinity.
CREATE FUNCTION flux_internal.time_partitions(parent regclass)
RETURNS TABLE (partition regclass, lower timestamptz, upper timestamptz, is_default boolean)
LANGUAGE sql STABLE
AS $$
    -- No SET clause, so that callers inline it: planned in each caller, it is 20 times faster.
    -- A bound holds constants only: it deparses without opening the partition (relid 0), to
    -- DEFAULT or FOR VALUES FROM ('lower') TO ('upper'), either side possibly MINVALUE/MAXVALUE.
    SELECT c.oid::pg_catalog.regclass,
           CASE WHEN b.bound = 'DEFAULT' THEN NULL
                WHEN b.from_min THEN '-infinity'
                ELSE pg_catalog.split_part(b.bound, '''', 2)::pg_catalog.timestamptz END,
           CASE WHEN b.bound = 'DEFAULT' THEN NULL
                WHEN b.bound LIKE '% TO (MAXVALUE)' THEN 'infinity'
                ELSE pg_catalog.split_part(b.bound, '''', CASE WHEN b.from_min THEN 2 ELSE 4 END)::pg_catalog.timestamptz END,
           b.bound = 'DEFAULT'
    FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (
        SELECT e.bound, e.bound LIKE 'FOR VALUES FROM (MINVALUE)%' AS from_min
        FROM (SELECT pg_catalog.pg_get_expr(c.relpartbound, 0) AS bound OFFSET 0) e
    ) b
    WHERE i.inhparent = $1
$$;

-- The start of the partition of `step` that holds `t`.
CREATE FUNCTION flux_internal.partition_start(t timestamptz, step interval) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET TimeZone = 'UTC'
AS $$
    SELECT CASE
        WHEN extract(year FROM step) = 0 AND extract(month FROM step) = 0
            THEN date_bin(step, t, timestamptz '2000-01-01 00:00+00')
        ELSE (SELECT make_timestamptz(2000 + floor(k / 12)::int, (k - 12 * floor(k / 12))::int + 1, 1, 0, 0, 0, 'UTC')
              FROM (SELECT floor(((extract(year FROM t) - 2000) * 12 + extract(month FROM t) - 1) / s) * s AS k
                    FROM (SELECT extract(year FROM step) * 12 + extract(month FROM step) AS s) AS months) AS start)
    END
$$;

-- How many partitions of `step` [from_time, to_time) spans, at most.
CREATE FUNCTION flux_internal.partition_count(from_time timestamptz, to_time timestamptz, step interval)
RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT
SET TimeZone = 'UTC'
AS $$
    SELECT CASE
        WHEN extract(year FROM step) = 0 AND extract(month FROM step) = 0
            THEN ceil(extract(epoch FROM to_time - from_time) / extract(epoch FROM step)) + 1
        ELSE ceil(((extract(year FROM to_time) - extract(year FROM from_time)) * 12
                   + extract(month FROM to_time) - extract(month FROM from_time))
                  / (extract(year FROM step) * 12 + extract(month FROM step))) + 1
    END
$$;

-- The interval a table's partitions may have: whole months (at most 10 years), or a fixed
-- length from 1 hour to 366 days; not both, and never negative.
CREATE FUNCTION flux_internal.check_partition_interval(step interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    months numeric := extract(year FROM step) * 12 + extract(month FROM step);
    fixed interval := step - make_interval(months => months::int);
BEGIN
    IF (months <> 0 AND fixed <> interval '0')
       OR (months <> 0 AND NOT months BETWEEN 1 AND 120)
       OR (months = 0 AND NOT justify_hours(fixed) BETWEEN interval '1 hour' AND interval '366 days')
       OR extract(epoch FROM fixed) <> trunc(extract(epoch FROM fixed)) THEN
        RAISE EXCEPTION 'invalid partition interval: %', step
            USING ERRCODE = '22023',
                  HINT = 'Use whole months (1 month to 10 years) or a fixed length from 1 hour to 366 days, e.g. ''1 day''.';
    END IF;
END
$$;

-- Refuses anything but a partitioned flux table.
CREATE FUNCTION flux_internal.check_partitioned_table(tbl regclass) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF tbl IS NULL OR tbl NOT IN (SELECT flux_internal.partitioned_tables()) THEN
        RAISE EXCEPTION '% is not a time-partitioned flux table', coalesce(tbl::text, 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'flux.mg_bess_readings, flux.mg_meter_readings and flux.market_data are.';
    END IF;
END
$$;

CREATE FUNCTION flux.set_partition_interval(tbl regclass, partition_interval interval)
RETURNS interval
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM flux_internal.check_partitioned_table(tbl);
    IF partition_interval IS NOT NULL THEN
        PERFORM flux_internal.check_partition_interval(partition_interval);
    END IF;
    INSERT INTO flux_internal.partition_config AS c (parent, partition_interval)
    VALUES (tbl, partition_interval)
    ON CONFLICT (parent) DO UPDATE SET partition_interval = excluded.partition_interval;
    RETURN (flux_internal.partition_settings(tbl)).partition_interval;
END
$$;
COMMENT ON FUNCTION flux.set_partition_interval(regclass, interval) IS
    'Sets the length of the partitions maintenance creates from now on for a flux table (e.g. ''1 day'', ''6 hours'', ''1 month''; NULL = the default); returns it. Existing partitions keep theirs.';

CREATE FUNCTION flux.set_retention(tbl regclass, keep interval) RETURNS interval
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM flux_internal.check_partitioned_table(tbl);
    IF keep IS NOT NULL AND (keep <= interval '0' OR keep > interval '10000 years') THEN
        RAISE EXCEPTION 'invalid retention: %', keep
            USING ERRCODE = '22023', HINT = 'Give a positive interval, e.g. ''90 days'', or NULL to keep data forever.';
    END IF;
    INSERT INTO flux_internal.partition_config AS c (parent, retention)
    VALUES (tbl, keep)
    ON CONFLICT (parent) DO UPDATE SET retention = excluded.retention;
    RETURN keep;
END
$$;
COMMENT ON FUNCTION flux.set_retention(regclass, interval) IS
    'Keeps a flux table''s rows for `keep` (NULL = forever, the default): maintenance drops whole partitions that end before now() - keep. Meter readings go only once their energy is kept in the rollups.';

-- Creates and attaches the partition that holds `t`: aligned to the table's interval and
-- clipped to its neighbours. With `widen_sparse`, where the default partition has few rows
-- near `t` (a stray more than 31 intervals in the past), the partition spans the calendar
-- year instead, so that scattered back-fills cannot make thousands of partitions (never
-- within 31 intervals of now: live data would land in it, and retention could not free it).
-- Moves the default partition's rows of that range into it first, or copies those of
-- `source` (the upgrade from 0.1.0 fills partitions from the old tables so). Returns the new
-- partition (NULL when one already held `t`), the rows moved, and the bounds of the partition
-- that holds `t`, new or not.
--
-- Writes to the table wait meanwhile (SHARE ROW EXCLUSIVE): an insert bound for the default
-- partition that had been routed before the new partition was attached would fail its
-- partition check, and a reading must never fail for want of a partition. Reads go on, unless
-- the default partition holds rows: then the table is locked whole (ACCESS EXCLUSIVE), since a
-- read planned before the move commits and run after it would find the moved rows neither in
-- the default partition (deleted) nor in the new one (unknown to its plan). Without rows to
-- move that is a few milliseconds; moving rows takes time in proportion to them, which
-- flux.create_partitions ahead of a back-fill avoids.
CREATE FUNCTION flux_internal.create_partition(parent regclass, t timestamptz, widen_sparse boolean,
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

-- Tags this session's changes with the replication origin flux_maintenance (on) or stops (off).
-- The origin is the cluster's and serves one session at a time: maintenance in another
-- database may hold it for the length of a move, and it is waited for as a lock is, at most
-- lock_timeout. (One origin per database would fill the cluster's replication state slots,
-- max_replication_slots, one per database that ever moved rows, dropped databases included.)
-- A logical decoding consumer that sees each change's origin can filter on it; pgoutput in
-- PostgreSQL 15 names only a transaction's origin at its commit, so the move is also framed by
-- transactional logical messages (prefix flux_maintenance, 'begin' and 'end'), in order with
-- its changes, by which the realtime feed leaves them out.
CREATE FUNCTION flux_internal.as_maintenance(active boolean) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    patience interval := current_setting('lock_timeout')::interval;
    started timestamptz := clock_timestamp();
BEGIN
    IF active THEN
        IF NOT EXISTS (SELECT FROM pg_replication_origin WHERE roname = 'flux_maintenance') THEN
            PERFORM pg_replication_origin_create('flux_maintenance');
        END IF;
        -- Already this session's (the same error code as another session's).
        IF pg_replication_origin_session_is_setup() THEN
            RETURN;
        END IF;
        LOOP
            BEGIN
                PERFORM pg_replication_origin_session_setup('flux_maintenance');
                PERFORM pg_logical_emit_message(true, 'flux_maintenance', 'begin');
                RETURN;
            EXCEPTION WHEN object_in_use THEN
                IF patience > interval '0' AND clock_timestamp() - started >= patience THEN
                    RAISE EXCEPTION 'flux maintenance is moving rows in another session'
                        USING ERRCODE = '55P03', HINT = 'It holds the replication origin flux_maintenance for the length of one move; try again.';
                END IF;
            END;
            PERFORM pg_sleep(0.01);
        END LOOP;
    ELSIF pg_replication_origin_session_is_setup() THEN
        PERFORM pg_logical_emit_message(true, 'flux_maintenance', 'end');
        PERFORM pg_replication_origin_session_reset();
    END IF;
END
$$;

-- Whether the energy of meter readings before `upper` is kept where retention cannot reach
-- it: in the energy rollups, once no pending change can alter a bucket before `upper`.
CREATE FUNCTION flux_internal.energy_kept_before(upper timestamptz) RETURNS boolean
LANGUAGE sql STABLE
AS $$ SELECT flux_internal.rollups_current_before(upper) $$;

CREATE FUNCTION flux.create_partitions(tbl regclass, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (partition_name text, lower timestamptz, upper timestamptz, moved_rows bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO'
SET lock_timeout = '200ms'
AS $$
DECLARE
    t timestamptz := from_time;
    made record;
BEGIN
    PERFORM flux_internal.check_partitioned_table(tbl);
    IF from_time IS NULL OR to_time IS NULL OR NOT isfinite(from_time) OR NOT isfinite(to_time)
       OR from_time >= to_time OR from_time < '0001-01-01 00:00+00' OR to_time > '10000-01-01 00:00+00' THEN
        RAISE EXCEPTION 'invalid time range: % to %', from_time, to_time
            USING ERRCODE = '22023', HINT = 'Give finite times in years 1 to 9999, from before to.';
    END IF;
    IF flux_internal.partition_count(from_time, to_time, (flux_internal.partition_settings(tbl)).partition_interval) > 10000 THEN
        RAISE EXCEPTION 'more than 10,000 partitions in one call' USING ERRCODE = '54000',
            HINT = 'Create fewer at a time, or choose a longer interval with flux.set_partition_interval.';
    END IF;
    PERFORM pg_advisory_xact_lock('flux_internal.partition_config'::regclass::oid::int, tbl::oid::int);
    PERFORM set_config('lock_timeout', current_setting('flux.maintenance_lock_timeout'), true);
    WHILE t < to_time LOOP
        made := flux_internal.create_partition(tbl, t, false);
        IF made.partition IS NOT NULL THEN
            partition_name := made.partition::text;
            lower := made.range_lower;
            upper := made.range_upper;
            moved_rows := made.moved;
            RETURN NEXT;
        END IF;
        t := made.range_upper;
    END LOOP;
END
$$;
COMMENT ON FUNCTION flux.create_partitions(regclass, timestamptz, timestamptz) IS
    'Creates the partitions of a flux table for [from_time, to_time) at its interval, e.g. before a back-fill, so that the back-filled rows need not pass through the default partition. Returns the partitions it created.';

-- One maintenance action on one table, or none when there is nothing to do.
CREATE FUNCTION flux_internal.maintenance_step(parent regclass)
RETURNS TABLE (table_name regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO'
-- Overridden below from flux.maintenance_lock_timeout; the clause keeps that inside this function.
SET lock_timeout = '200ms'
AS $$
DECLARE
    settings record := flux_internal.partition_settings(parent);
    default_part regclass;
    oldest timestamptz;
    far_future timestamptz;
    made record;
    k integer;
    t timestamptz;
    expired record;
BEGIN
    table_name := parent;
    PERFORM set_config('lock_timeout', current_setting('flux.maintenance_lock_timeout'), true);
    -- Two maintainers (the worker, someone by hand) take turns per table; a step is short.
    PERFORM pg_advisory_xact_lock('flux_internal.partition_config'::regclass::oid::int, parent::oid::int);

    -- 1. The current partition and `premake` more.
    t := now();
    FOR k IN 0 .. settings.premake LOOP
        made := flux_internal.create_partition(parent, t, false);
        IF made.partition IS NOT NULL THEN
            action := 'created';
            partition_name := made.partition::text;
            detail := format('%s to %s', made.range_lower, made.range_upper);
            RETURN NEXT;
            RETURN;
        END IF;
        t := made.range_upper;
        EXIT WHEN NOT isfinite(t);
    END LOOP;

    -- 2. Retention.
    IF settings.retention IS NOT NULL THEN
        SELECT p.partition, p.lower, p.upper INTO expired
        FROM flux_internal.time_partitions(parent) p
        WHERE NOT p.is_default AND p.upper <= now() - settings.retention
        ORDER BY p.upper
        LIMIT 1;
        IF FOUND AND (parent <> 'flux.mg_meter_readings'::regclass OR flux_internal.energy_kept_before(expired.upper)) THEN
            partition_name := expired.partition::text;
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', parent);
            EXECUTE format('DROP TABLE %s', expired.partition);
            IF parent = 'flux.mg_meter_readings'::regclass THEN
                UPDATE flux_internal.meter_rollup_state SET raw_kept_from = greatest(raw_kept_from, expired.upper);
            END IF;
            action := 'dropped';
            detail := format('%s to %s, past the retention of %s', expired.lower, expired.upper, settings.retention);
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    -- 3. The default partition's rows, oldest first. Rows far in the future get partitions of
    -- the table's interval, at most 366 of them beyond those made ahead: past that (clocks set
    -- at random), they stay in the default partition, stored and readable, until their
    -- partitions are made ahead in their turn.
    far_future := now() + (settings.premake + 1) * settings.partition_interval;
    SELECT (array_agg(p.partition) FILTER (WHERE p.is_default))[1],
           CASE WHEN count(*) FILTER (WHERE p.lower >= far_future) < 366 THEN 'infinity' ELSE far_future END
    INTO default_part, far_future
    FROM flux_internal.time_partitions(parent) p;
    IF default_part IS NOT NULL THEN
        EXECUTE format('SELECT min(time) FROM %s WHERE time < $1', default_part) INTO oldest USING far_future;
        IF oldest IS NOT NULL THEN
            made := flux_internal.create_partition(parent, oldest, true);
            action := 'moved';
            partition_name := made.partition::text;
            detail := format('%s rows from %s', made.moved, default_part);
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    -- 4. Partitions attached by hand or restored from a dump.
    FOR partition_name IN SELECT r::text FROM flux_internal.disable_row_reference_checks() r LOOP
        action := 'reference checks per statement';
        detail := NULL;
        RETURN NEXT;
    END LOOP;
END
$$;

-- A step on the first table that has something to do.
CREATE FUNCTION flux_internal.maintenance_step()
RETURNS TABLE (table_name regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent regclass;
BEGIN
    FOR parent IN SELECT flux_internal.partitioned_tables() LOOP
        RETURN QUERY SELECT * FROM flux_internal.maintenance_step(parent);
        IF FOUND THEN
            RETURN;
        END IF;
    END LOOP;
END
$$;

-- The background worker's step, which it commits, on the tables not in `skip`. A table whose
-- step fails (a lock not granted in time, a partition someone's view depends on) is reported
-- as 'failed' with the error; the worker then skips it for the rest of the round, so that the
-- others are still maintained and the failure is not retried at every step. Once the tables
-- have nothing to do, the energy rollups of the changes logged before the round began (the
-- worker's start): a round ends under steady ingest.
CREATE FUNCTION flux_internal.maintenance_worker_step(skip regclass[])
RETURNS TABLE (table_name regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent regclass;
    refreshed bigint;
BEGIN
    FOR parent IN SELECT t FROM flux_internal.partitioned_tables() t WHERE t <> ALL (skip) LOOP
        BEGIN
            RETURN QUERY SELECT * FROM flux_internal.maintenance_step(parent);
            IF FOUND THEN
                RETURN;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            table_name := parent;
            action := 'failed';
            detail := format('%s (SQLSTATE %s)', SQLERRM, SQLSTATE);
            RETURN NEXT;
            RETURN;
        END;
    END LOOP;
    table_name := 'flux.mg_meter_readings'::regclass;
    IF table_name <> ALL (skip) THEN
        BEGIN
            refreshed := flux.refresh_energy_rollups(400, (SELECT a.backend_start FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()));
            IF refreshed > 0 THEN
                action := 'rollups refreshed';
                detail := format('%s five-minute buckets', refreshed);
                RETURN NEXT;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            action := 'failed';
            detail := format('refreshing the energy rollups: %s (SQLSTATE %s)', SQLERRM, SQLSTATE);
            RETURN NEXT;
        END;
    END IF;
END
$$;

CREATE FUNCTION flux.run_maintenance()
RETURNS TABLE (table_name regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    steps integer := 0;
    refreshed bigint;
BEGIN
    -- First one bounded refresh of the energy rollups (400 device-days), so that retention
    -- below may drop the meter readings whose energy it made current. A larger backlog is the
    -- worker's, or flux.refresh_energy_rollups' called again: this is one transaction. The
    -- tables' maintenance locks come first, in the order the worker takes them: the refresh
    -- reads the readings, and a worker's step holding one of them would wait for this
    -- transaction's read while this one waited for its lock.
    PERFORM set_config('lock_timeout', current_setting('flux.maintenance_lock_timeout'), true);
    PERFORM pg_advisory_xact_lock('flux_internal.partition_config'::regclass::oid::int, t::oid::int)
    FROM flux_internal.partitioned_tables() t;
    refreshed := flux.refresh_energy_rollups(400, now());
    IF refreshed > 0 THEN
        RETURN QUERY SELECT 'flux.mg_meter_readings'::regclass, 'rollups refreshed', NULL::text,
                            format('%s five-minute buckets', refreshed);
    END IF;
    LOOP
        RETURN QUERY SELECT * FROM flux_internal.maintenance_step();
        EXIT WHEN NOT FOUND;
        steps := steps + 1;
        -- Every step makes progress; this only guards against a partition made by hand that
        -- maintenance keeps undoing.
        IF steps >= 10000 THEN
            RAISE EXCEPTION 'maintenance did not finish after % steps', steps USING ERRCODE = '54000';
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION flux.run_maintenance() IS
    'One round of maintenance by hand, in this transaction: refreshes the energy rollups (at most 400 device-days), creates partitions ahead of time, drops partitions past the retention horizon, moves rows out of the default partitions, and turns off the per-row reference checks of partitions attached by hand. Returns what it did. The background worker runs the same steps every flux.maintenance_interval.';

REVOKE ALL ON FUNCTION flux.set_partition_interval(regclass, interval), flux.set_retention(regclass, interval),
    flux.run_maintenance(), flux.create_partitions(regclass, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION flux_internal.create_partition(regclass, timestamptz, boolean, regclass), flux_internal.as_maintenance(boolean),
    flux_internal.maintenance_step(regclass), flux_internal.maintenance_step(), flux_internal.maintenance_worker_step(regclass[]) FROM PUBLIC;

-- The origin of maintenance's own changes, made now so that the realtime feed filters it from
-- the first move on. Replication origins belong to the cluster, not to a database or the
-- extension, and outlive both.
SELECT pg_replication_origin_create('flux_maintenance')
WHERE NOT EXISTS (SELECT FROM pg_replication_origin WHERE roname = 'flux_maintenance');
