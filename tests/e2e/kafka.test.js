// The durable pipeline: nodes produce every accepted message to Kafka before the
// ack; persisters write the topic to PostgreSQL. Real broker (tansu, a private one per drill),
// real PostgreSQL and Redis, the official socket.io-client. Every drill keeps an oracle of
// acked messages and ends with: each one in PostgreSQL exactly once, per-room seq gap-free,
// and every client's view (REST history) equal to the store.
import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, api, call, collect, connect, register, sleep, uniqueRoom, allMessages, eventually } from './harness.js';
import { forgetKeys, freePort, privatePostgres, privateRedis, readyz, redisCli } from './cluster.js';
import {
  checkStore, durableSettings, kafkaArgs, sendUntilAcked, startBroker, startDurableNode, startPersister, storedMessages,
} from './kafka.js';

/** Users, each connected to `url`, all joined to every room. */
async function population(url, users = 4, rooms = 3) {
  const names = Array.from({ length: rooms }, () => uniqueRoom('k'));
  const people = [];
  for (let i = 0; i < users; i++) {
    const u = await register(url, 'k');
    const s = await connect(url, u.token, { reconnection: true });
    for (const room of names) assert.equal((await call(s, 'join', { room })).ok, true);
    people.push({ ...u, socket: s });
  }
  // What one member receives live, to check every message is broadcast exactly once —
  // including those the broker confirmed after their sender stopped waiting.
  const live = collect(people[0].socket, 'message');
  return { rooms: names, people, live };
}

/**
 * Every person sends to the rooms in turn, each send retried with its client_id until acked,
 * until `stop()` is called. Acked messages go into `oracle`; a send that never gets an ack
 * fails the drill (a retry with the same client_id must always succeed in the end).
 *
 * Meanwhile the continuous oracle ("acked ⇒ readable"): a reader keeps reading every room
 * with `sync` from the start, and every message acked before that read began must be in it.
 * A read that fails (the database is down) proves nothing and is not counted; the first
 * miss fails the drill with `stop()`.
 */
function traffic({ rooms, people }, oracle, { pauseMs = 5 } = {}) {
  let running = true;
  let n = 0;
  const ackedAt = new Map();
  let failure = null;
  // Traffic goes on after a miss (the drill's own waits still end); `stop()` reports it.
  const loops = people.map(async (p, i) => {
    while (running) {
      const room = rooms[n % rooms.length];
      const clientId = `p${i}-${n++}`;
      const m = await sendUntilAcked(p.socket, room, `message ${clientId}`, clientId);
      if (!m) { failure ??= new Error(`send ${clientId} to ${room} was never acked`); break; }
      oracle.set(clientId, m);
      ackedAt.set(clientId, Date.now());
      await sleep(pauseMs);
    }
  });
  const reader = people.at(-1).socket;
  const reads = { complete: 0, failed: 0 };
  // Each read covers the messages acked in the last `recheckMs` (older ones were read many
  // times, and the end of the drill reads everything): small reads, many times a second, so
  // even a message unreadable for a few milliseconds is likely to be caught.
  const recheckMs = 10000;
  const watcher = (async () => {
    while (running && !failure) {
      const began = Date.now();
      const due = new Map(rooms.map((room) => [room, []]));
      for (const [clientId, m] of oracle) {
        const at = ackedAt.get(clientId);
        if (at !== undefined && at < began && at > began - recheckMs) due.get(m.room)?.push(m);
      }
      let complete = true;
      for (const [room, msgs] of due) {
        if (msgs.length === 0) continue;
        const seen = new Set();
        for (let last = Math.min(...msgs.map((m) => m.seq)) - 1; ;) {
          const r = await call(reader, 'sync', { rooms: { [room]: last } }).catch(() => null);
          if (!r?.ok) { complete = false; break; }
          const got = r.rooms[room].messages;
          for (const m of got) seen.add(m.id);
          if (!r.rooms[room].truncated || got.length === 0) break;
          last = got.at(-1).seq;
        }
        if (!complete) break;
        const missed = msgs.find((m) => !seen.has(m.id));
        if (missed) {
          failure ??= new Error(`acked message ${missed.client_id} (seq ${missed.seq} in ${room}) was not readable ${Date.now() - ackedAt.get(missed.client_id)} ms after its ack`);
        }
      }
      if (complete) reads.complete++; else { reads.failed++; await sleep(100); continue; }
      await sleep(10);
    }
  })();
  return {
    reads,
    failure: () => failure,
    stop: async () => {
      running = false;
      await Promise.all([...loops, watcher]);
      if (failure) throw failure;
      assert.ok(reads.complete > 0, 'the continuous oracle never completed a read');
    },
  };
}

/**
 * The end-of-drill checks (see the file's header). `liveMayMiss`: a stored message may have
 * missed its live broadcast (one in flight when Redis lost its data; clients get it with
 * `sync`), but none is broadcast twice or broadcast without being stored.
 */
async function quiesceAndCheck(c, url, pop, oracle, persisters = [], { liveMayMiss = false } = {}) {
  assert.ok(oracle.size > 0, 'the drill acked nothing');
  try {
    await eventually(() => {
      const stored = new Set(storedMessages(c.db.url).map((r) => r.client_id));
      return [...oracle.keys()].every((k) => stored.has(k));
    }, 60000, `all ${oracle.size} acked messages in PostgreSQL`);
  } catch (e) {
    const stored = new Set(storedMessages(c.db.url).map((r) => r.client_id));
    const missing = [...oracle.values()].filter((m) => !stored.has(m.client_id));
    const logs = persisters.map((p) => p.stderr().slice(-(Number(process.env.SCALIFY_E2E_LOG_TAIL) || 3000))).join('\n---\n');
    throw new Error(`${e.message}: ${stored.size} stored, ${missing.length} missing, e.g. ${JSON.stringify(missing.slice(0, 3).map((m) => [m.room, m.seq]))}\n${logs}`);
  }
  const rows = storedMessages(c.db.url);
  checkStore(rows, oracle, assert);
  if (liveMayMiss) {
    await sleep(1000);
  } else {
    await eventually(() => pop.live.items.length >= rows.length, 30000, 'every stored message delivered live');
  }
  const liveIds = pop.live.items.map((m) => m.id);
  assert.equal(new Set(liveIds).size, liveIds.length, 'a message was broadcast twice');
  if (liveMayMiss) {
    const stored = new Set(rows.map((r) => r.id));
    assert.deepEqual(liveIds.filter((id) => !stored.has(id)), [], 'broadcast but not stored');
  } else {
    assert.deepEqual(new Set(liveIds), new Set(rows.map((r) => r.id)), 'live deliveries differ from the store');
  }
  for (const room of pop.rooms) {
    const stored = rows.filter((r) => r.room === room).map((r) => r.id);
    const view = await allMessages(url, pop.people[0].token, room);
    assert.deepEqual(view.map((m) => m.id), stored, `room ${room}: the client's history differs from the store`);
    // What a reconnecting client recovers with sync (paged while truncated), from nothing.
    const synced = [];
    for (let last = 0; ;) {
      const r = await call(pop.people[1 % pop.people.length].socket, 'sync', { rooms: { [room]: last } });
      assert.equal(r.ok, true, JSON.stringify(r));
      synced.push(...r.rooms[room].messages);
      if (!r.rooms[room].truncated) break;
      last = synced.at(-1).seq;
    }
    assert.deepEqual(synced.map((m) => m.id), stored, `room ${room}: sync differs from the store`);
  }
  return rows;
}

