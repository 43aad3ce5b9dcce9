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
