// The web UI in a real browser: Debian's Chromium driven by playwright-core, against the real
// binary. Two users in two browser contexts. Screenshots of the main screens are saved under
// test-output/screenshots/ for a reviewer.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { BIN, startServer, api, register, connect, call, uniqueRoom, sleep, eventually, allMessages } from './harness.js';
import { freePort } from './cluster.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SHOTS = path.resolve(here, '../../test-output/screenshots');
mkdirSync(SHOTS, { recursive: true });

let server; let browser;
before(async () => {
  server = await startServer({ args: ['--rate-limit-per-sec', '0'] });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
});
after(async () => {
  await browser?.close();
  await server.stop(); server.cleanup();
});

/**
 * A TCP proxy in front of the server, so a test can cut one browser's network and restore it
 * (the page's origin is the proxy, so same-origin checks hold).
 */
async function proxy(target) {
  const [host, port] = target.replace('http://', '').split(':');
  const open = new Set();
  let online = true;
  const srv = net.createServer((client) => {
    if (!online) { client.destroy(); return; }
    const up = net.connect(Number(port), host);
    open.add(client); open.add(up);
    client.pipe(up); up.pipe(client);
    const done = () => { client.destroy(); up.destroy(); open.delete(client); open.delete(up); };
    client.on('error', done); up.on('error', done); client.on('close', done); up.on('close', done);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    cut() { online = false; for (const s of open) s.destroy(); open.clear(); },
    restore() { online = true; },
    close: () => new Promise((r) => { for (const s of open) s.destroy(); srv.close(r); }),
  };
}

async function newUser(url, { name, colorScheme = 'light', viewport = { width: 1200, height: 800 } } = {}) {
  const context = await browser.newContext({ colorScheme, viewport });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  const username = `${name}${process.pid}${Math.floor(Math.random() * 1e6)}`.slice(0, 32);
  return { context, page, username, errors };
}

async function signUp(u) {
  const { page } = u;
  await page.getByRole('tab', { name: 'Create account' }).click();
  await page.getByLabel('Username').fill(u.username);
  await page.getByLabel('Password').fill('correct-horse');
  await page.locator('form.card button[type=submit]').click();
  await page.getByText('Sign out').waitFor();
}

/** Creates a room in the app's "New room" dialog and waits until it is open. */
async function createRoom(page, room) {
  await page.getByRole('button', { name: 'New room' }).click();
  await page.getByPlaceholder('room-name').fill(room);
  await page.getByRole('button', { name: 'Create' }).click();
  await page.getByRole('heading', { name: `#${room}` }).waitFor();
}

async function openRoom(page, room) {
  await page.locator('.sidebar .room-link', { hasText: `#${room}` }).click();
  await page.getByRole('heading', { name: `#${room}` }).waitFor();
}

async function send(page, text) {
  const box = page.locator('.composer textarea');
  await box.fill(text);
  await box.press('Enter');
}

const messages = (page) => page.locator('.messages .msg').allTextContents();

const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** axe-core's serious and critical violations on the page as it is now: "rule: target …". */
async function accessibilityProblems(page) {
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations);
  return violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

test('the page talks to its own origin only: its WebSocket opens under the CSP, a WebSocket to another host is refused', async () => {
  const u = await newUser(server.url, { name: 'csp' });
  try {
    const own = u.page.waitForEvent('websocket', { timeout: 30000 });
    await signUp(u);
    const ws = await own;
    assert.ok(ws.url().startsWith(server.url.replace('http://', 'ws://')), ws.url());
    // Another port is another origin: the browser refuses to open it (connect-src 'self').
    const verdict = await u.page.evaluate(() => new Promise((resolve) => {
      document.addEventListener('securitypolicyviolation', (e) => resolve(`refused: ${e.violatedDirective}`), { once: true });
      const s = new WebSocket('ws://127.0.0.1:9/');
      s.onerror = () => setTimeout(() => resolve('opened or failed without the CSP'), 1000);
    }));
    assert.match(verdict, /^refused: connect-src/);
    assert.deepEqual(u.errors, []);
  } finally { await u.context.close(); }
});

test('two users sign up, join a room, chat both ways, see presence and typing', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob', colorScheme: 'dark' });
  try {
    await ann.page.screenshot({ path: `${SHOTS}/01-sign-in.png` });
    // Bad credentials are shown inline.
    await ann.page.getByLabel('Username').fill('nobody-here');
    await ann.page.getByLabel('Password').fill('wrong-password');
    await ann.page.locator('form.card button[type=submit]').click();
    await ann.page.getByRole('alert').filter({ hasText: 'invalid username or password' }).waitFor();
    // Four more failures on that name (the throttle's free five), then the form says how long
    // to wait.
    for (let i = 0; i < 4; i++) {
      const r = await ann.page.request.post(`${server.url}/api/auth/login`, { data: { username: 'nobody-here', password: 'wrong-password' } });
      assert.equal(r.status(), 401);
    }
    await ann.page.locator('form.card button[type=submit]').click();
    await ann.page.getByRole('alert').filter({ hasText: /too many failed logins — try again in \d+ s/ }).waitFor();

    await signUp(ann);
    await signUp(bob);
    const room = uniqueRoom('lobby');
    await createRoom(ann.page, room);

    // Bob finds the room under "Browse rooms" (after a reload: the list is fetched at start).
    await bob.page.reload();
    await bob.page.getByRole('button', { name: `Join ${room}` }).click();
    await bob.page.getByRole('heading', { name: `#${room}` }).waitFor();

    await send(ann.page, 'hello bob');
    await bob.page.locator('.msg', { hasText: 'hello bob' }).waitFor();
    await send(bob.page, 'hi ann');
    await ann.page.locator('.msg', { hasText: 'hi ann' }).waitFor();
    assert.deepEqual(await messages(ann.page), ['hello bob', 'hi ann']);
    assert.deepEqual(await messages(bob.page), ['hello bob', 'hi ann']);
    // Sender names label the groups.
    assert.ok((await ann.page.locator('.group .sender').allTextContents()).includes(bob.username));

    // Presence: both online, shown with dots in the member list.
    await ann.page.getByText('2 online').waitFor();
    await ann.page.getByRole('button', { name: 'Members' }).click();
    await ann.page.locator('.members li', { hasText: bob.username }).locator('.dot.on').waitFor();

    // Typing: Bob types, Ann sees it.
    await bob.page.locator('.composer textarea').pressSequentially('typing…', { delay: 20 });
    await ann.page.getByText(`${bob.username} is typing…`).waitFor();
    await ann.page.screenshot({ path: `${SHOTS}/02-room-light.png` });
    await bob.page.screenshot({ path: `${SHOTS}/03-room-dark.png` });

    // Shift+Enter makes a new line; Enter sends it as one message.
    const box = bob.page.locator('.composer textarea');
    await box.fill('line one');
    await box.press('Shift+Enter');
    await box.pressSequentially('line two');
    await box.press('Enter');
    await ann.page.locator('.msg', { hasText: 'line two' }).waitFor();
    assert.equal((await messages(ann.page)).at(-1), 'line one\nline two');

    // Bob leaves: Ann sees him go offline.
    await bob.context.close();
    await ann.page.locator('.members li', { hasText: bob.username }).locator('.dot:not(.on)').waitFor();
    await ann.page.getByText('1 online').waitFor();
    assert.deepEqual(ann.errors, []);
  } finally {
    await ann.context.close();
    await bob.context.close().catch(() => {});
  }
});

test('sign out ends the session on the server: another tab of it is signed out at once and its token stops working', async () => {
  const u = await newUser(server.url, { name: 'out' });
  try {
    await signUp(u);
    const second = await u.context.newPage();
    await second.goto(server.url);
    await second.getByText('Sign out').waitFor();
    const token = await second.evaluate(() => JSON.parse(localStorage.getItem('scalify.session')).token);
    assert.equal((await api(server.url, 'GET', '/api/me', undefined, token)).status, 200);
    await u.page.getByText('Sign out').click();
    // The other tab's socket is closed by the server; reconnecting is refused: signed out.
    await second.getByRole('tab', { name: 'Create account' }).waitFor({ timeout: 10000 });
    assert.equal((await api(server.url, 'GET', '/api/me', undefined, token)).status, 401);
    assert.deepEqual(u.errors, []);
  } finally { await u.context.close(); }
});

test('settings: a password change signs out the other devices; deleting the account signs out and the account is gone', async () => {
  const u = await newUser(server.url, { name: 'set' });
  const other = await browser.newContext();
  try {
    await signUp(u);
    // The same account on another device.
    const phone = await other.newPage();
    await phone.goto(server.url);
    await phone.getByLabel('Username').fill(u.username);
    await phone.getByLabel('Password').fill('correct-horse');
    await phone.locator('form.card button[type=submit]').click();
    await phone.getByText('Sign out').waitFor();

    await u.page.getByRole('button', { name: 'Settings' }).click();
    const change = u.page.getByRole('form', { name: 'Change password' });
    await change.getByLabel('Current password').fill('not-my-password');
    await change.getByLabel('New password').fill('a-new-password');
    await change.getByRole('button', { name: 'Change password' }).click();
    await u.page.getByRole('alert').filter({ hasText: 'invalid username or password' }).waitFor();
    await change.getByLabel('Current password').fill('correct-horse');
    await change.getByRole('button', { name: 'Change password' }).click();
    await u.page.getByRole('status').filter({ hasText: 'Password changed' }).waitFor();
    // The other device is signed out at once; this one stays.
    await phone.getByRole('tab', { name: 'Create account' }).waitFor({ timeout: 10000 });
    assert.equal((await api(server.url, 'POST', '/api/auth/login', { username: u.username, password: 'correct-horse' })).status, 401);

    const del = u.page.getByRole('form', { name: 'Delete account' });
    await del.getByLabel('Password').fill('a-new-password');
    u.page.once('dialog', (d) => void d.accept());
    await del.getByRole('button', { name: 'Delete my account' }).click();
    await u.page.getByRole('tab', { name: 'Create account' }).waitFor();
    assert.equal((await api(server.url, 'POST', '/api/auth/login', { username: u.username, password: 'a-new-password' })).status, 401);
    assert.deepEqual(u.errors, []);
  } finally { await u.context.close(); await other.close(); }
});

test('offline and back: the banner shows, missed messages appear exactly once, a send that failed offline is made again on reconnect with the same client_id', async () => {
  const net1 = await proxy(server.url);
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(net1.url, { name: 'bob' });
  try {
    await signUp(ann);
    await signUp(bob);
    const room = uniqueRoom('net');
    await createRoom(ann.page, room);
    await bob.page.reload();
    await bob.page.getByRole('button', { name: `Join ${room}` }).click();
    await send(ann.page, 'before');
    await bob.page.locator('.msg', { hasText: 'before' }).waitFor();

    net1.cut();
    await bob.page.getByRole('status').filter({ hasText: 'reconnecting' }).waitFor();
    await bob.page.screenshot({ path: `${SHOTS}/04-reconnecting.png` });
    for (const t of ['missed 1', 'missed 2', 'missed 3']) await send(ann.page, t);
    // Bob writes while offline: pending, then failed once the ack times out.
    await send(bob.page, 'from the tunnel');
    await bob.page.locator('.outgoing[data-status=pending]', { hasText: 'from the tunnel' }).waitFor();
    await bob.page.locator('.outgoing[data-status=failed]').getByRole('button', { name: 'Retry' }).waitFor({ timeout: 15000 });
    await bob.page.screenshot({ path: `${SHOTS}/05-failed-send.png` });

    net1.restore();
    await bob.page.getByRole('status').waitFor({ state: 'detached', timeout: 15000 });
    await bob.page.locator('.msg', { hasText: 'missed 3' }).waitFor();
    await ann.page.locator('.msg', { hasText: 'from the tunnel' }).waitFor();
    await bob.page.locator('.outgoing').waitFor({ state: 'detached' });
    await sleep(500);
    const expected = ['before', 'missed 1', 'missed 2', 'missed 3', 'from the tunnel'];
    assert.deepEqual(await messages(bob.page), expected, 'each message once, in order');
    assert.deepEqual(await messages(ann.page), expected);
    // The store agrees: one copy of the retried message.
    const token = JSON.parse(await bob.page.evaluate(() => localStorage.getItem('scalify.session'))).token;
    const h = await api(server.url, 'GET', `/api/rooms/${room}/messages`, undefined, token);
    assert.deepEqual(h.body.messages.map((m) => m.text), expected);
  } finally {
    await ann.context.close(); await bob.context.close(); await net1.close();
  }
});