function closeAll(pop) { for (const p of pop.people) p.socket.close(); }

/**
 * One drill's durable cluster: a private broker (`broker`: startBroker's options), fresh
 * settings, a durable node and — unless `users` is 0 — a connected population. `body` gets
 * them and `addPersister(extra, options)`; whatever the body started is stopped and dropped
 * when it ends, pass or fail.
 */
async function drill({ broker: brokerOptions, partitions, users = 4, rooms = 3, nodeArgs = [], nodeEnv = {} } = {}, body) {
  const broker = await startBroker(brokerOptions);
  const c = durableSettings(broker.brokers, partitions ? { partitions } : {});
  const persisters = [];
  let node;
  let pop;
  try {
    node = await startDurableNode(c, nodeArgs, nodeEnv);
    const addPersister = async (extra, options) => {
      const p = await startPersister(c, extra, options);
      persisters.push(p);
      return p;
    };
    if (users > 0) pop = await population(node.url, users, rooms);
    await body({ broker, c, node, pop, addPersister });
  } finally {
    if (pop) closeAll(pop);
    for (const p of persisters) await p.stop('SIGKILL');
    if (node) { await node.stop(); node.cleanup(); }
    c.drop();
    await broker.destroy();
  }
}

test('durable node: acked after Kafka, readable before the persister runs, stored exactly once after', () => drill({ users: 0 }, async ({ c, node, addPersister }) => {
  const alice = await register(node.url, 'ka');
  const bob = await register(node.url, 'kb');
  const sa = await connect(node.url, alice.token);
  const sb = await connect(node.url, bob.token);
  const room = uniqueRoom('k');
  const joined = await call(sa, 'join', { room });
  await call(sb, 'join', { room });
  const live = collect(sb, 'message');
  const acks = [];
  // Every third message mentions Bob: mentions travel in the records, the window and the rows.
  const text = (i) => (i % 3 === 0 ? `m${i} @${bob.user.username}` : `m${i}`);
  for (let i = 1; i <= 30; i++) acks.push(await call(sa, 'send', { room, text: text(i), client_id: `m-${i}` }));
  assert.deepEqual(acks.map((a) => a.ok && a.message.seq), Array.from({ length: 30 }, (_, i) => i + 1));
  const mentioned = (messages) => messages.filter((m) => m.mentions.includes(bob.user.id)).map((m) => m.seq);
  const everyThird = Array.from({ length: 10 }, (_, i) => 3 * (i + 1));
  assert.deepEqual(mentioned(acks.map((a) => a.message)), everyThird);
  await live.waitFor(30);
  assert.deepEqual(live.items.map((m) => m.seq), acks.map((a) => a.message.seq));

  // No persister yet: PostgreSQL has nothing, reads still return every acked message.
  assert.equal(storedMessages(c.db.url).length, 0);
  const history = await call(sb, 'history', { room, limit: 100 });
  assert.deepEqual(history.messages.map((m) => m.id), acks.map((a) => a.message.id));
  assert.deepEqual(mentioned(history.messages), everyThird);
  const synced = await call(sb, 'sync', { rooms: { [room]: 10 } });
  assert.deepEqual(synced.rooms[room].messages.map((m) => m.seq), Array.from({ length: 20 }, (_, i) => i + 11));
  const listed = await api(node.url, 'GET', '/api/rooms', undefined, bob.token);
  assert.equal(listed.body.rooms.find((r) => r.name === room).last_seq, 30);
  // Unread counts cover what only the recent window holds: Bob reads ten, twenty stay unread
  // (in the listing and in a join answer); Alice's own thirty are not unread to her.
  assert.deepEqual(await call(sb, 'read', { room, seq: 10 }), { ok: true, room, last_read: 10 });
  const unread = async (token) => {
    const r = (await api(node.url, 'GET', '/api/rooms', undefined, token)).body.rooms.find((x) => x.name === room);
    return [r.last_read, r.unread, r.mentions];
  };
  // After seq 10: 12, 15, …, 30 mention Bob.
  assert.deepEqual(await unread(bob.token), [10, 20, 7]);
  assert.deepEqual(await unread(alice.token), [0, 0, 0]);
  const rejoined = await call(sb, 'join', { room });
  assert.deepEqual([rejoined.last_read, rejoined.unread, rejoined.mentions], [10, 20, 7]);
  // A member who joins now starts with the past read, though only the window holds it.
  const carol = await register(node.url, 'kc');
  const sc = await connect(node.url, carol.token);
  const carolJoined = await call(sc, 'join', { room });
  assert.deepEqual([carolJoined.room.last_seq, carolJoined.last_read, carolJoined.unread], [30, 30, 0]);
  sc.close();

  // A retry with the same client_id gets the original and is not broadcast again.
  const again = await call(sa, 'send', { room, text: 'different text', client_id: 'm-5' });
  assert.equal(again.ok, true);
  assert.equal(again.message.id, acks[4].message.id);
  assert.equal(again.message.text, 'm5');
  await sleep(300);
  assert.equal(live.items.length, 30);

  const ready = await readyz(node.url);
  assert.equal(ready.status, 200, JSON.stringify(ready.body));
  assert.equal(ready.body.checks.kafka.ok, true);

  // The persister writes them once, and the recent window empties.
  const persister = await addPersister();
  const pready = await readyz(persister.url);
  assert.equal(pready.status, 200, JSON.stringify(pready.body));
  assert.deepEqual(pready.body.checks, { store: { ok: true }, kafka: { ok: true } });
  await eventually(() => storedMessages(c.db.url).length === 30, 30000, '30 rows');
  const oracle = new Map(acks.map((a) => [a.message.client_id, a.message]));
  checkStore(storedMessages(c.db.url), oracle, assert);
  const windowKey = `${c.prefix}:recent:{${joined.room.id}}`;
  await eventually(() => redisCli(c.redisUrl, 'ZCARD', windowKey) === '0', 30000, 'the recent window trimmed');
  const afterTrim = await call(sb, 'history', { room, limit: 100 });
  assert.deepEqual(afterTrim.messages.map((m) => m.id), acks.map((a) => a.message.id));
  assert.deepEqual(mentioned(afterTrim.messages), everyThird);
  // Counted from the database now, the same.
  assert.deepEqual(await unread(bob.token), [10, 20, 7]);
  assert.deepEqual(await unread(alice.token), [0, 0, 0]);
  assert.ok(await persister.metric('scalify_persister_rows_total') >= 30);
  sa.close(); sb.close();
  const { code } = await persister.stop();
  assert.equal(code, 0, persister.stderr());
}));

