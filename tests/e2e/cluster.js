// Helpers for multi-node tests: a fresh PostgreSQL database, a private Redis server, and
// nodes of one cluster (shared database, Redis, key prefix and token secret).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startServer, sleep } from './harness.js';

export const ADMIN_DB_URL = process.env.SCALIFY_TEST_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
export const SHARED_REDIS_URL = process.env.SCALIFY_TEST_REDIS_URL || 'redis://127.0.0.1:6379';

function psql(sql) {
  execFileSync('psql', [ADMIN_DB_URL, '-qtAc', sql], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A new, empty database; `drop()` removes it. */
export function freshDatabase() {
  const name = `scalify_e2e_${process.pid}_${randomBytes(4).toString('hex')}`;
  psql(`CREATE DATABASE ${name}`);
  const url = `${ADMIN_DB_URL.replace(/\/[^/]*$/, '')}/${name}`;
  return { name, url, drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

export function freePort() {
  return freePorts(1);
}

/**
 * The first of `n` consecutive ports that are free together (scripts/cluster.sh gives its nodes
 * base, base+1, ...). Checking only the first is not enough: Linux hands out even ports to
 * outgoing connections, and base+1 of an odd bound port is even, so it is often busy.
 */
export async function freePorts(n) {
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = await listen(0);
    const base = first.address().port;
    const held = [first];
    try {
      for (let i = 1; i < n; i++) held.push(await listen(base + i));
      return base;
    } catch {
      // base+i is taken: try another base.
    } finally {
      await Promise.all(held.map((srv) => new Promise((r) => srv.close(r))));
    }
  }
  throw new Error(`no ${n} consecutive free ports found`);
}

function listen(port) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => resolve(srv));
  });
}

/** A private redis-server on a free port (never the shared one), for drills that stop it. */
export async function privateRedis() {
  const port = await freePort();
  let child;
  const up = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    for (let i = 0; i < 100; i++) {
      try { if (redisCli(`redis://127.0.0.1:${port}`, 'PING') === 'PONG') return; } catch { /* not yet */ }
      await sleep(50);
    }
    throw new Error('redis-server did not start');
  };
  await up();
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
    start: up,
  };
}

/**
 * A private redis-server that is still loading its dataset when this resolves and answers
 * LOADING for about `seconds` more: a dump of `keys` keys is made, then read back with
 * Redis's own test setting `key-load-delay` (microseconds per key) and events handled every
 * KB of the load, so clients are answered — with LOADING — meanwhile.
 */
export async function loadingRedis(seconds = 5, keys = 20000) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'scalify-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  const base = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const reply = () => {
    const r = spawnSync('redis-cli', ['-u', url, 'PING'], { encoding: 'utf8' });
    return `${r.stdout}${r.stderr}`.trim();
  };
  const answering = async (want) => {
    for (let i = 0; i < 100; i++) {
      if (reply().startsWith(want)) return;
      await sleep(50);
    }
    throw new Error(`redis-server never answered ${want} (last: ${reply()})`);
  };
  let child;
  let exited;
  const run = (args) => {
    child = spawn('redis-server', [...base, ...args], { stdio: 'ignore' });
    exited = new Promise((r) => child.once('exit', r));
  };
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  try {
    run(['--enable-debug-command', 'yes']);
    await answering('PONG');
    redisCli(url, 'DEBUG', 'POPULATE', String(keys));
    redisCli(url, 'SAVE');
    await kill();
    const delayUs = Math.round((seconds * 1e6) / keys);
    run(['--key-load-delay', String(delayUs), '--loading-process-events-interval-bytes', '1024']);
    await answering('LOADING');
  } catch (e) {
    await kill();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    url,
    keys,
    /** What Redis answers a PING now. */
    ping: reply,
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function redisCli(url, ...args) {
  return execFileSync('redis-cli', ['-u', url, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/**
 * Removes every Redis key under `prefix` (seq counters, a day's idempotency keys, presence),
 * so test runs do not pile keys up in the shared Redis. Best effort: a private Redis may be
 * gone already.
 */
export function forgetKeys(url, prefix) {
  try {
    execFileSync('sh', ['-c', 'redis-cli -u "$1" --scan --pattern "$2:*" | xargs -r -n 1000 redis-cli -u "$1" UNLINK >/dev/null', 'sh', url, prefix],
      { stdio: 'ignore', timeout: 20000 });
  } catch { /* Redis already stopped */ }
}

/** Node settings shared by one cluster; `drop()` removes its database and its Redis keys. */
export function clusterSettings({ redisUrl = SHARED_REDIS_URL, presenceTtl = 3 } = {}) {
  const db = freshDatabase();
  const prefix = `e2e-${process.pid}-${randomBytes(4).toString('hex')}`;
  return {
    db,
    redisUrl,
    prefix,
    secret: randomBytes(32).toString('hex'),
    presenceTtl,
    drop() {
      db.drop();
      forgetKeys(redisUrl, prefix);
    },
  };
}

export function startNode(c, extra = [], env = {}) {
  return startServer({
    args: ['--database-url', c.db.url, '--redis-url', c.redisUrl, '--redis-prefix', c.prefix,
      '--presence-ttl-secs', String(c.presenceTtl), '--rate-limit-per-sec', '0', ...extra],
    env: { SCALIFY_TOKEN_SECRET: c.secret, ...env },
  });
}

export async function readyz(url) {
  const res = await fetch(`${url}/readyz`);
  return { status: res.status, body: await res.json() };
}


/**
 * A private PostgreSQL server on a free port (never the shared one), for drills that stop it.
 * Runs as the `postgres` system user (initdb refuses root).
 */
export async function privatePostgres() {
  const { mkdtempSync, chmodSync, readdirSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const pathMod = await import('node:path');
  const versions = readdirSync('/usr/lib/postgresql').sort();
  const bin = `/usr/lib/postgresql/${versions.at(-1)}/bin`;
  const dir = mkdtempSync(pathMod.join(tmpdir(), 'scalify-pg-'));
  chmodSync(dir, 0o777);
  const port = await freePort();
  const asPg = (cmd) => execFileSync('su', ['postgres', '-s', '/bin/sh', '-c', cmd], { stdio: 'pipe' });
  asPg(`${bin}/initdb -D ${dir}/data -A trust -U postgres >/dev/null`);
  const start = () => asPg(`${bin}/pg_ctl -D ${dir}/data -l ${dir}/log -o "-p ${port} -k ${dir} -c listen_addresses=127.0.0.1" -w start >/dev/null`);
  start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start,
    stop: () => asPg(`${bin}/pg_ctl -D ${dir}/data -m immediate -w stop >/dev/null`),
    destroy() {
      try { asPg(`${bin}/pg_ctl -D ${dir}/data -m immediate -w stop >/dev/null`); } catch { /* already stopped */ }
      execFileSync('rm', ['-rf', dir]);
    },
  };
}
