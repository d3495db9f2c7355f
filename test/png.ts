import { randomBytes } from 'node:crypto';
import { crc32, deflateSync } from 'node:zlib';

function chunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** A real 8-bit RGB PNG whose row `y` holds the `width * 3` bytes `pixels(y)` gives. */
function rgbPng(width: number, height: number, pixels: (y: number) => Buffer): Buffer {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, no interlace
  const rows: Buffer[] = [];
  for (let y = 0; y < height; y++) rows.push(Buffer.from([0]), pixels(y)); // filter 0, then the pixels
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A diagonal gradient, so a preview visibly shows it. */
export function gradientPng(width: number, height: number): Buffer {
  return rgbPng(width, height, (y) => {
    const row = Buffer.alloc(width * 3);
    for (let x = 0; x < width; x++) {
      row[x * 3] = Math.round((255 * x) / width);
      row[1 + x * 3] = Math.round((255 * y) / height);
      row[2 + x * 3] = 180;
    }
    return row;
  });
}

/** Random pixels, so it does not compress (and an upload of it takes a while). */
export function noisePng(width: number, height: number): Buffer {
  return rgbPng(width, height, () => randomBytes(width * 3));
}
