// Helpers of the realtime tests: real supabase-js clients in child processes (one per library
// version, each on the Node it needs), and stack control.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { fileURLToPath } from 'node:url';
import { anonKey, env, service, sleep, sql } from '../lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const fluxHome = process.env.FLUX_HOME ?? join(here, '..', '..', '..', '.flux');
const cache = process.env.FLUX_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'flux');
const node22 = process.env.FLUX_NODE22 ?? join(cache, 'node-22.23.3', 'bin', 'node');

/** The two client generations: protocol vsn 1.0.0 (JSON objects) and 2.0.0 (JSON arrays). */
export const flavors = [
  { name: 'supabase-js 2.90 (vsn 1.0.0, Node 20)', node: process.execPath, pkg: 'supabase-js-2.90' },
  { name: 'supabase-js 2.119 (vsn 2.0.0, Node 22)', node: node22, pkg: 'supabase-js-2.119' },
];

/** One supabase-js client (createClient(FLUX_URL, key, { db: { schema: 'flux' } })). */
export class Client {
  constructor(flavor, key, accessToken, url = env.FLUX_URL) {
    if (!existsSync(flavor.node)) {
      throw new Error(`${flavor.name} needs ${flavor.node} (./flux up fetches it; or set FLUX_NODE22)`);
    }
    this.name = flavor.name;
    this.events = [];
    this.waiters = new Set();
    this.nextReq = 0;
    const args = [join(here, 'client.mjs'), flavor.pkg, url, key, ...(accessToken ? [accessToken] : [])];
    this.proc = spawn(flavor.node, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    this.exited = new Promise((resolve) => this.proc.on('exit', resolve));
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      const event = JSON.parse(line);
      this.events.push(event);
      for (const w of this.waiters) w();
    });
  }

  send(command) {
    this.proc.stdin.write(`${JSON.stringify(command)}\n`);
  }

  /** The first event (already received or coming) that satisfies `pred`. */
  waitFor(pred, what, timeout = 10_000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.events.find(pred);
        if (found) {
          this.waiters.delete(check);
          clearTimeout(timer);
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        const failures = this.events.filter((e) => e.type === 'failure');
        reject(new Error(`${this.name}: timed out waiting for ${what}${failures.length ? `; failures: ${JSON.stringify(failures)}` : ''}`));
      }, timeout);
      this.waiters.add(check);
      check();
    });
  }

  /**
   * Subscribes and resolves once SUBSCRIBED; rejects on CHANNEL_ERROR or CLOSED. (TIMED_OUT is
   * followed by the library's own retry.)
   */
  async subscribe(id, channel, bindings) {
    this.send({ cmd: 'subscribe', id, channel, bindings });
    const status = await this.waitFor(
      (e) => e.type === 'status' && e.id === id && e.status !== 'TIMED_OUT',
      `status of ${id}`,
      25_000,
    );
    if (status.status !== 'SUBSCRIBED') {
      throw new Error(`${this.name}: ${id} got ${status.status}: ${status.error}`);
    }
  }

  /** Joins a channel with this config (broadcast, presence, private, …) and `postgres_changes`
   * bindings, and waits for SUBSCRIBED. */
  async join(id, channel, config = {}, bindings = []) {
    this.send({ cmd: 'join', id, channel, config, bindings });
    const status = await this.waitFor((e) => e.type === 'status' && e.id === id && e.status !== 'TIMED_OUT', `status of ${id}`, 25_000);
    if (status.status !== 'SUBSCRIBED') throw new Error(`${this.name}: ${id} got ${status.status}: ${status.error}`);
  }

  /** channel.send({type: 'broadcast', event, payload}); resolves to its result ('ok', 'error', 'timed out'). */
  async broadcast(id, event, payload) {
    const req = `s${this.nextReq++}`;
    this.send({ cmd: 'send', id, req, event, payload });
    return (await this.waitFor((e) => e.type === 'sent' && e.req === req, `send of ${event}`)).result;
  }

  /** channel.track(meta), or channel.untrack() when meta is null. */
  async track(id, meta) {
    const req = `t${this.nextReq++}`;
    this.send(meta === null ? { cmd: 'untrack', id, req } : { cmd: 'track', id, req, meta });
    return (await this.waitFor((e) => e.type === 'tracked' && e.req === req, 'track')).result;
  }

  broadcasts(id) {
    return this.events.filter((e) => e.type === 'broadcast' && e.id === id).map((e) => e.payload);
  }

  /** Waits until the channel's presence state satisfies `pred`; returns that state. */
  async presence(id, pred, what) {
    const found = await this.waitFor((e) => e.type === 'presence' && e.event === 'sync' && e.id === id && pred(e.state), what);
    return found.state;
  }

  async unsubscribe(id) {
    this.send({ cmd: 'unsubscribe', id });
    return (await this.waitFor((e) => e.type === 'unsubscribed' && e.id === id, `leave of ${id}`)).result;
  }

  async setAuth(token) {
    const before = this.events.filter((e) => e.type === 'auth-set').length;
    this.send({ cmd: 'setAuth', token });
    await this.waitFor(
      () => this.events.filter((e) => e.type === 'auth-set').length > before,
      'setAuth',
    );
  }

  /** A REST call through this client's supabase.from(...). */
  async rest(command) {
    const req = `r${this.nextReq++}`;
    this.send({ ...command, req });
    return this.waitFor((e) => e.type === 'rest' && e.req === req, `${command.cmd} ${command.table}`);
  }

  /** Delivered changes of subscription `id` (optionally only those matching `pred`). */
  changes(id, pred = () => true) {
    return this.events.filter((e) => e.type === 'change' && e.id === id && pred(e.payload));
  }

  waitForChange(id, pred, what) {
    return this.waitFor((e) => e.type === 'change' && e.id === id && pred(e.payload), what);
  }

  async close() {
    this.proc.stdin.end();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Inserts BESS readings as the service role; returns the stored rows. */
export async function insertReadings(rows) {
  const res = await service('/mg_bess_readings', {
    method: 'POST',
    headers: { Prefer: 'return=representation' },
    body: rows,
  });
  if (res.status !== 201) throw new Error(`insert failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/** Restarts the stack's PostgreSQL (fast shutdown: every connection is cut). */
export function restartPostgres() {
  execFileSync('sudo', [
    '-u', 'postgres', '/usr/lib/postgresql/15/bin/pg_ctl', '-D', join(fluxHome, 'pgdata'),
    '-w', 'restart', '-m', 'fast', '-l', join(fluxHome, 'log', 'postgresql.log'),
  ], { stdio: 'ignore' });
}

/** Waits until a realtime server streams from a slot created after `since` (a Date). */
export async function waitForFeed(since, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      const rows = await sql(
        `SELECT count(*)::int AS n FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid
         WHERE s.slot_name = 'flux_realtime' AND a.backend_start > $1`,
        [since],
      );
      const health = await fetch(`${env.FLUX_URL}/realtime/v1/health`);
      if (rows[0].n > 0 && health.status === 200) return;
    } catch {
      // PostgreSQL or the router not back yet
    }
    if (Date.now() > deadline) throw new Error('the realtime change feed did not come back');
    await new Promise((r) => setTimeout(r, 200));
  }
}

export { sleep };

/**
 * A raw vsn 2.0.0 WebSocket subscriber of one device's BESS INSERTs (with `accessToken`, as
 * that token's role), resolved once subscribed. `inbox` holds `{ at, m }` per frame.
 */
export async function rawSubscriber(deviceId, { accessToken, topic = 'raw' } = {}) {
  const ws = new WebSocket(`${env.FLUX_REALTIME_URL}/websocket?apikey=${anonKey}&vsn=2.0.0`);
  const inbox = [];
  ws.on('message', (data) => inbox.push({ at: Date.now(), m: JSON.parse(data.toString()) }));
  await new Promise((resolve, reject) => ws.on('open', resolve).on('error', reject));
  const binding = { event: 'INSERT', schema: 'flux', table: 'mg_bess_readings', filter: `device_id=eq.${deviceId}` };
  ws.send(JSON.stringify(['1', '1', `realtime:${topic}`, 'phx_join', { config: { postgres_changes: [binding] }, ...(accessToken && { access_token: accessToken }) }]));
  for (const deadline = Date.now() + 5000; !inbox.some(({ m }) => m[3] === 'system'); await sleep(20)) {
    if (Date.now() > deadline) throw new Error(`not subscribed: ${JSON.stringify(inbox)}`);
  }
  return {
    ws,
    inbox,
    changes: () => inbox.filter(({ m }) => m[3] === 'postgres_changes'),
    errors: () => inbox.filter(({ m }) => m[3] === 'system' && m[4].status === 'error').map(({ m }) => m),
  };
}
