// Minimal PNG writing and reading for the tests: real files, made here, so the server's
// sniffing, previews and bomb refusal are checked on bytes the test controls.
import zlib from 'node:zlib';

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function png(width, height, bitDepth, colorType, raw) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = bitDepth;
  ihdr[9] = colorType;
  return Buffer.concat([
    SIGNATURE,
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** An RGB picture of `width` × `height` with a gradient (so it compresses like a photo would not). */
export function rgbPng(width, height) {
  const row = 1 + width * 3;
  const raw = Buffer.alloc(row * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const at = y * row + 1 + x * 3;
      raw[at] = x & 255; raw[at + 1] = y & 255; raw[at + 2] = (x * y) & 255;
    }
  }
  return png(width, height, 8, 2, raw);
}

/** A decompression bomb: a black 1-bit picture of `side` × `side` that compresses to almost nothing. */
export function bombPng(side) {
  return png(side, side, 1, 0, Buffer.alloc((1 + Math.ceil(side / 8)) * side));
}

/** The width and height a PNG's header declares. */
export function pngSize(bytes) {
  const b = Buffer.from(bytes);
  if (!b.subarray(0, 8).equals(SIGNATURE)) throw new Error('not a PNG');
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}
