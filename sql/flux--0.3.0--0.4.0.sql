-- Flux 0.3.0 → 0.4.0: partition moves are framed by transactional logical messages, which the
-- realtime server's pgoutput feed reads in order with the moved rows and leaves out (its
-- wal2json feed filtered them by replication origin). Nothing else changes; the update is
-- instant and takes no lock on data.

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
