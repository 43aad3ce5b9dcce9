-- Flux 0.4.0 → 0.5.0: private realtime channels authorised by row-level security on
-- flux_realtime.messages (see sql/realtime.sql). The update is instant and touches no data.
-- Every object is created exactly as the 0.5.0 install script creates it.

-- Private channels are authorised by row-level security on flux_realtime.messages, as Supabase
-- authorises them on realtime.messages. When a role joins a private channel, the realtime
-- server inserts a 'broadcast' and a 'presence' row for its topic and reads them back as that
-- role, with its JWT claims and flux_realtime.topic() set: a row the role's SELECT policies
-- show is the right to hear that extension on the topic. Its right to send is an INSERT of
-- such a row that the role's policies let through. It all runs in a transaction rolled back at
-- once: the table never holds rows. With no policy (the default) only the service role may
-- join a private channel. For example, to let the gateways of a site hear its commands channel:
--   CREATE POLICY site_commands ON flux_realtime.messages FOR SELECT TO authenticated
--       USING (extension = 'broadcast' AND flux_realtime.topic() =
--              'commands:' || (current_setting('request.jwt.claims', true)::jsonb ->> 'site'));
-- The schema is not PostgREST's: the table is not part of the REST API.
CREATE SCHEMA flux_realtime;
CREATE TABLE flux_realtime.messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    topic text NOT NULL,
    extension text NOT NULL CHECK (extension IN ('broadcast', 'presence')),
    event text,
    payload jsonb,
    private boolean NOT NULL DEFAULT true,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE flux_realtime.messages ENABLE ROW LEVEL SECURITY;

-- The topic being authorised (the channel's name without `realtime:`), for policies.
CREATE FUNCTION flux_realtime.topic() RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT nullif(current_setting('flux_realtime.topic', true), '') $$;

GRANT USAGE ON SCHEMA flux_realtime TO anon, authenticated, service_role;
GRANT SELECT, INSERT ON flux_realtime.messages TO anon, authenticated, service_role;
-- As on the flux tables: a service_role made without BYPASSRLS keeps its rights.
CREATE POLICY service_all ON flux_realtime.messages TO service_role USING (true) WITH CHECK (true);
