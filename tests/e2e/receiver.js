// What receives the server's notifications in the tests: a webhook receiver that checks the
// signature, and a Web Push endpoint with a browser's own keys that checks the VAPID JWT and
// decrypts the payload (RFC 8291) with Node's crypto — an implementation independent of the
// server's Rust crates.
import http from 'node:http';
import crypto from 'node:crypto';

/** A local HTTP server; `answer(req, body)` gives the status of each request (200 unless
 * it says otherwise); every request is kept as {path, headers, body, at}. */
export async function listen(answer = () => 200) {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const r = { path: req.url, headers: req.headers, body: Buffer.concat(chunks), at: Date.now() };
      requests.push(r);
      let status = 200;
      try { status = answer(r, requests.length) ?? 200; } catch { status = 500; }
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(String(status));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, requests, close: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); }) };
}

/** The signature the webhook must carry for `body` under `secret`. */
export function signature(secret, body) {
  return `sha256=${crypto.createHmac('sha256', secret).update(body).digest('hex')}`;
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** A browser's push keys: a P-256 ECDH pair and a 16-byte auth secret. */
export function browserKeys() {
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.generateKeys();
  const auth = crypto.randomBytes(16);
  return { ecdh, auth, p256dh: b64url(ecdh.getPublicKey()), authB64: b64url(auth) };
}

function hmac(key, data) {
  return crypto.createHmac('sha256', key).update(data).digest();
}

/** Decrypts an `aes128gcm` Web Push body (RFC 8291 §3.4, RFC 8188) for `keys`. */
export function decryptPush(body, keys) {
  const salt = body.subarray(0, 16);
  const rs = body.readUInt32BE(16);
  const idlen = body[20];
  const asPublic = body.subarray(21, 21 + idlen);
  const record = body.subarray(21 + idlen);
  if (record.length > rs) throw new Error(`one record expected, ${record.length} bytes > rs ${rs}`);
  const ecdhSecret = keys.ecdh.computeSecret(asPublic);
  const prkKey = hmac(keys.auth, ecdhSecret);
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), keys.ecdh.getPublicKey(), asPublic]);
  const ikm = hmac(prkKey, Buffer.concat([keyInfo, Buffer.from([1])])).subarray(0, 32);
  const prk = hmac(salt, ikm);
  const cek = hmac(prk, Buffer.from('Content-Encoding: aes128gcm\0\x01')).subarray(0, 16);
  const nonce = hmac(prk, Buffer.from('Content-Encoding: nonce\0\x01')).subarray(0, 12);
  const decipher = crypto.createDecipheriv('aes-128-gcm', cek, nonce);
  decipher.setAuthTag(record.subarray(record.length - 16));
  const plain = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()]);
  // The last record ends with the delimiter 0x02, then padding zeros.
  let end = plain.length - 1;
  while (end >= 0 && plain[end] === 0) end--;
  if (plain[end] !== 2) throw new Error('no last-record delimiter');
  return JSON.parse(plain.subarray(0, end).toString('utf8'));
}

/** Checks a VAPID `Authorization` header (RFC 8292): an ES256 JWT for `audience`, signed by
 * the key it names, which must be `serverKey`; returns its claims. */
export function verifyVapid(header, audience, serverKey) {
  const m = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(header ?? '');
  if (!m) throw new Error(`not a VAPID header: ${header}`);
  const [, token, k] = m;
  if (k !== serverKey) throw new Error('the VAPID key is not the one the server published');
  const [h, p, s] = token.split('.');
  const head = JSON.parse(Buffer.from(h, 'base64url'));
  if (head.alg !== 'ES256') throw new Error(`alg ${head.alg}`);
  const raw = Buffer.from(k, 'base64url');
  const key = crypto.createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: b64url(raw.subarray(1, 33)), y: b64url(raw.subarray(33, 65)) },
    format: 'jwk',
  });
  const ok = crypto.verify('sha256', Buffer.from(`${h}.${p}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'));
  if (!ok) throw new Error('the VAPID signature does not verify');
  const claims = JSON.parse(Buffer.from(p, 'base64url'));
  const aud = Array.isArray(claims.aud) ? claims.aud[0] : claims.aud;
  if (aud !== audience) throw new Error(`aud ${aud}, expected ${audience}`);
  const now = Date.now() / 1000;
  if (!(claims.exp > now && claims.exp <= now + 24 * 3600 + 60)) throw new Error(`exp ${claims.exp}`);
  if (!/^(mailto:|https:)/.test(claims.sub ?? '')) throw new Error(`sub ${claims.sub}`);
  return claims;
}
