-- Supabase-compatible API roles. PostgREST logs in as `authenticator` and switches to the role
-- named by the request's JWT (`anon` when there is none). Roles are cluster-wide, not members of
-- the extension: they are created only when missing, so Flux also installs into a database that
-- already has them (a Supabase project), and DROP EXTENSION leaves them alone.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT;
    END IF;
END
$roles$;

GRANT anon, authenticated, service_role TO authenticator;

-- Every statement of an API request is bounded, as in a Supabase project: PostgREST applies
-- these role settings to each request it runs as that role. Set only where the role has no
-- statement_timeout of its own, so an operator's choice (ALTER ROLE anon SET
-- statement_timeout = '5s'; NOTIFY pgrst, 'reload config') survives reinstalls and upgrades.
-- service_role runs settlement and back-fill jobs, hence its longer bound.
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
