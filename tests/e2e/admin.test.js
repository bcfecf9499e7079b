// Operations: the admin dashboard's data endpoint (admins only), granting the role, and the
// health endpoints, against the real binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { BIN, startServer, api, register, connect, call, uniqueRoom } from './harness.js';

let server;
let admin;
const name = `adm${process.pid}`.slice(0, 32);
const args = ['--rate-limit-per-sec', '0'];
before(async () => {
  server = await startServer({ args });
});
after(async () => { await server.stop(); server.cleanup(); });

test('--admins binds the role to the account holding the name when the node starts; a name with no account stops the start', async () => {
  // A name nobody holds: the node refuses to start, so nobody can claim the role by
  // registering the name before some later restart.
  await server.stop();
  await assert.rejects(startServer({ dataDir: server.dir, args: [...args, '--admins', `${name}x`] }),
    (err) => err.message.includes(`--admins names '${name}x', which is no account`));
  server = await startServer({ dataDir: server.dir, args });
  // The operator registers the account first (any case: names are case-insensitive) …
  const created = await api(server.url, 'POST', '/api/auth/register', { username: name.toUpperCase(), password: 'correct-horse' });
  assert.equal(created.status, 201);
  admin = created.body;
  assert.equal((await api(server.url, 'GET', '/api/me', undefined, admin.token)).body.admin, false);
  // … then starts the node with it: bound by user id.
  await server.stop();
  server = await startServer({ dataDir: server.dir, args: [...args, '--admins', name] });
  assert.equal((await api(server.url, 'GET', '/api/me', undefined, admin.token)).body.admin, true);
  assert.equal((await api(server.url, 'GET', '/api/admin/overview', undefined, admin.token)).status, 200);
});

const cli = (...args) => execFileSync(BIN, args, { encoding: 'utf8', env: { ...process.env, SCALIFY_LOG: 'warn' } });

test('the overview is for admins only; the role comes from config or `scalify admin grant`', async () => {
  const joe = await register(server.url, 'joe');
  const refused = await api(server.url, 'GET', '/api/admin/overview', undefined, joe.token);
  assert.equal(refused.status, 403);
  assert.equal(refused.body.error.code, 'forbidden');
  assert.equal((await api(server.url, 'GET', '/api/admin/overview')).status, 401);
  assert.equal((await api(server.url, 'GET', '/api/me', undefined, joe.token)).body.admin, false);
  assert.equal((await api(server.url, 'GET', '/api/me', undefined, admin.token)).body.admin, true);

  // Granted while the server runs: effective at once; revoked likewise.
  assert.match(cli('admin', 'grant', joe.user.username, '--data-dir', server.dir), /is now an admin/);
  assert.equal((await api(server.url, 'GET', '/api/admin/overview', undefined, joe.token)).status, 200);
  assert.match(cli('admin', 'revoke', joe.user.username, '--data-dir', server.dir), /is no longer an admin/);
  assert.equal((await api(server.url, 'GET', '/api/admin/overview', undefined, joe.token)).status, 403);
  assert.throws(() => cli('admin', 'grant', 'nobody-at-all', '--data-dir', server.dir), /no user named 'nobody-at-all'/);
});

test('the overview shows this node, its connections, the message rate, the busiest rooms and its dependencies', async () => {
  const u = await register(server.url, 'busy');
  const s = await connect(server.url, u.token);
  const room = uniqueRoom('hot');
  await call(s, 'join', { room });
  for (let i = 0; i < 12; i++) await call(s, 'send', { room, text: `m${i}`, client_id: `m${i}` });
  const o = (await api(server.url, 'GET', '/api/admin/overview', undefined, admin.token)).body;
  const health = (await api(server.url, 'GET', '/healthz')).body;
  assert.equal(o.node, health.node);
  assert.equal(o.nodes.length, 1);
  const me = o.nodes[0];
  assert.equal(me.node, health.node);
  assert.ok(me.connections >= 1 && me.users >= 1 && me.rooms >= 1, JSON.stringify(me));
  assert.ok(me.uptime_secs >= 0 && me.started_at <= Date.now());
  assert.ok(o.messages_per_sec > 0, 'message rate');
  assert.deepEqual(o.busiest.find((r) => r.room === room), { room, messages: 12 });
  assert.deepEqual(o.checks, { store: { ok: true }, fanout: { ok: true } });
  assert.ok(Array.isArray(o.errors));
  s.close();
});
