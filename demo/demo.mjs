// ./flux demo — brings the site DEMO to life on a running stack, through the REST API as
// gateways would: devices registered with the service key, readings posted in bulk with a
// per-site device token minted by flux.sign_jwt, re-sends made harmless by ignore-duplicates.
//
// It back-fills the last 24 hours (one reading a minute), then streams a reading per device
// every few seconds until Ctrl-C or --for. A re-run resumes each device where its readings end.
//
// The site: BESS that cycle against a dispatch schedule, a grid-connection meter whose import
// and export registers follow the net power, a PV meter on a daylight curve and a load meter.
// The meters misbehave as real ones do, so that the energy functions have something to show:
// register jitter everywhere, one counter reset (load), one rollover at 99,999.9 (PV, set in its
// metadata), a short outage and one replacement meter (grid). Market data: wholesale and
// imbalance prices per settlement period, NIV estimates and Axle dispatch every 5 minutes.
import { parseArgs } from 'node:util';
import { settlementPeriod } from '../dashboard/src/settlement.js';

const SITE = 'DEMO';
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const BACKFILL_STEP = MINUTE;
const BATCH_ROWS = 5000;

function usage(problem) {
  if (problem) console.error(`flux demo: ${problem}`);
  console.error(`usage: ./flux demo [--for DURATION] [--devices N] [--backfill DURATION] [--interval DURATION]

  --for DURATION       stop after this long (30s, 10m, 2h; default: until Ctrl-C)
  --devices N          how many devices (default and least 5: 2 BESS, grid, PV and load meters;
                       more add BESS and load meters in turn)
  --backfill DURATION  history to fill in before streaming (default 24h)
  --interval DURATION  time between live readings of a device (default 5s)`);
  process.exit(2);
}

export function parseDuration(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(String(text).trim());
  if (!m) return null;
  const unit = { ms: 1, s: 1000, m: MINUTE, h: HOUR, d: 24 * HOUR }[m[2]];
  const ms = Number(m[1]) * unit;
  return Number.isFinite(ms) ? ms : null;
}

function options() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        for: { type: 'string' },
        devices: { type: 'string', default: '5' },
        backfill: { type: 'string', default: '24h' },
        interval: { type: 'string', default: '5s' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    usage(e.message);
  }
  if (parsed.help) usage();
  const duration = (name, least, most) => {
    const ms = parseDuration(parsed[name]);
    if (ms === null || ms < least || ms > most) usage(`--${name} ${parsed[name]}: give a duration from ${least / 1000}s to ${most / HOUR}h such as 30s, 10m or 2h`);
    return ms;
  };
  const devices = Number(parsed.devices);
  if (!Number.isInteger(devices) || devices < 5 || devices > 2000) usage(`--devices ${parsed.devices}: give a whole number from 5 to 2000`);
  return {
    runFor: parsed.for === undefined ? Infinity : duration('for', 1000, 365 * 24 * HOUR),
    devices,
    backfill: duration('backfill', 0, 31 * 24 * HOUR),
    interval: duration('interval', 1000, HOUR),
  };
}

