// Realtime benchmark, in phases (--phases, all by default), each against a baseline measured in
// the same run:
//   idle       CPU of the server and its database backends with nothing changing, against the
//              old design's 100 ms polling of pg_logical_slot_get_changes;
//   broadcast  send -> receive latency of a 100/s broadcast fanned out to 1,000 clients,
//              against the same with one client;
//   changes    insert -> callback latency of postgres_changes with 100 clients over 20 device
//              filters, and the highest insert rate whose p99 stays under 100 ms, for the
//              server's grouped RLS check against the per-subscriber check Supabase's does;
//   big        the server's memory growth during a 5M-row transaction, and the delay of the
//              change committed right after it, against a 1M-row transaction.
// README.md beside this file says how to run it and what it measures.
//
// It starts its own flux-realtime (one per phase, and per mode of `changes`) against the running
// stack's database, so the stack's server, if any, is left alone.
import { execFileSync, spawn } from 'node:child_process';
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
const WebSocket = createRequire(requireFrom)('ws');

const arg = (name, fallback) => {
  const hit = process.argv.find((a) => a.startsWith(`--${name}=`));
  return hit ? hit.slice(name.length + 3) : fallback;
};
const PHASES = arg('phases', 'idle,broadcast,changes,big').split(',');
const CLIENTS = Number(arg('clients', 100));
const DEVICES = Number(arg('devices', 20));
const STEADY_RATE = Number(arg('rate', 1000));
const STEADY_SECONDS = Number(arg('seconds', 10));
const STEP_SECONDS = Number(arg('step-seconds', 5));
const P99_GOAL_MS = 100;
const RAMP = [100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 8000, 10000];
const MODES = arg('modes', 'per-subscriber,grouped').split(',');
const IDLE_SECONDS = Number(arg('idle-seconds', 60));
const IDLE_GOAL_PERCENT = 0.5;
const POLL_MS = 100; // the old design's polling interval
const BROADCAST_CLIENTS = Number(arg('broadcast-clients', 1000));
const BROADCAST_RATE = Number(arg('broadcast-rate', 100));
const BROADCAST_SECONDS = Number(arg('broadcast-seconds', 10));
const BROADCAST_GOAL_MS = 50;
const BIG_ROWS = Number(arg('big-rows', 5_000_000));
const BIG_BASELINE_ROWS = 1_000_000;
const BIG_GOAL_MB = 256;
const WORKERS = 2;
const DRAIN_STALL_MS = 30_000;
const SERVER_LOG = arg('server-log', null); // file to append the servers' stderr to

for (const p of PHASES) if (!['idle', 'broadcast', 'changes', 'big'].includes(p)) throw new Error(`unknown phase ${p}`);

const home = process.env.FLUX_HOME ?? join(root, '.flux');
const env = Object.fromEntries(
  readFileSync(join(home, 'stack.env'), 'utf8')
    .split('\n')
    .filter((l) => l.includes('='))
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
);
const binary = process.env.FLUX_REALTIME_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'release', 'flux-realtime');

// Every benchmark client comes from 127.0.0.1, and the fan-out sends 100,000 events/s: the
// server's per-address connection limit and event ceilings would measure themselves, not it.
// The sender's messages/s limit (100 by default) is raised only for a faster --broadcast-rate.
const LIMITS = {
  FLUX_REALTIME_CLIENT_CONNECTIONS: String(Math.max(CLIENTS, BROADCAST_CLIENTS) + 10),
  FLUX_REALTIME_EVENTS_PER_SECOND: '10000000',
  FLUX_REALTIME_ROLE_EVENTS_PER_SECOND: 'anon=10000000',
  ...(BROADCAST_RATE > 100 && { FLUX_REALTIME_MESSAGES_PER_SECOND: String(BROADCAST_RATE) }),
};

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

