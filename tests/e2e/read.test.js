// Read state on the server: markers that only move forward, kept across reconnects and
// restarts, told to every connection of the user; unread counts in the room list and the
// join answer. With the official socket.io-client and REST against the real binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, api, register, connect, call, collect, sleep, uniqueRoom, twoInRoom } from './harness.js';

let server;
before(async () => { server = await startServer({ args: ['--rate-limit-per-sec', '0'] }); });
after(async () => { await server.stop(); server.cleanup(); });

const listed = async (url, token, room) => (await api(url, 'GET', '/api/rooms', undefined, token)).body.rooms.find((r) => r.name === room);

test('a read mark on one connection reaches the user\'s other connections; the marker only moves forward', async () => {
  const ann = await register(server.url, 'ann');
  const bob = await register(server.url, 'bob');
  const [phone, laptop] = [await connect(server.url, ann.token), await connect(server.url, ann.token)];
  const sb = await connect(server.url, bob.token);
  const room = uniqueRoom('read');
  assert.equal((await call(phone, 'join', { room })).ok, true);
  assert.equal((await call(sb, 'join', { room })).ok, true);
  for (let i = 1; i <= 3; i++) assert.equal((await call(sb, 'send', { room, text: `m${i}`, client_id: `b${i}` })).ok, true);
  assert.equal((await call(phone, 'send', { room, text: 'mine', client_id: 'a1' })).ok, true);
  // Ann's own message is not unread to her; Bob's three are.
  let r = await listed(server.url, ann.token, room);
  assert.deepEqual([r.last_read, r.unread], [0, 3]);
  const seen = collect(laptop, 'read');
  const ack = await call(phone, 'read', { room, seq: 2 });
  assert.deepEqual(ack, { ok: true, room, last_read: 2 });
  assert.deepEqual((await seen.waitFor(1))[0], { room, seq: 2 });
  r = await listed(server.url, ann.token, room);
  assert.deepEqual([r.last_read, r.unread], [2, 1]);
  // Lower or equal: a no-op, answered with the marker, told to nobody.
  assert.deepEqual(await call(laptop, 'read', { room, seq: 1 }), { ok: true, room, last_read: 2 });
  assert.deepEqual(await call(laptop, 'read', { room, seq: 2 }), { ok: true, room, last_read: 2 });
  // Beyond the room's last message: up to the last.
  assert.deepEqual(await call(laptop, 'read', { room, seq: 1000 }), { ok: true, room, last_read: 4 });
  await seen.waitFor(2);
  await sleep(200);
  assert.deepEqual(seen.items, [{ room, seq: 2 }, { room, seq: 4 }]);
  r = await listed(server.url, ann.token, room);
  assert.deepEqual([r.last_read, r.unread], [4, 0]);
  // Bob's marker is his own: untouched by Ann's.
  r = await listed(server.url, bob.token, room);
  assert.equal(r.last_read, 0);
  for (const s of [phone, laptop, sb]) s.close();
});

test('REST marks read too (PUT /api/rooms/{room}/read), and the socket connections hear of it', async () => {
  const { a: ann, sa, sb, room } = await twoInRoom(server.url);
  for (let i = 1; i <= 2; i++) await call(sb, 'send', { room, text: `m${i}`, client_id: `b${i}` });
  const seen = collect(sa, 'read');
  const put = await api(server.url, 'PUT', `/api/rooms/${room}/read`, { seq: 2 }, ann.token);
  assert.equal(put.status, 200);
  assert.deepEqual(put.body, { room, last_read: 2 });
  assert.deepEqual((await seen.waitFor(1))[0], { room, seq: 2 });
  sa.close(); sb.close();
});

test('the join answer gives the marker and the unread count; a member who joins later starts with the past read', async () => {
  const ann = await register(server.url, 'ann');
  const bob = await register(server.url, 'bob');
  const sa = await connect(server.url, ann.token);
  const room = uniqueRoom('join');
  await call(sa, 'join', { room });
  for (let i = 1; i <= 5; i++) await call(sa, 'send', { room, text: `old ${i}`, client_id: `a${i}` });
  // Bob arrives after five messages: they are history to him, not unread news.
  const sb = await connect(server.url, bob.token);
  let j = await call(sb, 'join', { room });
  assert.deepEqual([j.room.last_seq, j.last_read, j.unread], [5, 5, 0]);
  await call(sa, 'send', { room, text: 'new', client_id: 'a6' });
  sb.close();
  // Reconnected: the marker stayed on the server.
  const again = await connect(server.url, bob.token);
  j = await call(again, 'join', { room });
  assert.deepEqual([j.room.last_seq, j.last_read, j.unread], [6, 5, 1]);
  again.close(); sa.close();
});

