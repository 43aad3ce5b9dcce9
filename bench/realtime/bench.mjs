// Realtime benchmark: insert -> callback latency with 100 subscribed clients over 20 device
// filters, and the highest insert rate whose p99 stays under 100 ms, for the server's grouped
// RLS check and, as the baseline measured in the same run, the per-subscriber check that
// Supabase's realtime does. README.md beside this file says how to run it and what it measures.
//
// It starts its own flux-realtime (one per mode) against the running stack's database, so the
// stack's server, if any, is left alone.
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const requireFrom = join(root, 'tests', 'package.json');
const pg = createRequire(requireFrom)('pg');

const arg = (name, fallback) => {
  const hit = process.argv.find((a) => a.startsWith(`--${name}=`));
  return hit ? hit.slice(name.length + 3) : fallback;
};
const CLIENTS = Number(arg('clients', 100));
const DEVICES = Number(arg('devices', 20));
const STEADY_RATE = Number(arg('rate', 1000));
const STEADY_SECONDS = Number(arg('seconds', 10));
const STEP_SECONDS = Number(arg('step-seconds', 5));
const P99_GOAL_MS = 100;
const RAMP = [100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 8000, 10000];
const MODES = arg('modes', 'per-subscriber,grouped').split(',');
const WORKERS = 2;
const DRAIN_STALL_MS = 30_000;
const SERVER_LOG = arg('server-log', null); // file to append the servers' stderr to

const home = process.env.FLUX_HOME ?? join(root, '.flux');
const env = Object.fromEntries(
  readFileSync(join(home, 'stack.env'), 'utf8')
    .split('\n')
    .filter((l) => l.includes('='))
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
);
const binary = process.env.FLUX_REALTIME_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'release', 'flux-realtime');

const db = new pg.Pool({ connectionString: env.FLUX_DB_URL, max: 4 });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.timeOrigin + performance.now();
const say = (s) => process.stdout.write(`${s}\n`);

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function benchDevices() {
  const names = Array.from({ length: DEVICES }, (_, i) => `BENCH-RT-${String(i).padStart(2, '0')}`);
  await db.query(
    `INSERT INTO flux.mg_device_registry (name, type, site) SELECT n, 'bess', 'WLCE' FROM unnest($1::text[]) n
     ON CONFLICT (name) DO NOTHING`,
    [names],
  );
  const { rows } = await db.query('SELECT id FROM flux.mg_device_registry WHERE name = ANY($1) ORDER BY name', [names]);
  return rows.map((r) => r.id);
}

/** Removes the benchmark's rows, and their dead tuples, so every mode starts alike. */
async function clearReadings(devices) {
  await db.query('DELETE FROM flux.mg_bess_readings WHERE device_id = ANY($1)', [devices]);
  await db.query('VACUUM ANALYZE flux.mg_bess_readings');
}