test('durable mode: an away member is told once, by the webhook, of what the persister wrote', async () => {
  const { listen } = await import('./receiver.js');
  const hook = await listen(() => 200);
  try {
    await drill({
      users: 0,
      nodeArgs: ['--notify-after-secs', '1', '--notify-webhook-url', `${hook.url}/hook`],
      nodeEnv: { SCALIFY_NOTIFY_WEBHOOK_SECRET: 'durable-webhook-secret' },
    }, async ({ node, addPersister }) => {
      const [ann, bob] = [await register(node.url, 'ka'), await register(node.url, 'kb')];
      const dm = (await api(node.url, 'POST', '/api/dms', { username: bob.user.username }, ann.token)).body.room.name;
      const sa = await connect(node.url, ann.token);
      for (const [i, text] of ['first durable', 'second durable'].entries()) {
        assert.ok(await sendUntilAcked(sa, dm, text, `n${i}`), 'acked');
      }
      // Nothing is in PostgreSQL yet, so nothing is due.
      await sleep(3000);
      assert.equal(hook.requests.length, 0);
      await addPersister();
      await eventually(() => hook.requests.length >= 1, 30000, 'the notification');
      await sleep(3000);
      const got = hook.requests.map((r) => JSON.parse(r.body.toString('utf8')));
      assert.deepEqual(got.map((s) => [s.user.id, s.room.name, s.count, s.preview]), [[bob.user.id, dm, 2, 'first durable']]);
      sa.close();
    });
  } finally {
    await hook.close();
  }
});

test('a resend after the idempotency window (1 s here) is a new message: acked with a seq of its own, broadcast, stored beside the first, nothing dead-lettered', () => drill({ users: 0, nodeArgs: ['--idempotency-window-secs', '1'] }, async ({ c, node, addPersister }) => {
  const persister = await addPersister();
  const alice = await register(node.url, 'iw');
  const bob = await register(node.url, 'iw');
  const sa = await connect(node.url, alice.token);
  const sb = await connect(node.url, bob.token);
  const room = uniqueRoom('iw');
  assert.equal((await call(sa, 'join', { room })).ok, true);
  assert.equal((await call(sb, 'join', { room })).ok, true);
  const live = collect(sb, 'message');
  const first = await call(sa, 'send', { room, text: 'hello', client_id: 'k1' });
  assert.equal(first.ok, true);
  // Within the window a resend returns the original; once its key expired, a new message.
  let resent;
  await eventually(async () => {
    const ack = await call(sa, 'send', { room, text: 'hello', client_id: 'k1' });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    if (ack.message.seq === first.message.seq) return false;
    resent = ack.message;
    return true;
  }, 30000, 'the idempotency key to expire');
  assert.equal(resent.seq, first.message.seq + 1);
  assert.notEqual(resent.id, first.message.id);
  const next = await call(sa, 'send', { room, text: 'next', client_id: 'k2' });
  assert.equal(next.message.seq, resent.seq + 1);
  await live.waitFor(3);
  assert.deepEqual(live.items.map((m) => m.seq), [1, 2, 3]);
  // The persister stores all three — the resend too, with its client_id as sent — and
  // dead-letters nothing; every acked message stays readable once the window is trimmed.
  const rows = () => storedMessages(c.db.url).filter((r) => r.room === room);
  await eventually(() => rows().length === 3, 30000, 'three rows stored');
  assert.deepEqual(rows().map((r) => [r.seq, r.client_id, r.id]),
    [[1, 'k1', first.message.id], [2, 'k1', resent.id], [3, 'k2', next.message.id]]);
  assert.equal(await persister.metric('scalify_persister_dead_letters_total') ?? 0, 0);
  assert.equal(await persister.metric('scalify_persister_resent_total'), 1);
  const joined = await call(sb, 'join', { room });
  await eventually(() => redisCli(c.redisUrl, 'ZCARD', `${c.prefix}:recent:{${joined.room.id}}`) === '0', 30000, 'the recent window trimmed');
  assert.deepEqual((await allMessages(node.url, bob.token, room)).map((m) => m.id), [first.message.id, resent.id, next.message.id]);
  sa.close(); sb.close();
}));

test('kill -9 the persister mid-batch under traffic, start another: nothing lost, nothing twice, no gap', () => drill({}, async ({ c, node, pop, addPersister }) => {
  // The one killed writes with one writer, the one taking over with the default two.
  const p1 = await addPersister(['--persister-writers', '1']);
  const oracle = new Map();
  const load = traffic(pop, oracle, { pauseMs: 1 });
  await eventually(async () => (await p1.metric('scalify_persister_rows_total')) > 50, 30000, 'the persister writing');
  await p1.stop('SIGKILL');
  await sleep(1500);
  const p2 = await addPersister();
  await sleep(1500);
  await load.stop();
  await quiesceAndCheck(c, node.url, pop, oracle, [p1, p2]);
  assert.ok(await p2.metric('scalify_persister_rows_total') > 0, 'the second persister took over');
}));

/**
 * A private broker and a private PostgreSQL server (for drills that stop it), and settings
 * that use both; `destroy()` drops them and the cluster's Redis keys.
 */