test('unsent messages outlive the page: a send unanswered when the tab closed is made by the next tab, stored once; a refused send offers Edit, not Retry', async () => {
  const net1 = await proxy(server.url);
  const bob = await newUser(net1.url, { name: 'bob' });
  try {
    await signUp(bob);
    const room = uniqueRoom('outbox');
    await createRoom(bob.page, room);
    await send(bob.page, 'online');
    // Stored (it has a seq), not only shown as outgoing.
    await bob.page.locator('.msg[data-seq]', { hasText: 'online' }).waitFor();
    const token = JSON.parse(await bob.page.evaluate(() => localStorage.getItem('scalify.session'))).token;
    // Offline, Bob writes, and closes the tab before any answer.
    net1.cut();
    await bob.page.getByRole('status').filter({ hasText: 'reconnecting' }).waitFor();
    await send(bob.page, 'written in the tunnel');
    await bob.page.locator('.outgoing[data-status=pending]', { hasText: 'written in the tunnel' }).waitFor();
    await bob.page.close();
    net1.restore();
    // The next tab makes it, once.
    const page = await bob.context.newPage();
    page.on('pageerror', (e) => bob.errors.push(e.message));
    await page.goto(net1.url);
    await openRoom(page, room);
    await page.locator('.messages .msg[data-seq]', { hasText: 'written in the tunnel' }).waitFor();
    await eventually(async () => (await page.locator('.outgoing').count()) === 0, 15000, 'no send left outgoing');
    const stored = await allMessages(server.url, token, room);
    assert.deepEqual(stored.map((m) => m.text), ['online', 'written in the tunnel']);
    // A send the server refuses for good (Bob was blocked in a DM) offers Edit and Dismiss.
    const zed = await register(server.url, 'zed');
    const dm = await api(server.url, 'POST', '/api/dms', { username: zed.user.username }, token);
    assert.equal((await api(server.url, 'POST', '/api/blocks', { username: bob.username }, zed.token)).status, 204);
    await page.locator('.room-link', { hasText: `@${zed.user.username}` }).click();
    await page.getByRole('heading', { name: `@${zed.user.username}` }).waitFor();
    await send(page, 'hello?');
    const failed = page.locator('.outgoing[data-status=failed]', { hasText: 'hello?' });
    await failed.getByRole('button', { name: 'Edit' }).waitFor();
    assert.equal(await failed.getByRole('button', { name: 'Retry' }).count(), 0);
    await failed.getByRole('button', { name: 'Edit' }).click();
    await failed.waitFor({ state: 'detached' });
    assert.equal(await page.locator('.composer textarea').inputValue(), 'hello?');
    assert.equal(dm.status, 200);
    assert.deepEqual(bob.errors, []);
  } finally {
    await bob.context.close(); await net1.close();
  }
});

test('the node is stopped (SIGTERM) and restarted while a user sends: every message the user wrote is stored once, the unanswered ones resent by the app after the reconnect', async () => {
  const port = await freePort();
  let node = await startServer({ port, args: ['--rate-limit-per-sec', '0'] });
  const ann = await newUser(node.url, { name: 'ann' });
  try {
    await signUp(ann);
    const room = uniqueRoom('restart');
    await createRoom(ann.page, room);
    const texts = Array.from({ length: 40 }, (_, i) => `line ${i}`);
    let stopped;
    for (const [i, t] of texts.entries()) {
      await send(ann.page, t);
      if (i === 10) stopped = node.stop('SIGTERM');
      if (i === 30) {
        assert.equal((await stopped).code, 0);
        node = await startServer({ port, dataDir: node.dir, args: ['--rate-limit-per-sec', '0'] });
      }
    }
    // Every line is shown as sent once the app has made again what was left unanswered.
    await eventually(async () => (await ann.page.locator('.outgoing').count()) === 0, 60000, 'no unsent message left');
    const token = JSON.parse(await ann.page.evaluate(() => localStorage.getItem('scalify.session'))).token;
    const stored = await allMessages(node.url, token, room);
    // A resent line is stored after the ones sent before it was resent: compare as sets.
    const sorted = (xs) => [...xs].sort();
    assert.deepEqual(sorted(stored.map((m) => m.text)), sorted(texts), 'each line stored once');
    assert.deepEqual(sorted(await messages(ann.page)), sorted(texts), 'each line shown once');
  } finally {
    await ann.context.close();
    await node.stop(); node.cleanup();
  }
});

test('messages typed in quick succession are stored and shown in the order typed', async () => {
  const ann = await newUser(server.url, { name: 'fast' });
  try {
    await signUp(ann);
    const room = uniqueRoom('fast');
    await createRoom(ann.page, room);
    const texts = Array.from({ length: 25 }, (_, i) => `quick ${i}`);
    for (const t of texts) await send(ann.page, t);
    const token = JSON.parse(await ann.page.evaluate(() => localStorage.getItem('scalify.session'))).token;
    const stored = await eventually(async () => {
      const r = await api(server.url, 'GET', `/api/rooms/${room}/messages?limit=100`, undefined, token);
      return r.body.messages?.length === texts.length && r.body.messages;
    }, 30000, 'every message stored');
    assert.deepEqual(stored.map((m) => m.text), texts, 'stored in seq order as typed');
    await ann.page.locator('.msg', { hasText: 'quick 24' }).waitFor();
    const shown = (await messages(ann.page)).map((t) => t.match(/quick \d+/)?.[0]).filter(Boolean);
    assert.deepEqual(shown, texts);
  } finally { await ann.context.close(); }
});

test('history: scrolling up loads older messages until the beginning', async () => {
  const bot = await register(server.url, 'bot');
  const room = uniqueRoom('long');
  await api(server.url, 'POST', '/api/rooms', { name: room, kind: 'public' }, bot.token);
  for (let i = 1; i <= 120; i++) {
    const r = await api(server.url, 'POST', `/api/rooms/${room}/messages`, { text: `old ${i}`, client_id: `b${i}` }, bot.token);
    assert.equal(r.status, 201);
  }
  const ann = await newUser(server.url, { name: 'ann' });
  try {
    await signUp(ann);
    await ann.page.getByRole('button', { name: `Join ${room}` }).click();
    await ann.page.locator('.msg', { hasText: 'old 120' }).waitFor();
    const first = (await messages(ann.page)).length;
    assert.ok(first >= 50 && first < 120, `first page: ${first}`);
    for (let i = 0; i < 10 && (await messages(ann.page)).length < 120; i++) {
      await ann.page.locator('.messages').evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); });
      await sleep(300);
    }
    const all = await messages(ann.page);
    assert.deepEqual(all, Array.from({ length: 120 }, (_, i) => `old ${i + 1}`));
    await ann.page.locator('.start', { hasText: `This is the start of #${room}` }).waitFor();
  } finally { await ann.context.close(); }
});

test('read state follows the user: reading on one device clears the badge on the other, live and after a reload, and a new browser counts the same', async () => {
  const desk = await newUser(server.url, { name: 'ann' });
  const phone = { ...(await newUser(server.url, { name: 'ann' })), username: desk.username };
  const fresh = { ...(await newUser(server.url, { name: 'ann' })), username: desk.username };
  const signIn = async (u) => {
    await u.page.getByLabel('Username').fill(u.username);
    await u.page.getByLabel('Password').fill('correct-horse');
    await u.page.locator('form.card button[type=submit]').click();
    await u.page.getByText('Sign out').waitFor();
  };
  try {
    await signUp(desk);
    const [news, quiet] = [uniqueRoom('news'), uniqueRoom('quiet')];
    for (const r of [news, quiet]) {
      await createRoom(desk.page, r);
    }
    await signIn(phone);
    const bob = await register(server.url, 'bob');
    const sb = await connect(server.url, bob.token);
    assert.equal((await call(sb, 'join', { room: news })).ok, true);
    const say = async (n, from) => {
      for (let i = from; i < from + n; i++) {
        assert.equal((await call(sb, 'send', { room: news, text: `news ${i}`, client_id: `n${i}` })).ok, true);
      }
    };
    await say(3, 1);
    const badge = (u, n) => u.page.locator('.room-link', { hasText: `#${news}` }).getByLabel(`${n} unread`);
    await badge(desk, 3).waitFor();
    await badge(phone, 3).waitFor();
    // Read on the desk: the phone's badge goes at once, and stays gone after a reload.
    await openRoom(desk.page, news);
    await badge(phone, 3).waitFor({ state: 'detached' });
    await phone.page.reload();
    await phone.page.locator('.room-link', { hasText: `#${news}` }).waitFor();
    await sleep(500);
    assert.equal(await phone.page.locator('.room-link', { hasText: `#${news}` }).locator('.badge').count(), 0);
    // Two more while the desk looks elsewhere: every device, and a browser never used
    // before, counts two.
    await openRoom(desk.page, quiet);
    await say(2, 4);
    await badge(desk, 2).waitFor();
    await badge(phone, 2).waitFor();
    await signIn(fresh);
    await badge(fresh, 2).waitFor();
    sb.close();
    for (const u of [desk, phone, fresh]) assert.deepEqual(u.errors, []);
  } finally {
    for (const u of [desk, phone, fresh]) await u.context.close();
  }
});

/**
 * Two rooms of the page's user, `news` and `quiet`; Bob joins `news` and sends three
 * messages to it, unread by the user.
 */
async function threeUnread(page) {
  const [news, quiet] = [uniqueRoom('news'), uniqueRoom('quiet')];
  await createRoom(page, news);
  await createRoom(page, quiet);
  const bob = await register(server.url, 'bob');
  const sb = await connect(server.url, bob.token);
  assert.equal((await call(sb, 'join', { room: news })).ok, true);
  for (let i = 1; i <= 3; i++) assert.equal((await call(sb, 'send', { room: news, text: `news ${i}`, client_id: `n${i}` })).ok, true);
  return { news, quiet, sb };
}

test('a room read while offline is marked read on the server after the reconnect: the other device clears its badge', async () => {
  const net = await proxy(server.url);
  const desk = await newUser(net.url, { name: 'ann' });
  const phone = { ...(await newUser(server.url, { name: 'ann' })), username: desk.username };
  try {
    await signUp(desk);
    await phone.page.getByLabel('Username').fill(desk.username);
    await phone.page.getByLabel('Password').fill('correct-horse');
    await phone.page.locator('form.card button[type=submit]').click();
    await phone.page.getByText('Sign out').waitFor();
    const { news, sb } = await threeUnread(desk.page);
    const badge = (u) => u.page.locator('.room-link', { hasText: `#${news}` }).getByLabel('3 unread');
    await badge(desk).waitFor();
    await badge(phone).waitFor();
    // The desk loses its connection, then opens the room: read there, not yet on the server.
    net.cut();
    await desk.page.getByRole('status').filter({ hasText: 'reconnecting' }).waitFor();
    await openRoom(desk.page, news);
    await sleep(1000);
    assert.equal(await badge(phone).count(), 1, 'the phone still counts three while the desk is offline');
    net.restore();
    await badge(phone).waitFor({ state: 'detached' });
    sb.close();
    assert.deepEqual([...desk.errors, ...phone.errors], []);
  } finally {
    await desk.context.close(); await phone.context.close(); await net.close();
  }
});

