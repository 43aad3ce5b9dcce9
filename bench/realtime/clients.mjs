// A worker thread holding a share of the benchmark's WebSocket clients (raw vsn 2.0.0, as
// supabase-js >= 2.91 speaks it). Each client joins one channel: with a `device`, one INSERT
// binding filtered on it, and every delivered change reports its insert -> callback latency (ms)
// tagged with the phase that inserted it (`command_source` of the row); without one, Broadcast
// only, and every `tick` reports its send -> receive latency tagged with the topic.
import { parentPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';

const require = createRequire(workerData.requireFrom);
const WebSocket = require('ws');

const now = () => performance.timeOrigin + performance.now();
// The send time travels in target_power, which holds at most ±1e9: milliseconds modulo 1e8
// (27 hours), unwrapped here.
const STAMP_MODULUS = 1e8;
const sinceStamp = (stamp) => (((now() % STAMP_MODULUS) - stamp) % STAMP_MODULUS + STAMP_MODULUS) % STAMP_MODULUS;
const pending = new Map(); // phase -> latencies not yet reported
const record = (phase, ms) => {
  if (!pending.has(phase)) pending.set(phase, []);
  pending.get(phase).push(ms);
};

function connect({ topic, device }) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${workerData.url}?apikey=${workerData.key}&vsn=2.0.0`);
    ws.on('error', reject);
    ws.on('open', () => {
      const bindings = device ? [{ event: 'INSERT', schema: 'flux', table: 'mg_bess_readings', filter: `device_id=eq.${device}` }] : [];
      const config = { broadcast: { ack: false, self: false }, presence: { key: '', enabled: false }, postgres_changes: bindings, private: false };
      ws.send(JSON.stringify(['1', '1', topic, 'phx_join', { config, access_token: workerData.key }]));
      // Heartbeats as supabase-js sends them.
      setInterval(() => ws.send(JSON.stringify([null, 'hb', 'phoenix', 'heartbeat', {}])), 25_000).unref();
    });
    ws.on('message', (data) => {
      const [, ref, , event, payload] = JSON.parse(data);
      if (event === 'postgres_changes') {
        record(payload.data.record.command_source, sinceStamp(payload.data.record.target_power));
      } else if (event === 'broadcast') {
        record(topic, now() - payload.payload.sent);
      } else if (event === 'system' && payload.status === 'error') {
        parentPort.postMessage({ system: payload.message });
      } else if (event === 'phx_reply' && ref === '1') {
        if (payload.status === 'ok') resolve(ws);
        else reject(new Error(JSON.stringify(payload)));
      }
    });
  });
}

const sockets = await Promise.all(workerData.clients.map(connect));
parentPort.postMessage({ ready: sockets.length });

setInterval(() => {
  if (pending.size === 0) return;
  const batch = [...pending.entries()];
  pending.clear();
  parentPort.postMessage({ latencies: batch });
}, 100);

parentPort.on('message', (msg) => {
  if (msg === 'stop') {
    for (const ws of sockets) ws.close();
    setTimeout(() => process.exit(0), 200);
  }
});