async function privateDurable(options = {}) {
  const broker = await startBroker();
  const pg = await privatePostgres();
  const c = durableSettings(broker.brokers, options);
  c.db.drop();
  c.db = { url: pg.url, drop() {} };
  return {
    broker, pg, c,
    async destroy() { pg.destroy(); forgetKeys(c.redisUrl, c.prefix); await broker.destroy(); },
  };
}

test('PostgreSQL down for 12 s under traffic: sends still acked, the persister pauses in its group, then resumes without skipping; a persister started meanwhile waits for it', async () => {
  const env = await privateDurable();
  const { pg, c } = env;
  const adminName = `kadm${process.pid}`.slice(0, 32);
  // The admin's account exists before the node that names it in --admins starts: such a role
  // needs no database to check, so the admin page works while PostgreSQL is down.
  const first = await startDurableNode(c);
  const admin = (await api(first.url, 'POST', '/api/auth/register', { username: adminName, password: 'correct-horse' })).body;
  await first.stop(); first.cleanup();
  const node = await startDurableNode(c, ['--admins', adminName]);
  // The node verifies the admin's session now: while PostgreSQL is down it accepts sessions it
  // verified in the last 10 minutes.
  assert.equal((await api(node.url, 'GET', '/api/me', undefined, admin.token)).status, 200);
  const persister = await startPersister(c);
  const pop = await population(node.url);
  let late = null;
  let lateFailed = null;
  try {
    const oracle = new Map();
    // Warm the node's room and membership caches: while the database is down, only sends
    // (which go to Kafka) can work.
    for (const [i, p] of pop.people.entries()) {
      for (const room of pop.rooms) oracle.set(`warm-${i}-${room}`, await sendUntilAcked(p.socket, room, 'warm', `warm-${i}-${room}`));
    }
    const load = traffic(pop, oracle, { pauseMs: 20 });
    await sleep(1000);
    pg.stop();
    const downAt = Date.now();
    const ackedBefore = oracle.size;
    await eventually(async () => (await persister.metric('scalify_persister_paused')) === 1, 30000, 'the persister paused');
    // A persister started while the database is down waits for it instead of exiting.
    while (Date.now() - downAt < 12000) {
      await sleep(500);
      assert.equal(persister.child.exitCode, null, 'the persister must stay up');
      if (!late && Date.now() - downAt > 4000) {
        late = startPersister(c, [], { startMs: 60000 });
        late.catch((e) => { lateFailed = e; });
      }
      assert.equal(lateFailed, null, `a persister started while PostgreSQL was down: ${lateFailed?.message}`);
    }
    assert.ok(oracle.size > ackedBefore + 20, `sends kept being acked while PostgreSQL was down (${oracle.size - ackedBefore})`);
    // Still a member of its group: its partitions are still assigned to it.
    const registry = redisCli(c.redisUrl, 'HVALS', `${c.prefix}:{persisters}`);
    assert.match(registry, /"paused":true/);
    assert.doesNotMatch(registry, /"partitions":\[\]/);
    // The admin page shows it paused, and names the failing store.
    const overview = (await api(node.url, 'GET', '/api/admin/overview', undefined, admin.token)).body;
    assert.equal(overview.persisters.length, 1);
    assert.equal(overview.persisters[0].paused, true);
    assert.equal(overview.checks.store.ok, false);
    // The persister's own /readyz names the database.
    const pdown = await readyz(persister.url);
    assert.equal(pdown.status, 503);
    assert.equal(pdown.body.checks.store.ok, false);
    assert.equal(pdown.body.checks.kafka.ok, true);
    pg.start();
    await eventually(async () => (await persister.metric('scalify_persister_paused')) === 0, 30000, 'the persister resumed');
    late = await late;
    assert.match(late.stderr(), /waiting for PostgreSQL/);
    await sleep(1000);
    await load.stop();
    await quiesceAndCheck(c, node.url, pop, oracle, [persister, late]);
    assert.ok(await persister.metric('scalify_persister_retries_total') >= 1);
    assert.equal(persister.child.exitCode, null, 'the same persister process resumed');
    // The late one joined the group: its status is in the registry.
    assert.equal(redisCli(c.redisUrl, 'HLEN', `${c.prefix}:{persisters}`).trim(), '2');
  } finally {
    closeAll(pop);
    if (late?.stop) await late.stop();
    else if (late) late.then((l) => l.stop('SIGKILL'), () => {});
    await persister.stop();
    await node.stop(); node.cleanup(); await env.destroy();
  }
});

test('two nodes writing one room, the persister at batch size 1, PostgreSQL stopped mid-stream: every acked message stays readable at every instant', async () => {
  const env = await privateDurable({ partitions: 1 });
  const { pg, c } = env;
  const nodes = [await startDurableNode(c), await startDurableNode(c)];
  const persister = await startPersister(c, ['--persister-batch', '1', '--persister-writers', '1']);
  const room = uniqueRoom('k1');
  const people = [];
  try {
    // Two senders on each node, all in one room: its records reach the topic out of seq order.
    for (let i = 0; i < 4; i++) {
      const url = nodes[i % 2].url;
      const u = await register(url, 'k1');
      const socket = await connect(url, u.token, { reconnection: true });
      assert.equal((await call(socket, 'join', { room })).ok, true);
      people.push({ ...u, socket });
    }
    const pop = { rooms: [room], people, live: collect(people[0].socket, 'message') };
    const oracle = new Map();
    const load = traffic(pop, oracle, { pauseMs: 2 });
    await eventually(() => oracle.size > 100, 30000, 'traffic flowing');
    pg.stop();
    await sleep(3000);
    pg.start();
    // The reads work again before the persister's next probe: what it has not written yet
    // must still be in the window.
    await eventually(async () => (await persister.metric('scalify_persister_paused')) === 0, 30000, 'the persister resumed');
    const resumedAt = oracle.size;
    await eventually(() => oracle.size > resumedAt + 100, 30000, 'sends acked after the outage');
    await load.stop();
    assert.ok(load.reads.complete > 10, `the continuous oracle read ${load.reads.complete} times`);
    await quiesceAndCheck(c, nodes[0].url, pop, oracle, [persister]);
  } finally {
    for (const p of people) p.socket.close();
    await persister.stop();
    for (const n of nodes) { await n.stop(); n.cleanup(); }
    await env.destroy();
  }
});

