// The Flux dashboard: a single page served by the stack's router at /, reading through the REST
// API and realtime with the anon key (what anon may see), like any supabase-js app.
import { createClient } from '@supabase/supabase-js';
import { fleetView } from './views/fleet.js';
import { deviceView } from './views/device.js';
import { energyView } from './views/energy.js';
import { marketView } from './views/market.js';
import { problems } from './lib.js';

const views = { fleet: fleetView, device: deviceView, energy: energyView, market: marketView };

/** fetch for supabase-js that reports what went wrong in the banner, with Retry-After on a 429. */
async function reportingFetch(input, init) {
  let res;
  try {
    res = await fetch(input, init);
  } catch (e) {
    problems.set('api', `Cannot reach the Flux stack at ${location.origin} (${e.message}). Is it running? (./flux up)`);
    throw e;
  }
  if (res.status === 429) {
    const wait = res.headers.get('retry-after');
    problems.set('api', `Rate limited (429): too many requests for this key. Retry after ${wait ?? '?'} s.`);
  } else if (res.status >= 500 || res.status === 401 || res.status === 403) {
    const body = await res.clone().json().catch(() => null);
    problems.set('api', `The API answered ${res.status}${body?.code ? ` ${body.code}` : ''}: ${body?.message ?? res.statusText}`);
  } else if (res.ok) {
    problems.clear('api');
  }
  return res;
}

async function start() {
  const config = await reportingFetch('config.json').then((r) => r.json());
  const supabase = createClient(location.origin, config.anonKey, {
    db: { schema: 'flux' },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: { fetch: reportingFetch },
  });
  const utc = document.getElementById('utc');
  utc.checked = localStorage.getItem('flux.utc') === '1';
  const main = document.getElementById('view');
  let cleanup = () => {};
  let generation = 0;

  async function route() {
    cleanup();
    cleanup = () => {};
    const mine = ++generation;
    const [path, query] = location.hash.replace(/^#\/?/, '').split('?');
    const [name, ...rest] = path.split('/');
    const view = views[name] ?? fleetView;
    for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === (views[name] ? name : 'fleet') || (name === 'device' && a.dataset.view === 'fleet'));
    main.replaceChildren();
    const ctx = { supabase, params: new URLSearchParams(query ?? ''), args: rest.map(decodeURIComponent), zone: utc.checked ? 'UTC' : 'Europe/London' };
    try {
      const stop = await view(main, ctx);
      if (mine === generation) cleanup = stop ?? cleanup;
      else stop?.();
    } catch (e) {
      if (mine !== generation) return;
      const p = document.createElement('p');
      p.className = 'set-aside view-error';
      p.textContent = `Could not load this view: ${e.message}`;
      main.append(p);
    }
  }
  utc.addEventListener('change', () => {
    localStorage.setItem('flux.utc', utc.checked ? '1' : '0');
    route();
  });
  window.addEventListener('hashchange', route);
  await route();
}

start().catch((e) => problems.set('start', `The dashboard could not start: ${e.message}`));
