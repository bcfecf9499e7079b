// The local cluster users start with `scripts/cluster.sh`: N real nodes behind real nginx
// (WebSocket upgrade, sticky long-polling). Clients connect through the load balancer only,
// except where a test needs a client pinned to a known node.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { io } from 'socket.io-client';
import { api, register, connect, call, collect, uniqueRoom, eventually } from './harness.js';
import { ADMIN_DB_URL, SHARED_REDIS_URL, freePorts, forgetKeys } from './cluster.js';
import { randomBytes } from 'node:crypto';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const SCRIPT = path.resolve(here, '../../scripts/cluster.sh');

let dir; let lb; let env; let dbName;

async function cluster(cmd, ...args) {
  return run(SCRIPT, [cmd, ...args], { env, timeout: 120000 });
}

function nodes() {
  return readFileSync(path.join(dir, 'nodes'), 'utf8').trim().split('\n').map((l) => {
    const [pid, addr] = l.split(' ');
    return { pid: Number(pid), url: `http://${addr}` };
  });
}

/** The nodes whose process is still running. */
function liveNodes() {
  return nodes().filter((n) => running(n.pid));
}

function running(pid) {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

async function nodeId(url) {
  return (await (await fetch(`${url}/healthz`)).json()).node;
}

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'scalify-cluster-'));
  // Nodes on base..base+2, the load balancer on base+3: one block, so none can collide.
  const base = await freePorts(4);
  const lbPort = base + 3;
  dbName = `scalify_e2e_lb_${process.pid}_${randomBytes(3).toString('hex')}`;
  env = {
    ...process.env,
    SCALIFY_CLUSTER_DIR: dir,
    SCALIFY_CLUSTER_PORT: String(lbPort),
    SCALIFY_CLUSTER_NODE_PORT: String(base),
    SCALIFY_DATABASE_URL: `${ADMIN_DB_URL.replace(/\/[^/]*$/, '')}/${dbName}`,
    SCALIFY_REDIS_URL: SHARED_REDIS_URL,
    SCALIFY_REDIS_PREFIX: `e2e-lb-${process.pid}-${randomBytes(3).toString('hex')}`,
    SCALIFY_CLUSTER_ARGS: '--rate-limit-per-sec 0 --presence-ttl-secs 3',
    SCALIFY_LOG: 'warn',
  };
  const { stdout } = await cluster('start', '3');
  assert.match(stdout, /cluster of 3 node\(s\) is running at http:\/\/127\.0\.0\.1:\d+\//);
  lb = `http://127.0.0.1:${lbPort}`;
});

after(async () => {
  await cluster('stop').catch(() => {});
  await run('psql', [ADMIN_DB_URL, '-qtAc', `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`]).catch(() => {});
  if (env) forgetKeys(SHARED_REDIS_URL, env.SCALIFY_REDIS_PREFIX);
  rmSync(dir, { recursive: true, force: true });
});

test('the rendered nginx config passes nginx -t', async () => {
  await run('nginx', ['-t', '-q', '-c', path.join(dir, 'nginx.conf'), '-p', dir, '-g', `error_log ${dir}/nginx-error.log;`]);
});

test('through the load balancer: long-polling only and WebSocket clients chat with a client on the other node', async () => {
  const [n1, n2] = nodes();
  const viaLb = await nodeId(lb);
  const other = (await nodeId(n1.url)) === viaLb ? n2 : n1;
  assert.notEqual(await nodeId(other.url), viaLb);

  const pol = await register(lb, 'pol');
  const web = await register(lb, 'web');
  const oth = await register(other.url, 'oth');
  const sp = await connect(lb, pol.token, { transports: ['polling'] });
  const sw = await connect(lb, web.token, { transports: ['websocket'] });
  const so = await connect(other.url, oth.token);
  const room = uniqueRoom();
  for (const s of [sp, sw, so]) assert.equal((await call(s, 'join', { room })).ok, true);
  const got = [sp, sw, so].map((s) => collect(s, 'message'));
  await call(sp, 'send', { room, text: 'via polling', client_id: 'p1' });
  await call(sw, 'send', { room, text: 'via websocket', client_id: 'w1' });
  await call(so, 'send', { room, text: 'from the other node', client_id: 'o1' });
  for (const g of got) {
    const msgs = await g.waitFor(3);
    assert.deepEqual(msgs.map((m) => m.seq), [1, 2, 3]);
  }
  // The polling client really stayed on long-polling (nginx kept its requests on one node).
  assert.equal(sp.io.engine.transport.name, 'polling');
  assert.equal(sw.io.engine.transport.name, 'websocket');
  for (const s of [sp, sw, so]) s.close();
});

test('files through the load balancer: an upload near the limit streams through, one over it gets the node\'s own 413, and a user on another node downloads it', async () => {
  const [n1, n2] = nodes();
  const viaLb = await nodeId(lb);
  const other = (await nodeId(n1.url)) === viaLb ? n2 : n1;
  const ann = await register(lb, 'upl');
  const bob = await register(other.url, 'dnl');
  const room = uniqueRoom('lbf');
  assert.equal((await api(lb, 'POST', '/api/rooms', { name: room, kind: 'public' }, ann.token)).status, 201);
  assert.equal((await api(other.url, 'POST', `/api/rooms/${room}/members`, { username: bob.user.username }, bob.token)).status, 200);
  const post = (bytes) => fetch(`${lb}/api/rooms/${room}/uploads?name=big.bin`, {
    method: 'POST', headers: { authorization: `Bearer ${ann.token}` }, body: bytes,
  });
  const big = Buffer.alloc(9 * 1024 * 1024, 7);
  const ok = await post(big);
  assert.equal(ok.status, 201, await ok.clone().text());
  const { upload } = await ok.json();
  const over = await post(Buffer.alloc(10 * 1024 * 1024 + 1, 7));
  assert.equal(over.status, 413);
  assert.equal((await over.json()).error.code, 'too_large');
  const got = await fetch(`${other.url}/api/rooms/${room}/uploads/${upload.id}`, { headers: { authorization: `Bearer ${bob.token}` } });
  assert.equal(got.status, 200);
  assert.ok(Buffer.from(await got.arrayBuffer()).equals(big));
});

