// Realtime end to end: the real supabase-js clients (2.90 on Node 20 speaking vsn 1.0.0, and
// 2.119 on Node 22 speaking vsn 2.0.0) subscribe through the router, rows are written through
// PostgREST or SQL, and the tests check what the clients' callbacks receive.
//
// Needs the realtime server running behind the stack's router (see crates/flux-realtime).
// Serial: the last test restarts the stack's PostgreSQL.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import WebSocket from 'ws';
import { anonKey, at, closeSql, env, registerDevice, service, serviceKey, signJwt, sql, uuid } from '../e2e/lib.mjs';
import { Client, flavors, insertReadings, restartPostgres, sleep, waitForFeed } from '../e2e/realtime/harness.mjs';

const ISO_MILLIS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const BASE = '2031-03-01T00:00:00Z';
const bess = (filter, event = 'INSERT') => ({ event, schema: 'flux', table: 'mg_bess_readings', filter });
const sameTime = (a, b) => Date.parse(a) === Date.parse(b);

// A table whose rows RLS hides per user, and whose `secret` column `authenticated` may not
// select: the flux tables' own policies are being reworked, this one stays put.
const notes = `rt_notes_${uuid().slice(0, 8)}`;

before(async () => {
  await sql(`CREATE TABLE flux.${notes} (id int PRIMARY KEY, owner text NOT NULL, body text, secret text)`);
  await sql(`ALTER TABLE flux.${notes} REPLICA IDENTITY FULL`);
  await sql(`ALTER TABLE flux.${notes} ENABLE ROW LEVEL SECURITY`);
  await sql(`GRANT SELECT (id, owner, body) ON flux.${notes} TO authenticated`);
  await sql(`CREATE POLICY own_notes ON flux.${notes} FOR SELECT TO authenticated
             USING (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub')`);
  await sql(`ALTER PUBLICATION supabase_realtime ADD TABLE flux.${notes}`);
});

after(async () => {
  await sql(`DROP TABLE IF EXISTS flux.${notes}`);
  await closeSql();
});

