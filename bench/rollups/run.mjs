// Energy rollup benchmark: the energy RPCs reading the materialised 5-minute rollups, against
// the baselines of the issue, each measured in the same run (interleaved, medians):
//
//   year        get_meter_readings_30m over a year of 1 meter at 10 s, against the plain SQL a
//               user would write (lag() per device, negative differences as resets) and the
//               grouped-scan floor, both as bench/energy defines them, and against the raw path
//               (flux.energy_rollups off: every bucket from raw readings)
//   fleet       the same over 30 days of 20 meters at 10 s (bench/energy's data); before that
//               the cold path: every bucket pending (rollups on, before the refresh) over 1, 7
//               and 30 days of all meters and 30 days of 1 and 5, against the raw path; then the
//               refresh, timed, and the same queries once materialised
//   settlement  one day ("yesterday") of 30-minute periods of every meter (10,000 at one reading
//               per 60 s by default): time and peak memory per device, rollups against raw path
//   monthly     calendar-month totals (UTC) of 2024: meter_energy_buckets at '1 day' summed per
//               month in SQL, 20 meters at 60 s by default, rollups against the raw path
//   ingest      REST bulk insert (bench/ingest's batches) through a PostgREST of its own, with
//               the rollup change log (the insert trigger) enabled against disabled
//
// Every result of the rollups is checked row by row against the raw path's (1e-9 relative).
// The baselines run with the server's settings (parallel workers, JIT); --restricted adds year
// and fleet restricted to one process without JIT, labelled.
//
//   node bench/rollups/run.mjs [year] [fleet] [settlement] [monthly] [ingest] [--reps 5]
//       [--year-days 365] [--fleet-meters 20] [--fleet-days 30]
//       [--settlement-meters 10000] [--settlement-interval 60]
//       [--monthly-meters 20] [--monthly-interval 60]
//       [--ingest-rows 500000] [--ingest-reps 3] [--clients 4] [--batch 1000]
//       [--restricted] [--small]
//
// Intervals are seconds between readings. --small shrinks every default, to try the benchmark
// out. Each data set lives in a database of its own, flux_bench_rollups_<meters>x<days>d_<s>s
// on the stack's cluster (./flux up), made once per extension build and kept between runs.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { benchDatabase, env, home, median, memoryOf, opt, percentile, pg, root, seconds, urlOf } from '../lib.mjs';

const small = process.argv.includes('--small');
const size = (name, full, tiny) => opt(name, small ? tiny : full);
const reps = size('reps', 5, 3);
const restricted = process.argv.includes('--restricted');
const year = { meters: 1, days: size('year-days', 365, 14), interval: 10 };
const fleet = { meters: size('fleet-meters', 20, 5), days: size('fleet-days', 30, 3), interval: 10 };
const settlement = { meters: size('settlement-meters', 10_000, 300), days: 1, interval: opt('settlement-interval', 60) };
const monthly = { meters: size('monthly-meters', 20, 2), days: 366, interval: size('monthly-interval', 60, 600) };
const ingest = { rows: size('ingest-rows', 500_000, 20_000), reps: size('ingest-reps', 3, 3), clients: opt('clients', 4), batch: opt('batch', 1000) };

const TESTS = ['year', 'fleet', 'settlement', 'monthly', 'ingest'];
const chosen = process.argv.slice(2).filter((a) => TESTS.includes(a));
const runs = (test) => chosen.length === 0 || chosen.includes(test);

const START = '2024-01-01T00:00:00Z';
const at = (days) => new Date(Date.parse(START) + days * 86_400_000).toISOString();
const rowsOf = (d) => (d.meters * d.days * 86400) / d.interval;
const dbName = (d) => `flux_bench_rollups_${d.meters}x${d.days}d_${d.interval}s`;
const describe = (d) => `${d.meters.toLocaleString()} meter${d.meters > 1 ? 's' : ''} × ${d.days} days × 1 reading / ${d.interval} s = ${rowsOf(d).toLocaleString()} rows`;
const meterIds = (n) => Array.from({ length: n }, (_, i) => `00000000-0000-4000-8000-${(i + 1).toString(16).padStart(12, '0')}`);
const mb = (bytes) => `${(Number(bytes) / 1048576).toFixed(0)} MB`;
const ms = (x) => `${x < 10 ? x.toFixed(1) : Math.round(x).toLocaleString()} ms`;
const ratio = (x) => (x < 10 ? x.toFixed(2) : x.toFixed(0));

