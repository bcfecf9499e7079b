// Several nodes behave as one: Redis fan-out and presence, one PostgreSQL store. Each node is
// the real binary; clients are the official socket.io-client, connected to different nodes.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, register, connect, call, collect, sleep, uniqueRoom } from './harness.js';
import { clusterSettings, startNode, privateRedis, redisCli, readyz, eventually } from './cluster.js';

async function allHistory(url, token, room) {
  const out = [];
  let before;
  for (;;) {
    const q = before ? `?limit=100&before_seq=${before}` : '?limit=100';
    const r = await api(url, 'GET', `/api/rooms/${room}/messages${q}`, undefined, token);
    assert.equal(r.status, 200);
    out.unshift(...r.body.messages);
    if (!r.body.has_more) return out;
    before = r.body.messages[0].seq;
  }
}

describe('two nodes sharing Redis and PostgreSQL', () => {
  let c; let A; let B;
  before(async () => {
    c = clusterSettings();
    [A, B] = await Promise.all([startNode(c), startNode(c)]);
  });
  after(async () => {
    await Promise.all([A.stop(), B.stop()]);
    A.cleanup(); B.cleanup(); c.db.drop();
  });

  test('messages, typing and presence cross nodes; a token from one node works on the other', async () => {
    const ann = await register(A.url, 'ann');
    const bob = await register(B.url, 'bob');
    const sa = await connect(A.url, ann.token);
    const sb = await connect(B.url, bob.token);
    const room = uniqueRoom();
    const presenceA = collect(sa, 'presence');
    const ja = await call(sa, 'join', { room });
    assert.equal(ja.ok, true);
    assert.deepEqual(ja.online.map((u) => u.username), [ann.user.username]);
    const jb = await call(sb, 'join', { room });
    assert.equal(jb.ok, true);
    // The join ack lists who is online on every node.
    assert.deepEqual(jb.online.map((u) => u.username).sort(), [ann.user.username, bob.user.username].sort());
    const bobOnline = (await presenceA.waitFor(2)).find((p) => p.user.id === bob.user.id);
    assert.deepEqual(bobOnline, { room, user: bob.user, online: true });

    const gotA = collect(sa, 'message');
    const gotB = collect(sb, 'message');
    const typingA = collect(sa, 'typing');
    assert.equal((await call(sa, 'send', { room, text: 'from A', client_id: 'a1' })).message.seq, 1);
    assert.equal((await call(sb, 'send', { room, text: 'from B', client_id: 'b1' })).message.seq, 2);
    for (const got of [gotA, gotB]) {
      const msgs = await got.waitFor(2);
      assert.deepEqual(msgs.map((m) => [m.seq, m.text]), [[1, 'from A'], [2, 'from B']]);
    }
    assert.equal((await call(sb, 'typing', { room })).ok, true);
    assert.deepEqual((await typingA.waitFor(1))[0], { room, user: bob.user });

    // Bob leaves on node B: Ann on node A sees him go offline.
    assert.equal((await call(sb, 'leave', { room })).ok, true);
    await eventually(() => presenceA.items.some((p) => p.user.id === bob.user.id && p.online === false), 5000, 'bob offline');
    sa.close(); sb.close();
  });

  test('each message crosses Redis on the room channel, and only nodes with members subscribe', async () => {
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
    // A second connection of a node adds no subscription.
    const sa2 = await connect(A.url, ann.token);
    await call(sa2, 'join', { room });
    assert.equal(numsub(), 2);
    await call(sb, 'leave', { room });
    await eventually(() => numsub() === 1, 3000, 'node B unsubscribed');
    sa.close(); sa2.close(); sb.close();
    await eventually(() => numsub() === 0, 3000, 'node A unsubscribed');
  });

  test('concurrent sends through both nodes: gap-free seq, every member gets every message once and in order, store == acked', async () => {
    const room = uniqueRoom();
    const users = [];
    for (const node of [A, B, A, B]) {
      const u = await register(node.url, 'u');
      const s = await connect(node.url, u.token);
      await call(s, 'join', { room });
      users.push({ u, s, got: collect(s, 'message') });
    }
    const perUser = 100;
    const acked = new Set();
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
      await sleep(200); // nothing extra arrives
      assert.equal(got.items.length, total, 'no duplicate deliveries');
      assert.deepEqual(msgs.map((m) => m.seq), Array.from({ length: total }, (_, i) => i + 1));
    }
    // The oracle: history holds exactly the acked client_ids, each once, seq 1..N.
    const history = await allHistory(B.url, users[1].u.token, room);
    assert.deepEqual(history.map((m) => m.seq), Array.from({ length: total }, (_, i) => i + 1));
    assert.deepEqual(new Set(history.map((m) => m.client_id)), acked);
    for (const { s } of users) s.close();
  });

  test('an idempotent resend through the other node returns the original', async () => {
    const ann = await register(A.url, 'ann');
    const sa = await connect(A.url, ann.token);
    const sa2 = await connect(B.url, ann.token);
    const room = uniqueRoom();
    await call(sa, 'join', { room });
    await call(sa2, 'join', { room });
    const first = await call(sa, 'send', { room, text: 'once', client_id: 'same' });
    const again = await call(sa2, 'send', { room, text: 'once', client_id: 'same' });
    assert.deepEqual(again.message, first.message);
    const history = await allHistory(A.url, ann.token, room);
    assert.equal(history.length, 1);
    sa.close(); sa2.close();
  });
});

