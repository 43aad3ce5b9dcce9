-- The flux tables: the resources of the REST API (one table = one endpoint).
--
-- The reading tables and market_data are range-partitioned by `time` (sql/partitions.sql
-- creates, moves and drops the partitions). Every unique key contains (device_id, time) or
-- (type, time), as partitioning requires and as distributing by device (Citus) will. The `id`
-- columns are generated UUIDs for clients that want a handle on a row; they are not unique
-- keys for the same reason. flux_internal.random_uuid() makes the same version 4 uuids as
-- gen_random_uuid(), in a fraction of the time (src/ids.rs).
--
-- Floating-point columns refuse NaN, ±Infinity and absurd magnitudes: JSON cannot carry the
-- first two, but PostgreSQL would accept the strings "NaN" and "Infinity", and one such value
-- would poison every aggregate. Bounds far above any real device keep sums finite: registers
-- lie in 0..1e12 kWh, power, voltage and current within ±1e9, market values within ±1e12.
-- (A range check is false for NaN as well, because PostgreSQL sorts NaN above every number.)
-- Times likewise lie in years 1 to 9999: `infinity` or year 200000 is a typo, not telemetry.
--
-- Indexes: the primary keys serve per-device time ranges; the `time` indexes serve time ranges
-- across devices and newest-first listings (scanned backwards). They are ascending on purpose:
-- an unordered scan through them then yields readings in time order, which the energy
-- functions stream without re-reading.

-- The partitions live in a schema of their own, outside the API: clients only ever see the
-- partitioned tables, whose policies and grants apply to every partition.
CREATE SCHEMA flux_partitions;
COMMENT ON SCHEMA flux_partitions IS
    'Time partitions of the flux tables, created and dropped by flux.run_maintenance(). Not part of the API.';

CREATE TABLE flux.mg_device_registry (
    id          uuid        NOT NULL DEFAULT flux_internal.random_uuid() PRIMARY KEY,
    name        text        NOT NULL,
    type        text        NOT NULL,
    site        text,
    metadata    jsonb       DEFAULT '{}'::jsonb,
    active      boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT mg_device_registry_name_key UNIQUE (name),
    CONSTRAINT device_name_not_blank CHECK (btrim(name) <> ''),
    CONSTRAINT device_type_known
        CHECK (type IN ('bess', 'meter', 'pv', 'ev_charger', 'generator', 'load')),
    CONSTRAINT device_site_not_blank CHECK (btrim(site) <> ''),
    CONSTRAINT device_metadata_is_object CHECK (jsonb_typeof(metadata) = 'object')
);
CREATE INDEX mg_device_registry_site_idx ON flux.mg_device_registry (site);

COMMENT ON TABLE flux.mg_device_registry IS
    'Registered devices (BESS, meters, ...). Readings reference a device by id.';
COMMENT ON COLUMN flux.mg_device_registry.type IS
    'bess, meter, pv, ev_charger, generator or load';
COMMENT ON COLUMN flux.mg_device_registry.site IS 'Site code, e.g. WLCE';
COMMENT ON COLUMN flux.mg_device_registry.metadata IS
    'Free-form JSON object; energy parameters: max_power_kw, energy_register_max_kwh, energy_jitter_kwh';

CREATE TABLE flux.mg_bess_readings (
    id                        uuid             NOT NULL DEFAULT flux_internal.random_uuid(),
    time                      timestamptz      NOT NULL,
    device_id                 uuid             NOT NULL,
    soe                       double precision,
    target_power              double precision,
    available_inverter_blocks integer,
    command_source            integer,
    created_at                timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT mg_bess_readings_pkey PRIMARY KEY (device_id, time),
    -- Deleting a device that still has readings is refused (409), never cascaded. Inserts are
    -- checked once per statement instead of once per row (sql/references.sql).
    CONSTRAINT mg_bess_readings_device_id_fkey FOREIGN KEY (device_id)
        REFERENCES flux.mg_device_registry (id) ON UPDATE CASCADE ON DELETE RESTRICT,
    CONSTRAINT time_between_years_1_and_9999
        CHECK (time >= '0001-01-01 00:00+00' AND time < '10000-01-01 00:00+00'),
    CONSTRAINT soe_between_0_and_100 CHECK (soe >= 0 AND soe <= 100),
    CONSTRAINT target_power_in_range CHECK (target_power BETWEEN -1e9 AND 1e9),
    CONSTRAINT available_inverter_blocks_not_negative CHECK (available_inverter_blocks >= 0)
) PARTITION BY RANGE (time);
CREATE INDEX mg_bess_readings_time_idx ON flux.mg_bess_readings (time);
CREATE TABLE flux_partitions.mg_bess_readings_default PARTITION OF flux.mg_bess_readings DEFAULT;