for (const d of [year, fleet, settlement, monthly]) {
  if (!(Number.isInteger(d.interval) && d.interval > 0 && 86400 % d.interval === 0 && d.meters > 0 && d.days > 0)) {
    throw new Error(`bad data size ${JSON.stringify(d)}: the interval must divide a day`);
  }
}

// Each query sums every output column: the planner drops output columns nobody reads (and the
// work behind them). The floor and the plain SQL are bench/energy's, word for word.
const sums = (from) => `SELECT count(*), sum(p), sum(i), sum(e) FROM (${from}) q(device_id, time_b, p, i, e)`;
const BUCKETS = `SELECT device_id, time_b, power_total_active_avg, energy_imported_active_delta, energy_exported_active_delta
                 FROM flux.get_meter_readings_30m($1, $2, $3)`;
const Q = {
  floor: sums(`
      SELECT device_id, date_bin('30 minutes', time, 'epoch'), avg(power_total_active),
             max(energy_imported_active) - min(energy_imported_active),
             max(energy_exported_active) - min(energy_exported_active)
      FROM flux.mg_meter_readings WHERE time >= $1 AND time < $2 GROUP BY 1, 2`),
  rpc: sums(BUCKETS),
  plain: sums(`
      SELECT device_id, date_bin('30 minutes', time, 'epoch'), avg(power_total_active),
             sum(CASE WHEN di < 0 THEN energy_imported_active ELSE di END),
             sum(CASE WHEN de < 0 THEN energy_exported_active ELSE de END)
      FROM (SELECT device_id, time, power_total_active, energy_imported_active, energy_exported_active,
                   energy_imported_active - lag(energy_imported_active) OVER w AS di,
                   energy_exported_active - lag(energy_exported_active) OVER w AS de
            FROM flux.mg_meter_readings WHERE time >= $1 AND time < $2
            WINDOW w AS (PARTITION BY device_id ORDER BY time)) r
      GROUP BY 1, 2`),
  detail: `${BUCKETS} ORDER BY device_id, time_b`,
  // Every column, with quality flags and set-aside energy.
  quarters: `SELECT * FROM flux.meter_energy_buckets($1, $2, '15 minutes', NULL) ORDER BY device_id, time_b`,
  // Calendar months are not a fixed width: daily buckets, summed per month.
  monthly: `SELECT device_id, date_trunc('month', time_b, 'UTC') AS month, sum(reading_count) AS readings,
                   sum(energy_imported_active_delta) AS imported, sum(energy_exported_active_delta) AS exported
            FROM flux.meter_energy_buckets($1, $2, '1 day', NULL) GROUP BY 1, 2 ORDER BY 1, 2`,
};

/** The summary's rows: query, data, measured, baseline, ratio, goal. */
const summary = [];

// The refresh's own advisory lock (src/rollups.rs), held by a benchmark session until it ends:
// the maintenance worker's refresh then returns at once, so what is pending stays pending until
// the benchmark refreshes (advisory locks are re-entrant within a session).
const holdRefreshLock = (c) => c.query("SELECT pg_advisory_lock('flux_internal.meter_rollup_pending'::regclass::oid::integer, 0)");
const pendingCount = async (c) => Number((await c.query('SELECT count(*) AS n FROM flux_internal.meter_rollup_pending')).rows[0].n);

/** Refreshes until nothing is pending; returns the seconds it took. */
async function materialise(c) {
  await holdRefreshLock(c);
  const t0 = process.hrtime.bigint();
  let calls = 0;
  for (; (await pendingCount(c)) > 0; calls++) {
    if (Number((await c.query('SELECT flux.refresh_energy_rollups() AS n')).rows[0].n) === 0) {
      throw new Error('refresh_energy_rollups returned 0 with changes pending and its lock held');
    }
  }
  const s = seconds(t0);
  if (calls > 0) await c.query('ANALYZE flux_internal.meter_rollup_5m');
  return s;
}

