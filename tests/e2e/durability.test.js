// Durability: an ack means committed. Oracles of acked client_ids are compared with the store
// after a crash (kill -9) and after a graceful shutdown (SIGTERM).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { startServer, api, register, connect, sleep, uniqueRoom, allMessages } from './harness.js';

/** Starts `senders` sockets sending continuously; resolves with the oracle when stopped. */
async function traffic(url, user, room, senders, opts = {}) {
  const acked = new Set();
  const failed = [];
  let sent = 0;
  let running = true;
  const sockets = await Promise.all(Array.from({ length: senders }, () => connect(url, user.token, opts)));
  for (const s of sockets) s.emit('join', { room });
  await sleep(200);
  const loops = sockets.map((s, k) => (async () => {
    for (let i = 0; running && s.connected; i++) {
      const client_id = `s${k}-${i}`;
      sent++;
      // Several sends in flight per socket, so a stop always lands mid-batch.
      const burst = [0, 1, 2, 3].map((j) => s.timeout(3000).emitWithAck('send', { room, text: 'payload', client_id: `${client_id}-${j}` })
        .then((r) => (r.ok ? acked.add(`${client_id}-${j}`) : failed.push(r.error.code)), () => {}));
      await Promise.all(burst);
    }
  })());
  return {
    acked, failed,
    get sent() { return sent; },
    async stop() { running = false; await Promise.all(loops); sockets.forEach((s) => s.close()); },
  };
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
  while (t.acked.size < minAcked) await sleep(20);
  first.child.kill(signal);
  const exit = await first.exited;
  const wal = path.join(first.dir, 'scalify.db-wal');
  const walBytes = existsSync(wal) ? statSync(wal).size : 0;
  await t.stop();
  const server = await startServer({ dataDir: first.dir });
  const stored = await allMessages(server.url, user.token, room);
  return { server, stored, acked: new Set(t.acked), failed: t.failed, exit, walBytes, stderr: first.stderr() };
}

test('kill -9 after acks: every acked message is in history after restart, none twice, seq gap-free', async () => {
  const { server, stored, acked } = await stopUnderTraffic('SIGKILL', 300);
  try {
    const ids = stored.map((m) => m.client_id);
    assert.equal(new Set(ids).size, ids.length, 'no duplicates');
    assert.deepEqual(stored.map((m) => m.seq), stored.map((_, i) => i + 1), 'seq gap-free from 1');
    const missing = [...acked].filter((id) => !ids.includes(id));
    assert.deepEqual(missing, [], 'acked messages lost in the crash');
  } finally { await server.stop(); server.cleanup(); }
});

// Over WebSocket, and over long-polling, where a client takes what is queued for it with a
// request of its own: the server keeps serving it until it has taken its last acks, and sends
// the close packet in a later response (socket.io-client drops an ack that arrives with it).
for (const [transport, opts] of [['WebSocket', { transports: ['websocket'] }], ['long-polling', { transports: ['polling'] }]]) {
  test(`SIGTERM mid-traffic over ${transport}: in-flight sends finish and are acked, exit code 0, store equals the acks`, async () => {
    const { server, stored, acked, failed, exit, stderr } = await stopUnderTraffic('SIGTERM', 200, opts);
    try {
      assert.equal(exit.code, 0, `graceful shutdown exits 0:\n${stderr}`);
      // Committed ⇔ acked: no acked message is lost, and no committed message lost its ack.
      const ids = stored.map((m) => m.client_id);
      assert.deepEqual(ids.filter((id) => !acked.has(id)), [], 'stored but never acked');
      assert.deepEqual([...acked].filter((id) => !ids.includes(id)), [], 'acked but not stored');
      assert.equal(ids.length, acked.size);
      assert.deepEqual(stored.map((m) => m.seq), stored.map((_, i) => i + 1), 'seq gap-free from 1');
      assert.ok(failed.every((c) => c === 'internal'), `unexpected errors: ${failed}`);
    } finally { await server.stop(); server.cleanup(); }
  });
}

test('SIGTERM after the clients left: the store is closed, its WAL checkpointed into the database', async () => {
  const server = await startServer();
  try {
    const u = await register(server.url);
    const s = await connect(server.url, u.token);
    const room = uniqueRoom('wal');
    s.emit('join', { room });
    await sleep(100);
    for (let i = 0; i < 20; i++) await s.timeout(3000).emitWithAck('send', { room, text: 'x', client_id: `w${i}` });
    s.close();
    await sleep(200);
    const wal = path.join(server.dir, 'scalify.db-wal');
    assert.ok(statSync(wal).size > 0, 'the messages are in the WAL while running');
    const exit = await server.stop('SIGTERM');
    assert.equal(exit.code, 0);
    assert.equal(statSync(wal).size, 0, 'WAL truncated: the service let go of the store at exit');
  } finally { server.cleanup(); }
});

test('SIGTERM while a long-polling session has not taken its last packets: the node serves it (at most the grace) and refuses new sessions meanwhile; the close packet comes in a later response', async () => {
  const node = await startServer();
  const user = await register(node.url);
  const base = `${node.url}/socket.io/?EIO=4&transport=polling`;
  const handshake = await (await fetch(base)).text();
  const sid = JSON.parse(handshake.slice(1)).sid;
  const session = `${base}&sid=${sid}`;
  const posted = await fetch(session, { method: 'POST', body: `40${JSON.stringify({ token: user.token })}` });
  assert.equal(posted.status, 200);
  await sleep(200); // the Socket.IO CONNECT answer is now queued, and this client does not poll
  node.child.kill('SIGTERM');
  await sleep(300);
  assert.equal(node.child.exitCode, null, 'still running while a session has packets queued');
  const ready = await fetch(`${node.url}/readyz`);
  assert.equal(ready.status, 503);
  assert.deepEqual((await ready.json()).checks.node, { ok: false, error: 'shutting down' });
  // A new session is refused at the HTTP level (socket.io-client reconnects, with its backoff);
  // a refusal in the Socket.IO handshake would leave a client disconnected for good.
  const refused = await fetch(base);
  assert.equal(refused.status, 503);
  assert.equal((await refused.json()).error.code, 'internal');
  // The open session takes its last packets, then, in a later response, the close packet.
  const last = (await (await fetch(session)).text()).split('\x1e');
  assert.ok(last.some((p) => p.startsWith('40{')), `the CONNECT answer: ${last}`);
  assert.ok(!last.includes('1'), `no close packet with the last packets: ${last}`);
  const closing = (await (await fetch(session)).text()).split('\x1e');
  assert.deepEqual(closing, ['1']);
  const exit = await node.exited;
  assert.equal(exit.code, 0);
  node.cleanup();
});