COMMENT ON TABLE flux.mg_bess_readings IS 'Battery energy storage system telemetry, one row per device and time.';
COMMENT ON COLUMN flux.mg_bess_readings.soe IS 'State of energy, % (0-100)';
COMMENT ON COLUMN flux.mg_bess_readings.target_power IS 'Power set-point, kW (negative = charging)';

CREATE TABLE flux.mg_meter_readings (
    id                     uuid             NOT NULL DEFAULT flux_internal.random_uuid(),
    time                   timestamptz      NOT NULL,
    device_id              uuid             NOT NULL,
    power_total_active     double precision,
    energy_imported_active double precision,
    energy_exported_active double precision,
    voltage_line_average   double precision,
    current_phase_average  double precision,
    created_at             timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT mg_meter_readings_pkey PRIMARY KEY (device_id, time),
    CONSTRAINT mg_meter_readings_device_id_fkey FOREIGN KEY (device_id)
        REFERENCES flux.mg_device_registry (id) ON UPDATE CASCADE ON DELETE RESTRICT,
    CONSTRAINT time_between_years_1_and_9999
        CHECK (time >= '0001-01-01 00:00+00' AND time < '10000-01-01 00:00+00'),
    CONSTRAINT power_total_active_in_range CHECK (power_total_active BETWEEN -1e9 AND 1e9),
    -- Cumulative registers count up from zero.
    CONSTRAINT energy_imported_active_in_range CHECK (energy_imported_active BETWEEN 0 AND 1e12),
    CONSTRAINT energy_exported_active_in_range CHECK (energy_exported_active BETWEEN 0 AND 1e12),
    CONSTRAINT voltage_line_average_in_range CHECK (voltage_line_average BETWEEN -1e9 AND 1e9),
    CONSTRAINT current_phase_average_in_range CHECK (current_phase_average BETWEEN -1e9 AND 1e9)
) PARTITION BY RANGE (time);
CREATE INDEX mg_meter_readings_time_idx ON flux.mg_meter_readings (time);
CREATE TABLE flux_partitions.mg_meter_readings_default PARTITION OF flux.mg_meter_readings DEFAULT;

COMMENT ON TABLE flux.mg_meter_readings IS 'Power meter telemetry, one row per device and time.';
COMMENT ON COLUMN flux.mg_meter_readings.power_total_active IS 'Total active power, kW';
COMMENT ON COLUMN flux.mg_meter_readings.energy_imported_active IS 'Cumulative imported active energy register, kWh';
COMMENT ON COLUMN flux.mg_meter_readings.energy_exported_active IS 'Cumulative exported active energy register, kWh';
COMMENT ON COLUMN flux.mg_meter_readings.voltage_line_average IS 'Average line voltage, V';
COMMENT ON COLUMN flux.mg_meter_readings.current_phase_average IS 'Average phase current, A';

CREATE TABLE flux.market_data (
    id          uuid             NOT NULL DEFAULT flux_internal.random_uuid(),
    time        timestamptz      NOT NULL,
    type        smallint         NOT NULL,
    value       double precision NOT NULL,
    metadata    jsonb,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT market_data_pkey PRIMARY KEY (type, time),
    CONSTRAINT time_between_years_1_and_9999
        CHECK (time >= '0001-01-01 00:00+00' AND time < '10000-01-01 00:00+00'),
    CONSTRAINT market_data_type_known CHECK (type BETWEEN 1 AND 4),
    CONSTRAINT market_data_value_in_range CHECK (value BETWEEN -1e12 AND 1e12),
    CONSTRAINT market_data_metadata_is_object CHECK (jsonb_typeof(metadata) = 'object')
) PARTITION BY RANGE (time);
CREATE INDEX market_data_time_idx ON flux.market_data (time);
CREATE TABLE flux_partitions.market_data_default PARTITION OF flux.market_data DEFAULT;

COMMENT ON TABLE flux.market_data IS 'GB market signals, one row per type and time.';
COMMENT ON COLUMN flux.market_data.type IS
    '1 NIV estimate (MW, positive = system short), 2 wholesale price (GBP/MWh), 3 imbalance price (GBP/MWh), 4 Axle dispatch (kW)';

-- A reading whose time has no partition yet lands in its table's default partition (above),
-- and maintenance moves it out. The default partitions and the registry belong to the
-- extension, so pg_dump would leave their rows out unless told; the time partitions do not.
SELECT pg_catalog.pg_extension_config_dump('flux.mg_device_registry', '');
SELECT pg_catalog.pg_extension_config_dump('flux_partitions.mg_bess_readings_default', '');
SELECT pg_catalog.pg_extension_config_dump('flux_partitions.mg_meter_readings_default', '');
SELECT pg_catalog.pg_extension_config_dump('flux_partitions.market_data_default', '');
