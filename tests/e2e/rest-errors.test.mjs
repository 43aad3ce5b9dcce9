// Bad input through the REST API: each gets the right status, a PostgREST error body with the
// SQLSTATE, and nothing already stored is lost.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, service, sql, closeSql, registerDevice, uuid, at, assertError, anonKey } from './lib.mjs';

after(closeSql);

const count = async (table, deviceId) =>
  Number((await sql(`SELECT count(*) AS n FROM flux.${table} WHERE device_id = $1`, [deviceId]))[0].n);

test('a bulk insert with one bad row stores nothing', async () => {
  const meter = await registerDevice({ type: 'meter' });
  await service('/mg_meter_readings', { method: 'POST', body: { device_id: meter.id, time: '2024-01-01T00:00:00Z', power_total_active: 1 } });
  const rows = Array.from({ length: 50 }, (_, i) => ({
    device_id: meter.id,
    time: at('2024-01-01T00:01:00Z', i),
    power_total_active: i,
    energy_imported_active: i === 37 ? -5 : 100 + i,
  }));
  assertError(assert, await service('/mg_meter_readings', { method: 'POST', body: rows }), 400, '23514');
  assert.equal(await count('mg_meter_readings', meter.id), 1, 'the earlier reading is kept, none of the batch stored');

  rows[37].energy_imported_active = 137;
  rows[12].time = 'yesterday-ish';
  const bad = await service('/mg_meter_readings', { method: 'POST', body: rows });
  assertError(assert, bad, 400, '22007');
  assert.equal(await count('mg_meter_readings', meter.id), 1);
});

test('out-of-range and malformed BESS values are refused with 400 and the SQLSTATE', async () => {
  const bess = await registerDevice({ type: 'bess' });
  const post = (fields) => service('/mg_bess_readings', { method: 'POST', body: { device_id: bess.id, time: '2024-01-01T00:00:00Z', ...fields } });
  for (const soe of [100.5, -0.1, 'NaN', 'Infinity']) {
    const res = await post({ soe });
    assertError(assert, res, 400, '23514');
    assert.match(res.body.message, /soe_between_0_and_100/);
  }
  assertError(assert, await post({ available_inverter_blocks: -1 }), 400, '23514');
  assertError(assert, await post({ available_inverter_blocks: 2.5 }), 400, '22P02');
  assertError(assert, await post({ target_power: 'lots' }), 400, '22P02');
  assertError(assert, await post({ target_power: '-Infinity' }), 400, '23514');
  assertError(assert, await post({ time: null }), 400, '23502');
  assertError(assert, await post({ time: '2024-13-45T00:00:00Z' }), 400, '22008');
  for (const time of ['infinity', '-infinity', '10000-01-01T00:00:00Z', '200000-06-01T00:00:00Z']) {
    const res = await post({ time });
    assertError(assert, res, 400, '23514');
    assert.match(res.body.message, /time_between_years_1_and_9999/);
  }
  assertError(assert, await post({ device_id: 'not-a-uuid' }), 400, '22P02');
  assertError(assert, await post({ no_such_column: 1 }), 400, 'PGRST204');
  assert.equal(await count('mg_bess_readings', bess.id), 0);
  assert.equal((await post({ soe: 100, available_inverter_blocks: 0 })).status, 201, 'the boundaries are valid');
});

test('a reading for an unregistered device is refused (409 23503)', async () => {
  const res = await service('/mg_bess_readings', { method: 'POST', body: { device_id: uuid(), time: '2024-01-01T00:00:00Z', soe: 5 } });
  assertError(assert, res, 409, '23503');
  assert.match(res.body.details, /is not present in table "mg_device_registry"/);
});

