// Ingest benchmark: how close the real paths come to the floor, all measured in one run on
// the same rows (meters at one site, one reading every 10 s, in arrival order).
//
//   floor   server-side COPY into a bare copy of mg_meter_readings: its columns and defaults,
//           no index, no constraint, one heap (the baseline)
//   COPY    the same COPY into flux.mg_meter_readings (partitioned, checked, indexed)
//   REST    gateways posting 1,000-row batches through the router and PostgREST, 4 at a time,
//           as the authenticated role with a sites claim, realtime server running
// and, to show where the time goes, COPY into the bare copy plus one part at a time, the
// 0.1.0 layout (per-row foreign key), and PostgREST's own INSERT statement run from SQL.
//
//   node bench/ingest/run.mjs [--rows 1000000] [--reps 3] [--clients 4] [--batch 1000]
//
// Runs against the stack (./flux up), in its database: the rows go to a time range of their
// own (year 2199) and a schema flux_bench, both removed at the end. For the REST runs it lifts
// the authenticated rate-limit tier and puts it back afterwards.
import { env, median, opt, percentile, pg, seconds } from '../lib.mjs';

const rows = opt('rows', 1_000_000);
const reps = opt('reps', 3);
const clients = opt('clients', 4);
const batch = opt('batch', 1000);
const devices = 1000;
const steps = Math.ceil(rows / devices);

const SITE = 'FLUX-BENCH-INGEST';
const START = '2199-01-01T00:00:00Z';
const CSV = '/tmp/flux-bench-ingest.csv';
const COLUMNS = 'time, device_id, power_total_active, energy_imported_active, energy_exported_active, voltage_line_average, current_phase_average';
const deviceId = (d) => `00000000-0000-4000-9000-${d.toString(16).padStart(12, '0')}`;

// The floor: a bare copy of 0.1.0's mg_meter_readings, its defaults (gen_random_uuid(), now())
// and nothing else. Then the layouts between it and the real table, one part at a time. Each
// is made empty before a run.
const layouts = {
  floor: 'gen-uuid',
  'bare, with 0.2.0\'s uuid default': '',
  '+ checks': 'gen-uuid,checks',
  '+ primary key': 'gen-uuid,pkey',
  '+ time index': 'gen-uuid,time',
  'unlogged (no WAL)': 'gen-uuid,unlogged',
  'no uuid default': 'no-uuid',
  'checks + primary key + time index (no FK)': 'gen-uuid,checks,pkey,time',
  '0.1.0 layout (all + per-row FK)': 'gen-uuid,checks,pkey,time,fk',
};

async function makeLayout(db, parts) {
  const has = (p) => parts.split(',').includes(p);
  await db.query(`DROP TABLE IF EXISTS flux_bench.t`);
  await db.query(`CREATE ${has('unlogged') ? 'UNLOGGED' : ''} TABLE flux_bench.t
                  (LIKE flux.mg_meter_readings INCLUDING DEFAULTS ${has('checks') ? 'INCLUDING CONSTRAINTS' : ''})`);
  if (has('gen-uuid')) await db.query('ALTER TABLE flux_bench.t ALTER id SET DEFAULT gen_random_uuid()');
  if (has('no-uuid')) await db.query('ALTER TABLE flux_bench.t ALTER id DROP DEFAULT, ALTER id DROP NOT NULL');
  if (has('pkey')) await db.query('ALTER TABLE flux_bench.t ADD PRIMARY KEY (device_id, time)');
  if (has('time')) await db.query('CREATE INDEX ON flux_bench.t (time)');
  if (has('fk')) {
    await db.query(`ALTER TABLE flux_bench.t ADD FOREIGN KEY (device_id) REFERENCES flux.mg_device_registry (id)
                    ON UPDATE CASCADE ON DELETE RESTRICT`);
  }
  return 'flux_bench.t';
}

async function copyInto(db, table) {
  await db.query('CHECKPOINT');
  const t0 = process.hrtime.bigint();
  await db.query(`COPY ${table} (${COLUMNS}) FROM '${CSV}' (FORMAT csv)`);
  return seconds(t0);
}

/** The rows of batch `b` (device-major within a time step, as gateways send them). */
function batchRows(b) {
  const out = [];
  for (let i = b * batch; i < Math.min(rows, (b + 1) * batch); i++) {
    const step = Math.floor(i / devices);
    const d = (i % devices) + 1;
    out.push({
      time: new Date(Date.parse(START) + step * 10_000).toISOString(),
      device_id: deviceId(d),
      power_total_active: 100 + (i % 50),
      energy_imported_active: 1000 * d + step * 0.25,
      energy_exported_active: 10 * d + step * 0.001,
      voltage_line_average: 415.2,
      current_phase_average: 180.5,
    });
  }
  return out;
}

