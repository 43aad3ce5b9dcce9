// Energy benchmark: get_meter_readings_30m against the floor (one grouped scan of the same rows
// and columns) and against the plain SQL a user would otherwise write (lag() per device,
// negative differences as resets). All three run in one session, interleaved, several times,
// first with the server's settings (parallel workers for the SQL), then restricted to one
// process without JIT; the ratios are of medians. Also: rows/s, the peak memory each adds to a
// fresh backend (catalog caches included), and time from 1 to 30 days.
//
//   node bench/energy/run.mjs [--meters 20] [--days 30] [--reps 5]
//
// Needs a running stack (./flux up); the data goes to its own database flux_bench_<m>x<d>.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchDatabase, median, memoryOf, opt, pg, root, urlOf } from '../lib.mjs';

const meters = opt('meters', 20);
const days = opt('days', 30);
const reps = opt('reps', 5);

const dbName = `flux_bench_${meters}x${days}`;
const expectedRows = meters * days * 8640;

// Each query sums every output column: the planner drops output columns nobody reads (and the
// work behind them), so a bare count(*) would measure less than the full computation.
const buckets = (from) => `SELECT count(*), sum(p), sum(i), sum(e) FROM (${from}) q(device_id, time_b, p, i, e)`;
const queries = {
  floor: buckets(`
      SELECT device_id, date_bin('30 minutes', time, 'epoch'), avg(power_total_active),
             max(energy_imported_active) - min(energy_imported_active),
             max(energy_exported_active) - min(energy_exported_active)
      FROM flux.mg_meter_readings WHERE time >= $1 AND time < $2 GROUP BY 1, 2`),
  flux: buckets(`
      SELECT device_id, time_b, power_total_active_avg, energy_imported_active_delta, energy_exported_active_delta
      FROM flux.get_meter_readings_30m($1, $2, NULL)`),
  plain: buckets(`
      SELECT device_id, date_bin('30 minutes', time, 'epoch'), avg(power_total_active),
             sum(CASE WHEN di < 0 THEN energy_imported_active ELSE di END),
             sum(CASE WHEN de < 0 THEN energy_exported_active ELSE de END)
      FROM (SELECT device_id, time, power_total_active, energy_imported_active, energy_exported_active,
                   energy_imported_active - lag(energy_imported_active) OVER w AS di,
                   energy_exported_active - lag(energy_exported_active) OVER w AS de
            FROM flux.mg_meter_readings WHERE time >= $1 AND time < $2
            WINDOW w AS (PARTITION BY device_id ORDER BY time)) r
      GROUP BY 1, 2`),
};

/** Runs one query; returns its milliseconds. */
async function timed(client, sql, args) {
  const t0 = process.hrtime.bigint();
  await client.query(sql, args);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}


const range = (d) => ['2024-01-01T00:00:00Z', new Date(Date.parse('2024-01-01T00:00:00Z') + d * 86_400_000).toISOString()];

async function main() {
  const client = await benchDatabase(dbName, 'energy', async (c) => {
    console.log(`generating ${expectedRows.toLocaleString()} readings (${meters} meters × ${days} days × one per 10 s) in ${dbName} ...`);
    const script = readFileSync(join(root, 'bench', 'energy', 'generate.sql'), 'utf8')
      .replaceAll(':meters', String(meters))
      .replaceAll(':days', String(days));
    await c.query(script);
    await c.query('VACUUM ANALYZE flux.mg_meter_readings');
  });
  const full = range(days);
  for (const sql of Object.values(queries)) await client.query(sql, full); // warm the cache

  const rows = expectedRows;
  console.log(`\nenergy benchmark: ${meters} meters × ${days} days × 1 reading / 10 s = ${rows.toLocaleString()} rows, 30-minute buckets, median of ${reps}`);
  // First as a user runs them: the server's settings, so the grouped scans may use parallel
  // workers (the function cannot). Then restricted to one process with JIT off, which
  // compares the algorithms alone.
  const settings = (await client.query(`SELECT current_setting('max_parallel_workers_per_gather') AS workers, current_setting('jit') AS jit`)).rows[0];
  for (const [label, setup] of [
    [`as configured: max_parallel_workers_per_gather ${settings.workers}, jit ${settings.jit}`, []],
    ['restricted: one process, JIT off (labelled; not the baseline)', ['SET max_parallel_workers_per_gather = 0', 'SET jit = off']],
  ]) {
    for (const sql of setup) await client.query(sql);
    const times = { floor: [], flux: [], plain: [] };
    for (let i = 0; i < reps; i++) {
      for (const [name, sql] of Object.entries(queries)) times[name].push(await timed(client, sql, full));
    }
    const t = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
    console.log(`  ${label}`);
    console.log(`    (a) floor: grouped scan        ${t.floor.toFixed(0).padStart(7)} ms`);
    console.log(`    (b) get_meter_readings_30m     ${t.flux.toFixed(0).padStart(7)} ms   ${(rows / t.flux / 1000).toFixed(2)} M rows/s`);
    console.log(`    (c) plain SQL with lag()       ${t.plain.toFixed(0).padStart(7)} ms`);
    console.log(`    ratio (b)/(a) = ${(t.flux / t.floor).toFixed(2)}   (goal ≤ 1.5)`);
    console.log(`    ratio (c)/(b) = ${(t.plain / t.flux).toFixed(2)}   (goal ≥ 3)`);
  }

  // Restricted to the backend measured: parallel workers' memory is not its own.
  const oneProcess = (client) => client.query('SET max_parallel_workers_per_gather = 0');
  const memory = {};
  for (const [name, sql] of Object.entries(queries)) memory[name] = await memoryOf(dbName, sql, full, oneProcess);
  console.log(`  peak memory of a fresh backend, one process: (a) ${memory.floor.toFixed(1)} MB, (b) ${memory.flux.toFixed(1)} MB, (c) ${memory.plain.toFixed(1)} MB`);

  console.log('\n  scaling of (b) with the range (ms, and ms per day):');
  for (const d of [1, 2, 4, 8, 15, 30].filter((d) => d <= days)) {
    const r = range(d);
    const samples = [];
    for (let i = 0; i < Math.max(3, reps); i++) samples.push(await timed(client, queries.flux, r));
    const ms = median(samples);
    console.log(`    ${String(d).padStart(2)} days  ${ms.toFixed(0).padStart(6)} ms  ${(ms / d).toFixed(1).padStart(6)} ms/day`);
  }
  await client.end();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