test('deleting a device that has readings is refused and keeps the readings', async () => {
  const meter = await registerDevice({ type: 'meter' });
  await service('/mg_meter_readings', { method: 'POST', body: { device_id: meter.id, time: '2024-01-01T00:00:00Z', power_total_active: 1 } });
  const res = await service(`/mg_device_registry?id=eq.${meter.id}`, { method: 'DELETE' });
  assertError(assert, res, 409, '23503');
  assert.equal(await count('mg_meter_readings', meter.id), 1);
  assert.equal((await api(`/mg_device_registry?id=eq.${meter.id}`)).body.length, 1);
  // A device without readings can be deleted.
  const spare = await registerDevice({ type: 'meter' });
  assert.equal((await service(`/mg_device_registry?id=eq.${spare.id}`, { method: 'DELETE' })).status, 204);
});

test('device registration rejects unknown types, duplicate names and malformed fields', async () => {
  const dev = await registerDevice({ type: 'bess' });
  const post = (body) => service('/mg_device_registry', { method: 'POST', body });
  const unknown = await post({ name: `${dev.name}-x`, type: 'toaster', site: 'WLCE' });
  assertError(assert, unknown, 400, '23514');
  assert.match(unknown.body.message, /device_type_known/);
  assertError(assert, await post({ name: dev.name, type: 'meter', site: 'WLCE' }), 409, '23505');
  assertError(assert, await post({ name: '  ', type: 'meter', site: 'WLCE' }), 400, '23514');
  assertError(assert, await post({ type: 'meter', site: 'WLCE' }), 400, '23502');
  assertError(assert, await post({ name: `${dev.name}-y`, type: 'meter', metadata: [1, 2] }), 400, '23514');
  assertError(assert, await post({ name: `${dev.name}-z`, type: 'meter', active: 'maybe' }), 400, '22P02');
});

test('bulk payloads whose objects have different keys are refused (PGRST102)', async () => {
  const meter = await registerDevice({ type: 'meter' });
  const res = await service('/mg_meter_readings', {
    method: 'POST',
    body: [
      { device_id: meter.id, time: '2024-01-01T00:00:00Z', power_total_active: 1 },
      { device_id: meter.id, time: '2024-01-01T00:01:00Z' },
    ],
  });
  assertError(assert, res, 400, 'PGRST102');
  assert.equal(await count('mg_meter_readings', meter.id), 0);
  const broken = await service('/mg_meter_readings', { method: 'POST', body: '[{"device_id": ' });
  assertError(assert, broken, 400, 'PGRST102');
});

test('bad queries: unknown operator, unknown column, unknown table, bad value', async () => {
  assertError(assert, await api('/mg_bess_readings?soe=about.50'), 400, 'PGRST100');
  assertError(assert, await api('/mg_bess_readings?wattage=eq.5'), 400, '42703');
  assertError(assert, await api('/mg_bess_readings?select=soe,wattage'), 400, '42703');
  assertError(assert, await api('/no_such_table'), 404, '42P01');
  assertError(assert, await api('/mg_bess_readings?soe=lt.abc'), 400, '22P02');
  assertError(assert, await api('/mg_bess_readings?time=gte.not-a-time'), 400, '22007');
  assertError(assert, await api('/mg_bess_readings?order=nothing.desc'), 400, '42703');
});

test('anon cannot write; a bad token is a 401', async () => {
  const bess = await registerDevice({ type: 'bess' });
  const res = await api('/mg_bess_readings', { method: 'POST', body: { device_id: bess.id, time: '2024-01-01T00:00:00Z', soe: 1 } });
  assertError(assert, res, 401, '42501');
  assertError(assert, await api('/mg_device_registry', { method: 'POST', body: { name: 'x', type: 'bess' } }), 401, '42501');
  assertError(assert, await api(`/mg_device_registry?id=eq.${bess.id}`, { method: 'DELETE' }), 401, '42501');
  assert.equal(await count('mg_bess_readings', bess.id), 0);

  const forged = `${anonKey.split('.').slice(0, 2).join('.')}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`;
  const bad = await api('/mg_device_registry', { key: forged });
  assert.equal(bad.status, 401);
  assert.equal(bad.body.code, 'PGRST301');
});
