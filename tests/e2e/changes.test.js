// Edits, deletions, reactions and replies: each an entry of the room's log (kind, relates_to),
// broadcast like a message, idempotent on client_id, recovered by sync; history bundles each
// message's current state. With the official socket.io-client (WebSocket and polling) and
// REST against the real binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, api, register, connect, call, collect, sleep, uniqueRoom } from './harness.js';
import { replay, bundled } from './changes.js';

let server;
before(async () => { server = await startServer({ args: ['--rate-limit-per-sec', '0'] }); });
after(async () => { await server.stop(); server.cleanup(); });

async function pair(transports) {
  const a = await register(server.url, 'ann');
  const b = await register(server.url, 'bob');
  const sa = await connect(server.url, a.token, { transports: [transports[0]] });
  const sb = await connect(server.url, b.token, { transports: [transports[1]] });
  const room = uniqueRoom('chg');
  assert.equal((await call(sa, 'join', { room })).ok, true);
  assert.equal((await call(sb, 'join', { room })).ok, true);
  return { a, b, sa, sb, room };
}

for (const transports of [['websocket', 'polling'], ['polling', 'websocket']]) {
  test(`each change over ${transports.join(' and ')}: live to both, in the log, bundled by history the same as a replay of sync`, async () => {
    const { a, b, sa, sb, room } = await pair(transports);
    const seenA = collect(sa, 'message');
    const seenB = collect(sb, 'message');
    const sent = await call(sa, 'send', { room, text: 'helo **world**', client_id: 'm1' });
    assert.equal(sent.ok, true);
    const m = sent.message;
    assert.equal(m.kind, 'message');
    const steps = [
      [sb, 'react', { room, id: m.id, emoji: '👍', client_id: 'r1' }, 'reaction'],
      [sa, 'react', { room, id: m.id, emoji: '👍', client_id: 'r2' }, 'reaction'],
      [sa, 'react', { room, id: m.id, emoji: '🎉', client_id: 'r3' }, 'reaction'],
      [sa, 'unreact', { room, id: m.id, emoji: '🎉', client_id: 'u1' }, 'unreaction'],
      [sa, 'edit', { room, id: m.id, text: 'hello **world**', client_id: 'e1' }, 'edit'],
    ];
    for (const [s, event, arg, kind] of steps) {
      const ack = await call(s, event, arg);
      assert.equal(ack.ok, true, `${event}: ${JSON.stringify(ack)}`);
      assert.equal(ack.message.kind, kind);
      assert.equal(ack.message.relates_to, m.id);
      assert.equal(ack.message.relates_seq, m.seq);
    }
    const reply = await call(sb, 'send', { room, text: 'a reply', client_id: 'b1', reply_to: m.id });
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.deepEqual(reply.message.reply_to, { id: m.id, seq: m.seq, sender: a.user, text: 'hello **world**' });
    // Both users saw all seven entries live, in seq order.
    for (const seen of [seenA, seenB]) {
      const got = await seen.waitFor(7);
      assert.deepEqual(got.map((x) => x.seq), [1, 2, 3, 4, 5, 6, 7]);
      assert.deepEqual(got.map((x) => x.kind), ['message', 'reaction', 'reaction', 'reaction', 'unreaction', 'edit', 'message']);
    }
    for (const [s, who] of [[sa, a], [sb, b]]) {
      const h = await call(s, 'history', { room });
      assert.equal(h.messages.length, 7, 'history returns every entry of the log');
      const synced = await call(s, 'sync', { rooms: { [room]: 0 } });
      assert.deepEqual(bundled(h.messages), replay(synced.rooms[room].messages, who.user.id));
      const first = h.messages[0];
      assert.equal(first.text, 'hello **world**');
      assert.deepEqual(first.reactions, { '👍': { count: 2, me: true } });
      // sync bundles the same state as history.
      assert.deepEqual(synced.rooms[room].messages[0].reactions, first.reactions);
      assert.equal(synced.rooms[room].messages[0].text, first.text);
      assert.equal(typeof first.edited_at, 'number');
    }
    // Deleted: a placeholder everywhere, and the reply's preview follows.
    const del = await call(sa, 'delete', { room, id: m.id, client_id: 'd1' });
    assert.equal(del.ok, true);
    assert.equal(del.message.kind, 'delete');
    const h = await call(sb, 'history', { room });
    const gone = h.messages.find((x) => x.id === m.id);
    assert.deepEqual([gone.deleted, gone.text, gone.reactions], [true, '', undefined]);
    const edits = h.messages.filter((x) => x.kind === 'edit');
    assert.deepEqual(edits.map((x) => x.text), [''], 'an edit of a deleted message keeps no text');
    const r = h.messages.find((x) => x.id === reply.message.id);
    assert.deepEqual(r.reply_to, { id: m.id, seq: m.seq, sender: a.user, text: '', deleted: true });
    const synced = await call(sb, 'sync', { rooms: { [room]: 0 } });
    assert.deepEqual(bundled(h.messages), replay(synced.rooms[room].messages, b.user.id));
    sa.close(); sb.close();
  });
}

