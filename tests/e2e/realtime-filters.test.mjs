// Realtime filters give PostgreSQL's answers: each filter's deliveries are checked against the
// same condition as a WHERE clause over the same rows. The server compares numbers, booleans,
// uuids, zoned times and C-ordered text itself; PostgreSQL evaluates the rest (a non-C
// collation, character(n), citext, jsonb, interval, times without a zone) in the batch's
// query. Bad values and types without the operator are join errors with PostgreSQL's message.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { env, anonKey, sql, closeSql, sleep, uuid } from './lib.mjs';

const table = `rt_collated_${uuid().slice(0, 8)}`;

before(async () => {
  await sql('CREATE EXTENSION IF NOT EXISTS citext SCHEMA public');
  await sql(`CREATE TABLE flux.${table} (id int PRIMARY KEY, label text COLLATE "und-x-icu",
    code character(4), email public.citext, doc jsonb, span interval, raw json, plain text,
    at timestamptz, amount numeric, ratio float8, flag boolean, ref uuid, tags int4[], docs json[])`);
  await sql(`GRANT SELECT ON flux.${table} TO anon`);
  await sql(`ALTER PUBLICATION supabase_realtime ADD TABLE flux.${table}`);
});

after(async () => {
  await sql(`DROP TABLE IF EXISTS flux.${table}`);
  await closeSql();
});

async function connect() {
  const ws = new WebSocket(`${env.FLUX_REALTIME_URL}/websocket?apikey=${anonKey}&vsn=2.0.0`);
  const inbox = [];
  ws.on('message', (d) => inbox.push(JSON.parse(d.toString())));
  await new Promise((resolve, reject) => ws.on('open', resolve).on('error', reject));
  return { ws, inbox };
}

async function join(filters) {
  const client = await connect();
  const bindings = filters.map((filter) => ({ event: '*', schema: 'flux', table, ...(filter && { filter }) }));
  client.ws.send(JSON.stringify(['1', '1', `realtime:${table}`, 'phx_join', { config: { postgres_changes: bindings } }]));
  for (const deadline = Date.now() + 5000; !client.inbox.some((m) => m[1] === '1'); await sleep(20)) {
    assert.ok(Date.now() < deadline, 'no join reply');
  }
  client.reply = client.inbox.find((m) => m[1] === '1')[4];
  return client;
}

async function refusal(filter) {
  const { ws, reply } = await join([filter]);
  ws.close();
  return reply;
}

// [filter, the same condition in SQL]
const cases = [
  ['label=lt.b', `label < 'b'`],
  ['label=gte.B', `label >= 'B'`],
  ['label=eq.Äpfel', `label = 'Äpfel'`],
  ['code=eq.ab', `code = 'ab'::bpchar`],
  ['code=in.(ab,"cd  ")', `code IN ('ab', 'cd  ')`],
  ['email=eq.OPS@Example.com', `email = 'OPS@Example.com'::public.citext`],
  ['email=gt.m', `email > 'm'::public.citext`],
  ['doc=eq.{"b": 2, "a": 1}', `doc = '{"b": 2, "a": 1}'::jsonb`],
  ['doc=gt.{"a": 1}', `doc > '{"a": 1}'::jsonb`],
  ['span=eq.24 hours', `span = '24 hours'::interval`],
  ['span=lt.1 day', `span < '1 day'::interval`],
  ['plain=gt.m', `plain > 'm'`],
  ['at=gt.2026-01-01 10:00+02', `at > '2026-01-01 10:00+02'`],
  ['at=lt.2026-01-01 09:30', `at < '2026-01-01 09:30'`],
  ['at=gte.Jan 1 2026 08:00 UTC', `at >= 'Jan 1 2026 08:00 UTC'`],
  ['amount=in.(2,2.000,1e400)', `amount IN (2, 2.000, 1e400)`],
  ['amount=gte.1.50', `amount >= 1.50`],
  ['ratio=gt.Infinity', `ratio > 'Infinity'`],
  ['flag=eq.yes', `flag`],
  ['ref=eq.{8D694730EB5A42D9A4B4B375E433B33B}', `ref = '8d694730-eb5a-42d9-a4b4-b375e433b33b'`],
  ['tags=in.("{1,2}","{3}")', `tags IN ('{1,2}', '{3}')`],
];

const rows = [
  [1, 'apple', 'ab', 'ops@example.com', '{"a": 1, "b": 2}', '1 day', 'zebra', '2026-01-01T08:00Z', '2', 1.5, true, '8d694730-eb5a-42d9-a4b4-b375e433b33b', '{1,2}', '{"{}"}'],
  [2, 'Banana', 'cd', 'alice@example.com', '{"a": 2}', '23 hours', 'apple', '2026-01-01T09:00Z', '1.5', 'NaN', false, null, '{2,1}', '{"[]"}'],
  [3, 'Äpfel', 'ab  ', 'OPS@EXAMPLE.COM', '{"a": 1}', '25 hours', 'Mango', '2026-01-01T07:59:59.999999Z', '1.49', 'Infinity', null, null, '{3}', null],
  [4, 'b', 'x', 'zed@example.com', '[1]', '1 mon', 'm', '2026-01-01T10:00Z', '2.0', -1, true, '00000000-0000-0000-0000-000000000000', '{}', '{}'],
  [5, 'äpfel', null, null, null, null, null, null, null, null, null, null, null, null],
];

