// Sustained fleet soak: --devices meters at --sites sites, each site's gateway posting one
// reading per device every 10 s in one batch, through the router as the authenticated role
// (a token per gateway), for --minutes, with realtime subscribers attached (supabase-js: one
// per --subscribers, each following one device, and one following the whole table).
// Reports request latency, rows acknowledged against rows stored (must be equal), realtime
// deliveries, and the CPU the stack's processes spent per 1,000 rows.
//
//   node bench/soak/run.mjs [--devices 10000] [--sites 100] [--minutes 10] [--subscribers 10]
//
// Runs against the stack (./flux up), in its database: the readings are stamped in a day of
// their own (2198-01-01 onwards, partitions made for it and dropped at the end).
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Client, flavors, sleep } from '../../tests/e2e/realtime/harness.mjs';
import { env, home, opt, percentile, pg } from '../lib.mjs';

const devices = opt('devices', 10_000);
const sites = opt('sites', 100);
const minutes = opt('minutes', 10);
const subscribers = opt('subscribers', 10);
const PERIOD_MS = 10_000;

const START = Date.parse('2198-01-01T00:00:00Z');
const SITE = (s) => `FLUX-SOAK-${s}`;
const deviceId = (d) => `00000000-0000-4000-c000-${d.toString(16).padStart(12, '0')}`;

/** CPU seconds (user + system) of the stack's processes: PostgreSQL and its children, PostgREST, router, realtime. */
function stackCpuSeconds() {
  const ticks = 100; // USER_HZ on Linux
  const stat = (pid) => {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return { ppid: Number(fields[1]), cpu: Number(fields[11]) + Number(fields[12]), children: Number(fields[13]) + Number(fields[14]) };
    } catch {
      return null;
    }
  };
  const postmaster = Number(readFileSync(join(home, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0]);
  let total = 0;
  const pm = stat(postmaster);
  total += pm.cpu + pm.children; // exited backends are counted in the postmaster's children
  for (const entry of readdirSync('/proc')) {
    const s = /^\d+$/.test(entry) && stat(entry);
    if (s && s.ppid === postmaster) total += s.cpu;
  }
  for (const name of ['postgrest', 'router', 'realtime']) {
    const s = stat(readFileSync(join(home, 'run', `${name}.pid`), 'utf8').trim());
    if (s) total += s.cpu;
  }
  return total / ticks;
}

