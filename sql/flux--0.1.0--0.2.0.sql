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
