// Missed-message notifications on one node: the signed webhook and Web Push (a browser's
// own keys, the payload decrypted and the VAPID JWT checked here, independently of the
// server's crates), who is told and who is not, and pending notifications across a kill -9.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, api, register, connect, call, sleep, eventually, uniqueRoom } from './harness.js';
import { listen, signature, browserKeys, decryptPush, verifyVapid } from './receiver.js';

const SECRET = 'a-webhook-secret-of-the-test';
const DELAY_SECS = 2;
let server;
let hook;
// Users whose notifications the webhook refuses (500) the first time it sees each, or always.
const failFirstFor = new Set();
const failAlwaysFor = new Set();

before(async () => {
  const seen = new Set();
  hook = await listen((r) => {
    const id = r.headers['x-scalify-delivery'];
    const user = JSON.parse(r.body.toString('utf8')).user.id;
    if (failAlwaysFor.has(user)) return 500;
    if (failFirstFor.has(user) && !seen.has(id)) { seen.add(id); return 500; }
    return 200;
  });
  server = await startServer({
    args: ['--rate-limit-per-sec', '0', '--notify-after-secs', String(DELAY_SECS),
      '--notify-webhook-url', `${hook.url}/hook`, '--push-allow-private-endpoints'],
    env: { SCALIFY_NOTIFY_WEBHOOK_SECRET: SECRET },
  });
});
after(async () => {
  await server.stop(); server.cleanup();
  await hook.close();
});

/** The webhook deliveries for `user` so far, parsed. */
const deliveriesFor = (user) => hook.requests
  .map((r) => ({ ...r, json: JSON.parse(r.body.toString('utf8')) }))
  .filter((r) => r.json.user.id === user.user.id);

async function dm(from, to) {
  const r = await api(server.url, 'POST', '/api/dms', { username: to.user.username }, from.token);
  assert.equal(r.status < 300, true, JSON.stringify(r.body));
  return r.body.room.name;
}

const send = (who, room, text, client_id) =>
  api(server.url, 'POST', `/api/rooms/${encodeURIComponent(room)}/messages`, { text, client_id }, who.token);

test('an away member is told once per room, by a webhook signed with the shared secret, after the delay', async () => {
  const [ann, bob] = [await register(server.url, 'ann'), await register(server.url, 'bob')];
  const room = await dm(ann, bob);
  const sentAt = Date.now();
  for (const [i, text] of ['are you there?', 'second', 'third'].entries()) {
    assert.equal((await send(ann, room, text, `c${i}`)).status, 201);
  }
  const delivered = await eventually(() => { const d = deliveriesFor(bob); return d.length ? d : undefined; }, 15000, 'a delivery');
  const first = delivered[0];
  assert.ok(first.at - sentAt >= DELAY_SECS * 1000 - 100, `told ${first.at - sentAt} ms after the send, before the ${DELAY_SECS} s delay`);
  assert.equal(first.headers['content-type'], 'application/json');
  assert.equal(first.headers['x-scalify-signature'], signature(SECRET, first.body));
  assert.notEqual(first.headers['x-scalify-signature'], signature('another-secret-entirely', first.body));
  assert.equal(first.headers['x-scalify-attempt'], '1');
  const s = first.json;
  assert.equal(s.type, 'messages');
  assert.equal(s.id, first.headers['x-scalify-delivery']);
  assert.deepEqual(s.user, bob.user);
  assert.deepEqual(s.room, { name: room, kind: 'dm' });
  assert.deepEqual([s.count, s.mentions, s.first_seq, s.last_seq], [3, 3, 1, 3]);
  assert.deepEqual(s.from, ann.user);
  assert.equal(s.preview, 'are you there?');
  // One notification for the three messages, and none more for them.
  await sleep(DELAY_SECS * 1000 + 1500);
  assert.deepEqual([...new Set(deliveriesFor(bob).map((d) => d.json.id))], [s.id]);
});