async function main() {
  const db = new pg.Client({ connectionString: env.FLUX_DB_URL });
  await db.connect();
  const cleanup = async () => {
    const made = (await db.query(`SELECT partition::text AS p FROM flux_internal.time_partitions('flux.mg_meter_readings')
                                  WHERE lower >= '2198-01-01' AND upper <= '2199-01-01'`)).rows;
    for (const { p } of made) await db.query(`DROP TABLE ${p}`);
    await db.query(`DELETE FROM flux.mg_device_registry WHERE site LIKE 'FLUX-SOAK-%'`);
  };
  await cleanup();
  await db.query(`INSERT INTO flux.mg_device_registry (id, name, type, site)
                  SELECT ('00000000-0000-4000-c000-' || lpad(to_hex(d), 12, '0'))::uuid, 'SOAK-' || d, 'meter', 'FLUX-SOAK-' || (d % ${sites})
                  FROM generate_series(1, ${devices}) d`);
  await db.query(`SET flux.maintenance_lock_timeout = '10s'`);
  await db.query(`SELECT count(*) FROM flux.create_partitions('flux.mg_meter_readings', '2198-01-01', '2198-01-02')`);
  const tokens = [];
  for (let s = 0; s < sites; s++) {
    tokens.push((await db.query(`SELECT flux.sign_jwt($1::jsonb, '2 hours') AS t`,
      [JSON.stringify({ role: 'authenticated', sub: `soak-gateway-${s}`, sites: [SITE(s)] })])).rows[0].t);
  }

  // Dashboards: one device each, and one view of the whole fleet.
  const flavor = flavors[0];
  const watchers = [];
  for (let i = 0; i < subscribers; i++) {
    const c = new Client(flavor, env.FLUX_ANON_KEY);
    await c.subscribe('d', `soak-${i}`, [{ event: 'INSERT', schema: 'flux', table: 'mg_meter_readings', filter: `device_id=eq.${deviceId(i + 1)}` }]);
    watchers.push(c);
  }
  const fleet = new Client(flavor, env.FLUX_ANON_KEY);
  await fleet.subscribe('all', 'soak-fleet', [{ event: 'INSERT', schema: 'flux', table: 'mg_meter_readings' }]);

  const latencies = [];
  const failures = [];
  let acknowledged = 0;
  const cpu0 = stackCpuSeconds();
  const t0 = Date.now();
  const deadline = t0 + minutes * 60_000;
  const gateway = async (s) => {
    const mine = [];
    for (let d = 1; d <= devices; d++) if (d % sites === s) mine.push(d);
    await sleep((s * PERIOD_MS) / sites); // gateways are not in step
    for (let round = 0; Date.now() < deadline; round++) {
      const due = t0 + (s * PERIOD_MS) / sites + round * PERIOD_MS;
      const time = new Date(START + round * PERIOD_MS + s).toISOString();
      const body = JSON.stringify(mine.map((d) => ({
        device_id: deviceId(d), time, power_total_active: 50 + (d % 40), energy_imported_active: d * 10 + round * 0.14,
      })));
      const r0 = Date.now();
      try {
        const res = await fetch(`${env.FLUX_API_URL}/mg_meter_readings`, {
          method: 'POST',
          headers: { apikey: env.FLUX_ANON_KEY, Authorization: `Bearer ${tokens[s]}`, 'Content-Type': 'application/json', Prefer: 'return=minimal' },
          body,
        });
        latencies.push(Date.now() - r0);
        if (res.status === 201) acknowledged += mine.length;
        else failures.push(`${res.status} ${(await res.text()).slice(0, 200)}`);
      } catch (e) {
        failures.push(String(e));
      }
      await sleep(Math.max(0, due + PERIOD_MS - Date.now()));
    }
  };
  await Promise.all(Array.from({ length: sites }, (_, s) => gateway(s)));
  const elapsed = (Date.now() - t0) / 1000;
  const cpu = stackCpuSeconds() - cpu0;

  const stored = Number((await db.query(`SELECT count(*) AS n FROM flux.mg_meter_readings WHERE time >= '2198-01-01' AND time < '2199-01-01'`)).rows[0].n);
  // Let realtime catch up, then count deliveries.
  const waitStarted = Date.now();
  while (fleet.changes('all').length < stored && Date.now() - waitStarted < 120_000) await sleep(500);
  const fleetEvents = fleet.changes('all').length;
  const catchUp = (Date.now() - waitStarted) / 1000;
  const perDevice = watchers.map((w) => w.changes('d').length);
  for (const w of [...watchers, fleet]) await w.close();
  await cleanup();
  await db.end();

  console.log(`\nsoak: ${devices.toLocaleString()} meters at ${sites} sites, one reading each per 10 s, ${elapsed.toFixed(0)} s, through the REST API`);
  console.log(`  requests: ${latencies.length.toLocaleString()} (${(latencies.length / elapsed).toFixed(1)}/s, ${devices / sites} rows each), failed ${failures.length}${failures.length ? `: ${failures.slice(0, 3).join(' | ')}` : ''}`);
  console.log(`  latency: p50 ${percentile(latencies, 0.5)} ms, p99 ${percentile(latencies, 0.99)} ms, max ${Math.max(...latencies)} ms`);
  console.log(`  rows acknowledged ${acknowledged.toLocaleString()}, stored ${stored.toLocaleString()} ${acknowledged === stored ? '(equal)' : '(NOT EQUAL)'}`);
  console.log(`  ingest ${(stored / elapsed).toFixed(0)} rows/s; stack CPU ${cpu.toFixed(1)} s = ${((cpu / stored) * 1000 * 1000).toFixed(1)} ms per 1,000 rows (${((cpu / elapsed) * 100).toFixed(0)} % of one core)`);
  console.log(`  realtime: the fleet subscriber got ${fleetEvents.toLocaleString()} of ${stored.toLocaleString()} inserts (${catchUp.toFixed(0)} s after the last request); ${perDevice.length ? `device subscribers got ${Math.min(...perDevice)}–${Math.max(...perDevice)} each` : 'no device subscribers'}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
