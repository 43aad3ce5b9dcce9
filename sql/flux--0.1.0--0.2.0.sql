-- flux 0.1.0 → 0.2.0, applied by ALTER EXTENSION flux UPDATE. What it leaves must equal a fresh
-- 0.2.0 install (tests/upgrade.sh compares the catalogs), so every object below is created
-- exactly as the 0.2.0 install script creates it.

-- API requests are bounded: statement timeouts for the API roles (sql/roles.sql).
DO $timeouts$
DECLARE
    api_role text;
    bound text;
BEGIN
    FOR api_role, bound IN VALUES ('anon', '3s'), ('authenticated', '8s'), ('service_role', '60s') LOOP
        IF NOT EXISTS (SELECT FROM pg_db_role_setting s
                       WHERE s.setrole = api_role::regrole AND s.setdatabase = 0
                         AND EXISTS (SELECT FROM unnest(s.setconfig) c WHERE c LIKE 'statement_timeout=%')) THEN
            EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', api_role, bound);
        END IF;
    END LOOP;
END
$timeouts$;

-- Signing is one native function with its checks; 0.1.0's unchecked internal signer, which
-- service_role could call directly, is gone.
DROP FUNCTION flux.sign_jwt(jsonb, interval);
DROP FUNCTION flux_internal.jwt_sign(jsonb);
CREATE FUNCTION flux."sign_jwt"(
	"claims" jsonb,
	"valid_for" interval DEFAULT '1 hour'
) RETURNS TEXT
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'sign_jwt_wrapper';
COMMENT ON FUNCTION flux.sign_jwt(jsonb, interval) IS
    'Signs claims (role anon, authenticated or service_role; optional sub, sites, ...) as an HS256 JWT valid for valid_for. Service role only.';
