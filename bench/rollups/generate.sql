-- Rollup benchmark data: :meters meters, one reading every :interval s for :days days from
-- :start, inserted in arrival order (time, then device) as gateways would send them. At 10 s it
-- is bench/energy's data: power follows a daily curve, the import register integrates (100 + d)
-- kW (with a little downward jitter now and then), the export register creeps up.
INSERT INTO flux.mg_device_registry (id, name, type, site, metadata)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(d), 12, '0'))::uuid, 'BENCH-METER-' || d, 'meter',
       'BENCH', '{"max_power_kw": 500}'
FROM generate_series(1, :meters) d;

-- Daily partitions for the data and a day either side, as a back-fill would make them first.
SELECT count(*) FROM flux.create_partitions('flux.mg_meter_readings', :start::timestamptz - interval '1 day',
                                            :start::timestamptz + (:days + 1) * interval '1 day');

INSERT INTO flux.mg_meter_readings (device_id, time, power_total_active, energy_imported_active, energy_exported_active)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(d), 12, '0'))::uuid,
       :start::timestamptz + s * :interval * interval '1 second',
       100 + 50 * sin(s * :interval / 13750.0 + d),
       1000 * d + s::float8 * :interval * (100 + d) / 3600 - CASE WHEN s % 97 = 0 THEN 0.02 ELSE 0 END,
       500 * d + s * :interval * 0.0001
FROM generate_series(0, :days * 86400 / :interval - 1) s
CROSS JOIN generate_series(1, :meters) d
ORDER BY s, d;
