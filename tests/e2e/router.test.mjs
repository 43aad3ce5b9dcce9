// The router's query-string changes are safe for PostgREST's own grammar: random valid logic
// trees (values full of the grammar's punctuation), raw and percent-encoded, return through the
// router exactly what PostgREST returns for them directly; the reference's nested `or=(`
// spelling returns what PostgREST's `or(` spelling does.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, postgrest, sql, closeSql, uniqueName, anonKey } from './lib.mjs';

after(closeSql);

// A seeded generator, so that a failure names a case that can be replayed.
const seed = Number(process.env.FLUX_FUZZ_SEED ?? Date.now() % 1e9);
let state = seed;
const random = () => {
  state = (state * 1103515245 + 12345) % 2147483648;
  return state / 2147483648;
};
const pick = (list) => list[Math.floor(random() * list.length)];

const ALPHABET = ['a', 'b', 'o', 'r', 'A', ' ', ',', '(', ')', '=', '"', '\\', '.', '*', 'é', '&', ';', '+', '%', '#', ',or=(', '(and=(', 'not.or='];
const text = (exclude = '') => Array.from({ length: 1 + Math.floor(random() * 5) }, () => pick(ALPHABET)).filter((c) => ![...c].some((ch) => exclude.includes(ch))).join('');
const quoted = () => `"${text().replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
const plain = () => `x${text(',)"{*\\')}`;
const value = () => (random() < 0.5 ? quoted() : plain());

function condition(depth) {
  if (depth < 3 && random() < 0.35) {
    const n = 1 + Math.floor(random() * 3);
    return { not: random() < 0.3, op: pick(['and', 'or']), children: Array.from({ length: n }, () => condition(depth + 1)) };
  }
  const not = random() < 0.2 ? 'not.' : '';
  return pick([
    () => `name.${not}eq.${value()}`,
    () => `name.${not}like.*${text(',)"*\\')}*`,
    () => `name.${not}ilike.${quoted()}`,
    () => `name.${not}in.(${Array.from({ length: 1 + Math.floor(random() * 3) }, () => (random() < 0.5 ? quoted() : plain())).join(',')})`,
    () => `type.${not}eq.${pick(['meter', 'bess', 'pv'])}`,
    () => `active.${not}is.${pick(['true', 'false', 'null'])}`,
    () => `metadata->>tag.${not}eq.${value()}`,
  ])();
}

const render = (c, reference) =>
  typeof c === 'string' ? c : `${c.not ? 'not.' : ''}${c.op}${reference ? '=' : ''}(${c.children.map((x) => render(x, reference)).join(',')})`;

/** Percent-encodes what a query string cannot carry raw, and (with `all`) anything at random. */
const encode = (s, all) => [...s].map((ch) => {
  if ('&;%+# '.includes(ch) || ch.charCodeAt(0) > 127 || (all && random() < 0.4)) {
    return ch === ' ' && random() < 0.5 ? '+' : [...Buffer.from(ch)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('');
  }
  return ch;
}).join('');

test(`random logic trees return through the router what PostgREST returns (seed ${seed})`, async () => {
  const site = uniqueName('FUZZ');
  const names = ['plain', 'a,or=(b', 'x"y', 'A and B', 'o(r)', 'é,é', 'ab', 'r=a', 'back\\slash', '*', 'xa', 'xb(o'];
  // Registry names are unique across tests: each carries the site.
  for (const [i, name] of names.entries()) {
    await sql('INSERT INTO flux.mg_device_registry (name, type, site, active, metadata) VALUES ($1, $2, $3, $4, $5)',
      [`${name}~${site}`, pick(['meter', 'bess', 'pv']), site, i % 2 === 0, { tag: pick(['a', 'x"y', 'o(r)', ',']) }]);
  }
  const base = `/mg_device_registry?site=eq.${site}&select=name&order=name`;
  const direct = (query) => postgrest(`${base}&${query}`, { headers: { apikey: anonKey } });
  const routed = (query) => api(`${base}&${query}`);
  let nonEmpty = 0;
  for (let i = 0; i < 150; i++) {
    const tree = { not: random() < 0.3, op: pick(['and', 'or']), children: Array.from({ length: 1 + Math.floor(random() * 3) }, () => condition(1)) };
    const name = `${tree.not ? 'not.' : ''}${tree.op}`;
    const postgrestSpelling = `(${tree.children.map((c) => render(c, false)).join(',')})`;
    const referenceSpelling = `(${tree.children.map((c) => render(c, true)).join(',')})`;
    const expected = await direct(`${name}=${encode(postgrestSpelling, false)}`);
    assert.ok([200, 400].includes(expected.status), `${postgrestSpelling}: ${JSON.stringify(expected.body)}`);
    if (expected.status === 200 && expected.body.length > 0) nonEmpty++;
    for (const [query, what] of [
      [`${name}=${encode(postgrestSpelling, false)}`, 'PostgREST spelling'],
      [`${name}=${encode(postgrestSpelling, true)}`, 'PostgREST spelling, percent-encoded'],
      [`${name}=${encode(referenceSpelling, false)}`, 'reference spelling'],
      [`${name}=${encode(referenceSpelling, true)}`, 'reference spelling, percent-encoded'],
    ]) {
      const got = await routed(query);
      assert.equal(got.status, expected.status, `${what} ${query} (seed ${seed})`);
      assert.deepEqual(got.body, expected.body, `${what} ${query} (seed ${seed})`);
    }
  }
  assert.ok(nonEmpty >= 10, `only ${nonEmpty} trees selected any rows: the comparison needs some`);
});
