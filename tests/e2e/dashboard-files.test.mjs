// The router serves the dashboard's files at / (GET and HEAD only), confined to their directory,
// and nothing there but the public anon key; the API paths are unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { env, anonKey } from './lib.mjs';

/** A raw request, so that the path reaches the router exactly as written (no normalising). */
function raw(method, path) {
  const url = new URL(env.FLUX_URL);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the dashboard is served at / with its scripts, no api key needed', async () => {
  const page = await raw('GET', '/');
  assert.equal(page.status, 200);
  assert.match(page.headers['content-type'], /^text\/html/);
  assert.match(page.body, /<script type="module" src="app.js">/);
  const app = await raw('GET', '/app.js');
  assert.equal(app.status, 200);
  assert.match(app.headers['content-type'], /javascript/);
  assert.ok(app.body.length > 50_000, 'supabase-js and uPlot are bundled, not fetched from a CDN');
  assert.doesNotMatch(app.body, /https:\/\/(cdn|unpkg|esm\.sh)/);
  const head = await raw('HEAD', '/style.css');
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
  // A revalidation is answered from Last-Modified (a rebuild by ./flux up changes it).
  const again = await new Promise((resolve) => {
    const url = new URL(env.FLUX_URL);
    request({ host: url.hostname, port: url.port, path: '/', headers: { 'If-Modified-Since': page.headers['last-modified'] } }, (res) => {
      res.resume();
      resolve(res.statusCode);
    }).end();
  });
  assert.equal(again, 304);
});

test('the page is told the anon key and nothing else', async () => {
  const config = await raw('GET', '/config.json');
  assert.equal(config.status, 200);
  assert.deepEqual(JSON.parse(config.body), { anonKey });
});

test('paths outside the dashboard directory, and writes, are 404s', async () => {
  for (const path of ['/../../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/..%2f..%2fetc%2fpasswd', '//etc/passwd', '/nothing-here.js', '/.%2e/stack.env', '/../stack.env', '/../secrets.env']) {
    const res = await raw('GET', path);
    assert.equal(res.status, 404, path);
    assert.doesNotMatch(res.body, /root:|JWT_SECRET|POSTGRES_PASSWORD/, path);
    assert.equal(JSON.parse(res.body).code, 'PT404', path);
  }
  for (const method of ['POST', 'PUT', 'DELETE']) {
    assert.equal((await raw(method, '/index.html')).status, 404, method);
  }
});

test('the API paths are the API, not files', async () => {
  const res = await raw('GET', '/rest/v1/market_data?limit=0');
  assert.equal(res.status, 401, 'no api key: the REST API answers, not the file server');
  assert.equal(JSON.parse(res.body).code, 'PT401');
});