/** A connection to the data set's database, made (and its rollups refreshed) if need be. */
async function open(d) {
  const script = readFileSync(join(root, 'bench', 'rollups', 'generate.sql'), 'utf8');
  const c = await benchDatabase(dbName(d), `rollups ${script}`, async (f) => {
    console.log(`generating ${describe(d)} in ${dbName(d)} ...`);
    const t0 = process.hrtime.bigint();
    await f.query(script.replaceAll(':meters', String(d.meters)).replaceAll(':days', String(d.days))
      .replaceAll(':interval', String(d.interval)).replaceAll(':start', `'${START}'`));
    await f.query('VACUUM ANALYZE flux.mg_meter_readings');
    console.log(`  generated in ${seconds(t0).toFixed(0)} s; rollups refreshed in ${(await materialise(f)).toFixed(1)} s`);
  });
  // A run stopped half-way (in the cold path) may have left changes pending.
  await materialise(c);
  return c;
}

// The partitions count: the energy functions' context queries are planned over all of them.
async function printSizes(c, d) {
  const s = (await c.query(`SELECT sum(pg_total_relation_size(relid)) AS readings, count(*) FILTER (WHERE isleaf) AS partitions,
                                   pg_total_relation_size('flux_internal.meter_rollup_5m') AS rollups,
                                   (SELECT count(*) FROM flux_internal.meter_rollup_5m) AS rollup_rows
                            FROM pg_partition_tree('flux.mg_meter_readings')`)).rows[0];
  console.log(`  data: ${describe(d)}; readings ${mb(s.readings)} (heap and indexes) in ${s.partitions} partitions; `
    + `rollups ${Number(s.rollup_rows).toLocaleString()} rows, ${mb(s.rollups)}`);
}

const useRollups = (c, on) => c.query(`SET flux.energy_rollups = ${on ? 'on' : 'off'}`);

/** Milliseconds of one run of a case: { sql, args, rollups (default on) }. */
async function timed(c, { sql, args, rollups = true }) {
  await useRollups(c, rollups);
  const t0 = process.hrtime.bigint();
  await c.query(sql, args);
  return seconds(t0) * 1000;
}

/** The median milliseconds of each case: one warm-up run each, then `reps` interleaved rounds. */
async function medians(c, cases) {
  for (const k of Object.values(cases)) await timed(c, k);
  const samples = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
  for (let i = 0; i < reps; i++) {
    for (const [k, v] of Object.entries(cases)) samples[k].push(await timed(c, v));
  }
  return Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
}

/** The rows of a query, as arrays, with the rollups on or off. */
async function resultOf(c, sql, args, rollups) {
  await useRollups(c, rollups);
  return (await c.query({ text: sql, values: args, rowMode: 'array' })).rows;
}

/** Throws unless the two results are equal, numbers within 1e-9 relative; returns the row count. */
function agree(label, got, want) {
  const close = (x, y) => (typeof x === 'number' && typeof y === 'number'
    ? Math.abs(x - y) <= 1e-9 * Math.max(Math.abs(x), Math.abs(y))
    : String(x) === String(y));
  if (got.length !== want.length) throw new Error(`${label}: ${got.length} rows from the rollups, ${want.length} from the raw path`);
  const bad = [];
  got.forEach((row, i) => row.forEach((x, j) => {
    if (!close(x, want[i][j])) bad.push(`row ${i} column ${j}: ${x} against ${want[i][j]}`);
  }));
  if (bad.length > 0) throw new Error(`${label}: the rollups and the raw path disagree in ${bad.length} values, e.g.\n  ${bad.slice(0, 5).join('\n  ')}`);
  return got.length;
}

/** Checks a query's result with the rollups against the raw path's. */
async function check(c, label, sql, args) {
  const n = agree(label, await resultOf(c, sql, args, true), await resultOf(c, sql, args, false));
  console.log(`  checked: rollups and raw path agree on all ${n.toLocaleString()} result rows (1e-9 relative)`);
}