REVOKE ALL ON FUNCTION flux.sign_jwt(jsonb, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flux.sign_jwt(jsonb, interval) TO service_role;

-- The router cancels the statement of a request whose client has gone (sql/edge.sql).
CREATE FUNCTION flux_internal."cancel_request"(
	"request_id" TEXT
) RETURNS bool
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'cancel_request_wrapper';
COMMENT ON FUNCTION flux_internal.cancel_request(text) IS
    'Cancels the statement of the request the router named (x-flux-request-id) if a backend still serves it: the router calls it when the client leaves or PostgREST''s answer is overdue.';
REVOKE ALL ON FUNCTION flux_internal.cancel_request(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flux_internal.cancel_request(text) TO authenticator;

-- Registry metadata is checked as text, so that JSON the check cannot read (1e400, nesting
-- 1,000 levels deep) is a 400 with the reason rather than an internal error.
CREATE FUNCTION flux_internal."energy_metadata_error"(
	"metadata" TEXT
) RETURNS TEXT
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'energy_metadata_error_of_text_wrapper';
CREATE OR REPLACE FUNCTION flux_internal.check_device_metadata() RETURNS trigger
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
DROP FUNCTION flux_internal.energy_metadata_error(jsonb);

-- The claims are read once per statement, not once per inserted row.
ALTER POLICY insert_at_claimed_sites ON flux.mg_bess_readings
    WITH CHECK (EXISTS (SELECT FROM flux.mg_device_registry d
                        WHERE d.id = device_id AND d.site = ANY ((SELECT flux_internal.claimed_sites())::text[])));
ALTER POLICY insert_at_claimed_sites ON flux.mg_meter_readings
    WITH CHECK (EXISTS (SELECT FROM flux.mg_device_registry d
                        WHERE d.id = device_id AND d.site = ANY ((SELECT flux_internal.claimed_sites())::text[])));

-- Energy, physics first: meter_energy_buckets reports the energy set aside per bucket (and the
-- flags implausible and ambiguous); meter_energy_set_aside sums it per device and reason.
DROP FUNCTION flux.meter_energy_buckets(timestamptz, timestamptz, interval, uuid[]);
CREATE FUNCTION flux."meter_energy_buckets"(
	"start_time" timestamp with time zone,
	"end_time" timestamp with time zone,
	"bucket_width" interval,
	"device_ids" uuid[] DEFAULT NULL
) RETURNS TABLE (
	"time_b" timestamp with time zone,
	"device_id" uuid,
	"power_total_active_avg" double precision,
	"reading_count" INT,
	"energy_imported_active_delta" double precision,
	"energy_exported_active_delta" double precision,
	"energy_imported_active_coverage" double precision,
	"energy_exported_active_coverage" double precision,
	"energy_imported_active_quality" TEXT[],
	"energy_exported_active_quality" TEXT[],
	"energy_imported_active_set_aside" double precision,
	"energy_exported_active_set_aside" double precision
)
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'meter_energy_buckets_set_aside_wrapper';
COMMENT ON FUNCTION flux.meter_energy_buckets(timestamptz, timestamptz, interval, uuid[]) IS
    'Energy per bucket of any fixed width (1 second to 31 days), with reading counts, per-register coverage (fraction of the bucket inside the data), quality flags (interpolated, reset, rollover, jitter, meter_change, spike_dropped, implausible, ambiguous) and the energy set aside in the bucket (kWh).';
CREATE FUNCTION flux."meter_energy_set_aside"(
	"start_time" timestamp with time zone,
	"end_time" timestamp with time zone,
	"device_ids" uuid[] DEFAULT NULL
) RETURNS TABLE (
	"device_id" uuid,
	"register" TEXT,
	"reason" TEXT,
	"set_aside_kwh" double precision,
	"booked_kwh" double precision
)
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'meter_energy_set_aside_wrapper';
COMMENT ON FUNCTION flux.meter_energy_set_aside(timestamptz, timestamptz, uuid[]) IS
    'Per device, register and reason (spike, re-base, implausible, ambiguous), the energy set aside over [start_time, end_time) in kWh, beside the energy booked: a misconfigured meter shows here.';

-- Sane magnitudes (R9): each table is checked in one scan. Rows stored before, beyond the new
-- bounds, leave the constraints NOT VALID (with a warning) rather than failing the update;
-- the energy functions ignore such values.
DO $bounds$
DECLARE
    change record;
BEGIN
    FOR change IN VALUES
        ('flux.mg_bess_readings', 'DROP CONSTRAINT target_power_finite',
         'ADD CONSTRAINT target_power_in_range CHECK (target_power BETWEEN -1e9 AND 1e9)'),
        ('flux.mg_meter_readings',
         'DROP CONSTRAINT power_total_active_finite, DROP CONSTRAINT energy_imported_active_not_negative, '
         'DROP CONSTRAINT energy_exported_active_not_negative, DROP CONSTRAINT voltage_line_average_finite, '
         'DROP CONSTRAINT current_phase_average_finite',
         'ADD CONSTRAINT power_total_active_in_range CHECK (power_total_active BETWEEN -1e9 AND 1e9)%s, '
         'ADD CONSTRAINT energy_imported_active_in_range CHECK (energy_imported_active BETWEEN 0 AND 1e12)%s, '
         'ADD CONSTRAINT energy_exported_active_in_range CHECK (energy_exported_active BETWEEN 0 AND 1e12)%s, '
         'ADD CONSTRAINT voltage_line_average_in_range CHECK (voltage_line_average BETWEEN -1e9 AND 1e9)%s, '
         'ADD CONSTRAINT current_phase_average_in_range CHECK (current_phase_average BETWEEN -1e9 AND 1e9)'),
        ('flux.market_data', 'DROP CONSTRAINT market_data_value_finite',
         'ADD CONSTRAINT market_data_value_in_range CHECK (value BETWEEN -1e12 AND 1e12)')
    LOOP
        BEGIN
            EXECUTE format('ALTER TABLE %s %s, %s', change.column1, change.column2,
                           replace(change.column3, '%s', ''));
        EXCEPTION WHEN check_violation THEN
            EXECUTE format('ALTER TABLE %s %s, %s NOT VALID', change.column1, change.column2,
                           replace(change.column3, '%s', ' NOT VALID'));
            RAISE WARNING 'flux: stored rows of % lie beyond the bounds of 0.2.0: %', change.column1, SQLERRM
                USING HINT = 'The constraints stay NOT VALID; correct or delete those rows, then VALIDATE CONSTRAINT.';
        END;
    END LOOP;
END
$bounds$;
