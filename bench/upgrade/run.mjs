// Upgrade benchmark: ALTER EXTENSION flux UPDATE from the frozen 0.1.0 on a database holding
// --rows meter readings (and as many BESS readings), against the floor of any conversion
// that rewrites the tables: copying the same rows with CREATE TABLE AS, in the same run.
// Reports seconds per GB of stored data (heap and indexes).
//
//   node bench/upgrade/run.mjs [--rows 2000000]
//
// Uses a database of its own on the stack's cluster, dropped at the end.
import { env, opt, pg, seconds, urlOf } from '../lib.mjs';

const rows = opt('rows', 2_000_000);
const devices = 200;

const NAME = 'flux_bench_upgrade';

async function main() {
  const admin = new pg.Client({ connectionString: env.FLUX_DB_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${NAME}`);
  await admin.query(`CREATE DATABASE ${NAME}`);
  const db = new pg.Client({ connectionString: urlOf(NAME) });
  await db.connect();
  await db.query("CREATE EXTENSION flux VERSION '0.1.0'");
  const steps = Math.ceil(rows / devices);
  console.log(`generating ${(2 * steps * devices).toLocaleString()} readings in 0.1.0's tables ...`);
  await db.query(`INSERT INTO flux.mg_device_registry (id, name, type, site)
                  SELECT ('00000000-0000-4000-d000-' || lpad(to_hex(d), 12, '0'))::uuid, 'UPG-' || d, CASE WHEN d % 2 = 0 THEN 'meter' ELSE 'bess' END, 'BENCH'
                  FROM generate_series(1, ${devices}) d`);
  const id = `('00000000-0000-4000-d000-' || lpad(to_hex(d), 12, '0'))::uuid`;
  // Readings every 10 s from 60 days back, so that they span many daily partitions.
  const times = `generate_series(0, ${steps - 1}) s`;
  const t = `now() - interval '60 days' + s * interval '10 seconds' * ${Math.max(1, Math.floor((60 * 8640) / steps))}`;
  await db.query(`INSERT INTO flux.mg_meter_readings (device_id, time, power_total_active, energy_imported_active, energy_exported_active)
                  SELECT ${id}, ${t}, 10, s * 0.1 + d, 0 FROM ${times} CROSS JOIN generate_series(1, ${devices}) d`);
  await db.query(`INSERT INTO flux.mg_bess_readings (device_id, time, soe, target_power)
                  SELECT ${id}, ${t}, 50, -5 FROM ${times} CROSS JOIN generate_series(1, ${devices}) d`);
  await db.query('VACUUM ANALYZE');
  const bytes = Number((await db.query(`SELECT pg_total_relation_size('flux.mg_meter_readings') + pg_total_relation_size('flux.mg_bess_readings') AS b`)).rows[0].b);

  // The floor: the same rows copied, with no index, constraint or partition.
  await db.query('CHECKPOINT');
  const f0 = process.hrtime.bigint();
  await db.query('CREATE TABLE copy_meter AS SELECT * FROM flux.mg_meter_readings');
  await db.query('CREATE TABLE copy_bess AS SELECT * FROM flux.mg_bess_readings');
  const floor = seconds(f0);
  await db.query('DROP TABLE copy_meter, copy_bess');

  await db.query('CHECKPOINT');
  const u0 = process.hrtime.bigint();
  await db.query('ALTER EXTENSION flux UPDATE');
  const update = seconds(u0);
  const partitions = (await db.query(`SELECT count(*)::int AS n FROM flux_internal.time_partitions('flux.mg_meter_readings')`)).rows[0].n;
  const after = (await db.query('SELECT (SELECT count(*) FROM flux.mg_meter_readings) + (SELECT count(*) FROM flux.mg_bess_readings) AS n')).rows[0].n;
  await db.end();
  await admin.query(`DROP DATABASE ${NAME}`);
  await admin.end();

  const gb = bytes / 2 ** 30;
  console.log(`\nupgrade 0.1.0 -> 0.2.0: ${Number(after).toLocaleString()} readings, ${(bytes / 2 ** 20).toFixed(0)} MB (heap and indexes), ${partitions} daily meter partitions made`);
  console.log(`  floor: CREATE TABLE AS copies of the same rows   ${floor.toFixed(1)} s   ${(floor / gb).toFixed(0)} s/GB`);
  console.log(`  ALTER EXTENSION flux UPDATE                      ${update.toFixed(1)} s   ${(update / gb).toFixed(0)} s/GB   ratio ${(update / floor).toFixed(1)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
