-- Realtime: changes of the flux tables reach subscribers through the publication
-- `supabase_realtime`, the one Supabase's realtime server and Flux's own read. It is created when
-- absent; an existing one (a Supabase project's) is extended, never dropped or replaced.
DO $publication$
DECLARE
    flux_table regclass;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
        CREATE PUBLICATION supabase_realtime;
    END IF;
    IF (SELECT puballtables FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
        RETURN;  -- FOR ALL TABLES already covers ours
    END IF;
    FOREACH flux_table IN ARRAY ARRAY['flux.mg_device_registry', 'flux.mg_bess_readings',
                                      'flux.mg_meter_readings', 'flux.market_data']::regclass[]
    LOOP
        IF NOT EXISTS (SELECT FROM pg_publication_rel pr
                       JOIN pg_publication p ON p.oid = pr.prpubid
                       WHERE p.pubname = 'supabase_realtime' AND pr.prrelid = flux_table) THEN
            EXECUTE format('ALTER PUBLICATION supabase_realtime ADD TABLE %s', flux_table);
        END IF;
    END LOOP;
END
$publication$;

-- UPDATE and DELETE events carry the old row. Inserts, the bulk of telemetry, are unaffected.
ALTER TABLE flux.mg_device_registry REPLICA IDENTITY FULL;
ALTER TABLE flux.mg_bess_readings REPLICA IDENTITY FULL;
ALTER TABLE flux.mg_meter_readings REPLICA IDENTITY FULL;
ALTER TABLE flux.market_data REPLICA IDENTITY FULL;
-- Changes are logged per partition, so each partition carries the setting as well
-- (maintenance sets it on those it creates).
ALTER TABLE flux_partitions.mg_bess_readings_default REPLICA IDENTITY FULL;
ALTER TABLE flux_partitions.mg_meter_readings_default REPLICA IDENTITY FULL;
ALTER TABLE flux_partitions.market_data_default REPLICA IDENTITY FULL;

-- Broadcast from the database: `flux.broadcast` sends a message to the realtime channel
-- `topic` when, and only if, the calling transaction commits. It is a transactional logical
-- message (prefix flux_broadcast) that the realtime server's change feed reads in commit order
-- with the transaction's row changes, and relays like a broadcast from a client, with the
-- message's `id` as `meta.id`. `private` messages reach only channels joined as private.
-- Callable by the service role (and superusers); a trigger that broadcasts for other roles
-- calls it from a SECURITY DEFINER function of the service role's.
CREATE FUNCTION flux.broadcast(topic text, event text, payload jsonb DEFAULT '{}', private boolean DEFAULT false)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id uuid := gen_random_uuid();
    message text;
BEGIN
    IF coalesce(topic, '') = '' OR coalesce(event, '') = '' THEN
        RAISE EXCEPTION 'flux.broadcast needs a topic and an event' USING ERRCODE = '22023';
    END IF;
    IF octet_length(topic) > 255 OR octet_length(event) > 255 THEN
        RAISE EXCEPTION 'flux.broadcast: topic and event are at most 255 bytes' USING ERRCODE = '22023';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'flux.broadcast: the payload must be a JSON object' USING ERRCODE = '22023';
    END IF;
    message := jsonb_build_object('topic', topic, 'event', event, 'payload', payload,
                                  'private', coalesce(private, false), 'id', id)::text;
    -- The realtime server's limit on a broadcast payload (FLUX_REALTIME_MAX_PAYLOAD_KB default).
    IF octet_length(message) > 262144 THEN
        RAISE EXCEPTION 'flux.broadcast: the message is larger than 256 kB' USING ERRCODE = '54000';
    END IF;
    PERFORM pg_logical_emit_message(true, 'flux_broadcast', message);
    RETURN id;
END
$$;
REVOKE ALL ON FUNCTION flux.broadcast(text, text, jsonb, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flux.broadcast(text, text, jsonb, boolean) TO service_role;

-- Private channels are authorised by row-level security on realtime.messages, with the names
-- and columns Supabase uses, so that its policies carry over. When a role joins a private channel, the realtime
-- server inserts a 'broadcast' and a 'presence' row for its topic and reads them back as that
-- role, with its JWT claims and realtime.topic() set: a row the role's SELECT policies
-- show is the right to hear that extension on the topic. Its right to send is an INSERT of
-- such a row that the role's policies let through. It all runs in a transaction rolled back at
-- once: the table never holds rows. With no policy (the default) only the service role may
-- join a private channel. For example, to let the gateways of a site hear its commands channel:
--   CREATE POLICY site_commands ON realtime.messages FOR SELECT TO authenticated
--       USING (extension = 'broadcast' AND realtime.topic() =
--              'commands:' || (current_setting('request.jwt.claims', true)::jsonb ->> 'site'));
-- The schema is not PostgREST's: the table is not part of the REST API. (A database that already
-- has a schema `realtime`, Supabase's own, cannot take the extension.)
CREATE SCHEMA realtime;
CREATE TABLE realtime.messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    topic text NOT NULL,
    extension text NOT NULL CHECK (extension IN ('broadcast', 'presence')),
    event text,
    payload jsonb,
    private boolean NOT NULL DEFAULT true,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;

-- The topic being authorised (the channel's name without `realtime:`), for policies.
CREATE FUNCTION realtime.topic() RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT nullif(current_setting('realtime.topic', true), '') $$;

GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role;
GRANT SELECT, INSERT ON realtime.messages TO anon, authenticated, service_role;
-- As on the flux tables: a service_role made without BYPASSRLS keeps its rights.
CREATE POLICY service_all ON realtime.messages TO service_role USING (true) WITH CHECK (true);
