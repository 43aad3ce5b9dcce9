// Energy rollups: the energy functions answer from materialised 5-minute partials and the raw
// readings they have not caught up with, and must give what a computation from raw readings
// alone gives (flux.energy_rollups = off), before and after a refresh, through late inserts,
// deletes, updates, upserts and parameter changes; retention keeps the energy.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { api, service, sql, closeSql, env, registerDevice, until, assertError, uniqueName } from './lib.mjs';

// The energy settings are per session: the comparisons run on a connection of their own.
let session;
async function own() {
  if (!session) {
    session = new pg.Client({ connectionString: env.FLUX_DB_URL });
    await session.connect();
  }
  return async (text, params) => (await session.query(text, params)).rows;
}
after(async () => {
  await session?.end();
  await closeSql();
});

/** A small deterministic PRNG (mulberry32), so that a failure can be replayed from its seed. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const T0 = Date.parse('2024-05-01T00:00:00Z');
const iso = (ms) => new Date(ms).toISOString();

/**
 * Readings of one meter with what real registers do: steady rises, gaps, jitter, spikes,
 * resets, rollovers at `wrap`, a replaced meter, nulls and power-only rows.
 */
function stream(rand, { count, wrap }) {
  const rows = [];
  let t = T0 + Math.floor(rand() * 3_600_000);
  let imported = wrap ? wrap - 40 : 1_000 + rand() * 5_000;
  let exported = rand() * 100;
  for (let i = 0; i < count; i++) {
    const gap = rand() < 0.05 ? 3_600_000 * (1 + rand() * 5) : [10_000, 60_000, 300_000, 900_000][Math.floor(rand() * 4)];
    t += Math.round(gap);
    const kw = 20 + rand() * 40;
    imported += (kw * gap) / 3_600_000;
    exported += rand() < 0.3 ? (5 * gap) / 3_600_000 : 0;
    let shown = wrap ? imported % wrap : imported;
    const r = rand();
    if (r < 0.02) shown += 5_000; // spike
    else if (r < 0.03) shown -= 0.2; // jitter
    else if (r < 0.035) imported = shown = 0; // reset
    else if (r < 0.038) imported = shown = 80_000 * rand(); // replaced meter
    rows.push({
      time: iso(t),
      power_total_active: rand() < 0.1 ? null : kw,
      energy_imported_active: rand() < 0.05 ? null : shown,
      energy_exported_active: rand() < 0.5 ? null : exported,
    });
  }
  return rows;
}

async function insertRows(device, rows) {
  if (rows.length === 0) return;
  await sql(
    `INSERT INTO flux.mg_meter_readings (device_id, time, power_total_active, energy_imported_active, energy_exported_active)
     SELECT $1, * FROM unnest($2::timestamptz[], $3::float8[], $4::float8[], $5::float8[])`,
    [device, rows.map((r) => r.time), rows.map((r) => r.power_total_active), rows.map((r) => r.energy_imported_active),
      rows.map((r) => r.energy_exported_active)],
  );
}

/** Refreshes until none of `devices` has a pending change (another refresh may hold the lock). */
async function refreshUntilCurrent(devices) {
  await until('the rollups of the test meters are current', async () => {
    await sql('SELECT flux.refresh_energy_rollups(100000)');
    const [{ n }] = await sql('SELECT count(*)::int AS n FROM flux_internal.meter_rollup_pending WHERE device_ids && $1', [devices]);
    return n === 0;
  }, 60);
}

/** The rows of `call` with the rollups, and from raw readings alone; `query` is one session. */
async function bothPaths(call, params, query) {
  const run = async (setting) => {
    await query(`SET flux.energy_rollups = ${setting}`);
    return query(`SELECT * FROM ${call}`, params);
  };
  try {
    return [await run('on'), await run('off')];
  } finally {
    await query('RESET flux.energy_rollups');
  }
}

const near = (a, b) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));