test('a delivery the webhook refuses with a 500 comes again, same id and body, a second later', async () => {
  const [ann, cat] = [await register(server.url, 'ann'), await register(server.url, 'cat')];
  const room = await dm(ann, cat);
  failFirstFor.add(cat.user.id);
  {
    assert.equal((await send(ann, room, 'ping', 'p1')).status, 201);
    const tries = await eventually(() => { const d = deliveriesFor(cat); return d.length >= 2 ? d : undefined; }, 20000, 'a retry');
    const [one, two] = tries;
    assert.equal(one.json.id, two.json.id);
    assert.deepEqual(one.body, two.body);
    assert.deepEqual([one.headers['x-scalify-attempt'], two.headers['x-scalify-attempt']], ['1', '2']);
    assert.equal(two.headers['x-scalify-signature'], signature(SECRET, two.body));
    assert.ok(two.at - one.at >= 900, `retried after ${two.at - one.at} ms`);
    await sleep(2500);
    assert.equal(deliveriesFor(cat).length, 2, 'delivered again after a 200');
  }
});

test('a notification waiting for its retry is dropped once the member reads the room or connects', async () => {
  const [ann, dan, eve] = [await register(server.url, 'ann'), await register(server.url, 'dan'), await register(server.url, 'eve')];
  // Every try fails (500): retried after 1 s, 2 s, 4 s, … while it is still worth sending.
  failAlwaysFor.add(dan.user.id);
  failAlwaysFor.add(eve.user.id);
  const dmDan = await dm(ann, dan);
  const dmEve = await dm(ann, eve);
  const sent = await send(ann, dmDan, 'read me later', 'x1');
  await send(ann, dmEve, 'come online', 'y1');
  await eventually(() => deliveriesFor(dan).length >= 1 && deliveriesFor(eve).length >= 1, 15000, 'the first tries');
  // Dan reads, Eve connects.
  assert.equal((await api(server.url, 'PUT', `/api/rooms/${encodeURIComponent(dmDan)}/read`, { seq: sent.body.message.seq }, dan.token)).status, 200);
  const se = await connect(server.url, eve.token);
  const [danTries, eveTries] = [deliveriesFor(dan).length, deliveriesFor(eve).length];
  // Retries would come at least twice in 7 s; at most one already on its way goes out.
  await sleep(7000);
  assert.ok(deliveriesFor(dan).length <= danTries + 1, `tried ${deliveriesFor(dan).length - danTries} more times after the member read the room`);
  assert.ok(deliveriesFor(eve).length <= eveTries + 1, `tried ${deliveriesFor(eve).length - eveTries} more times while the member was connected`);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  for (const reason of ['read', 'online']) {
    assert.match(metrics, new RegExp(`scalify_notifications_skipped_total\\{reason="${reason}"\\} [1-9]`));
  }
  se.close();
});

test('nobody is told of what they read, while they are connected, in a muted room, or (level mentions) of what does not mention them', async () => {
  const [ann, bob, cat, dan] = [await register(server.url, 'ann'), await register(server.url, 'bob'), await register(server.url, 'cat'), await register(server.url, 'dan')];
  // Bob is connected: nothing, however long.
  const dmBob = await dm(ann, bob);
  const sb = await connect(server.url, bob.token);
  await send(ann, dmBob, 'while you are here', 'b1');
  // Cat reads at once.
  const dmCat = await dm(ann, cat);
  const r = await send(ann, dmCat, 'read me', 'c1');
  assert.equal((await api(server.url, 'PUT', `/api/rooms/${encodeURIComponent(dmCat)}/read`, { seq: r.body.message.seq }, cat.token)).status, 200);
  // A public room: Dan muted it, Cat only hears mentions.
  const room = uniqueRoom('quiet');
  const sa = await connect(server.url, ann.token);
  assert.equal((await call(sa, 'join', { room })).ok, true);
  for (const u of [cat, dan]) {
    const s = await connect(server.url, u.token);
    assert.equal((await call(s, 'join', { room })).ok, true);
    s.close();
  }
  assert.equal((await api(server.url, 'PUT', `/api/rooms/${room}/notifications`, { level: 'none' }, dan.token)).status, 200);
  assert.equal((await api(server.url, 'PUT', `/api/rooms/${room}/notifications`, { level: 'mentions' }, cat.token)).status, 200);
  await send(ann, room, 'plain news', 'r1');
  await send(ann, room, `@${cat.user.username} look`, 'r2');
  await sleep(DELAY_SECS * 1000 + 2500);
  assert.equal(deliveriesFor(bob).length, 0, 'told while connected');
  assert.equal(deliveriesFor(dan).length, 0, 'told of a muted room');
  const catGot = deliveriesFor(cat);
  assert.equal(catGot.length, 1, 'Cat: one notification, of the mention only');
  assert.deepEqual([catGot[0].json.room.name, catGot[0].json.count, catGot[0].json.mentions, catGot[0].json.first_seq], [room, 1, 1, 2]);
  // Positive control: once Bob leaves, a new message reaches him — that one only.
  sb.close();
  await send(ann, dmBob, 'now you are away', 'b2');
  const got = await eventually(() => deliveriesFor(bob)[0], 15000, 'a notification after Bob left');
  assert.deepEqual([got.json.count, got.json.first_seq, got.json.preview], [1, 2, 'now you are away']);
  sa.close();
});

