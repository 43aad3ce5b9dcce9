// The realtime change feed under load and failure: a million-row transaction keeps the server's
// memory within its bound and does not hold up a change committed after it; a kill -9 of the
// server mid-stream loses its clients only until they reconnect, and delivers nothing twice.
// Serial: it loads the database and kills the stack's realtime server.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { env, home, anonKey, registerDevice, service, sql, closeSql, sleep } from '../e2e/lib.mjs';
import { Client, flavors, rawSubscriber } from '../e2e/realtime/harness.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const fluxUp = () => promisify(execFile)(join(root, 'stack', 'up.sh'), { env: { ...process.env, FLUX_QUIET: '1' }, timeout: 600_000 });
const realtimePid = () => Number(readFileSync(join(home, 'run', 'realtime.pid'), 'utf8').trim());
const rssMb = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;

after(closeSql);

test('a 1M-row transaction: the server stays within 256 MB more memory, and the next change still arrives', async () => {
  const big = await registerDevice({ type: 'bess' });
  const small = await registerDevice({ type: 'bess' });
  const client = await rawSubscriber(small.id, { topic: 'feed' });
  const pid = realtimePid();
  const before = rssMb(pid);
  let peak = before;
  const sampler = setInterval(() => { peak = Math.max(peak, rssMb(pid)); }, 100);
  try {
    // One statement, one transaction, a million rows (1 ms apart, within today's partitions).
    await sql(`INSERT INTO flux.mg_bess_readings (device_id, time, soe)
               SELECT $1, now() - interval '30 minutes' + g * interval '1 millisecond', 50
               FROM generate_series(1, 1000000) g`, [big.id]);
    const committed = Date.now();
    const res = await service('/mg_bess_readings', { method: 'POST', body: { device_id: small.id, time: new Date().toISOString(), soe: 42 } });
    assert.equal(res.status, 201);
    for (const deadline = Date.now() + 120_000; !client.inbox.some(({ m }) => m[3] === 'postgres_changes'); await sleep(50)) {
      assert.ok(Date.now() < deadline, 'the change after the big transaction never arrived');
    }
    const delay = client.inbox.find(({ m }) => m[3] === 'postgres_changes').at - committed;
    const notice = client.inbox.find(({ m }) => m[3] === 'system' && m[4].status === 'error');
    assert.match(notice.m[4].message, /^900000 changes to mg_bess_readings of one transaction were not delivered: a transaction delivers at most 100000$/);
    console.log(`# 1M-row transaction: realtime RSS ${before.toFixed(0)} MB -> peak ${peak.toFixed(0)} MB; the next change arrived ${delay} ms after the big commit`);
    assert.ok(peak - before < 256, `RSS grew by ${(peak - before).toFixed(0)} MB`);
  } finally {
    clearInterval(sampler);
    client.ws.close();
    await sql('DELETE FROM flux.mg_bess_readings WHERE device_id = $1', [big.id]);
  }
});

/** A raw vsn 2 client that reconnects and re-joins by itself, as a gateway's own code would. */
function reconnecting(deviceId) {
  const times = [];
  let ws;
  let stopped = false;
  const open = () => {
    ws = new WebSocket(`${env.FLUX_REALTIME_URL}/websocket?apikey=${anonKey}&vsn=2.0.0`);
    ws.on('open', () => {
      const binding = { event: 'INSERT', schema: 'flux', table: 'mg_bess_readings', filter: `device_id=eq.${deviceId}` };
      ws.send(JSON.stringify(['1', '1', 'realtime:kill-raw', 'phx_join', { config: { postgres_changes: [binding] } }]));
    });
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (m[3] === 'postgres_changes') times.push(m[4].data.record.time);
    });
    ws.on('error', () => {});
    ws.on('close', () => { if (!stopped) setTimeout(open, 300); });
  };
  open();
  return { name: 'raw vsn 2.0.0 client', times, close: () => { stopped = true; ws.close(); } };
}

