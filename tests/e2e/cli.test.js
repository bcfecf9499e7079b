// The binary's command line: help, migrate, layered configuration, the generated secret.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, startServer, register, connect, call, uniqueRoom } from './harness.js';

const run = (args, env = {}) => execFileSync(BIN, args, { env: { ...process.env, ...env }, encoding: 'utf8' });

test('--help documents every subcommand and flag', () => {
  const top = run(['--help']);
  for (const cmd of ['serve', 'migrate', 'bench', 'config', 'doctor']) assert.match(top, new RegExp(cmd));
  const serve = run(['serve', '--help']);
  for (const flag of ['--listen', '--data-dir', '--config', '--max-message-bytes', '--max-payload-bytes',
    '--rate-limit-per-sec', '--rate-limit-burst', '--sync-limit', '--token-ttl-secs', '--allowed-origins',
    '--log-format', '--sqlite-synchronous', '--ping-interval-secs', '--database-url', '--redis-url',
    '--redis-prefix', '--presence-ttl-secs']) {
    assert.match(serve, new RegExp(flag), flag);
  }
  assert.match(serve, /SCALIFY_LISTEN/);
});

test('migrate creates the schema once; serve finds it current; the secret is generated once, 0600', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'scalify-cli-'));
  assert.match(run(['migrate', '--data-dir', dir]), /10 migration\(s\) applied/);
  assert.match(run(['migrate', '--data-dir', dir]), /0 migration\(s\) applied/);
  assert.ok(existsSync(path.join(dir, 'scalify.db')));
  const server = await startServer({ dataDir: dir });
  const secretPath = path.join(dir, 'token-secret');
  assert.equal(statSync(secretPath).mode & 0o777, 0o600);
  const secret = readFileSync(secretPath, 'utf8');
  assert.match(server.stderr(), /generated one into the data directory/);
  const u = await register(server.url);
  await server.stop();
  // Restarted on the same data dir: same secret, so old tokens still work.
  const again = await startServer({ dataDir: dir });
  try {
    assert.equal(readFileSync(secretPath, 'utf8'), secret);
    const s = await connect(again.url, u.token);
    s.close();
  } finally { await again.stop(); again.cleanup(); }
});

test('a second serve on a data directory in use exits at once with a clear error; the first keeps serving', async () => {
  const first = await startServer();
  try {
    const second = spawnSync(BIN, ['serve', '--listen', '127.0.0.1:0', '--data-dir', first.dir], { encoding: 'utf8', timeout: 20000 });
    assert.notEqual(second.status, 0);
    assert.match(second.stderr, new RegExp(`another scalify process \\(pid ${first.child.pid}\\) is using the data directory`));
    assert.equal((await register(first.url)).user.username.length > 0, true);
  } finally { await first.stop(); first.cleanup(); }
});

test('configuration layers: flag > env > file > default', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'scalify-cfg-'));
  const file = path.join(dir, 'scalify.toml');
  writeFileSync(file, 'max_message_bytes = 30\nrate_limit_per_sec = 0\nsync_limit = 7\n');
  const check = async (server, expectLimit) => {
    const u = await register(server.url);
    const s = await connect(server.url, u.token);
    const room = uniqueRoom();
    await call(s, 'join', { room });
    const ok = await call(s, 'send', { room, text: 'x'.repeat(expectLimit), client_id: 'a' });
    const big = await call(s, 'send', { room, text: 'x'.repeat(expectLimit + 1), client_id: 'b' });
    s.close();
    assert.equal(ok.ok, true);
    assert.equal(big.error.code, 'too_large');
  };
  let s = await startServer({ args: ['--config', file] });
  try { await check(s, 30); } finally { await s.stop(); s.cleanup(); }
  s = await startServer({ args: ['--config', file], env: { SCALIFY_MAX_MESSAGE_BYTES: '20' } });
  try { await check(s, 20); } finally { await s.stop(); s.cleanup(); }
  s = await startServer({ args: ['--config', file, '--max-message-bytes', '10'], env: { SCALIFY_MAX_MESSAGE_BYTES: '20' } });
  try { await check(s, 10); } finally { await s.stop(); s.cleanup(); }
  // A typo in the file is an error, not a silently ignored setting.
  writeFileSync(file, 'max_mesage_bytes = 30\n');
  assert.throws(() => run(['serve', '--config', file, '--listen', '127.0.0.1:0', '--data-dir', dir]), /unknown field/);
});

/** Runs the binary and returns {code, out} whatever the exit status. */
function runStatus(args, env = {}) {
  try {
    return { code: 0, out: run(args, env) };
  } catch (e) {
    return { code: e.status, out: `${e.stdout}${e.stderr}` };
  }
}

