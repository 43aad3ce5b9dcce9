-- Device references, checked once per statement.
--
-- The readings' foreign keys to the registry stay declared (sql/tables.sql): they refuse to
-- delete a device that has readings, cascade an id change, and tell PostgREST how to embed the
-- device in a reading. But PostgreSQL checks a foreign key on insert once per row, with one
-- index probe and one row lock each: ~40 % of the time of a COPY. Here one statement-level
-- trigger checks all rows of a statement with one query over its distinct devices instead, and
-- the per-row check triggers are disabled. Same guarantees:
--   * every device_id is in the registry, or the whole statement fails with 23503 (409);
--   * the devices are locked FOR KEY SHARE, as the foreign key's check does, so a concurrent
--     delete of one waits for this transaction and then fails on the readings it finds.
-- Partitions attached later get the per-row triggers enabled again; maintenance disables them
-- (flux_internal.disable_row_reference_checks). Until then a reading is checked twice.

CREATE FUNCTION flux_internal.check_device_references() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    locked uuid[];
    missing uuid;
BEGIN
    -- Lock the devices in id order, as two concurrent statements must not deadlock, and check
    -- against the devices locked: one registered after the lock's snapshot is not locked, and
    -- could be deleted before this transaction commits.
    SELECT array_agg(l.id) INTO locked
    FROM (SELECT d.id FROM flux.mg_device_registry d
          WHERE d.id IN (SELECT n.device_id FROM new_rows n)
          ORDER BY d.id
          FOR KEY SHARE) AS l;

    SELECT n.device_id INTO missing
    FROM (SELECT DISTINCT device_id FROM new_rows) n
    LEFT JOIN unnest(locked) AS l(id) ON l.id = n.device_id
    WHERE l.id IS NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%_device_id_fkey"',
                TG_TABLE_NAME, TG_TABLE_NAME
            USING ERRCODE = '23503',
                  DETAIL = format('Key (device_id)=(%s) is not present in table "mg_device_registry".', missing),
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME,
                  CONSTRAINT = TG_TABLE_NAME || '_device_id_fkey';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION flux_internal.check_device_references() IS
    'Statement-level check that every device_id of the new rows is registered (23503 otherwise), locking the devices FOR KEY SHARE as a foreign key check does.';

-- Transition tables cannot be shared by INSERT and UPDATE triggers, hence two of each.
CREATE TRIGGER check_device_references_on_insert
    AFTER INSERT ON flux.mg_bess_readings REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flux_internal.check_device_references();
CREATE TRIGGER check_device_references_on_update
    AFTER UPDATE ON flux.mg_bess_readings REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flux_internal.check_device_references();
CREATE TRIGGER check_device_references_on_insert
    AFTER INSERT ON flux.mg_meter_readings REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flux_internal.check_device_references();
CREATE TRIGGER check_device_references_on_update
    AFTER UPDATE ON flux.mg_meter_readings REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flux_internal.check_device_references();

-- Disables the foreign keys' per-row check triggers on the reading tables and every partition
-- (the statement-level triggers above replace them); returns the partitions it changed.
-- Their delete and update triggers on the registry stay on.
CREATE FUNCTION flux_internal.disable_row_reference_checks() RETURNS SETOF regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
    trigger_name name;
BEGIN
    FOR rel, trigger_name IN
        SELECT t.tgrelid::regclass, t.tgname
        FROM pg_trigger t
        JOIN pg_constraint c ON c.oid = t.tgconstraint
        WHERE c.conname IN ('mg_bess_readings_device_id_fkey', 'mg_meter_readings_device_id_fkey')
          AND c.confrelid = 'flux.mg_device_registry'::regclass
          AND t.tgrelid <> c.confrelid
          AND t.tgenabled <> 'D'
        ORDER BY t.tgrelid::regclass::text
    LOOP
        EXECUTE format('ALTER TABLE %s DISABLE TRIGGER %I', rel, trigger_name);
        RETURN NEXT rel;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION flux_internal.disable_row_reference_checks() FROM PUBLIC;

SELECT count(*) FROM flux_internal.disable_row_reference_checks();