test('kill -9 of the realtime server mid-stream: clients reconnect and nothing is delivered twice', async (t) => {
  t.after(fluxUp); // whatever happens, the stack is whole again
  const device = await registerDevice({ type: 'bess' });
  const js = new Client(flavors[0], anonKey);
  const js2 = new Client(flavors[1], anonKey);
  const raw = reconnecting(device.id);
  let writing = true;
  const acknowledged = [];
  const writer = (async () => {
    for (let n = 0; writing; n++) {
      const time = new Date(Date.parse('2033-01-01T00:00:00Z') + n * 1000).toISOString();
      const res = await service('/mg_bess_readings', { method: 'POST', body: { device_id: device.id, time, soe: 50 } });
      if (res.status === 201) acknowledged.push(time.replace('.000Z', '+00:00'));
      await sleep(50);
    }
  })();
  try {
    const binding = [{ event: 'INSERT', schema: 'flux', table: 'mg_bess_readings', filter: `device_id=eq.${device.id}` }];
    await js.subscribe('k', `kill-${device.id.slice(0, 8)}`, binding);
    await js2.subscribe('k', `kill2-${device.id.slice(0, 8)}`, binding);
    const received = () => [js, js2].map((c) => c.changes('k').map((e) => e.payload.new.time)).concat([raw.times]);
    await sleep(1500);
    process.kill(realtimePid(), 'SIGKILL');
    await sleep(500);
    await fluxUp();
    // Both clients come back by themselves and get changes again.
    const since = acknowledged.length;
    for (const deadline = Date.now() + 60_000; ; await sleep(200)) {
      const after = acknowledged.slice(since);
      if (after.length > 20 && received().every((times) => after.slice(-5).some((a) => times.includes(a)))) break;
      assert.ok(Date.now() < deadline, `the clients did not get changes again after the restart: ${received().map((x) => x.length)}`);
    }
    writing = false;
    await writer;
    await sleep(1000);
    for (const [name, times] of [['supabase-js 2.90', received()[0]], ['supabase-js 2.119', received()[1]], [raw.name, received()[2]]]) {
      assert.equal(new Set(times).size, times.length, `${name}: a change was delivered twice`);
      assert.ok(times.every((x) => acknowledged.includes(x)), `${name}: a change that was never acknowledged`);
    }
  } finally {
    writing = false;
    await writer;
    raw.close();
    await Promise.all([js.close(), js2.close()]);
  }
});

/** A second realtime server on the stack's database whose feed cannot start: the stack's server holds its slot. */
async function serverWithoutFeed() {
  const port = await new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port: p } = s.address();
      s.close(() => resolve(p));
    });
  });
  const server = spawn(join(home, 'bin', 'flux-realtime'), [], {
    env: { ...process.env, FLUX_REALTIME_LISTEN: `127.0.0.1:${port}`, FLUX_DB_URL: env.FLUX_DB_URL, FLUX_JWT_SECRET: env.FLUX_JWT_SECRET, FLUX_REALTIME_SLOT: 'flux_realtime' },
    stdio: 'ignore',
  });
  for (const deadline = Date.now() + 10_000; ; await sleep(100)) {
    const res = await fetch(`http://127.0.0.1:${port}/health`).catch(() => null);
    if (res?.status === 503) break; // listening, feed down
    assert.ok(Date.now() < deadline, 'the second server did not start');
  }
  return { url: `http://127.0.0.1:${port}`, stop: () => server.kill('SIGTERM') };
}

test('postgres_changes_options.wait: SUBSCRIBED once changes flow, or PostgresChangesSubscribeTimeout', async () => {
  const device = await registerDevice({ type: 'bess' });
  const bindings = [{ event: 'INSERT', schema: 'flux', table: 'mg_bess_readings', filter: `device_id=eq.${device.id}` }];
  const wait = { postgres_changes_options: { wait: true, timeout: 1000 } };
  // The stack's server streams: the wait ends at once, and changes arrive.
  const ok = new Client(flavors[1], anonKey);
  const second = await serverWithoutFeed();
  const stalled = new Client(flavors[1], anonKey, undefined, second.url);
  const plain = new Client(flavors[1], anonKey, undefined, second.url);
  try {
    await ok.join('w', `wait-${device.id.slice(0, 8)}`, wait, bindings);
    await service('/mg_bess_readings', { method: 'POST', body: { device_id: device.id, time: new Date().toISOString(), soe: 50 } });
    await ok.waitFor((e) => e.type === 'change' && e.id === 'w', 'the change');
    // A server whose feed is down: with wait, the join is refused after the timeout...
    const started = Date.now();
    await assert.rejects(stalled.join('s', 'wait-stalled', wait, bindings), /CHANNEL_ERROR: PostgresChangesSubscribeTimeout: the change feed did not stream within 1000 ms/);
    assert.ok(Date.now() - started >= 1000);
    // ...without it, it is accepted at once, as Supabase does.
    await plain.join('p', 'wait-plain', {}, bindings);
  } finally {
    await Promise.all([ok.close(), stalled.close(), plain.close()]);
    second.stop();
  }
});
