// Rate limits, end to end through the router and PostgREST. Serial: it changes the tiers of the
// running stack (a configuration reload) and restores them at the end.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, fromAddress, sql, closeSql, mintToken, signJwt, uniqueName, assertError, anonKey } from '../e2e/lib.mjs';

const TIER_SETTINGS = ['anon', 'authenticated', 'service_role'].flatMap((t) => [`flux.rate_limit_${t}_per_minute`, `flux.rate_limit_${t}_burst`]);
let saved;

async function setTiers(values) {
  for (const [name, value] of Object.entries(values)) {
    await sql(`ALTER SYSTEM SET ${name} = ${Number(value)}`);
  }
  await sql('SELECT pg_reload_conf()');
  // Backends apply a reload between statements; wait until a fresh one sees it.
  for (let i = 0; i < 50; i++) {
    const rows = await sql('SELECT name, setting FROM pg_settings WHERE name = ANY($1)', [Object.keys(values)]);
    if (rows.every((r) => r.setting === String(values[r.name]))) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the tiers did not change');
}

before(async () => {
  saved = Object.fromEntries((await sql('SELECT name, setting FROM pg_settings WHERE name = ANY($1)', [TIER_SETTINGS])).map((r) => [r.name, r.setting]));
});

after(async () => {
  await setTiers(saved);
  await closeSql();
});

test('the documented tiers are the defaults', async () => {
  const defaults = Object.fromEntries((await sql('SELECT name, boot_val FROM pg_settings WHERE name = ANY($1)', [TIER_SETTINGS])).map((r) => [r.name, Number(r.boot_val)]));
  assert.deepEqual(defaults, {
    'flux.rate_limit_anon_per_minute': 60,
    'flux.rate_limit_anon_burst': 100,
    'flux.rate_limit_authenticated_per_minute': 300,
    'flux.rate_limit_authenticated_burst': 500,
    'flux.rate_limit_service_role_per_minute': 1000,
    'flux.rate_limit_service_role_burst': 2000,
  });
});

/** A user token with its own identity (`sub`), hence its own bucket. */
const user = async () => `Bearer ${await mintToken({ role: 'authenticated', sub: uniqueName('rl') })}`;
const asUser = (auth) => api('/market_data?limit=1', { headers: { Authorization: auth } });

test('exactly the burst passes under concurrency; the rest is a 429 with Retry-After and the headers', async () => {
  // 6 per minute: refill (one token per 10 s) cannot blur the count within the test.
  await setTiers({ 'flux.rate_limit_authenticated_per_minute': 6, 'flux.rate_limit_authenticated_burst': 20 });
  const auth = await user();
  const started = Date.now();
  const results = await Promise.all(Array.from({ length: 60 }, () => asUser(auth)));
  const seconds = (Date.now() - started) / 1000;
  const ok = results.filter((r) => r.status === 200);
  const limited = results.filter((r) => r.status === 429);
  assert.equal(ok.length + limited.length, 60, JSON.stringify(results.map((r) => r.status)));
  assert.ok(ok.length >= 20 && ok.length <= 20 + Math.floor(seconds / 10), `${ok.length} allowed in ${seconds} s`);
  // Remaining counts down without repeats.
  const remaining = ok.map((r) => Number(r.headers.get('x-ratelimit-remaining'))).sort((a, b) => a - b);
  assert.deepEqual(remaining.slice(0, 20), Array.from({ length: 20 }, (_, i) => i));
  for (const r of ok) assert.equal(r.headers.get('x-ratelimit-limit'), '6');

  const denied = limited[0];
  assertError(assert, denied, 429, 'PT429');
  assert.equal(denied.body.message, 'Rate limit exceeded');
  const retryAfter = Number(denied.headers.get('retry-after'));
  assert.ok(retryAfter >= 1 && retryAfter <= 10, String(retryAfter));
  assert.equal(denied.headers.get('x-ratelimit-limit'), '6');
  assert.equal(denied.headers.get('x-ratelimit-remaining'), '0');
  const reset = Number(denied.headers.get('x-ratelimit-reset'));
  const now = Date.now() / 1000;
  assert.ok(reset > now && reset <= now + 20 * 10 + 2, `reset ${reset} now ${now}`);

  // Other identities are not affected.
  assert.equal((await asUser(await user())).status, 200);
});

test('a refused write stores nothing', async () => {
  await setTiers({ 'flux.rate_limit_service_role_per_minute': 1, 'flux.rate_limit_service_role_burst': 1 });
  const key = await mintToken({ role: 'service_role', sub: uniqueName('svc') }, '1 hour');
  const time = new Date(Date.UTC(2035, 0, 1) + Math.floor(Math.random() * 1e9) * 1000).toISOString();
  const post = () => api('/market_data', { method: 'POST', key: anonKey, headers: { Authorization: `Bearer ${key}` }, body: { time, type: 3, value: 1 } });
  assert.equal((await api('/market_data?limit=1', { key: anonKey, headers: { Authorization: `Bearer ${key}` } })).status, 200);
  assertError(assert, await post(), 429, 'PT429');
  assert.equal((await sql('SELECT count(*)::int AS n FROM flux.market_data WHERE time = $1', [time]))[0].n, 0);
  await setTiers({ 'flux.rate_limit_service_role_per_minute': saved['flux.rate_limit_service_role_per_minute'], 'flux.rate_limit_service_role_burst': saved['flux.rate_limit_service_role_burst'] });
});

test('tokens come back at the tier rate', async () => {
  await setTiers({ 'flux.rate_limit_authenticated_per_minute': 120, 'flux.rate_limit_authenticated_burst': 2 });
  const auth = await user();
  assert.equal((await asUser(auth)).status, 200);
  assert.equal((await asUser(auth)).status, 200);
  assert.equal((await asUser(auth)).status, 429);
  await new Promise((r) => setTimeout(r, 1100)); // two per second
  assert.equal((await asUser(auth)).status, 200);
  assert.equal((await asUser(auth)).status, 200);
  assert.equal((await asUser(auth)).status, 429);
});

test('a refused request takes nothing from a bucket: invalid keys neither spend nor refresh one', async () => {
  await setTiers({ 'flux.rate_limit_anon_per_minute': 6, 'flux.rate_limit_anon_burst': 3 });
  // A client address of its own (the router sets X-Forwarded-For from the socket).
  const from = `127.${1 + Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}.${2 + Math.floor(Math.random() * 250)}`;
  const get = (headers) => fromAddress(from, '/rest/v1/market_data?limit=1', { headers });
  for (let i = 0; i < 8; i++) {
    const forged = await get({ apikey: i % 2 ? 'forged' : signJwt({ role: 'anon' }, 'another-project-secret-of-32-characters!') });
    assert.equal(forged.status, 401);
    // The headers show the address's bucket, untouched.
    assert.equal(forged.headers['x-ratelimit-remaining'], '3');
  }
  assert.equal((await get({})).status, 401, 'no key: refused by the router');
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push((await get({ apikey: anonKey })).status);
  assert.deepEqual(statuses, [200, 200, 200, 429]);
  // Once it is empty, refused requests do not keep it from refilling either.
  assert.equal((await get({ apikey: 'forged' })).status, 401);
});

test('anonymous clients are limited by the address the router saw, not by a header they send', async () => {
  await setTiers({ 'flux.rate_limit_anon_per_minute': 6, 'flux.rate_limit_anon_burst': 3 });
  // Drain the loopback address's bucket, whatever earlier tests left in it.
  for (let i = 0; i < 10; i++) await api('/market_data?limit=1');
  assert.equal((await api('/market_data?limit=1')).status, 429);
  const spoofed = await api('/market_data?limit=1', { headers: { 'X-Forwarded-For': '203.0.113.9' } });
  assert.equal(spoofed.status, 429, 'a client-supplied X-Forwarded-For does not open a new bucket');
  // A changed tier applies to existing buckets without resetting them.
  await setTiers({ 'flux.rate_limit_anon_per_minute': 6, 'flux.rate_limit_anon_burst': 4 });
  assert.equal((await api('/market_data?limit=1')).status, 429);
});
