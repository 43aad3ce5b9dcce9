// Time partitions as users meet them: readings of any time are stored, maintenance moves them
// to partitions of their own without changing them, device references hold set-wise, and the
// partition functions are for the database owner, not the API. (Retention, the maintenance
// worker and realtime over partitions change the stack: tests/serial/partitions.test.mjs.)
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { api, assertError, closeSql, env, registerDevice, service, sql, uuid } from './lib.mjs';

after(closeSql);

/** One round of maintenance, waiting for locks as long as it takes (tests run in parallel). */
export async function maintain() {
  const client = new pg.Client({ connectionString: env.FLUX_DB_URL });
  await client.connect();
  try {
    await client.query("SET flux.maintenance_lock_timeout = '60s'");
    return (await client.query('SELECT * FROM flux.run_maintenance()')).rows;
  } finally {
    await client.end();
  }
}

/** The partition each stored reading of `deviceId` is in, by time. */
async function placement(table, deviceId) {
  return sql(`SELECT to_jsonb(r) AS row, tableoid::regclass::text AS partition
              FROM flux.${table} r WHERE device_id = $1 ORDER BY time`, [deviceId]);
}

test('the reading tables and market_data are partitioned by time, and no partition is an API resource', async () => {
  const kinds = await sql(`SELECT relname, relkind, pg_get_partkeydef(oid) AS key FROM pg_class
                           WHERE relnamespace = 'flux'::regnamespace AND relkind IN ('r', 'p') ORDER BY relname`);
  assert.deepEqual(kinds.map((k) => [k.relname, k.relkind, k.key]).filter(([name]) => !name.startsWith('rt_')), [
    ['market_data', 'p', 'RANGE ("time")'],
    ['mg_bess_readings', 'p', 'RANGE ("time")'],
    ['mg_device_registry', 'r', null],
    ['mg_meter_readings', 'p', 'RANGE ("time")'],
  ]);
  const defaults = await sql(`SELECT c.oid::regclass::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                              WHERE pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' ORDER BY 1`);
  assert.deepEqual(defaults.map((d) => d.name), [
    'flux_partitions.market_data_default', 'flux_partitions.mg_bess_readings_default', 'flux_partitions.mg_meter_readings_default',
  ]);
  for (const path of ['/mg_meter_readings_default', '/rest/../mg_meter_readings_default']) {
    const res = await service(path);
    assert.equal(res.status, 404, path);
  }
  const profile = await service('/mg_meter_readings_default', { headers: { 'Accept-Profile': 'flux_partitions' } });
  assert.equal(profile.status, 406, JSON.stringify(profile.body));
});

