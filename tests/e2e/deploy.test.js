// The deploy recipes stay true: nginx accepts the site configs, and the Grafana dashboard only
// charts metrics the binary really exports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, register, connect, call, uniqueRoom } from './harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const DEPLOY = path.resolve(here, '../../deploy');

for (const site of ['scalify.conf', 'compose.conf']) {
  test(`nginx -t accepts deploy/nginx/${site}`, () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'scalify-nginx-'));
    mkdirSync(path.join(dir, 'tmp'));
    // compose.conf names the nodes by service name: resolve them here so nginx -t can.
    const conf = readFileSync(path.join(DEPLOY, 'nginx', site), 'utf8').replace(/server (node\d):3000/g, 'server 127.0.0.1:3000');
    writeFileSync(path.join(dir, 'site.conf'), conf);
    writeFileSync(path.join(dir, 'nginx.conf'), `pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events {}
http {
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp; fastcgi_temp_path ${dir}/tmp;
  uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
  access_log off;
  include ${dir}/site.conf;
}
`);
    execFileSync('nginx', ['-t', '-q', '-c', path.join(dir, 'nginx.conf'), '-p', dir, '-g', `error_log ${dir}/error.log;`], { stdio: 'pipe' });
  });
}

test('the Grafana dashboard charts only metrics that /metrics exports', async () => {
  const dash = JSON.parse(readFileSync(path.join(DEPLOY, 'grafana/scalify-dashboard.json'), 'utf8'));
  const used = new Set();
  for (const p of dash.panels) for (const t of p.targets) for (const m of t.expr.matchAll(/scalify_[a-z_]+/g)) used.add(m[0]);
  assert.ok(used.size >= 10);
  // Make every metric appear: a connection, messages, an error, a duplicate.
  // A budget of 11: creating the room (10) and one send, then the next send is rate limited.
  const server = await startServer({ args: ['--rate-limit-per-sec', '1', '--rate-limit-burst', '11'] });
  try {
    const u = await register(server.url, 'graf');
    const s = await connect(server.url, u.token);
    const room = uniqueRoom();
    await call(s, 'join', { room });
    await call(s, 'send', { room, text: 'x', client_id: 'a' });
    await call(s, 'send', { room, text: 'x', client_id: 'a' }); // rate limited
    s.close();
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const exported = new Set([...text.matchAll(/^(scalify_[a-z_]+)/gm)].map((m) => m[1]));
    // Redis and Kafka metrics exist only on cluster / durable nodes and persisters; check their
    // names against the source instead (kafka.test.js reads them from live processes).
    const redisNames = readFileSync(path.resolve(here, '../../crates/scalify-server/src/metrics.rs'), 'utf8');
    for (const name of used) {
      const base = name.replace(/_(bucket|sum|count)$/, '');
      if (/^scalify_(redis|kafka|persister)_/.test(base) || base === 'scalify_store_batch_failures_total') {
        assert.ok(redisNames.includes(`"${base}"`), `${name} is not a described metric`);
      } else {
        assert.ok(exported.has(name) || exported.has(base), `${name} is charted but not exported`);
      }
    }
  } finally { await server.stop(); server.cleanup(); }
});