async function benchDevices(names) {
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

const tableSize = async () =>
  (
    await db.query(`SELECT (SELECT count(*) FROM flux.mg_bess_readings)::int AS rows,
                           pg_size_pretty((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('flux.mg_bess_readings'))) AS size`)
  ).rows[0];

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

async function startServer(mode = 'grouped') {
  const port = await freePort();
  const server = spawn(binary, [], {
    env: {
      ...process.env,
      ...LIMITS,
      FLUX_REALTIME_LISTEN: `127.0.0.1:${port}`,
      FLUX_DB_URL: env.FLUX_DB_URL,
      FLUX_JWT_SECRET: env.FLUX_JWT_SECRET,
      FLUX_REALTIME_RLS_CHECK: mode,
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
  const stop = async () => {
    server.kill('SIGTERM');
    await new Promise((r) => (server.exitCode === null ? server.once('exit', r) : r()));
    await dropBenchSlot();
    if (/dispatch: batch dropped|disconnecting/.test(log)) say(`server log:\n${log}`);
  };
  for (let i = 0; i < 150; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).status === 200) return { pid: server.pid, port, stop };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  server.kill();
  throw new Error(`flux-realtime (${binary}) did not become healthy:\n${log}`);
}

/** Connects `clients` ({ topic, device? }, see clients.mjs) over the worker threads. */
async function startClients(port, clients) {
  const latencies = new Map(); // phase -> number[]
  const system = []; // the servers' system error messages
  const workers = [];
  for (let w = 0; w < Math.min(WORKERS, clients.length); w++) {
    const worker = new Worker(join(here, 'clients.mjs'), {
      workerData: {
        requireFrom,
        url: `ws://127.0.0.1:${port}/websocket`,
        key: env.FLUX_ANON_KEY,
        clients: clients.filter((_, i) => i % WORKERS === w),
      },
    });
    const ready = new Promise((resolve, reject) => {
      worker.on('error', reject);
      worker.on('message', (msg) => {
        if (msg.ready) resolve();
        if (msg.system) system.push(msg.system);
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
    system,
    stop: () => Promise.all(workers.map(({ worker }) => new Promise((r) => worker.once('exit', r).postMessage('stop')))),
  };
}

/**
 * Waits for `expected` deliveries of `key`: a server that falls behind delivers the backlog
 * late (and that lateness is what is measured), so the wait only gives up after `stallMs`
 * without any delivery. Returns the latencies, sorted.
 */
async function drain(clients, key, expected, stallMs = DRAIN_STALL_MS) {
  let last = -1;
  let stalledSince = now();
  for (;;) {
    const got = clients.latencies.get(key)?.length ?? 0;
    if (got >= expected) break;
    if (got !== last) {
      last = got;
      stalledSince = now();
    } else if (now() - stalledSince > stallMs) break;
    await sleep(100);
  }
  return (clients.latencies.get(key) ?? []).slice().sort((a, b) => a - b);
}

const stats = (values) => ({ delivered: values.length, p50: percentile(values, 50), p99: percentile(values, 99), max: values.at(-1) ?? NaN });
const fmt = (ms) => (Number.isFinite(ms) ? (ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${ms.toFixed(1)} ms`) : 'n/a');
const ratio = (a, b) => (b > 0 ? `${(a / b).toFixed(1)}x` : 'n/a');
const verdict = (ok) => (ok ? 'goal met' : 'GOAL NOT MET');

// ---- changes: postgres_changes latency, grouped vs per-subscriber RLS check ----

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

/** Runs one measured phase and waits for its deliveries. */
async function phase(id, rate, seconds, devices, clients) {
  const { sent, seconds: took } = await insertAt(rate, seconds, id, devices);
  const expected = sent * (CLIENTS / devices.length);
  return { rate, achieved: sent / took, expected, ...stats(await drain(clients, id, expected)) };
}

const line = (r) =>
  `${String(r.rate).padStart(6)}/s (achieved ${r.achieved.toFixed(0).padStart(5)}/s)  p50 ${fmt(r.p50).padStart(9)}  ` +
  `p99 ${fmt(r.p99).padStart(9)}  max ${fmt(r.max).padStart(9)}  delivered ${r.delivered}/${r.expected}`;
const sustained = (r) => r.delivered === r.expected && r.p99 < P99_GOAL_MS && r.achieved >= r.rate * 0.95;

async function runMode(mode, devices) {
  say(`\n-- ${mode} RLS check --`);
  const server = await startServer(mode);
  let clients;
  try {
    const subscribers = Array.from({ length: CLIENTS }, (_, i) => ({ topic: `realtime:bench-${i}`, device: devices[i % devices.length] }));
    clients = await startClients(server.port, subscribers);
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
    await server.stop();
  }
}

async function changes() {
  const names = Array.from({ length: DEVICES }, (_, i) => `BENCH-RT-${String(i).padStart(2, '0')}`);
  const devices = await benchDevices(names);
  await clearReadings(devices);
  const before = await tableSize();
  say(`\n== changes: ${CLIENTS} clients over ${DEVICES} device filters (each insert reaches ${CLIENTS / DEVICES}), ` +
      `${STEADY_RATE} inserts/s for ${STEADY_SECONDS} s, then the ramp; p99 goal ${P99_GOAL_MS} ms ==`);
  say(`mg_bess_readings before: ${before.rows} rows, ${before.size}`);
  const results = {};
  for (const mode of MODES) {
    results[mode] = await runMode(mode, devices);
    const after = await tableSize();
    say(`mg_bess_readings now: ${after.rows} rows, ${after.size}`);
    await clearReadings(devices);
  }
  const ours = results.grouped;
  if (ours) say(`grouped at ${STEADY_RATE} inserts/s: p99 ${fmt(ours.steady.p99)} (${verdict(sustained(ours.steady))})`);
  const base = results['per-subscriber'];
  if (base && ours) {
    say(`grouped vs per-subscriber (baseline, same run) at ${STEADY_RATE} inserts/s: p50 ${fmt(base.steady.p50)} -> ${fmt(ours.steady.p50)}, ` +
        `p99 ${fmt(base.steady.p99)} -> ${fmt(ours.steady.p99)} (${ratio(base.steady.p99, ours.steady.p99)} lower p99)`);
    const rate = (r) => r.best?.rate ?? 0;
    say(`highest rate with p99 < ${P99_GOAL_MS} ms: ${rate(base)}/s -> ${rate(ours)}/s ` +
        `(${rate(base) ? ratio(rate(ours), rate(base)) : 'baseline sustains none of the steps'})`);
  }
}

// ---- idle: CPU with nothing changing, streaming vs polling ----

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
/** CPU seconds (user + system) process `pid` has used; all its threads for a process. */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd, state
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime: fields 14 and 15
}
/** Percent of one core `pids` use together over `seconds`. */
async function cpuPercent(pids, seconds) {
  const total = () => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  const start = total();
  await sleep(seconds * 1000);
  return ((total() - start) / seconds) * 100;
}

const realtimeBackends = async () =>
  (await db.query("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'flux-realtime%'")).rows.map((r) => r.pid);

async function idle() {
  say(`\n== idle: CPU over ${IDLE_SECONDS} s with nothing changing (1 subscriber joined); goal < ${IDLE_GOAL_PERCENT} % of a core ==`);
  // The bench server's backends are those of application flux-realtime that appear with it
  // (the stack's own server has some too): its walsender and its query pool.
  const others = new Set(await realtimeBackends());
  const server = await startServer();
  const [device] = await benchDevices(['BENCH-RT-00']);
  const clients = await startClients(server.port, [{ topic: 'realtime:bench-idle', device }]);
  let ours;
  try {
    await sleep(2000); // start-up work (catalog, first status updates) is not idling
    const backends = (await realtimeBackends()).filter((pid) => !others.has(pid));
    ours = await cpuPercent([server.pid, ...backends], IDLE_SECONDS);
    say(`streaming (flux-realtime + ${backends.length} backends, walsender included): ${ours.toFixed(3)} % of a core (${verdict(ours < IDLE_GOAL_PERCENT)})`);
  } finally {
    await clients.stop();
    await server.stop();
  }
  // The old design: a temporary wal2json slot polled every 100 ms over one connection. Only
  // its backend is measured, not the poller's own process, which favours the baseline.
  const poller = new pg.Client({ connectionString: env.FLUX_DB_URL });
  await poller.connect();
  try {
    const slot = `flux_realtime_bench_poll_${process.pid}`;
    // As the old server readied its session: this PostgreSQL loads only the output plugins
    // listed in output_plugin_libraries, and each call would log two lines.
    await poller.query(`SELECT set_config('output_plugin_libraries', current_setting('output_plugin_libraries') || ', wal2json', false)
                        WHERE current_setting('output_plugin_libraries', true) IS NOT NULL`);
    await poller.query('SET log_min_messages = fatal');
    await poller.query("SELECT pg_create_logical_replication_slot($1, 'wal2json', true)", [slot]);
    const pid = (await poller.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    let polling = true;
    const loop = (async () => {
      while (polling) {
        await poller.query(
          "SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL, 'format-version', '2', 'add-tables', 'flux.mg_bess_readings')",
          [slot],
        );
        await sleep(POLL_MS);
      }
    })();
    await sleep(2000);
    const base = await cpuPercent([pid], IDLE_SECONDS);
    polling = false;
    await loop;
    say(`polling every ${POLL_MS} ms (baseline, its backend only): ${base.toFixed(3)} % of a core`);
    say(`streaming / polling: ${ratio(ours, base)} (${ratio(base, ours)} less CPU)`);
  } finally {
    await poller.end(); // the temporary slot goes with the session
  }
}

// ---- broadcast: fan-out latency, N clients vs 1 ----

/** One client joined to `topic` that pushes `tick` broadcasts (text, as vsn 2 allows). */
async function sender(port, topic) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/websocket?apikey=${env.FLUX_ANON_KEY}&vsn=2.0.0`);
  await new Promise((resolve, reject) => {
    ws.on('error', reject);
    ws.on('open', () => ws.send(JSON.stringify(['1', '1', topic, 'phx_join', { config: { broadcast: { self: false } }, access_token: env.FLUX_ANON_KEY }])));
    ws.on('message', (data) => {
      const [, ref, , event, payload] = JSON.parse(data);
      if (event === 'phx_reply' && ref === '1') (payload.status === 'ok' ? resolve : reject)(payload);
    });
  });
  let ref = 1;
  return {
    send: () => ws.send(JSON.stringify(['1', String(++ref), topic, 'broadcast', { type: 'broadcast', event: 'tick', payload: { sent: now() } }])),
    close: () => ws.close(),
  };
}

async function fanOut(server, n) {
  const topic = `realtime:bench-broadcast-${n}`;
  const clients = await startClients(server.port, Array.from({ length: n }, () => ({ topic })));
  const push = await sender(server.port, topic);
  try {
    await sleep(1000); // let the joins' work settle
    const started = now();
    // Where the time goes: the server and the clients (this process) share the machine.
    const [serverCpu, clientCpu] = [cpuSeconds(server.pid), process.cpuUsage()];
    let sent = 0;
    while (now() - started < BROADCAST_SECONDS * 1000) {
      for (const due = Math.floor(((now() - started) / 1000) * BROADCAST_RATE); sent < due; sent++) push.send();
      await sleep(2);
    }
    const expected = n * sent;
    const r = stats(await drain(clients, topic, expected, 5000));
    const took = (now() - started) / 1000;
    const cpu = (seconds) => `${((seconds / took) * 100).toFixed(0)} %`;
    const { user, system } = process.cpuUsage(clientCpu);
    say(`${String(n).padStart(5)} clients × ${sent} messages: p50 ${fmt(r.p50)}  p99 ${fmt(r.p99)}  max ${fmt(r.max)}  ` +
        `delivered ${r.delivered}/${expected}${r.delivered < expected ? ` (${expected - r.delivered} missing)` : ''}; ` +
        `CPU server ${cpu(cpuSeconds(server.pid) - serverCpu)}, clients ${cpu((user + system) / 1e6)} of a core`);
    return { ...r, expected };
  } finally {
    push.close();
    await clients.stop();
  }
}

async function broadcast() {
  say(`\n== broadcast: ${BROADCAST_RATE} messages/s for ${BROADCAST_SECONDS} s to one channel (self: false); goal p99 < ${BROADCAST_GOAL_MS} ms ==`);
  const server = await startServer();
  try {
    const base = await fanOut(server, 1);
    const ours = await fanOut(server, BROADCAST_CLIENTS);
    const ok = ours.p99 < BROADCAST_GOAL_MS && ours.delivered === ours.expected;
    say(`p99 ${BROADCAST_CLIENTS} clients / 1 client (baseline): ${ratio(ours.p99, base.p99)} (${verdict(ok)})`);
  } finally {
    await server.stop();
  }
}

// ---- big: one huge transaction, memory and the change after it ----

const rssMb = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
/** Inserts one row for `device` stamped `stamp` (ms) and waits for its delivery: ms since `stamp`. */
async function deliverOne(clients, device, stamp) {
  await db.query(
    'INSERT INTO flux.mg_bess_readings (device_id, time, soe, target_power, command_source) VALUES ($1, now(), 50, $2, 1)',
    [device, stamp % 1e8],
  );
  for (const deadline = now() + 600_000; now() < deadline; await sleep(20)) {
    const got = clients.latencies.get(1);
    if (got) return got[0];
  }
  throw new Error('the change after the transaction did not arrive within 600 s');
}

/**
 * One `rows`-row transaction on a fresh server (its memory grows from its idle level, not from
 * what an earlier transaction left in its allocator), with one subscriber of another device.
 */
async function bigTransaction(small, big, rows) {
  const server = await startServer();
  const clients = await startClients(server.port, [{ topic: 'realtime:bench-big', device: small }]);
  const before = rssMb(server.pid);
  let peak = before;
  const sampler = setInterval(() => {
    peak = Math.max(peak, rssMb(server.pid));
  }, 200);
  try {
    const t0 = now();
    // 1 ms apart from midnight UTC on: today's partition, which the maintenance leaves alone
    // (rows in the default partition would be moved to a new one, another huge transaction).
    await db.query(
      `INSERT INTO flux.mg_bess_readings (device_id, time, soe)
       SELECT $1, date_trunc('day', now(), 'UTC') + g * interval '1 millisecond', 50 FROM generate_series(1, $2::int) g`,
      [big, rows],
    );
    const committed = now();
    const delay = await deliverOne(clients, small, committed);
    const r = { rows, growth: peak - before, delay, system: clients.system };
    say(`${rows.toLocaleString('en')} rows (INSERT took ${fmt(committed - t0)}): RSS ${before.toFixed(0)} MB -> peak ${peak.toFixed(0)} MB ` +
        `(+${r.growth.toFixed(0)} MB); next change delivered ${fmt(delay)} after the commit`);
    say(`  server said: ${clients.system.join(' | ') || 'nothing'}`);
    return r;
  } finally {
    clearInterval(sampler);
    await clients.stop();
    await server.stop();
    await clearReadings([big, small]); // the partitions must not keep millions of rows
  }
}

async function bigPhase() {
  say(`\n== big: one INSERT … SELECT into mg_bess_readings, 1 subscriber joined; goal RSS growth < ${BIG_GOAL_MB} MB ==`);
  const [big, small] = await benchDevices(['BENCH-RT-BIG', 'BENCH-RT-SMALL']);
  const base = await bigTransaction(small, big, BIG_BASELINE_ROWS);
  const ours = await bigTransaction(small, big, BIG_ROWS);
  say(`${BIG_ROWS.toLocaleString('en')} / ${BIG_BASELINE_ROWS.toLocaleString('en')} rows (baseline): RSS growth ${ratio(ours.growth, base.growth)}, ` +
      `delay ${ratio(ours.delay, base.delay)} (${verdict(ours.growth < BIG_GOAL_MB)})`);
  const after = await tableSize();
  say(`mg_bess_readings after clean-up: ${after.rows} rows, ${after.size} (VACUUM leaves index pages for reuse)`);
}

async function main() {
  say(`flux-realtime benchmark: server ${binary}; clients speak raw WebSocket vsn 2.0.0 with the anon key`);
  say(`limits raised for the benchmark: ${Object.entries(LIMITS).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  const run = { idle, broadcast, changes, big: bigPhase };
  for (const p of PHASES) await run[p]();
  await db.end();
}

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));
await main();
