// Realtime filters compare as PostgreSQL does, or are refused: text is compared byte by byte,
// which is PostgreSQL's order only under a C collation, so an ordering filter on a column of
// another collation (here ICU's root collation) is a join error, as are filters on citext and
// character(n), whose equality is not their text's.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { env, anonKey, sql, closeSql, sleep, uuid } from './lib.mjs';

const table = `rt_collated_${uuid().slice(0, 8)}`;

before(async () => {
  await sql(`CREATE TABLE flux.${table} (id int PRIMARY KEY, label text COLLATE "und-x-icu", code character(4), plain text)`);
  await sql(`GRANT SELECT ON flux.${table} TO anon`);
  await sql(`ALTER PUBLICATION supabase_realtime ADD TABLE flux.${table}`);
});

after(async () => {
  await sql(`DROP TABLE IF EXISTS flux.${table}`);
  await closeSql();
});

async function join(filter) {
  const ws = new WebSocket(`${env.FLUX_REALTIME_URL}/websocket?apikey=${anonKey}&vsn=2.0.0`);
  const inbox = [];
  ws.on('message', (d) => inbox.push(JSON.parse(d.toString())));
  await new Promise((resolve, reject) => ws.on('open', resolve).on('error', reject));
  ws.send(JSON.stringify(['1', '1', `realtime:${table}`, 'phx_join', { config: { postgres_changes: [{ event: '*', schema: 'flux', table, filter }] } }]));
  for (const deadline = Date.now() + 5000; !inbox.some((m) => m[1] === '1'); await sleep(20)) {
    assert.ok(Date.now() < deadline, 'no join reply');
  }
  ws.close();
  return inbox.find((m) => m[1] === '1')[4];
}

test('ordering filters on text of a non-C collation, and filters on citext-like types, are refused', async () => {
  const refused = await join('label=lt.m');
  assert.equal(refused.status, 'error');
  assert.match(refused.response.reason, /^InvalidFilter: operator lt is not supported on column "label": its collation does not order text byte by byte/);
  assert.equal((await join('label=eq.m')).status, 'ok', 'equality holds under any deterministic collation');
  assert.equal((await join('plain=gt.m')).status, 'ok', 'the database default (C.UTF-8) orders by bytes');
  assert.match((await join('code=eq.ab')).response.reason, /^InvalidFilter: filters on column "code" of type bpchar are not supported/);
});
