// Every example of the API reference, as written there, against the real stack
// (router → PostgREST 12.0.2 → PostgreSQL with the flux extension).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, service, sql, closeSql, registerDevice, uuid, at, uniqueName, assertError, anonKey } from './lib.mjs';

after(closeSql);

const BESS_FIELDS = ['available_inverter_blocks', 'command_source', 'created_at', 'device_id', 'id', 'soe', 'target_power', 'time'];

test('POST /mg_bess_readings stores a reading (201) and GET returns it with every documented field', async () => {
  const bess = await registerDevice({ type: 'bess' });
  const reading = {
    device_id: bess.id,
    time: '2024-01-01T12:00:00.000Z',
    soe: 65.5,
    target_power: -25.0,
    available_inverter_blocks: 4,
    command_source: 1,
  };
  const created = await service('/mg_bess_readings', { method: 'POST', body: reading });
  assert.equal(created.status, 201);
  assert.equal(created.body, null, 'return=minimal is the default: no body');

  const res = await api(
    `/mg_bess_readings?device_id=eq.${bess.id}&time=gte.2024-01-01T00:00:00Z&time=lt.2024-01-02T00:00:00Z&order=time.desc&limit=100`,
  );
  assert.equal(res.status, 200);
  assert.equal(res.body.length, 1);
  const row = res.body[0];
  assert.deepEqual(Object.keys(row).sort(), BESS_FIELDS);
  assert.match(row.id, /^[0-9a-f-]{36}$/);
  assert.equal(Date.parse(row.time), Date.parse(reading.time));
  assert.equal(row.device_id, bess.id);
  assert.equal(row.soe, 65.5);
  assert.equal(row.target_power, -25);
  assert.equal(row.available_inverter_blocks, 4);
  assert.equal(row.command_source, 1);
  assert.ok(Date.parse(row.created_at) > Date.parse('2024-01-02'));
});

test('Prefer: return=representation returns the stored row', async () => {
  const bess = await registerDevice({ type: 'bess' });
  const res = await service('/mg_bess_readings', {
    method: 'POST',
    headers: { Prefer: 'return=representation' },
    body: { device_id: bess.id, time: '2024-01-01T12:00:00Z', soe: 10 },
  });
  assert.equal(res.status, 201);
  assert.equal(res.body.length, 1);
  assert.deepEqual(Object.keys(res.body[0]).sort(), BESS_FIELDS);
  assert.equal(res.body[0].soe, 10);
});

test('GET /mg_bess_readings filters by time range, orders newest first and limits', async () => {
  const bess = await registerDevice({ type: 'bess' });
  const rows = Array.from({ length: 30 }, (_, i) => ({
    device_id: bess.id,
    time: at('2024-01-01T23:45:00Z', i), // 15 inside 2024-01-01, 15 on the next day
    soe: i,
  }));
  assert.equal((await service('/mg_bess_readings', { method: 'POST', body: rows })).status, 201);
  const res = await api(
    `/mg_bess_readings?device_id=eq.${bess.id}&time=gte.2024-01-01T00:00:00Z&time=lt.2024-01-02T00:00:00Z&order=time.desc&limit=10`,
  );
  assert.equal(res.status, 200);
  assert.equal(res.body.length, 10);
  assert.deepEqual(res.body.map((r) => r.soe), [14, 13, 12, 11, 10, 9, 8, 7, 6, 5]);
});

test('GET with select= returns only the selected fields (meter example)', async () => {
  const meter = await registerDevice({ type: 'meter' });
  await service('/mg_meter_readings', {
    method: 'POST',
    body: { device_id: meter.id, time: '2024-01-01T12:00:00Z', power_total_active: 125.5, energy_imported_active: 1234.56 },
  });
  const res = await api(
    `/mg_meter_readings?device_id=eq.${meter.id}&time=gte.2024-01-01T00:00:00Z&select=time,power_total_active,energy_imported_active`,
  );
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, [{ time: '2024-01-01T12:00:00+00:00', power_total_active: 125.5, energy_imported_active: 1234.56 }]);
  const bess = await registerDevice({ type: 'bess' });
  await service('/mg_bess_readings', { method: 'POST', body: { device_id: bess.id, time: '2024-01-01T12:00:00Z', soe: 50, target_power: 3 } });
  const sel = await api(`/mg_bess_readings?device_id=eq.${bess.id}&select=time,device_id,soe,target_power`);
  assert.deepEqual(Object.keys(sel.body[0]).sort(), ['device_id', 'soe', 'target_power', 'time']);
});

