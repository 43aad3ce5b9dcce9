// The documented energy RPCs through PostgREST: get_meter_readings_5m / _30m, plus the general
// meter_energy_buckets and settlement_period. Exact figures on the public vectors of energy.md.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, service, sql, env, closeSql, registerDevice, at, assertError, uuid, signJwt } from './lib.mjs';

after(closeSql);

const T0 = '2024-01-01T00:00:00Z';

/** A meter with `(minute, imported kWh[, power kW])` readings after T0. */
async function meterWith(readings, metadata) {
  const meter = await registerDevice({ type: 'meter', metadata });
  const res = await service('/mg_meter_readings', {
    method: 'POST',
    body: readings.map(([m, kwh, kw = null]) => ({
      device_id: meter.id,
      time: at(T0, m),
      energy_imported_active: kwh,
      energy_exported_active: kwh / 10,
      power_total_active: kw,
    })),
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return meter;
}

const rpc = (name, body, opts = {}) => api(`/rpc/${name}`, { method: 'POST', body, ...opts });
const deltas = (rows) => rows.map((r) => [r.time_b, r.energy_imported_active_delta]);
const close = (a, b) => Math.abs(a - b) < 1e-9;

test('POST /rpc/get_meter_readings_5m as documented returns the documented fields', async () => {
  const meter = await meterWith([[0, 100, 120], [5, 110, 125], [10, 112, 130]]);
  const res = await rpc('get_meter_readings_5m', { start_time: T0, end_time: '2024-01-02T00:00:00Z', device_ids: [meter.id] });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(Object.keys(res.body[0]).sort(), [
    'device_id', 'energy_exported_active_delta', 'energy_imported_active_delta', 'power_total_active_avg', 'time_b',
  ]);
  assert.deepEqual(
    res.body.map((r) => [r.time_b, r.device_id, r.power_total_active_avg, r.energy_imported_active_delta]),
    [
      ['2024-01-01T00:00:00+00:00', meter.id, 120, 10],
      ['2024-01-01T00:05:00+00:00', meter.id, 125, 2],
      ['2024-01-01T00:10:00+00:00', meter.id, 130, 0],
    ],
  );
  assert.ok(close(res.body[0].energy_exported_active_delta, 1));
});

test('POST /rpc/get_meter_readings_30m: T2 unaligned readings, exact interpolated split, no row after the data', async () => {
  const meter = await meterWith([[10, 100, 50], [40, 130, 60], [70, 160, 70], [100, 190, 80]]);
  const res = await rpc('get_meter_readings_30m', { start_time: T0, end_time: at(T0, 150), device_ids: [meter.id] });
  assert.equal(res.status, 200);
  assert.deepEqual(deltas(res.body), [
    ['2024-01-01T00:00:00+00:00', 20],
    ['2024-01-01T00:30:00+00:00', 30],
    ['2024-01-01T01:00:00+00:00', 30],
    ['2024-01-01T01:30:00+00:00', 10],
  ]);
  assert.deepEqual(res.body.map((r) => r.power_total_active_avg), [50, 60, 70, 80]);
  assert.deepEqual(res.body.map((r) => [r.settlement_date, r.settlement_period]), [
    ['2024-01-01', 1], ['2024-01-01', 2], ['2024-01-01', 3], ['2024-01-01', 4],
  ]);
  // Range independence: the bucket [00:30, 01:00) alone has the same figure.
  const one = await rpc('get_meter_readings_30m', { start_time: at(T0, 30), end_time: at(T0, 60), device_ids: [meter.id] });
  assert.deepEqual(deltas(one.body), [['2024-01-01T00:30:00+00:00', 30]]);
});

test('resets, long gaps and jitter (T4, T8, T5) through the API', async () => {
  const reset = await meterWith([[0, 1000], [30, 1010], [60, 5], [90, 20]], { max_power_kw: 100 });
  const gap = await meterWith([[0, 100], [30, 110], [180, 170], [210, 180]]);
  const jitter = await meterWith([[0, 3598.0], [10, 3598.3], [20, 3598.2], [30, 3598.4], [40, 3598.6]], { energy_jitter_kwh: 0.5 });
  const res = await rpc('get_meter_readings_30m', { start_time: T0, end_time: at(T0, 210), device_ids: [reset.id, gap.id, jitter.id] });
  assert.equal(res.status, 200);
  const of = (id) => res.body.filter((r) => r.device_id === id).map((r) => r.energy_imported_active_delta);
  assert.deepEqual(of(reset.id), [10, 5, 15, 0]);
  assert.deepEqual(of(gap.id), [10, 12, 12, 12, 12, 12, 10]);
  const j = of(jitter.id);
  assert.equal(j.length, 2);
  assert.ok(close(j[0], 0.4) && close(j[1], 0.2), JSON.stringify(j));
  // Rows come ordered by device, then time.
  const keys = res.body.map((r) => `${r.device_id}/${r.time_b}`);
  assert.deepEqual(keys, [...keys].sort());
});

test('device_ids null means every visible device; table-valued RPCs take filters and select', async () => {
  const meter = await meterWith([[0, 1], [30, 2]]);
  // PostgREST 12 filters a function's result only on selected columns: select device_id too.
  const res = await rpc(`get_meter_readings_30m?device_id=eq.${meter.id}&select=device_id,time_b,energy_imported_active_delta`, {
    start_time: T0,
    end_time: at(T0, 60),
    device_ids: null,
  });
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, [
    { device_id: meter.id, time_b: '2024-01-01T00:00:00+00:00', energy_imported_active_delta: 1 },
    // The bucket holding the last reading has a row (its start is inside the data span).
    { device_id: meter.id, time_b: '2024-01-01T00:30:00+00:00', energy_imported_active_delta: 0 },
  ]);
});

test('GET /rpc/get_meter_readings_30m works too (the functions are STABLE)', async () => {
  const meter = await meterWith([[0, 1], [30, 4]]);
  const res = await api(
    `/rpc/get_meter_readings_30m?start_time=2024-01-01T00:00:00Z&end_time=2024-01-01T01:00:00Z&device_ids={${meter.id}}`,
  );
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(deltas(res.body), [['2024-01-01T00:00:00+00:00', 3], ['2024-01-01T00:30:00+00:00', 0]]);
});

test('meter_energy_buckets: any width, with coverage and quality flags (T3)', async () => {
  const meter = await meterWith([[20, 100], [70, 150]]);
  const res = await rpc('meter_energy_buckets', { start_time: T0, end_time: at(T0, 120), bucket_width: '15 minutes', device_ids: [meter.id] });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(
    res.body.map((r) => [r.time_b.slice(11, 16), r.energy_imported_active_delta, r.energy_imported_active_coverage, r.energy_imported_active_quality]),
    [
      ['00:15', 10, 10 / 15, []],
      ['00:30', 15, 1, ['interpolated']],
      ['00:45', 15, 1, ['interpolated']],
      ['01:00', 10, 10 / 15, []],
    ],
  );
});

test('settlement_period over REST, on both clock-change days', async () => {
  for (const [ts, expected] of [
    ['2024-03-31T01:00:00Z', { settlement_date: '2024-03-31', settlement_period: 3, periods_in_day: 46 }],
    ['2024-10-27T01:00:00Z', { settlement_date: '2024-10-27', settlement_period: 5, periods_in_day: 50 }],
    ['2025-01-15T12:10:00Z', { settlement_date: '2025-01-15', settlement_period: 25, periods_in_day: 48 }],
  ]) {
    const res = await api(`/rpc/settlement_period?ts=${encodeURIComponent(ts)}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, [expected]);
  }
});

test('bad RPC input is a 400 with the SQLSTATE and a clear message', async () => {
  const meter = await meterWith([[0, 1]]);
  const cases = [
    [{ start_time: at(T0, 60), end_time: T0, device_ids: null }, '22023', /empty time range/],
    [{ start_time: T0, end_time: T0, device_ids: null }, '22023', /empty time range/],
    [{ start_time: null, end_time: T0, device_ids: null }, '22004', /start_time must not be null/],
    [{ start_time: 'soon', end_time: T0, device_ids: null }, '22007', /timestamp/],
    [{ start_time: T0, end_time: '2026-01-01T00:00:00Z', device_ids: [meter.id] }, '22023', /buckets/],
    [{ start_time: T0, end_time: at(T0, 60), device_ids: [uuid()] }, '22023', /unknown device id/],
    [{ start_time: T0, end_time: at(T0, 60), device_ids: ['not-a-uuid'] }, '22P02', /uuid/],
  ];
  for (const [body, code, message] of cases) {
    const res = await rpc('get_meter_readings_5m', body);
    assertError(assert, res, 400, code);
    assert.match(res.body.message, message, JSON.stringify(body));
  }
  // Metadata the energy functions could not use is refused by the registry itself.
  const broken = await service('/mg_device_registry', { method: 'POST', body: { name: `BROKEN-${uuid()}`, type: 'meter', metadata: { max_power_kw: -5 } } });
  assertError(assert, broken, 400, '23514');
  assert.match(broken.body.message, /max_power_kw must be a positive number/);
  const patched = await service(`/mg_device_registry?id=eq.${meter.id}`, { method: 'PATCH', body: { metadata: { energy_jitter_kwh: 'small' } } });
  assertError(assert, patched, 400, '23514');
  const missing = await rpc('get_meter_readings_30m', { start_time: T0 });
  assert.equal(missing.status, 404, 'PostgREST finds no function without end_time');
});

test('the RPCs see only the devices row-level security lets the caller see', async () => {
  const visible = await meterWith([[0, 1], [30, 2]]);
  const hidden = await meterWith([[0, 1], [30, 9]]);
  // A project-defined role that may see one device only, as PostgREST would switch to it.
  const role = `flux_e2e_${uuid().slice(0, 8)}`;
  const setup = [
    `CREATE ROLE ${role} NOLOGIN`,
    `GRANT ${role} TO authenticator`,
    `GRANT USAGE ON SCHEMA flux TO ${role}`,
    `GRANT SELECT ON flux.mg_device_registry, flux.mg_meter_readings TO ${role}`,
    `CREATE POLICY ${role} ON flux.mg_device_registry FOR SELECT TO ${role} USING (id = '${visible.id}')`,
    `CREATE POLICY ${role} ON flux.mg_meter_readings FOR SELECT TO ${role} USING (device_id = '${visible.id}')`,
  ];
  const teardown = [
    `DROP POLICY ${role} ON flux.mg_device_registry`,
    `DROP POLICY ${role} ON flux.mg_meter_readings`,
    `REVOKE ALL ON flux.mg_device_registry, flux.mg_meter_readings FROM ${role}`,
    `REVOKE USAGE ON SCHEMA flux FROM ${role}`,
    `DROP ROLE ${role}`,
  ];
  for (const statement of setup) await sql(statement);
  try {
    // flux.sign_jwt mints only the built-in roles: sign this one here.
    const headers = { Authorization: `Bearer ${signJwt({ role })}` };
    const all = await rpc('get_meter_readings_30m', { start_time: T0, end_time: at(T0, 60), device_ids: null }, { headers });
    assert.equal(all.status, 200, JSON.stringify(all.body));
    assert.deepEqual([...new Set(all.body.map((r) => r.device_id))], [visible.id]);
    const asked = await rpc('get_meter_readings_30m', { start_time: T0, end_time: at(T0, 60), device_ids: [hidden.id] }, { headers });
    assertError(assert, asked, 400, '22023');
    assert.match(asked.body.message, /unknown device id/);
    // The service role sees both.
    const both = await rpc('get_meter_readings_30m', { start_time: T0, end_time: at(T0, 60), device_ids: [visible.id, hidden.id] }, { key: env.FLUX_SERVICE_ROLE_KEY });
    assert.equal(new Set(both.body.map((r) => r.device_id)).size, 2);
  } finally {
    for (const statement of teardown) await sql(statement);
  }
});
