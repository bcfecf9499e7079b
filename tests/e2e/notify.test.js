// Mentions, notification levels, settings and read receipts, with the official
// socket.io-client (WebSocket and polling) and REST against the real binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, api, register, connect, call, collect, sleep, eventually, uniqueRoom } from './harness.js';

let server;
before(async () => { server = await startServer({ args: ['--rate-limit-per-sec', '0'] }); });
after(async () => { await server.stop(); server.cleanup(); });

const listed = async (token, room) => (await api(server.url, 'GET', '/api/rooms', undefined, token)).body.rooms.find((r) => r.name === room);

/** Three users in a fresh public room created (and so owned) by the first. */
async function threeInRoom(opts = {}) {
  const users = [await register(server.url, 'ann'), await register(server.url, 'bob'), await register(server.url, 'cat')];
  const sockets = [];
  const room = uniqueRoom('men');
  for (const u of users) {
    const s = await connect(server.url, u.token, opts);
    assert.equal((await call(s, 'join', { room })).ok, true);
    sockets.push(s);
  }
  return { users, sockets, room };
}

test('@username mentions a member: the message carries their id, on both transports and in history; non-members, the sender and e-mail addresses are no mention', async () => {
  const { users: [ann, bob, cat], sockets: [sa, sb, sc], room } = await threeInRoom({ transports: ['polling'] });
  const outsider = await register(server.url, 'out');
  const live = collect(sb, 'message');
  const text = `hi @${bob.user.username}, @${cat.user.username.toUpperCase()} and @${outsider.user.username}; me @${ann.user.username}; mail x@${bob.user.username}`;
  const sent = await call(sa, 'send', { room, text, client_id: 'm1' });
  assert.equal(sent.ok, true);
  assert.deepEqual(sent.message.mentions, [bob.user.id, cat.user.id]);
  assert.equal(sent.message.mention_room, undefined);
  assert.deepEqual((await live.waitFor(1))[0].mentions, [bob.user.id, cat.user.id]);
  // A plain message carries an empty list.
  const plain = await call(sa, 'send', { room, text: 'no one', client_id: 'm2' });
  assert.deepEqual(plain.message.mentions, []);
  // REST sends and history answer the same shape.
  const rest = await api(server.url, 'POST', `/api/rooms/${room}/messages`, { text: `@${ann.user.username} thanks.`, client_id: 'r1' }, bob.token);
  assert.equal(rest.status, 201);
  assert.deepEqual(rest.body.message.mentions, [ann.user.id]);
  const history = (await api(server.url, 'GET', `/api/rooms/${room}/messages`, undefined, cat.token)).body.messages;
  assert.deepEqual(history.map((m) => m.mentions), [[bob.user.id, cat.user.id], [], [ann.user.id]]);
  const synced = await call(sc, 'sync', { rooms: { [room]: 0 } });
  assert.deepEqual(synced.rooms[room].messages.map((m) => m.mentions), [[bob.user.id, cat.user.id], [], [ann.user.id]]);
  for (const s of [sa, sb, sc]) s.close();
});

test('@room: in a public room only its owner (or an admin) mentions everyone; in a private room and a DM any member does', async () => {
  const { users: [ann, bob, cat], sockets: [sa, sb, sc], room } = await threeInRoom();
  // Bob is no owner of the public room: his @room is plain text.
  let r = await call(sb, 'send', { room, text: '@room look', client_id: 'b1' });
  assert.equal(r.message.mention_room, undefined);
  // Ann created the room.
  r = await call(sa, 'send', { room, text: '@room look', client_id: 'a1' });
  assert.equal(r.message.mention_room, true);
  // A private room: any member.
  const priv = uniqueRoom('priv');
  const made = await api(server.url, 'POST', '/api/rooms', { name: priv, kind: 'private', members: [bob.user.username, cat.user.username] }, ann.token);
  assert.equal(made.status, 201);
  await call(sb, 'join', { room: priv });
  r = await call(sb, 'send', { room: priv, text: 'hey @ROOM', client_id: 'b2' });
  assert.equal(r.message.mention_room, true);
  // Counted for the others, not for the sender: Cat has one unread mention in the private
  // room; in the public room two unread, one mention (the owner's @room).
  const catPriv = await listed(cat.token, priv);
  assert.deepEqual([catPriv.unread, catPriv.mentions], [1, 1]);
  const catPub = await listed(cat.token, room);
  assert.deepEqual([catPub.unread, catPub.mentions], [2, 1]);
  const bobPriv = await listed(bob.token, priv);
  assert.deepEqual([bobPriv.unread, bobPriv.mentions], [0, 0]);
  for (const s of [sa, sb, sc]) s.close();
});