test('readings with no partition yet are stored, and maintenance moves them out unchanged', async () => {
  const meter = await registerDevice();
  const now = Date.now();
  const pick = (n) => Math.floor(Math.random() * n);
  // Times no earlier run is likely to have made partitions for.
  const times = [
    `${1500 + pick(400)}-05-17T10:00:00Z`, // a back-fill centuries old
    new Date(now + (40 + pick(300)) * 86_400_000).toISOString(), // beyond the partitions made ahead
    `${2200 + pick(700)}-01-01T00:00:00Z`, // a clock far in the future
  ];
  const rows = times.map((time, i) => ({
    device_id: meter.id, time, power_total_active: i, energy_imported_active: 100 + i, energy_exported_active: 0,
  }));
  const stored = await service('/mg_meter_readings', { method: 'POST', headers: { Prefer: 'return=representation' }, body: rows });
  assert.equal(stored.status, 201, JSON.stringify(stored.body));

  const before = await placement('mg_meter_readings', meter.id);
  const inDefault = before.filter((r) => r.partition === 'flux_partitions.mg_meter_readings_default').length;
  assert.ok(inDefault > 0, JSON.stringify(before));
  const actions = await maintain();
  const moved = actions.filter((a) => a.action === 'moved');
  assert.ok(moved.length >= inDefault, JSON.stringify(actions));

  const afterMove = await placement('mg_meter_readings', meter.id);
  assert.deepEqual(afterMove.map((r) => r.row), before.map((r) => r.row), 'every column kept, id and created_at too');
  for (const r of afterMove) assert.match(r.partition, /^flux_partitions\.mg_meter_readings_p\d{8}$/);
  // A lone stray long past gets a partition spanning its calendar year, not a day of its own;
  // future ones get a day each, as live data will fill them.
  const days = await Promise.all(afterMove.map(async (r) => {
    const [b] = await sql(`SELECT lower, upper FROM flux_internal.time_partitions('flux.mg_meter_readings')
                           WHERE partition = $1::regclass`, [r.partition]);
    return (Date.parse(b.upper) - Date.parse(b.lower)) / 86_400_000;
  }));
  assert.ok(days[0] > 300, `${days}`);
  assert.deepEqual(days.slice(1), [1, 1]);

  // The moved rows are ordinary rows: the API reads, upserts and refuses duplicates as before.
  const listed = await api(`/mg_meter_readings?device_id=eq.${meter.id}&order=time.asc&select=time,power_total_active`);
  assert.deepEqual(listed.body.map((r) => r.power_total_active), [0, 1, 2]);
  const dup = await service('/mg_meter_readings', { method: 'POST', body: rows[0] });
  assertError(assert, dup, 409, '23505');
  assert.match(dup.body.details, /already exists/);
  const merged = await service('/mg_meter_readings?on_conflict=device_id,time', {
    method: 'POST',
    headers: { Prefer: 'resolution=merge-duplicates,return=representation' },
    body: { ...rows[0], power_total_active: 42 },
  });
  assert.ok([200, 201].includes(merged.status), JSON.stringify(merged.body));
  assert.equal(merged.body[0].power_total_active, 42);
});

test('a back-fill over scattered years makes at most one partition per year', async () => {
  const bess = await registerDevice({ type: 'bess' });
  const years = new Set();
  const rows = Array.from({ length: 60 }, (_, i) => {
    const year = 1700 + ((i * 37) % 400);
    years.add(year);
    return { device_id: bess.id, time: `${year}-${String((i % 12) + 1).padStart(2, '0')}-0${(i % 9) + 1}T0${i % 10}:00:00Z`, soe: i };
  });
  assert.equal((await service('/mg_bess_readings', { method: 'POST', body: rows })).status, 201);
  await maintain();
  const placed = await placement('mg_bess_readings', bess.id);
  assert.equal(placed.length, rows.length);
  const partitions = new Set(placed.map((r) => r.partition));
  assert.ok(!partitions.has('flux_partitions.mg_bess_readings_default'));
  assert.ok(partitions.size <= years.size, `${partitions.size} partitions for ${years.size} years`);
});

test('device references are checked per statement: one unknown device refuses the whole batch (409 23503)', async () => {
  const meter = await registerDevice();
  const unknown = uuid();
  const rows = Array.from({ length: 500 }, (_, i) => ({
    device_id: i === 317 ? unknown : meter.id, time: new Date(Date.UTC(2029, 0, 1, 0, 0, i)).toISOString(), power_total_active: i,
  }));
  const res = await service('/mg_meter_readings', { method: 'POST', body: rows });
  assertError(assert, res, 409, '23503');
  assert.equal(res.body.details, `Key (device_id)=(${unknown}) is not present in table "mg_device_registry".`);
  assert.match(res.body.message, /violates foreign key constraint "mg_meter_readings_device_id_fkey"/);
  assert.equal((await sql('SELECT count(*)::int AS n FROM flux.mg_meter_readings WHERE device_id = $1', [meter.id]))[0].n, 0);

  // An update that points readings at an unknown device is refused the same way.
  assert.equal((await service('/mg_meter_readings', { method: 'POST', body: rows.filter((_, i) => i !== 317) })).status, 201);
  const moved = await service(`/mg_meter_readings?device_id=eq.${meter.id}&time=lt.2029-01-01T00:01:00Z`, {
    method: 'PATCH', body: { device_id: unknown },
  });
  assertError(assert, moved, 409, '23503');
  assert.equal((await sql('SELECT count(*)::int AS n FROM flux.mg_meter_readings WHERE device_id = $1', [meter.id]))[0].n, 499);
});