function assertSameRows(got, want, what) {
  const key = (r) => `${r.device_id} ${r.time_b?.toISOString?.() ?? ''} ${r.register ?? ''} ${r.reason ?? ''}`;
  const index = new Map(want.map((r) => [key(r), r]));
  assert.equal(got.length, want.length, `${what}: ${got.length} rows with rollups, ${want.length} from raw readings`);
  for (const g of got) {
    const w = index.get(key(g));
    assert.ok(w, `${what}: row ${key(g)} only with rollups`);
    for (const [column, value] of Object.entries(w)) {
      const mine = g[column];
      const same = typeof value === 'number' && typeof mine === 'number' ? near(mine, value) : JSON.stringify(mine) === JSON.stringify(value);
      assert.ok(same, `${what}: ${key(g)} ${column}: ${JSON.stringify(mine)} with rollups, ${JSON.stringify(value)} from raw readings`);
    }
  }
}

/** Random queries over the meters' data: every width kind, aligned and unaligned ranges. */
async function compareAtRandom(rand, devices, span, label, query) {
  const widths = ['5 minutes', '30 minutes', '1 hour', '15 minutes', '1 day', '7 minutes'];
  for (let q = 0; q < 8; q++) {
    const align = rand() < 0.7 ? 300_000 : 1;
    const from = Math.floor((span[0] - 3_600_000 + rand() * (span[1] - span[0])) / align) * align;
    const to = from + align + Math.floor((rand() * (span[1] - from + 7_200_000)) / align) * align;
    const ids = rand() < 0.5 ? devices : [devices[Math.floor(rand() * devices.length)]];
    const width = widths[q % widths.length];
    const what = `${label}: [${iso(from)}, ${iso(to)}) ${width} ${ids.length} meters`;
    const [a, b] = await bothPaths('flux.meter_energy_buckets($1, $2, $3::interval, $4::uuid[])', [iso(from), iso(to), width, ids], query);
    assertSameRows(a, b, `meter_energy_buckets ${what}`);
    const [c, d] = await bothPaths('flux.meter_energy_set_aside($1, $2, $3::uuid[])', [iso(from), iso(to), ids], query);
    assertSameRows(c, d, `meter_energy_set_aside ${what}`);
  }
  const [e, f] = await bothPaths('flux.get_meter_readings_30m($1, $2, $3::uuid[])', [iso(span[0] - 86_400_000), iso(span[1] + 86_400_000), devices], query);
  assertSameRows(e, f, `${label}: get_meter_readings_30m over everything`);
}

const spanOf = async (devices) => {
  const [r] = await sql('SELECT min(time) AS a, max(time) AS b FROM flux.mg_meter_readings WHERE device_id = ANY($1)', [devices]);
  return [r.a.getTime(), r.b.getTime()];
};

