// Partition maintenance on the running stack: rows without a partition moved out unchanged,
// the background worker, retention, the bound on how long maintenance can hold up ingest,
// inserts racing maintenance, and realtime over partitions. Serial: maintenance locks tables
// the other tests use, changes settings of the stack and drops partitions.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { anonKey, api, assertError, closeSql, env, registerDevice, service, sleep, sql, until, uuid } from '../e2e/lib.mjs';
import { Client, flavors } from '../e2e/realtime/harness.mjs';

after(closeSql);

async function connect() {
  const client = new pg.Client({ connectionString: env.FLUX_DB_URL });
  await client.connect();
  return client;
}

/** One round of maintenance by hand, on its own connection. */
async function maintain(lockTimeout = '60s') {
  const client = await connect();
  try {
    await client.query(`SET flux.maintenance_lock_timeout = '${lockTimeout}'`);
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

const partitionOf = async (table, deviceId, time) =>
  (await sql(`SELECT tableoid::regclass::text AS p FROM flux.${table} WHERE device_id = $1 AND time = $2`, [deviceId, time]))[0]?.p;

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
  // 20 years long past (the future gets partitions of its interval), three readings in each
  // on different days: a partition per day would make 60.
  const years = new Set();
  const rows = Array.from({ length: 60 }, (_, i) => {
    const year = 1600 + ((Math.floor(i / 3) * 37) % 300);
    years.add(year);
    return { device_id: bess.id, time: `${year}-${String((i % 3) * 4 + 1).padStart(2, '0')}-0${(i % 9) + 1}T0${i % 10}:00:00Z`, soe: i };
  });
  assert.equal((await service('/mg_bess_readings', { method: 'POST', body: rows })).status, 201);
  await maintain();
  const placed = await placement('mg_bess_readings', bess.id);
  assert.equal(placed.length, rows.length);
  const partitions = new Set(placed.map((r) => r.partition));
  assert.ok(!partitions.has('flux_partitions.mg_bess_readings_default'));
  assert.equal(years.size, 20);
  assert.ok(partitions.size <= years.size, `${partitions.size} partitions for ${years.size} years`);
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

test('the maintenance worker moves rows without being asked, past a table it cannot maintain, calling nothing users defined', async () => {
  // The bess table's step fails: a view pins a partition past its retention, so it cannot be
  // dropped. The worker must pass over it and still maintain the meter table.
  await sql(`SELECT * FROM flux.create_partitions('flux.mg_bess_readings', '2003-01-01', '2003-01-02')`);
  await sql('CREATE VIEW public.flux_test_pinned AS SELECT * FROM flux_partitions.mg_bess_readings_p20030101');
  await sql(`SELECT flux.set_retention('flux.mg_bess_readings', now() - '2003-01-02'::timestamptz)`);
  // The worker runs as a superuser: a function of a database user that would win overload
  // resolution over the catalog's must never be called by it.
  await sql('CREATE TABLE public.flux_test_hijacked (at timestamptz)');
  await sql(`CREATE FUNCTION public.concat_ws(text, text, text, text, text) RETURNS text LANGUAGE sql
             AS $$ INSERT INTO public.flux_test_hijacked VALUES (now()) RETURNING 'hijacked' $$`);
  await sql(`ALTER SYSTEM SET flux.maintenance_interval = '1s'`);
  await sql('SELECT pg_reload_conf()');
  try {
    const meter = await registerDevice();
    const time = `${2300 + Math.floor(Math.random() * 500)}-03-04T05:06:07Z`;
    assert.equal((await service('/mg_meter_readings', { method: 'POST', body: { device_id: meter.id, time, energy_imported_active: 12 } })).status, 201);
    await until('the worker moved the reading', async () =>
      (await partitionOf('mg_meter_readings', meter.id, time)) !== 'flux_partitions.mg_meter_readings_default');
    assert.match(await partitionOf('mg_meter_readings', meter.id, time), /^flux_partitions\.mg_meter_readings_p\d{8}$/);
    const log = await sql(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'flux maintenance launcher'`);
    assert.equal(log[0].n, 1, 'one launcher');
    assert.deepEqual(await sql('SELECT * FROM public.flux_test_hijacked'), [], 'the worker called a user-defined concat_ws');
    const pinned = await sql(`SELECT to_regclass('flux_partitions.mg_bess_readings_p20030101') IS NOT NULL AS kept`);
    assert.equal(pinned[0].kept, true);
  } finally {
    await sql('ALTER SYSTEM RESET flux.maintenance_interval');
    await sql('SELECT pg_reload_conf()');
    await sql('DROP FUNCTION public.concat_ws(text, text, text, text, text)');
    await sql('DROP TABLE public.flux_test_hijacked');
    await sql('DROP VIEW public.flux_test_pinned');
    await sql(`SELECT flux.set_retention('flux.mg_bess_readings', NULL)`);
  }
});

test('moves take turns for the cluster-wide replication origin, waiting at most the lock timeout', async () => {
  const meter = await registerDevice();
  const time = `${2300 + Math.floor(Math.random() * 500)}-05-06T07:08:09Z`;
  assert.equal((await service('/mg_meter_readings', { method: 'POST', body: { device_id: meter.id, time, energy_imported_active: 1 } })).status, 201);
  // Another session (maintenance of another database, say) holds the origin. The worker
  // stays out of it, so that the move below is this test's.
  await sql(`ALTER SYSTEM SET flux.maintenance_interval = '0'`);
  await sql('SELECT pg_reload_conf()');
  const holder = await connect();
  try {
    await holder.query('SELECT flux_internal.as_maintenance(true)');
    const started = Date.now();
    await assert.rejects(maintain('300ms'), (e) => e.code === '55P03');
    const waited = Date.now() - started;
    assert.ok(waited >= 250 && waited < 5_000, `gave up after ${waited} ms`);
    assert.equal(await partitionOf('mg_meter_readings', meter.id, time), 'flux_partitions.mg_meter_readings_default');
    await holder.query('SELECT flux_internal.as_maintenance(false)');
    assert.ok((await maintain()).some((a) => a.action === 'moved'));
    assert.notEqual(await partitionOf('mg_meter_readings', meter.id, time), 'flux_partitions.mg_meter_readings_default');
  } finally {
    await holder.end();
    await sql('ALTER SYSTEM RESET flux.maintenance_interval');
    await sql('SELECT pg_reload_conf()');
  }
});

test('retention drops whole partitions past the horizon; meter readings go once the rollups keep their energy', async () => {
  const [bess, meter] = await Promise.all([registerDevice({ type: 'bess' }), registerDevice()]);
  await sql(`SELECT * FROM flux.create_partitions('flux.mg_bess_readings', '2001-01-01', '2001-01-04')`);
  await sql(`SELECT * FROM flux.create_partitions('flux.mg_meter_readings', '2001-01-01', '2001-01-04')`);
  const day = (d) => `2001-01-0${d}T12:00:00Z`;
  assert.equal((await service('/mg_bess_readings', { method: 'POST', body: [1, 2, 3].map((d) => ({ device_id: bess.id, time: day(d), soe: d })) })).status, 201);
  assert.equal((await service('/mg_meter_readings', { method: 'POST', body: [1, 2, 3].map((d) => ({ device_id: meter.id, time: day(d), energy_imported_active: d })) })).status, 201);
  const energy = async () => (await api('/rpc/get_meter_readings_30m', {
    method: 'POST', body: { start_time: '2001-01-01T00:00:00Z', end_time: '2001-01-04T00:00:00Z', device_ids: [meter.id] },
  })).body;
  const total = (rows) => rows.reduce((s, r) => s + r.energy_imported_active_delta, 0);
  const before = await energy();
  assert.ok(Math.abs(total(before) - 2) < 1e-9, JSON.stringify(before));
  const keptFrom = '2001-01-03T00:00:00Z';
  try {
    // Keep everything from 2001-01-03 on: the partitions of January 1 and 2 are past it.
    for (const table of ['mg_bess_readings', 'mg_meter_readings']) {
      await sql(`SELECT flux.set_retention('flux.${table}', now() - $1::timestamptz)`, [keptFrom]);
    }
    // The other tests' readings are pending too: more than the one refresh of a round by hand.
    await until('the rollups are current', async () => {
      await sql('SELECT flux.refresh_energy_rollups(100000)');
      return (await sql('SELECT flux_internal.energy_kept_before($1) AS kept', [keptFrom]))[0].kept;
    }, 120);
    const actions = await maintain();
    const dropped = actions.filter((a) => a.action === 'dropped').map((a) => a.partition_name);
    for (const table of ['mg_bess_readings', 'mg_meter_readings']) {
      for (const d of [1, 2]) assert.ok(dropped.includes(`flux_partitions.${table}_p2001010${d}`), JSON.stringify(actions));
    }
    const bessLeft = await sql('SELECT soe FROM flux.mg_bess_readings WHERE device_id = $1 ORDER BY time', [bess.id]);
    assert.deepEqual(bessLeft.map((r) => r.soe), [3]);
    const meterLeft = await sql('SELECT count(*)::int AS n FROM flux.mg_meter_readings WHERE device_id = $1', [meter.id]);
    assert.equal(meterLeft[0].n, 1);
    // The energy of the dropped days is kept, bucket by bucket.
    const kept = await energy();
    assert.deepEqual(kept.map((r) => r.time_b), before.map((r) => r.time_b));
    kept.forEach((r, i) => assert.ok(Math.abs(r.energy_imported_active_delta - before[i].energy_imported_active_delta) < 1e-9, JSON.stringify([r, before[i]])));
    // Nothing newer than the horizon went, and a second round has nothing to drop.
    assert.ok(!actions.some((a) => a.action === 'dropped' && a.partition_name.endsWith('p20010103')));
    assert.ok(!(await maintain()).some((a) => a.action === 'dropped'));
  } finally {
    for (const table of ['mg_bess_readings', 'mg_meter_readings']) await sql(`SELECT flux.set_retention('flux.${table}', NULL)`);
  }
});

test('meter readings whose energy the rollups do not keep yet stay past the horizon', async () => {
  const meter = await registerDevice();
  await sql(`SELECT * FROM flux.create_partitions('flux.mg_meter_readings', '2001-02-01', '2001-02-03')`);
  assert.equal((await service('/mg_meter_readings', { method: 'POST', body: [1, 2].map((d) => ({ device_id: meter.id, time: `2001-02-0${d}T12:00:00Z`, energy_imported_active: d })) })).status, 201);
  try {
    // The worker would refresh the rollups under the test's feet.
    await sql('ALTER SYSTEM SET flux.maintenance_interval = 0');
    await sql('SELECT pg_reload_conf()');
    // Rollups made with other flux.energy_* settings than maintenance runs with keep nothing.
    await sql(`UPDATE flux_internal.meter_rollup_state SET energy_defaults = 'other settings'`);
    await sql(`SELECT flux.set_retention('flux.mg_meter_readings', now() - '2001-02-02'::timestamptz)`);
    const [{ kept }] = await sql(`SELECT flux_internal.energy_kept_before('2001-02-02') AS kept`);
    assert.equal(kept, false);
    // Refreshes by hand with the same settings make them current, and then they do.
    await until('the rollups are current', async () => {
      await sql('SELECT flux.refresh_energy_rollups(100000)');
      return (await sql(`SELECT flux_internal.energy_kept_before('2001-02-02') AS kept`))[0].kept;
    });
    const dropped = (await maintain()).filter((a) => a.action === 'dropped').map((a) => a.partition_name);
    assert.ok(dropped.includes('flux_partitions.mg_meter_readings_p20010201'), JSON.stringify(dropped));
  } finally {
    await sql(`SELECT flux.set_retention('flux.mg_meter_readings', NULL)`);
    await sql('ALTER SYSTEM RESET flux.maintenance_interval');
    await sql('SELECT pg_reload_conf()');
  }
});

test('maintenance holds up ingest at most its lock timeout when a long query is in its way', async () => {
  const bess = await registerDevice({ type: 'bess' });
  await sql(`SELECT * FROM flux.create_partitions('flux.mg_bess_readings', '2002-01-01', '2002-01-02')`);
  const reader = await connect();
  try {
    await sql(`SELECT flux.set_retention('flux.mg_bess_readings', now() - '2002-01-02'::timestamptz)`);
    // A long report holds the table: dropping a partition must wait for it, or give up.
    await reader.query('BEGIN');
    await reader.query('SELECT count(*) FROM flux.mg_bess_readings');
    const maintenance = maintain('300ms').then(() => 'finished', (e) => e.code);
    await sleep(50);
    const started = Date.now();
    const insert = await service('/mg_bess_readings', { method: 'POST', body: { device_id: bess.id, time: new Date().toISOString(), soe: 1 } });
    const waited = Date.now() - started;
    assert.equal(insert.status, 201);
    assert.equal(await maintenance, '55P03', 'maintenance gave up on the lock');
    // The insert queued behind maintenance's lock request for at most its timeout (plus slack
    // for a loaded machine); without the bound it would wait for the report.
    assert.ok(waited < 5_000, `the insert waited ${waited} ms`);
    await reader.query('COMMIT');
    const dropped = (await maintain()).filter((a) => a.action === 'dropped');
    assert.ok(dropped.map((a) => a.partition_name).includes('flux_partitions.mg_bess_readings_p20020101'), JSON.stringify(dropped));
  } finally {
    await reader.end();
    await sql(`SELECT flux.set_retention('flux.mg_bess_readings', NULL)`);
  }
});

test('readings bound for the default partition never fail while maintenance makes partitions', async () => {
  const meter = await registerDevice();
  // 40 days without partitions, written round-robin: each lands in the default partition
  // until maintenance makes its partition, mid-traffic.
  const base = Date.UTC(2400 + Math.floor(Math.random() * 400), 0, 1);
  let stop = false;
  const statuses = [];
  let sent = 0;
  const client = async (c) => {
    for (let b = 0; !stop; b++) {
      const day = base + ((c + 4 * b) % 40) * 86_400_000;
      const second = c * 1_000_000 + b * 50;
      const rows = Array.from({ length: 50 }, (_, i) => ({ device_id: meter.id, time: new Date(day + (second + i) * 10).toISOString(), power_total_active: i }));
      const res = await service('/mg_meter_readings', { method: 'POST', body: rows });
      statuses.push(res.status === 201 ? 201 : `${res.status} ${JSON.stringify(res.body)}`);
      if (res.status === 201) sent += rows.length;
    }
  };
  const clients = [0, 1, 2, 3].map(client);
  const days = async () => (await sql(`SELECT count(*)::int AS n FROM flux_internal.time_partitions('flux.mg_meter_readings')
                                        WHERE lower >= $1 AND upper <= $2`, [new Date(base), new Date(base + 40 * 86_400_000)]))[0].n;
  for (let round = 0; round < 60 && (await days()) < 40; round++) {
    await maintain();
    await sleep(20);
  }
  stop = true;
  await Promise.all(clients);
  assert.deepEqual(statuses.filter((s) => s !== 201), [], 'every insert succeeded');
  assert.equal(await days(), 40, 'maintenance made the 40 partitions while the inserts went on');
  const [{ n }] = await sql('SELECT count(*)::int AS n FROM flux.mg_meter_readings WHERE device_id = $1', [meter.id]);
  assert.equal(n, sent);
  // Far-future partitions are capped (sql/partitions.sql): leave none behind for later runs.
  for (const { partition } of await sql(`SELECT partition::text FROM flux_internal.time_partitions('flux.mg_meter_readings')
                                         WHERE lower >= $1 AND upper <= $2`, [new Date(base), new Date(base + 40 * 86_400_000)])) {
    await sql(`DROP TABLE ${partition}`);
  }
});

for (const flavor of flavors) {
  test(`realtime (${flavor.name}): partition changes arrive under the table's name, new partitions included; moves are not changes`, async () => {
    const bess = await registerDevice({ type: 'bess' });
    const client = new Client(flavor, anonKey);
    try {
      await client.subscribe('p', 'partitions', [{ event: '*', schema: 'flux', table: 'mg_bess_readings', filter: `device_id=eq.${bess.id}` }]);
      const year = 2500 + Math.floor(Math.random() * 400);
      // A partition made after the realtime server started.
      const made = await sql(`SELECT * FROM flux.create_partitions('flux.mg_bess_readings', $1, $2)`, [`${year}-01-01`, `${year}-01-02`]);
      assert.equal(made.length, 1);
      const inNew = `${year}-01-01T10:00:00Z`;
      assert.equal((await service('/mg_bess_readings', { method: 'POST', body: { device_id: bess.id, time: inNew, soe: 1 } })).status, 201);
      const first = await client.waitForChange('p', (p) => p.new.soe === 1, 'the INSERT into the new partition');
      assert.equal(first.payload.table, 'mg_bess_readings');
      assert.equal(first.payload.schema, 'flux');
      assert.equal(first.payload.eventType, 'INSERT');

      // Into the default partition; then maintenance moves it: no DELETE, no second INSERT.
      const inDefault = `${year}-06-01T10:00:00Z`;
      assert.equal((await service('/mg_bess_readings', { method: 'POST', body: { device_id: bess.id, time: inDefault, soe: 2 } })).status, 201);
      await client.waitForChange('p', (p) => p.new.soe === 2, 'the INSERT into the default partition');
      assert.equal(await partitionOf('mg_bess_readings', bess.id, inDefault), 'flux_partitions.mg_bess_readings_default');
      await maintain();
      assert.notEqual(await partitionOf('mg_bess_readings', bess.id, inDefault), 'flux_partitions.mg_bess_readings_default');
      // A later change of the moved row is one UPDATE; nothing from the move came before it.
      assert.equal((await service(`/mg_bess_readings?device_id=eq.${bess.id}&time=eq.${inDefault}`, { method: 'PATCH', body: { soe: 3 } })).status, 204);
      await client.waitForChange('p', (p) => p.eventType === 'UPDATE', 'the UPDATE of the moved row');
      await sleep(300);
      assert.deepEqual(client.changes('p').map((c) => c.payload.eventType), ['INSERT', 'INSERT', 'UPDATE']);
    } finally {
      await client.close();
    }
  });
}

test('a read that waits on a move of rows out of the default partition finds them', async () => {
  // A year no partition holds yet: its rows go to the default partition.
  const year = (await sql(`SELECT y FROM generate_series(1900, 1999) y
                           WHERE NOT EXISTS (SELECT FROM flux_internal.time_partitions('flux.mg_bess_readings') p
                                             WHERE NOT p.is_default AND p.upper > make_date(y, 1, 1) AND p.lower < make_date(y + 1, 1, 1))
                           ORDER BY random() LIMIT 1`))[0].y;
  const bess = await registerDevice({ type: 'bess' });
  const times = [`${year}-06-15T10:00:00Z`, `${year}-06-15T10:01:00Z`];
  const stored = await service('/mg_bess_readings', { method: 'POST', body: times.map((time) => ({ device_id: bess.id, time, soe: 40 })) });
  assert.equal(stored.status, 201);
  const mover = await connect();
  try {
    // The move holds its locks until commit; a read starts meanwhile and must wait for it,
    // not plan with the partitions of before and run after the rows left the default one.
    await mover.query('BEGIN');
    const [made] = (await mover.query(`SELECT * FROM flux_internal.create_partition('flux.mg_bess_readings', $1, true)`, [times[0]])).rows;
    assert.equal(Number(made.moved) >= 2, true, JSON.stringify(made));
    const read = api(`/mg_bess_readings?device_id=eq.${bess.id}&select=time&order=time`);
    await sleep(500);
    await mover.query('COMMIT');
    const res = await read;
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body.map((r) => r.time), times.map((t) => t.replace('Z', '+00:00')));
  } finally {
    await mover.query('ROLLBACK').catch(() => {});
    await mover.end();
  }
});