test('its node shuts down (SIGTERM): the client is closed after its last acks and reconnects through the load balancer to another node while the old one still drains', async () => {
  const all = liveNodes();
  const ids = await Promise.all(all.map((n) => nodeId(n.url)));
  const doomed = all[ids.indexOf(await nodeId(lb))];
  assert.ok(doomed, 'the load balancer routes to one of the nodes');
  const ann = await register(lb, 'drained');
  // A long-polling session opened on that node that never polls: the node serves it until it
  // has taken its last packets, at most 5 s, and drains meanwhile.
  const eio = `${doomed.url}/socket.io/?EIO=4&transport=polling`;
  const sid = JSON.parse((await (await fetch(eio)).text()).slice(1)).sid;
  await fetch(`${eio}&sid=${sid}`, { method: 'POST', body: `40${JSON.stringify({ token: ann.token })}` });

  const sa = io(lb, { auth: { token: ann.token }, forceNew: true, reconnectionDelay: 200, reconnectionDelayMax: 500 });
  await new Promise((r) => sa.once('connect', r));
  const room = uniqueRoom();
  await call(sa, 'join', { room });
  const inFlight = call(sa, 'send', { room, text: 'before', client_id: 'd1' });
  // Whether the old node still ran when the client was back (the raw session above holds its
  // drain for the shutdown grace, 5 s, and the close 5 s more).
  const reconnected = new Promise((r) => sa.io.once('reconnect', () => r(running(doomed.pid))));
  process.kill(doomed.pid, 'SIGTERM');
  // The shutdown contract (docs/protocol.md): acked, refused with `internal`, or left
  // unanswered when the connection closes first — then the resend below is what stores it.
  const first = await inFlight.catch((e) => ({ unanswered: e.message }));
  assert.ok(first.ok || first.error?.code === 'internal' || first.unanswered, JSON.stringify(first));
  // Reconnected elsewhere while the old node still drained: its handshakes answer 503, which
  // nginx passes on to the next node (proxy_next_upstream http_503).
  assert.ok(await reconnected, 'the client was back while the old node still drained');
  assert.equal((await call(sa, 'join', { room })).ok, true);
  // A resend of the first message is stored once (the original, if it was stored).
  const again = await call(sa, 'send', { room, text: 'before', client_id: 'd1' });
  assert.equal(again.message.seq, 1);
  if (first.ok) assert.equal(again.message.id, first.message.id);
  const sent = await call(sa, 'send', { room, text: 'after', client_id: 'd2' });
  assert.equal(sent.message.seq, 2);
  sa.close();
  await eventually(() => !running(doomed.pid), 30000, 'the old node exits');
});

test('its node dies: a client reconnects through the load balancer to another node and sync returns exactly what it missed', async () => {
  const [n1, n2] = liveNodes();
  const viaLb = await nodeId(lb);
  const [doomed, survivor] = (await nodeId(n1.url)) === viaLb ? [n1, n2] : [n2, n1];

  const ann = await register(lb, 'ann');
  const bob = await register(survivor.url, 'bob');
  const room = uniqueRoom();
  const sa = io(lb, { auth: { token: ann.token }, forceNew: true, reconnectionDelay: 200, reconnectionDelayMax: 500 });
  await new Promise((r) => sa.once('connect', r));
  await call(sa, 'join', { room });
  const sb = await connect(survivor.url, bob.token);
  await call(sb, 'join', { room });
  const gotA = collect(sa, 'message');
  await call(sb, 'send', { room, text: 'seen', client_id: 'b0' });
  const lastSeen = (await gotA.waitFor(1)).at(-1).seq;

  const reconnected = new Promise((r) => sa.io.once('reconnect', r));
  process.kill(doomed.pid, 'SIGKILL');
  for (let i = 1; i <= 3; i++) await call(sb, 'send', { room, text: `missed ${i}`, client_id: `b${i}` });
  await reconnected;
  assert.equal(await nodeId(lb), await nodeId(survivor.url), 'the load balancer moved to the surviving node');
  assert.equal((await call(sa, 'join', { room })).ok, true);
  const s = await call(sa, 'sync', { rooms: { [room]: lastSeen } });
  assert.deepEqual(s.rooms[room].messages.map((m) => m.text), ['missed 1', 'missed 2', 'missed 3']);
  // History through the load balancer agrees.
  const h = await api(lb, 'GET', `/api/rooms/${room}/messages`, undefined, ann.token);
  assert.deepEqual(h.body.messages.map((m) => m.seq), [1, 2, 3, 4]);
  sa.close(); sb.close();
});

test('stop stops every node and the load balancer', async () => {
  const pids = nodes().map((n) => n.pid);
  await cluster('stop');
  await eventually(() => pids.every((pid) => !running(pid)), 30000, 'nodes gone');
  await assert.rejects(fetch(`${lb}/healthz`));
});
