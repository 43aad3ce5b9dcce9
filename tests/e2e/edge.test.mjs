// The API edge: api keys (401), roles and row-level security per table and verb, site-scoped
// writes for authenticated users, rate-limit headers. (Limits themselves: serial/rate-limits.)
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, postgrest, service, sql, closeSql, registerDevice, uuid, assertError, anonKey, serviceKey, mintToken, signJwt, uniqueName } from './lib.mjs';

after(closeSql);

const b64 = (s) => Buffer.from(s).toString('base64url');

test('a request without an api key is a 401 "No API key found in request"', async () => {
  const res = await api('/mg_device_registry?limit=1', { key: null });
  assertError(assert, res, 401, 'PT401');
  assert.equal(res.body.message, 'No API key found in request');
  // The router answers it (PostgREST never sees it), with the body the database gives when a
  // request reaches PostgREST directly.
  const direct = await postgrest('/mg_device_registry?limit=1');
  assert.equal(direct.status, 401);
  assert.deepEqual(res.body, direct.body);
  // The API root (PostgREST's OpenAPI description) is no exception.
  assertError(assert, await api('/', { key: null }), 401, 'PT401');
  // A Bearer token alone is not an api key.
  const bearerOnly = await api('/mg_device_registry?limit=1', { key: null, headers: { Authorization: `Bearer ${anonKey}` } });
  assertError(assert, bearerOnly, 401, 'PT401');
});

test('invalid, expired, foreign, unsigned and user keys are refused with 401', async () => {
  const now = Math.floor(Date.now() / 1000);
  const keys = {
    garbage: 'not-a-key',
    foreign: signJwt({ role: 'anon' }, 'some-other-project-secret-of-32-characters!'),
    expired: signJwt({ role: 'anon', exp: now - 10 }),
    'alg none': `${b64('{"alg":"none","typ":"JWT"}')}.${b64('{"role":"service_role"}')}.`,
    'user token': await mintToken({ role: 'authenticated', sub: 'someone' }),
    'no role': signJwt({ sub: 'x' }),
    'no expiry': signJwt({ role: 'anon', exp: undefined }),
  };
  for (const [what, key] of Object.entries(keys)) {
    const res = await api('/mg_device_registry?limit=1', { key, bearer: false });
    assertError(assert, res, 401, 'PT401');
    assert.equal(res.body.message, 'Invalid API key', what);
    assert.ok(res.body.details.length > 0, what);
  }
  // An expired Bearer token is refused by PostgREST itself (which allows 30 s of clock skew).
  const expiredBearer = await api('/mg_device_registry?limit=1', {
    headers: { Authorization: `Bearer ${signJwt({ role: 'anon', exp: now - 3600 })}` },
  });
  assert.equal(expiredBearer.status, 401);
  assert.equal(expiredBearer.body.code, 'PGRST301');
});

test('the apikey query parameter works and never reaches PostgREST as a filter', async () => {
  const site = uniqueName('QP');
  await registerDevice({ site, type: 'bess' });
  for (const q of [`apikey=${anonKey}&site=eq.${site}`, `site=eq.${site}&apikey=${anonKey}`, `select=name&apikey=${anonKey}&site=eq.${site}`]) {
    const res = await api(`/mg_device_registry?${q}`, { key: null });
    assert.equal(res.status, 200, `${q}: ${JSON.stringify(res.body)}`);
    assert.equal(res.body.length, 1);
  }
  const alone = await api(`/mg_device_registry?apikey=${anonKey}`, { key: null });
  assert.equal(alone.status, 200);
  const bad = await api(`/mg_device_registry?apikey=nope`, { key: null });
  assertError(assert, bad, 401, 'PT401');
});

