// Partition benchmarks, each in a database of its own on the stack's cluster (kept between
// runs; remade when the extension script changes):
//
//   retention  one day of BESS readings (--devices at one reading per 10 s) dropped as a
//              partition by flux.run_maintenance(), against DELETE of the same rows from an
//              identical table without partitions (and the VACUUM that DELETE leaves to do);
//              time and WAL written. Also the storage per reading, heap and indexes.
//   planning   the reference's GET examples on two years of daily partitions, against the same
//              rows in one table: time per query as PostgREST runs them (prepared statements,
//              executed repeatedly) and the planning time of one statement.
//
//   node bench/partitions/run.mjs [retention|planning|all] [--devices 1000] [--reps 5]
import { benchDatabase, median, opt, seconds } from '../lib.mjs';

const which = ['retention', 'planning'].includes(process.argv[2]) ? process.argv[2] : 'all';
const devices = opt('devices', 1000);
const reps = opt('reps', 5);

const mb = (bytes) => `${(bytes / 1048576).toFixed(0)} MB`;

const DAY = '2020-06-01';

async function retention() {
  const rows = devices * 8640;
  const db = await benchDatabase(`flux_bench_retention_${devices}`, 'retention', async (c) => {
    console.log(`generating ${rows.toLocaleString()} BESS readings twice (${devices} devices × one day at 10 s) ...`);
    await c.query(`INSERT INTO flux.mg_device_registry (id, name, type, site)
                   SELECT ('00000000-0000-4000-a000-' || lpad(to_hex(d), 12, '0'))::uuid, 'BENCH-BESS-' || d, 'bess', 'BENCH'
                   FROM generate_series(1, ${devices}) d`);
    await c.query(`SELECT * FROM flux.create_partitions('flux.mg_bess_readings', '${DAY}', '${DAY}'::date + 2)`);
    const data = `SELECT ('00000000-0000-4000-a000-' || lpad(to_hex(d), 12, '0'))::uuid, '${DAY}'::timestamptz + s * interval '10 seconds',
                         50 + 40 * sin(s / 500.0 + d), -25 + d % 50, 4, 1
                  FROM generate_series(0, 8639) s CROSS JOIN generate_series(1, ${devices}) d ORDER BY s, d`;
    await c.query(`INSERT INTO flux.mg_bess_readings (device_id, time, soe, target_power, available_inverter_blocks, command_source) ${data}`);
    await c.query('CREATE SCHEMA flux_bench');
    await c.query('CREATE TABLE flux_bench.bess (LIKE flux.mg_bess_readings INCLUDING ALL)');
    await c.query(`INSERT INTO flux_bench.bess (device_id, time, soe, target_power, available_inverter_blocks, command_source) ${data}`);
    await c.query('VACUUM ANALYZE');
  });
  const partition = `flux_partitions.mg_bess_readings_p${DAY.replaceAll('-', '')}`;
  const size = (await db.query(`SELECT pg_relation_size($1) AS heap, pg_indexes_size($1) AS idx,
                                       (SELECT count(*) FROM ONLY ${partition}) AS n`, [partition])).rows[0];
  const indexes = (await db.query(`SELECT c.relname, pg_relation_size(c.oid) AS bytes FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                                   WHERE i.indrelid = $1::regclass ORDER BY 1`, [partition])).rows;

  // Both runs in one transaction each, rolled back, so the data stays for the next run.
  const wal = async (run) => {
    await db.query('CHECKPOINT');
    await db.query('BEGIN');
    const lsn0 = (await db.query('SELECT pg_current_wal_insert_lsn() AS l')).rows[0].l;
    const t0 = process.hrtime.bigint();
    await run();
    const s = seconds(t0);
    const bytes = Number((await db.query('SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1) AS b', [lsn0])).rows[0].b);
    await db.query('ROLLBACK');
    return [s, bytes];
  };
  const deletes = [];
  const drops = [];
  for (let i = 0; i < reps; i++) {
    deletes.push(await wal(() => db.query(`DELETE FROM flux_bench.bess WHERE time >= '${DAY}' AND time < '${DAY}'::date + 1`)));
    drops.push(await wal(async () => {
      await db.query(`SELECT flux.set_retention('flux.mg_bess_readings', now() - ('${DAY}'::date + 1)::timestamptz)`);
      const done = (await db.query('SELECT * FROM flux.run_maintenance()')).rows.filter((a) => a.action === 'dropped');
      if (done.length !== 1) throw new Error(`expected one partition dropped: ${JSON.stringify(done)}`);
    }));
  }
  const del = median(deletes.map(([s]) => s));
  const drop = median(drops.map(([s]) => s));
  // The VACUUM a DELETE leaves behind (outside a transaction: run on a copy of the table).
  await db.query('DROP TABLE IF EXISTS flux_bench.bess_vacuum');
  await db.query('CREATE TABLE flux_bench.bess_vacuum AS SELECT * FROM flux_bench.bess');
  await db.query(`DELETE FROM flux_bench.bess_vacuum WHERE time >= '${DAY}' AND time < '${DAY}'::date + 1`);
  const v0 = process.hrtime.bigint();
  await db.query('VACUUM flux_bench.bess_vacuum');
  const vacuum = seconds(v0);
  await db.query('DROP TABLE flux_bench.bess_vacuum');
  await db.end();

  const n = Number(size.n);
  console.log(`\nretention: one day of ${devices.toLocaleString()} BESS at one reading per 10 s = ${n.toLocaleString()} rows, ${mb(Number(size.heap) + Number(size.idx))}, median of ${reps}`);
  console.log(`  (the issue's day is 10,000 devices: 86.4 M rows; this is that scaled down ${(86_400_000 / n).toFixed(0)}×)`);
  console.log(`  DELETE from one table         ${(del * 1000).toFixed(0).padStart(8)} ms   WAL ${mb(median(deletes.map(([, b]) => b)))}   + VACUUM ${(vacuum * 1000).toFixed(0)} ms (no heap table, no FK)`);
  console.log(`  dropping the day's partition  ${(drop * 1000).toFixed(0).padStart(8)} ms   WAL ${(median(drops.map(([, b]) => b)) / 1024).toFixed(0)} kB   (flux.run_maintenance, retention set)`);
  console.log(`  ratio DELETE / drop = ${(del / drop).toFixed(0)}`);
  console.log(`\nstorage per BESS reading (${n.toLocaleString()} rows of one day):`);
  console.log(`  heap ${(Number(size.heap) / n).toFixed(1)} bytes${indexes.map((i) => `, ${i.relname.replace(/^mg_bess_readings_p\d+_/, '')} ${(Number(i.bytes) / n).toFixed(1)}`).join('')}, total ${((Number(size.heap) + Number(size.idx)) / n).toFixed(1)} bytes`);
}

