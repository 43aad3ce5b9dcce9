// The dashboard in a real browser: Debian's headless Chromium, driven by puppeteer-core, on the
// page the stack's router serves at /, with `./flux demo` feeding the stack. Screenshots of each
// view go to $FLUX_HOME/screenshots (README: Demo and dashboard).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';
import { env, home, service, sql, closeSql, registerDevice, sleep } from '../e2e/lib.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const shots = join(home, 'screenshots');
const base = `${env.FLUX_URL}/`;
const DEMO_DEVICES = ['DEMO-BESS-01', 'DEMO-BESS-02', 'DEMO-GRID-01', 'DEMO-PV-01', 'DEMO-LOAD-01'];

let browser;
let demo;
let demoOutput = '';
const consoleErrors = [];

/** A page at 1280×800 (or the given size) whose console errors and page errors are collected. */
async function openPage(viewport = { width: 1280, height: 800 }, errors = consoleErrors) {
  const page = await browser.newPage();
  await page.setViewport(viewport);
  page.on('console', (m) => m.type() === 'error' && errors.push(`${m.text()} ${m.location()?.url ?? ''}`));
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  return page;
}

/** Loads the page afresh at a view (a new document each time, not just a new hash). */
let loads = 0;
async function show(page, hash) {
  await page.goto(`${base}?load=${++loads}${hash}`, { waitUntil: 'networkidle0' });
}

/** Waits until the page's realtime channel is subscribed (the header's dot turns on). */
const live = (page) => page.waitForSelector('#live.on', { timeout: 15_000 });

