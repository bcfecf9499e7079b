// Limits and hostile input: every bad input gets a clear error or is dropped, never a panic,
// and the server keeps serving everyone else.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { startServer, api, register, connect, call, collect, sleep, uniqueRoom } from './harness.js';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.stop(); server.cleanup(); });

/** The server still answers a fresh client end to end. */
async function assertHealthy() {
  assert.equal(server.child.exitCode, null, `server exited:\n${server.stderr()}`);
  const u = await register(server.url);
  const s = await connect(server.url, u.token);
  const room = uniqueRoom('alive');
  assert.equal((await call(s, 'join', { room })).ok, true);
  assert.equal((await call(s, 'send', { room, text: 'still here', client_id: 'x' })).ok, true);
  s.close();
}

/** A raw Engine.IO v4 WebSocket session, authenticated: for packets no official client sends. */
async function rawSession(token) {
  const ws = new WebSocket(`${server.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
  const frames = [];
  let notify = () => {};
  ws.on('message', (d) => {
    const s = d.toString();
    if (s === '2') { ws.send('3'); return; } // answer pings
    frames.push(s); notify();
  });
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  const next = async (pred, ms = 3000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = frames.findIndex(pred);
      if (i >= 0) return frames.splice(i, 1)[0];
      if (Date.now() > deadline) return null;
      await new Promise((r) => { notify = r; setTimeout(r, 50); });
    }
  };
  assert.ok(await next((f) => f.startsWith('0{')), 'engine.io open packet');
  ws.send(`40${JSON.stringify({ token })}`);
  assert.ok(await next((f) => f.startsWith('40{')), 'socket.io connect packet');
  return { ws, next, frames, closed: new Promise((r) => ws.once('close', r)) };
}

test('text over max_message_bytes is too_large; empty text, bad client_id are bad_request', async () => {
  const u = await register(server.url);
  const s = await connect(server.url, u.token);
  const room = uniqueRoom();
  await call(s, 'join', { room });
  const big = await call(s, 'send', { room, text: 'x'.repeat(4097), client_id: 'big' });
  assert.equal(big.ok, false);
  assert.equal(big.error.code, 'too_large');
  assert.equal((await call(s, 'send', { room, text: 'é'.repeat(2048), client_id: 'exact' })).ok, true, '4096 bytes is allowed');
  assert.equal((await call(s, 'send', { room, text: '   ', client_id: 'e' })).error.code, 'bad_request');
  assert.equal((await call(s, 'send', { room, text: 'x', client_id: '' })).error.code, 'bad_request');
  assert.equal((await call(s, 'send', { room, text: 'x', client_id: 'c'.repeat(65) })).error.code, 'bad_request');
  assert.equal((await call(s, 'join', { room: 'Not Valid' })).error.code, 'bad_request');
  assert.equal((await call(s, 'join', { room: 'r'.repeat(65) })).error.code, 'bad_request');
  s.close();
});

test('malformed event arguments get bad_request acks', async () => {
  const u = await register(server.url);
  const s = await connect(server.url, u.token);
  const room = uniqueRoom();
  await call(s, 'join', { room });
  for (const arg of ['a string', 42, null, [1, 2], { room }, { room, text: 5, client_id: 'x' },
    { room: ['x'], text: 'hi', client_id: 'x' }, { room, text: 'hi', client_id: { a: 1 } }]) {
    const r = await call(s, 'send', arg);
    assert.equal(r.ok, false, JSON.stringify(arg));
    assert.equal(r.error.code, 'bad_request', JSON.stringify(arg));
    assert.equal(typeof r.error.message, 'string');
  }
  // No argument at all.
  const none = await s.timeout(5000).emitWithAck('history');
  assert.equal(none.error.code, 'bad_request');
  for (const [ev, arg] of [['history', { room, limit: 'ten' }], ['history', { room, before_seq: -3 }],
    ['sync', { rooms: 'all' }], ['sync', { rooms: { [room]: 'x' } }], ['sync', { rooms: { [room]: -1 } }],
    ['typing', {}], ['leave', { room: 7 }]]) {
    const r = await call(s, ev, arg);
    assert.equal(r.error.code, 'bad_request', `${ev} ${JSON.stringify(arg)}`);
  }
  const unknown = await call(s, 'explode', { room });
  assert.equal(unknown.error.code, 'bad_request');
  assert.match(unknown.error.message, /unknown event/);
  s.close();
  await assertHealthy();
});

test('deeply nested JSON is refused without harm', async () => {
  const u = await register(server.url);
  const raw = await rawSession(u.token);
  const deep = '['.repeat(5000) + ']'.repeat(5000);
  raw.ws.send(`421["send",{"room":"x","text":"hi","client_id":"d","extra":${deep}}]`);
  const ack = await raw.next((f) => f.startsWith('431'), 2000);
  if (ack) assert.match(ack, /"ok":false/); // answered with an error, or dropped
  raw.ws.close();
  await assertHealthy();
});

test('hostile packets (CVE shapes) are dropped or refused; the server stays up', async () => {
  const u = await register(server.url);
  for (const packet of ['42[{}]', '42[]', '42["x"', '42', '42[null]', '42[1,2]', '42["connect"]',
    '42["disconnect",{}]', '42["error",{}]', '451-["send",{"_placeholder":true,"num":"__proto__"}]',
    '4999999999-["send",{}]', '2probe', '9', '4', '0', '41', '43[]', '46', '42{"a":1}']) {
    const raw = await rawSession(u.token);
    raw.ws.send(packet);
    await sleep(50);
    raw.ws.close();
  }
  // Many tiny packets in one polling POST.
  const open = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
  const sid = JSON.parse((await open.text()).slice(1)).sid;
  const body = Array.from({ length: 5000 }, () => '42["x",{}]').join('\x1e');
  const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, { method: 'POST', body });
  assert.equal(res.status, 200, 'a packet flood within the payload limit is parsed and ignored');
  await assertHealthy();
});

test('payloads over the 64 KiB limit are refused on WebSocket and on polling', async () => {
  const u = await register(server.url);
  const room = uniqueRoom();
  for (const transports of [['websocket'], ['polling']]) {
    const s = await connect(server.url, u.token, { transports });
    await call(s, 'join', { room });
    const gone = new Promise((r) => s.once('disconnect', r));
    s.emit('send', { room, text: 'x'.repeat(70 * 1024), client_id: `huge-${transports[0]}` });
    const reason = await Promise.race([gone, sleep(5000).then(() => 'still connected')]);
    assert.notEqual(reason, 'still connected', `${transports[0]}: oversized payload accepted`);
    s.close();
  }
  // Nothing was stored.
  const h = await api(server.url, 'GET', `/api/rooms/${room}/messages`, undefined, u.token);
  assert.deepEqual(h.body.messages, []);
  // REST bodies are bounded too.
  const big = await api(server.url, 'POST', `/api/rooms/${room}/messages`, { text: 'x'.repeat(70 * 1024), client_id: 'r' }, u.token);
  assert.equal(big.status, 413);
  assert.equal(big.body.error.code, 'too_large');
  await assertHealthy();
});

test('per-user budget: a burst of 40 shared by every connection and REST, then rate_limited', async () => {
  const owner = await register(server.url);
  const so = await connect(server.url, owner.token);
  const room = uniqueRoom();
  await call(so, 'join', { room });
  const u = await register(server.url);
  const s = await connect(server.url, u.token);
  const s2 = await connect(server.url, u.token);
  await call(s, 'join', { room });
  await sleep(300); // the join's cost comes back: a full burst
  const viaRest = (i) => api(server.url, 'POST', `/api/rooms/${room}/messages`, { text: 't', client_id: `h${i}` }, u.token)
    .then((r) => (r.status === 201 ? { ok: true } : { ok: false, status: r.status, error: r.body.error }));
  const results = await Promise.all([
    ...Array.from({ length: 30 }, (_, i) => call(s, 'send', { room, text: 't', client_id: `r${i}` })),
    ...Array.from({ length: 15 }, (_, i) => call(s2, 'send', { room, text: 't', client_id: `q${i}` })),
    ...Array.from({ length: 15 }, (_, i) => viaRest(i)),
  ]);
  const ok = results.filter((r) => r.ok).length;
  const limited = results.filter((r) => !r.ok && r.error.code === 'rate_limited');
  assert.ok(ok >= 40 && ok <= 45, `ok=${ok}`);
  assert.equal(ok + limited.length, 60);
  assert.ok(limited.some((r) => r.status === 429), 'REST sends draw on the same budget');
  // Another user has a budget of their own.
  assert.equal((await call(so, 'send', { room, text: 't', client_id: 'owner' })).ok, true);
  // Tokens come back at 20/s.
  await sleep(1100);
  assert.equal((await call(s2, 'send', { room, text: 't', client_id: 'later' })).ok, true);
  s.close(); s2.close(); so.close();
});

test('connections per user are capped (20 by default); a closed one frees its place', async () => {
  const u = await register(server.url);
  const open = [];
  for (let i = 0; i < 20; i++) open.push(await connect(server.url, u.token));
  await assert.rejects(connect(server.url, u.token), /too many connections/);
  // Another user is not affected.
  const other = await register(server.url);
  (await connect(server.url, other.token)).close();
  open.pop().close();
  await sleep(200);
  const again = await connect(server.url, u.token);
  for (const s of [...open, again]) s.close();
});

test('REST bad input answers {"error":{code,message}} with the right status', async () => {
  const cases = [
    ['POST', '/api/auth/register', '{"username":"x"', 400, 'bad_request'],
    ['POST', '/api/auth/register', { username: 'ab', password: 'longenough' }, 400, 'bad_request'],
    ['POST', '/api/auth/register', { username: 'valid_name', password: 'short' }, 400, 'bad_request'],
    ['POST', '/api/auth/register', { username: 5, password: 'longenough' }, 400, 'bad_request'],
    ['POST', '/api/auth/login', { username: 'nobody-here', password: 'whatever1' }, 401, 'unauthorized'],
    ['GET', '/api/rooms', undefined, 401, 'unauthorized'],
    ['GET', '/api/nowhere', undefined, 404, 'not_found'],
  ];
  for (const [method, route, body, status, code] of cases) {
    const r = await api(server.url, method, route, body);
    assert.equal(r.status, status, `${method} ${route} ${JSON.stringify(body)}`);
    assert.equal(r.body.error.code, code);
    assert.equal(typeof r.body.error.message, 'string');
  }
  // Unknown user and wrong password give the same answer.
  const u = await register(server.url);
  const wrong = await api(server.url, 'POST', '/api/auth/login', { username: u.user.username, password: 'wrong-password' });
  const ghost = await api(server.url, 'POST', '/api/auth/login', { username: 'ghost-user', password: 'wrong-password' });
  assert.deepEqual(wrong, ghost);
  const dup = await api(server.url, 'POST', '/api/auth/register', { username: u.user.username.toUpperCase(), password: 'longenough' });
  assert.equal(dup.status, 409);
  const ok = await api(server.url, 'POST', '/api/auth/login', { username: u.user.username.toUpperCase(), password: 'correct-horse' });
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.body.user, u.user);
});

test('a client that never reads is disconnected; its buffer stays bounded and others are unaffected', async () => {
  const node = await startServer({ args: ['--rate-limit-per-sec', '0', '--ping-interval-secs', '1', '--ping-timeout-secs', '2'] });
  try {
    const slowUser = await register(node.url);
    const flooder = await register(node.url);
    const room = uniqueRoom('flood');
    // A hand-made WebSocket client on a plain TCP socket: it joins, then never reads again
    // (the `ws` library would resume a paused socket by itself).
    const { port } = new URL(node.url);
    const sock = net.connect(Number(port), '127.0.0.1');
    await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    let received = '';
    sock.on('data', (d) => { received += d.toString('latin1'); });
    sock.write('GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n'
      + 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n'
      + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    const waitFor = async (needle) => {
      for (let i = 0; i < 100 && !received.includes(needle); i++) await sleep(20);
      assert.ok(received.includes(needle), `waited for ${needle}; got ${received.slice(-200)}`);
    };
    await waitFor('0{"sid"');
    sock.write(wsFrame(`40${JSON.stringify({ token: slowUser.token })}`));
    await waitFor('40{"sid"');
    sock.write(wsFrame(`421${JSON.stringify(['join', { room }])}`));
    await waitFor('431[{"ok":true');
    sock.removeAllListeners('data');
    sock.pause(); // from now on nothing is read: the kernel buffers fill, then the server's
    // The hardest case: it keeps sending pongs without reading, so only the full buffer can
    // give it away.
    const pongs = setInterval(() => sock.write(wsFrame('3')), 300);

    const f = await connect(node.url, flooder.token);
    const before = await call(f, 'join', { room });
    assert.ok(before.online.some((u) => u.id === slowUser.user.id), 'the slow user is online at first');
    const text = 'x'.repeat(4000);
    const rssBefore = rssKb(node.child.pid);
    let acked = 0;
    for (let batch = 0; batch < 24; batch++) {
      const acks = await Promise.all(Array.from({ length: 250 }, (_, i) =>
        call(f, 'send', { room, text, client_id: `f${batch}-${i}` })));
      acked += acks.filter((a) => a.ok).length;
    }
    assert.equal(acked, 6000, 'the flooder is never slowed down by the slow reader');
    // The server drops the connection (the client itself cannot notice: it reads nothing);
    // the room's online list says so. (The live `presence` event may itself be dropped for a
    // flooder whose own buffer is full, so the test asks instead of listening.)
    let online = true;
    for (let i = 0; i < 75 && online; i++) {
      const j = await call(f, 'join', { room });
      online = j.online.some((u) => u.id === slowUser.user.id);
      if (online) await sleep(200);
    }
    clearInterval(pongs);
    assert.equal(online, false, 'the server disconnects a client that does not read');
    // 6000 × 4 KB went to a client that read nothing: server memory must not have followed.
    const grown = rssKb(node.child.pid) - rssBefore;
    assert.ok(grown < 64 * 1024, `server RSS grew by ${grown} KiB`);
    // Everyone else is fine, and the flooded history is intact.
    const h = await call(f, 'history', { room, limit: 1 });
    assert.equal(h.messages[0].seq, 6000);
    f.close();
    // Graceful shutdown does not wait forever for a peer that reads nothing.
    const t0 = Date.now();
    const { code } = await node.stop();
    assert.equal(code, 0);
    assert.ok(Date.now() - t0 < 15000, `shutdown took ${Date.now() - t0} ms`);
    sock.destroy();
  } finally { await node.stop(); node.cleanup(); }
});

test('browser origins: same-origin and allow-listed origins connect, others are refused', async () => {
  const node = await startServer({ args: ['--allowed-origins', 'http://app.example'] });
  try {
    const u = await register(node.url);
    const own = await connect(node.url, u.token, { extraHeaders: { origin: node.url } });
    own.close();
    const listed = await connect(node.url, u.token, { extraHeaders: { origin: 'http://app.example' } });
    listed.close();
    for (const transports of [['websocket'], ['polling']]) {
      await assert.rejects(connect(node.url, u.token, { transports, extraHeaders: { origin: 'http://evil.example' } }),
        (err) => err.message === 'origin not allowed');
    }
  } finally { await node.stop(); node.cleanup(); }
});

/** One masked WebSocket text frame (the mask key is zero, so the payload goes as is). */
function wsFrame(text) {
  const payload = Buffer.from(text);
  const head = payload.length < 126
    ? Buffer.from([0x81, 0x80 | payload.length])
    : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([head, Buffer.alloc(4), payload]);
}

function rssKb(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(status.match(/VmRSS:\s+(\d+)/)[1]);
}
