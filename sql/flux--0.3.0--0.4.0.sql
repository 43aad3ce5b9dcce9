-- Flux 0.3.0 → 0.4.0, for the realtime server's pgoutput change feed: partition moves are
-- framed by transactional logical messages, which it reads in order with the moved rows and
-- leaves out (its wal2json feed filtered them by replication origin), and flux.broadcast sends
-- realtime broadcasts from the database the same way. The update is instant and takes no lock
-- on data. Every object is created exactly as the 0.4.0 install script creates it.

-- Tags this session's changes with the replication origin flux_maintenance (on) or stops (off).
-- The origin is the cluster's and serves one session at a time: maintenance in another
-- database may hold it for the length of a move, and it is waited for as a lock is, at most
-- lock_timeout. (One origin per database would fill the cluster's replication state slots,
-- max_replication_slots, one per database that ever moved rows, dropped databases included.)
-- A logical decoding consumer that sees each change's origin can filter on it; pgoutput in
-- PostgreSQL 15 names only a transaction's origin at its commit, so the move is also framed by
-- transactional logical messages (prefix flux_maintenance, 'begin' and 'end'), in order with
-- its changes, by which the realtime feed leaves them out.
CREATE OR REPLACE FUNCTION flux_internal.as_maintenance(active boolean) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    patience interval := current_setting('lock_timeout')::interval;
    started timestamptz := clock_timestamp();
BEGIN
    IF active THEN
        IF NOT EXISTS (SELECT FROM pg_replication_origin WHERE roname = 'flux_maintenance') THEN
            PERFORM pg_replication_origin_create('flux_maintenance');
        END IF;
        -- Already this session's (the same error code as another session's).
        IF pg_replication_origin_session_is_setup() THEN
            RETURN;
        END IF;
        LOOP
            BEGIN
                PERFORM pg_replication_origin_session_setup('flux_maintenance');
                PERFORM pg_logical_emit_message(true, 'flux_maintenance', 'begin');
                RETURN;
            EXCEPTION WHEN object_in_use THEN
                IF patience > interval '0' AND clock_timestamp() - started >= patience THEN
                    RAISE EXCEPTION 'flux maintenance is moving rows in another session'
                        USING ERRCODE = '55P03', HINT = 'It holds the replication origin flux_maintenance for the length of one move; try again.';
                END IF;
            END;
            PERFORM pg_sleep(0.01);
        END LOOP;
    ELSIF pg_replication_origin_session_is_setup() THEN
        PERFORM pg_logical_emit_message(true, 'flux_maintenance', 'end');
        PERFORM pg_replication_origin_session_reset();
    END IF;
END
$$;

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