for (const seed of [1, 2, 3]) {
  test(`rollups and raw readings give the same energy through late, changed and deleted readings (seed ${seed})`, async () => {
    const rand = prng(seed);
    const site = uniqueName('ROLL');
    const meters = await Promise.all([
      registerDevice({ site, metadata: { max_power_kw: 100 } }),
      registerDevice({ site, metadata: { max_power_kw: 100, energy_register_max_kwh: 100000 } }),
      registerDevice({ site }),
    ]);
    const ids = meters.map((m) => m.id);
    const streams = meters.map((m, i) => stream(rand, { count: 500 + Math.floor(rand() * 500), wrap: i === 1 ? 100000 : null }));
    // Out of order: the second half of each stream first, then the first, in batches.
    for (const [i, rows] of streams.entries()) {
      const half = Math.floor(rows.length / 2);
      await insertRows(ids[i], rows.slice(half));
      for (let k = 0; k < half; k += 97) await insertRows(ids[i], rows.slice(k, Math.min(k + 97, half)));
    }
    const query = await own();
    let span = await spanOf(ids);
    await compareAtRandom(rand, ids, span, 'not materialised yet', query);

    await refreshUntilCurrent(ids);
    const [{ n }] = await sql('SELECT count(*)::int AS n FROM flux_internal.meter_rollup_5m WHERE device_id = ANY($1)', [ids]);
    assert.ok(n > 100, `the refresh materialised the meters' buckets (${n} rows)`);
    await compareAtRandom(rand, ids, span, 'materialised', query);

    // Late readings, deletes, value and time updates, an upsert, one statement each.
    for (const [i, id] of ids.entries()) {
      const rows = streams[i];
      const pick = () => rows[Math.floor(rand() * rows.length)].time;
      const late = Date.parse(pick()) - 1_000 - Math.floor(rand() * 5_000);
      await sql(`INSERT INTO flux.mg_meter_readings (device_id, time, energy_imported_active)
                 SELECT $1, $2, energy_imported_active + 3 FROM flux.mg_meter_readings
                 WHERE device_id = $1 AND time > $2 ORDER BY time LIMIT 1 ON CONFLICT DO NOTHING`, [id, iso(late)]);
      await sql('DELETE FROM flux.mg_meter_readings WHERE device_id = $1 AND time = ANY($2::timestamptz[])', [id, [pick(), pick(), pick()]]);
      await sql('UPDATE flux.mg_meter_readings SET energy_imported_active = energy_imported_active + 250 WHERE device_id = $1 AND time = $2', [id, pick()]);
      await sql(`UPDATE flux.mg_meter_readings SET time = time + interval '7 minutes 3 seconds' WHERE device_id = $1 AND time = $2
                 AND NOT EXISTS (SELECT FROM flux.mg_meter_readings WHERE device_id = $1 AND time = $2::timestamptz + interval '7 minutes 3 seconds')`, [id, pick()]);
      await sql(`INSERT INTO flux.mg_meter_readings (device_id, time, energy_imported_active, power_total_active) VALUES ($1, $2, 17, 5)
                 ON CONFLICT (device_id, time) DO UPDATE SET energy_imported_active = 17, power_total_active = 5`, [id, pick()]);
    }
    span = await spanOf(ids);
    await compareAtRandom(rand, ids, span, 'after changes, before the refresh', query);
    await refreshUntilCurrent(ids);
    await compareAtRandom(rand, ids, span, 'after changes and the refresh', query);

    // A device's parameters change: all its buckets follow.
    await sql(`UPDATE flux.mg_device_registry SET metadata = '{"max_power_kw": 20}' WHERE id = $1`, [ids[2]]);
    await compareAtRandom(rand, ids, span, 'after a parameter change', query);
    await refreshUntilCurrent(ids);
    await compareAtRandom(rand, ids, span, 'after a parameter change and the refresh', query);
  });
}

test('the REST API answers from the rollups with the rights of the caller', async () => {
  const meter = await registerDevice({ metadata: { max_power_kw: 50 } });
  const rows = Array.from({ length: 500 }, (_, i) => ({ time: iso(T0 + i * 60_000), power_total_active: 30, energy_imported_active: 100 + i * 0.5, energy_exported_active: 0 }));
  await insertRows(meter.id, rows);
  await refreshUntilCurrent([meter.id]);
  const body = { start_time: iso(T0), end_time: iso(T0 + 500 * 60_000), device_ids: [meter.id] };
  const res = await api('/rpc/get_meter_readings_30m', { method: 'POST', body });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const [, raw] = await bothPaths('flux.get_meter_readings_30m($1, $2, $3::uuid[])', [body.start_time, body.end_time, body.device_ids], await own());
  assert.equal(res.body.length, raw.length);
  res.body.forEach((r, i) => assert.ok(near(r.energy_imported_active_delta, raw[i].energy_imported_active_delta), JSON.stringify([r, raw[i]])));
  assert.ok(near(res.body.reduce((s, r) => s + r.energy_imported_active_delta, 0), 499 * 0.5));

  // The rollups are the database's to write: the API roles read them, only service_role refreshes.
  assertError(assert, await api('/rpc/refresh_energy_rollups', { method: 'POST', body: {} }), 401, '42501');
  const refreshed = await service('/rpc/refresh_energy_rollups', { method: 'POST', body: { max_device_days: 1 } });
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  for (const role of ['anon', 'authenticated']) {
    for (const statement of ['DELETE FROM flux_internal.meter_rollup_5m', 'SELECT * FROM flux_internal.meter_rollup_pending',
      'INSERT INTO flux_internal.meter_rollup_pending VALUES (ARRAY[gen_random_uuid()], now(), now())',
      'UPDATE flux_internal.meter_rollup_state SET raw_kept_from = now()']) {
      await assert.rejects(sql(`DO $$ BEGIN SET LOCAL ROLE ${role}; EXECUTE '${statement.replace(/'/g, "''")}'; END $$`), (e) => e.code === '42501', `${role}: ${statement}`);
    }
  }
});

