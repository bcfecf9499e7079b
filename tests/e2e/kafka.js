// Helpers for the durable pipeline's tests: a private Kafka-compatible broker (tansu) per
// drill, durable nodes and standalone persisters of one cluster, and the store-vs-oracle
// checks every drill ends with.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, readdirSync, readlinkSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { tmpdir, homedir } from 'node:os';
import path from 'node:path';
import { launch, sleep, call } from './harness.js';
import { clusterSettings, freePort, startNode } from './cluster.js';

export const TANSU = process.env.TANSU_BIN
  || [path.join(homedir(), '.cargo/bin/tansu'), '/usr/local/bin/tansu'].find((p) => existsSync(p))
  || 'tansu';

function portOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/** The local ports of the TCP connections process `pid` has open (from /proc). */
function localPortsOf(pid) {
  const inodes = new Set();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
      if (m) inodes.add(m[1]);
    } catch { /* closed meanwhile */ }
  }
  const ports = new Set();
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 9 && inodes.has(f[9])) ports.add(parseInt(f[1].split(':')[1], 16));
  }
  return ports;
}

/**
 * A TCP relay on `port` in front of the broker on `target`. `silence(pid)` makes every
 * connection process `pid` has through it go quiet both ways — no data, no FIN, no RST — as
 * a frozen broker host or a middlebox that dropped its state would; connections opened
 * afterwards work.
 */
async function startRelay(port, target) {
  const pairs = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => { pairs.delete(pair); client.destroy(); upstream.destroy(); };
    for (const s of [client, upstream]) { s.on('error', end); s.on('close', end); }
  });
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(port, '127.0.0.1', resolve); });
  return {
    silence(pid) {
      const ports = localPortsOf(pid);
      let n = 0;
      for (const { client, upstream } of pairs) {
        if (!ports.has(client.remotePort)) continue;
        client.unpipe(upstream); upstream.unpipe(client);
        client.pause(); upstream.pause();
        n++;
      }
      return n;
    },
    close() { server.close(); for (const { client, upstream } of pairs) { client.destroy(); upstream.destroy(); } },
  };
}

/**
 * A private broker on a free port. `storage: 'sqlite'` keeps data across a kill -9 (for
 * restart drills); `'memory'` is faster and forgets. `relayed: true` puts a relay in front of
 * it (the broker advertises the relay), whose `silence(pid)` the broker handle exposes.
 */