test('successful responses carry the rate-limit headers of the role\'s tier', async () => {
  const tiers = Object.fromEntries(
    (await sql("SELECT name, setting FROM pg_settings WHERE name LIKE 'flux.rate_limit_%_per_minute'")).map((r) => [r.name, r.setting]),
  );
  assert.equal(new Set(Object.values(tiers)).size, 3, 'the tiers differ, so the mapping is visible');
  const user = { Authorization: `Bearer ${await mintToken({ role: 'authenticated', sub: uniqueName('tier') })}` };
  for (const [key, tier, headers] of [[anonKey, 'anon'], [serviceKey, 'service_role'], [anonKey, 'authenticated', user]]) {
    const res = await api('/market_data?limit=1', { key, headers });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-ratelimit-limit'), tiers[`flux.rate_limit_${tier}_per_minute`]);
    assert.match(res.headers.get('x-ratelimit-remaining'), /^\d+$/);
    const reset = Number(res.headers.get('x-ratelimit-reset'));
    assert.ok(reset >= Math.floor(Date.now() / 1000) - 5 && reset < Date.now() / 1000 + 86400 * 365, String(reset));
  }
});

// ---------------------------------------------------------------------------------------------
// Roles × tables × verbs.

async function fixtures() {
  const site = uniqueName('SITE');
  const meter = await registerDevice({ type: 'meter', site });
  const bess = await registerDevice({ type: 'bess', site });
  const token = await mintToken({ role: 'authenticated', sub: uniqueName('user'), sites: [site] });
  return { site, meter, bess, token };
}

const uniqueTime = () => new Date(Date.UTC(2030, 0, 1) + Math.floor(Math.random() * 1e9) * 1000).toISOString();

test('each role may do exactly what it should on every table', async () => {
  const { meter, bess, token } = await fixtures();
  const as = {
    anon: { key: anonKey },
    authenticated: { key: anonKey, headers: { Authorization: `Bearer ${token}` } },
    service_role: { key: serviceKey },
  };
  const bodies = {
    mg_device_registry: () => ({ name: uniqueName('MATRIX'), type: 'meter', site: 'X' }),
    mg_bess_readings: () => ({ device_id: bess.id, time: uniqueTime(), soe: 50 }),
    mg_meter_readings: () => ({ device_id: meter.id, time: uniqueTime(), power_total_active: 1 }),
    market_data: () => ({ type: 2, time: uniqueTime(), value: 1 }),
  };
  const patchFilter = {
    mg_device_registry: `id=eq.${meter.id}`,
    mg_bess_readings: `device_id=eq.${bess.id}`,
    mg_meter_readings: `device_id=eq.${meter.id}`,
    market_data: `time=eq.${uniqueTime()}`,
  };
  const patchBody = { mg_device_registry: { active: true }, mg_bess_readings: { soe: 51 }, mg_meter_readings: { power_total_active: 2 }, market_data: { value: 2 } };
  const expected = {
    // [GET, POST, PATCH, DELETE]
    anon: { mg_device_registry: [200, 401, 401, 401], mg_bess_readings: [200, 401, 401, 401], mg_meter_readings: [200, 401, 401, 401], market_data: [200, 401, 401, 401] },
    authenticated: { mg_device_registry: [200, 403, 403, 403], mg_bess_readings: [200, 201, 403, 403], mg_meter_readings: [200, 201, 403, 403], market_data: [200, 403, 403, 403] },
    service_role: { mg_device_registry: [200, 201, 204, 204], mg_bess_readings: [200, 201, 204, 204], mg_meter_readings: [200, 201, 204, 204], market_data: [200, 201, 204, 204] },
  };
  for (const [role, opts] of Object.entries(as)) {
    for (const table of Object.keys(bodies)) {
      const [get, post, patch, del] = expected[role][table];
      const label = `${role} ${table}`;
      assert.equal((await api(`/${table}?limit=1`, opts)).status, get, `${label} GET`);
      assert.equal((await api(`/${table}`, { ...opts, method: 'POST', body: bodies[table]() })).status, post, `${label} POST`);
      assert.equal((await api(`/${table}?${patchFilter[table]}`, { ...opts, method: 'PATCH', body: patchBody[table] })).status, patch, `${label} PATCH`);
      // DELETE with a filter that matches nothing: only the right to delete is tested.
      const none = table === 'mg_device_registry' ? `id=eq.${uuid()}` : `device_id=eq.${uuid()}`;
      assert.equal((await api(`/${table}?${table === 'market_data' ? `time=eq.${uniqueTime()}` : none}`, { ...opts, method: 'DELETE' })).status, del, `${label} DELETE`);
    }
  }
});

