// Test harness: spawns the real `scalify` binary on a free port with a fresh data directory,
// and gives tests REST and socket.io-client helpers. One server per test file or test.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.SCALIFY_BIN || path.resolve(here, '../../target/debug/scalify');
// Every test registers its users from 127.0.0.1: the servers they start (directly, through
// scripts/cluster.sh or the kafka helpers, which inherit this) take any number of them.
// Tests of the limit itself set it.
process.env.SCALIFY_REGISTRATIONS_PER_ADDRESS ??= '0';

/**
 * Runs `scalify <args>` and resolves once its stdout matches `ready` (whose first group is the
 * URL it serves; within `timeoutMs`), with `stop(signal)`, its exit and its stderr (the last 200 KB).
 */
export async function launch(args, { env = {}, ready = /running at (http:\/\/[^/\s]+)\//, what = 'server', timeoutMs = 20000 } = {}) {
  const child = spawn(BIN, args, {
    env: { ...process.env, SCALIFY_LOG: process.env.SCALIFY_LOG || 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-200000); });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start:\n${stderr}`)), timeoutMs);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(ready);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${what} exited ${code}:\n${stderr}`)); });
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    url, child, exited,
    stderr: () => stderr,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Starts `scalify serve`; resolves once it prints its URL. */
export async function startServer({ dataDir, args = [], env = {}, port = 0 } = {}) {
  const dir = dataDir || mkdtempSync(path.join(tmpdir(), 'scalify-e2e-'));
  const server = await launch(['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dir, ...args], { env });
  return { ...server, dir, cleanup() { rmSync(dir, { recursive: true, force: true }); } };
}

export async function api(url, method, route, body, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url + route, {
    method, headers, body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: res.status, body: json };
}

let userCounter = 0;
/** Registers a fresh user; returns {token, user}. */
export async function register(url, prefix = 'user') {
  const username = `${prefix}${process.pid}${++userCounter}`.toLowerCase().slice(0, 32);
  const r = await api(url, 'POST', '/api/auth/register', { username, password: 'correct-horse' });
  if (r.status !== 201) throw new Error(`register failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Connects a socket.io-client and waits for `connect` (or rejects on connect_error). */
export function connect(url, token, opts = {}) {
  const socket = io(url, { auth: token === undefined ? undefined : { token }, reconnection: false, forceNew: true, ...opts });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (err) => { socket.close(); reject(err); });
  });
}

/** Emits an event and resolves with its ack (15 s timeout: generous, so a busy machine
 * does not fail a test that waits for an answer). */
export function call(socket, event, arg) {
  return socket.timeout(15000).emitWithAck(event, arg);
}

/** Collects events of one name; `waitFor(n)` resolves once n have arrived. */
export function collect(socket, event) {
  const items = [];
  let waiters = [];
  socket.on(event, (x) => {
    items.push(x);
    waiters = waiters.filter((w) => (items.length >= w.n ? (w.resolve(items), false) : true));
  });
  return {
    items,
    waitFor(n, ms = 15000) {
      if (items.length >= n) return Promise.resolve(items);
      return new Promise((resolve, reject) => {
        const w = { n, resolve };
        waiters.push(w);
        setTimeout(() => reject(new Error(`only ${items.length}/${n} '${event}' events after ${ms} ms`)), ms);
      });
    },
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls until `check()` is truthy (or throws after `ms`). */
export async function eventually(check, ms = 30000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

// Digits only: a random word in a name could match a button's label by substring ("dadd" ~ "Add").
export const uniqueRoom = (p = 'room') => `${p}-${process.pid}-${String(Math.random()).slice(2, 8)}`;

/** Two fresh users, each connected, both joined to a fresh public room. */
export async function twoInRoom(url) {
  const a = await register(url);
  const b = await register(url);
  const sa = await connect(url, a.token);
  const sb = await connect(url, b.token);
  const room = uniqueRoom();
  await call(sa, 'join', { room });
  await call(sb, 'join', { room });
  return { a, b, sa, sb, room };
}

/** Every message of a room, paging REST history back to seq 1 (asserts each page is 200). */
export async function allMessages(url, token, room) {
  const out = [];
  let before;
  for (;;) {
    const q = before ? `?limit=100&before_seq=${before}` : '?limit=100';
    const r = await api(url, 'GET', `/api/rooms/${room}/messages${q}`, undefined, token);
    if (r.status !== 200) throw new Error(`history ${r.status}: ${JSON.stringify(r.body)}`);
    out.unshift(...r.body.messages);
    if (!r.body.has_more) return out;
    before = r.body.messages[0].seq;
  }
}