/**
 * get_meter_readings_30m over all of a data set against the floor, the raw path and the plain
 * SQL, as configured and (--restricted) in one process without JIT; returns the configured
 * medians.
 */
async function againstBaselines(c, d) {
  const range = [START, at(d.days)];
  const cases = {
    floor: { sql: Q.floor, args: range },
    rollups: { sql: Q.rpc, args: [...range, null] },
    raw: { sql: Q.rpc, args: [...range, null], rollups: false },
    plain: { sql: Q.plain, args: range },
  };
  const settings = (await c.query(`SELECT current_setting('max_parallel_workers_per_gather') AS workers, current_setting('jit') AS jit`)).rows[0];
  const variants = [[`as configured: max_parallel_workers_per_gather ${settings.workers}, jit ${settings.jit}`, []]];
  if (restricted) variants.push(['restricted: one process, JIT off (labelled; not the baseline)', ['SET max_parallel_workers_per_gather = 0', 'SET jit = off']]);
  let configured;
  for (const [label, setup] of variants) {
    for (const sql of setup) await c.query(sql);
    const t = await medians(c, cases);
    configured ??= t;
    console.log(`  ${label}`);
    console.log(`    (a) floor: grouped scan                      ${ms(t.floor).padStart(10)}`);
    console.log(`    (b) get_meter_readings_30m, rollups          ${ms(t.rollups).padStart(10)}`);
    console.log(`    (c) get_meter_readings_30m, raw path         ${ms(t.raw).padStart(10)}   ${(rowsOf(d) / t.raw / 1000).toFixed(2)} M rows/s`);
    console.log(`    (d) plain SQL with lag()                     ${ms(t.plain).padStart(10)}`);
    console.log(`    (d)/(b) = ${ratio(t.plain / t.rollups)}   (b)/(a) = ${ratio(t.rollups / t.floor)}   (c)/(b) = ${ratio(t.raw / t.rollups)}`);
  }
  await c.query('RESET max_parallel_workers_per_gather');
  await c.query('RESET jit');
  return configured;
}

const dataLabel = (d) => `${d.meters.toLocaleString()} meter${d.meters > 1 ? 's' : ''} × ${d.days} d, 1 / ${d.interval} s (${(rowsOf(d) / 1e6).toFixed(2)} M rows)`;

async function yearTest() {
  const c = await open(year);
  console.log(`\n30-minute RPC over ${year.days} days, ${reps} interleaved rounds, medians`);
  await printSizes(c, year);
  await check(c, 'year', Q.detail, [START, at(year.days), null]);
  const t = await againstBaselines(c, year);
  summary.push([`30-min RPC over ${year.days} days`, dataLabel(year), ms(t.rollups), `plain lag() SQL ${ms(t.plain)}`, `${ratio(t.plain / t.rollups)}×`, '≥ 10×']);
  await c.end();
}

/**
 * Checks the rollups against the raw path with late changes pending amid materialised buckets
 * (a register jump, a gap, a stray reading), in a transaction rolled back.
 */
async function checkLateChanges(c) {
  const ids = meterIds(fleet.meters);
  const mid = at(fleet.days / 2);
  await c.query('BEGIN');
  try {
    await c.query(`UPDATE flux.mg_meter_readings SET energy_imported_active = energy_imported_active + 5
                   WHERE device_id = $1 AND time >= $2::timestamptz + interval '12 hours' AND time < $2::timestamptz + interval '13 hours'`, [ids[0], mid]);
    await c.query(`DELETE FROM flux.mg_meter_readings
                   WHERE device_id = $1 AND time >= $2::timestamptz + interval '3 hours 7 minutes' AND time < $2::timestamptz + interval '5 hours'`, [ids[1 % ids.length], mid]);
    await c.query(`INSERT INTO flux.mg_meter_readings (device_id, time, power_total_active, energy_imported_active, energy_exported_active)
                   VALUES ($1, $2::timestamptz + interval '7 hours 5 seconds', 100, 1, 1)`, [ids[2 % ids.length], mid]);
    // A grid that starts and ends off the 15-minute edges.
    const args = [new Date(Date.parse(START) + 300_000).toISOString(), new Date(Date.parse(at(fleet.days)) - 300_000).toISOString()];
    const n = agree('late changes', await resultOf(c, Q.quarters, args, true), await resultOf(c, Q.quarters, args, false));
    console.log(`  checked: with late changes pending amid materialised buckets, all ${n.toLocaleString()} rows of meter_energy_buckets at 15 minutes agree`);
  } finally {
    await c.query('ROLLBACK');
  }
}