// The reference's GET examples, as SQL with the filters PostgREST would pass.
const examples = {
  'bess: device, one day, time desc, limit 100': [`SELECT * FROM %bess WHERE device_id = $1 AND time >= $2 AND time < $3 ORDER BY time DESC LIMIT 100`, ['dev', '2025-06-01', '2025-06-02']],
  'meter: device, time >= x, 3 columns': [`SELECT time, power_total_active, energy_imported_active FROM %meter WHERE device_id = $1 AND time >= $2 LIMIT 10000`, ['dev', '2025-11-20']],
  'market: type 1, newest': [`SELECT * FROM %market WHERE type = $1 ORDER BY time DESC LIMIT 1`, [1]],
  'bess: newest 100 (cursor page 1)': [`SELECT * FROM %bess ORDER BY time DESC LIMIT 100`, []],
  'bess: time < x, newest 100 (cursor page 2)': [`SELECT * FROM %bess WHERE time < $1 ORDER BY time DESC LIMIT 100`, ['2025-06-01T12:00:00Z']],
  'bess: limit 100 offset 100': [`SELECT * FROM %bess LIMIT 100 OFFSET 100`, []],
};

async function planning() {
  const db = await benchDatabase('flux_bench_planning', 'planning', async (c) => {
    console.log('generating two years of daily partitions and readings (10 devices, one reading per 10 min) ...');
    const from = '2024-01-01';
    const to = '2026-01-01';
    await c.query(`SELECT count(*) FROM flux.create_partitions('flux.mg_bess_readings', '${from}', '${to}')`);
    await c.query(`SELECT count(*) FROM flux.create_partitions('flux.mg_meter_readings', '${from}', '${to}')`);
    await c.query(`SELECT count(*) FROM flux.create_partitions('flux.market_data', '${from}', '${to}')`);
    await c.query(`INSERT INTO flux.mg_device_registry (id, name, type, site)
                   SELECT ('00000000-0000-4000-b000-' || lpad(to_hex(d), 12, '0'))::uuid, 'PLAN-' || d, CASE WHEN d <= 5 THEN 'bess' ELSE 'meter' END, 'BENCH'
                   FROM generate_series(1, 10) d`);
    const times = `generate_series('${from}'::timestamptz, '${to}'::timestamptz - interval '10 minutes', '10 minutes') t`;
    const ids = (lo, hi) => `generate_series(${lo}, ${hi}) d`;
    const id = `('00000000-0000-4000-b000-' || lpad(to_hex(d), 12, '0'))::uuid`;
    await c.query(`INSERT INTO flux.mg_bess_readings (device_id, time, soe) SELECT ${id}, t, 50 FROM ${times} CROSS JOIN ${ids(1, 5)}`);
    await c.query(`INSERT INTO flux.mg_meter_readings (device_id, time, power_total_active, energy_imported_active)
                   SELECT ${id}, t, 10, extract(epoch FROM t) / 3600 FROM ${times} CROSS JOIN ${ids(6, 10)}`);
    await c.query(`INSERT INTO flux.market_data (time, type, value)
                   SELECT t, ty, 42 FROM generate_series('${from}'::timestamptz, '${to}'::timestamptz - interval '30 minutes', '30 minutes') t
                   CROSS JOIN generate_series(1, 4) ty`);
    await c.query('CREATE SCHEMA flux_bench');
    for (const t of ['mg_bess_readings', 'mg_meter_readings', 'market_data']) {
      await c.query(`CREATE TABLE flux_bench.${t} (LIKE flux.${t} INCLUDING ALL)`);
      await c.query(`INSERT INTO flux_bench.${t} SELECT * FROM flux.${t}`);
    }
    await c.query('VACUUM ANALYZE');
    await c.query('ANALYZE flux.mg_bess_readings, flux.mg_meter_readings, flux.market_data');
  });
  const counts = (await db.query(`SELECT t::text AS t, count(*)::int AS n FROM flux_internal.partitioned_tables() t,
                                  LATERAL flux_internal.time_partitions(t) GROUP BY 1 ORDER BY 1`)).rows;
  const dev = '00000000-0000-4000-b000-000000000001';
  const meterDev = '00000000-0000-4000-b000-000000000006';
  const layouts = {
    partitioned: { bess: 'flux.mg_bess_readings', meter: 'flux.mg_meter_readings', market: 'flux.market_data' },
    'one table': { bess: 'flux_bench.mg_bess_readings', meter: 'flux_bench.mg_meter_readings', market: 'flux_bench.market_data' },
  };
  const results = [];
  for (const [name, [sql, args]] of Object.entries(examples)) {
    const row = { name };
    for (const [layout, tables] of Object.entries(layouts)) {
      const text = sql.replace(/%(bess|meter|market)/g, (_, t) => tables[t]);
      const values = args.map((a) => (a === 'dev' ? (text.includes('meter') ? meterDev : dev) : a));
      // One statement's planning time, then the prepared statement run as PostgREST runs it.
      const explained = (await db.query(`EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) ${text.replace(/\$(\d)/g, (_, k) => pgLiteral(values[k - 1]))}`)).rows[0]['QUERY PLAN'][0];
      const samples = [];
      for (let r = 0; r < reps; r++) {
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < 20; i++) await db.query({ name: `${layout}-${name}`, text, values });
        samples.push(seconds(t0) / 20);
      }
      row[layout] = { planning: explained['Planning Time'], run: median(samples) * 1000 };
    }
    results.push(row);
  }
  await db.end();
  console.log(`\nplanning: ${counts.map((c) => `${c.t} ${c.n} partitions`).join(', ')}, against the same rows in one table; median of ${reps}`);
  console.log('  example                                       planning ms (part. / one)   per query ms, prepared (part. / one)   ratio');
  for (const r of results) {
    const p = r.partitioned;
    const o = r['one table'];
    console.log(`  ${r.name.padEnd(45)} ${p.planning.toFixed(2).padStart(8)} / ${o.planning.toFixed(2).padEnd(8)}          ${p.run.toFixed(2).padStart(8)} / ${o.run.toFixed(2).padEnd(8)}            ${(p.run / o.run).toFixed(1)}`);
  }
}

const pgLiteral = (v) => (typeof v === 'number' ? String(v) : `'${String(v).replaceAll("'", "''")}'`);

async function main() {
  if (which !== 'planning') await retention();
  if (which !== 'retention') await planning();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