test('a room read while offline, then the tab closed: the next tab of that browser marks it read on the server', async () => {
  const net = await proxy(server.url);
  const desk = await newUser(net.url, { name: 'ann' });
  try {
    await signUp(desk);
    const { news, quiet, sb } = await threeUnread(desk.page);
    await desk.page.locator('.room-link', { hasText: `#${news}` }).getByLabel('3 unread').waitFor();
    const token = JSON.parse(await desk.page.evaluate(() => localStorage.getItem('scalify.session'))).token;
    const serverMarker = async () => (await api(server.url, 'GET', '/api/rooms', undefined, token)).body.rooms.find((r) => r.name === news).last_read;
    const before = await serverMarker();
    // Offline, the room is read, and the tab closes before the connection comes back.
    net.cut();
    await desk.page.getByRole('status').filter({ hasText: 'reconnecting' }).waitFor();
    await openRoom(desk.page, news);
    await desk.page.locator('.msg', { hasText: 'news 3' }).waitFor();
    await sleep(500);
    await desk.page.close();
    net.restore();
    assert.equal(await serverMarker(), before, 'nothing reached the server while offline');
    // A new tab of the same browser, on another room: it sends the mark the closed tab kept.
    const page = await desk.context.newPage();
    await page.goto(`${net.url}/r/${quiet}`);
    await page.getByRole('heading', { name: `#${quiet}` }).waitFor();
    await eventually(async () => (await serverMarker()) === 3, 15000, 'the kept read mark on the server');
    assert.equal(await page.locator('.room-link', { hasText: `#${news}` }).locator('.badge').count(), 0);
    sb.close();
    assert.deepEqual(desk.errors, []);
  } finally {
    await desk.context.close(); await net.close();
  }
});

test('an XSS attempt renders as text; links are clickable; unread badges count; phone width works', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob', viewport: { width: 390, height: 800 } });
  try {
    await signUp(ann);
    await signUp(bob);
    const room = uniqueRoom('xss');
    const other = uniqueRoom('other');
    for (const r of [other, room]) {
      await createRoom(ann.page, r);
    }
    await bob.page.reload();
    await bob.page.getByRole('button', { name: `Join ${other}` }).click();
    await bob.page.getByRole('button', { name: 'Back to rooms' }).click();
    await bob.page.getByRole('button', { name: `Join ${room}` }).click();
    await bob.page.getByRole('button', { name: 'Back to rooms' }).click();

    const evil = ['<img src=x onerror="window.__xss=1">', '<script>window.__xss=2</script>', 'see https://example.com/docs'];
    for (const t of evil) await send(ann.page, t);
    // Bob is on the room list (phone width: one pane): the unread badge counts Ann's 3 messages.
    await bob.page.getByLabel('3 unread').waitFor();
    await bob.page.waitForFunction(() => document.title === '(3) ScalifyChat'); // the tab title counts them too
    await bob.page.screenshot({ path: `${SHOTS}/06-phone-room-list.png` });
    await openRoom(bob.page, room);
    await bob.page.locator('.msg', { hasText: 'example.com' }).waitFor();
    assert.deepEqual(await messages(bob.page), evil);
    assert.equal(await bob.page.locator('.messages img, .messages script').count(), 0);
    assert.equal(await bob.page.evaluate(() => window.__xss), undefined);
    const link = bob.page.locator('.msg a');
    assert.equal(await link.getAttribute('href'), 'https://example.com/docs');
    assert.equal(await link.getAttribute('rel'), 'noopener noreferrer nofollow');
    // Reading the room clears its badge and the title's count.
    await bob.page.getByRole('button', { name: 'Back to rooms' }).click();
    assert.equal(await bob.page.getByLabel('3 unread').count(), 0);
    await bob.page.waitForFunction(() => document.title === 'ScalifyChat');
    await bob.page.screenshot({ path: `${SHOTS}/07-phone-after-reading.png` });
    // A reload keeps Bob signed in.
    await bob.page.reload();
    await bob.page.getByText('Sign out').waitFor();
    // A token the server no longer accepts (expired, or signed with another secret) signs out.
    await ann.page.evaluate(() => {
      const s = JSON.parse(localStorage.getItem('scalify.session'));
      localStorage.setItem('scalify.session', JSON.stringify({ ...s, token: `${s.token}x` }));
    });
    await ann.page.reload();
    await ann.page.getByRole('tab', { name: 'Sign in' }).waitFor();
    // Signing out returns to the sign-in screen.
    await bob.page.getByText('Sign out').click();
    await bob.page.getByRole('tab', { name: 'Sign in' }).waitFor();
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally { await ann.context.close(); await bob.context.close(); }
});

test('private rooms, adding a member, and direct messages by username', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await signUp(ann);
    await signUp(bob);
    const secret = uniqueRoom('secret');
    await ann.page.getByRole('button', { name: 'New room' }).click();
    await ann.page.getByPlaceholder('room-name').fill(secret);
    await ann.page.getByLabel('Visibility').selectOption('private');
    await ann.page.getByRole('button', { name: 'Create' }).click();
    await ann.page.getByRole('heading', { name: `#${secret}` }).waitFor();
    await ann.page.locator('.room-link', { hasText: secret }).getByText('private').waitFor();
    // Bob cannot see it to join.
    await bob.page.reload();
    assert.equal(await bob.page.getByRole('button', { name: `Join ${secret}` }).count(), 0);
    // Ann adds him from the member list; it shows up in his sidebar.
    await ann.page.getByRole('button', { name: 'Members' }).click();
    await ann.page.getByPlaceholder('username').last().fill('no-such-user-xyz');
    await ann.page.getByRole('button', { name: 'Add', exact: true }).click();
    await ann.page.getByRole('alert').filter({ hasText: "no user named 'no-such-user-xyz'" }).waitFor();
    await ann.page.getByPlaceholder('username').last().fill(bob.username);
    await ann.page.getByRole('button', { name: 'Add', exact: true }).click();
    await ann.page.locator('.members li', { hasText: bob.username }).waitFor();
    await send(ann.page, 'welcome to the secret room');
    await bob.page.reload();
    await bob.page.getByLabel('1 unread').waitFor();
    await openRoom(bob.page, secret);
    await bob.page.locator('.msg', { hasText: 'welcome to the secret room' }).waitFor();

    // Bob opens a DM with Ann by username; Ann gets it live, named after Bob.
    await bob.page.getByRole('button', { name: 'New direct message' }).click();
    await bob.page.getByRole('dialog').getByPlaceholder('username').fill(ann.username);
    await bob.page.getByRole('button', { name: 'Open' }).click();
    await bob.page.getByRole('heading', { name: `@${ann.username}` }).waitFor();
    await send(bob.page, 'psst');
    await ann.page.locator('.room-link', { hasText: `@${bob.username}` }).click();
    await ann.page.locator('.msg', { hasText: 'psst' }).waitFor();
    await ann.page.screenshot({ path: `${SHOTS}/08-direct-message.png` });
    // A DM with an unknown user is refused inline.
    await bob.page.getByRole('button', { name: 'New direct message' }).click();
    await bob.page.getByRole('dialog').getByPlaceholder('username').fill('no-such-user-xyz');
    await bob.page.getByRole('button', { name: 'Open' }).click();
    await bob.page.getByRole('alert').filter({ hasText: "no user named 'no-such-user-xyz'" }).waitFor();
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally { await ann.context.close(); await bob.context.close(); }
});

test('a DM is named after its other user even when that user was never seen: live, and after a reload', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  try {
    await signUp(ann);
    // Two users who are never online open DMs with Ann through the API.
    const others = [await register(server.url, 'zed'), await register(server.url, 'yan')];
    for (const u of others) {
      assert.equal((await api(server.url, 'POST', '/api/dms', { username: ann.username }, u.token)).status, 200);
    }
    for (const round of ['live', 'after a reload']) {
      if (round !== 'live') await ann.page.reload();
      for (const u of others) await ann.page.locator('.room-link', { hasText: `@${u.user.username}` }).waitFor();
      assert.equal(await ann.page.locator('.room-link', { hasText: 'Direct message' }).count(), 0, round);
    }
    await ann.page.locator('.room-link', { hasText: `@${others[0].user.username}` }).click();
    await ann.page.getByRole('heading', { name: `@${others[0].user.username}` }).waitFor();
    assert.deepEqual(ann.errors, []);
  } finally { await ann.context.close(); }
});

test('a 64-character room name is cut with an ellipsis, the full name on hover: the sidebar never scrolls sideways', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await signUp(ann);
    await signUp(bob);
    const long = `${uniqueRoom('w')}-`.padEnd(64, 'w');
    assert.equal(long.length, 64);
    await createRoom(ann.page, long);
    await bob.page.reload();
    await bob.page.getByRole('button', { name: `Join ${long}` }).waitFor();
    const fits = (page) => page.evaluate(() => {
      const bar = document.querySelector('.sidebar');
      const out = [...document.querySelectorAll('.sidebar .room-link, .sidebar .discover, .room-head h1')]
        .filter((el) => el.getBoundingClientRect().right > bar.getBoundingClientRect().right + 1 && el.closest('.sidebar'))
        .map((el) => el.textContent);
      return { scrolls: bar.scrollWidth > bar.clientWidth, out };
    });
    for (const u of [ann, bob]) assert.deepEqual(await fits(u.page), { scrolls: false, out: [] }, u.username);
    assert.equal(await ann.page.locator('.room-link .name', { hasText: long }).getAttribute('title'), `#${long}`);
    assert.equal(await ann.page.getByRole('heading', { name: `#${long}` }).getAttribute('title'), `#${long}`);
    assert.equal(await bob.page.locator('.discover .name', { hasText: long }).getAttribute('title'), `#${long}`);
    // The header's name is cut too: it ends inside the room's header.
    assert.ok(await ann.page.evaluate(() => document.querySelector('.room-head h1').getBoundingClientRect().right
      <= document.querySelector('.room-head').getBoundingClientRect().right + 1), 'the header keeps the name inside');
    await ann.page.screenshot({ path: `${SHOTS}/12-long-room-name.png` });
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally { await ann.context.close(); await bob.context.close(); }
});

test('the composer counts bytes, shows a counter near the limit, and never cuts or sends a text that is too long', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  try {
    await signUp(ann);
    const room = uniqueRoom('len');
    await createRoom(ann.page, room);
    const box = ann.page.locator('.composer textarea');
    const counter = ann.page.locator('#composer-length');
    // Far from the limit: no counter.
    await box.fill('hello');
    assert.equal(await counter.count(), 0);
    // 5,000 characters pasted: all kept, the counter says by how much it is over, Send is off.
    await box.fill('x'.repeat(5000));
    assert.equal((await box.inputValue()).length, 5000, 'nothing cut');
    await counter.filter({ hasText: '5,000 / 4,096 bytes — too long to send; shorten it by 904' }).waitFor();
    assert.equal(await ann.page.getByRole('button', { name: 'Send' }).isDisabled(), true);
    await box.press('Enter');
    assert.equal((await box.inputValue()).length, 5000, 'Enter keeps a text that is too long');
    // Bytes, not characters: 2,100 'é' are 4,200 bytes.
    await box.fill('é'.repeat(2100));
    await counter.filter({ hasText: '4,200 / 4,096 bytes — too long' }).waitFor();
    // Exactly at the limit: counted, sent, stored whole.
    const text = 'é'.repeat(2048);
    await box.fill(text);
    await counter.filter({ hasText: '4,096 / 4,096 bytes' }).waitFor();
    await box.press('Enter');
    await ann.page.locator('.messages .msg', { hasText: text }).waitFor();
    await eventually(async () => (await ann.page.locator('.messages .status').count()) === 0, 15000, 'the send acked');
    assert.equal(await box.inputValue(), '');
    assert.equal(await counter.count(), 0);
    assert.deepEqual(ann.errors, []);
  } finally { await ann.context.close(); }
});

