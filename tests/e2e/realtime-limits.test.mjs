// The realtime server's limits at their documented defaults (README: Realtime, "Limits"), with
// raw WebSocket clients: channels, bindings and joins per connection, connections per client
// address, messages per connection, presence calls, and expired keys. Each test connects from
// a loopback address of its own, so that the per-address limit of one does not reach another.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { env, anonKey, signJwt, registerDevice, service, closeSql, sleep } from './lib.mjs';

after(closeSql);

let nextAddress = 40;
/** A raw vsn 2.0.0 client from its own loopback address (or the given one). */
async function client({ key = anonKey, from = `127.0.3.${nextAddress++}` } = {}) {
  const ws = new WebSocket(`${env.FLUX_REALTIME_URL}/websocket?apikey=${key}&vsn=2.0.0`, { localAddress: from });
  const inbox = [];
  ws.on('message', (data) => inbox.push(JSON.parse(data.toString())));
  await new Promise((resolve, reject) => ws.on('open', resolve).on('error', reject).on('unexpected-response', (req, res) => reject(new Error(`HTTP ${res.statusCode}`))));
  let ref = 0;
  const c = {
    ws, inbox, from,
    push(topic, event, payload, joinRef = '1') {
      const r = String(++ref);
      ws.send(JSON.stringify([joinRef, r, topic, event, payload]));
      return r;
    },
    async reply(r, what = `reply ${r}`) {
      for (const deadline = Date.now() + 5000; Date.now() < deadline; await sleep(10)) {
        const m = inbox.find((x) => x[1] === r && x[3] === 'phx_reply');
        if (m) return m[4];
      }
      throw new Error(`no ${what}; got ${JSON.stringify(inbox.slice(-5))}`);
    },
    join(topic, config = {}, extra = {}) {
      return c.reply(c.push(topic, 'phx_join', { config, ...extra }), `join of ${topic}`);
    },
    close: () => ws.close(),
  };
  return c;
}
const bindings = (n) => Array.from({ length: n }, () => ({ event: 'INSERT', schema: 'flux', table: 'mg_bess_readings' }));

test('a connection joins at most 100 channels, paced at 10 joins a second (bursts of 20)', async () => {
  const c = await client();
  try {
    const burst = await Promise.all(Array.from({ length: 25 }, (_, i) => c.join(`realtime:burst-${i}`)));
    const refused = burst.filter((r) => r.status === 'error');
    assert.ok(refused.length >= 4 && refused.length <= 5, `${refused.length} of 25 refused`);
    assert.match(refused[0].response.reason, /^TooManyJoins: at most 10 joins per second per connection$/);
    // Paced, it goes up to the channel limit and no further.
    let joined = burst.length - refused.length;
    while (joined < 100) {
      await sleep(110);
      if ((await c.join(`realtime:ch-${joined}`)).status === 'ok') joined++;
    }
    await sleep(200);
    const over = await c.join('realtime:one-too-many');
    assert.equal(over.status, 'error');
    assert.match(over.response.reason, /^TooManyChannels: at most 100 channels per connection$/);
  } finally {
    c.close();
  }
});

test('a connection holds at most 100 postgres_changes bindings across its channels', async () => {
  const c = await client();
  try {
    assert.equal((await c.join('realtime:b1', { postgres_changes: bindings(60) })).status, 'ok');
    const over = await c.join('realtime:b2', { postgres_changes: bindings(41) });
    assert.equal(over.status, 'error');
    assert.match(over.response.reason, /^TooManyBindings: at most 100 postgres_changes bindings per connection \(60 held\)$/);
    assert.equal((await c.join('realtime:b2', { postgres_changes: bindings(40) })).status, 'ok');
    // Re-joining a topic replaces its bindings rather than adding to them.
    assert.equal((await c.join('realtime:b1', { postgres_changes: bindings(60) })).status, 'ok');
  } finally {
    c.close();
  }
});

test('one client address opens at most 100 connections; others are still served', async () => {
  const from = '127.0.3.200';
  const open = [];
  try {
    for (let i = 0; i < 100; i++) open.push(await client({ from }));
    await assert.rejects(client({ from }), /HTTP 429/);
    const other = await client(); // another address is served
    other.close();
    // A closed connection gives its place back.
    open.pop().close();
    for (const deadline = Date.now() + 3000; ; await sleep(100)) {
      const again = await client({ from }).catch((e) => e);
      if (!(again instanceof Error)) {
        open.push(again);
        break;
      }
      assert.ok(Date.now() < deadline, `the place was not given back: ${again.message}`);
    }
  } finally {
    open.forEach((c) => c.close());
  }
});

test('a connection sending more than 100 messages a second (bursts of 200) loses the channel', async () => {
  const c = await client();
  try {
    await c.join('realtime:chatty', { broadcast: { self: false } });
    for (let i = 0; i < 260; i++) c.push('realtime:chatty', 'broadcast', { type: 'broadcast', event: 'spam', payload: { i } });
    for (const deadline = Date.now() + 5000; !c.inbox.some((m) => m[3] === 'phx_close'); await sleep(20)) {
      assert.ok(Date.now() < deadline, 'the channel was not closed');
    }
    const system = c.inbox.find((m) => m[3] === 'system' && m[4].status === 'error');
    assert.match(system[4].message, /^Too many messages per second: at most 100 per connection$/);
  } finally {
    c.close();
  }
});