test('a node dies: its users go offline elsewhere within the TTL, and its clients recover on another node with sync', async () => {
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
    const gotC = collect(sc, 'message');
    await call(sa, 'send', { room, text: 'before', client_id: 'm0' });
    const seen = await gotC.waitFor(1);
    const lastSeen = seen.at(-1).seq;

    const killedAt = Date.now();
    await B.stop('SIGKILL');
    sc.close();
    for (let i = 1; i <= 5; i++) await call(sa, 'send', { room, text: `missed ${i}`, client_id: `m${i}` });
    // Cat's only node died without saying goodbye; node A announces her offline once her
    // presence entry expires (TTL 2 s, refreshed every 2/3 s).
    await eventually(() => presenceA.items.some((p) => p.user.id === cat.user.id && p.online === false), 8000, 'cat offline');
    assert.ok(Date.now() - killedAt < 8000);

    // Cat reconnects to the surviving node and syncs from the last seq she saw.
    const sc2 = await connect(A.url, cat.token);
    const j = await call(sc2, 'join', { room });
    assert.equal(j.room.last_seq, 6);
    const s = await call(sc2, 'sync', { rooms: { [room]: lastSeen } });
    assert.equal(s.ok, true);
    assert.deepEqual(s.rooms[room].messages.map((m) => m.text), [1, 2, 3, 4, 5].map((i) => `missed ${i}`));
    assert.equal(s.rooms[room].truncated, false);
    sa.close(); sc2.close();
  } finally {
    await Promise.all([A.stop(), B.stop()]);
    A.cleanup(); B.cleanup(); c.db.drop();
  }
});