for (const [flavorIndex, flavor] of flavors.entries()) {
  describe(`realtime with ${flavor.name}`, () => {
    let anon; // createClient(FLUX_URL, anonKey), as in the API reference
    let admin; // the service role: writes through /rest/v1 with the same client

    before(async () => {
      anon = new Client(flavor, anonKey);
      admin = new Client(flavor, serviceKey);
      // realtime-js disconnects when its last channel is removed and may then take a join
      // timeout (10 s) to come back: a channel without bindings keeps each socket up.
      await Promise.all([anon.subscribe('keep', 'keepalive', []), admin.subscribe('keep', 'keepalive', [])]);
    });
    after(async () => {
      await anon?.close();
      await admin?.close();
    });

    test("the reference snippet gets the filtered device's INSERTs, typed as PostgREST types them", async () => {
      const [device, other] = await Promise.all([registerDevice({ type: 'bess' }), registerDevice({ type: 'bess' })]);
      await anon.subscribe('ref', 'bess-realtime', [bess(`device_id=eq.${device.id}`)]);
      const started = Date.now();
      await insertReadings([{ device_id: other.id, time: at(BASE, 1), soe: 10 }]);
      const [stored] = await insertReadings([
        { device_id: device.id, time: at(BASE, 1), soe: 55.5, target_power: -12.25, available_inverter_blocks: 3, command_source: 1 },
      ]);
      const { payload } = await anon.waitForChange('ref', (p) => p.new.device_id === device.id, 'the INSERT');

      assert.equal(payload.eventType, 'INSERT');
      assert.equal(payload.schema, 'flux');
      assert.equal(payload.table, 'mg_bess_readings');
      assert.match(payload.commit_timestamp, ISO_MILLIS);
      assert.ok(Math.abs(Date.parse(payload.commit_timestamp) - started) < 60_000, payload.commit_timestamp);
      assert.equal(payload.errors, null);
      assert.deepEqual(payload.old, {});
      // Exactly the row PostgREST returned: same keys, same JSON types and spellings.
      assert.deepEqual(payload.new, stored);
      assert.equal(payload.new.soe, 55.5);
      assert.equal(payload.new.available_inverter_blocks, 3);
      assert.match(payload.new.time, /^2031-03-01T00:01:00\+00:00$/);
      // The other device's row, committed first, does not pass the device filter.
      assert.equal(anon.changes('ref', (p) => p.new.device_id === other.id).length, 0);
      assert.equal(await anon.unsubscribe('ref'), 'ok');
    });

    test('every filter operator compares with the type of its column', async () => {
      const device = await registerDevice({ type: 'bess' });
      // The second reading's time, written with a +01:00 offset: compared as an instant.
      const t2Offset = new Date(Date.parse(at(BASE, 12)) + 3_600_000).toISOString().replace('.000Z', '+01:00');
      const filters = {
        eq: 'soe=eq.50',
        neq: 'soe=neq.50',
        lt: 'soe=lt.50',
        lte: 'soe=lte.50',
        gt: 'soe=gt.50',
        gte: 'soe=gte.50',
        numeric: 'soe=lt.100', // as text, "40" < "100" would be false
        in: 'available_inverter_blocks=in.(1,3)',
        uuid: `device_id=eq.${device.id.toUpperCase()}`,
        instant: `time=gte.${t2Offset}`,
      };
      const names = Object.keys(filters);
      await anon.subscribe('ops', 'filter-ops', Object.values(filters).map((f) => bess(f)));
      await insertReadings([
        { device_id: device.id, time: at(BASE, 11), soe: 40, available_inverter_blocks: 1 },
        { device_id: device.id, time: at(BASE, 12), soe: 50, available_inverter_blocks: 2 },
        { device_id: device.id, time: at(BASE, 13), soe: 60, available_inverter_blocks: 3 },
      ]);
      const expected = {
        eq: [50],
        neq: [40, 60],
        lt: [40],
        lte: [40, 50],
        gt: [60],
        gte: [50, 60],
        numeric: [40, 50, 60],
        in: [40, 60],
        uuid: [40, 50, 60],
        instant: [50, 60],
      };
      const total = Object.values(expected).flat().length;
      const mine = () => anon.changes('ops', (p) => p.new.device_id === device.id);
      await anon.waitFor(() => mine().length >= total, `${total} deliveries`);
      await sleep(200); // anything extra would show up now
      const got = Object.fromEntries(names.map((n) => [n, []]));
      for (const e of mine()) got[names[e.binding]].push(e.payload.new.soe);
      assert.deepEqual(got, expected);
      await anon.unsubscribe('ops');
    });

    test('UPDATE, DELETE and * events carry the old row as RLS allows', async () => {
      const device = await registerDevice({ type: 'bess' });
      const onDevice = `device_id=eq.${device.id}`;
      await anon.subscribe('ud', 'updates-deletes', [bess(onDevice, 'UPDATE'), bess(onDevice, 'DELETE'), bess(onDevice, '*')]);
      await admin.subscribe('ud', 'updates-deletes', [bess(onDevice, 'DELETE')]);
      // Each step waits for its event: an INSERT or UPDATE is checked against RLS by reading the
      // row back, so a row already deleted by then is (as in Supabase) not delivered to roles
      // under RLS.
      const [row] = await insertReadings([{ device_id: device.id, time: at(BASE, 21), soe: 20 }]);
      await anon.waitForChange('ud', (p) => p.eventType === 'INSERT', 'the INSERT');
      const updated = await service(`/mg_bess_readings?device_id=eq.${device.id}`, {
        method: 'PATCH',
        headers: { Prefer: 'return=representation' },
        body: { soe: 21.5 },
      });
      assert.equal(updated.status, 200);
      await anon.waitForChange('ud', (p) => p.eventType === 'UPDATE', 'the UPDATE');
      const deleted = await service(`/mg_bess_readings?device_id=eq.${device.id}`, { method: 'DELETE' });
      assert.equal(deleted.status, 204);
      // One frame triggers both the DELETE and the * binding: wait for both callbacks.
      await anon.waitFor(
        () => anon.changes('ud', (p) => p.eventType === 'DELETE').length === 2,
        'the DELETE on both bindings',
      );

      const star = anon.changes('ud').filter((e) => e.binding === 2);
      assert.deepEqual(star.map((e) => e.payload.eventType), ['INSERT', 'UPDATE', 'DELETE']);
      const [update] = anon.changes('ud').filter((e) => e.binding === 0);
      assert.deepEqual(update.payload.new, updated.body[0]);
      assert.deepEqual(update.payload.old, row); // REPLICA IDENTITY FULL
      assert.equal(anon.changes('ud').filter((e) => e.binding === 0).length, 1);
      const [del] = anon.changes('ud').filter((e) => e.binding === 1);
      assert.deepEqual(del.payload.new, {});
      // RLS cannot be checked on a deleted row: only its primary key is revealed (Supabase's rule).
      assert.deepEqual(del.payload.old, { device_id: device.id, time: row.time });
      // The service role bypasses RLS and sees the whole old row.
      const adminDelete = await admin.waitForChange('ud', (p) => p.eventType === 'DELETE', 'the DELETE (service role)');
      assert.deepEqual(adminDelete.payload.old, { ...row, soe: 21.5 });
      await anon.unsubscribe('ud');
      await admin.unsubscribe('ud');
    });

    test("table '*' (or no table) follows every table of the schema", async () => {
      await anon.subscribe('all', 'all-tables', [
        { event: 'INSERT', schema: 'flux', table: '*' },
        { event: 'INSERT', schema: 'flux' },
      ]);
      const device = await registerDevice({ type: 'meter', metadata: { max_power_kw: 250 } });
      const meter = await service('/mg_meter_readings', {
        method: 'POST',
        headers: { Prefer: 'return=representation' },
        body: { device_id: device.id, time: at(BASE, 31), power_total_active: 12.5 },
      });
      assert.equal(meter.status, 201);
      await anon.waitForChange('all', (p) => p.table === 'mg_meter_readings' && p.new.device_id === device.id, 'the meter reading');
      const registered = anon.changes('all', (p) => p.table === 'mg_device_registry' && p.new.id === device.id);
      assert.deepEqual(registered.map((e) => e.binding).sort(), [0, 1]);
      assert.deepEqual(registered[0].payload.new, device); // jsonb arrives as an object, booleans as booleans
      assert.deepEqual(registered[0].payload.new.metadata, { max_power_kw: 250 });
      const readings = anon.changes('all', (p) => p.table === 'mg_meter_readings' && p.new.device_id === device.id);
      assert.deepEqual(readings[0].payload.new, meter.body[0]);
      await anon.unsubscribe('all');
    });

    test('RLS and column privileges decide who sees a row; access_token refreshes apply', async () => {
      const alice = new Client(flavor, anonKey, signJwt({ role: 'authenticated', sub: 'alice' }));
      const bob = new Client(flavor, anonKey, signJwt({ role: 'authenticated', sub: 'bob' }));
      try {
        const binding = [{ event: '*', schema: 'flux', table: notes }];
        await Promise.all([
          alice.subscribe('n', 'notes', binding),
          bob.subscribe('n', 'notes', binding),
          anon.subscribe('n', 'notes', binding),
        ]);
        const id = (n) => flavorIndex * 100 + n;
        const insert = (n, owner) => sql(`INSERT INTO flux.${notes} VALUES ($1, $2, $3, 'hidden')`, [id(n), owner, `note ${n}`]);
        await insert(1, 'bob');
        await insert(2, 'alice');
        await insert(3, 'bob');
        const a2 = await alice.waitForChange('n', (p) => p.new.id === id(2), "alice's note");
        // Column privileges: `secret` is not selectable by authenticated, so it is left out.
        assert.deepEqual(a2.payload.new, { id: id(2), owner: 'alice', body: 'note 2' });
        await bob.waitForChange('n', (p) => p.new.id === id(3), "bob's second note");
        // Commit order per client: what each was hidden would have arrived before these.
        assert.deepEqual(alice.changes('n').map((e) => e.payload.new.id), [id(2)]);
        assert.deepEqual(bob.changes('n').map((e) => e.payload.new.id), [id(1), id(3)]);

        await sql(`UPDATE flux.${notes} SET body = 'edited' WHERE id = $1`, [id(2)]);
        const update = await alice.waitForChange('n', (p) => p.eventType === 'UPDATE', 'the UPDATE');
        await sql(`DELETE FROM flux.${notes} WHERE id = $1`, [id(2)]);
        assert.deepEqual(update.payload.new, { id: id(2), owner: 'alice', body: 'edited' });
        assert.deepEqual(update.payload.old, { id: id(2), owner: 'alice', body: 'note 2' });
        // A DELETE reaches every role with SELECT rights, with the primary key only.
        for (const c of [alice, bob]) {
          const del = await c.waitForChange('n', (p) => p.eventType === 'DELETE', 'the DELETE');
          assert.deepEqual(del.payload.old, { id: id(2) });
        }
        assert.equal(bob.changes('n', (p) => p.eventType === 'UPDATE').length, 0);
        // anon has no SELECT on the table: it gets nothing at all.
        await sleep(300);
        assert.equal(anon.changes('n').length, 0);

        // access_token: alice's client switches to bob's identity and sees bob's rows.
        await alice.setAuth(signJwt({ role: 'authenticated', sub: 'bob' }));
        await sleep(300);
        await insert(4, 'bob');
        await alice.waitForChange('n', (p) => p.new.id === id(4), "bob's note after the token refresh");
        // An invalid token closes the channel with a system error.
        await bob.setAuth(signJwt({ role: 'authenticated', sub: 'bob' }, 'a-different-secret-that-is-long-enough-xx'));
        const system = await bob.waitFor((e) => e.type === 'system' && e.payload.status === 'error', 'a system error');
        assert.match(system.payload.message, /invalid access token/i);
        await bob.waitFor((e) => e.type === 'status' && e.status === 'CLOSED', 'the channel closing');
        await anon.unsubscribe('n');
      } finally {
        await alice.close();
        await bob.close();
      }
    });

    test('a forged api key is refused: the channel never subscribes', async () => {
      const forged = signJwt({ role: 'service_role' }, 'not-the-stack-secret-but-long-enough-to-sign');
      const bad = new Client(flavor, forged);
      try {
        bad.send({ cmd: 'subscribe', id: 'x', channel: 'forged', bindings: [{ event: 'INSERT', schema: 'flux', table: 'mg_bess_readings' }] });
        const status = await bad.waitFor((e) => e.type === 'status', 'a status', 15_000);
        assert.notEqual(status.status, 'SUBSCRIBED');
        await sleep(500);
        assert.equal(bad.events.filter((e) => e.status === 'SUBSCRIBED').length, 0);
      } finally {
        await bad.close();
      }
    });

    test('the same client writes and reads through /rest/v1 and sees its own inserts', async () => {
      const device = await registerDevice({ type: 'bess' });
      const onDevice = `device_id=eq.${device.id}`;
      await admin.subscribe('rest', 'rest-and-realtime', [bess(onDevice)]);
      const inserted = await admin.rest({
        cmd: 'insert',
        table: 'mg_bess_readings',
        rows: [{ device_id: device.id, time: at(BASE, 41), soe: 77.25, available_inverter_blocks: 4 }],
      });
      assert.equal(inserted.status, 201, JSON.stringify(inserted.error));
      const change = await admin.waitForChange('rest', (p) => p.new.device_id === device.id, 'the INSERT');
      assert.deepEqual(change.payload.new, inserted.data[0]);
      const read = await anon.rest({ cmd: 'select', table: 'mg_bess_readings', eq: ['device_id', device.id] });
      assert.equal(read.status, 200);
      assert.deepEqual(read.data, inserted.data);
      await admin.unsubscribe('rest');
    });

    test('leaving stops deliveries; joining again resumes them', async () => {
      const device = await registerDevice({ type: 'bess' });
      const bindings = [bess(`device_id=eq.${device.id}`)];
      const at_ = (n) => at(BASE, 50 + n);
      await anon.subscribe('sentinel', 'rejoin-sentinel', bindings);
      await anon.subscribe('leaver', 'rejoin', bindings);
      await insertReadings([{ device_id: device.id, time: at_(1), soe: 1 }]);
      await anon.waitForChange('leaver', (p) => p.new.device_id === device.id, 'the first row');
      assert.equal(await anon.unsubscribe('leaver'), 'ok');
      await insertReadings([{ device_id: device.id, time: at_(2), soe: 2 }]);
      await anon.waitForChange('sentinel', (p) => p.new.soe === 2, 'the second row (sentinel)');
      assert.deepEqual(anon.changes('leaver').map((e) => e.payload.new.soe), [1]);
      await anon.subscribe('rejoined', 'rejoin', bindings);
      await insertReadings([{ device_id: device.id, time: at_(3), soe: 3 }]);
      await anon.waitForChange('rejoined', (p) => p.new.soe === 3, 'the third row after rejoining');
      assert.deepEqual(anon.changes('rejoined').map((e) => e.payload.new.soe), [3]);
      await anon.unsubscribe('sentinel');
      await anon.unsubscribe('rejoined');
    });
  });
}