test('drafts stay with their room across switches and reloads; opening a room by keyboard puts the cursor in its composer; sign-out clears the unread count from the title', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  try {
    await signUp(ann);
    const [one, two] = [uniqueRoom('d1'), uniqueRoom('d2')];
    for (const r of [one, two]) {
      await createRoom(ann.page, r);
    }
    const box = ann.page.locator('.composer textarea');
    const focused = () => ann.page.evaluate(() => document.activeElement?.matches('.composer textarea') ?? false);
    // Pick a room with the keyboard: focus on its sidebar entry, Enter; the cursor is in the composer.
    const pick = async (r) => {
      await ann.page.locator('.sidebar .room-link', { hasText: `#${r}` }).focus();
      await ann.page.keyboard.press('Enter');
      await ann.page.getByRole('heading', { name: `#${r}` }).waitFor();
      await eventually(focused, 5000, `the composer of #${r} focused`);
    };
    await pick(one);
    await ann.page.keyboard.type('half-written thought');
    await pick(two);
    assert.equal(await box.inputValue(), '');
    await pick(one);
    assert.equal(await box.inputValue(), 'half-written thought');
    await ann.page.reload();
    await openRoom(ann.page, one);
    assert.equal(await box.inputValue(), 'half-written thought');
    // Sent: the draft is gone.
    await box.press('Enter');
    await ann.page.locator('.messages .msg', { hasText: 'half-written thought' }).waitFor();
    await ann.page.reload();
    await openRoom(ann.page, one);
    assert.equal(await box.inputValue(), '');
    // Colour emoji fonts are in the stack.
    assert.match(await ann.page.evaluate(() => getComputedStyle(document.body).fontFamily), /Noto Color Emoji/);
    // An unread message counts in the title; after signing out the title counts nothing.
    await ann.page.locator('.composer textarea').fill('a draft left behind');
    const bob = await register(server.url, 'bob');
    assert.equal((await api(server.url, 'POST', `/api/rooms/${two}/members`, { username: bob.user.username }, bob.token)).status, 200);
    assert.equal((await api(server.url, 'POST', `/api/rooms/${two}/messages`, { text: 'ping', client_id: 'p1' }, bob.token)).status, 201);
    await eventually(async () => (await ann.page.title()) === '(1) ScalifyChat', 15000, 'the unread count in the title');
    await ann.page.getByText('Sign out').click();
    await ann.page.getByRole('tab', { name: 'Create account' }).waitFor();
    assert.equal(await ann.page.title(), 'ScalifyChat');
    assert.deepEqual(await ann.page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('scalify.draft:'))), [], 'drafts cleared at sign-out');
    assert.deepEqual(ann.errors, []);
  } finally { await ann.context.close(); }
});

test('the room list is live: a public room someone creates is offered at once; rooms created or joined in one tab, or through the API, appear in the other tabs', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await signUp(ann);
    await signUp(bob);
    const tab2 = await ann.context.newPage();
    tab2.on('pageerror', (e) => ann.errors.push(e.message));
    await tab2.goto(server.url);
    await tab2.getByText('Sign out').waitFor();
    const inSidebar = (page, r) => page.locator('.sidebar .room-link', { hasText: `#${r}` }).waitFor();
    // Bob creates a public room: Ann (both tabs) is offered it under Browse, without a reload.
    const bobs = uniqueRoom('live-b');
    await bob.page.getByRole('button', { name: 'New room' }).click();
    await bob.page.getByPlaceholder('room-name').fill(bobs);
    await bob.page.getByRole('button', { name: 'Create' }).click();
    for (const page of [ann.page, tab2]) await page.getByRole('button', { name: `Join ${bobs}` }).waitFor();
    // Ann joins it in one tab: the other lists it as hers.
    await ann.page.getByRole('button', { name: `Join ${bobs}` }).click();
    await inSidebar(tab2, bobs);
    // Ann creates a room in one tab: the other lists it.
    const anns = uniqueRoom('live-a');
    await ann.page.getByRole('button', { name: 'New room' }).click();
    await ann.page.getByPlaceholder('room-name').fill(anns);
    await ann.page.getByRole('button', { name: 'Create' }).click();
    await inSidebar(tab2, anns);
    // And one through the API with her token: both tabs list it.
    const token = await ann.page.evaluate(() => JSON.parse(localStorage.getItem('scalify.session')).token);
    const viaApi = uniqueRoom('live-api');
    assert.equal((await api(server.url, 'POST', '/api/rooms', { name: viaApi, kind: 'private' }, token)).status, 201);
    for (const page of [ann.page, tab2]) await inSidebar(page, viaApi);
    // A private room is not offered to anyone else.
    await bob.page.getByRole('button', { name: `Join ${anns}` }).waitFor();
    assert.equal(await bob.page.getByRole('button', { name: `Join ${viaApi}` }).count(), 0);
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally { await ann.context.close(); await bob.context.close(); }
});

test('scrolled up, new messages stay unread and a button jumps down to them; a failed send stays where it was written', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  try {
    await signUp(ann);
    const bob = await register(server.url, 'bob');
    const room = uniqueRoom('jump');
    assert.equal((await api(server.url, 'POST', '/api/rooms', { name: room, kind: 'public' }, bob.token)).status, 201);
    assert.equal((await api(server.url, 'POST', `/api/rooms/${room}/members`, { username: ann.username }, bob.token)).status, 200);
    for (let i = 0; i < 60; i++) {
      await api(server.url, 'POST', `/api/rooms/${room}/messages`, { text: `line ${i}`, client_id: `l${i}` }, bob.token);
    }
    await ann.page.locator('.room-link', { hasText: `#${room}` }).click();
    await ann.page.locator('.messages .msg', { hasText: 'line 59' }).waitFor();
    const badge = ann.page.locator('.room-link', { hasText: `#${room}` }).locator('.badge');
    await badge.waitFor({ state: 'detached' });
    // Scrolled up: what arrives is not read, and a button says how much is below.
    await ann.page.locator('.messages').evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); });
    for (const t of ['new 1', 'new 2']) {
      await api(server.url, 'POST', `/api/rooms/${room}/messages`, { text: t, client_id: t }, bob.token);
    }
    const jump = ann.page.getByRole('button', { name: '↓ 2 new messages' });
    await jump.waitFor();
    assert.equal(await badge.textContent(), '2');
    assert.equal(await ann.page.title(), '(2) ScalifyChat');
    await jump.click();
    await jump.waitFor({ state: 'detached' });
    await badge.waitFor({ state: 'detached' });
    assert.equal(await ann.page.title(), 'ScalifyChat');
    // A send refused for good stays where it was written: a message that comes later shows
    // below it, not above.
    const zed = await register(server.url, 'zed');
    assert.equal((await api(server.url, 'POST', '/api/dms', { username: ann.username }, zed.token)).status, 200);
    await ann.page.locator('.room-link', { hasText: `@${zed.user.username}` }).click();
    await ann.page.getByRole('heading', { name: `@${zed.user.username}` }).waitFor();
    assert.equal((await api(server.url, 'POST', '/api/blocks', { username: ann.username }, zed.token)).status, 204);
    await send(ann.page, 'hello?');
    await ann.page.locator('.outgoing[data-status=failed]', { hasText: 'hello?' }).waitFor();
    const dmName = (await api(server.url, 'GET', '/api/rooms', undefined, zed.token)).body.rooms.find((r) => r.kind === 'dm').name;
    assert.equal((await api(server.url, 'POST', `/api/rooms/${dmName}/messages`, { text: 'later reply', client_id: 'z1' }, zed.token)).status, 201);
    await ann.page.locator('.messages .msg', { hasText: 'later reply' }).waitFor();
    const order = await ann.page.locator('.messages .msg').allTextContents();
    assert.deepEqual(order.filter((t) => t === 'hello?' || t === 'later reply'), ['hello?', 'later reply']);
    assert.deepEqual(ann.errors, []);
  } finally { await ann.context.close(); }
});

test('each room has an address: Back and Forward move between rooms, a reload reopens the room, /dm/<user> opens a DM, a link to a message brings it into view', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  try {
    await signUp(ann);
    const path = () => new URL(ann.page.url()).pathname;
    const heading = (name) => ann.page.getByRole('heading', { name }).waitFor();
    const [one, two] = [uniqueRoom('u1'), uniqueRoom('u2')];
    for (const r of [one, two]) {
      await ann.page.getByRole('button', { name: 'New room' }).click();
      await ann.page.getByPlaceholder('room-name').fill(r);
      await ann.page.getByRole('button', { name: 'Create' }).click();
      await heading(`#${r}`);
    }
    assert.equal(path(), `/r/${two}`);
    await openRoom(ann.page, one);
    assert.equal(path(), `/r/${one}`);
    await ann.page.goBack();
    await heading(`#${two}`);
    await ann.page.goForward();
    await heading(`#${one}`);
    await ann.page.reload();
    await heading(`#${one}`);
    // A DM's address names its other user.
    const zed = await register(server.url, 'zed');
    assert.equal((await api(server.url, 'POST', '/api/dms', { username: ann.username }, zed.token)).status, 200);
    await ann.page.goto(`${server.url}/dm/${zed.user.username}`);
    await heading(`@${zed.user.username}`);
    // A link to an old message: older pages load until it is there, and it is in view.
    const token = JSON.parse(await ann.page.evaluate(() => localStorage.getItem('scalify.session'))).token;
    for (let i = 1; i <= 150; i++) {
      await api(server.url, 'POST', `/api/rooms/${one}/messages`, { text: `old ${i}`, client_id: `o${i}` }, token);
    }
    await ann.page.goto(`${server.url}/r/${one}#3`);
    await heading(`#${one}`);
    const target = ann.page.locator('#m3');
    await target.waitFor();
    await eventually(() => target.evaluate((el) => el.classList.contains('focused')), 15000, 'message 3 marked');
    assert.equal(await target.textContent(), 'old 3');
    const inView = await target.evaluate((el) => {
      const box = el.getBoundingClientRect();
      const list = el.closest('.messages').getBoundingClientRect();
      return box.top >= list.top && box.bottom <= list.bottom;
    });
    assert.equal(inView, true, 'message 3 is in view');
    assert.deepEqual(ann.errors, []);
  } finally { await ann.context.close(); }
});

test('keyboard: Ctrl+K finds a room by part of its name, Alt+Up/Down move between rooms, Esc closes the switcher and panes', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  try {
    await signUp(ann);
    const tag = uniqueRoom('k');
    const rooms = [`${tag}-apple`, `${tag}-banana`, `${tag}-cherry`];
    for (const r of rooms) {
      await createRoom(ann.page, r);
    }
    const heading = (r) => ann.page.getByRole('heading', { name: `#${r}` }).waitFor();
    await ann.page.keyboard.press('Control+k');
    const dialog = ann.page.getByRole('dialog', { name: 'Jump to a room' });
    await dialog.waitFor();
    await ann.page.keyboard.type('anan');
    assert.deepEqual(await dialog.getByRole('option').allTextContents(), [`#${rooms[1]}`]);
    await ann.page.keyboard.press('Enter');
    await dialog.waitFor({ state: 'detached' });
    await heading(rooms[1]);
    await ann.page.keyboard.press('Alt+ArrowDown');
    await heading(rooms[2]);
    await ann.page.keyboard.press('Alt+ArrowUp');
    await ann.page.keyboard.press('Alt+ArrowUp');
    await heading(rooms[0]);
    // Arrow keys choose in the switcher; Esc closes it without opening anything.
    await ann.page.keyboard.press('Control+k');
    await dialog.waitFor();
    await ann.page.keyboard.type(tag);
    await ann.page.keyboard.press('ArrowDown');
    await ann.page.keyboard.press('ArrowDown');
    assert.equal(await dialog.getByRole('option', { selected: true }).textContent(), `#${rooms[2]}`);
    await ann.page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    await heading(rooms[0]);
    // New rooms and DMs are made in dialogs opened by the + buttons, not forms that stay in
    // the sidebar; Esc closes them.
    assert.equal(await ann.page.locator('.sidebar').getByPlaceholder('room-name').count(), 0);
    for (const name of ['New room', 'New direct message']) {
      await ann.page.getByRole('button', { name }).click();
      await ann.page.getByRole('dialog', { name }).waitFor();
      await ann.page.keyboard.press('Escape');
      await ann.page.getByRole('dialog', { name }).waitFor({ state: 'detached' });
    }
    // Esc closes the settings pane.
    await ann.page.getByRole('button', { name: 'Settings' }).click();
    await ann.page.getByRole('heading', { name: 'Settings' }).waitFor();
    await ann.page.keyboard.press('Escape');
    await ann.page.getByRole('heading', { name: 'Settings' }).waitFor({ state: 'detached' });
    assert.deepEqual(ann.errors, []);
  } finally { await ann.context.close(); }
});

