-- The API edge: PostgREST calls flux_internal.pre_request() before every request
-- (db-pre-request = "flux_internal.pre_request"). The decision — api key, rate limit — is made
-- natively by flux_internal.check_request; this front door only applies it, because custom
-- HTTP statuses (RAISE SQLSTATE 'PGRST') can only be raised from plpgsql.
--
-- It writes no table: PostgREST runs GET requests in READ ONLY transactions, so the token
-- buckets live in shared memory.
CREATE FUNCTION flux_internal.pre_request() RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    refusal text[] := flux_internal.check_request();
BEGIN
    IF refusal IS NOT NULL THEN
        RAISE SQLSTATE 'PGRST' USING MESSAGE = refusal[1], DETAIL = refusal[2];
    END IF;
END
$$;

COMMENT ON FUNCTION flux_internal.pre_request() IS
    'PostgREST db-pre-request hook: rejects requests without a valid api key (401) or over their rate limit (429), and sets the X-RateLimit-* headers.';

-- PostgREST runs the hook as whichever role the request's JWT names, including roles a project
-- adds beyond the three built-in ones: every role may execute it (functions are executable by
-- PUBLIC by default); what else lives in flux_internal keeps its own grants.
GRANT USAGE ON SCHEMA flux_internal TO PUBLIC;

COMMENT ON FUNCTION flux_internal.cancel_request(text) IS
    'Cancels the statement of the request the router named (x-flux-request-id) if a backend still serves it: the router calls it when the client leaves or PostgREST''s answer is overdue.';

-- The router connects as PostgREST's login role to cancel; nobody else needs to.
REVOKE ALL ON FUNCTION flux_internal.cancel_request(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flux_internal.cancel_request(text) TO authenticator;