test('a device with readings in any partition cannot be deleted (409 23503); an id change follows into them', async () => {
  const bess = await registerDevice({ type: 'bess' });
  const rows = ['1995-03-01T00:00:00Z', '2029-06-01T00:00:00Z'].map((time) => ({ device_id: bess.id, time, soe: 50 }));
  assert.equal((await service('/mg_bess_readings', { method: 'POST', body: rows })).status, 201);
  await maintain();
  const del = await service(`/mg_device_registry?id=eq.${bess.id}`, { method: 'DELETE' });
  assertError(assert, del, 409, '23503');
  assert.equal((await sql('SELECT count(*)::int AS n FROM flux.mg_bess_readings WHERE device_id = $1', [bess.id]))[0].n, 2);

  const newId = uuid();
  const patched = await service(`/mg_device_registry?id=eq.${bess.id}`, { method: 'PATCH', body: { id: newId } });
  assert.equal(patched.status, 204, JSON.stringify(patched.body));
  assert.equal((await sql('SELECT count(*)::int AS n FROM flux.mg_bess_readings WHERE device_id = $1', [newId]))[0].n, 2);
});

test('partition maintenance and settings are not API functions', async () => {
  for (const fn of ['run_maintenance', 'set_retention', 'set_partition_interval', 'create_partitions']) {
    const res = await service(`/rpc/${fn}`, { method: 'POST', body: {} });
    assert.ok([403, 404].includes(res.status), `${fn}: ${res.status} ${JSON.stringify(res.body)}`);
    const anon = await api(`/rpc/${fn}`, { method: 'POST', body: {} });
    assert.ok([401, 404].includes(anon.status), `${fn}: ${anon.status}`);
  }
  const openapi = await service('/');
  const paths = Object.keys(openapi.body.paths);
  assert.ok(paths.includes('/mg_meter_readings'));
  assert.ok(!paths.some((p) => /maintenance|retention|partition/.test(p)), paths.join(' '));
});

test('bad arguments to the partition functions are clear errors', async () => {
  const cases = [
    [`SELECT flux.set_partition_interval('flux.mg_device_registry', '1 day')`, '22023', /not a time-partitioned flux table/],
    [`SELECT flux.set_partition_interval('flux.mg_meter_readings', '30 minutes')`, '22023', /invalid partition interval/],
    [`SELECT flux.set_partition_interval('flux.mg_meter_readings', '1 month 2 days')`, '22023', /invalid partition interval/],
    [`SELECT flux.set_partition_interval('flux.mg_meter_readings', '-1 day')`, '22023', /invalid partition interval/],
    [`SELECT flux.set_retention('flux.market_data', '-1 day')`, '22023', /invalid retention/],
    [`SELECT flux.set_retention(NULL, '1 day')`, '22023', /not a time-partitioned flux table/],
    [`SELECT flux.set_retention('pg_class', '1 day')`, '22023', /not a time-partitioned flux table/],
    [`SELECT * FROM flux.create_partitions('flux.mg_bess_readings', '2030-01-02', '2030-01-01')`, '22023', /invalid time range/],
    [`SELECT * FROM flux.create_partitions('flux.mg_bess_readings', '-infinity', '2030-01-01')`, '22023', /invalid time range/],
    [`SELECT * FROM flux.create_partitions('flux.mg_bess_readings', '3000-01-01', '3100-01-01')`, '54000', /more than 10,000 partitions/],
  ];
  for (const [statement, code, message] of cases) {
    await assert.rejects(sql(statement), (e) => e.code === code && message.test(e.message), statement);
  }
  // None of them changed anything.
  const config = await sql('SELECT count(*)::int AS n FROM flux_internal.partition_config WHERE partition_interval IS NOT NULL OR retention IS NOT NULL');
  assert.equal(config[0].n, 0);
  const far = await sql(`SELECT count(*)::int AS n FROM flux_internal.time_partitions('flux.mg_bess_readings') WHERE lower >= '3000-01-01'`);
  assert.equal(far[0].n, 0);
});
