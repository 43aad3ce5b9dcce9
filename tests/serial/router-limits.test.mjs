// The router's limits per client address: open connections (idle and half-open ones count,
// and are closed after the header timeout) and request rate. Each test is a client of its own
// loopback address; the stack's other clients (127.0.0.1) must not notice. Serial: it loads
// the router on purpose.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { Agent, request } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, closeSql, env, home } from '../e2e/lib.mjs';

after(closeSql);

const routerEnv = Object.fromEntries(readFileSync(join(home, 'conf', 'router.env'), 'utf8')
  .split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
const setting = (name, fallback) => Number(routerEnv[name] ?? fallback);
const router = new URL(env.FLUX_URL);

const timed = async (call) => {
  const started = Date.now();
  const res = await call();
  return { res, seconds: (Date.now() - started) / 1000 };
};

test('idle connections from one address are capped and closed; other clients are served', async () => {
  const perClient = setting('FLUX_ROUTER_CLIENT_CONNECTIONS', 1024);
  const headerTimeout = setting('FLUX_ROUTER_HEADER_TIMEOUT_S', 10);
  const extra = 40;
  const opened = Date.now();
  const sockets = await Promise.all(Array.from({ length: perClient + extra }, () => new Promise((resolve) => {
    const s = connect({ host: router.hostname, port: router.port, localAddress: '127.0.0.2' });
    const state = { data: '', closedAt: null };
    s.on('data', (d) => { state.data += d; });
    s.on('close', () => { state.closedAt = Date.now(); });
    s.on('error', () => {});
    s.on('connect', () => resolve(state));
  })));
  await new Promise((r) => setTimeout(r, 1000));
  const refused = sockets.filter((s) => s.data !== '');
  assert.equal(refused.length, extra, 'exactly the connections beyond the share are refused');
  for (const s of refused) {
    assert.match(s.data, /^HTTP\/1\.1 429 /);
    assert.equal(JSON.parse(s.data.slice(s.data.indexOf('\r\n\r\n') + 4)).code, 'PT429');
    assert.ok(s.closedAt !== null);
  }
  // Meanwhile another address gets its answer at once.
  const { res, seconds } = await timed(() => api('/market_data?limit=1'));
  assert.equal(res.status, 200);
  assert.ok(seconds < 1, `${seconds} s`);
  // The idle ones are closed once they have sent no request for the header timeout.
  const deadline = opened + (headerTimeout + 5) * 1000;
  while (sockets.some((s) => s.closedAt === null) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  const held = sockets.filter((s) => s.data === '');
  assert.ok(held.every((s) => s.closedAt !== null), `${held.filter((s) => s.closedAt === null).length} idle connections still open`);
  assert.ok(held.every((s) => s.closedAt - opened >= (headerTimeout - 1) * 1000), 'not before the timeout');
});

test('one address has a request rate; others are unaffected', async () => {
  const rate = setting('FLUX_ROUTER_CLIENT_RATE', 500);
  const burst = setting('FLUX_ROUTER_CLIENT_BURST', 1000);
  const agent = new Agent({ keepAlive: true, maxSockets: 64, localAddress: '127.0.0.3' });
  const get = () => new Promise((resolve, reject) => {
    const req = request({ host: router.hostname, port: router.port, path: '/rest/v1/market_data?limit=1', agent }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, retryAfter: res.headers['retry-after'], body }));
    });
    req.on('error', reject);
    req.end();
  });
  const n = burst * 4;
  const started = Date.now();
  const results = await Promise.all(Array.from({ length: n }, get));
  const seconds = (Date.now() - started) / 1000;
  agent.destroy();
  const limited = results.filter((r) => r.status === 429);
  const passed = results.filter((r) => r.status === 401); // no key: past the rate, refused next
  assert.equal(limited.length + passed.length, n);
  assert.ok(limited.length > 0, `nothing limited in ${seconds} s`);
  assert.ok(passed.length <= burst + rate * seconds + 1, `${passed.length} passed in ${seconds} s`);
  assert.equal(JSON.parse(limited[0].body).code, 'PT429');
  assert.ok(Number(limited[0].retryAfter) >= 1);
  assert.equal((await api('/market_data?limit=1')).status, 200, 'another address is served');
});

test('a body that stalls is answered 408 after the body timeout, and the connection closed', async () => {
  const bodyTimeout = setting('FLUX_ROUTER_BODY_TIMEOUT_S', 10);
  const started = Date.now();
  const answer = await new Promise((resolve, reject) => {
    const s = connect({ host: router.hostname, port: router.port, localAddress: '127.0.0.3' });
    let data = '';
    s.on('data', (d) => { data += d; });
    s.on('close', () => resolve({ data, closedAt: Date.now() }));
    s.on('error', reject);
    s.on('connect', () => s.write(`POST /rest/v1/mg_meter_readings HTTP/1.1\r\nHost: ${router.host}\r\napikey: ${env.FLUX_SERVICE_ROLE_KEY}\r\n`
      + 'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{"device_id":'));
  });
  assert.match(answer.data, /^HTTP\/1\.1 408 /);
  assert.equal(JSON.parse(answer.data.slice(answer.data.indexOf('\r\n\r\n') + 4)).code, 'PT408');
  const waited = (answer.closedAt - started) / 1000;
  assert.ok(waited >= bodyTimeout - 1 && waited < bodyTimeout + 5, `answered after ${waited} s`);
});
