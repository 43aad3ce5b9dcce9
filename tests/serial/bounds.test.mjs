// Every API request is bounded: statement timeouts per role, a statement cancelled when its
// client leaves or the router stops waiting, and a row cap that says when it cut. Serial: it
// adds a slow function to the API for the duration (and reloads PostgREST's schema cache).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, service, sql, closeSql, env, home, registerDevice, mintToken, uniqueName, assertError } from '../e2e/lib.mjs';

const sleepPath = '/rpc/e2e_sleep';

async function reloadSchema(ready) {
  await sql("NOTIFY pgrst, 'reload schema'");
  for (let i = 0; i < 100; i++) {
    if (await ready()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('PostgREST did not reload its schema cache');
}

before(async () => {
  await sql('CREATE OR REPLACE FUNCTION flux.e2e_sleep(seconds float8) RETURNS int LANGUAGE sql AS $$ SELECT 1 FROM pg_sleep(seconds) $$');
  await reloadSchema(async () => (await service(sleepPath, { method: 'POST', body: { seconds: 0 } })).status === 200);
});

after(async () => {
  await sql('DROP FUNCTION IF EXISTS flux.e2e_sleep(float8)');
  await reloadSchema(async () => (await service(sleepPath, { method: 'POST', body: { seconds: 0 } })).status === 404);
  await closeSql();
});

const timed = async (call) => {
  const started = Date.now();
  const res = await call();
  return { res, seconds: (Date.now() - started) / 1000 };
};

/** Backends running a statement of the slow function. */
const running = async () =>
  Number((await sql("SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%e2e_sleep%' AND query NOT LIKE '%pg_stat_activity%'"))[0].n);

test('each API role has its statement timeout, set by the extension', async () => {
  const settings = await sql(`
    SELECT r.rolname, s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
    WHERE r.rolname IN ('anon', 'authenticated', 'service_role') AND s.setdatabase = 0 ORDER BY 1`);
  assert.deepEqual(settings, [
    { rolname: 'anon', setconfig: ['statement_timeout=3s'] },
    { rolname: 'authenticated', setconfig: ['statement_timeout=8s'] },
    { rolname: 'service_role', setconfig: ['statement_timeout=60s'] },
  ]);
  const anon = await timed(() => api(sleepPath, { method: 'POST', body: { seconds: 30 } }));
  assertError(assert, anon.res, 500, '57014');
  assert.ok(anon.seconds > 2.5 && anon.seconds < 6, `anon ran ${anon.seconds} s`);
  const user = `Bearer ${await mintToken({ role: 'authenticated', sub: uniqueName('slow') })}`;
  const authenticated = await timed(() => api(sleepPath, { method: 'POST', headers: { Authorization: user }, body: { seconds: 30 } }));
  assertError(assert, authenticated.res, 500, '57014');
  assert.ok(authenticated.seconds > 7.5 && authenticated.seconds < 12, `authenticated ran ${authenticated.seconds} s`);
  assert.equal((await service(sleepPath, { method: 'POST', body: { seconds: 4 } })).status, 200, 'service_role may run longer');
});

test('a statement is cancelled when its client leaves', async () => {
  const abort = new AbortController();
  const call = service(sleepPath, { method: 'POST', body: { seconds: 40 }, signal: abort.signal }).catch((e) => e);
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await running(), 1, 'the statement runs');
  abort.abort();
  assert.equal((await call).name, 'AbortError');
  const deadline = Date.now() + 5000;
  while ((await running()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.equal(await running(), 0, 'cancelled within 5 s, not after 40 s (or service_role\'s 60 s)');
});

test('a statement is cancelled when the router stops waiting for PostgREST', async () => {
  // A router of the test's own, with a 2 s upstream timeout, in front of the stack's PostgREST.
  const port = Number(new URL(env.FLUX_URL).port) + 20;
  const conf = Object.fromEntries(readFileSync(join(home, 'conf', 'router.env'), 'utf8')
    .split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  const router = spawn(join(home, 'bin', 'flux-router'), {
    env: { ...conf, FLUX_ROUTER_LISTEN: `127.0.0.1:${port}`, FLUX_ROUTER_UPSTREAM_TIMEOUT_S: '2' },
    stdio: 'ignore',
  });
  try {
    const url = `http://127.0.0.1:${port}/rest/v1${sleepPath}`;
    for (let i = 0; i < 50; i++) {
      if (await fetch(url).then(() => true, () => false)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const { res, seconds } = await timed(() => fetch(url, {
      method: 'POST', body: JSON.stringify({ seconds: 40 }),
      headers: { 'Content-Type': 'application/json', apikey: env.FLUX_SERVICE_ROLE_KEY, Authorization: `Bearer ${env.FLUX_SERVICE_ROLE_KEY}` },
    }));
    assert.equal(res.status, 504);
    const body = await res.json();
    assert.equal(body.code, 'PT504');
    assert.ok(seconds > 1.5 && seconds < 5, `${seconds} s`);
    const deadline = Date.now() + 5000;
    while ((await running()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await running(), 0, 'the statement was cancelled');
  } finally {
    router.kill();
  }
});

test('a read cut at the row cap says so: 206 and the total in Content-Range', async () => {
  const bess = await registerDevice({ type: 'bess' });
  await sql(`INSERT INTO flux.mg_bess_readings (device_id, time, soe)
             SELECT $1, '2024-03-01'::timestamptz + i * interval '1 s', 50 FROM generate_series(1, 10050) i`, [bess.id]);
  const all = await api(`/mg_bess_readings?device_id=eq.${bess.id}&select=time`);
  assert.equal(all.status, 206);
  assert.equal(all.body.length, 10000);
  const [, from, to, total] = /^(\d+)-(\d+)\/(\d+)$/.exec(all.headers.get('content-range'));
  assert.deepEqual([from, to], ['0', '9999']);
  assert.ok(Number(total) > 10000, `total ${total}`);
  // Within the cap, nothing changes: a limit the client chose, or an answer that fits.
  const page = await api(`/mg_bess_readings?device_id=eq.${bess.id}&select=time&limit=100&order=time.desc`);
  assert.equal(page.status, 200);
  assert.equal(page.headers.get('content-range'), '0-99/*');
  const fits = await api(`/mg_device_registry?id=eq.${bess.id}`);
  assert.equal(fits.status, 200);
  assert.equal(fits.headers.get('content-range'), '0-0/1');
});
