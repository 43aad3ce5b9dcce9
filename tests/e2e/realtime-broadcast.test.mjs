// Broadcast and Presence with real supabase-js clients: 2.90 on Node 20 (vsn 1.0.0, `ws` as its
// transport) and 2.119 on Node 22 (vsn 2.0.0, whose broadcasts are binary frames), each with
// itself and with the other; the REST endpoint; private channels; bad input.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { env, anonKey, serviceKey, mintToken, sql, service, api, closeSql } from './lib.mjs';
import { Client, flavors } from './realtime/harness.mjs';

after(closeSql);

const pairs = [
  [flavors[0], flavors[0]],
  [flavors[1], flavors[1]],
  [flavors[1], flavors[0]],
  [flavors[0], flavors[1]],
];
const room = (what) => `${what}-${randomUUID().slice(0, 8)}`;
const short = (f) => f.name.split(' (')[0];

for (const [fa, fb] of pairs) {
  describe(`broadcast and presence: ${short(fa)} → ${short(fb)}`, () => {
    const a = new Client(fa, anonKey);
    const b = new Client(fb, anonKey);
    after(() => Promise.all([a.close(), b.close()]));

    test('a broadcast reaches the other client, not the sender unless self; ack answers it', async () => {
      const name = room('cmd');
      await a.join('a', name, { broadcast: { ack: true } });
      await b.join('b', name, { broadcast: { self: true } });
      assert.equal(await a.broadcast('a', 'setpoint', { device: 'BESS-01', kw: -50 }), 'ok');
      const got = await b.waitFor((e) => e.type === 'broadcast' && e.id === 'b', 'the broadcast');
      assert.deepEqual({ ...got.payload, meta: undefined }, { type: 'broadcast', event: 'setpoint', payload: { device: 'BESS-01', kw: -50 }, meta: undefined });
      // b asked for its own messages; a did not.
      await b.broadcast('b', 'echo', { n: 1 });
      await b.waitFor((e) => e.type === 'broadcast' && e.id === 'b' && e.payload.event === 'echo', 'its own broadcast');
      await a.waitFor((e) => e.type === 'broadcast' && e.id === 'a' && e.payload.event === 'echo', 'b\'s broadcast');
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(a.broadcasts('a').map((p) => p.event), ['echo'], 'a never hears its own setpoint');
    });

    test('presence: state after join, joins, updates and leaves, cleaned up on disconnect', async () => {
      const name = room('who');
      const c = new Client(fa, anonKey);
      try {
        await a.join('pa', name, { presence: { key: 'operator-ann', enabled: true } });
        await c.join('pc', name, { presence: { key: 'gateway-7', enabled: true } });
        await b.join('pb', name, { presence: { key: 'viewer-bo', enabled: true } });
        assert.equal(await a.track('pa', { status: 'online' }), 'ok');
        assert.equal(await c.track('pc', { status: 'online', site: 'WLCE' }), 'ok');
        const state = await b.presence('pb', (s) => s['operator-ann'] && s['gateway-7'], 'both presences');
        assert.equal(state['gateway-7'][0].site, 'WLCE');
        assert.equal(typeof state['operator-ann'][0].presence_ref, 'string');
        // An update replaces the meta; untrack removes it.
        await a.track('pa', { status: 'away' });
        await b.presence('pb', (s) => s['operator-ann']?.[0]?.status === 'away', 'the update');
        assert.equal(await a.track('pa', null), 'ok');
        await b.presence('pb', (s) => !s['operator-ann'] && s['gateway-7'], 'the untrack');
        // A client that goes away leaves.
        await c.close();
        await b.presence('pb', (s) => !s['gateway-7'], 'the disconnect');
        await b.waitFor((e) => e.type === 'presence' && e.id === 'pb' && e.event === 'leave' && e.key === 'gateway-7', 'a leave event');
        // A newcomer gets the current state at once.
        await b.track('pb', { status: 'watching' });
        const late = new Client(fb, anonKey);
        try {
          await late.join('pl', name, { presence: { enabled: true } });
          await late.presence('pl', (s) => s['viewer-bo']?.[0]?.status === 'watching', 'the state after join');
        } finally {
          await late.close();
        }
      } finally {
        await c.close();
      }
    });

    test('the REST endpoint broadcasts to the channel (202)', async () => {
      const name = room('rest');
      await b.join('rb', name, {});
      const res = await fetch(`${env.FLUX_URL}/realtime/v1/api/broadcast`, {
        method: 'POST',
        headers: { apikey: anonKey, Authorization: `Bearer ${anonKey}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ messages: [{ topic: name, event: 'price', payload: { gbp_mwh: 81.5 }, id: 'm-1' }] }),
      });
      assert.equal(res.status, 202);
      assert.equal(await res.text(), '');
      const got = await b.waitFor((e) => e.type === 'broadcast' && e.id === 'rb', 'the REST broadcast');
      assert.equal(got.payload.event, 'price');
      assert.deepEqual(got.payload.payload, { gbp_mwh: 81.5 });
      assert.deepEqual(got.payload.meta, { id: 'm-1' });
    });
  });
}

describe('broadcast: private channels and bad input', () => {
  test('a private channel admits whom the policies on realtime.messages admit, in every direction', async () => {
    const name = room('private');
    // Readers of the room hear its broadcasts and presence; senders (can_send) may also send
    // and track. Claims name the room, so no other test's tokens match these policies.
    const policy = `rt_${name.replace(/-/g, '_')}`;
    const claim = (key) => `(current_setting('request.jwt.claims', true)::jsonb ->> '${key}')`;
    await sql(`CREATE POLICY ${policy}_read ON realtime.messages FOR SELECT TO authenticated
      USING (realtime.topic() = ${claim('room')})`);
    await sql(`CREATE POLICY ${policy}_send ON realtime.messages FOR INSERT TO authenticated
      WITH CHECK (realtime.topic() = ${claim('room')} AND ${claim('can_send')} = 'yes')`);
    const token = (claims) => mintToken({ role: 'authenticated', ...claims });
    const readerToken = await token({ room: name });
    const senderToken = await token({ room: name, can_send: 'yes' });
    const reader = new Client(flavors[0], anonKey, readerToken);
    const sender = new Client(flavors[1], anonKey, senderToken);
    const stranger = new Client(flavors[1], anonKey, await token({ room: 'elsewhere', can_send: 'yes' }));
    const anon = new Client(flavors[1], anonKey);
    const listener = new Client(flavors[0], anonKey, await mintToken({ role: 'service_role' }));
    const outsider = new Client(flavors[0], anonKey);
    try {
      const refused = /CHANNEL_ERROR: Unauthorized: You do not have permissions to read from this Channel topic/;
      await assert.rejects(anon.join('x', name, { private: true }), refused);
      await assert.rejects(stranger.join('x', name, { private: true }), refused);
      await listener.join('l', name, { private: true });
      await reader.join('r', name, { private: true, broadcast: { ack: true }, presence: { key: 'reader' } });
      await sender.join('s', name, { private: true, broadcast: { ack: true }, presence: { key: 'sender' } });
      // A public channel of the same name hears nothing private, and its broadcasts stay public.
      await outsider.join('y', name, { broadcast: { ack: true } });
      assert.equal(await outsider.broadcast('y', 'open-breaker', {}), 'ok');
      assert.equal(await sender.broadcast('s', 'open-breaker', { ok: true }), 'ok');
      for (const [client, id] of [[listener, 'l'], [reader, 'r']]) {
        const got = await client.waitFor((e) => e.type === 'broadcast' && e.id === id, 'the sender\'s broadcast');
        assert.deepEqual([got.payload.event, got.payload.payload], ['open-breaker', { ok: true }]);
      }
      // The reader may not send or track: its send is refused, and reaches no one.
      assert.equal(await reader.broadcast('r', 'close-breaker', {}), 'error');
      assert.notEqual(await reader.track('r', { at: 'desk' }), 'ok');
      assert.equal(await sender.track('s', { at: 'site' }), 'ok');
      await reader.presence('r', (state) => state.sender?.[0]?.at === 'site', 'the sender\'s presence');
      // REST: a private message goes out when the caller's policies let it send on the topic.
      const post = (key, event) => fetch(`${env.FLUX_URL}/realtime/v1/api/broadcast`, {
        method: 'POST',
        headers: { apikey: anonKey, Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ messages: [{ topic: name, event, payload: {}, private: true }] }),
      });
      for (const [key, event] of [[anonKey, 'by-anon'], [readerToken, 'by-reader'], [senderToken, 'by-sender'], [serviceKey, 'by-service']]) {
        assert.equal((await post(key, event)).status, 202);
      }
      await listener.waitFor((e) => e.type === 'broadcast' && e.payload.event === 'by-service', 'the service REST broadcast');
      assert.deepEqual(listener.broadcasts('l').map((p) => p.event), ['open-breaker', 'by-sender', 'by-service']);
      assert.deepEqual(outsider.broadcasts('y'), [], 'nothing private reached the public channel');
      // New claims are checked again: a token the policies refuse ends the reader's channel.
      await reader.setAuth(await token({ room: 'elsewhere' }));
      await reader.waitFor((e) => e.type === 'status' && e.id === 'r' && ['CLOSED', 'CHANNEL_ERROR'].includes(e.status), 'the reader\'s channel ended');
      assert.equal(await sender.broadcast('s', 'after-refresh', {}), 'ok');
      await listener.waitFor((e) => e.type === 'broadcast' && e.payload.event === 'after-refresh', 'the broadcast after the refresh');
      assert.ok(!reader.broadcasts('r').some((p) => p.event === 'after-refresh'), 'the refused reader heard nothing more');
    } finally {
      await Promise.all([reader, sender, stranger, anon, listener, outsider].map((c) => c.close()));
      await sql(`DROP POLICY ${policy}_read ON realtime.messages`);
      await sql(`DROP POLICY ${policy}_send ON realtime.messages`);
    }
  });

  test('the REST endpoint refuses bad tokens and malformed batches with clear statuses', async () => {
    const post = (body, key = anonKey, type = 'application/json') => fetch(`${env.FLUX_URL}/realtime/v1/api/broadcast`, {
      method: 'POST', headers: { apikey: key, Authorization: `Bearer ${key}`, 'Content-Type': type }, body,
    });
    const ok = JSON.stringify({ messages: [{ topic: 't', event: 'e', payload: {} }] });
    let res = await post(ok, 'not-a-jwt');
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), { message: 'Unauthorized' });
    res = await fetch(`${env.FLUX_URL}/realtime/v1/api/broadcast`, { method: 'POST', body: ok });
    assert.equal(res.status, 401);
    for (const bad of ['{', '{"messages": 5}', '{"messages": [{"topic": "t", "payload": {}}]}', '{"messages": [{"topic": "t", "event": "e", "payload": [1]}]}']) {
      res = await post(bad);
      assert.equal(res.status, 422, bad);
      assert.match((await res.json()).message, /Invalid batch/);
    }
    res = await post(JSON.stringify({ messages: [{ topic: 't', event: 'e', payload: { blob: 'x'.repeat(300 << 10) } }] }));
    assert.equal(res.status, 422);
    assert.equal((await res.json()).message, 'Payload size exceeds tenant limit');
    res = await post(JSON.stringify({ messages: Array.from({ length: 201 }, () => ({ topic: 't', event: 'e', payload: {} })) }));
    assert.equal(res.status, 429);
    res = await post('x'.repeat(2 << 20));
    assert.equal(res.status, 413);
  });
});

describe('broadcast from the database (flux.broadcast)', () => {
  test('delivered on commit only, to both clients, private messages to private channels only', async () => {
    const name = room('db');
    const a = new Client(flavors[0], anonKey);
    const b = new Client(flavors[1], anonKey);
    const p = new Client(flavors[1], anonKey, await mintToken({ role: 'service_role' }));
    try {
      await a.join('a', name, {});
      await b.join('b', name, {});
      await p.join('p', name, { private: true });
      await assert.rejects(sql(`DO $$ BEGIN PERFORM flux.broadcast('${name}', 'rolled-back', '{}'); RAISE EXCEPTION 'roll back'; END $$`), /roll back/);
      const [{ id }] = await sql('SELECT flux.broadcast($1, $2, $3) AS id', [name, 'alarm', { level: 2, device: 'BESS-01' }]);
      const [{ id: secret }] = await sql('SELECT flux.broadcast($1, $2, $3, true) AS id', [name, 'setpoint', { kw: -40 }]);
      for (const [c, id0] of [[a, 'a'], [b, 'b']]) {
        const got = await c.waitFor((e) => e.type === 'broadcast' && e.id === id0, 'the database broadcast');
        assert.deepEqual(got.payload, { type: 'broadcast', event: 'alarm', payload: { level: 2, device: 'BESS-01' }, meta: { id } });
      }
      const got = await p.waitFor((e) => e.type === 'broadcast' && e.id === 'p', 'the private database broadcast');
      assert.deepEqual(got.payload, { type: 'broadcast', event: 'setpoint', payload: { kw: -40 }, meta: { id: secret } });
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(a.broadcasts('a').map((x) => x.event), ['alarm'], 'no rolled-back or private message reached a public channel');
      assert.deepEqual(b.broadcasts('b').map((x) => x.event), ['alarm']);
      assert.deepEqual(p.broadcasts('p').map((x) => x.event), ['setpoint']);
    } finally {
      await Promise.all([a.close(), b.close(), p.close()]);
    }
  });

  test('bad arguments are 22023/54000; only the service role may call it', async () => {
    for (const [args, code] of [[["''", "'e'"], '22023'], [["'t'", "NULL"], '22023'], [["'t'", "'e'", "'[1]'"], '22023'],
      [["'t'", "'e'", "jsonb_build_object('blob', repeat('x', 300000))"], '54000'], [[`'${'t'.repeat(256)}'`, "'e'"], '22023']]) {
      await assert.rejects(sql(`SELECT flux.broadcast(${args.join(', ')})`), (e) => e.code === code, args.join(', '));
    }
    const anon = await api('/rpc/broadcast', { method: 'POST', body: { topic: 't', event: 'e' } });
    assert.equal(anon.status, 401);
    assert.equal(anon.body.code, '42501');
    const ok = await service('/rpc/broadcast', { method: 'POST', body: { topic: room('rpc'), event: 'e', payload: { a: 1 } } });
    assert.equal(ok.status, 200);
    assert.match(ok.body, /^[0-9a-f-]{36}$/);
  });
});

/** A raw WebSocket client of one vsn: frames as they arrive, text parsed, binary as Buffers. */
async function rawClient(vsn) {
  const { default: WebSocket } = await import('ws');
  const ws = new WebSocket(`${env.FLUX_REALTIME_URL}/websocket?apikey=${anonKey}&vsn=${vsn}`);
  const inbox = [];
  ws.on('message', (data, isBinary) => inbox.push(isBinary ? Buffer.from(data) : JSON.parse(data.toString())));
  await new Promise((resolve, reject) => ws.on('open', resolve).on('error', reject));
  const send = (joinRef, ref, topic, event, payload) =>
    ws.send(JSON.stringify(vsn === '1.0.0' ? { topic, event, payload, ref, join_ref: joinRef } : [joinRef, ref, topic, event, payload]));
  const waitFor = async (pred, what) => {
    for (const deadline = Date.now() + 5000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 20))) {
      const found = inbox.find(pred);
      if (found) return found;
    }
    throw new Error(`vsn ${vsn}: no ${what}; got ${JSON.stringify(inbox)}`);
  };
  return { ws, inbox, send, waitFor };
}

/** A kind-3 frame as supabase-js ≥ 2.81 builds it. */
function userBroadcastPush(joinRef, ref, topic, event, payload, encoding = 1) {
  const parts = [joinRef, ref, topic, event, ''].map((s) => Buffer.from(s));
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload));
  return Buffer.concat([Buffer.from([3, ...parts.map((p) => p.length), encoding]), ...parts, body]);
}

test('raw frames: a binary push goes to vsn 2 as a binary broadcast and to vsn 1 as JSON; bad frames are ignored', async () => {
  const topic = `realtime:${room('raw')}`;
  const v1 = await rawClient('1.0.0');
  const v2 = await rawClient('2.0.0');
  const sender = await rawClient('2.0.0');
  try {
    v1.send('1', '1', topic, 'phx_join', { config: {} });
    v2.send('1', '1', topic, 'phx_join', { config: {} });
    sender.send('1', '1', topic, 'phx_join', { config: { broadcast: { ack: true } } });
    for (const c of [v1, v2, sender]) await c.waitFor((m) => !Buffer.isBuffer(m) && (m.event ?? m[3]) === 'phx_reply', 'join reply');
    // Garbage first: an unknown kind, a truncated frame, bad JSON. None reaches anyone.
    sender.ws.send(Buffer.from([9, 0, 0, 0, 0, 0, 1]));
    sender.ws.send(userBroadcastPush('1', '7', topic, 'e', {}).subarray(0, 10));
    sender.ws.send(Buffer.concat([userBroadcastPush('1', '8', topic, 'e', {}).subarray(0, 7 + 1 + 1 + topic.length + 1), Buffer.from('{nope')]));
    sender.ws.send(userBroadcastPush('1', '9', topic, 'reading', { soe: 61.5 }));
    const ack = await sender.waitFor((m) => Array.isArray(m) && m[1] === '9', 'the ack');
    assert.deepEqual(ack, ['1', '9', topic, 'phx_reply', { status: 'ok', response: {} }]);
    const binary = await v2.waitFor((m) => Buffer.isBuffer(m), 'a binary broadcast');
    const [kind, topicLen, eventLen, metaLen, encoding] = binary;
    assert.deepEqual([kind, topicLen, eventLen, metaLen, encoding], [4, topic.length, 7, 0, 1]);
    assert.equal(binary.subarray(5, 5 + topicLen).toString(), topic);
    assert.equal(binary.subarray(5 + topicLen, 5 + topicLen + eventLen).toString(), 'reading');
    assert.deepEqual(JSON.parse(binary.subarray(5 + topicLen + eventLen).toString()), { soe: 61.5 });
    const json = await v1.waitFor((m) => m.event === 'broadcast', 'a JSON broadcast');
    assert.deepEqual(json, { topic, event: 'broadcast', payload: { type: 'broadcast', event: 'reading', payload: { soe: 61.5 } }, ref: null });
    // Raw bytes cannot reach vsn 1; vsn 2 gets them as they are.
    sender.ws.send(userBroadcastPush('1', '10', topic, 'blob', Buffer.from([0, 1, 2, 255]), 0));
    await v2.waitFor((m) => Buffer.isBuffer(m) && m[4] === 0, 'the raw broadcast');
    assert.deepEqual([...v2.inbox.filter(Buffer.isBuffer).at(-1).subarray(-4)], [0, 1, 2, 255]);
    // A binary frame on vsn 1 is not part of its protocol: ignored, the connection lives on.
    v1.ws.send(userBroadcastPush('1', '11', topic, 'e', {}));
    v1.send(null, '12', 'phoenix', 'heartbeat', {});
    await v1.waitFor((m) => m.ref === '12', 'the heartbeat reply');
    assert.equal(v1.inbox.filter((m) => m.event === 'broadcast').length, 1);
    assert.equal(v2.inbox.filter(Buffer.isBuffer).length, 2, 'only the two good pushes were relayed');
  } finally {
    for (const c of [v1, v2, sender]) c.ws.close();
  }
});