before(async () => {
  mkdirSync(shots, { recursive: true });
  demo = spawn(join(root, 'flux'), ['demo', '--for', '600s'], { env: { ...process.env, FLUX_HOME: home } });
  demo.stdout.on('data', (d) => { demoOutput += d; });
  demo.stderr.on('data', (d) => { demoOutput += d; });
  for (const deadline = Date.now() + 120_000; !demoOutput.includes('streaming'); await sleep(200)) {
    if (demo.exitCode !== null) throw new Error(`./flux demo exited (${demo.exitCode}):\n${demoOutput}`);
    if (Date.now() > deadline) throw new Error(`./flux demo did not stream within 120 s:\n${demoOutput}`);
  }
  browser = await puppeteer.launch({
    executablePath: process.env.FLUX_CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    // Root has no user namespace sandbox here; the page is our own, from 127.0.0.1.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
});

after(async () => {
  await browser?.close();
  if (demo?.exitCode === null) demo.kill('SIGINT');
  await closeSql();
});

test('./flux demo: the fleet view lists the demo devices, live', async () => {
  const page = await openPage();
  await show(page, '#/fleet');
  for (const name of DEMO_DEVICES) {
    await page.waitForSelector(`tr[data-device="${name}"]`, { timeout: 10_000 });
  }
  // Every demo device has reported within the stale limit, and shows its kind of state.
  await page.waitForFunction(
    (names) => names.every((n) => document.querySelector(`tr[data-device="${n}"] .badge.ok`)?.textContent === 'live'),
    { timeout: 15_000 }, DEMO_DEVICES,
  );
  const soe = await page.$eval('tr[data-device="DEMO-BESS-01"] td:nth-child(4)', (td) => td.textContent);
  assert.match(soe, /^\d+(\.\d)? %$/);
  const power = await page.$eval('tr[data-device="DEMO-GRID-01"] td:nth-child(5)', (td) => td.textContent);
  assert.match(power, /^-?[\d,]+\.\d kW$/);
  await page.screenshot({ path: join(shots, 'fleet.png') });

  // A device that stops reporting stands out: register one with an old reading.
  const quiet = await registerDevice({ type: 'meter', site: 'DEMO' });
  const old = new Date(Date.now() - 10 * 60_000).toISOString();
  assert.equal((await service('/mg_meter_readings', { method: 'POST', body: { device_id: quiet.id, time: old, power_total_active: 1 } })).status, 201);
  await show(page, '#/fleet');
  await page.waitForSelector(`tr.stale[data-device="${quiet.name}"]`, { timeout: 10_000 });
  assert.equal(await page.$eval(`tr[data-device="${quiet.name}"] .badge.warn`, (b) => b.textContent), 'stale');
  assert.match(await page.$eval(`tr[data-device="${quiet.name}"] td:nth-child(3)`, (td) => td.textContent), /^10 min ago$/);
  await page.close();
});

test('a reading inserted through REST appears in the device view within 2 s', async () => {
  const meter = await registerDevice({ type: 'meter', site: 'DEMO' });
  const page = await openPage();
  await show(page, `#/device/${meter.id}`);
  await page.waitForSelector('[data-testid="latest"]');
  await live(page);
  const time = new Date(Math.floor(Date.now() / 1000) * 1000).toISOString();
  const sent = Date.now();
  const res = await service('/mg_meter_readings', {
    method: 'POST',
    body: { device_id: meter.id, time, power_total_active: 123.45, energy_imported_active: 1000.5, energy_exported_active: 2 },
  });
  assert.equal(res.status, 201);
  await page.waitForFunction(
    () => document.querySelector('[data-testid="latest"] [data-field="power_total_active"] .value')?.textContent === '123.45 kW',
    { timeout: 2000 },
  );
  const shownAfter = Date.now() - sent;
  assert.equal(await page.$eval('[data-testid="latest"] [data-field="time"]', (c) => c.dataset.time), time.replace('.000Z', '+00:00'));
  assert.equal(await page.$$eval('[data-testid="recent"] tr', (rows) => rows.length), 1);
  assert.ok(shownAfter < 2000, `shown after ${shownAfter} ms`);

  // The demo's grid meter: 24 hours of charts, for the README.
  await show(page, '#/fleet');
  const href = await page.$eval('tr[data-device="DEMO-GRID-01"] a', (a) => a.getAttribute('href'));
  await show(page, href);
  await page.waitForSelector('.chart canvas');
  assert.ok((await page.$$('.chart canvas')).length >= 2, 'a meter has a power and a register chart');
  await live(page);
  await page.screenshot({ path: join(shots, 'device.png') });
  await page.close();
});

/** Readings of `meter` every 10 minutes over [from, to), its import rising by `kw` kW. */
async function fillDay(meter, from, to, kw) {
  const rows = [];
  for (let t = Date.parse(from), e = 0; t < Date.parse(to); t += 600_000, e += (kw * 10) / 60) {
    rows.push({ device_id: meter.id, time: new Date(t).toISOString(), power_total_active: kw, energy_imported_active: 500 + e, energy_exported_active: 0 });
  }
  const res = await service('/mg_meter_readings', { method: 'POST', body: rows });
  assert.equal(res.status, 201, JSON.stringify(res.body));
}

test('the energy view has 46, 48 and 50 settlement periods on the right days, with the database figures', async () => {
  const meter = await registerDevice({ type: 'meter', site: 'BROWSER', metadata: { max_power_kw: 100 } });
  // UK local days (a day either side, so that every period of the day has readings around it).
  const days = [['2025-10-26', 50, '2025-10-25T00:00:00Z'], ['2026-03-29', 46, '2026-03-28T00:00:00Z'], ['2026-06-01', 48, '2026-05-31T00:00:00Z']];
  for (const [, , from] of days) await fillDay(meter, from, new Date(Date.parse(from) + 3 * 86_400_000).toISOString(), 24);
  const page = await openPage();
  for (const [date, periods] of days) {
    await show(page, `#/energy?site=BROWSER&meter=${meter.id}&date=${date}`);
    await page.waitForSelector('[data-testid="periods-table"]');
    assert.equal(await page.$$eval('tr[data-period]', (rows) => rows.length), periods, date);
    assert.match(await page.$eval('[data-testid="periods"] .value', (v) => v.textContent), new RegExp(`^${periods}\\b`));
    // Each period shows what flux.get_meter_readings_30m says for that settlement period.
    const rpc = await sql(
      `SELECT settlement_period, round(energy_imported_active_delta::numeric, 2)::text AS kwh
         FROM flux.get_meter_readings_30m($1::date - 1, $1::date + 2, ARRAY[$2::uuid]) WHERE settlement_date = $1::date`,
      [date, meter.id],
    );
    assert.equal(rpc.length, periods);
    const shown = await page.$$eval('tr[data-period]', (rows) => rows.map((r) => [Number(r.dataset.period), r.children[2].textContent]));
    assert.deepEqual(shown, rpc.map((r) => [r.settlement_period, r.kwh]));
  }
  // The first period of a summer day starts at 00:00 UK time, 23:00 UTC the day before.
  await show(page, `#/energy?site=BROWSER&meter=${meter.id}&date=2026-06-01`);
  assert.equal(await page.$eval('tr[data-period="1"] td:nth-child(2)', (td) => td.textContent), '00:00 BST');
  await page.click('#utc');
  await page.waitForFunction(() => document.querySelector('tr[data-period="1"] td:nth-child(2)')?.textContent === '23:00 UTC');
  await page.click('#utc');

  // The demo's grid meter today: its reset, rollover and meter change flags, for the README.
  await show(page, '#/energy?site=DEMO');
  await page.waitForSelector('[data-testid="periods-table"]');
  await page.screenshot({ path: join(shots, 'energy.png') });
  await page.close();
});

test('the energy view shows quality flags and set-aside energy', async () => {
  const meter = await registerDevice({ type: 'meter', site: 'BROWSER', metadata: { max_power_kw: 50 } });
  // On 2026-01-15 (UTC = UK time in winter) the import register resets to zero at 10:00, and
  // the export register jumps by 30,000 kWh at 14:00 (a replaced meter), which is set aside.
  const rows = [];
  for (let m = 0; m < 24 * 60; m += 10) {
    const t = Date.parse('2026-01-15T00:00:00Z') + m * 60_000;
    rows.push({
      device_id: meter.id, time: new Date(t).toISOString(),
      energy_imported_active: m < 600 ? 800 + m / 6 : (m - 600) / 6,
      energy_exported_active: (m < 840 ? 100 : 30_100) + m / 30,
    });
  }
  assert.equal((await service('/mg_meter_readings', { method: 'POST', body: rows })).status, 201);
  const page = await openPage();
  await show(page, `#/energy?site=BROWSER&meter=${meter.id}&date=2026-01-15`);
  await page.waitForSelector('[data-testid="periods-table"]');
  const flags = await page.$$eval('tr[data-period] .badge', (b) => b.map((x) => x.textContent));
  assert.ok(flags.includes('reset (import)'), flags.join(', '));
  assert.ok(flags.includes('meter change (export)'), flags.join(', '));
  const setAside = await page.$$eval('td.set-aside', (cells) => cells.map((c) => [c.parentElement.dataset.period, c.textContent]));
  const [expected] = await sql(
    `SELECT round(sum(set_aside_kwh)::numeric, 2)::float8 AS kwh FROM flux.meter_energy_set_aside('2026-01-15', '2026-01-16', ARRAY[$1::uuid])`, [meter.id]);
  assert.ok(expected.kwh > 29_000, JSON.stringify(expected));
  assert.deepEqual(setAside.map(([p]) => p), ['29'], 'the jump is set aside in the period it happens in (14:00 is period 29)');
  assert.equal(Number(setAside[0][1].replace(/,/g, '')), expected.kwh);
  await page.close();
});

test('the market view charts prices and NIV against the site', async () => {
  const page = await openPage();
  await show(page, '#/market?site=DEMO');
  await page.waitForSelector('.chart canvas');
  assert.equal((await page.$$('.chart canvas')).length, 2);
  for (const [type, unit] of [[1, 'MW'], [2, '£/MWh'], [3, '£/MWh'], [4, 'kW']]) {
    const value = await page.$eval(`.card[data-type="${type}"] .value`, (v) => v.textContent);
    assert.match(value, new RegExp(`^-?[\\d,.]+ ${unit.replace('/', '\\/')}$`), `type ${type}: ${value}`);
  }
  await page.screenshot({ path: join(shots, 'market.png') });
  await page.close();
});

test('at phone width the page does not overflow sideways', async () => {
  const page = await openPage({ width: 390, height: 844, isMobile: true, hasTouch: true });
  for (const hash of ['#/fleet', '#/energy?site=DEMO', '#/market?site=DEMO']) {
    await show(page, hash);
    await page.waitForSelector('.cards .card');
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `${hash}: the page is ${width} px wide`);
  }
  await show(page, '#/fleet');
  await page.waitForSelector('tr[data-device="DEMO-BESS-01"]');
  await page.screenshot({ path: join(shots, 'fleet-phone.png') });
  await page.close();
});

test('no view wrote a console error', () => {
  assert.deepEqual(consoleErrors, []);
});

test('a rate-limited page says so, with the Retry-After wait', async (t) => {
  const tiers = await sql("SELECT name, setting FROM pg_settings WHERE name IN ('flux.rate_limit_anon_per_minute', 'flux.rate_limit_anon_burst')");
  await sql('ALTER SYSTEM SET flux.rate_limit_anon_per_minute = 1');
  await sql('ALTER SYSTEM SET flux.rate_limit_anon_burst = 1');
  await sql('SELECT pg_reload_conf()');
  t.after(async () => {
    for (const { name, setting } of tiers) await sql(`ALTER SYSTEM SET ${name} = ${Number(setting)}`);
    await sql('SELECT pg_reload_conf()');
  });
  await sleep(500); // PostgREST's pooled connections take the reload at their next statement
  const expected = [];
  const page = await openPage(undefined, expected);
  await show(page, '#/fleet');
  await page.waitForFunction(() => /Rate limited \(429\).*Retry after \d+ s/.test(document.getElementById('error').textContent), { timeout: 10_000 });
  assert.ok(expected.some((e) => e.includes('429')), 'the browser saw the 429');
  await page.close();
});

const fluxUp = () => promisify(execFile)(join(root, 'stack', 'up.sh'), { env: { ...process.env, FLUX_HOME: home, FLUX_QUIET: '1' }, timeout: 600_000 });

test('when PostgREST and the realtime server die the page says so, and recovers after ./flux up', async (t) => {
  t.after(fluxUp); // whatever happens here, the stack is whole for what follows
  const page = await openPage(undefined, []);
  await show(page, '#/fleet');
  await page.waitForSelector('tr[data-device="DEMO-BESS-01"]');
  await live(page);
  const pidOf = (name) => Number(readFileSync(join(home, 'run', `${name}.pid`), 'utf8').trim());
  process.kill(pidOf('realtime'), 'SIGKILL');
  process.kill(pidOf('postgrest'), 'SIGKILL');
  await page.waitForFunction(() => /Realtime/.test(document.getElementById('error').textContent), { timeout: 30_000 });
  assert.equal(await page.$eval('#live', (d) => d.classList.contains('on')), false);
  await show(page, '#/fleet');
  await page.waitForFunction(() => /The API answered 503 PT503/.test(document.getElementById('error').textContent), { timeout: 10_000 });
  // supabase-js retries a 503 three times (1, 2, 4 s) before the view gives up.
  await page.waitForSelector('.view-error', { timeout: 20_000 });
  assert.match(await page.$eval('.view-error', (p) => p.textContent), /Could not load this view: 503/);
  await page.screenshot({ path: join(shots, 'error.png') });

  await fluxUp();
  await show(page, '#/fleet');
  await page.waitForSelector('tr[data-device="DEMO-BESS-01"]');
  await live(page);
  assert.equal(await page.$eval('#error', (e) => e.hidden), true);
  await page.close();
});

test('the demo meters misbehave as real ones do, and the demo stops on Ctrl-C and resumes', async () => {
  // Its first run back-filled 24 hours: one reset, one rollover, one replaced meter, an outage.
  const flags = await sql(`
    SELECT r.name, array_agg(DISTINCT q ORDER BY q) AS flags
      FROM flux.mg_device_registry r,
           flux.meter_energy_buckets(now() - interval '2 days', now(), '30 minutes', ARRAY[r.id]) b,
           unnest(b.energy_imported_active_quality || b.energy_exported_active_quality) q
     WHERE r.name IN ('DEMO-GRID-01', 'DEMO-PV-01', 'DEMO-LOAD-01') GROUP BY r.name ORDER BY r.name`);
  const of = Object.fromEntries(flags.map((r) => [r.name, r.flags]));
  assert.ok(of['DEMO-LOAD-01'].includes('reset'), JSON.stringify(of));
  assert.ok(of['DEMO-PV-01'].includes('rollover'), JSON.stringify(of));
  assert.ok(of['DEMO-GRID-01'].includes('meter_change'), JSON.stringify(of));
  for (const name of Object.keys(of)) assert.ok(of[name].includes('jitter'), name);
  const [{ gap }] = await sql(`
    SELECT max(m.time - m.prev) AS gap FROM (
      SELECT time, lag(time) OVER (ORDER BY time) AS prev FROM flux.mg_meter_readings
       WHERE device_id = (SELECT id FROM flux.mg_device_registry WHERE name = 'DEMO-GRID-01')) m`);
  assert.ok(gap.minutes >= 20, `the grid meter's longest silence: ${JSON.stringify(gap)}`);
  const market = await sql(`SELECT type, count(*)::int AS n FROM flux.market_data WHERE time > now() - interval '24 hours' GROUP BY type ORDER BY type`);
  const n = Object.fromEntries(market.map((r) => [r.type, r.n]));
  assert.ok(n[2] >= 47 && n[3] >= 47, `prices per settlement period: ${JSON.stringify(n)}`);
  assert.ok(n[1] >= 280 && n[4] >= 280, `NIV and Axle dispatch every 5 minutes: ${JSON.stringify(n)}`);

  const exited = new Promise((resolve) => demo.once('exit', (code, signal) => resolve({ code, signal })));
  demo.kill('SIGINT');
  assert.deepEqual(await exited, { code: 0, signal: null }, demoOutput);
  assert.match(demoOutput, /stopped; [\d,]+ readings sent/);
  const again = spawn(join(root, 'flux'), ['demo', '--for', '6s'], { env: { ...process.env, FLUX_HOME: home } });
  let output = '';
  again.stdout.on('data', (d) => { output += d; });
  again.stderr.on('data', (d) => { output += d; });
  const code = await new Promise((resolve) => again.once('exit', resolve));
  assert.equal(code, 0, output);
  assert.match(output, /resuming from/);
  assert.doesNotMatch(output, /409|error/i);
});
