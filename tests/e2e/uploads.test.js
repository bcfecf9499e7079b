// Attachments: POST /api/rooms/{room}/uploads streams a file to the room's store, a `send`
// with `attachment` carries it, members download it (safely typed, nosniff, a disposition),
// images get a preview and a decompression bomb is refused, deleting the message deletes the
// file. Messages go through the official socket.io-client over both transports.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, existsSync } from 'node:fs';
import path from 'node:path';
import { startServer, api, register, connect, call, collect, eventually, uniqueRoom } from './harness.js';
import { rgbPng, bombPng, pngSize } from './png.js';

const LIMIT = 1024 * 1024;
let server;
before(async () => {
  server = await startServer({ args: ['--rate-limit-per-sec', '0', '--upload-max-bytes', String(LIMIT)] });
});
after(async () => { await server.stop(); server.cleanup(); });

/** Uploads `body` (bytes, or a stream) named `name`; `{status, body}`. */
async function upload(token, room, name, body, headers = {}) {
  const init = { method: 'POST', headers: { ...headers }, body };
  if (token) init.headers.authorization = `Bearer ${token}`;
  if (body instanceof ReadableStream) init.duplex = 'half';
  const query = name === undefined ? '' : `?${new URLSearchParams({ name })}`;
  const res = await fetch(`${server.url}/api/rooms/${room}/uploads${query}`, init);
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: res.status, body: json };
}

async function download(token, room, id, suffix = '') {
  const res = await fetch(`${server.url}/api/rooms/${room}/uploads/${id}${suffix}`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** Every file under the server's file store. */
function storedFiles() {
  const root = path.join(server.dir, 'files');
  if (!existsSync(root)) return [];
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath ?? e.path, e.name));
}