for (const how of ['restarts without persistence', 'is flushed (FLUSHALL)']) {
  test(`Redis ${how} under traffic while the persister lags: no seq given twice, no acked message lost or unreadable, sends and reads wait until the persisters caught up`, async () => {
    const redis = await privateRedis();
    const broker = await startBroker();
    const c = durableSettings(broker.brokers, { redisUrl: redis.url });
    const started = [];
    let pop;
    try {
      const node = await startDurableNode(c);
      started.push(node);
      const p1 = await startPersister(c);
      started.push(p1);
      pop = await population(node.url, 4, 3);
      const oracle = new Map();
      const load = traffic(pop, oracle, { pauseMs: 2 });
      await eventually(() => oracle.size > 100, 30000, 'traffic flowing');
      // The persister stops: what is acked from now on is in Kafka and the recent windows only.
      await p1.stop();
      const lagFrom = oracle.size;
      await eventually(() => oracle.size > lagFrom + 100, 30000, 'sends acked while the persister is away');
      if (how.startsWith('restarts')) {
        await redis.stop();
        await sleep(300);
        await redis.start();
      } else {
        assert.equal(redisCli(redis.url, 'FLUSHALL'), 'OK');
      }
      // Without a persister nothing can be sequenced safely: sends wait (error acks, retried).
      const lostAt = oracle.size;
      await sleep(3000);
      assert.ok(oracle.size - lostAt < 20, `${oracle.size - lostAt} sends acked after the loss with no persister running`);
      const p2 = await startPersister(c);
      started.push(p2);
      await eventually(() => oracle.size > lostAt + 200, 60000, 'sends acked again once the persister caught up');
      await load.stop();
      assert.ok(load.reads.complete > 10, `the continuous oracle read ${load.reads.complete} times`);
      await quiesceAndCheck(c, node.url, pop, oracle, [p1, p2], { liveMayMiss: true });
      const logs = node.stderr();
      assert.match(logs, /Redis holds no seq epoch/, 'the node noticed the loss');
    } finally {
      if (pop) closeAll(pop);
      for (const p of started.reverse()) { await p.stop('SIGKILL'); p.cleanup?.(); }
      c.drop();
      await broker.destroy();
      await redis.stop();
    }
  });
}