// ── deterministic noise: the same device and time always give the same value ─────────────
function noise(seed, t) {
  let h = (Math.imul(seed, 0x9e3779b1) ^ Math.floor(t / 1000)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return ((h ^ (h >>> 16)) >>> 0) / 2 ** 32;
}
const jitter = (seed, t, amplitude) => (noise(seed, t) - 0.5) * 2 * amplitude;
const hourOfDay = (t) => (t % (24 * HOUR)) / HOUR;

// ── the site ──────────────────────────────────────────────────────────────────────────────
function siteDevices(count) {
  const devices = [
    { name: 'DEMO-BESS-01', type: 'bess', metadata: { capacity_kwh: 500, max_power_kw: 250, manufacturer: 'PowerPack', model: 'PP-500' }, schedule: [[1, 5, -200], [16, 19, 200]] },
    { name: 'DEMO-BESS-02', type: 'bess', metadata: { capacity_kwh: 400, max_power_kw: 200, manufacturer: 'PowerPack', model: 'PP-400' }, schedule: [[11, 14, -150], [17, 20, 150]] },
    { name: 'DEMO-GRID-01', type: 'meter', role: 'grid', metadata: { max_power_kw: 2000, connection: 'grid' } },
    { name: 'DEMO-PV-01', type: 'pv', role: 'pv', metadata: { max_power_kw: 300, energy_register_max_kwh: 99999.9 } },
    { name: 'DEMO-LOAD-01', type: 'load', role: 'load', metadata: { max_power_kw: 400 } },
  ];
  for (let i = 0; devices.length < count; i++) {
    const n = String(Math.floor(i / 2) + 3).padStart(2, '0');
    devices.push(i % 2 === 0
      ? { name: `DEMO-BESS-${n}`, type: 'bess', metadata: { capacity_kwh: 500, max_power_kw: 250 }, schedule: [[(i % 6) + 1, (i % 6) + 4, -180], [16 + (i % 3), 19 + (i % 3), 180]] }
      : { name: `DEMO-LOAD-${n}`, type: 'load', role: 'load', metadata: { max_power_kw: 400 } });
  }
  return devices.map((d, index) => ({ ...d, seed: index + 1 }));
}

function pvPower(d, t) {
  const h = hourOfDay(t);
  const sun = Math.max(0, Math.sin((Math.PI * (h - 5.5)) / 13));
  const cloud = 0.8 + 0.2 * noise(d.seed * 7, Math.floor(t / (10 * MINUTE)) * 10 * MINUTE);
  return d.metadata.max_power_kw * 0.85 * sun ** 1.4 * cloud;
}
function loadPower(d, t) {
  const h = hourOfDay(t);
  const peaks = Math.exp(-(((h - 8) / 1.5) ** 2)) + 1.3 * Math.exp(-(((h - 18.5) / 2) ** 2));
  return 90 + 110 * peaks + jitter(d.seed, t, 12);
}
/** The BESS's power (kW, + discharges) at t: its schedule, Axle dispatch between, limited by its state of energy. */
function bessPower(d, t, soe) {
  const h = hourOfDay(t);
  const slot = d.schedule.find(([from, to]) => h >= from && h < to);
  let kw = slot ? slot[2] : axleDispatch(t) * 0.5 + jitter(d.seed, t, 3);
  if (kw > 0 && soe <= 8) kw = 0;
  if (kw < 0 && soe >= 95) kw = 0;
  return Math.max(-d.metadata.max_power_kw, Math.min(d.metadata.max_power_kw, kw));
}

// Market signals (deterministic in time, so re-sends are identical).
function wholesalePrice(t) {
  const h = hourOfDay(t);
  return 55 + 45 * Math.exp(-(((h - 18) / 2) ** 2)) + 15 * Math.exp(-(((h - 8) / 1.5) ** 2)) - 20 * Math.exp(-(((h - 3) / 2) ** 2)) + jitter(11, t, 6);
}
function niv(t) {
  return 400 * Math.sin((2 * Math.PI * t) / (7 * HOUR)) + jitter(13, t, 120);
}
function imbalancePrice(t) {
  return wholesalePrice(t) + niv(t) * 0.08 + jitter(17, t, 10);
}
function axleDispatch(t) {
  const slot = Math.floor(t / (5 * MINUTE));
  const v = noise(19, slot * 5 * MINUTE);
  return v < 0.6 ? 0 : Math.round((v - 0.8) * 500);
}
const round = (x, digits) => Number(x.toFixed(digits));

function marketRows(from, to) {
  const rows = [];
  const step = 5 * MINUTE;
  for (let t = Math.ceil(from / step) * step; t < to; t += step) {
    const { period } = settlementPeriod(t);
    const time = new Date(t).toISOString();
    rows.push({ type: 1, time, value: round(niv(t), 1), metadata: { settlement_period: period, confidence: round(0.6 + 0.35 * noise(23, t), 2) } });
    rows.push({ type: 4, time, value: axleDispatch(t), metadata: { site: SITE } });
    if (t % (30 * MINUTE) === 0) {
      rows.push({ type: 2, time, value: round(wholesalePrice(t), 2), metadata: { settlement_period: period } });
      rows.push({ type: 3, time, value: round(imbalancePrice(t), 2), metadata: { settlement_period: period } });
    }
  }
  return rows;
}

/**
 * Moves the site on to time t (one step of dt ms) and returns its readings there. Meter events
 * happen at fixed offsets from `events.from`, the start of a first back-fill.
 */
function step(site, t, dt, events) {
  const bess = [];
  const meters = [];
  const hours = dt / HOUR;
  let bessNet = 0;
  for (const d of site.devices.filter((x) => x.type === 'bess')) {
    const kw = bessPower(d, t, d.state.soe);
    d.state.soe = Math.min(100, Math.max(0, d.state.soe - (kw * hours * 100) / d.metadata.capacity_kwh));
    bessNet += kw;
    bess.push({ device_id: d.id, time: new Date(t).toISOString(), soe: round(d.state.soe, 2), target_power: round(kw, 1), available_inverter_blocks: 4, command_source: kw === 0 ? 0 : 1 });
  }
  const pv = site.devices.filter((d) => d.role === 'pv');
  const loads = site.devices.filter((d) => d.role === 'load');
  const power = new Map();
  for (const d of pv) power.set(d, -pvPower(d, t));
  for (const d of loads) power.set(d, loadPower(d, t));
  const grid = site.devices.find((d) => d.role === 'grid');
  power.set(grid, [...power.values()].reduce((a, b) => a + b, 0) - bessNet);
  const at = events && ((offset) => t >= events.from + offset && t - dt < events.from + offset);
  for (const [d, kw] of power) {
    const s = d.state;
    s.imported += Math.max(kw, 0) * hours;
    s.exported += Math.max(-kw, 0) * hours;
    if (at?.(6 * HOUR) && d.name === 'DEMO-LOAD-01') s.imported = 0; // counter reset
    if (at?.(12 * HOUR) && d === grid) Object.assign(s, { imported: 51234.5, exported: 8765.4 }); // replacement meter
    const max = d.metadata.energy_register_max_kwh;
    if (max) for (const k of ['imported', 'exported']) if (s[k] > max + 0.05) s[k] -= max + 0.1; // rollover
    const outage = events && d === grid && t >= events.from + 20 * HOUR && t < events.from + 20 * HOUR + 20 * MINUTE;
    if (outage) continue;
    const digits = max ? 1 : 2;
    const reg = (v) => round(Math.max(0, v + jitter(d.seed * 31, t, 0.04)), digits);
    meters.push({
      device_id: d.id, time: new Date(t).toISOString(),
      power_total_active: round(kw, 2),
      energy_imported_active: max ? Math.min(reg(s.imported), max) : reg(s.imported),
      energy_exported_active: max ? Math.min(reg(s.exported), max) : reg(s.exported),
      voltage_line_average: round(415 + jitter(d.seed * 37, t, 3), 1),
      current_phase_average: round((Math.abs(kw) * 1000) / (Math.sqrt(3) * 415), 1),
    });
  }
  return { bess, meters };
}

// ── the API ───────────────────────────────────────────────────────────────────────────────
class Api {
  constructor(url, key) {
    this.url = url.replace(/\/$/, '');
    this.key = key;
    this.stopping = false;
  }

  /** A request that waits out rate limits and a stack restart, for at most ten minutes. */
  async request(path, { method = 'GET', body, token = this.key, prefer } = {}) {
    const deadline = Date.now() + 10 * MINUTE;
    for (;;) {
      let res;
      try {
        res = await fetch(`${this.url}${path}`, {
          method,
          headers: { apikey: this.key, Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(prefer && { Prefer: prefer }) },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (e) {
        if (Date.now() > deadline || this.stopping) throw new Error(`${method} ${path}: ${e.cause?.code ?? e.message}`);
        await sleep(1000);
        continue;
      }
      const text = await res.text();
      if (res.ok) return text ? JSON.parse(text) : null;
      const retryable = res.status === 429 || res.status === 503 || res.status === 502;
      if (retryable && Date.now() < deadline && !this.stopping) {
        const wait = Number(res.headers.get('retry-after')) || 1;
        console.error(`flux demo: ${res.status} on ${method} ${path}; retrying in ${wait} s`);
        await sleep(wait * 1000);
        continue;
      }
      throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 300)}`);
    }
  }

  /** Posts rows in bulk; rows already stored (a re-send) are skipped. */
  async insert(table, rows, conflict, token) {
    for (let i = 0; i < rows.length; i += BATCH_ROWS) {
      await this.request(`/${table}?on_conflict=${conflict}`, {
        method: 'POST', body: rows.slice(i, i + BATCH_ROWS), token, prefer: 'resolution=ignore-duplicates,return=minimal',
      });
    }
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function register(api, devices) {
  const stored = await api.request('/mg_device_registry?on_conflict=name', {
    method: 'POST',
    body: devices.map(({ name, type, metadata }) => ({ name, type, site: SITE, metadata, active: true })),
    prefer: 'resolution=merge-duplicates,return=representation',
  });
  const ids = new Map(stored.map((d) => [d.name, d.id]));
  for (const d of devices) d.id = ids.get(d.name);
}

/** Where each device's readings end (null: it has none), and its state there. */
async function resume(api, d) {
  const table = d.type === 'bess' ? 'mg_bess_readings' : 'mg_meter_readings';
  const [last] = await api.request(`/${table}?device_id=eq.${d.id}&order=time.desc&limit=1`);
  if (d.type === 'bess') {
    d.state = { soe: last?.soe ?? 40 + 20 * noise(d.seed, 0) };
  } else {
    // The PV meter's export register starts just short of its largest value, so that it rolls over.
    const pv = d.role === 'pv';
    d.state = {
      imported: last?.energy_imported_active ?? (pv ? 12.5 : 1000 + 5000 * noise(d.seed, 1)),
      exported: last?.energy_exported_active ?? (pv ? 99999.9 - 150 : 10 * d.seed),
    };
  }
  return last ? Date.parse(last.time) : null;
}

async function main() {
  const opts = options();
  const url = process.env.FLUX_API_URL;
  const serviceKey = process.env.FLUX_SERVICE_ROLE_KEY;
  if (!url || !serviceKey) usage('FLUX_API_URL and FLUX_SERVICE_ROLE_KEY must be set (./flux demo sets them from the stack)');
  const api = new Api(url, serviceKey);
  const stop = () => {
    if (api.stopping) process.exit(130);
    api.stopping = true;
    console.log('\nflux demo: stopping after the current post (Ctrl-C again to quit at once)');
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const started = Date.now();

  const site = { devices: siteDevices(opts.devices) };
  await register(api, site.devices);
  const gateway = await api.request('/rpc/sign_jwt', {
    method: 'POST',
    body: { claims: { role: 'authenticated', sub: `demo-gateway-${SITE}`, sites: [SITE] }, valid_for: '7 days' },
  });

  const now = Date.now();
  const ends = await Promise.all(site.devices.map((d) => resume(api, d)));
  const firstRun = ends.every((e) => e === null);
  const lastSent = Math.max(-Infinity, ...ends.filter((e) => e !== null));
  const from = Math.floor(Math.max(now - opts.backfill, lastSent) / BACKFILL_STEP) * BACKFILL_STEP;
  const events = firstRun ? { from } : null;
  console.log(`flux demo: site ${SITE}, ${site.devices.length} devices; ${firstRun ? 'back-filling' : 'resuming from'} ${new Date(from).toISOString()}`);

  let sent = 0;
  let clock = from;
  const send = async (until, dt) => {
    const bess = [];
    const meters = [];
    for (; clock + dt <= until && !api.stopping; clock += dt) {
      const r = step(site, clock + dt, dt, events);
      bess.push(...r.bess);
      meters.push(...r.meters);
    }
    await api.insert('mg_bess_readings', bess, 'device_id,time', gateway);
    await api.insert('mg_meter_readings', meters, 'device_id,time', gateway);
    sent += bess.length + meters.length;
  };
  const sendMarket = async (to) => {
    await api.insert('market_data', marketRows(site.marketUntil ?? to - opts.backfill - HOUR, to), 'type,time');
    site.marketUntil = to;
  };

  await sendMarket(now);
  for (let t = clock; t < now - BACKFILL_STEP && !api.stopping; ) {
    t = Math.min(t + 6 * HOUR, Math.floor(now / BACKFILL_STEP) * BACKFILL_STEP);
    await send(t, BACKFILL_STEP);
  }
  if (sent) console.log(`flux demo: back-filled ${sent.toLocaleString('en')} readings`);

  const base = process.env.FLUX_URL ?? url.replace(/\/rest\/v1$/, '');
  console.log(`flux demo: streaming a reading per device every ${opts.interval / 1000} s${Number.isFinite(opts.runFor) ? ` for ${opts.runFor / 1000} s` : ' (Ctrl-C stops)'}; dashboard: ${base}/`);
  clock = Math.floor(Math.max(clock, lastSent) / opts.interval) * opts.interval;
  while (!api.stopping && Date.now() - started < opts.runFor) {
    const next = (Math.floor(Date.now() / opts.interval) + 1) * opts.interval;
    await sleep(Math.min(next - Date.now(), started + opts.runFor - Date.now()));
    if (api.stopping || Date.now() - started >= opts.runFor) break;
    await send(next, opts.interval);
    await sendMarket(next);
  }
  console.log(`flux demo: stopped; ${sent.toLocaleString('en')} readings sent`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    console.error(`flux demo: ${e.message}`);
    process.exit(1);
  });
}
