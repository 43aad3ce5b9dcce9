// Device: its last 24 hours as charts, and live readings through postgres_changes.
import { h, card, chart, formatTime, must, number, onInsert, readingTable, throttle } from '../lib.js';

const DAY_MS = 24 * 3_600_000;
const PAGE = 5000;
const MAX_PAGES = 20;

const FIELDS = {
  bess: [['soe', 'State of energy', '%', 1], ['target_power', 'Target power', 'kW', 1], ['available_inverter_blocks', 'Inverter blocks', '', 0], ['command_source', 'Command source', '', 0]],
  meter: [['power_total_active', 'Power', 'kW', 2], ['energy_imported_active', 'Imported', 'kWh', 2], ['energy_exported_active', 'Exported', 'kWh', 2], ['voltage_line_average', 'Voltage', 'V', 1], ['current_phase_average', 'Current', 'A', 1]],
};

export async function deviceView(main, { supabase, args: [id], zone }) {
  const [device] = await must(supabase.from('mg_device_registry').select('*').eq('id', id));
  if (!device) throw new Error(`no device ${id} (or this key may not see it)`);
  const table = readingTable(device);
  const fields = FIELDS[device.type === 'bess' ? 'bess' : 'meter'];
  const cols = ['time', ...fields.map(([f]) => f)].join(',');

  // The last 24 hours, page by page (a response holds at most the stack's row cap).
  const rows = [];
  let from = new Date(Date.now() - DAY_MS).toISOString();
  for (let page = 0; page < MAX_PAGES; page++) {
    const batch = await must(supabase.from(table).select(cols).eq('device_id', id).gt('time', from).order('time').limit(PAGE));
    rows.push(...batch);
    if (batch.length < PAGE) break;
    from = batch.at(-1).time;
  }

  const meta = device.metadata ?? {};
  const latest = h('dl', { class: 'cards', 'data-testid': 'latest' });
  const recentBody = h('tbody', { 'data-testid': 'recent' });
  const charts = h('div');
  main.append(
    h('p', {}, h('a', { href: '#/fleet' }, '← Fleet')),
    h('h1', {}, `${device.name} `, h('span', { class: 'muted' }, `${device.type} · site ${device.site ?? '—'}${device.active ? '' : ' · inactive'}`)),
    h('p', { class: 'muted' }, [
      meta.max_power_kw !== undefined && `max power ${number(meta.max_power_kw, 0, 'kW')}`,
      meta.capacity_kwh !== undefined && `capacity ${number(meta.capacity_kwh, 0, 'kWh')}`,
      meta.energy_register_max_kwh !== undefined && `register max ${number(meta.energy_register_max_kwh, 1, 'kWh')}`,
    ].filter(Boolean).join(' · ')),
    h('h2', {}, 'Latest reading'), latest,
    h('h2', {}, 'Last 24 hours'), charts,
    h('h2', {}, 'Recent readings'),
    h('div', { class: 'scroll panel' }, h('table', {},
      h('thead', {}, h('tr', {}, h('th', {}, 'Time'), fields.map(([, label, unit]) => h('th', { class: 'num' }, unit ? `${label} (${unit})` : label)))),
      recentBody)),
  );

  const plots = [];
  const seriesData = (keys) => [rows.map((r) => Date.parse(r.time) / 1000), ...keys.map((k) => rows.map((r) => r[k]))];
  const panel = () => {
    const el = h('div', { class: 'panel chart' });
    charts.append(el);
    return el;
  };
  const plotSpecs = device.type === 'bess'
    ? [{ keys: ['soe', 'target_power'], title: 'State of energy and power', series: [{ label: 'SoE', scale: 'soe', color: '#1f9d55' }, { label: 'Target power', scale: 'kw', color: '#0f6fd6', steps: true }], scales: { soe: '%', kw: 'kW' } }]
    : [
      { keys: ['power_total_active'], title: 'Active power (+ import)', series: [{ label: 'Power', scale: 'kw', color: '#0f6fd6' }], scales: { kw: 'kW' } },
      { keys: ['energy_imported_active', 'energy_exported_active'], title: 'Energy registers', series: [{ label: 'Imported', scale: 'kwh', color: '#c77700' }, { label: 'Exported', scale: 'kwh', color: '#1f9d55' }], scales: { kwh: 'kWh' } },
    ];
  for (const spec of plotSpecs) plots.push({ spec, plot: chart(panel(), { ...spec, data: seriesData(spec.keys), zone }) });

  function renderLatest() {
    const r = rows.at(-1);
    latest.replaceChildren(
      card('Time', r ? formatTime(r.time, zone) : 'no readings in 24 h', { 'data-field': 'time', 'data-time': r?.time ?? '' }),
      ...fields.map(([f, label, unit, digits]) => card(label, number(r?.[f], digits, unit), { 'data-field': f })),
    );
    recentBody.replaceChildren(...rows.slice(-10).reverse().map((x) => h('tr', { 'data-time': x.time },
      h('td', {}, formatTime(x.time, zone)),
      fields.map(([f, , , digits]) => h('td', { class: 'num' }, number(x[f], digits))))));
  }
  renderLatest();
  const redraw = throttle(() => plots.forEach(({ spec, plot }) => plot.update(seriesData(spec.keys))), 1000);
  const stop = onInsert(supabase, table, `device_id=eq.${id}`, (r) => {
    const t = Date.parse(r.time);
    let i = rows.length;
    while (i > 0 && Date.parse(rows[i - 1].time) > t) i--;
    rows.splice(i, 0, r);
    while (rows.length && Date.parse(rows[0].time) < Date.now() - DAY_MS) rows.shift();
    renderLatest();
    redraw();
  });
  return () => {
    stop();
    plots.forEach(({ plot }) => plot.destroy());
  };
}