/** Posts every batch through the router, `clients` at a time; returns [seconds, latencies]. */
async function restRun(tokens, query = '') {
  const bodies = Array.from({ length: Math.ceil(rows / batch) }, (_, b) => JSON.stringify(batchRows(b)));
  let next = 0;
  const latencies = [];
  const t0 = process.hrtime.bigint();
  await Promise.all(tokens.map(async (token) => {
    while (next < bodies.length) {
      const body = bodies[next++];
      const r0 = process.hrtime.bigint();
      const res = await fetch(`${env.FLUX_API_URL}/mg_meter_readings${query}`, {
        method: 'POST',
        headers: { apikey: env.FLUX_ANON_KEY, Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', Prefer: 'return=minimal' },
        body,
      });
      latencies.push(seconds(r0) * 1000);
      if (res.status !== 201) throw new Error(`REST insert: ${res.status} ${await res.text()}`);
    }
  }));
  return [seconds(t0), latencies];
}

/** PostgREST's INSERT for a JSON body, run from SQL as the gateway role, `clients` at a time. */
async function sqlRun(conns) {
  const bodies = Array.from({ length: Math.ceil(rows / batch) }, (_, b) => JSON.stringify(batchRows(b)));
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(conns.map(async (c) => {
    while (next < bodies.length) {
      const body = bodies[next++];
      await c.query('BEGIN');
      await c.query(`SELECT set_config('role', 'authenticated', true),
                            set_config('request.jwt.claims', '{"role":"authenticated","sites":["${SITE}"]}', true)`);
      await c.query(`INSERT INTO flux.mg_meter_readings (${COLUMNS})
                     SELECT ${COLUMNS} FROM json_populate_recordset(NULL::flux.mg_meter_readings, $1::json)`, [body]);
      await c.query('COMMIT');
    }
  }));
  return seconds(t0);
}

async function main() {
  const db = new pg.Client({ connectionString: env.FLUX_DB_URL });
  await db.connect();
  const realtime = (await fetch(`${env.FLUX_URL}/realtime/v1/health`).catch(() => ({ status: 0 }))).status === 200;
  const bench = async () => {
    await db.query('DROP SCHEMA IF EXISTS flux_bench CASCADE');
    await db.query(`DELETE FROM flux.mg_meter_readings WHERE time >= $1 AND time < $1::timestamptz + interval '1 year'`, [START]);
    await db.query('DELETE FROM flux.mg_device_registry WHERE site = $1', [SITE]);
  };
  await bench();
  await db.query('CREATE SCHEMA flux_bench');
  await db.query(`INSERT INTO flux.mg_device_registry (id, name, type, site)
                  SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(d), 12, '0'))::uuid, 'BENCH-INGEST-' || d, 'meter', $1
                  FROM generate_series(1, ${devices}) d`, [SITE]);
  await db.query(`SET flux.maintenance_lock_timeout = '10s'`);
  const until = `$1::timestamptz + interval '${steps * 10 + 86400} seconds'`;
  await db.query(`SELECT FROM flux.create_partitions('flux.mg_meter_readings', $1, ${until})`, [START]);
  // Those of the range, made now or left by a run that failed.
  const partitions = (await db.query(`SELECT partition::text AS p FROM flux_internal.time_partitions('flux.mg_meter_readings')
                                      WHERE lower >= $1 AND upper <= ${until}`, [START])).rows.map((r) => r.p);
  await db.query(`COPY (SELECT '${START}'::timestamptz + (i / ${devices}) * interval '10 seconds',
                               ('00000000-0000-4000-9000-' || lpad(to_hex(i % ${devices} + 1), 12, '0'))::uuid,
                               100 + i % 50, 1000 * (i % ${devices} + 1) + (i / ${devices}) * 0.25,
                               10 * (i % ${devices} + 1) + (i / ${devices}) * 0.001, 415.2, 180.5
                        FROM generate_series(0, ${rows - 1}) i) TO '${CSV}' (FORMAT csv)`);
  const settings = Object.fromEntries((await db.query(`SELECT name, setting FROM pg_settings WHERE name IN
      ('shared_buffers', 'synchronous_commit', 'jit')`)).rows.map((r) => [r.name, r.setting]));

  const emptyReal = async () => {
    for (const p of partitions) await db.query(`TRUNCATE ${p}`);
  };
  const results = {};
  const time = async (name, run) => {
    const samples = [];
    for (let i = 0; i < reps; i++) samples.push(await run());
    results[name] = median(samples);
  };
  for (const [name, parts] of Object.entries(layouts)) {
    await time(name, async () => copyInto(db, await makeLayout(db, parts)));
  }
  await time('flux.mg_meter_readings (COPY)', async () => {
    await emptyReal();
    return copyInto(db, 'flux.mg_meter_readings');
  });

  // PostgREST's statement from SQL, then the REST API itself.
  const conns = [];
  for (let i = 0; i < clients; i++) {
    const c = new pg.Client({ connectionString: env.FLUX_DB_URL });
    await c.connect();
    conns.push(c);
  }
  await time(`PostgREST's INSERT from SQL (${clients} connections)`, async () => {
    await emptyReal();
    await db.query('CHECKPOINT');
    return sqlRun(conns);
  });
  for (const c of conns) await c.end();

  const tiers = (await db.query(`SELECT name, setting, source FROM pg_settings
                                 WHERE name IN ('flux.rate_limit_authenticated_per_minute', 'flux.rate_limit_authenticated_burst')`)).rows;
  const tokens = [];
  for (let i = 0; i < clients; i++) {
    tokens.push((await db.query(`SELECT flux.sign_jwt($1::jsonb, '1 hour') AS t`,
      [JSON.stringify({ role: 'authenticated', sub: `bench-gateway-${i}`, sites: [SITE] })])).rows[0].t);
  }
  let latencies = [];
  try {
    for (const t of tiers) await db.query(`ALTER SYSTEM SET ${t.name} = 100000000`);
    await db.query('SELECT pg_reload_conf()');
    await new Promise((r) => setTimeout(r, 500));
    await time(`REST API (${clients} clients, ${batch}-row batches)`, async () => {
      await emptyReal();
      await db.query('CHECKPOINT');
      const [s, lat] = await restRun(tokens);
      latencies = latencies.concat(lat);
      return s;
    });
    // ?columns= spares PostgREST reading the body to find its keys (its documented advice).
    await time('REST API, ?columns= given', async () => {
      await emptyReal();
      await db.query('CHECKPOINT');
      return (await restRun(tokens, `?columns=${COLUMNS.replaceAll(' ', '')}`))[0];
    });
  } finally {
    for (const t of tiers) {
      await db.query(t.source === 'configuration file' ? `ALTER SYSTEM SET ${t.name} = ${t.setting}` : `ALTER SYSTEM RESET ${t.name}`);
    }
    await db.query('SELECT pg_reload_conf()');
  }
  const stored = (await db.query('SELECT count(*)::int AS n FROM flux.mg_meter_readings WHERE time >= $1 AND time < $1::timestamptz + interval \'1 year\'', [START])).rows[0].n;
  await db.query(`VACUUM ${partitions.join(', ')}`);
  const sizes = (await db.query(`SELECT sum(pg_relation_size(p)) AS heap, sum(pg_indexes_size(p)) AS idx
                                 FROM unnest($1::regclass[]) p`, [partitions])).rows[0];

  await bench();
  for (const p of partitions) await db.query(`DROP TABLE IF EXISTS ${p}`);
  await db.end();

  const floor = results.floor;
  console.log(`\ningest benchmark: ${rows.toLocaleString()} meter readings (${devices} meters × ${steps} readings, 10 s apart), median of ${reps}`);
  console.log(`  PostgreSQL as configured: shared_buffers ${settings.shared_buffers} × 8 kB, synchronous_commit ${settings.synchronous_commit}, jit ${settings.jit}; realtime server ${realtime ? 'running' : 'NOT running'}`);
  console.log('  path                                               rows/s     ratio to the floor');
  for (const [name, s] of Object.entries(results)) {
    console.log(`  ${name.padEnd(48)} ${Math.round(rows / s).toLocaleString().padStart(9)}   ${(floor / s).toFixed(2)}`);
  }
  console.log(`  REST request latency: p50 ${percentile(latencies, 0.5).toFixed(0)} ms, p99 ${percentile(latencies, 0.99).toFixed(0)} ms (${batch} rows each)`);
  console.log(`  rows stored by the last REST run: ${stored.toLocaleString()} of ${rows.toLocaleString()}`);
  console.log(`  storage per meter reading: heap ${(sizes.heap / stored).toFixed(1)} bytes, indexes ${(sizes.idx / stored).toFixed(1)} bytes`);
  console.log(`  goals: REST ≥ 0.5 of the floor, COPY into the real table ≥ 0.8`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
