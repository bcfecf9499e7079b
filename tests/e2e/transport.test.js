// The Engine.IO transport as forked in vendor/engineioxide (see its FORK.md): a WebSocket session
// is served by one task that reads, writes and keeps the heartbeat; a session that starts on
// long-polling keeps upstream's heartbeat task after it upgrades. Both must keep the protocol.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer, register, connect, call, collect, sleep, uniqueRoom } from './harness.js';

let server;
// One-second pings, one second to answer: a missed pong shows within ~2 s.
before(async () => { server = await startServer({ args: ['--ping-interval-secs', '1', '--ping-timeout-secs', '1'] }); });
after(async () => { await server.stop(); server.cleanup(); });

/** Whether the user is in the room's online list, as another member sees it. */
async function isOnline(observer, room, userId) {
  const j = await call(observer, 'join', { room });
  return j.online.some((u) => u.id === userId);
}

test('WebSocket session: pings every interval while answered; a client that stops answering is closed and goes offline', async () => {
  const raw = await register(server.url);
  const other = await register(server.url);
  const room = uniqueRoom('hb');
  const ws = new WebSocket(`${server.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
  const frames = [];
  const pings = [];
  let answer = true;
  ws.on('message', (d) => {
    const s = d.toString();
    if (s === '2') {
      pings.push(Date.now());
      if (answer) ws.send('3');
      return;
    }
    frames.push(s);
  });
  const closed = new Promise((r) => ws.once('close', () => r(Date.now())));
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  const waitFrame = async (prefix) => {
    for (let i = 0; i < 150; i++) {
      const f = frames.find((x) => x.startsWith(prefix));
      if (f) return f;
      await sleep(20);
    }
    assert.fail(`no frame starting with ${prefix}; got ${frames.join(' | ')}`);
  };
  const open = JSON.parse((await waitFrame('0{')).slice(1));
  assert.equal(open.pingInterval, 1000);
  assert.equal(open.pingTimeout, 1000);
  const opened = Date.now();
  ws.send(`40${JSON.stringify({ token: raw.token })}`);
  await waitFrame('40{');
  ws.send(`421${JSON.stringify(['join', { room }])}`);
  await waitFrame('431[{"ok":true');

  // Answered: the session lives well past interval + timeout, pinged about once a second.
  await sleep(3500);
  assert.equal(ws.readyState, WebSocket.OPEN, 'an answering client stays connected');
  assert.ok(pings.length >= 2 && pings.length <= 4, `pings in 3.5 s: ${pings.length}`);
  assert.ok(pings[0] - opened >= 700, `the first ping comes one interval after the handshake (${pings[0] - opened} ms)`);
  const o = await connect(server.url, other.token, { transports: ['websocket'] });
  assert.equal(await isOnline(o, room, raw.user.id), true);
  // The session still carries events both ways after several heartbeats.
  const got = collect(o, 'message');
  ws.send(`422${JSON.stringify(['send', { room, text: 'after pings', client_id: 'p1' }])}`);
  assert.ok(JSON.parse((await waitFrame('432')).slice(3))[0].ok);
  assert.equal((await got.waitFor(1))[0].text, 'after pings');

  // Unanswered: closed after the next ping's timeout, and the user goes offline.
  answer = false;
  const stopped = Date.now();
  const at = await Promise.race([closed, sleep(5000).then(() => null)]);
  assert.ok(at !== null, 'the server closes a client that stops answering pings');
  assert.ok(at - stopped <= 3500, `closed ${at - stopped} ms after the last pong`);
  let online = true;
  for (let i = 0; i < 50 && online; i++) {
    online = await isOnline(o, room, raw.user.id);
    if (online) await sleep(100);
  }
  assert.equal(online, false, 'its user is offline for the others');
  o.close();
});

test('long-polling session upgraded to WebSocket: keeps its heartbeat and chats both ways', async () => {
  const a = await register(server.url);
  const b = await register(server.url);
  const room = uniqueRoom('upg');
  const sa = await connect(server.url, a.token); // default transports: polling, then upgrade
  const sb = await connect(server.url, b.token, { transports: ['polling'] });
  for (let i = 0; i < 100 && sa.io.engine.transport.name !== 'websocket'; i++) await sleep(20);
  assert.equal(sa.io.engine.transport.name, 'websocket', 'the session upgraded');
  let dropped = null;
  sa.on('disconnect', (r) => { dropped = r; });
  sb.on('disconnect', (r) => { dropped = r; });
  await call(sa, 'join', { room });
  await call(sb, 'join', { room });

  await sleep(3500); // past interval + timeout, several times over
  assert.equal(dropped, null, 'neither session was dropped by the heartbeat');
  const toB = collect(sb, 'message');
  const toA = collect(sa, 'message');
  assert.equal((await call(sa, 'send', { room, text: 'from ws', client_id: 'a1' })).ok, true);
  assert.equal((await call(sb, 'send', { room, text: 'from polling', client_id: 'b1' })).ok, true);
  assert.deepEqual((await toB.waitFor(2)).map((m) => m.text), ['from ws', 'from polling']);
  assert.deepEqual((await toA.waitFor(2)).map((m) => m.text), ['from ws', 'from polling']);
  sa.close();
  sb.close();
});

test('a client closing its WebSocket goes offline at once for the others', async () => {
  const a = await register(server.url);
  const b = await register(server.url);
  const room = uniqueRoom('bye');
  const sa = await connect(server.url, a.token, { transports: ['websocket'] });
  const sb = await connect(server.url, b.token, { transports: ['websocket'] });
  await call(sa, 'join', { room });
  const presence = collect(sb, 'presence');
  await call(sb, 'join', { room });
  const closedAt = Date.now();
  sa.close();
  let offline;
  for (let i = 0; i < 100 && !offline; i++) {
    offline = presence.items.find((p) => p.user.id === a.user.id && p.online === false);
    if (!offline) await sleep(20);
  }
  assert.deepEqual(offline, { room, user: a.user, online: false });
  assert.ok(Date.now() - closedAt < 1000, 'well before any heartbeat could notice');
  sb.close();
});