export async function startBroker({ storage = 'memory', relayed = false } = {}) {
  const port = await freePort();
  let relayPort = port;
  while (relayed && relayPort === port) relayPort = await freePort();
  const relay = relayed ? await startRelay(relayPort, port) : null;
  const dir = mkdtempSync(path.join(tmpdir(), 'scalify-tansu-'));
  const engine = storage === 'sqlite' ? 'sqlite://tansu.db' : 'memory://tansu/';
  let child;
  let log = '';
  const up = async () => {
    child = spawn(TANSU, ['broker',
      '--listener-url', `tcp://127.0.0.1:${port}`,
      '--advertised-listener-url', `tcp://127.0.0.1:${relayPort}`,
      '--storage-engine', engine], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
    child.stdout.on('data', (d) => { log = (log + d).slice(-20000); });
    child.stderr.on('data', (d) => { log = (log + d).slice(-20000); });
    for (let i = 0; i < 200; i++) {
      if (await portOpen(port)) return;
      if (child.exitCode !== null) throw new Error(`tansu exited ${child.exitCode}:\n${log}`);
      await sleep(50);
    }
    throw new Error(`tansu did not listen:\n${log}`);
  };
  await up();
  return {
    brokers: `127.0.0.1:${relayPort}`,
    silence: (pid) => relay.silence(pid),
    log: () => log,
    start: up,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await exited;
    },
    async destroy() {
      await this.kill();
      relay?.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Settings of one durable cluster: fresh database, key prefix, topic and consumer group. */
export function durableSettings(brokers, { redisUrl, partitions = 3 } = {}) {
  const c = clusterSettings(redisUrl ? { redisUrl } : {});
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  return { ...c, brokers, topic: `e2e-${tag}`, group: `e2e-${tag}`, partitions };
}

export function kafkaArgs(c) {
  // Persisters write with the default two writers: the drills also cover batches of
  // different partitions written at once, and a write failing while another is in flight.
  // A drill may pass `--persister-writers 1` to a persister of its own.
  return ['--kafka-brokers', c.brokers, '--kafka-topic', c.topic, '--kafka-group', c.group,
    '--kafka-partitions', String(c.partitions), '--persister-batch-ms', '10'];
}

export function startDurableNode(c, extra = [], env = {}) {
  return startNode(c, [...kafkaArgs(c), '--kafka-ack-timeout-ms', '3000', ...extra], env);
}

/**
 * `scalify persister` alone; resolves once it runs (within `startMs`). `stuckSecs`: its
 * watchdog's patience.
 */
export async function startPersister(c, extra = [], { stuckSecs = 10, startMs = 20000 } = {}) {
  const p = await launch(['persister', '--listen', '127.0.0.1:0',
    '--database-url', c.db.url, '--redis-url', c.redisUrl, '--redis-prefix', c.prefix,
    ...kafkaArgs(c), '--persister-stuck-secs', String(stuckSecs),
    // SCALIFY_E2E_KAFKA_DEBUG=cgrp,fetch: librdkafka's own debug logs (with SCALIFY_LOG=…,librdkafka=debug).
    ...(process.env.SCALIFY_E2E_KAFKA_DEBUG ? ['--kafka-option', `debug=${process.env.SCALIFY_E2E_KAFKA_DEBUG}`, '--kafka-option', 'log_level=7'] : []),
    ...extra], { env: { SCALIFY_TOKEN_SECRET: c.secret }, ready: /metrics at (http:\/\/[^/\s]+)\//, what: 'persister', timeoutMs: startMs });
  return {
    ...p,
    async metric(name) {
      const text = await (await fetch(`${p.url}/metrics`)).text();
      const re = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm');
      let sum = 0; let found = false;
      for (const m of text.matchAll(re)) { sum += Number(m[1]); found = true; }
      return found ? sum : null;
    },
  };
}

/** Rows of the messages table: [{room, seq, id, client_id, sender}]. */
export function storedMessages(dbUrl) {
  const out = execFileSync('psql', [dbUrl, '-qtAF', '\t', '-c',
    'SELECT r.name, m.seq, m.id, m.client_id, m.sender_name FROM messages m JOIN rooms r ON r.id = m.room_id ORDER BY r.name, m.seq'],
  { encoding: 'utf8', maxBuffer: 1 << 28 });
  return out.split('\n').filter(Boolean).map((line) => {
    const [room, seq, id, clientId, sender] = line.split('\t');
    return { room, seq: Number(seq), id, client_id: clientId, sender };
  });
}

/**
 * Sends until acked, retrying with the same client_id after an error ack or a timeout (what
 * a real client does). Resolves to the acked message, or null if it never got one.
 */
export async function sendUntilAcked(socket, room, text, clientId, { deadline = Date.now() + 60000 } = {}) {
  while (Date.now() < deadline) {
    try {
      const ack = await Promise.race([
        call(socket, 'send', { room, text, client_id: clientId }),
        sleep(8000).then(() => ({ ok: false, error: { code: 'timeout' } })),
      ]);
      if (ack.ok) return ack.message;
    } catch { /* disconnected: retry */ }
    await sleep(200);
  }
  return null;
}

/**
 * The end-of-drill check: every acked message is stored exactly once (by sender+client_id
 * and by id), nothing unacked-but-unknown is there twice, and each room's seqs are 1..n with
 * no gap. `oracle`: Map client_id -> acked message.
 */
export function checkStore(rows, oracle, assert) {
  const byKey = new Map();
  for (const r of rows) {
    const k = `${r.room}/${r.sender}/${r.client_id}`;
    assert.ok(!byKey.has(k), `stored twice: ${k}`);
    byKey.set(k, r);
  }
  for (const [clientId, m] of oracle) {
    const r = byKey.get(`${m.room}/${m.sender.username}/${clientId}`);
    assert.ok(r, `acked message ${clientId} (seq ${m.seq} in ${m.room}) is missing from PostgreSQL`);
    assert.equal(r.id, m.id, `${clientId}: stored id differs from the acked one`);
    assert.equal(r.seq, m.seq, `${clientId}: stored seq differs from the acked one`);
  }
  const rooms = new Map();
  for (const r of rows) rooms.set(r.room, [...(rooms.get(r.room) || []), r.seq]);
  for (const [room, seqs] of rooms) {
    seqs.sort((a, b) => a - b);
    seqs.forEach((s, i) => assert.equal(s, i + 1, `room ${room}: seq ${i + 1} missing (found ${s})`));
  }
}