test('Redis outage: nodes keep serving local members, report not-ready, and recover; missed cross-node messages come back with sync', async () => {
  const redis = await privateRedis();
  const c = clusterSettings({ redisUrl: redis.url });
  const [A, B] = await Promise.all([startNode(c), startNode(c)]);
  try {
    const ann = await register(A.url, 'ann');
    const dan = await register(A.url, 'dan');
    const bob = await register(B.url, 'bob');
    const sa = await connect(A.url, ann.token);
    const sd = await connect(A.url, dan.token);
    const sb = await connect(B.url, bob.token);
    const room = uniqueRoom();
    for (const s of [sa, sd, sb]) assert.equal((await call(s, 'join', { room })).ok, true);
    const gotD = collect(sd, 'message');
    const gotB = collect(sb, 'message');
    assert.equal((await readyz(A.url)).status, 200);

    await redis.stop();
    for (const node of [A, B]) {
      const r = await eventually(async () => { const x = await readyz(node.url); return x.status === 503 && x; }, 10000, 'not ready');
      assert.equal(r.body.ready, false);
      assert.equal(r.body.checks.fanout.ok, false);
      assert.equal(r.body.checks.store.ok, true);
    }
    // Local members still chat: acks mean committed, dan (same node) gets them live.
    for (let i = 1; i <= 3; i++) {
      const r = await call(sa, 'send', { room, text: `during ${i}`, client_id: `d${i}` });
      assert.equal(r.ok, true);
    }
    assert.deepEqual((await gotD.waitFor(3)).map((m) => m.seq), [1, 2, 3]);

    await redis.start();
    for (const node of [A, B]) {
      await eventually(async () => (await readyz(node.url)).status === 200, 15000, 'ready again');
    }
    // Cross-node delivery resumes (the subscriber resubscribed the room)...
    await call(sa, 'send', { room, text: 'after', client_id: 'a1' });
    await eventually(() => gotB.items.some((m) => m.text === 'after'), 5000, "'after' on node B");
    await sleep(200);
    // Messages published while Redis was down are lost to node B, or arrive late if they
    // were still queued when it came back: either way in seq order, never twice.
    const live = gotB.items.map((m) => m.seq);
    assert.equal(live.at(-1), 4);
    assert.ok(live.length < 4 || live.join() === '1,2,3,4', `live: ${live}`);
    assert.deepEqual(live, [...live].sort((x, y) => x - y));
    // ...so bob, seeing a jump in seq, recovers exactly what he missed with sync.
    const s = await call(sb, 'sync', { rooms: { [room]: 0 } });
    assert.deepEqual(s.rooms[room].messages.map((m) => m.text), ['during 1', 'during 2', 'during 3', 'after']);
    for (const x of [sa, sd, sb]) x.close();
  } finally {
    await Promise.all([A.stop(), B.stop()]);
    A.cleanup(); B.cleanup(); c.db.drop();
    await redis.stop().catch(() => {});
  }
});

test('kill -9 a node mid-traffic from both nodes: every acked message is in PostgreSQL once, seq gap-free', async () => {
  const c = clusterSettings();
  const [A, B] = await Promise.all([startNode(c), startNode(c)]);
  try {
    const u = await register(A.url, 'ora');
    const room = uniqueRoom('crash');
    const acked = new Set();
    let running = true;
    const sockets = [];
    for (const node of [A, A, B, B]) {
      const s = await connect(node.url, u.token);
      await call(s, 'join', { room });
      sockets.push(s);
    }
    const loops = sockets.map((s, k) => (async () => {
      for (let i = 0; running && s.connected; i++) {
        const ids = [0, 1, 2, 3].map((j) => `s${k}-${i}-${j}`);
        await Promise.all(ids.map((client_id) => s.timeout(3000).emitWithAck('send', { room, text: 'x', client_id })
          .then((r) => { if (r.ok) acked.add(client_id); }, () => {})));
      }
    })());
    await eventually(() => acked.size >= 400, 20000, '400 acks');
    await A.stop('SIGKILL');
    await sleep(300); // node B keeps going on its own
    running = false;
    await Promise.all(loops);
    sockets.forEach((s) => s.close());
    const stored = await allHistory(B.url, u.token, room);
    const ids = stored.map((m) => m.client_id);
    assert.equal(new Set(ids).size, ids.length, 'no duplicates');
    assert.deepEqual(stored.map((m) => m.seq), stored.map((_, i) => i + 1), 'seq gap-free from 1');
    const have = new Set(ids);
    assert.deepEqual([...acked].filter((id) => !have.has(id)), [], 'acked messages missing');
  } finally {
    await Promise.all([A.stop(), B.stop()]);
    A.cleanup(); B.cleanup(); c.db.drop();
  }
});

test('scalify migrate --database-url applies the PostgreSQL schema once', async () => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { BIN } = await import('./harness.js');
  const { freshDatabase } = await import('./cluster.js');
  const db = freshDatabase();
  try {
    const run = () => promisify(execFile)(BIN, ['migrate', '--database-url', db.url], { env: { ...process.env, SCALIFY_LOG: 'warn' } });
    assert.match((await run()).stdout, /PostgreSQL: 1 migration\(s\) applied/);
    assert.match((await run()).stdout, /PostgreSQL: 0 migration\(s\) applied; schema is current/);
  } finally { db.drop(); }
});
