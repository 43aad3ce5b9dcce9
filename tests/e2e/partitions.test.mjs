// Time partitions as API users meet them: the tables are partitioned out of reach, device
// references hold set-wise, and the partition functions are for the database owner, not the
// API. (Maintenance takes locks the other tests would wait for: tests/serial/partitions.test.mjs.)
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, assertError, closeSql, fromAddress, registerDevice, service, serviceKey, sql, uuid } from './lib.mjs';

after(closeSql);

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
  assert.equal((await service('/mg_meter_readings_default')).status, 404);
  // A path that climbs out of /rest/v1 reaches no partition either (sent raw: fetch would tidy it).
  const climbed = await fromAddress('127.0.0.1', '/rest/v1/../v1/mg_meter_readings_default', { headers: { apikey: serviceKey } });
  assert.equal(climbed.status, 404);
  const profile = await service('/mg_meter_readings_default', { headers: { 'Accept-Profile': 'flux_partitions' } });
  assert.equal(profile.status, 406, JSON.stringify(profile.body));
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
    [`SELECT * FROM flux.create_partitions('flux.mg_bess_readings', NULL, '2030-01-01')`, '22023', /invalid time range/],
    [`SELECT * FROM flux.create_partitions('flux.market_data', '9999-12-01', '10000-02-01')`, '22023', /invalid time range/],
    [`SELECT flux.set_retention('flux.market_data', '0 days')`, '22023', /invalid retention/],
    [`SELECT flux.set_retention('flux.market_data', '10001 years')`, '22023', /invalid retention/],
    [`SELECT flux.set_partition_interval('flux.market_data', '121 months')`, '22023', /invalid partition interval/],
    [`SELECT flux.set_partition_interval('flux.market_data', '1 day 0.5 seconds')`, '22023', /invalid partition interval/],
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