test('a broadcast payload over 256 kB is refused with payload_size_exceeded', async () => {
  const c = await client();
  try {
    await c.join('realtime:big', { broadcast: { ack: true } });
    const r = c.push('realtime:big', 'broadcast', { type: 'broadcast', event: 'x', payload: { blob: 'x'.repeat(300 << 10) } });
    assert.deepEqual(await c.reply(r), { status: 'error', response: { error: 'payload_size_exceeded' } });
    const ok = c.push('realtime:big', 'broadcast', { type: 'broadcast', event: 'x', payload: { small: true } });
    assert.deepEqual(await c.reply(ok), { status: 'ok', response: {} });
  } finally {
    c.close();
  }
});

test('presence: 5 calls per 30 s per channel, a map as meta, known events only', async () => {
  const c = await client();
  try {
    await c.join('realtime:presence-limits', { presence: { key: 'k', enabled: true } });
    const track = (payload) => c.reply(c.push('realtime:presence-limits', 'presence', { type: 'presence', event: 'track', payload }));
    assert.deepEqual(await track([1, 2]), { status: 'error', response: { reason: 'Presence track payload must be a map' } });
    const unknown = await c.reply(c.push('realtime:presence-limits', 'presence', { type: 'presence', event: 'wave' }));
    assert.deepEqual(unknown, { status: 'error', response: { reason: 'UnknownPresenceEvent' } });
    assert.equal((await track({ n: 1 })).status, 'ok');
    assert.equal((await track({ n: 2 })).status, 'ok');
    assert.equal((await track({ n: 3 })).status, 'ok');
    c.push('realtime:presence-limits', 'presence', { type: 'presence', event: 'track', payload: { n: 4 } });
    for (const deadline = Date.now() + 5000; !c.inbox.some((m) => m[3] === 'phx_close'); await sleep(20)) {
      assert.ok(Date.now() < deadline, 'the channel was not closed');
    }
    assert.equal(c.inbox.find((m) => m[3] === 'system' && m[4].status === 'error')[4].message, 'Client presence rate limit exceeded');
  } finally {
    c.close();
  }
});

test('a presence meta over 8 kB closes the channel; one within it is tracked', async () => {
  const c = await client();
  try {
    await c.join('realtime:presence-size', { presence: { key: 'k', enabled: true } });
    const track = (payload) => c.push('realtime:presence-size', 'presence', { type: 'presence', event: 'track', payload });
    assert.equal((await c.reply(track({ note: 'x'.repeat(8000) }))).status, 'ok');
    track({ note: 'x'.repeat(9000) });
    for (const deadline = Date.now() + 5000; !c.inbox.some((m) => m[3] === 'phx_close'); await sleep(20)) {
      assert.ok(Date.now() < deadline, 'the channel was not closed');
    }
    assert.equal(c.inbox.find((m) => m[3] === 'system' && m[4].status === 'error')[4].message, 'Track message size exceeded');
  } finally {
    c.close();
  }
});

test('an expired api key receives nothing more: its channels close and re-joins are refused', async () => {
  const device = await registerDevice({ type: 'bess' });
  const key = signJwt({ role: 'anon', exp: Math.floor(Date.now() / 1000) + 3 });
  const c = await client({ key });
  try {
    const topic = 'realtime:expiring';
    const filter = `device_id=eq.${device.id}`;
    const changes = { postgres_changes: [{ event: 'INSERT', schema: 'flux', table: 'mg_bess_readings', filter }] };
    assert.equal((await c.join(topic, changes)).status, 'ok');
    for (const deadline = Date.now() + 8000; !c.inbox.some((m) => m[3] === 'phx_close'); await sleep(50)) {
      assert.ok(Date.now() < deadline, 'the channel was not closed when its key expired');
    }
    assert.match(c.inbox.find((m) => m[3] === 'system' && m[4].status === 'error')[4].message, /^Token has expired \d+ seconds ago$/);
    // Re-joining without an access token falls back to the expired key: refused.
    const again = await c.join(topic, changes);
    assert.equal(again.status, 'error');
    assert.match(again.response.reason, /^InvalidJWTToken: Token has expired \d+ seconds ago$/);
    const res = await service('/mg_bess_readings', { method: 'POST', body: { device_id: device.id, time: new Date().toISOString(), soe: 50 } });
    assert.equal(res.status, 201);
    await sleep(1000);
    assert.equal(c.inbox.filter((m) => m[3] === 'postgres_changes').length, 0);
    // A valid access token still opens a channel on that connection.
    const token = signJwt({ role: 'anon' });
    assert.equal((await c.join(topic, changes, { access_token: token })).status, 'ok');
  } finally {
    c.close();
  }
});
