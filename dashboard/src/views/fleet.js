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

  function render() {
    const now = Date.now();
    const seen = (d) => latest.get(d.id);
    const isStale = (d) => !seen(d) || now - Date.parse(seen(d).time) > STALE_MS;
    const bessLatest = devices.filter((d) => d.type === 'bess' && seen(d)?.soe !== undefined);
    const gridPower = devices.filter((d) => d.type === 'meter' && seen(d)).reduce((a, d) => a + (seen(d).power_total_active ?? 0), 0);
    cards.replaceChildren(
      card('Devices', String(devices.length)),
      card('Reporting', String(devices.filter((d) => !isStale(d)).length)),
      card('Stale', String(devices.filter(isStale).length), { class: `card${devices.some(isStale) ? ' stale' : ''}` }),
      card('Grid meters, net import', number(gridPower, 1, 'kW')),
      card('Mean state of energy', bessLatest.length ? number(bessLatest.reduce((a, d) => a + seen(d).soe, 0) / bessLatest.length, 1, '%') : '—'),
    );
    const bySite = Map.groupBy(devices, (d) => d.site ?? '(no site)');
    sites.replaceChildren(...[...bySite].map(([site, list]) => h('section', { 'data-site': site },
      h('h2', {}, `Site ${site}`),
      h('div', { class: 'scroll panel' }, h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Device'), h('th', {}, 'Type'), h('th', {}, 'Last seen'), h('th', { class: 'num' }, 'State of energy'), h('th', { class: 'num' }, 'Power'), h('th', {}, 'Status'))),
        h('tbody', {}, list.map((d) => {
          const r = seen(d);
          const stale = isStale(d);
          const power = r?.target_power ?? r?.power_total_active;
          return h('tr', { 'data-device': d.name, class: stale ? 'stale' : '' },
            h('td', {}, h('a', { href: `#/device/${d.id}` }, d.name)),
            h('td', {}, d.type),
            h('td', { title: r ? formatTime(r.time, zone) : '' }, r ? formatAge(now - Date.parse(r.time)) : 'never'),
            h('td', { class: 'num' }, r?.soe !== undefined ? [h('span', { class: 'bar' }, h('span', { style: `width:${Math.max(0, Math.min(100, r.soe))}%` })), number(r.soe, 1, '%')] : '—'),
            h('td', { class: 'num' }, number(power, 1, 'kW')),
            h('td', {}, [
              !d.active && h('span', { class: 'badge' }, 'inactive'),
              h('span', { class: `badge ${stale ? 'warn' : 'ok'}` }, r ? (stale ? 'stale' : 'live') : 'no data'),
            ]));
        })))),
    )));
  }
  render();
  const later = throttle(render, 250);
  const live = (r) => {
    take(r);
    later();
  };
  const stops = [onInsert(supabase, 'mg_bess_readings', null, live), onInsert(supabase, 'mg_meter_readings', null, live)];
  const tick = setInterval(render, 1000);
  return () => {
    clearInterval(tick);
    stops.forEach((s) => s());
  };
}
