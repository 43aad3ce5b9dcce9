// Energy: a meter's import and export per GB settlement period of a UK local day (46 or 50
// periods on clock-change days), with the quality flags and set-aside energy that
// flux.meter_energy_buckets reports.
import { h, card, chart, formatTime, must, number, registry } from '../lib.js';
import { PERIOD_MS, periodsInDay, ukDate, ukDayStart } from '../settlement.js';

// Flags that only describe how the figure was made, and those that mean a meter did something.
const INFO = new Set(['interpolated', 'jitter']);
const WARN = new Set(['reset', 'rollover']);

function flagBadges(row) {
  const badges = [];
  for (const [register, label] of [['imported', 'import'], ['exported', 'export']]) {
    for (const flag of row?.[`energy_${register}_active_quality`] ?? []) {
      const level = INFO.has(flag) ? '' : WARN.has(flag) ? 'warn' : 'bad';
      badges.push(h('span', { class: `badge ${level}`, title: `${label} register: ${flag}` }, `${flag.replace('_', ' ')} (${label})`));
    }
  }
  return badges;
}

export async function energyView(main, { supabase, params, zone }) {
  const devices = (await registry(supabase)).filter((d) => d.type !== 'bess');
  const sites = [...new Set(devices.map((d) => d.site))];
  const site = params.get('site') ?? sites[0];
  const meters = devices.filter((d) => d.site === site);
  const meter = meters.find((d) => d.id === params.get('meter')) ?? meters.find((d) => d.type === 'meter') ?? meters[0];
  const date = /^\d{4}-\d{2}-\d{2}$/.test(params.get('date') ?? '') ? params.get('date') : ukDate(Date.now());

  const go = (changes) => {
    const next = new URLSearchParams({ site, date, ...(meter && { meter: meter.id }), ...changes });
    location.hash = `#/energy?${next}`;
  };
  main.append(
    h('h1', {}, 'Energy per settlement period'),
    h('div', { class: 'controls' },
      h('label', {}, 'Site', h('select', { onchange: (e) => go({ site: e.target.value, meter: '' }) }, sites.map((s) => h('option', { value: s, selected: s === site }, s)))),
      h('label', {}, 'Meter', h('select', { name: 'meter', onchange: (e) => go({ meter: e.target.value }) }, meters.map((d) => h('option', { value: d.id, selected: d === meter }, d.name)))),
      h('label', {}, 'Settlement date (UK)', h('input', { type: 'date', name: 'date', value: date, onchange: (e) => e.target.value && go({ date: e.target.value }) })),
    ),
  );
  if (!meter) {
    main.append(h('p', { class: 'muted' }, 'No meters to show.'));
    return;
  }

  const start = ukDayStart(date);
  const periods = periodsInDay(date);
  // The database is the authority on settlement periods: check the day against it.
  const [first] = await must(supabase.rpc('settlement_period', { ts: new Date(start).toISOString() }));
  if (first.settlement_date !== date || first.settlement_period !== 1 || first.periods_in_day !== periods) {
    throw new Error(`the database places ${date} differently (${JSON.stringify(first)})`);
  }
  const end = start + periods * PERIOD_MS;
  const rows = await must(supabase.rpc('meter_energy_buckets', {
    start_time: new Date(start).toISOString(), end_time: new Date(end).toISOString(), bucket_width: '30 minutes', device_ids: [meter.id],
  }));
  const byPeriod = new Map(rows.map((r) => [Math.round((Date.parse(r.time_b) - start) / PERIOD_MS) + 1, r]));
  const sum = (k) => rows.reduce((a, r) => a + (r[k] ?? 0), 0);
  const setAside = (r) => (r ? r.energy_imported_active_set_aside + r.energy_exported_active_set_aside : 0);

  main.append(
    h('div', { class: 'cards' },
      card('Periods', `${periods}${periods === 48 ? '' : ' (clock change)'}`, { 'data-testid': 'periods' }),
      card('Imported', number(sum('energy_imported_active_delta'), 1, 'kWh')),
      card('Exported', number(sum('energy_exported_active_delta'), 1, 'kWh')),
      card('Set aside', number(rows.reduce((a, r) => a + setAside(r), 0), 2, 'kWh')),
    ),
  );
  const chartEl = h('div', { class: 'panel chart' });
  main.append(chartEl);
  const xs = Array.from({ length: periods }, (_, i) => (start + i * PERIOD_MS) / 1000);
  const plot = chart(chartEl, {
    title: `${meter.name}, ${date}`, zone,
    series: [{ label: 'Import', scale: 'kwh', color: '#c77700', bars: true }, { label: 'Export', scale: 'kwh', color: '#1f9d55', bars: true }],
    scales: { kwh: 'kWh' },
    data: [xs, xs.map((_, i) => byPeriod.get(i + 1)?.energy_imported_active_delta ?? null), xs.map((_, i) => byPeriod.get(i + 1)?.energy_exported_active_delta ?? null)],
  });

  main.append(h('div', { class: 'scroll panel' }, h('table', { 'data-testid': 'periods-table' },
    h('thead', {}, h('tr', {},
      h('th', { class: 'num' }, 'Period'), h('th', {}, `Start (${zone === 'UTC' ? 'UTC' : 'UK'})`),
      h('th', { class: 'num' }, 'Import (kWh)'), h('th', { class: 'num' }, 'Export (kWh)'), h('th', { class: 'num' }, 'Mean power (kW)'),
      h('th', { class: 'num' }, 'Readings'), h('th', {}, 'Quality'), h('th', { class: 'num' }, 'Set aside (kWh)'))),
    h('tbody', {}, Array.from({ length: periods }, (_, i) => {
      const r = byPeriod.get(i + 1);
      const aside = setAside(r);
      return h('tr', { 'data-period': i + 1 },
        h('td', { class: 'num' }, String(i + 1)),
        h('td', {}, formatTime(start + i * PERIOD_MS, zone, { seconds: false, date: false })),
        h('td', { class: 'num' }, number(r?.energy_imported_active_delta, 2)),
        h('td', { class: 'num' }, number(r?.energy_exported_active_delta, 2)),
        h('td', { class: 'num' }, number(r?.power_total_active_avg, 1)),
        h('td', { class: 'num' }, r ? String(r.reading_count) : '—'),
        h('td', {}, flagBadges(r)),
        h('td', { class: `num${aside > 0 ? ' set-aside' : ''}` }, aside > 0 ? number(aside, 2) : '—'));
    })))));
  return () => plot.destroy();
}
