// What every benchmark needs: the stack's settings, the pg client of tests/, option parsing and
// summary statistics.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const pg = createRequire(join(root, 'tests', 'package.json'))('pg');

/** The numeric value of `--name` on the command line, or `def`. */
export const opt = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};

export const home = process.env.FLUX_HOME ?? join(root, '.flux');
/** The running stack's stack.env (./flux up writes it). */
export const env = Object.fromEntries(
  readFileSync(join(home, 'stack.env'), 'utf8').split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
);
/** The stack's database URL with another database name. */
export const urlOf = (db) => env.FLUX_DB_URL.replace(/\/[^/]*$/, `/${db}`);

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const percentile = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
/** Seconds since `t0` (a process.hrtime.bigint()). */
export const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;

/**
 * A connection to database `name` of the stack's cluster, which `fill` (given a connection to it,
 * the extension created) makes once per version of the installed extension script and `tag`:
 * benchmark data is reused until the schema that holds it changes.
 */
export async function benchDatabase(name, tag, fill) {
  const admin = new pg.Client({ connectionString: env.FLUX_DB_URL });
  await admin.connect();
  const { sharedir, version } = (await admin.query(
    "SELECT setting AS sharedir, (SELECT default_version FROM pg_available_extensions WHERE name = 'flux') AS version FROM pg_config() WHERE name = 'SHAREDIR'",
  )).rows[0];
  const stamp = createHash('sha256').update(readFileSync(join(sharedir, 'extension', `flux--${version}.sql`))).update(tag).digest('hex');
  const made = (await admin.query('SELECT shobj_description(oid, $2) AS d FROM pg_database WHERE datname = $1', [name, 'pg_database'])).rows[0];
  if (made?.d !== stamp) {
    await admin.query(`DROP DATABASE IF EXISTS ${name}`);
    await admin.query(`CREATE DATABASE ${name}`);
    const c = new pg.Client({ connectionString: urlOf(name) });
    await c.connect();
    await c.query('CREATE EXTENSION flux');
    await c.query("SET flux.maintenance_lock_timeout = '60s'");
    await fill(c);
    await c.end();
    await admin.query(`COMMENT ON DATABASE ${name} IS '${stamp}'`);
  }
  await admin.end();
  const c = new pg.Client({ connectionString: urlOf(name) });
  await c.connect();
  return c;
}

const rssAnonKb = (pid) => {
  try {
    return Number(/RssAnon:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  } catch {
    return NaN;
  }
};

/**
 * Peak anonymous memory (MB) one query adds to a fresh backend of `db`, sampled every 2 ms:
 * a backend that ran it before keeps the memory, and peaks no more. `setup(client)` runs first
 * (session settings).
 */
export async function memoryOf(db, sql, args, setup = async () => {}) {
  const client = new pg.Client({ connectionString: urlOf(db) });
  await client.connect();
  try {
    await setup(client);
    const pid = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const base = rssAnonKb(pid);
    let peak = base;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssAnonKb(pid));
    }, 2);
    await client.query(sql, args);
    clearInterval(sampler);
    return (Math.max(peak, rssAnonKb(pid)) - base) / 1024;
  } finally {
    await client.end();
  }
}