test('filters PostgreSQL evaluates deliver exactly what the same condition selects', async () => {
  const client = await join([...cases.map(([f]) => f), null]);
  after(() => client.ws.close());
  assert.equal(client.reply.status, 'ok', JSON.stringify(client.reply));
  const ids = client.reply.response.postgres_changes.map((b) => b.id);
  await sleep(200);
  for (const r of rows) {
    await sql(`INSERT INTO flux.${table} (id, label, code, email, doc, span, plain, at, amount, ratio, flag, ref, tags, docs)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`, r);
  }
  const unfiltered = ids.at(-1);
  const deliveries = () => client.inbox.filter((m) => m[3] === 'postgres_changes');
  for (const deadline = Date.now() + 10_000; ; await sleep(50)) {
    const last = deliveries().filter((m) => m[4].ids.includes(unfiltered)).map((m) => m[4].data.record.id);
    if (last.includes(rows.at(-1)[0])) break;
    assert.ok(Date.now() < deadline, 'the unfiltered binding did not get every row');
  }
  for (const [i, [filter, condition]] of cases.entries()) {
    const got = deliveries().filter((m) => m[4].ids.includes(ids[i])).map((m) => m[4].data.record.id).sort();
    const want = (await sql(`SELECT id FROM flux.${table} WHERE ${condition} ORDER BY id`)).map((r) => r.id);
    assert.deepEqual(got, want, `${filter}: delivered ${got}, PostgreSQL selects ${want}`);
  }
});

test('a value PostgreSQL rejects, or a type without the operator, is a join error with its message', async () => {
  assert.match((await refusal('doc=eq.{nope')).response.reason, /^InvalidFilter: invalid input syntax for type json/);
  assert.match((await refusal('span=gt.soon')).response.reason, /^InvalidFilter: invalid input syntax for type interval/);
  assert.match((await refusal('amount=eq.1,5')).response.reason, /^InvalidFilter: invalid input syntax for type numeric/);
  assert.match((await refusal('at=lt.whenever')).response.reason, /^InvalidFilter: invalid input syntax for type timestamp with time zone/);
  assert.match((await refusal('raw=eq.{}')).response.reason, /^InvalidFilter: operator does not exist: json = json/);
  assert.match((await refusal('docs=eq.{}')).response.reason, /^InvalidFilter: could not identify an equality operator for type json/);
  assert.equal((await refusal('label=lt.m')).status, 'ok');
});

test('a filter PostgreSQL can no longer evaluate (its column retyped after the join) costs only its own deliveries', async () => {
  const retyped = `rt_retyped_${uuid().slice(0, 8)}`;
  await sql(`CREATE TABLE flux.${retyped} (id int PRIMARY KEY, span interval, code character(4))`);
  await sql(`GRANT SELECT ON flux.${retyped} TO anon`);
  await sql(`ALTER PUBLICATION supabase_realtime ADD TABLE flux.${retyped}`);
  const client = await connect();
  try {
    const bindings = ['span=eq.1 day', 'code=eq.ab'].map((filter) => ({ event: 'INSERT', schema: 'flux', table: retyped, filter }));
    client.ws.send(JSON.stringify(['1', '1', `realtime:${retyped}`, 'phx_join', { config: { postgres_changes: bindings } }]));
    for (const deadline = Date.now() + 5000; !client.inbox.some((m) => m[1] === '1'); await sleep(20)) {
      assert.ok(Date.now() < deadline, 'no join reply');
    }
    const [spanId, codeId] = client.inbox.find((m) => m[1] === '1')[4].response.postgres_changes.map((b) => b.id);
    // `span = <interval>` has no operator once span is text: the batch's query fails.
    await sql(`ALTER TABLE flux.${retyped} ALTER COLUMN span TYPE text USING span::text`);
    await sql(`INSERT INTO flux.${retyped} VALUES (1, '1 day', 'ab')`);
    for (const deadline = Date.now() + 10_000; !client.inbox.some((m) => m[3] === 'postgres_changes'); await sleep(50)) {
      assert.ok(Date.now() < deadline, 'the code filter delivered nothing');
    }
    await sleep(300);
    const delivered = client.inbox.filter((m) => m[3] === 'postgres_changes').map((m) => m[4].ids);
    assert.deepEqual(delivered, [[codeId]], `span binding ${spanId}`);
  } finally {
    client.ws.close();
    await sql(`DROP TABLE IF EXISTS flux.${retyped}`);
  }
});