test('an image is uploaded, sent over both transports, downloaded and previewed by members only', async () => {
  const a = await register(server.url, 'ann');
  const b = await register(server.url, 'bob');
  const c = await register(server.url, 'cat');
  const sa = await connect(server.url, a.token, { transports: ['websocket'] });
  const sb = await connect(server.url, b.token, { transports: ['polling'] });
  const room = uniqueRoom('pics');
  for (const s of [sa, sb]) assert.equal((await call(s, 'join', { room })).ok, true);
  const picture = rgbPng(600, 400);
  // The name and type the client gives are no guide: the bytes are.
  const up = await upload(a.token, room, '../../holiday.html', picture, { 'content-type': 'text/html' });
  assert.equal(up.status, 201, JSON.stringify(up.body));
  assert.deepEqual(
    { ...up.body.upload, id: undefined },
    { id: undefined, name: 'holiday.html', size: picture.length, content_type: 'image/png', width: 600, height: 400 },
  );
  const id = up.body.upload.id;

  // A file alone (no caption) over WebSocket; bob, on polling, gets it live.
  const seen = collect(sb, 'message');
  const ack = await call(sa, 'send', { room, attachment: id, client_id: 'f1' });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  assert.equal(ack.message.text, '');
  assert.deepEqual(ack.message.attachment, up.body.upload);
  await eventually(() => seen.items.find((m) => m.id === ack.message.id));
  assert.deepEqual(seen.items.find((m) => m.id === ack.message.id).attachment, up.body.upload);
  // A retry is the same message.
  const again = await call(sa, 'send', { room, attachment: id, client_id: 'f1' });
  assert.equal(again.message.id, ack.message.id);

  // Downloads: the bytes, typed as found, never sniffed, in a sandbox.
  const got = await download(b.token, room, id);
  assert.equal(got.status, 200);
  assert.ok(got.bytes.equals(picture));
  assert.equal(got.headers.get('content-type'), 'image/png');
  assert.equal(got.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(got.headers.get('content-disposition'), `inline; filename="holiday.html"; filename*=UTF-8''holiday.html`);
  assert.match(got.headers.get('content-security-policy'), /sandbox/);
  const preview = await download(b.token, room, id, '/preview');
  assert.equal(preview.status, 200);
  assert.equal(preview.headers.get('content-type'), 'image/png');
  assert.deepEqual(pngSize(preview.bytes), { width: 320, height: 213 });
  assert.ok(preview.bytes.length < picture.length);

  // Not a member: refused like the room's messages; no token: unauthorized.
  assert.equal((await download(c.token, room, id)).status, 403);
  assert.equal((await download(undefined, room, id)).status, 401);
  assert.equal((await download(b.token, room, '01ARZ3NDEKTSV4RRFFQ69G5FAV')).status, 404);
  assert.equal((await download(b.token, room, 'nonsense')).status, 400);
  const secret = uniqueRoom('hush');
  assert.equal((await api(server.url, 'POST', '/api/rooms', { name: secret, kind: 'private' }, a.token)).status, 201);
  const hidden = await upload(a.token, secret, 'plan.png', rgbPng(20, 20));
  assert.equal(hidden.status, 201);
  assert.equal((await download(c.token, secret, hidden.body.upload.id)).status, 404);
  assert.equal((await upload(c.token, secret, 'x.txt', 'hi')).status, 404);
  // An upload is named by its room: another room's id finds nothing.
  assert.equal((await download(b.token, room, hidden.body.upload.id)).status, 404);

  // With a caption, over polling; history and sync carry the file too.
  const doc = await upload(b.token, room, 'notes.txt', 'line one\nline two\n');
  assert.equal(doc.body.upload.content_type, 'text/plain; charset=utf-8');
  const sent = await call(sb, 'send', { room, text: 'my notes', attachment: doc.body.upload.id, client_id: 'f2' });
  assert.equal(sent.ok, true, JSON.stringify(sent));
  const history = await api(server.url, 'GET', `/api/rooms/${room}/messages`, undefined, a.token);
  assert.deepEqual(history.body.messages.map((m) => m.attachment?.id), [id, doc.body.upload.id]);
  const synced = await call(sa, 'sync', { rooms: { [room]: 0 } });
  assert.deepEqual(synced.rooms[room].messages.map((m) => m.attachment?.name), ['holiday.html', 'notes.txt']);
  const text = await download(a.token, room, doc.body.upload.id);
  assert.equal(text.headers.get('content-disposition'), `attachment; filename="notes.txt"; filename*=UTF-8''notes.txt`);
  assert.equal((await download(a.token, room, doc.body.upload.id, '/preview')).status, 404);
  for (const s of [sa, sb]) s.close();
});

test('markup is served as text to save, and a file name cannot break the header', async () => {
  const a = await register(server.url, 'ann');
  const room = uniqueRoom('mark');
  assert.equal((await api(server.url, 'POST', '/api/rooms', { name: room, kind: 'public' }, a.token)).status, 201);
  const up = await upload(a.token, room, 'résumé "final".svg', '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', { 'content-type': 'image/svg+xml' });
  assert.equal(up.status, 201, JSON.stringify(up.body));
  assert.equal(up.body.upload.content_type, 'text/plain; charset=utf-8');
  assert.equal(up.body.upload.width, undefined);
  const got = await download(a.token, room, up.body.upload.id);
  assert.equal(got.headers.get('content-type'), 'text/plain; charset=utf-8');
  assert.equal(
    got.headers.get('content-disposition'),
    `attachment; filename="r_sum_ _final_.svg"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.svg`,
  );
  const binary = await upload(a.token, room, 'blob.bin', Buffer.from([0, 1, 2, 3, 255]));
  assert.equal(binary.body.upload.content_type, 'application/octet-stream');
});

test('limits: size (announced or streamed), empty files, names, decompression bombs; nothing is left behind', async () => {
  const a = await register(server.url, 'ann');
  const room = uniqueRoom('big');
  assert.equal((await api(server.url, 'POST', '/api/rooms', { name: room, kind: 'public' }, a.token)).status, 201);
  const before = storedFiles().length;
  // Announced too large: refused before the body.
  let r = await upload(a.token, room, 'big.bin', Buffer.alloc(LIMIT + 1, 7));
  assert.equal(r.status, 413, JSON.stringify(r.body));
  assert.equal(r.body.error.code, 'too_large');
  // Streamed without a length: refused once past the limit.
  let sent = 0;
  const stream = new ReadableStream({
    pull(controller) {
      if (sent > 3 * LIMIT) return controller.close();
      sent += 64 * 1024;
      controller.enqueue(new Uint8Array(64 * 1024).fill(1));
    },
  });
  r = await upload(a.token, room, 'stream.bin', stream);
  assert.equal(r.status, 413, JSON.stringify(r.body));
  assert.equal(r.body.error.code, 'too_large');
  // Exactly the limit is fine.
  r = await upload(a.token, room, 'edge.bin', Buffer.alloc(LIMIT, 7));
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal(r.body.upload.size, LIMIT);
  // Empty, unnamed, badly named.
  r = await upload(a.token, room, 'empty.txt', Buffer.alloc(0));
  assert.equal(r.status, 400);
  assert.match(r.body.error.message, /empty/);
  assert.equal((await upload(a.token, room, undefined, 'x')).status, 400);
  assert.equal((await upload(a.token, room, '../', 'x')).status, 400);
  assert.equal((await upload(a.token, room, 'x'.repeat(300), 'x')).status, 400);
  assert.equal((await upload(undefined, room, 'x.txt', 'x')).status, 401);
  // A 30,000 × 30,000 picture in ~110 KB: refused before it is decoded.
  const bomb = bombPng(30000);
  assert.ok(bomb.length < LIMIT / 4, `${bomb.length}`);
  r = await upload(a.token, room, 'bomb.png', bomb);
  assert.equal(r.status, 413, JSON.stringify(r.body));
  assert.match(r.body.error.message, /30000×30000 pixels; the limit is 40000000/);
  // Bytes that claim to be an image but are not.
  r = await upload(a.token, room, 'broken.png', Buffer.concat([bomb.subarray(0, 40), Buffer.from('garbage')]));
  assert.equal(r.status, 400, JSON.stringify(r.body));
  // The refused ones left nothing; the one accepted left its file, its description, and its
  // mark as waiting for a message.
  assert.equal(storedFiles().length, before + 3);
  // The server is still up and well.
  assert.equal((await api(server.url, 'GET', '/healthz')).status, 200);
});

test('a file is attached by its uploader only, and deleting the message deletes it', async () => {
  const a = await register(server.url, 'ann');
  const b = await register(server.url, 'bob');
  const sa = await connect(server.url, a.token, { transports: ['polling'] });
  const sb = await connect(server.url, b.token, { transports: ['websocket'] });
  const room = uniqueRoom('del');
  for (const s of [sa, sb]) assert.equal((await call(s, 'join', { room })).ok, true);
  const up = await upload(a.token, room, 'cat.png', rgbPng(64, 48));
  const id = up.body.upload.id;
  const stolen = await call(sb, 'send', { room, attachment: id, client_id: 's1' });
  assert.deepEqual(stolen, { ok: false, error: { code: 'not_found', message: 'no such upload' } });
  const bad = await call(sb, 'send', { room, attachment: 'nope', client_id: 's2' });
  assert.equal(bad.error.code, 'bad_request');
  const empty = await call(sa, 'send', { room, text: '', client_id: 's3' });
  assert.equal(empty.error.code, 'bad_request');
  // REST sends carry files too.
  const rest = await api(server.url, 'POST', `/api/rooms/${room}/messages`, { attachment: id, client_id: 'r1' }, a.token);
  assert.equal(rest.status, 201, JSON.stringify(rest.body));
  assert.equal(rest.body.message.attachment.id, id);
  // One upload, one message: another send naming it is refused.
  const again = await api(server.url, 'POST', `/api/rooms/${room}/messages`, { attachment: id, client_id: 'r2' }, a.token);
  assert.equal(again.status, 409, JSON.stringify(again.body));
  assert.equal(again.body.error.code, 'conflict');
  const ours = storedFiles().filter((f) => f.includes(id));
  assert.equal(ours.length, 3, 'the file, its preview and its description');

  const gone = await call(sa, 'delete', { room, id: rest.body.message.id, client_id: 'd1' });
  assert.equal(gone.ok, true, JSON.stringify(gone));
  assert.equal((await download(b.token, room, id)).status, 404);
  assert.equal((await download(b.token, room, id, '/preview')).status, 404);
  assert.deepEqual(storedFiles().filter((f) => f.includes(id)), []);
  const history = await api(server.url, 'GET', `/api/rooms/${room}/messages`, undefined, b.token);
  const placeholder = history.body.messages.find((m) => m.id === rest.body.message.id);
  assert.equal(placeholder.deleted, true);
  assert.equal(placeholder.attachment, undefined);
  for (const s of [sa, sb]) s.close();
});

test('an upload no message takes in time is deleted; one a message took stays', async () => {
  const short = await startServer({ args: ['--rate-limit-per-sec', '0', '--upload-expiry-secs', '2'] });
  try {
    const a = await register(short.url, 'ann');
    const room = uniqueRoom('exp');
    assert.equal((await api(short.url, 'POST', '/api/rooms', { name: room, kind: 'public' }, a.token)).status, 201);
    const up = async (name) => {
      const res = await fetch(`${short.url}/api/rooms/${room}/uploads?name=${name}`, {
        method: 'POST', headers: { authorization: `Bearer ${a.token}` }, body: `contents of ${name}`,
      });
      assert.equal(res.status, 201);
      return (await res.json()).upload.id;
    };
    const [kept, left] = [await up('kept.txt'), await up('left.txt')];
    const sent = await api(short.url, 'POST', `/api/rooms/${room}/messages`, { attachment: kept, client_id: 'k1' }, a.token);
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    const get = async (id) => (await fetch(`${short.url}/api/rooms/${room}/uploads/${id}`, { headers: { authorization: `Bearer ${a.token}` } })).status;
    const onDisk = (id) => readdirSync(path.join(short.dir, 'files'), { recursive: true }).filter((f) => String(f).includes(id));
    await eventually(async () => (await get(left)) === 404, 20000, 'the unsent upload swept');
    await eventually(() => onDisk(left).length === 0, 20000, 'its files deleted');
    assert.equal(await get(kept), 200);
    assert.equal(onDisk(kept).length, 2, 'the file and its description');
    const late = await api(short.url, 'POST', `/api/rooms/${room}/messages`, { attachment: left, client_id: 'k2' }, a.token);
    assert.equal(late.status, 404);
  } finally {
    await short.stop();
    short.cleanup();
  }
});

test('a node shutting down does not wait for a slow upload: it is refused, removed, and the node exits at once', async () => {
  const node = await startServer({ args: ['--rate-limit-per-sec', '0'] });
  try {
    const a = await register(node.url, 'ann');
    const room = uniqueRoom('slow');
    assert.equal((await api(node.url, 'POST', '/api/rooms', { name: room, kind: 'public' }, a.token)).status, 201);
    // One chunk, then nothing for longer than the test runs (the stall limit is 30 s).
    let sentOne = false;
    const trickle = new ReadableStream({
      async pull(c) {
        if (!sentOne) { sentOne = true; c.enqueue(new Uint8Array(1024).fill(1)); return; }
        await new Promise(() => {});
      },
    });
    const answer = fetch(`${node.url}/api/rooms/${room}/uploads?name=slow.bin`, {
      method: 'POST', headers: { authorization: `Bearer ${a.token}` }, body: trickle, duplex: 'half',
    }).then(async (r) => ({ status: r.status, body: await r.json() }), (e) => ({ error: String(e) }));
    await eventually(() => readdirSync(path.join(node.dir, 'files'), { recursive: true }).some((f) => String(f).startsWith('pending')), 10000, 'the upload under way');
    const started = Date.now();
    const exited = await node.stop('SIGTERM');
    assert.equal(exited.code, 0);
    assert.ok(Date.now() - started < 10000, `took ${Date.now() - started} ms`);
    const got = await answer;
    if (got.status !== undefined) {
      assert.equal(got.status, 500, JSON.stringify(got));
      assert.match(got.body.error.message, /shutting down/);
    }
    const left = readdirSync(path.join(node.dir, 'files'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    assert.deepEqual(left.map((e) => e.name), []);
  } finally {
    await node.stop();
    node.cleanup();
  }
});