test('axe-core finds no serious accessibility problem on the main screens, light and dark, desktop and phone', async () => {
  for (const [colorScheme, viewport] of [['light', { width: 1200, height: 800 }], ['dark', { width: 390, height: 800 }]]) {
    const ann = await newUser(server.url, { name: 'ann', colorScheme, viewport });
    try {
      const screen = `${colorScheme} ${viewport.width}px`;
      assert.deepEqual(await accessibilityProblems(ann.page), [], `sign-in, ${screen}`);
      await signUp(ann);
      assert.deepEqual(await accessibilityProblems(ann.page), [], `room list, ${screen}`);
      const room = uniqueRoom('a11y');
      await createRoom(ann.page, room);
      await send(ann.page, 'hello, accessible world');
      await ann.page.locator('.messages .msg', { hasText: 'hello, accessible world' }).waitFor();
      assert.deepEqual(await accessibilityProblems(ann.page), [], `room, ${screen}`);
      await ann.page.getByRole('button', { name: 'Members' }).click();
      await ann.page.locator('.members li').first().waitFor();
      assert.deepEqual(await accessibilityProblems(ann.page), [], `members, ${screen}`);
      await ann.page.keyboard.press('Control+k');
      await ann.page.getByRole('dialog').waitFor();
      assert.deepEqual(await accessibilityProblems(ann.page), [], `switcher, ${screen}`);
      await ann.page.keyboard.press('Escape');
      if (viewport.width < 600) await ann.page.getByRole('button', { name: 'Back to rooms' }).click();
      await ann.page.getByRole('button', { name: 'Settings' }).click();
      await ann.page.getByRole('heading', { name: 'Settings' }).waitFor();
      assert.deepEqual(await accessibilityProblems(ann.page), [], `settings, ${screen}`);
      assert.deepEqual(ann.errors, []);
    } finally { await ann.context.close(); }
  }
});

test('layout: a first-run welcome, the start of an empty room, messages at the bottom of a short room, a connection banner that moves nothing', async () => {
  const net1 = await proxy(server.url);
  const ann = await newUser(net1.url, { name: 'ann' });
  try {
    await signUp(ann);
    await ann.page.getByRole('region', { name: 'Welcome' }).getByText('You are not in any room yet.').waitFor();
    const room = uniqueRoom('lay');
    await createRoom(ann.page, room);
    await ann.page.locator('.start', { hasText: `This is the start of #${room}. Nothing has been said here yet` }).waitFor();
    await send(ann.page, 'first words');
    const msg = ann.page.locator('.messages .msg[data-seq]', { hasText: 'first words' });
    await msg.waitFor();
    await ann.page.locator('.outgoing').waitFor({ state: 'detached' });
    // The only message sits at the bottom of the list, not under the header.
    const gap = await msg.evaluate((el) => el.closest('.messages').getBoundingClientRect().bottom - el.getBoundingClientRect().bottom);
    assert.ok(gap < 60, `the message is ${gap}px above the bottom of the list`);
    // The banner of a lost connection covers; it does not push the page down.
    const before = await ann.page.locator('.room-head').boundingBox();
    net1.cut();
    await ann.page.getByRole('status').filter({ hasText: 'reconnecting' }).waitFor();
    assert.deepEqual(await ann.page.locator('.room-head').boundingBox(), before);
    net1.restore();
    await ann.page.getByRole('status').waitFor({ state: 'detached', timeout: 15000 });
    assert.deepEqual(ann.errors, []);
  } finally { await ann.context.close(); await net1.close(); }
});

test('identity: each sender has an initials avatar in a colour of their own; their name opens a card with Message and Block', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  try {
    await signUp(ann);
    const bob = await register(server.url, 'bob');
    const room = uniqueRoom('who');
    assert.equal((await api(server.url, 'POST', '/api/rooms', { name: room, kind: 'public' }, bob.token)).status, 201);
    assert.equal((await api(server.url, 'POST', `/api/rooms/${room}/members`, { username: ann.username }, bob.token)).status, 200);
    assert.equal((await api(server.url, 'POST', `/api/rooms/${room}/messages`, { text: 'hi ann', client_id: 'b1' }, bob.token)).status, 201);
    await ann.page.locator('.room-link', { hasText: `#${room}` }).click();
    await send(ann.page, 'hi bob');
    await ann.page.locator('.messages .msg[data-seq]', { hasText: 'hi bob' }).waitFor();
    const avatars = await ann.page.locator('.group > header .avatar').evaluateAll((els) => els.map((el) => [el.textContent, getComputedStyle(el).backgroundColor]));
    assert.equal(avatars.length, 2);
    assert.equal(avatars[0][0], bob.user.username.slice(0, 2).toUpperCase());
    assert.equal(avatars[1][0], 'AN');
    // Own messages are marked lightly: no tinted block, a soft bar at their side.
    const groups = await ann.page.locator('.messages .group').evaluateAll((els) => els.map((el) => ({
      mine: el.classList.contains('mine'), bg: getComputedStyle(el).backgroundColor, bar: getComputedStyle(el).borderLeftColor,
    })));
    const [theirs, mine] = [groups.find((g) => !g.mine), groups.find((g) => g.mine)];
    assert.equal(mine.bg, theirs.bg, 'own messages on the same background as others\'');
    assert.notEqual(mine.bar, theirs.bar, 'own messages marked by their bar');
    const bobsName = ann.page.locator('.group .sender', { hasText: bob.user.username }).first();
    await bobsName.click();
    const card = ann.page.getByRole('dialog', { name: `Profile of ${bob.user.username}` });
    await card.waitFor();
    await card.getByRole('button', { name: 'Message' }).click();
    await card.waitFor({ state: 'detached' });
    await ann.page.getByRole('heading', { name: `@${bob.user.username}` }).waitFor();
    // Esc closes a card; Block from it refuses Bob's DMs.
    await openRoom(ann.page, room);
    await bobsName.click();
    await card.waitFor();
    await card.getByRole('button', { name: 'Block' }).click();
    await card.getByRole('status').filter({ hasText: 'is blocked' }).waitFor();
    await ann.page.keyboard.press('Escape');
    await card.waitFor({ state: 'detached' });
    const dm = (await api(server.url, 'GET', '/api/rooms', undefined, bob.token)).body.rooms.find((r) => r.kind === 'dm');
    const refused = await api(server.url, 'POST', `/api/rooms/${dm.name}/messages`, { text: 'still there?', client_id: 'b2' }, bob.token);
    assert.equal(refused.status, 403, 'the block holds in the DM');
    assert.deepEqual(ann.errors, []);
  } finally { await ann.context.close(); }
});

test('the owner removes a member, a member leaves, a user blocks another: each seen at once in the other browser', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await signUp(ann);
    await signUp(bob);
    const secret = uniqueRoom('kick');
    await ann.page.getByRole('button', { name: 'New room' }).click();
    await ann.page.getByPlaceholder('room-name').fill(secret);
    await ann.page.getByLabel('Visibility').selectOption('private');
    await ann.page.getByRole('button', { name: 'Create' }).click();
    await ann.page.getByRole('heading', { name: `#${secret}` }).waitFor();
    await ann.page.getByRole('button', { name: 'Members' }).click();
    await ann.page.getByPlaceholder('username').last().fill(bob.username);
    await ann.page.getByRole('button', { name: 'Add', exact: true }).click();
    await bob.page.locator('.sidebar .room-link', { hasText: `#${secret}` }).waitFor();
    // Only the owner sees Remove; Ann removes Bob and the room leaves his sidebar live.
    await openRoom(bob.page, secret);
    await bob.page.getByRole('button', { name: 'Members' }).click();
    await bob.page.locator('.members li', { hasText: ann.username }).waitFor();
    assert.equal(await bob.page.getByRole('button', { name: `Remove ${ann.username}` }).count(), 0);
    await ann.page.getByRole('button', { name: `Remove ${bob.username}` }).click();
    await bob.page.locator('.sidebar .room-link', { hasText: `#${secret}` }).waitFor({ state: 'detached' });

    // Bob leaves a public room of Ann's with the room's Leave: it goes back under Browse.
    const lobby = uniqueRoom('leave');
    await ann.page.getByRole('button', { name: 'New room' }).click();
    await ann.page.getByPlaceholder('room-name').fill(lobby);
    await ann.page.getByLabel('Visibility').selectOption('public');
    await ann.page.getByRole('button', { name: 'Create' }).click();
    await bob.page.reload();
    await bob.page.getByRole('button', { name: `Join ${lobby}` }).click();
    await bob.page.getByRole('heading', { name: `#${lobby}` }).waitFor();
    bob.page.once('dialog', (d) => void d.accept());
    await bob.page.locator('.room-head').getByRole('button', { name: 'Leave', exact: true }).click();
    await bob.page.getByRole('button', { name: `Join ${lobby}` }).waitFor();

    // Ann blocks Bob from the member list of her room; Bob can no longer open a DM with her.
    await openRoom(ann.page, lobby);
    await bob.page.getByRole('button', { name: `Join ${lobby}` }).click();
    await ann.page.getByRole('button', { name: 'Members' }).click();
    await ann.page.getByRole('button', { name: `Block ${bob.username}` }).click();
    await ann.page.getByRole('status').filter({ hasText: 'is blocked' }).waitFor();
    await bob.page.getByRole('button', { name: 'New direct message' }).click();
    await bob.page.getByRole('dialog').getByPlaceholder('username').fill(ann.username);
    await bob.page.getByRole('button', { name: 'Open' }).click();
    await bob.page.getByRole('alert').filter({ hasText: 'does not accept this from you' }).waitFor();
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally { await ann.context.close(); await bob.context.close(); }
});

test('the admin page: only for admins; shows the node, the busiest rooms, dependencies and recent errors', async () => {
  const boss = await newUser(server.url, { name: 'boss' });
  const pleb = await newUser(server.url, { name: 'pleb' });
  try {
    await signUp(boss);
    await signUp(pleb);
    assert.equal(await pleb.page.getByRole('button', { name: 'Admin' }).count(), 0);
    execFileSync(BIN, ['admin', 'grant', boss.username, '--data-dir', server.dir], { env: { ...process.env, SCALIFY_LOG: 'warn' } });
    await boss.page.reload();
    const room = uniqueRoom('hot');
    await boss.page.getByRole('button', { name: 'New room' }).click();
    await boss.page.getByPlaceholder('room-name').fill(room);
    await boss.page.getByRole('button', { name: 'Create' }).click();
    for (let i = 0; i < 3; i++) await send(boss.page, `busy ${i}`);
    await boss.page.locator('.msg', { hasText: 'busy 2' }).waitFor();
    await boss.page.getByRole('button', { name: 'Admin' }).click();
    await boss.page.getByRole('heading', { name: 'Admin dashboard' }).waitFor();
    await boss.page.getByRole('heading', { name: 'Nodes (1)' }).waitFor();
    await boss.page.locator('table.busiest tr', { hasText: `#${room}` }).getByRole('cell', { name: '3', exact: true }).waitFor();
    await boss.page.locator('.checks li', { hasText: 'store: ok' }).waitFor();
    await boss.page.screenshot({ path: `${SHOTS}/09-admin.png` });
    // The page's data endpoint refuses the non-admin.
    const token = JSON.parse(await pleb.page.evaluate(() => localStorage.getItem('scalify.session'))).token;
    assert.equal((await api(server.url, 'GET', '/api/admin/overview', undefined, token)).status, 403);
    // An admin deletes anyone's message from the message menu, in a room they do not own.
    const other = uniqueRoom('mod');
    await createRoom(pleb.page, other);
    await send(pleb.page, 'spam spam');
    await boss.page.reload();
    await boss.page.getByRole('button', { name: `Join ${other}` }).click();
    const spam = boss.page.locator('.entry').filter({ has: boss.page.locator('.msg', { hasText: 'spam spam' }) });
    await spam.hover();
    boss.page.once('dialog', (d) => d.accept());
    await spam.getByRole('button', { name: 'Delete' }).click();
    await pleb.page.locator('.entry.deleted', { hasText: 'This message was deleted.' }).waitFor();
  } finally { await boss.context.close(); await pleb.context.close(); }
});