/** The cold path, the refresh and the fleet's baselines: the cold path needs everything pending. */
async function fleetTest() {
  const c = await open(fleet);
  console.log(`\n${fleet.days} days of ${fleet.meters} meters, ${reps} interleaved rounds, medians`);
  await printSizes(c, fleet);
  const cases = [];
  for (const days of [...new Set([1, 7, fleet.days])].filter((x) => x <= fleet.days)) cases.push([`${days} d, all ${fleet.meters} meters`, days, null]);
  for (const n of [1, 5].filter((x) => x < fleet.meters)) cases.push([`${fleet.days} d, ${n} meter${n > 1 ? 's' : ''}`, fleet.days, meterIds(n)]);
  const cold = {};
  for (const [label, days, ids] of cases) {
    cold[`${label} pending`] = { sql: Q.rpc, args: [START, at(days), ids] };
    cold[`${label} raw`] = { sql: Q.rpc, args: [START, at(days), ids], rollups: false };
  }
  // What the generating INSERT logged: each meter's whole span, nothing materialised.
  await c.query('TRUNCATE flux_internal.meter_rollup_5m, flux_internal.meter_rollup_1d, flux_internal.meter_rollup_pending');
  await c.query('INSERT INTO flux_internal.meter_rollup_pending (device_ids, lo, hi) SELECT ARRAY[device_id], min(time), max(time) FROM flux.mg_meter_readings GROUP BY device_id');
  const full = [START, at(fleet.days), null];
  const raw = await resultOf(c, Q.detail, full, false);
  agree('cold path', await resultOf(c, Q.detail, full, true), raw);
  const before = await medians(c, cold);
  const refresh = await materialise(c);
  agree('fleet', await resultOf(c, Q.detail, full, true), raw);
  console.log(`  checked: rollups (all pending, then materialised) and raw path agree on all ${raw.length.toLocaleString()} result rows (1e-9 relative)`);
  await checkLateChanges(c);
  const after = await medians(c, Object.fromEntries(cases.map(([label, days, ids]) => [label, { sql: Q.rpc, args: [START, at(days), ids] }])));
  console.log(`  refresh_energy_rollups of everything: ${(refresh * 1000).toFixed(0)} ms, ${(rowsOf(fleet) / refresh / 1e6).toFixed(2)} M readings/s`);
  console.log('  get_meter_readings_30m, rollups on with every bucket pending (cold), raw path, materialised:');
  console.log('    range, meters            pending        raw   pending/raw   materialised   raw/materialised');
  for (const [label] of cases) {
    const [p, r, m] = [before[`${label} pending`], before[`${label} raw`], after[label]];
    console.log(`    ${label.padEnd(20)} ${ms(p).padStart(10)} ${ms(r).padStart(10)} ${ratio(p / r).padStart(13)} ${ms(m).padStart(14)} ${ratio(r / m).padStart(18)}`);
  }
  const t = await againstBaselines(c, fleet);
  const data = dataLabel(fleet);
  summary.push([`30-min RPC over ${fleet.days} days`, data, ms(t.rollups), `plain lag() SQL ${ms(t.plain)}`, `${ratio(t.plain / t.rollups)}×`, '≥ 5×']);
  summary.push(['', '', '', `grouped-scan floor ${ms(t.floor)}`, ratio(t.rollups / t.floor), '≤ 0.2']);
  const all = `${fleet.days} d, all ${fleet.meters} meters`;
  summary.push([`cold: ${fleet.days} days, all pending`, data, ms(before[`${all} pending`]), `raw path ${ms(before[`${all} raw`])}`, ratio(before[`${all} pending`] / before[`${all} raw`]), '—']);
  summary.push(['refresh of all of it', data, ms(refresh * 1000), '—', '—', '—']);
  await c.end();
}

