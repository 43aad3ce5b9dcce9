-- Minting API keys and access tokens from SQL.
--
-- The signing secret is the superuser-only setting `flux.jwt_secret` (the same secret PostgREST
-- verifies with). No API role can read it; signing happens natively in the library.

CREATE FUNCTION flux.sign_jwt(claims jsonb, valid_for interval DEFAULT interval '1 hour')
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog
AS $$
DECLARE
    now_s bigint := extract(epoch FROM now())::bigint;
BEGIN
    IF claims IS NULL OR jsonb_typeof(claims) <> 'object' THEN
        RAISE EXCEPTION 'claims must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF claims->>'role' IS NULL OR claims->>'role' NOT IN ('anon', 'authenticated', 'service_role') THEN
        RAISE EXCEPTION 'claims.role must be anon, authenticated or service_role, got %',
            coalesce(claims->'role', 'null'::jsonb)
            USING ERRCODE = '22023';
    END IF;
    IF claims ?| ARRAY['exp', 'iat', 'nbf'] THEN
        RAISE EXCEPTION 'claims must not set exp, iat or nbf: the token is valid from now for valid_for'
            USING ERRCODE = '22023';
    END IF;
    IF valid_for IS NULL OR valid_for <= interval '0' THEN
        RAISE EXCEPTION 'valid_for must be a positive interval, got %', valid_for
            USING ERRCODE = '22023';
    END IF;
    RETURN flux_internal.jwt_sign(
        jsonb_build_object('iss', 'flux', 'iat', now_s,
                           'exp', extract(epoch FROM now() + valid_for)::bigint)
        || claims);
END
$$;

COMMENT ON FUNCTION flux.sign_jwt(jsonb, interval) IS
    'Signs claims (role anon, authenticated or service_role; optional sub, sites, ...) as an HS256 JWT valid for valid_for. Service role only.';

REVOKE ALL ON FUNCTION flux.sign_jwt(jsonb, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION flux_internal.jwt_sign(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flux.sign_jwt(jsonb, interval) TO service_role;
GRANT EXECUTE ON FUNCTION flux_internal.jwt_sign(jsonb) TO service_role;
