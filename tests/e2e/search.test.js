// Search: GET /api/search over the rooms the user is a member of, newest first, paged, in
// step with edits and deletions; every bad input a clear error. Messages are sent with the
// official socket.io-client over both transports; search is REST against the real binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, api, register, connect, call, uniqueRoom } from './harness.js';

let server;
before(async () => { server = await startServer({ args: ['--rate-limit-per-sec', '0'] }); });
after(async () => { await server.stop(); server.cleanup(); });

const search = (token, params) => api(server.url, 'GET', `/api/search?${new URLSearchParams(params)}`, undefined, token);

test('search finds the words of my rooms only, newest first, paged, with the matching fragment', async () => {
  const a = await register(server.url, 'ann');
  const b = await register(server.url, 'bob');
  const sa = await connect(server.url, a.token, { transports: ['websocket'] });
  const sb = await connect(server.url, b.token, { transports: ['polling'] });
  const open = uniqueRoom('srch');
  const closed = uniqueRoom('hush');
  assert.equal((await call(sa, 'join', { room: open })).ok, true);
  assert.equal((await call(sb, 'join', { room: open })).ok, true);
  const created = await api(server.url, 'POST', '/api/rooms', { name: closed, kind: 'private' }, a.token);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  // A word nobody else's test uses, so the whole server's index can be searched.
  const w = `zq${process.pid}${String(Math.random()).slice(2, 7)}`;
  const sends = [
    [sa, open, `The ${w} launch is on Friday, after the long review of every open question we had`],
    [sb, open, `lunch on friday?`],
    [sb, open, `${w} science is hard`],
    [sa, closed, `secret ${w} plans`],
  ];
  const ids = [];
  for (const [s, room, text] of sends) {
    const ack = await call(s, 'send', { room, text, client_id: `c${ids.length}` });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    ids.push(ack.message.id);
  }
  const hits = async (token, params) => {
    const r = await search(token, params);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  let r = await hits(a.token, { q: w.toUpperCase() });
  assert.deepEqual(r.results.map((h) => h.message.id), [ids[3], ids[2], ids[0]]);
  assert.equal(r.has_more, false);
  assert.equal(r.results[0].message.room, closed);
  assert.equal(r.results[0].message.sender.username, a.user.username);
  assert.match(r.results[2].fragment, new RegExp(`^The ${w} launch is on Friday`));
  assert.ok(r.results[2].fragment.length < sends[0][2].length + 1);
  // Bob is not in the private room: its message is never his hit, by any query.
  r = await hits(b.token, { q: w });
  assert.deepEqual(r.results.map((h) => h.message.id), [ids[2], ids[0]]);
  r = await hits(b.token, { q: `secret or plans or ${w}` });
  assert.ok(!r.results.some((h) => h.message.room === closed));
  // The answer names the words to mark: lower case, the excluded ones left out.
  assert.deepEqual((await hits(a.token, { q: `${w.toUpperCase()} "Launch is" or -science` })).words, [w, 'launch', 'is']);
  // Query language: all words, phrases, or, exclusion.
  assert.deepEqual((await hits(a.token, { q: `${w} friday` })).results.map((h) => h.message.id), [ids[0]]);
  assert.deepEqual((await hits(a.token, { q: `"${w} science"`, room: open })).results.map((h) => h.message.id), [ids[2]]);
  assert.deepEqual((await hits(a.token, { q: `${w} -science -"launch is"` })).results.map((h) => h.message.id), [ids[3]]);
  // One room only, and pages.
  r = await hits(a.token, { q: w, room: open, limit: '1' });
  assert.deepEqual([r.results.map((h) => h.message.id), r.has_more], [[ids[2]], true]);
  r = await hits(a.token, { q: w, room: open, limit: '1', before: ids[2] });
  assert.deepEqual([r.results.map((h) => h.message.id), r.has_more], [[ids[0]], false]);

  // An edit changes what finds the message, a deletion removes it.
  assert.equal((await call(sa, 'edit', { room: open, id: ids[0], text: `${w} launch postponed`, client_id: 'e1' })).ok, true);
  r = await hits(b.token, { q: `${w} friday` });
  assert.deepEqual(r.results, []);
  r = await hits(b.token, { q: `${w} postponed` });
  assert.deepEqual(r.results.map((h) => [h.message.id, h.message.text, h.message.kind]), [[ids[0], `${w} launch postponed`, 'message']]);
  assert.equal(typeof r.results[0].message.edited_at, 'number');
  assert.equal((await call(sb, 'delete', { room: open, id: ids[2], client_id: 'd1' })).ok, true);
  r = await hits(a.token, { q: w });
  assert.deepEqual(r.results.map((h) => h.message.id), [ids[3], ids[0]]);
  // Leaving a room leaves its messages out of one's search.
  assert.equal((await api(server.url, 'POST', `/api/rooms/${open}/leave`, undefined, b.token)).status, 204);
  assert.deepEqual((await hits(b.token, { q: w })).results, []);
  sa.close();
  sb.close();
});

test('bad searches get clear errors; rooms one cannot read answer as history does', async () => {
  const a = await register(server.url, 'ann');
  const c = await register(server.url, 'cid');
  const closed = uniqueRoom('hush');
  assert.equal((await api(server.url, 'POST', '/api/rooms', { name: closed, kind: 'private' }, a.token)).status, 201);
  const pub = uniqueRoom('pub');
  const sa = await connect(server.url, a.token);
  assert.equal((await call(sa, 'join', { room: pub })).ok, true);
  sa.close();
  const cases = [
    [{}, 400, /at least one word/],
    [{ q: '   ' }, 400, /at least one word/],
    [{ q: '-only -excluded' }, 400, /at least one word/],
    [{ q: 'x'.repeat(201) }, 400, /at most 200 characters/],
    [{ q: 'a '.repeat(17) }, 400, /at most 16 words/],
    [{ q: 'x', limit: '0' }, 400, /limit/],
    [{ q: 'x', limit: '51' }, 400, /limit/],
    [{ q: 'x', limit: 'many' }, 400, /.+/],
    [{ q: 'x', before: 'not-an-id' }, 400, /before/],
    [{ q: 'x', room: 'Bad Name!' }, 400, /.+/],
    [{ q: 'x', room: closed }, 404, /.+/],
    [{ q: 'x', room: pub }, 403, /not a member/],
  ];
  for (const [params, status, message] of cases) {
    const r = await search(c.token, params);
    assert.equal(r.status, status, `${JSON.stringify(params)}: ${JSON.stringify(r.body)}`);
    assert.equal(typeof r.body.error.code, 'string');
    assert.match(r.body.error.message, message, JSON.stringify(params));
  }
  assert.equal((await search(undefined, { q: 'x' })).status, 401);
  // What an engine's own query syntax would choke on is plain text here.
  for (const q of ['NEAR(a b)', 'col:x', 'a*', '"', '"" -', 'a & b | !c', "o'brien", '(((', '\u0000x']) {
    const r = await search(a.token, { q });
    assert.ok([200, 400].includes(r.status), `${q}: ${JSON.stringify(r.body)}`);
    if (r.status === 400) assert.match(r.body.error.message, /at least one word/, q);
  }
});
