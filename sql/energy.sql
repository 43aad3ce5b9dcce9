-- Documentation of the energy functions (implemented in Rust, src/energy.rs). They run with the
-- caller's rights: row-level security decides which devices and readings they see.

COMMENT ON FUNCTION flux.get_meter_readings_5m(timestamptz, timestamptz, uuid[]) IS
    'Per device and 5-minute bucket in [start_time, end_time): mean power and the energy imported and exported (kWh), reconstructed from the cumulative registers across resets, rollovers, jitter, meter changes and gaps. device_ids null = every device you can see.';
COMMENT ON FUNCTION flux.get_meter_readings_30m(timestamptz, timestamptz, uuid[]) IS
    'As get_meter_readings_5m, per 30-minute settlement period, with the GB settlement date and period number.';
COMMENT ON FUNCTION flux.meter_energy_buckets(timestamptz, timestamptz, interval, uuid[]) IS
    'Energy per bucket of any fixed width (1 second to 31 days), with reading counts, per-register coverage (fraction of the bucket inside the data), quality flags (interpolated, reset, rollover, jitter, meter_change, spike_dropped, implausible, ambiguous) and the energy set aside in the bucket (kWh).';
COMMENT ON FUNCTION flux.meter_energy_set_aside(timestamptz, timestamptz, uuid[]) IS
    'Per device, register and reason (spike, re-base, implausible, ambiguous), the energy set aside over [start_time, end_time) in kWh, beside the energy booked: a misconfigured meter shows here.';
COMMENT ON FUNCTION flux.settlement_period(timestamptz) IS
    'GB settlement date, period number and number of periods of that date (46 or 50 on clock-change days) of an instant.';

-- The functions' queries each touch a few rows per device, but the planner's cost estimates
-- over many partitions pass jit_above_cost: JIT compilation then takes seconds (measured: 2.9
-- s of a 5.6 s call over 730 daily partitions) to save nothing.
ALTER FUNCTION flux.get_meter_readings_5m(timestamptz, timestamptz, uuid[]) SET jit = off;
ALTER FUNCTION flux.get_meter_readings_30m(timestamptz, timestamptz, uuid[]) SET jit = off;
ALTER FUNCTION flux.meter_energy_buckets(timestamptz, timestamptz, interval, uuid[]) SET jit = off;
ALTER FUNCTION flux.meter_energy_set_aside(timestamptz, timestamptz, uuid[]) SET jit = off;