test('reading: "New messages" divider, auto-scroll only at the bottom, long words wrap, dark mode, keyboard only', async () => {
  const bot = await register(server.url, 'bot');
  const room = uniqueRoom('read');
  await api(server.url, 'POST', '/api/rooms', { name: room, kind: 'public' }, bot.token);
  const post = (text, id) => api(server.url, 'POST', `/api/rooms/${room}/messages`, { text, client_id: id }, bot.token);
  await post('already there', 'b0');
  const ann = await newUser(server.url, { name: 'ann', colorScheme: 'dark' });
  try {
    await signUp(ann);
    const page = ann.page;
    await page.getByRole('button', { name: `Join ${room}` }).click();
    await page.locator('.msg', { hasText: 'already there' }).waitFor();
    // Leave the room, let messages arrive, come back: the divider marks the first unread.
    const elsewhere = uniqueRoom('elsewhere');
    await createRoom(page, elsewhere);
    for (let i = 1; i <= 40; i++) await post(`news ${i}`, `b${i}`);
    await page.getByLabel('40 unread').waitFor();
    await openRoom(page, room);
    await page.locator('.msg', { hasText: 'news 40' }).waitFor();
    const divider = page.locator('.divider');
    assert.equal(await divider.count(), 1);
    assert.equal(await divider.evaluate((d) => d.nextElementSibling?.textContent), 'news 1');

    // At the bottom: a new message scrolls into view.
    const list = page.locator('.messages');
    const atBottom = () => list.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight < 40);
    await list.evaluate((el) => { el.scrollTop = el.scrollHeight; el.dispatchEvent(new Event('scroll')); });
    await post('while at the bottom', 'b41');
    await page.locator('.msg', { hasText: 'while at the bottom' }).waitFor();
    await sleep(100);
    assert.equal(await atBottom(), true, 'followed the new message');
    // Scrolled up to read: a new message does not yank the view down.
    await list.evaluate((el) => { el.scrollTop = 100; el.dispatchEvent(new Event("scroll")); });
    const before = await list.evaluate((el) => el.scrollTop);
    await post('while reading above', 'b42');
    await page.locator('.msg', { hasText: 'while reading above' }).waitFor();
    await sleep(100);
    assert.equal(await list.evaluate((el) => el.scrollTop), before, 'the view stayed where the reader was');

    // A very long word wraps instead of widening the page.
    await post(`long ${'x'.repeat(3000)}`, 'b43');
    await page.locator('.msg', { hasText: 'long xxx' }).waitFor();
    assert.equal(await list.evaluate((el) => el.scrollWidth <= el.clientWidth), true);

    // Dark mode follows the system preference.
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(bg, 'rgb(21, 24, 29)');

    // Keyboard only: Tab to the composer, type, Enter.
    await page.locator('.composer textarea').focus();
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('Tab');
    await page.keyboard.type('typed without a mouse');
    await page.keyboard.press('Enter');
    await page.locator('.group:not(.outgoing) .msg', { hasText: 'typed without a mouse' }).waitFor();
    await page.locator('.outgoing').waitFor({ state: 'detached' });
    await page.screenshot({ path: `${SHOTS}/10-dark-unread-divider.png` });
    assert.deepEqual(ann.errors, []);
  } finally { await ann.context.close(); }
});

/**
 * Records the system notifications the page shows (`window.__notes`) and the permission
 * requests it makes (`window.__asked`), around the real Notification (whose permission it
 * reports), and lets the test hide the tab (`window.__setHidden(true)`). Applies from the
 * next load: call it before signing up.
 */
async function recordNotifications(u) {
  await u.page.addInitScript(() => {
    const Real = window.Notification;
    window.__notes = [];
    window.__asked = 0;
    window.Notification = class {
      constructor(title, options = {}) {
        Object.assign(this, { title, body: options.body, tag: options.tag, onclick: null, closed: false });
        window.__notes.push(this);
      }
      close() { this.closed = true; }
      static get permission() { return Real.permission; }
      static requestPermission(...args) { window.__asked++; return Real.requestPermission(...args); }
    };
    let hidden = false;
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (hidden ? 'hidden' : 'visible') });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden });
    window.__setHidden = (h) => { hidden = h; document.dispatchEvent(new Event('visibilitychange')); };
  });
  await u.page.reload();
}

const notes = (u) => u.page.evaluate(() => window.__notes.map((n) => ({ title: n.title, body: n.body, tag: n.tag, closed: n.closed })));

/** Bob (a second browser) joins Ann's public room from Browse. */
async function joinFromBrowse(u, room) {
  await u.page.reload();
  await u.page.getByRole('button', { name: `Join ${room}` }).click();
  await u.page.getByRole('heading', { name: `#${room}` }).waitFor();
}

test('mentions: a message that mentions a user is highlighted in their view, its @name emphasised, and their sidebar shows a mention badge, live and after a reload', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await signUp(ann);
    await signUp(bob);
    const room = uniqueRoom('ment');
    await createRoom(ann.page, room);
    await joinFromBrowse(bob, room);
    await createRoom(bob.page, uniqueRoom('elsewhere'));
    await send(ann.page, 'no mention here, write to ann@example.org');
    await send(ann.page, `hey @${bob.username}, look`);
    const entry = bob.page.locator('.room-link', { hasText: `#${room}` });
    for (const round of ['live', 'after a reload']) {
      if (round !== 'live') await bob.page.reload();
      await entry.getByLabel('1 mention', { exact: true }).waitFor();
      await entry.getByLabel('2 unread').waitFor();
      assert.equal(await entry.locator('.badge.mention').textContent(), '@1', round);
    }
    await bob.page.screenshot({ path: `${SHOTS}/13-mention-badge.png` });
    await openRoom(bob.page, room);
    const highlighted = bob.page.locator('.mention-row');
    await highlighted.waitFor();
    assert.equal(await highlighted.count(), 1);
    assert.equal(await highlighted.locator('.msg').textContent(), `hey @${bob.username}, look`);
    await highlighted.getByRole('img', { name: 'Mentions you' }).waitFor();
    assert.equal(await highlighted.locator('.mention-name.to-me').textContent(), `@${bob.username}`);
    // A short mention stays on one line, as any short message does.
    const lines = await highlighted.locator('.msg').evaluate((el) => el.getBoundingClientRect().height / parseFloat(getComputedStyle(el).lineHeight));
    assert.ok(lines < 1.5, `the mention takes ${lines.toFixed(1)} lines`);
    // The e-mail address is no mention; reading the room clears both badges.
    assert.equal(await bob.page.locator('.msg', { hasText: 'ann@example.org' }).locator('.mention-name').count(), 0);
    await eventually(async () => (await entry.locator('.badge').count()) === 0, 10000, 'the badges to clear');
    await bob.page.screenshot({ path: `${SHOTS}/14-mention-highlight.png` });
    // Ann's own message is not highlighted for her; the name is still emphasised.
    assert.equal(await ann.page.locator('.mention-row').count(), 0);
    assert.equal(await ann.page.locator('.mention-name').count(), 1);
    assert.equal(await ann.page.locator('.mention-name.to-me').count(), 0);
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally { await ann.context.close(); await bob.context.close(); }
});

test('read receipts: a member\'s initials show under the last message they read; once they turn receipts off, others no longer see them move, and after a reload not at all', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await signUp(ann);
    await signUp(bob);
    const room = uniqueRoom('rcpt');
    await createRoom(ann.page, room);
    await joinFromBrowse(bob, room);
    await send(ann.page, 'one');
    await send(ann.page, 'two');
    await bob.page.locator('.msg', { hasText: 'two' }).waitFor();
    // Bob has the room open and read both: Ann sees his initials under "two" (seq 2); Bob
    // sees hers there too.
    const readBy = (u, seq, who) => u.page.locator(`.receipts[data-seq="${seq}"] [title="Read by ${who.username}"]`);
    await readBy(ann, 2, bob).waitFor();
    assert.equal(await readBy(ann, 2, bob).textContent(), bob.username.slice(0, 2).toUpperCase());
    await readBy(bob, 2, ann).waitFor();
    await ann.page.screenshot({ path: `${SHOTS}/15-read-receipts.png` });

    // Bob turns receipts off: he sees none of Ann's, and his reading no longer shows to her.
    await bob.page.getByRole('button', { name: 'Settings' }).click();
    const toggle = bob.page.getByLabel('Send and show read receipts');
    assert.equal(await toggle.isChecked(), true);
    await Promise.all([
      bob.page.waitForResponse((r) => r.url().endsWith('/api/me/settings') && r.request().method() === 'PUT' && r.ok()),
      toggle.uncheck(),
    ]);
    await send(ann.page, 'three');
    await openRoom(bob.page, room);
    await bob.page.locator('.msg', { hasText: 'three' }).waitFor();
    assert.equal(await bob.page.locator('.receipts').count(), 0);
    await sleep(2500); // past the server's coalescing of receipts (1 s)
    assert.equal(await ann.page.locator('.receipts[data-seq="3"]').count(), 0, 'Bob reading "three" is not shown');
    await ann.page.reload();
    await ann.page.locator('.msg', { hasText: 'three' }).waitFor();
    await sleep(500);
    assert.equal(await ann.page.locator(`.receipts [title="Read by ${bob.username}"]`).count(), 0);
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally { await ann.context.close(); await bob.context.close(); }
});

test('notifications: a DM to a hidden tab shows a system notification (permission asked only on a click); clicking it opens the DM; the tab icon counts; previews can be turned off', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await recordNotifications(bob);
    await signUp(ann);
    await signUp(bob);
    // Nothing asks for the permission on load; Settings shows its state and asks on a click
    // (where the browser has not decided yet: a headless one may start out denying).
    await bob.page.getByRole('button', { name: 'Settings' }).click();
    await bob.page.getByText('Desktop notifications —').waitFor();
    assert.equal(await bob.page.evaluate(() => window.__asked), 0);
    if (await bob.page.evaluate(() => Notification.permission) === 'default') {
      await bob.page.getByText('Desktop notifications — Off').waitFor();
      await bob.page.getByRole('button', { name: 'Enable desktop notifications' }).click();
      await eventually(() => bob.page.evaluate(() => window.__asked === 1), 5000, 'the permission request');
    }
    await bob.context.grantPermissions(['notifications'], { origin: server.url });
    await bob.page.reload();
    await bob.page.getByText('Sign out').waitFor();

    await ann.page.getByRole('button', { name: 'New direct message' }).click();
    await ann.page.getByRole('dialog').getByPlaceholder('username').fill(bob.username);
    await ann.page.getByRole('button', { name: 'Open' }).click();
    await ann.page.getByRole('heading', { name: `@${bob.username}` }).waitFor();
    await bob.page.locator('.room-link', { hasText: `@${ann.username}` }).click();
    await bob.page.getByRole('heading', { name: `@${ann.username}` }).waitFor();
    // In view: no notification.
    await send(ann.page, 'seen at once');
    await bob.page.locator('.msg', { hasText: 'seen at once' }).waitFor();
    await sleep(300);
    assert.deepEqual(await notes(bob), []);

    // The tab is hidden: the DM notifies, with the sender and the text; the title and the
    // icon count it.
    const plainIcon = await bob.page.locator('link[rel~="icon"]').getAttribute('href');
    await bob.page.evaluate(() => window.__setHidden(true));
    await send(ann.page, 'psst, are you there?');
    await eventually(async () => (await notes(bob)).length === 1, 15000, 'a notification');
    const [note] = await notes(bob);
    assert.equal(note.title, ann.username);
    assert.equal(note.body, 'psst, are you there?');
    assert.match(note.tag, /^dm-/);
    await bob.page.waitForFunction(() => document.title === '(1) ScalifyChat');
    assert.match(await bob.page.locator('link[rel~="icon"]').getAttribute('href'), /^data:image\/png/);
    // Back in the tab: read, and the plain icon returns.
    await bob.page.evaluate(() => window.__setHidden(false));
    await bob.page.waitForFunction(() => document.title === 'ScalifyChat');
    assert.equal(await bob.page.locator('link[rel~="icon"]').getAttribute('href'), plainIcon);

    // Another room open: the DM notifies; clicking the notification opens the DM.
    await createRoom(bob.page, uniqueRoom('other'));
    await send(ann.page, 'over here');
    await eventually(async () => (await notes(bob)).length === 2, 15000, 'a second notification');
    await bob.page.evaluate(() => window.__notes[1].onclick());
    await bob.page.getByRole('heading', { name: `@${ann.username}` }).waitFor();
    await bob.page.locator('.msg', { hasText: 'over here' }).waitFor();
    assert.equal((await notes(bob))[1].closed, true);

    // Previews off: the notification says who, not what.
    await bob.page.getByRole('button', { name: 'Settings' }).click();
    await Promise.all([
      bob.page.waitForResponse((r) => r.url().endsWith('/api/me/settings') && r.request().method() === 'PUT' && r.ok()),
      bob.page.getByLabel('Show message previews in notifications').uncheck(),
    ]);
    await bob.page.getByText('Desktop notifications — On').waitFor();
    await send(ann.page, 'the secret plan');
    await eventually(async () => (await notes(bob)).length === 3, 15000, 'a third notification');
    assert.deepEqual((await notes(bob))[2], { title: ann.username, body: 'New message', tag: note.tag, closed: false });

    // What came before the page loaded is caught up on quietly.
    await send(ann.page, 'while reloading');
    await bob.page.locator('.room-link', { hasText: `@${ann.username}` }).getByLabel('2 unread').waitFor();
    await bob.page.reload();
    await bob.page.locator('.room-link', { hasText: `@${ann.username}` }).getByLabel('2 unread').waitFor();
    await sleep(1000);
    assert.deepEqual(await notes(bob), []);
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally { await ann.context.close(); await bob.context.close(); }
});

