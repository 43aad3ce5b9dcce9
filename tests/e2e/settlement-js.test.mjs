// The dashboard and ./flux demo place instants in GB settlement periods with
// dashboard/src/settlement.js; the database's flux.settlement_period is the authority. They
// agree on random instants over four decades and on both clock changes of every year.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { sql, closeSql } from './lib.mjs';
import { settlementPeriod, periodsInDay, ukDayStart } from '../../dashboard/src/settlement.js';

after(closeSql);

test('the dashboard places instants in the settlement periods the database does', async () => {
  const from = Date.parse('2000-01-01T00:00:00Z');
  const span = Date.parse('2040-01-01T00:00:00Z') - from;
  const instants = Array.from({ length: 3000 }, () => from + Math.floor(Math.random() * span / 1000) * 1000);
  // Around every clock change: the last Sundays of March and October, 00:00 to 03:00 UTC.
  for (let year = 2000; year < 2040; year++) {
    for (const month of [2, 9]) {
      const last = new Date(Date.UTC(year, month + 1, 0));
      const sunday = Date.UTC(year, month, last.getUTCDate() - last.getUTCDay());
      for (let m = -90; m <= 240; m += 15) instants.push(sunday + m * 60_000);
    }
  }
  const rows = await sql(
    `SELECT (extract(epoch FROM t) * 1000)::bigint AS t, p.settlement_date::text AS date, p.settlement_period AS period, p.periods_in_day AS periods
       FROM unnest($1::timestamptz[]) t, flux.settlement_period(t) p`,
    [instants.map((t) => new Date(t).toISOString())],
  );
  assert.equal(rows.length, instants.length);
  for (const r of rows) {
    const t = Number(r.t);
    const mine = settlementPeriod(t);
    assert.deepEqual({ date: mine.date, period: mine.period, periods: periodsInDay(mine.date) }, { date: r.date, period: r.period, periods: r.periods }, new Date(t).toISOString());
    assert.ok(ukDayStart(mine.date) <= t && t < ukDayStart(mine.date) + r.periods * 1_800_000);
  }
});
