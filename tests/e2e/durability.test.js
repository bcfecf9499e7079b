// Durability: an ack means committed. Oracles of acked client_ids are compared with the store
// after a crash (kill -9) and after a graceful shutdown (SIGTERM).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { startServer, api, register, connect, sleep, uniqueRoom, allMessages, eventually } from './harness.js';

/**
 * Starts `senders` sockets sending continuously; resolves with the oracle when stopped: the
 * client ids acked, refused (with their codes) and left unanswered (the connection closed, or
 * no answer within 15 s).
 */
async function traffic(url, user, room, senders, opts = {}) {
  const acked = new Set();
  const refused = new Map();
  const unanswered = new Set();
  let running = true;
  const sockets = await Promise.all(Array.from({ length: senders }, () => connect(url, user.token, opts)));
  for (const s of sockets) {
    const joined = await s.timeout(15000).emitWithAck('join', { room });
    if (!joined.ok) throw new Error(`join: ${JSON.stringify(joined)}`);
  }
  const loops = sockets.map((s, k) => (async () => {
    for (let i = 0; running && s.connected; i++) {
      // Several sends in flight per socket, so a stop always lands mid-batch.
      const burst = [0, 1, 2, 3].map((j) => {
        const id = `s${k}-${i}-${j}`;
        return s.timeout(15000).emitWithAck('send', { room, text: 'payload', client_id: id })
          .then((r) => (r.ok ? acked.add(id) : refused.set(id, r.error.code)), () => unanswered.add(id));
      });
      await Promise.all(burst);
    }
  })());
  return {
    acked, refused, unanswered,
    async stop() { running = false; await Promise.all(loops); sockets.forEach((s) => s.close()); },
  };
}

/**
 * The shutdown contract (docs/protocol.md, "Shutdown"): every send ends acked (stored), refused
 * with `internal` (not stored) or unanswered; an unanswered one is resent with its client_id
 * after the restart, and then every acked or resent send is stored exactly once.
 */
async function assertShutdownContract(server, user, room, t, stored) {
  const ids = stored.map((m) => m.client_id);
  assert.deepEqual([...t.acked].filter((id) => !ids.includes(id)), [], 'acked but not stored');
  assert.deepEqual([...t.refused.keys()].filter((id) => ids.includes(id)), [], 'refused but stored');
  assert.ok([...t.refused.values()].every((c) => c === 'internal'), `unexpected errors: ${[...t.refused.values()]}`);
  const storedUnanswered = ids.filter((id) => !t.acked.has(id));
  assert.deepEqual(storedUnanswered.filter((id) => !t.unanswered.has(id)), [], 'stored but neither acked nor left unanswered');
  const s = await connect(server.url, user.token);
  try {
    for (const id of t.unanswered) {
      const r = await s.timeout(15000).emitWithAck('send', { room, text: 'payload', client_id: id });
      assert.equal(r.ok, true, `resend of ${id}: ${JSON.stringify(r)}`);
    }
  } finally { s.close(); }
  const after = (await allMessages(server.url, user.token, room)).map((m) => m.client_id);
  assert.equal(new Set(after).size, after.length, 'stored once');
  assert.deepEqual([...after].sort(), [...t.acked, ...t.unanswered].sort(), 'store = acked + resent');
  return { storedUnanswered: storedUnanswered.length };
}

/**
 * Starts a node, runs traffic into a fresh room until `minAcked` sends are acked, stops the node
 * with `signal` mid-traffic, and restarts it on the same data. Returns the restarted node, the
 * oracle of acked client_ids, the errors seen and the stopped node's exit. `opts` are the
 * clients' options (their transports).
 */
async function stopUnderTraffic(signal, minAcked, opts = {}) {
  const first = await startServer({ args: ['--rate-limit-per-sec', '0'] });
  const user = await register(first.url);
  const room = uniqueRoom(signal.toLowerCase());
  await api(first.url, 'POST', '/api/rooms', { name: room, kind: 'public' }, user.token);
  const t = await traffic(first.url, user, room, 4, opts);
  await eventually(() => t.acked.size >= minAcked, 60000, `${minAcked} acks`);
  first.child.kill(signal);
  const exit = await first.exited;
  const wal = path.join(first.dir, 'scalify.db-wal');
  const walBytes = existsSync(wal) ? statSync(wal).size : 0;
  await t.stop();
  const server = await startServer({ dataDir: first.dir });
  const stored = await allMessages(server.url, user.token, room);
  return { server, user, room, stored, t, exit, walBytes, stderr: first.stderr() };
}

test('kill -9 after acks: every acked message is in history after restart, none twice, seq gap-free', async () => {
  const { server, stored, t: { acked } } = await stopUnderTraffic('SIGKILL', 300);
  try {
    const ids = stored.map((m) => m.client_id);
    assert.equal(new Set(ids).size, ids.length, 'no duplicates');
    assert.deepEqual(stored.map((m) => m.seq), stored.map((_, i) => i + 1), 'seq gap-free from 1');
    const missing = [...acked].filter((id) => !ids.includes(id));
    assert.deepEqual(missing, [], 'acked messages lost in the crash');
  } finally { await server.stop(); server.cleanup(); }
});