test('the room menu sets the notification level: at "Mentions only" a plain message does not notify and a mention does; a muted room says so and notifies nothing', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await bob.context.grantPermissions(['notifications'], { origin: server.url });
    await recordNotifications(bob);
    await signUp(ann);
    await signUp(bob);
    const room = uniqueRoom('lvl');
    await createRoom(ann.page, room);
    await joinFromBrowse(bob, room);
    const menu = bob.page.getByLabel('Notifications', { exact: true });
    assert.equal(await menu.inputValue(), 'all');
    await Promise.all([
      bob.page.waitForResponse((r) => r.url().includes('/notifications') && r.request().method() === 'PUT' && r.ok()),
      menu.selectOption('mentions'),
    ]);
    await bob.page.waitForFunction(() => document.querySelector('select.level')?.value === 'mentions');
    await createRoom(bob.page, uniqueRoom('elsewhere'));
    const entry = bob.page.locator('.room-link', { hasText: `#${room}` });

    await send(ann.page, 'plain news');
    await entry.getByLabel('1 unread').waitFor();
    await sleep(500);
    assert.deepEqual(await notes(bob), []);
    await send(ann.page, `@${bob.username} look here`);
    await eventually(async () => (await notes(bob)).length === 1, 15000, 'a notification');
    assert.deepEqual((await notes(bob))[0], { title: `${ann.username} in #${room}`, body: `@${bob.username} look here`, tag: room, closed: false });

    // Muted from another device (the API): this tab follows at once; the room says it is muted,
    // its unread count is subdued, and even a mention notifies nothing.
    const token = JSON.parse(await bob.page.evaluate(() => localStorage.getItem('scalify.session'))).token;
    const r = await api(server.url, 'PUT', `/api/rooms/${room}/notifications`, { level: 'none' }, token);
    assert.equal(r.status, 200);
    await entry.getByText('muted').waitFor();
    await entry.locator('.badge.quiet').waitFor();
    await send(ann.page, `@${bob.username} still there?`);
    await entry.getByLabel('3 unread').waitFor();
    await sleep(500);
    assert.equal((await notes(bob)).length, 1);
    await bob.page.screenshot({ path: `${SHOTS}/16-muted-room.png` });
    await openRoom(bob.page, room);
    assert.equal(await menu.inputValue(), 'none');
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally { await ann.context.close(); await bob.context.close(); }
});

test('Web Push in the browser: the service worker shows a pushed summary as a notification (the room or the DM peer as title, the preview or a count as body), and a click opens the room', async () => {
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await signUp(bob);
    await bob.context.grantPermissions(['notifications'], { origin: server.url });
    // Allowed: the app registers its service worker at start (subscribing needs a push
    // service this machine cannot reach; the worker is what is tested here).
    await bob.page.reload();
    await bob.page.getByText('Sign out').waitFor();
    await bob.page.evaluate(async () => { await navigator.serviceWorker.ready; });
    const cdp = await bob.context.newCDPSession(bob.page);
    const registrations = [];
    cdp.on('ServiceWorker.workerRegistrationUpdated', (e) => registrations.push(...e.registrations));
    await cdp.send('ServiceWorker.enable');
    const reg = await eventually(() => registrations.find((r) => !r.isDeleted && r.scopeURL === `${server.url}/`), 10000, 'the registration');
    const push = (summary) => cdp.send('ServiceWorker.deliverPushMessage', {
      origin: server.url, registrationId: reg.registrationId, data: JSON.stringify(summary),
    });
    const shown = () => bob.page.evaluate(async () => (await (await navigator.serviceWorker.ready).getNotifications())
      .map((n) => ({ title: n.title, body: n.body, tag: n.tag, url: n.data?.url })));
    const from = { id: '01J0000000000000000000000A', username: 'ann' };
    // A message delivered over CDP is now and then not dispatched (seen: the second of two,
    // seconds apart); a notification replaces the one of its tag, so delivering again until
    // it shows tests the worker, not the DevTools channel.
    const pushUntil = async (summary, seen) => {
      for (let i = 0; i < 5; i++) {
        await push(summary);
        for (let t = 0; t < 20; t++) {
          if (seen(await shown())) return;
          await sleep(150);
        }
      }
      throw new Error(`the worker showed nothing for ${JSON.stringify(summary)}: ${JSON.stringify(await shown())}`);
    };
    await pushUntil({ type: 'messages', room: { name: 'general', kind: 'public' }, count: 3, mentions: 1, from, preview: 'hello there' },
      (n) => n.some((x) => x.tag === 'room:general'));
    await pushUntil({ type: 'messages', room: { name: 'dm-x-y', kind: 'dm' }, count: 1, mentions: 1, from },
      (n) => n.some((x) => x.tag === 'room:dm-x-y'));
    const notes = await shown();
    assert.equal(notes.length, 2);
    const byTag = Object.fromEntries(notes.map((n) => [n.tag, n]));
    assert.deepEqual(byTag['room:general'], { title: '#general', body: 'ann: hello there (+2 more)', tag: 'room:general', url: '/r/general' });
    assert.deepEqual(byTag['room:dm-x-y'], { title: 'ann', body: '1 new message from ann', tag: 'room:dm-x-y', url: '/dm/ann' });
    // A newer summary of a room replaces its notification.
    await pushUntil({ type: 'messages', room: { name: 'general', kind: 'public' }, count: 1, mentions: 0, from, preview: 'newer' },
      (n) => n.some((x) => x.body === 'ann: newer'));
    assert.equal((await shown()).length, 2);
    // A click (dispatched in the worker, as the browser does) opens the room in the tab.
    const [worker] = bob.context.serviceWorkers();
    assert.ok(worker, 'the service worker runs');
    await worker.evaluate(async () => {
      const [n] = (await self.registration.getNotifications()).filter((x) => x.tag === 'room:dm-x-y');
      self.dispatchEvent(new NotificationEvent('notificationclick', { notification: n }));
    });
    await bob.page.waitForURL(`${server.url}/dm/ann`, { timeout: 10000 });
    assert.equal((await shown()).some((n) => n.tag === 'room:dm-x-y'), false, 'the clicked notification is closed');
    assert.deepEqual(bob.errors, []);
  } finally {
    await bob.context.close();
  }
});

test('reply, react, edit and delete from the message menu; the other user sees each live, and after a reload', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await signUp(ann);
    await signUp(bob);
    const room = uniqueRoom('chg');
    await createRoom(ann.page, room);
    await bob.page.reload();
    await bob.page.getByRole('button', { name: `Join ${room}` }).click();
    await bob.page.getByRole('heading', { name: `#${room}` }).waitFor();
    await send(ann.page, 'first tyop');
    const entry = (page, text) => page.locator('.entry').filter({ has: page.locator('.msg', { hasText: text }) });
    const onBob = (text) => entry(bob.page, text);
    await onBob('first tyop').waitFor();

    // Bob replies through the menu: the reply carries a quote of Ann's message.
    await onBob('first tyop').hover();
    await onBob('first tyop').getByRole('button', { name: 'Reply' }).click();
    await bob.page.locator('.composing', { hasText: 'Replying to' }).waitFor();
    await send(bob.page, 'answering you');
    const reply = entry(ann.page, 'answering you');
    await reply.locator('.quote', { hasText: 'first tyop' }).waitFor();

    // Bob reacts; Ann sees the chip and adds hers by clicking it.
    await onBob('first tyop').hover();
    await onBob('first tyop').getByRole('button', { name: 'React', exact: true }).click();
    await bob.page.getByRole('button', { name: 'React with 👍' }).click();
    const annFirst = entry(ann.page, 'first tyop');
    await annFirst.getByRole('button', { name: '👍 1' }).click();
    await onBob('first tyop').getByRole('button', { name: '👍 2' }).waitFor();
    await annFirst.getByRole('button', { name: '👍 2, including you' }).waitFor();

    // Ann edits her message: Bob sees the new text marked edited, and the quote follows. The
    // draft she had begun comes back to the composer when the edit is sent.
    const box = ann.page.locator('.composer textarea');
    await box.fill('a draft begun');
    await annFirst.hover();
    await annFirst.getByRole('button', { name: 'Edit' }).click();
    assert.equal(await box.inputValue(), 'first tyop');
    await box.fill('first typo, fixed');
    await box.press('Enter');
    await eventually(async () => (await box.inputValue()) === 'a draft begun', 5000, 'the draft back');
    await onBob('first typo, fixed').locator('.edited').waitFor();
    await onBob('answering you').locator('.quote', { hasText: 'first typo, fixed' }).waitFor();
    assert.equal(await onBob('first typo, fixed').getByRole('button', { name: '👍 2' }).count(), 1, 'reactions stay');
    await bob.page.screenshot({ path: `${SHOTS}/17-message-changes.png` });
    // Bob cannot edit or delete Ann's message: his menu offers neither.
    await onBob('first typo, fixed').hover();
    assert.equal(await onBob('first typo, fixed').getByRole('button', { name: 'Edit' }).count(), 0);
    assert.equal(await onBob('first typo, fixed').getByRole('button', { name: 'Delete' }).count(), 0);

    // Ann deletes it: a placeholder for both, and the quote in Bob's reply says so.
    ann.page.once('dialog', (d) => d.accept());
    const fixed = entry(ann.page, 'first typo, fixed');
    await fixed.hover();
    await fixed.getByRole('button', { name: 'Delete' }).click();
    await bob.page.locator('.entry.deleted', { hasText: 'This message was deleted.' }).waitFor();
    await onBob('answering you').locator('.quote', { hasText: 'deleted message' }).waitFor();

    // Markdown and shortcodes: the text is stored as written and shown formatted.
    await send(ann.page, '**bold** and `code` :tada:\n> quoted <b>not html</b>');
    const formatted = onBob('bold and code');
    await formatted.locator('strong', { hasText: 'bold' }).waitFor();
    await formatted.locator('code', { hasText: 'code' }).waitFor();
    await formatted.locator('blockquote', { hasText: 'quoted <b>not html</b>' }).waitFor();
    await formatted.getByText('🎉').waitFor();
    assert.equal(await bob.page.locator('.messages b').count(), 0, 'raw HTML stays text');
    // Any emoji, from the picker: as a reaction, and into the composer.
    await formatted.hover();
    await formatted.getByRole('button', { name: 'React', exact: true }).click();
    await formatted.getByRole('button', { name: 'More reactions' }).click();
    await bob.page.getByRole('dialog', { name: 'Pick a reaction' }).getByLabel('Search emoji').fill('rocket');
    await bob.page.getByRole('dialog', { name: 'Pick a reaction' }).getByRole('button', { name: 'rocket', exact: true }).click();
    await entry(ann.page, 'bold and code').getByRole('button', { name: '🚀 1' }).waitFor();
    await bob.page.getByRole('button', { name: 'Insert emoji' }).click();
    await bob.page.getByRole('dialog', { name: 'Insert emoji' }).getByLabel('Search emoji').fill('sparkles');
    await bob.page.getByRole('dialog', { name: 'Insert emoji' }).getByRole('button', { name: 'sparkles', exact: true }).click();
    // The picker puts the emoji into the composer and, a frame later, the focus and the cursor
    // after it: typing before then would land elsewhere.
    await eventually(() => bob.page.evaluate(() => {
      const box = document.querySelector('.composer textarea');
      return document.activeElement === box && box.value.includes('✨') && box.selectionStart === box.value.length;
    }), 5000, 'the emoji in the composer, the cursor after it');
    await bob.page.locator('.composer textarea').press('End');
    await bob.page.locator('.composer textarea').pressSequentially(' shiny');
    await bob.page.locator('.composer textarea').press('Enter');
    await entry(ann.page, '✨ shiny').waitFor();

    // A reload shows the same, from history alone.
    await bob.page.reload();
    await bob.page.locator('.entry.deleted', { hasText: 'This message was deleted.' }).waitFor();
    assert.deepEqual((await messages(bob.page)).slice(0, 2), ['This message was deleted.', 'answering you']);
    await bob.page.locator('.messages strong', { hasText: 'bold' }).waitFor();
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally {
    await ann.context.close();
    await bob.context.close();
  }
});

