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
