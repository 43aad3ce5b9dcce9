// What a hostile review of 0.1.0 found, each as a regression test through the real stack:
// tokens without expiry, the internal signer, unreadable metadata, repeated api keys, oversized
// and keyless bodies, attacker text in errors and logs, time-zone errors.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import WebSocket from 'ws';
import {
  api, service, sql, closeSql, env, home, registerDevice, uuid, assertError, anonKey, serviceKey, signJwt, mintToken, uniqueName,
} from './lib.mjs';

after(closeSql);

test('a Bearer token without exp is refused, whatever its role', async () => {
  for (const role of ['anon', 'authenticated', 'service_role']) {
    const token = signJwt({ role, sub: uniqueName('eternal'), exp: undefined });
    const res = await api('/market_data?limit=1', { key: anonKey, headers: { Authorization: `Bearer ${token}` } });
    assertError(assert, res, 401, 'PGRST301');
    assert.equal(res.body.message, 'JWT has no exp claim', role);
    assert.match(res.headers.get('www-authenticate'), /^Bearer error="invalid_token"/);
  }
  // With exp, the same token is fine.
  const token = signJwt({ role: 'service_role', sub: uniqueName('mortal') });
  assert.equal((await api('/market_data?limit=1', { key: anonKey, headers: { Authorization: `Bearer ${token}` } })).status, 200);
});

test('there is no signer to call around flux.sign_jwt, and its checks hold for the service role', async () => {
  const direct = await sql(`
    SELECT to_regprocedure('flux_internal.jwt_sign(jsonb)') AS internal,
           has_function_privilege('service_role', 'flux.sign_jwt(jsonb, interval)', 'EXECUTE') AS service,
           has_function_privilege('anon', 'flux.sign_jwt(jsonb, interval)', 'EXECUTE') AS anon`);
  assert.deepEqual(direct, [{ internal: null, service: true, anon: false }]);
  const sign = (claims, valid_for) => service('/rpc/sign_jwt', { method: 'POST', body: { claims, ...(valid_for && { valid_for }) } });
  for (const [claims, validFor, message] of [
    [{ role: 'postgres' }, undefined, /claims.role must be anon, authenticated or service_role/],
    [{ role: 'service_role', exp: 99999999999 }, undefined, /must not set exp, iat or nbf/],
    [{ role: 'anon' }, '-1 hour', /valid_for must be a positive interval/],
    [['anon'], undefined, /claims must be a JSON object/],
  ]) {
    const res = await sign(claims, validFor);
    assertError(assert, res, 400, '22023');
    assert.match(res.body.message, message);
  }
  const ok = await sign({ role: 'authenticated', sub: 'gw-1', sites: ['WLCE'] }, '2 hours');
  assert.equal(ok.status, 200);
  const claims = JSON.parse(Buffer.from(ok.body.split('.')[1], 'base64url'));
  assert.equal(claims.exp - claims.iat, 7200);
  assert.equal(claims.sub, 'gw-1');
  assertError(assert, await api('/rpc/sign_jwt', { method: 'POST', body: { claims: { role: 'anon' } } }), 401, '42501');
});

test('registry metadata that cannot be read is a 400 with the reason, not a 500', async () => {
  const deep = JSON.parse(`{"nested": ${'['.repeat(1000)}1${']'.repeat(1000)}}`);
  const register = (metadata) =>
    service('/mg_device_registry', { method: 'POST', body: { name: uniqueName('META'), type: 'meter', site: 'WLCE', metadata } });
  const nested = await register(deep);
  assertError(assert, nested, 400, '23514');
  assert.match(nested.body.message, /nested at most 128 levels deep/);
  // 1e400 is valid JSON, and PostgreSQL's jsonb keeps it: the check says what is wrong with it.
  const huge = await service('/mg_device_registry', {
    method: 'POST',
    body: `{"name": "${uniqueName('META')}", "type": "meter", "site": "WLCE", "metadata": {"max_power_kw": 1e400}}`,
  });
  assertError(assert, huge, 400, '23514');
  assert.match(huge.body.message, /numbers lie within/);
  // Stored metadata is checked on update too; the device keeps its old one.
  const device = await registerDevice({ metadata: { max_power_kw: 50 } });
  const update = await service(`/mg_device_registry?id=eq.${device.id}`, {
    method: 'PATCH',
    body: '{"metadata": {"note": 1e400}}',
  });
  assertError(assert, update, 400, '23514');
  assert.deepEqual((await sql('SELECT metadata FROM flux.mg_device_registry WHERE id = $1', [device.id]))[0].metadata, { max_power_kw: 50 });
});