test('search: the sidebar box finds a message of my rooms with its words marked, and a hit opens the room at it, far back in history', async () => {
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await signUp(ann);
    await signUp(bob);
    const room = uniqueRoom('find');
    await createRoom(ann.page, room);
    await bob.page.reload();
    await bob.page.getByRole('button', { name: `Join ${room}` }).click();
    await bob.page.getByRole('heading', { name: `#${room}` }).waitFor();
    const word = `quokka${Math.floor(Math.random() * 1e6)}`;
    await send(ann.page, `the ${word} plan for Friday`);
    // Ninety more messages push it out of the first page of history.
    const filler = await register(server.url, 'fill');
    const s = await connect(server.url, filler.token);
    assert.equal((await call(s, 'join', { room })).ok, true);
    for (let i = 0; i < 90; i++) assert.equal((await call(s, 'send', { room, text: `filler ${i}`, client_id: `f${i}` })).ok, true);
    s.close();
    await bob.page.locator('.msg', { hasText: 'filler 89' }).waitFor();

    await bob.page.getByRole('button', { name: 'Search messages' }).click();
    const box = bob.page.getByRole('searchbox', { name: 'Search for' });
    await box.fill(`${word.toUpperCase()} friday`);
    await box.press('Enter');
    const hit = bob.page.locator('.search-hit', { hasText: word });
    await hit.waitFor();
    assert.deepEqual(await hit.locator('mark').allTextContents(), [word, 'Friday']);
    assert.match(await hit.locator('.hit-room').textContent(), new RegExp(room));
    // A query that matches nothing says so.
    await box.fill(`${word} -friday`);
    await box.press('Enter');
    await bob.page.getByText(/No messages match/).waitFor();
    await box.fill(word);
    await box.press('Enter');
    await bob.page.screenshot({ path: `${SHOTS}/18-search.png` });
    await hit.click();
    // The room opens at the message, which history had not loaded.
    await bob.page.getByRole('heading', { name: `#${room}` }).waitFor();
    await bob.page.locator('.entry.focused', { hasText: word }).waitFor();
    // Ctrl+Shift+F opens it by keyboard, Esc closes it.
    await bob.page.keyboard.press('Control+Shift+F');
    await bob.page.getByRole('searchbox', { name: 'Search for' }).waitFor();
    await bob.page.keyboard.press('Escape');
    await bob.page.getByRole('heading', { name: `#${room}` }).waitFor();
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally {
    await ann.context.close();
    await bob.context.close();
  }
});

test('on a touch screen a long press opens a message\'s actions; a touch elsewhere closes them', async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 800 }, hasTouch: true, isMobile: true });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await page.goto(server.url);
    const u = { context, page, username: `tap${process.pid}${Math.floor(Math.random() * 1e6)}`.slice(0, 32), errors };
    await signUp(u);
    const room = uniqueRoom('tap');
    await createRoom(page, room);
    await send(page, 'press me');
    const entry = page.locator('.entry', { hasText: 'press me' });
    await entry.waitFor();
    const reply = entry.getByRole('button', { name: 'Reply' });
    assert.equal(await reply.isVisible(), false);
    // A short touch is a tap, not a press.
    await entry.dispatchEvent('pointerdown', { pointerType: 'touch', isPrimary: true, clientX: 50, clientY: 300 });
    await entry.dispatchEvent('pointerup', { pointerType: 'touch', isPrimary: true });
    await page.waitForTimeout(700);
    assert.equal(await reply.isVisible(), false);
    // Held: the actions open; a touch elsewhere closes them.
    const hold = async () => {
      await entry.dispatchEvent('pointerdown', { pointerType: 'touch', isPrimary: true, clientX: 50, clientY: 300 });
      await reply.waitFor({ state: 'visible' });
      await entry.dispatchEvent('pointerup', { pointerType: 'touch', isPrimary: true });
    };
    await hold();
    await page.locator('.room-head h1').dispatchEvent('pointerdown', { pointerType: 'touch', isPrimary: true });
    await reply.waitFor({ state: 'hidden' });
    // Held again, and an action taken.
    await hold();
    await reply.click();
    await page.locator('.composing', { hasText: 'Replying to' }).waitFor();
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('a search hit 1,300 messages back opens a window of the log around it; reading there marks nothing read, and a jump brings the newest messages back', async () => {
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await signUp(bob);
    const room = uniqueRoom('deep');
    await createRoom(bob.page, room);
    // Another user writes the message to find, then 1,300 more, through the API.
    const ann = await register(server.url, 'deep');
    assert.equal((await api(server.url, 'POST', `/api/rooms/${room}/members`, { username: ann.user.username }, ann.token)).status, 200);
    const word = `wombat${Math.floor(Math.random() * 1e6)}`;
    const post = (text, id) => api(server.url, 'POST', `/api/rooms/${room}/messages`, { text, client_id: id }, ann.token);
    assert.equal((await post(`the ${word} memo`, 'w')).status, 201);
    for (let i = 0; i < 1300; i++) assert.equal((await post(`filler ${i}`, `f${i}`)).status, 201);
    // A fresh page: the room opens at its newest messages only.
    await bob.page.reload();
    await bob.page.locator('.msg', { hasText: 'filler 1299' }).waitFor();

    await bob.page.getByRole('button', { name: 'Search messages' }).click();
    const box = bob.page.getByRole('searchbox', { name: 'Search for' });
    await box.fill(word);
    await box.press('Enter');
    await bob.page.locator('.search-hit', { hasText: word }).click();
    await bob.page.locator('.entry.focused', { hasText: word }).waitFor();
    // The window around it, not every page down to it; the newest messages wait below.
    const jump = bob.page.getByRole('button', { name: 'Jump to the newest messages' });
    await jump.waitFor();
    assert.equal(await bob.page.locator('.msg', { hasText: 'filler 1299' }).count(), 0);
    assert.ok(await bob.page.locator('.messages .msg').count() <= 100);
    // A message arriving meanwhile is counted, not shown, and not marked read.
    assert.equal((await post('news while away', 'n')).status, 201);
    await bob.page.waitForTimeout(500);
    assert.equal(await bob.page.locator('.msg', { hasText: 'news while away' }).count(), 0);
    await jump.click();
    await bob.page.locator('.msg', { hasText: 'news while away' }).waitFor();
    await bob.page.locator('.msg', { hasText: 'filler 1299' }).waitFor();
    await jump.waitFor({ state: 'detached' });
    assert.deepEqual(bob.errors, []);
  } finally {
    await bob.context.close();
  }
});

test('attachments: a picture and a file from the button, a paste and a drop; the other user sees the preview and downloads the file, live and after a reload; too large is said before uploading', async () => {
  const { rgbPng } = await import('./png.js');
  const ann = await newUser(server.url, { name: 'ann' });
  const bob = await newUser(server.url, { name: 'bob' });
  try {
    await signUp(ann);
    await signUp(bob);
    const room = uniqueRoom('files');
    await createRoom(ann.page, room);
    await bob.page.reload();
    await bob.page.getByRole('button', { name: `Join ${room}` }).click();
    await bob.page.getByRole('heading', { name: `#${room}` }).waitFor();

    // The button: a picture and a text file, sent with one caption.
    const picker = ann.page.getByLabel('Attach files', { exact: true }).and(ann.page.locator('input[type=file]'));
    await picker.setInputFiles([
      { name: 'cat.png', mimeType: 'image/png', buffer: rgbPng(600, 400) },
      { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('the notes\n') },
    ]);
    const tray = ann.page.getByRole('list', { name: 'Files to send' });
    await tray.locator('li.ready', { hasText: 'cat.png' }).waitFor();
    await tray.locator('li.ready', { hasText: 'notes.txt' }).waitFor();
    await send(ann.page, 'look at this');
    await tray.waitFor({ state: 'detached' });

    // Bob sees the caption, the preview (decoded: the server's 320-pixel PNG), and a card.
    await bob.page.locator('.msg', { hasText: 'look at this' }).waitFor();
    const picture = bob.page.getByRole('img', { name: 'cat.png' });
    await picture.waitFor();
    await bob.page.waitForFunction(() => document.querySelector('img[alt="cat.png"]')?.naturalWidth === 320);
    const card = bob.page.locator('.file-card', { hasText: 'notes.txt' });
    await card.getByText('10 B').waitFor();
    const [download] = await Promise.all([
      bob.page.waitForEvent('download'),
      card.getByRole('button', { name: 'Download notes.txt' }).click(),
    ]);
    assert.equal(download.suggestedFilename(), 'notes.txt');
    assert.equal(readFileSync(await download.path(), 'utf8'), 'the notes\n');

    // A paste into the composer, and a drop on the room.
    await ann.page.locator('.composer textarea').evaluate((box) => {
      const dt = new DataTransfer();
      dt.items.add(new File(['pasted words'], 'pasted.txt', { type: 'text/plain' }));
      box.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    });
    await tray.locator('li.ready', { hasText: 'pasted.txt' }).waitFor();
    await ann.page.locator('.composer textarea').press('Enter');
    const dropped = await ann.page.evaluateHandle(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['dropped words'], 'dropped.txt', { type: 'text/plain' }));
      return dt;
    });
    await ann.page.locator('section.room').dispatchEvent('dragover', { dataTransfer: dropped });
    await ann.page.locator('section.room').dispatchEvent('drop', { dataTransfer: dropped });
    await tray.locator('li.ready', { hasText: 'dropped.txt' }).waitFor();
    await ann.page.locator('.composer textarea').press('Enter');
    await bob.page.locator('.file-card', { hasText: 'pasted.txt' }).waitFor();
    await bob.page.locator('.file-card', { hasText: 'dropped.txt' }).waitFor();

    // Too large for the server (10 MB by default): said at once, nothing sent.
    await picker.setInputFiles([{ name: 'huge.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(10 * 1024 * 1024 + 1) }]);
    await tray.locator('li.failed', { hasText: 'larger than the 10 MB limit' }).waitFor();
    await tray.getByRole('button', { name: 'Remove huge.bin' }).click();
    await tray.waitFor({ state: 'detached' });

    await ann.page.screenshot({ path: path.join(SHOTS, 'attachments.png') });
    // After a reload, history brings the files back.
    await bob.page.reload();
    await bob.page.waitForFunction(() => document.querySelector('img[alt="cat.png"]')?.naturalWidth === 320);
    await bob.page.locator('.file-card', { hasText: 'dropped.txt' }).waitFor();
    // Deleted: gone for Bob at once.
    const annEntry = ann.page.locator('.entry').filter({ has: ann.page.getByRole('img', { name: 'cat.png' }) });
    ann.page.once('dialog', (d) => d.accept());
    await annEntry.hover();
    await annEntry.getByRole('button', { name: 'Delete' }).click();
    await picture.waitFor({ state: 'detached' });
    assert.deepEqual([...ann.errors, ...bob.errors], []);
  } finally {
    await ann.context.close();
    await bob.context.close();
  }
});