test('Web Push: the payload is encrypted to the browser (RFC 8291) and signed with VAPID (RFC 8292); previews follow the setting; a 410 removes the subscription', async () => {
  const keyRes = await api(server.url, 'GET', '/api/push/vapid-public-key');
  assert.equal(keyRes.status, 200);
  const serverKey = keyRes.body.key;
  assert.equal(Buffer.from(serverKey, 'base64url').length, 65);
  let answers = [201, 410];
  const push = await listen(() => answers.shift() ?? 410);
  try {
    const [ann, bob] = [await register(server.url, 'ann'), await register(server.url, 'bob')];
    const keys = browserKeys();
    const endpoint = `${push.url}/push/${bob.user.id}`;
    const subscription = { endpoint, expirationTime: null, keys: { p256dh: keys.p256dh, auth: keys.authB64 } };
    // Bad input is refused clearly.
    assert.equal((await api(server.url, 'POST', '/api/push/subscriptions', subscription)).status, 401);
    for (const bad of [
      { ...subscription, keys: { p256dh: 'AAAA', auth: keys.authB64 } },
      { ...subscription, keys: { p256dh: keys.p256dh, auth: 'not base64url!' } },
      { ...subscription, endpoint: 'ftp://127.0.0.1/x' },
      { endpoint },
    ]) {
      const res = await api(server.url, 'POST', '/api/push/subscriptions', bad, bob.token);
      assert.equal(res.status, 400, JSON.stringify(bad));
      assert.equal(res.body.error.code, 'bad_request');
    }
    assert.equal((await api(server.url, 'POST', '/api/push/subscriptions', subscription, bob.token)).status, 201);

    const room = await dm(ann, bob);
    await send(ann, room, 'pushed to you', 'p1');
    const [req] = await eventually(() => (push.requests.length >= 1 ? push.requests : undefined), 15000, 'a push');
    assert.equal(req.path, `/push/${bob.user.id}`);
    assert.equal(req.headers['content-encoding'], 'aes128gcm');
    assert.ok(Number(req.headers.ttl) > 0);
    verifyVapid(req.headers.authorization, push.url, serverKey);
    const s = decryptPush(req.body, keys);
    assert.deepEqual([s.type, s.room.kind, s.count, s.preview], ['messages', 'dm', 1, 'pushed to you']);
    assert.deepEqual(s.from, ann.user);
    // Another browser's keys cannot read it.
    assert.throws(() => decryptPush(req.body, browserKeys()));

    // Previews off: the next one says who, not what. The push service answers 410 (gone).
    assert.equal((await api(server.url, 'PUT', '/api/me/settings', { previews: false }, bob.token)).status, 200);
    await send(ann, room, 'secret words', 'p2');
    const second = await eventually(() => push.requests[1], 15000, 'a second push');
    const s2 = decryptPush(second.body, keys);
    assert.equal(s2.preview, undefined);
    assert.equal(JSON.stringify(s2).includes('secret words'), false);
    // The subscription is gone: nothing to unsubscribe, and no more pushes.
    await eventually(async () => (await api(server.url, 'DELETE', '/api/push/subscriptions', { endpoint }, bob.token)).status === 404, 10000, 'the subscription removed');
    await send(ann, room, 'third', 'p3');
    await sleep(DELAY_SECS * 1000 + 2000);
    assert.equal(push.requests.length, 2);
  } finally {
    await push.close();
  }
});