test('an api key given twice is refused without being echoed, and every apikey parameter is taken out', async () => {
  for (const [path, headers] of [
    [`/market_data?apikey=${anonKey}&apikey=${serviceKey}`, {}],
    [`/market_data?apikey=${anonKey}&APIKEY=${serviceKey}`, {}],
    [`/market_data?select=*;apikey=${serviceKey}`, { apikey: anonKey }],
    [`/market_data?api%6Bey=${serviceKey}`, { apikey: anonKey }],
  ]) {
    const res = await api(path, { key: null, headers });
    assertError(assert, res, 400, 'PT400');
    assert.ok(!JSON.stringify(res.body).includes(serviceKey.slice(-20)), `${path}: the key is not echoed`);
  }
  // The same key in the header and the parameter counts once.
  assert.equal((await api(`/market_data?limit=1&apikey=${anonKey}`, { key: null, headers: { apikey: anonKey } })).status, 200);
  // Any spelling of the parameter is a key, never a filter that PostgREST would echo.
  const res = await api(`/market_data?limit=1&ApiKey=${anonKey}`, { key: null });
  assert.equal(res.status, 200, JSON.stringify(res.body));
});

/** Sends `size` bytes of body with `headers`; resolves to the status and how long it took. */
function sendBody(headers, size) {
  const url = new URL(env.FLUX_API_URL);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path: `${url.pathname}/mg_meter_readings`, method: 'POST', agent: false,
      headers: { 'Content-Type': 'application/json', 'Content-Length': size, ...headers } });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(text), ms: Date.now() - started }));
    });
    // The router answers before reading the body and closes: the rest of the upload fails.
    req.on('error', (e) => { if (!['EPIPE', 'ECONNRESET'].includes(e.code)) reject(e); });
    const chunk = Buffer.alloc(1 << 20, 0x20);
    let left = size;
    const pump = () => {
      while (left > 0 && !req.destroyed) {
        const part = chunk.subarray(0, Math.min(left, chunk.length));
        left -= part.length;
        if (!req.write(part)) return req.once('drain', pump);
      }
      return req.end();
    };
    pump();
  });
}

const postgrestRss = () => {
  const pid = readFileSync(join(home, 'run', 'postgrest.pid'), 'utf8').trim();
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
};

test('keyless and oversized bodies are refused before anyone reads them', async () => {
  const before = postgrestRss();
  const keyless = await Promise.all([1, 2, 3].map(() => sendBody({}, 50 << 20)));
  for (const res of keyless) {
    assert.equal(res.status, 401);
    assert.equal(res.body.code, 'PT401');
  }
  const big = await sendBody({ apikey: serviceKey, Authorization: `Bearer ${serviceKey}` }, 9 << 20);
  assert.equal(big.status, 413);
  assert.equal(big.body.code, 'PT413');
  assert.match(big.body.details, /8388608 bytes/);
  // PostgREST parsed none of it (0.1.0: ~0.9 GB per 50 MB body, kept afterwards).
  assert.ok(postgrestRss() - before < 64 << 20, `PostgREST grew by ${(postgrestRss() - before) >> 20} MB`);
});