test('unread counts stop at 100 (a client shows "99+"); public rooms one is not in have no read state', async () => {
  const { a: ann, sa, sb, room } = await twoInRoom(server.url);
  await Promise.all(Array.from({ length: 130 }, (_, i) => call(sb, 'send', { room, text: `f${i}`, client_id: `f${i}` })));
  const r = await listed(server.url, ann.token, room);
  assert.deepEqual([r.last_seq, r.unread], [130, 100]);
  const carol = await register(server.url, 'carol');
  const theirs = await listed(server.url, carol.token, room);
  assert.equal(theirs.member, false);
  assert.equal('last_read' in theirs || 'unread' in theirs, false);
  sa.close(); sb.close();
});

test('bad read marks get clear errors on both transports; nobody marks a room they are not in', async () => {
  const ann = await register(server.url, 'ann');
  const eve = await register(server.url, 'eve');
  const sa = await connect(server.url, ann.token);
  const se = await connect(server.url, eve.token);
  const room = uniqueRoom('bad');
  const secret = uniqueRoom('secret');
  await call(sa, 'join', { room });
  assert.equal((await api(server.url, 'POST', '/api/rooms', { name: secret, kind: 'private' }, ann.token)).status, 201);
  for (const arg of [{ room, seq: -1 }, { room, seq: 'x' }, { room }, { seq: 1 }, 'nope']) {
    const r = await call(sa, 'read', arg);
    assert.equal(r.ok, false, JSON.stringify(arg));
    assert.equal(r.error.code, 'bad_request', JSON.stringify(arg));
  }
  for (const body of [{ seq: -1 }, { seq: '1' }, {}]) {
    const r = await api(server.url, 'PUT', `/api/rooms/${room}/read`, body, ann.token);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(r.body.error.code, 'bad_request');
  }
  // A public room Eve is not in: forbidden; a private one: as if it did not exist.
  let r = await call(se, 'read', { room, seq: 1 });
  assert.equal(r.error.code, 'forbidden');
  r = await call(se, 'read', { room: secret, seq: 1 });
  assert.equal(r.error.code, 'not_found');
  const rest = await api(server.url, 'PUT', `/api/rooms/${secret}/read`, { seq: 1 }, eve.token);
  assert.equal(rest.status, 404);
  assert.equal((await api(server.url, 'PUT', `/api/rooms/${room}/read`, { seq: 1 })).status, 401);
  sa.close(); se.close();
});

test('markers, mention counts and notification levels survive a restart of the node', async () => {
  const node = await startServer();
  try {
    const { a: ann, sa, sb, room } = await twoInRoom(node.url);
    // m1 and m3 mention Ann; she reads up to m2.
    for (let i = 1; i <= 4; i++) await call(sb, 'send', { room, text: i % 2 ? `m${i} @${ann.user.username}` : `m${i}`, client_id: `b${i}` });
    assert.equal((await call(sa, 'read', { room, seq: 2 })).last_read, 2);
    assert.equal((await api(node.url, 'PUT', `/api/rooms/${room}/notifications`, { level: 'mentions' }, ann.token)).status, 200);
    sa.close(); sb.close();
    await node.stop();
    const again = await startServer({ dataDir: node.dir });
    try {
      const r = await listed(again.url, ann.token, room);
      assert.deepEqual([r.last_read, r.unread, r.mentions, r.notifications], [2, 2, 1, 'mentions']);
      const s = await connect(again.url, ann.token);
      const j = await call(s, 'join', { room });
      assert.deepEqual([j.last_read, j.unread, j.mentions, j.notifications], [2, 2, 1, 'mentions']);
      s.close();
    } finally { await again.stop(); }
  } finally { node.cleanup(); }
});
