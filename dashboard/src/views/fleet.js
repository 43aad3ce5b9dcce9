// Fleet: every device the role can see, by site, with when it was last seen, its live state of
// energy and power. Devices silent for longer than STALE_MS stand out.
import { h, card, formatAge, formatTime, must, number, onInsert, readingTable, registry, throttle } from '../lib.js';

export const STALE_MS = 60_000;
const RECENT_MS = 15 * 60_000;
const LOOKUPS = 50; // devices silent for longer than RECENT_MS whose last reading is looked up

export async function fleetView(main, { supabase, zone }) {
  const devices = await registry(supabase);
  const latest = new Map(); // device id → newest reading seen
  const take = (r) => {
    const old = latest.get(r.device_id);
    if (!old || Date.parse(r.time) > Date.parse(old.time)) latest.set(r.device_id, r);
  };
  const since = new Date(Date.now() - RECENT_MS).toISOString();
  const recent = (table, cols) => must(supabase.from(table).select(cols).gte('time', since).order('time', { ascending: false }).limit(10000));
  const [bess, meters] = await Promise.all([
    recent('mg_bess_readings', 'device_id,time,soe,target_power'),
    recent('mg_meter_readings', 'device_id,time,power_total_active'),
  ]);
  [...bess, ...meters].forEach(take);
  const silent = devices.filter((d) => !latest.has(d.id)).slice(0, LOOKUPS);
  await Promise.all(silent.map(async (d) => {
    const [r] = await must(supabase.from(readingTable(d)).select('*').eq('device_id', d.id).order('time', { ascending: false }).limit(1));
    if (r) take(r);
  }));

  const cards = h('div', { class: 'cards' });
  const sites = h('div');
  main.append(h('h1', {}, 'Fleet'), cards, sites);

  const seen = (d) => latest.get(d.id);
  const isStale = (d, now) => !seen(d) || now - Date.parse(seen(d).time) > STALE_MS;
  // One row per device, built once; updates set only the cells that show a reading's state.
  const rows = new Map();
  for (const [site, list] of Map.groupBy(devices, (d) => d.site ?? '(no site)')) {
    sites.append(h('section', { 'data-site': site },
      h('h2', {}, `Site ${site}`),
      h('div', { class: 'scroll panel' }, h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Device'), h('th', {}, 'Type'), h('th', {}, 'Last seen'), h('th', { class: 'num' }, 'State of energy'), h('th', { class: 'num' }, 'Power'), h('th', {}, 'Status'))),
        h('tbody', {}, list.map((d) => {
          const cells = { seen: h('td'), soe: h('td', { class: 'num' }), power: h('td', { class: 'num' }), status: h('span', { class: 'badge' }) };
          const tr = h('tr', { 'data-device': d.name },
            h('td', {}, h('a', { href: `#/device/${d.id}` }, d.name)), h('td', {}, d.type), cells.seen, cells.soe, cells.power,
            h('td', {}, !d.active && h('span', { class: 'badge' }, 'inactive'), cells.status));
          rows.set(d.id, { tr, cells, device: d });
          return tr;
        }))))));
  }
  const setText = (el, text) => {
    if (el.textContent !== text) el.textContent = text;
  };
  /** The cells that change with the time only: age and staleness. */
  function age({ tr, cells, device }, now) {
    const r = seen(device);
    const stale = isStale(device, now);
    setText(cells.seen, r ? formatAge(now - Date.parse(r.time)) : 'never');
    tr.classList.toggle('stale', stale);
    setText(cells.status, r ? (stale ? 'stale' : 'live') : 'no data');
    cells.status.className = `badge ${stale ? 'warn' : 'ok'}`;
  }
  /** The cells of a new reading. */
  function reading(row, now) {
    const r = seen(row.device);
    const { cells } = row;
    cells.seen.title = r ? formatTime(r.time, zone) : '';
    cells.soe.replaceChildren(...(r?.soe !== undefined && r?.soe !== null
      ? [h('span', { class: 'bar' }, h('span', { style: `width:${Math.max(0, Math.min(100, r.soe))}%` })), number(r.soe, 1, '%')]
      : ['—']));
    setText(cells.power, number(r?.target_power ?? r?.power_total_active, 1, 'kW'));
    age(row, now);
  }
  function summary(now) {
    const bessLatest = devices.filter((d) => d.type === 'bess' && typeof seen(d)?.soe === 'number');
    const gridPower = devices.filter((d) => d.type === 'meter' && seen(d)).reduce((a, d) => a + (seen(d).power_total_active ?? 0), 0);
    const stale = devices.filter((d) => isStale(d, now)).length;
    cards.replaceChildren(
      card('Devices', String(devices.length)),
      card('Reporting', String(devices.length - stale)),
      card('Stale', String(stale)),
      card('Grid meters, net import', number(gridPower, 1, 'kW')),
      card('Mean state of energy', bessLatest.length ? number(bessLatest.reduce((a, d) => a + seen(d).soe, 0) / bessLatest.length, 1, '%') : '—'),
    );
  }
  const start = Date.now();
  for (const row of rows.values()) reading(row, start);
  summary(start);

  const changed = new Set();
  const flush = throttle(() => {
    const now = Date.now();
    for (const id of changed) if (rows.has(id)) reading(rows.get(id), now);
    changed.clear();
    summary(now);
  }, 250);
  const live = (r) => {
    take(r);
    changed.add(r.device_id);
    flush();
  };
  const stops = [onInsert(supabase, 'mg_bess_readings', null, live), onInsert(supabase, 'mg_meter_readings', null, live)];
  const tick = setInterval(() => {
    const now = Date.now();
    for (const row of rows.values()) age(row, now);
    summary(now);
  }, 1000);
  return () => {
    clearInterval(tick);
    stops.forEach((s) => s());
  };
}