const BENCH_SLOT = `flux_realtime_bench_${process.pid}`;
/** Drops the benchmark server's slot (permanent, like the stack's), once its walsender has gone. */
async function dropBenchSlot() {
  for (let i = 0; i < 50; i++) {
    const { rows } = await db.query('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [BENCH_SLOT]);
    if (rows.length === 0) return;
    if (!rows[0].active) {
      await db.query('SELECT pg_drop_replication_slot($1)', [BENCH_SLOT]);
      return;
    }
    await sleep(100);
  }
}

async function startServer(mode) {
  const port = await freePort();
  const server = spawn(binary, [], {
    env: {
      ...process.env,
      FLUX_REALTIME_LISTEN: `127.0.0.1:${port}`,
      FLUX_DB_URL: env.FLUX_DB_URL,
      FLUX_JWT_SECRET: env.FLUX_JWT_SECRET,
      FLUX_REALTIME_RLS_CHECK: mode,
      // Every benchmark client comes from 127.0.0.1: lift the per-address connection limit.
      FLUX_REALTIME_CLIENT_CONNECTIONS: String(CLIENTS + 10),
      // A slot of its own beside the stack's realtime server; dropped after each run.
      FLUX_REALTIME_SLOT: BENCH_SLOT,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // Never leave a server behind, whatever ends this process.
  const kill = () => server.kill('SIGTERM');
  process.once('exit', kill);
  server.once('exit', () => process.off('exit', kill));
  let log = '';
  server.stderr.on('data', (d) => {
    log += d;
    if (SERVER_LOG) appendFileSync(SERVER_LOG, d);
  });
  for (let i = 0; i < 150; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).status === 200) return { server, port, log: () => log };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  server.kill();
  throw new Error(`flux-realtime (${binary}) did not become healthy:\n${log}`);
}

async function startClients(port, devices) {
  const latencies = new Map(); // phase -> number[]
  const clients = Array.from({ length: CLIENTS }, (_, index) => ({ index, device: devices[index % devices.length] }));
  const workers = [];
  for (let w = 0; w < WORKERS; w++) {
    const worker = new Worker(join(here, 'clients.mjs'), {
      workerData: {
        requireFrom,
        url: `ws://127.0.0.1:${port}/websocket`,
        key: env.FLUX_ANON_KEY,
        clients: clients.filter((c) => c.index % WORKERS === w),
      },
    });
    const ready = new Promise((resolve, reject) => {
      worker.on('error', reject);
      worker.on('message', (msg) => {
        if (msg.ready) resolve();
        for (const [phase, values] of msg.latencies ?? []) {
          if (!latencies.has(phase)) latencies.set(phase, []);
          latencies.get(phase).push(...values);
        }
      });
    });
    workers.push({ worker, ready });
  }
  await Promise.all(workers.map((w) => w.ready));
  return {
    latencies,
    stop: () => Promise.all(workers.map(({ worker }) => new Promise((r) => worker.once('exit', r).postMessage('stop')))),
  };
}

let timeSeq = 0;
const timeBase = Date.parse('2040-01-01T00:00:00Z');

/** Inserts at `rate` rows/s for `seconds`, one multi-row INSERT per 10 ms tick. */
async function insertAt(rate, seconds, phase, devices) {
  const started = now();
  let sent = 0;
  const inFlight = new Set();
  while (now() - started < seconds * 1000) {
    const due = Math.floor(((now() - started) / 1000) * rate) - sent;
    if (due > 0 && inFlight.size < 4) {
      const ids = [];
      const times = [];
      for (let i = 0; i < due; i++) {
        ids.push(devices[(sent + i) % devices.length]);
        times.push(new Date(timeBase + timeSeq++).toISOString());
      }
      sent += due;
      const p = db
        .query(
          `INSERT INTO flux.mg_bess_readings (device_id, time, soe, target_power, command_source)
           SELECT d, t, 50, $3, $4 FROM unnest($1::uuid[], $2::timestamptz[]) AS u(d, t)`,
          [ids, times, now() % 1e8, phase], // the send time, as clients.mjs unwraps it
        )
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
    await sleep(10);
  }
  await Promise.all(inFlight);
  return { sent, seconds: (now() - started) / 1000 };
}

/**
 * Runs one measured phase and waits for its deliveries: a server that falls behind delivers
 * the backlog late (and that lateness is what is measured), so the wait only gives up after
 * DRAIN_STALL_MS without any delivery.
 */
async function phase(id, rate, seconds, devices, clients) {
  const { sent, seconds: took } = await insertAt(rate, seconds, id, devices);
  const expected = sent * (CLIENTS / devices.length);
  let last = -1;
  let stalledSince = now();
  for (;;) {
    const got = clients.latencies.get(id)?.length ?? 0;
    if (got >= expected) break;
    if (got !== last) {
      last = got;
      stalledSince = now();
    } else if (now() - stalledSince > DRAIN_STALL_MS) break;
    await sleep(100);
  }
  const values = (clients.latencies.get(id) ?? []).slice().sort((a, b) => a - b);
  return {
    rate,
    achieved: sent / took,
    expected,
    delivered: values.length,
    p50: percentile(values, 50),
    p99: percentile(values, 99),
    max: values.at(-1) ?? NaN,
  };
}

const fmt = (ms) => (Number.isFinite(ms) ? (ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${ms.toFixed(1)} ms`) : 'n/a');
const line = (r) =>
  `${String(r.rate).padStart(6)}/s (achieved ${r.achieved.toFixed(0).padStart(5)}/s)  p50 ${fmt(r.p50).padStart(9)}  ` +
  `p99 ${fmt(r.p99).padStart(9)}  max ${fmt(r.max).padStart(9)}  delivered ${r.delivered}/${r.expected}`;
const sustained = (r) => r.delivered === r.expected && r.p99 < P99_GOAL_MS && r.achieved >= r.rate * 0.95;

async function runMode(mode, devices) {
  say(`\n== ${mode} RLS check ==`);
  const { server, port, log } = await startServer(mode);
  let clients;
  try {
    clients = await startClients(port, devices);
    let id = 1;
    await phase(id++, STEADY_RATE, 2, devices, clients); // warm-up: caches, prepared statements
    const steady = await phase(id++, STEADY_RATE, STEADY_SECONDS, devices, clients);
    say(`steady ${line(steady)}`);
    let best = null;
    for (const rate of RAMP) {
      const r = await phase(id++, rate, STEP_SECONDS, devices, clients);
      say(`ramp   ${line(r)}${sustained(r) ? '' : '  <- p99 over 100 ms or deliveries missing'}`);
      if (!sustained(r)) break;
      best = r;
    }
    return { steady, best };
  } finally {
    await clients?.stop();
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await dropBenchSlot();
    if (/dispatch: batch dropped|disconnecting/.test(log())) say(`server log:\n${log()}`);
  }
}

async function main() {
  const devices = await benchDevices();
  await clearReadings(devices);
  const size = async () =>
    (
      await db.query(`SELECT (SELECT count(*) FROM flux.mg_bess_readings)::int AS rows,
                             pg_size_pretty((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('flux.mg_bess_readings'))) AS size`)
    ).rows[0];
  const before = await size();
  say(`flux-realtime benchmark: ${CLIENTS} clients (raw WebSocket, vsn 2.0.0, role anon) over ${DEVICES} device filters`);
  say(`each insert reaches ${CLIENTS / DEVICES} subscribers; p99 goal ${P99_GOAL_MS} ms; server ${binary}`);
  say(`mg_bess_readings before: ${before.rows} rows, ${before.size}`);
  const results = {};
  for (const mode of MODES) {
    results[mode] = await runMode(mode, devices);
    const after = await size();
    say(`mg_bess_readings now: ${after.rows} rows, ${after.size}`);
    await clearReadings(devices);
  }
  const [base, ours] = [results['per-subscriber'], results.grouped];
  if (base && ours) {
    say('\n== grouped vs per-subscriber (baseline, same run) ==');
    say(`at ${STEADY_RATE} inserts/s: p50 ${fmt(base.steady.p50)} -> ${fmt(ours.steady.p50)}, p99 ${fmt(base.steady.p99)} -> ${fmt(ours.steady.p99)} ` +
        `(${(base.steady.p99 / ours.steady.p99).toFixed(1)}x lower p99)`);
    const rate = (r) => r.best?.rate ?? 0;
    say(`highest rate with p99 < ${P99_GOAL_MS} ms: ${rate(base)}/s -> ${rate(ours)}/s ` +
        `(${rate(base) ? `${(rate(ours) / rate(base)).toFixed(1)}x` : 'baseline sustains none of the steps'})`);
  }
  await db.end();
}

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));
await main();