test('retries of each change with the same client_id answer the first entry and broadcast nothing', async () => {
  const { sa, sb, room } = await pair(['websocket', 'websocket']);
  // Collecting from before the send: the message's own broadcast may reach Bob after its ack.
  const seen = collect(sb, 'message');
  const m = (await call(sa, 'send', { room, text: 'x', client_id: 'm1' })).message;
  for (const [event, arg] of [
    ['edit', { room, id: m.id, text: 'y', client_id: 'e1' }],
    ['react', { room, id: m.id, emoji: '❤️', client_id: 'r1' }],
    ['unreact', { room, id: m.id, emoji: '❤️', client_id: 'u1' }],
    ['delete', { room, id: m.id, client_id: 'd1' }],
  ]) {
    const first = await call(sa, event, arg);
    const again = await call(sa, event, arg);
    assert.equal(first.ok, true, `${event} ${JSON.stringify(first)}`);
    assert.equal(again.ok, true, `${event} retried ${JSON.stringify(again)}`);
    assert.deepEqual(again.message, first.message, `${event}: the retry answers the first entry`);
  }
  await seen.waitFor(5);
  await sleep(300);
  assert.deepEqual(seen.items.map((x) => x.seq), [1, 2, 3, 4, 5], 'nothing is broadcast twice');
  const h = await call(sa, 'history', { room });
  assert.deepEqual(h.messages.map((x) => x.kind), ['message', 'edit', 'reaction', 'unreaction', 'delete']);
  sa.close(); sb.close();
});

