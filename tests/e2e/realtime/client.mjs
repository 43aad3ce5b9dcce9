// One real supabase-js client in its own process, driven by the realtime tests.
//
//   node client.mjs <package> <url> <key> [<access token>]
//
// <package> is the npm alias to load (supabase-js-2.90 or supabase-js-2.119): each runs on the
// Node version it needs, so the parent test spawns this script once per version. Commands come
// as JSON lines on stdin; everything that happens goes back as JSON lines on stdout:
//   {"cmd":"subscribe","id":"c1","channel":"bess-realtime","bindings":[{event,schema,table,filter}]}
//       -> {"type":"status","id":"c1","status":"SUBSCRIBED"|"CHANNEL_ERROR"|...,"error":...}
//       -> {"type":"change","id":"c1","binding":0,"payload":{...}} per delivered change
//       -> {"type":"system","id":"c1","payload":{...}} per system message
//   {"cmd":"join","id":"c2","channel":"room","config":{broadcast,presence,private,...},"bindings":[...]}
//       -> {"type":"status",...}; {"type":"broadcast","id":"c2","payload":{type,event,payload}} per
//          broadcast; {"type":"presence","id":"c2","event":"sync"|"join"|"leave","key","state"}
//   {"cmd":"send","id":"c2","req":"s1","event":"e","payload":{...}} -> {"type":"sent","req":"s1","result":"ok"|...}
//   {"cmd":"track","id":"c2","req":"t1","meta":{...}} / {"cmd":"untrack","id":"c2","req":"t2"}
//       -> {"type":"tracked","req":"t1","result":"ok"|...}
//   {"cmd":"unsubscribe","id":"c1"}                      -> {"type":"unsubscribed","id":"c1","result":"ok"}
//   {"cmd":"setAuth","token":"..."}                      -> {"type":"auth-set"}
//   {"cmd":"insert","req":"r1","table":"...","rows":[...]} -> {"type":"rest","req":"r1","status":201,"data":[...],"error":null}
//   {"cmd":"select","req":"r2","table":"...","eq":["col","value"]} -> {"type":"rest",...}
import { createInterface } from 'node:readline';

const [pkg, url, key, token] = process.argv.slice(2);
const { createClient } = await import(pkg);

const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

// realtime-js 2.90 needs a WebSocket implementation on Node < 22, which has no global one.
const realtime = {};
if (typeof globalThis.WebSocket === 'undefined') {
  realtime.transport = (await import('ws')).default;
}
const options = { db: { schema: 'flux' }, realtime };
if (token) options.accessToken = async () => token;
const supabase = createClient(url, key, options);

const channels = new Map();

const commands = {
  subscribe({ id, channel, bindings }) {
    let ch = supabase.channel(channel);
    bindings.forEach((binding, index) => {
      ch = ch.on('postgres_changes', binding, (payload) => emit({ type: 'change', id, binding: index, payload }));
    });
    ch.on('system', {}, (payload) => emit({ type: 'system', id, payload }));
    channels.set(id, ch);
    ch.subscribe((status, error) => emit({ type: 'status', id, status, error: error ? String(error.message ?? error) : null }));
  },
  join({ id, channel, config, bindings = [] }) {
    const ch = supabase.channel(channel, { config });
    bindings.forEach((binding, index) => {
      ch.on('postgres_changes', binding, (payload) => emit({ type: 'change', id, binding: index, payload }));
    });
    ch.on('broadcast', { event: '*' }, (payload) => emit({ type: 'broadcast', id, payload }));
    for (const event of ['sync', 'join', 'leave']) {
      ch.on('presence', { event }, (p) => emit({ type: 'presence', id, event, key: p?.key ?? null, state: ch.presenceState() }));
    }
    ch.on('system', {}, (payload) => emit({ type: 'system', id, payload }));
    channels.set(id, ch);
    ch.subscribe((status, error) => emit({ type: 'status', id, status, error: error ? String(error.message ?? error) : null }));
  },
  async send({ id, req, event, payload }) {
    const result = await channels.get(id).send({ type: 'broadcast', event, payload });
    emit({ type: 'sent', req, result });
  },
  async track({ id, req, meta }) {
    emit({ type: 'tracked', req, result: await channels.get(id).track(meta) });
  },
  async untrack({ id, req }) {
    emit({ type: 'tracked', req, result: await channels.get(id).untrack() });
  },
  async unsubscribe({ id }) {
    const result = await supabase.removeChannel(channels.get(id));
    channels.delete(id);
    emit({ type: 'unsubscribed', id, result });
  },
  async setAuth({ token: next }) {
    await supabase.realtime.setAuth(next);
    emit({ type: 'auth-set' });
  },
  async insert({ req, table, rows }) {
    const { data, error, status } = await supabase.from(table).insert(rows).select();
    emit({ type: 'rest', req, status, data, error });
  },
  async select({ req, table, eq: [column, value] }) {
    const { data, error, status } = await supabase.from(table).select('*').eq(column, value);
    emit({ type: 'rest', req, status, data, error });
  },
};

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  try {
    await commands[command.cmd](command);
  } catch (e) {
    emit({ type: 'failure', cmd: command.cmd, error: String(e?.stack ?? e) });
  }
}
// stdin closed: the parent is done with us.
await supabase.removeAllChannels();
process.exit(0);