test('mention counts: in the room list and the join answer, after the read marker only, and every unread DM message counts', async () => {
  const { users: [ann, bob], sockets: [sa, sb, sc], room } = await threeInRoom();
  await call(sa, 'send', { room, text: `@${bob.user.username} one`, client_id: 'a1' });
  await call(sa, 'send', { room, text: 'plain', client_id: 'a2' });
  await call(sa, 'send', { room, text: `@${bob.user.username} two`, client_id: 'a3' });
  let l = await listed(bob.token, room);
  assert.deepEqual([l.unread, l.mentions, l.notifications], [3, 2, 'all']);
  // Read past the first mention: one left.
  await call(sb, 'read', { room, seq: 1 });
  l = await listed(bob.token, room);
  assert.deepEqual([l.unread, l.mentions], [2, 1]);
  const again = await connect(server.url, bob.token);
  const j = await call(again, 'join', { room });
  assert.deepEqual([j.last_read, j.unread, j.mentions, j.notifications], [1, 2, 1, 'all']);
  // A DM: every message of the other counts.
  const dm = (await api(server.url, 'POST', '/api/dms', { username: bob.user.username }, ann.token)).body.room.name;
  await call(sa, 'join', { room: dm });
  await call(sa, 'send', { room: dm, text: 'psst', client_id: 'd1' });
  await call(sa, 'send', { room: dm, text: 'hello?', client_id: 'd2' });
  l = await listed(bob.token, dm);
  assert.deepEqual([l.unread, l.mentions], [2, 2]);
  for (const s of [sa, sb, sc, again]) s.close();
});

test('notification levels: set per member over REST, told to every connection of the user, listed and answered on join; bad input is refused', async () => {
  const { users: [ann, bob], sockets: [sa, sb, sc], room } = await threeInRoom();
  const other = await connect(server.url, bob.token, { transports: ['polling'] });
  const told = collect(other, 'notifications');
  const put = await api(server.url, 'PUT', `/api/rooms/${room}/notifications`, { level: 'mentions' }, bob.token);
  assert.equal(put.status, 200);
  assert.deepEqual(put.body, { room, level: 'mentions' });
  assert.deepEqual((await told.waitFor(1))[0], { room, level: 'mentions' });
  assert.equal((await listed(bob.token, room)).notifications, 'mentions');
  assert.equal((await listed(ann.token, room)).notifications, 'all');
  assert.equal((await call(other, 'join', { room })).notifications, 'mentions');
  await api(server.url, 'PUT', `/api/rooms/${room}/notifications`, { level: 'none' }, bob.token);
  assert.equal((await listed(bob.token, room)).notifications, 'none');
  // A muted room still counts unread.
  await call(sa, 'send', { room, text: 'x', client_id: 'a1' });
  assert.equal((await listed(bob.token, room)).unread, 1);
  for (const [body, status] of [[{ level: 'loud' }, 400], [{ level: 3 }, 400], [{}, 400], ['nope', 400]]) {
    const r = await api(server.url, 'PUT', `/api/rooms/${room}/notifications`, body, bob.token);
    assert.equal(r.status, status, JSON.stringify(body));
    assert.equal(typeof r.body.error.code, 'string');
    assert.equal(typeof r.body.error.message, 'string');
  }
  const stranger = await register(server.url, 'str');
  assert.equal((await api(server.url, 'PUT', `/api/rooms/${room}/notifications`, { level: 'all' }, stranger.token)).status, 403);
  assert.equal((await api(server.url, 'PUT', '/api/rooms/no-such-room-x/notifications', { level: 'all' }, bob.token)).status, 404);
  assert.equal((await api(server.url, 'PUT', `/api/rooms/${room}/notifications`, { level: 'all' })).status, 401);
  for (const s of [sa, sb, sc, other]) s.close();
});

test('settings: defaults, partial changes, told to every connection of the user; bad input is refused', async () => {
  const ann = await register(server.url, 'set');
  const s = await connect(server.url, ann.token);
  const told = collect(s, 'settings');
  let r = await api(server.url, 'GET', '/api/me/settings', undefined, ann.token);
  assert.deepEqual([r.status, r.body], [200, { read_receipts: true, previews: true }]);
  r = await api(server.url, 'PUT', '/api/me/settings', { previews: false }, ann.token);
  assert.deepEqual([r.status, r.body], [200, { read_receipts: true, previews: false }]);
  assert.deepEqual((await told.waitFor(1))[0], { read_receipts: true, previews: false });
  r = await api(server.url, 'GET', '/api/me/settings', undefined, ann.token);
  assert.deepEqual(r.body, { read_receipts: true, previews: false });
  for (const body of [{ read_receipts: 'no' }, { colour: 'red' }, [], 'x']) {
    r = await api(server.url, 'PUT', '/api/me/settings', body, ann.token);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(typeof r.body.error.message, 'string');
  }
  assert.equal((await api(server.url, 'GET', '/api/me/settings')).status, 401);
  s.close();
});

