// Several nodes behave as one: Redis fan-out and presence, one PostgreSQL store. Each node is
// the real binary; clients are the official socket.io-client, spread over the nodes. Every
// test has its own PostgreSQL database and Redis key/channel prefix.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, register, connect, call, collect, sleep, uniqueRoom, allMessages, eventually } from './harness.js';
import { clusterSettings, startNode, privateRedis, loadingRedis, redisCli, readyz, freshDatabase } from './cluster.js';
import { rgbPng } from './png.js';

/** Sum of a counter (all label sets matching `labels`) in a node's /metrics. */
async function metric(url, name, labels = '') {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name) && line.includes(labels) && !line.startsWith('#')) sum += Number(line.split(' ').at(-1));
  }
  return sum;
}

/**
 * A client's view of a room, kept the way docs/protocol.md tells clients to: messages by seq;
 * when seq jumps past the next expected one, `sync` from the last contiguous seq. `attach`
 * moves the view to a new socket (after a reconnect) and syncs.
 */
function trackView(room) {
  const bySeq = new Map();
  let contiguous = 0;
  let socket;
  let chain = Promise.resolve();
  const liveIds = new Set();
  let liveDuplicates = 0;
  const add = (m) => {
    bySeq.set(m.seq, m.id);
    while (bySeq.has(contiguous + 1)) contiguous++;
  };
  const fill = async () => {
    const s = socket;
    for (;;) {
      let r;
      try {
        r = await call(s, 'sync', { rooms: { [room]: contiguous } });
      } catch (e) {
        // The socket died mid-sync (its node was killed): as a real client, the view syncs
        // again on its next socket (`attach`); anything still missing fails the view checks.
        if (!s.connected) return;
        throw e;
      }
      assert.equal(r.ok, true, JSON.stringify(r));
      r.rooms[room].messages.forEach(add);
      if (!r.rooms[room].truncated) return;
    }
  };
  const onMessage = (m) => {
    if (m.room !== room) return;
    if (liveIds.has(m.id)) liveDuplicates++;
    liveIds.add(m.id);
    add(m);
    if (m.seq > contiguous) chain = chain.then(fill);
  };
  return {
    async attach(s) {
      socket = s;
      s.on('message', onMessage);
      const j = await call(s, 'join', { room });
      assert.equal(j.ok, true);
      chain = chain.then(fill);
      await chain;
    },
    async settle() { await chain; await chain; },
    entries: () => [...bySeq.entries()].sort((a, b) => a[0] - b[0]),
    get liveDuplicates() { return liveDuplicates; },
  };
}

/** Each socket sends continuously (4 in flight); `acked` is the oracle. */
function traffic(sockets, room) {
  const acked = new Set();
  let running = true;
  const loops = sockets.map((s, k) => (async () => {
    for (let i = 0; running; i++) {
      if (!s.connected) { await sleep(20); continue; }
      const ids = [0, 1, 2, 3].map((j) => `t${k}-${i}-${j}`);
      await Promise.all(ids.map((client_id) => s.timeout(3000).emitWithAck('send', { room, text: 'x', client_id })
        .then((r) => { if (r.ok) acked.add(client_id); }, () => {})));
      await sleep(5);
    }
  })());
  return { acked, async stop() { running = false; await Promise.all(loops); } };
}