describe('realtime protocol details (raw WebSocket)', () => {
  const url = (vsn, key = anonKey) => `${env.FLUX_REALTIME_URL}/websocket?apikey=${key}&vsn=${vsn}`;

  test('a missing or invalid api key gets HTTP 401 with a JSON error before the upgrade', async () => {
    const wrongKeys = [
      null,
      'not-a-jwt',
      signJwt({ role: 'anon' }, 'some-other-secret-of-sufficient-length'),
      signJwt({ role: 'anon', exp: 1 }),
      // A user token is not an api key (the REST edge refuses it too).
      signJwt({ role: 'authenticated', sub: 'someone' }),
    ];
    for (const key of wrongKeys) {
      const target = new URL(`${env.FLUX_REALTIME_URL}/websocket`.replace(/^ws/, 'http'));
      target.searchParams.set('vsn', '1.0.0');
      if (key) target.searchParams.set('apikey', key);
      const res = await new Promise((resolve, reject) => {
        const req = http.get(target, {
          headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' },
        });
        req.on('upgrade', () => reject(new Error('upgraded')));
        req.on('response', (r) => {
          let body = '';
          r.on('data', (d) => (body += d));
          r.on('end', () => resolve({ status: r.statusCode, type: r.headers['content-type'], body }));
        });
        req.on('error', reject);
      });
      assert.equal(res.status, 401, `key ${key}`);
      assert.match(res.type, /application\/json/);
      assert.equal(typeof JSON.parse(res.body).error, 'string');
    }
  });

  for (const vsn of ['1.0.0', '2.0.0']) {
    test(`vsn ${vsn}: heartbeat, unmatched topic, join errors, binding echo, leave`, async () => {
      const ws = new WebSocket(url(vsn));
      const inbox = [];
      const waiters = new Set();
      ws.on('message', (data) => {
        const m = JSON.parse(data.toString());
        const msg = vsn === '1.0.0' ? m : { join_ref: m[0], ref: m[1], topic: m[2], event: m[3], payload: m[4] };
        inbox.push({ msg, raw: m });
        waiters.forEach((w) => w());
      });
      await new Promise((resolve, reject) => ws.on('open', resolve).on('error', reject));
      const send = (join_ref, ref, topic, event, payload) =>
        ws.send(JSON.stringify(vsn === '1.0.0' ? { topic, event, payload, ref, join_ref } : [join_ref, ref, topic, event, payload]));
      const next = (pred) =>
        new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no message matching ${pred}; got ${JSON.stringify(inbox.map((i) => i.raw))}`)), 5000);
          const check = () => {
            const i = inbox.findIndex(({ msg }) => pred(msg));
            if (i >= 0) {
              clearTimeout(timer);
              waiters.delete(check);
              resolve(inbox.splice(i, 1)[0]);
            }
          };
          waiters.add(check);
          check();
        });
      try {
        send(null, '1', 'phoenix', 'heartbeat', {});
        const hb = await next((m) => m.ref === '1');
        assert.deepEqual(hb.msg, { ...hb.msg, topic: 'phoenix', event: 'phx_reply', payload: { status: 'ok', response: {} } });
        if (vsn === '1.0.0') assert.deepEqual(Object.keys(hb.raw).sort(), ['event', 'payload', 'ref', 'topic']);
        else assert.equal(hb.raw.length, 5);

        send('9', '2', 'realtime:never-joined', 'broadcast', { type: 'broadcast', event: 'x', payload: {} });
        const unmatched = await next((m) => m.ref === '2');
        assert.deepEqual(unmatched.msg.payload, { status: 'error', response: { reason: 'unmatched topic' } });

        const join = (ref, postgres_changes) =>
          send(ref, ref, `realtime:raw-${ref}`, 'phx_join', {
            config: { broadcast: { ack: false, self: false }, presence: { key: '', enabled: true }, postgres_changes, private: false },
            access_token: anonKey,
          });
        for (const [ref, filter, code] of [
          ['3', 'soe=like.5', 'InvalidFilter'],
          ['4', 'no_such_column=eq.5', 'InvalidFilter'],
          ['5', 'soe=eq.not-a-number', 'InvalidFilter'],
          ['6', 'device_id=eq.not-a-uuid', 'InvalidFilter'],
        ]) {
          join(ref, [bess(filter)]);
          const reply = await next((m) => m.ref === ref);
          assert.equal(reply.msg.payload.status, 'error', filter);
          assert.match(reply.msg.payload.response.reason, new RegExp(`^${code}: `), filter);
        }
        send('7', '7', 'realtime:raw-7', 'phx_join', { config: { postgres_changes: [{ event: '*', schema: 'flux', table: 'no_such_table' }] }, access_token: anonKey });
        assert.match((await next((m) => m.ref === '7')).msg.payload.response.reason, /^UnknownTable: /);
        send('8', '8', 'realtime:raw-8', 'phx_join', { config: {}, access_token: signJwt({ role: 'anon', exp: 1 }) });
        assert.match((await next((m) => m.ref === '8')).msg.payload.response.reason, /^InvalidJWTToken: /);
        // A token without exp never expires: refused like an expired one, whatever its role.
        send('9', '9', 'realtime:raw-9', 'phx_join', { config: {}, access_token: signJwt({ role: 'service_role', exp: undefined }) });
        assert.match((await next((m) => m.ref === '9')).msg.payload.response.reason, /^InvalidJWTToken: .*exp/);

        // Echo: same entries, same keys (absent stay absent), plus an integer id.
        const sent = [{ event: 'INSERT', schema: 'flux' }, bess('soe=gt.1', 'UPDATE')];
        join('10', sent);
        const ok = await next((m) => m.ref === '10');
        assert.equal(ok.msg.payload.status, 'ok');
        const echoed = ok.msg.payload.response.postgres_changes;
        assert.equal(echoed.length, 2);
        echoed.forEach((entry, i) => {
          assert.ok(Number.isInteger(entry.id) && entry.id > 0, JSON.stringify(entry));
          assert.deepEqual(entry, { ...sent[i], id: entry.id });
        });
        assert.notEqual(echoed[0].id, echoed[1].id);
        const system = await next((m) => m.event === 'system' && m.topic === 'realtime:raw-10');
        assert.deepEqual(system.msg.payload, {
          message: 'Subscribed to PostgreSQL',
          status: 'ok',
          extension: 'postgres_changes',
          channel: 'raw-10',
        });

        send('10', '11', 'realtime:raw-10', 'phx_leave', {});
        const left = await next((m) => m.ref === '11');
        assert.deepEqual(left.msg.payload, { status: 'ok', response: {} });
        const closed = await next((m) => m.event === 'phx_close');
        assert.equal(closed.msg.ref, '10');
        assert.deepEqual(closed.msg.payload, {});
      } finally {
        ws.close();
      }
    });
  }

  test('a channel whose access token expires is closed with a system error', async () => {
    const ws = new WebSocket(url('2.0.0'));
    const messages = [];
    ws.on('message', (data) => messages.push(JSON.parse(data.toString())));
    await new Promise((resolve, reject) => ws.on('open', resolve).on('error', reject));
    try {
      const token = signJwt({ role: 'anon', exp: Math.floor(Date.now() / 1000) + 2 });
      const binding = bess(null, 'INSERT');
      ws.send(JSON.stringify(['1', '1', 'realtime:expiring', 'phx_join', { config: { postgres_changes: [binding] }, access_token: token }]));
      const deadline = Date.now() + 10_000;
      while (!messages.some((m) => m[3] === 'phx_close') && Date.now() < deadline) await sleep(100);
      const [reply, subscribed, system, close] = messages;
      assert.deepEqual(reply.slice(0, 4), ['1', '1', 'realtime:expiring', 'phx_reply']);
      assert.equal(reply[4].status, 'ok');
      assert.equal(subscribed[4].message, 'Subscribed to PostgreSQL');
      assert.equal(system[3], 'system');
      assert.equal(system[4].status, 'error');
      assert.match(system[4].message, /Token has expired/);
      assert.deepEqual(close, ['1', '1', 'realtime:expiring', 'phx_close', {}]);
    } finally {
      ws.close();
    }
  });

  test('a client that stops reading is disconnected; the others keep receiving', async () => {
    // 4,000 rows of 16 kB: far more than the server queues for one client plus what the
    // sockets and the router buffer, so the stalled client must be dropped.
    const rows = 4000;
    const table = `rt_bulk_${uuid().slice(0, 8)}`;
    await sql(`CREATE TABLE flux.${table} (id int PRIMARY KEY, payload text NOT NULL)`);
    await sql(`GRANT SELECT ON flux.${table} TO anon`);
    await sql(`ALTER PUBLICATION supabase_realtime ADD TABLE flux.${table}`);
    const open = async () => {
      const ws = new WebSocket(url('2.0.0'));
      const state = { ws, received: 0, closed: false, joined: null };
      state.joined = new Promise((resolve, reject) => {
        ws.on('message', (data) => {
          const [, ref, , event, payload] = JSON.parse(data.toString());
          if (event === 'postgres_changes') state.received++;
          if (ref === '1') (payload.status === 'ok' ? resolve : reject)(payload);
        });
      });
      ws.on('close', () => (state.closed = true));
      ws.on('error', () => (state.closed = true));
      await new Promise((resolve, reject) => ws.on('open', resolve).on('error', reject));
      const binding = { event: 'INSERT', schema: 'flux', table };
      ws.send(JSON.stringify(['1', '1', 'realtime:bulk', 'phx_join', { config: { postgres_changes: [binding] }, access_token: anonKey }]));
      await state.joined;
      return state;
    };
    const [fast, slow] = [await open(), await open()];
    try {
      slow.ws._socket.pause(); // stop reading: the server's writes back up
      await sql(`INSERT INTO flux.${table} SELECT i, repeat('x', 16000) FROM generate_series(1, ${rows}) i`);
      const deadline = Date.now() + 60_000;
      while (fast.received < rows && Date.now() < deadline) await sleep(100);
      assert.equal(fast.received, rows, 'the reading client got every row');
      // The server drops a client that stays too far behind for a few seconds; the client
      // itself only sees that once it reads again, so watch the server's connection count.
      const connections = async () => (await (await fetch(`${env.FLUX_URL}/realtime/v1/health`)).json()).connections;
      const before = await connections();
      while ((await connections()) >= before && Date.now() < deadline) await sleep(200);
      slow.ws._socket.resume();
      while (!slow.closed && Date.now() < deadline) await sleep(100);
      assert.ok(slow.closed, 'the stalled client was disconnected');
      assert.ok(slow.received < rows, `the stalled client got ${slow.received} rows`);
    } finally {
      fast.ws.close();
      slow.ws.terminate();
      await sql(`DROP TABLE flux.${table}`);
    }
  });
});

test('subscriptions survive a PostgreSQL restart (both clients)', async () => {
  const clients = flavors.map((f) => new Client(f, anonKey));
  try {
    const device = await registerDevice({ type: 'bess' });
    await Promise.all(clients.map((c) => c.subscribe('r', 'restart', [bess(`device_id=eq.${device.id}`)])));
    await insertReadings([{ device_id: device.id, time: at(BASE, 61), soe: 61 }]);
    await Promise.all(clients.map((c) => c.waitForChange('r', (p) => p.new.soe === 61, 'the row before the restart')));

    await closeSql(); // its connections are about to be cut
    const since = new Date();
    restartPostgres();
    await waitForFeed(since);
    // PostgREST reconnects on its own; retry until it takes the row.
    const time = at(BASE, 62);
    for (let tries = 0; ; tries++) {
      const res = await service('/mg_bess_readings', { method: 'POST', body: { device_id: device.id, time, soe: 62 } });
      if (res.status === 201) break;
      if (tries > 60) assert.fail(`PostgREST did not recover: ${res.status} ${JSON.stringify(res.body)}`);
      await sleep(500);
    }
    for (const c of clients) {
      const { payload } = await c.waitForChange('r', (p) => p.new.soe === 62, 'the row after the restart', 20_000);
      assert.ok(sameTime(payload.new.time, time));
      assert.equal(payload.eventType, 'INSERT');
    }
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
});