// Over WebSocket, and over long-polling, where a client takes what is queued for it with a
// request of its own: the server keeps serving it until it has taken its last acks and answered
// a ping behind them, and only then sends the close packet.
for (const [transport, opts] of [['WebSocket', { transports: ['websocket'] }], ['long-polling', { transports: ['polling'] }]]) {
  test(`SIGTERM mid-traffic over ${transport}: exit code 0; every send acked (stored), refused (not stored) or unanswered, and a resend of the unanswered ones stores each acked or resent send once`, async () => {
    const { server, user, room, stored, t, exit, stderr } = await stopUnderTraffic('SIGTERM', 200, opts);
    try {
      assert.equal(exit.code, 0, `graceful shutdown exits 0:\n${stderr}`);
      assert.deepEqual(stored.map((m) => m.seq), stored.map((_, i) => i + 1), 'seq gap-free from 1');
      const { storedUnanswered } = await assertShutdownContract(server, user, room, t, stored);
      console.log(`# ${transport}: ${t.acked.size} acked, ${t.refused.size} refused, ${t.unanswered.size} unanswered (${storedUnanswered} of them stored before the resend)`);
    } finally { await server.stop(); server.cleanup(); }
  });
}

test('SIGTERM after the clients left: the store is closed, its WAL checkpointed into the database', async () => {
  const server = await startServer();
  try {
    const u = await register(server.url);
    const s = await connect(server.url, u.token);
    const room = uniqueRoom('wal');
    assert.equal((await s.timeout(15000).emitWithAck('join', { room })).ok, true);
    for (let i = 0; i < 20; i++) await s.timeout(15000).emitWithAck('send', { room, text: 'x', client_id: `w${i}` });
    s.close();
    const wal = path.join(server.dir, 'scalify.db-wal');
    assert.ok(statSync(wal).size > 0, 'the messages are in the WAL while running');
    const exit = await server.stop('SIGTERM');
    assert.equal(exit.code, 0);
    // Checkpointed into the database: the WAL is empty, or gone (SQLite removes it when the
    // last connection closes cleanly).
    const left = existsSync(wal) ? statSync(wal).size : 0;
    assert.equal(left, 0, `WAL checkpointed: the service let go of the store at exit\n${server.stderr()}`);
  } finally { server.cleanup(); }
});

test('SIGTERM while a long-polling session has not taken its last packets: the node serves it and refuses new sessions meanwhile; the close packet comes only after the client answered a ping queued behind its last packets', async () => {
  const node = await startServer();
  const user = await register(node.url);
  const base = `${node.url}/socket.io/?EIO=4&transport=polling`;
  const handshake = await (await fetch(base)).text();
  const sid = JSON.parse(handshake.slice(1)).sid;
  const session = `${base}&sid=${sid}`;
  const posted = await fetch(session, { method: 'POST', body: `40${JSON.stringify({ token: user.token })}` });
  assert.equal(posted.status, 200);
  // Connected (its CONNECT answer is queued), and this client does not poll.
  await eventually(async () => /scalify_connections\{transport="polling"\} 1\b/.test(await (await fetch(`${node.url}/metrics`)).text()), 30000, 'the connection');
  node.child.kill('SIGTERM');
  await eventually(async () => (await fetch(`${node.url}/readyz`)).status === 503, 30000, '/readyz 503');
  assert.equal(node.child.exitCode, null, 'still running while a session has packets queued');
  const ready = await fetch(`${node.url}/readyz`);
  assert.deepEqual((await ready.json()).checks.node, { ok: false, error: 'shutting down' });
  // A new session is refused at the HTTP level (socket.io-client reconnects, with its backoff);
  // a refusal in the Socket.IO handshake would leave a client disconnected for good.
  const refused = await fetch(base);
  assert.equal(refused.status, 503);
  assert.equal((await refused.json()).error.code, 'internal');
  // The open session takes its last packets, then a ping behind them (the heartbeat may have
  // pinged before them too).
  const seen = [];
  const connected = () => seen.findIndex((p) => p.startsWith('40{'));
  while (connected() < 0 || seen.lastIndexOf('2') < connected()) {
    const got = (await (await fetch(session)).text()).split('\x1e');
    assert.ok(!got.includes('1'), `no close packet before the pings are answered: ${seen}, ${got}`);
    seen.push(...got);
  }
  // Unanswered, the pings hold the close back; the answers let it go, in a later response.
  let closing;
  const poll = fetch(session).then(async (r) => { closing = (await r.text()).split('\x1e'); });
  await sleep(1000);
  assert.equal(closing, undefined, 'no close packet while a ping is unanswered');
  const pongs = seen.filter((p) => p === '2').map(() => '3').join('\x1e');
  assert.equal((await fetch(session, { method: 'POST', body: pongs })).status, 200);
  await poll;
  assert.deepEqual(closing, ['1']);
  const exit = await node.exited;
  assert.equal(exit.code, 0);
  node.cleanup();
});