test('bulk insert of meter readings with Prefer: return=minimal stores every row', async () => {
  const meter = await registerDevice({ type: 'meter' });
  const res = await service('/mg_meter_readings', {
    method: 'POST',
    headers: { Prefer: 'return=minimal' },
    body: [
      { device_id: meter.id, time: '2024-01-01T12:00:00Z', power_total_active: 125.5, voltage_line_average: 415.2, current_phase_average: 180.5 },
      { device_id: meter.id, time: '2024-01-01T12:01:00Z', power_total_active: 128.3, voltage_line_average: 414.8, current_phase_average: 182.1 },
    ],
  });
  assert.equal(res.status, 201);
  assert.equal(res.body, null);
  const rows = await api(`/mg_meter_readings?device_id=eq.${meter.id}&order=time.asc&select=power_total_active,voltage_line_average,current_phase_average`);
  assert.deepEqual(rows.body, [
    { power_total_active: 125.5, voltage_line_average: 415.2, current_phase_average: 180.5 },
    { power_total_active: 128.3, voltage_line_average: 414.8, current_phase_average: 182.1 },
  ]);
});

test('GET /market_data?type=eq.1&order=time.desc&limit=1 is the latest NIV estimate', async () => {
  // market_data is keyed by (type, time) and shared: use times no other test uses.
  const base = at('2031-01-01T00:00:00Z', Math.floor(Math.random() * 1e6) * 30);
  const rows = [
    { time: base, type: 1, value: -150.5, metadata: { confidence: 0.85, settlement_period: 24 } },
    { time: at(base, 30), type: 1, value: 42.0, metadata: { confidence: 0.9, settlement_period: 25 } },
    { time: at(base, 60), type: 2, value: 80.1 },
  ];
  assert.equal((await service('/market_data', { method: 'POST', body: rows.map((r) => ({ metadata: null, ...r })) })).status, 201);
  const res = await api(`/market_data?type=eq.1&time=gte.${base}&time=lt.${at(base, 90)}&order=time.desc&limit=1`);
  assert.equal(res.status, 200);
  assert.equal(res.body.length, 1);
  assert.deepEqual(Object.keys(res.body[0]).sort(), ['created_at', 'id', 'metadata', 'time', 'type', 'value']);
  assert.equal(res.body[0].value, 42.0);
  assert.equal(res.body[0].type, 1);
  assert.deepEqual(res.body[0].metadata, { confidence: 0.9, settlement_period: 25 });
  const all = await api(`/market_data?time=gte.${base}&time=lt.${at(base, 90)}&type=in.(1,2,3,4)&order=time.asc`);
  assert.deepEqual(all.body.map((r) => r.type), [1, 1, 2]);
});

test('device registration and listing by site and active status', async () => {
  const site = uniqueName('SITE');
  const name = uniqueName('WLCE-BESS');
  const reg = await service('/mg_device_registry', {
    method: 'POST',
    headers: { Prefer: 'return=representation' },
    body: { name, type: 'bess', site, metadata: { manufacturer: 'PowerPack', model: 'PP-500', capacity_kwh: 500, max_power_kw: 100 } },
  });
  assert.equal(reg.status, 201);
  const dev = reg.body[0];
  assert.deepEqual(Object.keys(dev).sort(), ['active', 'created_at', 'id', 'metadata', 'name', 'site', 'type']);
  assert.equal(dev.active, true, 'active defaults to true');
  assert.match(dev.id, /^[0-9a-f-]{36}$/);
  assert.equal(dev.metadata.capacity_kwh, 500);

  await registerDevice({ type: 'meter', site });
  const retired = await registerDevice({ type: 'meter', site });
  await service(`/mg_device_registry?id=eq.${retired.id}`, { method: 'PATCH', body: { active: false } });

  const res = await api(`/mg_device_registry?site=eq.${site}&active=eq.true`);
  assert.equal(res.status, 200);
  assert.equal(res.body.length, 2);
  assert.ok(res.body.every((d) => d.site === site && d.active));
  const bess = await api(`/mg_device_registry?site=eq.${site}&type=eq.bess`);
  assert.deepEqual(bess.body.map((d) => d.name), [name]);
});

test('the apikey header alone is enough to read (anon)', async () => {
  const res = await api('/mg_device_registry?limit=1', { bearer: false });
  assert.equal(res.status, 200);
  assert.ok(Array.isArray(res.body));
});