test('authenticated users write readings only for devices at their sites; nothing partial is stored', async () => {
  const { meter, token } = await fixtures();
  const other = await registerDevice({ type: 'meter', site: uniqueName('ELSEWHERE') });
  const asUser = (body, tok = token) =>
    api('/mg_meter_readings', { method: 'POST', body, headers: { Authorization: `Bearer ${tok}` } });
  const count = async () => Number((await sql('SELECT count(*) AS n FROM flux.mg_meter_readings WHERE device_id = ANY($1)', [[meter.id, other.id]]))[0].n);

  assert.equal((await asUser({ device_id: meter.id, time: uniqueTime(), power_total_active: 1 })).status, 201);
  const foreign = await asUser({ device_id: other.id, time: uniqueTime(), power_total_active: 1 });
  assertError(assert, foreign, 403, '42501');
  assert.match(foreign.body.message, /row-level security/);
  const mixed = await asUser([
    { device_id: meter.id, time: uniqueTime(), power_total_active: 1 },
    { device_id: other.id, time: uniqueTime(), power_total_active: 1 },
  ]);
  assertError(assert, mixed, 403, '42501');
  assert.equal(await count(), 1, 'only the first, allowed reading is stored');

  // `sites` may be a single code; without it nothing may be written.
  const single = await mintToken({ role: 'authenticated', sub: uniqueName('u'), sites: meter.site });
  assert.equal((await asUser({ device_id: meter.id, time: uniqueTime(), power_total_active: 1 }, single)).status, 201);
  const none = await mintToken({ role: 'authenticated', sub: uniqueName('u') });
  assertError(assert, await asUser({ device_id: meter.id, time: uniqueTime(), power_total_active: 1 }, none), 403, '42501');
  // Re-sending is idempotent with ignore-duplicates; merging would need UPDATE, which only the
  // service role has.
  const resend = { device_id: meter.id, time: uniqueTime(), power_total_active: 1 };
  const upsert = (resolution) =>
    api('/mg_meter_readings?on_conflict=device_id,time', {
      method: 'POST',
      body: [resend],
      headers: { Authorization: `Bearer ${token}`, Prefer: `resolution=${resolution}` },
    });
  assert.equal((await upsert('ignore-duplicates')).status, 201);
  assert.equal((await upsert('ignore-duplicates')).status, 201);
  assertError(assert, await upsert('merge-duplicates'), 403, '42501');
  // id and created_at are the database's to set.
  for (const forged of [{ created_at: '2020-01-01T00:00:00Z' }, { id: uuid() }]) {
    assertError(assert, await asUser({ device_id: meter.id, time: uniqueTime(), ...forged }), 403, '42501');
  }
  // Reading everything is allowed.
  const read = await api(`/mg_meter_readings?device_id=eq.${other.id}`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(read.status, 200);
});

test('keys and device tokens are minted from SQL by the service role only', async () => {
  const res = await service('/rpc/sign_jwt', { method: 'POST', body: { claims: { role: 'authenticated', sub: 'gw-1', sites: ['WLCE'] }, valid_for: '30 days' } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const payload = JSON.parse(Buffer.from(res.body.split('.')[1], 'base64url'));
  assert.equal(payload.sub, 'gw-1');
  assert.ok(Math.abs(payload.exp - payload.iat - 30 * 86400) < 2);
  // The minted token works as a Bearer token.
  const use = await api('/market_data?limit=1', { headers: { Authorization: `Bearer ${res.body}` } });
  assert.equal(use.status, 200);
  assertError(assert, await api('/rpc/sign_jwt', { method: 'POST', body: { claims: { role: 'service_role' } } }), 401, '42501');
  const badRole = await service('/rpc/sign_jwt', { method: 'POST', body: { claims: { role: 'postgres' } } });
  assertError(assert, badRole, 400, '22023');
  const eternal = await service('/rpc/sign_jwt', { method: 'POST', body: { claims: { role: 'anon', exp: null } } });
  assertError(assert, eternal, 400, '22023');
});