test('a request naming thousands of unknown devices gets a short error and a short log line', async () => {
  const log = join(home, 'log', 'postgresql.log');
  const logBefore = statSync(log).size;
  const ids = Array.from({ length: 5000 }, () => uuid());
  const res = await api('/rpc/get_meter_readings_5m', { method: 'POST', body: { start_time: '2024-01-01T00:00:00Z', end_time: '2024-01-02T00:00:00Z', device_ids: ids } });
  assertError(assert, res, 400, '22023');
  assert.match(res.body.message, /and 4995 more: not registered/);
  assert.ok(res.body.message.length < 400, `${res.body.message.length} characters`);
  assert.ok(statSync(log).size - logBefore < 64 << 10, 'the server log grew by less than 64 KB');
});

test('time-zone errors in readings are 400s with their SQLSTATE', async () => {
  const bess = await registerDevice({ type: 'bess' });
  const post = (time) => service('/mg_bess_readings', { method: 'POST', body: { device_id: bess.id, time, soe: 50 } });
  assertError(assert, await post('2025-02-01T00:00:00+16:00'), 400, '22009');
  assertError(assert, await post('2025-02-01T00:00:00 America/Nowhere'), 400, '22023');
  // A known zone is fine.
  assert.equal((await post('2025-02-01T00:00:00 Europe/London')).status, 201);
  assert.equal(Number((await sql('SELECT count(*) AS n FROM flux.mg_bess_readings WHERE device_id = $1', [bess.id]))[0].n), 1);
});

test('misspelt flux settings are refused, not silently kept', async () => {
  await assert.rejects(sql("SET flux.rate_limt_anon_burst = '5'"), /flux/);
  await assert.rejects(sql("SELECT set_config('flux.energy_jitter', '1', false)"), /flux/);
  // Real ones still work.
  assert.deepEqual(await sql("SELECT set_config('flux.energy_jitter_kwh', '0.25', false) AS v"), [{ v: '0.25' }]);
});

test('the site check of authenticated inserts reads the claims once per statement', async () => {
  const plans = await sql(`SELECT tablename, with_check FROM pg_policies WHERE policyname = 'insert_at_claimed_sites' ORDER BY tablename`);
  assert.equal(plans.length, 2);
  for (const p of plans) assert.match(p.with_check, /\(\s*SELECT flux_internal\.claimed_sites\(\)/, p.tablename);
  // And it still scopes: a mixed batch stores nothing.
  const site = uniqueName('ONCE');
  const mine = await registerDevice({ type: 'bess', site });
  const theirs = await registerDevice({ type: 'bess', site: uniqueName('OTHER') });
  const token = await mintToken({ role: 'authenticated', sub: uniqueName('gw'), sites: [site] });
  const rows = [mine, theirs].map((d) => ({ device_id: d.id, time: '2024-05-01T00:00:00Z', soe: 1 }));
  const res = await api('/mg_bess_readings', { method: 'POST', headers: { Authorization: `Bearer ${token}` }, body: rows });
  assertError(assert, res, 403, '42501');
});

test('refused realtime joins write short, throttled log lines', async () => {
  const log = join(home, 'log', 'realtime.log');
  const before = statSync(log).size;
  const ws = new WebSocket(`${env.FLUX_REALTIME_URL}/websocket?apikey=${anonKey}&vsn=1.0.0`);
  await once(ws, 'open');
  const replies = [];
  ws.on('message', (m) => replies.push(JSON.parse(m)));
  const topic = `realtime:${'x'.repeat(400_000)}`;
  const filter = `device_id=zz.${'y'.repeat(400_000)}`;
  for (let i = 0; i < 10; i++) {
    ws.send(JSON.stringify({
      topic, event: 'phx_join', ref: String(i), join_ref: String(i),
      payload: { config: { postgres_changes: [{ event: 'INSERT', schema: 'flux', table: 'mg_bess_readings', filter }] } },
    }));
  }
  const deadline = Date.now() + 10_000;
  while (replies.filter((r) => r.event === 'phx_reply').length < 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  ws.close();
  const refused = replies.filter((r) => r.event === 'phx_reply' && r.payload.status === 'error');
  assert.equal(refused.length, 10);
  // 0.1.0 wrote the whole topic and filter each time: 8 MB for these ten.
  assert.ok(statSync(log).size - before < 16 << 10, `the realtime log grew by ${statSync(log).size - before} bytes`);
});