test('who may: the sender edits; the sender, the owner or an admin deletes; only members react; limits and bad input answer clearly', async () => {
  const owner = await register(server.url, 'own');
  const ann = await register(server.url, 'ann');
  const eve = await register(server.url, 'eve');
  const [so, sa, se] = [await connect(server.url, owner.token), await connect(server.url, ann.token), await connect(server.url, eve.token)];
  const room = uniqueRoom('who');
  assert.equal((await api(server.url, 'POST', '/api/rooms', { name: room, kind: 'private' }, owner.token)).status, 201);
  assert.equal((await api(server.url, 'POST', `/api/rooms/${room}/members`, { username: ann.user.username }, owner.token)).status, 200);
  await call(so, 'join', { room });
  await call(sa, 'join', { room });
  const m = (await call(sa, 'send', { room, text: 'ann wrote this', client_id: 'a1' })).message;
  const o = (await call(so, 'send', { room, text: 'owner wrote this', client_id: 'o1' })).message;

  let r = await call(so, 'edit', { room, id: m.id, text: 'owner rewrites', client_id: 'x1' });
  assert.deepEqual([r.ok, r.error.code], [false, 'forbidden']);
  r = await call(sa, 'delete', { room, id: o.id, client_id: 'x2' });
  assert.deepEqual([r.ok, r.error.code], [false, 'forbidden']);
  // Not a member of the private room: answered like a room that does not exist.
  const missing = await call(se, 'react', { room: uniqueRoom('nowhere'), id: m.id, emoji: '👍', client_id: 'x3' });
  r = await call(se, 'react', { room, id: m.id, emoji: '👍', client_id: 'x3' });
  assert.deepEqual([r.ok, r.error.code], [false, missing.error.code]);
  r = await call(se, 'delete', { room, id: m.id, client_id: 'x4' });
  assert.deepEqual([r.ok, r.error.code], [false, missing.error.code]);
  for (const [arg, code] of [
    [{ room, id: m.id, emoji: 'thumbs', client_id: 'b1' }, 'bad_request'],
    [{ room, id: m.id, emoji: '👍👍', client_id: 'b2' }, 'bad_request'],
    [{ room, id: m.id, client_id: 'b3' }, 'bad_request'],
    [{ room, id: 'not-an-id', emoji: '👍', client_id: 'b4' }, 'bad_request'],
    [{ room, id: '01JAAAAAAAAAAAAAAAAAAAAAAA', emoji: '👍', client_id: 'b5' }, 'not_found'],
    [{ room, id: m.id, emoji: '👍' }, 'bad_request'],
  ]) {
    r = await call(sa, 'react', arg);
    assert.deepEqual([r.ok, r.error?.code], [false, code], JSON.stringify(arg));
  }
  r = await call(sa, 'edit', { room, id: m.id, text: 'x'.repeat(5000), client_id: 'b6' });
  assert.deepEqual([r.ok, r.error.code], [false, 'too_large']);
  r = await call(sa, 'edit', { room, id: m.id, text: '   ', client_id: 'b7' });
  assert.deepEqual([r.ok, r.error.code], [false, 'bad_request']);
  r = await call(sa, 'send', { room, text: 'reply to nothing', client_id: 'b8', reply_to: '01JAAAAAAAAAAAAAAAAAAAAAAA' });
  assert.deepEqual([r.ok, r.error.code], [false, 'not_found']);
  // The owner deletes another member's message; an edit of it is then refused.
  r = await call(so, 'delete', { room, id: m.id, client_id: 'od1' });
  assert.equal(r.ok, true, JSON.stringify(r));
  r = await call(sa, 'edit', { room, id: m.id, text: 'too late', client_id: 'late' });
  assert.deepEqual([r.ok, r.error.code], [false, 'not_found']);
  r = await call(sa, 'react', { room, id: m.id, emoji: '👍', client_id: 'late2' });
  assert.deepEqual([r.ok, r.error.code], [false, 'not_found']);
  // A change names a message, not a change.
  const edit = (await call(so, 'edit', { room, id: o.id, text: 'owner, edited', client_id: 'oe' })).message;
  r = await call(so, 'edit', { room, id: edit.id, text: 'edit of an edit', client_id: 'oe2' });
  assert.deepEqual([r.ok, r.error.code], [false, 'not_found']);
  // Deleting again what is deleted: allowed to whoever could delete it, to nobody else.
  assert.equal((await call(so, 'delete', { room, id: o.id, client_id: 'od2' })).ok, true);
  assert.equal((await call(so, 'delete', { room, id: o.id, client_id: 'od3' })).ok, true);
  r = await call(sa, 'delete', { room, id: o.id, client_id: 'ad1' });
  assert.deepEqual([r.ok, r.error.code], [false, 'forbidden']);
  for (const s of [so, sa, se]) s.close();
});