test('a Redis that may evict any key (maxmemory-policy allkeys-*) is refused by durable nodes and persisters, and doctor says why; volatile-* is warned of', async () => {
  const redis = await privateRedis();
  const broker = await startBroker();
  const c = durableSettings(broker.brokers, { redisUrl: redis.url });
  try {
    assert.equal(redisCli(redis.url, 'CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru'), 'OK');
    await assert.rejects(startDurableNode(c), /maxmemory-policy is allkeys-lru: it may evict the rooms' seq counters/);
    await assert.rejects(startPersister(c, [], { startMs: 10000 }), /maxmemory-policy is allkeys-lru/);
    const doctor = (env) => {
      const r = spawnSync(BIN, ['doctor', '--listen', '127.0.0.1:0', '--database-url', c.db.url, '--redis-url', c.redisUrl,
        '--redis-prefix', c.prefix, ...kafkaArgs(c)], { encoding: 'utf8', env: { ...process.env, SCALIFY_TOKEN_SECRET: c.secret, ...env } });
      return `${r.stdout}${r.stderr}`;
    };
    assert.match(doctor(), /FAIL {2}Redis eviction: .*allkeys-lru/);
    assert.equal(redisCli(redis.url, 'CONFIG', 'SET', 'maxmemory-policy', 'volatile-lru'), 'OK');
    assert.match(doctor(), /Redis eviction: .*volatile-lru: under memory pressure it evicts idempotency keys/);
    const node = await startDurableNode(c);
    assert.match(node.stderr(), /volatile-lru/);
    await node.stop(); node.cleanup();
    assert.equal(redisCli(redis.url, 'CONFIG', 'SET', 'maxmemory-policy', 'noeviction'), 'OK');
    assert.match(doctor(), /ok {4}Redis eviction: noeviction/);
  } finally {
    c.drop();
    await broker.destroy();
    await redis.stop();
  }
});

test('a persister leaves while PostgreSQL is down: the paused one pauses the partitions the rebalance gives it, and resumes without skipping', async () => {
  const env = await privateDurable({ partitions: 4 });
  const { pg, c } = env;
  const node = await startDurableNode(c);
  const first = await startPersister(c);
  const second = await startPersister(c);
  const pop = await population(node.url, 4, 8);
  // The first persister's entry in the registry the admin page reads (its id ends with its pid).
  const firstStatus = () => redisCli(c.redisUrl, 'HVALS', `${c.prefix}:{persisters}`)
    .split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
    .find((s) => s.id.endsWith(`-${first.child.pid}`));
  let secondStopped = false;
  try {
    const oracle = new Map();
    for (const [i, p] of pop.people.entries()) {
      for (const room of pop.rooms) oracle.set(`warm-${i}-${room}`, await sendUntilAcked(p.socket, room, 'warm', `warm-${i}-${room}`));
    }
    await eventually(async () => firstStatus()?.partitions.length === 2, 30000, 'the persisters share the four partitions');
    const load = traffic(pop, oracle, { pauseMs: 20 });
    await sleep(1000);
    pg.stop();
    await eventually(async () => (await first.metric('scalify_persister_paused')) === 1
      && (await second.metric('scalify_persister_paused')) === 1, 15000, 'both persisters paused');
    // The second one leaves the group: the first gets its partitions while paused.
    await second.stop();
    secondStopped = true;
    await eventually(async () => {
      const s = firstStatus();
      return s?.partitions.length === 4 && s.paused;
    }, 30000, 'the paused persister holds all four partitions');
    // Records fetched before the pause (or in the instant of the rebalance) are dropped and
    // read again later; after that, a paused persister fetches nothing, the partitions the
    // rebalance gave it included (librdkafka's pause covers only the partitions assigned at
    // the time, so the persister pauses new ones as they come).
    await sleep(2000);
    const dropped = (await first.metric('scalify_persister_dropped_while_paused_total')) ?? 0;
    const ackedBefore = oracle.size;
    await sleep(4000);
    assert.ok(oracle.size > ackedBefore + 20, `sends kept being acked (${oracle.size - ackedBefore})`);
    assert.equal((await first.metric('scalify_persister_dropped_while_paused_total')) ?? 0, dropped,
      'the paused persister fetched records of partitions assigned while it was paused');
    pg.start();
    await eventually(async () => (await first.metric('scalify_persister_paused')) === 0, 30000, 'the persister resumed');
    await sleep(1000);
    await load.stop();
    await quiesceAndCheck(c, node.url, pop, oracle, [first]);
    assert.equal(first.child.exitCode, null, 'the same persister process resumed');
  } finally {
    closeAll(pop);
    await first.stop();
    if (!secondStopped) await second.stop();
    await node.stop(); node.cleanup(); await env.destroy();
  }
});

/**
 * Starts `scalify serve <args>` against a service that is not there, waits for its log to say
 * `marker` (it waits instead of exiting), sends SIGTERM and returns how it exited.
 */
async function waitsThenStops(args, env, marker) {
  const child = spawn(BIN, ['serve', ...args],
    { env: { ...process.env, SCALIFY_LOG: 'warn', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  try {
    await eventually(() => stderr.includes(marker), 30000, `the node logs "${marker}"`);
    assert.equal(child.exitCode, null, 'it waits instead of exiting');
  } finally {
    child.kill('SIGTERM');
  }
  const exit = await Promise.race([exited, sleep(10000).then(() => 'still running')]);
  if (exit === 'still running') child.kill('SIGKILL');
  return { exit, stderr };
}

test('a node started before Redis, PostgreSQL or its Kafka brokers waits for them, saying so, stops cleanly on SIGTERM meanwhile, and comes up when they do', async () => {
  const broker = await startBroker();
  const c = durableSettings(broker.brokers);
  await broker.kill();
  const dir = mkdtempSync(path.join(tmpdir(), 'scalify-e2e-'));
  let node;
  try {
    const env = { SCALIFY_TOKEN_SECRET: c.secret };
    const base = ['--listen', '127.0.0.1:0', '--data-dir', dir, '--redis-prefix', c.prefix, ...kafkaArgs(c)];
    const common = [...base, '--redis-url', c.redisUrl];
    // No Redis (nothing listens at that port): it waits, and SIGTERM stops it with status 0.
    const redisDown = await waitsThenStops(['--database-url', c.db.url, '--redis-url', `redis://127.0.0.1:${await freePort()}`, ...base], env, 'waiting for Redis');
    assert.deepEqual(redisDown.exit, { code: 0, signal: null }, `SIGTERM while waiting for Redis:\n${redisDown.stderr}`);
    // No PostgreSQL (nothing listens at that port): it waits, and SIGTERM stops it with status 0.
    const pgDown = await waitsThenStops(['--database-url', `postgres://postgres@127.0.0.1:${await freePort()}/x`, ...common], env, 'waiting for PostgreSQL');
    assert.deepEqual(pgDown.exit, { code: 0, signal: null }, `SIGTERM while waiting for PostgreSQL:\n${pgDown.stderr}`);
    // No broker: the same.
    const kafkaDown = await waitsThenStops(['--database-url', c.db.url, ...common], env, 'waiting for the Kafka brokers');
    assert.deepEqual(kafkaDown.exit, { code: 0, signal: null }, `SIGTERM while waiting for the brokers:\n${kafkaDown.stderr}`);

    // Started once more, and the broker comes up 3 s later: the node comes up with it and acks.
    const starting = startDurableNode(c);
    starting.catch(() => {});
    await sleep(3000);
    await broker.start();
    node = await starting;
    const alice = await register(node.url, 'kw');
    const s = await connect(node.url, alice.token);
    const room = uniqueRoom('kw');
    assert.equal((await call(s, 'join', { room })).ok, true);
    const m = await sendUntilAcked(s, room, 'after the broker came up', 'kw-1');
    assert.equal(m.seq, 1);
    s.close();
  } finally {
    if (node) { await node.stop(); node.cleanup(); }
    rmSync(dir, { recursive: true, force: true });
    c.drop();
    await broker.destroy();
  }
});

test('kill -9 the broker and restart it under traffic: producer and consumer recover, no acked message lost', () => drill({ broker: { storage: 'sqlite' } }, async ({ broker, c, node, pop, addPersister }) => {
  const persister = await addPersister();
  const oracle = new Map();
  const load = traffic(pop, oracle, { pauseMs: 10 });
  await eventually(() => oracle.size > 40, 30000, 'traffic flowing');
  await broker.kill('SIGKILL');
  await eventually(async () => (await readyz(node.url)).status === 503, 30000, 'readyz to name Kafka');
  const down = await readyz(node.url);
  assert.equal(down.body.checks.kafka.ok, false);
  // Longer than the ack timeout (3 s): sends in flight get error acks, and are confirmed —
  // and must still be broadcast — once the broker is back.
  await sleep(4000);
  await broker.start();
  await eventually(async () => (await readyz(node.url)).status === 200, 30000, 'readyz back');
  const ackedAfterRestart = oracle.size;
  await eventually(() => oracle.size > ackedAfterRestart + 40, 30000, 'sends acked again');
  await load.stop();
  await quiesceAndCheck(c, node.url, pop, oracle, [persister]);
  // The outage was felt: some messages waited over a second for the broker's confirmation.
  const metrics = await (await fetch(`${node.url}/metrics`)).text();
  const within1s = Number(metrics.match(/^scalify_kafka_produce_seconds_bucket\{le="1"\} (\S+)$/m)?.[1]);
  const all = Number(metrics.match(/^scalify_kafka_produce_seconds_count (\S+)$/m)?.[1]);
  assert.ok(all > within1s, `no produce waited through the outage (${within1s} of ${all} within 1 s)`);
  const late = Number(metrics.match(/^scalify_messages_accepted_total\{outcome="stored_late"\} (\S+)$/m)?.[1] ?? 0);
  assert.ok(late > 0, 'no message was confirmed after its sender stopped waiting: the late broadcast was not exercised');
}));

for (const [signal, how] of [['SIGKILL', 'killed (kill -9)'], ['SIGTERM', 'stopped (SIGTERM)']]) {
  test(`a node ${how} while the broker is away: the sends it never confirmed succeed when retried through another node, stored once, no gap`, () => drill({ broker: { storage: 'sqlite' }, users: 0 }, async ({ broker, c, node, addPersister }) => {
    const other = await startDurableNode(c);
    try {
      await addPersister();
      const alice = await register(node.url, 'kn');
      const room = uniqueRoom('kn');
      const first = await connect(node.url, alice.token);
      assert.equal((await call(first, 'join', { room })).ok, true);
      const oracle = new Map([['before', await sendUntilAcked(first, room, 'before', 'before')]]);
      await broker.kill('SIGKILL');
      // Each gets a seq, then waits for the broker past the ack timeout (3 s): an error ack.
      const ids = ['k1', 'k2', 'k3'];
      const acks = await Promise.all(ids.map((id) => call(first, 'send', { room, text: `text ${id}`, client_id: id })));
      for (const ack of acks) assert.equal(ack.ok, false, JSON.stringify(ack));
      first.close();
      await node.stop(signal);
      await broker.start();
      const retried = Date.now();
      const second = await connect(other.url, alice.token);
      for (const id of ids) {
        const m = await sendUntilAcked(second, room, `text ${id}`, id, { deadline: Date.now() + 30000 });
        assert.ok(m, `the retry of ${id} through the other node was never acked`);
        assert.equal(m.text, `text ${id}`);
        oracle.set(id, m);
      }
      assert.ok(Date.now() - retried < 30000);
      assert.deepEqual([...oracle.values()].map((m) => m.seq).sort((x, y) => x - y), [1, 2, 3, 4], 'the retries keep the seqs given before the stop');
      // A new send comes next, with no hole before it.
      const next = await sendUntilAcked(second, room, 'after', 'after');
      assert.equal(next.seq, 5);
      oracle.set('after', next);
      await eventually(() => storedMessages(c.db.url).length >= oracle.size, 30000, 'all stored');
      checkStore(storedMessages(c.db.url), oracle, assert);
      const history = (await api(other.url, 'GET', `/api/rooms/${room}/messages`, undefined, alice.token)).body.messages;
      const bySeq = [...oracle.values()].sort((x, y) => x.seq - y.seq);
      assert.deepEqual(history.map((m) => [m.seq, m.id]), bySeq.map((m) => [m.seq, m.id]));
      second.close();
    } finally {
      await other.stop(); other.cleanup();
    }
  }));
}

test('the persister\'s broker connections go silent (no data, no reset): the watchdog re-creates its clients, nothing lost or doubled', () => drill({ broker: { relayed: true } }, async ({ broker, c, node, pop, addPersister }) => {
  // librdkafka gives up on a silent connection after socket.timeout.ms (60 s by default). Set
  // beyond the drill's deadlines, only the watchdog can bring the persister back in time.
  const p = await addPersister(['--kafka-option', 'socket.timeout.ms=300000'], { stuckSecs: 5 });
  const oracle = new Map();
  const load = traffic(pop, oracle, { pauseMs: 2 });
  await eventually(async () => (await p.metric('scalify_persister_rows_total')) > 50, 30000, 'the persister writing');
  // The watchdog asks the broker every 3 s: by now its own connections exist, and go silent too.
  await sleep(4000);
  assert.ok(broker.silence(p.child.pid) > 0, 'the persister had broker connections to silence');
  const silencedAt = await p.metric('scalify_persister_rows_total');
  await sleep(3000);
  await load.stop();
  await eventually(async () => (await p.metric('scalify_persister_watchdog_restarts_total')) >= 1, 30000,
    'the watchdog re-creating the consumer');
  await quiesceAndCheck(c, node.url, pop, oracle, [p]);
  assert.ok(await p.metric('scalify_persister_rows_total') > silencedAt, 'the persister wrote again after the silence');
  // Recovered for good: more traffic goes through without the watchdog firing again (it
  // would, every few seconds, if it still asked the broker through its own silenced client).
  const restarts = await p.metric('scalify_persister_watchdog_restarts_total');
  const more = traffic(pop, oracle, { pauseMs: 2 });
  await sleep(10000);
  await more.stop();
  await quiesceAndCheck(c, node.url, pop, oracle, [p]);
  assert.equal(await p.metric('scalify_persister_watchdog_restarts_total'), restarts, 'the watchdog fired again after the recovery');
}));

test('a persister stopped while its broker connections are silent exits cleanly within 20 s', () => drill({ broker: { relayed: true }, users: 0 }, async ({ broker, c, addPersister }) => {
  // Nothing may wait for the broker's answer to the last commit and the leave of the group
  // for as long as the session timeout (raised here, as an operator may) or librdkafka's
  // socket timeout.
  const p = await addPersister(['--kafka-option', 'session.timeout.ms=45000', '--kafka-option', 'socket.timeout.ms=300000']);
  await eventually(() => /"partitions":\[\d/.test(redisCli(c.redisUrl, 'HVALS', `${c.prefix}:{persisters}`)), 30000, 'partitions assigned');
  await sleep(4000); // the watchdog's own client has asked the broker by now
  assert.ok(broker.silence(p.child.pid) > 0, 'the persister had broker connections to silence');
  const started = Date.now();
  const exit = await Promise.race([p.stop(), sleep(25000).then(() => 'still running')]);
  assert.deepEqual(exit, { code: 0, signal: null }, `SIGTERM with a silent broker: not a clean exit within 25 s (${p.stderr().slice(-2000)})`);
  assert.ok(Date.now() - started < 20000);
}));

test('the node\'s broker connections go silent (no data, no reset): its producer recovers, every acked message stored once', () => drill({ broker: { relayed: true } }, async ({ broker, c, node, pop, addPersister }) => {
  const p = await addPersister();
  const oracle = new Map();
  const load = traffic(pop, oracle, { pauseMs: 5 });
  await eventually(() => oracle.size > 50, 30000, 'sends acked');
  assert.ok(broker.silence(node.child.pid) > 0, 'the node had broker connections to silence');
  const silencedAt = oracle.size;
  // Sends meanwhile get error acks ("retry with the same client_id") and are retried.
  await eventually(() => oracle.size > silencedAt + 50, 60000, 'sends acked again after the silence');
  await load.stop();
  await quiesceAndCheck(c, node.url, pop, oracle, [p]);
}));

test('two persisters share the partitions; one leaves and another joins under traffic: nothing lost or doubled', () => drill({ partitions: 4, rooms: 6 }, async ({ c, node, pop, addPersister }) => {
  const p1 = await addPersister();
  const p2 = await addPersister();
  const statuses = () => redisCli(c.redisUrl, 'HVALS', `${c.prefix}:{persisters}`).split('\n').filter(Boolean).map((s) => JSON.parse(s));
  await eventually(() => {
    const s = statuses();
    return s.length === 2 && s.every((x) => x.partitions.length > 0)
      && s.reduce((n, x) => n + x.partitions.length, 0) === 4;
  }, 30000, 'both persisters assigned a share of the 4 partitions');
  const oracle = new Map();
  const load = traffic(pop, oracle, { pauseMs: 2 });
  await sleep(2000);
  await p2.stop('SIGTERM');
  await sleep(2000);
  const p3 = await addPersister();
  await sleep(3000);
  await load.stop();
  await quiesceAndCheck(c, node.url, pop, oracle);
  const written = (await p1.metric('scalify_persister_rows_total')) + (await p3.metric('scalify_persister_rows_total'));
  assert.ok(written > 0);
}));

test('durable mode: edits, deletions, reactions and replies go through Kafka; the log reads whole before the persister, history bundles after it, and the deleted text leaves PostgreSQL', () => drill({ users: 0 }, async ({ c, node, addPersister }) => {
  const { replay, bundled } = await import('./changes.js');
  const [ann, bob] = [await register(node.url, 'ka'), await register(node.url, 'kb')];
  const [sa, sb] = [await connect(node.url, ann.token), await connect(node.url, bob.token)];
  const room = uniqueRoom('kchg');
  await call(sa, 'join', { room });
  await call(sb, 'join', { room });
  const live = collect(sb, 'message');
  const m1 = (await call(sa, 'send', { room, text: 'first, with a typo', client_id: 'm1' })).message;
  const m2 = (await call(sa, 'send', { room, text: 'durable-secret-9313', client_id: 'm2' })).message;
  // Their targets are only in the recent window: no persister runs yet.
  const acks = [
    await call(sb, 'react', { room, id: m1.id, emoji: '👍', client_id: 'r1' }),
    await call(sa, 'edit', { room, id: m1.id, text: 'first, fixed', client_id: 'e1' }),
    await call(sb, 'send', { room, text: 'reply', client_id: 'b1', reply_to: m1.id }),
    await call(sa, 'edit', { room, id: m2.id, text: 'durable-secret-9313 again', client_id: 'e2' }),
    await call(sa, 'delete', { room, id: m2.id, client_id: 'd1' }),
  ];
  for (const a of acks) assert.equal(a.ok, true, JSON.stringify(a));
  const forbidden = await call(sb, 'edit', { room, id: m1.id, text: 'bob edits', client_id: 'x' });
  assert.deepEqual([forbidden.ok, forbidden.error.code], [false, 'forbidden']);
  await live.waitFor(7);
  assert.equal(storedMessages(c.db.url).length, 0);
  const early = await call(sb, 'history', { room });
  assert.deepEqual(early.messages.map((m) => m.kind), ['message', 'message', 'reaction', 'edit', 'message', 'edit', 'delete']);
  const synced = await call(sb, 'sync', { rooms: { [room]: 0 } });
  const expected = replay(synced.rooms[room].messages, bob.user.id);
  assert.deepEqual(expected.map((m) => [m.text, m.deleted]), [['first, fixed', false], ['', true], ['reply', false]]);

  await addPersister();
  await eventually(() => storedMessages(c.db.url).length === 7, 30000, '7 rows');
  const h = await call(sb, 'history', { room });
  assert.deepEqual(bundled(h.messages), expected);
  assert.equal(h.messages[4].reply_to.text, 'first, fixed');
  const out = execFileSync('psql', [c.db.url, '-qtAc', "SELECT count(*) FROM messages WHERE text LIKE '%durable-secret-9313%'"], { encoding: 'utf8' });
  assert.equal(out.trim(), '0', 'the deleted text is still in PostgreSQL');
  // Search reads what the persister wrote: the edited text, not the deleted one.
  const found = async (q) => (await api(node.url, 'GET', `/api/search?${new URLSearchParams({ q, room })}`, undefined, bob.token)).body.results.map((x) => x.message.id);
  assert.deepEqual(await found('fixed'), [m1.id]);
  assert.deepEqual(await found('typo'), []);
  assert.deepEqual(await found('durable secret 9313'), []);
  sa.close(); sb.close();
}));

test('durable mode: a message carries its file through Kafka; readable with it before the persister, stored with it after; a deletion erases it in PostgreSQL and deletes the file', () => drill({ users: 0 }, async ({ c, node, addPersister }) => {
  const { rgbPng } = await import('./png.js');
  const [ann, bob] = [await register(node.url, 'fa'), await register(node.url, 'fb')];
  const [sa, sb] = [await connect(node.url, ann.token), await connect(node.url, bob.token, { transports: ['polling'] })];
  const room = uniqueRoom('kfile');
  await call(sa, 'join', { room });
  await call(sb, 'join', { room });
  const upload = async (name, body) => {
    const res = await fetch(`${node.url}/api/rooms/${room}/uploads?name=${name}`, {
      method: 'POST', headers: { authorization: `Bearer ${ann.token}` }, body,
    });
    assert.equal(res.status, 201);
    return (await res.json()).upload;
  };
  const pic = await upload('cat.png', rgbPng(50, 40));
  const doc = await upload('notes.txt', 'some notes');
  const m1 = await call(sa, 'send', { room, attachment: pic.id, client_id: 'f1' });
  const m2 = await call(sa, 'send', { room, text: 'notes', attachment: doc.id, client_id: 'f2' });
  for (const a of [m1, m2]) assert.equal(a.ok, true, JSON.stringify(a));
  // A retry through the ledger returns the same message, file and all.
  assert.deepEqual((await call(sa, 'send', { room, attachment: pic.id, client_id: 'f1' })).message, m1.message);
  const early = await call(sb, 'history', { room });
  assert.deepEqual(early.messages.map((m) => m.attachment), [pic, doc]);

  const deleted = await call(sa, 'delete', { room, id: m2.message.id, client_id: 'd1' });
  assert.equal(deleted.ok, true, JSON.stringify(deleted));
  const gone = await fetch(`${node.url}/api/rooms/${room}/uploads/${doc.id}`, { headers: { authorization: `Bearer ${bob.token}` } });
  assert.equal(gone.status, 404);
  await addPersister();
  await eventually(() => storedMessages(c.db.url).length === 3, 30000, '3 rows');
  const rows = execFileSync('psql', [c.db.url, '-qtAc', 'SELECT seq, attachment IS NOT NULL, deleted_at IS NOT NULL FROM messages ORDER BY seq'], { encoding: 'utf8' });
  assert.deepEqual(rows.trim().split('\n'), ['1|t|f', '2|f|t', '3|f|f']);
  const after = await call(sb, 'history', { room });
  assert.deepEqual(after.messages[0].attachment, pic);
  assert.equal(after.messages[1].attachment, undefined);
  const kept = await fetch(`${node.url}/api/rooms/${room}/uploads/${pic.id}`, { headers: { authorization: `Bearer ${bob.token}` } });
  assert.equal(kept.status, 200);
  sa.close(); sb.close();
}));
