// Failures of the stack's processes, mid-traffic: nothing acknowledged is lost, nothing is half
// stored, clients get clear errors rather than hangs, and `./flux up` brings back exactly
// what is missing. Serial: it kills the stack's processes (and brings them back).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { api, service, sql, closeSql, env, home, registerDevice, sleep, until } from '../e2e/lib.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

after(closeSql);

/** `./flux up` for the stack under test (the same settings test.sh brought it up with). */
const fluxUp = () => promisify(execFile)(join(root, 'stack', 'up.sh'), { env: { ...process.env, FLUX_QUIET: '1' }, timeout: 600_000 });

const pidOf = (name) => Number(readFileSync(join(home, 'run', `${name}.pid`), 'utf8').trim());
const postmaster = () => Number(readFileSync(join(home, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0]);

const restUp = async () => (await api('/market_data?limit=1')).status === 200;
const realtimeUp = async () => (await fetch(`${env.FLUX_URL}/realtime/v1/health`)).status === 200;

test('kill -9 of PostgreSQL during bulk ingest: every acknowledged batch is stored whole, none is half stored', async () => {
  const meter = await registerDevice({ type: 'meter' });
  const base = Date.parse('2031-01-01T00:00:00Z');
  const BATCH = 200;
  const batches = [];
  let stop = false;
  const client = async (c) => {
    for (let b = 0; !stop; b++) {
      const first = (c * 1_000_000 + b * BATCH) * 1000;
      const rows = Array.from({ length: BATCH }, (_, i) => ({
        device_id: meter.id, time: new Date(base + first + i * 1000).toISOString(), power_total_active: i, energy_imported_active: 1000 + i,
      }));
      const started = Date.now();
      let status;
      let code;
      let answer;
      try {
        const res = await service('/mg_meter_readings', { method: 'POST', body: rows });
        status = res.status;
        code = res.body?.code;
        answer = JSON.stringify(res.body)?.slice(0, 300);
      } catch (e) {
        status = `error ${e.cause?.code ?? e.message}`;
      }
      batches.push({ from: rows[0].time, to: rows[BATCH - 1].time, status, code, answer, started, ms: Date.now() - started });
      if (typeof status !== 'number' || status >= 500) await sleep(100);
    }
  };
  const clients = [0, 1, 2, 3].map(client);
  const daemons = () => ({ postgrest: pidOf('postgrest'), realtime: pidOf('realtime'), router: pidOf('router') });
  const before = daemons();
  await sleep(2000);
  process.kill(postmaster(), 'SIGKILL');
  await sleep(3000);
  await fluxUp();
  await until('the REST API answers again', restUp);
  const recovered = Date.now();
  await sleep(2000);
  stop = true;
  await Promise.all(clients);

  const acknowledged = batches.filter((b) => b.status === 201);
  assert.ok(acknowledged.length > 10, `${acknowledged.length} batches acknowledged`);
  assert.ok(acknowledged.some((b) => b.started > recovered), 'ingest resumed after the restart');
  const failed = batches.filter((b) => b.status !== 201);
  assert.ok(failed.length > 0, 'some requests met the dead database');
  for (const b of failed) {
    assert.ok(typeof b.status === 'number' && b.status >= 500, `a clear 5xx, not ${b.status} ${b.answer}`);
    assert.ok(b.code, 'with a JSON error body');
  }
  assert.ok(batches.every((b) => b.ms < 15_000), `no request hung (longest ${Math.max(...batches.map((b) => b.ms))} ms)`);
  // Every batch is all or nothing; every acknowledged one is all.
  for (const b of batches) {
    const [{ n }] = await sql('SELECT count(*)::int AS n FROM flux.mg_meter_readings WHERE device_id = $1 AND time BETWEEN $2 AND $3', [meter.id, b.from, b.to]);
    if (b.status === 201) assert.equal(n, BATCH, `acknowledged batch from ${b.from}`);
    else assert.ok(n === 0 || n === BATCH, `failed batch from ${b.from} is ${n} of ${BATCH} rows`);
  }
  await until('the realtime server streams again', realtimeUp);
  assert.deepEqual(daemons(), before, 'PostgREST, the realtime server and the router reconnected by themselves, not restarted');
});

test('a killed PostgREST or realtime server: the router answers JSON 503s (WebSockets wait), ./flux up restarts only them', async () => {
  const unchanged = { postgres: postmaster(), router: pidOf('router') };
  process.kill(pidOf('postgrest'), 'SIGKILL');
  process.kill(pidOf('realtime'), 'SIGKILL');
  await sleep(500);
  const rest = await api('/market_data?limit=1');
  assert.equal(rest.status, 503);
  assert.equal(rest.body.code, 'PT503');
  assert.match(rest.body.message, /PostgREST/);
  const health = await fetch(`${env.FLUX_URL}/realtime/v1/health`);
  assert.equal(health.status, 503);
  assert.equal((await health.json()).code, 'PT503');
  // A WebSocket upgrade waits for the realtime server to be back (FLUX_ROUTER_UPGRADE_WAIT_S)
  // rather than failing: Node 22's WebSocket never retries a failed handshake.
  const upgrade = new Promise((resolve, reject) => {
    const url = new URL(env.FLUX_URL);
    const req = request({
      host: url.hostname, port: url.port, path: `/realtime/v1/websocket?vsn=1.0.0&apikey=${env.FLUX_ANON_KEY}`,
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    });
    req.on('response', (res) => resolve(res.statusCode));
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('error', reject);
    req.end();
  });

  await fluxUp();
  assert.equal(await upgrade, 101, 'the upgrade made while the realtime server was down went through once it was back');
  assert.deepEqual({ postgres: postmaster(), router: pidOf('router') }, unchanged, 'PostgreSQL and the router kept running');
  await until('the REST API answers again', restUp);
  await until('the realtime server streams again', realtimeUp);
});