async function settlementTest() {
  const c = await open(settlement);
  const n = settlement.meters;
  console.log(`\ndaily settlement run: ${START.slice(0, 10)} ("yesterday"), 30-minute periods of all ${n.toLocaleString()} meters, ${reps} interleaved rounds, medians`);
  await printSizes(c, settlement);
  const args = [START, at(1), null];
  await check(c, 'settlement', Q.detail, args);
  const cases = { rollups: { sql: Q.rpc, args }, raw: { sql: Q.rpc, args, rollups: false } };
  const t = await medians(c, cases);
  const memory = {};
  for (const [k, v] of Object.entries(cases)) memory[k] = await memoryOf(dbName(settlement), v.sql, v.args, (client) => useRollups(client, v.rollups ?? true));
  for (const [k, label] of [['rollups', 'rollups '], ['raw', 'raw path']]) {
    console.log(`    ${label}  ${ms(t[k]).padStart(10)}  ${(t[k] / n * 1000).toFixed(0).padStart(6)} µs/device   peak memory of a fresh backend ${memory[k].toFixed(1)} MB, ${(memory[k] * 1024 / n).toFixed(2)} kB/device`);
  }
  console.log(`    raw/rollups = ${ratio(t.raw / t.rollups)}`);
  summary.push(['daily settlement, all devices', dataLabel(settlement),
    `${ms(t.rollups)}: ${(t.rollups / n * 1000).toFixed(0)} µs, ${(memory.rollups * 1024 / n).toFixed(2)} kB per device`,
    `raw path ${ms(t.raw)}: ${(memory.raw * 1024 / n).toFixed(2)} kB per device`, `${ratio(t.raw / t.rollups)}×`, 'time, memory per device']);
  await c.end();
}

async function monthlyTest() {
  const c = await open(monthly);
  console.log(`\nmonthly totals of ${START.slice(0, 4)}: meter_energy_buckets(…, '1 day') summed per calendar month (UTC), ${reps} interleaved rounds, medians`);
  await printSizes(c, monthly);
  const args = [START, at(monthly.days)];
  await check(c, 'monthly', Q.monthly, args);
  const t = await medians(c, { rollups: { sql: Q.monthly, args }, raw: { sql: Q.monthly, args, rollups: false } });
  console.log(`    rollups   ${ms(t.rollups).padStart(10)}\n    raw path  ${ms(t.raw).padStart(10)}\n    raw/rollups = ${ratio(t.raw / t.rollups)}`);
  summary.push(['monthly totals for a year', dataLabel(monthly), ms(t.rollups), `raw path ${ms(t.raw)}`, `${ratio(t.raw / t.rollups)}×`, '≥ 50×']);
  await c.end();
}

const freePort = () => new Promise((resolve, reject) => {
  const server = createServer().once('error', reject).listen(0, '127.0.0.1', () => {
    const { port } = server.address();
    server.close(() => resolve(port));
  });
});