test('config check accepts a valid file and rejects an unknown key, naming it', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'scalify-cfg-'));
  const good = path.join(dir, 'good.toml');
  writeFileSync(good, 'listen = "127.0.0.1:4100"\nrate_limit_per_sec = 5\nredis_prefix = "x"\n');
  const ok = runStatus(['config', 'check', '--config', good]);
  assert.equal(ok.code, 0, ok.out);
  assert.match(ok.out, /configuration is valid/);
  const bad = path.join(dir, 'bad.toml');
  writeFileSync(bad, 'listen = "127.0.0.1:4100"\nrate_limit_per_secs = 5\n');
  const no = runStatus(['config', 'check', '--config', bad]);
  assert.equal(no.code, 1);
  assert.match(no.out, /unknown field `rate_limit_per_secs`/);
  const invalid = path.join(dir, 'invalid.toml');
  writeFileSync(invalid, 'max_message_bytes = 70000\n');
  assert.equal(runStatus(['config', 'check', '--config', invalid]).code, 1);
  // A cluster without a shared secret is a configuration error.
  const cluster = runStatus(['config', 'check', '--redis-url', 'redis://127.0.0.1:6379'], { SCALIFY_TOKEN_SECRET: '' });
  assert.equal(cluster.code, 1);
  assert.match(cluster.out, /token secret shared by every node/);
});

test('doctor says plainly which dependency is unreachable, and passes when all are', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'scalify-doc-'));
  const env = { SCALIFY_TOKEN_SECRET: 'x'.repeat(40) };
  const down = runStatus(['doctor', '--data-dir', dir, '--listen', '127.0.0.1:0',
    '--database-url', 'postgres://postgres@127.0.0.1:1/nope', '--redis-url', 'redis://127.0.0.1:1',
    '--s3-endpoint', 'http://127.0.0.1:1', '--s3-bucket', 'files'], { ...env, AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 's' });
  assert.equal(down.code, 1);
  assert.match(down.out, /FAIL {2}PostgreSQL: cannot connect.*nothing listens at that address/);
  assert.match(down.out, /FAIL {2}Redis: cannot connect.*nothing listens at that address/);
  assert.match(down.out, /FAIL {2}object storage: bucket files at http:\/\/127\.0\.0\.1:1: /);
  assert.match(down.out, /3 check\(s\) failed/);
  const pg = process.env.SCALIFY_TEST_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
  const redis = process.env.SCALIFY_TEST_REDIS_URL || 'redis://127.0.0.1:6379';
  const up = runStatus(['doctor', '--data-dir', dir, '--listen', '127.0.0.1:0', '--database-url', pg, '--redis-url', redis], env);
  assert.equal(up.code, 0, up.out);
  assert.match(up.out, /ok {4}PostgreSQL: reachable/);
  assert.match(up.out, /ok {4}Redis: reachable/);
  // A cluster without shared storage for uploads is told so, without failing.
  assert.match(up.out, /warn {2}uploads: kept in this node's data directory/);
  assert.match(up.out, /all checks passed/);
});

test('logs: every socket event carries its connection id and user; passwords and tokens never appear', async () => {
  for (const format of ['text', 'json']) {
    const server = await startServer({ args: ['--log-format', format], env: { SCALIFY_LOG: 'debug' } });
    try {
      const password = `pw-${Math.random().toString(36).slice(2)}-secret`;
      const username = `logu${process.pid}${format}`.slice(0, 32);
      const reg = await fetch(`${server.url}/api/auth/register`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }),
      }).then((r) => r.json());
      await fetch(`${server.url}/api/auth/login`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: 'wrong-password-x' }),
      });
      const s = await connect(server.url, reg.token);
      const room = uniqueRoom();
      await call(s, 'join', { room });
      await call(s, 'send', { room, text: 'hello', client_id: 'c1' });
      const sid = s.id;
      s.close();
      await fetch(`${server.url}/api/me`, { headers: { authorization: `Bearer ${reg.token}` } });
      await new Promise((r) => setTimeout(r, 200));
      const logs = server.stderr();
      assert.ok(!logs.includes(password), `${format}: password in logs`);
      assert.ok(!logs.includes('wrong-password-x'), `${format}: password in logs`);
      assert.ok(!logs.includes(reg.token), `${format}: token in logs`);
      assert.ok(!logs.includes(reg.token.split('.')[2]), `${format}: token signature in logs`);
      if (format === 'text') {
        assert.match(logs, new RegExp(`conn\\{sid=${sid} user=${username}\\}.*answered ok event="send"`));
      } else {
        const lines = logs.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
        assert.ok(lines.length > 0);
        const answered = lines.find((l) => l.fields?.message === 'answered ok' && l.fields?.event === 'send');
        assert.ok(answered, 'a JSON log line for the send, with its span');
        assert.equal(answered.span.sid, sid);
        assert.equal(answered.span.user, username);
      }
    } finally { await server.stop(); server.cleanup(); }
  }
});