test('a reading years away in the same statement does not make the years between stale', async () => {
  const meter = await registerDevice();
  const times = ['2024-06-01T00:00:00Z', '2024-06-01T00:10:00Z', '2099-01-01T00:00:00Z', '1999-01-01T00:00:00Z'];
  await sql(`INSERT INTO flux.mg_meter_readings (device_id, time, energy_imported_active)
             SELECT $1, t, 5 FROM unnest($2::timestamptz[]) t`, [meter.id, times]);
  const logged = await sql(`SELECT lo, hi FROM flux_internal.meter_rollup_pending WHERE device_ids = ARRAY[$1::uuid] ORDER BY lo`, [meter.id]);
  assert.deepEqual(logged.map((r) => [r.lo.toISOString(), r.hi.toISOString()]), [
    ['1999-01-01T00:00:00.000Z', '1999-01-01T00:00:00.000Z'],
    ['2024-06-01T00:00:00.000Z', '2024-06-01T00:10:00.000Z'],
    ['2099-01-01T00:00:00.000Z', '2099-01-01T00:00:00.000Z'],
  ]);
  // Its refresh writes the buckets around the readings, not a century of them.
  await refreshUntilCurrent([meter.id]);
  const [{ n }] = await sql('SELECT count(*)::int AS n FROM flux_internal.meter_rollup_5m WHERE device_id = $1', [meter.id]);
  assert.ok(n > 0 && n < 100, `${n} rollup rows`);
});

test('bad arguments to the refresh are clear errors', async () => {
  for (const budget of [0, -5]) {
    await assert.rejects(sql('SELECT flux.refresh_energy_rollups($1)', [budget]), (e) => e.code === '22023' && /max_device_days must be positive/.test(e.message));
  }
  await assert.rejects(sql('SELECT flux.refresh_energy_rollups(NULL)'), (e) => e.code === '22004' && /max_device_days must not be null/.test(e.message));
  const res = await service('/rpc/refresh_energy_rollups', { method: 'POST', body: { max_device_days: 'many' } });
  assert.equal(res.status, 400, JSON.stringify(res.body));
});

