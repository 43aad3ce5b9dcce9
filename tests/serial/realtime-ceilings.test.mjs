// The realtime server's event ceilings: a role's subscribers get at most its rate, the excess
// is dropped with a system message, and other roles are untouched. Serial: it restarts the
// realtime server with a small anon ceiling (./flux up passes FLUX_REALTIME_* through), and
// back.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { signJwt, registerDevice, service, closeSql, sleep } from '../e2e/lib.mjs';
import { rawSubscriber } from '../e2e/realtime/harness.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const fluxUp = (extra = {}) => promisify(execFile)(join(root, 'stack', 'up.sh'), { env: { ...process.env, FLUX_QUIET: '1', ...extra }, timeout: 600_000 });

after(async () => {
  await fluxUp(); // the realtime server with its defaults again
  await closeSql();
});

test('a role over its event ceiling loses the excess with a system message; other roles get everything', async () => {
  await fluxUp({ FLUX_REALTIME_ROLE_EVENTS_PER_SECOND: 'anon=20' });
  const device = await registerDevice({ type: 'bess' });
  const anon = await rawSubscriber(device.id, { topic: 'ceiling' });
  const admin = await rawSubscriber(device.id, { topic: 'ceiling', accessToken: signJwt({ role: 'service_role' }) });
  try {
    const base = Date.parse('2032-01-01T00:00:00Z');
    const rows = Array.from({ length: 300 }, (_, i) => ({ device_id: device.id, time: new Date(base + i * 1000).toISOString(), soe: 50 }));
    assert.equal((await service('/mg_bess_readings', { method: 'POST', body: rows })).status, 201);
    for (const deadline = Date.now() + 10_000; admin.changes().length < 300; await sleep(50)) {
      assert.ok(Date.now() < deadline, `the service role got ${admin.changes().length} of 300`);
    }
    await sleep(500);
    assert.ok(anon.changes().length >= 20 && anon.changes().length <= 40, `anon got ${anon.changes().length} (its ceiling: 20 a second, bursts of 20)`);
    const [notice] = anon.errors();
    assert.equal(notice[4].message, 'Too many events per second for role anon: some were not delivered');
    assert.equal(anon.errors().length, 1, 'told once, not once per dropped event');
    assert.equal(admin.errors().length, 0);
  } finally {
    anon.ws.close();
    admin.ws.close();
  }
});
