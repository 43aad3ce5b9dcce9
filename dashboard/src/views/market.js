// Market: wholesale and imbalance prices and NIV over the last 24 hours, against the site's net
// import through its grid meters (per settlement period), and Axle dispatch.
import { h, align, card, chart, formatTime, must, number, registry } from '../lib.js';
import { PERIOD_MS } from '../settlement.js';

const TYPES = { 1: ['NIV estimate', 'MW'], 2: ['Wholesale price', '£/MWh'], 3: ['Imbalance price', '£/MWh'], 4: ['Axle dispatch', 'kW'] };
const DAY_MS = 24 * 3_600_000;
const REFRESH_MS = 60_000;

export async function marketView(main, { supabase, params, zone }) {
  const devices = await registry(supabase);
  const sites = [...new Set(devices.map((d) => d.site))];
  const site = params.get('site') ?? sites[0];
  const gridMeters = devices.filter((d) => d.site === site && d.type === 'meter');
  main.append(
    h('h1', {}, 'Market'),
    h('div', { class: 'controls' },
      h('label', {}, 'Site', h('select', { onchange: (e) => { location.hash = `#/market?site=${encodeURIComponent(e.target.value)}`; } }, sites.map((s) => h('option', { value: s, selected: s === site }, s)))),
      h('span', { class: 'muted' }, gridMeters.length ? `net import through ${gridMeters.map((d) => d.name).join(', ')}` : 'this site has no grid meter (type meter)')),
  );
  const cards = h('div', { class: 'cards' });
  const pricesEl = h('div', { class: 'panel chart' });
  const flowsEl = h('div', { class: 'panel chart' });
  main.append(cards, pricesEl, flowsEl);

  async function load() {
    const end = Math.ceil(Date.now() / PERIOD_MS) * PERIOD_MS;
    const start = end - DAY_MS;
    const [market, energy] = await Promise.all([
      must(supabase.from('market_data').select('time,type,value').gte('time', new Date(start).toISOString()).in('type', [1, 2, 3, 4]).order('time').limit(10000)),
      gridMeters.length
        ? must(supabase.rpc('get_meter_readings_30m', { start_time: new Date(start).toISOString(), end_time: new Date(end).toISOString(), device_ids: gridMeters.map((d) => d.id) }))
        : [],
    ]);
    const series = Object.fromEntries(Object.keys(TYPES).map((t) => [t, new Map()]));
    for (const r of market) series[r.type].set(Date.parse(r.time) / 1000, r.value);
    // Net import as mean kW over each period: kWh per half hour × 2.
    const net = new Map();
    for (const r of energy) {
      const x = Date.parse(r.time_b) / 1000;
      net.set(x, (net.get(x) ?? 0) + ((r.energy_imported_active_delta ?? 0) - (r.energy_exported_active_delta ?? 0)) * 2);
    }
    const newest = (t) => market.findLast((r) => r.type === Number(t));
    cards.replaceChildren(...Object.entries(TYPES).map(([t, [label, unit]]) => {
      const r = newest(t);
      return card(label, number(r?.value, t === '4' ? 0 : 1, unit), { title: r ? formatTime(r.time, zone) : 'no data', 'data-type': t });
    }));
    return { prices: align(series[2], series[3]), flows: align(series[1], net, series[4]) };
  }

  const data = await load();
  const prices = chart(pricesEl, {
    title: 'Prices', zone, data: data.prices,
    series: [{ label: 'Wholesale', scale: 'gbp', color: '#0f6fd6', steps: true }, { label: 'Imbalance', scale: 'gbp', color: '#c62828', steps: true }],
    scales: { gbp: '£/MWh' },
  });
  const flows = chart(flowsEl, {
    title: `NIV against ${site}'s net import`, zone, data: data.flows,
    series: [{ label: 'NIV', scale: 'mw', color: '#6b4fbb' }, { label: 'Net import', scale: 'kw', color: '#c77700', bars: true }, { label: 'Axle dispatch', scale: 'kw', color: '#1f9d55', steps: true }],
    scales: { mw: 'MW', kw: 'kW' },
  });
  const timer = setInterval(async () => {
    try {
      const next = await load();
      prices.update(next.prices);
      flows.update(next.flows);
    } catch {
      // The banner already says what failed; the next round tries again.
    }
  }, REFRESH_MS);
  return () => {
    clearInterval(timer);
    prices.destroy();
    flows.destroy();
  };
}
