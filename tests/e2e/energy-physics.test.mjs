// Energy you can settle on (revision 2 of the classifier) through PostgREST: the findings of the
// physics review on the default settings, the set-aside energy per bucket and per device, and
// the bounds on stored magnitudes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, service, closeSql, registerDevice, at, assertError, uniqueName } from './lib.mjs';

after(closeSql);

const T0 = '2024-01-01T00:00:00Z';

async function meterWith(readings, metadata) {
  const meter = await registerDevice({ type: 'meter', metadata });
  const res = await service('/mg_meter_readings', {
    method: 'POST',
    body: readings.map(([m, kwh]) => ({ device_id: meter.id, time: at(T0, m), energy_imported_active: kwh })),
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return meter;
}

const rpc = (name, body) => api(`/rpc/${name}`, { method: 'POST', body });
const total = (rows) => rows.reduce((s, r) => s + (r.energy_imported_active_delta ?? 0), 0);
const close = (a, b) => Math.abs(a - b) < 1e-9;

test('without max_power_kw, a spike, a run of zeros and a replacement meter book no phantom energy', async () => {
  const cases = [
    [[[0, 100], [30, 105], [35, 9999], [40, 106], [45, 107]], 7],
    [[[0, 50000], [5, 0], [10, 0], [15, 50000.2], [20, 50000.4]], 0.4],
    [[[0, 500], [30, 510], [60, 9000], [90, 9010]], 20],
    [[[0, 100], [30, 110], [35, 9999]], 10],
  ];
  for (const [readings, expected] of cases) {
    const meter = await meterWith(readings);
    const res = await rpc('get_meter_readings_30m', { start_time: T0, end_time: at(T0, 120), device_ids: [meter.id] });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.ok(Math.abs(total(res.body) - expected) < 1e-6, `${JSON.stringify(readings)}: ${total(res.body)} kWh, not ${expected}`);
  }
});

test('meter_energy_buckets shows what was set aside and why; meter_energy_set_aside sums it per device', async () => {
  const meter = await meterWith([[0, 500], [30, 510], [60, 9000], [90, 9010]]);
  const res = await rpc('meter_energy_buckets', { start_time: T0, end_time: at(T0, 120), bucket_width: '30 minutes', device_ids: [meter.id] });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const jump = res.body.find((r) => r.time_b.startsWith('2024-01-01T01:00'));
  assert.deepEqual(jump.energy_imported_active_quality, ['meter_change']);
  assert.ok(close(jump.energy_imported_active_set_aside, 8490));
  assert.ok(res.body.filter((r) => r !== jump).every((r) => r.energy_imported_active_set_aside === 0));

  const summary = await rpc('meter_energy_set_aside', { start_time: T0, end_time: at(T0, 120), device_ids: [meter.id] });
  assert.equal(summary.status, 200, JSON.stringify(summary.body));
  assert.deepEqual(summary.body.map((r) => [r.device_id, r.register, r.reason, Math.round(r.set_aside_kwh), Math.round(r.booked_kwh)]), [
    [meter.id, 'energy_imported_active', 're-base', 8490, 20],
  ]);
});

test('a mis-scaled max_power_kw is found in one query over all devices', async () => {
  const site = uniqueName('SCALE');
  const good = await registerDevice({ type: 'meter', site, metadata: { max_power_kw: 500 } });
  const wrong = await registerDevice({ type: 'meter', site, metadata: { max_power_kw: 0.5 } }); // W, not kW
  for (const meter of [good, wrong]) {
    const rows = Array.from({ length: 13 }, (_, i) => ({ device_id: meter.id, time: at(T0, 5 * i), energy_imported_active: 1000 + 20 * i }));
    assert.equal((await service('/mg_meter_readings', { method: 'POST', body: rows })).status, 201);
  }
  const res = await api('/rpc/meter_energy_set_aside?order=set_aside_kwh.desc', {
    method: 'POST', body: { start_time: T0, end_time: at(T0, 60), device_ids: [good.id, wrong.id] },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(res.body.map((r) => r.device_id), [wrong.id]);
  assert.ok(res.body[0].set_aside_kwh > 200 && res.body[0].booked_kwh < 1, JSON.stringify(res.body));
});

test('absurd magnitudes are refused at insert with 23514, so sums stay finite', async () => {
  const meter = await registerDevice({ type: 'meter' });
  const bess = await registerDevice({ type: 'bess' });
  const post = (table, fields) => service(`/${table}`, { method: 'POST', body: { time: at(T0, 1), ...fields } });
  for (const [table, fields, constraint] of [
    ['mg_meter_readings', { device_id: meter.id, energy_imported_active: 1.5e12 }, 'energy_imported_active_in_range'],
    ['mg_meter_readings', { device_id: meter.id, energy_exported_active: -1 }, 'energy_exported_active_in_range'],
    ['mg_meter_readings', { device_id: meter.id, power_total_active: 1e300 }, 'power_total_active_in_range'],
    ['mg_meter_readings', { device_id: meter.id, voltage_line_average: 'NaN' }, 'voltage_line_average_in_range'],
    ['mg_bess_readings', { device_id: bess.id, target_power: -2e9 }, 'target_power_in_range'],
    ['market_data', { type: 1, value: 1e13 }, 'market_data_value_in_range'],
  ]) {
    const res = await post(table, fields);
    assertError(assert, res, 400, '23514');
    assert.match(res.body.message, new RegExp(constraint), JSON.stringify(fields));
  }
  // The bounds themselves are fine.
  assert.equal((await post('mg_meter_readings', { device_id: meter.id, energy_imported_active: 1e12, power_total_active: -1e9 })).status, 201);
});
