// Durability: an ack means committed. Oracles of acked client_ids are compared with the store
// after a crash (kill -9) and after a graceful shutdown (SIGTERM).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, api, register, connect, sleep, uniqueRoom } from './harness.js';

/** Every message of a room, paging history back to seq 1. */
async function allMessages(url, token, room) {
  const out = [];
  let before;
  for (;;) {
    const q = before ? `?limit=100&before_seq=${before}` : '?limit=100';
    const r = await api(url, 'GET', `/api/rooms/${room}/messages${q}`, undefined, token);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    out.unshift(...r.body.messages);
    if (!r.body.has_more) return out;
    before = r.body.messages[0].seq;
  }
}

/** Starts `senders` sockets sending continuously; resolves with the oracle when stopped. */
async function traffic(url, user, room, senders) {
  const acked = new Set();
  const failed = [];
  let sent = 0;
  let running = true;
  const sockets = await Promise.all(Array.from({ length: senders }, () => connect(url, user.token)));
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

test('kill -9 after acks: every acked message is in history after restart, none twice, seq gap-free', async () => {
  let server = await startServer({ args: ['--rate-limit-per-sec', '0'] });
  const user = await register(server.url);
  const room = uniqueRoom('crash');
  await api(server.url, 'POST', '/api/rooms', { name: room, kind: 'public' }, user.token);
  const t = await traffic(server.url, user, room, 4);
  while (t.acked.size < 300) await sleep(20);
  server.child.kill('SIGKILL');
  await server.exited;
  await t.stop();
  const acked = new Set(t.acked);
  assert.ok(acked.size >= 300);

  server = await startServer({ dataDir: server.dir });
  try {
    const stored = await allMessages(server.url, user.token, room);
    const ids = stored.map((m) => m.client_id);
    assert.equal(new Set(ids).size, ids.length, 'no duplicates');
    assert.deepEqual(stored.map((m) => m.seq), stored.map((_, i) => i + 1), 'seq gap-free from 1');
    const missing = [...acked].filter((id) => !ids.includes(id));
    assert.deepEqual(missing, [], 'acked messages lost in the crash');
  } finally { await server.stop(); server.cleanup(); }
});

test('SIGTERM mid-traffic: in-flight sends finish and are acked, exit code 0, store equals the acks', async () => {
  let server = await startServer({ args: ['--rate-limit-per-sec', '0'] });
  const user = await register(server.url);
  const room = uniqueRoom('term');
  await api(server.url, 'POST', '/api/rooms', { name: room, kind: 'public' }, user.token);
  const t = await traffic(server.url, user, room, 4);
  while (t.acked.size < 200) await sleep(20);
  server.child.kill('SIGTERM');
  const { code } = await server.exited;
  await t.stop();
  assert.equal(code, 0, `graceful shutdown exits 0:\n${server.stderr()}`);

  server = await startServer({ dataDir: server.dir });
  try {
    const stored = (await allMessages(server.url, user.token, room)).map((m) => m.client_id);
    const acked = [...t.acked].sort();
    // Committed ⇔ acked: no acked message is lost, and no committed message lost its ack.
    assert.deepEqual([...stored].sort(), acked);
    assert.ok(t.failed.every((c) => c === 'internal'), `unexpected errors: ${t.failed}`);
  } finally { await server.stop(); server.cleanup(); }
});
