-- Benchmark data: :meters meters, one reading every 10 s for :days days from 2024-01-01,
-- inserted in arrival order (time, then device) as gateways would send them. Power follows a
-- daily curve; the import register integrates it (with a little downward jitter now and then),
-- the export register creeps up.
INSERT INTO flux.mg_device_registry (id, name, type, site, metadata)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(d), 12, '0'))::uuid, 'BENCH-METER-' || d, 'meter',
       'BENCH', '{"max_power_kw": 500}'
FROM generate_series(1, :meters) d;

-- Daily partitions for the data (and a day either side for the context), as a back-fill would
-- make them first.
SELECT count(*) FROM flux.create_partitions('flux.mg_meter_readings', '2023-12-31', '2024-01-01'::timestamptz + (:days + 1) * interval '1 day');

INSERT INTO flux.mg_meter_readings (device_id, time, power_total_active, energy_imported_active, energy_exported_active)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(d), 12, '0'))::uuid,
       '2024-01-01'::timestamptz + s * interval '10 seconds',
       100 + 50 * sin(s / 1375.0 + d),
       1000 * d + s * (100 + d) / 360.0 - CASE WHEN s % 97 = 0 THEN 0.02 ELSE 0 END,
       500 * d + s * 0.001
FROM generate_series(0, :days * 8640 - 1) s
CROSS JOIN generate_series(1, :meters) d
ORDER BY s, d;