test('REST: PATCH and DELETE a message, POST and DELETE a reaction, send a reply; GET messages bundles the state', async () => {
  const a = await register(server.url, 'ann');
  const b = await register(server.url, 'bob');
  const room = uniqueRoom('rest');
  const sb = await connect(server.url, b.token);
  await call(sb, 'join', { room });
  const sa = await connect(server.url, a.token);
  await call(sa, 'join', { room });
  const live = collect(sb, 'message');
  const path = `/api/rooms/${room}/messages`;
  const sent = await api(server.url, 'POST', path, { text: 'original', client_id: 'c1' }, a.token);
  assert.equal(sent.status, 201);
  const id = sent.body.message.id;
  let r = await api(server.url, 'PATCH', `${path}/${id}`, { text: 'edited', client_id: 'c2' }, a.token);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.message.kind, 'edit');
  r = await api(server.url, 'PATCH', `${path}/${id}`, { text: 'bob edits', client_id: 'c3' }, b.token);
  assert.deepEqual([r.status, r.body.error.code], [403, 'forbidden']);
  r = await api(server.url, 'POST', `${path}/${id}/reactions`, { emoji: '🚀', client_id: 'c4' }, b.token);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await api(server.url, 'POST', `${path}/${id}/reactions`, { emoji: '✅', client_id: 'c5' }, b.token);
  r = await api(server.url, 'DELETE', `${path}/${id}/reactions`, { emoji: '✅', client_id: 'c6' }, b.token);
  assert.equal(r.status, 200);
  r = await api(server.url, 'POST', path, { text: 'replying', client_id: 'c7', reply_to: id }, b.token);
  assert.equal(r.status, 201);
  assert.equal(r.body.message.reply_to.text, 'edited');
  const h = await api(server.url, 'GET', path, undefined, a.token);
  const m = h.body.messages.find((x) => x.id === id);
  assert.deepEqual([m.text, m.reactions], ['edited', { '🚀': { count: 1, me: false } }]);
  r = await api(server.url, 'DELETE', `${path}/${id}`, { client_id: 'c8' }, a.token);
  assert.equal(r.status, 200);
  r = await api(server.url, 'DELETE', `${path}/${id}`, {}, a.token);
  assert.deepEqual([r.status, r.body.error.code], [400, 'bad_request']);
  await live.waitFor(7);
  assert.deepEqual(live.items.map((x) => x.kind), ['message', 'edit', 'reaction', 'reaction', 'unreaction', 'message', 'delete']);
  sa.close(); sb.close();
});

test('a client away during changes catches up with sync and reaches the state history bundles; changes are not unread', async () => {
  const { a, b, sa, sb, room } = await pair(['websocket', 'websocket']);
  const m1 = (await call(sa, 'send', { room, text: 'one', client_id: 'm1' })).message;
  const m2 = (await call(sa, 'send', { room, text: 'two', client_id: 'm2' })).message;
  await call(sb, 'read', { room, seq: m2.seq });
  sb.close();
  await call(sa, 'edit', { room, id: m1.id, text: 'one, edited', client_id: 'e1' });
  await call(sa, 'react', { room, id: m2.id, emoji: '👀', client_id: 'r1' });
  await call(sa, 'delete', { room, id: m2.id, client_id: 'd1' });
  await call(sa, 'send', { room, text: 'three', client_id: 'm3', reply_to: m1.id });
  const listed = (await api(server.url, 'GET', '/api/rooms', undefined, b.token)).body.rooms.find((x) => x.name === room);
  assert.equal(listed.unread, 1, 'only the new message is unread, not the three changes');
  const back = await connect(server.url, b.token);
  const joined = await call(back, 'join', { room });
  assert.equal(joined.unread, 1);
  // Bob had seq 1..2 as first sent; the sync from 2 brings the changes, and his replay of
  // the whole log reaches what history bundles.
  const synced = await call(back, 'sync', { rooms: { [room]: m2.seq } });
  assert.deepEqual(synced.rooms[room].messages.map((x) => x.kind), ['edit', 'reaction', 'delete', 'message']);
  const had = [m1, m2];
  const h = await call(back, 'history', { room });
  assert.deepEqual(bundled(h.messages), replay([...had, ...synced.rooms[room].messages], b.user.id));
  assert.equal(h.messages.at(-1).reply_to.text, 'one, edited');
  sa.close(); back.close();
});
