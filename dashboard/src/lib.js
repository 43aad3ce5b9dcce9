// Shared pieces of the dashboard views: the error banner, formatting, charts, realtime.
import uPlot from 'uplot';

/** What is wrong right now, by source (api, realtime, …), shown in the banner until cleared. */
export const problems = {
  current: new Map(),
  set(source, message) {
    this.current.set(source, message);
    this.show();
  },
  clear(source) {
    if (this.current.delete(source)) this.show();
  },
  show() {
    const el = document.getElementById('error');
    el.hidden = this.current.size === 0;
    el.textContent = [...this.current.values()].join(' · ');
  },
};

/** The data of a supabase-js answer, or an Error with the API's message. */
export async function must(query) {
  const { data, error, status } = await query;
  if (error) throw new Error(`${status || 'network'}: ${error.message}${error.code ? ` (${error.code})` : ''}`);
  return data;
}

/** Builds an element: h('td', { class: 'num' }, 'text', child…). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  el.append(...children.flat().filter((c) => c !== undefined && c !== null && c !== false));
  return el;
}

export function formatTime(t, zone, { seconds = true, date = true } = {}) {
  return new Intl.DateTimeFormat('en-GB', {
    timeZone: zone, ...(date && { day: '2-digit', month: 'short' }), hour: '2-digit', minute: '2-digit',
    ...(seconds && { second: '2-digit' }), hourCycle: 'h23', timeZoneName: 'short',
  }).format(new Date(t));
}

/** A time axis label: 24-hour HH:MM, and the date at midnight (in the zone shown). */
function axisTime(t, zone) {
  const hm = new Intl.DateTimeFormat('en-GB', { timeZone: zone, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(new Date(t));
  return hm === '00:00' ? new Intl.DateTimeFormat('en-GB', { timeZone: zone, day: 'numeric', month: 'short' }).format(new Date(t)) : hm;
}

export function formatAge(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 48 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function number(v, digits = 1, unit = '') {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  const text = Number(v).toLocaleString('en-GB', { minimumFractionDigits: digits, maximumFractionDigits: digits });
  return unit ? `${text} ${unit}` : text;
}

export function card(label, value, attrs = {}) {
  return h('div', { class: 'card', ...attrs }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value));
}

/** The devices a role can see, by site. */
export async function registry(supabase) {
  return must(supabase.from('mg_device_registry').select('id,name,type,site,metadata,active').order('site').order('name'));
}

export const readingTable = (device) => (device.type === 'bess' ? 'mg_bess_readings' : 'mg_meter_readings');

/**
 * A uPlot chart that fills `el`'s width. series: [{ label, scale, color, bars }]; scales:
 * { name: unit label }. data: [xs (s), ys…]. Returns { update(data), destroy() }.
 */
export function chart(el, { title, series, scales, data, zone, height = 260 }) {
  const axisNames = Object.keys(scales);
  const width = () => {
    const style = getComputedStyle(el);
    return Math.max(200, el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight));
  };
  const opts = {
    title, width: width(), height,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), zone),
    scales: Object.fromEntries(axisNames.map((s) => [s, {}])),
    series: [
      {},
      ...series.map((s) => ({
        label: `${s.label} (${scales[s.scale]})`, scale: s.scale, stroke: s.color, width: 1.5,
        ...(s.bars && { fill: `${s.color}55`, paths: uPlot.paths.bars({ size: [0.8, 40] }) }),
        ...(s.steps && { paths: uPlot.paths.stepped({ align: 1 }) }),
        spanGaps: false,
        value: (u, v) => number(v, 2, scales[s.scale]),
      })),
    ],
    axes: [
      { values: (u, splits) => splits.map((x) => axisTime(x * 1000, zone)), space: 60 },
      ...axisNames.map((s, i) => ({ scale: s, label: scales[s], side: i === 0 ? 3 : 1, grid: { show: i === 0 }, size: 60 })),
    ],
  };
  const plot = new uPlot(opts, data, el);
  const resize = new ResizeObserver(() => plot.setSize({ width: width(), height }));
  resize.observe(el);
  return {
    update: (next) => plot.setData(next),
    destroy: () => {
      resize.disconnect();
      plot.destroy();
    },
  };
}

/** Aligns series given as Maps of x → y onto one sorted x axis (uPlot's data layout). */
export function align(...maps) {
  const xs = [...new Set(maps.flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
  return [xs, ...maps.map((m) => xs.map((x) => (m.has(x) ? m.get(x) : null)))];
}

/**
 * Subscribes to INSERTs of a table (optionally filtered); the banner and the header dot show the
 * channel's state. Returns the unsubscribe function.
 */
export function onInsert(supabase, table, filter, callback) {
  const channel = supabase.channel(`${table}:${filter ?? 'all'}:${Math.random().toString(36).slice(2)}`);
  channel
    .on('postgres_changes', { event: 'INSERT', schema: 'flux', table, ...(filter && { filter }) }, (p) => callback(p.new))
    .subscribe((status, err) => {
      document.getElementById('live').classList.toggle('on', status === 'SUBSCRIBED');
      if (status === 'SUBSCRIBED') problems.clear('realtime');
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') problems.set('realtime', `Realtime ${status.toLowerCase().replace('_', ' ')}${err?.message ? `: ${err.message}` : ''}; live updates paused, retrying.`);
    });
  return () => supabase.removeChannel(channel);
}

/** Calls fn at most once per `ms`, the last call winning. */
export function throttle(fn, ms) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      fn();
    }, ms);
  };
}