test('a subscription is the subscriber\'s: another user cannot remove it; unsubscribing stops the pushes', async () => {
  const push = await listen(() => 201);
  try {
    const [ann, bob, eve] = [await register(server.url, 'ann'), await register(server.url, 'bob'), await register(server.url, 'eve')];
    const keys = browserKeys();
    const endpoint = `${push.url}/push/x`;
    const sub = { endpoint, keys: { p256dh: keys.p256dh, auth: keys.authB64 } };
    assert.equal((await api(server.url, 'POST', '/api/push/subscriptions', sub, bob.token)).status, 201);
    assert.equal((await api(server.url, 'DELETE', '/api/push/subscriptions', { endpoint }, eve.token)).status, 404);
    assert.equal((await api(server.url, 'DELETE', '/api/push/subscriptions', { endpoint }, bob.token)).status, 204);
    const room = await dm(ann, bob);
    await send(ann, room, 'hello', 'h1');
    // The webhook hears of it (positive control); the push endpoint does not.
    await eventually(() => deliveriesFor(bob)[0], 15000, 'the webhook delivery');
    assert.equal(push.requests.length, 0);
  } finally {
    await push.close();
  }
});

test('an endpoint subscribed by another user (someone else signed in on that browser) no longer gets the first user\'s notifications, even one already queued', async () => {
  // The push service fails the first try, so Bob's notification waits for its retry.
  const push = await listen(() => 500);
  try {
    const [ann, bob, cat] = [await register(server.url, 'ann'), await register(server.url, 'bob'), await register(server.url, 'cat')];
    const keys = browserKeys();
    const endpoint = `${push.url}/push/shared-browser`;
    const sub = { endpoint, keys: { p256dh: keys.p256dh, auth: keys.authB64 } };
    assert.equal((await api(server.url, 'POST', '/api/push/subscriptions', sub, bob.token)).status, 201);
    const room = await dm(ann, bob);
    await send(ann, room, 'for bob only', 'm1');
    await eventually(() => push.requests.length >= 1, 15000, 'the first try');
    // Cat signs in on that browser: the endpoint is hers now.
    assert.equal((await api(server.url, 'POST', '/api/push/subscriptions', sub, cat.token)).status, 201);
    const tries = push.requests.length;
    await sleep(5000);
    assert.ok(push.requests.length <= tries + 1, `Bob's notification pushed ${push.requests.length - tries} more times to Cat's browser`);
    // Bob's webhook notification still went out (a positive control of the pipeline).
    assert.ok(deliveriesFor(bob).length >= 1);
  } finally {
    await push.close();
  }
});

test('by default an endpoint must be https:// on a public host: users cannot point the server into its own network', async () => {
  const strict = await startServer({ args: ['--rate-limit-per-sec', '0'] });
  try {
    const bob = await register(strict.url, 'bob');
    const keys = browserKeys();
    for (const endpoint of ['http://push.example.com/x', 'https://127.0.0.1/x', 'https://localhost:8443/x', 'https://10.0.0.8/x']) {
      const res = await api(strict.url, 'POST', '/api/push/subscriptions', { endpoint, keys: { p256dh: keys.p256dh, auth: keys.authB64 } }, bob.token);
      assert.equal(res.status, 400, endpoint);
    }
    const ok = await api(strict.url, 'POST', '/api/push/subscriptions', { endpoint: 'https://push.example.com/x', keys: { p256dh: keys.p256dh, auth: keys.authB64 } }, bob.token);
    assert.equal(ok.status, 201);
  } finally {
    await strict.stop(); strict.cleanup();
  }
});

test('a notification pending when the node is killed -9 is sent after it restarts, once', async () => {
  const received = await listen(() => 200);
  const args = ['--rate-limit-per-sec', '0', '--notify-after-secs', '3', '--notify-webhook-url', `${received.url}/hook`];
  const env = { SCALIFY_NOTIFY_WEBHOOK_SECRET: SECRET };
  let node = await startServer({ args, env });
  const dir = node.dir;
  try {
    const [ann, bob] = [await register(node.url, 'ann'), await register(node.url, 'bob')];
    const r = await api(node.url, 'POST', '/api/dms', { username: bob.user.username }, ann.token);
    const room = r.body.room.name;
    assert.equal((await api(node.url, 'POST', `/api/rooms/${encodeURIComponent(room)}/messages`, { text: 'before the crash', client_id: 'k1' }, ann.token)).status, 201);
    await node.stop('SIGKILL');
    assert.equal(received.requests.length, 0);
    node = await startServer({ dataDir: dir, args, env });
    const got = await eventually(() => received.requests[0], 20000, 'the notification after the restart');
    const s = JSON.parse(got.body.toString('utf8'));
    assert.deepEqual([s.user.id, s.count, s.preview], [bob.user.id, 1, 'before the crash']);
    await sleep(4000);
    assert.equal(received.requests.length, 1);
  } finally {
    await node.stop(); node.cleanup();
    await received.close();
  }
});