test('filter operators eq neq gt gte lt lte like in is', async () => {
  const site = uniqueName('OPS');
  const a = await registerDevice({ type: 'bess', site, name: `${site}-BESS-A` });
  const b = await registerDevice({ type: 'meter', site, name: `${site}-METER-B` });
  await service(`/mg_device_registry?id=eq.${b.id}`, { method: 'PATCH', body: { metadata: null } });
  await service('/mg_bess_readings', {
    method: 'POST',
    body: [10, 20, 50, 80, 90].map((soe, i) => ({ device_id: a.id, time: at('2024-02-01T00:00:00Z', i), soe, command_source: i % 2, target_power: soe - 50 })),
  });
  const soes = async (q) => (await api(`/mg_bess_readings?device_id=eq.${a.id}&${q}&order=time.asc`)).body.map((r) => r.soe);
  assert.deepEqual(await soes('soe=eq.50'), [50]);
  assert.deepEqual(await soes('command_source=neq.0'), [20, 80]);
  assert.deepEqual(await soes('target_power=gt.0'), [80, 90]);
  assert.deepEqual(await soes('soe=gte.80'), [80, 90]);
  assert.deepEqual(await soes('soe=lt.20'), [10]);
  assert.deepEqual(await soes('target_power=lte.0'), [10, 20, 50]);
  assert.deepEqual(await soes('soe=in.(10,90)'), [10, 90]);
  assert.deepEqual(await soes('soe=gt.50&soe=lt.85'), [80]);

  const names = async (q) => (await api(`/mg_device_registry?site=eq.${site}&${q}&order=name.asc`)).body.map((d) => d.name);
  assert.deepEqual(await names('name=like.*BESS*'), [`${site}-BESS-A`]);
  assert.deepEqual(await names('metadata=is.null'), [`${site}-METER-B`]);
  assert.deepEqual(await names(`site=in.(${site},HMCE)`), [`${site}-BESS-A`, `${site}-METER-B`]);
});

test('or=(...) and the documented nested and=(...,or=(...)) spelling, plus PostgREST\'s own', async () => {
  const a = await registerDevice({ type: 'bess' });
  const other = await registerDevice({ type: 'bess' });
  const put = (dev, soes) =>
    service('/mg_bess_readings', { method: 'POST', body: soes.map((soe, i) => ({ device_id: dev.id, time: at('2024-03-01T00:00:00Z', i), soe })) });
  await put(a, [10, 30, 50, 85, 95]);
  await put(other, [5, 99]);
  const soes = async (q) => (await api(`/mg_bess_readings?${q}&order=soe.asc`)).body.map((r) => r.soe);

  assert.deepEqual(await soes(`device_id=eq.${a.id}&or=(soe.lt.20,soe.gt.80)`), [10, 85, 95]);
  // As written in the API reference (stock PostgREST alone answers 400 PGRST100):
  assert.deepEqual(await soes(`and=(device_id.eq.${a.id},or=(soe.lt.20,soe.gt.80))`), [10, 85, 95]);
  // PostgREST's own grammar keeps working:
  assert.deepEqual(await soes(`and=(device_id.eq.${a.id},or(soe.lt.20,soe.gt.80))`), [10, 85, 95]);
  // Percent-encoded, as URLSearchParams would send it:
  const encoded = new URLSearchParams({ and: `(device_id.eq.${a.id},or=(soe.lt.20,soe.gt.80))` }).toString();
  assert.deepEqual(await soes(encoded), [10, 85, 95]);
  // Deeper nesting and negation:
  const both = `device_id=in.(${a.id},${other.id})`;
  assert.deepEqual(await soes(`${both}&or=(and=(device_id.eq.${a.id},not.or=(soe.lt.20,soe.gt.80)),soe.eq.99)`), [30, 50, 99]);
  assert.deepEqual(await soes(`${both}&or=(soe.lt.8,and=(soe.gt.90,soe.lt.96))`), [5, 95]);
});