describe('three nodes sharing Redis and PostgreSQL', () => {
  let c; let nodes;
  before(async () => {
    c = clusterSettings();
    nodes = await Promise.all([startNode(c), startNode(c), startNode(c)]);
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    nodes.forEach((n) => n.cleanup());
    c.drop();
  });

  test('messages, typing and presence cross nodes; a token from one node works on the others', async () => {
    const [A, B, C] = nodes;
    const ann = await register(A.url, 'ann');
    const bob = await register(B.url, 'bob');
    const cat = await register(C.url, 'cat');
    const sa = await connect(A.url, ann.token);
    const sb = await connect(B.url, bob.token);
    const sc = await connect(C.url, cat.token);
    const room = uniqueRoom();
    const presenceA = collect(sa, 'presence');
    assert.deepEqual((await call(sa, 'join', { room })).online.map((u) => u.username), [ann.user.username]);
    await call(sb, 'join', { room });
    const jc = await call(sc, 'join', { room });
    // The join ack lists who is online on every node.
    assert.deepEqual(jc.online.map((u) => u.username).sort(), [ann, bob, cat].map((u) => u.user.username).sort());
    await presenceA.waitFor(3);
    assert.deepEqual(presenceA.items.find((p) => p.user.id === cat.user.id), { room, user: cat.user, online: true });

    const got = [sa, sb, sc].map((s) => collect(s, 'message'));
    const typingA = collect(sa, 'typing');
    assert.equal((await call(sa, 'send', { room, text: 'from A', client_id: 'a1' })).message.seq, 1);
    assert.equal((await call(sb, 'send', { room, text: 'from B', client_id: 'b1' })).message.seq, 2);
    assert.equal((await call(sc, 'send', { room, text: 'from C', client_id: 'c1' })).message.seq, 3);
    for (const g of got) {
      const msgs = await g.waitFor(3);
      assert.deepEqual(msgs.map((m) => [m.seq, m.text]), [[1, 'from A'], [2, 'from B'], [3, 'from C']]);
    }
    assert.equal((await call(sc, 'typing', { room })).ok, true);
    assert.deepEqual((await typingA.waitFor(1))[0], { room, user: cat.user });
    await sleep(200);
    for (const g of got) assert.equal(g.items.length, 3, 'each message exactly once');

    // A second connection of Cat on another node: she is not announced twice, and leaving on
    // one node keeps her online; leaving on both announces her offline once.
    const sc2 = await connect(A.url, cat.token);
    await call(sc2, 'join', { room });
    await call(sc, 'leave', { room });
    await sleep(300);
    assert.equal(presenceA.items.filter((p) => p.user.id === cat.user.id).length, 1);
    await call(sc2, 'leave', { room });
    await eventually(() => presenceA.items.some((p) => p.user.id === cat.user.id && p.online === false), 30000, 'cat offline');
    assert.equal(presenceA.items.filter((p) => p.user.id === cat.user.id).length, 2);
    for (const s of [sa, sb, sc, sc2]) s.close();
  });

  test('a room has one Redis channel, subscribed only by nodes with members in it; other nodes receive none of its messages', async () => {
    const [A, B, C] = nodes;
    const ann = await register(A.url, 'ann');
    const bob = await register(B.url, 'bob');
    const sa = await connect(A.url, ann.token);
    const sb = await connect(B.url, bob.token);
    const room = uniqueRoom();
    const channel = `${c.prefix}:room:${room}`;
    const numsub = () => Number(redisCli(c.redisUrl, 'PUBSUB', 'NUMSUB', channel).split('\n')[1]);
    assert.equal(numsub(), 0);
    await call(sa, 'join', { room });
    assert.equal(numsub(), 1, 'node A subscribed once it had a member');
    await call(sb, 'join', { room });
    assert.equal(numsub(), 2);
    const sa2 = await connect(A.url, ann.token);
    await call(sa2, 'join', { room });
    assert.equal(numsub(), 2, 'a second local member adds no subscription');

    // Node C has no member: it receives nothing of this room's traffic.
    const cBefore = await metric(C.url, 'scalify_redis_received_total');
    const bBefore = await metric(B.url, 'scalify_redis_received_total', 'outcome="delivered"');
    const got = collect(sb, 'message');
    for (let i = 0; i < 20; i++) await call(sa, 'send', { room, text: `m${i}`, client_id: `m${i}` });
    await got.waitFor(20);
    assert.equal(await metric(C.url, 'scalify_redis_received_total'), cBefore, 'node C received messages of a room it has no member in');
    assert.equal(await metric(B.url, 'scalify_redis_received_total', 'outcome="delivered"') - bBefore, 20, 'node B received each message once');

    await call(sb, 'leave', { room });
    await eventually(() => numsub() === 1, 30000, 'node B unsubscribed');
    sa.close(); sa2.close(); sb.close();
    await eventually(() => numsub() === 0, 30000, 'node A unsubscribed');
  });

  test('concurrent senders on all nodes: gap-free seq, every member gets every message exactly once and in order, store == acked', async () => {
    const room = uniqueRoom();
    const users = [];
    for (const node of [...nodes, ...nodes]) {
      const u = await register(node.url, 'u');
      const s = await connect(node.url, u.token);
      await call(s, 'join', { room });
      users.push({ u, s, got: collect(s, 'message') });
    }
    const perUser = 60;
    const acked = new Set();
    // Membership is stable during the traffic: no node may receive a message of a room it has
    // no member in (a room left just before may still race its unsubscribe, hence the baseline).
    const unwatched = () => Promise.all(nodes.map((n) => metric(n.url, 'scalify_redis_received_total', 'outcome="unwatched"')));
    const unwatchedBefore = await unwatched();
    await Promise.all(users.map(({ s }, ui) => Promise.all(
      Array.from({ length: perUser }, async (_, i) => {
        const client_id = `u${ui}-${i}`;
        const r = await call(s, 'send', { room, text: `m ${client_id}`, client_id });
        assert.equal(r.ok, true, JSON.stringify(r));
        acked.add(client_id);
      }),
    )));
    const total = users.length * perUser;
    assert.equal(acked.size, total);
    for (const { got } of users) {
      const msgs = await got.waitFor(total, 15000);
      await sleep(200);
      assert.equal(got.items.length, total, 'no duplicate deliveries');
      assert.deepEqual(msgs.map((m) => m.seq), Array.from({ length: total }, (_, i) => i + 1));
    }
    const history = await allMessages(nodes[1].url, users[1].u.token, room);
    assert.deepEqual(history.map((m) => m.seq), Array.from({ length: total }, (_, i) => i + 1));
    assert.deepEqual(new Set(history.map((m) => m.client_id)), acked);
    assert.deepEqual(await unwatched(), unwatchedBefore, 'a node received a message for a room it has no member in');
    for (const { s } of users) s.close();
  });

  test('room_added and room_created reach users on other nodes', async () => {
    const [A, B, C] = nodes;
    const ann = await register(A.url, 'ann');
    const bob = await register(B.url, 'bob');
    const sb = await connect(C.url, bob.token);
    const got = collect(sb, 'room_added');
    const created = collect(sb, 'room_created');
    const dm = await api(A.url, 'POST', '/api/dms', { username: bob.user.username }, ann.token);
    assert.equal(dm.status, 200);
    assert.equal((await got.waitFor(1))[0].room.name, dm.body.room.name);
    // A public room created on A is announced to a connection on C; a private one is not.
    const [open, closed] = [uniqueRoom('pub'), uniqueRoom('priv')];
    assert.equal((await api(A.url, 'POST', '/api/rooms', { name: closed, kind: 'private' }, ann.token)).status, 201);
    assert.equal((await api(A.url, 'POST', '/api/rooms', { name: open, kind: 'public' }, ann.token)).status, 201);
    assert.deepEqual((await created.waitFor(1)).map((e) => [e.room.name, e.room.kind]), [[open, 'public']]);
    sb.close();
  });

  test('a read mark on one node reaches the user\'s connections on the others; the count is the same on every node', async () => {
    const [A, B, C] = nodes;
    const ann = await register(A.url, 'ann');
    const bob = await register(B.url, 'bob');
    const [onA, onC] = [await connect(A.url, ann.token), await connect(C.url, ann.token)];
    const sb = await connect(B.url, bob.token);
    const room = uniqueRoom('read');
    await call(onA, 'join', { room });
    await call(sb, 'join', { room });
    for (let i = 1; i <= 3; i++) assert.equal((await call(sb, 'send', { room, text: `m${i}`, client_id: `b${i}` })).ok, true);
    const seen = collect(onC, 'read');
    assert.deepEqual(await call(onA, 'read', { room, seq: 2 }), { ok: true, room, last_read: 2 });
    assert.deepEqual((await seen.waitFor(1))[0], { room, seq: 2 });
    for (const n of nodes) {
      const r = (await api(n.url, 'GET', '/api/rooms', undefined, ann.token)).body.rooms.find((x) => x.name === room);
      assert.deepEqual([r.last_read, r.unread], [2, 1], n.url);
    }
    for (const s of [onA, onC, sb]) s.close();
  });

  test('mentions, receipts and settings cross nodes: a mention counted on every node, a receipt and a settings change reach connections elsewhere, receipts off holds on every node', async () => {
    const [A, B, C] = nodes;
    const ann = await register(A.url, 'ann');
    const bob = await register(B.url, 'bob');
    const room = uniqueRoom('rcpt');
    const sa = await connect(A.url, ann.token);
    const sb = await connect(B.url, bob.token);
    const bobOnC = await connect(C.url, bob.token);
    const cat = await register(C.url, 'cat');
    const catOnC = await connect(C.url, cat.token);
    for (const s of [sa, sb, bobOnC, catOnC]) await call(s, 'join', { room });
    const sent = await call(sa, 'send', { room, text: `hi @${bob.user.username}`, client_id: 'a1' });
    assert.deepEqual(sent.message.mentions, [bob.user.id]);
    for (const n of nodes) {
      const r = (await api(n.url, 'GET', '/api/rooms', undefined, bob.token)).body.rooms.find((x) => x.name === room);
      assert.deepEqual([r.unread, r.mentions], [1, 1], n.url);
    }
    // Bob reads on B: Ann, on A, sees his receipt.
    const annSees = collect(sa, 'receipt');
    await call(sb, 'read', { room, seq: 1 });
    assert.deepEqual((await annSees.waitFor(1))[0], { room, user: { id: bob.user.id, username: bob.user.username }, seq: 1 });
    // Bob turns receipts off on A: his connection on C hears of it, and no receipt of Ann's
    // reaches it on C.
    const told = collect(bobOnC, 'settings');
    const bobSees = collect(bobOnC, 'receipt');
    assert.equal((await api(A.url, 'PUT', '/api/me/settings', { read_receipts: false }, bob.token)).status, 200);
    await told.waitFor(1);
    const catSees = collect(catOnC, 'receipt');
    await call(sb, 'send', { room, text: 'reply', client_id: 'b1' });
    await call(sa, 'read', { room, seq: 2 });
    // Cat, on C with receipts on, gets Ann's receipt: by then Bob's connection on C would have.
    await eventually(() => catSees.items.some((r) => r.user.id === ann.user.id && r.seq === 2), 15000, "Ann's receipt on C");
    await sleep(300);
    assert.equal(bobSees.items.length, 0);
    // Bob leaves B, turns receipts on again through C (B no longer hears of his settings),
    // and comes back to B: B goes by what the store says now, not by what it knew.
    sb.close();
    await sleep(200);
    assert.equal((await api(C.url, 'PUT', '/api/me/settings', { read_receipts: true }, bob.token)).status, 200);
    const again = await connect(B.url, bob.token);
    await call(again, 'join', { room });
    const bobSeesAgain = collect(again, 'receipt');
    await call(sa, 'send', { room, text: 'more', client_id: 'a2' });
    await call(catOnC, 'read', { room, seq: 3 });
    await bobSeesAgain.waitFor(1);
    assert.equal(bobSeesAgain.items[0].user.id, cat.user.id);
    for (const s of [sa, again, bobOnC, catOnC]) s.close();
  });

  test('the admin overview lists every node of the cluster', async () => {
    const [A] = nodes;
    const boss = await register(A.url, 'boss');
    const { execFileSync } = await import('node:child_process');
    const { BIN } = await import('./harness.js');
    execFileSync(BIN, ['admin', 'grant', boss.user.username, '--database-url', c.db.url], { env: { ...process.env, SCALIFY_LOG: 'warn' } });
    const ids = await Promise.all(nodes.map(async (n) => (await (await fetch(`${n.url}/healthz`)).json()).node));
    const o = await eventually(async () => {
      const r = await api(A.url, 'GET', '/api/admin/overview', undefined, boss.token);
      return r.body.nodes?.length === 3 && r.body;
    }, 10000, 'three nodes in the overview');
    assert.deepEqual(o.nodes.map((n) => n.node).sort(), [...ids].sort());
    assert.equal(o.node, ids[0]);
  });

  test('signing out on node A closes the session\'s sockets on node B and C and its token stops working there; failed logins on A throttle B', async () => {
    const [A, B, C] = nodes;
    const ann = await register(A.url, 'ann');
    const other = await api(A.url, 'POST', '/api/auth/login', { username: ann.user.username, password: 'correct-horse' });
    assert.equal(other.status, 200);
    const onB = await connect(B.url, ann.token);
    const onC = await connect(C.url, ann.token);
    const keeps = await connect(C.url, other.body.token);
    const closed = (s) => new Promise((resolve) => s.once('disconnect', resolve));
    const [reasonB, reasonC] = [closed(onB), closed(onC)];
    const out = await api(A.url, 'POST', '/api/auth/logout', undefined, ann.token);
    assert.equal(out.status, 204);
    assert.equal(await reasonB, 'io server disconnect');
    assert.equal(await reasonC, 'io server disconnect');
    assert.equal(keeps.connected, true, 'the other session stays connected');
    for (const n of [A, B, C]) {
      assert.equal((await api(n.url, 'GET', '/api/me', undefined, ann.token)).status, 401);
      await assert.rejects(connect(n.url, ann.token), /unauthorized/);
    }
    assert.equal((await api(B.url, 'GET', '/api/me', undefined, other.body.token)).status, 200);
    // Everywhere: the remaining session's socket closes too.
    const reasonKeeps = closed(keeps);
    assert.equal((await api(B.url, 'POST', '/api/auth/logout-all', undefined, other.body.token)).status, 204);
    assert.equal(await reasonKeeps, 'io server disconnect');

    // Five failed logins on A; the sixth attempt, with the right password, on B is throttled.
    const bob = await register(A.url, 'bob');
    for (let i = 0; i < 5; i++) {
      const r = await api(A.url, 'POST', '/api/auth/login', { username: bob.user.username, password: 'wrong-password' });
      assert.equal(r.status, 401);
    }
    const r = await fetch(`${B.url}/api/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: bob.user.username, password: 'correct-horse' }),
    });
    assert.equal(r.status, 429);
    assert.ok(Number(r.headers.get('retry-after')) >= 1);
  });

  test('a member removed on node A stops getting the room on node B at once and cannot send through node C', async () => {
    const [A, B, C] = nodes;
    const owner = await register(A.url, 'own');
    const eve = await register(A.url, 'eve');
    const room = uniqueRoom('priv');
    const made = await api(A.url, 'POST', '/api/rooms', { name: room, kind: 'private', members: [eve.user.username] }, owner.token);
    assert.equal(made.status, 201);
    const se = await connect(B.url, eve.token);
    assert.equal((await call(se, 'join', { room })).ok, true);
    const so = await connect(A.url, owner.token);
    await call(so, 'join', { room });
    // C has seen eve send there (her membership is cached on C).
    assert.equal((await api(C.url, 'POST', `/api/rooms/${room}/messages`, { text: 'hi', client_id: 'e1' }, eve.token)).status, 201);
    const got = collect(se, 'message');
    const removed = collect(se, 'room_removed');
    // Eve is not the owner: she cannot remove the owner.
    assert.equal((await api(B.url, 'DELETE', `/api/rooms/${room}/members/${owner.user.username}`, undefined, eve.token)).status, 403);
    assert.equal((await api(A.url, 'DELETE', `/api/rooms/${room}/members/${eve.user.username}`, undefined, owner.token)).status, 204);
    assert.equal((await removed.waitFor(1))[0].room, room);
    assert.equal((await call(so, 'send', { room, text: 'after', client_id: 'o1' })).ok, true);
    const viaC = await api(C.url, 'POST', `/api/rooms/${room}/messages`, { text: 'still?', client_id: 'e2' }, eve.token);
    assert.equal(viaC.status, 404, JSON.stringify(viaC.body));
    const viaB = await call(se, 'send', { room, text: 'still?', client_id: 'e3' });
    assert.equal(viaB.ok, false);
    await sleep(300);
    assert.deepEqual(got.items.filter((m) => m.text === 'after'), [], 'no event of the room after the removal');
    se.close(); so.close();
  });

  test('an idempotent resend through another node returns the original', async () => {
    const [A, B] = nodes;
    const ann = await register(A.url, 'ann');
    const sa = await connect(A.url, ann.token);
    const sa2 = await connect(B.url, ann.token);
    const room = uniqueRoom();
    await call(sa, 'join', { room });
    await call(sa2, 'join', { room });
    const first = await call(sa, 'send', { room, text: 'once', client_id: 'same' });
    const again = await call(sa2, 'send', { room, text: 'once', client_id: 'same' });
    assert.deepEqual(again.message, first.message);
    assert.equal((await allMessages(A.url, ann.token, room)).length, 1);
    sa.close(); sa2.close();
  });

  test('edits, reactions, replies and deletions made on one node reach members on the others live, retry through another node once, and every node bundles the same history', async () => {
    const { replay, bundled } = await import('./changes.js');
    const [A, B, C] = nodes;
    const [ann, bob] = [await register(A.url, 'ann'), await register(B.url, 'bob')];
    const [sa, sb, sa2] = [await connect(A.url, ann.token), await connect(B.url, bob.token), await connect(C.url, ann.token)];
    const room = uniqueRoom('chg');
    for (const s of [sa, sb, sa2]) assert.equal((await call(s, 'join', { room })).ok, true);
    const live = collect(sb, 'message');
    const m = (await call(sa, 'send', { room, text: 'on A', client_id: 'm1' })).message;
    const edit = await call(sa, 'edit', { room, id: m.id, text: 'on A, edited', client_id: 'e1' });
    // The retry through node C answers the first entry.
    assert.deepEqual(await call(sa2, 'edit', { room, id: m.id, text: 'on A, edited', client_id: 'e1' }), edit);
    assert.equal((await call(sb, 'react', { room, id: m.id, emoji: '🙂', client_id: 'r1' })).ok, true);
    assert.equal((await call(sb, 'send', { room, text: 'from B', client_id: 'b1', reply_to: m.id })).ok, true);
    const second = (await call(sa2, 'send', { room, text: 'to delete', client_id: 'm2' })).message;
    assert.equal((await call(sa2, 'delete', { room, id: second.id, client_id: 'd1' })).ok, true);
    const got = await live.waitFor(6);
    assert.deepEqual(got.map((x) => x.kind), ['message', 'edit', 'reaction', 'message', 'message', 'delete']);
    await sleep(300);
    assert.equal(live.items.length, 6, 'the retry was not broadcast');
    const synced = await call(sb, 'sync', { rooms: { [room]: 0 } });
    const expected = replay(synced.rooms[room].messages, bob.user.id);
    for (const node of nodes) {
      const h = await api(node.url, 'GET', `/api/rooms/${room}/messages`, undefined, bob.token);
      assert.deepEqual(bundled(h.body.messages), expected, `history on ${node.url}`);
    }
    assert.deepEqual(expected.map((x) => [x.text, x.deleted]), [['on A, edited', false], ['from B', false], ['', true]]);
    // Every node searches the same index: the edit's words find the message, the deleted one
    // is gone.
    for (const node of nodes) {
      const found = async (q) => (await api(node.url, 'GET', `/api/search?${new URLSearchParams({ q, room })}`, undefined, bob.token)).body.results.map((h) => h.message.id);
      assert.deepEqual(await found('edited'), [m.id], `search on ${node.url}`);
      assert.deepEqual(await found('delete'), [], `search on ${node.url}`);
    }
    sa.close(); sb.close(); sa2.close();
  });
});

/** Clients spread over `nodes`, each with a tracked view of `room`. */
async function spreadClients(nodes, room, perNode) {
  const owner = await register(nodes[0].url, 'own');
  const clients = [];
  for (let i = 0; i < perNode; i++) {
    for (const [k, node] of nodes.entries()) {
      const u = await register(node.url, 'v');
      const s = await connect(node.url, u.token);
      const view = trackView(room);
      await view.attach(s);
      clients.push({ u, s, view, node: k });
    }
  }
  return { owner, clients };
}

async function assertViewsEqualStore(clients, url, token, room) {
  const stored = await allMessages(url, token, room);
  const ids = stored.map((m) => m.client_id);
  assert.equal(new Set(ids).size, ids.length, 'no duplicates in the store');
  assert.deepEqual(stored.map((m) => m.seq), stored.map((_, i) => i + 1), 'seq gap-free from 1');
  const expected = stored.map((m) => [m.seq, m.id]);
  for (const { view } of clients) {
    await view.settle();
    assert.deepEqual(view.entries(), expected, "a client's view differs from the store");
    assert.equal(view.liveDuplicates, 0, 'a message was delivered twice on one connection');
  }
  return stored;
}

test('kill -9 one of three nodes under traffic: its clients reconnect to another node and sync; nothing acked is lost or duplicated', async () => {
  const c = clusterSettings();
  const nodes = await Promise.all([startNode(c), startNode(c), startNode(c)]);
  try {
    const room = uniqueRoom('kill');
    const { clients } = await spreadClients(nodes, room, 2);
    const t = traffic(clients.map((x) => x.s), room);
    await eventually(() => t.acked.size >= 300, 30000, '300 acks');
    await nodes[2].stop('SIGKILL');
    // The dead node's clients reconnect to the survivors (as through a load balancer).
    for (const x of clients.filter((y) => y.node === 2)) {
      x.s.close();
      const target = nodes[clients.indexOf(x) % 2];
      x.s = await connect(target.url, x.u.token);
      await x.view.attach(x.s);
    }
    const t2 = traffic(clients.map((x) => x.s), room);
    await eventually(() => t2.acked.size >= 100, 30000, '100 more acks');
    await t.stop(); await t2.stop();
    // A last message reaches every client live; anything missed before shows up as a gap.
    await call(clients[0].s, 'send', { room, text: 'end', client_id: 'end' });
    await eventually(() => clients.every((x) => x.view.entries().some(([seq]) => seq > 0 && x.view.entries().at(-1)[0] === x.view.entries().length)), 30000, 'views complete');
    await sleep(300);
    const stored = await assertViewsEqualStore(clients, nodes[0].url, clients[0].u.token, room);
    const have = new Set(stored.map((m) => m.client_id));
    assert.deepEqual([...t.acked, ...t2.acked].filter((id) => !have.has(id)), [], 'acked messages missing');
    clients.forEach((x) => x.s.close());
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    nodes.forEach((n) => n.cleanup());
    c.drop();
  }
});

test('Redis restarted mid-traffic: nodes report not-ready, then recover; every client view equals the store', async () => {
  const redis = await privateRedis();
  const c = clusterSettings({ redisUrl: redis.url });
  const nodes = await Promise.all([startNode(c), startNode(c), startNode(c)]);
  try {
    const room = uniqueRoom('redis');
    const { clients } = await spreadClients(nodes, room, 2);
    const t = traffic(clients.map((x) => x.s), room);
    await eventually(() => t.acked.size >= 200, 30000, '200 acks');
    await redis.stop();
    const r = await eventually(async () => { const x = await readyz(nodes[0].url); return x.status === 503 && x; }, 30000, 'not ready');
    assert.equal(r.body.checks.fanout.ok, false);
    assert.equal(r.body.checks.store.ok, true);
    const duringOutage = t.acked.size;
    await eventually(() => t.acked.size >= duringOutage + 100, 30000, 'sends acked during the outage');
    await redis.start();
    for (const n of nodes) await eventually(async () => (await readyz(n.url)).status === 200, 30000, 'ready again');
    const after = t.acked.size;
    await eventually(() => t.acked.size >= after + 100, 30000, 'sends acked after recovery');
    await t.stop();
    await call(clients[0].s, 'send', { room, text: 'end', client_id: 'end' });
    await eventually(() => clients.every((x) => { const e = x.view.entries(); return e.length && e.at(-1)[0] === e.length; }), 30000, 'views complete');
    await sleep(300);
    const stored = await assertViewsEqualStore(clients, nodes[0].url, clients[0].u.token, room);
    const have = new Set(stored.map((m) => m.client_id));
    assert.deepEqual([...t.acked].filter((id) => !have.has(id)), [], 'acked messages missing');
    // The restarted Redis came back empty: the nodes' presence refresh re-registered everyone,
    // so the cluster-wide online list is whole again.
    await eventually(async () => {
      const j = await call(clients[0].s, 'join', { room });
      return j.online.length === clients.length;
    }, 10000, 'presence restored after the Redis restart');
    // Every node listens to the control room again: a sign-out on one node closes the
    // session's socket on another.
    const ann = await register(nodes[0].url, 'ann');
    const onB = await connect(nodes[1].url, ann.token);
    const closed = new Promise((resolve) => onB.once('disconnect', resolve));
    assert.equal((await api(nodes[0].url, 'POST', '/api/auth/logout', undefined, ann.token)).status, 204);
    assert.equal(await Promise.race([closed, sleep(15000).then(() => 'still connected after 15 s')]), 'io server disconnect');
    clients.forEach((x) => x.s.close());
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    nodes.forEach((n) => n.cleanup());
    c.drop();
    await redis.stop().catch(() => {});
  }
});

test('a node started while Redis is still loading its dataset waits for it, saying so, and comes up when the load ends', async () => {
  const redis = await loadingRedis(5);
  const c = clusterSettings({ redisUrl: redis.url });
  let node;
  try {
    assert.match(redis.ping(), /^LOADING/, 'Redis had finished loading before the node started');
    node = await startNode(c);
    // It came up once Redis had its whole dataset, having said why it waited.
    assert.match(redisCli(redis.url, 'INFO', 'persistence'), /loading:0/);
    assert.ok(Number(redisCli(redis.url, 'DBSIZE')) >= redis.keys, 'the dataset was loaded');
    const log = node.stderr();
    assert.match(log, /waiting for Redis/, `the node did not say it waited:\n${log}`);
    assert.match(log, /loading the dataset/, `the wait does not name Redis loading:\n${log}`);
    const alice = await register(node.url, 'ld');
    const s = await connect(node.url, alice.token);
    const room = uniqueRoom('ld');
    assert.equal((await call(s, 'join', { room })).ok, true);
    const sent = await call(s, 'send', { room, text: 'after the load', client_id: 'ld-1' });
    assert.equal(sent.ok, true, JSON.stringify(sent));
    assert.equal(sent.message.seq, 1);
    s.close();
  } finally {
    if (node) { await node.stop(); node.cleanup(); }
    c.drop();
    await redis.stop();
  }
});

test("a node dies: its users go offline on the others within the presence TTL", async () => {
  const c = clusterSettings({ presenceTtl: 2 });
  const [A, B] = await Promise.all([startNode(c), startNode(c)]);
  try {
    const ann = await register(A.url, 'ann');
    const cat = await register(B.url, 'cat');
    const sa = await connect(A.url, ann.token);
    const sc = await connect(B.url, cat.token);
    const room = uniqueRoom();
    await call(sa, 'join', { room });
    const presenceA = collect(sa, 'presence');
    await call(sc, 'join', { room });
    await presenceA.waitFor(1);
    const killedAt = Date.now();
    await B.stop('SIGKILL');
    sc.close();
    // Cat's node died without saying goodbye; node A announces her offline once her presence
    // entry expires (TTL 2 s, refreshed every 2/3 s), and no longer lists her.
    await eventually(() => presenceA.items.some((p) => p.user.id === cat.user.id && p.online === false), 30000, 'cat offline');
    assert.ok(Date.now() - killedAt < 8000);
    const j = await call(sa, 'join', { room });
    assert.deepEqual(j.online.map((u) => u.username), [ann.user.username]);
    sa.close();
  } finally {
    await Promise.all([A.stop(), B.stop()]);
    A.cleanup(); B.cleanup(); c.drop();
  }
});

test('scalify migrate --database-url applies the PostgreSQL schema once', async () => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { BIN } = await import('./harness.js');
  const db = freshDatabase();
  try {
    const run = () => promisify(execFile)(BIN, ['migrate', '--database-url', db.url], { env: { ...process.env, SCALIFY_LOG: 'warn' } });
    assert.match((await run()).stdout, /PostgreSQL: 12 migration\(s\) applied/);
    assert.match((await run()).stdout, /PostgreSQL: 0 migration\(s\) applied; schema is current/);
  } finally { db.drop(); }
});

test('PostgreSQL down: /readyz names the store, sends fail with internal (nothing acked that is not stored), recently verified sessions still connect, all recovers when it returns', async () => {
  const { privatePostgres } = await import('./cluster.js');
  const pg = await privatePostgres();
  const node = await (await import('./harness.js')).startServer({ args: ['--database-url', pg.url, '--rate-limit-per-sec', '0'] });
  try {
    const u = await register(node.url, 'pgu');
    const fresh = await register(node.url, 'pgf');
    const s = await connect(node.url, u.token);
    const room = uniqueRoom('pg');
    await call(s, 'join', { room });
    assert.equal((await call(s, 'send', { room, text: 'before', client_id: 'p0' })).ok, true);
    assert.equal((await readyz(node.url)).status, 200);

    pg.stop();
    const r = await eventually(async () => { const x = await readyz(node.url); return x.status === 503 && x; }, 30000, 'not ready');
    assert.equal(r.body.checks.store.ok, false);
    assert.match(r.body.checks.store.error, /store|PostgreSQL|connect/i);
    const during = await call(s, 'send', { room, text: 'during', client_id: 'p1' });
    assert.equal(during.ok, false);
    assert.equal(during.error.code, 'internal');
    // Sessions while the store is down: one this node verified (u's, at its connect) still
    // connects; one it never checked cannot be, and is told to retry — not that it is signed out.
    const again = await connect(node.url, u.token);
    again.close();
    await assert.rejects(connect(node.url, fresh.token), /server unavailable; connect again/);

    pg.start();
    await eventually(async () => (await readyz(node.url)).status === 200, 30000, 'ready again');
    // The client retries with the same client_id: stored once, acked.
    const retried = await eventually(async () => { const x = await call(s, 'send', { room, text: 'during', client_id: 'p1' }); return x.ok && x; }, 30000, 'send works again');
    assert.equal(retried.message.seq, 2);
    const h = await api(node.url, 'GET', `/api/rooms/${room}/messages`, undefined, u.token);
    assert.deepEqual(h.body.messages.map((m) => [m.seq, m.text]), [[1, 'before'], [2, 'during']]);
    s.close();
  } finally {
    await node.stop(); node.cleanup(); pg.destroy();
  }
});

test('SIGTERM mid-traffic on a PostgreSQL node: in-flight sends finish and are acked, exit 0, the store equals the acks', async () => {
  const c = clusterSettings();
  const node = await startNode(c);
  try {
    const u = await register(node.url, 'term');
    const room = uniqueRoom('term');
    const sockets = [];
    for (let i = 0; i < 4; i++) {
      const s = await connect(node.url, u.token);
      await call(s, 'join', { room });
      sockets.push(s);
    }
    const t = traffic(sockets, room);
    await eventually(() => t.acked.size >= 300, 30000, '300 acks');
    const exit = await node.stop('SIGTERM');
    await t.stop();
    sockets.forEach((s) => s.close());
    assert.equal(exit.code, 0, node.stderr());
    // Read the store through a fresh node on the same database.
    const reader = await startNode(c);
    try {
      const stored = await allMessages(reader.url, u.token, room);
      assert.deepEqual(stored.map((m) => m.seq), stored.map((_, i) => i + 1), 'seq gap-free from 1');
      assert.deepEqual(stored.map((m) => m.client_id).sort(), [...t.acked].sort(), 'committed ⇔ acked');
    } finally { await reader.stop(); reader.cleanup(); }
  } finally {
    await node.stop(); node.cleanup(); c.drop();
  }
});

describe('missed-message notifications across nodes', () => {
  const SECRET = 'the-cluster-webhook-secret';
  // A P-256 private key (base64url scalar) every node signs Web Push with.
  const VAPID = Buffer.from(Array.from({ length: 32 }, (_, i) => i + 1)).toString('base64url');
  const notifyArgs = (hookUrl, delay = 2) => ['--notify-after-secs', String(delay), '--notify-webhook-url', `${hookUrl}/hook`];

  test('three nodes send one notification per user and room, none to a user connected to another node; every node offers the same VAPID key', async () => {
    const { listen } = await import('./receiver.js');
    const hook = await listen(() => 200);
    const c = clusterSettings();
    const env = { SCALIFY_NOTIFY_WEBHOOK_SECRET: SECRET, SCALIFY_VAPID_PRIVATE_KEY: VAPID };
    const nodes = [];
    try {
      for (let i = 0; i < 3; i++) nodes.push(await startNode(c, notifyArgs(hook.url), env));
      const keys = await Promise.all(nodes.map(async (n) => (await api(n.url, 'GET', '/api/push/vapid-public-key')).body.key));
      assert.equal(new Set(keys).size, 1, 'one key across the nodes');
      const url = (i) => nodes[i % 3].url;
      const ann = await register(url(0), 'ann');
      const away = [];
      for (let i = 0; i < 4; i++) away.push(await register(url(i), 'away'));
      // Three members stay connected, one to each node: whichever node looks at the room,
      // two of them are on another.
      const here = [];
      for (let i = 0; i < 3; i++) here.push(await register(url(i), 'here'));
      const room = uniqueRoom('news');
      for (const [i, u] of [ann, ...away, ...here].entries()) {
        const s = await connect(url(i), u.token);
        assert.equal((await call(s, 'join', { room })).ok, true);
        s.close();
      }
      const hereSockets = await Promise.all(here.map((u, i) => connect(url(i), u.token)));
      // DMs with two of them and twenty more users: many rooms due at once, so the nodes'
      // passes overlap and only their leases keep each room one node's.
      const dmPeers = away.slice(0, 2);
      for (let i = 0; i < 20; i++) dmPeers.push(await register(url(i), 'peer'));
      const dmRooms = [];
      for (const [i, u] of dmPeers.entries()) {
        const r = await api(url(i), 'POST', '/api/dms', { username: u.user.username }, ann.token);
        dmRooms.push(r.body.room.name);
      }
      // Sends through every node.
      for (let i = 0; i < 6; i++) {
        assert.equal((await api(url(i), 'POST', `/api/rooms/${room}/messages`, { text: `news ${i}`, client_id: `n${i}` }, ann.token)).status, 201);
      }
      for (const [i, dm] of dmRooms.entries()) {
        assert.equal((await api(url(i + 1), 'POST', `/api/rooms/${encodeURIComponent(dm)}/messages`, { text: 'psst', client_id: `d${i}` }, ann.token)).status, 201);
      }
      const parsed = () => hook.requests.map((r) => JSON.parse(r.body.toString('utf8')));
      // Four in the room, 22 DMs.
      await eventually(() => parsed().length >= 26, 30000, 'the notifications');
      await sleep(5000);
      const got = parsed();
      const pairs = got.map((s) => `${s.user.username} ${s.room.name}`).sort();
      const expected = [...away.map((u) => `${u.user.username} ${room}`), ...dmPeers.map((u, i) => `${u.user.username} ${dmRooms[i]}`)].sort();
      assert.deepEqual(pairs, expected, 'one per user and room, nobody twice, nobody connected');
      assert.equal(new Set(got.map((s) => s.id)).size, got.length);
      for (const s of got.filter((x) => x.room.name === room)) assert.equal(s.count, 6);
      for (const x of hereSockets) x.close();
    } finally {
      for (const n of nodes) { await n.stop(); n.cleanup(); }
      // A cluster without the shared key offers no Web Push (each node would sign with its own).
      const lone = await startNode(c, notifyArgs(hook.url), { SCALIFY_NOTIFY_WEBHOOK_SECRET: SECRET });
      assert.equal((await api(lone.url, 'GET', '/api/push/vapid-public-key')).status, 404);
      await lone.stop(); lone.cleanup();
      c.drop();
      await hook.close();
    }
  });

  test('a notification pending when every node is killed -9 comes, once, from a node started after', async () => {
    const { listen } = await import('./receiver.js');
    const hook = await listen(() => 200);
    const c = clusterSettings();
    const env = { SCALIFY_NOTIFY_WEBHOOK_SECRET: SECRET };
    let nodes = [];
    try {
      for (let i = 0; i < 2; i++) nodes.push(await startNode(c, notifyArgs(hook.url, 3), env));
      const [ann, bob] = [await register(nodes[0].url, 'ann'), await register(nodes[1].url, 'bob')];
      const r = await api(nodes[1].url, 'POST', '/api/dms', { username: bob.user.username }, ann.token);
      const dm = r.body.room.name;
      assert.equal((await api(nodes[0].url, 'POST', `/api/rooms/${encodeURIComponent(dm)}/messages`, { text: 'before the crash', client_id: 'k1' }, ann.token)).status, 201);
      for (const n of nodes) await n.stop('SIGKILL');
      assert.equal(hook.requests.length, 0);
      for (const n of nodes) n.cleanup();
      nodes = [await startNode(c, notifyArgs(hook.url, 3), env)];
      await eventually(() => hook.requests.length >= 1, 20000, 'the notification');
      await sleep(4000);
      const got = hook.requests.map((x) => JSON.parse(x.body.toString('utf8')));
      assert.deepEqual(got.map((s) => [s.user.id, s.room.name, s.preview]), [[bob.user.id, dm, 'before the crash']]);
    } finally {
      for (const n of nodes) { await n.stop(); n.cleanup(); }
      c.drop();
      await hook.close();
    }
  });
});

test('attachments in S3-compatible storage: uploaded on one node, downloaded and deleted through another; an unreachable store is named by /readyz', async () => {
  const endpoint = process.env.SCALIFY_TEST_S3_ENDPOINT;
  assert.ok(endpoint, 'SCALIFY_TEST_S3_ENDPOINT is not set: run ./scripts/test.sh (it starts an S3-compatible server)');
  const bucket = `scalify-e2e-${process.pid}-${Math.random().toString(16).slice(2, 10)}`;
  assert.equal((await fetch(`${endpoint}/${bucket}`, { method: 'PUT' })).status, 200);
  const objects = async () => [...(await (await fetch(`${endpoint}/${bucket}?list-type=2`)).text()).matchAll(/<Key>([^<]+)<\/Key>/g)].map((m) => m[1]);
  const c = clusterSettings();
  const s3 = ['--s3-endpoint', endpoint, '--s3-bucket', bucket];
  const creds = { AWS_ACCESS_KEY_ID: 'scalify-test', AWS_SECRET_ACCESS_KEY: 'scalify-test' };
  const nodes = [await startNode(c, s3, creds), await startNode(c, s3, creds)];
  const dead = await startNode(c, ['--s3-endpoint', 'http://127.0.0.1:9', '--s3-bucket', bucket], creds);
  try {
    for (const n of nodes) assert.equal((await readyz(n.url)).status, 200);
    await eventually(async () => {
      const r = await readyz(dead.url);
      return r.status === 503 && JSON.stringify(r.body).includes('object storage');
    }, 30000, '/readyz naming the unreachable object storage');
    const ann = await register(nodes[0].url, 'ann');
    const bob = await register(nodes[1].url, 'bob');
    const room = uniqueRoom('s3');
    const sa = await connect(nodes[0].url, ann.token, { transports: ['websocket'] });
    const sb = await connect(nodes[1].url, bob.token, { transports: ['polling'] });
    for (const s of [sa, sb]) assert.equal((await call(s, 'join', { room })).ok, true);
    const picture = rgbPng(400, 300);
    const up = await fetch(`${nodes[0].url}/api/rooms/${room}/uploads?name=cat.png`, {
      method: 'POST', headers: { authorization: `Bearer ${ann.token}` }, body: picture,
    });
    assert.equal(up.status, 201);
    const { upload } = await up.json();
    assert.equal(upload.width, 400);
    const seen = collect(sb, 'message');
    const sent = await call(sa, 'send', { room, text: 'a cat', attachment: upload.id, client_id: 'c1' });
    assert.equal(sent.ok, true, JSON.stringify(sent));
    await eventually(() => seen.items.some((m) => m.attachment?.id === upload.id));
    const get = (node, suffix = '') => fetch(`${node.url}/api/rooms/${room}/uploads/${upload.id}${suffix}`, { headers: { authorization: `Bearer ${bob.token}` } });
    const got = await get(nodes[1]);
    assert.equal(got.status, 200);
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(picture));
    assert.equal((await get(nodes[1], '/preview')).status, 200);
    assert.equal((await objects()).length, 3, 'the file, its preview and its description');
    // Uploads through the node that cannot reach the store fail cleanly.
    const refused = await fetch(`${dead.url}/api/rooms/${room}/uploads?name=x.txt`, {
      method: 'POST', headers: { authorization: `Bearer ${ann.token}` }, body: 'hello',
    });
    assert.equal(refused.status, 500);
    assert.equal((await refused.json()).error.code, 'internal');

    const deleted = await call(sa, 'delete', { room, id: sent.message.id, client_id: 'd1' });
    assert.equal(deleted.ok, true, JSON.stringify(deleted));
    assert.equal((await get(nodes[1])).status, 404);
    assert.equal((await get(nodes[0])).status, 404);
    assert.deepEqual(await objects(), []);
    for (const s of [sa, sb]) s.close();
  } finally {
    for (const n of [...nodes, dead]) { await n.stop(); n.cleanup(); }
    c.drop();
  }
});
