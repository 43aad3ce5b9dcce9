-- Minting api keys and access tokens from SQL: flux.sign_jwt (src/keys.rs) checks the claims
-- and signs them natively with the superuser-only setting `flux.jwt_secret` (the secret
-- PostgREST verifies with). No API role can read the secret, and there is no lower-level
-- signer to call around the checks.

COMMENT ON FUNCTION flux.sign_jwt(jsonb, interval) IS
    'Signs claims (role anon, authenticated or service_role; optional sub, sites, ...) as an HS256 JWT valid for valid_for. Service role only.';

REVOKE ALL ON FUNCTION flux.sign_jwt(jsonb, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flux.sign_jwt(jsonb, interval) TO service_role;