test('read receipts: the others see how far a member read, coalesced to about one per second; the join answer lists them', async () => {
  const { users: [ann, bob, cat], sockets: [sa, sb, sc], room } = await threeInRoom();
  for (let i = 1; i <= 30; i++) await call(sa, 'send', { room, text: `m${i}`, client_id: `a${i}` });
  const annSees = collect(sa, 'receipt');
  const bobSees = collect(sb, 'receipt');
  // Bob reads fast: thirty marks in well under a second.
  const started = Date.now();
  for (let seq = 1; seq <= 30; seq++) assert.equal((await call(sb, 'read', { room, seq })).ok, true);
  const took = Date.now() - started;
  await eventually(() => annSees.items.at(-1)?.seq === 30, 15000, "Bob's receipt of seq 30");
  await sleep(1500); // a straggler would arrive within the next coalescing period
  assert.deepEqual(annSees.items.at(-1), { room, user: { id: bob.user.id, username: bob.user.username }, seq: 30 });
  // At most one per second of marking, plus the one in flight.
  assert.ok(annSees.items.length <= Math.ceil(took / 1000) + 2, `${annSees.items.length} receipts for ${took} ms of marks`);
  // The reader does not get their own.
  assert.equal(bobSees.items.length, 0);
  // The join answer: the others who read, furthest first, never oneself.
  await call(sc, 'read', { room, seq: 10 });
  const late = await connect(server.url, ann.token);
  const j = await call(late, 'join', { room });
  assert.deepEqual(j.receipts, [
    { user: { id: bob.user.id, username: bob.user.username }, seq: 30 },
    { user: { id: cat.user.id, username: cat.user.username }, seq: 10 },
  ]);
  for (const s of [sa, sb, sc, late]) s.close();
});

test('read receipts off: the user is no longer shown to others, and sees none of theirs, live and on join', async () => {
  const { users: [ann, bob, cat], sockets: [sa, sb, sc], room } = await threeInRoom();
  for (let i = 1; i <= 3; i++) await call(sa, 'send', { room, text: `m${i}`, client_id: `a${i}` });
  const bobSees = collect(sb, 'receipt');
  const catSees = collect(sc, 'receipt');
  const off = collect(sb, 'settings');
  assert.equal((await api(server.url, 'PUT', '/api/me/settings', { read_receipts: false }, bob.token)).status, 200);
  await off.waitFor(1);
  // Bob reads: nobody is told.
  await call(sb, 'read', { room, seq: 2 });
  // Cat reads: Bob, with receipts off, is not told; Ann is.
  const annSees = collect(sa, 'receipt');
  await call(sc, 'read', { room, seq: 3 });
  await annSees.waitFor(1);
  await sleep(1500);
  assert.deepEqual(annSees.items.map((r) => r.user.username), [cat.user.username]);
  assert.equal(bobSees.items.length, 0);
  assert.equal(catSees.items.length, 0);
  // Bob's join carries no receipts; Ann's lists Cat but not Bob.
  assert.equal((await call(sb, 'join', { room })).receipts, undefined);
  const j = await call(sa, 'join', { room });
  assert.deepEqual(j.receipts.map((r) => r.user.username), [cat.user.username]);
  // A connection opened after the change sees none either; turning receipts on again
  // restores both directions.
  const fresh = await connect(server.url, bob.token, { transports: ['polling'] });
  await call(fresh, 'join', { room });
  const freshSees = collect(fresh, 'receipt');
  const more = await call(sa, 'send', { room, text: 'm4', client_id: 'a4' });
  await call(sc, 'read', { room, seq: more.message.seq });
  // Ann sees Cat's receipt of m4: by then Bob's new connection would have had it too.
  await eventually(() => annSees.items.some((r) => r.seq === more.message.seq), 15000, "Cat's receipt of m4");
  await sleep(300);
  assert.equal(freshSees.items.length, 0);
  const on = collect(fresh, 'settings');
  await api(server.url, 'PUT', '/api/me/settings', { read_receipts: true }, bob.token);
  await on.waitFor(1);
  await call(sa, 'send', { room, text: 'm5', client_id: 'a5' });
  await call(sc, 'read', { room, seq: 5 });
  await freshSees.waitFor(1);
  assert.equal(freshSees.items[0].user.id, cat.user.id);
  for (const s of [sa, sb, sc, fresh]) s.close();
});
