-- The registry refuses metadata that the energy functions could not use (e.g.
-- "max_power_kw": -5), with the reason, instead of letting every later energy query fail.
CREATE FUNCTION flux_internal.check_device_metadata() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    problem text := flux_internal.energy_metadata_error(NEW.metadata::text);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid metadata for device %: %', NEW.name, problem
            USING ERRCODE = '23514', TABLE = 'mg_device_registry', COLUMN = 'metadata';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER check_metadata
    BEFORE INSERT OR UPDATE OF metadata ON flux.mg_device_registry
    FOR EACH ROW EXECUTE FUNCTION flux_internal.check_device_metadata();