test('retention keeps the energy of the readings it drops; only widths of whole 5 minutes can be asked for then', async () => {
  const name = `flux_e2e_rollups_${process.pid}`;
  await sql(`DROP DATABASE IF EXISTS ${name}`);
  await sql(`CREATE DATABASE ${name}`);
  const url = new URL(env.FLUX_DB_URL);
  url.pathname = `/${name}`;
  const db = new pg.Client({ connectionString: url.toString() });
  await db.connect();
  const query = async (text, params) => (await db.query(text, params)).rows;
  try {
    await query('CREATE EXTENSION flux');
    const [{ id }] = await query(`INSERT INTO flux.mg_device_registry (name, type, site, metadata)
                                  VALUES ('RET-1', 'meter', 'RET', '{"max_power_kw": 80}') RETURNING id`);
    await query(`SELECT * FROM flux.create_partitions('flux.mg_meter_readings', '2001-01-01', '2001-01-06')`);
    await query(`INSERT INTO flux.mg_meter_readings (device_id, time, power_total_active, energy_imported_active, energy_exported_active)
                 SELECT $1, t, 40, 500 + 40 * extract(epoch FROM t - '2001-01-01') / 3600 + CASE WHEN extract(hour FROM t) = 7 THEN 900 ELSE 0 END, 1
                 FROM generate_series('2001-01-01 00:00:10+00'::timestamptz, '2001-01-05 23:00+00', '10 minutes') t`, [id]);
    const calls = [
      ['flux.get_meter_readings_30m($1, $2, $3::uuid[])', ['2001-01-01', '2001-01-06', [id]]],
      ['flux.get_meter_readings_5m($1, $2, $3::uuid[])', ['2001-01-01 11:00', '2001-01-03 01:00', [id]]],
      ['flux.meter_energy_buckets($1, $2, $3::interval, $4::uuid[])', ['2001-01-01', '2001-01-06', '1 day', [id]]],
      ['flux.meter_energy_set_aside($1, $2, $3::uuid[])', ['2001-01-01', '2001-01-04', [id]]],
    ];
    const figures = async () => Promise.all(calls.map(([call, params]) => query(`SELECT * FROM ${call}`, params)));
    const before = await figures();
    for (const [i, [call, params]] of calls.entries()) assertSameRows(before[i], (await bothPaths(call, params, query))[1], `${call} before retention`);

    await query(`SELECT flux.set_retention('flux.mg_meter_readings', now() - '2001-01-03'::timestamptz)`);
    const actions = await query('SELECT * FROM flux.run_maintenance()');
    const dropped = actions.filter((a) => a.action === 'dropped').map((a) => a.partition_name);
    assert.deepEqual(dropped.sort(), ['flux_partitions.mg_meter_readings_p20010101', 'flux_partitions.mg_meter_readings_p20010102'], JSON.stringify(actions));
    assert.ok(actions.findIndex((a) => a.action === 'rollups refreshed') < actions.findIndex((a) => a.action === 'dropped'), 'rollups first');
    const [{ n }] = await query(`SELECT count(*)::int AS n FROM flux.mg_meter_readings WHERE time < '2001-01-03'`);
    assert.equal(n, 0);

    const after = await figures();
    for (const [i, [call]] of calls.entries()) assertSameRows(after[i], before[i], `${call} after retention`);

    // A reading written into the dropped days later changes nothing there.
    await query(`INSERT INTO flux.mg_meter_readings (device_id, time, energy_imported_active) VALUES ($1, '2001-01-01 12:00:05+00', 99999)`, [id]);
    await query('SELECT * FROM flux.run_maintenance()');
    for (const [i, [call]] of calls.entries()) assertSameRows((await figures())[i], before[i], `${call} after a late reading in the dropped days`);

    // What rollups cannot give is refused, not made up.
    for (const [setting, statement, params] of [
      ['on', 'SELECT * FROM flux.meter_energy_buckets($1, $2, $3::interval, $4::uuid[])', ['2001-01-01', '2001-01-04', '7 minutes', [id]]],
      ['on', 'SELECT * FROM flux.meter_energy_set_aside($1, $2, $3::uuid[])', ['2001-01-01 00:01', '2001-01-04', [id]]],
      ['off', 'SELECT * FROM flux.get_meter_readings_30m($1, $2, $3::uuid[])', ['2001-01-01', '2001-01-04', [id]]],
    ]) {
      await query(`SET flux.energy_rollups = ${setting}`);
      await assert.rejects(query(statement, params), (e) => e.code === '22023' && /dropped by retention/.test(e.message), `${setting}: ${statement}`);
      await query('RESET flux.energy_rollups');
    }
    // Ranges after the horizon still take any width.
    assert.ok((await query(`SELECT * FROM flux.meter_energy_buckets('2001-01-03', '2001-01-03 06:00', '2 minutes', $1::uuid[])`, [[id]])).length > 0);

    // TRUNCATE removes the readings on purpose, and their energy with them.
    await query('TRUNCATE flux.mg_meter_readings');
    assert.deepEqual(await query('SELECT * FROM flux.get_meter_readings_30m($1, $2, $3::uuid[])', ['2001-01-01', '2001-01-06', [id]]), []);
  } finally {
    await db.end();
    await sql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  }
});
