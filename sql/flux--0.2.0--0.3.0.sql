-- flux 0.2.0 → 0.3.0, applied by ALTER EXTENSION flux UPDATE: energy rollups (sql/rollups.sql),
-- which also let retention drop meter readings. Existing readings are materialised by the
-- maintenance worker's next rounds; until then the energy functions compute from raw readings,
-- as 0.2.0 did. Every object is created exactly as the 0.3.0 install script creates it.

CREATE FUNCTION flux."refresh_energy_rollups"(
	"max_device_days" INT DEFAULT 400, /* Option < i32 > */
	"logged_before" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS bigint /* i64 */
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refresh_energy_rollups_wrapper';

CREATE FUNCTION flux_internal."rollups_current_before"(
	"upper" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS bool /* bool */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rollups_current_before_wrapper';

-- Energy rollups: the partial state of every 5-minute bucket of every meter (flux-energy's
-- `Partial`), from which the energy RPCs build any width that is a multiple of 5 minutes
-- without reading raw readings, and which outlives retention.
--
-- Changes of mg_meter_readings are logged per statement (device, earliest and latest time
-- touched) in meter_rollup_pending. `flux.refresh_energy_rollups` (the maintenance worker, or
-- anyone with the right, on demand) widens each logged range to the buckets it can affect,
-- recomputes them from raw readings and replaces their rows. Until then the RPCs compute those
-- buckets from raw readings themselves: results are always current.

CREATE TABLE flux_internal.meter_rollup_5m (
    device_id uuid NOT NULL,
    bucket timestamptz NOT NULL,
    reading_count integer NOT NULL,
    power_sum double precision NOT NULL,
    power_count integer NOT NULL,
    -- Per register: energy (null outside the register's span), µs of the bucket inside the
    -- span, event flags (bits 0-7 as in Quality, bit 8: a reading lies in the bucket) and the
    -- set-aside energy by reason (spike, rebase, implausible, ambiguous), null when all zero.
    imported_delta double precision,
    imported_covered_us bigint NOT NULL,
    imported_flags smallint NOT NULL,
    imported_set_aside double precision[],
    exported_delta double precision,
    exported_covered_us bigint NOT NULL,
    exported_flags smallint NOT NULL,
    exported_set_aside double precision[],
    PRIMARY KEY (device_id, bucket)
);
-- Queries over every device read a time range.
CREATE INDEX meter_rollup_5m_bucket_idx ON flux_internal.meter_rollup_5m (bucket);
COMMENT ON TABLE flux_internal.meter_rollup_5m IS
    'Materialised partial state per meter and 5-minute bucket: the energy RPCs fold it into any width that is a multiple of 5 minutes. Kept when retention drops raw readings.';

-- The same per UTC day, folded from the 5-minute rows by the refresh: daily and wider buckets
-- (a year of daily totals) read a row per device and day.
CREATE TABLE flux_internal.meter_rollup_1d (LIKE flux_internal.meter_rollup_5m INCLUDING ALL);
COMMENT ON TABLE flux_internal.meter_rollup_1d IS
    'Materialised partial state per meter and UTC day, folded from meter_rollup_5m: the energy RPCs fold it into daily and wider buckets.';

-- Readings changed since their buckets were last materialised: per statement, the devices it
-- wrote and the span of their times, one row (a row per device would double the rows an ingest
-- batch over many meters writes). Append-only on the ingest path; the refresh consumes it.
CREATE TABLE flux_internal.meter_rollup_pending (
    device_ids uuid[] NOT NULL,
    lo timestamptz NOT NULL,
    hi timestamptz NOT NULL,
    -- A maintenance round refreshes what was logged before it began, so that it ends.
    logged_at timestamptz NOT NULL DEFAULT now()
);

-- One row: readings before raw_kept_from were dropped by retention (their energy lives on
-- in the rollups only), and the flux.energy_* defaults the rollups were computed with.
CREATE TABLE flux_internal.meter_rollup_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    raw_kept_from timestamptz NOT NULL DEFAULT '-infinity',
    energy_defaults text
);
INSERT INTO flux_internal.meter_rollup_state DEFAULT VALUES;

SELECT pg_catalog.pg_extension_config_dump('flux_internal.meter_rollup_5m', '');
SELECT pg_catalog.pg_extension_config_dump('flux_internal.meter_rollup_1d', '');
SELECT pg_catalog.pg_extension_config_dump('flux_internal.meter_rollup_pending', '');
SELECT pg_catalog.pg_extension_config_dump('flux_internal.meter_rollup_state', '');

CREATE FUNCTION flux_internal.log_meter_changes() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    devices uuid[];
    first_time timestamptz;
    last_time timestamptz;
    times timestamptz[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- The readings are gone by intent, and their energy with them.
        TRUNCATE flux_internal.meter_rollup_5m, flux_internal.meter_rollup_1d, flux_internal.meter_rollup_pending;
        UPDATE flux_internal.meter_rollup_state SET raw_kept_from = '-infinity';
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT device_id), min(time), max(time) INTO devices, first_time, last_time FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(DISTINCT device_id), min(time), max(time) INTO devices, first_time, last_time FROM old_rows;
    ELSE
        SELECT array_agg(DISTINCT device_id), min(time), max(time) INTO devices, first_time, last_time
        FROM (SELECT device_id, time FROM old_rows UNION ALL SELECT device_id, time FROM new_rows) AS c;
    END IF;
    IF devices IS NULL THEN
        RETURN NULL;
    ELSIF last_time - first_time <= interval '1 day' THEN
        INSERT INTO flux_internal.meter_rollup_pending (device_ids, lo, hi) VALUES (devices, first_time, last_time);
        RETURN NULL;
    END IF;
    -- Times more than a day apart: a row per device and run of its times without a day's gap,
    -- so that a statement that also writes a reading years away (a gateway's clock) does not
    -- make the years between stale.
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(device_id), array_agg(time) INTO devices, times FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(device_id), array_agg(time) INTO devices, times FROM old_rows;
    ELSE
        SELECT array_agg(device_id), array_agg(time) INTO devices, times
        FROM (SELECT device_id, time FROM old_rows UNION ALL SELECT device_id, time FROM new_rows) AS c;
    END IF;
    INSERT INTO flux_internal.meter_rollup_pending (device_ids, lo, hi)
    SELECT ARRAY[device_id], min(time), max(time)
    FROM (SELECT device_id, time, count(*) FILTER (WHERE gap) OVER (PARTITION BY device_id ORDER BY time) AS run
          FROM (SELECT device_id, time,
                       time - lag(time) OVER (PARTITION BY device_id ORDER BY time) > interval '1 day' AS gap
                FROM unnest(devices, times) AS c(device_id, time)) AS g) AS r
    GROUP BY device_id, run;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION flux_internal.log_meter_changes() IS
    'Statement-level: logs, per device, the time range of the meter readings a statement inserted, updated or deleted, for the energy rollups to recompute.';

-- Transition tables cannot be shared between events, hence one trigger per event.
CREATE TRIGGER log_changes_for_rollups_on_insert
    AFTER INSERT ON flux.mg_meter_readings REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flux_internal.log_meter_changes();
CREATE TRIGGER log_changes_for_rollups_on_update
    AFTER UPDATE ON flux.mg_meter_readings REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flux_internal.log_meter_changes();
CREATE TRIGGER log_changes_for_rollups_on_delete
    AFTER DELETE ON flux.mg_meter_readings REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flux_internal.log_meter_changes();
CREATE TRIGGER log_changes_for_rollups_on_truncate
    AFTER TRUNCATE ON flux.mg_meter_readings
    FOR EACH STATEMENT EXECUTE FUNCTION flux_internal.log_meter_changes();

-- A device's energy parameters live in its metadata: a change makes all its buckets stale.
CREATE FUNCTION flux_internal.log_device_parameter_change() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Infinite bounds: every bucket of the device, resolved when the refresh reaches it.
    INSERT INTO flux_internal.meter_rollup_pending (device_ids, lo, hi)
    VALUES (ARRAY[NEW.id], '-infinity', 'infinity');
    RETURN NULL;
END
$$;
CREATE TRIGGER log_parameter_change_for_rollups
    AFTER UPDATE OF metadata ON flux.mg_device_registry
    FOR EACH ROW WHEN (OLD.metadata IS DISTINCT FROM NEW.metadata)
    EXECUTE FUNCTION flux_internal.log_device_parameter_change();

-- Every role reads the rollups of the devices the registry shows it: the energy functions run
-- as the caller, and a project's own roles (granted the flux tables) call them too. A project
-- that hides some readings of a device it shows turns the rollups off for such roles
-- (ALTER ROLE ... SET flux.energy_rollups = off).
GRANT SELECT ON flux_internal.meter_rollup_5m, flux_internal.meter_rollup_1d,
    flux_internal.meter_rollup_state TO PUBLIC;
ALTER TABLE flux_internal.meter_rollup_5m ENABLE ROW LEVEL SECURITY;
ALTER TABLE flux_internal.meter_rollup_1d ENABLE ROW LEVEL SECURITY;
ALTER TABLE flux_internal.meter_rollup_pending ENABLE ROW LEVEL SECURITY;
ALTER TABLE flux_internal.meter_rollup_state ENABLE ROW LEVEL SECURITY;
-- `IN (SELECT ...)` is a hashed subplan: the visible devices are read once per statement.
CREATE POLICY visible_devices ON flux_internal.meter_rollup_5m FOR SELECT
    USING (device_id IN (SELECT d.id FROM flux.mg_device_registry d));
CREATE POLICY visible_devices ON flux_internal.meter_rollup_1d FOR SELECT
    USING (device_id IN (SELECT d.id FROM flux.mg_device_registry d));
CREATE POLICY read_all ON flux_internal.meter_rollup_state FOR SELECT USING (true);

-- The pending changes of the given devices (the caller's visible ones): a row of the log names
-- the devices of a whole statement, so the log itself is not readable.
CREATE FUNCTION flux_internal.pending_changes(devices uuid[], from_time timestamptz, to_time timestamptz)
RETURNS TABLE (device_id uuid, lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d, p.lo, p.hi
    FROM flux_internal.meter_rollup_pending p CROSS JOIN LATERAL unnest(p.device_ids) AS d
    WHERE p.lo < to_time AND p.hi >= from_time AND d = ANY (devices)
$$;

-- JIT compiles the context queries over hundreds of devices and partitions for seconds and
-- saves nothing (measured: a refresh of 1,000 meters took 3.5 s with it, 0.7 s without).
ALTER FUNCTION flux.refresh_energy_rollups(integer, timestamptz) SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off;
ALTER FUNCTION flux_internal.rollups_current_before(timestamptz) SET jit = off;
REVOKE ALL ON FUNCTION flux.refresh_energy_rollups(integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flux.refresh_energy_rollups(integer, timestamptz) TO service_role;
COMMENT ON FUNCTION flux.refresh_energy_rollups(integer, timestamptz) IS
    'Materialises the 5-minute energy rollups of the meter readings changed since the last refresh (of the changes logged before logged_before, if given), for at most max_device_days device-days of readings; returns the number of buckets recomputed (0: nothing was pending, or another refresh is running). The maintenance worker calls it every round; the energy RPCs are current either way.';

-- Whether the energy of meter readings before `upper` is kept where retention cannot reach
-- it: in the energy rollups, once no pending change can alter a bucket before `upper`.
CREATE OR REPLACE FUNCTION flux_internal.energy_kept_before(upper timestamptz) RETURNS boolean
LANGUAGE sql STABLE
AS $$ SELECT flux_internal.rollups_current_before(upper) $$;

-- One maintenance action on one table, or none when there is nothing to do.
CREATE OR REPLACE FUNCTION flux_internal.maintenance_step(parent regclass)
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

-- The background worker's step, which it commits, on the tables not in `skip`. A table whose
-- step fails (a lock not granted in time, a partition someone's view depends on) is reported
-- as 'failed' with the error; the worker then skips it for the rest of the round, so that the
-- others are still maintained and the failure is not retried at every step. Once the tables
-- have nothing to do, the energy rollups of the changes logged before the round began (the
-- worker's start): a round ends under steady ingest.
CREATE OR REPLACE FUNCTION flux_internal.maintenance_worker_step(skip regclass[])
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

CREATE OR REPLACE FUNCTION flux.run_maintenance()
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