/** A copy of the stack's PostgREST (its configuration, pre-request hook included) serving `db`. */
async function startPostgrest(db) {
  const port = await freePort();
  const conf = join(home, 'conf', 'postgrest-bench-rollups.conf');
  writeFileSync(conf, readFileSync(join(home, 'conf', 'postgrest.conf'), 'utf8')
    .replace(/^(db-uri = ".*\/)[^/"]*"$/m, `$1${db}"`)
    .replace(/^server-port = .*$/m, `server-port = ${port}`), { mode: 0o600 });
  const bin = execFileSync('bash', ['-c', `source "${root}/stack/lib.sh" && printf %s "$POSTGREST_BIN"`], { encoding: 'utf8' });
  const log = openSync(join(home, 'log', 'postgrest-bench-rollups.log'), 'a');
  const server = spawn(bin, [conf], { stdio: ['ignore', log, log] });
  closeSync(log);
  const url = `http://127.0.0.1:${port}`;
  // Up once it answers with anything but 503 (no schema cache yet).
  for (let i = 0; (await fetch(url, { headers: { apikey: env.FLUX_ANON_KEY } }).then((r) => r.status, () => 503)) === 503; i++) {
    if (i >= 150 || server.exitCode !== null) {
      server.kill();
      throw new Error(`PostgREST for ${db} did not start: see ${home}/log/postgrest-bench-rollups.log`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, stop: () => server.kill() };
}

async function ingestTest() {
  const { rows, clients, batch } = ingest;
  const devices = 1000;
  const steps = Math.ceil(rows / devices);
  const SITE = 'FLUX-BENCH-ROLLUPS';
  const db = 'flux_bench_rollups_ingest';
  const deviceId = (d) => `00000000-0000-4000-9000-${d.toString(16).padStart(12, '0')}`;
  const c = await benchDatabase(db, 'rollups ingest', async (f) => {
    await f.query(`INSERT INTO flux.mg_device_registry (id, name, type, site)
                   SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(d), 12, '0'))::uuid, 'BENCH-INGEST-' || d, 'meter', $1
                   FROM generate_series(1, ${devices}) d`, [SITE]);
  });
  await holdRefreshLock(c);
  await c.query("SET flux.maintenance_lock_timeout = '60s'");
  await c.query('SELECT count(*) FROM flux.create_partitions(\'flux.mg_meter_readings\', $1, $2)', [START, at((steps * 10) / 86400 + 1)]);
  // bench/ingest's batches: one reading of each meter per time step, device-major.
  const bodies = [];
  for (let b = 0; b * batch < rows; b++) {
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
    bodies.push(JSON.stringify(out));
  }
  const tokens = [];
  for (let i = 0; i < clients; i++) {
    tokens.push((await c.query(`SELECT flux.sign_jwt($1::jsonb, '1 hour') AS t`,
      [JSON.stringify({ role: 'authenticated', sub: `bench-rollups-gateway-${i}`, sites: [SITE] })])).rows[0].t);
  }
  const admin = new pg.Client({ connectionString: env.FLUX_DB_URL });
  await admin.connect();
  const tiers = (await admin.query(`SELECT name, setting, source FROM pg_settings
                                    WHERE name IN ('flux.rate_limit_authenticated_per_minute', 'flux.rate_limit_authenticated_burst')`)).rows;
  console.log(`\ningest: ${rows.toLocaleString()} meter readings (${devices} meters × ${steps} readings, 10 s apart) by REST, ${clients} clients posting ${batch}-row batches`);
  console.log(`  to a PostgREST of its own (the stack's configuration) on ${db}; ${ingest.reps} interleaved rounds, medians`);
  const postgrest = await startPostgrest(db);
  const latencies = { on: [], off: [] };
  /** Posts every batch, `clients` at a time, recording latencies in `latency`; returns seconds. */
  const post = async (latency) => {
    let next = 0;
    const t0 = process.hrtime.bigint();
    await Promise.all(tokens.map(async (token) => {
      while (next < bodies.length) {
        const body = bodies[next++];
        const r0 = process.hrtime.bigint();
        const res = await fetch(`${postgrest.url}/mg_meter_readings`, {
          method: 'POST',
          headers: { apikey: env.FLUX_ANON_KEY, Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', Prefer: 'return=minimal' },
          body,
        });
        latency.push(seconds(r0) * 1000);
        if (res.status !== 201) throw new Error(`REST insert: ${res.status} ${await res.text()}`);
      }
    }));
    return seconds(t0);
  };
  const times = { on: [], off: [] };
  let refresh;
  let unordered;
  try {
    // Lifted like bench/ingest does, so that no batch is refused; put back below.
    for (const t of tiers) await admin.query(`ALTER SYSTEM SET ${t.name} = 100000000`);
    await admin.query('SELECT pg_reload_conf()');
    await new Promise((r) => setTimeout(r, 500));
    for (let i = 0; i < ingest.reps; i++) {
      // The order alternates, so that neither variant always runs first.
      for (const logging of i % 2 === 0 ? [true, false] : [false, true]) {
        await c.query('TRUNCATE flux.mg_meter_readings'); // its trigger empties the rollups and the log
        await c.query(`ALTER TABLE flux.mg_meter_readings ${logging ? 'ENABLE' : 'DISABLE'} TRIGGER log_changes_for_rollups_on_insert`);
        await c.query('CHECKPOINT');
        const mode = logging ? 'on' : 'off';
        times[mode].push(await post(latencies[mode]));
        const stored = Number((await c.query('SELECT count(*) AS n FROM flux.mg_meter_readings')).rows[0].n);
        const logged = await pendingCount(c);
        if (stored !== rows || (logged > 0) !== logging) throw new Error(`ingest, log ${mode}: ${stored} of ${rows} rows stored, ${logged} changes logged`);
        if (logging && refresh === undefined) {
          // Concurrent batches store a meter's readings out of time order; the energy functions
          // (the refresh among them) read such a meter again on its own. The run stays within
          // one partition, so heap order is ctid order.
          unordered = Number((await c.query(`SELECT count(DISTINCT device_id) AS n FROM
              (SELECT device_id, time < lag(time) OVER (PARTITION BY device_id ORDER BY ctid) AS back FROM flux.mg_meter_readings) r
              WHERE back`)).rows[0].n);
          refresh = await materialise(c);
          await check(c, 'ingest', Q.detail, [START, at(steps * 10 / 86400), null]);
        }
      }
    }
  } finally {
    postgrest.stop();
    for (const t of tiers) {
      await admin.query(t.source === 'configuration file' ? `ALTER SYSTEM SET ${t.name} = ${t.setting}` : `ALTER SYSTEM RESET ${t.name}`);
    }
    await admin.query('SELECT pg_reload_conf()');
    await admin.end();
    await c.query('ALTER TABLE flux.mg_meter_readings ENABLE TRIGGER log_changes_for_rollups_on_insert');
    await c.query('TRUNCATE flux.mg_meter_readings');
  }
  const [on, off] = [median(times.on), median(times.off)];
  for (const [mode, s] of [['on', on], ['off', off]]) {
    console.log(`    rollup change log ${mode.padEnd(3)}  ${Math.round(rows / s).toLocaleString().padStart(9)} rows/s   `
      + `latency p50 ${percentile(latencies[mode], 0.5).toFixed(0)} ms, p99 ${percentile(latencies[mode], 0.99).toFixed(0)} ms per batch`);
  }
  console.log(`    on/off = ${(off / on).toFixed(3)}   (goal ≥ 0.9)`);
  console.log(`    refresh of what the first run logged: ${(refresh * 1000).toFixed(0)} ms (${Math.round(rows / refresh).toLocaleString()} rows/s); ingest and refresh together against off: ${(off / (on + refresh)).toFixed(3)}`);
  console.log(`    (the concurrent batches left ${unordered.toLocaleString()} of ${devices} meters' readings out of time order in the table)`);
  summary.push(['ingest, rollup log on vs off', `REST, ${(rows / 1e6).toFixed(2)} M rows, ${clients} × ${batch}-row batches`,
    `${Math.round(rows / on).toLocaleString()} rows/s`, `log off ${Math.round(rows / off).toLocaleString()} rows/s`, (off / on).toFixed(3), '≥ 0.9']);
  await c.end();
}

async function main() {
  const t0 = process.hrtime.bigint();
  const tests = { year: yearTest, fleet: fleetTest, settlement: settlementTest, monthly: monthlyTest, ingest: ingestTest };
  for (const [name, test] of Object.entries(tests)) if (runs(name)) await test();
  console.log(`\nenergy rollups: summary (medians; each ratio against a baseline measured in this run; ${seconds(t0).toFixed(0)} s in all)\n`);
  console.log('| query | data | rollups | baseline | ratio | goal |');
  console.log('|---|---|---|---|---|---|');
  for (const row of summary) console.log(`| ${row.join(' | ')} |`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
