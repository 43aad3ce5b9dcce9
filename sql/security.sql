-- Who may do what. Objects created by CREATE EXTENSION belong to the installing role, so the API
-- roles get explicit grants here; default privileges would not cover them.
--
--   anon           read every table
--   authenticated  read every table
--   service_role   read and write every table (BYPASSRLS)
--
-- Row-level security is on for every table, so a role only ever sees rows a policy grants it.

GRANT USAGE ON SCHEMA flux TO anon, authenticated, service_role;

GRANT SELECT ON flux.mg_device_registry, flux.mg_bess_readings, flux.mg_meter_readings,
    flux.market_data TO anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON flux.mg_device_registry, flux.mg_bess_readings,
    flux.mg_meter_readings, flux.market_data TO service_role;

ALTER TABLE flux.mg_device_registry ENABLE ROW LEVEL SECURITY;
ALTER TABLE flux.mg_bess_readings ENABLE ROW LEVEL SECURITY;
ALTER TABLE flux.mg_meter_readings ENABLE ROW LEVEL SECURITY;
ALTER TABLE flux.market_data ENABLE ROW LEVEL SECURITY;

CREATE POLICY read_all ON flux.mg_device_registry FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY read_all ON flux.mg_bess_readings FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY read_all ON flux.mg_meter_readings FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY read_all ON flux.market_data FOR SELECT TO anon, authenticated USING (true);
