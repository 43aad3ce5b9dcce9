// Shared helpers of the end-to-end tests: connection details of the running stack, HTTP calls
// through the router exactly as a client makes them, and direct SQL for checking what is stored.
import { readFileSync } from 'node:fs';
import { createHmac, randomUUID } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request as httpRequest } from 'node:http';
import pg from 'pg';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const home = process.env.FLUX_HOME ?? join(root, '.flux');

export const env = Object.fromEntries(
  readFileSync(join(home, 'stack.env'), 'utf8')
    .split('\n')
    .filter((line) => line.includes('='))
    .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
);

export const anonKey = env.FLUX_ANON_KEY;
export const serviceKey = env.FLUX_SERVICE_ROLE_KEY;

/**
 * One HTTP request to the REST API. `key` goes into `apikey` and (unless `bearer` is false)
 * `Authorization: Bearer`. Returns { status, headers, body } with body parsed as JSON if any.
 */
export async function api(path, { method = 'GET', key = anonKey, bearer = true, body, headers = {}, signal } = {}) {
  const h = { ...headers };
  if (key !== null) h.apikey ??= key;
  if (key !== null && bearer) h.Authorization ??= `Bearer ${key}`;
  if (body !== undefined) h['Content-Type'] ??= 'application/json';
  const res = await fetch(`${env.FLUX_API_URL}${path}`, {
    method,
    headers: h,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal,
  });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = text === '' ? null : JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/**
 * One HTTP request to PostgREST itself, bypassing the router (as a client on the machine
 * could): `{ status, headers, body }`.
 */
export async function postgrest(path, { headers = {} } = {}) {
  const port = Number(new URL(env.FLUX_URL).port) + 3;
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text === '' ? null : JSON.parse(text) };
}

/**
 * One HTTP request to the router from a chosen loopback address (`from`, e.g. 127.0.0.7), so
 * that a test is its own client as far as per-address limits go. `body` is sent as given
 * (string or Buffer). Resolves to `{ status, headers, body }` (body parsed if JSON).
 */
export function fromAddress(from, path, { method = 'GET', headers = {}, body } = {}) {
  const url = new URL(env.FLUX_URL);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, path, method, headers, localAddress: from, agent: false },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed = text;
          try {
            parsed = text === '' ? null : JSON.parse(text);
          } catch {
            // not JSON
          }
          resolve({ status: res.statusCode, headers: res.headers, body: parsed });
        });
      },
    );
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** The same request as the service role (full rights). */
export const service = (path, opts = {}) => api(path, { key: serviceKey, ...opts });

let pool;
/** Runs SQL as the superuser; returns the rows. */
export async function sql(text, params = []) {
  pool ??= new pg.Pool({ connectionString: env.FLUX_DB_URL, max: 2 });
  return (await pool.query(text, params)).rows;
}
export async function closeSql() {
  await pool?.end();
  pool = undefined;
}

export const uuid = () => randomUUID();

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `check` resolves truthy (a rejection counts as not yet), at most `seconds`. */
export async function until(what, check, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await sleep(200);
  }
  throw new Error(`${what}: not within ${seconds} s`);
}

/**
 * An HS256 JWT with these claims (and `exp` an hour ahead unless given), signed here with
 * `secret` (default: the stack's), for tokens the database would refuse to mint.
 */
export function signJwt(claims, secret = env.FLUX_JWT_SECRET) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** A JWT signed by the database (flux.sign_jwt) with these claims. */
export async function mintToken(claims, validFor = '1 hour') {
  return (await sql('SELECT flux.sign_jwt($1::jsonb, $2::interval) AS token', [JSON.stringify(claims), validFor]))[0].token;
}

/** A unique, readable name: tests share one database and run in parallel. */
export const uniqueName = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;

/** Registers a device through the API (service role) and returns its row. */
export async function registerDevice({ type = 'meter', site = 'WLCE', metadata, name } = {}) {
  const res = await service('/mg_device_registry', {
    method: 'POST',
    headers: { Prefer: 'return=representation' },
    body: { name: name ?? uniqueName(`TEST-${type.toUpperCase()}`), type, site, ...(metadata && { metadata }) },
  });
  if (res.status !== 201) throw new Error(`device registration failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body[0];
}

/** ISO timestamp `minutes` after `base`. */
export const at = (base, minutes) => new Date(Date.parse(base) + minutes * 60_000).toISOString();

/** Asserts a PostgREST-style error: status, SQLSTATE/PGRST code and the documented body keys. */
export function assertError(assert, res, status, code) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.deepEqual(Object.keys(res.body).sort(), ['code', 'details', 'hint', 'message']);
  if (code) assert.equal(res.body.code, code, JSON.stringify(res.body));
  assert.ok(res.body.message.length > 0);
}