test('cursor pagination and offset pagination walk the data without gaps or repeats', async () => {
  const bess = await registerDevice({ type: 'bess' });
  const n = 250;
  await service('/mg_bess_readings', {
    method: 'POST',
    body: Array.from({ length: n }, (_, i) => ({ device_id: bess.id, time: at('2024-04-01T00:00:00Z', i), soe: i % 100 })),
  });
  const seen = [];
  let cursor = null;
  for (;;) {
    // The cursor is a timestamp like 2024-04-01T04:09:00+00:00: its '+' must be sent as %2B.
    const page = await api(`/mg_bess_readings?device_id=eq.${bess.id}&limit=100&order=time.desc${cursor ? `&time=lt.${encodeURIComponent(cursor)}` : ''}`);
    assert.equal(page.status, 200);
    if (page.body.length === 0) break;
    seen.push(...page.body.map((r) => r.time));
    cursor = page.body.at(-1).time;
  }
  assert.equal(seen.length, n);
  assert.equal(new Set(seen).size, n);

  const offsets = [];
  for (let offset = 0; ; offset += 100) {
    const page = await api(`/mg_bess_readings?device_id=eq.${bess.id}&limit=100&offset=${offset}&order=time.desc`);
    if (page.body.length === 0) break;
    offsets.push(...page.body.map((r) => r.time));
  }
  assert.deepEqual(offsets, seen);

  const counted = await api(`/mg_bess_readings?device_id=eq.${bess.id}&limit=10`, { headers: { Prefer: 'count=exact' } });
  assert.equal(counted.headers.get('content-range'), `0-9/${n}`);
});

test('a re-sent reading is a 409 23505 in the documented error format; ignore-duplicates skips it', async () => {
  const bess = await registerDevice({ type: 'bess' });
  const reading = { device_id: bess.id, time: '2024-01-01T00:00:00Z', soe: 40 };
  assert.equal((await service('/mg_bess_readings', { method: 'POST', body: reading })).status, 201);
  const dup = await service('/mg_bess_readings', { method: 'POST', body: { ...reading, soe: 41 } });
  assertError(assert, dup, 409, '23505');
  assert.match(dup.body.message, /^duplicate key value violates unique constraint/);
  assert.match(dup.body.details, new RegExp(`^Key \\(device_id, "?time"?\\)=\\(${bess.id}, 2024-01-01 00:00:00\\+00\\) already exists\\.$`));

  const skipped = await service('/mg_bess_readings?on_conflict=device_id,time', {
    method: 'POST',
    headers: { Prefer: 'resolution=ignore-duplicates,return=representation' },
    body: [{ ...reading, soe: 42 }, { device_id: bess.id, time: '2024-01-01T00:01:00Z', soe: 43 }],
  });
  assert.equal(skipped.status, 201);
  assert.deepEqual(skipped.body.map((r) => r.soe), [43]);
  const stored = await api(`/mg_bess_readings?device_id=eq.${bess.id}&order=time.asc`);
  assert.deepEqual(stored.body.map((r) => r.soe), [40, 43], 'the original reading is kept');

  const merged = await service('/mg_bess_readings?on_conflict=device_id,time', {
    method: 'POST',
    headers: { Prefer: 'resolution=merge-duplicates' },
    body: [{ ...reading, soe: 44 }],
  });
  assert.equal(merged.status, 200, 'PostgREST answers 200 when an upsert only updated rows');
  assert.equal((await api(`/mg_bess_readings?device_id=eq.${bess.id}&time=eq.2024-01-01T00:00:00Z`)).body[0].soe, 44);
});

test('readings may be sent without a time zone suffix or with an offset; all are stored as instants', async () => {
  const bess = await registerDevice({ type: 'bess' });
  const res = await service('/mg_bess_readings', {
    method: 'POST',
    body: [
      { device_id: bess.id, time: '2024-06-01T13:00:00+01:00', soe: 1 },
      { device_id: bess.id, time: '2024-06-01T12:30:00Z', soe: 2 },
    ],
  });
  assert.equal(res.status, 201);
  const rows = await api(`/mg_bess_readings?device_id=eq.${bess.id}&time=eq.2024-06-01T12:00:00Z`);
  assert.deepEqual(rows.body.map((r) => r.soe), [1]);
});

test('market data types 1-4 are accepted and everything else is refused', async () => {
  const base = at('2032-01-01T00:00:00Z', Math.floor(Math.random() * 1e6) * 30);
  const ok = await service('/market_data', {
    method: 'POST',
    body: [1, 2, 3, 4].map((type) => ({ time: base, type, value: type * 10 })),
  });
  assert.equal(ok.status, 201);
  for (const type of [0, 5, -1]) {
    assertError(assert, await service('/market_data', { method: 'POST', body: { time: base, type, value: 1 } }), 400, '23514');
  }
  assertError(assert, await service('/market_data', { method: 'POST', body: { time: base, type: 'NIV', value: 1 } }), 400, '22P02');
  assertError(assert, await service('/market_data', { method: 'POST', body: { time: at(base, 1), type: 1 } }), 400, '23502');
});
